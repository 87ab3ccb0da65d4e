"""ReLU, Eltwise, Concat, Softmax, ArgMax (Caffe's tie rule) and InnerProduct."""
import numpy as np
import pytest

from nets.layers import argmax, concat, eltwise, inner_product, relu, softmax

BACKENDS = ("numpy", "cpu")


@pytest.fixture
def rng(rng_seed):
    return np.random.default_rng(rng_seed)


def test_relu(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for backend in BACKENDS:
        np.testing.assert_array_equal(relu(x, backend=backend), np.where(x > 0, x, 0))
        np.testing.assert_allclose(relu(x, 0.1, backend=backend), np.where(x > 0, x, 0.1 * x), rtol=1e-7)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")  # 0 * -inf in the expression
@pytest.mark.parametrize("slope", [0.0, 0.1, -2.0])
def test_relu_cpu_kernel_equals_the_numpy_expression(rng, slope):
    x = rng.standard_normal(200_001).astype(np.float32)  # more than one parallel chunk, a ragged end
    x[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45]
    x = x.reshape(3, 66667)
    want = relu(x, slope, backend="numpy")
    got = relu(x, slope, backend="cpu")
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN where NaN (a zero's sign may differ: -0 stays -0, as in Caffe)
    assert np.isnan(got[0, 0]) and got[0, 1] == np.inf


def test_eltwise_sum_with_coefficients(rng):
    a, b, c = rng.standard_normal((3, 2, 3, 4, 5)).astype(np.float32)
    want = 0.5 * a.astype(np.float64) - 2.0 * b + c
    for backend in BACKENDS:
        np.testing.assert_allclose(eltwise([a, b, c], "sum", [0.5, -2.0, 1.0], backend=backend), want,
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(eltwise([a, b], backend=backend), a + b)


def test_eltwise_prod_and_max(rng):
    a, b, c = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    for backend in BACKENDS:
        np.testing.assert_array_equal(eltwise([a, b, c], "prod", backend=backend), a * b * c)
        np.testing.assert_array_equal(eltwise([a, b, c], "max", backend=backend),
                                      np.maximum(np.maximum(a, b), c))


def test_eltwise_max_follows_caffes_comparisons():
    """Caffe: top = a > b ? a : b, then x > top ? x : top. NaN wins only as b."""
    nan = np.float32(np.nan)
    a, b = np.float32([[1.0, nan]]), np.float32([[nan, 1.0]])
    for backend in BACKENDS:
        out = eltwise([a, b], "max", backend=backend)
        assert np.isnan(out[0, 0]) and out[0, 1] == 1
        out = eltwise([np.float32([[2.0]]), np.float32([[1.0]]), np.float32([[nan]])], "max", backend=backend)
        assert out[0, 0] == 2


def test_concat(rng):
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((2, 1, 4, 5)).astype(np.float32)
    for backend in BACKENDS:
        out = concat([a, b], backend=backend)
        assert out.shape == (2, 4, 4, 5)
        np.testing.assert_array_equal(out[:, :3], a)
        np.testing.assert_array_equal(out[:, 3:], b)
        np.testing.assert_array_equal(concat([a, a], axis=-1, backend=backend)[..., 5:], a)


def test_softmax(rng):
    x = (5 * rng.standard_normal((2, 21, 4, 3))).astype(np.float32)
    e = np.exp(x.astype(np.float64))
    for backend in BACKENDS:
        np.testing.assert_allclose(softmax(x, backend=backend), e / e.sum(axis=1, keepdims=True),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(softmax(x, axis=3, backend=backend), e / e.sum(axis=3, keepdims=True),
                                   rtol=1e-5, atol=1e-7)
    big = np.float32([[1000.0, 1000.0]])  # the max subtraction keeps it finite
    np.testing.assert_array_equal(softmax(big, backend="cpu"), [[0.5, 0.5]])


def test_argmax_keeps_the_highest_index_among_equals():
    """Caffe's partial_sort with std::greater on (value, index): ties go to the highest index."""
    scores = np.float32([1, 3, 3, 2, 3, 0]).reshape(1, 6, 1, 1)
    assert np.argmax(scores[0, :, 0, 0]) == 1  # NumPy keeps the lowest
    for backend in BACKENDS:
        assert argmax(scores, axis=1, backend=backend)[0, 0, 0, 0] == 4
        top3 = argmax(scores, axis=1, top_k=3, backend=backend)[0, :, 0, 0]
        np.testing.assert_array_equal(top3, [4, 2, 1])
        top4 = argmax(scores, axis=1, top_k=4, out_max_val=True, backend=backend)[0, :, 0, 0]
        np.testing.assert_array_equal(top4, [3, 3, 3, 2])


def test_argmax_top_1_is_the_sort_with_its_ties_and_nan(rng):
    """The top-1 shortcut (np.argmax over the reversed axis) against the general sort: ties to the
    highest index; NaN, which np.argmax would take, sorted last."""
    x = rng.integers(0, 3, (2, 7, 4, 5)).astype(np.float32)  # many ties
    x[0, :, 0, 0] = [np.nan, 1, 2, 2, np.nan, 0, 1]
    x[1, :, 1, 1] = np.nan
    for axis in (1, None):
        top1 = argmax(x, axis=axis, top_k=1, backend="numpy")
        top2 = argmax(x, axis=axis, top_k=2, backend="numpy")  # the sort
        first = top2[:, :1] if axis is not None else top2[:, :, :1]
        np.testing.assert_array_equal(top1, first)
    labels = argmax(x, axis=1, backend="numpy")
    assert labels[0, 0, 0, 0] == 3 and labels[1, 0, 1, 1] == 6  # the highest of the 2s; all NaN: the last
    clean = np.nan_to_num(x, nan=-1.0)
    np.testing.assert_array_equal(argmax(clean, axis=1, backend="numpy")[:, 0],
                                  6 - np.argmax(clean[:, ::-1], axis=1))


def test_argmax_equals_numpy_without_ties(rng):
    x = rng.standard_normal((2, 21, 5, 6)).astype(np.float32)
    for backend in BACKENDS:
        labels = argmax(x, axis=1, backend=backend)
        assert labels.dtype == np.float32 and labels.shape == (2, 1, 5, 6)
        np.testing.assert_array_equal(labels[:, 0], np.argmax(x, axis=1))
        order = np.argsort(-x, axis=1)[:, :3]
        np.testing.assert_array_equal(argmax(x, axis=1, top_k=3, backend=backend), order)
        np.testing.assert_array_equal(argmax(x, axis=1, top_k=3, out_max_val=True, backend=backend),
                                      np.take_along_axis(x, order, axis=1))


def test_argmax_without_axis_has_caffes_layout(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    flat = x.reshape(2, -1)
    order = np.argsort(-flat, axis=1)[:, :2]  # (N, top_k)
    for backend in BACKENDS:
        idx = argmax(x, top_k=2, backend=backend)
        assert idx.shape == (2, 1, 2, 1)
        np.testing.assert_array_equal(idx[:, 0, :, 0], order)
        both = argmax(x, top_k=2, out_max_val=True, backend=backend)
        assert both.shape == (2, 2, 2, 1)
        np.testing.assert_array_equal(both[:, 0, :, 0], order)
        np.testing.assert_array_equal(both[:, 1, :, 0], np.take_along_axis(flat, order, axis=1))
    assert argmax(np.float32([[1, 5, 2]]), backend="cpu").shape == (1, 1, 1)


def test_inner_product(rng):
    x = rng.standard_normal((3, 4, 2, 5)).astype(np.float32)
    w = rng.standard_normal((7, 40)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    want = x.reshape(3, 40).astype(np.float64) @ w.T.astype(np.float64) + b
    for backend in BACKENDS:
        np.testing.assert_allclose(inner_product(x, w, b, backend=backend), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(inner_product(x, w.T.copy(), b, transpose=True, backend=backend), want,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(inner_product(x, w.reshape(1, 1, 7, 40), backend=backend), want - b,
                                   rtol=1e-5, atol=1e-5)
        w2 = rng.standard_normal((6, 10)).astype(np.float32)
        out = inner_product(x, w2, axis=2, backend=backend)
        assert out.shape == (3, 4, 6)
        np.testing.assert_allclose(out, x.reshape(3, 4, 10) @ w2.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, error, message", [
    (lambda: eltwise([np.zeros((2, 3))], "sum"), ValueError, "at least two inputs, got 1"),
    (lambda: eltwise([np.zeros((2, 3)), np.zeros((3, 2))]), ValueError, "one shape"),
    (lambda: eltwise([np.zeros(2), np.zeros(2)], "min"), ValueError, "operation must be one of"),
    (lambda: eltwise([np.zeros(2), np.zeros(2)], "max", [1, 2]), ValueError, "coeffs apply to"),
    (lambda: eltwise([np.zeros(2), np.zeros(2)], "sum", [1]), ValueError, r"one coefficient per input \(2\)"),
    (lambda: concat([np.zeros((1, 2, 3)), np.zeros((1, 2, 4))]), ValueError, "every axis but 1"),
    (lambda: softmax(np.zeros((2, 3)), axis=2), ValueError, r"axis must be an int in \[-2, 2\)"),
    (lambda: argmax(np.zeros((1, 3, 2, 2)), axis=1, top_k=4), ValueError,
     r"top_k must be an int in \[1, 3\]"),
    (lambda: inner_product(np.zeros((2, 6)), np.zeros((3, 5))), ValueError, r"weight must be \(3, 6\)"),
    (lambda: inner_product(np.zeros((2, 6)), np.zeros((3, 6)), np.zeros(2)), ValueError, "num_output = 3"),
    (lambda: relu(np.zeros((2, 2), "U1")), TypeError, "real numbers"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
