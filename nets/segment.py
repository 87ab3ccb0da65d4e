"""Segmenting images: a model by name or by file, DeepLab's pipeline, timings per stage.

The pipeline (Chen et al., TPAMI 2018, Sec. 3 and 4)::

    RGB image -> [resize rule] -> preprocess (BGR, minus mean, pad to the crop size)
              -> network (optionally at several scales, MAX-fused) -> x8 Interp
              -> crop to the image -> softmax | dense CRF -> argmax -> labels

Models (:func:`load_model`)
    * an official DeepLab model by name (:data:`nets.deeplab.MODELS`), with its
      released ``.caffemodel`` (converted on the fly) or a converted ``.npz``;
    * an embedded demo model by name, ``demo-largefov`` or ``demo-aspp``
      (``nets/data/demo``: a deploy prototxt and a real caffemodel, read by the same
      Caffe reader as the official files; 97x97 input, no weights to download);
    * a network file: a converted ``.npz`` (weights inside), or a ``.prototxt``
      with ``weights=`` a ``.caffemodel`` or ``.npz``.

Images larger than the crop size (513 for DeepLab, 97 for the demo nets)
    DeepLab's test nets take at most ``crop x crop`` pixels (its Caffe data layer
    would take a centre crop). Here such an image is never cropped: it is resized
    so that its long side equals the crop size (pillow's bilinear filter, which
    averages when it shrinks; the short side rounded, at least 1), with a
    ``UserWarning``; the network and the CRF run at that size; the labels are brought
    back to the original size by nearest neighbour and the probabilities and scores
    by Caffe's Interp (bilinear, aligned corners). Smaller images are padded
    bottom/right with the mean colour, as in DeepLab.

Scales (``scales=(1, 0.75, 0.5)``, single-scale nets only)
    As the v2 MSC prototxt does it: the padded ``crop x crop`` input is resized by a
    Caffe Interp to ``floor((crop - 1) s) + 1`` pixels (513 -> 385 and 257, exactly
    the MSC net's ``shrink 4 zoom 3`` and ``shrink 2``); the net runs up to the blob
    below its final Interp; each score map is Interp'ed to the scale-1 score map's
    size; the maps are fused by an elementwise MAX; the final Interp (zoom 8) runs
    on the fused map. A net that already resizes its own input (the MSC net) refuses
    the option.

References
----------
L.-C. Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully
Connected CRFs", ICLR 2015; "DeepLab: Semantic Image Segmentation with Deep Convolutional
Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3.1-3.3 and 4.
"""
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from PIL import Image

from nets import layers as L
from nets.caffe import read_caffemodel, read_prototxt
from nets.convert import load_npz
from nets.deeplab import CROP_SIZE, MODELS, label_map, model_spec, postprocess, preprocess
from nets.graph import Net
from nets.imageio import VOC_CLASSES, read_image

#: The embedded demo models by name -> their key in ``nets/data/demo/demo.json``.
DEMO_MODELS = {"demo-largefov": "largefov", "demo-aspp": "aspp"}


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


@dataclass
class Model:
    """A network ready to segment images.

    Attributes
    ----------
    name : str
        The model's name, or the file it came from.
    net : Net
    scores : str
        The blob holding the full-resolution pre-softmax scores (``fc8_interp``).
    crop_size : int
        Side of the padded square input (513, or 97 for the demo nets).
    crf_preset : crf.Preset or str or None
        The CRF settings that go with the model (``crf="auto"``).
    classes : tuple of str or None
        Class names by label.
    """

    name: str
    net: Net
    scores: str
    crop_size: int
    crf_preset: object = None
    classes: tuple = None

    @property
    def multi_scale(self):
        """True when the net resizes its own input (the MSC net): ``scales`` is refused then."""
        return any(layer.type == "Interp" and set(layer.bottoms) & set(self.net.inputs)
                   for layer in self.net.spec.layers)


def _weights(path):
    """Blobs by layer name from a ``.caffemodel`` or a converted ``.npz``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such weights file (expected a .caffemodel or a converted .npz)")
    return load_npz(path)[1] if zipfile.is_zipfile(path) else read_caffemodel(path)


def _score_blob(net):
    """The last output written by an Interp layer (DeepLab's ``fc8_interp``), else the last output."""
    interp_tops = [t for layer in net.spec.layers if layer.type == "Interp" for t in layer.tops]
    candidates = [o for o in net.outputs if o in interp_tops]
    return (candidates or net.outputs)[-1]


def _declared_crop(net):
    """The side of a declared square input, else DeepLab's 513."""
    shapes = net.spec.input_shapes
    shape = tuple(shapes[0]) if shapes else None
    if shape and len(shape) == 4 and shape[2] == shape[3] and shape[2]:
        return int(shape[2])
    return CROP_SIZE


def load_model(model, weights=None, num_labels=21):
    """A :class:`Model` from a name or a file.

    Parameters
    ----------
    model : str or PathLike or Model
        An official name (:data:`nets.deeplab.MODELS`), ``demo-largefov`` /
        ``demo-aspp``, a converted ``.npz`` or a ``.prototxt``.
    weights : str or PathLike, optional
        ``.caffemodel`` or converted ``.npz``. Required for official models and
        prototxts; replaces the shipped weights of a demo model.
    num_labels : int
        ``${NUM_LABELS}`` of the official templates.

    Raises
    ------
    ValueError
        An unknown name, a missing file, missing weights, or an unreadable or
        mismatching weight file (the message names the file).
    """
    if isinstance(model, Model):
        return model
    name = os.fspath(model)
    if name in MODELS:
        if weights is None:
            raise ValueError(f"model {name!r} needs its weights: pass the released .caffemodel or a converted "
                             f".npz (weights=... / --weights); see the README for where to obtain them")
        net = Net.from_spec(model_spec(name, num_labels), _weights(weights))
        info = MODELS[name]
        return Model(name, net, info.scores, CROP_SIZE, info.crf_preset, VOC_CLASSES)
    if name in DEMO_MODELS:
        folder = demo_dir()
        manifest = demo_manifest() or {}
        entry = manifest.get("models", {}).get(DEMO_MODELS[name], {})
        stem = f"shapes_{DEMO_MODELS[name]}"
        prototxt = folder / entry.get("prototxt", stem + ".prototxt")
        caffemodel = folder / entry.get("caffemodel", stem + ".caffemodel")
        if not prototxt.is_file() or (weights is None and not caffemodel.is_file()):
            raise ValueError(f"demo model {name!r}: {prototxt} or {caffemodel} is missing from the package "
                             f"(regenerate them with tools/train_demo.py)")
        with resources.as_file(prototxt) as p:
            spec = read_prototxt(p)
        with resources.as_file(caffemodel) as c:
            net = Net.from_spec(spec, _weights(weights if weights is not None else c))
        from nets import shapes
        classes = tuple(manifest.get("classes", shapes.CLASSES))
        crop = int(manifest.get("input_size", _declared_crop(net)))
        return Model(name, net, _score_blob(net), crop, demo_preset(), classes)
    if not os.path.isfile(name):
        raise ValueError(f"{name}: not a model name ({sorted(MODELS) + sorted(DEMO_MODELS)}) and no such file")
    if zipfile.is_zipfile(name):
        spec, stored = load_npz(name)
        net = Net.from_spec(spec, stored if weights is None else _weights(weights))
    else:
        if weights is None:
            raise ValueError(f"{name}: a prototxt needs weights (a .caffemodel or converted .npz)")
        net = Net.from_spec(read_prototxt(name, NUM_LABELS=num_labels), _weights(weights))
    return Model(name, net, _score_blob(net), _declared_crop(net))


def resolve_preset(crf_preset, model=None):
    """The CRF preset to use: None, a :class:`crf.Preset`, a preset name, ``"auto"`` or ``"none"``.

    ``"auto"`` is the model's own preset (DeepLab's VOC values for the official
    models, the tuned preset for the demo nets); ``"none"``/None runs no CRF.
    ``"deeplab-demo-shapes"`` names the demo's tuned preset.
    """
    if crf_preset is None or (isinstance(crf_preset, str) and crf_preset.lower() == "none"):
        return None
    import crf
    if isinstance(crf_preset, crf.Preset):
        return crf_preset
    if crf_preset == "auto":
        if model is None or model.crf_preset is None:
            name = model.name if model is not None else "no model"
            raise ValueError(f"crf='auto': {name} has no CRF preset of its own; name one of "
                             f"{sorted(crf.PRESETS)}")
        return crf.get_preset(model.crf_preset)
    demo = demo_preset()
    if demo is not None and crf_preset == demo.name:
        return demo
    known = sorted(crf.PRESETS) + ([demo.name] if demo is not None else [])
    if crf_preset not in known:
        raise ValueError(f"unknown CRF preset {crf_preset!r}; expected 'none', 'auto' or one of {known}")
    return crf.get_preset(crf_preset)


@dataclass
class Segmentation:
    """The result of :func:`segment_image`.

    Attributes
    ----------
    labels : ndarray of shape (H, W), uint8
        Class per pixel (argmax, Caffe's tie rule).
    probabilities : ndarray of shape (L, H, W), float32
        Softmax of the scores, or the CRF's marginals Q when a CRF ran.
    scores : ndarray of shape (L, H, W), float32
        The network's pre-softmax scores.
    timings : dict of str to float
        Seconds per stage: ``resize``, ``preprocess``, ``network``, ``crf``, ``postprocess``.
    working_size : (int, int)
        The size the network and CRF ran at (smaller than the image when it was resized).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray
    timings: dict = field(default_factory=dict)
    working_size: tuple = None


def parse_scales(scales):
    """``"1,0.75,0.5"`` or a sequence -> a tuple of positive floats."""
    if isinstance(scales, str):
        try:
            scales = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"scales must be comma-separated numbers such as 1,0.75,0.5, got {scales!r}") from None
    scales = tuple(float(s) for s in scales)
    if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales}")
    return scales


def resize_rule(height, width, crop_size):
    """The working size of an image: itself, or the long side resized to ``crop_size``."""
    if max(height, width) <= crop_size:
        return height, width
    ratio = crop_size / max(height, width)
    return (crop_size if height >= width else max(1, round(height * ratio)),
            crop_size if width > height else max(1, round(width * ratio)))


def check_scales(model, scales):
    """Refuse several scales for a net that already resizes its own input (the MSC net)."""
    if tuple(scales) != (1.0,) and model.multi_scale:
        raise ValueError(f"{model.name} already fuses several scales of its input; scales are for "
                         f"single-scale nets (e.g. deeplab-v2-resnet101 for the MSC model's tower)")


def _forward_scores(model, data, scales, backend):
    """Full-resolution scores (1, L, H', W') at one or several scales (MSC's MAX fusion)."""
    net = model.net
    if scales == (1.0,):
        return net.forward(data, outputs=[model.scores], backend=backend)[model.scores]
    check_scales(model, scales)
    final = [layer for layer in net.spec.layers if layer.type == "Interp" and model.scores in layer.tops]
    if not final:
        raise ValueError(f"{model.name}: scales need the scores {model.scores!r} to come from an Interp layer")
    final = final[-1]
    below = final.bottoms[0]
    base = net.shapes({net.inputs[0]: data.shape}, check=False)[below][2:]
    side = data.shape[2]
    fused = None
    for s in scales:
        size = int(np.floor((side - 1) * s)) + 1
        x = data if size == side else L.interp(data, height=size, width=size, backend=backend)
        y = np.asarray(net.forward(x, outputs=[below], backend=backend)[below])
        if y.shape[2:] != base:
            y = L.interp(y, height=base[0], width=base[1], backend=backend)
        fused = y if fused is None else np.maximum(fused, y)  # Eltwise MAX, as fc_fusion
    p = final.params.get("interp_param", {})
    return L.interp(fused, zoom_factor=p.get("zoom_factor"), shrink_factor=p.get("shrink_factor"),
                    height=p.get("height"), width=p.get("width"), pad_beg=p.get("pad_beg", 0),
                    pad_end=p.get("pad_end", 0), dialect="v1" if net.spec.dialect == "v1" else "v2",
                    backend=backend)


def segment_image(image, model, weights=None, crf=None, scales=(1.0,), backend="auto"):
    """Segment one RGB image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8, RGB, or str / PathLike
        An array, or a file read by :func:`nets.imageio.read_image`.
    model : str, PathLike or Model
        See :func:`load_model`; load once with :func:`load_model` for many images.
    weights : str or PathLike, optional
        See :func:`load_model` (ignored when ``model`` is a loaded :class:`Model`).
    crf : str, crf.Preset or None
        A preset name, ``"auto"`` (the model's preset) or None/``"none"``: DeepLab's
        offline CRF (:func:`crf.deeplab_refine`) on the network's scores.
    scales : sequence of float or str
        Input scales fused by MAX (module docstring); ``(1,)`` is the plain forward pass.
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    Segmentation
    """
    times = {}
    if not isinstance(image, np.ndarray):
        image = read_image(image)
    model = load_model(model, weights)
    preset = resolve_preset(crf, model)
    scales = parse_scales(scales)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {image.shape} "
                         f"dtype {image.dtype}")
    height, width = image.shape[:2]
    t = time.perf_counter()
    work_h, work_w = resize_rule(height, width, model.crop_size)
    work = image
    if (work_h, work_w) != (height, width):
        warnings.warn(f"the image is {height}x{width}, larger than the net's {model.crop_size}x"
                      f"{model.crop_size} input: it is resized to {work_h}x{work_w} and the labels are "
                      f"resized back (nearest neighbour)", UserWarning, stacklevel=2)
        work = np.asarray(Image.fromarray(image).resize((work_w, work_h), Image.BILINEAR))
    work = np.ascontiguousarray(work)
    times["resize"] = time.perf_counter() - t

    t = time.perf_counter()
    data = preprocess(work, model.crop_size)
    times["preprocess"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = np.asarray(_forward_scores(model, data, scales, backend))[0]  # (L, crop, crop)
    times["network"] = time.perf_counter() - t
    t = time.perf_counter()
    pred = postprocess(scores, work_h, work_w)
    times["postprocess"] = time.perf_counter() - t
    probabilities, labels = pred.probabilities, pred.labels
    times["crf"] = 0.0
    if preset is not None:
        import crf as dense_crf
        t = time.perf_counter()
        probabilities = np.asarray(dense_crf.deeplab_refine(work, pred.scores, preset=preset, backend=backend))
        labels = label_map(probabilities)
        times["crf"] = time.perf_counter() - t
    scores_out = pred.scores
    if (work_h, work_w) != (height, width):
        t = time.perf_counter()
        labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize((width, height), Image.NEAREST))
        probabilities = L.interp(np.ascontiguousarray(probabilities), height=height, width=width, backend="numpy")
        scores_out = L.interp(scores_out, height=height, width=width, backend="numpy")
        times["resize"] += time.perf_counter() - t
    return Segmentation(np.asarray(labels, dtype=np.uint8), np.asarray(probabilities, np.float32),
                        np.asarray(scores_out, np.float32), times, (work_h, work_w))


# ----------------------------------------------------------------------------- many files

def image_files(paths):
    """Expand files and folders (their image files, sorted, not recursive) into a list of paths.

    A path that does not exist is kept, so that reading it reports the error by name.
    """
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if os.path.splitext(n)[1].lower() in extensions
                            and os.path.isfile(os.path.join(path, n)))
        else:
            files.append(path)
    return files


def save_probabilities(path, probabilities):
    """Write ``(L, H, W) float32`` probabilities as a plain ``.npy`` (no pickle), atomically."""
    from nets.imageio import atomic_write
    with atomic_write(path) as f:
        np.save(f, np.ascontiguousarray(probabilities, dtype=np.float32), allow_pickle=False)


def segment_files(paths, model, out_dir, crf=None, scales=(1.0,), backend="auto", overlay=False,
                  save_probs=False, verbose=False, log=None):
    """Segment image files into ``out_dir``; an unreadable image is reported and skipped.

    Writes, per image ``NAME.ext``: ``NAME.png`` (VOC-palette label map), with
    ``overlay`` ``NAME_overlay.png``, with ``save_probs`` ``NAME_probs.npy``
    (``(L, H, W)`` float32). Every file is written atomically.

    Parameters
    ----------
    paths : list of str
        Image files (see :func:`image_files` for folders).
    model : Model
    out_dir : str
    crf, scales, backend : see :func:`segment_image`
    overlay, save_probs, verbose : bool
    log : callable, optional
        Receives one line of text per message (errors, warnings, timings).

    Returns
    -------
    list of str
        The error messages, one per image that could not be segmented.
    """
    from nets.imageio import ImageReadError, overlay as blend, save_image_atomic, write_label_png
    log = log or (lambda line: None)
    os.makedirs(out_dir, exist_ok=True)
    errors, seen = [], {}
    for k, path in enumerate(paths, 1):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            errors.append(f"{path}: its output {stem}.png would overwrite the one of {seen[stem]}; skipped")
            log(f"error: {errors[-1]}")
            continue
        seen[stem] = path
        t = time.perf_counter()
        try:
            image = read_image(path)
        except ImageReadError as exc:
            errors.append(str(exc))
            log(f"error: {exc}")
            continue
        read_time = time.perf_counter() - t
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = segment_image(image, model, crf=crf, scales=scales, backend=backend)
        for w in caught:
            log(f"warning: {path}: {w.message}")
        t = time.perf_counter()
        write_label_png(os.path.join(out_dir, stem + ".png"), result.labels)
        if overlay:
            save_image_atomic(Image.fromarray(blend(image, result.labels)),
                              os.path.join(out_dir, stem + "_overlay.png"))
        if save_probs:
            save_probabilities(os.path.join(out_dir, stem + "_probs.npy"), result.probabilities)
        stages = {"read": read_time, **result.timings, "write": time.perf_counter() - t}
        if verbose:
            log(f"[{k}/{len(paths)}] {path}: " + ", ".join(f"{s} {1000 * v:.1f} ms" for s, v in stages.items()))
        else:
            log(f"[{k}/{len(paths)}] {path}")
    return errors
