"""Keras 3 weight files: `x.weights.h5` (`save_weights`), the `model.weights.h5` inside a `.keras` archive, and
sharded `x.weights.json` + `x_00000.weights.h5`, ... sets.

The layout (reference/keras_formats.md section 6): every saved object writes its own variables as the datasets
`<path>/vars/0`, `<path>/vars/1`, ... (trainable then non-trainable, in creation order); since Keras 3.6 each
`vars` group carries the attribute `name` (the object's name). Children are the other subgroups of `<path>`
(`layers/dense`, `layers/sequential/layers/dense`, `optimizer`, ...). bfloat16 variables are stored as 2-byte
opaque values with the dataset attribute `dtype="bfloat16"`.

This module moves that layout to and from a plain tree of `StateGroup`s; it knows nothing of what a layer is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from ..errors import FormatError, KConvertError, WeightsError
from .atomic import atomic_path, h5_output
from .hdf5_safety import check_dataset_size, check_global_heaps, member

__all__ = ["StateGroup", "read_keras3_weights", "write_keras3_weights", "bfloat16_to_float32",
           "float32_to_bfloat16"]

# A dataset bigger than this is refused before it is read (a corrupt or hostile header, not a model).
MAX_ARRAY_BYTES = 1 << 40
# TF 2.13 wrote `_layer_checkpoint_dependencies` where later versions write `layers`.
_TF213_LAYERS = "_layer_checkpoint_dependencies"


@dataclass
class StateGroup:
    """One saved object: its variables (`vars/0`, `vars/1`, ...), the `name` attribute of its `vars` group and
    its children by path component. `has_vars` tells whether a `vars` group exists (Keras writes one for every
    layer, even without variables); `bfloat16` holds the indices of variables stored as bfloat16."""

    vars: list[np.ndarray] = field(default_factory=list)
    name: str | None = None
    children: dict[str, StateGroup] = field(default_factory=dict)
    has_vars: bool = False
    bfloat16: set[int] = field(default_factory=set)
    _parts: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)  # while reading

    def find(self, path: str) -> StateGroup | None:
        """The group at a `/`-separated path below this one (`""` is this group), or None."""
        node: StateGroup | None = self
        for part in [p for p in path.split("/") if p]:
            nxt = node.children.get(part)
            if nxt is None and part == "layers":
                nxt = node.children.get(_TF213_LAYERS)
            if nxt is None:
                return None
            node = nxt
        return node

    def ensure(self, path: str) -> StateGroup:
        """The group at `path`, created (with its parents) if missing."""
        node = self
        for part in [p for p in path.split("/") if p]:
            node = node.children.setdefault(part, StateGroup())
        return node

    def walk(self, prefix: str = "") -> Iterator[tuple[str, StateGroup]]:
        """(path, group) for this group and every group below it, parents first."""
        yield prefix, self
        for key, child in self.children.items():
            yield from child.walk(f"{prefix}/{key}" if prefix else key)

    def paths(self) -> list[str]:
        """Every dataset path (`layers/dense/vars/0`, ...) in this tree."""
        out = []
        for path, group in self.walk():
            base = f"{path}/vars" if path else "vars"
            out.extend(f"{base}/{i}" for i in range(len(group.vars)))
        return out


# --------------------------------------------------------------------------------------------- bfloat16


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values given as their 16-bit patterns (any 2-byte dtype) to float32, exactly."""
    raw = np.ascontiguousarray(bits).view(np.uint16).astype(np.uint32) << 16
    return raw.view(np.float32)


def float32_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns (uint16), rounding to nearest even as ml_dtypes does; NaN stays NaN."""
    f = np.ascontiguousarray(values, dtype=np.float32)
    u = f.view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f), np.uint16(0x7FC0), rounded).astype(np.uint16)


# --------------------------------------------------------------------------------------------- reading


def _attr_text(value) -> str | None:
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return None if value is None else str(value)


def _read_vars(group, *, file, where: str) -> tuple[dict[int, np.ndarray], set[int]]:
    import h5py

    arrays: dict[int, np.ndarray] = {}
    bf16: set[int] = set()
    for key in group.keys():
        if not key.isdigit():
            raise FormatError(f"{where} holds '{key}'; Keras 3 names variables 0, 1, 2, ...", file=file)
        i, ds = int(key), member(group, key, file=file)
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(f"{where}/{i} is a group, expected a variable dataset", file=file)
        nbytes = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES:
            raise FormatError(f"{where}/{i} declares {nbytes} bytes, more than a model variable can hold",
                              file=file)
        check_dataset_size(ds, file=file, where=f"{where}/{i}")
        try:
            arr = np.asarray(ds[()])
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise FormatError(f"cannot read {where}/{i}: {e}", file=file) from None
        if _attr_text(ds.attrs.get("dtype")) == "bfloat16":
            if arr.dtype.itemsize != 2:
                raise FormatError(f"{where}/{i} is marked bfloat16 but holds {arr.dtype}", file=file)
            arr = bfloat16_to_float32(arr)
            bf16.add(i)
        elif arr.dtype.kind not in "biufc":
            raise FormatError(f"{where}/{i} has non-numeric dtype {arr.dtype}", file=file)
        arrays[i] = arr
    return arrays, bf16


def _read_group(group, *, file, where: str, seen: set | None = None) -> StateGroup:
    """The tree below an HDF5 group; variables are kept by index (`_parts`) until `_finish` checks them.
    A group reached twice (hard or soft links making a cycle or a shared subtree) is refused."""
    import h5py

    seen = set() if seen is None else seen
    if group.id in seen:
        raise FormatError(f"{where or '/'} is reached twice through links (a cycle?); Keras writes a tree",
                          file=file)
    seen.add(group.id)
    node = StateGroup()
    for key in group.keys():
        obj = member(group, key, file=file)
        path = f"{where}/{key}" if where else key
        if not isinstance(obj, h5py.Group):
            raise FormatError(f"{path} is a dataset outside a 'vars' group", file=file)
        if key == "vars":
            node._parts, node.bfloat16 = _read_vars(obj, file=file, where=path)
            node.has_vars = True
            node.name = _attr_text(obj.attrs.get("name"))
        else:
            node.children[key] = _read_group(obj, file=file, where=path, seen=seen)
    return node


def _finish(node: StateGroup, *, file, where: str = "") -> StateGroup:
    parts, node._parts = node._parts, {}
    indices = sorted(parts)
    if indices != list(range(len(indices))):
        raise FormatError(f"{where}/vars has variables {indices}, not 0..{len(indices) - 1}".lstrip("/"), file=file)
    node.vars = [parts[i] for i in indices]
    for key, child in node.children.items():
        _finish(child, file=file, where=f"{where}/{key}")
    return node


def _merge(into: StateGroup, other: StateGroup) -> None:
    if other.has_vars:
        into._parts.update(other._parts)
        into.bfloat16 |= other.bfloat16
        into.has_vars = True
        into.name = other.name if other.name is not None else into.name
    for key, child in other.children.items():
        _merge(into.children.setdefault(key, StateGroup()), child)


def _read_h5(source, file) -> StateGroup:
    import h5py

    if isinstance(source, (str, os.PathLike)):
        check_global_heaps(source)
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError, RuntimeError) as e:
        raise FormatError(f"cannot open the Keras 3 weights (truncated or corrupt HDF5?): {e}", file=file) from None
    try:
        if "layer_names" in f.attrs or "model_weights" in f:
            raise FormatError("this is a legacy Keras HDF5 weights file, not the Keras 3 '.weights.h5' layout",
                              file=file)
        return _read_group(f, file=file, where="")
    except KConvertError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise FormatError(f"cannot read the Keras 3 weights layout (truncated or corrupt?): {e}", file=file) from None
    finally:
        f.close()


def _read_sharded(path: str) -> StateGroup:
    try:
        with open(path, encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"cannot read the sharded weights index: {e}", file=path) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError("a sharded weights index needs a 'weight_map' object", file=path)
    shards: list[str] = []
    for value in weight_map.values():
        for name in value if isinstance(value, list) else [value]:
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                raise FormatError(f"weight_map names the shard {name!r}; shards must be plain file names "
                                  "next to the index", file=path)
            if name not in shards:
                shards.append(name)
    root = StateGroup()
    directory = os.path.dirname(os.path.abspath(path))
    for name in shards:
        shard = os.path.join(directory, name)
        if not os.path.isfile(shard):
            raise FormatError(f"the shard '{name}' listed in weight_map is missing", file=path)
        _merge(root, _read_h5(shard, shard))
    return root


def read_keras3_weights(source: str | os.PathLike | IO[bytes], file: str | None = None) -> StateGroup:
    """Read a Keras 3 weights file (path or binary file object) into a StateGroup tree.

    A path ending in `.json` is read as a sharded set (its `weight_map` names the shard files next to it).
    `file` names the source in error messages. Raises FormatError for anything that is not the layout.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FormatError("no such file", file=path)
        if path.endswith(".json"):
            return _finish(_read_sharded(path), file=path)
        return _finish(_read_h5(path, file or path), file=file or path)
    return _finish(_read_h5(source, file), file=file)


# --------------------------------------------------------------------------------------------- writing


def _write_group(h5group, node: StateGroup, *, file, where: str) -> None:
    if node.has_vars or node.vars:
        vg = h5group.create_group("vars")
        if node.name is not None:
            vg.attrs["name"] = node.name
        for i, value in enumerate(node.vars):
            if hasattr(value, "chunks") and value.shape and i not in node.bfloat16:  # deferred: block by block
                ds = vg.create_dataset(str(i), value.shape, dtype=value.dtype)
                for start, block in value.chunks():
                    ds[start:start + len(block)] = block
                continue
            arr = np.asarray(value.produce() if hasattr(value, "produce") else value)
            if arr.dtype.kind not in "biufc":
                raise WeightsError(f"{where}/vars/{i} has non-numeric dtype {arr.dtype}", file=file)
            if i in node.bfloat16:
                ds = vg.create_dataset(str(i), data=float32_to_bfloat16(arr).view("V2"))
                ds.attrs["dtype"] = "bfloat16"
            else:
                vg.create_dataset(str(i), data=arr)
    for key, child in node.children.items():
        if not key or "/" in key or key in (".", "..", "vars"):
            raise WeightsError(f"'{key}' cannot name a child group of '{where or '/'}'", file=file)
        _write_group(h5group.create_group(key), child, file=file, where=f"{where}/{key}" if where else key)


def write_keras3_weights(target: str | os.PathLike | IO[bytes], root: StateGroup) -> None:
    """Write a StateGroup tree in the Keras 3 `.weights.h5` layout (to a path, atomically, or a file object)."""
    import h5py

    if not isinstance(target, (str, os.PathLike)):
        with h5py.File(target, "w") as f:
            _write_group(f, root, file=None, where="")
        return
    path = os.fspath(target)
    try:
        with atomic_path(path) as tmp:
            with h5_output(tmp) as f:
                _write_group(f, root, file=path, where="")
    except KConvertError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise KConvertError(f"cannot write the Keras 3 weights file: {e}", file=path) from None
