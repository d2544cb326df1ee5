"""Which array module holds an array: numpy on the host, or a device module (CuPy) for arrays on a GPU.

The engine is written against numpy's API. A device module's arrays take part through numpy's dispatch protocols
(`__array_ufunc__`, `__array_function__`, NEP 35's `like=`), so `np.maximum(a, b)` or `np.sum(a)` run on the
device when `a` lives there. What numpy does not dispatch goes through this module: `asarray` (numpy's would copy a
device array to the host, or refuse, as CuPy does), array constructors (`empty`, `zeros`, ... like an operand)
and the moves between host and device. A device module is any object with CuPy's `ndarray`, `asarray` and
`asnumpy`; `register` adds one (the tests register a strict stand-in, tests/fake_device.py, so that every place
where a device array would fall back to the host is found without a GPU).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from .coercion import asarray as _np_asarray  # numpy's own, whatever patch is installed
from .coercion import numpy_takes

_modules: dict[type, Any] = {}  # device array type -> its module
_local = threading.local()  # .module: the `device` block's module; .steps: depth of `step` blocks
_names: dict[str, Any] = {}  # "cupy" -> module, for `load`


def register(module: Any, name: str | None = None) -> Any:
    """Make `module` (CuPy, or an object with its `ndarray`, `asarray` and `asnumpy`) a device module."""
    _modules[module.ndarray] = module
    _names[name or getattr(module, "__name__", repr(module))] = module
    return module


def unregister(module: Any) -> None:
    _modules.pop(module.ndarray, None)
    for key in [k for k, m in _names.items() if m is module]:
        del _names[key]


def load(name: str) -> Any:
    """The device module called `name` ("cupy": imported and registered on first use)."""
    if name in _names:
        return _names[name]
    if name == "numpy":
        return np
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"array module '{name}' is not installed (for CUDA: pip install 'kconvert[cuda]')") from e
    return register(module, name)


def module_of(x) -> ModuleType | Any:
    """numpy, or the device module whose array `x` is (a Var's data counts as the Var)."""
    t = type(x)
    if t is np.ndarray:
        return np
    module = _modules.get(t)
    if module is not None:
        return module
    data = getattr(x, "data", None)  # the gradient tape's Var holds its array in `data`
    if type(data) in _modules:
        return _modules[type(data)]
    if t.__module__.split(".")[0] == "cupy" and t.__name__ == "ndarray":
        return load("cupy")
    return np


def is_array(x) -> bool:
    """Whether `x` is a numpy array (or something posing as one, as the tape's Var) or a device array."""
    return isinstance(x, np.ndarray) or type(x) in _modules


def on_device(x) -> bool:
    """Whether `x` (or a Var's data) is a device module's array."""
    return module_of(x) is not np


def asarray(x, dtype=None):
    """`np.asarray`, except that a device array stays where it is (cast to `dtype` if given)."""
    module = module_of(x)
    if module is np:
        return _np_asarray(x, dtype=dtype)
    if type(x) is not module.ndarray:
        x = x.data  # a Var's array
    return x if dtype is None or x.dtype == np.dtype(dtype) else x.astype(dtype)


def to_host(x):
    """A numpy array holding `x` (copied from the device if it lives there)."""
    module = module_of(x)
    return _np_asarray(x) if module is np else module.asnumpy(asarray(x))


def to_device(x, module: Any):
    """`x` on `module`'s device (numpy: on the host); an array (or a tape's Var) already there as it is."""
    if module is np:
        return x if module_of(x) is np and is_array(x) else to_host(x)
    return x if module_of(x) is module else module.asarray(to_host(x))


def full(shape, fill_value, dtype, like=None):
    """`np.full` on `like`'s device (numpy 2 hands `np.full(..., like=a)` a `device` argument CuPy's lacks)."""
    module = np if like is None else module_of(like)
    return np.full(shape, fill_value, dtype) if module is np else module.full(shape, fill_value, dtype)


def add_at(a, index, values) -> None:
    """`np.add.at(a, index, values)`, on a device array through its module's `scatter_add` (CuPy's ufuncs have
    no `at`); the index's arrays go to the device too."""
    module = module_of(a)
    if module is np:
        np.add.at(a, index, values)
        return
    fn = getattr(module, "scatter_add", None) or importlib.import_module("cupyx").scatter_add
    fn(a, to_module(index, module), values)


_SPECIAL_MODULES = {"cupy": "cupyx.scipy.special"}  # where a device module keeps scipy.special's functions


def special(name: str, x):
    """scipy.special's `name` (erf, ...) applied to device array `x` by its module."""
    module = module_of(x)
    fn = getattr(module, name, None)
    if fn is None:
        where = _SPECIAL_MODULES.get(getattr(module, "__name__", ""))
        fn = getattr(importlib.import_module(where), name) if where else None
    if fn is None:
        raise TypeError(f"{name} is not available for {getattr(module, '__name__', module)} arrays")
    return fn(asarray(x))


def const(value, dtype, like=None):
    """`np.asarray(value, dtype)` made to meet `like` (an array or a Var): a numpy scalar for a scalar (CuPy
    takes those, not 0-d numpy arrays), an array on `like`'s device otherwise."""
    a = _np_asarray(value, dtype)
    if a.ndim == 0:
        return a[()]
    return a if like is None else to_device(a, module_of(like))


def like(x):
    """An array to pass as NEP 35's `like=` so that a constructor builds on `x`'s device (None on the host)."""
    return None if module_of(x) is np else asarray(x)


def _device_list(obj) -> Any:
    """The device module of a non-empty list/tuple whose items are all that module's arrays, else None."""
    if not obj:
        return None
    module = _modules.get(type(obj[0]))
    return module if module is not None and all(type(v) is module.ndarray for v in obj) else None


def _keep(obj, args: tuple, kwargs: dict, copies: bool):
    """np.asarray & co. on a device array (or a list of them): the array where it is (stacked, cast)."""
    t = type(obj)
    module = _modules.get(t)
    if module is None:
        module = _device_list(obj) if t is list or t is tuple else None
        if module is None:
            return NotImplemented
        obj, copies = module.stack(obj), False
    dtype = args[0] if args else kwargs.get("dtype")
    if dtype is not None and np.dtype(dtype) != obj.dtype:
        return obj.astype(dtype)
    return obj.copy() if copies and kwargs.get("copy", True) is not False else obj


@contextlib.contextmanager
def keeping_device() -> Iterator[None]:
    """Within the block, `np.asarray(a)` & co. hand a device array `a` back as it is, as they do a numpy array."""
    with numpy_takes(_keep):
        yield


_DEVICE_NAMES = {"cpu": "numpy", "cuda": "cupy", "gpu": "cupy"}


@contextlib.contextmanager
def device(name: str | Any = "cuda") -> Iterator[None]:
    """Within the block (in this thread), training and evaluation steps run on `name`'s arrays: "cuda" (CuPy),
    "cpu" (numpy), a registered module's name, or the module itself. Weights and optimizer state move to the
    device at the first step and back to the host when anything outside a step reads them (`Weight.value`)."""
    module = name if not isinstance(name, str) else load(_DEVICE_NAMES.get(name.lower(), name.lower()))
    if module is not np and getattr(module, "ndarray", None) not in _modules:
        register(module)
    before = getattr(_local, "module", np)
    _local.module = module
    try:
        yield
    finally:
        _local.module = before


def current() -> Any:
    """The module of the innermost `device` block in this thread (numpy outside any)."""
    return getattr(_local, "module", np)


def in_step() -> bool:
    """Whether this thread is inside a `step` block (device arrays are then handed out as they are)."""
    return getattr(_local, "steps", 0) > 0


@contextlib.contextmanager
def step(module: Any) -> Iterator[None]:
    """One training or evaluation step on `module`'s device: `np.asarray` keeps device arrays and weights read
    within hand out the device copy."""
    _local.steps = getattr(_local, "steps", 0) + 1
    try:
        with keeping_device():
            yield
    finally:
        _local.steps -= 1


def to_module(value, module: Any):
    """`value` (an array, or lists/tuples/dicts of them; None and scalars as they are) on `module`'s device."""
    t = type(value)
    if t is list or t is tuple:
        return t(to_module(v, module) for v in value)
    if t is dict:
        return {k: to_module(v, module) for k, v in value.items()}
    if value is None or not is_array(value):
        return value
    return to_device(value, module)
