"""Segmentation scores as PASCAL VOC computes them: one confusion matrix over every pixel.

The confusion matrix ``C[t, p]`` counts the pixels of true class ``t`` predicted as
``p``, summed over the whole data set (pixels whose ground truth is 255, "void",
are left out). From it, for each class ``c``::

    IoU_c = C[c, c] / (sum_p C[c, p] + sum_t C[t, c] - C[c, c])     # TP / (TP + FN + FP)

and the mean IoU is the mean over the classes that occur (in the ground truth or the
predictions); a class that occurs in neither has no IoU (NaN) and is left out of the
mean. Averaging per-image IoUs instead, or counting void pixels, gives different and
wrong numbers. Label maps are read as indices (:func:`nets.app.imageio.read_label_png`),
never as colours.

References
----------
M. Everingham et al., "The PASCAL Visual Object Classes Challenge: A Retrospective",
IJCV 2015, Sec. 3.2 (the segmentation measure); Chen et al., TPAMI 2018, Sec. 4.
"""
import numpy as np

from nets.app.imageio import VOID_LABEL


def confusion_matrix(truth, predicted, num_classes, ignore=VOID_LABEL):
    """The confusion matrix of one label map (add them up over a data set).

    Parameters
    ----------
    truth : ndarray of shape (H, W), integer
        Ground truth in ``[0, num_classes)``, or ``ignore``.
    predicted : ndarray of shape (H, W), integer
        Predictions in ``[0, num_classes)``.
    num_classes : int
    ignore : int or None
        The ground-truth value whose pixels are not counted (VOC's 255).

    Returns
    -------
    ndarray of shape (num_classes, num_classes), int64
        ``C[t, p]``: pixels of true class ``t`` predicted as ``p``.
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape or truth.ndim != 2:
        raise ValueError(f"ground truth and prediction must be (H, W) maps of the same size, got "
                         f"{truth.shape} and {predicted.shape}")
    for name, a in (("ground truth", truth), ("prediction", predicted)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must hold integer labels, got dtype {a.dtype}")
    keep = np.ones(truth.shape, bool) if ignore is None else truth != ignore
    t = truth[keep].astype(np.int64)
    p = predicted[keep].astype(np.int64)
    for name, a in (("ground truth", t), ("prediction", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes})"
                             f"{'' if name == 'prediction' or ignore is None else f' or be {ignore}'}, "
                             f"got values in [{a.min()}, {a.max()}]")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def class_iou(matrix):
    """Per-class intersection over union from a confusion matrix.

    Parameters
    ----------
    matrix : ndarray of shape (K, K), integer

    Returns
    -------
    ndarray of shape (K,), float64
        ``TP / (TP + FP + FN)``; NaN for a class absent from both truth and predictions.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix is square (K, K), got shape {m.shape}")
    tp = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(matrix):
    """Mean of :func:`class_iou` over the classes that occur (NaN if none does)."""
    iou = class_iou(matrix)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(matrix):
    """Fraction of counted pixels labelled correctly: ``trace(C) / sum(C)``."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(np.trace(m) / m.sum()) if m.sum() else float("nan")


def format_table(matrix, classes=None):
    """Per-class IoU, mIoU and pixel accuracy as aligned text lines."""
    iou = class_iou(matrix)
    names = [classes[k] if classes is not None and k < len(classes) else str(k) for k in range(len(iou))]
    width = max(len(n) for n in names + ["mean IoU"])
    lines = [f"{'class':<{width}}  IoU"]
    for name, value in zip(names, iou):
        lines.append(f"{name:<{width}}  {'-' if np.isnan(value) else f'{100 * value:6.2f}'}")
    lines.append(f"{'mean IoU':<{width}}  {100 * mean_iou(matrix):6.2f}")
    lines.append(f"{'pixel acc.':<{width}}  {100 * pixel_accuracy(matrix):6.2f}")
    return lines


def pair_files(labels_dir, other_dir, suffix="", stems=None):
    """Ground-truth PNGs of ``labels_dir`` paired with the files of ``other_dir`` of the same stem.

    Parameters
    ----------
    labels_dir, other_dir : str
    suffix : str
        Expected after the stem in ``other_dir`` (``""``: any image extension).
    stems : iterable of str, optional
        Only these stems (e.g. the lines of VOC's ``ImageSets/Segmentation/val.txt``);
        a listed stem without a label file is reported missing.

    Returns
    -------
    pairs : list of (str, str)
        ``(label file, matching file)``, sorted by stem.
    missing : list of str
        One message per label file without a match.
    """
    import os

    from nets.app.files import image_extensions
    for folder in (labels_dir, other_dir):
        if not os.path.isdir(folder):
            raise ValueError(f"{folder}: no such folder")
    extensions = image_extensions()
    by_stem = {}
    for name in sorted(os.listdir(other_dir)):
        stem, ext = os.path.splitext(name)
        if (suffix and name.endswith(suffix)) or (not suffix and ext.lower() in extensions):
            by_stem.setdefault(name[:-len(suffix)] if suffix else stem, os.path.join(other_dir, name))
    pairs, missing = [], []
    names = sorted(n for n in os.listdir(labels_dir) if os.path.splitext(n)[1].lower() == ".png")
    if stems is not None:
        wanted = list(dict.fromkeys(stems))
        present = {os.path.splitext(n)[0] for n in names}
        missing += [f"{os.path.join(labels_dir, s + '.png')}: no such label file" for s in wanted if s not in present]
        names = [n for n in names if os.path.splitext(n)[0] in set(wanted)]
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem in by_stem:
            pairs.append((os.path.join(labels_dir, name), by_stem[stem]))
        else:
            missing.append(f"{os.path.join(labels_dir, name)}: no file named {stem}{suffix or '.*'} in {other_dir}")
    return pairs, missing
