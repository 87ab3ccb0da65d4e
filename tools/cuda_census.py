"""What one GPU forward pass asks of the CUDA driver, counted without a GPU.

    python tools/cuda_census.py [--model deeplab-v2-resnet101] [--side 321] [--top 8]

Runs ``Net.forward(..., backend="cuda")`` twice in the CUDA simulator with every kernel
launch counted and skipped (so a full-size pass takes seconds; the values computed are
meaningless), and prints for the second pass (the first also uploads the weights):

* kernel launches, and those given a host array (Numba copies it to the device and back,
  waiting for the GPU both ways);
* device allocations (``cuda.device_array``), host -> device copies (``cuda.to_device``),
  device -> host copies (``copy_to_host``) and synchronisations, each with the source lines
  that ask for them;
* the host's Python time per pass with no kernel run: a floor for the pass's time on a GPU
  that the launches' and allocations' driver costs add to.

A pass whose input and output stay on the device should copy nothing and never wait for
the GPU, so that the host can queue launches ahead of it; this shows where one does.
"""
import argparse
import collections
import os
import sys
import time
import traceback
from pathlib import Path

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda.simulator import kernel as sim_kernel  # noqa: E402
from numba.cuda.simulator.cudadrv import devicearray as sim_array  # noqa: E402


class Census:
    """Counts of driver requests by kind, and by the project's source line that made each."""

    def __init__(self):
        self.counting = False
        self.by_kind = collections.Counter()
        self.by_site = collections.defaultdict(collections.Counter)

    def record(self, kind):
        if self.counting:
            self.by_kind[kind] += 1
            self.by_site[kind][_project_site()] += 1

    def clear(self):
        self.by_kind.clear()
        self.by_site.clear()


def _project_site():
    """``path:line`` of the innermost frame of the project's own code (not this tool)."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = Path(frame.filename).resolve()
        if str(path).startswith(ROOT) and path != Path(__file__).resolve() and "site-packages" not in str(path):
            return f"{path.relative_to(ROOT)}:{frame.lineno}"
    return "(outside the project)"


def instrument(census):
    """Patch the simulator so that launches are counted and skipped, and transfers counted."""
    launch = sim_kernel.FakeCUDAKernel.__call__

    def counted_launch(self, *args):
        if self._device or sim_kernel._kernel_context:  # a device function called from a kernel
            return launch(self, *args)
        census.record("kernel launches")
        if any(isinstance(a, np.ndarray) and a.ndim > 0 for a in args):
            census.record("launches given a host array")
        return None

    sim_kernel.FakeCUDAKernel.__call__ = counted_launch
    for name, kind in (("device_array", "allocations"), ("device_array_like", "allocations"),
                       ("to_device", "host -> device copies"), ("synchronize", "synchronisations")):
        original = getattr(cuda, name)
        setattr(cuda, name, lambda *a, _f=original, _k=kind, **k: (census.record(_k), _f(*a, **k))[1])
    original_copy = sim_array.FakeCUDAArray.copy_to_host

    def copy_to_host(self, *args, **kwargs):
        census.record("device -> host copies")
        return original_copy(self, *args, **kwargs)

    sim_array.FakeCUDAArray.copy_to_host = copy_to_host


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplab-v2-resnet101", help="a name from nets.deeplab.MODELS")
    parser.add_argument("--side", type=int, default=321, help="input height and width")
    parser.add_argument("--top", type=int, default=8, help="source lines listed per kind")
    args = parser.parse_args(argv)

    from nets.deeplab import model_spec
    from nets.engine.net import Net
    from nets.engine.random_weights import random_weights

    census = Census()
    instrument(census)
    spec = model_spec(args.model)
    net = Net.from_spec(spec, random_weights(spec, (1, 3, 65, 65), seed=2018))
    x = cuda.to_device(np.zeros((1, 3, args.side, args.side), np.float32))
    net.forward(x, outputs=[net.outputs[0]], backend="cuda")  # uploads the weights
    census.counting = True
    net.forward(x, outputs=[net.outputs[0]], backend="cuda")
    census.counting = False
    times = []
    for _ in range(5):
        start = time.perf_counter()
        net.forward(x, outputs=[net.outputs[0]], backend="cuda")
        times.append(time.perf_counter() - start)

    print(f"{args.model} at {args.side}x{args.side}, input and output on the device, "
          f"one pass after the first (kernels not run):")
    for kind in ("kernel launches", "launches given a host array", "allocations", "host -> device copies",
                 "device -> host copies", "synchronisations"):
        print(f"  {kind}: {census.by_kind[kind]}")
        for site, count in census.by_site[kind].most_common(args.top):
            print(f"      {count:5d}  {site}")
    print(f"host time per pass with no kernel run: {1e3 * min(times):.1f} ms (best of {len(times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
