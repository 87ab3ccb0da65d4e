"""The CRF parameter search: every setting scored as ``deeplab crf`` refines and VOC counts, ranked by
mean IoU, resumable; the grid and its errors; the command end to end."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import crf
from nets.app import search
from nets.app.imageio import write_label_png
from nets.deeplab import shapes_dataset

N_IMAGES, N_CLASSES = 4, 6
BASE = crf.get_preset("deeplab-v2-resnet101-voc")
GRID = {"theta_alpha": (5.0, 20.0), "w_bilateral": (2.0, 6.0)}


def _probabilities(truth, rng):
    """Noisy probabilities of the true class (no value below 1e-5, where ``deeplab crf`` clips)."""
    onehot = np.eye(N_CLASSES, dtype=np.float64)[np.where(truth == 255, 0, truth)].transpose(2, 0, 1)
    scores = 1.5 * onehot + rng.normal(0, 1.0, onehot.shape)
    e = np.exp(scores - scores.max(axis=0))
    return e / e.sum(axis=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Held-out samples as PNG files with their ground truth and noisy probabilities (float64 .npy)."""
    root = tmp_path_factory.mktemp("search")
    for name in ("images", "labels", "probs"):
        (root / name).mkdir()
    rng = np.random.default_rng(5)
    triples = []
    for n in range(N_IMAGES):
        image, truth = shapes_dataset.sample(n, "heldout")
        Image.fromarray(image).save(root / "images" / f"s{n}.png")
        write_label_png(root / "labels" / f"s{n}.png", truth)
        np.save(root / "probs" / f"s{n}_probs.npy", _probabilities(truth, rng))
        triples.append((str(root / "images" / f"s{n}.png"), str(root / "probs" / f"s{n}_probs.npy"),
                        str(root / "labels" / f"s{n}.png")))
    return root, triples


def _confusion(truth, predicted):
    keep = truth != 255
    return np.bincount(truth[keep].astype(np.int64) * N_CLASSES + predicted[keep],
                       minlength=N_CLASSES ** 2).reshape(N_CLASSES, N_CLASSES)


@pytest.fixture(scope="module")
def expected(data):
    """The matrices written out independently: DeepLab's CRF on log P, argmax, counted with bincount."""
    _, triples = data
    presets = search.grid_presets(BASE, GRID)
    matrices = np.zeros((1 + len(presets), N_CLASSES, N_CLASSES), np.int64)
    for n in range(N_IMAGES):
        image, truth = shapes_dataset.sample(n, "heldout")
        p = np.load(triples[n][1])
        matrices[0] += _confusion(truth, p.argmax(0))
        for s, preset in enumerate(presets, start=1):
            q = crf.deeplab_refine(image, np.log(p).astype(np.float32), preset, backend="cpu")
            matrices[s] += _confusion(truth, q.argmax(0))
    return presets, matrices


def test_every_setting_is_scored_as_deeplab_crf_refines(data, expected):
    _, triples = data
    presets, want = expected
    got, summary = search.search_files(triples, search.SearchSettings(presets, N_CLASSES, backend="cpu"))
    assert summary.done == N_IMAGES and not summary.failures
    np.testing.assert_array_equal(got, want)
    assert got[0].sum() == N_IMAGES * 97 * 97 - sum(
        (shapes_dataset.sample(n, "heldout")[1] == 255).sum() for n in range(N_IMAGES))
    # the settings differ, and the CRF does move labels
    assert len({m.tobytes() for m in got}) == len(got)


def test_the_grid_runs_in_parameter_order_and_keeps_the_base_values():
    presets = search.grid_presets(BASE, {"theta_beta": (3.0, 5.0), "w_bilateral": (4.0, 5.0, 6.0)})
    assert [(p.w_bilateral, p.theta_beta) for p in presets] == [(4, 3), (4, 5), (5, 3), (5, 5), (6, 3), (6, 5)]
    assert presets[1].name == "deeplab-v2-resnet101-voc:w_bilateral=4,theta_beta=5"
    assert all(p.theta_alpha == 67 and p.w_gaussian == 3 and p.theta_gamma == 1 for p in presets)
    paper = search.grid_presets(BASE, search.PAPER_GRID)
    assert len(paper) == 4 * 8 * 4 and len({p.name for p in paper}) == len(paper)
    assert {p.theta_alpha for p in paper} == set(range(30, 101, 10))
    assert search.grid_presets(BASE, {}) == (BASE,)


def test_grid_text_is_parsed_and_its_errors_named():
    assert search.parse_grid(["theta_alpha = 30, 40,50", "iterations=5,10"]) == {
        "theta_alpha": (30.0, 40.0, 50.0), "iterations": (5, 10)}
    for items, message in ((["sigma=3"], "'sigma=3' is not 'parameter=value,value,...'"),
                           (["theta_alpha"], "'theta_alpha' is not"),
                           (["theta_alpha=3", "theta_alpha=4"], "theta_alpha is given twice"),
                           (["theta_alpha=,"], "theta_alpha has no values"),
                           (["theta_alpha=3,x"], "the values of theta_alpha must be numbers"),
                           (["iterations=2.5"], "the values of iterations must be integers"),
                           (["w_bilateral=3,3.0"], "w_bilateral lists a value twice")):
        with pytest.raises(ValueError, match=f"^grid: {message}"):
            search.parse_grid(items)
    with pytest.raises(ValueError, match="^grid: theta_alpha must be a positive finite number"):
        search.grid_presets(BASE, search.parse_grid(["theta_alpha=10,0"]))


def test_ranking_is_by_mean_iou_and_ties_keep_the_grid_order():
    presets = search.grid_presets(BASE, {"theta_beta": (3.0, 4.0, 5.0, 6.0)})
    matrices = np.array([[[5, 5], [5, 5]],      # no CRF: IoU 1/3 and 1/3
                         [[9, 1], [1, 9]],      # 9/11 each
                         [[10, 0], [0, 10]],    # 1
                         [[8, 2], [0, 10]],     # 8/10 and 10/12
                         [[10, 0], [0, 10]]], np.int64)
    ranked, baseline = search.ranking(matrices, presets)
    assert [s.preset for s in ranked] == [presets[1], presets[3], presets[0], presets[2]]
    assert [round(s.mean_iou, 6) for s in ranked] == [1.0, 1.0, round(9 / 11, 6), round((0.8 + 10 / 12) / 2, 6)]
    assert baseline.preset is None and baseline.mean_iou == pytest.approx(1 / 3)
    assert ranked[3].pixel_accuracy == pytest.approx(18 / 20)
    lines = search.format_ranking(ranked, baseline, top=2)
    assert lines[1].split() == ["1", "100.00", "100.00", presets[1].name]
    assert lines[3].strip() == "(2 more settings)"
    assert lines[4].split()[:2] == ["33.33", "50.00"] and lines[4].endswith("no CRF (argmax of the probabilities)")
    result = search.results_json(ranked, baseline, 7)
    assert result["best"] == presets[1].name and result["images"] == 7
    assert [s["values"]["theta_beta"] for s in result["settings"]] == [4, 6, 3, 5]
    with pytest.raises(ValueError, match="expected 5 matrices"):
        search.ranking(matrices[:4], presets)


class _Interrupt(Exception):
    pass


def _interrupt_after(count):
    seen = []

    def on_outcome(outcome):
        seen.append(outcome)
        if len(seen) == count:
            raise _Interrupt
    return on_outcome


def test_an_interrupted_search_resumes_from_its_saved_matrices(data, expected, tmp_path):
    _, triples = data
    presets, want = expected
    settings = search.SearchSettings(presets, N_CLASSES, backend="cpu")
    state = tmp_path / "state"
    with pytest.raises(_Interrupt):
        search.search_files(triples, settings, state_dir=state, on_outcome=_interrupt_after(2))
    assert sorted(p.name for p in state.glob("s*.npy")) == ["s0.npy", "s1.npy"]
    (state / "s1.npy").write_bytes(b"not a matrix")  # counted again, and written over
    got, summary = search.search_files(triples, settings, state_dir=state, resume=True)
    assert [o.skipped for o in summary.outcomes] == [True, False, False, False]
    np.testing.assert_array_equal(got, want)
    assert np.load(state / "s1.npy").shape == (1 + len(presets), N_CLASSES, N_CLASSES)
    other = search.SearchSettings(presets[:2], N_CLASSES, backend="cpu")
    with pytest.raises(ValueError, match=r"counted with other settings \(settings: "):
        search.search_files(triples, other, state_dir=state, resume=True)
    with pytest.raises(ValueError, match="--state"):
        search.search_files(triples, settings, resume=True)


def test_an_image_that_fails_is_named_and_the_others_counted(data, expected, tmp_path):
    root, triples = data
    presets, _ = expected
    settings = search.SearchSettings(presets[:1], N_CLASSES, backend="cpu")
    np.save(tmp_path / "three.npy", np.full((3, 97, 97), 1 / 3))
    small = tmp_path / "small.png"
    write_label_png(small, np.zeros((50, 97), np.uint8))
    bad = [(triples[0][0], str(tmp_path / "three.npy"), triples[0][2]),
           (triples[1][0], triples[1][1], str(small)),
           (triples[2][0], str(tmp_path / "missing.npy"), triples[2][2])]
    got, summary = search.search_files(bad + triples[3:], settings)
    errors = [o.error for o in summary.outcomes]
    assert "three.npy: 3 labels, expected 6" in errors[0]
    assert "small.png: the ground truth is 50x97, the image 97x97" in errors[1]
    assert "missing.npy" in errors[2] and errors[3] is None
    alone, _ = search.search_files(triples[3:], settings)
    np.testing.assert_array_equal(got, alone)


def deeplab(*args, cwd):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "nets", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_crf_search_command(data, expected, tmp_path):
    root, _ = data
    presets, want = expected
    ranked, baseline = search.ranking(want, presets)
    (tmp_path / "list.txt").write_text("s0\ns1\ns2\ns3\n")
    args = ["crf-search", "--images", root / "images", "--probs", root / "probs", "--labels", root / "labels",
            "--grid", "w_bilateral=2,6", "--grid", "theta_alpha=5,20", "--list", tmp_path / "list.txt",
            "--backend", "cpu", "--quiet"]
    r = deeplab(*args, "-o", "results.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 settings x 4 images = 16 CRF runs, from deeplab-v2-resnet101-voc" in r.stdout
    assert f"best: {ranked[0].name}\n" in r.stdout
    assert f"{100 * baseline.mean_iou:6.2f}" in r.stdout
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in saved["settings"]] == [s.name for s in ranked]
    assert saved["no_crf"]["mean_iou"] == pytest.approx(baseline.mean_iou, abs=1e-12)
    # the best setting is a preset that deeplab crf takes as it is printed
    r = deeplab("crf", root / "images" / "s0.png", "--probs", root / "probs" / "s0_probs.npy", "--preset",
                ranked[0].name, "-o", "s0.png", "--backend", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # a listed stem without ground truth, and an image without probabilities, are named; the others ranked
    (tmp_path / "list.txt").write_text("s0\ns1\nnone\n")
    (tmp_path / "probs").mkdir()
    shutil.copy(root / "probs" / "s0_probs.npy", tmp_path / "probs")
    r = deeplab(*args[:4], tmp_path / "probs", *args[5:], cwd=tmp_path)
    assert r.returncode == 1 and "2 settings" not in r.stdout and "4 settings x 1 images" in r.stdout
    assert "best: " in r.stdout and "1 images, 9409 pixels counted" in r.stdout
    assert "none.png: no such label file" in r.stderr
    assert f"s1.png: no s1_probs.npy or s1.npy in {tmp_path / 'probs'}" in r.stderr
    # bad input is refused before anything runs
    r = deeplab(*args, "--grid", "theta_alpha=3", cwd=tmp_path)
    assert r.returncode == 1 and "theta_alpha is given twice" in r.stderr
    r = deeplab(*args, "-o", "results.txt", cwd=tmp_path)
    assert r.returncode == 2 and "expected a file name ending in .json" in r.stderr
    r = deeplab(*args, "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "--resume needs the --state folder" in r.stderr
