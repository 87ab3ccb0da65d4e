"""Caffe pooling: ceil-mode sizes, the clip rule, MAX/AVE semantics; reference vs cpu."""
import itertools

import numpy as np
import pytest

from nets.layers import ave_pool2d, max_pool2d, pool2d, pool_output_size

FLT_MAX = np.float32(np.finfo(np.float32).max)


def caffe_pool_loops(plane, kh, kw, sh, sw, ph, pw, mode):
    """Caffe's PoolingLayer::Forward_cpu transcribed literally, one plane, float32 scalars."""
    height, width = plane.shape
    oh = int(np.ceil(float(height + 2 * ph - kh) / sh)) + 1
    ow = int(np.ceil(float(width + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= height + ph:
            oh -= 1
        if (ow - 1) * sw >= width + pw:
            ow -= 1
    out = np.zeros((oh, ow), np.float32)
    for y in range(oh):
        for x in range(ow):
            hstart, wstart = y * sh - ph, x * sw - pw
            if mode == "max":
                hend, wend = min(hstart + kh, height), min(wstart + kw, width)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                top = -FLT_MAX
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        if plane[h, w] > top:
                            top = plane[h, w]
            else:
                hend, wend = min(hstart + kh, height + ph), min(wstart + kw, width + pw)
                pool_size = (hend - hstart) * (wend - wstart)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, height), min(wend, width)
                top = np.float32(0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        top = np.float32(top + plane[h, w])
                with np.errstate(invalid="ignore"):  # 0 / 0 for an empty window
                    top = np.float32(top / np.float32(pool_size))
            out[y, x] = top
    return out


@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    (513, 3, 2, 1, 257), (257, 3, 2, 1, 129), (129, 3, 2, 1, 65), (65, 3, 1, 1, 65),  # DeepLab at 513
    (321, 3, 2, 1, 161), (161, 3, 2, 1, 81), (81, 3, 2, 1, 41),  # DeepLab at 321
    (75, 3, 2, 1, 38), (100, 3, 2, 1, 51),  # ceil mode: floor mode would give 38 and 50
    (5, 2, 2, 1, 3),  # the clip rule fires: ceil gives 4, whose window would start at 6 = in + pad
    (6, 2, 2, 0, 3), (7, 2, 2, 0, 4), (7, 3, 3, 0, 3), (1, 1, 1, 0, 1),
])
def test_output_size(size, kernel, stride, pad, expected):
    assert pool_output_size(size, kernel, stride, pad) == expected


def test_output_size_clip_rule_only_with_padding():
    # Without padding Caffe keeps a last window that starts past the image.
    assert pool_output_size(2, 1, 3, 0) == 2
    assert pool_output_size(5, 2, 2, 1) == 3


def _case_matrix():
    sizes = [(1, 1), (2, 3), (5, 4), (6, 7), (9, 9), (13, 8)]
    kernels = [1, 2, 3, (2, 3)]
    for (h, w), k, s, p, mode in itertools.product(sizes, kernels, [1, 2, 3, (1, 2)], [0, 1, 2, (1, 0)],
                                                   ["max", "ave"]):
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (s, s) if isinstance(s, int) else s
        ph, pw = (p, p) if isinstance(p, int) else p
        if ph >= kh or pw >= kw or h + 2 * ph < kh or w + 2 * pw < kw:
            continue
        yield (h, w), (kh, kw), (sh, sw), (ph, pw), mode


CASES = list(_case_matrix())


def test_case_matrix_exercises_the_clip_rule():
    fired = [c for c in CASES if c[3][0] > 0
             and -(-(c[0][0] + 2 * c[3][0] - c[1][0]) // c[2][0]) * c[2][0] >= c[0][0] + c[3][0]]
    assert len(fired) > 20 and len(CASES) > 400


def test_reference_matches_literal_caffe_loops(rng_seed):
    rng = np.random.default_rng(rng_seed)
    for (h, w), kernel, stride, pad, mode in CASES[::7]:
        x = rng.standard_normal((2, h, w)).astype(np.float32)
        got = pool2d(x, kernel, stride, pad, mode, backend="numpy")
        for c in range(2):
            want = caffe_pool_loops(x[c], *kernel, *stride, *pad, mode)
            np.testing.assert_array_equal(got[c], want, err_msg=f"{(h, w)} {kernel} {stride} {pad} {mode}")


def test_cpu_matches_reference_on_the_case_matrix(rng_seed):
    rng = np.random.default_rng(rng_seed + 1)
    for (h, w), kernel, stride, pad, mode in CASES:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        ref = pool2d(x, kernel, stride, pad, mode, backend="numpy")
        cpu = pool2d(x, kernel, stride, pad, mode, backend="cpu")
        assert cpu.shape == ref.shape == (2, 3, pool_output_size(h, kernel[0], stride[0], pad[0]),
                                          pool_output_size(w, kernel[1], stride[1], pad[1]))
        np.testing.assert_array_equal(cpu, ref, err_msg=f"{(h, w)} {kernel} {stride} {pad} {mode}")


def test_max_keeps_caffes_order_for_signed_zeros_nan_and_infinity(rng_seed):
    """Of equal values the first met in Caffe's row-major window scan stays (+0 or -0), NaN never
    wins, -inf does not beat -FLT_MAX: the CPU's separable MAX gives Caffe's loops bit for bit."""
    rng = np.random.default_rng(rng_seed + 2)
    values = np.array([0.0, -0.0, np.nan, -np.inf, np.inf, -1.0, 1.0], np.float32)
    for (h, w), kernel, stride, pad, mode in CASES[::3]:
        if mode != "max":
            continue
        x = rng.choice(values, (2, h, w), p=[0.3, 0.3, 0.1, 0.1, 0.05, 0.1, 0.05]).astype(np.float32)
        got = pool2d(x, kernel, stride, pad, "max", backend="cpu")
        for c in range(2):
            want = caffe_pool_loops(x[c], *kernel, *stride, *pad, "max")
            np.testing.assert_array_equal(got[c].view(np.int32), want.view(np.int32),
                                          err_msg=f"{(h, w)} {kernel} {stride} {pad}")


def test_three_and_four_dimensional_inputs_agree(rng_seed):
    x = np.random.default_rng(rng_seed).standard_normal((2, 4, 9, 7)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        batched = max_pool2d(x, 3, 2, 1, backend=backend)
        assert np.array_equal(batched[1], max_pool2d(x[1], 3, 2, 1, backend=backend))


def test_ave_pool5a_divides_by_nine_at_the_border():
    """LargeFOV's pool5a (3x3, stride 1, pad 1): zero padding counts in the divisor."""
    out = ave_pool2d(np.ones((1, 4, 5), np.float32), 3, 1, 1, backend="cpu")
    assert out.shape == (1, 4, 5)
    assert out[0, 0, 0] == np.float32(4) / np.float32(9)
    assert out[0, 0, 2] == np.float32(6) / np.float32(9)
    assert out[0, 1, 1] == np.float32(1)


def test_ave_divisor_stops_at_in_plus_pad():
    # in 4, k 3, s 2, p 1: out 3; the last window covers rows 3..5 of which only
    # row 3 is real, row 4 is padding (counted) and row 5 lies beyond in + pad (not counted).
    out = ave_pool2d(np.ones((1, 4, 1), np.float32), (3, 1), (2, 1), (1, 0), backend="numpy")
    np.testing.assert_array_equal(out[0, :, 0], [np.float32(2) / np.float32(3), 1, 0.5])


def test_max_never_picks_padding():
    x = -np.arange(1, 26, dtype=np.float32).reshape(1, 5, 5)
    for backend in ("numpy", "cpu"):
        out = max_pool2d(x, 3, 2, 1, backend=backend)
        assert (out < 0).all()
        assert out[0, 0, 0] == -1


def test_windows_past_the_image_behave_as_in_caffe():
    """pad 0, stride 3, kernel 1: the second window starts at 3, past 2 or 3 pixels."""
    for backend in ("numpy", "cpu"):
        x2, x3 = np.ones((1, 1, 2), np.float32), np.ones((1, 1, 3), np.float32)
        assert max_pool2d(x2, (1, 1), (1, 3), 0, backend=backend)[0, 0, 1] == -FLT_MAX
        # AVE divides 0 by (min(3 + 1, in) - 3): by -1 for in = 2, by 0 for in = 3.
        minus_zero = ave_pool2d(x2, (1, 1), (1, 3), 0, backend=backend)[0, 0, 1]
        assert minus_zero == 0 and np.signbit(minus_zero)
        assert np.isnan(ave_pool2d(x3, (1, 1), (1, 3), 0, backend=backend)[0, 0, 1])


def test_global_pooling(rng_seed):
    x = np.random.default_rng(rng_seed).standard_normal((2, 3, 5, 6)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        g_max = pool2d(x, None, mode="max", global_pooling=True, backend=backend)
        g_ave = pool2d(x, None, mode="ave", global_pooling=True, backend=backend)
        assert g_max.shape == g_ave.shape == (2, 3, 1, 1)
        np.testing.assert_array_equal(g_max[..., 0, 0], x.max(axis=(2, 3)))
        np.testing.assert_allclose(g_ave[..., 0, 0], x.mean(axis=(2, 3), dtype=np.float64), atol=1e-6)


def test_float64_input_is_converted():
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    out = max_pool2d(x, 2, 2, backend="cpu")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [[5, 7], [13, 15]])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=np.zeros((4, 4), np.float32), kernel=2), ValueError, r"3-D or 4-D.*got shape \(4, 4\)"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel=2, pad=2), ValueError, "pad must be smaller"),
    (dict(x=np.zeros((1, 2, 2), np.float32), kernel=5), ValueError, "smaller than the kernel"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel=2, stride=0), ValueError, r"stride must be positive \(>= 1\)"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel=2, mode="min"), ValueError, "mode must be one of"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel="2"), TypeError, "kernel must be an int"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel=(2, 2, 2)), TypeError, "pair of ints"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel=2, pad=1, global_pooling=True), ValueError,
     "global pooling needs"),
    (dict(x=np.zeros((1, 4, 4), np.complex64), kernel=2), TypeError, "real numbers"),
    (dict(x=np.zeros((1, 4, 4), np.float32), kernel=2, backend="gpu"), ValueError, "backend must be"),
])
def test_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        pool2d(**kwargs)


def test_cpu_layers_do_not_load_cuda(run_python):
    """``nets.layers`` imports and runs on the CPU without loading numba.cuda."""
    code = ("import sys, numpy as np, nets.layers as L\n"
            "x = np.ones((1, 2, 5, 5), np.float32)\n"
            "L.interp(L.max_pool2d(x, 3, 2, 1, backend='cpu'), zoom_factor=2, backend='cpu')\n"
            "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))]\n"
            "assert not loaded, loaded\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
