"""Atrous convolution on a CUDA GPU: an implicit-GEMM kernel with shared-memory tiles.

Seen as a matrix product, a convolution of image n, group g is

    out[o, p] = sum_k w[o, k] * patch[k, p],

with o an output channel of the group, p = u*W_out + v an output pixel and
k = (c, i, j) a tap of an input channel. The patch matrix is never stored
(an explicit im2col would cost C_in*kh*kw times the image in GPU memory): each
thread block loads a TILE x TILE block of weights and gathers a TILE x TILE
block of the patch matrix straight from the input -- the dilated indexing
``x_pad[c, stride*u + rate*i, stride*v + rate*j]`` happens during that load --
into shared memory, multiplies the two tiles and moves on along k.

Shared-array shapes must be compile-time constants, so kernels come from a
factory cached per tile size: 16 on a GPU, 4 in the simulator (where every
thread is a Python thread). Grids are ceil-divided and every kernel loops
grid-stride, so any problem size fits any grid.

This module imports ``numba.cuda``; :func:`atrous.conv2d` imports it only when
the ``"cuda"`` backend is chosen.
"""
import contextlib
import functools
import math
import sys

import numpy as np
from numba import config, cuda, float32

from atrous.backend import is_device_array

MAX_GRID = 65535
"""Grid size cap per dimension; larger problems are covered by the grid-stride loops."""


def tile_size():
    """Tile edge: 4 in the CUDA simulator, 16 on a GPU (16x16 = 256 threads per block)."""
    return 4 if config.ENABLE_CUDASIM else 16


@contextlib.contextmanager
def _launching():
    """Around a launch in the simulator: a short interpreter switch interval.

    The simulator runs each thread of a block as a Python thread and polls them
    while holding the GIL; with the default 5 ms switch interval every
    ``syncthreads`` costs milliseconds. 50 us makes small kernels about ten
    times faster. On a GPU this does nothing.
    """
    if not config.ENABLE_CUDASIM:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@functools.lru_cache(maxsize=None)
def conv_kernel(tile):
    """Build (once per tile size) the implicit-GEMM convolution kernel.

    The kernel's arguments: ``x`` (N, C_in, H, W), ``w`` (C_out, C_in/g*kh*kw),
    ``bias`` (C_out,), ``out`` (N, C_out, H_out, W_out), all float32, then the
    ints ``groups, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w``.
    Launch with blocks of (tile, tile) threads; threadIdx.x walks pixels,
    threadIdx.y output channels.
    """

    @cuda.jit
    def kernel(x, w, bias, out, groups, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
        w_tile = cuda.shared.array((tile, tile), float32)  # [channel, tap]
        p_tile = cuda.shared.array((tile, tile), float32)  # [tap, pixel]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        n_img, c_in, h_in, w_in = x.shape
        c_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
        c_in_g = c_in // groups
        c_out_g = c_out // groups
        taps = kh * kw
        k_total = c_in_g * taps
        n_pix = h_out * w_out
        tiles_o = (c_out_g + tile - 1) // tile
        tiles_p = (n_pix + tile - 1) // tile
        for z in range(cuda.blockIdx.z, n_img * groups, cuda.gridDim.z):
            n = z // groups
            g = z - n * groups
            for to in range(cuda.blockIdx.y, tiles_o, cuda.gridDim.y):
                o = to * tile + ty  # this thread's output channel within the group
                for tp in range(cuda.blockIdx.x, tiles_p, cuda.gridDim.x):
                    p_mine = tp * tile + tx  # this thread's output pixel
                    acc = float32(0.0)
                    for k0 in range(0, k_total, tile):
                        # Weights: thread (ty, tx) loads w[o, k0 + tx] (consecutive tx: coalesced).
                        k = k0 + tx
                        if o < c_out_g and k < k_total:
                            w_tile[ty, tx] = w[g * c_out_g + o, k]
                        else:
                            w_tile[ty, tx] = float32(0.0)
                        # Patches: thread (ty, tx) gathers tap k0 + ty of pixel p_mine.
                        k = k0 + ty
                        value = float32(0.0)
                        if k < k_total and p_mine < n_pix:
                            c = k // taps
                            i = (k - c * taps) // kw
                            j = k - c * taps - i * kw
                            u = p_mine // w_out
                            v = p_mine - u * w_out
                            yy = stride_h * u + dil_h * i - pad_h
                            xx = stride_w * v + dil_w * j - pad_w
                            if 0 <= yy < h_in and 0 <= xx < w_in:
                                value = x[n, g * c_in_g + c, yy, xx]
                        p_tile[ty, tx] = value
                        cuda.syncthreads()
                        for t in range(tile):
                            acc += w_tile[ty, t] * p_tile[t, tx]
                        cuda.syncthreads()
                    if o < c_out_g and p_mine < n_pix:
                        u = p_mine // w_out
                        v = p_mine - u * w_out
                        out[n, g * c_out_g + o, u, v] = acc + bias[g * c_out_g + o]

    return kernel


@cuda.jit
def _add_kernel(a, b):
    """a += b, element-wise on flat float32 arrays."""
    for t in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[t] += b[t]


@cuda.jit
def _relu_kernel(a):
    """a = max(a, 0) in place on a flat float32 array; NaN stays NaN."""
    for t in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        if a[t] < 0:
            a[t] = 0.0


def _flat_launch(size):
    threads = 4 * tile_size() ** 2
    return min(MAX_GRID, max(1, math.ceil(size / threads))), threads


def add_(a, b):
    """In place ``a += b`` for two C-contiguous float32 device arrays of one shape; returns a."""
    a_flat, b_flat = a.reshape(a.size), b.reshape(b.size)
    blocks, threads = _flat_launch(a.size)
    with _launching():
        _add_kernel[blocks, threads](a_flat, b_flat)
    return a


def relu_(a):
    """In place ReLU of a C-contiguous float32 device array; returns a."""
    blocks, threads = _flat_launch(a.size)
    with _launching():
        _relu_kernel[blocks, threads](a.reshape(a.size))
    return a


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

    tile = tile_size()
    grid = (min(MAX_GRID, math.ceil(h_out * w_out / tile)),
            min(MAX_GRID, math.ceil(c_out // groups / tile)),
            min(MAX_GRID, n_img * groups))
    with _launching():
        conv_kernel(tile)[grid, (tile, tile)](d_x, d_w, d_b, d_out, groups, kh, kw, stride[0], stride[1],
                                              pad[0], pad[1], dilation[0], dilation[1])
    y = d_out[0] if squeeze else d_out
    return y.copy_to_host() if host_in else y
