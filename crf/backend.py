"""Choosing where a kernel runs: ``backend="numpy" | "cpu" | "cuda" | "auto"``.

``"auto"`` means CUDA only when a real GPU answers: ``numba.cuda.is_available()``
is true *and* the CUDA simulator is off (in the simulator ``is_available()``
is true as well, and a simulated kernel is thousands of times slower than the
CPU one). A CUDA device array given to ``"auto"`` always selects ``"cuda"``,
so that a forward pass keeps its activations on the GPU.

The ``atrous`` package has its own copy of these few lines on purpose: ``atrous``
and ``crf`` never import each other, so each can be read and reused alone.
"""

BACKENDS = ("numpy", "cpu", "cuda", "auto")


def is_device_array(a):
    """True for a CUDA device array: anything with ``__cuda_array_interface__``, or a
    Numba device array (``__cuda_ndarray__``), which in the simulator lacks the interface."""
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def cuda_usable():
    """True when a real CUDA GPU is usable (the simulator does not count)."""
    try:
        from numba import config, cuda
    except ImportError:  # numba without its CUDA target
        return False
    if config.ENABLE_CUDASIM:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install: report it as no GPU
        return False


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
