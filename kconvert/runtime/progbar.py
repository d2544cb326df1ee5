"""Keras's progress bar: the lines `fit` prints, character for character as tf_keras 2.x prints them.

Follows `tf_keras/src/utils/generic_utils.py::Progbar`: non-stateful values are averaged weighted by the
steps they cover, stateful ones are shown as given; a value prints with 4 decimals when its magnitude is
above 1e-3, else in `.4e` (verbose=2 tests the signed value, as Keras does).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

import numpy as np


def _print(message: str) -> None:
    sys.stdout.write(message)
    sys.stdout.flush()


def format_time(time_per_unit: float, unit_name: str) -> str:
    """` 3s/epoch`, ` 11ms/step` or ` 250us/step`, as Keras formats a duration."""
    if time_per_unit >= 1 or time_per_unit == 0:
        return f" {time_per_unit:.0f}s/{unit_name}"
    if time_per_unit >= 1e-3:
        return f" {time_per_unit * 1000.0:.0f}ms/{unit_name}"
    return f" {time_per_unit * 1000000.0:.0f}us/{unit_name}"


def _format_eta(eta: float) -> str:
    if eta > 3600:
        return f"{int(eta // 3600)}:{int((eta % 3600) // 60):02d}:{int(eta % 60):02d}"
    if eta > 60:
        return f"{int(eta // 60)}:{int(eta % 60):02d}"
    return f"{int(eta)}s"


class Progbar:
    """Displays a progress bar (verbose 0: silent, 1: a bar updated in place, 2: one line at the end)."""

    def __init__(self, target: int | None, width: int = 30, verbose: int = 1, interval: float = 0.05,
                 stateful_metrics: Iterable[str] | None = None, unit_name: str = "step"):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stateful_metrics = set(stateful_metrics) if stateful_metrics else set()
        # Keras's rule; "posix" is in sys.modules on every POSIX system, so there it is always dynamic.
        self._dynamic_display = ((hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
                                 or "ipykernel" in sys.modules or "posix" in sys.modules
                                 or "PYCHARM_HOSTED" in os.environ)
        self._total_width = 0
        self._seen_so_far = 0
        self._values: dict[str, list] = {}
        self._values_order: list[str] = []
        self._start = time.time()
        self._last_update = 0.0
        self._time_at_epoch_start = self._start
        self._time_at_epoch_end: float | None = None
        self._time_after_first_step: float | None = None

    def _update_stateful_metrics(self, stateful_metrics: Iterable[str]) -> None:
        self.stateful_metrics = self.stateful_metrics.union(stateful_metrics)

    def update(self, current: int, values: list[tuple[str, float]] | None = None,
               finalize: bool | None = None) -> None:
        """Move the bar to step `current`; `values` are `(name, value for the last step)` pairs."""
        if finalize is None:
            finalize = False if self.target is None else current >= self.target
        self._accumulate(current, values or [])
        now = time.time()
        info = f" - {now - self._start:.0f}s"
        if current == self.target:
            self._time_at_epoch_end = now
        if self.verbose == 1:
            if now - self._last_update < self.interval and not finalize:
                return
            _print(self._line_verbose1(current, now, info, finalize))
        elif self.verbose == 2 and finalize:
            _print(self._line_verbose2(current, now, info))
        self._last_update = now

    def add(self, n: int, values: list[tuple[str, float]] | None = None) -> None:
        self.update(self._seen_so_far + n, values)

    def _accumulate(self, current: int, values: list[tuple[str, float]]) -> None:
        for k, v in values:
            if k not in self._values_order:
                self._values_order.append(k)
            if k in self.stateful_metrics:
                self._values[k] = [v, 1]
                continue
            # At least 1: without a target, on_batch_end and on_epoch_end both report the same step.
            base = max(current - self._seen_so_far, 1)
            if k not in self._values:
                self._values[k] = [v * base, base]
            else:
                self._values[k][0] += v * base
                self._values[k][1] += base
        self._seen_so_far = current

    def _average(self, k: str):
        return np.mean(self._values[k][0] / max(1, self._values[k][1]))

    def _line_verbose1(self, current: int, now: float, info: str, finalize: bool) -> str:
        prev_total_width = self._total_width
        message = "\b" * prev_total_width + "\r" if self._dynamic_display else "\n"
        if self.target is not None:
            numdigits = int(np.log10(self.target)) + 1
            bar = ("%" + str(numdigits) + "d/%d [") % (current, self.target)
            prog_width = int(self.width * float(current) / self.target)
            if prog_width > 0:
                bar += "=" * (prog_width - 1) + (">" if current < self.target else "=")
            bar += "." * (self.width - prog_width) + "]"
        else:
            bar = f"{int(current):7d}/Unknown"
        self._total_width = len(bar)
        message += bar
        time_per_unit = self._estimate_step_duration(current, now)
        if self.target is None or finalize:
            info += format_time(time_per_unit, self.unit_name)
        else:
            info = f" - ETA: {_format_eta(time_per_unit * (self.target - current))}"
        for k in self._values_order:
            avg = self._average(k)
            info += f" - {k}: {avg:.4f}" if abs(avg) > 1e-3 else f" - {k}: {avg:.4e}"
        self._total_width += len(info)
        if prev_total_width > self._total_width:
            info += " " * (prev_total_width - self._total_width)
        if finalize:
            info += "\n"
        return message + info

    def _line_verbose2(self, current: int, now: float, info: str) -> str:
        numdigits = int(np.log10(self.target)) + 1
        info = ("%" + str(numdigits) + "d/%d") % (current, self.target) + info
        for k in self._values_order:
            avg = self._average(k)
            info += f" - {k}: {avg:.4f}" if avg > 1e-3 else f" - {k}: {avg:.4e}"
        if self._time_at_epoch_end:
            time_per_epoch = self._time_at_epoch_end - self._time_at_epoch_start
            avg_time_per_step = time_per_epoch / self.target
            self._time_at_epoch_start = now
            self._time_at_epoch_end = None
            info += " -" + format_time(time_per_epoch, "epoch")
            info += " -" + format_time(avg_time_per_step, self.unit_name) + "\n"
        return info

    def _estimate_step_duration(self, current: int, now: float) -> float:
        """Seconds per step, leaving out the (unrepresentative) first step once there are more."""
        if not current:
            return 0
        if self._time_after_first_step is not None and current > 1:
            time_per_unit = (now - self._time_after_first_step) / (current - 1)
        else:
            time_per_unit = (now - self._start) / current
        if current == 1:
            self._time_after_first_step = now
        return time_per_unit
