"""SimpleRNN, LSTM, GRU, CuDNN layers, ConvLSTM, Bidirectional and TimeDistributed against tf_keras and Keras 3:
outputs, states, masks, stateful calls, configs, weight names, Keras 3 weight paths and whole-model round trips."""

import json

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import json_round_trip

import kconvert
import kconvert.layers
from kconvert.errors import KConvertError
from kconvert.layers import keras_dialect
from kconvert.layers.recurrent import GRU, LSTM, SimpleRNN
from kconvert.ops.recurrent import rnn_scan

N, T, F = 3, 7, 5  # batch, timesteps, features: all different and odd


# ---------------------------------------------------------------------------------------------- helpers


def scaled_weights(layer, rng):
    """Random weights for a tf_keras/Keras 3 layer or model with pre-activations of order 1 (neither dead nor
    saturated gates); variances positive."""
    out = []
    for w in layer.weights:
        shape = tuple(w.shape)
        if "variance" in w.name:
            out.append(rng.uniform(0.5, 2.0, shape).astype(np.float32))
            continue
        fan_in = int(np.prod(shape[:-1])) if len(shape) >= 2 else 1
        std = 1.2 / np.sqrt(fan_in) if len(shape) >= 2 else 0.4
        out.append(rng.normal(0.0, std, shape).astype(np.float32))
    return out


def _listify(y):
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


def _shapes(x):
    if isinstance(x, list):
        return [(None, *v.shape[1:]) for v in x]
    return (None, *x.shape[1:])


def compare_rnn(ref_layer, x, rng, mask=None, keras3=False, check_shapes=True):
    """Run a tf_keras (or Keras 3) layer and its kconvert twin from the config; compare outputs and weights."""
    import tensorflow as tf

    if keras3:
        import keras

        entry = json.loads(json.dumps(keras.saving.serialize_keras_object(ref_layer)))
    else:
        entry = {"class_name": type(ref_layer).__name__, "config": json_round_trip(ref_layer.get_config())}
    tx = [tf.constant(v) for v in x] if isinstance(x, list) else tf.constant(x)
    kwargs = {} if mask is None else {"mask": tf.constant(mask)}
    ref_layer(tx, **kwargs)
    ref_layer.set_weights(scaled_weights(ref_layer, rng))
    ref = _listify(ref_layer(tx, **kwargs))
    with keras_dialect(3 if keras3 else 2):
        ours = kconvert.layers.deserialize(entry)
    ours._maybe_build([v.shape for v in x] if isinstance(x, list) else x.shape)  # as tf_keras built it
    if not keras3:
        assert [w.name for w in ours.weights] == [w.name for w in ref_layer.weights]
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in ref_layer.weights]
    ours.set_weights(ref_layer.get_weights())
    out = _listify(ours(x, **({} if mask is None else {"mask": mask})))
    assert len(out) == len(ref)
    for i, (o, r) in enumerate(zip(out, ref)):
        assert o.dtype == np.float32
        assert_close(o, r, what=f"{ref_layer.name} output {i}")
    if check_shapes:
        shapes = ours.compute_output_shape(_shapes(x))
        shapes = shapes if isinstance(shapes, list) else [shapes]
        assert [tuple(s) for s in shapes] == [(None, *r.shape[1:]) for r in ref]
    if not keras3:
        assert json_round_trip(ours.get_config()) == json_round_trip(ref_layer.get_config())
    return ours, out, ref


def seq(rng, *shape):
    return rng.normal(0.0, 1.0, shape).astype(np.float32)


def padding_mask():
    """(N, T) mask with trailing padding, a masked step in the middle and a row masked from the start."""
    m = np.ones((N, T), bool)
    m[0, 5:] = False
    m[1, 2] = False
    m[2, :2] = False
    return m


# ---------------------------------------------------------------------------------------------- SimpleRNN/LSTM/GRU

SEQ_OPTIONS = [
    {},
    {"return_sequences": True},
    {"return_state": True},
    {"return_sequences": True, "return_state": True, "go_backwards": True},
    {"go_backwards": True, "unroll": True},
]


@pytest.mark.parametrize("options", SEQ_OPTIONS)
@pytest.mark.parametrize("cls,extra", [
    ("SimpleRNN", {"activation": "relu"}),
    ("LSTM", {}),
    ("LSTM", {"recurrent_activation": "hard_sigmoid", "use_bias": False, "dropout": 0.3, "recurrent_dropout": 0.2}),
    ("GRU", {}),
    ("GRU", {"reset_after": False, "recurrent_activation": "hard_sigmoid"}),
])
def test_rnn_layers_match_tf_keras(tfk, rng, cls, extra, options):
    layer = getattr(tfk.layers, cls)(4, name="rnn", **extra, **options)
    ours, out, _ = compare_rnn(layer, seq(rng, N, T, F), rng)
    assert len(out) == (1 + (2 if cls == "LSTM" else 1) * bool(options.get("return_state")))


@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
def test_rnn_masks_match_tf_keras(tfk, rng, cls):
    m = padding_mask()
    for options in ({"return_sequences": True, "return_state": True}, {"go_backwards": True, "return_state": True},
                    {"return_sequences": True, "zero_output_for_mask": True}):
        layer = getattr(tfk.layers, cls)(3, name="rnn", **options)
        ours, _, _ = compare_rnn(layer, seq(rng, N, T, F), rng, mask=m)
        out_mask = ours.compute_mask(None, m)
        expect = m if options.get("return_sequences") else None
        if options.get("return_state"):
            assert out_mask[0] is expect and out_mask[1:] == [None] * (len(out_mask) - 1)
        else:
            assert out_mask is expect


def test_gru_bias_layouts(tfk, rng):
    a, b = GRU(4, name="ra"), GRU(4, reset_after=False, name="rb")
    a._maybe_build((None, T, F))
    b._maybe_build((None, T, F))
    assert a.weights[2].shape == (2, 12) and b.weights[2].shape == (12,)
    # a config without reset_after (Keras < 2.1.5) means the old GRU
    assert kconvert.layers.deserialize({"class_name": "GRU", "config": {"units": 2}}).reset_after is False


def test_time_major_and_initial_state(tfk, rng):
    import tensorflow as tf

    x = seq(rng, T, N, F)
    ours, out, _ = compare_rnn(tfk.layers.LSTM(3, time_major=True, return_sequences=True, return_state=True,
                                               name="tm"), x, rng, check_shapes=False)
    assert ours.compute_output_shape((T, None, F)) == [(T, None, 3), (None, 3), (None, 3)]
    layer = tfk.layers.GRU(3, return_sequences=True, name="g")
    h0 = seq(rng, N, 3)
    xs = seq(rng, N, T, F)
    layer(tf.constant(xs))
    layer.set_weights(scaled_weights(layer, rng))
    ref = layer(tf.constant(xs), initial_state=[tf.constant(h0)]).numpy()
    ours = kconvert.layers.deserialize({"class_name": "GRU", "config": json_round_trip(layer.get_config())})
    ours._maybe_build((None, T, F))
    ours.set_weights(layer.get_weights())
    assert_close(ours(xs, initial_state=[h0]), ref)
    assert_close(ours([xs, h0]), ref)


def test_unbuilt_configs_match_tf_keras(tfk):
    for cls, ours in (("SimpleRNN", SimpleRNN), ("LSTM", LSTM), ("GRU", GRU)):
        for kwargs in ({"units": 3}, {"units": 2, "stateful": True, "kernel_regularizer": "l2", "unroll": True}):
            assert json_round_trip(ours(name="x", **kwargs).get_config()) == \
                json_round_trip(getattr(tfk.layers, cls)(name="x", **kwargs).get_config())


def test_rnn_scan_masks_like_keras():
    """A masked step repeats the previous output and keeps the states; zeros before the first valid step."""
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 4, 1)
    mask = np.array([[False, True, False, True]])

    def step(xt, states):
        s = states[0] + xt
        return s * 10, [s]

    last, outs, states = rnn_scan(step, x, [np.zeros((1, 1), np.float32)], mask)
    assert outs[0, :, 0].tolist() == [0, 20, 20, 60] and last[0, 0] == 60 and states[0][0, 0] == 6
    _, outs, _ = rnn_scan(step, x, [np.zeros((1, 1), np.float32)], mask, go_backwards=True)
    assert outs[0, :, 0].tolist() == [40, 40, 60, 60]
    _, outs, _ = rnn_scan(step, x, [np.zeros((1, 1), np.float32)], mask, zero_output_for_mask=True)
    assert outs[0, :, 0].tolist() == [0, 20, 0, 60]


# ---------------------------------------------------------------------------------------------- CuDNN


def test_cudnn_layers_compute_as_native_equivalents(tfk, rng):
    """CuDNNLSTM = LSTM(sigmoid, tanh) with the two biases summed; CuDNNGRU = GRU(reset_after) with bias (2, 3u)."""
    import tensorflow as tf
    from tf_keras.src.layers import CuDNNGRU, CuDNNLSTM

    x = seq(rng, N, T, F)
    for ref_cls, native, opts in ((CuDNNLSTM, "LSTM", {"return_sequences": True, "return_state": True}),
                                  (CuDNNGRU, "GRU", {"go_backwards": True, "return_state": True})):
        ref = ref_cls(4, **opts)
        ref.build((None, T, F))
        ours = kconvert.layers.deserialize({"class_name": ref_cls.__name__,
                                            "config": json_round_trip(ref.get_config())})
        ours._maybe_build((None, T, F))
        assert [w.name for w in ours.weights] == [f"{ref.name}/{n}:0" for n in ("kernel", "recurrent_kernel", "bias")]
        assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in ref.weights]
        assert json_round_trip(ours.get_config()) == json_round_trip(ref.get_config())
        k, u, b = scaled_weights(ref, rng)
        ours.set_weights([k, u, b])
        twin = getattr(tfk.layers, native)(4, **opts)
        twin(tf.constant(x))
        half = b.size // 2
        twin.set_weights([k, u, b[:half] + b[half:] if native == "LSTM" else b.reshape(2, -1)])
        for o, r in zip(ours(x), twin(tf.constant(x))):
            assert_close(o, r.numpy())
    with pytest.raises(KConvertError, match="masking"):
        ours(x, mask=padding_mask())
    # Keras 2.2's config has no time_major or dtype
    old = kconvert.layers.deserialize({"class_name": "CuDNNLSTM", "config": {
        "name": "cu_dnnlstm_1", "trainable": True, "return_sequences": False, "return_state": False,
        "go_backwards": False, "stateful": False, "units": 2, "unit_forget_bias": True}})
    assert old(x).shape == (N, 2)


# ---------------------------------------------------------------------------------------------- ConvLSTM


@pytest.mark.parametrize("cls,kwargs,shape", [
    ("ConvLSTM2D", {"kernel_size": (3, 2), "padding": "same", "return_sequences": True}, (2, 4, 7, 6, 5)),
    ("ConvLSTM2D", {"kernel_size": 3, "strides": (2, 1), "return_state": True}, (2, 3, 9, 6, 5)),
    ("ConvLSTM2D", {"kernel_size": 2, "dilation_rate": 2, "data_format": "channels_first",
                    "return_sequences": True, "go_backwards": True}, (2, 3, 5, 7, 6)),
    ("ConvLSTM2D", {"kernel_size": 3, "padding": "same", "strides": 2, "data_format": "channels_first",
                    "return_state": True, "recurrent_activation": "sigmoid"}, (2, 3, 5, 7, 6)),
    ("ConvLSTM1D", {"kernel_size": 3, "padding": "same", "return_sequences": True}, (2, 4, 7, 5)),
    ("ConvLSTM3D", {"kernel_size": 2, "return_state": True}, (2, 3, 4, 5, 3, 2)),
])
def test_conv_lstm_matches_tf_keras(tfk, rng, cls, kwargs, shape):
    compare_rnn(getattr(tfk.layers, cls)(3, name="c", **kwargs), seq(rng, *shape), rng)


# ---------------------------------------------------------------------------------------------- Bidirectional


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes(tfk, rng, merge_mode):
    for inner in (tfk.layers.LSTM(3, return_sequences=True), tfk.layers.GRU(3, return_state=True)):
        ours, out, _ = compare_rnn(tfk.layers.Bidirectional(inner, merge_mode=merge_mode, name="bd"),
                                   seq(rng, N, T, F), rng)
        assert ours.weights[0].name == f"bd/forward_{inner.name}/{inner.name.split('_')[0]}_cell/kernel:0"


def test_bidirectional_masks_backward_layer_and_states(tfk, rng):
    m = padding_mask()
    x = seq(rng, N, T, F)
    layer = tfk.layers.Bidirectional(tfk.layers.LSTM(3, return_sequences=True, return_state=True), name="bm")
    ours, _, _ = compare_rnn(layer, x, rng, mask=m)
    out_mask = ours.compute_mask(x, m)
    assert out_mask[0] is m and out_mask[1:] == [None] * 4
    none = tfk.layers.Bidirectional(tfk.layers.GRU(3, return_sequences=True), merge_mode=None, name="bn")
    ours, _, _ = compare_rnn(none, x, rng, mask=m)
    assert ours.compute_mask(x, m) == [m, m]
    back = tfk.layers.SimpleRNN(2, go_backwards=True, activation="relu", name="rnn_b")
    given = tfk.layers.Bidirectional(tfk.layers.SimpleRNN(2, name="rnn_f"), backward_layer=back, merge_mode="sum",
                                     name="bb")
    ours, _, _ = compare_rnn(given, x, rng, mask=m)
    assert [w.name for w in ours.weights][3] == "bb/backward_rnn_b/simple_rnn_cell/kernel:0"


# ---------------------------------------------------------------------------------------------- TimeDistributed


def test_time_distributed_inner_layers(tfk, rng):
    x4 = seq(rng, 2, 3, 7, 5)
    compare_rnn(tfk.layers.TimeDistributed(tfk.layers.Dense(4, activation="tanh"), name="td"), x4, rng)
    x5 = seq(rng, 2, 3, 7, 6, 5)
    compare_rnn(tfk.layers.TimeDistributed(tfk.layers.Conv2D(4, (3, 2), strides=(2, 1)), name="tc"), x5, rng)
    compare_rnn(tfk.layers.TimeDistributed(tfk.layers.LSTM(2, return_sequences=True), name="tl"), x4, rng)
    compare_rnn(tfk.layers.TimeDistributed(tfk.layers.BatchNormalization(), name="tb"), x4, rng)


def test_time_distributed_nested_model_and_masks(tfk, rng, tmp_path):
    inner = tfk.Sequential([tfk.layers.Dense(4, activation="relu", input_shape=(5,)), tfk.layers.Dense(3)],
                           name="inner")
    inp = tfk.Input((T, 5))
    masked = tfk.layers.Masking()(inp)
    y = tfk.layers.TimeDistributed(inner, name="td")(masked)
    y = tfk.layers.LSTM(2, return_sequences=True, name="l")(y)
    model = tfk.Model(inp, y)
    model.set_weights(scaled_weights(model, rng))
    x = seq(rng, N, T, 5)
    x[0, 4:] = 0.0
    x[1, 1] = 0.0
    _round_trip(model, x, tmp_path)


# ---------------------------------------------------------------------------------------------- whole models


def _round_trip(tf_model, x, tmp_path):
    """tf_keras .h5 -> kconvert predicts the same; kconvert .h5 -> tf_keras predicts the same."""
    import tf_keras

    src, dst = tmp_path / "tf.h5", tmp_path / "ours.h5"
    tf_model.save(src)
    ref = _listify(tf_model(x))
    ours = kconvert.load_model(src)
    outs = _listify(ours.predict(x))
    assert len(outs) == len(ref)
    for o, r in zip(outs, ref):
        assert_close(o, r)
    ours.save(dst)
    back = tf_keras.models.load_model(dst, compile=False)
    for o, r in zip(_listify(back(x)), ref):
        assert_close(o, r)
    assert [w.name for w in ours.weights] == [w.name for w in tf_model.weights]
    return ours


def test_model_with_embedding_mask_bidirectional_and_time_distributed(tfk, rng, tmp_path):
    inp = tfk.Input((T,), dtype="int32")
    e = tfk.layers.Embedding(11, 5, mask_zero=True)(inp)
    y = tfk.layers.Bidirectional(tfk.layers.LSTM(4, return_sequences=True))(e)
    y = tfk.layers.TimeDistributed(tfk.layers.Dense(3, activation="tanh"))(y)
    y = tfk.layers.GRU(3, reset_after=False, go_backwards=True, return_sequences=True)(y)
    y = tfk.layers.SimpleRNN(2)(y)
    model = tfk.Model(inp, y)
    model.set_weights(scaled_weights(model, rng))
    ids = rng.integers(1, 11, (N, T)).astype(np.int32)
    ids[0, 5:] = 0
    ids[1, 2] = 0
    ids[2, :3] = 0
    _round_trip(model, ids, tmp_path)


def test_time_distributed_passes_and_reduces_masks(tfk, rng, tmp_path):
    """Embedding masks (N, T, L) ids: TD(LSTM) runs each timestep's sequence masked; its output mask is (N, T)."""
    inp = tfk.Input((4, 6), dtype="int32")
    e = tfk.layers.Embedding(9, 5, mask_zero=True)(inp)
    y = tfk.layers.TimeDistributed(tfk.layers.LSTM(3))(e)
    y = tfk.layers.GRU(2, return_sequences=True)(y)
    model = tfk.Model(inp, y)
    model.set_weights(scaled_weights(model, rng))
    ids = rng.integers(1, 9, (N, 4, 6)).astype(np.int32)
    ids[0, 1, 3:] = 0
    ids[1, 2, :] = 0  # a whole timestep masked: the GRU skips it
    ids[2, 0, 1] = 0
    _round_trip(model, ids, tmp_path)


def test_encoder_decoder_with_initial_states_and_masking(tfk, rng, tmp_path):
    enc_in = tfk.Input((T, F))
    masked = tfk.layers.Masking(0.0)(enc_in)
    _, h, c = tfk.layers.LSTM(4, return_state=True, name="enc")(masked)
    dec_in = tfk.Input((5, 3))
    dec = tfk.layers.LSTM(4, return_sequences=True, name="dec")(dec_in, initial_state=[h, c])
    _, bh = tfk.layers.GRU(2, return_state=True, name="g")(masked)
    bi = tfk.layers.Bidirectional(tfk.layers.GRU(2), name="bi")(dec_in, initial_state=[bh, bh])
    model = tfk.Model([enc_in, dec_in], [dec, bi])
    model.set_weights(scaled_weights(model, rng))
    x = seq(rng, N, T, F)
    x[0, 5:] = 0.0
    x[2, 3] = 0.0
    _round_trip(model, [x, seq(rng, N, 5, 3)], tmp_path)


def test_conv_lstm_model_round_trip(tfk, rng, tmp_path):
    model = tfk.Sequential([tfk.layers.ConvLSTM2D(3, 3, padding="same", return_sequences=True,
                                                  input_shape=(3, 7, 6, 2)),
                            tfk.layers.ConvLSTM2D(2, (2, 3), strides=(1, 2))])
    model.set_weights(scaled_weights(model, rng))
    _round_trip(model, seq(rng, 2, 3, 7, 6, 2), tmp_path)


def test_stateful_state_carries_over_calls_and_batches(tfk, rng, tmp_path):
    model = tfk.Sequential([tfk.layers.LSTM(3, stateful=True, return_sequences=True, batch_input_shape=(2, T, F)),
                            tfk.layers.Bidirectional(tfk.layers.GRU(2, stateful=True))])
    model.set_weights(scaled_weights(model, rng))
    model.save(tmp_path / "s.h5")
    ours = kconvert.load_model(tmp_path / "s.h5")
    a, b = seq(rng, 4, T, F), seq(rng, 2, T, F)
    for x in (a, b):  # two calls; the first runs two batches of 2: states carry through all of them
        assert_close(ours.predict(x, batch_size=2), model.predict(x, batch_size=2, verbose=0))
    model.reset_states()
    for layer in ours.layers:
        layer.reset_states()
    first = model.predict(b, batch_size=2, verbose=0)
    assert_close(ours.predict(b, batch_size=2), first)
    second = model.predict(b, batch_size=2, verbose=0)
    assert_close(ours.predict(b, batch_size=2), second)
    assert np.max(np.abs(first - second)) > 1e-3  # the states really carried over


# ---------------------------------------------------------------------------------------------- Keras 3


def _keras3_paths(obj, prefix: str) -> dict:
    """{path in model.weights.h5: Weight}, walking `keras3_state` as Keras 3's `_save_state` does."""
    own, children = obj.keras3_state()
    paths = {f"{prefix}/vars/{i}": w for i, w in enumerate(own)}
    for key, child in children.items():
        paths.update(_keras3_paths(child, f"{prefix}/{key}"))
    return paths


def test_keras3_configs_compute_as_keras3(rng):
    import keras

    x = seq(rng, N, T, F)
    m = padding_mask()
    layers = [keras.layers.LSTM(3, return_sequences=True, return_state=True, go_backwards=True),
              keras.layers.GRU(3, recurrent_activation="hard_sigmoid", return_sequences=True),  # Keras 3 slope 1/6
              keras.layers.GRU(3, reset_after=False, return_state=True),
              keras.layers.SimpleRNN(3, activation="hard_sigmoid", seed=3)]
    for layer in layers:
        compare_rnn(layer, x, rng, keras3=True)
        compare_rnn(layer, x, rng, mask=m, keras3=True)
    compare_rnn(keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True), merge_mode="ave"), x, rng,
                mask=m, keras3=True)
    compare_rnn(keras.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True), seq(rng, 2, 3, 5, 6, 4),
                rng, keras3=True)
    # (Keras 3's Dense config carries `quantization_config`, which the Keras 3 dialect normalizer handles)
    ours, _, _ = compare_rnn(keras.layers.TimeDistributed(keras.layers.Conv1D(3, 2)), seq(rng, 2, 3, 7, 5), rng,
                             keras3=True)
    assert ours.compute_mask(None, m) is m


def test_keras3_weight_paths(rng, tmp_path):
    import zipfile

    import h5py
    import keras

    inp = keras.Input((T, F))
    y = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True))(inp)
    y = keras.layers.GRU(3, return_sequences=True)(y)
    y = keras.layers.Reshape((T, 3, 1))(y)
    y = keras.layers.TimeDistributed(keras.layers.Conv1D(2, 3))(y)
    y = keras.layers.Reshape((T, 2))(y)
    y = keras.layers.SimpleRNN(2, return_sequences=True)(y)
    y = keras.layers.Reshape((T, 2, 1, 1))(y)
    y = keras.layers.ConvLSTM2D(2, 1)(y)
    model = keras.Model(inp, y)
    model.set_weights(scaled_weights(model, rng))
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        config = json.loads(z.read("config.json"))
        (tmp_path / "w.h5").write_bytes(z.read("model.weights.h5"))
    saved = {}
    with h5py.File(tmp_path / "w.h5") as f:
        f.visititems(lambda name, obj: saved.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    x = seq(rng, N, T, F)
    with keras_dialect(3):
        ours = [kconvert.layers.deserialize(e) for e in config["config"]["layers"][1:]]

    def run(layers):
        out = x
        for layer in layers:
            out = layer(out)
        return out

    run(ours)  # builds
    expected = {}
    for path_name, layer in zip(("bidirectional", "gru", "time_distributed", "simple_rnn", "conv_lstm2d"),
                                (la for la in ours if la.weights)):
        expected.update(_keras3_paths(layer, f"layers/{path_name}"))
    assert set(expected) == set(saved)
    for path, value in saved.items():  # loading the saved arrays by those paths gives Keras 3's predictions
        expected[path].assign(value)
    assert_close(run(ours), model.predict(x, verbose=0))
