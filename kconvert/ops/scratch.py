"""Large work buffers kept between calls, handed out again once nobody holds them.

glibc serves an allocation above its mmap threshold (at most 32 MiB) with fresh pages from the kernel, and
every first write to a page is a fault that zeroes it: a new 40 MB im2col matrix costs 3.6 ms to fill against
1.8 ms for the same copy into a buffer that is already mapped (the second convolution of the MNIST CNN in
benchmarks/train_vs_keras.py, every training step). Smaller arrays come back from the heap and gain nothing.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

MIN_BYTES = 16 << 20  # below this, a new array is about as cheap
PER_KEY = 4  # buffers kept per (tag, shape, dtype): several layers of one shape are alive in one step
_pool: dict[tuple, list[np.ndarray]] = {}
_lock = threading.Lock()


def _refcounts(kept: list) -> list[int]:
    return [sys.getrefcount(arr) for arr in kept]


# the count of an array only a list refers to, measured the way `buffer` measures, since what getrefcount adds
# for its own argument and loop variables differs between Python versions
_ONLY_KEPT = _refcounts([np.empty(0)])[0]


def buffer(tag: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape` and `dtype`: one handed out earlier under `tag` if no
    array or view refers to it any more, else a new one (kept for later calls while there is room)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if int(np.prod(shape)) * dtype.itemsize < MIN_BYTES:
        return np.empty(shape, dtype)
    key = (tag, shape, dtype.str)
    with _lock:
        kept = _pool.setdefault(key, [])
        for arr, count in zip(kept, _refcounts(kept)):
            if count <= _ONLY_KEPT:  # a view adds a reference to its base, as a caller does
                return arr
        arr = np.empty(shape, dtype)
        if len(kept) < PER_KEY:
            kept.append(arr)
        return arr


def clear() -> None:
    """Drop every kept buffer (their memory goes back once no caller holds them)."""
    with _lock:
        _pool.clear()
