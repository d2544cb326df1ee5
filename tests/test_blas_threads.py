"""The per-step thread policy (kconvert/runtime/blas_threads.py): it measures one thread, all cores in numpy's
BLAS and MLAS on all cores, picks the fastest, backs off when other processes take the cores, and leaves a count
fixed in the environment alone."""

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
    """One step: the mode the policy picks, recorded with the duration `seconds_for(mode)`."""
    mode = policy._next()
    policy._record(mode, seconds_for(mode))
    return mode


PROBE = blas_threads.probe_plan()  # one, one, one, one, mlas, mlas, ...


@pytest.mark.parametrize("one,all_,mlas,expected", [(0.10, 0.06, 0.07, "all"), (0.10, 0.07, 0.06, "mlas"),
                                                    (0.10, 0.095, 0.092, "one"), (0.01, 0.05, 0.02, "one")])
def test_probe_keeps_the_fastest_mode(one, all_, mlas, expected, monkeypatch):
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    times = {"one": one, "all": all_, "mlas": mlas}
    modes = [_run(policy, times.__getitem__) for _ in range(1 + len(PROBE))]
    assert modes == ["one"] + PROBE  # warm-up, then a block per mode
    assert policy.choice == expected
    steady = [_run(policy, times.__getitem__) for _ in range(5)]
    assert steady == [expected] * 5  # no new probe before REPROBE_S


def test_probe_blocks_and_their_first_steps(monkeypatch):
    """A block of steps per mode, its first step not counted: the step after another mode pays for that mode's
    leftovers (OpenBLAS's spinning workers after "all"), which must not decide the choice."""
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    assert PROBE == [m for m in ("one", "mlas", "all") for _ in range(blas_threads.PROBE_ROUNDS + 1)]
    policy = StepThreads(cores=2, load=FakeLoad())
    _run(policy, lambda m: 1.0)  # warm-up
    previous = [None]

    def seconds(mode):  # "mlas" is the fastest, but 0.2 s slower right after a change of mode
        slow = 0.2 if previous[0] != mode else 0.0
        previous[0] = mode
        return {"one": 0.10, "mlas": 0.06, "all": 0.08}[mode] + slow

    assert [_run(policy, seconds) for _ in PROBE] == PROBE
    assert policy.choice == "mlas" and policy.one_thread == pytest.approx(0.10)


def test_busy_machine_never_probes_and_backs_off(monkeypatch):
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    load = FakeLoad(others=1.0)
    policy = StepThreads(cores=2, load=load)
    assert [_run(policy, lambda m: 0.1) for _ in range(10)] == ["one"] * 10
    # quiet: it measures and takes all cores; then another process starts: back to one at once
    load.others = 0.0
    modes = [_run(policy, lambda m: 0.05 if m == "all" else 0.1) for _ in range(len(PROBE))]
    assert modes == PROBE and policy.choice == "all"
    load.others = 0.9
    assert _run(policy, lambda m: 0.5) == "one" and policy.choice == "one"
    load.others = 0.0
    assert _run(policy, lambda m: 0.1) == "one"  # and it waits REPROBE_S before measuring again
    policy.next_probe = time.monotonic() - 1
    assert _run(policy, lambda m: 0.1) == "one" and policy.plan == PROBE[1:]


@pytest.mark.parametrize("mode", ["all", "mlas"])
def test_more_cores_are_dropped_when_they_stop_paying(mode, monkeypatch):
    """After choosing a multi-core mode, steps slower than one thread was (their median) send it back to one."""
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    [_run(policy, lambda m: 0.06 if m == mode else 0.10) for _ in range(1 + len(PROBE))]
    assert policy.choice == mode
    # for SETTLE_S after the measurement, steps are not judged (the "all" block's spinning workers slow them)
    assert [_run(policy, lambda m: 0.50) for _ in range(10)] == [mode] * 10 and not policy.recent
    policy.settled = time.monotonic() - 1  # as if SETTLE_S had passed
    assert [_run(policy, lambda m: 0.07) for _ in range(10)] == [mode] * 10  # still faster than 0.10: kept
    modes = [_run(policy, lambda m: 0.20 if m == mode else 0.10) for _ in range(6)]
    assert modes[:4] == [mode] * 4 and modes[-1] == "one" and policy.choice == "one"  # the median passed 0.10
    assert policy.next_probe > time.monotonic()


def test_one_slow_step_does_not_undo_the_choice(monkeypatch):
    """Stalls of the VM (a step 5x slower now and then) leave the choice alone: the median decides."""
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    [_run(policy, lambda m: 0.06 if m == "all" else 0.10) for _ in range(1 + len(PROBE))]
    policy.settled = time.monotonic() - 1  # past SETTLE_S: every step is judged
    durations = [0.06, 0.30, 0.06, 0.06, 0.30, 0.06, 0.06, 0.30, 0.06, 0.06, 0.30]
    assert [_run(policy, lambda m, d=d: d) for d in durations] == ["all"] * len(durations)
    assert len(policy.recent) == blas_threads.RECENT


def test_a_count_fixed_in_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    policy = StepThreads(cores=2, load=FakeLoad())
    assert policy.user_fixed
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with policy.step():
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert inside == before


def test_step_applies_the_mode(monkeypatch):
    from kconvert.ops import gemm

    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    policy = StepThreads(cores=2, load=FakeLoad())
    policy.warm, policy.next_probe = True, time.monotonic() + 100
    for mode, blas, mlas in [("all", 2, 0), ("one", 1, 1), ("mlas", 1, 2)]:
        policy.choice = mode
        for context in (policy.step, policy.current):
            with context():
                assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {blas}
                assert gemm._local.threads == mlas
            assert getattr(gemm._local, "threads", 0) == 0


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
