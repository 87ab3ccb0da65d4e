"""The protobuf wire format, by hand: a bounds-checked field reader and its inverse.

A protobuf message is a sequence of fields. Each field starts with a *tag*, the
varint ``(number << 3) | wire_type``, followed by its payload:

=========  ================  ==============================================
wire type  name              payload
=========  ================  ==============================================
0          varint            7 bits per byte, low group first; the high bit
                             says "more bytes follow"; at most 10 bytes
1          fixed64           8 bytes, little-endian (double)
2          length-delimited  a varint length, then that many bytes (strings,
                             nested messages, *packed* repeated numbers)
5          fixed32           4 bytes, little-endian (float)
=========  ================  ==============================================

A repeated numeric field is written either *packed* (one length-delimited
field holding the values back to back) or *unpacked* (one tagged field per
value); a reader must accept both.

Every read here checks its bounds against the end of the enclosing message, so
a truncated or corrupt file raises :class:`~nets.caffe.errors.CaffeFormatError`
naming the byte offset and what was expected, never ``IndexError`` or
``struct.error``, and a length larger than the file is refused before anything
is allocated.

References
----------
Protocol Buffers, "Encoding" (protobuf.dev/programming-guides/encoding).
"""
import struct

import numpy as np

from .errors import CaffeFormatError
from .schema import WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT

MAX_VARINT_BYTES = 10
_WIRE_NAMES = {WIRE_VARINT: "varint", WIRE_FIXED64: "fixed64", WIRE_LEN: "length-delimited",
               WIRE_FIXED32: "fixed32"}
_U64 = (1 << 64) - 1


def wire_name(wire_type):
    """A readable name for a wire type number."""
    return _WIRE_NAMES.get(wire_type, f"invalid wire type {wire_type}")


def read_varint(buf, pos, end):
    """Read one varint starting at ``pos``; return ``(value, next_pos)``.

    Parameters
    ----------
    buf : bytes-like indexable as ints (bytes, memoryview, mmap)
    pos, end : int
        Start of the varint and end of the enclosing message (exclusive).

    The value is the unsigned 64-bit integer; :func:`to_signed` turns it into
    an int32/int64 when the field is signed.
    """
    start = pos
    result = 0
    for i in range(MAX_VARINT_BYTES):
        if pos >= end:
            raise CaffeFormatError(
                f"byte {start}: expected a varint, but the data ends at byte {end} after {i} byte(s)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if i == MAX_VARINT_BYTES - 1 and byte > 1:
                raise CaffeFormatError(f"byte {start}: varint larger than 64 bits")
            return result, pos
    raise CaffeFormatError(f"byte {start}: expected a varint of at most {MAX_VARINT_BYTES} bytes")


def to_signed(value, bits=64):
    """Two's complement reading of an unsigned varint (int32 and int64 fields)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class RawField:
    """One field as read from the wire.

    Attributes
    ----------
    number, wire_type : int
    offset : int
        Byte offset of the field's tag (for error messages).
    start, end : int
        The payload's byte range. For a varint, ``value`` holds the number.
    value : int or None
        The varint's value (wire type 0); None otherwise.
    """
    __slots__ = ("number", "wire_type", "offset", "start", "end", "value")

    def __init__(self, number, wire_type, offset, start, end, value=None):
        self.number, self.wire_type, self.offset = number, wire_type, offset
        self.start, self.end, self.value = start, end, value


def iter_fields(buf, start, end):
    """Yield every :class:`RawField` of the message occupying ``buf[start:end]``."""
    pos = start
    while pos < end:
        offset = pos
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0 or number > 536870911:
            raise CaffeFormatError(f"byte {offset}: expected a field tag, found field number {number}")
        if wire_type == WIRE_VARINT:
            value, next_pos = read_varint(buf, pos, end)
            yield RawField(number, wire_type, offset, pos, next_pos, value)
            pos = next_pos
            continue
        if wire_type == WIRE_LEN:
            length, pos = read_varint(buf, pos, end)
            size = length
        elif wire_type == WIRE_FIXED32:
            size = 4
        elif wire_type == WIRE_FIXED64:
            size = 8
        else:
            raise CaffeFormatError(
                f"byte {offset}: field {number} has wire type {wire_type}; expected 0, 1, 2 or 5 "
                f"(groups and types 6-7 do not occur in Caffe files)")
        if size > end - pos:
            raise CaffeFormatError(
                f"byte {offset}: field {number} ({wire_name(wire_type)}) needs {size} bytes from byte "
                f"{pos}, but the enclosing message ends at byte {end}")
        yield RawField(number, wire_type, offset, pos, pos + size)
        pos += size


def read_fixed32_float(buf, pos):
    """The float32 at ``pos`` (bounds already checked by :func:`iter_fields`)."""
    return struct.unpack_from("<f", buf, pos)[0]


def read_fixed64_double(buf, pos):
    """The float64 at ``pos`` (bounds already checked by :func:`iter_fields`)."""
    return struct.unpack_from("<d", buf, pos)[0]


def read_packed_varints(buf, start, end):
    """All varints back to back in ``buf[start:end]`` (a packed repeated field)."""
    values = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end)
        values.append(value)
    return values


def packed_array(buf, start, end, dtype, offset):
    """A packed float/double field as a read-only NumPy view of ``buf`` (no copy).

    Parameters
    ----------
    dtype : "<f4" or "<f8"
    offset : int
        Offset of the field's tag, for the error message.

    Returns
    -------
    ndarray of shape (n,), little-endian float32 or float64, sharing memory with ``buf``.
    """
    itemsize = np.dtype(dtype).itemsize
    if (end - start) % itemsize:
        raise CaffeFormatError(
            f"byte {offset}: a packed array of {itemsize}-byte numbers cannot be {end - start} bytes long")
    return np.frombuffer(buf, dtype=dtype, count=(end - start) // itemsize, offset=start)


class Encoder:
    """Builds a message as a list of byte chunks (the inverse of the reader).

    Large arrays are appended as memoryviews of the arrays themselves, so a
    500 MB set of weights is not copied into one big buffer before it is
    written: :meth:`write_to` streams the chunks.
    """

    def __init__(self):
        self.chunks = []
        self.size = 0

    def raw(self, chunk):
        """Append already-encoded bytes (or a byte memoryview)."""
        self.chunks.append(chunk)
        self.size += len(chunk) if not isinstance(chunk, memoryview) else chunk.nbytes

    @staticmethod
    def varint_bytes(value):
        """The varint encoding of ``value``; negative numbers as 64-bit two's complement."""
        value &= _U64
        out = bytearray()
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    def tag(self, number, wire_type):
        self.raw(self.varint_bytes((number << 3) | wire_type))

    def varint(self, number, value):
        """A varint field (ints, bools and enums)."""
        self.tag(number, WIRE_VARINT)
        self.raw(self.varint_bytes(int(value)))

    def float32(self, number, value):
        self.tag(number, WIRE_FIXED32)
        self.raw(struct.pack("<f", value))

    def float64(self, number, value):
        self.tag(number, WIRE_FIXED64)
        self.raw(struct.pack("<d", value))

    def length_delimited(self, number, data):
        """A string, bytes or pre-encoded payload."""
        self.tag(number, WIRE_LEN)
        self.raw(self.varint_bytes(len(data)))
        self.raw(bytes(data))

    def message(self, number, sub):
        """A nested message from another :class:`Encoder` (its chunks are shared, not copied)."""
        self.tag(number, WIRE_LEN)
        self.raw(self.varint_bytes(sub.size))
        self.chunks.extend(sub.chunks)
        self.size += sub.size

    def packed_varints(self, number, values):
        payload = b"".join(self.varint_bytes(int(v)) for v in values)
        self.length_delimited(number, payload)

    def packed_array(self, number, array, dtype):
        """A packed float (``"<f4"``) or double (``"<f8"``) array; C-order flattened, no copy if possible."""
        array = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
        self.tag(number, WIRE_LEN)
        self.raw(self.varint_bytes(array.nbytes))
        self.raw(memoryview(array).cast("B"))

    def to_bytes(self):
        return b"".join(bytes(c) if isinstance(c, memoryview) else c for c in self.chunks)

    def write_to(self, stream):
        """Write every chunk to a binary stream."""
        for chunk in self.chunks:
            stream.write(chunk)
