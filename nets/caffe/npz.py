"""The converted-network format: a plain ``.npz`` holding a prototxt and float32 blobs.

A converted archive (written by :func:`nets.engine.convert`) holds:

* ``__format__``: ``"deeplab-numba-net/1"``;
* ``__prototxt__``: the network definition as prototxt text (written with
  :func:`nets.caffe.format_prototxt`, in the dialect it was read in);
* ``<layer name>/<blob index>``: the blobs, float32, in Caffe's shapes. A blob shared
  by several layers (``param { name }``) is stored once, under the first of them.

Only arrays of numbers are stored, so the file loads with ``allow_pickle=False``. This
module knows the container only; which blobs a net needs, and their shapes, is the
engine's business.
"""
import os
import zipfile

import numpy as np

from .atomic import atomic_write
from .prototxt import format_prototxt, parse_prototxt

FORMAT = "deeplab-numba-net/1"


def is_npz(path):
    """True when ``path`` is a zip archive (a ``.npz``), False for anything else (a caffemodel).

    Raises
    ------
    ValueError
        A file named ``.npz`` that is not a zip archive: it would otherwise be read as
        a caffemodel or a prototxt and fail with a message about those.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        return True
    if path.lower().endswith(".npz") and os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(8)
        raise ValueError(f"{path}: not a readable .npz archive (a converted net is a zip archive written by "
                         f"deeplab convert; this file starts with {head!r})")
    return False


def write_npz(path, spec, blobs):
    """Write a converted network atomically.

    Parameters
    ----------
    path : str or PathLike
    spec : NetSpec
        Stored as prototxt text.
    blobs : mapping of str to ndarray
        ``{"<layer>/<index>": array}``; written as C-contiguous float32.
    """
    arrays = {"__format__": np.array(FORMAT), "__prototxt__": np.array(format_prototxt(spec))}
    for key, blob in blobs.items():
        arrays[key] = np.ascontiguousarray(blob, dtype=np.float32)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def read_npz(path):
    """Read a converted ``.npz``: the network and its blobs by layer name.

    Returns
    -------
    spec : NetSpec
    weights : dict of str to list of ndarray or None
        ``None`` marks a blob stored under another layer that shares it.

    Raises
    ------
    ValueError
        Not a converted net, an array holding Python objects (refused: loading them
        would need pickle), or a blob that is not a float array.
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive: {exc}") from None
    with archive:
        keys = list(archive.files)
        if "__prototxt__" not in keys:
            raise ValueError(f"{path}: expected a net converted by nets.convert (an .npz with "
                             f"'__prototxt__' and '<layer>/<index>' arrays); found keys {keys[:10]}")
        arrays = {}
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                raise ValueError(f"{path}: array {key!r} holds Python objects, which are refused "
                                 f"(loading them would need pickle): {exc}") from None
    text = arrays.pop("__prototxt__")
    mark = arrays.pop("__format__", None)
    if mark is not None and (mark.dtype.kind != "U" or mark.ndim != 0 or str(mark) != FORMAT):
        raise ValueError(f"{path}: '__format__' is {mark!r}, expected {FORMAT!r} (written by deeplab convert)")
    if text.dtype.kind != "U" or text.ndim != 0:
        raise ValueError(f"{path}: '__prototxt__' must be a text scalar, got dtype {text.dtype}, "
                         f"shape {text.shape}")
    spec = parse_prototxt(str(text))
    weights = {}
    for key, array in arrays.items():
        layer, sep, index = key.rpartition("/")
        if not sep or not index.isdigit():
            raise ValueError(f"{path}: unexpected array {key!r}; blobs are named '<layer>/<index>'")
        if array.dtype.kind != "f":
            raise ValueError(f"{path}: blob {key!r} must be a float array, got dtype {array.dtype}")
        blobs = weights.setdefault(layer, [])
        blobs.extend([None] * (int(index) + 1 - len(blobs)))
        blobs[int(index)] = array
    return spec, weights
