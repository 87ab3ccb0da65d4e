"""Writing a file atomically: a reader sees the old file or the complete new one, never half.

Every file the project writes (caffemodels, converted ``.npz``, label PNGs, probabilities)
goes through :func:`atomic_write`. It lives here, at the bottom of :mod:`nets`, because the
file formats are the lowest layer that writes; the application's image writers use it too.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched,
    so no reader ever sees half a file.

    Parameters
    ----------
    path : str or PathLike
    mode : str
        ``"wb"`` or ``"w"``.

    Yields
    ------
    file object
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            # mkstemp creates the file private (0600); give it the permissions an
            # ordinary open() would, i.e. 0666 less the process umask.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
