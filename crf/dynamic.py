"""Blocks of a parallel loop that a free thread takes over from a slower one (work stealing).

A ``prange`` loop cuts its range into one equal share per thread before it starts, and
returns when the slowest share is done. On a shared or virtual machine the cores do not
always run at one speed: on the 2-vCPU host of ``bench/RESULTS.md`` a mean-field step
pinned to one vCPU took 48 ms while it took 73-77 ms on the other, for a step or more at
a time, and an evenly split step then took 37-40 ms instead of 25. The kernels that run at
every mean-field iteration therefore cut their work into blocks: each worker takes the
blocks of its own share in order, as a static split would give it, and then the blocks
that other workers have not yet taken::

    counters, n_workers = schedule()        # by the caller, for every call
    for worker in prange(n_workers):
        while True:
            block = next_block(counters, worker, n_blocks)
            if block >= n_blocks:
                break
            ...

When the cores keep pace, every worker runs exactly its static share (the same rows in
every pass and every iteration, so each core's cache keeps what it wrote); when one falls
behind, the other finishes its share and takes over the rest of the slow one's.

Which worker runs a block changes from run to run; what a block computes does not, so the
results are bit for bit those of any other split.

Blocks are numbered unsigned: an index that may be negative makes Numba wrap it around
(``i + len`` if ``i < 0``) at every access, and in a loop over ``a[i, ch]`` that keeps LLVM
from vectorising over ``ch`` (measured: the two-buffer blur 15 % slower on one thread with
signed indices, the same speed with unsigned ones).
"""
import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_STRIDE = 16  # int64s between two workers' counters: 128 bytes, so no two share a cache line


@intrinsic
def _claim(typingctx, counters, row):
    """``counters[row, 0] += 1`` atomically; returns the value before, as uint64 (counters: int64[:, :])."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 2):
        return None
    sig = types.uint64(counters, row)

    def codegen(context, builder, signature, args):
        array_type, row_type = signature.args
        array = context.make_array(array_type)(context, builder, args[0])
        row_index = context.cast(builder, args[1], row_type, types.intp)
        zero = context.get_constant(types.intp, 0)
        slot = cgutils.get_item_pointer(context, builder, array_type, array, [row_index, zero])
        one = context.get_constant(types.int64, 1)
        # Monotonic: the counter orders nothing else. Every input of a block was written before
        # the parallel region began, and the region's end is the barrier for what blocks write.
        return builder.atomic_rmw("add", slot, one, "monotonic")

    return sig, codegen


@njit(inline="always")
def next_block(counters, worker, n_blocks):
    """Claim the next block for ``worker``: its own share first, then the others' in turn.

    Parameters
    ----------
    counters : ndarray of shape (n_workers, _STRIDE), int64
        Column 0: the blocks claimed so far from each worker's share; zero before the loop
        (:func:`schedule`).
    worker : int
        The ``prange`` index of the calling worker, 0 <= worker < n_workers.
    n_blocks : int
        Share ``w`` is blocks ``w n_blocks // n_workers`` to ``(w + 1) n_blocks // n_workers - 1``.

    Returns
    -------
    uint64
        The claimed block, or ``n_blocks`` when no block is left.
    """
    n_workers = np.uint64(counters.shape[0])
    total = np.uint64(n_blocks)
    for k in range(n_workers):
        owner = (np.uint64(worker) + k) % n_workers
        lo = owner * total // n_workers
        hi = (owner + np.uint64(1)) * total // n_workers
        block = lo + _claim(counters, owner)
        if block < hi:
            return block
    return total


@njit(inline="always")
def next_task(counters):
    """Claim the next of a list of tasks that all workers share: the count before, as uint64.

    ``counters``: :func:`task_counter`'s; a worker claims until the count reaches the number
    of tasks.
    """
    return _claim(counters, 0)


@njit(inline="always")
def span(block, size, total):
    """Items ``block * size`` to ``min(total, (block + 1) size) - 1`` as a uint64 ``(start, stop)``."""
    start = np.uint64(block) * np.uint64(size)
    return start, min(start + np.uint64(size), np.uint64(total))


def schedule():
    """``(counters, n_workers)`` for one call of a kernel that uses :func:`next_block`.

    Fresh counters and one worker per Numba thread. A kernel may be given more workers than
    threads (a thread then runs several, one after the other) or fewer: the tests run the
    kernels with several counts and compare the bits.
    """
    n_workers = numba.get_num_threads()
    return np.zeros((n_workers, _STRIDE), np.int64), n_workers


def task_counter():
    """A fresh counter for one call of a kernel that uses :func:`next_task`."""
    return np.zeros((1, _STRIDE), np.int64)
