"""Row arithmetic and tile transposes in explicit vectors, for the CRF's Numba CPU kernels.

The splat, blur and slice combine rows of C float32 channels (C = the labels, 21 for
VOC, 20 where the mean field derives the last one). LLVM vectorises such a loop
with a vector width and an unroll factor fitted to long loops: for Zen 4 (LLVM 22)
its main loop takes 64 channels at a time, so a row of 20 runs through an 8-wide
epilogue twice and a scalar one four times, after run-time checks that the rows do
not overlap. These
functions emit the vector instructions themselves (LLVM IR ``<16 x float>``, then
8, 4, 2 and 1 lanes for the rest): a row of 20 is one 16-lane and one 4-lane
operation, with no loop and no overlap checks. LLVM lowers the vectors to what the
processor has (one AVX-512 register, two AVX2 ones, four NEON ones).

Every lane does what the scalar loop does to its channel, the same operations in
the same order (a product, then a sum; never fused into one FMA), so the results
are bit for bit those of the loops they replace (``tests/crf/test_simd.py``).
The splat, blur and slice with these rows, whole mean-field steps at 500x375 with 21
labels (medians of 61-101, alternated with the loops in one process): 22.0-22.5 ->
19.9-20.5 ms on 2 threads, 43.3-45.6 -> 39.0-41.1 ms on one; 1000x750: 91.5 -> 84.0 ms
(``bench/RESULTS.md`` (16)). The mean field's fused pass moves its energies between
points-first rows and label-major blocks as 16 x 16 tiles in vector registers
(:func:`transpose_tile`): 20.8-21.1 -> 20.3 ms a step, 40.8 -> 39.4 ms on one thread.
For the Potts and diagonal penalties it slices, derives the last label and adds each
kernel's message in one pass with the slice in registers (:func:`add_sliced_message`):
18.6-20.3 -> 18.0-19.5 ms a step. That one changes a rounding: the last label's slice is
the complement minus a sum of the others taken by halves (:func:`row_sum`), the same on
every processor, instead of LLVM's reassociated sum (max |dQ| 2e-6 after 10 updates).

Rows are given as ``(array, row)`` of a C-contiguous 2-D float32 array; the
functions read and write the first ``c`` channels of each row and check no
bounds (as the kernels' loops, which Numba compiles without bounds checks).
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F32 = ir.FloatType()
_WIDTHS = (8, 4, 2, 1)  # the chunks after the 16-lane ones: the binary digits of the rest


def _vector_type(lanes):
    return ir.VectorType(_F32, lanes) if lanes > 1 else _F32


def _splat(builder, scalar, lanes):
    """``scalar`` (float) in every lane of a vector."""
    if lanes == 1:
        return scalar
    vector = _vector_type(lanes)
    first = builder.insert_element(ir.Constant(vector, None), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, ir.Constant(vector, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _load(builder, row, offset, lanes):
    """``lanes`` floats from ``row + offset`` (any alignment)."""
    address = builder.bitcast(builder.gep(row, [offset]), _vector_type(lanes).as_pointer())
    return builder.load(address, align=4)


def _store(builder, value, row, offset, lanes):
    address = builder.bitcast(builder.gep(row, [offset]), _vector_type(lanes).as_pointer())
    builder.store(value, address, align=4)


def row_pointer(context, builder, array_type, array_value, row, row_type):
    """LLVM IR: a pointer to element 0 of ``array[row]`` (a C-contiguous 2-D array; no bounds check),
    for the intrinsics of :mod:`crf.simd` and :mod:`crf.prefetch`."""
    array = context.make_array(array_type)(context, builder, array_value)
    index = context.cast(builder, row, row_type, types.intp)
    zero = context.get_constant(types.intp, 0)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index, zero],
                                    wraparound=False, boundscheck=False)


def _over_channels(builder, count, chunk):
    """Call ``chunk(offset, lanes)`` over channels 0..count-1: 16 lanes at a time, then 8, 4, 2, 1."""
    count_type = count.type
    full = builder.udiv(count, ir.Constant(count_type, 16))
    with cgutils.for_range(builder, full) as loop:
        chunk(builder.mul(loop.index, ir.Constant(count_type, 16)), 16)
    offset = builder.mul(full, ir.Constant(count_type, 16))
    for lanes in _WIDTHS:
        present = builder.and_(count, ir.Constant(count_type, lanes))
        with builder.if_then(builder.icmp_unsigned("!=", present, ir.Constant(count_type, 0))):
            chunk(offset, lanes)
        offset = builder.add(offset, present)


def _is_matrix(array):
    return isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C" \
        and array.dtype == types.float32


def _weighted_terms(builder, sources, scales, offset, lanes, total):
    """``total + w[0] * row[0] + w[1] * row[1] + ...`` for one chunk, left to right (no ``total``:
    from the first product)."""
    for source, scale in zip(sources, scales):
        term = builder.fmul(_splat(builder, scale, lanes), _load(builder, source, offset, lanes))
        total = term if total is None else builder.fadd(total, term)
    return total


def _weighted_sum(accumulate, out, out_row, src, rows, weights, c):
    """The signature and codegen of :func:`weighted_sum` and :func:`add_weighted_sum` (None: not these types)."""
    if not (_is_matrix(out) and _is_matrix(src) and isinstance(rows, types.UniTuple)
            and isinstance(weights, types.UniTuple) and rows.count == weights.count
            and isinstance(rows.dtype, types.Integer) and weights.dtype == types.float32
            and isinstance(out_row, types.Integer) and isinstance(c, types.Integer)):
        return None
    n_rows = rows.count

    def codegen(context, builder, signature, args):
        out_type, row_type, src_type, rows_type, _, c_type = signature.args
        target = row_pointer(context, builder, out_type, args[0], args[1], row_type)
        sources = [row_pointer(context, builder, src_type, args[2], r, rows_type.dtype)
                   for r in cgutils.unpack_tuple(builder, args[3], n_rows)]
        scales = cgutils.unpack_tuple(builder, args[4], n_rows)
        count = context.cast(builder, args[5], c_type, types.intp)

        def chunk(offset, lanes):
            start = _load(builder, target, offset, lanes) if accumulate else None
            _store(builder, _weighted_terms(builder, sources, scales, offset, lanes, start), target, offset, lanes)

        _over_channels(builder, count, chunk)
        return context.get_dummy_value()

    return types.void(out, out_row, src, rows, weights, c), codegen


@intrinsic
def weighted_sum(typingctx, out, out_row, src, rows, weights, c):
    """``out[out_row, :c] = w[0] * src[rows[0], :c] + w[1] * src[rows[1], :c] + ...``

    Summed left to right, each product rounded before it is added, as the scalar loop
    ``out[i] = w0 * a[i] + w1 * b[i] + ...``. ``rows``: a tuple of K integers, ``weights``
    (w): a tuple of K float32; ``out`` and ``src``: (N, C) float32, C-contiguous.
    """
    return _weighted_sum(False, out, out_row, src, rows, weights, c)


@intrinsic
def add_weighted_sum(typingctx, out, out_row, src, rows, weights, c):
    """``out[out_row, :c] = out[out_row, :c] + w[0] * src[rows[0], :c] + ...``, left to right.

    A separate function, not a flag of :func:`weighted_sum`: the splat's first entries set a
    row and the others add to it, and a run-time flag cost a mean-field step 0.4-0.8 ms.
    """
    return _weighted_sum(True, out, out_row, src, rows, weights, c)


@intrinsic
def blur_row(typingctx, src, dst, v, a, b, c):
    """``dst[v, :c] = src[v, :c] + 0.5 (src[a, :c] + src[b, :c])``: one vertex of a blur pass.

    In that order: the neighbours' sum, halved, added to the vertex's own value.
    """
    if not (_is_matrix(src) and _is_matrix(dst) and all(isinstance(x, types.Integer) for x in (v, a, b, c))):
        return None

    def codegen(context, builder, signature, args):
        src_type, dst_type, v_type, a_type, b_type, c_type = signature.args
        own = row_pointer(context, builder, src_type, args[0], args[2], v_type)
        first = row_pointer(context, builder, src_type, args[0], args[3], a_type)
        second = row_pointer(context, builder, src_type, args[0], args[4], b_type)
        target = row_pointer(context, builder, dst_type, args[1], args[2], v_type)
        count = context.cast(builder, args[5], c_type, types.intp)

        def chunk(offset, lanes):
            pair = builder.fadd(_load(builder, first, offset, lanes), _load(builder, second, offset, lanes))
            halved = builder.fmul(_splat(builder, ir.Constant(_F32, 0.5), lanes), pair)
            _store(builder, builder.fadd(_load(builder, own, offset, lanes), halved), target, offset, lanes)

        _over_channels(builder, count, chunk)
        return context.get_dummy_value()

    return types.void(src, dst, v, a, b, c), codegen


def _transpose_stage(builder, rows, bit):
    """Swap bit ``bit`` of the row number with the same bit of the lane number in 16 vectors of 16."""
    lanes = range(16)
    low = ir.Constant(ir.VectorType(ir.IntType(32), 16), [j if not j & bit else 16 + j - bit for j in lanes])
    high = ir.Constant(ir.VectorType(ir.IntType(32), 16), [j + bit if not j & bit else 16 + j for j in lanes])
    out = list(rows)
    for i in range(16):
        if not i & bit:
            a, b = rows[i], rows[i | bit]
            out[i], out[i | bit] = builder.shuffle_vector(a, b, low), builder.shuffle_vector(a, b, high)
    return out


@intrinsic
def transpose_tile(typingctx, src, src_row, src_col, dst, dst_row, dst_col):
    """``dst[dst_row + j, dst_col + i] = src[src_row + i, src_col + j]`` for i, j < 16: a 16 x 16 tile.

    Sixteen 16-lane loads, four rounds of 16 lane shuffles (each swaps one bit of the row
    number with the same bit of the lane number), sixteen 16-lane stores, instead of 256
    scalar loads and stores. The values are moved, not computed: any bits go through.
    Both arrays: C-contiguous 2-D float32 holding the whole tile.
    """
    if not (_is_matrix(src) and _is_matrix(dst)
            and all(isinstance(x, types.Integer) for x in (src_row, src_col, dst_row, dst_col))):
        return None

    def codegen(context, builder, signature, args):
        src_type, src_row_type, src_col_type, dst_type, dst_row_type, dst_col_type = signature.args
        to_intp = lambda value, kind: context.cast(builder, value, kind, types.intp)  # noqa: E731
        src_col_index, dst_col_index = to_intp(args[2], src_col_type), to_intp(args[5], dst_col_type)
        rows = []
        for i in range(16):
            row = builder.add(to_intp(args[1], src_row_type), context.get_constant(types.intp, i))
            start = row_pointer(context, builder, src_type, args[0], row, types.intp)
            rows.append(_load(builder, start, src_col_index, 16))
        for bit in (1, 2, 4, 8):
            rows = _transpose_stage(builder, rows, bit)
        for j in range(16):
            row = builder.add(to_intp(args[4], dst_row_type), context.get_constant(types.intp, j))
            start = row_pointer(context, builder, dst_type, args[3], row, types.intp)
            _store(builder, rows[j], start, dst_col_index, 16)
        return context.get_dummy_value()

    return types.void(src, src_row, src_col, dst, dst_row, dst_col), codegen


def _lane_sum(builder, vector, lanes):
    """The sum of a vector's lanes, halves added to halves (a fixed order on every processor)."""
    while lanes > 1:
        half = lanes // 2
        picks = ir.VectorType(ir.IntType(32), half)
        low = builder.shuffle_vector(vector, vector, ir.Constant(picks, list(range(half))))
        high = builder.shuffle_vector(vector, vector, ir.Constant(picks, list(range(half, lanes))))
        vector, lanes = builder.fadd(low, high), half
        if lanes == 1:
            vector = builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))
    return vector


@intrinsic
def row_sum(typingctx, src, src_row, c):
    """``sum(src[src_row, :c])``, float32: each chunk's lanes summed by halves, the chunks (16
    lanes, then 8, 4, 2, 1) added in order; the order :func:`add_sliced_message` sums in."""
    if not (_is_matrix(src) and isinstance(src_row, types.Integer) and isinstance(c, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        src_type, src_row_type, c_type = signature.args
        source = row_pointer(context, builder, src_type, args[0], args[1], src_row_type)
        count = context.cast(builder, args[2], c_type, types.intp)
        total = cgutils.alloca_once_value(builder, ir.Constant(_F32, 0.0))

        def chunk(offset, lanes):
            part = _lane_sum(builder, _load(builder, source, offset, lanes), lanes)
            builder.store(builder.fadd(builder.load(total), part), total)

        _over_channels(builder, count, chunk)
        return builder.load(total)

    return types.float32(src, src_row, c), codegen


@intrinsic
def add_sliced_message(typingctx, energy, energy_row, lat, rows, weights, c, coefs, scale, complement):
    """One kernel's Potts or diagonal message for one point, from its slice, in registers.

    ``x = w[0] * lat[rows[0], :c] + w[1] * lat[rows[1], :c] + ...`` (the slice, summed as
    :func:`weighted_sum` sums), then ``energy[energy_row, :c] += (scale * coefs[0, :c]) * x``.
    Where ``energy``'s rows are longer than c (the lattice holds all labels but the last),
    label c's slice is ``complement - sum(x)``, summed as :func:`row_sum` sums, and gets the
    same update. ``coefs``: (1, L) float32. No slice is stored and read back: the values stay
    in registers from the lattice rows to the energies.
    """
    if not (_is_matrix(energy) and _is_matrix(lat) and _is_matrix(coefs) and isinstance(rows, types.UniTuple)
            and isinstance(weights, types.UniTuple) and rows.count == weights.count
            and isinstance(rows.dtype, types.Integer) and weights.dtype == types.float32
            and scale == types.float32 and complement == types.float32
            and isinstance(energy_row, types.Integer) and isinstance(c, types.Integer)):
        return None
    n_rows = rows.count

    def codegen(context, builder, signature, args):
        energy_type, energy_row_type, lat_type, rows_type, _, c_type, coefs_type, _, _ = signature.args
        target = row_pointer(context, builder, energy_type, args[0], args[1], energy_row_type)
        sources = [row_pointer(context, builder, lat_type, args[2], r, rows_type.dtype)
                   for r in cgutils.unpack_tuple(builder, args[3], n_rows)]
        scales = cgutils.unpack_tuple(builder, args[4], n_rows)
        count = context.cast(builder, args[5], c_type, types.intp)
        factors = row_pointer(context, builder, coefs_type, args[6], context.get_constant(types.intp, 0), types.intp)
        scale = args[7]
        total = cgutils.alloca_once_value(builder, ir.Constant(_F32, 0.0))

        def chunk(offset, lanes):
            sliced = _weighted_terms(builder, sources, scales, offset, lanes, None)
            factor = builder.fmul(_splat(builder, scale, lanes), _load(builder, factors, offset, lanes))
            updated = builder.fadd(_load(builder, target, offset, lanes), builder.fmul(factor, sliced))
            _store(builder, updated, target, offset, lanes)
            builder.store(builder.fadd(builder.load(total), _lane_sum(builder, sliced, lanes)), total)

        _over_channels(builder, count, chunk)
        energy_struct = context.make_array(energy_type)(context, builder, args[0])
        width = cgutils.unpack_tuple(builder, energy_struct.shape, 2)[1]
        with builder.if_then(builder.icmp_unsigned(">", width, count)):
            last = builder.fsub(args[8], builder.load(total))
            factor = builder.fmul(scale, _load(builder, factors, count, 1))
            updated = builder.fadd(_load(builder, target, count, 1), builder.fmul(factor, last))
            _store(builder, updated, target, count, 1)
        return context.get_dummy_value()

    return types.void(energy, energy_row, lat, rows, weights, c, coefs, scale, complement), codegen
