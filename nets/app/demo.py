"""``deeplab demo``: the whole pipeline on the embedded demo nets, with numbers that prove it.

Both shipped nets (``demo-largefov``, ``demo-aspp``: DeepLab's LargeFOV and ASPP heads in
miniature, real caffemodels read by the same Caffe reader as the official models) segment
the bundled held-out images (``nets/data/demo/heldout``, samples of :mod:`nets.deeplab.shapes_dataset`
that no training step saw), each without and with the dense CRF (the demo's tuned preset,
``crf_preset`` in ``demo.json``). The result is the paper's ablation in miniature, a table
of mIoU (one confusion matrix over all held-out pixels, :mod:`nets.app.evaluate`), and a figure,
one row per image::

    image | ground truth | LargeFOV | LargeFOV + CRF | ASPP | ASPP + CRF

References
----------
Chen et al., TPAMI 2018, Table 3 and 4 (LargeFOV vs ASPP, with and without CRF).
"""
import os
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from nets.app.evaluate import confusion_matrix, mean_iou
from nets.app.imageio import colorize, legend_entries, legend_strip, read_image, read_label_png, save_image_atomic
from nets.deeplab import DEMO_MODELS, Model, demo_dir, demo_manifest, demo_preset, label_map

#: Pixels per image pixel in the figure (the demo images are 97x97).
FIGURE_ZOOM = 2


@dataclass
class DemoResult:
    """What :func:`run_demo` made.

    Attributes
    ----------
    figure : str
        Path of the written figure.
    miou : dict of str to (float, float)
        Held-out mIoU by model name, without and with the CRF.
    timings : dict of str to float
        Seconds: ``load`` (reading the nets), ``network``, ``crf``, ``figure``, ``total``.
    images : int
        Number of held-out images.
    """

    figure: str
    miou: dict
    timings: dict
    images: int


def heldout_samples():
    """The bundled held-out images and labels: lists of (H, W, 3) uint8 and (H, W) uint8."""
    manifest = demo_manifest()
    folder = demo_dir() / "heldout"
    if manifest is None or not folder.is_dir():
        raise ValueError(f"the demo's held-out samples are missing from the package ({folder}, "
                         f"{demo_dir() / 'demo.json'}); regenerate them with tools/train_demo.py")
    indices = manifest["heldout"]["indices"]
    images = [read_image(folder / f"image_{i:02d}.png") for i in indices]
    labels = [read_label_png(folder / f"label_{i:02d}.png") for i in indices]
    return images, labels


def _header(text, width, height):
    cell = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(cell).text((4, 4), text, fill=(0, 0, 0))
    return np.asarray(cell)


def figure(images, labels, columns, classes=None):
    """One row per image: the image, its ground truth, then each named column of label maps.

    Parameters
    ----------
    images : list of ndarray (H, W, 3) uint8
    labels : list of ndarray (H, W)
    columns : list of (str, list of ndarray (H, W))
    classes : sequence of str, optional
        Class names by label: a legend below the rows then names every class that the
        ground truth or a column shows (:func:`nets.app.imageio.legend_strip`).

    Returns
    -------
    ndarray of shape (rows, cols, 3), uint8
    """
    zoom = FIGURE_ZOOM
    h, w = images[0].shape[:2]
    gap = 4
    titles = ["image", "ground truth"] + [name for name, _ in columns]
    cell_w = w * zoom
    rows = [np.concatenate([_header(t, cell_w, 18) for t in titles], axis=1)]
    for n, image in enumerate(images):
        cells = [image, colorize(labels[n])] + [colorize(maps[n]) for _, maps in columns]
        cells = [np.repeat(np.repeat(c, zoom, axis=0), zoom, axis=1) for c in cells]
        rows.append(np.full((gap, len(titles) * cell_w, 3), 255, np.uint8))
        rows.append(np.concatenate(cells, axis=1))
    if classes is not None:
        shown = np.concatenate([np.ravel(m) for m in [*labels, *(m for _, maps in columns for m in maps)]])
        entries = legend_entries(shown, classes)  # the maps colour background too (black): name it
        entries = ([(0, classes[0])] if (shown == 0).any() else []) + entries
        strip = legend_strip(entries, len(titles) * cell_w)
        rows.append(np.full((gap, len(titles) * cell_w, 3), 255, np.uint8))
        rows.append(strip[:, :len(titles) * cell_w])  # as wide as the rows: the names are short
    return np.concatenate(rows, axis=0)


def run_demo(out_dir="deeplab-demo", backend="auto"):
    """Run both demo nets on the held-out images, without and with the CRF; write the figure.

    Parameters
    ----------
    out_dir : str or PathLike
        Folder of ``figure.png`` (created if needed).
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    DemoResult
    """
    start = time.perf_counter()
    preset = demo_preset()
    if preset is None:
        raise ValueError(f"the demo's CRF preset is not recorded in {demo_dir() / 'demo.json'} "
                         f"(key crf_preset; written by tools/tune_demo_crf.py)")
    images, labels = heldout_samples()
    num_classes = len(demo_manifest()["classes"])
    timings = {"load": 0.0, "network": 0.0, "crf": 0.0}
    miou, columns = {}, []
    for name in DEMO_MODELS:
        t = time.perf_counter()
        model = Model.load(name)
        timings["load"] += time.perf_counter() - t
        plain, refined = [], []
        for image in images:
            result = model.segment(image, crf=preset, backend=backend)
            timings["network"] += result.timings["network"]
            timings["crf"] += result.timings["crf"]
            # The network's own labels come from the same scores the CRF refined.
            plain.append(label_map(result.scores))
            refined.append(result.labels)
        scores = []
        for maps in (plain, refined):
            matrix = sum(confusion_matrix(gt, p, num_classes) for gt, p in zip(labels, maps))
            scores.append(mean_iou(matrix))
        miou[name] = tuple(scores)
        short = name.removeprefix("demo-").replace("largefov", "LargeFOV").replace("aspp", "ASPP")
        columns += [(short, plain), (short + " + CRF", refined)]
    t = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), "figure.png")
    save_image_atomic(Image.fromarray(figure(images, labels, columns, demo_manifest()["classes"])), path)
    timings["figure"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return DemoResult(path, miou, timings, len(images))


def format_table(result):
    """The miniature ablation as text lines."""
    lines = [f"held-out mIoU on {result.images} images (one confusion matrix over all pixels)",
             f"{'model':<16}{'network':>10}{'+ CRF':>10}"]
    for name, (plain, refined) in result.miou.items():
        lines.append(f"{name:<16}{100 * plain:>9.2f}%{100 * refined:>9.2f}%")
    return lines
