"""pydensecrf's ``utils`` helpers, with its conventions.

Shapes are pydensecrf's: unaries (n_labels, n_pixels), features (D, n_pixels).
``unary_from_labels`` keeps its rule that label 0 means "unsure" when
``zero_unsure`` is true (the labels are then 1..n_labels); the native
:func:`crf.unary_from_labels` has no such rule.
"""
from numbers import Number

import numpy as np


def unary_from_softmax(sm, scale=None, clip=1e-5):
    """``-log(sm)`` reshaped to (n_labels, n_pixels) float32; ``sm`` (n_labels, ...).

    Like pydensecrf's, it does not ask the probabilities to sum to 1, but it refuses
    NaN and infinity, and labels on the last axis (sums of 1 over the last axis and
    not over the first), which would otherwise give a unary of the wrong shape.
    """
    p = np.asarray(sm, dtype=np.float64)
    if not np.isfinite(p).all():
        raise ValueError("sm must be finite (no NaN or infinity)")
    n_labels = p.shape[0]
    if p.ndim == 3 and p.shape[-1] != n_labels and not np.allclose(p.sum(axis=0), 1.0, atol=1e-3):
        if np.allclose(p.sum(axis=-1), 1.0, atol=1e-3):
            raise ValueError(f"sm of shape {p.shape} sums to 1 over its last axis, not its first: the labels "
                             f"come first, (n_labels, H, W); pass sm.transpose(2, 0, 1)")
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"`scale` needs to be in (0,1], got {scale!r}")
        p = scale * p + (1.0 - scale) / n_labels
    if clip is not None:
        p = np.clip(p, clip, 1.0)
    with np.errstate(divide="ignore"):
        return -np.log(p).reshape(n_labels, -1).astype(np.float32)


def unary_from_labels(labels, n_labels, gt_prob, zero_unsure=True):
    """Energies (n_labels, n_pixels) float32 from a labelling (any shape, flattened).

    A labelled pixel gets probability ``gt_prob`` for its label and
    ``(1 - gt_prob) / (n_labels - 1)`` for the others. With ``zero_unsure`` the
    labels are 1..n_labels and 0 means "unsure" (uniform).
    """
    if not 0 < gt_prob < 1:
        raise ValueError(f"`gt_prob` must be in (0,1), got {gt_prob!r}")
    lab = np.asarray(labels).ravel()
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    index = lab - 1 if zero_unsure else lab
    sure = lab != 0 if zero_unsure else np.ones(lab.shape, bool)
    if sure.any() and (index[sure].min() < 0 or index[sure].max() >= n_labels):
        raise ValueError(f"labels must lie in [{1 if zero_unsure else 0}, "
                         f"{n_labels if zero_unsure else n_labels - 1}], got [{lab[sure].min()}, {lab[sure].max()}]")
    u = np.full((n_labels, lab.size), -np.log((1.0 - gt_prob) / (n_labels - 1)), np.float32)
    cols = np.nonzero(sure)[0]
    u[index[cols], cols] = -np.log(gt_prob)
    if zero_unsure:
        u[:, ~sure] = -np.log(1.0 / n_labels)
    return u


def create_pairwise_gaussian(sdims, shape):
    """Position features (len(shape), prod(shape)) float32 in index order ('ij': row first)."""
    mesh = np.array(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), dtype=np.float32)
    if len(sdims) != len(shape):
        raise ValueError(f"sdims needs one value per dimension of shape {tuple(shape)}, got {sdims!r}")
    for i, s in enumerate(sdims):
        mesh[i] /= np.float32(s)
    return mesh.reshape(len(sdims), -1)


def create_pairwise_bilateral(sdims, schan, img, chdim=-1):
    """Position and channel features (len(sdims) + C, n_pixels) float32.

    ``chdim`` is the channel axis of ``img``; -1 means "no channel axis" (one
    channel), as in pydensecrf. ``schan`` is one number or one per channel.
    """
    img = np.asarray(img)
    if chdim != -1 and not -img.ndim <= chdim < img.ndim:
        raise ValueError(f"chdim must be -1 (no channel axis) or an axis of img (shape {img.shape}), got {chdim}")
    im_feat = img[np.newaxis].astype(np.float32) if chdim == -1 else np.moveaxis(img, chdim, 0).astype(np.float32)
    if isinstance(schan, Number):
        im_feat /= np.float32(schan)
    else:
        if len(schan) != im_feat.shape[0]:
            raise ValueError(f"schan needs one value per channel ({im_feat.shape[0]}), got {schan!r}")
        for i, s in enumerate(schan):
            im_feat[i] /= np.float32(s)
    mesh = np.array(np.meshgrid(*[np.arange(s) for s in im_feat.shape[1:]], indexing="ij"), dtype=np.float32)
    if len(sdims) != mesh.shape[0]:
        raise ValueError(f"sdims needs one value per spatial dimension ({mesh.shape[0]}), got {sdims!r}")
    for i, s in enumerate(sdims):
        mesh[i] /= np.float32(s)
    feats = np.concatenate([mesh, im_feat])
    return feats.reshape(feats.shape[0], -1)
