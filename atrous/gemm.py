"""Matrix products on packed panels, in Numba: Winograd's batches and the 1x1 convolutions.

Winograd's F(m x m, 3x3) turns a convolution into (m+2)^2 independent products
``M[p] = U[p] @ V[p]``, ``(C_out, C_in) @ (C_in, tiles)``, one per point of the transformed
tile (:mod:`atrous.winograd`). On DeepLab's dilated layers they are small: ResNet-101's res4
at 321x321 has 36 products of (256 x 256) @ (256 x 121). BLAS runs such a batch one product
at a time, each split over the threads, and reached 125-136 GFLOP/s on 2 cores where its
large products reach 190-205. Here every thread takes whole products (or a band of one
product's columns) and computes them with one register-blocked kernel:

* ``U`` is packed once per set of weights (:func:`pack_rows`): plane p, row panel i is a
  ``(C_in, MR)`` block, row k holding column k of rows ``i*MR .. i*MR + MR-1`` of U[p];
* ``V`` is written packed by Winograd's input transforms: plane p, column panel j is a
  ``(C_in, NR)`` block, row k holding columns ``j*NR .. j*NR + NR-1`` of row k of V[p];
* :func:`panel_product` computes one ``MR x NR`` block of M[p] in ``MR * NR / 16`` vector
  registers of 16 floats: for each k one load of the NR values of V, then MR broadcasts of
  U, each multiplied into its row of accumulators (a fused multiply-add where the
  processor has one). The block is written once, after the last k.

A 1x1 convolution is one product ``(C_out, C_in) @ (C_in, H*W)`` (:func:`matmul_cpu`): the
same kernel reads the input's rows where they lie (32 columns of K rows), goes along K in
passes, and adds the bias and a shortcut and rectifies in registers before its last store,
so the layer makes no second pass over its output. On this processor it runs as fast as
OpenBLAS's own kernels (ResNet-101 at 321x321: 0.98-1.02x the time with BLAS's product and
the epilogue pass), and it keeps that speed where BLAS is slow: with OpenBLAS forced to an
old kernel (``OPENBLAS_CORETYPE=Prescott``) ResNet-101 took 0.67 s with these products and
1.21 s with BLAS's. Compiled for AVX2 (6 x 16 panels) its 1x1 products ran at 0.8x the speed
of OpenBLAS's Haswell kernels, so by default the convolutions other than Winograd use it only
with AVX-512 (:func:`panel_products`, ``atrous.config.PANEL_PRODUCTS``).

The panel shape suits the registers of the processor Numba compiles for:
MR x NR = 8 x 32 (16 accumulators of 16 floats) with AVX-512's 32 vector registers, 6 x 16
(12 registers of 8 floats) with AVX2's 16, or NEON's 32 of 4. It is fixed per process
(:data:`PANEL_ROWS`, :data:`PANEL_COLS`): the compiled kernels, which Numba caches per
processor, are built for it.

Measured on 2 cores of an AMD EPYC (Zen 4), GFLOP/s of BLAS's ``np.matmul`` on the stacked
products against these kernels in one run (``python bench/winograd.py``, RESULTS.md):
36 x (256 x 256) @ (256 x 121) 126 -> 182; 36 x (512 x 512) @ (512 x 144) 160 -> 184;
36 x (64 x 64) @ (64 x 3612) 121 -> 208; 16 x (1024 x 512) @ (512 x 648) 193 -> 212.

Each output is ``sum_k U[i, k] V[k, j]`` accumulated in k order, one rounding per
multiply-add (two where the processor has no fused one): results agree with BLAS's to
float32 rounding, and do not depend on the thread count.
"""
import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from atrous import config

#: Processors (LLVM's names) whose vector registers hold 16 floats, 32 of them (AVX-512).
_AVX512_NAMES = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake", "tigerlake",
                 "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "diamondrapids",
                 "alderlake-avx512", "znver4", "znver5", "x86-64-v4")


def _compiles_for_avx512():
    """Whether Numba compiles for a processor with AVX-512 (``NUMBA_CPU_NAME`` / ``_FEATURES`` or the host)."""
    if numba_config.CPU_FEATURES:
        return "+avx512f" in numba_config.CPU_FEATURES.split(",")
    name = numba_config.CPU_NAME
    if name and name != "host":
        return name.startswith(_AVX512_NAMES)
    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")


#: Rows (of U, output channels) and columns (of V, tiles) of one block of the product.
PANEL_ROWS, PANEL_COLS = (8, 32) if _compiles_for_avx512() else (6, 16)


def panel_products():
    """Whether the CPU strategies' products (1x1, "shift", "im2col") run here: ``atrous.config.
    PANEL_PRODUCTS``, or when it is None, whether the panels are AVX-512's (``atrous.config``)."""
    if config.PANEL_PRODUCTS is None:
        return PANEL_COLS == 32
    return bool(config.PANEL_PRODUCTS)

_LANES = 16  # floats per LLVM vector; lowered to one AVX-512 register, two AVX2 ones, four NEON ones
_F32 = ir.FloatType()
_VECTOR = ir.VectorType(_F32, _LANES)
_I32 = ir.IntType(32)


def _is_panel_array(array, ndim):
    return isinstance(array, types.Array) and array.ndim == ndim and array.dtype == types.float32


def _element(builder, array_data, row, stride, col):
    """Pointer to element (row, col) of a 2-D float32 array with rows ``stride`` floats apart."""
    return builder.gep(array_data, [builder.add(builder.mul(row, stride), col)])


def _vector_at(builder, pointer, intp, offset):
    return builder.bitcast(builder.gep(pointer, [ir.Constant(intp, offset)]), _VECTOR.as_pointer())


#: ``finish`` flags of :func:`panel_product`: what happens to the sums before they are stored.
ADD_BIAS, ADD_RESIDUAL, RELU = 1, 2, 4


def _relu(builder, value, slope):
    """Caffe's ReLU of a vector as :func:`atrous.epilogue.relu_value` computes it, bit for bit:
    ``max(v, 0) + slope * min(v, 0)`` with NumPy's max and min (a NaN stays NaN; -0 stays -0)."""
    zero = ir.Constant(_VECTOR, [0.0] * _LANES)
    high = builder.select(builder.fcmp_unordered(">=", value, zero), value, zero)  # NaN or v >= 0: v
    low = builder.select(builder.fcmp_unordered("<=", value, zero), value, zero)
    return builder.fadd(high, builder.fmul(slope, low))


@intrinsic
def panel_product(typingctx, a, b, b_row, b_col, c, row, col, rows, cols, accumulate, finish, bias, residual,
                  slope):
    """One block of a matrix product, in registers: for r < ``rows`` (<= PANEL_ROWS), s < ``cols``
    (<= PANEL_COLS) and k < K = ``a.shape[0]``::

        v = (c[row + r, col + s] if accumulate else 0) + sum_k a[k, r] b[b_row + k, b_col + s]
        v = v + bias[row + r]                  if finish & ADD_BIAS
        v = v + residual[row + r, col + s]     if finish & ADD_RESIDUAL
        v = max(v, 0) + slope * min(v, 0)      if finish & RELU
        c[row + r, col + s] = v

    ``a``: a (K, PANEL_ROWS) float32 row panel of :func:`pack_rows`, C-contiguous. ``b``: a 2-D
    float32 array whose rows are contiguous (any row stride): a (K, PANEL_COLS) column panel, or
    a matrix whose columns ``b_col .. b_col + PANEL_COLS - 1`` all exist (all are read,
    whatever ``cols``). ``c`` and ``residual``: 2-D float32 arrays whose rows are contiguous;
    ``bias``: 1-D float32; both read only when ``finish`` says so. No bounds are checked: the
    caller's shapes guarantee them. A block of fewer rows or columns (the edge of a matrix)
    is loaded and stored element by element, before and after the products.
    """
    arrays = (a, b, c, residual)
    if not (all(_is_panel_array(x, 2) for x in arrays) and a.layout == "C" and _is_panel_array(bias, 1)
            and all(isinstance(x, types.Integer) for x in (b_row, b_col, row, col, rows, cols, finish))
            and isinstance(accumulate, types.Boolean) and slope == types.float32):
        return None
    panel_rows, vectors = PANEL_ROWS, PANEL_COLS // _LANES

    def codegen(context, builder, signature, args):
        a_array, b_array, c_array, r_array = (context.make_array(signature.args[i])(context, builder, args[i])
                                              for i in (0, 1, 4, 12))
        bias_array = context.make_array(signature.args[11])(context, builder, args[11])
        intp = context.get_value_type(types.intp)
        b_row, b_col, first_row, first_col, rows, cols, finish = (
            context.cast(builder, args[i], signature.args[i], types.intp) for i in (2, 3, 5, 6, 7, 8, 10))
        four = ir.Constant(intp, 4)
        b_stride, c_stride, r_stride = (builder.udiv(builder.extract_value(array.strides, 0), four)  # floats
                                        for array in (b_array, c_array, r_array))
        depth = builder.extract_value(a_array.shape, 0)
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), f"llvm.fmuladd.v{_LANES}f32")
        # The accumulators live in allocas that LLVM promotes to registers (one per vector).
        zero = ir.Constant(_VECTOR, [0.0] * _LANES)
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(panel_rows)]
        edge = cgutils.alloca_once(builder, ir.ArrayType(_F32, PANEL_COLS))  # one row of a partial block
        edge_start = builder.gep(edge, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)])
        whole = builder.and_(builder.icmp_signed("==", rows, ir.Constant(intp, panel_rows)),
                             builder.icmp_signed("==", cols, ir.Constant(intp, PANEL_COLS)))

        def block_rows(data, stride):
            return [_element(builder, data, builder.add(first_row, ir.Constant(intp, r)), stride, first_col)
                    for r in range(panel_rows)]

        def each_row(action):
            """``action(r, whole)`` for every row of the block: all rows with vectors, or the present
            rows element by element."""
            with builder.if_else(whole) as (then, otherwise):
                with then:
                    for r in range(panel_rows):
                        action(r, True)
                with otherwise:
                    for r in range(panel_rows):
                        with builder.if_then(builder.icmp_signed("<", ir.Constant(intp, r), rows)):
                            action(r, False)

        def read_row(source, whole_row):
            """The ``cols`` values at ``source`` as vectors (zeros past ``cols``)."""
            if whole_row:
                return [builder.load(_vector_at(builder, source, intp, _LANES * v), align=4) for v in range(vectors)]
            for v in range(vectors):
                builder.store(zero, _vector_at(builder, edge_start, intp, _LANES * v))
            with cgutils.for_range(builder, cols) as loop:
                value = builder.load(builder.gep(source, [loop.index]))
                builder.store(value, builder.gep(edge_start, [loop.index]))
            return [builder.load(_vector_at(builder, edge_start, intp, _LANES * v), align=4) for v in range(vectors)]

        def flag(bit):
            return builder.icmp_unsigned("!=", builder.and_(finish, ir.Constant(intp, bit)), ir.Constant(intp, 0))

        targets = block_rows(c_array.data, c_stride)

        def load_row(r, whole_row):
            for v, value in enumerate(read_row(targets[r], whole_row)):
                builder.store(value, sums[r][v])

        with builder.if_then(context.cast(builder, args[9], signature.args[9], types.boolean)):  # accumulate
            each_row(load_row)

        broadcast = ir.Constant(ir.VectorType(_I32, _LANES), [0] * _LANES)

        def splat(scalar):
            return builder.shuffle_vector(builder.insert_element(ir.Constant(_VECTOR, None), scalar,
                                                                 ir.Constant(_I32, 0)),
                                          ir.Constant(_VECTOR, None), broadcast)

        b_first = _element(builder, b_array.data, b_row, b_stride, b_col)
        with cgutils.for_range(builder, depth) as loop:
            b_here = builder.gep(b_first, [builder.mul(loop.index, b_stride)])
            b_values = [builder.load(_vector_at(builder, b_here, intp, _LANES * v), align=4) for v in range(vectors)]
            a_here = builder.gep(a_array.data, [builder.mul(loop.index, ir.Constant(intp, panel_rows))])
            for r in range(panel_rows):
                lanes = splat(builder.load(builder.gep(a_here, [ir.Constant(intp, r)])))
                for v in range(vectors):
                    builder.store(builder.call(fmuladd, [lanes, b_values[v], builder.load(sums[r][v])]), sums[r][v])

        def add_bias(r, whole_row):
            value = splat(builder.load(builder.gep(bias_array.data, [builder.add(first_row, ir.Constant(intp, r))])))
            for v in range(vectors):
                builder.store(builder.fadd(builder.load(sums[r][v]), value), sums[r][v])

        shortcuts = block_rows(r_array.data, r_stride)

        def add_residual(r, whole_row):
            for v, value in enumerate(read_row(shortcuts[r], whole_row)):
                builder.store(builder.fadd(builder.load(sums[r][v]), value), sums[r][v])

        slope = splat(args[13])

        def relu(r, whole_row):
            for v in range(vectors):
                builder.store(_relu(builder, builder.load(sums[r][v]), slope), sums[r][v])

        for bit, step in ((ADD_BIAS, add_bias), (ADD_RESIDUAL, add_residual), (RELU, relu)):
            with builder.if_then(flag(bit)):
                each_row(step)

        def store_row(r, whole_row):
            if whole_row:
                for v in range(vectors):
                    builder.store(builder.load(sums[r][v]), _vector_at(builder, targets[r], intp, _LANES * v), align=4)
                return
            for v in range(vectors):
                builder.store(builder.load(sums[r][v]), _vector_at(builder, edge_start, intp, _LANES * v), align=4)
            with cgutils.for_range(builder, cols) as loop:
                value = builder.load(builder.gep(edge_start, [loop.index]))
                builder.store(value, builder.gep(targets[r], [loop.index]))

        each_row(store_row)
        return context.get_dummy_value()

    return types.void(a, b, b_row, b_col, c, row, col, rows, cols, accumulate, finish, bias, residual, slope), codegen


_NO_BIAS = np.empty(0, np.float32)  # for the calls that finish nothing
_NO_RESIDUAL = np.empty((0, 0), np.float32)


@njit(parallel=True, cache=True)
def _products(a, b, c, chunk):
    """c[p, i MR + r, j NR + s] = sum_k a[p, i, k, r] b[p, j, k, s]; one task per plane and ``chunk``
    column panels, which stay in cache while every row panel of the plane passes over them."""
    planes, row_panels, panel_rows = a.shape[0], a.shape[1], a.shape[3]
    col_panels, panel_cols = b.shape[1], b.shape[3]
    chunks = (col_panels + chunk - 1) // chunk
    for task in prange(planes * chunks):
        p = task // chunks
        j0 = (task % chunks) * chunk
        j1 = min(j0 + chunk, col_panels)
        out = c[p]
        for i in range(row_panels):
            panel = a[p, i]
            for j in range(j0, j1):
                panel_product(panel, b[p, j], 0, 0, out, i * panel_rows, j * panel_cols, panel_rows, panel_cols,
                              False, 0, _NO_BIAS, _NO_RESIDUAL, np.float32(0))


@njit(parallel=True, cache=True)
def _product(a, x, tail, out, bias, residual, slope, finish, depth_block, chunk, groups):
    """out = finish(W @ x) for W's row panels ``a`` (M_pad/MR, K, MR) and x (K, N).

    Tasks: ``chunk`` column panels times one of ``groups`` bands of row panels. Along K in
    passes of ``depth_block`` rows: a pass of one row panel (up to 16 KB) stays in L1 while
    the task's column panels pass under it; the first pass stores its sums, the others add
    to them, and the last finishes them (bias, residual, ReLU) before it stores.
    ``tail`` (K, NR): the last, partial column panel of x, zero-padded; (0, NR) when N % NR == 0.
    """
    row_panels, depth, panel_rows = a.shape
    m, n = out.shape
    panel_cols = tail.shape[1]
    full = n // panel_cols
    col_panels = full + (1 if n > full * panel_cols else 0)
    chunks = (col_panels + chunk - 1) // chunk
    for task in prange(chunks * groups):
        group = task % groups
        j0 = (task // groups) * chunk
        j1 = min(j0 + chunk, col_panels)
        for k0 in range(0, depth, depth_block):
            k1 = min(k0 + depth_block, depth)
            for i in range(group * row_panels // groups, (group + 1) * row_panels // groups):
                panel = a[i, k0:k1]
                rows = min(panel_rows, m - i * panel_rows)
                for j in range(j0, j1):
                    col = j * panel_cols
                    cols = min(panel_cols, n - col)
                    done = finish if k1 == depth else 0
                    if j < full:
                        panel_product(panel, x, k0, col, out, i * panel_rows, col, rows, cols, k0 > 0,
                                      done, bias, residual, slope)
                    else:
                        panel_product(panel, tail, k0, 0, out, i * panel_rows, col, rows, cols, k0 > 0,
                                      done, bias, residual, slope)


def panels(count, size):
    """Panels of ``size`` that hold ``count`` rows or columns (the last one zero-padded)."""
    return -(-count // size)


def pack_rows(u):
    """U packed in row panels: ``(P, M, K)`` -> ``(P, ceil(M / PANEL_ROWS), K, PANEL_ROWS)``, float32.

    ``packed[p, i, k, r] = u[p, i * PANEL_ROWS + r, k]``; rows past M are zeros.
    """
    planes, m, k = u.shape
    padded = np.zeros((planes, panels(m, PANEL_ROWS) * PANEL_ROWS, k), np.float32)
    padded[:, :m] = u
    return np.ascontiguousarray(  # (P, M/MR, MR, K) -> (P, M/MR, K, MR)
        padded.reshape(planes, -1, PANEL_ROWS, k).transpose(0, 1, 3, 2))


def pack_cols(v):
    """V packed in column panels: ``(P, K, T)`` -> ``(P, ceil(T / PANEL_COLS), K, PANEL_COLS)``, float32.

    ``packed[p, j, k, s] = v[p, k, j * PANEL_COLS + s]``; columns past T are zeros. Winograd's
    input transforms write this layout directly; this function serves tests and references.
    """
    planes, k, t = v.shape
    padded = np.zeros((planes, k, panels(t, PANEL_COLS) * PANEL_COLS), np.float32)
    padded[:, :, :t] = v
    return np.ascontiguousarray(  # (P, K, T/NR, NR) -> (P, T/NR, K, NR)
        padded.reshape(planes, k, -1, PANEL_COLS).transpose(0, 2, 1, 3))


def batched_products_numpy(a, b):
    """The reference: ``(P, M_pad, T_pad)`` products of the unpacked panels, by ``np.matmul``."""
    planes, row_panels, k, rows = a.shape
    col_panels, cols = b.shape[1], b.shape[3]
    u = a.transpose(0, 1, 3, 2).reshape(planes, row_panels * rows, k)   # (P, M_pad, K)
    v = b.transpose(0, 2, 1, 3).reshape(planes, k, col_panels * cols)   # (P, K, T_pad)
    return np.matmul(u, v)


def matmul_cpu(a, x, out, bias=None, residual=None, relu_slope=None):
    """``out = relu(W @ x + bias + residual)`` (each part optional), by blocks of
    PANEL_ROWS x PANEL_COLS in registers: a 1x1 convolution with its epilogue.

    The input is read where it is (a column panel is 32 columns of its rows); only its last,
    partial column panel is copied, zero-padded. Each output is accumulated in k order (one
    multiply-add each) and then finished as :mod:`atrous.epilogue` does, bit for bit given
    the sums. (Reading W's rows in place instead of its packed panels ran 2048 x 1024 at
    41x41 in 39 ms instead of 34.)

    Parameters
    ----------
    a : ndarray of shape (ceil(M / PANEL_ROWS), K, PANEL_ROWS), float32, C-contiguous
        W's row panels, ``pack_rows(W[None])[0]`` for W (M, K); a net keeps them.
    x : ndarray of shape (K, N), float32, rows contiguous
    out : ndarray of shape (M, N), float32, rows contiguous; written completely. It must not
        overlap ``x`` or ``residual``: the passes over K store partial sums in it.
    bias : ndarray of shape (M,), float32, optional
    residual : ndarray of shape (M, N), float32, rows contiguous, optional
    relu_slope : float, optional
        Caffe's ReLU with this negative slope, last (:mod:`atrous.epilogue`).
    """
    row_panels, depth, rows = a.shape
    m, n = out.shape
    if rows != PANEL_ROWS or not (row_panels - 1) * rows < m <= row_panels * rows or x.shape != (depth, n) \
            or depth < 1 or (bias is not None and bias.shape != (m,)) or (residual is not None and residual.shape != (m, n)):
        raise ValueError(f"expected a (ceil(M / {PANEL_ROWS}), K, {PANEL_ROWS}), x (K, N), out and residual (M, N), "
                         f"bias (M,); got a {a.shape}, "
                         f"x {x.shape}, out {out.shape}, residual {None if residual is None else residual.shape}, "
                         f"bias {None if bias is None else bias.shape}")
    for array, name in ((a, "a"), (x, "x"), (out, "out"), (residual, "residual"), (bias, "bias")):
        if array is not None and (array.dtype != np.float32 or (array.shape[-1] > 1 and array.strides[-1] != 4)):
            raise ValueError(f"{name}: expected float32 with contiguous rows, got {array.dtype}, "
                             f"strides {array.strides}")
    if not a.flags.c_contiguous:
        raise ValueError("a: expected the C-contiguous row panels of pack_rows")
    if np.may_share_memory(out, x) or (residual is not None and np.may_share_memory(out, residual)):
        raise ValueError("out must not overlap x or residual (the passes over K store partial sums in it)")
    full = n // PANEL_COLS
    # The last, partial column panel, zero-padded (none when the panels fill N: (0, NR), never read).
    tail = np.zeros((depth if n > full * PANEL_COLS else 0, PANEL_COLS), np.float32)
    if tail.size:
        tail[:, :n - full * PANEL_COLS] = x[:, full * PANEL_COLS:]
    depth_block = config.PANEL_DEPTH
    chunk = max(1, config.PANEL_TASK_BYTES // (min(depth_block, depth) * PANEL_COLS * 4))
    finish = (ADD_BIAS if bias is not None else 0) | (ADD_RESIDUAL if residual is not None else 0) | \
        (RELU if relu_slope is not None else 0)
    _product(a, x, tail, out, _NO_BIAS if bias is None else bias, _NO_RESIDUAL if residual is None else residual,
             np.float32(relu_slope or 0), finish, depth_block, chunk, max(1, min(row_panels, numba.get_num_threads())))
    return out


def batched_products_cpu(a, b, c):
    """``c[p] = U[p] @ V[p]`` for packed ``a`` (:func:`pack_rows`) and ``b`` (:func:`pack_cols`).

    Parameters
    ----------
    a : ndarray of shape (P, M_pad / PANEL_ROWS, K, PANEL_ROWS), float32, each panel contiguous
    b : ndarray of shape (P, T_pad / PANEL_COLS, K, PANEL_COLS), float32, each panel contiguous
        (the planes may lie further apart than a plane's size: Winograd's buffers do).
    c : ndarray of shape (P, >= M_pad, >= T_pad), float32, rows contiguous, not overlapping ``b``
        Its first M_pad rows and T_pad columns of every plane are written.
    """
    planes, _, depth, rows = a.shape
    if rows != PANEL_ROWS or b.shape[3] != PANEL_COLS or b.shape[0] != planes or b.shape[2] != depth:
        raise ValueError(f"expected panels (P, ., K, {PANEL_ROWS}) and (P, ., K, {PANEL_COLS}) with the same "
                         f"P and K, got {a.shape} and {b.shape}")
    if c.shape[0] != planes or c.shape[1] < a.shape[1] * rows or c.shape[2] < b.shape[1] * PANEL_COLS:
        raise ValueError(f"expected c of at least ({planes}, {a.shape[1] * rows}, {b.shape[1] * PANEL_COLS}), "
                         f"got {c.shape}")
    if not a.flags.c_contiguous:
        raise ValueError("a: expected the C-contiguous row panels of pack_rows")
    for array, name in ((a, "a"), (b, "b"), (c, "c")):
        panel_rows_apart = array.ndim == 4 and array.shape[-2] > 1 and array.strides[-2] != 4 * array.shape[-1]
        if array.dtype != np.float32 or array.strides[-1] != 4 or panel_rows_apart:
            raise ValueError(f"{name}: expected float32 with contiguous panels, got {array.dtype}, "
                             f"strides {array.strides}")
    chunk = max(1, config.PANEL_CHUNK_BYTES // (depth * PANEL_COLS * 4))
    _products(a, b, c, chunk)
    return c
