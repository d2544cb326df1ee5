"""ONNX lowerings of attention, TimeDistributed, preprocessing, applications layers, LocallyConnected,
GroupNormalization, Keras 1 Merge and ConvLSTM: exported, checked, run in onnxruntime at a batch size not used to
build, and compared with the numpy engine (and with real tf_keras where the brief asks)."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert.layers as kl
from kconvert.converters.onnx_lowering import lower_model, lowering_for
from kconvert.errors import ExportError
from kconvert.models import Input, Model, model_from_json
from kconvert.runtime.numpy_engine import predict as numpy_predict

BATCH = 5


def randomize(model, rng, scale=0.4):
    """Random weights (variances positive) so that activations are neither dead nor saturated."""
    for w in model.weights:
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif w.value.dtype.kind == "f":
            w.assign(rng.normal(0.0, scale, w.shape))


def run_onnx(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, feeds)))


def check(model, feeds, opset=17, rtol_scale=1.0, **kwargs):
    """Export, full-check, run in onnxruntime; outputs equal the numpy engine's. Returns (proto, outputs)."""
    feeds = feeds if isinstance(feeds, list) else [feeds]
    proto = lower_model(model, opset=opset, **kwargs)
    onnx.checker.check_model(proto, full_check=True)
    got = run_onnx(proto, feeds)
    ref = numpy_predict(model._graph, feeds)
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_close(g, r, rtol_scale, what=f"output {i}")
    return proto, got


def op_counts(proto) -> Counter:
    return Counter(n.op_type for n in proto.graph.node)


def normal(rng, shape, scale=1.0):
    return rng.normal(0.0, scale, shape).astype("float32")


# ---------------------------------------------------------------------------------------------- EinsumDense


@pytest.mark.parametrize("kwargs,shape", [
    ({"equation": "abc,cde->abde", "output_shape": (None, 3, 2), "bias_axes": "de", "activation": "tanh"}, (4, 7)),
    ({"equation": "...b,bc->...c", "output_shape": 4, "bias_axes": "c"}, (5, 6)),
    ({"equation": "ab...,bc->ac...", "output_shape": 4, "bias_axes": "c"}, (5, 3)),
])
def test_einsum_dense(rng, kwargs, shape):
    x = Input(shape)
    model = Model(x, kl.EinsumDense(**kwargs)(x))
    randomize(model, rng)
    proto, _ = check(model, normal(rng, (BATCH, *shape)))
    assert op_counts(proto)["Einsum"] == 1


# ---------------------------------------------------------------------------------------------- MultiHeadAttention


def _tf_to_kconvert(tf_model, rng):
    for w in tf_model.weights:
        w.assign(rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32"))
    ours = model_from_json(tf_model.to_json())
    ours.set_weights(tf_model.get_weights())
    return ours


def test_multi_head_attention_vs_tf_keras(tfk, rng):
    """Cross attention with a key, an attention_mask input, the causal mask and the scores as a second output."""
    L = tfk.layers
    q, v, k, m = L.Input((5, 7)), L.Input((4, 6)), L.Input((4, 3)), L.Input((5, 4))
    out = L.MultiHeadAttention(2, 3, value_dim=4, output_shape=(3, 2), name="mha")(
        q, v, key=k, attention_mask=m, return_attention_scores=True)
    tf_model = tfk.Model([q, v, k, m], list(out))
    ours = _tf_to_kconvert(tf_model, rng)
    feeds = [normal(rng, (BATCH, 5, 7)), normal(rng, (BATCH, 4, 6)), normal(rng, (BATCH, 4, 3)),
             (rng.random((BATCH, 5, 4)) > 0.3).astype("float32")]
    proto, got = check(ours, feeds)
    ref = tf_model.predict(feeds, verbose=0)
    for g, r in zip(got, ref):
        assert_close(g, r)
    counts = op_counts(proto)
    assert counts["Softmax"] == 1 and counts["Einsum"] >= 2 and "Attention" not in counts


def test_multi_head_attention_causal_and_keras_masks_vs_tf_keras(tfk, rng):
    """Query and value masks from Embedding(mask_zero=True) with use_causal_mask; fully masked rows."""
    L = tfk.layers
    iq, iv = L.Input((5,)), L.Input((4,))
    eq = L.Embedding(9, 7, mask_zero=True)(iq)
    ev = L.Embedding(9, 6, mask_zero=True)(iv)
    out = L.MultiHeadAttention(2, 3, name="mha")(eq, ev, use_causal_mask=True, return_attention_scores=True)
    pooled = L.GlobalAveragePooling1D()(out[0])  # the attention output carries the query's mask
    tf_model = tfk.Model([iq, iv], [pooled, out[1]])
    ours = _tf_to_kconvert(tf_model, rng)
    ids_q = np.array([[1, 2, 0, 0, 3], [4, 5, 6, 7, 8], [0, 1, 1, 0, 2], [3, 3, 0, 1, 1], [2, 0, 0, 0, 0]], "float32")
    ids_v = np.array([[0, 2, 0, 0], [3, 4, 5, 0], [1, 1, 1, 1], [0, 0, 0, 0], [5, 0, 6, 0]], "float32")
    _, got = check(ours, [ids_q, ids_v])
    for g, r in zip(got, tf_model.predict([ids_q, ids_v], verbose=0)):
        assert_close(g, r)


def test_multi_head_attention_two_attention_axes(rng):
    x = Input((3, 4, 5))
    out = kl.MultiHeadAttention(2, 3, attention_axes=(1, 2))(x, x, return_attention_scores=True)
    model = Model(x, list(out))
    randomize(model, rng)
    proto, _ = check(model, normal(rng, (BATCH, 3, 4, 5)))
    assert op_counts(proto)["Softmax"] == 1


def test_multi_head_attention_keras3_masking_and_unknown_lengths(rng):
    """Keras 3's two masked softmaxes (fused: uniform fully-masked rows; unfused: zeroed), sliding_window and
    causal masks over sequences of unknown length."""
    from kconvert.layers.base import keras_dialect

    q, v, m = Input((None, 6)), Input((None, 5)), Input((None, None), dtype="bool")
    with keras_dialect(3):
        fused = kl.MultiHeadAttention(2, 3, sliding_window=2)(q, v, attention_mask=m, use_causal_mask=True)
        unfused = kl.MultiHeadAttention(2, 4, value_dim=3)(q, v, attention_mask=m, return_attention_scores=True)
    model = Model([q, v, m], [fused, *unfused])
    randomize(model, rng, 0.6)
    mask = rng.random((BATCH, 7, 4)) > 0.4
    mask[1, 2] = False  # a fully masked row
    check(model, [normal(rng, (BATCH, 7, 6)), normal(rng, (BATCH, 4, 5)), mask])


def test_multi_head_attention_tf_keras_robust_masking(rng):
    q, v, m = Input((5, 6)), Input((4, 6)), Input((5, 4))
    out = kl.MultiHeadAttention(3, 2, softmax_robust_masking=True, use_bias=False)(q, v, attention_mask=m)
    model = Model([q, v, m], out)
    randomize(model, rng, 0.6)
    mask = (rng.random((BATCH, 5, 4)) > 0.4).astype("float32")
    mask[0, 1] = 0.0
    check(model, [normal(rng, (BATCH, 5, 6)), normal(rng, (BATCH, 4, 6)), mask])


# ---------------------------------------------------------------------------------------------- Attention


@pytest.mark.parametrize("cls,kwargs", [
    ("Attention", {}), ("Attention", {"use_scale": True, "score_mode": "concat"}),
    ("Attention", {"use_scale": True}), ("AdditiveAttention", {}), ("AdditiveAttention", {"use_scale": False}),
])
def test_dense_attention(rng, cls, kwargs):
    q, v, k = Input((5, 4)), Input((3, 4)), Input((3, 4))
    out = getattr(kl, cls)(**kwargs)([q, v, k], return_attention_scores=True, use_causal_mask=True)
    model = Model([q, v, k], list(out))
    randomize(model, rng, 0.7)
    feeds = [normal(rng, (BATCH, 5, 4)), normal(rng, (BATCH, 3, 4)), normal(rng, (BATCH, 3, 4))]
    proto, _ = check(model, feeds)
    assert op_counts(proto)["Softmax"] == 1


def test_dense_attention_keras_masks(rng):
    iq, iv = Input((None,)), Input((None,))
    eq = kl.Embedding(9, 6, mask_zero=True)(iq)
    ev = kl.Embedding(9, 6, mask_zero=True)(iv)
    att = kl.Attention(causal=True)([eq, ev])
    model = Model([iq, iv], [att, kl.GlobalAveragePooling1D()(att)])
    randomize(model, rng, 0.7)
    ids_q = np.array([[1, 2, 0, 0, 3], [4, 5, 6, 7, 8], [0, 1, 1, 0, 2], [3, 3, 0, 1, 1], [2, 0, 0, 0, 1]], "float32")
    ids_v = np.array([[0, 2, 0, 0], [3, 4, 5, 0], [1, 1, 1, 1], [0, 7, 0, 3], [5, 0, 6, 0]], "float32")
    check(model, [ids_q, ids_v])


# ---------------------------------------------------------------------------------------------- TimeDistributed


def test_time_distributed_conv2d_vs_tf_keras(tfk, rng):
    L = tfk.layers
    x = L.Input((3, 9, 7, 2))
    y = L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu"))(x)
    y = L.TimeDistributed(L.MaxPooling2D(2))(y)
    y = L.TimeDistributed(L.Flatten())(y)
    y = L.TimeDistributed(L.Dense(5))(y)
    tf_model = tfk.Model(x, y)
    ours = _tf_to_kconvert(tf_model, rng)
    feed = normal(rng, (BATCH, 3, 9, 7, 2))
    proto, got = check(ours, feed)
    assert_close(got[0], tf_model.predict(feed, verbose=0))
    counts = op_counts(proto)
    assert counts["Conv"] == 1 and counts["MaxPool"] == 1
    assert counts["Transpose"] == 2  # into NCHW once, back before the flattening


def test_time_distributed_nested_model_and_unknown_steps(rng):
    inner_in = Input((6,))
    inner = Model(inner_in, kl.Dense(3, activation="tanh")(kl.Dense(4)(inner_in)))
    x = Input((None, 6))
    y = Input((None, 5, 4, 2))
    conv = kl.Conv3D(3, 1)(y)  # kept channels-first: time is not the second physical axis
    model = Model([x, y], [kl.TimeDistributed(inner)(x), kl.TimeDistributed(kl.Dense(2))(conv)])
    randomize(model, rng)
    check(model, [normal(rng, (BATCH, 7, 6)), normal(rng, (BATCH, 6, 5, 4, 2))])


def test_time_distributed_of_a_layer_without_lowering_uses_the_fallback(rng):
    x = Input((3, 4, 5))
    model = Model(x, kl.TimeDistributed(kl.Lambda(lambda t: t[:, 1:3] * 2.0 + 1.0))(x))
    proto, _ = check(model, normal(rng, (BATCH, 3, 4, 5)))
    assert op_counts(proto)["Reshape"] == 2


def test_time_distributed_passes_the_mask(rng):
    x = Input((4,))
    e = kl.Embedding(7, 5, mask_zero=True)(x)
    y = kl.TimeDistributed(kl.Dense(3))(e)
    model = Model(x, kl.GlobalAveragePooling1D()(y))
    randomize(model, rng)
    check(model, np.array([[1, 0, 2, 3], [0, 0, 4, 5], [6, 6, 6, 0], [1, 2, 3, 4], [0, 1, 0, 1]], "float32"))


# ---------------------------------------------------------------------------------------------- preprocessing


def test_rescaling_and_normalization_vs_tf_keras(tfk, rng):
    L = tfk.layers
    x = L.Input((5, 4, 3))
    y = L.Rescaling([0.5, 2.0, -1.0], offset=0.25)(x)
    y = L.Normalization(axis=-1, mean=[0.1, 0.2, -0.3], variance=[1.5, 0.5, 2.0])(y)
    y = L.Conv2D(2, 3)(y)
    y = L.Normalization(axis=(1, 3), mean=rng.normal(size=(3, 2)), variance=rng.uniform(0.5, 2, (3, 2)),
                        invert=True)(y)
    tf_model = tfk.Model(x, y)
    ours = _tf_to_kconvert(tf_model, rng)
    feed = normal(rng, (BATCH, 5, 4, 3))
    _, got = check(ours, feed)
    assert_close(got[0], tf_model.predict(feed, verbose=0))


@pytest.mark.parametrize("kwargs", [
    {"interpolation": "bilinear"}, {"interpolation": "nearest"}, {"interpolation": "bicubic"},
    {"interpolation": "area"}, {"interpolation": "bilinear", "crop_to_aspect_ratio": True},
])
def test_resizing(rng, kwargs):
    x = Input((9, 7, 3))
    model = Model(x, kl.Resizing(5, 11, **kwargs)(x))
    check(model, normal(rng, (BATCH, 9, 7, 3)))


def test_resizing_pad_to_aspect_ratio_channels_first_and_center_crop(rng):
    from kconvert.layers.base import keras_dialect

    x = Input((3, 9, 7))
    with keras_dialect(3):
        y = kl.Resizing(6, 8, pad_to_aspect_ratio=True, fill_value=0.5, data_format="channels_first")(x)
    z = kl.CenterCrop(4, 5)(kl.Permute((2, 3, 1))(y))
    w = kl.CenterCrop(7, 8)(kl.Permute((2, 3, 1))(x))  # smaller than the crop: smart_resize
    model = Model(x, [z, w])
    check(model, normal(rng, (BATCH, 3, 9, 7)))


def test_inference_identities_and_uint8_images(rng):
    x = Input((6, 5, 3), dtype="uint8")
    y = kl.RandomFlip()(x)
    y = kl.Rescaling(1 / 255.0)(y)
    y = kl.Dropout(0.5)(kl.GaussianNoise(0.3)(y))
    y = kl.SpatialDropout2D(0.2)(y)
    model = Model(x, y)
    feed = rng.integers(0, 256, (BATCH, 6, 5, 3)).astype("uint8")
    for optimize in (True, False):
        check(model, feed, optimize=optimize)


# ---------------------------------------------------------------------------------------------- applications


def test_applications_layers(rng):
    x = Input((5, 6, 4))
    a = kl.Conv2D(4, 3, padding="same")(x)
    b = kl.LayerScale(0.1, 4)(a)
    y = kl.CustomScaleLayer(0.17)([a, kl.StochasticDepth(0.2)(b)])
    model = Model(x, y)
    randomize(model, rng)
    proto, _ = check(model, normal(rng, (BATCH, 5, 6, 4)))
    assert op_counts(proto)["Transpose"] == 2  # in and out of NCHW only


# ---------------------------------------------------------------------------------------------- LocallyConnected


@pytest.mark.parametrize("cls,shape,kwargs", [
    ("LocallyConnected1D", (9, 3), {"kernel_size": 3, "strides": 2, "activation": "tanh"}),
    ("LocallyConnected1D", (9, 3), {"kernel_size": 4, "padding": "same", "implementation": 2}),
    ("LocallyConnected2D", (7, 6, 3), {"kernel_size": (3, 2), "strides": (2, 1)}),
    ("LocallyConnected2D", (7, 6, 3), {"kernel_size": 3, "padding": "same", "implementation": 3}),
    ("LocallyConnected2D", (3, 7, 6), {"kernel_size": 2, "data_format": "channels_first", "implementation": 2}),
])
def test_locally_connected(rng, cls, shape, kwargs):
    x = Input(shape)
    model = Model(x, getattr(kl, cls)(4, **kwargs)(x))
    randomize(model, rng)
    proto, _ = check(model, normal(rng, (BATCH, *shape)))
    assert op_counts(proto)["Einsum"] == 1


# ---------------------------------------------------------------------------------------------- GroupNormalization


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_group_normalization(rng, opset):
    x = Input((5, 4, 6))
    y = kl.Conv2D(6, 3, padding="same")(x)
    y = kl.GroupNormalization(groups=3)(y)
    z = kl.GroupNormalization(groups=2, axis=1, center=False)(kl.Reshape((4, 30))(x))
    model = Model(x, [y, z])
    randomize(model, rng)
    proto, _ = check(model, normal(rng, (BATCH, 5, 4, 6)), opset=opset)
    assert op_counts(proto)["GroupNormalization"] == (2 if opset >= 21 else 0)


# ---------------------------------------------------------------------------------------------- Keras 1 Merge


@pytest.mark.parametrize("mode,kwargs,shape", [
    ("sum", {}, (4, 5)), ("mul", {}, (4, 5)), ("ave", {}, (4, 5)), ("max", {}, (4, 5)),
    ("concat", {"concat_axis": 1}, (4, 5)), ("dot", {"dot_axes": 2}, (4, 5)), ("dot", {"dot_axes": [1, 2]}, (5, 5)),
    ("cos", {"dot_axes": 1}, (5,)),
])
def test_legacy_merge(rng, mode, kwargs, shape):
    a, b = Input(shape), Input(shape)
    model = Model([a, b], kl.Merge(mode=mode, **kwargs)([a, b]))
    check(model, [normal(rng, (BATCH, *shape)), normal(rng, (BATCH, *shape))])


# ---------------------------------------------------------------------------------------------- ConvLSTM


@pytest.mark.parametrize("cls,shape,kwargs", [
    ("ConvLSTM2D", (3, 7, 6, 2), {"padding": "same", "return_sequences": True}),
    ("ConvLSTM2D", (3, 7, 6, 2), {"strides": 2, "go_backwards": True, "return_state": True}),
    ("ConvLSTM1D", (4, 9, 3), {"dilation_rate": 2, "recurrent_activation": "sigmoid", "return_sequences": True,
                               "go_backwards": True}),
    ("ConvLSTM2D", (3, 2, 7, 6), {"data_format": "channels_first", "return_state": True, "use_bias": False}),
    ("ConvLSTM3D", (2, 5, 4, 3, 2), {"padding": "same"}),
])
def test_conv_lstm(rng, cls, shape, kwargs):
    x = Input(shape)
    out = getattr(kl, cls)(3, 3, **kwargs)(x)
    model = Model(x, out)
    randomize(model, rng)
    proto, _ = check(model, normal(rng, (BATCH, *shape)), opset=13 if kwargs.get("go_backwards") else 21)
    counts = op_counts(proto)
    assert counts["Conv"] == 1 + shape[0] - 1 and "Loop" not in counts and "Scan" not in counts


def test_conv_lstm_initial_state_and_mask(rng):
    """Initial states as inputs; Masking on the image sequence masks single pixels and whole steps (a masked step
    keeps the states and repeats the previous output)."""
    x = Input((4, 5, 6, 2))
    h0, c0 = Input((5, 6, 3)), Input((5, 6, 3))
    masked = kl.Masking(0.0)(x)
    seq = kl.ConvLSTM2D(3, 3, padding="same", return_sequences=True)(masked, initial_state=[h0, c0])
    last = kl.ConvLSTM2D(2, 3, padding="same", go_backwards=True)(masked)
    model = Model([x, h0, c0], [seq, last])
    randomize(model, rng)
    feed = normal(rng, (BATCH, 4, 5, 6, 2))
    feed[0, 1] = 0.0
    feed[2, 0] = 0.0
    feed[3, 3] = 0.0
    feed[1, 2, 1:3, 2:5] = 0.0
    check(model, [feed, normal(rng, (BATCH, 5, 6, 3)), normal(rng, (BATCH, 5, 6, 3))])


# ---------------------------------------------------------------------------------------------- registry


def test_aliases_and_augmentations_find_their_lowering():
    for name in ("RandomFlip", "RandomZoom", "RandomContrast", "Convolution2D", "MaxPool2D"):
        cls = kl.LAYERS[name]
        assert lowering_for(cls.__new__(cls)) is not None, name


def test_unsupported_options_raise_export_error():
    x = Input(batch_shape=(2, 3, 5, 4, 2))
    model = Model(x, kl.ConvLSTM2D(2, 3, stateful=True, name="stateful_convlstm")(x))
    with pytest.raises(ExportError, match="stateful_convlstm.*stateful=True"):
        lower_model(model)



def test_merge_with_a_python_function_is_traced(rng):
    """Keras 1 Merge with a function mode has no lowering of its own: the function is traced."""
    a, b = Input((4,)), Input((4,))
    merged = kl.Merge(mode=lambda xs: xs[0] * 2.0 - xs[1], output_shape=(4,), name="fn_merge")([a, b])
    model = Model([a, b], merged)
    xa, xb = (rng.standard_normal((5, 4)).astype(np.float32) for _ in range(2))
    check(model, [xa, xb])
