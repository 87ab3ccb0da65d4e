"""nets.Net with backend="cuda": the whole pass on the GPU equals the CPU pass (simulator: one tiny net)."""
import numpy as np
import pytest

from nets import Net
from nets.caffe import parse_prototxt
from nets.engine.random_weights import random_weights

pytestmark = pytest.mark.cuda

TINY = """
input: "data" input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 7
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 pad: 2 dilation: 2 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2_bn" }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv2_bn" top: "sum"
        eltwise_param { operation: MAX } }
layer { name: "up" type: "Interp" bottom: "sum" top: "up" interp_param { zoom_factor: 2 } }
layer { name: "cat" type: "Concat" bottom: "up" bottom: "up" top: "cat" }
layer { name: "prob" type: "Softmax" bottom: "cat" top: "prob" }
layer { name: "label" type: "ArgMax" bottom: "up" top: "label" argmax_param { axis: 1 } }
"""


def test_cuda_forward_equals_cpu(in_cudasim):
    spec = parse_prototxt(TINY)
    net = Net.from_spec(spec, random_weights(spec, (1, 2, 6, 7), seed=31))
    x = np.random.default_rng(32).uniform(-2, 2, (1, 2, 6, 7)).astype(np.float32)
    names = ["conv1", "pool1", "conv2_bn", "sum", "up", "prob", "label"]
    want = net.forward(x, outputs=names, backend="cpu")
    got = net.forward(x, outputs=names, backend="cuda")
    for name in names:
        assert isinstance(got[name], np.ndarray), name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4 * max(1.0, np.abs(want[name]).max()),
                                   err_msg=name)
    from numba import cuda
    on_device = net.forward(cuda.to_device(x), outputs=["prob"], backend="auto")["prob"]
    assert hasattr(on_device, "copy_to_host")
    np.testing.assert_allclose(on_device.copy_to_host(), want["prob"], rtol=0, atol=1e-4)


def test_profiled_cuda_pass_times_each_layer_that_runs(in_cudasim):
    spec = parse_prototxt(TINY)
    net = Net.from_spec(spec, random_weights(spec, (1, 2, 6, 7), seed=33))
    x = np.random.default_rng(34).uniform(-2, 2, (1, 2, 6, 7)).astype(np.float32)
    timings = {}
    got = net.forward(x, outputs=["prob"], backend="cuda", timings=timings)["prob"]
    np.testing.assert_array_equal(got, net.forward(x, outputs=["prob"], backend="cuda")["prob"])
    # bn1 and sc1 are folded into conv1 and relu1 is done as conv1 writes; ArgMax's top is not asked for
    # but the layer still runs
    assert set(timings) == {"conv1", "pool1", "conv2", "bn2", "sum", "up", "cat", "prob", "label"}
    assert all(t > 0 for t in timings.values())


class _CountingHold:
    """A stand-in for ``cuda.defer_cleanup()`` that counts how often a hold starts and ends."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append("hold")

    def __exit__(self, *exc):
        self.log.append("release")
        return False


def test_held_frees_lets_go_after_its_budget(in_cudasim, monkeypatch):
    from nets.engine import device
    log = []
    monkeypatch.setattr(device.cuda, "defer_cleanup", lambda: _CountingHold(log))
    with device.HeldFrees(100) as hold:
        hold.allocated(60)
        assert log == ["hold"]
        hold.allocated(60)  # 120 > 100: the pending frees may happen now
        assert log == ["hold", "release", "hold"] and hold.releases == 1
        hold.allocated(100)  # 100 is within the budget
        assert hold.releases == 1
    assert log == ["hold", "release", "hold", "release"]


def test_cuda_pass_holds_frees_within_the_budget(in_cudasim, monkeypatch):
    from nets.engine import device
    from nets.layers import config
    spec = parse_prototxt(TINY)
    net = Net.from_spec(spec, random_weights(spec, (1, 2, 6, 7), seed=35))
    x = np.random.default_rng(36).uniform(-2, 2, (1, 2, 6, 7)).astype(np.float32)
    want = net.forward(x, outputs=["prob", "label"], backend="cpu")
    log = []
    monkeypatch.setattr(device.cuda, "defer_cleanup", lambda: _CountingHold(log))
    got = net.forward(x, outputs=["prob", "label"], backend="cuda")
    assert log == ["hold", "release"]  # the tiny pass stays within the default budget
    monkeypatch.setattr(config, "CUDA_HOLD_FREES_BYTES", 200)  # about one blob of this net
    log.clear()
    small = net.forward(x, outputs=["prob", "label"], backend="cuda")
    assert log.count("hold") == log.count("release") > 2 and log[0] == "hold" and log[-1] == "release"
    monkeypatch.setattr(config, "CUDA_HOLD_FREES_BYTES", 0)
    log.clear()
    unheld = net.forward(x, outputs=["prob", "label"], backend="cuda")
    assert log == []
    for name in ("prob", "label"):
        np.testing.assert_array_equal(small[name], got[name])
        np.testing.assert_array_equal(unheld[name], got[name])
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4)


# DeepLab-v2's shape in small: ImageSegData with data_dim read by nothing (its Silence layer is not
# run), a folded BatchNorm and Scale, a shortcut sum and ReLU done as a convolution writes, an Interp.
V2_SHAPED = """
layer { name: "data" type: "ImageSegData" top: "data" top: "label" top: "data_dim"
        transform_param { crop_size: 8 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 pad: 2 dilation: 2 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "up" type: "Interp" bottom: "sum" top: "up" interp_param { zoom_factor: 2 } }
layer { name: "silence" type: "Silence" bottom: "label" bottom: "data_dim" }
"""


def test_device_pass_copies_nothing_and_never_waits(in_cudasim, monkeypatch):
    """With its input and output on the device, a pass (after the first, which uploads the
    weights) makes no copy between host and device and no synchronisation: each would make the
    host wait for the GPU instead of queueing the next launches."""
    from numba import cuda
    spec = parse_prototxt(V2_SHAPED)
    net = Net.from_spec(spec, random_weights(spec, (1, 3, 8, 8), seed=37))
    x = np.random.default_rng(38).uniform(-2, 2, (1, 3, 8, 8)).astype(np.float32)
    d_x = cuda.to_device(x)
    first = net.forward(d_x, outputs=["up"], backend="cuda")["up"]
    calls = []
    for name in ("to_device", "synchronize"):
        original = getattr(cuda, name)
        monkeypatch.setattr(cuda, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    array_type = type(first)
    original_copy = array_type.copy_to_host
    monkeypatch.setattr(array_type, "copy_to_host",
                        lambda self, *a, **k: (calls.append("copy_to_host"), original_copy(self, *a, **k))[1])
    second = net.forward(d_x, outputs=["up"], backend="cuda")["up"]
    assert calls == []
    monkeypatch.undo()
    want = net.forward(x, outputs=["up"], backend="cpu")["up"]
    np.testing.assert_allclose(second.copy_to_host(), want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))
    np.testing.assert_array_equal(second.copy_to_host(), first.copy_to_host())
