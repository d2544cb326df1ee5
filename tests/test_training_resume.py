"""Resuming training from a compiled model file of every Keras writer: tf_keras with a legacy (TF <= 2.10 style)
optimizer, Keras 3's `.keras` archive and its legacy `.h5`, and kconvert's own `.keras`. The file's optimizer is
recompiled with the same hyperparameters, its state restored in the writer's order, and the next epoch equals the
writer's next epoch (History and weights). No shuffling and no random layers, so every run is deterministic."""

import json
import zipfile

import h5py
import numpy as np
import pytest
from conftest import assert_close
from training_compare import load_quietly, same_history, same_weights

import kconvert
from kconvert import layers as KL

BATCH = 10


@pytest.fixture(scope="module")
def keras3():
    import keras

    return keras


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((30, 9, 7, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 30)]
    return x, y


def _randomize(model, seed=0):
    """Weights large enough that the layers are neither dead nor saturated; moving variances around 1."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = getattr(w, "path", None) or w.name
        if "moving_variance" in name:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
        elif "moving_mean" not in name:
            w.assign(rng.uniform(-0.4, 0.4, w.shape).astype(np.float32))


def _fit1(model, x, y):
    return model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history


# ---------------------------------------------------------------------------------------------- tf_keras, legacy


def _tfk_cnn(tfk):
    L = tfk.layers
    return tfk.Sequential([tfk.Input((9, 7, 3)), L.Conv2D(6, 3, strides=2, activation="relu"),
                           L.BatchNormalization(), L.Flatten(), L.Dense(5, activation="softmax")])


LEGACY = {
    "adam": lambda o: o.Adam(0.01, beta_1=0.8, amsgrad=True),
    "sgd_momentum_decay": lambda o: o.SGD(0.05, momentum=0.9, nesterov=True, decay=0.01),
    "rmsprop_centered": lambda o: o.RMSprop(0.005, rho=0.8, momentum=0.5, centered=True),
    "rmsprop_plain": lambda o: o.RMSprop(0.005, rho=0.85),  # epsilon outside the square root: legacy numerics
}


@pytest.mark.parametrize("opt", sorted(LEGACY))
def test_tf_keras_legacy_optimizer_h5_resumes(opt, tfk, tmp_path):
    """tf_keras trains with a `tf_keras.optimizers.legacy` optimizer and saves `.h5`; kconvert recompiles it in the
    legacy dialect with the file's hyperparameters and `optimizer_weights` (its order and names), and its next
    epoch equals tf_keras's. kconvert's own save after that resumes in tf_keras identically."""
    x, y = _data(3)
    ref = _tfk_cnn(tfk)
    _randomize(ref)
    ref.compile(LEGACY[opt](tfk.optimizers.legacy), "categorical_crossentropy", ["accuracy"])
    ref.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    ref.save(tmp_path / "legacy.h5")
    h_ref = _fit1(ref, x, y)

    with h5py.File(tmp_path / "legacy.h5", "r") as f:
        saved_config = json.loads(f.attrs["training_config"])["optimizer_config"]["config"]
        saved_names = [n.decode() if isinstance(n, bytes) else n
                       for n in f["optimizer_weights"].attrs["weight_names"]]
    resumed = load_quietly(tmp_path / "legacy.h5")
    assert resumed.optimizer.dialect == "legacy"
    assert resumed.optimizer.iterations == 6
    ours_config = resumed.optimizer.get_config()
    assert set(ours_config) == set(saved_config)
    for key, value in saved_config.items():
        assert ours_config[key] == pytest.approx(value), key
    assert [w.name for w in resumed.optimizer.variables()] == saved_names
    h_ours = _fit1(resumed, x, y)
    same_history(h_ref, h_ours)
    same_weights(ref, resumed)

    resumed.save(tmp_path / "ours.h5")  # and back: tf_keras continues from kconvert's file
    h_ref_next = _fit1(ref, x, y)
    in_tf = tfk.models.load_model(tmp_path / "ours.h5")
    assert type(in_tf.optimizer).__module__.split(".")[-2] == "legacy"
    same_history(h_ref_next, _fit1(in_tf, x, y))
    same_weights(ref, in_tf)


# ---------------------------------------------------------------------------------------------- Keras 3


def _k3_model(keras3):
    """BatchNormalization sits on a 2-D input here: see the note in test_keras3_files_resume."""
    L = keras3.layers
    return keras3.Sequential([keras3.Input((9, 7, 3)), L.Conv2D(6, 3, strides=2, activation="relu"), L.Flatten(),
                              L.Dense(8, activation="tanh"), L.BatchNormalization(), L.Dense(5, activation="softmax")])


KERAS3 = {
    "adam": lambda o: o.Adam(0.01, amsgrad=True),
    "sgd_nesterov": lambda o: o.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop_centered": lambda o: o.RMSprop(0.005, rho=0.8, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("opt", sorted(KERAS3))
def test_keras3_files_resume(opt, keras3, tmp_path):
    """Keras 3 trains and saves `.keras` (compile_config + `optimizer/vars`) and legacy `.h5` (training_config +
    optimizer_weights); kconvert recompiles both in the keras3 dialect and its next epoch equals Keras 3's.

    (BatchNormalization after a convolution is left out: kconvert moves the moving variance towards the unbiased
    batch variance for 4-D inputs as tf_keras's fused kernel does, whereas Keras 3 always uses the biased one.)"""
    x, y = _data(4)
    ref = _k3_model(keras3)
    _randomize(ref)
    ref.compile(optimizer=KERAS3[opt](keras3.optimizers), loss="categorical_crossentropy", metrics=["accuracy"])
    ref.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    ref.save(tmp_path / "k3.keras")
    ref.save(tmp_path / "k3.h5")
    ref_config = ref.optimizer.get_config()
    h_ref = _fit1(ref, x, y)

    for name in ("k3.keras", "k3.h5"):
        resumed = load_quietly(tmp_path / name)
        assert resumed.optimizer.dialect == "keras3", name
        assert resumed.optimizer.iterations == 6, name
        assert resumed.optimizer.get_config() == pytest.approx(ref_config), name
        same_history(h_ref, _fit1(resumed, x, y))
        same_weights(ref, resumed)


def test_keras3_archive_compiled_by_name_with_changed_learning_rate(keras3, tmp_path):
    """An optimizer compiled by name, whose learning rate was changed after compiling (as ReduceLROnPlateau does):
    the rate Keras 3 saved is the one that resumes."""
    x, y = _data(5)
    ref = _k3_model(keras3)
    _randomize(ref, seed=1)
    ref.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    ref.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    ref.optimizer.learning_rate.assign(0.02)
    ref.save(tmp_path / "named.keras")
    h_ref = _fit1(ref, x, y)
    resumed = load_quietly(tmp_path / "named.keras")
    assert float(resumed.optimizer.learning_rate) == pytest.approx(0.02)
    same_history(h_ref, _fit1(resumed, x, y))
    same_weights(ref, resumed)


# ---------------------------------------------------------------------------------------------- kconvert's .keras


def _kconvert_model():
    m = kconvert.Sequential([kconvert.Input((9, 7, 3)), KL.Conv2D(6, 3, strides=2, activation="relu"), KL.Flatten(),
                             KL.Dense(8, activation="tanh"), KL.BatchNormalization(), KL.Dense(5, activation="softmax")])
    _randomize(m, seed=2)
    return m


OURS = {  # optimizer, loss, metrics
    "adam_tf_keras_rules": lambda: (kconvert.optimizers.Adam(0.01, beta_2=0.99),
                                    kconvert.losses.CategoricalCrossentropy(label_smoothing=0.1),
                                    [kconvert.metrics.CategoricalAccuracy(name="cat_acc"), "mae"]),
    "sgd_tf_keras_rules": lambda: (kconvert.optimizers.SGD(0.05, momentum=0.9), kconvert.losses.categorical_crossentropy,
                                   ["accuracy"]),
    "rmsprop_keras3": lambda: (kconvert.optimizers.RMSprop(0.005, momentum=0.5, centered=True, dialect="keras3"),
                               "categorical_crossentropy", ["accuracy"]),
}
K3_NAMES = {"adam_tf_keras_rules": "adam", "sgd_tf_keras_rules": "sgd", "rmsprop_keras3": "rm_sprop"}


@pytest.mark.parametrize("opt", sorted(OURS))
def test_kconvert_keras_archive_resumes_in_keras3_and_kconvert(opt, keras3, tmp_path):
    """kconvert trains and saves `.keras`: compile_config (Keras 3's names; loss and metric objects in its config
    form) and the optimizer variables in Keras 3's layout (a tf_keras-rules optimizer is written as the equal
    Keras 3 one); real Keras 3 and kconvert's own load both continue exactly as kconvert continuing unsaved."""
    x, y = _data(6)
    ours = _kconvert_model()
    optimizer, loss, metrics = OURS[opt]()
    ours.compile(optimizer, loss, metrics)
    ours.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    ours.save(tmp_path / "ours.keras")
    h_direct = _fit1(ours, x, y)

    with zipfile.ZipFile(tmp_path / "ours.keras") as z:
        compile_config = json.loads(z.read("config.json"))["compile_config"]
    assert compile_config["optimizer"]["config"]["name"] == K3_NAMES[opt]
    assert int(np.asarray(ours.optimizer.iterations)) == 9

    in_k3 = keras3.saving.load_model(tmp_path / "ours.keras")
    assert int(in_k3.optimizer.iterations) == 6
    same_history(h_direct, _fit1(in_k3, x, y))
    same_weights(in_k3, ours)

    again = load_quietly(tmp_path / "ours.keras")
    assert again.optimizer.dialect == "keras3"
    same_history(h_direct, _fit1(again, x, y))
    same_weights(ours, again)


def test_kconvert_keras_archive_from_a_keras3_file_untrained_and_legacy(keras3, tmp_path):
    """Loaded from a Keras 3 archive and saved untouched, the archive's own compile_config and optimizer state go
    back out; a legacy (Keras 2 rules) optimizer has no Keras 3 form, so the archive is written uncompiled with a
    warning, and the weights still load in Keras 3."""
    x, y = _data(7)
    ref = _k3_model(keras3)
    _randomize(ref, seed=3)
    ref.compile(optimizer=keras3.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    ref.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    ref.save(tmp_path / "k3.keras")
    kconvert.load_model(tmp_path / "k3.keras").save(tmp_path / "back.keras")
    h_ref = _fit1(ref, x, y)
    back = keras3.saving.load_model(tmp_path / "back.keras")
    same_history(h_ref, _fit1(back, x, y))

    legacy = _kconvert_model()
    legacy.compile(kconvert.optimizers.SGD(0.05, momentum=0.9, decay=0.01, dialect="legacy"),
                   "categorical_crossentropy")
    legacy.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    with pytest.warns(UserWarning, match="legacy Keras 2 rules"):
        legacy.save(tmp_path / "legacy.keras")
    with zipfile.ZipFile(tmp_path / "legacy.keras") as z:
        assert json.loads(z.read("config.json"))["compile_config"] == {}
    plain = keras3.saving.load_model(tmp_path / "legacy.keras")
    assert not plain.compiled
    assert_close(plain.predict(x, verbose=0), legacy.predict(x))
