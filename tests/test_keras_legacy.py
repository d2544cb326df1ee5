"""Keras 1 and Keras 2.0–2.2 (multi-backend, Theano) files: configs, weights, Merge.

The fixtures (fixtures/make_keras_legacy.py) are written by hand in the old formats. At test time each one is
also rebuilt in tf_keras from its Keras 2 twin (`NAME_tfk.json`), with the old arrays converted by tf_keras's own
`preprocess_weights_for_loading`; kconvert must predict what that model predicts, and the file kconvert writes
must load in tf_keras and predict the same.
"""

import json
import os

import h5py
import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert import layers as L
from kconvert.converters import keras1, keras1_weights
from kconvert.converters.keras_config import deserialize_entry
from kconvert.errors import ConfigError, UnknownLayerError, WeightsError
from kconvert.formats.keras_h5 import read_keras_h5
from kconvert.layers import keras_dialect
from kconvert.layers.legacy_merge import Merge, merge

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures", "keras_legacy")
# fixture -> (version tf_keras's loader sees, backend that wrote the weights)
FIXTURES = {
    "k1_mlp": ("1", "tensorflow"), "k1_conv2d_theano": ("1", "theano"), "k1_conv1d": ("1", "tensorflow"),
    "k1_conv_misc": ("1", "tensorflow"), "k1_merge_seq": ("1", "tensorflow"), "k1_merge_modes": ("1", "tensorflow"),
    "k1_rnn": ("1", "tensorflow"), "k2_theano": ("2.2.4", "theano"), "k2_merge_seq": ("2.1.6", "tensorflow"),
}
CONV = ("Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose")


def path(name):
    return os.path.join(FIX, name)


def io(name):
    data = np.load(path(f"{name}_io.npz"))
    ins = [data[k] for k in sorted(k for k in data if k.startswith("input_"))]
    outs = [data[k] for k in sorted(k for k in data if k.startswith("output_"))]
    return ins, outs


def as_list(y):
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


def feed(ins):
    return ins if len(ins) > 1 else ins[0]


def saved_arrays(file):
    """{layer name: [arrays]} straight from the HDF5 file, in weight_names order."""
    with h5py.File(file, "r") as f:
        g = f["model_weights"] if "model_weights" in f else f
        return {n.decode(): [np.asarray(g[n.decode()][w.decode()]) for w in g[n.decode()].attrs["weight_names"]]
                for n in g.attrs["layer_names"]}


def flip(kernel):
    """Keras 2's `conv_utils.convert_kernel` (Theano convolves, TensorFlow correlates); tf_keras dropped it."""
    return kernel[(slice(None, None, -1),) * (kernel.ndim - 2)]


def tf_reference(tfk, name, version=None, backend=None):
    """The tf_keras twin with the file's old arrays converted by tf_keras's legacy loader."""
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    version, backend = (version, backend) if version else FIXTURES[name]
    model = tfk.models.model_from_json(open(path(f"{name}_tfk.json")).read())
    by_name = {}
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        by_name[layer.name] = layer
        stack.extend(getattr(layer, "layers", []) if isinstance(layer, tfk.Model) else [])
    for lname, arrays in saved_arrays(path(f"{name}.h5")).items():
        if arrays:
            layer = by_name[lname]
            ws = preprocess_weights_for_loading(layer, arrays, version, backend)
            if backend == "theano" and type(layer).__name__ in CONV:
                ws[0] = flip(ws[0])
            layer.set_weights(ws)
    return model


# ---------------------------------------------------------------------------------------------- the files


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_old_file_predicts_as_tf_keras_legacy_loader(tfk, name):
    ins, outs = io(name)
    model = kconvert.load_model(path(f"{name}.h5"))
    ours = as_list(model.predict(feed(ins)))
    ref = as_list(tf_reference(tfk, name)(feed(ins)))
    assert len(ours) == len(ref) == len(outs)
    for a, b, c in zip(ours, ref, outs):
        assert_close(a, b, what=f"{name} vs tf_keras now")
        assert_close(a, c, what=f"{name} vs saved outputs")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_converted_file_loads_in_tf_keras(tfk, tmp_path, name):
    ins, outs = io(name)
    model = kconvert.load_model(path(f"{name}.h5"))
    model.save(tmp_path / "converted.h5")
    theirs = tfk.models.load_model(tmp_path / "converted.h5", compile=False)
    for a, b in zip(as_list(theirs(feed(ins))), outs):
        assert_close(a, b, what=name)


def test_keras1_json_yaml_and_save_weights_file():
    ins, outs = io("k1_mlp")
    for text in ("k1_mlp.json", "k1_mlp.yaml"):
        model = kconvert.load_model(path(text))
        model.load_weights(path("k1_mlp_weights.h5"))  # Keras 1 save_weights: only layer_names at the root
        assert_close(model.predict(ins[0]), outs[0], what=text)
    config = json.load(open(path("k1_mlp.json")))
    del config["keras_version"]  # still recognised as Keras 1 by its argument names
    model = kconvert.models.model_from_json(json.dumps(config))
    model.load_weights(path("k1_mlp_weights.h5"))
    assert_close(model.predict(ins[0]), outs[0])
    dense = model.get_layer("dense_1").get_config()
    assert dense["units"] == 7 and dense["kernel_regularizer"]["config"]["l2"] == pytest.approx(0.01)
    assert dense["kernel_constraint"] == {"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 0}}


def test_keras1_merge_sequential_weights_are_paired_flattened():
    """Keras 1 saved a Merge Sequential's branch layers inline; a right branch deeper than the left one would
    pair wrongly in depth order."""
    ins, outs = io("k1_merge_seq")
    model = kconvert.models.model_from_json(open(path("k1_merge_seq.json")).read())
    assert [type(la).__name__ for la in model.layers] == ["InputLayer", "InputLayer", "Sequential", "Sequential",
                                                           "Concatenate", "Dense"]
    model.load_weights(path("k1_merge_seq_weights.h5"))
    assert_close(model.predict(ins), outs[0])
    fresh = kconvert.models.model_from_json(open(path("k1_merge_seq.json")).read())
    fresh.load_weights(path("k1_merge_seq_weights.h5"), by_name=True)
    assert_close(fresh.predict(ins), outs[0])


def test_kconvert_file_keeps_its_version_and_loads_back(tmp_path):
    model = kconvert.load_model(path("k2_theano.h5"))
    model.save(tmp_path / "m.h5")
    h5 = read_keras_h5(tmp_path / "m.h5")
    assert h5.backend == "tensorflow" and h5.original_keras_version.startswith("2.")
    ins, outs = io("k2_theano")
    assert_close(kconvert.load_model(tmp_path / "m.h5").predict(ins[0]), outs[0])  # no second flip


# ---------------------------------------------------------------------------------------------- Theano kernels


def _k1_conv1d_file(file, kernel, bias, tf_names):
    suffix = ":0" if tf_names else ""
    config = {"class_name": "Sequential", "config": [{"class_name": "Convolution1D", "config": {
        "name": "convolution1d_1", "trainable": True, "nb_filter": kernel.shape[-1], "filter_length": kernel.shape[0],
        "init": "glorot_uniform", "activation": "linear", "border_mode": "valid", "subsample_length": 1,
        "W_regularizer": None, "b_regularizer": None, "activity_regularizer": None, "W_constraint": None,
        "b_constraint": None, "bias": True, "input_dim": kernel.shape[1], "input_length": None,
        "batch_input_shape": [None, None, kernel.shape[1]], "input_dtype": "float32"}}]}
    with h5py.File(file, "w") as f:
        f.attrs["keras_version"] = b"1.2.2"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"convolution1d_1"])
        sub = g.create_group("convolution1d_1")
        names = [f"convolution1d_1_W{suffix}", f"convolution1d_1_b{suffix}"]
        sub.attrs["weight_names"] = np.array([n.encode() for n in names])
        sub.create_dataset(names[0], data=kernel[:, None])  # Keras 1.2 Conv1D layout (len, 1, in, out)
        sub.create_dataset(names[1], data=bias)


def test_theano_kernels_convolve(tmp_path, rng):
    """Theano computed a true convolution with the stored kernel; TensorFlow a correlation (np.convolve /
    np.correlate are the definitions)."""
    kernel = rng.normal(0, 0.5, (4, 3, 2)).astype(np.float32)  # (length, in, out), not symmetric
    bias = rng.normal(0, 0.1, (2,)).astype(np.float32)
    x = rng.normal(0, 1, (2, 11, 3)).astype(np.float32)

    def reference(op):
        return np.stack([np.stack([sum(op(x[n, :, i], kernel[:, i, o], "valid") for i in range(3)) + bias[o]
                                   for o in range(2)], -1) for n in range(2)])

    _k1_conv1d_file(tmp_path / "theano.h5", kernel, bias, tf_names=False)  # no ':0': Theano wrote it
    assert_close(kconvert.load_model(tmp_path / "theano.h5").predict(x), reference(np.convolve))
    forced = kconvert.load_model(tmp_path / "theano.h5", source_backend="tensorflow")
    assert_close(forced.predict(x), reference(np.correlate))
    _k1_conv1d_file(tmp_path / "tf.h5", kernel, bias, tf_names=True)
    assert_close(kconvert.load_model(tmp_path / "tf.h5").predict(x), reference(np.correlate))
    model = kconvert.load_model(tmp_path / "tf.h5")
    model.load_weights(tmp_path / "tf.h5", source_backend="theano")
    assert_close(model.predict(x), reference(np.convolve))


def test_theano_same_padding_difference_is_reported(rng):
    layer = L.Conv2D(2, (2, 3), padding="same")
    layer._maybe_build((None, 6, 5, 3))
    with pytest.warns(UserWarning, match="Theano padded 'same'"):
        out = keras1_weights.preprocess_legacy(layer, _old(rng, (2, 3, 3, 2), (2,)), "2.2.4", "theano")
    assert out[0].shape == (2, 3, 3, 2)


def test_source_backend_inference(tmp_path, rng):
    _k1_conv1d_file(tmp_path / "a.h5", np.ones((2, 2, 2), np.float32), np.zeros(2, np.float32), tf_names=False)
    _k1_conv1d_file(tmp_path / "b.h5", np.ones((2, 2, 2), np.float32), np.zeros(2, np.float32), tf_names=True)
    assert keras1_weights.source_backend(read_keras_h5(tmp_path / "a.h5")) == "theano"
    assert keras1_weights.source_backend(read_keras_h5(tmp_path / "b.h5")) == "tensorflow"
    assert keras1_weights.source_backend(read_keras_h5(path("k2_theano.h5"))) == "theano"  # the attribute
    assert keras1_weights.source_backend(read_keras_h5(path("k2_theano.h5")), "cntk") == "cntk"
    with pytest.raises(WeightsError, match="unknown source backend"):
        kconvert.load_model(tmp_path / "a.h5", source_backend="caffe")


# ---------------------------------------------------------------------------------------------- weight rewriting


def _twins(tfk, tf_layer, input_shape):
    """The tf_keras layer built, and kconvert's layer from its config built for the same input."""
    tf_layer.build(input_shape)
    ours = deserialize_entry({"class_name": type(tf_layer).__name__,
                              "config": json.loads(json.dumps(tf_layer.get_config(), default=list))}, {})
    ours._maybe_build(input_shape)
    return ours


def _old(rng, *shapes):
    return [rng.normal(0, 1, s).astype(np.float32) for s in shapes]


CASES = {  # name -> (tf_keras layer, input shape, old array shapes, version)
    "conv1d_keras12": (lambda L: L.Conv1D(5, 3), (None, 9, 4), [(3, 1, 4, 5), (5,)], "1"),
    "conv1d_keras11": (lambda L: L.Conv1D(5, 3), (None, 9, 4), [(5, 4, 3, 1), (5,)], "1"),
    "conv2d_th": (lambda L: L.Conv2D(5, (3, 2), data_format="channels_first"), (None, 4, 9, 7),
                  [(5, 4, 3, 2), (5,)], "1"),
    "conv2d_tf": (lambda L: L.Conv2D(5, (3, 2)), (None, 9, 7, 4), [(3, 2, 4, 5), (5,)], "1"),
    "deconv_tf": (lambda L: L.Conv2DTranspose(5, (3, 2)), (None, 9, 7, 4), [(3, 2, 4, 5), (5,)], "1"),
    "deconv_th": (lambda L: L.Conv2DTranspose(5, (3, 2), data_format="channels_first"), (None, 4, 9, 7),
                  [(5, 4, 3, 2), (5,)], "1"),
    "conv3d_th": (lambda L: L.Conv3D(3, (2, 3, 2), data_format="channels_first"), (None, 2, 5, 6, 4),
                  [(3, 2, 2, 3, 2), (3,)], "1"),
    "conv2d_other_order": (lambda L: L.Conv2D(5, (3, 2)), (None, 9, 7, 4), [(4, 5, 2, 3), (5,)], "2.2.4"),
    "gru_9": (lambda L: L.GRU(3, reset_after=False), (None, 5, 4), [(4, 3), (3, 3), (3,)] * 3, "1"),
    "lstm_12": (lambda L: L.LSTM(3), (None, 5, 4), [(4, 3), (3, 3), (3,)] * 4, "1"),
    "bidirectional_lstm_24": (lambda L: L.Bidirectional(L.LSTM(3)), (None, 5, 4), [(4, 3), (3, 3), (3,)] * 8, "1"),
    "conv_lstm2d_12": (lambda L: L.ConvLSTM2D(3, (3, 2)), (None, 4, 7, 6, 5), [(3, 2, 5, 3), (3, 2, 3, 3), (3,)] * 4,
                       "1"),
    "time_distributed_dense": (lambda L: L.TimeDistributed(L.Dense(3)), (None, 5, 4), [(4, 3), (3,)], "1"),
    "cudnn_lstm_into_lstm": (lambda L: L.LSTM(3), (None, 5, 4), [(4, 12), (3, 12), (24,)], "2.2.4"),
    "cudnn_gru_into_gru": (lambda L: L.GRU(3, reset_after=True), (None, 5, 4), [(4, 9), (3, 9), (18,)], "2.2.4"),
    "bidirectional_cudnn_lstm": (lambda L: L.Bidirectional(L.LSTM(3)), (None, 5, 4),
                                 [(4, 12), (3, 12), (24,)] * 2, "2.2.4"),
    "nested_sequential": (lambda L: None, (None, 4, 9, 7), [(5, 4, 3, 2), (5,), (5,), (5,), (2, 6), (2,), (5,), (5,)],
                          "1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_weight_rewriting_matches_tf_keras(tfk, rng, case):
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    make, input_shape, shapes, version = CASES[case]
    if case == "nested_sequential":  # trainable weights of every sublayer, then the BN statistics
        tf_layer = tfk.Sequential([tfk.layers.Conv2D(5, (3, 2), data_format="channels_first"),
                                   tfk.layers.BatchNormalization(axis=1), tfk.layers.Flatten(),
                                   tfk.layers.Dense(2)])
        tf_layer.build(input_shape)
        tf_layer.set_weights([np.zeros(w.shape, np.float32) for w in tf_layer.weights])
        shapes = [(5, 4, 3, 2), (5,), (5,), (5,), (210, 2), (2,), (5,), (5,)]
        ours = kconvert.models.model_from_json(tf_layer.to_json())
    else:
        tf_layer = make(tfk.layers)
        ours = _twins(tfk, tf_layer, input_shape)
    old = _old(rng, *shapes)
    expected = preprocess_weights_for_loading(tf_layer, [a.copy() for a in old], version, "tensorflow")
    got = keras1_weights.preprocess_legacy(ours, [a.copy() for a in old], version, "tensorflow")
    assert [np.shape(a) for a in got] == [tuple(w.shape) for w in tf_layer.trainable_weights
                                          + tf_layer.non_trainable_weights]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_cudnn_weights_round_trip_and_gru_reset_after_false(rng):
    lstm = L.LSTM(3)
    lstm._maybe_build((None, 5, 4))
    native = [w.value for w in lstm.weights]
    native = [rng.normal(0, 1, a.shape).astype(np.float32) for a in native]
    cudnn = L.CuDNNLSTM(3)
    cudnn._maybe_build((None, 5, 4))
    as_cudnn = keras1_weights.preprocess_legacy(cudnn, native, "2.2.4", "tensorflow")
    assert as_cudnn[2].shape == (24,)
    back = keras1_weights.preprocess_legacy(lstm, as_cudnn, "2.2.4", "tensorflow")
    for a, b in zip(back, native):
        np.testing.assert_allclose(a, b, atol=1e-6)
    gru = L.GRU(3, reset_after=False)
    gru._maybe_build((None, 5, 4))
    with pytest.raises(WeightsError, match="reset_after"):
        keras1_weights.preprocess_legacy(gru, _old(rng, (4, 9), (3, 9), (18,)), "2.2.4", "tensorflow")


@pytest.mark.parametrize("target", ["channels_first", "channels_last"])
def test_dense_after_flatten_permutation_matches_tf_keras(tfk, rng, target):
    from tf_keras.src.utils.layer_utils import convert_dense_weights_data_format

    shape = (3, 5, 4)  # the feature map before Flatten, in the target format
    dense = tfk.layers.Dense(2)
    dense.build((None, 60))
    kernel = rng.normal(0, 1, (60, 2)).astype(np.float32)
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    convert_dense_weights_data_format(dense, shape, target)
    ours = keras1_weights.convert_dense_weights_data_format(kernel, shape, target)
    np.testing.assert_array_equal(ours, dense.get_weights()[0])


# ---------------------------------------------------------------------------------------------- configs


def _k1_layer(entry):
    with keras_dialect(1):
        return deserialize_entry(entry, {})


def test_keras1_value_conversions_deserialize_in_tf_keras(tfk):
    reg = keras1.regularizer({"name": "WeightRegularizer", "l1": 0.5, "l2": 0.25})
    assert tfk.regularizers.deserialize(reg).get_config() == {"l1": 0.5, "l2": 0.25}
    con = keras1.constraint({"name": "MinMaxNorm", "low": 0.1, "high": 2.0, "rate": 0.5, "axis": 1})
    assert tfk.constraints.deserialize(con).get_config() == {"min_value": 0.1, "max_value": 2.0, "rate": 0.5,
                                                            "axis": 1}
    with pytest.warns(UserWarning, match="EigenvalueRegularizer"):
        assert keras1.regularizer({"name": "EigenvalueRegularizer", "k": 1.0}, "dense_1") is None


def test_keras1_layer_arguments(tfk, rng):
    x = rng.normal(0, 1, (2, 9, 4)).astype(np.float32)
    cases = [
        ({"class_name": "UpSampling1D", "config": {"name": "u", "length": 3}}, tfk.layers.UpSampling1D(3)),
        ({"class_name": "MaxPooling1D", "config": {"name": "p", "pool_length": 3, "stride": 2, "border_mode": "same"}},
         tfk.layers.MaxPooling1D(3, 2, "same")),
        ({"class_name": "AveragePooling1D", "config": {"name": "p", "pool_length": 2, "stride": None,
                                                       "border_mode": "valid"}}, tfk.layers.AveragePooling1D(2)),
        ({"class_name": "ZeroPadding1D", "config": {"name": "z", "padding": [2, 1]}}, tfk.layers.ZeroPadding1D((2, 1))),
    ]
    for entry, tf_layer in cases:
        assert_close(_k1_layer(entry)(x), tf_layer(x).numpy(), what=entry["class_name"])
    img = rng.normal(0, 1, (2, 3, 7, 5)).astype(np.float32)
    pad = {"class_name": "ZeroPadding2D", "config": {"name": "z", "dim_ordering": "th", "padding": {
        "top_pad": 1, "bottom_pad": 0, "left_pad": 2, "right_pad": 1}}}
    assert_close(_k1_layer(pad)(img), tfk.layers.ZeroPadding2D(((1, 0), (2, 1)), data_format="channels_first")(img))
    gru = _k1_layer({"class_name": "GRU", "config": {"name": "g", "output_dim": 3, "consume_less": "gpu",
                                                     "inner_activation": "hard_sigmoid", "input_dim": 4,
                                                     "input_length": 9, "dropout_W": 0.2, "dropout_U": 0.1}})
    # consume_less "gpu" is implementation 2, which tf_keras switches to 1 when recurrent_dropout is set
    assert (gru.units, gru.reset_after, gru.implementation, gru.dropout, gru.recurrent_dropout) == (3, False, 1, 0.2, 0.1)
    assert gru._batch_input_shape == (None, 9, 4)
    lstm = _k1_layer({"class_name": "LSTM", "config": {"name": "l", "output_dim": 2, "forget_bias_init": "one",
                                                       "consume_less": "cpu"}})
    assert lstm.unit_forget_bias is True and lstm.implementation == 1
    tdd = _k1_layer({"class_name": "TimeDistributedDense", "config": {"name": "t", "output_dim": 3, "input_dim": 4,
                                                                      "input_length": 9, "activation": "relu"}})
    assert type(tdd).__name__ == "TimeDistributed" and tdd._batch_input_shape == (None, 9, 4)
    emb = _k1_layer({"class_name": "Embedding", "config": {"name": "e", "input_dim": 10, "output_dim": 3,
                                                           "init": "uniform", "dropout": 0.0, "input_length": 9,
                                                           "W_regularizer": {"name": "L1L2Regularizer", "l1": 0.0,
                                                                             "l2": 0.1}}})
    assert emb.input_dim == 10 and emb.embeddings_regularizer["class_name"] == "L1L2"


@pytest.mark.parametrize("entry, error, match", [
    ({"class_name": "BatchNormalization", "config": {"name": "bn_1", "mode": 2, "axis": -1}}, ConfigError,
     "mode=2"),
    ({"class_name": "Convolution2D", "config": {"name": "c_1", "nb_filter": 2, "nb_row": 3, "nb_col": 3,
                                                "border_mode": "full"}}, ConfigError, "full"),
    ({"class_name": "Convolution2D", "config": {"name": "c_1", "nb_filter": 2, "filters": 2, "nb_row": 3,
                                                "nb_col": 3}}, ConfigError, "both"),
    ({"class_name": "Convolution2D", "config": {"name": "c_1", "nb_filter": 2, "nb_row": 3, "nb_col": 3,
                                                "dim_ordering": "xy"}}, ConfigError, "dim_ordering"),
    ({"class_name": "Merge", "config": {"name": "m_1", "mode": ["620b", None, None], "mode_type": "lambda"}},
     ConfigError, "Python code"),
    ({"class_name": "Highway", "config": {"name": "h_1"}}, UnknownLayerError, "Highway"),
])
def test_keras1_config_errors_name_the_layer(entry, error, match):
    with pytest.raises(error, match=match) as info:
        _k1_layer(entry)
    assert info.value.layer == entry["config"]["name"]


def test_keras2_normalizer_leaves_tf_keras_configs_alone():
    folder = os.path.join(HERE, "..", "fixtures", "keras2")
    entries = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json") and name != "index.json":
            stack = [json.load(open(os.path.join(folder, name)))]
            while stack:
                entry = stack.pop()
                entries.append(entry)
                config = entry.get("config")
                stack.extend(config.get("layers", []) if isinstance(config, dict) else config or [])
    assert len(entries) > 50
    assert all(keras1.normalize_keras2(e) is e for e in entries)
    old_gru = {"class_name": "GRU", "config": {"name": "g", "units": 2, "implementation": 0}}
    assert keras1.normalize_keras2(old_gru)["config"] == {"name": "g", "units": 2, "implementation": 1,
                                                          "reset_after": False}


# ---------------------------------------------------------------------------------------------- the Merge layer


@pytest.mark.parametrize("mode, native", [("sum", "Add"), ("mul", "Multiply"), ("ave", "Average"),
                                          ("max", "Maximum"), ("concat", "Concatenate"), ("dot", "Dot"),
                                          ("cos", "Dot")])
def test_merge_modes_match_native_layers(tfk, rng, mode, native):
    a, b = (rng.normal(0, 1, (3, 6)).astype(np.float32) for _ in range(2))
    kwargs = {"axes": 1} if native == "Dot" else {}
    tf_layer = getattr(tfk.layers, native)(normalize=mode == "cos", **kwargs) if native == "Dot" else \
        getattr(tfk.layers, native)()
    ref = tf_layer([a, b]).numpy()
    assert_close(Merge(mode=mode)([a, b]), ref, what=mode)
    x, y = L.Input((6,)), L.Input((6,))
    out = merge([x, y], mode=mode, dot_axes=1)
    assert out.shape == ref.shape[:0] + (None, *ref.shape[1:])
    assert_close(kconvert.Model([x, y], out).predict([a, b]), ref)


def test_merge_dot_3d_and_concat_axis(tfk, rng):
    a, b = rng.normal(0, 1, (3, 4, 5)).astype(np.float32), rng.normal(0, 1, (3, 2, 5)).astype(np.float32)
    assert_close(Merge(mode="dot", dot_axes=[2, 2])([a, b]), tfk.layers.Dot((2, 2))([a, b]))
    c = rng.normal(0, 1, (3, 4, 2)).astype(np.float32)
    assert_close(Merge(mode="concat", concat_axis=2)([a, c]), tfk.layers.Concatenate(axis=2)([a, c]))
    with pytest.raises(ConfigError, match="invalid Merge mode"):
        Merge(mode="avg")


def test_merge_of_models_starts_a_sequential(tfk, rng, tmp_path):
    ins, outs = io("k1_merge_seq")
    left = kconvert.Sequential([L.Dense(5, activation="relu", input_shape=(6,), name="dense_1")])
    right = kconvert.Sequential([L.Dense(4, activation="tanh", input_shape=(3,), name="dense_2"),
                                 L.Dense(2, activation="relu", name="dense_3")])
    model = kconvert.Sequential()
    model.add(Merge([left, right], mode="concat", name="merge_1"))
    model.add(L.Dense(3, activation="softmax", name="dense_4"))
    assert model.input_names == ["dense_1_input", "dense_2_input"] and len(model.layers) == 2
    model.load_weights(path("k1_merge_seq_weights.h5"))  # Keras 1's flattened layout
    assert_close(model.predict(ins), outs[0])
    # the same numbers as tf_keras's functional twin with these weights
    twin = tfk.models.model_from_json(open(path("k1_merge_seq_tfk.json")).read())
    twin.set_weights(model.get_weights())
    assert_close(model.predict(ins), twin(ins).numpy())
    model.save(tmp_path / "merge.h5")
    assert_close(kconvert.load_model(tmp_path / "merge.h5").predict(ins), outs[0])
    again = kconvert.models.model_from_json(model.to_json())
    again.set_weights(model.get_weights())
    assert_close(again.predict(ins), outs[0])


def test_cudnn_file_into_native_layers(tfk):
    """CuDNNLSTM/CuDNNGRU weights of a Keras 2.2.4 file loaded into LSTM and GRU(reset_after=True)."""
    ins, outs = io("k2_cudnn")
    model = kconvert.models.model_from_json(open(path("k2_cudnn_tfk.json")).read())
    assert [type(la).__name__ for la in model.layers] == ["LSTM", "GRU"]
    model.load_weights(path("k2_cudnn.h5"))
    assert_close(model.predict(ins[0]), tf_reference(tfk, "k2_cudnn", "2.2.4", "tensorflow")(ins[0]).numpy())
    assert_close(model.predict(ins[0]), outs[0])


def test_cudnn_layers_compute_what_multi_backend_keras_computed():
    """A Keras 2.2.4 file's own CuDNNLSTM/CuDNNGRU layers, run as they are, equal the converted native run.

    Multi-backend Keras handed each gate's kernel to cuDNN as raw memory (no transpose), so the saved gate
    blocks must be re-read exactly as tf.keras's `_convert_rnn_weights` re-reads them.
    """
    ins, outs = io("k2_cudnn")
    model = kconvert.load_model(path("k2_cudnn.h5"))
    assert [type(la).__name__ for la in model.layers if "CuDNN" in type(la).__name__] == ["CuDNNLSTM", "CuDNNGRU"]
    assert_close(model.predict(ins[0]), outs[0])
