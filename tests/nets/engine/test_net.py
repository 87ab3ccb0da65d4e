"""nets.Net: real Caffe models, Caffe's blob semantics, reshaping, phases, folding, sharing, bad input."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import atrous
from atrous import gemm
from atrous.reference import conv2d_reference
from nets import Net
from nets.caffe import parse_prototxt
from nets.engine.random_weights import random_weights

REAL = Path(__file__).resolve().parents[2] / "data" / "caffe-real"


def _expected_lenet_scores():
    """``{(model, sample): ip2 scores}`` from the table in caffe-real/README.md."""
    text = (REAL / "README.md").read_text()
    rows = re.findall(r"\| (lenet_\w+) \| (img_\w+\.png) \| (\d) \| [\d.]+ \| \[([^\]]+)\] \|", text)
    return {(m, s): (int(label), np.array([float(v) for v in scores.split(",")])) for m, s, label, scores in rows}


EXPECTED = _expected_lenet_scores()


@pytest.mark.parametrize("model", ["lenet_v1", "lenet_new"])
def test_real_lenet_reproduces_reference_scores(model):
    samples = sorted(s for m, s in EXPECTED if m == model)
    assert len(samples) == 10
    net = Net.load(REAL / model / "lenet_iter_10000.caffemodel", prototxt=REAL / model / "lenet.prototxt")
    images = np.stack([np.asarray(Image.open(REAL / "mnist_samples" / s), np.float32)[None] for s in samples])
    out = net.forward(images * np.float32(0.00390625), outputs=["ip2", "prob"], backend="cpu")
    assert out["ip2"].shape == (10, 10)
    for i, sample in enumerate(samples):
        label, want = EXPECTED[(model, sample)]
        err = np.abs(out["ip2"][i] - want).max()
        assert err <= 1e-3 * max(1.0, np.abs(want).max()), (sample, err)
        assert out["prob"][i].argmax() == label
    np.testing.assert_allclose(out["prob"].sum(1), 1, rtol=1e-5)
    reference = net.forward(images[:2] * np.float32(0.00390625), outputs=["ip2"], backend="numpy")["ip2"]
    np.testing.assert_allclose(reference, out["ip2"][:2], rtol=1e-4, atol=1e-4)


def test_v1_cifar_quick_runs_with_ceil_mode_pooling():
    root = REAL / "cifar10_quick_v1"
    net = Net.load(root / "cifar10_quick_iter_5000.caffemodel", prototxt=root / "cifar10_quick.prototxt")
    shapes = net.infer_shapes({"data": (2, 3, 32, 32)})
    # ip1's fan-in 64 x 4 x 4 = 1024 only holds with Caffe's ceil-mode pooling (32 -> 16 -> 8 -> 4).
    assert shapes["pool1"] == (2, 32, 16, 16) and shapes["pool3"] == (2, 64, 4, 4)
    x = np.random.default_rng(0).uniform(-60, 60, (2, 3, 32, 32)).astype(np.float32)
    prob = net.forward(x)["prob"]
    assert prob.shape == (2, 10) and np.allclose(prob.sum(1), 1, rtol=1e-5)


def _net(text, weights=None, fold=True):
    return Net.from_spec(parse_prototxt(text), weights, fold=fold)


CONV_RELU = """
input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "relu_copy" type: "ReLU" bottom: "data" top: "data_relu" relu_param { negative_slope: 0.5 } }
"""


def _conv_weights(rng):
    return {"conv": [rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
                     rng.standard_normal(3).astype(np.float32)]}


def test_blob_holds_value_after_in_place_layers_and_net_reshapes_to_input():
    rng = np.random.default_rng(1)
    weights = _conv_weights(rng)
    net = _net(CONV_RELU, weights)
    assert net.inputs == ["data"] and net.outputs == ["conv", "data_relu"]
    for shape in [(1, 2, 4, 4), (3, 2, 7, 5)]:  # input_dim is only a default
        x = rng.standard_normal(shape).astype(np.float32)
        out = net.forward(x, outputs=["conv", "data", "data_relu"], backend="cpu")
        conv = conv2d_reference(x, weights["conv"][0], weights["conv"][1], (1, 1), (1, 1), (1, 1), 1)
        np.testing.assert_allclose(out["conv"], np.maximum(conv, 0), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out["data"], x)
        np.testing.assert_allclose(out["data_relu"], np.where(x > 0, x, 0.5 * x), rtol=1e-6)
    with pytest.raises(ValueError, match="no blob named"):
        net.forward(x, outputs=["nope"])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        net.forward(x[0])


def test_test_phase_rules_and_skipped_layers_and_data_dim():
    text = """
    layer { name: "data" type: "ImageSegData" top: "data" top: "label" top: "data_dim"
            include { phase: TEST } transform_param { crop_size: 8 } image_data_param { batch_size: 1 } }
    layer { name: "data" type: "ImageSegData" top: "data" top: "label" include { phase: TRAIN } }
    layer { name: "drop" type: "Dropout" bottom: "data" top: "data" exclude { phase: TEST } }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
            pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
    layer { name: "mat" type: "MatWrite" bottom: "pool" }
    layer { name: "acc" type: "SegAccuracy" bottom: "pool" bottom: "label" top: "acc" }
    layer { name: "silence" type: "Silence" bottom: "label" }
    """
    net = _net(text)
    assert [layer.name for layer in net.layers] == ["pool"]
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 10)).astype(np.float32)
    out = net.forward(x, outputs=["pool", "data_dim"])
    assert out["pool"].shape == (2, 3, 3, 6)
    np.testing.assert_array_equal(out["data_dim"].reshape(2, 2), [[5, 8], [5, 8]])
    assert net.outputs == ["pool"]


RESNET_BLOCK = """
input: "data" input_shape { dim: 1 dim: 3 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "peek" type: "Pooling" bottom: "conv2" top: "peek" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" batch_norm_param { eps: 0.001 } }
layer { name: "sc2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
"""


def _numpy_block(x, w):
    """The block above in plain NumPy, from Caffe's formulas."""
    def bn_scale(y, bn, sc, eps):
        s = bn[2][0]
        mean, var = bn[0] / s, bn[1] / s
        y = (y - mean[:, None, None]) / np.sqrt(var + np.float32(eps))[:, None, None]
        return y * sc[0][:, None, None] + sc[1][:, None, None]
    c1 = conv2d_reference(x, w["conv1"][0], None, (1, 1), (1, 1), (1, 1), 1)
    c1 = np.maximum(bn_scale(c1, w["bn1"], w["sc1"], 1e-5), 0)
    c2 = conv2d_reference(c1, w["conv2"][0], w["conv2"][1], (1, 1), (2, 2), (2, 2), 1)
    return c1, c2, bn_scale(c2, w["bn2"], w["sc2"], 1e-3)


def test_batchnorm_scale_folding_equals_unfused_path():
    spec = parse_prototxt(RESNET_BLOCK)
    weights = random_weights(spec, (1, 3, 9, 9), seed=3)
    assert weights["bn1"][2][0] != 1
    folded, plain = Net.from_spec(spec, weights), Net.from_spec(spec, weights, fold=False)
    # conv2's top is read by "peek" before BatchNorm: folding it would change "peek".
    assert folded.folded_layers == ["conv1"]
    assert plain.folded_layers == []
    x = np.random.default_rng(4).uniform(-50, 50, (2, 3, 9, 11)).astype(np.float32)
    names = ["conv1", "conv2", "peek", "sum"]
    a = folded.forward(x, outputs=names, backend="cpu")
    b = plain.forward(x, outputs=names, backend="cpu")
    for name in names:
        scale = np.abs(b[name]).max()
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=2e-5 * scale, err_msg=name)
    c1, c2_raw, c2 = _numpy_block(x[:1, :, :9, :9], weights)
    one = plain.forward(x[:1, :, :9, :9], outputs=names, backend="numpy")
    np.testing.assert_allclose(one["conv1"], c1, rtol=0, atol=1e-5 * np.abs(c1).max())
    np.testing.assert_allclose(one["conv2"], c2, rtol=0, atol=1e-5 * np.abs(c2).max())
    np.testing.assert_allclose(one["sum"], c1 + c2, rtol=0, atol=1e-5 * np.abs(c1 + c2).max())
    # "peek" saw conv2 before BatchNorm (ceil-mode 2x2 stride-1 max pool of 9x9 -> 8x8).
    windows = np.lib.stride_tricks.sliding_window_view(c2_raw, (2, 2), axis=(2, 3)).max(axis=(4, 5))
    np.testing.assert_allclose(one["peek"], windows, rtol=0, atol=1e-5 * np.abs(c2_raw).max())


SHORTCUTS = """
input: "data" input_shape { dim: 1 dim: 4 dim: 7 dim: 7 }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "a_relu" type: "ReLU" bottom: "a" top: "a" relu_param { negative_slope: 0.1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "b" top: "sum" }
layer { name: "sum_relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "c" type: "Convolution" bottom: "sum" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "peek" type: "Pooling" bottom: "c" top: "peek" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "sum2" type: "Eltwise" bottom: "c" bottom: "sum" top: "sum2" }
layer { name: "d" type: "Convolution" bottom: "sum2" top: "d" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum3" type: "Eltwise" bottom: "sum2" bottom: "d" top: "sum3" eltwise_param { coeff: 1 coeff: 0.5 } }
layer { name: "e" type: "Convolution" bottom: "sum3" top: "e" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum3_relu" type: "ReLU" bottom: "sum3" top: "sum3" }
layer { name: "sum4" type: "Eltwise" bottom: "e" bottom: "sum3" top: "sum4" }
"""


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_shortcut_sums_and_relus_fused_into_convolutions_change_no_bit(backend):
    spec = parse_prototxt(SHORTCUTS)
    weights = random_weights(spec, (1, 4, 7, 7), seed=8)
    fused, apart = Net.from_spec(spec, weights), Net.from_spec(spec, weights, fuse=False)
    # c: its top is read by "peek"; d: a coefficient 0.5; e: its shortcut is rectified in between.
    assert fused.fused_layers() == {"a": ["a_relu"], "b": ["sum", "sum_relu"]}
    assert fused.fused_layers(["b", "sum4"]) == {"a": ["a_relu"]}  # b asked for: the sum cannot take it over
    assert apart.fused_layers() == {}
    x = np.random.default_rng(9).uniform(-3, 3, (2, 4, 7, 7)).astype(np.float32)
    names = ["a", "b", "sum", "c", "peek", "sum2", "d", "sum3", "e", "sum4"]
    for outputs in (None, names, ["sum4", "b"]):
        got, want = fused.forward(x, outputs, backend=backend), apart.forward(x, outputs, backend=backend)
        assert got.keys() == want.keys()
        for name in got:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    values = apart.forward(x, names, backend="numpy")
    assert (values["a"] < 0).any() and (values["sum"] == 0).any() and (values["sum3"] >= 0).all()
    np.testing.assert_allclose(values["sum4"], values["e"] + values["sum3"], rtol=1e-6)


TOWERS = """
input: "data" input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { name: "w" } param { name: "b" } convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "half" type: "Interp" bottom: "data" top: "half" interp_param { shrink_factor: 2 } }
layer { name: "conv_half" type: "Convolution" bottom: "half" top: "conv_half"
        param { name: "w" } param { name: "b" } convolution_param { num_output: 2 kernel_size: 1 } }
"""


def test_shared_weights_are_resolved_by_param_name():
    rng = np.random.default_rng(5)
    w = [rng.standard_normal((2, 2, 1, 1)).astype(np.float32), rng.standard_normal(2).astype(np.float32)]
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    only_first = _net(TOWERS, {"conv": w}).forward(x, outputs=["conv", "conv_half"])
    both = _net(TOWERS, {"conv": w, "conv_half": [a.copy() for a in w]}).forward(x, outputs=["conv_half"])
    assert only_first["conv_half"].shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(only_first["conv_half"], both["conv_half"])
    want = conv2d_reference(x, w[0], w[1], (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(only_first["conv"], want, rtol=1e-5, atol=1e-6)
    other = [w[0] + 1, w[1]]
    with pytest.raises(ValueError, match=r"'conv' and 'conv_half' share blob 0 \(param name 'w'\)"):
        _net(TOWERS, {"conv": w, "conv_half": other})


def test_bad_input_names_the_layer_and_both_shapes():
    rng = np.random.default_rng(6)
    good = _conv_weights(rng)
    with pytest.raises(ValueError, match=r"layer 'odd' has type 'Frobnicate'.*not supported"):
        _net(CONV_RELU + 'layer { name: "odd" type: "Frobnicate" bottom: "conv" top: "odd" }', good)
    with pytest.raises(ValueError, match=r"layer 'lost' \(ReLU\) reads blob 'ghost', which no earlier layer"):
        _net(CONV_RELU + 'layer { name: "lost" type: "ReLU" bottom: "ghost" top: "lost" }', good)
    bad = {"conv": [good["conv"][0][:, :1], good["conv"][1]]}
    with pytest.raises(ValueError, match=r"layer 'conv' \(Convolution\): blob 0 has shape \(3, 1, 3, 3\), "
                                         r"expected \(3, 2, 3, 3\)"):
        _net(CONV_RELU, bad)
    with pytest.raises(ValueError, match=r"layer 'conv' \(Convolution\): blob 1 of shape \(3,\) is missing"):
        _net(CONV_RELU, {"conv": good["conv"][:1]})
    with pytest.raises(ValueError, match=r"layer 'conv' \(Convolution\): blob 0 of shape \(3, 2, 3, 3\) is "
                                         r"missing.*none"):
        _net(CONV_RELU, {})
    # Weights are checked for every input too: a 3-channel input does not fit conv's (3, 2, 3, 3).
    net = _net(CONV_RELU, good)
    with pytest.raises(ValueError, match=r"blob 0 has shape \(3, 2, 3, 3\), expected \(3, 3, 3, 3\)"):
        net.forward(np.zeros((1, 3, 4, 4), np.float32))
    for value in (np.nan, np.inf, 1e300):  # 1e300 is finite, but not as float32
        x = np.zeros((1, 2, 4, 4))
        x[0, 1, 2, 3] = value
        with pytest.raises(ValueError, match=r"input 'data' holds 1 NaN or infinite value\(s\) \(as float32\)"):
            net.forward(x)
    # Legacy 4-D blobs (the V1 dialect's) are accepted for the same values.
    legacy = _net(CONV_RELU, {"conv": [good["conv"][0], good["conv"][1].reshape(1, 1, 1, 3)]})
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(legacy.forward(x)["conv"], _net(CONV_RELU, good).forward(x)["conv"])


def test_dense_crf_layer_matches_crf_package():
    import crf
    text = """
    layer { name: "data" type: "ImageSegData" top: "data" top: "label" top: "data_dim"
            transform_param { crop_size: 12 } }
    layer { name: "score" type: "Convolution" bottom: "data" top: "score"
            convolution_param { num_output: 3 kernel_size: 1 } }
    layer { name: "crf" type: "DenseCRF" bottom: "score" bottom: "data_dim" bottom: "data" top: "crf"
            dense_crf_param { max_iter: 5 pos_w: 3 pos_xy_std: 2 bi_w: 4 bi_xy_std: 5 bi_rgb_std: 10 } }
    """
    rng = np.random.default_rng(7)
    w = {"score": [rng.standard_normal((3, 3, 1, 1)).astype(np.float32) * 0.05, np.zeros(3, np.float32)]}
    net = _net(text, w)
    x = np.zeros((1, 3, 12, 12), np.float32)
    x[0, :, :9, :10] = rng.uniform(-100, 100, (3, 9, 10))  # a 9x10 image padded to 12x12
    out = net.forward({"data": x, "data_dim": np.array([9, 10], np.float32).reshape(1, 1, 1, 2)},
                      outputs=["score", "crf"], backend="cpu")
    preset = crf.Preset("direct", 4, 5, 10, 3, 2, 5, "test")
    want = crf.caffe_layer_refine(out["score"][0], x[0], (9, 10), preset=preset, backend="cpu")
    np.testing.assert_allclose(out["crf"][0], want, rtol=1e-6, atol=1e-6)
    assert np.all(out["crf"][0, :, 9:, :] == 0) and np.allclose(out["crf"][0, :, :9, :10].sum(0), 1, atol=1e-5)


def test_load_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz: no such file"):
        Net.load(tmp_path / "missing.npz")


def test_winograd_filters_are_derived_once_per_net_for_every_input_size(winograd_transforms):
    calls = winograd_transforms
    rng = np.random.default_rng(4)
    net = _net(CONV_RELU, _conv_weights(rng))
    for size in (4, 6, 4, 5):
        x = rng.standard_normal((1, 2, size, size)).astype(np.float32)
        got = net.forward(x, backend="cpu")["conv"]
        want = net.forward(x, backend="numpy")["conv"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert calls == [(3, 2, 3, 3)]  # one transform for four forward passes at three sizes
    rows = -(-3 // gemm.PANEL_ROWS) * gemm.PANEL_ROWS  # 3 output channels in whole row panels (atrous.gemm)
    assert net.weight_cache.nbytes() == 16 * rows * 2 * 4
    net.weight_cache = None  # derived at every pass instead
    for _ in range(2):
        net.forward(x, backend="cpu")
    assert len(calls) == 3


ALIASED_RELUS = """
input: "data" input_dim: 1 input_dim: 2 input_dim: 5 input_dim: 5
layer { name: "relu_in" type: "ReLU" bottom: "data" top: "data" }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv_drop" }
layer { name: "relu" type: "ReLU" bottom: "conv_drop" top: "conv_drop" }
layer { name: "conv2" type: "Convolution" bottom: "conv_drop" top: "conv2"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
"""


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_in_place_relu_overwrites_only_arrays_nothing_else_holds(backend):
    rng = np.random.default_rng(6)
    weights = {"conv": [rng.standard_normal((3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32)],
               "conv2": [rng.standard_normal((3, 3, 1, 1)).astype(np.float32), np.zeros(3, np.float32)]}
    net = _net(ALIASED_RELUS, weights)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    before = x.copy()
    got = net.forward(x, outputs=["conv", "conv_drop", "conv2"], backend=backend)
    np.testing.assert_array_equal(x, before)  # the caller's array: rectified in a copy
    conv = atrous.conv2d(np.maximum(x, 0), weights["conv"][0], pad=1, backend="numpy")
    np.testing.assert_allclose(got["conv"], conv, rtol=1e-5, atol=1e-5)  # Dropout's twin keeps the negatives
    assert (got["conv"] < 0).any()
    np.testing.assert_allclose(got["conv_drop"], np.maximum(conv, 0), rtol=1e-5, atol=1e-5)
    conv2 = atrous.conv2d(np.maximum(conv, 0), weights["conv2"][0], backend="numpy")
    np.testing.assert_allclose(got["conv2"], np.maximum(conv2, 0), rtol=1e-5, atol=1e-5)


def test_a_profiled_pass_times_each_layer_that_runs_and_changes_nothing():
    spec = parse_prototxt(RESNET_BLOCK)
    net = Net.from_spec(spec, random_weights(spec, (1, 3, 9, 9), seed=8))
    x = np.random.default_rng(9).standard_normal((1, 3, 9, 9)).astype(np.float32)
    timings = {"conv1": 1.0}  # added to, as the docstring says
    got = net.forward(x, backend="cpu", timings=timings)["sum"]
    np.testing.assert_array_equal(got, net.forward(x, backend="cpu")["sum"])
    # bn1 and sc1 are folded into conv1 and relu1 done as it writes; bn2 and sc2 cannot be (peek reads
    # conv2 before them)
    assert set(timings) == {"conv1", "conv2", "peek", "bn2", "sc2", "sum"}
    assert timings["conv1"] > 1.0 and all(t > 0 for t in timings.values())
