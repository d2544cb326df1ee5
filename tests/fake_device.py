"""A strict stand-in for a device array module such as CuPy, for tests on machines without a GPU.

`FakeArray` wraps a numpy array and behaves as a CuPy array does where the engine could go wrong:
- it refuses implicit conversion to numpy (`np.asarray(a)` raises TypeError, as CuPy's `__array__` does);
- a ufunc or operator mixing it with a numpy array of one or more dimensions raises TypeError (CuPy refuses
  host operands); numpy scalars and 0-d arrays are allowed, as CuPy allows them;
- it answers numpy's `__array_ufunc__` / `__array_function__` / NEP 35 `like=` by computing with numpy on the
  wrapped arrays. Towards another type with its own `__array_ufunc__` it acts as CuPy 14 does (checked on an
  H100): its ufuncs and operators return NotImplemented, so that the other type's implementation runs, unless
  that type claims to be a numpy array (`isinstance(obj, np.ndarray)`): then they raise TypeError.
So a training step that runs through it touches the host only where it asks to (`asnumpy`), and its numbers are
numpy's own: a step on fake arrays must give what the same step on numpy arrays gives.
"""

from __future__ import annotations

import numpy as np

name = "fake_device"
transfers = {"to_device": 0, "to_host": 0}  # counts of explicit moves, for tests
moved: list[tuple[str, int]] = []  # (direction, element count) of each move


def _unwrap(x):
    t = type(x)
    if t is FakeArray:
        return x._a
    if t is list or t is tuple:
        return t(_unwrap(v) for v in x)
    if t is dict:
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    t = type(x)
    if t is np.ndarray:
        return FakeArray(x)
    if isinstance(x, np.generic) and not isinstance(x, (np.str_, np.bytes_)):  # CuPy gives 0-d arrays
        return FakeArray(np.asarray(x))
    if t is list or t is tuple:
        return t(_wrap(v) for v in x)
    return x


def _host_operand(x) -> bool:
    return type(x) is np.ndarray  # CuPy takes Python and numpy scalars, never a numpy array (not even 0-d)


def _foreign(x) -> bool:
    """Another overriding type (the tape's Var): it gets its turn."""
    t = type(x)
    return t is not FakeArray and t is not np.ndarray and hasattr(t, "__array_ufunc__") and \
        not isinstance(x, np.generic)


class FakeArray:
    __array_priority__ = 100.0

    def __init__(self, a: np.ndarray):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        outs = kwargs.get("out") or ()
        if method == "at":  # CuPy's ufuncs have no `at` (cupyx.scatter_add does it)
            return NotImplemented
        foreign = [i for i in inputs + tuple(outs) if _foreign(i)]
        if foreign:  # CuPy defers to another override, unless it claims to be a numpy array
            if any(isinstance(i, np.ndarray) for i in foreign):
                raise TypeError(f"Unsupported type {type(foreign[0])}")
            return NotImplemented
        if any(_host_operand(i) for i in inputs + tuple(outs)):
            raise TypeError(f"{ufunc.__name__}: a numpy array operand with a device array")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if outs:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if any(t is not FakeArray and t is not np.ndarray for t in types):
            return NotImplemented
        if "device" in kwargs:  # numpy 2's `np.full(..., like=a)` passes it on; CuPy's full/ones do not take it
            raise TypeError(f"{func.__name__}() got an unexpected keyword argument 'device'")
        flat = list(args) + list(kwargs.values())
        for v in flat:
            if _host_operand(v) or (type(v) in (list, tuple) and any(_host_operand(e) for e in v)):
                raise TypeError(f"{func.__name__}: a numpy array argument with a device array")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: FakeArray(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, key):
        if _host_operand(key):
            raise TypeError("indexing a device array with a numpy array")
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        if _host_operand(value) or _host_operand(key):
            raise TypeError("setitem on a device array from a numpy array")
        self._a[_unwrap(key)] = _unwrap(value)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __repr__(self) -> str:
        return f"FakeArray({self._a!r})"

    def item(self, *args):
        return self._a.item(*args)

    def get(self) -> np.ndarray:
        transfers["to_host"] += 1
        moved.append(("to_host", self._a.size))
        return self._a.copy()


def _method(name):
    def method(self, *args, **kwargs):
        return _wrap(getattr(self._a, name)(*_unwrap(args), **_unwrap(kwargs)))
    method.__name__ = name
    return method


for _name in ("reshape", "astype", "copy", "sum", "mean", "max", "min", "transpose", "ravel", "view", "squeeze",
              "fill", "any", "all", "argmax", "argmin", "clip", "swapaxes", "dot", "std", "var", "prod", "cumsum",
              "round", "flatten", "nonzero", "take", "repeat"):
    setattr(FakeArray, _name, _method(_name))


def _operator(dunder: str, in_place: bool):
    def op(self, other):
        if _foreign(other):  # as in its ufuncs: CuPy defers, unless the other claims to be a numpy array
            if isinstance(other, np.ndarray):
                raise TypeError(f"Unsupported type {type(other)}")
            return NotImplemented
        if _host_operand(other):
            raise TypeError(f"{dunder}: a numpy array operand with a device array")
        result = getattr(self._a, dunder)(_unwrap(other))
        if in_place:
            return self
        return _wrap(result)
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "pow", "mod", "matmul", "and", "or", "xor"):
    for _pre in ("", "r", "i"):
        setattr(FakeArray, f"__{_pre}{_name}__", _operator(f"__{_pre}{_name}__", _pre == "i"))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(FakeArray, f"__{_name}__", _operator(f"__{_name}__", False))
for _name in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(FakeArray, _name, lambda self, _n=_name: _wrap(getattr(self._a, _n)()))
FakeArray.__hash__ = None

ndarray = FakeArray


def asarray(x, dtype=None) -> FakeArray:
    """To the "device" (a copy of a numpy array, as a host-to-device copy is)."""
    if type(x) is FakeArray:
        return x if dtype is None else x.astype(dtype)
    transfers["to_device"] += 1
    a = np.array(x, dtype=dtype)
    moved.append(("to_device", a.size))
    return FakeArray(a)


def asnumpy(x) -> np.ndarray:
    if type(x) is FakeArray:
        return x.get()
    return np.asarray(x)


def full(shape, fill_value, dtype=None) -> FakeArray:
    return FakeArray(np.full(shape, fill_value, dtype))


def erf(x) -> FakeArray:  # stands in for cupyx.scipy.special.erf, with the host's own numbers
    from kconvert.ops.nn import erf as host_erf

    return FakeArray(host_erf(x._a))


def scatter_add(a: FakeArray, index, values) -> None:  # as cupyx.scatter_add
    if any(_host_operand(i) for i in (index if type(index) is tuple else (index,))) or _host_operand(values):
        raise TypeError("scatter_add: a numpy array argument")
    np.add.at(a._a, _unwrap(index), _unwrap(values))


def stack(arrays, axis: int = 0) -> FakeArray:
    return FakeArray(np.stack([_unwrap(a) for a in arrays], axis))
