"""Atrous (dilated) convolution and ASPP: the first two ideas of DeepLab.

``atrous.conv2d`` is the convolution (backends "numpy", "cpu", "cuda", "auto");
``atrous.aspp`` composes it into DeepLab's LargeFOV and ASPP heads.
"""
import os

# Numba's OpenMP threads spin for a while after every parallel loop; the BLAS
# threads of a matrix product that follows then fight them for the cores
# (measured on 2 cores: a 97x97 demo net 20x slower, ASPP's 2048->21 branch
# 1.7x slower). Passive waiting hands the cores over at once. A value the
# user set is kept; it takes effect only before Numba's first parallel launch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from atrous.aspp import VGGBranch, aspp_resnet, aspp_vgg, largefov, vgg_branch
from atrous.conv import conv2d, conv_output_size
from atrous.weight_cache import WeightCache

__all__ = ["conv2d", "conv_output_size", "WeightCache", "aspp_resnet", "aspp_vgg", "largefov", "vgg_branch",
           "VGGBranch"]
