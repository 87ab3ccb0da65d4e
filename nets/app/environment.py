"""What this machine offers: versions, Numba's threading layer, threads, CUDA.

Used by ``deeplab info`` and by the benchmarks, which print it beside their numbers.
"""
import importlib
import importlib.metadata
import os
import platform
import sys


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def threading_layer():
    """Run a tiny ``prange`` kernel and return the threading layer Numba chose for it.

    Numba picks its layer (tbb, omp or workqueue) lazily, at the first parallel
    launch; before that ``numba.threading_layer()`` raises.
    """
    import numba
    import numpy as np

    from atrous.cpu import parallel_probe
    parallel_probe(np.ones(64, np.float32))
    return numba.threading_layer()


def cuda_status():
    """Describe CUDA: ``("gpu", name)``, ``("simulator", ...)`` or ``("none", reason)``."""
    try:
        from numba import config
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        return "none", f"numba missing: {exc}"
    if config.ENABLE_CUDASIM:
        return "simulator", "NUMBA_ENABLE_CUDASIM=1: kernels run in the (slow) CUDA simulator"
    try:
        from numba import cuda
        if not cuda.is_available():
            return "none", "no CUDA driver or GPU found"
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        name = f"{name} (compute capability {device.compute_capability[0]}.{device.compute_capability[1]})"
    except Exception as exc:  # a broken driver or a missing CUDA target
        return "none", f"CUDA unusable: {exc}"
    import warnings

    from atrous.backend import cuda_problem, cuda_usable
    with warnings.catch_warnings():  # the reason is printed here instead
        warnings.simplefilter("ignore", RuntimeWarning)
        if not cuda_usable():
            return "none", f"{name}: {cuda_problem()}"
    return "gpu", name


def blas():
    """The BLAS libraries NumPy calls, with their kernel and threads (threadpoolctl), one string."""
    from threadpoolctl import threadpool_info
    importlib.import_module("numpy")  # loads NumPy's BLAS, so that threadpoolctl sees it
    found = [f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('architecture') or 'kernel unknown'}), "
             f"{p.get('num_threads')} threads" for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(found) or "none found"


#: OpenBLAS's x86-64 kernels from older to newer instruction sets (the names of OPENBLAS_CORETYPE).
OPENBLAS_KERNELS = ("Prescott", "Core2", "Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake",
                    "SapphireRapids")


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _cpu_flags():
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def processor(cpuinfo=None):
    """The processor's model, family/model numbers and widest vector extension, one string.

    Hosts of one kind differ (the benchmarks' 2-vCPU machines have been AMD EPYC and Intel Xeon
    processors), and so do their caches and vector units: every benchmark prints this line.
    ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None); without it, ``platform``'s guess.
    """
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's lines
            fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    numbers = (f"family {fields['cpu family']} model {fields['model']}"
               if "cpu family" in fields and "model" in fields else None)
    return ", ".join(x for x in (name, numbers, vector) if x)


def available_memory(meminfo=None):
    """Bytes of memory available to a new process (Linux's ``MemAvailable``), or None where unknown.

    ``meminfo``: the text of ``/proc/meminfo`` (read when None).
    """
    if meminfo is None:
        try:
            with open("/proc/meminfo") as f:
                meminfo = f.read()
        except OSError:
            return None
    for line in meminfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "MemAvailable":
            number, _, unit = value.strip().partition(" ")
            if number.isdigit() and unit.strip() in ("kB", ""):
                return int(number) * (1024 if unit.strip() == "kB" else 1)
    return None


def blas_warning(environ=None, flags=None):
    """A warning when ``OPENBLAS_CORETYPE`` forces kernels older than the processor supports, or None.

    Some machines set it to work around old OpenBLAS builds; a current NumPy then runs its float32
    GEMM on AVX2 kernels of about half the speed of the AVX-512 ones on some processors (measured:
    270 against 480-520 GFLOP/s; bench/RESULTS.md), while OpenCV and torch keep their own kernels.
    The CPU convolutions' products run on this project's own kernel (:mod:`atrous.gemm`) unless
    ``atrous.config.PANEL_PRODUCTS`` is off (by default where Numba compiles without AVX-512) or
    their inner dimension exceeds ``PANEL_MAX_DEPTH``; NumPy's other products and the "band"
    strategy's still go to BLAS.
    """
    environ = os.environ if environ is None else environ
    forced = environ.get("OPENBLAS_CORETYPE")
    if not forced:
        return None
    flags = _cpu_flags() if flags is None else flags
    best = "SkylakeX" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "Haswell" if "avx2" in flags else None
    names = [k.lower() for k in OPENBLAS_KERNELS]
    if best is None or forced.lower() not in names or names.index(forced.lower()) >= names.index(best.lower()):
        return None
    return (f"OPENBLAS_CORETYPE={forced} forces OpenBLAS's {forced} kernels on a processor that runs its {best} "
            f"kernels: NumPy's matrix products (not the convolutions' own, atrous.gemm) may run at half speed. "
            f"Unset OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) unless your OpenBLAS build needs them")


def products_status():
    """Which kernel runs the CPU convolutions' matrix products (:mod:`atrous.gemm`), and its panel shape."""
    from atrous import config, gemm
    setting = f"atrous.config.PANEL_PRODUCTS = {config.PANEL_PRODUCTS}" + (
        " (auto)" if config.PANEL_PRODUCTS is None else "")
    which = "atrous.gemm" if gemm.panel_products() else "BLAS, Winograd's by atrous.gemm"
    return f"{which}, panels of {gemm.PANEL_ROWS} x {gemm.PANEL_COLS}; {setting}"


def benchmark_line():
    """The lines every benchmark prints beside its numbers: the processor, BLAS, its kernel, the
    convolutions' own product kernel, and the warning if any."""
    warning = blas_warning()
    return (f"CPU: {processor()}\nBLAS: {blas()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
            f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', '(unset)')}; "
            f"convolution products: {products_status()}") + (f"\nwarning: {warning}" if warning else "")


def heap_status():
    """What ``import crf`` did with the C library's heap thresholds (:mod:`crf.heap`)."""
    from crf import heap  # importing crf sets them, unless the environment did
    return heap.status


def grid_cache_status():
    """How many bytes of smoothness lattices ``crf`` keeps for the next image of a size (:mod:`crf.grid_cache`)."""
    from crf import config
    budget = config.GRID_CACHE_BYTES
    if budget <= 0:
        return "off (crf.config.GRID_CACHE_BYTES = 0): every image builds its smoothness lattice"
    return (f"up to {budget / 2**20:g} MiB of smoothness lattices kept for the next image of the same size and "
            f"theta_gamma (crf.grid_cache; crf.config.GRID_CACHE_BYTES, 0 turns it off)")


def describe():
    """Everything ``deeplab info`` prints, as an ordered list of (key, value) pairs."""
    import numba

    kind, detail = cuda_status()
    backends = ["numpy", "cpu"] + (["cuda"] if kind != "none" else [])
    memory = available_memory()
    rows = [
        ("deeplab-numba", _version("deeplab-numba") or "not installed (source tree)"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("processor", processor()),
        ("memory available", "unknown" if memory is None else f"{memory / 2**30:.1f} GiB"),
    ]
    for dist in ("numpy", "numba", "llvmlite", "scipy", "numba-cuda", "matplotlib", "pillow", "threadpoolctl", "tqdm",
                 "distributed"):
        rows.append((dist, _version(dist) or "not installed"))
    from nets.app.workers import cores, thread_budget
    n = cores()
    rows += [
        ("numba threading layer", threading_layer()),
        ("numba threads", f"{numba.get_num_threads()} of {numba.config.NUMBA_NUM_THREADS}"),
        ("blas", blas()),
        ("blas threads idle", f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', '(unset)')} "
                              f"(spin 2^N cycles after a product, then sleep; OpenBLAS reads it when it loads)"),
        *([("warning", blas_warning())] if blas_warning() else []),
        ("convolution products", products_status()),
        ("heap", heap_status()),
        ("crf lattice cache", grid_cache_status()),
        ("workers", f"{n} cores: --workers N gives each worker max(1, {n} // N) threads (Numba and BLAS); "
                    + ", ".join(f"{w} -> {thread_budget(w, n)}" for w in sorted({1, 2, 4, n}) if w <= max(n, 2))),
        ("cuda", f"{kind}: {detail}"),
        ("backends", ", ".join(backends) + '  ("auto" = ' + ("cuda" if kind == "gpu" else "cpu") + ")"),
    ]
    return rows
