"""`kconvert inspect` on Caffe files (prototxt, caffemodel, mean .binaryproto), their detection, and `predict` /
`validate` on a prototxt. Shapes are checked against OpenCV 4.x running the same net, blob contents against
protobuf's own parse of the caffemodel, means against numpy."""

import json
import os
import shutil

import cv2
import h5py
import numpy as np
import pytest
import yaml
from conftest import assert_close

from kconvert.api import BGR_ORDER, inspect_file, load_any
from kconvert.cli import main
from kconvert.errors import ConfigError, FormatError, UnsupportedFormatError, WeightsError
from kconvert.formats.caffe.caffemodel import write_caffemodel
from kconvert.formats.caffe.schema import BlobProto, NetParameter
from kconvert.formats.detect import detect_format

CAFFE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "caffe")
NETS = ["tiny", "lenet", "resnet_block", "squeeze_mobile", "v1_layers"]  # committed fixtures (fixtures/make_caffe.py)


def _files(name):
    return os.path.join(CAFFE, f"{name}.prototxt"), os.path.join(CAFFE, f"{name}.caffemodel")


def _opencv_shapes(prototxt, caffemodel, x):
    """OpenCV's output shape of every layer of the net, run on `x` (NCHW)."""
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    names = list(net.getLayerNames())
    net.setInput(x)
    return {n: tuple(o.shape) for n, o in zip(names, net.forward(names))}


def _write_mean(path, values, legacy=True):
    blob = BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - values.ndim) + values.shape
    else:
        blob.shape.dim.extend(values.shape)
    blob.data.extend(values.ravel().tolist())
    with open(path, "wb") as f:
        f.write(blob.SerializeToString())
    return os.fspath(path)


def _random_conv_weights(path, specs, rng):
    """A V2 caffemodel with random blobs: specs = [(layer name, type, [shapes])]."""
    layers = [(n, t, [(rng.standard_normal(s) * 0.3).astype(np.float32) for s in shapes]) for n, t, shapes in specs]
    write_caffemodel(path, layers)
    return os.fspath(path)


# ---------------------------------------------------------------------------------------------- detection


def test_detect_caffe_files_by_content(tmp_path, rng):
    for name in NETS:
        prototxt, caffemodel = _files(name)
        assert detect_format(prototxt) == "caffe_prototxt"
        assert detect_format(caffemodel) == "caffemodel"
        # without a telling extension the bytes decide
        shutil.copy(prototxt, tmp_path / f"{name}_net")
        shutil.copy(caffemodel, tmp_path / f"{name}_weights")
        assert detect_format(tmp_path / f"{name}_net") == "caffe_prototxt"
        assert detect_format(tmp_path / f"{name}_weights") == "caffemodel"
    mean = rng.uniform(0, 255, (3, 7, 5)).astype(np.float32)
    for legacy in (True, False):
        path = _write_mean(tmp_path / f"mean_{legacy}.binaryproto", mean, legacy)
        assert detect_format(path) == "caffe_binaryproto"
        shutil.copy(path, tmp_path / f"mean_{legacy}")
        assert detect_format(tmp_path / f"mean_{legacy}") == "caffe_binaryproto"
    # V0 and input_dim-only texts
    (tmp_path / "v0").write_text('input: "data"\ninput_dim: 1\nlayers { layer { name: "r" type: "relu" } '
                                 'bottom: "data" top: "r" }\n')
    assert detect_format(tmp_path / "v0") == "caffe_prototxt"


def test_keras_text_files_are_not_taken_for_prototxt(tfk, tmp_path):
    inp = tfk.Input((5, 4, 3), name="img")
    x = tfk.layers.Conv2D(2, 3, name="layer")(inp)
    x = tfk.layers.Bidirectional(tfk.layers.LSTM(3), name="layers")(tfk.layers.Reshape((3, 4))(x))
    model = tfk.Model(inp, x)
    config = json.loads(model.to_json())
    (tmp_path / "model_json").write_text(model.to_json())
    (tmp_path / "model_yaml").write_text(yaml.safe_dump(config))  # block style, `layer:` / `layers:` keys
    (tmp_path / "model_mixed").write_text(yaml.safe_dump(config, default_flow_style=None))
    (tmp_path / "model_flow").write_text(yaml.safe_dump(config, default_flow_style=True))
    assert detect_format(tmp_path / "model_json") == "json"
    assert detect_format(tmp_path / "model_yaml") == "yaml"
    assert detect_format(tmp_path / "model_mixed") == "yaml"
    assert detect_format(tmp_path / "model_flow") == "json"  # flow-style YAML starts with '{'
    (tmp_path / "notes.txt").write_text("the input: is below\nlayers are good\n")
    with pytest.raises(FormatError, match="notes.txt"):
        detect_format(tmp_path / "notes.txt")


def test_detect_refuses_what_is_not_caffe(tmp_path, rng):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "models/train_val.prototxt"\nbase_lr: 0.01\nlr_policy: "step"\nmax_iter: 450000\n')
    with pytest.raises(UnsupportedFormatError, match=r"solver.*models/train_val.prototxt"):
        detect_format(solver)
    (tmp_path / "w.caffemodel").write_text("not weights at all\n")
    with pytest.raises(FormatError, match=r"w\.caffemodel.*NetParameter"):
        detect_format(tmp_path / "w.caffemodel")
    shutil.copy(_files("tiny")[1], tmp_path / "m.binaryproto")  # a NetParameter is no BlobProto
    with pytest.raises(FormatError, match=r"m\.binaryproto.*BlobProto"):
        detect_format(tmp_path / "m.binaryproto")
    (tmp_path / "noise").write_bytes(rng.bytes(5000))
    with pytest.raises(FormatError, match="binary"):
        detect_format(tmp_path / "noise")
    with h5py.File(tmp_path / "net.caffemodel.h5", "w") as f:
        f.create_group("data/conv1").create_dataset("0", data=np.zeros((2, 3, 3, 3), np.float32))
    shutil.copy(tmp_path / "net.caffemodel.h5", tmp_path / "net.h5")
    for name in ("net.caffemodel.h5", "net.h5"):
        with pytest.raises(UnsupportedFormatError, match="Caffe HDF5"):
            detect_format(tmp_path / name)


# ---------------------------------------------------------------------------------------------- prototxt


@pytest.mark.parametrize("name", NETS)
def test_prototxt_report_shapes_equal_opencv(name, rng):
    prototxt, caffemodel = _files(name)
    report = inspect_file(prototxt, caffemodel)
    assert report["format"] == f"caffe prototxt ({'V1' if name == 'v1_layers' else 'V2'})"
    assert report["conversion_error"] is None
    [inp] = report["inputs"]
    assert inp["layout"] == "NCHW" and len(inp["shape"]) == 4
    x = rng.standard_normal(inp["shape"]).astype(np.float32)
    reference = _opencv_shapes(prototxt, caffemodel, x)
    by_name = {la["name"]: la for la in report["layers"]}
    for layer, shape in reference.items():
        assert by_name[layer]["output_shapes"] == [list(shape)], layer
    # outputs: the unconsumed tops, with OpenCV's shapes
    for out in report["outputs"]:
        producer = [la["name"] for la in report["layers"] if out["name"] in la["tops"]][-1]
        assert out["shape"] == list(reference[producer])
    # blob shapes and sizes equal protobuf's own parse of the caffemodel
    proto = NetParameter()
    with open(caffemodel, "rb") as f:
        proto.ParseFromString(f.read())
    entries = [(la.name, la.blobs) for la in proto.layer] + [(la.name, la.blobs) for la in proto.layers]
    for lname, blobs in entries:
        want = [list(b.shape.dim) if b.HasField("shape") else [b.num, b.channels, b.height, b.width] for b in blobs]
        got = by_name[lname]["blobs"]
        assert [int(np.prod(s)) for s in got] == [int(np.prod(s)) for s in want], lname
    total = sum(len(b.data) for _, blobs in entries for b in blobs)
    assert report["weights"]["values"] == total and report["weights"]["bytes"] == 4 * total
    assert report["channel_order"] == BGR_ORDER if inp["shape"][1] == 3 else report["channel_order"] != BGR_ORDER


def test_v0_prototxt_with_padding_layer(tmp_path, rng):
    path = tmp_path / "v0.prototxt"
    path.write_text('name: "v0"\ninput: "data"\ninput_dim: 2 input_dim: 3 input_dim: 9 input_dim: 7\n'
                    'layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }\n'
                    'layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 } '
                    'bottom: "pad1" top: "conv1" }\n'
                    'layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }\n'
                    'layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } '
                    'bottom: "conv1" top: "pool1" }\n')
    weights = _random_conv_weights(tmp_path / "v0.caffemodel", [("conv1", "Convolution", [(4, 3, 3, 3), (4,)])], rng)
    report = inspect_file(path, weights)
    assert report["format"] == "caffe prototxt (V0)" and report["input_form"] == "input: + input_dim"
    reference = _opencv_shapes(os.fspath(path), weights, rng.standard_normal((2, 3, 9, 7)).astype(np.float32))
    shapes = {la["name"]: la["output_shapes"] for la in report["layers"]}
    assert {n: shapes[n] for n in reference} == {n: [list(s)] for n, s in reference.items()}
    assert "pad1" not in shapes  # folded into conv1, as Caffe's upgrade does


TRAIN_VAL = """name: "CaffeNetish"  # {comment}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ mirror: true crop_size: 9 {mean} scale: {scale} }}
  data_param {{ source: "train_lmdb" batch_size: 256 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ mirror: false crop_size: 9 {mean} scale: {scale} }}
  data_param {{ source: "val_lmdb" batch_size: 3 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param {{ num_output: 4 kernel_h: 3
  kernel_w: 2 stride: 2 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param {{ num_output: 5 }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
"""
DEPLOY = """name: "deploy"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {n} dim: {c} dim: 9 dim: 9 }} }} }}
""" + "\n".join(TRAIN_VAL.splitlines()[7:12]) + "\n"


def _train_val_weights(tmp_path, rng, channels):
    return _random_conv_weights(tmp_path / "w.caffemodel", [("conv1", "Convolution", [(4, channels, 3, 2), (4,)]),
                                                            ("fc", "InnerProduct", [(5, 4 * 2 * 2), (5,)])], rng)


def test_train_val_mean_value_and_scale(tmp_path, rng):
    path = tmp_path / "train_val.prototxt"
    path.write_text(TRAIN_VAL.format(comment="", mean="mean_value: 104 mean_value: 117 mean_value: 123",
                                     scale=0.017))
    weights = _train_val_weights(tmp_path, rng, 3)
    report = inspect_file(path, weights)
    assert report["input_form"] == "data layers"
    assert [(t["phase"], t["deploy"], t["mirror"]) for t in report["transform"]] == [("TRAIN", False, True),
                                                                                      ("TEST", True, False)]
    t = report["transform"][1]
    assert t["mean_value"] == [104.0, 117.0, 123.0] and t["crop_size"] == 9
    assert t["scale"] == 0.017
    assert report["channel_order"] == "BGR (Caffe convention; check your training data)"
    lines = "\n".join(report["preprocessing"])
    assert "subtract mean_value per channel in BGR order (B=104, G=117, R=123), then multiply by scale 0.017" in lines
    assert "crop 9x9: the centre crop at test time" in lines and "mirror" not in lines  # TEST does not mirror
    # no shape in the file: N from the TEST batch_size, C from mean_value, H = W = crop_size
    [inp] = report["inputs"]
    assert inp["shape"] == [3, 3, 9, 9] and "crop_size" in inp["shape_from"]
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY.format(n=3, c=3))
    reference = _opencv_shapes(os.fspath(deploy), weights, rng.standard_normal((3, 3, 9, 9)).astype(np.float32))
    layers = report["layers"]
    assert [la["name"] for la in layers if not la["deploy"]] == ["data", "accuracy", "loss"]
    assert [la["phase"] for la in layers][:2] == ["TRAIN", "TEST"]
    for la in layers[2:]:
        if la["deploy"]:
            assert la["output_shapes"] == [list(reference[la["name"]])], la["name"]
        else:
            assert la["output_shapes"] is None
    assert report["outputs"] == [{"name": "fc", "shape": list(reference["fc"])}]
    assert report["weights"]["not_in_deploy_net"] == []


def test_train_val_mean_file_found_next_to_the_prototxt(tmp_path, rng):
    mean = rng.uniform(0, 255, (3, 11, 10)).astype(np.float32)
    _write_mean(tmp_path / "imagenet_mean.binaryproto", mean)
    path = tmp_path / "train_val.prototxt"
    path.write_text(TRAIN_VAL.format(comment="", mean='mean_file: "data/ilsvrc12/imagenet_mean.binaryproto"',
                                     scale=0.00390625))
    report = inspect_file(path)
    assert report["mean"]["shape"] == [1, 3, 11, 10]
    assert_close(report["mean"]["per_channel_mean"], mean.astype(np.float64).mean(axis=(1, 2)))
    lines = "\n".join(report["preprocessing"])
    assert "subtract the mean image 'data/ilsvrc12/imagenet_mean.binaryproto' pixel by pixel (cropped" in lines
    assert "then multiply by scale 0.00390625 (= 1/256)" in lines
    assert "the mean image is 11x10 but the net sees 9x9" in lines
    assert report["inputs"][0]["shape"] == [3, 3, 9, 9]
    # not found: said so, and --mean supplies it
    os.rename(tmp_path / "imagenet_mean.binaryproto", tmp_path / "elsewhere.binaryproto")
    report = inspect_file(path)
    assert report["mean"] is None and report["inputs"][0]["shape"] is None
    assert "was not found" in report["preprocessing"][-1] and "--mean" in report["preprocessing"][-1]
    assert report["conversion_error"] and report["layers"][2]["output_shapes"] is None
    report = inspect_file(path, mean=tmp_path / "elsewhere.binaryproto")
    assert report["mean"]["channels"] == 3 and report["inputs"][0]["shape"] == [3, 3, 9, 9]


def test_grayscale_and_rgb_comment(tmp_path, rng):
    path = tmp_path / "gray.prototxt"
    path.write_text(TRAIN_VAL.format(comment="", mean="mean_value: 33", scale=1).replace(
        "crop_size: 9", "crop_size: 9 force_gray: true"))
    report = inspect_file(path, _train_val_weights(tmp_path, rng, 1))
    assert report["channel_order"] == "grayscale (1 channel)"
    assert report["inputs"][0]["shape"] == [3, 1, 9, 9] and report["conversion_error"] is None
    assert "subtract mean_value 33 from every channel" in "\n".join(report["preprocessing"])
    path = tmp_path / "rgb.prototxt"
    path.write_text(TRAIN_VAL.format(comment="trained on RGB images", mean="mean_value: 1 mean_value: 2 "
                                     "mean_value: 3", scale=2))
    report = inspect_file(path)
    assert report["channel_order"].startswith("RGB (a comment in the file says so: 'trained on RGB images'")
    assert "in RGB order (R=1, G=2, B=3), then multiply by scale 2" in "\n".join(report["preprocessing"])


def test_conversion_errors_still_list_the_layers(tmp_path):
    path = tmp_path / "odd.prototxt"
    path.write_text('name: "odd"\ninput: "data"\ninput_shape { dim: 2 dim: 3 dim: 5 dim: 4 }\n'
                    'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
                    'layer { name: "x" type: "NoSuchLayer" bottom: "r" top: "x" }\n'
                    'layer { name: "p" type: "Pooling" bottom: "r" top: "p" pooling_param { pool: MAX kernel_size: 2 '
                    'stride: 2 fancy_fork_field: 3 } }\n')
    report = inspect_file(path)
    assert report["input_form"] == "input: + input_shape"
    assert "NoSuchLayer" in report["conversion_error"] and report["outputs"] == []
    assert [la["name"] for la in report["layers"]] == ["input", "r", "x", "p"]
    assert any("fancy_fork_field" in w for w in report["warnings"])
    # a Python layer stops the deploy filter itself: the layers are still listed, which ones run is unknown
    path.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 5 dim: 4 }\n'
                    'layer { name: "py" type: "Python" bottom: "data" top: "y" python_param { module: "m" layer: "L" } }\n')
    report = inspect_file(path)
    assert "Python layer" in report["conversion_error"] and "'py'" in report["conversion_error"]
    assert [(la["name"], la["deploy"], la["output_shapes"]) for la in report["layers"]] == [("input", None, None),
                                                                                            ("py", None, None)]
    assert report["inputs"][0]["shape"] == [1, 3, 5, 4]


# ---------------------------------------------------------------------------------------------- caffemodel, mean


def test_caffemodel_alone(tmp_path, rng):
    _, caffemodel = _files("lenet")
    report = inspect_file(caffemodel)
    proto = NetParameter()
    with open(caffemodel, "rb") as f:
        proto.ParseFromString(f.read())
    assert report["format"] == "caffemodel (V2)" and report["net"] == proto.name
    assert [la["name"] for la in report["layers"]] == [la.name for la in proto.layer]
    for entry, layer in zip(report["layers"], proto.layer):
        assert [b["shape"] for b in entry["blobs"]] == [list(b.shape.dim) for b in layer.blobs]
        assert [b["bytes"] for b in entry["blobs"]] == [4 * len(b.data) for b in layer.blobs]
    assert report["weights_total"]["values"] == sum(len(b.data) for la in proto.layer for b in la.blobs)
    # FP16 storage, V1 layers and legacy dims: stored dtype and size
    blob = (rng.standard_normal((6, 4, 3, 5)) * 0.3).astype(np.float32)
    path = tmp_path / "half.caffemodel"
    write_caffemodel(path, [("conv", "Convolution", [blob, blob[:, 0, 0, 0]])], version=1, storage="fp16",
                     legacy_dims=True, name="half")
    report = inspect_file(path)
    assert report["format"] == "caffemodel (V1)" and report["net"] == "half"
    assert report["layers"][0]["blobs"] == [{"shape": [6, 4, 3, 5], "dtype": "float16", "bytes": 2 * blob.size},
                                            {"shape": [1, 1, 1, 6], "dtype": "float16", "bytes": 12}]
    assert report["weights_total"] == {"layers": 1, "blobs": 2, "values": blob.size + 6, "bytes": 2 * blob.size + 12}


@pytest.mark.parametrize("legacy", [True, False])
def test_mean_binaryproto(tmp_path, rng, legacy):
    mean = rng.uniform(0, 255, (3, 7, 5)).astype(np.float32)
    path = _write_mean(tmp_path / "mean.binaryproto", mean, legacy)
    report = inspect_file(path)
    assert report["mean"]["shape"] == ([1, 3, 7, 5] if legacy else [3, 7, 5])
    assert_close(report["mean"]["per_channel_mean"], mean.astype(np.float64).mean(axis=(1, 2)))
    assert report["mean"]["min"] == pytest.approx(float(mean.min()))
    assert report["channel_order"] == BGR_ORDER
    assert "per-channel means B=" in report["preprocessing"][1]
    gray = _write_mean(tmp_path / "gray.binaryproto", mean[:1], legacy)
    assert inspect_file(gray)["channel_order"] == "grayscale (1 channel)"


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_text_and_json(tmp_path, capsys, rng):
    prototxt, caffemodel = _files("tiny")
    mean = _write_mean(tmp_path / "mean.binaryproto", rng.uniform(0, 255, (3, 13, 11)).astype(np.float32))
    assert main(["inspect", prototxt, caffemodel, "--mean", mean]) == 0
    text = capsys.readouterr().out
    for expected in ("format:  caffe prototxt (V2)", "net:     tiny", "inputs (NCHW, from Input layer):",
                     "(2, 3, 13, 11)", "(6, 3, 3, 3) (6)", "channel order: BGR (Caffe convention; check your "
                     "training data)", "per-channel means B="):
        assert expected in text, expected
    conv1 = next(line for line in text.splitlines() if line.strip().startswith("conv1 "))
    assert conv1.split()[:2] == ["conv1", "Convolution"] and "(2, 6, 7, 6)" in conv1
    assert main(["inspect", prototxt, "--weights", caffemodel, "--mean", mean, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(inspect_file(prototxt, caffemodel, mean)))
    assert main(["inspect", caffemodel]) == 0
    assert "total: 7 layers with 14 blobs" in capsys.readouterr().out
    assert main(["inspect", mean, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean"]["shape"] == [1, 3, 13, 11]


def test_cli_errors_are_one_line(tmp_path, capsys):
    prototxt, caffemodel = _files("tiny")
    data = open(caffemodel, "rb").read()
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) // 2])
    (tmp_path / "bad.prototxt").write_text('name: "x"\nlayer { name: "a" type: "ReLU" \n')
    (tmp_path / "solver.prototxt").write_text('net: "n.prototxt"\nbase_lr: 0.1\n')
    cases = [
        (["inspect", os.fspath(tmp_path / "cut.caffemodel")], "cut.caffemodel"),
        (["inspect", os.fspath(tmp_path / "bad.prototxt")], "bad.prototxt"),
        (["inspect", os.fspath(tmp_path / "solver.prototxt")], "solver"),
        (["inspect", prototxt, "--weights", prototxt], ".caffemodel"),
        (["inspect", prototxt, caffemodel, "--weights", prototxt], "once"),
        (["inspect", caffemodel, "--mean", caffemodel], "goes with a Caffe prototxt"),
        (["predict", prototxt], "no weights"),
        (["predict", caffemodel], "deploy prototxt"),
    ]
    for argv, what in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("kconvert: error:") and what in err, (argv, err)
    with pytest.raises(ConfigError):
        inspect_file(os.path.join(CAFFE, "..", "keras2", "seq_mlp.json"), weights=caffemodel)


# ---------------------------------------------------------------------------------------------- predict / validate


@pytest.mark.parametrize("name", ["tiny", "v1_layers"])
def test_predict_on_a_prototxt_equals_opencv(name, tmp_path, capsys, rng):
    prototxt, caffemodel = _files(name)
    model = load_any(prototxt, weights=caffemodel)
    shape = inspect_file(prototxt)["inputs"][0]["shape"]
    x = rng.standard_normal(shape).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    net.setInput(x)
    expected = [np.asarray(y) for y in net.forward(model.output_names)]
    np.save(tmp_path / "x.npy", np.transpose(x, (0, 2, 3, 1)))  # channels_last, as load_any converts
    np.savez(tmp_path / "expected.npz", **{f"output_{i}": y for i, y in enumerate(expected)})
    argv = ["predict", prototxt, "--weights", caffemodel, "--input", os.fspath(tmp_path / "x.npy"),
            "--expect", os.fspath(tmp_path / "expected.npz"), "--runtime", "numpy"]
    assert main(argv) == 0
    assert capsys.readouterr().out.count("ok") == len(expected)
    ys = model.predict(np.transpose(x, (0, 2, 3, 1)), runtime="numpy")
    for y, ref in zip(ys if isinstance(ys, list) else [ys], expected):
        assert_close(y, ref)


def test_validate_prototxt_against_its_keras_file(tmp_path, capsys):
    prototxt, caffemodel = _files("squeeze_mobile")
    out = os.fspath(tmp_path / "sm.h5")
    assert main(["caffe2keras", prototxt, caffemodel, "-o", out]) == 0
    assert main(["validate", prototxt, out, "--weights-a", caffemodel]) == 0
    assert "OVER" not in capsys.readouterr().out
    with pytest.raises(WeightsError, match="must be a .caffemodel"):
        load_any(prototxt, weights=out)


def test_net_without_weights_and_its_empty_caffemodel(tmp_path, capsys, rng):
    path = tmp_path / "pool.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 13 '
                    'dim: 12 } } }\nlayer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { '
                    'pool: MAX kernel_size: 3 stride: 2 } }\n')
    weights = tmp_path / "pool.caffemodel"
    write_caffemodel(weights, [], name="pool")
    assert main(["inspect", os.fspath(path), os.fspath(weights)]) == 0
    out = capsys.readouterr().out
    assert "0 layers with 0 blobs" in out and "(2, 4, 6, 6)" in out  # Caffe's ceil rounding: 13 -> 6, 12 -> 6
    reference = _opencv_shapes(os.fspath(path), os.fspath(weights), rng.standard_normal((2, 4, 13, 12)).astype("f4"))
    report = inspect_file(path, weights)
    assert report["layers"][1]["output_shapes"] == [list(reference["p"])] and report["layers"][1]["blobs"] == []
    assert main(["predict", os.fspath(path), "--runtime", "numpy"]) == 0  # no weights needed: none to load
    assert "p: shape=(2, 6, 6, 4)" in capsys.readouterr().out
