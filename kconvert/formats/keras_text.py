"""Keras model configurations as text: JSON (`to_json`, the h5 `model_config` attribute) and YAML (`to_yaml`).

Reading never executes code from the file. YAML goes through a `yaml.SafeLoader` (`keras_yaml.py`, imported
only when YAML is read or written) that adds one constructor, for `!!python/tuple` (which PyYAML writes for
every tuple in a Keras config, so plain `safe_load` fails on real Keras YAML); every other `python/*` tag is
rejected. Tuples are returned as
lists, so a model's YAML and its JSON load to the same structure. JSON may contain `NaN`/`Infinity`,
as Python's `json.dumps` writes them.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np

from ..errors import ConfigError, FormatError
from .files import read_bytes

__all__ = ["load_config_text", "dump_json", "dump_yaml", "read_config_file", "sniff_text_format"]

def _json_default(obj: Any):
    """What Keras's `json_utils.get_json_type` does for the plain values found in configs."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def sniff_text_format(text: str) -> str:
    """'json' when the first non-blank character opens a JSON object or array, else 'yaml'."""
    stripped = text.lstrip("\ufeff \t\r\n")
    return "json" if stripped[:1] in ("{", "[") else "yaml"


def _where(file) -> str:
    return f" in {os.fspath(file)}" if file is not None else ""


def load_config_text(text: str | bytes, fmt: str | None = None, file=None) -> dict:
    """Parse a Keras configuration written as JSON or YAML into a dict.

    fmt: 'json', 'yaml', or None to sniff (JSON when the text starts with '{' or '[').
    file: only used in error messages.
    Raises FormatError (with line and column) for malformed text and for unsafe YAML tags,
    ConfigError when the top level is not a mapping.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise FormatError(f"configuration is not UTF-8 text (byte {e.start})", file=file) from None
    if not isinstance(text, str):
        raise TypeError(f"load_config_text expects str or bytes, not {type(text).__name__}")
    text = text.lstrip("\ufeff")
    if fmt is None:
        fmt = sniff_text_format(text)
    fmt = fmt.lower()
    if fmt == "yml":
        fmt = "yaml"
    if fmt not in ("json", "yaml"):
        raise ValueError(f"fmt must be 'json', 'yaml' or None, not {fmt!r}")

    if not text.strip():
        raise FormatError(f"empty {fmt.upper()} configuration", file=file)

    if fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", file=file) from None
        except RecursionError:
            raise FormatError("invalid JSON: nested too deeply", file=file) from None
    else:
        obj = _load_yaml(text, file)

    if fmt == "json" and isinstance(obj, str) and obj.lstrip().startswith("{"):
        # `json.dump(model.to_json(), f)` was a common habit: the file holds the JSON text as a JSON string
        warnings.warn(f"{file or 'config'}: the JSON is encoded twice (a string holding the model's JSON); "
                      "decoding it once more", stacklevel=2)
        return load_config_text(obj, "json", file)
    if not isinstance(obj, dict):
        raise ConfigError(
            f"a Keras configuration must be a {fmt.upper()} mapping at the top level, "
            f"found {type(obj).__name__}",
            file=file,
        )
    return obj


def _load_yaml(text: str, file) -> Any:
    import yaml

    from .keras_yaml import KerasYamlLoader

    loader = None
    try:
        loader = KerasYamlLoader(text)  # its reader refuses control characters already here
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "malformed YAML"
        if mark is not None:
            msg = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        else:
            msg = f"invalid YAML: {problem}"
        raise FormatError(msg, file=file) from None
    except yaml.YAMLError as e:
        raise FormatError(f"invalid YAML: {e}", file=file) from None
    except RecursionError:
        raise FormatError("invalid YAML: nested too deeply", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()


def dump_json(obj: Any, **kw) -> str:
    """`json.dumps` as Keras uses it: tuples become lists, numpy values plain numbers, NaN allowed.

    Keyword arguments go to `json.dumps` (indent, sort_keys, ...).
    """
    kw.setdefault("default", _json_default)
    return json.dumps(obj, **kw)


def dump_yaml(obj: Any) -> str:
    """YAML with the safe dumper (block style, like Keras's `to_yaml`); tuples are written as lists."""
    import yaml

    from .keras_yaml import KerasYamlDumper

    return yaml.dump(obj, Dumper=KerasYamlDumper, default_flow_style=False, allow_unicode=True)


_EXT_FORMAT = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a JSON or YAML configuration file (format from the extension, else sniffed)."""
    path = os.fspath(path)
    data = read_bytes(path, "configuration file")
    if data.startswith(b"\x89HDF\r\n\x1a\n") or data.startswith(b"PK\x03\x04"):
        raise FormatError("is a binary model file (HDF5 or ZIP), not a JSON/YAML configuration", file=path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"is not a UTF-8 text file (undecodable byte at offset {e.start})", file=path) from None
    fmt = _EXT_FORMAT.get(os.path.splitext(path)[1].lower())
    return load_config_text(text, fmt, file=path)
