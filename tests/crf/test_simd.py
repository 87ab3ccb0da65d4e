"""The explicit vector rows and tiles of crf.simd against the scalar loops they replace, bit for bit."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from crf import meanfield
from crf.simd import add_weighted_sum, blur_row, transpose_tile, weighted_sum

# Every tail the chunks of 16, 8, 4, 2 and 1 lanes can leave, and rows longer than one chunk.
CHANNELS = list(range(0, 34)) + [47, 64, 85]


@njit
def _weighted_sum_scalar(out, row, src, rows, weights, c, accumulate):
    for ch in range(c):
        total = out[row, ch] if accumulate else weights[0] * src[rows[0], ch]
        for k in range(0 if accumulate else 1, len(rows)):
            total = total + weights[k] * src[rows[k], ch]
        out[row, ch] = total


@njit
def _call(out, row, src, r, w, c, accumulate):
    if accumulate:
        add_weighted_sum(out, row, src, r, w, c)
    else:
        weighted_sum(out, row, src, r, w, c)


@njit
def _sums(out, row, src, rows, weights, c, accumulate):
    """The intrinsics for K = len(rows) in 1, 2, 3, 4 or 6 (a row tuple's type has its length)."""
    k = len(rows)
    if k == 1:
        _call(out, row, src, (rows[0],), (weights[0],), c, accumulate)
    elif k == 2:
        _call(out, row, src, (rows[0], rows[1]), (weights[0], weights[1]), c, accumulate)
    elif k == 3:
        _call(out, row, src, (rows[0], rows[1], rows[2]), (weights[0], weights[1], weights[2]), c, accumulate)
    elif k == 4:
        _call(out, row, src, (rows[0], rows[1], rows[2], rows[3]),
              (weights[0], weights[1], weights[2], weights[3]), c, accumulate)
    else:
        _call(out, row, src, (rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]),
              (weights[0], weights[1], weights[2], weights[3], weights[4], weights[5]), c, accumulate)


def _values(rng, shape):
    """Floats of every kind the lattice meets, and some it should not: zeros of both signs,
    subnormals, large and small magnitudes, infinities and NaN."""
    v = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).astype(np.float32)
    specials = np.array([0.0, -0.0, 1e-40, -1e-42, np.inf, -np.inf, np.nan, 3.4e38], np.float32)
    mask = rng.random(shape) < 0.1
    v[mask] = rng.choice(specials, mask.sum())
    return v


def _same_bits(a, b):
    """Equal bit for bit (zeros by their sign too), where any NaN equals any NaN: which operand's NaN
    a sum of two NaNs passes on is the processor's choice, not the code's."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.where(np.isnan(a), 0, a).view(np.int32), np.where(np.isnan(b), 0, b).view(np.int32))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("accumulate", [False, True])
def test_weighted_sum_is_the_scalar_loop_bit_for_bit(k, accumulate):
    rng = np.random.default_rng(10 * k + accumulate)
    for c in CHANNELS:
        width = c + 5  # the rows are longer than c: the channels beyond c stay as they are
        src = _values(rng, (9, width))
        out = _values(rng, (4, width))
        rows = rng.integers(0, 9, 6)
        rows[1] = rows[0]  # a row may come twice
        weights = _values(rng, 6)
        expected, got = out.copy(), out.copy()
        _weighted_sum_scalar(expected, 2, src, rows[:k], weights[:k], c, accumulate)
        _sums(got, 2, src, rows[:k], weights[:k], c, accumulate)
        _same_bits(got, expected)


@njit
def _blur_scalar(src, dst, v, a, b, c):
    for ch in range(c):
        dst[v, ch] = src[v, ch] + np.float32(0.5) * (src[a, ch] + src[b, ch])


@njit
def _blur(src, dst, v, a, b, c):
    blur_row(src, dst, v, a, b, c)


def test_blur_row_is_the_scalar_loop_bit_for_bit():
    rng = np.random.default_rng(7)
    for c in CHANNELS:
        src = _values(rng, (6, c + 3))
        dst = _values(rng, (6, c + 3))
        for v, a, b in [(0, 1, 2), (3, 3, 5), (4, 5, 5)]:
            expected, got = dst.copy(), dst.copy()
            _blur_scalar(src, expected, v, a, b, c)
            _blur(src, got, v, a, b, c)
            _same_bits(got, expected)


def test_row_indices_of_any_integer_type():
    src = np.arange(40, dtype=np.float32).reshape(2, 20)
    for dtype in (np.int32, np.uint64, np.int64):
        out = np.zeros((1, 20), np.float32)
        _sums(out, dtype(0), src, np.array([1, 0], dtype), np.array([2.0, 1.0], np.float32), np.int32(20), False)
        np.testing.assert_array_equal(out[0], 2 * src[1] + src[0])


def test_other_types_are_refused():
    rows, weights = np.array([0]), np.array([1.0], np.float32)
    with pytest.raises(TypingError):  # float64 rows
        _sums(np.zeros((1, 4)), 0, np.zeros((1, 4)), rows, weights, 4, False)
    with pytest.raises(TypingError):  # a strided view: the rows' channels must be contiguous
        _sums(np.zeros((1, 4), np.float32), 0, np.zeros((1, 8), np.float32)[:, ::2], rows, weights, 4, False)
    with pytest.raises(TypingError):  # float64 weights
        _sums(np.zeros((1, 4), np.float32), 0, np.zeros((1, 4), np.float32), rows, weights.astype(np.float64), 4,
              False)
    with pytest.raises(TypingError):
        _blur(np.zeros((2, 4), np.float64), np.zeros((2, 4), np.float64), 0, 1, 1, 4)


@njit
def _tile(src, src_row, src_col, dst, dst_row, dst_col):
    transpose_tile(src, src_row, src_col, dst, dst_row, dst_col)


def test_transpose_tile_moves_every_bit():
    rng = np.random.default_rng(3)
    src = _values(rng, (40, 37))
    for src_row, src_col, dst_row, dst_col in [(0, 0, 0, 0), (3, 5, 7, 11), (24, 21, 14, 34)]:
        dst = _values(rng, (30, 50))
        expected = dst.copy()
        expected[dst_row:dst_row + 16, dst_col:dst_col + 16] = src[src_row:src_row + 16, src_col:src_col + 16].T
        _tile(src, src_row, src_col, dst, dst_row, dst_col)
        np.testing.assert_array_equal(dst.view(np.int32), expected.view(np.int32))  # NaN payloads too


@pytest.mark.parametrize("rows, cols", [(1, 1), (15, 21), (16, 16), (16, 21), (21, 256), (256, 21), (250, 20),
                                        (37, 45)])
def test_mean_field_transpose_with_its_edges(rows, cols):
    rng = np.random.default_rng(rows * cols)
    src = rng.random((rows + 2, cols + 3)).astype(np.float32)
    dst = rng.random((cols + 9, rows + 4)).astype(np.float32)
    expected = dst.copy()
    expected[5:5 + cols, :rows] = src[2:2 + rows, :cols].T
    meanfield._transpose(src, 2, dst, 5, rows, cols)
    np.testing.assert_array_equal(dst, expected)
