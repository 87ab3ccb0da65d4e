"""The DeepLab models: the official networks and the demo nets by name, DeepLab's pipeline,
one segmentation API.

* :class:`Model` (``Model.load(name_or_file, weights)``) and :meth:`Model.segment` ->
  :class:`Segmentation`; :func:`segment` does both at once;
* :data:`MODELS`, :data:`DEMO_MODELS`, :func:`model_spec`, :func:`prototxt_path`: the
  catalogue (:mod:`nets.deeplab.models`);
* :func:`preprocess`, :func:`label_map`, :func:`resize_rule`, :func:`parse_scales`,
  :func:`forward_scores`: the steps (:mod:`nets.deeplab.processing`);
* :mod:`nets.deeplab.shapes_dataset`: the procedural data set the demo nets were trained on.
"""
from .model import Model, Segmentation, postprocess, resolve_preset, segment
from .models import (CROP_SIZE, DEMO_MODELS, MEAN_BGR, MODELS, VOC_CLASSES, ModelInfo, demo_dir, demo_files,
                     demo_manifest, demo_preset, model_spec, prototxt_path)
from .processing import (crop_scores, forward_scores, label_map, parse_scales, preprocess, resize_rule,
                         softmax)

__all__ = [
    "CROP_SIZE", "DEMO_MODELS", "MEAN_BGR", "MODELS", "Model", "ModelInfo", "Segmentation", "VOC_CLASSES",
    "crop_scores", "demo_dir", "demo_files", "demo_manifest", "demo_preset", "forward_scores", "label_map",
    "model_spec", "parse_scales", "postprocess", "preprocess", "prototxt_path", "resize_rule",
    "resolve_preset", "segment", "softmax",
]
