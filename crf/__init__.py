"""The fully connected CRF of Kraehenbuehl & Koltun (NIPS 2011) on a permutohedral lattice.

``crf.DenseCRF`` is the native API (the paper's terms); ``crf.compat`` mirrors
pydensecrf's API; ``crf.lattice`` and ``crf.exact`` are the filters underneath.
``crf.memory`` estimates what a CRF needs, and ``crf.reduced`` refines an image too
large for that at a reduced size. ``crf.grid_cache`` keeps the smoothness kernel's
lattice, which depends on the image's size alone, for the next image of that size.
"""
import os

# Numba's OpenMP threads spin for a while after every parallel loop; the BLAS
# threads of a matrix product that follows then fight them for the cores
# (measured on 2 cores: a 97x97 demo net 20x slower, ASPP's 2048->21 branch
# 1.7x slower). Passive waiting hands the cores over at once. A value the
# user set is kept; it takes effect only before Numba's first parallel launch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same the other way round: OpenBLAS's threads spin for 2^28 cycles after a
# product, and the Numba kernels after it (Winograd's transforms, ReLU, pooling)
# wait for the cores (LargeFOV at 513x513 on 2 cores: 1.85-1.99 s, 1.43-1.56 s
# with 2^4). OpenBLAS reads this when it loads: it applies where the package is
# imported before NumPy (the deeplab command, its worker processes).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from crf import heap

# Freed arrays stay in the C library's heap for the next image instead of going back to the
# system and being faulted in anew (crf.heap; unless the environment sets malloc's thresholds).
heap.keep_freed_memory()

from crf import memory, reduced
from crf.densecrf import NORMALIZATIONS, DenseCRF, bilateral_features, gaussian_features
from crf.exact import exact_filter, exact_mean_field
from crf.lattice import Lattice, build
from crf.presets import (PRESETS, Preset, caffe_layer_refine, deeplab_crf, deeplab_refine, deeplab_refine_each,
                         get_preset)
from crf.unary import unary_from_labels, unary_from_logits, unary_from_softmax

__all__ = ["DenseCRF", "NORMALIZATIONS", "Lattice", "PRESETS", "Preset", "bilateral_features",
           "build", "caffe_layer_refine", "deeplab_crf", "deeplab_refine", "deeplab_refine_each", "exact_filter",
           "exact_mean_field", "gaussian_features", "get_preset", "unary_from_labels", "unary_from_logits",
           "unary_from_softmax"]
