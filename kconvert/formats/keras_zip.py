"""The Keras 3 `.keras` archive: a ZIP (members stored, not compressed, as Keras writes them) holding
`metadata.json`, `config.json` and `model.weights.h5`, and optionally `assets/...`.

Reading never extracts to a path taken from the archive: member names that try to leave the archive (zip-slip:
absolute paths, `..`, drive letters, backslashes) and members of absurd size or compression ratio are refused.
The weights are streamed to a private temporary file before HDF5 reads them, so memory stays near the size of
the weights.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field

from ..errors import FormatError, KConvertError, UnsupportedFormatError
from .atomic import atomic_path
from .keras3_weights import StateGroup, read_keras3_weights, write_keras3_weights

__all__ = ["KerasArchive", "read_keras_zip", "write_keras_zip", "KERAS3_VERSION", "check_member_name"]

KERAS3_VERSION = "3.15.1"  # the Keras 3 release whose archive layout and config dialect kconvert writes
CONFIG, METADATA, WEIGHTS_H5, WEIGHTS_NPZ = "config.json", "metadata.json", "model.weights.h5", "model.weights.npz"

MAX_MEMBERS = 100_000
MAX_JSON_BYTES = 1 << 28  # 256 MiB of configuration is not a model
MAX_MEMBER_BYTES = 1 << 40  # 1 TiB
MAX_RATIO = 1000  # uncompressed / compressed, for members Keras would never compress
_CHUNK = 1 << 20


@dataclass
class KerasArchive:
    """What a `.keras` archive holds, as plain Python values."""

    path: str
    config: dict
    metadata: dict = field(default_factory=dict)
    weights: StateGroup | None = None
    assets: list[str] = field(default_factory=list)

    @property
    def keras_version(self) -> str | None:
        v = self.metadata.get("keras_version")
        return str(v) if v is not None else None


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str, path: str) -> None:
    """Refuse a member name that would leave the archive when extracted (zip-slip)."""
    parts = name.split("/")
    if (not name or "\\" in name or "\x00" in name or name.startswith("/") or _DRIVE.match(name)
            or any(p == ".." for p in parts)):
        raise FormatError(f"refusing the archive member {name!r}: its path leaves the archive (zip-slip)", file=path)


def _check_members(z: zipfile.ZipFile, path: str) -> list[zipfile.ZipInfo]:
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FormatError(f"the archive has {len(infos)} members; a Keras model has a handful", file=path)
    for info in infos:
        check_member_name(info.filename, path)
        if info.file_size > MAX_MEMBER_BYTES:
            raise FormatError(f"member '{info.filename}' claims {info.file_size} bytes; refusing", file=path)
        if (info.compress_type != zipfile.ZIP_STORED and info.file_size > _CHUNK
                and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
            raise FormatError(f"member '{info.filename}' expands {info.file_size // max(info.compress_size, 1)}"
                              "-fold (a zip bomb?); refusing", file=path)
    return infos


def _read_json_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> dict:
    if info.file_size > MAX_JSON_BYTES:
        raise FormatError(f"'{info.filename}' is {info.file_size} bytes, too large for a configuration", file=path)
    with z.open(info) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise FormatError(f"'{info.filename}' is larger than its header says", file=path)
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"'{info.filename}' is not UTF-8 text", file=path) from None
    except json.JSONDecodeError as e:
        raise FormatError(f"'{info.filename}' is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})",
                          file=path) from None
    except RecursionError:
        raise FormatError(f"'{info.filename}' is nested too deeply", file=path) from None
    if not isinstance(obj, dict):
        raise FormatError(f"'{info.filename}' should hold a JSON object, found {type(obj).__name__}", file=path)
    return obj


def _copy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, dest: str, path: str) -> None:
    written = 0
    with z.open(info) as src, open(dest, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > info.file_size:
                raise FormatError(f"member '{info.filename}' is larger than its header says", file=path)
            out.write(chunk)


def read_keras_zip(path: str | os.PathLike, *, load_weights: bool = True) -> KerasArchive:
    """Read a `.keras` archive. Raises FormatError for a damaged or hostile archive, UnsupportedFormatError for
    weights stored as `.npz` (Keras's `weights_format="npz"`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError("no such file" if not os.path.exists(path) else "is not a file", file=path)
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FormatError(f"is not a readable ZIP archive (truncated or corrupt?): {e}", file=path) from None
    try:
        with z:
            infos = {i.filename: i for i in _check_members(z, path)}
            if CONFIG not in infos:
                raise FormatError("the archive has no config.json, so it is not a Keras .keras file", file=path)
            config = _read_json_member(z, infos[CONFIG], path)
            metadata = _read_json_member(z, infos[METADATA], path) if METADATA in infos else {}
            archive = KerasArchive(path=path, config=config, metadata=metadata,
                                   assets=sorted(n for n in infos if n.startswith("assets/")))
            if not load_weights:
                return archive
            if WEIGHTS_H5 in infos:
                with tempfile.TemporaryDirectory(prefix="kconvert-") as tmpdir:
                    tmp = os.path.join(tmpdir, WEIGHTS_H5)  # our own name, never one from the archive
                    _copy_member(z, infos[WEIGHTS_H5], tmp, path)
                    try:
                        archive.weights = read_keras3_weights(tmp)
                    except KConvertError as e:
                        e.file = None
                        raise e.with_context(file=f"{path}:{WEIGHTS_H5}") from None
            elif WEIGHTS_NPZ in infos:
                raise UnsupportedFormatError("the weights are stored as model.weights.npz (weights_format='npz'); "
                                             "re-save the model with the default HDF5 weights", file=path)
            return archive
    except KConvertError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
        raise FormatError(f"cannot read the archive (truncated or corrupt?): {e}", file=path) from None


def write_keras_zip(path: str | os.PathLike, config: dict, weights: StateGroup,
                    keras_version: str = KERAS3_VERSION, date_saved: str | None = None) -> None:
    """Write a `.keras` archive as Keras 3 does (members stored, in the order metadata, config, weights).

    The file is written atomically: on any error an existing file at `path` is left untouched.
    """
    from .keras_text import dump_json

    path = os.fspath(path)
    date_saved = date_saved or datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")
    try:
        config_bytes = dump_json(config).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise FormatError(f"the model config cannot be written as JSON: {e}", file=path) from None
    metadata_bytes = json.dumps({"keras_version": keras_version, "date_saved": date_saved}).encode("utf-8")
    try:
        with tempfile.TemporaryDirectory(prefix="kconvert-") as tmpdir:
            weights_tmp = os.path.join(tmpdir, WEIGHTS_H5)
            write_keras3_weights(weights_tmp, weights)
            with atomic_path(path) as tmp:
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
                    for name, data in ((METADATA, metadata_bytes), (CONFIG, config_bytes)):
                        z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
                    info = zipfile.ZipInfo(WEIGHTS_H5, date_time=(1980, 1, 1, 0, 0, 0))
                    info.file_size = os.path.getsize(weights_tmp)  # lets zipfile choose ZIP64 only when needed
                    with open(weights_tmp, "rb") as src, z.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
    except KConvertError as e:
        raise e.with_context(file=path) from None
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile) as e:
        raise FormatError(f"cannot write the .keras archive: {e}", file=path) from None
