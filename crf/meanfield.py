"""The mean-field update's pointwise stages: message accumulation and softmax.

With Q, the unary U and every kernel's filtered, normalised ``Qf_m = N_m K_m Q``
laid out points first, (N, L) float32, one update is (Kraehenbuehl & Koltun
2011, eq. (4) with the penalty mu of eq. (2))::

    energy = -U
    for every kernel m:  energy -= w_m * Qf_m @ mu_m          # add_message
    Q      = softmax(energy) over the labels of each point   # softmax_rows

``mu_m`` is given in one of three forms, so that the common cases cost O(L)
per point instead of O(L^2):

* ``KIND_POTTS`` with scalar s: mu = s (1 - I). ``Qf @ mu`` is
  ``s (sum(Qf) - Qf)``; the row sum is the same for every label of a point, and
  a softmax does not change when a constant is added to all labels of a point,
  so the update adds ``w s Qf`` only. The free energy keeps the full term.
* ``KIND_DIAGONAL`` with vector v: mu = diag(v).
* ``KIND_MATRIX`` with an (L, L) symmetric matrix.

The NumPy reference runs the stages one by one (:func:`add_message_numpy`,
:func:`softmax_numpy`). The Numba CPU kernels (prange over blocks of points;
every point writes only its own row) fuse the lattice's slice with the message
of every kernel and the softmax (:func:`slice_messages_cpu`): one pass over
the points instead of four per kernel; given lattices of L - 1 labels, it
derives the last label's slice from the others' (see
:meth:`crf.densecrf.HostRunner.step`). :func:`softmax_cpu` gives the
initial ``softmax(-U)``. Their exp is a vectorisable polynomial accurate to
about one float32 ulp (see ``_softmax_block``). The rows of labels are combined
and moved by the explicit vector operations of :mod:`crf.simd`.

References
----------
P. Kraehenbuehl, V. Koltun, "Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials", NIPS 2011, section 3, eq. (4).
"""

import numpy as np
from numba import njit, prange

from crf.lattice import slice_alpha
from crf import config
from crf import dynamic
from crf.dynamic import next_block, span
from crf.lattice_cpu import prefetch_distance, slice_point
from crf.prefetch import prefetch_row
from crf.simd import add_sliced_message, row_sum, transpose_tile

KIND_POTTS, KIND_DIAGONAL, KIND_MATRIX = 0, 1, 2
_BLOCK = 256  # points per parallel work item (scratch rows per item)

# exp(x) for x <= 0 as 2^n * p(r): n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split
# in two parts so that r is exact), p the degree-7 Cephes expf polynomial (about 1 ulp in float32);
# 2^n is built from its bits. Written so that LLVM vectorises the loop: about 3x faster than
# math.exp in a scalar loop. Below -87 the result is clamped to ~1.6e-38 instead of underflowing.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)


@njit(inline="always")
def _transpose(src, src_row, src_col, dst, dst_row, dst_col, rows, cols):
    """``dst[dst_row + j, dst_col + i] = src[src_row + i, src_col + j]`` for i < ``rows``, j < ``cols``:
    tiles of 16 x 16 in vector registers (:func:`crf.simd.transpose_tile`), the edges value by value."""
    full_rows, full_cols = rows - rows % 16, cols - cols % 16
    for r in range(0, full_rows, 16):
        for c in range(0, full_cols, 16):
            transpose_tile(src, src_row + r, src_col + c, dst, dst_row + c, dst_col + r)
        for c in range(full_cols, cols):
            for i in range(r, r + 16):
                dst[dst_row + c, dst_col + i] = src[src_row + i, src_col + c]
    for i in range(full_rows, rows):
        for c in range(cols):
            dst[dst_row + c, dst_col + i] = src[src_row + i, src_col + c]


@njit(inline="always")
def _softmax_block(block, count, out, p0, top, total, bits, labels_major):
    """``out[p0 + i] = softmax(block[:, i])`` for the columns i < count of ``block`` (L, B);
    with ``labels_major``, ``out[:, p0 + i]`` instead (``out`` (L, N) rather than (N, L)).
    A points-first ``out`` of L - 1 columns gets all labels but the last.

    The block holds B points label-major, so that every loop below runs over the
    points of one label: LLVM vectorises those loops (no reduction across a
    vector), while each point still takes its max, exp sum and division label by
    label, in the same order as a loop over one point's labels. A points-first
    ``out`` gets the block's columns in tiles (:func:`_transpose`). ``block`` is
    overwritten; ``top``, ``total`` (B,) float32 and ``bits`` (B,) int32 are scratch.
    """
    n_labels = block.shape[0]
    scale = bits.view(np.float32)
    for i in range(count):
        top[i] = block[0, i]
        total[i] = np.float32(0.0)
    for lab in range(1, n_labels):
        for i in range(count):
            top[i] = max(top[i], block[lab, i])
    for lab in range(n_labels):
        for i in range(count):
            v = max(block[lab, i] - top[i], np.float32(-87.0))
            fx = np.floor(v * _LOG2E + np.float32(0.5))  # float32 (math.floor would go through int64)
            r = v - fx * _LN2_HI - fx * _LN2_LO
            poly = _P0
            poly = poly * r + _P1
            poly = poly * r + _P2
            poly = poly * r + _P3
            poly = poly * r + _P4
            poly = poly * r + _P5
            bits[i] = (np.int32(fx) + np.int32(127)) << np.int32(23)  # 2^n, built from its exponent bits
            y = (poly * r * r + r + np.float32(1.0)) * scale[i]
            block[lab, i] = y
            total[i] += y
    for i in range(count):
        total[i] = np.float32(1.0) / total[i]
    if labels_major:
        for lab in range(n_labels):
            for i in range(count):
                out[lab, p0 + i] = block[lab, i] * total[i]
    else:  # every label, or all but the last into a narrow Q (crf.densecrf.HostRunner.start)
        for lab in range(out.shape[1]):
            for i in range(count):
                block[lab, i] = block[lab, i] * total[i]
        _transpose(block, 0, 0, out, p0, 0, out.shape[1], count)


def add_message_numpy(energy, qf, w, kind, mu):
    """``energy -= w * qf @ mu`` (up to a per-point constant for Potts), in place.

    Parameters
    ----------
    energy, qf : ndarray of shape (N, L), float32
    w : float
    kind : int
        ``KIND_POTTS`` (mu is (1,) holding s), ``KIND_DIAGONAL`` (mu is (L,)) or
        ``KIND_MATRIX`` (mu is (L, L), symmetric).
    mu : ndarray, float32
    """
    w = np.float32(w)
    if kind == KIND_POTTS:
        energy += (w * mu[0]) * qf
    elif kind == KIND_DIAGONAL:
        energy -= w * (qf * mu[None, :])
    else:
        energy -= w * (qf @ mu)


def softmax_numpy(energy, out):
    """Row-wise, max-subtracted softmax of (N, L) float32 into ``out``."""
    e = np.exp(energy - energy.max(axis=1, keepdims=True))
    np.divide(e, e.sum(axis=1, keepdims=True), out=out)


@njit(parallel=True, cache=True)
def _softmax_kernel(energy, sign, out):
    n, n_labels = energy.shape
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        block = np.empty((n_labels, _BLOCK), np.float32)
        top, total = np.empty(_BLOCK, np.float32), np.empty(_BLOCK, np.float32)
        bits = np.empty(_BLOCK, np.int32)
        p0 = b * _BLOCK
        count = min(n, p0 + _BLOCK) - p0
        _transpose(energy, p0, 0, block, 0, 0, count, n_labels)
        for lab in range(n_labels):
            for i in range(count):
                block[lab, i] = sign * block[lab, i]
        _softmax_block(block, count, out, p0, top, total, bits, False)


def softmax_cpu(energy, out, negate=False):
    """Numba version of :func:`softmax_numpy`; ``negate``: of ``-energy`` (no negated copy made).

    ``out``: C-contiguous (N, L) float32 (its tiles are stored as rows of 16 values)."""
    _softmax_kernel(np.ascontiguousarray(energy, dtype=np.float32), np.float32(-1.0 if negate else 1.0), out)


_TILE = 32  # the transpose's tiles: 32 x 32 values, rows of 128 bytes on both sides


@njit(parallel=True, cache=True)
def _transpose_kernel(src, dst):
    rows, cols = src.shape
    tiles_i, tiles_j = (rows + _TILE - 1) // _TILE, (cols + _TILE - 1) // _TILE
    for t in prange(tiles_i * tiles_j):  # (N, L) has tiles along the rows, (L, N) along the columns
        i0, j0 = (t // tiles_j) * _TILE, (t % tiles_j) * _TILE
        _transpose(src, i0, j0, dst, j0, i0, min(rows, i0 + _TILE) - i0, min(cols, j0 + _TILE) - j0)


def transpose(src, out=None):
    """``src.T`` as a new C-contiguous array (or into ``out``), for 2-D float32 ``src``.

    The layout change between the API's labels-first (L, H, W) and mean field's points-first
    (N, L): tiles of 32 x 32 values (each read and written a cache line at a time) in parallel,
    so that the pages of a new array are also faulted in by every thread, each moved as the
    fused pass moves its blocks (:func:`_transpose`). ``out``: C-contiguous float32.
    At 1000x750 with 21 labels it took 52 ms as NumPy's ``ascontiguousarray(q.T)``.
    """
    src = np.ascontiguousarray(src, dtype=np.float32)
    if out is None:
        out = np.empty(src.shape[::-1], np.float32)
    _transpose_kernel(src, out)
    return out


@njit(parallel=True, cache=True)
def _scale_rows_kernel(values, scale, out):
    n, c = values.shape
    for p in prange(n):
        s = scale[p]
        for ch in range(c):
            out[p, ch] = values[p, ch] * s


def scale_rows(values, scale, out, backend):
    """``out = values * scale[:, None]`` for (N, C) float32 values and (N,) scale."""
    if backend == "numpy":
        np.multiply(values, scale[:, None], out=out)
    else:
        _scale_rows_kernel(values, scale, out)
    return out


@njit(inline="always")
def _add_message(energy, row, lat, offsets, weights, alpha, p, coef, s, comp):
    """Point p's Potts or diagonal message into ``energy[row]`` for d + 1 = 6 or 3 (the bilateral
    and Gaussian kernels): :func:`crf.simd.add_sliced_message`, the slice kept in registers.

    The same slice as :func:`crf.lattice_cpu.slice_point`, the same complement and message as
    the loops of :func:`_slice_messages_block`; it saves their store and reload of the slice:
    the fused pass 7.4 -> 6.9 ms, a step 18.6-20.3 -> 18.0-19.5 ms (500x375, 21 labels, 2 threads).
    """
    c = lat.shape[1]
    if offsets.shape[1] == 6:
        add_sliced_message(energy, row, lat, (offsets[p, 0], offsets[p, 1], offsets[p, 2],
                                              offsets[p, 3], offsets[p, 4], offsets[p, 5]),
                           (weights[p, 0] * alpha, weights[p, 1] * alpha, weights[p, 2] * alpha,
                            weights[p, 3] * alpha, weights[p, 4] * alpha, weights[p, 5] * alpha), c, coef, s, comp)
    else:
        add_sliced_message(energy, row, lat, (offsets[p, 0], offsets[p, 1], offsets[p, 2]),
                           (weights[p, 0] * alpha, weights[p, 1] * alpha, weights[p, 2] * alpha), c, coef, s, comp)


@njit(inline="always")
def _slice_messages_block(lats, offsets, weights, alphas, posts, coefs, mus, comps, u, q_out, labels_major,
                          aheads, p0, p1, last, energy, sliced, block, top, total, bits):
    """Points ``p0`` to ``p1 - 1`` of :func:`_slice_messages_kernel` (uint64), with its scratch arrays."""
    n_labels = u.shape[1]
    n_kernels = len(lats)
    point = sliced[0]  # (L,): the point's slice, written by slice_point as row 0 of sliced (1, L)
    for p in range(p0, p1):
        for lab in range(n_labels):
            energy[p - p0, lab] = -u[p, lab]
    for m in range(n_kernels):
        lat, off, wt, post, coef, mu = lats[m], offsets[m], weights[m], posts[m], coefs[m], mus[m]
        ahead, d1 = np.uint64(aheads[m]), off.shape[1]
        in_registers = mu.shape[0] == 0 and (d1 == 6 or d1 == 3)  # see _add_message
        for p in range(p0, p1):
            if ahead > 0 and p + ahead < last:  # ask for the rows of a point a few ahead (crf.prefetch)
                for k in range(d1):
                    prefetch_row(lat, off[p + ahead, k])
            s = post[p] if post.shape[0] > 0 else np.float32(1.0)
            comp = comps[m][p] if lat.shape[1] < n_labels else np.float32(0.0)
            if in_registers:
                _add_message(energy, p - p0, lat, off, wt, alphas[m], p, coef, s, comp)
                continue
            slice_point(lat, off, wt, alphas[m], p, sliced, 0)
            if lat.shape[1] < n_labels:  # the last label: K pre minus the others (Q sums to 1)
                point[n_labels - 1] = comp - row_sum(sliced, 0, n_labels - 1)
            row = energy[p - p0]
            if mu.shape[0] == 0:  # Potts or diagonal: one coefficient per label
                for lab in range(n_labels):
                    row[lab] += (s * coef[0, lab]) * point[lab]
            else:
                sc = s * coef[0, 0]
                for lab in range(n_labels):
                    acc = np.float32(0.0)
                    for k in range(n_labels):
                        acc += point[k] * mu[k, lab]
                    row[lab] -= sc * acc
    _transpose(energy, 0, 0, block, 0, 0, p1 - p0, n_labels)
    _softmax_block(block, p1 - p0, q_out, p0, top, total, bits, labels_major)


@njit(parallel=True, cache=True)
def _slice_messages_kernel(lats, offsets, weights, alphas, posts, coefs, mus, comps, u, q_out, labels_major,
                           aheads, counters, n_workers):
    """Per block of points: slice every kernel's lattice, add its message to -U, softmax.

    Kernel m adds ``post[p] * coefs[m][0, l] * slice_m(p, l)`` to the energy of label l when
    ``mus[m]`` is empty (Potts and diagonal penalties: ``coefs`` (1, L) holds the weight, the
    sign and the penalty), else ``-post[p] * coefs[m][0, 0] * (slice_m(p) @ mus[m])``;
    ``slice_m`` is :func:`crf.lattice_cpu.slice_point` with the lattice's ``alphas[m]``. A
    lattice of L - 1 channels holds all labels but the last, whose slice is ``comps[m][p]``
    minus the others' (summed as :func:`crf.simd.row_sum` sums).
    The loop over kernels is outside the loop over a block's points, so that each kernel's
    arrays are picked once per block. The lattice rows of point p + ``aheads[m]`` are
    prefetched for kernel m (0: none). A thread that is done with its blocks takes over those
    of a slower one (:mod:`crf.dynamic`).
    """
    n, n_labels = u.shape
    last = np.uint64(n)  # unsigned, as the blocks (no float64 mixing)
    n_blocks = (last + np.uint64(_BLOCK - 1)) // np.uint64(_BLOCK)
    for worker in prange(n_workers):
        energy = np.empty((_BLOCK, n_labels), np.float32)  # a block's energies, points first
        sliced = np.empty((1, n_labels), np.float32)  # one point's slice
        block = np.empty((n_labels, _BLOCK), np.float32)  # the same, label-major, for the softmax
        top, total = np.empty(_BLOCK, np.float32), np.empty(_BLOCK, np.float32)
        bits = np.empty(_BLOCK, np.int32)
        while True:
            b = next_block(counters, worker, n_blocks)
            if b >= n_blocks:
                break
            p0, p1 = span(b, _BLOCK, n)
            _slice_messages_block(lats, offsets, weights, alphas, posts, coefs, mus, comps, u, q_out,
                                  labels_major, aheads, p0, p1, last, energy, sliced, block, top, total, bits)


_NO_SCALE = np.empty(0, np.float32)


def _message_coefficients(kernel, n_labels):
    """``(coefs (1, L), mu)`` of one kernel for :func:`_slice_messages_kernel`.

    Potts ``s (1 - I)``: ``+ w s`` for every label (the per-point constant dropped, see the
    module docstring); diagonal ``diag(v)``: ``- w v``; a matrix: ``coefs[0, 0] = w`` and the
    matrix itself.
    """
    scale = np.float32(kernel.w)
    if kernel.kind == KIND_POTTS:
        return np.full((1, n_labels), scale * kernel.mu[0], np.float32), _NO_MATRIX
    if kernel.kind == KIND_DIAGONAL:
        return (-scale * kernel.mu).astype(np.float32).reshape(1, n_labels), _NO_MATRIX
    return np.full((1, n_labels), scale, np.float32), np.ascontiguousarray(kernel.mu, np.float32)


_NO_MATRIX = np.empty((0, 0), np.float32)


def slice_messages_cpu(lats, kernels, u, q_out, labels_major=False, complements=None):
    """The update after the blur: ``q_out = softmax(-U - sum_m w_m (N_m slice_m(lat_m)) mu_m)``.

    Parameters
    ----------
    lats : list of ndarray of shape (M_m+1, L) or (M_m+1, L-1), float32
        Every kernel's blurred lattice values (:func:`crf.lattice.splat_blur_cpu`); L - 1
        channels when Q's rows sum to one, with ``complements``.
    kernels : list of crf.densecrf.Kernel
        Their lattices, weights, penalties and ``post`` normalisations.
    u : ndarray of shape (N, L), float32
        The unary energies.
    q_out : ndarray of shape (N, L), or (L, N) with ``labels_major``, float32
        Written: the new Q; a points-first (N, L - 1) gets all labels but the last (the narrow
        Q of :meth:`crf.densecrf.HostRunner.start`).
    labels_major : bool
        Write Q labels first, as :class:`crf.DenseCRF` returns it: the softmax holds each
        block labels first anyway, so the last update needs no transpose after it.
    complements : list of ndarray of shape (N,), float32, or None
        With lattices of L - 1 channels: every kernel's filter of what its splat sums over
        the labels (``K_m pre_m``; :meth:`crf.densecrf.HostRunner.step`), from which the
        last label's slice is the others' subtracted.
    """
    n_labels = u.shape[1]
    coefs, mus = zip(*(_message_coefficients(k, n_labels) for k in kernels))
    _slice_messages_kernel(
        tuple(lats), tuple(k.lattice.offsets for k in kernels), tuple(k.lattice.weights for k in kernels),
        np.array([slice_alpha(k.lattice.d) for k in kernels], np.float32),
        tuple(_NO_SCALE if k.post is None else k.post for k in kernels), coefs, mus,
        tuple(_NO_SCALE for _ in kernels) if complements is None else tuple(complements),
        u, q_out, labels_major, np.array([prefetch_distance(lat, config.AHEAD_POINTS) for lat in lats], np.int64),
        *dynamic.schedule())
