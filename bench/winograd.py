"""Winograd against the strategy it replaced, layer by layer, in one run.

For DeepLab's 3x3 layers of 128 channels and more, the convolution through Winograd and with
Winograd switched off (``atrous.config.WINOGRAD_MIN_CHANNELS`` out of reach), so that the rule's
next choice ("band" or "im2col") runs; the rule's own choice at ``--threads`` is printed beside
(``atrous.cpu.choose_strategy``). Calls alternate; median of ``--repeat``.

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
    print(benchmark_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
