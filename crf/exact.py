"""Brute-force Gaussian filtering and mean field: the ground truth on small images.

``exact_filter`` computes ``(K v)_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (the
pixel itself included, j = i) in float64, in blocks of rows so that memory
stays at ``block * N`` doubles. It is O(N^2 d + N^2 C): use it on a few
thousand points at most. ``exact_mean_field`` runs the dense CRF's update with
these exact kernels: the ground truth that :class:`crf.DenseCRF`'s lattice
results are measured against in the tests.

References
----------
P. Kraehenbuehl, V. Koltun, "Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials", NIPS 2011, eq. (3) (the kernel) and eq. (4) (the update).
"""
import numpy as np


def exact_filter(features, values, block=512):
    """Exact Gaussian filter ``K v`` with ``K_ij = exp(-|f_i - f_j|^2 / 2)``.

    Parameters
    ----------
    features : ndarray of shape (N, d)
        Features already divided by their standard deviations.
    values : ndarray of shape (N, C)
    block : int
        Rows of K held in memory at once.

    Returns
    -------
    ndarray of shape (N, C), float64
    """
    f = np.asarray(features, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if f.ndim != 2 or v.ndim != 2 or f.shape[0] != v.shape[0]:
        raise ValueError(f"features (N, d) and values (N, C) must share N, got {f.shape} and {v.shape}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    sq = (f * f).sum(axis=1)  # (N,)
    out = np.empty((f.shape[0], v.shape[1]))
    for start in range(0, f.shape[0], block):
        stop = min(start + block, f.shape[0])
        dist2 = sq[start:stop, None] + sq[None, :] - 2.0 * f[start:stop] @ f.T  # (block, N)
        np.maximum(dist2, 0.0, out=dist2)  # rounding can make |a-a|^2 slightly negative
        out[start:stop] = np.exp(-0.5 * dist2) @ v
    return out


def _softmax(energy):
    """Row-wise softmax of (N, L) in float64, max-subtracted."""
    e = np.exp(energy - energy.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def exact_mean_field(unary, kernels, iterations):
    """Mean field with exact Gaussian kernels.

    Parameters
    ----------
    unary : ndarray of shape (N, L)
        Unary energies U (points first).
    kernels : list of (features, w, mu, normalization)
        features (N, d) divided by the standard deviations; w the weight; mu
        the (L, L) symmetric penalty matrix; normalization ``"per_pixel"``,
        ``"symmetric"`` or ``"none"``.
    iterations : int

    Returns
    -------
    ndarray of shape (N, L), float64
        Q after ``iterations`` updates ``Q = softmax(-U - sum_m w_m (N_m K_m Q) mu_m)``.
    """
    u = np.asarray(unary, dtype=np.float64)
    prepared = []
    for features, w, mu, normalization in kernels:
        ones = exact_filter(features, np.ones((u.shape[0], 1)))[:, 0]
        if normalization == "per_pixel":
            pre, post = np.ones_like(ones), 1.0 / ones
        elif normalization == "symmetric":
            pre = post = 1.0 / np.sqrt(ones)
        elif normalization == "none":
            pre = post = np.ones_like(ones)
        else:
            raise ValueError(f"normalization must be 'per_pixel', 'symmetric' or 'none', "
                             f"got {normalization!r}")
        prepared.append((features, float(w), np.asarray(mu, dtype=np.float64), pre, post))
    q = _softmax(-u)
    for _ in range(iterations):
        energy = -u
        for features, w, mu, pre, post in prepared:
            message = post[:, None] * exact_filter(features, pre[:, None] * q)  # (N, L)
            energy = energy - w * (message @ mu)
        q = _softmax(energy)
    return q
