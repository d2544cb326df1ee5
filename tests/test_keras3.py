"""Keras 3 files in and out: every committed Keras 3 fixture in every form against Keras 3's saved outputs; what
kconvert writes (.keras, .weights.h5, Keras 3 legacy .h5) loaded by real Keras 3; and the upgrade path, every
tf_keras fixture saved as a .keras that Keras 3 loads natively and predicts identically."""

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert.converters import keras3_config, keras3_weights, keras_config
from kconvert.errors import ConfigError, FormatError, UnsupportedFormatError, WeightsError
from kconvert.formats import keras_zip
from kconvert.formats.keras3_weights import StateGroup, read_keras3_weights, write_keras3_weights
from kconvert.formats.keras_zip import read_keras_zip, write_keras_zip

ROOT = Path(__file__).resolve().parent.parent / "fixtures"
K3 = ROOT / "keras3"
K2 = ROOT / "keras2"
INDEX3 = json.loads((K3 / "index.json").read_text())
MODELS3 = {m["name"]: m for m in INDEX3["models"]}
INDEX2 = json.loads((K2 / "index.json").read_text())
MODELS2 = {m["name"]: m for m in INDEX2["models"]}
FORMS3 = [(n, f) for n in sorted(MODELS3) for f in ("keras", "h5") if f in MODELS3[n]["files"]]
# Outputs real Keras 3 (TensorFlow backend, CPU) computes wrongly: its channels_first SeparableConv2D transposes
# to channels_last on CPU and gets odd widths wrong (see test_keras3_separable_conv2d_channels_first_cpu_bug).
KERAS3_TF_CPU_BUGS = {("channels_first_2d", 1)}


@pytest.fixture(scope="module")
def k3():
    """Real Keras 3 (TensorFlow backend), the reference for files Keras 3 reads and writes."""
    import keras

    return keras


def _strip_ids(x):
    if isinstance(x, dict):
        return {k: _strip_ids(v) for k, v in x.items() if k != "shared_object_id"}
    if isinstance(x, list):
        return [_strip_ids(v) for v in x]
    return x


def _io3(name):
    entry = MODELS3[name]
    data = np.load(K3 / entry["files"]["io_npz"])
    inputs = {i["name"]: data[i["key"]] for i in entry["inputs"]}
    outputs = [data[o["key"]] for o in entry["outputs"]]
    layers = {k.split(":", 1)[1]: data[k] for k in entry["layer_outputs"]}
    return inputs, outputs, layers


def _feed(inputs: dict):
    return inputs if len(inputs) > 1 else next(iter(inputs.values()))


def _ours(model, name):
    """kconvert's predictions for a Keras 3 fixture, in the index's output order."""
    entry = MODELS3[name]
    inputs, _, _ = _io3(name)
    got = model.predict(_feed(inputs), batch_size=2)  # batches that do not divide the data
    got = got if isinstance(got, list) else [got]
    if isinstance(model._nested_outputs, dict):
        got = dict(zip(model._nested_outputs, got))
        return [got[o["name"]] for o in entry["outputs"]]
    return got


def _keras3_predict(k3model, inputs: list):
    out = k3model(inputs if len(inputs) > 1 else inputs[0], training=False)
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def _keras3_outputs(k3model, name):
    entry = MODELS3[name]
    inputs, _, _ = _io3(name)
    if "dict_inputs" in entry["features"]:
        out = k3model({k: v for k, v in inputs.items()}, training=False)
        out = {k: np.asarray(v) for k, v in out.items()}
    else:
        out = _keras3_predict(k3model, [inputs[i["name"]] for i in entry["inputs"]])
    return [out[o["name"]] for o in entry["outputs"]] if isinstance(out, dict) else out


def _weights_file(name, tmp_path) -> Path:
    """The archive's `model.weights.h5` (the `save_weights` layout) as a `.weights.h5` file."""
    path = tmp_path / f"{name}.weights.h5"
    with zipfile.ZipFile(K3 / MODELS3[name]["files"]["keras"]) as z:
        path.write_bytes(z.read("model.weights.h5"))
    return path


def _h5_tree(source):
    """{dataset or group path: (values or None, attrs)} of an HDF5 file."""
    out = {}
    with h5py.File(source, "r") as f:
        def visit(name, obj):
            attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in obj.attrs.items()}
            out[name] = (np.asarray(obj[()]) if isinstance(obj, h5py.Dataset) else None, attrs)
        f.visititems(visit)
    return out


def _assert_same_tree(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for path, (value, attrs) in theirs.items():
        assert ours[path][1] == attrs, path
        if value is not None:
            np.testing.assert_array_equal(ours[path][0], value, err_msg=path)


# ------------------------------------------------------------------------------------------ reading Keras 3


def test_fixture_set_covers_keras3_forms():
    classes = set(INDEX3["layer_classes_covered"])
    assert {"Sequential", "Functional", "Dense", "Conv2D", "Conv3DTranspose", "SeparableConv1D", "BatchNormalization",
            "LayerNormalization", "Embedding", "Masking", "Dot", "UpSampling2D", "PReLU", "LSTM", "GRU", "SimpleRNN",
            "Bidirectional", "TimeDistributed"} <= classes
    features = set().union(*(m["features"] for m in INDEX3["models"]))
    assert {"dict_inputs", "dict_outputs", "shared_layer", "nested_model", "node_kwargs", "multi_input",
            "multi_output", "sequential"} <= features
    assert sum(p.stat().st_size for p in K3.iterdir()) < 1.5e6


@pytest.mark.parametrize("name,form", FORMS3)
def test_keras3_file_predicts_keras3_outputs(name, form):
    model = kconvert.load_model(K3 / MODELS3[name]["files"][form])
    _, outputs, layers = _io3(name)
    for i, (got, ref) in enumerate(zip(_ours(model, name), outputs)):
        assert_close(got, ref, what=f"{name}.{form} output {i}")
    graph_nodes = {id(n) for n in model._graph.nodes}
    probes = [next(n for n in model.get_layer(ln)._inbound_nodes if id(n) in graph_nodes).outputs[0] for ln in layers]
    probe = kconvert.Model(model.inputs, probes)
    inputs, _, _ = _io3(name)
    feeds = [inputs[v.node.layer.name] for v in model.inputs]
    got = probe.predict(feeds if len(feeds) > 1 else feeds[0])
    for ln, g in zip(layers, got if isinstance(got, list) else [got]):
        assert_close(g, layers[ln], what=f"{name}.{form} layer {ln}")


@pytest.mark.parametrize("name", sorted(MODELS3))
def test_keras3_json_plus_weights(name, tmp_path):
    model = kconvert.models.model_from_json((K3 / MODELS3[name]["files"]["json"]).read_text())
    model.load_weights(_weights_file(name, tmp_path))
    _, outputs, _ = _io3(name)
    for i, (got, ref) in enumerate(zip(_ours(model, name), outputs)):
        assert_close(got, ref, what=f"{name} output {i}")


@pytest.mark.parametrize("name", sorted(MODELS3))
def test_json_round_trip_equals_keras3(name):
    text = (K3 / MODELS3[name]["files"]["json"]).read_text()
    model = kconvert.models.model_from_json(text)
    assert _strip_ids(json.loads(model.to_json(keras_version="3"))) == _strip_ids(json.loads(text))
    archive = read_keras_zip(K3 / MODELS3[name]["files"]["keras"])
    loaded = kconvert.load_model(K3 / MODELS3[name]["files"]["keras"])
    assert _strip_ids(keras3_config.model_to_keras3_config(loaded)) == _strip_ids(archive.config)
    if "h5" in MODELS3[name]["files"]:
        with h5py.File(K3 / MODELS3[name]["files"]["h5"]) as f:
            written = json.loads(f.attrs["model_config"])
        assert keras3_config.model_to_keras3_config(loaded, legacy=True) == _strip_ids(written)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if getattr(layer, "_is_graph_network", False):
            yield from _all_layers(layer)
        for inner, _ in getattr(layer, "_keras3_inner", []):
            yield inner


def test_rules_reproduce_keras3_configs():
    """Without what the file said, the rule tables alone give Keras 3's config: the only differences left are
    a normalized axis and float32-rounded factors (both compute the same)."""
    for name in MODELS3:
        model = kconvert.load_model(K3 / MODELS3[name]["files"]["keras"])
        for layer in _all_layers(model):
            for key, (ours, theirs) in keras3_config.keras3_overrides(layer).items():
                if key == "axis":
                    continue
                assert isinstance(ours, float) and ours == pytest.approx(theirs, rel=1e-7), (name, layer.name, key)


def test_layer_order_computed_like_keras3():
    """Keras 3 orders a model's layers (config order, weight paths) walking dict outputs by sorted key."""
    for name in MODELS3:
        model = kconvert.load_model(K3 / MODELS3[name]["files"]["keras"])
        if type(model).__name__ == "Sequential":
            continue
        stash = model._keras3_graph
        expected = [n for n in stash["order"] if n not in {e["name"] for _, e in stash["ops"]}]
        model._keras3_graph = None
        if not stash["ops"]:  # mask operations take part in Keras 3's depth ordering
            assert [la.name for la in keras3_weights.keras3_layers(model)] == expected, name


@pytest.mark.parametrize("name", ["k3_nested", "k3_conv1d3d"])
def test_keras3_legacy_h5_lists_layers_in_keras3_order(name):
    with h5py.File(K3 / MODELS3[name]["files"]["h5"]) as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["model_weights"].attrs["layer_names"]]
    model = kconvert.load_model(K3 / MODELS3[name]["files"]["h5"])
    assert [la.name for la in keras3_weights.keras3_layers(model)] == names


# ------------------------------------------------------------------------------------------ writing for Keras 3


# Fixtures whose .weights.h5 and Keras-3 .h5 are also loaded by real Keras 3 (the others are checked byte-layout
# against Keras 3's own files, which is what Keras 3 reads); mask-only operations make the last two special.
LOADED_IN_KERAS3 = {"k3_nested", "k3_embedding_mask", "k3_recurrent"}


@pytest.mark.parametrize("name", sorted(MODELS3))
def test_what_we_write_loads_in_keras3(name, k3, tmp_path):
    entry = MODELS3[name]
    model = kconvert.load_model(K3 / entry["files"]["keras"])
    model.save(tmp_path / "ours.keras")
    model.save_weights(tmp_path / "ours.weights.h5")
    model.save(tmp_path / "ours.h5", keras_version="3")
    _, outputs, _ = _io3(name)

    k3.backend.clear_session()
    back = k3.saving.load_model(tmp_path / "ours.keras", compile=False)
    for i, (got, ref) in enumerate(zip(_keras3_outputs(back, name), outputs)):
        assert_close(got, ref, what=f"Keras 3 on our {name}.keras output {i}")
    original = json.loads((K3 / entry["files"]["json"]).read_text())
    reloaded = json.loads(back.to_json())  # compile=False: Keras 3 writes no compile_config then
    assert _strip_ids({**reloaded, "compile_config": None}) == _strip_ids({**original, "compile_config": None})
    with zipfile.ZipFile(tmp_path / "ours.keras") as ours, zipfile.ZipFile(K3 / entry["files"]["keras"]) as theirs:
        assert [i.filename for i in ours.infolist()] == [i.filename for i in theirs.infolist()]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in ours.infolist())
        assert _strip_ids(json.loads(ours.read("config.json"))) == _strip_ids(json.loads(theirs.read("config.json")))
        # equal weight paths, `name` attributes and values, optimizer variables included
        _assert_same_tree(_h5_tree(io.BytesIO(ours.read("model.weights.h5"))),
                          _h5_tree(io.BytesIO(theirs.read("model.weights.h5"))))
    _assert_same_tree(_h5_tree(tmp_path / "ours.weights.h5"), _h5_tree(_weights_file(name, tmp_path)))

    if "h5" in entry["files"]:
        with h5py.File(tmp_path / "ours.h5") as a, h5py.File(K3 / entry["files"]["h5"]) as b:
            assert json.loads(a.attrs["model_config"]) == _strip_ids(json.loads(b.attrs["model_config"]))
            assert a.attrs["keras_version"] == b.attrs["keras_version"]
            wa, wb = a["model_weights"], b["model_weights"]
            assert list(wa.attrs["layer_names"]) == list(wb.attrs["layer_names"])
            for ln in wb.attrs["layer_names"]:  # Keras 3's variable paths: Sequential models' name scopes
                names_a, names_b = wa[ln].attrs["weight_names"], wb[ln].attrs["weight_names"]
                assert list(names_a) == list(names_b), ln
                for na, nb in zip(names_a, names_b):
                    np.testing.assert_array_equal(wa[ln][na][()], wb[ln][nb][()])
    if name not in LOADED_IN_KERAS3:
        return
    twin = k3.models.model_from_json(json.dumps(original))
    twin.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(twin.weights, back.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # our legacy .h5 loads even where Keras 3's own does not (Keras cannot rebuild its mask operations from it)
    legacy = k3.saving.load_model(tmp_path / "ours.h5", compile=False)
    for i, (got, ref) in enumerate(zip(_keras3_outputs(legacy, name), outputs)):
        assert_close(got, ref, what=f"Keras 3 on our Keras-3 {name}.h5 output {i}")


def _keras2_io(name):
    entry = MODELS2[name]
    data = np.load(K2 / entry["files"]["io_npz"])
    return [data[i["key"]] for i in entry["inputs"]], [data[o["key"]] for o in entry["outputs"]]


@pytest.mark.parametrize("name", sorted(MODELS2))
def test_keras2_fixture_upgrades_to_keras3(name, k3, tmp_path):
    """Any model kconvert reads saves as a .keras that Keras 3 loads natively and predicts identically; Keras 3's
    own config of it is what kconvert wrote."""
    model = kconvert.load_model(K2 / MODELS2[name]["files"]["h5"])
    model.save(tmp_path / "up.keras")
    k3.backend.clear_session()
    back = k3.saving.load_model(tmp_path / "up.keras", compile=False)
    inputs, outputs = _keras2_io(name)
    got = _keras3_predict(back, inputs)
    assert len(got) == len(outputs)
    for i, (g, r) in enumerate(zip(got, outputs)):
        if (name, i) in KERAS3_TF_CPU_BUGS:
            assert not np.allclose(g, r, atol=1e-3), "Keras 3 fixed its bug: drop it from KERAS3_TF_CPU_BUGS"
            continue
        assert_close(g, r, what=f"Keras 3 on upgraded {name} output {i}")
    assert _strip_ids(json.loads(back.to_json())) == json.loads(model.to_json(keras_version="3"))
    again = kconvert.load_model(tmp_path / "up.keras")  # and kconvert reads what it wrote
    got = again.predict(inputs if len(inputs) > 1 else inputs[0])
    for i, (g, r) in enumerate(zip(got if isinstance(got, list) else [got], outputs, strict=True)):
        assert_close(g, r, what=f"kconvert on upgraded {name} output {i}")


def test_keras3_separable_conv2d_channels_first_cpu_bug(k3, tfk):
    """The one upgrade output Keras 3 gets wrong is Keras 3's own bug: on a CPU its channels_first SeparableConv2D
    disagrees with its own channels_last result for odd widths (tf_keras and kconvert agree with the latter)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 7, 5)).astype("float32")
    first = k3.layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", data_format="channels_first")
    last = k3.layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", data_format="channels_last")
    ours = kconvert.layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", data_format="channels_first")
    first(x), last(x.transpose(0, 2, 3, 1))
    weights = [rng.standard_normal(tuple(v.shape)).astype("float32") for v in first.weights]
    first.set_weights(weights), last.set_weights(weights)
    ours._maybe_build((None, 4, 7, 5))
    ours.set_weights(weights)
    reference = np.asarray(last(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert_close(ours(x), reference)
    assert not np.allclose(np.asarray(first(x)), reference, atol=1e-3)


def test_keras2_recurrent_models_upgrade(k3, tfk, tmp_path):
    """tf_keras LSTM/GRU/SimpleRNN/Bidirectional/TimeDistributed configs (time_major, implementation, ...) become
    configs Keras 3 accepts, computing what tf_keras computed."""
    L = tfk.layers
    tfk.backend.clear_session()
    tok = tfk.Input((7,), dtype="int32", name="tok")
    seq = tfk.Input((7, 3), name="seq")
    a = L.LSTM(4, return_sequences=True, name="lstm")(L.Embedding(20, 5, mask_zero=True, name="emb")(tok))
    a = L.GRU(3, name="gru")(a)
    b = L.SimpleRNN(3, return_sequences=True, go_backwards=True, name="rnn")(seq)
    b = L.Bidirectional(L.GRU(2, return_sequences=True, reset_after=False), name="bi")(b)
    b = L.TimeDistributed(L.Dense(2), name="td")(b)
    ref = tfk.Model([tok, seq], [a, b], name="rnn_up")
    rng = np.random.default_rng(5)
    ref.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in ref.get_weights()])
    ref.save(tmp_path / "rnn.h5")
    x_tok = rng.integers(1, 20, (3, 7)).astype("int32")
    x_tok[0, 4:] = 0
    x_seq = rng.standard_normal((3, 7, 3)).astype("float32")
    expected = [np.asarray(y) for y in ref([x_tok, x_seq], training=False)]
    kconvert.load_model(tmp_path / "rnn.h5").save(tmp_path / "rnn.keras")
    k3.backend.clear_session()
    back = k3.saving.load_model(tmp_path / "rnn.keras", compile=False)
    for got, want in zip(_keras3_predict(back, [x_tok, x_seq]), expected, strict=True):
        assert_close(got, want)


def test_upgrade_rewrites_layers_keras3_lacks(k3, tmp_path):
    """ThresholdedReLU becomes ReLU(threshold); Keras 2's hard_sigmoid becomes Rescaling(0.2, 0.5) + ReLU(1)."""
    model = kconvert.load_model(K2 / "seq_add_advanced_act.h5")
    config = json.loads(model.to_json(keras_version="3"))["config"]["layers"]
    relus = [e["config"] for e in config if e["class_name"] == "ReLU" and e["config"]["threshold"] == pytest.approx(0.3)]
    assert relus and relus[0]["name"] == "thresholded_re_lu"
    assert "ThresholdedReLU" not in {e["class_name"] for e in config}
    assert any(type(la).__name__ == "ThresholdedReLU" for la in model.layers)  # the model itself is untouched
    acts = kconvert.load_model(K2 / "activations.h5")
    layers = {e["name"]: e for e in json.loads(acts.to_json(keras_version="3"))["config"]["layers"]}
    assert layers["act_hard_sigmoid_scale"]["class_name"] == "Rescaling"
    assert layers["act_hard_sigmoid"]["class_name"] == "ReLU"
    assert layers["dense_hsig"]["config"]["activation"] == "linear"
    assert layers["dense_hsig_hard_sigmoid"]["config"]["max_value"] == 1.0
    acts.save(tmp_path / "acts.keras")
    round_trip = kconvert.load_model(tmp_path / "acts.keras")  # kconvert reads what it wrote, Keras 3 numerics
    inputs, outputs = _keras2_io("activations")
    for got, ref in zip(round_trip.predict(inputs[0]), outputs):
        assert_close(got, ref)


def test_layers_without_a_keras3_form_are_refused_and_nothing_is_written(tmp_path):
    """What neither Keras 3 nor kconvert.keras_objects can express is a clear error naming the layer."""
    inp = kconvert.Input((6, 3))
    model = kconvert.Model(inp, kconvert.layers.LocallyConnected1D(2, 3, padding="same", implementation=2,
                                                                  name="local")(inp))
    with pytest.raises(ConfigError, match="local"):
        model.save(tmp_path / "y.keras")
    assert not (tmp_path / "y.keras").exists()


# ------------------------------------------------------------------------------------------ formats


def test_weights_file_round_trip_keeps_layout_and_bfloat16(k3, tmp_path):
    k3.backend.clear_session()
    model = k3.Sequential([k3.Input((3,)), k3.layers.Dense(2, dtype="bfloat16", name="half")], name="bf")
    model.layers[0].set_weights([np.array([[1.5, -2.25], [3.0078125, 0.1], [1e-3, 7.0]]), np.array([0.5, -1.0])])
    model.save_weights(tmp_path / "bf.weights.h5")
    tree = read_keras3_weights(tmp_path / "bf.weights.h5")
    dense = tree.find("layers/dense")
    assert dense.name == "half" and dense.bfloat16 == {0, 1} and tree.name == "bf"
    expected = [np.asarray(w).astype("float32") for w in model.layers[0].get_weights()]
    for got, want in zip(dense.vars, expected):
        np.testing.assert_array_equal(got, want)
    write_keras3_weights(tmp_path / "ours.weights.h5", tree)
    _assert_same_tree(_h5_tree(tmp_path / "ours.weights.h5"), _h5_tree(tmp_path / "bf.weights.h5"))
    model.load_weights(tmp_path / "ours.weights.h5")
    for got, want in zip(model.layers[0].get_weights(), expected):
        np.testing.assert_array_equal(np.asarray(got).astype("float32"), want)


def test_sharded_weights_load(k3, tmp_path):
    k3.backend.clear_session()
    reference = k3.saving.load_model(K3 / "k3_conv2d.keras")
    reference.save_weights(tmp_path / "w.weights.json", max_shard_size=4e-6)
    assert len(list(tmp_path.glob("w_*.weights.h5"))) > 1
    model = kconvert.load_model(K3 / "k3_conv2d.keras")
    for w in model.weights:
        w.assign(np.zeros(w.shape))
    model.load_weights(tmp_path / "w.weights.json")
    _, outputs, _ = _io3("k3_conv2d")
    for got, ref in zip(_ours(model, "k3_conv2d"), outputs):
        assert_close(got, ref)


def test_missing_or_misshapen_weights_name_the_layer(tmp_path):
    model = kconvert.load_model(K3 / "k3_conv2d.keras")
    tree = read_keras3_weights(_weights_file("k3_conv2d", tmp_path))
    del tree.find("layers").children["separable_conv2d"]
    with pytest.raises(WeightsError, match="layer 'sep'.*layers/separable_conv2d/vars"):
        keras3_weights.load_model_state(model, tree)
    tree = read_keras3_weights(_weights_file("k3_conv2d", tmp_path))
    tree.find("layers/dense").vars[0] = np.zeros((3, 3), "float32")
    with pytest.raises(WeightsError, match="layer 'head'.*shape"):
        keras3_weights.load_model_state(model, tree)


def _archive_with(tmp_path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    path = tmp_path / "crafted.keras"
    with zipfile.ZipFile(K3 / "k3_seq_mlp.keras") as src, zipfile.ZipFile(path, "w", compression) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
        for name, data in members.items():
            out.writestr(name, data)
    return path


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil", "assets/../../evil", "C:/evil", "assets\\..\\evil"])
def test_zip_slip_members_are_refused(member, tmp_path):
    with pytest.raises(FormatError, match="zip-slip"):
        kconvert.load_model(_archive_with(tmp_path, {member: b"x"}))


def test_absurd_archive_members_are_refused(tmp_path, monkeypatch):
    bomb = _archive_with(tmp_path, {"assets/zeros.bin": bytes(2 << 20)}, compression=zipfile.ZIP_DEFLATED)
    monkeypatch.setattr(keras_zip, "MAX_RATIO", 50)
    with pytest.raises(FormatError, match="zip bomb"):
        read_keras_zip(bomb)
    monkeypatch.setattr(keras_zip, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(FormatError, match="claims .* bytes"):
        read_keras_zip(K3 / "k3_seq_mlp.keras")


def test_damaged_archives_get_clear_errors(tmp_path):
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes((K3 / "k3_nested.keras").read_bytes()[:5000])
    with pytest.raises(FormatError, match="cut.keras"):
        kconvert.load_model(truncated)
    no_config = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("metadata.json", "{}")
    with pytest.raises(FormatError, match="config.json"):
        read_keras_zip(no_config)
    npz = tmp_path / "npz.keras"
    with zipfile.ZipFile(K3 / "k3_nested.keras") as src, zipfile.ZipFile(npz, "w") as out:
        out.writestr("config.json", src.read("config.json"))
        out.writestr("model.weights.npz", b"PK")
    with pytest.raises(UnsupportedFormatError, match="npz"):
        read_keras_zip(npz)


def test_archive_written_as_keras_writes_it(tmp_path):
    tree = StateGroup(name="m", has_vars=True)
    tree.ensure("layers/dense").vars = [np.ones((2, 2), "float32")]
    write_keras_zip(tmp_path / "m.keras", {"class_name": "X", "config": {}}, tree, date_saved="2025-01-01@00:00:00")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert [i.filename for i in z.infolist()] == ["metadata.json", "config.json", "model.weights.h5"]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert json.loads(z.read("metadata.json")) == {"keras_version": keras_zip.KERAS3_VERSION,
                                                      "date_saved": "2025-01-01@00:00:00"}
    back = read_keras_zip(tmp_path / "m.keras")
    assert back.config == {"class_name": "X", "config": {}} and back.weights.name == "m"
    np.testing.assert_array_equal(back.weights.find("layers/dense").vars[0], np.ones((2, 2)))


def test_keras3_configs_are_recognised():
    tf_keras_json = json.loads((K2 / "nested_models.json").read_text())
    assert not keras3_config.is_keras3_config(tf_keras_json)
    assert keras3_config.is_keras3_config(json.loads((K3 / "k3_nested.json").read_text()))
    with h5py.File(K3 / "k3_nested.h5") as f:
        legacy = json.loads(f.attrs["model_config"])
        assert "module" not in legacy and keras3_config.is_keras3_config(legacy, f.attrs["keras_version"])
    # tf.keras 2.12+ writes `module` keys too, in its own .keras archives: the version decides
    assert not keras3_config.is_keras3_config({"module": "keras", "class_name": "Sequential"}, "2.15.0")


def test_tf_keras_written_archive_reads_as_keras2(tfk, tmp_path):
    """tf_keras saves `.keras` archives in the same layout; they keep tf.keras's config dialect and numerics."""
    tfk.backend.clear_session()
    ref = tfk.Sequential([tfk.Input((5,)), tfk.layers.Dense(4, activation="hard_sigmoid", name="d"),
                          tfk.layers.BatchNormalization(name="bn")], name="tfk_archive")
    rng = np.random.default_rng(7)
    ref.set_weights([rng.normal(0, 1, w.shape).astype("float32") + (1.5 if "variance" in w.name else 0)
                     for w in ref.weights])
    ref.save(tmp_path / "tfk.keras")
    assert read_keras_zip(tmp_path / "tfk.keras").keras_version.startswith("2.")
    x = rng.normal(0, 3, (4, 5)).astype("float32")
    model = kconvert.load_model(tmp_path / "tfk.keras")  # Keras 2's hard_sigmoid, clip(0.2x + 0.5)
    assert_close(model.predict(x), ref(x, training=False).numpy())


def test_legacy_form_with_mask_operations_reads(tmp_path):
    """Keras 3's legacy `.h5` writer drops `module` keys, also from its mask operations (which Keras 3 then cannot
    read back); kconvert still recognises them as mask operations."""
    config = json.loads((K3 / "k3_embedding_mask.json").read_text())

    def legacy(x):
        if isinstance(x, dict) and x.get("class_name") != "__keras_tensor__":
            return {k: legacy(v) for k, v in x.items() if k not in ("module", "registered_name", "build_config")}
        return [legacy(v) for v in x] if isinstance(x, list) else x

    model = keras_config.model_from_config({"class_name": "Functional", "config": legacy(config["config"])},
                                           keras_version="3.15.1")
    model.load_weights(_weights_file("k3_embedding_mask", tmp_path))
    _, outputs, _ = _io3("k3_embedding_mask")
    assert_close(_ours(model, "k3_embedding_mask")[0], outputs[0])


def test_keras3_options_kconvert_cannot_compute_are_refused():
    config = json.loads((K3 / "k3_seq_mlp.json").read_text())
    config["config"]["layers"][1]["config"]["quantization_config"] = {"mode": "int8"}
    with pytest.raises(ConfigError, match="quantization_config"):
        kconvert.models.model_from_json(json.dumps(config))
    config = json.loads((K3 / "k3_embedding_mask.json").read_text())
    dense = next(e for e in config["config"]["layers"] if e["name"] == "dense_masked")
    dense["inbound_nodes"][0]["kwargs"]["extra"] = dense["inbound_nodes"][0]["args"][0]
    with pytest.raises(ConfigError, match="dense_masked.*'extra' is a tensor"):
        kconvert.models.model_from_json(json.dumps(config))
    config = json.loads((K3 / "k3_embedding_mask.json").read_text())
    pool = next(e for e in config["config"]["layers"] if e["name"] == "gap_masked")
    pool["inbound_nodes"][0]["kwargs"]["mask"]["config"]["keras_history"] = ["emb_plain", 0, 0]
    with pytest.raises(ConfigError, match="gap_masked.*mask from the output of .'emb_plain'"):
        kconvert.models.model_from_json(json.dumps(config))
