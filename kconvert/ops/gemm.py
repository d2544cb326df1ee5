"""Large float32 matrix products through the faster of two kernels: numpy's BLAS or onnxruntime's MLAS.

The two differ by shape and by machine. On this VM (AMD Zen 5, numpy's OpenBLAS pinned to its Haswell kernels by
the environment) MLAS is 1.5-3x faster on one thread for most training shapes, and with two threads the MNIST CNN
of benchmarks/train_vs_keras.py trains at 42 ms a step against 52 with OpenBLAS's two threads; with a current
OpenBLAS the two are about even. So the first product of each shape (transposition and thread count) is timed with
both kernels on its own operands, and the faster serves every later product of that shape in the process.

The training loop turns MLAS on per step (`use_mlas(threads)`, runtime/blas_threads.py), with numpy's BLAS on one
thread meanwhile, so that the two libraries' thread pools never compete; the sessions do not spin between calls.
Outside it, and for small, non-float32 or non-2-D products, `matmul` is `numpy.matmul`. The kernels round
differently in the last bits; a BLAS thread count fixed in the environment (the way to bitwise-repeatable runs)
keeps numpy's everywhere.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator

import numpy as np

MIN_MACS = 1 << 21  # multiply-adds below which a call into onnxruntime costs more than it can save
TRIALS = 3  # timed runs per kernel when a new shape is met

_local = threading.local()
_lock = threading.Lock()
_sessions: dict[tuple[int, int, int], object] = {}  # (transA, transB, threads) -> session
_choice: dict[tuple[int, int, int, int, int, int], bool] = {}  # (m, k, n, transA, transB, threads) -> use MLAS
_unavailable = False
_orphans: list = []  # a forked child's inherited sessions: their thread pools did not survive the fork


def _forget_after_fork() -> None:
    global _lock
    _orphans.append(dict(_sessions))  # never destroyed: destroying them would join threads that do not exist
    _sessions.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@contextlib.contextmanager
def use_mlas(threads: int = 1) -> Iterator[None]:
    """Within the block (in this thread), large products may run in MLAS with `threads` threads (0: never)."""
    before = getattr(_local, "threads", 0)
    _local.threads = threads
    try:
        yield
    finally:
        _local.threads = before


def threads() -> int:
    """The MLAS thread count in effect in this thread (0: numpy's BLAS only)."""
    return getattr(_local, "threads", 0)


def _session(trans_a: int, trans_b: int, threads: int):
    """A one-node onnxruntime Gemm session, made once per transposition pair and thread count (None without
    onnxruntime)."""
    global _unavailable
    key = (trans_a, trans_b, threads)
    with _lock:
        if key in _sessions or _unavailable:
            return _sessions.get(key)
        try:
            import onnxruntime as ort
            from onnx import TensorProto, helper
        except ImportError:
            _unavailable = True
            return None
        node = helper.make_node("Gemm", ["a", "b"], ["y"], transA=trans_a, transB=trans_b)
        graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["p", "q"]),
                                                   helper.make_tensor_value_info("b", TensorProto.FLOAT, ["r", "s"])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", "n"])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # a spinning pool would hold the cores through the numpy work between products (measured: 2x slower)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _sessions[key] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return _sessions[key]


def _stored(x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(the C-contiguous array `x` is, or whose transpose it is; 1 if transposed), or None."""
    if x.flags.c_contiguous:
        return x, 0
    if x.T.flags.c_contiguous:
        return x.T, 1
    return None


def _mlas(session, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    binding = session.io_binding()
    binding.bind_cpu_input("a", a)
    binding.bind_cpu_input("b", b)
    binding.bind_output("y", "cpu", 0, np.float32, out.shape, out.ctypes.data)
    session.run_with_iobinding(binding)


def _faster_is_mlas(session, a: np.ndarray, b: np.ndarray, a_mem: np.ndarray, b_mem: np.ndarray,
                    out: np.ndarray) -> bool:
    """Time both kernels on this product itself (alternating, the first round not counted); `out` is written, and
    the caller's product overwrites it. The operands' values do not change a product's time."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(TRIALS + 1):
        for mlas in (False, True):
            start = time.perf_counter()
            if mlas:
                _mlas(session, a_mem, b_mem, out)
            else:
                np.matmul(a, b, out=out)
            times[mlas].append(time.perf_counter() - start)
    return statistics.median(times[True][1:]) < statistics.median(times[False][1:])


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`numpy.matmul(a, b, out=out)`; inside `use_mlas`, a large 2-D float32 product may run in MLAS."""
    threads = getattr(_local, "threads", 0)
    if not threads or not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim != 2 or b.ndim != 2 or a.dtype != np.float32 or b.dtype != np.float32 \
            or a.shape[1] != b.shape[0] or a.shape[0] * a.shape[1] * b.shape[1] < MIN_MACS:
        return np.matmul(a, b, out=out)
    sa, sb = _stored(a), _stored(b)
    if sa is None or sb is None or (out is not None and (out.dtype != np.float32 or not out.flags.c_contiguous
                                                         or out.shape != (a.shape[0], b.shape[1]))):
        return np.matmul(a, b, out=out)
    (a_mem, ta), (b_mem, tb) = sa, sb
    session = _session(ta, tb, threads)
    if session is None:
        return np.matmul(a, b, out=out)
    key = (a.shape[0], a.shape[1], b.shape[1], ta, tb, threads)
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.float32)
    use = _choice.get(key)
    if use is None:
        use = _choice[key] = _faster_is_mlas(session, a, b, a_mem, b_mem, out)
    if not use:
        return np.matmul(a, b, out=out)
    _mlas(session, a_mem, b_mem, out)
    return out
