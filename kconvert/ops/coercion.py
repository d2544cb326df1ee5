"""`np.asarray`, `np.asanyarray`, `np.array` and `np.ascontiguousarray` handing back tracked values.

numpy does not dispatch these four to an argument's `__array_function__`, so a layer's `x = np.asarray(inputs)`
would turn the gradient tape's `Var` (runtime/autodiff.py) or the ONNX tracer's `Sym`
(converters/onnx_lowering/trace.py) into a plain array and lose it. While a tape records or a trace runs, the four
names in the numpy module are replaced by functions that first offer the object to the active handlers. Both
users share this one registry and lock: one thread training while another lowers a model to ONNX keeps both
handlers installed until the last one leaves (two private patches restored each other's functions away).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator

import numpy as np

# numpy's own functions, taken before any patch: use these where a plain array is wanted
asarray, asanyarray, array, ascontiguousarray = np.asarray, np.asanyarray, np.array, np.ascontiguousarray

# handler(obj, args, kwargs, copies) -> the coerced value, or NotImplemented to leave obj to the next one / numpy
Handler = Callable[[object, tuple, dict, bool], object]
_active: dict[Handler, int] = {}
_lock = threading.Lock()


def _offering(orig: Callable, copies: bool) -> Callable:
    @functools.wraps(orig)
    def coerce(obj, *args, **kwargs):
        t = type(obj)
        if t is not np.ndarray:  # the common case: a plain array, straight to numpy
            for handler in tuple(_active):
                value = handler(obj, args, kwargs, copies)
                if value is not NotImplemented:
                    return value
        return orig(obj, *args, **kwargs)
    return coerce


_PATCHED = (_offering(asarray, False), _offering(asanyarray, False), _offering(array, True),
            _offering(ascontiguousarray, False))


@contextlib.contextmanager
def numpy_takes(handler: Handler) -> Iterator[None]:
    """Within this block (any thread), the four coercions offer their argument to `handler` first."""
    with _lock:
        if not _active:
            np.asarray, np.asanyarray, np.array, np.ascontiguousarray = _PATCHED
        _active[handler] = _active.get(handler, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _active[handler] -= 1
            if not _active[handler]:
                del _active[handler]
            if not _active:
                np.asarray, np.asanyarray, np.array, np.ascontiguousarray = asarray, asanyarray, array, \
                    ascontiguousarray
