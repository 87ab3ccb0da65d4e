"""Atrous (dilated) convolution and ASPP: the first two ideas of DeepLab.

``atrous.conv2d`` is the convolution (backends "numpy", "cpu", "cuda", "auto");
``atrous.aspp`` composes it into DeepLab's LargeFOV and ASPP heads.
"""
from atrous.aspp import VGGBranch, aspp_resnet, aspp_vgg, largefov, vgg_branch
from atrous.conv import conv2d, conv_output_size

__all__ = ["conv2d", "conv_output_size", "aspp_resnet", "aspp_vgg", "largefov", "vgg_branch",
           "VGGBranch"]
