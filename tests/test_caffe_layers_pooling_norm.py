"""CaffePooling2D, LRN and CaffeScale against OpenCV 4.x's Caffe implementation (cv2.dnn.readNetFromCaffe), in
both data formats; exported to ONNX (onnxruntime); saved as .h5 / .keras and loaded in real tf_keras / Keras 3
with kconvert.keras_objects, and in kconvert with no custom objects. Also: a standalone Caffe BatchNorm equals
Keras BatchNormalization(center=False, scale=False) with mean = b0 / f, var = b1 / f.

Where OpenCV departs from Caffe (LRN's `k`, which OpenCV ignores; negative Scale axes, which it refuses; the
pooling clip rule with padding on one axis only; windows with no real element) the reference is the formula of
BVLC Caffe's source, computed in numpy here and cited next to it.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.converters.onnx_lowering import lower_model, lowering_for
from kconvert.errors import ConfigError
from kconvert.formats.caffe.caffemodel import write_caffemodel
from kconvert.layers.caffe_normalization import LRN, CaffeScale
from kconvert.layers.caffe_pooling import FLT_LOWEST, CaffePooling2D, caffe_pooled_length
from kconvert.layers.normalization import BatchNormalization
from kconvert.models import Input, Model
from kconvert.runtime.numpy_engine import predict as numpy_predict

BATCH = 2


# ---------------------------------------------------------------------------------------------- helpers


def opencv(tmp_path, inputs: dict, layer_text: str, blobs=None) -> np.ndarray:
    """Run a deploy net made of Input layers (named after `inputs`, NCHW arrays) and `layer_text` in OpenCV."""
    text = 'name: "t"\n'
    for name, x in inputs.items():
        dims = " ".join(f"dim: {d}" for d in x.shape)
        text += f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(text + layer_text)
    if blobs:
        weights = tmp_path / "weights.caffemodel"
        write_caffemodel(weights, blobs)
        net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    else:
        net = cv2.dnn.readNetFromCaffe(str(proto))
    for name, x in inputs.items():
        net.setInput(np.ascontiguousarray(x), name)
    return net.forward()


def nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def in_both_layouts(make, x_nchw):
    """The layer's output, in NCHW, computed channels_first and channels_last (on the transposed input)."""
    first = make("channels_first")(x_nchw)
    last = make("channels_last")(nhwc(x_nchw))
    return first, nchw(last)


def normal(rng, shape, scale=1.0):
    return rng.normal(0.0, scale, shape).astype(np.float32)


def assert_close_nan(ours, ref, what=""):
    """assert_close where both hold nan at the same places (Caffe's 0/0 average of an empty window)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=what)
    assert_close(np.nan_to_num(ours), np.nan_to_num(ref), what=what)


def check_exports(model, feeds, tmp_path, onnx_ops=()):
    """ONNX (onnxruntime), .h5 in real tf_keras and kconvert, .keras in real Keras 3 and kconvert, the JSON config in
    tf_keras: all predict what the numpy engine predicts."""
    import tf_keras

    ref = numpy_predict(model._graph, feeds)
    proto = lower_model(model)
    onnx.checker.check_model(proto, full_check=True)
    used = {n.op_type for n in proto.graph.node}
    assert set(onnx_ops) <= used, f"expected ONNX ops {onnx_ops}, the graph has {sorted(used)}"
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], feeds)))
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_close_nan(g, r, what=f"onnxruntime output {i}")

    h5, k3 = tmp_path / "model.h5", tmp_path / "model.keras"
    model.save(h5)
    model.save(k3)
    tf_model = tf_keras.models.load_model(h5, custom_objects=kconvert.keras_objects("tf_keras"), compile=False)
    k3_model = keras.saving.load_model(k3, custom_objects=kconvert.keras_objects("keras3"), compile=False)
    tf_json = tf_keras.models.model_from_json(model.to_json(), custom_objects=kconvert.keras_objects("tf_keras"))
    tf_json.set_weights(model.get_weights())
    for what, loaded in (("tf_keras .h5", tf_model), ("Keras 3 .keras", k3_model), ("tf_keras JSON", tf_json)):
        out = loaded(feeds if len(feeds) > 1 else feeds[0])
        out = out if isinstance(out, (list, tuple)) else [out]
        for i, (o, r) in enumerate(zip(out, ref)):
            assert_close_nan(np.asarray(o), r, what=f"{what} output {i}")
    for path in (h5, k3):
        again = kconvert.load_model(path, compile=False)
        for i, (o, r) in enumerate(zip(numpy_predict(again._graph, feeds), ref)):
            assert_close_nan(o, r, what=f"kconvert reloading {path.suffix}, output {i}")
    return ref


# ---------------------------------------------------------------------------------------------- CaffePooling2D

# (N, C, H, W), kernel, stride, pad; what each exercises
POOL_CASES = {
    "ceil_112_to_56": ((BATCH, 3, 7, 112), (3, 3), (2, 2), (0, 0)),  # the classic 112 -> 56 (floor gives 55)
    "asymmetric_pads_overhang": ((BATCH, 3, 6, 8), (3, 3), (2, 2), (1, 1)),  # last window overhangs H + pad
    "asymmetric_hw": ((BATCH, 4, 5, 9), (2, 4), (3, 2), (1, 0)),  # kernel/stride/pad differ per axis
    "exact_fit": ((BATCH, 3, 7, 9), (3, 2), (2, 3), (1, 1)),  # windows end exactly at H + pad
    "clip_rule_fires": ((BATCH, 3, 5, 9), (4, 4), (4, 4), (3, 3)),  # a last window would start in the padding
    "large_pad": ((BATCH, 3, 13, 10), (5, 3), (4, 3), (4, 2)),
}


def _clip_fires(shape, k, s, p) -> bool:
    return any(caffe_pooled_length(n, kk, ss, pp, True, True) != caffe_pooled_length(n, kk, ss, pp, True, False)
               for n, kk, ss, pp in zip(shape[2:], k, s, p))


def test_pool_cases_cover_the_rules():
    assert caffe_pooled_length(112, 3, 2, 0, True, False) == 56
    assert caffe_pooled_length(112, 3, 2, 0, False, False) == 55
    assert _clip_fires(*POOL_CASES["clip_rule_fires"])
    assert not _clip_fires(*POOL_CASES["asymmetric_pads_overhang"])
    overhang = CaffePooling2D((3, 3), (2, 2), (1, 1), "ave").geometry((6, 8))
    assert overhang.ave_factor is not None and overhang.pads == ((1, 2), (1, 2))


@pytest.mark.parametrize("rounding", ["ceil", "floor"])
@pytest.mark.parametrize("mode", ["max", "ave"])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pooling_matches_opencv(tmp_path, rng, case, mode, rounding):
    shape, k, s, p = POOL_CASES[case]
    x = normal(rng, shape)
    fork = "ceil_mode: false" if rounding == "floor" else ""  # OpenCV's proto knows the fork's name for FLOOR
    text = (f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {mode.upper()} '
            f'kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} '
            f'{fork} }} }}\n')
    ref = opencv(tmp_path, {"data": x}, text)
    for y in in_both_layouts(lambda df: CaffePooling2D(k, s, p, mode, rounding, data_format=df), x):
        assert_close(y, ref, what=f"{case} {mode} {rounding}")


def _caffe_pool_reference(x, k, s, p, mode, ceil=True):
    """BVLC src/caffe/layers/pooling_layer.cpp (Reshape + Forward_cpu), transcribed loop for loop: the clip rule
    applies to both axes when either pad is non-zero; MAX starts at -FLT_MAX; AVE divides by
    (min(hstart + k, H + pad) - hstart) * (...) computed before the window is clipped to the image."""
    _, _, h, w = x.shape
    padded = p[0] > 0 or p[1] > 0
    oh, ow = (caffe_pooled_length(n, kk, ss, pp, ceil, padded) for n, kk, ss, pp in zip((h, w), k, s, p))
    y = np.zeros(x.shape[:2] + (oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we].reshape(x.shape[0], x.shape[1], -1)
            if mode == "max":
                y[:, :, i, j] = np.maximum(win.max(axis=2), FLT_LOWEST) if win.shape[2] else FLT_LOWEST
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    y[:, :, i, j] = np.float32(win.sum(axis=2)) / np.float32(size)
    return y


@pytest.mark.parametrize("mode", ["max", "ave"])
def test_pooling_where_opencv_departs_from_caffe(rng, mode):
    """Two corners where OpenCV is not Caffe, checked against Caffe's source:
    - kernel 1 stride 2 without padding on an even map: Caffe's ceil rounding adds a window past the image, whose
      MAX is -FLT_MAX and whose AVE is 0/0 (OpenCV gives 0 for the MAX);
    - padding on W only: Caffe's clip rule also shortens H (OpenCV clips per padded axis only)."""
    x = normal(rng, (BATCH, 3, 8, 7))
    for k, s, p in (((1, 1), (2, 2), (0, 0)), ((1, 3), (3, 3), (0, 1))):
        ref = _caffe_pool_reference(x, k, s, p, mode)
        for y in in_both_layouts(lambda df, k=k, s=s, p=p: CaffePooling2D(k, s, p, mode, data_format=df), x):
            assert_close_nan(y, ref, what=f"{mode} k={k} s={s} p={p}")
    last_row = _caffe_pool_reference(x, (1, 1), (2, 2), (0, 0), mode)[:, :, -1]
    assert np.isnan(last_row).all() if mode == "ave" else (last_row == FLT_LOWEST).all()


def test_pooling_config_errors():
    with pytest.raises(ConfigError, match="smaller than pool_size"):
        CaffePooling2D((3, 3), (2, 2), (3, 0))
    with pytest.raises(ConfigError, match="mode"):
        CaffePooling2D((3, 3), mode="stochastic")
    with pytest.raises(ConfigError, match="rounding"):
        CaffePooling2D((3, 3), rounding="round")


def test_pooling_exports(tmp_path, rng):
    """Every rounding case, both modes, both data formats in one model: ONNX, tf_keras, Keras 3, kconvert reload."""
    inputs, outputs, feeds = [], [], []
    for shape, k, s, p in POOL_CASES.values():
        for df in ("channels_last", "channels_first"):
            x = Input(shape[1:] if df == "channels_first" else (shape[2], shape[3], shape[1]))
            inputs.append(x)
            feeds.append(normal(rng, (BATCH, *x.shape[1:])))
            for mode in ("max", "ave"):
                for rounding in ("ceil", "floor"):
                    outputs.append(CaffePooling2D(k, s, p, mode, rounding, data_format=df)(x))
    model = Model(inputs, outputs)
    assert all(lowering_for(layer) is not None for layer in model.layers[len(inputs):])
    check_exports(model, feeds, tmp_path, onnx_ops=("MaxPool", "AveragePool"))


def test_pooling_empty_windows_export(tmp_path, rng):
    """Caffe's -FLT_MAX (MAX) and 0/0 (AVE) for a window past the image survive ONNX and real Keras."""
    x = Input((8, 7, 3))
    model = Model(x, [CaffePooling2D((1, 1), (2, 2), (0, 0), mode)(x) for mode in ("max", "ave")])
    ref = check_exports(model, [normal(rng, (BATCH, 8, 7, 3))], tmp_path, onnx_ops=("Pad", "MaxPool", "AveragePool"))
    assert (ref[0][:, -1] == FLT_LOWEST).all() and np.isnan(ref[1][:, -1]).all()
    assert not np.isnan(ref[1][:, :-1]).any()


# ---------------------------------------------------------------------------------------------- LRN


def _lrn_reference(x, n, alpha, beta, k, region):
    """BVLC src/caffe/layers/lrn_layer.cpp: ACROSS scale = k + alpha/n * sum over n channels (zero padded);
    WITHIN: (1 + alpha * AVE-pool(x^2, n, pad (n-1)/2)) ^ -beta, a divisor of n^2 everywhere; k unused."""
    half = n // 2
    sq = x.astype(np.float64) ** 2
    if region == "across_channels":
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        total = sum(padded[:, i:i + x.shape[1]] for i in range(n))
        return (x * (k + alpha / n * total) ** -beta).astype(np.float32)
    padded = np.pad(sq, ((0, 0), (0, 0), (half, half), (half, half)))
    total = sum(padded[:, :, i:i + x.shape[2], j:j + x.shape[3]] for i in range(n) for j in range(n))
    return (x * (1.0 + alpha / n ** 2 * total) ** -beta).astype(np.float32)


LRN_CASES = [(5, 0.3, 0.75, "across_channels"), (3, 1e-2, 0.6, "across_channels"),
             (3, 0.4, 0.75, "within_channel"), (5, 0.9, 0.5, "within_channel")]


@pytest.mark.parametrize("n,alpha,beta,region", LRN_CASES)
def test_lrn_matches_opencv(tmp_path, rng, n, alpha, beta, region):
    x = normal(rng, (BATCH, 7, 5, 9), 2.0)  # x^2 sums of order 1..30: the normalization is far from 1 and from 0
    text = (f'layer {{ name: "l" type: "LRN" bottom: "data" top: "l" lrn_param {{ local_size: {n} alpha: {alpha} '
            f'beta: {beta} norm_region: {region.upper()} }} }}\n')
    ref = opencv(tmp_path, {"data": x}, text)
    assert np.abs(ref - x).max() > 0.1  # the layer does change its input
    for y in in_both_layouts(lambda df: LRN(n, alpha, beta, 1.0, region, data_format=df), x):
        assert_close(y, ref, what=f"LRN {region} n={n}")
    assert_close(ref, _lrn_reference(x, n, alpha, beta, 1.0, region), what="the Caffe formula agrees with OpenCV")


@pytest.mark.parametrize("region", ["across_channels", "within_channel"])
def test_lrn_k(rng, region):
    """OpenCV ignores lrn_param.k (it reads a `bias` parameter the Caffe importer never sets), so k != 1 is checked
    against Caffe's formula: k is added across channels and unused within a channel."""
    x = normal(rng, (BATCH, 7, 5, 9), 2.0)
    ref = _lrn_reference(x, 5, 0.3, 0.75, 2.5, region)
    for y in in_both_layouts(lambda df: LRN(5, 0.3, 0.75, 2.5, region, data_format=df), x):
        assert_close(y, ref, what=f"LRN {region} k=2.5")
    differs = np.abs(ref - _lrn_reference(x, 5, 0.3, 0.75, 1.0, region)).max() > 0.01
    assert differs == (region == "across_channels")


def test_lrn_config_errors():
    with pytest.raises(ConfigError, match="odd"):
        LRN(4)
    with pytest.raises(ConfigError, match="norm_region"):
        LRN(5, norm_region="across")


def test_lrn_exports(tmp_path, rng):
    x_cl, x_cf = Input((5, 9, 7)), Input((7, 5, 9))
    outputs = []
    for n, alpha, beta, region in LRN_CASES:
        outputs.append(LRN(n, alpha, beta, 2.0, region, data_format="channels_last")(x_cl))
        outputs.append(LRN(n, alpha, beta, 1.5, region, data_format="channels_first")(x_cf))
    model = Model([x_cl, x_cf], outputs)
    check_exports(model, [normal(rng, (BATCH, 5, 9, 7), 2.0), normal(rng, (BATCH, 7, 5, 9), 2.0)], tmp_path,
                  onnx_ops=("LRN", "AveragePool", "Pow"))


# ---------------------------------------------------------------------------------------------- CaffeScale

# axis, num_axes, bias_term on a (N, 5, 7, 9) input
SCALE_CASES = [(1, 1, False), (1, 1, True), (1, 2, True), (2, 2, True), (1, -1, False), (1, 0, True),
               (3, 1, True), (2, 1, False), (1, 3, True)]


def _scale_layer(axis, num_axes, bias, df, gamma, beta, shape):
    layer = CaffeScale(axis, num_axes, bias, data_format=df)
    layer._maybe_build((None, *shape[1:]))
    assert [w.name.split("/")[-1] for w in layer.weights] == ["gamma:0", "beta:0"][:1 + bias]
    layer.set_weights([gamma, beta][:1 + bias])
    return layer


@pytest.mark.parametrize("axis,num_axes,bias", SCALE_CASES)
def test_scale_matches_opencv(tmp_path, rng, axis, num_axes, bias):
    x = normal(rng, (BATCH, 5, 7, 9))
    a = axis % 4
    shape = x.shape[a:4 if num_axes == -1 else a + num_axes]
    gamma, beta = normal(rng, shape), normal(rng, shape)
    text = (f'layer {{ name: "s" type: "Scale" bottom: "data" top: "s" scale_param {{ axis: {axis} '
            f'num_axes: {num_axes} bias_term: {str(bias).lower()} }} }}\n')
    ref = opencv(tmp_path, {"data": x}, text, [("s", "Scale", [gamma, beta][:1 + bias])])
    first = _scale_layer(axis, num_axes, bias, "channels_first", gamma, beta, x.shape)(x)
    last = _scale_layer(axis, num_axes, bias, "channels_last", gamma, beta, nhwc(x).shape)(nhwc(x))
    for y in (first, nchw(last)):
        assert_close(y, ref, what=f"Scale axis={axis} num_axes={num_axes} bias={bias}")


def test_scale_negative_axis(tmp_path, rng):
    """Caffe canonicalizes axis -2 to 2 (OpenCV refuses negative axes): the same result as axis 2 in OpenCV."""
    x = normal(rng, (BATCH, 5, 7, 9))
    gamma, beta = normal(rng, (7,)), normal(rng, (7,))
    text = 'layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { axis: 2 bias_term: true } }\n'
    ref = opencv(tmp_path, {"data": x}, text, [("s", "Scale", [gamma, beta])])
    first = _scale_layer(-2, 1, True, "channels_first", gamma, beta, x.shape)(x)
    last = _scale_layer(-2, 1, True, "channels_last", gamma, beta, nhwc(x).shape)(nhwc(x))
    assert_close(first, ref)
    assert_close(nchw(last), ref)


@pytest.mark.parametrize("s_shape", [(BATCH, 5), (BATCH, 5, 7), (BATCH, 5, 7, 9)])
def test_scale_two_inputs_matches_opencv(tmp_path, rng, s_shape):
    """Scale with two bottoms (axis 0, as SENet writes it): the scale input holds x's leading Caffe axes, in the
    model's data format (a rank >= 3 scale channels_last is (N, spatial..., C) like any tensor)."""
    x, s = normal(rng, (BATCH, 5, 7, 9)), normal(rng, s_shape)
    text = 'layer { name: "s" type: "Scale" bottom: "data" bottom: "sc" top: "s" scale_param { axis: 0 } }\n'
    ref = opencv(tmp_path, {"data": x, "sc": s}, text)
    first = CaffeScale(0, data_format="channels_first")([x, s])
    s_last = s if s.ndim < 3 else np.moveaxis(s, 1, -1)
    last = CaffeScale(0, data_format="channels_last")([nhwc(x), s_last])
    for y in (first, nchw(last)):
        assert_close(y, ref, what=f"two-input Scale, scale {s_shape}")


def test_scale_errors():
    with pytest.raises(kconvert.errors.ShapeError, match="axis must be 0"):
        CaffeScale(1)([np.ones((2, 3, 4, 5), np.float32), np.ones((2, 3), np.float32)])
    with pytest.raises(kconvert.errors.ShapeError, match="bias"):
        CaffeScale(0, bias_term=True)([np.ones((2, 3, 4, 5), np.float32), np.ones((2, 3), np.float32)])
    with pytest.raises(kconvert.errors.ShapeError, match="batch"):
        CaffeScale(0)(np.ones((2, 3), np.float32))


def test_scale_exports(tmp_path, rng):
    x_cl, x_cf = Input((7, 9, 5)), Input((5, 7, 9))
    s2, s4_cl = Input((5,)), Input((7, 9, 5))
    outputs = []
    for axis, num_axes, bias in SCALE_CASES:
        outputs.append(CaffeScale(axis, num_axes, bias, data_format="channels_last")(x_cl))
        outputs.append(CaffeScale(axis, num_axes, bias, data_format="channels_first")(x_cf))
    outputs.append(CaffeScale(-2, 1, True, data_format="channels_last")(x_cl))
    outputs.append(CaffeScale(0, data_format="channels_last")([x_cl, s2]))
    outputs.append(CaffeScale(0, data_format="channels_first")([x_cf, s2]))
    outputs.append(CaffeScale(0, data_format="channels_last")([x_cl, s4_cl]))
    model = Model([x_cl, x_cf, s2, s4_cl], outputs)
    for w in model.weights:
        w.assign(rng.normal(0.0, 1.0, w.shape))
    feeds = [normal(rng, (BATCH, 7, 9, 5)), normal(rng, (BATCH, 5, 7, 9)), normal(rng, (BATCH, 5)),
             normal(rng, (BATCH, 7, 9, 5))]
    check_exports(model, feeds, tmp_path, onnx_ops=("Mul", "Add"))


# ---------------------------------------------------------------------------------------------- BatchNorm note


@pytest.mark.parametrize("factor", [0.5, 0.0])
def test_standalone_batchnorm_is_keras_batchnorm(tmp_path, rng, factor):
    """Caffe BatchNorm (blobs mean_sum, var_sum, factor) = Keras BatchNormalization(center=False, scale=False,
    epsilon=eps) with moving_mean = b0 / f and moving_variance = b1 / f (both 0 when f == 0), for the converter."""
    x = normal(rng, (BATCH, 5, 7, 9))
    mean_sum, var_sum = normal(rng, (5,)), rng.uniform(0.5, 2.0, 5).astype(np.float32)
    eps = 1e-3
    text = (f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
            f'batch_norm_param {{ use_global_stats: true eps: {eps} }} }}\n')
    ref = opencv(tmp_path, {"data": x}, text, [("bn", "BatchNorm", [mean_sum, var_sum, np.float32([factor])])])
    scale = 0.0 if factor == 0 else 1.0 / factor
    for df, axis, feed in (("channels_first", 1, x), ("channels_last", -1, nhwc(x))):
        bn = BatchNormalization(axis=axis, center=False, scale=False, epsilon=eps)
        bn._maybe_build((None, *feed.shape[1:]))
        bn.set_weights([mean_sum * scale, var_sum * scale])
        y = bn(feed)
        assert_close(y if df == "channels_first" else nchw(y), ref, what=f"BatchNorm f={factor} {df}")
