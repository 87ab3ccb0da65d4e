"""The CUDA layer kernels against the CPU ones (simulator: a few tiny fixed cases each)."""
import itertools

import numpy as np
import pytest

import nets.layers as L

pytestmark = pytest.mark.cuda


@pytest.fixture
def rng(rng_seed):
    return np.random.default_rng(rng_seed)


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else a


POOL_CASES = [((5, 6), 3, 2, 1, "max"), ((5, 6), 3, 2, 1, "ave"), ((7, 4), 2, 2, 1, "max"),
              ((7, 4), 2, 2, 1, "ave"), ((5, 5), 3, 1, 1, "ave"), ((6, 7), (2, 3), (1, 2), (1, 0), "max"),
              ((4, 4), 3, 3, 2, "ave"), ((8, 5), 2, 3, 0, "max")]


def test_pooling(rng, in_cudasim):
    cases = POOL_CASES
    if not in_cudasim:  # a real GPU: the wider matrix
        wide = itertools.product([(9, 13), (33, 32), (129, 65)], [2, 3], [1, 2, 3], [0, 1], ["max", "ave"])
        cases = cases + [c for c in wide if not (c[3] == 0 and c[2] > c[1])]
    for size, k, s, p, mode in cases:
        x = rng.standard_normal((2, 2) + size).astype(np.float32)
        got = L.pool2d(x, k, s, p, mode, backend="cuda")
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, L.pool2d(x, k, s, p, mode, backend="cpu"), rtol=1e-6, atol=1e-6,
                                   err_msg=f"{size} {k} {s} {p} {mode}")


INTERP_CASES = [((5, 7), dict(zoom_factor=2)), ((9, 6), dict(shrink_factor=2)),
                ((13, 13), dict(zoom_factor=4, shrink_factor=3)), ((9, 7), dict(height=7, width=13)),
                ((8, 8), dict(height=3, width=5, pad_beg=-1, pad_end=-1)),
                ((6, 5), dict(height=4, width=3, pad_beg=-1, pad_end=-1)), ((3, 5), dict(height=1, width=1))]


def test_interp(rng, in_cudasim):
    cases = INTERP_CASES
    if not in_cudasim:
        cases = cases + [((65, 65), dict(zoom_factor=8)), ((513, 513), dict(shrink_factor=4, zoom_factor=3)),
                         ((49, 49), dict(zoom_factor=4, shrink_factor=3))]
    for size, params in cases:
        x = rng.standard_normal((1, 2) + size).astype(np.float32)
        np.testing.assert_allclose(L.interp(x, **params, backend="cuda"),
                                   L.interp(x, **params, backend="cpu"), rtol=1e-6, atol=1e-6,
                                   err_msg=str(params))


def test_device_arrays_stay_on_the_device(rng):
    from numba import cuda
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    d = cuda.to_device(x)
    pooled = L.max_pool2d(d, 3, 2, 1, backend="auto")  # a device array selects cuda
    resized = L.interp(pooled, zoom_factor=2)
    assert not isinstance(pooled, np.ndarray) and not isinstance(resized, np.ndarray)
    np.testing.assert_allclose(_host(resized), L.interp(L.max_pool2d(x, 3, 2, 1, backend="cpu"),
                                                        zoom_factor=2, backend="cpu"), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="need a NumPy array, got a CUDA device array"):
        L.relu(d, backend="cpu")
    with pytest.raises(TypeError, match="float32 device array, got dtype float64"):
        L.relu(cuda.to_device(x.astype(np.float64)), backend="cuda")


def test_elementwise(rng):
    from numba import cuda
    a, b, c = rng.standard_normal((3, 2, 3, 4, 5)).astype(np.float32)
    d = [cuda.to_device(v) for v in (a, b, c)]
    pairs = [
        (L.relu(d[0], 0.1), L.relu(a, 0.1, backend="cpu")),
        (L.eltwise(d, "sum", [0.5, -2, 1]), L.eltwise([a, b, c], "sum", [0.5, -2, 1], backend="cpu")),
        (L.eltwise(d, "prod"), L.eltwise([a, b, c], "prod", backend="cpu")),
        (L.eltwise(d, "max"), L.eltwise([a, b, c], "max", backend="cpu")),
        (L.concat([d[0], b[:, :2]], backend="cuda"),  # a device and a host input
         L.concat([a, b[:, :2]], backend="cpu")),
        (L.concat(d[:2], axis=3), L.concat([a, b], axis=3, backend="cpu")),
        (L.softmax(d[0]), L.softmax(a, backend="cpu")),
    ]
    for i, (got, want) in enumerate(pairs):
        assert not isinstance(got, np.ndarray), i
        np.testing.assert_allclose(_host(got), want, rtol=1e-5, atol=1e-6, err_msg=str(i))


def test_argmax(rng):
    ties = np.round(2 * rng.standard_normal((2, 5, 3, 2))).astype(np.float32)  # many equal values
    for axis, top_k, out_max_val in [(1, 1, False), (1, 3, False), (1, 2, True), (None, 2, False),
                                     (None, 3, True), (-1, 2, False)]:
        got = L.argmax(ties, axis=axis, top_k=top_k, out_max_val=out_max_val, backend="cuda")
        want = L.argmax(ties, axis=axis, top_k=top_k, out_max_val=out_max_val, backend="cpu")
        np.testing.assert_array_equal(got, want, err_msg=f"{axis} {top_k} {out_max_val}")


def test_normalization_and_inner_product(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    mean_sum, var_sum = rng.standard_normal(3).astype(np.float32), rng.uniform(1, 2, 3).astype(np.float32)
    s = np.float32([3.5])
    np.testing.assert_allclose(L.batch_norm(x, mean_sum, var_sum, s, backend="cuda"),
                               L.batch_norm(x, mean_sum, var_sum, s, backend="cpu"), rtol=1e-6, atol=1e-6)
    gamma, beta = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(L.scale(x[0], gamma, beta, backend="cuda"),
                               L.scale(x[0], gamma, beta, backend="cpu"), rtol=1e-6, atol=1e-6)
    for rows, k, n in [(2, 60, 7), (1, 5, 3), (5, 9, 10)]:
        a = rng.standard_normal((rows, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        np.testing.assert_allclose(L.inner_product(a, w, bias, backend="cuda"),
                                   L.inner_product(a, w, bias, backend="cpu"), rtol=1e-5, atol=1e-5)
    w4 = rng.standard_normal((4, 60)).astype(np.float32)  # an (N, C, H, W) input flattened from axis 1
    np.testing.assert_allclose(L.inner_product(x, w4, backend="cuda"),
                               L.inner_product(x, w4, backend="cpu"), rtol=1e-5, atol=1e-5)
