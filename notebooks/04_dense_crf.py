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
# # 04 · The fully connected CRF
#
# **Why.** DeepLab's network scores every label at 1/8 of the image resolution. Upsampled, those
# scores are right in the middle of objects and blurred at their boundaries. DeepLab's third idea
# is to sharpen them with a **fully connected conditional random field** (Kraehenbuehl & Koltun,
# NIPS 2011), in which every pixel is linked to every other pixel, more strongly when the two are
# close and of similar colour. Pixels then borrow labels from similar pixels, and the boundaries
# move onto the edges of the image.
#
# **The energy** (Kraehenbuehl & Koltun, **Eq. (1)**) of a labelling $x$ is
#
# $$ E(x) = \sum_i \psi_u(x_i) + \sum_{i<j} \psi_p(x_i, x_j), \qquad
#    \psi_p(x_i, x_j) = \mu(x_i, x_j) \sum_m w^{(m)} k^{(m)}(f_i, f_j) \quad \textbf{(2)} $$
#
# with the unary $\psi_u$ from the classifier ($-\log P$, or DeepLab's $-\text{score}$), the Potts
# penalty $\mu(l, l') = [l \ne l']$ and two Gaussian kernels (**Eq. (3)**):
#
# $$ k(f_i, f_j) = w^{(1)} \exp\!\Big(-\frac{\lvert p_i-p_j\rvert^2}{2\theta_\alpha^2}
#    -\frac{\lvert I_i-I_j\rvert^2}{2\theta_\beta^2}\Big)
#    + w^{(2)} \exp\!\Big(-\frac{\lvert p_i-p_j\rvert^2}{2\theta_\gamma^2}\Big) $$
#
# the **appearance** (bilateral) kernel over positions $p$ and colours $I$, and the **smoothness**
# (Gaussian) kernel over positions only.
#
# **Mean field** (§3, **Eq. (4)**) approximates $P(x) \propto e^{-E(x)}$ by independent per-pixel
# distributions $Q_i$ and repeats the update
#
# $$ Q_i(l) = \frac{1}{Z_i} \exp\Big\{-\psi_u(l) - \sum_{l'} \mu(l, l') \sum_m w^{(m)}
#    \sum_{j \ne i} k^{(m)}(f_i, f_j)\, Q_j(l')\Big\} . $$
#
# The inner sum over $j$ is a Gaussian filter of every label's $Q$: the permutohedral lattice of
# notebook 03 computes it in $O(N)$. Like Kraehenbuehl's code (and DeepLab), the library includes
# the pixel itself ($j = i$) and normalises each filter by $K\mathbf 1$ ("per pixel").
#
# This notebook: one update by hand; the two kernels as weight maps; mean field iteration by
# iteration on a photograph; each parameter's effect; DeepLab's presets; the free energy falling;
# and the pydensecrf-compatible facade.

# %%
import importlib.util

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cbook import get_sample_data
from matplotlib.colors import ListedColormap
from PIL import Image

import crf
import crf.compat as dcrf
from nets.layers import interp

plt.rcParams.update({"figure.dpi": 72, "axes.titlesize": 9, "image.interpolation": "nearest"})
MAGMA32, RDBU32 = plt.get_cmap("magma", 32), plt.get_cmap("RdBu_r", 32)

# %% [markdown]
# ## 1 · One update by hand
#
# Three points on a line at positions 0, 1 and 3 (in units of $\theta_\gamma$), two labels, one
# smoothness kernel with $w = 1$, no normalisation. Point 0 is sure of label 0, point 2 of label 1,
# and point 1 is undecided. Point 1 is nearer point 0 ($k = e^{-1/2} \approx 0.61$) than point 2
# ($k = e^{-2} \approx 0.14$), so the update should pull it towards label 0. The naive version
# below is Eq. (4) written as loops (with $j = i$ included, as in the library). It is compared
# with the library's exact mean field `crf.exact_mean_field`.

# %%
def mean_field_step_naive(u, q, positions, w, mu):
    """Eq. (4) with one Gaussian kernel, as loops: u, q (N, L); positions (N,); mu (L, L)."""
    n, n_labels = u.shape
    new = np.empty_like(q)
    for i in range(n):
        energy = np.empty(n_labels)
        for lab in range(n_labels):
            message = sum(mu[lab, other] * w * np.exp(-0.5 * (positions[i] - positions[j]) ** 2) * q[j, other]
                          for j in range(n) for other in range(n_labels))
            energy[lab] = -u[i, lab] - message
        new[i] = np.exp(energy - energy.max()) / np.exp(energy - energy.max()).sum()
    return new


positions = np.array([0.0, 1.0, 3.0])
u_hand = -np.log(np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]))  # (N, L): U = -log P
potts = 1.0 - np.eye(2)
q0 = np.exp(-u_hand) / np.exp(-u_hand).sum(axis=1, keepdims=True)
q1 = mean_field_step_naive(u_hand, q0, positions, 1.0, potts)
print("Q before:", q0.round(3).tolist())
print("Q after one update:", q1.round(3).tolist())
# by hand for point 1: the message to label 0 penalises the label-1 mass around it, and vice versa
msg = [sum(np.exp(-0.5 * (1.0 - positions[j]) ** 2) * q0[j, 1 - lab] for j in range(3)) for lab in (0, 1)]
by_hand = np.exp(-np.array(msg)) / np.exp(-np.array(msg)).sum()
print("point 1 by hand:", by_hand.round(3), "(messages", np.round(msg, 3), ")")
np.testing.assert_allclose(q1[1], by_hand, rtol=1e-12)
assert q1[1, 0] > 0.5
np.testing.assert_allclose(
    crf.exact_mean_field(u_hand, [(positions[:, None], 1.0, potts, "none")], iterations=1), q1, rtol=1e-12)

# %% [markdown]
# ## 2 · A photograph and a coarse unary
#
# The photograph is matplotlib's bundled `grace_hopper.jpg` (an official U.S. Navy portrait of
# Grace M. Hopper, public domain as a work of the U.S. federal government), downscaled to
# 161x137 ($8\cdot 20 + 1$ by $8 \cdot 17 + 1$, the odd sizes DeepLab's upsampling likes, see notebook 01).
#
# **The coarse unary.** No trained network is used here (notebook 06 runs one). Instead we build
# a unary that has the *defects* of DeepLab's: scores computed on a grid 8 times coarser than the
# image and upsampled bilinearly ×8 (Caffe's `Interp`, as DeepLab does). The "classifier" is a
# colour clustering: k-means with 4 clusters on a 21x18 block-averaged image. A block's score for
# a label is minus its colour distance to the cluster centre, in units of 20 RGB levels. The
# resulting labels mean colours (skin, blue, red/brown, dark), not objects, but that is enough to
# watch the CRF at work. Inside large regions the scores are right. Across every edge they are an
# 8-pixel-wide ramp that knows nothing about where the edge really is. A seeded *random* logit
# field would have the same resolution but no relation to the picture, so the CRF's result could
# not be judged by eye.

# %%
H, W = 161, 137
photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
image = np.array(photo.resize((W, H), Image.Resampling.LANCZOS))  # (H, W, 3) uint8, RGB, writable
# the classifier sees a 9x9 average around every 8th pixel (rows 0, 8, ..., 160; columns 0, ..., 136):
# exactly the grid that Interp x8 maps back onto those pixels
padded = np.pad(image.astype(np.float64), ((4, 4), (4, 4), (0, 0)), mode="edge")  # (169, 145, 3)
blocks = np.array([[padded[8 * i:8 * i + 9, 8 * j:8 * j + 9].mean(axis=(0, 1)) for j in range(18)]
                   for i in range(21)])  # (21, 18, 3)

rng = np.random.default_rng(0)
colours = blocks.reshape(-1, 3)  # (21*18, 3)
centres = colours[rng.choice(len(colours), 4, replace=False)]
for _ in range(30):  # k-means (Lloyd's iterations)
    nearest = ((colours[:, None] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
    centres = np.array([colours[nearest == k].mean(axis=0) for k in range(4)])
order = np.argsort(-centres.sum(axis=1))  # labels from the brightest centre to the darkest
centres = centres[order]
n_labels = len(centres)
coarse_scores = -np.sqrt(((blocks[None] - centres[:, None, None]) ** 2).sum(axis=3)) / 20.0  # (L, 21, 18)
scores = interp(coarse_scores.astype(np.float32), zoom_factor=8, backend="numpy")  # (L, 161, 137)
unary = -scores  # DeepLab's offline tool: unary = -score
assert scores.shape == (n_labels, H, W)
LABEL_CMAP = ListedColormap(centres / 255.0)  # each label drawn in its cluster's colour
print("cluster centres (RGB):", centres.round().astype(int).tolist())

fig, axes = plt.subplots(1, 3, figsize=(7, 3.0))
axes[0].imshow(image)
axes[0].set_title("image 161x137")
axes[1].imshow(blocks.astype(np.uint8))
axes[1].set_title("21x18 blocks: the classifier's view")
axes[2].imshow(scores.argmax(axis=0), cmap=LABEL_CMAP, vmin=-0.5, vmax=n_labels - 0.5)
axes[2].set_title("argmax of the upsampled scores")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · The two kernels as weight maps around a pixel
#
# How much does one pixel $i$ listen to each other pixel? That is the $i$-th column of $K$, which
# the exact filter gives for a one-hot input. The naive version evaluates Eq. (3) directly. The
# smoothness kernel is a round blob of radius about $\theta_\gamma$. The appearance kernel reaches
# much further ($\theta_\alpha$), but only to pixels of similar colour ($\theta_\beta$). A pixel on
# the face listens to a few patches of the same shade of skin, not to the uniform or the
# background next to it. A pixel of the smooth blue background listens to a large part of it. The
# lattice computes the same column approximately. With a wider colour tolerance, $\theta_\beta = 10$
# (last panel), the face pixel reaches most of the face. The maps show $\log_{10}$ of the weight, from
# $10^{-4}$ (black) to 1, so that the weak weights show.
#
# Parameters: DeepLab v2's VOC preset (`deeplab-v2-resnet101-voc`: $w^{(1)} = 4$,
# $\theta_\alpha = 67$, $\theta_\beta = 3$, $w^{(2)} = 3$, $\theta_\gamma = 1$) is meant for VOC's
# 500x375 photographs. Our image is about 3.1 times smaller, so we scale $\theta_\alpha$ to
# $67 / 3.1 \approx 21$ pixels. $\theta_\gamma = 1$ stays: less than a pixel is below the lattice's
# resolution (notebook 03). For the picture of the smoothness kernel we use $\theta_\gamma = 3$
# (DeepLab v1's value), otherwise it would be a dot.

# %%
W_BILATERAL, THETA_ALPHA, THETA_BETA, W_GAUSSIAN, THETA_GAMMA = 4.0, 21.0, 3.0, 3.0, 1.0
yy, xx = np.mgrid[:H, :W]
feats_bilateral = crf.bilateral_features(image, THETA_ALPHA, THETA_BETA)  # (H*W, 5) float32
feats_smooth = crf.gaussian_features(H, W, 3.0)                            # (H*W, 2) float32
bilateral_lattice = crf.build(feats_bilateral)


def appearance_naive(row, col, theta_alpha, theta_beta):
    """Eq. (3), left term, around pixel (row, col): (H, W) float64."""
    dist2 = (yy - row) ** 2 + (xx - col) ** 2
    colour2 = ((image.astype(np.float64) - image[row, col]) ** 2).sum(axis=2)
    return np.exp(-dist2 / (2 * theta_alpha ** 2) - colour2 / (2 * theta_beta ** 2))


def kernel_maps(row, col):
    """Eq. (3)'s two kernels around pixel (row, col), naive; checked against the exact filter."""
    smooth_map = np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * 3.0 ** 2))
    appearance_map = appearance_naive(row, col, THETA_ALPHA, THETA_BETA)
    one_hot = np.zeros((H * W, 1), np.float32)
    one_hot[row * W + col] = 1.0  # pixel index i = row * W + column
    # the exact filter of the one-hot is the column of K. On a 64x64 window (the whole image, O(N^2),
    # would take seconds) it must equal the maps. The library's features are float32: atol 1e-5.
    window = ((yy >= row - 32) & (yy < row + 32) & (xx >= col - 32) & (xx < col + 32)).ravel()
    for feats, m in [(feats_smooth, smooth_map), (feats_bilateral, appearance_map)]:
        column = crf.exact_filter(feats[window], one_hot[window])[:, 0]
        np.testing.assert_allclose(column, m.ravel()[window], atol=1e-5)
    lattice_map = bilateral_lattice.filter(one_hot)[:, 0].reshape(H, W)
    return smooth_map, appearance_map, lattice_map


face, background = (85, 60), (30, 120)
smooth_face, appearance_face, lattice_face = kernel_maps(*face)
_, appearance_bg, lattice_bg = kernel_maps(*background)
for name, exact_map, lattice_map in [("face", appearance_face, lattice_face),
                                     ("background", appearance_bg, lattice_bg)]:
    print(f"appearance kernel at the {name} pixel: {np.sum(exact_map > 0.01)} pixels above 0.01 "
          f"(lattice: {np.sum(lattice_map > 0.01)})")
print(f"smoothness kernel (theta_gamma 3): {np.sum(smooth_face > 0.01)} pixels above 0.01")

fig, axes = plt.subplots(1, 6, figsize=(11, 2.5))
axes[0].imshow(image)
for (r, c), mark in [(face, "c+"), (background, "y+")]:
    axes[0].plot(c, r, mark, ms=12, mew=2)
axes[0].set_title("face (cyan), backgr. (yellow)")
panels = [(smooth_face, "smoothness, $\\theta_\\gamma$ = 3"),
          (appearance_face, "appearance at the face"), (lattice_face, "... by the lattice"),
          (appearance_bg, "appearance at the background"),
          (appearance_naive(*face, THETA_ALPHA, 10.0), "at the face, $\\theta_\\beta$ = 10")]
for ax, (m, title) in zip(axes[1:], panels):
    ax.imshow(np.log10(np.maximum(m, 1e-4)), cmap=MAGMA32, vmin=-4, vmax=0)
    ax.set_title(title)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4 · Mean field, iteration by iteration
#
# The library's native API speaks the paper's terms: `crf.DenseCRF(unary)` with unary energies
# (L, H, W), `add_bilateral(image, theta_alpha, theta_beta, w)`, `add_gaussian(theta_gamma, w)`,
# and `inference(iterations)`. `start()` and `step(Q)` expose the iterations one by one. The
# figure follows DeepLab's way of showing the CRF at work (the ICLR 2015 paper shows score and belief
# maps for one label after each mean-field iteration). Per iteration: the **score** of the label
# "skin" (the input of the softmax, here $\log Q$ centred over the labels, which differs from it
# only by a per-pixel constant), its **belief** $Q$, and the most likely label.
#
# The assertion checks that stepping by hand gives what `inference(10)` gives.

# %%
def make_crf(unary, w_bilateral=W_BILATERAL, theta_alpha=THETA_ALPHA, theta_beta=THETA_BETA,
             w_gaussian=W_GAUSSIAN, theta_gamma=THETA_GAMMA, normalization="per_pixel"):
    model = crf.DenseCRF(unary)
    model.add_bilateral(image, theta_alpha, theta_beta, w_bilateral, normalization=normalization)
    model.add_gaussian(theta_gamma, w_gaussian, normalization=normalization)
    return model


model = make_crf(unary)
beliefs = [model.start()]  # Q0 = softmax(-U)
for _ in range(10):
    beliefs.append(model.step(beliefs[-1]))
np.testing.assert_allclose(beliefs[-1], model.inference(10), atol=1e-6)
np.testing.assert_allclose(beliefs[0].sum(axis=0), 1.0, atol=1e-5)
changed = [float((b.argmax(0) != beliefs[0].argmax(0)).mean()) for b in beliefs]
print("pixels whose label changed since iteration 0:", [f"{c:.1%}" for c in changed])

skin = 0  # the brightest cluster
shown = [0, 1, 2, 5, 10]


def centred_score(q, label):
    """log Q of one label minus its mean over the labels: the softmax's input up to a per-pixel constant."""
    log_q = np.log(np.maximum(q, 1e-30))
    return log_q[label] - log_q.mean(axis=0)


vmax_score = np.percentile(np.abs(centred_score(beliefs[-1], skin)), 95)
fig, axes = plt.subplots(3, len(shown), figsize=(8.5, 6.1))
for c, it in enumerate(shown):
    axes[0, c].imshow(centred_score(beliefs[it], skin), cmap=RDBU32, vmin=-vmax_score, vmax=vmax_score)
    axes[1, c].imshow(beliefs[it][skin], cmap=MAGMA32, vmin=0, vmax=1)
    axes[2, c].imshow(beliefs[it].argmax(0), cmap=LABEL_CMAP, vmin=-0.5, vmax=n_labels - 0.5)
    axes[0, c].set_title(f"iteration {it}" + (" (unary)" if it == 0 else ""))
axes[0, 0].set_ylabel("score, skin")
axes[1, 0].set_ylabel("belief Q, skin")
axes[2, 0].set_ylabel("labels")
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ### The lattice against the exact mean field
#
# On a 41x35 copy of the image (1435 pixels, small enough for the $O(N^2)$ exact filter), the same
# CRF run with the lattice (`DenseCRF`) and with exact kernels (`crf.exact_mean_field`, the
# reference) gives nearly the same labelling. The lattice's filter is an approximation, so a few
# pixels on boundaries may differ.

# %%
h_s, w_s = 41, 35
image_s = np.asarray(photo.resize((w_s, h_s), Image.Resampling.LANCZOS))
unary_s = np.ascontiguousarray(unary[:, ::4, ::4])  # (L, 41, 35): every 4th pixel of the unary
theta_alpha_s = THETA_ALPHA * h_s / H
model_s = crf.DenseCRF(unary_s)
model_s.add_bilateral(image_s, theta_alpha_s, THETA_BETA, W_BILATERAL)
model_s.add_gaussian(THETA_GAMMA, W_GAUSSIAN)
q_lattice = model_s.inference(10)
kernels = [(crf.bilateral_features(image_s, theta_alpha_s, THETA_BETA), W_BILATERAL, 1 - np.eye(n_labels),
            "per_pixel"),
           (crf.gaussian_features(h_s, w_s, THETA_GAMMA), W_GAUSSIAN, 1 - np.eye(n_labels), "per_pixel")]
q_exact = crf.exact_mean_field(unary_s.reshape(n_labels, -1).T, kernels, 10).T.reshape(n_labels, h_s, w_s)
agree = float((q_lattice.argmax(0) == q_exact.argmax(0)).mean())
print(f"labels agree on {agree:.2%} of the pixels; mean |dQ| = {np.abs(q_lattice - q_exact).mean():.4f}")
assert agree >= 0.97

# %% [markdown]
# ### One label fewer to filter
#
# Every row of $Q$ sums to one, and the lattice filter $K$ is linear, so the filtered last label
# follows from the others: $K Q_{L-1} = K \mathbf{1} - \sum_{l < L-1} K Q_l$, and $K \mathbf{1}$ is
# the per-pixel normaliser, computed once when the kernel is built. With 21 labels (VOC) the CPU
# splats, blurs and slices 20 and derives the 21st (`crf.densecrf.filters_complement` says for
# which label counts it pays). The cell checks the identity on this photograph's bilateral lattice.

# %%
lattice_b = crf.build(crf.bilateral_features(image, THETA_ALPHA, THETA_BETA), backend="cpu")
q_points = np.ascontiguousarray(beliefs[3].reshape(n_labels, -1).T)  # (L, H, W) -> (N, L)
filtered = lattice_b.filter(q_points, backend="cpu")  # (N, L): every label
k_ones = lattice_b.filter(np.ones((q_points.shape[0], 1), np.float32), backend="cpu")[:, 0]
derived = k_ones - filtered[:, :-1].sum(axis=1)
difference = np.abs(derived - filtered[:, -1]) / k_ones  # as the normalised message sees it
print(f"K 1 from {k_ones.min():.1f} to {k_ones.max():.1f}; the last label filtered against derived, "
      f"divided by K 1: max |difference| {difference.max():.1e}")
assert difference.max() < 1e-5
print("label counts that filter one label fewer:",
      [n for n in range(1, 26) if crf.densecrf.filters_complement(n)])

# %% [markdown]
# ## 5 · What each parameter does
#
# One parameter at a time, the others at the values above. Each picture is the labelling after
# 10 iterations; the number is the share of pixels whose label differs from the unary's argmax.
#
# * $w^{(1)}$ (`w_bilateral`): how much the appearance kernel counts. 0 switches it off.
# * $\theta_\alpha$: how far (in pixels) a pixel looks for similar colours. Larger values let
#   distant pixels of the same colour vote.
# * $\theta_\beta$: how similar the colours must be. Small values keep labels inside colour edges,
#   large values let them leak across.
# * $w^{(2)}$ (`w_gaussian`) and $\theta_\gamma$: the smoothness kernel removes small isolated
#   regions, regardless of colour. A large $\theta_\gamma$ rounds the boundaries off.
#
# With both weights at 0 the CRF returns $\mathrm{softmax}(-U)$ (asserted).

# %%
grid = {"w_bilateral": [0.0, 4.0, 12.0], "theta_alpha": [5.0, 21.0, 60.0], "theta_beta": [1.5, 3.0, 12.0],
        "w_gaussian": [0.0, 3.0, 12.0], "theta_gamma": [1.0, 3.0, 8.0]}
unary_labels = scores.argmax(axis=0)
fig, axes = plt.subplots(len(grid), 3, figsize=(6.2, 10.5))
for r, (name, settings) in enumerate(grid.items()):
    for c, value in enumerate(settings):
        labels = make_crf(unary, **{name: value}).inference(10).argmax(axis=0)
        ax = axes[r, c]
        ax.imshow(labels, cmap=LABEL_CMAP, vmin=-0.5, vmax=n_labels - 0.5)
        ax.set_title(f"{name} = {value:g}: {(labels != unary_labels).mean():.1%}", fontsize=8)
        ax.axis("off")
plt.tight_layout()
plt.show()

q_off = make_crf(unary, w_bilateral=0.0, w_gaussian=0.0).inference(10)
softmax = np.exp(scores - scores.max(axis=0)) / np.exp(scores - scores.max(axis=0)).sum(axis=0)
np.testing.assert_allclose(q_off, softmax, atol=1e-6)

# %% [markdown]
# ## 6 · DeepLab's presets
#
# DeepLab tuned the appearance kernel by cross-validation on 100 VOC 2012 val images, searching
# $w^{(1)}$, $\theta_\alpha$ and $\theta_\beta$ with the smoothness kernel fixed ($w^{(2)} = 3$,
# $\theta_\gamma = 3$ in the ICLR 2015 paper, §5; TPAMI 2018 §4.1.1), 10 iterations in every case.
# The values of the released models, with their sources as far as they could be traced, are in
# `crf.PRESETS`. `crf.deeplab_refine(image, scores, preset)` is DeepLab's offline tool: an RGB uint8
# image, unary $= -$score, per-pixel normalisation. It is asserted equal to building the same
# CRF with the native API.
#
# They are meant for 500x375 images. On our 161x137 image a $\theta_\alpha$ of 65-121 pixels spans
# the whole picture, so the appearance kernel links pixels of one colour wherever they are, and
# DeepLab v1's $\theta_\gamma = 3$ smooths more than on a large image.

# %%
for preset in crf.PRESETS.values():
    print(f"{preset.name:26s} w1 {preset.w_bilateral:g}  theta_alpha {preset.theta_alpha:>3g}  "
          f"theta_beta {preset.theta_beta:g}  w2 {preset.w_gaussian:g}  theta_gamma {preset.theta_gamma:g}  "
          f"iterations {preset.iterations}\n{'':26s} source: {preset.source}")

fig, axes = plt.subplots(1, len(crf.PRESETS) + 1, figsize=(10, 3.3))
axes[0].imshow(unary_labels, cmap=LABEL_CMAP, vmin=-0.5, vmax=n_labels - 0.5)
axes[0].set_title("unary argmax")
for ax, preset in zip(axes[1:], crf.PRESETS.values()):
    q = crf.deeplab_refine(image, scores, preset.name)
    p = preset
    native = make_crf(unary, p.w_bilateral, p.theta_alpha, p.theta_beta, p.w_gaussian, p.theta_gamma)
    np.testing.assert_allclose(q, native.inference(p.iterations), atol=1e-6)
    ax.imshow(q.argmax(axis=0), cmap=LABEL_CMAP, vmin=-0.5, vmax=n_labels - 0.5)
    ax.set_title(p.name, fontsize=8)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7 · The free energy falls
#
# Mean field minimises $\mathrm{KL}(Q\,\|\,P)$ over factorised $Q$. $\log Z$ is unknown, so the
# library reports the free energy $F(Q) = \mathrm{KL}(Q\,\|\,P) - \log Z$ (see
# `DenseCRF.free_energy`):
#
# $$ F(Q) = \sum_{i,l} Q_i(l) \log Q_i(l) + \sum_{i,l} \psi_u(l)\, Q_i(l)
#    + \tfrac12 \sum_m w^{(m)} \sum_{i,l} Q_i(l) \big[(N_m K_m Q)\,\mu\big]_i(l) .$$
#
# Only differences matter, and $F$ can be negative. Kraehenbuehl & Koltun update all pixels at once
# (parallel updates), which is not guaranteed to decrease $F$ at every step, but it falls overall,
# fastest in the first iterations: here with the settings above, and with much stronger weights
# ($w^{(1)} = w^{(2)} = 12$). The plot shows the distance to the last value, on a log scale.

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
for label, m in [("w1 4, theta_alpha 21, w2 3 (above)", make_crf(unary)),
                 ("w1 12, w2 12 (strong)", make_crf(unary, w_bilateral=12.0, w_gaussian=12.0))]:
    m.inference(10, track_free_energy=True)
    kl = np.array(m.free_energy_history)
    print(f"{label}: F from {kl[0]:.0f} to {kl[-1]:.0f}; steps that decreased it: "
          f"{int((np.diff(kl) < 0).sum())} of {len(kl) - 1}")
    assert kl[-1] < kl[0] and kl[-1] <= kl[1] and (np.diff(kl) < 0).sum() >= len(kl) // 2
    ax.plot(range(len(kl) - 1), kl[:-1] - kl[-1], "o-", label=label)  # the last point would be 0
ax.set_yscale("log")
ax.set_xlabel("iteration t")
ax.set_ylabel("$F(Q_t) - F(Q_{10})$")
ax.set_title("free energy per mean-field iteration")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8 · pydensecrf users change one import
#
# Most people run this CRF through `pydensecrf`, whose native build is a frequent stumbling block.
# With this library, `import pydensecrf.densecrf as dcrf` becomes `import crf.compat as dcrf` (or
# `crf.compat.densecrf`), and `pydensecrf.utils` becomes `crf.compat.utils`. `crf.compat` mirrors
# its API (`DenseCRF2D(width, height, n_labels)`, `setUnaryEnergy`, `addPairwiseGaussian`,
# `addPairwiseBilateral`, `inference`, the `NORMALIZE_*` constants) and its conventions. Two of
# them matter here:
#
# * the **weight goes into `compat`**: pydensecrf's scalar compat is an attraction of that
#   strength, which for Potts is the same as our penalty $w\,[l \ne l']$;
# * pydensecrf's **default normalisation is symmetric**, $D^{-1/2} K D^{-1/2}$; DeepLab divides
#   per pixel after filtering, `NORMALIZE_AFTER`, the native API's `"per_pixel"`.
#
# The function below is written for pydensecrf and receives the module as an argument. Called with
# `crf.compat` it equals the native API with the matching normalisation, both for DeepLab's choice
# and for pydensecrf's default. When pydensecrf itself is installed, the very same function runs on
# it too, for comparison.

# %%
def refine_with(dcrf_module, image, unary, normalization):
    """pydensecrf-style code: the module is `pydensecrf.densecrf` or `crf.compat`."""
    n_lab, h, w = unary.shape
    d = dcrf_module.DenseCRF2D(w, h, n_lab)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n_lab, -1)))  # (L, H*W)
    d.addPairwiseBilateral(sxy=THETA_ALPHA, srgb=THETA_BETA, rgbim=image, compat=W_BILATERAL,
                           normalization=normalization)
    d.addPairwiseGaussian(sxy=THETA_GAMMA, compat=W_GAUSSIAN, normalization=normalization)
    return np.array(d.inference(10)).reshape(n_lab, h, w)


unary_c = np.ascontiguousarray(unary, dtype=np.float32)
for compat_norm, native_norm in [(dcrf.NORMALIZE_AFTER, "per_pixel"),
                                 (dcrf.NORMALIZE_SYMMETRIC, "symmetric")]:
    q_compat = refine_with(dcrf, image, unary_c, compat_norm)
    q_native = make_crf(unary_c, normalization=native_norm).inference(10)
    print(f"crf.compat vs native ({native_norm}): max |dQ| = {np.abs(q_compat - q_native).max():.1e}")
    np.testing.assert_allclose(q_compat, q_native, atol=1e-5)

if importlib.util.find_spec("pydensecrf") is not None:
    import pydensecrf.densecrf as pydensecrf_module
    q_ours = refine_with(dcrf, image, unary_c, dcrf.NORMALIZE_AFTER)
    q_theirs = refine_with(pydensecrf_module, image, unary_c, pydensecrf_module.NORMALIZE_AFTER)
    print(f"pydensecrf installed: the same code on it gives the same labels on "
          f"{(q_ours.argmax(0) == q_theirs.argmax(0)).mean():.2%} of the pixels, "
          f"mean |dQ| = {np.abs(q_ours - q_theirs).mean():.1e}")
    assert (q_ours.argmax(0) == q_theirs.argmax(0)).mean() >= 0.999
else:
    print("pydensecrf is not installed here: only crf.compat was run")

# %% [markdown]
# ## 9 · Memory, and images too large to refine whole
#
# Everything the CRF holds grows with the number of pixels N:
#
# * the unary and Q, $(N, L)$ float32 each (the last update writes the result into Q's buffer);
# * per kernel, its lattice: each pixel's $d+1$ vertices and weights, stored twice (once per
#   pixel, once per vertex for the splat), and two neighbours per vertex and axis;
# * per kernel, the lattice values that mean field filters: two $(M+1, L)$ buffers for $M$ vertices
#   ($(M+1, L-1)$ where the last label is derived, as in section 4).
#
# `crf.memory.estimate_bytes` adds these up. Once the lattices are built and $M$ is known
# (`summary()` reports it), the sum is exact. Before the build it assumes $M = 1.2\,N$ for the
# bilateral lattice and $1.2\,N/\theta_\gamma^2$ for the Gaussian one, as measured on photographs
# with DeepLab's widths. That is about $19L + 250$ bytes a pixel ($19L + 240$ where the last label
# is derived): 0.64 GB a megapixel at 21 labels.
#
# A photograph of tens of megapixels would not fit, so it is refined at a reduced size
# (`crf.deeplab_refine(..., max_side=N)`, `deeplab crf --max-side N`, module `crf.reduced`):
#
# 1. the image and the scores are averaged down so that the long side is N;
# 2. $\theta_\alpha$ and $\theta_\gamma$, widths in pixels, shrink by the same factor, while
#    $\theta_\beta$, a width in colour, stays;
# 3. Q is enlarged back bilinearly.
#
# The CRF then places boundaries to within a pixel of the small image. Below, our image is refined
# at full size and at half size, and the two results are compared.

# %%
p = crf.get_preset("deeplab-v1-largefov-voc")
model = crf.deeplab_crf(image, scores, p)
q_full = model.inference(p.iterations)
m_bilateral, m_gaussian = (k.lattice.n_vertices for k in model.kernels)
known = crf.memory.estimate_bytes(H, W, n_labels, p.theta_gamma, m_bilateral, m_gaussian)
before = crf.memory.estimate_bytes(H, W, n_labels, p.theta_gamma)
print(f"{H}x{W}, {n_labels} labels: {m_bilateral:,} + {m_gaussian:,} vertices, {known / 2**20:.1f} MiB held; "
      f"estimated before the build: {before / 2**20:.1f} MiB")
print(f"a 24-megapixel photograph with 21 labels: about "
      f"{crf.memory.estimate_bytes(4000, 6000, 21, p.theta_gamma) / 2**30:.0f} GiB")

q_half = crf.deeplab_refine(image, scores, p, max_side=H // 2)
agree = (q_half.argmax(0) == q_full.argmax(0)).mean()
print(f"refined at {crf.reduced.reduced_shape(H, W, H // 2)} and enlarged: the same label as at full size "
      f"on {agree:.1%} of the pixels (the unary's argmax: {(unary_labels == q_full.argmax(0)).mean():.1%})")
assert q_half.shape == q_full.shape
np.testing.assert_allclose(q_half.sum(axis=0), 1, atol=1e-5)
assert agree > 0.85

fig, axes = plt.subplots(1, 3, figsize=(7, 3.0))
for ax, q, title in ((axes[0], q_full, f"full size, {H}x{W}"), (axes[1], q_half, "half size, enlarged")):
    ax.imshow(q.argmax(axis=0), cmap=LABEL_CMAP, vmin=-0.5, vmax=n_labels - 0.5)
    ax.set_title(title, fontsize=9)
axes[2].imshow(q_half.argmax(0) != q_full.argmax(0), cmap="gray_r")
axes[2].set_title("where they differ", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What to take away
#
# * The dense CRF's energy (Eq. (1)-(3)) links every pair of pixels through two Gaussian kernels:
#   one over position and colour (edges), one over position only (smoothness).
# * Mean field (Eq. (4)) turns inference into repeated Gaussian filtering of the beliefs, $O(N)$ per
#   iteration with the permutohedral lattice; 10 iterations move the coarse unary's boundaries
#   onto the image's edges, and most of the change happens in the first two or three.
# * The parameters trade reach ($\theta_\alpha$), colour selectivity ($\theta_\beta$) and smoothing
#   ($w^{(2)}, \theta_\gamma$); DeepLab's presets were tuned for VOC-sized images.
# * `import crf.compat as dcrf` runs pydensecrf code unchanged, with DeepLab's normalisation
#   available as `NORMALIZE_AFTER`.
# * Memory grows with the pixels, about 0.64 GB a megapixel at 21 labels (`crf.memory`); a larger
#   image is refined at a reduced size, its spatial widths scaled with it (`max_side`).
