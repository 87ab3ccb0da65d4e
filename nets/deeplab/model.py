"""The one segmentation API: :class:`Model` loads a network by name or by file, :meth:`Model.segment`
runs DeepLab's pipeline on an image and returns a :class:`Segmentation`.

Models (:meth:`Model.load`)
    * an official DeepLab model by name (:data:`nets.deeplab.MODELS`), with its
      released ``.caffemodel`` or a converted ``.npz``;
    * an embedded demo model by name, ``demo-largefov`` or ``demo-aspp``
      (:data:`nets.deeplab.DEMO_MODELS`; 97x97 input, no weights to download; they
      know only the procedural shapes of :mod:`nets.deeplab.shapes_dataset`);
    * a network file: a converted ``.npz`` (weights inside), or a ``.prototxt``
      with ``weights=`` a ``.caffemodel`` or ``.npz``.

The pipeline (:mod:`nets.deeplab.processing` for each step)::

    RGB image -> [resize rule] -> preprocess -> network (scales fused by MAX) -> x8 Interp
              -> crop to the image [-> MAX with the mirror image's, flip=True]
              -> softmax | dense CRF -> argmax -> labels

An image larger than the crop size (513 for DeepLab, 97 for the demo nets) is never
cropped: it is resized so that its long side equals the crop size (pillow's bilinear
filter, which averages when it shrinks), with a ``UserWarning``; the network and the CRF
run at that size; the labels are brought back to the original size by nearest neighbour
and the probabilities and scores by Caffe's Interp (bilinear, aligned corners). Smaller
images are padded bottom/right with the mean colour, as in DeepLab.

Example::

    model = Model.load("deeplab-v2-resnet101-msc", weights="resnet101_msc.npz")
    result = model.segment(image, crf="auto")       # image: (H, W, 3) uint8 RGB
    result.labels                                   # (H, W) uint8
"""
import os
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from PIL import Image

from atrous.backend import resolve_backend
from nets import layers as L
from nets.caffe import is_npz, read_prototxt
from nets.deeplab import shapes_dataset
from nets.deeplab.models import (CROP_SIZE, DEMO_MODELS, MODELS, VOC_CLASSES, demo_files, demo_manifest,
                                 demo_preset, model_spec)
from nets.deeplab.processing import (crop_scores, forward_scores, fuse_mirrored, label_map, parse_scales,
                                     preprocess, resize_rule, softmax)
from nets.engine import Net, load_weights


@dataclass
class Segmentation:
    """What a model says about one image.

    Attributes
    ----------
    labels : ndarray of shape (H, W), uint8
        Class per pixel (argmax, Caffe's tie rule: the highest label among equals).
    probabilities : ndarray of shape (L, H, W), float32, or None
        Softmax of the scores, or the CRF's marginals Q when a CRF ran (None when
        ``segment(..., probabilities=False)``).
    scores : ndarray of shape (L, H, W), float32, or None
        The network's pre-softmax scores (``fc8_interp`` / ``fc1_interp``), top-left HxW.
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


def postprocess(scores, height, width):
    """The network's part of a :class:`Segmentation`: crop the top-left ``height`` x ``width`` of
    ``(L, H', W')`` scores, softmax over the labels, argmax with Caffe's tie rule."""
    scores = crop_scores(scores, height, width)
    return Segmentation(label_map(scores), softmax(scores), scores, working_size=(height, width))


@dataclass
class Model:
    """A network ready to segment images.

    Attributes
    ----------
    name : str
        The model's name, or the file it came from.
    net : nets.Net
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

    @classmethod
    def load(cls, model, weights=None, num_labels=21, crop_size=None):
        """A model from a name or a file.

        Parameters
        ----------
        model : str or PathLike or Model
            An official name (:data:`nets.deeplab.MODELS`), ``demo-largefov`` /
            ``demo-aspp``, a converted ``.npz`` or a ``.prototxt``. A loaded
            :class:`Model` is returned as it is.
        weights : str or PathLike, optional
            ``.caffemodel`` or converted ``.npz``. Required for official models and
            prototxts; replaces the shipped weights of a demo model.
        num_labels : int
            ``${NUM_LABELS}`` of the official templates.
        crop_size : int, optional
            The padded input side instead of the model's own (513 for DeepLab; a
            smaller one makes quick tests).

        Raises
        ------
        ValueError
            An unknown name, missing weights, or an unreadable or mismatching weight
            file (the message names the file).
        FileNotFoundError
            A weight file that does not exist.
        """
        if isinstance(model, Model):
            return model
        loaded = _load(os.fspath(model), weights, num_labels)
        if crop_size is not None:
            loaded.crop_size = int(crop_size)
        return loaded

    @property
    def multi_scale(self):
        """True when the net resizes its own input (the MSC net): ``scales`` is refused then."""
        return any(layer.type == "Interp" and set(layer.bottoms) & set(self.net.inputs)
                   for layer in self.net.spec.layers)

    def check_scales(self, scales):
        """Refuse several scales for a net that already resizes its own input (the MSC net)."""
        if tuple(scales) != (1.0,) and self.multi_scale:
            raise ValueError(f"{self.name} already fuses several scales of its input; scales are for "
                             f"single-scale nets (e.g. deeplab-v2-resnet101 for the MSC model's tower)")

    def segment(self, image, crf=None, scales=(1.0,), backend="auto", probabilities=True, flip=False):
        """Segment one RGB image.

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8, RGB
            (Files are read by :func:`nets.app.imageio.read_image`.)
        crf : str, crf.Preset or None
            A preset name, ``"auto"`` (the model's preset) or None/``"none"``: DeepLab's
            offline CRF (:func:`crf.deeplab_refine`) on the network's scores.
        scales : sequence of float or str
            Input scales fused by MAX (:mod:`nets.deeplab.processing`); ``(1,)`` is the
            plain forward pass.
        backend : {"numpy", "cpu", "cuda", "auto"}
            ``"cuda"`` keeps every step on the GPU (:mod:`nets.deeplab.on_device`).
        probabilities : bool
            Also return the probabilities and scores (False: ``None``, and with
            ``"cuda"`` only the labels are copied back from the GPU).
        flip : bool
            Also run the net on the image mirrored left to right and fuse its scores, mirrored
            back, by MAX (:func:`nets.deeplab.processing.fuse_mirrored`): test-time
            augmentation, twice the network's time, not part of DeepLab v1/v2's protocol.

        Returns
        -------
        Segmentation
        """
        return self.segment_batch([image], crf, scales, backend, probabilities, flip)[0]

    def segment_batch(self, images, crf=None, scales=(1.0,), backend="auto", probabilities=True, flip=False):
        """Segment several RGB images of one size with one forward pass (a batch of N).

        Parameters
        ----------
        images : sequence of ndarray of shape (H, W, 3), uint8, RGB, all of one size
        crf, scales, backend, probabilities, flip : see :meth:`segment`

        Returns
        -------
        list of Segmentation
            One per image, in order. Their ``timings["network"]`` is the batch's forward
            pass divided by the number of images.
        """
        images = [self._check_image(image) for image in images]
        if not images:
            return []
        if len({image.shape for image in images}) != 1:
            raise ValueError(f"a batch holds images of one size, got {sorted({i.shape for i in images})}; "
                             f"segment images of other sizes in batches of their own")
        preset = resolve_preset(crf, self)
        scales = parse_scales(scales)
        self.check_scales(scales)
        backend = resolve_backend(backend)
        height, width = images[0].shape[:2]
        times = {"crf": 0.0, "postprocess": 0.0}
        t = time.perf_counter()
        work_h, work_w = resize_rule(height, width, self.crop_size)
        resized = (work_h, work_w) != (height, width)
        if resized:
            warnings.warn(f"the image is {height}x{width}, larger than the net's {self.crop_size}x"
                          f"{self.crop_size} input: it is resized to {work_h}x{work_w} and the labels are "
                          f"resized back (nearest neighbour)", UserWarning, stacklevel=3)
            images_work = [np.asarray(Image.fromarray(image).resize((work_w, work_h), Image.BILINEAR))
                           for image in images]
        else:
            images_work = images
        works = np.stack(images_work)  # (B, h, w, 3) uint8
        times["resize"] = time.perf_counter() - t

        t = time.perf_counter()
        inputs = [works, works[:, :, ::-1]] if flip else [works]  # and the mirror images
        if backend == "cuda":
            from nets.deeplab import on_device  # numba.cuda is loaded only for the CUDA backend
            inputs = [on_device.upload(x) for x in inputs]
            works = inputs[0]
            data = [on_device.preprocess(x, self.crop_size) for x in inputs]  # (B, 3, S, S) on the GPU
        else:
            data = [np.concatenate([preprocess(work, self.crop_size) for work in x]) for x in inputs]  # (B, 3, S, S)
        times["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        scores = forward_scores(self.net, data[0], self.scores, scales, backend)  # (B, L, S, S)
        if flip:  # (B, L, h, w): the image's scores and the mirror image's, mirrored back, MAX-fused
            mirrored = forward_scores(self.net, data[1], self.scores, scales, backend)
            fuse = on_device.fuse_mirrored if backend == "cuda" else fuse_mirrored
            scores = fuse(scores, mirrored, work_h, work_w)
        if backend == "cuda":
            on_device.synchronize()
        times["network"] = (time.perf_counter() - t) / len(images)
        results = []
        for b in range(len(images)):
            if backend == "cuda":
                result = self._finish_on_device(works[b], scores[b], preset, work_h, work_w, probabilities, times)
            else:
                result = self._finish(works[b], scores[b], preset, work_h, work_w, backend, times)
            if resized:
                t = time.perf_counter()
                result.labels = np.asarray(Image.fromarray(result.labels).resize((width, height), Image.NEAREST))
                if probabilities:
                    result.probabilities = L.interp(np.ascontiguousarray(result.probabilities), height=height,
                                                    width=width, backend="numpy")
                    result.scores = L.interp(result.scores, height=height, width=width, backend="numpy")
                result.timings["resize"] += time.perf_counter() - t
            if not probabilities:
                result.probabilities = result.scores = None
            results.append(result)
        return results

    @staticmethod
    def _check_image(image):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(f"image must be an (H, W, 3) uint8 RGB array (read files with "
                             f"nets.app.imageio.read_image), got shape {image.shape} dtype {image.dtype}")
        return image

    @staticmethod
    def _finish(work, scores, preset, height, width, backend, batch_times):
        """Crop, softmax or CRF, argmax on the host: one image's :class:`Segmentation`."""
        times = dict(batch_times)
        t = time.perf_counter()
        result = postprocess(np.asarray(scores), height, width)
        times["postprocess"] = time.perf_counter() - t
        if preset is not None:
            import crf as dense_crf
            t = time.perf_counter()
            result.probabilities = np.asarray(dense_crf.deeplab_refine(np.ascontiguousarray(work), result.scores,
                                                                       preset=preset, backend=backend))
            result.labels = label_map(result.probabilities)
            times["crf"] = time.perf_counter() - t
        result.timings = times
        return result

    @staticmethod
    def _finish_on_device(work, scores, preset, height, width, probabilities, batch_times):
        """The same on the GPU: device image (h, w, 3) and scores (L, S, S); labels copied back."""
        from nets.deeplab import on_device
        times = dict(batch_times)
        t = time.perf_counter()
        cropped = on_device.crop(scores, height, width)  # (L, h, w) device
        if preset is not None:
            import crf as dense_crf
            q = dense_crf.deeplab_refine(work, cropped, preset=preset, backend="cuda")  # (L, h, w) device
            on_device.synchronize()
            times["crf"] = time.perf_counter() - t
            t = time.perf_counter()
        else:
            q = on_device.softmax(cropped)
        labels = on_device.label_map(q)
        result = Segmentation(labels, None, None, working_size=(height, width))
        if probabilities:
            result.probabilities = q.copy_to_host()
            result.scores = cropped.copy_to_host()
        times["postprocess"] = time.perf_counter() - t
        result.timings = times
        return result


def segment(image, model, weights=None, crf=None, scales=(1.0,), backend="auto", flip=False):
    """Segment one RGB image with a model given by name, file or as a loaded :class:`Model`.

    ``Model.load(model, weights).segment(image, crf, scales, backend, flip=flip)``; load the
    model once with :meth:`Model.load` to segment many images.
    """
    return Model.load(model, weights).segment(image, crf=crf, scales=scales, backend=backend, flip=flip)


def _load(name, weights, num_labels):
    if name in MODELS:
        if weights is None:
            raise ValueError(f"model {name!r} needs its weights: pass the released .caffemodel or a converted "
                             f".npz (weights=... / --weights); see the README for where to obtain them")
        net = Net.from_spec(model_spec(name, num_labels), load_weights(weights)[1])
        info = MODELS[name]
        return Model(name, net, info.scores, CROP_SIZE, info.crf_preset, VOC_CLASSES)
    if name in DEMO_MODELS:
        prototxt, caffemodel = demo_files(name)
        if not prototxt.is_file() or (weights is None and not caffemodel.is_file()):
            raise ValueError(f"demo model {name!r}: {prototxt} or {caffemodel} is missing from the package "
                             f"(regenerate them with tools/train_demo.py)")
        manifest = demo_manifest() or {}
        with resources.as_file(prototxt) as p:
            spec = read_prototxt(p)
        with resources.as_file(caffemodel) as c:
            net = Net.from_spec(spec, load_weights(weights if weights is not None else c)[1])
        classes = tuple(manifest.get("classes", shapes_dataset.CLASSES))
        crop = int(manifest.get("input_size", _declared_crop(net)))
        return Model(name, net, _score_blob(net), crop, demo_preset(), classes)
    if os.path.isdir(name):
        raise ValueError(f"{name} is a folder; expected a model name ({sorted(MODELS) + sorted(DEMO_MODELS)}), "
                         f"a converted .npz or a prototxt")
    if not os.path.isfile(name):
        raise ValueError(f"{name}: not a model name ({sorted(MODELS) + sorted(DEMO_MODELS)}) and no such file")
    if is_npz(name):
        stored, stored_weights = load_weights(name)
        net = Net.from_spec(stored, stored_weights if weights is None else load_weights(weights)[1])
    else:
        if weights is None:
            raise ValueError(f"{name}: a prototxt needs weights (a .caffemodel or converted .npz)")
        net = Net.from_spec(read_prototxt(name, NUM_LABELS=num_labels), load_weights(weights)[1])
    return Model(name, net, _score_blob(net), _declared_crop(net))


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


def resolve_preset(crf_preset, model=None):
    """The CRF preset to use: None, a :class:`crf.Preset`, a preset name, ``"auto"`` or ``"none"``.

    ``"auto"`` is the model's own preset (DeepLab's VOC values for the official
    models, the tuned preset for the demo nets); ``"none"``/None runs no CRF.
    ``"deeplab-demo-shapes"`` names the demo's tuned preset. Any of them but ``"none"``
    may be followed by changed parameters, ``"auto:theta_alpha=80,w_bilateral=5"``
    (:func:`crf.presets.override`).
    """
    if crf_preset is None or (isinstance(crf_preset, str) and crf_preset.lower() == "none"):
        return None
    import crf
    if isinstance(crf_preset, crf.Preset):
        return crf_preset
    if not isinstance(crf_preset, str):
        raise TypeError(f"crf must be a preset name, a crf.Preset or None, got {type(crf_preset).__name__}")
    name, sep, changes = crf_preset.partition(":")
    if sep:
        return crf.presets.override(resolve_preset(name, model), changes, given=crf_preset)
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
