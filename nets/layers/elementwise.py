"""Caffe's element-wise and per-position layers: ReLU, Eltwise, Concat, Softmax, ArgMax.

These are memory-bound one-liners, so the ``"numpy"`` and ``"cpu"`` backends
share the NumPy code below (NumPy's loops are already compiled), except ReLU,
which follows every convolution of a VGG: its NumPy expression makes four
temporaries of the blob's size (conv1_1's 67 MB at 513x513 each, faulted in
afresh: 430 ms), so the ``"cpu"`` backend computes it in one parallel pass.
``"cuda"`` runs the simple kernels of ``nets.layers.cuda`` on device arrays.

ArgMax tie rule. Caffe sorts (value, index) pairs with ``std::greater``, so
among equal values the *highest* index comes first; ``np.argmax`` returns the
lowest. ``argmax`` here follows Caffe.
"""
import numbers

import numpy as np
from numba import njit, prange

from atrous.backend import resolve_backend
from atrous.epilogue import relu_numpy, relu_value

from ._arrays import array_shape, canonical_axis, host_float32

ELTWISE_OPERATIONS = ("sum", "prod", "max")


def relu(x, negative_slope=0.0, backend="auto", out=None):
    """Caffe ReLU: ``max(x, 0) + negative_slope * min(x, 0)``.

    Parameters
    ----------
    x : ndarray of any shape, float32 (or a CUDA device array)
    negative_slope : float
        ``relu_param.negative_slope`` (0: the plain rectifier DeepLab uses).
    backend : {"numpy", "cpu", "cuda", "auto"}
    out : ndarray (or device array) of x's shape, float32, C-contiguous, optional
        Where to write; ``x`` itself computes in place, as Caffe's in-place ReLU
        (``top`` = ``bottom``) does. A new array by default.

    Returns
    -------
    ndarray of the shape of ``x``, float32
    """
    array_shape(x, "x")
    slope = np.float32(negative_slope)
    if resolve_backend(backend, x) == "cuda":
        from . import cuda
        return cuda.relu(x, slope, out)
    a = host_float32(x, "x")
    if out is None:
        out = np.empty_like(a)
    elif (not isinstance(out, np.ndarray) or out.shape != a.shape or out.dtype != np.float32
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous float32 array of shape {a.shape}, got "
                         f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}")
    if resolve_backend(backend) == "numpy":
        relu_numpy(a, slope, out)
    else:
        _relu_kernel(a.reshape(-1), slope, out.reshape(-1))
    return out


_RELU_CHUNK = 1 << 16  # values per parallel work item


@njit(parallel=True, cache=True)
def _relu_kernel(x, slope, out):
    """The NumPy expression's arithmetic, value by value (NaN stays NaN, as in Caffe)."""
    n = x.shape[0]
    for chunk in prange((n + _RELU_CHUNK - 1) // _RELU_CHUNK):
        for i in range(chunk * _RELU_CHUNK, min(n, (chunk + 1) * _RELU_CHUNK)):
            out[i] = relu_value(x[i], slope)


def eltwise(inputs, operation="sum", coeffs=None, backend="auto"):
    """Caffe Eltwise over two or more blobs of one shape.

    Parameters
    ----------
    inputs : sequence of ndarray, all of one shape, float32 (or CUDA device arrays)
    operation : {"sum", "prod", "max"}
        SUM is Caffe's default (ResNet shortcuts, ASPP); MAX fuses the MSC scales.
    coeffs : sequence of float, optional
        One per input, SUM only (default all 1). Caffe accumulates
        ``top = 0; top += c_i * x_i`` in input order.
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of the common shape, float32

    References
    ----------
    Caffe ``eltwise_layer.cpp``; Chen et al., TPAMI 2018, Sec. 3.2 (ASPP sum)
    and 4.1 (MSC max fusion).
    """
    if operation not in ELTWISE_OPERATIONS:
        raise ValueError(f"operation must be one of {ELTWISE_OPERATIONS}, got {operation!r}")
    inputs = list(inputs)
    if len(inputs) < 2:
        raise ValueError(f"Eltwise needs at least two inputs, got {len(inputs)}")
    shapes = [array_shape(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"Eltwise inputs must have one shape, got {shapes}")
    if coeffs is not None and operation != "sum":
        raise ValueError(f"coeffs apply to operation 'sum' only, got operation {operation!r}")
    coeffs = [1.0] * len(inputs) if coeffs is None else [float(c) for c in coeffs]
    if len(coeffs) != len(inputs):
        raise ValueError(f"Eltwise needs one coefficient per input ({len(inputs)}), got {len(coeffs)}")
    if resolve_backend(backend, *inputs) == "cuda":
        from . import cuda
        return cuda.eltwise(inputs, operation, coeffs)
    arrays = [host_float32(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
    if operation == "sum":
        out = np.zeros(shapes[0], np.float32)
        for c, a in zip(coeffs, arrays):
            out += np.float32(c) * a
    elif operation == "prod":
        out = arrays[0] * arrays[1]
        for a in arrays[2:]:
            out *= a
    else:
        # Caffe: top = a > b ? a : b, then top = x > top ? x : top (NaN never replaces).
        out = np.where(arrays[0] > arrays[1], arrays[0], arrays[1])
        for a in arrays[2:]:
            out = np.where(a > out, a, out)
    return out


def concat(inputs, axis=1, backend="auto"):
    """Caffe Concat: join blobs along ``axis`` (``concat_param.axis``, default 1).

    Parameters
    ----------
    inputs : sequence of ndarray, float32 (or CUDA device arrays)
        Shapes equal except along ``axis``.
    axis : int
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray, float32
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError("Concat needs at least one input, got none")
    shapes = [array_shape(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
    axis = canonical_axis(axis, len(shapes[0]))
    for s in shapes:
        if len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
            raise ValueError(f"Concat inputs must agree on every axis but {axis}, got {shapes}")
    if resolve_backend(backend, *inputs) == "cuda":
        from . import cuda
        return cuda.concat(inputs, axis)
    return np.concatenate([host_float32(x, f"inputs[{i}]") for i, x in enumerate(inputs)], axis=axis)


def softmax(x, axis=1, backend="auto"):
    """Caffe Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W) (any rank), float32 (or a CUDA device array)
    axis : int
        ``softmax_param.axis``, the class axis (default 1).
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of the shape of ``x``, float32
    """
    shape = array_shape(x, "x")
    axis = canonical_axis(axis, len(shape))
    if resolve_backend(backend, x) == "cuda":
        from . import cuda
        return cuda.softmax(x, axis)
    a = host_float32(x, "x")
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _argmax_layout(shape, axis, top_k):
    """(outer, dim, inner) of the search and the checked top_k."""
    if axis is None:  # Caffe: the whole of each item, count(1) values
        outer, dim, inner = shape[0], int(np.prod(shape[1:])), 1
    else:
        axis = canonical_axis(axis, len(shape))
        outer, dim, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    if not isinstance(top_k, numbers.Integral) or not 1 <= top_k <= dim:
        raise ValueError(f"top_k must be an int in [1, {dim}] (the values searched), got {top_k!r}")
    return axis, outer, dim, inner


def argmax_output_shape(shape, axis, top_k, out_max_val):
    """Shape of Caffe's ArgMax top blob (at least three axes when ``axis`` is None)."""
    if axis is not None:
        out = list(shape)
        out[canonical_axis(axis, len(shape))] = top_k
        return tuple(out)
    out = [1] * max(len(shape), 3)
    out[0], out[1], out[2] = shape[0], 2 if out_max_val else 1, top_k
    return tuple(out)


def argmax(x, axis=None, top_k=1, out_max_val=False, backend="auto"):
    """Caffe ArgMax: the ``top_k`` largest values' indices (or values), highest index on ties.

    Parameters
    ----------
    x : ndarray, float32 (or a CUDA device array)
    axis : int or None
        ``argmax_param.axis``. None (Caffe's default) searches all of each item
        ``x[n]`` and gives shape (N, 1, top_k) (at least three axes).
    top_k : int
    out_max_val : bool
        With ``axis``: return the values instead of the indices. Without: return
        indices then values, shape (N, 2, top_k).
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray, float32
        Indices as float32, which is what Caffe's top blob holds. Sorted by
        value, largest first; equal values by index, **largest index first**
        (Caffe's ``std::partial_sort`` with ``std::greater`` on (value, index)
        pairs), unlike ``np.argmax``, which keeps the lowest index.
    """
    shape = array_shape(x, "x")
    axis, outer, dim, inner = _argmax_layout(shape, axis, top_k)
    out_shape = argmax_output_shape(shape, axis, top_k, out_max_val)
    if resolve_backend(backend, x) == "cuda":
        from . import cuda
        return cuda.argmax(x, (outer, dim, inner), top_k, out_max_val, axis is None, out_shape)
    v = host_float32(x, "x").reshape(outer, dim, inner)
    if top_k == 1 and not np.isnan(v).any():
        # np.argmax keeps the first of equal values: over the reversed axis, the highest index
        # (5x faster than the sort below: 73 -> 13 ms for 21 labels at 500x375)
        order = np.argmax(v[:, ::-1, :], axis=1, keepdims=True)  # (outer, 1, inner)
    else:
        # A stable ascending sort of -value over the reversed axis puts, among equal values, the
        # highest index first (and NaN last, where np.argmax would take it)
        order = np.argsort(-v[:, ::-1, :], axis=1, kind="stable")[:, :top_k, :]  # (outer, top_k, inner)
    index = (dim - 1) - order
    values = np.take_along_axis(v, index, axis=1)
    if axis is not None:
        out = values if out_max_val else index.astype(np.float32)
    elif out_max_val:
        out = np.concatenate([index.astype(np.float32), values], axis=1)  # (N, 2 * top_k, 1)
    else:
        out = index.astype(np.float32)
    return out.reshape(out_shape)
