"""Locally-connected, Group/Unit normalization, preprocessing and auto-wrapped TF-op layers against tf_keras
(and Keras 3 for its configs), plus a whole model mixing them."""

import json

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import compare_layer, compare_unbuilt_config, json_round_trip

import kconvert
import kconvert.layers as kl
from kconvert.errors import ConfigError
from kconvert.models import model_from_json

# ---------------------------------------------------------------------------------------------- LocallyConnected

LC_CASES = [(impl, fmt, pad, strides) for impl in (1, 2, 3) for fmt in ("channels_last", "channels_first")
            for pad, strides in ([("valid", 1), ("valid", 2)] if impl == 1 else [("valid", 2), ("same", 1),
                                                                                  ("same", 2)])]


@pytest.mark.parametrize("impl,fmt,pad,strides", LC_CASES)
def test_locally_connected_2d(tfk, rng, impl, fmt, pad, strides):
    shape = (2, 7, 6, 3) if fmt == "channels_last" else (2, 3, 7, 6)
    x = rng.normal(0.0, 1.0, shape).astype("float32")
    layer = tfk.layers.LocallyConnected2D(4, (3, 2), strides=(strides, 1), padding=pad, data_format=fmt,
                                          implementation=impl, activation="tanh", name="lc")
    compare_layer(layer, x, rng)


@pytest.mark.parametrize("impl,fmt,pad,strides", LC_CASES)
def test_locally_connected_1d(tfk, rng, impl, fmt, pad, strides):
    shape = (2, 9, 3) if fmt == "channels_last" else (2, 3, 9)
    x = rng.normal(0.0, 1.0, shape).astype("float32")
    layer = tfk.layers.LocallyConnected1D(5, 3, strides=strides, padding=pad, data_format=fmt, implementation=impl,
                                          use_bias=impl != 3, name="lc")
    compare_layer(layer, x, rng)


def test_locally_connected_config_and_errors(tfk):
    compare_unbuilt_config(tfk.layers.LocallyConnected2D(3, 2, name="lc0", implementation=2, padding="same"),
                           kl.LocallyConnected2D(3, 2, name="lc0", implementation=2, padding="same"))
    with pytest.raises(ConfigError, match="lc_bad.*implementation 1"):
        kl.LocallyConnected2D(3, 2, padding="same", name="lc_bad")
    with pytest.raises(ConfigError, match="implementation"):
        kl.LocallyConnected1D(3, 2, implementation=4)


# ---------------------------------------------------------------------------------------------- normalization

GN_CASES = [({"groups": 3}, (3, 5, 7, 6)), ({"groups": 2, "axis": 1, "center": False}, (3, 6, 5, 7)),
            ({"groups": -1, "scale": False}, (2, 7, 4)), ({"groups": 1, "epsilon": 0.1}, (4, 6)),
            ({"groups": 2, "axis": -3}, (2, 4, 5, 3))]


@pytest.mark.parametrize("kwargs,shape", GN_CASES)
def test_group_normalization(tfk, rng, kwargs, shape):
    x = rng.normal(0.5, 2.0, shape).astype("float32")
    compare_layer(tfk.layers.GroupNormalization(name="gn", **kwargs), x, rng)
    compare_unbuilt_config(tfk.layers.GroupNormalization(name="gn0", **kwargs),
                           kl.GroupNormalization(name="gn0", **kwargs))


def test_group_normalization_mask_weights_the_statistics(tfk, rng):
    x = rng.normal(0.5, 2.0, (3, 5, 7, 6)).astype("float32")
    mask = rng.random((3, 5, 7, 1)) > 0.3
    compare_layer(tfk.layers.GroupNormalization(3, name="gn"), x, rng, call_kwargs={"mask": mask})


@pytest.mark.parametrize("axis", [-1, 1, [1, 2]])
def test_unit_normalization(tfk, rng, axis):
    x = rng.normal(0.0, 2.0, (3, 5, 4)).astype("float32")
    compare_layer(tfk.layers.UnitNormalization(axis=axis, name="un"), x, rng)


def test_group_and_unit_normalization_keras3_configs(rng):
    import keras

    x = rng.normal(0.5, 2.0, (2, 5, 6)).astype("float32")
    for ref_layer in (keras.layers.GroupNormalization(3), keras.layers.UnitNormalization(axis=1)):
        ref_layer.build(x.shape)
        weights = [rng.normal(0.0, 1.0, tuple(w.shape)).astype("float32") for w in ref_layer.weights]
        ref_layer.set_weights(weights)
        with kl.keras_dialect(3):
            ours = kl.deserialize({"class_name": type(ref_layer).__name__,
                                   "config": json_round_trip(ref_layer.get_config())})
        ours(x)
        ours.set_weights(weights)
        assert_close(ours(x), np.asarray(ref_layer(x)))


# ---------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("kwargs", [{"scale": 1 / 127.5, "offset": -1}, {"scale": [0.5, 2.0, 3.0]},
                                    {"scale": 2.0, "offset": [1.0, -1.0, 0.5]}])
def test_rescaling(tfk, rng, kwargs):
    x = rng.integers(0, 255, (2, 5, 4, 3)).astype("float32")
    compare_layer(tfk.layers.Rescaling(name="r", **kwargs), x, rng)


@pytest.mark.parametrize("kwargs", [{}, {"axis": (1, 3), "invert": True}, {"axis": None}, {"axis": 2}])
def test_normalization_adapted(tfk, rng, kwargs):
    """Adapted statistics are the weights mean, variance and count (int64)."""
    x = rng.normal(3.0, 2.0, (6, 5, 4, 3)).astype("float32")
    layer = tfk.layers.Normalization(name="n", **kwargs)
    layer(x)  # built inside its name scope, as in a model
    layer.adapt(x)
    ours, _, _ = compare_layer(layer, x, rng, set_random=False)
    assert [w.value.dtype for w in ours.weights] == [np.float32, np.float32, np.int64]
    assert int(ours.get_weights()[2]) == x.shape[0] * int(np.prod([d for i, d in enumerate(x.shape[1:], 1)
                                                                    if layer._keep_axis.count(i) == 0]))


@pytest.mark.parametrize("kwargs", [{"mean": [1.0, 2.0, 3.0], "variance": [1.0, 4.0, 0.5]},
                                    {"axis": None, "mean": 2.0, "variance": 3.0},
                                    {"mean": 2.0, "variance": 3.0, "invert": True}])
def test_normalization_given_statistics(tfk, rng, kwargs):
    x = rng.normal(3.0, 2.0, (2, 5, 4, 3)).astype("float32")
    ours, _, _ = compare_layer(tfk.layers.Normalization(name="n", **kwargs), x, rng)
    assert ours.weights == []


RESIZE_CASES = [(interp, size, crop) for interp in ("bilinear", "nearest", "bicubic", "area")
                for size, crop in (((5, 3), False), ((17, 13), False), ((22, 16), False), ((6, 9), True),
                                   ((13, 5), True))]


@pytest.mark.parametrize("interp,size,crop", RESIZE_CASES)
def test_resizing(tfk, rng, interp, size, crop):
    x = rng.random((2, 11, 8, 3)).astype("float32") * 255
    compare_layer(tfk.layers.Resizing(*size, interpolation=interp, crop_to_aspect_ratio=crop, name="rs"), x, rng)


@pytest.mark.parametrize("size", [(6, 5), (11, 3), (13, 5), (12, 12)])
def test_center_crop(tfk, rng, size):
    """A window inside the image is cropped; a larger one is resized with smart_resize."""
    x = rng.random((2, 11, 8, 3)).astype("float32") * 255
    compare_layer(tfk.layers.CenterCrop(*size, name="cc"), x, rng)


@pytest.mark.parametrize("cls,kwargs", [
    ("Resizing", {"height": 5, "width": 9, "data_format": "channels_first", "interpolation": "bicubic"}),
    ("Resizing", {"height": 6, "width": 9, "pad_to_aspect_ratio": True, "fill_value": 2.0}),
    ("Resizing", {"height": 6, "width": 4, "crop_to_aspect_ratio": True, "interpolation": "area"}),
    ("CenterCrop", {"height": 5, "width": 3, "data_format": "channels_first"}),
    ("CenterCrop", {"height": 13, "width": 5}),
    ("Rescaling", {"scale": 0.5, "offset": 1.0}),
])
def test_preprocessing_keras3_configs(rng, cls, kwargs):
    import keras

    x = rng.random((2, 7, 11, 3)).astype("float32") * 255
    if kwargs.get("data_format") == "channels_first":
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    ref_layer = getattr(keras.layers, cls)(**kwargs)
    with kl.keras_dialect(3):
        ours = kl.deserialize({"class_name": cls, "config": json_round_trip(ref_layer.get_config())})
    assert_close(ours(x), np.asarray(ref_layer(x)))
    assert ours.compute_output_shape((None, *x.shape[1:])) == tuple(ref_layer.compute_output_shape((None,
                                                                                                    *x.shape[1:])))


def test_unsupported_resizing_options_raise():
    with pytest.raises(ConfigError, match="lanczos3"):
        kl.Resizing(3, 4, interpolation="lanczos3")
    with pytest.raises(ConfigError, match="antialias"):
        kl.Resizing(3, 4, antialias=True)


def test_augmentation_layers_are_identity_at_inference(tfk, rng):
    L = tfk.layers
    inp = L.Input((7, 6, 3))
    x = L.RandomFlip(name="flip")(inp)
    x = L.RandomRotation(0.2, fill_mode="nearest", name="rot")(x)
    x = L.RandomZoom(0.1, 0.2, name="zoom")(x)
    x = L.RandomTranslation(0.1, 0.1, name="shift")(x)
    x = L.RandomContrast(0.3, name="contrast")(x)
    x = L.RandomBrightness(0.2, name="bright")(x)
    model = tfk.Model(inp, L.Conv2D(2, 3, name="conv")(x))
    feeds = rng.random((2, 7, 6, 3)).astype("float32")
    ours = model_from_json(model.to_json())
    ours.set_weights(model.get_weights())
    assert_close(ours.predict(feeds), model.predict(feeds, verbose=0))
    assert json.loads(ours.to_json())["config"] == json.loads(model.to_json())["config"]


# ---------------------------------------------------------------------------------------------- TF op layers


def _tf_ops_model(tfk):
    """A model made by applying TensorFlow functions and Python operators to KerasTensors (TFOpLambda)."""
    import tensorflow as tf

    a = tfk.Input((5, 7), name="a")
    b = tfk.Input((7, 3), name="b")
    outs = [
        a + b[:, :5, 0:1], a - b[:, 0:5, :1], a * 2, a / 3, a // 0.5, a % 0.7, a ** 2, -a, abs(a), a @ b,
        tf.cast(a > 0.5, "float32"), a[..., None, 1], a[:, tf.newaxis, ::2], a[:, -1], 1.0 - a, 2.0 / (abs(a) + 1),
        tf.cast(a * 4, "int32"), tf.clip_by_value(a, 0.1, 0.5), tf.nn.softmax(a, axis=1), tf.expand_dims(a, 1),
        tf.squeeze(a[:, :1], axis=1), tf.stack([a, a * 2], axis=1), tf.concat([a, b[:, :5, :]], axis=-1),
        tf.reshape(a, (-1, 7, 5)), tf.transpose(a, perm=[0, 2, 1]), tf.compat.v1.transpose(a, perm=[0, 2, 1]),
        tf.sqrt(abs(a)), tf.math.rsqrt(abs(a) + 1), tf.exp(a), tf.math.log(abs(a) + 1),
        tf.reduce_sum(a, [1, 2]), tf.reduce_max(a, axis=1), tf.reduce_mean(a, axis=1, keepdims=True),
        tf.math.reduce_logsumexp(a, axis=1), tf.reduce_min(a, axis=-1), tf.math.reduce_prod(a[:, :2], axis=1),
        tf.nn.sigmoid(a), tf.tanh(a), tf.nn.gelu(a), tf.nn.gelu(a, approximate=True), tf.nn.silu(a),
        tf.nn.leaky_relu(a, 0.3), tf.nn.relu6(a * 8), tf.nn.elu(a), tf.nn.selu(a), tf.nn.relu(a),
        tf.nn.l2_normalize(a, axis=-1), tf.matmul(a, b, transpose_a=False), tf.tile(a, [1, 2, 1]), tf.identity(a),
        tf.math.square(a), tf.where(a > 0.5, a, 0.0), tf.math.argmax(a, axis=-1), tf.maximum(a, 0.2),
        tf.minimum(a, b[:, :5, :1]), tf.math.squared_difference(a, 0.5), tf.pad(a, [[0, 0], [1, 2], [0, 1]]),
        tf.math.cumsum(a, axis=1), tf.split(a, [2, 5], axis=-1)[1], tf.unstack(a, axis=1)[2], tf.shape(a),
        tf.math.softplus(a), tf.nn.bias_add(a, np.arange(7, dtype="float32")), tf.gather(a, [3, 1], axis=2),
        tf.strided_slice(a, [0, 1, 0], [0, 4, 7], [1, 2, 1], begin_mask=1, end_mask=1), tf.math.add_n([a, a, a]),
        tf.concat([a, np.full((1, 5, 7), 0.5, "float32")], axis=0),  # a constant inside the first argument
    ]
    return tfk.Model([a, b], outs)


def test_tf_op_lambda_model(tfk, rng, tmp_path):
    model = _tf_ops_model(tfk)
    feeds = [rng.normal(0.0, 1.0, (3, 5, 7)).astype("float32"), rng.normal(0.0, 1.0, (3, 7, 3)).astype("float32")]
    ours = model_from_json(model.to_json())
    ref = model.predict(feeds, verbose=0)
    got = ours.predict(feeds)
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.dtype == r.dtype, (i, model.outputs[i].name, g.dtype, r.dtype)
        assert_close(g, r, what=f"output {i} ({model.outputs[i].node.layer.name})")
    assert [v.shape for v in ours.outputs] == [tuple(t.shape) for t in model.outputs]
    assert json.loads(ours.to_json())["config"] == json.loads(model.to_json())["config"]
    ours.save(tmp_path / "ops.h5")  # tf_keras reads kconvert's file and computes the same
    back = tfk.models.load_model(tmp_path / "ops.h5")
    for g, r in zip(back.predict(feeds, verbose=0), ref):
        assert_close(g, r)


def test_tf_op_lambda_drops_keras_masks(tfk, rng):
    """tf.keras's op layers do not pass masks on: a masked pooling after one averages every step."""
    import tensorflow as tf

    ids = tfk.Input((4,))
    emb = tfk.layers.Embedding(9, 3, mask_zero=True)(ids)
    pooled = [tfk.layers.GlobalAveragePooling1D()(t) for t in (emb, emb * 2.0, tf.nn.relu(emb), emb[:, 1:])]
    model = tfk.Model(ids, pooled)
    feeds = np.array([[1, 2, 0, 0], [3, 0, 4, 5]], "float32")
    ours = model_from_json(model.to_json())
    ours.set_weights(model.get_weights())
    for g, r in zip(ours.predict(feeds), model.predict(feeds, verbose=0)):
        assert_close(g, r)


def test_tf_op_lambda_unsupported_function_names_it(tfk):
    import tensorflow as tf

    a = tfk.Input((5, 7))
    model = tfk.Model(a, tf.math.cumprod(a, axis=1))
    with pytest.raises(ConfigError, match=r"tf\.math\.cumprod.*'tf\.math\.cumprod'.*not supported"):
        model_from_json(model.to_json())


def _tf_op_layer_model(tfk):
    """The same kind of model as TF 2.0-2.3 saved it: each op a TensorFlowOpLayer with its NodeDef."""
    import tensorflow as tf

    with tf.compat.v1.Graph().as_default():
        a = tfk.Input((5, 7), name="a")
        b = tfk.Input((5, 7), name="b")
        y = tf.reduce_mean(a * 2.0 + b, axis=1, keepdims=True)
        z = tf.transpose(tf.reshape(tf.nn.relu(a - 0.5), (-1, 7, 5)), perm=[0, 2, 1])
        c = tf.concat([z, b], axis=-1)
        outs = [y, c[:, 1:4, ::2], tf.nn.softmax(c), tf.reduce_sum(tf.square(b), axis=[1, 2]), tf.sigmoid(a) / b,
                tf.expand_dims(tf.math.rsqrt(abs(a) + 1.0), 1), tf.stack([a, b], axis=1), tf.maximum(a, b),
                tf.squeeze(a[:, 2:3], axis=1), tf.cast(a > 0, "float32"), tf.matmul(a, b, transpose_b=True)]
        return tfk.Model([a, b], outs).to_json()


def test_tensorflow_op_layer_model(tfk, rng):
    js = _tf_op_layer_model(tfk)
    assert '"TensorFlowOpLayer"' in js and '"node_def"' in js
    ref_model = tfk.models.model_from_json(js)
    feeds = [rng.normal(0.0, 1.0, (3, 5, 7)).astype("float32"), rng.uniform(0.5, 2.0, (3, 5, 7)).astype("float32")]
    ours = model_from_json(js)
    ref = ref_model.predict(feeds, verbose=0)
    got = ours.predict(feeds)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.dtype == r.dtype, (i, g.dtype, r.dtype)
        assert_close(g, r, what=f"output {i}")
    assert [v.shape for v in ours.outputs] == [tuple(t.shape) for t in ref_model.outputs]
    assert json.loads(ours.to_json())["config"] == json.loads(ref_model.to_json())["config"]


def test_tensorflow_op_layer_old_constants_and_unknown_ops():
    """TF 2.0-2.3 wrote constants as plain lists; an op kconvert does not know is a ConfigError naming it."""
    node_def = {"name": "Reshape", "op": "Reshape", "input": ["x", "Reshape/shape"],
                "attr": {"T": {"type": "DT_FLOAT"}, "Tshape": {"type": "DT_INT32"}}}
    layer = kl.deserialize({"class_name": "TensorFlowOpLayer",
                            "config": {"name": "Reshape", "node_def": node_def, "constants": {"1": [-1, 3, 2]}}})
    assert layer.name == "tf_op_layer_Reshape"
    x = np.arange(12, dtype="float32").reshape(2, 6)
    np.testing.assert_array_equal(layer(x), x.reshape(-1, 3, 2))
    assert layer.get_config()["name"] == "Reshape"
    bad = {"name": "Fancy", "op": "FancyOp", "input": ["x"], "attr": {}}
    with pytest.raises(ConfigError, match="tf_op_layer_Fancy.*'FancyOp'"):
        kl.deserialize({"class_name": "TensorFlowOpLayer", "config": {"name": "Fancy", "node_def": bad}})


# ---------------------------------------------------------------------------------------------- a mixed model


def test_mixed_model_h5_both_ways(tfk, rng, tmp_path):
    """A model mixing preprocessing, locally-connected, normalization, attention and TF ops: tf_keras's .h5
    loads in kconvert, kconvert's .h5 loads in tf_keras, and all three predict the same."""
    import tensorflow as tf

    L = tfk.layers
    img = L.Input((13, 10, 3), name="img")
    x = L.Rescaling(1 / 127.5, -1.0)(img)
    x = L.Resizing(9, 8, interpolation="bicubic")(x)
    x = L.CenterCrop(8, 7)(x)
    norm = L.Normalization(axis=-1, name="norm")
    norm.adapt(rng.normal(0.0, 1.0, (4, 8, 7, 3)).astype("float32"))
    x = norm(x)
    x = L.LocallyConnected2D(4, 3, implementation=2, padding="same", name="lc2d")(x)
    x = L.GroupNormalization(2, name="gn")(x)
    seq = tf.reshape(x, (-1, 56, 4))
    seq = L.LocallyConnected1D(6, 3, strides=2, implementation=1, name="lc1d")(seq)
    att = L.MultiHeadAttention(2, 3, name="mha")(seq, seq, use_causal_mask=True)
    att = L.UnitNormalization()(att + seq)
    add = L.AdditiveAttention(name="add_att")([att, seq])
    out = L.Dense(2, name="head")(tf.reduce_mean(add, axis=1) * 3.0)
    model = tfk.Model(img, out)
    adapted = {id(w) for w in norm.weights}  # tf_keras snapshots adapted statistics: keep them as adapted
    for w in model.weights:
        if id(w) not in adapted:
            w.assign(rng.normal(0.0, 0.4, tuple(w.shape)).astype("float32"))
    feeds = rng.integers(0, 255, (3, 13, 10, 3)).astype("float32")
    ref = model.predict(feeds, verbose=0)
    model.save(tmp_path / "tf.h5")
    ours = kconvert.load_model(tmp_path / "tf.h5")
    assert_close(ours.predict(feeds), ref)
    ours.save(tmp_path / "ours.h5")
    back = tfk.models.load_model(tmp_path / "ours.h5")
    assert_close(back.predict(feeds, verbose=0), ref)
    assert json.loads(ours.to_json())["config"] == json.loads(model.to_json())["config"]
