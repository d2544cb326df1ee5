"""The model API against real tf_keras: functional graphs, Sequential, configs, HDF5 both ways, by-name loading."""

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert import errors
from kconvert import layers as L


def _randomize(model, rng):
    model.set_weights([rng.normal(0, 1 / np.sqrt(w.shape[0] if w.ndim else 1), w.shape).astype("float32")
                       for w in model.get_weights()])


def _multi_io_model(tfk):
    """Two inputs, two outputs, a shared Dense called twice, a nested Sequential and a nested Functional."""
    kl = tfk.layers
    sub = tfk.Sequential([kl.Dense(6, activation="tanh", input_shape=(5,)), kl.Dense(4)], name="sub")
    fi = tfk.Input((5,))
    fsub = tfk.Model(fi, kl.Dense(4, activation="relu", name="fd")(fi), name="fsub")
    a = tfk.Input((7,), name="a")
    b = tfk.Input((7,), name="b")
    shared = kl.Dense(5, activation="sigmoid", name="shared")
    xa, xb = shared(a), shared(b)
    merged = kl.Add(name="add")([sub(xa), fsub(xb)])
    out1 = kl.Dense(3, activation="softmax", name="head")(merged)
    return tfk.Model([a, b], [out1, xb], name="multi")


@pytest.fixture
def multi(tfk, rng):
    m = _multi_io_model(tfk)
    _randomize(m, rng)
    x = [rng.normal(size=(4, 7)).astype("float32"), rng.normal(size=(4, 7)).astype("float32")]
    return m, x


def test_h5_from_tf_keras_predicts_the_same(multi, tmp_path):
    tf_model, x = multi
    path = tmp_path / "multi.h5"
    tf_model.save(path)
    ours = kconvert.load_model(path)
    ref = tf_model.predict(x, verbose=0)
    got = ours.predict(x)
    assert len(got) == 2
    for g, r in zip(got, ref):
        assert_close(g, r)
    # intermediate outputs: every top-level layer's output on this input
    assert [la.name for la in ours.layers] == [la.name for la in tf_model.layers]
    assert [w.name for w in ours.weights] == [w.name for w in tf_model.weights]
    # dict inputs by name
    for g, r in zip(ours.predict({"a": x[0], "b": x[1]}), ref):
        assert_close(g, r)
    # batch_size smaller than the data exercises batching
    for g, r in zip(ours.predict(x, batch_size=3), ref):
        assert_close(g, r)


def test_json_round_trip_is_tf_keras_config(multi):
    tf_model, _ = multi
    text = tf_model.to_json()
    ours = kconvert.models.model_from_json(text)
    assert json.loads(ours.to_json())["config"] == json.loads(text)["config"]
    # and a second round trip is stable
    again = kconvert.models.model_from_json(ours.to_json())
    assert json.loads(again.to_json()) == json.loads(ours.to_json())


def test_what_we_save_loads_in_tf_keras(multi, tfk, tmp_path):
    tf_model, x = multi
    src = tmp_path / "src.h5"
    tf_model.save(src)
    ours = kconvert.load_model(src)
    out = tmp_path / "ours.h5"
    ours.save(out)
    back = tfk.models.load_model(out)
    for g, r in zip(back.predict(x, verbose=0), tf_model.predict(x, verbose=0)):
        assert_close(g, r)
    assert [w.name for w in back.weights] == [w.name for w in tf_model.weights]
    # tf.keras's own to_json of a nested model differs before and after a save; compare like with like
    reference = tfk.models.load_model(src)
    assert json.loads(back.to_json())["config"] == json.loads(reference.to_json())["config"]
    # the HDF5 model_config is tf.keras's legacy form (no module/build_config), byte-equal as JSON
    import h5py

    with h5py.File(src) as a, h5py.File(out) as b:
        assert json.loads(b.attrs["model_config"]) == json.loads(a.attrs["model_config"])
        assert list(b["model_weights"].attrs["layer_names"]) == list(a["model_weights"].attrs["layer_names"])


def test_model_built_in_kconvert_loads_in_tf_keras(tfk, tmp_path, rng):
    inp = kconvert.Input((6,), name="x")
    h = L.Dense(9, activation="relu")(inp)
    out = L.Dense(2, activation="softmax")(h)
    model = kconvert.Model(inp, out)
    _randomize(model, rng)
    x = rng.normal(size=(5, 6)).astype("float32")
    model.save(tmp_path / "k.h5")
    back = tfk.models.load_model(tmp_path / "k.h5")
    assert_close(back.predict(x, verbose=0), model.predict(x))
    model.save_weights(tmp_path / "w.h5")
    twin = tfk.models.model_from_json(model.to_json())
    twin.load_weights(tmp_path / "w.h5")
    assert_close(twin.predict(x, verbose=0), model.predict(x))
    # one input given as a list of one array, as Keras accepts it; a nested Python list stays data
    assert_close(model.predict([x]), back.predict([x], verbose=0))
    assert_close(model.predict(x.tolist(), runtime="numpy"), back.predict(np.array(x.tolist()), verbose=0))


def test_summary_matches_tf_keras(multi, tmp_path):
    tf_model, _ = multi
    tf_model.save(tmp_path / "m.h5")
    ours = kconvert.load_model(tmp_path / "m.h5")
    lines_tf, lines_ours = [], []
    tf_model.summary(print_fn=lines_tf.append)
    ours.summary(print_fn=lines_ours.append)
    assert [s.rstrip() for s in lines_ours] == [s.rstrip() for s in lines_tf]
    assert ours.count_params() == tf_model.count_params()


def test_sequential_summary_and_counts(tfk, tmp_path, rng):
    tf_model = tfk.Sequential([tfk.layers.Dense(8, input_shape=(3,)), tfk.layers.Dense(2)])
    tf_model.save(tmp_path / "s.h5")
    ours = kconvert.load_model(tmp_path / "s.h5")
    buf = io.StringIO()
    with redirect_stdout(buf):
        ours.summary()
    lines_tf = []
    tf_model.summary(print_fn=lines_tf.append)
    assert [s.rstrip() for s in buf.getvalue().splitlines()] == [s.rstrip() for s in lines_tf]


def test_sequential_add_and_deferred_build(rng):
    model = kconvert.Sequential()
    model.add(L.Dense(4, activation="relu"))
    model.add(L.Dense(2))
    x = rng.normal(size=(3, 5)).astype("float32")
    y = model.predict(x)  # builds on first use, as Keras does
    assert y.shape == (3, 2)
    k1, b1, k2, b2 = model.get_weights()
    assert_close(y, np.maximum(x @ k1 + b1, 0) @ k2 + b2)


def test_model_called_on_new_inputs_and_node_accessors(rng):
    inp = kconvert.Input((3,))
    inner = kconvert.Model(inp, L.Dense(2, name="inner_dense")(inp), name="inner")
    a, b = kconvert.Input((3,), name="a"), kconvert.Input((3,), name="b")
    ya, yb = inner(a), inner(b)
    outer = kconvert.Model([a, b], [ya, yb])
    xa, xb = rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    ra, rb = outer.predict([xa, xb])
    k, bias = inner.get_weights()
    assert_close(ra, xa @ k + bias)
    assert_close(rb, xb @ k + bias)
    assert inner.get_output_at(1) is ya and inner.get_output_at(2) is yb
    assert inner.get_input_shape_at(1) == (None, 3)
    with pytest.raises(errors.GraphError):
        _ = inner.output  # several inbound nodes: ill-defined, as in Keras
    # a model called eagerly on arrays
    assert_close(inner(xa), xa @ k + bias)


def test_load_weights_by_name_fine_tuning(tfk, tmp_path, rng):
    base = tfk.Sequential([tfk.layers.Dense(6, activation="relu", input_shape=(4,), name="feat"),
                           tfk.layers.Dense(3, name="old_head")])
    _randomize(base, rng)
    base.save_weights(tmp_path / "base.h5")
    inp = kconvert.Input((4,))
    feat = L.Dense(6, activation="relu", name="feat")(inp)
    head = L.Dense(5, name="new_head")(feat)
    model = kconvert.Model(inp, head)
    head_before = model.get_layer("new_head").get_weights()
    model.load_weights(tmp_path / "base.h5", by_name=True)
    for ours, ref in zip(model.get_layer("feat").get_weights(), base.get_layer("feat").get_weights()):
        np.testing.assert_array_equal(ours, ref)
    for ours, before in zip(model.get_layer("new_head").get_weights(), head_before):
        np.testing.assert_array_equal(ours, before)
    # topological loading refuses a model whose layers do not fit
    with pytest.raises(errors.WeightsError):
        model.load_weights(tmp_path / "base.h5")


def test_by_name_shape_mismatch_raises_or_skips(tfk, tmp_path, rng):
    src = tfk.Sequential([tfk.layers.Dense(6, input_shape=(4,), name="d")])
    src.save_weights(tmp_path / "w.h5")
    inp = kconvert.Input((4,))
    model = kconvert.Model(inp, L.Dense(7, name="d")(inp))
    with pytest.raises(errors.WeightsError, match="'d'"):
        model.load_weights(tmp_path / "w.h5", by_name=True)
    before = model.get_weights()
    with pytest.warns(UserWarning):
        model.load_weights(tmp_path / "w.h5", by_name=True, skip_mismatch=True)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(errors.ConfigError):
        model.load_weights(tmp_path / "w.h5", skip_mismatch=True)


def test_unknown_layer_names_file_and_layer(multi, tmp_path):
    tf_model, _ = multi
    cfg = json.loads(tf_model.to_json())
    cfg["config"]["layers"][2]["class_name"] = "FancyLayer"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(errors.UnknownLayerError) as e:
        kconvert.load_model(path)
    assert "FancyLayer" in str(e.value) and "bad.json" in str(e.value) and "shared" in str(e.value)
    assert "custom_objects" in str(e.value)


def test_truncated_h5_is_a_kconvert_error(multi, tmp_path):
    tf_model, _ = multi
    path = tmp_path / "m.h5"
    tf_model.save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.KConvertError) as e:
        kconvert.load_model(cut)
    assert "cut.h5" in str(e.value)


def test_misfitting_weights_name_the_layer(tfk, tmp_path):
    src = tfk.Sequential([tfk.layers.Dense(6, input_shape=(4,), name="d")])
    src.save_weights(tmp_path / "w.h5")
    inp = kconvert.Input((5,))
    model = kconvert.Model(inp, L.Dense(6, name="d")(inp))
    with pytest.raises(errors.WeightsError) as e:
        model.load_weights(tmp_path / "w.h5")
    assert "w.h5" in str(e.value) and "'d'" in str(e.value)


def test_malformed_json_and_savedmodel(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('{"class_name": "Functional", "config": {')
    with pytest.raises(errors.FormatError, match="m.json"):
        kconvert.load_model(bad)
    sm = tmp_path / "saved"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(errors.UnsupportedFormatError, match="saved"):
        kconvert.load_model(sm)


def test_duplicate_layer_names_are_rejected():
    inp = kconvert.Input((3,))
    x = L.Dense(2, name="same")(inp)
    y = L.Dense(2, name="same")(x)
    with pytest.raises(errors.GraphError, match="same"):
        kconvert.Model(inp, y)


def test_disconnected_graph_is_rejected():
    a, b = kconvert.Input((3,)), kconvert.Input((3,))
    y = L.Dense(2)(b)
    with pytest.raises(errors.GraphError):
        kconvert.Model(a, y)


@pytest.mark.parametrize("name", ["l1", "l2", "l1_l2"])
def test_regularizer_names_serialize_as_tf_keras(tfk, name):
    ours = L.Dense(3, kernel_regularizer=name, name="d").get_config()["kernel_regularizer"]
    theirs = tfk.layers.Dense(3, kernel_regularizer=name).get_config()["kernel_regularizer"]
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs))


@pytest.mark.parametrize("name", ["max_norm", "non_neg", "unit_norm", "min_max_norm", "radial_constraint"])
def test_constraint_names_serialize_as_tf_keras(tfk, name):
    ours = L.Dense(3, kernel_constraint=name, name="d").get_config()["kernel_constraint"]
    theirs = tfk.layers.Dense(3, kernel_constraint=name).get_config()["kernel_constraint"]
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs))


@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal",
                                  "lecun_uniform", "zeros", "ones", "orthogonal", "random_normal",
                                  "random_uniform", "truncated_normal", "variance_scaling", "identity"])
def test_initializer_names_serialize_as_tf_keras(tfk, name):
    ours = L.Dense(3, kernel_initializer=name, name="d").get_config()["kernel_initializer"]
    theirs = tfk.layers.Dense(3, kernel_initializer=name).get_config()["kernel_initializer"]
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs))


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("class_name: Sequential\nconfig: [unclosed\n")
    with pytest.raises(errors.FormatError, match="m.yaml"):
        kconvert.load_model(bad)
    evil = "!!python/object/apply:os.system ['echo hacked']\n"
    with pytest.raises(errors.FormatError):
        kconvert.models.model_from_yaml(evil)


def test_load_weights_from_a_tf_checkpoint_is_a_clear_error(tfk, tmp_path):
    src = tfk.Sequential([tfk.layers.Dense(2, input_shape=(3,))])
    src.save_weights(str(tmp_path / "ckpt"))  # no .h5 suffix: TensorFlow checkpoint format
    inp = kconvert.Input((3,))
    model = kconvert.Model(inp, L.Dense(2)(inp))
    with pytest.raises(errors.UnsupportedFormatError, match="checkpoint"):
        model.load_weights(tmp_path / "ckpt")


def test_model_reset_states_of_a_stateful_rnn(tfk, tmp_path, rng):
    inp = tfk.Input(batch_shape=(2, 5, 3))
    out = tfk.layers.LSTM(4, stateful=True, name="lstm")(inp)
    tf_model = tfk.Model(inp, out)
    tf_model.save(tmp_path / "s.h5")
    ours = kconvert.load_model(tmp_path / "s.h5")
    x1, x2 = rng.normal(size=(2, 5, 3)).astype("float32"), rng.normal(size=(2, 5, 3)).astype("float32")
    first = ours.predict(x1, batch_size=2)
    assert_close(first, tf_model.predict(x1, batch_size=2, verbose=0))
    assert_close(ours.predict(x2, batch_size=2), tf_model.predict(x2, batch_size=2, verbose=0))  # carries state
    ours.reset_states()
    assert_close(ours.predict(x1, batch_size=2), first)
