"""``deeplab crf``'s inputs: probabilities in either layout, checked; scores and probabilities agree;
the warning when the CRF would not fit in memory, and the reduced CRF that would."""
import re
import warnings

import numpy as np
import pytest

import crf
import crf.memory
from crf.synthetic import photo, smooth_logits
from nets.app import refine as refine_module
from nets.app.refine import MEMORY_WARN_FRACTION, check_probabilities, memory_warning, refine


def test_probabilities_layouts_and_bad_input():
    rng = np.random.default_rng(0)
    p = rng.random((4, 5, 7)).astype(np.float32)
    p /= p.sum(0)
    np.testing.assert_array_equal(check_probabilities(p, 5, 7), p)
    np.testing.assert_array_equal(check_probabilities(p.transpose(1, 2, 0), 5, 7), p)
    with pytest.raises(ValueError, match="swapped"):
        check_probabilities(p.transpose(0, 2, 1), 5, 7)
    with pytest.raises(ValueError, match="sum to 1"):
        check_probabilities(p * 2 / 3, 5, 7)
    with pytest.raises(ValueError, match="finite"):
        check_probabilities(np.where(p > 0.5, np.nan, p), 5, 7)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_probabilities(np.log(p), 5, 7)
    with pytest.raises(ValueError, match="does not match"):
        check_probabilities(p, 6, 7)
    with pytest.raises(ValueError, match=r"read as \(H, W, L\)"):
        check_probabilities(p.transpose(1, 2, 0) * 2 / 3, 5, 7)
    with pytest.raises(ValueError, match="scores must fit in float32; found values up to 1e\\+300"):
        check_probabilities(np.full((4, 5, 7), 1e300), 5, 7, logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_probabilities(p.astype(np.float64), 5, 7)


def test_refine_from_probabilities_agrees_with_refine_from_scores(largefov, sample):
    image = sample[0]
    result = largefov.segment(image, backend="cpu")
    from_probs = refine(image, probabilities=result.probabilities, preset="deeplab-v1-largefov-voc", backend="cpu")
    from_scores = refine(image, probabilities=result.scores, logits=True, preset="deeplab-v1-largefov-voc",
                         backend="cpu")
    np.testing.assert_allclose(from_scores, crf.deeplab_refine(image, result.scores, "deeplab-v1-largefov-voc",
                                                               backend="cpu"), atol=1e-6)
    # -log P equals -score up to a constant per pixel, except where P is clipped at 1e-5.
    assert (from_probs.argmax(0) == from_scores.argmax(0)).mean() > 0.995


def test_memory_warning_names_a_max_side_that_fits():
    preset = crf.get_preset("deeplab-v2-resnet101-voc")
    gib = 2**30
    message = memory_warning(3000, 4000, 21, preset, available=4 * gib)
    assert message.startswith("the CRF at 3000 x 4000 pixels with 21 labels needs up to about")
    side = int(re.search(r"--max-side (\d+) would need about", message).group(1))
    budget = int(MEMORY_WARN_FRACTION * 4 * gib)
    assert crf.memory.estimate_reduced_bytes(3000, 4000, 21, side, preset.theta_gamma) <= budget
    assert crf.memory.estimate_reduced_bytes(3000, 4000, 21, side + 1, preset.theta_gamma) > budget
    assert memory_warning(3000, 4000, 21, preset, max_side=side, available=4 * gib) is None  # that side fits
    assert memory_warning(375, 500, 21, preset, available=4 * gib) is None
    assert "no reduced size would fit either" in memory_warning(3000, 4000, 21, preset, available=1000)
    assert memory_warning(3000, 4000, 21, preset, available=1000, backend="cuda") is None  # host memory only


def test_no_memory_warning_where_the_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(refine_module, "available_memory", lambda: None)
    assert memory_warning(30000, 40000, 21, crf.get_preset("deeplab-v2-resnet101-voc")) is None


def test_refine_with_max_side_is_the_reduced_crf_enlarged():
    image = photo(60, 80, seed=4)
    probs = np.exp(smooth_logits(3, 60, 80, seed=4))
    probs /= probs.sum(axis=0)
    q = refine(image, probabilities=probs, preset="deeplab-v1-largefov-voc", backend="cpu", max_side=40)
    want = crf.deeplab_refine(image, np.log(np.maximum(probs, 1e-5)), "deeplab-v1-largefov-voc", backend="cpu",
                              max_side=40)
    assert q.shape == (3, 60, 80)
    np.testing.assert_allclose(q, want, atol=1e-6)


def test_deeplab_crf_warns_before_a_crf_too_large_and_still_runs(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from nets.app import cli
    image = photo(60, 80, seed=5)
    Image.fromarray(image).save(tmp_path / "im.png")
    probs = np.exp(smooth_logits(4, 60, 80, seed=5))
    np.save(tmp_path / "p.npy", (probs / probs.sum(axis=0)).astype(np.float32))
    need = crf.memory.estimate_bytes(60, 80, 4, crf.get_preset("deeplab-v2-resnet101-voc").theta_gamma)
    monkeypatch.setattr(refine_module, "available_memory", lambda: need // 2)
    code = cli.main(["crf", str(tmp_path / "im.png"), "--probs", str(tmp_path / "p.npy"), "-o",
                     str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "out.png").exists()
    assert "deeplab crf: warning: the CRF at 60 x 80 pixels with 4 labels needs up to about" in err, err
    assert "--max-side " in err
    monkeypatch.setattr(refine_module, "available_memory", lambda: 4 * need)
    cli.main(["crf", str(tmp_path / "im.png"), "--probs", str(tmp_path / "p.npy"), "-o", str(tmp_path / "b.png")])
    assert "warning" not in capsys.readouterr().err


def test_source_file_finds_an_images_input_by_name(tmp_path):
    from nets.app.refine import source_file
    (tmp_path / "a_probs.npy").write_bytes(b"")
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "b.npy").write_bytes(b"")
    (tmp_path / "c.png").write_bytes(b"")
    assert source_file("imgs/a.jpg", tmp_path, "probs") == str(tmp_path / "a_probs.npy")  # segment's name first
    assert source_file("imgs/b.png", tmp_path, "probs") == str(tmp_path / "b.npy")
    assert source_file("c.jpg", tmp_path, "labels") == str(tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"imgs/c.jpg: no c_probs.npy or c.npy in"):
        source_file("imgs/c.jpg", tmp_path, "probs")
    with pytest.raises(ValueError, match=r"no a.png in"):
        source_file("a.jpg", tmp_path, "labels")
