#!/usr/bin/env bash
# The GPU check: run on a lent GPU machine (no network, no pip) from the repository root:
#
#     PYTHONPATH=. bash tools/gpu_check.sh OUT_DIR
#
# It prints the environment, verifies every kernel family on the GPU against the
# NumPy reference, runs the CUDA tests on the real device and times the GPU
# benchmarks. Everything is also written to OUT_DIR. Budget: under 5 minutes.
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME COMMAND...: run, tee to OUT_DIR/NAME.txt, remember a failure
    local name=$1; shift
    echo "== $name: $*" | tee "$out/$name.txt"
    local t0=$SECONDS
    timeout 240 "$@" 2>&1 | tee -a "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$out/$name.txt"
    [ "$rc" -eq 0 ] || status=1
}
step info python -m nets.cli info
step check python -m nets.cli check --backend cuda
step pytest_cuda python -m pytest -m cuda -q -p no:cacheprovider tests
step bench_atrous python bench/atrous.py --backend cuda --repeat 5
step bench_crf python bench/crf.py --backend cuda --repeat 2
echo "gpu_check: overall exit $status" | tee "$out/summary.txt"
exit $status
