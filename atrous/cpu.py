"""Atrous convolution on the CPU: Numba kernels for the dilated indexing and the products, BLAS for the rest.

Like Caffe, the im2col-style strategies hand their matrix products to BLAS through NumPy
(``np.matmul``); every index computation -- which input pixel a dilated tap reads, which
rows fall in the zero padding -- is written by hand in ``@njit(parallel=True, cache=True)``
kernels. No BLAS call runs inside a ``prange`` loop: NumPy's BLAS and Numba's threads take
turns. Winograd's batches of small products run on a Numba kernel of their own
(:mod:`atrous.gemm`), faster than BLAS's; where Numba compiles for AVX-512, so do the 1x1
convolutions and the "shift" and "im2col" products (``atrous.config.PANEL_PRODUCTS``): as
fast as OpenBLAS's best kernels, and independent of which BLAS NumPy was built with.

Five strategies, chosen per layer by :func:`choose_strategy`:

``"gemm"`` (1x1 kernel, stride 1, no padding)
    The convolution *is* a matrix product: ``(C_out/g, C_in/g) @ (C_in/g, H*W)``, by
    :func:`atrous.gemm.matmul_cpu` on the weights' row panels (kept per net), which adds the
    bias and shortcut and rectifies before it stores (where ``atrous.config.PANEL_PRODUCTS`` is
    off, by default without AVX-512, or C_in/g over ``PANEL_MAX_DEPTH``: BLAS's product, then the
    epilogue's pass).

``"winograd"`` (3x3 kernel, stride 1, at least 32 input and output channels per group, few threads)
    Winograd's F(2x2, 3x3) or F(4x4, 3x3), whichever needs fewer products, on each of the
    rate's d*d phases (:mod:`atrous.winograd`): 16 products of ``(C_out/g, C_in/g) @ (C_in/g,
    tiles)`` for every 4 outputs, or 36 for every 16, instead of 36 multiply-adds per output
    pixel's tap set; the transforms are Numba kernels.

``"shift"`` (stride 1 and fewer output than input channels per group)
    For a block of output rows, one product of all stacked tap weights
    ``(kh*kw*C_out/g, C_in/g)`` with the band of *unshifted* input rows the
    block reads gives kh*kw "tap images"; then one ``prange`` kernel writes the
    output rows as the bias plus every tap image displaced by
    ``(dilation*i - pad, dilation*j - pad)``. The input is never copied, so
    this stays at BLAS speed even when C_out is small (ASPP's 2048 -> 21),
    where im2col is limited by memory bandwidth. The price: tap images are
    also computed for input pixels that only the padding-side taps would skip
    (at most 25% extra for ASPP's rate 24 on 65x65).

``"band"`` (stride 1, at least as many output as input channels per group, and it pays)
    im2col over the kernel's *columns* only: a ``prange`` kernel copies, for
    each channel c and kernel column j, the band of padded input rows that a
    block of output rows reads, shifted by ``dilation_w*j - pad_w``, into a
    ``(C_in/g * kw + 1, rows_in * W_out)`` matrix (the last row is ones).
    Stride 1 makes kernel row i read that same matrix ``dilation_h*i`` rows
    further down, i.e. at column offset ``dilation_h*i*W_out``, so the output
    rows are ``sum_i W_i @ band[:, offset_i : offset_i + rows*W_out]`` with
    ``W_i`` the ``(C_out/g, C_in/g * kw + 1)`` weights of kernel row i (the
    bias in W_0's last column meets the row of ones). This gathers about kh
    times less than im2col; the price is one copy of the weights regrouped by
    kernel row, and kh-1 additions of a product into the output block.

``"im2col"`` (everything else: stride > 1, or a layer where "band" does not pay)
    A ``prange`` kernel gathers the dilated patches of a block of output rows
    into a ``(C_in/g * kh * kw, rows * W_out)`` matrix, and one product with
    the ``(C_out/g, C_in/g * kh * kw)`` weights gives those output rows.

For stride 1 the rule compares the scratch matrices: "shift" writes kh*kw tap
images of C_out/g channels, "band" about kw copies of C_in/g channels, so
"shift" moves less memory when C_out/g < C_in/g (ASPP: 21 < 2048). Otherwise
"band" runs when its products have an inner dimension C_in/g*kw of at least
``atrous.config.BAND_MIN_INNER`` and the gathering it saves over im2col exceeds the weights
it regroups (VGG's conv1_2 .. conv5_3, LargeFOV's fc6 at 65x65), else im2col
(VGG's conv1_1, 3 -> 64; fc6 at 41x41); see :func:`choose_strategy`.

"shift" skips the taps that fall in the zero padding instead of multiplying
them by zero; the results agree with the reference except that a NaN or inf
*weight* then shows only where its tap reads the image (NaN in the input
propagates identically in every strategy).

"shift", "band" and "im2col" work on blocks of output rows whose scratch
buffers hold at most ``atrous.config.TILE_BYTES`` (for "shift" and "band", at least one
output row plus its halo of ``dilation_h*(kh-1)`` input rows), so memory stays
bounded at any image size (an unblocked im2col of VGG's conv1_2 at 513x513
would take 600 MB).
"""
import numba
import numpy as np
from numba import njit, prange

from atrous import config, gemm
from atrous.epilogue import epilogue_cpu
from atrous.winograd import choose_tile, conv_winograd, packed_filters, winograd_coverage

@njit(parallel=True, cache=True)
def parallel_probe(x):
    """Sum of a 1-D float32 array in a ``prange`` loop: starts Numba's threading layer."""
    total = 0.0
    for i in prange(x.shape[0]):
        total += x[i]
    return total


@njit(parallel=True, cache=True)
def _shift_add(taps, bias, out, n, c0, kh, kw, u_first, rows, y_first, h_in, w_in,
               pad_h, pad_w, dil_h, dil_w):
    """Write output rows ``u_first .. u_first+rows`` as bias plus the shifted tap images.

    taps : (kh*kw*C_out_g, >= rows_in*W) float32; row ``(i*kw + j)*C_out_g + o``,
        columns ``s*W .. (s+1)*W``, is tap (i, j) of output channel o applied to
        input row ``y_first + s``. Every input row the output rows read inside
        the image must be there.
    bias : (C_out,) float32 (zeros for no bias).
    out : (N, C_out, H_out, W_out) float32; written at image n, channels c0 .. c0 + C_out_g.
    h_in, w_in : the input's height and width (W above).
    """
    c_out_g = taps.shape[0] // (kh * kw)
    w_out = out.shape[3]
    for t in prange(c_out_g * rows):
        o = t // rows
        r = t - o * rows
        dst = out[n, c0 + o, u_first + r]
        for v in range(w_out):
            dst[v] = bias[c0 + o]
        for i in range(kh):
            y = u_first + r + dil_h * i - pad_h  # the input row tap row i reads
            if y < 0 or y >= h_in:
                continue  # zero padding: nothing to add
            s = (y - y_first) * w_in
            for j in range(kw):
                shift = dil_w * j - pad_w  # output column v reads input column v + shift
                v_lo = max(0, -shift)
                v_hi = min(w_out, w_in - shift)
                src = taps[(i * kw + j) * c_out_g + o]
                for v in range(v_lo, v_hi):
                    dst[v] += src[s + v + shift]


@njit(parallel=True, cache=True)
def _im2col_rows(x, cols, n, c0, c_in_g, kh, kw, u_first, rows, w_out,
                 stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """Gather the dilated patches of output rows ``u_first .. u_first+rows`` into ``cols``.

    x : (N, C_in, H, W) float32; the group's channels start at c0.
    cols : (C_in_g*kh*kw, >= rows*W_out) float32; row (c, i, j), column r*W_out + v
        holds ``x_pad[n, c0+c, stride_h*(u_first+r) + dil_h*i, stride_w*v + dil_w*j]``
        (zero where that falls in the padding).
    """
    h_in, w_in = x.shape[2], x.shape[3]
    for t in prange(c_in_g * kh * kw):
        c = t // (kh * kw)
        i = (t // kw) % kh
        j = t % kw
        dst = cols[t]
        for r in range(rows):
            y = stride_h * (u_first + r) + dil_h * i - pad_h
            base = r * w_out
            if y < 0 or y >= h_in:
                for v in range(w_out):
                    dst[base + v] = 0.0
                continue
            src = x[n, c0 + c, y]
            shift = dil_w * j - pad_w  # output column v reads input column stride_w*v + shift
            # Columns v_lo .. v_hi read inside the image; those outside read the padding.
            v_lo = min(w_out, max(0, (-shift + stride_w - 1) // stride_w))
            v_hi = max(v_lo, min(w_out, (w_in - 1 - shift) // stride_w + 1))
            for v in range(v_lo):
                dst[base + v] = 0.0
            for v in range(v_lo, v_hi):
                dst[base + v] = src[stride_w * v + shift]
            for v in range(v_hi, w_out):
                dst[base + v] = 0.0


@njit(parallel=True, cache=True)
def _band_rows(x, band, n, c0, c_in_g, kw, y_first, rows_in, w_out, pad_w, dil_w):
    """Copy input rows ``y_first .. y_first+rows_in``, shifted per kernel column, into ``band``.

    x : (N, C_in, H, W) float32; the group's channels start at c0.
    band : (>= C_in_g*kw, >= rows_in*W_out) float32; row c*kw + j, column s*W_out + v
        holds ``x[n, c0+c, y_first + s, v + dil_w*j - pad_w]``, zero where that row
        or column falls outside the image (the zero padding).
    """
    h_in, w_in = x.shape[2], x.shape[3]
    for t in prange(c_in_g * kw):
        c = t // kw
        j = t - c * kw
        dst = band[t]
        shift = dil_w * j - pad_w  # output column v reads input column v + shift
        # Columns v_lo .. v_hi read inside the image; those outside read the padding.
        v_lo = min(w_out, max(0, -shift))
        v_hi = max(v_lo, min(w_out, w_in - shift))
        for s in range(rows_in):
            y = y_first + s
            base = s * w_out
            if y < 0 or y >= h_in:
                for v in range(w_out):
                    dst[base + v] = 0.0
                continue
            src = x[n, c0 + c, y]
            for v in range(v_lo):
                dst[base + v] = 0.0
            for v in range(v_lo, v_hi):
                dst[base + v] = src[v + shift]
            for v in range(v_hi, w_out):
                dst[base + v] = 0.0


@njit(parallel=True, cache=True)
def _band_weights(weight, bias, w_rows):
    """Regroup the weights by kernel row, with the bias as an extra column of kernel row 0.

    weight : (C_out, C_in_g, kh, kw) float32
    bias : (C_out,) float32 (zeros for no bias)
    w_rows : (kh, C_out, C_in_g*kw + 1) float32; ``w_rows[i, o, c*kw + j] = weight[o, c, i, j]``,
        ``w_rows[0, o, -1] = bias[o]`` and ``w_rows[i, o, -1] = 0`` for i > 0.
    """
    c_out, c_in_g, kh, kw = weight.shape
    k = c_in_g * kw
    for o in prange(c_out):
        for i in range(kh):
            dst = w_rows[i, o]
            for c in range(c_in_g):
                for j in range(kw):
                    dst[c * kw + j] = weight[o, c, i, j]
            dst[k] = bias[o] if i == 0 else 0.0


def choose_strategy(c_in_g, c_out_g, kernel, stride, pad, dilation, out_size, threads=None):
    """Which CPU strategy runs a layer: ``"gemm"``, ``"winograd"``, ``"shift"``, ``"band"`` or
    ``"im2col"`` (see module doc).

    ``out_size`` is (H_out, W_out). "winograd" takes the 3x3, stride-1 layers with at least
    ``atrous.config.WINOGRAD_MIN_CHANNELS`` input and output channels per group (every VGG 3x3 layer
    but conv1_1, LargeFOV's fc6, every 3x3 convolution of ResNet), unless the 2x2 tiles
    overhang the rate's phases too much (:func:`atrous.winograd.winograd_coverage` above
    ``atrous.config.WINOGRAD_MAX_COVERAGE``: fc6 at 41x41, rate 24 at 65x65), and only on up to
    ``atrous.config.WINOGRAD_MAX_THREADS`` threads (``threads``: Numba's current count by default).
    "band" is chosen (stride 1, C_out/g >= C_in/g)
    when it pays: its products are long enough (``atrous.config.BAND_MIN_INNER``) and the
    gathering it saves per image, ``C_in/g*kw * W_out * (kh-1) * (H_out - dilation_h)``
    elements, exceeds the weights it regroups, ``C_out/g * C_in/g*kw * kh`` per
    group (LargeFOV's fc6 at 41x41 stays with im2col, at 65x65 takes "band").
    """
    (kh, kw), (h_out, w_out) = kernel, out_size
    if kernel == (1, 1) and stride == (1, 1) and pad == (0, 0):
        return "gemm"
    threads = numba.get_num_threads() if threads is None else threads
    if (kernel == (3, 3) and stride == (1, 1) and min(c_in_g, c_out_g) >= config.WINOGRAD_MIN_CHANNELS
            and winograd_coverage(out_size, pad, dilation) <= config.WINOGRAD_MAX_COVERAGE
            and threads <= config.WINOGRAD_MAX_THREADS):
        return "winograd"
    if stride == (1, 1) and c_out_g < c_in_g:
        return "shift"
    if (stride == (1, 1) and c_in_g * kw >= config.BAND_MIN_INNER
            and w_out * (kh - 1) * (h_out - dilation[0]) > kh * c_out_g):
        return "band"
    return "im2col"


def _rows_per_block(bytes_per_row):
    return max(1, config.TILE_BYTES // max(1, bytes_per_row))


def _conv_shift(x, w_taps, bias, out, n, g, c_in_g, c_out_g, kh, kw, pad, dilation):
    """Stride-1 convolution of image n, group g: per row block, one tap product and one shift-add.

    A block of output rows reads a band of input rows (the block plus a halo of
    ``dilation_h*(kh-1)`` rows). One product of all kh*kw stacked tap weights
    with that band gives every tap image at once: a single large BLAS call
    runs closer to peak than kh thin ones, and it hands the cores from BLAS's
    threads to Numba's only once per block.
    """
    h, w = x.shape[2], x.shape[3]
    h_out = out.shape[2]
    (ph, pw), (dh, dw) = pad, dilation
    ci0 = g * c_in_g
    halo = dh * (kh - 1)
    block = max(1, _rows_per_block(kh * kw * c_out_g * w * 4) - halo)
    taps = np.empty((kh * kw * c_out_g, min(h, block + halo) * w), np.float32)  # (kh*kw*C_out/g, rows_in*W)
    for r0 in range(0, h_out, block):
        rows = min(block, h_out - r0)
        # Input rows read inside the image by output rows r0 .. r0+rows-1, over all kernel rows.
        y_a = max(0, r0 - ph)
        y_b = min(h, r0 + rows - 1 - ph + halo + 1)
        if y_a >= y_b:
            out[n, g * c_out_g:(g + 1) * c_out_g, r0:r0 + rows] = bias[g * c_out_g:(g + 1) * c_out_g, None, None]
            continue  # every tap of these rows reads padding
        x_band = x[n, ci0:ci0 + c_in_g, y_a:y_b].reshape(c_in_g, -1)  # (C_in/g, rows_in*W)
        _product(w_taps[g], x_band, taps[:, :(y_b - y_a) * w])
        _shift_add(taps, bias, out, n, g * c_out_g, kh, kw, r0, rows, y_a, h, w, ph, pw, dh, dw)


def _conv_band(x, w_rows, out, n, g, c_in_g, c_out_g, kh, kw, pad, dilation):
    """Stride-1 convolution of image n, group g: per row block, one band and kh products.

    w_rows : (kh, C_out, C_in/g*kw + 1) float32 from :func:`_band_weights`.
    """
    h_out, w_out = out.shape[2], out.shape[3]
    (ph, pw), (dh, dw) = pad, dilation
    k = c_in_g * kw + 1  # the last row of the band is ones, for the bias
    halo = dh * (kh - 1)
    # Scratch per block: the band, k x (rows + halo) x W_out, and one product, C_out/g x rows x W_out.
    block = max(1, (config.TILE_BYTES // (4 * w_out) - k * halo) // (k + c_out_g))
    block = min(block, h_out)
    band = np.empty((k, (block + halo) * w_out), np.float32)  # (C_in/g*kw + 1, rows_in*W_out)
    band[k - 1] = 1.0
    tmp = np.empty(c_out_g * block * w_out, np.float32)
    o0 = g * c_out_g
    for r0 in range(0, h_out, block):
        rows = min(block, h_out - r0)
        m = rows * w_out
        # Output row r0 + r, kernel row i reads input row r0 + r + dh*i - ph: band row r + dh*i.
        _band_rows(x, band, n, g * c_in_g, c_in_g, kw, r0 - ph, rows + halo, w_out, pw, dw)
        dst = out[n, o0:o0 + c_out_g, r0:r0 + rows].reshape(c_out_g, m)  # (C_out/g, rows*W_out)
        np.matmul(w_rows[0, o0:o0 + c_out_g], band[:, :m], out=dst)
        # Contiguous even for a short last block: NumPy adds two differently strided arrays through buffers.
        product = tmp[:c_out_g * m].reshape(c_out_g, m)  # (C_out/g, rows*W_out)
        for i in range(1, kh):
            offset = dh * i * w_out
            np.matmul(w_rows[i, o0:o0 + c_out_g], band[:, offset:offset + m], out=product)
            np.add(dst, product, out=dst)


def _conv_im2col(x, w_mat, out, n, g, c_in_g, c_out_g, kh, kw, stride, pad, dilation):
    """Any-stride convolution of image n, group g by row-blocked im2col and one product per block."""
    h_out, w_out = out.shape[2], out.shape[3]
    k = c_in_g * kh * kw
    block = _rows_per_block(k * w_out * 4)
    cols = np.empty((k, min(block, h_out) * w_out), np.float32)
    for r0 in range(0, h_out, block):
        rows = min(block, h_out - r0)
        _im2col_rows(x, cols, n, g * c_in_g, c_in_g, kh, kw, r0, rows, w_out,
                     stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1])
        dst = out[n, g * c_out_g:(g + 1) * c_out_g, r0:r0 + rows].reshape(c_out_g, rows * w_out)
        _product(w_mat[g], cols[:, :rows * w_out], dst)  # (C_out/g, rows*W_out)


def _shift_taps(weight, groups):
    """All taps of group g as one matrix: row (i, j, o), column c holds weight[o, c, i, j]."""
    c_out, c_in_g, kh, kw = weight.shape
    c_out_g = c_out // groups
    return np.ascontiguousarray(
        weight.reshape(groups, c_out_g, c_in_g, kh, kw).transpose(0, 3, 4, 1, 2)
    ).reshape(groups, kh * kw * c_out_g, c_in_g)  # (groups, kh*kw*C_out/g, C_in/g)


def _derived(cache, weight, form, make):
    """``make(weight)``, kept in the caller's :class:`atrous.WeightCache` when there is one."""
    return make(weight) if cache is None else cache.get(weight, form, make)


def _use_panels(depth):
    """Whether a strategy's products of inner dimension ``depth`` run on :mod:`atrous.gemm`'s kernel."""
    return gemm.panel_products() and depth <= config.PANEL_MAX_DEPTH


def _panels(cache, weight, form, make):
    """The ``(groups, C_out', K)`` matrices ``make(weight)`` as row panels for :func:`atrous.gemm.matmul_cpu`:
    ``(groups, ceil(C_out' / PANEL_ROWS), K, PANEL_ROWS)``, kept in the cache."""
    return _derived(cache, weight, form + ("panels",), lambda w: gemm.pack_rows(make(w)))


def _product(weights, data, out):
    """``out = W @ data`` for one group's W: row panels (3-D, the Numba kernel) or a matrix (BLAS)."""
    if weights.ndim == 3:
        gemm.matmul_cpu(weights, data, out)
    else:
        np.matmul(weights, data, out=out)


def conv2d_cpu(x, weight, bias, stride, pad, dilation, groups, cache=None, residual=None, relu_slope=None):
    """Atrous convolution on the CPU; the public :func:`atrous.conv2d` validates and calls this.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32, C-contiguous
    weight : ndarray of shape (C_out, C_in // groups, kh, kw), float32, C-contiguous
    bias : ndarray of shape (C_out,), float32, or None
    stride, pad, dilation : tuple of two ints
    groups : int
    cache : atrous.WeightCache, optional
        Keeps the weights' derived forms (Winograd's filters, the shift strategy's
        tap matrix) for the next call with the same weight array.
    residual : ndarray of shape (N, C_out, H_out, W_out), float32, C-contiguous, optional
        Added to the output (after the bias).
    relu_slope : float, optional
        Caffe's ReLU with this negative slope, last (:mod:`atrous.epilogue`).

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out), float32
    """
    n_img, _, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    c_out_g = c_out // groups
    h_out = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    w_out = (w + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    strategy = choose_strategy(c_in_g, c_out_g, (kh, kw), stride, pad, dilation, (h_out, w_out))

    out = np.empty((n_img, c_out, h_out, w_out), np.float32)
    bias_or_zero = np.zeros(c_out, np.float32) if bias is None else bias
    bias_added = True  # every strategy but the products below writes bias + sums
    if strategy == "winograd":
        m = choose_tile((h_out, w_out), dilation)  # F(2x2, 3x3) or F(4x4, 3x3)
        filters = _derived(cache, weight, ("winograd", m, groups), lambda w: packed_filters(w, m, groups))
        # The ReLU goes into the output transform unless a residual must be added before it.
        conv_winograd(x, weight, bias_or_zero, out, pad, dilation, groups, filters, m,
                      relu_slope if residual is None else None)
        if residual is None:
            relu_slope = None
    elif strategy == "shift":
        form = _panels if _use_panels(c_in_g) else _derived
        w_taps = form(cache, weight, ("shift", groups), lambda w: _shift_taps(w, groups))
        for n in range(n_img):
            for g in range(groups):
                _conv_shift(x, w_taps, bias_or_zero, out, n, g, c_in_g, c_out_g, kh, kw, pad, dilation)
    elif strategy == "band":
        w_rows = np.empty((kh, c_out, c_in_g * kw + 1), np.float32)  # (kh, C_out, C_in/g*kw + 1)
        _band_weights(weight, bias_or_zero, w_rows)
        for n in range(n_img):
            for g in range(groups):
                _conv_band(x, w_rows, out, n, g, c_in_g, c_out_g, kh, kw, pad, dilation)
    elif strategy == "gemm" and _use_panels(c_in_g):
        panels = _panels(cache, weight, ("gemm", groups), lambda w: w.reshape(groups, c_out_g, c_in_g))
        for n in range(n_img):
            for g in range(groups):
                channels = slice(g * c_out_g, (g + 1) * c_out_g)
                x_g = x[n, g * c_in_g:(g + 1) * c_in_g].reshape(c_in_g, h * w)  # (C_in/g, H*W)
                gemm.matmul_cpu(panels[g], x_g, out[n, channels].reshape(c_out_g, h * w), bias_or_zero[channels],
                                None if residual is None else residual[n, channels].reshape(c_out_g, h * w),
                                relu_slope)
        residual = relu_slope = None  # done as the sums were stored
    else:
        w_mat = weight.reshape(groups, c_out_g, c_in_g * kh * kw)  # (groups, C_out/g, C_in/g*kh*kw)
        if strategy == "im2col" and _use_panels(c_in_g * kh * kw):
            w_mat = _panels(cache, weight, ("im2col", groups), lambda w: w.reshape(groups, c_out_g, c_in_g * kh * kw))
        for n in range(n_img):
            for g in range(groups):
                if strategy == "gemm":
                    x_g = x[n, g * c_in_g:(g + 1) * c_in_g].reshape(c_in_g, h * w)        # (C_in/g, H*W)
                    dst = out[n, g * c_out_g:(g + 1) * c_out_g].reshape(c_out_g, h * w)  # (C_out/g, H*W)
                    np.matmul(w_mat[g], x_g, out=dst)
                else:
                    _conv_im2col(x, w_mat, out, n, g, c_in_g, c_out_g, kh, kw, stride, pad, dilation)
        bias_added = False
    # bias (for the products), residual and ReLU in one parallel pass over the output
    return epilogue_cpu(out, None if bias_added else bias, residual, relu_slope)
