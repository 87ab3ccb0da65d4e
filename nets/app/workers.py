"""Where the work runs: in this process, on a pool of local processes, or on a Dask cluster.

:func:`run` calls one module-level function on a list of argument tuples, each call returning an
:class:`Outcome` (or a list of them, one per image, for a call that takes a group of images), with
the same results wherever it runs:

* ``workers=1``: in this process, one call after another;
* ``workers=N``: a pool of N local processes, started with ``spawn`` so that no process inherits
  another's Numba or BLAS threads; each process runs on :func:`thread_budget` threads, Numba's and
  the BLAS library's alike (through threadpoolctl), so that N processes never ask for more threads
  than the cores;
* ``client=`` a ``distributed.Client`` (Dask): the workers of a cluster, on one machine or many,
  a few calls per task (:func:`dask_chunk`), each host's cores shared by the task threads it runs.

A worker process that dies (killed, out of memory) has its calls run again: the pool is restarted
with the calls not yet done (each at most :data:`ATTEMPTS` times), and Dask reschedules a dead
worker's tasks itself. :mod:`nets.app.batch` says what the calls are.
"""
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from urllib.parse import urlparse

import numpy as np

#: How often one call is tried when the worker running it dies.
ATTEMPTS = 3

#: Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT = 10

#: glibc's ``MALLOC_TRIM_THRESHOLD_`` for Dask workers. Dask's nanny starts workers with 64 KiB,
#: which hands every freed buffer back to the system: each image's arrays (the CRF lattice, the
#: activations) are then faulted in afresh, and a LocalCluster of 2 x 1 ran at 0.69x the speed of a
#: local pool (bench/scale.py, 200 demo images with CRF). With 128 MiB it ran as fast as the pool.
DASK_MALLOC_TRIM_THRESHOLD = 128 * 2**20


@dataclass
class Outcome:
    """What became of one call: one image segmented, or evaluated.

    Attributes
    ----------
    path : str
        The image.
    error : str or None
        Why it failed (naming the file), or None.
    seconds : float
        Time in the worker, reading and writing included.
    timings : dict of str to float
        Seconds per stage (:attr:`nets.deeplab.Segmentation.timings`, plus ``read``, ``write``).
    matrix : ndarray of shape (K, K), int64, or None
        The image's confusion matrix (``evaluate`` only).
    skipped : bool
        Its result was already there (``resume``).
    warnings : list of str
    """

    path: str
    error: str = None
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    matrix: np.ndarray = None
    skipped: bool = False
    warnings: list = field(default_factory=list)


def cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_budget(processes, available=None):
    """Threads per process when ``processes`` share the cores: ``max(1, cores // processes)``."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"the number of worker processes must be a positive integer, got {processes!r}")
    return max(1, (available or cores()) // processes)


_LIMITS = []  # the threadpoolctl limiter of this process, kept alive


def limit_threads(n):
    """Run this process's Numba kernels and BLAS on ``n`` threads."""
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    _LIMITS[:] = [threadpool_limits(limits=n)]


def _start_pool_worker(threads):
    """A pool process's first act: its thread budget; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(threads)


_TASK_THREAD = threading.local()  # Numba's thread count is per calling thread


def _on_dask_worker(function, budgets, *args):
    """Run ``function`` on a Dask worker, within its host's thread budget (set once per task thread)."""
    if not getattr(_TASK_THREAD, "limited", False):
        from distributed import get_worker
        host = urlparse(get_worker().address).hostname
        limit_threads(budgets.get(host, 1))
        _TASK_THREAD.limited = True
    return function(*args)


def connect(address, timeout=CONNECT_TIMEOUT):
    """A ``distributed.Client`` for the scheduler at ``address`` (``tcp://host:8786``).

    Raises
    ------
    ValueError
        Dask distributed is not installed, or the scheduler cannot be reached; the message
        says which and how to fix it.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs Dask distributed: pip install 'deeplab-numba[distributed]' "
                         "(or \".[distributed]\" from a checkout)") from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {address!r} within {timeout} s: {exc}") from None


def local_cluster(workers=2, threads_per_worker=1):
    """A Dask ``LocalCluster`` of ``workers`` processes and a client for it, as a context manager.

    The workers get :data:`DASK_MALLOC_TRIM_THRESHOLD` (see there). For workers on other
    machines, start them with the environment variable
    ``DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{"MALLOC_TRIM_THRESHOLD_": 134217728}'`` (Dask
    lowercases the keys of variables named by path, so the value must be a mapping).

    Example::

        with local_cluster(2) as client:
            summary = segment_files(paths, Settings("demo-aspp"), "out", client=client)
    """
    import contextlib

    import dask
    from distributed import Client, LocalCluster

    @contextlib.contextmanager
    def cluster():
        key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
        with dask.config.set({key: DASK_MALLOC_TRIM_THRESHOLD}), \
                LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                             dashboard_address=None, silence_logs=40) as local, Client(local) as client:
            yield client
    return cluster()


def _dask_budgets(client):
    """Threads per task thread on each host: the host's cores over the task threads it runs.

    Warns when the workers return every freed buffer to the system (Dask's default
    ``MALLOC_TRIM_THRESHOLD_``; see :data:`DASK_MALLOC_TRIM_THRESHOLD`).
    """
    trims = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    low = sorted(a for a, v in trims.items() if v is not None and v.isdigit() and int(v) < 16 * 2**20)
    if low:
        import warnings
        warnings.warn(f"{len(low)} Dask workers run with MALLOC_TRIM_THRESHOLD_ below 16 MiB (Dask's default is "
                      f"64 KiB), which slows DeepLab by about a third; start them with "
                      f"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON='{{\"MALLOC_TRIM_THRESHOLD_\": {DASK_MALLOC_TRIM_THRESHOLD}}}'",
                      RuntimeWarning, stacklevel=3)
    workers = client.scheduler_info()["workers"]
    per_host, threads = {}, {}
    for address, info in workers.items():
        host = urlparse(address).hostname
        threads[host] = threads.get(host, 0) + int(info.get("nthreads", 1))
    for address, n in client.run(cores).items():
        per_host[urlparse(address).hostname] = n
    return {host: max(1, per_host.get(host, 1) // threads[host]) for host in threads}


def run(function, calls, workers=1, client=None, on_outcome=None, threads=None):
    """Run ``function(*call)`` for every call, serially, on a local pool or on a Dask cluster.

    Parameters
    ----------
    function : callable returning an Outcome or a list of Outcomes
        A module-level function (it travels to other processes by name). A call that returns
        a list (a group of images) has the image paths as its second argument.
    calls : list of tuple
        The arguments of each call; the second is the image path (or the group's paths).
    workers : int
        Local processes (1: in this process). Ignored with ``client``.
    client : distributed.Client, optional
    on_outcome : callable, optional
        Called in this process with each Outcome as it arrives (progress bars, logs).
    threads : int, optional
        Threads of each worker process (default: :func:`thread_budget`); with ``workers=1``
        this process's own threads are left as they are.

    Returns
    -------
    list of Outcome (or of lists of Outcomes)
        In the order of ``calls``; ``on_outcome`` gets every single Outcome.
    """
    report = on_outcome

    def on_outcome(result):  # a call's result: one Outcome, or a group's list of them
        for outcome in _each(result):
            if report is not None:
                report(outcome)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if client is not None:
        return _run_dask(function, calls, client, on_outcome, threads)
    thread_budget(workers)  # checks the number
    if workers == 1:
        outcomes = []
        for call in calls:
            outcomes.append(function(*call))
            on_outcome(outcomes[-1])
        return outcomes
    return _run_pool(function, calls, workers, on_outcome, threads or thread_budget(workers))


def _run_pool(function, calls, workers, on_outcome, threads):
    outcomes, attempts = [None] * len(calls), [0] * len(calls)
    pending = list(range(len(calls)))
    context = get_context("spawn")
    while pending:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context,
                                   initializer=_start_pool_worker, initargs=(threads,))
        try:
            futures = {}
            for k in pending:
                attempts[k] += 1
                futures[pool.submit(function, *calls[k])] = k
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    break  # a worker died: what is not finished runs again on a new pool
                for future in done:
                    k = futures.pop(future)
                    outcomes[k] = future.result()
                    on_outcome(outcomes[k])
            for future, k in futures.items():  # finished before the pool broke
                if future.done() and not future.cancelled() and future.exception() is None:
                    outcomes[k] = future.result()
                    on_outcome(outcomes[k])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        pending = [k for k in range(len(calls)) if outcomes[k] is None]
        for k in [k for k in pending if attempts[k] >= ATTEMPTS]:
            outcomes[k] = _failed(calls[k], f"a worker process died {ATTEMPTS} times while it ran this image; "
                                            f"given up")
            on_outcome(outcomes[k])
        pending = [k for k in pending if outcomes[k] is None]
    return outcomes


def _each(result):
    """The Outcomes of one call's result (one, or a group's list)."""
    return result if isinstance(result, list) else [result]


def _failed(call, message):
    """The result of a call that could not run: an Outcome per image, named."""
    paths = call[1]
    if isinstance(paths, (list, tuple)):
        return [Outcome(str(path), error=f"{path}: {message}") for path in paths]
    return Outcome(str(paths), error=f"{paths}: {message}")


def _run_calls(function, calls):
    """Several calls in one task (on a Dask worker)."""
    return [function(*call) for call in calls]


def dask_chunk(images, threads):
    """Images per Dask task: about 16 tasks per worker thread, 1 to 16 images each.

    Each task costs the scheduler, the client and the worker's event loop some CPU, which on a
    small machine is taken from the images; a few images per task keep that small, and tasks
    that stay short keep the workers balanced at the end of the run.
    """
    return max(1, min(16, images // (16 * max(1, threads))))


def _run_dask(function, calls, client, on_outcome, threads=None):
    from distributed import as_completed
    budgets = _dask_budgets(client)
    if threads is not None:
        budgets = {host: threads for host in budgets}
    threads = sum(int(w.get("nthreads", 1)) for w in client.scheduler_info()["workers"].values())
    size = dask_chunk(len(calls), threads)
    chunks = [list(range(k, min(k + size, len(calls)))) for k in range(0, len(calls), size)]
    futures = {client.submit(_on_dask_worker, _run_calls, budgets, function, [calls[k] for k in chunk], pure=False): chunk
               for chunk in chunks}
    outcomes = [None] * len(calls)
    for future in as_completed(futures):
        chunk = futures[future]
        try:
            done = future.result()
        except Exception as exc:  # a task Dask gave up on (KilledWorker after repeated deaths)
            done = [_failed(calls[k], f"the cluster could not run it: {type(exc).__name__}: {exc}")
                    for k in chunk]
        for k, outcome in zip(chunk, done):
            outcomes[k] = outcome
            on_outcome(outcome)
    return outcomes


def describe_workers(workers=1, client=None, threads=None):
    """``"2 local processes x 1 thread"`` and the like, for summaries."""
    if client is not None:
        info = client.scheduler_info()["workers"]
        return f"a Dask cluster of {len(info)} workers ({sum(int(w.get('nthreads', 1)) for w in info.values())} threads)"
    if workers == 1:
        import numba
        return f"1 process x {numba.get_num_threads()} threads"
    n = threads or thread_budget(workers)
    return f"{workers} local processes x {n} thread{'s' if n > 1 else ''}"
