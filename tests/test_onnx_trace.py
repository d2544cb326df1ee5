"""The generic ONNX lowering (converters/onnx_lowering/trace.py): layers without a registered lowering are
exported by tracing their numpy `call`.

Every model is exported (onnx.checker full check), run by onnxruntime at two batch sizes (5 and 2) and at the
lowest and highest opset, and compared with kconvert's numpy engine and, where the model comes from a real
framework, with that framework's predictions. Layers that have an explicit lowering too are traced here with
their registry entry removed, so that the tracer itself is what is checked.
"""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert import backend as KB
from kconvert import layers as L
from kconvert.converters.onnx_lowering import lower_model, max_opset, registry
from kconvert.errors import ExportError
from kconvert.models import Input, Model
from kconvert.ops import coercion
from kconvert.runtime import numpy_engine

# the Lambdas below are written against the global `K`, as users write them: tf_keras.backend while tf_keras
# builds and runs the model (set by the fixture), kconvert.backend when kconvert reads the bytecode back
K = None


def export_and_run(model, xs, ref=None, opsets=(13, None), rtol_scale=1.0) -> onnx.ModelProto:
    """Export at each opset; run batches [:5] and [5:7] in onnxruntime; compare with the numpy engine (and ref)."""
    proto = None
    for opset in opsets:
        opset = opset or max_opset()
        proto = lower_model(model, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        runs = []
        for sl in (slice(0, 5), slice(5, 7)):
            batch = [x[sl] for x in xs]
            got = sess.run(None, dict(zip(names, batch)))
            want = numpy_engine.predict(model._graph, batch)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert_close(g, w, rtol_scale, what=f"opset {opset} batch {sl} vs numpy engine")
            runs.append(got)
        if ref is not None:
            for i, r in enumerate(ref if isinstance(ref, list) else [ref]):
                assert_close(np.concatenate([runs[0][i], runs[1][i]]), r, rtol_scale, what=f"opset {opset} vs reference")
    return proto


def op_counts(proto) -> Counter:
    return Counter(n.op_type for n in proto.graph.node)


def randomize(model, rng, scale=0.3):
    model.set_weights([rng.normal(0.0, scale, w.shape).astype(np.float32) for w in model.get_weights()])


@pytest.fixture
def no_lowering(monkeypatch):
    """Remove registered lowerings, so that those layers are traced."""
    def remove(*names):
        for n in names:
            monkeypatch.delitem(registry.LOWERINGS, n, raising=False)
    return remove


# ---------------------------------------------------------------------------------------------- Lambda


def test_lambda_written_with_numpy_and_backend():
    rng = np.random.default_rng(0)
    a, b = Input((6,)), Input((7, 5, 3))
    y1 = L.Lambda(lambda x: x[:, 1:4] * 2 + KB.mean(x, axis=-1, keepdims=True), name="slice_mean")(a)

    def mixed(t):
        u = np.transpose(t, (0, 2, 1, 3))[..., ::-1, None, :2]  # (N, 5, 7, 1, 2)
        u = np.where(u > 0.1, np.clip(u, -0.5, 0.8), np.square(u) - 0.25).astype(t.dtype)
        flat = np.reshape(u, (t.shape[0], -1))  # the batch size read from the shape: a 0 in the Reshape
        s = np.einsum("nhwc->nc", t) / np.float32(35.0)
        truth = np.any(np.maximum(t, 0), axis=-1).all(axis=2).astype(t.dtype)  # any/all of floats: nonzero
        return np.concatenate([flat, np.exp(-s), KB.sigmoid(np.sum(t, axis=(1, 2))), truth], axis=-1)

    y2 = L.Lambda(mixed, name="mixed")(b)
    model = Model([a, b], [y1, y2])
    xs = [rng.normal(0, 1, (7, 6)).astype(np.float32), rng.normal(0, 1, (7, 7, 5, 3)).astype(np.float32)]
    proto = export_and_run(model, xs)
    ops = op_counts(proto)
    assert ops["Sigmoid"] == 1 and ops["Einsum"] == 1 and ops["Where"] == 1
    assert "Shape" not in ops  # x.shape[0] in the reshape target became Reshape's "copy this dim"


def antirectifier(x):
    x -= K.mean(x, axis=-1, keepdims=True)
    return K.concatenate([K.relu(x), K.relu(-x)], axis=-1)


def gate(ab):
    return ab[0] * K.sigmoid(ab[1]) + K.square(ab[1][:, ::-1])


def pooled(t):
    return K.clip(K.max(t, axis=1), -0.5, 0.5) * K.pow(K.abs(t[:, 0]) + 1.0, 2)


def test_lambda_from_tf_keras_h5(tfk, tmp_path):
    """tf_keras Lambdas (marshalled bytecode, backend functions) -> .h5 -> kconvert -> ONNX == tf_keras."""
    global K
    K = tfk.backend
    Lk = tfk.layers
    inp = tfk.Input((5, 7, 3))
    x = Lk.Lambda(lambda t: K.resize_images(t, 2, 3, "channels_last", interpolation="bilinear"), name="up")(inp)
    x = Lk.Conv2D(4, 3, activation="tanh")(x)
    x = Lk.Lambda(antirectifier, name="anti")(x)
    flat = Lk.Lambda(lambda t: K.reshape(t, (-1, 8 * 19 * 8)), name="flat")(x)
    out = Lk.Lambda(gate, name="gate")([Lk.Dense(6)(flat), Lk.Dense(6)(flat)])
    out2 = Lk.Flatten()(Lk.Lambda(pooled, name="pooled")(x))
    model = tfk.Model(inp, [out, out2])
    rng = np.random.default_rng(3)
    randomize(model, rng, 0.1)
    model.save(tmp_path / "lam.h5")
    xs = [rng.normal(0.0, 1.0, (7, 5, 7, 3)).astype(np.float32)]
    ref = model.predict(xs[0], verbose=0)
    ours = kconvert.load_model(tmp_path / "lam.h5", safe_mode=False)
    proto = export_and_run(ours, xs, ref=ref)
    ops = op_counts(proto)
    assert ops["Resize"] == 1 and ops["Sigmoid"] == 1 and not {"Loop", "Scan"} & set(ops)


# ---------------------------------------------------------------------------------------------- TF and Keras 3 ops


def test_tf_op_lambda_layers(tfk, tmp_path):
    """tf.* calls on KerasTensors (TFOpLambda / SlicingOpLambda) from a real tf_keras .h5."""
    import tensorflow as tf

    inp = tfk.Input((6, 5))
    x = tfk.layers.Dense(8)(inp)
    s = tf.math.reduce_sum(x, axis=-1, keepdims=True)
    r = tf.nn.relu6(x * 3.0)
    c = tf.transpose(tf.concat([r, s], axis=-1), perm=[0, 2, 1])  # (N, 9, 6)
    f = tf.reshape(c[:, 1:, ::2], (-1, 24))
    m = tf.math.reduce_max(x, axis=1) - tf.math.reduce_min(x, axis=1)
    out = tfk.layers.Dense(3)(f) + tf.math.reduce_mean(f, axis=-1, keepdims=True)
    out2 = tf.math.maximum(tf.expand_dims(m, 1), tf.math.sigmoid(x)[:, :1])
    model = tfk.Model(inp, [out, out2])
    rng = np.random.default_rng(5)
    randomize(model, rng, 0.4)
    model.save(tmp_path / "tfops.h5")
    xs = [rng.normal(0, 1, (7, 6, 5)).astype(np.float32)]
    ref = model.predict(xs[0], verbose=0)
    ours = kconvert.load_model(tmp_path / "tfops.h5")
    kinds = {type(la).__name__ for la in ours.layers}
    assert {"TFOpLambda", "SlicingOpLambda"} <= kinds
    proto = export_and_run(ours, xs, ref=ref)
    assert op_counts(proto)["Clip"] == 1  # relu6


def test_keras3_operations(tmp_path):
    """`x + y`, keras.ops.mean, concatenate, reshape, transpose, softmax, slicing in a Keras 3 .keras file."""
    import keras

    a, b = keras.Input((6, 5)), keras.Input((6, 5))
    z = keras.layers.Dense(5)(a) + b
    m = keras.ops.mean(z, axis=1, keepdims=True)
    w = keras.ops.concatenate([z - m, keras.ops.relu(z) * 2.0], axis=-1)
    out = keras.layers.Dense(4)(keras.ops.reshape(w, (-1, 60)))
    out2 = keras.ops.softmax(keras.ops.transpose(z, (0, 2, 1)))[:, 1:3]
    model = keras.Model([a, b], [out, out2])
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0, 0.4, w_.shape).astype(np.float32) for w_ in model.get_weights()])
    model.save(tmp_path / "ops.keras")
    xs = [rng.normal(0, 1, (7, 6, 5)).astype(np.float32) for _ in range(2)]
    ref = [np.asarray(r) for r in model.predict(xs, verbose=0)]
    ours = kconvert.load_model(tmp_path / "ops.keras")
    assert any(getattr(la, "keras3_operation", False) for la in ours.layers)
    proto = export_and_run(ours, xs, ref=ref)
    assert op_counts(proto)["Softmax"] == 1


# ---------------------------------------------------------------------------------------------- activations


def test_keras3_activations_fixture_traced(no_lowering):
    """The Keras 3 fixture with every activation (hard/soft shrink, sparse_plus, sparse_sigmoid, squareplus,
    sparsemax, ...), its Activation layers traced: matches the outputs Keras 3 stored."""
    no_lowering("Activation")
    model = kconvert.load_model("fixtures/keras3/k3_activations.h5")
    io = np.load("fixtures/keras3/k3_activations_io.npz")
    x = io["input_0"]
    for opset in (13, max_opset()):
        proto = lower_model(model, opset=opset)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})
        for i, g in enumerate(got):
            assert_close(g, io[f"output_{i}"], what=f"opset {opset} output {i}")
    ops = op_counts(proto)
    assert ops["TopK"] == 1 and ops["CumSum"] == 1  # sparsemax's sort and cumulative sum, natively


def test_glu_and_custom_activation(no_lowering):
    import keras

    rng = np.random.default_rng(11)
    inp = Input((4, 6))
    y = L.Lambda(L.activations.get("glu"), name="glu")(inp)
    y2 = L.Activation(lambda t: t * np.tanh(np.log1p(np.exp(t))), name="custom")(inp)  # mish, by hand
    model = Model(inp, [y, y2])
    no_lowering("Activation")
    xs = [rng.normal(0, 2, (7, 4, 6)).astype(np.float32)]
    ref = [np.asarray(keras.activations.glu(xs[0])), np.asarray(keras.activations.mish(xs[0]))]
    export_and_run(model, xs, ref=ref)


# ---------------------------------------------------------------------------------------------- layers


def test_normalization_and_preprocessing_layers_traced(tfk, tmp_path, no_lowering):
    """GroupNormalization, Rescaling and Normalization (explicit lowerings removed) against tf_keras."""
    no_lowering("GroupNormalization", "Rescaling", "Normalization")
    inp = tfk.Input((5, 7, 6))
    x = tfk.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = tfk.layers.GroupNormalization(groups=3, epsilon=1e-3)(x)
    x = tfk.layers.Normalization(axis=-1, mean=[0.1, -0.2, 0.3, 0.0, 0.5, -0.1],
                                 variance=[1.5, 0.7, 2.0, 1.0, 0.3, 0.9])(x)
    model = tfk.Model(inp, x)
    rng = np.random.default_rng(13)
    gn = model.layers[2]
    gn.set_weights([rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(0, 0.3, 6).astype(np.float32)])
    model.save(tmp_path / "norm.h5")
    xs = [rng.uniform(0, 255, (7, 5, 7, 6)).astype(np.float32)]
    ref = model.predict(xs[0], verbose=0)
    ours = kconvert.load_model(tmp_path / "norm.h5")
    proto = export_and_run(ours, xs, ref=ref)
    assert op_counts(proto)["ReduceMean"] >= 2  # the group moments


def test_application_layers_traced(no_lowering):
    no_lowering("CustomScaleLayer", "LayerScale", "StochasticDepth")
    rng = np.random.default_rng(17)
    a, b = Input((5, 7, 4)), Input((5, 7, 4))
    x = L.CustomScaleLayer(scale=0.17)([a, b])
    ls = L.LayerScale(init_values=0.5, projection_dim=4)
    x = L.StochasticDepth(0.3)(ls(x))
    model = Model([a, b], x)
    ls.gamma.value[...] = rng.uniform(0.5, 1.5, 4)
    xs = [rng.normal(0, 1, (7, 5, 7, 4)).astype(np.float32) for _ in range(2)]
    ref = (xs[0] + xs[1] * np.float32(0.17)) * ls.gamma.value
    export_and_run(model, xs, ref=ref)


class NumpyGate(L.Layer):
    """A custom layer written with numpy: tanh(xW + b) * sigmoid(reversed) + mean(x) (the twin of TFGate)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1], self.units), "glorot_uniform")
        self.b = self.add_weight("b", (self.units,))

    def call(self, x):
        h = x @ self.w.value + self.b.value
        return np.tanh(h) / (1.0 + np.exp(-h[..., ::-1])) + x.mean(axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_numpy_layer_from_custom_objects(tfk, tmp_path):
    import tensorflow as tf

    class TFGate(tfk.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))
            self.b = self.add_weight(name="b", shape=(self.units,))

        def call(self, x):
            h = tf.matmul(x, self.w) + self.b
            return tf.tanh(h) * tf.sigmoid(h[..., ::-1]) + tf.reduce_mean(x, axis=-1, keepdims=True)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    inp = tfk.Input((3, 5))
    model = tfk.Model(inp, TFGate(4, name="gate")(tfk.layers.Dense(5)(inp)))
    rng = np.random.default_rng(19)
    randomize(model, rng, 0.5)
    model.save(tmp_path / "custom.h5")
    xs = [rng.normal(0, 1, (7, 3, 5)).astype(np.float32)]
    ref = model.predict(xs[0], verbose=0)
    ours = kconvert.load_model(tmp_path / "custom.h5", custom_objects={"TFGate": NumpyGate})
    export_and_run(ours, xs, ref=ref)


# ---------------------------------------------------------------------------------------------- sizes known at run time


def test_sizes_read_from_the_input_shape():
    """Constants computed from x.shape (batch and a None time axis) are computed from Shape() at run time."""
    rng = np.random.default_rng(23)
    inp = Input((None, 4))

    def fn(x):
        n, steps = x.shape[0], x.shape[1]
        pairs = np.reshape(x, (n * steps // 2, 8))  # batch * time / 2 rows: no 0/-1 can say that
        back = np.reshape(pairs * 2.0, (n, steps, 4))
        lead = np.zeros((n, 1, 4), np.float32) + 0.5 + x[:, :1] / steps  # a constant as large as the batch
        out = np.concatenate([lead, back[:, :steps - 1]], axis=1)
        out[:, 0, 1:3] = x[:, -1, :2]  # in-place write into a slice
        return out + np.tile(x.mean(axis=1, keepdims=True), (1, steps, 1))

    model = Model(inp, L.Lambda(fn, output_shape=lambda s: s)(inp))
    for steps in (6, 10):
        xs = [rng.normal(0, 1, (7, steps, 4)).astype(np.float32)]
        proto = export_and_run(model, xs)
    assert op_counts(proto)["Shape"] >= 1


# ---------------------------------------------------------------------------------------------- masks


class ZeroMask(L.Layer):
    """Scales its input and masks the timesteps whose first feature is 0 (a mask made by a traced layer)."""

    supports_masking = True

    def call(self, x):
        return x * 2.0

    def compute_mask(self, inputs, mask=None):
        return np.not_equal(inputs[..., 0], 0)


def test_mask_made_by_a_traced_layer_reaches_masked_pooling():
    rng = np.random.default_rng(29)
    inp = Input((6, 3))
    model = Model(inp, L.GlobalAveragePooling1D()(ZeroMask()(inp)))
    x = rng.normal(0, 1, (7, 6, 3)).astype(np.float32)
    x[:, 2:5, 0] = 0.0
    ref = np.stack([x[i][x[i, :, 0] != 0].mean(axis=0) * 2 for i in range(7)])
    export_and_run(model, [x], ref=ref)


def test_masked_input_to_a_traced_call_taking_a_mask_is_refused():
    class Pool(L.Layer):
        supports_masking = True

        def call(self, x, mask=None):
            return x.sum(axis=1)

        def compute_output_shape(self, s):
            return (s[0], s[2])

    inp = Input((6,))
    x = L.Embedding(5, 3, mask_zero=True)(inp)
    model = Model(inp, Pool(name="pool")(x))
    with pytest.raises(ExportError, match="pool.*mask"):
        lower_model(model)


# ---------------------------------------------------------------------------------------------- what cannot be traced


@pytest.mark.parametrize("fn, reason", [
    (lambda x: x * 2 if np.any(x > 0) else x, "branches on a tensor's value"),
    (lambda x: x[x > 0].sum(keepdims=True) + x, "boolean tensor"),
    (lambda x: x * np.float32(1.0 / x.shape[0]), "float constant.*batch size"),
    (lambda x: np.fft.fft(x).real, "numpy.fft"),
    (lambda x: x + float(x[0, 0]), "Python number"),
])
def test_untraceable_calls_name_the_layer_and_the_reason(fn, reason):
    inp = Input((4,))
    model = Model(inp, L.Lambda(fn, name="bad", output_shape=lambda s: s)(inp))
    with pytest.raises(ExportError, match=f"layer 'bad'.*Lambda.*cannot be traced.*{reason}"):
        lower_model(model)
    assert np.asarray is coercion.asarray and np.array is coercion.array  # numpy's functions are restored
