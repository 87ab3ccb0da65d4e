"""Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3) for dilated 3x3 convolutions on the CPU.

A 3x3 convolution at rate d reads, for output pixel (u, v), the input pixels
``(u + d*i - pad, v + d*j - pad)``. The outputs whose row is ``a`` modulo d and column ``b``
modulo d form a *phase*: they read only input rows ``a - pad + d*k`` and columns
``b - pad + d*l``, so each of the d*d phases is an ordinary (rate 1) 3x3 convolution of an
input subsampled by d. Every phase is cut into tiles of m x m outputs, and each tile is computed
from its (m+2) x (m+2) inputs ``D`` with Winograd's F(m x m, 3x3) (Lavin & Gray, 2016, eq. (8))::

    Y = A^T [ (G g G^T) * (B^T D B) ] A        (* elementwise, (m+2) x (m+2))

with ``g`` the 3x3 filter. For all tiles and channels at once, the (m+2)^2 elementwise products
become as many matrix products (C_out x C_in) @ (C_in x tiles), which go to BLAS: for m = 2,
16 products per 4 outputs instead of 36 multiplications (2.25x fewer); for m = 4, 36 per 16
(4x fewer), on tiles that overhang small phases more (:func:`choose_tile` counts both). The
transforms (``U = G g G^T`` once per set of weights, :func:`filter_transform`, kept by a
caller's :class:`atrous.WeightCache`; ``V = B^T D B`` per tile and channel; the output
``A^T M A``) are Numba kernels. Tiles that overhang a phase's last rows or columns compute
outputs that are dropped. The transformed tiles and products of a block of tile rows take at
most about ``atrous.config.TILE_BYTES``, and the buffers of a thread's last call are kept for
its next one (their page faults cost more than the transforms).

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
import threading

import numpy as np
from numba import njit, prange

from atrous import config
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
    """v[4r+s, c, t*TJ + q] = (B^T D B)[r, s] for the 4x4 input tile D of tile row t, tile column q.

    ``rows`` (TI, 4) and ``cols`` (TJ, 4) hold the input rows and columns each tile reads
    (outside the image: zero padding). ``e_rs`` below is ``(B^T D)[r, s]``, in registers.
    """
    c_in, n_ti, n_tj = v.shape[1], rows.shape[0], cols.shape[0]
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
            col = t * n_tj + q  # row r of (B^T D) B: (e_r0 - e_r2, e_r1 + e_r2, e_r2 - e_r1, e_r1 - e_r3)
            v[0, c, col], v[1, c, col], v[2, c, col], v[3, c, col] = e00 - e02, e01 + e02, e02 - e01, e01 - e03
            v[4, c, col], v[5, c, col], v[6, c, col], v[7, c, col] = e10 - e12, e11 + e12, e12 - e11, e11 - e13
            v[8, c, col], v[9, c, col], v[10, c, col], v[11, c, col] = e20 - e22, e21 + e22, e22 - e21, e21 - e23
            v[12, c, col], v[13, c, col], v[14, c, col], v[15, c, col] = e30 - e32, e31 + e32, e32 - e31, e31 - e33


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
    """v[6r+s, c, t*TJ + q] = (B^T D B)[r, s] for the 6x6 input tile D of tile row t, tile column q.

    Values outside the image are the zero padding, read by select as in :func:`_input_column`.
    """
    c_in, n_ti, n_tj = v.shape[1], rows.shape[0], cols.shape[0]
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
            tile = t * n_tj + q
            for r in range(6):
                row = _bt43(e[r, 0], e[r, 1], e[r, 2], e[r, 3], e[r, 4], e[r, 5])
                for j in range(6):
                    v[6 * r + j, c, tile] = row[j]


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


def tiles(size_out, pad, dilation, m=2):
    """The tiles along one axis: input positions ``(T, m+2)`` and output positions ``(T, m)``, int64.

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
    return np.concatenate(ins).astype(np.int64), np.concatenate(outs).astype(np.int64)


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


_PLANE_PAD = 16  # floats (one cache line) between the 16 planes of the transformed tiles


def _scratch(name, shape):
    """A float32 array of ``shape`` (planes, C, T) kept between calls of this thread.

    Fresh buffers of tens of megabytes cost their page faults at every call (measured: about 30 ms
    of fc6's 65x65 Winograd); a kept one is already mapped. Its 16 planes lie ``C*T + 16`` floats
    apart: the transforms write (and read) the 16 planes side by side, and planes a multiple of
    4 KiB apart (fc6: 512 x 1296 x 4 bytes) fall in the same cache sets and evict each other
    (fc6's input transform took 16.4 ms, 4.2 ms with the planes shifted, its output 9.7 -> 5.8 ms).
    """
    planes, rows, cols = shape
    plane = rows * cols + _PLANE_PAD
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < planes * plane:
        buffer = np.empty(planes * plane, np.float32)
        setattr(_SCRATCH, name, buffer)
    return buffer[:planes * plane].reshape(planes, plane)[:, :rows * cols].reshape(shape)  # strided planes


def winograd_coverage(out_size, pad, dilation):
    """Outputs computed by the tiles over outputs needed: 4 x tiles / (H_out x W_out), >= 1."""
    h, w = out_size
    count = tiles(h, pad[0], dilation[0])[0].shape[0] * tiles(w, pad[1], dilation[1])[0].shape[0]
    return 4 * count / (h * w)


def conv_winograd(x, weight, bias, out, pad, dilation, groups, u=None, m=2, relu_slope=None):
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
    u : ndarray of shape ((m+2)^2, C_out, C_in // groups), float32, optional
        ``filter_transform(weight, m)``, if the caller keeps it; computed here otherwise.
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
    if u is None:
        u = filter_transform(weight, m)  # ((m+2)^2, C_out, C_in/g): G g G^T of every filter
    planes = (m + 2) ** 2
    input_transform, output_transform = (_input_transform, _output_transform) if m == 2 else \
        (_input_transform43, _output_transform43)
    n_tj = cols_in.shape[0]
    # Tile rows per block: the transformed inputs and products of a block fit in TILE_BYTES.
    per_row = planes * 4 * n_tj * (c_in_g + c_out_g)
    block = max(1, min(rows_in.shape[0], config.TILE_BYTES // per_row))
    v = _scratch("v", (planes, c_in_g, block * n_tj))  # (planes, C_in/g, tiles)
    prod = _scratch("m", (planes, c_out_g, block * n_tj))  # (planes, C_out/g, tiles)
    for n in range(n_img):
        for g in range(groups):
            for t0 in range(0, rows_in.shape[0], block):
                t1 = min(t0 + block, rows_in.shape[0])
                count = (t1 - t0) * n_tj
                v_blk, m_blk = v[:, :, :count], prod[:, :, :count]
                input_transform(x, n, g * c_in_g, rows_in[t0:t1], cols_in, v_blk)
                np.matmul(u[:, g * c_out_g:(g + 1) * c_out_g], v_blk, out=m_blk)  # (m+2)^2 BLAS products
                output_transform(m_blk, bias, out, n, g * c_out_g, rows_out[t0:t1], cols_out, slope, relu)
