"""kconvert.formats for Keras: text configs, legacy .h5 files, format detection, atomic writes.

Real files come from tf_keras (Keras 2) at test time; the edge cases are hand-made with h5py.
"""

from __future__ import annotations

import importlib
import json
import os
import zipfile

import h5py
import numpy as np
import pytest
import yaml

from kconvert.errors import ConfigError, FormatError, KConvertError, UnsupportedFormatError, WeightsError
from kconvert.formats.atomic import atomic_path, atomic_write
from kconvert.formats.detect import detect_format
from kconvert.formats.keras_h5 import HDF5_OBJECT_HEADER_LIMIT, KerasH5File, read_keras_h5, write_keras_h5
from kconvert.formats.keras_text import dump_json, dump_yaml, load_config_text, read_config_file

# ----------------------------------------------------------------------------------------------- helpers


def legacy_model_config(model):
    """The model_config tf_keras puts into an .h5 file (legacy serialization, as save_model_to_hdf5 does)."""
    from tf_keras.src.saving.legacy.saved_model.json_utils import get_json_type
    from tf_keras.src.saving.legacy.saving_utils import model_metadata

    model.use_legacy_config = True
    try:
        config = model_metadata(model, include_optimizer=False)["model_config"]
    finally:
        del model.use_legacy_config
    return json.loads(json.dumps(config, default=get_json_type))


def legacy_weights(layer):
    """What tf_keras writes for a layer: trainable + non-trainable variables, as (name, array)."""
    from tf_keras.src.saving.legacy.hdf5_format import _legacy_weights

    return [(w.name, w.numpy()) for w in _legacy_weights(layer)]


def assert_weights_equal(ours, expected, what=""):
    assert [n for n, _ in ours] == [n for n, _ in expected], what
    for (name, a), (_, b) in zip(ours, expected):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what} {name}"
        np.testing.assert_array_equal(a, b, err_msg=f"{what} {name}")


def _attr_signature(attrs, key):
    """An attribute's stored type (dtype, string encoding, shape) and its decoded value."""
    aid = attrs.get_id(key)
    dt = aid.dtype
    sinfo = h5py.check_string_dtype(dt)
    value = attrs[key]
    if isinstance(value, np.ndarray):
        value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    elif isinstance(value, bytes):
        value = value.decode()
    if key in ("model_config", "training_config"):
        value = json.loads(value)
    return (dt.kind, sinfo.encoding if sinfo else None, sinfo.length if sinfo else None, aid.shape, value)


def describe_h5(path):
    """Every object of an HDF5 file with its attributes' types and values and its datasets' contents."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = ("Group", {k: _attr_signature(f.attrs, k) for k in f.attrs})

        def visit(name, obj):
            attrs = {k: _attr_signature(obj.attrs, k) for k in obj.attrs}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("Dataset", attrs, obj.dtype.str, obj.shape, np.asarray(obj[()]).tolist())
            else:
                out[name] = ("Group", attrs)

        f.visititems(visit)
    return out


def keras_h5_to_writer_args(r: KerasH5File):
    args = dict(
        layer_weights=[(n, r.layer_weights[n]) for n in r.layer_names],
        keras_version=r.weights_keras_version,
        backend=r.weights_backend,
        top_level_model_weights=r.top_level_model_weights,
    )
    if r.kind == "model":
        args.update(
            model_config=r.model_config, training_config=r.training_config, optimizer_weights=r.optimizer_weights
        )
    return args


# ----------------------------------------------------------------------------------- real tf_keras files


@pytest.fixture(scope="module")
def real(tmp_path_factory, tfk):
    """Functional (with a nested, partly frozen Sequential) and Sequential models saved by tf_keras."""
    d = tmp_path_factory.mktemp("tfk")
    k = tfk
    inp = k.Input((4,), name="inp")
    x = k.layers.Dense(5, name="d1")(inp)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.Dropout(0.1, name="drop")(x)
    sub = k.Sequential([k.layers.Dense(3, name="sub_dense"), k.layers.BatchNormalization(name="sub_bn")], name="sub")
    x = sub(x)
    out = k.layers.Dense(2, name="d2")(x)
    func = k.Model(inp, out, name="func")
    sub.layers[0].trainable = False  # frozen weights move to the end of the nested model's list
    func.compile("adam", "mse", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    func.fit(rng.standard_normal((16, 4)), rng.standard_normal((16, 2)), epochs=1, batch_size=8, verbose=0)
    func.save(d / "func.h5")
    func.save_weights(d / "func_w.h5")
    (d / "func.json").write_text(func.to_json())

    seq = k.Sequential([k.layers.Dense(3, input_shape=(4,), name="s1"), k.layers.Dense(1, name="s2")], name="seq")
    seq.save(d / "seq.h5")
    seq.save_weights(d / "seq_w.h5")
    (d / "seq.json").write_text(seq.to_json())
    return {"dir": d, "func": func, "seq": seq}


def test_functional_model_h5_fields(real, tfk):
    func = real["func"]
    r = read_keras_h5(real["dir"] / "func.h5")
    assert r.kind == "model"
    assert r.path == os.fspath(real["dir"] / "func.h5")
    assert r.keras_version == tfk.__version__ == r.weights_keras_version
    assert r.backend == r.weights_backend == "tensorflow"
    assert r.original_keras_version == tfk.__version__
    assert r.model_config["class_name"] == "Functional"
    assert r.model_config == legacy_model_config(func)
    assert r.training_config["loss"] == "mse"
    assert r.training_config["optimizer_config"]["config"]["name"] == "Adam"
    assert r.layer_names == [layer.name for layer in func.layers] == ["inp", "d1", "bn", "drop", "sub", "d2"]
    for layer in func.layers:
        assert_weights_equal(r.layer_weights[layer.name], legacy_weights(layer), layer.name)
        if layer.name != "sub":  # the nested model's file order differs from get_weights() (frozen layer)
            assert len(r.layer_weights[layer.name]) == len(layer.get_weights())
            for (_, a), b in zip(r.layer_weights[layer.name], layer.get_weights()):
                np.testing.assert_array_equal(a, b)
    assert [n for n, _ in r.layer_weights["sub"]] == [
        "sub_bn/gamma:0", "sub_bn/beta:0", "sub_dense/kernel:0", "sub_dense/bias:0",
        "sub_bn/moving_mean:0", "sub_bn/moving_variance:0",
    ]  # fmt: skip
    assert r.layer_weights["inp"] == [] and r.layer_weights["drop"] == []
    assert r.top_level_model_weights == []
    expected_opt = [(v.name, v.numpy()) for v in func.optimizer.variables]
    assert [n for n, _ in r.optimizer_weights][0] == "iteration:0"
    assert len(r.optimizer_weights) == len(expected_opt) == 1 + 2 * len(func.trainable_weights)
    for (_, a), (_, b) in zip(r.optimizer_weights, expected_opt):
        np.testing.assert_array_equal(a, b)


def test_sequential_model_h5_fields(real, tfk):
    seq = real["seq"]
    r = read_keras_h5(real["dir"] / "seq.h5")
    assert r.kind == "model"
    assert r.model_config["class_name"] == "Sequential"
    assert r.model_config == legacy_model_config(seq)
    assert r.layer_names == [layer.name for layer in seq.layers] == ["s1", "s2"]  # no InputLayer in Sequential
    for layer in seq.layers:
        assert_weights_equal(r.layer_weights[layer.name], legacy_weights(layer), layer.name)
        for (_, a), b in zip(r.layer_weights[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert r.layer_weights["s1"][0][0] == "s1/kernel:0"
    assert r.training_config is None and r.optimizer_weights is None  # never compiled


@pytest.mark.parametrize("model", ["func", "seq"])
def test_save_weights_h5_fields(real, tfk, model):
    m = real[model]
    r = read_keras_h5(real["dir"] / f"{model}_w.h5")
    assert r.kind == "weights"
    assert r.model_config is None and r.training_config is None and r.optimizer_weights is None
    assert r.keras_version == r.weights_keras_version == tfk.__version__
    assert r.backend == "tensorflow"
    assert r.layer_names == [layer.name for layer in m.layers]
    for layer in m.layers:
        assert_weights_equal(r.layer_weights[layer.name], legacy_weights(layer), layer.name)


@pytest.mark.parametrize("model", ["func", "seq"])
def test_to_json_reads_back(real, model):
    path = real["dir"] / f"{model}.json"
    expected = json.loads(real[model].to_json())
    assert read_config_file(path) == expected
    assert load_config_text(path.read_text()) == expected
    assert load_config_text(path.read_text(), "json", file=path) == expected
    assert detect_format(path) == "json"


def test_detect_real_files(real):
    d = real["dir"]
    assert detect_format(d / "func.h5") == "keras_h5_model"
    assert detect_format(d / "seq.h5") == "keras_h5_model"
    assert detect_format(d / "func_w.h5") == "keras_h5_weights"
    # Sniffed from bytes, not the extension.
    (d / "renamed.json").write_bytes((d / "func_w.h5").read_bytes())
    assert detect_format(d / "renamed.json") == "keras_h5_weights"
    (d / "config.txt").write_text((d / "seq.json").read_text())
    assert detect_format(d / "config.txt") == "json"


# ------------------------------------------------------------------------------ writer against tf_keras


@pytest.mark.parametrize("kind", ["func.h5", "func_w.h5", "seq.h5", "seq_w.h5"])
def test_writer_reproduces_tf_keras_layout(real, tmp_path, kind):
    """Read a tf_keras file, write it back: same objects, attribute types, string encodings and values."""
    src = real["dir"] / kind
    r = read_keras_h5(src)
    ours = tmp_path / kind
    write_keras_h5(ours, **keras_h5_to_writer_args(r))
    assert describe_h5(ours) == describe_h5(src)


def test_written_model_loads_in_tf_keras(real, tmp_path, tfk, rng):
    src = read_keras_h5(real["dir"] / "func.h5")
    new = [
        (name, [(w, rng.standard_normal(a.shape).astype(a.dtype)) for w, a in src.layer_weights[name]])
        for name in src.layer_names
    ]
    opt = [(w, (a + 1).astype(a.dtype)) for w, a in src.optimizer_weights]
    path = tmp_path / "ours.h5"
    write_keras_h5(
        path, layer_weights=new, model_config=src.model_config, training_config=src.training_config,
        optimizer_weights=opt,
    )  # fmt: skip
    m = tfk.models.load_model(path)
    expected = dict(new)
    for layer in m.layers:
        assert_weights_equal(legacy_weights(layer), expected[layer.name], layer.name)
    assert [v.numpy().tolist() for v in m.optimizer.variables] == [a.tolist() for _, a in opt]
    x = rng.standard_normal((3, 4)).astype("float32")
    assert m.predict(x, verbose=0).shape == (3, 2)


def test_written_model_with_to_json_config_loads_in_tf_keras(real, tmp_path, tfk, rng):
    seq = real["seq"]
    cfg = json.loads(seq.to_json())
    model_config = {"class_name": cfg["class_name"], "config": cfg["config"]}
    new = [(layer.name, [(n, rng.standard_normal(a.shape).astype("float32")) for n, a in legacy_weights(layer)])
           for layer in seq.layers]
    path = tmp_path / "seq_ours.h5"
    write_keras_h5(path, layer_weights=new, model_config=model_config)
    m = tfk.models.load_model(path)
    for layer, (_, weights) in zip(m.layers, new):
        assert_weights_equal(legacy_weights(layer), weights, layer.name)
    x = rng.standard_normal((2, 4)).astype("float32")
    w1, b1, w2, b2 = (a for _, ws in new for _, a in ws)
    np.testing.assert_allclose(m.predict(x, verbose=0), (x @ w1 + b1) @ w2 + b2, rtol=1e-5, atol=1e-5)


def test_written_weights_load_in_tf_keras(real, tmp_path, tfk, rng):
    func = real["func"]
    clone = tfk.models.clone_model(func)
    new = [(layer.name, [(n, rng.standard_normal(a.shape).astype(a.dtype)) for n, a in legacy_weights(layer)])
           for layer in func.layers]
    path = tmp_path / "w.h5"
    write_keras_h5(path, layer_weights=new)
    assert detect_format(path) == "keras_h5_weights"
    clone.load_weights(path)
    for layer, (_, weights) in zip(clone.layers, new):
        assert_weights_equal(legacy_weights(layer), weights, layer.name)
    # by_name loading matches groups by layer name.
    clone2 = tfk.models.clone_model(func)
    clone2.load_weights(path, by_name=True)
    for layer, (_, weights) in zip(clone2.layers, new):
        assert_weights_equal(legacy_weights(layer), weights, layer.name)


def test_writer_round_trip_values(tmp_path, rng):
    lw = [
        ("a", [("a/kernel:0", rng.standard_normal((3, 2)).astype("float32")), ("a/bias:0", np.zeros(2, "float32"))]),
        ("pool", []),
        ("emb", [("emb/embeddings:0", rng.integers(0, 9, (5, 3)).astype("int32"))]),
        ("scalar", [("scalar/step:0", np.array(7, dtype="int64"))]),
    ]
    path = tmp_path / "rt.h5"
    write_keras_h5(path, layer_weights=lw, keras_version="2.15.0", backend="tensorflow")
    r = read_keras_h5(path)
    assert r.kind == "weights" and r.layer_names == ["a", "pool", "emb", "scalar"]
    assert r.keras_version == r.weights_keras_version == "2.15.0"
    for name, weights in lw:
        assert_weights_equal(r.layer_weights[name], weights, name)
    assert r.layer_weights["scalar"][0][1].shape == ()
    with h5py.File(path) as f:
        assert f["pool"].attrs["weight_names"].dtype == np.float64
        assert f["pool"].attrs["weight_names"].shape == (0,)
        assert isinstance(f["a/a/kernel:0"], h5py.Dataset)  # '/' in the weight name made a subgroup


# ------------------------------------------------------------------------------------ chunked attributes


def _long_names(n=2000, width=40):
    return [f"layer_{i:05d}_" + "x" * width for i in range(n)]


def test_chunked_layer_names_hand_made(tmp_path):
    names = _long_names()
    assert len(names) * len(names[0]) > 64 * 1024
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        half = len(names) // 2
        f.attrs["layer_names0"] = np.array([n.encode() for n in names[:half]])
        f.attrs["layer_names1"] = np.array([n.encode() for n in names[half:]])
        f.attrs["keras_version"] = b"2.2.4"
        for n in names:
            f.create_group(n).attrs["weight_names"] = np.asarray([])
        g = f[names[5]]
        del g.attrs["weight_names"]
        g.attrs["weight_names0"] = np.array([b"w/a:0"])
        g.attrs["weight_names1"] = np.array([b"w/b:0"])
        g["w/a:0"] = np.ones(2)
        g["w/b:0"] = np.zeros(3)
    r = read_keras_h5(path)
    assert r.layer_names == names
    assert [n for n, _ in r.layer_weights[names[5]]] == ["w/a:0", "w/b:0"]
    assert detect_format(path) == "keras_h5_weights"


def test_writer_chunks_like_tf_keras(tmp_path, tfk):
    from tf_keras.src.saving.legacy.hdf5_format import (
        load_attributes_from_hdf5_group,
        save_attributes_to_hdf5_group,
    )

    names = _long_names()
    path = tmp_path / "ours.h5"
    big_layer = [(f"big/w{i:04d}_" + "y" * 60 + ":0", np.full((1,), i, "float32")) for i in range(1200)]
    write_keras_h5(path, layer_weights=[(n, []) for n in names] + [("big", big_layer)])
    ref = tmp_path / "ref.h5"
    with h5py.File(ref, "w") as f:
        save_attributes_to_hdf5_group(f, "layer_names", [n.encode() for n in names + ["big"]])
        save_attributes_to_hdf5_group(f.create_group("big"), "weight_names", [n.encode() for n, _ in big_layer])
    with h5py.File(path) as ours, h5py.File(ref) as theirs:
        assert "layer_names" not in ours.attrs and "layer_names1" in ours.attrs
        for group in ("/", "big"):
            a, b = ours[group].attrs, theirs[group].attrs
            keys = sorted(k for k in b if k.startswith(("layer_names", "weight_names")))
            assert keys and sorted(k for k in a if k in keys or k.startswith(("layer_names", "weight_names"))) == keys
            for key in keys:
                assert a[key].dtype == b[key].dtype and a[key].tolist() == b[key].tolist(), key
        assert load_attributes_from_hdf5_group(ours, "layer_names") == names + ["big"]
        assert load_attributes_from_hdf5_group(ours["big"], "weight_names") == [n for n, _ in big_layer]
    r = read_keras_h5(path)
    assert r.layer_names == names + ["big"]
    assert_weights_equal(r.layer_weights["big"], big_layer)


def test_writer_rejects_name_over_header_limit(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(WeightsError, match="longer than"):
        write_keras_h5(path, layer_weights=[("a" * (HDF5_OBJECT_HEADER_LIMIT + 1), [])])
    assert not path.exists() and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- hand-made h5 edge cases


def _make_weights_file(path, encode, keras_version=b"2.2.4"):
    """A save_weights file whose name attributes are written with the given encoder."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = encode(["dense_1", "flatten_1"])
        if keras_version is not None:
            f.attrs["keras_version"] = keras_version
            f.attrs["backend"] = keras_version and b"theano"
        g = f.create_group("dense_1")
        g.attrs["weight_names"] = encode(["dense_1/kernel:0", "dense_1/bias:0"])
        g["dense_1/kernel:0"] = np.arange(6, dtype="float32").reshape(2, 3)
        g["dense_1/bias:0"] = np.ones(3, "float32")
        f.create_group("flatten_1").attrs["weight_names"] = np.asarray([])


ENCODINGS = {
    "S-array (h5py 2 / chunks)": lambda names: np.array([n.encode() for n in names]),
    "O-array vlen ascii (h5py 3)": lambda names: [n.encode() for n in names],
    "O-array vlen utf-8 str": lambda names: np.array(names, dtype=h5py.string_dtype("utf-8")),
    "U-list of str": lambda names: names,
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_name_attribute_encodings(tmp_path, encoding):
    path = tmp_path / "w.h5"
    _make_weights_file(path, ENCODINGS[encoding])
    r = read_keras_h5(path)
    assert r.layer_names == ["dense_1", "flatten_1"]
    assert [n for n, _ in r.layer_weights["dense_1"]] == ["dense_1/kernel:0", "dense_1/bias:0"]
    np.testing.assert_array_equal(r.layer_weights["dense_1"][0][1], np.arange(6).reshape(2, 3))
    assert r.layer_weights["flatten_1"] == []  # empty float64 weight_names = no weights
    assert r.keras_version == "2.2.4" and r.weights_backend == "theano"


@pytest.mark.parametrize("value", [b"2.1.6", "2.1.6", np.bytes_(b"2.1.6"), np.array([b"2.1.6"])])
def test_version_attribute_types(tmp_path, value):
    path = tmp_path / "w.h5"
    _make_weights_file(path, ENCODINGS["S-array (h5py 2 / chunks)"], keras_version=value)
    r = read_keras_h5(path)
    assert r.keras_version == r.weights_keras_version == "2.1.6"


def test_missing_keras_version_means_keras_1(tmp_path):
    path = tmp_path / "k1.h5"
    _make_weights_file(path, ENCODINGS["S-array (h5py 2 / chunks)"], keras_version=None)
    r = read_keras_h5(path)
    assert r.keras_version is None and r.weights_keras_version is None and r.backend is None
    assert r.original_keras_version == "1"


def test_whole_model_bytes_and_str_attrs(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [], "x": float("nan")}}
    for i, conv in enumerate([lambda s: s.encode(), lambda s: s]):
        path = tmp_path / f"m{i}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["keras_version"] = conv("2.2.4")
            f.attrs["backend"] = conv("tensorflow")
            f.attrs["model_config"] = conv(json.dumps(config))
            g = f.create_group("model_weights")
            g.attrs["layer_names"] = np.array([], dtype="S1")
            g.attrs["keras_version"] = conv("2.2.4")
        r = read_keras_h5(path)
        assert r.kind == "model" and r.keras_version == "2.2.4" and r.backend == "tensorflow"
        assert r.model_config["class_name"] == "Sequential" and np.isnan(r.model_config["config"]["x"])
        assert r.layer_names == [] and r.layer_weights == {}


def test_slash_in_weight_names_makes_nested_groups(tmp_path):
    path = tmp_path / "nested.h5"
    names = ["bidirectional/forward_lstm/lstm_cell/kernel:0", "bidirectional/backward_lstm/lstm_cell/kernel:0"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"bidirectional"]
        f.attrs["keras_version"] = b"2.15.0"
        g = f.create_group("bidirectional")
        g.attrs["weight_names"] = [n.encode() for n in names]
        g[names[0]] = np.full((2, 4), 1.0, "float32")
        g[names[1]] = np.full((2, 4), 2.0, "float32")
        g["zzz_unlisted"] = np.zeros(1)  # not in weight_names: must be ignored
    r = read_keras_h5(path)
    assert [n for n, _ in r.layer_weights["bidirectional"]] == names  # weight_names order, not h5 order
    assert r.layer_weights["bidirectional"][1][1][0, 0] == 2.0


def test_missing_dataset_names_file_and_layer(tmp_path):
    path = tmp_path / "missing.h5"
    _make_weights_file(path, ENCODINGS["S-array (h5py 2 / chunks)"])
    with h5py.File(path, "a") as f:
        del f["dense_1/dense_1/bias:0"]
    with pytest.raises(FormatError) as e:
        read_keras_h5(path)
    assert e.value.file == os.fspath(path) and e.value.layer == "dense_1"
    assert "dense_1/bias:0" in str(e.value) and os.fspath(path) in str(e.value)


def test_missing_layer_group_names_layer(tmp_path):
    path = tmp_path / "missing_group.h5"
    _make_weights_file(path, ENCODINGS["S-array (h5py 2 / chunks)"])
    with h5py.File(path, "a") as f:
        del f["flatten_1"]
    with pytest.raises(FormatError) as e:
        read_keras_h5(path)
    assert e.value.layer == "flatten_1" and os.fspath(path) in str(e.value)


def test_model_without_model_weights_group(tmp_path):
    path = tmp_path / "nomw.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b'{"class_name": "Sequential", "config": {}}'
    with pytest.raises(FormatError, match="model_weights"):
        read_keras_h5(path)


def test_bad_model_config_json(tmp_path):
    path = tmp_path / "badcfg.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b'{"class_name": "Sequential", '
        f.create_group("model_weights").attrs["layer_names"] = np.asarray([])
    with pytest.raises(FormatError, match="model_config.*line 1") as e:
        read_keras_h5(path)
    assert e.value.file == os.fspath(path)
    with h5py.File(path, "a") as f:
        f.attrs["model_config"] = b"[1, 2]"
    with pytest.raises(ConfigError, match="model_config"):
        read_keras_h5(path)


def test_keras3_weights_layout_is_unsupported(tmp_path):
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("layers/dense/vars")["0"] = np.ones((2, 2))
        f.create_group("vars")
        f.create_group("optimizer/vars")
    assert detect_format(path) == "keras3_weights_h5"
    with pytest.raises(UnsupportedFormatError, match="Keras 3") as e:
        read_keras_h5(path)
    assert os.fspath(path) in str(e.value)


def test_real_keras3_files(tmp_path):
    keras = importlib.import_module("keras")
    assert keras.__version__.startswith("3"), "the test extra installs Keras 3"
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(1, name="b")])
    m.save(tmp_path / "m.keras")
    m.save_weights(tmp_path / "m.weights.h5")
    m.save(tmp_path / "legacy.h5")
    assert detect_format(tmp_path / "m.keras") == "keras_zip"
    assert detect_format(tmp_path / "m.weights.h5") == "keras3_weights_h5"
    with pytest.raises(UnsupportedFormatError):
        read_keras_h5(tmp_path / "m.weights.h5")
    r = read_keras_h5(tmp_path / "legacy.h5")
    assert r.keras_version == keras.__version__ and r.layer_names == ["a", "b"]
    for layer in m.layers:
        got = [a for _, a in r.layer_weights[layer.name]]
        for a, b in zip(got, layer.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_hdf5_but_not_keras(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.ones(3)
    for fn in (read_keras_h5, detect_format):
        with pytest.raises(FormatError, match="not a Keras") as e:
            fn(path)
        assert not isinstance(e.value, UnsupportedFormatError)
        assert os.fspath(path) in str(e.value)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.02])
def test_truncated_h5(real, tmp_path, cut):
    data = (real["dir"] / "func.h5").read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: int(len(data) * cut)])
    for fn in (read_keras_h5, detect_format):
        with pytest.raises(FormatError) as e:
            fn(path)
        assert os.fspath(path) in str(e.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4, np.random.default_rng(7).bytes(4096), b"PK\x03\x04junk"],
    ids=["empty", "hdf5-magic-then-garbage", "random", "zip-magic-then-garbage"],
)
def test_garbage_files(tmp_path, content):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    for fn in (read_keras_h5, detect_format):
        with pytest.raises(FormatError) as e:
            fn(path)
        assert os.fspath(path) in str(e.value)


def test_missing_file_and_directory(tmp_path):
    for fn in (read_keras_h5, detect_format, read_config_file):
        with pytest.raises(FormatError, match="no such file") as e:
            fn(tmp_path / "nope.h5")
        assert "nope.h5" in str(e.value)
        with pytest.raises(FormatError, match="directory"):
            fn(tmp_path)


# ----------------------------------------------------------------------------------- detection: TF dirs


def test_savedmodel_dir_fake_and_real(real, tmp_path):
    fake = tmp_path / "fake_sm"
    fake.mkdir()
    (fake / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(UnsupportedFormatError, match="SavedModel") as e:
        detect_format(fake)
    assert os.fspath(fake) in str(e.value) and "model.save('model.h5')" in str(e.value)
    with pytest.raises(UnsupportedFormatError, match="SavedModel"):
        detect_format(fake / "saved_model.pb")
    sm = tmp_path / "real_sm"
    real["seq"].save(sm, save_format="tf")
    with pytest.raises(UnsupportedFormatError, match="SavedModel") as e:
        detect_format(sm)
    assert os.fspath(sm) in str(e.value)


def test_tf_checkpoint(real, tmp_path):
    ck = tmp_path / "ck"
    prefix = ck / "ckpt"
    real["seq"].save_weights(os.fspath(prefix))  # no .h5 suffix: TensorFlow checkpoint format
    assert (ck / "ckpt.index").exists() and (ck / "checkpoint").exists()
    for p in (prefix, ck / "ckpt.index", ck / "ckpt.data-00000-of-00001", ck / "checkpoint", ck):
        with pytest.raises(UnsupportedFormatError, match="checkpoint") as e:
            detect_format(p)
        assert os.fspath(p) in str(e.value)


def test_fake_tf_checkpoint_prefix(tmp_path):
    (tmp_path / "w.index").write_bytes(b"\x00" * 40 + (0xDB4775248B80FB57).to_bytes(8, "little"))
    (tmp_path / "w.data-00000-of-00001").write_bytes(b"\x00" * 16)
    with pytest.raises(UnsupportedFormatError, match="checkpoint"):
        detect_format(tmp_path / "w")
    with pytest.raises(UnsupportedFormatError, match="checkpoint"):
        detect_format(tmp_path / "w.index")


def test_detect_zip_and_text(tmp_path):
    kz = tmp_path / "model.bin"
    with zipfile.ZipFile(kz, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"")
    assert detect_format(kz) == "keras_zip"
    other = tmp_path / "other.keras"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(FormatError, match="config.json"):
        detect_format(other)
    (tmp_path / "m.yaml").write_text("class_name: Sequential\nconfig: {}\n")
    (tmp_path / "m_noext").write_text("backend: tensorflow\nclass_name: Sequential\n")
    (tmp_path / "m.txt").write_text('  \n{"class_name": "Sequential"}')
    (tmp_path / "notes.txt").write_text("just some notes\n")
    assert detect_format(tmp_path / "m.yaml") == "yaml"
    assert detect_format(tmp_path / "m_noext") == "yaml"
    assert detect_format(tmp_path / "m.txt") == "json"
    with pytest.raises(FormatError, match="notes.txt"):
        detect_format(tmp_path / "notes.txt")


# ----------------------------------------------------------------------------------------- JSON / YAML


def test_yaml_with_python_tuple_loads(real):
    seq = real["seq"]
    text = yaml.dump(seq._updated_config())  # what Keras's to_yaml() wrote before it was removed
    assert "!!python/tuple" in text
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    expected = json.loads(seq.to_json())
    assert load_config_text(text, "yaml") == expected
    assert load_config_text(text) == expected  # sniffed as YAML
    assert load_config_text("a: !!python/tuple [1, [2, 3]]\n") == {"a": [1, [2, 3]]}


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/object:collections.OrderedDict {{}}",
    ],
)
def test_yaml_python_tags_rejected(tmp_path, payload):
    marker = tmp_path / "pwned"
    text = "class_name: Sequential\nconfig:\n  evil: " + payload.format(marker=marker) + "\n"
    with pytest.raises(FormatError, match="line 3") as e:
        load_config_text(text, file="evil.yaml")
    assert "evil.yaml" in str(e.value) and "python/" in str(e.value)
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(FormatError, match="evil.yaml"):
        read_config_file(path)
    assert not marker.exists()


def test_malformed_json_names_file_line_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "class_name": "Sequential",\n  "config": [1, 2,, 3]\n}\n')
    with pytest.raises(FormatError) as e:
        read_config_file(path)
    msg = str(e.value)
    assert os.fspath(path) in msg and "line 3" in msg and "column 19" in msg
    with pytest.raises(FormatError, match=r"m\.json: invalid JSON at line 1"):
        load_config_text('{"a": ', file="m.json")


def test_malformed_yaml_names_file_line_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("class_name: Sequential\nconfig:\n  layers: [1, 2\n  name: x\n")
    with pytest.raises(FormatError) as e:
        read_config_file(path)
    msg = str(e.value)
    assert os.fspath(path) in msg and "line " in msg and "column " in msg
    with pytest.raises(FormatError, match="line 2, column"):
        load_config_text("a: 1\n\tb: 2\n", "yaml")


def test_json_nan_infinity_and_top_level_checks(tmp_path):
    cfg = load_config_text('{"class_name": "X", "config": {"a": NaN, "b": Infinity, "c": -Infinity}}')
    assert np.isnan(cfg["config"]["a"]) and cfg["config"]["b"] == float("inf") and cfg["config"]["c"] == -float("inf")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_text("[1, 2]", file="list.json")
    with pytest.raises(ConfigError):
        load_config_text("- a\n- b\n", "yaml")
    with pytest.raises(FormatError, match="empty"):
        load_config_text("   \n", file="e.json")
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FormatError, match="bin.json"):
        read_config_file(path)


def test_dump_json_and_yaml():
    obj = {
        "class_name": "Conv2D",
        "config": {
            "kernel_size": (3, 3),
            "units": np.int64(4),
            "rate": np.float32(0.5),
            "arr": np.arange(3),
            "nan": float("nan"),
            "nested": [{"t": (1, (2, 3))}],
        },
    }
    text = dump_json(obj, indent=1, sort_keys=True)
    back = load_config_text(text)
    assert back["config"]["kernel_size"] == [3, 3] and back["config"]["arr"] == [0, 1, 2]
    assert back["config"]["units"] == 4 and back["config"]["rate"] == 0.5 and np.isnan(back["config"]["nan"])
    y = dump_yaml(obj)
    assert "!!python" not in y
    assert yaml.safe_load(y)["config"]["nested"] == [{"t": [1, [2, 3]]}]
    yback = load_config_text(y, "yaml")
    assert yback["config"]["kernel_size"] == [3, 3] and np.isnan(yback["config"]["nan"])
    assert dump_json(yback, sort_keys=True) == dump_json(back, sort_keys=True)


# -------------------------------------------------------------------------------------------- atomicity


def test_atomic_write_keeps_existing_file_on_error(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("original")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, "w") as f:
            f.write("partial output")
            f.flush()
            raise RuntimeError("boom")
    assert path.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with atomic_write(path, "w") as f:
        f.write("new")
    assert path.read_text() == "new"
    with atomic_write(tmp_path / "b.bin") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "out.json"]


def test_atomic_path_keeps_existing_file_on_error(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="midway"):
        with atomic_path(path) as tmp:
            assert os.path.dirname(tmp) == os.fspath(tmp_path) and tmp != os.fspath(path)
            with h5py.File(tmp, "w") as f:
                f["x"] = np.ones(3)
            raise ValueError("midway")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f["x"] = np.ones(3)
    with h5py.File(path) as f:
        assert f["x"][()].tolist() == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_write_keras_h5_failure_leaves_existing_file(tmp_path):
    path = tmp_path / "model.h5"
    good = [("a", [("a/kernel:0", np.ones((2, 2), "float32"))])]
    write_keras_h5(path, layer_weights=good)
    before = path.read_bytes()
    bad = good + [("z_last", [("z/kernel:0", np.array(["not", "numbers"], dtype=object))])]
    with pytest.raises(WeightsError, match="non-numeric") as e:
        write_keras_h5(path, layer_weights=bad)
    assert e.value.layer == "z_last" and os.fspath(path) in str(e.value)
    with pytest.raises(KConvertError):
        # 'b/kernel:0' is a dataset, so 'b/kernel:0/x' cannot be created: h5py fails midway.
        write_keras_h5(path, layer_weights=[("b", [("b/kernel:0", np.ones(1)), ("b/kernel:0/x", np.ones(1))])])
    with pytest.raises(WeightsError, match="duplicate"):
        write_keras_h5(path, layer_weights=good + good)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]


def test_doubly_encoded_json_is_decoded_with_a_warning(tmp_path):
    """`json.dump(model.to_json(), f)` files (common in 2016-17 tutorials) hold the JSON as a JSON string."""
    import json as _json

    import pytest as _pytest

    from kconvert.formats.keras_text import load_config_text

    inner = {"class_name": "Sequential", "config": [{"class_name": "Dense", "config": {"units": 2}}]}
    with _pytest.warns(UserWarning, match="encoded twice"):
        assert load_config_text(_json.dumps(_json.dumps(inner)), "json") == inner
