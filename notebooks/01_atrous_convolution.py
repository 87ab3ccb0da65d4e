# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Atrous convolution
#
# **Why.** A classification network such as VGG-16 shrinks its input 32 times (five poolings of
# stride 2). That is fine for one label per image, but a segmentation needs a label per pixel.
# Removing the last strides gives denser feature maps, but then every later filter sees a 2x or
# 4x *smaller* part of the image than it was trained on. DeepLab keeps both the resolution and
# the field of view by spacing the filter taps apart: **atrous** ("with holes") convolution, the
# *algorithme à trous* of wavelet analysis.
#
# **The definition** (DeepLab v2, TPAMI 2018, §3.1, **Eq. (1)**; the v1 paper, ICLR 2015, §3.1,
# calls it the "hole algorithm"): for a 1-D signal $x$ and a filter $w$ of length $K$,
#
# $$ y[i] = \sum_{k=1}^{K} x[i + r \cdot k]\, w[k] $$
#
# The **rate** $r$ is the stride with which the input is sampled. $r = 1$ is the ordinary
# convolution (strictly a cross-correlation, as in Caffe). A rate-$r$ filter is the same as a filter
# with $r-1$ zeros inserted between consecutive taps. It reaches
# $k_\mathrm{eff} = r(K-1)+1$ samples with the same $K$ weights and the same cost.
#
# This notebook runs the definition on a tiny example, then in 2-D on a photograph, then shows why
# DeepLab uses it: *dense* feature extraction instead of *sparse extraction then upsampling*.
# Everything is computed with the library's `atrous.conv2d`. Its `backend="numpy"` reference is
# checked against the parallel Numba kernel (`"cpu"`) and, where a GPU exists, CUDA.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cbook import get_sample_data
from PIL import Image

import atrous
from atrous import winograd
from atrous.backend import cuda_usable
from atrous.cpu import choose_strategy
from atrous.reference import atrous_conv1d
from nets.layers import interp

plt.rcParams.update({"figure.dpi": 72, "image.cmap": "gray", "image.interpolation": "nearest",
                     "axes.titlesize": 10})
# 32-level colour maps for the response maps: the eye sees no difference, the saved PNGs are smaller
GRAY32, RDBU32 = plt.get_cmap("gray", 32), plt.get_cmap("RdBu_r", 32)

# %% [markdown]
# ## 1 · A hand-checkable example in 1-D
#
# Take the signal $x = (1, 2, \dots, 9)$ and the filter $w = (1, 10, 100)$. Each output is then a
# number whose digits are the three samples it read, last one first. At rate 1,
# $y[0] = 1\cdot 1 + 2 \cdot 10 + 3 \cdot 100 = 321$ reads samples 0, 1, 2. At rate 2,
# $y[0] = 1 + 3\cdot 10 + 5 \cdot 100 = 531$ reads samples 0, 2, 4: one sample is skipped
# between taps.
#
# The loop below is a deliberately naive teaching version of Eq. (1), kept to the positions where
# the whole dilated filter lies inside the signal ("valid"). It is compared with the library's
# reference and with `atrous.conv2d`. For `conv2d` the signal is a 1-pixel-high image and the
# filter a 1x3 kernel with dilation `(1, r)`.

# %%
def atrous_1d_naive(x, w, rate):
    """Eq. (1) written out: y[i] = sum_k x[i + rate*k] w[k], valid positions only."""
    n_out = len(x) - rate * (len(w) - 1)
    return np.array([sum(x[i + rate * k] * w[k] for k in range(len(w))) for i in range(n_out)])


x = np.arange(1, 10, dtype=np.float32)
w = np.array([1, 10, 100], dtype=np.float32)
for rate in (1, 2, 3):
    y = atrous_1d_naive(x, w, rate)
    y_lib = atrous.conv2d(x[None, None, :], w[None, None, None, :], dilation=(1, rate),
                          backend="numpy")[0, 0]
    print(f"rate {rate}: k_eff = {rate * (len(w) - 1) + 1}, y = {y.astype(int).tolist()}")
    np.testing.assert_array_equal(y, atrous_conv1d(x, w, rate))
    np.testing.assert_array_equal(y, y_lib)

assert atrous_1d_naive(x, w, 1)[0] == 321 and atrous_1d_naive(x, w, 2)[0] == 531

# %% [markdown]
# ## 2 · Rate 1 against rate 2 on a signal
#
# The same 3-tap smoothing filter $w = (\tfrac14, \tfrac12, \tfrac14)$ at rate 1 and at rate 2.
# The dots mark the samples read by one output. At rate 2 the filter spans 5 samples instead of
# 3, so it smooths over a wider window. The fast ripple in this signal has a period of 4 samples,
# and rate 2 puts taps 2 samples (half a period) apart, so the filter cancels the ripple
# completely. Rate 1 only halves it. Padding by `rate` zeros on each side keeps the output as
# long as the input.

# %%
n = np.arange(64)
signal = (np.sin(2 * np.pi * n / 32) + 0.5 * np.cos(np.pi * n / 2)).astype(np.float32)
w_smooth = np.array([0.25, 0.5, 0.25], dtype=np.float32)
outputs = {rate: atrous.conv2d(signal[None, None, :], w_smooth[None, None, None, :],
                               pad=(0, rate), dilation=(1, rate), backend="numpy")[0, 0]
           for rate in (1, 2)}

fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
i0 = 20
for ax, (rate, y) in zip(axes, outputs.items()):
    ax.plot(n, signal, ".-", color="0.7", label="input x")
    ax.plot(n, y, "-", color="C0", lw=2, label=f"output y, rate {rate}")
    taps = i0 + rate * np.array([-1, 0, 1])  # centred window, because pad = rate
    ax.plot(taps, signal[taps], "o", ms=9, mfc="none", mec="C3", mew=2,
            label=f"samples read by y[{i0}]")
    ax.set_title(f"rate {rate}: 3 weights span {2 * rate + 1} samples")
    ax.set_ylim(-1.8, 2.8)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
plt.tight_layout()
plt.show()

# the ripple (period 4) vanishes at rate 2 and is halved at rate 1 (away from the padded borders)
slow = np.sin(2 * np.pi * n / 32)
inner = slice(4, 60)
print("ripple left, rate 1:", np.abs(outputs[1] - slow)[inner].max().round(3),
      " rate 2:", np.abs(outputs[2] - slow)[inner].max().round(3))
assert np.abs(outputs[2] - slow)[inner].max() < 0.05
assert np.abs(outputs[1] - slow)[inner].max() > 0.2

# %% [markdown]
# ## 3 · In two dimensions, on a photograph
#
# The photograph is `grace_hopper.jpg`, which ships with matplotlib as sample data
# (an official U.S. Navy portrait of Grace M. Hopper; as a work of the U.S. federal government
# it is in the public domain). We use it in gray and small, 149x127, so that every cell runs in a moment.
# (Odd sizes $2m+1$ are on purpose: see section 5.)
#
# In 2-D a $3\times3$ kernel at rate $r$ reads a $3\times3$ grid of pixels $r$ apart. Below, a
# Laplacian (an edge detector) runs at rates 1, 2, 4 and 8. The larger the rate, the coarser the
# structures it responds to. With `pad = rate` the output keeps the input's size.
#
# A check of the "zeros inserted" view: rate $r$ equals an ordinary convolution with the
# $(2r+1)\times(2r+1)$ kernel that has $r-1$ zeros between the taps.

# %%
path = get_sample_data("grace_hopper.jpg", asfileobj=False)
photo = Image.open(path).convert("L").resize((127, 149), Image.Resampling.LANCZOS)
image = np.asarray(photo, dtype=np.float32) / 255.0  # (H, W) = (149, 127)
print("image", image.shape, image.dtype)

laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)
responses = {r: atrous.conv2d(image[None], laplacian[None, None], pad=r, dilation=r,
                              backend="numpy")[0] for r in (1, 2, 4, 8)}


def dilate_kernel(kernel, rate):
    """Insert rate-1 zeros between the taps: (k, k) -> (rate*(k-1)+1, rate*(k-1)+1)."""
    k = kernel.shape[0]
    big = np.zeros((rate * (k - 1) + 1,) * 2, kernel.dtype)
    big[::rate, ::rate] = kernel
    return big


for r, y in responses.items():
    assert y.shape == image.shape
    y_zeros = atrous.conv2d(image[None], dilate_kernel(laplacian, r)[None, None], pad=r,
                            backend="numpy")[0]
    np.testing.assert_allclose(y, y_zeros, atol=1e-6)

fig, axes = plt.subplots(1, 5, figsize=(10, 2.8))
axes[0].imshow(image)
axes[0].set_title("input 149x127")
for ax, (r, y) in zip(axes[1:], responses.items()):
    ax.imshow(np.abs(y), cmap=GRAY32, vmin=0, vmax=np.percentile(np.abs(y), 99))
    ax.set_title(f"|Laplacian|, rate {r}")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4 · Output size and padding
#
# Caffe's rule (and `atrous.conv2d`'s) for an input of size $H$, kernel $k$, rate $r$, padding $p$
# and stride $s$ rounds down:
#
# $$ H_\mathrm{out} = \left\lfloor \frac{H + 2p - (r(k-1)+1)}{s} \right\rfloor + 1 $$
#
# Without padding, every rate eats $r(k-1)$ pixels. With $p = r$ a $3\times3$ kernel keeps the
# size, which is how DeepLab writes its atrous layers (`pad: 2, hole: 2` in conv5, `pad: 12,
# hole: 12` in fc6). A rate larger than the input is legal: the taps then land in the zero padding
# and only the centre tap sees the image.

# %%
H = 65
print(f"{'rate':>4} {'k_eff':>6} {'H_out, pad 0':>13} {'H_out, pad = rate':>18}")
for r in (1, 2, 4, 12, 24, 70):
    k_eff = r * 2 + 1
    no_pad = (H - k_eff) + 1
    print(f"{r:>4} {k_eff:>6} {no_pad if no_pad > 0 else 'none':>13} {H + 2 * r - k_eff + 1:>18}")

# the library agrees with the formula, including a rate larger than the input
x65 = np.random.default_rng(0).standard_normal((1, H, H)).astype(np.float32)
w3 = np.ones((1, 1, 3, 3), np.float32)
for r in (1, 2, 4, 12, 24, 70):
    assert atrous.conv2d(x65, w3, pad=r, dilation=r, backend="numpy").shape == (1, H, H)
    if 2 * r + 1 <= H:
        assert atrous.conv2d(x65, w3, dilation=r, backend="numpy").shape[1] == H - 2 * r
    assert atrous.conv_output_size(H, 3, 2, r, r)[0] == (H + 2 * r - (2 * r + 1)) // 2 + 1

# rate 70 > input 65 with pad 70: only the centre tap sees the image, the kernel acts as 1x1
y70 = atrous.conv2d(x65, w3, pad=70, dilation=70, backend="numpy")
np.testing.assert_allclose(y70, x65, atol=1e-6)

# %% [markdown]
# ## 5 · Sparse extraction then upsampling, or dense extraction with atrous convolution
#
# TPAMI 2018, **Fig. 3**, compares two ways of getting a feature map at full resolution from a
# network that has downsampled by 2:
#
# * **sparse**: downsample the image by 2, apply the filter, upsample the responses by 2
#   (bilinear). Only a quarter of the positions are really computed; the rest is interpolated.
#   The upsampling here is DeepLab's own: Caffe's `Interp` layer (`zoom_factor: 2`, align corners),
#   from `nets.layers`. It maps $m$ samples to $2m-1$, so the 75x64 map returns to 149x127. This
#   is why DeepLab feeds $513 = 8 \cdot 64 + 1$ pixels: every stage lands on an odd size.
# * **dense**: apply the same filter at **rate 2** to the full image. Every position is
#   computed, and each output still sees the same extent of the image as the sparse filter did.
#
# The filter is a vertical derivative of a Gaussian, as in the paper's figure. The exact link
# between the two: subsampling keeps pixels $2i$, and a rate-2 filter at pixel $2i$ reads pixels
# $2i + 2k$, the same pixels the ordinary filter reads on the subsampled image. So the dense
# output, **taken at even positions**, equals the sparse output before upsampling. The dense
# output also fills in the positions in between.

# %%
g = np.exp(-0.5 * (np.arange(-2, 3) / 1.0) ** 2)
dog = (np.gradient(g)[:, None] * g[None, :]).astype(np.float32)  # (5, 5), d/dy of a Gaussian
dog /= np.abs(dog).sum()

small = image[::2, ::2]  # (75, 64): downsample by 2 (every other pixel)
sparse = atrous.conv2d(small[None], dog[None, None], pad=2, backend="numpy")[0]
dense = atrous.conv2d(image[None], dog[None, None], pad=4, dilation=2, backend="numpy")[0]
sparse_up = interp(sparse[None], zoom_factor=2, backend="numpy")[0]  # (149, 127)

np.testing.assert_allclose(dense[::2, ::2], sparse, atol=1e-6)  # the same computation on even pixels
np.testing.assert_allclose(sparse_up[::2, ::2], sparse, atol=1e-6)
between = np.abs(dense - sparse_up)[1::2, 1::2]  # odd positions: interpolated vs computed
print(f"odd positions: mean |dense - upsampled sparse| = {between.mean():.4f}, "
      f"mean |dense| = {np.abs(dense).mean():.4f}")

fig, axes = plt.subplots(1, 4, figsize=(10, 3))
vmax = np.percentile(np.abs(dense), 99)
axes[0].imshow(image)
axes[0].set_title("input 149x127")
axes[1].imshow(sparse, cmap=RDBU32, vmin=-vmax, vmax=vmax)
axes[1].set_title("sparse: conv on 75x64")
axes[2].imshow(sparse_up, cmap=RDBU32, vmin=-vmax, vmax=vmax)
axes[2].set_title("sparse, upsampled x2")
axes[3].imshow(dense, cmap=RDBU32, vmin=-vmax, vmax=vmax)
axes[3].set_title("dense: atrous rate 2 on 149x127")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Enlarge a patch around the eye and the glasses. The upsampled sparse map is a blurred copy of a
# quarter of the responses. The dense map has the thin horizontal edges at their own rows.

# %%
patch = (slice(36, 76), slice(20, 108))
fig, axes = plt.subplots(1, 3, figsize=(10, 1.9))
axes[0].imshow(image[patch])
axes[0].set_title("input")
for ax, (name, a) in zip(axes[1:], [("sparse, upsampled", sparse_up), ("dense (atrous)", dense)]):
    ax.imshow(a[patch], cmap=RDBU32, vmin=-vmax, vmax=vmax)
    ax.set_title(name)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · Reference, Numba CPU and CUDA agree
#
# `backend="numpy"` is the plain reference: a loop over the $k \times k$ taps, each a strided slice
# of the padded input multiplied by that tap's weights. `"cpu"` is the parallel Numba kernel and
# `"cuda"` the GPU kernel. They must agree to float32 rounding. The case below is a scaled-down
# DeepLab fc6 (3x3, rate 12, pad 12) and a rate larger than the input.

# %%
rng = np.random.default_rng(2015)
cases = [
    dict(x=(64, 33, 33), w=(32, 64, 3, 3), pad=12, dilation=12),   # fc6-like
    dict(x=(16, 20, 17), w=(8, 16, 3, 3), pad=24, dilation=24),    # rate larger than the input
    dict(x=(8, 31, 31), w=(8, 4, 5, 5), pad=2, dilation=(2, 3), groups=2, stride=2),
]
backends = ["cpu"] + (["cuda"] if cuda_usable() else [])
print("backends compared with the numpy reference:", backends,
      "" if cuda_usable() else "(no CUDA GPU here: cuda skipped)")
for case in cases:
    x_c = rng.standard_normal(case["x"]).astype(np.float32)
    w_c = (rng.standard_normal(case["w"]) / np.sqrt(np.prod(case["w"][1:]))).astype(np.float32)
    b_c = rng.standard_normal(case["w"][0]).astype(np.float32)
    kw = {k: v for k, v in case.items() if k not in ("x", "w")}
    ref = atrous.conv2d(x_c, w_c, b_c, backend="numpy", **kw)
    for backend in backends:
        got = atrous.conv2d(x_c, w_c, b_c, backend=backend, **kw)
        err = float(np.abs(got - ref).max())
        print(f"x {case['x']}, w {case['w']}, {kw}: {backend} max |error| = {err:.1e}")
        assert got.shape == ref.shape and got.dtype == np.float32
        assert err < 1e-4

# %% [markdown]
# ## 7 · Fewer multiplications: Winograd on the phases
#
# Section 5 showed that on even pixels a rate-2 filter is an ordinary filter on a subsampled
# image. That holds for every *phase*: the outputs whose row is $a$ and column $b$ modulo $r$ read
# only the input pixels of the same phase, so a rate-$r$ $3\times3$ layer is $r^2$ ordinary
# $3\times3$ convolutions of subsampled images. An ordinary $3\times3$ convolution can use
# Winograd's minimal filtering (Lavin & Gray, CVPR 2016, Sec. 4). In 1-D, $F(2, 3)$ computes two
# outputs of a 3-tap filter $g$ from four inputs $d$ with four multiplications instead of six:
#
# $$ m_1 = (d_0 - d_2)\,g_0,\quad m_2 = (d_1 + d_2)\,\tfrac{g_0 + g_1 + g_2}{2},\quad
#    m_3 = (d_2 - d_1)\,\tfrac{g_0 - g_1 + g_2}{2},\quad m_4 = (d_1 - d_3)\,g_2, $$
# $$ y_0 = m_1 + m_2 + m_3, \qquad y_1 = m_2 - m_3 - m_4 . $$
#
# The filter's factors are computed once per filter. Nested in 2-D, $F(2\times2, 3\times3)$ takes
# 16 multiplications for a $2\times2$ tile instead of 36, 2.25x fewer; the CPU tier uses it for
# layers with 32 or more channels on a few threads (`atrous.winograd`, `atrous.config`), where the
# 16 products per tile become 16 matrix products over all channels and tiles. Below: the four products by hand, against the
# direct sum and the library's matrix form, then a dilated layer through it against the reference.

# %%
d = np.array([1.0, 2.0, -1.0, 0.5], np.float32)   # four inputs
g = np.array([0.25, -2.0, 3.0], np.float32)       # a 3-tap filter
m1 = (d[0] - d[2]) * g[0]
m2 = (d[1] + d[2]) * (g[0] + g[1] + g[2]) / 2
m3 = (d[2] - d[1]) * (g[0] - g[1] + g[2]) / 2
m4 = (d[1] - d[3]) * g[2]
by_hand = np.array([m1 + m2 + m3, m2 - m3 - m4])
direct = np.array([d[0:3] @ g, d[1:4] @ g])       # y[i] = sum_k d[i + k] g[k]
print("F(2,3) by hand:", by_hand, " direct:", direct, " matrices:", winograd.f23_reference(d, g))
assert np.allclose(by_hand, direct) and np.allclose(winograd.f23_reference(d, g), direct)

x_w = rng.standard_normal((1, 128, 33, 33)).astype(np.float32)               # 128 channels
w_w = (rng.standard_normal((128, 128, 3, 3)) / np.sqrt(128 * 9)).astype(np.float32)
print("the CPU tier's strategy for this layer on 2 threads:",
      choose_strategy(128, 128, (3, 3), (1, 1), (2, 2), (2, 2), (33, 33), threads=2))
y_w = np.empty((1, 128, 33, 33), np.float32)
winograd.conv_winograd(x_w, w_w, np.zeros(128, np.float32), y_w, (2, 2), (2, 2), 1)   # all 4 phases by F(2x2, 3x3)
err = float(np.abs(y_w - atrous.conv2d(x_w, w_w, pad=2, dilation=2, backend="numpy")).max())
print(f"rate 2 through Winograd against the reference: max |error| = {err:.1e}")
assert err < 1e-4

# %% [markdown]
# Larger tiles save more: $F(4, 3)$ computes four outputs from six inputs with six
# multiplications (interpolation points $0, \pm1, \pm2, \infty$), so $F(4\times4, 3\times3)$
# takes 36 for a $4\times4$ tile instead of 144, 4x fewer. Its transforms hold 4, 5, 1/6 and 1/24,
# so it rounds more (about 1e-5 of a layer's range against 1e-6), and on the small phases of a large
# rate its tiles overhang more: the CPU tier takes, per layer, the tile size with fewer products
# (`winograd.choose_tile`): $F(4\times4, 3\times3)$ for VGG's conv5 at rate 2, $F(2\times2, 3\times3)$
# for fc6 at rate 12, whose phases have six outputs.

# %%
d6 = np.array([1.0, 2.0, -1.0, 0.5, 3.0, -2.0], np.float32)   # six inputs
direct4 = np.array([d6[i:i + 3] @ g for i in range(4)])
print("F(4,3):", winograd.f43_reference(d6, g), " direct:", direct4)
assert np.allclose(winograd.f43_reference(d6, g), direct4, atol=1e-5)
print("tile for conv5 (65x65, rate 2):", winograd.choose_tile((65, 65), (2, 2)),
      "  for fc6 (65x65, rate 12):", winograd.choose_tile((65, 65), (12, 12)))
y_4 = np.empty((1, 128, 33, 33), np.float32)
winograd.conv_winograd(x_w, w_w, np.zeros(128, np.float32), y_4, (2, 2), (2, 2), 1, m=4)   # F(4x4, 3x3)
err4 = float(np.abs(y_4 - atrous.conv2d(x_w, w_w, pad=2, dilation=2, backend="numpy")).max())
print(f"rate 2 through F(4x4, 3x3) against the reference: max |error| = {err4:.1e}")
assert err4 < 1e-4

# %% [markdown]
# The transformed tiles leave $(m+2)^2$ matrix products $M_p = U_p V_p$, one per point of the
# tile: $U_p$ is (C_out x C_in), the filters' point $p$; $V_p$ is (C_in x tiles). On DeepLab's
# dilated layers they are many and small (ResNet-101's res4 at 321x321: 36 of
# (256 x 256) @ (256 x 121)), which BLAS runs one at a time. `atrous.gemm` computes them in Numba:
# $U_p$ is stored once in *row panels* of `PANEL_ROWS` rows, each read column by column, and the
# input transform writes $V_p$ in *column panels* of `PANEL_COLS` columns, each read row by row. One
# block of `PANEL_ROWS` x `PANEL_COLS` outputs then lives in vector registers while $k$ runs over
# C_in: per $k$ one load of the panel's row of $V$ and one broadcast of each of $U$'s values. The
# same kernel does the 1x1 convolutions, reading the input's rows where they lie.

# %%
from atrous import gemm

u = rng.standard_normal((3, 13, 20)).astype(np.float32)    # 3 products of (13 x 20) @ (20 x 37)
v = rng.standard_normal((3, 20, 37)).astype(np.float32)
a, b = gemm.pack_rows(u), gemm.pack_cols(v)
print("panels of", gemm.PANEL_ROWS, "x", gemm.PANEL_COLS, "| U packed:", a.shape, "| V packed:", b.shape)
assert a[1, 1, 5, 2] == u[1, 1 * gemm.PANEL_ROWS + 2, 5]     # panel 1, row k = 5, lane 2
assert b[2, 1, 7, 3] == v[2, 7, 1 * gemm.PANEL_COLS + 3]
c = np.empty((3, a.shape[1] * gemm.PANEL_ROWS, b.shape[1] * gemm.PANEL_COLS), np.float32)
gemm.batched_products_cpu(a, b, c)
err_p = float(np.abs(c[:, :13, :37] - np.matmul(u.astype(np.float64), v)).max())
print(f"packed-panel products against float64 matmul: max |error| = {err_p:.1e}")
assert err_p < 1e-4

# %% [markdown]
# ## What to take away
#
# * Eq. (1): an atrous filter samples its input every $r$ pixels. It has $K$ weights and $K$
#   multiplications per output, but it spans $r(K-1)+1$ pixels.
# * It equals an ordinary filter with zeros inserted, and on even pixels a rate-2 filter equals the
#   ordinary filter on the 2x downsampled image. Atrous convolution therefore computes the
#   downsampled network's features *densely*, without interpolating them.
# * `pad = rate` keeps a $3\times3$ layer's size. Notebook 02 follows sizes, strides and the field
#   of view through the whole DeepLab network.
# * A rate-$r$ layer is $r^2$ ordinary convolutions on the phases of its input, so Winograd's
#   $F(2\times2, 3\times3)$ applies to each: 2.25x fewer multiplications ($F(4\times4, 3\times3)$: 4x,
#   on phases large enough for its tiles). Its matrix products run on packed panels, one block of
#   outputs in registers at a time.
