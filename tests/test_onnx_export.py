"""Keras -> ONNX: every fixture exported, checked and run in onnxruntime against the real frameworks' outputs.

The fixtures' expected outputs come from tf_keras / Keras 3 (fixtures/make_*.py); runs at other batch sizes are
compared with kconvert's numpy engine, itself checked against those frameworks elsewhere.
"""

import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.api import random_inputs
from kconvert.converters.onnx_lowering import lower_model, max_opset
from kconvert.layers import Input
from kconvert.runtime import numpy_engine

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
MODEL_FILES = sorted(
    p for p in glob.glob(os.path.join(FIXTURES, "keras*", "*"))
    if p.endswith((".h5", ".keras")) and not p.endswith("weights.h5"))
NAMES = [os.path.relpath(p, FIXTURES) for p in MODEL_FILES]

# Transposes per fixture architecture: one at each channels_last spatial input that reaches a layout-sensitive
# layer, one at each channels_last spatial output, none between layers (derivation next to each entry).
TRANSPOSES = {
    "keras2/activations.h5": 0,  # dense/activation only
    "keras2/channels_first_1d3d.h5": 0,  # channels_first throughout: ONNX's own layout
    "keras2/channels_first_2d.h5": 1,  # channels_first; one Permute-fed branch needs Keras order
    "keras2/conv1d.h5": 7,  # 1 input + 5 spatial (N, steps, C) outputs + a Flatten feeding a Concatenate
    "keras2/conv2d_cl.h5": 5,  # 1 input + 2 spatial outputs + 2 Reshape/Dense-on-4D branches
    "keras2/conv2d_transpose_up.h5": 6,  # 1 input + 4 spatial outputs + 1 Reshape input
    "keras2/conv3d.h5": 5,
    "keras2/embedding_mask.h5": 0,
    "keras2/merge_multi_io.h5": 0,
    "keras2/nested_models.h5": 0,
    "keras2/normalization.h5": 0,
    "keras2/seq_add_advanced_act.h5": 0,
    "keras2/seq_conv_compiled.h5": 1,  # input only: Flatten -> Dense permutes the kernel rows instead
    "keras2/seq_mlp.h5": 0,
    "keras2/seq_reshape.h5": 2,
    "keras2/siamese_conv.h5": 2,  # one per image input (two inputs share the tower)
}


def _io(path):
    base = path[:-len(".keras")] if path.endswith(".keras") else path[:-len(".h5")]
    return np.load(base + "_io.npz")


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(proto, feeds):
    sess = _session(proto)
    args = {}
    for spec, x in zip(sess.get_inputs(), feeds):
        dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}[spec.type]
        args[spec.name] = np.asarray(x).astype(dtype)
    return sess.run(None, args)


def _inputs(model, io):
    return [io[f"input_{i}"] for i in range(len(model.inputs))]


def _random_like(model, batch, seed=0):
    return random_inputs(model, batch, seed)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_exports_and_matches_the_framework(name):
    """Checker (full), strict shape inference, then the framework's own outputs from onnxruntime."""
    path = os.path.join(FIXTURES, name)
    model = kconvert.load_model(path)
    proto = lower_model(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    io = _io(path)
    outs = _run(proto, _inputs(model, io))
    assert len(outs) == len(model.outputs)
    for i, y in enumerate(outs):
        assert_close(y, io[f"output_{i}"], what=f"{name} output {i}")
    assert [o.name for o in proto.graph.output] == model.output_names or len(set(model.output_names)) < len(
        model.output_names)
    assert [i.name for i in proto.graph.input] == model.input_names


@pytest.mark.parametrize("name", NAMES)
def test_fixture_runs_at_other_batch_sizes(name):
    """The batch dimension is symbolic: batches 1 and 5 equal the numpy engine."""
    model = kconvert.load_model(os.path.join(FIXTURES, name))
    proto = lower_model(model)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 5):
        feeds = _random_like(model, batch, seed=batch)
        ref = numpy_engine.predict(model._graph, feeds)
        for i, (y, r) in enumerate(zip(_run(proto, feeds), ref)):
            assert_close(y, r, what=f"{name} batch {batch} output {i}")


@pytest.mark.parametrize("name", sorted(TRANSPOSES))
def test_transpose_counts(name):
    model = kconvert.load_model(os.path.join(FIXTURES, name))
    proto = lower_model(model)
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) == TRANSPOSES[name]


def test_every_keras2_fixture_has_a_transpose_count():
    assert {n for n in NAMES if n.startswith("keras2/")} <= set(TRANSPOSES)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("keras2/")])
def test_intermediate_outputs_through_onnx(name):
    """Every recorded top-level layer output, exported as extra graph outputs, equals tf_keras's."""
    path = os.path.join(FIXTURES, name)
    model = kconvert.load_model(path)
    io = _io(path)
    layers = {k[len("layer:"):]: io[k] for k in io.files if k.startswith("layer:")}
    assert layers
    graph_nodes = {id(n) for n in model._graph.nodes}
    probes = []
    for lname in layers:
        node = next(n for n in model.get_layer(lname)._inbound_nodes if id(n) in graph_nodes)
        probes.append(node.outputs[0])
    probe = kconvert.Model(model.inputs, probes)
    outs = _run(lower_model(probe), _inputs(model, io))
    for lname, y in zip(layers, outs):
        assert_close(y, layers[lname], what=f"{name} layer {lname}")


# ---------------------------------------------------------------------------------------------- small models


def _conv_bn_model(rng, data_format="channels_last"):
    from kconvert.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input, ReLU

    x = Input((11, 9, 3) if data_format == "channels_last" else (3, 11, 9))
    y = Conv2D(6, 3, strides=2, padding="same", data_format=data_format, name="c1")(x)
    y = BatchNormalization(axis=-1 if data_format == "channels_last" else 1, name="bn1")(y)
    y = ReLU(name="r1")(y)
    y = Dropout(0.5, name="drop")(y)
    y = Flatten(data_format=data_format, name="flat")(y)
    y = Dense(7, name="d1")(y)
    y = BatchNormalization(name="bn2")(y)
    model = kconvert.Model(x, y)
    _randomize(model, rng)
    return model


def _randomize(model, rng):
    for w in model.weights:
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        else:
            w.assign((rng.standard_normal(w.shape) * 0.4).astype(np.float32))


def test_batchnorm_folds_into_conv_and_dense(rng):
    model = _conv_bn_model(rng)
    plain = lower_model(model, optimize=False)
    folded = lower_model(model)
    ops_plain = [n.op_type for n in plain.graph.node]
    ops_folded = [n.op_type for n in folded.graph.node]
    assert "BatchNormalization" not in ops_folded and ops_folded.count("Conv") == 1
    assert len(ops_folded) < len(ops_plain)
    x = rng.standard_normal((4, 11, 9, 3)).astype(np.float32)
    ref = numpy_engine.predict(model._graph, [x])[0]
    assert_close(_run(plain, [x])[0], ref)
    assert_close(_run(folded, [x])[0], ref)


def test_batchnorm_is_not_folded_into_a_conv_read_elsewhere(rng):
    from kconvert.layers import Add, BatchNormalization, Conv2D, Input

    x = Input((7, 8, 3))
    c = Conv2D(3, 3, padding="same", name="c")(x)
    y = Add()([BatchNormalization(name="bn")(c), c])
    model = kconvert.Model(x, y)
    _randomize(model, rng)
    proto = lower_model(model)
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 1
    xv = rng.standard_normal((2, 7, 8, 3)).astype(np.float32)
    assert_close(_run(proto, [xv])[0], numpy_engine.predict(model._graph, [xv])[0])


def test_dropout_family_vanishes_at_inference(rng):
    model = _conv_bn_model(rng)
    proto = lower_model(model)
    assert not any("drop" in n.name for n in proto.graph.node)


def test_flatten_dense_permutes_weights_not_activations(rng):
    """A channels_last conv net: one Transpose at the input, none before the Dense."""
    model = _conv_bn_model(rng)
    proto = lower_model(model)
    assert [n.op_type for n in proto.graph.node].count("Transpose") == 1
    nchw = lower_model(model, inputs_as_nchw=True)
    assert [n.op_type for n in nchw.graph.node].count("Transpose") == 0
    x = rng.standard_normal((3, 11, 9, 3)).astype(np.float32)
    ref = numpy_engine.predict(model._graph, [x])[0]
    assert_close(_run(nchw, [np.transpose(x, (0, 3, 1, 2))])[0], ref)
    dims = [d.dim_value for d in nchw.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 11, 9]


def test_fixed_batch(rng):
    model = _conv_bn_model(rng)
    proto = lower_model(model, batch=4)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 4
    x = rng.standard_normal((4, 11, 9, 3)).astype(np.float32)
    assert_close(_run(proto, [x])[0], numpy_engine.predict(model._graph, [x])[0])


@pytest.mark.parametrize("opset", sorted({13, 14, 16, 17, 18, 20, max_opset()}))
def test_opsets(opset, rng):
    """LayerNormalization is native from 17 and decomposed below; gelu native from 20; ReduceMean changed at 18."""
    from kconvert.layers import Activation, Dense, GlobalAveragePooling1D, Input, LayerNormalization

    x = Input((5, 6))
    y = LayerNormalization(name="ln")(Dense(6)(x))
    y = Activation("gelu")(y)
    y = GlobalAveragePooling1D()(y)
    model = kconvert.Model(x, y)
    _randomize(model, rng)
    proto = lower_model(model, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    types = [n.op_type for n in proto.graph.node]
    assert ("LayerNormalization" in types) == (opset >= 17)
    assert ("Gelu" in types) == (opset >= 20)
    assert proto.opset_import[0].version == opset
    xv = rng.standard_normal((3, 5, 6)).astype(np.float32)
    assert_close(_run(proto, [xv])[0], numpy_engine.predict(model._graph, [xv])[0])


@pytest.mark.parametrize("opset", [12, 0, 10_000])
def test_unsupported_opset_is_a_clear_error(opset, rng):
    model = _conv_bn_model(rng)
    with pytest.raises(kconvert.errors.ConfigError, match="opset"):
        lower_model(model, opset=opset)


def test_keras2_and_keras3_hard_sigmoid_differ():
    """Keras 2: clip(0.2x + 0.5); Keras 3: relu6(x + 3) / 6 — each exported as the HardSigmoid of its version."""
    from kconvert.layers import Activation, Input
    from kconvert.layers.base import keras_dialect

    def export(major):
        with keras_dialect(major):
            x = Input((4,))
            model = kconvert.Model(x, Activation("hard_sigmoid")(x))
        node = next(n for n in lower_model(model).graph.node if n.op_type == "HardSigmoid")
        return {a.name: round(a.f, 6) for a in node.attribute}

    assert export(2) == {"alpha": 0.2, "beta": 0.5}
    assert export(3) == {"alpha": round(1 / 6, 6), "beta": 0.5}


def test_unknown_layer_lowering_is_an_export_error():
    from kconvert.layers import Input
    from kconvert.layers.base import Layer

    class Opaque(Layer):
        def call(self, inputs):
            if float(np.asarray(inputs).sum()) > 0:  # data-dependent Python control flow: not expressible
                return inputs * 2
            return inputs

    x = Input((3,))
    model = kconvert.Model(x, Opaque(name="opaque")(x))
    with pytest.raises(kconvert.errors.ExportError, match="opaque"):
        lower_model(model)


@pytest.mark.parametrize("pool", ["MaxPooling2D", "AveragePooling2D"])
def test_zero_padding_before_pooling_is_not_fused_by_onnxruntime(pool, rng):
    """onnxruntime's PadFusion would fold ZeroPadding into the pool's own padding (-inf for MaxPool, excluded
    from AveragePool's count), changing the result where the padded zeros win / count; the export prevents it."""
    from kconvert import layers

    x = Input((7, 6, 3))
    y = getattr(layers, pool)(3, strides=2, padding="same")(layers.ZeroPadding2D(((1, 0), (2, 1)))(x))
    model = kconvert.Model(x, y)
    xv = -np.abs(rng.standard_normal((2, 7, 6, 3))).astype(np.float32) - 0.5  # all negative: the zeros matter
    assert_close(_run(lower_model(model), [xv])[0], numpy_engine.predict(model._graph, [xv])[0])


def test_option_without_a_native_form_is_traced(rng):
    """A Dense with a custom activation: the registered lowering gives up, the layer's numpy call is traced."""
    from kconvert.layers import Dense

    def scaled_softsign(v):
        return 1.7 * v / (1.0 + np.abs(v))

    x = Input((6,))
    model = kconvert.Model(x, Dense(4, activation=scaled_softsign, name="custom_act")(x))
    _randomize(model, rng)
    proto = lower_model(model)
    onnx.checker.check_model(proto, full_check=True)
    types = [n.op_type for n in proto.graph.node]
    assert "Abs" in types and "Gemm" not in types  # traced, not the Dense lowering
    xv = rng.standard_normal((5, 6)).astype(np.float32)
    ref = xv @ model.weights[0].value + model.weights[1].value
    assert_close(_run(proto, [xv])[0], 1.7 * ref / (1.0 + np.abs(ref)))


def test_constant_subexpressions_are_folded(rng):
    """Constant folding: a computation on weights alone is done once in numpy and lands as one initializer."""
    from kconvert.layers.base import Layer

    class Gram(Layer):  # y = x @ (k^T k) + softplus(b): the bracket and the softplus depend on weights only
        def build(self, input_shape):
            self.k = self.add_weight("k", (3, input_shape[-1]), "glorot_uniform")
            self.b = self.add_weight("b", (input_shape[-1],), "ones")

        def call(self, inputs):
            return inputs @ (self.k.value.T @ self.k.value) + np.log1p(np.exp(self.b.value))

    x = Input((4,))
    model = kconvert.Model(x, Gram(name="gram")(x))
    _randomize(model, rng)
    proto = lower_model(model)
    assert sorted(n.op_type for n in proto.graph.node) == ["Add", "MatMul"]
    k, b = (w.value for w in model.weights)
    consts = {tuple(t.dims): onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert_close(consts[(4, 4)], k.T @ k)
    xv = rng.standard_normal((5, 4)).astype(np.float32)
    assert_close(_run(proto, [xv])[0], numpy_engine.predict(model._graph, [xv])[0])
