"""Memory-bound passes over large arrays, split across the cores.

numpy runs every ufunc and copy on one thread, though it lets go of the GIL while the loop runs. In a training
step the matrix products already use every core (ops/gemm.py), but the passes between them ran on one core while
the other waited. Split over the batch on this 2-core VM: the 40 MB im2col copy 2.0 -> 1.2 ms, a 6.4 MB ReLU
mask 0.87 -> 0.54 ms; with the per-tap products of a convolution's input gradient (ops/conv.py), 9.9 -> 7.2 ms in
the MNIST CNN's training step. Callers: im2col, max pooling, ReLU's backward mask, the optimizers' blocks, and
that input gradient.

`split(fn, n, nbytes)` calls `fn(part)` for slices that partition `range(n)`, one per core (the calling thread
takes the first), and returns when all are done. `fn` must write disjoint outputs for disjoint parts and treat
the elements the same way whatever the part, so results are bit for bit those of one call. Work under `MIN_BYTES`
runs in one call: the hand-off to a sleeping thread costs 40-100 microseconds here.

The number of parts is the number of cores this process may use, at most `MAX_PARTS`, and one when
`OMP_NUM_THREADS` (the usual way to ask for one thread) says so, or within `limit(1)` (the training step's
one-thread mode, runtime/blas_threads.py).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator

MIN_BYTES = 8 << 20  # bytes a call touches below which it runs in one piece
MAX_PARTS = 4  # memory-bound passes gain little from more cores than this

_workers: list[queue.SimpleQueue] = []
_lock = threading.Lock()
_local = threading.local()


def _cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        cores = min(cores, int(env))
    return max(1, min(cores, MAX_PARTS))


PARTS = _cores()


def _serve(tasks: queue.SimpleQueue) -> None:
    _local.worker = True
    while True:
        fn, part, done, errors = tasks.get()
        try:
            fn(part)
        except BaseException as exc:  # handed to the caller, which raises it
            errors.append(exc)
        finally:
            done.release()


def _ensure_workers(count: int) -> list[queue.SimpleQueue]:
    with _lock:
        while len(_workers) < count:
            tasks: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(tasks,), name=f"kconvert-split-{len(_workers)}",
                             daemon=True).start()
            _workers.append(tasks)
        return _workers[:count]


def _forget_after_fork() -> None:
    global _lock
    _workers.clear()  # their threads did not survive the fork
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@contextlib.contextmanager
def limit(count: int | None) -> Iterator[None]:
    """Within the block (in this thread), split into at most `count` parts (None: no limit of its own)."""
    before = getattr(_local, "limit", None)
    _local.limit = count
    try:
        yield
    finally:
        _local.limit = before


def parts(n: int, nbytes: int) -> list[slice]:
    """The slices `split` would hand out for `n` items of work touching `nbytes` bytes."""
    count = PARTS if nbytes >= MIN_BYTES and not getattr(_local, "worker", False) else 1
    cap = getattr(_local, "limit", None)
    if cap is not None:
        count = min(count, cap)
    count = max(1, min(count, n))
    bounds = [n * i // count for i in range(count + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def split(fn: Callable[[slice], None], n: int, nbytes: int, pieces: list[slice] | None = None) -> None:
    """Run `fn(part)` over slices partitioning `range(n)` on the cores at once (see the module docstring);
    `pieces`: the slices, when the caller asked `parts` for them first."""
    pieces = pieces if pieces is not None else parts(n, nbytes)
    if len(pieces) == 1:
        fn(pieces[0])
        return
    done = threading.Semaphore(0)
    errors: list[BaseException] = []
    for tasks, part in zip(_ensure_workers(len(pieces) - 1), pieces[1:]):
        tasks.put((fn, part, done, errors))
    try:
        fn(pieces[0])
    finally:
        for _ in pieces[1:]:
            done.acquire()
    if errors:
        raise errors[0]
