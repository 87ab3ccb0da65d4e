"""The knobs of the dense CRF's kernels, in one place: CPU work split, prefetching, reuse, CUDA launches.

The kernels read these values when they run, so a test (or a user tuning for a machine)
changes them with ``monkeypatch.setattr(crf.config, NAME, value)``. Every CPU choice below
is bit-identical (tests/crf/test_lattice.py checks each), and the CUDA launch shape only
changes which thread computes which value. Two exceptions move the last bits:
COMPLEMENT_LABEL (the last label's filter derived from the others'; tests/crf/test_densecrf.py
compares both ways) and CUDA_SPLAT_SEGMENT, which decides how a vertex spanning segments has
its sum grouped (tests/crf/test_cuda.py compares each length with the CPU).

The test suite runs the CUDA kernels in Numba's CUDA simulator, where every GPU thread
is a Python thread; there it sets smaller launch shapes itself (``tests/conftest.py``).
Production code never asks whether it runs in the simulator.
"""

# ---------------------------------------------------------------- CPU (crf.lattice_cpu)

#: Lattice values up to this many bytes are blurred in place along the chains of each
#: axis; larger ones with two buffers, which parallelise and prefetch better.
CHAIN_BLUR_MAX_BYTES = 512 << 10

#: Below this many values per stage, kernels run on the calling thread only.
SERIAL_WORK = 1 << 16

#: The same for one blur pass, which is cheap per value. The Gaussian kernel's lattice at
#: 500x375 (24,540 vertices x 20 labels) splats and blurs in 1.65 ms on 2 threads, 1.91 ms with
#: its blur on one (bench/RESULTS.md (14)).
SERIAL_BLUR = 1 << 18

#: The two-buffer blur cuts each pass into this many blocks of vertices per thread; a thread
#: that is done with its own takes over those of a slower one (crf.dynamic). Fewer blocks
#: restart the hardware's stream prefetch less often, more balance unequal cores better.
BLUR_BLOCKS_PER_THREAD = 4

#: In a mean-field step, a lattice whose splat and blur are at most one thread's share of the
#: work is splatted and blurred on one thread while the others splat the largest lattice
#: (crf.lattice_cpu.side_lattices); False gives every lattice its own parallel stages.
SIDE_LATTICES = True

#: The CPU splat's threads share out this many blocks of vertices of about equal work, a
#: vertex costing its splat entries plus SPLAT_VERTEX_COST (crf.lattice_cpu.splat_bounds).
SPLAT_BLOCKS = 256
SPLAT_VERTEX_COST = 4

#: Blocks of points per thread in the parallel hash (load balance against merge work).
HASH_BLOCKS_PER_THREAD = 2

#: Hash and look up vertex keys packed into one int64 when they fit (crf.packed_keys);
#: False: always the general kernels (the tests build both ways and compare).
PACKED_KEYS = True

#: Software prefetch distances, in vertices (splat, blur) and in points (the mean field's
#: fused slice pass; crf.lattice_cpu's own slice prefetches nothing), for
#: gathered arrays of at least PREFETCH_MIN_BYTES. Smaller ones stay in the last-level cache,
#: where the prefetches cost more than they save: at 500x375 the fused pass took 9.4 instead
#: of 9.8 ms without them for the Gaussian kernel's 2 MB lattice (bench/RESULTS.md (14)).
AHEAD_VERTICES = 32
AHEAD_POINTS = 8
PREFETCH_MIN_BYTES = 4 << 20

#: The CPU mean field filters L - 1 labels and derives the last from the others', where that
#: pays (crf.densecrf.filters_complement): Q's rows sum to one and the filter is linear.
COMPLEMENT_LABEL = True

# ---------------------------------------------------------------- reuse (crf.grid_cache)

#: The smoothness kernel's lattices (one per image size and theta) kept for the next image
#: of the same size, in bytes of lattice and normaliser; 0 turns the cache off.
GRID_CACHE_BYTES = 128 << 20

# ---------------------------------------------------------------- CUDA (crf.cuda)

#: Threads per block, and blocks per grid at most (grid-stride loops cover the rest).
CUDA_THREADS = 256
CUDA_MAX_BLOCKS = 4096

#: The splat's segments: each (segment, channel) thread sums this many consecutive CSR
#: entries, the vertices spanning segments are added up after. One thread per vertex would
#: leave the whole GPU waiting on the vertex of a flat region: at 500x375 the benchmark
#: photograph's bilateral lattice has vertices of up to 2,589 points, and its 1 % largest
#: hold 44 % of the entries.
CUDA_SPLAT_SEGMENT = 32

#: The GPU build sorts each splat list longer than crf.cuda_build.INSERTION_SORT_MAX with one
#: thread block: in shared memory up to this many entries (at most
#: crf.cuda_build.BLOCK_SORT_CAPACITY, 4096), in global memory beyond.
CUDA_SHARED_SORT_MAX = 4096

#: Splat and blur in one cooperative launch (grid-wide barriers between the stages) instead
#: of d+3 launches; same bits. Off, or where the GPU cannot (crf.cuda.launch_mode), the
#: stages launch one by one.
CUDA_COOPERATIVE = True
