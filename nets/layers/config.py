"""The CUDA settings of the Caffe layers' kernels (:mod:`nets.layers.cuda`) and of a net's pass.

The kernels read these values when they launch, so a test changes them with
``monkeypatch.setattr(nets.layers.config, NAME, value)``. The test suite runs the CUDA
kernels in Numba's CUDA simulator, where every GPU thread is a Python thread; there it
sets a smaller GEMM tile itself (``tests/conftest.py``). Production code never asks
whether it runs in the simulator.
"""

#: Threads per block of the one-thread-per-output kernels.
CUDA_THREADS = 128

#: Blocks per grid at most (grid-stride loops cover larger problems).
CUDA_MAX_BLOCKS = 4096

#: Edge of the inner product's shared-memory tiles (CUDA_GEMM_TILE^2 threads per block).
CUDA_GEMM_TILE = 16

#: A forward pass on the GPU holds back the freeing of the blobs it drops until it has
#: allocated this many more bytes (nets.engine.device.HeldFrees): Numba's cuMemFree waits for
#: the device, and a pass that waited every few layers could not queue its launches ahead of
#: the GPU. 0: every blob is freed as Numba does by itself.
CUDA_HOLD_FREES_BYTES = 1 << 30
