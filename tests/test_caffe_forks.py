"""Caffe fork layers (BN, Upsample, Interp, Axpy, ShuffleChannel, ReLU6, ConvolutionDepthwise) and Pooling's mask
top, converted by kconvert and run by the numpy engine (both data formats), onnxruntime, real tf_keras (.h5) and
real Keras 3 (.keras), and kconvert reloading its own file.

References: where OpenCV 4.14 runs a layer as its fork defines it, OpenCV's output of that layer
(fixtures/caffe/forks_opencv, written by fixtures/make_caffe_forks.py). Where it does not (BN, Upsample and
Axpy it cannot run; Interp's shrink_factor and pad_beg/pad_end it ignores), the fork's published source
transcribed here, applied to the layer's bottoms — never kconvert's own output of the layer under test.
"""

from __future__ import annotations

import functools
import os

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.convert import caffe_to_keras
from kconvert.converters.onnx_lowering import lower_model
from kconvert.errors import ConfigError, ExportError
from kconvert.formats.caffe.caffemodel import read_caffemodel
from kconvert.layers.caffe_forks import CaffeInterp, CaffeMaxUnpooling2D
from kconvert.layers.caffe_pooling import CaffeMaxPoolingMask
from kconvert.models import Input, Model
from kconvert.runtime.numpy_engine import predict as numpy_predict

CAFFE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "caffe")
BATCH = 2


def nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1))) if x.ndim == 4 else x


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def _files(net):
    return os.path.join(CAFFE, f"{net}.prototxt"), os.path.join(CAFFE, f"{net}.caffemodel")


@functools.cache
def _io(net):
    return dict(np.load(os.path.join(CAFFE, f"{net}_io.npz")))


def _all_runtimes(make_model, feeds_nchw, tmp_path, keras_first=False) -> dict[str, list[np.ndarray]]:
    """Outputs (NCHW) of the model `make_model(data_format)` on NCHW feeds, in every runtime: the numpy engine in
    both data formats, onnxruntime (opset 18) on both, tf_keras loading the channels_last .h5, Keras 3 loading the
    channels_last .keras (and the channels_first one with `keras_first`), kconvert reloading both files."""
    last, first = make_model("channels_last"), make_model("channels_first")
    feeds_last = [nhwc(x) for x in feeds_nchw]
    runs = {"numpy channels_last": [nchw(y) for y in numpy_predict(last._graph, feeds_last)],
            "numpy channels_first": list(numpy_predict(first._graph, feeds_nchw))}
    for name, model, feeds, back in (("channels_last", last, feeds_last, nchw), ("channels_first", first,
                                                                                 feeds_nchw, lambda y: y)):
        proto = lower_model(model, opset=18)
        onnx.checker.check_model(proto, full_check=True)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], feeds)))
        runs[f"onnxruntime {name}"] = [back(y) for y in got]
    import tf_keras

    h5, k3 = str(tmp_path / "model.h5"), str(tmp_path / "model.keras")
    last.save(h5)
    last.save(k3)
    loaded = {"tf_keras .h5": tf_keras.models.load_model(h5, custom_objects=kconvert.keras_objects("tf_keras"),
                                                         compile=False),
              "Keras 3 .keras": keras.saving.load_model(k3, custom_objects=kconvert.keras_objects("keras3"),
                                                        compile=False)}
    for what, model in loaded.items():
        out = model(feeds_last if len(feeds_last) > 1 else feeds_last[0])
        runs[what] = [nchw(np.asarray(o)) for o in (out if isinstance(out, (list, tuple)) else [out])]
    for path in (h5, k3):
        again = kconvert.load_model(path, compile=False)
        runs[f"kconvert reloading {os.path.splitext(path)[1]}"] = [nchw(y) for y in numpy_predict(again._graph, feeds_last)]
    if keras_first:
        k3f = str(tmp_path / "first.keras")
        first.save(k3f)
        model = keras.saving.load_model(k3f, custom_objects=kconvert.keras_objects("keras3"), compile=False)
        out = model(feeds_nchw if len(feeds_nchw) > 1 else feeds_nchw[0])
        runs["Keras 3 .keras channels_first"] = [np.asarray(o) for o in (out if isinstance(out, (list, tuple))
                                                                         else [out])]
    return runs


def _check(runs: dict, index: int, ref: np.ndarray, what: str) -> None:
    for runtime, outs in runs.items():
        assert_close(outs[index], ref, what=f"{what} ({runtime})")


def _net_runs(net: str, tops: list[str], tmp_path) -> dict:
    """Every runtime's outputs of the converted fixture net's layer tops `tops` ("layer" or "layer#1")."""
    def make(data_format):
        model = caffe_to_keras(*_files(net), data_format=data_format)
        values = []
        for top in tops:
            layer, _, i = top.partition("#")
            values.append(model.caffe_layers[layer][int(i or 0)])
        return Model(model.inputs, values)

    # not Keras 3 channels_first: TensorFlow's CPU Conv2D runs NCHW only through oneDNN, which gives wrong results
    # for some shapes (forks_segnet's conv2: 0.39 off, with the same weights channels_last computes right)
    return _all_runtimes(make, [_io(net)["input_0"]], tmp_path)


# ---------------------------------------------------------------------------------------------- OpenCV-referenced

OPENCV_TOPS = ["conv1", "relu6", "dw", "dw_valid", "shuffle", "pool", "pool#1", "pool2", "pool2#1", "interp_zoom",
               "interp_hw"]


@pytest.fixture(scope="module")
def opencv_runs(tmp_path_factory):
    return _net_runs("forks_opencv", OPENCV_TOPS, tmp_path_factory.mktemp("forks_opencv"))


def _opencv_check(runs, top):
    ref = _io("forks_opencv")[f"layer:{top}"]
    _check(runs, OPENCV_TOPS.index(top), ref, f"forks_opencv {top}")
    return ref


def test_relu6_matches_opencv(opencv_runs):
    ref = _opencv_check(opencv_runs, "relu6")
    assert (ref == 6).mean() > 0.03 and (ref == 0).mean() > 0.1  # both clips are exercised


def test_relu6_is_native():
    model = caffe_to_keras(*_files("forks_opencv"))
    layer = model.get_layer("relu6")
    assert type(layer).__name__ == "ReLU" and layer.max_value == 6.0


@pytest.mark.parametrize("top", ["dw", "dw_valid"])  # 3x3 stride 2 pad 1 with bias; 3x2 valid without
def test_convolution_depthwise_matches_opencv(opencv_runs, top):
    _opencv_check(opencv_runs, top)


def test_convolution_depthwise_reads_neither_group_nor_num_output(tmp_path):
    """The fork (yonghenglh6/DepthwiseConvolution conv_dw_layer.cpp) makes one filter per bottom channel whatever
    num_output and group say; OpenCV (which reads it as Convolution) needs group = channels, so the prototxt
    without them must compute what OpenCV computes with them."""
    prototxt, caffemodel = _files("forks_opencv")
    text = open(prototxt).read().replace("num_output: 8 group: 8 kernel_size: 3", "kernel_size: 3")
    assert "num_output: 8 group: 8 kernel_size: 3" not in text
    bare = tmp_path / "bare.prototxt"
    bare.write_text(text)
    model = caffe_to_keras(bare, caffemodel, data_format="channels_first")
    layer = model.get_layer("dw")
    assert type(layer).__name__ == "DepthwiseConv2D"
    out = numpy_predict(Model(model.inputs, model.caffe_layers["dw"])._graph, [_io("forks_opencv")["input_0"]])[0]
    assert_close(out, _io("forks_opencv")["layer:dw"])


def test_shuffle_channel_matches_opencv(opencv_runs):
    ref = _opencv_check(opencv_runs, "shuffle")
    dw = _io("forks_opencv")["layer:dw"]
    assert not np.allclose(ref, dw)  # group 4 of 8 channels does move channels: top j*4+i = bottom i*2+j
    assert_close(ref[:, 1], dw[:, 2])


@pytest.mark.parametrize("top", ["pool", "pool2"])  # 3x3/2 pad 1 on ReLU6's ties; 2x2/2 with a ceil overhang
def test_pooling_mask_top_matches_opencv(opencv_runs, top):
    _opencv_check(opencv_runs, top)
    mask = _opencv_check(opencv_runs, f"{top}#1")
    assert mask.max() > 50 and np.array_equal(mask, np.round(mask))


def test_pooling_mask_layer_names():
    model = caffe_to_keras(*_files("forks_opencv"))
    assert type(model.get_layer("pool_mask")).__name__ == "CaffeMaxPoolingMask"
    assert [v.node.layer.name for v in model.caffe_layers["pool"]] == ["pool", "pool_mask"]


def test_global_pooling_mask_top_matches_opencv(tmp_path, rng):
    """A global MAX Pooling with two tops: the mask is the flat index of each channel's maximum."""
    import cv2

    x = rng.normal(0, 1, (BATCH, 3, 5, 7)).astype(np.float32)
    path = _net(tmp_path, 'layer { name: "g" type: "Pooling" bottom: "data" top: "g" top: "g_mask" '
                          "pooling_param { pool: MAX global_pooling: true } }\n", x.shape)
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setInput(x, "data")
    values, mask = net.forwardAndRetrieve(["g"])[0]
    assert_close(mask.reshape(BATCH, 3), x.reshape(BATCH, 3, -1).argmax(axis=2))  # OpenCV is Caffe's argmax here
    runs = _all_runtimes(lambda df: caffe_to_keras(path, data_format=df), [x], tmp_path, keras_first=True)
    _check(runs, 0, values, "global max pooling")
    _check(runs, 1, mask, "global max pooling mask")


@pytest.mark.parametrize("top", ["interp_zoom", "interp_hw"])  # zoom_factor 3; height 4 < 9, width 11 > 7
def test_interp_matches_opencv(opencv_runs, top):
    _opencv_check(opencv_runs, top)


# ---------------------------------------------------------------------------------------------- formula-referenced

SEGNET_TOPS = ["conv1", "conv1_bn", "relu1", "pool1", "pool1#1", "conv2", "unpool", "up_nearest", "se_sig", "axpy",
               "interp_pad", "interp_shrink"]


@pytest.fixture(scope="module")
def segnet_runs(tmp_path_factory):
    """The forks_segnet net's tops in every runtime, and the bottoms each fork layer reads (the numpy engine's
    channels_first values of layers OpenCV-tested above and in test_caffe_convert.py)."""
    runs = _net_runs("forks_segnet", SEGNET_TOPS, tmp_path_factory.mktemp("forks_segnet"))
    bottoms = dict(zip(SEGNET_TOPS, runs["numpy channels_first"]))
    return runs, bottoms


def _segnet_check(segnet_runs, top, ref):
    _check(segnet_runs[0], SEGNET_TOPS.index(top), ref, f"forks_segnet {top}")


def test_bn_matches_segnet_formula(segnet_runs):
    """yjxiong/caffe bn_layer.cpp at TEST (or frozen): y = slope * (x - mean) / sqrt(var + eps) + bias, blobs
    (1, C, 1, 1) slope, bias, mean, var; eps from bn_param (1e-4 here)."""
    blobs = {la.name: la.blobs for la in read_caffemodel(_files("forks_segnet")[1]).layers}["conv1_bn"]
    slope, bias, mean, var = (np.asarray(b, np.float64).reshape(1, -1, 1, 1) for b in blobs)
    x = segnet_runs[1]["conv1"]
    ref = slope * (x - mean) / np.sqrt(var + 1e-4) + bias
    assert np.abs(ref - x).max() > 0.3
    _segnet_check(segnet_runs, "conv1_bn", ref)


def test_bn_is_native_batch_normalization():
    model = caffe_to_keras(*_files("forks_segnet"))
    layer = model.get_layer("conv1_bn")
    assert type(layer).__name__ == "BatchNormalization" and layer.epsilon == pytest.approx(1e-4)
    assert layer.center and layer.scale


def _unpool_reference(x, mask, out_h, out_w):
    """caffe-segnet upsample_layer.cpp Forward_cpu: top = 0, then per (n, c), for i over the bottom in raster
    order, top[mask[i]] = bottom[i] (a later i overwrites)."""
    n, c, h, w = x.shape
    top = np.zeros((n, c, out_h * out_w), np.float32)
    for a in range(n):
        for b in range(c):
            for i in range(h * w):
                top[a, b, int(mask[a, b].flat[i])] = x[a, b].flat[i]
    return top.reshape(n, c, out_h, out_w)


def test_upsample_mask_matches_segnet_formula(segnet_runs):
    """Max-unpooling of conv2 with pool1's mask, pad_out_h: a 9 x 12 top from a 5 x 6 bottom."""
    b = segnet_runs[1]
    ref = _unpool_reference(b["conv2"], b["pool1#1"], 9, 12)
    assert (ref != 0).mean() > 0.2
    _segnet_check(segnet_runs, "unpool", ref)


def test_upsample_nearest_matches_yolo_formula(segnet_runs):
    """The YOLOv3 forks' upsample_layer.cpp: top[n, c, h, w] = bottom[n, c, h / scale, w / scale]."""
    x = segnet_runs[1]["conv2"]
    h, w = np.arange(10)[:, None] // 2, np.arange(12)[None, :] // 2
    _segnet_check(segnet_runs, "up_nearest", x[:, :, h, w])


def test_axpy_matches_senet_formula(segnet_runs):
    """SENet axpy_layer.cpp: F = a * X + Y, a (N, C, 1, 1) from the SE branch; Y is blob conv1 after its in-place
    BN and ReLU."""
    b = segnet_runs[1]
    a = b["se_sig"]
    assert a.shape[2:] == (1, 1) and a.std() > 0.05
    _segnet_check(segnet_runs, "axpy", a * b["unpool"] + b["relu1"])


def _interp_size(size, zoom=None, shrink=None, target=None, pad_beg=0, pad_end=0):
    """PSPNet interp_layer.cpp Reshape, in its order of precedence."""
    eff = size + pad_beg + pad_end
    if shrink is not None and zoom is None:
        return (eff - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return eff + (eff - 1) * (zoom - 1)
    if target is not None:
        return target
    out = (eff - 1) // shrink + 1
    return out + (out - 1) * (zoom - 1)


def _interp_reference(x, out_h, out_w, pad_beg=0, pad_end=0):
    """PSPNet interp.cpp caffe_cpu_interp2 (float32 ratios and lambdas) on the input cropped to
    [-pad_beg, size + pad_end), as Forward_cpu calls it."""
    x = x[:, :, -pad_beg:x.shape[2] + pad_end, -pad_beg:x.shape[3] + pad_end]
    h1, w1 = x.shape[2:]
    if (h1, w1) == (out_h, out_w):
        return x.copy()
    f = np.float32
    rh = f(h1 - 1) / f(out_h - 1) if out_h > 1 else f(0)
    rw = f(w1 - 1) / f(out_w - 1) if out_w > 1 else f(0)
    y = np.zeros((*x.shape[:2], out_h, out_w), np.float32)
    for i in range(out_h):
        h1r = f(rh * f(i))
        hi = int(h1r)
        hp = 1 if hi < h1 - 1 else 0
        hl1 = f(h1r - f(hi))
        hl0 = f(1) - hl1
        for j in range(out_w):
            w1r = f(rw * f(j))
            wi = int(w1r)
            wp = 1 if wi < w1 - 1 else 0
            wl1 = f(w1r - f(wi))
            wl0 = f(1) - wl1
            y[:, :, i, j] = (hl0 * (wl0 * x[:, :, hi, wi] + wl1 * x[:, :, hi, wi + wp])
                             + hl1 * (wl0 * x[:, :, hi + hp, wi] + wl1 * x[:, :, hi + hp, wi + wp]))
    return y


def test_interp_pad_matches_pspnet_formula(segnet_runs):
    """zoom_factor 2 with pad_beg -1, pad_end -2 (OpenCV ignores both pads)."""
    x = segnet_runs[1]["axpy"]
    out = [_interp_size(n, zoom=2, pad_beg=-1, pad_end=-2) for n in x.shape[2:]]
    assert out == [11, 17]
    _segnet_check(segnet_runs, "interp_pad", _interp_reference(x, *out, -1, -2))


def test_interp_shrink_matches_pspnet_formula(segnet_runs):
    """shrink_factor 2 alone (OpenCV cannot size it)."""
    x = segnet_runs[1]["axpy"]
    out = [_interp_size(n, shrink=2) for n in x.shape[2:]]
    assert out == [5, 6]
    _segnet_check(segnet_runs, "interp_shrink", _interp_reference(x, *out))


INTERP_CASES = {  # (N, C, H, W), layer arguments
    "zoom_and_shrink": ((2, 3, 11, 8), {"zoom_factor": 3, "shrink_factor": 2}),
    "height_width_to_one_row": ((2, 3, 7, 5), {"height": 1, "width": 9}),
    "one_column_input": ((2, 3, 6, 1), {"height": 4, "width": 3}),
    "pad_end_only_same_size": ((2, 4, 5, 9), {"height": 4, "width": 8, "pad_end": -1}),
    "shrink_beats_height": ((2, 3, 9, 6), {"shrink_factor": 3, "height": 20, "width": 20, "pad_beg": -1}),
}


def test_interp_hand_worked_cases(tmp_path, rng):
    """Every output-size rule and the copy / single-row corners of caffe_cpu_interp2, in one model per layout."""
    feeds = [rng.normal(0, 1, shape).astype(np.float32) for shape, _ in INTERP_CASES.values()]

    def make(data_format):
        inputs = [Input(s[1:] if data_format == "channels_first" else (*s[2:], s[1])) for s, _ in
                  INTERP_CASES.values()]
        outs = [CaffeInterp(**args, data_format=data_format)(x) for x, (_, args) in zip(inputs,
                                                                                      INTERP_CASES.values())]
        return Model(inputs, outs)

    runs = _all_runtimes(make, feeds, tmp_path, keras_first=True)
    for i, (case, (shape, args)) in enumerate(INTERP_CASES.items()):
        pads = args.get("pad_beg", 0), args.get("pad_end", 0)
        out = [_interp_size(n, args.get("zoom_factor"), args.get("shrink_factor"), t, *pads)
               for n, t in zip(shape[2:], (args.get("height"), args.get("width")))]
        _check(runs, i, _interp_reference(feeds[i], *out, *pads), f"Interp {case}")


def test_unpooling_hand_worked_last_write_wins(tmp_path):
    """Overlapping pooling windows write one top position twice: Caffe's loop keeps the later bottom element.
    Also: CaffeMaxPoolingMask gives -1 for a window with no real element (kernel 1, stride 2, ceil rounding on an
    even size; pooling_layer.cpp leaves its mask at -1)."""
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]], np.float32)  # (1, 2, 2, 2)
    mask = np.array([[[[4.0, 4.0], [0.0, 5.0]], [[1.0, 2.0], [1.0, 3.0]]]], np.float32)
    expected = np.array([[[[3.0, 0.0, 0.0], [0.0, 2.0, 4.0]], [[0.0, 7.0, 6.0], [8.0, 0.0, 0.0]]]], np.float32)
    assert_close(_unpool_reference(x, mask, 2, 3), expected)
    pool_in = np.arange(2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4) % 7
    x2 = np.concatenate([x, x + 1], axis=0)
    mask2 = np.concatenate([mask, mask[:, ::-1]], axis=0)

    def make(data_format):
        def inp(shape):
            return Input(shape[1:] if data_format == "channels_first" else (*shape[2:], shape[1]))
        a, m, p = inp(x2.shape), inp(mask2.shape), inp(pool_in.shape)
        unpool = CaffeMaxUnpooling2D(scale=(1, 2), pad_out=(False, True), data_format=data_format)([a, m])
        sized = CaffeMaxUnpooling2D(size=(2, 3), data_format=data_format)([a, m])
        empty = CaffeMaxPoolingMask((1, 1), (2, 2), data_format=data_format)(p)
        return Model([a, m, p], [unpool, sized, empty])

    runs = _all_runtimes(make, [x2, mask2, pool_in], tmp_path, keras_first=True)
    ref = np.concatenate([expected, _unpool_reference(x2[1:], mask2[1:], 2, 3)], axis=0)
    _check(runs, 0, ref, "unpooling, scale (1, 2) with pad_out_w")
    _check(runs, 1, ref, "unpooling, size (2, 3)")
    empty = np.full((2, 2, 3, 3), -1.0, np.float32)
    empty[:, :, :2, :2] = np.array([[0.0, 2.0], [8.0, 10.0]])
    _check(runs, 2, empty, "pooling mask of empty windows")


def test_axpy_with_two_dimensional_scale(tmp_path, rng):
    """SENet allows a of shape (N, C): top = a * X + Y with a broadcast over H, W (axpy_layer.cpp)."""
    text = ('name: "axpy2d"\n'
            'layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 2 dim: 5 } } }\n'
            'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 3 } } }\n'
            'layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 2 dim: 5 dim: 7 dim: 3 } } }\n'
            'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }\n')
    path = tmp_path / "axpy.prototxt"
    path.write_text(text)
    a, x, y = (rng.normal(0, 1, s).astype(np.float32) for s in ((2, 5), (2, 5, 7, 3), (2, 5, 7, 3)))
    runs = _all_runtimes(lambda df: caffe_to_keras(path, data_format=df), [a, x, y], tmp_path, keras_first=True)
    _check(runs, 0, a[:, :, None, None] * x + y, "Axpy with a (N, C)")


def test_upsample_size_forms(tmp_path, rng):
    """upsample_h/upsample_w fix the top size; scale_h/scale_w give H * scale_h by W * scale_w (caffe-segnet
    UpsampleLayer::LayerSetUp/Reshape), here after a 2 x 3 max pooling whose mask they consume."""
    text = ('name: "up"\n'
            'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 9 } } }\n'
            'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
            "pooling_param { pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3 } }\n"
            'layer { name: "fixed" type: "Upsample" bottom: "pool" bottom: "mask" top: "fixed" '
            "upsample_param { upsample_h: 6 upsample_w: 9 } }\n"
            'layer { name: "scaled" type: "Upsample" bottom: "pool" bottom: "mask" top: "scaled" '
            "upsample_param { scale_h: 2 scale_w: 3 } }\n")
    path = tmp_path / "up.prototxt"
    path.write_text(text)
    x = rng.normal(0, 1, (2, 3, 6, 9)).astype(np.float32)
    runs = _all_runtimes(lambda df: caffe_to_keras(path, data_format=df), [x], tmp_path, keras_first=True)
    windows = x.reshape(2, 3, 3, 2, 3, 3).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 3, 3, 6)
    keep = windows == windows.max(axis=-1, keepdims=True)
    ref = np.where(keep, windows, 0).reshape(2, 3, 3, 3, 2, 3).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)
    for i, what in enumerate(("upsample_h/upsample_w", "scale_h/scale_w")):
        _check(runs, i, ref, what)


# ---------------------------------------------------------------------------------------------- errors


def _net(tmp_path, layer_text, shape=(2, 4, 6, 5)):
    dims = " ".join(f"dim: {d}" for d in shape)
    path = tmp_path / "bad.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { ' + dims + " } } }\n"
                    + layer_text)
    return path


@pytest.mark.parametrize("layer_text, message", [
    ('layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { zoom_factor: 2 pad_beg: 1 } }',
     "i.*pad_beg"),
    ('layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { pad_end: -1 } }', "i.*zoom_factor"),
    ('layer { name: "u" type: "Upsample" bottom: "data" top: "u" upsample_param { upsample_h: 4 upsample_w: 4 } }',
     "u.*mask"),
    ('layer { name: "s" type: "ShuffleChannel" bottom: "data" top: "s" shuffle_channel_param { group: 3 } }',
     "s.*group 3"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" pooling_param { pool: AVE kernel_size: 2 } }',
     "p.*MAX"),
    ('layer { name: "ax" type: "Axpy" bottom: "data" bottom: "data" bottom: "data" top: "ax" }', "ax.*scale bottom"),
])
def test_fork_layer_errors_name_the_layer(tmp_path, layer_text, message):
    with pytest.raises(ConfigError, match=message):
        caffe_to_keras(_net(tmp_path, layer_text + "\n"))


def test_unpooling_below_opset_18_is_a_clear_error():
    x, m = Input((4, 5, 3)), Input((4, 5, 3))
    model = Model([x, m], CaffeMaxUnpooling2D()([x, m]))
    with pytest.raises(ExportError, match="opset 18"):
        lower_model(model, opset=17)
