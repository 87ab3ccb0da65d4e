"""``deeplab check`` cases for the Caffe layers: pooling and Interp against their NumPy references.

``cases(backend, quick, rng)`` yields ``(name, max_abs_error, tolerance)`` for
DeepLab's own configurations: VGG's 3x3/2 ceil-mode MAX pools, LargeFOV's
pool5a AVE 3x3/1, the MSC Interps and the x8 upsampling of the scores.
"""
import numpy as np

from atrous.backend import is_device_array

from .interp import interp
from .pooling import pool2d

TOLERANCE = 1e-5


def _pool_cases(quick):
    size = 33 if quick else 129
    return [
        ((3, size, size + 4), dict(kernel=3, stride=2, pad=1, mode="max"), "MAX 3x3/2 pad 1 (pool1-3)"),
        ((3, size, size), dict(kernel=3, stride=1, pad=1, mode="max"), "MAX 3x3/1 pad 1 (pool4-5)"),
        ((3, size, size - 2), dict(kernel=3, stride=1, pad=1, mode="ave"), "AVE 3x3/1 pad 1 (pool5a)"),
        ((3, 10, 11), dict(kernel=2, stride=2, pad=1, mode="ave"), "AVE 2x2/2 pad 1 (clip rule)"),
    ]


def _interp_cases(quick):
    scores = 17 if quick else 65
    image = 129 if quick else 513
    return [
        ((4, scores, scores), dict(zoom_factor=8), f"zoom 8 ({scores} -> {8 * scores - 7})"),
        ((3, image, image), dict(shrink_factor=4, zoom_factor=3), f"shrink 4 zoom 3 ({image} -> MSC 0.75)"),
        ((4, 49, 49), dict(zoom_factor=4, shrink_factor=3), "zoom 4 shrink 3 (49 -> 65)"),
        ((4, 33, 29), dict(height=65, width=57), "height/width (33x29 -> 65x57)"),
    ]


def _host(a):
    return a.copy_to_host() if is_device_array(a) else a


def cases(backend, quick, rng):
    """Yield ``(name, max_abs_error, tolerance)`` for ``backend`` against ``backend="numpy"``."""
    for shape, params, label in _pool_cases(quick):
        x = rng.standard_normal(shape).astype(np.float32)
        got = _host(pool2d(x, backend=backend, **params))
        want = pool2d(x, backend="numpy", **params)
        yield f"pooling {label}", float(np.abs(got - want).max()), TOLERANCE
    for shape, params, label in _interp_cases(quick):
        x = rng.standard_normal(shape).astype(np.float32)
        got = _host(interp(x, backend=backend, **params))
        want = interp(x, backend="numpy", **params)
        yield f"interp {label}", float(np.abs(got - want).max()), TOLERANCE
