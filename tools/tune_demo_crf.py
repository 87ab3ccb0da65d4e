"""Tune the demo's dense CRF preset on the training split; report the ablation on the held-out split.

Usage (from the repository root, after ``tools/train_demo.py``)::

    python tools/tune_demo_crf.py --out nets/data/demo

The CRF is DeepLab's offline one (:func:`crf.deeplab_refine`): unary = -score of
``fc8_interp``, the RGB uint8 image, Potts messages normalised per pixel, 10
mean-field iterations. Scores come from the shipped caffemodels, run by
:class:`nets.Net`.

Tuning uses training-split samples that neither trained the nets nor stopped their
training (indices 2000000 onwards); the grid is small (w_bilateral, theta_alpha,
theta_beta, w_gaussian, theta_gamma); the chosen preset maximises the mean of the two
nets' mIoU on those samples. The held-out split is only used for the final table
(held-out samples 0..N-1, the ones the training script evaluates). Results go to
``crf_tuning.json`` and into ``demo.json`` (key ``crf_preset``).
"""
import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np

from crf import Preset, deeplab_refine
from nets.app.evaluate import confusion_matrix, mean_iou
from nets.caffe import atomic_write
from nets.deeplab import shapes_dataset

MEAN_BGR = np.float32((104.008, 116.669, 122.675))
NUM_CLASSES = len(shapes_dataset.CLASSES)
TUNE_OFFSET = 2_000_000
GRID = {"w_bilateral": (5.0, 10.0, 20.0, 40.0), "theta_alpha": (3.0, 5.0, 10.0, 20.0),
        "theta_beta": (5.0, 10.0, 20.0), "w_gaussian": (1.0, 3.0), "theta_gamma": (1.0, 3.0)}


def scorer(prototxt, caffemodel):
    """A function ``images (N, H, W, 3) uint8 RGB -> fc8_interp scores (N, L, H, W)`` and its name."""
    from nets import Net
    net = Net.load(caffemodel, prototxt=prototxt)
    run = lambda x: np.asarray(net.forward(x)["fc8_interp"])  # noqa: E731
    name = "nets.Net"

    def scores(images):
        x = (images[..., ::-1].astype(np.float32) - MEAN_BGR).transpose(0, 3, 1, 2)  # (N, 3, H, W) BGR
        return np.concatenate([run(np.ascontiguousarray(x[n:n + 1])) for n in range(len(x))])
    return scores, name


def confusion(labels, predictions):
    """Confusion matrix (true, predicted) over all pixels of label maps (..., H, W), (classes, classes) int64."""
    # A batch (N, H, W) is counted as one tall (N*H, W) map.
    return confusion_matrix(labels.reshape(-1, labels.shape[-1]), predictions.reshape(-1, predictions.shape[-1]),
                            NUM_CLASSES, ignore=None)


def crf_miou(images, labels, scores, preset):
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for image, label, score in zip(images, labels, scores):
        matrix += confusion(label, deeplab_refine(image, score, preset, backend="cpu").argmax(0))
    return mean_iou(matrix)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("nets/data/demo"))
    p.add_argument("--tune-samples", type=int, default=40)
    p.add_argument("--heldout-samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="Numba threads; one CRF of 97x97 pixels is too small to share well")
    args = p.parse_args(argv)
    numba.set_num_threads(args.threads)
    manifest = json.loads((args.out / "demo.json").read_text())
    nets = list(manifest["models"])
    tune_images, tune_labels = shapes_dataset.dataset(range(TUNE_OFFSET, TUNE_OFFSET + args.tune_samples), "train")
    heldout_images, heldout_labels = shapes_dataset.dataset(range(args.heldout_samples), "heldout")
    tune_scores, heldout_scores = {}, {}
    for name in nets:
        model = manifest["models"][name]
        run, engine = scorer(args.out / model["prototxt"], args.out / model["caffemodel"])
        tune_scores[name], heldout_scores[name] = run(tune_images), run(heldout_images)
    print(f"scores by {engine}", flush=True)

    start, results = time.time(), []
    for values in itertools.product(*GRID.values()):
        preset = Preset("demo-candidate", *values[:3], *values[3:], 10, "tuning grid")
        mious = {n: crf_miou(tune_images, tune_labels, tune_scores[n], preset) for n in nets}
        results.append({**dict(zip(GRID, values)), **mious, "mean": float(np.mean(list(mious.values())))})
    results.sort(key=lambda r: -r["mean"])
    best = results[0]
    print(f"grid of {len(results)} presets in {time.time() - start:.0f} s; best {best}", flush=True)
    preset = Preset("deeplab-demo-shapes", best["w_bilateral"], best["theta_alpha"], best["theta_beta"],
                    best["w_gaussian"], best["theta_gamma"], 10,
                    f"tuned by tools/tune_demo_crf.py on training-split samples "
                    f"{TUNE_OFFSET}..{TUNE_OFFSET + args.tune_samples - 1}")

    table = {}
    for name in nets:
        no_crf = mean_iou(sum(confusion(l, s.argmax(0))
                              for l, s in zip(heldout_labels, heldout_scores[name])))
        table[name] = {"tune_no_crf": mean_iou(sum(confusion(l, s.argmax(0))
                                                   for l, s in zip(tune_labels, tune_scores[name]))),
                       "tune_crf": best[name],
                       "heldout_no_crf": no_crf,
                       "heldout_crf": crf_miou(heldout_images, heldout_labels, heldout_scores[name], preset)}
        print(f"{name}: held-out mIoU {no_crf:.4f} -> {table[name]['heldout_crf']:.4f} with the CRF",
              flush=True)
    preset_dict = {k: getattr(preset, k) for k in ("name", "w_bilateral", "theta_alpha", "theta_beta",
                                                   "w_gaussian", "theta_gamma", "iterations", "source")}
    manifest["crf_preset"] = preset_dict
    for name in nets:
        manifest["models"][name]["heldout_miou_crf"] = table[name]["heldout_crf"]
    with atomic_write(args.out / "demo.json", "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    with atomic_write(args.out / "crf_tuning.json", "w") as f:
        json.dump({"argv": argv, "scores_by": engine, "grid": GRID, "preset": preset_dict, "table": table,
                   "heldout_samples": args.heldout_samples, "tune_indices":
                   [TUNE_OFFSET, TUNE_OFFSET + args.tune_samples - 1], "top10": results[:10]}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
