"""The network description that every reader produces and every writer consumes.

:class:`NetSpec` and :class:`LayerSpec` hold a Caffe network in one normalised
form, whichever file it came from (a prototxt or a caffemodel, the V1 or the new
dialect):

* layer types are the new dialect's strings (``"Convolution"``, ``"Pooling"``,
  ``"Interp"``, ``"ImageSegData"``, ...); the type as written in the file stays in
  :attr:`LayerSpec.source_type` and the dialect in :attr:`NetSpec.dialect`;
* parameter messages are plain dicts keyed by their field names, holding only the
  fields that were set (defaults are applied by helpers such as
  :func:`conv_geometry` and :func:`pool_geometry`); enums are their value names
  (``{"pool": "MAX"}``);
* ``convolution_param`` always has the new dialect's form: ``pad``,
  ``kernel_size``, ``stride`` and ``dilation`` are lists, and DeepLab v1's
  ``hole`` is ``dilation``;
* V1's ``blobs_lr``, ``weight_decay``, ``param`` (sharing names) and
  ``blob_share_mode`` become ParamSpec dicts in :attr:`LayerSpec.param_specs`
  (``{"name": ..., "lr_mult": ..., "decay_mult": ..., "share_mode": ...}``).

Blobs are NumPy arrays in the file's shape: a V1 file stores every blob 4-D
(an InnerProduct weight is ``(1, 1, out, in)``), a new file stores the true shape.
"""
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .errors import CaffeFormatError
from .schema import MESSAGES, NEW_TO_V1_TYPE, V1_TO_NEW_TYPE

_V1_PARAMSPEC_KEYS = (("param", "name"), ("blobs_lr", "lr_mult"), ("weight_decay", "decay_mult"),
                      ("blob_share_mode", "share_mode"))
_V1_EXTRA = ("strict_dim",)


def _blobs_equal(a, b):
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


@dataclass(eq=False)
class LayerSpec:
    """One layer.

    Attributes
    ----------
    name, type : str
        ``type`` in the new dialect's spelling (``"Convolution"``).
    bottoms, tops : list of str
        Blob names read and written (a top equal to a bottom means in place).
    params : dict
        Parameter messages by field name, e.g. ``{"convolution_param": {"num_output": 64,
        "kernel_size": [3], "pad": [1], "dilation": [2]}}``.
    blobs : list of ndarray
        Learned parameters (weights, bias, BatchNorm statistics), float32 (float64 when
        the file stored ``double_data``); empty for a prototxt.
    param_specs : list of dict
        Per-blob ParamSpec: ``name`` (weight sharing), ``lr_mult``, ``decay_mult``, ``share_mode``.
    include, exclude : list of dict
        NetStateRule dicts (``{"phase": "TEST"}``) deciding in which nets the layer exists.
    phase : str or None
        ``"TRAIN"``/``"TEST"`` as saved by the new dialect's ``Net::ToProto``.
    loss_weight : list of float
    propagate_down : list of bool
    source_type : str
        The type as the file wrote it (``"CONVOLUTION"`` in V1 files).
    extra : dict
        Fields of the source dialect that the new one lacks (DeepLab v1's ``strict_dim``).
    """
    name: str
    type: str
    bottoms: list = field(default_factory=list)
    tops: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    blobs: list = field(default_factory=list)
    param_specs: list = field(default_factory=list)
    include: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    phase: str | None = None
    loss_weight: list = field(default_factory=list)
    propagate_down: list = field(default_factory=list)
    source_type: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def param_names(self):
        """Sharing names of the blobs (``""`` where a blob has none)."""
        return [p.get("name", "") for p in self.param_specs]

    def __eq__(self, other):
        if not isinstance(other, LayerSpec):
            return NotImplemented
        keys = ("name", "type", "bottoms", "tops", "params", "param_specs", "include", "exclude",
                "phase", "loss_weight", "propagate_down", "extra")
        return (all(getattr(self, k) == getattr(other, k) for k in keys)
                and _blobs_equal(self.blobs, other.blobs))


@dataclass(eq=False)
class NetSpec:
    """A whole network.

    Attributes
    ----------
    name : str
    layers : list of LayerSpec
        In file order (Caffe runs them in this order).
    inputs : list of str
        Net-level inputs (NetParameter ``input``); ``Input`` layers are ordinary layers.
    input_shapes : list of tuple of int
        Their declared shapes (from ``input_dim`` in groups of four, or ``input_shape``).
    dialect : str
        ``"v1"`` (``layers`` with enum types) or ``"new"`` (``layer`` with string types):
        the dialect of the file it was read from.
    options : dict
        Other NetParameter fields that were set: ``force_backward``, ``state``, ``debug_info``.

    Two specs are equal when their content is (blobs compared exactly); the dialect and
    the layers' ``source_type`` are provenance and are not compared.
    """
    name: str = ""
    layers: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    input_shapes: list = field(default_factory=list)
    dialect: str = "new"
    options: dict = field(default_factory=dict)

    def __eq__(self, other):
        if not isinstance(other, NetSpec):
            return NotImplemented
        return (self.name == other.name and self.layers == other.layers and self.inputs == other.inputs
                and self.input_shapes == other.input_shapes and self.options == other.options)

    def layer(self, name):
        """The layer called ``name`` (the first one, if a train/test pair shares it)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; the net has {[l.name for l in self.layers]}")

    def for_phase(self, phase="TEST", level=0, stages=()):
        """The net Caffe builds for ``phase``: layers whose include/exclude rules admit it.

        Follows Caffe's ``Net::FilterNet``: with ``include`` rules a layer is kept if one
        rule is met; otherwise it is kept unless an ``exclude`` rule is met.
        """
        def meets(rule):
            if "phase" in rule and rule["phase"] != phase:
                return False
            if "min_level" in rule and level < rule["min_level"]:
                return False
            if "max_level" in rule and level > rule["max_level"]:
                return False
            if any(s not in stages for s in rule.get("stage", [])):
                return False
            return not any(s in stages for s in rule.get("not_stage", []))

        kept = [l for l in self.layers
                if (any(meets(r) for r in l.include) if l.include else not any(meets(r) for r in l.exclude))]
        return NetSpec(self.name, kept, list(self.inputs), list(self.input_shapes), self.dialect,
                       dict(self.options))


# ----------------------------------------------------------------------------- geometry helpers

class ConvGeometry(NamedTuple):
    """A 2-D convolution's resolved parameters; every pair is (rows, columns)."""
    num_output: int
    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple
    group: int
    bias_term: bool


class PoolGeometry(NamedTuple):
    """A 2-D pooling's resolved parameters; every pair is (rows, columns)."""
    pool: str
    kernel: tuple
    stride: tuple
    pad: tuple
    global_pooling: bool
    round_mode: str


def _field_pair(p, key, h_key, w_key, default, where):
    """An (h, w) pair read from a parameter message by Caffe's rule: explicit ``_h``/``_w``
    fields win; else the repeated field holds 0 (the default), 1 or 2 values.

    This resolves *fields* of a decoded message (``kernel_size`` or ``kernel_h`` and
    ``kernel_w``), not a Python argument: the layer maths check their own arguments
    (:func:`atrous.conv.int_pair`). ``h_key``/``w_key`` are None for ``dilation``,
    which has no ``_h``/``_w`` form.
    """
    if h_key is not None and (h_key in p or w_key in p):
        if not (h_key in p and w_key in p):
            raise CaffeFormatError(f"{where}: {h_key} and {w_key} must be given together")
        if key in p and p[key] != [] and p[key] is not None:
            raise CaffeFormatError(f"{where}: {key} cannot be given together with {h_key}/{w_key}")
        return int(p[h_key]), int(p[w_key])
    values = p.get(key, [])
    values = [values] if isinstance(values, int) else list(values)
    if not values:
        if default is None:
            raise CaffeFormatError(f"{where}: {key} (or {h_key} and {w_key}) is required")
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise CaffeFormatError(f"{where}: {key} has {len(values)} values; expected 1 or 2 for a 2-D layer")


def conv_geometry(layer):
    """Resolve a Convolution layer's ``convolution_param`` with Caffe's defaults.

    Parameters
    ----------
    layer : LayerSpec

    Returns
    -------
    ConvGeometry
        kernel from ``kernel_h``/``kernel_w`` or ``kernel_size``; stride (default 1),
        pad (default 0) and dilation (default 1) likewise; group 1 and bias_term True
        by default. The effective kernel is ``dilation * (kernel - 1) + 1``.
    """
    p = layer.params.get("convolution_param", {})
    where = f"layer {layer.name!r} (convolution_param)"
    if "num_output" not in p:
        raise CaffeFormatError(f"{where}: num_output is required")
    kernel = _field_pair(p, "kernel_size", "kernel_h", "kernel_w", None, where)
    stride = _field_pair(p, "stride", "stride_h", "stride_w", 1, where)
    pad = _field_pair(p, "pad", "pad_h", "pad_w", 0, where)
    dilation = _field_pair(p, "dilation", None, None, 1, where)
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise CaffeFormatError(f"{where}: kernel {kernel}, stride {stride} and dilation {dilation} "
                               f"must be positive")
    return ConvGeometry(int(p["num_output"]), kernel, stride, pad, dilation, int(p.get("group", 1)),
                        bool(p.get("bias_term", True)))


def pool_geometry(layer):
    """Resolve a Pooling layer's ``pooling_param`` with Caffe's defaults.

    Returns
    -------
    PoolGeometry
        pool (default ``"MAX"``), kernel (required unless ``global_pooling``, in which case
        it is ``(0, 0)`` meaning "the whole input"), stride (default 1), pad (default 0),
        round_mode (default ``"CEIL"``).
    """
    p = layer.params.get("pooling_param", {})
    where = f"layer {layer.name!r} (pooling_param)"
    global_pooling = bool(p.get("global_pooling", False))
    kernel = (0, 0) if global_pooling else _field_pair(p, "kernel_size", "kernel_h", "kernel_w", None, where)
    stride = _field_pair(p, "stride", "stride_h", "stride_w", 1, where)
    pad = _field_pair(p, "pad", "pad_h", "pad_w", 0, where)
    if not global_pooling and (min(kernel) < 1 or min(stride) < 1):
        raise CaffeFormatError(f"{where}: kernel {kernel} and stride {stride} must be positive")
    return PoolGeometry(p.get("pool", "MAX"), kernel, stride, pad, global_pooling,
                        p.get("round_mode", "CEIL"))


# ----------------------------------------------------------------------------- raw dicts -> spec

def blob_to_array(blob, where):
    """A decoded BlobProto dict -> ndarray in the blob's shape (a view when possible).

    The shape is ``shape.dim`` when present, else the legacy 4-D
    ``(num, channels, height, width)`` (absent ones count as 0, as in Caffe).
    """
    if "shape" in blob:
        shape = tuple(int(d) for d in blob["shape"].get("dim", []))
    elif any(k in blob for k in ("num", "channels", "height", "width")):
        shape = tuple(int(blob.get(k, 0)) for k in ("num", "channels", "height", "width"))
    else:
        shape = ()
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"{where}: negative dimension in shape {shape}")
    if "double_data" in blob and len(blob["double_data"]):
        data = blob["double_data"]
    else:
        data = blob.get("data", np.zeros(0, "<f4"))
    if not isinstance(data, np.ndarray):
        data = np.asarray(data, dtype="<f4")
    count = math.prod(shape)
    if count != data.size:
        raise CaffeFormatError(f"{where}: shape {shape} needs {count} values but the blob holds {data.size}")
    return data.reshape(shape)


def _v1_conv_to_new(p):
    """DeepLab v1 / old BVLC ConvolutionParameter -> the new dialect's (lists, dilation)."""
    out = {}
    for key, value in p.items():
        if key in ("pad", "kernel_size", "stride"):
            out[key] = list(value) if isinstance(value, list) else [value]
        elif key == "hole":
            out["dilation"] = [value]
        elif key not in ("hole_h", "hole_w"):
            out[key] = value
    if "hole_h" in p or "hole_w" in p:
        base = p.get("hole", 1)
        out["dilation"] = [p.get("hole_h", base), p.get("hole_w", base)]
    return out


def _new_conv_to_v1(p, where):
    out = {}
    for key, value in p.items():
        if key in ("pad", "kernel_size", "stride", "dilation"):
            name = "hole" if key == "dilation" else key
            prefix = "hole" if key == "dilation" else {"kernel_size": "kernel"}.get(key, key)
            if len(value) == 1:
                out[name] = value[0]
            elif len(value) == 2:
                out[prefix + "_h"], out[prefix + "_w"] = value
            elif value:
                raise CaffeFormatError(f"{where}: {key} {value} has more than 2 values; V1 is 2-D only")
        elif key in ("axis", "force_nd_im2col"):
            raise CaffeFormatError(f"{where}: convolution_param.{key} cannot be written in the V1 dialect")
        else:
            out[key] = value
    return out


def layer_from_raw(raw, dialect, index):
    """A decoded (V1)LayerParameter dict -> :class:`LayerSpec` (normalised)."""
    name = raw.get("name", "")
    where = f"layer {index} ({name!r})"
    if "type" not in raw:
        raise CaffeFormatError(f"{where}: it has no type")
    if dialect == "v1":
        source_type = raw["type"]
        if source_type not in V1_TO_NEW_TYPE:
            raise CaffeFormatError(f"{where}: V1 layer type number {source_type} is unknown")
        layer_type = V1_TO_NEW_TYPE[source_type]
    else:
        source_type = layer_type = raw["type"]
    layer = LayerSpec(name=name, type=layer_type, bottoms=list(raw.get("bottom", [])),
                      tops=list(raw.get("top", [])), source_type=str(source_type),
                      include=list(raw.get("include", [])), exclude=list(raw.get("exclude", [])),
                      loss_weight=list(raw.get("loss_weight", [])),
                      propagate_down=list(raw.get("propagate_down", [])), phase=raw.get("phase"))
    for key, value in raw.items():
        if key.endswith("_param") and key != "param":
            layer.params[key] = value
    if dialect == "v1":
        if "convolution_param" in layer.params:
            layer.params["convolution_param"] = _v1_conv_to_new(layer.params["convolution_param"])
        if "softmaxloss_param" in layer.params:
            old = layer.params.pop("softmaxloss_param")
            layer.params["loss_param"] = {k: v for k, v in old.items() if k == "ignore_label"}
            if "weight_source" in old:
                layer.extra["weight_source"] = old["weight_source"]
        count = max((len(raw.get(k, [])) for k, _ in _V1_PARAMSPEC_KEYS), default=0)
        layer.param_specs = [{new: raw[old][i] for old, new in _V1_PARAMSPEC_KEYS if i < len(raw.get(old, []))}
                             for i in range(count)]
        layer.extra.update({k: raw[k] for k in _V1_EXTRA if k in raw})
    else:
        layer.param_specs = list(raw.get("param", []))
    layer.blobs = [blob_to_array(b, f"{where} blob {i}") for i, b in enumerate(raw.get("blobs", []))]
    return layer


def net_from_raw(raw):
    """A decoded NetParameter dict -> :class:`NetSpec`."""
    if raw.get("layers") and raw.get("layer"):
        raise CaffeFormatError("the net mixes V1 'layers' and new 'layer' fields; expected one dialect")
    dialect = "v1" if raw.get("layers") else "new"
    layers = [layer_from_raw(r, dialect, i) for i, r in enumerate(raw.get("layers") or raw.get("layer", []))]
    dims = list(raw.get("input_dim", []))
    if dims and raw.get("input_shape"):
        raise CaffeFormatError("the net gives both input_dim and input_shape; expected one")
    if dims:
        if len(dims) != 4 * len(raw.get("input", [])):
            raise CaffeFormatError(f"input_dim has {len(dims)} values; expected 4 per input "
                                   f"({len(raw.get('input', []))} inputs)")
        shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
    else:
        shapes = [tuple(s.get("dim", [])) for s in raw.get("input_shape", [])]
    options = {k: raw[k] for k in ("force_backward", "state", "debug_info") if k in raw}
    return NetSpec(raw.get("name", ""), layers, list(raw.get("input", [])), shapes, dialect, options)


# ----------------------------------------------------------------------------- spec -> raw dicts

def array_to_blob(array, dialect):
    """ndarray -> BlobProto dict: ``shape`` (new) or 4-D num/channels/height/width (V1)."""
    array = np.asarray(array)
    if dialect == "v1":
        if array.ndim > 4:
            raise CaffeFormatError(f"a V1 blob has at most 4 dimensions; got shape {array.shape}")
        dims = (1,) * (4 - array.ndim) + array.shape
        blob = dict(zip(("num", "channels", "height", "width"), dims))
        blob["data"] = array.astype("<f4", copy=False)
        return blob
    if array.dtype == np.float64:
        return {"shape": {"dim": list(array.shape)}, "double_data": array.astype("<f8", copy=False)}
    return {"shape": {"dim": list(array.shape)}, "data": array.astype("<f4", copy=False)}


def layer_to_raw(layer, dialect, blobs=None):
    """:class:`LayerSpec` -> a (V1)LayerParameter dict for ``dialect`` (``"new"`` or ``"v1"``).

    ``blobs`` (a list of arrays) replaces the layer's own blobs when given.
    """
    where = f"layer {layer.name!r}"
    blobs = layer.blobs if blobs is None else blobs
    raw = {"name": layer.name, "type": layer.type}
    if layer.bottoms:
        raw["bottom"] = list(layer.bottoms)
    if layer.tops:
        raw["top"] = list(layer.tops)
    for key in ("include", "exclude", "loss_weight"):
        if getattr(layer, key):
            raw[key] = list(getattr(layer, key))
    if dialect == "new":
        raw["type"] = layer.type
        if layer.phase is not None:
            raw["phase"] = layer.phase
        if layer.propagate_down:
            raw["propagate_down"] = list(layer.propagate_down)
        if layer.param_specs:
            raw["param"] = [dict(p) for p in layer.param_specs]
        raw.update(layer.params)
        schema = MESSAGES["LayerParameter"]
    else:
        if layer.type not in NEW_TO_V1_TYPE:
            raise CaffeFormatError(f"{where}: type {layer.type!r} has no V1 enum value, so it cannot be "
                                   f"written in the V1 dialect; use dialect='new'")
        raw["type"] = NEW_TO_V1_TYPE[layer.type]
        _param_specs_to_v1(layer, raw, where)
        schema = MESSAGES["V1LayerParameter"]
        for key, value in layer.params.items():
            raw[key] = _new_conv_to_v1(value, where) if key == "convolution_param" else value
        raw.update({k: v for k, v in layer.extra.items() if k in _V1_EXTRA})
    for key in raw:
        if key not in schema.by_name:
            raise CaffeFormatError(f"{where}: {key} cannot be written in the {dialect} dialect")
    if blobs:
        raw["blobs"] = [array_to_blob(b, dialect) for b in blobs]
    return raw


def _param_specs_to_v1(layer, raw, where):
    specs = layer.param_specs
    defaults = {"name": "", "lr_mult": 1.0, "decay_mult": 1.0, "share_mode": "STRICT"}
    for old, new in _V1_PARAMSPEC_KEYS:
        last = max((i for i, p in enumerate(specs) if new in p), default=-1)
        if last >= 0:
            raw[old] = [p.get(new, defaults[new]) for p in specs[:last + 1]]


def net_to_raw(spec, dialect, weights=None, with_blobs=True):
    """:class:`NetSpec` -> a NetParameter dict in ``dialect``.

    ``weights`` maps layer names to lists of arrays that replace the layers' blobs.
    """
    if dialect not in ("new", "v1"):
        raise ValueError(f"dialect must be 'new' or 'v1'; got {dialect!r}")
    weights = weights or {}
    raw = {}
    if spec.name:
        raw["name"] = spec.name
    if spec.inputs:
        raw["input"] = list(spec.inputs)
    if spec.input_shapes:
        if dialect == "v1":
            if any(len(s) != 4 for s in spec.input_shapes):
                raise CaffeFormatError(f"V1 input_dim needs 4-D input shapes; got {spec.input_shapes}")
            raw["input_dim"] = [int(d) for s in spec.input_shapes for d in s]
        else:
            raw["input_shape"] = [{"dim": [int(d) for d in s]} for s in spec.input_shapes]
    raw.update(spec.options)
    layers = [layer_to_raw(l, dialect, weights.get(l.name)) if with_blobs
              else layer_to_raw(l, dialect, []) for l in spec.layers]
    if layers:
        raw["layers" if dialect == "v1" else "layer"] = layers
    return raw
