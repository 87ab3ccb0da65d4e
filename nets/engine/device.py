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


class HeldFrees:
    """Holds back the freeing of device memory while a pass queues its kernels, up to a budget.

    Numba frees a dropped device array's memory (``cuMemFree``) once more than ten are
    pending, and ``cuMemFree`` waits for the device to finish everything queued. A forward
    pass drops a blob every layer or two, so the host would wait for the GPU every few
    layers and could not queue the next layers' launches while the GPU runs them: the
    launches' host time would add to the GPU's instead of hiding behind it. Inside
    ``cuda.defer_cleanup()`` nothing is freed; this lets the hold go (and the pending
    frees happen) each time the pass has allocated ``budget`` more bytes, so that it holds
    at most about ``budget`` bytes it would otherwise have freed.

    Use as a context manager; call :meth:`allocated` with the bytes of every new output.
    """

    def __init__(self, budget):
        self.budget = int(budget)
        self.held = 0
        self.releases = 0  # how many times the hold was let go before the end
        self._hold = None

    def __enter__(self):
        self._hold = cuda.defer_cleanup()
        self._hold.__enter__()
        return self

    def allocated(self, nbytes):
        """Count ``nbytes`` of new device memory; let the hold go once they pass the budget."""
        self.held += int(nbytes)
        if self.held > self.budget:
            self._hold.__exit__(None, None, None)
            self.releases += 1
            self.held = 0
            self._hold = cuda.defer_cleanup()
            self._hold.__enter__()

    def __exit__(self, *exc):
        hold, self._hold = self._hold, None
        return hold.__exit__(*exc)
