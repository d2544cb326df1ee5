"""Lambda layers written for Keras 3: tf_keras models with Lambdas (saved at test time) upgraded by kconvert to
`.keras` archives that real Keras 3 loads with safe_mode=False and that predict what tf_keras predicts."""

import json
import os
import zipfile

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert.errors import ConfigError, UnsafeError


def make_affine(k):
    return lambda t, s=2.0: t * s + k  # a closure (k) and a default (s, overridden by `arguments`)


def shift(t):
    return t / 127.5 - 1.0


class Halver:
    """A callable that is not a Python function: it has no bytecode Keras 3 could store."""

    __name__ = "halve"

    def __call__(self, x):
        return x * 0.5


@pytest.fixture(scope="module")
def keras3():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


@pytest.fixture(scope="module")
def tf_file(tfk, tmp_path_factory):
    """A tf_keras model with marshalled lambdas (closure, default, arguments, raw and function output shapes)."""
    L = tfk.layers
    inp = tfk.Input((5, 7, 3))
    x = L.Conv2D(4, 3, activation="tanh")(inp)
    x = L.Lambda(lambda t: t * 2.0 + 1.0, name="scale")(x)
    x = L.Lambda(make_affine(0.25), arguments={"s": 0.75}, output_shape=lambda s: s, name="affine")(x)
    x = L.Lambda(lambda t: t / 127.5 - 1.0, output_shape=(3, 5, 4), name="norm")(x)
    out = L.Dense(3)(L.Flatten()(x))
    model = tfk.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("lambda3") / "tf.h5"
    model.save(path)
    x = rng.normal(size=(3, 5, 7, 3)).astype(np.float32)
    return {"path": path, "x": x, "ref": model.predict(x, verbose=0)}


def _config_layers(path):
    with zipfile.ZipFile(path) as z:
        return {la["config"]["name"]: la for la in json.loads(z.read("config.json"))["config"]["layers"]}


def test_tf_keras_lambdas_upgrade_to_keras3(tf_file, keras3, tmp_path):
    model = kconvert.load_model(tf_file["path"], safe_mode=False)
    assert_close(model.predict(tf_file["x"]), tf_file["ref"])
    model.save(tmp_path / "m.keras")
    layers = _config_layers(tmp_path / "m.keras")
    for name in ("scale", "affine", "norm"):
        config = layers[name]["config"]
        assert config["function"]["class_name"] == "__lambda__" and "function_type" not in config
    assert layers["affine"]["config"]["arguments"] == {"s": 0.75}
    assert layers["affine"]["config"]["function"]["config"]["closure"] == [0.25]
    assert layers["norm"]["config"]["output_shape"] == [3, 5, 4]

    theirs = keras3.saving.load_model(tmp_path / "m.keras", safe_mode=False)
    assert_close(np.asarray(theirs.predict(tf_file["x"], verbose=0)), tf_file["ref"])

    back = kconvert.load_model(tmp_path / "m.keras", safe_mode=False)
    assert_close(back.predict(tf_file["x"]), tf_file["ref"])
    with pytest.raises(UnsafeError, match="safe_mode=False"):
        kconvert.load_model(tmp_path / "m.keras")


def test_function_supplied_by_layer_name_is_written_from_its_code(tf_file, keras3, tmp_path):
    """In safe mode the user supplies the function; its own code is what Keras 3 gets."""
    def scale(t):
        return t * 2.0 + 1.0

    objects = {"scale": scale, "affine": {"function": lambda t, s: t * s + 0.25, "output_shape": None},
               "norm": shift}
    model = kconvert.load_model(tf_file["path"], custom_objects=objects)
    model.save(tmp_path / "m.keras")
    assert _config_layers(tmp_path / "m.keras")["scale"]["config"]["function"]["class_name"] == "__lambda__"
    theirs = keras3.saving.load_model(tmp_path / "m.keras", safe_mode=False)
    assert_close(np.asarray(theirs.predict(tf_file["x"], verbose=0)), tf_file["ref"])


def test_lambda_built_in_kconvert_loads_in_keras3(keras3, tmp_path):
    inp = kconvert.Input((5, 7))
    x = kconvert.layers.Dense(3, activation="tanh")(inp)
    out = kconvert.layers.Lambda(lambda t, c=1.5: t * c + 0.25, name="affine")(x)
    model = kconvert.Model(inp, out)
    model.save(tmp_path / "k.keras")
    theirs = keras3.saving.load_model(tmp_path / "k.keras", safe_mode=False)
    x = np.random.default_rng(2).normal(size=(2, 5, 7)).astype(np.float32)
    assert_close(model.predict(x), np.asarray(theirs.predict(x, verbose=0)))
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras3.saving.load_model(tmp_path / "k.keras")


def test_function_without_bytecode_is_refused(tf_file, tmp_path):
    model = kconvert.load_model(tf_file["path"], custom_objects={"scale": Halver(), "affine": make_affine(0.25),
                                                                 "norm": shift})
    with pytest.raises(ConfigError, match=r"layer 'scale'.*Halver, not a Python function"):
        model.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
