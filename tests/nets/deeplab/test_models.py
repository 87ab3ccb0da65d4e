"""nets.deeplab: the official nets by name, DeepLab's pre- and post-processing, the Python API."""
import numpy as np
import pytest

import nets
from nets import Net
from nets.caffe import write_caffemodel
from nets.deeplab import MEAN_BGR, MODELS, Model, model_spec, postprocess, preprocess, prototxt_path
from nets.engine.random_weights import random_weights

# (model, scores blob, its shape at 513, number of Convolution layers)
REGISTRY = [("deeplab-v1-largefov", "fc8_interp", 16), ("deeplab-v2-vgg16-aspp-l", "fc8_interp", 25),
            ("deeplab-v2-resnet101-msc", "fc1_interp", 324), ("deeplab-v2-resnet101", "fc1_interp", 108)]


@pytest.mark.parametrize("name, scores, convolutions", REGISTRY)
def test_registry_builds_the_official_nets(name, scores, convolutions):
    assert MODELS[name].scores == scores and prototxt_path(name).is_file()
    spec = model_spec(name)
    assert sum(layer.type == "Convolution" for layer in spec.layers) == convolutions
    net = Net(spec)
    assert net.outputs == [scores]
    shapes = net.infer_shapes({"data": (1, 3, 513, 513)}, check=False)
    assert shapes[scores] == (1, 21, 513, 513)
    assert net.infer_shapes({"data": (1, 3, 321, 321)}, check=False)[scores] == (1, 21, 321, 321)
    if name == "deeplab-v2-resnet101":
        assert not any("res05" in layer.name or "res075" in layer.name for layer in spec.layers)
        assert spec.layer("fc1_interp").bottoms == ["fc1_voc12"]
    assert model_spec(name, num_labels=5).layers[-1].type  # the template takes another label count
    with pytest.raises(ValueError, match="unknown model"):
        model_spec("deeplab-v3")


def test_preprocess_is_bgr_minus_mean_padded_with_the_mean():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 1] = (10, 20, 30)  # R, G, B
    x = preprocess(image)
    assert x.shape == (1, 3, 513, 513) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 1], [30 - 104.008, 20 - 116.669, 10 - 122.675], rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 1, 2], -np.array(MEAN_BGR), rtol=1e-6)
    assert not x[0, :, 2:, :].any() and not x[0, :, :, 3:].any()  # padding: the mean, 0 after subtraction
    assert preprocess(np.zeros((600, 20, 3), np.uint8)).shape == (1, 3, 600, 513)
    with pytest.raises(TypeError, match="uint8"):
        preprocess(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess(np.zeros((4, 4), np.uint8))


def test_postprocess_crops_top_left_softmax_and_caffe_argmax():
    scores = np.zeros((3, 6, 7), np.float32)
    scores[0, 0, 0] = 5
    scores[2, 1, 1] = scores[1, 1, 1] = 2  # a tie: Caffe keeps the highest label
    p = postprocess(scores, 4, 5)
    assert p.scores.shape == p.probabilities.shape == (3, 4, 5) and p.labels.shape == (4, 5)
    np.testing.assert_allclose(p.probabilities.sum(0), 1, rtol=1e-6)
    e = np.exp(np.float32(5))
    np.testing.assert_allclose(p.probabilities[:, 0, 0], [e / (e + 2), 1 / (e + 2), 1 / (e + 2)], rtol=1e-6)
    assert p.labels[0, 0] == 0 and p.labels[1, 1] == 2 and p.labels[3, 4] == 2
    assert p.labels.dtype == np.uint8  # one label type everywhere, as in VOC's PNG files


@pytest.fixture(scope="module")
def largefov(tmp_path_factory):
    folder = tmp_path_factory.mktemp("largefov")
    spec = model_spec("deeplab-v1-largefov")
    path = folder / "largefov.caffemodel"
    write_caffemodel(path, spec, random_weights(spec, (1, 3, 65, 65), seed=21), dialect="v1")
    nets.convert(path, prototxt_path("deeplab-v1-largefov"), folder / "largefov.npz")
    return path, folder / "largefov.npz"


def test_api_predicts_scores_probabilities_labels(largefov):
    caffemodel, npz = largefov
    rng = np.random.default_rng(22)
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    model = Model.load("deeplab-v1-largefov", npz, crop_size=65)
    result = model.segment(image, backend="cpu")
    # The same by hand: BGR minus the means, padded with zeros, through the net, top-left crop.
    x = np.zeros((1, 3, 65, 65), np.float32)
    x[0, :, :50, :60] = image[:, :, ::-1].transpose(2, 0, 1) - np.array(MEAN_BGR, np.float32)[:, None, None]
    direct = Net.load(caffemodel, prototxt=prototxt_path("deeplab-v1-largefov")).forward(x)["fc8_interp"]
    np.testing.assert_allclose(result.scores, direct[0, :, :50, :60], rtol=0, atol=1e-5 * np.abs(direct).max())
    assert result.probabilities.shape == (21, 50, 60) and result.labels.shape == (50, 60)
    np.testing.assert_allclose(result.probabilities.sum(0), 1, rtol=1e-5)
    np.testing.assert_array_equal(result.labels, result.scores.argmax(0))
    assert result.scores.std(axis=(1, 2)).min() > 0  # scores vary over the image
    refined = Model.load("deeplab-v1-largefov", caffemodel, crop_size=65).segment(image, crf="auto", backend="cpu")
    np.testing.assert_allclose(refined.scores, result.scores, rtol=0, atol=1e-5 * np.abs(direct).max())
    assert refined.labels.shape == (50, 60) and np.allclose(refined.probabilities.sum(0), 1, atol=1e-4)
