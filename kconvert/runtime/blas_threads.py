"""How many BLAS threads a training step uses: chosen by measuring the steps themselves.

Whether a second BLAS thread helps depends on the products (a batch of 64 through a 5x5 convolution: about 1.8x
on 2 idle cores; the small products of an MLP or an LSTM cell: slower) and on the machine: when another process
keeps a core busy, an OpenBLAS thread waits for it and the same steps run 3-8x slower. So a fit starts with one
thread, then, if no other process is using the cores, times a few steps with one thread and with all cores,
alternating, and keeps the faster count. It goes back to one thread as soon as other processes take half a core
or more, or when the steps with more threads (the median of the last 7) get slower than one thread was when
measured (this VM's second core is not always there), and measures again from time to time, while the others stay quiet.

Results with one and two OpenBLAS threads differ in the last bits (different blocking). For bitwise-repeatable
runs, fix the count in the environment (`OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`, ...): then kconvert leaves
BLAS alone.
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import time
from collections.abc import Iterator

_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_controller = None

PROBE_ROUNDS = 3  # steps timed per candidate count, alternating
GAIN = 0.85  # more threads must make a step at least this much shorter
BUSY_OTHERS = 0.5  # cores other processes may use before one thread is the only safe choice
REPROBE_S = 30.0
RECENT = 7  # steady-state steps with more threads whose median is compared with one thread's


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


class StepThreads:
    """The thread count for each step of one compiled model (`with policy.step(): ...`)."""

    def __init__(self, cores: int | None = None, load: OtherLoad | None = None):
        self.cores = cores or _cores()
        self.user_fixed = any(os.environ.get(v) for v in _BLAS_ENV)
        self.load = load if load is not None else OtherLoad()
        self.choice = 1
        self.plan: list[int] = []
        self.trials: dict[int, list[float]] = {}
        self.next_probe = 0.0  # monotonic time of the next measurement; 0: after the warm-up step
        self.warm = False
        self.one_thread = float("inf")  # the median one-thread step of the last measurement
        self.recent: collections.deque[float] = collections.deque(maxlen=RECENT)  # the last steps, more threads

    def _quiet(self) -> bool:
        """Whether other processes left the cores idle since the last reading (False while it is too soon to
        tell: /proc/stat counts in ticks of 10 ms)."""
        if not self.load.available:
            return True
        others = self.load.cores(min_interval=0.25)
        return others is not None and others < BUSY_OTHERS

    def _next(self) -> int:
        if self.plan:
            return self.plan[0]
        if not self.warm:  # the first step builds metrics and caches: not a fair sample
            return 1
        now = time.monotonic()
        if self.choice > 1:
            others = self.load.cores()
            if others is not None and others >= BUSY_OTHERS:  # someone else wants the cores now
                self.choice, self.next_probe = 1, now + REPROBE_S
        elif now >= self.next_probe and self._quiet():
            self.plan = [1, self.cores] * PROBE_ROUNDS
            self.trials = {1: [], self.cores: []}
            return self.plan[0]
        return self.choice

    def _record(self, n: int, seconds: float) -> None:
        if not self.warm:
            self.warm = True
            return
        if not self.plan:
            if n > 1:  # steady state with more threads: keep it only while it stays faster than one thread was
                self.recent.append(seconds)
                # the median: one slow step (this VM stalls now and then) must not undo a measured choice
                if len(self.recent) > RECENT // 2 and statistics.median(self.recent) > self.one_thread:
                    self.choice = 1
                    self.recent.clear()
                    self.next_probe = time.monotonic() + REPROBE_S
            return
        self.plan.pop(0)
        self.trials[n].append(seconds)
        if not self.plan:
            one, many = (statistics.median(self.trials[k]) for k in (1, self.cores))
            self.choice = self.cores if many < GAIN * one else 1
            self.one_thread = one
            self.recent.clear()
            self.next_probe = time.monotonic() + REPROBE_S
            self.load.cores(min_interval=0.0)  # start the next window now

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Run one train step with the chosen thread count (and time it while measuring)."""
        if self.user_fixed or self.cores < 2:
            with contextlib.nullcontext() if self.user_fixed else _limit(1):
                yield
            return
        n = self._next()
        start = time.perf_counter()
        with _limit(n):
            yield
        self._record(n, time.perf_counter() - start)

    def current(self):
        """A context with the count chosen so far, for steps that are not timed (evaluation)."""
        return contextlib.nullcontext() if self.user_fixed else _limit(self.choice)
