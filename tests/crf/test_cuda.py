"""CUDA against the CPU: the lattice filter and the mean field (simulator: tiny inputs only)."""
import numpy as np
import pytest

import crf
import crf.compat.densecrf as dcrf
from crf import lattice as L
from crf.synthetic import photo, smooth_logits

pytestmark = pytest.mark.cuda


def _size(in_cudasim, small, large):
    return small if in_cudasim else large


@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("reverse", [False, True])
def test_lattice_filter_cuda_matches_cpu(in_cudasim, d, reverse):
    rng = np.random.default_rng(d + 10 * reverse)
    n = _size(in_cudasim, 24, 5000)
    lat = L.build((rng.random((n, d)) * 3).astype(np.float32), backend="cpu")
    v = rng.standard_normal((n, 3)).astype(np.float32)
    ref = lat.filter(v, reverse=reverse, backend="cpu")
    got = lat.filter(v, reverse=reverse, backend="cuda")
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_device_array_in_device_array_out(in_cudasim):
    from numba import cuda
    rng = np.random.default_rng(3)
    n = _size(in_cudasim, 16, 2000)
    lat = L.build((rng.random((n, 2)) * 3).astype(np.float32), backend="cpu")
    v = rng.random((n, 2)).astype(np.float32)
    out = lat.filter(cuda.to_device(v), backend="cuda")
    assert hasattr(out, "copy_to_host")  # a device array
    assert hasattr(lat.filter(cuda.to_device(v), backend="auto"), "copy_to_host")  # "auto" follows it
    np.testing.assert_allclose(out.copy_to_host(), lat.filter(v, backend="cpu"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        lat.filter(cuda.to_device(v[:-1]), backend="cuda")


@pytest.mark.parametrize("normalization, compat", [
    ("per_pixel", None),
    ("symmetric", np.array([1.0, 2.0, 0.5])),
    ("none", np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])),
])
def test_mean_field_cuda_matches_cpu(in_cudasim, normalization, compat):
    h, w = _size(in_cudasim, (4, 5), (60, 80))
    image = photo(h, w, seed=4)
    unary = crf.unary_from_logits(smooth_logits(3, h, w, seed=5, stride=2))
    out = []
    for backend in ("cuda", "cpu"):
        c = crf.DenseCRF(unary, backend=backend)
        c.add_bilateral(image, 3, 10, 2.0, compat=compat, normalization=normalization)
        c.add_gaussian(1, 1.0, compat=compat, normalization=normalization)
        out.append((c.inference(2, track_free_energy=True), c.free_energy_history))
    (q_gpu, kl_gpu), (q_cpu, kl_cpu) = out
    np.testing.assert_allclose(q_gpu, q_cpu, atol=2e-5)
    np.testing.assert_allclose(kl_gpu, kl_cpu, rtol=1e-5)


def test_facade_cuda_stepping(in_cudasim):
    h, w = _size(in_cudasim, (3, 4), (50, 60))
    image = photo(h, w, seed=6)
    unary = np.ascontiguousarray(crf.unary_from_logits(smooth_logits(2, h, w, seed=7, stride=2)).reshape(2, -1))
    results = []
    for backend in ("cuda", "cpu"):
        d = dcrf.DenseCRF2D(w, h, 2, backend=backend)
        d.setUnaryEnergy(unary)
        d.addPairwiseBilateral(sxy=3, srgb=10, rgbim=image, compat=3)
        q, t1, t2 = d.startInference()
        d.stepInference(q, t1, t2)
        results.append((q.copy(), d.klDivergence(q)))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=2e-5)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)


def test_device_unary_in_device_q_out(in_cudasim):
    from numba import cuda
    h, w = _size(in_cudasim, (4, 5), (60, 80))
    image = photo(h, w, seed=8)
    unary = crf.unary_from_logits(smooth_logits(3, h, w, seed=9, stride=2))
    assert not unary.flags.c_contiguous  # a transposed array: the device copy keeps its strides on a GPU
    out = {}
    for name, u, img in (("host", unary, image), ("device", cuda.to_device(unary), cuda.to_device(image))):
        c = crf.DenseCRF(u, backend="cuda")
        c.add_bilateral(img, 3, 10, 2.0)
        c.add_gaussian(1, 1.0)
        out[name] = c.inference(2)
    assert isinstance(out["host"], np.ndarray) and hasattr(out["device"], "copy_to_host")
    np.testing.assert_array_equal(out["device"].copy_to_host(), out["host"])
    q = crf.deeplab_refine(cuda.to_device(image), cuda.to_device(np.pad(-unary, ((0, 0), (0, 2), (0, 1)))),
                           preset=crf.Preset("p", 2.0, 3, 10, 1.0, 1, 2, "a test"), backend="cuda")
    np.testing.assert_array_equal(q.copy_to_host(), out["host"])  # scores cropped on the device


def test_a_changed_weight_on_the_gpu_is_a_model_built_with_it(in_cudasim):
    h, w = _size(in_cudasim, (4, 5), (60, 80))
    image = photo(h, w, seed=4)
    unary = crf.unary_from_logits(smooth_logits(3, h, w, seed=5, stride=2))
    out = []
    for w_bilateral, w_gaussian, reweighted in ((4.0, 3.0, True), (1.5, 0.25, False)):
        c = crf.DenseCRF(unary, backend="cuda")
        c.add_bilateral(image, 3, 10, w_bilateral)
        c.add_gaussian(1, w_gaussian)
        c.inference(1)
        if reweighted:
            c.set_weight(0, 1.5)
            c.set_weight(1, 0.25)
        out.append(c.inference(2))
    np.testing.assert_array_equal(out[0], out[1])


def test_device_inputs_are_checked_on_the_device():
    from numba import cuda
    unary = crf.unary_from_logits(smooth_logits(3, 4, 5, seed=1, stride=2))
    bad = unary.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"finite.*\(2, 3, 1\)"):
        crf.DenseCRF(cuda.to_device(bad), backend="cuda")
    probabilities = np.exp(-unary) / np.exp(-unary).sum(axis=0)
    with pytest.raises(ValueError, match="probabilities"):
        crf.DenseCRF(cuda.to_device(probabilities.astype(np.float32)), backend="cuda")
    with pytest.raises(TypeError, match="needs backend='cuda'"):
        crf.DenseCRF(cuda.to_device(unary), backend="cpu")
    c = crf.DenseCRF(cuda.to_device(unary), backend="cuda")
    with pytest.raises(ValueError, match=r"\(H=4, W=5, 3\)"):
        c.add_bilateral(cuda.to_device(np.zeros((5, 4, 3), np.uint8)), 3, 10, 1.0)


def test_device_features_and_normalisers_equal_the_hosts():
    from crf import cuda as crf_cuda
    from crf.densecrf import bilateral_features, gaussian_features, inverse_norm
    image = photo(5, 6, seed=2)
    np.testing.assert_array_equal(crf_cuda.gaussian_features(5, 6, 3.0).copy_to_host(), gaussian_features(5, 6, 3.0))
    np.testing.assert_array_equal(crf_cuda.bilateral_features(image, 7.0, 3.0).copy_to_host(),
                                  bilateral_features(image, 7.0, 3.0))
    from numba import cuda
    k1 = np.random.default_rng(0).uniform(0.5, 40, (30, 1)).astype(np.float32)
    for root in (False, True):
        got = inverse_norm(cuda.to_device(k1), root, "cuda").copy_to_host()
        np.testing.assert_array_equal(got, inverse_norm(k1[:, 0].astype(np.float64), root, "cpu"))


def test_build_on_the_gpu_gives_a_device_lattice(in_cudasim):
    from crf.cuda import DeviceLattice
    rng = np.random.default_rng(12)
    features = (rng.random((_size(in_cudasim, 30, 4000), 3)) * 2).astype(np.float32)
    dev = L.build(features, backend="cuda")
    assert isinstance(dev, DeviceLattice)
    host, ref = L.Lattice.from_device(dev), L.build(features, backend="cpu")
    for name in ("offsets", "weights", "keys", "n1", "n2", "starts", "splat_point", "splat_weight"):
        np.testing.assert_array_equal(getattr(host, name), getattr(ref, name), err_msg=name)
    v = rng.standard_normal((features.shape[0], 2)).astype(np.float32)
    np.testing.assert_allclose(dev.filter(v), ref.filter(v, backend="cpu"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="from_device"):
        dev.filter(v, backend="cpu")


@pytest.mark.parametrize("d, reverse, scaled", [(2, False, True), (5, True, False)])
def test_cooperative_splat_blur_is_bit_identical_to_per_stage(in_cudasim, monkeypatch, d, reverse, scaled):
    """One cooperative launch (grid barriers between the splat's phases and the blurs) against d+3."""
    from numba import cuda

    from crf import config
    from crf import cuda as crf_cuda
    rng = np.random.default_rng(20 + d)
    n = _size(in_cudasim, 24, 5000)
    dev = L.build((rng.random((n, d)) * 3).astype(np.float32), backend="cpu").on_device()
    values = cuda.to_device(rng.standard_normal((n, 3)).astype(np.float32))
    pre = cuda.to_device(rng.uniform(0.5, 2.0, n).astype(np.float32)) if scaled else None
    out = {}
    for cooperative in (True, False):
        monkeypatch.setattr(config, "CUDA_COOPERATIVE", cooperative)
        out[cooperative] = dev.splat_blur(values, pre, reverse).copy_to_host()
        assert crf_cuda.launch_mode() == ("cooperative" if cooperative else "per-stage")
    np.testing.assert_array_equal(out[True], out[False])
    assert np.abs(out[True][:-1]).max() > 0 and not out[True][-1].any()  # a real result; row M stays zero


def test_mean_field_step_cooperative_equals_per_stage(in_cudasim, monkeypatch):
    from crf import config
    h, w = _size(in_cudasim, (4, 5), (60, 80))
    image = photo(h, w, seed=21)
    unary = crf.unary_from_logits(smooth_logits(3, h, w, seed=22, stride=2))
    out = []
    for cooperative in (True, False):
        monkeypatch.setattr(config, "CUDA_COOPERATIVE", cooperative)
        c = crf.DenseCRF(unary, backend="cuda")
        c.add_bilateral(image, 3, 10, 2.0)
        c.add_gaussian(1, 1.0)
        out.append(c.inference(2))
    np.testing.assert_array_equal(out[0], out[1])


def test_a_gpu_without_cooperative_launch_falls_back_with_a_warning(monkeypatch):
    from crf import cuda as crf_cuda

    def refuse(*args):
        raise RuntimeError("libcudadevrt.a not found")

    monkeypatch.setattr(crf_cuda, "_cooperative_failure", None)
    monkeypatch.setattr(crf_cuda._splat_blur_kernel, "specialize", refuse)
    rng = np.random.default_rng(23)
    lat = L.build((rng.random((16, 2)) * 3).astype(np.float32), backend="cpu")
    v = rng.standard_normal((16, 2)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="cooperative launches are unavailable.*libcudadevrt"):
        got = lat.filter(v, backend="cuda")
    assert crf_cuda.launch_mode() == "per-stage (RuntimeError: libcudadevrt.a not found)"
    np.testing.assert_allclose(got, lat.filter(v, backend="cpu"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seg_len", [1, 3, 32])
def test_segmented_splat_adds_up_vertices_of_many_points(in_cudasim, monkeypatch, seg_len):
    """A flat region puts many points on a few vertices: their entries span several segments."""
    from numba import cuda

    from crf import config
    rng = np.random.default_rng(24 + seg_len)
    n = _size(in_cudasim, 40, 20000)
    features = (rng.random((n, 3)) * 3).astype(np.float32)
    features[: n * 3 // 4] = 0.4  # three quarters of the points at one position
    lat = L.build(features, backend="cpu")
    assert np.diff(lat.starts).max() >= n * 3 // 4  # the flat region's vertices
    spanning = lat.starts[:-1] // seg_len != (lat.starts[1:] - 1) // seg_len
    assert spanning.any()  # vertices whose entries lie in several segments: the second phase adds them up
    values = rng.standard_normal((n, 2)).astype(np.float32)
    pre = rng.uniform(0.5, 2.0, n).astype(np.float32)
    monkeypatch.setattr(config, "CUDA_SPLAT_SEGMENT", seg_len)
    dev = lat.on_device()
    for cooperative in (True, False):
        monkeypatch.setattr(config, "CUDA_COOPERATIVE", cooperative)
        got = dev.splat_blur(cuda.to_device(values), cuda.to_device(pre)).copy_to_host()
        want = L.splat_blur_cpu(lat, values, pre)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
        assert not got[-1].any()


def test_profiled_mean_field_step_times_each_stage_and_steps_the_same(in_cudasim):
    h, w = _size(in_cudasim, (4, 5), (60, 80))
    c = crf.DenseCRF(crf.unary_from_logits(smooth_logits(3, h, w, seed=23, stride=2)), backend="cuda")
    c.add_bilateral(photo(h, w, seed=24), 3, 10, 2.0)
    c.add_gaussian(1, 1.0)
    runner = c._get_runner()
    q = runner.start()
    timings = {}
    profiled = runner.step(q, timings=timings).copy_to_host()
    assert set(timings) == {"splat+blur bilateral", "slice+message bilateral", "splat+blur gaussian",
                            "slice+message gaussian", "softmax"}
    np.testing.assert_array_equal(profiled, runner.step(q).copy_to_host())
