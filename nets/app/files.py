"""Files and folders for ``deeplab segment``: which images to read, what to write for each.

Writes, per image ``NAME.ext``: ``NAME.png`` (VOC-palette label map), with ``overlay``
``NAME_overlay.png``, with ``save_probs`` ``NAME_probs.npy`` (``(L, H, W)`` float32).
Every file is written atomically (:func:`nets.caffe.atomic_write`). An unreadable image
is reported by name and skipped; the others are segmented.
"""
import os
import time
import warnings

import numpy as np
from PIL import Image

from nets.app.imageio import ImageReadError, overlay as blend, read_image, save_image_atomic, write_label_png
from nets.caffe import atomic_write


def image_files(paths):
    """Expand files and folders (their image files, sorted, not recursive) into a list of paths.

    A path that does not exist is kept, so that reading it reports the error by name.
    """
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if os.path.splitext(n)[1].lower() in extensions
                            and os.path.isfile(os.path.join(path, n)))
        else:
            files.append(path)
    return files


def save_probabilities(path, probabilities):
    """Write ``(L, H, W) float32`` probabilities as a plain ``.npy`` (no pickle), atomically."""
    with atomic_write(path) as f:
        np.save(f, np.ascontiguousarray(probabilities, dtype=np.float32), allow_pickle=False)


def segment_files(paths, model, out_dir, crf=None, scales=(1.0,), backend="auto", overlay=False,
                  save_probs=False, verbose=False, log=None):
    """Segment image files into ``out_dir`` (module docstring).

    Parameters
    ----------
    paths : list of str
        Image files (see :func:`image_files` for folders).
    model : nets.deeplab.Model
    out_dir : str
    crf, scales, backend : see :meth:`nets.deeplab.Model.segment`
    overlay, save_probs, verbose : bool
    log : callable, optional
        Receives one line of text per message (errors, warnings, timings).

    Returns
    -------
    list of str
        The error messages, one per image that could not be segmented.
    """
    log = log or (lambda line: None)
    os.makedirs(out_dir, exist_ok=True)
    errors, seen = [], {}
    for k, path in enumerate(paths, 1):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            errors.append(f"{path}: its output {stem}.png would overwrite the one of {seen[stem]}; skipped")
            log(f"error: {errors[-1]}")
            continue
        seen[stem] = path
        t = time.perf_counter()
        try:
            image = read_image(path)
        except ImageReadError as exc:
            errors.append(str(exc))
            log(f"error: {exc}")
            continue
        read_time = time.perf_counter() - t
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = model.segment(image, crf=crf, scales=scales, backend=backend)
        for w in caught:
            log(f"warning: {path}: {w.message}")
        t = time.perf_counter()
        write_label_png(os.path.join(out_dir, stem + ".png"), result.labels)
        if overlay:
            save_image_atomic(Image.fromarray(blend(image, result.labels)),
                              os.path.join(out_dir, stem + "_overlay.png"))
        if save_probs:
            save_probabilities(os.path.join(out_dir, stem + "_probs.npy"), result.probabilities)
        stages = {"read": read_time, **result.timings, "write": time.perf_counter() - t}
        if verbose:
            log(f"[{k}/{len(paths)}] {path}: " + ", ".join(f"{s} {1000 * v:.1f} ms" for s, v in stages.items()))
        else:
            log(f"[{k}/{len(paths)}] {path}")
    return errors
