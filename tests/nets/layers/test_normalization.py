"""BatchNorm (three blobs, eps 1e-5), Scale, and folding both into a convolution."""
import numpy as np
import pytest

from nets.layers import batch_norm, batchnorm_statistics, fold_batchnorm_scale, scale


def _blobs(rng, channels, s=7.5):
    mean = rng.standard_normal(channels).astype(np.float32)
    var = rng.uniform(0.01, 3.0, channels).astype(np.float32)
    return [mean * np.float32(s), var * np.float32(s), np.float32([s])]


def test_statistics_divide_by_the_third_blob():
    mean, var = batchnorm_statistics(np.float32([2, 4]), np.float32([6, 8]), np.float32([2]))
    np.testing.assert_array_equal(mean, [1, 2])
    np.testing.assert_array_equal(var, [3, 4])
    mean, var = batchnorm_statistics(np.float32([2, 4]), np.float32([6, 8]), np.float32([0]))
    np.testing.assert_array_equal(mean, [0, 0])  # Caffe: factor 0 when s == 0
    np.testing.assert_array_equal(var, [0, 0])


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5), (1, 16, 1, 1)])
def test_batch_norm_matches_the_formula(shape, rng_seed):
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal(shape).astype(np.float32)
    b0, b1, s = _blobs(rng, shape[-3])
    mean = b0.astype(np.float64) / s[0]
    var = b1.astype(np.float64) / s[0]
    want = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    ref = batch_norm(x, b0, b1, s, backend="numpy")
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batch_norm(x, b0, b1, s, backend="cpu"), ref)
    eps = batch_norm(x, b0, b1, s, eps=0.5, backend="cpu")
    np.testing.assert_allclose(eps, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 0.5),
                               rtol=1e-5, atol=1e-5)


def test_scale_with_and_without_bias(rng_seed):
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 3)).astype(np.float32)
    want = x * gamma[:, None, None] + beta[:, None, None]
    for backend in ("numpy", "cpu"):
        np.testing.assert_array_equal(scale(x, gamma, beta, backend=backend), want)
        np.testing.assert_array_equal(scale(x, gamma, backend=backend), x * gamma[:, None, None])


def _conv2d(x, weight, bias, pad):
    """Plain cross-correlation, stride 1, as a test-local reference: (C, H, W) -> (O, H', W')."""
    o, c, kh, kw = weight.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], xp[:, i:i + oh, j:j + ow])
    return out + (0 if bias is None else bias[:, None, None])


@pytest.mark.parametrize("kernel, with_bias, with_beta",
                         [(3, False, True), (1, True, True), (3, True, False)])
def test_fold_equals_the_unfused_layers(kernel, with_bias, with_beta, rng_seed):
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((4, 7, 6)).astype(np.float32)
    weight = rng.standard_normal((5, 4, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32) if with_bias else None
    bn = _blobs(rng, 5, s=999.98)
    gamma = rng.standard_normal(5).astype(np.float32)
    scale_blobs = [gamma, rng.standard_normal(5).astype(np.float32)] if with_beta else [gamma]
    conv = _conv2d(x, weight, bias, kernel // 2).astype(np.float32)
    unfused = scale(batch_norm(conv, *bn, backend="numpy"), *scale_blobs, backend="numpy")
    w2, b2 = fold_batchnorm_scale(weight, bias, bn, scale_blobs)
    assert w2.dtype == b2.dtype == np.float32 and w2.shape == weight.shape and b2.shape == (5,)
    folded = _conv2d(x, w2, b2, kernel // 2)
    np.testing.assert_allclose(folded, unfused, rtol=1e-5, atol=1e-5 * np.abs(unfused).max())


@pytest.mark.parametrize("call, message", [
    (lambda: batch_norm(np.zeros((3, 2, 2), np.float32), np.zeros(4), np.zeros(4), [1.0]),
     "4 channels, x has 3"),
    (lambda: batch_norm(np.zeros((3, 2, 2), np.float32), np.zeros(3), np.zeros(3), [1.0, 2.0]),
     r"one value, got shape \(2,\)"),
    (lambda: scale(np.zeros((3, 2, 2), np.float32), np.zeros(2)), r"one value per channel \(3\)"),
    (lambda: fold_batchnorm_scale(np.zeros((3, 2, 1, 1)), None, [np.zeros(3)] * 2, [np.ones(3)]),
     "three blobs, got 2"),
    (lambda: fold_batchnorm_scale(np.zeros((3, 2)), None, [np.zeros(3)] * 3, [np.ones(3)]),
     r"\(O, I, kh, kw\), got shape \(3, 2\)"),
    (lambda: fold_batchnorm_scale(np.zeros((3, 2, 1, 1)), None, [np.zeros(4), np.zeros(4), [1]],
                                  [np.ones(3)]), "4 channels, the convolution 3"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
