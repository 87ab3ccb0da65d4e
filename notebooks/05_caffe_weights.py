# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Caffe weights without Caffe
#
# **Why.** DeepLab v1 and v2 were released as Caffe files: a **prototxt**, the network as text, and a
# **caffemodel**, the learned numbers in binary. The binary file is a *protocol buffer*, a
# `NetParameter` message as defined in Caffe's `caffe.proto`. This project uses neither Caffe nor the
# `protobuf` package. Its reader (`nets.caffe`) decodes the bytes by hand, and this notebook does the
# same in small steps, so that nothing about the file stays magic:
#
# 1. bytes → fields: the protobuf wire format, decoded by hand on a real file;
# 2. fields → layers → blobs: where the weights sit and how they become NumPy arrays;
# 3. the two dialects of Caffe files, and the field numbers DeepLab gave other meanings;
# 4. the text format of the network (prototxt) and DeepLab's `${...}` templates;
# 5. conversion to a plain `.npz`;
# 6. a real Caffe model (LeNet) classifying ten handwritten digits through `nets.Net`;
# 7. BatchNorm's three blobs and Scale, and folding both into the convolution before them;
# 8. DeepLab-LargeFOV drawn from its prototxt, with every size inferred for a 513x513 input.
#
# **The real files.** The official DeepLab weights (80 to 530 MB each) are not used here. The bytes
# come from two LeNet models for MNIST digits that real Caffe wrote, one in each dialect (Caffe's
# example, BSD 2-Clause; provenance and md5 in `tests/data/caffe-real/README.md`). They are 1.7 MB
# each and are test data of the repository, not package data. The notebook therefore reads them from
# the repository checkout (beside this `notebooks/` folder). A reader elsewhere points the
# environment variable `DEEPLAB_CAFFE_REAL` to a folder with the same layout.

# %%
import mmap
import os
import re
import struct
import tempfile
import warnings
from importlib.resources import files
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from PIL import Image

import atrous
import nets
from nets.caffe import (decode_caffemodel, format_prototxt, parse_prototxt, read_caffemodel,
                        read_prototxt, upgrade_prototxt)
from nets.caffe import wire
from nets.layers import batch_norm, batchnorm_statistics, fold_batchnorm_scale, scale

plt.rcParams.update({"figure.dpi": 72, "axes.titlesize": 10})


def find_caffe_real():
    """The folder of real Caffe files: $DEEPLAB_CAFFE_REAL, else tests/data/caffe-real of the checkout
    (found beside the notebooks folder, or beside an editable install)."""
    candidates = [Path.cwd().parent / "tests" / "data" / "caffe-real",
                  Path(nets.__file__).resolve().parents[1] / "tests" / "data" / "caffe-real"]
    if os.environ.get("DEEPLAB_CAFFE_REAL"):
        candidates.insert(0, Path(os.environ["DEEPLAB_CAFFE_REAL"]))
    for folder in candidates:
        if (folder / "lenet_new" / "lenet_iter_10000.caffemodel").is_file():
            return folder
    raise FileNotFoundError(f"the real LeNet files were not found in {[str(c) for c in candidates]}; "
                            f"set DEEPLAB_CAFFE_REAL to a copy of the repository's tests/data/caffe-real")


REAL = find_caffe_real()
NEW_MODEL = REAL / "lenet_new" / "lenet_iter_10000.caffemodel"  # new dialect (Caffe after 2015)
V1_MODEL = REAL / "lenet_v1" / "lenet_iter_10000.caffemodel"    # V1 dialect (Caffe 2014)
PROTOTXT = files("nets") / "data" / "prototxt"                  # DeepLab's nets: package data
WORK = tempfile.TemporaryDirectory(prefix="deeplab05_")          # the converted .npz files go here
for path in (NEW_MODEL, V1_MODEL):
    print(f"{path.relative_to(REAL)}: {path.stat().st_size:,} bytes")

# %% [markdown]
# ## 1 · Bytes → fields: the protobuf wire format
#
# A protobuf message is nothing but a sequence of **fields**. Each field starts with a **tag**, the
# number `(field_number << 3) | wire_type`, followed by its payload. Which field number means what
# (1 = `name`, 100 = `layer`, ...) is written in `caffe.proto`, not in the file. The wire type says
# only how to find the end of the payload:
#
# | wire type | payload |
# |---|---|
# | 0 varint | an integer, 7 bits per byte, low group first; the top bit of a byte says "more bytes follow" |
# | 1 fixed64 | 8 bytes, little-endian (a double) |
# | 2 length-delimited | a varint length, then that many bytes: a string, a nested message, or numbers packed back to back |
# | 5 fixed32 | 4 bytes, little-endian (a float) |
#
# Tags and lengths are themselves varints. Here are the first 96 bytes of the new-dialect LeNet
# file, with their offsets, and the printable ones as text on the right:

# %%
data = NEW_MODEL.read_bytes()


def hexdump(buf, start, stop):
    """Rows of 16 bytes: offset, hex, printable ASCII."""
    for row in range(start, stop, 16):
        chunk = buf[row:min(row + 16, stop)]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        print(f"{row:7d}  {chunk.hex(' '):<47}  {text}")


print(f"{NEW_MODEL.name}: {len(data):,} bytes")
hexdump(data, 0, 96)


# %% [markdown]
# Decoded by hand:
#
# | offset | bytes | meaning |
# |---|---|---|
# | 0 | `0a` | tag 0x0a = 0b0000_1010: field **1**, wire type **2** (NetParameter.`name`) |
# | 1 | `05` | length 5 |
# | 2-6 | `4c 65 4e 65 74` | `"LeNet"` |
# | 7-8 | `a2 06` | a two-byte varint: 0xa2 has its top bit set, so the value is (0xa2 & 0x7f) + 0x06·128 = 34 + 768 = **802** = 100·8 + 2: field **100** (`layer`), wire type 2 |
# | 9 | `50` | length 80: the first layer fills bytes 10 to 89 |
#
# Below is the deliberately naive teaching version of both steps: a varint reader and a loop over the
# fields of a message. It checks no bounds. The library's reader (`nets.caffe.wire`) does the same
# with every bound checked, so that a truncated or corrupt file raises a `CaffeFormatError` naming
# the offset instead of an `IndexError`. The asserts compare the two.

# %%
def naive_varint(buf, pos):
    """Read one varint at pos: (value, position after it)."""
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift  # 7 payload bits, least significant group first
        shift += 7
        if byte < 0x80:                  # top bit clear: this was the last byte
            return value, pos


def naive_fields(buf, start, end):
    """The fields of the message in buf[start:end]: (number, wire_type, payload start, end, varint value)."""
    out, pos = [], start
    while pos < end:
        tag, pos = naive_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        value = None
        if wire_type == 0:
            value, next_pos = naive_varint(buf, pos)
            out.append((number, wire_type, pos, next_pos, value))
            pos = next_pos
            continue
        if wire_type == 2:
            size, pos = naive_varint(buf, pos)
        else:
            size = {1: 8, 5: 4}[wire_type]
        out.append((number, wire_type, pos, pos + size, value))
        pos += size
    return out


tag, after = naive_varint(data, 7)
print(f"bytes 7-8 -> tag {tag} = field {tag >> 3}, wire type {tag & 7}")
assert (tag, after) == (802, 9) and (tag >> 3, tag & 7) == (100, 2)
assert wire.read_varint(data, 7, len(data)) == (tag, after)

top_level = naive_fields(data, 0, len(data))
library = [(f.number, f.wire_type, f.start, f.end, f.value) for f in wire.iter_fields(data, 0, len(data))]
assert top_level == library

print(f"\n{'field':>6}{'wire':>6}{'payload bytes':>22}{'length':>11}   starts with")
for number, wire_type, start, end, _ in top_level:
    print(f"{number:>6}{wire_type:>6}{start:>11}..{end:<9}{end - start:>9,}   {data[start:start + 14]}")

# %% [markdown]
# The whole file is one `name` and nine `layer` fields. They are the layers of the net that was
# *trained* (Caffe's `Net::ToProto` saves the training net): the data layer `mnist`, the loss, and
# in between the layers with weights. The sixth layer, `ip1`, takes 1.6 of the 1.7 MB. Its length
# needs a three-byte varint:

# %%
ip1_tag_at = top_level[6][2] - 5          # 2 tag bytes and 3 length bytes precede the payload
length_bytes = data[ip1_tag_at + 2:ip1_tag_at + 5]
by_hand = sum((b & 0x7F) << (7 * i) for i, b in enumerate(length_bytes))
print(f"length bytes {length_bytes.hex(' ')}: "
      + " + ".join(f"{b & 0x7F}*128^{i}" for i, b in enumerate(length_bytes)) + f" = {by_hand:,}")
assert by_hand == top_level[6][3] - top_level[6][2] == 1_602_103

# %% [markdown]
# ## 2 · Fields → layers → blobs
#
# A layer is itself a message: a `LayerParameter`. Its payload is decoded with the same loop. In the
# new dialect its fields are `name` = 1, `type` = 2 (a string), `bottom` = 3, `top` = 4, `blobs` = 7,
# `include` = 8, `phase` = 10, and one field per parameter message, such as `transform_param` = 100
# or `convolution_param` = 106 (the library's tables of field numbers are in `nets/caffe/schema.py`).
#
# The first layer, `mnist`, is short enough to read completely. It carries a *float*. The field
# `transform_param { scale }` is a fixed32, and its bytes `00 00 80 3b` read as the little-endian
# number 0x3b800000. That is sign 0, exponent 0x77 = 119, mantissa 0: $2^{119-127} = 2^{-8}$ =
# 0.00390625. It is the factor by which LeNet's inputs were scaled during training (gray value / 256),
# and section 6 needs it.

# %%
NEW_NAMES = {1: "name", 2: "type", 3: "bottom", 4: "top", 6: "param", 7: "blobs", 8: "include",
             10: "phase", 100: "transform_param", 106: "convolution_param", 107: "data_param",
             117: "inner_product_param", 121: "pooling_param"}
_, _, mnist_start, mnist_end, _ = top_level[1]
for number, wire_type, start, end, value in naive_fields(data, mnist_start, mnist_end):
    payload = value if wire_type == 0 else data[start:end]
    print(f"field {number:>3} {NEW_NAMES.get(number, '?'):>16}  wire {wire_type}  {payload}")

transform = {n: (s, e) for n, _, s, e, _ in naive_fields(data, mnist_start, mnist_end)}[100]
(number, wire_type, start, end, _), = naive_fields(data, *transform)
scale_by_hand = struct.unpack("<f", data[start:end])[0]
print(f"\ntransform_param: field {number}, wire type {wire_type}, bytes {data[start:end].hex(' ')} "
      f"-> {scale_by_hand}")

spec_new = read_caffemodel(NEW_MODEL)
mnist = spec_new.layer("mnist")
print("library:", mnist.type, mnist.tops, mnist.params["transform_param"], mnist.phase)
assert (number, wire_type, scale_by_hand) == (1, 5, 2.0**-8)
assert mnist.params["transform_param"] == {"scale": scale_by_hand}


# %% [markdown]
# **A blob** is a `BlobProto` inside the layer's field 7. In the new dialect it holds a `shape`
# (field 7, a `BlobShape` whose `dim` = 1 are int64 varints packed back to back) and `data`
# (field 5: float32 numbers packed back to back, little-endian). The weights are therefore one
# contiguous run of bytes, and `np.frombuffer` turns it into an array without copying it.
#
# The next cell decodes `conv1`'s two blobs by hand and compares them with the library's blobs.
# The library maps the file into memory (`mmap`) and returns **read-only views** of it: a 500 MB
# ResNet file is not held twice in memory.

# %%
def naive_blob(buf, start, end):
    """A new-dialect BlobProto: its shape (packed int64 varints) and its data (packed float32)."""
    fields = {n: (s, e) for n, _, s, e, _ in naive_fields(buf, start, end)}
    (_, _, dim_start, dim_end, _), = naive_fields(buf, *fields[7])   # BlobShape.dim, packed
    dims, pos = [], dim_start
    while pos < dim_end:
        d, pos = naive_varint(buf, pos)
        dims.append(d)
    values = np.frombuffer(buf, dtype="<f4", count=(fields[5][1] - fields[5][0]) // 4, offset=fields[5][0])
    return values.reshape(dims)


_, _, conv1_start, conv1_end, _ = top_level[2]
conv1_fields = naive_fields(data, conv1_start, conv1_end)
conv1_blobs = [naive_blob(data, s, e) for n, _, s, e, _ in conv1_fields if n == 7]


def memory_owner(array):
    """What finally holds an array's bytes: follow .base through views (and a memoryview's .obj)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


library_blobs = spec_new.layer("conv1").blobs
for mine, theirs in zip(conv1_blobs, library_blobs):
    print(f"by hand {mine.shape} {mine.dtype} | library {theirs.shape} {theirs.dtype}, "
          f"writeable={theirs.flags.writeable}, bytes held by {type(memory_owner(theirs)).__module__}."
          f"{type(memory_owner(theirs)).__name__}")
    assert np.array_equal(mine, theirs)
    assert isinstance(memory_owner(theirs), mmap.mmap) and not theirs.flags.writeable
assert [b.shape for b in library_blobs] == [(20, 1, 5, 5), (20,)]

# %% [markdown]
# Two pictures of what has been read. On the left, where the bytes of the file go, layer by layer
# (a logarithmic axis: blob data against everything else). On the right, the twenty 5x5 filters of
# `conv1`, which already look like stroke detectors.

# %%
layer_rows = []
for layer_field, layer in zip(top_level[1:], spec_new.layers):
    total = layer_field[3] - layer_field[2]
    blob_bytes = sum(b.nbytes for b in layer.blobs)
    layer_rows.append((layer.name, total, blob_bytes))
assert sum(b for _, _, b in layer_rows) / len(data) > 0.99   # the file is its weights

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [1, 1.25]})
names = [r[0] for r in layer_rows]
ax.barh(names, [r[1] - r[2] for r in layer_rows], color="C7", label="names, parameters, shapes")
ax.barh(names, [r[2] for r in layer_rows], left=[r[1] - r[2] for r in layer_rows], color="C0",
        label="blob data (float32)")
ax.set_xscale("log")
ax.invert_yaxis()
ax.set_xlabel("bytes")
ax.legend(fontsize=8, loc="lower right")
ax.set_title("LeNet caffemodel, layer by layer")
filters = library_blobs[0][:, 0]                                         # (20, 5, 5)
tiles = np.pad(filters, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)  # (20, 7, 7)
tiles = tiles.reshape(2, 10, 7, 7).transpose(0, 2, 1, 3).reshape(14, 70)
ax2.imshow(tiles, cmap=plt.get_cmap("RdBu_r", 32), interpolation="nearest")
ax2.set_title("conv1: 20 filters of 5x5 (red > 0 > blue)")
ax2.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · Two dialects, and the numbers DeepLab gave other meanings
#
# Caffe changed its file format in 2015. DeepLab v1 (2014) writes the **V1 dialect**, DeepLab v2
# (2016) the **new** one. The same LeNet, trained by Caffe in 2014, starts like this:

# %%
data_v1 = V1_MODEL.read_bytes()
hexdump(data_v1, 0, 48)

# %% [markdown]
# | | V1 dialect (DeepLab v1) | new dialect (DeepLab v2) |
# |---|---|---|
# | layers in NetParameter | `layers` = **2** (`V1LayerParameter`) | `layer` = **100** (`LayerParameter`) |
# | name, type | `name` = 4, `type` = **5, an enum**: `CONVOLUTION` = 4, `DATA` = 5 | `name` = 1, `type` = **2, a string**: `"Convolution"` |
# | bottom, top | 2, 3 | 3, 4 |
# | blobs | 6, always 4-D: `num, channels, height, width` = 1-4 | 7, `shape` = 7 with the true rank |
# | convolution_param | 10 | 106 |
# | atrous rate | `hole` = 17 (DeepLab v1 only) | `dilation` = 18 |
#
# Decoded by hand: `12` is field 2 (`layers`), wire type 2, and `4a` its length. Inside it, `1a` is
# field 3 (`top`: "data", "label"), `22` is field 4 (`name`: "mnist"), and `28 05` is field 5, wire
# type 0, value 5: the enum `DATA`.
#
# The library reads both files into one normalised form: new-dialect type strings, with the type as
# written kept in `source_type`. The blobs stay in the file's shapes, so V1's InnerProduct weight is
# `(1, 1, 500, 800)` and its biases `(1, 1, 1, 500)`.

# %%
first_v1_layer = naive_fields(data_v1, 0, len(data_v1))[1]
v1_fields = naive_fields(data_v1, first_v1_layer[2], first_v1_layer[3])
assert first_v1_layer[:2] == (2, 2)
assert [(n, w) for n, w, *_ in v1_fields[:4]] == [(3, 2), (3, 2), (4, 2), (5, 0)] and v1_fields[3][4] == 5

spec_v1 = read_caffemodel(V1_MODEL)
print(f"{'layer':>6}  {'V1 type':>14} {'V1 blob shapes':<32} {'new type':>16} new blob shapes")
for old, new in zip(spec_v1.layers, spec_new.layers):
    print(f"{old.name:>6}  {old.source_type:>14} {str([b.shape for b in old.blobs]):<32} "
          f"{new.source_type:>16} {[b.shape for b in new.blobs]}")
assert (spec_v1.dialect, spec_new.dialect) == ("v1", "new")
assert [l.type for l in spec_v1.layers] == [l.type for l in spec_new.layers]
assert [b.shape for b in spec_v1.layer("ip1").blobs] == [(1, 1, 500, 800), (1, 1, 1, 500)]


# %% [markdown]
# **DeepLab's own numbers.** DeepLab added layer types to Caffe (Interp, DenseCRF, ImageSegData, ...)
# and gave their parameters field numbers that BVLC Caffe later used for other messages:
#
# * new dialect: DeepLab v2's `interp_param` = 143, `seg_accuracy_param` = 144, `mat_write_param` = 145,
#   `dense_crf_param` = 146; BVLC's `input_param` = 143, `crop_param` = 144, ... ;
# * V1 enum: DeepLab v1's `IMAGE_SEG_DATA` = 39 is BVLC's `DECONVOLUTION` = 39;
# * V1 `ConvolutionParameter`: DeepLab v1's `hole` = 17 is BVLC's `force_nd_im2col` = 17 (BVLC's
#   `dilation` is 18).
#
# A decoder that looks field numbers up in one table misreads these files. The library reads a
# layer's `type` **first** and then picks the message that this type means. To see it, we build the
# bytes by hand with a naive varint *encoder*. A tag for field 143 with wire type 2 is the varint of
# 143·8 + 2 = 1146 = 122 + 8·128: the bytes `fa 08` (122 | 0x80 = 0xfa, then 8).

# %%
def naive_varint_bytes(value):
    """The varint encoding of a non-negative integer."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number, wire_type, payload):
    """One field of wire type 0 (payload: an int) or 2 (payload: bytes): tag, [length], payload."""
    if wire_type == 0:
        return naive_varint_bytes(number << 3) + naive_varint_bytes(payload)
    return naive_varint_bytes(number << 3 | 2) + naive_varint_bytes(len(payload)) + payload


assert naive_varint_bytes(143 << 3 | 2) == b"\xfa\x08" == wire.Encoder.varint_bytes(1146)
assert all(naive_varint(naive_varint_bytes(v), 0) == (v, len(naive_varint_bytes(v)))
           for v in (0, 1, 127, 128, 802, 1146, 1_602_103, 2**40 + 7))

zoom_8 = field(3, 0, 8)  # InterpParameter.zoom_factor = 3
decoded = {}
for layer_type in ("Interp", "Input"):
    layer = field(1, 2, b"up") + field(2, 2, layer_type.encode()) + field(143, 2, zoom_8)
    net_bytes = field(100, 2, layer)                               # NetParameter.layer
    decoded[layer_type] = decode_caffemodel(net_bytes).layers[0].params
    print(f"type {layer_type!r:9} + field 143 {zoom_8.hex(' ')} -> {decoded[layer_type]}")
assert decoded == {"Interp": {"interp_param": {"zoom_factor": 8}},
                   "Input": {"input_param": {}}}   # field 3 means nothing in BVLC's InputParameter

# %% [markdown]
# The V1 enum value 39 is decided by the layer's content: a layer with weights or a
# `convolution_param` (field 10) is BVLC's Deconvolution, any other DeepLab v1's ImageSegData. And
# field 17 of a convolution's parameters is an atrous rate in a V1 layer but a boolean in a new one.
# The library turns `hole` into `dilation`, so the rest of the project knows one name.

# %%
seg = field(4, 2, b"data") + field(5, 0, 39)
deconv = field(4, 2, b"up") + field(5, 0, 39) + field(10, 2, field(1, 0, 2))
hole_12 = field(17, 0, 12)                                       # bytes 88 01 0c
fc6_v1 = field(4, 2, b"fc6") + field(5, 0, 4) + field(10, 2, hole_12)       # V1: CONVOLUTION = 4
fc6_new = field(1, 2, b"fc6") + field(2, 2, b"Convolution") + field(106, 2, hole_12)
fc6_new_dilated = field(1, 2, b"fc6") + field(2, 2, b"Convolution") + field(106, 2, field(18, 0, 12))

v1_net = decode_caffemodel(field(2, 2, seg) + field(2, 2, deconv) + field(2, 2, fc6_v1))
new_net = decode_caffemodel(field(100, 2, fc6_new) + field(100, 2, fc6_new_dilated))
print("hole = 12 is the bytes", hole_12.hex(" "))
for layer in v1_net.layers + new_net.layers:
    print(f"{layer.name:>5} written {layer.source_type!r:15} -> {layer.type:13} {layer.params}")
assert [l.type for l in v1_net.layers] == ["ImageSegData", "Deconvolution", "Convolution"]
assert v1_net.layers[2].params["convolution_param"] == {"dilation": [12]}
assert new_net.layers[0].params["convolution_param"] == {"force_nd_im2col": True}
assert new_net.layers[1].params["convolution_param"] == {"dilation": [12]}

# %% [markdown]
# ## 4 · The network as text: prototxt
#
# The caffemodel stores the *training* net. The net to run comes from a prototxt, the protobuf text
# format: `field: value` lines, nested messages in braces, repeated fields by repetition, enums by
# name, `#` comments. `nets.caffe.parse_prototxt` reads both dialects into the same normalised
# `NetSpec`, so the V1 layer below (DeepLab v1's fc6) and its new-dialect twin (DeepLab v2's) are
# *equal*.

# %%
fc6_text_v1 = """
layers { bottom: "pool5" top: "fc6" name: "fc6" type: CONVOLUTION
  convolution_param { num_output: 1024 pad: 12 hole: 12 kernel_size: 3 }   # DeepLab v1
}"""
fc6_text_new = """
layer { bottom: "pool5" top: "fc6" name: "fc6" type: "Convolution"
  convolution_param { num_output: 1024 pad: 12 dilation: 12 kernel_size: 3 }
}"""
a, b = parse_prototxt(fc6_text_v1).layers[0], parse_prototxt(fc6_text_new).layers[0]
print(a.type, a.params)
assert a == b and a.params["convolution_param"]["dilation"] == [12]
print(upgrade_prototxt(fc6_text_v1))

# %% [markdown]
# DeepLab's released prototxts are **templates**: its scripts replaced `${NUM_LABELS}` and `${EXP}`
# with `sed` before running Caffe. `read_prototxt` fills in PASCAL VOC 2012's values (21 labels,
# `voc12`) unless told otherwise. Placeholders inside quoted paths (`"${DATA_ROOT}"`) stay as they
# are, because a forward pass never reads those paths.

# %%
largefov_path = PROTOTXT / "v1_largefov_test.prototxt"
raw_lines = largefov_path.read_text().splitlines()
fc8_line = raw_lines.index('  top: "fc8_${EXP}"')
print("\n".join(raw_lines[fc8_line - 1:fc8_line + 7]))
voc = read_prototxt(largefov_path)
context = read_prototxt(largefov_path, NUM_LABELS=60, EXP="context")
for net in (voc, context):
    fc8 = next(l for l in net.layers if l.name.startswith("fc8_") and l.type == "Convolution")
    print(f"-> {fc8.name}: num_output {fc8.params['convolution_param']['num_output']}")
assert voc.layer("fc8_voc12").params["convolution_param"]["num_output"] == 21
assert context.layer("fc8_context").params["convolution_param"]["num_output"] == 60
assert voc.layer("fc6").params["convolution_param"]["dilation"] == [12]  # hole: 12 in the file

# %% [markdown]
# ## 5 · Conversion to a plain .npz
#
# `nets.convert(caffemodel, prototxt, out)` keeps what the net needs, in the form NumPy stores best:
# an `.npz` with the network as prototxt text (`__prototxt__`) and one float32 array per blob, named
# `layer/index`. V1's padded 4-D shapes become the true ones (`(1, 1, 1, 20)` → `(20,)`). Every blob
# the net needs must be present with the right shape. The archive holds no Python objects, so it
# loads with `allow_pickle=False`, and nothing in it can run code.

# %%
npz_v1, npz_new = Path(WORK.name) / "lenet_v1.npz", Path(WORK.name) / "lenet_new.npz"
stored_v1 = nets.convert(V1_MODEL, REAL / "lenet_v1" / "lenet.prototxt", npz_v1)
stored_new = nets.convert(NEW_MODEL, REAL / "lenet_new" / "lenet.prototxt", npz_new)
print(f"{npz_v1.name}: {npz_v1.stat().st_size:,} bytes, {stored_v1}")
assert stored_v1 == stored_new == {"conv1/0": (20, 1, 5, 5), "conv1/1": (20,), "conv2/0": (50, 20, 5, 5),
                                   "conv2/1": (50,), "ip1/0": (500, 800), "ip1/1": (500,),
                                   "ip2/0": (10, 500), "ip2/1": (10,)}
with np.load(npz_v1, allow_pickle=False) as archive:
    print("\n".join(str(archive["__prototxt__"]).splitlines()[:9]), "\n  ...")
    for key, shape in stored_v1.items():
        layer_name, index = key.split("/")
        original = spec_v1.layer(layer_name).blobs[int(index)]
        assert archive[key].dtype == np.float32
        assert np.array_equal(archive[key], original.reshape(shape))

# %% [markdown]
# Caffe copies weights **by layer name** and ignores the names the net lacks. DeepLab relies on it:
# its nets renamed the classifier (`fc8` → `fc8_voc12`) so that fine-tuning started it afresh. The
# converter does the same. It warns about the caffemodel's layers that the net does not use (an error
# with `strict=True`). A layer that the net has but the file lacks is an error naming the layer and
# the shapes it needs. Both cases on LeNet: a net that stops after `relu1` (a feature extractor), and
# a net whose classifier was renamed.

# %%
lenet_text = (REAL / "lenet_new" / "lenet.prototxt").read_text()
features_only = parse_prototxt(lenet_text)
features_only.layers = features_only.layers[:[l.name for l in features_only.layers].index("relu1") + 1]
features_path = Path(WORK.name) / "lenet_features.prototxt"
features_path.write_text(format_prototxt(features_only))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    stored = nets.convert(NEW_MODEL, features_path, Path(WORK.name) / "features.npz")
print("warning:", str(caught[0].message).replace(str(REAL), "caffe-real"))
assert "ip2" in str(caught[0].message) and "ip2/0" not in stored

renamed_path = Path(WORK.name) / "lenet_renamed.prototxt"
renamed_path.write_text(lenet_text.replace('"ip2"', '"ip2_digits"'))
try:
    nets.convert(NEW_MODEL, renamed_path, Path(WORK.name) / "renamed.npz")
    raise AssertionError("a layer without weights must be refused")
except ValueError as exc:
    print("error:", exc)
    assert "'ip2_digits'" in str(exc) and "(10, 500)" in str(exc)


# %% [markdown]
# ## 6 · LeNet reads ten handwritten digits
#
# Now the weights do something. LeNet is conv (5x5, 20) → max pool 2x2 → conv (5x5, 50) → max pool
# 2x2 → inner product (500) → ReLU → inner product (10). The training net scaled the gray values by
# 2⁻⁸ (the float decoded in section 2) and subtracted no mean. The input is therefore
# `gray * 0.00390625`.
#
# The naive teaching version below computes the ten scores (`ip2`) in float64 with plain NumPy, from
# the blobs decoded from the caffemodel: a sliding window view for the convolution, a reshape for
# the pooling. It is compared with `nets.Net` (layers from the library, weights from the `.npz`) and
# with the scores listed in the test data's README, which came from an independent reference.

# %%
def naive_lenet(spec, image):
    """ip2 scores of one (28, 28) uint8 image, float64, Caffe's semantics written out."""
    def blobs(name):
        w, b = spec.layer(name).blobs
        return w.astype(np.float64), b.astype(np.float64).reshape(-1)

    def conv_valid(x, w, b):   # x (C, H, W), w (O, C, k, k) -> (O, H-k+1, W-k+1)
        k = w.shape[-1]
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # (C, H', W', k, k)
        return np.einsum("chwij,ocij->ohw", windows, w) + b[:, None, None]

    def max_pool_2x2(x):       # (C, H, W) -> (C, H/2, W/2)
        c, h, w = x.shape
        return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))

    x = image[None].astype(np.float64) * 0.00390625                   # (1, 28, 28)
    x = max_pool_2x2(conv_valid(x, *blobs("conv1")))                   # (20, 12, 12)
    x = max_pool_2x2(conv_valid(x, *blobs("conv2")))                   # (50, 4, 4)
    w, b = blobs("ip1")
    x = np.maximum(w.reshape(500, 800) @ x.reshape(-1) + b, 0)        # C, H, W flattened: (500,)
    w, b = blobs("ip2")
    return w.reshape(10, 500) @ x + b                                  # (10,)


def readme_scores(model):
    """{sample: ip2 scores} from the table "Expected outputs" of the test data README."""
    rows = re.findall(rf"^\| {model} \| (img_\w+)\.png \| \d \| [\d.]+ \| \[([^\]]+)\] \|$",
                      (REAL / "README.md").read_text(), re.M)
    return {name: np.array([float(v) for v in values.split(",")]) for name, values in rows}


paths = sorted((REAL / "mnist_samples").glob("img_*.png"))
images = np.stack([np.asarray(Image.open(p)) for p in paths])            # (10, 28, 28) uint8
truth = np.array([int(p.stem.split("_")[1]) for p in paths])
batch = images[:, None].astype(np.float32) * np.float32(0.00390625)     # (10, 1, 28, 28)

results = {}
for model, npz, spec in (("lenet_v1", npz_v1, spec_v1), ("lenet_new", npz_new, spec_new)):
    net = nets.Net.load(npz)
    out = net.forward(batch, outputs=["ip2", "prob"], backend="numpy")
    expected = readme_scores(model)
    assert sorted(expected) == [p.stem for p in paths]
    for i, p in enumerate(paths):
        naive = naive_lenet(spec, images[i])
        tol = 1e-3 * max(1.0, np.abs(expected[p.stem]).max())
        np.testing.assert_allclose(out["ip2"][i], expected[p.stem], rtol=0, atol=tol)
        np.testing.assert_allclose(out["ip2"][i], naive, rtol=0, atol=tol)
    np.testing.assert_allclose(net.forward(batch, outputs=["ip2"], backend="cpu")["ip2"], out["ip2"],
                               rtol=1e-5, atol=1e-4)
    assert np.array_equal(out["ip2"].argmax(axis=1), truth)
    results[model] = out
    error = max(np.abs(out["ip2"][i] - expected[p.stem]).max() for i, p in enumerate(paths))
    print(f"{model}: {net.inputs} -> {net.outputs}; labels {out['ip2'].argmax(axis=1)} (truth {truth}); "
          f"max |Net - README| = {error:.1e}")

# %%
fig, axes = plt.subplots(2, 10, figsize=(9, 2.4))
for i, p in enumerate(paths):
    for row, model in enumerate(("lenet_v1", "lenet_new")):
        prob = results[model]["prob"][i]
        ax = axes[row, i]
        ax.imshow(images[i], cmap=plt.get_cmap("gray", 16), interpolation="nearest")
        ax.set_title(f"{prob.argmax()} ({prob.max():.3f})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
axes[0, 0].set_ylabel("V1 file", fontsize=8)
axes[1, 0].set_ylabel("new file", fontsize=8)
fig.suptitle(f"LeNet through nets.Net: predicted digit (softmax probability); true labels "
             f"{' '.join(map(str, truth))}", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7 · BatchNorm's three blobs, and Scale
#
# DeepLab v2's ResNet-101 puts a BatchNorm and a Scale layer after every convolution. Caffe's
# BatchNorm does not store the mean and the variance. It stores running **sums**: `blobs[0]` =
# $s\cdot\mu$, `blobs[1]` = $s\cdot\sigma^2$, and a third blob holding the normaliser $s$ itself.
# At test time (`use_global_stats: true`), per channel $c$ (Caffe's `batch_norm_layer.cpp`; Ioffe &
# Szegedy, ICML 2015, Alg. 2):
#
# $$ \mu_c = \frac{b_{0,c}}{s}, \qquad \sigma^2_c = \frac{b_{1,c}}{s}, \qquad
#    y = \frac{x - \mu_c}{\sqrt{\sigma^2_c + \epsilon}}, \qquad \epsilon = 10^{-5} $$
#
# (and $\mu = \sigma^2 = 0$ when $s = 0$). Scale then applies $\gamma_c\, y + \beta_c$ from its own
# two blobs. A converter that skips the division by $s$ gives wrong results whenever $s \ne 1$.
#
# A hand-checkable example with two channels and $s = 4$: $b_0 = (8, -2)$ and $b_1 = (16, 1)$ give
# $\mu = (2, -0.5)$ and $\sigma^2 = (4, 0.25)$, so $\sigma = (2, 0.5)$. Channel 0 of
# $x = (2, 4, 6)$ becomes $(0, 1, 2)$, and channel 1 of $x = (-0.5, 0, 0.5)$ becomes $(0, 1, 2)$ too.
# With $\gamma = (3, -1)$ and $\beta = (1, 0.5)$, Scale gives $(1, 4, 7)$ and $(0.5, -0.5, -1.5)$.
# These are exact up to $\epsilon$, which matters only for the small variance: $\sqrt{0.25 + 10^{-5}}$
# = 0.50001, so channel 1 comes out $2\cdot10^{-5}$ smaller.

# %%
bn_blobs = [np.array([8.0, -2.0], np.float32), np.array([16.0, 1.0], np.float32),
            np.array([4.0], np.float32)]
gamma, beta = np.array([3.0, -1.0], np.float32), np.array([1.0, 0.5], np.float32)
x = np.array([[[2.0, 4.0, 6.0]], [[-0.5, 0.0, 0.5]]], np.float32)      # (C=2, H=1, W=3)

mean, var = batchnorm_statistics(*bn_blobs)
normalised = batch_norm(x, *bn_blobs, backend="numpy")
scaled = scale(normalised, gamma, beta, backend="numpy")
print("mean", mean, "var", var)
print("BatchNorm:", normalised[:, 0].round(4).tolist(), " Scale:", scaled[:, 0].round(4).tolist())
np.testing.assert_array_equal(mean, [2.0, -0.5])
np.testing.assert_array_equal(var, [4.0, 0.25])
by_hand = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
np.testing.assert_allclose(normalised, by_hand, rtol=1e-6)
np.testing.assert_allclose(normalised[:, 0], [[0, 1, 2], [0, 1, 2]], rtol=1e-4)
np.testing.assert_allclose(scaled[:, 0], [[1, 4, 7], [0.5, -0.5, -1.5]], rtol=1e-4)
wrong = (x - bn_blobs[0][:, None, None]) / np.sqrt(bn_blobs[1][:, None, None] + 1e-5)
print("forgetting s:", wrong[:, 0].round(4).tolist())
assert not np.allclose(wrong, normalised)

# %% [markdown]
# **Folding.** BatchNorm and Scale at test time are per-channel affine maps, and so is a convolution's
# effect per output channel. Their composition is a single convolution with the weights and bias
#
# $$ k_o = \frac{\gamma_o}{\sqrt{\sigma_o^2 + \epsilon}}, \qquad W'_o = k_o\, W_o, \qquad
#    b'_o = k_o\,(b_o - \mu_o) + \beta_o . $$
#
# `nets.layers.fold_batchnorm_scale` computes them, and `nets.Net` applies it when it loads a net.
# Both are checked here: the three layers against one convolution on a random input, and a small
# ResNet-style prototxt (Convolution without bias → BatchNorm → Scale → ReLU) run with and without
# folding.

# %%
rng = np.random.default_rng(5)
x = rng.standard_normal((3, 9, 9)).astype(np.float32)                  # (C_in, H, W)
w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)               # (C_out, C_in, 3, 3)
s = np.array([0.999], np.float32)
bn_blobs = [rng.standard_normal(4).astype(np.float32) * s,                     # s * mean
            rng.uniform(0.5, 2.0, 4).astype(np.float32) * s, s]                 # s * var, s
gamma, beta = rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)

three_layers = scale(batch_norm(atrous.conv2d(x, w, pad=1, backend="numpy"), *bn_blobs, backend="numpy"),
                     gamma, beta, backend="numpy")
w_folded, b_folded = fold_batchnorm_scale(w, None, bn_blobs, [gamma, beta])
one_layer = atrous.conv2d(x, w_folded, b_folded, pad=1, backend="numpy")
print("max |conv-BN-Scale - folded conv| =", float(np.abs(three_layers - one_layer).max()))
np.testing.assert_allclose(one_layer, three_layers, rtol=1e-5, atol=1e-5)

resnet_like = parse_prototxt("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { use_global_stats: true } }
layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }
""")
weights = {"conv1": [w], "bn_conv1": bn_blobs, "scale_conv1": [gamma, beta]}
folded = nets.Net.from_spec(resnet_like, weights, fold=True).forward(x[None], backend="numpy")["conv1"]
unfolded = nets.Net.from_spec(resnet_like, weights, fold=False).forward(x[None], backend="numpy")["conv1"]
np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(folded[0], np.maximum(three_layers, 0), rtol=1e-5, atol=1e-5)
print("Net with and without folding agree; output", folded.shape)

# %% [markdown]
# Folding removes BatchNorm and Scale when the net loads. When it runs, `nets.Net` goes one step
# further: a convolution applies the ReLU after it, and in a ResNet block the shortcut sum before
# that ReLU, as it writes its output (`atrous.epilogue`: `conv2d(..., residual=, relu_slope=)`),
# instead of making one more pass over the blob for each. The arithmetic is the separate layers',
# value by value, so not one bit changes; `Net.fused_layers()` lists what each convolution took
# over, and `fuse=False` runs every layer apart.

# %%
block = parse_prototxt("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 9 dim: 9 } } }
layer { name: "branch2a" type: "Convolution" bottom: "data" top: "branch2a"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "branch2a_relu" type: "ReLU" bottom: "branch2a" top: "branch2a" }
layer { name: "branch2b" type: "Convolution" bottom: "branch2a" top: "branch2b"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "res" type: "Eltwise" bottom: "data" bottom: "branch2b" top: "res" }
layer { name: "res_relu" type: "ReLU" bottom: "res" top: "res" }
""")
block_weights = {"branch2a": [rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3,
                              rng.standard_normal(4).astype(np.float32)],
                 "branch2b": [rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
                              rng.standard_normal(4).astype(np.float32)]}
fused_net = nets.Net.from_spec(block, block_weights)
print(fused_net.fused_layers())
x_block = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
for backend in ("numpy", "cpu"):
    fused = fused_net.forward(x_block, backend=backend)["res"]
    apart = nets.Net.from_spec(block, block_weights, fuse=False).forward(x_block, backend=backend)["res"]
    np.testing.assert_array_equal(fused, apart)
print("fused and apart agree to the last bit on both backends;", f"{np.mean(fused == 0):.0%} of 'res' rectified")

# %% [markdown]
# ## 8 · DeepLab-LargeFOV drawn from its prototxt
#
# The last step joins the pieces: the released DeepLab v1 test prototxt (V1 dialect, `hole`,
# templates, DeepLab's own `IMAGE_SEG_DATA`, `INTERP` and `MAT_WRITE` layers) becomes a `nets.Net`.
# Without weights the net can still **infer every blob's shape**, as Caffe's `Reshape` does, and list
# the blobs each layer needs. A naive re-derivation of the sizes with the two textbook formulas
# checks it: a convolution gives $\lfloor (H + 2p - r(k-1) - 1)/s \rfloor + 1$, Caffe's pooling
# $\lceil (H + 2p - k)/s \rceil + 1$ (notebook 02 has the details), and `Interp` with zoom factor
# $z$ gives $H + (H-1)(z-1)$.
#
# With the official weights the same object runs the net:
# `nets.convert("train2_iter_8000.caffemodel", prototxt, "largefov.npz")`, then
# `nets.Net.load("largefov.npz").forward(image)`. Notebook 06 runs a whole DeepLab model.

# %%
largefov = nets.Net(read_prototxt(largefov_path))
shapes = largefov.infer_shapes({"data": (1, 3, 513, 513)}, check=False)
param_shapes = largefov.param_shapes({"data": (1, 3, 513, 513)})
print("inputs", largefov.inputs, "| outputs", largefov.outputs)

size = {"data": 513}
for layer in largefov.spec.layers:
    if layer.type == "Convolution":
        p = layer.params["convolution_param"]
        k, pad, rate = p["kernel_size"][0], p.get("pad", [0])[0], p.get("dilation", [1])[0]
        stride = p.get("stride", [1])[0]
        size[layer.tops[0]] = (size[layer.bottoms[0]] + 2 * pad - rate * (k - 1) - 1) // stride + 1
    elif layer.type == "Pooling":
        p = layer.params["pooling_param"]
        k, stride, pad = p["kernel_size"], p.get("stride", 1), p.get("pad", 0)
        size[layer.tops[0]] = -(-(size[layer.bottoms[0]] + 2 * pad - k) // stride) + 1  # ceil
    elif layer.type == "Interp":
        zoom, h = layer.params["interp_param"]["zoom_factor"], size[layer.bottoms[0]]
        size[layer.tops[0]] = h + (h - 1) * (zoom - 1)
for name, h in size.items():
    assert shapes[name][2:] == (h, h), (name, shapes[name], h)
assert shapes["fc8_voc12"] == (1, 21, 65, 65) and shapes["fc8_interp"] == (1, 21, 513, 513)
n_params = sum(int(np.prod(s)) for blobs in param_shapes.values() for s in blobs)
print(f"{len(size) - 1} layers change the size or the channels; {n_params:,} parameters")
vgg16_convs = (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 2 * 256 * 256 + 256 * 512
               + 5 * 512 * 512) * 9 + (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)
head = (512 * 9 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 21 + 21)   # fc6, fc7, fc8
assert n_params == vgg16_convs + head   # the 20.5M of the ICLR paper's Table 2 (notebook 02)


# %%
def describe(layer):
    """Two short lines for a box: what the layer does."""
    if layer.type == "Convolution":
        p = layer.params["convolution_param"]
        k, rate = p["kernel_size"][0], p.get("dilation", [1])[0]
        return f"conv {k}x{k}" + (f" rate {rate}" if rate > 1 else "")
    if layer.type == "Pooling":
        p = layer.params["pooling_param"]
        return f"{p.get('pool', 'MAX').lower()} {p['kernel_size']}x{p['kernel_size']} /{p.get('stride', 1)}"
    if layer.type == "Interp":
        return f"interp x{layer.params['interp_param']['zoom_factor']}"
    return layer.type


boxes = [("data", "input (crop 513)", shapes["data"], "0.85")]
for layer in largefov.spec.layers:
    if layer.tops and layer.tops[0] in size and layer.tops[0] != "data" and layer.tops != layer.bottoms:
        colour = {"Convolution": "C0", "Pooling": "C2", "Interp": "C3"}[layer.type]
        if layer.type == "Convolution" and layer.params["convolution_param"].get("dilation", [1])[0] > 1:
            colour = "C1"
        boxes.append((layer.name, describe(layer), shapes[layer.tops[0]], colour))
in_place = sorted({l.type for l in largefov.spec.layers if l.tops and l.tops == l.bottoms})

per_row = 6
fig, ax = plt.subplots(figsize=(9.5, 5.0))
for i, (name, what, shape, colour) in enumerate(boxes):
    row, col = divmod(i, per_row)
    col = col if row % 2 == 0 else per_row - 1 - col          # snake: every other row right to left
    cx, cy = col * 1.6, -row * 1.25
    ax.add_patch(FancyBboxPatch((cx - 0.68, cy - 0.42), 1.36, 0.84, boxstyle="round,pad=0.02",
                                fc=colour, ec="black", alpha=0.35 if colour != "0.85" else 1.0))
    ax.text(cx, cy + 0.2, name, ha="center", va="center", fontsize=8.5, weight="bold")
    ax.text(cx, cy, what, ha="center", va="center", fontsize=7.5)
    ax.text(cx, cy - 0.22, f"{shape[1]} x {shape[2]} x {shape[3]}", ha="center", va="center", fontsize=7.5)
    if i:
        prow, pcol = divmod(i - 1, per_row)
        pcol = pcol if prow % 2 == 0 else per_row - 1 - pcol
        start, end = (pcol * 1.6, -prow * 1.25), (cx, cy)
        if prow == row:
            step = 0.7 if cx > start[0] else -0.7
            start, end = (start[0] + step, start[1]), (cx - step, cy)
        else:
            start, end = (start[0], start[1] - 0.44), (cx, cy + 0.44)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, lw=0.8))
legend = [plt.Rectangle((0, 0), 1, 1, fc=c, alpha=0.35, ec="black") for c in ("C0", "C1", "C2", "C3")]
ax.legend(legend, ["convolution", "atrous convolution", "pooling (ceil mode)", "Interp"],
          loc="lower center", bbox_to_anchor=(0.5, -0.07), ncol=4, fontsize=8, frameon=False)
ax.set_xlim(-0.8, per_row * 1.6 - 0.8)
ax.set_ylim(-(len(boxes) - 1) // per_row * 1.25 - 0.6, 0.6)
ax.axis("off")
ax.set_title(f"DeepLab-LargeFOV (v1_largefov_test.prototxt) at 513x513: channels x height x width\n"
             f"in place, not drawn: {', '.join(in_place)}", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What to take away
#
# * A caffemodel is a protobuf message: tags `(number << 3) | wire type`, varints, lengths. A loop
#   of twenty lines walks it. The weights are packed little-endian float32 runs, which
#   `np.frombuffer` maps without a copy.
# * The field numbers carry the meaning, and DeepLab's files reuse some of BVLC's numbers (143-146,
#   the V1 enum 39, `hole` = 17). The reader therefore looks at a layer's type before decoding its
#   parameters, and both dialects end up in one normalised `NetSpec`.
# * The prototxt says what to run, the caffemodel what the weights are. The weights are matched by
#   layer name. `nets.convert` writes both into a plain `.npz` that loads with `allow_pickle=False`.
# * The real LeNet files reproduce the reference scores for all ten digits through `nets.Net`.
# * BatchNorm divides its running sums by its third blob. With Scale it folds exactly into the
#   convolution before it, and the convolution then also does the shortcut sum and the ReLU
#   after it as it writes.
