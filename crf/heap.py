"""Freed memory kept for the next image: the C library's heap thresholds (glibc only).

A dense CRF at 500x375 with 21 labels allocates about 90 MB of arrays per image (the
lattices, Q, the build's temporaries) and frees them when the model goes. glibc hands
freed memory at the top of its heap back to the system once more than its *trim
threshold* lies there (by default twice its mmap threshold), and it maps every block
above its *mmap threshold* (128 KB at first, rising towards 32 MB as such blocks are
freed) afresh and unmaps it on free. Either way the next image's arrays land on new
pages, which the kernel faults in and zeroes one by one: on the benchmark's host about
5,000 faults and 10-20 ms of system time per image at 500x375, 4-10 % of a run
(``bench/RESULTS.md``).

:func:`keep_freed_memory` fixes the mmap threshold at 32 MB (glibc's own ceiling for its
moving threshold) and the trim threshold at :data:`TRIM_THRESHOLD`: blocks up to 32 MB
come from the heap, and freed memory up to that amount stays there for the next image.
Larger blocks are still mapped and unmapped as before. The price: the process keeps up
to :data:`TRIM_THRESHOLD` bytes that it no longer uses, until it exits or allocates
them again.

``import crf`` calls it once, as it sets ``OMP_WAIT_POLICY``, and keeps what the user
chose: it does nothing when the environment sets any of glibc's malloc thresholds
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_``, or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``), and nothing on
another C library. To keep glibc's own behaviour, set ``MALLOC_TRIM_THRESHOLD_``
(to 131072, its default, for instance) before Python starts.
"""
import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 256 << 20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

#: What :func:`keep_freed_memory` did: None before it ran, else a short description.
status = None


def user_settings(environ=None):
    """The names of the malloc settings the environment holds (empty if none)."""
    environ = os.environ if environ is None else environ
    names = [name for name in _USER_SETTINGS if name in environ]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return names


def _glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name: not glibc
        return False


def keep_freed_memory(environ=None):
    """Set glibc's mmap and trim thresholds (see the module docstring), unless the user set them.

    Returns
    -------
    str
        What was done, for ``deeplab info``: the thresholds set, or why nothing was.
    """
    global status
    user = user_settings(environ)
    if user:
        status = f"left to the environment ({', '.join(user)})"
    elif not _glibc():
        status = "not glibc: unchanged"
    else:
        try:
            libc = ctypes.CDLL("libc.so.6")
            done = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        except (OSError, AttributeError):
            done = False
        status = (f"mmap threshold {MMAP_THRESHOLD >> 20} MB, trim threshold {TRIM_THRESHOLD >> 20} MB "
                  f"(freed memory kept for the next image)") if done else "mallopt failed: unchanged"
    return status


def release():
    """Hand the freed memory that the heap keeps back to the system now (glibc's ``malloc_trim``).

    Returns True if memory was released, False if there was none to release or this is
    not glibc.
    """
    if not _glibc():
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
