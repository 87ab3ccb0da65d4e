"""DenseCRF: invariants, the exact mean field, backends, helpers, presets and bad inputs."""
import numpy as np
import pytest

import crf
from crf import meanfield
from crf.lattice_reference import filter_numpy
from crf.synthetic import photo, smooth_logits

H, W, L = 24, 32, 4


@pytest.fixture(scope="module")
def scene():
    image = photo(H, W, seed=5)
    unary = crf.unary_from_logits(smooth_logits(L, H, W, seed=6, stride=4))
    return image, unary


def _softmax(u):
    e = np.exp(-(u - u.min(axis=0)))
    return e / e.sum(axis=0)


def _full_crf(image, unary, backend="cpu", normalization="per_pixel", compat=None, w=(4.0, 3.0)):
    c = crf.DenseCRF(unary, backend=backend)
    c.add_bilateral(image, 10, 13, w[0], compat=compat, normalization=normalization)
    c.add_gaussian(3, w[1], compat=compat, normalization=normalization)
    return c


@pytest.mark.parametrize("normalization", ["per_pixel", "symmetric"])
def test_lattice_mean_field_agrees_with_exact(scene, normalization):
    # Measured: 99.1% (per_pixel) and 98.4% (symmetric) of the labels agree with the exact mean
    # field after 10 iterations, mean |dQ| 0.007, while the CRF changes about 40% of the labels.
    image, unary = scene
    q = _full_crf(image, unary, normalization=normalization).inference(10)
    mu = 1.0 - np.eye(L)
    kernels = [(crf.bilateral_features(image, 10, 13), 4.0, mu, normalization),
               (crf.gaussian_features(H, W, 3), 3.0, mu, normalization)]
    exact = crf.exact_mean_field(unary.reshape(L, -1).T, kernels, 10).T.reshape(L, H, W)
    agree = (q.argmax(0) == exact.argmax(0)).mean()
    changed = (exact.argmax(0) != unary.argmin(0)).mean()
    print(f"{normalization}: labels agree {agree:.4f}, mean |dQ| {np.abs(q - exact).mean():.4f}, "
          f"CRF changed {changed:.3f}")
    assert changed > 0.2  # the pairwise terms really act
    assert agree >= 0.98
    assert np.abs(q - exact).mean() <= 0.012


@pytest.mark.parametrize("normalization", ["per_pixel", "symmetric", "none"])
@pytest.mark.parametrize("compat", [None, 2.0, np.array([1.0, 2.0, 0.5, 1.5])])
def test_numpy_and_cpu_agree(scene, normalization, compat):
    image, unary = scene
    ref = _full_crf(image, unary, "numpy", normalization, compat).inference(5)
    got = _full_crf(image, unary, "cpu", normalization, compat).inference(5)
    # unnormalised messages reach ~200: float32 rounding of the energies (different summation
    # orders in the two backends) then moves Q by up to ~3e-4
    np.testing.assert_allclose(got, ref, atol=1e-3 if normalization == "none" else 2e-5)


def test_no_pairwise_and_zero_weights_give_softmax(scene):
    image, unary = scene
    expected = _softmax(unary.astype(np.float64))
    np.testing.assert_allclose(crf.DenseCRF(unary, backend="cpu").inference(10), expected, atol=1e-6)
    q = _full_crf(image, unary, w=(0.0, 0.0)).inference(10)
    np.testing.assert_allclose(q, expected, atol=1e-6)
    np.testing.assert_allclose(crf.DenseCRF(unary, backend="cpu").inference(0), expected, atol=1e-6)


def test_q_is_a_distribution(scene):
    image, unary = scene
    q = _full_crf(image, unary).inference(10)
    assert q.dtype == np.float32 and q.shape == (L, H, W)
    assert (q >= 0).all()
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)


def test_permuting_labels_permutes_q(scene):
    image, unary = scene
    perm = np.array([2, 0, 3, 1])
    rng = np.random.default_rng(0)
    a = rng.random((L, L))
    mu = a + a.T
    for compat, compat_perm in ((None, None), (mu, mu[np.ix_(perm, perm)]),
                                (np.arange(1.0, L + 1), np.arange(1.0, L + 1)[perm])):
        q = _full_crf(image, unary, compat=compat).inference(5)
        qp = _full_crf(image, unary[perm], compat=compat_perm).inference(5)
        np.testing.assert_allclose(qp, q[perm], atol=1e-6)


def test_potts_scalar_and_matrix_forms_agree(scene):
    image, unary = scene
    q_scalar = _full_crf(image, unary, compat=1.5).inference(5)
    q_matrix = _full_crf(image, unary, compat=1.5 * (1 - np.eye(L))).inference(5)
    np.testing.assert_allclose(q_scalar, q_matrix, atol=1e-5)


def test_step_matches_inference_and_map(scene):
    image, unary = scene
    c = _full_crf(image, unary)
    q = c.start()
    for _ in range(3):
        q = c.step(q)
    np.testing.assert_allclose(q, c.inference(3), atol=1e-7)
    np.testing.assert_array_equal(c.map(3), q.argmax(0))


def test_free_energy(scene):
    image, unary = scene
    # without pairwise terms Q = softmax(-U) is P itself: KL(Q || P) = 0, so F = -log Z exactly
    unary = unary + np.random.default_rng(3).uniform(0, 5, (1, H, W)).astype(np.float32)  # log Z != 0
    c = crf.DenseCRF(unary, backend="cpu")
    u = unary.astype(np.float64)
    log_z = np.log(np.exp(-(u - u.min(0))).sum(0)) - u.min(0)
    assert abs(c.free_energy(c.start()) + log_z.sum()) <= 1e-6 * abs(log_z.sum())
    # with them: the free energy of every iterate, recorded, matches free_energy, and falls
    c = _full_crf(image, unary)
    c.inference(4, track_free_energy=True)
    assert len(c.free_energy_history) == 5
    q = c.start()
    for value in c.free_energy_history:
        assert value == pytest.approx(c.free_energy(q), rel=1e-6)
        q = c.step(q)
    assert c.free_energy_history[-1] < c.free_energy_history[0]


def test_generic_features_equal_bilateral(scene):
    image, unary = scene
    a = crf.DenseCRF(unary, backend="cpu")
    a.add_bilateral(image, 10, 13, 4.0)
    b = crf.DenseCRF(unary, backend="cpu")
    b.add_kernel(crf.bilateral_features(image, 10, 13).T.reshape(5, H, W), 4.0)
    np.testing.assert_array_equal(a.inference(3), b.inference(3))


def test_features_are_positions_and_colours_over_theta():
    h, w = 3, 5
    rows, cols = np.divmod(np.arange(h * w), w)  # points in raster order: x is the column
    np.testing.assert_array_equal(crf.gaussian_features(h, w, 2.5),
                                  np.stack([cols / np.float32(2.5), rows / np.float32(2.5)], 1).astype(np.float32))
    from crf.densecrf import grid_features  # pydensecrf's sxy may differ along x and y
    np.testing.assert_array_equal(grid_features(h, w, np.float32(2), np.float32(4)),
                                  np.stack([cols / 2, rows / 4], 1).astype(np.float32))
    image = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    got = crf.bilateral_features(image, 4.0, 8.0)
    assert got.shape == (h * w, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, :2], np.stack([cols, rows], 1) / 4.0, rtol=1e-7)
    np.testing.assert_allclose(got[:, 2:], image.reshape(-1, 3) / 8.0, rtol=1e-7)


def test_unary_helpers():
    rng = np.random.default_rng(2)
    p = rng.random((3, 4, 5))
    p /= p.sum(0)
    np.testing.assert_allclose(crf.unary_from_softmax(p), -np.log(p), rtol=1e-6)
    p[0, 0, 0], p[1, 0, 0] = 0.0, p[0, 0, 0] + p[1, 0, 0]
    assert np.isfinite(crf.unary_from_softmax(p)).all()
    logits = rng.standard_normal((3, 4, 5))
    np.testing.assert_allclose(np.exp(-crf.unary_from_logits(logits)),
                               np.exp(logits) / np.exp(logits).sum(0), rtol=1e-5)
    labels = np.array([[0, 1], [2, 255]])
    u = crf.unary_from_labels(labels, 3, gt_prob=0.7, unsure=255)
    np.testing.assert_allclose(np.exp(-u[:, 0, 0]), [0.7, 0.15, 0.15], rtol=1e-6)
    np.testing.assert_allclose(np.exp(-u[:, 1, 0]), [0.15, 0.15, 0.7], rtol=1e-6)
    np.testing.assert_allclose(np.exp(-u[:, 1, 1]), [1 / 3] * 3, rtol=1e-6)


def test_deeplab_refine_is_the_offline_tool(scene):
    image, unary = scene
    scores = np.zeros((L, H + 5, W + 3), np.float32)  # padded like a 513 x 513 output
    scores[:, :H, :W] = -unary
    scores[:, H:, :] = 50.0  # outside the image: must be ignored
    preset = crf.get_preset("deeplab-v2-resnet101-voc")
    assert (preset.w_bilateral, preset.theta_alpha, preset.theta_beta, preset.w_gaussian,
            preset.theta_gamma, preset.iterations) == (4, 67, 3, 3, 1, 10)
    got = crf.deeplab_refine(image, scores, preset, backend="cpu")
    c = crf.DenseCRF(unary, backend="cpu")
    c.add_bilateral(image, 67, 3, 4)
    c.add_gaussian(1, 3)
    np.testing.assert_array_equal(got, c.inference(10))
    assert crf.PRESETS["deeplab-v1-largefov-voc"].theta_alpha == 121
    assert crf.PRESETS["deeplab-v2-vgg16-voc"].theta_gamma == 2


def test_caffe_layer_working_region(scene):
    image, unary = scene
    hp, wp = H + 8, W + 8
    scores = np.zeros((L, hp, wp), np.float32)
    scores[:, :H, :W] = -unary
    data = np.zeros((3, hp, wp), np.float32)
    data[:, :H, :W] = image[..., ::-1].transpose(2, 0, 1) - np.array([104.008, 116.669, 122.675])[:, None, None]
    q = crf.caffe_layer_refine(scores, data, (H, W), "deeplab-v1-largefov-voc", backend="cpu")
    assert q.shape == (L, hp, wp)
    assert (q[:, H:, :] == 0).all() and (q[:, :, W:] == 0).all()
    np.testing.assert_allclose(q[:, :H, :W].sum(0), 1.0, atol=1e-5)
    offline = crf.deeplab_refine(image, scores, "deeplab-v1-largefov-voc", backend="cpu")
    # colour order and offset change the lattice slightly: nearly the same labels
    assert (q[:, :H, :W].argmax(0) == offline.argmax(0)).mean() >= 0.97
    # a cropped image (padded size <= real size) uses the whole blob
    q = crf.caffe_layer_refine(scores, data, (hp + 10, wp + 10), "deeplab-v1-largefov-voc", backend="cpu")
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


# -- bad input -----------------------------------------------------------------------------------

def test_bad_unary():
    u = np.zeros((2, 3, 4), np.float32)
    for bad, match in ((np.zeros((3, 4)), r"\(L, H, W\)"),
                       (np.where(np.arange(24).reshape(2, 3, 4) == 5, np.nan, u), "finite"),
                       (np.where(np.arange(24).reshape(2, 3, 4) == 5, np.inf, u), "finite"),
                       (np.full((2, 3, 4), 0.5, np.float32), "probabilities")):
        with pytest.raises(ValueError, match=match):
            crf.DenseCRF(bad)
    with pytest.raises(TypeError):
        crf.DenseCRF(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match=r"must fit in float32, got 1e\+300 at \(label, row, col\) = \(1, 2, 3\)"):
        crf.DenseCRF(np.where(np.arange(24).reshape(2, 3, 4) == 23, 1e300, 0.0))


def test_bad_image(scene):
    image, unary = scene
    c = crf.DenseCRF(unary, backend="cpu")
    with pytest.raises(ValueError, match="swapped"):
        c.add_bilateral(np.ascontiguousarray(image.transpose(1, 0, 2)), 10, 13, 4)
    with pytest.raises(TypeError, match="uint8"):
        c.add_bilateral(image.astype(np.float32), 10, 13, 4)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        c.add_bilateral(image[..., :2], 10, 13, 4)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        c.add_bilateral(image[..., 0], 10, 13, 4)
    with pytest.raises(ValueError, match="theta_alpha"):
        c.add_bilateral(image, 0, 13, 4)
    with pytest.raises(ValueError, match="theta_gamma"):
        c.add_gaussian(-1, 3)
    with pytest.raises(ValueError, match="w must"):
        c.add_gaussian(3, np.nan)
    with pytest.raises(ValueError, match=r"max \|f\| = .*is a theta .* far too small"):
        c.add_bilateral(image, 1e-30, 1e-30, 4)


def test_bad_compat_and_options(scene):
    _, unary = scene
    c = crf.DenseCRF(unary, backend="cpu")
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        c.add_gaussian(3, 1, compat=np.ones(3))
    with pytest.raises(ValueError, match="symmetric"):
        c.add_gaussian(3, 1, compat=np.arange(16.0).reshape(4, 4))
    with pytest.raises(ValueError, match="normalization"):
        c.add_gaussian(3, 1, normalization="after")
    with pytest.raises(ValueError, match="iterations"):
        c.inference(-1)
    with pytest.raises(ValueError, match="backend"):
        crf.DenseCRF(unary, backend="gpu")
    with pytest.raises(ValueError, match="features"):
        c.add_kernel(np.zeros((2, W, H)), 1.0)
    with pytest.raises(ValueError, match="preset"):
        crf.get_preset("deeplab-v3")


def test_bad_probabilities():
    p = np.full((3, 2, 2), 0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        crf.unary_from_softmax(p)
    with pytest.raises(ValueError, match="logits"):
        crf.unary_from_softmax(np.random.default_rng(0).standard_normal((3, 2, 2)))
    with pytest.raises(ValueError, match="label axis last"):
        crf.unary_from_softmax(np.full((2, 2, 4), 0.25))
    with pytest.raises(ValueError, match="ragged sequence"):
        crf.unary_from_softmax([[[0.5, 0.5]], [[0.5]]])
    with pytest.raises(ValueError, match="do not fit in float32"):
        crf.unary_from_logits(np.array([[[1e300]], [[-1e300]]]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        crf.unary_from_labels(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="gt_prob"):
        crf.unary_from_labels(np.array([[0, 1]]), 3, gt_prob=1.0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 13)])
def test_odd_sizes(shape):
    h, w = shape
    image = photo(h, w, seed=1)
    unary = crf.unary_from_logits(smooth_logits(3, h, w, seed=2, stride=2))
    results = [_full_crf(image, unary, backend).inference(3) for backend in ("numpy", "cpu")]
    np.testing.assert_allclose(results[1], results[0], atol=2e-5)
    np.testing.assert_allclose(results[1].sum(0), 1.0, atol=1e-5)
    single = crf.DenseCRF(np.zeros((1, h, w), np.float32), backend="cpu")  # one label: Q = 1
    single.add_gaussian(3, 3)
    np.testing.assert_array_equal(single.inference(2), 1.0)


def test_probabilities_are_not_scores(scene):
    image, unary = scene
    probs = np.exp(-unary) / np.exp(-unary).sum(0)
    with pytest.raises(ValueError, match="pre-softmax"):
        crf.deeplab_refine(image, probs)
    with pytest.raises(ValueError, match="probabilities"):
        crf.DenseCRF(probs)


def test_cuda_backend_without_gpu_says_so(scene):
    from crf.backend import cuda_usable
    from numba import config
    if cuda_usable() or config.ENABLE_CUDASIM:
        pytest.skip("a GPU (or the simulator) is present")
    image, unary = scene
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        crf.DenseCRF(unary, backend="cuda")


def test_two_buffer_blur_in_mean_field(scene, monkeypatch):
    from crf import config as crf_config
    image, unary = scene
    ref = _full_crf(image, unary, "numpy").inference(4)
    monkeypatch.setattr(crf_config, "CHAIN_BLUR_MAX_BYTES", 0)
    np.testing.assert_allclose(_full_crf(image, unary, "cpu").inference(4), ref, atol=2e-5)


def test_summary_reports_the_lattices_and_the_times():
    rng = np.random.default_rng(21)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    model = crf.deeplab_crf(image, rng.standard_normal((4, 12, 16)).astype(np.float32),
                            preset="deeplab-v1-largefov-voc", backend="cpu")
    assert model.inference_seconds is None
    before = model.summary()
    assert before[0] == "dense CRF: 4 labels, 12 x 16 pixels, backend cpu" and len(before) == 3
    bilateral, gaussian = model.kernels
    assert f"bilateral (d=5, w=4): {bilateral.lattice.n_vertices:,} lattice vertices" in before[1]
    assert f"gaussian (d=2, w=3): {gaussian.lattice.n_vertices:,} lattice vertices" in before[2]
    model.inference(3)
    assert model.inference_seconds > 0 and "inference: 3 iterations in" in model.summary()[-1]
    # deeplab_refine is this model run for the preset's iterations
    np.testing.assert_array_equal(model.inference(10), crf.deeplab_refine(image, -model.unary,
                                                                          "deeplab-v1-largefov-voc", backend="cpu"))


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (33, 21), (100, 64), (21, 1000)])
def test_transpose_is_the_layout_change(shape):
    rng = np.random.default_rng(sum(shape))
    src = rng.standard_normal(shape).astype(np.float32)
    got = meanfield.transpose(src)
    assert got.flags.c_contiguous and got.shape == shape[::-1]
    np.testing.assert_array_equal(got, src.T)
    out = np.full(shape[::-1], np.nan, np.float32)
    assert meanfield.transpose(src, out) is out
    np.testing.assert_array_equal(out, src.T)


def _model_of(n_labels, backend, normalization, compat):
    image = photo(H, W, seed=5)
    return _full_crf(image, crf.unary_from_logits(smooth_logits(n_labels, H, W, seed=6, stride=4)), backend,
                     normalization, compat)


def _compat_of(kind, n_labels):
    if kind == "diagonal":
        return np.linspace(0.5, 2.0, n_labels)
    if kind == "matrix":
        m = np.random.default_rng(0).random((n_labels, n_labels))
        return m + m.T
    return kind


@pytest.mark.parametrize("n_labels", [2, 5])
@pytest.mark.parametrize("normalization", ["per_pixel", "symmetric", "none"])
@pytest.mark.parametrize("compat", [None, "diagonal", "matrix"])
def test_the_last_label_derived_from_the_others(monkeypatch, n_labels, normalization, compat):
    """Q's rows sum to one and the filter is linear, so the CPU filters L - 1 labels and takes the
    last one's filter as ``K pre`` minus the others': the Q of filtering every label, to rounding
    (measured: max |dQ| 6e-7 normalised, 1.1e-5 unnormalised, as CPU against NumPy)."""
    compat = _compat_of(compat, n_labels)
    model = _model_of(n_labels, "cpu", normalization, compat)
    derived = model.inference(5)
    assert sorted(channels for _, channels in model._runner._scratch) == [n_labels - 1] * 2  # it ran
    monkeypatch.setattr(crf.config, "COMPLEMENT_LABEL", False)
    every = _model_of(n_labels, "cpu", normalization, compat)
    whole = every.inference(5)
    assert sorted(channels for _, channels in every._runner._scratch) == [n_labels] * 2
    reference = _model_of(n_labels, "numpy", normalization, compat).inference(5)
    atol = 1e-4 if normalization == "none" else 2e-6
    np.testing.assert_allclose(derived, whole, atol=atol)
    np.testing.assert_allclose(derived, reference, atol=atol)
    np.testing.assert_array_equal(derived.argmax(0), whole.argmax(0))


def test_the_complement_identity_on_the_reference():
    """What the CPU relies on, in the NumPy reference: for rows of Q that sum to one, the filter of
    the last label is the filter of ``pre`` minus the others' (``pre`` = 1 without symmetric
    normalisation)."""
    model = _model_of(5, "numpy", "symmetric", None)
    q = model._get_runner().start()  # (N, L): softmax(-U)
    for kernel in model.kernels:
        filtered = filter_numpy(kernel.lattice, q * kernel.pre[:, None], False)
        complement = filter_numpy(kernel.lattice, kernel.pre[:, None], False)[:, 0]
        np.testing.assert_allclose(filtered[:, -1], complement - filtered[:, :-1].sum(1), atol=2e-6)


def test_a_q_from_the_caller_is_filtered_whole():
    """``step`` takes any Q: rows that do not sum to one get every label filtered."""
    model, reference = (_model_of(5, backend, "per_pixel", None) for backend in ("cpu", "numpy"))
    q = 1.5 * model.start()
    np.testing.assert_allclose(model.step(q), reference.step(q), atol=2e-5)


def test_the_pydensecrf_facade_derives_it_too():
    from crf.compat import densecrf as dcrf
    image = photo(H, W, seed=5)
    unary = crf.unary_from_logits(smooth_logits(5, H, W, seed=6, stride=4))
    models = {backend: dcrf.DenseCRF2D(W, H, 5, backend=backend) for backend in ("cpu", "numpy")}
    for d in models.values():
        d.setUnaryEnergy(unary.reshape(5, -1))
        d.addPairwiseBilateral(sxy=10, srgb=13, rgbim=image, compat=4)
        d.addPairwiseGaussian(sxy=3, compat=3)
    q = {backend: np.array(d.inference(3)) for backend, d in models.items()}
    assert sorted(channels for _, channels in models["cpu"]._runner._scratch) == [4, 4]
    np.testing.assert_allclose(q["cpu"], q["numpy"], atol=2e-6)


@pytest.mark.parametrize("normalization", ["per_pixel", "symmetric", "none"])
@pytest.mark.parametrize("size", [(H, W), (128, 160)])  # 128x160: the kernels run on every thread
def test_an_inference_keeps_q_without_its_last_label(monkeypatch, normalization, size):
    """Where every update derives the last label, inference's Q leaves it out until the last
    update (``HostRunner.start(narrow=True)``): the same bits as a Q of every label, in DenseCRF
    and in the pydensecrf facade; with no update or the free energy tracked, Q keeps every label."""
    from crf.compat import densecrf as dcrf
    from crf.densecrf import HostRunner
    h, w = size
    image = photo(h, w, seed=5)
    unary = crf.unary_from_logits(smooth_logits(5, h, w, seed=6, stride=4))
    model = _full_crf(image, unary, "cpu", normalization)
    runner = model._get_runner()
    assert runner.derives_last() and runner.start(narrow=True).shape == (h * w, 4)
    facade = dcrf.DenseCRF2D(w, h, 5)
    facade.setUnaryEnergy(unary.reshape(5, -1))
    facade.addPairwiseBilateral(sxy=10, srgb=13, rgbim=image, compat=4)
    facade.addPairwiseGaussian(sxy=3, compat=3)
    narrow, narrow_facade = model.inference(4), np.array(facade.inference(4))
    tracked, none = model.inference(4, track_free_energy=True), model.inference(0)
    widths = []
    start = HostRunner.start
    monkeypatch.setattr(HostRunner, "start", lambda self, narrow=False: widths.append(narrow) or start(self))
    np.testing.assert_array_equal(model.inference(4), narrow)
    np.testing.assert_array_equal(np.array(facade.inference(4)), narrow_facade)
    assert widths == [True, True]  # both asked for it, and got every label this time
    np.testing.assert_allclose(tracked, narrow, atol=1e-5)  # points first, then transposed
    np.testing.assert_allclose(none, _softmax(unary), atol=1e-6)  # every label: softmax(-U)


def test_a_narrow_q_needs_updates_that_derive_the_last_label():
    model = _model_of(5, "cpu", "per_pixel", None)
    runner = model._get_runner()
    with pytest.raises(ValueError, match="narrow Q"):
        runner.step(runner.start(narrow=True))  # sums_to_one=False: the last label would be needed
    with pytest.raises(ValueError, match="narrow Q"):
        runner.step(runner.start()[:, :3].copy(), sums_to_one=True)  # two labels short
    with pytest.raises(ValueError, match="q must have shape"):
        runner.step(runner.start().ravel(), sums_to_one=True)  # not (N, L) at all
    for other in (_model_of(4, "cpu", "per_pixel", None), _model_of(5, "numpy", "per_pixel", None)):
        runner = other._get_runner()  # 4 labels: not derived; NumPy: every label filtered
        assert not runner.derives_last() and runner.start(narrow=True).shape[1] == other.n_labels


def test_where_the_complement_pays(monkeypatch):
    from crf.densecrf import filters_complement
    assert [n for n in range(1, 26) if filters_complement(n)] == [2, 5, 9, 13, 17, 21, 25]
    monkeypatch.setattr(crf.config, "COMPLEMENT_LABEL", False)
    assert not filters_complement(21)


def test_updates_overwrite_one_buffer_and_never_the_callers_q(scene):
    """The CPU update writes the new Q over the old one (the splat has read Q before the fused
    pass writes it): the same bits as into another array, and an array the runner does not
    own is only read."""
    image, unary = scene
    c = crf.DenseCRF(unary, backend="cpu")
    c.add_bilateral(image, 10, 5, w=4)
    c.add_gaussian(3, 3)
    runner = c._get_runner()
    start = runner.start().copy()
    outside = start.copy()
    expected = runner.step(outside).copy()
    np.testing.assert_array_equal(outside, start)  # not the runner's: read, not written
    q0 = runner.start()
    q1 = runner.step(q0)
    assert q1 is q0 and runner.step(q1) is q0  # one buffer, no new array per update
    q0 = runner.start()
    np.testing.assert_array_equal(runner.step(q0), expected)  # in place: the same bits
    q = c.start()
    kept = q.copy()
    c.step(q)
    np.testing.assert_array_equal(q, kept)  # the public API never writes the caller's Q


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_a_returned_q_is_never_written_again(scene, backend):
    """The last update writes the result into the runner's Q buffer and hands it over: later
    inferences and steps of the same model must leave it as it was."""
    image, unary = scene
    c = _full_crf(image, unary, backend=backend)
    first = c.inference(3)
    kept = first.copy()
    second = c.inference(1)
    stepped = c.step(second)
    for q in (second, stepped):
        assert not np.shares_memory(first, q)
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(first, second)  # a different Q was computed meanwhile
    from crf.compat import densecrf as dcrf
    d = dcrf.DenseCRF2D(W, H, L, backend=backend)
    d.setUnaryEnergy(unary.reshape(L, -1))
    d.addPairwiseGaussian(sxy=3, compat=3)
    first = d.inference(2)
    kept = first.copy()
    d.inference(1)
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("compat", [None, 1.0 - np.eye(L)])
def test_last_update_written_labels_first_is_the_same_q(scene, compat):
    """On the host the last update writes Q (L, N) straight from the softmax's blocks: bit for
    bit the points-first update transposed, in DenseCRF and in the pydensecrf facade."""
    image, unary = scene
    for backend in ("cpu", "numpy"):
        c = _full_crf(image, unary, backend=backend, compat=compat)
        runner = c._get_runner()
        q = runner.start()
        for _ in range(2):
            q = runner.step(q)
        expected = q.T.reshape(L, H, W).copy()
        np.testing.assert_array_equal(c.inference(2), expected)
        q = runner.start()
        q = runner.step(q)
        q_last = runner.step(q, labels_major=True)
        assert q_last.shape == (L, H * W) and q_last.flags.c_contiguous
        np.testing.assert_array_equal(q_last.reshape(L, H, W), expected)
        np.testing.assert_array_equal(c.step(c.step(c.start())), expected)
        # with the free energy recorded the last update stays points first: the same Q
        np.testing.assert_array_equal(c.inference(2, track_free_energy=True), expected)
    from crf.compat import densecrf as dcrf
    d = dcrf.DenseCRF2D(W, H, L)
    d.setUnaryEnergy(unary.reshape(L, -1))
    d.addPairwiseBilateral(sxy=10, srgb=13, rgbim=np.ascontiguousarray(image), compat=4)
    d.addPairwiseGaussian(sxy=3, compat=3)
    runner = d._get_runner()
    q = runner.start()
    for _ in range(2):
        q = runner.step(q)
    expected = q.T.copy()
    np.testing.assert_array_equal(np.array(d.inference(2)), expected)
    q, tmp1, tmp2 = d.startInference()
    for _ in range(2):
        d.stepInference(q, tmp1, tmp2)
    np.testing.assert_array_equal(q, expected)
