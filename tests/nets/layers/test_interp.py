"""DeepLab's Interp: output sizes of both dialects, float32 align-corners resampling."""
import numpy as np
import pytest

from nets.layers import interp, interp_output_size


def caffe_interp2_loops(plane, x1, y1, height1, width1, height2, width2):
    """``caffe_cpu_interp2`` (DeepLab v2 ``src/caffe/util/interp.cpp``) transcribed, one plane."""
    out = np.zeros((height2, width2), np.float32)
    if height1 == height2 and width1 == width2:
        return plane[y1:y1 + height1, x1:x1 + width1].copy()
    f = np.float32
    rheight = f(height1 - 1) / f(height2 - 1) if height2 > 1 else f(0)
    rwidth = f(width1 - 1) / f(width2 - 1) if width2 > 1 else f(0)
    for h2 in range(height2):
        h1r = f(rheight * f(h2))
        h1 = int(h1r)
        h1p = 1 if h1 < height1 - 1 else 0
        h1lambda = f(h1r - f(h1))
        h0lambda = f(f(1) - h1lambda)
        for w2 in range(width2):
            w1r = f(rwidth * f(w2))
            w1 = int(w1r)
            w1p = 1 if w1 < width1 - 1 else 0
            w1lambda = f(w1r - f(w1))
            w0lambda = f(f(1) - w1lambda)
            r, c = y1 + h1, x1 + w1
            out[h2, w2] = (h0lambda * (w0lambda * plane[r, c] + w1lambda * plane[r, c + w1p])
                           + h1lambda * (w0lambda * plane[r + h1p, c] + w1lambda * plane[r + h1p, c + w1p]))
    return out


@pytest.mark.parametrize("size, params, expected", [
    (513, dict(shrink_factor=2), 257),                  # data_res05
    (513, dict(shrink_factor=4, zoom_factor=3), 385),   # data_res075: 513 -> 129 -> 385
    (33, dict(zoom_factor=2), 65),                      # fc1_voc12_res05_interp
    (49, dict(zoom_factor=4, shrink_factor=3), 65),     # fc1_voc12_res075_interp: 49 -> 17 -> 65
    (65, dict(zoom_factor=8), 513),                     # fc8_interp / fc1_interp
    (321, dict(shrink_factor=8), 41),                   # label shrink in training
    (41, dict(height=50, width=50), 50),
])
def test_output_sizes_from_deeplab(size, params, expected):
    assert interp_output_size(size, size, **params) == (expected, expected)


def test_branch_order_of_the_two_dialects():
    both = dict(zoom_factor=2, shrink_factor=3, height=7, width=9)
    assert interp_output_size(10, 10, **both) == (7, 9)  # v2: height/width before the combined mode
    assert interp_output_size(10, 10, **both, dialect="v1") == (19, 19)  # v1: zoom first
    assert interp_output_size(10, 10, zoom_factor=2, shrink_factor=3, dialect="v1") == (19, 19)
    assert interp_output_size(10, 10, zoom_factor=2, shrink_factor=3) == (7, 7)  # (9 // 3 + 1) zoomed
    assert interp_output_size(10, 10, shrink_factor=3, height=7, width=9) == (4, 4)
    assert interp_output_size(10, 10, shrink_factor=3, height=7, width=9, dialect="v1") == (4, 4)
    # An explicit factor of 1 is "set" (protobuf has_): it selects its branch.
    assert interp_output_size(10, 10, zoom_factor=1, height=7, width=9) == (10, 10)
    assert interp_output_size(10, 10, height=7, width=9) == (7, 9)


def test_pads_crop_before_sizing():
    assert interp_output_size(10, 12, zoom_factor=2, pad_beg=-1, pad_end=-2) == (13, 17)


def test_zoom_8_puts_score_pixel_i_on_image_pixel_8i(rng_seed):
    x = np.random.default_rng(rng_seed).standard_normal((2, 65, 65)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        out = interp(x, zoom_factor=8, backend=backend)
        assert out.shape == (2, 513, 513)
        np.testing.assert_array_equal(out[:, ::8, ::8], x)


def test_shrink_2_keeps_every_other_pixel(rng_seed):
    """data_res05: 513 -> 257 with ratio exactly 2, no low-pass filter."""
    x = np.random.default_rng(rng_seed).standard_normal((1, 3, 513, 513)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        np.testing.assert_array_equal(interp(x, shrink_factor=2, backend=backend), x[:, :, ::2, ::2])


def test_equal_sizes_copy_the_cropped_window(rng_seed):
    x = np.random.default_rng(rng_seed).standard_normal((2, 9, 8)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        out = interp(x, height=6, width=5, pad_beg=-1, pad_end=-2, backend=backend)
        np.testing.assert_array_equal(out, x[:, 1:7, 1:6])


CASES = [
    # (H, W), params: up, down, both, non-exact float32 ratios, crops, one-pixel outputs
    ((5, 7), dict(zoom_factor=2)), ((4, 4), dict(zoom_factor=3)), ((9, 6), dict(shrink_factor=2)),
    ((9, 7), dict(height=7, width=13)), ((17, 13), dict(zoom_factor=4, shrink_factor=3)),
    ((13, 17), dict(shrink_factor=4, zoom_factor=3)), ((3, 5), dict(height=1, width=1)),
    ((1, 4), dict(height=3, width=9)), ((8, 8), dict(height=3, width=5, pad_beg=-1, pad_end=-1)),
    ((10, 9), dict(zoom_factor=2, pad_beg=-2, pad_end=0)), ((6, 11), dict(height=11, width=6)),
    ((2, 2), dict(height=1, width=7)), ((7, 5), dict(shrink_factor=3, pad_end=-1)),
]


@pytest.mark.parametrize("size, params", CASES)
def test_reference_matches_literal_caffe_loops(size, params, rng_seed):
    x = np.random.default_rng(rng_seed).standard_normal((2,) + size).astype(np.float32)
    got = interp(x, **params, backend="numpy")
    pad_beg, pad_end = params.get("pad_beg", 0), params.get("pad_end", 0)
    h_eff, w_eff = size[0] + pad_beg + pad_end, size[1] + pad_beg + pad_end
    for c in range(2):
        want = caffe_interp2_loops(x[c], -pad_beg, -pad_beg, h_eff, w_eff, *got.shape[-2:])
        np.testing.assert_array_equal(got[c], want)


def test_ratio_is_float32_as_in_caffe(rng_seed):
    """513 -> 385 (data_res075): the ratio 512/384 is not exact in float32."""
    x = np.random.default_rng(rng_seed).standard_normal((1, 513, 2)).astype(np.float32)
    got = interp(x, height=385, width=2, backend="numpy")
    want = caffe_interp2_loops(x[0], 0, 0, 513, 2, 385, 2)
    np.testing.assert_array_equal(got[0], want)
    # A float64 ratio gives other weights: this test would notice one.
    y = np.arange(385) * (512 / 384)
    lam64 = y - np.floor(y)
    h1 = np.floor(y).astype(int)
    rows64 = (1 - lam64) * x[0, h1, 0] + lam64 * x[0, np.minimum(h1 + 1, 512), 0]
    assert np.abs(rows64 - want[:, 0]).max() > 1e-6


def test_cpu_matches_reference_on_a_matrix(rng_seed):
    rng = np.random.default_rng(rng_seed + 1)
    count = 0
    for h in (1, 2, 5, 8, 13):
        for w in (1, 3, 6, 11):
            for params in (dict(zoom_factor=3), dict(shrink_factor=2), dict(height=7, width=4),
                           dict(zoom_factor=2, shrink_factor=3), dict(height=h + 4, width=max(1, w - 2))):
                for pad_beg, pad_end in ((0, 0), (-1, 0), (0, -1), (-1, -1)):
                    if h + pad_beg + pad_end < 1 or w + pad_beg + pad_end < 1:
                        continue
                    x = rng.standard_normal((2, 2, h, w)).astype(np.float32)
                    kw = dict(params, pad_beg=pad_beg, pad_end=pad_end)
                    np.testing.assert_array_equal(interp(x, **kw, backend="cpu"),
                                                  interp(x, **kw, backend="numpy"), err_msg=str(kw))
                    count += 1
    assert count > 250


def test_deeplab_msc_sizes_run(rng_seed):
    rng = np.random.default_rng(rng_seed)
    for size, params, expected in [(49, dict(zoom_factor=4, shrink_factor=3), 65),
                                   (33, dict(zoom_factor=2), 65),
                                   (513, dict(shrink_factor=4, zoom_factor=3), 385)]:
        x = rng.standard_normal((1, 2, size, size)).astype(np.float32)
        ref = interp(x, **params, backend="numpy")
        assert ref.shape == (1, 2, expected, expected)
        np.testing.assert_array_equal(interp(x, **params, backend="cpu"), ref)


@pytest.mark.parametrize("params, message", [
    (dict(), "needs zoom_factor, shrink_factor, or both height and width"),
    (dict(height=5), "both height and width"),
    (dict(zoom_factor=0), "zoom_factor must be >= 1"),
    (dict(shrink_factor=2, pad_beg=1), "must be <= 0"),
    (dict(zoom_factor=2, pad_beg=-3, pad_end=-2), "leaves 0x1"),
    (dict(zoom_factor=2, dialect="v3"), "dialect must be one of"),
])
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        interp(np.zeros((1, 5, 6), np.float32), **params)


def test_bad_input():
    with pytest.raises(ValueError, match=r"3-D or 4-D.*got shape \(5,\)"):
        interp(np.zeros(5, np.float32), zoom_factor=2)
    with pytest.raises(TypeError, match="zoom_factor must be an int"):
        interp(np.zeros((1, 5, 6), np.float32), zoom_factor=1.5)
