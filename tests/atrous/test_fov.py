"""Sizes, strides and receptive fields of atrous.fov against hand counts, brute force and OpenCV."""
import itertools

import numpy as np
import pytest

from atrous import fov
from atrous.fov import Layer


def conv(name, cin, cout, k=3, pad=1, dilation=1, stride=1, bias=True):
    return Layer(name, "conv", k, stride, pad, dilation, cin, cout, bias)


def pool(name, k=3, stride=2, pad=1):
    return Layer(name, "pool", k, stride, pad)


def vgg16_largefov():
    """DeepLab-LargeFOV (v1_largefov_test.prototxt), typed in by hand from the file."""
    widths = [(3, 64), (64, 64), "pool1", (64, 128), (128, 128), "pool2",
              (128, 256), (256, 256), (256, 256), "pool3",
              (256, 512), (512, 512), (512, 512), "pool4"]
    names = iter(["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                  "conv4_1", "conv4_2", "conv4_3"])
    layers = []
    for w in widths:
        if w == "pool4":
            layers.append(pool("pool4", stride=1))
        elif isinstance(w, str):
            layers.append(pool(w))
        else:
            layers.append(conv(next(names), *w))
    layers += [conv(f"conv5_{i}", 512, 512, pad=2, dilation=2) for i in (1, 2, 3)]
    layers += [pool("pool5", stride=1), pool("pool5a", stride=1),
               conv("fc6", 512, 1024, pad=12, dilation=12),
               conv("fc7", 1024, 1024, k=1, pad=0),
               conv("fc8_voc12", 1024, 21, k=1, pad=0)]
    return layers


def resnet_stem():
    """ResNet-101's stride-changing path: conv1 7x7/2, pool1 3x3/2 pad 1, res3a 1x1/2."""
    return [Layer("conv1", "conv", 7, 2, 3, 1, 3, 64, bias=False),
            pool("pool1"),
            Layer("res2a_branch2a", "conv", 1, 1, 0, 1, 64, 64, bias=False),
            Layer("res2a_branch2b", "conv", 3, 1, 1, 1, 64, 64, bias=False),
            Layer("res2a_branch2c", "conv", 1, 1, 0, 1, 64, 256, bias=False),
            Layer("res3a_branch2a", "conv", 1, 2, 0, 1, 256, 128, bias=False)]


# ---------------------------------------------------------------- single layers, by hand

@pytest.mark.parametrize("size, k, stride, pad, dilation, expected", [
    (5, 3, 1, 0, 1, 3),      # 3 valid positions
    (5, 3, 1, 1, 1, 5),      # "same" padding
    (7, 3, 1, 0, 2, 3),      # k_eff 5: starts 0, 1, 2
    (7, 3, 1, 2, 2, 7),      # pad = rate keeps the size
    (10, 3, 2, 1, 1, 5),     # starts -1, 1, 3, 5, 7 (7 + 3 <= 11)
    (513, 3, 1, 12, 12, 513),
    (65, 3, 1, 24, 24, 65),
    (4, 2, 3, 0, 1, 1),      # floor: one window 0..1, the next would start at 3
])
def test_conv_output_size_by_hand(size, k, stride, pad, dilation, expected):
    (row,) = fov.trace([Layer("c", "conv", k, stride, pad, dilation, 1, 1)], size, 1)
    assert row.size_out == expected


@pytest.mark.parametrize("size, k, stride, pad, ceil_mode, expected", [
    (513, 3, 2, 1, True, 257),
    (257, 3, 2, 1, True, 129),
    (129, 3, 2, 1, True, 65),
    (65, 3, 1, 1, True, 65),
    (6, 3, 2, 1, True, 4),    # ceil(5/2)+1 = 4: windows start at -1, 1, 3, 5 (pixel 5 is real)
    (6, 3, 2, 1, False, 3),   # floor drops the partial window
    (5, 2, 2, 1, True, 3),    # ceil gives 4, but window 4 would start at pixel 5: clipped
    (6, 2, 2, 0, True, 3),
    (7, 2, 2, 0, True, 4),    # no pad: the partial window at 6 stays (no clip rule)
])
def test_pool_output_size_by_hand(size, k, stride, pad, ceil_mode, expected):
    assert fov.pool_output_size(size, k, stride, pad, ceil_mode) == expected


def test_effective_kernel():
    assert [fov.effective_kernel(3, r) for r in (1, 2, 6, 12, 18, 24)] == [3, 5, 13, 25, 37, 49]
    assert fov.effective_kernel(7, 4) == 25
    assert fov.effective_kernel(1, 12) == 1


def test_single_atrous_layer_geometry():
    (row,) = fov.trace([Layer("fc6", "conv", 3, 1, 12, 12, 512, 1024)], 65)
    assert (row.k_eff, row.size_out, row.jump, row.rf, row.offset) == (25, 65, 1, 25, 0.0)
    assert row.params == 1024 * 512 * 9 + 1024


def test_receptive_field_by_hand_two_layers():
    # 3x3 stride 2, then 3x3 rate 2: rf 3, then 3 + (5 - 1) * 2 = 11; jump 2.
    rows = fov.trace([conv("a", 1, 1, stride=2, pad=0), conv("b", 1, 1, pad=0, dilation=2)], 31)
    assert [r.rf for r in rows] == [3, 11]
    assert [r.jump for r in rows] == [2, 2]
    assert [r.size_out for r in rows] == [15, 11]
    # no padding: output 0 of "a" is centred on pixel 1, of "b" on 1 + 2 * 2 = 5
    assert [r.offset for r in rows] == [1.0, 5.0]


# ---------------------------------------------------------------- DeepLab nets (ICLR 2015 Table 2)

def test_vgg16_largefov_at_513():
    rows = {r.name: r for r in fov.trace(vgg16_largefov(), 513, in_channels=3)}
    assert [rows[n].size_out for n in ("pool1", "pool2", "pool3", "pool4", "pool5", "pool5a",
                                       "fc6", "fc8_voc12")] == [257, 129, 65, 65, 65, 65, 65, 65]
    assert rows["fc8_voc12"].jump == 8
    assert rows["fc8_voc12"].out_channels == 21
    # score pixel i sits on image pixel 8 i (the x8 align-corners Interp relies on it)
    assert all(r.offset == 0 for r in rows.values())


def test_vgg16_largefov_receptive_field_by_hand():
    # rf grows by (k_eff - 1) * jump_in: 2 per 3x3 conv at jump 1, 2 for pool1 ... fc6 adds 24 * 8.
    expected = [3, 5, 7, 11, 15, 19, 27, 35, 43, 51, 67, 83, 99, 115,
                147, 179, 211, 227, 243, 435, 435, 435]
    assert [r.rf for r in fov.trace(vgg16_largefov(), 513, 3)] == expected


def test_vgg16_largefov_parameters_match_iclr_table2():
    # VGG-16's 13 convolutions hold 14,714,688 values; fc6 512*1024*9 + 1024,
    # fc7 1024*1024 + 1024, fc8 1024*21 + 21: 20,505,429, the paper's "20.5M".
    total = sum(r.params for r in fov.trace(vgg16_largefov(), 513, 3))
    assert total == 14_714_688 + 4_719_616 + 1_049_600 + 21_525
    assert round(total / 1e6, 1) == 20.5


@pytest.mark.parametrize("size, expected", [(513, [257, 129, 65]), (321, [161, 81, 41])])
def test_vgg_stride_8_sizes(size, expected):
    rows = {r.name: r for r in fov.trace(vgg16_largefov(), size, 3)}
    assert [rows[n].size_out for n in ("pool1", "pool2", "pool3")] == expected
    assert rows["fc8_voc12"].size_out == expected[-1]


@pytest.mark.parametrize("size, expected", [(513, [257, 129, 65]), (321, [161, 81, 41]),
                                            (257, [129, 65, 33]), (385, [193, 97, 49])])
def test_resnet_stem_sizes(size, expected):
    rows = {r.name: r for r in fov.trace(resnet_stem(), size, 3)}
    assert [rows[n].size_out for n in ("conv1", "pool1", "res3a_branch2a")] == expected
    assert rows["res3a_branch2a"].jump == 8
    assert rows["conv1"].params == 64 * 3 * 49  # bias_term: false


# ---------------------------------------------------------------- brute force and OpenCV

def brute_force(layers, size):
    """Follow, for every feature position, the first and last input pixel it depends on.

    Sizes come from enumerating windows (a window is kept while it starts inside
    the padded input and, for Caffe pooling, before the end of the real input);
    extents from taking min/max over the taps that land on real pixels (a window
    that sees only padding depends on nothing: lo = inf, hi = -inf).
    """
    lo = np.arange(size, dtype=float)
    hi = np.arange(size, dtype=float)
    for layer in layers:
        k_eff = layer.dilation * (layer.kernel - 1) + 1
        n_in = len(lo)
        starts = []
        j = 0
        while True:
            start = j * layer.stride - layer.pad
            if layer.kind == "conv" or layer.ceil_mode is False:
                fits = start + k_eff <= n_in + layer.pad
            else:  # Caffe ceil mode: a partial window is kept if it starts on a real pixel
                last_full = n_in + 2 * layer.pad - layer.kernel  # padded coords
                fits = j * layer.stride < last_full + layer.stride
                if layer.pad > 0:
                    fits = fits and start < n_in
            if not fits:
                break
            starts.append(start)
            j += 1
        new_lo, new_hi = [], []
        for start in starts:
            taps = [start + t * layer.dilation for t in range(layer.kernel)]
            taps = [t for t in taps if 0 <= t < n_in]
            new_lo.append(min((lo[t] for t in taps), default=np.inf))
            new_hi.append(max((hi[t] for t in taps), default=-np.inf))
        lo, hi = np.array(new_lo), np.array(new_hi)
    return lo, hi


RANDOM_STACKS = 60


@pytest.mark.parametrize("seed", range(RANDOM_STACKS))
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(rng.integers(1, 5)):
        if rng.random() < 0.3:
            k = int(rng.integers(2, 4))
            layers.append(Layer(f"p{i}", "pool", k, int(rng.integers(1, 3)), int(rng.integers(0, k)),
                                ceil_mode=bool(rng.random() < 0.8)))
        else:
            k = int(rng.choice([1, 2, 3, 5]))
            d = int(rng.choice([1, 2, 3]))
            layers.append(Layer(f"c{i}", "conv", k, int(rng.integers(1, 3)),
                                int(rng.integers(0, d * (k - 1) // 2 + 2)), d, 1, 1))
    size = int(rng.integers(200, 320))  # wider than any field these stacks reach (about 190)
    rows = fov.trace(layers, size, 1)
    lo, hi = brute_force(layers, size)
    assert rows[-1].size_out == len(lo)
    # outputs whose receptive field lies entirely inside the image see their full theoretical field
    last = rows[-1]
    centres = last.offset + last.jump * np.arange(len(lo))
    inside = (centres - (last.rf - 1) / 2 >= 0) & (centres + (last.rf - 1) / 2 <= size - 1)
    assert inside.any(), "the random stack left no interior output; widen the input"
    np.testing.assert_array_equal(hi[inside] - lo[inside] + 1, last.rf)
    np.testing.assert_array_equal((lo[inside] + hi[inside]) / 2, centres[inside])


def opencv_size(cv2, size, layer):
    if layer.kind == "pool":
        body = (f'type: "Pooling" pooling_param {{ pool: MAX kernel_size: {layer.kernel} '
                f'stride: {layer.stride} pad: {layer.pad} }}')
    else:
        body = (f'type: "Convolution" convolution_param {{ num_output: 1 kernel_size: {layer.kernel} '
                f'stride: {layer.stride} pad: {layer.pad} dilation: {layer.dilation} }}')
    text = (f'input: "data" input_shape {{ dim: 1 dim: 1 dim: {size} dim: {size} }}\n'
            f'layer {{ name: "l" bottom: "data" top: "l" {body} }}')
    net = cv2.dnn.readNetFromCaffe(bytearray(text.encode()))
    if layer.kind == "conv":
        net.getLayer("l").blobs = [np.ones((1, 1, layer.kernel, layer.kernel), np.float32),
                                   np.zeros(1, np.float32)]
    net.setInput(np.zeros((1, 1, size, size), np.float32))
    return net.forward().shape[2]


def test_sizes_against_opencv_caffe_importer(require_oracle):
    cv2 = require_oracle("cv2")
    cases = []
    for size, k, stride in itertools.product((5, 6, 7, 13, 16), (2, 3), (1, 2, 3)):
        for pad in range(k):
            cases.append((size, Layer("l", "pool", k, stride, pad)))
    for size, k, stride, d in itertools.product((7, 12, 25), (1, 3), (1, 2), (1, 2, 4)):
        for pad in (0, d):
            if size + 2 * pad >= d * (k - 1) + 1:
                cases.append((size, Layer("l", "conv", k, stride, pad, d, 1, 1)))
    for size, layer in cases:
        (row,) = fov.trace([layer], size, 1)
        assert row.size_out == opencv_size(cv2, size, layer), (size, layer)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("layer, match", [
    (Layer("x", "fc", 3), "kind must be one of"),
    (Layer("x", "conv", 3, out_channels=None), "out_channels must be a positive int"),
    (Layer("x", "conv", 0, out_channels=4), "kernel must be a positive int"),
    (Layer("x", "conv", 3, stride=0, out_channels=4), "stride must be a positive int"),
    (Layer("x", "conv", 3, dilation=0, out_channels=4), "dilation must be a positive int"),
    (Layer("x", "conv", 3, pad=-1, out_channels=4), "pad must be a non-negative int"),
    (Layer("x", "conv", 3, in_channels=5, out_channels=4), "expects 5 input channels"),
    (Layer("x", "conv", 3, out_channels=4, groups=2), "groups=2 must divide"),
    (Layer("x", "conv", 3, out_channels=4, ceil_mode=True), "always rounds down"),
    (Layer("x", "conv", 3, dilation=12, out_channels=4), "shorter than the effective kernel 25"),
    (Layer("x", "pool", 3, pad=3), "pad < kernel"),
    (Layer("x", "pool", 3, dilation=2), "no dilation"),
    (Layer("x", "pool", 3, out_channels=7), "pooling keeps 3 channels"),
])
def test_invalid_layers_raise_value_error(layer, match):
    with pytest.raises(ValueError, match=match):
        fov.trace([layer], 9, in_channels=3)


def test_other_errors():
    with pytest.raises(ValueError, match="empty stack"):
        fov.trace([], 9, 3)
    with pytest.raises(TypeError, match="expected atrous.fov.Layer"):
        fov.trace([{"kind": "conv"}], 9, 3)
    with pytest.raises(ValueError, match="input channels unknown"):
        fov.trace([Layer("x", "conv", 3, out_channels=4)], 9)
    with pytest.raises(ValueError, match="size must be a positive int"):
        fov.trace([Layer("x", "conv", 3, out_channels=4)], 0, 3)
    with pytest.raises(ValueError, match="size must be a positive int"):
        fov.pool_output_size(0, 3)


def test_format_table_lists_every_layer_and_the_total():
    text = fov.format_table(fov.trace(vgg16_largefov(), 513, 3))
    assert "fc6" in text and "pool5a" in text
    assert text.rstrip().endswith("20,505,429")


def test_atrous_fov_does_not_import_nets(run_python):
    result = run_python("import sys, atrous.fov; print('nets' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
