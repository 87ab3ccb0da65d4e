"""``deeplab crf``: refine a segmentation with DeepLab's dense CRF, from probabilities or coarse labels.

Inputs, checked before anything runs (a clear error naming what was expected and given):

* ``probabilities``: a ``.npy`` of shape ``(L, H, W)`` (labels first, as everywhere in this
  project) or ``(H, W, L)`` (labels last, as many other tools write them), where ``(H, W)``
  is the image's size. ``(L, H, W)`` is tried first, so an array whose three sides are all
  equal is read labels-first. Finite, in [0, 1], summing to one over the labels (within
  1e-3); or, with ``logits=True``, pre-softmax scores (any finite values, DeepLab's
  unary ``-score``). An array that matches the image only with height and width swapped is refused
  by name.
* ``labels``: a coarse label map (an indexed or gray PNG of class indices, 255 =
  unsure): label ``l`` gets probability ``gt_prob`` and every other label
  ``(1 - gt_prob) / (L - 1)``; unsure pixels are uniform (:func:`crf.unary_from_labels`).

The CRF is DeepLab's offline one with a named preset: unary ``-log P`` (probabilities
clipped at 1e-5), the RGB uint8 image, per-pixel normalisation
(:func:`crf.deeplab_refine`; ``-log P`` differs from DeepLab's ``-score`` by a constant
per pixel, which the mean-field softmax does not see).

Before the CRF is built, its memory is estimated (:mod:`crf.memory`); above 80 % of the
memory available, :func:`memory_warning` says so and names a ``max_side`` that fits: the
image is then refined at a reduced size and the result enlarged (:mod:`crf.reduced`).
"""
import os

import numpy as np

import crf
import crf.backend
import crf.memory
import crf.reduced
from nets.app.environment import available_memory
from nets.deeplab import label_map

#: Largest allowed |sum over labels - 1| of probabilities.
SUM_TOLERANCE = 1e-3


def source_file(image_path, folder, kind):
    """The input of an image among many (``deeplab crf`` over folders), found by the image's name.

    For ``kind="probs"`` ``folder/NAME_probs.npy`` (what ``deeplab segment --save-probs`` writes)
    or else ``folder/NAME.npy``; for ``kind="labels"`` ``folder/NAME.png``. Raises ``ValueError``
    naming the files looked for when there is none.
    """
    stem = os.path.splitext(os.path.basename(os.fspath(image_path)))[0]
    names = [stem + "_probs.npy", stem + ".npy"] if kind == "probs" else [stem + ".png"]
    for name in names:
        path = os.path.join(os.fspath(folder), name)
        if os.path.isfile(path):
            return path
    raise ValueError(f"{image_path}: no {' or '.join(names)} in {folder}")


def read_inputs(image_path, source_path, source, logits=False):
    """An image and its CRF input, read and checked: ``(image, probabilities, coarse labels)``.

    ``source`` is ``"probs"`` (``source_path`` a ``.npy`` of probabilities, or of scores with
    ``logits``: :func:`load_probabilities`; the labels are then None) or ``"labels"`` (a coarse
    label PNG; the probabilities are then None).
    """
    from nets.app.imageio import read_image, read_label_png
    image = read_image(image_path)
    if source == "probs":
        return image, load_probabilities(source_path, *image.shape[:2], logits=logits), None
    return image, None, read_label_png(source_path)


def load_probabilities(path, height, width, logits=False):
    """Read and check probabilities (or logits) for an ``height`` x ``width`` image -> ``(L, H, W)`` float32."""
    what = _not_npy(path)
    if what:
        raise ValueError(f"{path}: expected a .npy array of probabilities (np.save), got {what}")
    try:
        p = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array of probabilities ({exc})") from None
    return check_probabilities(p, height, width, name=str(path), logits=logits)


def _not_npy(path):
    """What the file at ``path`` is when its first bytes are not a .npy header (None when they are)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None  # np.load says what is wrong with the path
    if head == b"\x93NUMPY":
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a .npz archive (np.savez): save the one array with np.save"
    return f"a file that does not start with the .npy header (it starts with {head!r})"


def check_probabilities(p, height, width, name="probabilities", logits=False):
    """``(L, H, W)`` or ``(H, W, L)`` probabilities, checked -> ``(L, H, W)`` float32 (module docstring).

    With ``logits=True`` the values are pre-softmax scores: any finite numbers.
    """
    p = np.asarray(p)
    if p.ndim != 3 or not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"{name}: expected probabilities of shape (L, H, W) or (H, W, L) with "
                         f"(H, W) = ({height}, {width}), got shape {p.shape} dtype {p.dtype}")
    if p.shape[1:] == (height, width):
        lhw, layout = p, "(L, H, W)"
    elif p.shape[:2] == (height, width):
        lhw, layout = p.transpose(2, 0, 1), "(H, W, L)"
    elif (p.shape[1:] == (width, height) or p.shape[:2] == (width, height)) and height != width:
        raise ValueError(f"{name}: shape {p.shape} has height and width swapped: the image is "
                         f"{height} rows x {width} columns, so expected (L, {height}, {width}) or "
                         f"({height}, {width}, L)")
    else:
        raise ValueError(f"{name}: shape {p.shape} does not match the image ({height} x {width}): expected "
                         f"(L, {height}, {width}) or ({height}, {width}, L)")
    if lhw.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 labels, got {lhw.shape[0]}")
    what = "scores" if logits else "probabilities"
    if not np.isfinite(lhw).all():
        raise ValueError(f"{name}: {what} must be finite; found NaN or infinite values")
    with np.errstate(over="ignore"):  # said below, in words
        lhw32 = lhw.astype(np.float32)
    if not np.isfinite(lhw32).all():
        raise ValueError(f"{name}: {what} must fit in float32; found values up to {np.abs(lhw).max():.3g}")
    lhw = lhw32
    if logits:
        return np.ascontiguousarray(lhw)
    if lhw.min() < 0 or lhw.max() > 1:
        raise ValueError(f"{name}: probabilities must lie in [0, 1], got values in [{lhw.min():.4g}, "
                         f"{lhw.max():.4g}] (scores or energies? pass softmax(scores))")
    sums = lhw.sum(axis=0, dtype=np.float64)
    worst = float(np.abs(sums - 1).max())
    if worst > SUM_TOLERANCE:
        raise ValueError(f"{name}: probabilities must sum to 1 over the labels (axis of size {lhw.shape[0]}, "
                         f"read as {layout}); the sum is off by up to {worst:.4g}")
    return np.ascontiguousarray(lhw)


def refine(image, probabilities=None, labels=None, num_labels=21, gt_prob=0.7,
           preset="deeplab-v2-resnet101-voc", logits=False, backend="auto", max_side=None):
    """Dense-CRF marginals for an image from probabilities or from a coarse labelling.

    The model itself, for its :meth:`crf.DenseCRF.summary`, comes from :func:`refine_model`
    with the same arguments.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8, RGB
    probabilities : ndarray of shape (L, H, W), float32, optional
        Checked by :func:`check_probabilities`.
    labels : ndarray of shape (H, W), integer, optional
        Coarse labels in ``[0, num_labels)`` or 255 (unsure).
    num_labels : int
        Number of labels with ``labels``.
    gt_prob : float
        Confidence given to a coarse label.
    preset : str or crf.Preset
    logits : bool
        ``probabilities`` holds pre-softmax scores instead.
    backend : {"numpy", "cpu", "cuda", "auto"}
    max_side : int, optional
        Refine an image with a longer side at a reduced size (:mod:`crf.reduced`).

    Returns
    -------
    ndarray of shape (L, H, W), float32
        The CRF's marginals Q.
    """
    model = refine_model(image, probabilities, labels, num_labels, gt_prob, preset, logits, backend, max_side)
    return crf.reduced.enlarge_marginals(model.inference(crf.get_preset(preset).iterations), image.shape[:2])


def refine_model(image, probabilities=None, labels=None, num_labels=21, gt_prob=0.7,
                 preset="deeplab-v2-resnet101-voc", logits=False, backend="auto", max_side=None):
    """The :class:`crf.DenseCRF` of :func:`refine` (same arguments), before inference; with
    ``max_side``, of the reduced image (its Q is then to be enlarged,
    :func:`crf.reduced.enlarge_marginals`)."""
    scores = crf_scores(image, probabilities, labels, num_labels, gt_prob, logits)
    return crf.deeplab_crf(np.ascontiguousarray(image), scores, preset=preset, backend=backend, max_side=max_side)


def crf_scores(image, probabilities=None, labels=None, num_labels=21, gt_prob=0.7, logits=False):
    """The scores that :func:`refine` hands to DeepLab's CRF (``-U``), checked: (L, H, W) float32.

    ``-log P`` of probabilities (clipped at 1e-5), the scores themselves with ``logits``, or
    those of a coarse labelling (:func:`crf.unary_from_labels`); arguments as for :func:`refine`.
    Computed once, they serve any number of presets (``crf.deeplab_refine(image, scores, preset)``).
    """
    if (probabilities is None) == (labels is None):
        raise ValueError("pass exactly one of probabilities and labels")
    height, width = image.shape[:2]
    if probabilities is not None and logits:
        return check_probabilities(probabilities, height, width, name="scores", logits=True)
    if probabilities is not None:
        return -crf.unary_from_softmax(check_probabilities(probabilities, height, width))
    labels = np.asarray(labels)
    if labels.shape != (height, width):
        raise ValueError(f"the coarse labels must be an (H, W) map of the image's size ({height}, {width}), "
                         f"got shape {labels.shape}")
    return -crf.unary_from_labels(labels, num_labels, gt_prob=gt_prob, unsure=255)


#: Warn when the CRF's estimated memory is above this fraction of the memory available.
MEMORY_WARN_FRACTION = 0.8


def memory_warning(height, width, n_labels, preset, max_side=None, available=None, backend="cpu"):
    """A warning when the CRF would need more memory than this machine has free, or None.

    The need is :func:`crf.memory.estimate_reduced_bytes` at the size the CRF runs at (reduced to
    ``max_side`` if given); the warning names the ``--max-side`` that would fit.

    Parameters
    ----------
    height, width, n_labels : int
        The image's size and the labels.
    preset : crf.Preset
    max_side : int, optional
    available : int, optional
        Bytes available (default: :func:`nets.app.environment.available_memory`; None where unknown).
    backend : {"numpy", "cpu", "cuda", "auto"}
        Where the CRF runs: the estimate is of the host's memory, so nothing is said for the GPU.
    """
    if crf.backend.resolve_backend(backend) == "cuda":
        return None
    available = available_memory() if available is None else available
    if available is None:
        return None
    need = crf.memory.estimate_reduced_bytes(height, width, n_labels, max_side, preset.theta_gamma)
    budget = int(MEMORY_WARN_FRACTION * available)
    if need <= budget:
        return None
    h, w = crf.reduced.reduced_shape(height, width, max_side) if max_side else (height, width)
    side = crf.memory.largest_side(height, width, n_labels, budget, preset.theta_gamma)
    advice = (f"--max-side {side} would need about "
              f"{_size(crf.memory.estimate_reduced_bytes(height, width, n_labels, side, preset.theta_gamma))}"
              if side else "no reduced size would fit either")
    return (f"the CRF at {h} x {w} pixels with {n_labels} labels needs up to about {_size(need)} of memory, "
            f"and {_size(available)} are available: it may fail or swap; {advice}")


def _size(n_bytes):
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


#: A pixel whose top input probability is above this is "near one-hot": the CRF can barely move it.
NEAR_ONE_HOT = 0.999
#: Warn when more than this fraction of the pixels is near one-hot.
NEAR_ONE_HOT_WARN_FRACTION = 0.95


def change_report(refined, probabilities=None, labels=None, logits=False):
    """What the CRF did, in a few lines for ``deeplab crf``: the pixels whose label changed, and
    a warning when the input was almost one-hot everywhere (then the CRF cannot move it).

    Parameters
    ----------
    refined : ndarray of shape (H, W), integer
        The labels written after the CRF (:func:`nets.deeplab.label_map` of its marginals).
    probabilities : ndarray of shape (L, H, W), optional
        The input probabilities (or scores, with ``logits``); compared through
        :func:`nets.deeplab.label_map`.
    labels : ndarray of shape (H, W), optional
        The coarse input labels (255: unsure, not counted).
    logits : bool

    Returns
    -------
    list of str
    """
    if probabilities is not None:
        before = label_map(probabilities)  # the same labels with or without a softmax
        counted = np.ones(before.shape, bool)
    else:
        before = np.asarray(labels)
        counted = before != 255
    changed = int(((before != refined) & counted).sum())
    total = int(counted.sum())
    lines = [f"changed {changed} of {total} pixels ({100 * changed / max(total, 1):.2f} %) against the input's "
             f"{'labels' if labels is not None else 'argmax'}"]
    if probabilities is not None:
        p = np.asarray(probabilities, np.float64)
        if logits:
            p = np.exp(p - p.max(axis=0, keepdims=True))
            p /= p.sum(axis=0, keepdims=True)
        sharp = float((p.max(axis=0) > NEAR_ONE_HOT).mean())
        if sharp > NEAR_ONE_HOT_WARN_FRACTION:
            lines.append(f"warning: {100 * sharp:.1f} % of pixels have a top probability above {NEAR_ONE_HOT}: "
                         "the unary -log P dwarfs the pairwise terms there and the CRF can hardly move them; "
                         "pass the network's softmax (not a one-hot map) or its scores with --from-logits")
    return lines
