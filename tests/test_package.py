"""The installed package: where it comes from, what it imports, how it picks a backend."""
import os
import sysconfig

import numpy as np
import pytest

import atrous
import crf
import nets
from atrous.backend import resolve_backend


def test_tests_run_against_the_installed_package():
    """CI must test what users install, not the source tree beside the tests."""
    if not os.environ.get("CI"):
        pytest.skip("only asserted in CI (CI is set), where the package is installed non-editable")
    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    for module in (atrous, crf, nets):
        assert os.path.realpath(module.__file__).startswith(site), (
            f"{module.__name__} was imported from {module.__file__}, not from {site}")


def test_import_does_not_load_cuda(run_python):
    """The package imports with no GPU and no CUDA driver: numba.cuda stays unloaded."""
    code = ("import sys, atrous, crf, nets, nets.app.cli\n"
            "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))]\n"
            "assert not loaded, loaded\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


def test_segmenting_does_not_import_scipy_ndimage(run_python):
    """The models and the command line read the demo's class names without loading scipy.ndimage
    (0.2-0.3 s a process), which only the procedural data set's generator needs."""
    code = ("import sys, nets.app.cli, nets.deeplab.model\n"
            "from nets.deeplab import shapes_dataset\n"
            "assert 'scipy.ndimage' not in sys.modules\n"
            "shapes_dataset.sample(0, 'train')\n"
            "assert 'scipy.ndimage' in sys.modules  # the generator itself does use it\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


def test_resolve_backend_rules():
    x = np.zeros(3, np.float32)
    assert resolve_backend("numpy", x) == "numpy"
    assert resolve_backend("cpu", x) == "cpu"
    assert resolve_backend("auto", x) in ("cpu", "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("gpu", x)


def test_auto_is_cpu_under_the_simulator(run_python):
    """In the simulator ``cuda.is_available()`` is true, yet ``auto`` must stay on the CPU."""
    code = ("from numba import cuda\n"
            "from atrous.backend import resolve_backend\n"
            "assert cuda.is_available()\n"
            "import numpy as np\n"
            "assert resolve_backend('auto', np.zeros(1)) == 'cpu'\n")
    proc = run_python(code, env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("package", ["atrous", "crf"])
def test_auto_falls_back_to_the_cpu_when_no_kernel_compiles(run_python, package):
    """A GPU that answers but a CUDA target that cannot compile (numba-cuda 0.30 with NumPy
    2.5) must not break ``auto``: it picks the CPU, warns once, and says why."""
    code = (
        "import warnings\n"
        "import numpy as np\n"
        "from numba import cuda\n"
        f"from {package} import backend\n"
        "cuda.is_available = lambda: True\n"
        "backend._driver_library_found = lambda: True\n"
        "def broken(*args, **kwargs):\n"
        "    raise AttributeError(\"module 'numpy' has no attribute 'row_stack'\")\n"
        "cuda.jit = broken\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    assert backend.resolve_backend('auto', np.zeros(1)) == 'cpu'\n"
        "    assert backend.resolve_backend('auto', np.zeros(1)) == 'cpu'\n"
        "assert len(caught) == 1, [str(w.message) for w in caught]\n"
        "assert 'row_stack' in str(caught[0].message), caught[0].message\n"
        "assert 'row_stack' in backend.cuda_problem()\n"
        "assert backend.resolve_backend('cuda', np.zeros(1)) == 'cuda'  # asked for by name: no fallback\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("package", ["atrous", "crf"])
def test_the_driver_check_agrees_with_numba(run_python, package):
    """The quick look for the CUDA driver library finds it exactly where Numba's CUDA target does."""
    code = ("from numba.cuda.cudadrv import driver\n"
            f"from {package} import backend\n"
            "try:\n"
            "    driver.find_driver()\n"
            "    found = True\n"
            "except Exception:\n"
            "    found = False\n"
            "assert backend._driver_library_found() == found, found\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("package", ["atrous", "crf"])
def test_auto_without_a_driver_does_not_import_numba_cuda(run_python, package):
    """No driver library: ``auto`` is the CPU, with the reason, and numba.cuda stays unloaded."""
    code = ("import sys\n"
            "import numpy as np\n"
            f"from {package} import backend\n"
            "backend._driver_library_found = lambda: False\n"
            "assert backend.resolve_backend('auto', np.zeros(1)) == 'cpu'\n"
            "assert backend.cuda_problem() == 'no CUDA driver or GPU found', backend.cuda_problem()\n"
            "loaded = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))]\n"
            "assert not loaded, loaded\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.cuda
@pytest.mark.parametrize("package", ["atrous", "crf"])
def test_the_probe_kernel_runs_where_cuda_works(package):
    """The one-line kernel behind ``cuda_usable`` compiles and runs (the simulator or a GPU)."""
    import importlib
    backend = importlib.import_module(f"{package}.backend")
    backend._probe()
    assert backend._probe_result == (True, "")


@pytest.mark.parametrize("package", ["nets", "atrous", "crf"])
def test_blas_threads_sleep_after_a_product_unless_the_user_says(run_python, package):
    """The packages ask OpenBLAS's threads to sleep at once after a product (OPENBLAS_THREAD_TIMEOUT=4)
    and OpenMP's to wait passively; a value the user set is kept. ``import nets`` loads no NumPy, so
    the deeplab command, which imports it first, sets both before OpenBLAS reads them."""
    code = ("import os, sys\n"
            "for name in ('OPENBLAS_THREAD_TIMEOUT', 'OMP_WAIT_POLICY'):\n"
            "    os.environ.pop(name, None)\n"
            f"import {package}\n"
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'], os.environ['OMP_WAIT_POLICY'], 'numpy' in sys.modules)\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    timeout, policy, numpy_loaded = proc.stdout.split()
    assert (timeout, policy) == ("4", "PASSIVE")
    if package == "nets":
        assert numpy_loaded == "False"
    kept = run_python(f"import os\nos.environ['OPENBLAS_THREAD_TIMEOUT'] = '12'\nimport {package}\n"
                      "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])\n")
    assert kept.stdout.strip() == "12", kept.stderr
