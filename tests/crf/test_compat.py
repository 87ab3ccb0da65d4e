"""The pydensecrf facade on its own: layout, backends, conventions and bad inputs."""
import numpy as np
import pytest

import crf
import crf.compat.densecrf as dcrf
from crf.compat import utils
from crf.synthetic import photo, smooth_logits

H, W, L = 20, 30, 3


@pytest.fixture(scope="module")
def scene():
    image = photo(H, W, seed=2)
    unary = crf.unary_from_logits(smooth_logits(L, H, W, seed=3, stride=4)).reshape(L, -1)
    return image, np.ascontiguousarray(unary)


def _crf(image, unary, compat, normalization=dcrf.NORMALIZE_SYMMETRIC, backend="cpu"):
    d = dcrf.DenseCRF2D(W, H, L, backend=backend)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3, compat=compat, normalization=normalization)
    d.addPairwiseBilateral(sxy=20, srgb=13, rgbim=image, compat=compat, normalization=normalization)
    return d


def test_layout_and_native_equivalence(scene):
    image, unary = scene
    q = _crf(image, unary, 3.0).inference(5)
    assert q.shape == (L, H * W) and q.dtype == np.float32
    # scalar compat s attracts: the native Potts penalty s (1 - I) with w = 1 is the same CRF
    c = crf.DenseCRF(unary.reshape(L, H, W), backend="cpu")
    c.add_gaussian(3, 1.0, compat=3.0, normalization="symmetric")
    c.add_bilateral(image, 20, 13, 1.0, compat=3.0, normalization="symmetric")
    np.testing.assert_allclose(q.reshape(L, H, W), c.inference(5), atol=1e-5)
    # a vector compat penalises: diag(v) with v > 0 pushes labels apart, unlike the scalar
    v = _crf(image, unary, np.full(L, 3.0, np.float32)).inference(5)
    soft = np.exp(-unary) / np.exp(-unary).sum(0)
    agree = lambda a: (a.argmax(0) == soft.argmax(0)).mean()  # noqa: E731
    assert agree(v) < agree(q)


def test_matrix_is_symmetrised(scene):
    image, unary = scene
    m = np.random.default_rng(0).random((L, L)).astype(np.float32)
    a = _crf(image, unary, m).inference(4)
    b = _crf(image, unary, (0.5 * (m + m.T)).astype(np.float32)).inference(4)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_numpy_backend_and_stepping(scene):
    image, unary = scene
    ref = _crf(image, unary, 2.0, dcrf.NORMALIZE_AFTER, backend="numpy").inference(4)
    d = _crf(image, unary, 2.0, dcrf.NORMALIZE_AFTER)
    q, t1, t2 = d.startInference()
    for _ in range(4):
        d.stepInference(q, t1, t2)
    np.testing.assert_allclose(q, ref, atol=2e-5)
    np.testing.assert_allclose(np.array(d.inference(4)), q, atol=1e-7)


def test_no_unary_is_uniform():
    d = dcrf.DenseCRF(6, 3)
    np.testing.assert_allclose(d.inference(2), 1 / 3, rtol=1e-6)


def test_bad_inputs(scene):
    image, unary = scene
    d = dcrf.DenseCRF2D(W, H, L)
    with pytest.raises(ValueError, match=r"Need \(3, 600\)"):
        d.setUnaryEnergy(unary[:, :-1])
    with pytest.raises(ValueError, match="swapped"):
        d.addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.ascontiguousarray(image.transpose(1, 0, 2)), compat=3)
    with pytest.raises(TypeError, match="uint8"):
        d.addPairwiseBilateral(sxy=3, srgb=3, rgbim=image.astype(float), compat=3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        d.addPairwiseGaussian(sxy=3, compat=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="sxy"):
        d.addPairwiseGaussian(sxy=(1, 2, 3), compat=3)
    with pytest.raises(ValueError, match="normalization"):
        d.addPairwiseGaussian(sxy=3, compat=3, normalization=7)
    with pytest.raises(ValueError, match="normalization must be one of the NORMALIZE_"):
        d.addPairwiseGaussian(sxy=3, compat=3, normalization="x")
    with pytest.raises(ValueError, match="kernel must be"):
        d.addPairwiseGaussian(sxy=3, compat=3, kernel=None)
    with pytest.raises(ValueError, match="compat must be finite, got nan"):
        d.addPairwiseGaussian(sxy=3, compat=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        d.setUnaryEnergy(np.full((L, H * W), np.nan, np.float32))
    with pytest.raises(ValueError, match="real numbers, got dtype bool"):
        d.setUnaryEnergy(np.zeros((L, H * W), bool))
    with pytest.raises(ValueError, match="chdim must be -1"):
        utils.create_pairwise_bilateral((3, 3), (5, 5, 5), image, chdim=5)
    with pytest.raises(ValueError, match="startInference"):
        d.stepInference(np.zeros((L, 5), np.float32), None, None)
    with pytest.raises(ValueError, match=r"float64"):
        d.stepInference(np.zeros((L, H * W), np.float64), None, None)
    p = np.random.default_rng(0).random((L, H, W))
    p /= p.sum(0)
    with pytest.raises(ValueError, match=r"transpose\(2, 0, 1\)"):
        utils.unary_from_softmax(np.ascontiguousarray(p.transpose(1, 2, 0)))
    with pytest.raises(ValueError, match="finite"):
        utils.unary_from_softmax(np.where(p > 0.5, np.nan, p))
    np.testing.assert_allclose(utils.unary_from_softmax(2 * p), -np.log(np.clip(2 * p, 1e-5, 1)).reshape(L, -1),
                               rtol=1e-6)  # unnormalised, as pydensecrf takes it
    with pytest.raises(ValueError, match="gt_prob"):
        utils.unary_from_labels(np.zeros(3, int), 2, 1.5)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        utils.unary_from_labels(np.array([0, 3]), 2, 0.5)


def test_probabilities_as_unary_are_refused(scene):
    _, unary = scene
    d = dcrf.DenseCRF2D(W, H, L)
    with pytest.raises(ValueError, match="probabilities"):
        d.setUnaryEnergy(np.exp(-unary) / np.exp(-unary).sum(0))
