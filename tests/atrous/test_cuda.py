"""The CUDA convolution against the CPU one (simulator: a dozen tiny fixed cases; GPU: more)."""
import numpy as np
import pytest

import atrous
from atrous.aspp import random_conv, random_vgg_branch
from atrous.backend import is_device_array

pytestmark = pytest.mark.cuda

# (N, C_in, H, W, C_out, k, stride, pad, rate, groups, bias): outputs of at most a few hundred values.
SIM_CASES = [
    (1, 3, 7, 6, 4, 3, 1, 1, 1, 1, True),
    (1, 2, 8, 7, 3, 3, 1, 2, 2, 1, False),
    (1, 4, 6, 6, 2, 3, 1, 12, 12, 1, True),     # rate far beyond the input
    (2, 4, 7, 5, 4, 3, 2, 1, 1, 2, True),       # stride 2, groups 2, N 2
    (1, 3, 6, 7, 3, 3, 1, 3, 3, 3, False),      # depthwise
    (1, 5, 5, 5, 6, 1, 1, 0, 1, 1, True),       # 1x1
    (1, 2, 9, 8, 2, 5, 2, 4, 2, 1, True),
    (1, 1, 11, 10, 2, 7, 1, 3, 1, 1, False),
    (1, 6, 5, 6, 5, 3, 1, 0, 1, 1, True),       # no padding; C_out not a tile multiple
    (1, 3, 5, 6, 11, 3, 1, 2, 2, 1, True),      # C_out over one block of channels (8 in the simulator)
]


def _random_cases(count):
    rng = np.random.default_rng(99)
    cases = []
    while len(cases) < count:
        groups = int(rng.choice([1, 2, 4]))
        k, rate, stride = int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 2, 4, 6, 12, 24])), int(rng.choice([1, 2]))
        pad = int(rng.integers(0, rate + 1))
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if min(atrous.conv_output_size((h, w), k, stride, pad, rate)) >= 1:
            cases.append((int(rng.integers(1, 3)), groups * int(rng.integers(1, 20)), h, w,
                          groups * int(rng.integers(1, 20)), k, stride, pad, rate, groups, bool(rng.integers(0, 2))))
    return cases


@pytest.fixture(scope="module")
def cases(in_cudasim):
    return SIM_CASES if in_cudasim else SIM_CASES + _random_cases(60)


def _arrays(case, rng):
    n, c_in, h, w, c_out, k, stride, pad, rate, groups, has_bias = case
    x = rng.uniform(-1, 1, (n, c_in, h, w)).astype(np.float32)
    weight = rng.uniform(-1, 1, (c_out, c_in // groups, k, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, c_out).astype(np.float32) if has_bias else None
    return x, weight, bias, dict(stride=stride, pad=pad, dilation=rate, groups=groups)


def test_cuda_matches_cpu(cases):
    rng = np.random.default_rng(0)
    for case in cases:
        x, weight, bias, kwargs = _arrays(case, rng)
        expected = atrous.conv2d(x, weight, bias, backend="cpu", **kwargs)
        got = atrous.conv2d(x, weight, bias, backend="cuda", **kwargs)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32, case
        k_sum = weight.shape[1] * weight.shape[2] * weight.shape[3]
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * k_sum + 1e-6, err_msg=str(case))


def test_device_array_in_device_array_out():
    from numba import cuda
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (3, 6, 5)).astype(np.float32)
    weight = rng.uniform(-1, 1, (2, 3, 3, 3)).astype(np.float32)
    bias = np.array([0.5, -1.0], np.float32)
    d_y = atrous.conv2d(cuda.to_device(x), weight, bias, pad=2, dilation=2, backend="auto")
    assert is_device_array(d_y) and tuple(d_y.shape) == (2, 6, 5)
    expected = atrous.conv2d(x, weight, bias, pad=2, dilation=2, backend="numpy")
    np.testing.assert_allclose(d_y.copy_to_host(), expected, rtol=0, atol=1e-5)


def test_residual_and_relu_on_the_device():
    from numba import cuda
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (1, 3, 5, 6)).astype(np.float32)
    weight = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, 4).astype(np.float32)
    residual = rng.uniform(-2, 2, (1, 4, 5, 6)).astype(np.float32)
    for slope in (0.0, 0.5):
        expected = atrous.conv2d(x, weight, bias, pad=1, residual=residual, relu_slope=slope, backend="numpy")
        assert (expected == 0).any() if slope == 0 else (expected < 0).any()
        got = atrous.conv2d(x, weight, bias, pad=1, residual=cuda.to_device(residual), relu_slope=slope,
                            backend="cuda")  # a host input: the result comes back to the host
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_device_array_rules():
    from numba import cuda
    d_x = cuda.to_device(np.zeros((2, 4, 4), np.float64))
    with pytest.raises(TypeError, match="device array must be float32, got dtype float64"):
        atrous.conv2d(d_x, np.zeros((1, 2, 1, 1)), backend="cuda")
    d_x = cuda.to_device(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="CUDA device arrays need backend 'cuda' or 'auto', got 'cpu'"):
        atrous.conv2d(d_x, np.zeros((1, 2, 1, 1)), backend="cpu")


def test_nan_propagates_on_cuda():
    x = np.ones((2, 6, 6), np.float32)
    x[1, 2, 3] = np.nan
    y = atrous.conv2d(x, np.ones((1, 2, 3, 3), np.float32), pad=1, backend="cuda")
    assert np.isnan(y[0, 1:4, 2:5]).all() and np.isnan(y).sum() == 9


def test_aspp_heads_stay_on_the_device():
    from numba import cuda
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 5, 4)).astype(np.float32)
    branches = [random_conv(rng, 2, 4, 3) for _ in range(4)]
    d_scores = atrous.aspp_resnet(cuda.to_device(x), branches, backend="cuda")
    assert is_device_array(d_scores)
    np.testing.assert_allclose(d_scores.copy_to_host(), atrous.aspp_resnet(x, branches, backend="cpu"),
                               rtol=0, atol=1e-4)
    branch = random_vgg_branch(rng, 4, 3, 2)
    d_scores = atrous.largefov(cuda.to_device(x), branch, rate=2, backend="cuda")
    np.testing.assert_allclose(d_scores.copy_to_host(), atrous.largefov(x, branch, rate=2, backend="cpu"),
                               rtol=0, atol=1e-4)


def test_grid_stride_loops_cover_everything_with_a_one_block_grid(monkeypatch):
    """With the grid capped at one block per dimension, the loops must still visit every tile."""
    from numba import cuda

    import atrous.config
    import atrous.cuda
    monkeypatch.setattr(atrous.config, "CUDA_MAX_GRID", 1)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 4, 5, 6)).astype(np.float32)
    weight = rng.uniform(-1, 1, (20, 2, 3, 3)).astype(np.float32)  # 10 outputs per group: 2 channel blocks
    bias = rng.uniform(-1, 1, 20).astype(np.float32)
    got = atrous.conv2d(x, weight, bias, pad=1, dilation=1, groups=2, backend="cuda")
    expected = atrous.conv2d(x, weight, bias, pad=1, dilation=1, groups=2, backend="cpu")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    d_y = atrous.cuda.relu_(atrous.cuda.add_(cuda.to_device(got), cuda.to_device(got)))
    np.testing.assert_allclose(d_y.copy_to_host(), np.maximum(2 * expected, 0), rtol=0, atol=1e-5)


# (BM, BN, BK, TM, TN) small enough for the simulator: 16, 8 and 8 threads; every SIM_CASE then
# takes several steps of BK per tap (double buffering), most have C_in_g % BK != 0 and C_out % BM != 0.
# The first has one weight and one input column per thread; the second two input columns
# (BN = 2 threads), the third two weight columns (BM = 2 threads).
GEMM_TILES = [(8, 8, 4, 2, 2), (4, 16, 2, 2, 4), (16, 4, 2, 4, 2)]


@pytest.mark.parametrize("tile", GEMM_TILES)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_gemm_kernel_tiles_match_numpy(tile, split, monkeypatch):
    """Each tile, with the reduction in one block or split over blocks, against the NumPy reference."""
    import atrous.config
    import atrous.cuda
    monkeypatch.setattr(atrous.config, "CUDA_CONV_KERNEL", "gemm")
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_TILES", ((0, tile),))
    if split:  # cut even these tiny reductions: parts of 2 steps, up to 3 of them
        monkeypatch.setattr(atrous.config, "CUDA_GEMM_SPLIT_BLOCKS", 10**6)
        monkeypatch.setattr(atrous.config, "CUDA_GEMM_MIN_SPLIT_STEPS", 2)
        monkeypatch.setattr(atrous.config, "CUDA_GEMM_MAX_SPLITS", 3)
    rng = np.random.default_rng(7)
    splits_seen = set()
    for case in SIM_CASES:
        x, weight, bias, kwargs = _arrays(case, rng)
        c_in_g, k = weight.shape[1], weight.shape[2]
        splits_seen.add(atrous.cuda.gemm_shape(weight.shape[0] // kwargs["groups"], 1, c_in_g * k * k)[1])
        got = atrous.conv2d(x, weight, bias, backend="cuda", **kwargs)
        expected = atrous.conv2d(x, weight, bias, backend="numpy", **kwargs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * c_in_g * k * k + 1e-6, err_msg=str(case))
    assert (max(splits_seen) > 1) == split, splits_seen


@pytest.mark.parametrize("kernel", ["whole", "split", "classic"])
def test_the_epilogue_on_the_device_is_the_layers_apart(kernel, monkeypatch):
    """The GEMM kernel's store (or the pass summing a split reduction), and the classic kernel's two
    passes after it, do the epilogue: bit for bit the convolution's own output, then ``+ residual`` and
    Caffe's ReLU in NumPy; NaN and -inf too."""
    from numba import cuda
    import atrous.config
    import atrous.cuda
    from atrous.epilogue import epilogue_numpy
    split = kernel == "split"
    monkeypatch.setattr(atrous.config, "CUDA_CONV_KERNEL", "classic" if kernel == "classic" else "gemm")
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_TILES", ((0, (4, 8, 2, 2, 2)),))
    if split:
        monkeypatch.setattr(atrous.config, "CUDA_GEMM_SPLIT_BLOCKS", 10**6)
        monkeypatch.setattr(atrous.config, "CUDA_GEMM_MIN_SPLIT_STEPS", 2)
        monkeypatch.setattr(atrous.config, "CUDA_GEMM_MAX_SPLITS", 3)
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (1, 5, 4, 5)).astype(np.float32)
    weight = rng.uniform(-1, 1, (6, 5, 3, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, 6).astype(np.float32)
    residual = rng.uniform(-3, 3, (1, 6, 4, 5)).astype(np.float32)
    residual[0, 1, 2, :3] = [np.nan, -np.inf, np.inf]
    kwargs = dict(pad=2, dilation=2)
    assert (atrous.cuda.gemm_shape(6, 20, 5 * 9)[1] > 1) == split
    plain = atrous.conv2d(x, weight, bias, backend="cuda", **kwargs)
    for res, slope in ((residual, None), (None, 0.0), (residual, 0.0), (residual, 0.25)):
        with np.errstate(invalid="ignore"):  # 0 * -inf in Caffe's ReLU, in NumPy and in the simulator
            expected = epilogue_numpy(plain.copy(), res, slope)
            got = atrous.conv2d(x, weight, bias, backend="cuda", **kwargs, relu_slope=slope,
                                residual=None if res is None else cuda.to_device(res))
        np.testing.assert_array_equal(got, expected, err_msg=f"residual {res is not None}, slope {slope}")
        assert np.array_equal(np.signbit(got), np.signbit(expected))


def test_gemm_kernel_many_steps_and_tiles(monkeypatch):
    """Channels over two tiles of BM, pixels over several of BN, C_in_g = 3 BK + 1: a dozen double-buffered
    steps per tap and a masked tail, with N = 2 and two groups."""
    import atrous.config
    monkeypatch.setattr(atrous.config, "CUDA_CONV_KERNEL", "gemm")
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_TILES", ((0, (4, 8, 2, 2, 2)),))
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, (2, 14, 5, 4)).astype(np.float32)
    weight = rng.uniform(-1, 1, (18, 7, 3, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, 18).astype(np.float32)
    kwargs = dict(pad=2, dilation=2, groups=2)
    np.testing.assert_allclose(atrous.conv2d(x, weight, bias, backend="cuda", **kwargs),
                               atrous.conv2d(x, weight, bias, backend="numpy", **kwargs), rtol=0, atol=1e-4)


def test_classic_kernel_matches_numpy(monkeypatch):
    """The first kernel, kept behind config.CUDA_CONV_KERNEL for comparisons, still computes the same."""
    import atrous.config
    monkeypatch.setattr(atrous.config, "CUDA_CONV_KERNEL", "classic")
    rng = np.random.default_rng(9)
    for case in SIM_CASES[:6]:
        x, weight, bias, kwargs = _arrays(case, rng)
        k_sum = weight.shape[1] * weight.shape[2] * weight.shape[3]
        np.testing.assert_allclose(atrous.conv2d(x, weight, bias, backend="cuda", **kwargs),
                                   atrous.conv2d(x, weight, bias, backend="numpy", **kwargs),
                                   rtol=0, atol=2e-6 * k_sum + 1e-6, err_msg=str(case))


def test_gemm_rejects_bad_tiles_and_kernel_names(monkeypatch):
    import atrous.config
    import atrous.cuda
    with pytest.raises(ValueError, match="tm must divide bm"):
        atrous.cuda.gemm_kernel(8, 8, 4, 3, 2)
    with pytest.raises(ValueError, match="256 threads must be a multiple or a divisor of bm and of bn"):
        atrous.cuda.gemm_kernel(96, 128, 8, 6, 8)  # 16 x 16 threads, 96 channels
    monkeypatch.setattr(atrous.config, "CUDA_CONV_KERNEL", "fast")
    with pytest.raises(ValueError, match="CUDA_CONV_KERNEL must be 'gemm' or 'classic', got 'fast'"):
        atrous.conv2d(np.zeros((1, 3, 3), np.float32), np.zeros((1, 1, 1, 1), np.float32), backend="cuda")


def test_gemm_shape_rule(monkeypatch):
    """The table's first row the channels reach; splits only for grids short of blocks with long reductions."""
    import atrous.config
    import atrous.cuda
    tiles = ((256, (128, 128, 8, 8, 8)), (0, (32, 128, 8, 4, 8)))
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_TILES", tiles)
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_SPLIT_BLOCKS", 264)
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_MAX_SPLITS", 16)
    monkeypatch.setattr(atrous.config, "CUDA_GEMM_MIN_SPLIT_STEPS", 64)
    assert atrous.cuda.gemm_shape(1024, 65 * 65, 512 * 9) == ((128, 128, 8, 8, 8), 1)  # 272 blocks
    assert atrous.cuda.gemm_shape(21, 65 * 65, 2048 * 9) == ((32, 128, 8, 4, 8), 7)  # 34 blocks -> 238
    assert atrous.cuda.gemm_shape(21, 65 * 65, 27) == ((32, 128, 8, 4, 8), 1)  # too short to split


def test_a_weight_cache_keeps_the_device_relayout(monkeypatch):
    from numba import cuda

    from atrous import cuda as atrous_cuda
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (1, 4, 6, 5)).astype(np.float32)
    d_w = cuda.to_device(rng.uniform(-1, 1, (3, 4, 3, 3)).astype(np.float32))
    relayouts = []
    original = atrous_cuda.relayout_weights
    monkeypatch.setattr(atrous_cuda, "relayout_weights", lambda w, g: relayouts.append(g) or original(w, g))
    cache = atrous.WeightCache()
    expected = atrous.conv2d(x, d_w.copy_to_host(), pad=2, dilation=2, backend="numpy")
    for _ in range(2):  # no bias: the zero bias is kept too
        got = atrous.conv2d(x, d_w, pad=2, dilation=2, backend="cuda", cache=cache)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert relayouts == [1] and len(cache) == 2 and cache.nbytes() == (d_w.size + 3) * 4
    atrous.conv2d(x, d_w, pad=2, dilation=2, backend="cuda")  # no cache: relayout again
    assert relayouts == [1, 1]


# (N, C_in, H, W, C_out, pad, rate, bias): 3x3, stride 1, one group, for Winograd's F(2x2, 3x3)
WINOGRAD_CASES = [
    (1, 3, 7, 6, 4, 1, 1, True),      # rate 1: one phase, tiles overhang the last row
    (2, 2, 8, 7, 3, 2, 2, False),     # four phases, two images
    (1, 4, 9, 10, 5, 3, 3, True),     # nine phases of 3 or 4 outputs
    (1, 3, 6, 7, 2, 0, 2, True),      # no padding: 2 x 3 outputs
    (1, 2, 5, 5, 3, 12, 12, True),    # rate far beyond the input: only the centre tap sees it
    (1, 2, 6, 5, 3, 4, 2, False),     # more padding than the rate: outputs larger than the input
]


@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_on_the_device_matches_the_cpu(case, monkeypatch):
    """F(2x2, 3x3) on the dilated phases, on the GPU (``atrous.config.CUDA_WINOGRAD``): input transform,
    16 products as one GEMM in 16 groups, output transform with the bias; against the CPU convolution."""
    import atrous.config
    import atrous.cuda
    monkeypatch.setattr(atrous.config, "CUDA_WINOGRAD", True)
    monkeypatch.setattr(atrous.config, "CUDA_WINOGRAD_MIN_CHANNELS", 1)
    calls = []
    original = atrous.cuda._conv_winograd
    monkeypatch.setattr(atrous.cuda, "_conv_winograd", lambda *a: calls.append(1) or original(*a))
    n, c_in, h, w, c_out, pad, rate, has_bias = case
    rng = np.random.default_rng(sum(case))
    x = rng.uniform(-1, 1, (n, c_in, h, w)).astype(np.float32)
    weight = rng.uniform(-1, 1, (c_out, c_in, 3, 3)).astype(np.float32)
    bias = rng.uniform(-1, 1, c_out).astype(np.float32) if has_bias else None
    expected = atrous.conv2d(x, weight, bias, pad=pad, dilation=rate, backend="cpu")
    got = atrous.conv2d(x, weight, bias, pad=pad, dilation=rate, backend="cuda")
    assert calls == [1] and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * c_in * 9)


def test_winograd_on_the_device_does_the_epilogue_and_keeps_its_filters(monkeypatch):
    from numba import cuda

    import atrous.config
    import atrous.cuda
    monkeypatch.setattr(atrous.config, "CUDA_WINOGRAD", True)
    monkeypatch.setattr(atrous.config, "CUDA_WINOGRAD_MIN_CHANNELS", 4)
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (1, 3, 6, 7)).astype(np.float32)
    d_w = cuda.to_device(rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32))
    bias = rng.uniform(-1, 1, 4).astype(np.float32)
    residual = rng.uniform(-2, 2, (1, 4, 6, 7)).astype(np.float32)
    cache = atrous.WeightCache()
    for slope in (0.0, 0.25):
        expected = atrous.conv2d(x, d_w.copy_to_host(), bias, pad=2, dilation=2, residual=residual,
                                 relu_slope=slope, backend="numpy")
        got = atrous.conv2d(x, d_w, bias, pad=2, dilation=2, residual=cuda.to_device(residual), relu_slope=slope,
                            backend="cuda", cache=cache)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # the transformed filters, the GEMM's zero bias and the tile positions, made once, with the net's
    # weights: nothing on the device outlives the net's cache
    assert len(cache) == 3
    x2 = rng.uniform(-1, 1, (1, 3, 9, 5)).astype(np.float32)  # another geometry: its own tiles
    got = atrous.conv2d(x2, d_w, bias, pad=2, dilation=2, backend="cuda", cache=cache)
    np.testing.assert_allclose(got, atrous.conv2d(x2, d_w.copy_to_host(), bias, pad=2, dilation=2, backend="numpy"),
                               rtol=0, atol=1e-4)
    assert len(cache) == 4
    assert atrous.cuda.winograd_applies(4, 3, 3, (1, 1), 1)
    assert not atrous.cuda.winograd_applies(3, 3, 3, (1, 1), 1)  # fewer output channels than the minimum
    assert not atrous.cuda.winograd_applies(4, 3, 3, (2, 2), 1)  # stride 2
    assert not atrous.cuda.winograd_applies(4, 5, 5, (1, 1), 1)  # 5x5
    assert not atrous.cuda.winograd_applies(4, 3, 3, (1, 1), 2)
    monkeypatch.setattr(atrous.config, "CUDA_WINOGRAD", False)
    assert not atrous.cuda.winograd_applies(4, 3, 3, (1, 1), 1)
