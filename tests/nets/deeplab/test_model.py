"""The segmentation API against the layer-by-layer forward pass, the CRF and the stated rules."""
import numpy as np
import pytest

import crf
from nets import layers as L
from nets.caffe import LayerSpec, NetSpec
from nets.deeplab import Model, parse_scales, resize_rule, resolve_preset, shapes_dataset
from nets.engine import Net

MEAN_BGR = np.float32((104.008, 116.669, 122.675))


def _caffe_input(image, side):
    """DeepLab's blob written out independently: BGR minus the mean, zero-padded bottom/right."""
    h, w = image.shape[:2]
    x = np.zeros((1, 3, side, side), np.float32)
    x[0, :, :h, :w] = (image[:, :, ::-1].astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)
    return x


def test_segment_equals_the_layer_by_layer_forward_pass(largefov, sample):
    image, truth = sample
    result = largefov.segment(image, backend="cpu")
    want = largefov.net.forward(_caffe_input(image, 97), outputs=["fc8_interp"], backend="cpu")["fc8_interp"][0]
    np.testing.assert_array_equal(result.scores, want)
    np.testing.assert_array_equal(result.labels, want.argmax(0))
    e = np.exp(want - want.max(0))
    np.testing.assert_allclose(result.probabilities, e / e.sum(0), atol=1e-6)
    assert (result.labels == truth).mean() > 0.85  # a trained net, not noise
    assert set(result.timings) >= {"preprocess", "network", "crf", "postprocess"}


def test_smaller_image_is_padded_and_cropped_back(largefov, sample):
    image = np.ascontiguousarray(sample[0][10:70, 5:85])
    result = largefov.segment(image, backend="cpu")
    want = largefov.net.forward(_caffe_input(image, 97), outputs=["fc8_interp"], backend="cpu")["fc8_interp"][0]
    assert result.labels.shape == (60, 80)
    np.testing.assert_array_equal(result.scores, want[:, :60, :80])


def test_crf_is_deeplabs_offline_crf_on_the_network_scores(largefov, sample):
    image = sample[0]
    preset = crf.get_preset("deeplab-v1-largefov-voc")
    result = largefov.segment(image, crf=preset.name, backend="cpu")
    q = crf.deeplab_refine(image, result.scores, preset, backend="cpu")
    np.testing.assert_allclose(result.probabilities, q, atol=1e-6)
    np.testing.assert_array_equal(result.labels, q.argmax(0))


def test_scale_one_twice_is_the_plain_pass(largefov, sample):
    plain = largefov.segment(sample[0], backend="cpu")
    twice = largefov.segment(sample[0], scales="1,1", backend="cpu")
    np.testing.assert_allclose(twice.scores, plain.scores, atol=1e-5)


def test_scales_follow_the_msc_prototxt(largefov, sample):
    image = sample[0]
    got = largefov.segment(image, scales=(1, 0.5), backend="cpu").scores
    net = largefov.net
    x = _caffe_input(image, 97)
    full = net.forward(x, outputs=["fc8_shapes"], backend="numpy")["fc8_shapes"]        # (1, 6, 13, 13)
    half_in = L.interp(x, shrink_factor=2, backend="numpy")                               # 97 -> 49, as data_res05
    half = net.forward(half_in, outputs=["fc8_shapes"], backend="numpy")["fc8_shapes"]   # (1, 6, 7, 7)
    half_up = L.interp(half, zoom_factor=2, backend="numpy")                              # 7 -> 13, as res05_interp
    want = L.interp(np.maximum(full, half_up), zoom_factor=8, backend="numpy")[0]         # fc_fusion, fc1_interp
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_net_that_scales_its_own_input_refuses_scales():
    interp = lambda name, bottom, **p: LayerSpec(name, "Interp", [bottom], [name], {"interp_param": p})  # noqa: E731
    spec = NetSpec("msc", [interp("small", "data", shrink_factor=2), interp("back", "small", zoom_factor=2),
                           LayerSpec("fused", "Eltwise", ["data", "back"], ["fused"],
                                     {"eltwise_param": {"operation": "MAX"}}),
                           interp("scores", "fused", zoom_factor=1)], ["data"], [(1, 3, 9, 9)])
    model = Model("msc", Net.from_spec(spec), "scores", 9)
    assert model.multi_scale
    image = np.zeros((9, 9, 3), np.uint8)
    assert model.segment(image, backend="numpy").labels.shape == (9, 9)
    with pytest.raises(ValueError, match="already fuses"):
        model.segment(image, scales=(1, 0.5), backend="numpy")


def test_large_image_is_resized_with_a_warning_never_cropped(largefov, sample):
    image, truth = sample
    big = np.repeat(np.repeat(image, 3, axis=0), 2, axis=1)  # 291 x 194
    assert resize_rule(*big.shape[:2], 97) == (97, 65)
    with pytest.warns(UserWarning, match="resized to 97x65"):
        result = largefov.segment(big, backend="cpu")
    assert result.labels.shape == big.shape[:2] and result.probabilities.shape == (6,) + big.shape[:2]
    assert result.working_size == (97, 65)
    big_truth = np.repeat(np.repeat(truth, 3, axis=0), 2, axis=1)
    assert (result.labels == big_truth).mean() > 0.75  # the whole image is segmented, not a crop


def test_model_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not a model name"):
        Model.load("no-such-model")
    with pytest.raises(ValueError, match="needs its weights"):
        Model.load("deeplab-v1-largefov")
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="bad.caffemodel"):
        Model.load("demo-largefov", weights=bad)


class _NamedPreset:
    """What :func:`resolve_preset` reads of a model: its name and its own preset's name."""

    def __init__(self, crf_preset):
        self.name, self.crf_preset = "a model", crf_preset


def test_presets_and_scales_are_parsed():
    assert resolve_preset(None) is None and resolve_preset("none") is None
    assert resolve_preset("deeplab-v2-resnet101-voc").theta_alpha == 67
    with pytest.raises(ValueError, match="unknown CRF preset"):
        resolve_preset("fast")
    # changed parameters after any name, "auto" and the demo's preset included
    assert resolve_preset("deeplab-v2-resnet101-voc:theta_alpha=80").theta_alpha == 80
    assert resolve_preset("auto:w_bilateral=2", _NamedPreset("deeplab-v1-largefov-voc")).values() == {
        **crf.PRESETS["deeplab-v1-largefov-voc"].values(), "w_bilateral": 2}
    with pytest.raises(ValueError, match="unknown CRF preset 'fast'"):
        resolve_preset("fast:w_bilateral=2")
    with pytest.raises(ValueError, match="^CRF preset auto:w_bilateral=two: w_bilateral must be a number"):
        resolve_preset("auto:w_bilateral=two", _NamedPreset("deeplab-v1-largefov-voc"))
    assert parse_scales("1,0.75,0.5") == (1.0, 0.75, 0.5)
    with pytest.raises(ValueError, match="positive"):
        parse_scales("1,-2")


def test_a_batch_is_the_images_one_by_one(largefov):
    images = [shapes_dataset.sample(i, "heldout")[0][:90, :80] for i in (1, 2, 4)]
    batch = largefov.segment_batch(images, crf="auto", scales=(1, 0.75), backend="cpu")
    assert len(batch) == 3
    for image, got in zip(images, batch):
        want = largefov.segment(image, crf="auto", scales=(1, 0.75), backend="cpu")
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
    assert largefov.segment_batch([], backend="cpu") == []
    with pytest.raises(ValueError, match="one size"):
        largefov.segment_batch([images[0], images[1][:50]], backend="cpu")


def test_labels_only_leaves_out_the_arrays(largefov, sample):
    result = largefov.segment(sample[0], crf="auto", backend="cpu", probabilities=False)
    assert result.probabilities is None and result.scores is None
    np.testing.assert_array_equal(result.labels, largefov.segment(sample[0], crf="auto", backend="cpu").labels)


def test_flip_fuses_the_mirror_images_scores_by_max(largefov, sample):
    image = np.ascontiguousarray(sample[0][5:90, 3:80])  # padded on the right and below
    plain = largefov.segment(image, backend="cpu")
    mirror = largefov.segment(np.ascontiguousarray(image[:, ::-1]), backend="cpu")
    got = largefov.segment(image, backend="cpu", flip=True)
    np.testing.assert_array_equal(got.scores, np.maximum(plain.scores, mirror.scores[:, :, ::-1]))
    np.testing.assert_array_equal(got.labels, got.scores.argmax(0))
    assert (got.labels != plain.labels).any()  # the mirror image's scores took part
    # the pipeline is mirror-symmetric then, CRF included
    flipped = largefov.segment(np.ascontiguousarray(image[:, ::-1]), crf="auto", backend="cpu", flip=True)
    again = largefov.segment(image, crf="auto", backend="cpu", flip=True)
    np.testing.assert_array_equal(flipped.scores, again.scores[:, :, ::-1])
    # the CRF's lattice is not mirror-symmetric (its simplices tile the plane one way): 99.8 % measured
    assert (flipped.labels == again.labels[:, ::-1]).mean() > 0.99


def test_fuse_mirrored_crops_mirrors_and_keeps_nan():
    from nets.deeplab.processing import fuse_mirrored
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    mirrored = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    mirrored[1, 2, 4, 6] = np.nan  # the image's column 0 in the mirror image of width 7
    got = fuse_mirrored(scores, mirrored, 5, 7)
    assert got.shape == (2, 3, 5, 7) and got.dtype == np.float32
    for x in range(7):
        want = np.maximum(scores[:, :, :5, x], mirrored[:, :, :5, 6 - x])
        np.testing.assert_array_equal(got[:, :, :, x], want)
    assert np.isnan(got[1, 2, 4, 0]) and np.isnan(got).sum() == 1
    with pytest.raises(ValueError, match="one shape"):
        fuse_mirrored(scores, mirrored[:, :, :5], 5, 7)
