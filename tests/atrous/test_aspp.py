"""ASPP and LargeFOV heads against reference convolutions composed by hand."""
import numpy as np
import pytest

import atrous
from atrous.aspp import RESNET_RATES, random_conv, random_vgg_branch
from atrous.reference import conv2d_reference


def _ref(x, weight_bias, rate=1):
    """One reference convolution of a (C, H, W) image, 'same' padding for a 3x3 at ``rate``."""
    weight, bias = weight_bias
    pad = rate if weight.shape[2] == 3 else 0
    return conv2d_reference(x[None], weight, bias, (1, 1), (pad, pad), (rate, rate), 1)[0]


def _ref_vgg_branch(x, branch, rate):
    h = np.maximum(_ref(x, branch.fc6, rate), 0)
    h = np.maximum(_ref(h, branch.fc7), 0)
    return _ref(h, branch.fc8)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_resnet_aspp_is_the_sum_of_four_atrous_convolutions(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 13, 11)).astype(np.float32)  # rates 12..24 exceed the input
    branches = [random_conv(rng, 5, 16, 3) for _ in RESNET_RATES]
    expected = sum(_ref(x, wb, rate) for wb, rate in zip(branches, (6, 12, 18, 24)))
    got = atrous.aspp_resnet(x, branches, backend=backend)
    assert got.shape == (5, 13, 11) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_vgg_aspp_l_sums_four_fc6_fc7_fc8_branches(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
    branches = [random_vgg_branch(rng, 8, 12, 4) for _ in range(4)]
    got = atrous.aspp_vgg(x, branches, backend=backend)
    for n in range(2):
        expected = sum(_ref_vgg_branch(x[n], br, rate) for br, rate in zip(branches, (6, 12, 18, 24)))
        np.testing.assert_allclose(got[n], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_largefov_is_one_branch_at_rate_12(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 15, 14)).astype(np.float32)
    branch = random_vgg_branch(rng, 8, 10, 3)
    got = atrous.largefov(x, branch, backend=backend)
    np.testing.assert_allclose(got, _ref_vgg_branch(x, branch, 12), rtol=0, atol=1e-4)
    # The ReLUs are really applied: the same branch without them gives other scores.
    linear = _ref(_ref(_ref(x, branch.fc6, 12), branch.fc7), branch.fc8)
    assert np.abs(got - linear).max() > 1e-2


def test_heads_need_one_branch_per_rate():
    rng = np.random.default_rng(3)
    x = np.zeros((4, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"4 rates \(6, 12, 18, 24\), got 3 branches"):
        atrous.aspp_resnet(x, [random_conv(rng, 2, 4, 3)] * 3)
    with pytest.raises(ValueError, match=r"2 rates \(2, 4\), got 1 branches"):
        atrous.aspp_vgg(x, [random_vgg_branch(rng, 4, 4, 2)], rates=(2, 4))
