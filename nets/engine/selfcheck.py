"""``deeplab check`` case for a whole network: a miniature DeepLab through :class:`nets.Net`.

The net has every kind of layer the official models use: convolution with
BatchNorm + Scale (folded at load time), ReLU, a ceil-mode pool, an ASPP head of
dilated convolutions summed by Eltwise, and Interp's x8 zoom. The backend under
test runs the folded net, its ReLUs done by the convolutions as they write; the
reference is the NumPy backend running the net unfolded and unfused, layer by layer
as Caffe does. The error is relative to the largest score.
"""
import numpy as np

from nets.caffe import parse_prototxt
from nets.engine.net import Net
from nets.engine.random_weights import random_weights

TOLERANCE = 1e-4

MINI_DEEPLAB = """
name: "mini-deeplab"
input: "data" input_dim: 1 input_dim: 3 input_dim: 33 input_dim: 33
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "aspp_r2" type: "Convolution" bottom: "pool1" top: "aspp_r2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "aspp_r4" type: "Convolution" bottom: "pool1" top: "aspp_r4"
        convolution_param { num_output: 4 kernel_size: 3 pad: 4 dilation: 4 } }
layer { name: "scores" type: "Eltwise" bottom: "aspp_r2" bottom: "aspp_r4" top: "scores" }
layer { name: "scores_interp" type: "Interp" bottom: "scores" top: "scores_interp" interp_param { zoom_factor: 8 } }
"""


def cases(backend, quick, rng):
    """Yield ``("net ...", relative max error, tolerance)`` for ``backend`` against NumPy."""
    spec = parse_prototxt(MINI_DEEPLAB)
    weights = random_weights(spec, (1, 3, 33, 33), seed=int(rng.integers(2**31)))
    side = 33 if quick else 65
    x = rng.uniform(-120, 130, (1, 3, side, side)).astype(np.float32)
    got = Net.from_spec(spec, weights).forward(x, backend=backend)["scores_interp"]
    if hasattr(got, "copy_to_host"):
        got = got.copy_to_host()
    want = Net.from_spec(spec, weights, fold=False, fuse=False).forward(x, backend="numpy")["scores_interp"]
    error = float(np.abs(got - want).max() / np.abs(want).max())
    yield f"mini DeepLab {side}x{side} (folded and fused vs layer by layer in NumPy)", error, TOLERANCE
