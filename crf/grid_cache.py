"""The smoothness kernel's lattice, built once per image size.

The smoothness (Gaussian) kernel's features are the pixel positions ``(x / theta_x,
y / theta_y)`` (:func:`crf.densecrf.grid_features`): its lattice and its normaliser
``K 1`` depend on the height, the width and the two thetas, never on the image. A series
of images of one size builds them once: a folder of VOC photographs (most of them 500x375
or 375x500), the images of a parameter search (``deeplab crf-search``), the frames of a
video. :meth:`crf.DenseCRF.add_gaussian` and pydensecrf's ``addPairwiseGaussian``
(:mod:`crf.compat`) take them from here on the host backends (``"cpu"`` and ``"numpy"``);
the GPU builds its lattices anew each time and keeps no copy.

What a hit saves, measured at 500x375 on 2 threads (``bench/RESULTS.md``): the features,
the lattice and ``K 1``, 7.4 ms at theta_gamma = 3 (24,540 vertices) and 17 ms at
theta_gamma = 1 (DeepLab-v2's setting; 217,040 vertices), 29 and 109 ms at 1000x750.
A cached lattice is the one a fresh build gives, bit for bit, so inference does not
change.

The cache keeps the most recently used entries up to :data:`crf.config.GRID_CACHE_BYTES`
(the lattice's arrays and ``K 1``: 11 MiB at 500x375 and theta_gamma = 3), dropping the
least recently used first; an entry larger than the whole budget is not kept. Setting
the budget to 0 turns the cache off, :func:`clear` empties it and :func:`stats` says
what it holds. The entries are shared: a lattice handed out here is read, never written,
by the models that use it (their value buffers are their own), and several threads may
use one at once.
"""
import threading
from collections import OrderedDict

from crf import config

_entries = OrderedDict()  # key -> (lattice, k1, nbytes), least recently used first
_lock = threading.Lock()
_counts = {"hits": 0, "misses": 0}


def key(backend, height, width, theta_x, theta_y):
    """The cache key of a grid lattice: the backend that builds it, the size and the float32 thetas."""
    return backend, int(height), int(width), float(theta_x), float(theta_y)


def lattice_and_norm(grid_key, build):
    """``(lattice, k1, reused)`` for ``grid_key`` (:func:`key`): the cached pair, or ``build()``'s.

    Parameters
    ----------
    grid_key : tuple
        From :func:`key`; the thetas as the features use them (float32 values).
    build : callable
        Returns ``(lattice, k1)`` (:func:`crf.densecrf.lattice_and_norm` of the grid's
        features); called outside the lock, so two threads that miss at once may both build.

    Returns
    -------
    lattice : crf.lattice.Lattice
    k1 : ndarray of shape (N,), float64, read-only
    reused : bool
        Whether the pair came from the cache.
    """
    with _lock:
        _trim(config.GRID_CACHE_BYTES)
        entry = _entries.get(grid_key)
        if entry is not None:
            _entries.move_to_end(grid_key)
            _counts["hits"] += 1
            return entry[0], entry[1], True
        _counts["misses"] += 1
    lattice, k1 = build()
    k1.flags.writeable = False  # shared by every model of this size: nobody may scale it in place
    nbytes = lattice.nbytes() + k1.nbytes
    with _lock:
        if nbytes <= config.GRID_CACHE_BYTES:
            _entries[grid_key] = (lattice, k1, nbytes)
            _trim(config.GRID_CACHE_BYTES)
    return lattice, k1, False


def _trim(budget):
    """Drop the least recently used entries until the rest fit in ``budget`` bytes (the lock held)."""
    while _entries and sum(e[2] for e in _entries.values()) > budget:
        _entries.popitem(last=False)


def clear():
    """Forget every cached lattice (and reset the counts :func:`stats` reports)."""
    with _lock:
        _entries.clear()
        _counts.update(hits=0, misses=0)


def stats():
    """What the cache holds: ``{"entries", "bytes", "hits", "misses", "budget"}``."""
    with _lock:
        return {"entries": len(_entries), "bytes": sum(e[2] for e in _entries.values()),
                "hits": _counts["hits"], "misses": _counts["misses"], "budget": config.GRID_CACHE_BYTES}
