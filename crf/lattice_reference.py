"""The permutohedral lattice in plain NumPy: the reference the Numba kernels are tested against.

Vectorised over points where that is natural (the embedding, the hash by
``np.unique``, the slice), one label channel at a time for the splat
(``np.bincount``). The algorithm, layout and constants are described in
:mod:`crf.lattice`; the float32 arithmetic of the embedding follows the same
order as the CPU kernel, so both find the same simplices and weights.

References
----------
A. Adams, J. Baek, M. A. Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice", Eurographics 2010, sections 3-4.
"""
import numpy as np


def feature_scale(d):
    """Per-feature scale ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))``, (d,) float32.

    It makes the lattice's blur (three taps per axis, d+1 axes) approximate a
    Gaussian of standard deviation 1 in the original feature space.
    """
    i = np.arange(d, dtype=np.float64)
    return (np.sqrt(2.0 / 3.0) * (d + 1) / np.sqrt((i + 1.0) * (i + 2.0))).astype(np.float32)


def slice_alpha(d):
    """Kraehenbuehl's slice constant ``1 / (1 + 2^-d)`` as float32."""
    return np.float32(1.0 / (1.0 + 2.0 ** (-d)))


def embed_numpy(features):
    """Steps 1-3: remainder-0 point, rank and barycentric weights, in float32 throughout."""
    n, d = features.shape
    d1 = d + 1
    scale = feature_scale(d)
    down = np.float32(1.0 / d1)
    elevated = np.empty((n, d1), np.float32)
    sm = np.zeros(n, np.float32)
    for j in range(d, 0, -1):  # elevate: E x with the basis of Adams et al. eq. (4)
        cf = features[:, j - 1] * scale[j - 1]
        elevated[:, j] = sm - np.float32(j) * cf
        sm = sm + cf
    elevated[:, 0] = sm
    v = elevated * down
    up = np.ceil(v) * np.float32(d1)
    dn = np.floor(v) * np.float32(d1)
    rem0 = np.where(up - elevated < elevated - dn, up, dn).astype(np.float32)  # (N, d+1)
    total = np.rint(rem0.sum(axis=1, dtype=np.float64) / d1).astype(np.int64)  # (N,)
    # rank[i] = number of coordinates whose residual is larger (ties: the later one ranks lower)
    order = np.argsort(-(elevated - rem0), axis=1, kind="stable")
    rank = np.empty((n, d1), np.int64)
    np.put_along_axis(rank, order, np.arange(d1)[None, :], axis=1)
    rank += total[:, None]  # repair the sum of the remainder-0 point
    low, high = rank < 0, rank > d
    rank[low] += d1
    rem0[low] += np.float32(d1)
    rank[high] -= d1
    rem0[high] -= np.float32(d1)
    bary = np.zeros((n, d + 2), np.float32)
    residual = (elevated - rem0) * down  # (N, d+1)
    rows = np.arange(n)
    for i in range(d1):  # sequential over i: the same float32 sum order as the CPU kernel
        np.add.at(bary, (rows, d - rank[:, i]), residual[:, i])
        np.subtract.at(bary, (rows, d - rank[:, i] + 1), residual[:, i])
    bary[:, 0] += np.float32(1.0) + bary[:, d + 1]
    return rem0.astype(np.int32), rank.astype(np.int32), np.ascontiguousarray(bary[:, :d1])


def vertex_keys_numpy(rem0, rank):
    """Keys (N, d+1, d) of the d+1 simplex corners of each point."""
    n, d1 = rem0.shape
    d = d1 - 1
    k = np.arange(d1)[None, :, None]  # corner (remainder) index
    keys = rem0[:, None, :d] + k - np.where(rank[:, None, :d] > d - k, d1, 0)
    return keys.astype(np.int32)


def build_numpy(features):
    """Build with NumPy: the arrays of :class:`crf.lattice.Lattice`, in its constructor's order."""
    n, d = features.shape
    d1 = d + 1
    rem0, rank, weights = embed_numpy(features)
    corner_keys = vertex_keys_numpy(rem0, rank).reshape(n * d1, d)  # (N (d+1), d)
    keys, inverse = np.unique(corner_keys, axis=0, return_inverse=True)
    keys = keys.astype(np.int32)
    m = keys.shape[0]
    offsets = inverse.reshape(n, d1).astype(np.int32)
    # neighbours: look every candidate key up among the vertices with one more np.unique
    shift = np.full((d1, d), -1, np.int32)  # (d+1, d): key - 1, + (d+1) on the axis
    shift[np.arange(d), np.arange(d)] += d1
    cand = np.concatenate([keys[None] + shift[:, None, :], keys[None] - shift[:, None, :]])
    cand = cand.reshape(2 * d1 * m, d)  # (2 (d+1) M, d): n1 of axis 0..d, then n2
    every, inv = np.unique(np.concatenate([keys, cand]), axis=0, return_inverse=True)
    vertex_of = np.full(every.shape[0], m, np.int64)  # m: "not a vertex"
    vertex_of[inv[:m]] = np.arange(m)
    found = vertex_of[inv[m:]].reshape(2, d1, m).astype(np.int32)
    # CSR splat index: a stable sort of the (point, corner) entries by vertex
    entries = np.argsort(offsets.ravel(), kind="stable")
    starts = np.zeros(m + 1, np.int64)
    np.cumsum(np.bincount(offsets.ravel(), minlength=m), out=starts[1:])
    return (offsets, weights, keys, np.ascontiguousarray(found[0]), np.ascontiguousarray(found[1]),
            starts, (entries // d1).astype(np.int32), weights.ravel()[entries])


def filter_numpy(lattice, values, reverse):
    """Splat, blur, slice with NumPy: the reference the kernels are tested against."""
    m, (n, c) = lattice.n_vertices, values.shape
    d = lattice.d
    point, weight = lattice.splat_point, lattice.splat_weight  # (N (d+1),) in CSR order
    vertex = np.repeat(np.arange(m), np.diff(lattice.starts))
    lat = np.zeros((m + 1, c), np.float32)  # row m stays zero: the absent neighbour
    for ch in range(c):  # splat
        lat[:m, ch] = np.bincount(vertex, weights=weight * values[point, ch], minlength=m)
    half = np.float32(0.5)
    for j in (range(d, -1, -1) if reverse else range(d + 1)):  # blur
        blurred = lat.copy()
        blurred[:m] = lat[:m] + half * (lat[lattice.n1[j]] + lat[lattice.n2[j]])
        lat = blurred
    alpha = slice_alpha(d)
    out = np.zeros((n, c), np.float32)
    for k in range(d + 1):  # slice
        out += (lattice.weights[:, k:k + 1] * alpha) * lat[lattice.offsets[:, k]]
    return out
