"""crf.memory: the host memory of a dense CRF, estimated before it is built."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crf
from crf import config as crf_config
from crf import memory
from crf.synthetic import photo, smooth_logits

PHOTO = Path(__file__).resolve().parent.parent / "data" / "photo" / "grace_hopper_320x240.png"


def _held_bytes(model, q):
    """What a DenseCRF holds after inference, array by array, and the Q it returned (the runner's
    Q buffer, handed over)."""
    runner = model._runner
    assert runner._q is None
    total = model._u.nbytes + q.nbytes
    for kernel in model.kernels:
        arrays = (kernel.pre, kernel.post, kernel.k1, kernel.complement)
        total += kernel.lattice.nbytes() + sum(v.nbytes for v in arrays if v is not None)
    return total + sum(buf.nbytes for buffers in runner._scratch.values() for buf in buffers)


@pytest.mark.parametrize("height, width, n_labels", [(24, 32, 4), (120, 160, 21)])
def test_the_estimate_counts_every_array_when_the_vertices_are_known(height, width, n_labels):
    """The small case blurs its values in place (one buffer), the large one with two."""
    model = crf.DenseCRF(crf.unary_from_logits(smooth_logits(n_labels, height, width, seed=1)), backend="cpu")
    model.add_bilateral(photo(height, width, seed=1), 67, 3, 4)
    model.add_gaussian(3, 3)
    q = model.inference(2)
    m_bilateral, m_gaussian = (k.lattice.n_vertices for k in model.kernels)
    assert memory.estimate_bytes(height, width, n_labels, 3, m_bilateral, m_gaussian) == _held_bytes(model, q)


def test_the_estimate_follows_the_threads_of_a_mean_field_step(monkeypatch):
    """With many threads the Gaussian lattice has its own parallel stages (one buffer where its
    values fit the in-place blur); a step of fewer than SERIAL_WORK values of Q runs on one
    thread, where it is splatted and blurred beside the bilateral splat (two buffers)."""
    monkeypatch.setattr(memory.numba, "get_num_threads", lambda: 64)

    def expected(height, width, n_labels, m_bilateral, m_gaussian, side):
        n = height * width
        return (8 * n * n_labels + memory.lattice_bytes(n, 5, m_bilateral, n_labels)
                + memory.lattice_bytes(n, 2, m_gaussian, n_labels, side))

    assert 24 * 32 * 4 < crf_config.SERIAL_WORK <= 120 * 160 * 20
    assert memory.estimate_bytes(24, 32, 4, 3, 3806, 123) == expected(24, 32, 4, 3806, 123, True)
    assert memory.estimate_bytes(120, 160, 21, 3, 23000, 2560) == expected(120, 160, 21, 23000, 2560, False)
    assert expected(120, 160, 21, 23000, 2560, False) < expected(120, 160, 21, 23000, 2560, True)


def test_the_default_vertex_counts_hold_on_a_photograph():
    """The assumptions the estimate makes before a lattice is built, on a real photograph with
    DeepLab's bilateral widths: at most 1.2 N bilateral vertices, about 1.2 N / theta_gamma^2 Gaussian
    ones."""
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    h, w = image.shape[:2]
    n = h * w
    for theta_alpha, theta_beta in ((67, 3), (121, 5), (65, 3)):
        lattice = crf.build(crf.bilateral_features(image, theta_alpha, theta_beta), "cpu")
        assert lattice.n_vertices <= memory.BILATERAL_VERTICES_PER_PIXEL * n
    for theta_gamma in (1, 2, 3):
        lattice = crf.build(crf.gaussian_features(h, w, theta_gamma), "cpu")
        expected = memory.GAUSSIAN_VERTICES_PER_PIXEL * n / theta_gamma ** 2
        assert abs(lattice.n_vertices - expected) <= 0.05 * expected


def test_the_estimate_grows_with_the_image_and_the_labels():
    base = memory.estimate_bytes(375, 500, 21)
    assert memory.estimate_bytes(750, 1000, 21) > 3.9 * base
    assert memory.estimate_bytes(375, 500, 42) > base
    # about 19 L + 240 bytes a pixel with DeepLab's kernels and 21 labels (module docstring)
    assert abs(base / (375 * 500) - (19 * 21 + 240)) < 10
    for bad in ((0, 5, 3), (5, 5, 0), (5.0, 5, 3), (True, 5, 3)):
        with pytest.raises(ValueError, match="must be a positive integer"):
            memory.estimate_bytes(*bad)
    with pytest.raises(ValueError, match="theta_gamma must be positive"):
        memory.estimate_bytes(5, 5, 3, theta_gamma=0)


def test_largest_side_is_the_longest_that_fits():
    h, w, n_labels = 3000, 4000, 21
    budget = 2 * 2**30
    side = memory.largest_side(h, w, n_labels, budget, theta_gamma=3)
    assert 0 < side < w
    assert memory.estimate_reduced_bytes(h, w, n_labels, side, 3) <= budget
    assert memory.estimate_reduced_bytes(h, w, n_labels, side + 1, 3) > budget
    assert memory.largest_side(h, w, n_labels, 10**12) == w  # everything fits
    assert memory.largest_side(h, w, n_labels, 10) is None  # nothing does
    # the reduced estimate scales theta_gamma with the image
    small = crf.reduced.reduced_shape(h, w, 1000)
    assert memory.estimate_reduced_bytes(h, w, n_labels, 1000, 3) == memory.estimate_bytes(*small, n_labels, 0.75)
    assert memory.estimate_reduced_bytes(h, w, n_labels, None, 3) == memory.estimate_bytes(h, w, n_labels, 3)
