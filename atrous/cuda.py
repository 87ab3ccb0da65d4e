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

That first kernel (:func:`conv_kernel`) is kept as ``config.CUDA_CONV_KERNEL =
"classic"``. The default is :func:`gemm_kernel`, the same product organised as a classic
fast SGEMM: the reduction axis is ordered tap-major, k = (i*kw + j) * C_in_g + c, with the
weights re-laid out once per call as (groups, kh*kw*C_in_g, C_out_g), so that one step of
BK stays inside one tap (i, j): the dilated offset (dil_h*i, dil_w*j) is constant per
step and a thread's pixels are decoded once per tile, with no integer division in the
gather. Shared-memory tiles are double-buffered (global loads of step s+1 are in flight
while step s is multiplied; one ``syncthreads`` per step), the weight tile is stored
k-major (transposed) so both operands are read as contiguous rows, and layers with few
output tiles split the reduction over blocks (:func:`gemm_shape`). Its store (or, with a
split reduction, the pass that sums the parts) also adds a residual and applies Caffe's ReLU
(:mod:`atrous.epilogue`), so that a shortcut sum and a ReLU cost no pass of their own.
Registers decide how many blocks share a multiprocessor, so the kernel keeps few integers
live through the reduction: one grid-stride loop over all tiles (not one per grid axis) and
one offset per column of a thread's loads (``tools/ptx_check.py`` counts 126-168 registers
for the shipped tiles on sm_90). A thread's outputs lie in runs of four adjacent channels and
pixels, so that its operands come from shared memory in 16-byte loads: 4 per step of k for
an 8 x 8 thread, not 16.

With ``config.CUDA_WINOGRAD``, 3x3 stride-1 layers take Winograd's F(2x2, 3x3) on the dilated
phases instead (:func:`winograd_applies`; :mod:`atrous.winograd` derives it): an input
transform kernel, the 16 products as one launch of the GEMM kernel in 16 groups, and an output
transform kernel that does the epilogue.

This module imports ``numba.cuda``; :func:`atrous.conv2d` imports it only when
the ``"cuda"`` backend is chosen.
"""
import functools
import math

import numpy as np
from numba import cuda, float32, int64, uint64

from atrous import config
from atrous.backend import is_device_array, shared_alignment


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


def gemm_shape(channels, pixels, depth, batches=1):
    """The GEMM kernel's tile and reduction split for one convolution.

    Parameters
    ----------
    channels : int
        Output channels per group (the GEMM's M).
    pixels : int
        Output pixels per image, H_out * W_out (N).
    depth : int
        Reduction length per group, C_in_g * kh * kw (K).
    batches : int
        Images times groups: independent GEMMs in the grid.

    Returns
    -------
    tile : tuple of five ints
        (BM, BN, BK, TM, TN): the first row of :data:`atrous.config.CUDA_GEMM_TILES` whose
        minimum ``channels`` reaches.
    splits : int
        Parts the reduction is cut into, >= 1: as many as bring the grid to
        ``CUDA_GEMM_SPLIT_BLOCKS`` blocks, within ``CUDA_GEMM_MAX_SPLITS`` and keeping
        each part at least ``CUDA_GEMM_MIN_SPLIT_STEPS`` steps of BK long.
    """
    tile = config.CUDA_GEMM_TILES[-1][1]
    for minimum, shape in config.CUDA_GEMM_TILES:
        if channels >= minimum:
            tile = shape
            break
    bm, bn, bk = tile[:3]
    blocks = math.ceil(channels / bm) * math.ceil(pixels / bn) * batches
    steps = math.ceil(depth / bk)  # at least; a per-tap tail of C_in_g % BK adds steps
    splits = min(config.CUDA_GEMM_MAX_SPLITS, config.CUDA_GEMM_SPLIT_BLOCKS // max(blocks, 1),
                 steps // max(config.CUDA_GEMM_MIN_SPLIT_STEPS, 1))
    return tuple(tile), max(1, splits)


@cuda.jit(device=True)
def relu_value(v, slope):
    """Caffe's ReLU of one float32 value, ``max(v, 0) + slope * min(v, 0)``, with ``max`` and
    ``min`` as C++'s ``std::max``/``std::min``, so that a NaN stays NaN."""
    zero = float32(0)
    return (zero if v < zero else v) + slope * (zero if zero < v else v)


@cuda.jit(device=True)
def epilogue_value(v, residual, t, add_residual, relu, slope):
    """A stored sum ``v`` (bias included) of flat output index ``t``: ``+ residual[t]``, then
    the ReLU, each when its flag says so; the arithmetic of the layers apart
    (:mod:`atrous.epilogue`)."""
    if add_residual:
        v = v + residual[t]
    if relu:
        v = relu_value(v, slope)
    return v


@cuda.jit(device=True)
def _load_column(src, off, step, ok, rows_left, q, slots, rows, dst):
    """One column of a thread's loads in a step of :func:`gemm_kernel`: for r = q, q + slots, ...
    (the loads in column slot q), ``dst[r] = src[off]`` with ``off`` advancing by ``step`` per
    load, or 0 where not ``ok`` or where the load's row, ``(r // slots) * rows`` past the first,
    is not below ``rows_left``."""
    for r in range(q, dst.shape[0], slots):
        value = float32(0.0)
        if ok and (r // slots) * rows < rows_left:
            value = src[off]
        dst[r] = value
        off += step


@functools.lru_cache(maxsize=None)
def gemm_kernel(bm, bn, bk, tm, tn):
    """Build (once per tile) the double-buffered implicit-GEMM convolution kernel.

    A block of ``(bm // tm) * (bn // tn)`` threads (1-D) computes BM output channels x
    BN pixels of one image and group; thread (ty, tx) = divmod(tid, bn // tn) holds the
    TM x TN outputs of channels ``va * ty + (bm // tm) * va * (a // va) + a % va`` and pixels
    ``vb * tx + (bn // tn) * vb * (b // vb) + b % vb``, with runs of va, vb = 4 adjacent ones
    where TM, TN allow (else 2 or 1): each run is read from shared memory as one 16-byte load,
    and a warp's runs lie side by side, which keeps the banks free of conflicts.

    The kernel's arguments, all arrays flat (1-D, C order) float32:

    * ``x`` (N*C_in*H*W,): the input, (N, C_in, H, W);
    * ``wt`` (groups*kh*kw*C_in_g*C_out_g,): the weights re-laid out by
      :func:`relayout_weights` as (groups, kh*kw*C_in_g, C_out_g), k tap-major;
    * ``bias`` (C_out,);
    * ``out`` (N*C_out*H_out*W_out,): the result, (N, C_out, H_out, W_out), written
      with the bias when ``splits`` is 1;
    * ``part`` (splits*N*C_out*H_out*W_out,): partial sums without bias, one slab per
      part of the reduction, when ``splits`` > 1 (then ``out`` is not written);
    * ``residual`` (N*C_out*H_out*W_out,): added to ``out`` when ``add_residual``;

    then the ints ``n_img, c_in, h_in, w_in, c_out, h_out, w_out, groups, kh, kw,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, splits, add_residual, relu`` and the
    float32 ``slope`` of the ReLU (:func:`epilogue_value`; ``relu`` 0: none). Grid: 1-D, looping
    grid-stride over the tiles, ``N * groups * splits * ceil(C_out_g / BM) * ceil(H_out W_out / BN)``
    of them, pixel tiles fastest.

    The reduction runs tap by tap, ``ceil(C_in_g / BK)`` steps per tap, the last one of
    a tap masked when BK does not divide C_in_g (the general path: same code, the
    masked rows cost their share of a step).

    Each step, thread ``tid`` copies elements ``tid + r * threads`` of the step's BK x BM
    weight tile and BK x BN input tile to shared memory. The thread count must be a
    multiple or a divisor of BM and of BN, so that these elements lie in one column of
    the tile (or a few, when the tile is wider than the block) at rows a constant apart:
    a thread keeps one offset per column from step to step and walks its rows by adding
    a stride, which keeps its registers for the accumulators (``tools/ptx_check.py``
    counts them: 168 for the 128 x 128 x 16 tile on sm_90, no spills).
    """
    tx_count, ty_count = bn // tn, bm // tm  # threads along pixels and along channels
    threads = tx_count * ty_count
    if bm % tm or bn % tn or (bk * bm) % threads or (bk * bn) % threads:
        raise ValueError(f"tile {(bm, bn, bk, tm, tn)}: tm must divide bm, tn bn, and the "
                         f"{threads} threads bk*bm and bk*bn")
    if (threads % bm and bm % threads) or (threads % bn and bn % threads):
        raise ValueError(f"tile {(bm, bn, bk, tm, tn)}: its {threads} threads must be a multiple or a "
                         f"divisor of bm and of bn")
    a_loads = bk * bm // threads  # weight values each thread copies to shared memory per step
    b_loads = bk * bn // threads  # input values each thread gathers per step
    # Load r of a thread is element e = tid + r * threads of the step's [k, channel] (or [k, pixel])
    # tile. With threads a multiple or a divisor of the tile's width, that is column slot r % slots of
    # the thread's own columns and row k0 + (r // slots) * rows: one or a few columns per thread,
    # whose offsets are all it keeps from step to step.
    a_slots, a_rows = max(1, bm // threads), max(1, threads // bm)
    b_slots, b_rows = max(1, bn // threads), max(1, threads // bn)
    a_size, tiles_size = 2 * bk * bm, 2 * bk * (bm + bn)  # two buffers of each operand
    # A thread's TM channels and TN pixels lie in runs of va and vb adjacent ones, the runs
    # ty_count * va and tx_count * vb apart (see above); the compiler merges a run's four loads
    # into one when it knows the shared array 16-byte aligned.
    va = 4 if tm % 4 == 0 else 2 if tm % 2 == 0 else 1
    vb = 4 if tn % 4 == 0 else 2 if tn % 2 == 0 else 1
    a_gap, b_gap = ty_count * va, tx_count * vb  # from one run of a thread to its next
    alignment = shared_alignment(16)
    far = -(1 << 30)  # a row offset that fails the bounds test: marks a pixel past the image

    @cuda.jit
    def kernel(x, wt, bias, out, part, residual, n_img, c_in, h_in, w_in, c_out, h_out, w_out, groups, kh,
               kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, splits, add_residual, relu, slope):
        # flat [buffer, k, channel] and [buffer, k, pixel] (the weights k-major, i.e. transposed):
        # flat, a read is one running offset plus a constant, which the compiler folds into the load
        # one allocation for both: the simulator's shared arrays are created by the first thread to ask,
        # without a lock, so each allocation is a chance for a thread to get a private copy
        tiles = cuda.shared.array(tiles_size, float32, alignment=alignment)
        acc = cuda.local.array((tm, tn), float32)  # all indices constant after unrolling: registers
        a_frag = cuda.local.array(tm, float32)
        b_frag = cuda.local.array(tn, float32)
        a_next = cuda.local.array(a_loads, float32)  # step s+1's values, in flight during step s
        b_next = cuda.local.array(b_loads, float32)
        a_col = cuda.local.array(a_slots, int64)  # per tile: wt offset of this thread's channel, or -1
        b_y0 = cuda.local.array(b_slots, int64)  # per tile: top-left input row/column of the pixel's window
        b_x0 = cuda.local.array(b_slots, int64)
        tid = cuda.threadIdx.x
        ty = tid // tx_count
        tx = tid - ty * tx_count
        a_k0 = tid // bm  # the k row of load 0 (0 when the thread has several columns)
        b_k0 = tid // bn
        c_in_g = c_in // groups
        c_out_g = c_out // groups
        hw_in = h_in * w_in
        n_pix = h_out * w_out
        depth = kh * kw * c_in_g
        a_step = uint64(a_rows * c_out_g)  # wt offset between load groups
        b_step = uint64(b_rows * hw_in)  # x offset between load groups
        c_steps = (c_in_g + bk - 1) // bk  # steps per tap
        steps = kh * kw * c_steps
        per_split = (steps + splits - 1) // splits
        tiles_o = (c_out_g + bm - 1) // bm
        tiles_p = (n_pix + bn - 1) // bn
        # One grid-stride loop over every tile (pixels fastest, then channels, then image, group
        # and part: the order the blocks run in): nested loops per grid axis kept their bounds and
        # the outer tiles' values live through the reduction, about 40 registers more per thread.
        n_tiles = n_img * groups * splits * tiles_o * tiles_p
        for tile in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
            zo = tile // tiles_p
            tp = tile - zo * tiles_p
            z = zo // tiles_o
            to = zo - z * tiles_o
            ng = z // splits
            s = z - ng * splits
            n = ng // groups
            g = ng - n * groups
            step_lo = s * per_split
            n_steps = min(steps, step_lo + per_split) - step_lo
            # the first step's tap (i, j) and channel offset, advanced without division below
            tap0 = step_lo // c_steps
            c0_first = (step_lo - tap0 * c_steps) * bk
            i_first = tap0 // kw
            j_first = tap0 - i_first * kw
            x_base = (n * c_in + g * c_in_g + b_k0) * hw_in
            o0 = to * bm
            for q in range(a_slots):
                o = o0 + tid - a_k0 * bm + q * threads
                a_col[q] = (g * depth + a_k0) * c_out_g + o if o < c_out_g else -1
            p0 = tp * bn
            for q in range(b_slots):
                p = p0 + tid - b_k0 * bn + q * threads
                u = p // w_out
                b_y0[q] = stride_h * u - pad_h if p < n_pix else far
                b_x0[q] = stride_w * (p - u * w_out) - pad_w
            for a in range(tm):
                for b in range(tn):
                    acc[a, b] = float32(0.0)
            i = i_first
            j = j_first
            c0 = c0_first
            # t loads step t into registers, multiplies step t-1 from shared memory, then stores
            # step t into buffer t % 2. That buffer was last read at step t-2, and every thread
            # has passed the barrier that ended step t-1, so one barrier per step suffices.
            for t in range(n_steps + 1):
                if t < n_steps:
                    dy = dil_h * i
                    dx = dil_w * j
                    a_left = c_in_g - c0 - a_k0  # rows of this tap's channels left from load 0's
                    b_left = c_in_g - c0 - b_k0
                    k_row = uint64(((i * kw + j) * c_in_g + c0) * c_out_g)
                    for q in range(a_slots):
                        valid = a_col[q] >= 0
                        off = uint64(a_col[q]) + k_row if valid else k_row
                        _load_column(wt, off, a_step, valid, a_left, q, a_slots, a_rows, a_next)
                    for q in range(b_slots):
                        yy = b_y0[q] + dy
                        xx = b_x0[q] + dx
                        inside = 0 <= yy < h_in and 0 <= xx < w_in
                        off = uint64(x_base + c0 * hw_in + yy * w_in + xx) if inside else uint64(0)
                        _load_column(x, off, b_step, inside, b_left, q, b_slots, b_rows, b_next)
                    c0 += bk
                    if c0 >= c_in_g:
                        c0 = 0
                        j += 1
                        if j == kw:
                            j = 0
                            i += 1
                if t > 0:
                    buf = (t - 1) & 1
                    # unsigned offsets: Numba adds no negative-index wrap-around to their loads
                    # offsets from the step's start, not carried from kk to kk, so that the compiler
                    # sees each run 16-byte aligned
                    ia = uint64(buf * (bk * bm) + ty * va)
                    ib = uint64(a_size + buf * (bk * bn) + tx * vb)
                    for kk in range(bk):
                        for a in range(tm):
                            a_frag[a] = tiles[ia + uint64(kk * bm + (a // va) * a_gap + a % va)]
                        for b in range(tn):
                            b_frag[b] = tiles[ib + uint64(kk * bn + (b // vb) * b_gap + b % vb)]
                        for a in range(tm):
                            for b in range(tn):
                                acc[a, b] += a_frag[a] * b_frag[b]
                if t < n_steps:
                    buf = t & 1
                    for r in range(a_loads):
                        tiles[buf * (bk * bm) + tid + r * threads] = a_next[r]
                    for r in range(b_loads):
                        tiles[a_size + buf * (bk * bn) + tid + r * threads] = b_next[r]
                cuda.syncthreads()
            # the last barrier above also keeps the next tile's first stores behind these reads
            for a in range(tm):
                o = o0 + ty * va + (a // va) * (ty_count * va) + a % va
                if o < c_out_g:
                    row = (n * c_out + g * c_out_g + o) * n_pix
                    for b in range(tn):
                        p = p0 + tx * vb + (b // vb) * (tx_count * vb) + b % vb
                        if p < n_pix:
                            if splits == 1:
                                out[row + p] = epilogue_value(acc[a, b] + bias[g * c_out_g + o],
                                                              residual, row + p, add_residual, relu,
                                                              slope)
                            else:
                                part[(s * n_img * c_out) * n_pix + row + p] = acc[a, b]

    return kernel


@cuda.jit
def _relayout_kernel(w, wt, groups, c_out_g, c_in_g, taps):
    """wt[g, tap, c, o] = w[g*c_out_g + o, c, tap] on flat float32 arrays (see relayout_weights)."""
    for t in range(cuda.grid(1), wt.shape[0], cuda.gridsize(1)):
        o = t % c_out_g
        rest = t // c_out_g
        c = rest % c_in_g
        rest = rest // c_in_g
        tap = rest % taps
        g = rest // taps
        wt[t] = w[((g * c_out_g + o) * c_in_g + c) * taps + tap]


@cuda.jit
def _sum_parts_kernel(part, bias, out, splits, plane, c_out, residual, add_residual, relu, slope):
    """out[t] = bias[channel of t] + sum over s of part[s * out.size + t], flat float32 arrays,
    then :func:`epilogue_value`; ``plane`` is H_out * W_out."""
    size = out.shape[0]
    for t in range(cuda.grid(1), size, cuda.gridsize(1)):
        total = bias[(t // plane) % c_out]
        for s in range(splits):
            total += part[s * size + t]
        out[t] = epilogue_value(total, residual, t, add_residual, relu, slope)


def relayout_weights(d_w, groups):
    """The weights as :func:`gemm_kernel` reads them, on the device.

    Parameters
    ----------
    d_w : device array of shape (C_out, C_in_g, kh, kw), float32, C-contiguous
    groups : int

    Returns
    -------
    device array of shape (groups * kh * kw * C_in_g * C_out_g,), float32
        (groups, kh*kw*C_in_g, C_out_g) flattened, the reduction index tap-major:
        k = (i*kw + j) * C_in_g + c. One pass over the weights (4.7 M values for fc6, a few
        microseconds of an H200's bandwidth), so it is redone per call rather than cached
        on an array's identity, which a caller could overwrite in place.
    """
    c_out, c_in_g, kh, kw = (int(s) for s in d_w.shape)
    d_wt = cuda.device_array(d_w.size, np.float32)
    blocks, threads = _flat_launch(d_w.size)
    _relayout_kernel[blocks, threads](d_w.reshape(d_w.size), d_wt, groups, c_out // groups, c_in_g, kh * kw)
    return d_wt


@cuda.jit
def _add_kernel(a, b):
    """a += b, element-wise on flat float32 arrays."""
    for t in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[t] += b[t]


@cuda.jit
def _relu_kernel(x, slope, out):
    """Caffe's ReLU (:func:`relu_value`) on flat float32 arrays; ``out`` may be ``x`` (in place)."""
    for t in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[t] = relu_value(x[t], slope)


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


def _gemm(d_x, d_wt, d_b, d_out, groups, kernel_size, stride, pad, dilation, d_res, relu_slope):
    """Launch :func:`gemm_kernel` (and the sum of a split reduction): ``d_out`` (N, C_out, H_out,
    W_out) = the convolution of ``d_x`` (N, C_in, H, W) with the re-laid-out weights ``d_wt``,
    plus ``d_b``, the flat residual ``d_res`` (or None) and the ReLU of ``relu_slope`` (or None)."""
    n_img, c_in, h, w = d_x.shape
    _, c_out, h_out, w_out = d_out.shape
    kh, kw = kernel_size
    max_grid = config.CUDA_MAX_GRID
    n_pix = h_out * w_out
    tile, splits = gemm_shape(c_out // groups, n_pix, c_in // groups * kh * kw, n_img * groups)
    bm, bn, bk, tm, tn = tile
    tiles = n_img * groups * splits * math.ceil(c_out // groups / bm) * math.ceil(n_pix / bn)
    grid = min(max_grid, tiles)
    flat_out = d_out.reshape(d_out.size)
    # With one part the kernel writes ``out`` itself and never touches ``part``: ``out`` stands in
    # for it, as it does for a missing residual (the kernel reads neither then), so that most
    # layers allocate nothing but their output.
    d_part = cuda.device_array(splits * d_out.size, np.float32) if splits > 1 else flat_out
    epilogue = (int(d_res is not None), int(relu_slope is not None), np.float32(relu_slope or 0))
    d_res = d_part[:1] if d_res is None else d_res
    gemm_kernel(bm, bn, bk, tm, tn)[grid, (bm // tm) * (bn // tn)](
        d_x.reshape(d_x.size), d_wt, d_b, flat_out, d_part, d_res, n_img, c_in, h, w, c_out, h_out,
        w_out, groups, kh, kw, stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1], splits,
        *epilogue)
    if splits > 1:
        blocks, threads = _flat_launch(d_out.size)
        _sum_parts_kernel[blocks, threads](d_part, d_b, flat_out, splits, n_pix, c_out, d_res, *epilogue)


def conv2d(x, weight, bias, stride, pad, dilation, groups, squeeze, residual=None, relu_slope=None,
           cache=None):
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
    residual : ndarray or device array of the output's shape, float32, optional
        Added to the output.
    relu_slope : float, optional
        Caffe's ReLU with this negative slope, last. The GEMM kernel applies both as it
        stores its sums; the classic kernel leaves them to two passes after it.
    cache : atrous.WeightCache, optional
        Keeps the GEMM kernel's relayout of ``weight`` on the device, and the zero bias
        of a convolution without one, for the next call with the same array (a net's
        device weights): one allocation, one launch and, for the bias, one copy from
        the host fewer per call.

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
    if bias is not None:
        d_b = _to_device(bias)
    elif cache is not None:
        d_b = cache.get(weight, "cuda zero bias", lambda w: cuda.to_device(np.zeros(c_out, np.float32)))
    else:
        d_b = cuda.to_device(np.zeros(c_out, np.float32))
    d_out = cuda.device_array((n_img, c_out, h_out, w_out), np.float32)
    if config.CUDA_CONV_KERNEL == "classic":
        max_grid = config.CUDA_MAX_GRID
        d_w = _to_device(weight).reshape(c_out, c_in_g * kh * kw)  # (C_out, C_in/g*kh*kw)
        threads, micro = block_shape(c_out // groups)
        block = threads * micro  # output channels and pixels per thread block
        grid = (min(max_grid, math.ceil(h_out * w_out / block)),
                min(max_grid, math.ceil(c_out // groups / block)),
                min(max_grid, n_img * groups))
        conv_kernel(threads, micro)[grid, (threads, threads)](d_x, d_w, d_b, d_out, groups, kh, kw, stride[0],
                                                              stride[1], pad[0], pad[1], dilation[0], dilation[1])
        if residual is not None:  # the classic kernel stores plain sums: the epilogue in two passes
            add_(d_out, _to_device(residual).reshape(*d_out.shape))
        if relu_slope is not None:
            relu(d_out, relu_slope, out=d_out)
    elif config.CUDA_CONV_KERNEL == "gemm":
        d_res = None if residual is None else _to_device(residual).reshape(d_out.size)
        if winograd_applies(c_out, kh, kw, stride, groups):
            _conv_winograd(d_x, weight, d_b, d_out, pad, dilation, cache, d_res, relu_slope)
        else:
            if cache is None:
                d_wt = relayout_weights(_to_device(weight), groups)
            else:  # keyed by the caller's array; groups is fixed by its shape and the input's channels
                d_wt = cache.get(weight, f"cuda gemm, groups {groups}",
                                 lambda w: relayout_weights(_to_device(w), groups))
            _gemm(d_x, d_wt, d_b, d_out, groups, (kh, kw), stride, pad, dilation, d_res, relu_slope)
    else:
        raise ValueError(f"config.CUDA_CONV_KERNEL must be 'gemm' or 'classic', got {config.CUDA_CONV_KERNEL!r}")
    y = d_out[0] if squeeze else d_out
    return y.copy_to_host() if host_in else y


# ---------------------------------------------------------------- Winograd F(2x2, 3x3)


def winograd_applies(c_out, kh, kw, stride, groups):
    """Whether :func:`conv2d` takes Winograd's F(2x2, 3x3) for this layer: ``config.CUDA_WINOGRAD``
    on, a 3x3 kernel at stride 1 in one group, at least ``config.CUDA_WINOGRAD_MIN_CHANNELS``
    output channels (the products are a GEMM over them)."""
    return (config.CUDA_WINOGRAD and kh == kw == 3 and tuple(stride) == (1, 1) and groups == 1
            and c_out >= config.CUDA_WINOGRAD_MIN_CHANNELS)


@cuda.jit(device=True)
def _channel_and_tile(idx, n_tiles, n_cols):
    """Work item idx of a transform: (channel, tile t, tile row, tile column), t = row * n_cols + column."""
    channel = idx // n_tiles
    t = idx - channel * n_tiles
    row = t // n_cols
    return channel, t, row, t - row * n_cols


@cuda.jit(cache=True)
def _winograd_input_kernel(x, n, rows, cols, v):
    """``V = B^T D B`` of every (channel, tile) of image n: ``v[xi * C + c, t]`` for the 16 xi.

    ``rows`` (T_r, 4) and ``cols`` (T_c, 4) are a tile's input rows and columns
    (:func:`atrous.winograd.tiles`); tile t = tr * T_c + tc; inputs outside the image are 0.
    """
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    n_cols = cols.shape[0]
    n_tiles = rows.shape[0] * n_cols
    d = cuda.local.array((4, 4), float32)
    e = cuda.local.array((4, 4), float32)
    for idx in range(cuda.grid(1), c_in * n_tiles, cuda.gridsize(1)):
        c, t, tr, tc = _channel_and_tile(idx, n_tiles, n_cols)
        for a in range(4):
            y = rows[tr, a]
            for b in range(4):
                xx = cols[tc, b]
                d[a, b] = x[n, c, y, xx] if 0 <= y < h and 0 <= xx < w else float32(0)
        for b in range(4):  # B^T D, column by column
            e[0, b] = d[0, b] - d[2, b]
            e[1, b] = d[1, b] + d[2, b]
            e[2, b] = d[2, b] - d[1, b]
            e[3, b] = d[1, b] - d[3, b]
        for a in range(4):  # (B^T D) B, row by row
            base = 4 * a
            v[(base + 0) * c_in + c, t] = e[a, 0] - e[a, 2]
            v[(base + 1) * c_in + c, t] = e[a, 1] + e[a, 2]
            v[(base + 2) * c_in + c, t] = e[a, 2] - e[a, 1]
            v[(base + 3) * c_in + c, t] = e[a, 1] - e[a, 3]


@cuda.jit(cache=True)
def _winograd_output_kernel(m, bias, rows, cols, n, out, residual, add_residual, relu, slope):
    """``Y = A^T M A`` of every (output channel, tile), plus the bias and :func:`epilogue_value`,
    into the 2x2 outputs of the tile that lie in image n of ``out`` (N, C_out, H_out, W_out);
    ``m[xi * C_out + o, t]`` are the 16 products, ``rows``/``cols`` (T, 2) the outputs' positions."""
    c_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    n_cols = cols.shape[0]
    n_tiles = rows.shape[0] * n_cols
    e = cuda.local.array((2, 4), float32)
    for idx in range(cuda.grid(1), c_out * n_tiles, cuda.gridsize(1)):
        o, t, tr, tc = _channel_and_tile(idx, n_tiles, n_cols)
        for b in range(4):  # A^T M, column by column
            m0 = m[(0 + b) * c_out + o, t]
            m1 = m[(4 + b) * c_out + o, t]
            m2 = m[(8 + b) * c_out + o, t]
            m3 = m[(12 + b) * c_out + o, t]
            e[0, b] = m0 + m1 + m2
            e[1, b] = m1 - m2 - m3
        for a in range(2):
            y = rows[tr, a]
            if y < h_out:
                for b in range(2):
                    xx = cols[tc, b]
                    if xx < w_out:
                        val = (e[a, 0] + e[a, 1] + e[a, 2] if b == 0 else e[a, 1] - e[a, 2] - e[a, 3]) + bias[o]
                        flat = ((n * c_out + o) * h_out + y) * w_out + xx
                        out[n, o, y, xx] = epilogue_value(val, residual, flat, add_residual, relu, slope)


def _tile_positions(h_out, w_out, pad, dilation):
    """The F(2x2, 3x3) tiles' input and output rows and columns, as four device arrays."""
    from atrous import winograd
    rows_in, rows_out = winograd.tiles(h_out, pad[0], dilation[0], 2)
    cols_in, cols_out = winograd.tiles(w_out, pad[1], dilation[1], 2)
    return tuple(cuda.to_device(a) for a in (rows_in, rows_out, cols_in, cols_out))


def _conv_winograd(d_x, weight, d_b, d_out, pad, dilation, cache, d_res, relu_slope):
    """A dilated 3x3, stride-1 convolution by F(2x2, 3x3) on every phase (:mod:`atrous.winograd`
    explains the phases and tiles): per image, the input transform, the 16 products as one GEMM
    in 16 groups (:func:`gemm_kernel` on a 1 x T "image" of 16 C_in channels), the output
    transform with the bias and the epilogue."""
    from atrous import winograd
    n_img, c_in, _, _ = d_x.shape
    _, c_out, h_out, w_out = d_out.shape

    def transformed(w):  # U = G g G^T as (16 C_out, C_in, 1, 1), re-laid out for 16 groups
        host = w.copy_to_host() if is_device_array(w) else np.ascontiguousarray(w, np.float32)
        u = winograd.filter_transform(host, 2).reshape(16 * c_out, c_in, 1, 1)  # (xi, o) rows
        return relayout_weights(cuda.to_device(u), 16)

    def zeros(w):  # the products' GEMM has no bias: the output transform adds the layer's
        return cuda.to_device(np.zeros(16 * c_out, np.float32))

    def positions(w):  # the tiles of this layer's geometry
        return _tile_positions(h_out, w_out, pad, dilation)

    # A net keeps all three with the layer's weights (a copy from the host waits for the device:
    # not at every pass), in the device context of those weights.
    if cache is None:
        d_ut, d_zero, tiles = transformed(weight), zeros(weight), positions(weight)
    else:
        d_ut = cache.get(weight, "cuda winograd F(2x2, 3x3)", transformed)
        d_zero = cache.get(weight, "cuda winograd zero bias", zeros)
        tiles = cache.get(weight, f"cuda winograd tiles {h_out}x{w_out}, pad {tuple(pad)}, dilation {tuple(dilation)}",
                          positions)
    d_rows_in, d_rows_out, d_cols_in, d_cols_out = tiles
    n_tiles = d_rows_in.shape[0] * d_cols_in.shape[0]
    d_v = cuda.device_array((1, 16 * c_in, 1, n_tiles), np.float32)
    d_m = cuda.device_array((1, 16 * c_out, 1, n_tiles), np.float32)
    flat_out = d_out.reshape(d_out.size)
    epilogue = (int(d_res is not None), int(relu_slope is not None), np.float32(relu_slope or 0))
    d_res = flat_out if d_res is None else d_res  # an unused stand-in without a residual
    for n in range(n_img):
        _winograd_input_kernel[_flat_launch(c_in * n_tiles)](d_x, n, d_rows_in, d_cols_in,
                                                             d_v.reshape(16 * c_in, n_tiles))
        _gemm(d_v, d_ut, d_zero, d_m, 16, (1, 1), (1, 1), (0, 0), (1, 1), None, None)
        _winograd_output_kernel[_flat_launch(c_out * n_tiles)](d_m.reshape(16 * c_out, n_tiles), d_b, d_rows_out,
                                                               d_cols_out, n, d_out, d_res, *epilogue)
