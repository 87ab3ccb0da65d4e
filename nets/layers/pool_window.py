"""Caffe's pooling windows along one axis, written once for the CPU and the CUDA kernels.

The functions are plain Python on integers; :mod:`nets.layers.pooling` compiles them
with ``numba.njit`` and :mod:`nets.layers.cuda` as CUDA device functions, so both
tiers clip and count windows by the same lines (Caffe ``pooling_layer.cpp``).
"""


def max_window(o, stride, pad, kernel, size):
    """The MAX window of output cell ``o``: ``[start, end)``, clipped to the image first.

    Padded cells never enter a MAX window, so they can never win.
    """
    start = o * stride - pad
    end = min(start + kernel, size)
    return max(start, 0), end


def ave_window(o, stride, pad, kernel, size):
    """The AVE window of output cell ``o``: ``[start, end)`` clipped to the image, and its
    length as Caffe counts it for the divisor.

    The window's end is first clipped to ``size + pad``; the length is taken *before*
    clipping to the image, so zero padding counts in the divisor (up to ``size + pad``
    on the far side) while the sum runs over real pixels only.
    """
    start = o * stride - pad
    end = min(start + kernel, size + pad)
    return max(start, 0), min(end, size), end - start
