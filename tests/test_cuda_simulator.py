"""Run every ``cuda``-marked test once, in one child process, under the CUDA simulator;
then compile every kernel that child launched for a real GPU.

``NUMBA_ENABLE_CUDASIM=1`` is never set for the whole run: it would turn every
``numba.cuda`` import in the session into the simulator. Instead one child pytest runs
with the variable set and ``-m cuda``; these tests check that the CUDA tests really ran
(a run that skipped them all fails here). On a machine with a real GPU the same tests
also run directly in the main session (see ``tests/conftest.py``).

The simulator runs a kernel's Python source, so a kernel that NVVM cannot compile would
pass there. The child therefore also records each launch (``tools/ptx_check.py`` as its
plugin), and the second test compiles every launched (kernel, argument types) with NVVM
and ptxas for sm_90 (H100, H200), no GPU needed: each must compile, none may spill
registers, none may do float64 arithmetic, except the few the tool lists with reasons.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PTX_CHECK = ROOT / "tools" / "ptx_check.py"


@pytest.fixture(scope="module")
def simulator_run(tmp_path_factory):
    """(the child's CompletedProcess, the file of its recorded launches)."""
    tmp = tmp_path_factory.mktemp("cudasim")
    launches = tmp / "launches.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONUNBUFFERED="1", DEEPLAB_PTX_RECORD=str(launches))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PTX_CHECK.parent), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-P", "-m", "pytest", str(TESTS), "-m", "cuda", "-q", "-p", "ptx_check",
           "-p", "no:cacheprovider", "-c", str(ROOT / "setup.cfg"), "--rootdir", str(ROOT)]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    return proc, launches


def test_cuda_kernels_in_simulator(simulator_run):
    proc, _ = simulator_run
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulator run failed (exit {proc.returncode}):\n{tail}"
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) > 0, f"no CUDA test ran in the simulator:\n{tail}"
    assert " skipped" not in proc.stdout.splitlines()[-1], f"CUDA tests were skipped:\n{tail}"


def test_every_launched_kernel_compiles_for_a_gpu(simulator_run, tmp_path):
    proc, launches = simulator_run
    assert proc.returncode == 0 and launches.is_file(), "the simulator run failed or recorded nothing"
    records = json.loads(launches.read_text())
    rows_file = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    check = subprocess.run([sys.executable, str(PTX_CHECK), "--records", str(launches), "--json", str(rows_file)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = (check.stdout + check.stderr)[-6000:]
    if check.returncode == 2:  # NVVM, NVRTC or ptxas missing: an oracle like the others
        message = f"NVIDIA's compilers are not installed (pip install '.[test]'):\n{output}"
        if os.environ.get("DEEPLAB_REQUIRE_ORACLES") == "1":
            pytest.fail(message + "\nDEEPLAB_REQUIRE_ORACLES=1 makes this a failure")
        pytest.skip(message)
    assert check.returncode == 0, f"a kernel failed to compile, spilled or does float64 arithmetic:\n{output}"
    rows = json.loads(rows_file.read_text())
    # every recorded launch has its row: compiled with real numbers, or one of the probes the tool
    # lists as not rebuildable (its exit status is 1 for any other skip or failure)
    key = lambda r: json.dumps([r["origin"], r["args"]], sort_keys=True)  # noqa: E731
    assert {key(rec) for rec in records} <= {key(r) for r in rows}
    assert all(0 < r["registers"] <= 255 for r in rows if "skipped" not in r)
    assert all(r["origin"]["name"] == "_write_one" for r in rows if "skipped" in r)
    # the GEMM convolution's shipped tiles too, which the simulator's small shapes do not reach
    import atrous.config
    gemm = {tuple(r["origin"]["factory_args"]) for r in rows if r["origin"].get("factory") == "gemm_kernel"}
    assert {tuple(tile) for _, tile in atrous.config.CUDA_GEMM_TILES} <= gemm
    # ... each reading its operands from shared memory in 16-byte loads (aligned tiles, runs of four)
    shipped = {tuple(tile) for _, tile in atrous.config.CUDA_GEMM_TILES}
    for r in rows:
        if r["origin"].get("factory") == "gemm_kernel" and tuple(r["origin"]["factory_args"]) in shipped:
            assert r["shared_v4_loads"] >= 2, r["kernel"]
    assert len(records) > 50  # the simulator child launches some seventy distinct kernels
