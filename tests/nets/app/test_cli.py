"""The ``deeplab`` command, run as a user runs it: in a subprocess."""
import os
import shutil
import subprocess
import sys

import pytest


def deeplab(*args, env=None, cwd=None, timeout=600):
    """Run ``python -m nets ARGS`` in a fresh process; return the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "nets", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def workdir(tmp_path):
    """An empty folder to run in, so that ``-m nets`` imports the installed package."""
    return tmp_path


def test_console_script_is_installed():
    script = shutil.which("deeplab", path=os.path.dirname(sys.executable))
    if script is None and not os.environ.get("CI"):
        pytest.skip("package not installed with its console script in this interpreter's bin/")
    assert script is not None, "the deeplab console script is missing next to the interpreter"
    # The script's entry point must import: run it as a user would.
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "segment" in proc.stdout, proc.stderr


def test_info_reports_threading_layer_threads_and_cuda(workdir):
    proc = deeplab("info", "--threads", "1", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for key in ("numpy", "numba", "numba threading layer", "numba threads", "cuda", "backends"):
        assert f"\n{key} " in "\n" + out, f"{key!r} missing from deeplab info:\n{out}"
    layer = next(line for line in out.splitlines() if line.startswith("numba threading layer"))
    assert layer.split()[-1] in ("tbb", "omp", "workqueue"), layer
    threads = next(line for line in out.splitlines() if line.startswith("numba threads"))
    assert threads.split()[2] == "1", threads


def test_info_under_the_simulator_says_so(workdir):
    proc = deeplab("info", env={"NUMBA_ENABLE_CUDASIM": "1"}, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "cuda" in proc.stdout and "simulator" in proc.stdout


def test_check_quick_passes_on_cpu(workdir):
    proc = deeplab("check", "--quick", "--threads", "2", cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert " 0 failed" in last and "cpu" in last, last
    assert "atrous: conv" in proc.stdout


def test_check_cuda_without_gpu_is_a_clear_error(workdir):
    from atrous.backend import cuda_usable
    if cuda_usable():
        pytest.skip("a real GPU is present")
    proc = deeplab("check", "--backend", "cuda", "--quick", cwd=workdir)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stdout + proc.stderr


def test_bad_arguments_exit_with_usage(workdir):
    proc = deeplab("check", "--threads", "0", cwd=workdir)
    assert proc.returncode == 2
    assert "positive integer" in proc.stderr


@pytest.mark.parametrize("command", ["crf", "crf-search"])
def test_the_commands_that_run_the_crf_refuse_preset_none(workdir, command):
    args = (["img.png", "--probs", "p.npy", "-o", "out.png"] if command == "crf"
            else ["--images", ".", "--probs", ".", "--labels", "."])
    proc = deeplab(command, *args, "--preset", "none", cwd=workdir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--preset none: this command runs the CRF; name a preset" in proc.stderr
