"""Many images at once: in this process, on a pool of local processes, or on a Dask cluster.

Every image is independent, so a data set spreads over processes image by image. Three ways to
run the same work, with the same results to the last bit:

* ``workers=1`` (the default): in this process, one image after another;
* ``workers=N``: a pool of N local processes (started with ``spawn``, so that no process
  inherits another's Numba or BLAS threads);
* ``client=`` a ``distributed.Client`` (Dask): the workers of a cluster, on one machine or many.

Each worker process loads the network and the CRF preset **once**, on its first image, and keeps
them for every image it gets; weights are never read again per image. It runs its kernels on
``max(1, cores // processes)`` threads (:func:`thread_budget`), Numba's and the BLAS library's
alike (through threadpoolctl), so that N processes never ask for more threads than the cores.

What travels to a worker is a :class:`Settings` (the model's name or file, the weights' file, the
CRF preset, the scales, the backend) and file names: images are read, and outputs written, by the
worker itself. On a cluster, the image folder, the output folder and the weights must therefore be
at the same path on every machine (a shared folder). Outputs are written atomically, so an image
whose output exists is complete (:func:`segment_files`'s ``resume``).

Nothing is lost:

* an image that cannot be read or segmented fails alone: its error names it, the others complete;
* a worker process that dies (killed, out of memory) has its images run again: the pool is
  restarted with the images not yet done (each image at most :data:`ATTEMPTS` times), and Dask
  reschedules a dead worker's tasks itself (a task is a few images, :func:`dask_chunk`);
* ``resume=True`` skips what an interrupted run finished: complete outputs for ``segment``,
  per-image confusion matrices saved in a state folder for ``evaluate``.
"""
import json
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from urllib.parse import urlparse

import numpy as np

from nets.app.files import output_paths, save_probabilities
from nets.caffe import atomic_write

#: How often one image is tried when the worker running it dies.
ATTEMPTS = 3

#: Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT = 10

#: glibc's ``MALLOC_TRIM_THRESHOLD_`` for Dask workers. Dask's nanny starts workers with 64 KiB,
#: which hands every freed buffer back to the system: each image's arrays (the CRF lattice, the
#: activations) are then faulted in afresh, and a LocalCluster of 2 x 1 ran at 0.69x the speed of a
#: local pool (bench/scale.py, 200 demo images with CRF). With 128 MiB it ran as fast as the pool.
DASK_MALLOC_TRIM_THRESHOLD = 128 * 2**20


@dataclass(frozen=True)
class Settings:
    """What a worker needs to segment an image: plain values only, so that it travels anywhere.

    Attributes
    ----------
    model : str
        A model name (``deeplab-v2-resnet101-msc``, ``demo-aspp``) or a network file.
    weights : str or None
        The ``.caffemodel`` or converted ``.npz`` (a path every worker can read).
    crf : str, crf.Preset or None
        A preset name, ``"auto"``, or None for no CRF.
    scales : tuple of float
    backend : {"numpy", "cpu", "cuda", "auto"}
    num_labels : int
    """

    model: str
    weights: str = None
    crf: object = None
    scales: tuple = (1.0,)
    backend: str = "auto"
    num_labels: int = 21


@dataclass
class Outcome:
    """What became of one image.

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


@dataclass
class Summary:
    """A run over many images: its outcomes in input order, and its totals."""

    outcomes: list
    seconds: float
    workers: str

    @property
    def failures(self):
        return [o for o in self.outcomes if o.error is not None]

    @property
    def done(self):
        return sum(o.error is None for o in self.outcomes)

    def line(self):
        """``images, failures, seconds, images/s`` in one line."""
        ran = sum(o.error is None and not o.skipped for o in self.outcomes)
        skipped = sum(o.skipped for o in self.outcomes)
        rate = ran / self.seconds if self.seconds > 0 else float("nan")
        return (f"{len(self.outcomes)} images ({skipped} already done), {len(self.failures)} failed, "
                f"{self.seconds:.1f} s, {rate:.2f} images/s on {self.workers}")


# ----------------------------------------------------------------------------- threads


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


# ----------------------------------------------------------------------------- worker side

_LOADED = {}  # (model, weights, num_labels, crf) -> (Model, preset): one load per process


def load(settings):
    """The model and CRF preset of ``settings``, loaded once per process (then cached).

    Raises the loading errors (unknown model, unreadable weights, unknown preset, scales
    for a multi-scale net): call it once in the submitting process to fail early.
    """
    from nets.deeplab import Model, parse_scales, resolve_preset
    key = (settings.model, settings.weights, settings.num_labels, repr(settings.crf))
    if key not in _LOADED:
        model = Model.load(settings.model, settings.weights, num_labels=settings.num_labels)
        model.check_scales(parse_scales(settings.scales))
        _LOADED[key] = (model, resolve_preset(settings.crf, model))
    return _LOADED[key]


def _segment_image(settings, path):
    """Read and segment one image in this process -> (image, Segmentation, warnings)."""
    import warnings

    from nets.app.imageio import read_image
    model, preset = load(settings)
    t = time.perf_counter()
    image = read_image(path)
    read = time.perf_counter() - t
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = model.segment(image, crf=preset, scales=settings.scales, backend=settings.backend)
    result.timings = {"read": read, **result.timings}
    return image, result, [f"{path}: {w.message}" for w in caught]


def segment_one(settings, path, out_dir, overlay=False, save_probs=False):
    """Segment one image file and write its outputs (in whichever process runs it).

    Returns
    -------
    Outcome
        With ``error`` set, never raising, when the image cannot be read or segmented.
    """
    from PIL import Image

    from nets.app.imageio import ImageReadError, overlay as blend, save_image_atomic, write_label_png
    start = time.perf_counter()
    try:
        image, result, caught = _segment_image(settings, path)
        t = time.perf_counter()
        labels_png, *others = output_paths(path, out_dir, overlay, save_probs)
        write_label_png(labels_png, result.labels)
        if overlay:
            save_image_atomic(Image.fromarray(blend(image, result.labels)), others.pop(0))
        if save_probs:
            save_probabilities(others.pop(0), result.probabilities)
        result.timings["write"] = time.perf_counter() - t
    except (ImageReadError, OSError, ValueError, TypeError) as exc:
        message = str(exc) if os.fspath(path) in str(exc) else f"{path}: {exc}"
        return Outcome(path, error=message, seconds=time.perf_counter() - start)
    return Outcome(path, seconds=time.perf_counter() - start, timings=result.timings, warnings=caught)


def evaluate_one(settings, image_path, label_path, num_classes, state_dir=None):
    """Segment one image and count its confusion matrix against its ground truth.

    With ``state_dir``, the matrix is also saved there (``STEM.npy``, atomically) for ``resume``.

    Returns
    -------
    Outcome
        ``matrix`` (num_classes, num_classes) int64, or ``error`` naming the file.
    """
    from nets.app.evaluate import confusion_matrix
    from nets.app.imageio import ImageReadError, read_label_png
    start = time.perf_counter()
    try:
        truth = read_label_png(label_path)
        _, result, caught = _segment_image(settings, image_path)
        matrix = confusion_matrix(truth, result.labels, num_classes)
        if state_dir is not None:
            with atomic_write(_state_file(state_dir, label_path)) as f:
                np.save(f, matrix, allow_pickle=False)
    except (ImageReadError, OSError, ValueError, TypeError) as exc:
        return Outcome(image_path, error=f"{label_path}: {exc}", seconds=time.perf_counter() - start)
    return Outcome(image_path, seconds=time.perf_counter() - start, timings=result.timings, matrix=matrix,
                   warnings=caught)


def _start_pool_worker(threads):
    """A pool process's first act: its thread budget; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(threads)


def _on_dask_worker(function, budgets, *args):
    """Run ``function`` on a Dask worker, within its host's thread budget (set once per process)."""
    if not _LIMITS:
        from distributed import get_worker
        host = urlparse(get_worker().address).hostname
        limit_threads(budgets.get(host, 1))
    return function(*args)


# ----------------------------------------------------------------------------- parent side


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
    function : callable returning an Outcome
        A module-level function (it travels to other processes by name).
    calls : list of tuple
        The arguments of each call.
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
    list of Outcome
        In the order of ``calls``.
    """
    on_outcome = on_outcome or (lambda outcome: None)
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
            outcomes[k] = Outcome(str(calls[k][1]), error=f"{calls[k][1]}: a worker process died {ATTEMPTS} "
                                                           f"times while it ran this image; given up")
            on_outcome(outcomes[k])
        pending = [k for k in pending if outcomes[k] is None]
    return outcomes


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
            done = [Outcome(str(calls[k][1]), error=f"{calls[k][1]}: the cluster could not run it: "
                                                    f"{type(exc).__name__}: {exc}") for k in chunk]
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


class Progress:
    """A progress bar on standard error (tqdm): images done of total, images/s, time left.

    Silent with ``quiet``, or when standard output or error is not a terminal (a log, a pipe).
    """

    def __init__(self, total, quiet=False, description="images"):
        self.bar = None
        if not quiet and sys.stderr.isatty() and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="img", desc=description, file=sys.stderr, dynamic_ncols=True)

    def update(self, outcome):
        if self.bar is not None:
            self.bar.update(1)

    def write(self, line):
        """A log line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the two jobs


def segment_files(paths, settings, out_dir, overlay=False, save_probs=False, workers=1, client=None,
                  resume=False, on_outcome=None, threads=None):
    """Segment image files into ``out_dir``, on ``workers`` processes or a Dask ``client``.

    Parameters
    ----------
    paths : list of str
        Image files (:func:`nets.app.files.image_files` expands folders).
    settings : Settings
    out_dir : str
        Gets ``NAME.png`` (VOC-palette labels), with ``overlay`` ``NAME_overlay.png``, with
        ``save_probs`` ``NAME_probs.npy`` ((L, H, W) float32), all written atomically.
    workers : int
    client : distributed.Client, optional
    resume : bool
        Skip the images whose outputs are all there (complete: they are written atomically).
    on_outcome : callable, optional
    threads : int, optional
        Threads per worker process (default ``max(1, cores // processes)``).

    Returns
    -------
    Summary
    """
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    outcomes, calls, index, seen = [None] * len(paths), [], [], {}
    for k, path in enumerate(paths):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            outcomes[k] = Outcome(path, error=f"{path}: its output {stem}.png would overwrite the one of "
                                              f"{seen[stem]}; skipped")
        elif resume and all(os.path.isfile(p) for p in output_paths(path, out_dir, overlay, save_probs)):
            outcomes[k] = Outcome(path, skipped=True)
        else:
            calls.append((settings, path, out_dir, overlay, save_probs))
            index.append(k)
        seen.setdefault(stem, path)
    for outcome in outcomes:
        if outcome is not None and on_outcome is not None:
            on_outcome(outcome)
    for k, outcome in zip(index, run(segment_one, calls, workers, client, on_outcome, threads)):
        outcomes[k] = outcome
    return Summary(outcomes, time.perf_counter() - start, describe_workers(workers, client, threads))


def _state_file(state_dir, label_path):
    return os.path.join(os.fspath(state_dir), os.path.splitext(os.path.basename(label_path))[0] + ".npy")


def _check_state(state_dir, settings, num_classes):
    """Create the state folder, or check that it was made by the same settings."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "settings.json")
    current = {**asdict(settings), "crf": repr(settings.crf), "scales": list(settings.scales),
               "num_classes": num_classes}
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != current:
            raise ValueError(f"{state_dir}: its confusion matrices were counted with other settings "
                             f"({saved}); expected {current}. Use another --state folder")
    else:
        with atomic_write(path, "w") as f:
            json.dump(current, f, indent=1)


def evaluate_files(pairs, settings, num_classes, workers=1, client=None, state_dir=None, resume=False,
                   on_outcome=None, threads=None):
    """Segment images and count one confusion matrix over all of them (PASCAL VOC's measure).

    Parameters
    ----------
    pairs : list of (str, str)
        ``(ground-truth label PNG, image)`` (:func:`nets.app.evaluate.pair_files`).
    settings : Settings
    num_classes : int
    workers : int
    client : distributed.Client, optional
    state_dir : str, optional
        Keep each image's confusion matrix there (``STEM.npy`` and ``settings.json``).
    resume : bool
        Take the matrices already in ``state_dir`` instead of segmenting those images again.
    on_outcome : callable, optional
    threads : int, optional
        Threads per worker process (default ``max(1, cores // processes)``).

    Returns
    -------
    matrix : ndarray of shape (num_classes, num_classes), int64
        The exact integer sum of the images' matrices, whatever the order they finished in.
    summary : Summary
    """
    if resume and state_dir is None:
        raise ValueError("resume needs the state folder of the interrupted run (--state DIR)")
    start = time.perf_counter()
    if state_dir is not None:
        _check_state(state_dir, settings, num_classes)
    outcomes, calls, index = [None] * len(pairs), [], []
    for k, (label_path, image_path) in enumerate(pairs):
        saved = None if state_dir is None else _state_file(state_dir, label_path)
        if resume and os.path.isfile(saved):
            matrix = np.load(saved, allow_pickle=False)
            if matrix.shape == (num_classes, num_classes) and matrix.dtype == np.int64:
                outcomes[k] = Outcome(image_path, matrix=matrix, skipped=True)
                if on_outcome is not None:
                    on_outcome(outcomes[k])
                continue
        calls.append((settings, image_path, label_path, num_classes, state_dir))
        index.append(k)
    for k, outcome in zip(index, run(evaluate_one, calls, workers, client, on_outcome, threads)):
        outcomes[k] = outcome
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for outcome in outcomes:
        if outcome.matrix is not None:
            matrix += outcome.matrix
    return matrix, Summary(outcomes, time.perf_counter() - start, describe_workers(workers, client, threads))
