"""The lattice built on the GPU (crf.cuda_build) against the CPU build (simulator: tiny inputs only).

Two comparisons: up to a vertex permutation (:func:`assert_same_lattice_up_to_permutation`,
which holds whatever order the vertices are numbered in), and exact equality of
every array, which the GPU build is designed for (same float32 operations as the
CPU embedding with no FMA contraction, vertices numbered in first-seen order, splat
lists in point order) and which holds on a real GPU too (checked on an H200, also at
1000x750). The permutation comparison stays as the weaker check that does not depend
on the numbering.
"""
import numpy as np
import pytest

from crf import lattice as L
from crf.synthetic import photo

pytestmark = pytest.mark.cuda

ARRAYS = ("offsets", "weights", "keys", "n1", "n2", "starts", "splat_point", "splat_weight")


@pytest.fixture(scope="module")
def cb():
    from crf import cuda_build  # numba.cuda is loaded only by the CUDA tests
    return cuda_build


def _size(in_cudasim, small, large):
    return small if in_cudasim else large


def _clustered(rng, n, d):
    """Points around three centres: neighbouring points share most of their vertices."""
    centres = rng.random((3, d)) * 2.0
    points = centres[rng.integers(0, 3, n)] + 0.25 * rng.standard_normal((n, d))
    return points.astype(np.float32)


def _photo(h, w, repeats, seed):
    """Bilateral features (x/3, y/3, rgb/10) of a photo-like image, d = 5, plus ``repeats``
    copies of the first pixel's features: more entries on its vertices than an insertion sort takes."""
    image = photo(h, w, seed=seed).astype(np.float32)
    y, x = np.mgrid[:h, :w].astype(np.float32)
    features = np.concatenate([x[..., None] / 3, y[..., None] / 3, image / 10], axis=-1).reshape(h * w, 5)
    return np.concatenate([features, np.repeat(features[:1], repeats, axis=0)]).astype(np.float32)


def _features(case, d, in_cudasim):
    rng = np.random.default_rng(100 + d)
    if case == "clustered":
        return _clustered(rng, _size(in_cudasim, 40, 20000), d)
    if case == "photo":
        h, w = _size(in_cudasim, (4, 5), (60, 80))
        return _photo(h, w, _size(in_cudasim, 36, 2000), seed=d)
    # "repeated": a few features many times over, and the rest scattered
    n = _size(in_cudasim, 50, 20000)
    f = _clustered(rng, n, d)
    u = rng.random(n)
    f[u < 0.8] = f[0]
    f[(u >= 0.8) & (u < 0.9)] = f[1]
    return f


CASES = [("clustered", 1), ("clustered", 2), ("clustered", 3), ("clustered", 5), ("photo", 5),
         ("repeated", 2)]


def assert_same_lattice_up_to_permutation(got, ref, rng, weight_atol=0.0):
    """``got`` and ``ref`` (:class:`crf.lattice.Lattice`) are the same lattice with the vertices renumbered.

    Every vertex of ``got`` is mapped to the vertex of ``ref`` with the same key;
    then offsets, neighbours and the splat lists (as sets) must agree, the weights
    to ``weight_atol`` (0: exactly), and filtering random values with either must
    agree to 1e-5 (relative to the largest output).
    """
    assert (got.d, got.n_points, got.n_vertices) == (ref.d, ref.n_points, ref.n_vertices)
    m = ref.n_vertices
    for name in ARRAYS:
        assert getattr(got, name).dtype == getattr(ref, name).dtype, name
    index = {key: v for v, key in enumerate(map(tuple, ref.keys.tolist()))}
    assert len(index) == m, "the reference lattice repeats a key"
    perm = np.array([index.get(key, -1) for key in map(tuple, got.keys.tolist())], np.int64)
    assert (perm >= 0).all(), f"{np.sum(perm < 0)} vertex keys are not in the reference lattice"
    assert np.unique(perm).size == m, "two vertices have the same key"
    to_ref = np.append(perm, m)  # the absent neighbour M stays M
    np.testing.assert_allclose(got.weights, ref.weights, rtol=0, atol=weight_atol)
    np.testing.assert_array_equal(to_ref[got.offsets], ref.offsets)
    np.testing.assert_array_equal(to_ref[got.n1], ref.n1[:, perm])
    np.testing.assert_array_equal(to_ref[got.n2], ref.n2[:, perm])
    np.testing.assert_array_equal(np.diff(got.starts), np.diff(ref.starts)[perm])

    def entries(lattice, vertex_map):  # (vertex in ref's numbering, point, weight), sorted
        vertex = vertex_map[np.repeat(np.arange(lattice.n_vertices), np.diff(lattice.starts))]
        order = np.lexsort((lattice.splat_point, vertex))
        return vertex[order], lattice.splat_point[order], lattice.splat_weight[order]

    (gv, gp, gw), (rv, rp, rw) = entries(got, perm), entries(ref, np.arange(m))
    np.testing.assert_array_equal(gv, rv)
    np.testing.assert_array_equal(gp, rp)
    np.testing.assert_allclose(gw, rw, rtol=0, atol=weight_atol)
    values = rng.standard_normal((ref.n_points, 3)).astype(np.float32)
    expected = ref.filter(values, backend="cpu")
    np.testing.assert_allclose(got.filter(values, backend="cpu"), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("case, d", CASES)
def test_build_matches_cpu_up_to_permutation(cb, in_cudasim, case, d):
    features = _features(case, d, in_cudasim)
    got = L.Lattice(*cb.build_device(features).host_arrays())
    assert isinstance(got, L.Lattice)
    assert_same_lattice_up_to_permutation(got, L.build(features, backend="cpu"), np.random.default_rng(d))


@pytest.mark.parametrize("case, d", CASES)
def test_build_numbering_equals_cpu(cb, in_cudasim, case, d):
    features = _features(case, d, in_cudasim)
    got = L.Lattice(*cb.build_device(features).host_arrays())
    ref = L.build(features, backend="cpu")
    for name in ARRAYS:
        a, b = getattr(got, name), getattr(ref, name)
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, a.shape, b.dtype, b.shape)
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_numbering_does_not_depend_on_the_launch_shape(cb, production_launch_shapes):
    features = _clustered(np.random.default_rng(7), 12, 2)
    got, ref = L.Lattice(*cb.build_device(features).host_arrays()), L.build(features, backend="cpu")
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


def test_device_arrays_layout(cb, in_cudasim):
    from numba import cuda
    features = _clustered(np.random.default_rng(3), _size(in_cudasim, 20, 5000), 3)
    dev = cb.build_device(cuda.to_device(features))  # a device array in
    n, d1, m = features.shape[0], 4, dev.n_vertices
    assert (dev.d, dev.n_points) == (3, n) and repr(dev).startswith("DeviceLatticeArrays(d=3")
    layout = {"offsets": ((n, d1), np.int32), "weights": ((n, d1), np.float32), "n1": ((d1, m), np.int32),
              "n2": ((d1, m), np.int32), "starts": ((m + 1,), np.int32), "splat_point": ((n * d1,), np.int32),
              "splat_weight": ((n * d1,), np.float32), "vertex_entry": ((m,), np.int32)}
    for name, (shape, dtype) in layout.items():
        array = getattr(dev, name)
        assert hasattr(array, "copy_to_host") and array.shape == shape and array.dtype == dtype, name
    keys = dev.keys()
    assert isinstance(keys, np.ndarray) and keys.shape == (m, 3) and keys.dtype == np.int32
    # the owner entry of every vertex is its first entry: a corner that maps to that vertex
    owner = dev.vertex_entry.copy_to_host()
    offsets = dev.offsets.copy_to_host()
    np.testing.assert_array_equal(offsets.ravel()[owner], np.arange(m))
    assert np.all(np.diff(owner) > 0)
    assert dev.nbytes() >= sum(getattr(dev, name).nbytes for name in layout)
    host = L.Lattice(*dev.host_arrays())
    assert host.starts.dtype == np.int64 and host.starts[-1] == n * d1
    np.testing.assert_array_equal(cb.build_device(features).offsets.copy_to_host(), offsets)  # host array in


@pytest.mark.parametrize("kind", ["empty", "one", "odd", "blocks"])
def test_exclusive_scan_matches_cumsum(cb, in_cudasim, kind):
    from numba import cuda
    n = {"empty": 0, "one": 1, "odd": _size(in_cudasim, 13, 1001),
         "blocks": _size(in_cudasim, 53, 3_000_001)}[kind]  # simulator: 8 threads, 2 blocks
    values = np.random.default_rng(n).integers(0, 5, n).astype(np.int32)
    d_values = cuda.to_device(values)
    out, total = cb.exclusive_scan(d_values)
    expected = np.concatenate([[0], np.cumsum(values)]).astype(np.int32)
    np.testing.assert_array_equal(out.copy_to_host(), expected)
    assert total == int(values.sum()) and isinstance(total, int)
    np.testing.assert_array_equal(d_values.copy_to_host(), values)  # the input is left alone
    given = cuda.device_array(n + 1, np.int32)
    assert cb.exclusive_scan(d_values, given, read_total=False) == (given, None)
    np.testing.assert_array_equal(given.copy_to_host(), expected)


def test_bad_device_features(cb):
    from numba import cuda
    with pytest.raises(ValueError, match=r"float32.*got a device array of shape \(6, 2\) and dtype float64"):
        cb.build_device(cuda.to_device(np.zeros((6, 2), np.float64)))
    with pytest.raises(ValueError, match=r"\(N, d\).*got a device array of shape \(6,\)"):
        cb.build_device(cuda.to_device(np.zeros(6, np.float32)))
    with pytest.raises(ValueError, match=r"1 <= d <= 16.*shape \(6, 17\)"):
        cb.build_device(cuda.to_device(np.zeros((6, 17), np.float32)))
    with pytest.raises(ValueError, match=r"got shape \(6, 17\)"):
        cb.build_device(np.zeros((6, 17), np.float32))
    with pytest.raises(ValueError, match=r"shape \(0, 2\)"):
        cb.build_device(cuda.to_device(np.zeros((0, 2), np.float32)))
    with pytest.raises(ValueError, match=r"out must be an int32 device array of shape \(4,\)"):
        cb.exclusive_scan(cuda.to_device(np.zeros(3, np.int32)), cuda.device_array(3, np.int32))


@pytest.mark.parametrize("shared_max", [48, 4096])
def test_long_splat_lists_are_sorted_in_shared_or_global_memory(cb, in_cudasim, monkeypatch, shared_max):
    """Vertices of 40 and of 70 entries, their points interleaved: with a shared-memory limit of 48
    one list is sorted in shared memory and the other in global memory, with 4096 both in shared."""
    from crf import config
    rng = np.random.default_rng(8)
    features = _clustered(rng, _size(in_cudasim, 120, 5000), 2)
    who = rng.permutation(features.shape[0])
    far = features[0] + 7.0
    features[who[:40]] = far  # far from the rest: vertices of their own
    features[who[40:110]] = -far
    monkeypatch.setattr(config, "CUDA_SHARED_SORT_MAX", shared_max)
    got = L.Lattice(*cb.build_device(features).host_arrays())
    ref = L.build(features, backend="cpu")
    lengths = np.diff(ref.starts)
    assert ((lengths > cb.INSERTION_SORT_MAX) & (lengths <= 48)).any() and (lengths > 48).any()
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


def test_block_sort_kernel_sorts_shuffled_lists(cb):
    """Lists of 1 to 100 entries in random order: the short ones untouched (the insertion sort's),
    the others sorted by point with their weights, in shared (<= 48) or global memory."""
    from numba import cuda
    rng = np.random.default_rng(9)
    lengths = np.array([1, 33, 5, 47, 48, 49, 70, 100, 32])
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    points = np.concatenate([rng.permutation(1000)[:k] for k in lengths]).astype(np.int32)
    weights = rng.random(points.size).astype(np.float32)
    d_points, d_weights = cuda.to_device(points), cuda.to_device(weights)
    cb._block_sort_kernel[3, 8](cuda.to_device(starts), 48, d_points, d_weights)
    got_points, got_weights = d_points.copy_to_host(), d_weights.copy_to_host()
    for v, k in enumerate(lengths):
        span = slice(starts[v], starts[v + 1])
        order = np.arange(k) if k <= cb.INSERTION_SORT_MAX else np.argsort(points[span])
        np.testing.assert_array_equal(got_points[span], points[span][order], err_msg=f"list {v}")
        np.testing.assert_array_equal(got_weights[span], weights[span][order], err_msg=f"list {v}")


def test_profiled_build_times_every_stage_and_builds_the_same(cb, in_cudasim):
    features = _features(CASES[0][0], CASES[0][1], in_cudasim)
    timings = {}
    got = cb.build_device(features, timings=timings).host_arrays()
    assert set(timings) == {"embed", "hash", "number", "splat index", "sort", "neighbours"}
    assert all(t >= 0 for t in timings.values())
    for a, b, name in zip(got, cb.build_device(features).host_arrays(), ARRAYS):
        np.testing.assert_array_equal(a, b, err_msg=name)
