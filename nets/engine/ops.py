"""What each Caffe layer type does inside a net: the blobs it needs, its output shapes, its forward.

One :class:`LayerOp` per supported type. :mod:`nets.engine.net` asks it three things:

* ``param_shapes(layer, bottom_shapes)``: the learned blobs' shapes the layer needs
  for inputs of these shapes (a convolution's weight depends on its input channels);
* ``top_shapes(layer, bottom_shapes)``: the shapes of its outputs (Caffe's ``Reshape``);
* ``forward(layer, blobs, bottoms, backend)``: the outputs, computed by
  :mod:`atrous` and :mod:`nets.layers` with Caffe's exact semantics.

Shapes are tuples ``(N, C, H, W)`` (other ranks for InnerProduct and ArgMax). Every
error names the layer.

References
----------
Y. Jia et al., "Caffe: Convolutional Architecture for Fast Feature Embedding", 2014
(the layer catalogue); L.-C. Chen et al., ICLR 2015 and TPAMI 2018 (DeepLab's Interp,
atrous convolution, BatchNorm + Scale in ResNet-101).
"""
import math

import numpy as np

import atrous
from nets import layers as L
from nets.caffe import conv_geometry, pool_geometry


class LayerError(ValueError):
    """A layer cannot run on its inputs; the message names the layer."""


def _where(layer):
    return f"layer {layer.name!r} ({layer.type})"


def _one_bottom(layer, shapes):
    if len(shapes) != 1:
        raise LayerError(f"{_where(layer)}: takes one bottom, got {len(shapes)} ({layer.bottoms})")
    return shapes[0]


def _four_d(layer, shape):
    if len(shape) != 4:
        raise LayerError(f"{_where(layer)}: needs a 4-D (N, C, H, W) bottom, got shape {shape}")
    return shape


class LayerOp:
    """Base: no blobs, one top of the bottom's shape, identity forward."""

    def param_shapes(self, layer, bottom_shapes):
        return []

    def top_shapes(self, layer, bottom_shapes):
        return [_one_bottom(layer, bottom_shapes)] * max(1, len(layer.tops))

    def forward(self, layer, blobs, bottoms, backend):
        return list(bottoms)


class Convolution(LayerOp):
    def param_shapes(self, layer, bottom_shapes):
        n, c, h, w = _four_d(layer, _one_bottom(layer, bottom_shapes))
        g = conv_geometry(layer)
        if c % g.group or g.num_output % g.group:
            raise LayerError(f"{_where(layer)}: group {g.group} must divide the input channels ({c}) "
                             f"and num_output ({g.num_output})")
        shapes = [(g.num_output, c // g.group) + g.kernel]
        return shapes + [(g.num_output,)] if g.bias_term else shapes

    def top_shapes(self, layer, bottom_shapes):
        n, c, h, w = _four_d(layer, _one_bottom(layer, bottom_shapes))
        g = conv_geometry(layer)
        size = atrous.conv_output_size((h, w), g.kernel, g.stride, g.pad, g.dilation)
        if min(size) < 1:
            raise LayerError(f"{_where(layer)}: input {(n, c, h, w)} is too small for kernel {g.kernel}, "
                             f"dilation {g.dilation}, pad {g.pad}: the output would be {size}")
        return [(n, g.num_output) + tuple(size)]

    def forward(self, layer, blobs, bottoms, backend, cache=None, residual=None, relu_slope=None):
        """``cache``: the net's :class:`atrous.WeightCache` (forms derived from the weights, kept);
        ``residual``, ``relu_slope``: a shortcut sum and a ReLU done as the output is written."""
        g = conv_geometry(layer)
        bias = blobs[1] if len(blobs) > 1 else None
        return [atrous.conv2d(bottoms[0], blobs[0], bias, stride=g.stride, pad=g.pad, dilation=g.dilation,
                              groups=g.group, residual=residual, relu_slope=relu_slope, backend=backend,
                              cache=cache)]


class Pooling(LayerOp):
    def _geometry(self, layer):
        g = pool_geometry(layer)
        if g.round_mode != "CEIL":
            raise LayerError(f"{_where(layer)}: round_mode {g.round_mode} is not supported (Caffe's "
                             f"and DeepLab's pooling is CEIL)")
        if g.pool not in ("MAX", "AVE"):
            raise LayerError(f"{_where(layer)}: pool {g.pool} is not supported (MAX or AVE)")
        return g

    def top_shapes(self, layer, bottom_shapes):
        n, c, h, w = _four_d(layer, _one_bottom(layer, bottom_shapes))
        g = self._geometry(layer)
        if g.global_pooling:
            return [(n, c, 1, 1)]
        if any(p >= k for p, k in zip(g.pad, g.kernel)):
            raise LayerError(f"{_where(layer)}: pad {g.pad} must be smaller than the kernel {g.kernel}")
        size = tuple(L.pool_output_size(s, k, st, p) for s, k, st, p in zip((h, w), g.kernel, g.stride, g.pad))
        if min(size) < 1:
            raise LayerError(f"{_where(layer)}: input {(n, c, h, w)} is smaller than the window {g.kernel}")
        return [(n, c) + size]

    def forward(self, layer, blobs, bottoms, backend):
        g = pool_geometry(layer)
        return [L.pool2d(bottoms[0], None if g.global_pooling else g.kernel, g.stride, g.pad, g.pool.lower(),
                         global_pooling=g.global_pooling, backend=backend)]


class ReLU(LayerOp):
    def forward(self, layer, blobs, bottoms, backend, inplace=False):
        """``inplace``: overwrite the bottom (the net says when nothing else holds it)."""
        slope = layer.params.get("relu_param", {}).get("negative_slope", 0.0)
        return [L.relu(bottoms[0], slope, backend=backend, out=bottoms[0] if inplace else None)]


class Dropout(LayerOp):
    """Identity at test time (Caffe scales during training only)."""


class BatchNorm(LayerOp):
    def param_shapes(self, layer, bottom_shapes):
        c = _four_d(layer, _one_bottom(layer, bottom_shapes))[1]
        if layer.params.get("batch_norm_param", {}).get("use_global_stats", True) is False:
            raise LayerError(f"{_where(layer)}: use_global_stats: false (batch statistics) is not "
                             f"supported; inference uses the stored statistics")
        return [(c,), (c,), (1,)]

    def forward(self, layer, blobs, bottoms, backend):
        eps = layer.params.get("batch_norm_param", {}).get("eps", L.BN_EPS)
        return [L.batch_norm(bottoms[0], blobs[0], blobs[1], blobs[2], eps=eps, backend=backend)]


def batchnorm_eps(layer):
    """``batch_norm_param.eps`` of a BatchNorm layer (1e-5 when not set)."""
    return layer.params.get("batch_norm_param", {}).get("eps", L.BN_EPS)


class Scale(LayerOp):
    def param_shapes(self, layer, bottom_shapes):
        if len(bottom_shapes) != 1:
            raise LayerError(f"{_where(layer)}: only the one-bottom form (learned gamma) is supported, "
                             f"got bottoms {layer.bottoms}")
        c = _four_d(layer, bottom_shapes[0])[1]
        p = layer.params.get("scale_param", {})
        if p.get("axis", 1) != 1 or p.get("num_axes", 1) != 1:
            raise LayerError(f"{_where(layer)}: only axis 1 with num_axes 1 (per channel) is supported, "
                             f"got axis {p.get('axis', 1)}, num_axes {p.get('num_axes', 1)}")
        return [(c,), (c,)] if p.get("bias_term", False) else [(c,)]

    def forward(self, layer, blobs, bottoms, backend):
        return [L.scale(bottoms[0], blobs[0], blobs[1] if len(blobs) > 1 else None, backend=backend)]


class Eltwise(LayerOp):
    def top_shapes(self, layer, bottom_shapes):
        if len(bottom_shapes) < 2 or any(s != bottom_shapes[0] for s in bottom_shapes):
            raise LayerError(f"{_where(layer)}: needs two or more bottoms of one shape, got "
                             f"{dict(zip(layer.bottoms, bottom_shapes))}")
        return [bottom_shapes[0]]

    def forward(self, layer, blobs, bottoms, backend):
        p = layer.params.get("eltwise_param", {})
        operation = p.get("operation", "SUM").lower()
        coeffs = p.get("coeff") or None
        return [L.eltwise(bottoms, operation, coeffs, backend=backend)]


def _interp_arguments(layer):
    p = layer.params.get("interp_param", {})
    return dict(zoom_factor=p.get("zoom_factor"), shrink_factor=p.get("shrink_factor"),
                height=p.get("height"), width=p.get("width"), pad_beg=p.get("pad_beg", 0),
                pad_end=p.get("pad_end", 0))


class Interp(LayerOp):
    def __init__(self, dialect):
        self.dialect = dialect

    def top_shapes(self, layer, bottom_shapes):
        n, c, h, w = _four_d(layer, _one_bottom(layer, bottom_shapes))
        try:
            size = L.interp_output_size(h, w, **_interp_arguments(layer), dialect=self.dialect)
        except (TypeError, ValueError) as exc:
            raise LayerError(f"{_where(layer)}: {exc}") from None
        return [(n, c) + tuple(size)]

    def forward(self, layer, blobs, bottoms, backend):
        return [L.interp(bottoms[0], **_interp_arguments(layer), dialect=self.dialect, backend=backend)]


def _concat_axis(layer, ndim):
    p = layer.params.get("concat_param", {})
    axis = p.get("axis", p.get("concat_dim", 1))
    if not -ndim <= axis < ndim:
        raise LayerError(f"{_where(layer)}: axis {axis} is out of range for {ndim}-D bottoms")
    return axis % ndim


class Concat(LayerOp):
    def top_shapes(self, layer, bottom_shapes):
        axis = _concat_axis(layer, len(bottom_shapes[0]))
        first = bottom_shapes[0]
        for shape in bottom_shapes:
            if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
                raise LayerError(f"{_where(layer)}: bottoms must agree except on axis {axis}, got "
                                 f"{dict(zip(layer.bottoms, bottom_shapes))}")
        return [first[:axis] + (sum(s[axis] for s in bottom_shapes),) + first[axis + 1:]]

    def forward(self, layer, blobs, bottoms, backend):
        return [L.concat(bottoms, _concat_axis(layer, len(bottoms[0].shape)), backend=backend)]


class Split(LayerOp):
    """Every top is the bottom (layers never modify their inputs, so one array serves all)."""

    def forward(self, layer, blobs, bottoms, backend):
        return [bottoms[0]] * len(layer.tops)


class Softmax(LayerOp):
    def forward(self, layer, blobs, bottoms, backend):
        axis = layer.params.get("softmax_param", {}).get("axis", 1)
        return [L.softmax(bottoms[0], axis, backend=backend)]


def _ip_params(layer, shape):
    p = layer.params.get("inner_product_param", {})
    if "num_output" not in p:
        raise LayerError(f"{_where(layer)}: inner_product_param.num_output is required")
    axis = p.get("axis", 1)
    if not -len(shape) <= axis < len(shape):
        raise LayerError(f"{_where(layer)}: axis {axis} is out of range for bottom shape {shape}")
    return int(p["num_output"]), axis % len(shape), bool(p.get("bias_term", True)), bool(p.get("transpose", False))


class InnerProduct(LayerOp):
    def param_shapes(self, layer, bottom_shapes):
        shape = _one_bottom(layer, bottom_shapes)
        num_output, axis, bias_term, transpose = _ip_params(layer, shape)
        k = math.prod(shape[axis:])
        weight = (k, num_output) if transpose else (num_output, k)
        return [weight, (num_output,)] if bias_term else [weight]

    def top_shapes(self, layer, bottom_shapes):
        shape = _one_bottom(layer, bottom_shapes)
        num_output, axis, _, _ = _ip_params(layer, shape)
        return [tuple(shape[:axis]) + (num_output,)]

    def forward(self, layer, blobs, bottoms, backend):
        _, axis, _, transpose = _ip_params(layer, tuple(bottoms[0].shape))
        return [L.inner_product(bottoms[0], blobs[0], blobs[1] if len(blobs) > 1 else None, axis=axis,
                                transpose=transpose, backend=backend)]


def _argmax_params(layer):
    p = layer.params.get("argmax_param", {})
    return p.get("axis"), int(p.get("top_k", 1)), bool(p.get("out_max_val", False))


class ArgMax(LayerOp):
    """Caffe's tie rule: the highest index among equal values (``np.argmax`` keeps the lowest)."""

    def top_shapes(self, layer, bottom_shapes):
        axis, top_k, out_max_val = _argmax_params(layer)
        try:
            return [tuple(L.argmax_output_shape(_one_bottom(layer, bottom_shapes), axis, top_k, out_max_val))]
        except ValueError as exc:
            raise LayerError(f"{_where(layer)}: {exc}") from None

    def forward(self, layer, blobs, bottoms, backend):
        axis, top_k, out_max_val = _argmax_params(layer)
        return [L.argmax(bottoms[0], axis, top_k, out_max_val, backend=backend)]


class DenseCRF(LayerOp):
    """DeepLab's Caffe ``DenseCRF`` layer through :func:`crf.caffe_layer_refine`.

    Bottoms: the upsampled pre-softmax scores (N, L, Hp, Wp), ``data_dim`` (N, 1, 1, 2)
    and the data blob (N, 3, Hp, Wp) (BGR, mean-subtracted, padded). The top is Q
    (or ``log(max(Q, FLT_MIN))`` with ``output_probability: false``), zero outside
    the working region.
    """

    def top_shapes(self, layer, bottom_shapes):
        if len(bottom_shapes) != 3:
            raise LayerError(f"{_where(layer)}: takes bottoms (scores, data_dim, data), got {layer.bottoms}")
        scores, dims, data = bottom_shapes
        if (len(scores) != 4 or tuple(data) != (scores[0], 3) + tuple(scores[2:])
                or math.prod(dims) != 2 * scores[0]):
            raise LayerError(f"{_where(layer)}: scores (N, L, H, W), data_dim (N, 1, 1, 2) and data "
                             f"(N, 3, H, W) do not agree: {scores}, {dims}, {data}")
        self.preset(layer)
        return [scores]

    @staticmethod
    def preset(layer):
        """The layer's ``dense_crf_param`` as a :class:`crf.Preset` (one kernel of each kind)."""
        from crf import Preset
        p = layer.params.get("dense_crf_param", {})
        values = {}
        for key in ("bi_w", "bi_xy_std", "bi_rgb_std", "pos_w", "pos_xy_std"):
            v = p.get(key, [])
            if len(v) != 1:
                raise LayerError(f"{_where(layer)}: dense_crf_param.{key} must hold one value (one "
                                 f"bilateral and one Gaussian kernel are supported), got {v}")
            values[key] = float(v[0])
        return Preset(layer.name, values["bi_w"], values["bi_xy_std"], values["bi_rgb_std"], values["pos_w"],
                      values["pos_xy_std"], int(p.get("max_iter", 10)), "the net's dense_crf_param")

    def forward(self, layer, blobs, bottoms, backend):
        import crf
        scores, dims, data = (np.asarray(b.copy_to_host() if hasattr(b, "copy_to_host") else b)
                              for b in bottoms)
        preset = self.preset(layer)
        dims = dims.reshape(scores.shape[0], 2)
        q = np.stack([crf.caffe_layer_refine(scores[n], data[n], (int(dims[n, 0]), int(dims[n, 1])),
                                             preset=preset, backend=backend)
                      for n in range(scores.shape[0])])
        if not layer.params.get("dense_crf_param", {}).get("output_probability", True):
            q = np.log(np.maximum(q, np.finfo(np.float32).tiny)).astype(np.float32)
        return [q]


def make_ops(dialect):
    """The supported layer types, by type string, for a net of ``dialect`` ("new" or "v1")."""
    return {"Convolution": Convolution(), "Pooling": Pooling(), "ReLU": ReLU(), "Dropout": Dropout(),
            "BatchNorm": BatchNorm(), "Scale": Scale(), "Eltwise": Eltwise(),
            "Interp": Interp("v1" if dialect == "v1" else "v2"), "Concat": Concat(), "Split": Split(),
            "Softmax": Softmax(), "InnerProduct": InnerProduct(), "ArgMax": ArgMax(), "DenseCRF": DenseCRF()}


#: Layers that produce the net's input: the caller's array takes their place.
INPUT_TYPES = ("Input", "Data", "ImageData", "ImageSegData")

#: Layers that only write files, measure accuracy or swallow blobs: not run.
SKIPPED_TYPES = ("MatWrite", "SegAccuracy", "Silence")
