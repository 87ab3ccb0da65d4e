"""The official DeepLab networks by name, with DeepLab's pre- and post-processing.

Models (network definitions shipped in ``nets/data/prototxt``; the weights are the
released caffemodels, converted with :func:`nets.convert` or read directly):

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

Preprocessing (DeepLab's test ``transform_param`` and data layer): RGB uint8 ->
BGR, subtract the means B 104.008, G 116.669, R 122.675 (no /255), pad bottom and
right to 513x513 with the mean colour (0 after the subtraction). Post-processing:
the top-left HxW of the 513x513 scores, softmax over the labels, argmax.

References
----------
L.-C. Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully
Connected CRFs", ICLR 2015; "DeepLab: Semantic Image Segmentation with Deep Convolutional
Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3 and 4.
"""
import zipfile
from dataclasses import dataclass
from importlib import resources

import numpy as np

from nets import layers as L
from nets.caffe import LayerSpec, NetSpec, read_caffemodel, read_prototxt
from nets.convert import load_npz
from nets.graph import Net

#: Per-channel means subtracted from the BGR image (DeepLab's transform_param).
MEAN_BGR = (104.008, 116.669, 122.675)

#: Side of the padded input of every DeepLab test net.
CROP_SIZE = 513


@dataclass(frozen=True)
class ModelInfo:
    """One named model: its prototxt, the blob holding its scores and its CRF preset."""

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


def _info(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name]


def prototxt_path(name):
    """Path of the shipped prototxt a model is built from."""
    return resources.files("nets") / "data" / "prototxt" / _info(name).prototxt


def model_spec(name, num_labels=21):
    """The network of a named model.

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


def preprocess(image, crop_size=CROP_SIZE):
    """DeepLab's input blob for an RGB image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8, RGB
    crop_size : int
        The side the image is padded to (bottom and right). An image larger than
        that is padded to its own size on that axis instead (the net is reshaped
        to any input; DeepLab's Caffe would have taken a centre crop).

    Returns
    -------
    ndarray of shape (1, 3, max(H, crop), max(W, crop)), float32
        BGR minus :data:`MEAN_BGR`, zero (the mean colour) in the padding.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0-255, as DeepLab read it with OpenCV), got dtype {image.dtype}")
    h, w = image.shape[:2]
    out = np.zeros((1, 3, max(h, crop_size), max(w, crop_size)), np.float32)
    bgr = image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)  # (3, H, W)
    out[0, :, :h, :w] = bgr - np.array(MEAN_BGR, np.float32)[:, None, None]
    return out


@dataclass
class Prediction:
    """What a model says about one image.

    Attributes
    ----------
    scores : ndarray of shape (L, H, W), float32
        The network's pre-softmax scores (``fc8_interp`` / ``fc1_interp``), top-left HxW.
    probabilities : ndarray of shape (L, H, W), float32
        Softmax of the scores over the labels (or the CRF's marginals with ``crf=True``).
    labels : ndarray of shape (H, W), int64
        Argmax over the labels (Caffe's tie rule: the highest label among equals).
    """

    scores: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray


def label_map(scores):
    """The (H, W) int64 labels of (L, H, W) scores or marginals, with Caffe's ArgMax tie rule."""
    return L.argmax(np.asarray(scores, np.float32)[None], axis=1, backend="numpy")[0, 0].astype(np.int64)


def postprocess(scores, height, width):
    """Crop the top-left ``height`` x ``width`` of (L, H', W') scores; softmax and argmax.

    Returns
    -------
    Prediction
    """
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 3 or scores.shape[1] < height or scores.shape[2] < width:
        raise ValueError(f"scores must be (L, H', W') with H' >= {height} and W' >= {width}, got {scores.shape}")
    s = np.ascontiguousarray(scores[:, :height, :width])
    probabilities = L.softmax(s[None], axis=1, backend="numpy")[0]
    return Prediction(s, probabilities, label_map(s))


class DeepLab:
    """A named DeepLab model with its weights.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    weights : str, PathLike, NetSpec or mapping
        A converted ``.npz`` (:func:`nets.convert`), a ``.caffemodel``, a decoded
        caffemodel, or blobs by layer name.
    num_labels : int

    Example
    -------
    >>> model = DeepLab("deeplab-v2-resnet101-msc", "resnet101_msc.npz")   # doctest: +SKIP
    >>> labels = model.predict(image).labels                                  # doctest: +SKIP
    """

    def __init__(self, name, weights, num_labels=21):
        self.info = _info(name)
        spec = model_spec(name, num_labels)
        if isinstance(weights, str) or hasattr(weights, "__fspath__"):
            weights = load_npz(weights)[1] if zipfile.is_zipfile(weights) else read_caffemodel(weights)
        self.net = Net.from_spec(spec, weights)

    def predict(self, image, crf=False, backend="auto", crop_size=CROP_SIZE):
        """Segment an RGB image.

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8, RGB
        crf : bool
            Refine with DeepLab's fully connected CRF (:func:`crf.deeplab_refine`, the
            model's VOC preset); ``probabilities`` are then the CRF's marginals.
        backend : {"numpy", "cpu", "cuda", "auto"}
        crop_size : int
            Padded input side (513 as DeepLab; smaller sizes are for quick tests).

        Returns
        -------
        Prediction
        """
        data = preprocess(image, crop_size)
        scores = self.net.forward(data, outputs=[self.info.scores], backend=backend)[self.info.scores][0]
        result = postprocess(scores, image.shape[0], image.shape[1])
        if crf:
            import crf as dense_crf
            q = dense_crf.deeplab_refine(np.ascontiguousarray(image), result.scores, preset=self.info.crf_preset,
                                         backend=backend)
            result = Prediction(result.scores, q, label_map(q))
        return result


def load(name, weights, num_labels=21):
    """``DeepLab(name, weights)``: a named model ready to :meth:`~DeepLab.predict`."""
    return DeepLab(name, weights, num_labels)
