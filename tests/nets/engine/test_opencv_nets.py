"""Whole official DeepLab nets against OpenCV's DNN module (an independent Caffe implementation).

Seeded random weights (nets.engine.random_weights: He scaling, non-trivial BatchNorm) are
written as caffemodels from the released *train* nets, as Caffe saved the real
models, in both dialects. The project runs the released test prototxts (converted
with nets.convert, or read directly); OpenCV runs deploy twins made with the
prototxt writer (an Input layer, explicit Interp sizes) on the same caffemodel,
with fusion and Winograd off. Every blob is read from the last OpenCV layer that
writes it and compared to 1e-4 x max|ref|.
"""
from importlib import resources

import numpy as np
import pytest

from nets import Net, convert
from nets.caffe import format_prototxt, read_caffemodel, read_prototxt, write_caffemodel
from nets.deeplab import model_spec
from nets.engine.deploy import deploy_spec
from nets.engine.random_weights import random_weights

PROTOTXT = resources.files("nets") / "data" / "prototxt"
INPUTS = ("data", "data_dim", "label")


def _write_model(folder, test_name, dialect, seed):
    """Random weights for a released test net, saved from its train net as Caffe saved the real ones.

    (A new-dialect file saved from a *test* net would also hold MatWrite's parameters
    under field 145, which BVLC Caffe and OpenCV read as another message and reject.)
    """
    spec = read_prototxt(PROTOTXT / f"{test_name}.prototxt")
    weights = random_weights(spec, (1, 3, 65, 65), seed=seed)
    saved = read_prototxt(PROTOTXT / f"{test_name.replace('_test', '_train')}.prototxt")
    path = folder / f"{test_name}_{dialect}.caffemodel"
    write_caffemodel(path, saved, weights, dialect=dialect)
    return path


MODELS = {
    "largefov_v1": ("v1_largefov_test", "v1", 11),
    "largefov_new": ("v1_largefov_test", "new", 12),
    "vgg_aspp": ("v2_vgg16_aspp_l_test", "new", 13),
    # ~530 MB: every tower saved with its own copy of the shared weights, as Caffe saves them.
    "resnet_msc": ("v2_resnet101_aspp_msc_test", "new", 14),
}


class _Models:
    """Caffemodels written on first use, once per session, in a temporary folder."""

    def __init__(self, folder):
        self.folder, self.paths = folder, {}

    def __getitem__(self, key):
        if key not in self.paths:
            self.paths[key] = _write_model(self.folder, *MODELS[key])
        return self.paths[key]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return _Models(tmp_path_factory.mktemp("deeplab_models"))


def _image(shape, seed):
    """A mean-subtracted-image-like input: values in the range of BGR minus the means."""
    return np.random.default_rng(seed).uniform(-120, 130, shape).astype(np.float32)


def _opencv_blobs(cv2, spec, caffemodel, x, names, folder):
    deploy = deploy_spec(spec, x.shape)
    path = folder / f"{spec.name or 'net'}_{x.shape[2]}x{x.shape[3]}_deploy.prototxt"
    path.write_text(format_prototxt(deploy))
    net = cv2.dnn.readNetFromCaffe(str(path), str(caffemodel))
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    net.setInput(x)
    last_writer = {top: layer.name for layer in deploy.layers for top in layer.tops}
    return dict(zip(names, net.forward([last_writer[name] for name in names])))


def _compare(ours, reference, minimum):
    assert len(reference) >= minimum, sorted(reference)
    for name, ref in reference.items():
        got = ours[name]
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        scale = float(np.abs(ref).max())
        assert np.isfinite(scale) and scale > 0, name
        err = float(np.abs(got - ref).max())
        assert err <= 1e-4 * scale, f"{name}: max |error| {err:.3g} > 1e-4 x {scale:.3g}"


def _check_against_opencv(cv2, net, caffemodel, x, folder, minimum):
    names = [b for b in net.blobs if b not in INPUTS]
    ours = net.forward(x, outputs=names, backend="cpu")
    _compare(ours, _opencv_blobs(cv2, net.spec, caffemodel, x, names, folder), minimum)
    return ours


@pytest.mark.parametrize("dialect", ["v1", "new"])
def test_largefov_converted_matches_opencv(require_oracle, models, tmp_path, dialect):
    cv2 = require_oracle("cv2")
    caffemodel = models[f"largefov_{dialect}"]
    convert(caffemodel, PROTOTXT / "v1_largefov_test.prototxt", tmp_path / "largefov.npz", strict=True)
    net = Net.load(tmp_path / "largefov.npz")
    assert net.spec.dialect == "v1"
    x = _image((1, 3, 75, 100), 1)
    ours = _check_against_opencv(cv2, net, caffemodel, x, tmp_path, minimum=23)
    assert ours["pool1"].shape == (1, 64, 38, 51)  # ceil mode: 75 -> 38, 100 -> 51
    assert ours["fc8_interp"].shape == (1, 21, 81, 105)
    # The released test net read directly agrees with its converted form and with its deploy twin.
    direct = Net.load(caffemodel, prototxt=PROTOTXT / "v1_largefov_test.prototxt")
    np.testing.assert_array_equal(direct.forward(x)["fc8_interp"], ours["fc8_interp"])
    twin = Net.from_spec(deploy_spec(direct.spec, x.shape), read_caffemodel(caffemodel))
    np.testing.assert_allclose(twin.forward(x)["fc8_interp"], ours["fc8_interp"], rtol=0, atol=1e-6)


def test_largefov_321_matches_opencv(require_oracle, models, tmp_path):
    cv2 = require_oracle("cv2")
    net = Net.load(models["largefov_new"], prototxt=PROTOTXT / "v1_largefov_test.prototxt")
    ours = _check_against_opencv(cv2, net, models["largefov_new"], _image((1, 3, 321, 321), 2), tmp_path, 23)
    assert ours["fc8_voc12"].shape == (1, 21, 41, 41) and ours["fc8_interp"].shape == (1, 21, 321, 321)


def test_vgg16_aspp_l_matches_opencv(require_oracle, models, tmp_path):
    cv2 = require_oracle("cv2")
    net = Net.load(models["vgg_aspp"], prototxt=PROTOTXT / "v2_vgg16_aspp_l_test.prototxt")
    ours = _check_against_opencv(cv2, net, models["vgg_aspp"], _image((1, 3, 75, 100), 3), tmp_path, 30)
    assert ours["fc8_voc12"].shape == (1, 21, 11, 14)


def test_resnet101_single_scale_matches_opencv(require_oracle, models, tmp_path):
    cv2 = require_oracle("cv2")
    caffemodel = models["resnet_msc"]
    net = Net.from_spec(model_spec("deeplab-v2-resnet101"), read_caffemodel(caffemodel))
    assert len(net.folded_layers) == 104  # every convolution of the tower, ASPP excepted
    x = _image((1, 3, 75, 100), 4)
    ours = _check_against_opencv(cv2, net, caffemodel, x, tmp_path, minimum=144)
    assert ours["res5c"].shape == (1, 2048, 10, 13) and ours["fc1_interp"].shape == (1, 21, 73, 97)
    # The third-party single-scale deploy net (same layer names) gives the same scores.
    drsleep = Net.load(caffemodel, prototxt=PROTOTXT / "v2_resnet101_aspp_deploy_single_scale_321.prototxt")
    np.testing.assert_allclose(drsleep.forward(x, outputs=["fc1_voc12"])["fc1_voc12"], ours["fc1_voc12"],
                               rtol=0, atol=1e-6 * np.abs(ours["fc1_voc12"]).max())


def _interp_numpy(x, zoom=1, shrink=1):
    """DeepLab's Interp (shrink, then zoom) transcribed from interp.cpp, one output pixel at a time."""
    _, _, h, w = x.shape
    h_out, w_out = (h - 1) // shrink + 1, (w - 1) // shrink + 1
    h_out, w_out = h_out + (h_out - 1) * (zoom - 1), w_out + (w_out - 1) * (zoom - 1)
    if (h_out, w_out) == (h, w):
        return x.copy()
    rh = np.float32(h - 1) / np.float32(h_out - 1) if h_out > 1 else np.float32(0)
    rw = np.float32(w - 1) / np.float32(w_out - 1) if w_out > 1 else np.float32(0)
    out = np.empty(x.shape[:2] + (h_out, w_out), np.float32)
    one = np.float32(1)
    for y2 in range(h_out):
        h1r = np.float32(rh * np.float32(y2))
        h1 = int(h1r)
        dh = 1 if h1 < h - 1 else 0
        ly = np.float32(h1r - np.float32(h1))
        for x2 in range(w_out):
            w1r = np.float32(rw * np.float32(x2))
            w1 = int(w1r)
            dw = 1 if w1 < w - 1 else 0
            lx = np.float32(w1r - np.float32(w1))
            out[:, :, y2, x2] = ((one - ly) * ((one - lx) * x[:, :, h1, w1] + lx * x[:, :, h1, w1 + dw])
                                 + ly * ((one - lx) * x[:, :, h1 + dh, w1] + lx * x[:, :, h1 + dh, w1 + dw]))
    return out


def test_resnet101_msc_matches_opencv_and_interp_formula(require_oracle, models, tmp_path):
    cv2 = require_oracle("cv2")
    caffemodel = models["resnet_msc"]
    convert(caffemodel, PROTOTXT / "v2_resnet101_aspp_msc_test.prototxt", tmp_path / "msc.npz")
    with np.load(tmp_path / "msc.npz", allow_pickle=False) as z:
        keys = set(z.files)
    assert "conv1/0" in keys and "conv1_res05/0" not in keys and "conv1_res075/0" not in keys
    net = Net.load(tmp_path / "msc.npz")
    x = _image((1, 3, 65, 65), 5)
    ours = _check_against_opencv(cv2, net, caffemodel, x, tmp_path, minimum=430)
    for top, bottom, zoom, shrink, size in [("data_res05", "data", 1, 2, 33), ("data_res075", "data", 3, 4, 49),
                                            ("fc1_voc12_res05_interp", "fc1_voc12_res05", 2, 1, 9),
                                            ("fc1_voc12_res075_interp", "fc1_voc12_res075", 4, 3, 9),
                                            ("fc1_interp", "fc_fusion", 8, 1, 65)]:
        source = x if bottom == "data" else ours[bottom]
        want = _interp_numpy(source, zoom, shrink)
        assert want.shape[2:] == (size, size) == ours[top].shape[2:], top
        np.testing.assert_allclose(ours[top], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=top)
    fusion = np.maximum(np.maximum(ours["fc1_voc12"], ours["fc1_voc12_res075_interp"]),
                        ours["fc1_voc12_res05_interp"])
    np.testing.assert_array_equal(ours["fc_fusion"], fusion)
