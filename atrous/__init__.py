"""Atrous (dilated) convolution and ASPP: the first two ideas of DeepLab."""
