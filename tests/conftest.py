"""Shared test infrastructure.

* ``require_oracle(name)``: import a reference implementation (OpenCV, pydensecrf,
  ...). Under ``DEEPLAB_REQUIRE_ORACLES=1`` (CI) a missing oracle *fails* the
  test; otherwise it skips, so a developer without OpenCV can still run the rest.
* ``run_python(code, env=...)``: run a snippet in a fresh interpreter, used by the
  CUDA-simulator and kernel-cache tests, which need a process of their own.
* ``in_cudasim``: true inside the CUDA-simulator child process. Tests marked
  ``cuda`` use it to keep to a dozen tiny cases there and run the full matrix
  on a real GPU.
* Every test starts with ``crf.grid_cache`` empty (an autouse fixture), so that no
  test depends on the lattices an earlier one left there.
* In the simulator, where every GPU thread is a Python thread, the launch shapes of
  the three packages' configs (``atrous.config``, ``crf.config``,
  ``nets.layers.config``) are made small here, and the interpreter's switch interval
  short (the simulator polls its threads while holding the GIL, so every
  ``syncthreads`` would cost milliseconds). Production code never asks whether it
  runs in the simulator; ``production_launch_shapes`` restores the shapes a GPU
  gets, for the tests that run them on tiny inputs.
"""
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

#: Launch shapes for the simulator: (module, name, value).
SIMULATOR_SHAPES = (
    ("atrous.config", "CUDA_CONV_BLOCKS", ((0, (4, 2)),)),
    ("atrous.config", "CUDA_GEMM_TILES", ((0, (8, 8, 4, 2, 2)),)),
    ("atrous.config", "CUDA_FLAT_THREADS", 64),
    ("crf.config", "CUDA_THREADS", 8),
    ("crf.config", "CUDA_MAX_BLOCKS", 2),
    ("crf.config", "CUDA_SPLAT_SEGMENT", 4),  # so that tiny lattices have vertices spanning segments
    ("nets.layers.config", "CUDA_GEMM_TILE", 4),
)
_PRODUCTION_SHAPES = []  # (module, name, value) as the package ships them


def _lock_simulated_shared_memory():
    """Make the simulator hand out each block's shared arrays under a lock.

    The simulator keys a block's shared arrays by the source line that asks for them and
    creates one on first request, with a look-up and an insertion that are not atomic: two
    threads of a block can both find none and get arrays of their own, and the kernel then
    computes garbage (seen about once in four runs of the convolution tests). This is the
    same look-up, under a lock.
    """
    import threading
    import traceback

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory has no look-up; alignment fails
            return original(self, shape, dtype, alignment)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]  # (file, line) of the kernel's request
        with lock:
            found = self._allocations.get(caller)
            if found is None:
                dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
                found = self._allocations[caller] = np.empty(shape, dtype)
        return found

    kernelapi.FakeCUDAShared.array = array


def pytest_configure(config):
    from numba import config as numba_config
    if not numba_config.ENABLE_CUDASIM:
        return
    _lock_simulated_shared_memory()
    sys.setswitchinterval(5e-5)
    for module, name, value in SIMULATOR_SHAPES:
        target = importlib.import_module(module)
        _PRODUCTION_SHAPES.append((target, name, getattr(target, name)))
        setattr(target, name, value)


@pytest.fixture(autouse=True)
def _empty_grid_cache():
    """Every test starts with ``crf.grid_cache`` empty: no test uses a lattice another one built."""
    cache = sys.modules.get("crf.grid_cache")
    if cache is not None:
        cache.clear()


@pytest.fixture
def production_launch_shapes(monkeypatch):
    """The launch shapes a GPU gets, also inside the simulator (for tiny inputs only)."""
    for target, name, value in _PRODUCTION_SHAPES:
        monkeypatch.setattr(target, name, value)


ORACLE_PACKAGES = {
    "cv2": "opencv-python-headless>=4.10,<5",
    "pydensecrf": "pydensecrf2",
    "scipy": "scipy",
    "jupytext": "jupytext",
    "distributed": "dask[distributed]",
}


@pytest.fixture
def winograd_transforms(monkeypatch):
    """Winograd F(2x2, 3x3) for every 3x3 stride-1 layer on the CPU (no channel, coverage or thread
    limit); returns a list that gets the weight shape of every filter transform made."""
    import atrous.config
    import atrous.cpu
    monkeypatch.setattr(atrous.config, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_COVERAGE", 100.0)
    monkeypatch.setattr(atrous.config, "WINOGRAD_MAX_THREADS", 1 << 16)
    monkeypatch.setattr(atrous.config, "WINOGRAD_TILES", (2,))
    made = []
    real = atrous.cpu.packed_filters
    monkeypatch.setattr(atrous.cpu, "packed_filters", lambda w, m, g: made.append(w.shape) or real(w, m, g))
    return made


def _import_or_handle(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = ORACLE_PACKAGES.get(name, name)
        message = f"reference oracle {name!r} is not installed (pip install '{package}'): {exc}"
        if os.environ.get("DEEPLAB_REQUIRE_ORACLES") == "1":
            pytest.fail(message + "; DEEPLAB_REQUIRE_ORACLES=1 makes this a failure")
        pytest.skip(message)


@pytest.fixture(scope="session")
def require_oracle():
    """Return ``f(name) -> module``; fails under DEEPLAB_REQUIRE_ORACLES=1, else skips."""
    return _import_or_handle


def _run_python(code, env=None, timeout=300):
    """Run ``code`` in a fresh interpreter; return the CompletedProcess.

    The child starts in an empty temporary folder so that ``python -c`` (which
    puts the working directory first on ``sys.path``) imports the installed
    package, never a source tree that happens to be the current directory.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                              text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="session")
def run_python():
    return _run_python


@pytest.fixture(scope="session")
def in_cudasim():
    from numba import config
    return bool(config.ENABLE_CUDASIM)


@pytest.fixture(scope="session")
def rng_seed():
    return 20150101


def pytest_collection_modifyitems(config, items):
    """Skip ``cuda`` tests when neither a GPU nor the simulator is present."""
    from numba import config as numba_config
    try:
        from numba import cuda
        available = numba_config.ENABLE_CUDASIM or cuda.is_available()
    except Exception:
        available = False
    if available:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU; the simulator child process "
                                   "(tests/test_cuda_simulator.py) runs these tests")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
