"""DeepLab's Interp layer: align-corners bilinear resizing with float32 ratios.

For an output row ``y`` (columns alike), with ``H_eff = H + pad_beg + pad_end``::

    rh  = float32(H_eff - 1) / float32(H_out - 1)       (0 when H_out == 1)
    h1r = float32(rh * y);  h1 = int(h1r);  dh = 1 if h1 < H_eff - 1 else 0
    ly  = h1r - h1                                       (float32)
    out = (1-ly) [(1-lx) A(h1, w1) + lx A(h1, w1+dw)] + ly [(1-lx) A(h1+dh, w1) + lx A(h1+dh, w1+dw)]

evaluated in float32 in this order. Equal input and output sizes copy. Output
corners land on input corners (align corners), there is no low-pass filter
before shrinking, and ``pad_beg``/``pad_end`` (<= 0) crop: the crop starts at
``-pad_beg`` on both axes.

Three tiers with one signature: ``backend="numpy"`` (vectorised reference),
``"cpu"`` (Numba) and ``"cuda"`` (``nets.layers.cuda``).
"""
import numbers

import numpy as np
from numba import njit, prange

from atrous.backend import resolve_backend

from ._arrays import check_blob, host_float32

DIALECTS = ("v2", "v1")


def _optional_int(value, name, minimum):
    if value is None:
        return None
    if not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def interp_output_size(in_height, in_width, zoom_factor=None, shrink_factor=None, height=None,
                       width=None, pad_beg=0, pad_end=0, dialect="v2"):
    """Output size of Caffe Interp, following the branch order of each DeepLab version.

    A parameter is "set" when it is not None (protobuf's ``has_``): a factor of
    1 given explicitly still selects its branch.

    Parameters
    ----------
    in_height, in_width : int
        Input size before cropping.
    zoom_factor, shrink_factor : int or None
        ``>= 1`` when set.
    height, width : int or None
        Explicit output size (``height``/``width`` in ``interp_param``); used only
        when both are set.
    pad_beg, pad_end : int
        ``<= 0``: crop the input to ``H_eff = H + pad_beg + pad_end``.
    dialect : {"v2", "v1"}
        ``"v2"`` (DeepLab v2): shrink only, zoom only, height and width, then
        shrink and zoom together (shrink first). ``"v1"`` (DeepLab v1): zoom,
        then shrink, then height and width; no combined mode.

    Returns
    -------
    (int, int)
        ``(H_out, W_out)``.

    Raises
    ------
    ValueError
        When no branch applies, a pad is positive, or a size is not positive.

    References
    ----------
    DeepLab v2 ``src/caffe/layers/interp_layer.cpp`` (Chen et al., TPAMI 2018,
    Sec. 3.1 and 4.1: MSC scales 0.5 and 0.75, x8 upsampling of the scores).
    """
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    zoom = _optional_int(zoom_factor, "zoom_factor", 1)
    shrink = _optional_int(shrink_factor, "shrink_factor", 1)
    out_height = _optional_int(height, "height", 1)
    out_width = _optional_int(width, "width", 1)
    if pad_beg > 0 or pad_end > 0:
        raise ValueError(f"pad_beg and pad_end must be <= 0 (they crop), got {pad_beg} and {pad_end}")
    h_eff = in_height + pad_beg + pad_end
    w_eff = in_width + pad_beg + pad_end
    if h_eff < 1 or w_eff < 1:
        raise ValueError(f"cropping {in_height}x{in_width} by pad_beg {pad_beg}, pad_end {pad_end} "
                         f"leaves {h_eff}x{w_eff}")
    explicit = out_height is not None and out_width is not None

    def shrunk(n):
        return (n - 1) // shrink + 1

    def zoomed(n):
        return n + (n - 1) * (zoom - 1)

    if dialect == "v2":
        if shrink is not None and zoom is None:
            size = (shrunk(h_eff), shrunk(w_eff))
        elif zoom is not None and shrink is None:
            size = (zoomed(h_eff), zoomed(w_eff))
        elif explicit:
            size = (out_height, out_width)
        elif shrink is not None and zoom is not None:
            size = (zoomed(shrunk(h_eff)), zoomed(shrunk(w_eff)))
        else:
            raise ValueError("Interp needs zoom_factor, shrink_factor, or both height and width; "
                             f"got height={out_height}, width={out_width}")
    else:
        if zoom is not None:
            size = (zoomed(h_eff), zoomed(w_eff))
        elif shrink is not None:
            size = (shrunk(h_eff), shrunk(w_eff))
        elif explicit:
            size = (out_height, out_width)
        else:
            raise ValueError("Interp (v1) needs zoom_factor, shrink_factor, or both height and "
                             f"width; got height={out_height}, width={out_width}")
    return size


def _axis_weights(size_in, size_out):
    """Per output index along one axis: (index, step to the next sample, weight of it).

    Returns int64 arrays ``i1``, ``di`` and float32 ``lam`` of length ``size_out``.
    """
    if size_out > 1:
        ratio = np.float32(size_in - 1) / np.float32(size_out - 1)
    else:
        ratio = np.float32(0)
    i1r = ratio * np.arange(size_out, dtype=np.float32)  # float32 products, as in Caffe
    i1 = i1r.astype(np.int64)  # truncation, like C's float -> int
    di = (i1 < size_in - 1).astype(np.int64)
    lam = i1r - i1.astype(np.float32)
    return i1, di, lam


def _interp_reference(planes, offset, size_in, size_out):
    """Bilinear align-corners resize in NumPy, float32 throughout.

    planes : ndarray of shape (P, H, W), float32; the source is the window
    ``[offset:offset + h_in, offset:offset + w_in]`` -> ndarray (P, h_out, w_out).
    """
    (h_in, w_in), (h_out, w_out) = size_in, size_out
    src = planes[:, offset:offset + h_in, offset:offset + w_in]
    if size_in == size_out:
        return src.copy()
    h1, dh, ly = _axis_weights(h_in, h_out)
    w1, dw, lx = _axis_weights(w_in, w_out)
    one = np.float32(1)
    top_left = src[:, h1[:, None], w1[None, :]]  # (P, h_out, w_out)
    top_right = src[:, h1[:, None], (w1 + dw)[None, :]]
    bottom_left = src[:, (h1 + dh)[:, None], w1[None, :]]
    bottom_right = src[:, (h1 + dh)[:, None], (w1 + dw)[None, :]]
    ly = ly[:, None]  # (h_out, 1)
    lx = lx[None, :]  # (1, w_out)
    return ((one - ly) * ((one - lx) * top_left + lx * top_right)
            + ly * ((one - lx) * bottom_left + lx * bottom_right))


@njit(parallel=True, cache=True)
def _interp_kernel(planes, offset, h_in, w_in, out):
    count, h_out, w_out = out.shape
    one = np.float32(1)
    zero = np.float32(0)
    rh = np.float32(h_in - 1) / np.float32(h_out - 1) if h_out > 1 else zero
    rw = np.float32(w_in - 1) / np.float32(w_out - 1) if w_out > 1 else zero
    same = h_in == h_out and w_in == w_out
    for task in prange(count * h_out):
        p = task // h_out
        y = task % h_out
        h1r = rh * np.float32(y)
        h1 = int(h1r)
        dh = 1 if h1 < h_in - 1 else 0
        ly = h1r - np.float32(h1)
        for x in range(w_out):
            if same:
                out[p, y, x] = planes[p, offset + y, offset + x]
                continue
            w1r = rw * np.float32(x)
            w1 = int(w1r)
            dw = 1 if w1 < w_in - 1 else 0
            lx = w1r - np.float32(w1)
            r0 = offset + h1
            c0 = offset + w1
            out[p, y, x] = ((one - ly) * ((one - lx) * planes[p, r0, c0] + lx * planes[p, r0, c0 + dw])
                            + ly * ((one - lx) * planes[p, r0 + dh, c0]
                                    + lx * planes[p, r0 + dh, c0 + dw]))


def interp(x, zoom_factor=None, shrink_factor=None, height=None, width=None, pad_beg=0, pad_end=0,
           dialect="v2", backend="auto"):
    """Caffe/DeepLab Interp: bilinear resizing with aligned corners.

    Parameters
    ----------
    x : ndarray of shape (C, H, W) or (N, C, H, W), float32 (or a CUDA device array)
    zoom_factor, shrink_factor, height, width, pad_beg, pad_end, dialect
        ``interp_param`` as in Caffe; see ``interp_output_size``. For a plain
        resize to a given size pass ``height`` and ``width`` only.
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray of shape (C, H_out, W_out) or (N, C, H_out, W_out), float32
        A device array when ``x`` is one.

    References
    ----------
    DeepLab v2 ``src/caffe/util/interp.cpp`` (``caffe_cpu_interp2``); Chen et al.,
    TPAMI 2018, Sec. 3.1 (bilinear upsampling of the score map by 8).
    """
    shape = check_blob(x, "x")
    size_out = interp_output_size(shape[-2], shape[-1], zoom_factor, shrink_factor, height, width,
                                  pad_beg, pad_end, dialect)
    size_in = (shape[-2] + pad_beg + pad_end, shape[-1] + pad_beg + pad_end)
    offset = -pad_beg
    backend = resolve_backend(backend, x)
    out_shape = shape[:-2] + size_out
    if backend == "cuda":
        from . import cuda
        return cuda.interp(x, offset, size_in, out_shape)
    planes = host_float32(x, "x").reshape((-1,) + shape[-2:])  # (N*C, H, W)
    if backend == "numpy":
        out = _interp_reference(planes, offset, size_in, size_out)
    else:
        out = np.empty((planes.shape[0],) + size_out, np.float32)
        _interp_kernel(planes, offset, size_in[0], size_in[1], out)
    return out.reshape(out_shape)
