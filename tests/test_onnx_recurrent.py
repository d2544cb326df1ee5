"""ONNX lowering of SimpleRNN / LSTM / GRU / CuDNN layers and Bidirectional onto the native RNN, LSTM and GRU ops.

Every graph passes the full checker, runs in onnxruntime at batch 5 and equals kconvert's numpy engine (itself
checked against tf_keras and Keras 3 in test_layers_recurrent.py); LSTM, both GRUs, Bidirectional and masked
layers are also compared with real tf_keras on the same weights. No graph holds a Loop or a Scan.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.converters.onnx_lowering import lower_model, max_opset
from kconvert.errors import ExportError
from kconvert.layers import (
    GRU,
    LSTM,
    Bidirectional,
    CuDNNGRU,
    CuDNNLSTM,
    Dense,
    Embedding,
    Input,
    Masking,
    SimpleRNN,
    keras_dialect,
)
from kconvert.runtime import numpy_engine

N, T, F, U = 5, 7, 6, 5  # batch, timesteps, features, units: all different
VOCAB = 11


# ---------------------------------------------------------------------------------------------- helpers


def _randomize(model, rng):
    """Weights giving pre-activations of order 1: gates neither dead nor saturated."""
    for w in model.weights:
        shape = tuple(w.shape)
        std = 1.2 / np.sqrt(shape[0]) if len(shape) >= 2 else 0.4
        w.assign(rng.normal(0.0, std, shape).astype(np.float32))


def _export(model, opset=17):
    proto = lower_model(model, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert "Loop" not in ops and "Scan" not in ops
    return proto, ops


def _run(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    args = {}
    for spec, x in zip(sess.get_inputs(), feeds):
        dtype = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}[spec.type]
        args[spec.name] = np.asarray(x).astype(dtype)
    return sess.run(None, args)


def _check(model, feeds, opset=17):
    """Export, run in onnxruntime, compare every output with the numpy engine; returns the op types."""
    proto, ops = _export(model, opset)
    ref = numpy_engine.predict(model._graph, feeds)
    outs = _run(proto, feeds)
    assert len(outs) == len(ref)
    for i, (y, r) in enumerate(zip(outs, ref)):
        assert float(np.std(r)) > 0.01, f"output {i} is degenerate"
        assert_close(y, r, what=f"output {i}")
    return ops


def _seq(rng, *shape):
    return rng.normal(0.0, 1.0, shape).astype(np.float32)


def _tokens(rng):
    """(N, T) token ids, 0 = padding: post-padded, pre-padded, holes in the middle, none, and all padding."""
    tok = rng.integers(1, VOCAB, (N, T))
    tok[0, 4:] = 0
    tok[1, :3] = 0
    tok[2, [1, 2, 5]] = 0
    tok[4, :] = 0
    return tok.astype(np.int32)


def _rnn(cls, **kwargs):
    if cls == "GRU_v1":
        return GRU(U, reset_after=False, **kwargs)
    return {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}[cls](U, **kwargs)


NATIVE = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU", "GRU_v1": "GRU"}
CELLS = list(NATIVE)
SEQ_OPTIONS = [
    {},
    {"return_sequences": True},
    {"return_state": True},
    {"return_sequences": True, "return_state": True, "go_backwards": True},
    {"go_backwards": True, "unroll": True, "use_bias": False},
]


# ---------------------------------------------------------------------------------------------- plain layers


@pytest.mark.parametrize("options", SEQ_OPTIONS)
@pytest.mark.parametrize("cls", CELLS)
def test_recurrent_layer_is_one_native_op(rng, cls, options):
    x = Input((T, F))
    model = kconvert.Model(x, _rnn(cls, **options)(x))
    _randomize(model, rng)
    ops = _check(model, [_seq(rng, N, T, F)])
    assert ops.count(NATIVE[cls]) == 1 and len(ops) <= 8


def test_gru_linear_before_reset_follows_reset_after(rng):
    for reset_after in (True, False):
        x = Input((T, F))
        model = kconvert.Model(x, GRU(U, reset_after=reset_after)(x))
        proto, _ = _export(model)
        (gru,) = [n for n in proto.graph.node if n.op_type == "GRU"]
        assert {a.name: a.i for a in gru.attribute}["linear_before_reset"] == int(reset_after)


@pytest.mark.parametrize("cls,kwargs", [
    ("LSTM", {"recurrent_activation": "hard_sigmoid"}),
    ("LSTM", {"activation": "relu", "recurrent_activation": "softsign"}),
    ("LSTM", {"activation": "elu", "recurrent_activation": "sigmoid"}),
    ("GRU", {"activation": "softplus", "recurrent_activation": "hard_sigmoid"}),
    ("GRU_v1", {"activation": "linear", "recurrent_activation": "hard_sigmoid"}),
    ("SimpleRNN", {"activation": "leaky_relu"}),
    ("SimpleRNN", {"activation": "linear"}),
])
@pytest.mark.parametrize("keras_major", [2, 3])
def test_activations_map_to_the_ops_attribute(rng, cls, kwargs, keras_major):
    """hard_sigmoid is Keras 2's (slope 0.2) or Keras 3's (slope 1/6) after the dialect of the layer."""
    with keras_dialect(keras_major):
        x = Input((T, F))
        model = kconvert.Model(x, _rnn(cls, return_sequences=True, **kwargs)(x))
    _randomize(model, rng)
    _check(model, [_seq(rng, N, T, F)])


def test_hard_sigmoid_slopes_differ_between_keras_versions():
    alphas = []
    for major in (2, 3):
        with keras_dialect(major):
            x = Input((T, F))
            model = kconvert.Model(x, LSTM(U, recurrent_activation="hard_sigmoid")(x))
        proto, _ = _export(model)
        (lstm,) = [n for n in proto.graph.node if n.op_type == "LSTM"]
        attrs = {a.name: a for a in lstm.attribute}
        assert list(attrs["activations"].strings) == [b"HardSigmoid", b"Tanh", b"Tanh"]
        alphas.append(list(attrs["activation_alpha"].floats))
    assert alphas[0] == pytest.approx([0.2]) and alphas[1] == pytest.approx([1 / 6])


def test_activation_onnx_rnns_lack_is_traced(rng):
    """selu is not among the ONNX LSTM activations: the layer's numpy call is traced (unrolled, still no loop)."""
    x = Input((T, F))
    model = kconvert.Model(x, LSTM(U, activation="selu", name="lstm_selu")(x))
    _randomize(model, rng)
    ops = _check(model, [_seq(rng, N, T, F)])
    assert "LSTM" not in ops and "Loop" not in ops and "Scan" not in ops


@pytest.mark.parametrize("raw_layout", [False, True])
@pytest.mark.parametrize("cls", [CuDNNLSTM, CuDNNGRU])
def test_cudnn_layers(rng, cls, raw_layout):
    """Fixed sigmoid/tanh, input + recurrent biases; multi-backend Keras's raw weight layout read like the engine."""
    x = Input((T, F))
    layer = cls(U, return_sequences=True, return_state=True)
    y = layer(x)
    layer._writer_version = "2.2.4" if raw_layout else "2.2.4-tf"
    assert layer._raw_cudnn_layout() == raw_layout
    model = kconvert.Model(x, y)
    _randomize(model, rng)
    ops = _check(model, [_seq(rng, N, T, F)])
    assert ops.count("LSTM" if cls is CuDNNLSTM else "GRU") == 1


def test_time_major(rng):
    x = Input((N, F))  # time-major: (T, N, F) with T the leading (variable) axis
    model = kconvert.Model(x, LSTM(U, time_major=True, return_sequences=True, go_backwards=True)(x))
    _randomize(model, rng)
    ops = _check(model, [_seq(rng, T, N, F)])
    assert "Transpose" not in ops


def test_initial_state_inputs(rng):
    x, h, c = Input((T, F)), Input((U,)), Input((U,))
    lstm = LSTM(U, return_sequences=True, return_state=True)(x, initial_state=[h, c])
    gru = GRU(U, go_backwards=True)(x, initial_state=h)
    model = kconvert.Model([x, h, c], [*lstm, gru])
    _randomize(model, rng)
    _check(model, [_seq(rng, N, T, F), _seq(rng, N, U), _seq(rng, N, U)])


def test_stacked_layers_stay_time_major(rng):
    """The time-major sequence of one recurrent layer feeds the next without a Transpose."""
    x = Input((T, F))
    y = LSTM(U, return_sequences=True)(x)
    y = GRU(4, return_sequences=True, go_backwards=True)(y)
    y = Bidirectional(SimpleRNN(3, return_sequences=True))(y)
    y = LSTM(U)(y)
    model = kconvert.Model(x, Dense(2)(y))
    _randomize(model, rng)
    ops = _check(model, [_seq(rng, N, T, F)])
    assert ops.count("Transpose") == 1  # the input's


# ---------------------------------------------------------------------------------------------- Bidirectional


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("cls", CELLS)
def test_bidirectional_is_one_bidirectional_op(rng, cls, merge_mode):
    x = Input((T, F))
    seqs = Bidirectional(_rnn(cls, return_sequences=True), merge_mode=merge_mode)(x)
    last = Bidirectional(_rnn(cls, return_state=True), merge_mode=merge_mode)(x)
    outs = [*(seqs if merge_mode is None else [seqs]), *last]
    model = kconvert.Model(x, outs)
    _randomize(model, rng)
    proto, _ = _export(model)
    ops = _check(model, [_seq(rng, N, T, F)])
    native = [n for n in proto.graph.node if n.op_type == NATIVE[cls]]
    assert len(native) == 2 and ops.count(NATIVE[cls]) == 2
    for n in native:
        assert {a.name: a.s for a in n.attribute}["direction"] == b"bidirectional"


def test_bidirectional_of_a_go_backwards_layer(rng):
    """Keras's forward copy runs backwards: the ONNX directions swap."""
    x = Input((T, F))
    seqs = Bidirectional(LSTM(U, return_sequences=True, go_backwards=True))(x)
    last = Bidirectional(GRU(U, go_backwards=True, return_state=True), merge_mode=None)(x)
    model = kconvert.Model(x, [seqs, *last])
    _randomize(model, rng)
    _check(model, [_seq(rng, N, T, F)])


def test_bidirectional_with_a_different_backward_layer(rng):
    x = Input((T, F))
    y = Bidirectional(LSTM(U, return_sequences=True),
                      backward_layer=GRU(U, return_sequences=True, go_backwards=True))(x)
    model = kconvert.Model(x, y)
    _randomize(model, rng)
    ops = _check(model, [_seq(rng, N, T, F)])
    assert ops.count("LSTM") == 1 and ops.count("GRU") == 1


def test_bidirectional_initial_states(rng):
    x, states = Input((T, F)), [Input((U,)) for _ in range(4)]
    y = Bidirectional(LSTM(U, return_sequences=True, return_state=True))(x, initial_state=states)
    model = kconvert.Model([x, *states], y)
    _randomize(model, rng)
    _check(model, [_seq(rng, N, T, F), *[_seq(rng, N, U) for _ in range(4)]])


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("options", SEQ_OPTIONS + [{"return_sequences": True, "go_backwards": True}])
@pytest.mark.parametrize("cls", CELLS)
def test_masked_layers_from_embedding(rng, cls, options):
    """Pre-, post-padding, holes and an all-padding row: the steps are compacted, no loop."""
    tok = Input((T,), dtype="int32")
    h0 = Input((U,))
    e = Embedding(VOCAB, F, mask_zero=True)(tok)
    out = _rnn(cls, **options)(e, initial_state=h0 if cls != "LSTM" else [h0, h0])
    model = kconvert.Model([tok, h0], out)
    _randomize(model, rng)
    ops = _check(model, [_tokens(rng), _seq(rng, N, U)])
    assert ops.count(NATIVE[cls]) == 1 and "TopK" in ops


@pytest.mark.parametrize("cls", CELLS)
def test_masked_bidirectional(rng, cls):
    tok = Input((T,), dtype="int32")
    e = Embedding(VOCAB, F, mask_zero=True)(tok)
    seqs = Bidirectional(_rnn(cls, return_sequences=True), merge_mode=None)(e)
    last = Bidirectional(_rnn(cls, return_state=True), merge_mode="ave")(e)
    model = kconvert.Model(tok, [*seqs, *last])
    _randomize(model, rng)
    ops = _check(model, [_tokens(rng)])
    assert ops.count(NATIVE[cls]) == 2


def test_masking_layer_mask_and_zero_output_for_mask(rng):
    x = Input((T, F))
    m = Masking(0.0)(x)
    a = LSTM(U, return_sequences=True, zero_output_for_mask=True)(m)
    b = GRU(U, go_backwards=True, zero_output_for_mask=True)(m)
    c = GRU(U, zero_output_for_mask=True)(m)
    model = kconvert.Model(x, [a, b, c])
    _randomize(model, rng)
    xv = _seq(rng, N, T, F)
    xv[0, 5:] = 0.0
    xv[1, :2] = 0.0
    xv[2, 3] = 0.0
    xv[3, 0] = 0.0
    xv[4, -1] = 0.0
    _check(model, [xv])


def test_masked_stack_and_opsets(rng):
    """A masked sequence output carries its mask into the next layer; opset 13 and the newest both work."""
    tok = Input((T,), dtype="int32")
    e = Embedding(VOCAB, F, mask_zero=True)(tok)
    y = LSTM(U, return_sequences=True, go_backwards=True)(e)
    y = Bidirectional(GRU(4, return_sequences=True))(y)
    y = SimpleRNN(3)(y)
    model = kconvert.Model(tok, y)
    _randomize(model, rng)
    for opset in (13, max_opset()):
        _check(model, [_tokens(rng)], opset=opset)


def test_masked_cudnn_is_an_export_error():
    tok = Input((T,), dtype="int32")
    y = CuDNNLSTM(U, name="cudnn")(Embedding(VOCAB, F, mask_zero=True)(tok))
    with pytest.raises(ExportError, match="cudnn"):
        lower_model(kconvert.Model(tok, y))


# ---------------------------------------------------------------------------------------------- stateful


def _state_feeds(proto, model_feeds, states):
    names = [i.name for i in proto.graph.input]
    return dict(zip(names, [*model_feeds, *states]))


def test_stateful_states_are_graph_inputs_and_outputs(rng):
    x = Input(batch_shape=(N, T, F))
    a = LSTM(U, stateful=True, return_sequences=True, name="lstm")(x)
    b = Bidirectional(GRU(4, stateful=True), name="bi")(x)
    model = kconvert.Model(x, [a, b])
    _randomize(model, rng)
    proto, ops = _export(model)
    in_names = [i.name for i in proto.graph.input]
    out_names = [o.name for o in proto.graph.output]
    state_names = ["lstm/state_h", "lstm/state_c", "bi/forward_state_h", "bi/backward_state_h"]
    assert in_names[1:] == [s + "_in" for s in state_names]
    assert out_names[2:] == [s + "_out" for s in state_names]
    assert [d.dim_value for d in proto.graph.input[1].type.tensor_type.shape.dim] == [N, U]
    assert ops.count("LSTM") == 1 and ops.count("GRU") == 1
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model.reset_states()
    states = [np.zeros((N, U), np.float32)] * 2 + [np.zeros((N, 4), np.float32)] * 2
    for _ in range(3):  # the states carry over between calls, as in the stateful Keras model
        xv = _seq(rng, N, T, F)
        ref = numpy_engine.predict(model._graph, [xv])
        outs = sess.run(None, _state_feeds(proto, [xv], states))
        for y, r in zip(outs[:2], ref):
            assert_close(y, r)
        states = outs[2:]
    for layer, got in zip([model.layers[1], model.layers[2].forward_layer, model.layers[2].backward_layer],
                          [states[:2], states[2:3], states[3:]]):
        for s, r in zip(got, layer.states):
            assert_close(s, r)


def test_stateful_masked(rng):
    tok = Input(batch_shape=(N, T), dtype="int32")
    y = GRU(U, stateful=True, name="gru")(Embedding(VOCAB, F, mask_zero=True)(tok))
    model = kconvert.Model(tok, y)
    _randomize(model, rng)
    proto, _ = _export(model)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model.reset_states()
    state = np.zeros((N, U), np.float32)
    for _ in range(2):
        tv = _tokens(rng)
        ref = numpy_engine.predict(model._graph, [tv])[0]
        y, state = sess.run(None, _state_feeds(proto, [tv], [state]))
        assert_close(y, ref)
    assert_close(state, model.layers[2].states[0])


# ---------------------------------------------------------------------------------------------- real tf_keras


def _tf_weights(model, rng):
    out = []
    for w in model.weights:
        shape = tuple(w.shape)
        std = 1.2 / np.sqrt(shape[0]) if len(shape) >= 2 else 0.4
        out.append(rng.normal(0.0, std, shape).astype(np.float32))
    model.set_weights(out)


def test_against_tf_keras(tfk, rng, tmp_path):
    """LSTM, GRU (both reset_after), Bidirectional and masked layers saved by tf_keras, exported, run in
    onnxruntime: equal to tf_keras's predictions on the same weights."""
    L = tfk.layers
    x = L.Input((T, F), name="x")
    tok = L.Input((T,), name="tok", dtype="int32")
    emb = L.Embedding(VOCAB, F, mask_zero=True)(tok)
    outs = [
        L.LSTM(U, return_sequences=True, recurrent_activation="hard_sigmoid")(x),
        L.GRU(U, go_backwards=True, return_sequences=True)(x),
        L.GRU(U, reset_after=False)(x),
        L.Bidirectional(L.LSTM(U, return_sequences=True), merge_mode="sum")(x),
        L.LSTM(U, return_sequences=True)(emb),
        L.GRU(U, go_backwards=True, return_sequences=True, reset_after=False)(emb),
        L.Bidirectional(L.GRU(U, return_sequences=True))(emb),
        L.Bidirectional(L.SimpleRNN(U))(emb),
    ]
    ref_model = tfk.Model([x, tok], outs)
    _tf_weights(ref_model, rng)
    path = str(tmp_path / "rnn.h5")
    ref_model.save(path)
    feeds = [_seq(rng, N, T, F), _tokens(rng)]
    ref = ref_model.predict(feeds, verbose=0)
    model = kconvert.load_model(path)
    proto, ops = _export(model)
    assert ops.count("LSTM") == 3 and ops.count("GRU") == 4 and ops.count("RNN") == 1
    got = _run(proto, feeds)
    for i, (y, r) in enumerate(zip(got, ref)):
        assert float(np.std(r)) > 0.05
        assert_close(y, r, what=f"output {i}")
