"""Caffe's InnerProduct layer (fully connected): ``y = x W^T + b`` over flattened items.

The blob is flattened from ``axis`` on (default 1): an (N, C, H, W) input becomes
(N, C*H*W) and meets the weight (num_output, C*H*W) as Caffe stores it
(``transpose: true`` stores (C*H*W, num_output) instead).

Tiers: ``"numpy"`` and ``"cpu"`` hand the matrix product to BLAS through NumPy,
as Caffe does; ``"cuda"`` uses the tiled shared-memory kernel of ``nets.layers.cuda``.
"""
import numpy as np

from atrous.backend import resolve_backend

from ._arrays import array_shape, canonical_axis, host_float32


def inner_product(x, weight, bias=None, axis=1, transpose=False, backend="auto"):
    """Caffe InnerProduct.

    Parameters
    ----------
    x : ndarray of shape (N, ...) (any rank), float32 (or a CUDA device array)
    weight : ndarray of shape (num_output, K), float32
        ``blobs[0]``; K is the product of ``x.shape[axis:]``. Legacy 4-D blobs
        (1, 1, num_output, K) are accepted too. (K, num_output) with ``transpose``.
    bias : ndarray of shape (num_output,), float32, optional
        ``blobs[1]`` when ``bias_term`` is true.
    axis : int
        ``inner_product_param.axis``: the first axis flattened into K.
    transpose : bool
        ``inner_product_param.transpose``.
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of shape ``x.shape[:axis] + (num_output,)``, float32

    References
    ----------
    Caffe ``inner_product_layer.cpp``; LeNet (LeCun et al., 1998) as shipped with Caffe.
    """
    shape = array_shape(x, "x")
    axis = canonical_axis(axis, len(shape))
    rows, k = int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))
    w = host_float32(weight, "weight")
    if w.ndim == 4 and w.shape[:2] == (1, 1):  # the V1 dialect's (1, 1, num_output, K)
        w = w.reshape(w.shape[2:])
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (num_output, K), got shape {w.shape}")
    if transpose:
        w = np.ascontiguousarray(w.T)  # (num_output, K)
    num_output = w.shape[0]
    if w.shape[1] != k:
        raise ValueError(f"weight must be ({num_output}, {k}) for input {shape} flattened from axis "
                         f"{axis}, got {tuple(np.shape(weight))}")
    if bias is not None:
        bias = host_float32(bias, "bias")
        if bias.size != num_output:
            raise ValueError(f"bias must hold num_output = {num_output} values, got shape {bias.shape}")
        bias = bias.reshape(num_output)
    out_shape = tuple(shape[:axis]) + (num_output,)
    if resolve_backend(backend, x) == "cuda":
        from . import cuda
        return cuda.inner_product(x, (rows, k), w, bias, out_shape)
    a = host_float32(x, "x").reshape(rows, k)  # (M, K)
    out = a @ w.T  # (M, num_output)
    if bias is not None:
        out += bias
    return out.reshape(out_shape)
