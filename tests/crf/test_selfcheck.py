"""``crf.selfcheck.cases``: every case within its tolerance on the NumPy and CPU backends."""
import numpy as np
import pytest

from crf import selfcheck


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_selfcheck_cases_pass(backend):
    results = list(selfcheck.cases(backend, quick=True, rng=np.random.default_rng(0)))
    assert len(results) >= 5
    for name, err, tol in results:
        assert np.isfinite(err) and err <= tol, (name, err, tol)
    names = " ".join(name for name, _, _ in results)
    assert "exact" in names and (backend == "numpy" or "vs numpy" in names)
    assert (backend == "cpu") == ("the last derived" in names)
