"""``deeplab info``'s report: BLAS, its kernel and threads, and a warning when the environment forces
OpenBLAS onto kernels older than the processor's."""
from nets.app import environment

AVX512 = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}


def test_a_forced_older_kernel_is_named_with_the_fix():
    message = environment.blas_warning({"OPENBLAS_CORETYPE": "Haswell"}, AVX512)
    assert "OPENBLAS_CORETYPE=Haswell" in message and "SkylakeX" in message and "Unset OPENBLAS_CORETYPE" in message
    assert "Haswell" in environment.blas_warning({"OPENBLAS_CORETYPE": "sandybridge"}, {"avx", "avx2"})


def test_no_warning_when_nothing_is_lost():
    assert environment.blas_warning({}, AVX512) is None
    assert environment.blas_warning({"OPENBLAS_CORETYPE": "SkylakeX"}, AVX512) is None
    assert environment.blas_warning({"OPENBLAS_CORETYPE": "Haswell"}, {"avx", "avx2"}) is None  # the best it has
    assert environment.blas_warning({"OPENBLAS_CORETYPE": "Haswell"}, set()) is None  # flags unknown
    assert environment.blas_warning({"OPENBLAS_CORETYPE": "ARMV8"}, AVX512) is None  # not an x86 kernel name


def test_info_reports_blas_the_thread_budget_and_the_warning(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.setattr(environment, "_cpu_flags", lambda: AVX512)
    rows = dict(environment.describe())
    assert rows["blas"] != "none found" and "threads" in rows["blas"]
    assert "--workers N gives each worker" in rows["workers"]
    assert "OPENBLAS_CORETYPE=Prescott" in rows["warning"]
    assert "warning: OPENBLAS_CORETYPE=Prescott" in environment.benchmark_line()
