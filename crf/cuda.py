"""The dense CRF on a CUDA GPU: inputs, lattice filter and mean field, all on the device.

With ``backend="cuda"`` nothing of size N (pixels) is computed on the CPU: the unary is
checked and laid out points first by a kernel, the features are made from the image by
a kernel, the lattice is built on the device (:mod:`crf.cuda_build`), and Q stays there
through every iteration. Kernels, one thread per item, grid-stride loops, ceil-divided
grids:

unary      one thread per point: (L, H, W) -> (N, L) with the checks of
           :func:`crf.densecrf.check_unary` (finite; not probabilities) as flags;
features   one thread per point: ``(x, y) / theta`` or ``(x, y) / theta_alpha, RGB /
           theta_beta``, divided in float32 as the host does;
splat      a gather over each vertex's CSR entries (``starts``, ``splat_point``,
           ``splat_weight``), so no atomics, in two phases for balance: one thread
           per (segment of ``crf.config.CUDA_SPLAT_SEGMENT`` consecutive entries,
           channel) sums each vertex's run in order, then one thread per (vertex,
           channel) adds up the runs of a vertex that spans segments (in the last
           bits, such a sum can differ from the CPU's, which adds entry by entry);
blur       one thread per (vertex, channel) and axis: ``v + 0.5 (v_n1 + v_n2)``,
           axes 0..d in order (d..0 for the transpose), row M kept at zero;
slice      one thread per (point, channel): ``alpha sum_k w_k v[vertex_k]``,
           times the normalisation ``post`` if given;
message    one thread per (point, label), fused with the slice for the Potts and
           diagonal penalties: ``energy = +-base - w (N K Q) mu``;
softmax    one thread per point over its labels.

Splat and blurs also run as one cooperative kernel, the same items with a grid-wide
barrier (``cuda.cg.this_grid().sync()``) between the stages and a grid no larger than the
GPU holds at once; it gives the same bits, and where the GPU or the CUDA installation
cannot launch it (grid sync links libcudadevrt) the stages launch one by one
(:func:`launch_mode`, ``crf.config.CUDA_COOPERATIVE``). One mean-field iteration with
the two DeepLab kernels is then 5 launches (splat-blur and slice-message per kernel, one
softmax) instead of 16, and allocates nothing: the runner keeps its buffers. Arrays keep
the CPU layout: values (N, C), lattice values (M+1, C), float32.

This module is imported lazily (by ``backend="cuda"`` only), so ``import crf``
never loads ``numba.cuda``.
"""
import math
import warnings

import numpy as np
from numba import cuda

from crf import config
from crf.backend import is_device_array
from crf.cuda_build import StageClock, build_device, fill_kernel
from crf.lattice_reference import slice_alpha


def _grid(n):
    threads = config.CUDA_THREADS
    return max(1, min(config.CUDA_MAX_BLOCKS, (n + threads - 1) // threads)), threads


# ------------------------------------------------------------------------------ inputs

@cuda.jit(cache=True)
def _unary_kernel(unary, u, flags):
    """(L, H, W) energies of any strides -> (N, L) ``u``; flags[0]: the first non-finite flat index
    (L*N if none), flags[1]: 1 if some value lies outside [0, 1], flags[2]: 1 if some pixel's sum is
    not 1."""
    n_labels, h, w = unary.shape
    n = h * w
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, stride):
        row = p // w
        col = p - row * w
        total = np.float64(0.0)
        outside = False
        for lab in range(n_labels):
            v = unary[lab, row, col]  # 3-D indexing: a transposed (F-ordered) device array is read right
            u[p, lab] = v
            if not math.isfinite(v):
                cuda.atomic.min(flags, 0, lab * n + p)
            if v < 0 or v > 1:
                outside = True
            total += v
        if outside:
            flags[1] = 1
        if abs(total - 1.0) > 1e-3:
            flags[2] = 1


def check_unary(unary):
    """:func:`crf.densecrf.check_unary` on the device: (L, H, W) float32 -> (N, L) device energies.

    Parameters
    ----------
    unary : ndarray or device array of shape (L, H, W), float32

    Returns
    -------
    device array of shape (N, L), float32, N = H*W (pixel ``row * W + column``)
    """
    _require_gpu()
    shape = tuple(unary.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"unary must have shape (L, H, W) (labels, height, width), got {shape}")
    if is_device_array(unary):
        if unary.dtype != np.float32:
            raise TypeError(f"a device unary must be float32, got dtype {unary.dtype}")
        d_unary = unary
    else:
        array = np.asarray(unary)
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise TypeError(f"unary must hold real numbers, got dtype {array.dtype}")
        d_unary = cuda.to_device(np.ascontiguousarray(array, dtype=np.float32))
    n_labels, h, w = shape
    n = h * w
    u = cuda.device_array((n, n_labels), np.float32)
    flags = cuda.to_device(np.array([n_labels * n, 0, 0], np.int32))
    _unary_kernel[_grid(n)](d_unary, u, flags)
    first_bad, outside, off_one = (int(f) for f in flags.copy_to_host())
    if first_bad < n_labels * n:
        lab, p = divmod(first_bad, n)
        raise ValueError(f"unary energies must be finite, got a non-finite value at (label, row, col) = "
                         f"{(lab, p // w, p % w)}; clip probabilities before taking -log "
                         f"(see crf.unary_from_softmax)")
    if n_labels >= 2 and not outside and not off_one:
        raise ValueError("unary looks like probabilities (values in [0, 1] that sum to 1 over the "
                         "labels), expected energies such as -log P: use "
                         "crf.unary_from_softmax(probabilities)")
    return u


@cuda.jit(cache=True)
def _crop_kernel(scores, sign, out):
    n_labels, h, w = out.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n_labels * h * w, stride):
        lab = idx // (h * w)
        rest = idx - lab * h * w
        row = rest // w
        out[lab, row, rest - row * w] = sign * scores[lab, row, rest - row * w]


def crop(scores, height, width, negate=False):
    """The top-left ``height`` x ``width`` of device (L, H', W') scores as a new (L, H, W) array;
    with ``negate``, ``-scores``: DeepLab's unary."""
    if len(scores.shape) != 3 or scores.shape[1] < height or scores.shape[2] < width \
            or scores.dtype != np.float32:
        raise ValueError(f"scores must be a float32 device array (L, H', W') with H' >= {height} and "
                         f"W' >= {width} (the image's size), got {tuple(scores.shape)} {scores.dtype}")
    out = cuda.device_array((scores.shape[0], height, width), np.float32)
    _crop_kernel[_grid(out.size)](scores, np.float32(-1.0 if negate else 1.0), out)
    return out


@cuda.jit(cache=True)
def _grid_features_kernel(width, theta, out):
    n = out.shape[0]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, stride):
        row = p // width
        out[p, 0] = np.float32(p - row * width) / theta
        out[p, 1] = np.float32(row) / theta


@cuda.jit(cache=True)
def _bilateral_features_kernel(image, theta_alpha, theta_beta, out):
    h, w, c = image.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, h * w, stride):
        row = p // w
        col = p - row * w
        out[p, 0] = np.float32(col) / theta_alpha
        out[p, 1] = np.float32(row) / theta_alpha
        for ch in range(c):
            out[p, 2 + ch] = np.float32(image[row, col, ch]) / theta_beta


def gaussian_features(height, width, theta_gamma):
    """:func:`crf.densecrf.gaussian_features` made on the device: (H*W, 2) float32."""
    out = cuda.device_array((height * width, 2), np.float32)
    _grid_features_kernel[_grid(height * width)](width, np.float32(theta_gamma), out)
    return out


def bilateral_features(image, theta_alpha, theta_beta):
    """:func:`crf.densecrf.bilateral_features` made on the device from an (H, W, C) image (host
    or device, already checked): (H*W, 2+C) float32."""
    d_image = image if is_device_array(image) else cuda.to_device(np.ascontiguousarray(image))
    h, w, c = d_image.shape
    out = cuda.device_array((h * w, 2 + c), np.float32)
    _bilateral_features_kernel[_grid(h * w)](d_image, np.float32(theta_alpha), np.float32(theta_beta), out)
    return out


@cuda.jit(cache=True)
def _inverse_norm_kernel(k1, root, tiny, out):
    """``1 / (K 1 + tiny)`` (or its square root) in float64, rounded to float32, as the host does."""
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, out.shape[0], stride):
        v = np.float64(k1[p, 0]) + tiny
        out[p] = np.float32(1.0 / (math.sqrt(v) if root else v))


def inverse_norm(k1, root, tiny):
    """Device (N, 1) ``K 1`` -> device (N,) float32 ``1 / (K 1 + tiny)``, or ``1 / sqrt(...)``."""
    out = cuda.device_array(k1.shape[0], np.float32)
    _inverse_norm_kernel[_grid(k1.shape[0])](k1, root, np.float64(tiny), out)
    return out


@cuda.jit(cache=True)
def _labels_major_kernel(q, out):
    n, n_labels = q.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * n_labels, stride):
        lab = idx // n
        p = idx - lab * n
        out[lab, p] = q[p, lab]


def labels_major(q, height, width):
    """Device (N, L) -> device (L, H, W) float32."""
    n, n_labels = q.shape
    out = cuda.device_array((n_labels, n), np.float32)
    _labels_major_kernel[_grid(n * n_labels)](q, out)
    return out.reshape(n_labels, height, width)


# ------------------------------------------------------------------------------ the filter

@cuda.jit(device=True, inline=True)
def _splat_segments_range(values, pre, starts, points, point_weights, segment_vertex, seg_len, lat, head,
                          tail, start, stride):
    """Items ``start, start + stride, ...`` of the splat's first phase: one item per (segment,
    channel), a segment being ``seg_len`` consecutive CSR entries (vertices in order, each
    vertex's points in order; the last segment may be shorter).

    Each run of one vertex's entries in the segment is summed in order. A vertex whose entries
    all lie in the segment gets its value in ``lat``; the run that holds the segment's first
    entry goes to ``head[s]``, the one that holds its last entry to ``tail[s]`` (a run that
    fills the whole segment: ``head[s]``), for :func:`_splat_combine_range`.
    """
    c = values.shape[1]
    n_entries = points.shape[0]
    n_segments = segment_vertex.shape[0]
    scaled = pre.shape[0] > 0
    for idx in range(start, n_segments * c, stride):
        seg = idx // c
        ch = idx - seg * c
        e0 = seg * seg_len
        e1 = min(e0 + seg_len, n_entries)
        v = segment_vertex[seg]
        e = e0
        while e < e1:
            run_end = min(starts[v + 1], e1)
            acc = np.float32(0.0)
            for f in range(e, run_end):
                p = points[f]
                w = point_weights[f]
                if scaled:
                    w = w * pre[p]
                acc += w * values[p, ch]
            if e == starts[v] and run_end == starts[v + 1]:
                lat[v, ch] = acc
            elif e == e0:
                head[seg, ch] = acc
            else:  # a run that is neither whole nor first ends the segment
                tail[seg, ch] = acc
            e = run_end
            v += 1


@cuda.jit(device=True, inline=True)
def _splat_combine_range(starts, seg_len, head, tail, lat, start, stride):
    """Items ``start, start + stride, ...`` of the splat's second phase: one item per (vertex,
    channel). A vertex whose entries span segments s0 < s1 adds its run in s0 (``head[s0]``
    if the vertex starts that segment, else ``tail[s0]``) and ``head[s]`` of s0 < s <= s1,
    in order; the others were written by the first phase. Row M, the absent neighbour, is zero.
    """
    m = starts.shape[0] - 1
    c = lat.shape[1]
    for idx in range(start, (m + 1) * c, stride):
        v = idx // c
        ch = idx - v * c
        if v == m:
            lat[v, ch] = np.float32(0.0)
            continue
        first, last = starts[v], starts[v + 1] - 1
        s0 = first // seg_len
        s1 = last // seg_len
        if s0 != s1:
            acc = head[s0, ch] if first == s0 * seg_len else tail[s0, ch]
            for seg in range(s0 + 1, s1 + 1):
                acc += head[seg, ch]
            lat[v, ch] = acc


@cuda.jit(device=True, inline=True)
def _blur_range(src, n1, n2, dst, start, stride):
    """Items ``start, start + stride, ...`` of one blur pass along one axis (``n1``, ``n2``: (M,))."""
    m = n1.shape[0]
    c = src.shape[1]
    for idx in range(start, (m + 1) * c, stride):
        v = idx // c
        ch = idx - v * c
        if v < m:
            dst[v, ch] = src[v, ch] + np.float32(0.5) * (src[n1[v], ch] + src[n2[v], ch])
        else:
            dst[v, ch] = np.float32(0.0)


@cuda.jit(cache=True)
def _segment_vertex_kernel(starts, seg_len, segment_vertex):
    """``segment_vertex[s]``: the vertex that holds entry ``s * seg_len``, for every segment."""
    m = starts.shape[0] - 1
    for v in range(cuda.grid(1), m, cuda.gridsize(1)):
        for seg in range((starts[v] + seg_len - 1) // seg_len, (starts[v + 1] + seg_len - 1) // seg_len):
            segment_vertex[seg] = v


@cuda.jit(cache=True)
def _splat_segments_kernel(values, pre, starts, points, point_weights, segment_vertex, seg_len, lat, head, tail):
    _splat_segments_range(values, pre, starts, points, point_weights, segment_vertex, seg_len, lat, head, tail,
                          cuda.grid(1), cuda.gridsize(1))


@cuda.jit(cache=True)
def _splat_combine_kernel(starts, seg_len, head, tail, lat):
    _splat_combine_range(starts, seg_len, head, tail, lat, cuda.grid(1), cuda.gridsize(1))


@cuda.jit(cache=True)
def _blur_kernel(src, n1, n2, dst):
    _blur_range(src, n1, n2, dst, cuda.grid(1), cuda.gridsize(1))


@cuda.jit(cache=True)
def _splat_blur_kernel(values, pre, starts, points, point_weights, segment_vertex, seg_len, n1, n2, reverse,
                       lat, tmp, head, tail):
    """The splat's two phases and the d+1 blur passes in one cooperative launch, a grid-wide
    barrier between stages: the same items and the same arithmetic as the per-stage kernels,
    so the same bits. The result is in ``lat`` for an even number of passes, else in ``tmp``."""
    grid = cuda.cg.this_grid()
    start, stride = cuda.grid(1), cuda.gridsize(1)
    _splat_segments_range(values, pre, starts, points, point_weights, segment_vertex, seg_len, lat, head, tail,
                          start, stride)
    grid.sync()  # every thread reaches every barrier: the loops have no early exit
    _splat_combine_range(starts, seg_len, head, tail, lat, start, stride)
    d1 = n1.shape[0]
    for i in range(d1):
        j = d1 - 1 - i if reverse else i
        grid.sync()
        if i % 2 == 0:
            _blur_range(lat, n1[j], n2[j], tmp, start, stride)
        else:
            _blur_range(tmp, n1[j], n2[j], lat, start, stride)


@cuda.jit(device=True, inline=True)
def _slice_one(lat, offsets, weights, alpha, post, p, ch):
    acc = np.float32(0.0)
    for k in range(offsets.shape[1]):
        acc += weights[p, k] * alpha * lat[offsets[p, k], ch]
    if post.shape[0] > 0:
        acc *= post[p]
    return acc


@cuda.jit(cache=True)
def _slice_kernel(lat, offsets, weights, alpha, post, out):
    n = offsets.shape[0]
    c = lat.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * c, stride):
        p = idx // c
        ch = idx - p * c
        out[p, ch] = _slice_one(lat, offsets, weights, alpha, post, p, ch)


@cuda.jit(cache=True)
def _slice_message_kernel(lat, offsets, weights, alpha, post, w, kind, mu, base, base_sign, energy):
    """The slice of one kernel and its message for the Potts (kind 0) and diagonal (kind 1) penalties."""
    n, n_labels = energy.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * n_labels, stride):
        p = idx // n_labels
        lab = idx - p * n_labels
        qf = _slice_one(lat, offsets, weights, alpha, post, p, lab)
        if kind == 0:
            message = -w * mu[0, 0] * qf  # Potts: + w s (N K Q), the per-point constant dropped
        else:
            message = w * mu[0, lab] * qf
        energy[p, lab] = base_sign * base[p, lab] - message


@cuda.jit(cache=True)
def _message_kernel(qf, w, mu, base, base_sign, energy):
    """The message of a full (L, L) penalty: ``energy = +-base - w qf mu``."""
    n, n_labels = qf.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * n_labels, stride):
        p = idx // n_labels
        lab = idx - p * n_labels
        acc = np.float32(0.0)
        for k in range(n_labels):
            acc += qf[p, k] * mu[k, lab]
        energy[p, lab] = base_sign * base[p, lab] - w * acc


@cuda.jit(cache=True)
def _softmax_kernel(energy, sign, out):
    n, n_labels = energy.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, stride):
        top = sign * energy[p, 0]
        for lab in range(1, n_labels):
            top = max(top, sign * energy[p, lab])
        total = np.float32(0.0)
        for lab in range(n_labels):
            e = math.exp(sign * energy[p, lab] - top)
            out[p, lab] = e
            total += e
        for lab in range(n_labels):
            out[p, lab] = out[p, lab] / total


_EMPTY = np.empty(0, np.float32)

#: Why cooperative launches are off in this process (the first failure), or None.
_cooperative_failure = None


def _cooperative_grid(kernel, args, n):
    """(specialised kernel, grid) to launch a kernel that syncs its whole grid over n items, or None.

    A grid-wide barrier needs every block resident at once, so the grid is the ceil-divided
    one capped at what the GPU holds of this kernel (``max_cooperative_grid_blocks``); the
    grid-stride loops cover the rest. Grid sync links CUDA's device runtime (libcudadevrt);
    where that or the cooperative launch is missing, the failure is recorded, warned about
    once, and every later launch takes the per-stage kernels (:func:`launch_mode`).
    """
    global _cooperative_failure
    if _cooperative_failure is not None:
        return None
    blocks, threads = _grid(n)
    try:
        specialised = kernel.specialize(*args)
        overloads = specialised.overloads  # one compiled kernel (the simulator: a stand-in)
        most = overloads[next(iter(overloads), None)].max_cooperative_grid_blocks(threads)
        if most < 1:
            raise RuntimeError(f"the GPU holds no block of {threads} threads of {kernel.py_func.__name__} at once")
    except Exception as error:  # a missing libcudadevrt, a driver without cooperative launch, ...
        _cooperative_failure = f"{type(error).__name__}: {error}"
        warnings.warn(f"crf.cuda: cooperative launches are unavailable ({_cooperative_failure}); "
                      f"the lattice filter launches each stage on its own", RuntimeWarning, stacklevel=3)
        return None
    return specialised, (min(blocks, most), threads)


def launch_mode():
    """How the lattice filter launches here: ``"cooperative"`` (splat and blurs in one launch),
    ``"per-stage"`` (one launch per stage, by ``crf.config.CUDA_COOPERATIVE``), or
    ``"per-stage (<why cooperative failed>)"``."""
    if not config.CUDA_COOPERATIVE:
        return "per-stage"
    if _cooperative_failure is not None:
        return f"per-stage ({_cooperative_failure})"
    return "cooperative"


def _require_gpu():
    if not cuda.is_available():  # true in the simulator as well
        raise ValueError("backend='cuda' needs a CUDA GPU, and numba.cuda.is_available() is false; "
                         "use backend='cpu' (or 'auto', which picks the GPU only when one works)")


class DeviceLattice:
    """A permutohedral lattice whose arrays live on the GPU.

    Made by :func:`build` (built on the device) or :meth:`from_host` (a CPU-built
    :class:`crf.lattice.Lattice`, uploaded). The arrays follow the layout of
    :mod:`crf.lattice` (``offsets``, ``weights``, ``n1``, ``n2``, ``starts``,
    ``splat_point``, ``splat_weight``), as device arrays; ``d``, ``n_points`` (N) and
    ``n_vertices`` (M) are ints. :meth:`filter` has the signature of
    :meth:`crf.lattice.Lattice.filter`; ``crf.lattice.Lattice.from_device(lattice)``
    copies it to the host.
    """

    def __init__(self, offsets, weights, n1, n2, starts, splat_point, splat_weight, built=None):
        _require_gpu()
        self.offsets, self.weights, self.n1, self.n2 = offsets, weights, n1, n2
        self.starts, self.splat_point, self.splat_weight = starts, splat_point, splat_weight
        self.n_points, d1 = offsets.shape
        self.d = d1 - 1
        self.n_vertices = n1.shape[1]
        self.alpha = slice_alpha(self.d)
        self.axes = [(n1[j], n2[j]) for j in range(self.d + 1)]  # views made once: a slice costs a launch's time
        self.empty = cuda.to_device(_EMPTY)
        self._built = built  # the device build's own record (keys on demand), if built here
        self._source = None  # the host arrays, if uploaded from a host lattice
        self._scratch = {}
        self._segments = {}  # seg_len -> the vertex of each segment's first entry
        self._cooperative = {}  # (C, strides, launch shape) -> (specialised kernel, grid), or None

    @classmethod
    def from_host(cls, lattice):
        """Upload a :class:`crf.lattice.Lattice`."""
        dev = cls(*(cuda.to_device(a) for a in (lattice.offsets, lattice.weights, lattice.n1, lattice.n2,
                                                 lattice.starts, lattice.splat_point, lattice.splat_weight)))
        dev._source = (lattice.offsets, lattice.weights, lattice.keys, lattice.n1, lattice.n2, lattice.starts,
                       lattice.splat_point, lattice.splat_weight)
        return dev

    def __repr__(self):
        return f"DeviceLattice(d={self.d}, n_points={self.n_points}, n_vertices={self.n_vertices})"

    def nbytes(self):
        """Bytes held by the lattice's arrays on the device."""
        return sum(a.nbytes for a in (self.offsets, self.weights, self.n1, self.n2, self.starts,
                                      self.splat_point, self.splat_weight))

    def host_arrays(self):
        """Host copies of the arrays in :class:`crf.lattice.Lattice`'s constructor order (for
        :meth:`crf.lattice.Lattice.from_device`)."""
        if self._built is not None:
            return self._built.host_arrays()
        return self._source

    def segments(self):
        """(``segment_vertex``, ``seg_len``) of the splat's segments of ``crf.config.CUDA_SPLAT_SEGMENT``
        entries: the vertex that holds each segment's first entry (made once per length)."""
        seg_len = int(config.CUDA_SPLAT_SEGMENT)
        if seg_len < 1:
            raise ValueError(f"crf.config.CUDA_SPLAT_SEGMENT must be a positive int, got {seg_len}")
        if seg_len not in self._segments:
            n_entries = self.splat_point.shape[0]
            segment_vertex = cuda.device_array((n_entries + seg_len - 1) // seg_len, np.int32)
            _segment_vertex_kernel[_grid(self.n_vertices)](self.starts, seg_len, segment_vertex)
            self._segments[seg_len] = segment_vertex
        return self._segments[seg_len], seg_len

    def scratch(self, channels, n_segments):
        """Two (M+1, C) buffers for the lattice values and the splat's two (segments, C) partial sums."""
        key = (channels, n_segments)
        if key not in self._scratch:
            shape = (self.n_vertices + 1, channels)
            self._scratch[key] = (cuda.device_array(shape, np.float32), cuda.device_array(shape, np.float32),
                                  cuda.device_array((n_segments, channels), np.float32),
                                  cuda.device_array((n_segments, channels), np.float32))
        return self._scratch[key]

    def splat_blur(self, values, pre=None, reverse=False):
        """Device (N, C) values (times ``pre`` (N,) if given) -> the blurred (M+1, C) lattice values,
        in one of this lattice's scratch buffers.

        The splat runs in two phases so that a vertex with thousands of points (a flat image
        region) does not leave one thread summing them all while the rest of the GPU waits:
        segments of ``crf.config.CUDA_SPLAT_SEGMENT`` consecutive CSR entries, then the
        vertices that span segments. One cooperative launch where the GPU allows it
        (:func:`launch_mode`), else d+3 launches; the two give the same bits.
        """
        m, c = self.n_vertices, values.shape[1]
        segment_vertex, seg_len = self.segments()
        n_segments = segment_vertex.shape[0]
        lat, tmp, head, tail = self.scratch(c, n_segments)
        pre = self.empty if pre is None else pre
        d1 = self.d + 1
        if config.CUDA_COOPERATIVE:
            args = (values, pre, self.starts, self.splat_point, self.splat_weight, segment_vertex, seg_len,
                    self.n1, self.n2, bool(reverse), lat, tmp, head, tail)
            key = (c, seg_len, values.strides, pre.strides, config.CUDA_THREADS, config.CUDA_MAX_BLOCKS)
            if key not in self._cooperative:
                self._cooperative[key] = _cooperative_grid(_splat_blur_kernel, args,
                                                           max(m + 1, n_segments) * c)
            launch = self._cooperative[key]
            if launch is not None:
                kernel, grid = launch
                kernel[grid](*args)
                return lat if d1 % 2 == 0 else tmp
        _splat_segments_kernel[_grid(n_segments * c)](values, pre, self.starts, self.splat_point,
                                                      self.splat_weight, segment_vertex, seg_len, lat, head, tail)
        grid = _grid((m + 1) * c)
        _splat_combine_kernel[grid](self.starts, seg_len, head, tail, lat)
        for j in (range(d1 - 1, -1, -1) if reverse else range(d1)):
            _blur_kernel[grid](lat, *self.axes[j], tmp)
            lat, tmp = tmp, lat
        return lat

    def filter_into(self, values, out, pre=None, post=None, reverse=False):
        """Device (N, C) values -> device (N, C) ``out`` = post * K (pre * values)."""
        lat = self.splat_blur(values, pre, reverse)
        _slice_kernel[_grid(values.shape[0] * values.shape[1])](
            lat, self.offsets, self.weights, self.alpha, self.empty if post is None else post, out)
        return out

    def filter(self, values, reverse=False, backend="cuda"):
        """:meth:`crf.lattice.Lattice.filter` of this lattice: (N, C) values, host or device.

        Returns a device array for a device array in, else a NumPy array.
        """
        if backend not in ("cuda", "auto"):
            raise ValueError(f"a lattice on the GPU filters with backend='cuda', got {backend!r}; "
                             f"copy it with crf.Lattice.from_device for the CPU")
        return lattice_filter(self, values, reverse)


def device_lattice(lattice):
    """The GPU form of a lattice: a :class:`DeviceLattice` as it is, a host lattice's device copy."""
    return lattice if isinstance(lattice, DeviceLattice) else lattice.on_device()


def build(features, timings=None):
    """Build the lattice of (N, d) float32 features on the GPU (:mod:`crf.cuda_build`).

    Parameters
    ----------
    features : ndarray (checked by the caller) or device array of shape (N, d), float32
    timings : dict, optional
        A synchronised profile of the build's stages (:func:`crf.cuda_build.build_device`).

    Returns
    -------
    DeviceLattice
    """
    _require_gpu()
    arrays = build_device(features if is_device_array(features) else cuda.to_device(features), timings)
    return DeviceLattice(arrays.offsets, arrays.weights, arrays.n1, arrays.n2, arrays.starts,
                         arrays.splat_point, arrays.splat_weight, built=arrays)


def norm_of(lattice):
    """``K 1`` of a :class:`DeviceLattice`: a device (N, 1) float32 array (the normaliser's input)."""
    ones = cuda.device_array((lattice.n_points, 1), np.float32)
    fill_kernel[_grid(lattice.n_points)](ones.reshape(lattice.n_points), np.float32(1.0))
    return lattice.filter_into(ones, cuda.device_array((lattice.n_points, 1), np.float32))


def lattice_filter(lattice, values, reverse=False):
    """:meth:`crf.lattice.Lattice.filter` on the GPU.

    Parameters
    ----------
    lattice : crf.lattice.Lattice or DeviceLattice
    values : ndarray or CUDA device array of shape (N, C), float32
        Host arrays come checked by the caller (:meth:`crf.lattice.Lattice.filter`).
    reverse : bool

    Returns
    -------
    The filtered (N, C) float32 values: a device array for a device array in,
    else a NumPy array.
    """
    dev = device_lattice(lattice)
    on_device = is_device_array(values)
    if on_device:
        if values.ndim != 2 or values.shape[0] != dev.n_points or values.dtype != np.float32:
            raise ValueError(f"values must be a float32 device array of shape (N={dev.n_points}, C), "
                             f"got {values.shape} {values.dtype}")
        d_values = values
    else:
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[0] != dev.n_points:
            raise ValueError(f"values must have shape (N={dev.n_points}, C), got {values.shape}")
        d_values = cuda.to_device(np.ascontiguousarray(values, dtype=np.float32))
    out = cuda.device_array(d_values.shape, np.float32)
    dev.filter_into(d_values, out, reverse=reverse)
    return out if on_device else out.copy_to_host()


class MeanFieldRunner:
    """The mean-field loop of :class:`crf.DenseCRF` with U and Q kept on the device.

    ``u`` is a host (N, L) array or already a device one (:func:`check_unary`);
    the kernels' lattices are :class:`DeviceLattice` objects or host lattices
    (uploaded once), their ``pre``/``post`` host or device (N,) arrays.
    """

    def __init__(self, u, kernels):
        _require_gpu()
        self.u = u if is_device_array(u) else cuda.to_device(np.ascontiguousarray(u, dtype=np.float32))
        self.shape = tuple(u.shape)
        self.kernels = []
        for kernel in kernels:
            pre = None if kernel.pre is None else self._as_device(kernel.pre)
            post = None if kernel.post is None else self._as_device(kernel.post)
            mu = cuda.to_device(np.ascontiguousarray(kernel.mu.reshape(-1, kernel.mu.shape[-1])))
            self.kernels.append((kernel, device_lattice(kernel.lattice), pre, post, mu))
        self._qf = cuda.device_array(self.shape, np.float32)
        self._energy = cuda.device_array(self.shape, np.float32)
        self._q = (cuda.device_array(self.shape, np.float32), cuda.device_array(self.shape, np.float32))

    def to_host(self, q):
        return q.copy_to_host() if is_device_array(q) else q

    def _next_buffer(self, q):
        """The Q buffer that is not ``q`` (so that a step never overwrites its input)."""
        return self._q[1] if q is self._q[0] else self._q[0]

    def start(self):
        q = self._next_buffer(None)
        _softmax_kernel[_grid(self.shape[0])](self.u, np.float32(-1.0), q)
        return q

    @staticmethod
    def _as_device(a):
        return a if is_device_array(a) else cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))

    def messages(self, q):
        """Every kernel's ``N_m K_m q`` as host (N, L) arrays (for the free energy)."""
        q = self._as_device(q)
        out = []
        for _, dev, pre, post, _ in self.kernels:
            dev.filter_into(q, self._qf, pre, post)
            out.append(self._qf.copy_to_host())
        return out

    def step(self, q, timings=None, sums_to_one=False):
        """One update; returns the new Q in one of the runner's two device buffers.

        ``sums_to_one`` is accepted for the host runner's signature: the GPU filters every label.

        ``timings``: a synchronised profile (:class:`crf.cuda_build.StageClock`) that gets
        the seconds of "splat+blur NAME" and "slice+message NAME" per kernel and "softmax".
        """
        q = self._as_device(q)
        if not self.kernels:
            return self.start()
        clock = StageClock(timings)
        grid = _grid(self.shape[0] * self.shape[1])
        for i, (kernel, dev, pre, post, mu) in enumerate(self.kernels):
            lat = dev.splat_blur(q, pre)
            clock(f"splat+blur {kernel.name}")
            base, sign = (self.u, np.float32(-1.0)) if i == 0 else (self._energy, np.float32(1.0))
            empty = dev.empty if post is None else post
            if kernel.kind == 2:  # a full penalty needs every label's slice first
                _slice_kernel[grid](lat, dev.offsets, dev.weights, dev.alpha, empty, self._qf)
                _message_kernel[grid](self._qf, np.float32(kernel.w), mu, base, sign, self._energy)
            else:
                _slice_message_kernel[grid](lat, dev.offsets, dev.weights, dev.alpha, empty,
                                            np.float32(kernel.w), kernel.kind, mu, base, sign, self._energy)
            clock(f"slice+message {kernel.name}")
        out = self._next_buffer(q)
        _softmax_kernel[_grid(self.shape[0])](self._energy, np.float32(1.0), out)
        clock("softmax")
        return out
