"""A second process loads the CPU kernels from Numba's on-disk cache instead of compiling them."""
import json

# Runs every CPU strategy (shift, band, im2col) and the probe, then reports per kernel
# the signatures compiled in this process and the cache hits and misses.
CODE = """
import json
import numpy as np
import atrous
from atrous import cpu
x = np.ones((1, 16, 9, 9), np.float32)
atrous.conv2d(x, np.ones((4, 16, 3, 3), np.float32), pad=2, dilation=2, backend="cpu")
atrous.conv2d(x, np.ones((4, 16, 3, 3), np.float32), stride=2, backend="cpu")
atrous.conv2d(np.ones((1, 24, 9, 9), np.float32), np.ones((32, 24, 3, 3), np.float32), pad=1, backend="cpu")
cpu.parallel_probe(np.ones(8, np.float32))
report = {}
for name in ("_shift_add", "_band_rows", "_band_weights", "_im2col_rows", "parallel_probe"):
    kernel = getattr(cpu, name)
    report[name] = dict(signatures=len(kernel.signatures),
                        hits=sum(kernel.stats.cache_hits.values()),
                        misses=sum(kernel.stats.cache_misses.values()))
print(json.dumps(report))
"""


def test_second_process_loads_kernels_from_cache(run_python, tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    runs = []
    for _ in range(2):
        proc = run_python(CODE, env=env)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    for name, stats in second.items():
        assert first[name]["misses"] == 1, (name, first)  # compiled (and saved) once
        assert stats["signatures"] == 1, (name, stats)     # one type signature per kernel
        assert stats["hits"] == 1 and stats["misses"] == 0, (name, stats)
