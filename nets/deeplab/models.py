"""The DeepLab models by name: the official networks and the embedded demo nets.

Official models (network definitions shipped in ``nets/data/prototxt``; the weights are
the released caffemodels, converted with :func:`nets.convert` or read directly):

=============================  =============================================  ==============
name                           network                                        released weights
=============================  =============================================  ==============
``deeplab-v1-largefov``        ``v1_largefov_test.prototxt`` (V1 dialect)     ``train2_iter_8000.caffemodel``
``deeplab-v2-vgg16-aspp-l``    ``v2_vgg16_aspp_l_test.prototxt``               ``train_iter_20000.caffemodel``
``deeplab-v2-resnet101-msc``   ``v2_resnet101_aspp_msc_test.prototxt``         ``train_iter_20000.caffemodel``
``deeplab-v2-resnet101``       the MSC net's scale-1 tower alone (below)       the MSC model's weights
=============================  =============================================  ==============

``deeplab-v2-resnet101`` is derived from the MSC test net: its 0.5 and 0.75 towers
and the max fusion are removed and ``fc1_interp`` reads ``fc1_voc12`` directly, so
the released MSC caffemodel serves it unchanged (its layer names are the tower's).

Demo models (``demo-largefov``, ``demo-aspp``; ``nets/data/demo``): DeepLab's LargeFOV
and ASPP heads in miniature, trained on the procedural data set
(:mod:`nets.deeplab.shapes_dataset`) and shipped as a deploy prototxt and a real
caffemodel each, read by the same Caffe reader as the official files. They know only
those shapes: their labels on a photograph mean nothing.

References
----------
L.-C. Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully
Connected CRFs", ICLR 2015; "DeepLab: Semantic Image Segmentation with Deep Convolutional
Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3 and 4.
"""
import json
from dataclasses import dataclass
from importlib import resources

from nets.caffe import LayerSpec, NetSpec, read_prototxt

#: Per-channel means subtracted from the BGR image (DeepLab's transform_param).
MEAN_BGR = (104.008, 116.669, 122.675)

#: Side of the padded input of every DeepLab test net.
CROP_SIZE = 513

#: Class names of PASCAL VOC 2012, index = label; 255 is "void" (ignored).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


@dataclass(frozen=True)
class ModelInfo:
    """One official model: its prototxt, the blob holding its scores and its CRF preset."""

    name: str
    prototxt: str
    scores: str
    crf_preset: str
    single_scale: bool = False


MODELS = {m.name: m for m in (
    ModelInfo("deeplab-v1-largefov", "v1_largefov_test.prototxt", "fc8_interp", "deeplab-v1-largefov-voc"),
    ModelInfo("deeplab-v2-vgg16-aspp-l", "v2_vgg16_aspp_l_test.prototxt", "fc8_interp", "deeplab-v2-vgg16-voc"),
    ModelInfo("deeplab-v2-resnet101-msc", "v2_resnet101_aspp_msc_test.prototxt", "fc1_interp",
              "deeplab-v2-resnet101-voc"),
    ModelInfo("deeplab-v2-resnet101", "v2_resnet101_aspp_msc_test.prototxt", "fc1_interp",
              "deeplab-v2-resnet101-voc", single_scale=True),
)}

#: The embedded demo models by name -> their key in ``nets/data/demo/demo.json``.
DEMO_MODELS = {"demo-largefov": "largefov", "demo-aspp": "aspp"}


def _info(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name]


def prototxt_path(name):
    """Path of the shipped prototxt a model is built from."""
    return resources.files("nets") / "data" / "prototxt" / _info(name).prototxt


def model_spec(name, num_labels=21):
    """The network of a named official model.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    num_labels : int
        ``${NUM_LABELS}`` of the released templates (21 for PASCAL VOC).

    Returns
    -------
    NetSpec
    """
    info = _info(name)
    with resources.as_file(prototxt_path(name)) as path:
        spec = read_prototxt(path, NUM_LABELS=num_labels)
    return _single_scale(spec) if info.single_scale else spec


def _single_scale(spec):
    """The MSC test net without its 0.5 and 0.75 towers and the max fusion."""
    layers = []
    for layer in spec.layers:
        if "res05" in layer.name or "res075" in layer.name or layer.name == "fc_fusion":
            continue
        if layer.name == "fc1_interp":
            layer = LayerSpec(name=layer.name, type=layer.type, bottoms=["fc1_voc12"], tops=list(layer.tops),
                              params=dict(layer.params), source_type=layer.source_type)
        layers.append(layer)
    return NetSpec(name=spec.name, layers=layers, inputs=list(spec.inputs),
                   input_shapes=list(spec.input_shapes), dialect=spec.dialect, options=dict(spec.options))


def demo_dir():
    """The folder of the embedded demo models and their held-out samples."""
    return resources.files("nets") / "data" / "demo"


def demo_manifest():
    """``demo.json`` of the demo models (classes, input size, models, CRF preset), or None if absent."""
    path = demo_dir() / "demo.json"
    return json.loads(path.read_text()) if path.is_file() else None


def demo_preset():
    """The demo's tuned CRF preset (``crf_preset`` in ``demo.json``), or None before it is recorded."""
    manifest = demo_manifest()
    if manifest is None or "crf_preset" not in manifest:
        return None
    import crf
    return crf.Preset(**manifest["crf_preset"])


def demo_files(name):
    """The demo model's shipped ``(prototxt, caffemodel)`` resources.

    Raises
    ------
    ValueError
        Not a demo model name.
    """
    if name not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {name!r}; known: {sorted(DEMO_MODELS)}")
    entry = (demo_manifest() or {}).get("models", {}).get(DEMO_MODELS[name], {})
    stem = f"shapes_{DEMO_MODELS[name]}"
    folder = demo_dir()
    return folder / entry.get("prototxt", stem + ".prototxt"), folder / entry.get("caffemodel", stem + ".caffemodel")
