"""``deeplab segment``'s files and folders: which files are read, which are written, bad ones by name."""
import numpy as np
from PIL import Image

from nets.app.batch import Settings, segment_files
from nets.app.files import image_files, output_paths
from nets.app.imageio import read_label_png


def test_segment_files_reports_bad_files_and_writes_the_rest(tmp_path, largefov, sample):
    Image.fromarray(sample[0]).save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\x00" * 10)
    paths = [str(tmp_path / "good.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "gone.png")]
    summary = segment_files(paths, Settings("demo-largefov", backend="cpu"), str(tmp_path / "out"))
    errors = [o.error for o in summary.failures]
    assert len(errors) == 2 and "broken.jpg" in errors[0] and "gone.png" in errors[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    np.testing.assert_array_equal(read_label_png(tmp_path / "out" / "good.png"),
                                  largefov.segment(sample[0], backend="cpu").labels)


def test_two_images_of_one_stem_do_not_overwrite_each_other(tmp_path, sample):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(sample[0]).save(tmp_path / folder / "x.png")
    summary = segment_files([str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")],
                            Settings("demo-largefov", backend="cpu"), str(tmp_path / "out"))
    assert summary.done == 1 and "would overwrite" in summary.failures[0].error


def test_folders_expand_to_their_images_and_outputs_are_named_by_stem(tmp_path):
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    assert image_files([tmp_path, "missing.png"]) == [str(tmp_path / "a.JPG"), str(tmp_path / "b.png"), "missing.png"]
    assert output_paths("/x/photo.jpg", "out", overlay=True, save_probs=True) == [
        "out/photo.png", "out/photo_overlay.png", "out/photo_probs.npy"]
