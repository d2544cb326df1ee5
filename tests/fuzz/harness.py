"""Shared machinery of the fuzz suite: seeded corpus mutation, a crash-proof worker subprocess, the contract check.

The contract for every case (issue 8): only `kconvert.errors.KConvertError` subclasses escape (a clean load is fine
too), the message names the file, the case finishes within CASE_SECONDS, its peak resident memory grows by at most
MEMORY_FACTOR times the size of its input files plus MEMORY_MARGIN, and the reader stays inside the worker's
address-space cap (see `_worker.py`). A case that crashes or hangs the worker is a failure recorded with its seed;
the worker is restarted for the next case. `KCONVERT_FUZZ_CASES` scales the mutation cases per corpus file
(default: the CI budget), `KCONVERT_FUZZ_SEED` changes the seed, `KCONVERT_FUZZ_EXAMPLES` the hypothesis examples per structural test.
"""

from __future__ import annotations

import json
import os
import random
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
CASE_SECONDS = 5.0
# A case may grow the worker's resident memory by at most this multiple of the files it reads, plus the margin.
MEMORY_FACTOR, MEMORY_MARGIN = 50, 64 << 20
SEED = int(os.environ.get("KCONVERT_FUZZ_SEED", "20261122"))
_WORKER = Path(__file__).with_name("_worker.py")


def cases_per_file(default: int, files: int) -> int:
    """Mutations per corpus file: `default` in CI, or KCONVERT_FUZZ_CASES (per test) spread over the files."""
    total = os.environ.get("KCONVERT_FUZZ_CASES")
    return default if not total else max(1, -(-int(total) // files))


def examples(default: int) -> int:
    """Hypothesis examples per structural test: `default` in CI, or KCONVERT_FUZZ_EXAMPLES."""
    return int(os.environ.get("KCONVERT_FUZZ_EXAMPLES", default))


# ---------------------------------------------------------------------------------------------- mutation

_INTERESTING = [b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00\x00\x00\x00",
                b"\xff\xff\xff\xff\xff\xff\xff\xff\x01", struct.pack("<f", float("nan")), struct.pack("<f", float("inf")),
                struct.pack("<q", 1 << 62), b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"]


def _bit_flips(data: bytearray, rng: random.Random) -> str:
    n = rng.choice([1, 1, 2, 4, 8])
    spots = [rng.randrange(len(data)) for _ in range(n)]
    for p in spots:
        data[p] ^= 1 << rng.randrange(8)
    return f"flip{n}@{spots[0]}"


def _insert(data: bytearray, rng: random.Random) -> str:
    p = rng.randrange(len(data) + 1)
    chunk = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))), rng.choice(_INTERESTING)])
    data[p:p] = chunk
    return f"insert{len(chunk)}@{p}"


def _delete(data: bytearray, rng: random.Random) -> str:
    p = rng.randrange(len(data))
    n = rng.randint(1, min(64, len(data) - p))
    del data[p:p + n]
    return f"delete{n}@{p}"


def _truncate(data: bytearray, rng: random.Random) -> str:
    p = rng.randrange(len(data))
    del data[p:]
    return f"truncate@{p}"


def _duplicate(data: bytearray, rng: random.Random) -> str:
    a = rng.randrange(len(data))
    n = rng.randint(1, min(256, len(data) - a))
    p = rng.randrange(len(data) + 1)
    data[p:p] = data[a:a + n]
    return f"dup{n}:{a}->{p}"


def _overwrite(data: bytearray, rng: random.Random) -> str:
    chunk = rng.choice(_INTERESTING)
    p = rng.randrange(max(1, len(data) - len(chunk)))
    data[p:p + len(chunk)] = chunk
    return f"overwrite{len(chunk)}@{p}"


_OPS = [_bit_flips, _bit_flips, _insert, _delete, _truncate, _duplicate, _overwrite]


def mutate(data: bytes, seed: int) -> tuple[bytes, str]:
    """`data` with 1 to 3 seeded mutations (bit flips, insertions, deletions, truncation, chunk duplication,
    overwrites with boundary values); returns the bytes and a description of what was done."""
    rng = random.Random(seed)
    out = bytearray(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not out:
            break
        done.append(rng.choice(_OPS)(out, rng))
    return bytes(out), ",".join(done)


# ---------------------------------------------------------------------------------------------- the worker


@dataclass
class Case:
    """One reader call on one file. `label` says how the file was made (corpus file and seed, or strategy)."""

    reader: str
    path: str
    label: str
    extra: dict = field(default_factory=dict)
    timeout: float = CASE_SECONDS


@dataclass
class Outcome:
    case: Case
    status: str  # ok, kerror, error, timeout, crash
    type: str = ""
    message: str = ""
    seconds: float = 0.0
    detail: str = ""
    rss_growth: int = 0

    def problem(self) -> str | None:
        """Why this outcome breaks the contract, or None."""
        if self.status in ("error", "timeout", "crash"):
            return f"{self.status}: {self.type} {self.message[:300]} {self.detail[-1500:]}"
        if self.seconds > CASE_SECONDS:
            return f"took {self.seconds:.1f} s"
        # a prototxt and its caffemodel are read as a pair: a mismatch between them may name either
        files = [self.case.path] + [self.case.extra[k] for k in ("prototxt", "caffemodel") if self.case.extra.get(k)]
        size = sum(os.path.getsize(f) for f in files + [self.case.extra.get("base", "")] if os.path.isfile(f))
        if self.rss_growth > MEMORY_FACTOR * size + MEMORY_MARGIN:
            return f"resident memory grew by {self.rss_growth >> 20} MiB for {size >> 10} KiB of input"
        named = self.case.reader != "model_from_text"  # text given as a string has no file to name
        if self.status == "kerror" and named and not any(os.path.basename(f) in self.message for f in files):
            return f"the {self.type} does not name the file: {self.message[:300]}"
        return None


class Worker:
    """A `_worker.py` subprocess; `run` sends one case and survives the worker's crash or hang by restarting it."""

    def __init__(self, warm_up: list[dict], grace: float = 10.0):
        self.warm_up = warm_up
        self.grace = grace  # how long past a case's own limit the worker may stay silent before it counts as hung
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, str(_WORKER), json.dumps(self.warm_up)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        ready = self._read(120)
        if not ready or ready.get("id") != "ready":
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"the fuzz worker did not start: {ready} {err[-2000:]}")

    def _read(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return {"status": "crash"}
            if line.startswith("{"):
                return json.loads(line)

    def run(self, case: Case) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        start = time.monotonic()
        self.proc.stdin.write(json.dumps({"id": case.label, "reader": case.reader, "path": case.path,
                                          "extra": case.extra, "timeout": case.timeout}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(case.timeout + self.grace)
        if reply is None or reply.get("status") == "crash":
            hung = reply is None
            self.close()
            detail = "the worker hung past the alarm" if hung else f"the worker died (exit {self.proc.returncode})"
            return Outcome(case, "crash", detail=detail, seconds=time.monotonic() - start)
        return Outcome(case, reply["status"], reply.get("type", ""), reply.get("message", ""),
                       reply.get("seconds", 0.0), reply.get("traceback", ""), reply.get("rss_growth", 0))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                stream.close()


def run_all(worker: Worker, cases: list[Case]) -> list[Outcome]:
    return [worker.run(c) for c in cases]


def assert_contract(outcomes: list[Outcome], *, expect_error: bool = False) -> None:
    """Every outcome keeps the contract; with `expect_error`, every case must also be refused (a KConvertError)."""
    problems = [f"{o.case.reader} {o.case.label}: {p}" for o in outcomes if (p := o.problem())]
    if expect_error:
        problems += [f"{o.case.reader} {o.case.label}: loaded, should have been refused"
                     for o in outcomes if o.status == "ok"]
    summary = {s: sum(o.status == s for o in outcomes) for s in ("ok", "kerror", "error", "timeout", "crash")}
    print(f"fuzz: {len(outcomes)} cases {summary}")
    assert not problems, f"{len(problems)} of {len(outcomes)} cases break the contract:\n" + "\n".join(problems[:20])


def mutation_cases(tmp: Path, corpus: list[tuple[str, Path, dict]], per_file: int, salt: int) -> list[Case]:
    """`per_file` mutated copies of each corpus file (reader, file, extra), written under `tmp` with its suffix."""
    cases = []
    for i, (reader, src, extra) in enumerate(corpus):
        data = src.read_bytes()
        for k in range(per_file):
            seed = SEED * 7919 + salt * 1_000_003 + i * 10_007 + k
            mutated, how = mutate(data, seed)
            name = src.name.split(".", 1)
            out = tmp / f"{name[0]}_s{seed}.{name[1]}" if len(name) > 1 else tmp / f"{src.name}_s{seed}"
            out.write_bytes(mutated)
            cases.append(Case(reader, str(out), f"{src.name} seed={seed} ({how})", extra))
    return cases
