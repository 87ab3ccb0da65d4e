"""``deeplab check``: every kernel family against its NumPy reference, on this machine.

Each package that owns kernels has a ``selfcheck`` module with
``cases(backend, quick, rng)``, a generator of ``(name, max_abs_error, tolerance)``.
This module runs them all and prints one line per case.
"""
import time

import numpy as np


def _families():
    import atrous.selfcheck
    import crf.selfcheck
    import nets.engine.selfcheck
    import nets.layers.selfcheck
    return [("atrous", atrous.selfcheck.cases),
            ("layers", nets.layers.selfcheck.cases),
            ("crf", crf.selfcheck.cases),
            ("net", nets.engine.selfcheck.cases)]


def run_checks(backend="cpu", quick=False, seed=0, out=None):
    """Run every family's cases; print a table; return 0 if all pass, else 1."""
    if backend == "cuda":
        from atrous.backend import cuda_problem, cuda_usable
        from numba import config
        if not (cuda_usable() or config.ENABLE_CUDASIM):
            print(f"deeplab check: --backend cuda needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1): {cuda_problem()}",
                  file=out)
            return 2
    rng = np.random.default_rng(seed)
    failures = 0
    total = 0
    start = time.perf_counter()
    print(f"{'case':<68} {'max |err|':>11} {'tolerance':>10}  result", file=out)
    for family, cases in _families():
        for name, err, tol in cases(backend, quick, rng):
            ok = bool(err <= tol)
            failures += not ok
            total += 1
            print(f"{family + ': ' + name:<68} {err:>11.3e} {tol:>10.1e}  {'ok' if ok else 'FAIL'}",
                  file=out)
    elapsed = time.perf_counter() - start
    print(f"{total - failures} passed, {failures} failed ({backend}, {elapsed:.1f} s)", file=out)
    return 1 if failures else 0
