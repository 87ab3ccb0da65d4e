"""``deeplab crf-search``: choose the dense CRF's parameters on validation images, as DeepLab did.

DeepLab kept the Gaussian kernel at w_gaussian = 3, theta_gamma = 3 and chose w_bilateral,
theta_alpha and theta_beta by a grid search on 100 validation images, for the best mean IoU
(ICLR 2015 section 5: w1 in [5, 10], theta_alpha in 50..100 step 10, theta_beta in 3..10;
TPAMI 2018 section 4.1.1: w1 in 3..6, theta_alpha in 30..100 step 10, theta_beta in 3..6, the
:data:`PAPER_GRID`). :func:`search_files` does this over any grid of the preset parameters
(:data:`crf.presets.PARAMETERS`):

* each image and its probabilities (``deeplab segment --save-probs``) are read and checked once, and
  the CRF of ``deeplab crf`` (:func:`nets.app.refine.refine`: the same scores, the same image) runs with
  every setting, each lattice built once for the settings that differ only in their weights
  (:func:`crf.deeplab_refine_each`);
* every setting gets **one confusion matrix over all the images** (PASCAL VOC's measure,
  :mod:`nets.app.evaluate`), and the labelling without the CRF (the argmax of the
  probabilities) gets one too, as the baseline;
* the settings are ranked by mean IoU; the best one's name (``BASE:key=value,...``) is what
  ``deeplab crf --preset`` and ``deeplab segment --crf`` take.

Images spread over processes or a Dask cluster like every job of :mod:`nets.app.batch`, and a
state folder keeps each image's matrices so that an interrupted search resumes where it stopped.

Its cost: one CRF per image and setting. The paper's grid is 128 settings; at 500x375 with 21
labels a setting takes about 0.35 s on 2 cores (the CRF, its labels and their confusion matrix;
``python bench/scale.py --job search``, ``bench/RESULTS.md``), so 100 images take about 1.3 hours.
Choose the parameters on images that are not those of the final evaluation.
"""
import itertools
import os
import time
from dataclasses import dataclass

import numpy as np

from nets.app.batch import Summary, count_matrices, state_file
from nets.app.workers import Outcome, describe_workers

#: TPAMI 2018's search (section 4.1.1), with the base preset's Gaussian kernel and iterations.
PAPER_GRID = {"w_bilateral": (3.0, 4.0, 5.0, 6.0),
              "theta_alpha": tuple(float(v) for v in range(30, 101, 10)),
              "theta_beta": (3.0, 4.0, 5.0, 6.0)}


def parse_grid(items):
    """``["theta_alpha=30,40,50", "w_bilateral=3,4"]`` -> ``{"theta_alpha": (30.0, 40.0, 50.0), ...}``.

    Each item names one parameter of :data:`crf.presets.PARAMETERS` and its values, comma-separated
    (``iterations``: integers). Their ranges are checked when the presets are made (:func:`grid_presets`).
    """
    from crf.presets import PARAMETERS
    grid = {}
    for item in items:
        key, sep, text = (s.strip() for s in item.partition("="))
        if not sep or key not in PARAMETERS:
            raise ValueError(f"grid: {item!r} is not 'parameter=value,value,...' with a parameter among "
                             f"{list(PARAMETERS)}")
        if key in grid:
            raise ValueError(f"grid: {key} is given twice")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise ValueError(f"grid: {key} has no values")
        try:
            grid[key] = tuple(int(v) if key == "iterations" else float(v) for v in values)
        except ValueError:
            what = "integers" if key == "iterations" else "numbers"
            raise ValueError(f"grid: the values of {key} must be {what}, got {text!r}") from None
        if len(set(grid[key])) != len(grid[key]):
            raise ValueError(f"grid: {key} lists a value twice ({text!r})")
    return grid


def grid_presets(base, grid):
    """Every setting of ``grid`` ({parameter: values}) as a preset changed from ``base``.

    Settings are in the order of ``itertools.product`` over the parameters in the order of
    :data:`crf.presets.PARAMETERS` (the last one varies fastest); each is checked (a value that
    no CRF takes is refused here, before any image is read).

    Returns
    -------
    tuple of crf.Preset
    """
    from crf.presets import PARAMETERS
    keys = [k for k in PARAMETERS if k in grid]
    if not keys:
        return (base,)
    try:
        return tuple(base.with_values(**dict(zip(keys, values)))
                     for values in itertools.product(*(grid[k] for k in keys)))
    except ValueError as exc:
        raise ValueError(f"grid: {exc}") from None


@dataclass(frozen=True)
class SearchSettings:
    """What a worker needs to score an image under every setting.

    Attributes
    ----------
    presets : tuple of crf.Preset
        The settings (:func:`grid_presets`).
    num_classes : int
        Labels of the probabilities, and classes of the ground truth (255: void).
    logits : bool
        The ``.npy`` files hold pre-softmax scores, not probabilities.
    backend : {"numpy", "cpu", "cuda", "auto"}
    """

    presets: tuple
    num_classes: int = 21
    logits: bool = False
    backend: str = "auto"

    def state(self):
        """Plain values that say which matrices a state folder holds (its ``settings.json``)."""
        return {"settings": [p.values() for p in self.presets], "num_classes": self.num_classes,
                "logits": self.logits}


def label_count(image_path, probs_path, logits=False):
    """The number of labels of an image's probabilities (read and checked against the image)."""
    from nets.app import refine
    _, probs, _ = refine.read_inputs(image_path, probs_path, "probs", logits)
    return probs.shape[0]


def search_one(settings, image_path, probs_path, label_path, state_dir=None):
    """Count an image's confusion matrices: the labelling without the CRF, then every setting's.

    With ``state_dir``, the matrices are also saved there (``STEM.npy``, atomically) for ``resume``.

    Returns
    -------
    Outcome
        ``matrix`` (1 + S, K, K) int64 for S settings and K classes (``[0]``: no CRF), or ``error``
        naming the file.
    """
    import crf
    from nets.app import refine
    from nets.app.evaluate import confusion_matrix
    from nets.app.imageio import ImageReadError, read_label_png
    from nets.caffe import atomic_write
    from nets.deeplab import label_map
    start = time.perf_counter()
    k = settings.num_classes
    try:
        image, probs, _ = refine.read_inputs(image_path, probs_path, "probs", settings.logits)
        truth = read_label_png(label_path)
        if truth.shape != image.shape[:2]:
            raise ValueError(f"{label_path}: the ground truth is {truth.shape[0]}x{truth.shape[1]}, the image "
                             f"{image.shape[0]}x{image.shape[1]}")
        if probs.shape[0] != k:
            raise ValueError(f"{probs_path}: {probs.shape[0]} labels, expected {k} (the number of classes)")
        timings = {"read": time.perf_counter() - start}
        matrices = np.empty((1 + len(settings.presets), k, k), np.int64)
        matrices[0] = confusion_matrix(truth, label_map(probs), k)
        t = time.perf_counter()
        scores = refine.crf_scores(image, probs, logits=settings.logits)  # what refine.refine hands the CRF
        for s, q in crf.deeplab_refine_each(image, scores, settings.presets, backend=settings.backend):
            matrices[1 + s] = confusion_matrix(truth, label_map(q), k)  # Caffe's tie rule, as deeplab crf
        timings["crf"] = time.perf_counter() - t
        if state_dir is not None:
            with atomic_write(state_file(state_dir, label_path)) as f:
                np.save(f, matrices, allow_pickle=False)
    except (ImageReadError, OSError, ValueError, TypeError) as exc:
        message = str(exc) if os.fspath(image_path) in str(exc) or os.fspath(label_path) in str(exc) \
            else f"{image_path}: {exc}"
        return Outcome(image_path, error=message, seconds=time.perf_counter() - start)
    return Outcome(image_path, seconds=time.perf_counter() - start, timings=timings, matrix=matrices)


def search_files(triples, settings, workers=1, client=None, state_dir=None, resume=False, on_outcome=None,
                 threads=None):
    """Score every setting over a set of images: one confusion matrix per setting over all of them.

    Parameters
    ----------
    triples : list of (str, str, str)
        ``(image, its probabilities .npy, its ground-truth label PNG)``.
    settings : SearchSettings
    workers, client, on_outcome, threads
        As for :func:`nets.app.batch.segment_files`.
    state_dir : str, optional
        Keep each image's matrices there (``STEM.npy`` and ``settings.json``).
    resume : bool
        Take the matrices already in ``state_dir`` instead of scoring those images again.

    Returns
    -------
    matrices : ndarray of shape (1 + S, K, K), int64
        ``[0]``: without the CRF; ``[s]``: ``settings.presets[s - 1]``. The exact sums over the
        images that did not fail.
    summary : nets.app.batch.Summary
    """
    start = time.perf_counter()
    k = settings.num_classes
    jobs = [(image_path, label_path, (settings, image_path, probs_path, label_path, state_dir))
            for image_path, probs_path, label_path in triples]
    matrices, outcomes = count_matrices(search_one, jobs, (1 + len(settings.presets), k, k), settings.state(),
                                        state_dir, resume, workers, client, on_outcome, threads)
    return matrices, Summary(outcomes, time.perf_counter() - start, describe_workers(workers, client, threads))


@dataclass(frozen=True)
class Score:
    """One setting's result over the images: its preset (None: no CRF), mean IoU and pixel accuracy."""

    preset: object
    mean_iou: float
    pixel_accuracy: float

    @property
    def name(self):
        return "no CRF (argmax of the probabilities)" if self.preset is None else self.preset.name


def ranking(matrices, presets):
    """The settings from best to worst mean IoU (ties: grid order), and the score without the CRF.

    Parameters
    ----------
    matrices : ndarray of shape (1 + S, K, K), int64
        As :func:`search_files` returns them.
    presets : sequence of crf.Preset
        The S settings.

    Returns
    -------
    ranked : list of Score
    baseline : Score
    """
    from nets.app.evaluate import mean_iou, pixel_accuracy
    if len(matrices) != 1 + len(presets):
        raise ValueError(f"expected {1 + len(presets)} matrices (no CRF, then {len(presets)} settings), "
                         f"got {len(matrices)}")
    scores = [Score(p, mean_iou(m), pixel_accuracy(m)) for p, m in zip((None, *presets), matrices)]
    ranked = sorted(scores[1:], key=lambda s: -s.mean_iou if np.isfinite(s.mean_iou) else np.inf)
    return ranked, scores[0]


def format_ranking(ranked, baseline, top=10):
    """Lines of a table of the ``top`` settings (mean IoU and pixel accuracy, in %), then the baseline."""
    lines = [f"{'rank':>4}  {'mIoU':>6}  {'pixel acc.':>10}  setting"]
    for n, s in enumerate(ranked[:top], start=1):
        lines.append(f"{n:>4}  {100 * s.mean_iou:6.2f}  {100 * s.pixel_accuracy:10.2f}  {s.name}")
    if len(ranked) > top:
        lines.append(f"      ({len(ranked) - top} more settings)")
    lines.append(f"{'':>4}  {100 * baseline.mean_iou:6.2f}  {100 * baseline.pixel_accuracy:10.2f}  {baseline.name}")
    return lines


def results_json(ranked, baseline, images):
    """The search's results as plain values (``deeplab crf-search -o FILE.json``): every setting, best first."""
    def entry(s):
        return {"name": s.name, "values": None if s.preset is None else s.preset.values(),
                "mean_iou": s.mean_iou, "pixel_accuracy": s.pixel_accuracy}
    return {"images": images, "best": ranked[0].name if ranked else None, "no_crf": entry(baseline),
            "settings": [entry(s) for s in ranked]}
