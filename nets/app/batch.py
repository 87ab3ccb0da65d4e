"""Many images at once: ``deeplab segment``, ``deeplab evaluate`` and ``deeplab crf`` over a data set.

Every image is independent, so a data set spreads over processes image by image
(:mod:`nets.app.workers`: in this process, a pool of local processes, or a Dask cluster), with
the same results to the last bit wherever it runs.

Each worker process loads the network and the CRF preset **once**, on its first image, and keeps
them for every image it gets (:func:`load`); weights are never read again per image. It runs its
kernels on ``max(1, cores // processes)`` threads (:func:`nets.app.workers.thread_budget`).

What travels to a worker is a :class:`Settings` (the model's name or file, the weights' file, the
CRF preset, the scales, the backend), or for the CRF alone a :class:`RefineSettings`, and file
names: images are read, and outputs written, by the worker itself. On a cluster, the image folder,
the output folder and the weights must therefore be at the same path on every machine (a shared
folder). Outputs are written atomically, so an image whose output exists is complete
(:func:`segment_files`'s ``resume``).

Nothing is lost:

* an image that cannot be read or segmented fails alone: its error names it, the others complete;
* a worker process that dies (killed, out of memory) has its images run again
  (:mod:`nets.app.workers`), and the temporary file it may have been writing is removed when
  the job ends (:func:`nets.caffe.remove_orphans`; so is one that an earlier, killed run left
  beside an output of this one);
* ``resume=True`` skips what an interrupted run finished: complete outputs for ``segment``,
  per-image confusion matrices saved in a state folder for ``evaluate``.
"""
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from nets.app.files import output_paths, save_probabilities
from nets.app.workers import Outcome, describe_workers, run
from nets.caffe import atomic_write, remove_orphans


@dataclass(frozen=True)
class Settings:
    """What a worker needs to segment an image: plain values only, so that it travels anywhere.

    Attributes
    ----------
    model : str
        A model name (``deeplab-v2-resnet101-msc``, ``demo-aspp``) or a network file.
    weights : str or None
        The ``.caffemodel`` or converted ``.npz`` (a path every worker can read).
    crf : str, crf.Preset or None
        A preset name, ``"auto"``, or None for no CRF.
    scales : tuple of float
    backend : {"numpy", "cpu", "cuda", "auto"}
    num_labels : int
    flip : bool
        Also run the net on the mirror image and MAX-fuse (:meth:`nets.deeplab.Model.segment`).
    """

    model: str
    weights: str = None
    crf: object = None
    scales: tuple = (1.0,)
    backend: str = "auto"
    num_labels: int = 21
    flip: bool = False


@dataclass(frozen=True)
class RefineSettings:
    """What a worker needs to refine an image with the dense CRF alone (``deeplab crf`` over folders).

    Attributes
    ----------
    preset : crf.Preset
    source : {"probs", "labels"}
        Each image's input: probabilities (or scores, with ``logits``) in ``NAME_probs.npy`` or
        ``NAME.npy``, or a coarse label map ``NAME.png`` (:func:`nets.app.refine.source_file`).
    logits : bool
    gt_prob : float
        The confidence of a coarse label.
    num_labels : int
        Labels of the coarse label maps.
    max_side : int or None
        Refine a larger image at a reduced size (:mod:`crf.reduced`).
    backend : {"numpy", "cpu", "cuda", "auto"}
    """

    preset: object
    source: str = "probs"
    logits: bool = False
    gt_prob: float = 0.7
    num_labels: int = 21
    max_side: int = None
    backend: str = "auto"


@dataclass
class Summary:
    """A run over many images: its outcomes in input order, and its totals."""

    outcomes: list
    seconds: float
    workers: str

    @property
    def failures(self):
        return [o for o in self.outcomes if o.error is not None]

    @property
    def done(self):
        """Images whose outputs are complete: written by this run or found by ``resume``."""
        return sum(o.error is None for o in self.outcomes)

    @property
    def ran(self):
        """Images this run processed and wrote."""
        return sum(o.error is None and not o.skipped for o in self.outcomes)

    @property
    def skipped(self):
        """Images ``resume`` found complete and left alone."""
        return sum(o.skipped for o in self.outcomes)

    def line(self):
        """``images, failures, seconds, images/s`` in one line."""
        rate = self.ran / self.seconds if self.seconds > 0 else float("nan")
        return (f"{len(self.outcomes)} images ({self.skipped} already done), {len(self.failures)} failed, "
                f"{self.seconds:.1f} s, {rate:.2f} images/s on {self.workers}")


class Progress:
    """A progress bar on standard error (tqdm): images done of total, images/s, time left.

    Silent with ``quiet``, or when standard output or error is not a terminal (a log, a pipe).
    """

    def __init__(self, total, quiet=False, description="images"):
        self.bar = None
        if not quiet and sys.stderr.isatty() and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="img", desc=description, file=sys.stderr, dynamic_ncols=True)

    def update(self, outcome):
        if self.bar is not None:
            self.bar.update(1)

    def write(self, line):
        """A log line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- in the worker

_LOADED = {}  # (model, weights, num_labels, crf) -> (Model, preset): one load per process


def load(settings):
    """The model and CRF preset of ``settings``, loaded once per process (then cached).

    Raises the loading errors (unknown model, unreadable weights, unknown preset, scales
    for a multi-scale net): call it once in the submitting process to fail early.
    """
    from nets.deeplab import Model, parse_scales, resolve_preset
    key = (settings.model, settings.weights, settings.num_labels, repr(settings.crf))
    if key not in _LOADED:
        model = Model.load(settings.model, settings.weights, num_labels=settings.num_labels)
        model.check_scales(parse_scales(settings.scales))
        _LOADED[key] = (model, resolve_preset(settings.crf, model))
    return _LOADED[key]


def unload():
    """Forget the models :func:`load` keeps in this process."""
    _LOADED.clear()


def _read(path):
    """(image, seconds, error message or None)."""
    from nets.app.imageio import ImageReadError, read_image
    t = time.perf_counter()
    try:
        return read_image(path), time.perf_counter() - t, None
    except (ImageReadError, OSError, ValueError) as exc:
        return None, time.perf_counter() - t, str(exc) if os.fspath(path) in str(exc) else f"{path}: {exc}"


def _segment_images(settings, paths, probabilities=True):
    """Read and segment images in this process, those of one size as one batch.

    Returns one ``(image, Segmentation, warnings, error)`` per path, in order: an image that
    cannot be read (or a batch that cannot be segmented) has ``error`` set and the others go on.
    Images of one size go through the network together (:meth:`nets.deeplab.Model.segment_batch`:
    on a GPU everything stays on the device and only labels, and probabilities when asked, come
    back); the results equal those of one image at a time.
    """
    import warnings

    model, preset = load(settings)
    results = [None] * len(paths)
    by_size = {}
    for k, path in enumerate(paths):
        image, read, error = _read(path)
        if error is not None:
            results[k] = (None, None, [], error)
        else:
            by_size.setdefault(image.shape, []).append((k, image, read))
    groups = list(by_size.values())
    while groups:
        group = groups.pop(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                segmentations = model.segment_batch([image for _, image, _ in group], crf=preset,
                                                    scales=settings.scales, backend=settings.backend,
                                                    probabilities=probabilities, flip=settings.flip)
            except Exception as exc:  # noqa: BLE001 (a batch too large for the memory, say)
                if len(group) > 1:  # then one image at a time, as without batches
                    groups[:0] = [[item] for item in group]
                    continue
                if not isinstance(exc, (ValueError, TypeError)):
                    raise
                segmentations, failure = None, exc
        for j, (k, image, read) in enumerate(group):
            path = paths[k]
            if segmentations is None:
                results[k] = (image, None, [], f"{path}: {failure}")
                continue
            result = segmentations[j]
            result.timings = {"read": read, **result.timings}
            results[k] = (image, result, [f"{path}: {w.message}" for w in caught], None)
    return results


def segment_group(settings, paths, out_dir, overlay=False, save_probs=False):
    """Segment a group of image files (one batch per image size) and write their outputs.

    Returns
    -------
    list of Outcome
        One per path, in order; never raising: an image that cannot be read, segmented or
        written has ``error`` set.
    """
    from PIL import Image

    from nets.app.imageio import overlay as blend, save_image_atomic, write_label_png
    start = time.perf_counter()
    segmented = _segment_images(settings, paths, probabilities=save_probs)
    classes = load(settings)[0].classes  # loaded by _segment_images: the legend's names
    share = (time.perf_counter() - start) / max(1, len(paths))  # the group's time, per image
    outcomes = []
    for path, (image, result, caught, error) in zip(paths, segmented):
        if error is not None:
            outcomes.append(Outcome(path, error=error, seconds=share))
            continue
        t = time.perf_counter()
        try:
            labels_png, *others = output_paths(path, out_dir, overlay, save_probs)
            write_label_png(labels_png, result.labels)
            if overlay:
                picture = blend(image, result.labels, legend=True, classes=classes)
                save_image_atomic(Image.fromarray(picture), others.pop(0))
            if save_probs:
                save_probabilities(others.pop(0), result.probabilities)
        except (OSError, ValueError, TypeError) as exc:
            message = str(exc) if os.fspath(path) in str(exc) else f"{path}: {exc}"
            outcomes.append(Outcome(path, error=message, seconds=share + time.perf_counter() - t))
            continue
        result.timings["write"] = time.perf_counter() - t
        outcomes.append(Outcome(path, seconds=share + result.timings["write"], timings=result.timings,
                                warnings=caught))
    return outcomes


def segment_one(settings, path, out_dir, overlay=False, save_probs=False):
    """Segment one image file and write its outputs (in whichever process runs it).

    Returns
    -------
    Outcome
        With ``error`` set, never raising, when the image cannot be read or segmented.
    """
    return segment_group(settings, (path,), out_dir, overlay, save_probs)[0]


def evaluate_one(settings, image_path, label_path, num_classes, state_dir=None):
    """Segment one image and count its confusion matrix against its ground truth.

    With ``state_dir``, the matrix is also saved there (``STEM.npy``, atomically) for ``resume``.

    Returns
    -------
    Outcome
        ``matrix`` (num_classes, num_classes) int64, or ``error`` naming the file.
    """
    from nets.app.evaluate import confusion_matrix
    from nets.app.imageio import ImageReadError, read_label_png
    start = time.perf_counter()
    try:
        truth = read_label_png(label_path)
        (_, result, caught, error), = _segment_images(settings, (image_path,), probabilities=False)
        if error is not None:
            return Outcome(image_path, error=f"{label_path}: {error}", seconds=time.perf_counter() - start)
        matrix = confusion_matrix(truth, result.labels, num_classes)
        if state_dir is not None:
            with atomic_write(state_file(state_dir, label_path)) as f:
                np.save(f, matrix, allow_pickle=False)
    except (ImageReadError, OSError, ValueError, TypeError) as exc:
        return Outcome(image_path, error=f"{label_path}: {exc}", seconds=time.perf_counter() - start)
    return Outcome(image_path, seconds=time.perf_counter() - start, timings=result.timings, matrix=matrix,
                   warnings=caught)


def refine_one(settings, image_path, source_dir, out_dir, save_probs=False):
    """Refine one image with the dense CRF from its input in ``source_dir``; write ``NAME.png``
    (and with ``save_probs`` ``NAME_probs.npy``, the marginals) into ``out_dir``.

    Returns
    -------
    Outcome
        With ``error`` set, never raising, when the image or its input cannot be read, does not
        match, or the output cannot be written. Its ``warnings`` hold the CRF's memory warning
        and the near-one-hot warning of :func:`nets.app.refine.change_report`.
    """
    from nets.app import refine
    from nets.app.imageio import ImageReadError, write_label_png
    from nets.deeplab import label_map
    start = time.perf_counter()
    timings, warnings = {}, []
    try:
        source = refine.source_file(image_path, source_dir, settings.source)
        image, probs, coarse = refine.read_inputs(image_path, source, settings.source, settings.logits)
        timings["read"] = time.perf_counter() - start
        n_labels = probs.shape[0] if probs is not None else settings.num_labels
        memory = refine.memory_warning(*image.shape[:2], n_labels, settings.preset, settings.max_side,
                                       backend=settings.backend)
        warnings += [f"{image_path}: {memory}"] if memory else []
        t = time.perf_counter()
        q = refine.refine(image, probabilities=probs, labels=coarse, num_labels=settings.num_labels,
                          gt_prob=settings.gt_prob, preset=settings.preset, logits=settings.logits,
                          backend=settings.backend, max_side=settings.max_side)
        labels = label_map(q)  # Caffe's tie rule
        timings["crf"] = time.perf_counter() - t
        t = time.perf_counter()
        labels_png, *probs_npy = output_paths(image_path, out_dir, save_probs=save_probs)
        write_label_png(labels_png, labels)
        if save_probs:
            save_probabilities(probs_npy[0], q)
        timings["write"] = time.perf_counter() - t
    except (ImageReadError, OSError, ValueError, TypeError) as exc:
        message = str(exc) if os.fspath(image_path) in str(exc) or os.fspath(source_dir) in str(exc) \
            else f"{image_path}: {exc}"
        return Outcome(image_path, error=message, seconds=time.perf_counter() - start)
    report = refine.change_report(labels, probabilities=probs, labels=coarse, logits=settings.logits)
    warnings += [f"{image_path}: {line[len('warning: '):]}" for line in report if line.startswith("warning: ")]
    return Outcome(image_path, seconds=time.perf_counter() - start, timings=timings, warnings=warnings)


# ----------------------------------------------------------------------------- the three jobs


def _plan(paths, outputs, resume, call, on_outcome):
    """Which images of a job run: ``(outcomes, calls, index)``.

    ``outcomes`` (one per path) already holds those that do not run: an image whose output name
    another one before it takes (an error), and with ``resume`` one whose ``outputs(path)`` are
    all there (skipped); ``on_outcome`` has been told of them. ``calls`` holds ``call(path)`` of
    the others, and ``index`` their positions in ``paths``.
    """
    outcomes, calls, index, seen = [None] * len(paths), [], [], {}
    for k, path in enumerate(paths):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            outcomes[k] = Outcome(path, error=f"{path}: its output {stem}.png would overwrite the one of "
                                              f"{seen[stem]}; skipped")
        elif resume and all(os.path.isfile(p) for p in outputs(path)):
            outcomes[k] = Outcome(path, skipped=True)
        else:
            calls.append(call(path))
            index.append(k)
        seen.setdefault(stem, path)
    for outcome in outcomes:
        if outcome is not None and on_outcome is not None:
            on_outcome(outcome)
    return outcomes, calls, index


def segment_files(paths, settings, out_dir, overlay=False, save_probs=False, workers=1, client=None,
                  resume=False, on_outcome=None, threads=None, batch=1):
    """Segment image files into ``out_dir``, on ``workers`` processes or a Dask ``client``.

    Parameters
    ----------
    paths : list of str
        Image files (:func:`nets.app.files.image_files` expands folders).
    settings : Settings
    out_dir : str
        Gets ``NAME.png`` (VOC-palette labels), with ``overlay`` ``NAME_overlay.png``, with
        ``save_probs`` ``NAME_probs.npy`` ((L, H, W) float32), all written atomically.
    workers : int
    client : distributed.Client, optional
    resume : bool
        Skip the images whose outputs are all there (complete: they are written atomically).
    on_outcome : callable, optional
    threads : int, optional
        Threads per worker process (default ``max(1, cores // processes)``).
    batch : int
        Images per call: up to ``batch`` consecutive images go to one worker together, and
        those of one size through the network as one batch (worth it on a GPU; the outputs
        are the same as one by one).

    Returns
    -------
    Summary
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    outcomes, calls, index = _plan(paths, lambda path: output_paths(path, out_dir, overlay, save_probs), resume,
                                   lambda path: (settings, path, out_dir, overlay, save_probs), on_outcome)
    if batch == 1:
        results = run(segment_one, calls, workers, client, on_outcome, threads)
    else:  # groups of consecutive images, one call each
        groups = [calls[g:g + batch] for g in range(0, len(calls), batch)]
        grouped = [(settings, tuple(call[1] for call in group), out_dir, overlay, save_probs) for group in groups]
        results = [o for group in run(segment_group, grouped, workers, client, on_outcome, threads) for o in group]
    for k, outcome in zip(index, results):
        outcomes[k] = outcome
    # a worker killed while it wrote (its image was done again), or an earlier run killed while it
    # wrote, leaves a temporary file behind
    remove_orphans(out_dir, [os.path.basename(p) for path in paths
                             for p in output_paths(path, out_dir, overlay, save_probs)])
    return Summary(outcomes, time.perf_counter() - start, describe_workers(workers, client, threads))


def state_file(state_dir, label_path):
    """Where a state folder keeps the confusion matrix (or matrices) of one image: ``STEM.npy``."""
    return os.path.join(os.fspath(state_dir), os.path.splitext(os.path.basename(label_path))[0] + ".npy")


def check_state(state_dir, current):
    """Create the state folder, or check that it was made by the same settings (``current``, plain
    JSON values, kept in its ``settings.json``)."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "settings.json")
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != current:
            differ = [f"{key}: {_short(saved.get(key))} there, {_short(current.get(key))} now"
                      for key in {**saved, **current} if saved.get(key) != current.get(key)]
            raise ValueError(f"{state_dir}: its confusion matrices were counted with other settings ("
                             + "; ".join(differ) + "). Use another --state folder")
    else:
        with atomic_write(path, "w") as f:
            json.dump(current, f, indent=1)


def _short(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def saved_matrix(path, shape):
    """The int64 matrix of ``shape`` saved at ``path`` by an earlier run, or None (none, or not such a matrix)."""
    if not os.path.isfile(path):
        return None
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # a file that is not a .npy: counted again, and written over
    return matrix if matrix.shape == tuple(shape) and matrix.dtype == np.int64 else None


def evaluate_files(pairs, settings, num_classes, workers=1, client=None, state_dir=None, resume=False,
                   on_outcome=None, threads=None):
    """Segment images and count one confusion matrix over all of them (PASCAL VOC's measure).

    Parameters
    ----------
    pairs : list of (str, str)
        ``(ground-truth label PNG, image)`` (:func:`nets.app.evaluate.pair_files`).
    settings : Settings
    num_classes : int
    workers : int
    client : distributed.Client, optional
    state_dir : str, optional
        Keep each image's confusion matrix there (``STEM.npy`` and ``settings.json``).
    resume : bool
        Take the matrices already in ``state_dir`` instead of segmenting those images again.
    on_outcome : callable, optional
    threads : int, optional
        Threads per worker process (default ``max(1, cores // processes)``).

    Returns
    -------
    matrix : ndarray of shape (num_classes, num_classes), int64
        The exact integer sum of the images' matrices, whatever the order they finished in.
    summary : Summary
    """
    start = time.perf_counter()
    state = {**asdict(settings), "crf": repr(settings.crf), "scales": list(settings.scales), "num_classes": num_classes}
    jobs = [(image_path, label_path, (settings, image_path, label_path, num_classes, state_dir))
            for label_path, image_path in pairs]
    matrix, outcomes = count_matrices(evaluate_one, jobs, (num_classes, num_classes), state, state_dir, resume,
                                      workers, client, on_outcome, threads)
    return matrix, Summary(outcomes, time.perf_counter() - start, describe_workers(workers, client, threads))


def count_matrices(function, jobs, shape, state, state_dir=None, resume=False, workers=1, client=None,
                   on_outcome=None, threads=None):
    """Run ``function(*call)`` for every image, each giving a confusion matrix (or a stack of them), and sum them.

    Parameters
    ----------
    function : callable returning an Outcome with ``matrix`` of ``shape``
        Saves the matrix in ``state_dir`` as :func:`state_file` names it, when it is given one.
    jobs : list of (str, str, tuple)
        ``(image, ground truth, call)`` for every image.
    shape : tuple of int
    state : dict
        The settings that made the matrices, kept in the state folder (:func:`check_state`).
    state_dir, resume, workers, client, on_outcome, threads
        As for :func:`evaluate_files`.

    Returns
    -------
    total : ndarray of ``shape``, int64
        The exact integer sum over the images that did not fail.
    outcomes : list of Outcome
        One per job, in their order.
    """
    if resume and state_dir is None:
        raise ValueError("resume needs the state folder of the interrupted run (--state DIR)")
    if state_dir is not None:
        check_state(state_dir, state)
    outcomes, calls, index = [None] * len(jobs), [], []
    for k, (image_path, label_path, call) in enumerate(jobs):
        matrix = saved_matrix(state_file(state_dir, label_path), shape) if resume else None
        if matrix is not None:
            outcomes[k] = Outcome(image_path, matrix=matrix, skipped=True)
            if on_outcome is not None:
                on_outcome(outcomes[k])
            continue
        calls.append(call)
        index.append(k)
    for k, outcome in zip(index, run(function, calls, workers, client, on_outcome, threads)):
        outcomes[k] = outcome
    if state_dir is not None:  # what killed workers or runs left (see segment_files)
        remove_orphans(state_dir, [os.path.basename(state_file(state_dir, label)) for _, label, _ in jobs])
    total = np.zeros(shape, np.int64)
    for outcome in outcomes:
        if outcome.matrix is not None:
            total += outcome.matrix
    return total, outcomes


def refine_files(paths, settings, source_dir, out_dir, save_probs=False, workers=1, client=None, resume=False,
                 on_outcome=None, threads=None):
    """Refine image files with the dense CRF alone, each from its input in ``source_dir``, into ``out_dir``.

    Parameters
    ----------
    paths : list of str
        Image files (:func:`nets.app.files.image_files` expands folders).
    settings : RefineSettings
    source_dir : str
        The images' probabilities or coarse label maps, by name (:func:`nets.app.refine.source_file`).
    out_dir : str
        Gets ``NAME.png`` (VOC-palette labels) and with ``save_probs`` ``NAME_probs.npy`` ((L, H, W)
        float32), written atomically. Not ``source_dir`` when that holds label maps (they would be
        overwritten).
    workers, client, resume, on_outcome, threads
        As for :func:`segment_files`.

    Returns
    -------
    Summary
    """
    if not os.path.isdir(source_dir):
        raise ValueError(f"{source_dir}: no such folder (the images' {settings.source})")
    os.makedirs(out_dir, exist_ok=True)
    if settings.source == "labels" and os.path.samefile(source_dir, out_dir):
        raise ValueError(f"the output folder {out_dir} is the folder of the coarse label maps: the refined "
                         f"ones would overwrite them; choose another output folder")
    start = time.perf_counter()
    outcomes, calls, index = _plan(paths, lambda path: output_paths(path, out_dir, save_probs=save_probs), resume,
                                   lambda path: (settings, path, source_dir, out_dir, save_probs), on_outcome)
    for k, outcome in zip(index, run(refine_one, calls, workers, client, on_outcome, threads)):
        outcomes[k] = outcome
    remove_orphans(out_dir, [os.path.basename(p) for path in paths
                             for p in output_paths(path, out_dir, save_probs=save_probs)])
    return Summary(outcomes, time.perf_counter() - start, describe_workers(workers, client, threads))
