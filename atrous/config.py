"""The knobs of the atrous kernels, in one place: CPU tiling and CUDA launch shapes.

The kernels read these values when they run, so a test (or a user tuning for a machine)
changes them with ``monkeypatch.setattr(atrous.config, NAME, value)`` or a plain
assignment. None of them changes a result beyond float32 rounding of a different
summation order; tests/atrous check each against the NumPy reference.

The test suite runs the CUDA kernels in Numba's CUDA simulator, where every GPU thread
is a Python thread; there it sets smaller launch shapes itself (``tests/conftest.py``),
and one test runs the shapes below unchanged on a tiny input. Production code never
asks whether it runs in the simulator.
"""

# ---------------------------------------------------------------- CPU (atrous.cpu)

#: Bytes of scratch (im2col columns, shifted rows) a CPU convolution holds at once;
#: larger layers are cut into blocks of output rows. Larger blocks mean fewer hand-overs
#: between BLAS's threads and Numba's, each of which costs milliseconds on a machine with
#: few cores: at 65x65, im2col of fc6 and conv5 needs two blocks with 64 MB and ran 2-9 %
#: faster than in three blocks with 32 MB; "band" fits either in one block with 64 MB and
#: ran 5-6 % faster than in two blocks with 32 MB.
TILE_BYTES = 64 * 2**20

#: The "band" strategy is chosen only when its GEMM products have an inner dimension
#: ``C_in/g * kw`` of at least this: a shorter one leaves BLAS bound by writing its
#: output, which "band" does kh times (VGG's conv1_1, 3 -> 64: 2x slower than im2col
#: at 513x513).
BAND_MIN_INNER = 64

#: Dilated 3x3 convolutions of stride 1 with at least this many input and output channels per
#: group run Winograd on their phases (atrous.winograd): 2.25x (F(2x2, 3x3)) or 4x (F(4x4, 3x3))
#: fewer multiplications, whose transforms pay from about 32 channels. Measured on 2 cores
#: (2026-12-05, with F(4x4) and the filters kept), Winograd's time over the rule's choice without
#: it: 64 -> 64 at 513x513 (VGG conv1_2) 0.55, 64 -> 128 at 257x257 (conv2_1) 0.55, 64 -> 64 at
#: 81x81 (ResNet res2) 0.85, 32 -> 32 at 257x257 0.64, 24 -> 24 at 129x129 0.72; but 1.09 for
#: 16 -> 64 and 1.13 for 64 -> 16 at 257x257. (With F(2x2) alone, 2026-12-04, 64 -> 64 at
#: 513x513 took 1.17x the time of "band", hence the earlier threshold of 128.)
WINOGRAD_MIN_CHANNELS = 32

#: ... and only while its 2x2 tiles cover at most this many times the outputs: a phase with an odd
#: number of outputs computes one row or column that is dropped (fc6 at 41x41, rate 12: 1.37, and
#: rate 24 at 65x65: 1.59 ran no faster than "im2col"/"band"; fc6 at 65x65: 1.23 ran faster).
WINOGRAD_MAX_COVERAGE = 1.3

#: ... and only when the convolution runs on at most this many threads. With many threads the
#: direct strategies' large products scale better than Winograd's 16 smaller ones and its
#: transforms: per layer (bench/winograd.py on one 16-core machine, 2026-12-04), Winograd took
#: 0.67-0.95x the time of the strategy it replaces on 2 threads, but 1.03-1.44x on 16. 4 threads
#: were not measured (the log-linear middle of the two is about 0.95x).
WINOGRAD_MAX_THREADS = 4

#: The output tiles Winograd may use: 2 (F(2x2, 3x3), 16 products per 4 outputs) and 4 (F(4x4, 3x3),
#: 36 per 16); atrous.winograd.choose_tile takes the one with fewer products over a layer's phases.
#: F(4x4, 3x3) on 2 threads (2026-12-04, bench/winograd.py's layers): 256 -> 256 at 129x129 0.68x
#: F(2x2, 3x3)'s time, 512 -> 512 at 65x65 0.71x, conv5 (rate 2) 0.63x, 128 -> 128 at 257x257
#: 0.87x; its error is about 10x F(2x2, 3x3)'s (1e-5 of a layer's range): (2,) keeps to F(2x2, 3x3).
WINOGRAD_TILES = (2, 4)

#: Bytes of Winograd's transformed inputs (column panels of one plane, :mod:`atrous.gemm`) that one
#: thread's task of the batched products keeps in cache while every row panel of the filters
#: passes over them: about a Zen 4 or Skylake core's L2 share.
PANEL_CHUNK_BYTES = 256 * 2**10

#: A 1x1 convolution's product on packed panels (atrous.gemm.matmul_cpu) goes along K (input
#: channels) in passes of this many rows (the first pass stores its sums, the others add to
#: them), and each task holds about PANEL_TASK_BYTES of the input's columns of a pass while
#: its band of weight panels streams past. Measured on 2 Zen 4 cores (2026-12-07, ResNet's
#: 1x1 shapes at 41x41): 512 rows and one or two panels of 32 columns a task were fastest;
#: 2048 -> 1024 took 33.8 ms against 36.5 with 256 rows and 256 KiB, and 43.4 with 512 KiB.
PANEL_DEPTH = 512
PANEL_TASK_BYTES = 64 * 2**10

#: The products of the CPU strategies "gemm" (1x1; it also adds the bias and the shortcut and
#: rectifies as it stores), "shift" and "im2col" on that kernel of packed panels, with the weights'
#: panels kept per net (True), or BLAS's products (``np.matmul``) and the weights as they are
#: (False). None: True where Numba compiles for AVX-512 (8 x 32 panels), False elsewhere.
#: Winograd's products are always the kernel's; "band" always BLAS's. Measured on 2 Zen 4 cores
#: (2026-12-07), ResNet-101 at 321x321: with AVX-512 the kernel's time was 0.98-1.03x BLAS's, and
#: 0.50x with OpenBLAS forced onto old kernels (OPENBLAS_CORETYPE=Prescott); compiled for AVX2
#: (NUMBA_CPU_NAME=haswell, 6 x 16 panels) against OpenBLAS's Haswell kernels, 1.21x (its 1x1
#: products at 0.8x BLAS's speed), while Winograd's batches still ran 1.1-3.8x faster than BLAS's.
PANEL_PRODUCTS = None

#: ... for products whose inner dimension (C_in/g, or C_in/g*kh*kw for "im2col") is at most this;
#: longer ones go to BLAS. Measured on 2 Zen 4 cores (2026-12-07): the kernel matched BLAS up to
#: K = 2048 (ResNet's 1x1 layers: 0.97-1.03x its time with the epilogue pass), took 0.85x for
#: VGG's conv1_1 (K = 27) and 1.16x for fc6 at 41x41 by im2col (K = 4608: 92 against 79 ms).
PANEL_MAX_DEPTH = 2048

# ---------------------------------------------------------------- CUDA (atrous.cuda)

#: Which convolution kernel ``atrous.cuda.conv2d`` launches: ``"gemm"``, the double-buffered
#: implicit GEMM with tap-major reduction (``atrous.cuda.gemm_kernel``, shapes below), or
#: ``"classic"``, the first register-blocked kernel (``atrous.cuda.conv_kernel``, shapes
#: ``CUDA_CONV_BLOCKS``), kept so that bench/cuda_tiles.py can compare the two in one run.
CUDA_CONV_KERNEL = "gemm"

#: With the GEMM kernel: take Winograd's F(2x2, 3x3) on the dilated phases
#: (``atrous.cuda.winograd_applies``) for 3x3, stride-1 layers of one group and at least
#: CUDA_WINOGRAD_MIN_CHANNELS output channels: 2.25x fewer multiplications per output, in
#: a GEMM of 16 groups between an input and an output transform. Off until a GPU has
#: measured it against the implicit GEMM (bench/cuda_tiles.py times both beside cuDNN).
CUDA_WINOGRAD = False
CUDA_WINOGRAD_MIN_CHANNELS = 64

#: The classic kernel's block shape by output channels per group: the first row whose
#: minimum the channels reach gives (T, MICRO): T x T threads, each accumulating
#: MICRO x MICRO outputs. Measured on an H100 (bench/RESULTS.md, atrous.cuda.block_shape).
CUDA_CONV_BLOCKS = ((256, (16, 8)), (64, (16, 4)), (0, (16, 2)))

#: The GEMM kernel's tile by output channels per group: the first row whose minimum the
#: channels reach gives (BM, BN, BK, TM, TN): a block of BM output channels x BN pixels
#: walks the reduction in steps of BK (input channels of one tap), with
#: BM*BN / (TM*TN) threads each holding TM x TN outputs in registers
#: (atrous.cuda.gemm_shape). A thread's TM + TN shared-memory reads per step feed
#: TM * TN multiply-adds, so wide tiles of 8 x 8 per thread win; a layer with few output
#: channels (ASPP's 21 classes) takes a narrow BM and gets its parallelism from splitting
#: the reduction instead (CUDA_GEMM_SPLIT_BLOCKS). Milliseconds on an H200
#: (bench/cuda_tiles.py, 2026-12, one run, +-10 % between repeats of one tile):
#:
#: ======================  ========  ========  ========  ========  ========
#: tile                    fc6 65    fc6 41    conv5 65  ASPP 21   (cuDNN float32: 1.68, 0.69, 0.85, 0.63)
#: ======================  ========  ========  ========  ========  ========
#: 128x128x8, 8x8          3.95      1.91      2.77      -
#: 128x128x16, 8x8         3.68      1.76      2.60      -
#: 128x64x8, 8x8           3.70      1.92      2.48      -
#: 96x128x8, 6x8 (*)       3.86      2.50      2.43      -
#: 64x128x8, 8x8           4.03      1.89      2.68      -
#: 32x128x8, 4x8, split 7  -         -         -         1.47-1.63
#: 32x64x8, 4x4, split 16  -         -         -         1.54
#: ======================  ========  ========  ========  ========  ========
#:
#: These times are of the kernel as it was before three changes not yet timed on a GPU: one
#: loop over its tiles, one column of loads per thread, and 16-byte shared-memory reads
#: (126-168 registers against 245-255, and no spills for 128x128x16; ``tools/ptx_check.py``).
#: (*) No longer a valid tile: its 256 threads are neither a multiple nor a divisor of BM = 96.
CUDA_GEMM_TILES = (
    (1024, (128, 128, 16, 8, 8)),
    (256, (128, 64, 8, 8, 8)),
    (64, (64, 128, 8, 8, 8)),
    (0, (32, 128, 8, 4, 8)),
)

#: The GEMM kernel splits the reduction over several blocks (partial sums added by a
#: second kernel) while its grid has fewer blocks than this: about two per
#: multiprocessor of an H100/H200 (132), so that a layer with few output tiles
#: (ASPP's 2048 -> 21 makes 34 tiles of 32 x 128) still fills the GPU.
CUDA_GEMM_SPLIT_BLOCKS = 264

#: ... into at most this many parts, each at least CUDA_GEMM_MIN_SPLIT_STEPS steps of BK long
#: (shorter parts spend more on their prologue, epilogue and partial sums than they gain).
CUDA_GEMM_MAX_SPLITS = 16
CUDA_GEMM_MIN_SPLIT_STEPS = 64

#: Threads per block of the element-wise kernels (add, ReLU).
CUDA_FLAT_THREADS = 1024

#: Blocks per grid dimension at most; grid-stride loops cover larger problems.
CUDA_MAX_GRID = 65535
