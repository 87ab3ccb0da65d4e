"""Start-up hook for ``tools/gpu_check.sh`` on an interpreter whose numba-cuda predates NumPy 2.5.

numba-cuda 0.30 registers an overload for ``np.row_stack`` when it compiles its first
kernel; NumPy 2.5 removed that alias of ``np.vstack``, so every CUDA compilation fails
with ``AttributeError: module 'numpy' has no attribute 'row_stack'``. gpu_check.sh puts
this folder on PYTHONPATH only when it finds that combination; the package itself never
changes NumPy. Being first on PYTHONPATH, this file hides any sitecustomize of the
system Python for that run (none is needed by the check).
"""
import numpy

if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack
