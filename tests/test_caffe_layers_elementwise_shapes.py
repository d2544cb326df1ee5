"""Caffe's Power, Exp, Log, Threshold, Clip, AbsVal, Eltwise, Slice, Crop and ArgMax as kconvert layers.

Proof: (a) against OpenCV 4.x's Caffe implementation (`cv2.dnn.readNetFromCaffe` on a deploy prototxt with the
layer; the layers have no blobs, so no caffemodel is needed), our numpy `call` fed the same NCHW input, in both
data formats; OpenCV 4.x implements no Threshold, Clip or ArgMax layer, so those are checked against their
Caffe source (BVLC caffe src/caffe/layers/{threshold,clip,argmax}_layer.cpp) transcribed by hand below;
(b) onnxruntime on the exported ONNX; (c) real tf_keras (.h5) and real Keras 3 (.keras) loading kconvert's files
with `kconvert.keras_objects(...)`. Shapes: batch 2, C != H != W, odd sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import kconvert
import kconvert.layers as kl
from kconvert.converters.onnx_lowering import lower_model, lowering_for
from kconvert.errors import ConfigError, ShapeError
from kconvert.layers.caffe_shapes import caffe_order, keras_axis
from kconvert.models import Input, Model
from kconvert.runtime.numpy_engine import predict as numpy_predict

FORMATS = ("channels_first", "channels_last")


# ---------------------------------------------------------------------------------------------- OpenCV harness


def opencv_forward(tmp_path, body: str, inputs: dict[str, np.ndarray], tops: list[str]) -> list[np.ndarray]:
    """Run a deploy prototxt (Input layers for `inputs`, then `body`) in OpenCV and return the named tops."""
    import cv2

    text = ""
    for name, x in inputs.items():
        dims = " ".join(f"dim: {d}" for d in x.shape)
        text += f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'
    text += body + "\n"
    for top in tops:  # OpenCV's forward() names layers, not blobs: an identity (Split) layer per wanted top
        text += f'layer {{ name: "{top}__out" type: "Split" bottom: "{top}" top: "{top}__out" }}\n'
    path = tmp_path / "deploy.prototxt"
    path.write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(path))
    for name, x in inputs.items():
        net.setInput(x, name)
    outs = net.forward([f"{top}__out" for top in tops])
    return [np.asarray(o) for o in outs]


def to_format(x: np.ndarray, data_format: str) -> np.ndarray:
    """A Caffe (NCHW-ordered) blob as a `data_format` array."""
    return np.transpose(x, np.argsort(caffe_order(x.ndim, data_format)))


def to_caffe(y: np.ndarray, data_format: str) -> np.ndarray:
    return np.transpose(y, caffe_order(y.ndim, data_format))


def ours(layer, xs, data_format: str = "channels_first"):
    """The layer's numpy call on Caffe blobs given in `data_format`; outputs back in Caffe's order."""
    args = [to_format(x, data_format) for x in xs]
    out = layer(args if len(args) > 1 else args[0])
    if isinstance(out, list):
        return [to_caffe(np.asarray(o), data_format) for o in out]
    return to_caffe(np.asarray(out), data_format)


@pytest.fixture
def blob(rng):
    return rng.normal(0.0, 1.0, (2, 3, 5, 7)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- axes


def test_caffe_axis_numbers_map_to_each_layout():
    assert [keras_axis(a, 4, "channels_last") for a in range(4)] == [0, 3, 1, 2]
    assert [keras_axis(a, 4, "channels_first") for a in range(4)] == [0, 1, 2, 3]
    assert [keras_axis(a, 4, "channels_last") for a in (-1, -2, -3)] == [2, 1, 3]
    assert [keras_axis(a, 3, "channels_last") for a in range(3)] == [0, 2, 1]
    assert [keras_axis(a, 2, "channels_last") for a in range(2)] == [0, 1]
    assert [keras_axis(a, 5, "channels_last") for a in range(5)] == [0, 4, 1, 2, 3]
    x = np.arange(2 * 3 * 5 * 7).reshape(2, 3, 5, 7)
    assert np.array_equal(to_format(x, "channels_last"), x.transpose(0, 2, 3, 1))
    assert np.array_equal(to_caffe(to_format(x, "channels_last"), "channels_last"), x)
    with pytest.raises(ValueError):
        keras_axis(4, 4, "channels_last")


# ---------------------------------------------------------------------------------------------- elementwise vs OpenCV


@pytest.mark.parametrize("power,scale,shift", [(2.0, 0.5, 1.0), (3.0, -1.3, 0.2), (0.5, 0.7, 3.0), (1.0, 2.0, -1.0),
                                               (0.0, 2.0, 1.0), (1.5, 0.0, 2.0)])
def test_power_matches_opencv(tmp_path, blob, power, scale, shift):
    body = (f'layer {{ name: "p" type: "Power" bottom: "data" top: "p" '
            f'power_param {{ power: {power} scale: {scale} shift: {shift} }} }}')
    (ref,) = opencv_forward(tmp_path, body, {"data": blob}, ["p"])
    layer = kl.Power(power=power, scale=scale, shift=shift)
    got = ours(layer, [blob])
    assert_close(got, ref, what="Power")
    if power * scale == 0:  # Caffe's constant case
        assert np.all(got == (1.0 if power == 0 else np.float32(shift) ** np.float32(power)))
    else:
        assert np.std(ref) > 0.1


@pytest.mark.parametrize("base,scale,shift", [(-1.0, 1.0, 0.0), (2.0, 0.5, 1.0), (0.5, -0.8, 0.3), (-1.0, 0.7, -0.4)])
def test_exp_matches_opencv(tmp_path, blob, base, scale, shift):
    body = (f'layer {{ name: "e" type: "Exp" bottom: "data" top: "e" '
            f'exp_param {{ base: {base} scale: {scale} shift: {shift} }} }}')
    (ref,) = opencv_forward(tmp_path, body, {"data": blob}, ["e"])
    got = ours(kl.CaffeExp(base=base, scale=scale, shift=shift), [blob])
    assert_close(got, ref, what="Exp")
    assert_close(got, np.power(base if base != -1 else np.e, shift + scale * blob.astype(np.float64)), what="formula")


def test_log_matches_opencv(tmp_path, blob):
    """OpenCV 4.x's Log reads no log_param (it computes ln(x) whatever base/scale/shift say): default params only."""
    x = np.abs(blob) + 0.05
    body = 'layer { name: "l" type: "Log" bottom: "data" top: "l" }'
    (ref,) = opencv_forward(tmp_path, body, {"data": x}, ["l"])
    assert_close(ours(kl.CaffeLog(), [x]), ref, what="Log")


@pytest.mark.parametrize("base,scale,shift", [(-1.0, 1.0, 4.0), (2.0, 0.5, 3.0), (10.0, -0.8, 3.5), (0.5, 1.0, 5.0)])
def test_log_params_follow_caffe_source(blob, base, scale, shift):
    """log_layer.cpp: top = ln(scale·x + shift) · (1 / ln(base)), ln(base) = 1 for base -1, in float32."""
    x = blob.astype(np.float32)
    inner = x * np.float32(scale) + np.float32(shift)
    k = np.float32(1.0) / (np.float32(1.0) if base == -1 else np.log(np.float32(base)))
    got = kl.CaffeLog(base=base, scale=scale, shift=shift)(x)
    assert_close(got, np.log(inner) * k, what="Log")
    assert_close(got, np.log(shift + scale * x.astype(np.float64)) / np.log(np.e if base == -1 else base),
                 what="log_base(shift + scale x)")


def test_absval_matches_opencv(tmp_path, blob):
    body = 'layer { name: "a" type: "AbsVal" bottom: "data" top: "a" }'
    (ref,) = opencv_forward(tmp_path, body, {"data": blob}, ["a"])
    assert_close(ours(kl.AbsVal(), [blob]), ref, what="AbsVal")


def test_bnll_is_keras_softplus(tmp_path, tfk, blob):
    """Caffe BNLL = log(1 + e^x): the converter's Activation('softplus'), in kconvert and in real tf_keras."""
    x = blob * 4.0  # reach both tails
    body = 'layer { name: "b" type: "BNLL" bottom: "data" top: "b" }'
    (ref,) = opencv_forward(tmp_path, body, {"data": x}, ["b"])
    assert_close(kl.Activation("softplus")(x), ref, what="kconvert softplus")
    assert_close(tfk.layers.Activation("softplus")(x).numpy(), ref, what="tf_keras softplus")


def test_relu_negative_slope_is_keras_leaky_relu(tmp_path, tfk, blob):
    body = 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" relu_param { negative_slope: 0.15 } }'
    (ref,) = opencv_forward(tmp_path, body, {"data": blob}, ["r"])
    assert np.any(ref < 0)
    assert_close(kl.LeakyReLU(alpha=0.15)(to_format(blob, "channels_last")), to_format(ref, "channels_last"),
                 what="kconvert LeakyReLU")
    assert_close(tfk.layers.LeakyReLU(alpha=0.15)(blob).numpy(), ref, what="tf_keras LeakyReLU")


def test_threshold_follows_caffe_source(blob):
    """threshold_layer.cpp: top = bottom > threshold ? 1 : 0 (OpenCV 4.x has no Threshold layer)."""
    x = np.round(blob * 2) / 2  # many values exactly at the threshold
    got = kl.CaffeThreshold(threshold=0.5)(x)
    assert np.any(x == 0.5)
    assert np.array_equal(got, np.array([[1.0 if v > 0.5 else 0.0 for v in row] for row in x.reshape(2, -1)],
                                        np.float32).reshape(x.shape))
    assert got.dtype == np.float32 and 0.1 < got.mean() < 0.9


def test_clip_follows_caffe_source(blob):
    """clip_layer.cpp: top = std::max(min, std::min(bottom, max)) (OpenCV 4.x has no Clip layer)."""
    got = kl.CaffeClip(min=-0.3, max=0.5)(blob)
    assert np.array_equal(got, np.array([max(-0.3, min(v, 0.5)) for v in blob.ravel()], np.float32).reshape(blob.shape))
    assert np.any(got == np.float32(-0.3)) and np.any(got == np.float32(0.5)) and np.any((got > -0.3) & (got < 0.5))


@pytest.mark.parametrize("operation,coeff,n", [("SUM", [0.5, -2.0, 1.25], 3), ("SUM", None, 2), ("PROD", None, 3),
                                               ("MAX", None, 4)])
def test_eltwise_matches_opencv(tmp_path, rng, operation, coeff, n):
    xs = {f"in{i}": rng.normal(0.0, 1.0, (2, 3, 5, 7)).astype(np.float32) for i in range(n)}
    bottoms = " ".join(f'bottom: "{k}"' for k in xs)
    coeffs = " ".join(f"coeff: {c}" for c in coeff or [])
    body = f'layer {{ name: "e" type: "Eltwise" {bottoms} top: "e" eltwise_param {{ operation: {operation} {coeffs} }} }}'
    (ref,) = opencv_forward(tmp_path, body, xs, ["e"])
    for data_format in FORMATS:  # elementwise: any layout
        got = ours(kl.CaffeEltwise(operation=operation, coeff=coeff), list(xs.values()), data_format)
        assert_close(got, ref, what=f"Eltwise {operation} {data_format}")
    if coeff:
        assert_close(ref, sum(c * x for c, x in zip(coeff, xs.values())), what="weighted sum")


def test_eltwise_operation_names_and_errors():
    assert kl.CaffeEltwise(operation=0).operation == "prod"
    assert kl.CaffeEltwise(operation=2).operation == "max"
    assert kl.CaffeEltwise().operation == "sum"
    with pytest.raises(ConfigError, match="only"):
        kl.CaffeEltwise(operation="prod", coeff=[1.0, 2.0])
    with pytest.raises(ConfigError, match="operation"):
        kl.CaffeEltwise(operation="mean")
    a, b = Input((5, 7, 3)), Input((5, 7, 3))
    with pytest.raises(ShapeError, match="coefficients"):
        kl.CaffeEltwise(coeff=[1.0, 2.0, 3.0])([a, b])
    with pytest.raises(ShapeError, match="different shapes"):
        kl.CaffeEltwise()([a, Input((5, 7, 4))])
    with pytest.raises(ConfigError, match="base"):
        kl.CaffeLog(base=0.0)
    with pytest.raises(ConfigError, match="base"):
        kl.CaffeExp(base=-2.0)


# ---------------------------------------------------------------------------------------------- Slice / Crop vs OpenCV


SLICES = [  # (slice_param text, kconvert arguments, number of tops)
    ("axis: 1 slice_point: 1 slice_point: 4", {"axis": 1, "slice_points": [1, 4]}, 3),
    ("slice_dim: 1", {"axis": 1, "num_outputs": 3}, 3),  # legacy, equal split of C = 6
    ("axis: 2 slice_point: 2", {"axis": 2, "slice_points": [2]}, 2),
    ("axis: -1 slice_point: 3 slice_point: 4", {"axis": -1, "slice_points": [3, 4]}, 3),
    ("axis: -2", {"axis": -2, "num_outputs": 5}, 5),
]


@pytest.mark.parametrize("param,kwargs,n", SLICES)
@pytest.mark.parametrize("data_format", FORMATS)
def test_slice_matches_opencv(tmp_path, rng, param, kwargs, n, data_format):
    x = rng.normal(0.0, 1.0, (2, 6, 5, 7)).astype(np.float32)
    tops = [f"s{i}" for i in range(n)]
    top_text = " ".join(f'top: "{t}"' for t in tops)
    body = f'layer {{ name: "s" type: "Slice" bottom: "data" {top_text} slice_param {{ {param} }} }}'
    refs = opencv_forward(tmp_path, body, {"data": x}, tops)
    layer = kl.CaffeSlice(data_format=data_format, **kwargs)
    got = ours(layer, [x], data_format)
    assert len(got) == n
    for i, (g, r) in enumerate(zip(got, refs)):
        assert g.shape == r.shape and np.array_equal(g, r), f"output {i}"
    inp = Input(to_format(x, data_format).shape[1:])
    shapes = [v.shape[1:] for v in layer(inp)]  # shape inference agrees with the arrays
    assert shapes == [to_format(r, data_format).shape[1:] for r in refs]


def test_slice_errors():
    with pytest.raises(ConfigError, match="increasing"):
        kl.CaffeSlice(slice_points=[3, 2])
    with pytest.raises(ConfigError, match="needs"):
        kl.CaffeSlice(axis=1)
    with pytest.raises(ConfigError, match="make 3 outputs"):
        kl.CaffeSlice(slice_points=[1, 2], num_outputs=2)
    with pytest.raises(ShapeError, match="evenly"):
        kl.CaffeSlice(axis=2, num_outputs=2)(Input((5, 7, 6)))
    with pytest.raises(ShapeError, match="batch"):
        kl.CaffeSlice(axis=0, num_outputs=2)(Input((5, 7, 6)))
    one = kl.CaffeSlice(axis=1, num_outputs=1)
    x = np.ones((2, 5, 7, 3), np.float32)
    assert np.array_equal(one(x), x)


CROPS = [  # (crop_param text, kconvert arguments)
    ("axis: 2 offset: 1 offset: 2", {"axis": 2, "offset": [1, 2]}),
    ("axis: 1 offset: 1", {"axis": 1, "offset": 1}),  # channels too, one offset for all
    ("axis: 1 offset: 0 offset: 2 offset: 1", {"axis": 1, "offset": [0, 2, 1]}),
    ("axis: 3 offset: 3", {"axis": 3, "offset": [3]}),
    ("axis: -2", {"axis": -2}),
    ("", {}),  # defaults: axis 2, offset 0
]


@pytest.mark.parametrize("param,kwargs", CROPS)
@pytest.mark.parametrize("data_format", FORMATS)
def test_crop_matches_opencv(tmp_path, rng, param, kwargs, data_format):
    x = rng.normal(0.0, 1.0, (2, 5, 7, 9)).astype(np.float32)
    ref_blob = rng.normal(0.0, 1.0, (2, 3, 4, 5)).astype(np.float32)
    body = f'layer {{ name: "c" type: "Crop" bottom: "data" bottom: "ref" top: "c" crop_param {{ {param} }} }}'
    (ref,) = opencv_forward(tmp_path, body, {"data": x, "ref": ref_blob}, ["c"])
    layer = kl.CaffeCrop(data_format=data_format, **kwargs)
    got = ours(layer, [x, ref_blob], data_format)
    assert got.shape == ref.shape and np.array_equal(got, ref)
    out = layer([Input(to_format(x, data_format).shape[1:]), Input(to_format(ref_blob, data_format).shape[1:])])
    assert out.shape[1:] == to_format(ref, data_format).shape[1:]


def test_crop_errors():
    x, r = Input((7, 9, 5)), Input((4, 5, 3))
    with pytest.raises(ShapeError, match="offsets"):
        kl.CaffeCrop(axis=1, offset=[1, 2])([x, r])
    with pytest.raises(ShapeError, match="runs past"):
        kl.CaffeCrop(axis=2, offset=[4, 1])([x, r])
    with pytest.raises(ShapeError, match="batch"):
        kl.CaffeCrop(axis=0)([x, r])
    with pytest.raises(ConfigError, match="negative"):
        kl.CaffeCrop(offset=-1)


# ---------------------------------------------------------------------------------------------- ArgMax vs Caffe source


def caffe_argmax(bottom: np.ndarray, top_k: int, out_max_val: bool, axis: int | None) -> np.ndarray:
    """BVLC argmax_layer.cpp's Reshape and Forward_cpu, transcribed loop for loop on an NCHW blob."""
    shape = list(bottom.shape)
    data = bottom.ravel()
    if axis is not None:
        axis %= len(shape)
        top_shape = list(shape)
        top_shape[axis] = top_k
        dim = shape[axis]
        axis_dist = int(np.prod(shape[axis:])) // dim
    else:
        top_shape = [1] * max(len(shape), 3)
        top_shape[0], top_shape[2] = shape[0], top_k
        if out_max_val:
            top_shape[1] = 2
        dim, axis_dist = int(np.prod(shape[1:])), 1
    top = np.zeros(int(np.prod(top_shape)), np.float32)
    num = data.size // dim
    for i in range(num):
        pairs = [(float(data[(i // axis_dist * dim + j) * axis_dist + i % axis_dist]), j) for j in range(dim)]
        pairs.sort(reverse=True)  # std::partial_sort with std::greater<std::pair<Dtype, int>>
        for j in range(top_k):
            if out_max_val and axis is not None:
                top[(i // axis_dist * top_k + j) * axis_dist + i % axis_dist] = pairs[j][0]
            elif out_max_val:
                top[2 * i * top_k + j] = pairs[j][1]
                top[2 * i * top_k + top_k + j] = pairs[j][0]
            else:
                top[(i // axis_dist * top_k + j) * axis_dist + i % axis_dist] = pairs[j][1]
    return top.reshape(top_shape)


ARGMAX = [(1, False, None), (3, True, None), (2, False, None), (2, False, 1), (1, True, 1), (3, False, 2),
          (2, True, -1), (1, False, 3)]


@pytest.mark.parametrize("top_k,out_max_val,axis", ARGMAX)
@pytest.mark.parametrize("data_format", FORMATS)
def test_argmax_follows_caffe_source(rng, top_k, out_max_val, axis, data_format):
    x = np.round(rng.normal(0.0, 1.0, (2, 3, 5, 7)) * 2).astype(np.float32) / 2  # ties: larger index first
    ref = caffe_argmax(x, top_k, out_max_val, axis)
    layer = kl.CaffeArgMax(top_k=top_k, out_max_val=out_max_val, axis=axis, data_format=data_format)
    got = ours(layer, [x], data_format)
    assert got.shape == ref.shape and np.array_equal(got, ref)
    assert layer(Input(to_format(x, data_format).shape[1:])).shape[1:] == to_format(ref, data_format).shape[1:]


def test_argmax_layouts_and_ties():
    """Without an axis the output is Caffe's (N, 1|2, top_k, 1) blob; indices count in C, H, W order."""
    x = np.zeros((2, 3, 5, 7), np.float32)
    x[0, 2, 4, 6] = x[0, 1, 0, 0] = 5.0  # a tie: Caffe gives the larger flat index first
    x[1, 0, 1, 2] = 4.0
    y = kl.CaffeArgMax(top_k=2, out_max_val=True, data_format="channels_first")(x)
    assert y.shape == (2, 2, 2, 1)
    assert y[0, :, :, 0].tolist() == [[2 * 35 + 4 * 7 + 6, 35], [5.0, 5.0]]
    assert y[1, :, :, 0].tolist() == [[1 * 7 + 2, 104], [4.0, 0.0]]  # then the last of the zeros
    z = kl.CaffeArgMax(top_k=2, out_max_val=True)(x.transpose(0, 2, 3, 1))
    assert z.shape == (2, 2, 1, 2) and np.array_equal(z, y.transpose(0, 2, 3, 1))
    v = np.array([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]], np.float32)  # (N, D): a 3-D (N, 1, top_k) blob
    flat = kl.CaffeArgMax(top_k=3, data_format="channels_first")(v)
    assert flat.shape == (2, 1, 3) and flat[:, 0].tolist() == [[2, 1, 3], [3, 2, 1]]
    assert np.array_equal(kl.CaffeArgMax(top_k=3)(v), flat.transpose(0, 2, 1))  # channels_last (N, top_k, 1)
    with pytest.raises(ConfigError):
        kl.CaffeArgMax(top_k=0)
    with pytest.raises(ShapeError, match="top_k"):
        kl.CaffeArgMax(top_k=4, axis=1)(Input((5, 7, 3)))


# ---------------------------------------------------------------------------------------------- ONNX and real Keras


def build_model():
    """One model holding every layer and the main options, channels_last and channels_first."""
    x = Input((5, 7, 3), name="x")  # a channels_last view of a (2, 3, 5, 7) blob
    xf = Input((3, 5, 7), name="xf")  # the same blob channels_first
    t = Input((5, 7, 3), name="t")  # with ties
    r = Input((3, 4, 2), name="r")
    rf = Input((2, 3, 4), name="rf")
    outs = [kl.Power(power=2.0, scale=0.5, shift=1.0)(x), kl.Power(power=0.5, scale=0.7, shift=3.0)(x),
            kl.Power(power=0.0, scale=2.0, shift=1.0)(x), kl.Power(power=1.5, scale=0.0, shift=2.0)(x),
            kl.CaffeExp()(x), kl.CaffeExp(base=2.0, scale=0.5, shift=1.0)(x),
            kl.CaffeLog(shift=4.0)(x), kl.CaffeLog(base=10.0, scale=-0.8, shift=3.5)(x),
            kl.CaffeThreshold(threshold=0.5)(t), kl.CaffeClip(min=-0.3, max=0.5)(x), kl.AbsVal()(x),
            kl.CaffeEltwise(coeff=[0.5, -2.0, 1.25])([x, t, x]), kl.CaffeEltwise("prod")([x, t, x]),
            kl.CaffeEltwise("max")([x, t]),
            *kl.CaffeSlice(axis=1, slice_points=[1])(x), *kl.CaffeSlice(axis=-1, num_outputs=7)(x),
            *kl.CaffeSlice(axis=2, slice_points=[1, 3], data_format="channels_first")(xf),
            kl.CaffeCrop(axis=1, offset=[1, 1, 2])([x, r]), kl.CaffeCrop(offset=[2, 3])([x, r]),
            kl.CaffeCrop(axis=1, offset=1, data_format="channels_first")([xf, rf]),
            kl.CaffeArgMax(top_k=3, out_max_val=True, name="argmax_flat")(t), kl.CaffeArgMax()(x),
            kl.CaffeArgMax(top_k=2, axis=1)(t), kl.CaffeArgMax(top_k=2, out_max_val=True, axis=3)(t),
            kl.CaffeArgMax(top_k=2, out_max_val=True, data_format="channels_first")(xf),
            kl.CaffeArgMax(top_k=2, axis=-1, data_format="channels_first")(xf)]
    return Model([x, xf, t, r, rf], outs)


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.default_rng(7)
    blob = rng.normal(0.0, 1.0, (2, 3, 5, 7)).astype(np.float32)
    ties = np.round(rng.normal(0.0, 1.0, (2, 5, 7, 3)) * 2).astype(np.float32) / 2
    ref = rng.normal(0.0, 1.0, (2, 2, 3, 4)).astype(np.float32)
    feeds = [blob.transpose(0, 2, 3, 1), blob, ties, ref.transpose(0, 2, 3, 1), ref]
    model = build_model()
    return model, feeds, numpy_predict(model._graph, feeds)  # the layers' numpy calls (predict may use ONNX)


def test_model_outputs_agree_with_layers(model_and_data):
    """Shape inference matches the arrays; channels_last and channels_first copies compute the same blob."""
    model, feeds, outs = model_and_data
    assert len(outs) == 35
    assert [o.shape[1:] for o in outs] == [v.shape[1:] for v in model.outputs]
    assert_close(outs[0], (1.0 + 0.5 * feeds[0]) ** 2, what="Power")
    assert np.all(outs[2] == 1.0) and np.allclose(outs[3], 2.0 ** 1.5)
    assert np.array_equal(np.concatenate(outs[14:16], axis=-1), feeds[0])
    assert np.array_equal(np.concatenate(outs[16:23], axis=2), feeds[0])
    assert np.array_equal(np.concatenate(outs[23:26], axis=2), feeds[1])
    assert np.array_equal(to_caffe(outs[30], "channels_last"), caffe_argmax(feeds[1], 1, False, None))
    same = to_caffe(kl.CaffeArgMax(top_k=2, out_max_val=True)(feeds[0]), "channels_last")
    assert np.array_equal(outs[33], same) and np.array_equal(outs[33], caffe_argmax(feeds[1], 2, True, None))
    assert np.array_equal(outs[34], caffe_argmax(feeds[1], 2, False, -1))


def test_onnx_export_matches(model_and_data):
    import onnxruntime as ort

    model, feeds, outs = model_and_data
    caffe = [la for la in model.layers if type(la).__module__.startswith("kconvert.layers.caffe_")]
    assert len({type(la) for la in caffe}) == 10
    for layer in caffe:
        assert lowering_for(layer) is not None, type(layer).__name__  # native lowerings, not the tracer
    proto = lower_model(model)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Pow", "Exp", "Log", "Greater", "Min", "Max", "Abs", "Slice", "TopK", "Expand"} <= ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), feeds)})
    assert len(got) == len(outs)
    for i, (g, r) in enumerate(zip(got, outs)):
        assert_close(g, r, what=f"onnx output {i}")
    nchw = lower_model(model, inputs_as_nchw=True)  # Caffe-ordered inputs: ArgMax flattens its input as it is
    (flatten,) = [n for n in nchw.graph.node if n.op_type == "Flatten" and n.name.startswith("argmax_flat/")]
    assert list(flatten.input) == ["t"]
    sess = ort.InferenceSession(nchw.SerializeToString(), providers=["CPUExecutionProvider"])
    nchw_feeds = [f.transpose(0, 3, 1, 2) for f in feeds]  # every 4-D input is declared channels-first
    got = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), nchw_feeds)})
    assert_close(got[29], outs[29], what="argmax from NCHW inputs")


def test_real_tf_keras_loads_h5(model_and_data, tfk, tmp_path):
    model, feeds, outs = model_and_data
    path = str(tmp_path / "caffe.h5")
    model.save(path)
    real = tfk.models.load_model(path, custom_objects=kconvert.keras_objects("tf_keras"), compile=False)
    got = real.predict(feeds, verbose=0)
    for i, (g, r) in enumerate(zip(got, outs)):
        assert_close(g, r, what=f"tf_keras output {i}")
    back = kconvert.load_model(path)  # no custom_objects needed in kconvert
    for g, r in zip(numpy_predict(back._graph, feeds), outs):
        assert np.array_equal(g, r)
    assert [la.get_config() for la in back.layers] == [la.get_config() for la in model.layers]


def test_real_keras3_loads_keras(model_and_data, tmp_path):
    import keras

    model, feeds, outs = model_and_data
    path = str(tmp_path / "caffe.keras")
    model.save(path)
    real = keras.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"), compile=False)
    got = real.predict(feeds, verbose=0)
    for i, (g, r) in enumerate(zip(got, outs)):
        assert_close(g, r, what=f"keras 3 output {i}")
    power = next(la for la in model.layers if type(la).__name__ == "Power")
    assert type(real.get_layer(power.name)).__name__ == "Power"
    back = kconvert.load_model(path)
    for g, r in zip(numpy_predict(back._graph, feeds), outs):
        assert np.array_equal(g, r)


def test_unknown_spatial_sizes(tfk, rng):
    """Fully convolutional use: H and W unknown until run time, in ONNX and in real tf_keras."""
    x, r = Input((None, None, 3), name="x"), Input((None, None, 2), name="r")
    outs = [kl.CaffeArgMax(top_k=2, axis=2)(x), kl.CaffeArgMax(top_k=3, out_max_val=True)(x),
            kl.CaffeCrop(axis=1, offset=[1, 2, 1])([x, r]), *kl.CaffeSlice(axis=1, slice_points=[2])(x)]
    model = Model([x, r], outs)
    assert [v.shape for v in model.outputs] == [(None, 2, None, 3), (None, 3, 1, 2), (None, None, None, 2),
                                                (None, None, None, 2), (None, None, None, 1)]
    feeds = [np.round(rng.normal(0.0, 1.0, (2, 5, 7, 3)) * 2).astype(np.float32) / 2,
             rng.normal(0.0, 1.0, (2, 3, 4, 2)).astype(np.float32)]
    ref = numpy_predict(model._graph, feeds)
    blob = feeds[0].transpose(0, 3, 1, 2)
    assert np.array_equal(to_caffe(ref[0], "channels_last"), caffe_argmax(blob, 2, False, 2))
    assert np.array_equal(to_caffe(ref[1], "channels_last"), caffe_argmax(blob, 3, True, None))
    assert np.array_equal(ref[2], feeds[0][:, 2:5, 1:5, 1:3])
    import onnxruntime as ort

    proto = lower_model(model)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for i, (g, r) in enumerate(zip(sess.run(None, {"x": feeds[0], "r": feeds[1]}), ref)):
        assert_close(g, r, what=f"onnx output {i}")
    import keras

    for lib, target in ((tfk, "tf_keras"), (keras, "keras3")):
        real = lib.Model(*_real_keras_twin(lib, target, model))
        for i, (g, r) in enumerate(zip(real.predict(feeds, verbose=0), ref)):
            assert_close(g, r, what=f"{target} output {i}")


def _real_keras_twin(lib, target: str, model):
    """The same graph built in real Keras from the kconvert layers' configs (kconvert.keras_objects classes)."""
    objects = kconvert.keras_objects(target)
    prefix = "kconvert>" if target == "keras3" else ""
    ins = [lib.Input(v.shape[1:], name=v.name) for v in model.inputs]
    x, r = ins
    a, b, c, d = [objects[prefix + type(la).__name__].from_config(la.get_config()) for la in model.layers[2:]]
    return ins, [a(x), b(x), c([x, r]), *d(x)]
