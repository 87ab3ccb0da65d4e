"""Schema-driven decoding and encoding of protobuf messages into plain Python values.

A message becomes a ``dict`` keyed by field name, holding only the fields
present in the data: a scalar as ``int``/``float``/``bool``/``str``, an enum as
its value's name (an unknown value stays an ``int``), a nested message as a
``dict``, a repeated field as a ``list``, and blob data as a read-only NumPy
array that views the input buffer (no copy when the data is packed, as Caffe
writes it). Fields the schema does not know are skipped after their bounds are
checked, as protobuf itself does.

The layer's type is read before its other fields, because DeepLab and BVLC gave
the same field numbers to different parameter messages (see :mod:`.schema`).
"""
import math

import numpy as np

from .errors import CaffeFormatError
from .schema import ENUM_NAMES, ENUMS, MESSAGES, SCALAR_WIRE, WIRE_FIXED32, WIRE_LEN, WIRE_VARINT
from .wire import (Encoder, iter_fields, packed_array, read_fixed32_float, read_fixed64_double,
                   read_packed_varints, to_signed, wire_name)

_ARRAY_DTYPE = {"float": "<f4", "double": "<f8"}
#: Repeated fields that Caffe declares ``[packed = true]``; the others are written unpacked.
_PACKED = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "diff"),
           ("BlobProto", "double_data"), ("BlobProto", "double_diff")}
_LAYER_MESSAGES = ("LayerParameter", "V1LayerParameter")


def _wire_of(kind):
    if kind in SCALAR_WIRE:
        return SCALAR_WIRE[kind]
    return WIRE_VARINT if kind in ENUMS else WIRE_LEN


def _convert_varint(kind, value):
    if kind == "int32":
        return to_signed(value, 32)
    if kind == "int64":
        return to_signed(value, 64)
    if kind == "uint32":
        return value & 0xFFFFFFFF
    if kind == "bool":
        return value != 0
    if kind in ENUMS:
        number = to_signed(value, 32)
        return ENUM_NAMES[kind].get(number, number)
    return value  # uint64


def _decode_string(buf, raw, where):
    try:
        return bytes(buf[raw.start:raw.end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(f"byte {raw.offset}: {where} is not valid UTF-8 text ({exc.reason})") from None


def _v1_type(value, raws, offset):
    """The V1 enum name; 39 is DECONVOLUTION when the layer has weights or a convolution_param."""
    number = to_signed(value, 32)
    if number not in ENUM_NAMES["V1LayerType"]:
        raise CaffeFormatError(f"byte {offset}: V1 layer type number {number} is unknown")
    if number == 39:
        has_conv = any(r.number in (6, 10) for r in raws)
        return "DECONVOLUTION" if has_conv else "IMAGE_SEG_DATA"
    return ENUM_NAMES["V1LayerType"].get(number, number)


def _layer_type(message, raws, buf):
    """Read the ``type`` field of a (V1)LayerParameter before anything else."""
    type_field = message.by_name["type"]
    layer_type = None
    for raw in raws:
        if raw.number != type_field.number:
            continue
        where = f"{message.name}.type"
        if raw.wire_type != _wire_of(type_field.kind):
            raise CaffeFormatError(f"byte {raw.offset}: {where} has wire type {wire_name(raw.wire_type)}; "
                                   f"expected {wire_name(_wire_of(type_field.kind))}")
        if message.name == "V1LayerParameter":
            layer_type = _v1_type(raw.value, raws, raw.offset)
        else:
            layer_type = _decode_string(buf, raw, where)
    return layer_type


def decode_message(buf, start, end, message_name):
    """Decode the message ``message_name`` stored in ``buf[start:end]`` into a dict.

    Parameters
    ----------
    buf : bytes-like (bytes, memoryview, mmap)
    start, end : int
        Byte range of the message.
    message_name : str
        A key of :data:`~nets.caffe.schema.MESSAGES`.

    Raises
    ------
    CaffeFormatError
        Truncated data, impossible lengths, wire types that contradict the
        schema, invalid UTF-8; the message names the byte offset.
    """
    message = MESSAGES[message_name]
    raws = list(iter_fields(buf, start, end))
    layer_type = None
    if message_name in _LAYER_MESSAGES:
        layer_type = _layer_type(message, raws, buf)
        if layer_type is None:
            raise CaffeFormatError(f"byte {start}: this {message_name} has no type field")
    out = {}
    for raw in raws:
        field = message.field_for(raw.number, layer_type)
        if field is None:
            continue
        where = f"{message.name}.{field.name} (field {raw.number})"
        if field.name == "type" and layer_type is not None:
            out["type"] = layer_type
            continue
        expected = _wire_of(field.kind)
        packed = (field.repeated and raw.wire_type == WIRE_LEN and expected != WIRE_LEN)
        if raw.wire_type != expected and not packed:
            raise CaffeFormatError(f"byte {raw.offset}: {where} has wire type {wire_name(raw.wire_type)}; "
                                   f"expected {wire_name(expected)}")
        if packed:
            values = _decode_packed(buf, raw, field)
        else:
            values = [_decode_one(buf, raw, field, where)]
        if field.repeated:
            out.setdefault(field.name, []).extend(values)
        else:
            out[field.name] = values[-1]
    for field in message.fields:
        if field.array and field.name in out:
            out[field.name] = _join_array(out[field.name], _ARRAY_DTYPE[field.kind])
    if message_name == "BlobProto":
        _check_blob_size(out, start)
    return out


def _check_blob_size(blob, start):
    """The values must fill the declared shape (Caffe refuses the blob otherwise)."""
    if "shape" in blob:
        shape = blob["shape"].get("dim", [])
    else:
        shape = [blob.get(k, 0) for k in ("num", "channels", "height", "width")
                 if any(key in blob for key in ("num", "channels", "height", "width"))]
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"byte {start}: blob shape {shape} has a negative dimension")
    count = math.prod(shape)
    data = blob.get("double_data") if len(blob.get("double_data", ())) else blob.get("data", ())
    if count != len(data):
        raise CaffeFormatError(f"byte {start}: blob shape {tuple(shape)} needs {count} values "
                               f"but the blob holds {len(data)}")


def _decode_packed(buf, raw, field):
    if field.array:
        return [packed_array(buf, raw.start, raw.end, _ARRAY_DTYPE[field.kind], raw.offset)]
    if field.kind in ("float", "double"):
        array = packed_array(buf, raw.start, raw.end, _ARRAY_DTYPE[field.kind], raw.offset)
        return [float(v) for v in array]
    return [_convert_varint(field.kind, v) for v in read_packed_varints(buf, raw.start, raw.end)]


def _decode_one(buf, raw, field, where):
    kind = field.kind
    if raw.wire_type == WIRE_VARINT:
        return _convert_varint(kind, raw.value)
    if kind == "float":
        value = read_fixed32_float(buf, raw.start)
        return np.float32(value) if field.array else value
    if kind == "double":
        value = read_fixed64_double(buf, raw.start)
        return np.float64(value) if field.array else value
    if kind == "string":
        return _decode_string(buf, raw, where)
    if kind == "bytes":
        return bytes(buf[raw.start:raw.end])
    return decode_message(buf, raw.start, raw.end, kind)


def _join_array(parts, dtype):
    """Blob data: one packed chunk stays a view; unpacked values or several chunks are joined."""
    if len(parts) == 1 and isinstance(parts[0], np.ndarray):
        return parts[0]
    pieces = [p if isinstance(p, np.ndarray) else np.array([p], dtype=dtype) for p in parts]
    return np.concatenate(pieces).astype(dtype, copy=False)


def encode_message(message_name, values, pack=None):
    """Encode a dict (as :func:`decode_message` returns it) into an :class:`~.wire.Encoder`.

    Parameters
    ----------
    message_name : str
    values : dict
    pack : bool or None
        None writes repeated numbers the way Caffe does (packed only where
        ``caffe.proto`` says ``[packed = true]``: blob data and shapes); True packs
        every repeated number, False writes every one unpacked.

    Fields whose binary number is unknown (``number is None`` in the schema)
    are not written.
    """
    message = MESSAGES[message_name]
    unknown = set(values) - set(message.by_name)
    if unknown:
        raise CaffeFormatError(f"{message_name} has no field {sorted(unknown)[0]!r}; "
                               f"expected one of {sorted(message.by_name)}")
    if message_name in _LAYER_MESSAGES:
        _check_typed_params(message, values)
    enc = Encoder()
    fields = sorted((message.by_name[name] for name in values
                     if message.by_name[name].number is not None), key=lambda f: f.number)
    for field in fields:
        value = values[field.name]
        if not field.repeated:
            _encode_one(enc, field, value, pack)
            continue
        if field.kind in SCALAR_WIRE and field.kind not in ("string", "bytes") or field.kind in ENUMS:
            packed = pack if pack is not None else (message_name, field.name) in _PACKED
            _encode_repeated_number(enc, field, value, packed)
        else:
            for item in value:
                _encode_one(enc, field, item, pack)
    return enc


def _check_typed_params(message, values):
    """A parameter whose number means something else for other layer types must match the type."""
    for name in values:
        field = message.by_name[name]
        if field.types is not None and values.get("type") not in field.types:
            raise CaffeFormatError(
                f"layer {values.get('name', '')!r}: {name} (field {field.number}) belongs to layers of type "
                f"{sorted(field.types)}, not {values.get('type')!r}; a reader would decode it as another "
                f"message")


def _enum_number(field, value):
    if isinstance(value, str):
        try:
            return ENUMS[field.kind][value]
        except KeyError:
            raise CaffeFormatError(f"{field.name}: {value!r} is not a value of enum {field.kind}; "
                                   f"expected one of {sorted(ENUMS[field.kind])}") from None
    return int(value)


def _encode_one(enc, field, value, pack):
    kind = field.kind
    if kind == "float":
        enc.float32(field.number, value)
    elif kind == "double":
        enc.float64(field.number, value)
    elif kind == "string":
        enc.length_delimited(field.number, str(value).encode("utf-8"))
    elif kind == "bytes":
        enc.length_delimited(field.number, value)
    elif kind in ENUMS:
        enc.varint(field.number, _enum_number(field, value))
    elif kind in SCALAR_WIRE:
        enc.varint(field.number, int(value))
    else:
        enc.message(field.number, encode_message(kind, value, pack))


def _encode_repeated_number(enc, field, values, packed):
    if field.kind in _ARRAY_DTYPE:
        dtype = _ARRAY_DTYPE[field.kind]
        array = np.asarray(values, dtype=dtype).reshape(-1)
        if packed:
            enc.packed_array(field.number, array, dtype)
            return
        tag = Encoder.varint_bytes((field.number << 3) | (WIRE_FIXED32 if dtype == "<f4" else 1))
        records = np.empty(array.size, dtype=[("tag", f"V{len(tag)}"), ("value", dtype)])
        records["tag"] = np.frombuffer(tag, dtype=f"V{len(tag)}")[0]
        records["value"] = array
        enc.raw(records.tobytes())
        return
    numbers = [_enum_number(field, v) if field.kind in ENUMS else int(v) for v in values]
    if packed:
        enc.packed_varints(field.number, numbers)
    else:
        for number in numbers:
            enc.varint(field.number, number)

