"""The shipped demo models (nets/data/demo): real caffemodels that an independent Caffe importer runs.

OpenCV's Caffe importer runs the shipped deploy prototxt + caffemodel on the
eight shipped held-out images; the labels must reach the mIoU stated in
TRAINING.md (with a margin: the record is over 100 held-out images, this test
over 8), and the demo CRF preset must not lower it.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import nets
from nets.deeplab import shapes_dataset
from nets.caffe import conv_geometry, pool_geometry, read_caffemodel, read_prototxt
from nets.app.imageio import read_image, read_label_png

DEMO = Path(nets.__file__).parent / "data" / "demo"
MANIFEST = json.loads((DEMO / "demo.json").read_text())
NETS = sorted(MANIFEST["models"])
MEAN_BGR = np.float32((104.008, 116.669, 122.675))
# Held-out mIoU each net must reach on the 8 shipped images (recorded on 100 held-out
# images in TRAINING.md; the margin covers the smaller sample).
MIN_MIOU = {"largefov": 0.70, "aspp": 0.70}


def _heldout():
    indices = MANIFEST["heldout"]["indices"]
    images = np.stack([read_image(DEMO / "heldout" / f"image_{i:02d}.png") for i in indices])
    labels = np.stack([read_label_png(DEMO / "heldout" / f"label_{i:02d}.png") for i in indices])
    return images, labels


def _mean_iou(labels, predictions):
    n = len(shapes_dataset.CLASSES)
    matrix = np.bincount(labels.astype(np.int64).ravel() * n + predictions.astype(np.int64).ravel(),
                         minlength=n * n).reshape(n, n)
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def _opencv_scores(cv2, name, images):
    model = MANIFEST["models"][name]
    net = cv2.dnn.readNetFromCaffe(str(DEMO / model["prototxt"]), str(DEMO / model["caffemodel"]))
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    x = (images[..., ::-1].astype(np.float32) - MEAN_BGR).transpose(0, 3, 1, 2)  # (N, 3, H, W) BGR
    out = []
    for n in range(len(x)):
        net.setInput(np.ascontiguousarray(x[n:n + 1]))
        out.append(net.forward("fc8_interp")[0])
    return np.stack(out)  # (N, L, H, W)


def test_shipped_files_are_small_and_complete():
    total = 0
    for name in NETS:
        model = MANIFEST["models"][name]
        total += (DEMO / model["caffemodel"]).stat().st_size
        assert (DEMO / model["prototxt"]).is_file()
    assert total < 3 * 2 ** 20
    assert (DEMO / "TRAINING.md").is_file()


@pytest.mark.parametrize("name", NETS)
def test_deploy_net_has_deeplab_form(name):
    model = MANIFEST["models"][name]
    spec = read_prototxt(DEMO / model["prototxt"])
    weights = read_caffemodel(DEMO / model["caffemodel"])
    assert spec.input_shapes == [(1, 3, 97, 97)]
    pools = [pool_geometry(l) for l in spec.layers if l.type == "Pooling"]
    assert [(p.pool, p.kernel, p.stride, p.pad) for p in pools] == [("MAX", (3, 3), (2, 2), (1, 1))] * 3
    convs = {l.name: conv_geometry(l) for l in spec.layers if l.type == "Convolution"}
    assert convs["conv5_1"].dilation == convs["conv5_2"].dilation == (2, 2)
    fc6 = sorted(n for n in convs if n.startswith("fc6"))
    assert [convs[n].dilation[0] for n in fc6] == model["rates"]
    assert all(convs[n].pad == convs[n].dilation for n in fc6)
    last = spec.layers[-1]
    assert (last.name, last.type, last.params["interp_param"]) == ("fc8_interp", "Interp", {"zoom_factor": 8})
    if name == "aspp":
        assert spec.layer("fc8_shapes").type == "Eltwise" and len(fc6) == 4
    for layer_name, geometry in convs.items():
        w, b = weights.layer(layer_name).blobs
        assert w.shape[0] == b.shape[0] == geometry.num_output
        assert w.shape[2:] == geometry.kernel
        if layer_name.startswith("fc8"):
            assert geometry.num_output == len(shapes_dataset.CLASSES)


@pytest.mark.parametrize("name", NETS)
def test_opencv_runs_the_model_to_its_stated_miou(require_oracle, name):
    cv2 = require_oracle("cv2")
    images, labels = _heldout()
    scores = _opencv_scores(cv2, name, images)
    assert scores.shape == (len(images), len(shapes_dataset.CLASSES), 97, 97)
    assert _mean_iou(labels, scores.argmax(1)) > MIN_MIOU[name]


@pytest.mark.parametrize("name", NETS)
def test_demo_crf_preset_does_not_lower_miou(require_oracle, name):
    from crf import Preset, deeplab_refine
    cv2 = require_oracle("cv2")
    p = MANIFEST["crf_preset"]
    preset = Preset(p["name"], p["w_bilateral"], p["theta_alpha"], p["theta_beta"], p["w_gaussian"],
                    p["theta_gamma"], p["iterations"], p["source"])
    images, labels = _heldout()
    scores = _opencv_scores(cv2, name, images)
    refined = np.stack([deeplab_refine(im, s, preset, backend="cpu").argmax(0)
                        for im, s in zip(images, scores)])
    assert _mean_iou(labels, refined) >= _mean_iou(labels, scores.argmax(1))
