"""Finding a dataset file where Keras caches its downloads, and reading its arrays without pickle."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import FormatError

ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def search_paths(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Where `load_data` looks, in order: `path` as given, then `datasets/<path>` under `cache_dir` (when given),
    `$KERAS_HOME` (when set) and `~/.keras`, the folders Keras downloads to."""
    path = os.path.expanduser(os.fspath(path))
    bases = [cache_dir, os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras")]
    found = [path]
    for base in bases:
        if base:
            candidate = os.path.join(os.path.expanduser(os.fspath(base)), "datasets", path)
            if candidate not in found:
                found.append(candidate)
    return found


def find(path: str | os.PathLike, name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """The first existing file among `search_paths`; FormatError naming them all (kconvert never downloads)."""
    candidates = search_paths(path, cache_dir)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FormatError(f"{name} dataset not found; looked in: {', '.join(candidates)}. kconvert does not download: "
                      f"fetch {ORIGIN}{name}.npz (or run keras.datasets.{name}.load_data() once) and put it in one "
                      "of those places, or pass its path", file=os.fspath(path))


def read_arrays(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of the .npz archive at `path`, read with allow_pickle=False."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise FormatError("is a single .npy array, not an .npz archive", file=path)
        with data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise FormatError(f"missing arrays {missing} (has {sorted(data.files)})", file=path)
            return {k: data[k] for k in keys}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise FormatError(f"cannot read as an .npz archive: {e}", file=path) from None

def check_samples(path: str, arrays: dict[str, np.ndarray], x_key: str, y_key: str, x_tail: tuple[int, ...]) -> None:
    """FormatError naming the file unless `x_key` is (n, *x_tail) and `y_key` is (n,), both numeric."""
    x, y = arrays[x_key], arrays[y_key]
    for key, a in ((x_key, x), (y_key, y)):
        if a.dtype.kind not in "biuf":
            raise FormatError(f"array '{key}' has dtype {a.dtype}, expected numbers", file=path)
    if x.ndim != 1 + len(x_tail) or tuple(x.shape[1:]) != x_tail:
        raise FormatError(f"array '{x_key}' has shape {x.shape}, expected (samples, {', '.join(map(str, x_tail))})",
                          file=path)
    if y.shape != (len(x),):
        raise FormatError(f"array '{y_key}' has shape {y.shape}, expected ({len(x)},) to match '{x_key}'", file=path)
