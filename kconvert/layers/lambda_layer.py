"""The Lambda layer: a Python function as a layer, read from tf_keras / Keras 2 and Keras 3 configs.

A config stores the function (and a callable `output_shape` or `mask`) in one of these forms:

- bytecode: tf_keras `function_type: 'lambda'` with `[base64 marshal code, defaults, closure]`, Keras 3
  `{'class_name': '__lambda__', 'config': {'code', 'defaults', 'closure'}}`;
- a name: tf_keras `function_type: 'function'` (+ `module`), Keras 3 `{'class_name': 'function', ...}`;
- raw data (`output_shape_type: 'raw'`): an output shape without the batch axis.

Bytecode is unmarshalled only when the caller passed `safe_mode=False`, and only if it is valid bytecode of
this Python version (marshal is version-specific). A function supplied in `custom_objects` under the layer's
name (`{'my_lambda': fn}`, or `{'my_lambda': {'function': fn, 'mask': m}}`) replaces the stored one, in safe
mode too and for files written by any Python version. Named functions and the globals a function refers to
(`K`, `tf`, constants) come from the custom objects; `K` and `backend` default to `kconvert.backend`, `np`
to numpy. The function runs on numpy arrays.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import copy
import dis
import inspect
import marshal
import sys
import types
from typing import Any

import numpy as np

from .. import backend
from ..custom_objects import current_custom_objects
from ..errors import ConfigError, KConvertError, UnsafeError
from .base import Layer, current_safe_mode, is_shape_list, register_layer

# (value key, type key, module key) of the three function-like fields, in tf_keras's config order
_FIELDS = (("function", "function_type", "module"),
           ("output_shape", "output_shape_type", "output_shape_module"),
           ("mask", "mask_type", "mask_module"))
_SOURCE_KEYS = {k for field in _FIELDS for k in field} | {"arguments"}
_DEFAULT_GLOBALS = {"K": backend, "backend": backend, "np": np, "numpy": np}
# sizes a dummy batch gives unknown dimensions (two runs: a dimension that follows them is unknown)
_DUMMY_BATCH = (2, 3)
_DUMMY_DIM = (4, 6)


@register_layer()
class Lambda(Layer):
    """Wraps a function of the input array(s) (and its `arguments`) as a layer."""

    def __init__(self, function, output_shape=None, mask=None, arguments: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise ConfigError(f"Lambda needs a callable function, got {type(function).__name__}", layer=self.name)
        self.function = function
        self.arguments = dict(arguments or {})
        self.mask = mask
        self.supports_masking = mask is not None
        self._output_shape = output_shape
        params = _arg_names(function)
        self._fn_expects_mask = "mask" in params
        self._fn_expects_training = "training" in params
        self._source: dict | None = None  # the function fields as read from a config, written back verbatim
        self._inferred_dtype: str | None = None

    # ------------------------------------------------------------------ computing
    def call(self, inputs, mask=None, training=None):
        kwargs = dict(self.arguments)
        if self._fn_expects_mask:
            kwargs["mask"] = mask
        if self._fn_expects_training:
            kwargs["training"] = training
        # copies: TensorFlow tensors are immutable, so `x -= ...` in a Keras function never touches its input
        inputs = [np.array(a) for a in inputs] if isinstance(inputs, (list, tuple)) else np.array(inputs)
        try:
            out = self.function(inputs, **kwargs)
        except KConvertError:
            raise
        except NameError as e:
            raise ConfigError(f"the Lambda's function uses the name '{e.name}', which is not defined; pass it in "
                              f"custom_objects={{'{e.name}': ...}}, or supply the whole function under the layer's "
                              f"name: custom_objects={{'{self.name}': fn}}", layer=self.name) from e
        except Exception as e:  # the function is the user's: whatever it raises is a problem of the model file
            if isinstance(e, AttributeError) and getattr(e, "obj", None) is backend:
                what = f"it calls K.{e.name}, which kconvert.backend does not provide"
            else:
                what = f"{type(e).__name__}: {e}"
            raise ConfigError(f"the Lambda's function failed on numpy arrays ({what}); kconvert runs it on numpy "
                              f"through kconvert.backend, so supply a numpy version under the layer's name: "
                              f"custom_objects={{'{self.name}': fn}}", layer=self.name) from e
        if isinstance(out, (list, tuple)):
            return [self._as_output(o) for o in out]
        return self._as_output(out)

    def _as_output(self, value) -> np.ndarray:
        # numpy promotes to float64 where TensorFlow keeps the layer's float type (e.g. x * a list of floats)
        value = np.asarray(value)
        if value.dtype.kind == "f" and np.dtype(self.dtype).kind == "f" and value.dtype != self.dtype:
            return value.astype(self.dtype)
        return value

    def compute_output_shape(self, input_shape):
        spec = self._output_shape
        if spec is None:
            return self._infer_output_shape(input_shape)
        if callable(spec):
            return _as_shape(spec(input_shape))
        first = input_shape[0] if is_shape_list(input_shape) else input_shape
        batch = first[0] if len(first) else None
        if is_shape_list(spec):
            return [(batch, *s) for s in spec]
        return (batch, *spec)

    def _infer_output_shape(self, input_shape):
        """Run the function on two dummy batches; dimensions that follow the unknown ones become None."""
        shapes = input_shape if is_shape_list(input_shape) else [input_shape]
        runs, multi = [], False
        for batch, dim in zip(_DUMMY_BATCH, _DUMMY_DIM):
            arrays = [np.zeros([(batch if i == 0 else dim) if d is None else d for i, d in enumerate(s)],
                               self.dtype) for s in shapes]
            with np.errstate(all="ignore"):
                out = self.call(arrays if is_shape_list(input_shape) else arrays[0])
            multi = isinstance(out, list)
            runs.append(out if multi else [out])
        merged = []
        for a, b in zip(*runs):
            if a.ndim != b.ndim:
                raise ValueError("the Lambda's output rank depends on its input size; give it an output_shape")
            merged.append(tuple(int(x) if x == y else None for x, y in zip(a.shape, b.shape)))
        self._inferred_dtype = runs[0][0].dtype.name if runs[0] else None
        return merged if multi else merged[0]

    def compute_output_dtype(self, input_dtypes):
        kind = np.dtype(self._inferred_dtype).kind if self._inferred_dtype else "f"
        return self.dtype if kind == "f" else self._inferred_dtype

    def compute_mask(self, inputs, mask=None):
        if callable(self.mask):
            return self.mask(inputs, mask)
        return self.mask

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        config = super().get_config()
        if self._source is not None:
            config.update(copy.deepcopy(self._source))
            return config
        for (key, type_key, module_key), value in zip(_FIELDS, (self.function, self._output_shape, self.mask)):
            if key == "mask" and value is None:
                continue
            config[key], config[type_key], config[module_key] = _dump_function(value)
        config["arguments"] = {k: _dump_argument(v) for k, v in self.arguments.items()}
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Lambda:
        config = dict(config)
        name = config.get("name")
        if "function" not in config:
            raise ConfigError("a Lambda config needs a 'function'", layer=name)
        source = {k: config.pop(k) for k in list(config) if k in _SOURCE_KEYS}
        objects = current_custom_objects(custom_objects)
        given = objects.get(name) if name else None
        given = given if isinstance(given, dict) else {"function": given} if callable(given) else {}
        resolved: dict[str, Any] = {}
        for key, type_key, module_key in _FIELDS:
            if key in given or key not in source:
                resolved[key] = given.get(key)
                continue
            try:
                resolved[key] = _resolve(source[key], source.get(type_key), source.get(module_key), key, name,
                                         objects)
            except UnsafeError:
                if key == "output_shape" and given:  # the function came by name: infer its output shape
                    resolved[key] = None
                    continue
                raise
        arguments = {k: _load_argument(v) for k, v in (source.get("arguments") or {}).items()}
        layer = cls(resolved["function"], resolved["output_shape"], resolved["mask"], arguments, **config)
        layer._source = source
        return layer

    from_config_with_objects = from_config

    def keras3_function_config(self) -> dict:
        """The function fields as Keras 3 writes them: Python functions as `__lambda__` bytecode of this Python
        (Keras 3 loads them with safe_mode=False), a raw output shape as a list, and the `arguments`.

        Raises ConfigError naming the layer when a function is not a Python function (a callable object, a
        builtin), whose code Keras 3 could not store.
        """
        config: dict[str, Any] = {"function": _keras3_function(self.function, "function", self.name)}
        spec = self._output_shape
        if spec is not None:
            config["output_shape"] = (_keras3_function(spec, "output_shape", self.name) if callable(spec)
                                      else _plain_shape(spec))
        if self.mask is not None:
            config["mask"] = _keras3_function(self.mask, "mask", self.name) if callable(self.mask) else self.mask
        config["arguments"] = {k: _dump_argument(v) for k, v in self.arguments.items()}
        return config


# ---------------------------------------------------------------------------------------------- reading


def _resolve(value, type_: str | None, module: str | None, what: str, layer: str | None, objects: dict):
    """The callable (or raw value) a function field of a config stands for."""
    if isinstance(value, dict) and "class_name" in value:  # Keras 3 serialized object
        kind, inner = value["class_name"], value.get("config")
        if kind == "__lambda__" and isinstance(inner, dict):
            code, defaults, closure = inner["value"] if "value" in inner else (
                inner.get("code"), inner.get("defaults"), inner.get("closure"))
            if isinstance(code, (list, tuple)):  # the dump as one list (how kconvert writes defaults, below)
                code, defaults, closure = (list(code) + [None, None])[:3]
            return _load_code(code, defaults, closure, what, layer, objects)
        if kind == "function":
            return _named(value.get("registered_name") or inner, value.get("module"), what, layer, objects)
        raise ConfigError(f"cannot read the Lambda's {what}: unsupported object '{kind}'", layer=layer)
    if type_ == "lambda":
        code, defaults, closure = (list(value) + [None, None])[:3] if isinstance(value, (list, tuple)) else (
            value, None, None)
        return _load_code(code, defaults, closure, what, layer, objects)
    if type_ == "function":
        return _named(value, module, what, layer, objects)
    if type_ not in (None, "raw"):
        raise ConfigError(f"unknown {what} type '{type_}' (expected 'lambda', 'function' or 'raw')", layer=layer)
    if what == "function":
        raise ConfigError(f"cannot read the Lambda's function from {str(value)[:60]!r}", layer=layer)
    return value


def _named(name, module: str | None, what: str, layer: str | None, objects: dict):
    fn = objects.get(name) if isinstance(name, str) else None
    if fn is None:
        origin = f" from module '{module}'" if module else ""
        raise ConfigError(f"the Lambda's {what} is the function '{name}'{origin}, which kconvert does not know; "
                          f"pass it as custom_objects={{'{name}': fn}}", layer=layer)
    return fn


def _unsafe_message(what: str, layer: str | None) -> str:
    return (f"the Lambda's {what} is Python bytecode stored in the file, and running it would execute code from "
            f"the file. If you trust the file, load it with safe_mode=False (bytecode only loads in the Python "
            f"version that wrote it). Or supply the function yourself under the layer's name: "
            f"custom_objects={{'{layer}': fn}}, which works in safe mode and for files from any Python version "
            f"(a dict {{'function': fn, 'output_shape': ..., 'mask': ...}} there supplies the other fields too).")


def _load_code(code, defaults, closure, what: str, layer: str | None, objects: dict) -> types.FunctionType:
    """A function from marshalled bytecode (tf_keras's `func_load`), with the custom objects as globals."""
    if current_safe_mode():
        raise UnsafeError(_unsafe_message(what, layer), layer=layer)
    fn_code = _unmarshal(code, what, layer)
    cells = tuple(types.CellType(v) for v in closure) if closure is not None else None
    globs = {"__builtins__": builtins, **_DEFAULT_GLOBALS, **objects}
    try:
        return types.FunctionType(fn_code, globs, fn_code.co_name,
                                  tuple(defaults) if defaults is not None else None, cells)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the Lambda's {what} cannot be rebuilt from the stored bytecode: {e}",
                          layer=layer) from e


def _unmarshal(code, what: str, layer: str | None) -> types.CodeType:
    try:
        if not isinstance(code, str):
            raise ValueError(f"the code is a {type(code).__name__}, not a string")
        try:
            raw = binascii.a2b_base64(code.encode("ascii"))
        except (UnicodeEncodeError, binascii.Error):
            raw = code.encode("raw_unicode_escape")  # Keras 1 stored the marshal bytes as a string
        fn_code = marshal.loads(raw)
        if not isinstance(fn_code, types.CodeType):
            raise ValueError(f"the data is a {type(fn_code).__name__}, not a code object")
        check_bytecode(fn_code)
    except (ValueError, EOFError, TypeError, IndexError, KeyError) as e:
        raise ConfigError(
            f"the Lambda's {what} bytecode cannot be loaded ({e}): it was written by a different Python version "
            f"than this one ({sys.version.split()[0]}), or it is corrupted. Marshalled bytecode only loads in the "
            f"Python version that wrote it; supply the function yourself under the layer's name instead: "
            f"custom_objects={{'{layer}': fn}}", layer=layer) from e
    return fn_code


_CACHE_ENTRIES = getattr(dis, "_inline_cache_entries", None)  # 3.11+: list by opcode (3.13: dict by name)


def check_bytecode(code: types.CodeType) -> None:
    """Raise ValueError unless `code` and the code objects inside it are well-formed for this interpreter.

    Code objects of another Python version often unmarshal (3.11 to 3.13 share the layout) but carry other
    opcodes and inline-cache layouts; running them could crash the interpreter, so they are refused here.
    """
    raw = code.co_code
    if len(raw) % 2:
        raise ValueError("bytecode of odd length")
    i = 0
    while i < len(raw):
        op = raw[i]
        name = dis.opname[op]
        if name.startswith("<") or (name == "CACHE" and _CACHE_ENTRIES is not None):
            raise ValueError(f"opcode {op} is not an instruction of this Python")
        if isinstance(_CACHE_ENTRIES, dict):
            n = _CACHE_ENTRIES.get(name, 0)
        else:  # a list by opcode; None before 3.11 (no caches) or where dis no longer tells
            n = _CACHE_ENTRIES[op] if _CACHE_ENTRIES else 0
        caches = raw[i + 2: i + 2 + 2 * n]
        if len(caches) != 2 * n or any(caches):
            raise ValueError(f"the inline caches of {name} do not match this Python")
        i += 2 * (n + 1)
    for _ in dis.get_instructions(code):  # resolves every argument: constants, names, jump targets
        pass
    for _ in code.co_lines():
        pass
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            check_bytecode(const)


def _load_argument(value):
    """An `arguments` value: numpy arrays come back from Keras 2's and Keras 3's serialized forms."""
    if isinstance(value, dict):
        if value.get("type") == "ndarray":
            return np.array(value["value"])
        if value.get("class_name") == "__numpy__":
            inner = value.get("config") or {}
            return np.array(inner.get("value"), dtype=inner.get("dtype"))
    return value


# ---------------------------------------------------------------------------------------------- writing


def _dump_function(value) -> tuple[Any, str, str | None]:
    """(value, type, module) as tf_keras serializes a function field."""
    if isinstance(value, types.FunctionType):
        code = base64.encodebytes(marshal.dumps(value.__code__)).decode("ascii")
        closure = tuple(c.cell_contents for c in value.__closure__) if value.__closure__ else None
        return [code, value.__defaults__, closure], "lambda", value.__module__
    if callable(value):
        return value.__name__, "function", getattr(value, "__module__", None)
    return (list(value) if isinstance(value, tuple) else value), "raw", None


def _keras3_function(fn, what: str, layer: str | None) -> dict:
    """Keras 3's `__lambda__` form of a Python function (`keras.src.utils.python_utils.func_dump`)."""
    if not isinstance(fn, types.FunctionType):
        raise ConfigError(f"Lambda: Keras 3 stores a Lambda's {what} as Python bytecode, and this one is a "
                          f"{type(fn).__name__}, not a Python function, so the model cannot be written for Keras 3; "
                          f"supply a Python function under the layer's name: custom_objects={{'{layer}': fn}}",
                          layer=layer)
    code, defaults, closure = _dump_function(fn)[0]
    if defaults is not None:
        # Keras 3's Lambda passes `defaults` read back from JSON as a list, which Python refuses; its func_load
        # makes a tuple of them only when `code` holds the whole dump, so the dump goes there too
        code = [code, defaults, closure]
    return {"class_name": "__lambda__", "config": {"code": code, "defaults": defaults, "closure": closure}}


def _plain_shape(spec):
    if isinstance(spec, (list, tuple)):
        return [_plain_shape(s) for s in spec]
    return spec


def _dump_argument(value):
    if isinstance(value, np.ndarray):
        return {"class_name": "__numpy__", "config": {"value": value.tolist(), "dtype": value.dtype.name}}
    return value


# ---------------------------------------------------------------------------------------------- helpers


def _arg_names(fn) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _as_shape(shape):
    """A shape function's result as a tuple, or a list of tuples for several outputs."""
    if is_shape_list(shape):
        return [tuple(s) for s in shape]
    return tuple(shape)
