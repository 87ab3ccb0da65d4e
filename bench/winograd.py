"""Winograd against the strategy it replaced, layer by layer, in one run; its products against BLAS.

For DeepLab's 3x3 layers of 64 channels and more, the convolution through Winograd and with
Winograd switched off (``atrous.config.WINOGRAD_MIN_CHANNELS`` out of reach), so that the rule's
next choice ("band" or "im2col") runs; the rule's own choice at ``--threads`` is printed beside
(``atrous.cpu.choose_strategy``). Calls alternate; median of ``--repeat``.

Then, for the same layers, the (m+2)^2 products of Winograd's tiles (the tile size the rule
takes, the tiles of one block as ``atrous.winograd.conv_winograd`` cuts them): NumPy's BLAS on
the stacked matrices (``np.matmul``) against ``atrous.gemm.batched_products_cpu`` on packed
panels, alternated, with GFLOP/s of the unpadded products.

Usage::

    python bench/winograd.py [--threads 2] [--repeat 5]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

# A script's folder comes first on sys.path; bench/atrous.py would then hide the atrous package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

LAYERS = (  # name, (C_in, C_out, side, rate)
    ("LargeFOV fc6 512->1024, rate 12", (512, 1024, 65, 12)),
    ("VGG conv5 512->512, rate 2", (512, 512, 65, 2)),
    ("VGG conv4 512->512, rate 1", (512, 512, 65, 1)),
    ("VGG conv3 256->256, rate 1", (256, 256, 129, 1)),
    ("VGG conv2 128->128, rate 1", (128, 128, 257, 1)),
    ("ResNet res5 3x3 512->512, rate 4", (512, 512, 41, 4)),
    ("ResNet res4 3x3 256->256, rate 2", (256, 256, 41, 2)),
    ("VGG conv2_1 64->128, rate 1", (64, 128, 257, 1)),
    ("VGG conv1_2 64->64, rate 1", (64, 64, 513, 1)),
    ("ResNet res2 3x3 64->64, rate 1", (64, 64, 81, 1)),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    import atrous  # before NumPy: its thread settings apply when OpenBLAS loads (atrous/__init__.py)
    import atrous.config
    import numpy as np

    from atrous.cpu import choose_strategy
    from nets.app.environment import benchmark_line
    from nets.app.workers import limit_threads
    limit_threads(args.threads)
    rng = np.random.default_rng(1)
    on = atrous.config.WINOGRAD_MIN_CHANNELS
    rules = {name: choose_strategy(c_in, c_out, (3, 3), (1, 1), (rate, rate), (rate, rate), (side, side),
                                   threads=args.threads) for name, (c_in, c_out, side, rate) in LAYERS}
    atrous.config.WINOGRAD_MAX_THREADS = 1 << 16  # compare Winograd at any thread count
    print("| layer | size | rule's strategy | Winograd ms | without ms | ratio |")
    print("|---|---|---|---|---|---|")
    for name, (c_in, c_out, side, rate) in LAYERS:
        x = rng.standard_normal((1, c_in, side, side)).astype(np.float32)
        w = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.05).astype(np.float32)
        times = {on: [], 10**9: []}
        for rep in range(args.repeat + 1):
            for threshold in times:
                atrous.config.WINOGRAD_MIN_CHANNELS = threshold
                t = time.perf_counter()
                atrous.conv2d(x, w, pad=rate, dilation=rate, backend="cpu")
                if rep:  # the first round compiles and warms up
                    times[threshold].append(time.perf_counter() - t)
        atrous.config.WINOGRAD_MIN_CHANNELS = on
        a, b = statistics.median(times[on]), statistics.median(times[10**9])
        print(f"| {name} | {side}x{side} | {rules[name]} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / b:.2f} |")
    products_table(rng, args.repeat)
    print(benchmark_line())
    return 0


def products_table(rng, repeat):
    """BLAS's stacked products against the packed-panel kernel, for every layer's Winograd products."""
    import atrous.config
    import numpy as np

    from atrous import gemm, winograd
    print(f"\n| layer | products | BLAS ms | GFLOP/s | panels ms | GFLOP/s | ratio |\n|---|---|---|---|---|---|---|")
    for name, (c_in, c_out, side, rate) in LAYERS:
        m = winograd.choose_tile((side, side), (rate, rate))
        planes = (m + 2) ** 2
        rows, cols = winograd.tiles(side, rate, rate, m)[0].shape[0], winograd.tiles(side, rate, rate, m)[0].shape[0]
        block = max(1, min(rows, atrous.config.TILE_BYTES // (planes * 4 * cols * (c_in + c_out))))
        t = block * cols  # the tiles of one block
        u = rng.standard_normal((planes, c_out, c_in)).astype(np.float32)
        v = rng.standard_normal((planes, c_in, t)).astype(np.float32)
        out = np.empty((planes, c_out, t), np.float32)
        a, b = gemm.pack_rows(u), gemm.pack_cols(v)
        c = np.empty((planes, a.shape[1] * gemm.PANEL_ROWS, b.shape[1] * gemm.PANEL_COLS), np.float32)
        runs = {"blas": (lambda: np.matmul(u, v, out=out), []),
                "panels": (lambda: gemm.batched_products_cpu(a, b, c), [])}
        for rep in range(repeat + 1):
            for run, times in runs.values():
                start = time.perf_counter()
                run()
                if rep:
                    times.append(time.perf_counter() - start)
        blas, ours = (statistics.median(runs[key][1]) for key in ("blas", "panels"))
        gflop = 2.0 * planes * c_out * c_in * t / 1e9
        print(f"| {name} | {planes} x ({c_out} x {c_in}) @ ({c_in} x {t}) | {blas * 1e3:.2f} | {gflop / blas:.0f} | "
              f"{ours * 1e3:.2f} | {gflop / ours:.0f} | {ours / blas:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
