"""``deeplab check``'s atrous cases: they run, and they would catch a wrong kernel."""
import numpy as np

import atrous.selfcheck


def test_quick_and_full_cases_pass_on_cpu():
    quick = list(atrous.selfcheck.cases("cpu", True, np.random.default_rng(0)))
    full = list(atrous.selfcheck.cases("cpu", False, np.random.default_rng(1)))
    assert len(quick) == 4 and len(full) == 20
    for name, err, tol in quick + full:
        assert 0 <= err <= tol, (name, err, tol)


def test_a_wrong_kernel_fails_the_check(monkeypatch):
    """A CPU result off by one unit in one output must exceed the tolerance."""
    import atrous.cpu
    real = atrous.cpu.conv2d_cpu

    def off_by_one(*args):
        y = real(*args)
        y.flat[0] += 1.0
        return y

    monkeypatch.setattr(atrous.cpu, "conv2d_cpu", off_by_one)
    results = list(atrous.selfcheck.cases("cpu", True, np.random.default_rng(0)))
    assert all(err > tol for _, err, tol in results)
