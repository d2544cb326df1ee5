"""kconvert's callbacks make tf_keras's decisions: both are driven with the same logs, in the order
tf_keras's `Model.fit` calls the hooks (engine/training.py), on small fake models."""

import os
import time

import numpy as np
import pytest

import kconvert.callbacks as kc
from kconvert.errors import ConfigError


class Named:
    def __init__(self, name):
        self.name = name


class FakeModel:
    """What callbacks touch: stop_training, optimizer.learning_rate, weights, save/save_weights, metrics."""

    def __init__(self, lr, tf=None):
        self.stop_training = False
        self.metrics = [Named("loss"), Named("accuracy")]
        self.weights = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
        self.saved = []
        if tf is None:
            self.optimizer = type("Opt", (), {})()
            self.optimizer.learning_rate = lr
        else:
            self.optimizer = type("Opt", (), {})()
            self.optimizer.lr = tf.Variable(lr, dtype="float32")
            self.distribute_strategy = tf.distribute.get_strategy()

    def lr(self):
        lr = getattr(self.optimizer, "learning_rate", None)
        return float(np.float32(lr if lr is not None else self.optimizer.lr.numpy()))

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def _write(self, kind, filepath):
        self.saved.append((kind, os.path.basename(filepath)))
        with open(filepath, "w") as f:
            f.write(kind)

    def save(self, filepath, overwrite=True, **kwargs):
        self._write("save", filepath)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        self._write("save_weights", filepath)


def fit(cb_list, model, epoch_logs, batch_logs=None, epochs=None, clock=None):
    """The hook order of tf_keras's Model.fit; epoch e's weights are filled with e+1 before its end."""
    epochs = epochs or len(epoch_logs)
    batch_logs = batch_logs or [[] for _ in range(epochs)]
    trace = []
    model.stop_training = False
    cb_list.on_train_begin()
    training_logs = None
    for epoch in range(epochs):
        trace.append(("lr_begin", epoch, model.lr()))
        cb_list.on_epoch_begin(epoch)
        trace.append(("lr_epoch", epoch, model.lr()))
        for step, logs in enumerate(batch_logs[epoch]):
            if clock is not None:
                clock.t += 0.0173
            cb_list.on_train_batch_begin(step)
            cb_list.on_train_batch_end(step, dict(logs))
            if model.stop_training:
                break
        model.weights = [np.full_like(w, epoch + 1) for w in model.weights]
        if clock is not None:
            clock.t += 0.05
        logs = dict(epoch_logs[epoch])
        cb_list.on_epoch_end(epoch, logs)
        training_logs = logs
        trace.append(("epoch_end", epoch, model.stop_training))
        if model.stop_training:
            break
    cb_list.on_train_end(training_logs)
    return trace


def as_tf_logs(logs):
    # tf_keras's fit hands callbacks Python floats (its float32 tensors synced to Python).
    return {k: float(np.float32(v)) for k, v in logs.items()}


def as_our_logs(logs):
    # kconvert's engine gives numpy float32 scalars; CallbackList turns them into Python numbers.
    return {k: np.float32(v) for k, v in logs.items()}


def run_both(tfk, make_callbacks, epoch_logs, batch_logs=None, capsys=None, lr=0.01, add_progbar=False,
             verbose=0, steps=None, clock=None, model_metrics=True):
    """Run the tf_keras and kconvert versions; returns (tf, ours) dicts of trace, model, history, stdout."""
    import tensorflow as tf
    from tf_keras.src import callbacks as tcb

    results = []
    for mod, model, conv in ((tcb, FakeModel(lr, tf), as_tf_logs), (kc, FakeModel(lr), as_our_logs)):
        if capsys is not None:
            capsys.readouterr()
        if clock is not None:
            clock.t = 1000.0
        if not model_metrics:
            model.metrics = []
        cbs = make_callbacks(mod)
        params = {"verbose": verbose, "epochs": len(epoch_logs), "steps": steps}
        cb_list = mod.CallbackList(cbs, add_history=True, add_progbar=add_progbar, model=model, **params)
        blogs = [[conv(b) for b in ep] for ep in batch_logs] if batch_logs else None
        trace = fit(cb_list, model, [conv(e) for e in epoch_logs], blogs, clock=clock)
        out = capsys.readouterr().out if capsys is not None else ""
        results.append({"trace": trace, "model": model, "history": model.history.history,
                        "epoch": model.history.epoch, "out": out, "cbs": cbs})
    return results


def val_losses(*values):
    return [{"loss": 1.0 + 0.1 * i, "val_loss": v, "val_accuracy": 0.5 - 0.01 * v}
            for i, v in enumerate(values)]


SERIES = {
    "plateau": val_losses(0.9, 0.8, 0.81, 0.805, 0.82, 0.83, 0.7, 0.85, 0.9),
    "improving": val_losses(0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45),
    "tiny_gains": val_losses(0.9, 0.8999, 0.8998, 0.8, 0.79995, 0.7999, 0.79985, 0.7998),
    "worse_at_once": val_losses(0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "nan_start": val_losses(float("nan"), float("nan"), float("nan"), 0.8, 0.85, 0.9, 0.95),
}

ES_CONFIGS = [
    {"patience": 0},
    {"patience": 2},
    {"patience": 2, "restore_best_weights": True, "verbose": 1},
    {"patience": 1, "min_delta": 0.001, "restore_best_weights": True},
    {"patience": 3, "baseline": 0.75, "restore_best_weights": True, "verbose": 1},
    {"patience": 1, "start_from_epoch": 3, "restore_best_weights": True},
    {"patience": 1, "monitor": "val_accuracy"},  # auto -> max
    {"patience": 2, "monitor": "val_accuracy", "mode": "min", "min_delta": -0.0005},
    {"patience": 2, "monitor": "loss", "mode": "max"},
    {"patience": 1, "monitor": "missing"},
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("series", sorted(SERIES))
@pytest.mark.parametrize("config", ES_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_early_stopping_matches_tf_keras(tfk, capsys, series, config):
    ref, ours = run_both(tfk, lambda m: [m.EarlyStopping(**config)], SERIES[series], capsys=capsys)
    assert ours["trace"] == ref["trace"]  # stops after the same epoch
    assert ours["epoch"] == ref["epoch"]
    for a, b in zip(ours["model"].weights, ref["model"].weights):  # the same epoch's weights restored
        np.testing.assert_array_equal(a, b)
    assert ours["out"] == ref["out"]
    assert ours["cbs"][0].stopped_epoch == ref["cbs"][0].stopped_epoch
    assert ours["cbs"][0].best_epoch == ref["cbs"][0].best_epoch


def test_early_stopping_decisions_are_not_trivial(tfk, capsys):
    # The plateau series with patience 2 stops at epoch 5 and restores epoch 2's weights (value 2).
    _, ours = run_both(tfk, lambda m: [m.EarlyStopping(patience=2, restore_best_weights=True, verbose=1)],
                       SERIES["plateau"], capsys=capsys)
    assert ours["epoch"] == [0, 1, 2, 3] and ours["model"].weights[0][0, 0] == 2
    assert "Epoch 4: early stopping" in ours["out"]


def test_early_stopping_without_any_improvement_restores_the_first_epoch(tfk, capsys):
    # NaN never improves: no stop after epoch 0, and the weights kept are those of the first epoch seen.
    ref, ours = run_both(tfk, lambda m: [m.EarlyStopping(patience=0, restore_best_weights=True, verbose=1)],
                         SERIES["nan_start"], capsys=capsys)
    assert ours["epoch"] == ref["epoch"] == [0, 1]
    assert ours["model"].weights[0][0, 0] == ref["model"].weights[0][0, 0] == 1
    assert ours["out"] == ref["out"]


def _step_schedule(epoch, lr):
    return lr if epoch < 2 else lr * 0.5


def _exp_schedule(epoch, lr):
    return float(lr * np.exp(-0.1))


def _old_schedule(epoch):
    return 0.1 / (1 + epoch)


@pytest.mark.parametrize("schedule", [_step_schedule, _exp_schedule, _old_schedule])
@pytest.mark.parametrize("verbose", [0, 1])
def test_learning_rate_scheduler_matches_tf_keras(tfk, capsys, schedule, verbose):
    logs = SERIES["improving"][:5]
    ref, ours = run_both(tfk, lambda m: [m.LearningRateScheduler(schedule, verbose=verbose)], logs,
                         capsys=capsys, lr=0.01)
    assert ours["trace"] == ref["trace"]  # the optimizer's learning rate before and after each epoch_begin
    assert [np.float32(v) for v in ours["history"]["lr"]] == [np.float32(v) for v in ref["history"]["lr"]]
    assert ours["out"] == ref["out"]
    assert len({t[2] for t in ours["trace"]}) > 1


def test_learning_rate_scheduler_rejects_non_float(tfk):
    model = FakeModel(0.01)
    cb = kc.LearningRateScheduler(lambda epoch, lr: 1)
    cb.set_model(model)
    with pytest.raises(ConfigError, match="should be float"):
        cb.on_epoch_begin(0)


RLR_CONFIGS = [
    {"patience": 1},
    {"patience": 2, "factor": 0.5, "cooldown": 1, "verbose": 1},
    {"patience": 1, "factor": 0.2, "min_lr": 0.0009, "verbose": 1},
    {"patience": 1, "epsilon": 0.05},
    {"patience": 1, "monitor": "val_accuracy"},
    {"patience": 1, "monitor": "val_loss", "mode": "max", "min_delta": 0},
    {"patience": 1, "monitor": "missing"},
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("series", ["plateau", "tiny_gains", "worse_at_once"])
@pytest.mark.parametrize("config", RLR_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_reduce_lr_on_plateau_matches_tf_keras(tfk, capsys, series, config):
    ref, ours = run_both(tfk, lambda m: [m.ReduceLROnPlateau(**config)], SERIES[series], capsys=capsys,
                         lr=0.01)
    assert ours["trace"] == ref["trace"]
    assert [np.float32(v) for v in ours["history"]["lr"]] == [np.float32(v) for v in ref["history"]["lr"]]
    assert ours["out"] == ref["out"]


def test_reduce_lr_on_plateau_reduces(tfk, capsys):
    _, ours = run_both(tfk, lambda m: [m.ReduceLROnPlateau(patience=1, factor=0.5)], SERIES["worse_at_once"],
                       capsys=capsys, lr=0.01)
    assert ours["model"].lr() == pytest.approx(0.01 * 0.5 ** 5, rel=1e-6)
    with pytest.raises(ConfigError):
        kc.ReduceLROnPlateau(factor=1.0)


CKPT_CONFIGS = [
    ({"filepath": "weights.{epoch:02d}-{val_loss:.2f}.h5", "verbose": 1}, None),
    ({"filepath": "best.h5", "save_best_only": True, "verbose": 1}, None),
    ({"filepath": "acc.{epoch:03d}.h5", "monitor": "val_accuracy", "save_best_only": True, "verbose": 1}, None),
    ({"filepath": "w.{epoch}.h5", "save_weights_only": True, "save_best_only": True, "mode": "max",
      "verbose": 1}, None),
    ({"filepath": "sub/dir/m-{epoch:02d}-{loss:.3f}.keras", "period": 2, "verbose": 1}, None),
    ({"filepath": "t.{epoch:02d}.h5", "save_best_only": True, "initial_value_threshold": 0.805,
      "verbose": 1}, None),
    ({"filepath": "b.{epoch:02d}-{batch:02d}.h5", "save_freq": 3, "verbose": 1}, 4),
    ({"filepath": "bb.{epoch:02d}.h5", "save_freq": 5, "save_weights_only": True, "monitor": "loss",
      "save_best_only": True, "verbose": 1}, 4),
    ({"filepath": "missing.h5", "monitor": "val_nope", "save_best_only": True}, None),
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("config,batches", CKPT_CONFIGS, ids=[c[0]["filepath"] for c in CKPT_CONFIGS])
def test_model_checkpoint_matches_tf_keras(tfk, capsys, tmp_path, config, batches):
    epoch_logs = SERIES["plateau"][:6]
    batch_logs = None
    if batches:
        batch_logs = [[{"loss": 1.0 - 0.01 * (e * batches + s), "accuracy": 0.5} for s in range(batches)]
                      for e in range(len(epoch_logs))]
    dirs = [tmp_path / "tf", tmp_path / "ours"]
    it = iter(dirs)

    def make(m):
        d = next(it)
        d.mkdir()
        kwargs = dict(config, filepath=str(d / config["filepath"]))
        return [m.ModelCheckpoint(**kwargs)]

    ref, ours = run_both(tfk, make, epoch_logs, batch_logs, capsys=capsys)
    assert ours["model"].saved == ref["model"].saved
    listing = [sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in dirs]
    assert listing[1] == listing[0]
    assert ours["out"].replace(str(dirs[1]), "D") == ref["out"].replace(str(dirs[0]), "D")
    if config["filepath"] != "missing.h5":
        assert ours["model"].saved


def test_model_checkpoint_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="save_freq"):
        kc.ModelCheckpoint(str(tmp_path / "x.h5"), save_freq="batch")
    cb = kc.ModelCheckpoint(str(tmp_path / "{nope}.h5"))
    cb.set_model(FakeModel(0.01))
    with pytest.raises(ConfigError, match="failed to format"):
        cb.on_epoch_end(0, {"loss": 1.0})


@pytest.mark.parametrize("append", [False, True])
@pytest.mark.parametrize("separator", [",", ";"])
def test_csv_logger_bytes_match_tf_keras(tfk, tmp_path, append, separator):
    paths = [tmp_path / "tf.csv", tmp_path / "ours.csv"]
    if append:
        for p in paths:
            p.write_text("epoch,loss\n0,1.5\n")
    it = iter(paths)
    logs = [dict(e, accuracy=0.25 + 0.1 * i) for i, e in enumerate(SERIES["plateau"][:4])]
    run_both(tfk, lambda m: [m.ReduceLROnPlateau(patience=1, factor=0.3),  # adds the float32 'lr' column
                             m.CSVLogger(str(next(it)), separator=separator, append=append)], logs)
    text = paths[1].read_bytes()
    assert text == paths[0].read_bytes()
    assert text.count(b"\r\n") == 4 + (not append) and b"0.003" in text


def test_csv_logger_without_validation_keys(tfk, tmp_path):
    paths = [tmp_path / "tf.csv", tmp_path / "ours.csv"]
    it = iter(paths)
    logs = [{"loss": 0.7 - 0.1 * i, "mae": 0.3 / (i + 1)} for i in range(3)]
    run_both(tfk, lambda m: [m.CSVLogger(str(next(it)))], logs)
    assert paths[1].read_bytes() == paths[0].read_bytes()
    assert b"val_loss" in paths[1].read_bytes() and b"NA" in paths[1].read_bytes()


def test_terminate_on_nan_matches_tf_keras(tfk, capsys):
    batch_logs = [[{"loss": 0.5}, {"loss": 0.4}], [{"loss": 0.3}, {"loss": float("nan")}, {"loss": 0.2}],
                  [{"loss": 0.1}]]
    ref, ours = run_both(tfk, lambda m: [m.TerminateOnNaN()], SERIES["improving"][:3], batch_logs,
                         capsys=capsys)
    assert ours["trace"] == ref["trace"] and ours["out"] == ref["out"]
    assert "Batch 1: Invalid loss, terminating training" in ours["out"] and ours["epoch"] == [0, 1]


def test_lambda_and_custom_callbacks_see_the_same_calls(tfk):
    def make(m):
        calls = []

        class Custom(m.Callback):
            def on_batch_end(self, batch, logs=None):  # the Keras 1 alias still fires on train batches
                calls.append(("custom_batch_end", batch, sorted(logs)))

            def on_epoch_end(self, epoch, logs=None):
                calls.append(("custom_epoch_end", epoch, round(logs["val_loss"], 6)))

        lam = m.LambdaCallback(on_train_begin=lambda logs: calls.append(("train_begin",)),
                               on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
                               on_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch)),
                               on_train_end=lambda logs: calls.append(("train_end", sorted(logs))))
        custom = Custom()
        custom.calls = calls
        return [custom, lam]

    batch_logs = [[{"loss": 0.5, "accuracy": 0.5}] * 2] * 3
    ref, ours = run_both(tfk, make, SERIES["improving"][:3], batch_logs)
    assert ours["cbs"][0].calls == ref["cbs"][0].calls
    assert ("custom_batch_end", 1, ["accuracy", "loss"]) in ours["cbs"][0].calls
    assert ("batch_begin", 0) in ours["cbs"][0].calls


def test_history_and_callback_list(tfk):
    ref, ours = run_both(tfk, lambda m: [], SERIES["improving"][:4])
    assert ours["history"].keys() == ref["history"].keys()
    for k in ref["history"]:
        assert ours["history"][k] == ref["history"][k]
        assert all(type(v) is float for v in ours["history"][k])  # numpy scalars become Python numbers
    assert ours["epoch"] == ref["epoch"] == [0, 1, 2, 3]
    cb_list = kc.CallbackList([kc.History()], add_history=True, add_progbar=True, model=FakeModel(0.1),
                              verbose=1, epochs=1, steps=2)
    assert [type(c).__name__ for c in cb_list] == ["History", "ProgbarLogger"]
    assert not kc.CallbackList([kc.EarlyStopping()])._should_call_train_batch_hooks
    assert kc.CallbackList([kc.TerminateOnNaN()])._should_call_train_batch_hooks


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("verbose", [1, 2])
@pytest.mark.parametrize("steps", [5, None])
@pytest.mark.parametrize("model_metrics", [True, False])  # False: the bar averages the values itself
def test_progbar_logger_prints_what_tf_keras_prints(tfk, capsys, monkeypatch, verbose, steps, model_metrics):
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    rng = np.random.default_rng(3)
    batch_logs = [[{"loss": float(rng.uniform(0.1, 2)), "accuracy": float(rng.uniform(0.2, 0.9))}
                   for _ in range(5)] for _ in range(3)]
    epoch_logs = [dict(b[-1], val_loss=0.5 - 0.1 * e, val_accuracy=0.6 + 0.01 * e)
                  for e, b in enumerate(batch_logs)]
    ref, ours = run_both(tfk, lambda m: [], epoch_logs, batch_logs, capsys=capsys, add_progbar=True,
                         verbose=verbose, steps=steps, clock=clock, model_metrics=model_metrics)
    assert ours["out"] == ref["out"]
    assert "Epoch 3/3" in ours["out"] and "5/5" in ours["out"] and "val_loss: 0.3000" in ours["out"]


def test_progbar_logger_counting_samples(tfk, capsys, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    batch_logs = [[{"loss": 1.0 / (s + e + 1), "size": 7 if s < 3 else 4} for s in range(4)] for e in range(2)]
    epoch_logs = [{"loss": 0.3 - 0.1 * e} for e in range(2)]
    ref, ours = run_both(tfk, lambda m: [m.ProgbarLogger(count_mode="samples")], epoch_logs, batch_logs,
                         capsys=capsys, verbose=1, clock=clock, model_metrics=False)
    assert ours["out"] == ref["out"] and "25/25" in ours["out"] and "/sample" in ours["out"]
