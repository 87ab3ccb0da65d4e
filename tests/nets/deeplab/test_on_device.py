"""Model.segment with backend="cuda": image -> labels on the GPU equals the CPU pipeline (simulator: a tiny net)."""
import numpy as np
import pytest

import crf
from nets import Model, Net
from nets.caffe import parse_prototxt
from nets.engine.random_weights import random_weights

pytestmark = pytest.mark.cuda

# Two convolutions and a x2 Interp: the scores blob is larger than the image, as DeepLab's fc8_interp.
TINY = """
input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "fc8" type: "Convolution" bottom: "pool1" top: "fc8"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "fc8_interp" type: "Interp" bottom: "fc8" top: "fc8_interp" interp_param { zoom_factor: 2 } }
"""
PRESET = crf.Preset("tiny", w_bilateral=4, theta_alpha=3, theta_beta=20, w_gaussian=3, theta_gamma=1,
                    iterations=3, source="a test")


@pytest.fixture(scope="module")
def model():
    spec = parse_prototxt(TINY)
    weights = random_weights(spec, (1, 3, 8, 8), seed=5)
    weights = {name: [blob * 0.01 for blob in blobs] for name, blobs in weights.items()}  # scores of a few units
    return Model(name="tiny", net=Net.from_spec(spec, weights), scores="fc8_interp", crop_size=8)


def _images(count, seed):
    rng = np.random.default_rng(seed)
    base = np.zeros((6, 7, 3), np.uint8)
    base[:, 3:] = (200, 40, 90)  # two regions, so the bilateral kernel has an edge to keep
    return [np.clip(base.astype(int) + rng.integers(0, 30, base.shape), 0, 255).astype(np.uint8)
            for _ in range(count)]


@pytest.mark.parametrize("preset", [None, PRESET])
def test_segment_on_the_gpu_equals_cpu(model, preset):
    images = _images(2, seed=1)
    want = model.segment_batch(images, crf=preset, backend="cpu")
    got = model.segment_batch(images, crf=preset, backend="cuda")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.scores, w.scores, rtol=0, atol=1e-4 * np.abs(w.scores).max())
        np.testing.assert_allclose(g.probabilities, w.probabilities, rtol=0, atol=2e-5)
        close = np.sort(w.probabilities, axis=0)
        decided = close[-1] - close[-2] > 1e-4  # pixels whose top two labels are not a near tie
        np.testing.assert_array_equal(g.labels[decided], w.labels[decided])
        assert g.labels.dtype == np.uint8 and g.labels.shape == (6, 7)
    if preset is not None:  # the CRF changed something, or the comparison above proves little
        plain = model.segment_batch(images, crf=None, backend="cpu")
        assert any(not np.allclose(p.probabilities, w.probabilities) for p, w in zip(plain, want))


def test_labels_only(model):
    image = _images(1, seed=2)[0]
    result = model.segment(image, crf=PRESET, backend="cuda", probabilities=False)
    assert result.probabilities is None and result.scores is None
    assert result.labels.shape == (6, 7) and result.labels.dtype == np.uint8
    assert result.timings["crf"] > 0


def test_flip_on_the_gpu_equals_cpu(model):
    image = _images(1, seed=3)[0]
    want = model.segment(image, crf=PRESET, backend="cpu", flip=True)
    got = model.segment(image, crf=PRESET, backend="cuda", flip=True)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-4 * np.abs(want.scores).max())
    np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=0, atol=2e-5)
    plain = model.segment(image, backend="cpu")
    assert not np.array_equal(want.scores, plain.scores)  # the mirror image took part


def test_fuse_mirrored_on_the_gpu_equals_numpy():
    from numba import cuda

    from nets.deeplab import on_device
    from nets.deeplab.processing import fuse_mirrored
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    mirrored = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    mirrored[0, 1, 2, 4] = np.nan
    scores[1, 0, 0, 0] = np.nan
    got = on_device.fuse_mirrored(cuda.to_device(scores), cuda.to_device(mirrored), 3, 5).copy_to_host()
    np.testing.assert_array_equal(got, fuse_mirrored(scores, mirrored, 3, 5))
