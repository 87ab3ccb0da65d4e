"""The procedural data set of the demo model (nets.deeplab.shapes_dataset) and the held-out samples shipped with it."""
import json
from pathlib import Path

import numpy as np
import pytest

import nets
from nets.deeplab import shapes_dataset
from nets.app.imageio import read_image, read_label_png

DEMO = Path(nets.__file__).parent / "data" / "demo"


@pytest.fixture(scope="module")
def train_set():
    return shapes_dataset.dataset(range(200), "train")


def test_same_index_same_sample():
    for split in ("train", "heldout"):
        for index in (0, 7, 123456):
            a_image, a_labels = shapes_dataset.sample(index, split)
            b_image, b_labels = shapes_dataset.sample(index, split)
            np.testing.assert_array_equal(a_image, b_image)
            np.testing.assert_array_equal(a_labels, b_labels)


def test_different_indices_differ(train_set):
    images, labels = train_set
    flat = {images[n].tobytes() for n in range(len(images))}
    assert len(flat) == len(images)
    assert not np.array_equal(labels[0], labels[1])


def test_splits_are_disjoint(train_set):
    train_images, _ = train_set
    heldout_images, _ = shapes_dataset.dataset(range(100), "heldout")
    train_keys = {im.tobytes() for im in train_images}
    assert not any(im.tobytes() in train_keys for im in heldout_images)
    # the same index in the two splits is a different image, not a shifted copy
    for n in range(20):
        assert np.abs(train_images[n].astype(int) - heldout_images[n].astype(int)).mean() > 5


def test_dtype_and_shape():
    for size in (17, 97, 105):
        image, labels = shapes_dataset.sample(3, "heldout", size=size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert labels.shape == (size, size) and labels.dtype == np.uint8
    images, labels = shapes_dataset.dataset([0, 1, 2])
    assert images.shape == (3, 97, 97, 3) and labels.shape == (3, 97, 97)
    np.testing.assert_array_equal(images[1], shapes_dataset.sample(1)[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"index": 0, "split": "test"}, "split must be one of"),
    ({"index": -1}, "index must be a non-negative int"),
    ({"index": 1.5}, "index must be a non-negative int"),
    ({"index": 0, "size": 96}, "size must be 8k \\+ 1"),
    ({"index": 0, "size": 9}, "size must be 8k \\+ 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shapes_dataset.sample(**kwargs)


def test_size_must_be_an_int():
    with pytest.raises(TypeError, match="size must be an int"):
        shapes_dataset.sample(0, size=97.0)


def test_label_range_and_class_presence(train_set):
    images, labels = train_set
    assert shapes_dataset.CLASSES[0] == "background" and len(shapes_dataset.CLASSES) == 6
    assert labels.max() <= len(shapes_dataset.CLASSES) - 1
    # every image holds at least one object and some background
    assert all((l > 0).any() and (l == 0).any() for l in labels)
    # each class appears in a good share of the images, none dominates the foreground
    presence = np.array([[(l == c).any() for l in labels] for c in range(1, 6)]).mean(axis=1)
    assert presence.min() > 0.3, presence
    pixels = np.bincount(labels.ravel(), minlength=6) / labels.size
    assert 0.6 < pixels[0] < 0.9, pixels
    foreground = pixels[1:] / pixels[1:].sum()
    assert foreground.min() > 0.08 and foreground.max() < 0.35, foreground
    # several objects per image on average, occluding each other at times
    assert np.mean([len(np.unique(l)) - 1 for l in labels]) > 1.8


def test_images_are_textured_not_flat(train_set):
    images, labels = train_set
    for image, label in zip(images[:20], labels[:20]):
        background = image[label == 0].astype(float)
        assert background.std(axis=0).max() > 3          # gradient, smooth field, texture and noise
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000


def test_some_objects_have_low_contrast(train_set):
    """The mean colour step across an object's edge is small for a share of the objects."""
    images, labels = train_set
    from scipy import ndimage
    steps = []
    for image, label in zip(images[:60], labels[:60]):
        for c in np.unique(label)[1:]:
            inside = ndimage.binary_erosion(label == c, iterations=2)
            around = ndimage.binary_dilation(label == c, iterations=4) & ~ndimage.binary_dilation(label == c,
                                                                                              iterations=2)
            around &= label == 0
            if inside.sum() > 20 and around.sum() > 20:
                step = image[inside].mean(0) - image[around].mean(0)
                steps.append(np.linalg.norm(step))
    steps = np.array(steps)
    assert len(steps) > 80
    assert 0.1 < np.mean(steps < 35) < 0.6, np.percentile(steps, [10, 50, 90])


@pytest.mark.parametrize("label, area", [
    (1, np.pi),                                         # disk of radius r
    (2, 1.7 ** 2),                                      # square of side 1.7 r
    (3, 3 * np.sqrt(3) / 4),                            # equilateral triangle of circumradius r
    (4, np.pi * (1 - 0.55 ** 2)),                       # ring, inner radius 0.55 r
    (5, 2.2 * 2 * 0.28 * 1.1),                          # bar 2.2 r by 0.616 r
])
def test_shape_areas_match_their_formulas(label, area):
    size, radius = 401, 60.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    for angle in (0.0, 0.4, 2.0):
        d = shapes_dataset._signed_distance(label, rows, cols, (200.3, 199.6), radius, angle)
        assert abs((d < 0).sum() / (area * radius ** 2) - 1) < 0.01


def test_shipped_heldout_samples_are_the_generators():
    """The PNGs in nets/data/demo/heldout are held-out samples 0..7.

    Labels must be equal exactly. Images may differ by one grey level in a few
    pixels: they go through float64 filtering and exp, whose last bit may differ
    between NumPy/SciPy builds, and a value near .5 then rounds the other way.
    """
    manifest = json.loads((DEMO / "demo.json").read_text())
    indices = manifest["heldout"]["indices"]
    assert manifest["heldout"]["split"] == "heldout" and len(indices) == 8
    assert manifest["classes"] == list(shapes_dataset.CLASSES)
    for index in indices:
        image, labels = shapes_dataset.sample(index, "heldout", size=manifest["input_size"])
        shipped_image = read_image(DEMO / "heldout" / f"image_{index:02d}.png")
        shipped_labels = read_label_png(DEMO / "heldout" / f"label_{index:02d}.png")
        np.testing.assert_array_equal(shipped_labels, labels)
        diff = np.abs(shipped_image.astype(int) - image.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
