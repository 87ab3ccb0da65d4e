"""The dense CRF at a reduced resolution (crf.reduced, deeplab_refine's max_side) and Preset.scaled."""
import numpy as np
import pytest

import crf
from crf import reduced
from crf.synthetic import photo, smooth_logits


def test_reduced_shape():
    assert reduced.reduced_shape(3000, 4000, 1000) == (750, 1000)
    assert reduced.reduced_shape(4000, 3000, 1000) == (1000, 750)
    assert reduced.reduced_shape(300, 400, 400) == (300, 400)  # not longer: unchanged
    assert reduced.reduced_shape(300, 400, 1000) == (300, 400)
    assert reduced.reduced_shape(1, 4000, 100) == (1, 100)  # never below one pixel
    assert reduced.reduced_shape(333, 1000, 500) == (166, 500)  # round(166.5) to even
    for bad in (0, -5, 2.5, True, "500"):
        with pytest.raises(ValueError, match="max_side must be a positive integer"):
            reduced.reduced_shape(300, 400, bad)


def test_shrinking_averages_areas():
    """Area averaging undoes a nearest-neighbour enlargement by 2 exactly: each small pixel is the
    mean of the 2x2 block it covers, and the blocks are constant."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 10, 12)).astype(np.float32)
    np.testing.assert_array_equal(reduced.shrink_scores(scores.repeat(2, 1).repeat(2, 2), (10, 12)), scores)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(reduced.shrink_image(image.repeat(2, 0).repeat(2, 1), (10, 12)), image)
    # a 2x2 block of two values averages to their mean
    block = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    np.testing.assert_allclose(reduced.shrink_scores(block, (1, 1)), [[[0.5]]])


def test_enlarged_marginals_still_sum_to_one():
    rng = np.random.default_rng(1)
    q = rng.random((5, 9, 13)).astype(np.float32)
    q /= q.sum(axis=0)
    big = reduced.enlarge_marginals(q, (40, 50))
    assert big.shape == (5, 40, 50) and big.dtype == np.float32
    np.testing.assert_allclose(big.sum(axis=0), 1, atol=1e-6)
    assert big.min() >= q.min() - 1e-7 and big.max() <= q.max() + 1e-7  # convex combinations
    assert reduced.enlarge_marginals(q, (9, 13)) is q  # already that size


def test_preset_scaled():
    p = crf.get_preset("deeplab-v1-largefov-voc")
    s = p.scaled(0.25)
    assert (s.theta_alpha, s.theta_gamma) == (121 * 0.25, 3 * 0.25)
    assert (s.theta_beta, s.w_bilateral, s.w_gaussian, s.iterations) == (p.theta_beta, p.w_bilateral,
                                                                         p.w_gaussian, p.iterations)
    assert s.name == "deeplab-v1-largefov-voc x0.25"
    for bad in (0, -1, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="factor must be a positive number"):
            p.scaled(bad)


def test_max_side_not_shorter_than_the_image_changes_nothing():
    image, scores = photo(30, 40, seed=3), smooth_logits(4, 30, 40, seed=3)
    q = crf.deeplab_refine(image, scores, backend="cpu")
    for side in (40, 41, 1000):
        np.testing.assert_array_equal(crf.deeplab_refine(image, scores, backend="cpu", max_side=side), q)


@pytest.mark.parametrize("seed", [0, 1])
def test_reduced_crf_approximates_the_full_one(seed):
    """An image and scores that are a 2x nearest-neighbour enlargement of small ones hold nothing the
    small ones do not: refined at half size with the widths halved, the CRF should find what it
    finds at full size. Measured: 98.3 % of the labels and mean |dQ| 0.012 with the v1 preset
    (without halving theta_alpha and theta_gamma: 89-90 % and 0.043)."""
    small_image, small_scores = photo(60, 80, seed=seed), smooth_logits(5, 60, 80, seed=seed)
    image, scores = small_image.repeat(2, 0).repeat(2, 1), small_scores.repeat(2, 1).repeat(2, 2)
    full = crf.deeplab_refine(image, scores, "deeplab-v1-largefov-voc", backend="cpu")
    q = crf.deeplab_refine(image, scores, "deeplab-v1-largefov-voc", backend="cpu", max_side=80)
    assert q.shape == full.shape == (5, 120, 160) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=0), 1, atol=1e-5)
    assert (q.argmax(0) == full.argmax(0)).mean() >= 0.97
    assert np.abs(q - full).mean() <= 0.02


def test_the_reduced_model_is_built_at_the_reduced_size():
    image, scores = photo(60, 90, seed=2), smooth_logits(3, 60, 90, seed=2)
    model = crf.deeplab_crf(image, scores, "deeplab-v2-resnet101-voc", backend="cpu", max_side=45)
    assert (model.n_labels, model.height, model.width) == (3, 30, 45)


def test_max_side_refuses_device_arrays():
    class FakeDeviceArray:  # anything with the CUDA array interface counts as a device array
        __cuda_array_interface__ = {}
        shape = (30, 40, 3)

    with pytest.raises(ValueError, match="max_side needs the image and the scores on the host"):
        crf.deeplab_crf(FakeDeviceArray(), smooth_logits(3, 30, 40), max_side=20)
