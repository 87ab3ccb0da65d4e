"""Caffe's BatchNorm (inference, global statistics) and Scale, and folding both into a convolution.

BatchNorm stores three blobs: the running sums ``b0 = mean * s`` and
``b1 = var * s`` and the one-element normaliser ``[s]``. With
``use_global_stats`` (every DeepLab-v2 ResNet layer)::

    factor = 0 if s == 0 else 1 / s       (float32, as Caffe)
    mean, var = factor * b0, factor * b1
    y = (x - mean) / sqrt(var + eps)      (eps = 1e-5 unless batch_norm_param sets it)

Scale (always after BatchNorm in ResNet, ``bias_term: true``): ``y = x * gamma + beta``
per channel (axis 1). Both are per-channel affine maps, so after a convolution
they fold into its weights and bias: ``fold_batchnorm_scale``.

Three tiers: ``"numpy"`` (the formulas above), ``"cpu"`` (a Numba kernel per
op) and ``"cuda"`` (``nets.layers.cuda``).
"""
import numpy as np
from numba import njit, prange

from atrous.backend import resolve_backend

from ._arrays import channel_vector, check_blob, host_float32

BN_EPS = 1e-5


def batchnorm_statistics(mean_sum, var_sum, scale_factor):
    """Caffe's mean and variance from BatchNorm's three blobs.

    Parameters
    ----------
    mean_sum, var_sum : ndarray of shape (C,), float32
        ``blobs[0]`` and ``blobs[1]``.
    scale_factor : ndarray of one element, float32
        ``blobs[2]``, the moving-average normaliser s.

    Returns
    -------
    mean, var : ndarray of shape (C,), float32
        ``b0 / s`` and ``b1 / s``, both zero when s is 0 (Caffe's rule).
    """
    mean_sum = host_float32(mean_sum, "mean_sum").reshape(-1)
    var_sum = channel_vector(var_sum, mean_sum.size, "var_sum")
    s = host_float32(scale_factor, "scale_factor")
    if s.size != 1:
        raise ValueError(f"scale_factor (BatchNorm blobs[2]) must hold one value, got shape {s.shape}")
    s = s.reshape(())
    factor = np.float32(0) if s == 0 else np.float32(1) / s
    return factor * mean_sum, factor * var_sum


@njit(parallel=True, cache=True)
def _normalize_kernel(x, mean, std, out):
    count, channels, size = x.shape
    for task in prange(count * channels):
        n = task // channels
        c = task % channels
        for i in range(size):
            out[n, c, i] = (x[n, c, i] - mean[c]) / std[c]


@njit(parallel=True, cache=True)
def _scale_kernel(x, gamma, beta, out):
    count, channels, size = x.shape
    for task in prange(count * channels):
        n = task // channels
        c = task % channels
        for i in range(size):
            out[n, c, i] = x[n, c, i] * gamma[c] + beta[c]


def _dispatch(x, first, second, op, backend):
    """Run a per-channel op: ``op`` is "normalize" ((x - a) / b) or "scale" (x * a + b)."""
    shape = check_blob(x, "x")
    backend = resolve_backend(backend, x)
    if backend == "cuda":
        from . import cuda
        return cuda.channel_affine(x, first, second, op)
    planes = host_float32(x, "x").reshape(-1, shape[-3], shape[-2] * shape[-1])  # (N, C, H*W)
    if backend == "numpy":
        a, b = first[:, None], second[:, None]  # (C, 1)
        out = (planes - a) / b if op == "normalize" else planes * a + b
    else:
        out = np.empty_like(planes)
        kernel = _normalize_kernel if op == "normalize" else _scale_kernel
        kernel(planes, first, second, out)
    return out.reshape(shape)


def batch_norm(x, mean_sum, var_sum, scale_factor, eps=BN_EPS, backend="auto"):
    """Caffe BatchNorm with global statistics: ``(x - mean) / sqrt(var + eps)``.

    Parameters
    ----------
    x : ndarray of shape (C, H, W) or (N, C, H, W), float32 (or a CUDA device array)
    mean_sum, var_sum : ndarray of shape (C,), float32
        BatchNorm ``blobs[0]`` and ``blobs[1]``.
    scale_factor : ndarray of one element, float32
        ``blobs[2]``; mean and variance are divided by it (see ``batchnorm_statistics``).
    eps : float
        ``batch_norm_param.eps``, 1e-5 by default (DeepLab never sets it).
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of the shape of ``x``, float32 (a device array when ``x`` is one)

    References
    ----------
    Ioffe & Szegedy, ICML 2015, Alg. 2 (inference); Caffe ``batch_norm_layer.cpp``;
    DeepLab-v2 ResNet-101 (Chen et al., TPAMI 2018, Sec. 4).
    """
    channels = check_blob(x, "x")[-3]
    mean, var = batchnorm_statistics(mean_sum, var_sum, scale_factor)
    if mean.size != channels:
        raise ValueError(f"BatchNorm statistics have {mean.size} channels, x has {channels}")
    std = np.sqrt(var + np.float32(eps))  # float32, as Caffe adds eps then takes the root
    return _dispatch(x, mean, std, "normalize", backend)


def scale(x, gamma, beta=None, backend="auto"):
    """Caffe Scale on axis 1: ``x * gamma[c] (+ beta[c])``.

    Parameters
    ----------
    x : ndarray of shape (C, H, W) or (N, C, H, W), float32 (or a CUDA device array)
    gamma : ndarray of shape (C,), float32
        ``blobs[0]``.
    beta : ndarray of shape (C,), float32, optional
        ``blobs[1]`` when ``bias_term`` is true.
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of the shape of ``x``, float32
    """
    channels = check_blob(x, "x")[-3]
    gamma = channel_vector(gamma, channels, "gamma")
    beta = np.zeros(channels, np.float32) if beta is None else channel_vector(beta, channels, "beta")
    return _dispatch(x, gamma, beta, "scale", backend)


def fold_batchnorm_scale(conv_weight, conv_bias, bn_blobs, scale_blobs, eps=BN_EPS):
    """Fold BatchNorm and Scale that follow a convolution into its weight and bias.

    ``Scale(BatchNorm(W * x + b)) = W' * x + b'`` with, per output channel o,
    ``k_o = gamma_o / sqrt(var_o + eps)``, ``W'_o = k_o W_o`` and
    ``b'_o = k_o (b_o - mean_o) + beta_o``. The products are taken in float64 and
    rounded once to float32.

    Parameters
    ----------
    conv_weight : ndarray of shape (O, I, kh, kw), float32
    conv_bias : ndarray of shape (O,), float32, or None
        None for ``bias_term: false`` (every ResNet backbone convolution).
    bn_blobs : sequence of three arrays
        BatchNorm ``blobs[0..2]``: mean sum (O,), variance sum (O,), normaliser (1,).
    scale_blobs : sequence of one or two arrays
        Scale ``blobs``: gamma (O,) and, with ``bias_term``, beta (O,).
    eps : float

    Returns
    -------
    weight : ndarray of shape (O, I, kh, kw), float32
    bias : ndarray of shape (O,), float32

    References
    ----------
    Ioffe & Szegedy, ICML 2015, Sec. 3.2 (inference as one linear transform).
    """
    weight = host_float32(conv_weight, "conv_weight")
    if weight.ndim != 4:
        raise ValueError(f"conv_weight must be (O, I, kh, kw), got shape {weight.shape}")
    out_channels = weight.shape[0]
    bias = (np.zeros(out_channels, np.float32) if conv_bias is None
            else channel_vector(conv_bias, out_channels, "conv_bias"))
    if len(bn_blobs) != 3:
        raise ValueError(f"bn_blobs must be BatchNorm's three blobs, got {len(bn_blobs)}")
    if len(scale_blobs) not in (1, 2):
        raise ValueError(f"scale_blobs must be (gamma,) or (gamma, beta), got {len(scale_blobs)} blobs")
    mean, var = batchnorm_statistics(*bn_blobs)
    if mean.size != out_channels:
        raise ValueError(f"BatchNorm has {mean.size} channels, the convolution {out_channels} outputs")
    gamma = channel_vector(scale_blobs[0], out_channels, "gamma").astype(np.float64)
    beta = (channel_vector(scale_blobs[1], out_channels, "beta").astype(np.float64)
            if len(scale_blobs) == 2 else np.zeros(out_channels))
    k = gamma / np.sqrt(var.astype(np.float64) + np.float64(np.float32(eps)))  # (O,)
    folded_weight = weight.astype(np.float64) * k[:, None, None, None]
    folded_bias = k * (bias.astype(np.float64) - mean) + beta
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)
