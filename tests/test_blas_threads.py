"""The per-step BLAS thread policy (kconvert/runtime/blas_threads.py): it measures, picks the faster count,
backs off when other processes take the cores, and leaves a count fixed in the environment alone."""

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import kconvert
from kconvert.runtime import blas_threads
from kconvert.runtime.blas_threads import OtherLoad, StepThreads


class FakeLoad:
    """Other processes' cores, as the test sets them."""

    available = True

    def __init__(self, others=0.0):
        self.others = others

    def cores(self, min_interval=0.5):
        return self.others


def _run(policy, seconds_for):
    """One step: the count the policy picks, recorded with the duration `seconds_for(count)`."""
    n = policy._next()
    policy._record(n, seconds_for(n))
    return n


@pytest.mark.parametrize("one,many,expected", [(0.10, 0.06, 2), (0.10, 0.095, 1), (0.01, 0.05, 1)])
def test_probe_keeps_the_faster_count(one, many, expected, monkeypatch):
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    counts = [_run(policy, lambda n: one if n == 1 else many) for _ in range(1 + 2 * blas_threads.PROBE_ROUNDS)]
    assert counts == [1] + [1, 2] * blas_threads.PROBE_ROUNDS  # warm-up, then alternating
    assert policy.choice == expected
    steady = [_run(policy, lambda n: one if n == 1 else many) for _ in range(5)]
    assert steady == [expected] * 5  # no new probe before REPROBE_S


def test_busy_machine_never_probes_and_backs_off(monkeypatch):
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    load = FakeLoad(others=1.0)
    policy = StepThreads(cores=2, load=load)
    assert [_run(policy, lambda n: 0.1) for _ in range(10)] == [1] * 10
    # quiet: it measures and takes two threads; then another process starts: back to one at once
    load.others = 0.0
    counts = [_run(policy, lambda n: 0.1 if n == 1 else 0.05) for _ in range(2 * blas_threads.PROBE_ROUNDS)]
    assert counts == [1, 2] * blas_threads.PROBE_ROUNDS and policy.choice == 2
    load.others = 0.9
    assert _run(policy, lambda n: 0.5) == 1 and policy.choice == 1
    load.others = 0.0
    assert _run(policy, lambda n: 0.1) == 1  # and it waits REPROBE_S before measuring again
    policy.next_probe = time.monotonic() - 1
    assert _run(policy, lambda n: 0.1) == 1 and policy.plan == [2] + [1, 2] * (blas_threads.PROBE_ROUNDS - 1)


def test_more_threads_are_dropped_when_they_stop_paying(monkeypatch):
    """After choosing two threads, steps that get slower on average than one thread was send it back to one."""
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    [_run(policy, lambda n: 0.10 if n == 1 else 0.06) for _ in range(1 + 2 * blas_threads.PROBE_ROUNDS)]
    assert policy.choice == 2
    assert [_run(policy, lambda n: 0.07) for _ in range(10)] == [2] * 10  # still faster than 0.10: kept
    counts = [_run(policy, lambda n: 0.20 if n == 2 else 0.10) for _ in range(6)]
    assert counts[:4] == [2] * 4 and counts[-1] == 1 and policy.choice == 1  # the median passed 0.10: back to one
    assert policy.next_probe > time.monotonic()


def test_one_slow_step_does_not_undo_the_choice(monkeypatch):
    """Stalls of the VM (a step 5x slower now and then) leave two threads chosen: the median decides."""
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    [_run(policy, lambda n: 0.10 if n == 1 else 0.06) for _ in range(1 + 2 * blas_threads.PROBE_ROUNDS)]
    durations = [0.06, 0.30, 0.06, 0.06, 0.30, 0.06, 0.06, 0.30, 0.06, 0.06, 0.30]
    assert [_run(policy, lambda n, d=d: d) for d in durations] == [2] * len(durations)


def test_a_count_fixed_in_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    policy = StepThreads(cores=2, load=FakeLoad())
    assert policy.user_fixed
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with policy.step():
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert inside == before


def test_step_applies_the_count(monkeypatch):
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    policy.warm, policy.choice, policy.next_probe = True, 2, time.monotonic() + 100
    with policy.step():
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {2}
    policy.choice = 1
    with policy.step():
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}


def test_other_load_from_proc_stat(tmp_path, monkeypatch):
    """/proc/stat's first line in ticks (user nice system idle iowait irq softirq steal); this process's own CPU
    time is taken off."""
    stat = tmp_path / "stat"
    tick = OtherLoad()._tick
    stat.write_text("cpu  1000 0 500 9000 100 0 0 0 0 0\n")
    clock = {"wall": 100.0, "own": 5.0}
    monkeypatch.setattr(blas_threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(blas_threads.time, "process_time", lambda: clock["own"])
    load = OtherLoad(str(stat))
    assert load.available
    # 2 s later: 3 core-seconds busy in all (user + system), of which this process used 1.2
    stat.write_text(f"cpu  {1000 + 2 * tick} 0 {500 + tick} {9000 + tick} 100 0 0 0 0 0\n")
    clock.update(wall=102.0, own=6.2)
    assert load.cores(min_interval=0.5) == pytest.approx((3.0 - 1.2) / 2.0)
    clock.update(wall=102.1)
    assert load.cores(min_interval=0.5) is None  # too soon
    assert OtherLoad(str(tmp_path / "missing")).available is False


def test_fit_results_do_not_depend_on_the_policy_beyond_rounding():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 11)).astype(np.float32)
    y = rng.standard_normal((96, 3)).astype(np.float32)

    def trained(choice):
        model = kconvert.Sequential([kconvert.Input((11,)), kconvert.layers.Dense(7, activation="tanh"),
                                     kconvert.layers.Dense(3)])
        model.set_weights([np.full(w.shape, 0.05, np.float32) * (i + 1) for i, w in enumerate(model.get_weights())])
        model.compile("sgd", "mse")
        model._compiled.threads = StepThreads(cores=2, load=FakeLoad(0.0 if choice == 2 else 5.0))
        return model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]

    np.testing.assert_allclose(trained(1), trained(2), rtol=1e-5)
