"""Atrous convolution on a CUDA GPU: an implicit-GEMM kernel with shared-memory tiles
and register blocking.

Seen as a matrix product, a convolution of image n, group g is

    out[o, p] = sum_k w[o, k] * patch[k, p],

with o an output channel of the group, p = u*W_out + v an output pixel and
k = (c, i, j) a tap of an input channel. The patch matrix is never stored
(an explicit im2col would cost C_in*kh*kw times the image in GPU memory): each
thread block owns a block of BM output channels x BN pixels and walks k in steps
of BK, loading a BK x BM slice of the weights and gathering a BK x BN slice of
the patch matrix straight from the input -- the dilated indexing
``x_pad[c, stride*u + rate*i, stride*v + rate*j]`` happens during that load --
into shared memory. Each of its T x T threads then accumulates a MICRO x MICRO
block of outputs in registers (channels ``ty + T*a``, pixels ``tx + T*b``), so
that every value read from shared memory feeds MICRO multiply-adds instead of
one. T = 16 and MICRO = 2, 4 or 8 by the number of output channels
(BM = BN = 32 to 128, BK = 16; see :func:`block_shape` and :mod:`atrous.config`).

Shared and local array shapes must be compile-time constants, so kernels come
from a factory cached per (T, MICRO). Grids are ceil-divided and every kernel
loops grid-stride, so any problem size fits any grid.

This module imports ``numba.cuda``; :func:`atrous.conv2d` imports it only when
the ``"cuda"`` backend is chosen.
"""
import functools
import math

import numpy as np
from numba import cuda, float32

from atrous import config
from atrous.backend import is_device_array


def block_shape(channels):
    """Threads per block edge T and outputs per thread edge MICRO for ``channels`` output
    channels per group (:data:`atrous.config.CUDA_CONV_BLOCKS`).

    T = 16, and MICRO grows with the channels, so that a block's 16 * MICRO channels are
    not mostly padding: MICRO 8 from 256 channels, 4 from 64, else 2 (the thresholds
    between the measured layers are interpolated). Milliseconds per layer on an H100
    (rates 12, 2 and 6; bench/RESULTS.md):

    ==========================  =======  =======  =======
    layer                       MICRO 2  MICRO 4  MICRO 8
    ==========================  =======  =======  =======
    fc6 512->1024, 65x65        14.1     10.1     8.5
    conv5 512->512, 65x65       7.4      5.9      5.6
    ASPP branch 2048->21        3.8      5.2      11.0
    ==========================  =======  =======  =======
    """
    for minimum, shape in config.CUDA_CONV_BLOCKS:
        if channels >= minimum:
            return shape
    return config.CUDA_CONV_BLOCKS[-1][1]


@functools.lru_cache(maxsize=None)
def conv_kernel(threads, micro):
    """Build (once per shape) the register-blocked implicit-GEMM convolution kernel.

    The kernel's arguments: ``x`` (N, C_in, H, W), ``w`` (C_out, C_in/g*kh*kw),
    ``bias`` (C_out,), ``out`` (N, C_out, H_out, W_out), all float32, then the
    ints ``groups, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w``.
    Launch with blocks of (threads, threads) threads; ``micro`` must divide
    ``threads``. A block covers ``threads * micro`` output channels (grid y) by
    ``threads * micro`` pixels (grid x).
    """
    if threads % micro:
        raise ValueError(f"micro ({micro}) must divide threads ({threads})")
    bm = bn = threads * micro  # output channels and pixels of a block
    bk = threads  # taps per step of the k loop
    per_thread = micro  # shared-memory elements each thread loads per tile: bk * bm / threads**2
    w_cols = bm + 1  # the weight tile's row length: +1 spreads its column-wise stores over the banks (at most 2-way)

    @cuda.jit
    def kernel(x, w, bias, out, groups, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
        w_tile = cuda.shared.array((bk, w_cols), float32)  # [tap, channel]
        p_tile = cuda.shared.array((bk, bn), float32)  # [tap, pixel]
        acc = cuda.local.array((micro, micro), float32)  # [channel, pixel] of this thread: registers
        w_reg = cuda.local.array(micro, float32)
        p_reg = cuda.local.array(micro, float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * threads + tx
        n_img, c_in, h_in, w_in = x.shape
        c_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
        c_in_g = c_in // groups
        c_out_g = c_out // groups
        taps = kh * kw
        k_total = c_in_g * taps
        n_pix = h_out * w_out
        tiles_o = (c_out_g + bm - 1) // bm
        tiles_p = (n_pix + bn - 1) // bn
        # The patch loads: this thread always gathers pixel column tid % bn of the tile,
        # taps tid // bn + r * (threads**2 // bn); the weight loads: tap tid % bk, channels
        # tid // bk + r * (threads**2 // bk).
        load_pix = tid % bn
        load_tap = tid // bn
        tap_step = threads * threads // bn
        load_k = tid % bk
        load_o = tid // bk
        o_step = threads * threads // bk
        for z in range(cuda.blockIdx.z, n_img * groups, cuda.gridDim.z):
            n = z // groups
            g = z - n * groups
            for to in range(cuda.blockIdx.y, tiles_o, cuda.gridDim.y):
                o0 = to * bm
                for tp in range(cuda.blockIdx.x, tiles_p, cuda.gridDim.x):
                    p0 = tp * bn
                    # the pixel this thread gathers, decoded once per tile
                    p_load = p0 + load_pix
                    u_load = p_load // w_out
                    y0 = stride_h * u_load - pad_h
                    x0 = stride_w * (p_load - u_load * w_out) - pad_w
                    for a in range(micro):
                        for b in range(micro):
                            acc[a, b] = float32(0.0)
                    for k0 in range(0, k_total, bk):
                        for r in range(per_thread):
                            o = o0 + load_o + r * o_step
                            k = k0 + load_k
                            value = float32(0.0)
                            if o < c_out_g and k < k_total:
                                value = w[g * c_out_g + o, k]
                            w_tile[load_k, load_o + r * o_step] = value
                        for r in range(per_thread):
                            kk = load_tap + r * tap_step
                            k = k0 + kk
                            value = float32(0.0)
                            if k < k_total and p_load < n_pix:
                                c = k // taps
                                i = (k - c * taps) // kw
                                j = k - c * taps - i * kw
                                yy = y0 + dil_h * i
                                xx = x0 + dil_w * j
                                if 0 <= yy < h_in and 0 <= xx < w_in:
                                    value = x[n, g * c_in_g + c, yy, xx]
                            p_tile[kk, load_pix] = value
                        cuda.syncthreads()
                        for t in range(bk):
                            for a in range(micro):
                                w_reg[a] = w_tile[t, ty + a * threads]
                            for b in range(micro):
                                p_reg[b] = p_tile[t, tx + b * threads]
                            for a in range(micro):
                                for b in range(micro):
                                    acc[a, b] += w_reg[a] * p_reg[b]
                        cuda.syncthreads()
                    for a in range(micro):
                        o = o0 + ty + a * threads
                        if o < c_out_g:
                            for b in range(micro):
                                p = p0 + tx + b * threads
                                if p < n_pix:
                                    u = p // w_out
                                    out[n, g * c_out_g + o, u, p - u * w_out] = acc[a, b] + bias[g * c_out_g + o]

    return kernel


@cuda.jit
def _add_kernel(a, b):
    """a += b, element-wise on flat float32 arrays."""
    for t in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[t] += b[t]


@cuda.jit
def _relu_kernel(x, slope, out):
    """Caffe's ReLU on flat float32 arrays: ``out = max(x, 0) + slope * min(x, 0)``.

    ``max`` and ``min`` as C++'s ``std::max``/``std::min``, so that a NaN stays NaN;
    ``out`` may be ``x`` (in place).
    """
    zero = float32(0)
    for t in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[t]
        out[t] = (zero if v < zero else v) + slope * (zero if zero < v else v)


def _flat_launch(size):
    threads = config.CUDA_FLAT_THREADS
    return min(config.CUDA_MAX_GRID, max(1, math.ceil(size / threads))), threads


def add_(a, b):
    """In place ``a += b`` for two C-contiguous float32 device arrays of one shape; returns a."""
    a_flat, b_flat = a.reshape(a.size), b.reshape(b.size)
    blocks, threads = _flat_launch(a.size)
    _add_kernel[blocks, threads](a_flat, b_flat)
    return a


def relu(x, negative_slope=0.0, out=None):
    """Caffe's ReLU of a C-contiguous float32 device array (see ``_relu_kernel``).

    Parameters
    ----------
    x : device array, float32, C-contiguous
    negative_slope : float
    out : device array of x's shape, float32, optional
        Where to write (``x`` itself for in place); a new array by default.

    Returns
    -------
    device array of x's shape
    """
    out = cuda.device_array(x.shape, np.float32) if out is None else out
    blocks, threads = _flat_launch(x.size)
    _relu_kernel[blocks, threads](x.reshape(x.size), np.float32(negative_slope), out.reshape(out.size))
    return out


def relu_(a):
    """In place ReLU of a C-contiguous float32 device array; returns a."""
    return relu(a, 0.0, out=a)


def _to_device(a):
    return a if is_device_array(a) else cuda.to_device(a)


def conv2d(x, weight, bias, stride, pad, dilation, groups, squeeze):
    """Atrous convolution on the GPU; :func:`atrous.conv2d` validates and calls this.

    Parameters
    ----------
    x : ndarray or device array of shape (C_in, H, W) (``squeeze``) or (N, C_in, H, W), float32
    weight : ndarray or device array of shape (C_out, C_in // groups, kh, kw), float32
    bias : ndarray or device array of shape (C_out,), float32, or None
    stride, pad, dilation : tuple of two ints
    groups : int
    squeeze : bool
        x has no batch axis; neither has the result.

    Returns
    -------
    y : device array if x is one, else ndarray; shape (N, C_out, H_out, W_out)
        or (C_out, H_out, W_out) with ``squeeze``; float32.
    """
    host_in = not is_device_array(x)
    shape4 = (1,) + tuple(x.shape) if squeeze else tuple(x.shape)
    n_img, _, h, w = shape4
    c_out, c_in_g, kh, kw = (int(s) for s in weight.shape)
    h_out = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    w_out = (w + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1

    d_x = _to_device(x).reshape(*shape4)
    d_w = _to_device(weight).reshape(c_out, c_in_g * kh * kw)  # (C_out, C_in/g*kh*kw)
    d_b = _to_device(np.zeros(c_out, np.float32) if bias is None else bias)
    d_out = cuda.device_array((n_img, c_out, h_out, w_out), np.float32)

    threads, micro = block_shape(c_out // groups)
    block = threads * micro  # output channels and pixels per thread block
    max_grid = config.CUDA_MAX_GRID
    grid = (min(max_grid, math.ceil(h_out * w_out / block)),
            min(max_grid, math.ceil(c_out // groups / block)),
            min(max_grid, n_img * groups))
    conv_kernel(threads, micro)[grid, (threads, threads)](d_x, d_w, d_b, d_out, groups, kh, kw, stride[0],
                                                          stride[1], pad[0], pad[1], dilation[0], dilation[1])
    y = d_out[0] if squeeze else d_out
    return y.copy_to_host() if host_in else y
