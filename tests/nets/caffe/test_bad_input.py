"""Corrupt weight files: always CaffeFormatError (a ValueError) naming the byte offset, fast."""
import pathlib
import re

import numpy as np
import pytest

from nets.caffe import CaffeFormatError, LayerSpec, NetSpec, decode_caffemodel, encode_caffemodel, read_caffemodel

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "caffe-real"
LENET_V1 = DATA / "lenet_v1" / "lenet_iter_10000.caffemodel"
LENET_NEW = DATA / "lenet_new" / "lenet_iter_10000.caffemodel"
OFFSET = re.compile(r"byte \d+")


def _top_level_boundaries(data):
    """Ends of the top-level fields, found with a minimal walker written for this test."""
    ends, pos = set(), 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            pos += length
        else:
            pos += {1: 8, 5: 4}[wire_type]
        ends.add(pos)
    return ends


def _varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _check_truncated(data, size, full_names, boundaries):
    """A cut inside a field must raise; a cut between top-level fields is a shorter, valid net."""
    try:
        spec = decode_caffemodel(memoryview(data)[:size])
    except CaffeFormatError as exc:
        assert OFFSET.search(str(exc)), str(exc)
        return "error"
    assert size in boundaries, f"cut at byte {size} inside a field was accepted"
    names = [l.name for l in spec.layers]
    assert names == full_names[:len(names)]
    return "prefix"


@pytest.mark.parametrize("path", [LENET_V1, LENET_NEW])
def test_truncation_at_every_byte_of_a_prefix_and_a_sample(path):
    data = path.read_bytes()
    full_names = [l.name for l in decode_caffemodel(data).layers]
    boundaries = _top_level_boundaries(data)
    rng = np.random.default_rng(7)
    sizes = list(range(0, 3000)) + sorted(rng.choice(len(data), 400, replace=False).tolist())
    sizes += [len(data) - k for k in range(1, 200)]
    outcomes = [_check_truncated(data, size, full_names, boundaries) for size in sizes]
    assert outcomes.count("error") > 0.99 * len(outcomes)


def test_truncated_file_on_disk_names_file_and_offset(tmp_path):
    data = LENET_NEW.read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CaffeFormatError, match=r"cut.caffemodel: byte \d+: field \d+ \(length-delimited\) needs"):
        read_caffemodel(path)
    path.write_bytes(b"")
    with pytest.raises(CaffeFormatError, match="byte 0: the file is empty"):
        read_caffemodel(path)


def _tiny_net_bytes():
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    spec = NetSpec("t", [LayerSpec("ip", "InnerProduct", ["x"], ["y"],
                                   {"inner_product_param": {"num_output": 2}}, [weight])])
    return encode_caffemodel(spec).to_bytes()


def test_length_field_larger_than_the_file():
    data = bytearray(LENET_NEW.read_bytes())
    # the first top-level field after the name is a layer (field 100): give it a huge length
    name_end = 2 + data[1]
    assert data[name_end:name_end + 2] == b"\xa2\x06"
    huge = b"\xff\xff\xff\xff\xff\xff\x7f"   # 2**49 - 1, about 560 TB
    _, after = _varint(data, name_end + 2)
    corrupt = bytes(data[:name_end + 2]) + huge + bytes(data[after:])
    with pytest.raises(CaffeFormatError, match=rf"byte {name_end}: field 100 \(length-delimited\) needs "
                                               r"562949953421311 bytes"):
        decode_caffemodel(corrupt)


def test_blob_length_larger_than_its_layer():
    data = _tiny_net_bytes()
    floats = np.arange(6, dtype=np.float32).tobytes()
    at = data.index(floats) - 1          # the length byte of the packed data (24)
    corrupt = data[:at] + bytes([120]) + data[at + 1:]
    with pytest.raises(CaffeFormatError, match=r"byte \d+: field 5 \(length-delimited\) needs 120 bytes"):
        decode_caffemodel(corrupt)


def test_blob_shape_and_data_disagree():
    data = _tiny_net_bytes()
    corrupt = data.replace(b"\x0a\x02\x02\x03", b"\x0a\x02\x02\x04")   # BlobShape dims 2x3 -> 2x4
    with pytest.raises(CaffeFormatError, match=r"byte \d+: blob shape \(2, 4\) needs 8 values but the blob holds 6"):
        decode_caffemodel(corrupt)


@pytest.mark.parametrize("corrupt, message", [
    (b"\x0a\x01N\xa0\x06\x01", r"byte 3: NetParameter.layer \(field 100\) has wire type varint"),
    (b"\x0a\x01N\x12\x02\x2a\x00", r"byte 5: V1LayerParameter.type \(?.*wire type length-delimited"),
    (b"\x0b\x00", r"byte 0: field 1 has wire type 3"),
    (b"\x0f", r"byte 0: field 1 has wire type 7"),
    (b"\x0a\x01N\xa2\x06\x02\x12\x01",
     r"byte 6: field 2 \(length-delimited\) needs 1 bytes from byte 8, but the enclosing message ends at byte 8"),
    (b"\x0a\x01N", r"byte 3: the data ends without a layer"),
])
def test_wrong_wire_types_and_structure(corrupt, message):
    with pytest.raises(CaffeFormatError, match=message):
        decode_caffemodel(corrupt)


def test_layer_without_type_and_unknown_v1_type():
    with pytest.raises(CaffeFormatError, match=r"byte 3: this LayerParameter has no type field"):
        decode_caffemodel(b"\xa2\x06\x03\x0a\x01x")
    with pytest.raises(CaffeFormatError, match=r"byte 5: V1 layer type number 99 is unknown"):
        decode_caffemodel(b"\x12\x05\x22\x01x\x28\x63")


def test_random_bytes_are_refused():
    rng = np.random.default_rng(11)
    for _ in range(300):
        data = rng.integers(0, 256, size=int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        with pytest.raises(CaffeFormatError, match=r"byte"):
            decode_caffemodel(data)


def _corrupt_never_escapes(data):
    try:
        decode_caffemodel(data)
    except CaffeFormatError as exc:
        assert OFFSET.search(str(exc)), str(exc)
        return False
    return True


def test_random_corruption_of_a_real_file_never_escapes_as_another_error():
    data = LENET_V1.read_bytes()
    # corrupt the structure (the header and first layers, the last layers), not the float data
    positions = np.r_[0:2500, len(data) - 2000:len(data)]
    rng = np.random.default_rng(12)
    accepted = 0
    for _ in range(150):
        corrupt = bytearray(data)
        for at in rng.choice(positions, size=2):
            corrupt[at] = int(rng.integers(0, 256))
        accepted += _corrupt_never_escapes(bytes(corrupt))
    assert accepted < 150


def test_truncated_inner_messages_with_consistent_outer_lengths():
    """Cut inside a layer but fix the layer's length, so that the inner decoders see the cut."""
    data = LENET_NEW.read_bytes()
    name_end = 2 + data[1]
    first_len, body_start = _varint(data, name_end + 2)
    second_tag = body_start + first_len           # the second layer (conv1, with blobs)
    length, start = _varint(data, second_tag + 2)
    body = data[start:start + length]
    errors = 0
    for cut in range(0, 400):
        inner = body[:cut]
        wrapped = data[:second_tag] + b"\xa2\x06" + _varint_bytes(len(inner)) + inner
        errors += not _corrupt_never_escapes(wrapped)
    assert errors > 300


def _varint_bytes(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
