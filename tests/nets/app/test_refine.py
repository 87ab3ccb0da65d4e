"""``deeplab crf``'s inputs: probabilities in either layout, checked; scores and probabilities agree."""
import warnings

import numpy as np
import pytest

import crf
from nets.app.refine import check_probabilities, refine


def test_probabilities_layouts_and_bad_input():
    rng = np.random.default_rng(0)
    p = rng.random((4, 5, 7)).astype(np.float32)
    p /= p.sum(0)
    np.testing.assert_array_equal(check_probabilities(p, 5, 7), p)
    np.testing.assert_array_equal(check_probabilities(p.transpose(1, 2, 0), 5, 7), p)
    with pytest.raises(ValueError, match="swapped"):
        check_probabilities(p.transpose(0, 2, 1), 5, 7)
    with pytest.raises(ValueError, match="sum to 1"):
        check_probabilities(p * 2 / 3, 5, 7)
    with pytest.raises(ValueError, match="finite"):
        check_probabilities(np.where(p > 0.5, np.nan, p), 5, 7)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_probabilities(np.log(p), 5, 7)
    with pytest.raises(ValueError, match="does not match"):
        check_probabilities(p, 6, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_probabilities(p.astype(np.float64), 5, 7)


def test_refine_from_probabilities_agrees_with_refine_from_scores(largefov, sample):
    image = sample[0]
    result = largefov.segment(image, backend="cpu")
    from_probs = refine(image, probabilities=result.probabilities, preset="deeplab-v1-largefov-voc", backend="cpu")
    from_scores = refine(image, probabilities=result.scores, logits=True, preset="deeplab-v1-largefov-voc",
                         backend="cpu")
    np.testing.assert_allclose(from_scores, crf.deeplab_refine(image, result.scores, "deeplab-v1-largefov-voc",
                                                               backend="cpu"), atol=1e-6)
    # -log P equals -score up to a constant per pixel, except where P is clipped at 1e-5.
    assert (from_probs.argmax(0) == from_scores.argmax(0)).mean() > 0.995
