"""Image reading rules, VOC palette PNGs and atomic writes (nets/imageio.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nets.caffe import atomic_write, remove_orphans
from nets.app.imageio import (ImageReadError, colorize, legend_entries, overlay, read_image, read_label_png,
                              voc_palette, write_label_png)


def test_voc_palette_known_colours():
    # The published VOC colours of a few classes (devkit's colour map).
    p = voc_palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert tuple(p[0]) == (0, 0, 0)
    assert tuple(p[1]) == (128, 0, 0)        # aeroplane
    assert tuple(p[2]) == (0, 128, 0)        # bicycle
    assert tuple(p[15]) == (192, 128, 128)   # person
    assert tuple(p[20]) == (0, 64, 128)      # tvmonitor
    assert tuple(p[255]) == (224, 224, 192)  # void
    assert len({tuple(c) for c in p}) == 256


def _colour_count(picture, label):
    """Pixels of ``picture`` in exactly the VOC colour of ``label``."""
    return int((picture == voc_palette()[label]).all(axis=2).sum())


def test_overlay_legend_names_each_coloured_class():
    rng = np.random.default_rng(3)
    image = rng.integers(90, 160, (60, 120, 3), dtype=np.uint8)  # no pure palette colour, no white
    labels = np.zeros((60, 120), np.uint8)
    labels[5:30, 10:50], labels[35:55, 60:110], labels[0:3, 0:3] = 3, 7, 30
    names = [f"class{k}" for k in range(10)]
    assert legend_entries(labels, names) == [(3, "class3"), (7, "class7"), (30, "label 30")]
    assert legend_entries(labels) == [(3, "label 3"), (7, "label 7"), (30, "label 30")]

    plain = overlay(image, labels)
    shown = overlay(image, labels, legend=True, classes=names)
    assert shown.shape[0] > 60 and shown.shape[1] == 120 and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown[:60], plain)  # the picture itself is untouched
    strip = shown[60:]
    for label in (3, 7, 30):  # a swatch of each: its 10x10 inside, framed in grey
        assert _colour_count(strip, label) >= 100, label
    for label in (0, 1, 5, 15):  # no colour the picture does not show
        assert _colour_count(strip, label) == 0, label
    assert (strip == 255).all(axis=2).mean() > 0.5  # a white strip with dark text


def test_overlay_legend_widens_a_narrow_picture_and_says_when_there_is_no_class():
    image = np.full((40, 8, 3), 100, np.uint8)
    labels = np.zeros((40, 8), np.uint8)
    labels[10:20] = 15
    shown = overlay(image, labels, legend=True, classes=["background"] + [f"a long class name {k}" for k in range(20)])
    assert shown.shape[1] > 8  # one entry is wider than the image: the canvas grows to the right
    np.testing.assert_array_equal(shown[:40, :8], overlay(image, labels))
    assert (shown[:40, 8:] == 255).all()  # white beside the picture
    assert _colour_count(shown[40:], 15) >= 100

    empty = overlay(image, np.zeros((40, 8), np.uint8), legend=True)
    assert empty.shape[0] > 40 and legend_entries(np.zeros((2, 2), np.uint8)) == []
    assert (empty[40:] < 128).all(axis=2).any()  # "background only" is written
    assert not any(_colour_count(empty[40:], k) for k in range(1, 21))


def test_label_png_round_trip(tmp_path):
    labels = np.arange(21 * 12, dtype=np.uint8).reshape(12, 21) % 21
    labels[0, 0] = 255
    path = tmp_path / "labels.png"
    write_label_png(path, labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        assert np.array_equal(np.array(img), labels)
        assert img.getpalette()[3:6] == [128, 0, 0]
    assert np.array_equal(read_label_png(path), labels)
    assert np.array_equal(colorize(labels)[0, 1], voc_palette()[1])


def test_rgb_label_png_is_refused(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    with pytest.raises(ImageReadError, match="indexed"):
        read_label_png(path)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 3, 1), np.uint8), ValueError),
    (np.full((2, 3), 256), ValueError),
    (np.zeros((2, 3), np.float32), TypeError),
])
def test_write_label_png_validates(tmp_path, bad, error):
    with pytest.raises(error):
        write_label_png(tmp_path / "x.png", bad)
    assert not os.listdir(tmp_path), "a refused write must leave nothing behind"


def test_read_image_modes(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    out = read_image(tmp_path / "l.png")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255          # opaque red on the left, transparent on the right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[0, 4]) == (255, 255, 255)

    deep = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "i16.png")
    out = read_image(tmp_path / "i16.png")
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_read_image_applies_exif_orientation(tmp_path):
    img = np.zeros((16, 24, 3), np.uint8)
    img[:8, :8] = (255, 0, 0)             # a red block in the top-left corner
    pil = Image.fromarray(img)
    exif = Image.Exif()
    exif[0x0112] = 6                      # "rotate 90 degrees clockwise to display"
    pil.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (24, 16, 3)       # width and height swapped by the rotation
    assert out[2, 13, 0] > 200 and out[2, 2, 0] < 60   # top-left went top-right


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="corrupt.jpg: not a readable image"):
        read_image(bad)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as f:
        f.write(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_a_writer_killed_mid_write_leaves_the_old_file_and_an_orphan_that_is_removed(tmp_path):
    """SIGKILL cannot be caught: the temporary file stays, the old file is whole; remove_orphans
    takes the temporary files of the names it is given and nothing else."""
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    code = ("import os, signal, sys\n"
            "from nets.caffe import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'half of the new'); f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    orphan, = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert orphan.read_bytes() == b"half of the new" and path.read_bytes() == b"old"
    others = [".tmp-k3j2h1g0-other.png", ".tmp-without-a-name", "notes.txt", ".tmp-abc-out.png.bak"]
    for name in others:
        (tmp_path / name).write_bytes(b"keep")
    (tmp_path / ".tmp-x1-out.png").mkdir()  # the name of an orphan, but a folder: not ours
    assert remove_orphans(tmp_path, ["out.png", "missing.png"]) == [str(orphan)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + ["out.png", ".tmp-x1-out.png"])
    assert remove_orphans(tmp_path / "absent", ["out.png"]) == []


def test_decompression_bomb_is_an_image_read_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)   # 4096 pixels > 2 x 100: pillow refuses
    with pytest.raises(ImageReadError, match="big.png: not a readable image"):
        read_image(path)
