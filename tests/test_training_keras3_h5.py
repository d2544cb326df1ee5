"""Training state in Keras 3's legacy `.h5` (`save(..., keras_version="3")`) and in `save_weights` after training,
checked against real Keras 3 (and tf_keras for its `save_weights` layout) trained the same steps from the same
weights: the files hold what Keras writes, real Keras 3 compiles from ours with the same optimizer, loss and metrics
and continues as kconvert does, and both loaders resume from the other's file.

Keras 3 (3.15) cannot `fit` a model it loaded from a legacy `.h5` with an optimizer state, its own files included:
`load_model_from_hdf5` builds the optimizer for `model._trainable_variables` (the model's own variables, none), so
`set_weights` restores only the iteration count and learning rate and the next `apply` fails with "Unknown variable".
Continuing in Keras 3 therefore takes the optimizer Keras 3 deserialized from our `training_config`, builds it for
the model's trainable variables and gives it the state Keras 3's own reader returns for our file.
No shuffling and no random layers, so every run is deterministic."""

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


def _data(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((30, *shape)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 30)]
    return x, y


def _randomize(model, seed):
    """Weights in +-0.4: tanh/relu neither dead nor saturated, softmax not one-hot."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])


def _mlp(lib, L):
    """Functional (Keras 3 names its variables `hidden/kernel`, as kconvert does)."""
    i = lib.Input((11,), name="x")
    h = L.Dense(8, activation="tanh", name="hidden")(i)
    return lib.Model(i, L.Dense(5, activation="softmax", name="out")(h), name="mlp")


def _cnn(lib, L):
    """Sequential (Keras 3 builds its layers in the model's name scope: `cnn/conv/kernel`)."""
    return lib.Sequential([lib.Input((9, 7, 3)), L.Conv2D(4, 3, strides=2, activation="relu", name="conv"),
                           L.Flatten(name="flat"), L.Dense(5, activation="softmax", name="out")], name="cnn")


MODELS = {"mlp": (_mlp, (11,)), "cnn": (_cnn, (9, 7, 3))}
OPTIMIZERS = {  # kconvert's (tf_keras rules, written as the equal Keras 3 optimizer / Keras 3 rules), Keras 3's
    "sgd_momentum": (lambda: kconvert.optimizers.SGD(0.05, momentum=0.9),
                     lambda o: o.SGD(0.05, momentum=0.9, name="sgd")),  # named: Keras 3 numbers unnamed ones
    "adam": (lambda: kconvert.optimizers.Adam(0.01, dialect="keras3"), lambda o: o.Adam(0.01, name="adam")),
}


def _pair(keras3, model, opt, seed):
    """kconvert's and Keras 3's model with equal weights, compiled alike; and their data."""
    build, shape = MODELS[model]
    ours, ref = build(kconvert, KL), build(keras3, keras3.layers)
    _randomize(ours, seed)
    ref.set_weights(ours.get_weights())
    ours_opt, ref_opt = OPTIMIZERS[opt]
    ours.compile(ours_opt(), "categorical_crossentropy", ["accuracy"])
    ref.compile(optimizer=ref_opt(keras3.optimizers), loss="categorical_crossentropy", metrics=["accuracy"])
    return ours, ref, _data(seed, shape)


def _fit(model, x, y, epochs=1):
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0).history


def _strings(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _h5_tree(path, rename=lambda name: name):
    """{path: (dtype, value) for datasets, attrs for groups}, paths and name lists passed through `rename` (a group
    renamed onto one already there is left out)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[rename(name)] = (obj.dtype, np.asarray(obj[()]))
            else:
                out.setdefault(rename(name), {k: [rename(s) for s in _strings(v)] if k == "weight_names" else
                                              _strings(v) if isinstance(v, np.ndarray) else str(v)
                                              for k, v in obj.attrs.items() if k not in ("keras_version", "backend")})
        f.visititems(visit)
    return out


def _assert_same_tree(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for path, entry in theirs.items():
        if isinstance(entry, dict):
            assert ours[path] == entry, path
        else:
            assert ours[path][0] == entry[0], path
            assert_close(ours[path][1], entry[1], what=path)


# ---------------------------------------------------------------------------------------------- trained models


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_trained_keras3_h5_and_weights_roundtrip(model, opt, keras3, tmp_path):
    """kconvert and Keras 3 train the same steps; kconvert's Keras 3 `.h5` and `.weights.h5` equal Keras 3's (the
    training_config as JSON; datasets, names and values); Keras 3 compiles our file with the same optimizer, loss
    and metrics and continues exactly as kconvert does unsaved; kconvert resumes from both `.h5` files, and a
    Keras 3 archive it resumes and trains saves the weights and optimizer state Keras 3 has at that point."""
    ours, ref, (x, y) = _pair(keras3, model, opt, seed=len(model) + len(opt))
    same_history(_fit(ref, x, y, 2), _fit(ours, x, y, 2))
    ours.save(tmp_path / "ours.h5", keras_version="3")
    ref.save(tmp_path / "ref.keras")  # first: Keras 3's .h5 writer pops the optimizer out of its compile config
    ref.save(tmp_path / "ref.h5")
    ours.save_weights(tmp_path / "ours.weights.h5")
    ref.save_weights(tmp_path / "ref.weights.h5")

    with h5py.File(tmp_path / "ours.h5") as a, h5py.File(tmp_path / "ref.h5") as b:
        assert json.loads(a.attrs["training_config"]) == json.loads(b.attrs["training_config"])
    # the same tree: weight and optimizer slot names included (a Sequential's carry its name scope)
    _assert_same_tree(_h5_tree(tmp_path / "ours.h5"), _h5_tree(tmp_path / "ref.h5"))
    _assert_same_tree(_h5_tree(tmp_path / "ours.weights.h5"), _h5_tree(tmp_path / "ref.weights.h5"))

    h_direct, h_ref = _fit(ours, x, y), _fit(ref, x, y)  # both continue unsaved
    same_history(h_ref, h_direct)

    from keras.src.legacy.saving.legacy_h5_format import load_optimizer_weights_from_hdf5_group

    in_k3, k3_own = keras3.models.load_model(tmp_path / "ours.h5"), keras3.models.load_model(tmp_path / "ref.h5")
    for loaded in (in_k3, k3_own):  # Keras 3 treats our file as its own: counters restored, slots not (see above)
        assert type(loaded.optimizer) is type(ref.optimizer)
        assert loaded.optimizer.get_config() == pytest.approx(ref.optimizer.get_config())
        assert int(loaded.optimizer.iterations) == 6
        assert [v.path for v in loaded.optimizer.variables] == [v.path for v in k3_own.optimizer.variables]
    compile_args = {k: in_k3._compile_config.config[k] for k in ("loss", "metrics", "loss_weights",
                                                                 "weighted_metrics")}
    assert compile_args == {k: k3_own._compile_config.config[k] for k in compile_args}
    optimizer = in_k3.optimizer.__class__.from_config(in_k3.optimizer.get_config())
    in_k3.compile(optimizer=optimizer, **compile_args)
    optimizer.build(in_k3.trainable_variables)
    with h5py.File(tmp_path / "ours.h5") as f:
        optimizer.set_weights(load_optimizer_weights_from_hdf5_group(f))
    same_history(h_direct, _fit(in_k3, x, y))
    same_weights(in_k3, ours)

    for name, expected, after in (("ours.h5", h_direct, ours), ("ref.h5", h_ref, ref)):
        resumed = load_quietly(tmp_path / name)
        assert resumed.optimizer.dialect == "keras3" and resumed.optimizer.iterations == 6, name
        resumed.save(tmp_path / f"again_{name}", keras_version="3")  # untrained since loading: the file's state
        _assert_same_tree(_h5_tree(tmp_path / f"again_{name}"), _h5_tree(tmp_path / name))
        same_history(expected, _fit(resumed, x, y))
        same_weights(after, resumed)

    archive = load_quietly(tmp_path / "ref.keras")  # carries Keras 3's optimizer state as of its save
    _fit(archive, x, y)
    archive.save_weights(tmp_path / "archive.weights.h5")
    ref.save_weights(tmp_path / "ref_now.weights.h5")
    _assert_same_tree(_h5_tree(tmp_path / "archive.weights.h5"), _h5_tree(tmp_path / "ref_now.weights.h5"))


def test_trained_tf_keras_save_weights(tfk, tmp_path):
    """`save_weights("*.h5")` after training is tf_keras's layout: layer weights only, no optimizer state."""
    ours = _mlp(kconvert, KL)
    ref = _mlp(tfk, tfk.layers)
    _randomize(ours, 7)
    ref.set_weights(ours.get_weights())
    x, y = _data(7, (11,))
    ours.compile(kconvert.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy")
    ref.compile(tfk.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy")
    same_history(_fit(ref, x, y, 2), _fit(ours, x, y, 2))
    ours.save_weights(tmp_path / "ours.h5")
    ref.save_weights(tmp_path / "ref.h5")
    theirs = _h5_tree(tmp_path / "ref.h5")
    assert not any("optimizer" in path for path in theirs)
    _assert_same_tree(_h5_tree(tmp_path / "ours.h5"), theirs)


# ---------------------------------------------------------------------------------------------- before training


def test_compiled_untrained_and_uncompiled(keras3, tmp_path):
    """Compiled but not trained, Keras 3 saves the optimizer's iteration count and learning rate (`.h5`,
    `.weights.h5`, `.keras`); uncompiled, no training state at all. kconvert writes the same and reads its own
    untrained files without a warning, still unbuilt."""
    ours, ref, (x, y) = _pair(keras3, "mlp", "adam", seed=11)
    for who, save in (("ours", lambda p: ours.save(p, keras_version="3")), ("ref", ref.save)):
        save(tmp_path / f"{who}.h5")
    for who, model in (("ours", ours), ("ref", ref)):
        model.save_weights(tmp_path / f"{who}.weights.h5")
        model.save(tmp_path / f"{who}.keras")
    with h5py.File(tmp_path / "ours.h5") as a, h5py.File(tmp_path / "ref.h5") as b:
        assert json.loads(a.attrs["training_config"]) == json.loads(b.attrs["training_config"])
        assert _strings(a["optimizer_weights"].attrs["weight_names"]) == ["adam/iteration", "adam/learning_rate"]
    _assert_same_tree(_h5_tree(tmp_path / "ours.h5"), _h5_tree(tmp_path / "ref.h5"))
    _assert_same_tree(_h5_tree(tmp_path / "ours.weights.h5"), _h5_tree(tmp_path / "ref.weights.h5"))
    for who in ("ours", "ref"):
        with zipfile.ZipFile(tmp_path / f"{who}.keras") as z:
            (tmp_path / f"{who}_archive.weights.h5").write_bytes(z.read("model.weights.h5"))
    _assert_same_tree(_h5_tree(tmp_path / "ours_archive.weights.h5"), _h5_tree(tmp_path / "ref_archive.weights.h5"))
    for name in ("ours.h5", "ours.keras"):
        again = load_quietly(tmp_path / name)
        assert not again.optimizer._built and again.optimizer.iterations == 0, name
        assert float(again.optimizer.learning_rate) == pytest.approx(0.01), name

    plain, plain_ref = _mlp(kconvert, KL), _mlp(keras3, keras3.layers)
    plain.save_weights(tmp_path / "plain.weights.h5")
    plain_ref.save_weights(tmp_path / "plain_ref.weights.h5")
    assert sorted(_h5_tree(tmp_path / "plain.weights.h5")) == sorted(_h5_tree(tmp_path / "plain_ref.weights.h5"))
    plain.save(tmp_path / "plain.h5", keras_version="3")
    with h5py.File(tmp_path / "plain.h5") as f:
        assert "training_config" not in f.attrs and "optimizer_weights" not in f


def test_legacy_optimizer_has_no_keras3_form(tmp_path):
    """Keras 2 rules (`decay`) do not exist in Keras 3: the `.h5` and `.weights.h5` go without the training state,
    with a warning, and the weights still load."""
    x, y = _data(12, (11,))
    model = _mlp(kconvert, KL)
    _randomize(model, 12)
    model.compile(kconvert.optimizers.SGD(0.05, momentum=0.9, decay=0.01), "categorical_crossentropy")
    _fit(model, x, y)
    with pytest.warns(UserWarning, match="legacy Keras 2 rules.*Keras 3 .h5 file"):
        model.save(tmp_path / "legacy.h5", keras_version="3")
    with pytest.warns(UserWarning, match="legacy Keras 2 rules.*weights file"):
        model.save_weights(tmp_path / "legacy.weights.h5")
    with h5py.File(tmp_path / "legacy.h5") as f:
        assert "training_config" not in f.attrs and "optimizer_weights" not in f
    with h5py.File(tmp_path / "legacy.weights.h5") as f:
        assert "optimizer" not in f
    back = kconvert.load_model(tmp_path / "legacy.h5")
    assert getattr(back, "_compiled", None) is None
    assert_close(back.predict(x), model.predict(x))
