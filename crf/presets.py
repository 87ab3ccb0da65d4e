"""DeepLab's CRF settings and its two ways of running the CRF.

``PRESETS`` holds the VOC 2012 values (10 mean-field iterations each) with
where they come from. :func:`deeplab_refine` is the offline tool that gave the
papers' numbers (``densecrf/refine_pascal_v4/dense_inference.cpp``): RGB uint8
image, unpadded; unary = -score of the top-left H x W of the upsampled scores;
per-pixel normalisation. :func:`caffe_layer_refine` is the Caffe ``DenseCRF``
layer: the BGR, mean-subtracted, padded data blob as colours and a working
region of ``data_dim``. The two differ on a fraction of a percent of the
pixels: the permutohedral lattice is not invariant to the colour order and
offset (about 0.4% of the labels on a 500x375 photograph, with pydensecrf).

References
----------
L.-C. Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets
and Fully Connected CRFs", ICLR 2015, section 4; "DeepLab: ...", TPAMI 2018, section 4.1.
"""
from dataclasses import dataclass, fields, replace
from numbers import Integral

import numpy as np

from crf import reduced
from crf.backend import is_device_array
from crf.densecrf import DenseCRF, bilateral_features, finite_number, positive_number


@dataclass(frozen=True)
class Preset:
    """Dense CRF parameters in the papers' notation (w1, theta_alpha, theta_beta, w2, theta_gamma)."""

    name: str
    w_bilateral: float
    theta_alpha: float
    theta_beta: float
    w_gaussian: float
    theta_gamma: float
    iterations: int
    source: str

    def __post_init__(self):
        for name in ("w_bilateral", "w_gaussian"):
            finite_number(name, getattr(self, name))
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            positive_number(name, getattr(self, name))
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, Integral) or self.iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {self.iterations!r}")

    def values(self):
        """The CRF's parameters, ``{name: value}`` in the order of :data:`PARAMETERS`."""
        return {name: getattr(self, name) for name in PARAMETERS}

    def with_values(self, **values):
        """This preset with some parameters changed, named ``"NAME:key=value,..."`` (the changed ones).

        The name reads back: ``get_preset(p.with_values(theta_alpha=80).name)`` is the same
        preset again. Values are checked as in the constructor.
        """
        unknown = sorted(set(values) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown CRF parameter {unknown[0]!r}; expected one of {list(PARAMETERS)}")
        if not values:
            return self
        base, _, earlier = self.name.partition(":")
        changed = {**_parse_values(earlier), **values}
        changed = {k: changed[k] for k in PARAMETERS if k in changed}  # one order, whatever the call's
        text = ",".join(f"{k}={_format(v)}" for k, v in changed.items())
        source = self.source.partition("; changed: ")[0]
        return replace(self, name=f"{base}:{text}", source=f"{source}; changed: {text}", **values)

    def scaled(self, factor):
        """The same CRF for the image resized by ``factor``: theta_alpha and theta_gamma, widths in
        pixels, times ``factor``; theta_beta, a width in colour, unchanged (:mod:`crf.reduced`)."""
        if (isinstance(factor, bool) or not isinstance(factor, (int, float, np.floating))
                or not np.isfinite(factor) or factor <= 0):
            raise ValueError(f"factor must be a positive number, got {factor!r}")
        return replace(self, name=f"{self.name} x{factor:.4g}", theta_alpha=self.theta_alpha * factor,
                       theta_gamma=self.theta_gamma * factor)


PRESETS = {p.name: p for p in (
    Preset("deeplab-v1-largefov-voc", 4, 121, 5, 3, 3, 10,
           "DeepLab v1 model page's per-model list as quoted by CoinCheung/Deeplab-Large-FOV "
           "utils/crf.py (not verified against the official page)"),
    Preset("deeplab-v2-resnet101-voc", 4, 67, 3, 3, 1, 10,
           "liangchiehchen.com/projects/DeepLabv2_resnet.html as quoted by halbielee/EPS README; "
           "kazuto1011/deeplab-pytorch configs/voc12.yaml"),
    Preset("deeplab-v2-vgg16-voc", 4, 65, 3, 2, 2, 10,
           "secondary sources only (code comments found by search)"),
)}


#: The parameters a preset sets, as :meth:`Preset.with_values` and ``"NAME:key=value"`` name them.
PARAMETERS = tuple(f.name for f in fields(Preset) if f.name not in ("name", "source"))


def _format(value):
    """A parameter value as text that reads back to the same number (``4``, ``67.5``, ``0.1``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _parse_values(text):
    """``"theta_alpha=80,w_bilateral=5"`` -> ``{"theta_alpha": 80.0, "w_bilateral": 5.0}`` (iterations: int)."""
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in PARAMETERS:
            raise ValueError(f"{item!r} is not 'parameter=value' with a parameter among {list(PARAMETERS)}")
        if key in values:
            raise ValueError(f"{key} is given twice")
        try:
            values[key] = int(value) if key == "iterations" else float(value)
        except ValueError:
            what = "an integer" if key == "iterations" else "a number"
            raise ValueError(f"{key} must be {what}, got {value!r}") from None
    return values


def override(preset, text, given=None):
    """``preset`` with the parameters of ``text`` changed: ``"theta_alpha=80,w_bilateral=5"``.

    The command line's ``--preset NAME:key=value,...`` (and ``--crf``), for any base preset.
    An error names ``given`` (what the user wrote, e.g. ``"auto:theta_alpha=x"``), by default
    ``NAME:text``.
    """
    try:
        return preset.with_values(**_parse_values(text))
    except ValueError as exc:
        raise ValueError(f"CRF preset {given or f'{preset.name}:{text}'}: {exc}") from None


def get_preset(preset):
    """A :class:`Preset` from itself, its name, or a name with changed parameters.

    ``"deeplab-v2-resnet101-voc:theta_alpha=80,w_bilateral=5"`` is that preset with
    theta_alpha 80 and w_bilateral 5; the parameters are those of :data:`PARAMETERS`.
    """
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a Preset or a preset name, got {type(preset).__name__}")
    name, sep, changes = preset.partition(":")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return override(PRESETS[name], changes) if sep else PRESETS[name]


def _check_scores(scores, height, width):
    s = np.asarray(scores)
    if s.ndim != 3 or s.shape[1] < height or s.shape[2] < width:
        raise ValueError(f"scores must have shape (L, H', W') with H' >= {height} and W' >= {width} "
                         f"(the image's size), got {s.shape}")
    s = s[:, :height, :width]
    if s.shape[0] >= 2 and s.min() >= 0 and s.max() <= 1 and np.allclose(s.sum(axis=0), 1, atol=1e-3):
        raise ValueError("scores look like probabilities (values in [0, 1] that sum to 1 over the "
                         "labels); DeepLab's CRF takes the pre-softmax scores: pass np.log(probabilities)")
    return s


def deeplab_crf(image, scores, preset="deeplab-v2-resnet101-voc", backend="auto", max_side=None):
    """The model of :func:`deeplab_refine` before inference: a :class:`DenseCRF` with the preset's
    kernels, the bilateral one first (run ``.inference(get_preset(preset).iterations)``;
    ``.summary()`` gives sizes and times).

    With ``max_side`` and an image whose long side is longer, the model of the image and the
    scores reduced to that long side, the preset scaled with them (:mod:`crf.reduced`): its
    Q is (L, h, w), for :func:`crf.reduced.enlarge_marginals`.
    """
    p = get_preset(preset)
    device = is_device_array(scores)
    if not (isinstance(image, np.ndarray) or is_device_array(image)) or len(image.shape) != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', image)!r}")
    height, width = image.shape[:2]
    small = (height, width) if max_side is None else reduced.reduced_shape(height, width, max_side)
    if small != (height, width):
        if device or is_device_array(image):
            raise ValueError("max_side needs the image and the scores on the host, got a CUDA device array")
        factor = max(small) / max(height, width)
        s = reduced.shrink_scores(_check_scores(scores, height, width), small)
        image, scores, p = reduced.shrink_image(image, small), s, p.scaled(factor)
    if device:  # scores on the GPU: the unary is made there, and the CRF runs there
        from crf import cuda as crf_cuda
        crf = DenseCRF(crf_cuda.crop(scores, image.shape[0], image.shape[1], negate=True), backend=backend)
    else:
        s = _check_scores(scores, image.shape[0], image.shape[1])
        crf = DenseCRF(-np.asarray(s, dtype=np.float32), backend=backend)  # unary = -score
    crf.add_bilateral(image, p.theta_alpha, p.theta_beta, p.w_bilateral)
    crf.add_gaussian(p.theta_gamma, p.w_gaussian)
    return crf


def deeplab_refine(image, scores, preset="deeplab-v2-resnet101-voc", backend="auto", max_side=None):
    """DeepLab's offline CRF: refine pre-softmax scores with an RGB image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8, RGB
        A CUDA device array as well when ``scores`` is one.
    scores : ndarray of shape (L, H', W'), H' >= H, W' >= W
        The upsampled network scores (e.g. 513 x 513); the top-left H x W is used.
        A float32 CUDA device array keeps the whole CRF on the GPU.
    preset : str or Preset
    backend : {"numpy", "cpu", "cuda", "auto"}
    max_side : int, optional
        Refine an image whose long side is longer than this at a reduced size, with the long
        side ``max_side`` (host arrays only; :mod:`crf.reduced`), for an image whose CRF
        would not fit in memory (:mod:`crf.memory`). Q is enlarged back to (L, H, W).

    Returns
    -------
    ndarray of shape (L, H, W), float32
        Q after ``preset.iterations`` updates; ``Q.argmax(0)`` is the labelling.
        A device array for device scores.
    """
    q = deeplab_crf(image, scores, preset, backend, max_side).inference(get_preset(preset).iterations)
    return reduced.enlarge_marginals(q, image.shape[:2])


def deeplab_refine_each(image, scores, presets, backend="auto"):
    """:func:`deeplab_refine` of one image with each of several presets, each lattice built once.

    Presets with the same theta_alpha, theta_beta and theta_gamma differ only in their weights
    and iterations, which change no lattice: they share one model (:meth:`DenseCRF.set_weight`).
    Every Q is the one ``deeplab_refine(image, scores, preset, backend)`` gives, to the bit.

    Yields
    ------
    (int, ndarray of shape (L, H, W), float32)
        The preset's position in ``presets`` and its Q, the presets of one model together.
    """
    presets = [get_preset(p) for p in presets]
    groups = {}
    for k, p in enumerate(presets):
        groups.setdefault((p.theta_alpha, p.theta_beta, p.theta_gamma), []).append(k)
    for members in groups.values():
        model = deeplab_crf(image, scores, presets[members[0]], backend)
        for k in members:
            model.set_weight(0, presets[k].w_bilateral)  # deeplab_crf adds the bilateral kernel first
            model.set_weight(1, presets[k].w_gaussian)
            yield k, model.inference(presets[k].iterations)


def caffe_layer_refine(scores, data, data_dim, preset="deeplab-v2-resnet101-voc", backend="auto"):
    """DeepLab's Caffe ``DenseCRF`` layer for one image.

    Parameters
    ----------
    scores : ndarray of shape (L, Hp, Wp)
        Upsampled pre-softmax scores (bottom[0]).
    data : ndarray of shape (3, Hp, Wp)
        The network's input blob: BGR, mean-subtracted, padded (bottom[2]).
    data_dim : (int, int)
        The real (height, width) of the image (bottom[1]).
    preset, backend : see :func:`deeplab_refine`

    Returns
    -------
    ndarray of shape (L, Hp, Wp), float32
        Q in the working region (the padded size if the image was cropped,
        else the real size, top-left), zeros elsewhere.
    """
    p = get_preset(preset)
    s = np.asarray(scores, dtype=np.float32)
    x = np.asarray(data, dtype=np.float32)
    if s.ndim != 3 or x.shape != (3,) + s.shape[1:]:
        raise ValueError(f"scores (L, Hp, Wp) and data (3, Hp, Wp) must agree, got {s.shape} and {x.shape}")
    s = _check_scores(s, *s.shape[1:])
    hp, wp = s.shape[1:]
    h, w = (int(v) for v in data_dim)
    if h < 1 or w < 1:
        raise ValueError(f"data_dim must be a positive (height, width), got {data_dim!r}")
    h, w = (hp, wp) if hp <= h and wp <= w else (min(h, hp), min(w, wp))
    crf = DenseCRF(-s[:, :h, :w], backend=backend)
    colours = np.ascontiguousarray(x[:, :h, :w].transpose(1, 2, 0))  # (h, w, 3) BGR, mean-centred
    feats = bilateral_features(colours, p.theta_alpha, p.theta_beta).T.reshape(5, h, w)
    crf.add_kernel(feats, p.w_bilateral)
    crf.add_gaussian(p.theta_gamma, p.w_gaussian)
    out = np.zeros_like(s)
    out[:, :h, :w] = crf.inference(p.iterations)
    return out
