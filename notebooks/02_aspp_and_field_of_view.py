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
# # 02 · Field of view, LargeFOV and ASPP
#
# **Why.** VGG-16 has an output stride of 32: its five poolings halve the image five times. DeepLab
# needs a denser score map, so it sets the stride of **pool4 and pool5 to 1**. The output stride is
# then 8: a 513x513 image gives 65x65 scores. The layers after each removed subsampling would now see
# a 2x or 4x smaller part of the image. DeepLab restores their reach with atrous convolution
# (notebook 01): **rate 2 in conv5_1..conv5_3**, and in fc6 a rate that sets the *field of view*.
# DeepLab-LargeFOV (ICLR 2015) uses **rate 12** with a 3x3, 1024-channel fc6. DeepLab v2 (TPAMI 2018)
# puts several rates side by side: **ASPP**, atrous spatial pyramid pooling.
#
# This notebook reads the official network files, follows the size, stride and theoretical receptive
# field through every layer, counts the parameters, and sets them beside the ICLR paper's
# **Table 2**. Then it draws ASPP's four sampling patterns and runs v2's two ASPP heads from the
# library.
#
# **The equations.** A layer with kernel $k$, rate $r$, padding $p$ and stride $s$ has the effective
# kernel $k_\mathrm{eff} = r(k-1)+1$ (TPAMI 2018, §3.1, Eq. (1) with $r-1$ zeros between taps).
# Let $j$ be the distance in image pixels between neighbouring inputs of the layer (the *jump*,
# the product of the strides before it). The layer maps
#
# $$ j_\mathrm{out} = j_\mathrm{in}\, s, \qquad
#    \mathrm{RF}_\mathrm{out} = \mathrm{RF}_\mathrm{in} + (k_\mathrm{eff} - 1)\, j_\mathrm{in}, \qquad
#    H_\mathrm{out} = \Big\lfloor \tfrac{H + 2p - k_\mathrm{eff}}{s} \Big\rfloor + 1 . $$
#
# Caffe's pooling rounds **up** instead, and then drops a last window that would start inside the
# right padding.
#
# **Two different strides.** Table 2 of the ICLR paper has a column "input stride". It means fc6's
# **rate**: the step at which fc6 samples *its* input, the pool5 map. The network's **output stride**
# (the jump, 8) is a different number. A rate-12 fc6 on a stride-8 map puts its taps
# $12 \cdot 8 = 96$ image pixels apart, while its output keeps stride 8.
#
# The helper is `atrous.fov`: `fov.Layer` records in, one `fov.Geometry` row per layer out.

# %%
from importlib.resources import files

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cbook import get_sample_data
from matplotlib.colors import ListedColormap
from PIL import Image

import atrous
from atrous import aspp, fov
from nets.caffe import conv_geometry, pool_geometry, read_prototxt
from nets.layers import pool2d, pool_output_size

plt.rcParams.update({"figure.dpi": 72, "axes.titlesize": 10})

# %% [markdown]
# ## 1 · A hand-checkable stack
#
# Three layers: a 3x3 convolution, a 3x3 max pooling with stride 2, and a 3x3 convolution at
# rate 2, on a 17-pixel input.
#
# | layer | $k_\mathrm{eff}$ | $j_\mathrm{in}$ | RF | jump | size |
# |---|---|---|---|---|---|
# | conv 3x3, pad 1 | 3 | 1 | 1 + 2·1 = 3 | 1 | 17 |
# | pool 3x3 / 2, pad 1 | 3 | 1 | 3 + 2·1 = 5 | 2 | ⌈16/2⌉ + 1 = 9 |
# | conv 3x3, rate 2, pad 2 | 5 | 2 | 5 + 4·2 = 13 | 2 | 9 |

# %%
toy = [fov.Layer("conv_a", "conv", 3, pad=1, out_channels=8),
       fov.Layer("pool", "pool", 3, stride=2, pad=1),
       fov.Layer("conv_b", "conv", 3, pad=2, dilation=2, out_channels=8)]
rows = fov.trace(toy, 17, in_channels=3)
print(fov.format_table(rows))
assert [r.rf for r in rows] == [3, 5, 13]
assert [r.jump for r in rows] == [1, 2, 2]
assert [r.size_out for r in rows] == [17, 9, 9]
assert [r.params for r in rows] == [8 * 3 * 9 + 8, 0, 8 * 8 * 9 + 8]

# %% [markdown]
# ## 2 · From the official prototxt to a table of layers
#
# The network files are DeepLab's own test prototxts, as released. They ship with the package, and
# `nets.caffe` parses both dialects: v1's `layers { type: CONVOLUTION ... hole: 12 }` and v2's
# `layer { type: "Convolution" ... dilation: 12 }`.
#
# The function below walks a parsed net in file order. For every blob it keeps the size, the
# channels and the *longest* chain of sliding-window layers that leads to it. Convolutions and
# poolings extend the chain. ReLU, dropout, BatchNorm and Scale work pixel by pixel and change
# nothing. An element-wise sum keeps the longest of its inputs' chains, because the receptive field
# of a sum is the union of its inputs' fields. Layers that do not lie on the image's path (the label,
# the multi-scale `Interp` branches, the writers) are ignored.

# %%
PROTOTXT = files("nets") / "data" / "prototxt"
POINTWISE = {"ReLU", "Dropout", "BatchNorm", "Scale"}


def as_fov_layer(layer):
    """A parsed Convolution or Pooling layer as an atrous.fov.Layer (square windows only)."""
    if layer.type == "Convolution":
        g = conv_geometry(layer)
        assert len(set(g.kernel)) == len(set(g.stride)) == len(set(g.pad)) == len(set(g.dilation)) == 1
        return fov.Layer(layer.name, "conv", g.kernel[0], g.stride[0], g.pad[0], g.dilation[0],
                         out_channels=g.num_output, bias=g.bias_term, groups=g.group)
    g = pool_geometry(layer)
    assert len(set(g.kernel)) == len(set(g.stride)) == len(set(g.pad)) == 1 and not g.global_pooling
    return fov.Layer(layer.name, "pool", g.kernel[0], g.stride[0], g.pad[0],
                     ceil_mode=g.round_mode == "CEIL")


def walk(net, size, in_channels=3, image="data"):
    """Per blob: size, channels and the longest chain of layers from the image to it.

    Also returns the parameters of *every* convolution on the image's path (branches included),
    counted with fov.trace one layer at a time.
    """
    size_of, channels_of, chain_of = {image: size}, {image: in_channels}, {image: []}
    params = {}
    for layer in net.layers:
        if not layer.bottoms or any(b not in chain_of for b in layer.bottoms):
            continue  # not on the image's path
        bottom = layer.bottoms[0]
        if layer.type in ("Convolution", "Pooling"):
            record = as_fov_layer(layer)
            (row,) = fov.trace([record], size_of[bottom], channels_of[bottom])
            result = (row.size_out, row.out_channels, chain_of[bottom] + [record])
            params[layer.name] = row.params
        elif layer.type in POINTWISE:
            result = (size_of[bottom], channels_of[bottom], chain_of[bottom])
        elif layer.type == "Eltwise":
            assert len({(size_of[b], channels_of[b]) for b in layer.bottoms}) == 1
            longest = max((chain_of[b] for b in layer.bottoms),
                          key=lambda c: fov.trace(c, size, in_channels)[-1].rf if c else 1)
            result = (size_of[bottom], channels_of[bottom], longest)
        else:
            continue  # Interp, MatWrite, Silence, ...: not part of the score map's geometry
        for top in layer.tops:
            size_of[top], channels_of[top], chain_of[top] = result
    return size_of, chain_of, params


largefov_net = read_prototxt(PROTOTXT / "v1_largefov_test.prototxt")
print("dialect:", largefov_net.dialect, "| layers:", len(largefov_net.layers))
print(largefov_net.layer("fc6").source_type, largefov_net.layer("fc6").params)

sizes, chains, params = walk(largefov_net, 513)
largefov = fov.trace(chains["fc8_voc12"], 513, in_channels=3)
print()
print(fov.format_table(largefov))

# %% [markdown]
# Read the table from top to bottom. The three stride-2 poolings bring 513 down to 257, 129 and 65.
# pool4, pool5 and pool5a have stride 1, so the jump stays 8 from pool3 on. conv5's rate 2 and
# fc6's rate 12 multiply the growth of the receptive field: fc6 alone adds $24 \cdot 8 = 192$ pixels.
#
# The checks below compare these numbers with sources that do not use `fov`:
#
# * the sizes with the alignment DeepLab is built on (513 → 257 → 129 → 65, every stage an odd
#   size) and with the output size of the pooling layer in `nets.layers`;
# * the parameters with the arithmetic for VGG-16 plus DeepLab's fc6/fc7/fc8;
# * the receptive field with a **measurement**. The layers of the real net run on a 1-pixel-high
#   image, with weights of 1 and zero biases. One impulse per input pixel is sent through them, and
#   we record which impulses reach the centre output. Because the weights are positive, an impulse
#   reaches an output exactly when the output's field covers it.

# %%
by_name = {r.name: r for r in largefov}
assert [by_name[n].size_out for n in ("pool1", "pool2", "pool3", "pool5a", "fc8_voc12")] == \
    [257, 129, 65, 65, 65]
assert largefov[-1].jump == 8 and all(r.offset == 0 for r in largefov)  # score i sits on pixel 8i
for r in largefov:
    if r.kind == "pool":
        assert pool_output_size(r.size_in, r.kernel, r.stride, r.pad) == r.size_out

vgg16_convs = (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 2 * 256 * 256 + 256 * 512
               + 5 * 512 * 512) * 9 + (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)
head = (512 * 9 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 21 + 21)
total_params = sum(r.params for r in largefov)
assert total_params == vgg16_convs + head == sum(params.values())
print(f"parameters: {total_params:,} = {total_params / 1e6:.1f}M "
      f"(VGG-16 convolutions {vgg16_convs:,}, fc6-fc8 {head:,})")


def measured_field(chain, size, centre):
    """First and last input pixel that reach output `centre`, with 1-D impulses through the layers."""
    x = np.eye(size, dtype=np.float32)[:, None, None, :]  # (size, 1, 1, size): impulse i in image i
    for layer in chain:
        if layer.kind == "conv":
            ones = np.ones((1, 1, 1, layer.kernel), np.float32)
            x = atrous.conv2d(x, ones, pad=(0, layer.pad), dilation=(1, layer.dilation),
                              stride=(1, layer.stride), backend="numpy")
        else:
            x = pool2d(x, (1, layer.kernel), (1, layer.stride), (0, layer.pad), backend="numpy")
    reached = np.flatnonzero(x[:, 0, 0, centre] > 0)
    return reached.min(), reached.max()


first, last = measured_field(chains["fc8_voc12"], 513, centre=32)
print(f"score pixel 32 (image pixel {8 * 32}) is reached from image pixels {first}..{last}: "
      f"{last - first + 1} pixels; fov.trace says {largefov[-1].rf}")
assert last - first + 1 == largefov[-1].rf == 435
assert (first + last) / 2 == 8 * 32

# %% [markdown]
# ## 3 · Beside the paper's Table 2
#
# The ICLR paper (Table 2) compares four fc6 designs, all on the same backbone of output stride 8.
# Only two of them exist as released prototxts: plain DeepLab (`v1_deeplab_plain_test.prototxt`:
# 2x2 poolings, fc6 4x4 at rate 4, 4096 channels, a 514 crop) and DeepLab-LargeFOV. The two others
# are built here from the plain net by changing fc6 alone. The 7x7 variant, for example, keeps
# VGG-16's original 7x7x4096 fc6. Every computed receptive field in the table is also measured with
# impulses, as above, at the centre score pixel.

# %%
plain_net = read_prototxt(PROTOTXT / "v1_deeplab_plain_test.prototxt")
_, plain_chains, _ = walk(plain_net, 514)
plain = plain_chains["fc8_pascal"]


def with_fc6(chain, kernel, rate, channels):
    """The chain with fc6 replaced (pad keeps the size) and fc7's input following fc6's output."""
    out = []
    for layer in chain:
        if layer.name == "fc6":
            pad = rate * (kernel - 1) // 2
            layer = fov.Layer("fc6", "conv", kernel, 1, pad, rate, out_channels=channels)
        out.append(layer)
    return out


designs = [  # name, chain, size, the paper's kernel, input stride (= rate), RF and parameters
    ("DeepLab-CRF-7x7", with_fc6(plain, 7, 4, 4096), 514, "7x7", 4, 224, "134.3M"),
    ("DeepLab-CRF", plain, 514, "4x4", 4, 128, "65.1M"),
    ("DeepLab-CRF-4x4", with_fc6(plain, 4, 8, 4096), 514, "4x4", 8, 224, "65.1M"),
    ("DeepLab-CRF-LargeFOV", chains["fc8_voc12"], 513, "3x3", 12, 224, "20.5M"),
]
print(f"{'':22}|{'paper (ICLR 2015, Table 2)':^30}|{'computed from the prototxt':^44}")
print(f"{'method':22}|{'kernel':>7}{'rate':>6}{'RF':>6}{'params':>10} |{'kernel':>7}{'rate':>6}"
      f"{'fc6 span':>10}{'+32':>6}{'RF':>6}{'params':>9}")
computed = {}
for name, chain, size, p_kernel, p_rate, p_rf, p_params in designs:
    rows = fov.trace(chain, size, in_channels=3)
    fc6 = next(r for r in rows if r.name == "fc6")
    span = (fc6.k_eff - 1) * (fc6.jump // fc6.stride)  # image pixels between fc6's outer taps
    total = sum(r.params for r in rows)
    first, last = measured_field(chain, size, centre=rows[-1].size_out // 2)
    assert last - first + 1 == rows[-1].rf  # the theoretical field, measured with impulses
    computed[name] = (fc6.kernel, fc6.dilation, span, rows[-1].rf, total, rows[-1].jump)
    print(f"{name:22}|{p_kernel:>7}{p_rate:>6}{p_rf:>6}{p_params:>10} |"
          f"{f'{fc6.kernel}x{fc6.kernel}':>7}{fc6.dilation:>6}{span:>10}{span + 32:>6}"
          f"{rows[-1].rf:>6}{total / 1e6:>8.1f}M")

# the computed columns, checked by arithmetic (VGG-16 convs + fc6 + fc7 + fc8, 21 classes)
fc7_fc8_4096 = (4096 * 4096 + 4096) + (4096 * 21 + 21)
assert computed["DeepLab-CRF-7x7"][4] == vgg16_convs + 7 * 7 * 512 * 4096 + 4096 + fc7_fc8_4096
assert computed["DeepLab-CRF"][4] == vgg16_convs + 4 * 4 * 512 * 4096 + 4096 + fc7_fc8_4096
assert computed["DeepLab-CRF-LargeFOV"][4] == total_params
assert all(c[5] == 8 for c in computed.values())  # output stride 8 everywhere

# %% [markdown]
# **Where the two sides agree and where they differ.**
#
# * **Kernel, rate and parameters agree.** With 21 classes the parameter counts round to the paper's
#   134.3M, 65.1M and 20.5M. LargeFOV's saving comes from fc6 (3x3x512x1024 instead of
#   7x7x512x4096) and from fc7's 1024 channels.
# * **The receptive-field column does not agree with the theoretical receptive field.** The
#   recursion gives 308 to 435 pixels. The paper gives 128 or 224. The paper's numbers are fitted
#   exactly, in all four rows, by the span of fc6 alone on the image plus 32:
#   $8 \cdot r (k-1) + 32$ (the "fc6 span" and "+32" columns). The paper does not state this
#   formula; it is our reading. One reading of the 32 is the width of one pool5 cell of the
#   original VGG-16 (stride 32). For the 7x7 design it gives 224, the size of VGG's ImageNet crops.
#   The plain prototxt's header comment also speaks of a "receptive field (128 pixels)".
#   Either way the paper's column measures **how far apart fc6 looks**. It does not include the
#   212 to 243 pixels that conv1_1 to pool5 (or pool5a) already cover below fc6.
# * The theoretical field is an upper bound on what can influence a score. The weights decide how
#   much each pixel in it really does.
#
# In v2 the VGG net has no `pool5a` (a 3x3 average pooling that v1 LargeFOV puts before fc6), so
# the same rate-12 branch reaches 16 pixels less.

# %%
aspp_vgg_net = read_prototxt(PROTOTXT / "v2_vgg16_aspp_l_test.prototxt")
_, vgg_chains, vgg_params = walk(aspp_vgg_net, 513)
print(f"{'branch':>14}{'rate':>6}{'theoretical RF':>16}{'size':>6}")
branch_rf = {}
for k in (1, 2, 3, 4):
    rows = fov.trace(vgg_chains[f"fc8_voc12_{k}"], 513, 3)
    fc6 = next(r for r in rows if r.name.startswith("fc6"))
    branch_rf[fc6.dilation] = rows[-1].rf
    print(f"{f'fc8_voc12_{k}':>14}{fc6.dilation:>6}{rows[-1].rf:>16}{rows[-1].size_out:>6}")
# the sum takes the largest field of its inputs; pool5 ends at RF 227 with jump 8
assert fov.trace(vgg_chains["fc8_voc12"], 513, 3)[-1].rf == max(branch_rf.values())
assert branch_rf == {r: 227 + 2 * r * 8 for r in (6, 12, 18, 24)}
assert branch_rf[12] == 435 - 16
aspp_l_params = sum(vgg_params.values())
assert aspp_l_params == vgg16_convs + 4 * head
print(f"v2 VGG-16 ASPP-L: {aspp_l_params / 1e6:.1f}M parameters "
      f"(the VGG-16 convolutions and four fc6-fc8 branches)")

# %% [markdown]
# ## 4 · ResNet-101 with ASPP
#
# v2's ResNet-101 net (`v2_resnet101_aspp_msc_test.prototxt`; the walk follows the full-scale tower
# and skips the 0.5x and 0.75x towers) reaches stride 8 in a different way. The stride-2 layers are
# conv1, pool1 and res3a. res4 uses rate 2 and res5 rate 4 instead of striding. The ASPP head then
# puts four 3x3 convolutions with rates 6, 12, 18 and 24 on res5c and sums them.
#
# A residual block's sum takes the longer chain, the 1x1-3x3-1x1 bottleneck, over the shortcut.

# %%
resnet_net = read_prototxt(PROTOTXT / "v2_resnet101_aspp_msc_test.prototxt")
res_sizes, res_chains, res_params = walk(resnet_net, 513)
res_rows = {r.name: r for r in fov.trace(res_chains["fc1_voc12"], 513, 3)}
print(f"{'layer':>16}{'size':>6}{'jump':>6}{'RF':>7}")
for name in ("conv1", "pool1", "res2c_branch2c", "res3a_branch2a", "res3b3_branch2c",
             "res4b22_branch2c", "res5c_branch2c", "fc1_voc12_c3"):
    r = res_rows[name]
    print(f"{name:>16}{r.size_out:>6}{r.jump:>6}{r.rf:>7}")
aspp_rf = {}
for c, rate in enumerate(aspp.RESNET_RATES):
    aspp_rf[rate] = fov.trace(res_chains[f"fc1_voc12_c{c}"], 513, 3)[-1].rf
print("ASPP branches, rate -> theoretical RF:", aspp_rf)
print(f"convolution parameters of the tower and head: {sum(res_params.values()) / 1e6:.1f}M, "
      f"of which ASPP {sum(v for k, v in res_params.items() if k.startswith('fc1_voc12')):,}")

assert [res_rows[n].size_out for n in ("conv1", "pool1", "res3a_branch2a", "fc1_voc12_c3")] == \
    [257, 129, 65, 65]
assert res_sizes["fc1_voc12"] == 65 and res_rows["fc1_voc12_c3"].jump == 8
assert res_params["fc1_voc12_c0"] == 21 * 2048 * 9 + 21

# %% [markdown]
# The theoretical field already exceeds the 513-pixel input inside res4 (835 pixels at res4b22), so
# on this backbone the ASPP rates cannot widen what a score may depend on. What they change is which
# positions of res5c a score combines *directly*: the centre, and eight neighbours 48, 96, 144 or
# 192 image pixels away.
#
# ## 5 · ASPP's four sampling patterns
#
# On a 513x513 image the score map is 65x65 and score pixel $(i, j)$ sits on image pixel
# $(8i, 8j)$. Below are the 3x3 taps of the four ASPP branches for the centre score pixel, drawn
# on the image (TPAMI 2018, §3.2 and Fig. 4 show the same idea). Rate $r$ puts the taps $8r$ image
# pixels apart.

# %%
path = get_sample_data("grace_hopper.jpg", asfileobj=False)
photo = Image.open(path).convert("L")  # 512 x 600 (width x height)
photo = np.asarray(photo.resize((513, 601), Image.Resampling.BILINEAR))[:513]  # (513, 513)

centre = 32
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(photo, cmap=plt.get_cmap("gray", 32))  # 32 grey levels keep the saved figure small
for rate, colour in zip(aspp.RESNET_RATES, ("C0", "C1", "C2", "C3")):
    taps = 8 * (centre + rate * np.array([-1, 0, 1]))  # image pixels
    yy, xx = np.meshgrid(taps, taps, indexing="ij")
    ax.plot(xx.ravel(), yy.ravel(), "o", ms=8, mfc="none", mec=colour, mew=2.5,
            label=f"rate {rate}: taps {8 * rate} px apart")
    ax.add_patch(plt.Rectangle((taps[0], taps[0]), taps[2] - taps[0], taps[2] - taps[0],
                               fill=False, ec=colour, lw=1, ls="--"))
ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
ax.set_title("ASPP: four 3x3 atrous kernels at one score pixel")
ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · The ASPP heads from the library
#
# `atrous.aspp` builds v2's two heads from `atrous.conv2d`:
#
# * `aspp_resnet(x, branches)`: four 3x3 convolutions (rate = pad = 6, 12, 18, 24) on res5c, summed.
#   No nonlinearity sits between the convolutions and the sum, so the head is **one** linear filter.
#   Its kernel is the sum of the four zero-dilated 3x3 kernels: a 49x49 kernel with only
#   4·9 − 3 = 33 non-zero taps (the centre tap is shared). This is the naive teaching version
#   checked against the library below, and a picture of the sampling pattern in weight space.
# * `aspp_vgg(x, branches)`: four fc6 (3x3, rate) → ReLU → fc7 (1x1) → ReLU → fc8 (1x1) branches,
#   summed. Each branch is a small nonlinear classifier with its own field of view. LargeFOV
#   (`aspp.largefov`) is the one branch at rate 12.
#
# The shapes are small stand-ins (32 channels instead of 2048 or 512, a 33x33 map as for a 257-pixel
# input, random weights). The point is the structure, not the scores.

# %%
rng = np.random.default_rng(7)
features = rng.standard_normal((32, 33, 33)).astype(np.float32)  # (C, H, W)
branches = [aspp.random_conv(rng, 21, 32, 3) for _ in aspp.RESNET_RATES]
scores = atrous.aspp_resnet(features, branches, backend="numpy")
print("ResNet ASPP scores:", scores.shape, scores.dtype)


def dilate(kernel, rate, span):
    """(C_out, C_in, 3, 3) -> (C_out, C_in, span, span): taps rate apart around the centre."""
    big = np.zeros(kernel.shape[:2] + (span, span), kernel.dtype)
    c = span // 2
    big[:, :, c - rate:c + rate + 1:rate, c - rate:c + rate + 1:rate] = kernel
    return big


span = 2 * max(aspp.RESNET_RATES) + 1  # 49
combined = sum(dilate(w, rate, span) for (w, _), rate in zip(branches, aspp.RESNET_RATES))
combined_bias = sum(b for _, b in branches)
one_filter = atrous.conv2d(features, combined, combined_bias, pad=span // 2, backend="numpy")
np.testing.assert_allclose(scores, one_filter, rtol=1e-4, atol=1e-4)
assert np.count_nonzero(np.abs(combined).sum(axis=(0, 1))) == 33

np.testing.assert_allclose(atrous.aspp_resnet(features, branches, backend="cpu"), scores,
                           rtol=1e-4, atol=1e-4)

fig, ax = plt.subplots(figsize=(3.4, 3.4))
pattern = np.zeros((span, span))
for i, rate in enumerate(aspp.RESNET_RATES):
    pattern[dilate(np.ones((1, 1, 3, 3)), rate, span)[0, 0] > 0] = i + 1
pattern[span // 2, span // 2] = 5  # the centre tap, shared by the four branches
colours = ListedColormap(["white", "C0", "C1", "C2", "C3", "black"])
ax.imshow(pattern, cmap=colours, vmin=0, vmax=5, interpolation="nearest")
ax.set_title("the ResNet ASPP head as one 49x49\nkernel: 33 non-zero taps (black: shared)")
ax.set_xticks([0, 24, 48])
ax.set_yticks([0, 24, 48])
plt.tight_layout()
plt.show()

# %%
vgg_branches = [aspp.random_vgg_branch(rng, 32, 64, 21) for _ in aspp.ASPP_L_RATES]
vgg_scores = atrous.aspp_vgg(features, vgg_branches, backend="numpy")


def vgg_branch_naive(x, branch, rate):
    """fc6 (3x3, rate, pad rate) -> ReLU -> fc7 -> ReLU -> fc8, each a plain conv2d call."""
    h = np.maximum(atrous.conv2d(x, *branch.fc6, pad=rate, dilation=rate, backend="numpy"), 0)
    h = np.maximum(atrous.conv2d(h, *branch.fc7, backend="numpy"), 0)
    return atrous.conv2d(h, *branch.fc8, backend="numpy")


naive = sum(vgg_branch_naive(features, b, r) for b, r in zip(vgg_branches, aspp.ASPP_L_RATES))
np.testing.assert_allclose(vgg_scores, naive, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(atrous.largefov(features, vgg_branches[1], backend="numpy"),
                           vgg_branch_naive(features, vgg_branches[1], 12), rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(atrous.aspp_vgg(features, vgg_branches, backend="cpu"), vgg_scores,
                           rtol=1e-4, atol=1e-4)
print("VGG ASPP-L scores:", vgg_scores.shape, "| max |library - naive| =",
      float(np.abs(vgg_scores - naive).max()))

# %% [markdown]
# ## What to take away
#
# * Removing strides and adding rates keeps VGG's reach at output stride 8. LargeFOV's rate-12
#   3x3 fc6 spans as far as the 7x7 design with 6.5 times fewer parameters (20.5M against 134.3M).
# * The paper's "receptive field" column describes fc6's span on the image. The theoretical field of
#   the whole network is larger (435 pixels for LargeFOV) and is computed here from the prototxt.
# * ASPP samples the same features at several rates and sums the branch scores. v2's ResNet head is
#   one sparse 49x49 filter, the VGG head a sum of four nonlinear classifiers.
