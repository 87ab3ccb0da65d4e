"""A software prefetch for Numba CPU kernels: ask for an array row before it is read.

The lattice's splat, blur and slice read rows of arrays (lattice values, Q) in an
order given by an index (CSR entries, blur neighbours, a point's simplex corners),
which the hardware prefetcher cannot guess. Each such row is a cache miss to the
last-level cache or memory, and the kernels wait for them one after another.
Asking for the rows of an iteration a few dozen iterations ahead overlaps those
waits: measured at 500x375 (d = 5, 180k vertices, 21 labels, 2 threads), the six
blur passes went from 6.4 ms to 3.9 ms.

``prefetch_row(a, i)`` (and ``prefetch_item`` for one element of a 1-D array) is
only a hint (LLVM's ``llvm.prefetch``: read, keep in every cache level): it never
faults, even past the array's end, and changes no result.

Numba's on-disk cache (``cache=True``) checks only the source file of the cached
kernel itself: after editing this module (or ``crf/simd.py``, whose vector rows
the filter kernels inline, ``crf/lattice_cpu.py``, whose ``slice_point`` the
mean-field kernel inlines, or ``crf/packed_keys.py``, whose ``table_size`` the
general hash calls), clear ``crf/__pycache__`` (an installed upgrade rewrites
them all).
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from crf.simd import row_pointer

_LINE = 64  # bytes in a cache line (x86-64 and most ARM64 cores)


def _prefetch(builder, address):
    """Emit a prefetch of the cache line holding ``address`` (an i8*): read, kept in every level."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    # llvmlite names the overloaded intrinsic for its pointer type (LLVM remangles it for opaque pointers)
    fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
    # (address, 0 = read, 3 = keep in every cache level, 1 = data cache)
    builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


@intrinsic
def _prefetch_address(typingctx, array, row, byte):
    """Prefetch the cache line holding byte ``byte`` of row ``row`` of a C-contiguous 1-D or 2-D
    array (a row of a 1-D array is one element)."""
    if not (isinstance(array, types.Array) and array.ndim in (1, 2) and array.layout == "C"):
        return None
    sig = types.void(array, row, byte)

    def codegen(context, builder, signature, args):
        array_type, row_type, byte_type = signature.args
        ary = context.make_array(array_type)(context, builder, args[0])
        row_index = context.cast(builder, args[1], row_type, types.intp)
        offset = context.cast(builder, args[2], byte_type, types.intp)
        zero = context.get_constant(types.intp, 0)
        # No bounds check: a prefetch of any address is harmless.
        indices = [row_index, zero][:array_type.ndim]
        start = cgutils.get_item_pointer(context, builder, array_type, ary, indices,
                                         wraparound=False, boundscheck=False)
        i8p = ir.IntType(8).as_pointer()
        _prefetch(builder, builder.gep(builder.bitcast(start, i8p), [offset]))
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def prefetch_item(array, index):
    """Prefetch the cache line of ``array[index]`` (1-D, C-contiguous); a hint only."""
    _prefetch_address(array, index, 0)


@intrinsic
def _prefetch_row_lines(typingctx, array, row):
    """Prefetch the lines of ``array[row, :]``'s first and last bytes, and for a row longer than
    two lines those of its bytes 64, 128, ... too (a C-contiguous 2-D array)."""
    if not (isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C"):
        return None
    sig = types.void(array, row)

    def codegen(context, builder, signature, args):
        array_type, row_type = signature.args
        first = builder.bitcast(row_pointer(context, builder, array_type, args[0], args[1], row_type),
                                ir.IntType(8).as_pointer())
        columns = cgutils.unpack_tuple(builder, context.make_array(array_type)(context, builder, args[0]).shape, 2)[1]
        item_bytes = context.get_abi_sizeof(context.get_data_type(array_type.dtype))
        row_bytes = builder.mul(columns, context.get_constant(types.intp, item_bytes))
        one, line = context.get_constant(types.intp, 1), context.get_constant(types.intp, _LINE)
        last = builder.sub(row_bytes, one)
        _prefetch(builder, first)
        _prefetch(builder, builder.gep(first, [last]))
        # Written in IR, not as a Numba loop: even never entered, a range() loop here cost a
        # mean-field step 0.5 ms at 500x375.
        with builder.if_then(builder.icmp_signed(">", row_bytes, builder.add(line, line)), likely=False):
            with cgutils.for_range(builder, builder.sdiv(last, line)) as loop:
                _prefetch(builder, builder.gep(first, [builder.mul(builder.add(loop.index, one), line)]))
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def prefetch_row(array, row):
    """Prefetch the cache lines of ``array[row, :]`` (2-D, C-contiguous); a hint only.

    Those of the row's first and last bytes, and of every 64th byte for rows over 128 bytes:
    every line of a row of up to 64 bytes, of a row of up to 128 bytes that spans two lines
    (a row of 80 bytes, 20 float32 labels, always does where the array starts on 16 bytes, as
    NumPy's arrays do; one of 84 bytes, 21 labels, spans three for a quarter of the rows,
    whose middle line then goes unasked), and of a longer one. Asking for bytes 0, 64 and 79
    of every 80-byte row, as before, gave the memory system one request more per row than
    the row has lines: a mean-field step at 500x375 took 0.5-0.9 ms longer (18 ms, 2 threads).
    """
    _prefetch_row_lines(array, row)
