"""The CUDA convolution's register blocking, shape by shape, against cuDNN in the same run.

    python bench/cuda_tiles.py [--repeat 5]

For DeepLab's heavy atrous layers (LargeFOV fc6 at 65x65 and 41x41, VGG conv5, a
ResNet ASPP branch) it times ``atrous.cuda.conv_kernel`` with 16x16 threads, each
accumulating 2x2, 4x4 or 8x8 outputs, prints which one ``atrous.cuda.block_shape``
picks, and times torch's cuDNN convolution in float32 and with TF32 tensor cores
(torch's default). Every result is checked against the CPU backend. Needs a CUDA
GPU (or, for a smoke run on a tiny layer, NUMBA_ENABLE_CUDASIM=1).
"""
import argparse
import os
import sys
import time

import numpy as np

# Run as a script, this file's folder comes first on sys.path and bench/atrous.py would hide the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

CASES = [("LargeFOV fc6", 512, 1024, 65, 12), ("LargeFOV fc6", 512, 1024, 41, 12),
         ("VGG conv5", 512, 512, 65, 2), ("ASPP branch", 2048, 21, 65, 6)]
SHAPES = [(16, 2), (16, 4), (16, 8)]


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement; the median is kept")
    args = parser.parse_args(argv)
    from numba import config, cuda

    import atrous
    import atrous.cuda as atrous_cuda
    cases, shapes = CASES, SHAPES
    if config.ENABLE_CUDASIM:  # a smoke run: one tiny layer, simulator-sized blocks
        cases, shapes = [("tiny", 5, 11, 9, 2)], [(4, 2), (4, 4)]
    try:
        import torch
        torch = torch if torch.cuda.is_available() else None
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print("layer | size | " + " | ".join(f"{t}x{t} threads, {m}x{m} outputs" for t, m in shapes)
          + " | picked | cuDNN float32 | cuDNN TF32 | max |err|")
    for name, c_in, c_out, size, rate in cases:
        x = rng.standard_normal((c_in, size, size)).astype(np.float32)
        weight = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        bias = rng.standard_normal(c_out).astype(np.float32)
        expected = atrous.conv2d(x, weight, bias, pad=rate, dilation=rate, backend="cpu")
        d_x, d_w, d_b = cuda.to_device(x), cuda.to_device(weight), cuda.to_device(bias)
        cells, worst = [], 0.0
        picked = atrous_cuda.block_shape
        for shape in shapes:
            atrous_cuda.block_shape = lambda channels, shape=shape: shape  # this shape for every layer
            try:
                call = lambda: atrous.conv2d(d_x, d_w, d_b, pad=rate, dilation=rate, backend="cuda")  # noqa: E731
                seconds = _median_time(call, args.repeat, cuda.synchronize)
                worst = max(worst, float(np.abs(call().copy_to_host() - expected).max()))
            finally:
                atrous_cuda.block_shape = picked
            cells.append(f"{seconds * 1e3:.2f} ms")
        torch_cells = ["-", "-"]
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(a).cuda() for a in (x[None], weight, bias))
            for i, tf32 in enumerate((False, True)):
                torch.backends.cudnn.allow_tf32 = tf32
                with torch.no_grad():
                    seconds = _median_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=rate, dilation=rate),
                                           args.repeat, torch.cuda.synchronize)
                torch_cells[i] = f"{seconds * 1e3:.3f} ms"
        print(f"{name} {c_in}->{c_out}, rate {rate} | {size}x{size} | " + " | ".join(cells)
              + f" | {picked(c_out)} | " + " | ".join(torch_cells) + f" | {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
