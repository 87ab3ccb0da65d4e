"""conv2d's argument checks and dtype rules."""
import numpy as np
import pytest

import atrous

X = np.zeros((4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)


@pytest.mark.parametrize("x,weight,kwargs,pattern", [
    (np.zeros((8, 8)), W, {}, r"x must have shape \(C_in, H, W\) or \(N, C_in, H, W\), got shape \(8, 8\)"),
    (np.zeros((1, 1, 4, 8, 8)), W, {}, r"got shape \(1, 1, 4, 8, 8\)"),
    (X, np.zeros((6, 4, 3)), {}, r"weight must have shape \(C_out, C_in // groups, kh, kw\), got shape \(6, 4, 3\)"),
    (X, np.zeros((6, 3, 3, 3)), {}, r"C_in // groups = 4 input channels .*got weight shape \(6, 3, 3, 3\)"),
    (X, np.zeros((6, 4, 3, 3)), {"groups": 2}, r"C_in // groups = 2 input channels .*groups=2.*\(6, 4, 3, 3\)"),
    (X, np.zeros((6, 1, 3, 3)), {"groups": 3}, r"groups=3 must divide C_in=4 and C_out=6"),
    (X, np.zeros((5, 2, 3, 3)), {"groups": 2}, r"groups=2 must divide C_in=4 and C_out=5"),
    (X, W, {"groups": 0}, r"groups must be a positive int, got 0"),
    (X, W, {"stride": 0}, r"stride must be positive \(>= 1\), got 0"),
    (X, W, {"stride": (1, -2)}, r"stride must be positive \(>= 1\), got \(1, -2\)"),
    (X, W, {"dilation": 0}, r"dilation must be positive \(>= 1\), got 0"),
    (X, W, {"pad": -1}, r"pad must be non-negative \(>= 0\), got -1"),
    (X, W, {"dilation": 4}, r"output size must be at least 1x1, got 0x0: input 8x8, kernel 3x3.*effective kernel 9x9"),
    (X, W, {"bias": np.zeros(5)}, r"bias must have shape \(6,\) \(C_out\), got shape \(5,\)"),
    (X, W, {"bias": np.zeros((6, 1))}, r"bias must have shape \(6,\) \(C_out\), got shape \(6, 1\)"),
    (np.zeros((4, 0, 8)), W, {}, r"x must have non-zero sizes, got shape \(4, 0, 8\)"),
    (X, W, {"backend": "gpu"}, r"backend must be one of .*got 'gpu'"),
])
def test_bad_arguments_raise_value_error(x, weight, kwargs, pattern):
    kwargs = dict(kwargs)
    bias = kwargs.pop("bias", None)
    with pytest.raises(ValueError, match=pattern):
        atrous.conv2d(x, weight, bias, **kwargs)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"pad": 1.5}, r"pad must be an int or a pair of ints \(h, w\), got 1.5"),
    ({"dilation": (1, 2, 3)}, r"dilation must be an int or a pair of ints \(h, w\), got \(1, 2, 3\)"),
    ({"stride": True}, r"stride must be an int or a pair of ints"),
    ({"pad": "1"}, r"pad must be an int or a pair of ints"),
])
def test_size_arguments_of_the_wrong_type_raise_type_error(kwargs, pattern):
    with pytest.raises(TypeError, match=pattern):
        atrous.conv2d(X, W, **kwargs)


@pytest.mark.parametrize("dtype", [np.complex64, object, np.str_])
def test_non_real_dtypes_raise_type_error(dtype):
    with pytest.raises(TypeError, match="must be a real .* array, got dtype"):
        atrous.conv2d(X.astype(dtype), W)
    with pytest.raises(TypeError, match="weight must be a real"):
        atrous.conv2d(X, W.astype(dtype))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.bool_, np.uint8, np.int32,
                                   np.int64])
def test_real_dtypes_are_computed_as_float32(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2 if dtype == np.bool_ else 4, (9, 7, 6)).astype(dtype)
    weight = rng.uniform(-1, 1, (2, 9, 3, 3)).astype(dtype if np.dtype(dtype).kind == "f" else np.float32)
    y = atrous.conv2d(x, weight, pad=1, dilation=1, backend=backend)
    assert y.dtype == np.float32
    expected = atrous.conv2d(x.astype(np.float32), weight.astype(np.float32), pad=1, backend="numpy")
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_lists_and_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 10, 12)).astype(np.float32)[:, ::2, ::-1]  # a strided view
    weight = rng.standard_normal((3, 8, 3, 3))
    y = atrous.conv2d(x, weight, pad=2, dilation=2, backend="cpu")
    expected = atrous.conv2d(np.ascontiguousarray(x), weight, pad=2, dilation=2, backend="numpy")
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
    y_list = atrous.conv2d(x.tolist(), weight.tolist(), pad=2, dilation=2, backend="cpu")
    np.testing.assert_allclose(y_list, expected, rtol=0, atol=1e-5)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    weight = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    copies = [a.copy() for a in (x, weight, bias)]
    for backend in ("numpy", "cpu"):
        atrous.conv2d(x, weight, bias, pad=1, backend=backend)
    for a, c in zip((x, weight, bias), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("size,kernel,stride,pad,dilation,expected", [
    (513, 3, 1, 12, 12, (513, 513)),   # v1 fc6 keeps the size
    (65, 3, 1, 24, 24, (65, 65)),      # ASPP branch at rate 24
    (513, 7, 2, 3, 1, (257, 257)),     # ResNet conv1
    (129, 1, 2, 0, 1, (65, 65)),       # res3a branch1
    ((10, 11), (3, 5), (2, 1), (0, 2), (1, 3), (4, 3)),
    (5, 3, 1, 0, 4, (-3, -3)),         # the kernel does not fit
])
def test_conv_output_size(size, kernel, stride, pad, dilation, expected):
    assert atrous.conv_output_size(size, kernel, stride, pad, dilation) == expected
