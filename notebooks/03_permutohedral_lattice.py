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
# # 03 · The permutohedral lattice
#
# **Why.** DeepLab's CRF (notebook 04) needs, in every mean-field iteration, the sum of the
# beliefs of *all* other pixels weighted by a Gaussian of their distance in some feature space:
# position for the smoothness kernel, position and colour for the appearance kernel. Written out,
# this is the Gaussian filter (Kraehenbuehl & Koltun, NIPS 2011, the kernel of **Eq. (3)**, used in
# the update of **Eq. (4)**):
#
# $$ (K v)_i = \sum_{j=1}^{N} \exp\!\Big(-\tfrac12 \lvert f_i - f_j \rvert^2\Big)\, v_j ,$$
#
# with features $f$ already divided by their standard deviations (e.g. $f = (x, y)/\theta_\gamma$).
# For a 500x375 image that is $N^2 \approx 3.5 \cdot 10^{10}$ terms per label and iteration: out of
# reach. Kraehenbuehl & Koltun (§4) replace it by the **permutohedral lattice** of Adams, Baek &
# Davis (Eurographics 2010, §3-4), which costs $O(N)$:
#
# 1. **embed** the $d$-dimensional features in the hyperplane $H_d = \{x \in \mathbb{R}^{d+1}:
#    \sum_k x_k = 0\}$, which the lattice tiles with simplices;
# 2. find each point's **enclosing simplex** (rounding to a "remainder-0" lattice point, then a sort);
# 3. its **barycentric weights** in that simplex;
# 4. **splat**: every point adds its value to its $d+1$ vertices, weighted;
# 5. **blur**: a $[\tfrac12, 1, \tfrac12]$ filter between neighbouring vertices along each of the
#    $d+1$ lattice directions;
# 6. **slice**: read the blurred values back at every point with the same weights.
#
# Everything here is in $d = 2$ so that it can be drawn. Each step is first written as a
# deliberately naive teaching version (Python loops, dictionaries, a linear solve) and then
# compared in an assertion with the library: the lattice object of `crf.build` (its attributes
# `offsets`, `weights`, `keys`, `n1`, `n2`, `starts`, `splat_point`, `splat_weight`) and the NumPy
# reference `crf.lattice_reference`. At the end the lattice is measured against the exact filter
# `crf.exact_filter`, for accuracy and for cost.

# %%
import time

import matplotlib.pyplot as plt
import matplotlib.tri as mtri
import numpy as np

import crf
from crf.lattice import splat_blur_cpu
from crf.lattice_reference import embed_numpy, feature_scale, slice_alpha, vertex_keys_numpy

plt.rcParams.update({"figure.dpi": 72, "axes.titlesize": 10, "image.interpolation": "nearest"})

# %% [markdown]
# ## 1 · The filter we want, on three points
#
# Three points on a line, one standard deviation apart, $f = 0, 1, 2$, with values
# $v = (1, 0, 0)$. By hand: $(Kv)_0 = e^0 = 1$, $(Kv)_1 = e^{-1/2} \approx 0.607$,
# $(Kv)_2 = e^{-2} \approx 0.135$. The exact filter of the library agrees. Dividing by $K\mathbf 1$
# (the sum of the weights each point receives) gives the **normalised** filter $D^{-1}Kv$ with
# $D = \mathrm{diag}(K\mathbf 1)$, a weighted average. This is what DeepLab's CRF uses.

# %%
f3 = np.array([[0.0], [1.0], [2.0]])
v3 = np.array([[1.0], [0.0], [0.0]])
k_v = crf.exact_filter(f3, v3)[:, 0]
by_hand = np.array([1.0, np.exp(-0.5), np.exp(-2.0)])
print("K v        =", k_v.round(4))
np.testing.assert_allclose(k_v, by_hand, rtol=1e-12)
k_1 = crf.exact_filter(f3, np.ones((3, 1)))[:, 0]
print("D^-1 K v   =", (k_v / k_1).round(4), " (K 1 =", k_1.round(4), ")")

# %% [markdown]
# ## 2 · Embedding: elevate the features onto the hyperplane $H_d$
#
# Adams et al. (§3) use a $(d+1)\times d$ matrix $E_d$ whose columns are an orthonormal basis of
# $H_d$: column $j$ ($j = 1..d$) holds $1$ in rows $0..j-1$, $-j$ in row $j$, and zeros below,
# divided by $\sqrt{j(j+1)}$. Every column sums to zero, so $E_d f$ lies in $H_d$, and $E_d$ keeps
# distances. Kraehenbuehl's code multiplies by one more constant, $\sqrt{2/3}\,(d+1)$. It makes the
# lattice's blur (three taps per direction, $d+1$ directions) approximate a Gaussian of standard
# deviation 1 in the *original* feature units. The library stores both factors together as a
# per-feature scale, `feature_scale(d)` $= \sqrt{2/3}\,(d+1)/\sqrt{(i+1)(i+2)}$.
#
# Hand check for $d = 2$: the constant is $\sqrt{2/3}\cdot 3 = \sqrt 6$, so distances grow by
# $\sqrt 6 \approx 2.449$, and every elevated point's three coordinates sum to 0.
#
# The **lattice** $A_d^*$ (scaled by $d+1$) consists of the integer points of $H_d$ whose
# coordinates are all congruent modulo $d+1$. The common remainder $k \in \{0..d\}$ sorts them into
# $d+1$ classes. In 2-D they form a triangular grid: adjacent points are exactly one standard
# deviation apart in feature units. The pictures below map lattice points back to the feature plane
# with $E_d^\top / \sqrt 6$.
#
# The library does not keep the elevated points, only what the next steps derive from them. The
# naive embedding is therefore checked here through the scale, and in section 3 through the
# rounding and ranks it leads to.

# %%
d = 2
C = np.sqrt(2.0 / 3.0) * (d + 1)  # sqrt(6) for d = 2


def embedding_matrix(d):
    """E_d of Adams et al.: (d+1, d), orthonormal columns spanning {x : sum(x) = 0}."""
    e = np.zeros((d + 1, d))
    for j in range(1, d + 1):
        e[:j, j - 1] = 1.0
        e[j, j - 1] = -j
        e[:, j - 1] /= np.sqrt(j * (j + 1))
    return e


E = embedding_matrix(d)
np.testing.assert_allclose(E.T @ E, np.eye(d), atol=1e-12)         # orthonormal columns
np.testing.assert_allclose(E.sum(axis=0), 0.0, atol=1e-12)         # columns lie in H_d
# the library's per-feature scale is the column normalisation times sqrt(2/3) (d+1)
np.testing.assert_allclose(feature_scale(d), C / np.sqrt([2.0, 6.0]), rtol=1e-6)

# a small 2-D point set: two clusters with values 1 (left) and 0 (right), and two lone points
rng = np.random.default_rng(3)
points = np.concatenate([rng.normal([1.2, 1.4], 0.45, (9, 2)), rng.normal([3.6, 1.8], 0.45, (9, 2)),
                         [[2.4, 3.3], [4.6, 0.2]]]).astype(np.float32)          # (N, 2) = (20, 2)
values = np.concatenate([np.ones(9), np.zeros(9), [1.0, 0.0]]).astype(np.float32)[:, None]  # (N, 1)
n_points = len(points)

elevated = C * points.astype(np.float64) @ E.T  # (N, 3): the naive embedding
print("first point", points[0], "-> elevated", elevated[0].round(3), " sum", elevated[0].sum().round(12))
np.testing.assert_allclose(elevated.sum(axis=1), 0.0, atol=1e-12)
dist_f = np.linalg.norm(points[0] - points[1])
dist_e = np.linalg.norm(elevated[0] - elevated[1])
print(f"distance in features {dist_f:.4f}, elevated {dist_e:.4f}, ratio {dist_e / dist_f:.4f} = sqrt(6)")
assert abs(dist_e / dist_f - np.sqrt(6)) < 1e-5


def lattice_points(lo, hi):
    """All lattice points whose feature-plane image lies in the box [lo, hi]^2: (P, 3) int and remainders."""
    r = int(np.ceil(C * max(abs(lo), abs(hi)) * 2)) + 3
    a, b = np.mgrid[-r:r + 1, -r:r + 1]
    keep = (a - b) % (d + 1) == 0  # all three coordinates congruent modulo d+1
    p = np.stack([a[keep], b[keep], -a[keep] - b[keep]], axis=1)  # (P, 3), sum 0
    xy = p @ E / C  # (P, 2): back to feature units
    inside = ((xy >= lo) & (xy <= hi)).all(axis=1)
    return p[inside], xy[inside], p[inside, 0] % (d + 1)


def to_plane(p):
    """Lattice or elevated points (.., 3) -> feature-plane coordinates (.., 2)."""
    return np.asarray(p, dtype=np.float64) @ E / C


grid_p, grid_xy, grid_rem = lattice_points(-0.8, 5.6)
grid_tri = mtri.Triangulation(grid_xy[:, 0], grid_xy[:, 1])
np.testing.assert_allclose(to_plane(elevated), points, atol=1e-5)  # E^T undoes the embedding

fig = plt.figure(figsize=(10, 4))
ax3 = fig.add_subplot(1, 2, 1, projection="3d")
near = np.abs(grid_p).max(axis=1) <= 9
for k, colour in zip(range(d + 1), ["C3", "C0", "C2"]):
    sel = near & (grid_rem == k)
    ax3.scatter(*grid_p[sel].T, s=14, color=colour, label=f"remainder {k}")
ax3.scatter(*elevated.T, s=10, color="k", label="elevated points")
ax3.set_title("elevated into $H_2$: $x_0 + x_1 + x_2 = 0$")
ax3.view_init(elev=35, azim=45)
ax3.legend(fontsize=7, loc="upper left")
ax = fig.add_subplot(1, 2, 2)
ax.triplot(grid_tri, color="0.8", lw=0.7)
for k, colour in zip(range(d + 1), ["C3", "C0", "C2"]):
    sel = grid_rem == k
    ax.scatter(*grid_xy[sel].T, s=30 if k == 0 else 14, color=colour, label=f"remainder {k}", zorder=2)
ax.scatter(*points.T, c=values[:, 0], cmap="coolwarm", vmin=0, vmax=1, s=25, edgecolor="k", zorder=3,
           label="points (value 1 red, 0 blue)")
ax.set_aspect("equal")
ax.set_xlim(-0.8, 5.6)
ax.set_ylim(-0.8, 4.2)
ax.set_title("the same plane in feature units: triangles of side 1")
ax.legend(fontsize=7, loc="upper right")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3 · The enclosing simplex: round to remainder 0, then sort
#
# Which triangle contains a point? Conway & Sloane's rule, as Adams et al. use it:
#
# 1. round every coordinate of the elevated point $x$ to the nearest multiple of $d+1$: the point
#    $r_0$. It may leave $H_d$: its coordinates sum to $(d+1)\,h$ for a small integer $h$;
# 2. sort the residuals $x - r_0$, largest first: `rank[i]` is coordinate $i$'s place in that order;
# 3. repair the sum: add $h$ to every rank; a coordinate whose rank falls below 0 (or above $d$)
#    gets its rounding changed by $+(d+1)$ (or $-(d+1)$) and its rank wrapped;
# 4. the $d+1$ vertices are $v_k = r_0 + k\,\mathbf 1 - (d+1)\,[\mathrm{rank} > d-k]$,
#    $k = 0..d$: vertex $k$ has remainder $k$.
#
# The sort decides which of the $(d+1)!$ simplices around $r_0$ holds the point: six triangles,
# a hexagon, in 2-D. The naive version below loops over the points. The library's reference
# `embed_numpy` must give the same $r_0$ and ranks, and the lattice's vertex keys (the first $d$
# coordinates; the last is minus their sum) at `keys[offsets[i, k]]` the same vertices.

# %%
def enclosing_simplex_naive(x):
    """Remainder-0 point, ranks and the d+1 vertices (rows, remainder 0..d) of the simplex around x."""
    d1 = len(x)
    rem0 = np.round(x / d1) * d1
    residual = x - rem0
    rank = np.argsort(np.argsort(-residual, kind="stable"), kind="stable")  # 0 = largest residual
    h = int(round(rem0.sum() / d1))
    rank = rank + h
    for i in range(d1):
        if rank[i] < 0:
            rank[i] += d1
            rem0[i] += d1
        elif rank[i] > d1 - 1:
            rank[i] -= d1
            rem0[i] -= d1
    vertices = np.array([rem0 + k - d1 * (rank > d1 - 1 - k) for k in range(d1)])  # (d+1, d+1)
    return rem0.astype(int), rank, vertices.astype(int)


simplices = [enclosing_simplex_naive(x) for x in elevated]
naive_rem0 = np.array([s[0] for s in simplices])      # (N, 3)
naive_rank = np.array([s[1] for s in simplices])      # (N, 3)
naive_vertices = np.array([s[2] for s in simplices])  # (N, 3 vertices, 3 coordinates)

lat = crf.build(points, backend="numpy")  # the lattice object of the NumPy reference
print(lat)
lib_rem0, lib_rank, lib_weights = embed_numpy(points)
np.testing.assert_array_equal(naive_rem0, lib_rem0)
np.testing.assert_array_equal(naive_rank, lib_rank)
np.testing.assert_array_equal(naive_vertices[:, :, :d], vertex_keys_numpy(lib_rem0, lib_rank))
np.testing.assert_array_equal(naive_vertices[:, :, :d], lat.keys[lat.offsets])  # keys[offsets[i, k]]
assert (naive_vertices.sum(axis=2) == 0).all()                                   # vertices lie in H_d
assert all(((v - v[0]) % (d + 1) == 0).all() for v in naive_vertices[:, 1])       # vertex 1: remainder 1
print("point 0: r0 =", naive_rem0[0], " rank =", naive_rank[0], " vertices =", naive_vertices[0].tolist())

# %% [markdown]
# ## 4 · Barycentric weights
#
# Inside its simplex a point is a unique convex combination of the vertices,
# $x = \sum_k b_k v_k$ with $\sum_k b_k = 1$ and $b_k \ge 0$. The teaching version simply solves that
# linear system. The library computes the same weights in $O(d)$ from the sorted residuals
# (Adams et al. §3), stored as `lattice.weights[i, k]` for vertex `offsets[i, k]`. All weights are
# non-negative: the point is indeed inside the simplex the sort chose.

# %%
naive_weights = np.empty((n_points, d + 1))
for i in range(n_points):
    system = np.vstack([naive_vertices[i].T, np.ones(d + 1)])  # (d+2, d+1): coordinates and sum = 1
    naive_weights[i] = np.linalg.lstsq(system, np.append(elevated[i], 1.0), rcond=None)[0]
print("point 0: weights", naive_weights[0].round(4), " library", lat.weights[0])
np.testing.assert_allclose(naive_weights, lat.weights, atol=2e-6)
np.testing.assert_allclose(naive_weights, lib_weights, atol=2e-6)
assert (lat.weights >= -1e-6).all()
np.testing.assert_allclose(lat.weights.sum(axis=1), 1.0, atol=1e-6)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax in axes:
    ax.triplot(grid_tri, color="0.85", lw=0.7)
    ax.set_aspect("equal")
ax = axes[0]
for i in range(n_points):
    corners = to_plane(naive_vertices[i])
    ax.fill(*corners.T, color="C1", alpha=0.25, lw=0)
    r0 = to_plane(naive_rem0[i])
    ax.plot([points[i, 0], r0[0]], [points[i, 1], r0[1]], color="C3", lw=0.8)
ax.scatter(*grid_xy[grid_rem == 0].T, s=30, color="C3", zorder=2, label="remainder-0 points")
ax.scatter(*points.T, s=12, color="k", zorder=3, label="points, linked to their $r_0$")
ax.set_xlim(-0.8, 5.6)
ax.set_ylim(-0.8, 4.2)
ax.set_title("every point's enclosing triangle (shaded)")
ax.legend(fontsize=7, loc="upper right")
ax = axes[1]
i = 0
corners = to_plane(naive_vertices[i])
ax.fill(*corners.T, color="C1", alpha=0.3, lw=0)
for k in range(d + 1):
    ax.plot(*corners[k], "o", color=["C3", "C0", "C2"][k], ms=9)
    ax.annotate(f"$v_{k}$: $b_{k}$ = {lat.weights[i, k]:.3f}", corners[k], xytext=(6, 6),
                textcoords="offset points", fontsize=9)
ax.plot(*points[i], "k*", ms=12)
ax.set_xlim(corners[:, 0].min() - 0.5, corners[:, 0].max() + 1.0)
ax.set_ylim(corners[:, 1].min() - 0.4, corners[:, 1].max() + 0.4)
ax.set_title(f"point 0 and its barycentric weights (sum {lat.weights[i].sum():.3f})")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5 · Splat
#
# Every point adds $b_k\, v_i$ to each of its $d+1$ vertices. Only vertices that some point touches
# exist: here `lat.n_vertices` of them, in general at most $N(d+1)$. The naive version is a
# dictionary from vertex key to value. The library cannot simply add into the lattice in parallel:
# two threads could add to one vertex at once, and Numba's CPU target has no atomics. It therefore
# builds once a **splat index** (compressed rows: vertex $m$'s entries are
# `splat_point[starts[m]:starts[m+1]]` with weights `splat_weight[...]`), so that the splat becomes
# a gather that every vertex does on its own.

# %%
def splat_naive(vertices, weights, vals):
    """{vertex key (first d coordinates): sum of weight * value} over all points and corners."""
    grid = {}
    for i in range(len(vals)):
        for k in range(vertices.shape[1]):
            key = tuple(vertices[i, k, :-1])
            grid[key] = grid.get(key, 0.0) + weights[i, k] * vals[i]
    return grid


splatted = splat_naive(naive_vertices, naive_weights, values[:, 0])
assert len(splatted) == lat.n_vertices
# the library's index, read as a gather: vertex m sums weight * value over its entries
gather = np.array([(lat.splat_weight[lat.starts[m]:lat.starts[m + 1]]
                    * values[lat.splat_point[lat.starts[m]:lat.starts[m + 1]], 0]).sum()
                   for m in range(lat.n_vertices)])
np.testing.assert_allclose([splatted[tuple(key)] for key in lat.keys], gather, atol=1e-6)
print(f"{n_points} points splat onto {lat.n_vertices} vertices; total mass {gather.sum():.4f} "
      f"= sum of the values {values.sum():.1f}")
assert abs(gather.sum() - values.sum()) < 1e-5  # barycentric weights sum to 1: no mass is lost

# %% [markdown]
# ## 6 · Blur
#
# Along each lattice direction $j = 0..d$ in turn, every vertex becomes
# $v + \tfrac12 (v_{n_1} + v_{n_2})$, where $n_{1,2}$ are its two neighbours along $j$: key
# $\mp 1$ in every coordinate and $\pm(d+1)$ in coordinate $j$ (one standard deviation away). An
# absent neighbour counts as 0. The library finds the neighbours once, at build time (`lat.n1[j]`,
# `lat.n2[j]`, with `lat.n_vertices` meaning "absent"); its CPU kernel `splat_blur_cpu` returns the
# splatted and blurred values. The naive version looks the neighbours up in the dictionary.

# %%
def blur_naive(grid, d):
    """Blur the {key: value} lattice along the d+1 directions in increasing order."""
    for j in range(d + 1):
        step = np.full(d + 1, -1)
        step[j] += d + 1
        grid = {key: val + 0.5 * (grid.get(tuple(np.add(key, step[:d])), 0.0)
                                  + grid.get(tuple(np.subtract(key, step[:d])), 0.0))
                for key, val in grid.items()}
    return grid


blurred = blur_naive(splatted, d)
lib_blurred = splat_blur_cpu(lat, values)  # (M+1, 1), row M is the zero "absent" row
naive_in_lattice_order = np.array([blurred[tuple(key)] for key in lat.keys])
np.testing.assert_allclose(naive_in_lattice_order, lib_blurred[:lat.n_vertices, 0], atol=1e-6)
# the neighbour tables agree with the key arithmetic
for j in range(d + 1):
    step = np.full(d, -1)
    if j < d:
        step[j] += d + 1
    has = lat.n1[j] < lat.n_vertices
    np.testing.assert_array_equal(lat.keys[lat.n1[j][has]], lat.keys[has] + step)
print("vertices with a neighbour along each direction:",
      [int((lat.n1[j] < lat.n_vertices).sum()) for j in range(d + 1)])

# %% [markdown]
# ## 7 · Slice
#
# Each point reads its $d+1$ vertices back with its barycentric weights and multiplies by
# Kraehenbuehl's constant $\alpha = 1/(1 + 2^{-d})$ (`slice_alpha(d)`). The constant cancels in the
# normalised filter $D^{-1}Kv$, which divides by the lattice's own $K\mathbf 1$. The naive slice must
# equal `lattice.filter` (splat, blur and slice in one call) on the NumPy reference and on the
# Numba CPU backend. The picture follows one value through the three stages; the last panel
# compares the sliced, normalised values with the exact normalised filter.

# %%
alpha = float(slice_alpha(d))
sliced = np.array([alpha * sum(naive_weights[i, k] * blurred[tuple(naive_vertices[i, k, :-1])]
                               for k in range(d + 1)) for i in range(n_points)])
np.testing.assert_allclose(sliced, lat.filter(values, backend="numpy")[:, 0], atol=1e-5)
np.testing.assert_allclose(sliced, lat.filter(values, backend="cpu")[:, 0], atol=1e-5)
lat_cpu = crf.build(points, backend="cpu")  # the parallel build numbers the vertices differently
np.testing.assert_allclose(lat_cpu.filter(values, backend="cpu")[:, 0], sliced, atol=1e-5)

ones = np.ones_like(values)
lattice_norm = sliced / lat.filter(ones, backend="numpy")[:, 0]             # D^-1 K v, lattice
exact_norm = (crf.exact_filter(points, values) / crf.exact_filter(points, ones))[:, 0]
print(f"alpha = {alpha:.4f}; normalised filter, lattice vs exact: max |error| = "
      f"{np.abs(lattice_norm - exact_norm).max():.3f}")
assert np.abs(lattice_norm - exact_norm).max() < 0.12

vertex_xy = to_plane(np.column_stack([lat.keys, -lat.keys.sum(axis=1)]))  # (M, 2)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
stages = [("splat: vertex values", np.array([splatted[tuple(k)] for k in lat.keys])),
          ("blur: vertex values", naive_in_lattice_order)]
for ax, (title, vals) in zip(axes[:2], stages):
    ax.triplot(grid_tri, color="0.88", lw=0.6)
    sc = ax.scatter(*vertex_xy.T, c=vals, cmap="viridis", s=40, edgecolor="k", lw=0.3, zorder=2)
    ax.scatter(*points.T, s=5, color="w", zorder=3)
    plt.colorbar(sc, ax=ax, shrink=0.7)
    ax.set_title(title)
ax = axes[2]
ax.plot(exact_norm, lattice_norm, "o", ms=5)
ax.plot([0, 1], [0, 1], "k--", lw=0.8)
ax.set_xlabel("exact $D^{-1}Kv$")
ax.set_ylabel("lattice $D^{-1}Kv$ (sliced)")
ax.set_title("slice: lattice vs exact, per point")
for ax in axes[:2]:
    ax.set_aspect("equal")
    ax.set_xlim(-0.8, 5.6)
    ax.set_ylim(-0.8, 4.2)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8 · Accuracy: the lattice against the exact Gaussian filter, as sigma varies
#
# The lattice is an approximation: its cells are one standard deviation wide, so it resolves the
# Gaussian well when many points share a cell and poorly when the points are about as far apart as
# the kernel is wide. The test below is the CRF's smoothness kernel itself: the pixel grid of a
# 40x40 image, features $(x, y)/\sigma$, random values in $[0, 1]$, and $\sigma$ (in pixels) from
# 0.5 to 12. We measure the normalised filter $D^{-1}Kv$ (what the CRF uses) and, separately, the
# ratio of the unnormalised $K\mathbf 1$ of the lattice to the exact one.
#
# The library documents the normalised filter's error bound, measured on random point clouds
# (`crf/lattice.py`): at most **0.12** (mean 0.011) in $d = 2$ and **0.29** in $d = 5$. On the pixel
# grid the error stays under that bound from $\sigma = 1$ pixel on (DeepLab's smallest
# $\theta_\gamma$) and falls as $\sigma$ grows. At $\sigma = 0.5$ the pixels are two standard
# deviations apart, more than a lattice cell, and the error reaches about 0.2: the lattice
# over-smooths. The unnormalised $K\mathbf 1$ is off by a factor that depends on the density of the
# points (0.6 to 0.9 here), one reason to normalise. The last cell repeats the library's own
# random-cloud setting for $d = 2$ and $d = 5$ against the tested bounds.

# %%
side = 40
gy, gx = np.mgrid[:side, :side].astype(np.float32)
pixels = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (1600, 2)
rand_values = rng.random((side * side, 3)).astype(np.float32)
ones_grid = np.ones((side * side, 1), np.float32)
sigmas = [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0]
max_err, mean_err, ratio = [], [], []
for sigma in sigmas:
    feats = pixels / np.float32(sigma)
    grid_lat = crf.build(feats, backend="cpu")
    k1_lat = grid_lat.filter(ones_grid, backend="cpu")
    k1_exact = crf.exact_filter(feats, ones_grid)
    err = np.abs(grid_lat.filter(rand_values, backend="cpu") / k1_lat
                 - crf.exact_filter(feats, rand_values) / k1_exact)
    max_err.append(err.max())
    mean_err.append(err.mean())
    ratio.append(float(np.mean(k1_lat / k1_exact)))
    # a constant stays constant under the normalised filter
    np.testing.assert_allclose(grid_lat.filter(3 * ones_grid, backend="cpu") / k1_lat, 3.0, rtol=1e-6)
for s, mx, mn, r in zip(sigmas, max_err, mean_err, ratio):
    print(f"sigma {s:5.1f} px: max |error| {mx:.4f}  mean {mn:.4f}   K1 lattice / exact {r:.3f}")
assert all(mx <= 0.12 for s, mx in zip(sigmas, max_err) if s >= 1.0)
assert max_err[-1] < max_err[2] and mean_err[-1] < mean_err[2]  # wider kernels are more accurate

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].loglog(sigmas, max_err, "o-", label="max |error|")
axes[0].loglog(sigmas, mean_err, "s-", label="mean |error|")
axes[0].axhline(0.12, color="C3", ls="--", lw=1, label="documented bound 0.12 (d = 2)")
axes[0].set_xlabel("sigma (pixels)")
axes[0].set_title("normalised filter $D^{-1}Kv$: lattice vs exact")
axes[0].legend(fontsize=8)
axes[1].semilogx(sigmas, ratio, "o-")
axes[1].axhline(1.0, color="k", lw=0.8)
axes[1].set_ylim(0, 1.1)
axes[1].set_xlabel("sigma (pixels)")
axes[1].set_title("unnormalised: mean of $K1$ lattice / exact")
plt.tight_layout()
plt.show()

# %%
# the library's random-cloud setting (tests/crf/test_lattice.py): 300 points over 3 s standard deviations
cloud_bounds = {2: 0.15, 5: 0.35}  # the tested bounds above the measured worst cases 0.12 and 0.29
for dim in (2, 5):
    worst = 0.0
    for spread in (0.5, 1.0, 2.0, 4.0, 8.0):
        cloud = (rng.random((300, dim)) * spread * 3).astype(np.float32)
        vals = rng.random((300, 2)).astype(np.float32)
        cl = crf.build(cloud, backend="cpu")
        approx = cl.filter(vals, backend="cpu") / cl.filter(np.ones((300, 1), np.float32), backend="cpu")
        exact = crf.exact_filter(cloud, vals) / crf.exact_filter(cloud, np.ones((300, 1)))
        worst = max(worst, float(np.abs(approx - exact).max()))
    print(f"d = {dim}: worst max |error| over the spreads {worst:.3f} (bound {cloud_bounds[dim]})")
    assert worst <= cloud_bounds[dim]

# %% [markdown]
# ## 9 · Cost: O(N) against O(N^2)
#
# The exact filter touches every pair of points; the lattice touches each point's $d+1$ vertices
# and each vertex's $2(d+1)$ neighbours. Below, random 2-D points at a constant density (like pixels
# of a growing image), 4 value channels, timed for build + one filter. The exact filter stops at
# 8000 points, where it already needs $6.4\cdot10^7$ kernel evaluations. The lattice goes on to
# 256 000. These are wall times on a shared 2-core machine, so only their trend matters.

# %%
def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def lattice_once(f, v):
    return crf.build(f, backend="cpu").filter(v, backend="cpu")


sizes_exact = [500, 1000, 2000, 4000, 8000]
sizes_lattice = [500, 1000, 2000, 4000, 8000, 16000, 64000, 256000]
t_exact, t_lattice = [], []
for n in sizes_lattice:
    f = (rng.random((n, 2)) * np.sqrt(n) / 3).astype(np.float32)  # about 9 points per unit square
    v = rng.random((n, 4)).astype(np.float32)
    t_lattice.append(best_time(lambda: lattice_once(f, v), 3))
    if n in sizes_exact:
        t_exact.append(best_time(lambda: crf.exact_filter(f, v), 1))
for n, tl in zip(sizes_lattice, t_lattice):
    te = t_exact[sizes_exact.index(n)] if n in sizes_exact else None
    print(f"N = {n:6d}: lattice {1e3 * tl:8.2f} ms" + (f"   exact {1e3 * te:8.1f} ms" if te else ""))

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.loglog(sizes_exact, t_exact, "s-", label="exact (crf.exact_filter)")
ax.loglog(sizes_lattice, t_lattice, "o-", label="lattice build + filter (cpu)")
n_ref = np.array([1000, 256000])
ax.loglog(n_ref, t_lattice[-1] * n_ref / n_ref[-1], "k:", lw=1, label="slope 1 (O(N))")
n_ref2 = np.array([1000, 8000])
ax.loglog(n_ref2, t_exact[-1] * (n_ref2 / n_ref2[-1]) ** 2, "k--", lw=1, label="slope 2 (O(N$^2$))")
ax.set_xlabel("points N")
ax.set_ylabel("seconds")
ax.legend(fontsize=8)
ax.set_title("Gaussian filtering cost, d = 2, 4 channels")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What to take away
#
# * The lattice turns an $O(N^2)$ sum into three $O(N)$ passes: **splat** onto the $d+1$ vertices of
#   each point's simplex, **blur** along the $d+1$ lattice directions, **slice** back. Building it
#   (embedding, rounding plus sort, barycentric weights, hash, neighbours) is done once per image and
#   kernel; the CRF then filters 10 times.
# * It is an approximation with a known behaviour: the normalised filter $D^{-1}Kv$ is close to the
#   exact one (under 0.12 in 2-D from one pixel of sigma on, and better for wider kernels), while the
#   unnormalised $K$ is off by a density-dependent factor.
# * Notebook 04 puts two such filters, over $(x, y)/\theta_\gamma$ and over
#   $(x/\theta_\alpha, y/\theta_\alpha, RGB/\theta_\beta)$ ($d = 5$), inside mean-field inference.
