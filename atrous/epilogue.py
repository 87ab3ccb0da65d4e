"""What a convolution does to its sums before they are stored: bias, a residual, Caffe's ReLU.

``y = relu(conv(x) + bias + residual)``, each part optional, in this order: the order of
Caffe's layers Convolution (bias included) -> Eltwise SUM with a shortcut -> ReLU, as
ResNet's blocks and every VGG layer of DeepLab run them. Done as the convolution writes
its output, they cost no pass of their own over it: at 513x513 a separate in-place ReLU
is a pass over up to 67 MB, and ResNet-101 runs 100 ReLUs and 33 shortcut sums.

The arithmetic is that of the separate layers, value by value, so fusing changes no bit:
``(conv + bias) + residual`` is Caffe's ``0 + 1 * shortcut + 1 * (conv + bias)`` (a sum of
two floats does not depend on their order), and the ReLU is Caffe's
``max(v, 0) + negative_slope * min(v, 0)``, where a NaN stays NaN and ``-inf`` with slope 0
gives NaN (``0 * -inf``), as Caffe's CPU layer does.

This module has the NumPy reference and the CPU pass; on the GPU the implicit-GEMM
kernel does the same as it stores its sums (:func:`atrous.cuda.epilogue_value`).

References
----------
K. He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (the shortcut
sum before the ReLU); Caffe's ``relu_layer.cpp`` and ``eltwise_layer.cpp``.
"""
import numpy as np
from numba import njit, prange


@njit(inline="always")
def relu_value(v, slope):
    """Caffe's ReLU of one float32 value: ``max(v, 0) + slope * min(v, 0)`` (NaN stays NaN)."""
    zero = np.float32(0)
    return np.maximum(v, zero) + slope * np.minimum(v, zero)


def relu_numpy(x, slope, out):
    """Caffe's ReLU of a float32 array into ``out`` (``x`` itself for in place), NumPy's arithmetic."""
    slope = np.float32(slope)
    return np.add(np.maximum(x, np.float32(0)), slope * np.minimum(x, np.float32(0)), out=out)


def epilogue_numpy(y, residual, relu_slope):
    """The reference: ``y += residual``, then Caffe's ReLU, in place on (N, C, H, W) float32 ``y``."""
    if residual is not None:
        y += residual
    if relu_slope is not None:
        relu_numpy(y, relu_slope, y)
    return y


@njit(parallel=True, cache=True)
def _epilogue_kernel(out, bias, residual, slope, add_bias, add_residual, relu):
    """Every (image, channel) plane of ``out`` (N*C, H*W) in parallel; ``bias`` (C,) and
    ``residual`` (N*C, H*W) are read only when ``add_bias`` and ``add_residual`` say so."""
    planes, size = out.shape
    c = bias.shape[0]
    for plane in prange(planes):
        b = bias[plane % c]
        row = out[plane]
        for j in range(size):
            v = row[j]
            if add_bias:
                v = v + b
            if add_residual:
                v = v + residual[plane, j]
            if relu:
                v = relu_value(v, slope)
            row[j] = v


_NO_RESIDUAL = np.empty((0, 0), np.float32)


def epilogue_cpu(out, bias, residual, relu_slope):
    """In place on ``out`` (N, C, H, W) float32: ``+ bias`` (when not None), ``+ residual``, ReLU.

    Parameters
    ----------
    out : ndarray of shape (N, C, H, W), float32, C-contiguous
    bias : ndarray of shape (C,), float32, or None
        None when the sums already hold it.
    residual : ndarray of the shape of ``out``, float32, C-contiguous, or None
    relu_slope : float or None
        Caffe's ``negative_slope``; None: no ReLU.
    """
    if bias is None and residual is None and relu_slope is None:
        return out
    n, c, h, w = out.shape
    _epilogue_kernel(out.reshape(n * c, h * w),  # (N*C, H*W): one plane per work item
                     np.zeros(c, np.float32) if bias is None else bias,
                     _NO_RESIDUAL if residual is None else residual.reshape(n * c, h * w),
                     np.float32(0 if relu_slope is None else relu_slope),
                     bias is not None, residual is not None, relu_slope is not None)
    return out
