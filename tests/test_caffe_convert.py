"""Caffe -> kconvert: every layer's output of the fixture nets equals OpenCV 4.x's (fixtures/make_caffe.py), in
channels_last and channels_first, through the numpy engine, ONNX, kconvert's own files and the real frameworks."""

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.convert import caffe_to_keras, caffe_to_onnx
from kconvert.errors import ConfigError, UnknownLayerError, WeightsError
from kconvert.formats.caffe.caffemodel import read_caffemodel, write_caffemodel
from kconvert.runtime import numpy_engine

CAFFE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "caffe")
with open(os.path.join(CAFFE, "index.json")) as _f:
    NETS = sorted(json.load(_f)["nets"])


def _files(name):
    return os.path.join(CAFFE, f"{name}.prototxt"), os.path.join(CAFFE, f"{name}.caffemodel")


def _io(name):
    return np.load(os.path.join(CAFFE, f"{name}_io.npz"))


def _to_keras(x, data_format):
    """A Caffe (N, C, ...) value as the model holds it: channels last from rank 3 on."""
    return np.moveaxis(x, 1, -1) if data_format == "channels_last" and x.ndim >= 3 else x


def _to_caffe(y, data_format):
    return np.moveaxis(y, -1, 1) if data_format == "channels_last" and y.ndim >= 3 else y


def _layer_probe(model, io):
    """A model whose outputs are the values of every Caffe layer OpenCV reported (fused BatchNorms excepted)."""
    names = [k[len("layer:"):] for k in io.files if k.startswith("layer:")]
    present = [n for n in names if n in model.caffe_layers]
    return names, present, kconvert.Model(model.inputs, [model.caffe_layers[n][0] for n in present])


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", NETS)
def test_every_layer_equals_opencv(name, data_format):
    prototxt, caffemodel = _files(name)
    model = caffe_to_keras(prototxt, caffemodel, data_format=data_format)
    io = _io(name)
    names, present, probe = _layer_probe(model, io)
    # the only layers without a value of their own are BatchNorms folded into the Scale after them
    folded = set(names) - set(present)
    assert all(n.endswith("_bn") for n in folded), folded
    outs = numpy_engine.predict(probe._graph, [_to_keras(io["input_0"], data_format)])
    for n, y in zip(present, outs):
        ref = io[f"layer:{n}"]
        assert_close(_to_caffe(y, data_format).reshape(ref.shape), ref, what=f"{name} layer {n}")


@pytest.mark.parametrize("name", NETS)
def test_caffe_to_onnx_is_nchw_without_transposes(name, tmp_path):
    prototxt, caffemodel = _files(name)
    path = tmp_path / f"{name}.onnx"
    proto = caffe_to_onnx(prototxt, caffemodel, path)
    permutes = open(prototxt).read().count('type: "Permute"')  # the net's own transposes; no layout ones
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) == permutes
    io = _io(name)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = caffe_to_keras(prototxt, caffemodel, data_format="channels_first")
    outs = sess.run(None, {sess.get_inputs()[0].name: io["input_0"]})
    for value, y in zip(model.outputs, outs):
        layer = value.node.layer.name
        ref = io[f"layer:{layer}"]
        assert_close(y.reshape(ref.shape), ref, what=f"{name} output {layer}")


@pytest.mark.parametrize("name", NETS)
def test_saved_model_loads_in_kconvert_and_tf_keras(name, tmp_path, tfk):
    prototxt, caffemodel = _files(name)
    model = caffe_to_keras(prototxt, caffemodel)
    x = _to_keras(_io(name)["input_0"], "channels_last")
    ref = model.predict(x)
    path = str(tmp_path / f"{name}.h5")
    model.save(path)
    again = kconvert.load_model(path).predict(x)
    real = tfk.models.load_model(path, custom_objects=kconvert.keras_objects("tf_keras"), compile=False)
    got = real.predict(x, verbose=0)
    for a, b, c in zip(*(v if isinstance(v, list) else [v] for v in (ref, again, got))):
        assert_close(b, a)
        assert_close(c, a)


@pytest.mark.parametrize("name", ["resnet_block", "squeeze_mobile", "alexnet_like", "elementwise", "pooling_rules"])
def test_saved_keras3_archive_loads_in_keras3(name, tmp_path):
    import keras

    prototxt, caffemodel = _files(name)
    model = caffe_to_keras(prototxt, caffemodel)
    x = _to_keras(_io(name)["input_0"], "channels_last")
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    real = keras.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"))
    ours = model.predict(x)
    theirs = real.predict(x, verbose=0)
    for a, b in zip(*(v if isinstance(v, list) else [v] for v in (ours, theirs))):
        assert_close(b, a)


def test_batchnorm_and_scale_become_one_batchnormalization():
    model = caffe_to_keras(*_files("resnet_block"))
    kinds = [type(la).__name__ for la in model.layers]
    assert kinds.count("BatchNormalization") == 4
    bn = model.get_layer("res_a_scale")
    assert bn.center and bn.scale and bn.epsilon == pytest.approx(1e-4)


def test_architecture_only(tmp_path):
    prototxt, _ = _files("lenet")
    model = caffe_to_keras(prototxt)
    assert model.count_params() == caffe_to_keras(*_files("lenet")).count_params()
    assert model.predict(np.zeros((1, 28, 24, 1), np.float32)).shape == (1, 10)


def test_names_and_order_follow_caffe():
    model = caffe_to_keras(*_files("tiny"))
    assert model.input_names == ["data"]
    assert model.output_names == ["prob", "flat"]  # unconsumed tops in prototxt order


def test_unknown_layer_type_names_the_layer(tmp_path):
    text = open(_files("lenet")[0]).read().replace('type: "Softmax"', 'type: "MyFancyLayer"')
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(UnknownLayerError, match="prob.*MyFancyLayer"):
        caffe_to_keras(path, _files("lenet")[1])


def test_missing_and_misshapen_blobs_name_the_layer(tmp_path):
    prototxt, caffemodel = _files("lenet")
    layers = read_caffemodel(caffemodel).layers
    short = tmp_path / "short.caffemodel"
    write_caffemodel(short, [(la.name, la.type, la.blobs) for la in layers if la.name != "ip2"])
    with pytest.raises(WeightsError, match="ip2"):
        caffe_to_keras(prototxt, short)
    wrong = tmp_path / "wrong.caffemodel"
    write_caffemodel(wrong, [(la.name, la.type, [b[..., :-1] if la.name == "conv2" and i == 0 else b
                                                 for i, b in enumerate(la.blobs)]) for la in layers])
    with pytest.raises(WeightsError, match="conv2.*shape"):
        caffe_to_keras(prototxt, wrong)


def test_net_without_input_is_an_error(tmp_path):
    path = tmp_path / "noinput.prototxt"
    path.write_text('layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }\n')
    with pytest.raises(ConfigError, match="x"):
        caffe_to_keras(path)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("ext", [".h5", ".keras", ".json"])
def test_cli_caffe2keras(ext, tmp_path, capsys):
    from kconvert.cli import main

    out = str(tmp_path / f"net{ext}")
    assert main(["caffe2keras", *_files("squeeze_mobile"), "-o", out, "--check"]) == 0
    printed = capsys.readouterr().out
    assert "OpenCV" in printed and "OVER" not in printed and printed.count(" ok") >= 4
    if ext == ".json":
        model = kconvert.models.model_from_json(open(out).read())
        assert model.count_params() == caffe_to_keras(*_files("squeeze_mobile")).count_params()
    else:
        model = kconvert.load_model(out)
        io = _io("squeeze_mobile")
        y = model.predict(_to_keras(io["input_0"], "channels_last"))
        names = model.output_names
        for n, v in zip(names, y if isinstance(y, list) else [y]):
            assert_close(_to_caffe(v, "channels_last"), io[f"layer:{n}"])


def test_cli_caffe2onnx_and_input_shape(tmp_path, capsys):
    from kconvert.cli import main

    out = str(tmp_path / "net.onnx")
    assert main(["caffe2onnx", *_files("resnet_block"), "-o", out, "--input-shape", "1,8,15,6", "--check"]) == 0
    assert "OVER" not in capsys.readouterr().out
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [8, 15, 6]


@pytest.mark.parametrize("args, message", [
    (["-o", "x.txt"], "must end in"),
    (["--input-shape", "1,a", "-o", "x.h5"], "input-shape"),
])
def test_cli_caffe_errors_are_one_line(tmp_path, capsys, args, message):
    from kconvert.cli import main

    args = [a if a not in ("x.txt", "x.h5") else str(tmp_path / a) for a in args]
    assert main(["caffe2keras", *_files("lenet"), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_progress_is_reported_per_layer():
    calls = []
    caffe_to_keras(*_files("lenet"), progress=lambda done, total: calls.append((done, total)))
    n = len(calls)
    assert n == calls[-1][1] and [c[0] for c in calls] == list(range(1, n + 1))
