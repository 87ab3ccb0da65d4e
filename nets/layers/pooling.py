"""Caffe's Pooling layer: MAX and AVE in ceil mode, with Caffe's clip rule.

Output size (Caffe ``PoolingLayer::Reshape``)::

    out = ceil((in + 2 pad - k) / stride) + 1
    if pad > 0 and (out - 1) * stride >= in + pad:   # the last window would start in the padding
        out -= 1

Window of output cell ``o``: ``start = o * stride - pad``, ``end = start + k``.

* MAX: the window is clipped to the image first, so padded cells never win.
* AVE: ``end`` is first clipped to ``in + pad`` and the divisor
  ``(hend - hstart) * (wend - wstart)`` is taken *before* clipping to the image:
  zero padding counts in the divisor, up to ``in + pad`` on the far side; the
  sum runs over real pixels only, row by row as Caffe adds them.

Three tiers with one signature: ``backend="numpy"`` (the reference below, a
loop over the k*k window offsets, vectorised over the output), ``"cpu"`` (Numba
kernels: MAX separably, row maxima then column maxima, in Caffe's order of
comparisons; AVE one output cell at a time) and ``"cuda"`` (``nets.layers.cuda``).
"""
import numpy as np
from numba import njit, prange

from atrous.backend import resolve_backend
from atrous.conv import int_pair

from ._arrays import check_blob, host_float32
from .pool_window import ave_window, max_window

MODES = ("max", "ave")
# Caffe starts every MAX window at -FLT_MAX and replaces it only by a larger value.
FLT_MAX = np.float32(np.finfo(np.float32).max)


def pool_output_size(size, kernel, stride, pad):
    """Output length of Caffe pooling along one axis (ceil mode with the clip rule).

    Parameters
    ----------
    size, kernel, stride, pad : int
        Input length, window, stride and zero padding (both sides).

    Returns
    -------
    int

    References
    ----------
    Caffe ``src/caffe/layers/pooling_layer.cpp`` (``Reshape``), as used by
    DeepLab (Chen et al., ICLR 2015 and TPAMI 2018): 513 -> 257 -> 129 -> 65.
    """
    # -(-a // b) is ceil(a / b) for integers of either sign.
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_reference(planes, kernel, stride, pad, out_size, mode):
    """Pooling in plain NumPy: one shifted, strided view per window offset.

    planes : ndarray of shape (P, H, W), float32 -> ndarray of shape (P, OH, OW).
    """
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out_size
    count, height, width = planes.shape
    # A canvas holding every window: padded cells are -FLT_MAX for MAX (they never
    # win) and 0 for AVE (they add nothing to the sum but count in the divisor).
    rows = max((oh - 1) * sh + kh, ph + height)
    cols = max((ow - 1) * sw + kw, pw + width)
    fill = -FLT_MAX if mode == "max" else np.float32(0)
    canvas = np.full((count, rows, cols), fill, np.float32)
    canvas[:, ph:ph + height, pw:pw + width] = planes
    out = np.full((count, oh, ow), fill, np.float32)
    for i in range(kh):  # rows first, as Caffe adds them
        for j in range(kw):
            window_cell = canvas[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            if mode == "max":
                # fmax ignores NaN, like Caffe's `if (x > top)`.
                out = np.fmax(out, window_cell)
            else:
                out += window_cell
    if mode == "ave":
        hstart = np.arange(oh) * sh - ph
        hend = np.minimum(hstart + kh, height + ph)
        wstart = np.arange(ow) * sw - pw
        wend = np.minimum(wstart + kw, width + pw)
        divisor = np.outer(hend - hstart, wend - wstart).astype(np.float32)  # (OH, OW)
        with np.errstate(invalid="ignore"):  # 0 / 0 for an empty window, as in Caffe
            out /= divisor
    return out


_max_window = njit(cache=True)(max_window)
_ave_window = njit(cache=True)(ave_window)


@njit(parallel=True, cache=True)
def _max_pool_kernel(planes, kh, kw, sh, sw, ph, pw, out):
    """MAX pooling separably: each row's window maxima, then their maxima down each window of rows.

    A window's cells are compared in Caffe's order (rows, then columns within a row), each
    replacing the running value only when greater, starting from -FLT_MAX: the first row
    holding the window's maximum gives it, at its first such cell, exactly as one pass over
    the window does (NaN never wins; of +0 and -0 the first met stays). kh + kw comparisons
    per output instead of kh * kw, in loops over contiguous outputs that vectorise
    (pool4 of LargeFOV, 3x3 stride 1 on 512 x 65 x 65: 15 ms as one pass per window).
    """
    count, height, width = planes.shape
    _, oh, ow = out.shape
    for p in prange(count):
        rows = np.empty((height, ow), np.float32)  # the window maxima along every input row
        for y in range(height):
            row, acc = planes[p, y], rows[y]
            for ox in range(ow):
                acc[ox] = -FLT_MAX
            for j in range(kw):  # the window's column j: x = ox * sw - pw + j, inside the image
                first = max(0, -(-(pw - j) // sw))
                last = min(ow, (width - 1 + pw - j) // sw + 1)
                for ox in range(first, last):
                    v = row[ox * sw - pw + j]
                    acc[ox] = v if v > acc[ox] else acc[ox]
        for oy in range(oh):
            hstart, hend = _max_window(oy, sh, ph, kh, height)
            dst = out[p, oy]
            for ox in range(ow):
                dst[ox] = -FLT_MAX
            for y in range(hstart, hend):
                src = rows[y]
                for ox in range(ow):
                    v = src[ox]
                    dst[ox] = v if v > dst[ox] else dst[ox]


# error_model="numpy": an empty window (pad 0, stride > kernel, see ``pool2d``)
# may divide 0 by 0 and give NaN, as Caffe's float division does, instead of raising.
@njit(parallel=True, cache=True, error_model="numpy")
def _ave_pool_kernel(planes, kh, kw, sh, sw, ph, pw, out):
    count, height, width = planes.shape
    _, oh, ow = out.shape
    for task in prange(count * oh):
        p = task // oh
        oy = task % oh
        hstart, hend, pool_h = _ave_window(oy, sh, ph, kh, height)
        for ox in range(ow):
            wstart, wend, pool_w = _ave_window(ox, sw, pw, kw, width)
            pool_size = pool_h * pool_w  # counted before clipping to the image
            total = np.float32(0)
            for y in range(hstart, hend):
                for x in range(wstart, wend):
                    total += planes[p, y, x]
            out[p, oy, ox] = total / np.float32(pool_size)


def pool2d(x, kernel, stride=1, pad=0, mode="max", global_pooling=False, backend="auto"):
    """Caffe Pooling (MAX or AVE) in ceil mode with Caffe's clip rule.

    Parameters
    ----------
    x : ndarray of shape (C, H, W) or (N, C, H, W), float32 (or a CUDA device array)
    kernel : int or (int, int)
        Window (kh, kw). Ignored with ``global_pooling``.
    stride : int or (int, int)
    pad : int or (int, int)
        Zero padding on both sides; must be smaller than the kernel (Caffe checks it).
    mode : {"max", "ave"}
    global_pooling : bool
        Pool the whole plane (kernel = (H, W), stride 1, pad 0), as Caffe does.
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of shape (C, OH, OW) or (N, C, OH, OW), float32
        A device array when ``x`` is one. OH and OW from ``pool_output_size``.

    Notes
    -----
    With pad 0 and a stride larger than the kernel, ceil mode can place the last
    window entirely past the image (Caffe's clip rule only applies when pad > 0).
    Caffe then writes -FLT_MAX (MAX) or 0 divided by a divisor <= 0 (AVE: -0 or
    NaN) there, and so does this function. DeepLab's nets never do this.

    References
    ----------
    Caffe ``pooling_layer.cpp`` (MAX and AVE forward); DeepLab's pool1-pool5 and
    LargeFOV's pool5a (Chen et al., ICLR 2015, Sec. 3.1).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    shape = check_blob(x, "x")
    height, width = shape[-2:]
    stride = int_pair(stride, "stride", 1)
    pad = int_pair(pad, "pad", 0)
    if global_pooling:
        if stride != (1, 1) or pad != (0, 0):
            raise ValueError(f"global pooling needs stride 1 and pad 0 (as Caffe checks), "
                             f"got stride {stride} and pad {pad}")
        kernel = (height, width)
    kernel = int_pair(kernel, "kernel", 1)
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise ValueError(f"pad must be smaller than the kernel, got pad {pad} with kernel {kernel}")
    out_size = (pool_output_size(height, kernel[0], stride[0], pad[0]),
                pool_output_size(width, kernel[1], stride[1], pad[1]))
    if min(out_size) < 1:
        raise ValueError(f"input {height}x{width} is smaller than the kernel {kernel} with pad {pad}: "
                         f"output would be {out_size[0]}x{out_size[1]}")
    backend = resolve_backend(backend, x)
    out_shape = shape[:-2] + out_size
    if backend == "cuda":
        from . import cuda
        return cuda.pool2d(x, kernel, stride, pad, out_shape, mode)
    planes = host_float32(x, "x").reshape(-1, height, width)  # (N*C, H, W)
    if backend == "numpy":
        out = _pool_reference(planes, kernel, stride, pad, out_size, mode)
    else:
        out = np.empty((planes.shape[0],) + out_size, np.float32)
        kernel_fn = _max_pool_kernel if mode == "max" else _ave_pool_kernel
        kernel_fn(planes, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], out)
    return out.reshape(out_shape)


def max_pool2d(x, kernel, stride=1, pad=0, backend="auto"):
    """Caffe MAX pooling; see ``pool2d``."""
    return pool2d(x, kernel, stride, pad, "max", backend=backend)


def ave_pool2d(x, kernel, stride=1, pad=0, backend="auto"):
    """Caffe AVE pooling (divisor counts padding up to ``in + pad``); see ``pool2d``."""
    return pool2d(x, kernel, stride, pad, "ave", backend=backend)
