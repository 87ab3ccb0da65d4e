"""Caffe layer semantics for DeepLab's nets, as three-tier kernels (numpy / cpu / cuda).

One concept per module: ``pooling`` (MAX/AVE, ceil mode, Caffe's clip rule),
``interp`` (DeepLab's align-corners bilinear Interp), ``normalization``
(BatchNorm, Scale and folding them into a convolution), ``elementwise`` (ReLU,
Eltwise, Concat, Softmax, ArgMax) and ``inner_product``. Every function takes
``backend="numpy" | "cpu" | "cuda" | "auto"``; a CUDA device array in gives a
device array out. The CUDA kernels live in ``nets.layers.cuda``, imported only
when ``backend`` resolves to ``"cuda"``.
"""
from .elementwise import argmax, argmax_output_shape, concat, eltwise, relu, softmax
from .inner_product import inner_product
from .interp import interp, interp_output_size
from .normalization import (BN_EPS, batch_norm, batchnorm_statistics, fold_batchnorm_scale,
                            scale)
from .pooling import ave_pool2d, max_pool2d, pool2d, pool_output_size

__all__ = [
    "BN_EPS", "argmax", "argmax_output_shape", "ave_pool2d", "batch_norm", "batchnorm_statistics",
    "concat", "eltwise", "fold_batchnorm_scale", "inner_product", "interp", "interp_output_size",
    "max_pool2d", "pool2d", "pool_output_size", "relu", "scale", "softmax",
]
