"""Unary energies from network outputs or from coarse labels.

The CRF wants energies ``U = psi_u`` (L, H, W), lower meaning more likely. The
paper uses ``psi_u = -log P`` with P the classifier's probabilities; DeepLab's
offline tool uses ``-score`` (the pre-softmax scores), which differs from
``-log softmax(score)`` by a per-pixel constant that mean field ignores.

References
----------
P. Kraehenbuehl, V. Koltun, NIPS 2011, section 2 (the unary potential).
"""
import numpy as np


def _real_array(name, x, ndim):
    try:
        a = np.asarray(x)
    except ValueError as exc:  # a ragged nested list
        raise ValueError(f"{name} must be an array of shape (L, H, W), got a ragged sequence ({exc})") from None
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != ndim or min(a.shape) < 1:
        raise ValueError(f"{name} must have {ndim} dimensions (labels first: (L, H, W)), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return a


def unary_from_softmax(probabilities, scale=None, clip=1e-5):
    """``U = -log(P)`` from probabilities (L, H, W).

    Parameters
    ----------
    probabilities : ndarray of shape (L, H, W)
        Values in [0, 1] that sum to 1 over the labels of every pixel (to 1e-3).
    scale : float in (0, 1], optional
        Mix with the uniform distribution first, ``scale P + (1 - scale) / L``:
        a lower scale trusts the classifier less.
    clip : float, optional
        Lower bound for P before the log (avoids -log 0 = inf); None disables it.

    Returns
    -------
    ndarray of shape (L, H, W), float32
    """
    p = _real_array("probabilities", probabilities, 3).astype(np.float64)
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(f"probabilities must lie in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]; "
                         f"for scores or logits use unary_from_logits")
    sums = p.sum(axis=0)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(f"probabilities must sum to 1 over the labels (axis 0 of (L, H, W)), got sums in "
                         f"[{sums.min():.4g}, {sums.max():.4g}]; is the label axis last? "
                         f"use probabilities.transpose(2, 0, 1)")
    n_labels = p.shape[0]
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale!r}")
        p = scale * p + (1.0 - scale) / n_labels
    if clip is not None:
        if not 0 < clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {clip!r}")
        p = np.maximum(p, clip)
    with np.errstate(divide="ignore"):
        u = -np.log(p)
    if not np.isfinite(u).all():
        raise ValueError("a probability is 0 and clip is None: -log 0 is infinite; pass clip=1e-5")
    return u.astype(np.float32)


def unary_from_logits(scores):
    """``U = -log softmax(scores)`` over the labels, (L, H, W) float32 (numerically stable)."""
    s = _real_array("scores", scores, 3).astype(np.float64)
    top = s.max(axis=0, keepdims=True)
    log_z = top + np.log(np.exp(s - top).sum(axis=0, keepdims=True))
    with np.errstate(over="ignore"):  # said below, in words
        u = (log_z - s).astype(np.float32)
    if not np.isfinite(u).all():
        raise ValueError(f"scores span {s.min():.3g} to {s.max():.3g}: their energies do not fit in float32 "
                         f"(expected differences between labels below {np.finfo(np.float32).max:.3g})")
    return u


def unary_from_labels(labels, n_labels, gt_prob=0.7, unsure=None):
    """Unary energies from a coarse labelling (H, W).

    A pixel labelled l gets probability ``gt_prob`` for l and ``(1 - gt_prob) /
    (L - 1)`` for every other label; pixels equal to ``unsure`` (e.g. 255, VOC's
    void) get the uniform distribution. Unlike pydensecrf's helper, label 0 is an
    ordinary label (use :func:`crf.compat.utils.unary_from_labels` for its rule).

    Parameters
    ----------
    labels : ndarray of shape (H, W), integers in [0, n_labels) or ``unsure``
    n_labels : int >= 2
    gt_prob : float in (0, 1)
    unsure : int, optional

    Returns
    -------
    ndarray of shape (n_labels, H, W), float32
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be an (H, W) integer array, got shape {lab.shape} dtype {lab.dtype}")
    if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)) or n_labels < 2:
        raise ValueError(f"n_labels must be an integer >= 2, got {n_labels!r}")
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must be in (0, 1), got {gt_prob!r}")
    sure = np.ones(lab.shape, bool) if unsure is None else lab != unsure
    if sure.any() and (lab[sure].min() < 0 or lab[sure].max() >= n_labels):
        raise ValueError(f"labels must lie in [0, {n_labels}) (or equal unsure={unsure}), got values in "
                         f"[{lab[sure].min()}, {lab[sure].max()}]")
    u = np.full((n_labels,) + lab.shape, -np.log((1.0 - gt_prob) / (n_labels - 1)), np.float64)
    rows, cols = np.nonzero(sure)
    u[lab[rows, cols], rows, cols] = -np.log(gt_prob)
    u[:, ~sure] = np.log(n_labels)
    return u.astype(np.float32)
