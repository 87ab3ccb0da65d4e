"""The CUDA convolution's kernels and tiles, shape by shape, against cuDNN in the same run.

    python bench/cuda_tiles.py [--repeat 5]

For DeepLab's heavy atrous layers (LargeFOV fc6 at 65x65 and 41x41, VGG conv5, a
ResNet ASPP branch) it times, in one run:

* the classic kernel (``config.CUDA_CONV_KERNEL = "classic"``, ``atrous.cuda.conv_kernel``)
  with 16x16 threads accumulating 2x2, 4x4 or 8x8 outputs;
* the GEMM kernel (``atrous.cuda.gemm_kernel``) under every tile of ``SWEEP``, as
  (BM, BN, BK, TM, TN) with the reduction split as ``atrous.cuda.gemm_shape`` would split
  it for that tile ("/sN" marks a forced split of N parts), and the tile and split the
  shipped rule (``config.CUDA_GEMM_TILES``) picks;
* Winograd's F(2x2, 3x3) on the dilated phases (``config.CUDA_WINOGRAD``), its 16 products
  by the GEMM kernel under the shipped rule;
* torch's cuDNN convolution in float32 (``allow_tf32 = False``) and with TF32 tensor cores.

Milliseconds per call, device arrays in and out (the weight re-layout included), median of
``--repeat`` synchronised calls after one warm-up call (which also compiles). Every result is
checked against the CPU backend (max |err| over all columns of a row), and each of our kernels
shows its registers per thread as the driver reports them. It prints one markdown
table per layer, then a summary: the best GEMM column, its time over cuDNN float32's, and the
picked one's. Needs a CUDA GPU (or, for a smoke run on a tiny layer with tiny tiles,
NUMBA_ENABLE_CUDASIM=1).
"""
import argparse
import math
import os
import sys
import time

import numpy as np

# Run as a script, this file's folder comes first on sys.path and bench/atrous.py would hide the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

CASES = [("LargeFOV fc6", 512, 1024, 65, 12), ("LargeFOV fc6", 512, 1024, 41, 12),
         ("VGG conv5", 512, 512, 65, 2), ("ASPP branch", 2048, 21, 65, 6)]
CLASSIC = [(16, 2), (16, 4), (16, 8)]
#: (tile, splits): splits None = as the rule would split for that tile. A tile too wide for a
#: layer's channels (BM > 2 * C_out) is skipped for it.
SWEEP = [((128, 128, 8, 8, 8), None), ((128, 128, 16, 8, 8), None), ((128, 64, 8, 8, 8), None),
         ((64, 128, 8, 8, 8), None), ((64, 64, 8, 4, 4), None), ((64, 64, 16, 8, 8), None),
         ((32, 128, 8, 4, 8), None), ((32, 64, 8, 4, 4), None),
         ((32, 128, 8, 4, 8), 1), ((32, 128, 16, 4, 8), 12), ((32, 64, 8, 4, 4), 16)]
SIM_CASES = [("tiny", 4, 11, 6, 2)]
SIM_CLASSIC = [(4, 2)]
SIM_SWEEP = [((4, 16, 2, 2, 4), None), ((4, 8, 2, 2, 2), 3)]


def _median_time(fn, repeat, sync):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _registers(kernel):
    """Registers per thread of a compiled kernel as the driver reports them (None in the simulator)."""
    if kernel is None or not hasattr(kernel, "get_regs_per_thread"):
        return None
    found = kernel.get_regs_per_thread()
    return max(found.values()) if isinstance(found, dict) else found


def _label(tile, splits):
    return "x".join(str(v) for v in tile[:3]) + f" {tile[3]}x{tile[4]}" + ("" if splits is None else f" /s{splits}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement; the median is kept")
    args = parser.parse_args(argv)
    from numba import config as numba_config
    from numba import cuda

    import atrous
    import atrous.config as aconfig
    import atrous.cuda as atrous_cuda
    cases, classic, sweep = CASES, CLASSIC, SWEEP
    if numba_config.ENABLE_CUDASIM:  # a smoke run: tiny layers, simulator-sized blocks
        cases, classic, sweep = SIM_CASES, SIM_CLASSIC, SIM_SWEEP
        aconfig.CUDA_GEMM_TILES = ((0, SIM_SWEEP[0][0]),)
    try:
        import torch
        torch = torch if torch.cuda.is_available() else None
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    shipped_kernel, shipped_rule = aconfig.CUDA_CONV_KERNEL, atrous_cuda.gemm_shape
    shipped_winograd = aconfig.CUDA_WINOGRAD, aconfig.CUDA_WINOGRAD_MIN_CHANNELS
    shipped_blocks = atrous_cuda.block_shape
    summary = []
    started = time.perf_counter()
    for name, c_in, c_out, size, rate in cases:
        x = rng.standard_normal((c_in, size, size)).astype(np.float32)
        weight = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        bias = rng.standard_normal(c_out).astype(np.float32)
        expected = atrous.conv2d(x, weight, bias, pad=rate, dilation=rate, backend="cpu")
        d_x, d_w, d_b = cuda.to_device(x), cuda.to_device(weight), cuda.to_device(bias)
        flop = 2.0 * c_out * c_in * 9 * size * size
        rows, worst, registers = [], 0.0, {}

        def measure(label, kernel=None):
            nonlocal worst
            call = lambda: atrous.conv2d(d_x, d_w, d_b, pad=rate, dilation=rate, backend="cuda")  # noqa: E731
            seconds = _median_time(call, args.repeat, cuda.synchronize)
            worst = max(worst, float(np.abs(call().copy_to_host() - expected).max()))
            rows.append((label, seconds))
            registers[label] = _registers(kernel)

        try:
            aconfig.CUDA_CONV_KERNEL = "classic"
            for shape in classic:
                atrous_cuda.block_shape = lambda channels, shape=shape: shape  # this shape for every layer
                measure(f"classic {shape[0]}x{shape[0]} threads, {shape[1]}x{shape[1]}",
                        atrous_cuda.conv_kernel(*shape))
            aconfig.CUDA_CONV_KERNEL = "gemm"
            for tile, splits in sweep:
                if tile[0] > 2 * c_out:
                    continue

                def rule(channels, pixels, depth, batches=1, tile=tile, splits=splits):
                    saved = aconfig.CUDA_GEMM_TILES
                    aconfig.CUDA_GEMM_TILES = ((0, tile),)
                    try:
                        auto = shipped_rule(channels, pixels, depth, batches)[1]
                    finally:
                        aconfig.CUDA_GEMM_TILES = saved
                    return tile, (auto if splits is None else splits)
                atrous_cuda.gemm_shape = rule
                used = rule(c_out, size * size, c_in * 9)[1]
                measure(f"gemm {_label(tile, splits)}" + (f" (s{used})" if splits is None else ""),
                        atrous_cuda.gemm_kernel(*tile))
            atrous_cuda.gemm_shape = shipped_rule
            picked_tile, picked_splits = shipped_rule(c_out, size * size, c_in * 9)
            measure(f"picked: gemm {_label(picked_tile, picked_splits)}", atrous_cuda.gemm_kernel(*picked_tile))
            aconfig.CUDA_WINOGRAD, aconfig.CUDA_WINOGRAD_MIN_CHANNELS = True, 0
            measure("winograd F(2x2, 3x3), its products by the picked gemm")
        finally:
            aconfig.CUDA_CONV_KERNEL, atrous_cuda.gemm_shape = shipped_kernel, shipped_rule
            aconfig.CUDA_WINOGRAD, aconfig.CUDA_WINOGRAD_MIN_CHANNELS = shipped_winograd
            atrous_cuda.block_shape = shipped_blocks
        cudnn = {}
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(a).cuda() for a in (x[None], weight, bias))
            for tf32 in (False, True):
                torch.backends.cudnn.allow_tf32 = tf32
                with torch.no_grad():
                    seconds = _median_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=rate, dilation=rate),
                                           args.repeat, torch.cuda.synchronize)
                cudnn[tf32] = seconds
                rows.append((f"cuDNN {'TF32' if tf32 else 'float32'}", seconds))
            torch.backends.cudnn.allow_tf32 = False
        title = f"{name} {c_in}->{c_out}, rate {rate}, {size}x{size}"
        print(f"\n### {title} (max |err| vs CPU over all our columns: {worst:.1e})\n")
        print("| kernel | registers | ms | TFLOP/s | / cuDNN float32 |\n|---|---|---|---|---|")
        for label, seconds in rows:
            ratio = f"{seconds / cudnn[False]:.2f}" if False in cudnn else "-"
            print(f"| {label} | {registers.get(label) or '-'} | {seconds * 1e3:.3f} | {flop / seconds / 1e12:.2f} "
                  f"| {ratio} |")
        ours = [(s, label) for label, s in rows if label.startswith("gemm")]
        best = min(ours)
        picked = rows[len(classic) + len(ours)][1]
        winograd = next(s for label, s in rows if label.startswith("winograd"))
        summary.append((title, best, picked, min(s for label, s in rows if label.startswith("classic")),
                        cudnn.get(False, math.nan), worst, winograd))
        sys.stdout.flush()
    print("\n### Summary\n")
    print("| layer | best classic ms | best gemm | ms | picked ms | winograd ms | cuDNN float32 ms | best / cuDNN"
          " | picked / cuDNN | winograd / cuDNN | max |err| |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for title, (best_s, best_label), picked, classic_s, cudnn_s, worst, winograd in summary:
        print(f"| {title} | {classic_s * 1e3:.3f} | {best_label} | {best_s * 1e3:.3f} | {picked * 1e3:.3f} | "
              f"{winograd * 1e3:.3f} | {cudnn_s * 1e3:.3f} | {best_s / cudnn_s:.2f} | {picked / cudnn_s:.2f} | "
              f"{winograd / cudnn_s:.2f} | {worst:.1e} |")
    print(f"\n(whole run {time.perf_counter() - started:.0f} s, compiles included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
