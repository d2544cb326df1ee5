"""kconvert.losses against tf_keras's losses: values (functions, classes, reductions, sample weights), gradients
(kconvert's autodiff vs tf.GradientTape), configs and lookup."""

import numpy as np
import pytest
from conftest import assert_close

from kconvert import losses
from kconvert.errors import ConfigError
from kconvert.runtime.autodiff import value_and_grad

N, T, C = 5, 3, 7


def _probs(rng, shape, edges=True):
    """Probabilities with some entries on and near the clipping edges (0, 1e-9, 1 - 1e-9, 1)."""
    p = rng.uniform(0.02, 0.98, size=shape).astype(np.float32)
    if edges:
        flat = p.reshape(-1)
        flat[[0, 3, 8, 13]] = [0.0, 1e-9, 1.0 - 1e-9, 1.0]
    return p


def _data(name, rng, shape):
    """(y_true, y_pred) fit for loss `name` with outputs of `shape`."""
    if name in ("binary_crossentropy",):
        return (rng.integers(0, 2, size=shape).astype(np.float32), _probs(rng, shape))
    if name in ("categorical_crossentropy", "kl_divergence", "categorical_hinge"):
        labels = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], size=shape[:-1])]
        pred = _probs(rng, shape)
        if name == "kl_divergence":
            labels = _probs(rng, shape, edges=False)
            labels /= labels.sum(-1, keepdims=True)
        return labels, pred
    if name in ("hinge", "squared_hinge"):
        return (rng.integers(0, 2, size=shape).astype(np.float32), rng.normal(0, 1.5, size=shape).astype(np.float32))
    if name in ("poisson", "mean_squared_logarithmic_error"):
        return (rng.uniform(0, 3, size=shape).astype(np.float32), rng.uniform(0.01, 3, size=shape).astype(np.float32))
    if name == "mean_absolute_percentage_error":
        y = rng.normal(0, 2, size=shape).astype(np.float32)
        y.reshape(-1)[0] = 0.0  # the maximum(|y_true|, eps) edge
        return y, rng.normal(0, 2, size=shape).astype(np.float32)
    return (rng.normal(0, 1.5, size=shape).astype(np.float32), rng.normal(0, 1.5, size=shape).astype(np.float32))


FUNCTION_CASES = [
    ("mean_squared_error", {}), ("mean_absolute_error", {}), ("mean_absolute_percentage_error", {}),
    ("mean_squared_logarithmic_error", {}), ("hinge", {}), ("squared_hinge", {}), ("categorical_hinge", {}),
    ("kl_divergence", {}), ("poisson", {}), ("cosine_similarity", {}), ("cosine_similarity", {"axis": 1}),
    ("huber", {}), ("huber", {"delta": 0.6}), ("log_cosh", {}),
    ("binary_crossentropy", {}), ("binary_crossentropy", {"from_logits": True}),
    ("binary_crossentropy", {"label_smoothing": 0.2}), ("binary_crossentropy", {"from_logits": True,
                                                                                "label_smoothing": 0.1}),
    ("categorical_crossentropy", {}), ("categorical_crossentropy", {"from_logits": True}),
    ("categorical_crossentropy", {"label_smoothing": 0.15}),
]


def _logits(name, kwargs, y_pred, rng):
    if kwargs.get("from_logits"):
        return rng.normal(0, 2.0, size=y_pred.shape).astype(np.float32)
    return y_pred


@pytest.mark.parametrize("shape", [(N, C), (N, T, C)])
@pytest.mark.parametrize("name,kwargs", FUNCTION_CASES)
def test_loss_functions_match_tf_keras(tfk, rng, name, kwargs, shape):
    import tensorflow as tf

    y_true, y_pred = _data(name, rng, shape)
    y_pred = _logits(name, kwargs, y_pred, rng)
    ours = getattr(losses, name)(y_true, y_pred, **kwargs)
    ref = getattr(tfk.losses, name)(tf.constant(y_true), tf.constant(y_pred), **kwargs).numpy()
    assert_close(ours, ref, what=f"{name} {kwargs}")
    # gradient of the mean w.r.t. y_pred: kconvert autodiff vs tf.GradientTape
    _, grad = value_and_grad(lambda p: np.mean(getattr(losses, name)(y_true, p, **kwargs)), y_pred)
    p = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(getattr(tfk.losses, name)(tf.constant(y_true), p, **kwargs))
    assert_close(grad, tape.gradient(value, p).numpy(), what=f"d {name} {kwargs}")


def test_aliases_are_the_functions():
    assert losses.mse is losses.mean_squared_error and losses.mae is losses.mean_absolute_error
    assert losses.mape is losses.mean_absolute_percentage_error and losses.msle is losses.mean_squared_logarithmic_error
    assert losses.kld is losses.kl_divergence and losses.get("logcosh") is losses.log_cosh


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("shape,label_shape", [((N, C), (N,)), ((N, C), (N, 1)), ((N, T, C), (N, T))])
def test_sparse_categorical_crossentropy(tfk, rng, from_logits, shape, label_shape):
    import tensorflow as tf

    labels = rng.integers(0, C, size=label_shape)
    pred = rng.normal(0, 2, size=shape).astype(np.float32) if from_logits else _probs(rng, shape)
    ours = losses.sparse_categorical_crossentropy(labels, pred, from_logits=from_logits)
    ref = tfk.losses.sparse_categorical_crossentropy(tf.constant(labels), tf.constant(pred),
                                                     from_logits=from_logits).numpy()
    assert_close(ours, ref)
    for sw in (None, rng.uniform(0.2, 2.0, size=(N,)).astype(np.float32)):
        obj = losses.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=2)
        ref_obj = tfk.losses.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=2)
        ours = obj(labels, pred, sample_weight=sw)
        ref = ref_obj(tf.constant(labels), tf.constant(pred), sample_weight=None if sw is None else tf.constant(sw))
        assert_close(ours, ref.numpy(), what=f"ignore_class sw={sw is not None}")
        _, grad = value_and_grad(lambda p, obj=obj, sw=sw: obj(labels, p, sample_weight=sw), pred)
        p = tf.Variable(pred)
        with tf.GradientTape() as tape:
            value = ref_obj(tf.constant(labels), p, sample_weight=None if sw is None else tf.constant(sw))
        assert_close(grad, tape.gradient(value, p).numpy(), what="d sparse")


CLASS_CASES = [
    ("MeanSquaredError", "mean_squared_error", {}), ("MeanAbsoluteError", "mean_absolute_error", {}),
    ("MeanAbsolutePercentageError", "mean_absolute_percentage_error", {}),
    ("MeanSquaredLogarithmicError", "mean_squared_logarithmic_error", {}), ("Hinge", "hinge", {}),
    ("SquaredHinge", "squared_hinge", {}), ("CategoricalHinge", "categorical_hinge", {}),
    ("KLDivergence", "kl_divergence", {}), ("Poisson", "poisson", {}), ("LogCosh", "log_cosh", {}),
    ("CosineSimilarity", "cosine_similarity", {"axis": -1}), ("Huber", "huber", {"delta": 0.7}),
    ("BinaryCrossentropy", "binary_crossentropy", {"from_logits": True, "label_smoothing": 0.1}),
    ("BinaryCrossentropy", "binary_crossentropy", {}),
    ("CategoricalCrossentropy", "categorical_crossentropy", {"label_smoothing": 0.1}),
    ("CategoricalCrossentropy", "categorical_crossentropy", {"from_logits": True}),
]


def _weights(kind, rng, shape):
    if kind is None:
        return None
    if kind == "scalar":
        return np.float32(1.7)
    if kind == "N":
        return rng.uniform(0.1, 2.0, size=(shape[0],)).astype(np.float32)
    if kind == "N1":
        return rng.uniform(0.1, 2.0, size=(shape[0], 1)).astype(np.float32)
    return rng.uniform(0.1, 2.0, size=shape[:-1]).astype(np.float32)  # (N, T)


@pytest.mark.parametrize("reduction", ["auto", "sum_over_batch_size", "sum", "none"])
@pytest.mark.parametrize("class_name,fn_name,kwargs", CLASS_CASES)
def test_loss_classes_reduce_and_weight_as_tf_keras(tfk, rng, class_name, fn_name, kwargs, reduction):
    import tensorflow as tf

    for shape, kinds in (((N, C), (None, "scalar", "N", "N1")), ((N, T, C), ("N", "NT"))):
        y_true, y_pred = _data(fn_name, rng, shape)
        y_pred = _logits(fn_name, kwargs, y_pred, rng)
        ours_obj = getattr(losses, class_name)(reduction=reduction, **kwargs)
        ref_obj = getattr(tfk.losses, class_name)(reduction=reduction, **kwargs)
        for kind in kinds:
            sw = _weights(kind, rng, shape)
            ours = ours_obj(y_true, y_pred, sample_weight=sw)
            ref = ref_obj(tf.constant(y_true), tf.constant(y_pred),
                          sample_weight=None if sw is None else tf.constant(sw)).numpy()
            assert_close(ours, ref, what=f"{class_name} {reduction} sw={kind} {shape}")
        assert ours_obj.get_config() == ref_obj.get_config()
        again = getattr(losses, class_name).from_config(ours_obj.get_config())
        assert again.get_config() == ours_obj.get_config()


def test_squeeze_rules_for_rank_mismatch(tfk, rng):
    """y_pred (N, 1) against y_true (N,): tf_keras squeezes the prediction, then averages over the last axis (so
    the per-sample losses are one scalar); y_true (N, 1) against y_pred (N,) squeezes the labels."""
    import tensorflow as tf

    y_true = rng.uniform(size=(N,)).astype(np.float32)
    y_pred = rng.uniform(size=(N, 1)).astype(np.float32)
    for cls in ("MeanSquaredError", "BinaryCrossentropy"):
        for t, p in ((y_true, y_pred), (y_pred, y_true)):
            ref = getattr(tfk.losses, cls)(reduction="none")(tf.constant(t), tf.constant(p)).numpy()
            assert_close(getattr(losses, cls)(reduction="none")(t, p), ref, what=cls)


def test_class_gradients_match_tape(tfk, rng):
    import tensorflow as tf

    y_true, y_pred = _data("categorical_crossentropy", rng, (N, T, C))
    sw = _weights("NT", rng, (N, T, C))
    ours = losses.CategoricalCrossentropy(label_smoothing=0.05)
    _, grad = value_and_grad(lambda p: ours(y_true, p, sample_weight=sw), y_pred)
    p = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = tfk.losses.CategoricalCrossentropy(label_smoothing=0.05)(tf.constant(y_true), p,
                                                                         sample_weight=tf.constant(sw))
    assert_close(grad, tape.gradient(value, p).numpy())


def test_get_serialize_deserialize(tfk):
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get("categorical_crossentropy") is losses.categorical_crossentropy
    assert isinstance(losses.get("MeanSquaredError"), losses.MeanSquaredError)
    assert losses.get(None) is None and losses.get(losses.hinge) is losses.hinge
    huber = losses.Huber(delta=0.3, reduction="sum")
    assert losses.serialize(huber) == tfk.losses.serialize(tfk.losses.Huber(delta=0.3, reduction="sum"))
    back = losses.get(losses.serialize(huber))
    assert isinstance(back, losses.Huber) and back.get_config() == huber.get_config()
    # tf_keras's legacy form, Keras 3's form and a Keras 3 plain function
    assert isinstance(losses.get({"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}),
                      losses.BinaryCrossentropy)
    k3 = {"module": "keras.losses", "class_name": "CategoricalCrossentropy", "registered_name": None,
          "config": {"name": "categorical_crossentropy", "reduction": "sum_over_batch_size", "from_logits": True,
                     "label_smoothing": 0.0, "axis": -1, "dtype": None}}
    assert losses.get(k3).get_config()["from_logits"] is True
    assert losses.get({"module": "keras.losses", "class_name": "function", "config": "mean_absolute_error",
                       "registered_name": "function"}) is losses.mean_absolute_error
    assert losses.serialize(losses.mse) == {"module": "builtins", "class_name": "function",
                                            "config": "mean_squared_error", "registered_name": "function"}
    with pytest.raises(ConfigError, match="nope"):
        losses.get("nope")
    with pytest.raises(ConfigError, match="reduction"):
        losses.MeanSquaredError(reduction="mean")
