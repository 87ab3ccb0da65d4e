"""Shared test infrastructure.

* ``require_oracle(name)``: import a reference implementation (OpenCV, pydensecrf,
  ...). Under ``DEEPLAB_REQUIRE_ORACLES=1`` (CI) a missing oracle *fails* the
  test; otherwise it skips, so a developer without OpenCV can still run the rest.
* ``optional_oracle(name)``: an oracle that is never required (torch): a skip.
* ``run_python(code, env=...)``: run a snippet in a fresh interpreter, used by the
  CUDA-simulator and kernel-cache tests, which need a process of their own.
* ``in_cudasim``: true inside the CUDA-simulator child process. Tests marked
  ``cuda`` use it to keep to a dozen tiny cases there and run the full matrix
  on a real GPU.
"""
import importlib
import os
import subprocess
import sys
import tempfile

import pytest

ORACLE_PACKAGES = {
    "cv2": "opencv-python-headless>=4.10,<5",
    "pydensecrf": "pydensecrf2",
    "scipy": "scipy",
    "torch": "torch (optional)",
}


def _import_or_handle(name, required):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = ORACLE_PACKAGES.get(name, name)
        message = f"reference oracle {name!r} is not installed (pip install '{package}'): {exc}"
        if required and os.environ.get("DEEPLAB_REQUIRE_ORACLES") == "1":
            pytest.fail(message + "; DEEPLAB_REQUIRE_ORACLES=1 makes this a failure")
        pytest.skip(message)


@pytest.fixture(scope="session")
def require_oracle():
    """Return ``f(name) -> module``; fails under DEEPLAB_REQUIRE_ORACLES=1, else skips."""
    return lambda name: _import_or_handle(name, required=True)


@pytest.fixture(scope="session")
def optional_oracle():
    """Return ``f(name) -> module`` that skips when the module is missing."""
    return lambda name: _import_or_handle(name, required=False)


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
