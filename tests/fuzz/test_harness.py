"""The fuzz harness catches what it promises to: escaping exceptions, memory growth, hangs and native crashes."""

import pytest

from .harness import CASE_SECONDS, Case, Worker, run_all

WARM_UP = []


@pytest.fixture
def quick_worker():
    w = Worker([], grace=2.0)
    yield w
    w.close()


@pytest.mark.parametrize("do, status, problem", [
    ("type_error", "error", "TypeError"),
    ("allocate", "ok", "resident memory grew"),
    ("spin", "timeout", "timeout"),
    ("abort", "crash", "died"),
])
def test_misbehaving_readers_are_reported(quick_worker, tmp_path, do, status, problem):
    path = tmp_path / "x.bin"
    path.write_bytes(b"x" * 100)
    [outcome] = run_all(quick_worker, [Case("selftest", str(path), do, {"do": do},
                                                  timeout=1.0 if do == "spin" else CASE_SECONDS)])
    assert outcome.status == status and problem in outcome.problem()


def test_a_worker_stuck_in_native_code_is_killed_and_replaced(quick_worker, tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"x")
    hung, after = run_all(quick_worker, [Case("selftest", str(path), "hang", {"do": "native_hang"}, timeout=0.5),
                                         Case("selftest", str(path), "fine", {"do": "nothing"})])
    assert hung.status == "crash" and "hung" in hung.problem()
    assert after.status == "ok" and after.problem() is None and CASE_SECONDS >= 5
