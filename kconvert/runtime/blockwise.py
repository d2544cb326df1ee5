"""Elementwise updates over cache-sized blocks.

An optimizer step is a chain of elementwise passes over arrays much larger than the caches (a 3136x1024
kernel, its gradient and its slots are 13 MB each). Run pass by pass, every pass streams each array through
main memory again; run block by block, the later passes find the block still in the L2 cache. The blocks are
shared out over the cores (ops/parallel.py). The result is the same bit for bit: every element goes through the
same operations in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ops import parallel

BLOCK = 1 << 18  # elements: 1 MiB of float32 per array; measured best of 2^14..2^20 on a 3136x1024 SGD step
_MIN_SIZE = 4 * BLOCK  # below this a whole-array call is as fast


def blockwise(fn: Callable[..., None], *arrays: np.ndarray) -> None:
    """Call `fn(*blocks)` on matching blocks of the same-shape `arrays` (a whole-array call when they are small
    or not all C-contiguous). `fn` works in place (`out=` arguments); it must treat elements independently."""
    size = arrays[0].size
    if size < _MIN_SIZE or not all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.size == size
                                   for a in arrays):  # a device array: one call, its kernels are parallel
        fn(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]
    starts = range(0, size, BLOCK)

    def run(part: slice) -> None:
        for start in starts[part]:
            fn(*(f[start:start + BLOCK] for f in flat))

    parallel.split(run, len(starts), size * sum(a.itemsize for a in arrays))
