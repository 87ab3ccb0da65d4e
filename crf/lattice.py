"""The permutohedral lattice: fast high-dimensional Gaussian filtering.

Adams, Baek & Davis (Eurographics 2010) filter N points with features
``f`` (N, d) and values ``v`` (N, C) by the Gaussian
``(K v)_i ~ sum_j exp(-|f_i - f_j|^2 / 2) v_j`` in O(N d^2 + M d C) instead of
O(N^2 C). The lattice is **built once** per point set (one image and kernel)
and **filtered many times** (every mean-field iteration):

build
    1. *embed*: scale feature i by ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))`` and
       elevate it onto the hyperplane ``H_d = {x in R^(d+1) : sum x = 0}``;
    2. *enclosing simplex*: round every coordinate to the nearest multiple of
       d+1 (the "remainder-0" point), then repair the sum by the rank of the
       rounding residuals; the d+1 vertices of the enclosing simplex are the
       remainder-0 point shifted by the canonical simplex;
    3. *barycentric weights* of the point inside that simplex (they sum to 1);
    4. *hash* of the lattice points: each distinct vertex key (its first d
       coordinates; the last one is minus their sum) gets an index 0..M-1,
       in the order a pass over the points first meets it;
    5. *neighbours* of every vertex along each of the d+1 lattice axes
       (key -/+ 1 everywhere, -/+ (d+1) on the axis), ``M`` when absent;
    6. *splat index*: the CSR list vertex -> its (point, weight) entries, so
       that the splat is a gather and needs no atomics;
    7. (CPU, on first use) *blur chains* per axis, see the layout below.
    Steps 1-3, 5 and 7 run in parallel. The CPU hash (4) runs in parallel
    over contiguous blocks of points, each block with its own table (no
    shared writes, so no atomics); a sequential merge then inserts the
    blocks' distinct keys block after block, which is again first-seen
    order: the numbering does not depend on the number of threads. The
    merge handles only the blocks' distinct keys, a fraction of the
    N (d+1) corners. The counting sort of the splat index (6) counts and
    scatters per block of points in parallel, with a sequential scan over
    (vertex, block) in between that gives each block its own positions.
filter
    splat (each point adds ``weight * value`` to its d+1 vertices), blur (along
    axis j = 0..d in increasing order ``v + 0.5 (v_n1 + v_n2)``), slice
    (``alpha * sum_k weight_k * v[vertex_k]`` with ``alpha = 1/(1 + 2^-d)``).
    This is Kraehenbuehl's scaling (densecrf 2.x): the blur is a [1/2 1 1/2]
    kernel on each axis, not a normalised one.

Code: this module holds the public API (:class:`Lattice`, :func:`build`, the
input checks); :mod:`crf.lattice_reference` the NumPy reference,
:mod:`crf.lattice_cpu` the Numba CPU kernels, :mod:`crf.cuda_build` the GPU build and
:mod:`crf.cuda` the GPU filter.

Layout (all C-contiguous)
-------------------------
features : (N, d) float32, already divided by their standard deviations
offsets  : (N, d+1) int32, vertex index of each simplex corner of each point
weights  : (N, d+1) float32, barycentric weight of each corner
keys     : (M, d) int32, the first d coordinates of each vertex
n1, n2   : (d+1, M) int32, neighbour vertex along axis j (M = "none", a zero row)
starts   : (M+1,) int64, splat_point : (N (d+1),) int32 and splat_weight :
           (N (d+1),) float32, the splat CSR index: the entries of vertex v are
           ``splat_point[starts[v]:starts[v+1]]`` (points in increasing order)
           with their barycentric weights ``splat_weight[...]``
values   : (N, C) float32, points first: one point's channels are contiguous,
           which makes the splat and slice gathers read whole cache lines.
chains   : for the CPU blur, (d+1, M) int32 ``chain_order`` and (d+1, B+1)
           int64 ``chain_bounds`` (built on first use): along axis j the
           vertices form chains linked by n1/n2; ``chain_order[j]`` lists them
           chain after chain, the first vertex v of a chain stored as -(v+1),
           and ``chain_bounds[j]`` cuts that list into B blocks at chain
           starts. A chain is blurred in place, front to back, keeping the
           previous vertex's old value: one buffer instead of two, each row
           read and written once, blocks in parallel without races, and the
           same floating-point operations as the two-buffer blur of the NumPy
           reference and the CUDA kernels. Chain order visits rows out of
           memory order, which pays only while the lattice values stay in
           cache. For the bilateral lattice at 500x375 (180k vertices, 21
           labels: 15 MB; 2 threads) the six axes take 4.1 ms with two
           buffers, which read the vertices in order and prefetch their
           neighbours' rows (:mod:`crf.prefetch`), against 6.4 ms along chains
           even with prefetching (9.2 ms without). So the CPU blurs along
           chains only up to ``crf.config.CHAIN_BLUR_MAX_BYTES`` (512 KiB: small
           lattices) and with two buffers beyond; the bilateral lattice's
           chains are then not built.
lattice values during the filter: (M+1, C) float32, row M is always zero
           (the NumPy reference and CUDA read it for an absent neighbour).

Accuracy (measured by tests/crf/test_lattice.py against crf.exact on random
point clouds, values in [0, 1]): the per-point normalised filter ``D^-1 K v``
(D = diag(K 1)) differs from the exact normalised Gaussian by at most 0.12
(mean 0.011) in d = 2 and at most 0.29 (mean 0.059) in d = 5; the error is
largest where points lie about one standard deviation apart, and far smaller
for dense points (under 5e-3). ``D^-1 K c = c`` holds for constants to 1e-6.
The blur is only approximately symmetric because its axes run in a fixed
order: ``<K a, b> = <a, K_reverse b>`` holds to rounding (1e-5 relative),
while ``|<K a, b> - <a, K b>|`` reaches 2% of ``sum |K a * b|`` (tested <= 5%).

References
----------
A. Adams, J. Baek, M. A. Davis, "Fast High-Dimensional Filtering Using the
Permutohedral Lattice", Eurographics 2010, sections 3-4.
P. Kraehenbuehl, V. Koltun, "Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials", NIPS 2011, section 4.
"""
import numpy as np

from crf import config
from crf.backend import is_device_array, resolve_backend
from crf.lattice_cpu import build_cpu, chains_cpu, filter_cpu, splat_blur_cpu, splat_bounds, threads_for
from crf.lattice_reference import build_numpy, feature_scale, filter_numpy, slice_alpha

__all__ = ["Lattice", "build", "feature_scale", "slice_alpha", "splat_blur_cpu", "threads_for"]


class Lattice:
    """A permutohedral lattice built over N points with d features.

    Build it with :func:`build`; filter with :meth:`filter`. Attributes follow
    the module's layout table: ``offsets``, ``weights``, ``keys``, ``n1``,
    ``n2``, ``starts``, ``splat_point``, ``splat_weight``; ``d``, ``n_points``
    (N), ``n_vertices`` (M).
    """

    def __init__(self, offsets, weights, keys, n1, n2, starts, splat_point, splat_weight):
        self.offsets, self.weights, self.keys = offsets, weights, keys
        self.n1, self.n2, self.starts = n1, n2, starts
        self.splat_point, self.splat_weight = splat_point, splat_weight
        self.n_points, d1 = offsets.shape
        self.d = d1 - 1
        self.n_vertices = keys.shape[0]
        self._device = None  # the CUDA copy (crf.cuda.DeviceLattice), uploaded on first use
        self._chains = None  # (chain_order, chain_bounds) for the CPU blur, built on first use
        self._splat_bounds = None  # (knobs, bounds) for the CPU splat, made on first use

    @classmethod
    def from_device(cls, lattice):
        """The host copy of a lattice on the GPU (:class:`crf.cuda.DeviceLattice`), e.g. one built there."""
        return cls(*lattice.host_arrays())

    def splat_bounds(self):
        """Blocks of vertices of about equal splat work for the CPU splat (``crf.config.SPLAT_BLOCKS``
        of them; :func:`crf.lattice_cpu.splat_bounds`), made on first use."""
        key = (config.SPLAT_BLOCKS, config.SPLAT_VERTEX_COST)
        if self._splat_bounds is None or self._splat_bounds[0] != key:
            self._splat_bounds = (key, splat_bounds(self.starts, *key))
        return self._splat_bounds[1]

    def chains(self):
        """``(chain_order (d+1, M) int32, chain_bounds (d+1, B+1) int64)``; see the module docstring."""
        if self._chains is None:
            self._chains = chains_cpu(self.n1, self.n2)
        return self._chains

    def __repr__(self):
        return f"Lattice(d={self.d}, n_points={self.n_points}, n_vertices={self.n_vertices})"

    def on_device(self):
        """The lattice's arrays on the GPU (:class:`crf.cuda.DeviceLattice`), uploaded on first use."""
        if self._device is None:
            from crf.cuda import DeviceLattice  # numba.cuda is loaded only for the CUDA backend
            self._device = DeviceLattice.from_host(self)
        return self._device

    def nbytes(self):
        """Bytes held by the lattice's arrays (a memory estimate)."""
        return sum(a.nbytes for a in (self.offsets, self.weights, self.keys, self.n1, self.n2,
                                      self.starts, self.splat_point, self.splat_weight))

    def filter(self, values, reverse=False, backend="auto"):
        """Apply the lattice's Gaussian: splat, blur, slice.

        Parameters
        ----------
        values : ndarray of shape (N, C), float32 (a CUDA device array for ``backend="cuda"``)
            Any number C of value channels, points first.
        reverse : bool
            Blur the axes in decreasing order d..0: the transpose of the
            forward filter, ``<K a, b> = <a, K_reverse b>``.
        backend : {"numpy", "cpu", "cuda", "auto"}

        Returns
        -------
        ndarray of shape (N, C), float32 (a device array when a device array was given)
        """
        backend = resolve_backend(backend, values)
        if backend == "cuda":
            from crf import cuda as crf_cuda
            if not is_device_array(values):
                values = _check_values(values, self.n_points)
            return crf_cuda.lattice_filter(self, values, reverse)
        values = _check_values(values, self.n_points)
        if backend == "numpy":
            return filter_numpy(self, values, reverse)
        out = np.empty_like(values)
        with threads_for(values.size):
            filter_cpu(self, values, reverse, out)
        return out


def _check_values(values, n_points):
    if is_device_array(values):
        raise TypeError("a CUDA device array needs backend='cuda' (or 'auto')")
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != n_points:
        raise ValueError(f"values must have shape (N={n_points}, C), got {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise TypeError(f"values must be real numbers, got dtype {values.dtype}")
    return np.ascontiguousarray(values, dtype=np.float32)


def _check_device_features(features):
    """The shape and dtype of device features (their values are the caller's to keep finite)."""
    if len(features.shape) != 2 or features.shape[0] < 1 or features.shape[1] < 1 \
            or features.dtype != np.float32:
        raise ValueError(f"device features must be a float32 array of shape (N, d) with N, d >= 1, got "
                         f"{tuple(features.shape)} {features.dtype}")
    return features


def _check_features(features):
    if is_device_array(features):
        raise TypeError("device features need backend='cuda' (or 'auto'): the NumPy and CPU builds "
                        "read host arrays")
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"features must have shape (N, d) with N, d >= 1, got {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
        raise TypeError(f"features must be real numbers, got dtype {features.dtype}")
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise ValueError("features must be finite (no NaN or infinity)")
    # The elevated coordinates (about |f| * scale * d) are rounded in float32: keep them exact integers (< 2^24).
    limit = 2.0 ** 24 / (features.shape[1] + 1) ** 2
    if np.abs(features).max() > limit:
        raise ValueError(f"features (already divided by their standard deviations) must lie within "
                         f"+-{limit:.3g} for d={features.shape[1]}, got max |f| = "
                         f"{np.abs(features).max():.3g}: is a theta (theta_alpha, theta_beta, theta_gamma, sxy, "
                         f"srgb) far too small for the image's positions and colours?")
    return features


def build(features, backend="auto"):
    """Build the lattice for N points with features (N, d).

    Parameters
    ----------
    features : ndarray of shape (N, d), float32 (other real dtypes are converted)
        Each feature already divided by its standard deviation, e.g. ``(x/theta,
        y/theta)`` for a spatial Gaussian.
    backend : {"numpy", "cpu", "cuda", "auto"}
        ``"numpy"`` builds with the vectorised reference, ``"cpu"`` with the
        Numba CPU kernels, ``"cuda"`` on the GPU (:mod:`crf.cuda_build`; a CUDA
        device array of features stays on the device).

    Returns
    -------
    Lattice, or crf.cuda.DeviceLattice for ``"cuda"`` (the same ``filter``; its
    arrays are device arrays; :meth:`Lattice.from_device` copies it to the host)
    """
    backend = resolve_backend(backend, features)
    if backend == "cuda":
        from crf import cuda as crf_cuda  # numba.cuda is loaded only for the CUDA backend
        if is_device_array(features):
            return crf_cuda.build(_check_device_features(features))
        return crf_cuda.build(_check_features(features))
    features = _check_features(features)
    if backend == "numpy":
        return Lattice(*build_numpy(features))
    with threads_for(features.shape[0] * (features.shape[1] + 1)):
        return Lattice(*build_cpu(features))
