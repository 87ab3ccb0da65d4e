"""``DenseCRF``: the fully connected CRF in the paper's terms.

Energy (Kraehenbuehl & Koltun 2011, eq. (1)-(3))::

    E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) sum_m w_m k_m(f_i, f_j)

with the unary energies ``U = psi_u`` (e.g. ``-log P`` or ``-score``), the
penalty ``mu`` (Potts: ``1 - I``, a penalty of 1 when two labels differ) and
Gaussian kernels ``k_m(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)`` over scaled
features: the smoothness kernel ``f = (x, y) / theta_gamma`` and the
appearance (bilateral) kernel ``f = (x / theta_alpha, y / theta_alpha,
RGB / theta_beta)``. Mean field (eq. (4)) repeats::

    Q = softmax(-U - sum_m w_m (N_m K_m Q) mu_m)

where ``K_m Q`` is the lattice filter of every label's Q (the pixel itself
included, as in densecrf) and ``N_m`` the normalisation of kernel m:

* ``"per_pixel"``: divide by ``K_m 1`` after filtering (DeepLab's choice);
* ``"symmetric"``: ``D^-1/2 K D^-1/2`` with ``D = diag(K 1)`` (pydensecrf's default);
* ``"none"``: ``K`` itself. The lattice's unnormalised K approximates the
  exact Gaussian only up to a factor that depends on the point density
  (0.3 - 0.9 measured), one more reason to normalise.

Label compatibility ``compat`` is the paper's penalty mu: ``None`` is Potts
``1 - I``; a scalar ``s`` is ``s (1 - I)``; a vector ``v`` (L,) is ``diag(v)``;
an (L, L) matrix must be symmetric. (pydensecrf's signs differ; see
:mod:`crf.compat`.)

Layout: unary and Q are (L, H, W) float32 outside, pixels-first (H*W, L)
inside, pixel index ``i = row * W + column``.

Memory (CPU), with N = H*W pixels and L labels: about ``5 N L`` floats for U,
Q, the next Q, the energy and copies at the interface, plus per kernel a
lattice of ``N (d+1)`` corners (offsets, weights and the splat index: 16 bytes
each) and M vertices (keys, neighbours: ``(3d+2) 4`` bytes each; M is about
N/10 for the Gaussian kernel and 1-2 N for the bilateral one on photographs),
and two ``(M+1) L`` float32 buffers for the blur.

References
----------
P. Kraehenbuehl, V. Koltun, "Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials", NIPS 2011, sections 2-4.
"""
import time
from numbers import Real

import numpy as np

from crf import config, grid_cache
from crf import lattice as lattice_mod
from crf.lattice_cpu import filter_cpu, ones_filter_cpu, splat_blur_many_cpu
from crf.lattice_reference import filter_numpy
from crf import meanfield
from crf.backend import is_device_array, resolve_backend

NORMALIZATIONS = ("per_pixel", "symmetric", "none")
_TINY = 1e-20  # added to K 1 before dividing, as densecrf does


def positive_number(name, value):
    """``value`` as a float, or a ValueError naming ``name`` unless it is a positive finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def finite_number(name, value):
    """``value`` as a float, or a ValueError naming ``name`` unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_unary(unary):
    """Validate unary energies (L, H, W); return them as C-contiguous float32.

    Raises ``ValueError`` for a wrong shape, NaN or infinity, and for
    probabilities passed as energies (every value in [0, 1] and every pixel's
    values summing to 1: the CRF would then prefer the *least* likely label).
    """
    u = np.asarray(unary)
    if u.ndim != 3 or min(u.shape) < 1:
        raise ValueError(f"unary must have shape (L, H, W) (labels, height, width), got {u.shape}")
    if not np.issubdtype(u.dtype, np.number) or np.iscomplexobj(u):
        raise TypeError(f"unary must hold real numbers, got dtype {u.dtype}")
    given = u
    with np.errstate(over="ignore"):  # a value beyond float32 is said below, in words
        u = np.ascontiguousarray(u, dtype=np.float32)
    # NumPy's min and max propagate NaN, and an infinity is the max or the min: both finite means
    # every value is (one pass each, no (L, H, W) array of flags; 1.7 -> 0.4 ms at 500x375, 21 labels)
    lo, hi = u.min(), u.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = tuple(int(b) for b in np.argwhere(~np.isfinite(u))[0])
        if np.isfinite(given[bad]):
            raise ValueError(f"unary energies must fit in float32, got {float(given[bad]):g} at (label, row, col) = "
                             f"{bad}")
        raise ValueError(f"unary energies must be finite, got {u[bad]} at (label, row, col) = "
                         f"{bad}; clip probabilities before taking -log "
                         f"(see crf.unary_from_softmax)")
    if u.shape[0] >= 2 and lo >= 0 and hi <= 1 and np.allclose(u.sum(axis=0), 1, atol=1e-3):
        raise ValueError("unary looks like probabilities (values in [0, 1] that sum to 1 over the "
                         "labels), expected energies such as -log P: use "
                         "crf.unary_from_softmax(probabilities)")
    return u


def check_image(image, height, width, device=False):
    """Validate an (H, W, 3) uint8 image against the unary's height and width.

    With ``device`` a CUDA device array is accepted as well (and returned as it is).
    """
    if device and is_device_array(image):
        if len(image.shape) != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
                or tuple(image.shape[:2]) != (height, width):
            raise ValueError(f"image must be a uint8 device array of shape (H={height}, W={width}, 3), got "
                             f"{tuple(image.shape)} {image.dtype}")
        return image
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a NumPy array of shape (H, W, 3), uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (three colour channels last), got {image.shape}; "
                         f"for other guidance channels use add_kernel(features, ...)")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0..255 colours), got dtype {image.dtype}")
    if image.shape[:2] != (height, width):
        swapped = " (height and width swapped?)" if image.shape[:2] == (width, height) else ""
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} (H x W) but the unary is "
                         f"{height}x{width}{swapped}")
    return np.ascontiguousarray(image)


def parse_compat(compat, n_labels):
    """Turn ``compat`` into ``(kind, mu_compact, mu_full)`` (see :mod:`crf.meanfield`).

    Returns
    -------
    kind : int
    mu_compact : ndarray, float32
        (1,) for Potts, (L,) diagonal, (L, L) matrix.
    mu_full : ndarray of shape (L, L), float64
        The penalty matrix itself (for the free energy and the exact reference).
    """
    eye = np.eye(n_labels)
    if compat is None:
        compat = 1.0
    if isinstance(compat, Real) and not isinstance(compat, bool):
        s = finite_number("compat", compat)
        return meanfield.KIND_POTTS, np.array([s], np.float32), s * (1.0 - eye)
    mu = np.asarray(compat)
    if not np.issubdtype(mu.dtype, np.number) or np.iscomplexobj(mu) or not np.isfinite(mu).all():
        raise ValueError(f"compat must be finite real numbers, got {compat!r}")
    mu = mu.astype(np.float64)
    if mu.shape == (n_labels,):
        return meanfield.KIND_DIAGONAL, mu.astype(np.float32), np.diag(mu)
    if mu.shape == (n_labels, n_labels):
        if not np.allclose(mu, mu.T, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(mu).max())):
            raise ValueError("compat matrix must be symmetric (mu(a, b) == mu(b, a)), got max "
                             f"|mu - mu.T| = {np.abs(mu - mu.T).max():.3g}")
        return meanfield.KIND_MATRIX, np.ascontiguousarray(mu, dtype=np.float32), mu
    raise ValueError(f"compat must be None, a scalar, a vector of shape ({n_labels},) or a matrix "
                     f"of shape ({n_labels}, {n_labels}) for {n_labels} labels, got shape {mu.shape}")


def gaussian_features(height, width, theta_gamma):
    """Smoothness features ``(x, y) / theta_gamma``, (H*W, 2) float32 (x = column)."""
    theta = np.float32(positive_number("theta_gamma", theta_gamma))
    return grid_features(height, width, theta, theta)


def grid_features(height, width, theta_x, theta_y):
    """The pixel positions ``(x / theta_x, y / theta_y)``, (H*W, 2) float32 (x = column; float32 thetas)."""
    out = np.empty((height, width, 2), np.float32)
    out[:, :, 0] = np.arange(width, dtype=np.float32) / theta_x  # (W,) broadcast down the rows
    out[:, :, 1] = (np.arange(height, dtype=np.float32) / theta_y)[:, None]
    return out.reshape(height * width, 2)


def bilateral_features(image, theta_alpha, theta_beta):
    """Appearance features ``(x/theta_alpha, y/theta_alpha, c0/theta_beta, c1, c2)``, (H*W, 5) float32.

    ``image`` (H, W, C) of any real dtype; its channels are used in the order given.
    """
    ta = np.float32(positive_number("theta_alpha", theta_alpha))
    tb = np.float32(positive_number("theta_beta", theta_beta))
    h, w, c = image.shape
    y, x = np.mgrid[:h, :w].astype(np.float32)
    colour = image.reshape(h * w, c).astype(np.float32) / tb  # (H*W, C)
    return np.concatenate([x.reshape(-1, 1) / ta, y.reshape(-1, 1) / ta, colour], axis=1)


class Kernel:
    """One pairwise term: its lattice, weight, penalty and normalisation vectors.

    ``pre`` and ``post`` ((N,) float32 or None) scale Q before and after the
    lattice filter; ``kind``/``mu`` feed :mod:`crf.meanfield`; ``mu_full`` is
    the (L, L) penalty used by the free energy. ``k1`` and ``complement`` are
    ``K 1`` and ``K pre`` for the CPU mean field (:meth:`HostRunner.step`).
    ``name`` ("bilateral", "gaussian" or "kernel"), ``build_seconds`` (lattice
    and normaliser) and ``reused`` (the lattice came from :mod:`crf.grid_cache`)
    are for :meth:`DenseCRF.summary`.
    """

    def __init__(self, lattice, w, kind, mu, mu_full, pre, post, k1=None):
        self.lattice, self.w, self.kind, self.mu, self.mu_full = lattice, w, kind, mu, mu_full
        self.pre, self.post = pre, post
        self.k1 = k1  # K 1, (N,) float32 on the host (host_k1), else None
        self.complement = None  # K pre, made by the CPU mean field when ``pre`` is set
        self.device = None  # the CUDA runner's copies
        self.name, self.build_seconds, self.reused = "kernel", 0.0, False


def lattice_and_norm(features, backend):
    """Build the lattice of (N, d) features; return it and ``K 1``.

    ``K 1`` is (N,) float64 on the host, or an (N, 1) float32 device array for
    ``backend="cuda"``, where the lattice is built on the GPU (features host or device).
    """
    if backend == "cuda":
        from crf import cuda as crf_cuda  # numba.cuda is loaded only for the CUDA backend
        lattice = lattice_mod.build(features, backend="cuda")
        return lattice, crf_cuda.norm_of(lattice)
    if backend == "numpy":
        lattice = lattice_mod.build(features, backend="numpy")
        ones = np.ones((features.shape[0], 1), np.float32)
        return lattice, lattice.filter(ones, backend="numpy")[:, 0].astype(np.float64)
    lattice = lattice_mod.build(features, backend="cpu")
    return lattice, ones_filter_cpu(lattice).astype(np.float64)


def grid_lattice_and_norm(height, width, theta_x, theta_y, backend):
    """``(lattice, k1, reused)`` of the smoothness features :func:`grid_features`, as
    :func:`lattice_and_norm` gives them; on the host taken from :mod:`crf.grid_cache` when an
    earlier model of this size built them (``reused``), on the GPU built anew."""
    theta_x, theta_y = np.float32(theta_x), np.float32(theta_y)
    if backend == "cuda":
        from crf import cuda as crf_cuda
        if theta_x != theta_y:  # the device features take one theta
            features = grid_features(height, width, theta_x, theta_y)
        else:
            features = crf_cuda.gaussian_features(height, width, float(theta_x))
        return (*lattice_and_norm(features, backend), False)
    return grid_cache.lattice_and_norm(grid_cache.key(backend, height, width, theta_x, theta_y),
                                       lambda: lattice_and_norm(grid_features(height, width, theta_x, theta_y),
                                                                backend))


def inverse_norm(k1, root, backend):
    """``1 / (K 1 + tiny)``, or ``1 / sqrt(K 1 + tiny)`` with ``root``, as (N,) float32 (a device
    array for ``backend="cuda"``); ``k1`` as :func:`lattice_and_norm` returns it."""
    if backend == "cuda":
        from crf import cuda as crf_cuda
        return crf_cuda.inverse_norm(k1, root, _TINY)
    return (1.0 / (np.sqrt(k1 + _TINY) if root else k1 + _TINY)).astype(np.float32)


def host_k1(k1, backend):
    """``K 1`` as :attr:`Kernel.k1` keeps it: (N,) float32 on the host (exact: it was summed in
    float32), None on the GPU, which filters every label."""
    return None if backend == "cuda" else np.asarray(k1, np.float32)


def make_kernel(build, w, compat, normalization, n_labels, backend):
    """A :class:`Kernel` in the native API's terms (see the module docstring).

    ``build()`` returns ``(lattice, k1, reused)`` (:func:`lattice_and_norm` with ``False``, or
    :func:`grid_lattice_and_norm`); it is called once the other arguments have been checked.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    kind, mu, mu_full = parse_compat(compat, n_labels)
    lattice, k1, reused = build()
    pre = post = None
    if normalization == "per_pixel":
        post = inverse_norm(k1, False, backend)
    elif normalization == "symmetric":
        pre = post = inverse_norm(k1, True, backend)
    kernel = Kernel(lattice, w, kind, mu, mu_full, pre, post, host_k1(k1, backend))
    kernel.reused = reused
    return kernel


class DenseCRF:
    """Fully connected CRF over an H x W image with L labels.

    Parameters
    ----------
    unary : ndarray of shape (L, H, W)
        Unary energies ``psi_u`` (lower is more likely), e.g. ``-log P`` from
        :func:`crf.unary_from_softmax` or ``-scores``. Finite. With
        ``backend="cuda"`` (or ``"auto"``) it may be a float32 CUDA device array:
        :meth:`inference` then returns a device array too.
    backend : {"numpy", "cpu", "cuda", "auto"}
        ``"cuda"`` does every O(N) step on the GPU: the unary's checks and layout,
        the features, the lattices (built there) and mean field.

    Attributes
    ----------
    free_energy_history : list of float
        After ``inference(..., track_free_energy=True)``: the free energy
        :meth:`free_energy` of Q before the first update and after each one.
    inference_seconds : float or None
        Wall time of the last :meth:`inference` (``None`` before one); see :meth:`summary`.

    Examples
    --------
    >>> crf = DenseCRF(unary)                        # doctest: +SKIP
    >>> crf.add_gaussian(theta_gamma=3, w=3)         # doctest: +SKIP
    >>> crf.add_bilateral(image, 67, 3, w=4)         # doctest: +SKIP
    >>> labels = crf.map(10)                         # doctest: +SKIP
    """

    def __init__(self, unary, backend="auto"):
        self.backend = resolve_backend(backend, unary)
        self._device_in = is_device_array(unary)
        if self._device_in and self.backend != "cuda":
            raise TypeError(f"a CUDA device array of unary energies needs backend='cuda' or 'auto', "
                            f"got {backend!r}")
        if self.backend == "cuda":
            from crf import cuda as crf_cuda  # numba.cuda is loaded only for the CUDA backend
            self.unary = unary
            self._u = crf_cuda.check_unary(unary)  # (N, L) device array
            self.n_labels, self.height, self.width = (int(s) for s in unary.shape)
        else:
            self.unary = check_unary(unary)
            self.n_labels, self.height, self.width = self.unary.shape
            n = self.height * self.width
            self._u = self._points_major(self.unary.reshape(self.n_labels, n))  # (N, L)
        self._u_host = None
        self.kernels = []
        self.free_energy_history = []
        self.inference_seconds, self._iterations_run = None, 0
        self._runner = None

    # -- pairwise terms ------------------------------------------------------------------------
    def add_kernel(self, features, w, compat=None, normalization="per_pixel"):
        """Add a Gaussian kernel over arbitrary features.

        Parameters
        ----------
        features : ndarray of shape (d, H, W)
            Any guidance (positions, colours, depth, ...), each already divided by
            its standard deviation.
        w : float
            Weight ``w_m``.
        compat : None, float, ndarray of shape (L,) or (L, L)
            The penalty mu (see the module docstring).
        normalization : {"per_pixel", "symmetric", "none"}
        """
        f = np.asarray(features)
        if f.ndim != 3 or f.shape[1:] != (self.height, self.width) or f.shape[0] < 1:
            raise ValueError(f"features must have shape (d, H={self.height}, W={self.width}), got {f.shape}")
        flat = np.ascontiguousarray(f.reshape(f.shape[0], -1).T, dtype=np.float32)  # (N, d)
        self._add(lambda: (*lattice_and_norm(flat, self.backend), False), w, compat, normalization, "kernel")

    def add_gaussian(self, theta_gamma, w, compat=None, normalization="per_pixel"):
        """Add the smoothness kernel ``w exp(-|p_i - p_j|^2 / (2 theta_gamma^2))``.

        Its lattice depends on the image's size and ``theta_gamma`` only: on the host the
        next model of the same size reuses it (:mod:`crf.grid_cache`).
        """
        theta = positive_number("theta_gamma", theta_gamma)
        self._add(lambda: grid_lattice_and_norm(self.height, self.width, theta, theta, self.backend),
                  w, compat, normalization, "gaussian")

    def add_bilateral(self, image, theta_alpha, theta_beta, w, compat=None, normalization="per_pixel"):
        """Add the appearance kernel over positions and colours.

        ``w exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2))``

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8
            The colours I, in the order given (DeepLab's offline tool: RGB). A CUDA
            device array with ``backend="cuda"``.
        """
        if self.backend == "cuda":
            from crf import cuda as crf_cuda
            image = check_image(image, self.height, self.width, device=True)
            features = crf_cuda.bilateral_features(image, positive_number("theta_alpha", theta_alpha),
                                                   positive_number("theta_beta", theta_beta))
        else:
            features = bilateral_features(check_image(image, self.height, self.width), theta_alpha, theta_beta)
        self._add(lambda: (*lattice_and_norm(features, self.backend), False), w, compat, normalization, "bilateral")

    def _add(self, build, w, compat, normalization, name):
        w = finite_number("w", w)
        start = time.perf_counter()
        kernel = make_kernel(build, w, compat, normalization, self.n_labels, self.backend)
        kernel.name, kernel.build_seconds = name, time.perf_counter() - start
        self.kernels.append(kernel)
        self._runner = None

    # -- inference -----------------------------------------------------------------------------
    def set_weight(self, index, w):
        """Change the weight ``w_m`` of kernel ``index`` (numbered in the order the kernels were added).

        A kernel's lattice and normalisation depend on its features only, and the weight scales
        its message at every update: trying several weights on one image builds each lattice once
        (:func:`crf.deeplab_refine_each`). Inference after it is that of a model built with ``w``.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.kernels):
            raise ValueError(f"index must be a kernel's number, 0 to {len(self.kernels) - 1}, got {index!r}")
        self.kernels[index].w = finite_number("w", w)

    def _get_runner(self):
        if self._runner is None:
            if self.backend == "cuda":
                from crf import cuda as crf_cuda
                self._runner = crf_cuda.MeanFieldRunner(self._u, self.kernels)
            else:
                self._runner = HostRunner(self._u, self.kernels, self.backend)
        return self._runner

    def _points_major(self, lab_n):
        """(L, N) -> (N, L) float32, C-contiguous."""
        if self.backend == "numpy":
            return np.ascontiguousarray(lab_n.T, dtype=np.float32)
        return meanfield.transpose(lab_n)

    def _to_lhw(self, q):
        if self.backend == "numpy":
            return np.ascontiguousarray(q.T).reshape(self.n_labels, self.height, self.width)
        return meanfield.transpose(q).reshape(self.n_labels, self.height, self.width)  # (N, L) -> (L, H, W)

    def _to_nl(self, q):
        q = np.asarray(q)
        if q.shape != (self.n_labels, self.height, self.width):
            raise ValueError(f"Q must have shape (L, H, W) = {(self.n_labels, self.height, self.width)}, "
                             f"got {q.shape}")
        return self._points_major(q.reshape(self.n_labels, -1))  # (N, L)

    def start(self):
        """The initial belief ``Q0 = softmax(-U)``, (L, H, W) float32."""
        runner = self._get_runner()
        return self._to_lhw(runner.to_host(runner.start()))

    def step(self, q):
        """One mean-field update of Q (L, H, W); returns the new Q (L, H, W) float32."""
        runner = self._get_runner()
        if self.backend == "cuda":
            return self._to_lhw(runner.to_host(runner.step(self._to_nl(q))))
        return runner.step(self._to_nl(q), labels_major=True).reshape(self.n_labels, self.height, self.width)

    def inference(self, iterations=10, track_free_energy=False):
        """Run mean field.

        Parameters
        ----------
        iterations : int
            Number of updates (DeepLab: 10); 0 returns ``softmax(-U)``.
        track_free_energy : bool
            Record :meth:`free_energy` before the first and after every update
            in ``free_energy_history`` (costs one extra filtering at the end).

        Returns
        -------
        ndarray of shape (L, H, W), float32
            The marginals Q; every pixel's values sum to 1. A CUDA device array
            when the unary was one.
        """
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        start = time.perf_counter()
        runner = self._get_runner()
        self.free_energy_history = []
        # On the host the last update writes Q labels first, as it is returned (no transpose after
        # it), unless the free energy needs it points first; Q may then leave out its last label
        # until that update (HostRunner.start).
        last_labels_major = self.backend != "cuda" and int(iterations) > 0 and not track_free_energy
        q = runner.start(narrow=True) if last_labels_major else runner.start()
        for _ in range(int(iterations) - last_labels_major):
            if track_free_energy:
                self.free_energy_history.append(self._free_energy_nl(q))
            q = runner.step(q, sums_to_one=True)
        if track_free_energy:
            self.free_energy_history.append(self._free_energy_nl(q))
        if last_labels_major:
            q = runner.step(q, labels_major=True, sums_to_one=True)
            q = q.reshape(self.n_labels, self.height, self.width)  # (L, N) -> (L, H, W)
        elif self._device_in:  # device in, device out: (N, L) -> (L, H, W) on the GPU
            from crf import cuda as crf_cuda
            q = crf_cuda.labels_major(q, self.height, self.width)
        else:
            q = self._to_lhw(runner.to_host(q))
        self.inference_seconds, self._iterations_run = time.perf_counter() - start, int(iterations)
        return q

    def summary(self):
        """The model's sizes, memory and times, one line each (``deeplab crf --verbose`` prints them).

        Per kernel: the feature dimension d, the lattice's vertices, the memory of its
        structure and of the lattice values inference filters ((M+1) x C float32, two
        buffers; C = L, or L - 1 where the CPU derives the last label, see
        :func:`filters_complement`), and the build time (lattice and normaliser), or that
        the lattice was reused (:mod:`crf.grid_cache`). Then the last inference's time, if
        one ran. The first build or inference in a process includes Numba's compilation or
        cache load.
        """
        lines = [f"dense CRF: {self.n_labels} labels, {self.height} x {self.width} pixels, "
                 f"backend {self.backend}"]
        channels = self.n_labels - (self.backend == "cpu" and filters_complement(self.n_labels))
        for kernel in self.kernels:
            lat = kernel.lattice
            values = 2 * (lat.n_vertices + 1) * channels * 4
            lines.append(f"  {kernel.name} (d={lat.d}, w={kernel.w:g}): {lat.n_vertices:,} lattice vertices, "
                         f"{lat.nbytes() / 2**20:.1f} MiB + {values / 2**20:.1f} MiB of values, "
                         + (f"reused from an earlier model of this size ({kernel.build_seconds:.3f} s)"
                            if kernel.reused else f"built in {kernel.build_seconds:.3f} s"))
        if self.inference_seconds is not None:
            each = self.inference_seconds / max(self._iterations_run, 1)
            lines.append(f"  inference: {self._iterations_run} iterations in {self.inference_seconds:.3f} s "
                         f"({1e3 * each:.1f} ms each)")
        return lines

    def map(self, iterations=10):
        """Most likely label per pixel after ``iterations`` updates, (H, W) int32 (on the host)."""
        q = self.inference(iterations)
        q = q.copy_to_host() if self._device_in else q
        return q.argmax(axis=0).astype(np.int32)

    def free_energy(self, q):
        """The mean-field free energy of Q, ``KL(Q || P) - log Z``.

        ``F(Q) = sum_i sum_l Q_il log Q_il + sum_i sum_l U_il Q_il
        + 1/2 sum_m w_m sum_i sum_l Q_il [(N_m K_m Q) mu_m]_il``

        The pairwise expectation uses the kernels as filtered (the pixel itself
        included, normalisation applied). log Z is unknown, so F can be negative;
        KL(Q || P) itself is F + log Z >= 0. pydensecrf's ``klDivergence`` is
        ``sum Q log Q + sum U Q + sum_m <Q, compat_m(K_m Q)>`` with its own
        compat signs and without the 1/2 (see :mod:`crf.compat`, which keeps that name and
        that value).

        Parameters
        ----------
        q : ndarray of shape (L, H, W)

        Returns
        -------
        float
        """
        return self._free_energy_nl(self._to_nl(q))

    def _free_energy_nl(self, q_nl):
        runner = self._get_runner()
        q = runner.to_host(q_nl).astype(np.float64)  # (N, L)
        if self._u_host is None:
            self._u_host = runner.to_host(self._u)  # (N, L)
        value = float((q * np.log(np.maximum(q, 1e-20))).sum() + (self._u_host * q).sum())
        for kernel, qf in zip(self.kernels, runner.messages(q_nl)):
            value += 0.5 * kernel.w * float((q * (qf.astype(np.float64) @ kernel.mu_full)).sum())
        return value


def filters_complement(n_labels):
    """Whether the CPU mean field filters L - 1 labels and derives the last (:meth:`HostRunner.step`).

    Where L is 2, or L % 4 == 1 (5, 9, ..., 21 for VOC): the channel loops of the splat, blur
    and slice then run over a count that vectors of 4, 8 or 16 lanes divide with a shorter
    scalar tail than L. A mean-field step with 2 threads, 21 labels (medians of alternating
    steps in one process): 24.2-25.1 -> 23.1-23.7 ms at 500x375, 94.8 -> 88.1 ms at 1000x750;
    with 6, 8, 12, 16 or 20 labels one channel fewer leaves a tail and costs 4-20 % more.
    Off with ``crf.config.COMPLEMENT_LABEL = False``.
    """
    return bool(config.COMPLEMENT_LABEL) and (n_labels == 2 or (n_labels > 1 and n_labels % 4 == 1))


class HostRunner:
    """Mean field on the CPU (``"cpu"``: Numba kernels; ``"numpy"``: the reference)."""

    def __init__(self, u, kernels, backend):
        self.u, self.kernels, self.backend = u, kernels, backend
        self._scaled = None  # (N, L): Q times a kernel's ``pre``, made when a kernel has one
        self._scratch = {}
        # Q lives in one buffer, which every update overwrites: the splat reads Q before the
        # fused pass writes the new one, which reads the blurred lattices, not Q. A new (N, L)
        # array per update would be faulted in anew every time (above 32 MB the allocator maps
        # fresh pages: 45 ms of a 145 ms iteration at 1000x750), and a second buffer would be one
        # more to fault in per inference (16 MB at 500x375, 63 MB at 1000x750). The last update
        # writes the result into it and hands it over (_step_fused); the next inference makes another.
        self._q = None
        self._narrow = None  # the first N (L - 1) values of the same buffer as (N, L - 1): start's narrow Q

    def _buffer(self, columns=None):
        """The runner's (N, L) Q buffer, made if it was handed over; (N, L - 1) with ``columns`` = L - 1."""
        n, n_labels = self.u.shape
        if self._q is None:
            self._q = np.empty((n, n_labels), np.float32)
            self._narrow = self._q.reshape(-1)[:n * (n_labels - 1)].reshape(n, n_labels - 1)
        return self._narrow if columns == n_labels - 1 else self._q

    def to_host(self, q):
        return q

    def derives_last(self):
        """Whether this runner's updates of a Q whose rows sum to one derive the last label (see :meth:`step`)."""
        return self.backend == "cpu" and bool(self.kernels) and filters_complement(self.u.shape[1])

    def start(self, narrow=False):
        """``softmax(-U)``, (N, L); with ``narrow``, where :meth:`derives_last`, (N, L - 1) without the last label.

        An inference whose every update derives the last label (``step(..., sums_to_one=True)``,
        the last one ``labels_major``) never reads it from Q: the splats gather rows of L - 1
        labels and the updates write no more. At 21 labels such a row is 80 bytes, two cache lines
        wherever it starts, where a row of 84 takes three for 3 rows in 16.
        """
        q = self._buffer(self.u.shape[1] - 1 if narrow and self.derives_last() else None)
        with lattice_mod.threads_for(q.size):
            if self.backend == "numpy":
                meanfield.softmax_numpy(-self.u, q)
            else:
                meanfield.softmax_cpu(self.u, q, negate=True)
        return q

    def _softmax(self, energy, out):
        if self.backend == "numpy":
            meanfield.softmax_numpy(energy, out)
        else:
            meanfield.softmax_cpu(energy, out)

    def _filter(self, kernel, q):
        """``N_m K_m q`` for (N, L) q: scale, splat-blur-slice, scale."""
        values = q
        if kernel.pre is not None:
            if self._scaled is None:
                self._scaled = np.empty_like(q)
            values = meanfield.scale_rows(q, kernel.pre, self._scaled, self.backend)
        if self.backend == "numpy":
            out = filter_numpy(kernel.lattice, values, False)
        else:
            out = np.empty_like(q)
            filter_cpu(kernel.lattice, values, False, out,
                                    self._get_scratch(kernel, q.shape[1]))
        if kernel.post is not None:
            meanfield.scale_rows(out, kernel.post, out, self.backend)
        return out

    def messages(self, q):
        with lattice_mod.threads_for(q.size):
            return [self._filter(kernel, q) for kernel in self.kernels]

    def step(self, q, labels_major=False, sums_to_one=False):
        """The next Q from (N, L) ``q``: (N, L) (with the Numba kernels the runner's own buffer,
        which may be ``q``), or with ``labels_major`` (L, N) (the last update, written as it is
        returned), an array the runner keeps no hold of.

        ``sums_to_one``: every row of ``q`` sums to one (a softmax wrote it: the inference
        loop's Q, not one from the caller). The lattice filter is linear, so kernel m's filter
        of the last label is then ``K_m pre_m`` (``K_m 1`` without symmetric normalisation,
        the normaliser's own filter, built once) minus the others'. The CPU kernels splat,
        blur and slice L - 1 labels and derive the last in the fused pass, where
        :func:`filters_complement` says it pays. The result differs from filtering every
        label by rounding only: max |dQ| 5e-6 after 10 updates at 500x375, 21 labels.
        ``q`` may then be :meth:`start`'s narrow (N, L - 1) Q, and the next Q is as narrow
        (labels first, every label).
        """
        n, n_labels = self.u.shape
        narrow = q.ndim == 2 and q.shape[1] == n_labels - 1 and sums_to_one and self.derives_last()
        if q.ndim != 2 or q.shape[0] != n or not (q.shape[1] == n_labels or narrow):
            raise ValueError(f"q must have shape {self.u.shape} (or {(n, n_labels - 1)}, start's narrow "
                             f"Q, with sums_to_one=True where derives_last()), got {q.shape}")
        if self.backend == "cpu" and self.kernels:
            with lattice_mod.threads_for(q.size):
                return self._step_fused(q, labels_major, sums_to_one)
        energy = -self.u
        for kernel in self.kernels:  # the NumPy reference (the CPU fuses these stages)
            meanfield.add_message_numpy(energy, self._filter(kernel, q), kernel.w, kernel.kind, kernel.mu)
        out = np.empty_like(q)
        self._softmax(energy, out)
        return np.ascontiguousarray(out.T) if labels_major else out

    def _step_fused(self, q, labels_major, sums_to_one):
        """The CPU update: splat and blur per kernel, then slice + messages + softmax in one pass."""
        n, n_labels = self.u.shape
        channels, comps = n_labels, None
        if sums_to_one and filters_complement(n_labels):
            channels, comps = n_labels - 1, [self._complement(kernel) for kernel in self.kernels]
        lats = splat_blur_many_cpu([kernel.lattice for kernel in self.kernels], q,
                                   [kernel.pre for kernel in self.kernels],
                                   [self._get_scratch(kernel, channels) for kernel in self.kernels], channels)
        # The buffer may hold q: the splat has read it, and the fused pass reads the lattices.
        if labels_major:  # the result, written labels first into the buffer, which the runner gives up
            out = self._buffer().reshape(n_labels, n)  # (N, L) -> (L, N): the same memory
            self._q = self._narrow = None
        else:  # as wide as q: a narrow Q stays narrow
            out = self._buffer(q.shape[1])
        meanfield.slice_messages_cpu(lats, self.kernels, self.u, out, labels_major, comps)
        return out

    @staticmethod
    def _complement(kernel):
        """``K_m pre_m`` ((N,) float32): the filter of what kernel m's splat sums over the labels."""
        if kernel.pre is None:
            return kernel.k1
        if kernel.complement is None:  # one filter of one channel, the first time
            out = np.empty((kernel.pre.shape[0], 1), np.float32)
            kernel.complement = filter_cpu(kernel.lattice, kernel.pre[:, None], False, out)[:, 0]
        return kernel.complement

    def _get_scratch(self, kernel, channels):
        key = (id(kernel.lattice), channels)
        if key not in self._scratch:
            self._scratch[key] = []  # filled by crf.lattice_cpu.splat_blur_many_cpu
        return self._scratch[key]
