"""`--check` on Caffe nets where OpenCV 4.x is not Caffe: the OpenCV comparison still runs and is printed, but the
layers where OpenCV departs from Caffe are named and a difference there does not fail the check."""

import numpy as np

from kconvert.api import opencv_deviations
from kconvert.cli import main
from kconvert.formats.caffe.caffemodel import write_caffemodel

_NET = """name: "deviations"
input: "data"
input_shape { dim: 2 dim: 6 dim: 9 dim: 7 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "norm" type: "LRN" bottom: "conv" top: "norm" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "abs" type: "AbsVal" bottom: "norm" top: "abs" }
layer { name: "log" type: "Log" bottom: "abs" top: "log" log_param { scale: 2 shift: 1 } }
layer { name: "pool" type: "Pooling" bottom: "log" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }
"""


def _net(tmp_path, text):
    prototxt, caffemodel = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    prototxt.write_text(text)
    rng = np.random.default_rng(0)
    write_caffemodel(caffemodel, [("conv", "Convolution", [rng.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.3,
                                                           rng.uniform(-0.1, 0.1, 8).astype(np.float32)])])
    return str(prototxt), str(caffemodel)


def test_opencv_deviations_name_the_layers(tmp_path):
    prototxt, _ = _net(tmp_path, _NET)
    found = opencv_deviations(prototxt)
    assert [d.split(":")[0] for d in found] == ["norm", "log", "pool"]
    assert "k=2" in found[0] and "scale=2 shift=1" in found[1] and "FLOOR" in found[2]
    plain, _ = _net(tmp_path, _NET.replace(" k: 2", "").replace("log_param { scale: 2 shift: 1 }", "")
                    .replace(" round_mode: FLOOR", ""))
    assert opencv_deviations(plain) == []


def test_check_reports_opencv_differences_without_failing(tmp_path, capsys):
    prototxt, caffemodel = _net(tmp_path, _NET.replace(" round_mode: FLOOR", ""))
    assert main(["caffe2keras", prototxt, caffemodel, "-o", str(tmp_path / "out.h5"), "--check"]) == 0
    out = capsys.readouterr().out
    ours, opencv = out.split("check: converted model vs OpenCV")
    assert "OVER TOLERANCE" not in ours  # kconvert's own NCHW run agrees exactly
    assert "OVER TOLERANCE" in opencv  # OpenCV really computes something else here ...
    assert "informational" in opencv and "norm: LRN k=2" in opencv  # ... and says why


def test_check_still_fails_on_a_real_difference(tmp_path, capsys, monkeypatch):
    """Without known deviations an OpenCV mismatch is a failure (exit 3): simulated by a converted model whose
    conv bias is off."""
    from kconvert import api

    prototxt, caffemodel = _net(tmp_path, _NET.replace(" k: 2", "").replace("log_param { scale: 2 shift: 1 }", "")
                                .replace(" round_mode: FLOOR", ""))
    real = api.check_caffe

    def skewed(model, *args, **kwargs):
        bias = model.get_layer("conv").weights[1]
        bias.assign(bias.value + 0.5)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(api, "check_caffe", skewed)
    code = main(["caffe2keras", prototxt, caffemodel, "-o", str(tmp_path / "out.h5"), "--check"])
    out = capsys.readouterr().out
    assert code != 0 and "OVER TOLERANCE" in out and "informational" not in out


def test_check_says_when_opencv_cannot_run_the_net(tmp_path, capsys):
    """OpenCV 4.14's proto has no `round_mode` (a fork field kconvert reads): its importer fails on the net; the
    check says so instead of failing with OpenCV's exception."""
    prototxt, caffemodel = _net(tmp_path, _NET)
    assert main(["caffe2keras", prototxt, caffemodel, "-o", str(tmp_path / "out.h5"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "not compared: OpenCV cannot run this net" in out and "OVER" not in out
