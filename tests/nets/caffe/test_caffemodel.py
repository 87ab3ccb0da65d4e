"""read_caffemodel / write_caffemodel on real files written by real Caffe, and round trips.

The decoder is proven by the numbers: an independent NumPy LeNet (written here, not the
project's layers) fed with the decoded weights reproduces the ``ip2`` scores listed in
tests/data/caffe-real/README.md for both the V1 and the new-dialect LeNet.
"""
import pathlib

import numpy as np
import pytest
from PIL import Image

from nets.caffe import (CaffeFormatError, LayerSpec, NetSpec, conv_geometry, decode_caffemodel,
                        encode_caffemodel, read_caffemodel, read_prototxt, write_caffemodel)
from nets.caffe.codec import encode_message

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "caffe-real"
LENET_V1 = DATA / "lenet_v1" / "lenet_iter_10000.caffemodel"
LENET_NEW = DATA / "lenet_new" / "lenet_iter_10000.caffemodel"
CIFAR_V1 = DATA / "cifar10_quick_v1" / "cifar10_quick_iter_5000.caffemodel"

# ip2 scores from tests/data/caffe-real/README.md ("Expected outputs").
EXPECTED_IP2 = {
    "v1": {
        "img_0_10": [20.2582, -6.4334, 5.0444, -9.349, -10.1503, -3.4368, 2.4852, 3.5594, -2.905, 0.2231],
        "img_0_3": [13.8164, -5.2223, 0.6503, -4.6291, -4.8091, -1.2963, 5.3809, -0.6519, -2.2521, -1.5555],
        "img_1_2": [-2.0383, 11.8968, -0.9202, -3.9787, 1.3163, -2.3048, -0.8069, 2.2979, -0.1063, -4.494],
        "img_1_5": [-2.6418, 15.0753, -1.8898, -4.52, 2.2561, -4.8225, -3.0706, 4.7748, -0.4417, -3.7634],
        "img_2_1": [6.2176, 6.0385, 23.1828, -1.7785, -8.1753, -9.8426, -1.4409, -2.3601, 0.3923, -11.5134],
        "img_4_4": [-0.3597, -4.1771, -1.0377, -5.7857, 14.3025, -5.1037, -0.7845, 0.3567, -1.7814, 4.6008],
        "img_4_6": [-11.3829, -3.0768, -6.4998, -3.1506, 13.9966, 0.1691, -4.7495, 0.5524, 6.7182, 7.8849],
        "img_7_0": [-3.8173, -1.0166, 0.5979, 5.2876, -3.1753, -2.2874, -11.7608, 14.8582, -1.2083, 2.9904],
        "img_9_7": [-7.4734, -2.3315, -0.5572, 6.4841, 1.8293, 1.9043, -13.5346, -0.9112, 0.3233, 14.3782],
        "img_9_9": [-7.6098, -9.6361, -8.3668, 1.8205, 7.8224, 0.1925, -12.6782, 8.042, 2.9157, 18.3315],
    },
    "new": {
        "img_0_10": [20.2056, -2.0958, 2.3032, -7.5723, -8.2978, -3.3455, 3.0426, 0.5447, -5.3043, 0.4768],
        "img_0_3": [14.1708, -3.2705, 0.4029, -5.5909, -5.091, -0.2157, 7.7389, -1.9037, -4.5951, -0.5986],
        "img_1_2": [0.0246, 12.3502, -1.1435, -4.0842, -0.0213, -1.9549, -1.5128, 2.2729, -0.263, -4.1605],
        "img_1_5": [-0.6134, 15.1053, -1.9961, -4.5973, 0.2932, -3.8133, -3.6522, 4.5334, -0.7599, -3.0983],
        "img_2_1": [4.7469, 5.6584, 21.1616, -1.6999, -7.4807, -8.0661, 1.4475, -5.7421, -0.7942, -7.2009],
        "img_4_4": [-2.5109, -3.9066, -4.9529, -3.5445, 13.6161, -3.069, -0.5901, -0.5985, -0.1842, 5.3055],
        "img_4_6": [-10.1215, -0.8611, -4.8393, -3.6449, 13.973, -1.5058, -4.1239, -0.3051, 5.6257, 6.511],
        "img_7_0": [-3.0647, 0.0659, 0.1572, 3.6047, -3.9565, -2.4661, -11.2302, 14.8798, -2.3711, 1.9829],
        "img_9_7": [-6.2395, -1.6035, 1.87, 3.8215, 2.0531, 1.4587, -11.1287, -1.33, -1.2645, 12.5358],
        "img_9_9": [-7.9044, -6.5058, -6.1225, 0.995, 5.6046, -1.3632, -11.6894, 7.6753, 2.9116, 18.3002],
    },
}


# ----------------------------------------------------------------------------- independent LeNet

def _conv_valid(x, w, b):
    """Caffe convolution (cross-correlation, stride 1, no pad): x (C,H,W), w (O,C,k,k), b (O,)."""
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # (C, H-k+1, W-k+1, k, k)
    return np.einsum("chwij,ocij->ohw", windows, w) + b[:, None, None]


def _max_pool_2x2(x):
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))  # (C, H/2, W/2); sizes are even here


def _lenet_ip2(spec, image):
    """conv1 -> pool1 -> conv2 -> pool2 -> ip1 -> relu -> ip2, in float64."""
    def blobs(name):
        weight, bias = (np.asarray(b, dtype=np.float64) for b in spec.layer(name).blobs)
        return weight, bias.reshape(-1)
    w1, b1 = blobs("conv1")
    w2, b2 = blobs("conv2")
    w3, b3 = blobs("ip1")
    w4, b4 = blobs("ip2")
    x = image[None].astype(np.float64) * 0.00390625      # (1, 28, 28)
    x = _max_pool_2x2(_conv_valid(x, w1, b1))              # (20, 12, 12)
    x = _max_pool_2x2(_conv_valid(x, w2, b2))              # (50, 4, 4)
    x = np.maximum(w3.reshape(500, 800) @ x.reshape(-1) + b3, 0.0)  # C,H,W-flattened (800,)
    return w4.reshape(10, 500) @ x + b4


@pytest.mark.parametrize("dialect, path", [("v1", LENET_V1), ("new", LENET_NEW)])
def test_lenet_reproduces_reference_scores(dialect, path):
    spec = read_caffemodel(path)
    assert spec.dialect == dialect
    for sample, expected in EXPECTED_IP2[dialect].items():
        image = np.asarray(Image.open(DATA / "mnist_samples" / f"{sample}.png"))
        assert image.shape == (28, 28) and image.dtype == np.uint8
        scores = _lenet_ip2(spec, image)
        expected = np.array(expected)
        tolerance = 1e-3 * max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(scores, expected, rtol=0, atol=tolerance, err_msg=sample)
        assert scores.argmax() == int(sample.split("_")[1])


def test_lenet_v1_layers_and_legacy_shapes():
    spec = read_caffemodel(LENET_V1)
    assert spec.name == "LeNet"
    assert [(l.name, l.type, l.source_type) for l in spec.layers] == [
        ("mnist", "Data", "DATA"), ("conv1", "Convolution", "CONVOLUTION"), ("pool1", "Pooling", "POOLING"),
        ("conv2", "Convolution", "CONVOLUTION"), ("pool2", "Pooling", "POOLING"),
        ("ip1", "InnerProduct", "INNER_PRODUCT"), ("relu1", "ReLU", "RELU"),
        ("ip2", "InnerProduct", "INNER_PRODUCT"), ("loss", "SoftmaxWithLoss", "SOFTMAX_LOSS")]
    shapes = {l.name: [b.shape for b in l.blobs] for l in spec.layers if l.blobs}
    assert shapes == {"conv1": [(20, 1, 5, 5), (1, 1, 1, 20)], "conv2": [(50, 20, 5, 5), (1, 1, 1, 50)],
                      "ip1": [(1, 1, 500, 800), (1, 1, 1, 500)], "ip2": [(1, 1, 10, 500), (1, 1, 1, 10)]}
    conv1 = spec.layer("conv1")
    assert conv1.param_specs == [{"lr_mult": 1.0}, {"lr_mult": 2.0}]   # from V1 blobs_lr
    assert conv_geometry(conv1).kernel == (5, 5)
    assert spec.layer("pool1").params["pooling_param"] == {"pool": "MAX", "kernel_size": 2, "stride": 2}
    assert spec.layer("mnist").include == [{"phase": "TRAIN"}]
    assert spec.layer("mnist").params["transform_param"] == {"scale": 0.00390625}


def test_lenet_new_layers_and_shapes():
    spec = read_caffemodel(LENET_NEW)
    assert [l.type for l in spec.layers] == ["Data", "Convolution", "Pooling", "Convolution", "Pooling",
                                             "InnerProduct", "ReLU", "InnerProduct", "SoftmaxWithLoss"]
    shapes = {l.name: [b.shape for b in l.blobs] for l in spec.layers if l.blobs}
    assert shapes == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                      "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]}
    assert all(l.phase == "TRAIN" for l in spec.layers)


def test_cifar10_quick_v1_shapes():
    spec = read_caffemodel(CIFAR_V1)
    assert spec.name == "CIFAR10_quick" and spec.dialect == "v1"
    shapes = {l.name: [b.shape for b in l.blobs] for l in spec.layers if l.blobs}
    assert shapes == {"conv1": [(32, 3, 5, 5), (1, 1, 1, 32)], "conv2": [(32, 32, 5, 5), (1, 1, 1, 32)],
                      "conv3": [(64, 32, 5, 5), (1, 1, 1, 64)], "ip1": [(1, 1, 64, 1024), (1, 1, 1, 64)],
                      "ip2": [(1, 1, 10, 64), (1, 1, 1, 10)]}
    pools = {l.name: l.params["pooling_param"]["pool"] for l in spec.layers if l.type == "Pooling"}
    assert pools == {"pool1": "MAX", "pool2": "AVE", "pool3": "AVE"}
    assert conv_geometry(spec.layer("conv1")).pad == (2, 2)


def test_blobs_are_read_only_views_of_the_mapped_file():
    spec = read_caffemodel(LENET_NEW)
    weight = spec.layer("ip1").blobs[0]
    assert weight.dtype == np.dtype("<f4") and not weight.flags.writeable
    base = weight
    while getattr(base, "base", None) is not None and isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and type(base.obj).__name__ == "mmap"


def test_prototxt_and_caffemodel_describe_the_same_deploy_layers():
    weights = read_caffemodel(LENET_V1)
    deploy = read_prototxt(DATA / "lenet_v1" / "lenet.prototxt")
    for layer in deploy.layers:
        if layer.type in ("Convolution", "InnerProduct"):
            saved = weights.layer(layer.name)
            assert saved.params[layer.type.lower().replace("innerproduct", "inner_product") + "_param"][
                "num_output"] == saved.blobs[0].shape[0 if layer.type == "Convolution" else 2]


# ----------------------------------------------------------------------------- writing

def _equal_after_round_trip(a, b):
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    for la, lb in zip(a.layers, b.layers):
        assert (la.type, la.bottoms, la.tops, la.params, la.include) == (lb.type, lb.bottoms, lb.tops,
                                                                           lb.params, lb.include)
        assert len(la.blobs) == len(lb.blobs)
        for x, y in zip(la.blobs, lb.blobs):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(np.asarray(x).reshape(-1), np.asarray(y).reshape(-1))


@pytest.mark.parametrize("source", [LENET_V1, LENET_NEW])
@pytest.mark.parametrize("dialect", ["v1", "new"])
def test_real_lenet_round_trip(tmp_path, source, dialect):
    spec = read_caffemodel(source)
    out = tmp_path / f"lenet_{dialect}.caffemodel"
    write_caffemodel(out, spec, dialect=dialect)
    again = read_caffemodel(out)
    assert again.dialect == dialect
    _equal_after_round_trip(spec, again)
    if dialect == "new" and source == LENET_NEW:
        assert again == spec                       # exact, shapes and phases included
        assert out.read_bytes() == source.read_bytes()  # byte-identical to what Caffe wrote
    if dialect == "v1" and source == LENET_V1:
        assert again == spec
        assert out.read_bytes() == source.read_bytes()


def test_v1_writes_legacy_4d_dims():
    spec = read_caffemodel(LENET_NEW)
    data = encode_caffemodel(spec, dialect="v1").to_bytes()
    shapes = {l.name: [b.shape for b in l.blobs] for l in decode_caffemodel(data).layers if l.blobs}
    assert shapes["ip1"] == [(1, 1, 500, 800), (1, 1, 1, 500)]
    assert shapes["conv1"] == [(20, 1, 5, 5), (1, 1, 1, 20)]


def _resnet_like_spec(rng):
    layers = [
        LayerSpec("conv1", "Convolution", ["data"], ["conv1"],
                  {"convolution_param": {"num_output": 4, "kernel_size": [3], "pad": [2], "dilation": [2],
                                         "bias_term": False}},
                  [rng.standard_normal((4, 3, 3, 3)).astype(np.float32)],
                  param_specs=[{"name": "conv1_0", "lr_mult": 1.0}]),
        LayerSpec("bn_conv1", "BatchNorm", ["conv1"], ["conv1"], {"batch_norm_param": {"use_global_stats": True}},
                  [rng.standard_normal(4).astype(np.float32), rng.random(4).astype(np.float32),
                   np.array([999.98], np.float32)]),
        LayerSpec("scale_conv1", "Scale", ["conv1"], ["conv1"], {"scale_param": {"bias_term": True}},
                  [rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)]),
        LayerSpec("interp", "Interp", ["conv1"], ["interp"], {"interp_param": {"zoom_factor": 8}}),
        LayerSpec("acc", "SegAccuracy", ["interp", "label"], ["acc"],
                  {"seg_accuracy_param": {"ignore_label": [255]}}),
        LayerSpec("crf", "DenseCRF", ["interp", "dim", "data"], ["crf"],
                  {"dense_crf_param": {"max_iter": 10, "pos_w": [3.0], "bi_w": [4.0]}}),
        LayerSpec("mat", "MatWrite", ["crf"], [], {"mat_write_param": {"prefix": "out/", "period": 1}}),
    ]
    return NetSpec("tiny", layers, ["data"], [(1, 3, 9, 9)])


@pytest.mark.parametrize("pack", [None, True, False])
def test_new_dialect_round_trip_with_deeplab_fields(tmp_path, pack):
    spec = _resnet_like_spec(np.random.default_rng(0))
    out = tmp_path / "tiny.caffemodel"
    write_caffemodel(out, spec, dialect="new", pack=pack)
    assert read_caffemodel(out) == spec


def test_weights_argument_replaces_blobs_and_double_data(tmp_path):
    spec = _resnet_like_spec(np.random.default_rng(1))
    weight = np.random.default_rng(2).standard_normal((4, 3, 3, 3))   # float64: written as double_data
    out = tmp_path / "w.caffemodel"
    write_caffemodel(out, spec, {"conv1": [weight]})
    blob = read_caffemodel(out).layer("conv1").blobs[0]
    assert blob.dtype == np.float64
    np.testing.assert_array_equal(blob, weight)
    with pytest.raises(CaffeFormatError, match="layers the net does not have: \\['nope'\\]"):
        write_caffemodel(out, spec, {"nope": [weight]})


@pytest.mark.parametrize("layer_type", ["BatchNorm", "Scale", "Input"])
def test_v1_refuses_types_it_cannot_express(tmp_path, layer_type):
    spec = NetSpec("n", [LayerSpec("x", layer_type, ["a"], ["a"])])
    out = tmp_path / "v1.caffemodel"
    with pytest.raises(CaffeFormatError, match=f"layer 'x': type '{layer_type}' has no V1 enum value"):
        write_caffemodel(out, spec, dialect="v1")
    assert not out.exists()


def test_v1_round_trip_of_a_largefov_like_net(tmp_path):
    rng = np.random.default_rng(3)
    layers = [
        LayerSpec("data", "ImageSegData", [], ["data", "label"],
                  {"image_data_param": {"batch_size": 1, "has_label": False}}, include=[{"phase": "TEST"}]),
        LayerSpec("fc6", "Convolution", ["data"], ["fc6"],
                  {"convolution_param": {"num_output": 5, "pad": [12], "kernel_size": [3], "dilation": [12]}},
                  [rng.standard_normal((5, 3, 3, 3)).astype(np.float32),
                   rng.standard_normal((1, 1, 1, 5)).astype(np.float32)],
                  param_specs=[{"lr_mult": 1.0, "decay_mult": 1.0}, {"lr_mult": 2.0, "decay_mult": 0.0}],
                  extra={"strict_dim": False}),
        LayerSpec("up", "Deconvolution", ["fc6"], ["up"],
                  {"convolution_param": {"num_output": 5, "kernel_size": [4], "stride": [2]}},
                  [rng.standard_normal((5, 5, 4, 4)).astype(np.float32)]),
        LayerSpec("fc8_interp", "Interp", ["up"], ["fc8_interp"], {"interp_param": {"zoom_factor": 8}}),
        LayerSpec("acc", "SegAccuracy", ["fc8_interp", "label"], ["acc"],
                  {"seg_accuracy_param": {"ignore_label": [255]}}),
    ]
    spec = NetSpec("largefov", layers, dialect="v1")
    out = tmp_path / "v1.caffemodel"
    write_caffemodel(out, spec, dialect="v1")
    assert read_caffemodel(out) == spec


def test_unpacked_repeated_fields_are_read(tmp_path):
    spec = read_caffemodel(LENET_NEW)
    out = tmp_path / "unpacked.caffemodel"
    write_caffemodel(out, spec, pack=False)
    data = out.read_bytes()
    # The ip2 bias as Caffe packs it (tag 0x2a = field 5, length-delimited) is absent;
    # every value carries its own tag 0x2d (field 5, fixed32) instead.
    bias = spec.layer("ip2").blobs[1]
    assert bias.tobytes() not in data
    assert b"".join(b"\x2d" + bias[i:i + 1].tobytes() for i in range(10)) in data
    assert len(data) > LENET_NEW.stat().st_size
    assert read_caffemodel(out) == spec


# ----------------------------------------------------------------------------- DeepLab's reused numbers

def _net_bytes(message):
    return encode_message("NetParameter", message).to_bytes()


def test_field_143_depends_on_the_layer_type():
    body = encode_message("InterpParameter", {"zoom_factor": 8}).to_bytes()
    decoded = {}
    for layer_type in ("Interp", "Input"):
        # the same bytes under field 143: DeepLab's interp_param or BVLC's input_param
        layer = encode_message("LayerParameter", {"name": "x", "type": layer_type}).to_bytes()
        layer += b"\xfa\x08" + bytes([len(body)]) + body      # tag of field 143, wire type 2
        data = b"\xa2\x06" + bytes([len(layer)]) + layer      # NetParameter.layer (field 100)
        decoded[layer_type] = decode_caffemodel(data).layers[0].params
    assert decoded["Interp"] == {"interp_param": {"zoom_factor": 8}}
    assert decoded["Input"] == {"input_param": {}}   # field 3 means nothing in InputParameter


def test_v1_type_39_and_hole_17():
    seg = {"name": "data", "type": "IMAGE_SEG_DATA", "top": ["data"], "image_data_param": {"batch_size": 1}}
    conv = {"name": "fc6", "type": "CONVOLUTION", "convolution_param": {"num_output": 2, "hole": 12,
                                                                          "kernel_size": 3}}
    deconv = {"name": "up", "type": "DECONVOLUTION", "convolution_param": {"num_output": 2}}
    spec = decode_caffemodel(_net_bytes({"layers": [seg, conv, deconv]}))
    assert [l.type for l in spec.layers] == ["ImageSegData", "Convolution", "Deconvolution"]
    assert spec.layer("fc6").params["convolution_param"] == {"num_output": 2, "dilation": [12],
                                                             "kernel_size": [3]}
    raw = _net_bytes({"layers": [conv]})
    # hole is field 17 inside DeepLab v1's ConvolutionParameter: tag 0x88 0x01, value 12
    assert b"\x88\x01\x0c" in raw


def test_writer_refuses_a_reused_number_on_the_wrong_layer_type():
    spec = NetSpec("n", [LayerSpec("x", "Input", [], ["x"], {"interp_param": {"zoom_factor": 2}})])
    with pytest.raises(CaffeFormatError, match=r"layer 'x': interp_param \(field 143\) belongs to layers of "
                                               r"type \['Interp'\], not 'Input'"):
        encode_caffemodel(spec)


def test_new_dialect_dilation_is_field_18():
    conv = {"name": "c", "type": "Convolution", "convolution_param": {"dilation": [2]}}
    raw = _net_bytes({"layer": [conv]})
    assert b"\x90\x01\x02" in raw   # field 18, varint, 2 (unpacked, as Caffe writes it)


# ----------------------------------------------------------------------------- an independent reader

@pytest.mark.parametrize("source", ["lenet_v1", "lenet_new"])
@pytest.mark.parametrize("dialect", ["v1", "new"])
def test_opencv_reads_the_files_we_write(tmp_path, require_oracle, source, dialect):
    """OpenCV's own Caffe importer (generated from caffe.proto) loads our files in both dialects."""
    cv2 = require_oracle("cv2")
    spec = read_caffemodel(DATA / source / "lenet_iter_10000.caffemodel")
    out = tmp_path / f"{source}_as_{dialect}.caffemodel"
    write_caffemodel(out, spec, dialect=dialect)
    net = cv2.dnn.readNetFromCaffe(str(DATA / source / "lenet.prototxt"), str(out))
    key = "v1" if source == "lenet_v1" else "new"
    for sample in ("img_2_1", "img_9_7"):
        image = np.asarray(Image.open(DATA / "mnist_samples" / f"{sample}.png")).astype(np.float32)
        net.setInput(image[None, None] * np.float32(0.00390625))
        scores = net.forward("ip2").reshape(-1)
        expected = np.array(EXPECTED_IP2[key][sample])
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-3 * np.abs(expected).max())
