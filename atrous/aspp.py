"""ASPP and LargeFOV: DeepLab's classifier heads, composed from :func:`atrous.conv2d`.

Atrous Spatial Pyramid Pooling (DeepLab v2, Sec. 3.3, Fig. 4) looks at the
same feature map through several parallel atrous convolutions with different
rates -- several fields of view at once -- and sums the branches' class scores:

* v2 ResNet-101 head: four 3x3 convolutions, rates 6, 12, 18, 24, each with
  ``pad = rate`` so the output keeps the input's size, C_in = 2048 -> classes,
  summed (Caffe ``Eltwise SUM`` of ``fc1_voc12_c0..c3``).
* v2 VGG-16 ASPP-L: four branches fc6 (3x3, rate r, pad r, -> 1024) -> ReLU ->
  fc7 (1x1, -> 1024) -> ReLU -> fc8 (1x1, -> classes), rates 6, 12, 18, 24,
  summed. (Dropout between them is the identity at test time.)
* v1 DeepLab-LargeFOV: one such branch at rate 12 (fc6 3x3 ``hole 12``).

Weights are plain arrays: a convolution is a ``(weight, bias)`` pair with
``weight`` of shape (C_out, C_in, kh, kw) and ``bias`` of shape (C_out,) or None.

All heads accept what :func:`atrous.conv2d` accepts: (C, H, W) or (N, C, H, W),
NumPy arrays or (with ``backend="cuda"``) device arrays, which stay on the GPU.

References
----------
L.-C. Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3.3 and
Table 3 (ASPP-S, ASPP-L); Chen et al., ICLR 2015, Sec. 4.1 (DeepLab-LargeFOV).
"""
from dataclasses import dataclass

import numpy as np

from atrous.backend import is_device_array
from atrous.conv import conv2d

RESNET_RATES = (6, 12, 18, 24)
"""Rates of the released DeepLab-v2 ResNet-101 ASPP (``fc1_voc12_c0..c3``)."""

ASPP_L_RATES = (6, 12, 18, 24)
"""Rates of v2's VGG-16 ASPP-L (ASPP-S uses 2, 4, 8, 12)."""

LARGEFOV_RATE = 12
"""Rate of v1's fc6 (``hole: 12``)."""


@dataclass
class VGGBranch:
    """Weights of one fc6 -> fc7 -> fc8 branch; each field is a ``(weight, bias)`` pair.

    Attributes
    ----------
    fc6 : (ndarray of shape (C_hidden, C_in, 3, 3), ndarray of shape (C_hidden,))
        The atrous 3x3 convolution (C_hidden = 1024 in DeepLab).
    fc7 : (ndarray of shape (C_hidden, C_hidden, 1, 1), ndarray of shape (C_hidden,))
    fc8 : (ndarray of shape (classes, C_hidden, 1, 1), ndarray of shape (classes,))
    """

    fc6: tuple
    fc7: tuple
    fc8: tuple


def _sum_branches(branches, rates, run):
    """``sum(run(branch, rate))`` over the branches, one per rate, added in place as they come."""
    if len(branches) != len(rates):
        raise ValueError(f"need one branch per rate: {len(rates)} rates {tuple(rates)}, "
                         f"got {len(branches)} branches")
    total = None
    for branch, rate in zip(branches, rates):
        term = run(branch, rate)
        if total is None:
            total = term
        elif is_device_array(total):
            from atrous import cuda as cuda_impl
            total = cuda_impl.add_(total, term)
        else:
            total += term
    return total


def _atrous_3x3(x, weight_bias, rate, backend, relu_slope=None):
    weight, bias = weight_bias
    return conv2d(x, weight, bias, pad=rate, dilation=rate, relu_slope=relu_slope, backend=backend)


def aspp_resnet(x, branches, rates=RESNET_RATES, backend="auto"):
    """v2's ResNet ASPP head: the sum of 3x3 atrous convolutions with ``pad = rate``.

    Parameters
    ----------
    x : ndarray of shape (C_in, H, W) or (N, C_in, H, W)
        Features (res5c: C_in = 2048, 65x65 for a 513x513 input).
    branches : sequence of (weight, bias)
        One per rate; weight of shape (classes, C_in, 3, 3), bias of shape (classes,).
    rates : sequence of int
    backend : {"auto", "numpy", "cpu", "cuda"}

    Returns
    -------
    scores : ndarray of shape (classes, H, W) or (N, classes, H, W), float32
    """
    return _sum_branches(branches, rates, lambda weight_bias, rate: _atrous_3x3(x, weight_bias, rate, backend))


def vgg_branch(x, branch, rate, backend="auto"):
    """One fc6 (3x3, rate) -> ReLU -> fc7 (1x1) -> ReLU -> fc8 (1x1) branch.

    Parameters
    ----------
    x : ndarray of shape (C_in, H, W) or (N, C_in, H, W)
        pool5 (v2) or pool5a (v1) features: C_in = 512.
    branch : VGGBranch
    rate : int
        fc6's rate; its pad is the same, so the size is kept.
    backend : {"auto", "numpy", "cpu", "cuda"}

    Returns
    -------
    scores : ndarray of shape (classes, H, W) or (N, classes, H, W), float32
    """
    h = _atrous_3x3(x, branch.fc6, rate, backend, relu_slope=0.0)  # the ReLUs as the convolutions write
    h = conv2d(h, branch.fc7[0], branch.fc7[1], relu_slope=0.0, backend=backend)
    return conv2d(h, branch.fc8[0], branch.fc8[1], backend=backend)


def aspp_vgg(x, branches, rates=ASPP_L_RATES, backend="auto"):
    """v2's VGG-16 ASPP head: the sum of :func:`vgg_branch` over the rates.

    Parameters
    ----------
    x : ndarray of shape (C_in, H, W) or (N, C_in, H, W)
    branches : sequence of VGGBranch
        One per rate.
    rates : sequence of int
        ASPP-L: 6, 12, 18, 24; ASPP-S: 2, 4, 8, 12.
    backend : {"auto", "numpy", "cpu", "cuda"}

    Returns
    -------
    scores : ndarray of shape (classes, H, W) or (N, classes, H, W), float32
    """
    return _sum_branches(branches, rates, lambda branch, rate: vgg_branch(x, branch, rate, backend))


def largefov(x, branch, rate=LARGEFOV_RATE, backend="auto"):
    """v1's DeepLab-LargeFOV head: a single :func:`vgg_branch` at rate 12."""
    return vgg_branch(x, branch, rate, backend)


def random_conv(rng, c_out, c_in, k, scale=None):
    """He-initialised ``(weight, bias)`` for examples and tests.

    Returns
    -------
    (weight, bias) : (ndarray of shape (c_out, c_in, k, k), ndarray of shape (c_out,)), float32
    """
    scale = np.sqrt(2.0 / (c_in * k * k)) if scale is None else scale
    weight = (rng.standard_normal((c_out, c_in, k, k)) * scale).astype(np.float32)
    bias = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
    return weight, bias


def random_vgg_branch(rng, c_in, c_hidden, classes):
    """A :class:`VGGBranch` with random weights (DeepLab: c_in 512, c_hidden 1024, classes 21)."""
    return VGGBranch(fc6=random_conv(rng, c_hidden, c_in, 3),
                     fc7=random_conv(rng, c_hidden, c_hidden, 1),
                     fc8=random_conv(rng, classes, c_hidden, 1))
