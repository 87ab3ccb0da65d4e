"""How much memory a dense CRF needs on the host, before it is built.

A :class:`crf.DenseCRF` with L labels on an H x W image (N = H W pixels) holds, at the
peak of its inference (the last update, on the CPU):

* the unary energies and Q (the last update writes the result into Q's buffer and hands it
  over): two (N, L) float32 arrays, ``8 N L`` bytes;
* per kernel over d features whose lattice has M vertices:

  - the lattice (:meth:`crf.Lattice.nbytes`): each point's d+1 vertices and barycentric
    weights, and the same d+1 entries per point again as the splat's lists, ``16 N (d+1)``;
    two neighbours per vertex and axis, ``8 M (d+1)``; the splat lists' starts, ``8 (M+1)``;
    the vertex keys, ``4 M d``;
  - ``K 1``, ``4 N``, and the per-pixel normalisation (DeepLab's), ``4 N``; the symmetric one
    (pydensecrf's default) holds ``8 N``, and the CPU mean field adds ``K pre``, ``4 N`` (the
    NumPy reference one more (N, L) array, Q scaled before the filter);
  - the lattice values the mean field filters, two (M+1, C) float32 buffers, ``8 (M+1) C``
    (one where they fit in ``crf.config.CHAIN_BLUR_MAX_BYTES``, unless the lattice is blurred
    beside the larger one's splat: :func:`crf.lattice_cpu.splat_blur_many_cpu`), with C = L - 1 channels
    where the CPU derives the last label from the others (:func:`crf.densecrf.filters_complement`:
    21 labels, for one), else C = L.

Everything but M follows from the sizes. M depends on the image for the bilateral kernel
and is known only once its lattice is built (:meth:`crf.DenseCRF.summary` then reports
it); :func:`estimate_bytes` assumes, unless told:

* bilateral (d = 5): M = 1.2 N. On a photograph with DeepLab's widths (theta_alpha 67,
  theta_beta 3; ``bench/crf.py``'s photograph) M is 1.16 N at 320x240, 0.96 N at 500x375,
  0.57 N at 1000x750 and 0.30 N at 2000x1500: larger images put more pixels on each
  vertex, so the estimate is high for them. Smaller images have more (1.5 N at 160x120),
  and noise has (d+1) N = 6 N, every corner of every point a vertex of its own;
* Gaussian (d = 2): M = 1.2 N / theta_gamma^2, at most 3 N (on the pixel grid: 1.16 N, 0.29 N
  and 0.13 N measured at theta_gamma 1, 2 and 3, at any size).

With DeepLab's two kernels and theta_gamma = 3 that is about ``19 L + 250`` bytes a pixel
(``19 L + 240`` where the last label is derived): 0.64 GB a megapixel at 21 labels.
``bench/crf.py`` measures the whole process's peak above its resting size, the benchmark's own
inputs and the allocator's reserve included: 141-157 and 470-479 MiB at 500x375 and 1000x750.

Beyond the model, :mod:`crf.grid_cache` keeps the smoothness lattices of recent image sizes
for the next image of each, up to ``crf.config.GRID_CACHE_BYTES`` (128 MiB) in all; a
model shares its smoothness lattice with the cache, so the two do not add up while it lives.
"""
import math

import numba

from crf import config, reduced
from crf.densecrf import filters_complement
from crf.lattice_cpu import side_lattices

#: Assumed vertices per pixel of the bilateral lattice (see the module docstring).
BILATERAL_VERTICES_PER_PIXEL = 1.2
#: Assumed vertices per pixel of the Gaussian lattice, times theta_gamma^2.
GAUSSIAN_VERTICES_PER_PIXEL = 1.2


def lattice_bytes(n_points, d, n_vertices, n_labels, side=False):
    """Bytes of one kernel: its lattice, its normalisation and the values it filters.

    Parameters
    ----------
    n_points, d, n_vertices, n_labels : int
        N, the feature dimension, M and L.
    side : bool
        The mean field splats and blurs this lattice on one thread beside a larger one
        (:func:`crf.lattice_cpu.side_lattices`), with two buffers at any size.

    Returns
    -------
    int
    """
    d1 = d + 1
    structure = 16 * n_points * d1 + 8 * n_vertices * d1 + 8 * (n_vertices + 1) + 4 * n_vertices * d
    channels = n_labels - 1 if filters_complement(n_labels) else n_labels
    values = 4 * (n_vertices + 1) * channels
    # The CPU blurs values of up to CHAIN_BLUR_MAX_BYTES in place (one buffer), larger ones with two.
    buffers = 1 if values <= config.CHAIN_BLUR_MAX_BYTES and not side else 2
    return structure + 8 * n_points + buffers * values  # K 1 and the per-pixel normalisation: 8 N


def estimate_bytes(height, width, n_labels, theta_gamma=3.0, bilateral_vertices=None, gaussian_vertices=None):
    """Host memory of a :class:`crf.DenseCRF` with a bilateral and a Gaussian kernel, at its peak.

    Parameters
    ----------
    height, width, n_labels : int
    theta_gamma : float
        The Gaussian kernel's width in pixels (its lattice's size depends on it).
    bilateral_vertices, gaussian_vertices : int, optional
        The lattices' vertex counts M, where known; else the assumptions of the module
        docstring.

    Returns
    -------
    int
        Bytes, beyond the caller's own image and unary.
    """
    for name, v in (("height", height), ("width", width), ("n_labels", n_labels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not theta_gamma > 0:
        raise ValueError(f"theta_gamma must be positive, got {theta_gamma!r}")
    n = height * width
    if bilateral_vertices is None:
        bilateral_vertices = math.ceil(BILATERAL_VERTICES_PER_PIXEL * n)
    if gaussian_vertices is None:  # at most d+1 = 3 a pixel, each corner of each point its own vertex
        gaussian_vertices = min(3 * n, math.ceil(GAUSSIAN_VERTICES_PER_PIXEL * n / theta_gamma ** 2))
    # The threads of a mean-field step: one below SERIAL_WORK values of Q (crf.lattice_cpu.threads_for).
    channels = n_labels - 1 if filters_complement(n_labels) else n_labels
    threads = numba.get_num_threads() if n * channels >= config.SERIAL_WORK else 1
    _, side = side_lattices([(n, 5, bilateral_vertices), (n, 2, gaussian_vertices)], threads)
    return (8 * n * n_labels + lattice_bytes(n, 5, bilateral_vertices, n_labels, 0 in side)
            + lattice_bytes(n, 2, gaussian_vertices, n_labels, 1 in side))


def estimate_reduced_bytes(height, width, n_labels, max_side=None, theta_gamma=3.0):
    """:func:`estimate_bytes` of the CRF of an image refined with ``max_side`` (:mod:`crf.reduced`):
    at the reduced size, theta_gamma (given at full size) scaled with it."""
    h, w = (height, width) if max_side is None else reduced.reduced_shape(height, width, max_side)
    return estimate_bytes(h, w, n_labels, theta_gamma * max(h, w) / max(height, width))


def largest_side(height, width, n_labels, budget, theta_gamma=3.0):
    """The longest ``max_side`` whose :func:`estimate_reduced_bytes` is within ``budget`` bytes.

    Parameters
    ----------
    height, width, n_labels : int
    budget : int
        Bytes.
    theta_gamma : float
        At full size.

    Returns
    -------
    int or None
        ``max(height, width)`` when the full size fits; None when even a side of one pixel does not.
    """
    def fits(side):
        return estimate_reduced_bytes(height, width, n_labels, side, theta_gamma) <= budget

    lo, hi = 0, max(height, width)  # invariant: fits(hi) is false, and fits(lo) true unless lo is 0
    if fits(hi):
        return hi
    while hi - lo > 1:  # the estimate grows with the side
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo or None
