"""Properties any atrous convolution must have, checked on every host backend."""
import numpy as np
import pytest

import atrous

HOST_BACKENDS = ("numpy", "cpu")


def _dilate_kernel(weight, rate):
    """Insert rate-1 zeros between the taps: (C_out, C_in, k, k) -> (C_out, C_in, r(k-1)+1, ...)."""
    c_out, c_in, kh, kw = weight.shape
    dilated = np.zeros((c_out, c_in, rate * (kh - 1) + 1, rate * (kw - 1) + 1), weight.dtype)
    dilated[:, :, ::rate, ::rate] = weight
    return dilated


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_rate_one_is_ordinary_correlation(backend, require_oracle):
    """Rate 1 (no padding) is the textbook 'valid' cross-correlation, summed over channels."""
    signal = require_oracle("scipy.signal")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 11, 14)).astype(np.float32)
    weight = rng.standard_normal((3, 12, 5, 5)).astype(np.float32)
    got = atrous.conv2d(x, weight, dilation=1, backend=backend)
    expected = np.array([sum(signal.correlate2d(x[c].astype(np.float64), weight[o, c], mode="valid")
                             for c in range(12)) for o in range(3)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("rate,stride,pad", [(2, 1, 2), (3, 2, 1), (6, 1, 6), (12, 1, 12)])
def test_rate_r_equals_zero_dilated_kernel(backend, rate, stride, pad):
    rng = np.random.default_rng(rate)
    x = rng.standard_normal((2, 10, 15, 13)).astype(np.float32)
    weight = rng.standard_normal((4, 10, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    atrous_out = atrous.conv2d(x, weight, bias, stride=stride, pad=pad, dilation=rate, backend=backend)
    dense_out = atrous.conv2d(x, _dilate_kernel(weight, rate), bias, stride=stride, pad=pad, dilation=1,
                              backend=backend)
    np.testing.assert_allclose(atrous_out, dense_out, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("rate", [1, 2, 5])
def test_impulse_returns_the_flipped_spread_kernel(backend, rate):
    """A cross-correlation maps a unit impulse to the kernel turned by 180 degrees, taps rate apart."""
    k, c_out = 3, 2
    pad = rate * (k - 1) // 2  # "same" padding
    h, w, h0, w0 = 15, 14, 7, 6
    x = np.zeros((1, h, w), np.float32)
    x[0, h0, w0] = 1.0
    weight = np.arange(1, c_out * k * k + 1, dtype=np.float32).reshape(c_out, 1, k, k)
    y = atrous.conv2d(x, weight, pad=pad, dilation=rate, backend=backend)
    expected = np.zeros((c_out, h, w), np.float32)
    for i in range(k):
        for j in range(k):
            # Output (u, v) reads input (u - pad + rate*i, v - pad + rate*j) == (h0, w0).
            expected[:, h0 + pad - rate * i, w0 + pad - rate * j] = weight[:, 0, i, j]
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_linear_in_input_and_weight(backend):
    rng = np.random.default_rng(1)
    x1, x2 = (rng.standard_normal((2, 8, 9, 10)).astype(np.float32) for _ in range(2))
    w1, w2 = (rng.standard_normal((6, 4, 3, 3)).astype(np.float32) for _ in range(2))
    a, b = 0.75, -2.5
    kwargs = dict(pad=3, dilation=3, groups=2, backend=backend)
    lhs = atrous.conv2d(a * x1 + b * x2, w1, **kwargs)
    rhs = a * atrous.conv2d(x1, w1, **kwargs) + b * atrous.conv2d(x2, w1, **kwargs)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-4)
    lhs = atrous.conv2d(x1, a * w1 + b * w2, **kwargs)
    rhs = a * atrous.conv2d(x1, w1, **kwargs) + b * atrous.conv2d(x1, w2, **kwargs)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("stride,c_in", [(1, 16), (2, 16), (1, 2)])
def test_nan_reaches_exactly_the_outputs_that_see_it(backend, stride, c_in):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((c_in, 13, 12)).astype(np.float32)
    x[1, 6, 6] = np.nan
    weight = rng.uniform(0.5, 1.0, (3, c_in, 3, 3)).astype(np.float32)  # no zero taps
    y = atrous.conv2d(x, weight, stride=stride, pad=2, dilation=2, backend=backend)
    # The outputs that read pixel (6, 6): an indicator convolved with a kernel of ones.
    indicator = np.zeros((1, 13, 12), np.float32)
    indicator[0, 6, 6] = 1.0
    seen = atrous.conv2d(indicator, np.ones((1, 1, 3, 3), np.float32), stride=stride, pad=2, dilation=2,
                         backend="numpy")[0] > 0
    assert seen.sum() == 9  # one per tap, for stride 1 and 2 (6 is even)
    for o in range(3):
        np.testing.assert_array_equal(np.isnan(y[o]), seen)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_batch_of_two_is_two_images(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 8, 7)).astype(np.float32)
    weight = rng.standard_normal((5, 9, 3, 3)).astype(np.float32)
    both = atrous.conv2d(x, weight, pad=2, dilation=2, backend=backend)
    for n in range(2):
        np.testing.assert_array_equal(both[n], atrous.conv2d(x[n], weight, pad=2, dilation=2, backend=backend))


def test_paper_1d_definition():
    """y[i] = sum_k x[i + rate*k] w[k]: rate 1 is np.correlate; rate r skips r-1 samples."""
    from atrous.reference import atrous_conv1d
    x = np.arange(10, dtype=np.float64) ** 2
    w = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(atrous_conv1d(x, w, rate=1), np.correlate(x, w, mode="valid"))
    y = atrous_conv1d(x, w, rate=3)
    assert y.shape == (4,)
    np.testing.assert_allclose(y, [x[i] - 2 * x[i + 3] + 0.5 * x[i + 6] for i in range(4)])
    with pytest.raises(ValueError, match="shorter than the dilated filter span 7"):
        atrous_conv1d(x[:6], w, rate=3)
