"""The lattice build's hash and neighbour look-ups with every vertex key packed into one int64.

A vertex key is d small integers (:mod:`crf.lattice`). On images they are small indeed:
at 500x375 with DeepLab's bilateral kernel (d = 5) they lie within +-320, 10 bits each, so a
whole key fits in 50 bits. Packed, a key is hashed with one multiply-xorshift mix instead of
d products, compared with one integer comparison instead of d, and stored in the hash table
itself: a look-up reads one table slot (the key and its vertex index side by side) instead of
a slot and then a row of the key array elsewhere in memory. The neighbour look-ups of step 5
became 2x faster (18.8 -> 9.5 ms at 500x375, d = 5, 2 threads) and the hash of step 4 1.7x.

Layout: coordinate i of a key is stored as ``key[i] - lo`` in bits ``[i*bits, (i+1)*bits)``,
with ``lo`` and ``bits`` chosen (:func:`packed_layout`) so that every corner key and every
neighbour candidate ``key - (1, .., 1) + (d+1) e_j`` stays within its field: the step to a
neighbour is then one addition on the packed key (no borrow or carry crosses a field). Keys
that do not fit in 62 bits (many features, or features of a very wide range) use the general
kernels of :mod:`crf.lattice_cpu`. Both give the same lattice: the vertices are numbered in
first-seen order, which does not depend on the hash function (tests/crf compare them).

Table: a power of two of slots, each two int64 (packed key or -1 for empty, vertex index),
at most half full, linear probing.
"""
import numpy as np
from numba import njit, prange

from crf import config
from crf.prefetch import prefetch_item

_GOLDEN = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 (2^64 / golden ratio), as int64
_FINAL = np.int64(-2960836687051489901)  # 0xD6E8FEB86659FD93, an odd 64-bit mixing constant
_EMPTY = np.int64(-1)
_RING = 8  # vertices whose neighbour candidates are hashed and prefetched ahead of their look-up
_BLOCK = 256  # vertices per parallel work item of the neighbour look-ups
MAX_BITS = 62  # a packed key stays positive, with room for the neighbour step's addition


def packed_layout(rem0, d):
    """``(lo, bits)`` for the keys of these remainder-0 points, or None if they do not fit.

    Corner k of a point has coordinates ``rem0[i] + k`` or ``rem0[i] + k - (d+1)``, and a
    neighbour candidate adds ``-1`` or ``d`` to a key's coordinate: every coordinate lies in
    ``[min(rem0) - (d+2), max(rem0) + 2d + 1]``.
    """
    if rem0.shape[0] == 0 or d < 1:
        return None
    # Over all d+1 columns (the last one is not a key coordinate): a contiguous reduction,
    # 3x faster than over the first d, and a bound all the same.
    lo = int(rem0.min()) - (d + 2)
    hi = int(rem0.max()) + 2 * d + 1
    bits = max(1, (hi - lo).bit_length())
    return (lo, bits) if bits * d <= MAX_BITS else None


@njit(inline="always")
def _mix(key):
    h = key * _GOLDEN
    h ^= h >> np.int64(32)
    h *= _FINAL
    h ^= h >> np.int64(29)
    return h


@njit(inline="always")
def _corner_steps(d, bits):
    """``steps`` (d+2,) int64 for :func:`_hash_block`'s corner keys: ``steps[i]`` is ``(d+1) e_i``
    packed for a stored coordinate i < d, 0 for the coordinate d that is not stored, and
    ``steps[d+1]`` is ``(1, .., 1)`` packed."""
    steps = np.empty(d + 2, np.int64)
    ones = np.int64(0)
    for i in range(d):
        steps[i] = np.int64(d + 1) << np.int64(i * bits)
        ones += np.int64(1) << np.int64(i * bits)
    steps[d] = 0
    steps[d + 1] = ones
    return steps


@njit(inline="always")
def _find(table, key):
    """Slot of ``key`` (packed) in the table: its own, or the empty slot where it would go."""
    mask = table.shape[0] // 2 - 1
    s = _mix(key) & mask
    while True:
        stored = table[2 * s]
        if stored == key or stored == _EMPTY:
            return s
        s = (s + 1) & mask


@njit(cache=True)
def table_size(n_keys):
    """Slots of a hash table for ``n_keys`` keys: a power of two at least twice ``n_keys`` and at least 64
    (both builds' tables; :mod:`crf.lattice_cpu` uses it too)."""
    size = 64
    while size < 2 * n_keys:
        size *= 2
    return size


@njit(cache=True)
def _hash_block(rem0, rank, lo, bits, start, stop, packed, offsets):
    """Step 4a for points start..stop-1: their distinct keys in first-seen order.

    The keys go to ``packed[start (d+1) + r]`` for r = 0, 1, ..; ``offsets`` gets those
    positions. The block's own table doubles before it gets more than half full.
    Returns the number of keys.
    """
    d1 = rem0.shape[1]
    base = start * d1
    table = np.full(2 * table_size((stop - start) // 4 + 1), _EMPTY, np.int64)
    steps = _corner_steps(d1 - 1, bits)
    coordinate = np.empty(d1, np.int64)  # coordinate[r]: the coordinate of rank r
    m = 0
    for p in range(start, stop):
        if 2 * (m + d1) > table.shape[0] // 2:  # grow and rehash
            table = np.full(2 * table.shape[0], _EMPTY, np.int64)
            for r in range(base, base + m):
                s = _find(table, packed[r])
                table[2 * s] = packed[r]
                table[2 * s + 1] = r
        # Corner k's coordinate i is rem0[i] + k, less d + 1 once k > d - rank[i]: from corner
        # k - 1 to k every coordinate gains 1 but the one of rank d + 1 - k, which loses d. So
        # each corner's key is the previous one plus a step: O(d) a point instead of O(d^2)
        # (the bilateral hash at 500x375: 10.4 -> 8.0 ms on 2 threads).
        key = np.int64(0)
        for i in range(d1 - 1):
            key |= np.int64(rem0[p, i] - lo) << np.int64(i * bits)
        for i in range(d1):
            coordinate[rank[p, i]] = i  # the ranks of a point are 0..d, each once
        for k in range(d1):
            if k > 0:
                key += steps[d1] - steps[coordinate[d1 - k]]
            # Neighbouring points often lie in the same simplex, and a vertex with
            # remainder k can only be the previous point's vertex k: try it first.
            if p > start and packed[offsets[p - 1, k]] == key:
                offsets[p, k] = offsets[p - 1, k]
                continue
            s = _find(table, key)
            if table[2 * s] == _EMPTY:
                table[2 * s] = key
                table[2 * s + 1] = base + m
                packed[base + m] = key
                m += 1
            offsets[p, k] = table[2 * s + 1]
    return m


@njit(parallel=True, cache=True)
def _hash_blocks_kernel(rem0, rank, lo, bits, bounds, visit, packed, offsets, counts):
    """Step 4a over all blocks (see :func:`crf.lattice_cpu.hash_cpu` for ``visit``)."""
    for i in prange(bounds.shape[0] - 1):
        b = visit[i]
        counts[b] = _hash_block(rem0, rank, lo, bits, bounds[b], bounds[b + 1], packed, offsets)


_MERGE_AHEAD = 16  # keys between a table slot's prefetch and its look-up in the merge


@njit(cache=True)
def _merge_kernel(packed, bases, counts, remap):
    """Step 4b, sequential: every block's keys, block after block, into one table.

    ``remap[r]`` gets the vertex index of key position r. Returns (table, keys (M,) int64).
    The keys come in a known order, so the home slot of the key ``_MERGE_AHEAD`` on is
    prefetched: the bilateral lattice's merge at 500x375 (201,944 keys into an 8 MB table)
    3.2-3.6 -> 2.3-2.5 ms.
    """
    table = np.full(2 * table_size(counts.sum()), _EMPTY, np.int64)
    merged = np.empty(counts.sum(), np.int64)
    mask = table.shape[0] // 2 - 1
    m = 0
    for b in range(counts.shape[0]):
        end = bases[b] + counts[b]
        for r in range(bases[b], end):
            if r + _MERGE_AHEAD < end:  # the home slot of the key a few ahead (crf.prefetch)
                prefetch_item(table, 2 * (_mix(packed[r + _MERGE_AHEAD]) & mask))
            key = packed[r]
            s = _find(table, key)
            if table[2 * s] == _EMPTY:
                table[2 * s] = key
                table[2 * s + 1] = m
                merged[m] = key
                m += 1
            remap[r] = table[2 * s + 1]
    return table, merged[:m].copy()


@njit(parallel=True, cache=True)
def remap_kernel(offsets, remap):
    """Step 4c of both builds: replace key positions by vertex indices."""
    n, d1 = offsets.shape
    for p in prange(n):
        for k in range(d1):
            offsets[p, k] = remap[offsets[p, k]]


@njit(parallel=True, cache=True)
def invert_neighbours(n1, n2):
    """Step 5b of both builds: ``n2[j, n1[j, v]] = v``, and M where no vertex has v as its n1 neighbour.

    The step along an axis is a bijection of the lattice, so n2 is n1's inverse. One axis per
    iteration: each scatter stays within one row of ``n2`` (M int32, which the cache holds),
    and reads its row of ``n1`` in order. Over the vertices with the axes inside, the same
    scatter took 2.1 ms instead of 0.3 (500x375, d = 5, 2 threads).
    """
    d1, m = n1.shape
    for j in prange(d1):
        row, inverse = n1[j], n2[j]
        for v in range(m):
            inverse[v] = m
        for v in range(m):
            u = row[v]
            if u < m:
                inverse[u] = v


@njit(parallel=True, cache=True)
def _unpack_kernel(packed, lo, bits, keys):
    """keys[v, i] = field i of packed[v] + lo."""
    m, d = keys.shape
    mask = (np.int64(1) << np.int64(bits)) - 1
    for v in prange(m):
        for i in range(d):
            keys[v, i] = np.int32(((packed[v] >> np.int64(i * bits)) & mask) + lo)


def hash_packed(rem0, rank, offsets, layout, n_threads):
    """Step 4 with packed keys: fill ``offsets`` (N, d+1); return (table, packed (M,), keys (M, d)).

    The same blocks, merge and numbering as :func:`crf.lattice_cpu.hash_cpu`.
    """
    n, d1 = rem0.shape
    lo, bits = layout
    packed = np.empty(n * d1, np.int64)  # pages are only touched where keys are written
    n_blocks = max(1, min(config.HASH_BLOCKS_PER_THREAD * n_threads, n)) if n_threads > 1 else 1
    bounds = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    visit = np.concatenate([np.arange(t, n_blocks, n_threads) for t in range(n_threads)]) \
        if n_threads > 1 else np.zeros(1, np.int64)
    counts = np.empty(n_blocks, np.int64)
    _hash_blocks_kernel(rem0, rank, lo, bits, bounds, visit.astype(np.int64), packed, offsets, counts)
    remap = np.empty(n * d1, np.int32)
    table, merged = _merge_kernel(packed, bounds[:-1] * d1, counts, remap)
    remap_kernel(offsets, remap)
    keys = np.empty((merged.shape[0], d1 - 1), np.int32)
    _unpack_kernel(merged, lo, bits, keys)
    return table, merged, keys


@njit(inline="always")
def _queue(table, packed, steps, w, cand, slot):
    """Vertex w's neighbour candidates into ``cand`` (d+1,), their home slots into ``slot``,
    and a prefetch of those slots."""
    mask = table.shape[0] // 2 - 1
    for j in range(steps.shape[0]):
        key = packed[w] + steps[j]
        cand[j] = key
        s = _mix(key) & mask
        slot[j] = s
        prefetch_item(table, 2 * s)


@njit(parallel=True, cache=True)
def _neighbours_kernel(table, packed, steps, n1):
    """Step 5a: ``n1[j, v]`` = the vertex ``key_v + steps[j]`` (M where there is none).

    The candidates of the vertex ``_RING - 1`` ahead are hashed and their slots prefetched
    before the current vertex is looked up.
    """
    m = packed.shape[0]
    d1 = steps.shape[0]
    mask = table.shape[0] // 2 - 1
    n_blocks = (m + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        cand = np.empty((_RING, d1), np.int64)
        slot = np.empty((_RING, d1), np.int64)
        lo, hi = b * _BLOCK, min(m, (b + 1) * _BLOCK)
        for w in range(lo, min(hi, lo + _RING - 1)):
            _queue(table, packed, steps, w, cand[w % _RING], slot[w % _RING])
        for v in range(lo, hi):
            if v + _RING - 1 < hi:
                w = v + _RING - 1
                _queue(table, packed, steps, w, cand[w % _RING], slot[w % _RING])
            r = v % _RING
            for j in range(d1):
                key, s = cand[r, j], slot[r, j]
                found = m
                while True:
                    stored = table[2 * s]
                    if stored == key:
                        found = table[2 * s + 1]
                        break
                    if stored == _EMPTY:
                        break
                    s = (s + 1) & mask
                n1[j, v] = found


def neighbours_packed(table, packed, layout, d, n1, n2):
    """Step 5 with packed keys: fill ``n1``, ``n2`` (d+1, M) int32."""
    lo, bits = layout
    ones = sum(1 << (i * bits) for i in range(d))
    # Along axis j < d: key - (1, .., 1) + (d+1) e_j; along axis d (the coordinate not stored): key - (1, .., 1).
    steps = np.array([-ones + ((d + 1) << (j * bits) if j < d else 0) for j in range(d + 1)], np.int64)
    _neighbours_kernel(table, packed, steps, n1)
    invert_neighbours(n1, n2)
