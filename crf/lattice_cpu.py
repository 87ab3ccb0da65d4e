"""The permutohedral lattice's Numba CPU kernels: build (embed, hash, neighbours, splat
index, blur chains) and filter (splat, blur, slice), parallel with ``prange`` and
free of data races: every parallel loop writes only rows that belong to its own
iteration (a vertex, a point, a chain or a block of them).

The algorithm and the layout are described in :mod:`crf.lattice`.

References
----------
A. Adams, J. Baek, M. A. Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice", Eurographics 2010, sections 3-4.
"""
import contextlib
import math

import numba
import numpy as np
from numba import njit, prange

from crf.lattice_reference import feature_scale, slice_alpha

_BLOCK = 256  # points per parallel work item in the embedding (scratch arrays per block)
_CHAIN_BLOCK = 2048  # chain positions per parallel work item of the in-place blur
CHAIN_BLUR_MAX_BYTES = 32 << 20  # lattice values up to this size: in-place chain blur, else two buffers
SERIAL_WORK = 1 << 16  # below this many values per stage, kernels run on the calling thread only
SERIAL_BLUR = 1 << 20  # the same for one blur pass, which is cheap per value


@contextlib.contextmanager
def threads_for(work, threshold=SERIAL_WORK):
    """Run the enclosed Numba kernels on one thread when ``work`` < ``threshold``.

    A parallel region costs a wake-up and a barrier; on a small image that
    costs more than the work, and on a busy machine a descheduled worker can
    make every barrier wait a whole time slice (measured: 8 ms per region).
    """
    if work >= threshold or numba.get_num_threads() == 1:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@njit(parallel=True, cache=True)
def _embed_kernel(features, scale, rem0, rank, weights):
    """Steps 1-3 for every point; float32 arithmetic as in the reference."""
    n, d = features.shape
    d1 = d + 1
    down = np.float32(1.0) / np.float32(d1)
    upf = np.float32(d1)
    one = np.float32(1.0)
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        elevated = np.empty(d1, np.float32)
        r0 = np.empty(d1, np.float32)
        rk = np.empty(d1, np.int32)
        bary = np.empty(d1 + 1, np.float32)
        for p in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            sm = np.float32(0.0)
            for j in range(d, 0, -1):
                cf = features[p, j - 1] * scale[j - 1]
                elevated[j] = sm - np.float32(j) * cf
                sm += cf
            elevated[0] = sm
            total = 0
            for i in range(d1):
                v = down * elevated[i]
                up = np.float32(math.ceil(v)) * upf
                dn = np.float32(math.floor(v)) * upf
                r0[i] = up if up - elevated[i] < elevated[i] - dn else dn
                total += int(r0[i])
            total //= d1
            for i in range(d1):
                rk[i] = 0
            for i in range(d):
                di = elevated[i] - r0[i]
                for j in range(i + 1, d1):
                    if di < elevated[j] - r0[j]:
                        rk[i] += 1
                    else:
                        rk[j] += 1
            for i in range(d1):
                rk[i] += total
                if rk[i] < 0:
                    rk[i] += d1
                    r0[i] += upf
                elif rk[i] > d:
                    rk[i] -= d1
                    r0[i] -= upf
            for i in range(d1 + 1):
                bary[i] = 0
            for i in range(d1):
                v = (elevated[i] - r0[i]) * down
                bary[d - rk[i]] += v
                bary[d - rk[i] + 1] -= v
            bary[0] += one + bary[d1]
            for i in range(d1):
                rem0[p, i] = int(r0[i])
                rank[p, i] = rk[i]
                weights[p, i] = bary[i]


@njit(cache=True)
def _hash_key(key):
    h = np.int64(0)
    for i in range(key.shape[0]):
        h = (h + np.int64(key[i])) * np.int64(2654435761)
        h ^= h >> np.int64(29)
    return h


@njit(cache=True)
def _find(table, keys, key):
    """Slot of ``key`` in the open-addressing table and its vertex index (-1: the slot is empty).

    The table (a power of two long, at most half full) holds vertex indices;
    their keys live in ``keys``, whose recent rows stay in cache while the
    points of one image region are inserted.
    """
    mask = table.shape[0] - 1
    d = key.shape[0]
    h = _hash_key(key) & mask
    while True:
        e = table[h]
        if e < 0:
            return h, -1
        same = True
        for i in range(d):
            if keys[e, i] != key[i]:
                same = False
                break
        if same:
            return h, e
        h = (h + 1) & mask


@njit(cache=True)
def _hash_kernel(rem0, rank, offsets, capacity):
    """Step 4, sequential: give each distinct vertex key an index in first-seen order.

    The table doubles whenever it is half full. Returns (table, keys[:M]).
    """
    n, d1 = rem0.shape
    d = d1 - 1
    table = np.full(capacity, -1, np.int32)
    keys = np.empty((capacity // 2, d), np.int32)
    key = np.empty(d, np.int32)
    m = 0
    for p in range(n):
        for k in range(d1):
            for i in range(d):
                key[i] = rem0[p, i] + k - (d1 if rank[p, i] > d - k else 0)
            slot, e = _find(table, keys, key)
            if e < 0:
                e = m
                keys[m, :] = key
                table[slot] = m
                m += 1
                if 2 * m >= table.shape[0]:  # grow and rehash
                    table = np.full(2 * table.shape[0], -1, np.int32)
                    grown = np.empty((table.shape[0] // 2, d), np.int32)
                    grown[:m] = keys[:m]
                    keys = grown
                    for v in range(m):
                        s, _ = _find(table, keys, keys[v])
                        table[s] = v
            offsets[p, k] = e
    return table, keys[:m].copy()


@njit(parallel=True, cache=True)
def _neighbours_kernel(table, keys, n1, n2):
    """Step 5: look up ``key - (1, .., 1) + (d+1) e_j`` along every axis j (read-only table).

    Only n1 needs the hash: the step is a bijection of the lattice, so n2 is
    its inverse, ``n2[j][n1[j][v]] = v``, a scatter to distinct rows (no race).
    """
    m, d = keys.shape
    d1 = d + 1
    n_blocks = (m + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        cand = np.empty(d, np.int32)
        for v in range(b * _BLOCK, min(m, (b + 1) * _BLOCK)):
            for j in range(d1):
                for i in range(d):
                    cand[i] = keys[v, i] - 1
                if j < d:
                    cand[j] += d1
                _, e = _find(table, keys, cand)
                n1[j, v] = e if e >= 0 else m
                n2[j, v] = m
    for v in prange(m):
        for j in range(d1):
            u = n1[j, v]
            if u < m:
                n2[j, u] = v


@njit(cache=True)
def _splat_index_kernel(offsets, weights, m, starts, points, point_weights):
    """Step 6: counting sort of the (point, weight) entries by vertex (sequential, O(N d))."""
    n, d1 = offsets.shape
    counts = np.zeros(m + 1, np.int64)
    for p in range(n):
        for k in range(d1):
            counts[offsets[p, k] + 1] += 1
    for v in range(m):
        counts[v + 1] += counts[v]
    starts[:] = counts
    for p in range(n):
        for k in range(d1):
            v = offsets[p, k]
            points[counts[v]] = p
            point_weights[counts[v]] = weights[p, k]
            counts[v] += 1


def build_cpu(features):
    """Build with the Numba kernels: the arrays of :class:`crf.lattice.Lattice`, in its constructor's order."""
    n, d = features.shape
    d1 = d + 1
    rem0 = np.empty((n, d1), np.int32)
    rank = np.empty((n, d1), np.int32)
    weights = np.empty((n, d1), np.float32)
    _embed_kernel(features, feature_scale(d), rem0, rank, weights)
    offsets = np.empty((n, d1), np.int32)
    capacity = 1 << max(6, int(math.ceil(math.log2(max(n, 2)))) + 1)
    table, keys = _hash_kernel(rem0, rank, offsets, capacity)
    del rem0, rank
    m = keys.shape[0]
    n1 = np.empty((d1, m), np.int32)
    n2 = np.empty((d1, m), np.int32)
    _neighbours_kernel(table, keys, n1, n2)
    del table
    starts = np.empty(m + 1, np.int64)
    points = np.empty(n * d1, np.int32)
    point_weights = np.empty(n * d1, np.float32)
    _splat_index_kernel(offsets, weights, m, starts, points, point_weights)
    return offsets, weights, keys, n1, n2, starts, points, point_weights


@njit(parallel=True, cache=True)
def _splat_kernel(values, pre, starts, points, point_weights, lat):
    """Gather: every vertex sums ``weight * pre[p] * value[p]`` over its CSR entries.

    Each vertex writes only its own row: no write conflicts, no atomics. ``pre``
    (N,) scales the values first (symmetric normalisation); an empty ``pre``
    means no scaling.
    """
    m = starts.shape[0] - 1
    c = values.shape[1]
    scaled = pre.shape[0] > 0
    for v in prange(m):
        for ch in range(c):
            lat[v, ch] = 0
        for e in range(starts[v], starts[v + 1]):
            p = points[e]
            w = point_weights[e]
            if scaled:
                w = w * pre[p]
            for ch in range(c):
                lat[v, ch] += w * values[p, ch]
    for ch in range(c):
        lat[m, ch] = 0


@njit(parallel=True, cache=True)
def _chains_kernel(n1, n2, order, bounds):
    """List every axis's vertices chain after chain; cut the lists into blocks at chain starts."""
    d1, m = n1.shape
    n_blocks = bounds.shape[1] - 1
    for j in prange(d1):
        pos = 0
        for v in range(m):
            if n1[j, v] == m:  # a chain starts where there is no n1 neighbour
                order[j, pos] = -(v + 1)
                pos += 1
                u = n2[j, v]
                while u != m:
                    order[j, pos] = u
                    pos += 1
                    u = n2[j, u]
        bounds[j, 0] = 0
        for b in range(1, n_blocks):
            i = min(b * ((m + n_blocks - 1) // n_blocks), m)
            while i < m and order[j, i] >= 0:  # move the cut to the next chain start
                i += 1
            bounds[j, b] = max(i, bounds[j, b - 1])
        bounds[j, n_blocks] = m


@njit(parallel=True, cache=True)
def _blur_kernel(lat, order, bounds):
    """One axis, in place: ``v + 0.5 (v_n1 + v_n2)`` along every chain, front to back.

    ``prev`` holds the previous vertex's value from before its update, ``cur``
    this vertex's; a missing neighbour counts as zero, as the zero row M does.
    """
    c = lat.shape[1]
    half = np.float32(0.5)
    for b in prange(bounds.shape[0] - 1):
        prev = np.empty(c, np.float32)
        cur = np.empty(c, np.float32)
        end = bounds[b + 1]
        for i in range(bounds[b], end):
            v = order[i]
            if v < 0:  # the first vertex of a chain
                v = -v - 1
                for ch in range(c):
                    prev[ch] = 0
                    cur[ch] = lat[v, ch]
            nxt = order[i + 1] if i + 1 < end else -1
            if nxt >= 0:  # the chain goes on
                for ch in range(c):
                    following = lat[nxt, ch]
                    lat[v, ch] = cur[ch] + half * (prev[ch] + following)
                    prev[ch] = cur[ch]
                    cur[ch] = following
            else:
                for ch in range(c):
                    lat[v, ch] = cur[ch] + half * (prev[ch] + np.float32(0.0))


@njit(parallel=True, cache=True)
def _blur_two_buffer_kernel(src, n1, n2, dst):
    """One axis: ``dst = src + 0.5 (src[n1] + src[n2])``; row M (absent neighbour) stays 0."""
    m = n1.shape[0]
    c = src.shape[1]
    half = np.float32(0.5)
    for v in prange(m):
        a = n1[v]
        b = n2[v]
        for ch in range(c):
            dst[v, ch] = src[v, ch] + half * (src[a, ch] + src[b, ch])
    for ch in range(c):
        dst[m, ch] = 0


@njit(parallel=True, cache=True)
def _slice_kernel(lat, offsets, weights, alpha, out):
    """Gather: every point reads its d+1 vertices with its barycentric weights times alpha."""
    n, d1 = offsets.shape
    c = lat.shape[1]
    for p in prange(n):
        for ch in range(c):
            out[p, ch] = 0
        for k in range(d1):
            o = offsets[p, k]
            w = weights[p, k] * alpha
            for ch in range(c):
                out[p, ch] += w * lat[o, ch]


def chains_cpu(n1, n2):
    """The blur chains of every axis: ``(chain_order (d+1, M) int32, chain_bounds (d+1, B+1) int64)``."""
    d1, m = n1.shape
    order = np.empty((d1, m), np.int32)
    n_blocks = max(1, (m + _CHAIN_BLOCK - 1) // _CHAIN_BLOCK)
    bounds = np.empty((d1, n_blocks + 1), np.int64)
    _chains_kernel(n1, n2, order, bounds)
    return order, bounds


_NO_SCALE = np.empty(0, np.float32)


def splat_blur_cpu(lattice, values, pre=None, reverse=False, scratch=None):
    """Splat (N, C) values (times ``pre`` (N,) if given) and blur; return the (M+1, C) lattice values.

    ``scratch``: a list holding the (M+1, C) float32 buffers between calls (filled
    here on first use), or None.
    """
    m, c = lattice.n_vertices, values.shape[1]
    scratch = [] if scratch is None else scratch
    if not scratch or scratch[0].shape != (m + 1, c):
        scratch[:] = [np.empty((m + 1, c), np.float32)]
    lat = scratch[0]
    _splat_kernel(values, _NO_SCALE if pre is None else pre, lattice.starts, lattice.splat_point,
                  lattice.splat_weight, lat)
    d1 = lattice.d + 1
    axes = range(d1 - 1, -1, -1) if reverse else range(d1)
    with threads_for(m * c, SERIAL_BLUR):
        if lat.nbytes <= CHAIN_BLUR_MAX_BYTES:
            order, bounds = lattice.chains()
            for j in axes:
                _blur_kernel(lat, order[j], bounds[j])
        else:
            if len(scratch) < 2:
                scratch.append(np.empty_like(lat))
            tmp = scratch[1]
            for j in axes:
                _blur_two_buffer_kernel(lat, lattice.n1[j], lattice.n2[j], tmp)
                lat, tmp = tmp, lat
    return lat


def filter_cpu(lattice, values, reverse, out, scratch=None):
    """Filter ``values`` (N, C) into ``out`` (N, C) with the Numba kernels."""
    lat = splat_blur_cpu(lattice, values, None, reverse, scratch)
    _slice_kernel(lat, lattice.offsets, lattice.weights, slice_alpha(lattice.d), out)
    return out
