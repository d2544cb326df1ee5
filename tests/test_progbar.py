"""kconvert's Progbar prints what tf_keras's Progbar prints for the same updates at the same (mocked) times."""

import time

import numpy as np
import pytest

from kconvert.runtime.progbar import Progbar


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def _run(make_bar, script, clock, capsys, dynamic=None):
    """script: list of ("update"|"add"|"new", time, args) driving one Progbar (a "new" starts another)."""
    capsys.readouterr()
    bar = None
    for op, t, args in script:
        clock.t = t
        if op == "new":
            bar = make_bar(**args)
            if dynamic is not None:
                bar._dynamic_display = dynamic
        elif op == "update":
            bar.update(*args)
        else:
            bar.add(*args)
    return capsys.readouterr().out


def _compare(tfk, script, monkeypatch, capsys, dynamic=None):
    from tf_keras.src.utils.generic_utils import Progbar as TfProgbar

    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    ref = _run(TfProgbar, script, clock, capsys, dynamic)
    ours = _run(Progbar, script, clock, capsys, dynamic)
    assert ours == ref
    return ours


def _epoch_script(target, t0, dt, rng, verbose, stateful=("acc",), finalize_values=True):
    """One bar of `target` steps: a loss averaged by the bar, a stateful acc, a tiny and a negative value."""
    script = [("new", t0, {"target": target, "verbose": verbose, "stateful_metrics": list(stateful)})]
    for step in range(1, target + 1):
        t0 += dt * (1 + 0.3 * rng.random())
        values = [("loss", float(rng.uniform(0.2, 1.5))), ("acc", float(rng.uniform(0.3, 0.9))),
                  ("tiny", float(rng.uniform(1e-5, 9e-4))), ("neg", float(rng.uniform(-0.5, -2e-4)))]
        finalize = step == target
        script.append(("update", t0, (step, values if (not finalize or finalize_values) else None)))
    return script, t0


@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("dt", [0.011, 0.0004, 2.5, 95.0])  # ms/step, us/step, s/step; ETA in s, m:ss, h:mm:ss
def test_verbose1_matches_tf_keras(tfk, monkeypatch, capsys, dynamic, dt):
    rng = np.random.default_rng(7)
    script, _ = _epoch_script(13, 1000.0, dt, rng, verbose=1)
    out = _compare(tfk, script, monkeypatch, capsys, dynamic)
    assert out.count("\n") >= 1 and "13/13 [==============================]" in out
    if dynamic:
        assert "\b" in out and "\r" in out
    if dt > 60:
        assert "ETA: " in out and ":" in out.split("ETA: ")[1].split(" ")[0]


def test_verbose1_eta_and_interval_gating(tfk, monkeypatch, capsys):
    # Updates closer than `interval` are skipped unless they finalize; long steps give an h:mm:ss ETA.
    script = [("new", 0.0, {"target": 207, "verbose": 1})]
    times = [0.5, 0.51, 0.52, 4000.0, 4000.01, 4100.0, 9000.0]
    for step, t in zip([1, 2, 3, 4, 5, 100, 207], times):
        script.append(("update", t, (step, [("loss", 0.5 / step), ("mae", 2e-4 * step)])))
    out = _compare(tfk, script, monkeypatch, capsys)
    assert "ETA: " in out and "207/207" in out


@pytest.mark.parametrize("values_at_end", [True, False])
def test_verbose2_matches_tf_keras(tfk, monkeypatch, capsys, values_at_end):
    rng = np.random.default_rng(11)
    script, t = _epoch_script(9, 1000.0, 0.013, rng, verbose=2, finalize_values=values_at_end)
    script2, _ = _epoch_script(9, t + 1.0, 0.7, rng, verbose=2, finalize_values=values_at_end)
    out = _compare(tfk, script + script2, monkeypatch, capsys)
    assert out.count("\n") == 2 and "/epoch" in out and "9/9 - " in out


def test_verbose2_finalize_before_target_has_no_time_per_epoch(tfk, monkeypatch, capsys):
    script = [("new", 0.0, {"target": 10, "verbose": 2}),
              ("update", 1.0, (4, [("loss", 0.25)])), ("update", 2.0, (7, [("loss", 0.5)], True))]
    out = _compare(tfk, script, monkeypatch, capsys)
    assert "/epoch" not in out and out.startswith(" 7/10 - ")


def test_unknown_target_and_add(tfk, monkeypatch, capsys):
    script = [("new", 5.0, {"target": None, "verbose": 1, "stateful_metrics": ["acc"]}),
              ("add", 5.2, (3, [("loss", 0.9), ("acc", 0.4)])),
              ("add", 5.6, (4, [("loss", 0.7), ("acc", 0.5)])),
              ("update", 5.9, (7, [("loss", 0.6), ("acc", 0.55)], True))]
    out = _compare(tfk, script, monkeypatch, capsys)
    assert "/Unknown" in out


def test_samples_unit_and_silent(tfk, monkeypatch, capsys):
    script = [("new", 0.0, {"target": 250, "verbose": 1, "unit_name": "sample"}),
              ("update", 0.3, (128, [("loss", 1.25)])), ("update", 0.5, (250, [("loss", 1.0)]))]
    assert "2ms/sample" in _compare(tfk, script, monkeypatch, capsys)
    silent = [("new", 0.0, {"target": 5, "verbose": 0}), ("update", 1.0, (5, [("loss", 1.0)]))]
    assert _compare(tfk, silent, monkeypatch, capsys) == ""


def test_formatting_rule():
    # 4 decimals above 1e-3 in magnitude, .4e below; weighted by the steps each update covers.
    bar = Progbar(10, verbose=0)
    bar.update(2, [("a", 1.0), ("b", 5e-4)])
    bar.update(6, [("a", 4.0), ("b", 5e-4)])
    assert bar._average("a") == pytest.approx((1.0 * 2 + 4.0 * 4) / 6)
    line = bar._line_verbose1(6, time.time(), "", False)
    assert " - a: 3.0000" in line and " - b: 5.0000e-04" in line
