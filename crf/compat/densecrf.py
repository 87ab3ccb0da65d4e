"""pydensecrf's ``densecrf`` module on this package's lattice.

Conventions of pydensecrf (densecrf 2.x), reproduced here and measured
against pydensecrf2 by tests/crf/test_compat.py:

======================  =====================================  ==================================
                        pydensecrf / this facade               native :class:`crf.DenseCRF`
======================  =====================================  ==================================
unary                   (L, N) energies, N = H*W row-major       (L, H, W) energies
scalar compat ``s``     message ``+s K Q``: **attracts**         ``s (1 - I)`` penalty: the same
vector compat ``v``     message ``-v * K Q``: **penalises**      ``diag(v)`` penalty: the same
matrix compat ``M``     ``-(M + M^T)/2 K Q`` (symmetrised)       must be symmetric, else an error
weight                  folded into compat                       ``w`` separate from ``compat``
NORMALIZE_SYMMETRIC     default: D^-1/2 K D^-1/2                 ``"symmetric"``
NORMALIZE_AFTER         D^-1 K (DeepLab)                         ``"per_pixel"`` (the default)
NORMALIZE_BEFORE        K D^-1                                   --
NO_NORMALIZATION        K as the lattice gives it (*)            ``"none"``
kernel type             CONST/DIAG/FULL: the same in inference   --
klDivergence            sum QlogQ + UQ + sum <Q, compat(KQ)>     free energy with the 1/2
features                float32, x = column, y = row, then the   the same
                        image channels in the order given
======================  =====================================  ==================================

(*) densecrf's ``initLattice`` computes ``N / sum(K 1)`` for
NO_NORMALIZATION, but its ``filter`` never applies it: measured with
pydensecrf2, inference uses the unscaled K, and so does this facade.

Unlike pydensecrf, arrays of other real dtypes or layouts are converted, and
inputs it would take silently are refused with a message: probabilities given
as unary energies, NaN or infinite energies, an image whose height and width
are swapped, a compatibility of the wrong size.

``inference`` and ``startInference`` return NumPy float32 arrays (L, N)
where pydensecrf returns Eigen wrappers; ``np.array(...)`` works on both.
``stepInference(Q, tmp1, tmp2)`` updates Q in place, as pydensecrf does.
"""
from numbers import Real

import numpy as np

from crf.backend import resolve_backend
from crf.densecrf import (HostRunner, Kernel, check_image, grid_features, grid_lattice_and_norm, host_k1,
                          inverse_norm, lattice_and_norm)
from crf.meanfield import KIND_DIAGONAL, KIND_MATRIX, KIND_POTTS

CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL = 0, 1, 2
NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC = 0, 1, 2, 3


def _as_int(value):
    """``int(value)`` for a constant given as a number, None for anything else (then refused by name)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _compat(compat, n_labels):
    """pydensecrf's label compatibility -> (kind, mu compact, mu_full as the message matrix)."""
    if isinstance(compat, Real) and not isinstance(compat, bool):
        s = float(compat)
        if not np.isfinite(s):
            raise ValueError(f"compat must be finite, got {compat!r}")
        # densecrf's Potts: message -s Q, i.e. energy += s K Q; as a penalty: s (1 - I) up to a constant
        return KIND_POTTS, np.array([s], np.float32), -s * np.eye(n_labels)
    mu = np.asarray(compat, dtype=np.float64)
    if not np.isfinite(mu).all():
        raise ValueError("compat must be finite")
    if mu.shape == (n_labels,):
        return KIND_DIAGONAL, mu.astype(np.float32), np.diag(mu)
    if mu.shape == (n_labels, n_labels):
        sym = 0.5 * (mu + mu.T)  # densecrf's MatrixCompatibility symmetrises
        return KIND_MATRIX, np.ascontiguousarray(sym, dtype=np.float32), sym
    raise ValueError(f"compat must be a number, a vector of shape ({n_labels},) or a matrix of shape "
                     f"({n_labels}, {n_labels}), got shape {mu.shape}")


class DenseCRF:
    """pydensecrf's ``DenseCRF(n_pixels, n_labels)`` with arbitrary features.

    Parameters
    ----------
    n_pixels, n_labels : int
    backend : {"numpy", "cpu", "cuda", "auto"}
        Not in pydensecrf: where the filtering runs.
    """

    def __init__(self, n_pixels, n_labels, backend="auto"):
        for name, v in (("n_pixels", n_pixels), ("n_labels", n_labels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self._n, self._m = int(n_pixels), int(n_labels)
        self._backend = resolve_backend(backend)
        self._u = np.zeros((self._n, self._m), np.float32)  # (N, L): no unary means zero energy
        self._kernels = []
        self._runner = None

    def setUnaryEnergy(self, unary, n=None):
        """Unary energies (n_labels, n_pixels); ``n`` (a logistic unary) is not supported."""
        if n is not None:
            raise ValueError("setUnaryEnergy(u, n) (a logistic unary) is not supported; pass energies u only")
        u = np.asarray(unary)
        if u.shape != (self._m, self._n):
            raise ValueError(f"Bad shape for unary energy (Need {(self._m, self._n)}, got {u.shape})")
        if not np.issubdtype(u.dtype, np.number) or np.iscomplexobj(u):
            raise ValueError(f"unary energies must be real numbers, got dtype {u.dtype}")
        if not np.isfinite(u).all():
            raise ValueError("unary energies must be finite (no NaN or infinity)")
        if self._m >= 2 and u.min() >= 0 and u.max() <= 1 and np.allclose(u.sum(axis=0), 1, atol=1e-3):
            raise ValueError("unary looks like probabilities (values in [0, 1] that sum to 1 over the "
                             "labels), expected energies: use utils.unary_from_softmax(probabilities)")
        self._u = np.ascontiguousarray(u.T, dtype=np.float32)  # (N, L)
        self._runner = None

    def addPairwiseEnergy(self, features, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC):
        """Add a Gaussian kernel over features (D, n_pixels), already scaled."""
        f = np.asarray(features)
        if f.ndim != 2 or f.shape[1] != self._n:
            raise ValueError(f"Bad shape for pairwise energy (Need (D, {self._n}), got {f.shape})")
        flat = np.ascontiguousarray(f.T, dtype=np.float32)  # (N, D)
        self._add(lambda: lattice_and_norm(flat, self._backend), compat, kernel, normalization)

    def _add(self, build, compat, kernel, normalization):
        """Append a kernel whose ``(lattice, k1)`` ``build()`` gives, once the other arguments are checked."""
        if _as_int(kernel) not in (CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL):
            raise ValueError(f"kernel must be CONST_KERNEL, DIAG_KERNEL or FULL_KERNEL, got {kernel!r}")
        if _as_int(normalization) not in (NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC):
            raise ValueError(f"normalization must be one of the NORMALIZE_* constants, got {normalization!r}")
        normalization = int(normalization)
        kind, mu, mu_full = _compat(compat, self._m)
        lattice, k1 = build()[:2]
        pre = post = None
        if normalization == NORMALIZE_SYMMETRIC:
            pre = post = inverse_norm(k1, True, self._backend)
        elif normalization == NORMALIZE_BEFORE:
            pre = inverse_norm(k1, False, self._backend)
        elif normalization == NORMALIZE_AFTER:
            post = inverse_norm(k1, False, self._backend)
        self._kernels.append(Kernel(lattice, 1.0, kind, mu, mu_full, pre, post, host_k1(k1, self._backend)))
        self._runner = None

    def _get_runner(self):
        if self._runner is None:
            if self._backend == "cuda":
                from crf import cuda as crf_cuda
                self._runner = crf_cuda.MeanFieldRunner(self._u, self._kernels)
            else:
                self._runner = HostRunner(self._u, self._kernels, self._backend)
        return self._runner

    def _check_q(self, q):
        if not isinstance(q, np.ndarray) or q.shape != (self._m, self._n) or q.dtype != np.float32:
            raise ValueError(f"Q must be the float32 array ({self._m}, {self._n}) from startInference, "
                             f"got {getattr(q, 'shape', type(q).__name__)} {getattr(q, 'dtype', '')}".rstrip())

    def inference(self, n_iterations):
        """Q after ``n_iterations`` mean-field updates, (n_labels, n_pixels) float32."""
        if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 0:
            raise ValueError(f"n_iterations must be an integer >= 0, got {n_iterations!r}")
        runner = self._get_runner()
        # On the host the last update writes Q (n_labels, n_pixels) itself, as crf.DenseCRF's does,
        # and Q may leave out its last label until then (crf.densecrf.HostRunner.start).
        last_labels_major = self._backend != "cuda" and int(n_iterations) > 0
        q = runner.start(narrow=True) if last_labels_major else runner.start()
        for _ in range(int(n_iterations) - last_labels_major):
            q = runner.step(q, sums_to_one=True)
        if last_labels_major:
            return runner.step(q, labels_major=True, sums_to_one=True)
        return np.ascontiguousarray(runner.to_host(q).T)

    def startInference(self):
        """``(Q, tmp1, tmp2)``: Q = softmax(-U) (n_labels, n_pixels) float32 and two scratch arrays."""
        q = np.ascontiguousarray(self._get_runner().to_host(self._get_runner().start()).T)
        return q, np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)

    def stepInference(self, Q, tmp1, tmp2):
        """One mean-field update of Q, in place (tmp1 and tmp2 are accepted and unused)."""
        self._check_q(Q)
        runner = self._get_runner()
        if self._backend == "cuda":
            Q[...] = runner.to_host(runner.step(np.ascontiguousarray(Q.T))).T
        else:
            Q[...] = runner.step(np.ascontiguousarray(Q.T), labels_major=True)

    def klDivergence(self, Q):
        """pydensecrf's value: ``sum Q log Q + sum U Q + sum_m <Q, compat_m(N_m K_m Q)>``.

        This is KL(Q || P) up to log Z and with the pairwise term counted twice,
        so it can be negative.
        """
        self._check_q(Q)
        q = np.ascontiguousarray(Q.T)  # (N, L)
        q64 = q.astype(np.float64)
        value = float((q64 * np.log(np.maximum(q64, 1e-20))).sum() + (self._u * q64).sum())
        runner = self._get_runner()
        for kernel, qf in zip(self._kernels, runner.messages(q)):
            value += float((q64 * (runner.to_host(qf).astype(np.float64) @ kernel.mu_full)).sum())
        return value


class DenseCRF2D(DenseCRF):
    """pydensecrf's ``DenseCRF2D(width, height, n_labels)`` (note: width first)."""

    def __init__(self, width, height, n_labels, backend="auto"):
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        super().__init__(int(width) * int(height), n_labels, backend)
        self._w, self._h = int(width), int(height)

    @staticmethod
    def _pair(name, value, count):
        v = np.broadcast_to(np.asarray(value, dtype=np.float64), (count,)) if np.ndim(value) == 0 \
            else np.asarray(value, dtype=np.float64)
        if v.shape != (count,) or not np.isfinite(v).all() or (v <= 0).any():
            raise ValueError(f"{name} must be a positive number or {count} of them, got {value!r}")
        return v.astype(np.float32)

    def _positions(self, sxy):
        return grid_features(self._h, self._w, *self._pair("sxy", sxy, 2))  # (N, 2)

    def addPairwiseGaussian(self, sxy, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC):
        """Smoothness kernel over ``(x / sx, y / sy)``; its lattice is reused by the next model of this
        size on the host (:mod:`crf.grid_cache`)."""
        sx, sy = self._pair("sxy", sxy, 2)
        self._add(lambda: grid_lattice_and_norm(self._h, self._w, sx, sy, self._backend), compat, kernel,
                  normalization)

    def addPairwiseBilateral(self, sxy, srgb, rgbim, compat, kernel=DIAG_KERNEL,
                             normalization=NORMALIZE_SYMMETRIC):
        """Appearance kernel over ``(x / sx, y / sy, r / sr, g / sg, b / sb)``; rgbim (H, W, 3) uint8."""
        image = check_image(rgbim, self._h, self._w)
        colour = image.reshape(-1, 3).astype(np.float32) / self._pair("srgb", srgb, 3)  # (N, 3)
        features = np.concatenate([self._positions(sxy), colour], axis=1)  # (N, 5)
        self._add(lambda: lattice_and_norm(features, self._backend), compat, kernel, normalization)
