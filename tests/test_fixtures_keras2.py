"""Every committed tf_keras golden fixture, in every form, against tf_keras's saved outputs — and back."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_close

import kconvert

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keras2"
INDEX = json.loads((FIXTURES / "index.json").read_text())
MODELS = {m["name"]: m for m in INDEX["models"]}
NAMES = sorted(MODELS)


def _io(name):
    entry = MODELS[name]
    data = np.load(FIXTURES / entry["files"]["io_npz"])
    inputs = [data[i["key"]] for i in entry["inputs"]]
    outputs = [data[o["key"]] for o in entry["outputs"]]
    layers = {k.split(":", 1)[1]: data[k] for k in entry["layer_outputs"]}
    return inputs, outputs, layers


def _feed(inputs):
    return inputs if len(inputs) > 1 else inputs[0]


def _check_outputs(model, name, batch_size=None):
    inputs, outputs, _ = _io(name)
    got = model.predict(_feed(inputs), batch_size=batch_size)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(outputs)
    for i, (g, r) in enumerate(zip(got, outputs)):
        assert_close(g, r, what=f"{name} output {i}")


def _files(name):
    return {k: FIXTURES / v for k, v in MODELS[name]["files"].items()}


def test_fixture_set_covers_the_layer_vocabulary():
    required = {"InputLayer", "Dense", "Conv2D", "Conv1D", "Conv3D", "Conv2DTranspose", "DepthwiseConv2D",
                "SeparableConv2D", "BatchNormalization", "LayerNormalization", "Embedding", "Masking", "Dot",
                "UpSampling2D", "PReLU", "Sequential", "Functional"}
    assert required <= set(INDEX["layer_classes_covered"])


@pytest.mark.parametrize("name", NAMES)
def test_h5_predicts_tf_keras_outputs(name):
    model = kconvert.load_model(_files(name)["h5"])
    _check_outputs(model, name)
    _check_outputs(model, name, batch_size=2)  # batches that do not divide the data


@pytest.mark.parametrize("name", NAMES)
def test_intermediate_outputs(name):
    """Every top-level layer's output, not only the model's, equals tf_keras's."""
    model = kconvert.load_model(_files(name)["h5"])
    inputs, _, layers = _io(name)
    if not layers:
        pytest.fail(f"{name} has no intermediate outputs recorded")
    graph_nodes = {id(n) for n in model._graph.nodes}
    probes = []
    for lname in layers:
        layer = model.get_layer(lname)
        node = next(n for n in layer._inbound_nodes if id(n) in graph_nodes)
        probes.append(node.outputs[0])
    probe = kconvert.Model(model.inputs, probes)
    got = probe.predict(_feed(inputs))
    got = got if isinstance(got, list) else [got]
    for lname, g in zip(layers, got):
        assert_close(g, layers[lname], what=f"{name} layer {lname}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["json", "yaml"])
def test_config_plus_weights(name, form):
    files = _files(name)
    text = files[form].read_text()
    reader = kconvert.models.model_from_json if form == "json" else kconvert.models.model_from_yaml
    model = reader(text)
    model.load_weights(files["weights_h5"])
    _check_outputs(model, name)


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip_equals_tf_keras(name):
    text = _files(name)["json"].read_text()
    model = kconvert.models.model_from_json(text)
    assert json.loads(model.to_json())["config"] == json.loads(text)["config"]
    yaml_model = kconvert.models.model_from_yaml(_files(name)["yaml"].read_text())
    assert json.loads(yaml_model.to_json())["config"] == json.loads(text)["config"]


@pytest.mark.parametrize("name", NAMES)
def test_h5_model_config_and_weight_names_round_trip(name, tmp_path):
    src = _files(name)["h5"]
    model = kconvert.load_model(src)
    out = tmp_path / "ours.h5"
    model.save(out)
    with h5py.File(src) as a, h5py.File(out) as b:
        assert json.loads(b.attrs["model_config"]) == json.loads(a.attrs["model_config"])
        assert ("training_config" in b.attrs) == ("training_config" in a.attrs)
        if "training_config" in a.attrs:
            assert json.loads(b.attrs["training_config"]) == json.loads(a.attrs["training_config"])
            names_a = [n for n in a["optimizer_weights"].attrs["weight_names"]]
            names_b = [n for n in b["optimizer_weights"].attrs["weight_names"]]
            assert names_a == names_b
        wa, wb = a["model_weights"], b["model_weights"]
        assert list(wb.attrs["layer_names"]) == list(wa.attrs["layer_names"])
        for lname in wa.attrs["layer_names"]:
            lname = lname.decode() if isinstance(lname, bytes) else lname
            na = list(wa[lname].attrs["weight_names"])
            nb = list(wb[lname].attrs["weight_names"])
            assert nb == na, lname
            for wname in na:
                wname = wname.decode() if isinstance(wname, bytes) else wname
                np.testing.assert_array_equal(wb[lname][wname][()], wa[lname][wname][()])


@pytest.mark.parametrize("name", NAMES)
def test_what_we_write_loads_in_tf_keras(name, tfk, tmp_path):
    model = kconvert.load_model(_files(name)["h5"])
    model.save(tmp_path / "ours.h5")
    model.save_weights(tmp_path / "ours_weights.h5")
    inputs, outputs, _ = _io(name)
    tfk.backend.clear_session()
    back = tfk.models.load_model(tmp_path / "ours.h5", compile=False)
    got = back.predict(_feed(inputs), verbose=0)
    got = got if isinstance(got, list) else [got]
    for g, r in zip(got, outputs):
        assert_close(g, r)
    reference = tfk.models.load_model(_files(name)["h5"], compile=False)
    assert [w.name for w in back.weights] == [w.name for w in reference.weights]
    assert json.loads(back.to_json())["config"] == json.loads(reference.to_json())["config"]
    twin = tfk.models.model_from_json(model.to_json())
    twin.load_weights(tmp_path / "ours_weights.h5")
    got = twin.predict(_feed(inputs), verbose=0)
    got = got if isinstance(got, list) else [got]
    for g, r in zip(got, outputs):
        assert_close(g, r)


@pytest.mark.parametrize("name", NAMES)
def test_summary_and_counts_equal_tf_keras(name, tfk):
    model = kconvert.load_model(_files(name)["h5"])
    assert model.count_params() == MODELS[name]["params"]
    reference = tfk.models.load_model(_files(name)["h5"], compile=False)
    ours, theirs = [], []
    model.summary(print_fn=ours.append)
    reference.summary(print_fn=theirs.append)
    assert [s.rstrip() for s in ours] == [s.rstrip() for s in theirs]


@pytest.mark.parametrize("name", NAMES)
def test_layer_configs_equal_tf_keras(name):
    """Each layer's get_config() equals the config tf_keras's get_config() wrote into the JSON file."""
    from kconvert.formats.keras_text import dump_json

    written = json.loads(_files(name)["json"].read_text())["config"]
    entries = written if isinstance(written, list) else written["layers"]
    model = kconvert.models.model_from_json(_files(name)["json"].read_text())
    checked = 0
    for entry in entries:
        if entry["class_name"] in ("InputLayer", "Sequential", "Functional", "Model"):
            continue
        layer = model.get_layer(entry["config"]["name"])
        assert json.loads(dump_json(layer.get_config())) == entry["config"], layer.name
        checked += 1
    assert checked > 0
