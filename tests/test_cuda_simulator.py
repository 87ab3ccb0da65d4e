"""Run every ``cuda``-marked test once, in one child process, under the CUDA simulator.

``NUMBA_ENABLE_CUDASIM=1`` is never set for the whole run: it would turn every
``numba.cuda`` import in the session into the simulator. Instead this ordinary
test starts one child pytest with the variable set, selects ``-m cuda`` and
checks that the CUDA tests really ran (a run that skipped them all fails here).
On a machine with a real GPU the same tests also run directly in the main
session (see ``tests/conftest.py``).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_cuda_kernels_in_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-P", "-m", "pytest", str(TESTS), "-m", "cuda", "-q",
           "-p", "no:cacheprovider", "-c", str(ROOT / "setup.cfg"), "--rootdir", str(ROOT)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulator run failed (exit {proc.returncode}):\n{tail}"
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) > 0, f"no CUDA test ran in the simulator:\n{tail}"
    assert " skipped" not in proc.stdout.splitlines()[-1], f"CUDA tests were skipped:\n{tail}"
