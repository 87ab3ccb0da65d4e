"""Pooling and Interp against OpenCV's Caffe importer (an independent Caffe implementation).

Each case is a one-layer deploy net written as prototxt text; pooling and
Interp have no weights, so OpenCV reads the prototxt alone. OpenCV runs with
fusion and Winograd off. Not compared: Interp's shrink_factor and pad_beg/pad_end
(OpenCV's Interp sizes those differently from DeepLab's Caffe), and pooling
windows that start past the image (pad 0, stride > kernel), where Caffe writes
-FLT_MAX or 0/0 and OpenCV does not.
"""
import itertools

import numpy as np
import pytest

from nets.layers import interp, pool2d


def _opencv_forward(cv2, tmp_path, x, layer_type, params_name, params):
    n, c, h, w = x.shape
    text = (f'name: "one_layer"\n'
            f'layer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} }} }}\n'
            f'layer {{ name: "out" type: "{layer_type}" bottom: "data" top: "out" '
            f'{params_name} {{ {params} }} }}\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    net.setInput(x)
    return net.forward("out")


def _pool_cases():
    for h, w in [(1, 1), (2, 3), (5, 4), (6, 7), (9, 9), (13, 8), (75, 100)]:
        for k, s, p, mode in itertools.product([1, 2, 3], [1, 2, 3], [0, 1, 2], ["MAX", "AVE"]):
            if p >= k or h + 2 * p < k or w + 2 * p < k or (p == 0 and s > k):
                continue
            yield (h, w), k, s, p, mode
    yield (7, 10), (2, 3), (1, 2), (1, 0), "AVE"
    yield (8, 5), (3, 2), (2, 1), (0, 1), "MAX"


POOL_CASES = list(_pool_cases())


def test_pooling_matches_opencv(require_oracle, tmp_path, rng_seed):
    cv2 = require_oracle("cv2")
    rng = np.random.default_rng(rng_seed)
    assert len(POOL_CASES) > 150
    for (h, w), k, s, p, mode in POOL_CASES:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        if isinstance(k, int):
            params = f"pool: {mode} kernel_size: {k} stride: {s} pad: {p}"
        else:
            params = (f"pool: {mode} kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} "
                      f"pad_h: {p[0]} pad_w: {p[1]}")
        want = _opencv_forward(cv2, tmp_path, x, "Pooling", "pooling_param", params)
        for backend in ("numpy", "cpu"):
            got = pool2d(x, k, s, p, mode.lower(), backend=backend)
            assert got.shape == want.shape, f"{(h, w)} {params}"
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"{(h, w)} {params}")


def test_global_pooling_matches_opencv(require_oracle, tmp_path, rng_seed):
    cv2 = require_oracle("cv2")
    x = np.random.default_rng(rng_seed).standard_normal((1, 4, 6, 5)).astype(np.float32)
    for mode in ("MAX", "AVE"):
        want = _opencv_forward(cv2, tmp_path, x, "Pooling", "pooling_param",
                               f"pool: {mode} global_pooling: true")
        got = pool2d(x, None, mode=mode.lower(), global_pooling=True, backend="cpu")
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


INTERP_CASES = [
    ((65, 65), "zoom_factor: 8", dict(zoom_factor=8)),
    ((33, 33), "zoom_factor: 2", dict(zoom_factor=2)),
    ((5, 7), "zoom_factor: 3", dict(zoom_factor=3)),
    ((41, 30), "zoom_factor: 8", dict(zoom_factor=8)),
    ((513, 513), "height: 385 width: 385", dict(height=385, width=385)),
    ((513, 513), "height: 257 width: 257", dict(height=257, width=257)),
    ((49, 49), "height: 17 width: 17", dict(height=17, width=17)),
    ((17, 17), "height: 65 width: 65", dict(height=65, width=65)),
    ((9, 6), "height: 17 width: 4", dict(height=17, width=4)),
    ((10, 12), "height: 7 width: 23", dict(height=7, width=23)),
]


@pytest.mark.parametrize("size, params, kwargs", INTERP_CASES)
def test_interp_matches_opencv(require_oracle, tmp_path, rng_seed, size, params, kwargs):
    cv2 = require_oracle("cv2")
    x = np.random.default_rng(rng_seed).standard_normal((1, 2) + size).astype(np.float32)
    want = _opencv_forward(cv2, tmp_path, x, "Interp", "interp_param", params)
    scale = max(1.0, float(np.abs(want).max()))
    for backend in ("numpy", "cpu"):
        got = interp(x, **kwargs, backend=backend)
        assert got.shape == want.shape
        # OpenCV's own float32 arithmetic differs from Caffe's order by a few ulps.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
