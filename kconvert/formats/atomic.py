"""Atomic output: write to a temporary file next to the target, fsync, then rename over it.

A write that raises midway (a full disk, an exception, Ctrl-C) removes its temporary file and leaves any
existing output untouched, so a failed run never leaves a half-written or clobbered file behind.

    with atomic_write("model.json", "w") as f:      # a file object
        f.write(text)

    with atomic_path("model.h5") as tmp:             # a path, for writers that want a filename
        with h5_output(tmp) as h5:                   # h5py.File, failing cleanly on a full disk
            ...

    with atomic_paths("m.onnx.data", "m.onnx") as (data_tmp, model_tmp):   # several files, renamed in that order
        ...

Temporaries are named `.<name>.kconvert-tmp-<random>` (hidden, in the target's directory, so the rename
stays on one file system). Only a process killed outright (SIGKILL, a SIGTERM it does not handle, power loss)
can leave one behind: the existing output is still intact then, and the leftover is recognisable by that name
(`stale_temporaries`).
A later run does not delete leftovers by itself, because the same name pattern also belongs to a concurrent
writer of the same output (in another process or on another host of a shared file system) that is still
running; remove them with `remove_stale_temporaries(path)` once no writer is running.
Concurrent writers of one output each write their own temporary: the last rename wins, and the file is
always one complete output, never a mix.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import threading
from collections.abc import Iterator
from typing import IO

__all__ = ["atomic_write", "atomic_path", "atomic_paths", "create_temp", "commit", "h5_output", "h5_path",
           "TEMP_MARK", "stale_temporaries", "remove_stale_temporaries"]

TEMP_MARK = ".kconvert-tmp-"  # temporaries are named `.<name>.kconvert-tmp-<random>`
_OWN_TEMPS: set[str] = set()  # temporaries that an open atomic block of this process will publish or remove
_OWN_LOCK = threading.Lock()
_H5_PATHS: dict = {}  # h5py FileID -> path, for files that h5_output opened through a file object


def _target(path: str | os.PathLike) -> str:
    # Write through a symlink to the file it points at, as a plain open() would.
    return os.path.realpath(os.fspath(path))


def temp_name(target: str) -> str:
    """A fresh temporary name for `target` (same directory): `.<name>.kconvert-tmp-<random>`."""
    directory, base = os.path.split(target)
    return os.path.join(directory, f".{base}{TEMP_MARK}{secrets.token_hex(6)}")


def create_temp(target: str | os.PathLike) -> str:
    """Create an empty, new temporary file in the directory of `target` (a resolved path); return its path.

    Created with mode 0o666 so the process umask applies, as it would to a plain open().
    """
    target = os.fspath(target)
    for _ in range(100):
        tmp = temp_name(target)
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


def _rename(tmp: str, target: str) -> None:
    if os.path.exists(target) and not os.path.isdir(target):
        # Keep the permissions of the file being replaced.
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
    os.replace(tmp, target)


def commit(pairs: list[tuple[str, str]]) -> None:
    """Publish written temporaries: fsync each, then rename each onto its target in the order given, then fsync
    the directories. Nothing is renamed unless every temporary was synced."""
    for tmp, _ in pairs:
        _fsync_file(tmp)
    for tmp, target in pairs:
        _rename(tmp, target)
    for directory in dict.fromkeys(os.path.dirname(target) for _, target in pairs):
        _fsync_dir(directory)


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Yield new empty temporary files, one per path; on success rename them onto the paths in the order given.

    For outputs made of several files (an ONNX model and its external data): all are written and synced before
    the first rename, so a failure leaves every existing file untouched; list the file others refer to last.
    If the block raises, every temporary is removed and the exception propagates. A path that is itself a
    temporary of an enclosing block is written directly: the enclosing block publishes or removes it.
    """
    targets = [_target(p) for p in paths]
    temps: list[str] = []
    made: list[str] = []
    try:
        for target in targets:
            with _OWN_LOCK:
                owned = target in _OWN_TEMPS
            if not owned:
                made.append(create_temp(target))
                with _OWN_LOCK:
                    _OWN_TEMPS.add(made[-1])
            temps.append(made[-1] if not owned else target)
        yield list(temps)
        commit([(tmp, target) for tmp, target in zip(temps, targets) if tmp in made])
    except BaseException:
        for tmp in made:
            _remove_quietly(tmp)
        raise
    finally:
        with _OWN_LOCK:
            _OWN_TEMPS.difference_update(made)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield the path of a new empty temporary file next to `path`; on success rename it onto `path`.

    The caller may reopen or truncate the temporary file (h5py.File(tmp, "w")) but must have closed
    it when the block ends. If the block raises, the temporary file is removed, `path` is untouched,
    and the exception propagates.
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


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
    with atomic_paths(path) as (tmp,), open(tmp, mode, encoding=encoding, newline=newline) as f:
        yield f


@contextlib.contextmanager
def h5_output(tmp: str) -> Iterator:
    """A new h5py.File on the temporary `tmp` (from `atomic_path`), written through a Python file object.

    With HDF5's default driver a write that fails (a full disk, a file-size limit) while h5py closes the file
    crashes the process (HDF5 1.14 segfaults in H5Fclose); through a file object the failure is an OSError.
    `h5_path(f)` gives writers that write raw bytes beside h5py the file's path.
    """
    import h5py

    with open(tmp, "r+b") as raw, h5py.File(raw, "w") as f:
        key = f.id
        with _OWN_LOCK:
            _H5_PATHS[key] = tmp
        try:
            yield f
        finally:
            with _OWN_LOCK:
                _H5_PATHS.pop(key, None)


def h5_path(f) -> str:
    """The path of an open h5py.File (one opened by `h5_output` too, whose h5py `filename` is the object's repr)."""
    with _OWN_LOCK:
        return _H5_PATHS.get(f.id, f.filename)


def stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Temporaries of `path` left in its directory by a writer that was killed (or that is still running)."""
    directory, base = os.path.split(_target(path))
    return sorted(glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(base)}{TEMP_MARK}*")))


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporaries `stale_temporaries(path)` lists (call it when no writer of `path` runs); the removed."""
    import shutil

    removed = []
    for tmp in stale_temporaries(path):
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _remove_quietly(tmp)
        removed.append(tmp)
    return removed
