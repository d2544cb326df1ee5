"""Keras -> Caffe (`kconvert keras2caffe`, `convert.keras_to_caffe`): what we write must compute what the Keras
model computes, in OpenCV 4.x's Caffe (the independent implementation) and read back by kconvert; and a Caffe net
taken through kconvert and written back must compute what the original computes in OpenCV.

References: real tf_keras models (their own predict and intermediate outputs) and the OpenCV outputs stored with
the fixture nets (fixtures/make_caffe.py). Shapes are odd and H != W != C; batch 2."""

import json
import os

import cv2
import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert.cli import main
from kconvert.convert import caffe_to_keras, keras_to_caffe
from kconvert.errors import ExportError
from kconvert.formats.caffe import read_prototxt

CAFFE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "caffe")
with open(os.path.join(CAFFE, "index.json")) as _f:
    FIXTURE_NETS = sorted(json.load(_f)["nets"])


def _randomize(model, seed: int) -> None:
    """Weights uniform in a range that keeps activations alive (variances positive and near 1)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
        if "variance" in w.name:
            value = np.abs(value) + 0.5
        w.assign(value)


def _cnn(tfk):
    L = tfk.layers
    inp = tfk.Input((17, 13, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_same")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw_s2")(x)  # 17x13 -> 9x7, pads (1, 1) both axes
    y = L.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(x)
    z = L.Conv2D(6, 1, name="proj")(x)
    x = L.Add(name="add")([y, z])
    x = L.MaxPooling2D(3, 2, name="pool")(x)  # 9x7 -> 4x3, (9-3) % 2 == 0 and (7-3) % 2 == 0: Caffe agrees
    d = L.Dense(10, activation="tanh", name="fc")(L.Flatten(name="flat")(x))  # kernel rows H,W,C -> C,H,W
    g = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Concatenate(name="cat")([d, g])
    out = L.Dense(5, activation="softmax", name="prob")(x)
    return tfk.Model(inp, out), {"bn": "bn_scale", "pool": "pool", "add": "add", "cat": "cat", "dw_s2": "dw_s2",
                                 "proj": "proj"}


def _cnn_more(tfk):
    L = tfk.layers
    inp = tfk.Input((15, 11, 4), name="image")
    x = L.ZeroPadding2D(((2, 2), (1, 1)), name="zpad")(inp)
    x = L.Conv2D(6, (5, 3), dilation_rate=1, name="conv_padded")(x)  # the padding folds into the convolution
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.Conv2D(6, 3, dilation_rate=2, padding="same", groups=2, name="grouped_dilated")(x)
    x = L.ReLU(max_value=6.0, name="relu6")(x)
    a = L.LeakyReLU(0.2, name="leaky")(x)
    b = L.ELU(0.7, name="elu")(x)
    x = L.Subtract(name="sub")([a, b])
    m = L.Multiply(name="mul")([x, a])
    mx = L.Maximum(name="max")([x, b])
    x = L.Average(name="avg")([m, mx])
    x = L.Activation("sigmoid", name="sig")(x)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up_same")(x)  # pad (3 - 2) / 2: not whole
    return tfk.Model(inp, x), {}


def _cnn_transpose(tfk):
    L = tfk.layers
    inp = tfk.Input((7, 9, 3), name="image")
    x = L.Conv2DTranspose(5, 4, strides=2, padding="same", name="up_same")(inp)  # Caffe pad (4 - 2) / 2 = 1
    x = L.Conv2DTranspose(4, 3, strides=2, padding="valid", activation="relu", name="up_valid")(x)
    x = L.Cropping2D(((1, 2), (0, 3)), name="crop")(x)  # asymmetric: Caffe Crop against a pooled reference
    x = L.AveragePooling2D((2, 3), strides=(2, 1), name="avg")(x)
    x = L.Permute((3, 1, 2), name="to_nchw")(x)
    x = L.Flatten(name="flat")(x)  # C,H,W order: Caffe's own Flatten
    return tfk.Model(inp, x), {"up_same": "up_same", "crop": "crop", "avg": "avg"}


def _sequence(tfk):
    """Layers over the last axis of rank-3 values and reshapes across the channel axis: Caffe gets Permutes (the
    SSD fork's layer, which OpenCV runs) to put each value in the axis order the Keras layer works in."""
    L = tfk.layers
    inp = tfk.Input((6, 10, 4), name="image")
    x = L.Conv2D(5, 3, padding="same", name="conv")(inp)
    x = L.Reshape((12, 25), name="rows")(x)  # merges W and C: Keras's element order, not Caffe's NCHW
    x = L.Dense(7, activation="relu", name="per_row")(x)  # InnerProduct over the last axis (axis 2)
    x = L.Permute((2, 1), name="swap")(x)
    x = L.Dense(3, name="per_col")(x)
    x = L.Reshape((7, 3, 1), name="to_map")(x)
    x = L.Conv2D(2, (3, 1), padding="same", name="conv_after")(x)
    return tfk.Model(inp, x), {"per_row": "per_row_relu", "swap": "swap", "conv_after": "conv_after"}


def _se_block(tfk):
    """A squeeze-and-excitation gate (Multiply of a map by a per-channel value: Caffe's two-bottom Scale) and
    nearest UpSampling2D (a fixed-weight grouped Deconvolution)."""
    L = tfk.layers
    inp = tfk.Input((9, 7, 6), name="image")
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inp)
    g = L.GlobalAveragePooling2D(name="squeeze")(x)
    g = L.Dense(3, activation="relu", name="reduce")(g)
    g = L.Dense(6, activation="sigmoid", name="expand")(g)
    g = L.Reshape((1, 1, 6), name="gate")(g)
    x = L.Multiply(name="excite")([x, g])
    x = L.UpSampling2D((2, 3), name="up")(x)
    return tfk.Model(inp, x), {"excite": "excite"}


MODELS = {"cnn": _cnn, "cnn_transpose": _cnn_transpose, "sequence": _sequence, "se_block": _se_block}


def _opencv(prototxt, caffemodel, x_nchw, names):
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(x_nchw)
    outs = net.forward(names)
    return dict(zip(names, outs))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras_model_in_caffe_computes_what_tf_keras_computes(name, tfk, tmp_path):
    ref_model, probes = MODELS[name](tfk)
    _randomize(ref_model, 1)
    ref_model.save(tmp_path / "m.h5")
    model = kconvert.load_model(tmp_path / "m.h5")
    keras_to_caffe(model, tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    x = np.random.default_rng(2).standard_normal((2, *ref_model.input_shape[1:])).astype(np.float32)
    expected = ref_model.predict(x, verbose=0)
    assert expected.std() > 0.05
    # read back by kconvert
    back = caffe_to_keras(tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    assert_close(back.predict(x), expected, what="kconvert reading the written net")
    # OpenCV: the output and the intermediate tops
    last = read_prototxt(str(tmp_path / "m.prototxt")).layer[-1].name
    tf_probe = tfk.Model(ref_model.input, [ref_model.get_layer(k).output for k in probes] + [ref_model.output])
    tf_outs = tf_probe.predict(x, verbose=0)
    cv_outs = _opencv(tmp_path / "m.prototxt", tmp_path / "m.caffemodel", x.transpose(0, 3, 1, 2),
                      [*probes.values(), last])
    for (k, caffe_name), y in zip([*probes.items(), ("output", last)], tf_outs):
        got = cv_outs[caffe_name]
        if y.ndim == 4:
            got = got.transpose(0, 2, 3, 1)
        assert_close(got.reshape(y.shape), y, what=f"{name}: {k} (Caffe layer {caffe_name}) in OpenCV")


def test_folded_padding_and_elementwise_layers(tfk, tmp_path):
    """ZeroPadding2D folded into the convolution, PReLU per channel, grouped dilated 'same' conv, ReLU(max_value=6)
    as the fork's ReLU6 (OpenCV has no Clip), LeakyReLU/ELU, every Eltwise form; a transposed 'same' conv whose crop
    Caffe cannot make is refused."""
    ref_model, _ = _cnn_more(tfk)
    _randomize(ref_model, 3)
    ref_model.save(tmp_path / "m.h5")
    model = kconvert.load_model(tmp_path / "m.h5")
    with pytest.raises(ExportError, match="up_same"):
        keras_to_caffe(model, tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    assert not (tmp_path / "m.prototxt").exists()
    trunk = tfk.Model(ref_model.input, ref_model.get_layer("drop").output)
    trunk.save(tmp_path / "t.h5")
    net = keras_to_caffe(kconvert.load_model(tmp_path / "t.h5"), tmp_path / "t.prototxt", tmp_path / "t.caffemodel")
    types = [lp.type for lp in net.layer]
    assert "ZeroPadding2D" not in types and types.count("Eltwise") == 4 and "ReLU6" in types
    conv = next(lp for lp in net.layer if lp.name == "conv_padded").convolution_param
    assert (conv.pad_h, conv.pad_w) == (2, 1)
    x = np.random.default_rng(4).standard_normal((2, 15, 11, 4)).astype(np.float32)
    expected = trunk.predict(x, verbose=0)
    got = _opencv(tmp_path / "t.prototxt", tmp_path / "t.caffemodel", x.transpose(0, 3, 1, 2), ["avg", "sig"])
    assert_close(got["sig"].transpose(0, 2, 3, 1), expected)
    assert_close(caffe_to_keras(tmp_path / "t.prototxt", tmp_path / "t.caffemodel").predict(x), expected)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", FIXTURE_NETS)
def test_caffe_net_through_kconvert_back_to_caffe(name, data_format, tmp_path):
    """The written net computes the original's outputs (OpenCV's, stored with the fixture); the structure may
    differ (BatchNorm+Scale merged and split again, Split layers gone)."""
    io = np.load(os.path.join(CAFFE, f"{name}_io.npz"))
    model = caffe_to_keras(os.path.join(CAFFE, f"{name}.prototxt"), os.path.join(CAFFE, f"{name}.caffemodel"),
                           data_format=data_format)
    keras_to_caffe(model, tmp_path / "rt.prototxt", tmp_path / "rt.caffemodel")
    inputs = [io[k] for k in sorted(f for f in io.files if f.startswith("input_"))]
    written = caffe_to_keras(tmp_path / "rt.prototxt", tmp_path / "rt.caffemodel", data_format="channels_first")
    ours = written.predict(inputs if len(inputs) > 1 else inputs[0])
    for out_name, y in zip(written.output_names, ours if isinstance(ours, list) else [ours]):
        assert_close(y, io[f"layer:{out_name}"].reshape(y.shape), what=f"{name}: {out_name} read back")
    uses_floor = any(lp.type == "Pooling" and lp.pooling_param.round_mode == 1
                     for lp in read_prototxt(str(tmp_path / "rt.prototxt")).layer)
    if uses_floor:  # BVLC's round_mode field, which OpenCV 4.x's importer does not know
        with pytest.raises(cv2.error):
            cv2.dnn.readNetFromCaffe(str(tmp_path / "rt.prototxt"), str(tmp_path / "rt.caffemodel")).forward()
        return
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "rt.prototxt"), str(tmp_path / "rt.caffemodel"))
    for input_name, x in zip(written.input_names, inputs):
        net.setInput(x, input_name)
    for out_name, got in zip(written.output_names, net.forward(written.output_names)):
        ref = io[f"layer:{out_name}"]
        assert_close(got.reshape(ref.shape), ref, what=f"{name}: {out_name} in OpenCV")


@pytest.mark.parametrize("shape, build, message", [
    ((5, 3, 9), lambda L, x: L.Conv2D(4, 2, padding="same", name="even_same")(x), "even_same.*symmetric"),
    ((5, 3, 9), lambda L, x: L.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(x),
     "avg_same.*divides"),
    ((5, 3, 9), lambda L, x: L.MaxPooling2D(2, name="pool_floor")(x), "pool_floor.*rounding up"),
    ((15, 9), lambda L, x: L.Add(name="broadcast")([x, L.Dense(1)(x)]), "broadcast.*does not broadcast"),
    ((5, 3, 9), lambda L, x: L.Conv2D(4, 1, name="conv")(L.Reshape((5, 3, 9), name="unflat")(L.Flatten()(x))),
     "unflat.*Flatten of a \\(9, 5, 3\\) map"),
    ((15, 9), lambda L, x: L.LSTM(3, name="lstm")(x), "lstm.*LSTM has no Caffe"),
])
def test_what_caffe_cannot_compute_is_an_error_naming_the_layer(shape, build, message, tfk, tmp_path):
    inp = tfk.Input(shape)
    ref = tfk.Model(inp, build(tfk.layers, inp))
    ref.save(tmp_path / "m.h5")
    with pytest.raises(ExportError, match=message):
        keras_to_caffe(kconvert.load_model(tmp_path / "m.h5"), tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    assert sorted(os.listdir(tmp_path)) == ["m.h5"]  # nothing half-written


def test_cli_keras2caffe_with_check(tfk, tmp_path, capsys):
    ref, _ = _cnn(tfk)
    _randomize(ref, 5)
    ref.save(tmp_path / "m.h5")
    args = ["keras2caffe", str(tmp_path / "m.h5"), "-o", str(tmp_path / "m.prototxt"), "--weights",
            str(tmp_path / "m.caffemodel"), "--check"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "read back by kconvert" in out and "OpenCV" in out and out.count(" ok") == 2 and "OVER" not in out
    assert main(["keras2caffe", str(tmp_path / "m.h5"), "-o", str(tmp_path / "arch.prototxt")]) == 0
    assert (tmp_path / "arch.prototxt").exists() and not (tmp_path / "arch.caffemodel").exists()
    assert main(["keras2caffe", str(tmp_path / "m.h5"), "-o", str(tmp_path / "x.caffemodel")]) == 1
    err = capsys.readouterr().err
    assert "must end in .prototxt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_written_caffemodel_streams_deferred_weights(tmp_path):
    """A Caffe-converted model's weights are deferred; writing them back does not keep them."""
    model = caffe_to_keras(os.path.join(CAFFE, "alexnet_like.prototxt"), os.path.join(CAFFE, "alexnet_like.caffemodel"))
    assert any(w.deferred for w in model.weights)
    keras_to_caffe(model, tmp_path / "a.prototxt", tmp_path / "a.caffemodel")
    assert all(w.deferred for w in model.weights if w.name.endswith("kernel:0"))


def test_in_place_last_layer_is_the_output(tmp_path):
    """Caffe's outputs are the blobs no later layer reads; an in-place layer rewriting a blob last leaves it one."""
    from kconvert.formats.caffe.caffemodel import write_caffemodel

    (tmp_path / "n.prototxt").write_text(
        'input: "data" input_shape { dim: 2 dim: 3 dim: 5 dim: 4 }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 7 } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" }\n')
    rng = np.random.default_rng(6)
    write_caffemodel(tmp_path / "n.caffemodel", [("fc", "InnerProduct", [rng.standard_normal((7, 60)).astype(
        np.float32), rng.standard_normal(7).astype(np.float32)])])
    model = caffe_to_keras(tmp_path / "n.prototxt", tmp_path / "n.caffemodel", data_format="channels_first")
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel"))
    net.setInput(x)
    expected = net.forward()
    assert model.output_names == ["relu"] and (expected == 0).any() and (expected > 0).any()
    assert_close(model.predict(x), expected.reshape(2, 7))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", ["forks_opencv", "forks_segnet"])
def test_fork_nets_back_to_caffe(name, data_format, tmp_path):
    """The fork layers go back to their own types (Interp, Upsample with the mask, Pooling's mask top as a second
    top of the same Pooling) and compute the same: in OpenCV where it runs the net (its stored outputs), else
    kconvert reading the written net against kconvert reading the original (whose layers test_caffe_forks.py checks
    against the forks' published formulas)."""
    prototxt, caffemodel = (os.path.join(CAFFE, f"{name}.{ext}") for ext in ("prototxt", "caffemodel"))
    io = np.load(os.path.join(CAFFE, f"{name}_io.npz"))
    x = io["input_0"]
    model = caffe_to_keras(prototxt, caffemodel, data_format=data_format)
    net = keras_to_caffe(model, tmp_path / "rt.prototxt", tmp_path / "rt.caffemodel")
    types = {lp.type for lp in net.layer}
    written = caffe_to_keras(tmp_path / "rt.prototxt", tmp_path / "rt.caffemodel", data_format="channels_first")
    original = caffe_to_keras(prototxt, caffemodel, data_format="channels_first")
    ours, ref = written.predict(x, runtime="numpy"), original.predict(x, runtime="numpy")
    for y, r in zip(ours if isinstance(ours, list) else [ours], ref if isinstance(ref, list) else [ref]):
        assert_close(y, r)
    masked = [lp for lp in net.layer if lp.type == "Pooling" and len(lp.top) == 2]
    assert masked and all("__values" not in lp.name for lp in masked)  # the mask rejoined its Pooling
    if name == "forks_segnet":
        assert {"Upsample", "BatchNorm"} <= types
        return
    assert "Interp" in types
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "rt.prototxt"), str(tmp_path / "rt.caffemodel"))
    cv.setInput(x)
    names = [lp.name for lp in net.layer if f"layer:{lp.name}" in io.files]  # the layers the two nets share
    assert len(names) >= 8
    compared, keras_order = 0, set()
    for layer_name, outs in zip(names, cv.forwardAndRetrieve(names)):
        for i, got in enumerate(outs):  # every top, the Pooling masks (`#1`) included
            expected = io[f"layer:{layer_name}" + (f"#{i}" if i else "")]
            got = np.asarray(got)
            if got.shape != expected.shape:  # a blob kept in Keras's axis order (permuted to NCHW where read)
                keras_order.add(layer_name)
                assert_close(np.moveaxis(got, -1, 1), expected, what=f"{name}: {layer_name} in Keras order")
                continue
            assert_close(got, expected, what=f"{name}: {layer_name} top {i}")
            compared += 1
    assert compared > len(names) - len(keras_order)
    # channels_last: ShuffleChannel's Reshape/Permute/Reshape ends in Keras's order; channels_first: none
    assert keras_order == ({"shuffle"} if data_format == "channels_last" else set())


@pytest.mark.parametrize("name", ["ssd_small", "ssd_res10", "ssd_mobilenet"])
def test_ssd_nets_back_to_caffe(name, tmp_path):
    """The res10 face detector, MobileNet-SSD and the small SSD (Normalize, PriorBox, DetectionOutput and their
    Permute/Flatten/Concat heads) written back from a channels_last conversion: OpenCV's detections on the written
    net equal those it gives on the original (fixtures/make_caffe_ssd.py)."""
    import sys

    sys.path.insert(0, os.path.join(CAFFE, ".."))
    from make_caffe_ssd import to_input

    prototxt, caffemodel = (os.path.join(CAFFE, f"{name}.{ext}") for ext in ("prototxt", "caffemodel"))
    io = np.load(os.path.join(CAFFE, f"{name}_io.npz"))
    x = to_input(io["pixels_0"])
    model = caffe_to_keras(prototxt, caffemodel)
    net = keras_to_caffe(model, tmp_path / "rt.prototxt", tmp_path / "rt.caffemodel")
    assert {"Normalize", "PriorBox", "DetectionOutput"} <= {lp.type for lp in net.layer} or name != "ssd_small"
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "rt.prototxt"), str(tmp_path / "rt.caffemodel"))
    cv.setInput(x)
    detections = 0
    for out_name, got in zip(model.output_names, cv.forward(model.output_names)):
        expected = io[f"layer:{out_name}"]
        assert_close(np.asarray(got).reshape(expected.shape), expected, what=f"{name}: {out_name}")
        if expected.shape[-1] == 7:
            detections += int((expected.reshape(-1, 7)[:, 2] > 0).sum())
    assert detections >= 20


def test_shared_layer_becomes_caffe_layers_sharing_their_parameters(tfk, tmp_path):
    """A Keras layer called twice (a siamese tower): one Caffe layer per call, unique names, and the same named
    `param`s, Caffe's weight sharing; OpenCV and kconvert compute what tf_keras computes."""
    L = tfk.layers
    left, right = tfk.Input((9, 7, 3), name="left"), tfk.Input((9, 7, 3), name="right")
    conv = L.Conv2D(5, 3, padding="same", activation="relu", name="tower")
    merged = L.Subtract(name="diff")([conv(left), conv(right)])
    ref = tfk.Model([left, right], L.Conv2D(4, 1, name="head")(merged))
    _randomize(ref, 3)
    ref.save(tmp_path / "m.h5")
    keras_to_caffe(kconvert.load_model(tmp_path / "m.h5"), tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    net = read_prototxt(str(tmp_path / "m.prototxt"))
    towers = [lp for lp in net.layer if lp.type == "Convolution" and lp.name.startswith("tower")]
    assert [lp.name for lp in towers] == ["tower", "tower_2"]
    assert [[p.name for p in lp.param] for lp in towers] == [["tower_param0", "tower_param1"]] * 2
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 9, 7, 3)).astype(np.float32) for _ in range(2)]
    expected = ref.predict(xs, verbose=0)
    back = caffe_to_keras(tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    assert_close(back.predict(xs), expected, what="kconvert reading the written net")
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "m.prototxt"), str(tmp_path / "m.caffemodel"))
    cv.setInput(xs[0].transpose(0, 3, 1, 2), "left")
    cv.setInput(xs[1].transpose(0, 3, 1, 2), "right")
    assert_close(cv.forward(net.layer[-1].name).transpose(0, 2, 3, 1), expected, what="OpenCV")
