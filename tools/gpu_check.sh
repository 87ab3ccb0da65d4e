#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and the runtime dependencies plus numba-cuda
# and pytest installed (no network or install step needed), from the repository root:
#
#     PYTHONPATH=. bash tools/gpu_check.sh OUT_DIR
#
# It prints the environment, checks that backend="auto" finds the CUDA driver where Numba does,
# verifies every kernel family on the GPU against the
# NumPy reference, compares CPU and CUDA at full size (the dense CRF on the
# benchmark photograph and its lattices, two whole nets, image -> labels), runs the
# CUDA tests on the real device, times the targets (bench/gpu.py, with the
# CRF's stage profile), profiles ResNet-101 layer by layer (bench/profile.py) and times
# the convolution's tile shapes against cuDNN (bench/cuda_tiles.py). Everything is also
# written to OUT_DIR. Each step has its own time limit; together they stop it within
# about 8 minutes (520 s of limits), the important steps first.
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the interpreter to use; PYTHON=... overrides
status=0
# numba-cuda 0.30 with NumPy 2.5 cannot compile a kernel (np.row_stack is gone): restore the alias.
if ! "$PY" -c "import numpy; numpy.row_stack" 2>/dev/null; then
    echo "NumPy without np.row_stack: tools/numpy_shim restores it for numba-cuda" | tee "$out/shim.txt"
    export PYTHONPATH="$PWD/tools/numpy_shim:$PYTHONPATH"
fi
step() {  # step NAME SECONDS COMMAND...: run, tee to OUT_DIR/NAME.txt, remember a failure
    local name=$1 limit=$2; shift 2
    echo "== $name: $*" | tee "$out/$name.txt"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$out/$name.txt"
    [ "$rc" -eq 0 ] || status=1
}
step info 30 "$PY" -m nets info
step driver 20 "$PY" -m pytest -q -p no:cacheprovider tests/test_package.py -k driver
step check 80 "$PY" -m nets check --backend cuda
step pytest_cuda 110 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests
step compare 80 "$PY" tools/gpu_compare.py
step bench_gpu 80 "$PY" bench/gpu.py --repeat 5
step profile_resnet 45 "$PY" bench/profile.py --model deeplab-v2-resnet101 --side 321 --backend cuda --top 25
step bench_cuda_tiles 75 "$PY" bench/cuda_tiles.py --repeat 5
echo "gpu_check: overall exit $status" | tee "$out/summary.txt"
exit $status
