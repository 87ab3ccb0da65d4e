"""The packed-panel batched products (atrous.gemm) against float64 matrix products."""
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
])
def test_wrong_shapes_and_layouts_are_refused(change, message):
    a = gemm.pack_rows(np.ones((2, ROWS, 4), np.float32))
    b = gemm.pack_cols(np.ones((2, 4, COLS), np.float32))
    c = np.empty((2, ROWS, COLS), np.float32)
    with pytest.raises(ValueError, match=message):
        gemm.batched_products_cpu(*change(a, b, c))


def test_the_panel_shape_follows_the_processor_numba_compiles_for():
    """Under ``NUMBA_CPU_NAME=haswell`` (AVX2: 16 registers of 8 floats) the panels are 6 x 16, and the
    kernel compiled for that processor still gives the products."""
    script = (
        "import numpy as np\n"
        "from atrous import gemm\n"
        "assert (gemm.PANEL_ROWS, gemm.PANEL_COLS) == (6, 16), (gemm.PANEL_ROWS, gemm.PANEL_COLS)\n"
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
