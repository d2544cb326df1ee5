"""numpy ufunc calls sent to faster kernels where numpy's own loop is slow for the operands; same values, same
bits.

- `matmul` of large float32 matrices: ops/gemm.py (numpy's BLAS or onnxruntime's MLAS, the faster).
- `maximum`/`minimum` (and `fmax`/`fmin`) of a large float array and a scalar, as in ReLU: numpy 2.4 has a
  SIMD loop for two arrays but not for an array and a scalar, which runs 2.5x slower (6.4 MB of float32: 0.50
  against 0.20 ms). The scalar becomes a small block of itself that broadcasts over the leading axes.
"""

from __future__ import annotations

import numpy as np

from . import gemm
from .array_module import on_device

_MIN_MAX = {np.maximum, np.minimum, np.fmax, np.fmin}
MIN_SIZE = 1 << 15  # elements below which the block costs more than it saves
BLOCK = 1 << 10  # the block's least size: the trailing axes are taken until they hold this many


def _block_like(scalar, x: np.ndarray) -> np.ndarray | None:
    """`scalar` as an array of `x`'s dtype over `x`'s trailing axes, or None when that could change the result
    (a scalar of another dtype, which numpy's promotion may treat differently, or a small or strided `x`)."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.size < MIN_SIZE or not x.flags.c_contiguous or \
            on_device(x):  # a device array (or a Var holding one): the device's own loop takes the scalar
        return None
    if type(scalar) in (int, float):
        if not np.isfinite(scalar) or float(x.dtype.type(scalar)) != scalar:
            return None
    elif not (isinstance(scalar, (np.ndarray, np.generic)) and np.ndim(scalar) == 0 and scalar.dtype == x.dtype):
        return None
    axis, size = x.ndim, 1
    while axis > 0 and size < BLOCK:
        axis -= 1
        size *= x.shape[axis]
    return np.full(x.shape[axis:], scalar, x.dtype)


def call(ufunc, *args, **kwargs):
    """`ufunc(*args, **kwargs)`, through a faster kernel where one gives the same result."""
    if len(args) == 2 and not kwargs:
        a, b = args
        if ufunc is np.matmul:
            return gemm.matmul(a, b)
        if ufunc in _MIN_MAX:
            if np.ndim(b) == 0 and (block := _block_like(b, a)) is not None:
                return ufunc(a, block)
            if np.ndim(a) == 0 and (block := _block_like(a, b)) is not None:
                return ufunc(block, b)
    if any(type(a) is np.ndarray and a.ndim == 0 for a in args) and any(on_device(a) for a in args):
        args = tuple(a[()] if type(a) is np.ndarray and a.ndim == 0 else a for a in args)  # CuPy takes scalars
    return ufunc(*args, **kwargs)
