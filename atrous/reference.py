"""Atrous (dilated) convolution in plain NumPy: slow, obvious, the ground truth.

The definition (DeepLab v2, Eq. 1) in one dimension is

    y[i] = sum_k x[i + rate * k] * w[k],

a cross-correlation whose filter taps sit ``rate`` samples apart. In two
dimensions, with C_in input channels, zero padding ``pad`` and stride ``s``,
each output channel o is

    y[o, u, v] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[c, s*u + rate*i, s*v + rate*j].

The reference evaluates this tap by tap: for a fixed tap (i, j) the input
pixels it touches form a strided slice of the zero-padded input, and that
slice, seen as a (C_in, H_out * W_out) matrix, is multiplied by the tap's
(C_out, C_in) weight matrix. Summing the kh * kw products gives the output.
Everything is accumulated in float64 so that the reference is more accurate
than the kernels it checks.

References
----------
L.-C. Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional
Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3.1, Eq. (1).
"""
import numpy as np


def atrous_conv1d(x, w, rate=1):
    """The paper's 1-D atrous convolution ``y[i] = sum_k x[i + rate*k] w[k]`` ("valid" part).

    Parameters
    ----------
    x : ndarray of shape (L,)
        Signal.
    w : ndarray of shape (K,)
        Filter taps.
    rate : int
        Spacing between taps (1 = ordinary cross-correlation).

    Returns
    -------
    y : ndarray of shape (L - rate*(K-1),), float64
        Only the positions whose whole dilated window lies inside ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    span = rate * (len(w) - 1) + 1  # the effective (dilated) filter length
    n_out = len(x) - span + 1
    if n_out < 1:
        raise ValueError(f"signal of length {len(x)} is shorter than the dilated filter span {span}")
    y = np.zeros(n_out)
    for k in range(len(w)):
        y += w[k] * x[rate * k: rate * k + n_out]
    return y


def conv2d_reference(x, weight, bias, stride, pad, dilation, groups):
    """Dilated 2-D cross-correlation, one tap at a time (Caffe's Convolution semantics).

    The public :func:`atrous.conv2d` validates its arguments and calls this
    with ``backend="numpy"``.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32
    weight : ndarray of shape (C_out, C_in // groups, kh, kw), float32
    bias : ndarray of shape (C_out,), float32, or None
    stride, pad, dilation : tuple of two ints
        (rows, columns).
    groups : int
        Input and output channels are split into ``groups`` equal blocks;
        output block g sees only input block g.

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out), float32
        With ``H_out = (H + 2*pad_h - (dilation_h*(kh-1)+1)) // stride_h + 1``
        and likewise for W_out.
    """
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    c_out_g = c_out // groups
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    h_out = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    w_out = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1

    x_pad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, c_out, h_out, w_out))
    for g in range(groups):
        ci = slice(g * c_in_g, (g + 1) * c_in_g)
        co = slice(g * c_out_g, (g + 1) * c_out_g)
        for i in range(kh):
            for j in range(kw):
                # The pixels tap (i, j) reads: rows dh*i, dh*i + sh, ..., one per output row.
                rows = slice(dh * i, dh * i + sh * (h_out - 1) + 1, sh)
                cols = slice(dw * j, dw * j + sw * (w_out - 1) + 1, sw)
                patch = x_pad[:, ci, rows, cols].reshape(n, c_in_g, h_out * w_out)  # (N, C_in/g, H_out*W_out)
                w_tap = weight[co, :, i, j].astype(np.float64)                       # (C_out/g, C_in/g)
                y[:, co] += (w_tap @ patch).reshape(n, c_out_g, h_out, w_out)
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return y.astype(np.float32)
