"""The permutohedral lattice built on a CUDA GPU: every O(N) step is a Numba CUDA kernel.

:func:`build_device` turns (N, d) float32 features on the device into the arrays
of :mod:`crf.lattice`'s layout (:class:`DeviceLatticeArrays`), with the same
vertex numbering, weights and splat order as the CPU build
(:func:`crf.lattice.build` with ``backend="cpu"``). The host only sizes the
arrays: it reads back two integers (the vertex count M and a scan total).

Algorithm (Adams, Baek & Davis, Eurographics 2010, sections 3-4)
-----------------------------------------------------------------
1. *embed* (section 3.1-3.2), one thread per point: elevate the scaled
   features onto the hyperplane ``H_d``, find the remainder-0 point and the
   rank of the rounding residuals (the enclosing simplex), and the
   barycentric weights. The float32 operations are those of
   ``crf.lattice_cpu``'s embedding, in the same order. NVVM contracts a
   multiply feeding an add into one FMA by default (``fastmath=False`` does
   not stop it), which rounds once where the CPU rounds twice; so every
   product that the CPU adds to something is computed in a kernel of its own
   and read back from memory by the next one, where it cannot be fused:
   three launches (``f scale`` and ``j f scale`` products; elevation,
   simplex and residual products; barycentric sums). The only product left
   next to a subtraction, ``ceil(x / (d+1)) (d+1)``, is an exact integer, so
   an FMA gives the same result there. Per-thread scratch
   (``cuda.local.array``) needs sizes known when compiling: these kernels
   are compiled once per d (d <= ``MAX_D``).
2. *hash* (section 3.3), one thread per entry ``e = p (d+1) + k`` (corner k
   of point p): the corner's key (its first d coordinates) is
   ``rem0[p, i] + k - (d+1 if rank[p, i] > d-k else 0)``; it is inserted into
   an open-addressing table (a power of two >= 2 N (d+1) slots, linear
   probing, int32 entry ids, -1 = empty). A thread claims an empty slot with
   an atomic compare-and-swap; a slot that holds another entry is compared
   by recomputing that entry's key from ``rem0`` and ``rank``, which no
   longer change, so the comparison needs no lock. On equal keys an atomic
   min leaves the smallest entry id in the slot, so at the end every slot
   holds the *first* entry (in point, corner order) with its key, whatever
   the threads' timing. A slot never changes its key once claimed, so all
   entries of one key stop at the same slot.
3. *numbering*: entry e owns a vertex iff its slot holds e. An exclusive scan
   of the owner flags in entry order numbers the vertices in the order a
   sequential pass over (point, corner) first meets them, which is the CPU's
   numbering. ``vertex_entry[v]`` is the owner entry of vertex v (its key
   can be recomputed from it: :meth:`DeviceLatticeArrays.keys`).
4. *neighbours* (section 3.4), one thread per (axis j, vertex): n1 looks up
   ``key - 1`` with ``+ (d+1)`` on axis j (only ``key - 1`` for j = d), n2 the
   opposite step, read-only in the final table; M where absent.
5. *splat index* (section 3.3's splat, as a gather): entries per vertex are
   counted with atomics, scanned into ``starts``, scattered with an atomic
   per-vertex cursor, and then each vertex's list is sorted by point index
   (insertion sort by one thread up to ``INSERTION_SORT_MAX`` entries, a
   bitonic sort by one thread block beyond, in shared memory up to
   ``crf.config.CUDA_SHARED_SORT_MAX``: a flat image region can put thousands
   of points on one vertex). The
   lists are then those of the CPU's counting sort, so the splat adds in the
   same order.

Every kernel loops grid-stride over a grid of ``crf.config.CUDA_THREADS``
threads and at most ``crf.config.CUDA_MAX_BLOCKS`` blocks, read at launch.
:func:`exclusive_scan` is the int32 scan used by steps 3 and 5.

Layout (device arrays, C-contiguous; see :mod:`crf.lattice`)
-----------------------------------------------------------
offsets (N, d+1) int32, weights (N, d+1) float32, n1 and n2 (d+1, M) int32,
starts (M+1,) int32, splat_point (N (d+1),) int32, splat_weight (N (d+1),)
float32, vertex_entry (M,) int32, and the enclosing simplices rem0 and rank
(N, d+1) int32, kept for :meth:`DeviceLatticeArrays.keys`. During the build
the hash table takes 4-8 bytes per entry and a few (N (d+1),) int32 arrays
live for one step each.

This module is imported lazily (only for the CUDA backend), like :mod:`crf.cuda`.

References
----------
A. Adams, J. Baek, M. A. Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice", Eurographics 2010, sections 3-4.
"""
import functools
import math
import time

import numpy as np
from numba import cuda, types

from crf import config
from crf.backend import is_device_array
from crf.lattice_reference import feature_scale

__all__ = ["DeviceLatticeArrays", "build_device", "exclusive_scan", "StageClock", "MAX_D", "INSERTION_SORT_MAX",
           "BLOCK_SORT_CAPACITY"]

#: The largest feature dimension d (the embedding's scratch arrays are compiled per d).
MAX_D = 16

#: Splat lists up to this many entries are sorted by insertion (one thread per vertex), longer
#: ones by a bitonic sort (one thread block per vertex), in shared memory up to
#: ``crf.config.CUDA_SHARED_SORT_MAX`` entries.
INSERTION_SORT_MAX = 32

#: The bitonic sort's shared arrays: 4096 points and weights (32 KB per block).
BLOCK_SORT_CAPACITY = 4096

#: Entries are int32 ids and the table has at least twice as many int32 slots.
_MAX_ENTRIES = 1 << 29

# Hash constants: odd multipliers below 2^31, so that a 32-bit value times one fits
# in int64 without overflow (on the GPU and in the simulator, whose NumPy scalars
# would warn on overflow). 0x61C88647 is 2^32 minus the golden-ratio constant
# 0x9E3779B9; 0x5BD1E995 is MurmurHash2's mixing multiplier.
_MULT = 0x61C88647
_FINAL = 0x5BD1E995
_MASK31 = 0x7FFFFFFF
_MASK32 = 0xFFFFFFFF


def _launch(n):
    """(blocks, threads) for n work items: a ceil-divided grid capped at CUDA_MAX_BLOCKS."""
    threads = config.CUDA_THREADS
    return max(1, min(config.CUDA_MAX_BLOCKS, (n + threads - 1) // threads)), threads


# ---------------------------------------------------------------- small kernels


@cuda.jit(cache=True)
def fill_kernel(a, value):
    """``a[:] = value`` for a 1-D device array (grid-stride; the build's and the filter's)."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, a.shape[0], stride):
        a[i] = value


def _filled(n, value):
    """A new (n,) int32 device array holding ``value``."""
    a = cuda.device_array(n, np.int32)
    if n:
        fill_kernel[_launch(n)](a, value)
    return a


# ---------------------------------------------------------------- exclusive scan


@cuda.jit(device=True)
def _block_inclusive_scan(s, t, nt):
    """Hillis-Steele inclusive scan of the block's shared ``s[:nt]`` in place (all threads call it)."""
    offset = 1
    while offset < nt:
        x = s[t]
        if t >= offset:
            x += s[t - offset]
        cuda.syncthreads()  # every thread has read before any writes
        s[t] = x
        cuda.syncthreads()
        offset *= 2


@cuda.jit(cache=True)
def _chunk_sums_kernel(src, n, chunk, sums):
    """``sums[b]`` = the sum of block b's chunk ``src[b chunk : (b+1) chunk]``."""
    s = cuda.shared.array(0, types.int32)  # dynamic: CUDA_THREADS values (a numba type: the simulator needs its dtype)
    t, nt, b = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockIdx.x
    lo = b * chunk
    hi = min(n, lo + chunk)
    acc = 0
    for i in range(lo + t, hi, nt):
        acc += src[i]
    s[t] = acc
    cuda.syncthreads()
    _block_inclusive_scan(s, t, nt)
    if t == nt - 1:
        sums[b] = s[t]


@cuda.jit(cache=True)
def _chunk_scan_kernel(src, n, chunk, base, dst):
    """Exclusive scan of block b's chunk, in tiles of one value per thread, plus ``base[b]``.

    The last block also writes the grand total to ``dst[n]`` when ``dst`` has room.
    """
    s = cuda.shared.array(0, types.int32)  # dynamic: CUDA_THREADS values (a numba type: the simulator needs its dtype)
    t, nt, b = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockIdx.x
    lo = b * chunk
    hi = min(n, lo + chunk)
    carry = base[b]
    tile = lo
    while tile < hi:  # the same trip count for every thread of the block: syncthreads is safe
        i = tile + t
        x = src[i] if i < hi else 0
        s[t] = x
        cuda.syncthreads()
        _block_inclusive_scan(s, t, nt)
        if i < hi:
            dst[i] = carry + s[t] - x
        carry += s[nt - 1]
        cuda.syncthreads()  # s[nt - 1] is read by all before the next tile overwrites it
        tile += nt
    if b == cuda.gridDim.x - 1 and t == 0 and dst.shape[0] > n:
        dst[n] = carry


def exclusive_scan(values, out=None, read_total=True):
    """Exclusive prefix sum of int32 values on the device.

    Each of B <= ``crf.config.CUDA_MAX_BLOCKS`` blocks takes one contiguous
    chunk; the chunk sums are scanned by one block, and each block then scans
    its chunk tile by tile in shared memory, starting from its chunk's offset.

    Parameters
    ----------
    values : CUDA device array of shape (n,), int32
    out : CUDA device array of shape (n+1,), int32, optional
        Receives ``out[i] = sum(values[:i])`` for i = 0..n (so ``out[n]`` is the
        total). It may not be ``values`` itself. Allocated when not given.
    read_total : bool
        Read the total back to the host, which waits for the GPU to get there;
        False: return None for it and let the host run ahead.

    Returns
    -------
    out : CUDA device array of shape (n+1,), int32
    total : int or None
        ``sum(values)`` (read back to the host), None without ``read_total``. Sums must
        stay below 2^31.
    """
    n = values.shape[0]
    if out is None:
        out = cuda.device_array(n + 1, np.int32)
    if out.shape[0] != n + 1 or out.dtype != np.int32:
        raise ValueError(f"out must be an int32 device array of shape ({n + 1},), got {out.shape} {out.dtype}")
    if n == 0:
        fill_kernel[1, 1](out, 0)
        return out, 0 if read_total else None
    threads = config.CUDA_THREADS
    shared = threads * np.dtype(np.int32).itemsize
    blocks = _launch(n)[0]
    chunk = (n + blocks - 1) // blocks
    sums = cuda.device_array(blocks, np.int32)
    _chunk_sums_kernel[blocks, threads, 0, shared](values, n, chunk, sums)
    base = cuda.device_array(blocks + 1, np.int32)
    _chunk_scan_kernel[1, threads, 0, shared](sums, blocks, blocks, _filled(1, 0), base)
    _chunk_scan_kernel[blocks, threads, 0, shared](values, n, chunk, base, out)
    return out, int(out[n]) if read_total else None


# ---------------------------------------------------------------- step 1: embed


@cuda.jit(cache=True)
def _products_kernel(features, scale, prod):
    """``prod[0, p, i] = f[p, i] scale[i]`` and ``prod[1, p, i] = (i+1) prod[0, p, i]``, (2, N, d).

    Kept apart from the sums that use them, so that NVVM cannot fuse them into FMAs.
    """
    n, d = features.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * d, stride):
        p = idx // d
        i = idx - p * d
        cf = features[p, i] * scale[i]
        prod[0, p, i] = cf
        prod[1, p, i] = np.float32(i + 1) * cf


@functools.lru_cache(maxsize=None)
def _embed_kernels(d):
    """The two per-point embedding kernels for feature dimension d (compiled on first use)."""
    if not 1 <= d <= MAX_D:
        raise ValueError(f"the feature dimension d must be in 1..{MAX_D}, got {d}")
    d1 = d + 1
    d2 = d + 2  # local array sizes must be closure constants, not expressions inside the kernel

    @cuda.jit
    def simplex_kernel(prod, rem0, rank, residual):
        """Elevate, remainder-0 point, rank; ``residual = (elevated - rem0) / (d+1)`` (N, d+1)."""
        n = rem0.shape[0]
        down = np.float32(1.0) / np.float32(d1)
        upf = np.float32(d1)
        elevated = cuda.local.array(d1, np.float32)
        r0 = cuda.local.array(d1, np.float32)
        rk = cuda.local.array(d1, np.int32)
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for p in range(start, n, stride):
            sm = np.float32(0.0)
            for j in range(d, 0, -1):  # E x with the basis of Adams et al. eq. (4)
                elevated[j] = sm - prod[1, p, j - 1]
                sm += prod[0, p, j - 1]
            elevated[0] = sm
            total = 0
            for i in range(d1):  # nearest multiple of d+1 (ceil(.) (d+1) is exact: FMA-safe)
                v = down * elevated[i]
                up = np.float32(math.ceil(v)) * upf
                dn = np.float32(math.floor(v)) * upf
                r0[i] = up if up - elevated[i] < elevated[i] - dn else dn
                total += int(r0[i])
            total //= d1
            for i in range(d1):
                rk[i] = 0
            for i in range(d):  # rank by residual; ties: the later coordinate ranks lower
                di = elevated[i] - r0[i]
                for j in range(i + 1, d1):
                    if di < elevated[j] - r0[j]:
                        rk[i] += 1
                    else:
                        rk[j] += 1
            for i in range(d1):  # repair the coordinate sum of the remainder-0 point
                rk[i] += total
                if rk[i] < 0:
                    rk[i] += d1
                    r0[i] += upf
                elif rk[i] > d:
                    rk[i] -= d1
                    r0[i] -= upf
            for i in range(d1):
                rem0[p, i] = int(r0[i])
                rank[p, i] = rk[i]
                residual[p, i] = (elevated[i] - r0[i]) * down

    @cuda.jit
    def barycentric_kernel(rank, weights):
        """Barycentric weights from the residuals that ``weights`` holds on entry (in place)."""
        n = rank.shape[0]
        bary = cuda.local.array(d2, np.float32)
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for p in range(start, n, stride):
            for i in range(d2):
                bary[i] = 0
            for i in range(d1):  # the CPU's order of float32 additions
                v = weights[p, i]
                bary[d - rank[p, i]] += v
                bary[d - rank[p, i] + 1] -= v
            bary[0] += np.float32(1.0) + bary[d1]
            for i in range(d1):
                weights[p, i] = bary[i]

    return simplex_kernel, barycentric_kernel


# ---------------------------------------------------------------- step 2: hash


@cuda.jit(device=True)
def _coord(rem0, rank, p, k, i, d):
    """Coordinate i of corner k of point p's simplex (int64)."""
    c = np.int64(rem0[p, i]) + k
    if rank[p, i] > d - k:
        c -= d + 1
    return c


@cuda.jit(device=True)
def _step_coord(rem0, rank, e, i, s, j, d):
    """Coordinate i of entry e's key stepped s (0, +1: n1, -1: n2) along axis j:
    ``key - s`` everywhere, ``+ s (d+1)`` on axis j (no axis for j < 0 or j = d)."""
    p = e // (d + 1)
    c = _coord(rem0, rank, p, e - p * (d + 1), i, d) - s
    if i == j:
        c += s * (d + 1)
    return c


@cuda.jit(device=True)
def _key_hash(rem0, rank, e, s, j, d):
    """Hash of the stepped key (see :func:`_step_coord`), a 32-bit value in an int64.

    As in the CPU's hash: ``sum key[i] c^(i+1)`` with independent products,
    then a final xor-shift-multiply mix; here in 32 bits (masked) so that no
    int64 product can overflow.
    """
    h = np.int64(0)
    c = np.int64(_MULT)
    for i in range(d):
        h = (h + (_step_coord(rem0, rank, e, i, s, j, d) & _MASK32) * c) & _MASK32
        c = (c * _MULT) & _MASK31
    h ^= h >> 16
    h = (h * _FINAL) & _MASK32
    h ^= h >> 15
    return h


@cuda.jit(device=True)
def _same_key(rem0, rank, e, s, j, o, d):
    """Whether entry e's stepped key equals entry o's (unstepped) key."""
    q = o // (d + 1)
    lo = o - q * (d + 1)
    for i in range(d):
        if _step_coord(rem0, rank, e, i, s, j, d) != _coord(rem0, rank, q, lo, i, d):
            return False
    return True


@cuda.jit(cache=True)
def _insert_kernel(rem0, rank, table, slot_of):
    """Insert every entry's key; each slot ends up holding the smallest entry with its key."""
    n, d1 = rem0.shape
    d = d1 - 1
    mask = table.shape[0] - 1
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, n * d1, stride):
        slot = _key_hash(rem0, rank, e, 0, -1, d) & mask
        while True:
            old = cuda.atomic.cas(table, slot, -1, e)
            if old == -1:
                break
            # A claimed slot keeps its key: recomputing old's key needs no lock.
            if _same_key(rem0, rank, e, 0, -1, old, d):
                cuda.atomic.min(table, slot, e)
                break
            slot = (slot + 1) & mask
        slot_of[e] = slot


# ---------------------------------------------------------------- step 3: numbering


@cuda.jit(cache=True)
def _owner_kernel(table, slot_of, flags):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, slot_of.shape[0], stride):
        flags[e] = 1 if table[slot_of[e]] == e else 0


@cuda.jit(cache=True)
def _number_kernel(table, slot_of, vid, offsets, vertex_entry, counts):
    """offsets from the owners' vertex ids; ``vertex_entry``; entries per vertex into ``counts``."""
    d1 = offsets.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, slot_of.shape[0], stride):
        owner = table[slot_of[e]]
        v = vid[owner]
        p = e // d1
        offsets[p, e - p * d1] = v
        if owner == e:
            vertex_entry[v] = e
        cuda.atomic.add(counts, v, 1)


# ---------------------------------------------------------------- step 4: neighbours


@cuda.jit(device=True)
def _lookup(rem0, rank, table, vid, e, s, j, d, m):
    """Vertex id of entry e's key stepped s along axis j, or m when it is not a vertex."""
    mask = table.shape[0] - 1
    slot = _key_hash(rem0, rank, e, s, j, d) & mask
    while True:
        o = table[slot]
        if o < 0:
            return m
        if _same_key(rem0, rank, e, s, j, o, d):
            return vid[o]
        slot = (slot + 1) & mask


@cuda.jit(cache=True)
def _neighbours_kernel(rem0, rank, table, vid, vertex_entry, n1, n2):
    """One thread per (axis j, vertex v), axis-major so that the writes to n1[j], n2[j] coalesce."""
    d1, m = n1.shape
    d = d1 - 1
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, d1 * m, stride):
        j = idx // m
        v = idx - j * m
        e = vertex_entry[v]
        n1[j, v] = _lookup(rem0, rank, table, vid, e, 1, j, d, m)
        n2[j, v] = _lookup(rem0, rank, table, vid, e, -1, j, d, m)


@cuda.jit(cache=True)
def _keys_kernel(rem0, rank, vertex_entry, keys):
    m, d = keys.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, m * d, stride):
        v = idx // d
        i = idx - v * d
        keys[v, i] = _step_coord(rem0, rank, vertex_entry[v], i, 0, -1, d)


# ---------------------------------------------------------------- step 5: splat index


@cuda.jit(cache=True)
def _scatter_kernel(offsets, weights, starts, counts, splat_point, splat_weight):
    """Put every entry into its vertex's list; ``counts`` (entries per vertex) serves as cursor."""
    n, d1 = offsets.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, n * d1, stride):
        p = e // d1
        k = e - p * d1
        v = offsets[p, k]
        pos = starts[v] + cuda.atomic.sub(counts, v, 1) - 1  # any order: sorted afterwards
        splat_point[pos] = p
        splat_weight[pos] = weights[p, k]


@cuda.jit(cache=True)
def _sort_kernel(starts, splat_point, splat_weight):
    """Sort the lists of at most ``INSERTION_SORT_MAX`` entries by point (a point appears once
    per vertex: the order is unique), one thread per vertex, by insertion."""
    m = starts.shape[0] - 1
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, m, stride):
        lo = starts[v]
        hi = starts[v + 1]
        if hi - lo > INSERTION_SORT_MAX:
            continue  # _block_sort_kernel's
        for a in range(lo + 1, hi):
            p = splat_point[a]
            w = splat_weight[a]
            b = a
            while b > lo and splat_point[b - 1] > p:
                splat_point[b] = splat_point[b - 1]
                splat_weight[b] = splat_weight[b - 1]
                b -= 1
            splat_point[b] = p
            splat_weight[b] = w


@cuda.jit(device=True)
def _bitonic_sort(keys, vals, lo, n):
    """Sort ``keys[lo:lo+n]`` ascending, ``vals`` alongside, with the whole thread block.

    Bitonic sort with ascending comparators only: the first comparison of each merge of
    blocks of k pairs i with its mirror ``i ^ (k-1)``, the others i with ``i ^ j``. The
    list counts as padded to a power of two with keys past every real one; since every
    comparator leaves the smaller key at the lower index, a padding key never moves and
    comparisons with one are skipped, so nothing is written past ``lo + n``.
    """
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    size = 1
    while size < n:
        size *= 2
    k = 2
    while k <= size:
        j = k
        while j > 1:
            mask = k - 1 if j == k else j // 2  # the merge's mirror first, then the half-cleaners
            for i in range(tid, n, threads):
                partner = i ^ mask
                if i < partner < n and keys[lo + i] > keys[lo + partner]:
                    key, val = keys[lo + i], vals[lo + i]
                    keys[lo + i], vals[lo + i] = keys[lo + partner], vals[lo + partner]
                    keys[lo + partner], vals[lo + partner] = key, val
            cuda.syncthreads()
            j //= 2
        k *= 2


@cuda.jit(cache=True)
def _block_sort_kernel(starts, shared_max, splat_point, splat_weight):
    """Sort the lists of more than ``INSERTION_SORT_MAX`` entries by point, one thread block
    per vertex (:func:`_bitonic_sort`): in shared memory up to ``shared_max`` (at most
    ``BLOCK_SORT_CAPACITY``) entries, in place in global memory beyond. Such lists are a few
    percent of a bilateral lattice's vertices but up to thousands of entries long (a flat
    image region), which one thread sorting alone would take milliseconds over."""
    keys = cuda.shared.array(BLOCK_SORT_CAPACITY, types.int32)
    vals = cuda.shared.array(BLOCK_SORT_CAPACITY, types.float32)
    m = starts.shape[0] - 1
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    for v in range(cuda.blockIdx.x, m, cuda.gridDim.x):  # the whole block takes the same branches
        lo = starts[v]
        n = starts[v + 1] - lo
        if n <= INSERTION_SORT_MAX:
            continue
        if n > shared_max:
            _bitonic_sort(splat_point, splat_weight, lo, n)
            continue
        for i in range(tid, n, threads):
            keys[i] = splat_point[lo + i]
            vals[i] = splat_weight[lo + i]
        cuda.syncthreads()
        _bitonic_sort(keys, vals, 0, n)
        for i in range(tid, n, threads):
            splat_point[lo + i] = keys[i]
            splat_weight[lo + i] = vals[i]
        cuda.syncthreads()  # before the next vertex's list overwrites the shared arrays


# ---------------------------------------------------------------- the build


def _table_size(n_keys):
    """A power of two at least twice ``n_keys`` and at least 64: the table stays at most half full."""
    size = 64
    while size < 2 * n_keys:
        size *= 2
    return size


def _device_features(features):
    """The features as an (N, d) float32 device array (host arrays come checked by the caller)."""
    expected = f"an (N, d) float32 array with N >= 1 and 1 <= d <= {MAX_D}"
    if is_device_array(features):
        if (features.ndim != 2 or features.shape[0] < 1 or not 1 <= features.shape[1] <= MAX_D
                or features.dtype != np.float32):
            raise ValueError(f"features must be {expected}; got a device array of shape "
                             f"{tuple(features.shape)} and dtype {features.dtype}")
        return features
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] < 1 or not 1 <= features.shape[1] <= MAX_D:
        raise ValueError(f"features must be {expected}; got shape {features.shape}")
    return cuda.to_device(features)


class DeviceLatticeArrays:
    """A permutohedral lattice built on the GPU (:func:`build_device`): device arrays.

    Attributes
    ----------
    offsets : device array of shape (N, d+1), int32
        Vertex of each simplex corner of each point.
    weights : device array of shape (N, d+1), float32
        Barycentric weight of each corner.
    n1, n2 : device arrays of shape (d+1, M), int32
        Neighbour vertex along axis j, ``M`` when absent.
    starts : device array of shape (M+1,), int32
        The splat CSR index: the entries of vertex v are ``starts[v]:starts[v+1]``.
    splat_point : device array of shape (N (d+1),), int32
        Their points, in increasing order per vertex.
    splat_weight : device array of shape (N (d+1),), float32
        Their barycentric weights.
    vertex_entry : device array of shape (M,), int32
        The entry ``p (d+1) + k`` (corner k of point p) that first meets each vertex.
    rem0, rank : device arrays of shape (N, d+1), int32
        Each point's remainder-0 point and rank (its enclosing simplex), from
        which :meth:`keys` recomputes the vertex keys.
    d, n_points, n_vertices : int
        Feature dimension d, N and M.
    """

    def __init__(self, offsets, weights, n1, n2, starts, splat_point, splat_weight, vertex_entry,
                 rem0, rank):
        self.offsets, self.weights = offsets, weights
        self.n1, self.n2, self.starts = n1, n2, starts
        self.splat_point, self.splat_weight = splat_point, splat_weight
        self.vertex_entry, self.rem0, self.rank = vertex_entry, rem0, rank
        self.n_points, d1 = offsets.shape
        self.d = d1 - 1
        self.n_vertices = vertex_entry.shape[0]

    def __repr__(self):
        return f"DeviceLatticeArrays(d={self.d}, n_points={self.n_points}, n_vertices={self.n_vertices})"

    def _arrays(self):
        return (self.offsets, self.weights, self.n1, self.n2, self.starts, self.splat_point,
                self.splat_weight, self.vertex_entry, self.rem0, self.rank)

    def nbytes(self):
        """Bytes held on the device by the lattice's arrays."""
        return sum(int(a.nbytes) for a in self._arrays())

    def keys(self):
        """The vertex keys (their first d coordinates), (M, d) int32, as a host NumPy array.

        Computed on the device from each vertex's owner entry.
        """
        keys = cuda.device_array((self.n_vertices, self.d), np.int32)
        _keys_kernel[_launch(self.n_vertices * self.d)](self.rem0, self.rank, self.vertex_entry, keys)
        return keys.copy_to_host()

    def host_arrays(self):
        """Host copies in :class:`crf.lattice.Lattice`'s constructor order.

        ``(offsets, weights, keys, n1, n2, starts (as int64), splat_point, splat_weight)``.
        """
        return (self.offsets.copy_to_host(), self.weights.copy_to_host(), self.keys(),
                self.n1.copy_to_host(), self.n2.copy_to_host(),
                self.starts.copy_to_host().astype(np.int64), self.splat_point.copy_to_host(),
                self.splat_weight.copy_to_host())


class StageClock:
    """A profile of GPU stages: ``clock(name)`` waits for the device and adds the seconds since
    the last mark to ``timings[name]``. With ``timings`` None it does nothing (no waits), so
    the code it marks runs as it would unmarked."""

    def __init__(self, timings):
        self.timings = timings
        if timings is not None:
            cuda.synchronize()
            self._last = time.perf_counter()

    def __call__(self, name):
        if self.timings is None:
            return
        cuda.synchronize()
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now


def build_device(features, timings=None):
    """Build the permutohedral lattice on the GPU.

    Parameters
    ----------
    features : CUDA device array of shape (N, d), float32; or a host ndarray
        Each feature already divided by its standard deviation; 1 <= d <=
        ``MAX_D``. A host array is uploaded; its values must already have
        passed the caller's checks (finite, small enough for exact float32
        rounding: ``crf.lattice``'s input check).
    timings : dict, optional
        A profile (:class:`StageClock`): the seconds of "embed", "hash", "number",
        "splat index", "sort" and "neighbours" are added to it, the device synchronised
        after each; the build then takes longer than without.

    Returns
    -------
    DeviceLatticeArrays
        With the CPU build's numbering: vertices in the order a pass over
        (point, corner) first meets them, splat lists in point order.

    Raises
    ------
    ValueError
        For a device array of the wrong shape or dtype (the message names the
        expected and the given ones), or more than 2^29 entries N (d+1).
    """
    features = _device_features(features)
    n, d = features.shape
    d1 = d + 1
    n_entries = n * d1
    if n_entries > _MAX_ENTRIES:
        raise ValueError(f"at most {_MAX_ENTRIES} entries N (d+1) fit the int32 hash table, got {n_entries}")
    simplex_kernel, barycentric_kernel = _embed_kernels(d)
    clock = StageClock(timings)

    # 1. embed: products, simplex and residual products, barycentric sums (three launches: no FMA)
    prod = cuda.device_array((2, n, d), np.float32)
    _products_kernel[_launch(n * d)](features, cuda.to_device(feature_scale(d)), prod)
    rem0 = cuda.device_array((n, d1), np.int32)
    rank = cuda.device_array((n, d1), np.int32)
    weights = cuda.device_array((n, d1), np.float32)
    simplex_kernel[_launch(n)](prod, rem0, rank, weights)
    del prod
    barycentric_kernel[_launch(n)](rank, weights)
    clock("embed")

    # 2. hash: every slot ends up with the first entry of its key
    table = _filled(_table_size(n_entries), -1)
    slot_of = cuda.device_array(n_entries, np.int32)
    _insert_kernel[_launch(n_entries)](rem0, rank, table, slot_of)
    clock("hash")

    # 3. number the owners in entry order: the CPU's first-seen order
    flags = cuda.device_array(n_entries, np.int32)
    _owner_kernel[_launch(n_entries)](table, slot_of, flags)
    vid, m = exclusive_scan(flags)
    del flags
    offsets = cuda.device_array((n, d1), np.int32)
    vertex_entry = cuda.device_array(m, np.int32)
    counts = _filled(m, 0)
    _number_kernel[_launch(n_entries)](table, slot_of, vid, offsets, vertex_entry, counts)
    del slot_of
    clock("number")

    # 5. splat index: scan the counts, scatter, sort each list by point
    starts, _ = exclusive_scan(counts, read_total=False)  # the total is N (d+1), known
    splat_point = cuda.device_array(n_entries, np.int32)
    splat_weight = cuda.device_array(n_entries, np.float32)
    _scatter_kernel[_launch(n_entries)](offsets, weights, starts, counts, splat_point, splat_weight)
    del counts
    clock("splat index")
    _sort_kernel[_launch(m)](starts, splat_point, splat_weight)
    shared_max = min(int(config.CUDA_SHARED_SORT_MAX), BLOCK_SORT_CAPACITY)
    _block_sort_kernel[min(m, config.CUDA_MAX_BLOCKS), config.CUDA_THREADS](starts, shared_max, splat_point,
                                                                            splat_weight)
    clock("sort")

    # 4. neighbours, read-only in the final table
    n1 = cuda.device_array((d1, m), np.int32)
    n2 = cuda.device_array((d1, m), np.int32)
    _neighbours_kernel[_launch(d1 * m)](rem0, rank, table, vid, vertex_entry, n1, n2)
    clock("neighbours")
    return DeviceLatticeArrays(offsets, weights, n1, n2, starts, splat_point, splat_weight,
                               vertex_entry, rem0, rank)
