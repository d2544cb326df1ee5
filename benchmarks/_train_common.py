"""Helpers shared by the training benchmarks: one child process per run, BLAS thread settings, the header."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from versions import version

BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def blas_env(n: int | None) -> dict:
    """Environment variables limiting BLAS to `n` threads (none: the library or kconvert chooses)."""
    return {} if n is None else {v: str(n) for v in BLAS_VARS}


def run(code: str, env_extra: dict | None = None, drop: tuple[str, ...] = ()) -> dict:
    """Run `code` in a fresh Python (BLAS variables and `drop` cleared, then `env_extra` set); the JSON object on its
    last stdout line, plus `child_wall_s`, the child's wall time seen from here (start-up and imports included)."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS and k not in drop}
    env.update(env_extra or {})
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"benchmark child failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = wall
    return result


def machine_lines() -> list[str]:
    """The machine, the package versions and the load average, for the head of a results file."""
    return [f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
            f"python {platform.python_version()}, numpy {version('numpy')}, kconvert {version('kconvert')}, "
            f"tf_keras {version('tf_keras')}, tensorflow {version('tensorflow')}",
            "load average at the start (1, 5, 15 min): {:.2f} {:.2f} {:.2f} (other processes share the cores: "
            "compare figures within one run)".format(*os.getloadavg())]
