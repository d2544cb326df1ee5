"""`kconvert.utils.plot_model` / `model_to_dot` and `kconvert plot`: the graph tf_keras's vis_utils draws.

Each model is loaded by kconvert and by tf_keras from the same file; the two DOT graphs must have the same
graph attributes, the same node labels in the same clusters and the same edges between the same layers.
"""

from __future__ import annotations

import collections
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pydot
import pytest

import kconvert
from kconvert.cli import main
from kconvert.convert import caffe_to_keras
from kconvert.errors import ExportError, GraphvizNotFoundError
from kconvert.formats.atomic import TEMP_MARK
from kconvert.utils import model_to_dot, plot_model

ROOT = Path(__file__).resolve().parent.parent
KERAS2 = ROOT / "fixtures" / "keras2"
CAFFE = ROOT / "fixtures" / "caffe"

VARIANTS = [
    {},
    {"show_shapes": True},
    {"show_shapes": True, "show_dtype": True, "show_layer_activations": True, "show_trainable": True},
    {"show_shapes": True, "expand_nested": True},
    {"expand_nested": True, "show_layer_names": False, "show_layer_activations": True},
    {"rankdir": "LR", "dpi": 72, "show_dtype": True},
]


@pytest.fixture(scope="module")
def vis(tfk):
    from tf_keras.src.utils import vis_utils

    return vis_utils


def _layer_names(model, names=None) -> dict[str, str]:
    """str(id(layer)) -> layer name for every layer of the model, nested models and wrapped layers included."""
    names = {} if names is None else names
    names[str(id(model))] = model.name
    # a tf_keras Sequential's `layers` leaves out its InputLayer; the tracked list has it
    layers = model._graph.layers if isinstance(model, kconvert.models.Model) else model._self_tracked_trackables
    for layer in layers:
        names[str(id(layer))] = layer.name
        for inner in (layer, getattr(layer, "layer", None)):
            if getattr(inner, "_is_graph_network", False):
                _layer_names(inner, names)
    return names


def describe(dot, names: dict[str, str]) -> dict:
    """A DOT graph by what it shows: graph attributes, labels per cluster, edges between layer names."""
    clusters, edges, attrs = {}, collections.Counter(), {}

    def walk(graph, key):
        attrs[key] = {k: str(v) for k, v in graph.get_attributes().items()}
        for node in graph.get_nodes():
            if node.get_name() in ("node", "edge", "graph"):
                attrs[f"{key}/{node.get_name()}"] = node.get_attributes()
                continue
            label = node.get("label")  # quoted when read back from a file
            clusters.setdefault(key, collections.Counter())[label[1:-1] if label[0] == '"' else label] += 1
        for edge in graph.get_edges():
            edges[names[edge.get_source()], names[edge.get_destination()]] += 1
        for sub in graph.get_subgraphs():
            walk(sub, sub.get_name())

    walk(dot, "top")
    return {"attrs": attrs, "clusters": clusters, "edges": edges}


def assert_same_graph(ours, theirs, vis, variants=VARIANTS):
    for kw in variants:
        a = describe(model_to_dot(ours, **kw), _layer_names(ours))
        b = describe(vis.model_to_dot(theirs, **kw), _layer_names(theirs))
        assert a == b, kw
        assert a["edges"], kw


_CACHE: dict = {}


def _both(tfk, path):
    if path not in _CACHE:
        _CACHE[path] = (kconvert.load_model(path), tfk.models.load_model(path, compile=False))
    return _CACHE[path]


@pytest.mark.parametrize("name", ["seq_mlp", "nested_models", "merge_multi_io", "siamese_conv", "activations",
                                  "embedding_mask"])
def test_keras2_fixture_graph_matches_tf_keras(tfk, vis, name):
    ours, theirs = _both(tfk, str(KERAS2 / f"{name}.h5"))
    assert_same_graph(ours, theirs, vis)


def test_expand_nested_clusters(tfk, vis):
    ours, _ = _both(tfk, str(KERAS2 / "nested_models.h5"))
    shown = describe(model_to_dot(ours, expand_nested=True), _layer_names(ours))
    assert set(shown["clusters"]) == {"top", "cluster_inner_seq", "cluster_inner_fn", "cluster_deep_seq"}
    # the edge into a nested model goes to its first layer, the edge out of it leaves its last
    assert shown["edges"]["add_ab", "dense_input"] == 1 and shown["edges"]["dense_1", "inner_in"] == 1
    assert shown["edges"]["inner_add", "cat"] == 1
    flat = describe(model_to_dot(ours), _layer_names(ours))
    assert flat["edges"]["inner_seq", "inner_fn"] == 1 and set(flat["clusters"]) == {"top"}


@pytest.fixture(scope="module")
def special_h5(tfk, tmp_path_factory):
    """Wrappers (one around a functional model), a rank-1 input, an int input, a layer shared on two shapes,
    a Sequential nested in a Sequential nested in a Sequential."""
    K, L = tfk, tfk.layers
    tok = K.Input((), dtype="int32", name="tok")
    rep = L.RepeatVector(3, name="rep")(L.Embedding(7, 6, name="emb")(tok))
    seq = K.Input((5, 4), name="seq")
    step_in = K.Input((4,), name="step_in")
    step = K.Model(step_in, L.Dense(3, activation="relu", name="step_dense")(step_in), name="step_model")
    td = L.TimeDistributed(step, name="td_model")(seq)
    td2 = L.TimeDistributed(L.Dense(2, activation="elu"), name="td_dense")(seq)
    bi = L.Bidirectional(L.LSTM(3), name="bi")(td)
    shared = L.Dense(2, name="shared_any")  # called on (None, 6) and (None, 3, 6): its shapes are "?"
    out = L.Concatenate(name="cat")([shared(bi), L.Flatten(name="flat2")(shared(rep)), L.Flatten()(td2)])
    deepest = K.Sequential([L.Dense(2, input_shape=(3,))], name="deepest")
    middle = K.Sequential([L.Dense(3, input_shape=(4,)), deepest], name="middle")
    stack = K.Sequential([L.Dense(4, input_shape=(5,)), middle], name="stack")
    x = K.Input((5,), name="x")
    model = K.Model([tok, seq, x], [out, bi, stack(x)], name="special")
    path = tmp_path_factory.mktemp("plot") / "special.h5"
    model.save(path)
    stack.save(path.with_name("stack.h5"))
    return path


def test_wrappers_shared_layers_and_odd_shapes_match_tf_keras(tfk, vis, special_h5):
    ours, theirs = _both(tfk, str(special_h5))
    assert_same_graph(ours, theirs, vis)
    labels = describe(model_to_dot(ours, show_shapes=True), _layer_names(ours))["clusters"]["top"]
    assert "{shared_any|Dense}|{input:|output:}|{{?}|{?}}" in labels
    assert "{emb|Embedding}|{input:|output:}|{{None}|{(None, 6)}}" in labels  # tf_keras unwraps (None,)
    assert "{td_model(step_model)|TimeDistributed(Functional)}|{input:|output:}|{{(None, 5, 4)}|" \
           "{(None, 5, 3)}}" in labels
    ours_seq, theirs_seq = _both(tfk, str(special_h5.with_name("stack.h5")))
    assert_same_graph(ours_seq, theirs_seq, vis, [{"expand_nested": True, "show_shapes": True}])


@pytest.mark.parametrize("name", ["lenet", "resnet_block", "inception_fcn"])
def test_caffe_net_graph_matches_tf_keras(tfk, vis, tmp_path, name):
    ours = caffe_to_keras(str(CAFFE / f"{name}.prototxt"), str(CAFFE / f"{name}.caffemodel"),
                          data_format="channels_last")
    ours.save(tmp_path / "net.h5")
    theirs = tfk.models.load_model(tmp_path / "net.h5", compile=False,
                                   custom_objects=kconvert.keras_objects("tf_keras"))
    assert_same_graph(ours, theirs, vis, VARIANTS[:3])


# ---------------------------------------------------------------------------------------------- files


def _kconvert_layers(model) -> list[str]:
    return [la.name for la in model._graph.layers]


def test_cli_svg_parses_and_names_every_layer(tfk, vis, tmp_path, capsys):
    out = tmp_path / "model.svg"
    assert main(["plot", str(KERAS2 / "merge_multi_io.h5"), "-o", str(out), "--show-shapes", "--rankdir", "LR"]) == 0
    assert "wrote" in capsys.readouterr().out
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    texts = {t.text for t in root.iter() if t.tag.endswith("text")}
    ours, _ = _both(tfk, str(KERAS2 / "merge_multi_io.h5"))
    assert set(_kconvert_layers(ours)) <= texts
    assert "(None, 23, 4)" in texts  # the shapes table of cat_axis1
    assert not [p for p in os.listdir(tmp_path) if TEMP_MARK in p]


def test_cli_png_pdf_and_caffe_prototxt(tmp_path):
    png, pdf = tmp_path / "net.png", tmp_path / "net.pdf"
    assert main(["plot", str(CAFFE / "lenet.prototxt"), "-o", str(png), "--dpi", "50"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert main(["plot", str(KERAS2 / "nested_models.json"), "-o", str(pdf), "--expand-nested"]) == 0
    assert pdf.read_bytes().startswith(b"%PDF-")


def test_dot_output_parses_with_pydot_without_graphviz(tfk, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` program reachable
    out = tmp_path / "model.dot"
    assert main(["plot", str(KERAS2 / "nested_models.yaml"), "-o", str(out), "--expand-nested",
                 "--show-dtype"]) == 0
    (graph,) = pydot.graph_from_dot_file(str(out))
    ours, _ = _both(tfk, str(KERAS2 / "nested_models.h5"))
    names = _layer_names(ours)
    read_back = describe(graph, collections.defaultdict(lambda: "?", names))
    expected = describe(model_to_dot(ours, expand_nested=True, show_dtype=True), names)
    assert read_back["clusters"] == expected["clusters"] and len(expected["clusters"]) == 4
    assert sum(read_back["edges"].values()) == sum(expected["edges"].values()) == 18


def test_no_graphviz_writes_dot_and_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "model.svg"
    assert main(["plot", str(KERAS2 / "seq_mlp.h5"), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    dot_file = tmp_path / "model.dot"
    assert dot_file.exists() and not out.exists()
    assert f"dot -Tsvg {dot_file} -o {out}" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kconvert: error: ") and "apt-get install graphviz" in err[0]
    assert "Traceback" not in captured.err + captured.out
    pydot.graph_from_dot_file(str(dot_file))
    model = kconvert.load_model(str(KERAS2 / "seq_mlp.h5"))
    with pytest.raises(GraphvizNotFoundError, match=r"\.dot"):
        plot_model(model, to_file=tmp_path / "api.png")
    assert not (tmp_path / "api.png").exists()


def test_json_report_counts_tf_keras_boxes_and_edges(tfk, vis, tmp_path, capsys):
    out = tmp_path / "m.svg"
    assert main(["plot", str(KERAS2 / "nested_models.h5"), "-o", str(out), "--expand-nested", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    _, theirs = _both(tfk, str(KERAS2 / "nested_models.h5"))
    shown = describe(vis.model_to_dot(theirs, expand_nested=True), _layer_names(theirs))
    assert report == {"output": str(out), "format": "svg",
                      "layers": sum(sum(c.values()) for c in shown["clusters"].values()),
                      "edges": sum(shown["edges"].values())}
    assert (report["layers"], report["edges"]) == (17, 18) and out.exists()


def test_failed_render_leaves_existing_output_untouched(tfk, tmp_path):
    ours, _ = _both(tfk, str(KERAS2 / "seq_mlp.h5"))
    out = tmp_path / "model.nosuchformat"
    out.write_text("old")
    with pytest.raises(ExportError, match="nosuchformat"):
        plot_model(ours, to_file=out)
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["model.nosuchformat"]


def test_cli_rejects_a_weights_file_in_one_line(tmp_path, capsys):
    assert main(["plot", str(KERAS2 / "seq_mlp_weights.h5"), "-o", str(tmp_path / "w.dot")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keras_h5_weights" in err[0] and not (tmp_path / "w.dot").exists()


def test_unbuilt_model_is_refused_as_tf_keras_refuses_it(tfk, vis):
    from kconvert.errors import GraphError

    with pytest.raises(ValueError, match="not yet been built"):
        vis.model_to_dot(tfk.Sequential([tfk.layers.Dense(3)]))
    with pytest.raises(GraphError, match="not been built"):
        model_to_dot(kconvert.models.Sequential([kconvert.layers.Dense(3)]))
