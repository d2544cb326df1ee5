"""`kconvert convert IN -o OUT` for every supported pair, checked by the real frameworks on the fixtures; `inspect` and
`validate` on every format kconvert reads; `--help`, `--debug` and the exit codes of every subcommand."""

import json
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.api import load_any
from kconvert.cli import build_parser, main
from kconvert.errors import FormatError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")


def fx(rel: str) -> str:
    return os.path.join(FIXTURES, rel)


def _io(rel: str):
    return np.load(fx(rel))


def _keras_io(rel: str) -> tuple[list, list]:
    io = _io(rel)
    n_in = sum(k.startswith("input_") for k in io.files)
    n_out = sum(k.startswith("output_") for k in io.files)
    return [io[f"input_{i}"] for i in range(n_in)], [io[f"output_{i}"] for i in range(n_out)]


def _as_list(y) -> list:
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


def _close_all(got, refs, what: str) -> None:
    got = _as_list(got)
    assert len(got) == len(refs), what
    for i, (g, r) in enumerate(zip(got, refs)):
        assert_close(g, r, what=f"{what} output {i}")


def _convert(capsys, *args: str) -> str:
    code = main(["convert", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


# ---------------------------------------------------------------------------------------------- Keras inputs
# (input args, output name, extra args, fixture io, the real framework that reads the output)

KERAS_CASES = {
    "h5_to_keras": (["keras2/conv2d_cl.h5"], "m.keras", [], "keras2/conv2d_cl_io.npz", "keras3"),
    "json_weights_to_h5": (["keras2/merge_multi_io.json", "--weights", "keras2/merge_multi_io_weights.h5"], "m.h5",
                           [], "keras2/merge_multi_io_io.npz", "tf_keras"),
    "keras1_json_to_h5": (["keras_legacy/k1_mlp.json", "--weights", "keras_legacy/k1_mlp_weights.h5"], "m.h5", [],
                          "keras_legacy/k1_mlp_io.npz", "tf_keras"),
    "keras1_theano_h5_to_keras": (["keras_legacy/k1_conv2d_theano.h5"], "m.keras", [],
                                  "keras_legacy/k1_conv2d_theano_io.npz", "keras3"),
    "keras_to_keras3_h5": (["keras3/k3_nested.keras"], "m.h5", ["--keras-version", "3"], "keras3/k3_nested_io.npz",
                           "keras3"),
    "keras_to_keras3_json": (["keras3/k3_seq_mlp.keras"], "m.json",
                             ["--keras-version", "3", "--weights-out", "OUT/m.weights.h5"], "keras3/k3_seq_mlp_io.npz",
                             "keras3_json"),
    "h5_to_yaml": (["keras2/conv1d.h5"], "m.yaml", ["--weights-out", "OUT/w.h5"], "keras2/conv1d_io.npz",
                   "tf_keras_weights"),
    "h5_to_onnx": (["keras2/conv2d_cl.h5"], "m.onnx", ["--opset", "13"], "keras2/conv2d_cl_io.npz", "onnxruntime"),
    "keras3_to_onnx": (["keras3/k3_recurrent.keras"], "m.onnx", [], "keras3/k3_recurrent_io.npz", "onnxruntime"),
    "h5_to_prototxt": (["keras2/siamese_conv.h5"], "m.prototxt", [], "keras2/siamese_conv_io.npz", "opencv"),
}


def _real_keras(kind: str, out: str, source: str, extra: list, tfk):
    """A predict function of the written file as the real framework reads it."""
    weights_out = extra[extra.index("--weights-out") + 1] if "--weights-out" in extra else None
    if kind == "tf_keras":
        model = tfk.models.load_model(out, compile=False)
        return lambda xs: model.predict(xs, verbose=0)
    if kind == "tf_keras_weights":  # tf_keras has no YAML reader: the fixture's own config, our weights file
        model = tfk.models.model_from_json(open(source.replace(".h5", ".json")).read())
        model.load_weights(weights_out)
        return lambda xs: model.predict(xs, verbose=0)
    if kind in ("keras3", "keras3_json"):
        import keras

        if kind == "keras3":
            model = keras.saving.load_model(out, compile=False)
        else:
            model = keras.models.model_from_json(open(out).read())
            model.load_weights(weights_out)
        return lambda xs: model.predict(xs, verbose=0)
    if kind == "onnxruntime":
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        return lambda xs: sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
    if kind == "opencv":
        net = cv2.dnn.readNetFromCaffe(out, os.path.splitext(out)[0] + ".caffemodel")
        input_names = kconvert.load_model(source).input_names

        def run(xs):
            for name, x in zip(input_names, xs):
                net.setInput(np.ascontiguousarray(np.moveaxis(x, -1, 1)), name)  # Caffe is NCHW
            return net.forward()
        return run
    raise AssertionError(kind)


@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_convert_keras(case, tfk, tmp_path, capsys):
    case_args, name, extra, io, real = KERAS_CASES[case]
    out = str(tmp_path / name)
    extra = [a.replace("OUT", str(tmp_path)) for a in extra]
    printed = _convert(capsys, *[fx(a) if "/" in a else a for a in case_args], "-o", out, *extra)
    assert f"wrote {out}" in printed
    xs, refs = _keras_io(io)
    feeds = xs if len(xs) > 1 else xs[0]
    _close_all(_real_keras(real, out, fx(case_args[0]), extra, tfk)(xs), refs, f"{case} in {real}")
    if real in ("onnxruntime", "opencv"):  # kconvert reads no ONNX; its Caffe reader refuses the shared layers'
        return  # repeated names that the exporter writes (see the report of issue 8)
    weights = extra[extra.index("--weights-out") + 1] if "--weights-out" in extra else None
    _close_all(load_any(out, weights=weights).predict(feeds, runtime="numpy"), refs, f"{case} in kconvert")


def test_convert_config_without_weights_keeps_the_architecture(tfk, tmp_path, capsys):
    out = str(tmp_path / "m.json")
    assert "config only" in _convert(capsys, fx("keras_legacy/k1_mlp.json"), "-o", out)
    ref = tfk.models.model_from_json(open(fx("keras_legacy/k1_mlp_tfk.json")).read())
    ours = tfk.models.model_from_json(open(out).read())  # a Keras 1 config upgraded to one tf_keras reads
    assert [type(la).__name__ for la in ours.layers] == [type(la).__name__ for la in ref.layers]
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]


# ---------------------------------------------------------------------------------------------- Caffe inputs

CAFFE_CASES = {  # output name, how the caffemodel is given, extra args, the real framework
    "h5": ("m.h5", "positional", [], "tf_keras"),
    "keras": ("m.keras", "--weights", [], "keras3"),
    "json": ("m.json", "positional", ["--weights-out", "OUT/w.h5"], "tf_keras_json"),
    "h5_channels_first": ("m.h5", "positional", ["--data-format", "channels_first"], "tf_keras"),
    "keras3_h5": ("m.h5", "positional", ["--keras-version", "3"], "keras3"),
    "onnx": ("m.onnx", "positional", ["--opset", "15"], "onnxruntime"),
    "prototxt": ("m.prototxt", "--weights", [], "opencv"),
}


@pytest.mark.parametrize("case", sorted(CAFFE_CASES))
def test_convert_caffe(case, tfk, tmp_path, capsys):
    name, how, extra, real = CAFFE_CASES[case]
    prototxt, caffemodel = fx("caffe/resnet_block.prototxt"), fx("caffe/resnet_block.caffemodel")
    out = str(tmp_path / name)
    extra = [a.replace("OUT", str(tmp_path)) for a in extra]
    weights = [caffemodel] if how == "positional" else ["--weights", caffemodel]
    _convert(capsys, prototxt, *weights, "-o", out, *extra)
    io = _io("caffe/resnet_block_io.npz")
    x_nchw, refs = io["input_0"], [io["layer:head_max"], io["layer:head_prod"]]  # OpenCV's run of the Caffe net
    nhwc = "--data-format" not in extra and real not in ("onnxruntime", "opencv")
    x = np.moveaxis(x_nchw, 1, -1) if nhwc else x_nchw
    if real == "tf_keras":
        got = tfk.models.load_model(out, compile=False).predict(x, verbose=0)
    elif real == "tf_keras_json":
        model = tfk.models.model_from_json(open(out).read())
        model.load_weights(str(tmp_path / "w.h5"))
        got = model.predict(x, verbose=0)
    elif real == "keras3":
        import keras

        got = keras.saving.load_model(out, compile=False).predict(x, verbose=0)
    elif real == "onnxruntime":
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})
    else:
        written = os.path.splitext(out)[0] + ".caffemodel"
        net = cv2.dnn.readNetFromCaffe(out, written)
        net.setInput(x)
        got = net.forward(["head_max", "head_prod"])
    got = [np.moveaxis(g, -1, 1) if nhwc else g for g in _as_list(got)]
    _close_all(got, refs, f"resnet_block -> {case} in {real}")


def test_convert_caffe_v1_prototxt_upgrades_to_v2(tmp_path, capsys):
    out = str(tmp_path / "v2.prototxt")
    _convert(capsys, fx("caffe/v1_layers.prototxt"), fx("caffe/v1_layers.caffemodel"), "-o", out)
    assert "layer {" in open(out).read() and "layers {" not in open(out).read()
    io = _io("caffe/v1_layers_io.npz")
    net = cv2.dnn.readNetFromCaffe(out, str(tmp_path / "v2.caffemodel"))
    net.setInput(io["input_0"])
    assert_close(net.forward("prob"), io["layer:prob"].reshape(-1, io["layer:prob"].shape[1]))


def test_convert_in_a_real_process_with_json_record(tmp_path):
    out = str(tmp_path / "net.onnx")
    proc = subprocess.run([sys.executable, "-m", "kconvert", "convert", fx("caffe/lenet.prototxt"),
                           fx("caffe/lenet.caffemodel"), "-o", out, "--check", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["via"] == "caffe2onnx" and record["input_format"] == "caffe_prototxt"
    assert record["output_format"] == "onnx" and record["written"] == [out] and record["exit_code"] == 0
    assert any("OpenCV" in line for line in record["log"]) and not any("OVER" in line for line in record["log"])
    io = _io("caffe/lenet_io.npz")
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"data": io["input_0"]})[0], io["layer:prob"].reshape(2, -1))


def test_convert_to_prototxt_with_named_caffemodel_and_json_record(tmp_path, capsys):
    out, caffemodel = str(tmp_path / "net.prototxt"), str(tmp_path / "weights" / "w.caffemodel")
    os.mkdir(tmp_path / "weights")
    record = json.loads(_convert(capsys, fx("keras2/siamese_conv.h5"), "-o", out, "--weights-out", caffemodel,
                                 "--json"))
    assert record["via"] == "keras2caffe" and record["written"] == [out, caffemodel]
    assert not os.path.exists(tmp_path / "net.caffemodel")
    xs, refs = _keras_io("keras2/siamese_conv_io.npz")
    net = cv2.dnn.readNetFromCaffe(out, caffemodel)
    for name, x in zip(("left", "right"), xs):
        net.setInput(np.ascontiguousarray(np.moveaxis(x, -1, 1)), name)
    assert_close(net.forward(), refs[0])


def test_convert_check_reports_each_output(tmp_path, capsys):
    out = str(tmp_path / "m.keras")
    printed = _convert(capsys, fx("keras2/merge_multi_io.h5"), "-o", out, "--check")
    names = kconvert.load_model(fx("keras2/merge_multi_io.h5")).output_names
    assert "read back" in printed and "OVER" not in printed
    assert all(any(line.startswith(n) and line.endswith(" ok") for line in printed.splitlines()) for n in names)


# ---------------------------------------------------------------------------------------------- errors


def _one_line_error(capsys, argv: list[str], code: int = 1) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture
def onnx_file(tmp_path, capsys):
    out = str(tmp_path / "seq_mlp.onnx")
    _convert(capsys, fx("keras2/seq_mlp.h5"), "-o", out)
    return out


def test_unsupported_pair_names_the_supported_ones(onnx_file, tmp_path, capsys):
    line = _one_line_error(capsys, ["convert", onnx_file, "-o", str(tmp_path / "x.h5")])
    assert "'onnx'" in line and "Supported: Keras (.h5, .keras" in line and "Caffe (.prototxt" in line
    assert ".onnx, .prototxt" in line
    line = _one_line_error(capsys, ["convert", fx("keras2/seq_mlp.h5"), "-o", str(tmp_path / "x.pb")])
    assert "'.pb'" in line and "Supported" in line
    line = _one_line_error(capsys, ["convert", fx("keras2/seq_mlp_weights.h5"), "-o", str(tmp_path / "x.h5")])
    assert "weights-only" in line and "--weights" in line
    assert not os.path.exists(tmp_path / "x.h5")


@pytest.mark.parametrize("argv, message", [
    (["convert", "keras2/seq_mlp.h5", "-o", "x.h5", "--opset", "13"], "--opset does not apply"),
    (["convert", "keras2/seq_mlp.h5", "-o", "x.onnx", "--data-format", "channels_first"], "--data-format"),
    (["convert", "caffe/lenet.prototxt", "-o", "x.onnx"], "needs its .caffemodel"),
    (["convert", "keras2/seq_mlp.json", "-o", "x.onnx"], "pass the weights file"),
    (["convert", "keras2/seq_mlp.h5", "-o", "x.keras", "--keras-version", "2"], "Keras 2 does not read .keras"),
    (["convert", "keras2/seq_mlp.h5", "-o", "x.h5", "--weights-out", "w.h5"], "--weights-out goes with"),
    (["convert", "missing.h5", "-o", "x.h5"], "no such file"),
    (["inspect", "missing.onnx"], "no such file"),
    (["validate", "keras2/seq_mlp.h5", "missing.onnx"], "no such file"),
])
def test_user_errors_are_one_line(argv, message, tmp_path, capsys):
    argv = [fx(a) if "/" in a else str(tmp_path / a) if "." in a and not a.startswith("-") else a for a in argv]
    assert message in _one_line_error(capsys, argv)
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("command", ["convert", "inspect", "validate"])
def test_corrupt_files_are_one_line_and_debug_raises(command, onnx_file, tmp_path, capsys):
    bad_h5 = tmp_path / "bad.h5"
    bad_h5.write_bytes(open(fx("keras2/seq_mlp.h5"), "rb").read()[:2500])
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(open(onnx_file, "rb").read()[:300])
    argv = {"convert": ["convert", str(bad_h5), "-o", str(tmp_path / "x.keras")],
            "inspect": ["inspect", str(bad_onnx)],
            "validate": ["validate", fx("keras2/seq_mlp.h5"), str(bad_onnx)]}[command]
    line = _one_line_error(capsys, argv)
    assert line.startswith("kconvert: error: ") and "bad." in line and "corrupt" in line
    with pytest.raises(FormatError):
        main(argv + ["--debug"])
    assert not (tmp_path / "x.keras").exists()


def test_errors_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(open(fx("keras2/seq_mlp.h5"), "rb").read()[:2500])
    argv = [sys.executable, "-m", "kconvert", "convert", str(bad), "-o", str(tmp_path / "x.keras")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kconvert: error: {bad}: ")
    debug = subprocess.run(argv + ["--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "kconvert.errors.FormatError" in debug.stderr


def test_a_bug_exits_4_with_one_line_and_a_hint(monkeypatch, capsys):
    import kconvert.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "inspect", broken)
    line = _one_line_error(capsys, ["inspect", fx("keras2/seq_mlp.h5")], code=4)
    assert "internal error: ZeroDivisionError: division by zero second line" in line and "--debug" in line
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "inspect", fx("keras2/seq_mlp.h5")])
    with pytest.raises(ZeroDivisionError):
        main(["inspect", fx("keras2/seq_mlp.h5"), "--debug"])


def test_every_subcommand_has_help(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    names = sorted(sub.choices)
    assert {"convert", "inspect", "validate", "predict", "keras2onnx", "keras2caffe", "caffe2keras",
            "caffe2onnx", "keras2keras"} <= set(names)
    for name in names:
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: kconvert {name} ") and "--debug" in out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in names)
    assert main(["convert", "x.h5"]) == 2  # argparse: -o missing
    assert "required: -o/--output" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- inspect


def _inspect(capsys, *args: str) -> str:
    assert main(["inspect", *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("source, extra", [
    ("keras2/merge_multi_io.h5", []),
    ("keras2/merge_multi_io.json", []),
    ("keras2/merge_multi_io.yaml", []),
    ("keras2/merge_multi_io.json", ["--weights", "keras2/merge_multi_io_weights.h5"]),
])
def test_inspect_keras2_formats_list_the_real_layers(source, extra, tfk, capsys):
    ref = tfk.models.load_model(fx("keras2/merge_multi_io.h5"), compile=False)
    out = _inspect(capsys, fx(source), *[fx(a) if "/" in a else a for a in extra])
    assert f"Total params: {ref.count_params():,}" in out
    assert all(f" {la.name} ({type(la).__name__})" in out for la in ref.layers)
    report = json.loads(_inspect(capsys, fx(source), *[fx(a) if "/" in a else a for a in extra], "--json"))
    assert [o["name"] for o in report["outputs"]] == ref.output_names
    assert [i["shape"] for i in report["inputs"]] == [list(s) for s in (x.shape for x in ref.inputs)]
    if source.endswith(".h5") or extra:  # the weights are listed only where the file (or --weights) has them
        assert [(w["name"], tuple(w["shape"])) for w in report["weights"]] == [(w.name, tuple(w.shape))
                                                                               for w in ref.weights]
    else:
        assert report["weights"] == []


def test_inspect_weights_only_h5(tfk, capsys):
    ref = tfk.models.load_model(fx("keras2/merge_multi_io.h5"), compile=False)
    report = json.loads(_inspect(capsys, fx("keras2/merge_multi_io_weights.h5"), "--json"))
    assert report["format"] == "keras_h5_weights"
    assert [(w["name"], tuple(w["shape"])) for w in report["weights"]] == [(w.name, tuple(w.shape))
                                                                           for w in ref.weights]


def test_inspect_keras3_archive_legacy_h5_and_weights(tmp_path, capsys):
    import keras

    ref = keras.saving.load_model(fx("keras3/k3_nested.keras"), compile=False)
    for source in ("keras3/k3_nested.keras", "keras3/k3_nested.h5"):
        out = _inspect(capsys, fx(source))
        assert keras.__version__ in out and f"Total params: {ref.count_params():,}" in out
        assert all(f" {la.name} ({type(la).__name__})" in out for la in ref.layers)
    with zipfile.ZipFile(fx("keras3/k3_nested.keras")) as z:
        (tmp_path / "m.weights.h5").write_bytes(z.read("model.weights.h5"))
    report = json.loads(_inspect(capsys, str(tmp_path / "m.weights.h5"), "--json"))
    assert report["format"] == "keras3_weights_h5"
    assert sorted(tuple(w["shape"]) for w in report["weights"]) == sorted(tuple(w.shape) for w in ref.weights)


def test_inspect_caffe_prototxt_with_and_without_caffemodel(capsys):
    io = _io("caffe/resnet_block_io.npz")
    prototxt, caffemodel = fx("caffe/resnet_block.prototxt"), fx("caffe/resnet_block.caffemodel")
    for extra in ([], [caffemodel], ["--weights", caffemodel]):
        report = json.loads(_inspect(capsys, prototxt, *extra, "--json"))
        shapes = {la["name"]: la["output_shapes"][0] for la in report["layers"]}
        names = [k[len("layer:"):] for k in io.files if k.startswith("layer:")]
        assert set(names) <= set(shapes)
        assert all(list(io[f"layer:{n}"].shape[1:]) == shapes[n][1:] for n in names)  # as OpenCV computed them
        assert (report.get("weights") is not None) == bool(extra)
    text = _inspect(capsys, prototxt, caffemodel)
    assert "weights: " + caffemodel in text and "(2, 12, 9, 7)" in text
    model_report = json.loads(_inspect(capsys, caffemodel, "--json"))
    blobs = {la["name"]: [tuple(b["shape"]) for b in la["blobs"]] for la in model_report["layers"]}
    assert blobs["res_c"][0] == (12, 4, 1, 1) and blobs["proj"][0] == (12, 8, 1, 1)


def test_inspect_onnx(onnx_file, tfk, capsys):
    ref = tfk.models.load_model(fx("keras2/seq_mlp.h5"), compile=False)
    report = json.loads(_inspect(capsys, onnx_file, "--json"))
    proto = onnx.load(onnx_file)
    assert report["format"] == "onnx" and report["opset"] == {"ai.onnx": 17}
    assert report["parameters"] == ref.count_params()
    assert report["ops"]["Gemm"] == sum(type(la).__name__ == "Dense" for la in ref.layers)
    assert report["nodes"] == len(proto.graph.node)
    assert [i["shape"][1:] for i in report["inputs"]] == [list(x.shape[1:]) for x in ref.inputs]
    assert [o["shape"][1:] for o in report["outputs"]] == [list(y.shape[1:]) for y in ref.outputs]
    text = _inspect(capsys, onnx_file)
    assert "opset ai.onnx 17" in text and f"parameters: {ref.count_params():,}" in text and "Gemm 4" in text


# ---------------------------------------------------------------------------------------------- validate


@pytest.mark.parametrize("a, b", [
    (["keras2/merge_multi_io.h5"], ["keras2/merge_multi_io.yaml", "--weights-b", "keras2/merge_multi_io_weights.h5"]),
    (["keras3/k3_seq_mlp.keras"], ["keras3/k3_seq_mlp.json", "--weights-b", "keras3/k3_seq_mlp.keras"]),
    (["keras_legacy/k1_mlp.h5"], ["keras_legacy/k1_mlp.json", "--weights-b", "keras_legacy/k1_mlp_weights.h5"]),
    (["caffe/lenet.prototxt", "--weights-a", "caffe/lenet.caffemodel"], ["OUT/lenet.keras"]),
    (["keras2/seq_mlp.h5"], ["OUT/seq_mlp.onnx"]),
])
def test_validate_across_formats(a, b, onnx_file, tmp_path, capsys):
    if b[0] == "OUT/lenet.keras":
        _convert(capsys, fx("caffe/lenet.prototxt"), fx("caffe/lenet.caffemodel"), "-o", str(tmp_path / "lenet.keras"))
    args = [str(tmp_path / x[4:]) if x.startswith("OUT/") else fx(x) if "/" in x else x for x in a[:1] + b[:1]]
    options = [fx(x) if "/" in x else x for x in a[1:] + b[1:]]
    report = json.loads(_validate(capsys, *args, *options, "--json"))
    reference = load_any(args[0], weights=options[1] if "--weights-a" in options else None)
    assert [r["name"] for r in report["outputs"]] == reference.output_names and report["ok"]
    assert all(r["max_abs"] <= r["tolerance"] for r in report["outputs"])


def _validate(capsys, *args: str, code: int = 0) -> str:
    assert main(["validate", *args]) == code
    return capsys.readouterr().out


def test_validate_onnx_against_another_model_fails(onnx_file, tmp_path, capsys):
    import tf_keras

    ref = tf_keras.models.load_model(fx("keras2/seq_mlp.h5"), compile=False)
    weights = ref.get_weights()
    weights[-2] = weights[-2] * 1.5  # the last kernel (a bias shift would cancel in the softmax)
    ref.set_weights(weights)
    ref.save(tmp_path / "other.h5")
    out = _validate(capsys, onnx_file, str(tmp_path / "other.h5"), code=3)
    assert "OVER TOLERANCE" in out
    line = _one_line_error(capsys, ["validate", onnx_file, fx("keras2/seq_mlp.h5"), "--weights-a", "w.h5"])
    assert "ONNX file holds its weights" in line
