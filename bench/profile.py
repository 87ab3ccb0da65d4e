"""Where a forward pass spends its time: layer by layer, on the CPU or the GPU.

    python bench/profile.py [--model deeplab-v2-resnet101] [--side 321] [--backend cuda]
                            [--repeat 3] [--top 20] [--threads 2]

The net runs with seeded random weights (the time does not depend on the values) on a
(1, 3, side, side) input. Printed:

* the whole pass, warm, median of ``--repeat`` (on the GPU: input on the device,
  scores left there, synchronised at the end only);
* the same pass profiled (``Net.forward(..., timings=...)``: synchronised before and after
  every layer), its layers' sum, and the ``--top`` slowest layers with their type, output
  shape, share and, for convolutions, GFLOP/s (2 * output elements * C_in/group * kh * kw);
* the time by layer type;
* on the GPU, what the host pays before the GPU does anything: one launch of an empty
  kernel with ten array arguments, and one ``cuda.device_array`` of 16 MB allocated and
  freed; and the launches and allocations of one pass, counted (``count_requests``). Their
  cost, set beside the whole pass and the profiled layers' sum, tells whether launches,
  allocations or kernels dominate.

BatchNorm and Scale folded into a convolution, and the sums and ReLUs it does as it
writes, count in the convolution's row (they do not run on their own).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# A script's folder comes first on sys.path; bench/atrous.py would then hide the atrous package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplab-v2-resnet101", help="a name from nets.deeplab.MODELS")
    parser.add_argument("--side", type=int, default=321, help="input height and width")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--repeat", type=int, default=3, help="passes per measurement; medians are kept")
    parser.add_argument("--top", type=int, default=20, help="how many of the slowest layers to list")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for Numba and BLAS")
    return parser.parse_args(argv)


def conv_gflop(net, inputs, shapes):
    """``{convolution name: GFLOP}`` of one pass, from the weights' and the outputs' shapes.

    ``inputs``: the input blobs' shapes; ``shapes``: every blob's (``Net.infer_shapes``).
    """
    weights = net.checked_weights(inputs)
    out = {}
    for layer in net.spec.layers:
        if layer.type == "Convolution" and layer.name in weights and layer.tops[0] in shapes:
            n_out = 1
            for size in shapes[layer.tops[0]]:
                n_out *= size
            c_in_per_group, kh, kw = weights[layer.name][0].shape[1:]
            out[layer.name] = 2.0 * n_out * c_in_per_group * kh * kw / 1e9
    return out


def launch_costs(repeat=200):
    """(microseconds per empty launch with ten array arguments, per 16 MB allocation and free)."""
    import numpy as np
    from numba import cuda

    @cuda.jit
    def empty(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9):
        pass

    arrays = [cuda.device_array(256, np.float32) for _ in range(10)]
    empty[1, 32](*arrays)
    cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        empty[1, 32](*arrays)
    cuda.synchronize()
    launch = (time.perf_counter() - start) / repeat
    start = time.perf_counter()
    for _ in range(repeat // 4):
        buffer = cuda.device_array(4 << 20, np.float32)
        del buffer
    cuda.synchronize()
    alloc = (time.perf_counter() - start) / (repeat // 4)
    return 1e6 * launch, 1e6 * alloc


def count_requests(run):
    """(kernel launches, device allocations) made by one call of ``run()`` on the GPU.

    Counted by wrapping ``numba.cuda.device_array`` and the launch of a configured kernel
    (``kernel[grid, block](...)``) for the call; launches are None where this Numba's launch
    object is not the one wrapped.
    """
    from numba import cuda
    try:
        from numba.cuda.dispatcher import _LaunchConfiguration as launch_type
    except ImportError:
        launch_type = None
    counts = {"launches": 0, "allocations": 0}
    allocate = cuda.device_array

    def counted_allocation(*args, **kwargs):
        counts["allocations"] += 1
        return allocate(*args, **kwargs)

    launch = getattr(launch_type, "__call__", None)

    def counted_launch(self, *args):
        counts["launches"] += 1
        return launch(self, *args)

    cuda.device_array = counted_allocation
    if launch is not None:
        launch_type.__call__ = counted_launch
    try:
        run()
    finally:
        cuda.device_array = allocate
        if launch is not None:
            launch_type.__call__ = launch
    return (counts["launches"] if launch is not None else None), counts["allocations"]


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # OpenBLAS's threads sleep after a product, as in the deeplab command (atrous/__init__.py): NumPy
    # is imported below before the package, which would set it too late.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    import numpy as np

    from nets.app.environment import benchmark_line
    from nets.deeplab import model_spec
    from nets.engine.net import Net
    from nets.engine.random_weights import random_weights

    spec = model_spec(args.model)
    net = Net.from_spec(spec, random_weights(spec, (1, 3, 65, 65), seed=2018))
    out = net.outputs[0]
    x = np.random.default_rng(0).uniform(-120, 130, (1, 3, args.side, args.side)).astype(np.float32)
    if args.backend == "cuda":
        from numba import cuda
        name = cuda.get_current_device().name
        print(f"GPU: {name.decode() if isinstance(name, bytes) else name}")
        x, sync = cuda.to_device(x), cuda.synchronize
    else:
        print(benchmark_line())
        sync = lambda: None  # noqa: E731 (the CPU's work is done when forward returns)
    print(f"{args.model} at {args.side}x{args.side}, backend {args.backend}, output {out}")

    def whole():
        net.forward(x, outputs=[out], backend=args.backend)
        sync()

    whole()
    passes = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        whole()
        passes.append(time.perf_counter() - start)
    profiles = []
    for _ in range(args.repeat):
        timings = {}
        net.forward(x, outputs=[out], backend=args.backend, timings=timings)
        profiles.append(timings)
    layer_ms = {name: 1e3 * statistics.median([p[name] for p in profiles]) for name in profiles[0]}
    total_ms = sum(layer_ms.values())
    whole_ms = 1e3 * statistics.median(passes)
    print(f"whole pass {whole_ms:.1f} ms (median of {args.repeat}); profiled, layer by layer: "
          f"{total_ms:.1f} ms over {len(layer_ms)} layers run")

    inputs = {net.inputs[0]: tuple(x.shape)}
    shapes = net.infer_shapes(inputs)
    gflop = conv_gflop(net, inputs, shapes)
    layers = {layer.name: layer for layer in net.spec.layers}
    print(f"\n| layer | type | output | ms | share | GFLOP/s |\n|---|---|---|---|---|---|")
    for name, ms in sorted(layer_ms.items(), key=lambda item: -item[1])[:args.top]:
        layer = layers[name]
        rate = f"{gflop[name] / (ms / 1e3):.0f}" if name in gflop and ms > 0 else ""
        shape = "x".join(str(s) for s in shapes.get(layer.tops[0], ()))
        print(f"| {name} | {layer.type} | {shape} | {ms:.2f} | {100 * ms / total_ms:.1f} % | {rate} |")

    by_type = {}
    for name, ms in layer_ms.items():
        count, spent = by_type.get(layers[name].type, (0, 0.0))
        by_type[layers[name].type] = (count + 1, spent + ms)
    print(f"\n| type | layers | ms | share |\n|---|---|---|---|")
    for kind, (count, ms) in sorted(by_type.items(), key=lambda item: -item[1][1]):
        print(f"| {kind} | {count} | {ms:.1f} | {100 * ms / total_ms:.1f} % |")
    if gflop:
        conv_ms = by_type.get("Convolution", (0, 0.0))[1]
        print(f"\nconvolutions: {sum(gflop.values()):.1f} GFLOP in {conv_ms:.1f} ms "
              f"({sum(gflop.values()) / (conv_ms / 1e3):.0f} GFLOP/s over the profiled layers)")
    if args.backend == "cuda":
        launch_us, alloc_us = launch_costs()
        launches, allocations = count_requests(whole)
        print(f"host cost before any GPU work: an empty launch (10 array arguments) {launch_us:.1f} us, "
              f"a 16 MB device_array allocated and freed {alloc_us:.1f} us")
        if launches is None:
            print(f"one pass: {allocations} allocations (launches not counted with this Numba): "
                  f"{allocations * alloc_us / 1e3:.1f} ms of allocations against the whole pass's {whole_ms:.1f} ms")
        else:
            cost = (launches * launch_us + allocations * alloc_us) / 1e3
            print(f"one pass: {launches} launches and {allocations} allocations, about {cost:.1f} ms of host "
                  f"cost against the whole pass's {whole_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
