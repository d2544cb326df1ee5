"""Caffe's Flatten axis/end_axis, Reshape axis/num_axes, InnerProduct axis (and transpose), grouped Deconvolution.

Reference: OpenCV 4.x (`fixtures/caffe/shape_options*`, made by fixtures/make_caffe.py: OpenCV's output of every
layer), compared layer by layer in channels_last and channels_first, then through ONNX, kconvert's .h5 read back
by kconvert and real tf_keras, and the .keras archive read by real Keras 3. The net's tops have ranks 2 to 5; in
channels_last a Caffe (N, C, d1..dk) blob is held as (N, d1..dk, C). Two options OpenCV 4.14 does not compute as
Caffe does are checked against Caffe's source formulas instead: a negative Reshape `axis` (OpenCV rejects it) and
InnerProduct `transpose: true` (OpenCV ignores it and reads the (K, N) blob as (N, K)).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.convert import caffe_to_keras, caffe_to_onnx
from kconvert.errors import ConfigError
from kconvert.formats.caffe.caffemodel import write_caffemodel
from kconvert.layers.caffe_shapes import caffe_order
from kconvert.runtime import numpy_engine

CAFFE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "caffe")
NET = "shape_options"
PROTOTXT, CAFFEMODEL = (os.path.join(CAFFE, f"{NET}{ext}") for ext in (".prototxt", ".caffemodel"))
FORMATS = ("channels_last", "channels_first")

FLATTENS = ["flat_hw", "flat_ch", "flat_same", "flat5_hw", "flat5_ch", "flat3_all"]
RESHAPES = ["split5", "re_copy", "re_mix", "re_tail", "re_flat", "re_up", "re_front"]
INNER_PRODUCTS = ["ip_hw", "ip_w", "ip_3d", "ip_5d"]
DECONVOLUTIONS = ["de_g3", "de_dw", "de_g7"]


def to_format(x: np.ndarray, data_format: str) -> np.ndarray:
    """A Caffe-ordered blob as the model holds it."""
    return np.transpose(x, np.argsort(caffe_order(x.ndim, data_format)))


def to_caffe(y: np.ndarray, data_format: str) -> np.ndarray:
    return np.transpose(y, caffe_order(y.ndim, data_format))


@pytest.fixture(scope="module")
def io():
    return np.load(os.path.join(CAFFE, f"{NET}_io.npz"))


@pytest.fixture(scope="module")
def layer_values(io):
    """data_format -> (model, {Caffe layer: its value as a Caffe-ordered array}) from the numpy engine."""
    out = {}
    for data_format in FORMATS:
        model = caffe_to_keras(PROTOTXT, CAFFEMODEL, data_format=data_format)
        names = [n for n in model.caffe_layers if n != "data"]
        probe = kconvert.Model(model.inputs, [model.caffe_layers[n][0] for n in names])
        ys = numpy_engine.predict(probe._graph, [to_format(io["input_0"], data_format)])
        out[data_format] = model, {n: to_caffe(y, data_format) for n, y in zip(names, ys)}
    return out


def test_fixture_covers_every_layer_and_rank(io):
    with open(os.path.join(CAFFE, "index.json")) as f:
        listed = json.load(f)["nets"][NET]["layers"]
    assert listed == FLATTENS[:3] + ["split5"] + FLATTENS[3:] + RESHAPES[1:] + INNER_PRODUCTS + DECONVOLUTIONS
    assert {io[f"layer:{n}"].ndim for n in listed} == {2, 3, 4, 5}


def _check(layer_values, io, name, data_format):
    assert_close(layer_values[data_format][1][name], io[f"layer:{name}"], what=f"{name} ({data_format})")


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("name", FLATTENS)
def test_flatten_axis_end_axis_equals_opencv(layer_values, io, name, data_format):
    _check(layer_values, io, name, data_format)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("name", RESHAPES)
def test_reshape_axis_num_axes_equals_opencv(layer_values, io, name, data_format):
    _check(layer_values, io, name, data_format)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("name", INNER_PRODUCTS)
def test_inner_product_axis_equals_opencv(layer_values, io, name, data_format):
    _check(layer_values, io, name, data_format)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("name", DECONVOLUTIONS)
def test_grouped_deconvolution_equals_opencv(layer_values, io, name, data_format):
    _check(layer_values, io, name, data_format)


def test_layouts_chosen(layer_values):
    """channels_first needs no Permute; channels_last permutes only where the merged or reshaped dims include C."""
    first, _ = layer_values["channels_first"]
    assert not [la.name for la in first.layers if type(la).__name__ == "Permute"]
    last, _ = layer_values["channels_last"]
    kinds = {la.name: type(la).__name__ for la in last.layers}
    # C kept: a Reshape of the value as held, no permute
    for name in ("flat_hw", "flat_same", "flat5_hw", "split5", "re_copy", "re_tail"):
        assert kinds[name] == "Reshape" and f"{name}_nchw" not in kinds, name
    # the merged dims include C: one Permute, then the Reshape
    assert kinds["flat_ch_permute"] == kinds["flat5_ch_permute"] == "Permute" and kinds["flat_ch"] == "Reshape"
    # C changes size: to Caffe's order, reshape, and back
    assert [kinds[f"re_mix{s}"] for s in ("_nchw", "_reshape", "")] == ["Permute", "Reshape", "Permute"]
    # grouped deconvolution: a CaffeSlice, one Conv2DTranspose per group, a Concatenate (then the crop)
    assert kinds["de_g3_groups"] == "CaffeSlice" and kinds["de_g3_full"] == "Concatenate"
    convs = [n for n, k in kinds.items() if k == "Conv2DTranspose" and n.startswith("de_g7")]
    assert sorted(convs) == [f"de_g7_g{g}" for g in range(7)] and kinds["de_g7"] == "Cropping2D"
    # the last layer of each mapping carries the Caffe name (the model's output names are Caffe's)
    assert kinds["ip_hw_dense"] == "Dense" and kinds["ip_hw"] == "Permute"
    assert {type(la).__name__ for la in first.layers if la.name.startswith("ip_")} == {"Dense", "Reshape"}
    assert last.output_names == first.output_names == [
        "flat_same", "flat5_hw", "flat5_ch", "flat3_all", "re_copy", "re_tail", "re_front", *INNER_PRODUCTS,
        *DECONVOLUTIONS]


def test_grouped_deconvolution_weights_are_the_blob_slices():
    from kconvert.formats.caffe.caffemodel import read_caffemodel

    blob = next(la for la in read_caffemodel(CAFFEMODEL).layers if la.name == "de_g3").blobs
    w, bias = np.asarray(blob[0]).reshape(15, 2, 3, 3), np.asarray(blob[1]).reshape(6)
    model = caffe_to_keras(PROTOTXT, CAFFEMODEL)
    for g in range(3):
        kernel, b = model.get_layer(f"de_g3_g{g}").get_weights()
        assert np.array_equal(kernel, w[5 * g:5 * g + 5].transpose(2, 3, 1, 0))
        assert np.array_equal(b, bias[2 * g:2 * g + 2])


# ---------------------------------------------------------------------------------------------- interop


def test_onnx_is_nchw_without_transposes(io, tmp_path):
    path = tmp_path / f"{NET}.onnx"
    proto = caffe_to_onnx(PROTOTXT, CAFFEMODEL, path)
    assert not [n for n in proto.graph.node if n.op_type == "Transpose"]
    assert sum(n.op_type == "ConvTranspose" for n in proto.graph.node) == 3 + 5 + 7
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = caffe_to_keras(PROTOTXT, CAFFEMODEL, data_format="channels_first")
    outs = sess.run(None, {sess.get_inputs()[0].name: io["input_0"]})
    names = [n for n in model.caffe_layers if model.caffe_layers[n][0] in model.outputs]
    assert len(outs) == len(names) >= 12
    for name, y in zip(names, outs):
        assert_close(y, io[f"layer:{name}"], what=f"onnx {name}")


@pytest.fixture(scope="module")
def probe_last(io):
    """The channels_last model with every Caffe layer's value as an output, its input and the references."""
    model = caffe_to_keras(PROTOTXT, CAFFEMODEL)
    names = [n for n in model.caffe_layers if n != "data"]
    probe = kconvert.Model(model.inputs, [model.caffe_layers[n][0] for n in names])
    return probe, to_format(io["input_0"], "channels_last"), [io[f"layer:{n}"] for n in names]


def test_h5_loads_in_kconvert_and_tf_keras(probe_last, tfk, tmp_path):
    probe, x, refs = probe_last
    path = str(tmp_path / f"{NET}.h5")
    probe.save(path)
    again = kconvert.load_model(path).predict(x)
    real = tfk.models.load_model(path, custom_objects=kconvert.keras_objects("tf_keras"), compile=False)
    got = real.predict(x, verbose=0)
    assert len(got) == len(again) == len(refs) == 20
    for a, g, ref in zip(again, got, refs):
        assert_close(to_caffe(a, "channels_last"), ref)
        assert_close(to_caffe(g, "channels_last"), ref)


def test_keras3_archive_loads_in_keras3(probe_last, tmp_path):
    import keras

    probe, x, refs = probe_last
    path = str(tmp_path / f"{NET}.keras")
    probe.save(path)
    real = keras.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"), compile=False)
    got = real.predict(x, verbose=0)
    assert len(got) == len(refs)
    for g, ref in zip(got, refs):
        assert_close(to_caffe(np.asarray(g), "channels_last"), ref)


# ---------------------------------------------------------------------------------------------- hand-worked


def _convert(tmp_path, body: str, shape: tuple, blobs: list, data_format: str):
    dims = " ".join(f"dim: {d}" for d in (2, *shape))
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
                        + body)
    caffemodel = tmp_path / "net.caffemodel"
    write_caffemodel(caffemodel, blobs)
    return caffe_to_keras(prototxt, caffemodel if blobs else None, data_format=data_format)


def _run(model, x, data_format):
    y = model.predict(to_format(x, data_format))
    return [to_caffe(v, data_format) for v in (y if isinstance(y, list) else [y])]


@pytest.mark.parametrize("data_format", FORMATS)
def test_reshape_negative_axis_follows_caffe(tmp_path, rng, data_format):
    """BVLC reshape_layer.cpp: start_axis = axis >= 0 ? axis : bottom.num_axes() + axis + 1, so -1 is *after*
    the last dim (Python's axis % rank would be the last dim); end_axis = start + num_axes. OpenCV 4.14 rejects
    a negative axis, so the reference is that formula."""
    x = rng.normal(0.0, 1.0, (2, 5, 9, 7)).astype(np.float32)
    body = ('layer { name: "append" type: "Reshape" bottom: "data" top: "append" '
            "reshape_param { shape { dim: 1 } axis: -1 num_axes: 0 } }\n"  # start 4: (N, C, H, W, 1)
            'layer { name: "split_h" type: "Reshape" bottom: "data" top: "split_h" '
            "reshape_param { shape { dim: 3 dim: -1 } axis: -3 num_axes: 1 } }\n"  # start 2: H -> (3, 3)
            'layer { name: "mix" type: "Reshape" bottom: "data" top: "mix" '
            "reshape_param { shape { dim: 0 dim: 3 dim: 21 } axis: -4 } }\n")  # start 1, 0 copies C
    model = _convert(tmp_path, body, (5, 9, 7), [], data_format)
    append, split_h, mix = _run(model, x, data_format)
    assert_close(append, x.reshape(2, 5, 9, 7, 1))
    assert_close(split_h, x.reshape(2, 5, 3, 3, 7))
    assert_close(mix, x.reshape(2, 5, 3, 21))


@pytest.mark.parametrize("data_format", FORMATS)
def test_inner_product_transpose_follows_caffe(tmp_path, rng, data_format):
    """BVLC inner_product_layer.cpp: with transpose the weight blob is (K, N) and top = bottom * W (no W^T);
    K = count(axis). OpenCV 4.14 ignores `transpose`, so the reference is that formula."""
    x = rng.normal(0.0, 1.0, (2, 5, 9, 7)).astype(np.float32)
    w1 = (rng.normal(0.0, 1.0, (315, 4)) / np.sqrt(315)).astype(np.float32)
    w2 = (rng.normal(0.0, 1.0, (63, 3)) / np.sqrt(63)).astype(np.float32)
    b1, b2 = (0.1 * rng.normal(0.0, 1.0, n).astype(np.float32) for n in (4, 3))
    body = ('layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" '
            "inner_product_param { num_output: 4 transpose: true } }\n"
            'layer { name: "ip2" type: "InnerProduct" bottom: "data" top: "ip2" '
            "inner_product_param { num_output: 3 axis: 2 transpose: true } }\n")
    model = _convert(tmp_path, body, (5, 9, 7), [("ip1", "InnerProduct", [w1, b1]), ("ip2", "InnerProduct", [w2, b2])],
                     data_format)
    ip1, ip2 = _run(model, x, data_format)
    assert_close(ip1, x.reshape(2, 315) @ w1 + b1)
    assert_close(ip2, x.reshape(2, 5, 63) @ w2 + b2)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("body, message", [
    ('layer { name: "f0" type: "Flatten" bottom: "data" top: "f0" flatten_param { axis: 0 } }', "f0.*batch"),
    ('layer { name: "f1" type: "Flatten" bottom: "data" top: "f1" flatten_param { axis: 3 end_axis: 2 } }',
     "f1.*range"),
    ('layer { name: "r1" type: "Reshape" bottom: "data" top: "r1" '
     "reshape_param { shape { dim: 2 } axis: 3 num_axes: 2 } }", "r1.*range"),
    ('layer { name: "r2" type: "Reshape" bottom: "data" top: "r2" '
     "reshape_param { shape { dim: -1 dim: -1 } axis: 1 } }", "r2.*more than one"),
    ('layer { name: "r3" type: "Reshape" bottom: "data" top: "r3" '
     "reshape_param { shape { dim: 4 } axis: 2 num_axes: 1 } }", "r3.*values"),
    ('layer { name: "r4" type: "Reshape" bottom: "data" top: "r4" '
     "reshape_param { shape { dim: 0 dim: 0 } axis: 3 num_axes: 1 } }", "r4.*no axis 4"),
    ('layer { name: "ip0" type: "InnerProduct" bottom: "data" top: "ip0" '
     "inner_product_param { num_output: 2 axis: 0 } }", "ip0.*non-batch"),
    ('layer { name: "de" type: "Deconvolution" bottom: "data" top: "de" '
     "convolution_param { num_output: 6 kernel_size: 2 group: 2 } }", "de.*group=2 must divide"),
])
def test_unconvertible_options_name_the_layer(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        _convert(tmp_path, body + "\n", (5, 9, 7), [], "channels_last")
