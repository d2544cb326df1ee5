"""The IR graph: topological order, Keras's layer order, validation errors, shape inference, old config forms."""

import json

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert import errors
from kconvert import layers as L
from kconvert.ir import Graph, Node, Value


def test_layer_order_matches_tf_keras_for_a_branching_graph(tfk):
    def build(lib, Input, Model):
        a = Input((6,), name="a")
        b = Input((4,), name="b")
        x = lib.Dense(5, name="x")(a)
        y = lib.Dense(5, name="y")(b)
        z = lib.Dense(5, name="z")(x)
        s = lib.Add(name="s")([z, y])
        return Model([a, b], [s, x])

    ours = build(L, kconvert.Input, kconvert.Model)
    theirs = build(tfk.layers, tfk.Input, tfk.Model)
    assert [la.name for la in ours.layers] == [la.name for la in theirs.layers]
    nodes = ours._graph.nodes
    position = {id(n): i for i, n in enumerate(nodes)}
    for n in nodes:  # every parent runs before its child
        assert all(position[id(p)] < position[id(n)] for p in n.parents)


def test_cycle_is_a_graph_error():
    inp = kconvert.Input((3,))
    d1, d2 = L.Dense(3, name="d1"), L.Dense(3, name="d2")
    x = d1(inp)
    y = d2(x)
    # rewire d1's node to consume d2's output: x depends on y depends on x
    d1._inbound_nodes[0].inputs = [y]
    with pytest.raises(errors.GraphError, match="cycle"):
        Graph([inp], [y])


def test_dangling_input_is_a_graph_error():
    a, b = kconvert.Input((3,), name="a"), kconvert.Input((3,), name="b")
    y = L.Add()([a, b])
    with pytest.raises(errors.GraphError, match="'b'"):
        kconvert.Model(a, y)


def test_values_carry_shape_dtype_and_layout():
    img = kconvert.Input((11, 9, 3), name="img")
    c = L.Conv2D(4, 3, strides=2)(img)
    assert c.shape == (None, 5, 4, 4) and c.dtype == "float32" and c.layout == "NHWC"
    cf = L.Conv2D(4, 3, data_format="channels_first")(kconvert.Input((3, 11, 9)))
    assert cf.layout == "NCHW" and cf.shape == (None, 4, 9, 7)
    flat = L.Flatten()(c)
    assert flat.shape == (None, 80) and flat.layout is None
    tok = kconvert.Input((7,), dtype="int32")
    assert tok.dtype == "int32"
    assert L.Embedding(10, 4)(tok).dtype == "float32"


def test_shape_conflict_is_a_shape_error():
    a, b = kconvert.Input((3,)), kconvert.Input((4,))
    with pytest.raises(errors.ShapeError):
        L.Add()([a, b])
    with pytest.raises(errors.ShapeError):
        L.Conv2D(2, 5)(kconvert.Input((3, 3, 1)))


def test_node_records_kwargs_and_structure():
    inp = kconvert.Input((3,))
    drop = L.Dropout(0.5)
    out = drop(inp, training=False)
    node = drop._inbound_nodes[0]
    assert isinstance(node, Node) and node.kwargs == {"training": False}
    assert isinstance(out, Value) and out.keras_history == (drop, 0, 0)


def test_inbound_node_kwargs_round_trip(tfk):
    """A layer called with a keyword argument keeps it in the config, as tf.keras writes it."""
    inp = tfk.Input((5,), name="x")
    out = tfk.layers.Dropout(0.3, name="drop")(tfk.layers.Dense(4, name="d")(inp), training=False)
    text = tfk.Model(inp, out).to_json()
    assert '"training": false' in text
    ours = kconvert.models.model_from_json(text)
    assert json.loads(ours.to_json())["config"] == json.loads(text)["config"]
    x = np.ones((2, 5), "float32")
    k, b = ours.get_layer("d").get_weights()
    assert_close(ours.predict(x), x @ k + b)


def test_sequential_list_form_of_old_keras():
    """Keras <= 2.2.2 wrote a Sequential's config as the bare list of layers."""
    config = {"class_name": "Sequential", "config": [
        {"class_name": "Dense", "config": {"name": "dense_1", "units": 4, "activation": "relu",
                                           "batch_input_shape": [None, 3], "use_bias": True}},
        {"class_name": "Dense", "config": {"name": "dense_2", "units": 2}}], "keras_version": "2.1.6"}
    model = kconvert.models.model_from_json(json.dumps(config))
    assert [la.name for la in model.layers] == ["dense_1", "dense_2"]
    assert model.inputs[0].shape == (None, 3)
    assert model.predict(np.ones((5, 3), "float32")).shape == (5, 2)


def test_layers_deserialize_and_serialize():
    layer = L.deserialize({"class_name": "Dense", "config": {"name": "q", "units": 3}})
    assert isinstance(layer, L.Dense) and layer.units == 3
    assert L.serialize(layer)["config"]["name"] == "q"
    with pytest.raises(errors.UnknownLayerError, match="Nope"):
        L.deserialize({"class_name": "Nope", "config": {}})


def test_compute_output_shape_of_nested_model():
    inp = kconvert.Input((8, 6, 3))
    inner = kconvert.Model(inp, L.Conv2D(5, 3)(inp))
    outer_in = kconvert.Input((10, 9, 3))
    y = inner(outer_in)
    assert y.shape == (None, 8, 7, 5)
