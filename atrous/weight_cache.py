"""Forms of convolution weights derived once per set of weights and reused across calls.

Some strategies rearrange the weights before they convolve: on the CPU Winograd's
transformed filters ``U = G g G^T`` (:mod:`atrous.winograd`, 16/9 of the weights' size)
are the largest; on the GPU the implicit GEMM reads them tap-major
(:func:`atrous.cuda.relayout_weights`, a device array the weights' size). A network
convolves with the same weights at every forward pass, so it keeps a :class:`WeightCache`
and hands it to :func:`atrous.conv2d` (``cache=``); one-off calls pass nothing and derive
the forms on every call.

Entries are keyed by the weight array itself (its ``id``), and the cache holds the array,
so the ``id`` cannot be reused by another array while the entry lives. The owner of the
cache promises not to change weights in place while the cache lives (a net that loads new
weights gets new arrays, and with them new entries); :meth:`WeightCache.clear` drops
everything.
"""


class WeightCache:
    """Derived forms of weight arrays, computed on first use.

    Examples
    --------
    >>> cache = WeightCache()                                  # doctest: +SKIP
    >>> y = atrous.conv2d(x, w, pad=12, dilation=12, cache=cache)  # doctest: +SKIP
    >>> len(cache)  # Winograd's filters of w, reused by the next call  # doctest: +SKIP
    1
    """

    def __init__(self):
        self._entries = {}  # (id(weight), form) -> (weight, derived)

    def get(self, weight, form, make):
        """``make(weight)``, computed once for this array and ``form`` (a name such as ``"winograd"``)."""
        key = (id(weight), form)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not weight:
            entry = self._entries[key] = (weight, make(weight))
        return entry[1]

    def clear(self):
        """Forget every derived form (their memory is freed when no caller holds them)."""
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def nbytes(self):
        """Bytes of the derived arrays held (the weights themselves not counted)."""
        return sum(getattr(derived, "nbytes", 0) for _, derived in self._entries.values())
