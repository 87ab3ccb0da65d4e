"""The demo's figure (nets/app/demo.py): its rows and its legend."""
import numpy as np

from nets.app.demo import figure
from nets.app.imageio import voc_palette


def test_figure_legend_names_the_classes_that_any_map_shows():
    rng = np.random.default_rng(0)
    images = [rng.integers(90, 160, (12, 10, 3), dtype=np.uint8) for _ in range(2)]
    truth = [np.zeros((12, 10), np.uint8), np.full((12, 10), 2, np.uint8)]
    column = [np.zeros((12, 10), np.uint8), np.zeros((12, 10), np.uint8)]
    column[1][:3] = 5  # a class only the column shows
    names = ["background", "disk", "square", "triangle", "ring", "bar"]
    plain = figure(images, truth, [("net", column)])
    shown = figure(images, truth, [("net", column)], classes=names)
    assert shown.shape[1] == plain.shape[1] and shown.shape[0] > plain.shape[0]
    np.testing.assert_array_equal(shown[:plain.shape[0]], plain)
    legend = shown[plain.shape[0]:]
    counts = {k: int((legend == voc_palette()[k]).all(axis=2).sum()) for k in range(6)}
    black = (legend == 0).all(axis=2).astype(np.int64)
    blocks = np.lib.stride_tricks.sliding_window_view(black, (10, 10)).sum(axis=(2, 3))
    assert blocks.max() == 100  # background is black in the maps, and named: a solid swatch, not text
    assert counts[2] >= 100 and counts[5] >= 100  # the ground truth's square, the column's bar
    assert counts[1] == counts[3] == counts[4] == 0
