"""CPU against CUDA at full size, for a machine with a GPU: the dense CRF and two whole nets.

    PYTHONPATH=. python tools/gpu_compare.py [--quick]

The tests compare the two backends on tiny inputs (the simulator is slow); this script
compares them where a GPU's arithmetic and scheduling actually matter:

* the dense CRF of ``bench/crf.py`` (the photograph at 500x375 and 1000x750, 21 labels,
  10 iterations, DeepLab-v2 ResNet's setting): MAP agreement, max and mean |dQ|, the KL
  divergence after the last iteration, and the time of each backend (lattice build and
  inference, best of 3 after a warm-up);
* the lattices built on the GPU against the CPU's: the same vertex keys and, per point, the
  same simplex corners (the numbering may differ);
* image -> labels with the CRF for DeepLab-LargeFOV at 513 (random weights): label agreement;
* DeepLab-LargeFOV at 513x513 and DeepLab-v2 ResNet-101 ASPP at 321x321 with seeded
  random weights (``nets.engine.random_weights``): the largest score difference relative to the
  scores' range, the agreement of the argmax, and the time of one forward pass (median
  of 3 after a warm-up), CPU with every core of the machine.

It exits 1 if a comparison is outside its tolerance (the same ones as the tests: MAP
agreement >= 99.9 % and mean |dQ| <= 1e-4 for the CRF, scores within 1e-3 of their range
for the nets).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _timed(fn, repeat):
    """(the last result, the seconds of each of ``repeat`` calls after a warm-up call)."""
    fn()  # warm-up: compilation, caches, the first allocations
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def compare_crf(sizes):
    import importlib.util

    import crf
    # bench/crf.py holds the benchmark's inputs and setting; loaded under another name, since
    # "crf" is the package.
    spec = importlib.util.spec_from_file_location(
        "bench_crf", Path(__file__).resolve().parent.parent / "bench" / "crf.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    failures = 0
    for width, height in sizes:
        image, unary = bench._inputs(width, height)
        results = {}
        for backend in ("cpu", "cuda"):
            def run():
                t0 = time.perf_counter()
                c = crf.DenseCRF(unary, backend=backend)
                c.add_bilateral(image, bench.THETA_ALPHA, bench.THETA_BETA, bench.W_BILATERAL)
                c.add_gaussian(bench.THETA_GAMMA, bench.W_GAUSSIAN)
                t1 = time.perf_counter()
                q = c.inference(bench.ITERATIONS)
                return q, t1 - t0, time.perf_counter() - t1, c

            run()  # warm-up
            q, build, infer, c = min((run() for _ in range(3)), key=lambda r: r[1] + r[2])
            results[backend] = (q, c, build + infer, build, infer)
        (q_cpu, c_cpu, t_cpu, b_cpu, i_cpu), (q_gpu, c_gpu, t_gpu, b_gpu, i_gpu) = results["cpu"], results["cuda"]
        for k_cpu, k_gpu in zip(c_cpu.kernels, c_gpu.kernels):  # the lattice built on the GPU
            same = _same_lattice(k_cpu.lattice, crf.Lattice.from_device(k_gpu.lattice))
            failures += not same
            print(f"crf {width}x{height} {k_cpu.name} lattice: {k_cpu.lattice.n_vertices} vertices on the CPU, "
                  f"{k_gpu.lattice.n_vertices} built on the GPU; {'same' if same else 'DIFFERENT'} vertex "
                  f"keys and corners up to the numbering")
        kl_cpu, kl_gpu = c_cpu.free_energy(q_cpu), c_cpu.free_energy(q_gpu)  # one energy for both
        dq = np.abs(q_cpu.astype(np.float64) - q_gpu)
        agree = float((q_cpu.argmax(0) == q_gpu.argmax(0)).mean())
        ok = agree >= 0.999 and dq.mean() <= 1e-4
        failures += not ok
        print(f"crf {width}x{height}: MAP agree {agree:.5%}, max |dQ| {dq.max():.2e}, mean |dQ| {dq.mean():.2e}, "
              f"KL cpu {kl_cpu:.6g} cuda {kl_gpu:.6g}; cpu {t_cpu:.3f} s (build {b_cpu:.3f} + inference "
              f"{i_cpu:.3f}), cuda {t_gpu:.3f} s (build {b_gpu:.3f} + inference {i_gpu:.3f}), "
              f"cpu/cuda {t_cpu / t_gpu:.1f}x  {'ok' if ok else 'FAIL'}")
    return failures


def _same_lattice(a, b):
    """Two lattices with the same vertex keys and, per point, the same corner keys (any numbering)."""
    if a.n_vertices != b.n_vertices or a.offsets.shape != b.offsets.shape:
        return False
    return bool(np.array_equal(np.sort(a.keys[a.offsets], axis=1), np.sort(b.keys[b.offsets], axis=1)))


def compare_pipeline(side):
    """Image -> labels with the CRF, LargeFOV at ``side`` with random weights: CPU against CUDA."""
    from crf.synthetic import photo
    from nets.deeplab import Model, model_spec
    from nets.engine.net import Net
    from nets.engine.random_weights import random_weights
    spec = model_spec("deeplab-v1-largefov")
    model = Model(name="largefov", net=Net.from_spec(spec, random_weights(spec, (1, 3, 65, 65), seed=2018)),
                  scores="fc8_interp", crop_size=side, crf_preset="deeplab-v1-largefov-voc")
    image = np.asarray(photo(side * 3 // 4, side, seed=3))
    got = {backend: model.segment(image, crf="auto", backend=backend) for backend in ("cpu", "cuda")}
    agree = float((got["cpu"].labels == got["cuda"].labels).mean())
    dq = float(np.abs(got["cpu"].probabilities - got["cuda"].probabilities).max())
    ok = agree >= 0.999
    print(f"pipeline LargeFOV {image.shape[1]}x{image.shape[0]} (crop {side}) with the CRF: labels agree "
          f"{agree:.5%}, max |dQ| {dq:.2e}  {'ok' if ok else 'FAIL'}")
    return int(not ok)


def compare_nets(cases):
    from nets.deeplab import model_spec
    from nets.engine.net import Net
    from nets.engine.random_weights import random_weights
    failures = 0
    for model, side in cases:
        spec = model_spec(model)
        net = Net.from_spec(spec, random_weights(spec, (1, 3, 65, 65), seed=2018))
        out = net.outputs[0]
        x = np.random.default_rng(0).uniform(-120, 130, (1, 3, side, side)).astype(np.float32)
        timing = {}
        scores = {}
        for backend in ("cpu", "cuda"):
            scores[backend], times = _timed(lambda: net.forward(x, outputs=[out], backend=backend)[out], 3)
            timing[backend] = statistics.median(times)
        a, b = scores["cpu"].astype(np.float64), scores["cuda"].astype(np.float64)
        rel = float(np.abs(a - b).max() / (a.max() - a.min()))
        agree = float((a.argmax(1) == b.argmax(1)).mean())
        ok = rel <= 1e-3
        failures += not ok
        print(f"net {model} {side}x{side} -> {out} {tuple(a.shape)}: max |d| / range {rel:.2e}, argmax agree "
              f"{agree:.4%}; cpu {timing['cpu']:.3f} s, cuda {timing['cuda']:.3f} s, "
              f"cpu/cuda {timing['cpu'] / timing['cuda']:.1f}x  {'ok' if ok else 'FAIL'}")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller size of each case only")
    args = parser.parse_args(argv)
    import numba
    from nets.app.environment import cuda_status
    print(f"numba {numba.__version__}, {numba.get_num_threads()} CPU threads; GPU: {cuda_status()[1]}")
    sizes = [(500, 375)] if args.quick else [(500, 375), (1000, 750)]
    nets = [("deeplab-v1-largefov", 321)] if args.quick else [("deeplab-v1-largefov", 513),
                                                              ("deeplab-v2-resnet101", 321)]
    failures = compare_crf(sizes) + compare_nets(nets) + compare_pipeline(321 if args.quick else 513)
    print(f"gpu_compare: {failures} outside tolerance")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
