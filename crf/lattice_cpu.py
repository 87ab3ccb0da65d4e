"""The permutohedral lattice's Numba CPU kernels: build (embed, hash, neighbours, splat
index, blur chains) and filter (splat, blur, slice), parallel with ``prange`` and
free of data races: every parallel loop writes only rows that belong to its own
iteration (a vertex, a point, a chain or a block of them). In the filter's splat
and blur, which run at every mean-field iteration, a thread that is done with its
blocks takes over those of a slower one (:mod:`crf.dynamic`).

Keys that fit in one int64 (on images: always) are hashed and looked up packed
(:mod:`crf.packed_keys`, 1.7-2x faster); the kernels here take any keys.
The hash (step 4) is the build's largest step; it runs as blocks of points,
each hashed by one thread into its own table (4a), a sequential merge of the
blocks' distinct keys in block order (4b) and a parallel renumbering (4c):
the same vertex numbering as one sequential pass, for any number of threads.
Within a block, a point's corner k is first compared with the previous
point's corner k (neighbouring pixels mostly share their simplex), which
skips most table look-ups for smooth features.

The algorithm and the layout are described in :mod:`crf.lattice`.

References
----------
A. Adams, J. Baek, M. A. Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice", Eurographics 2010, sections 3-4.
"""
import contextlib

import numba
import numpy as np
from numba import njit, prange

from crf import config, packed_keys
from crf import dynamic
from crf.dynamic import next_block, next_task, span
from crf.packed_keys import invert_neighbours, remap_kernel, table_size
from crf.lattice_reference import feature_scale, slice_alpha
from crf.prefetch import prefetch_item, prefetch_row
from crf.simd import add_weighted_sum, blur_row, weighted_sum

_BLOCK = 256  # points per parallel work item in the embedding (scratch arrays per block)
_CHAIN_BLOCK = 2048  # chain positions per parallel work item of the in-place blur


def prefetch_distance(gathered, distance):
    """The prefetch distance for kernels that gather rows of ``gathered``: ``distance``, or 0 if it is small.

    How far ahead the filter kernels prefetch the rows they will gather (:mod:`crf.prefetch`),
    in vertices (blur, splat; ``crf.config.AHEAD_VERTICES``) or points (the mean field's
    slice; ``AHEAD_POINTS``), was measured at 500x375 among 4-128. Arrays below
    ``crf.config.PREFETCH_MIN_BYTES`` (4 MB), which the last-level cache holds, gain nothing from it,
    and their kernels get 0.
    """
    return distance if gathered.nbytes >= config.PREFETCH_MIN_BYTES else 0


@contextlib.contextmanager
def threads_for(work, threshold=None):
    """Run the enclosed Numba kernels on one thread when ``work`` < ``threshold``.

    A parallel region costs a wake-up and a barrier; on a small image that
    costs more than the work, and on a busy machine a descheduled worker can
    make every barrier wait a whole time slice (measured: 8 ms per region).
    """
    threshold = config.SERIAL_WORK if threshold is None else threshold
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
    """Steps 1-3 for every point; float32 arithmetic as in the reference.

    Each block of ``_BLOCK`` points is held coordinate-major, ``(d+1, B)``, so that every
    loop below runs over the block's points and LLVM vectorises it (a point's own loops
    are d+1 long). Each point still does the reference's operations in its order: the
    same bits, at 2.3-2.9x the speed of a loop over points (500x375, 2 threads).
    """
    n, d = features.shape
    d1 = d + 1
    down = np.float32(1.0) / np.float32(d1)
    upf = np.float32(d1)
    zero = np.float32(0.0)
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        elevated = np.empty((d1, _BLOCK), np.float32)
        residual = np.empty((d1, _BLOCK), np.float32)
        r0 = np.empty((d1, _BLOCK), np.float32)
        rk = np.empty((d1, _BLOCK), np.int32)
        bary = np.empty((d1 + 1, _BLOCK), np.float32)
        sm = np.empty(_BLOCK, np.float32)
        total = np.empty(_BLOCK, np.int32)
        p0 = b * _BLOCK
        count = min(n, p0 + _BLOCK) - p0
        for i in range(count):
            sm[i] = zero
            total[i] = 0
        # 1. elevate onto the plane x_0 + .. + x_d = 0
        for j in range(d, 0, -1):
            s, jf = scale[j - 1], np.float32(j)
            for i in range(count):
                cf = features[p0 + i, j - 1] * s
                elevated[j, i] = sm[i] - jf * cf
                sm[i] += cf
        for i in range(count):
            elevated[0, i] = sm[i]
        # 2. the nearest remainder-0 point, coordinate by coordinate; total = sum(r0) / (d+1),
        # summed as the quotients themselves (r0 = quotient * (d+1) exactly), so no division
        for c in range(d1):
            for i in range(count):
                e = elevated[c, i]
                v = down * e
                q_up = np.ceil(v)  # float32 (math.ceil would go through int64)
                q_dn = np.floor(v)
                up, dn = q_up * upf, q_dn * upf
                nearer_up = up - e < e - dn
                r0[c, i] = up if nearer_up else dn
                total[i] += np.int32(q_up if nearer_up else q_dn)
        # 3. rank the residuals (ties: the later coordinate ranks lower), shifted by the total
        for c in range(d1):
            for i in range(count):
                rk[c, i] = total[i]
                residual[c, i] = elevated[c, i] - r0[c, i]
        for c in range(d):
            for c2 in range(c + 1, d1):
                for i in range(count):
                    below = np.int32(residual[c, i] < residual[c2, i])
                    rk[c, i] += below
                    rk[c2, i] += np.int32(1) - below
        # ... and wrapped into 0..d, moving the remainder-0 point with them
        for c in range(d1):
            for i in range(count):
                k = rk[c, i]
                if k < 0:
                    rk[c, i] = k + d1
                    r0[c, i] += upf
                elif k > d:
                    rk[c, i] = k - d1
                    r0[c, i] -= upf
        # barycentric weights: coordinate c adds its residual to slot d - rank and takes it
        # from the next slot. A scatter to a slot per point does not vectorise; every slot
        # adding v, -v or 0 does, with the same sums (x + 0 is x, x + -v is x - v).
        for s in range(d1 + 1):
            for i in range(count):
                bary[s, i] = zero
        for c in range(d1):
            for i in range(count):
                residual[c, i] = (elevated[c, i] - r0[c, i]) * down
            for s in range(d1 + 1):
                for i in range(count):
                    slot = d - rk[c, i]
                    v = residual[c, i]
                    bary[s, i] += v if s == slot else (-v if s == slot + 1 else zero)
        for i in range(count):
            bary[0, i] += np.float32(1.0) + bary[d1, i]
        for i in range(count):
            for c in range(d1):
                rem0[p0 + i, c] = np.int32(r0[c, i])
                rank[p0 + i, c] = rk[c, i]
                weights[p0 + i, c] = bary[c, i]


_GOLDEN = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 (2^64 / golden ratio), as int64
_FINAL = np.int64(-2960836687051489901)  # 0xD6E8FEB86659FD93, an odd 64-bit mixing constant


@njit(cache=True)
def _hash_key(key):
    """Mix the key's coordinates: ``sum key[i] G^(i+1)`` (mod 2^64), then one final mix.

    The products do not depend on each other, unlike a multiply-xor chain over
    the coordinates.
    """
    h = np.int64(0)
    c = _GOLDEN
    for i in range(key.shape[0]):
        h += np.int64(key[i]) * c
        c *= _GOLDEN
    h ^= h >> np.int64(32)
    h *= _FINAL
    h ^= h >> np.int64(29)
    return h


@njit(cache=True)
def _find(table, keys, key):
    """Slot of ``key`` in the open-addressing table and its vertex index (-1: the slot is empty).

    The table (a power of two long, at most half full) holds vertex indices;
    their keys live in ``keys``, whose recent rows stay in cache while the
    points of one image region are inserted.
    """
    return _find_from(table, keys, key, _hash_key(key) & (table.shape[0] - 1))


@njit(cache=True)
def _find_from(table, keys, key, h):
    """:func:`_find` from the home slot ``h`` of ``key`` (linear probing)."""
    mask = table.shape[0] - 1
    d = key.shape[0]
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
def _insert_points(rem0, rank, base, lo, hi, table, keys, m, offsets):
    """Insert the vertices of points lo.. while the table stays at most half full.

    The block's first point is ``base // (d+1)``; its new keys go to rows
    ``base + m`` onwards of ``keys``; ``offsets`` gets the rows. Returns (the
    first point not done, the new key count m). The growth lives in the
    caller so that the table is never replaced inside this loop (a table
    replaced in the loop made it twice as slow at d = 2, measured).
    """
    d1 = rem0.shape[1]
    d = d1 - 1
    key = np.empty(d, np.int32)
    for p in range(lo, hi):
        if 2 * (m + d1) > table.shape[0]:
            return p, m
        for k in range(d1):
            for i in range(d):
                key[i] = rem0[p, i] + k - (d1 if rank[p, i] > d - k else 0)
            # Neighbouring points often lie in the same simplex, and a vertex with
            # remainder k can only be the previous point's vertex k: try it first.
            e = -1
            if p > base // d1:
                e = offsets[p - 1, k]
                for i in range(d):
                    if keys[e, i] != key[i]:
                        e = -1
                        break
            if e < 0:
                slot, e = _find(table, keys, key)
                if e < 0:
                    e = base + m
                    keys[e, :] = key
                    table[slot] = e
                    m += 1
            offsets[p, k] = e
    return hi, m


@njit(cache=True)
def _hash_points(rem0, rank, lo, hi, keys, offsets):
    """Step 4 for points lo..hi-1, sequential: index their distinct vertex keys in first-seen order.

    The block's keys go to rows ``lo (d+1)`` onwards of ``keys``, which has
    room for every corner of every point; ``offsets`` gets those row numbers.
    Its own table (a power of two long) doubles before it gets more than half
    full. Returns (table, number of keys).
    """
    base = lo * rem0.shape[1]
    table = np.full(table_size(hi - lo), -1, np.int32)
    p, m = _insert_points(rem0, rank, base, lo, hi, table, keys, 0, offsets)
    while p < hi:  # grow and rehash
        table = np.full(2 * table.shape[0], -1, np.int32)
        for v in range(base, base + m):
            slot, _ = _find(table, keys, keys[v])
            table[slot] = v
        p, m = _insert_points(rem0, rank, base, p, hi, table, keys, m, offsets)
    return table, m


@njit(parallel=True, cache=True)
def _hash_blocks_kernel(rem0, rank, bounds, visit, keys, offsets, counts):
    """Step 4a: every block of points hashes its vertices on its own (tables dropped).

    ``prange`` hands each thread a contiguous run of iterations; ``visit``
    (B,) maps iteration i to block ``visit[i]`` so that each thread gets blocks
    spread over the whole image, whose busy and plain regions differ in work.
    """
    for i in prange(bounds.shape[0] - 1):
        b = visit[i]
        _, counts[b] = _hash_points(rem0, rank, bounds[b], bounds[b + 1], keys, offsets)


@njit(cache=True)
def _merge_kernel(keys, bases, counts, remap):
    """Step 4b, sequential: insert every block's keys, block after block, into one table.

    Block after block, each in its own first-seen order, is the first-seen
    order of all points: the vertex numbering is that of one sequential pass.
    ``remap[r]`` gets the vertex index of key row r. Returns (table, keys[:M]).
    """
    d = keys.shape[1]
    table = np.full(table_size(counts.sum()), -1, np.int32)
    merged = np.empty((counts.sum(), d), np.int32)
    m = 0
    for b in range(counts.shape[0]):
        for r in range(bases[b], bases[b] + counts[b]):
            slot, e = _find(table, merged, keys[r])
            if e < 0:
                e = m
                merged[m, :] = keys[r]
                table[slot] = m
                m += 1
            remap[r] = e
    return table, merged[:m].copy()


def hash_cpu(rem0, rank, offsets, n_threads):
    """Step 4: fill ``offsets`` (N, d+1) with vertex indices; return (table, keys (M, d) int32).

    With several threads the points are cut into ``crf.config.HASH_BLOCKS_PER_THREAD *
    n_threads`` contiguous blocks hashed in parallel (4a), then merged (4b,
    O(sum of the blocks' key counts), a fraction of the N (d+1) corners) and
    renumbered (4c). Vertices are numbered in the order a sequential pass over
    the points first meets them, whatever the blocks.
    """
    n, d1 = rem0.shape
    keys = np.empty((n * d1, d1 - 1), np.int32)  # pages are only touched where keys are written
    if n_threads <= 1:
        table, m = _hash_points(rem0, rank, 0, n, keys, offsets)
        return table, keys[:m].copy()
    n_blocks = min(config.HASH_BLOCKS_PER_THREAD * n_threads, n)
    bounds = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    visit = np.concatenate([np.arange(t, n_blocks, n_threads) for t in range(n_threads)])
    counts = np.empty(n_blocks, np.int64)
    _hash_blocks_kernel(rem0, rank, bounds, visit, keys, offsets, counts)
    remap = np.empty(n * d1, np.int32)
    table, merged = _merge_kernel(keys, bounds[:-1] * d1, counts, remap)
    remap_kernel(offsets, remap)
    return table, merged


_RING = 4  # vertices whose neighbour keys are held while their table slots are being fetched


@njit(inline="always")
def _queue_neighbour_keys(table, keys, w, cand, slot):
    """The d+1 neighbour keys of vertex ``w`` into ``cand`` (d+1, d), their home slots into
    ``slot`` (d+1,), and a prefetch of those table entries."""
    d = keys.shape[1]
    mask = table.shape[0] - 1
    for j in range(d + 1):
        for i in range(d):
            cand[j, i] = keys[w, i] - 1
        if j < d:
            cand[j, j] += d + 1
        slot[j] = _hash_key(cand[j]) & mask
        prefetch_item(table, slot[j])


@njit(parallel=True, cache=True)
def _neighbours_kernel(table, keys, n1):
    """Step 5a: look up ``key - (1, .., 1) + (d+1) e_j`` along every axis j (read-only table).

    The table is larger than the cache and its slots are random, so each look-up
    would wait for memory: the keys and slots of the vertex ``_RING - 1`` ahead are
    computed and their table entries prefetched before the current vertex is
    resolved (19 ms -> 14 ms at 500x375, d = 5, 2 threads).

    Only n1 needs the hash: n2 is its inverse (:func:`crf.packed_keys.invert_neighbours`).
    """
    m, d = keys.shape
    d1 = d + 1
    n_blocks = (m + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        cand = np.empty((_RING, d1, d), np.int32)  # ring of queued vertices: keys and slots
        slot = np.empty((_RING, d1), np.int64)
        lo, hi = b * _BLOCK, min(m, (b + 1) * _BLOCK)
        for w in range(lo, min(hi, lo + _RING - 1)):
            _queue_neighbour_keys(table, keys, w, cand[w % _RING], slot[w % _RING])
        for v in range(lo, hi):
            if v + _RING - 1 < hi:
                w = v + _RING - 1
                _queue_neighbour_keys(table, keys, w, cand[w % _RING], slot[w % _RING])
            r = v % _RING
            for j in range(d1):
                _, e = _find_from(table, keys, cand[r, j], slot[r, j])
                n1[j, v] = e if e >= 0 else m


@njit(parallel=True, cache=True)
def _splat_index_kernel(offsets, weights, bounds, next_entry, starts, points, point_weights):
    """Step 6: counting sort of the (point, weight) entries by vertex, over B blocks of points.

    Each block counts its entries per vertex into its own row of
    ``next_entry`` (B, M) int32 or int64; a scan over (vertex, block) turns the counts
    into each block's first position per vertex, so every block then writes
    its entries to positions of its own: no races, and each vertex lists its
    points in increasing order, as one sequential pass would.
    """
    n, d1 = offsets.shape
    n_blocks, m = next_entry.shape
    for b in prange(n_blocks):
        next_entry[b, :] = 0
        for p in range(bounds[b], bounds[b + 1]):
            for k in range(d1):
                next_entry[b, offsets[p, k]] += 1
    total = np.int64(0)
    for v in range(m):
        starts[v] = total
        for b in range(n_blocks):
            count = next_entry[b, v]
            next_entry[b, v] = total
            total += count
    starts[m] = total
    for b in prange(n_blocks):
        for p in range(bounds[b], bounds[b + 1]):
            for k in range(d1):
                v = offsets[p, k]
                e = next_entry[b, v]
                points[e] = p
                point_weights[e] = weights[p, k]
                next_entry[b, v] = e + 1


def build_cpu(features):
    """Build with the Numba kernels: the arrays of :class:`crf.lattice.Lattice`, in its constructor's order."""
    n, d = features.shape
    d1 = d + 1
    rem0 = np.empty((n, d1), np.int32)
    rank = np.empty((n, d1), np.int32)
    weights = np.empty((n, d1), np.float32)
    _embed_kernel(features, feature_scale(d), rem0, rank, weights)
    offsets = np.empty((n, d1), np.int32)
    layout = packed_keys.packed_layout(rem0, d) if config.PACKED_KEYS else None
    if layout is not None:  # every key fits in one int64 (images: always)
        table, packed, keys = packed_keys.hash_packed(rem0, rank, offsets, layout, numba.get_num_threads())
    else:
        table, keys = hash_cpu(rem0, rank, offsets, numba.get_num_threads())
    del rem0, rank
    m = keys.shape[0]
    n1 = np.empty((d1, m), np.int32)
    n2 = np.empty((d1, m), np.int32)
    if layout is not None:
        packed_keys.neighbours_packed(table, packed, layout, d, n1, n2)
        del packed
    else:
        _neighbours_kernel(table, keys, n1)
        invert_neighbours(n1, n2)
    del table
    starts = np.empty(m + 1, np.int64)
    points = np.empty(n * d1, np.int32)
    point_weights = np.empty(n * d1, np.float32)
    n_blocks = min(numba.get_num_threads(), n)
    bounds = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    # Entry positions fit in int32 below 2^31 entries: half the counters' memory, 8 % faster at 500x375.
    next_entry = np.empty((n_blocks, m), np.int32 if n * d1 < 2 ** 31 else np.int64)
    _splat_index_kernel(offsets, weights, bounds, next_entry, starts, points, point_weights)
    return offsets, weights, keys, n1, n2, starts, points, point_weights


@njit(inline="always")
def _entry_weight(point_weights, pre, points, e):
    w = point_weights[e]
    return w * pre[points[e]] if pre.shape[0] > 0 else w


@njit(inline="always")
def _four(point_weights, pre, points, e):
    """Splat entries e to e+3: their points and weights, as two tuples."""
    return ((points[e], points[e + 1], points[e + 2], points[e + 3]),
            (_entry_weight(point_weights, pre, points, e), _entry_weight(point_weights, pre, points, e + 1),
             _entry_weight(point_weights, pre, points, e + 2), _entry_weight(point_weights, pre, points, e + 3)))


@njit(inline="always")
def _two(point_weights, pre, points, e):
    return ((points[e], points[e + 1]),
            (_entry_weight(point_weights, pre, points, e), _entry_weight(point_weights, pre, points, e + 1)))


@njit(inline="always")
def _one(point_weights, pre, points, e):
    return (points[e],), (_entry_weight(point_weights, pre, points, e),)


def splat_bounds(starts, n_blocks, vertex_cost):
    """Cut the vertices into ``n_blocks`` runs of about equal splat work, for :func:`_splat_kernel`.

    A vertex costs its entries plus ``vertex_cost`` (clearing and storing its row).
    Entries are far from even over the vertex numbers: at 1000x750, the benchmark
    photograph's first half of the bilateral lattice's vertices holds 43 % of the entries,
    and a flat region puts thousands on one vertex.

    Returns
    -------
    ndarray of shape (n_blocks + 1,), int64: block b is vertices ``bounds[b]:bounds[b+1]``.
    """
    m = starts.shape[0] - 1
    cost = starts[1:] + vertex_cost * np.arange(1, m + 1, dtype=np.int64)  # (M,) work up to and with vertex v
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, n_blocks) / n_blocks)
    return np.concatenate([[0], cuts, [m]]).astype(np.int64)


@njit(inline="always")
def _clear_row(lat, row):
    """``lat[row, :] = 0``: row M, the blur's absent neighbour (and a vertex without entries)."""
    for ch in range(lat.shape[1]):
        lat[row, ch] = 0


@njit(inline="always")
def _splat_vertices(values, pre, starts, points, point_weights, lat, ahead, lo, hi):
    """The splat of vertices ``lo`` to ``hi - 1`` (see :func:`_splat_kernel`)."""
    m = starts.shape[0] - 1
    c = lat.shape[1]  # the first c channels of the value rows
    for v in range(lo, hi):
        if ahead > 0 and v + ahead < m:
            for e in range(starts[v + ahead], starts[v + ahead + 1]):
                prefetch_row(values, points[e])
        e, stop = starts[v], starts[v + 1]
        # The first entries set the row, the others add to it, four at a time, then two, then
        # one: the values of a row cleared first (0 + x is x, but for the sign of a zero) without
        # the clearing (a step at 500x375: 0.4 ms less).
        if e + 4 <= stop:
            weighted_sum(lat, v, values, *_four(point_weights, pre, points, e), c)
            e += 4
        elif e + 2 <= stop:
            weighted_sum(lat, v, values, *_two(point_weights, pre, points, e), c)
            e += 2
        elif e < stop:
            weighted_sum(lat, v, values, *_one(point_weights, pre, points, e), c)
            e += 1
        else:
            _clear_row(lat, v)
        while e + 4 <= stop:
            add_weighted_sum(lat, v, values, *_four(point_weights, pre, points, e), c)
            e += 4
        if e + 2 <= stop:
            add_weighted_sum(lat, v, values, *_two(point_weights, pre, points, e), c)
            e += 2
        if e < stop:
            add_weighted_sum(lat, v, values, *_one(point_weights, pre, points, e), c)


@njit(inline="always")
def _splat_blocks(values, pre, starts, points, point_weights, lat, ahead, bounds, counters, worker):
    """One worker's share of :func:`_splat_kernel`: blocks claimed until none is left."""
    n_blocks = np.uint64(bounds.shape[0] - 1)
    while True:
        block = next_block(counters, worker, n_blocks)
        if block >= n_blocks:
            break
        lo, hi = bounds[block], bounds[block + np.uint64(1)]
        _splat_vertices(values, pre, starts, points, point_weights, lat, ahead, lo, hi)


@njit(parallel=True, cache=True)
def _splat_kernel(values, pre, starts, points, point_weights, lat, ahead, bounds, counters, n_workers):
    """Gather: every vertex sums ``weight * pre[p] * value[p]`` over its CSR entries.

    Each vertex writes only its own row: no write conflicts, no atomic adds. Only the
    first ``lat.shape[1]`` channels of the value rows are splatted. ``pre``
    (N,) scales the values first (symmetric normalisation); an empty ``pre``
    means no scaling. While vertex v is summed, the value rows of vertex
    v + ``ahead`` are prefetched (0: none). The entries are added four at a
    time in one pass over the row (then two, then one; :func:`crf.simd.add_weighted_sum`),
    in their order: the same sums as one at a time, with fewer passes over the row. The threads
    share out blocks of vertices of about equal work (``bounds``, from
    :func:`splat_bounds`) rather than equal numbers of vertices: at 1000x750 that
    took the bilateral splat from 26.6-27.6 to 22.3-23.0 ms on 2 threads. A thread that is
    done with its blocks takes over those of a slower one (:mod:`crf.dynamic`).
    """
    for worker in prange(n_workers):
        _splat_blocks(values, pre, starts, points, point_weights, lat, ahead, bounds, counters, worker)
    _clear_row(lat, starts.shape[0] - 1)


@njit(inline="always")
def _splat_blur_serial(values, pre, starts, points, point_weights, n1, n2, lat, tmp, ahead):
    """A whole splat into ``lat`` and the two-buffer blur of every axis in order, on the
    calling thread: the result is in ``tmp`` after an odd number of axes, else in ``lat``."""
    m = starts.shape[0] - 1
    _splat_vertices(values, pre, starts, points, point_weights, lat, ahead, 0, m)
    _clear_row(lat, m)
    _clear_row(tmp, m)
    src, dst = lat, tmp
    for j in range(n1.shape[0]):
        row1, row2 = n1[j], n2[j]
        for v in range(m):
            _blur_vertex(src, dst, v, row1[v], row2[v])
        src, dst = dst, src


@njit(parallel=True, cache=True)
def _splat_side_kernel(values, pre, starts, points, point_weights, lat, ahead, bounds, counters, n_workers,
                       side_pres, side_starts, side_points, side_weights, side_n1, side_n2, side_lats, side_tmps,
                       side_counter):
    """:func:`_splat_kernel` of one lattice, with the splat and blur of smaller ones as side tasks.

    Each worker first claims side lattices (``side_counter``, :func:`crf.dynamic.next_task`)
    until none is left, and splats and blurs each on its own thread
    (:func:`_splat_blur_serial`), then takes blocks of the main splat as :func:`_splat_kernel`
    does: the worker that did a side task takes fewer. Every value is computed as the
    separate kernels compute it.
    """
    n_side = np.uint64(len(side_lats))
    for worker in prange(n_workers):
        while True:
            task = next_task(side_counter)
            if task >= n_side:
                break
            _splat_blur_serial(values, side_pres[task], side_starts[task], side_points[task], side_weights[task],
                               side_n1[task], side_n2[task], side_lats[task], side_tmps[task], ahead)
        _splat_blocks(values, pre, starts, points, point_weights, lat, ahead, bounds, counters, worker)
    _clear_row(lat, starts.shape[0] - 1)


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

    ``prev`` holds the previous vertex's value from before its update; the next vertex is
    still unchanged when this one is updated. A missing neighbour counts as zero, as the
    zero row M does.
    """
    c = lat.shape[1]
    half = np.float32(0.5)
    for b in prange(bounds.shape[0] - 1):
        prev = np.empty(c, np.float32)
        end = bounds[b + 1]
        for i in range(bounds[b], end):
            v = order[i]
            if v < 0:  # the first vertex of a chain
                v = -v - 1
                for ch in range(c):
                    prev[ch] = 0
            nxt = order[i + 1] if i + 1 < end else -1
            row = lat[v]
            if nxt >= 0:  # the chain goes on
                following = lat[nxt]
                for ch in range(c):
                    before = row[ch]
                    row[ch] = before + half * (prev[ch] + following[ch])
                    prev[ch] = before
            else:
                for ch in range(c):
                    row[ch] = row[ch] + half * (prev[ch] + np.float32(0.0))


@njit(inline="always")
def _blur_vertex(src, dst, v, a, b):
    """One vertex of a two-buffer blur pass: ``dst[v] = src[v] + 0.5 (src[a] + src[b])``, its n1 and n2
    neighbours a and b (row M, zero, where there is none)."""
    blur_row(src, dst, v, a, b, src.shape[1])


@njit(parallel=True, cache=True)
def _blur_two_buffer_kernel(src, n1, n2, dst, ahead, size, counters, n_workers):
    """One axis: ``dst = src + 0.5 (src[n1] + src[n2])``; row M (absent neighbour) stays 0.

    The vertices go in blocks of ``size``, and a thread that is done with its blocks takes
    over those of a slower one (:mod:`crf.dynamic`). The neighbour rows of vertex
    v + ``ahead`` are prefetched (0: none).
    """
    m = n1.shape[0]
    ahead, last = np.uint64(ahead), np.uint64(m)  # unsigned, as the blocks (no float64 mixing)
    n_blocks = (last + np.uint64(size - 1)) // np.uint64(size)
    for worker in prange(n_workers):
        while True:
            block = next_block(counters, worker, n_blocks)
            if block >= n_blocks:
                break
            start, stop = span(block, size, m)
            for v in range(start, stop):
                if ahead > 0 and v + ahead < last:
                    prefetch_row(src, n1[v + ahead])
                    prefetch_row(src, n2[v + ahead])
                _blur_vertex(src, dst, v, n1[v], n2[v])
    _clear_row(dst, m)


@njit(inline="always")
def slice_point(lat, offsets, weights, alpha, p, dst, row):
    """``dst[row, :C] = sum_k (weights[p, k] alpha) lat[offsets[p, k]]``: point p's d+1 vertices, float32.

    C is the lattice's channel count; ``dst``'s rows may be longer. The sum runs over k in
    order, as the reference's. For d+1 = 3 and 6 (the Gaussian and the bilateral kernel)
    :func:`crf.simd.weighted_sum` reads all the rows in one pass of vector operations; a
    loop over ~20 channels costs more to enter (overlap checks, short vector tails) than
    its work: one loop instead of d+1 made the slice 1.5x faster, and the vector rows
    took a mean-field step from 22.9 to 21.9 ms (500x375, 21 labels, 2 threads).
    """
    d1 = offsets.shape[1]
    c = lat.shape[1]
    if d1 == 6:
        weighted_sum(dst, row, lat, (offsets[p, 0], offsets[p, 1], offsets[p, 2],
                                     offsets[p, 3], offsets[p, 4], offsets[p, 5]),
                     (weights[p, 0] * alpha, weights[p, 1] * alpha, weights[p, 2] * alpha,
                      weights[p, 3] * alpha, weights[p, 4] * alpha, weights[p, 5] * alpha), c)
    elif d1 == 3:
        weighted_sum(dst, row, lat, (offsets[p, 0], offsets[p, 1], offsets[p, 2]),
                     (weights[p, 0] * alpha, weights[p, 1] * alpha, weights[p, 2] * alpha), c)
    else:
        out = dst[row]
        vertex, w = lat[offsets[p, 0]], weights[p, 0] * alpha
        for ch in range(c):
            out[ch] = w * vertex[ch]
        for k in range(1, d1):
            vertex, w = lat[offsets[p, k]], weights[p, k] * alpha
            for ch in range(c):
                out[ch] += w * vertex[ch]


@njit(parallel=True, cache=True)
def _slice_kernel(lat, offsets, weights, alpha, out):
    """Gather: every point reads its d+1 vertices with its barycentric weights times alpha.

    No software prefetch: with one in the loop, even one switched off at run time, the slice
    took 1.3-3.4x as long (500x375, 3-21 channels, 1 and 2 threads; 20 channels on one thread:
    the bilateral slice 5.0 -> 3.5 ms, the Gaussian one 4.0 -> 1.7 ms). The mean field's fused
    pass (:mod:`crf.meanfield`) keeps its prefetch, which costs it nothing there.
    """
    for p in prange(offsets.shape[0]):
        slice_point(lat, offsets, weights, alpha, p, out, p)


def chains_cpu(n1, n2):
    """The blur chains of every axis: ``(chain_order (d+1, M) int32, chain_bounds (d+1, B+1) int64)``."""
    d1, m = n1.shape
    order = np.empty((d1, m), np.int32)
    n_blocks = max(1, (m + _CHAIN_BLOCK - 1) // _CHAIN_BLOCK)
    bounds = np.empty((d1, n_blocks + 1), np.int64)
    _chains_kernel(n1, n2, order, bounds)
    return order, bounds


_NO_SCALE = np.empty(0, np.float32)


def _buffers(scratch, m, c, count):
    """The first ``count`` (M+1, C) float32 buffers of ``scratch`` (made or remade to that shape)."""
    if not scratch or scratch[0].shape != (m + 1, c):
        scratch[:] = []
    while len(scratch) < count:
        scratch.append(np.empty((m + 1, c), np.float32))
    return scratch[:count]


def _channels(values, channels):
    """How many of the (N, C) values' channels to filter: ``channels``, or all C for None."""
    c = values.shape[1] if channels is None else int(channels)
    if not 0 < c <= values.shape[1]:
        raise ValueError(f"channels must be 1 to {values.shape[1]}, got {channels!r}")
    return c


def _blur_cpu(lattice, lat, scratch, reverse):
    """Blur the splatted (M+1, C) ``lat`` (``scratch[0]``) along every axis; return the buffer
    holding the result (``lat`` or ``scratch[1]``)."""
    m, c = lattice.n_vertices, lat.shape[1]
    d1 = lattice.d + 1
    axes = range(d1 - 1, -1, -1) if reverse else range(d1)
    with threads_for(m * c, config.SERIAL_BLUR):
        if lat.nbytes <= config.CHAIN_BLUR_MAX_BYTES:
            order, bounds = lattice.chains()
            for j in axes:
                _blur_kernel(lat, order[j], bounds[j])
        else:
            tmp = _buffers(scratch, m, c, 2)[1]
            distance = prefetch_distance(lat, config.AHEAD_VERTICES)
            for j in axes:
                counters, n_workers = dynamic.schedule()
                size = -(-m // (n_workers * config.BLUR_BLOCKS_PER_THREAD))
                _blur_two_buffer_kernel(lat, lattice.n1[j], lattice.n2[j], tmp, distance, size, counters, n_workers)
                lat, tmp = tmp, lat
    return lat


def splat_blur_cpu(lattice, values, pre=None, reverse=False, scratch=None, channels=None):
    """Splat (N, C) values (times ``pre`` (N,) if given) and blur; return the (M+1, C) lattice values.

    ``scratch``: a list holding the (M+1, C) float32 buffers between calls (filled
    here on first use), or None. ``channels``: filter only the first ``channels`` of the
    C channels (the mean field's complement label, :mod:`crf.densecrf`); None: all of them.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)  # the vector rows combine float32 rows
    pre = None if pre is None else np.ascontiguousarray(pre, dtype=np.float32)
    c = _channels(values, channels)
    scratch = [] if scratch is None else scratch
    lat = _buffers(scratch, lattice.n_vertices, c, 1)[0]
    _splat_kernel(values, _NO_SCALE if pre is None else pre, lattice.starts, lattice.splat_point,
                  lattice.splat_weight, lat, prefetch_distance(values, config.AHEAD_VERTICES), lattice.splat_bounds(),
                  *dynamic.schedule())
    return _blur_cpu(lattice, lat, scratch, reverse)


def splat_work(n_points, d, n_vertices):
    """A splat's work in entry reads: every entry, and ``SPLAT_VERTEX_COST`` a vertex (as
    :func:`splat_bounds` weighs them)."""
    return n_points * (d + 1) + config.SPLAT_VERTEX_COST * n_vertices


def side_lattices(shapes, n_threads):
    """Which lattices :func:`splat_blur_many_cpu` splats and blurs on one thread each.

    ``shapes``: every lattice's ``(N, d, M)``. The main lattice is the one with the most splat
    work (:func:`splat_work`); another is a side task where its splat and blur on one thread
    (a blur pass counted as one read a vertex) are at most one thread's share of the main
    splat and itself together, so that no thread waits on it. With ``config.SIDE_LATTICES``
    off, none is.

    Returns
    -------
    (int, list of int): the main lattice's index and the side lattices' indices.
    """
    main = max(range(len(shapes)), key=lambda i: splat_work(*shapes[i]))
    if not config.SIDE_LATTICES:
        return main, []
    shared = splat_work(*shapes[main])
    side = []
    for i, (n, d, m) in enumerate(shapes):
        work = splat_work(n, d, m) + (d + 1) * m
        if i != main and work * n_threads <= shared + work:
            side.append(i)
    return main, side


def splat_blur_many_cpu(lattices, values, pres, scratches, channels=None):
    """:func:`splat_blur_cpu` of the same values on several lattices (the mean field's kernels).

    A small lattice (:func:`side_lattices`) is splatted and blurred whole on one thread while
    the other threads splat the largest (:func:`_splat_side_kernel`): the Gaussian kernel's
    lattice (24,540 vertices against the bilateral one's 180,447 at 500x375) would otherwise
    take four parallel regions of its own, each a wake-up and a barrier for 0.1-1.3 ms of
    work. Both splats and blurs at 500x375, 21 labels, 2 threads: 13.8 -> 13.1 ms (1000x750:
    48.0 -> 46.0 ms); whole mean-field steps 0.1-0.4 ms faster (about 22.5 ms; medians of 101,
    six processes). The same values, bit for bit.

    Parameters
    ----------
    lattices : list of Lattice
    values : ndarray of shape (N, C), float32
    pres : list of ndarray of shape (N,), float32, or None
        Each lattice's scaling of the values (as ``pre`` of :func:`splat_blur_cpu`).
    scratches : list of list
        Each lattice's buffers between calls (as ``scratch`` of :func:`splat_blur_cpu`).
    channels : int or None

    Returns
    -------
    list of ndarray of shape (M_i+1, C'), float32: every lattice's blurred values, in order.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    pres = [None if pre is None else np.ascontiguousarray(pre, dtype=np.float32) for pre in pres]
    c = _channels(values, channels)
    main, side = side_lattices([(lat.n_points, lat.d, lat.n_vertices) for lat in lattices], numba.get_num_threads())
    if not side:
        return [splat_blur_cpu(lattice, values, pre, False, scratch, channels)
                for lattice, pre, scratch in zip(lattices, pres, scratches)]
    buffers = {i: _buffers(scratches[i], lattices[i].n_vertices, c, 1 if i == main else 2) for i in [main] + side}
    # the side lattices' arrays, one tuple per argument of the kernel
    side_arrays = [tuple(getattr(lattices[i], name) for i in side)
                   for name in ("starts", "splat_point", "splat_weight", "n1", "n2")]
    lattice, pre = lattices[main], pres[main]
    _splat_side_kernel(values, _NO_SCALE if pre is None else pre, lattice.starts, lattice.splat_point,
                       lattice.splat_weight, buffers[main][0], prefetch_distance(values, config.AHEAD_VERTICES),
                       lattice.splat_bounds(), *dynamic.schedule(),
                       tuple(_NO_SCALE if pres[i] is None else pres[i] for i in side), *side_arrays,
                       tuple(buffers[i][0] for i in side), tuple(buffers[i][1] for i in side),
                       dynamic.task_counter())
    out = [None] * len(lattices)
    out[main] = _blur_cpu(lattice, buffers[main][0], scratches[main], False)
    for i in side:  # the serial blur's last pass wrote the second buffer after an odd number of axes
        out[i] = buffers[i][(lattices[i].d + 1) % 2]
    for i in range(len(lattices)):
        if out[i] is None:
            out[i] = splat_blur_cpu(lattices[i], values, pres[i], False, scratches[i], channels)
    return out


@njit(parallel=True, cache=True)
def _ones_filter_kernel(starts, point_weights, n1, n2, offsets, weights, alpha, buf, out):
    """``out = K 1``: :func:`filter_cpu` of a column of ones, its arithmetic value by value.

    With one channel there is nothing to gather for the splat (each vertex sums its
    entries' weights, ``w * 1`` being ``w``), and the general kernels' loops over the
    channels would run once per row: here each stage is one flat parallel loop over
    the vertex values, rows 0 and 1 of ``buf`` (2, M+1) taking turns as the blur's source.
    """
    m = starts.shape[0] - 1
    d1 = offsets.shape[1]
    half = np.float32(0.5)
    for v in prange(m):
        total = np.float32(0.0)
        for e in range(starts[v], starts[v + 1]):
            total = total + point_weights[e]
        buf[0, v] = total
    buf[0, m] = 0
    buf[1, m] = 0
    for j in range(d1):
        src, dst = j % 2, 1 - j % 2
        for v in prange(m):
            buf[dst, v] = buf[src, v] + half * (buf[src, n1[j, v]] + buf[src, n2[j, v]])
    last = d1 % 2  # the row the last pass wrote
    for p in prange(offsets.shape[0]):
        total = (weights[p, 0] * alpha) * buf[last, offsets[p, 0]]
        for k in range(1, d1):
            total = total + (weights[p, k] * alpha) * buf[last, offsets[p, k]]
        out[p] = total


def ones_filter_cpu(lattice):
    """``K 1`` of a lattice, (N,) float32: the normaliser of every kernel (:mod:`crf.densecrf`).

    The same values as ``filter_cpu(lattice, ones((N, 1)), False, out)[:, 0]``, bit for bit,
    in a third of the time (6.3 -> 2 ms for the bilateral lattice at 500x375).
    """
    buf = np.empty((2, lattice.n_vertices + 1), np.float32)  # the vertex values, two buffers
    out = np.empty(lattice.n_points, np.float32)
    with threads_for(lattice.n_points):
        _ones_filter_kernel(lattice.starts, lattice.splat_weight, lattice.n1, lattice.n2, lattice.offsets,
                            lattice.weights, slice_alpha(lattice.d), buf, out)
    return out


def filter_cpu(lattice, values, reverse, out, scratch=None):
    """Filter ``values`` (N, C) into ``out`` (N, C) with the Numba kernels."""
    lat = splat_blur_cpu(lattice, values, None, reverse, scratch)
    _slice_kernel(lat, lattice.offsets, lattice.weights, slice_alpha(lattice.d), out)
    return out
