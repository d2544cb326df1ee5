"""Dense, Activation (every activation name), Embedding, Masking and the noise layers against tf_keras."""

import importlib

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import compare_layer, compare_unbuilt_config, json_round_trip

import kconvert.layers
from kconvert.layers import activations, regularization
from kconvert.layers.core import Activation, Dense
from kconvert.layers.embedding import Embedding
from kconvert.layers.masking import Masking

# ---------------------------------------------------------------------------------------------- Dense


@pytest.mark.parametrize("kwargs,shape", [
    ({"units": 5}, (4, 7)),
    ({"units": 3, "activation": "relu"}, (2, 6, 9)),            # 3-D: applied on the last axis
    ({"units": 4, "use_bias": False}, (3, 7)),
    ({"units": 2, "use_bias": False, "activation": "tanh"}, (2, 3, 5, 7)),
    ({"units": 6, "activation": "softmax", "kernel_regularizer": "l2", "bias_constraint": "max_norm"}, (5, 3)),
])
def test_dense(tfk, rng, kwargs, shape):
    x = rng.normal(size=shape).astype(np.float32)
    compare_layer(tfk.layers.Dense(name="d", **kwargs), x, rng)
    compare_unbuilt_config(tfk.layers.Dense(name="d0", **kwargs), Dense(name="d0", **kwargs))


# ---------------------------------------------------------------------------------------------- activations

TF_KERAS_NAMES = ["linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "softplus",
                  "softsign", "elu", "selu", "gelu", "exponential", "swish", "silu", "mish", "hard_sigmoid"]


def _act_inputs(rng, shape=(3, 5, 7)):
    x = rng.normal(0.0, 3.0, shape).astype(np.float32)
    x.reshape(-1)[:9] = [0.0, -2.5, 2.5, 3.0, -3.0, 1.0, -1.0, 6.0, 0.5]   # kinks of the piecewise ones
    return x


def test_every_tf_keras_activation_is_known(tfk):
    public = {n for n in dir(tfk.activations) if not n.startswith("_")} - {"get", "serialize", "deserialize"}
    assert public <= set(TF_KERAS_NAMES)
    for name in TF_KERAS_NAMES:
        activations.get(name)


@pytest.mark.parametrize("name", TF_KERAS_NAMES)
def test_activation_layer_matches_tf_keras(tfk, rng, name):
    x = _act_inputs(rng)
    compare_layer(tfk.layers.Activation(name, name="a"), x)
    compare_unbuilt_config(tfk.layers.Activation(name, name="a0"), Activation(name, name="a0"))


@pytest.mark.parametrize("name", ["elu", "gelu", "relu", "softmax", "hard_sigmoid", "swish", "selu", "softplus",
                                  "exponential", "mish"])
def test_activation_functions_match_tf_keras(tfk, rng, name):
    import tensorflow as tf

    x = _act_inputs(rng, (4, 6))
    assert_close(activations.get(name, keras_major=2)(x), getattr(tfk.activations, name)(tf.constant(x)).numpy())


def test_activation_function_arguments_match_tf_keras(tfk, rng):
    import tensorflow as tf

    x = _act_inputs(rng, (4, 6))
    t = tf.constant(x)
    assert_close(kconvert.ops.gelu(x, approximate=True), tfk.activations.gelu(t, approximate=True).numpy())
    assert_close(kconvert.ops.elu(x, 0.4), tfk.activations.elu(t, alpha=0.4).numpy())
    assert_close(kconvert.ops.softmax(x, axis=0), tfk.activations.softmax(t, axis=0).numpy())
    assert_close(kconvert.ops.relu(x, 0.1, 5.0, 0.5),
                 tfk.activations.relu(t, alpha=0.1, max_value=5.0, threshold=0.5).numpy())


KERAS3_NAMES = ["linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "softplus",
                "softsign", "elu", "selu", "gelu", "exponential", "swish", "silu", "mish", "hard_sigmoid", "hard_silu",
                "hard_swish", "celu", "glu", "log_sigmoid", "hard_tanh", "hard_shrink", "soft_shrink", "tanh_shrink",
                "sparse_plus", "sparse_sigmoid", "squareplus", "sparsemax"]


@pytest.fixture(scope="module")
def keras3():
    return importlib.import_module("keras")


def test_every_keras3_activation_is_known(keras3):
    public = {n for n in dir(keras3.activations) if not n.startswith("_")} - {"get", "serialize", "deserialize"}
    # `threshold` needs arguments of its own and cannot be named in a config
    assert public - {"threshold"} <= set(KERAS3_NAMES)


@pytest.mark.parametrize("name", KERAS3_NAMES)
def test_activation_layer_matches_keras3(keras3, rng, name):
    x = _act_inputs(rng, (3, 5, 8))
    ref = np.asarray(keras3.layers.Activation(name)(x))
    with kconvert.layers.keras_dialect(3):
        layer = Activation(name)
        config = layer.get_config()
    assert_close(layer(x), ref, what=name)
    assert config["activation"] == keras3.layers.Activation(name).get_config()["activation"]


def test_hard_sigmoid_follows_the_keras_version(tfk, keras3):
    x = np.linspace(-4, 4, 33, dtype=np.float32).reshape(3, 11)
    import tensorflow as tf

    assert_close(activations.get("hard_sigmoid", keras_major=2)(x),
                 tfk.activations.hard_sigmoid(tf.constant(x)).numpy())
    assert_close(activations.get("hard_sigmoid", keras_major=3)(x), np.asarray(keras3.activations.hard_sigmoid(x)))
    assert not np.allclose(activations.get("hard_sigmoid", keras_major=2)(x),
                           activations.get("hard_sigmoid", keras_major=3)(x))


def test_activation_serialization():
    assert activations.serialize(activations.get("silu")) == "swish"
    assert activations.serialize("relu") == "relu"
    assert activations.serialize(None) == "linear"
    assert activations.serialize(kconvert.ops.relu) == "relu"
    assert activations.serialize("swish", keras_major=3) == "silu"
    assert activations.get({"module": "builtins", "class_name": "function", "config": "relu",
                            "registered_name": "function"}) is kconvert.ops.relu
    with pytest.raises(ValueError):
        activations.get("no_such_activation")


# ---------------------------------------------------------------------------------------------- Embedding


@pytest.mark.parametrize("kwargs,shape,dtype", [
    ({"input_dim": 11, "output_dim": 4}, (3, 7), np.int32),
    ({"input_dim": 11, "output_dim": 5, "mask_zero": True}, (4, 6), np.int64),
    ({"input_dim": 9, "output_dim": 3, "input_length": 5}, (2, 5), np.int32),
    ({"input_dim": 7, "output_dim": 2}, (3, 4, 5), np.int64),               # ids of any rank
    ({"input_dim": 6, "output_dim": 3, "embeddings_initializer": "he_normal",
      "embeddings_regularizer": "l1", "embeddings_constraint": "unit_norm"}, (3, 2), np.int32),
])
def test_embedding(tfk, rng, kwargs, shape, dtype):
    ids = rng.integers(0, kwargs["input_dim"], shape).astype(dtype)
    ids.reshape(-1)[0] = 0
    tf_layer = tfk.layers.Embedding(name="e", **kwargs)
    ours, out, _ = compare_layer(tf_layer, ids, rng)
    assert out.dtype == np.float32
    assert ours.compute_output_dtype(["int32"]) == "float32"
    ref_mask = tf_layer.compute_mask(ids)
    ours_mask = ours.compute_mask(ids)
    if ref_mask is None:
        assert ours_mask is None
    else:
        np.testing.assert_array_equal(ours_mask, ref_mask.numpy())
    compare_unbuilt_config(tfk.layers.Embedding(name="e0", **kwargs), Embedding(name="e0", **kwargs))


def test_embedding_float_ids_and_errors(tfk, rng):
    tf_layer = tfk.layers.Embedding(8, 3, name="e")
    ids = np.array([[0.0, 2.7, 7.2]], np.float32)   # tf_keras casts float ids to int32 (truncating)
    compare_layer(tf_layer, ids, rng)
    layer = Embedding(8, 3)
    with pytest.raises(kconvert.errors.KConvertError, match="range"):
        layer(np.array([[1, 8]]))
    with pytest.raises(kconvert.errors.ConfigError):
        Embedding(0, 3)


# ---------------------------------------------------------------------------------------------- Masking


@pytest.mark.parametrize("mask_value", [0.0, 0.5, -1.0])
def test_masking(tfk, rng, mask_value):
    x = rng.normal(size=(3, 7, 5)).astype(np.float32)
    x[0, 2] = mask_value
    x[1, 4:] = mask_value
    x[2, 0, 1] = mask_value     # a single masked feature does not mask its timestep
    tf_layer = tfk.layers.Masking(mask_value=mask_value, name="m")
    ours, out, _ = compare_layer(tf_layer, x)
    mask = ours.compute_mask(x)
    assert mask.shape == (3, 7) and mask.dtype == bool
    np.testing.assert_array_equal(mask, tf_layer.compute_mask(x).numpy())
    assert not mask[0, 2] and not mask[1, 4:].any() and mask[2, 0]
    compare_unbuilt_config(tfk.layers.Masking(mask_value=mask_value, name="m0"),
                           Masking(mask_value=mask_value, name="m0"))


# ---------------------------------------------------------------------------------------------- noise layers

NOISE_CASES = [
    ("Dropout", {"rate": 0.3}, (3, 5, 7)),
    ("Dropout", {"rate": 0.5, "noise_shape": [None, 1, 7], "seed": 3}, (3, 5, 7)),
    ("SpatialDropout1D", {"rate": 0.2}, (3, 5, 7)),
    ("SpatialDropout2D", {"rate": 0.4, "seed": 1}, (2, 5, 7, 3)),
    ("SpatialDropout2D", {"rate": 0.4, "data_format": "channels_first"}, (2, 3, 5, 7)),
    ("SpatialDropout3D", {"rate": 0.1}, (2, 3, 4, 5, 3)),
    ("GaussianNoise", {"stddev": 0.7, "seed": 5}, (3, 5, 7)),
    ("GaussianDropout", {"rate": 0.25}, (3, 5, 7)),
    ("AlphaDropout", {"rate": 0.1, "seed": 2}, (3, 5, 7)),
]


@pytest.mark.parametrize("cls,kwargs,shape", NOISE_CASES)
def test_noise_layers_are_identity_at_inference(tfk, rng, cls, kwargs, shape):
    x = rng.normal(size=shape).astype(np.float32)
    ours, out, _ = compare_layer(getattr(tfk.layers, cls)(name="n", **kwargs), x)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(ours(x, training=False), x)
    compare_unbuilt_config(getattr(tfk.layers, cls)(name="n0", **kwargs),
                           getattr(regularization, cls)(name="n0", **kwargs))
    assert json_round_trip(ours.get_config()) == json_round_trip(getattr(tfk.layers, cls)(name="n", **kwargs)
                                                                 .get_config())


def test_dropout_training_statistics():
    x = np.ones((400, 250), np.float32)
    y = regularization.Dropout(0.3, seed=0)(x, training=True)
    assert y.dtype == np.float32
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[~dropped], 1 / 0.7, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.02
    np.testing.assert_array_equal(regularization.Dropout(0.0)(x, training=True), x)
    assert not regularization.Dropout(1.0)(x, training=True).any()


def test_dropout_noise_shape_and_seed():
    x = np.ones((50, 6, 40), np.float32)
    y = regularization.Dropout(0.5, noise_shape=(None, 1, 40), seed=7)(x, training=True)
    assert (y == y[:, :1, :]).all()                  # one decision shared along the size-1 axis
    assert abs((y[:, 0] == 0).mean() - 0.5) < 0.05
    y2 = regularization.Dropout(0.5, noise_shape=(None, 1, 40), seed=7)(x, training=True)
    np.testing.assert_array_equal(y, y2)             # same seed, same draw
    layer = regularization.Dropout(0.5, seed=7)
    assert not np.array_equal(layer(x, training=True), layer(x, training=True))   # fresh draw per call


@pytest.mark.parametrize("cls,kwargs,shape,channel_axis", [
    ("SpatialDropout1D", {}, (40, 9, 30), 2),
    ("SpatialDropout2D", {}, (20, 4, 5, 30), 3),
    ("SpatialDropout2D", {"data_format": "channels_first"}, (20, 30, 4, 5), 1),
    ("SpatialDropout3D", {}, (20, 2, 3, 4, 30), 4),
    ("SpatialDropout3D", {"data_format": "channels_first"}, (20, 30, 2, 3, 4), 1),
])
def test_spatial_dropout_drops_whole_channels(cls, kwargs, shape, channel_axis):
    x = np.ones(shape, np.float32)
    y = getattr(regularization, cls)(0.4, seed=1, **kwargs)(x, training=True)
    per_channel = np.moveaxis(y, channel_axis, 1).reshape(shape[0], shape[channel_axis], -1)
    assert (per_channel == per_channel[..., :1]).all()
    assert abs((per_channel[..., 0] == 0).mean() - 0.4) < 0.06
    np.testing.assert_allclose(y[y != 0], 1 / 0.6, rtol=1e-6)


def test_gaussian_noise_training_statistics():
    x = np.full((400, 250), 2.0, np.float32)
    y = regularization.GaussianNoise(0.7, seed=0)(x, training=True)
    assert y.dtype == np.float32
    assert abs((y - x).mean()) < 0.01 and abs((y - x).std() - 0.7) < 0.01


def test_gaussian_dropout_training_statistics():
    x = np.full((400, 250), 3.0, np.float32)
    y = regularization.GaussianDropout(0.25, seed=0)(x, training=True) / 3.0
    assert abs(y.mean() - 1.0) < 0.01 and abs(y.std() - np.sqrt(0.25 / 0.75)) < 0.01
    np.testing.assert_array_equal(regularization.GaussianDropout(0.0)(x, training=True), x)


def test_alpha_dropout_keeps_selu_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 400)).astype(np.float32)
    y = regularization.AlphaDropout(0.2, seed=0)(x, training=True)
    assert y.dtype == np.float32
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1.0) < 0.02
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    a = ((1 - 0.2) * (1 + 0.2 * alpha_p**2)) ** -0.5
    dropped_value = a * alpha_p + (-a * alpha_p * 0.2)
    assert abs(np.isclose(y, dropped_value, atol=1e-6).mean() - 0.2) < 0.01


def test_noise_layer_errors():
    with pytest.raises(kconvert.errors.ConfigError):
        regularization.Dropout(1.5)
    with pytest.raises(kconvert.errors.ConfigError):
        regularization.SpatialDropout2D(0.1, data_format="nhwc")
    with pytest.raises(kconvert.errors.ShapeError):
        regularization.SpatialDropout2D(0.1)(np.zeros((2, 3, 4), np.float32))


# ---------------------------------------------------------------------------------------------- Keras 3 configs

KERAS3_LAYERS = [("BatchNormalization", {}), ("LayerNormalization", {}), ("Add", {}), ("Concatenate", {"axis": 1}),
                 ("Dot", {"axes": 1}), ("ReLU", {"max_value": 6.0}), ("LeakyReLU", {"negative_slope": 0.1}),
                 ("PReLU", {}), ("ELU", {}), ("Softmax", {}), ("Dropout", {"rate": 0.2}),
                 ("SpatialDropout2D", {"rate": 0.1}), ("GaussianNoise", {"stddev": 0.1}),
                 ("GaussianDropout", {"rate": 0.1}), ("AlphaDropout", {"rate": 0.1}),
                 ("Embedding", {"input_dim": 5, "output_dim": 3}), ("Masking", {})]


@pytest.mark.parametrize("cls,kwargs", KERAS3_LAYERS)
def test_keras3_configs_deserialize(keras3, cls, kwargs):
    config = json_round_trip(getattr(keras3.layers, cls)(**kwargs).get_config())
    layer = kconvert.layers.deserialize({"class_name": cls, "config": config})
    assert type(layer).__name__ == cls
    if cls == "LeakyReLU":
        assert layer.get_config()["alpha"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------- ops these layers added


def _numeric_grad(f, x, g, eps=1e-3):
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += eps
        xm[idx] -= eps
        out[idx] = (np.sum(f(xp) * g) - np.sum(f(xm) * g)) / (2 * eps)
    return out


def _run_onnx(builder, feeds: dict, out: str, out_shape):
    import onnxruntime as ort

    model = builder.make_model([(k, v.shape) for k, v in feeds.items()], [(out, out_shape)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min"])
@pytest.mark.parametrize("axis,keepdims", [((1, 2), False), (-1, True), (None, False)])
def test_reduction_ops_gradient_and_onnx(rng, op, axis, keepdims):
    from kconvert.ops.base import OPS
    from kconvert.ops.onnx_builder import OnnxBuilder

    cls = OPS[op]
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    y = cls.forward(x, axis, keepdims)
    g = rng.normal(size=np.shape(y))
    (grad,) = cls.backward(g, (x,), y, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(grad, _numeric_grad(lambda v: cls.forward(v, axis, keepdims), x, g), atol=1e-2)
    b = OnnxBuilder()
    out = cls.to_onnx(b, ["x"], axis=axis, keepdims=keepdims)
    assert_close(_run_onnx(b, {"x": x}, out, np.shape(y)), y)


def test_concatenate_gather_ops(rng):
    from kconvert.ops.base import OPS
    from kconvert.ops.onnx_builder import OnnxBuilder

    a, c = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)
    y = OPS["concatenate"].forward(a, c, axis=-1)
    g = rng.normal(size=y.shape)
    ga, gc = OPS["concatenate"].backward(g, (a, c), y, axis=-1)
    np.testing.assert_array_equal(ga, g[:, :3])
    np.testing.assert_array_equal(gc, g[:, 3:])
    b = OnnxBuilder()
    assert_close(_run_onnx(b, {"a": a, "c": c}, OPS["concatenate"].to_onnx(b, ["a", "c"], axis=-1), y.shape), y)
    table, ids = rng.normal(size=(6, 3)).astype(np.float32), np.array([[0, 5, 2], [2, 2, 1]])
    y = kconvert.ops.gather(table, ids)
    g = rng.normal(size=y.shape)
    gt, _ = OPS["gather"].backward(g, (table, ids), y)
    np.testing.assert_allclose(gt, _numeric_grad(lambda v: np.take(v, ids, axis=0), table, g), atol=1e-2)
    with pytest.raises(IndexError):
        kconvert.ops.gather(table, np.array([6]))
