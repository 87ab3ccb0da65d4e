"""Deploy variants of DeepLab's test nets, for other Caffe implementations (OpenCV's DNN module).

The released test prototxts cannot be read by a stock Caffe importer: they start
with DeepLab's ``ImageSegData`` layer, end in ``MatWrite``/``SegAccuracy``/``Silence``,
and their ``Interp`` layers size outputs with ``shrink_factor``, which OpenCV
computes differently from DeepLab's Caffe. :func:`deploy_spec` rewrites a net
into the plain form every importer reads:

* an ``Input`` layer with an explicit shape replaces the data layer;
* layers that write files, measure accuracy, swallow blobs or need the label
  (MatWrite, SegAccuracy, Silence, DenseCRF) are removed;
* every ``Interp`` gets explicit ``height``/``width``, computed with DeepLab's
  rules for that input size (:func:`nets.layers.interp_output_size`);
* the result is in the new dialect (DeepLab v1's ``hole`` becomes ``dilation``).

Write it with :func:`nets.caffe.format_prototxt`. The learned blobs are
unchanged, so the original caffemodel serves the deploy net as well.
"""
from nets.caffe import LayerSpec, NetSpec
from nets.engine.net import Net
from nets.engine.ops import INPUT_TYPES, SKIPPED_TYPES

_REMOVED = SKIPPED_TYPES + ("DenseCRF",)


def deploy_spec(spec, input_shape):
    """A deploy net equivalent to ``spec`` for inputs of ``input_shape``.

    Parameters
    ----------
    spec : NetSpec
        A network (its TEST phase is used), e.g. a released DeepLab test prototxt.
    input_shape : tuple of int
        ``(N, C, H, W)`` of the data blob.

    Returns
    -------
    NetSpec
        New dialect, an ``Input`` layer named after the data blob, explicit Interp sizes.
    """
    net = Net(spec)
    input_shape = tuple(int(d) for d in input_shape)
    shapes = net.infer_shapes({net.inputs[0]: input_shape}, check=False)
    data = net.inputs[0]
    layers = [LayerSpec(name=data, type="Input", tops=[data], source_type="Input",
                      params={"input_param": {"shape": [{"dim": list(input_shape)}]}})]
    for layer in net.spec.layers:
        if layer.type in INPUT_TYPES or layer.type in _REMOVED:
            continue
        params = dict(layer.params)
        if layer.type == "Interp":
            _, _, height, width = shapes[layer.tops[0]]
            params["interp_param"] = {"height": int(height), "width": int(width)}
        layers.append(LayerSpec(name=layer.name, type=layer.type, bottoms=list(layer.bottoms),
                                tops=list(layer.tops), params=params, param_specs=list(layer.param_specs),
                                source_type=layer.type))
    return NetSpec(name=spec.name, layers=layers, dialect="new")
