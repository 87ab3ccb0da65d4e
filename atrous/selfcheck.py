"""``deeplab check`` for the atrous convolution: a backend against the NumPy reference.

:func:`cases` yields ``(name, max_abs_error, tolerance)`` for random layers
(random shapes, kernel sizes, rates, strides, padding, groups, bias), so a user
can confirm on their own machine that the compiled kernels agree with the
obviously-correct reference.
"""
import numpy as np

from atrous.conv import conv2d, conv_output_size

QUICK_CASES = (
    # (N, C_in, H, W, C_out, k, stride, pad, dilation, groups, bias)
    (1, 3, 9, 8, 4, 3, 1, 2, 2, 1, True),
    (2, 4, 7, 6, 4, 3, 2, 1, 1, 2, False),
    (1, 8, 6, 7, 3, 3, 1, 12, 12, 1, True),
    (1, 4, 5, 5, 4, 1, 1, 0, 1, 4, True),
)


def tolerance(c_in_g, kh, kw, scale):
    """Allowed max |error| in float32: grows like the square root of the sum's length."""
    return 1e-5 * np.sqrt(c_in_g * kh * kw) * max(1.0, scale)


def _random_case(rng):
    """A random valid layer; sizes small enough to run everywhere in a second."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in = groups * int(rng.integers(1, 9))
        c_out = groups * int(rng.integers(1, 6))
        k = int(rng.choice([1, 3, 5]))
        dilation = int(rng.choice([1, 2, 3, 6, 12]))
        stride = int(rng.choice([1, 1, 2]))
        pad = int(rng.integers(0, dilation + 1))
        h, w = (int(v) for v in rng.integers(3, 17, size=2))
        n = int(rng.choice([1, 2]))
        if min(conv_output_size((h, w), k, stride, pad, dilation)) >= 1:
            return n, c_in, h, w, c_out, k, stride, pad, dilation, groups, bool(rng.integers(0, 2))


def _name(case):
    n, c_in, h, w, c_out, k, stride, pad, dilation, groups, bias = case
    return (f"conv {n}x{c_in}x{h}x{w} -> {c_out}, k{k} s{stride} p{pad} rate{dilation} "
            f"g{groups}{' +b' if bias else ''}")


def cases(backend, quick, rng):
    """Compare ``backend`` with the reference on random layers.

    Parameters
    ----------
    backend : {"cpu", "cuda"}
    quick : bool
        Four small fixed layers instead of twenty random ones.
    rng : numpy.random.Generator
        Source of the layers' shapes and values.

    Yields
    ------
    (name, max_abs_error, tolerance) : (str, float, float)
    """
    specs = QUICK_CASES if quick else [_random_case(rng) for _ in range(20)]
    for case in specs:
        n, c_in, h, w, c_out, k, stride, pad, dilation, groups, has_bias = case
        x = rng.uniform(-1, 1, (n, c_in, h, w)).astype(np.float32)
        weight = rng.uniform(-1, 1, (c_out, c_in // groups, k, k)).astype(np.float32)
        bias = rng.uniform(-1, 1, c_out).astype(np.float32) if has_bias else None
        kwargs = dict(stride=stride, pad=pad, dilation=dilation, groups=groups)
        expected = conv2d(x, weight, bias, backend="numpy", **kwargs)
        got = conv2d(x, weight, bias, backend=backend, **kwargs)
        err = float(np.max(np.abs(got - expected)))
        yield _name(case), err, tolerance(c_in // groups, k, k, float(np.max(np.abs(expected))))
