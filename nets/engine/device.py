"""Moving a forward pass's arrays to and from the GPU (imported only for ``backend="cuda"``).

Like the CUDA kernel modules (:mod:`atrous.cuda`, :mod:`crf.cuda`, :mod:`nets.layers.cuda`),
it imports ``numba.cuda`` at the top and is itself imported only when the ``"cuda"``
backend is chosen (:mod:`nets.engine.net` imports it lazily), so ``import nets`` never
loads CUDA.
"""
import numpy as np
from numba import cuda

from atrous.backend import is_device_array


def to_device(a):
    """A C-contiguous float32 device array holding ``a`` (device arrays pass through)."""
    if is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def to_host(a):
    """A NumPy array holding ``a``."""
    return a.copy_to_host() if is_device_array(a) else np.asarray(a)


def cached(blobs, cache):
    """Device copies of a layer's weights, uploaded once per host array.

    Parameters
    ----------
    blobs : list of ndarray
    cache : dict
        ``{id(host array): (host array, device array)}``, owned by the net; the host
        array is kept so that its id cannot be reused while the entry lives.
    """
    out = []
    for blob in blobs:
        entry = cache.get(id(blob))
        if entry is None or entry[0] is not blob:
            entry = cache[id(blob)] = (blob, to_device(blob))
        out.append(entry[1])
    return out
