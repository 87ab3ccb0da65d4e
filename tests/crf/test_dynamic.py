"""Blocks that a free thread takes over (crf.dynamic): every item once, and the same bits for any worker count."""
import numpy as np
import pytest
from numba import njit, prange

import crf
from crf import config as crf_config
from crf import dynamic
from crf import lattice as L


@njit(parallel=True)
def _claim_all(counts, size, counters, n_workers):
    n_blocks = (counts.shape[0] + size - 1) // size
    for worker in prange(n_workers):
        while True:
            block = dynamic.next_block(counters, worker, n_blocks)
            if block >= n_blocks:
                break
            start, stop = dynamic.span(block, size, counts.shape[0])
            for i in range(start, stop):
                counts[i] += 1  # the items of one block belong to one worker: no race


@pytest.mark.parametrize("size, total, n_workers", [(1, 0, 2), (1, 1, 2), (3, 10, 2), (7, 100, 5),
                                                    (2048, 5000, 3), (64, 64, 1), (1, 3, 8)])
def test_every_item_is_claimed_exactly_once(size, total, n_workers):
    counts = np.zeros(total, np.int64)
    _claim_all(counts, size, np.zeros((n_workers, 16), np.int64), n_workers)
    assert (counts == 1).all()


@njit
def _claims_in_turn(counters, worker, n_blocks):
    out = []
    while True:
        block = dynamic.next_block(counters, worker, n_blocks)
        out.append(np.int64(block))
        if block >= n_blocks:
            return out


def test_a_worker_takes_its_own_share_first_then_the_others_in_turn():
    counters = np.zeros((3, 16), np.int64)  # 10 blocks in shares 0-2, 3-5 and 6-9
    assert list(_claims_in_turn(counters, 1, 10)) == [3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 10]
    counters = np.zeros((3, 16), np.int64)
    assert dynamic.next_block(counters, 2, 10) == 6  # worker 2 starts its own share
    assert list(_claims_in_turn(counters, 0, 10)) == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10]  # 6 was taken
    assert dynamic.next_block(counters, 2, 10) == 10


def test_schedule_gives_fresh_counters_on_their_own_cache_lines():
    import numba
    counters, n_workers = dynamic.schedule()
    assert n_workers == numba.get_num_threads()
    assert counters.shape == (n_workers, 16) and counters.dtype == np.int64 and not counters.any()
    assert counters.strides[0] >= 128
    assert dynamic.schedule()[0] is not counters


def _with_workers(monkeypatch, n_workers):
    monkeypatch.setattr(dynamic, "schedule", lambda: (np.zeros((n_workers, 16), np.int64), n_workers))


def test_filter_is_the_same_for_any_number_of_workers(monkeypatch):
    """Splat (blocks of equal work) and two-buffer blur (blocks of vertices) with 1, 2 and 7
    workers: bit for bit the same, and the NumPy reference's."""
    rng = np.random.default_rng(21)
    f = (rng.random((6000, 5)) * 6).astype(np.float32)
    v = rng.standard_normal((6000, 3)).astype(np.float32)
    lat = L.build(f, backend="cpu")
    monkeypatch.setattr(crf_config, "CHAIN_BLUR_MAX_BYTES", 0)  # the two-buffer blur
    monkeypatch.setattr(crf_config, "BLUR_BLOCKS_PER_THREAD", 3)  # 3, 6 and 21 blocks a pass
    m = lat.n_vertices
    assert all(m % -(-m // (3 * n)) != 0 for n in (1, 2, 7))  # each with a last block that is not full
    reference = lat.filter(v, backend="numpy")
    results = []
    for n_workers in (1, 2, 7):
        _with_workers(monkeypatch, n_workers)
        results.append(lat.filter(v, backend="cpu"))
    np.testing.assert_allclose(results[0], reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def _marginals(image, unary, backend):
    model = crf.DenseCRF(unary, backend=backend)
    model.add_bilateral(image, theta_alpha=8, theta_beta=10, w=4)
    model.add_gaussian(theta_gamma=3, w=3)
    return model.inference(4)


def test_mean_field_is_the_same_for_any_number_of_workers(monkeypatch):
    """The fused slice-messages-softmax pass claims blocks of 256 points; a last block that is
    not full and more workers than blocks change no bit."""
    rng = np.random.default_rng(22)
    image = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)  # 1517 points: 5 full blocks and 237
    unary = rng.standard_normal((4, 37, 41)).astype(np.float32)
    results = []
    for n_workers in (1, 3, 11):
        _with_workers(monkeypatch, n_workers)
        results.append(_marginals(image, unary, "cpu"))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    np.testing.assert_allclose(results[0], _marginals(image, unary, "numpy"), atol=1e-5)
