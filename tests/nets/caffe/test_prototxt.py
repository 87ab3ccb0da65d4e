"""Prototxt: the official DeepLab nets (shipped as package data), syntax, templates, errors."""
import collections
import importlib.resources
import pathlib

import pytest

from nets.caffe import (CaffeFormatError, conv_geometry, format_prototxt, parse_prototxt, pool_geometry,
                        read_prototxt, upgrade_prototxt)

PROTOTXT = importlib.resources.files("nets") / "data" / "prototxt"
OFFICIAL = ["v1_deeplab_plain_test", "v1_largefov_deploy_newformat_321", "v1_largefov_test",
            "v1_largefov_train", "v1_msc_largefov_test", "v2_resnet101_aspp_deploy_single_scale_321",
            "v2_resnet101_aspp_msc_test", "v2_resnet101_aspp_msc_train", "v2_vgg16_aspp_l_test",
            "v2_vgg16_aspp_l_train"]
DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "caffe-real"


def _read(name, **values):
    with importlib.resources.as_file(PROTOTXT / f"{name}.prototxt") as path:
        return read_prototxt(path, **values)


@pytest.fixture(scope="module")
def official():
    return {name: _read(name) for name in OFFICIAL}


def test_package_ships_the_official_prototxts():
    names = sorted(p.name for p in PROTOTXT.iterdir() if p.name.endswith(".prototxt"))
    assert names == sorted(f"{n}.prototxt" for n in OFFICIAL)
    assert (PROTOTXT / "SOURCES.md").is_file()


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_prototxt_round_trips_through_the_writer(official, name):
    spec = official[name]
    assert spec.dialect == ("v1" if name.startswith("v1_") and "newformat" not in name else "new")
    again = parse_prototxt(format_prototxt(spec))
    assert again == spec
    upgraded = parse_prototxt(format_prototxt(spec, dialect="new"))
    assert upgraded.dialect == "new"
    assert [(l.name, l.type, l.params) for l in upgraded.layers] == [
        (l.name, l.type, l.params) for l in spec.layers]


def test_v1_largefov_test_net(official):
    spec = official["v1_largefov_test"]
    assert [l.type for l in spec.layers].count("Convolution") == 16
    assert spec.layers[0].type == "ImageSegData" and spec.layers[0].source_type == "IMAGE_SEG_DATA"
    assert spec.layers[0].params["transform_param"]["mean_value"] == [104.008, 116.669, 122.675]
    fc6 = spec.layer("fc6")
    assert conv_geometry(fc6) == (1024, (3, 3), (1, 1), (12, 12), (12, 12), 1, True)   # hole 12 -> dilation
    assert fc6.extra == {"strict_dim": False}
    assert conv_geometry(spec.layer("conv5_1")).dilation == (2, 2)
    assert pool_geometry(spec.layer("pool5a")) == ("AVE", (3, 3), (1, 1), (1, 1), False, "CEIL")
    assert pool_geometry(spec.layer("pool4")).stride == (1, 1)
    assert spec.layer("fc8_voc12").params["convolution_param"]["num_output"] == 21   # ${NUM_LABELS}
    assert spec.layer("fc8_interp").params["interp_param"] == {"zoom_factor": 8}
    assert spec.layer("fc8_interp").type == "Interp"


def test_v2_resnet101_msc_layer_counts_and_sharing(official):
    spec = official["v2_resnet101_aspp_msc_test"]   # CRLF line endings
    counts = collections.Counter(l.type for l in spec.layers)
    assert (counts["Convolution"], counts["BatchNorm"], counts["Scale"], counts["ReLU"], counts["Eltwise"],
            counts["Pooling"], counts["Interp"]) == (324, 312, 312, 300, 103, 3, 5)
    assert spec.layer("conv1_res05").param_names == ["conv1_0"]
    assert spec.layer("data_res075").params["interp_param"] == {"shrink_factor": 4, "zoom_factor": 3,
                                                               "pad_beg": 0, "pad_end": 0}
    assert spec.layer("fc_fusion").params["eltwise_param"] == {"operation": "MAX"}
    assert conv_geometry(spec.layer("fc1_voc12_c3")).dilation == (24, 24)
    assert conv_geometry(spec.layer("res5c_branch2b")).pad == (4, 4)
    assert spec.layer("bn_conv1").params["batch_norm_param"] == {"use_global_stats": True}
    assert "fc1_voc12_c0" in {l.name for l in spec.layers}   # ${EXP} -> voc12


def test_deploy_nets_declare_inputs(official):
    for name in ("v1_largefov_deploy_newformat_321", "v2_resnet101_aspp_deploy_single_scale_321"):
        assert official[name].inputs == ["data"] and official[name].input_shapes == [(1, 3, 321, 321)]
    lenet = read_prototxt(DATA / "lenet_new" / "lenet.prototxt")
    assert lenet.layers[0].type == "Input"
    assert lenet.layers[0].params["input_param"] == {"shape": [{"dim": [64, 1, 28, 28]}]}


def test_phase_filtering(official):
    train = official["v2_resnet101_aspp_msc_train"]
    lenet = read_prototxt(DATA / "lenet_v1" / "lenet_train_test.prototxt")
    assert [l.name for l in lenet.for_phase("TEST").layers][:1] == ["mnist"]
    assert len(lenet.for_phase("TEST").layers) == len(lenet.layers) - 1
    assert "accuracy" not in {l.name for l in lenet.for_phase("TRAIN").layers}
    assert len(train.for_phase("TRAIN").layers) == len(train.layers)


def test_templates_defaults_and_overrides():
    text = 'name: "fc8_${EXP}" layer { name: "x" type: "Convolution" convolution_param { num_output: ${NUM_LABELS} } }'
    spec = parse_prototxt(text)
    assert spec.name == "fc8_voc12" and spec.layers[0].params["convolution_param"]["num_output"] == 21
    spec = parse_prototxt(text, NUM_LABELS=59, EXP="context")
    assert spec.name == "fc8_context" and spec.layers[0].params["convolution_param"]["num_output"] == 59
    assert parse_prototxt('name: "${NET_ID}"').name == "${NET_ID}"          # kept inside strings
    with pytest.raises(CaffeFormatError, match=r"line 2, column 12: template placeholder \$\{WIDTH\} has no value"):
        parse_prototxt("input: 'a'\ninput_dim: ${WIDTH}")


def test_syntax_variants():
    text = ("# comment\r\nname: 'a\\'b\\n\\101\\x42' \"c\"\r\n"
            "input: \"data\" input_shape < dim: [1, 3, 0x10, 16] >;\r\n"
            "layer: { name: \"p\"; type: \"Pooling\", pooling_param { pool: AVE kernel_size: 3 } "
            "include { phase: 1 } }\r\n"
            "layer { name: 'e' type: 'Eltwise' eltwise_param { coeff: -1 coeff: 2.5e-1 coeff: -inf "
            "coeff: 1.5f } }")
    spec = parse_prototxt(text)
    assert spec.name == "a'b\nABc"
    assert spec.input_shapes == [(1, 3, 16, 16)]
    assert spec.layers[0].params == {"pooling_param": {"pool": "AVE", "kernel_size": 3}}
    assert spec.layers[0].include == [{"phase": "TEST"}]
    assert spec.layers[1].params["eltwise_param"]["coeff"] == [-1.0, 0.25, float("-inf"), 1.5]
    assert parse_prototxt(format_prototxt(spec)) == spec


def test_upgrade_v1_text():
    v1 = """name: "n"
layers { name: "fc6" type: CONVOLUTION bottom: "x" top: "fc6" blobs_lr: 1 blobs_lr: 2
         weight_decay: 1 weight_decay: 0
         convolution_param { num_output: 8 pad: 12 kernel_size: 3 hole: 12 } strict_dim: false }
layers { name: "up" type: INTERP bottom: "fc6" top: "up" interp_param { zoom_factor: 8 } }
"""
    new = upgrade_prototxt(v1)
    assert "hole" not in new and "CONVOLUTION" not in new and "blobs_lr" not in new
    assert 'type: "Convolution"' in new and "dilation: 12" in new and 'type: "Interp"' in new
    assert "lr_mult: 2.0" in new and "decay_mult: 0.0" in new
    spec = parse_prototxt(new)
    assert spec.dialect == "new"
    assert spec.layer("fc6").param_specs == [{"lr_mult": 1.0, "decay_mult": 1.0},
                                             {"lr_mult": 2.0, "decay_mult": 0.0}]
    assert spec.layer("fc6").params == parse_prototxt(v1).layer("fc6").params


@pytest.mark.parametrize("text, message", [
    ("layer {\n  name: \"a\"\n  kernel: 3\n}", r"line 3, column 3: unknown field 'kernel' in LayerParameter"),
    ("layer {\n  name: \"a\"\n", r"line 3, column 1: unbalanced braces: the file ends inside a LayerParameter"),
    ("layer { name: \"a\" }\n}", r"line 2, column 1: expected a field name of NetParameter; found a closing brace"),
    ("layer { name: a }", r"line 1, column 15: field 'name' expects a quoted string; found 'a'"),
    ("layer { name: \"a\" type: \"Pooling\"\n pooling_param { pool: MEDIAN } }",
     r"line 2, column 24: 'MEDIAN' is not a value of PoolMethod"),
    ("layer { convolution_param { num_output: -3 } }", r"line 1, column 41: field 'num_output' \(uint32\)"),
    ("layer { convolution_param { num_output: 2.5 } }", r"line 1, column 41: field 'num_output' expects an integer"),
    ("name: \"a\"\nname: \"b\"", r"line 2, column 1: field 'name' of NetParameter is not repeated but is given twice"),
    ("name \"a\"", r"line 1, column 6: expected ':' after field 'name'"),
    ("name: \"abc", r"line 1, column 7: unterminated string"),
    ("name: \"a\" @", r"line 1, column 11: unexpected character '@'"),
    ("layer { name: \"a\" } layers { name: \"b\" type: RELU }", r"mixes V1 'layers' and new 'layer'"),
    ("input: \"a\" input_dim: 1 input_dim: 2", r"input_dim has 2 values; expected 4 per input"),
])
def test_errors_name_line_and_column(text, message):
    with pytest.raises(CaffeFormatError, match=message):
        parse_prototxt(text)


def test_read_prototxt_error_names_the_file(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text("layer {\n  bogus: 1\n}\n")
    with pytest.raises(CaffeFormatError, match=r"bad.prototxt: line 2, column 3: unknown field 'bogus'"):
        read_prototxt(path)
    path.write_bytes(b"name: \"\xff\"")
    with pytest.raises(CaffeFormatError, match=r"bad.prototxt: byte 7: not UTF-8"):
        read_prototxt(path)


def test_v1_writer_refuses_batchnorm(official):
    with pytest.raises(CaffeFormatError, match="type 'BatchNorm' has no V1 enum value"):
        format_prototxt(official["v2_resnet101_aspp_deploy_single_scale_321"], dialect="v1")


def _layer(text):
    return parse_prototxt(text).layers[0]


def test_geometry_helpers_resolve_caffe_defaults_and_overrides():
    conv = _layer('layer { name: "c" type: "Convolution" convolution_param { num_output: 4 kernel_h: 3 '
                  'kernel_w: 5 pad: 1 stride: 2 stride: 3 bias_term: false group: 2 } }')
    assert conv_geometry(conv) == (4, (3, 5), (2, 3), (1, 1), (1, 1), 2, False)
    v1 = _layer('layers { name: "c" type: CONVOLUTION convolution_param { num_output: 4 kernel_size: 3 '
                'pad_h: 1 pad_w: 2 hole_h: 2 hole_w: 4 } }')
    assert v1.params["convolution_param"]["dilation"] == [2, 4]
    assert conv_geometry(v1) == (4, (3, 3), (1, 1), (1, 2), (2, 4), 1, True)
    pool = _layer('layer { name: "p" type: "Pooling" pooling_param { global_pooling: true pool: AVE } }')
    assert pool_geometry(pool) == ("AVE", (0, 0), (1, 1), (0, 0), True, "CEIL")


@pytest.mark.parametrize("param, message", [
    ("num_output: 4", r"kernel_size \(or kernel_h and kernel_w\) is required"),
    ("kernel_size: 3", "num_output is required"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", "kernel_size cannot be given together with"),
    ("num_output: 4 kernel_h: 3", "kernel_h and kernel_w must be given together"),
    ("num_output: 4 kernel_size: [1, 2, 3]", "kernel_size has 3 values; expected 1 or 2"),
    ("num_output: 4 kernel_size: 3 stride: 0",
     r"kernel \(3, 3\), stride \(0, 0\) and dilation \(1, 1\) must be positive"),
])
def test_geometry_errors_name_the_layer(param, message):
    conv = _layer(f'layer {{ name: "c" type: "Convolution" convolution_param {{ {param} }} }}')
    with pytest.raises(CaffeFormatError, match=rf"layer 'c' \(convolution_param\): {message}"):
        conv_geometry(conv)


def test_upgrade_agrees_with_an_independent_hand_upgrade(official):
    """DrSleep's deploy file is a new-dialect rewrite of the v1 LargeFOV net made by hand."""
    upgraded = parse_prototxt(format_prototxt(official["v1_largefov_test"], dialect="new"))
    deploy = official["v1_largefov_deploy_newformat_321"]
    ignore = ("engine", "weight_filler", "bias_filler")   # the hand rewrite added these
    for theirs in deploy.layers:
        ours = upgraded.layer(theirs.name)
        assert (ours.type, ours.bottoms, ours.tops) == (theirs.type, theirs.bottoms, theirs.tops)
        strip = {k: {f: v for f, v in p.items() if f not in ignore} for k, p in theirs.params.items()}
        assert ours.params == strip, theirs.name
        if theirs.type == "Convolution":
            assert conv_geometry(ours) == conv_geometry(theirs)
        if theirs.type == "Pooling":
            assert pool_geometry(ours) == pool_geometry(theirs)


@pytest.mark.parametrize("path", sorted(DATA.glob("*/*.prototxt")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_caffe_prototxts_round_trip(path):
    spec = read_prototxt(path)
    assert parse_prototxt(format_prototxt(spec)) == spec
    assert [l.type for l in parse_prototxt(format_prototxt(spec, dialect="new")).layers] == [
        l.type for l in spec.layers]
