"""Confusion matrix, per-class IoU and mIoU against numbers worked out by hand."""
import numpy as np
import pytest
from PIL import Image

from nets.app.evaluate import class_iou, confusion_matrix, mean_iou, pair_files, pixel_accuracy
from nets.app.imageio import ImageReadError, read_label_png, write_label_png

# Ground truth and prediction of a 3 x 4 image, 3 classes; 255 is void.
TRUTH = np.array([[0, 0, 1, 1],
                  [0, 2, 2, 1],
                  [255, 2, 2, 255]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 1, 1],
                 [2, 2, 0, 0]], np.uint8)


def test_confusion_matrix_counted_by_hand():
    # Counted pixel by pixel, void pixels (row 2, columns 0 and 3) left out:
    # truth 0: (0,0)->0 (0,1)->1 (1,0)->0          => [2, 1, 0]
    # truth 1: (0,2)->1 (0,3)->1 (1,3)->1          => [0, 3, 0]
    # truth 2: (1,1)->2 (1,2)->1 (2,1)->2 (2,2)->0 => [1, 1, 2]
    expected = np.array([[2, 1, 0], [0, 3, 0], [1, 1, 2]])
    np.testing.assert_array_equal(confusion_matrix(TRUTH, PRED, 3), expected)


def test_iou_and_miou_by_hand():
    matrix = np.array([[2, 1, 0], [0, 3, 0], [1, 1, 2]])
    # class 0: TP 2, FN 1, FP 1 -> 2/4; class 1: TP 3, FN 0, FP 2 -> 3/5; class 2: TP 2, FN 2, FP 0 -> 2/4
    np.testing.assert_allclose(class_iou(matrix), [2 / 4, 3 / 5, 2 / 4])
    assert mean_iou(matrix) == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    assert pixel_accuracy(matrix) == pytest.approx(7 / 10)


def test_absent_class_has_no_iou_and_is_left_out_of_the_mean():
    matrix = np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]])
    iou = class_iou(matrix)
    assert np.isnan(iou[2])
    # class 0: 5 / (6 + 7 - 5) = 5/8; class 1: 4 / (6 + 5 - 4) = 4/7
    assert mean_iou(matrix) == pytest.approx((5 / 8 + 4 / 7) / 2)


def test_accumulated_over_images_not_averaged_per_image():
    # Image A: 1 pixel of class 1, correct; image B: 9 pixels of class 1, all predicted 0.
    a_truth, a_pred = np.array([[1, 0]]), np.array([[1, 0]])
    b_truth, b_pred = np.ones((3, 3), np.int64), np.zeros((3, 3), np.int64)
    total = confusion_matrix(a_truth, a_pred, 2) + confusion_matrix(b_truth, b_pred, 2)
    # class 1: TP 1, FN 9, FP 0 -> 1/10; class 0: TP 1, FP 9 -> 1/10
    np.testing.assert_allclose(class_iou(total), [1 / 10, 1 / 10])


def test_void_pixels_do_not_count_even_when_predicted_as_anything():
    truth = np.full((2, 2), 255, np.uint8)
    truth[0, 0] = 1
    assert confusion_matrix(truth, np.array([[1, 0], [0, 0]]), 2).sum() == 1


@pytest.mark.parametrize("truth, pred, message", [
    (np.array([[3]]), np.array([[0]]), "ground truth labels must lie in"),
    (np.array([[0]]), np.array([[7]]), "prediction labels must lie in"),
    (np.zeros((2, 2), int), np.zeros((2, 3), int), "same size"),
])
def test_bad_labels_are_refused(truth, pred, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(truth, pred, 3)


def test_palette_pngs_round_trip_through_evaluate(tmp_path):
    write_label_png(tmp_path / "truth.png", TRUTH)
    write_label_png(tmp_path / "pred.png", PRED)
    with Image.open(tmp_path / "truth.png") as img:
        assert img.mode == "P"
    matrix = confusion_matrix(read_label_png(tmp_path / "truth.png"), read_label_png(tmp_path / "pred.png"), 3)
    np.testing.assert_array_equal(matrix, [[2, 1, 0], [0, 3, 0], [1, 1, 2]])


def test_label_png_saved_as_rgb_is_refused(tmp_path):
    from nets.app.imageio import colorize
    Image.fromarray(colorize(TRUTH)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="indexed"):
        read_label_png(tmp_path / "rgb.png")


def test_pair_files_by_stem(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "img").mkdir()
    for stem in ("a", "b"):
        write_label_png(tmp_path / "gt" / f"{stem}.png", TRUTH)
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    pairs, missing = pair_files(tmp_path / "gt", tmp_path / "img")
    assert [p[1].endswith("a.jpg") for p in pairs] == [True]
    assert len(missing) == 1 and "b.*" in missing[0]


def test_pair_files_restricted_to_a_list_of_stems(tmp_path):
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        for stem in ("a", "b"):
            write_label_png(tmp_path / folder / f"{stem}.png", TRUTH)
    pairs, missing = pair_files(tmp_path / "gt", tmp_path / "pred", suffix=".png", stems=["b", "c"])
    assert [p[0].endswith("b.png") for p in pairs] == [True]
    assert len(missing) == 1 and "c.png: no such label file" in missing[0]
