"""Seeded random weights for any network: stand-ins for trained models in tests and benchmarks.

The official DeepLab weights cannot be fetched everywhere, but the networks can be
exercised exactly with any weights: write random ones into a caffemodel
(:func:`nets.caffe.write_caffemodel`) and compare the project with another Caffe
implementation on the same file. The weights are scaled so that activations stay
finite and informative through a hundred layers:

* Convolution and InnerProduct: He initialisation, ``N(0, 2 / fan_in)``, with
  ``fan_in = C_in / groups * kh * kw``; biases ``N(0, 0.1^2)``;
* BatchNorm: a random normaliser ``s`` in [0.5, 2] (never 1, so a forgotten division
  shows), ``mean ~ N(0, 0.2^2)``, ``var ~ U(0.5, 2)``, stored as ``mean*s``, ``var*s``, ``[s]``;
* Scale: ``gamma ~ U(0.5, 1)``, ``beta ~ N(0, 0.1^2)``.

Blobs shared by ``param { name }`` are drawn once and the same array is given to
every layer that shares them (as the MSC towers of DeepLab-v2 hold copies of one value).

References
----------
K. He et al., "Delving Deep into Rectifiers", ICCV 2015, Sec. 2.2 (the He scaling).
"""
import math

import numpy as np

from nets.engine.net import Net


def _draw(layer_type, shapes, rng):
    if layer_type == "BatchNorm":
        channels = shapes[0][0]
        s = np.float32(rng.uniform(0.5, 2.0))
        mean = rng.normal(0.0, 0.2, channels)
        var = rng.uniform(0.5, 2.0, channels)
        return [(mean * s).astype(np.float32), (var * s).astype(np.float32), np.array([s], np.float32)]
    if layer_type == "Scale":
        blobs = [rng.uniform(0.5, 1.0, shapes[0]).astype(np.float32)]
        return blobs + [rng.normal(0.0, 0.1, shapes[1]).astype(np.float32)] if len(shapes) > 1 else blobs
    weight_shape = shapes[0]
    fan_in = math.prod(weight_shape[1:])
    blobs = [(rng.standard_normal(weight_shape, np.float32) * np.float32(math.sqrt(2.0 / fan_in)))]
    return blobs + [rng.normal(0.0, 0.1, shapes[1]).astype(np.float32)] if len(shapes) > 1 else blobs


def random_weights(spec, input_shape, seed=0):
    """Seeded weights for every layer of ``spec`` that takes blobs.

    Parameters
    ----------
    spec : NetSpec
    input_shape : tuple of int
        ``(N, C, H, W)`` of the data blob (a convolution's weight depends on C only;
        an InnerProduct's on C*H*W).
    seed : int

    Returns
    -------
    dict of str to list of ndarray
        Blobs by layer name, float32, in Caffe's shapes (weight ``(O, C/g, kh, kw)``,
        bias ``(O,)``, BatchNorm ``(C,), (C,), (1,)``).
    """
    net = Net(spec)
    expected = net.param_shapes({net.inputs[0]: tuple(input_shape)})
    rng = np.random.default_rng(seed)
    shared = {}
    out = {}
    for layer in net.spec.layers:
        if layer.name not in expected:
            continue
        count = len(expected[layer.name])
        names = [layer.param_names[i] if i < len(layer.param_names) else "" for i in range(count)]
        if all(name in shared for name in names):  # a tower sharing every blob: nothing to draw
            out[layer.name] = [shared[name] for name in names]
            continue
        fresh = _draw(layer.type, expected[layer.name], rng)
        out[layer.name] = [shared.setdefault(name, blob) if name else blob for name, blob in zip(names, fresh)]
    return out
