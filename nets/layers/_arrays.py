"""Input checks shared by the layer wrappers: host arrays, blob shapes, axes, channel vectors.

Size arguments (kernel, stride, pad) are parsed by :func:`atrous.conv.int_pair`, the one
parser of the project's (h, w) pairs.

Every public layer function validates its arguments here before dispatching,
so that the private kernels can trust what they receive: C-contiguous float32
arrays of the documented shapes.
"""
import numbers

import numpy as np

from atrous.backend import is_device_array


def host_float32(x, name):
    """Return ``x`` as a C-contiguous float32 NumPy array.

    Raises
    ------
    TypeError
        For a CUDA device array (the CPU backends need host memory) or a
        non-numeric array.
    """
    if is_device_array(x):
        raise TypeError(f"{name}: the numpy and cpu backends need a NumPy array, got a CUDA device "
                        f"array (use backend='cuda' or 'auto')")
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers (float32 preferred), got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def check_blob(x, name, ndims=(3, 4)):
    """Check the number of dimensions of a blob (host or device); return its shape.

    Parameters
    ----------
    x : array-like or CUDA device array
    name : str
        Used in the error message.
    ndims : tuple of int
        The accepted numbers of dimensions, e.g. ``(3, 4)`` for (C, H, W) or
        (N, C, H, W).
    """
    shape = tuple(int(s) for s in np.shape(x)) if not is_device_array(x) else tuple(x.shape)
    if len(shape) not in ndims:
        expected = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {expected} ((C, H, W) or (N, C, H, W)), got shape {shape}")
    if any(s == 0 for s in shape):
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    return shape


def array_shape(x, name):
    """The shape of a non-empty host or device array with at least one axis."""
    shape = tuple(x.shape) if is_device_array(x) else np.shape(x)
    if len(shape) == 0 or 0 in shape:
        raise ValueError(f"{name} must be a non-empty array with at least one axis, got shape {shape}")
    return tuple(int(s) for s in shape)


def canonical_axis(axis, ndim, name="axis"):
    """``axis`` in ``[-ndim, ndim)`` as a non-negative int."""
    if not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"{name} must be an int in [{-ndim}, {ndim}), got {axis!r}")
    return int(axis) % ndim


def channel_vector(v, channels, name):
    """Check a per-channel parameter of shape (C,) (or any shape of C elements)."""
    a = host_float32(v, name)
    if a.size != channels:
        raise ValueError(f"{name} must hold one value per channel ({channels}), "
                         f"got shape {a.shape}")
    return a.reshape(channels)
