"""Output size, stride and field of view through a stack of layers.

A network seen from one image axis is a chain of sliding windows. For every
layer this module follows four numbers, using Caffe's rules:

``size``
    The feature map's length along the axis. A convolution rounds down, with
    the effective kernel ``k_eff = dilation * (k - 1) + 1``; a Caffe pooling
    layer rounds *up*, then drops a last window that would start in the padding
    (:func:`pool_output_size`).
``jump``
    The distance in input pixels between two neighbouring outputs: the product
    of the strides so far (DeepLab's "output stride", 8). This is not the
    paper's "input stride": in Table 2 of the ICLR paper that word names the
    *rate* of fc6, the step at which the fc6 kernel samples *its* input (the
    pool5 map), i.e. the dilation. A rate-12 fc6 on a stride-8 map takes taps
    12 * 8 = 96 image pixels apart while its output keeps stride 8.
``rf``
    The theoretical receptive field: how many input pixels can influence one
    output. A window of ``k_eff`` taps, each ``jump_in`` input pixels apart,
    widens it by ``(k_eff - 1) * jump_in``.
``offset``
    Where the centre of output 0's receptive field lies in input pixels. With
    DeepLab's paddings it stays 0, so score pixel ``i`` sits on image pixel
    ``jump * i``: that is what lets an x8 align-corners upsampling line up.

Layers that do not move windows (ReLU, dropout, batch norm, element-wise sums)
leave all four unchanged and are simply left out of the stack. Where branches
are summed, the receptive field of the sum is the largest of its inputs', so
the stack to follow is the longest branch.

References
----------
.. [1] L.-C. Chen et al., "Semantic image segmentation with deep convolutional
   nets and fully connected CRFs", ICLR 2015, Sec. 3.1 and Table 2.
.. [2] L.-C. Chen et al., "DeepLab: semantic image segmentation with deep
   convolutional nets, atrous convolution, and fully connected CRFs", TPAMI
   2018, Sec. 3.1 (Eq. 1) and Sec. 3.2 (ASPP).
"""
from dataclasses import dataclass

from atrous.conv import conv_output_size

KINDS = ("conv", "pool")


@dataclass(frozen=True)
class Layer:
    """One sliding-window layer, described along one image axis.

    Parameters
    ----------
    name : str
    kind : {"conv", "pool"}
    kernel : int
        Kernel size ``k`` (square kernels: the same along both axes).
    stride, pad, dilation : int
        Caffe's ``stride``, ``pad`` and ``dilation`` (v1 calls it ``hole``).
        Pooling has no dilation in Caffe: it must stay 1.
    in_channels : int or None
        Checked against the channels arriving from the previous layer when
        given; ``None`` takes them as they come.
    out_channels : int or None
        Required for a convolution; a pooling layer keeps its input channels.
    bias : bool
        Whether a convolution has a bias (Caffe's ``bias_term``).
    groups : int
        Caffe's ``group``: each output sees ``in_channels // groups`` inputs.
    ceil_mode : bool or None
        ``None`` follows Caffe: convolutions round down, pooling rounds up.
        Pooling may ask for ``False`` (round down, as most other frameworks);
        a convolution cannot round up.
    """

    name: str
    kind: str
    kernel: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    in_channels: int | None = None
    out_channels: int | None = None
    bias: bool = True
    groups: int = 1
    ceil_mode: bool | None = None


@dataclass(frozen=True)
class Geometry:
    """What one layer does to sizes, strides and the field of view.

    Attributes
    ----------
    name, kind : str
    kernel, dilation, k_eff, stride, pad : int
        The layer's own window; ``k_eff = dilation * (kernel - 1) + 1``.
    size_in, size_out : int
        Feature-map length before and after the layer.
    jump : int
        Cumulative stride of the output in input pixels.
    rf : int
        Theoretical receptive field of one output, in input pixels.
    offset : float
        Centre of output 0's receptive field, in input pixel coordinates.
    in_channels, out_channels, params : int
        Channels and the number of learned values (weights plus biases).
    """

    name: str
    kind: str
    kernel: int
    dilation: int
    k_eff: int
    stride: int
    pad: int
    size_in: int
    size_out: int
    jump: int
    rf: int
    offset: float
    in_channels: int
    out_channels: int
    params: int


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def _check_pad(pad, what):
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"{what} must be a non-negative int, got {pad!r}")
    return pad


def effective_kernel(kernel, dilation=1):
    """Span of a dilated kernel: ``dilation * (kernel - 1) + 1`` input pixels.

    A 3-tap kernel at rate 12 reaches 25 pixels while keeping 3 weights
    (TPAMI 2018, Sec. 3.1).
    """
    _positive_int(kernel, "kernel")
    _positive_int(dilation, "dilation")
    return dilation * (kernel - 1) + 1


def pool_output_size(size, kernel, stride=1, pad=0, ceil_mode=True):
    """Caffe's pooling output length.

    ``ceil((size + 2*pad - kernel) / stride) + 1``, then, when ``pad > 0`` and
    the last window would start in the right-hand padding (at image pixel
    ``size`` or later, so that it covers no pixel at all), one less. With
    ``ceil_mode=False`` it rounds down like a convolution. Caffe requires
    ``pad < kernel``.

    Examples
    --------
    >>> pool_output_size(513, 3, 2, 1)     # VGG pool1 in DeepLab
    257
    >>> pool_output_size(5, 2, 2, 1)       # the clip rule removes a window
    3
    """
    _positive_int(size, "size")
    _positive_int(kernel, "kernel")
    _positive_int(stride, "stride")
    _check_pad(pad, "pad")
    if pad >= kernel:
        raise ValueError(f"pooling needs pad < kernel (Caffe), got pad {pad} and kernel {kernel}")
    span = size + 2 * pad - kernel
    if span < 0:
        raise ValueError(f"the padded input ({size} + 2*{pad}) is shorter than the pooling "
                         f"kernel {kernel}: no output")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1  # integer ceil division
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def trace(layers, size, in_channels=None):
    """Follow sizes, strides, receptive fields and parameters through ``layers``.

    Parameters
    ----------
    layers : sequence of Layer
        The sliding-window layers in the order the data flows.
    size : int
        Input length along the axis (513 for DeepLab's test nets).
    in_channels : int or None
        Channels of the input (3 for an image); ``None`` takes them from the
        first layer's ``in_channels``.

    Returns
    -------
    list of Geometry
        One row per layer, the input's own geometry being jump 1, rf 1,
        offset 0.

    Raises
    ------
    ValueError
        For an unknown kind, invalid window parameters, an output shorter than
        1, missing or inconsistent channel counts.
    TypeError
        For an entry that is not a :class:`Layer`.

    References
    ----------
    Receptive field recursion ``rf_out = rf_in + (k_eff - 1) * jump_in``,
    ``jump_out = jump_in * stride``; ICLR 2015 Table 2 for DeepLab's numbers.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("expected at least one layer, got an empty stack")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise TypeError(f"expected atrous.fov.Layer records, got {type(layer).__name__}")
    channels = layers[0].in_channels if in_channels is None else in_channels
    if channels is None:
        raise ValueError("input channels unknown: pass in_channels or set it on the first layer")
    _positive_int(channels, "in_channels")
    _positive_int(size, "size")
    jump, rf, offset = 1, 1, 0.0
    rows = []
    for layer in layers:
        k_eff, size_out, out_channels, params = _apply(layer, size, channels)
        # Output 0's window starts `pad` pixels before input 0 of this layer; its
        # centre is (k_eff - 1) / 2 taps further, each tap `jump` image pixels.
        offset += ((k_eff - 1) / 2 - layer.pad) * jump
        rf += (k_eff - 1) * jump
        rows.append(Geometry(layer.name, layer.kind, layer.kernel, layer.dilation, k_eff,
                             layer.stride, layer.pad, size, size_out, jump * layer.stride, rf,
                             offset, channels, out_channels, params))
        jump *= layer.stride
        size, channels = size_out, out_channels
    return rows


def _apply(layer, size, channels):
    """One layer on a ``size``-long, ``channels``-deep input: (k_eff, size_out, out_channels, params)."""
    where = f"layer {layer.name!r}"
    if layer.kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {layer.kind!r}")
    if layer.in_channels is not None and layer.in_channels != channels:
        raise ValueError(f"{where} expects {layer.in_channels} input channels, "
                         f"the previous layer gives {channels}")
    _positive_int(layer.stride, f"{where} stride")
    _check_pad(layer.pad, f"{where} pad")
    k_eff = effective_kernel(layer.kernel, layer.dilation)
    if layer.kind == "pool":
        if layer.dilation != 1:
            raise ValueError(f"{where}: Caffe pooling has no dilation, got {layer.dilation}")
        if layer.out_channels is not None and layer.out_channels != channels:
            raise ValueError(f"{where}: pooling keeps {channels} channels, "
                             f"got out_channels={layer.out_channels}")
        ceil_mode = True if layer.ceil_mode is None else layer.ceil_mode
        size_out = pool_output_size(size, layer.kernel, layer.stride, layer.pad, ceil_mode)
        return k_eff, size_out, channels, 0
    if layer.ceil_mode:
        raise ValueError(f"{where}: a Caffe convolution always rounds down, got ceil_mode=True")
    out_channels = _positive_int(layer.out_channels, f"{where} out_channels")
    groups = _positive_int(layer.groups, f"{where} groups")
    if channels % groups or out_channels % groups:
        raise ValueError(f"{where}: groups={groups} must divide the input channels {channels} "
                         f"and the output channels {out_channels}")
    size_out = conv_output_size(size, layer.kernel, layer.stride, layer.pad, layer.dilation)[0]
    if size_out < 1:
        raise ValueError(f"{where}: the padded input ({size} + 2*{layer.pad}) is shorter than the "
                         f"effective kernel {k_eff} (kernel {layer.kernel}, dilation "
                         f"{layer.dilation}): no output")
    params = out_channels * (channels // groups) * layer.kernel ** 2
    params += out_channels if layer.bias else 0
    return k_eff, size_out, out_channels, params


def format_table(rows):
    """A plain-text table of :func:`trace`'s rows, one line per layer, for reading."""
    width = max([len("layer")] + [len(r.name) for r in rows]) + 2
    header = (f"{'layer':<{width}}{'kind':<6}{'k':>3}{'rate':>6}{'k_eff':>7}{'stride':>8}{'pad':>5}"
              f"{'size':>12}{'jump':>6}{'rf':>6}{'channels':>12}{'params':>12}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.name:<{width}}{r.kind:<6}{r.kernel:>3}{r.dilation:>6}{r.k_eff:>7}{r.stride:>8}"
                     f"{r.pad:>5}{f'{r.size_in}->{r.size_out}':>12}{r.jump:>6}{r.rf:>6}"
                     f"{f'{r.in_channels}->{r.out_channels}':>12}{r.params:>12,}")
    lines.append(f"{'total parameters':<{len(header) - 12}}{sum(r.params for r in rows):>12,}")
    return "\n".join(lines)
