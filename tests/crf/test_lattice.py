"""The permutohedral lattice against the exact Gaussian filter and between its backends."""
import numpy as np
import pytest

from crf import lattice as L
from crf import config as crf_config
from crf import lattice_cpu, packed_keys
from crf.exact import exact_filter

# Measured on 5 seeds x 300 uniform random points spread over 3 s standard deviations per feature
# (values in [0, 1]): the worst max / mean |D^-1 K v - exact D^-1 K v| were 0.12 / 0.011 (d = 2)
# and 0.29 / 0.059 (d = 5, s = 2: points about as far apart as the kernel is wide).
BOUNDS = {2: (0.15, 0.02), 5: (0.35, 0.08)}


def _cloud(rng, n, d, spread):
    return (rng.random((n, d)) * spread * 3).astype(np.float32)


@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("spread", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_normalised_filter_close_to_exact(d, spread):
    rng = np.random.default_rng(int(100 * spread) + d)
    n = 300
    f = _cloud(rng, n, d, spread)
    v = rng.random((n, 2)).astype(np.float32)
    lat = L.build(f, backend="cpu")
    approx = lat.filter(v, backend="cpu") / lat.filter(np.ones((n, 1), np.float32), backend="cpu")
    exact = exact_filter(f, v) / exact_filter(f, np.ones((n, 1)))
    err = np.abs(approx - exact)
    max_bound, mean_bound = BOUNDS[d]
    assert err.max() <= max_bound and err.mean() <= mean_bound, (err.max(), err.mean())


def test_wide_kernel_is_almost_exact():
    # points much closer than the kernel's width: every vertex sees many points, the error is small
    rng = np.random.default_rng(1)
    f = (rng.random((400, 2)) * 0.5).astype(np.float32)
    v = rng.random((400, 1)).astype(np.float32)
    lat = L.build(f, backend="cpu")
    approx = lat.filter(v, backend="cpu") / lat.filter(np.ones_like(v), backend="cpu")
    exact = exact_filter(f, v) / exact_filter(f, np.ones((400, 1)))
    assert np.abs(approx - exact).max() < 5e-3


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7])
def test_normalised_constant_is_constant(d):
    rng = np.random.default_rng(d)
    f = _cloud(rng, 500, d, 2.0)
    lat = L.build(f, backend="cpu")
    ones = lat.filter(np.ones((500, 1), np.float32), backend="cpu")
    assert (ones > 0).all()
    c = lat.filter(np.full((500, 3), 2.5, np.float32), backend="cpu")
    np.testing.assert_allclose(c / ones, 2.5, rtol=1e-6)


@pytest.mark.parametrize("d", [2, 5])
def test_reverse_blur_is_the_transpose(d):
    rng = np.random.default_rng(7 + d)
    n = 400
    lat = L.build(_cloud(rng, n, d, 2.0), backend="cpu")
    a = rng.standard_normal((n, 3)).astype(np.float32)
    b = rng.standard_normal((n, 3)).astype(np.float32)
    ka = lat.filter(a, backend="cpu").astype(np.float64)
    scale = np.abs(ka * b).sum()
    forward = (ka * b).sum()
    transposed = (a * lat.filter(b, reverse=True, backend="cpu")).sum()
    assert abs(forward - transposed) <= 1e-5 * scale
    # K itself is not symmetric: its axes run in a fixed order. Measured: the relative asymmetry
    # |<K a, b> - <a, K b>| / sum |K a * b| stays below 0.02 on these clouds; report it with a bound.
    asym = abs(forward - (a * lat.filter(b, backend="cpu")).sum()) / scale
    print(f"d={d}: relative asymmetry {asym:.2e}")
    assert asym <= 0.05


@pytest.mark.parametrize("d", [1, 2, 4, 5, 6])
@pytest.mark.parametrize("channels", [1, 4, 21])
def test_numpy_and_cpu_agree(d, channels):
    rng = np.random.default_rng(10 * d + channels)
    n = 350
    f = (rng.standard_normal((n, d)) * 3).astype(np.float32)
    a, b = L.build(f, backend="numpy"), L.build(f, backend="cpu")
    # the same simplex corners and weights; vertex numbering may differ between the two hashes
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.keys[a.offsets], b.keys[b.offsets])
    assert a.n_vertices == b.n_vertices
    v = rng.standard_normal((n, channels)).astype(np.float32)
    for reverse in (False, True):
        ref = a.filter(v, reverse=reverse, backend="numpy")
        np.testing.assert_allclose(b.filter(v, reverse=reverse, backend="cpu"), ref,
                                   rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_lattice_structure_invariants():
    rng = np.random.default_rng(3)
    d = 4
    lat = L.build((rng.standard_normal((600, d)) * 2).astype(np.float32), backend="cpu")
    np.testing.assert_allclose(lat.weights.sum(axis=1), 1.0, atol=1e-5)
    assert (lat.weights >= -1e-6).all()
    m = lat.n_vertices
    for j in range(d + 1):  # n1 and n2 are inverse steps: n2[n1[v]] == v wherever n1 exists
        has = lat.n1[j] < m
        np.testing.assert_array_equal(lat.n2[j][lat.n1[j][has]], np.nonzero(has)[0])
        step = np.full(d, -1)
        if j < d:
            step[j] += d + 1
        np.testing.assert_array_equal(lat.keys[lat.n1[j][has]], lat.keys[has] + step)
    # ... and absent means absent: no neighbour key that is a vertex was missed by the hash
    vertices = {tuple(k) for k in lat.keys.tolist()}
    for j in range(d + 1):
        step = np.full(d, -1)
        if j < d:
            step[j] += d + 1
        for sign, table in ((1, lat.n1[j]), (-1, lat.n2[j])):
            absent = (lat.keys + sign * step)[table == m]
            assert not any(tuple(k) in vertices for k in absent.tolist())
    # the CPU blur's chains: along every axis each vertex once, chains start where n1 is absent,
    # and each next vertex of a chain is the n2 neighbour of the one before
    order, bounds = lat.chains()
    for j in range(d + 1):
        heads = order[j] < 0
        vertex_of = np.where(heads, -order[j] - 1, order[j])
        assert sorted(vertex_of.tolist()) == list(range(m))
        np.testing.assert_array_equal(lat.n1[j][vertex_of] == m, heads)
        follows = ~heads[1:]
        np.testing.assert_array_equal(lat.n2[j][vertex_of[:-1]][follows], vertex_of[1:][follows])
        assert bounds[j, 0] == 0 and bounds[j, -1] == m and (np.diff(bounds[j]) >= 0).all()
        assert heads[bounds[j, :-1][bounds[j, :-1] < m]].all()  # blocks start at chain starts
    # the splat index lists every (point, corner) entry exactly once, under its own vertex
    vertex = np.repeat(np.arange(m), np.diff(lat.starts))
    listed = sorted(zip(lat.splat_point.tolist(), vertex.tolist(), lat.splat_weight.tolist()))
    expected = sorted((p, int(lat.offsets[p, k]), float(lat.weights[p, k]))
                      for p in range(600) for k in range(d + 1))
    assert listed == expected
    # every corner is a remainder-0 point shifted by k: its full coordinates sum to 0 mod d+1
    full = np.concatenate([lat.keys, -lat.keys.sum(axis=1, keepdims=True)], axis=1)
    remainders = np.mod(full, d + 1)
    assert (remainders == remainders[:, :1]).all()


def test_hash_grows_past_its_first_capacity(monkeypatch):
    monkeypatch.setattr(crf_config, "CHAIN_BLUR_MAX_BYTES", 1 << 30)  # blur along the chains
    rng = np.random.default_rng(5)
    f = (rng.random((20000, 5)) * 200).astype(np.float32)  # nearly every corner is a new vertex
    a, b = L.build(f, backend="cpu"), L.build(f, backend="numpy")
    assert b.n_vertices == a.n_vertices > 20000
    np.testing.assert_array_equal(a.keys[a.offsets], b.keys[b.offsets])
    # many blocks of blur chains run in parallel: still the reference's result
    assert a.chains()[1].shape[1] > 10
    v = rng.standard_normal((20000, 3)).astype(np.float32)
    for reverse in (False, True):
        ref = b.filter(v, reverse=reverse, backend="numpy")
        np.testing.assert_allclose(a.filter(v, reverse=reverse, backend="cpu"), ref,
                                   rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("spread", [2.0, 200.0])  # shared vertices; nearly every corner new (tables grow)
def test_block_parallel_hash_numbers_vertices_in_first_seen_order(spread):
    rng = np.random.default_rng(8)
    n, d = 3000, 5
    f = (rng.random((n, d)) * spread).astype(np.float32)
    f[: n // 2] = np.sort(f[: n // 2], axis=0)  # runs of neighbouring points, as in an image
    ref = L.build(f, backend="numpy")
    corners = ref.keys[ref.offsets].reshape(n * (d + 1), d)  # every point's corner keys, in point order
    unique, first, inverse = np.unique(corners, axis=0, return_index=True, return_inverse=True)
    rank_of = np.empty(len(first), np.int64)
    rank_of[np.argsort(first)] = np.arange(len(first))  # vertex index = order of first appearance
    rem0 = np.empty((n, d + 1), np.int32)
    rank = np.empty((n, d + 1), np.int32)
    weights = np.empty((n, d + 1), np.float32)
    lattice_cpu._embed_kernel(f, L.feature_scale(d), rem0, rank, weights)
    for n_threads in (1, 2, 3, 8):
        offsets = np.empty((n, d + 1), np.int32)
        table, keys = lattice_cpu.hash_cpu(rem0, rank, offsets, n_threads)
        np.testing.assert_array_equal(offsets.ravel(), rank_of[inverse.ravel()])
        np.testing.assert_array_equal(keys, unique[np.argsort(first)])
        # the table lists every vertex exactly once and is at most half full
        assert sorted(table[table >= 0].tolist()) == list(range(len(keys)))
        assert 2 * len(keys) <= table.shape[0]


def test_block_parallel_splat_index_is_a_stable_sort_by_vertex():
    rng = np.random.default_rng(9)
    lat = L.build((rng.random((2000, 3)) * 6).astype(np.float32), backend="numpy")
    n, d1 = lat.offsets.shape
    m = lat.n_vertices
    order = np.argsort(lat.offsets.ravel(), kind="stable")  # entries by vertex, then by point
    expected_starts = np.concatenate([[0], np.cumsum(np.bincount(lat.offsets.ravel(), minlength=m))])
    for n_blocks in (1, 2, 5):
        bounds = np.linspace(0, n, n_blocks + 1).astype(np.int64)
        starts = np.empty(m + 1, np.int64)
        points = np.empty(n * d1, np.int32)
        weights = np.empty(n * d1, np.float32)
        lattice_cpu._splat_index_kernel(lat.offsets, lat.weights, bounds, np.empty((n_blocks, m), np.int64),
                                        starts, points, weights)
        np.testing.assert_array_equal(starts, expected_starts)
        np.testing.assert_array_equal(points, order // d1)
        np.testing.assert_array_equal(weights, lat.weights.ravel()[order])


@pytest.mark.parametrize("d", [1, 2, 5, 9])
def test_embedding_equals_the_reference_bit_for_bit(d):
    """The CPU embedding (blocks of points held coordinate-major) against the NumPy reference on
    exact ties between residuals, points on lattice points, values at the features' limit, a block
    that is not full, and one point."""
    from crf.lattice_reference import embed_numpy, feature_scale
    rng = np.random.default_rng(40 + d)
    limit = 2.0 ** 24 / (d + 1) ** 2
    cases = [rng.integers(-5, 6, (700, d)).astype(np.float32),  # integer features: many exact ties
             np.zeros((257, d), np.float32),
             rng.uniform(-limit, limit, (300, d)).astype(np.float32),
             (rng.standard_normal((513, d)) * 30).astype(np.float32),
             rng.random((1, d)).astype(np.float32)]
    for f in cases:
        n = f.shape[0]
        got = [np.empty((n, d + 1), np.int32), np.empty((n, d + 1), np.int32), np.empty((n, d + 1), np.float32)]
        lattice_cpu._embed_kernel(f, feature_scale(d), *got)
        for mine, ref in zip(got, embed_numpy(f)):
            np.testing.assert_array_equal(mine.view(np.int32), np.asarray(ref).view(np.int32))


def test_single_point_and_coincident_points():
    lat = L.build(np.zeros((1, 3), np.float32), backend="cpu")
    assert lat.n_vertices == 4  # the d+1 corners of its simplex, even where a weight is 0
    out = lat.filter(np.ones((1, 2), np.float32), backend="cpu")
    assert out.shape == (1, 2) and (out > 0).all()
    f = np.repeat(np.array([[0.3, -1.2]], np.float32), 5, axis=0)
    lat = L.build(f, backend="cpu")
    v = np.arange(5, dtype=np.float32)[:, None]
    out = lat.filter(v, backend="cpu")
    # identical features, identical outputs
    np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), rtol=1e-6)


@pytest.mark.parametrize("features, error", [
    (np.zeros((4,), np.float32), ValueError),
    (np.zeros((0, 2), np.float32), ValueError),
    (np.array([[0.0, np.nan]], np.float32), ValueError),
    (np.array([[0.0, np.inf]]), ValueError),
    (np.array([[1e12, 0.0]]), ValueError),
    (np.array([["a", "b"]]), TypeError),
])
def test_bad_features(features, error):
    with pytest.raises(error):
        L.build(features)


def test_bad_values():
    lat = L.build(np.zeros((3, 2), np.float32), backend="cpu")
    with pytest.raises(ValueError, match=r"shape \(N=3, C\)"):
        lat.filter(np.zeros((4, 1), np.float32), backend="cpu")
    with pytest.raises(ValueError):
        lat.filter(np.zeros(3, np.float32), backend="cpu")
    with pytest.raises(ValueError, match="backend"):
        lat.filter(np.zeros((3, 1), np.float32), backend="gpu")


def test_two_buffer_blur_for_large_lattices(monkeypatch):
    # above CHAIN_BLUR_MAX_BYTES the CPU blurs with two buffers: the same results
    rng = np.random.default_rng(8)
    f = (rng.random((3000, 5)) * 4).astype(np.float32)
    v = rng.standard_normal((3000, 4)).astype(np.float32)
    lat = L.build(f, backend="cpu")
    chained = lat.filter(v, backend="cpu")
    monkeypatch.setattr(crf_config, "CHAIN_BLUR_MAX_BYTES", 0)
    for reverse in (False, True):
        ref = lat.filter(v, reverse=reverse, backend="numpy")
        np.testing.assert_allclose(lat.filter(v, reverse=reverse, backend="cpu"), ref,
                                   rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(lat.filter(v, backend="cpu"), chained)  # bit for bit


@pytest.mark.parametrize("d,n", [(1, 1), (2, 4000), (3, 500), (5, 3000)])
def test_ones_filter_is_the_filter_of_ones_bit_for_bit(d, n):
    """The normaliser's own kernel (splat of weights, flat blur, slice) against the general path,
    for even and odd d + 1 (the blur's two buffers end on either one) and a single point."""
    rng = np.random.default_rng(d)
    lat = L.build(_cloud(rng, n, d, 2.0), backend="cpu")
    general = lat.filter(np.ones((n, 1), np.float32), backend="cpu")[:, 0]
    np.testing.assert_array_equal(lattice_cpu.ones_filter_cpu(lat), general)
    assert (general > 0).all()
    assert n == 1 or np.ptp(general) > 0


def test_prefetching_changes_no_result(monkeypatch):
    """The filter kernels prefetch the rows of later iterations (crf.prefetch) when the gathered
    array is large; a prefetch is only a hint, so every distance, including ones that reach past
    the last row, gives bit-identical output."""
    rng = np.random.default_rng(9)
    f = (rng.random((3000, 5)) * 4).astype(np.float32)
    v = rng.standard_normal((3000, 7)).astype(np.float32)
    lat = L.build(f, backend="cpu")
    monkeypatch.setattr(crf_config, "CHAIN_BLUR_MAX_BYTES", 0)  # the two-buffer blur, which prefetches
    monkeypatch.setattr(crf_config, "PREFETCH_MIN_BYTES", v.nbytes + 1)
    assert lattice_cpu.prefetch_distance(v, 32) == 0  # below the threshold: no prefetch
    plain = lat.filter(v, backend="cpu")
    monkeypatch.setattr(crf_config, "PREFETCH_MIN_BYTES", 0)
    for vertices, points in ((1, 1), (32, 8), (10 ** 6, 10 ** 6)):
        monkeypatch.setattr(crf_config, "AHEAD_VERTICES", vertices)
        monkeypatch.setattr(crf_config, "AHEAD_POINTS", points)
        np.testing.assert_array_equal(lat.filter(v, backend="cpu"), plain)


def test_mean_field_with_and_without_prefetching_is_bit_identical(monkeypatch):
    """The fused slice-messages-softmax pass prefetches too; the marginals must not change."""
    import crf
    rng = np.random.default_rng(10)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    unary = rng.standard_normal((5, 30, 40)).astype(np.float32)

    def marginals():
        model = crf.DenseCRF(unary, backend="cpu")
        model.add_bilateral(image, theta_alpha=8, theta_beta=10, w=4)
        model.add_gaussian(theta_gamma=3, w=3)
        return model.inference(5)

    monkeypatch.setattr(crf_config, "PREFETCH_MIN_BYTES", 1 << 40)
    plain = marginals()
    monkeypatch.setattr(crf_config, "PREFETCH_MIN_BYTES", 0)
    np.testing.assert_array_equal(marginals(), plain)


def _embedded(f):
    n, d = f.shape
    rem0 = np.empty((n, d + 1), np.int32)
    rank = np.empty((n, d + 1), np.int32)
    weights = np.empty((n, d + 1), np.float32)
    lattice_cpu._embed_kernel(f, L.feature_scale(d), rem0, rank, weights)
    return rem0, rank


@pytest.mark.parametrize("spread", [2.0, 200.0])
def test_packed_keys_hash_and_neighbours_equal_the_general_kernels(spread):
    rng = np.random.default_rng(11)
    n, d = 3000, 5
    f = (rng.random((n, d)) * spread).astype(np.float32)
    f[: n // 2] = np.sort(f[: n // 2], axis=0)
    rem0, rank = _embedded(f)
    layout = packed_keys.packed_layout(rem0, d)
    assert layout is not None
    want_offsets = np.empty((n, d + 1), np.int32)
    want_table, want_keys = lattice_cpu.hash_cpu(rem0, rank, want_offsets, 1)
    m = len(want_keys)
    want_n1, want_n2 = np.empty((d + 1, m), np.int32), np.empty((d + 1, m), np.int32)
    lattice_cpu._neighbours_kernel(want_table, want_keys, want_n1)
    packed_keys.invert_neighbours(want_n1, want_n2)
    assert (want_n1 < m).any()  # some neighbours exist, some do not
    assert (want_n1 == m).any()
    for n_threads in (1, 2, 3, 8):
        offsets = np.empty((n, d + 1), np.int32)
        table, packed, keys = packed_keys.hash_packed(rem0, rank, offsets, layout, n_threads)
        np.testing.assert_array_equal(offsets, want_offsets)
        np.testing.assert_array_equal(keys, want_keys)
        stored = table[1::2][table[0::2] >= 0]  # every vertex in the table once, at most half full
        assert sorted(stored.tolist()) == list(range(m)) and 4 * m <= table.shape[0]
        n1, n2 = np.empty((d + 1, m), np.int32), np.empty((d + 1, m), np.int32)
        packed_keys.neighbours_packed(table, packed, layout, d, n1, n2)
        np.testing.assert_array_equal(n1, want_n1)
        np.testing.assert_array_equal(n2, want_n2)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_lattice_built_with_and_without_packed_keys_is_the_same(d, monkeypatch):
    rng = np.random.default_rng(12 + d)
    f = (rng.standard_normal((2000, d)) * 4).astype(np.float32)
    packed = L.build(f, backend="cpu")
    monkeypatch.setattr(crf_config, "PACKED_KEYS", False)
    general = L.build(f, backend="cpu")
    for name in ("offsets", "weights", "keys", "n1", "n2", "starts", "splat_point", "splat_weight"):
        np.testing.assert_array_equal(getattr(packed, name), getattr(general, name), err_msg=name)


def test_keys_too_wide_for_one_int64_take_the_general_kernels():
    rng = np.random.default_rng(13)
    d = 8  # 8 coordinates over ~2^14 values: 8 x 14 bits > 62
    f = (rng.random((500, d)) * 4000).astype(np.float32)
    rem0, _ = _embedded(f)
    assert packed_keys.packed_layout(rem0, d) is None
    a, b = L.build(f, backend="cpu"), L.build(f, backend="numpy")
    np.testing.assert_array_equal(a.keys[a.offsets], b.keys[b.offsets])
    # a layout holds every corner and neighbour coordinate of the keys it accepts
    rem0, _ = _embedded((rng.random((500, 3)) * 50).astype(np.float32))
    lo, bits = packed_keys.packed_layout(rem0, 3)
    assert lo <= rem0[:, :3].min() - 5 and rem0[:, :3].max() + 7 - lo < 2 ** bits


@pytest.mark.parametrize("blocks, vertex_cost", [(1, 4), (3, 0), (256, 4), (10 ** 5, 1)])
def test_splat_blocks_change_no_result(monkeypatch, blocks, vertex_cost):
    """The CPU splat's threads share out blocks of vertices of equal work: any number of blocks
    (one, more blocks than vertices) and any vertex cost cover every vertex once, with the same sums."""
    rng = np.random.default_rng(11)
    f = (rng.random((2000, 3)) * 4).astype(np.float32)
    f[:800] = f[0]  # a flat region: a few vertices with most of the entries
    v = rng.standard_normal((2000, 3)).astype(np.float32)
    lat = L.build(f, backend="cpu")
    reference = L.splat_blur_cpu(lat, v)
    monkeypatch.setattr(crf_config, "SPLAT_BLOCKS", blocks)
    monkeypatch.setattr(crf_config, "SPLAT_VERTEX_COST", vertex_cost)
    bounds = lat.splat_bounds()
    assert bounds.shape == (blocks + 1,) and bounds[0] == 0 and bounds[-1] == lat.n_vertices
    assert (np.diff(bounds) >= 0).all()
    work = np.concatenate([[0], np.cumsum(np.diff(lat.starts) + vertex_cost)])  # work before each vertex
    per_block = work[bounds[1:]] - work[bounds[:-1]]
    assert per_block.max() <= work[-1] / blocks + np.diff(work).max()  # about equal work per block
    np.testing.assert_array_equal(L.splat_blur_cpu(lat, v), reference)


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 8])
def test_side_lattices_are_those_no_thread_waits_on(threads):
    """A lattice is a side task where its splat and blur fit one thread's share of the main splat
    and itself; the main lattice is the one with the most splat work, wherever it is listed."""
    bilateral, gaussian = (187500, 5, 180447), (187500, 2, 24540)  # 500x375 (bench/crf.py)
    work = {s: lattice_cpu.splat_work(*s) for s in (bilateral, gaussian)}
    side_work = work[gaussian] + 3 * gaussian[2]
    fits = side_work * threads <= work[bilateral] + side_work
    assert fits == (threads <= 3)
    assert lattice_cpu.side_lattices([bilateral, gaussian], threads) == (0, [1] if fits else [])
    assert lattice_cpu.side_lattices([gaussian, bilateral, gaussian], threads) == (1, [0, 2] if fits else [])
    assert lattice_cpu.side_lattices([bilateral, bilateral], threads) == (0, [1] if threads == 1 else [])
    # more vertices, less splat work: not the main lattice
    assert lattice_cpu.side_lattices([(1000, 5, 500), (1000, 2, 900)], 1) == (0, [1])


@pytest.mark.parametrize("side", [False, True])
def test_side_lattices_change_no_result(monkeypatch, side):
    """The mean field's splat of several lattices, with and without side tasks (one or both
    smaller lattices splatted and blurred on one thread; three and four axes: the result in
    either buffer), a scaling by ``pre``, fewer channels than the values have, 1, 2 or 5
    workers and buffers that held NaN, then reused: each lattice's own ``splat_blur_cpu``,
    bit for bit."""
    rng = np.random.default_rng(23)
    n = 3000
    big = L.build((rng.random((n, 5)) * 6).astype(np.float32), backend="cpu")
    small = L.build((rng.random((n, 2)) * 3).astype(np.float32), backend="cpu")  # three axes
    mid = L.build((rng.random((n, 3)) * 20).astype(np.float32), backend="cpu")  # four axes
    lattices = [small, big, mid]
    shapes = [(lat.n_points, lat.d, lat.n_vertices) for lat in lattices]
    monkeypatch.setattr(crf_config, "SIDE_LATTICES", side)
    assert lattice_cpu.side_lattices(shapes, 1) == (1, [0, 2] if side else [])
    assert lattice_cpu.side_lattices(shapes, 2) == (1, [0] if side else [])
    values = rng.random((n, 5)).astype(np.float32)
    pres = [(rng.random(n) + 0.5).astype(np.float32), None, (rng.random(n) + 0.5).astype(np.float32)]
    want = [L.splat_blur_cpu(lat, values, pre, False, None, 4) for lat, pre in zip(lattices, pres)]
    for threads in (1, 2):
        for n_workers in (1, 2, 5):
            monkeypatch.setattr(lattice_cpu.numba, "get_num_threads", lambda: threads)
            monkeypatch.setattr(lattice_cpu.dynamic, "schedule",
                                lambda: (np.zeros((n_workers, 16), np.int64), n_workers))
            # Buffers of NaN: every value read must have been written by this call.
            scratches = [[np.full((lat.n_vertices + 1, 4), np.nan, np.float32) for _ in range(2)]
                         for lat in lattices]
            for _ in range(2):  # the second time into the buffers of the first
                got = lattice_cpu.splat_blur_many_cpu(lattices, values, pres, scratches, 4)
                for lat, a, b in zip(lattices, got, want):
                    assert a.shape == (lat.n_vertices + 1, 4)
                    np.testing.assert_array_equal(a, b)


def test_side_lattices_hold_two_buffers_as_the_memory_estimate_says():
    """A side lattice keeps two value buffers even where its values would fit the in-place chain
    blur: the scratch it is given holds both (crf.memory counts them). A buffer of another
    shape, left from other values, is made anew."""
    rng = np.random.default_rng(24)
    n = 3000
    big = L.build((rng.random((n, 5)) * 6).astype(np.float32), backend="cpu")
    small = L.build((rng.random((n, 2)) * 3).astype(np.float32), backend="cpu")
    values = rng.random((n, 3)).astype(np.float32)
    assert 4 * 3 * (small.n_vertices + 1) <= crf_config.CHAIN_BLUR_MAX_BYTES
    scratches = [[np.zeros((big.n_vertices + 1, 2), np.float32)], [np.zeros((small.n_vertices + 1, 4), np.float32)]]
    out = lattice_cpu.splat_blur_many_cpu([big, small], values, [None, None], scratches)
    assert len(scratches[1]) == 2 and any(out[1] is buffer for buffer in scratches[1])
    assert all(buffer.shape == (small.n_vertices + 1, 3) for buffer in scratches[1])
    assert any(out[0] is buffer for buffer in scratches[0])
    for lat, got in zip([big, small], out):
        np.testing.assert_array_equal(got, L.splat_blur_cpu(lat, values))


def test_filter_kernels_take_values_of_any_layout_and_real_dtype():
    # the vector rows (crf.simd) combine C-contiguous float32 rows: other values are converted first
    rng = np.random.default_rng(5)
    f = (rng.random((300, 5)) * 4).astype(np.float32)
    lat = L.build(f, backend="cpu")
    wide = rng.random((300, 8))  # float64
    pre = rng.random(300) + 0.5  # float64
    expected = lattice_cpu.splat_blur_cpu(lat, np.ascontiguousarray(wide[:, ::2], np.float32),
                                          pre.astype(np.float32)).copy()
    got = lattice_cpu.splat_blur_cpu(lat, wide[:, ::2], pre)
    np.testing.assert_array_equal(got, expected)
    small = L.build(f[:, :2], backend="cpu")  # a side lattice beside lat (splat_blur_many_cpu's own path)
    assert lattice_cpu.side_lattices([(300, 5, lat.n_vertices), (300, 2, small.n_vertices)], 2) == (0, [1])
    expected_small = lattice_cpu.splat_blur_cpu(small, np.ascontiguousarray(wide[:, ::2], np.float32),
                                                pre.astype(np.float32)).copy()
    many = lattice_cpu.splat_blur_many_cpu([lat, small], wide[:, ::2], [pre, pre], [[], []])
    np.testing.assert_array_equal(many[0], expected)
    np.testing.assert_array_equal(many[1], expected_small)
