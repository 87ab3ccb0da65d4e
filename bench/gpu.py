"""The GPU tier against its targets: the dense CRF, two whole nets and image -> labels, end to end.

    python bench/gpu.py [--repeat 5] [--quick]

Every time is one end-to-end call, synchronised, warm (after one untimed call that
compiles and allocates), the median of ``--repeat``:

* dense CRF, bench/crf.py's setting (photograph, 21 labels, 10 iterations, bilateral and
  Gaussian kernels), 500x375 and 1000x750: the unary and image already on the device and
  Q left there ("device"), and host arrays in, Q back on the host ("host"); both include
  building the two lattices; the notes give the filter's launch mode
  (``crf.cuda.launch_mode``: splat and blurs in one cooperative launch, or one launch
  per stage), the device time with one launch per stage, and a profile with the device
  synchronised after every stage of the builds and of the iterations;
* DeepLab-LargeFOV forward at 513x513 and DeepLab-v2 ResNet-101 ASPP at 321x321 (seeded
  random weights: the time does not depend on the values), input on the device, scores
  left there; the notes give the same pass with every shortcut sum and ReLU run as a layer
  of its own (``Net.fuse = False``) instead of in the convolution's store, and with every
  dropped blob freed at once (``nets.layers.config.CUDA_HOLD_FREES_BYTES = 0``; freeing
  waits for the GPU);
* image -> labels for DeepLab-LargeFOV at 513 with the CRF (DeepLab-v1's preset):
  ``Model.segment(image, crf=..., backend="cuda", probabilities=False)`` on a 500x375
  photograph, host image in, host labels out.

The targets (an H100 or H200) are printed beside each row. Needs a CUDA GPU.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

# Run as a script, this file's folder comes first on sys.path and "crf" would name bench/crf.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

TARGETS_MS = {"crf 500x375": 25, "crf 1000x750": 80, "LargeFOV forward 513": 35,
              "ResNet-101 ASPP forward 321": 90, "LargeFOV image -> labels with CRF, 513": 70}


def _median_ms(fn, repeat, sync):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _bench_inputs():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_crf", os.path.join(_HERE, "crf.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def crf_rows(sizes, repeat, sync):
    from numba import cuda

    import crf
    from crf import cuda as crf_cuda
    bench = _bench_inputs()
    rows = []
    for width, height in sizes:
        image, unary = bench._inputs(width, height)
        d_image, d_unary = cuda.to_device(image), cuda.to_device(unary)

        def run(img, u):
            c = crf.DenseCRF(u, backend="cuda")
            c.add_bilateral(img, bench.THETA_ALPHA, bench.THETA_BETA, bench.W_BILATERAL)
            c.add_gaussian(bench.THETA_GAMMA, bench.W_GAUSSIAN)
            return c.inference(bench.ITERATIONS)

        device = _median_ms(lambda: run(d_image, d_unary), repeat, sync)
        mode = crf_cuda.launch_mode()
        cooperative, crf.config.CUDA_COOPERATIVE = crf.config.CUDA_COOPERATIVE, False  # each stage on its own
        try:
            per_stage = _median_ms(lambda: run(d_image, d_unary), repeat, sync)
        finally:
            crf.config.CUDA_COOPERATIVE = cooperative
        host = _median_ms(lambda: run(image, unary), repeat, sync)
        c = crf.DenseCRF(d_unary, backend="cuda")
        t0 = time.perf_counter()
        c.add_bilateral(d_image, bench.THETA_ALPHA, bench.THETA_BETA, bench.W_BILATERAL)
        c.add_gaussian(bench.THETA_GAMMA, bench.W_GAUSSIAN)
        sync()
        build = 1e3 * (time.perf_counter() - t0)
        profile = _crf_profile(c, d_image, height, width, bench)
        rows.append((f"crf {width}x{height}", device, f"host in/out {host:.1f} ms; build {build:.1f} ms, "
                     f"{' + '.join(str(k.lattice.n_vertices) for k in c.kernels)} vertices; "
                     f"filter launches: {mode}, per-stage launches {per_stage:.1f} ms; {profile}"))
    return rows


def _crf_profile(c, d_image, height, width, bench):
    """Where the GPU CRF's time goes, the device synchronised after every stage: the two lattice
    builds (crf.cuda.build's stages, both lattices together) and the iterations (per kernel)."""
    from crf import cuda as crf_cuda
    build, steps = {}, {}
    crf_cuda.build(crf_cuda.bilateral_features(d_image, bench.THETA_ALPHA, bench.THETA_BETA), timings=build)
    crf_cuda.build(crf_cuda.gaussian_features(height, width, bench.THETA_GAMMA), timings=build)
    runner = c._get_runner()
    q = runner.start()
    for _ in range(bench.ITERATIONS):
        q = runner.step(q, timings=steps)

    def listed(times):
        return ", ".join(f"{name} {1e3 * seconds:.1f}" for name, seconds in times.items())
    return (f"synchronised per stage (ms): builds {listed(build)}; "
            f"{bench.ITERATIONS} iterations {listed(steps)}")


def net_rows(cases, repeat, sync):
    from numba import cuda

    from nets.deeplab import model_spec
    from nets.engine.net import Net
    from nets.engine.random_weights import random_weights
    from nets.layers import config as layers_config
    rows = []
    for label, model, side in cases:
        spec = model_spec(model)
        net = Net.from_spec(spec, random_weights(spec, (1, 3, 65, 65), seed=2018))
        out = net.outputs[0]
        x = cuda.to_device(np.random.default_rng(0).uniform(-120, 130, (1, 3, side, side)).astype(np.float32))
        ms = _median_ms(lambda: net.forward(x, outputs=[out], backend="cuda"), repeat, sync)
        net.fuse = False  # each shortcut sum and ReLU as a kernel of its own, for comparison
        apart = _median_ms(lambda: net.forward(x, outputs=[out], backend="cuda"), repeat, sync)
        net.fuse = True
        budget, layers_config.CUDA_HOLD_FREES_BYTES = layers_config.CUDA_HOLD_FREES_BYTES, 0  # free as Numba does
        try:
            unheld = _median_ms(lambda: net.forward(x, outputs=[out], backend="cuda"), repeat, sync)
        finally:
            layers_config.CUDA_HOLD_FREES_BYTES = budget
        rows.append((label, ms, f"{model} -> {out}; layers apart (fuse=False): {apart:.1f} ms; "
                                f"frees not held (CUDA_HOLD_FREES_BYTES=0): {unheld:.1f} ms"))
    return rows


def pipeline_rows(repeat, sync):
    from nets.deeplab import Model, model_spec
    from nets.engine.net import Net
    from nets.engine.random_weights import random_weights
    bench = _bench_inputs()
    image, _ = bench._inputs(500, 375)
    spec = model_spec("deeplab-v1-largefov")
    model = Model(name="deeplab-v1-largefov (random weights)",
                  net=Net.from_spec(spec, random_weights(spec, (1, 3, 65, 65), seed=2018)),
                  scores="fc8_interp", crop_size=513, crf_preset="deeplab-v1-largefov-voc")
    times = {}

    def run():
        result = model.segment(image, crf="auto", backend="cuda", probabilities=False)
        times.update(result.timings)

    ms = _median_ms(run, repeat, sync)
    stages = ", ".join(f"{k} {1e3 * v:.1f}" for k, v in times.items())
    return [("LargeFOV image -> labels with CRF, 513", ms, f"500x375 photograph; last run's stages (ms): {stages}")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per row; the median is kept")
    parser.add_argument("--quick", action="store_true", help="the smaller CRF and the LargeFOV rows only")
    args = parser.parse_args(argv)
    from numba import cuda
    name = cuda.get_current_device().name
    print(f"GPU: {name.decode() if isinstance(name, bytes) else name}")
    sizes = [(500, 375)] if args.quick else [(500, 375), (1000, 750)]
    nets = [("LargeFOV forward 513", "deeplab-v1-largefov", 513)]
    if not args.quick:
        nets.append(("ResNet-101 ASPP forward 321", "deeplab-v2-resnet101", 321))
    rows = crf_rows(sizes, args.repeat, cuda.synchronize) + net_rows(nets, args.repeat, cuda.synchronize) \
        + pipeline_rows(args.repeat, cuda.synchronize)
    print("| workload | ms (median) | target ms | met | notes |")
    print("|---|---|---|---|---|")
    for name, ms, note in rows:
        target = TARGETS_MS.get(name)
        met = "" if target is None else ("yes" if ms <= target else "no")
        print(f"| {name} | {ms:.1f} | {target if target is not None else ''} | {met} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
