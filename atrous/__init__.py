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
# The same the other way round: OpenBLAS's threads spin for 2^28 cycles after a
# product, and the Numba kernels after it (Winograd's transforms, ReLU, pooling)
# wait for the cores (LargeFOV at 513x513 on 2 cores: 1.85-1.99 s, 1.43-1.56 s
# with 2^4). OpenBLAS reads this when it loads: it applies where the package is
# imported before NumPy (the deeplab command, its worker processes).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from atrous.aspp import VGGBranch, aspp_resnet, aspp_vgg, largefov, vgg_branch
from atrous.conv import conv2d, conv_output_size
from atrous.weight_cache import WeightCache

__all__ = ["conv2d", "conv_output_size", "WeightCache", "aspp_resnet", "aspp_vgg", "largefov", "vgg_branch",
           "VGGBranch"]
