"""The protobuf wire format: known encodings, the encoder as the reader's inverse, bounds."""
import struct

import numpy as np
import pytest

from nets.caffe import CaffeFormatError
from nets.caffe.codec import decode_message, encode_message
from nets.caffe.wire import Encoder, iter_fields, packed_array, read_varint, to_signed

# Encodings given in the protobuf documentation ("Encoding": 1 -> 01, 150 -> 96 01) and
# by the definition (7 bits per byte, low group first, high bit = continuation).
KNOWN_VARINTS = [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (150, b"\x96\x01"),
                 (300, b"\xac\x02"), (2**63, b"\x80" * 9 + b"\x01"), (2**64 - 1, b"\xff" * 9 + b"\x01")]


@pytest.mark.parametrize("value, encoded", KNOWN_VARINTS)
def test_varint_known_encodings(value, encoded):
    assert Encoder.varint_bytes(value) == encoded
    assert read_varint(encoded, 0, len(encoded)) == (value, len(encoded))


def test_negative_int32_is_ten_bytes_twos_complement():
    encoded = Encoder.varint_bytes(-1)
    assert encoded == b"\xff" * 9 + b"\x01"
    value, _ = read_varint(encoded, 0, len(encoded))
    assert to_signed(value, 32) == -1 and to_signed(value, 64) == -1


def test_varint_longer_than_ten_bytes_is_refused():
    data = b"\xff" * 10 + b"\x01"
    with pytest.raises(CaffeFormatError, match=r"byte 0: .*at most 10 bytes"):
        read_varint(data, 0, len(data))
    with pytest.raises(CaffeFormatError, match="larger than 64 bits"):
        read_varint(b"\xff" * 9 + b"\x02", 0, 10)


def test_truncated_varint_names_offset():
    with pytest.raises(CaffeFormatError, match=r"byte 3: expected a varint"):
        read_varint(b"abc\x80\x80", 3, 5)


def test_fields_of_a_hand_written_message():
    # field 1 varint 150; field 2 string "hi"; field 3 fixed32 1.5; field 4 fixed64 -2.0
    data = (b"\x08\x96\x01" + b"\x12\x02hi" + b"\x1d" + struct.pack("<f", 1.5)
            + b"\x21" + struct.pack("<d", -2.0))
    fields = list(iter_fields(data, 0, len(data)))
    assert [(f.number, f.wire_type) for f in fields] == [(1, 0), (2, 2), (3, 5), (4, 1)]
    assert fields[0].value == 150
    assert data[fields[1].start:fields[1].end] == b"hi"
    assert [f.offset for f in fields] == [0, 3, 7, 12]


@pytest.mark.parametrize("data, message", [
    (b"\x12\x05abc", r"byte 0: field 2 \(length-delimited\) needs 5 bytes from byte 2"),
    (b"\x1d\x00\x00", r"byte 0: field 3 \(fixed32\) needs 4 bytes"),
    (b"\x21\x00", r"byte 0: field 4 \(fixed64\) needs 8 bytes"),
    (b"\x0b", r"byte 0: field 1 has wire type 3"),
    (b"\x00\x01", r"byte 0: expected a field tag, found field number 0"),
])
def test_bounds_and_wire_types(data, message):
    with pytest.raises(CaffeFormatError, match=message):
        list(iter_fields(data, 0, len(data)))


def test_length_is_checked_against_the_enclosing_message_not_the_file():
    inner = b"\x0a\x10" + b"x" * 16   # claims 16 bytes: fine in the file ...
    with pytest.raises(CaffeFormatError, match="ends at byte 10"):
        list(iter_fields(inner, 0, 10))   # ... but not inside a message of 10 bytes


def test_huge_length_is_refused_before_allocating():
    data = b"\x0a" + Encoder.varint_bytes(10**15) + b"abc"
    with pytest.raises(CaffeFormatError, match="needs 1000000000000000 bytes"):
        list(iter_fields(data, 0, len(data)))


def test_packed_array_is_a_view_without_copy():
    values = np.arange(6, dtype="<f4") * 0.5
    data = bytes(3) + values.tobytes()
    array = packed_array(data, 3, 3 + 24, "<f4", 0)
    np.testing.assert_array_equal(array, values)
    assert not array.flags.owndata and not array.flags.writeable
    with pytest.raises(CaffeFormatError, match="cannot be 23 bytes long"):
        packed_array(data, 3, 26, "<f4", 0)


def test_encoder_packed_and_unpacked_match_the_definition():
    enc = Encoder()
    enc.packed_varints(4, [3, 270])
    # protobuf docs: "22 03 03 8e 02" for a packed repeated field 4 holding 3, 270
    assert enc.to_bytes() == bytes.fromhex("2203038e02")
    blob = {"shape": {"dim": [2, 3]}, "data": np.arange(6, dtype="<f4")}
    unpacked = encode_message("BlobProto", blob, pack=False).to_bytes()
    packed = encode_message("BlobProto", blob, pack=True).to_bytes()
    # unpacked: one tag byte (field 5, fixed32: 0x2d) + 4 bytes per value
    assert unpacked.count(b"\x2d") >= 6 and len(unpacked) > len(packed)
    for data in (packed, unpacked):
        decoded = decode_message(data, 0, len(data), "BlobProto")
        assert decoded["shape"] == {"dim": [2, 3]}
        np.testing.assert_array_equal(decoded["data"], blob["data"])


def test_message_round_trip_of_every_scalar_kind():
    values = {"num_output": 64, "bias_term": False, "pad": [1, 2], "kernel_size": [3],
              "dilation": [12], "weight_filler": {"type": "gaussian", "std": 0.5, "sparse": -3},
              "engine": "CAFFE", "axis": -1}
    for pack in (None, True, False):
        data = encode_message("ConvolutionParameter", values, pack).to_bytes()
        assert decode_message(data, 0, len(data), "ConvolutionParameter") == values


def test_wrong_wire_type_for_a_known_field():
    data = b"\x08\x05"  # NetParameter.name (a string) written as a varint
    with pytest.raises(CaffeFormatError, match=r"byte 0: NetParameter.name \(field 1\) has wire type varint; "
                                               r"expected length-delimited"):
        decode_message(data, 0, len(data), "NetParameter")


def test_invalid_utf8_string():
    data = b"\x0a\x02\xff\xfe"
    with pytest.raises(CaffeFormatError, match="byte 0: .*not valid UTF-8"):
        decode_message(data, 0, len(data), "NetParameter")


def test_unknown_fields_are_skipped_but_bounds_checked():
    data = b"\xf8\x07\x01" + b"\x0a\x01N"   # field 127 varint (unknown), then name "N"
    assert decode_message(data, 0, len(data), "NetParameter") == {"name": "N"}
    with pytest.raises(CaffeFormatError):
        decode_message(b"\xfa\x07\x09abc", 0, 6, "NetParameter")
