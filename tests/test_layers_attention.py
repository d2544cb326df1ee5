"""EinsumDense, MultiHeadAttention, Attention and AdditiveAttention against tf_keras (Keras 2) and Keras 3."""

import json

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import compare_layer, compare_unbuilt_config, json_round_trip

import kconvert
import kconvert.layers as kl
from kconvert.errors import ConfigError, ShapeError
from kconvert.models import model_from_json


def _randomize(model, rng, scale=0.5):
    for w in model.weights:
        w.assign(rng.normal(0.0, scale, tuple(w.shape)).astype("float32"))


def _check_model(tf_model, inputs, rtol_scale=1.0):
    """kconvert reads the model's JSON, takes its weights, predicts the same and writes the same config."""
    ours = model_from_json(tf_model.to_json())
    assert [w.name for w in ours.weights] == [w.name for w in tf_model.weights]
    ours.set_weights(tf_model.get_weights())
    ref = tf_model.predict(inputs, verbose=0)
    got = ours.predict(inputs)
    ref, got = (ref, got) if isinstance(ref, list) else ([ref], [got])
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.dtype == r.dtype, (i, g.dtype, r.dtype)
        assert_close(g, r, rtol_scale, what=f"output {i}")
    assert [v.shape for v in ours.outputs] == [tuple(t.shape) for t in tf_model.outputs]
    shapes = ours.compute_output_shape([v.shape for v in ours.inputs] if len(ours.inputs) > 1 else ours.inputs[0].shape)
    assert (shapes if isinstance(shapes, list) else [shapes]) == [v.shape for v in ours.outputs]
    assert json.loads(ours.to_json())["config"] == json.loads(tf_model.to_json())["config"]
    return ours


# ---------------------------------------------------------------------------------------------- EinsumDense

EINSUM_CASES = [
    ({"equation": "ab,bc->ac", "output_shape": 5, "bias_axes": "c"}, (3, 7)),
    ({"equation": "abc,cd->abd", "output_shape": (None, 5), "bias_axes": "d", "activation": "tanh"}, (2, 4, 3)),
    ({"equation": "abc,cde->abde", "output_shape": (None, 3, 2), "bias_axes": "de"}, (2, 5, 7)),
    ({"equation": "abc,cde->abde", "output_shape": (None, 3, 2), "bias_axes": "e"}, (2, 5, 7)),
    ({"equation": "...b,bc->...c", "output_shape": 4, "bias_axes": "c"}, (2, 3, 5, 6)),
    ({"equation": "ab...,bc->ac...", "output_shape": (4, 3), "bias_axes": "c"}, (2, 5, 3)),
    ({"equation": "abc,cd->abd", "output_shape": (None, 5)}, (3, 4, 6)),
    ({"equation": "abcd,cde->abe", "output_shape": (None, 4), "bias_axes": "e"}, (2, 3, 4, 5)),
]


@pytest.mark.parametrize("kwargs,shape", EINSUM_CASES)
def test_einsum_dense(tfk, rng, kwargs, shape):
    x = rng.normal(0.0, 1.0, shape).astype("float32")
    tf_layer = tfk.layers.EinsumDense(name="ed", **kwargs)
    tf_layer(tfk.Input(shape[1:]))  # built symbolically: its output shape keeps the unknown batch size
    compare_layer(tf_layer, x, rng)
    compare_unbuilt_config(tfk.layers.EinsumDense(name="ed0", **kwargs), kl.EinsumDense(name="ed0", **kwargs))


def test_einsum_dense_bad_equation_names_the_layer():
    layer = kl.EinsumDense("abc->abd", output_shape=3, name="bad_ed")
    with pytest.raises(ShapeError, match="bad_ed.*einsum equation"):
        layer(np.zeros((2, 3, 4), "float32"))


# ---------------------------------------------------------------------------------------------- MultiHeadAttention


def _mha_case(tfk, name, rng):
    """(model, inputs) of one MultiHeadAttention use, built with real tf_keras."""
    L = tfk.layers
    q = L.Input((5, 7))
    v = L.Input((4, 6))
    x_q = rng.normal(0.0, 1.0, (3, 5, 7)).astype("float32")
    x_v = rng.normal(0.0, 1.0, (3, 4, 6)).astype("float32")
    if name == "cross_scores":
        out = L.MultiHeadAttention(3, 2, value_dim=3, name="mha")(q, v, return_attention_scores=True)
        return tfk.Model([q, v], list(out)), [x_q, x_v]
    if name == "key_mask_output_shape":
        k = L.Input((4, 3))
        m = L.Input((5, 4))
        out = L.MultiHeadAttention(2, 4, output_shape=(3, 2), name="mha")(q, v, key=k, attention_mask=m)
        x_k = rng.normal(0.0, 1.0, (3, 4, 3)).astype("float32")
        x_m = (rng.random((3, 5, 4)) > 0.4).astype("float32")
        return tfk.Model([q, v, k, m], out), [x_q, x_v, x_k, x_m]
    if name == "causal_no_bias_dropout":
        out = L.MultiHeadAttention(2, 4, use_bias=False, dropout=0.3, name="mha")(q, q, use_causal_mask=True)
        return tfk.Model(q, out), x_q
    if name == "keras_masks":  # query and value masks from Embedding(mask_zero=True); fully masked rows
        iq, iv = L.Input((5,)), L.Input((4,))
        eq = L.Embedding(9, 7, mask_zero=True)(iq)
        ev = L.Embedding(9, 6, mask_zero=True)(iv)
        out = L.MultiHeadAttention(2, 3, name="mha")(eq, ev, return_attention_scores=True)
        ids_q = np.array([[1, 2, 0, 0, 3], [4, 5, 6, 7, 8], [0, 1, 1, 0, 2]], "float32")
        ids_v = np.array([[0, 2, 0, 0], [3, 4, 5, 0], [1, 1, 1, 1]], "float32")
        return tfk.Model([iq, iv], list(out)), [ids_q, ids_v]
    if name == "causal_and_value_mask":
        iv = L.Input((4,))
        ev = L.Embedding(9, 6, mask_zero=True)(iv)
        out = L.MultiHeadAttention(2, 3, name="mha")(q, ev, use_causal_mask=True)
        return tfk.Model([q, iv], out), [x_q, np.array([[0, 2, 0, 0], [3, 4, 5, 0], [1, 1, 1, 1]], "float32")]
    if name == "robust_masking":
        m = L.Input((5, 4))
        out = L.MultiHeadAttention(2, 4, softmax_robust_masking=True, name="mha")(q, v, attention_mask=m)
        return tfk.Model([q, v, m], out), [x_q, x_v, (rng.random((3, 5, 4)) > 0.4).astype("float32")]
    q4 = L.Input((3, 4, 5))
    x_q4 = rng.normal(0.0, 1.0, (2, 3, 4, 5)).astype("float32")
    if name == "two_attention_axes":
        out = L.MultiHeadAttention(2, 3, attention_axes=(1, 2), name="mha")(q4, q4, return_attention_scores=True)
        return tfk.Model(q4, list(out)), x_q4
    if name == "int_attention_axis":
        out = L.MultiHeadAttention(2, 3, attention_axes=2, name="mha")(q4, q4)
        return tfk.Model(q4, out), x_q4
    if name == "negative_attention_axis":  # tf.keras counts it in the rank of the projected tensors
        out = L.MultiHeadAttention(2, 3, attention_axes=-3, name="mha")(q4, q4, return_attention_scores=True)
        return tfk.Model(q4, list(out)), x_q4
    raise ValueError(name)


MHA_CASES = ["cross_scores", "key_mask_output_shape", "causal_no_bias_dropout", "keras_masks",
             "causal_and_value_mask", "robust_masking", "two_attention_axes", "int_attention_axis",
             "negative_attention_axis"]


@pytest.mark.parametrize("case", MHA_CASES)
def test_multi_head_attention_models(tfk, rng, case):
    model, inputs = _mha_case(tfk, case, rng)
    _randomize(model, rng)
    _check_model(model, inputs)


def test_multi_head_attention_config_builds_weights_like_tf_keras(tfk, rng):
    """A saved config carries the input shapes: the layer has its weights before it is called."""
    tf_mha = tfk.layers.MultiHeadAttention(3, 2, value_dim=4, output_shape=5, name="mha")
    tf_mha(tfk.Input((5, 7)), tfk.Input((4, 6)), key=tfk.Input((4, 3)))
    config = json_round_trip({k: v.as_list() if hasattr(v, "as_list") else v for k, v in tf_mha.get_config().items()})
    assert config["query_shape"] == [None, 5, 7] and config["key_shape"] == [None, 4, 3]
    ours = kl.deserialize({"class_name": "MultiHeadAttention", "config": config})
    assert [(w.name, w.shape) for w in ours.weights] == [(w.name, tuple(w.shape)) for w in tf_mha.weights]
    assert json_round_trip(ours.get_config()) == config
    weights = [rng.normal(0.0, 0.5, w.shape).astype("float32") for w in ours.weights]
    tf_mha.set_weights(weights)
    ours.set_weights(weights)
    q, v, k = (rng.normal(0.0, 1.0, s).astype("float32") for s in ((3, 5, 7), (3, 4, 6), (3, 4, 3)))
    assert_close(ours(q, v, key=k), tf_mha(q, v, key=k).numpy())
    compare_unbuilt_config(tfk.layers.MultiHeadAttention(2, 3, name="m0"), kl.MultiHeadAttention(2, 3, name="m0"))


def test_multi_head_attention_h5_both_ways(tfk, rng, tmp_path):
    """A tf_keras .h5 loads and predicts; kconvert's .h5 of it loads in tf_keras and predicts the same."""
    model, inputs = _mha_case(tfk, "key_mask_output_shape", rng)
    _randomize(model, rng)
    model.save(tmp_path / "tf.h5")
    ours = kconvert.load_model(tmp_path / "tf.h5")
    ref = model.predict(inputs, verbose=0)
    assert_close(ours.predict(inputs), ref)
    ours.save(tmp_path / "ours.h5")
    back = tfk.models.load_model(tmp_path / "ours.h5")
    assert_close(back.predict(inputs, verbose=0), ref)


def test_multi_head_attention_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        kl.MultiHeadAttention(0, 3)
    mha = kl.MultiHeadAttention(2, 3, name="lonely")
    with pytest.raises(ShapeError, match="lonely.*value"):
        mha(kl.Input((4, 5)))


# ---------------------------------------------------------------------------------------------- Keras 3


K3_MHA_CASES = [
    ({}, {"use_causal_mask": True}),                       # fused dot_product_attention path
    ({"use_gate": True}, {}),
    ({}, {"use_causal_mask": True, "return_attention_scores": True}),  # einsum + Softmax path
    ({"attention_axes": -2}, {}),                          # Keras 3 counts it in the input's rank
    ({"sliding_window": 2}, {"use_causal_mask": True}),
    ({"dropout": 0.2, "output_shape": 3}, {}),
]


@pytest.mark.parametrize("kwargs,call", K3_MHA_CASES)
def test_multi_head_attention_keras3(rng, kwargs, call):
    """Keras 3 configs, weights and masking (a fully masked row is zero, or uniform on the fused path)."""
    import keras

    q = rng.normal(0.0, 1.0, (3, 5, 7)).astype("float32")
    v = rng.normal(0.0, 1.0, (3, 4, 6)).astype("float32")
    value_mask = np.array([[0, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
    ref_layer = keras.layers.MultiHeadAttention(2, 4, name="mha", **kwargs)
    ref_layer(q, v)
    weights = [rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32") for w in ref_layer.weights]
    ref_layer.set_weights(weights)
    with kl.keras_dialect(3):
        ours = kl.deserialize({"class_name": "MultiHeadAttention", "config": json_round_trip(ref_layer.get_config())})
    ours(q, v)
    assert [w.name for w in ours.weights] == [w.path + ":0" for w in ref_layer.weights]
    ours.set_weights(weights)
    ref = ref_layer(q, v, value_mask=value_mask, **call)
    got = ours(q, v, value_mask=value_mask, **call)
    ref, got = (ref, got) if isinstance(ref, tuple) else ((ref,), (got,))
    for g, r in zip(got, ref):
        assert_close(g, np.asarray(r))
    own, children = ours.keras3_state()
    assert own == []
    names = {"query_dense": "query", "key_dense": "key", "value_dense": "value", "output_dense": "attention_output"}
    for child, sub in names.items():
        assert [w.shape for w in children[child].keras3_state()[0]] == \
            [tuple(w.shape) for w in getattr(ref_layer, child).weights], sub


def test_keras3_h5_with_attention_layers(rng, tmp_path):
    """A whole Keras 3 model (legacy .h5) with attention layers loads and predicts as Keras 3 does."""
    import keras

    q = keras.Input((5, 7))
    ids = keras.Input((4,))
    outs = []
    for i, (kw, call) in enumerate([({}, {"use_causal_mask": True}), ({"use_gate": True}, {}),
                                    ({}, {"use_causal_mask": True, "return_attention_scores": True})]):
        emb = keras.layers.Embedding(10, 6, mask_zero=True, name=f"emb{i}")(ids)  # one masked tensor per layer
        out = keras.layers.MultiHeadAttention(2, 4, name=f"mha{i}", **kw)(q, emb, **call)
        outs += list(out) if isinstance(out, tuple) else [out]
    outs.append(keras.layers.Attention(use_scale=True, score_mode="concat")([q, q]))
    outs.append(keras.layers.AdditiveAttention()([q, q]))
    model = keras.Model([q, ids], outs)
    _randomize(model, rng)
    model.save(tmp_path / "k3.h5")
    inputs = [rng.normal(0.0, 1.0, (3, 5, 7)).astype("float32"),
              np.array([[0, 2, 0, 0], [3, 4, 5, 0], [1, 1, 1, 1]], "float32")]
    ref = model.predict(inputs, verbose=0)
    got = kconvert.load_model(tmp_path / "k3.h5").predict(inputs)
    for g, r in zip(got, ref):
        assert_close(g, r)


# ---------------------------------------------------------------------------------------------- dense attention


def _dense_attention_model(tfk, rng, cls, layer_kwargs, call_kwargs, with_key=False):
    L = tfk.layers
    iq, iv = L.Input((5,)), L.Input((4,))
    eq = L.Embedding(9, 6, mask_zero=True)(iq)
    ev = L.Embedding(9, 6, mask_zero=True)(iv)
    inputs = [eq, ev]
    feeds = [np.array([[1, 2, 0, 0, 3], [4, 5, 6, 7, 8], [0, 1, 1, 0, 2]], "float32"),
             np.array([[0, 2, 0, 0], [3, 4, 5, 0], [1, 1, 1, 1]], "float32")]
    if with_key:
        inputs.append(L.Dense(6, name="key")(ev))
    out = getattr(L, cls)(name="att", **layer_kwargs)(inputs, **call_kwargs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    pooled = L.GlobalAveragePooling1D()(outs[0])  # consumes the query mask the attention passes on
    return tfk.Model([iq, iv], [*outs, pooled]), feeds


DENSE_CASES = [
    ("Attention", {}, {}),
    ("Attention", {"use_scale": True}, {"return_attention_scores": True}),
    ("Attention", {"score_mode": "concat"}, {"use_causal_mask": True}),
    ("Attention", {"score_mode": "concat", "use_scale": True, "dropout": 0.2}, {"return_attention_scores": True}),
    ("Attention", {}, {"use_causal_mask": True, "return_attention_scores": True}),
    ("AdditiveAttention", {}, {}),
    ("AdditiveAttention", {"use_scale": False}, {"use_causal_mask": True}),
    ("AdditiveAttention", {}, {"return_attention_scores": True}),
]


@pytest.mark.parametrize("cls,layer_kwargs,call_kwargs", DENSE_CASES)
@pytest.mark.parametrize("with_key", [False, True])
def test_dense_attention_models(tfk, rng, cls, layer_kwargs, call_kwargs, with_key):
    model, feeds = _dense_attention_model(tfk, rng, cls, layer_kwargs, call_kwargs, with_key)
    _randomize(model, rng)
    _check_model(model, feeds)


@pytest.mark.parametrize("cls,kwargs", [("Attention", {"use_scale": True, "score_mode": "concat"}),
                                        ("AdditiveAttention", {})])
def test_dense_attention_layers(tfk, rng, cls, kwargs):
    q = rng.normal(0.0, 1.0, (2, 5, 3)).astype("float32")
    v = rng.normal(0.0, 1.0, (2, 4, 3)).astype("float32")
    ours, _, _ = compare_layer(getattr(tfk.layers, cls)(name="att", **kwargs), [q, v], rng)
    compare_layer(getattr(tfk.layers, cls)(name="att", **kwargs), [q, v, v * 2], rng)
    assert ours.compute_output_shape([(None, 5, 3), (None, 4, 3)]) == (None, 5, 3)


def test_attention_deprecated_causal_argument(tfk, rng):
    """`causal=True` (TF <= 2.9 configs) masks like use_causal_mask=True; it stays in the written config."""
    q = rng.normal(0.0, 1.0, (2, 5, 3)).astype("float32")
    ours = kl.deserialize({"class_name": "Attention", "config": {"name": "att", "causal": True, "use_scale": False}})
    ref = tfk.layers.Attention(causal=True)([q, q])
    assert_close(ours([q, q]), ref.numpy())
    assert_close(ours([q, q]), tfk.layers.Attention()([q, q], use_causal_mask=True).numpy())
    assert ours.get_config()["causal"] is True
    with pytest.raises(ConfigError, match="score_mode"):
        kl.Attention(score_mode="general")


@pytest.mark.parametrize("cls,kwargs", [("Attention", {"use_scale": True, "score_mode": "concat"}),
                                        ("Attention", {}), ("AdditiveAttention", {})])
def test_dense_attention_keras3(rng, cls, kwargs):
    import keras

    q = rng.normal(0.0, 1.0, (2, 5, 3)).astype("float32")
    v = rng.normal(0.0, 1.0, (2, 4, 3)).astype("float32")
    masks = [np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]], bool), np.array([[1, 0, 1, 1], [0, 1, 1, 1]], bool)]
    ref_layer = getattr(keras.layers, cls)(**kwargs)
    ref_layer([q, v])
    weights = [rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32") for w in ref_layer.weights]
    ref_layer.set_weights(weights)
    with kl.keras_dialect(3):
        ours = kl.deserialize({"class_name": cls, "config": json_round_trip(ref_layer.get_config())})
    ours([q, v])
    ours.set_weights(weights)
    for call in ({}, {"use_causal_mask": True}):
        assert_close(ours([q, v], mask=masks, **call), np.asarray(ref_layer([q, v], mask=masks, **call)))
