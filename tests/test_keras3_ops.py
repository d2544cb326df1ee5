"""Keras 3 operation nodes (`x + y`, `keras.ops.mean`, ...) read and written, and tf.keras TFOpLambda calls
written as them: every model is checked against real Keras 3 / tf_keras at test time."""

import json
import zipfile

import pytest
from conftest import assert_close

import kconvert
from kconvert.errors import UnknownLayerError


@pytest.fixture(scope="module")
def keras3():
    import keras

    return keras


def _inputs(rng, n=2, batch=3):
    return [rng.standard_normal((batch, 5, 4, 3)).astype("float32") for _ in range(n)]


def _keras3_ops_model(keras3, rng):
    ops = keras3.ops
    x, y = keras3.Input((5, 4, 3)), keras3.Input((5, 4, 3))
    dense = keras3.layers.Dense(3, name="dense")
    a = dense(x) + y
    b = 3.0 - a * 2.0
    c = ops.relu(ops.mean(b, axis=1, keepdims=True))
    d = ops.concatenate([ops.reshape(c, (-1, 12)), ops.sum(x, axis=[1, 2])], axis=-1)
    e = ops.softmax(ops.maximum(d, 0.25) / 3.0, axis=-1)
    f = ops.transpose(ops.expand_dims(ops.sigmoid(x[:, 1:4, :, 0]), 1), (0, 2, 1, 3))
    g = ops.squeeze(ops.max(ops.tanh(y), axis=-1, keepdims=True), axis=-1) - ops.min(ops.silu(y), axis=-1)
    h = ops.sqrt(ops.abs(-x)) * ops.exp(ops.hard_silu(x) * 0.1) + ops.square(ops.relu6(x)) + ops.log(ops.abs(x) + 1)
    model = keras3.Model([x, y], [e, f, g, dense(h)])
    dense.set_weights([(rng.standard_normal((3, 3)) * 0.5).astype("float32"),
                       (rng.standard_normal(3) * 0.1).astype("float32")])
    return model


def test_keras3_operations_read_predict_and_write_back(keras3, rng, tmp_path):
    model = _keras3_ops_model(keras3, rng)
    path, back_path = tmp_path / "ops.keras", tmp_path / "back.keras"
    model.save(path)
    xs = _inputs(rng)
    ref = model.predict(xs, verbose=0)
    ours = kconvert.load_model(str(path))
    out = ours.predict(xs)
    for o, r in zip(out, ref):
        assert o.shape == r.shape
        assert_close(o, r)
    ours.save(str(back_path))
    written = json.loads(zipfile.ZipFile(back_path).read("config.json"))["config"]["layers"]
    original = json.loads(zipfile.ZipFile(path).read("config.json"))["config"]["layers"]
    assert [e for e in written if "ops" in e["module"]] == [e for e in original if "ops" in e["module"]]
    back = keras3.models.load_model(back_path)
    for o, r in zip(back.predict(xs, verbose=0), ref):
        assert_close(o, r)


def test_tf_keras_op_layers_upgrade_to_keras3_operations(tfk, keras3, rng, tmp_path):
    import tensorflow as tf

    x, y = tfk.Input((5, 4, 3)), tfk.Input((5, 4, 3))
    dense = tfk.layers.Dense(3)
    a = tf.nn.relu(dense(x) + y * 2.0 - 0.5)
    b = tf.reshape(tf.reduce_mean(a, axis=1, keepdims=True), (-1, 12))
    c = tf.nn.softmax(tf.concat([b, tf.reduce_sum(x, axis=[1, 2])], axis=-1) / 3.0, axis=-1)
    d = tf.transpose(tf.expand_dims(tf.math.maximum(x[:, 1:4, :, 0], 0.1), 1), (0, 2, 1, 3))
    e = tf.squeeze(tf.math.sqrt(tf.math.abs(tf.reduce_max(y, axis=-1, keepdims=True))), axis=-1)
    f = tf.nn.swish(tf.math.exp(tf.math.negative(tf.math.square(x)))) + tf.nn.relu6(x * 4.0) - tf.math.sigmoid(x)
    model = tfk.Model([x, y], [c, d, e, tf.math.tanh(f) * tf.math.log(tf.math.abs(x) + 1.0)])
    dense.set_weights([(rng.standard_normal((3, 3)) * 0.5).astype("float32"),
                       (rng.standard_normal(3) * 0.1).astype("float32")])
    assert any(type(la).__name__ == "TFOpLambda" for la in model.layers)
    path, up = tmp_path / "tfops.h5", tmp_path / "up.keras"
    model.save(path)
    xs = _inputs(rng)
    ref = model.predict(xs, verbose=0)
    ours = kconvert.load_model(str(path))
    ours.save(str(up))
    back = keras3.models.load_model(up)
    assert not any(type(la).__name__ == "TFOpLambda" for la in back.layers)
    for o, r in zip(back.predict(xs, verbose=0), ref):
        assert o.shape == r.shape
        assert_close(o, r)
    again = kconvert.load_model(str(up))  # the upgraded file reads back as operations
    for o, r in zip(again.predict(xs), ref):
        assert_close(o, r)


def test_unsupported_keras3_operation_is_named(keras3, tmp_path):
    x = keras3.Input((5, 4, 3))
    model = keras3.Model(x, keras3.ops.cumsum(x, axis=1))
    path = tmp_path / "cumsum.keras"
    model.save(path)
    with pytest.raises(UnknownLayerError, match="Cumsum"):
        kconvert.load_model(str(path))
