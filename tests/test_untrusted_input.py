"""No code execution from data, and corrupted-but-parsable weights noticed (issue 8).

Already proven elsewhere, not repeated here: `!!python/object...` YAML tags refused (test_formats_keras), Lambda
bytecode only with safe_mode=False (test_lambda_custom), a Keras 3 archive with a lambda refused in safe mode
(test_lambda_keras3), zip-slip and zip bombs (test_keras3). The fuzz suite (tests/fuzz) checks the error contract.
"""

import ast
import pathlib
import warnings

import h5py
import numpy as np
import pytest

import kconvert
from kconvert.errors import FormatError, KConvertWarning, NonFiniteWeightsError
from kconvert.formats.caffe.caffemodel import read_caffemodel, write_caffemodel

SOURCE = pathlib.Path(kconvert.__file__).parent


@pytest.fixture(scope="module")
def tf_mlp(tfk, tmp_path_factory):
    """A tf_keras MLP (input 7 -> 5 -> 3) saved whole and as weights, with its weights."""
    rng = np.random.default_rng(8)
    model = tfk.Sequential([tfk.Input((7,)), tfk.layers.Dense(5, activation="tanh", name="hidden"),
                            tfk.layers.Dense(3, name="out")])
    model.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") for w in model.get_weights()])
    tmp = tmp_path_factory.mktemp("mlp")
    model.save(tmp / "m.h5")
    model.save_weights(tmp / "w.h5")
    return model, tmp


def _with_value(tfk, model, tmp, value, name):
    """A copy of `model` saved with one kernel entry set to `value` (what a bit flip in the payload makes)."""
    weights = model.get_weights()
    weights[2] = weights[2].copy()
    weights[2][1, 2] = value
    clone = tfk.models.clone_model(model)
    clone.set_weights(weights)
    clone.save(tmp / f"{name}.h5")
    clone.save_weights(tmp / f"{name}_w.h5")
    return tmp / f"{name}.h5", tmp / f"{name}_w.h5"


@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_nonfinite_weights_warn_by_default_and_raise_when_strict(tfk, tf_mlp, value):
    model, tmp = tf_mlp
    whole, weights = _with_value(tfk, model, tmp, value, f"bad_{value}")
    with pytest.warns(KConvertWarning, match="NaN or Inf") as record:
        ours = kconvert.load_model(whole)
    assert str(whole) in str(record[0].message)
    x = np.random.default_rng(1).normal(size=(4, 7)).astype("float32")
    ref = tfk.models.load_model(whole).predict(x, verbose=0)  # loaded as is by the reference, too
    np.testing.assert_array_equal(np.isfinite(ours.predict(x)), np.isfinite(ref))
    assert not np.isfinite(ref[:, 2]).any() and np.isfinite(ref[:, [0, 1]]).all()
    with pytest.raises(NonFiniteWeightsError) as info:
        kconvert.load_model(whole, strict=True)
    assert str(whole) in str(info.value) and info.value.layer == "out"

    fresh = kconvert.load_model(tmp / "m.h5")
    with pytest.warns(KConvertWarning):
        fresh.load_weights(weights)
    with pytest.raises(NonFiniteWeightsError, match="w.h5"):
        kconvert.load_model(tmp / "m.h5").load_weights(weights, strict=True)


def test_finite_weights_load_silently_even_when_strict(tf_mlp):
    model, tmp = tf_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("error", KConvertWarning)
        ours = kconvert.load_model(tmp / "m.h5", strict=True)
        ours.load_weights(tmp / "w.h5", strict=True)
    x = np.random.default_rng(2).normal(size=(3, 7)).astype("float32")
    from conftest import assert_close

    assert_close(ours.predict(x), model.predict(x, verbose=0))


def test_nonfinite_keras3_archive_is_noticed(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")])
    w = model.get_weights()
    w[1][2] = np.nan
    model.set_weights(w)
    model.save(tmp_path / "k.keras")
    with pytest.warns(KConvertWarning, match="NaN or Inf"):
        kconvert.load_model(tmp_path / "k.keras")
    with pytest.raises(NonFiniteWeightsError, match="k.keras"):
        kconvert.load_model(tmp_path / "k.keras", strict=True)


def test_nonfinite_caffemodel_blobs_are_noticed(tmp_path):
    kernel = np.random.default_rng(3).normal(size=(4, 3, 3, 5)).astype("float32")
    kernel[1, 2, 0, 4] = np.inf
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, [("conv", "Convolution", [kernel, np.zeros(4, "float32")])])
    with pytest.warns(KConvertWarning, match="conv blob 0"):
        net = read_caffemodel(path)
    np.testing.assert_array_equal(net.layers[0].blobs[0], kernel)
    with pytest.raises(NonFiniteWeightsError) as info:
        read_caffemodel(path, strict=True)
    assert info.value.layer == "conv" and "w.caffemodel" in str(info.value)


def test_hdf5_external_links_are_never_followed(tf_mlp, tmp_path):
    """The link points at the real weights (following it would load them): kconvert refuses it instead."""
    _, tmp = tf_mlp
    outside = tmp_path / "elsewhere" / "real_weights.h5"
    outside.parent.mkdir()
    outside.write_bytes((tmp / "w.h5").read_bytes())
    linked = tmp_path / "linked.h5"
    linked.write_bytes((tmp / "m.h5").read_bytes())
    with h5py.File(linked, "a") as f:
        del f["model_weights"]
        f["model_weights"] = h5py.ExternalLink(str(outside), "/")
    with h5py.File(linked, "r") as f:  # the file as h5py itself reads it: the link works
        assert "hidden" in f["model_weights"]
    with pytest.raises(FormatError, match="external link") as info:
        kconvert.load_model(linked)
    assert "linked.h5" in str(info.value) and "real_weights.h5" in str(info.value)

    ok = kconvert.load_model(tmp / "m.h5")
    per_weight = tmp_path / "per_weight.h5"
    per_weight.write_bytes((tmp / "w.h5").read_bytes())
    with h5py.File(per_weight, "a") as f:
        name = [n for n in f["out"].attrs["weight_names"]][0]
        name = name.decode() if isinstance(name, bytes) else name
        del f["out"][name]
        f["out"][name] = h5py.ExternalLink(str(outside), f"/out/{name}")
    with pytest.raises(FormatError, match="external link"):
        ok.load_weights(per_weight)


def test_custom_yaml_tags_are_refused(tmp_path):
    path = tmp_path / "tagged.yaml"
    path.write_text("class_name: !custom Sequential\nconfig: {name: s, layers: []}\n")
    with pytest.raises(FormatError, match="tagged.yaml"):
        kconvert.load_model(path)
    path.write_text("class_name: Sequential\nconfig: !!python/tuple [1, 2]\nextra: !!binary aGVsbG8=\n")
    with pytest.raises(kconvert.errors.KConvertError):  # the tuple is fine; a config list is no Sequential config
        kconvert.load_model(path)


def test_no_pickle_anywhere_in_the_readers():
    """No module imports pickle (or its relatives), and every np.load passes allow_pickle=False. (marshal, for
    Lambda bytecode, is used only behind safe_mode=False: test_lambda_custom.)"""
    offenders = []
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve")
                       for n in names):
                    offenders.append(f"{path}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "np":
                flag = {k.arg: k.value for k in node.keywords}.get("allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    offenders.append(f"{path}:{node.lineno} np.load without allow_pickle=False")
    assert not offenders, offenders


def test_caffe_conversion_passes_strict_through(tmp_path):
    """`convert.caffe_to_keras(..., strict=True)` refuses a caffemodel with a NaN blob; by default it warns."""
    from kconvert.convert import caffe_to_keras

    fixtures = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "caffe"
    layers = read_caffemodel(fixtures / "lenet.caffemodel").layers
    blobs = [(lp.name, lp.type, [np.array(b, dtype="float32") for b in lp.blobs]) for lp in layers]
    blobs[1][2][0][7, 3, 2, 1] = np.nan  # conv2's kernel
    write_caffemodel(tmp_path / "bad.caffemodel", blobs)
    with pytest.warns(KConvertWarning, match="conv2"):
        caffe_to_keras(fixtures / "lenet.prototxt", tmp_path / "bad.caffemodel")
    with pytest.raises(NonFiniteWeightsError) as info:
        caffe_to_keras(fixtures / "lenet.prototxt", tmp_path / "bad.caffemodel", strict=True)
    assert info.value.layer == "conv2" and "bad.caffemodel" in str(info.value)
