"""How a training step uses the cores: chosen by measuring the steps themselves.

Whether a second thread helps depends on the products (a batch of 64 through a 5x5 convolution: about 1.8x on 2
idle cores; the small products of an MLP or an LSTM cell: slower) and on the machine: when another process keeps
a core busy, an OpenBLAS thread waits for it and the same steps run 3-8x slower. Three modes: "one" thread (large
products in onnxruntime's MLAS where it is faster, ops/gemm.py); "all" cores in numpy's BLAS; "mlas": large
products in MLAS on all cores, numpy's BLAS on one thread (the two pools never run at once). A fit starts on one
thread, then, if no other process is using the cores, times a few steps in each mode, a block of steps each, and keeps the
fastest. It goes back to one thread as soon as other processes take half a core or more, or when the steps on
more cores (the median of the last 7, not counting the first quarter second after a measurement, while the "all"
block's OpenBLAS workers still spin) get slower than one thread was when measured (this VM's second core is not
always there), and measures again from time to time, while the others stay quiet.

Results differ in the last bits between modes (different blocking, different kernels). For bitwise-repeatable
runs, fix the count in the environment (`OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`, ...): then kconvert leaves
BLAS alone and uses numpy's kernels only.
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import time
from collections.abc import Iterator

import numpy as np

from ..ops import array_module, gemm, ov_conv, parallel

_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_controller = None

PROBE_ROUNDS = 3  # steps timed per mode, after one step that is not counted
GAIN = 0.9  # more cores must make a step at least this much shorter
BUSY_OTHERS = 0.5  # cores other processes may use before one thread is the only safe choice
REPROBE_S = 10.0  # this VM speeds up and slows down by 2x within minutes: measure often
RECENT = 7  # steady-state steps with more threads whose median is compared with one thread's
SETTLE_S = 0.25  # after a measurement, OpenBLAS's workers from the "all" block spin this long: not counted
MODES = ("one", "mlas", "all")  # measured in this order, a block of steps each


def _limit(n: int):
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=n, user_api="blas")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class OtherLoad:
    """The cores other processes kept busy since the last reading, from /proc/stat minus this process's CPU time
    (Linux; elsewhere always unknown)."""

    def __init__(self, stat: str = "/proc/stat"):
        self._stat = stat
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()
        self.available = self._last is not None

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open(self._stat, encoding="ascii") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return time.monotonic(), (sum(fields[:8]) - idle) / self._tick, time.process_time()

    def cores(self, min_interval: float = 0.5) -> float | None:
        """Average cores used by other processes since the last reading; None when unknown or too soon."""
        now = self._read()
        if now is None or self._last is None:
            return None
        wall = now[0] - self._last[0]
        if wall < min_interval:
            return None
        busy, own = now[1] - self._last[1], now[2] - self._last[2]
        self._last = now
        return max(busy - own, 0.0) / wall


def probe_plan() -> list[str]:
    """The modes of the steps of one measurement: a block per mode, whose first step is not counted. Blocks, not
    alternating steps: OpenBLAS's idle workers spin for a while after an "all" step and slow the next step's
    single-threaded BLAS or MLAS pool (alternating, "mlas" measured 53 ms a step, as slow as "one"; in a block
    39 ms, as when fixed)."""
    return [mode for mode in MODES for _ in range(PROBE_ROUNDS + 1)]


class StepThreads:
    """The thread mode for each step of one compiled model (`with policy.step(): ...`): "one" thread, "all" cores in
    numpy's BLAS, or "mlas": large products in onnxruntime's MLAS on all cores, numpy's BLAS on one thread."""

    def __init__(self, cores: int | None = None, load: OtherLoad | None = None):
        self.cores = cores or _cores()
        self.user_fixed = any(os.environ.get(v) for v in _BLAS_ENV)
        self.load = load if load is not None else OtherLoad()
        self.choice = "one"
        self.plan: list[str] = []
        self.trials: dict[str, list[float]] = {}
        self.next_probe = 0.0  # monotonic time of the next measurement; 0: after the warm-up step
        self.warm = False
        self.one_thread = float("inf")  # the median one-thread step of the last measurement
        self.recent: collections.deque[float] = collections.deque(maxlen=RECENT)  # the last steps on more cores
        self.settled = 0.0  # monotonic time from which steady-state steps count again

    def _threads(self, mode: str) -> tuple[int, int]:
        """(numpy's BLAS threads, MLAS threads) of a mode."""
        return {"one": (1, 1), "all": (self.cores, 0), "mlas": (1, self.cores)}[mode]

    def _quiet(self) -> bool:
        """Whether other processes left the cores idle since the last reading (False while it is too soon to
        tell: /proc/stat counts in ticks of 10 ms)."""
        if not self.load.available:
            return True
        others = self.load.cores(min_interval=0.25)
        return others is not None and others < BUSY_OTHERS

    def _next(self) -> str:
        if self.plan:
            return self.plan[0]
        if not self.warm:  # the first step builds metrics and caches: not a fair sample
            return "one"
        now = time.monotonic()
        if self.choice != "one":
            others = self.load.cores()
            if others is not None and others >= BUSY_OTHERS:  # someone else wants the cores now
                self.choice, self.next_probe = "one", now + REPROBE_S
        elif now >= self.next_probe and self._quiet():
            self.plan = probe_plan()
            self.trials = {mode: [] for mode in MODES}
            return self.plan[0]
        return self.choice

    def _record(self, mode: str, seconds: float) -> None:
        if not self.warm:
            self.warm = True
            return
        if not self.plan:
            if mode != "one" and time.monotonic() - seconds >= self.settled:  # began after the spin
                # steady state on more cores: kept only while it stays faster than one thread was
                self.recent.append(seconds)
                # the median: one slow step (this VM stalls now and then) must not undo a measured choice
                if len(self.recent) > RECENT // 2 and statistics.median(self.recent) > self.one_thread:
                    self.choice = "one"
                    self.recent.clear()
                    self.next_probe = time.monotonic() + REPROBE_S
            return
        self.plan.pop(0)
        self.trials[mode].append(seconds)
        if not self.plan:
            medians = {m: statistics.median(t[1:]) for m, t in self.trials.items()}
            best = min(("all", "mlas"), key=medians.__getitem__)
            self.choice = best if medians[best] < GAIN * medians["one"] else "one"
            self.one_thread = medians["one"]
            self.recent.clear()
            self.next_probe = time.monotonic() + REPROBE_S
            self.settled = time.monotonic() + SETTLE_S
            self.load.cores(min_interval=0.0)  # start the next window now

    @contextlib.contextmanager
    def _mode(self, mode: str) -> Iterator[None]:
        blas, mlas = self._threads(mode)
        with _limit(blas), gemm.use_mlas(mlas), ov_conv.use(max(blas, mlas)), \
                parallel.limit(1 if mode == "one" else None):
            yield

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Run one train step in the chosen mode (and time it while measuring)."""
        if self.user_fixed or array_module.current() is not np:  # a GPU step: the host's BLAS is not used
            yield
            return
        if self.cores < 2:
            with self._mode("one"):
                yield
            return
        mode = self._next()
        start = time.perf_counter()
        with self._mode(mode):
            yield
        self._record(mode, time.perf_counter() - start)

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """The mode chosen so far, for steps that are not timed (evaluation)."""
        if self.user_fixed or array_module.current() is not np:
            yield
            return
        with self._mode(self.choice if self.cores > 1 else "one"):
            yield
