"""Choosing where a kernel runs: ``backend="numpy" | "cpu" | "cuda" | "auto"``.

``"auto"`` means CUDA only when a real GPU answers: ``numba.cuda.is_available()``
is true, the CUDA simulator is off (in the simulator ``is_available()`` is true
as well, and a simulated kernel is thousands of times slower than the CPU one),
and a one-line kernel compiles and runs (checked once per process; see
:func:`cuda_usable`). A CUDA device array given to ``"auto"`` always selects
``"cuda"``, so that a forward pass keeps its activations on the GPU. Where the
CUDA driver library is missing, ``"auto"`` knows it in milliseconds, without
importing ``numba.cuda`` (:func:`_driver_library_found`).

The ``crf`` package has its own copy of these few lines on purpose: ``atrous``
and ``crf`` never import each other, so each can be read and reused alone.
"""

import os
import sys

BACKENDS = ("numpy", "cpu", "cuda", "auto")


def is_device_array(a):
    """True for a CUDA device array: anything with ``__cuda_array_interface__``, or a
    Numba device array (``__cuda_ndarray__``), which in the simulator lacks the interface."""
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def cuda_usable():
    """True when a real CUDA GPU is usable (the simulator does not count).

    Usable means that a GPU answers *and* that a one-line kernel compiles and runs on
    it, checked once per process: a driver can be present while Numba's CUDA target
    cannot compile (numba-cuda 0.30 with NumPy 2.5 fails on the removed
    ``np.row_stack``). Then ``"auto"`` falls back to the CPU with a warning that
    gives the reason, and :func:`cuda_problem` returns it.
    """
    try:
        from numba import config
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    if config.ENABLE_CUDASIM:
        return False
    if _probe_result is None:
        _probe()
    return _probe_result[0]


def shared_alignment(requested):
    """``requested``, the alignment in bytes for a kernel's shared array, or None under the CUDA
    simulator, which refuses aligned shared arrays (it runs kernels as Python, where alignment
    means nothing)."""
    from numba import config
    return None if config.ENABLE_CUDASIM else requested


def cuda_problem():
    """Why :func:`cuda_usable` is false (``""`` when it is true or was not asked)."""
    return "" if _probe_result is None else _probe_result[1]


_probe_result = None  # (usable, reason), set once by _probe


def _driver_library_found():
    """Whether the CUDA driver library loads, looked for where Numba's CUDA target looks.

    First by name on the loader's search path, then in /usr/lib and /usr/lib64:
    ``libcuda.so`` and ``libcuda.so.1`` (``nvcuda.dll`` in ``\\windows\\system32`` on
    Windows, ``libcuda.dylib`` in /usr/local/cuda/lib on macOS). It takes a few
    milliseconds; importing ``numba.cuda`` to ask ``is_available()`` takes 0.3-0.4 s,
    which every process on a machine without a GPU would pay for ``"auto"``. With
    ``NUMBA_CUDA_DRIVER`` set the answer is left to Numba.
    """
    if os.environ.get("NUMBA_CUDA_DRIVER"):
        return True
    import ctypes
    if sys.platform == "win32":
        loader, folders, names = ctypes.WinDLL, ["\\windows\\system32"], ["nvcuda.dll"]
    elif sys.platform == "darwin":
        loader, folders, names = ctypes.CDLL, ["/usr/local/cuda/lib"], ["libcuda.dylib"]
    else:
        loader, folders, names = ctypes.CDLL, ["/usr/lib", "/usr/lib64"], ["libcuda.so", "libcuda.so.1"]
    for path in names + [os.path.join(folder, name) for folder in folders for name in names]:
        try:
            loader(path)
            return True
        except OSError:
            continue
    return False


def _probe():
    global _probe_result
    from numba import config
    if not config.ENABLE_CUDASIM and not _driver_library_found():  # no need to import numba.cuda to hear it
        _probe_result = (False, "no CUDA driver or GPU found")
        return
    try:
        from numba import cuda
        if not cuda.is_available():
            _probe_result = (False, "no CUDA driver or GPU found")
            return
    except Exception as exc:  # numba without its CUDA target, or a broken driver install
        _probe_result = (False, f"CUDA unusable: {type(exc).__name__}: {exc}")
        return
    try:
        import numpy as np

        @cuda.jit
        def _write_one(out):
            out[0] = 1

        out = cuda.to_device(np.zeros(1, np.int32))
        _write_one[1, 1](out)
        if out.copy_to_host()[0] != 1:
            raise RuntimeError("the kernel ran but did not write its output")
    except Exception as exc:
        import warnings
        reason = f"a GPU was found but a test kernel failed: {type(exc).__name__}: {exc}"
        warnings.warn(f"{reason}; backend='auto' uses the CPU", RuntimeWarning, stacklevel=4)
        _probe_result = (False, reason)
        return
    _probe_result = (True, "")


def resolve_backend(backend, *arrays):
    """Turn a ``backend=`` argument into one of ``"numpy"``, ``"cpu"``, ``"cuda"``.

    Parameters
    ----------
    backend : str
        One of ``BACKENDS``.
    *arrays
        The kernel's inputs; a CUDA device array among them makes ``"auto"``
        choose ``"cuda"``.

    Raises
    ------
    ValueError
        For an unknown backend name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if any(is_device_array(a) for a in arrays):
        return "cuda"
    return "cuda" if cuda_usable() else "cpu"
