"""``deeplab segment``'s files and folders: bad files reported by name, the others written."""
import numpy as np
from PIL import Image

from nets.app.files import segment_files
from nets.app.imageio import read_label_png


def test_segment_files_reports_bad_files_and_writes_the_rest(tmp_path, largefov, sample):
    Image.fromarray(sample[0]).save(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\x00" * 10)
    errors = segment_files([str(tmp_path / "good.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "gone.png")],
                           largefov, str(tmp_path / "out"), backend="cpu")
    assert len(errors) == 2 and "broken.jpg" in errors[0] and "gone.png" in errors[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    np.testing.assert_array_equal(read_label_png(tmp_path / "out" / "good.png"),
                                  largefov.segment(sample[0], backend="cpu").labels)
