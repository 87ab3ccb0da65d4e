"""The brute-force filter and mean field against hand-computed values."""
import numpy as np
import pytest

from crf.exact import exact_filter, exact_mean_field


def test_exact_filter_matches_double_loop():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((30, 3))
    v = rng.standard_normal((30, 2))
    expected = np.zeros((30, 2))
    for i in range(30):
        for j in range(30):
            expected[i] += np.exp(-0.5 * np.sum((f[i] - f[j]) ** 2)) * v[j]
    for block in (1, 7, 30, 100):
        np.testing.assert_allclose(exact_filter(f, v, block=block), expected, rtol=1e-12, atol=1e-12)


def test_exact_mean_field_two_points_by_hand():
    # two points one standard deviation apart, two labels, Potts, per-pixel normalisation
    f = np.array([[0.0], [1.0]])
    u = np.array([[0.0, 1.0], [2.0, 0.0]])
    mu = 1.0 - np.eye(2)
    k = np.exp(-0.5)
    q = np.exp(-u) / np.exp(-u).sum(axis=1, keepdims=True)
    kq = np.array([q[0] + k * q[1], k * q[0] + q[1]]) / np.array([[1 + k], [1 + k]])
    e = -u - 2.0 * kq @ mu
    expected = np.exp(e) / np.exp(e).sum(axis=1, keepdims=True)
    got = exact_mean_field(u, [(f, 2.0, mu, "per_pixel")], 1)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_exact_mean_field_without_kernels_is_softmax():
    u = np.random.default_rng(1).standard_normal((10, 4))
    q = exact_mean_field(u, [], 5)
    np.testing.assert_allclose(q, np.exp(-u) / np.exp(-u).sum(1, keepdims=True), rtol=1e-12)


def test_exact_bad_inputs():
    with pytest.raises(ValueError):
        exact_filter(np.zeros((3, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="normalization"):
        exact_mean_field(np.zeros((2, 2)), [(np.zeros((2, 1)), 1.0, np.eye(2), "after")], 1)
