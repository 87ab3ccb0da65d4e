"""Files and folders for ``deeplab segment``: which images to read, what to write for each.

Per image ``NAME.ext`` the outputs are ``NAME.png`` (VOC-palette label map), with ``overlay``
``NAME_overlay.png`` (with a legend of the classes it shows), with ``save_probs``
``NAME_probs.npy`` (``(L, H, W)`` float32). Every file is written atomically
(:func:`nets.caffe.atomic_write`), so an output that exists is complete.
:mod:`nets.app.batch` runs the images.
"""
import os

import numpy as np
from PIL import Image

from nets.caffe import atomic_write


def image_extensions():
    """The file extensions that PIL can open, lower case with the dot (``{".png", ".jpg", ...}``)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def image_files(paths):
    """Expand files and folders (their image files, sorted, not recursive) into a list of paths.

    A path that does not exist is kept, so that reading it reports the error by name.
    """
    extensions = image_extensions()
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if os.path.splitext(n)[1].lower() in extensions
                            and os.path.isfile(os.path.join(path, n)))
        else:
            files.append(path)
    return files


def output_paths(path, out_dir, overlay=False, save_probs=False):
    """The files written for one image: ``NAME.png`` [, ``NAME_overlay.png``] [, ``NAME_probs.npy``]."""
    stem = os.path.join(os.fspath(out_dir), os.path.splitext(os.path.basename(os.fspath(path)))[0])
    return ([stem + ".png"] + ([stem + "_overlay.png"] if overlay else [])
            + ([stem + "_probs.npy"] if save_probs else []))


def save_probabilities(path, probabilities):
    """Write ``(L, H, W) float32`` probabilities as a plain ``.npy`` (no pickle), atomically."""
    with atomic_write(path) as f:
        np.save(f, np.ascontiguousarray(probabilities, dtype=np.float32), allow_pickle=False)
