"""Batched matrix products on packed panels: Winograd's (m+2)^2 products in Numba, not BLAS.

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

The panel shape suits the registers of the processor Numba compiles for:
MR x NR = 8 x 32 (16 accumulators of 16 floats) with AVX-512's 32 vector registers, 6 x 16
(12 registers of 8 floats) with AVX2's 16, or NEON's 32 of 4. It is fixed per process
(:data:`PANEL_ROWS`, :data:`PANEL_COLS`): the compiled kernels, which Numba caches per
processor, are built for it.

Measured on 2 cores of an AMD EPYC (Zen 4), GFLOP/s of BLAS's ``np.matmul`` on the stacked
products against these kernels in one run (``python bench/winograd.py``, RESULTS.md):
36 x (256 x 256) @ (256 x 121) 136 -> 207; 36 x (512 x 512) @ (512 x 144) 161 -> 192;
36 x (64 x 64) @ (64 x 3612) 116 -> 193; 16 x (1024 x 512) @ (512 x 1156) 196 -> 214.

Each output is ``sum_k U[i, k] V[k, j]`` accumulated in k order, one rounding per
multiply-add (two where the processor has no fused one): results agree with BLAS's to
float32 rounding, and do not depend on the thread count.
"""
import llvmlite.binding as llvm
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

_LANES = 16  # floats per LLVM vector; lowered to one AVX-512 register, two AVX2 ones, four NEON ones
_F32 = ir.FloatType()
_VECTOR = ir.VectorType(_F32, _LANES)
_I32 = ir.IntType(32)


def _is_panel_array(array, ndim):
    return isinstance(array, types.Array) and array.ndim == ndim and array.dtype == types.float32


@intrinsic
def panel_product(typingctx, a, b, c, row, col):
    """``c[row + r, col + s] = sum_k a[k, r] * b[k, s]`` for r < PANEL_ROWS, s < PANEL_COLS.

    ``a``: (K, PANEL_ROWS) and ``b``: (K, PANEL_COLS) float32, each contiguous (a panel of
    a packed array); ``c``: a 2-D float32 array whose rows are contiguous (any row stride).
    No bounds are checked: the caller's shapes guarantee them.
    """
    if not (_is_panel_array(a, 2) and _is_panel_array(b, 2) and _is_panel_array(c, 2)
            and isinstance(row, types.Integer) and isinstance(col, types.Integer)):
        return None
    rows, vectors = PANEL_ROWS, PANEL_COLS // _LANES

    def codegen(context, builder, signature, args):
        a_type, b_type, c_type, row_type, col_type = signature.args
        a_array = context.make_array(a_type)(context, builder, args[0])
        b_array = context.make_array(b_type)(context, builder, args[1])
        c_array = context.make_array(c_type)(context, builder, args[2])
        intp = context.get_value_type(types.intp)
        depth = builder.extract_value(a_array.shape, 0)
        c_stride = builder.udiv(builder.extract_value(c_array.strides, 0), ir.Constant(intp, 4))  # floats
        first_row = context.cast(builder, args[3], row_type, types.intp)
        first_col = context.cast(builder, args[4], col_type, types.intp)
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), f"llvm.fmuladd.v{_LANES}f32")
        zero = ir.Constant(_VECTOR, [0.0] * _LANES)
        # The accumulators live in allocas that LLVM promotes to registers (one per vector).
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(rows)]
        broadcast = ir.Constant(ir.VectorType(_I32, _LANES), [0] * _LANES)
        with cgutils.for_range(builder, depth) as loop:
            b_row = builder.gep(b_array.data, [builder.mul(loop.index, ir.Constant(intp, PANEL_COLS))])
            b_values = [builder.load(builder.bitcast(builder.gep(b_row, [ir.Constant(intp, _LANES * v)]),
                                                     _VECTOR.as_pointer()), align=4) for v in range(vectors)]
            a_row = builder.gep(a_array.data, [builder.mul(loop.index, ir.Constant(intp, rows))])
            for r in range(rows):
                scalar = builder.load(builder.gep(a_row, [ir.Constant(intp, r)]))
                lanes = builder.shuffle_vector(builder.insert_element(ir.Constant(_VECTOR, None), scalar,
                                                                      ir.Constant(_I32, 0)),
                                               ir.Constant(_VECTOR, None), broadcast)
                for v in range(vectors):
                    total = builder.call(fmuladd, [lanes, b_values[v], builder.load(sums[r][v])])
                    builder.store(total, sums[r][v])
        for r in range(rows):
            out_row = builder.gep(c_array.data, [builder.add(builder.mul(builder.add(first_row, ir.Constant(intp, r)),
                                                                         c_stride), first_col)])
            for v in range(vectors):
                target = builder.bitcast(builder.gep(out_row, [ir.Constant(intp, _LANES * v)]), _VECTOR.as_pointer())
                builder.store(builder.load(sums[r][v]), target, align=4)
        return context.get_dummy_value()

    return types.void(a, b, c, row, col), codegen


@njit(parallel=True, cache=True)
def _products(a, b, c, chunk):
    """c[p, i MR + r, j NR + s] = sum_k a[p, i, k, r] b[p, j, k, s]; one task per plane and ``chunk``
    column panels, which stay in cache while every row panel of the plane passes over them."""
    planes, row_panels = a.shape[0], a.shape[1]
    col_panels = b.shape[1]
    chunks = (col_panels + chunk - 1) // chunk
    for task in prange(planes * chunks):
        p = task // chunks
        j0 = (task % chunks) * chunk
        j1 = min(j0 + chunk, col_panels)
        out = c[p]
        for i in range(row_panels):
            panel = a[p, i]
            for j in range(j0, j1):
                panel_product(panel, b[p, j], out, i * a.shape[3], j * b.shape[3])


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


def batched_products_cpu(a, b, c):
    """``c[p] = U[p] @ V[p]`` for packed ``a`` (:func:`pack_rows`) and ``b`` (:func:`pack_cols`).

    Parameters
    ----------
    a : ndarray of shape (P, M_pad / PANEL_ROWS, K, PANEL_ROWS), float32, each panel contiguous
    b : ndarray of shape (P, T_pad / PANEL_COLS, K, PANEL_COLS), float32, each panel contiguous
        (the planes may lie further apart than a plane's size: Winograd's buffers do).
    c : ndarray of shape (P, >= M_pad, >= T_pad), float32, rows contiguous
        Its first M_pad rows and T_pad columns of every plane are written.
    """
    planes, _, depth, rows = a.shape
    if rows != PANEL_ROWS or b.shape[3] != PANEL_COLS or b.shape[0] != planes or b.shape[2] != depth:
        raise ValueError(f"expected panels (P, ., K, {PANEL_ROWS}) and (P, ., K, {PANEL_COLS}) with the same "
                         f"P and K, got {a.shape} and {b.shape}")
    if c.shape[0] != planes or c.shape[1] < a.shape[1] * rows or c.shape[2] < b.shape[1] * PANEL_COLS:
        raise ValueError(f"expected c of at least ({planes}, {a.shape[1] * rows}, {b.shape[1] * PANEL_COLS}), "
                         f"got {c.shape}")
    for array, name in ((a, "a"), (b, "b"), (c, "c")):
        panel_rows_apart = array.ndim == 4 and array.shape[-2] > 1 and array.strides[-2] != 4 * array.shape[-1]
        if array.dtype != np.float32 or array.strides[-1] != 4 or panel_rows_apart:
            raise ValueError(f"{name}: expected float32 with contiguous panels, got {array.dtype}, "
                             f"strides {array.strides}")
    chunk = max(1, config.PANEL_CHUNK_BYTES // (depth * PANEL_COLS * 4))
    _products(a, b, c, chunk)
    return c
