"""Atomic output: write to a temporary file next to the target, fsync, then rename over it.

A write that raises midway removes its temporary file and leaves any existing output untouched,
so a failed run never leaves a half-written or clobbered file behind.

    with atomic_write("model.json", "w") as f:      # a file object
        f.write(text)

    with atomic_path("model.h5") as tmp:             # a path, for writers that want a filename (h5py)
        with h5py.File(tmp, "w") as h5:
            ...
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import IO

__all__ = ["atomic_write", "atomic_path"]


def _target(path: str | os.PathLike) -> str:
    # Write through a symlink to the file it points at, as a plain open() would.
    return os.path.realpath(os.fspath(path))


def _create_temp(target: str) -> str:
    """Create an empty, new temporary file in the target's directory; return its path.

    Created with mode 0o666 so the process umask applies, as it would to a plain open().
    """
    directory, base = os.path.split(target)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {target}")


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    # Make the rename itself durable. Not possible on every platform (Windows); best effort.
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _commit(tmp: str, target: str) -> None:
    if os.path.exists(target) and not os.path.isdir(target):
        # Keep the permissions of the file being replaced.
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
    os.replace(tmp, target)
    _fsync_dir(os.path.dirname(target))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield the path of a new empty temporary file next to `path`; on success rename it onto `path`.

    The caller may reopen or truncate the temporary file (h5py.File(tmp, "w")) but must have closed
    it when the block ends. If the block raises, the temporary file is removed, `path` is untouched,
    and the exception propagates.
    """
    target = _target(path)
    tmp = _create_temp(target)
    try:
        yield tmp
        _fsync_file(tmp)
        _commit(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO]:
    """Open a temporary file next to `path` for writing; on success fsync it and rename it onto `path`.

    `mode` is "w"/"wb" (optionally with "+"); text mode defaults to UTF-8. If the block raises, the
    temporary file is removed, `path` is untouched, and the exception propagates.
    """
    if "w" not in mode or any(c in mode for c in "arx"):
        raise ValueError(f"atomic_write supports only write modes ('w', 'wb', 'w+', ...), not {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    target = _target(path)
    tmp = _create_temp(target)
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
