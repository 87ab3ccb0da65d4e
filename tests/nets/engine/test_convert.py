"""nets.convert and ``deeplab convert``: a plain .npz, every blob checked, shared blobs stored once."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nets
from nets import Net
from nets.caffe import parse_prototxt, read_caffemodel, write_caffemodel

REAL = Path(__file__).resolve().parents[2] / "data" / "caffe-real"
LENET = REAL / "lenet_v1"

TOWERS = """
name: "towers"
input: "data" input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { name: "w" } param { name: "b" } convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "half" type: "Interp" bottom: "data" top: "half" interp_param { shrink_factor: 2 } }
layer { name: "conv_half" type: "Convolution" bottom: "half" top: "conv_half"
        param { name: "w" } param { name: "b" } convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
"""


def _towers(rng, differ=False):
    spec = parse_prototxt(TOWERS)
    w = [rng.standard_normal((3, 2, 3, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    other = [w[0] + np.float32(differ), w[1].copy()]
    bn = [rng.standard_normal(3).astype(np.float32), rng.uniform(1, 2, 3).astype(np.float32),
          np.array([0.5], np.float32)]
    return spec, {"conv": w, "conv_half": other, "bn": bn,
                  "sc": [rng.uniform(0.5, 1, 3).astype(np.float32), rng.standard_normal(3).astype(np.float32)]}


def _write(tmp_path, spec, weights, dialect="new"):
    model, proto = tmp_path / "m.caffemodel", tmp_path / "m.prototxt"
    write_caffemodel(model, spec, weights, dialect=dialect)
    proto.write_text(TOWERS)
    return model, proto


def test_lenet_v1_converts_to_plain_npz_and_runs(tmp_path):
    out = tmp_path / "lenet.npz"
    shapes = nets.convert(LENET / "lenet_iter_10000.caffemodel", LENET / "lenet.prototxt", out, strict=True)
    # V1's legacy 4-D blobs are stored in Caffe's shapes.
    assert shapes == {"conv1/0": (20, 1, 5, 5), "conv1/1": (20,), "conv2/0": (50, 20, 5, 5), "conv2/1": (50,),
                      "ip1/0": (500, 800), "ip1/1": (500,), "ip2/0": (10, 500), "ip2/1": (10,)}
    with np.load(out, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
        model = read_caffemodel(LENET / "lenet_iter_10000.caffemodel")
        np.testing.assert_array_equal(z["ip1/0"], model.layer("ip1").blobs[0].reshape(500, 800))
    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 28, 28)).astype(np.float32)
    direct = Net.load(LENET / "lenet_iter_10000.caffemodel", prototxt=LENET / "lenet.prototxt")
    np.testing.assert_array_equal(Net.load(out).forward(x)["prob"], direct.forward(x)["prob"])


def test_unused_layers_warn_or_fail_with_strict(tmp_path):
    # The LeNet deploy net lacks ip2: its weights are unused.
    text = (LENET / "lenet.prototxt").read_text()
    cut = text[:text.index('layers {\n  name: "ip2"')] if 'layers {\n  name: "ip2"' in text else None
    assert cut is not None
    proto = tmp_path / "short.prototxt"
    proto.write_text(cut)
    with pytest.warns(UserWarning, match=r"1 layers that the net does not have.*\['ip2'\]"):
        nets.convert(LENET / "lenet_iter_10000.caffemodel", proto, tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"\['ip2'\]"):
        nets.convert(LENET / "lenet_iter_10000.caffemodel", proto, tmp_path / "b.npz", strict=True)
    assert not (tmp_path / "b.npz").exists()


def test_shared_weights_stored_once_and_checked(tmp_path):
    rng = np.random.default_rng(1)
    spec, weights = _towers(rng)
    model, proto = _write(tmp_path, spec, weights)
    shapes = nets.convert(model, proto, tmp_path / "t.npz")
    assert "conv/0" in shapes and "conv_half/0" not in shapes and "conv_half/1" not in shapes
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    a = Net.load(tmp_path / "t.npz").forward(x, outputs=["conv", "conv_half"])
    b = Net.load(model, prototxt=proto, fold=False).forward(x, outputs=["conv", "conv_half"])
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5)
    spec, weights = _towers(rng, differ=True)
    model, proto = _write(tmp_path, spec, weights)
    with pytest.raises(ValueError, match=r"layers 'conv' and 'conv_half' share blob 0 \(param name 'w'\)"):
        nets.convert(model, proto, tmp_path / "bad.npz")


def test_wrong_or_missing_blobs_name_layer_and_shapes(tmp_path):
    rng = np.random.default_rng(2)
    spec, weights = _towers(rng)
    weights["bn"] = [weights["bn"][0][:2], weights["bn"][1], weights["bn"][2]]
    model, proto = _write(tmp_path, spec, weights)
    with pytest.raises(ValueError, match=r"layer 'bn' \(BatchNorm\): blob 0 has shape \(2,\), expected \(3,\)"):
        nets.convert(model, proto, tmp_path / "x.npz")
    spec, weights = _towers(rng)
    del weights["sc"]
    model, proto = _write(tmp_path, spec, weights)
    with pytest.raises(ValueError, match=r"layer 'sc' \(Scale\): blob 0 of shape \(3,\) is missing.*none"):
        nets.convert(model, proto, tmp_path / "y.npz")


def test_npz_with_object_arrays_or_foreign_content_is_refused(tmp_path):
    bad = tmp_path / "objects.npz"
    np.savez(bad, __prototxt__=np.array(TOWERS), **{"conv/0": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match=r"'conv/0' holds Python objects"):
        Net.load(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match="expected a net converted by nets.convert"):
        Net.load(foreign)
    ints = tmp_path / "ints.npz"
    np.savez(ints, __prototxt__=np.array(TOWERS), **{"conv/0": np.zeros((3, 2, 3, 3), np.int32)})
    with pytest.raises(ValueError, match="must be a float array"):
        Net.load(ints)


def test_cli_convert(tmp_path):
    out = tmp_path / "lenet.npz"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "nets.app.cli", "convert", str(LENET / "lenet_iter_10000.caffemodel"),
           "--prototxt", str(LENET / "lenet.prototxt"), "-o", str(out), "--strict"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "8 blobs" in proc.stdout and zipfile.is_zipfile(out)
    proc = subprocess.run(cmd[:5] + ["--prototxt", str(REAL / "cifar10_quick_v1" / "cifar10_quick.prototxt"),
                                     "-o", str(tmp_path / "no.npz")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "layer 'conv1' (Convolution)" in proc.stderr
    assert not (tmp_path / "no.npz").exists()


def test_damaged_weight_files_are_refused_by_name(tmp_path):
    """NaN or infinite weights, a foreign format mark, a misnamed file, a folder, a Git LFS pointer:
    each refused when loaded or converted, with a message that says which and where."""
    rng = np.random.default_rng(0)
    spec, weights = _towers(rng)
    weights["sc"][1][2] = np.inf
    model, proto = _write(tmp_path, spec, weights)
    with pytest.raises(ValueError, match=r"blob 1 of layer 'sc' holds 1 NaN or infinite value"):
        nets.convert(model, proto, tmp_path / "out.npz")
    with pytest.raises(ValueError, match=r"blob 1 of layer 'sc'"):
        Net.load(model, prototxt=proto)
    assert not (tmp_path / "out.npz").exists()

    spec, weights = _towers(rng)
    model, proto = _write(tmp_path, spec, weights)
    good = tmp_path / "good.npz"
    nets.convert(model, proto, good)
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    nan = dict(arrays, **{"conv/0": np.where(arrays["conv/0"] > 0, np.nan, arrays["conv/0"])})
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(ValueError, match=r"nan\.npz: blob 0 of layer 'conv' holds \d+ NaN"):
        Net.load(tmp_path / "nan.npz")
    np.savez(tmp_path / "foreign.npz", **dict(arrays, __format__=np.array("something-else v99")))
    with pytest.raises(ValueError, match=r"'__format__' is .*something-else v99.*, expected 'deeplab-numba-net/1'"):
        Net.load(tmp_path / "foreign.npz")
    (tmp_path / "bytes.npz").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"bytes\.npz: not a readable \.npz archive"):
        Net.load(tmp_path / "bytes.npz")
    with pytest.raises(ValueError, match=r"bytes\.npz: not a readable \.npz archive"):
        nets.Model.load(str(tmp_path / "bytes.npz"))
    (tmp_path / "weights").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        Net.load(tmp_path / "weights", prototxt=proto)
    with pytest.raises(ValueError, match="is a folder"):
        nets.Model.load(str(tmp_path / "weights"))
    (tmp_path / "lfs.caffemodel").write_text("version https://git-lfs.github.com/spec/v1\n"
                                             "oid sha256:0123\nsize 1000\n")
    with pytest.raises(ValueError, match="a Git LFS pointer"):
        nets.convert(tmp_path / "lfs.caffemodel", proto, tmp_path / "out.npz")
