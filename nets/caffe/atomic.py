"""Writing a file atomically: a reader sees the old file or the complete new one, never half.

Every file the project writes (caffemodels, converted ``.npz``, label PNGs, probabilities)
goes through :func:`atomic_write`. It lives here, at the bottom of :mod:`nets`, because the
file formats are the lowest layer that writes; the application's image writers use it too.

A process killed while it writes (SIGKILL, the out-of-memory killer) cannot remove its
temporary file; :func:`remove_orphans` lets the job that ran it clear those afterwards.
"""
import contextlib
import os
import tempfile

_PREFIX = ".tmp-"  # temporary files are ".tmp-" + mkstemp's random letters + "-" + the file's name


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
    fd, tmp = tempfile.mkstemp(prefix=_PREFIX, suffix="-" + os.path.basename(path), dir=folder)
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


def _target_name(name):
    """The file a temporary file of :func:`atomic_write` was to become, or None for other names.

    mkstemp's random part is letters, digits and ``_``: the first ``-`` after the prefix ends it.
    """
    if not name.startswith(_PREFIX):
        return None
    _, dash, target = name[len(_PREFIX):].partition("-")
    return target if dash else None


def remove_orphans(folder, names):
    """Remove what killed writers left in ``folder``: the temporary files of ``names``.

    Call it when every writer of those files has finished (a job's end): a temporary file of
    :func:`atomic_write` outlives its call only when its process was killed mid-write, and
    ``path`` itself is then the old file or absent, never half of one. Other files, and the
    temporary files of other names, are left alone.

    Parameters
    ----------
    folder : str or PathLike
    names : iterable of str
        Base names of the files the job writes in ``folder``.

    Returns
    -------
    list of str
        The paths removed.
    """
    names = set(names)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if _target_name(entry.name) in names and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed
