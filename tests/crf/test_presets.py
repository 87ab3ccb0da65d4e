"""CRF presets: DeepLab's values, checked on construction, and changed by name ("NAME:key=value,...")."""
import numpy as np
import pytest

import crf
from crf.presets import PARAMETERS, override


def test_parameters_are_the_preset_fields_in_the_papers_order():
    assert PARAMETERS == ("w_bilateral", "theta_alpha", "theta_beta", "w_gaussian", "theta_gamma", "iterations")
    assert crf.PRESETS["deeplab-v2-resnet101-voc"].values() == {
        "w_bilateral": 4, "theta_alpha": 67, "theta_beta": 3, "w_gaussian": 3, "theta_gamma": 1, "iterations": 10}


def test_changed_parameters_by_name():
    base = crf.PRESETS["deeplab-v1-largefov-voc"]
    p = crf.get_preset("deeplab-v1-largefov-voc: theta_alpha=80 ,w_bilateral=5.5,iterations=3")
    assert p.values() == {**base.values(), "theta_alpha": 80.0, "w_bilateral": 5.5, "iterations": 3}
    assert isinstance(p.iterations, int)
    # the name lists what changed in the parameters' order, and reads back to the same preset
    assert p.name == "deeplab-v1-largefov-voc:w_bilateral=5.5,theta_alpha=80,iterations=3"
    assert crf.get_preset(p.name) == p
    assert p.source.startswith(base.source) and p.source.endswith("changed: w_bilateral=5.5,theta_alpha=80,iterations=3")
    # changing a changed preset keeps one list; a value given again replaces the earlier one
    q = p.with_values(theta_alpha=90.0, theta_gamma=0.25)
    assert q.name == "deeplab-v1-largefov-voc:w_bilateral=5.5,theta_alpha=90,theta_gamma=0.25,iterations=3"
    assert q.source.count("changed:") == 1
    assert crf.get_preset(q.name) == q
    assert base.with_values() is base and crf.get_preset("deeplab-v1-largefov-voc:") == base


@pytest.mark.parametrize("text, message", [
    ("theta=3", "'theta=3' is not 'parameter=value'"),
    ("theta_alpha", "'theta_alpha' is not 'parameter=value'"),
    ("theta_alpha=3,theta_alpha=4", "theta_alpha is given twice"),
    ("theta_alpha=many", "theta_alpha must be a number, got 'many'"),
    ("iterations=2.5", "iterations must be an integer, got '2.5'"),
    ("iterations=-1", "iterations must be an integer >= 0"),
    ("theta_beta=0", "theta_beta must be a positive finite number"),
    ("theta_gamma=-1", "theta_gamma must be a positive finite number"),
    ("w_gaussian=inf", "w_gaussian must be a finite number"),
    ("w_bilateral=nan", "w_bilateral must be a finite number"),
])
def test_bad_changes_are_named(text, message):
    with pytest.raises(ValueError, match=f"^CRF preset deeplab-v2-resnet101-voc:{text}: .*"):
        crf.get_preset(f"deeplab-v2-resnet101-voc:{text}")
    with pytest.raises(ValueError, match=message):
        crf.get_preset(f"deeplab-v2-resnet101-voc:{text}")


def test_bad_presets_are_refused_on_construction():
    with pytest.raises(ValueError, match="theta_alpha must be a positive"):
        crf.Preset("p", 4, 0, 3, 3, 3, 10, "test")
    with pytest.raises(ValueError, match="iterations must be an integer"):
        crf.Preset("p", 4, 60, 3, 3, 3, 10.0, "test")
    with pytest.raises(ValueError, match="w_bilateral must be a finite"):
        crf.Preset("p", float("nan"), 60, 3, 3, 3, 10, "test")
    with pytest.raises(ValueError, match="unknown CRF parameter 'theta'"):
        crf.PRESETS["deeplab-v2-resnet101-voc"].with_values(theta=3)
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        crf.get_preset("fast:theta_alpha=3")
    with pytest.raises(TypeError, match="Preset or a preset name"):
        crf.get_preset(3)


def test_a_changed_preset_runs_the_crf_with_its_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    scores = rng.normal(0, 2, (4, 24, 30)).astype(np.float32)
    named = crf.deeplab_refine(image, scores, "deeplab-v2-resnet101-voc:theta_alpha=9,w_gaussian=1,iterations=4",
                               backend="cpu")
    by_hand = crf.DenseCRF(-scores, backend="cpu")
    by_hand.add_bilateral(image, 9, 3, 4)
    by_hand.add_gaussian(1, 1)
    np.testing.assert_array_equal(named, by_hand.inference(4))
    assert not np.array_equal(named, crf.deeplab_refine(image, scores, backend="cpu"))


def test_override_is_the_changes_of_a_name():
    base = crf.PRESETS["deeplab-v2-vgg16-voc"]
    assert override(base, "theta_beta=4") == crf.get_preset("deeplab-v2-vgg16-voc:theta_beta=4")


def test_a_changed_weight_is_a_model_built_with_it():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)
    unary = rng.normal(0, 2, (3, 20, 26)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        model = crf.DenseCRF(unary, backend=backend)
        model.add_bilateral(image, 9, 5, 4)
        model.add_gaussian(2, 3)
        model.inference(3)
        model.set_weight(0, 1.5)
        model.set_weight(1, 0.25)
        fresh = crf.DenseCRF(unary, backend=backend)
        fresh.add_bilateral(image, 9, 5, 1.5)
        fresh.add_gaussian(2, 0.25)
        np.testing.assert_array_equal(model.inference(3), fresh.inference(3))
        assert model.free_energy(model.inference(2)) == fresh.free_energy(fresh.inference(2))
    for index, w, message in ((2, 1.0, "0 to 1"), (True, 1.0, "kernel's number"), (0, np.nan, "finite")):
        with pytest.raises(ValueError, match=message):
            model.set_weight(index, w)


def test_refining_with_each_preset_is_refining_with_one_at_a_time():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (22, 28, 3), dtype=np.uint8)
    scores = rng.normal(0, 2, (4, 22, 28)).astype(np.float32)
    base = crf.PRESETS["deeplab-v2-resnet101-voc"]
    presets = [base.with_values(theta_alpha=9.0, w_bilateral=2.0), base.with_values(theta_alpha=5.0),
               base.with_values(theta_alpha=9.0, w_bilateral=6.0, iterations=3),
               base.with_values(theta_alpha=9.0, w_gaussian=0.5), "deeplab-v1-largefov-voc",
               base.with_values(theta_alpha=9.0, theta_beta=6.0), base.with_values(theta_alpha=9.0, theta_gamma=2.0)]
    got = dict(crf.deeplab_refine_each(image, scores, presets, backend="cpu"))
    assert sorted(got) == list(range(len(presets)))
    for k, p in enumerate(presets):
        np.testing.assert_array_equal(got[k], crf.deeplab_refine(image, scores, p, backend="cpu"))
    assert list(dict(crf.deeplab_refine_each(image, scores, presets, backend="cpu"))) == [0, 2, 3, 1, 4, 5, 6]
