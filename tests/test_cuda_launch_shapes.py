"""The CUDA kernels with the launch shapes a GPU gets, on tiny inputs.

The simulator child (tests/test_cuda_simulator.py) runs the other ``cuda`` tests with small
launch shapes (tests/conftest.py); these run the shipped ones, 256-thread blocks
included, so that no launch shape is tested only by hand on a GPU.
"""
import numpy as np
import pytest

import atrous
import atrous.config
import crf
import nets.layers.config
from nets import layers as L

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("production_launch_shapes")]


@pytest.mark.parametrize("channels", [8, 64, 256])
def test_convolution_block_shapes(channels, monkeypatch):
    """The classic kernel (config.CUDA_CONV_KERNEL = "classic") with its shipped 16 x 16 blocks."""
    from atrous.cuda import block_shape
    monkeypatch.setattr(atrous.config, "CUDA_CONV_KERNEL", "classic")
    expected = next(shape for minimum, shape in atrous.config.CUDA_CONV_BLOCKS if channels >= minimum)
    assert block_shape(channels) == expected and expected[0] == 16  # the GPU's shape, not the simulator's
    _check_convolution(channels)


@pytest.mark.parametrize("channels", [8, 64, 256])
def test_gemm_tiles(channels):
    """The default GEMM kernel with the shipped tiles (up to 256 threads of 8 x 8 outputs)."""
    from atrous.cuda import gemm_shape
    assert atrous.config.CUDA_CONV_KERNEL == "gemm"
    expected = next(tile for minimum, tile in atrous.config.CUDA_GEMM_TILES if channels >= minimum)
    assert gemm_shape(channels, 30, 27) == (expected, 1) and expected[1] >= 64  # the GPU's tile
    _check_convolution(channels)


def _check_convolution(channels):
    rng = np.random.default_rng(channels)
    x = rng.uniform(-1, 1, (1, 3, 5, 6)).astype(np.float32)
    weight = rng.uniform(-1, 1, (channels, 3, 3, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, channels).astype(np.float32)
    got = atrous.conv2d(x, weight, bias, pad=2, dilation=2, backend="cuda")
    want = atrous.conv2d(x, weight, bias, pad=2, dilation=2, backend="numpy")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_flat_kernels():
    from numba import cuda

    from atrous.cuda import add_, relu
    a = np.array([-2, -0.5, 0, 0.5, np.nan, 3] * 200, np.float32)
    d = add_(cuda.to_device(a), cuda.to_device(a))
    np.testing.assert_array_equal(relu(d, 0.1).copy_to_host(), np.where(2 * a < 0, 0.2 * a, 2 * a))


def test_crf_kernels():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (6, 7, 3), np.uint8)
    unary = rng.uniform(0, 2, (3, 6, 7)).astype(np.float32)
    out = []
    for backend in ("cuda", "cpu"):
        model = crf.DenseCRF(unary, backend=backend)
        model.add_gaussian(theta_gamma=2, w=3)
        model.add_bilateral(image, theta_alpha=5, theta_beta=20, w=4)
        out.append(model.inference(2))
    np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-5)


def test_layer_kernels():
    assert nets.layers.config.CUDA_GEMM_TILE == 16
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (2, 3, 5, 5)).astype(np.float32)
    weight = rng.uniform(-1, 1, (17, 75)).astype(np.float32)
    bias = rng.uniform(-1, 1, 17).astype(np.float32)
    np.testing.assert_allclose(L.inner_product(x, weight, bias, backend="cuda"),
                               L.inner_product(x, weight, bias, backend="numpy"), rtol=0, atol=1e-5)
    for mode in ("max", "ave"):
        np.testing.assert_array_equal(L.pool2d(x, 3, 2, 1, mode, backend="cuda"),
                                      L.pool2d(x, 3, 2, 1, mode, backend="cpu"))
