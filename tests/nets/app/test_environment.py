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


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512vl

processor\t: 1
model name\t: another line that is not read
"""


def test_the_processor_line_names_the_model_and_its_widest_vectors():
    assert environment.processor(CPUINFO) == "Intel(R) Xeon(R) Processor, family 6 model 207, AVX-512"
    avx2 = CPUINFO.replace(" avx512f avx512bw avx512vl", "")
    assert environment.processor(avx2).endswith("model 207, AVX2")
    assert environment.processor("") != ""  # no /proc/cpuinfo: platform's guess, never empty
    assert environment.benchmark_line().startswith("CPU: ")
    assert dict(environment.describe())["processor"] == environment.processor()


MEMINFO = """MemTotal:       24731448 kB
MemFree:        19021724 kB
MemAvailable:   24166508 kB
Buffers:          212340 kB
"""


def test_available_memory_reads_memavailable():
    assert environment.available_memory(MEMINFO) == 24166508 * 1024
    assert environment.available_memory(MEMINFO.replace("MemAvailable", "MemSomething")) is None
    assert environment.available_memory("") is None
    assert environment.available_memory("MemAvailable: lots kB\n") is None
    rows = dict(environment.describe())
    assert rows["memory available"] == "unknown" or rows["memory available"].endswith(" GiB")


def test_info_reports_what_import_crf_did_with_the_heap():
    from crf import heap
    rows = dict(environment.describe())
    assert rows["heap"] == heap.status
    assert heap.status.startswith(("mmap threshold", "left to the environment", "not glibc", "mallopt failed"))


def test_info_reports_the_crf_lattice_cache_and_whether_it_is_off(monkeypatch):
    from crf import config
    assert dict(environment.describe())["crf lattice cache"].startswith(
        f"up to {config.GRID_CACHE_BYTES / 2**20:g} MiB of smoothness lattices")
    monkeypatch.setattr(config, "GRID_CACHE_BYTES", 0)
    assert dict(environment.describe())["crf lattice cache"].startswith("off (")


def test_the_convolutions_product_kernel_is_named(monkeypatch):
    from atrous import config, gemm
    assert environment.products_status().startswith("atrous.gemm, panels of "
                                                    f"{gemm.PANEL_ROWS} x {gemm.PANEL_COLS}")
    monkeypatch.setattr(config, "PANEL_PRODUCTS", False)
    assert environment.products_status().startswith("BLAS")
    assert "convolution products: BLAS" in environment.benchmark_line()
