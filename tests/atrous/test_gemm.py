"""The products on packed panels (atrous.gemm): Winograd's batches and the 1x1 product with its finish,
against float64 matrix products and the epilogue's arithmetic."""
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from atrous import gemm

ROWS, COLS = gemm.PANEL_ROWS, gemm.PANEL_COLS


def _bound(u, v):
    """|float32 products - exact| may reach about K roundings of the terms' magnitudes."""
    k = u.shape[-1]
    return 2 * k * np.finfo(np.float32).eps * np.matmul(np.abs(u).astype(np.float64), np.abs(v).astype(np.float64))


def _run(u, v):
    a, b = gemm.pack_rows(u), gemm.pack_cols(v)
    c = np.full((u.shape[0], a.shape[1] * ROWS, b.shape[1] * COLS), np.nan, np.float32)
    return gemm.batched_products_cpu(a, b, c)


def test_packing_puts_each_value_where_the_panels_say():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((3, 2 * ROWS + 1, 5)).astype(np.float32)
    v = rng.standard_normal((3, 5, COLS + 3)).astype(np.float32)
    a, b = gemm.pack_rows(u), gemm.pack_cols(v)
    assert a.shape == (3, 3, 5, ROWS) and b.shape == (3, 2, 5, COLS)
    p, i, k, r = 2, 1, 4, ROWS - 1
    assert a[p, i, k, r] == u[p, i * ROWS + r, k]
    assert b[p, 1, k, 2] == v[p, k, COLS + 2]
    assert not a[:, 2, :, 1:].any() and not b[:, 1, :, 3:].any()  # padding is zeros
    np.testing.assert_array_equal(gemm.batched_products_numpy(a, b)[:, :u.shape[1], :v.shape[2]],
                                  np.matmul(u, v))


@pytest.mark.parametrize("planes, m, k, t", [
    (1, 1, 1, 1), (2, ROWS, 7, COLS), (3, ROWS + 3, 33, 2 * COLS + 5), (16, 64, 256, 121), (36, 21, 5, 17),
])
def test_products_match_float64_within_float32_rounding(planes, m, k, t):
    rng = np.random.default_rng(planes * 1000 + k)
    u = rng.standard_normal((planes, m, k)).astype(np.float32)
    v = rng.standard_normal((planes, k, t)).astype(np.float32)
    c = _run(u, v)
    exact = np.matmul(u.astype(np.float64), v.astype(np.float64))
    assert np.all(np.abs(c[:, :m, :t] - exact) <= _bound(u, v))
    # Padded rows and columns (zeros in the panels) come out as exact zeros.
    assert not c[:, m:].any() and not c[:, :, t:].any()


def test_only_the_panels_are_written_and_planes_may_lie_apart():
    rng = np.random.default_rng(1)
    u = rng.standard_normal((4, ROWS, 9)).astype(np.float32)
    v = rng.standard_normal((4, 9, COLS)).astype(np.float32)
    a = gemm.pack_rows(u)
    spaced = np.zeros((4, 9 * COLS + 16), np.float32)  # planes a cache line further apart, as Winograd's
    b = spaced[:, :9 * COLS].reshape(4, 1, 9, COLS)
    b[:] = gemm.pack_cols(v)
    c = np.full((4, ROWS + 2, COLS + 3), 7, np.float32)
    gemm.batched_products_cpu(a, b, c)
    np.testing.assert_allclose(c[:, :ROWS, :COLS], np.matmul(u, v), rtol=1e-5, atol=1e-5)
    assert (c[:, ROWS:] == 7).all() and (c[:, :, COLS:] == 7).all()


def test_nan_and_inf_reach_the_same_outputs_as_in_a_matrix_product():
    rng = np.random.default_rng(2)
    u = rng.standard_normal((2, ROWS, 6)).astype(np.float32)
    v = rng.standard_normal((2, 6, COLS)).astype(np.float32)
    u[0, 1, 2] = np.nan
    v[1, 3, 5] = np.inf
    u[1, :, 3] = 0  # inf * 0 is NaN
    u[1, 4, 3] = 2
    c = _run(u, v)[:, :ROWS, :COLS]
    with np.errstate(invalid="ignore"):
        want = np.matmul(u.astype(np.float64), v.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(c), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(want))
    assert np.isnan(c[0, 1]).all() and np.isinf(c[1, 4, 5]) and np.isnan(c[1, 0, 5])


def test_the_result_does_not_depend_on_threads_or_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    u = rng.standard_normal((5, 3 * ROWS, 40)).astype(np.float32)
    v = rng.standard_normal((5, 40, 7 * COLS - 3)).astype(np.float32)
    first = _run(u, v).copy()
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        monkeypatch.setattr(gemm.config, "PANEL_CHUNK_BYTES", 1)  # one column panel per task
        np.testing.assert_array_equal(_run(u, v), first)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("change, message", [
    (lambda a, b, c: (a[..., :-1], b, c), "expected panels"),
    (lambda a, b, c: (a, b[:, :, :-1], c), "expected panels"),
    (lambda a, b, c: (a, b, c[:, :-1]), "expected c of at least"),
    (lambda a, b, c: (a, b, c.astype(np.float64)), "float32"),
    (lambda a, b, c: (a, b[..., ::-1], c), "contiguous panels"),
    (lambda a, b, c: (a[:, ::-1], b, c), "C-contiguous row panels"),
])
def test_wrong_shapes_and_layouts_are_refused(change, message):
    a = gemm.pack_rows(np.ones((2, 2 * ROWS, 4), np.float32))
    b = gemm.pack_cols(np.ones((2, 4, COLS), np.float32))
    c = np.empty((2, 2 * ROWS, COLS), np.float32)
    with pytest.raises(ValueError, match=message):
        gemm.batched_products_cpu(*change(a, b, c))


def test_the_panel_shape_follows_the_processor_numba_compiles_for():
    """Under ``NUMBA_CPU_NAME=haswell`` (AVX2: 16 registers of 8 floats) the panels are 6 x 16, and the
    kernel compiled for that processor still gives the products."""
    script = (
        "import numpy as np\n"
        "from atrous import gemm\n"
        "assert (gemm.PANEL_ROWS, gemm.PANEL_COLS) == (6, 16), (gemm.PANEL_ROWS, gemm.PANEL_COLS)\n"
        "assert not gemm.panel_products()  # by default only Winograd's products use AVX2's panels\n"
        "rng = np.random.default_rng(4)\n"
        "u = rng.standard_normal((3, 13, 20)).astype(np.float32)\n"
        "v = rng.standard_normal((3, 20, 37)).astype(np.float32)\n"
        "a, b = gemm.pack_rows(u), gemm.pack_cols(v)\n"
        "c = np.empty((3, a.shape[1] * 6, b.shape[1] * 16), np.float32)\n"
        "gemm.batched_products_cpu(a, b, c)\n"
        "np.testing.assert_allclose(c[:, :13, :37], np.matmul(u, v), rtol=1e-5, atol=1e-5)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", PYTHONPATH=str(root))
    env.pop("NUMBA_CPU_FEATURES", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _finish_numpy(sums, bias, residual, slope):
    """atrous.epilogue's order in float32: (sums + bias) + residual, then Caffe's ReLU."""
    v = sums + bias[:, None]
    v = v + residual
    with np.errstate(invalid="ignore"):  # 0 * -inf
        return np.maximum(v, np.float32(0)) + np.float32(slope) * np.minimum(v, np.float32(0))


@pytest.mark.parametrize("m, k, n, depth", [
    (ROWS, 16, COLS, 512), (13, 7, 33, 512), (21, 40, 1, 512), (2 * ROWS + 5, 37, 3 * COLS + 7, 5), (1, 1, 2, 1),
])
def test_matmul_matches_float64_and_finishes_its_sums_as_the_epilogue_does(m, k, n, depth, monkeypatch):
    monkeypatch.setattr(gemm.config, "PANEL_DEPTH", depth)  # depth 5 and 1: K in passes that add to the sums
    rng = np.random.default_rng(m * 100 + n)
    w = rng.standard_normal((m, k)).astype(np.float32)
    x = rng.standard_normal((k, n)).astype(np.float32)
    a = gemm.pack_rows(w[None])[0]
    sums = gemm.matmul_cpu(a, x, np.full((m, n), np.nan, np.float32))
    assert np.all(np.abs(sums - w.astype(np.float64) @ x) <= _bound(w[None], x[None])[0])
    bias = rng.standard_normal(m).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    residual[0, 0] = -np.inf  # -inf: 0 * -inf is NaN in Caffe's ReLU with slope 0
    residual[-1, -1] = np.nan
    for slope in (0.0, 0.1):
        got = gemm.matmul_cpu(a, x, np.empty((m, n), np.float32), bias, residual, slope)
        np.testing.assert_array_equal(got, _finish_numpy(sums, bias, residual, slope))
        with pytest.raises(ValueError, match="overlap"):  # passes over K would overwrite the shortcut
            gemm.matmul_cpu(a, x, residual, bias, residual, slope)
    only_relu = gemm.matmul_cpu(a, x, np.empty((m, n), np.float32), relu_slope=0.0)
    np.testing.assert_array_equal(only_relu, np.maximum(sums, 0) + np.float32(0) * np.minimum(sums, 0))
    np.testing.assert_array_equal(gemm.matmul_cpu(a, x, np.empty((m, n), np.float32), bias), sums + bias[:, None])


def test_matmul_writes_only_its_output_whose_rows_may_lie_apart():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((ROWS + 1, 3)).astype(np.float32)
    x = rng.standard_normal((3, COLS + 1)).astype(np.float32)
    big = np.full((ROWS + 3, COLS + 4), 5, np.float32)
    out = big[1:ROWS + 2, 2:COLS + 3]  # rows further apart than the output's width
    a = gemm.pack_rows(w[None])[0]
    gemm.matmul_cpu(a, x, out, relu_slope=0.0)
    np.testing.assert_array_equal(out, np.maximum(gemm.matmul_cpu(a, x, np.empty(out.shape, np.float32)), 0))
    big[1:ROWS + 2, 2:COLS + 3] = 5
    assert (big == 5).all()


def test_matmul_does_not_depend_on_threads_or_tasks(monkeypatch):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3 * ROWS + 2, 70)).astype(np.float32)
    x = rng.standard_normal((70, 5 * COLS + 9)).astype(np.float32)
    a = gemm.pack_rows(w[None])[0]
    first = gemm.matmul_cpu(a, x, np.empty((w.shape[0], x.shape[1]), np.float32), relu_slope=0.2)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        monkeypatch.setattr(gemm.config, "PANEL_TASK_BYTES", 1 << 30)  # every column panel in one task
        again = gemm.matmul_cpu(a, x, np.empty_like(first), relu_slope=0.2)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("args, message", [
    (lambda a, x, out: (a[:, :, :-1], x, out), "expected a"),
    (lambda a, x, out: (a, x[:-1], out), "expected a"),
    (lambda a, x, out: (a, x, out[:-ROWS]), "expected a"),
    (lambda a, x, out: (a, x.astype(np.float64), out), "float32"),
    (lambda a, x, out: (a, x[:, ::-1], out), "contiguous rows"),
    (lambda a, x, out: (a[:, :0], x[:0], out), "expected a"),  # K = 0
    (lambda a, x, out: (a[::-1], x, out), "C-contiguous row panels"),
])
def test_matmul_refuses_wrong_shapes_and_layouts(args, message):
    a = gemm.pack_rows(np.ones((1, 2 * ROWS, 4), np.float32))[0]
    x, out = np.ones((4, 9), np.float32), np.empty((2 * ROWS, 9), np.float32)
    with pytest.raises(ValueError, match=message):
        gemm.matmul_cpu(*args(a, x, out))


@pytest.mark.parametrize("panels", [True, False])
def test_a_1x1_convolution_with_shortcut_and_relu_by_either_product(panels, monkeypatch):
    """``atrous.config.PANEL_PRODUCTS``: the panel kernel (finishing in registers) or BLAS and a pass."""
    import atrous
    from atrous.reference import conv2d_reference
    monkeypatch.setattr(gemm.config, "PANEL_PRODUCTS", panels)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)          # 2 images, 2 groups of 3 channels
    weight = rng.standard_normal((2 * (ROWS + 3), 3, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(weight.shape[0]).astype(np.float32)
    residual = rng.standard_normal((2, weight.shape[0], 5, 7)).astype(np.float32)
    got = atrous.conv2d(x, weight, bias, groups=2, residual=residual, relu_slope=0.1, backend="cpu")
    v = conv2d_reference(x, weight, bias, (1, 1), (0, 0), (1, 1), 2).astype(np.float64) + residual
    want = np.maximum(v, 0) + 0.1 * np.minimum(v, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_strategies_use_the_panels_by_default_only_with_avx512s(monkeypatch):
    monkeypatch.setattr(gemm.config, "PANEL_PRODUCTS", None)
    assert gemm.panel_products() == (gemm.PANEL_COLS == 32)
    monkeypatch.setattr(gemm, "PANEL_COLS", 16)
    assert not gemm.panel_products()
    monkeypatch.setattr(gemm.config, "PANEL_PRODUCTS", True)
    assert gemm.panel_products()
