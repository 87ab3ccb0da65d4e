"""``deeplab check`` cases for the dense CRF: ``cases(backend, quick, rng)``.

Each case yields ``(name, max_abs_error, tolerance)``: the chosen backend
against the NumPy reference, and the lattice against the exact Gaussian
filter and the exact mean field (tolerances are the bounds measured by
tests/crf).
"""
import numpy as np

from crf import lattice as lattice_mod
from crf.lattice_reference import filter_numpy
from crf.densecrf import DenseCRF, bilateral_features, gaussian_features
from crf.exact import exact_filter, exact_mean_field
from crf.synthetic import photo, smooth_logits
from crf.unary import unary_from_logits

_EXACT_BOUNDS = {2: 0.15, 5: 0.35}  # max |D^-1 K v - exact|, values in [0, 1] (tests/crf/test_lattice.py)


def _filter(lattice, values, backend):
    if backend == "cuda":
        from crf import cuda as crf_cuda
        return crf_cuda.lattice_filter(lattice, values, False)
    return lattice.filter(values, backend=backend)


def _described(backend):
    """The backend's name; on the GPU with how the filter launched (``crf.cuda.launch_mode``)."""
    if backend == "cuda":
        from crf import cuda as crf_cuda
        return f"cuda ({crf_cuda.launch_mode()} launches)"
    return backend


def cases(backend="cpu", quick=False, rng=None):
    """Yield ``(name, max_abs_error, tolerance)`` for the CRF's kernels on ``backend``."""
    rng = np.random.default_rng(0) if rng is None else rng
    n = 200 if quick else 600
    for d in (2, 5):
        f = (rng.random((n, d)) * 3).astype(np.float32)  # points about a standard deviation apart
        v = rng.random((n, 3)).astype(np.float32)
        ref_lattice = lattice_mod.build(f, backend="numpy")
        ref = filter_numpy(ref_lattice, v, False)
        lat = lattice_mod.build(f, backend="cpu")
        if backend != "numpy":
            got = _filter(lat, v, backend)
            yield (f"lattice filter d={d}, {_described(backend)} vs numpy (relative)",
                   float(np.abs(got - ref).max() / np.abs(ref).max()), 1e-5)
        ones = filter_numpy(ref_lattice, np.ones((n, 1), np.float32), False)
        normalised = ref / ones
        yield (f"lattice D^-1 K c = c, d={d}",
               float(np.abs(filter_numpy(ref_lattice, np.full((n, 1), 0.5, np.float32), False)
                            / ones - 0.5).max()), 1e-6)
        exact = exact_filter(f, v) / exact_filter(f, np.ones((n, 1)))
        yield f"lattice vs exact Gaussian, d={d} (normalised)", float(np.abs(normalised - exact).max()), \
            _EXACT_BOUNDS[d]
    h, w, n_labels = (16, 20, 3) if quick else (24, 32, 4)
    image = photo(h, w, seed=int(rng.integers(1 << 16)))
    unary = unary_from_logits(smooth_logits(n_labels, h, w, seed=int(rng.integers(1 << 16)), stride=4))

    def run(b, u=unary):
        crf = DenseCRF(u, backend=b)
        crf.add_bilateral(image, 10, 13, 4)
        crf.add_gaussian(3, 3)
        return crf.inference(5)

    q_ref = run("numpy")
    if backend != "numpy":
        yield f"mean field (5 iterations), {backend} vs numpy", float(np.abs(run(backend) - q_ref).max()), 2e-5
    if backend == "cpu":  # 5 labels: the CPU filters 4 and derives the last (crf.densecrf.filters_complement)
        u5 = unary_from_logits(smooth_logits(5, h, w, seed=int(rng.integers(1 << 16)), stride=4))
        yield ("mean field, 5 labels (the last derived), cpu vs numpy",
               float(np.abs(run("cpu", u5) - run("numpy", u5)).max()), 2e-5)
    mu = 1.0 - np.eye(n_labels)
    kernels = [(bilateral_features(image, 10, 13), 4.0, mu, "per_pixel"),
               (gaussian_features(h, w, 3), 3.0, mu, "per_pixel")]
    q_exact = exact_mean_field(unary.reshape(n_labels, -1).T, kernels, 5).T.reshape(n_labels, h, w)
    yield ("mean field, lattice vs exact: fraction of labels that differ",
           float((q_ref.argmax(0) != q_exact.argmax(0)).mean()), 0.03)
