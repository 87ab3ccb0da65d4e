"""CUDA kernels for the Caffe layers (imported lazily, by the ``backend="cuda"`` branches).

Each host wrapper takes NumPy arrays or CUDA device arrays and returns the same
kind: a device array in gives a device array out, so a forward pass keeps its
activations on the GPU. The public functions in ``pooling``, ``interp``,
``normalization``, ``elementwise`` and ``inner_product`` validate first; these
wrappers trust their arguments, except for the dtype and layout of device
arrays, which only they can see.

Kernels use grid-stride loops over ceil-divided grids (one thread per output
element, or per output position for reductions over channels). The one
shared-memory kernel (the inner product's tiled matrix product) is built by a
factory per tile size. Launch shapes come from :mod:`nets.layers.config`; the ReLU is
:func:`atrous.cuda.relu`.
"""
import math
from functools import lru_cache

import numpy as np
from numba import cuda, float32

from atrous import cuda as atrous_cuda
from atrous.backend import is_device_array

from . import config
from ._arrays import host_float32
from .pool_window import ave_window, max_window

FLT_MAX = float32(np.finfo(np.float32).max)


def _launch(n):
    """``(blocks, threads)`` for ``n`` outputs, one thread each, grid-stride beyond the cap."""
    threads = config.CUDA_THREADS
    return max(1, min(math.ceil(n / threads), config.CUDA_MAX_BLOCKS)), threads


def _device(x, name):
    """A C-contiguous float32 device array for ``x``; host arrays are copied over."""
    if not is_device_array(x):
        return cuda.to_device(host_float32(x, name))
    # Numba's own device arrays as they are; others (CuPy, PyTorch) through their interface.
    d = x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)
    if d.dtype != np.float32:
        raise TypeError(f"{name} must be a float32 device array, got dtype {d.dtype}")
    if not d.is_c_contiguous():
        raise ValueError(f"{name} must be a C-contiguous device array, got strides {d.strides}")
    return d


def _finish(d, inputs, shape):
    """Reshape the result; copy it back when every input came from the host."""
    d = d.reshape(shape)
    return d if any(is_device_array(x) for x in inputs) else d.copy_to_host()


# ----------------------------------------------------------------- pooling


_max_window = cuda.jit(device=True)(max_window)
_ave_window = cuda.jit(device=True)(ave_window)


@cuda.jit
def _max_pool_kernel(planes, kh, kw, sh, sw, ph, pw, out):
    count, height, width = planes.shape
    _, oh, ow = out.shape
    for i in range(cuda.grid(1), count * oh * ow, cuda.gridsize(1)):
        p = i // (oh * ow)
        hstart, hend = _max_window((i // ow) % oh, sh, ph, kh, height)
        wstart, wend = _max_window(i % ow, sw, pw, kw, width)
        best = -FLT_MAX
        for y in range(hstart, hend):
            for x in range(wstart, wend):
                if planes[p, y, x] > best:
                    best = planes[p, y, x]
        out[p, (i // ow) % oh, i % ow] = best


@cuda.jit
def _ave_pool_kernel(planes, kh, kw, sh, sw, ph, pw, out):
    count, height, width = planes.shape
    _, oh, ow = out.shape
    for i in range(cuda.grid(1), count * oh * ow, cuda.gridsize(1)):
        p = i // (oh * ow)
        hstart, hend, pool_h = _ave_window((i // ow) % oh, sh, ph, kh, height)
        wstart, wend, pool_w = _ave_window(i % ow, sw, pw, kw, width)
        total = float32(0)
        for y in range(hstart, hend):
            for x in range(wstart, wend):
                total += planes[p, y, x]
        out[p, (i // ow) % oh, i % ow] = total / float32(pool_h * pool_w)  # divisor counted before clipping


def pool2d(x, kernel, stride, pad, out_shape, mode):
    """Pooling on the GPU; arguments already checked by ``pooling.pool2d``."""
    d = _device(x, "x")
    planes = d.reshape((-1,) + tuple(d.shape)[-2:])  # (N*C, H, W)
    out = cuda.device_array((planes.shape[0],) + tuple(out_shape[-2:]), np.float32)
    kernel_fn = _max_pool_kernel if mode == "max" else _ave_pool_kernel
    kernel_fn[_launch(out.size)](planes, kernel[0], kernel[1], stride[0], stride[1],
                                          pad[0], pad[1], out)
    return _finish(out, [x], out_shape)


# ------------------------------------------------------------------ interp


@cuda.jit
def _interp_kernel(planes, offset, h_in, w_in, rh, rw, out):
    count, h_out, w_out = out.shape
    one = float32(1)
    same = h_in == h_out and w_in == w_out
    for i in range(cuda.grid(1), count * h_out * w_out, cuda.gridsize(1)):
        p = i // (h_out * w_out)
        y = (i // w_out) % h_out
        x = i % w_out
        if same:
            out[p, y, x] = planes[p, offset + y, offset + x]
            continue
        h1r = rh * float32(y)
        h1 = int(h1r)
        dh = 1 if h1 < h_in - 1 else 0
        ly = h1r - float32(h1)
        w1r = rw * float32(x)
        w1 = int(w1r)
        dw = 1 if w1 < w_in - 1 else 0
        lx = w1r - float32(w1)
        r0 = offset + h1
        c0 = offset + w1
        out[p, y, x] = ((one - ly) * ((one - lx) * planes[p, r0, c0] + lx * planes[p, r0, c0 + dw])
                        + ly * ((one - lx) * planes[p, r0 + dh, c0] + lx * planes[p, r0 + dh, c0 + dw]))


def _ratio(size_in, size_out):
    # float32 division, as Caffe's static_cast<float>(in - 1) / (out - 1)
    return np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)


def interp(x, offset, size_in, out_shape):
    """Caffe Interp on the GPU; arguments already checked by ``interp.interp``."""
    d = _device(x, "x")
    planes = d.reshape((-1,) + tuple(d.shape)[-2:])  # (N*C, H, W)
    h_out, w_out = out_shape[-2:]
    out = cuda.device_array((planes.shape[0], h_out, w_out), np.float32)
    _interp_kernel[_launch(out.size)](planes, offset, size_in[0], size_in[1],
                                               _ratio(size_in[0], h_out), _ratio(size_in[1], w_out),
                                               out)
    return _finish(out, [x], out_shape)


# ------------------------------------------------------------- elementwise


@cuda.jit
def _fill_kernel(out, value):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


@cuda.jit
def _axpy_kernel(coeff, x, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] += coeff * x[i]


@cuda.jit
def _multiply_kernel(x, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] *= x[i]


@cuda.jit
def _maximum_kernel(x, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        if x[i] > out[i]:  # Caffe's test: NaN in x never replaces
            out[i] = x[i]


def relu(x, slope, out=None):
    """Caffe ReLU on the GPU (:func:`atrous.cuda.relu`, the one CUDA ReLU); see ``elementwise.relu``.

    ``out`` (a device array of x's shape, x itself for in place) is written when given.
    """
    d = _device(x, "x")
    if out is not None and (not is_device_array(out) or tuple(out.shape) != tuple(d.shape)
                            or np.dtype(out.dtype) != np.float32 or not out.is_c_contiguous()):
        raise ValueError(f"out must be a C-contiguous float32 device array of shape {tuple(d.shape)}")
    return _finish(atrous_cuda.relu(d, slope, out=out), [x], tuple(d.shape))


def eltwise(inputs, operation, coeffs):
    """Caffe Eltwise on the GPU, in Caffe's accumulation order; see ``elementwise.eltwise``."""
    devices = [_device(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
    flats = [d.reshape(d.size) for d in devices]
    n = flats[0].size
    grid = _launch(n)
    if operation == "sum":
        out = cuda.device_array(n, np.float32)
        _fill_kernel[grid](out, np.float32(0.0))  # Caffe starts the sum from zeros; no host copy
        for c, f in zip(coeffs, flats):
            _axpy_kernel[grid](np.float32(c), f, out)
    elif operation == "prod":
        out = cuda.device_array(n, np.float32)
        out.copy_to_device(flats[0])
        for f in flats[1:]:
            _multiply_kernel[grid](f, out)
    else:
        # Caffe: top = a > b ? a : b, i.e. start from b and let a replace it.
        out = cuda.device_array(n, np.float32)
        out.copy_to_device(flats[1])
        for f in [flats[0]] + flats[2:]:
            _maximum_kernel[grid](f, out)
    return _finish(out, inputs, tuple(devices[0].shape))


@cuda.jit
def _copy_block_kernel(src, dst, offset):
    outer, n = src.shape
    for i in range(cuda.grid(1), outer * n, cuda.gridsize(1)):
        dst[i // n, offset + i % n] = src[i // n, i % n]


def concat(inputs, axis):
    """Caffe Concat on the GPU: each input copied into its block of the output."""
    devices = [_device(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
    shape = list(devices[0].shape)
    shape[axis] = sum(d.shape[axis] for d in devices)
    outer = int(np.prod(shape[:axis]))
    out = cuda.device_array((outer, int(np.prod(shape[axis:]))), np.float32)  # (outer, C_total*inner)
    offset = 0
    for d in devices:
        src = d.reshape(outer, d.size // outer)  # (outer, C_i*inner)
        _copy_block_kernel[_launch(d.size)](src, out, offset)
        offset += src.shape[1]
    return _finish(out, inputs, tuple(shape))


@cuda.jit
def _softmax_kernel(x, out):
    outer, dim, inner = x.shape
    for i in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = i // inner
        j = i % inner
        top = x[o, 0, j]
        for c in range(1, dim):
            top = max(top, x[o, c, j])
        total = float32(0)
        for c in range(dim):
            e = math.exp(x[o, c, j] - top)
            out[o, c, j] = e
            total += e
        for c in range(dim):
            out[o, c, j] /= total


def softmax(x, axis):
    """Caffe Softmax on the GPU, one thread per position along the other axes."""
    d = _device(x, "x")
    shape = tuple(d.shape)
    outer = int(np.prod(shape[:axis]))
    inner = int(np.prod(shape[axis + 1:]))
    view = d.reshape(outer, shape[axis], inner)  # (outer, C, inner)
    out = cuda.device_array(view.shape, np.float32)
    _softmax_kernel[_launch(outer * inner)](view, out)
    return _finish(out, [x], shape)


@cuda.jit
def _argmax_kernel(x, index, values):
    outer, dim, inner = x.shape
    top_k = index.shape[1]
    for i in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = i // inner
        j = i % inner
        # k-th pick: the largest (value, index) pair below the previous pick,
        # so equal values go out highest index first, as Caffe sorts them.
        prev_v = float32(0)
        prev_c = -1
        for k in range(top_k):
            best_v = float32(0)
            best_c = -1
            for c in range(dim):
                v = x[o, c, j]
                below = k == 0 or v < prev_v or (v == prev_v and c < prev_c)
                if below and (best_c < 0 or v > best_v or (v == best_v and c > best_c)):
                    best_v = v
                    best_c = c
            index[o, k, j] = float32(best_c)
            values[o, k, j] = best_v
            prev_v = best_v
            prev_c = best_c


def argmax(x, layout, top_k, out_max_val, whole_item, out_shape):
    """Caffe ArgMax on the GPU; ``layout`` is (outer, dim, inner) of the search."""
    d = _device(x, "x")
    outer, dim, inner = layout
    view = d.reshape(outer, dim, inner)
    index = cuda.device_array((outer, top_k, inner), np.float32)
    values = cuda.device_array((outer, top_k, inner), np.float32)
    _argmax_kernel[_launch(outer * inner)](view, index, values)
    if whole_item and out_max_val:  # Caffe's (N, 2, top_k): indices, then values
        both = cuda.device_array((outer, 2 * top_k), np.float32)
        grid = _launch(outer * top_k)
        _copy_block_kernel[grid](index.reshape(outer, top_k), both, 0)
        _copy_block_kernel[grid](values.reshape(outer, top_k), both, top_k)
        return _finish(both, [x], out_shape)
    return _finish(values if out_max_val else index, [x], out_shape)


# --------------------------------------------------------- normalization


@cuda.jit
def _channel_affine_kernel(x, first, second, normalize, out):
    count, channels, size = x.shape
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n = i // (channels * size)
        c = (i // size) % channels
        s = i % size
        if normalize:
            out[n, c, s] = (x[n, c, s] - first[c]) / second[c]
        else:
            out[n, c, s] = x[n, c, s] * first[c] + second[c]


def channel_affine(x, first, second, op):
    """``(x - first) / second`` (BatchNorm) or ``x * first + second`` (Scale), per channel."""
    d = _device(x, "x")
    shape = tuple(d.shape)
    view = d.reshape(-1, shape[-3], shape[-2] * shape[-1])  # (N, C, H*W)
    out = cuda.device_array(view.shape, np.float32)
    _channel_affine_kernel[_launch(view.size)](view, cuda.to_device(first),
                                                        cuda.to_device(second), op == "normalize", out)
    return _finish(out, [x], shape)


# ---------------------------------------------------------- inner product


@lru_cache(maxsize=None)
def _gemm_kernel(tile):
    """Build ``out = a @ w.T + bias`` with (tile, tile) shared-memory tiles."""

    @cuda.jit
    def kernel(a, w, bias, out):
        a_tile = cuda.shared.array((tile, tile), float32)
        w_tile = cuda.shared.array((tile, tile), float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m, k = a.shape
        n = w.shape[0]
        # Every thread of a block runs the same tile loops, so syncthreads is safe.
        for tm in range(cuda.blockIdx.y, (m + tile - 1) // tile, cuda.gridDim.y):
            for tn in range(cuda.blockIdx.x, (n + tile - 1) // tile, cuda.gridDim.x):
                row = tm * tile + ty
                col = tn * tile + tx
                w_row = tn * tile + ty
                acc = float32(0)
                for k0 in range(0, k, tile):
                    kk = k0 + tx
                    a_tile[ty, tx] = a[row, kk] if row < m and kk < k else float32(0)
                    w_tile[ty, tx] = w[w_row, kk] if w_row < n and kk < k else float32(0)
                    cuda.syncthreads()
                    for t in range(tile):
                        acc += a_tile[ty, t] * w_tile[tx, t]
                    cuda.syncthreads()
                if row < m and col < n:
                    out[row, col] = acc + bias[col]

    return kernel


def inner_product(x, rows_k, weight, bias, out_shape):
    """Caffe InnerProduct on the GPU: ``x`` as (M, K) times ``weight.T`` plus ``bias``."""
    d = _device(x, "x").reshape(*rows_k)  # (M, K)
    num_output = weight.shape[0]
    bias = np.zeros(num_output, np.float32) if bias is None else bias
    out = cuda.device_array((rows_k[0], num_output), np.float32)
    tile = config.CUDA_GEMM_TILE
    grid = (min(math.ceil(num_output / tile), 1024), min(math.ceil(rows_k[0] / tile), 1024))
    _gemm_kernel(tile)[grid, (tile, tile)](d, cuda.to_device(weight), cuda.to_device(bias), out)
    return _finish(out, [x], out_shape)
