"""The explicit vector rows and tiles of crf.simd against the scalar loops they replace, bit for bit."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from crf import meanfield
from crf.simd import add_sliced_message, add_weighted_sum, blur_row, row_sum, transpose_tile, weighted_sum

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
    np.testing.assert_array_equal(np.where(np.isnan(a), 0, a).view(np.int32),
                                  np.where(np.isnan(b), 0, b).view(np.int32))


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
    src = rng.random((rows + 2, cols + 3)).astype(np.float32)  # the block starts at row 2, column 1
    dst = rng.random((cols + 9, rows + 4)).astype(np.float32)  # ... and lands at row 5, column 3
    expected = dst.copy()
    expected[5:5 + cols, 3:3 + rows] = src[2:2 + rows, 1:1 + cols].T
    meanfield._transpose(src, 2, 1, dst, 5, 3, rows, cols)
    np.testing.assert_array_equal(dst, expected)


def _sum_by_halves(x):
    """The reference of crf.simd.row_sum's order: chunks of 16, 8, 4, 2, 1 lanes in channel order,
    each chunk's lanes summed by halves, the chunk sums added to a running total from 0."""
    total, offset = np.float32(0.0), 0
    for lanes in [16] * (len(x) // 16) + [w for w in (8, 4, 2, 1) if len(x) % 16 & w]:
        part = x[offset:offset + lanes].astype(np.float32)
        while len(part) > 1:
            part = part[:len(part) // 2] + part[len(part) // 2:]
        total = np.float32(total + part[0])
        offset += lanes
    return total


@njit
def _row_sum(src, row, c):
    return row_sum(src, row, c)


def test_row_sum_sums_by_halves_in_a_fixed_order():
    rng = np.random.default_rng(11)
    for c in CHANNELS:
        src = (rng.standard_normal((3, c + 2)) * 10.0 ** rng.integers(-8, 8, (3, c + 2))).astype(np.float32)
        got = _row_sum(src, 1, c)
        assert np.float32(got).view(np.int32) == _sum_by_halves(src[1, :c]).view(np.int32), c
    # the order matters: a sequential sum of these differs
    x = np.array([1e8, 1.0, -1e8, 1.0] + [0.0] * 12, np.float32)[None]
    assert _row_sum(x, 0, 16) != np.float32(((x[0, 0] + x[0, 1]) + x[0, 2]) + x[0, 3])


@njit
def _message(energy, row, lat, rows, weights, c, coefs, s, comp):
    if len(rows) == 6:
        add_sliced_message(energy, row, lat, (rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]),
                           (weights[0], weights[1], weights[2], weights[3], weights[4], weights[5]), c, coefs, s, comp)
    else:
        add_sliced_message(energy, row, lat, (rows[0], rows[1], rows[2]), (weights[0], weights[1], weights[2]),
                           c, coefs, s, comp)


@pytest.mark.parametrize("k", [3, 6])
@pytest.mark.parametrize("derive_last", [False, True])
def test_sliced_message_is_the_slice_and_the_message_loops(k, derive_last):
    rng = np.random.default_rng(20 + k + derive_last)
    for c in [1, 2, 3, 4, 5, 15, 16, 17, 20, 21, 31, 40]:
        n_labels = c + 1 if derive_last else c
        lat = rng.standard_normal((7, c)).astype(np.float32)
        rows = rng.integers(0, 7, k)
        weights = rng.random(k).astype(np.float32)
        coefs = rng.standard_normal((1, n_labels)).astype(np.float32)
        s, comp = np.float32(rng.random() + 0.5), np.float32(rng.random() * 3)
        energy = rng.standard_normal((3, n_labels + 2)).astype(np.float32)[:, :n_labels].copy()
        expected = energy.copy()
        sliced = np.zeros((1, c), np.float32)
        _weighted_sum_scalar(sliced, 0, lat, rows, weights, c, False)
        x = list(sliced[0])
        if derive_last:
            x.append(np.float32(comp - _sum_by_halves(sliced[0])))
        for lab in range(n_labels):
            expected[2, lab] = np.float32(expected[2, lab] + np.float32(s * coefs[0, lab]) * x[lab])
        _message(energy, 2, lat, rows, weights, c, coefs, s, comp)
        _same_bits(energy, expected)
