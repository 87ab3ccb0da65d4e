"""Caffe files read and written by hand: no protobuf package, no caffe.proto.

* :func:`read_caffemodel` / :func:`write_caffemodel`: binary weights, V1 and new dialects.
* :func:`read_prototxt` / :func:`parse_prototxt` / :func:`format_prototxt`: network text,
  both dialects, DeepLab's ``${...}`` templates, V1 -> new upgrade.
* :class:`NetSpec` / :class:`LayerSpec`: the one normalised network description both
  produce (see :mod:`nets.caffe.spec`), with :func:`conv_geometry` / :func:`pool_geometry`.
* :func:`read_npz` / :func:`write_npz`: the converted-network ``.npz`` (a prototxt and
  float32 blobs, no pickle).
* :func:`atomic_write`: every file of the project is written through it
  (:func:`remove_orphans` clears what a killed writer left).
* :class:`CaffeFormatError`: the one error class (a ``ValueError``).

This package reads and writes files and knows no layer maths: it imports nothing
else of :mod:`nets`, and no image library.

Example::

    from nets.caffe import read_prototxt, read_caffemodel, conv_geometry
    net = read_prototxt("test.prototxt").for_phase("TEST")   # V1 or new; ${NUM_LABELS} -> 21
    weights = read_caffemodel("train2_iter_8000.caffemodel")  # blobs: read-only views of the file
    for layer in net.layers:
        if layer.type == "Convolution":
            g = conv_geometry(layer)                          # kernel, stride, pad, dilation pairs
            w, b = weights.layer(layer.name).blobs            # (O, C/group, kh, kw), (O,) or (1,1,1,O)

Modules: :mod:`.wire` (protobuf wire format), :mod:`.schema` (field numbers of both
dialects), :mod:`.codec` (schema-driven messages), :mod:`.spec`, :mod:`.prototxt`,
:mod:`.caffemodel`, :mod:`.npz`, :mod:`.atomic`.
"""
from .atomic import atomic_write, remove_orphans
from .caffemodel import decode_caffemodel, encode_caffemodel, read_caffemodel, write_caffemodel
from .errors import CaffeFormatError
from .npz import is_npz, read_npz, write_npz
from .prototxt import (DEFAULT_TEMPLATE_VALUES, format_prototxt, parse_prototxt, read_prototxt,
                       upgrade_prototxt)
from .spec import ConvGeometry, LayerSpec, NetSpec, PoolGeometry, conv_geometry, pool_geometry

__all__ = [
    "CaffeFormatError", "ConvGeometry", "DEFAULT_TEMPLATE_VALUES", "LayerSpec", "NetSpec",
    "PoolGeometry", "atomic_write", "conv_geometry", "decode_caffemodel", "encode_caffemodel",
    "format_prototxt", "is_npz", "parse_prototxt", "pool_geometry", "read_caffemodel", "read_npz",
    "read_prototxt", "remove_orphans", "upgrade_prototxt", "write_caffemodel", "write_npz",
]
