"""kconvert.metrics against tf_keras's metrics: stateful results over several batches (with sample weights),
function forms, configs, lookup, and the 'accuracy' resolution tf_keras's compile applies."""

import numpy as np
import pytest
from conftest import assert_close

from kconvert import losses, metrics
from kconvert.errors import ConfigError

N, T, C = 5, 3, 7


def _batches(kind, rng, shape, count=3):
    out = []
    for _ in range(count):
        if kind == "binary":
            y_true = rng.integers(0, 2, size=shape).astype(np.float32)
            y_pred = rng.uniform(0, 1, size=shape).astype(np.float32)
            y_pred.reshape(-1)[:2] = [0.5, 0.5000001]  # the threshold edge: > 0.5 only
        elif kind == "categorical":
            y_true = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], size=shape[:-1])]
            y_pred = rng.uniform(0, 1, size=shape).astype(np.float32)
            y_pred.reshape(-1, shape[-1])[0, :4] = 0.9  # a tie across the top-k boundary
        elif kind == "sparse":
            y_true = rng.integers(0, shape[-1], size=shape[:-1])
            y_pred = rng.uniform(0, 1, size=shape).astype(np.float32)
        elif kind == "sparse_col":
            y_true = rng.integers(0, shape[-1], size=(*shape[:-1], 1))
            y_pred = rng.uniform(0, 1, size=shape).astype(np.float32)
        elif kind == "equal":
            y_true = rng.integers(0, 3, size=shape).astype(np.float32)
            y_pred = rng.integers(0, 3, size=shape).astype(np.float32)
        else:
            y_true = rng.normal(size=shape).astype(np.float32)
            y_pred = rng.normal(size=shape).astype(np.float32)
        out.append((y_true, y_pred))
    return out


CASES = [
    ("Accuracy", {}, "equal", (N, C)),
    ("BinaryAccuracy", {}, "binary", (N, C)), ("BinaryAccuracy", {"threshold": 0.3}, "binary", (N, T, C)),
    ("BinaryAccuracy", {}, "binary", (N, 1)),
    ("CategoricalAccuracy", {}, "categorical", (N, C)), ("CategoricalAccuracy", {}, "categorical", (N, T, C)),
    ("SparseCategoricalAccuracy", {}, "sparse", (N, C)), ("SparseCategoricalAccuracy", {}, "sparse_col", (N, C)),
    ("SparseCategoricalAccuracy", {}, "sparse", (N, T, C)),
    ("TopKCategoricalAccuracy", {"k": 3}, "categorical", (N, C)), ("TopKCategoricalAccuracy", {}, "categorical",
                                                                   (N, C)),
    ("SparseTopKCategoricalAccuracy", {"k": 2}, "sparse", (N, C)),
    ("SparseTopKCategoricalAccuracy", {"k": 3}, "sparse_col", (N, C)),
    ("MeanSquaredError", {}, "regression", (N, C)), ("MeanSquaredError", {}, "regression", (N, T, C)),
    ("MeanAbsoluteError", {}, "regression", (N, C)),
]


def _weights(kind, rng, shape):
    return {None: None, "N": rng.uniform(0.1, 2, size=(shape[0],)).astype(np.float32),
            "N1": rng.uniform(0.1, 2, size=(shape[0], 1)).astype(np.float32),
            "NT": rng.uniform(0.1, 2, size=shape[:2]).astype(np.float32)}[kind]


@pytest.mark.parametrize("class_name,kwargs,kind,shape", CASES)
def test_metric_classes_over_batches(tfk, rng, class_name, kwargs, kind, shape):
    import tensorflow as tf

    weight_kinds = [None, "N", "N1"] + (["NT"] if len(shape) == 3 else [])
    for wk in weight_kinds:
        ours = getattr(metrics, class_name)(**kwargs)
        ref = getattr(tfk.metrics, class_name)(**kwargs)
        for y_true, y_pred in _batches(kind, rng, shape):
            sw = _weights(wk, rng, shape)
            ours.update_state(y_true, y_pred, sample_weight=sw)
            ref.update_state(tf.constant(y_true), tf.constant(y_pred),
                             sample_weight=None if sw is None else tf.constant(sw))
            assert_close(ours.result(), ref.result().numpy(), what=f"{class_name} {kwargs} sw={wk}")
        assert [w.name for w in ours.variables()] == [v.name for v in ref.variables]
        for w, v in zip(ours.variables(), ref.variables):
            assert_close(w.value, v.numpy(), what=f"{class_name} {w.name}")
        ours.reset_state()
        assert float(ours.result()) == 0.0
    assert ours.get_config() == ref.get_config()
    again = getattr(metrics, class_name).from_config(ours.get_config())
    assert again.get_config() == ours.get_config()
    assert metrics.serialize(ours) == tfk.metrics.serialize(ref)


def test_metric_call_and_mean(tfk, rng):
    import tensorflow as tf

    ours, ref = metrics.Mean(), tfk.metrics.Mean()
    for _ in range(3):
        values = rng.normal(size=(N, T)).astype(np.float32)
        sw = rng.uniform(0, 2, size=(N,)).astype(np.float32)
        assert_close(ours(values, sample_weight=sw), ref(tf.constant(values), sample_weight=tf.constant(sw)).numpy())
    total, ref_total = metrics.Sum(), tfk.metrics.Sum()
    values = rng.normal(size=(N, 2)).astype(np.float32)
    assert_close(total(values), ref_total(tf.constant(values)).numpy())


FUNCTIONS = [
    ("binary_accuracy", "binary", {}), ("binary_accuracy", "binary", {"threshold": 0.7}),
    ("categorical_accuracy", "categorical", {}), ("sparse_categorical_accuracy", "sparse", {}),
    ("sparse_categorical_accuracy", "sparse_col", {}), ("top_k_categorical_accuracy", "categorical", {"k": 2}),
    ("sparse_top_k_categorical_accuracy", "sparse", {"k": 4}), ("accuracy", "equal", {}),
]


@pytest.mark.parametrize("name,kind,kwargs", FUNCTIONS)
def test_metric_functions(tfk, rng, name, kind, kwargs):
    import tensorflow as tf
    from tf_keras.src.metrics import accuracy_metrics

    for shape in ((N, C), (N, T, C)):
        (y_true, y_pred), = _batches(kind, rng, shape, count=1)
        ours = getattr(metrics, name)(y_true, y_pred, **kwargs)
        ref = getattr(accuracy_metrics, name)(tf.constant(y_true), tf.constant(y_pred), **kwargs).numpy()
        assert_close(ours, ref, what=f"{name} {shape}")


def test_get_and_deserialize(tfk):
    assert metrics.get("accuracy") is metrics.accuracy and metrics.get("mse") is losses.mean_squared_error
    assert metrics.get("top_k_categorical_accuracy") is metrics.top_k_categorical_accuracy
    assert isinstance(metrics.get("BinaryAccuracy"), metrics.BinaryAccuracy)
    ref = tfk.metrics.TopKCategoricalAccuracy(k=3, name="top3")
    assert metrics.get(tfk.metrics.serialize(ref)).get_config() == ref.get_config()
    # tf_keras stores compiled metrics as MeanMetricWrapper configs naming the function
    wrapped = metrics.get({"class_name": "MeanMetricWrapper",
                           "config": {"name": "accuracy", "dtype": "float32", "fn": "categorical_accuracy"}})
    assert wrapped.name == "accuracy" and wrapped._fn is metrics.categorical_accuracy
    assert wrapped.get_config() == {"name": "accuracy", "dtype": "float32", "fn": "categorical_accuracy"}
    with pytest.raises(ConfigError, match="unknown metric"):
        metrics.get("nope")


SHAPE_CASES = [  # (loss, output shape, label shape)
    ("binary_crossentropy", (None, 1), (None, 1)), ("categorical_crossentropy", (None, 4), (None, 4)),
    ("sparse_categorical_crossentropy", (None, 4), (None, 1)), ("sparse_categorical_crossentropy", (None, 4), (None,)),
    ("mse", (None, 3), (None, 3)), ("binary_crossentropy", (None, 3), (None, 3)),
    ("categorical_crossentropy", (None, 1), (None, 1)), ("sparse_categorical_crossentropy", (None, 5, 4), (None, 5)),
]


@pytest.mark.parametrize("loss,out_shape,label_shape", SHAPE_CASES)
@pytest.mark.parametrize("metric", ["accuracy", "acc", "crossentropy", "ce"])
def test_accuracy_resolution_follows_tf_keras(tfk, loss, out_shape, label_shape, metric):
    """The function tf_keras's compile (`MetricsContainer._get_metric_object`) picks for the same shapes."""
    import tensorflow as tf
    from tf_keras.src.engine import compile_utils

    container = compile_utils.MetricsContainer(metrics=[metric])
    y_t = tf.zeros([2 if d is None else d for d in label_shape])
    y_p = tf.zeros([2 if d is None else d for d in out_shape])
    ref = container._get_metric_object(metric, y_t, y_p)
    ours = metrics.compile_metric(metric, loss=loss, output_shape=out_shape, y_true_shape=label_shape)
    assert ours.name == ref.name == metric
    assert ours._fn.__name__ == ref._fn.__name__


def test_compiled_model_reports_the_same_accuracy(tfk, rng):
    """A real tf_keras fit: its History key and accuracy value equal ours for the resolved metric."""
    x = rng.normal(size=(N, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=(N, 1))
    inp = tfk.Input((3,))
    model = tfk.Model(inp, tfk.layers.Dense(4, activation="softmax")(inp))
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["acc"])
    history = model.evaluate(x, y, verbose=0, return_dict=True)
    ours = metrics.compile_metric("acc", loss="sparse_categorical_crossentropy", output_shape=(None, 4),
                                  y_true_shape=(None, 1))
    ours.update_state(y, model.predict(x, verbose=0))
    assert "acc" in history
    assert_close(ours.result(), history["acc"])


def test_keras2_rule_and_display_names():
    """Multi-backend Keras 1/2 (no label shape at compile time) decide from the loss (keras/engine/training.py
    of Keras 2.2.5) and printed 'acc' before 2.3."""
    assert metrics.resolve_accuracy("binary_crossentropy", (None, 3)) is metrics.binary_accuracy
    assert metrics.resolve_accuracy(losses.BinaryCrossentropy(), (None, 3)) is metrics.binary_accuracy
    assert metrics.resolve_accuracy("sparse_categorical_crossentropy", (None, 3)) is metrics.sparse_categorical_accuracy
    assert metrics.resolve_accuracy("mse", (None, 1)) is metrics.binary_accuracy
    assert metrics.resolve_accuracy("categorical_crossentropy", (None, 3), metric="ce") is losses.categorical_crossentropy
    assert metrics.display_name("accuracy", "2.2.4") == "acc" and metrics.display_name("accuracy", "1.2.2") == "acc"
    assert metrics.display_name("accuracy", "2.3.1") == "accuracy" and metrics.display_name("acc") == "acc"
    assert metrics.display_name("crossentropy", "2.1.6") == "ce"
    with pytest.raises(ConfigError, match="accuracy"):
        metrics.resolve_accuracy("mse", (None, 3), metric="mse")


@pytest.mark.parametrize("kwargs", [{}, {"curve": "PR"}, {"num_thresholds": 17, "summation_method": "minoring"},
                                    {"curve": "PR", "summation_method": "majoring"}, {"from_logits": True}])
def test_auc_over_batches(tfk, rng, kwargs):
    import tensorflow as tf

    for with_weights in (False, True):
        ours, ref = metrics.AUC(name="auc_m", **kwargs), tfk.metrics.AUC(name="auc_m", **kwargs)
        for _ in range(3):
            y_true = rng.integers(0, 2, size=(N, 3)).astype(np.float32)
            score = rng.uniform(0, 1, size=(N, 3)).astype(np.float32)
            y_pred = np.clip(score * 0.6 + y_true * 0.4, 0, 1)  # informative but imperfect scores
            y_pred.reshape(-1)[:3] = [0.0, 1.0, 0.5]  # bucket edges
            if kwargs.get("from_logits"):
                y_pred = (y_pred - 0.5) * 6.0
            sw = rng.uniform(0.2, 2, size=(N,)).astype(np.float32) if with_weights else None
            ours.update_state(y_true, y_pred, sample_weight=sw)
            ref.update_state(tf.constant(y_true), tf.constant(y_pred),
                             sample_weight=None if sw is None else tf.constant(sw))
            assert_close(ours.result(), ref.result().numpy(), what=f"AUC {kwargs}")
        for w, v in zip(ours.variables(), ref.variables):
            assert w.name == v.name
            assert_close(w.value, v.numpy(), what=f"AUC {w.name}")
    assert ours.get_config() == ref.get_config()
    assert metrics.get(tfk.metrics.serialize(ref)).get_config() == ref.get_config()
