"""Lambda layers and custom objects: real tf_keras / Keras 3 models saved at test time, loaded by kconvert."""

import json
import sys

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert import backend as KB
from kconvert.errors import ConfigError, KConvertError, UnknownLayerError, UnsafeError
from kconvert.layers import Layer
from kconvert.models import model_from_json

# The Lambdas below are written as users write them, against the global `K`: tf_keras.backend while
# tf_keras builds and runs the models (set by the `tf_model` fixture); kconvert maps `K` to its backend.
K = None
H2, W2 = 8, 19  # module constants a Lambda refers to: kconvert gets them through custom_objects
CONSTANTS = {"H2": H2, "W2": W2}


def antirectifier(x):
    x -= K.mean(x, axis=-1, keepdims=True)
    return K.concatenate([K.relu(x), K.relu(-x)], axis=-1)


def make_scaler(k):
    return lambda t, s=2.0: t * s * k + 0.1  # a closure (k) and a default (s, overridden by `arguments`)


class Doubler:
    """A callable that is not a Python function: tf_keras stores it by name (function_type 'function')."""

    __name__ = "double_it"

    def __call__(self, x):
        return x * 2.0 - 0.5


SCALE = np.linspace(0.5, 2.0, 8).astype(np.float32)


def _randomize(model, rng, scale=0.3):
    model.set_weights([rng.normal(0.0, scale, w.shape).astype(np.float32) for w in model.get_weights()])


@pytest.fixture(scope="module")
def tf_model(tfk, tmp_path_factory):
    """A functional tf_keras model with marshalled lambdas, saved as .h5 and .json, and its predictions."""
    global K
    K = tfk.backend
    L = tfk.layers
    inp = tfk.Input((5, 7, 3))
    x = L.Lambda(lambda t: K.resize_images(t, 2, 3, "channels_last", interpolation="bilinear"), name="up")(inp)
    x = L.Conv2D(4, 3, activation="tanh")(x)
    x = L.Lambda(antirectifier, name="anti")(x)
    x = L.Lambda(make_scaler(0.5), output_shape=lambda s: s, arguments={"s": SCALE}, name="scale")(x)
    flat = L.Lambda(lambda t: K.reshape(t, (-1, H2 * W2 * 8)), name="flat")(x)
    a = L.Dense(3)(flat)
    b = L.Dense(3)(flat)
    out = L.Lambda(lambda ab: ab[0] * K.sigmoid(ab[1]), name="gate")([a, b])
    out = L.Lambda(Doubler(), name="dbl")(out)
    model = tfk.Model(inp, out)
    rng = np.random.default_rng(3)
    _randomize(model, rng, 0.05)
    d = tmp_path_factory.mktemp("lambda")
    model.save(d / "lam.h5")
    (d / "lam.json").write_text(model.to_json())
    x = rng.normal(0.0, 1.0, (3, 5, 7, 3)).astype(np.float32)
    return {"model": model, "h5": d / "lam.h5", "json": d / "lam.json", "x": x, "ref": model.predict(x, verbose=0)}


def _numpy_double(x):
    return x * 2.0 - 0.5


OBJECTS = {**CONSTANTS, "double_it": _numpy_double}


def test_h5_with_lambdas_predicts_as_tf_keras(tf_model):
    ours = kconvert.load_model(tf_model["h5"], safe_mode=False, custom_objects=OBJECTS)
    ref = tf_model["ref"]
    assert np.std(ref) > 1e-2  # the lambdas pass signal on
    assert_close(ours.predict(tf_model["x"]), ref)
    for layer in tf_model["model"].layers[1:]:  # shapes inferred by running the functions, as tf_keras did
        assert ours.get_layer(layer.name).output_shape == layer.output_shape, layer.name


def test_in_place_updates_in_a_lambda_do_not_leak(tfk, tf_model):
    """`x -= ...` rebinds a TensorFlow tensor; on numpy it must not change the input other layers read."""
    inp = tfk.Input((6,))
    out = tfk.layers.Concatenate()([tfk.layers.Lambda(antirectifier)(inp), tfk.layers.Dense(4)(inp)])
    model = tfk.Model(inp, out)
    ours = model_from_json(model.to_json(), safe_mode=False)
    ours.set_weights(model.get_weights())
    x = np.random.default_rng(11).normal(1.0, 1.0, (3, 6)).astype(np.float32)
    kept = x.copy()
    assert_close(ours.predict(x), model.predict(x, verbose=0))
    np.testing.assert_array_equal(x, kept)


def test_json_with_lambdas_round_trips_configs(tf_model):
    text = tf_model["json"].read_text()
    ours = model_from_json(text, safe_mode=False, custom_objects=OBJECTS)
    ours.set_weights(tf_model["model"].get_weights())
    assert_close(ours.predict(tf_model["x"]), tf_model["ref"])
    theirs = {e["name"]: e["config"] for e in json.loads(text)["config"]["layers"] if e["class_name"] == "Lambda"}
    written = {e["name"]: e["config"] for e in json.loads(ours.to_json())["config"]["layers"]
               if e["class_name"] == "Lambda"}
    assert written == theirs


def test_safe_mode_refuses_bytecode_with_both_ways_out(tf_model):
    with pytest.raises(UnsafeError) as info:
        kconvert.load_model(tf_model["h5"], custom_objects=OBJECTS)
    msg = str(info.value)
    assert info.value.layer == "up" and str(tf_model["h5"]) in msg
    assert "safe_mode=False" in msg and "custom_objects={'up': fn}" in msg


def test_functions_by_layer_name_load_in_safe_mode(tf_model):
    """Supplying each Lambda's function by layer name needs no bytecode (and works for any Python version)."""
    by_name = {
        "up": lambda t: KB.resize_images(t, 2, 3, "channels_last", interpolation="bilinear"),
        "anti": lambda t: np.concatenate([np.maximum(t - t.mean(-1, keepdims=True), 0),
                                          np.maximum(t.mean(-1, keepdims=True) - t, 0)], axis=-1),
        "scale": lambda t, s: t * s * 0.5 + 0.1,  # `s` still comes from the stored `arguments`
        "flat": lambda t: t.reshape(len(t), -1),
        "gate": {"function": lambda ab: ab[0] * KB.sigmoid(ab[1])},
    }
    ours = kconvert.load_model(tf_model["h5"], custom_objects={**by_name, "double_it": _numpy_double})
    assert_close(ours.predict(tf_model["x"]), tf_model["ref"])
    assert ours.get_layer("scale").output_shape == (None, H2, W2, 8)  # inferred: its output_shape was bytecode


def test_missing_global_and_missing_named_function_are_explained(tf_model):
    with pytest.raises(ConfigError, match=r"'H2'.*custom_objects=\{'H2'") as info:
        kconvert.load_model(tf_model["h5"], safe_mode=False, custom_objects={"double_it": _numpy_double})
    assert info.value.layer == "flat"
    with pytest.raises(ConfigError, match=r"'double_it'.*custom_objects=\{'double_it': fn\}") as info:
        kconvert.load_model(tf_model["h5"], safe_mode=False, custom_objects=CONSTANTS)
    assert info.value.layer == "dbl"


# `lambda x: K.mean(x, axis=-1, keepdims=True) * 2.0` marshalled by each CPython (base64 of
# marshal.dumps(f.__code__), made with pyenv's 3.10.13, 3.11.7, 3.12.1 and 3.13.0)
PAYLOADS = {
    (3, 10): "4wEAAAAAAAAAAAAAAAEAAAAFAAAAQwAAAHMUAAAAdABqAXwAZAFkAmQDjQNkBBQAUwApBU7p/////1QpAtoEYXhpc9oIa2VlcGRpbXPn"
             "AAAAAAAAAEApAtoBS9oEbWVhbikB2gF4qQByCAAAAPoPL3RtcC94di9nZW4yLnB52gg8bGFtYmRhPgMAAABzAgAAABQA",
    (3, 11): "4wEAAAAAAAAAAAAAAAUAAAADAAAA80IAAACXAHQAAAAAAAAAAAAAAKABAAAAAAAAAAAAAAAAAAAAAAAAAAB8AGQBZAKsA6YDAACr"
             "AwAAAAAAAAAAZAR6BQAAUwApBU7p/////1QpAtoEYXhpc9oIa2VlcGRpbXPnAAAAAAAAAEApAtoBS9oEbWVhbikB2gF4cwEAAAAg"
             "+g8vdG1wL3h2L2dlbjIucHn6CDxsYW1iZGE+cgoAAAADAAAAcx0AAACAAI1hj2aKZpBRmFKoJIhm0Q4v1A4vsCPRDjWAAPMAAAAA",
    (3, 12): "4wEAAAAAAAAAAAAAAAUAAAADAAAA8zgAAACXAHQAAAAAAAAAAABqAwAAAAAAAAAAAAAAAAAAAAAAAHwAZAFkAqwDqwMAAAAAAABk"
             "BHoFAABTACkFTun/////VCkC2gRheGlz2ghrZWVwZGltc+cAAAAAAAAAQCkC2gFL2gRtZWFuKQHaAXhzAQAAACD6Dy90bXAveHYv"
             "Z2VuMi5wefoIPGxhbWJkYT5yCgAAAAMAAABzGgAAAIAAjGGPZolmkFGYUqgkiGbTDi+wI9EONYAA8wAAAAA=",
    (3, 13): "4wEAAAAAAAAAAAAAAAYAAAADAAAA8zIAAACVAFsAAAAAAAAAAABSAwAAAAAAAAAAAAAAAAAAAAAAAFUAUwFTAlMDOQNTBC0FAAAk"
             "ACkFTun/////VCkC2gRheGlz2ghrZWVwZGltc+cAAAAAAAAAQCkC2gFL2gRtZWFuKQHaAXhzAQAAACDaDy90bXAveHYvZ2VuMi5w"
             "edoIPGxhbWJkYT5yCgAAAAMAAABzGAAAAIAAjGGPZolmkFGYUqgkiGbQDi+wI9IONfMAAAAA",
}


def _lambda_json(code, name="mean2"):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5, 3], "dtype": "float32",
                                                "name": "inp"}},
        {"class_name": "Lambda", "config": {"name": name, "trainable": True, "dtype": "float32",
                                            "function": [code, None, None], "function_type": "lambda",
                                            "module": "__main__", "output_shape": None,
                                            "output_shape_type": "raw", "output_shape_module": None,
                                            "arguments": {}}}]}}
    return json.dumps(config)


@pytest.mark.parametrize("version", sorted(PAYLOADS), ids=lambda v: f"py{v[0]}.{v[1]}")
def test_bytecode_of_other_python_versions_is_refused(version):
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    text = _lambda_json(PAYLOADS[version])
    if version == sys.version_info[:2]:  # this interpreter's own bytecode loads and runs
        assert_close(model_from_json(text, safe_mode=False).predict(x), x.mean(-1, keepdims=True) * 2)
        return
    with pytest.raises(ConfigError, match="different Python version") as info:
        model_from_json(text, safe_mode=False)
    assert info.value.layer == "mean2" and "custom_objects={'mean2': fn}" in str(info.value)
    fixed = model_from_json(text, custom_objects={"mean2": lambda t: KB.mean(t, axis=-1, keepdims=True) * 2})
    assert_close(fixed.predict(x), x.mean(-1, keepdims=True) * 2)


@pytest.mark.parametrize("code", [PAYLOADS[(3, 11)][:40] + "\n", "not base64 at all!", "4wAAAA==", 17,
                                  "6QcAAAA=\n"],  # the last one: marshal.dumps(7), data that is not code
                         ids=["truncated", "garbage", "short", "not-a-string", "not-code"])
def test_corrupted_bytecode_is_refused(code):
    with pytest.raises(ConfigError, match="cannot be loaded") as info:
        model_from_json(_lambda_json(code), safe_mode=False)
    assert info.value.layer == "mean2"


def test_marshal_free_forms_and_keras2_ndarray_arguments(tfk):
    """A named function (function_type 'function'), a raw output_shape and Keras 2.2's ndarray arguments."""
    inp = tfk.Input((4, 6))
    out = tfk.layers.Lambda(Doubler(), output_shape=(4, 6), name="dbl")(inp)
    model = tfk.Model(inp, out)
    config = json.loads(model.to_json())
    lam = config["config"]["layers"][1]["config"]
    assert lam["function_type"] == "function" and lam["output_shape_type"] == "raw"
    lam["arguments"] = {"w": {"type": "ndarray", "value": [[0.5] * 6] * 4}}
    ours = model_from_json(json.dumps(config), custom_objects={"double_it": lambda t, w: t * w * 4.0 - 0.5})
    x = np.random.default_rng(1).normal(size=(2, 4, 6)).astype(np.float32)
    assert_close(ours.predict(x), model.predict(x, verbose=0))
    assert ours.predict(x).dtype == np.float32
    assert json.loads(ours.to_json())["config"]["layers"][1]["config"] == lam


def test_lambda_masks_follow_tf_keras(tfk):
    """A Lambda with a mask function passes the mask on; one without drops it (tf_keras's rule)."""
    ids = np.array([[3, 5, 0, 0, 0], [1, 2, 4, 6, 0]], np.int32)
    for mask in (lambda inputs, m: m, None):
        inp = tfk.Input((5,), dtype="int32")
        x = tfk.layers.Embedding(8, 3, mask_zero=True)(inp)
        x = tfk.layers.Lambda(lambda t: t * 3.0 + 1.0, mask=mask)(x)
        model = tfk.Model(inp, tfk.layers.GlobalAveragePooling1D()(x))
        _randomize(model, np.random.default_rng(5), 1.0)
        ours = model_from_json(model.to_json(), safe_mode=False)
        ours.set_weights(model.get_weights())
        assert_close(ours.predict(ids), model.predict(ids, verbose=0))


def test_lambda_built_in_kconvert_loads_in_tf_keras(tfk, tmp_path):
    inp = kconvert.Input((5, 7))
    out = kconvert.layers.Lambda(lambda t, c=1.5: t * c + 0.25, name="affine")(inp)
    model = kconvert.Model(inp, kconvert.layers.Dense(3)(out))
    model.save(tmp_path / "k.h5")
    theirs = tfk.models.load_model(tmp_path / "k.h5", safe_mode=False)
    x = np.random.default_rng(2).normal(size=(2, 5, 7)).astype(np.float32)
    assert_close(model.predict(x), theirs.predict(x, verbose=0))
    assert theirs.get_layer("affine").get_config()["function_type"] == "lambda"


def test_functions_that_fail_on_numpy_are_explained():
    layer = kconvert.layers.Lambda(lambda t: KB.no_such_function(t), name="odd")
    with pytest.raises(ConfigError, match=r"K\.no_such_function.*custom_objects=\{'odd': fn\}"):
        layer(kconvert.Input((3,)))
    layer = kconvert.layers.Lambda(lambda t: t * t.shape.as_list()[-1], name="tfish", output_shape=(3,))
    model = kconvert.Model(inp := kconvert.Input((3,)), layer(inp))
    with pytest.raises(ConfigError, match=r"layer 'tfish'.*AttributeError.*as_list.*custom_objects=\{'tfish'"):
        model.predict(np.ones((2, 3), np.float32))


# ---------------------------------------------------------------------------------------------- Keras 3


def test_keras3_lambda_config_loads_with_safe_mode_false():
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    def make(k):
        return lambda t, s=2.0: ops.mean(t, axis=1) * s + k  # noqa: F821 - `ops` is keras.ops when it runs

    globals()["ops"] = keras.ops
    try:
        inp = keras.Input((5, 3))
        out = keras.layers.Lambda(make(0.25), output_shape=(3,), name="pool")(inp)
        model = keras.Model(inp, keras.layers.Lambda(lambda t: t * t)(out))
        x = np.random.default_rng(4).normal(size=(2, 5, 3)).astype(np.float32)
        ref = model.predict(x, verbose=0)
    finally:
        del globals()["ops"]
    text = model.to_json()
    assert json.loads(text)["config"]["layers"][1]["config"]["function"]["class_name"] == "__lambda__"
    with pytest.raises(UnsafeError, match="safe_mode=False"):
        model_from_json(text, custom_objects={"ops": KB})
    ours = model_from_json(text, safe_mode=False, custom_objects={"ops": KB})
    assert_close(ours.predict(x), ref)
    assert ours.get_layer("pool").get_config()["function"] == json.loads(text)["config"]["layers"][1]["config"][
        "function"]


# ---------------------------------------------------------------------------------------------- custom objects


class ScaledDense(Layer):
    """The kconvert twin of the tf_keras custom layer below: weights by add_weight, call with the backend."""

    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1], self.units), "glorot_uniform")
        self.b = self.add_weight("b", (self.units,))

    def call(self, inputs):
        return KB.tanh(KB.dot(inputs, self.w.value) + self.b.value) * self.scale

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


def numpy_swishish(x):
    return x * KB.sigmoid(1.5 * x)


def _tf_custom_model(tfk, nested: bool):
    import tensorflow as tf

    class ScaledDense(tfk.layers.Layer):  # noqa: F811 - same class name as the kconvert twin, on purpose
        def __init__(self, units, scale=1.0, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.scale = scale

        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units), initializer="glorot_uniform")
            self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")

        def call(self, inputs):
            return tf.tanh(tf.matmul(inputs, self.w) + self.b) * self.scale

        def get_config(self):
            return {**super().get_config(), "units": self.units, "scale": self.scale}

    def swishish(x):
        return x * tf.sigmoid(1.5 * x)

    swishish.__name__ = "numpy_swishish"
    inp = tfk.Input((7,))
    head = tfk.Sequential([tfk.Input((5,)), ScaledDense(6, scale=1.5, name="scaled"),
                           tfk.layers.Dense(3, activation=swishish, name="act")], name="head")
    x = tfk.layers.Dense(5, name="pre")(inp)
    model = tfk.Model(inp, head(x)) if nested else head
    _randomize(model, np.random.default_rng(6), 0.6)
    return model, (inp if nested else None)


@pytest.mark.parametrize("nested", [False, True], ids=["sequential", "nested-in-functional"])
def test_tf_keras_custom_layer_loads_with_kconvert_class(tfk, tmp_path, nested):
    model, _ = _tf_custom_model(tfk, nested)
    model.save(tmp_path / "custom.h5")
    x = np.random.default_rng(8).normal(size=(4, 7 if nested else 5)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    objects = {"ScaledDense": ScaledDense, "numpy_swishish": numpy_swishish}
    ours = kconvert.load_model(tmp_path / "custom.h5", custom_objects=objects)
    assert_close(ours.predict(x), ref)
    for a, b in zip(ours.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with kconvert.custom_object_scope(objects):  # the same through a scope
        assert_close(kconvert.load_model(tmp_path / "custom.h5").predict(x), ref)
    try:  # and through the global registry
        kconvert.get_custom_objects().update(objects)
        assert_close(kconvert.load_model(tmp_path / "custom.h5").predict(x), ref)
    finally:
        for k in objects:
            kconvert.get_custom_objects().pop(k, None)
    with pytest.raises(UnknownLayerError, match=r"'ScaledDense'.*custom_objects=\{'ScaledDense': ScaledDense\}") \
            as info:
        kconvert.load_model(tmp_path / "custom.h5", custom_objects={"numpy_swishish": numpy_swishish})
    assert info.value.layer == "scaled" and str(tmp_path / "custom.h5") in str(info.value)
    with pytest.raises(ConfigError, match=r"numpy_swishish.*custom_objects"):
        kconvert.load_model(tmp_path / "custom.h5", custom_objects={"ScaledDense": ScaledDense})


def test_unknown_class_error_in_every_config_form(tfk):
    model, _ = _tf_custom_model(tfk, nested=True)
    text = model.to_json()
    for config in (json.loads(text), json.loads(text)["config"]["layers"][2]):  # functional, nested Sequential
        with pytest.raises(UnknownLayerError, match=r"custom_objects=\{'ScaledDense': ScaledDense\}") as info:
            kconvert.models.model_from_config(config)
        assert info.value.layer == "scaled"


def test_registered_names_and_custom_initializers(tfk, tmp_path):
    """'Package>Name' registrations (tf_keras's register_keras_serializable) and custom initializers by name."""
    registered = tfk.saving.register_keras_serializable(package="kc")

    @registered
    class Offset(tfk.layers.Layer):
        def build(self, input_shape):
            self.o = self.add_weight(name="o", shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x + self.o

    inp = tfk.Input((4,))
    model = tfk.Model(inp, Offset(name="off")(tfk.layers.Dense(4, kernel_initializer="ones")(inp)))
    _randomize(model, np.random.default_rng(9), 0.5)
    model.save(tmp_path / "reg.h5")  # the HDF5 config names the class 'kc>Offset'; to_json's registered_name
    config = json.loads(model.to_json())
    assert config["config"]["layers"][2]["registered_name"] == "kc>Offset"

    class KOffset(Layer):
        def build(self, input_shape):
            self.o = self.add_weight("o", (input_shape[-1],), "my_init")

        def call(self, x):
            return x + self.o.value

    def my_init(shape, dtype="float32"):
        return np.ones(shape, dtype)

    kconvert.register_keras_serializable(package="kc", name="Offset")(KOffset)
    try:
        with kconvert.custom_object_scope({"my_init": my_init}):
            ours = kconvert.models.model_from_config(config)
        x = np.random.default_rng(9).normal(size=(2, 4)).astype(np.float32)
        np.testing.assert_array_equal(ours.get_layer("off").get_weights()[0], np.ones(4))  # from my_init
        ours.set_weights(model.get_weights())
        assert_close(ours.predict(x), model.predict(x, verbose=0))
        from_h5 = kconvert.load_model(tmp_path / "reg.h5", custom_objects={"my_init": my_init})
        assert_close(from_h5.predict(x), model.predict(x, verbose=0))
        with pytest.raises(KConvertError, match=r"unknown initializer 'my_init'.*custom_objects"):
            kconvert.load_model(tmp_path / "reg.h5")
        with pytest.raises(ValueError, match="already been registered"):
            kconvert.register_keras_serializable(package="kc", name="Offset")(KOffset)
    finally:
        kconvert.get_custom_objects().pop("kc>Offset")
