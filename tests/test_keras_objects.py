"""kconvert-only layers in files written for real Keras: native rewrites on the Keras 3 path (CuDNN RNNs) and
`kconvert.keras_objects(...)`, with which real Keras 3 and tf_keras load kconvert's files and predict the same."""

import os

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert.errors import ConfigError, KConvertError
from kconvert.layers.legacy_merge import Merge

LEGACY = os.path.join(os.path.dirname(__file__), "..", "fixtures", "keras_legacy")


@pytest.fixture(scope="module")
def k3():
    import keras

    return keras


def _keras3_roundtrip(k3, model, x, tmp_path, ref, name="m"):
    """Save `model` as .keras, load it in real Keras 3 (with keras_objects) and in kconvert; all predict `ref`."""
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    real = k3.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"), compile=False)
    assert_close(real.predict(x, verbose=0), ref, what="keras 3")
    back = kconvert.load_model(path)
    assert_close(back.predict(x), ref, what="kconvert reload")
    return real, back


def test_cudnn_rnns_become_native_keras3_lstm_gru(k3, tmp_path):
    """Keras 2.2.4 CuDNNLSTM (raw cuDNN kernel layout, bias 8u) and CuDNNGRU (bias 6u) -> native LSTM/GRU."""
    io = np.load(os.path.join(LEGACY, "k2_cudnn_io.npz"))
    model = kconvert.load_model(os.path.join(LEGACY, "k2_cudnn.h5"))
    x, ref = io["input_0"], io["output_0"]
    assert_close(model.predict(x), ref, what="kconvert")
    real, back = _keras3_roundtrip(k3, model, x, tmp_path, ref)
    assert [type(la).__name__ for la in real.layers] == ["LSTM", "GRU"]
    assert real.layers[1].reset_after is True
    assert [type(la).__name__ for la in back.layers] == ["LSTM", "GRU"]
    assert [type(la).__name__ for la in model.layers] == ["CuDNNLSTM", "CuDNNGRU"]  # the source is left as is


def _tfk_predict_saved(tfk, tmp_path, model, x):
    path = str(tmp_path / "src.h5")
    model.save(path)
    return path, model.predict(x, verbose=0)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_locally_connected_2d_keras3(tfk, k3, tmp_path, rng, data_format):
    shape = (7, 9, 5) if data_format == "channels_last" else (5, 7, 9)
    inp = tfk.Input(shape)
    h = tfk.layers.LocallyConnected2D(4, (3, 2), strides=(2, 1), data_format=data_format, activation="tanh",
                                      implementation=1)(inp)
    out = tfk.layers.Flatten()(h)
    model = tfk.Model(inp, out)
    model.set_weights([rng.normal(0, 0.15, w.shape).astype("float32") for w in model.get_weights()])
    x = rng.normal(size=(3, *shape)).astype("float32")
    path, ref = _tfk_predict_saved(tfk, tmp_path, model, x)
    ours = kconvert.load_model(path)
    assert_close(ours.predict(x), ref, what="kconvert")
    real, _ = _keras3_roundtrip(k3, ours, x, tmp_path, ref)
    assert type(real.layers[1]).__name__ == "LocallyConnected2D"
    assert 0.1 < float(np.std(ref)) and float(np.mean(np.abs(ref) > 0.99)) < 0.1  # neither dead nor saturated


def test_locally_connected_1d_keras3(tfk, k3, tmp_path, rng):
    model = tfk.Sequential([tfk.Input((11, 3)),
                            tfk.layers.LocallyConnected1D(6, 4, strides=3, activation="relu", implementation=1),
                            tfk.layers.LocallyConnected1D(2, 2, use_bias=False, implementation=1)])
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    x = rng.normal(size=(2, 11, 3)).astype("float32")
    path, ref = _tfk_predict_saved(tfk, tmp_path, model, x)
    _keras3_roundtrip(k3, kconvert.load_model(path), x, tmp_path, ref)


def test_locally_connected_same_padding_refused_for_keras3(tfk, tmp_path):
    """'same' padding exists only for implementations 2/3, which Keras 3's LocallyConnected class lacks."""
    model = tfk.Sequential([tfk.Input((8, 3)), tfk.layers.LocallyConnected1D(2, 3, padding="same", implementation=2)])
    path = str(tmp_path / "lc.h5")
    model.save(path)
    with pytest.raises(ConfigError, match="implementation=1"):
        kconvert.load_model(path).save(str(tmp_path / "lc.keras"))
    assert not os.path.exists(tmp_path / "lc.keras")


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN"])
def test_keras2_hard_sigmoid_in_recurrent_layers_keras3(tfk, k3, tmp_path, rng, layer):
    kwargs = {"activation": "hard_sigmoid"} if layer == "SimpleRNN" else {"recurrent_activation": "hard_sigmoid"}
    model = tfk.Sequential([tfk.Input((6, 4)), getattr(tfk.layers, layer)(5, return_sequences=True, **kwargs)])
    model.set_weights([rng.normal(0, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    path, ref = _tfk_predict_saved(tfk, tmp_path, model, x)
    ours = kconvert.load_model(path)
    real, _ = _keras3_roundtrip(k3, ours, x, tmp_path, ref)
    # Keras 3's own hard_sigmoid computes differently here: the custom function is what makes it exact
    cell = real.layers[0].cell
    fn = cell.recurrent_activation if layer != "SimpleRNN" else cell.activation
    assert fn.__name__ == "HardSigmoidKeras2"
    native = k3.models.clone_model(real, clone_function=lambda la: la.__class__.from_config(
        {**la.get_config(), **{k: "hard_sigmoid" for k in kwargs}}))
    native.set_weights(real.get_weights())
    assert float(np.max(np.abs(native.predict(x, verbose=0) - ref))) > 1e-3


def _merge_model(rng):
    a, b = kconvert.Input((6,)), kconvert.Input((6,))
    da = kconvert.layers.Dense(7, activation="tanh")(a)
    db = kconvert.layers.Dense(7, activation="tanh")(b)
    outs = [Merge(mode=m, name=f"merge_{m}")([da, db]) for m in ("sum", "mul", "ave", "max", "dot", "cos")]
    outs.append(Merge(mode="concat", concat_axis=1, name="merge_concat")([da, db, da]))
    model = kconvert.Model([a, b], outs)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    x = [rng.normal(size=(3, 6)).astype("float32") for _ in range(2)]
    return model, x


def test_merge_keras3_and_tf_keras(tfk, k3, tmp_path, rng):
    model, x = _merge_model(rng)
    ref = model.predict(x)
    path = str(tmp_path / "merge.keras")
    model.save(path)
    real = k3.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"), compile=False)
    for ours, theirs in zip(ref, real.predict(x, verbose=0)):
        assert_close(theirs, ours, what="keras 3")
    for ours, back in zip(ref, kconvert.load_model(path).predict(x)):
        assert_close(back, ours, what="kconvert reload")
    h5 = str(tmp_path / "merge.h5")
    model.save(h5)
    tf_real = tfk.models.load_model(h5, custom_objects=kconvert.keras_objects("tf_keras"), compile=False)
    for ours, theirs in zip(ref, tf_real.predict(x, verbose=0)):
        assert_close(theirs, ours, what="tf_keras")
    assert type(tf_real.get_layer("merge_cos")).__name__ == "Merge"


def test_keras3_entries_name_the_kconvert_objects(tmp_path, rng):
    import json
    import zipfile

    model, _ = _merge_model(rng)
    path = str(tmp_path / "merge.keras")
    model.save(path)
    with zipfile.ZipFile(path) as z:
        layers = json.loads(z.read("config.json"))["config"]["layers"]
    merges = [e for e in layers if e["class_name"] == "Merge"]
    assert len(merges) == 7
    assert all(e["registered_name"] == "kconvert>Merge" and e["module"] == "kconvert.keras_objects" for e in merges)


def test_keras_objects_unknown_target():
    with pytest.raises(KConvertError, match="unknown target"):
        kconvert.keras_objects("keras4")
    assert set(kconvert.keras_objects("keras3")) >= {"kconvert>LocallyConnected1D", "kconvert>LocallyConnected2D",
                                                     "kconvert>Merge", "kconvert>HardSigmoidKeras2"}


def test_keras2_hard_sigmoid_inside_bidirectional_upgrades(tfk, tmp_path, rng):
    """A Bidirectional LSTM with Keras 2's hard_sigmoid gate activation, written for Keras 3."""
    import keras

    inp = tfk.Input((6, 4))
    out = tfk.layers.Bidirectional(tfk.layers.LSTM(3, recurrent_activation="hard_sigmoid"), name="bi")(inp)
    model = tfk.Model(inp, out)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "bi.h5")
    x = (3 * rng.normal(size=(2, 6, 4))).astype("float32")
    ours = kconvert.load_model(tmp_path / "bi.h5")
    ours.save(tmp_path / "bi.keras")
    back = keras.saving.load_model(tmp_path / "bi.keras", custom_objects=kconvert.keras_objects("keras3"))
    assert_close(np.asarray(back.predict(x, verbose=0)), model.predict(x, verbose=0))
    assert_close(kconvert.load_model(tmp_path / "bi.keras").predict(x), model.predict(x, verbose=0))


@pytest.mark.parametrize("implementation", [2, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_locally_connected_implementations_2_3_upgrade_via_implementation_1(tfk, tmp_path, rng, implementation,
                                                                             data_format):
    import keras

    shape = (7, 6, 3) if data_format == "channels_last" else (3, 7, 6)
    inp = tfk.Input(shape)
    out = tfk.layers.LocallyConnected2D(4, (3, 2), strides=(2, 1), data_format=data_format,
                                        implementation=implementation, name="lc")(inp)
    model = tfk.Model(inp, out)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") for w in model.get_weights()])
    model.save(tmp_path / "lc.h5")
    x = rng.normal(size=(2, *shape)).astype("float32")
    ours = kconvert.load_model(tmp_path / "lc.h5")
    ours.save(tmp_path / "lc.keras")
    back = keras.saving.load_model(tmp_path / "lc.keras", custom_objects=kconvert.keras_objects("keras3"))
    assert_close(np.asarray(back.predict(x, verbose=0)), model.predict(x, verbose=0))
    assert ours.get_layer("lc").implementation == implementation  # the model itself is unchanged
