"""numpy (the reference) vs cpu on a wide seeded random matrix of layers, and the oracles.

Each generated layer draws one kernel size (1, 3, 5, 7), rate (1, 2, 3, 4, 6,
12, 24), stride (1, 2), pad (0..rate), groups (1, 2, C), bias or not and N
(1, 2); H and W are drawn odd or even, just large enough for the dilated
kernel, so many layers have a rate larger than the input.
"""
import zlib

import numpy as np
import pytest

import atrous
from atrous.cpu import choose_strategy

KERNELS = (1, 3, 5, 7)
RATES = (1, 2, 3, 4, 6, 12, 24)


def _generate(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    for t in range(count):
        k = KERNELS[t % len(KERNELS)]
        rate = RATES[(t // len(KERNELS)) % len(RATES)]
        stride = int(rng.choice([1, 1, 2]))
        pad = int(rng.integers(0, rate + 1))
        groups_kind = ("1", "2", "C")[t % 3]
        c_per_group = int(rng.choice([1, 3, 8, 12]))
        groups = {"1": 1, "2": 2, "C": c_per_group}[groups_kind]
        c_in = c_per_group * groups if groups_kind != "C" else c_per_group
        c_in_g = c_in // groups
        c_out = groups * int(rng.choice([1, 2, 3, 16]))  # fewer or more outputs than inputs
        span = rate * (k - 1) + 1
        min_size = max(1, span - 2 * pad)
        h = min_size + int(rng.integers(0, 8))
        w = min_size + int(rng.integers(0, 8))
        n = int(rng.choice([1, 2]))
        cases.append(dict(n=n, c_in=c_in, h=h, w=w, c_out=c_out, c_in_g=c_in_g, k=k, stride=stride,
                          pad=pad, rate=rate, groups=groups, bias=bool(rng.integers(0, 2))))
    return cases


def _generate_band(count, seed):
    """Layers that take the "band" strategy: stride 1, C_out/g >= C_in/g, C_in/g*k >= 64, room to save."""
    rng = np.random.default_rng(seed)
    cases = []
    for t in range(count):
        k = (3, 5, 7)[t % 3]
        rate = (1, 2, 3, 6)[(t // 3) % 4]
        pad = int(rng.integers(0, rate * (k - 1) // 2 + 1))
        groups = (1, 2)[(t // 2) % 2]
        c_in_g = int(rng.choice([24, 32]))
        c_out_g = c_in_g * int(rng.choice([1, 2]))
        span = rate * (k - 1) + 1
        h = span - 2 * pad + rate + 16 + int(rng.integers(0, 6))  # H_out = h + 2*pad - span + 1
        w = span - 2 * pad + 16 + int(rng.integers(0, 6))
        cases.append(dict(n=int(rng.choice([1, 2])), c_in=c_in_g * groups, h=h, w=w, c_out=c_out_g * groups,
                          c_in_g=c_in_g, k=k, stride=1, pad=pad, rate=rate, groups=groups,
                          bias=bool(rng.integers(0, 2))))
    return cases


CASES = _generate(140, seed=1234)
CASES += _generate_band(16, seed=4321)
# Rates far beyond the image, "same" padding: the outer taps read only zeros.
CASES += [dict(n=1, c_in=9, h=5, w=4, c_out=3, c_in_g=9, k=3, stride=1, pad=24, rate=24, groups=1, bias=True),
          dict(n=2, c_in=2, h=3, w=6, c_out=2, c_in_g=1, k=3, stride=2, pad=12, rate=12, groups=2, bias=False)]


def _case_id(c):
    return (f"n{c['n']}c{c['c_in']}_{c['h']}x{c['w']}_k{c['k']}r{c['rate']}s{c['stride']}p{c['pad']}"
            f"g{c['groups']}{'b' if c['bias'] else ''}")


def _arrays(c, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (c["n"], c["c_in"], c["h"], c["w"])).astype(np.float32)
    weight = rng.uniform(-1, 1, (c["c_out"], c["c_in_g"], c["k"], c["k"])).astype(np.float32)
    bias = rng.uniform(-1, 1, c["c_out"]).astype(np.float32) if c["bias"] else None
    return x, weight, bias


def _kwargs(c):
    return dict(stride=c["stride"], pad=c["pad"], dilation=c["rate"], groups=c["groups"])


def _atol(c):
    """float32 rounding of a sum of c_in_g*k*k products of numbers in [-1, 1]."""
    return 2e-6 * c["c_in_g"] * c["k"] ** 2 + 1e-6


def _strategy(c):
    h_out = (c["h"] + 2 * c["pad"] - (c["rate"] * (c["k"] - 1) + 1)) // c["stride"] + 1
    w_out = (c["w"] + 2 * c["pad"] - (c["rate"] * (c["k"] - 1) + 1)) // c["stride"] + 1
    return choose_strategy(c["c_in_g"], c["c_out"] // c["groups"], (c["k"], c["k"]), (c["stride"],) * 2,
                           (c["pad"],) * 2, (c["rate"],) * 2, (h_out, w_out))


def test_matrix_covers_the_contract():
    assert {c["k"] for c in CASES} == set(KERNELS)
    assert {c["rate"] for c in CASES} == set(RATES)
    assert {c["stride"] for c in CASES} == {1, 2}
    assert {c["n"] for c in CASES} == {1, 2}
    assert {c["bias"] for c in CASES} == {True, False}
    assert {c["h"] % 2 for c in CASES} == {0, 1} and {c["w"] % 2 for c in CASES} == {0, 1}
    assert any(c["groups"] == c["c_in"] > 2 for c in CASES)  # depthwise
    assert any(c["groups"] == 2 for c in CASES)
    assert any(c["rate"] > max(c["h"], c["w"]) for c in CASES)
    assert any(c["pad"] == 0 for c in CASES) and any(c["pad"] == c["rate"] > 1 for c in CASES)
    strategies = [_strategy(c) for c in CASES]
    assert set(strategies) == {"gemm", "shift", "band", "im2col", "winograd"}
    assert any(s == "im2col" and c["stride"] == 1 for s, c in zip(strategies, CASES))
    band = [c for s, c in zip(strategies, CASES) if s == "band"]
    assert {c["k"] for c in band} == {3, 5, 7} and {c["groups"] for c in band} == {1, 2}
    assert {c["rate"] for c in band} == {1, 2, 3, 6} and {c["bias"] for c in band} == {True, False}
    assert {c["n"] for c in band} == {1, 2} and any(c["pad"] == 0 for c in band)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_cpu_matches_reference(case):
    x, weight, bias = _arrays(case, seed=zlib.crc32(_case_id(case).encode()))
    expected = atrous.conv2d(x, weight, bias, backend="numpy", **_kwargs(case))
    got = atrous.conv2d(x, weight, bias, backend="cpu", **_kwargs(case))
    assert got.dtype == np.float32 and got.shape == expected.shape
    h_out = (case["h"] + 2 * case["pad"] - (case["rate"] * (case["k"] - 1) + 1)) // case["stride"] + 1
    assert expected.shape[2] == h_out
    np.testing.assert_allclose(got, expected, rtol=0, atol=_atol(case))


@pytest.mark.parametrize("setting", [("PANEL_PRODUCTS", False), ("PANEL_MAX_DEPTH", 0)])
@pytest.mark.parametrize("case", [c for c in CASES if _strategy(c) in ("gemm", "shift", "im2col")][::3], ids=_case_id)
def test_cpu_matches_reference_with_blas_products(case, setting, monkeypatch):
    """``atrous.config.PANEL_PRODUCTS = False``, or products deeper than ``PANEL_MAX_DEPTH``: the
    strategies' products by BLAS, the weights as they are."""
    import atrous.config
    monkeypatch.setattr(atrous.config, *setting)
    x, weight, bias = _arrays(case, seed=zlib.crc32(_case_id(case).encode()) + 1)
    expected = atrous.conv2d(x, weight, bias, backend="numpy", **_kwargs(case))
    cache = atrous.WeightCache()
    got = atrous.conv2d(x, weight, bias, backend="cpu", cache=cache, **_kwargs(case))
    np.testing.assert_allclose(got, expected, rtol=0, atol=_atol(case))
    assert all("panels" not in form for _, form in cache._entries)  # no row panels were made


def _scipy_conv(signal, x, weight, bias, stride, pad, rate, groups):
    """Oracle: zero-dilate the kernel, then scipy's 2-D correlation on the padded input."""
    n, c_in, _, _ = x.shape
    c_out, c_in_g, k, _ = weight.shape
    dilated = np.zeros((c_out, c_in_g, rate * (k - 1) + 1, rate * (k - 1) + 1))
    dilated[:, :, ::rate, ::rate] = weight
    x_pad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    c_out_g = c_out // groups
    out = []
    for b in range(n):
        planes = []
        for o in range(c_out):
            g = o // c_out_g
            acc = sum(signal.correlate2d(x_pad[b, g * c_in_g + c], dilated[o, c], mode="valid")
                      for c in range(c_in_g))
            planes.append(acc[::stride, ::stride] + (0.0 if bias is None else bias[o]))
        out.append(planes)
    return np.asarray(out)


# Every second of the first 40 cases and every third of all (groups, strides, "band", rates far
# beyond the image): SciPy is the required oracle for the convolution's semantics.
ORACLE_CASES = [case for k, case in enumerate(CASES) if (k < 40 and k % 2 == 0) or k % 3 == 0]


@pytest.mark.parametrize("case", ORACLE_CASES, ids=_case_id)
def test_reference_and_cpu_match_scipy(case, require_oracle):
    signal = require_oracle("scipy.signal")
    x, weight, bias = _arrays(case, seed=7)
    expected = _scipy_conv(signal, x, weight, bias, case["stride"], case["pad"], case["rate"],
                           case["groups"])
    for backend in ("numpy", "cpu"):
        got = atrous.conv2d(x, weight, bias, backend=backend, **_kwargs(case))
        np.testing.assert_allclose(got, expected, rtol=0, atol=_atol(case), err_msg=backend)


def test_large_layer_is_tiled_by_rows(monkeypatch):
    """A scratch budget far below one image forces many row blocks in every strategy."""
    import atrous.config
    monkeypatch.setattr(atrous.config, "TILE_BYTES", 4096)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (1, 16, 37, 29)).astype(np.float32)
    weight = rng.uniform(-1, 1, (5, 16, 3, 3)).astype(np.float32)
    for stride, pad, rate in ((1, 2, 2), (2, 3, 3), (1, 0, 1)):
        expected = atrous.conv2d(x, weight, stride=stride, pad=pad, dilation=rate, backend="numpy")
        got = atrous.conv2d(x, weight, stride=stride, pad=pad, dilation=rate, backend="cpu")
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # More outputs than inputs ("band"), with and without bias: one- and few-row blocks whose
    # halo of dilation*(kh-1) rows is larger than the block.
    x_band = rng.uniform(-1, 1, (1, 24, 37, 29)).astype(np.float32)
    weight_up = rng.uniform(-1, 1, (32, 24, 3, 3)).astype(np.float32)
    bias_up = rng.uniform(-1, 1, 32).astype(np.float32)
    for tile, pad, rate, b in ((4096, 2, 2, None), (4096, 0, 1, bias_up), (40000, 5, 5, bias_up)):
        monkeypatch.setattr(atrous.config, "TILE_BYTES", tile)
        out_size = atrous.conv_output_size((37, 29), 3, 1, pad, rate)
        assert choose_strategy(24, 32, (3, 3), (1, 1), (pad, pad), (rate, rate), out_size) == "band"
        expected = atrous.conv2d(x_band, weight_up, b, pad=pad, dilation=rate, backend="numpy")
        got = atrous.conv2d(x_band, weight_up, b, pad=pad, dilation=rate, backend="cpu")
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)
    # A padded 1x1 kernel in one-row blocks: whole blocks read only padding and hold just the bias.
    monkeypatch.setattr(atrous.config, "TILE_BYTES", 1024)
    bias = rng.uniform(-1, 1, 5).astype(np.float32)
    expected = atrous.conv2d(x, weight[:, :, :1, :1], bias, pad=4, backend="numpy")
    got = atrous.conv2d(x, weight[:, :, :1, :1], bias, pad=4, backend="cpu")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("c_in_g,c_out_g,kernel,stride,pad,dilation,out_size,expected", [
    (64, 256, (1, 1), (1, 1), (0, 0), (1, 1), (65, 65), "gemm"),         # ResNet 1x1
    (2048, 21, (3, 3), (1, 1), (24, 24), (24, 24), (65, 65), "shift"),   # ASPP branch
    (512, 1024, (3, 3), (1, 1), (12, 12), (12, 12), (65, 65), "winograd"),  # LargeFOV fc6, 513x513 input
    (512, 1024, (3, 3), (1, 1), (12, 12), (12, 12), (41, 41), "im2col"),  # ... 321x321: tiles overhang
    (512, 512, (3, 3), (1, 1), (2, 2), (2, 2), (65, 65), "winograd"),    # LargeFOV conv5 (rate 2)
    (256, 256, (3, 3), (1, 1), (1, 1), (1, 1), (129, 129), "winograd"),  # VGG conv3
    (512, 512, (3, 3), (1, 1), (4, 4), (4, 4), (41, 41), "winograd"),    # ResNet res5 3x3 (rate 4)
    (128, 128, (3, 3), (1, 1), (1, 1), (1, 1), (257, 257), "winograd"),  # VGG conv2
    (512, 1024, (3, 3), (1, 1), (24, 24), (24, 24), (65, 65), "band"),   # rate 24: tiles overhang
    (512, 512, (3, 3), (2, 2), (1, 1), (1, 1), (33, 33), "im2col"),      # stride 2: no Winograd
    (64, 64, (3, 3), (1, 1), (1, 1), (1, 1), (513, 513), "winograd"),    # VGG conv1_2
    (64, 128, (3, 3), (1, 1), (1, 1), (1, 1), (257, 257), "winograd"),  # VGG conv2_1
    (64, 64, (3, 3), (1, 1), (1, 1), (1, 1), (81, 81), "winograd"),      # ResNet res2 3x3
    (16, 64, (3, 3), (1, 1), (1, 1), (1, 1), (257, 257), "im2col"),      # too few channels for Winograd
    (64, 16, (3, 3), (1, 1), (1, 1), (1, 1), (257, 257), "shift"),       # ... either way
    (3, 64, (3, 3), (1, 1), (1, 1), (1, 1), (513, 513), "im2col"),       # VGG conv1_1: inner dim 9
    (64, 64, (1, 1), (1, 1), (1, 1), (1, 1), (67, 67), "im2col"),        # padded 1x1: nothing to save
    (256, 512, (1, 1), (2, 2), (0, 0), (1, 1), (33, 33), "im2col"),      # res3a branch1
    (3, 64, (7, 7), (2, 2), (3, 3), (1, 1), (161, 161), "im2col"),       # ResNet conv1
])
def test_strategy_rule(c_in_g, c_out_g, kernel, stride, pad, dilation, out_size, expected):
    assert choose_strategy(c_in_g, c_out_g, kernel, stride, pad, dilation, out_size, threads=2) == expected
    if expected == "winograd":  # on many threads the direct strategies' large products win
        assert choose_strategy(c_in_g, c_out_g, kernel, stride, pad, dilation, out_size, threads=16) != expected


def test_rectangular_parameters_match_reference():
    """(h, w) pairs for stride, pad and dilation, with a non-square kernel."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2, 10, 13, 17)).astype(np.float32)
    weight = rng.uniform(-1, 1, (4, 10, 3, 5)).astype(np.float32)
    for stride in ((1, 1), (2, 1)):
        kwargs = dict(stride=stride, pad=(2, 5), dilation=(3, 2))
        expected = atrous.conv2d(x, weight, backend="numpy", **kwargs)
        got = atrous.conv2d(x, weight, backend="cpu", **kwargs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("c_in,c_out,stride", [(16, 4, 1), (24, 32, 1), (16, 32, 1), (16, 4, 2)])
def test_scratch_memory_is_bounded_by_the_tile(monkeypatch, c_in, c_out, stride):  # shift, band, im2col x2
    """Beyond the output, a call allocates at most about TILE_BYTES of scratch (tracemalloc)."""
    import tracemalloc

    import atrous.config
    monkeypatch.setattr(atrous.config, "TILE_BYTES", 2**20)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, c_in, 160, 150)).astype(np.float32)  # unblocked im2col: 14-21 MB
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    atrous.conv2d(x, weight, stride=stride, pad=2, dilation=2, backend="cpu")  # compile outside the trace
    tracemalloc.start()
    y = atrous.conv2d(x, weight, stride=stride, pad=2, dilation=2, backend="cpu")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= y.nbytes + 2**20 + weight.nbytes + 64 * 2**10, (peak, y.nbytes)
