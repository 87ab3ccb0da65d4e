"""Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3) for dilated 3x3 convolutions on the CPU.

A 3x3 convolution at rate d reads, for output pixel (u, v), the input pixels
``(u + d*i - pad, v + d*j - pad)``. The outputs whose row is ``a`` modulo d and column ``b``
modulo d form a *phase*: they read only input rows ``a - pad + d*k`` and columns
``b - pad + d*l``, so each of the d*d phases is an ordinary (rate 1) 3x3 convolution of an
input subsampled by d. Every phase is cut into tiles of m x m outputs, and each tile is computed
from its (m+2) x (m+2) inputs ``D`` with Winograd's F(m x m, 3x3) (Lavin & Gray, 2016, eq. (8))::

    Y = A^T [ (G g G^T) * (B^T D B) ] A        (* elementwise, (m+2) x (m+2))

with ``g`` the 3x3 filter. For all tiles and channels at once, the (m+2)^2 elementwise products
become as many matrix products (C_out x C_in) @ (C_in x tiles) (:mod:`atrous.gemm`): for m = 2,
16 products per 4 outputs instead of 36 multiplications (2.25x fewer); for m = 4, 36 per 16
(4x fewer), on tiles that overhang small phases more (:func:`choose_tile` counts both). The
transforms (``U = G g G^T`` once per set of weights, :func:`filter_transform`, kept by a
caller's :class:`atrous.WeightCache`; ``V = B^T D B`` per tile and channel; the output
``A^T M A``) are Numba kernels; the input transform writes ``V`` in the column panels that the
products read, and the filters are kept in row panels (:func:`packed_filters`). Tiles that
overhang a phase's last rows or columns compute outputs that are dropped. The transformed
tiles and products of a block of tile rows take at most about ``atrous.config.TILE_BYTES``,
and the buffers of a thread's last call are kept for its next one (their page faults cost
more than the transforms).

Accuracy: against the direct convolution, F(2x2, 3x3) differs by about 1e-6 of the output's
range and F(4x4, 3x3), whose transforms hold 4, 5, 1/6 and 1/24, by about 1e-5 (tests/atrous);
through a whole VGG (LargeFOV at 513x513) both give the scores of the direct strategies to
1.5e-6 of their range. ``atrous.config.WINOGRAD_TILES = (2,)`` keeps to F(2x2, 3x3). A NaN or
inf in the input reaches every output of the tiles that read it, also the ones whose window
does not cover it (the transforms mix a tile's inputs).

References
----------
A. Lavin, S. Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, Sec. 4
(F(2x2, 3x3), F(4x4, 3x3)). L.-C. Chen et al., TPAMI 2018, Sec. 3.1 (atrous convolution).
"""
import functools
import threading

import numpy as np
from numba import njit, prange

from atrous import config, gemm
from atrous.epilogue import relu_value

#: F(2, 3)'s transforms (Lavin & Gray, eq. (7)): filter G (4x3), input B^T (4x4), output A^T (2x4).
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


#: F(4, 3)'s transforms (Lavin & Gray, Sec. 4.2; interpolation points 0, 1, -1, 2, -2 and infinity):
#: filter G (6x3), input B^T (6x6), output A^T (4x6).
G43 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
BT43 = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
AT43 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float32)


def f23_reference(d, g):
    """F(2, 3) in 1-D with the matrices, for teaching: two outputs of a 3-tap filter from 4 inputs.

    ``y = A^T [(G g) * (B^T d)]``; equals ``[d0 g0 + d1 g1 + d2 g2, d1 g0 + d2 g1 + d3 g2]``
    with 4 multiplications instead of 6.
    """
    return AT @ ((G @ np.asarray(g, np.float32)) * (BT @ np.asarray(d, np.float32)))


@njit(parallel=True, cache=True)
def _filter_transform(weight, u):
    """u[4i+j, o, c] = (G g G^T)[i, j] for g = weight[o, c] (3x3).

    A filter's 16 values go to 16 planes (``C_out * C_in`` apart, a multiple of 4 KiB for DeepLab's
    layers): they are gathered per output channel in ``done`` (C_in, 16) and written plane by plane,
    a row of C_in values at a time, not 16 planes side by side, which share cache sets.
    """
    c_out, c_in = weight.shape[0], weight.shape[1]
    half = np.float32(0.5)
    for o in prange(c_out):
        gg = np.empty((4, 3), np.float32)  # G g
        done = np.empty((c_in, 16), np.float32)
        for c in range(c_in):
            for j in range(3):
                g0, g1, g2 = weight[o, c, 0, j], weight[o, c, 1, j], weight[o, c, 2, j]
                gg[0, j] = g0
                gg[1, j] = half * (g0 + g1 + g2)
                gg[2, j] = half * (g0 - g1 + g2)
                gg[3, j] = g2
            for i in range(4):
                a0, a1, a2 = gg[i, 0], gg[i, 1], gg[i, 2]
                done[c, 4 * i + 0] = a0
                done[c, 4 * i + 1] = half * (a0 + a1 + a2)
                done[c, 4 * i + 2] = half * (a0 - a1 + a2)
                done[c, 4 * i + 3] = a2
        for k in range(16):
            for c in range(c_in):
                u[k, o, c] = done[c, k]


@njit(inline="always")
def _input_column(plane, y0, y1, y2, y3, inside0, inside1, inside2, inside3, xx, width):
    """``B^T d`` for one column of a 4x4 input tile: ``(d0 - d2, d1 + d2, d2 - d1, d1 - d3)``.

    ``y0..y3`` are row indices clamped into the image and ``inside0..3`` say whether the rows
    really are in it. A value outside the image is read at the clamped position and replaced by
    zero (the padding) with a select, not a branch: with rate 12 a third of fc6's reads fall in
    the padding, in a pattern no branch predictor follows.
    """
    inside = 0 <= xx < width
    x = min(max(xx, 0), width - 1)
    zero = np.float32(0)
    d0 = plane[y0, x]
    d1 = plane[y1, x]
    d2 = plane[y2, x]
    d3 = plane[y3, x]
    d0 = d0 if inside and inside0 else zero
    d1 = d1 if inside and inside1 else zero
    d2 = d2 if inside and inside2 else zero
    d3 = d3 if inside and inside3 else zero
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(parallel=True, cache=True)
def _input_transform(x, n, c0, rows, cols, v):
    """(B^T D B)[r, s] of the 4x4 input tile D of tile row t, tile column q, for every channel c,
    into column panels (:func:`atrous.gemm.pack_cols`'s layout): v[4r+s, i // NR, c, i % NR] with
    tile i = t*TJ + q and NR = ``v.shape[3]``.

    ``rows`` (TI, 4) and ``cols`` (TJ, 4) hold the input rows and columns each tile reads
    (outside the image: zero padding). ``e_rs`` below is ``(B^T D)[r, s]``, in registers.
    """
    c_in, n_ti, n_tj, cols_per_panel = v.shape[2], rows.shape[0], cols.shape[0], v.shape[3]
    height, width = x.shape[2], x.shape[3]
    for task in prange(c_in * n_ti):
        c = task // n_ti
        t = task % n_ti
        plane = x[n, c0 + c]
        y0, y1, y2, y3 = rows[t, 0], rows[t, 1], rows[t, 2], rows[t, 3]
        in0, in1, in2, in3 = 0 <= y0 < height, 0 <= y1 < height, 0 <= y2 < height, 0 <= y3 < height
        y0, y1 = min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)
        y2, y3 = min(max(y2, 0), height - 1), min(max(y3, 0), height - 1)
        for q in range(n_tj):
            e00, e10, e20, e30 = _input_column(plane, y0, y1, y2, y3, in0, in1, in2, in3, cols[q, 0], width)
            e01, e11, e21, e31 = _input_column(plane, y0, y1, y2, y3, in0, in1, in2, in3, cols[q, 1], width)
            e02, e12, e22, e32 = _input_column(plane, y0, y1, y2, y3, in0, in1, in2, in3, cols[q, 2], width)
            e03, e13, e23, e33 = _input_column(plane, y0, y1, y2, y3, in0, in1, in2, in3, cols[q, 3], width)
            panel, lane = divmod(t * n_tj + q, cols_per_panel)  # the tile's panel and column in it
            tile = v[:, panel, c, lane]  # its 16 values, one per plane
            # row r of (B^T D) B: (e_r0 - e_r2, e_r1 + e_r2, e_r2 - e_r1, e_r1 - e_r3)
            tile[0], tile[1], tile[2], tile[3] = e00 - e02, e01 + e02, e02 - e01, e01 - e03
            tile[4], tile[5], tile[6], tile[7] = e10 - e12, e11 + e12, e12 - e11, e11 - e13
            tile[8], tile[9], tile[10], tile[11] = e20 - e22, e21 + e22, e22 - e21, e21 - e23
            tile[12], tile[13], tile[14], tile[15] = e30 - e32, e31 + e32, e32 - e31, e31 - e33


@njit(parallel=True, cache=True)
def _output_transform(m, bias, out, n, o0, rows, cols, slope, relu):
    """out[n, o0 + o, rows[t, r], cols[q, s]] = (A^T M A)[r, s] + bias for the rows and columns
    inside the output (``rows`` (TI, 2), ``cols`` (TJ, 2)); then Caffe's ReLU when ``relu``."""
    c_out, n_ti, n_tj = m.shape[1], rows.shape[0], cols.shape[0]
    h_out, w_out = out.shape[2], out.shape[3]
    for task in prange(c_out * n_ti):
        o = task // n_ti
        t = task % n_ti
        e = np.empty((2, 4), np.float32)
        b = bias[o0 + o]
        for q in range(n_tj):
            col = t * n_tj + q
            for s in range(4):  # e = A^T m
                e[0, s] = m[s, o, col] + m[4 + s, o, col] + m[8 + s, o, col]
                e[1, s] = m[4 + s, o, col] - m[8 + s, o, col] - m[12 + s, o, col]
            for r in range(2):
                y = rows[t, r]
                if y >= h_out:
                    continue
                x0, x1 = cols[q, 0], cols[q, 1]
                v0, v1 = e[r, 0] + e[r, 1] + e[r, 2] + b, e[r, 1] - e[r, 2] - e[r, 3] + b
                if relu:
                    v0, v1 = relu_value(v0, slope), relu_value(v1, slope)
                if x0 < w_out:
                    out[n, o0 + o, y, x0] = v0
                if x1 < w_out:
                    out[n, o0 + o, y, x1] = v1


# ------------------------------------------------------------------ F(4x4, 3x3)

@njit(inline="always")
def _bt43(d0, d1, d2, d3, d4, d5):
    """``B^T d`` of F(4, 3) for one column or row of six values (the rows of ``BT43``)."""
    four, five, two = np.float32(4), np.float32(5), np.float32(2)
    return (four * d0 - five * d2 + d4,
            d3 + d4 - four * (d1 + d2),
            four * (d1 - d2) + d4 - d3,
            two * (d3 - d1) + d4 - d2,
            two * (d1 - d3) + d4 - d2,
            four * d1 - five * d3 + d5)


@njit(inline="always")
def _at43(m0, m1, m2, m3, m4, m5):
    """``A^T m`` of F(4, 3) for six values (the rows of ``AT43``)."""
    two, four, eight = np.float32(2), np.float32(4), np.float32(8)
    plus, minus = m1 + m2, m1 - m2
    return (m0 + plus + m3 + m4,
            minus + two * (m3 - m4),
            plus + four * (m3 + m4),
            minus + eight * (m3 - m4) + m5)


@njit(inline="always")
def _g43(g0, g1, g2):
    """``G g`` of F(4, 3) for a 3-tap filter (the rows of ``G43``)."""
    sixth, twelfth, quarter = np.float32(1 / 6), np.float32(1 / 12), np.float32(1 / 4)
    return (quarter * g0,
            -sixth * (g0 + g1 + g2),
            -sixth * (g0 - g1 + g2),
            quarter * sixth * g0 + twelfth * g1 + sixth * g2,
            quarter * sixth * g0 - twelfth * g1 + sixth * g2,
            g2)


@njit(parallel=True, cache=True)
def _filter_transform43(weight, u):
    """u[6i+j, o, c] = (G g G^T)[i, j] for g = weight[o, c] (3x3), F(4, 3); written plane by plane
    as in :func:`_filter_transform`."""
    c_out, c_in = weight.shape[0], weight.shape[1]
    for o in prange(c_out):
        gg = np.empty((6, 3), np.float32)  # G g
        done = np.empty((c_in, 36), np.float32)
        for c in range(c_in):
            for j in range(3):
                col = _g43(weight[o, c, 0, j], weight[o, c, 1, j], weight[o, c, 2, j])
                for i in range(6):
                    gg[i, j] = col[i]
            for i in range(6):
                row = _g43(gg[i, 0], gg[i, 1], gg[i, 2])
                for j in range(6):
                    done[c, 6 * i + j] = row[j]
        for k in range(36):
            for c in range(c_in):
                u[k, o, c] = done[c, k]


@njit(parallel=True, cache=True)
def _input_transform43(x, n, c0, rows, cols, v):
    """(B^T D B)[r, s] of the 6x6 input tile D of tile row t, tile column q into v[6r+s, i // NR, c,
    i % NR] (i = t*TJ + q, NR = ``v.shape[3]``), as :func:`_input_transform` does for F(2, 3).

    Values outside the image are the zero padding, read by select as in :func:`_input_column`.
    """
    c_in, n_ti, n_tj, cols_per_panel = v.shape[2], rows.shape[0], cols.shape[0], v.shape[3]
    height, width = x.shape[2], x.shape[3]
    zero = np.float32(0)
    for task in prange(c_in * n_ti):
        c = task // n_ti
        t = task % n_ti
        plane = x[n, c0 + c]
        ys = np.empty(6, np.int64)
        rows_in = np.empty(6, np.bool_)
        e = np.empty((6, 6), np.float32)  # B^T D
        for r in range(6):
            rows_in[r] = 0 <= rows[t, r] < height
            ys[r] = min(max(rows[t, r], 0), height - 1)
        for q in range(n_tj):
            for s in range(6):
                xx = cols[q, s]
                inside = 0 <= xx < width
                xc = min(max(xx, 0), width - 1)
                d = (plane[ys[0], xc], plane[ys[1], xc], plane[ys[2], xc],
                     plane[ys[3], xc], plane[ys[4], xc], plane[ys[5], xc])
                col = _bt43(d[0] if inside and rows_in[0] else zero, d[1] if inside and rows_in[1] else zero,
                            d[2] if inside and rows_in[2] else zero, d[3] if inside and rows_in[3] else zero,
                            d[4] if inside and rows_in[4] else zero, d[5] if inside and rows_in[5] else zero)
                for r in range(6):
                    e[r, s] = col[r]
            panel, lane = divmod(t * n_tj + q, cols_per_panel)
            tile = v[:, panel, c, lane]  # its 36 values, one per plane
            for r in range(6):
                row = _bt43(e[r, 0], e[r, 1], e[r, 2], e[r, 3], e[r, 4], e[r, 5])
                for j in range(6):
                    tile[6 * r + j] = row[j]


@njit(parallel=True, cache=True)
def _output_transform43(m, bias, out, n, o0, rows, cols, slope, relu):
    """out[n, o0 + o, rows[t, r], cols[q, s]] = (A^T M A)[r, s] + bias for the rows and columns
    inside the output (``rows`` (TI, 4) and ``cols`` (TJ, 4)), F(4, 3); then Caffe's ReLU
    when ``relu``."""
    c_out, n_ti, n_tj = m.shape[1], rows.shape[0], cols.shape[0]
    h_out, w_out = out.shape[2], out.shape[3]
    for task in prange(c_out * n_ti):
        o = task // n_ti
        t = task % n_ti
        e = np.empty((4, 6), np.float32)  # A^T M
        b = bias[o0 + o]
        for q in range(n_tj):
            tile = t * n_tj + q
            for s in range(6):
                col = _at43(m[s, o, tile], m[6 + s, o, tile], m[12 + s, o, tile],
                            m[18 + s, o, tile], m[24 + s, o, tile], m[30 + s, o, tile])
                for r in range(4):
                    e[r, s] = col[r]
            for r in range(4):
                y = rows[t, r]
                if y >= h_out:
                    continue
                row = _at43(e[r, 0], e[r, 1], e[r, 2], e[r, 3], e[r, 4], e[r, 5])
                for j in range(4):
                    xx = cols[q, j]
                    if xx < w_out:
                        v = row[j] + b
                        out[n, o0 + o, y, xx] = relu_value(v, slope) if relu else v


def filter_transform(weight, m=2):
    """Winograd's transformed filters ``U = G g G^T`` of every 3x3 filter g.

    Parameters
    ----------
    weight : ndarray of shape (C_out, C_in // groups, 3, 3), float32, C-contiguous

    m : {2, 4}
        The output tile: F(2x2, 3x3) or F(4x4, 3x3).

    Returns
    -------
    u : ndarray of shape ((m+2)^2, C_out, C_in // groups), float32
        ``u[(m+2) i + j, o, c] = (G weight[o, c] G^T)[i, j]``.
    """
    u = np.empty(((m + 2) ** 2,) + tuple(weight.shape[:2]), np.float32)  # ((m+2)^2, C_out, C_in/g)
    (_filter_transform if m == 2 else _filter_transform43)(weight, u)
    return u


def f43_reference(d, g):
    """F(4, 3) in 1-D with the matrices: four outputs of a 3-tap filter from 6 inputs, 6 multiplications."""
    return AT43 @ ((G43 @ np.asarray(g, np.float32)) * (BT43 @ np.asarray(d, np.float32)))


@functools.lru_cache(maxsize=256)
def tiles(size_out, pad, dilation, m=2):
    """The tiles along one axis: input positions ``(T, m+2)`` and output positions ``(T, m)``, int64,
    read-only (kept for the next call with the same arguments: a net asks for the same few).

    Phase a (0 <= a < min(d, size_out)) has outputs a, a + d, a + 2d, ...; its k-th tile covers
    outputs ``a + d*(m k + (0, .., m-1))`` and reads inputs ``a - pad + d*(m k + (0, .., m+1))``.
    """
    d = dilation
    ins, outs = [], []
    for a in range(min(d, size_out)):
        count = (size_out - a + d - 1) // d  # outputs of this phase
        k = np.arange((count + m - 1) // m)[:, None]
        ins.append(a - pad + d * (m * k + np.arange(m + 2)[None]))
        outs.append(a + d * (m * k + np.arange(m)[None]))
    ins, outs = np.concatenate(ins).astype(np.int64), np.concatenate(outs).astype(np.int64)
    ins.flags.writeable = outs.flags.writeable = False
    return ins, outs


def products(out_size, dilation, m):
    """Elementwise products per filter and channel pair of F(m x m, 3x3) over all tiles of all phases."""
    (h, w), (dh, dw) = out_size, dilation
    return tiles(h, 0, dh, m)[0].shape[0] * tiles(w, 0, dw, m)[0].shape[0] * (m + 2) ** 2


def choose_tile(out_size, dilation):
    """2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3), among ``atrous.config.WINOGRAD_TILES``): the one with fewer
    products over the tiles the phases need (F(2, 3) on a tie: its arithmetic is more exact).

    Large phases favour 4 (VGG's conv2 at 257x257: 1.75x fewer products than F(2, 3)); the
    small phases of a large rate do not (fc6 at 65x65, rate 12: six outputs per phase, as many
    products either way).
    """
    sizes = sorted(config.WINOGRAD_TILES)
    return min(sizes, key=lambda m: (products(out_size, dilation, m), m))


_SCRATCH = threading.local()  # per calling thread: the last call's buffers, reused


_PLANE_PAD = 16  # floats (one cache line) between the planes of the transformed tiles


def _scratch(name, shape):
    """A float32 array of ``shape`` (planes, ...) kept between calls of this thread.

    Fresh buffers of tens of megabytes cost their page faults at every call (measured: about 30 ms
    of fc6's 65x65 Winograd); a kept one is already mapped. Its 16 or 36 planes lie one plane's
    size + 16 floats apart: the transforms write (and read) the planes side by side, and planes a
    multiple of 4 KiB apart (fc6: 512 x 1296 x 4 bytes; every plane of column panels of 32
    floats) fall in the same cache sets and evict each other (fc6's input transform took 16.4 ms,
    4.2 ms with the planes shifted, its output 9.7 -> 5.8 ms).
    """
    planes, inner = shape[0], shape[1:]
    size = int(np.prod(inner))
    plane = size + _PLANE_PAD
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < planes * plane:
        buffer = np.empty(planes * plane, np.float32)
        setattr(_SCRATCH, name, buffer)
    return buffer[:planes * plane].reshape(planes, plane)[:, :size].reshape(shape)  # strided planes


def packed_filters(weight, m, groups):
    """Winograd's filters of every group packed in row panels for :func:`atrous.gemm.batched_products_cpu`.

    Returns
    -------
    a : ndarray of shape (groups, (m+2)^2, ceil(C_out/g / PANEL_ROWS), C_in/g, PANEL_ROWS), float32
        ``a[g]`` is :func:`atrous.gemm.pack_rows` of group g's output channels of
        :func:`filter_transform`. A net keeps it in its :class:`atrous.WeightCache`.
    """
    u = filter_transform(weight, m)  # ((m+2)^2, C_out, C_in/g)
    c_out_g = weight.shape[0] // groups
    return np.stack([gemm.pack_rows(u[:, g * c_out_g:(g + 1) * c_out_g]) for g in range(groups)])


def winograd_coverage(out_size, pad, dilation):
    """Outputs computed by the tiles over outputs needed: 4 x tiles / (H_out x W_out), >= 1."""
    h, w = out_size
    count = tiles(h, pad[0], dilation[0])[0].shape[0] * tiles(w, pad[1], dilation[1])[0].shape[0]
    return 4 * count / (h * w)


def conv_winograd(x, weight, bias, out, pad, dilation, groups, filters=None, m=2, relu_slope=None):
    """A dilated 3x3, stride-1 convolution by F(m x m, 3x3) on every phase (module docstring).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32, C-contiguous
    weight : ndarray of shape (C_out, C_in // groups, 3, 3), float32, C-contiguous
    bias : ndarray of shape (C_out,), float32
    out : ndarray of shape (N, C_out, H_out, W_out), float32
        Written completely.
    pad, dilation : tuple of two ints
    groups : int
    filters : ndarray, optional
        ``packed_filters(weight, m, groups)``, if the caller keeps it; computed here otherwise.
    m : {2, 4}
        Outputs per tile side: F(2x2, 3x3) or F(4x4, 3x3) (:func:`choose_tile`).
    relu_slope : float, optional
        Caffe's ReLU with this negative slope, applied as the outputs are written
        (:mod:`atrous.epilogue`); None: none.
    """
    n_img = x.shape[0]
    relu, slope = relu_slope is not None, np.float32(relu_slope or 0)
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    h_out, w_out = out.shape[2], out.shape[3]
    rows_in, rows_out = tiles(h_out, pad[0], dilation[0], m)
    cols_in, cols_out = tiles(w_out, pad[1], dilation[1], m)
    if filters is None:
        filters = packed_filters(weight, m, groups)  # (groups, (m+2)^2, panels, C_in/g, PANEL_ROWS)
    planes = (m + 2) ** 2
    input_transform, output_transform = (_input_transform, _output_transform) if m == 2 else \
        (_input_transform43, _output_transform43)
    n_tj = cols_in.shape[0]
    rows_padded = filters.shape[2] * gemm.PANEL_ROWS
    # Tile rows per block: the transformed inputs and products of a block fit in TILE_BYTES.
    per_row = planes * 4 * n_tj * (c_in_g + rows_padded)
    block = max(1, min(rows_in.shape[0], config.TILE_BYTES // per_row))
    col_panels = gemm.panels(block * n_tj, gemm.PANEL_COLS)
    v = _scratch("v", (planes, col_panels, c_in_g, gemm.PANEL_COLS))  # column panels of (planes, C_in/g, tiles)
    prod = _scratch("m", (planes, rows_padded, col_panels * gemm.PANEL_COLS))  # (planes, C_out/g padded, tiles)
    for n in range(n_img):
        for g in range(groups):
            for t0 in range(0, rows_in.shape[0], block):
                t1 = min(t0 + block, rows_in.shape[0])
                count = (t1 - t0) * n_tj
                used = gemm.panels(count, gemm.PANEL_COLS)
                v_blk = v[:, :used]  # the last panel's columns past the tiles: stale values, products never read
                input_transform(x, n, g * c_in_g, rows_in[t0:t1], cols_in, v_blk)
                gemm.batched_products_cpu(filters[g], v_blk, prod)  # (m+2)^2 products
                output_transform(prod[:, :c_out_g], bias, out, n, g * c_out_g, rows_out[t0:t1], cols_out, slope, relu)
