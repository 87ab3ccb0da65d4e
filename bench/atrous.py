"""Benchmark: DeepLab's atrous layers on this machine, against BLAS and torch.

    python bench/atrous.py [--threads 2] [--repeat 5] [--backend cpu|cuda] [--markdown]

Times ``atrous.conv2d`` on the layers where DeepLab spends its time -- v1's
LargeFOV fc6 (3x3, rate 12, 512 -> 1024) at 65x65 and 41x41, VGG conv5
(3x3, rate 2, 512 -> 512) at 65x65 and v2's four ResNet ASPP branches (3x3,
rates 6/12/18/24, 2048 -> 21) at 65x65 -- and prints for each the median
time, GFLOP/s (2 * C_out * C_in * kh * kw * H_out * W_out per layer, padding
taps included), the fraction of NumPy's float32 GEMM rate measured in the same
run, torch's ``conv2d`` in the same run with the same thread count (when torch
is importable; on the GPU cuDNN in float32, TF32 off) and the ratio ours / torch,
the same with the weights' derived forms kept between calls (``cache=atrous.WeightCache()``,
as a net calls it), and the peak memory of one call.

Peak memory is measured with ``tracemalloc``: it counts the NumPy arrays a
call allocates (output and scratch buffers), not BLAS's internal buffers;
torch's allocator is not traced, so no memory is given for torch.

Compile time (or, with a warm Numba cache, cache-load time) is the first call
of each CPU strategy on a tiny input and is reported separately.

Thread counts must be set before NumPy, Numba or torch start their pools, so
arguments are parsed before those imports.
"""
import argparse
import os
import platform
import shlex
import sys
import time
import tracemalloc

# Run as a script, this file's folder comes first on sys.path, and this file
# (bench/atrous.py) would shadow the ``atrous`` package it measures.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

# (name, C_in, C_out, size, rate)
CASES = [
    ("LargeFOV fc6", 512, 1024, 65, 12),
    ("LargeFOV fc6", 512, 1024, 41, 12),
    ("VGG conv5", 512, 512, 65, 2),
    ("ASPP branch", 2048, 21, 65, 6),
    ("ASPP branch", 2048, 21, 65, 12),
    ("ASPP branch", 2048, 21, 65, 18),
    ("ASPP branch", 2048, 21, 65, 24),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for Numba, BLAS and torch (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per layer; the median is kept")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for bench/RESULTS.md")
    return parser.parse_args(argv)


def set_threads(n):
    """Before numpy/numba/torch are imported: every pool gets ``n`` threads, and OpenBLAS's threads
    sleep after a product as in the ``deeplab`` command (``OPENBLAS_THREAD_TIMEOUT``, see
    ``atrous/__init__.py``; torch's oneDNN does not read it)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def median_time(fn, repeat, sync=None):
    """Median wall time of ``repeat`` calls after one warm-up call."""
    import numpy as np
    fn()
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gemm_rate(repeat):
    """NumPy float32 GEMM GFLOP/s on a 2048^3 product (the BLAS NumPy was built with)."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    return 2 * 2048 ** 3 / median_time(lambda: a @ a, repeat) / 1e9


def compile_times():
    """First-call time of each CPU strategy on a tiny layer: Numba compilation or cache load."""
    import numpy as np

    import atrous
    from atrous import cpu
    out = {}
    x = np.ones((1, 16, 6, 6), np.float32)
    for strategy, stride in (("shift", 1), ("im2col", 2)):
        kernel = cpu._shift_add if strategy == "shift" else cpu._im2col_rows
        start = time.perf_counter()
        atrous.conv2d(x, np.ones((2, 16, 3, 3), np.float32), pad=1, stride=stride, backend="cpu")
        hits = sum(kernel.stats.cache_hits.values())
        out[strategy] = (time.perf_counter() - start, "cache load" if hits else "compiled")
    return out


def peak_memory_mb(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def run(args):
    import numpy as np

    import atrous
    try:
        import torch
        torch.set_num_threads(args.threads)
        torch_note = torch.__version__
    except ImportError:
        torch, torch_note = None, "not installed"

    rng = np.random.default_rng(0)
    gemm = gemm_rate(args.repeat) if args.backend == "cpu" else None
    compiled = compile_times() if args.backend == "cpu" else {}
    sync = None
    torch_device = "cpu"
    if args.backend == "cuda":
        from numba import cuda
        sync = cuda.synchronize
        if torch is not None and torch.cuda.is_available():
            torch_device = "cuda"
            # float32 against float32: cuDNN would otherwise use TF32 tensor cores (10-bit mantissas)
            torch.backends.cudnn.allow_tf32 = False
            torch_note = f"{torch_note}, cuDNN in float32 (TF32 off)"
        elif torch is not None:
            torch, torch_note = None, f"{torch_note} without CUDA: not compared"  # no peer for a GPU kernel
    rows = []
    for name, c_in, c_out, size, rate in CASES:
        x = rng.standard_normal((c_in, size, size)).astype(np.float32)
        weight = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        bias = rng.standard_normal(c_out).astype(np.float32)
        flops = 2 * c_out * c_in * 9 * size * size  # pad = rate keeps the size
        if args.backend == "cuda":
            from numba import cuda
            d_x, d_w, d_b = cuda.to_device(x), cuda.to_device(weight), cuda.to_device(bias)
            call = lambda: atrous.conv2d(d_x, d_w, d_b, pad=rate, dilation=rate, backend="cuda")  # noqa: E731
            peak = None
        else:
            call = lambda: atrous.conv2d(x, weight, bias, pad=rate, dilation=rate, backend="cpu")  # noqa: E731
            peak = peak_memory_mb(call)
        ours = median_time(call, args.repeat, sync)
        cached = None
        if args.backend == "cpu":  # as in a net: what is derived from the weights kept between calls
            cache = atrous.WeightCache()
            cached = median_time(lambda: atrous.conv2d(x, weight, bias, pad=rate, dilation=rate, backend="cpu",
                                                       cache=cache), args.repeat, sync)
        theirs = None
        if torch is not None:
            tx = torch.from_numpy(x)[None].to(torch_device)
            tw, tb = torch.from_numpy(weight).to(torch_device), torch.from_numpy(bias).to(torch_device)
            torch_sync = torch.cuda.synchronize if torch_device == "cuda" else None
            with torch.no_grad():
                theirs = median_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=rate, dilation=rate),
                                     args.repeat, torch_sync)
        rows.append(dict(layer=f"{name} {c_in}->{c_out}, rate {rate}", size=f"{size}x{size}", ms=ours * 1e3,
                         gflops=flops / ours / 1e9, gemm=None if gemm is None else flops / ours / 1e9 / gemm,
                         torch_ms=None if theirs is None else theirs * 1e3,
                         ratio=None if theirs is None else ours / theirs, peak=peak,
                         cached_ms=None if cached is None else cached * 1e3,
                         cached_ratio=None if theirs is None or cached is None else cached / theirs))
    return dict(gemm=gemm, compiled=compiled, rows=rows, torch=torch_note)


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def report(args, result, markdown):
    import numba
    import numpy as np
    command = "python bench/atrous.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = ["layer", "size", "median ms", "GFLOP/s", "of GEMM", "torch ms", "ours/torch", "cached ms",
              "cached/torch", "peak MB"]
    lines = []
    for r in result["rows"]:
        lines.append([r["layer"], r["size"], _fmt(r["ms"], ".1f"), _fmt(r["gflops"], ".0f"),
                      _fmt(None if r["gemm"] is None else 100 * r["gemm"], ".0f") + ("%" if r["gemm"] else ""),
                      _fmt(r["torch_ms"], ".1f"), _fmt(r["ratio"], ".2f"), _fmt(r["cached_ms"], ".1f"),
                      _fmt(r["cached_ratio"], ".2f"), _fmt(r["peak"], ".1f")])
    notes = [f"command: `{command}`",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; backend "
             f"{args.backend}; {args.threads} threads (Numba {numba.__version__}, threading layer "
             f"{numba.threading_layer() if args.backend == 'cpu' else 'n/a'}; NumPy {np.__version__}; "
             f"torch {result['torch']})"]
    if result["gemm"] is not None:
        notes.append(f"NumPy float32 GEMM (2048^3) in this run: {result['gemm']:.0f} GFLOP/s")
    for strategy, (seconds, how) in result["compiled"].items():
        notes.append(f"first call, {strategy} kernels ({how}): {seconds:.2f} s")
    if args.backend == "cpu":
        notes.append("cached: with an atrous.WeightCache, as a net calls it (Winograd's transformed filters "
                     "made once, not per call)")
        notes.append("peak MB: tracemalloc peak of one call (NumPy arrays: output and scratch; "
                     "not BLAS internals)")
    else:
        from nets.app.environment import cuda_status
        notes.append(f"GPU: {cuda_status()[1]}; device arrays in and out, synchronized after each call")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
        print()
        for note in notes:
            print(f"- {note}")
    else:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for line in lines:
            print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
        for note in notes:
            print(note)
    from nets.app.environment import benchmark_line
    print(benchmark_line())


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    result = run(args)
    report(args, result, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
