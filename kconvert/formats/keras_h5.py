"""Legacy Keras HDF5 files: `model.save('x.h5')` and `model.save_weights('x.h5')` (Keras 1, 2, tf.keras, and
the Keras 3 legacy writer).

The layout (reference/keras_formats.md sections 1 and 2):

    /                       attrs keras_version, backend, model_config (JSON), training_config (JSON)
    /model_weights          attrs layer_names (or layer_names0, layer_names1, ...), backend, keras_version
    /model_weights/<layer>  attr weight_names; dataset group[weight_name] for each (a '/' makes subgroups)
    /optimizer_weights      attr weight_names; one dataset per name
    /model_weights/top_level_model_weights   weights owned by the model itself (TF >= 2.7, Keras 3)

A `save_weights` file has the `model_weights` layout at the file root. This module moves that layout
to and from plain Python structures; it knows nothing of what the layers compute.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FormatError, KConvertError, UnsupportedFormatError, WeightsError
from .atomic import atomic_path, h5_output, h5_path
from .hdf5_safety import check_dataset_size, check_global_heaps, member

__all__ = [
    "HDF5_MAGIC",
    "HDF5_OBJECT_HEADER_LIMIT",
    "KerasH5File",
    "read_keras_h5",
    "write_keras_h5",
    "has_hdf5_signature",
]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Keras splits string-list attributes into chunks no bigger than this (save_attributes_to_hdf5_group).
HDF5_OBJECT_HEADER_LIMIT = 64512
TOP_LEVEL_GROUP = "top_level_model_weights"

WeightList = list[tuple[str, np.ndarray]]


@dataclass
class KerasH5File:
    """Everything a legacy Keras .h5 file holds, as plain Python values."""

    path: str
    kind: str  # 'model' (model.save) or 'weights' (save_weights)
    keras_version: str | None = None  # root attribute
    backend: str | None = None  # root attribute
    model_config: dict | None = None
    training_config: dict | None = None
    weights_keras_version: str | None = None  # attr of the weights group; None means a Keras 1 file
    weights_backend: str | None = None
    layer_names: list[str] = field(default_factory=list)  # file order (= model.layers order)
    layer_weights: dict[str, WeightList] = field(default_factory=dict)  # in each layer's weight_names order
    optimizer_weights: WeightList | None = None
    top_level_model_weights: WeightList | None = None

    @property
    def original_keras_version(self) -> str:
        """The version Keras's loader would infer: the weights group's keras_version, else '1'."""
        return self.weights_keras_version if self.weights_keras_version is not None else "1"


def has_hdf5_signature(path: str | os.PathLike) -> bool:
    """True when the file carries the HDF5 superblock signature (at 0, or after a 512·2^k user block)."""
    try:
        with open(path, "rb") as f:
            offset = 0
            while True:
                f.seek(offset)
                head = f.read(8)
                if len(head) < 8:
                    return False
                if head == HDF5_MAGIC:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- reading


def _decode(value, *, what: str, file, layer=None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not valid UTF-8: {bytes(value)[:60]!r}", file=file, layer=layer) from None
    raise FormatError(f"{what} should be a string, found {type(value).__name__}", file=file, layer=layer)


def _attr_str(attrs, name: str, *, file, layer=None) -> str | None:
    if name not in attrs:
        return None
    value = attrs[name]
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(-1)[0] if value.size else value
    return _decode(value, what=f"attribute '{name}'", file=file, layer=layer)


def _string_list(value, *, what: str, file, layer=None) -> list[str]:
    if isinstance(value, (str, bytes, np.bytes_)):
        return [_decode(value, what=what, file=file, layer=layer)]
    arr = np.asarray(value)
    if arr.size == 0:
        return []  # Keras writes np.asarray([]) -> an empty float64 array for "no names"
    if arr.dtype.kind not in ("S", "U", "O"):
        raise FormatError(f"{what} should hold strings, found dtype {arr.dtype}", file=file, layer=layer)
    return [_decode(v, what=what, file=file, layer=layer) for v in arr.reshape(-1)]


def _read_string_list_attr(attrs, name: str, *, file, layer=None) -> list[str] | None:
    """`attrs[name]`, or the concatenation of `name0`, `name1`, ... (Keras's >64 KB chunking). None if absent."""
    if name in attrs:
        return _string_list(attrs[name], what=f"attribute '{name}'", file=file, layer=layer)
    if f"{name}0" not in attrs:
        return None
    out: list[str] = []
    i = 0
    while f"{name}{i}" in attrs:
        out.extend(_string_list(attrs[f"{name}{i}"], what=f"attribute '{name}{i}'", file=file, layer=layer))
        i += 1
    return out


def _read_json_attr(attrs, name: str, *, file) -> dict | None:
    text = _attr_str(attrs, name, file=file)
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(
            f"root attribute '{name}' is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", file=file
        ) from None
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError(f"root attribute '{name}' should be a JSON object, found {type(obj).__name__}", file=file)
    return obj


def _read_weight_group(group, *, file, layer: str, where: str) -> WeightList:
    import h5py

    names = _read_string_list_attr(group.attrs, "weight_names", file=file, layer=layer) or []
    out: WeightList = []
    for wname in names:
        obj = member(group, wname, file=file, layer=layer)
        if obj is None:
            raise FormatError(
                f"weight '{wname}' is listed in weight_names but {where}/{wname} is missing", file=file, layer=layer
            )
        if not isinstance(obj, h5py.Dataset):
            raise FormatError(f"{where}/{wname} is a group, expected a weight dataset", file=file, layer=layer)
        check_dataset_size(obj, file=file, where=f"{where}/{wname}", layer=layer)
        try:
            arr = np.asarray(obj[()])
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise FormatError(f"cannot read weight '{wname}' ({where}/{wname}): {e}", file=file, layer=layer) from None
        if arr.dtype.kind not in "biuf" and arr.dtype.kind != "c":
            raise FormatError(f"weight '{wname}' has non-numeric dtype {arr.dtype}", file=file, layer=layer)
        out.append((wname, arr))
    return out


def _open_h5(path: str):
    import h5py

    if not os.path.exists(path):
        raise FormatError("no such file", file=path)
    if os.path.isdir(path):
        raise FormatError("is a directory, not an HDF5 file", file=path)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise FormatError(f"cannot read the file: {e.strerror or e}", file=path) from None
    if not has_hdf5_signature(path):
        raise FormatError("is not an HDF5 file (no HDF5 signature)", file=path)
    check_global_heaps(path)
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as e:
        raise FormatError(f"cannot open the HDF5 file (truncated or corrupt?): {e}", file=path) from None


def read_keras_h5(path: str | os.PathLike) -> KerasH5File:
    """Read a legacy Keras .h5 file (whole model or save_weights) into a KerasH5File.

    Raises FormatError for a file that is not HDF5, is truncated or corrupt, or lacks a group or
    dataset the layout requires; UnsupportedFormatError for a Keras 3 `.weights.h5` layout or the
    pre-Keras-1 layout; ConfigError when model_config is not a JSON object.
    """
    path = os.fspath(path)
    f = _open_h5(path)
    try:
        return _read(f, path)
    except KConvertError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        raise FormatError(f"cannot read the Keras HDF5 layout (truncated or corrupt?): {e}", file=path) from None
    finally:
        try:
            f.close()
        except Exception:  # noqa: BLE001 - closing a corrupt file must not mask the real error
            pass


def _read(f, path: str) -> KerasH5File:
    import h5py

    attrs = f.attrs
    if "layer_names" in attrs or "layer_names0" in attrs:
        kind, wg, where = "weights", f, ""
    elif "model_config" in attrs or "model_weights" in f:
        kind = "model"
        if "model_weights" not in f:
            raise FormatError(
                "whole-model Keras file has a model_config but no 'model_weights' group", file=path
            )
        wg = member(f, "model_weights", file=path)
        if not isinstance(wg, h5py.Group):
            raise FormatError("'model_weights' is not a group", file=path)
        where = "/model_weights"
    elif "layers" in f or "vars" in f:
        raise UnsupportedFormatError(
            "this is a Keras 3 '.weights.h5' file (groups layers/ and vars/), not a legacy Keras .h5 file; "
            "read it with the Keras 3 weights reader",
            file=path,
        )
    elif "nb_layers" in attrs:
        raise UnsupportedFormatError("pre-Keras-1 weights layout (nb_layers/layer_k) is not supported", file=path)
    else:
        raise FormatError(
            "HDF5 file is not a Keras model or weights file (no model_config, model_weights or layer_names)",
            file=path,
        )

    out = KerasH5File(path=path, kind=kind)
    out.keras_version = _attr_str(attrs, "keras_version", file=path)
    out.backend = _attr_str(attrs, "backend", file=path)
    out.model_config = _read_json_attr(attrs, "model_config", file=path)
    out.training_config = _read_json_attr(attrs, "training_config", file=path)
    out.weights_keras_version = _attr_str(wg.attrs, "keras_version", file=path)
    out.weights_backend = _attr_str(wg.attrs, "backend", file=path)

    layer_names = _read_string_list_attr(wg.attrs, "layer_names", file=path)
    if layer_names is None:
        raise FormatError(f"the weights group '{where or '/'}' has no 'layer_names' attribute", file=path)
    out.layer_names = layer_names
    for lname in layer_names:
        g = member(wg, lname, file=path, layer=lname)
        if g is None:
            raise FormatError(f"layer '{lname}' is listed in layer_names but {where}/{lname} is missing",
                              file=path, layer=lname)
        if not isinstance(g, h5py.Group):
            raise FormatError(f"{where}/{lname} is a dataset, expected a layer group", file=path, layer=lname)
        out.layer_weights[lname] = _read_weight_group(g, file=path, layer=lname, where=f"{where}/{lname}")

    if TOP_LEVEL_GROUP in wg and TOP_LEVEL_GROUP not in out.layer_weights:
        g = member(wg, TOP_LEVEL_GROUP, file=path, layer=TOP_LEVEL_GROUP)
        if isinstance(g, h5py.Group):
            out.top_level_model_weights = _read_weight_group(
                g, file=path, layer=TOP_LEVEL_GROUP, where=f"{where}/{TOP_LEVEL_GROUP}"
            )

    if "optimizer_weights" in f:
        g = member(f, "optimizer_weights", file=path)
        if not isinstance(g, h5py.Group):
            raise FormatError("'optimizer_weights' is not a group", file=path)
        out.optimizer_weights = _read_weight_group(g, file=path, layer=None, where="/optimizer_weights")
    return out


# --------------------------------------------------------------------------------------------- writing


def _save_string_list_attr(group, name: str, data: list[bytes]) -> None:
    """Keras's `save_attributes_to_hdf5_group`: one attribute, or `name0`, `name1`, ... S-array chunks.

    The caller has checked that no single item exceeds HDF5_OBJECT_HEADER_LIMIT.
    """
    data_npy = np.asarray(data)
    num_chunks = 1
    chunked = np.array_split(data_npy, num_chunks)
    while any(x.nbytes > HDF5_OBJECT_HEADER_LIMIT for x in chunked):
        num_chunks += 1
        chunked = np.array_split(data_npy, num_chunks)
    if num_chunks > 1:
        for i, chunk in enumerate(chunked):
            group.attrs[f"{name}{i}"] = chunk
    else:
        # As Keras: the list itself (h5py writes a variable-length ASCII array; [] -> empty float64 array).
        group.attrs[name] = data


def _check_name(name, *, what: str, file, layer=None) -> bytes:
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{what} {name!r} is not UTF-8", file=file, layer=layer) from None
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name or name in (".", "/") or name.startswith("/") or name.endswith("/") or "//" in name:
        raise WeightsError(f"{what} {name!r} cannot be used as an HDF5 path", file=file, layer=layer)
    encoded = name.encode("utf-8")
    if len(encoded) > HDF5_OBJECT_HEADER_LIMIT:
        raise WeightsError(
            f"{what} '{name[:40]}...' is longer than {HDF5_OBJECT_HEADER_LIMIT} bytes, the most an HDF5 "
            "attribute can hold",
            file=file,
            layer=layer,
        )
    return encoded


def _normalize_weights(weights, *, file, layer) -> list[tuple[bytes, np.ndarray]]:
    out: list[tuple[bytes, np.ndarray]] = []
    seen: set[bytes] = set()
    for item in weights or []:
        try:
            wname, value = item
        except (TypeError, ValueError):
            raise TypeError(f"the weights of '{layer}' must be (name, array) pairs") from None
        bname = _check_name(wname, what="weight name", file=file, layer=layer)
        if bname in seen:
            raise WeightsError(f"duplicate weight name '{bname.decode()}'", file=file, layer=layer)
        seen.add(bname)
        arr = value if hasattr(value, "produce") else np.asarray(value)  # a deferred array: produced when written
        if np.dtype(arr.dtype).kind not in "biufc":
            raise WeightsError(f"weight '{bname.decode()}' has non-numeric dtype {arr.dtype}", file=file, layer=layer)
        out.append((bname, arr))
    return out


def _normalize_layers(layer_weights, *, file) -> list[tuple[bytes, list[tuple[bytes, np.ndarray]]]]:
    out = []
    seen: set[bytes] = set()
    for entry in layer_weights:
        try:
            lname, weights = entry
        except (TypeError, ValueError):
            raise TypeError("layer_weights must be a list of (layer_name, [(weight_name, array), ...])") from None
        bname = _check_name(lname, what="layer name", file=file)
        layer = bname.decode()
        if bname in seen:
            raise WeightsError("duplicate layer name", file=file, layer=layer)
        if layer == TOP_LEVEL_GROUP:
            raise WeightsError(f"'{TOP_LEVEL_GROUP}' is reserved and cannot be a layer name", file=file)
        seen.add(bname)
        out.append((bname, _normalize_weights(weights, file=file, layer=layer)))
    return out


def _write_weight_group(g, weights: list[tuple[bytes, np.ndarray]]) -> None:
    """tf_keras `save_subset_weights_to_hdf5_group`."""
    _save_string_list_attr(g, "weight_names", [n for n, _ in weights])
    for bname, arr in weights:
        if hasattr(arr, "chunks") and arr.shape:  # a deferred array: written as it is produced, block by block
            _stream_dataset(g, bname, arr)
            continue
        if hasattr(arr, "produce"):
            arr = arr.produce()
        dset = g.create_dataset(bname.decode("utf-8"), arr.shape, dtype=arr.dtype)
        if not arr.shape:
            dset[()] = arr
        else:
            dset[:] = arr


def _stream_dataset(g, bname: bytes, arr) -> None:
    """A contiguous dataset whose space HDF5 allocates at once (no fill), written block by block with `pwrite` at
    its file offset: the bytes go straight to the file (the next block is computed while one is written, as the
    GIL is released), the layout is the one `create_dataset` makes."""
    import h5py

    dtype = np.dtype(arr.dtype).newbyteorder("<")
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
    lcpl.set_create_intermediate_group(True)  # 'dense/kernel:0' makes the group 'dense', as create_dataset does
    dsid = h5py.h5d.create(g.id, bname, h5py.h5t.py_create(dtype), h5py.h5s.create_simple(tuple(arr.shape)),
                           dcpl=dcpl, lcpl=lcpl)
    offset = dsid.get_offset()
    row = dtype.itemsize * int(np.prod(arr.shape[1:]))
    fd = os.open(h5_path(g.file), os.O_WRONLY)
    try:
        for start, block in arr.chunks():
            data = memoryview(np.ascontiguousarray(block, dtype=dtype)).cast("B")
            written, at = 0, offset + start * row
            while written < len(data):
                written += os.pwrite(fd, data[written:], at + written)
    finally:
        os.close(fd)


def _write_weights_group(wg, layers, top_level, keras_version: str, backend: str) -> None:
    """tf_keras `save_weights_to_hdf5_group`."""
    _save_string_list_attr(wg, "layer_names", [n for n, _ in layers])
    wg.attrs["backend"] = backend.encode("utf-8")
    wg.attrs["keras_version"] = keras_version.encode("utf-8")
    # Keras creates the groups sorted by layer name ("to ensure group names are strictly growing").
    for bname, weights in sorted(layers, key=lambda t: t[0]):
        _write_weight_group(wg.create_group(bname.decode("utf-8")), weights)
    _write_weight_group(wg.create_group(TOP_LEVEL_GROUP), top_level)


def write_keras_h5(
    path: str | os.PathLike,
    *,
    layer_weights: list[tuple[str, list[tuple[str, np.ndarray]]]],
    model_config: dict | None = None,
    training_config: dict | None = None,
    optimizer_weights: list[tuple[str, np.ndarray]] | None = None,
    keras_version: str = "2.21.0",
    backend: str = "tensorflow",
    top_level_model_weights: list[tuple[str, np.ndarray]] | None = None,
) -> None:
    """Write the layout tf_keras 2.x writes: `model.save('x.h5')` when model_config is given,
    `model.save_weights('x.h5')` otherwise.

    layer_weights: (layer_name, [(weight_name, array), ...]) in `model.layers` order, including layers
    without weights, each layer's weights in Keras's saved order (trainable, then non-trainable).
    Weight names are Keras variable names ('dense/kernel:0'); a '/' makes subgroups.
    An array may also be a deferred one (an object with shape, dtype, `produce()` and `chunks()`, like a deferred
    kconvert Weight): it is produced block by block as its dataset is written and dropped after, so a converted
    model streams to the file without being held in memory.
    top_level_model_weights: weights owned by the model itself (written empty when None, as tf_keras does).
    The file is written atomically: on any error an existing file at `path` is left untouched.
    Raises WeightsError for bad names or non-numeric arrays, ConfigError for a config that is not
    JSON-serialisable, KConvertError when the file cannot be written.
    """
    from .keras_text import dump_json

    path = os.fspath(path)
    if model_config is None and (training_config is not None or optimizer_weights):
        raise ValueError("training_config and optimizer_weights need a model_config (a whole-model file)")
    if model_config is not None and not isinstance(model_config, dict):
        raise TypeError("model_config must be a dict")

    # Validate everything before touching the disk.
    layers = _normalize_layers(layer_weights, file=path)
    top_level = _normalize_weights(top_level_model_weights, file=path, layer=TOP_LEVEL_GROUP)
    optimizer = _normalize_weights(optimizer_weights, file=path, layer=None)
    keras_version, backend = str(keras_version), str(backend)
    try:
        config_bytes = dump_json(model_config).encode("utf-8") if model_config is not None else None
        training_bytes = dump_json(training_config).encode("utf-8") if training_config is not None else None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"configuration cannot be written as JSON: {e}", file=path) from None

    try:
        with atomic_path(path) as tmp:
            with h5_output(tmp) as f:
                if config_bytes is None:
                    _write_weights_group(f, layers, top_level, keras_version, backend)
                else:
                    # tf_keras (saving_utils.model_metadata): versions as str, configs as JSON bytes.
                    f.attrs["keras_version"] = keras_version
                    f.attrs["backend"] = backend
                    f.attrs["model_config"] = config_bytes
                    if training_bytes is not None:
                        f.attrs["training_config"] = training_bytes
                    _write_weights_group(f.create_group("model_weights"), layers, top_level, keras_version, backend)
                    if optimizer:
                        _write_weight_group(f.create_group("optimizer_weights"), optimizer)
    except KConvertError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise KConvertError(f"cannot write the Keras HDF5 file: {e}", file=path) from None
