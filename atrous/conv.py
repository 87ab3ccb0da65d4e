"""The public atrous convolution: ``conv2d`` validates, converts and dispatches.

Caffe's Convolution semantics: a cross-correlation with zero padding, the
output size rounded down, the effective kernel ``dilation*(k-1)+1``
(DeepLab v1 calls the dilation ``hole``), and ``groups``.
"""
import numbers

import numpy as np

from atrous.backend import is_device_array, resolve_backend


def _is_int(v):
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def int_pair(value, name, minimum):
    """``value`` (an int or an (h, w) pair of ints) as a tuple of two ints >= ``minimum``.

    The one parser of the project's size arguments (kernel, stride, pad, dilation of
    :func:`conv2d` and of :mod:`nets.layers`' pooling). A pair is a tuple, a list or a
    1-D array of two ints; booleans are not ints here.

    Raises
    ------
    TypeError
        Not an int nor a pair of ints.
    ValueError
        A value below ``minimum``.
    """
    if _is_int(value):
        pair = (int(value), int(value))
    elif (isinstance(value, (tuple, list, np.ndarray)) and np.ndim(value) == 1 and len(value) == 2
          and all(_is_int(v) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    if min(pair) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be {kind} (>= {minimum}), got {value!r}")
    return pair


def conv_output_size(size, kernel, stride=1, pad=0, dilation=1):
    """Output size of a convolution along each spatial axis (Caffe: floor mode).

    ``out = (size + 2*pad - (dilation*(kernel-1) + 1)) // stride + 1``

    Parameters
    ----------
    size, kernel, stride, pad, dilation : int or pair of ints (h, w)
        Input size, kernel size, stride, zero padding on each side, dilation (rate).

    Returns
    -------
    (H_out, W_out) : tuple of two ints
        May be zero or negative when the dilated kernel does not fit; the
        caller decides whether that is an error (:func:`conv2d` raises).
    """
    size = int_pair(size, "size", 0)
    kernel = int_pair(kernel, "kernel", 1)
    stride = int_pair(stride, "stride", 1)
    pad = int_pair(pad, "pad", 0)
    dilation = int_pair(dilation, "dilation", 1)
    return tuple((n + 2 * p - (d * (k - 1) + 1)) // s + 1
                 for n, k, s, p, d in zip(size, kernel, stride, pad, dilation))


def _as_float32(a, name):
    """A host array as C-contiguous float32; bool and integer converted, complex/object refused."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real (float, integer or bool) array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_device(a, name):
    """Device arrays are used as they are: they must already be C-contiguous float32."""
    if np.dtype(a.dtype) != np.float32:
        raise TypeError(f"{name}: a CUDA device array must be float32, got dtype {a.dtype}")
    if not a.is_c_contiguous():
        raise ValueError(f"{name}: a CUDA device array must be C-contiguous")
    return a


def _prepare(a, name):
    """Host arrays become C-contiguous float32; device arrays are checked, never copied."""
    return _check_device(a, name) if is_device_array(a) else _as_float32(a, name)


def conv2d(x, weight, bias=None, *, stride=1, pad=0, dilation=1, groups=1, residual=None, relu_slope=None,
           backend="auto", cache=None):
    """Atrous (dilated) 2-D convolution, Caffe semantics (a cross-correlation).

    ``y[n, o, u, v] = bias[o] + sum_{c, i, j} weight[o, c, i, j]
    * x_pad[n, g*C_in/groups + c, stride_h*u + dilation_h*i, stride_w*v + dilation_w*j]``
    where ``x_pad`` is ``x`` zero-padded by ``pad`` on each side and g is the
    group of output channel o. Optionally followed, as the output is written, by
    ``y += residual`` and Caffe's ReLU (:mod:`atrous.epilogue`): the layers
    Convolution -> Eltwise SUM -> ReLU of a ResNet block, or Convolution -> ReLU,
    with the same arithmetic as the separate layers.

    Parameters
    ----------
    x : ndarray of shape (C_in, H, W) or (N, C_in, H, W)
        float16/32/64 are computed as float32; bool and integer arrays are
        converted to float32. A CUDA device array (float32, C-contiguous)
        is accepted by the ``"cuda"`` backend and gives a device array back.
    weight : ndarray of shape (C_out, C_in // groups, kh, kw)
    bias : ndarray of shape (C_out,), optional
    stride, pad, dilation : int or pair of ints (h, w)
        stride >= 1, pad >= 0, dilation (the atrous rate) >= 1.
    groups : int
        Divides both C_in and C_out.
    residual : ndarray of the output's shape, optional
        Added to the convolution (bias included); a CUDA device array with ``"cuda"``.
    relu_slope : float, optional
        Apply Caffe's ReLU ``max(y, 0) + relu_slope * min(y, 0)`` last (0: the plain
        rectifier). None (the default): no ReLU.
    backend : {"auto", "numpy", "cpu", "cuda"}
        "numpy" is the reference; "auto" is "cuda" on a real GPU, else "cpu".
    cache : atrous.WeightCache, optional
        Keeps what the strategies derive from ``weight`` (on the CPU Winograd's
        transformed filters, on the GPU the GEMM kernel's relayout) for the next call
        with the same array; the caller must not change ``weight`` in place while the
        cache lives. A net keeps one (:class:`nets.engine.Net`). Used only when
        ``weight`` is already C-contiguous float32 or a device array (otherwise every
        call converts it into a new array).

    Returns
    -------
    y : ndarray of shape (C_out, H_out, W_out) or (N, C_out, H_out, W_out), float32
        ``H_out = (H + 2*pad_h - (dilation_h*(kh-1)+1)) // stride_h + 1``, same for W_out.
        NaN in ``x`` propagates to every output whose dilated window covers it (on the CPU,
        layers that run Winograd, :mod:`atrous.winograd`, also to the other outputs of its
        2x2 or 4x4 tile).

    Raises
    ------
    ValueError
        Wrong ndim, channel counts that do not fit ``groups``, non-positive
        stride or dilation, negative pad, an output smaller than 1x1, a bias
        or residual of the wrong shape.
    TypeError
        Complex, object or other non-real dtypes; stride, pad or dilation that is
        not an int or a pair of ints (:func:`int_pair`).

    References
    ----------
    L.-C. Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
    Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3.1, Eq. (1).
    """
    given_weight = weight
    x, weight = _prepare(x, "x"), _prepare(weight, "weight")
    if weight is not given_weight:  # converted: a new array every call, nothing to keep
        cache = None
    bias = None if bias is None else _prepare(bias, "bias")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must have shape (C_in, H, W) or (N, C_in, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"weight must have shape (C_out, C_in // groups, kh, kw), "
                         f"got shape {tuple(weight.shape)}")
    if not isinstance(groups, (numbers.Integral, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    groups = int(groups)
    stride = int_pair(stride, "stride", 1)
    pad = int_pair(pad, "pad", 0)
    dilation = int_pair(dilation, "dilation", 1)

    squeeze = x.ndim == 3
    n, c_in, h, w = (1,) + tuple(x.shape) if squeeze else tuple(x.shape)
    c_out, c_in_g, kh, kw = weight.shape
    if min(n, c_in, h, w) < 1:
        raise ValueError(f"x must have non-zero sizes, got shape {tuple(x.shape)}")
    if min(c_out, c_in_g, kh, kw) < 1:
        raise ValueError(f"weight must have non-zero sizes, got shape {tuple(weight.shape)}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide C_in={c_in} and C_out={c_out}")
    if c_in_g * groups != c_in:
        raise ValueError(f"weight must have C_in // groups = {c_in // groups} input channels "
                         f"(x has C_in={c_in}, groups={groups}), got weight shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},) (C_out), got shape {tuple(bias.shape)}")
    h_out, w_out = conv_output_size((h, w), (kh, kw), stride, pad, dilation)
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"output size must be at least 1x1, got {h_out}x{w_out}: input {h}x{w}, kernel {kh}x{kw}, "
            f"dilation {dilation}, effective kernel {dilation[0] * (kh - 1) + 1}x{dilation[1] * (kw - 1) + 1}, "
            f"pad {pad}, stride {stride}")

    out_shape = (c_out, h_out, w_out) if squeeze else (n, c_out, h_out, w_out)
    if residual is not None:
        residual = _prepare(residual, "residual")
        if tuple(residual.shape) != out_shape:
            raise ValueError(f"residual must have the output's shape {out_shape}, got shape "
                             f"{tuple(residual.shape)}")
    if relu_slope is not None:
        if isinstance(relu_slope, bool) or not isinstance(relu_slope, numbers.Real):
            raise TypeError(f"relu_slope must be a real number or None, got {relu_slope!r}")
        relu_slope = float(relu_slope)

    backend = resolve_backend(backend, x, weight, bias, residual)
    if backend == "cuda":
        from atrous import cuda as cuda_impl  # imported lazily: no numba.cuda without a GPU
        return cuda_impl.conv2d(x, weight, bias, stride, pad, dilation, groups, squeeze, residual, relu_slope,
                                cache)
    if any(is_device_array(a) for a in (x, weight, bias, residual)):
        raise ValueError(f"CUDA device arrays need backend 'cuda' or 'auto', got {backend!r}")

    x = x.reshape(n, c_in, h, w)
    if residual is not None:
        residual = residual.reshape(n, c_out, h_out, w_out)
    if backend == "numpy":
        from atrous.epilogue import epilogue_numpy
        from atrous.reference import conv2d_reference
        y = epilogue_numpy(conv2d_reference(x, weight, bias, stride, pad, dilation, groups), residual, relu_slope)
    else:
        from atrous.cpu import conv2d_cpu
        y = conv2d_cpu(x, weight, bias, stride, pad, dilation, groups, cache, residual, relu_slope)
    return y[0] if squeeze else y
