"""Winograd's F(2x2, 3x3) on the phases of a dilated convolution, against the direct NumPy reference."""
import numpy as np
import pytest

import atrous
import atrous.config
import atrous.cpu
from atrous import gemm, winograd


def test_f23_is_two_outputs_of_a_three_tap_filter():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(4).astype(np.float32), rng.standard_normal(3).astype(np.float32)
        direct = [d[0] * g[0] + d[1] * g[1] + d[2] * g[2], d[1] * g[0] + d[2] * g[1] + d[3] * g[2]]
        np.testing.assert_allclose(winograd.f23_reference(d, g), direct, rtol=1e-5, atol=1e-6)


def test_f43_is_four_outputs_of_a_three_tap_filter():
    rng = np.random.default_rng(1)
    for _ in range(20):
        d, g = rng.standard_normal(6).astype(np.float32), rng.standard_normal(3).astype(np.float32)
        direct = [d[i] * g[0] + d[i + 1] * g[1] + d[i + 2] * g[2] for i in range(4)]
        np.testing.assert_allclose(winograd.f43_reference(d, g), direct, rtol=1e-5, atol=2e-5)
    # the 1-D transforms of the kernels are the matrices' rows
    d, g, m = rng.standard_normal(6), rng.standard_normal(3), rng.standard_normal(6)
    f32 = [np.float32(v) for v in d]
    np.testing.assert_allclose(winograd._bt43(*f32), winograd.BT43 @ np.float32(d), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(winograd._at43(*[np.float32(v) for v in m]), winograd.AT43 @ np.float32(m),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(winograd._g43(*[np.float32(v) for v in g]), winograd.G43 @ np.float32(g),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("m", [2, 4])
def test_tiles_cover_every_output_of_every_phase_once(m):
    for size, pad, rate in ((65, 12, 12), (41, 12, 12), (7, 1, 1), (5, 24, 24), (9, 3, 2), (1, 0, 1)):
        inputs, outputs = winograd.tiles(size, pad, rate, m)
        assert inputs.shape[1] == m + 2 and outputs.shape[1] == m
        covered = outputs.ravel()
        covered = covered[covered < size]
        assert sorted(covered) == list(range(size)), (size, pad, rate)
        # a tile's inputs are its outputs' taps: output u reads u - pad + rate * (0, 1, 2)
        for j in range(m):
            np.testing.assert_array_equal(inputs[:, j:j + 3], outputs[:, j:j + 1] - pad + rate * np.arange(3))


def test_the_tile_with_fewer_products_is_chosen():
    assert winograd.choose_tile((257, 257), (1, 1)) == 4  # 65^2 x 36 against 129^2 x 16 products
    assert winograd.choose_tile((65, 65), (2, 2)) == 4
    assert winograd.choose_tile((65, 65), (12, 12)) == 2  # six outputs per phase: as many products, F(2, 3)
    assert winograd.products((65, 65), (12, 12), 2) == winograd.products((65, 65), (12, 12), 4)
    assert winograd.winograd_coverage((65, 65), (12, 12), (12, 12)) == pytest.approx(4 * 36 * 36 / 65**2)


CASES = [  # n, c_in, c_out, h, w, pad, rate, groups, bias
    (1, 5, 7, 9, 11, (2, 2), (2, 2), 1, True),
    (2, 6, 4, 13, 10, (3, 1), (3, 1), 2, False),
    (1, 3, 5, 7, 7, (0, 0), (1, 1), 1, True),
    (1, 4, 4, 5, 6, (24, 24), (24, 24), 1, True),    # rates beyond the image: only padding around
    (1, 8, 8, 17, 17, (1, 1), (1, 1), 1, False),
    (1, 4, 6, 9, 9, (5, 2), (3, 4), 1, True),        # pad different from the rate
    (3, 6, 6, 12, 8, (2, 2), (2, 2), 3, True),
    (1, 2, 3, 1, 1, (1, 1), (1, 1), 1, True),        # one pixel
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES, ids=[f"n{c[0]}c{c[1]}o{c[2]}_{c[3]}x{c[4]}p{c[5]}r{c[6]}g{c[7]}"
                                             for c in CASES])
def test_winograd_strategy_matches_the_reference(case, m, monkeypatch):
    monkeypatch.setattr(atrous.config, "WINOGRAD_TILES", (m,))
    monkeypatch.setattr(atrous.config, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_COVERAGE", 100.0)
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_THREADS", 1 << 16)
    n, c_in, c_out, h, w, pad, rate, groups, with_bias = case
    rng = np.random.default_rng(sum(case[:5]))
    x = rng.uniform(-1, 1, (n, c_in, h, w)).astype(np.float32)
    weight = rng.uniform(-1, 1, (c_out, c_in // groups, 3, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, c_out).astype(np.float32) if with_bias else None
    from atrous.cpu import choose_strategy
    out_size = atrous.conv_output_size((h, w), 3, 1, pad, rate)
    assert choose_strategy(c_in // groups, c_out // groups, (3, 3), (1, 1), pad, rate, out_size) == "winograd"
    want = atrous.conv2d(x, weight, bias, pad=pad, dilation=rate, groups=groups, backend="numpy")
    got = atrous.conv2d(x, weight, bias, pad=pad, dilation=rate, groups=groups, backend="cpu")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("m", [2, 4])
def test_blocks_of_tile_rows_and_reused_buffers(m, monkeypatch):
    """A scratch budget below one tile row: every tile row is its own block; buffers are reused."""
    monkeypatch.setattr(atrous.config, "WINOGRAD_TILES", (m,))
    monkeypatch.setattr(atrous.config, "TILE_BYTES", 1024)
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_THREADS", 1 << 16)
    from atrous.cpu import choose_strategy
    assert choose_strategy(128, 128, (3, 3), (1, 1), (2, 2), (2, 2), (15, 13)) == "winograd"
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2, 128, 15, 13)).astype(np.float32)
    weight = rng.uniform(-1, 1, (128, 128, 3, 3)).astype(np.float32) / 30
    want = atrous.conv2d(x, weight, pad=2, dilation=2, backend="numpy")
    for _ in range(2):
        got = atrous.conv2d(x, weight, pad=2, dilation=2, backend="cpu")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    small = atrous.conv2d(x[:1, :, :5, :5], weight, pad=1, dilation=1, backend="cpu")  # smaller after larger
    np.testing.assert_allclose(small, atrous.conv2d(x[:1, :, :5, :5], weight, pad=1, backend="numpy"), atol=1e-4)


@pytest.mark.parametrize("m, tolerance", [(2, 2e-6), (4, 3e-5)])
def test_a_deeplab_sized_layer_against_the_direct_strategy(m, tolerance, monkeypatch):
    """fc6's shape at 41x41 takes "im2col" by the rule; forced onto Winograd it agrees within about 1e-6
    (F(2, 3)) or 1e-5 (F(4, 3), whose transforms hold 4, 5, 1/6 and 1/24) of the range."""
    monkeypatch.setattr(atrous.config, "WINOGRAD_TILES", (m,))
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 256, 21, 21)).astype(np.float32)
    weight = (rng.standard_normal((256, 256, 3, 3)) * 0.05).astype(np.float32)
    from atrous.cpu import choose_strategy
    assert choose_strategy(256, 256, (3, 3), (1, 1), (6, 6), (6, 6), (21, 21)) != "winograd"
    direct = atrous.conv2d(x, weight, pad=6, dilation=6, backend="cpu")
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_COVERAGE", 100.0)
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_THREADS", 1 << 16)
    assert choose_strategy(256, 256, (3, 3), (1, 1), (6, 6), (6, 6), (21, 21)) == "winograd"
    fast = atrous.conv2d(x, weight, pad=6, dilation=6, backend="cpu")
    assert np.abs(fast - direct).max() <= tolerance * np.abs(direct).max()


@pytest.mark.parametrize("m", [2, 4])
def test_filter_transform_is_G_g_G_transposed(m):
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    u = winograd.filter_transform(weight, m)
    a = m + 2
    assert u.shape == (a * a, 3, 2) and u.dtype == np.float32
    g = (winograd.G if m == 2 else winograd.G43).astype(np.float64)
    for o in range(3):
        for c in range(2):
            want = g @ weight[o, c].astype(np.float64) @ g.T  # (m+2, m+2)
            np.testing.assert_allclose(u[:, o, c].reshape(a, a), want, rtol=1e-5, atol=1e-6)


def test_weight_cache_keeps_the_transformed_filters_once_per_weight_array(winograd_transforms):
    calls = winograd_transforms
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (4, 10, 10)).astype(np.float32)
    weight = rng.uniform(-1, 1, (5, 4, 3, 3)).astype(np.float32)
    want = atrous.conv2d(x, weight, pad=2, dilation=2, backend="numpy")
    cache = atrous.WeightCache()
    for size in (10, 8, 10):  # the filters do not depend on the input size
        got = atrous.conv2d(x[:, :size, :size], weight, pad=2, dilation=2, backend="cpu", cache=cache)
        ref = want if size == 10 else atrous.conv2d(x[:, :size, :size], weight, pad=2, dilation=2,
                                                    backend="numpy")
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    assert len(calls) == 1 and len(cache) == 1
    rows = -(-5 // gemm.PANEL_ROWS) * gemm.PANEL_ROWS  # 5 output channels in whole row panels
    assert cache.nbytes() == 16 * rows * 4 * 4  # the packed filters of one group
    other = weight.copy()  # another array: its own entry, whatever its values
    atrous.conv2d(x, other, pad=2, dilation=2, backend="cpu", cache=cache)
    assert len(calls) == 2 and len(cache) == 2
    # A weight that conv2d must convert (float64) is a new array each call: nothing is kept.
    atrous.conv2d(x, weight.astype(np.float64), pad=2, dilation=2, backend="cpu", cache=cache)
    assert len(calls) == 3 and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.nbytes() == 0
