"""The convolution's epilogue: ``relu(conv + bias + residual)`` as it writes, against the layers apart."""
import numpy as np
import pytest

import atrous
from atrous import config
from atrous.cpu import choose_strategy

# (C_in, C_out, H, W, k, pad, rate, Winograd tiles, strategy it takes on one or two threads)
CASES = [
    (6, 5, 7, 8, 1, 0, 1, (2, 4), "gemm"),
    (128, 128, 16, 18, 3, 2, 2, (2,), "winograd"),   # F(2x2, 3x3)
    (128, 128, 16, 18, 3, 2, 2, (4,), "winograd"),   # F(4x4, 3x3)
    (12, 3, 9, 7, 3, 3, 3, (2, 4), "shift"),
    (24, 32, 11, 12, 3, 1, 1, (2, 4), "band"),
    (3, 8, 6, 5, 5, 2, 1, (2, 4), "im2col"),
]


def _layers_apart(y, residual, slope):
    """Caffe's Eltwise SUM (0 + 1 * residual + 1 * y) and ReLU, as NumPy computes them."""
    total = np.float32(0) + np.float32(1) * residual + np.float32(1) * y
    s = np.float32(slope)
    return np.maximum(total, np.float32(0)) + s * np.minimum(total, np.float32(0))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[-1]}{c[-2]}" for c in CASES])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_epilogue_changes_no_bit_of_the_layers_apart(case, backend, monkeypatch):
    c_in, c_out, h, w, k, pad, rate, tiles, strategy = case
    monkeypatch.setattr(config, "WINOGRAD_TILES", tiles)
    h_out, w_out = atrous.conv_output_size((h, w), k, 1, pad, rate)
    assert choose_strategy(c_in, c_out, (k, k), (1, 1), (pad, pad), (rate, rate), (h_out, w_out), threads=2) == strategy
    rng = np.random.default_rng(len(strategy))
    x = rng.uniform(-1, 1, (2, c_in, h, w)).astype(np.float32)
    weight = rng.uniform(-0.3, 0.3, (c_out, c_in, k, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, c_out).astype(np.float32)
    residual = rng.uniform(-2, 2, (2, c_out, h_out, w_out)).astype(np.float32)
    kwargs = dict(pad=pad, dilation=rate, backend=backend)
    plain = atrous.conv2d(x, weight, bias, **kwargs)
    assert (plain + residual < 0).any()  # the ReLU has something to cut
    for slope in (0.0, 0.25):
        fused = atrous.conv2d(x, weight, bias, residual=residual, relu_slope=slope, **kwargs)
        np.testing.assert_array_equal(fused, _layers_apart(plain, residual, slope))
        relu_only = atrous.conv2d(x, weight, bias, relu_slope=slope, **kwargs)
        np.testing.assert_array_equal(relu_only, _layers_apart(plain, np.zeros_like(plain), slope))
    np.testing.assert_array_equal(atrous.conv2d(x, weight, bias, residual=residual, **kwargs), plain + residual)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_nan_and_infinity_go_through_as_in_caffe(backend):
    x = np.ones((1, 2, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    weight = np.ones((2, 2, 1, 1), np.float32)
    residual = np.zeros((1, 2, 4, 4), np.float32)
    residual[0, 1, 3, 3] = -np.inf
    with np.errstate(invalid="ignore"):
        y = atrous.conv2d(x, weight, residual=residual, relu_slope=0.0, backend=backend)
    assert np.isnan(y[:, :, 1, 1]).all()  # NaN stays NaN
    assert np.isnan(y[0, 1, 3, 3])        # Caffe: max(-inf, 0) + 0 * min(-inf, 0) = 0 + 0 * -inf
    assert np.count_nonzero(np.isnan(y)) == 3 and (y[np.isfinite(y)] == 2).all()


def test_unbatched_input_takes_an_unbatched_residual():
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((3, 5, 5)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    residual = rng.standard_normal((4, 5, 5)).astype(np.float32)
    y = atrous.conv2d(x, weight, pad=1, residual=residual, relu_slope=0, backend="cpu")
    expected = np.maximum(atrous.conv2d(x, weight, pad=1, backend="cpu") + residual, 0)
    np.testing.assert_array_equal(y, expected)


def test_bad_residual_or_slope_is_refused_with_both_shapes():
    x, weight = np.zeros((1, 2, 5, 5), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"output's shape \(1, 3, 3, 3\), got shape \(1, 3, 5, 5\)"):
        atrous.conv2d(x, weight, residual=np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="relu_slope"):
        atrous.conv2d(x, weight, relu_slope=True)
    with pytest.raises(TypeError, match="relu_slope"):
        atrous.conv2d(x, weight, relu_slope="0.1")
