"""Pooling layers and ops against tf_keras (Keras 2): outputs, output shapes, configs, deserialization."""

import json

import numpy as np
import pytest
from conftest import assert_close

import kconvert.layers as kl
from kconvert import ops
from kconvert.errors import ConfigError, ShapeError
from kconvert.ops.onnx_builder import OnnxBuilder


def _json(d):
    return json.loads(json.dumps(d))


def tf_run(tf_layer, x, **call_kwargs):
    """Run a tf_keras layer; TF's CPU kernels lack NCHW pooling, so channels_first 2-D pooling runs as the
    channels_last twin of the layer on the transposed input."""
    if getattr(tf_layer, "data_format", None) != "channels_first" or "Pooling2D" not in type(tf_layer).__name__:
        return tf_layer(x, **call_kwargs).numpy()
    twin = type(tf_layer).from_config({**tf_layer.get_config(), "data_format": "channels_last"})
    y = twin(np.moveaxis(x, 1, -1), **call_kwargs).numpy()
    return np.moveaxis(y, -1, 1) if y.ndim == x.ndim else y


def check_layer(tfk, class_name, kwargs, x, call_kwargs=None, tf_call_kwargs=None):
    """Build `class_name(**kwargs)` in tf_keras and kconvert; compare outputs, shapes, configs, round trip."""
    tf_layer = getattr(tfk.layers, class_name)(**kwargs)
    ref = tf_run(tf_layer, x, **(tf_call_kwargs or {}))
    cfg = _json(tf_layer.get_config())

    ours = getattr(kl, class_name)(name=tf_layer.name, **kwargs)
    assert_close(ours(x, **(call_kwargs or {})), ref, what=class_name)
    assert _json(ours.get_config()) == cfg
    in_shape = (None, *x.shape[1:])
    assert tuple(ours.compute_output_shape(in_shape)) == (None, *ref.shape[1:])
    assert tuple(ours.compute_output_shape(in_shape)) == tuple(tf_layer.compute_output_shape(in_shape))

    again = kl.deserialize({"class_name": class_name, "config": cfg})
    assert type(again) is getattr(kl, class_name)
    assert _json(again.get_config()) == cfg
    assert_close(again(x, **(call_kwargs or {})), ref, what=f"{class_name} from config")
    return ours, ref


def run_onnx(builder, inputs, outputs, feeds):
    """Run what `builder` emitted in onnxruntime (IR version pinned to what opset 17 needs: onnx writes a newer
    IR version by default than onnxruntime may read)."""
    import onnxruntime as ort

    model = builder.make_model(inputs, outputs)
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _x(rng, shape):
    return rng.standard_normal(shape).astype("float32")


def _cf(shape):
    """The channels_first shape with the same spatial sizes as a channels_last `shape`."""
    return (shape[0], shape[-1], *shape[1:-1])


# ---------------------------------------------------------------------------------------------- windowed

POOL_CASES = [
    # (rank, kwargs); inputs have odd sizes, H != W != C and strides that do not divide them
    (1, {}),
    (1, {"pool_size": 3}),
    (1, {"pool_size": 3, "strides": 2, "padding": "same"}),
    (1, {"pool_size": 2, "strides": 1, "padding": "same"}),
    (1, {"pool_size": 4, "strides": 3, "padding": "valid"}),
    (2, {}),
    (2, {"pool_size": (2, 3), "padding": "same"}),
    (2, {"pool_size": 3, "strides": (2, 1), "padding": "same"}),
    (2, {"pool_size": (3, 2), "strides": (1, 3), "padding": "valid"}),
    (2, {"pool_size": (1, 4), "strides": 2, "padding": "same"}),
    (2, {"pool_size": 2, "strides": 3, "padding": "SAME"}),
    (3, {}),
    (3, {"pool_size": (2, 3, 2), "strides": (2, 2, 3), "padding": "same"}),
    (3, {"pool_size": 3, "strides": (1, 2, 2), "padding": "valid"}),
]
SHAPES = {1: (2, 11, 5), 2: (2, 9, 7, 3), 3: (2, 7, 5, 9, 3)}


@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("rank,kwargs", POOL_CASES)
def test_pooling(tfk, rng, kind, data_format, rank, kwargs):
    shape = SHAPES[rank] if data_format == "channels_last" else _cf(SHAPES[rank])
    check_layer(tfk, f"{kind}Pooling{rank}D", {**kwargs, "data_format": data_format}, _x(rng, shape))


@pytest.mark.parametrize("alias,name", [("MaxPool1D", "MaxPooling1D"), ("MaxPool2D", "MaxPooling2D"),
                                        ("MaxPool3D", "MaxPooling3D"), ("AvgPool1D", "AveragePooling1D"),
                                        ("AvgPool2D", "AveragePooling2D"), ("AvgPool3D", "AveragePooling3D"),
                                        ("GlobalMaxPool1D", "GlobalMaxPooling1D"),
                                        ("GlobalMaxPool2D", "GlobalMaxPooling2D"),
                                        ("GlobalMaxPool3D", "GlobalMaxPooling3D"),
                                        ("GlobalAvgPool1D", "GlobalAveragePooling1D"),
                                        ("GlobalAvgPool2D", "GlobalAveragePooling2D"),
                                        ("GlobalAvgPool3D", "GlobalAveragePooling3D")])
def test_aliases(tfk, alias, name):
    assert getattr(kl, alias) is getattr(kl, name)
    layer = kl.deserialize({"class_name": alias, "config": {"name": "p"}})
    assert type(layer).__name__ == name
    assert _json(layer.get_config()) == _json(getattr(tfk.layers, alias)(name="p").get_config())


def test_pooling_defaults_and_errors(tfk):
    assert kl.MaxPooling2D().get_config()["strides"] == (2, 2)
    assert kl.AveragePooling1D(pool_size=3).strides == (3,)
    assert kl.MaxPooling2D(data_format=None).data_format == "channels_last"
    with pytest.raises(ConfigError):
        kl.MaxPooling2D(padding="full")
    with pytest.raises(ConfigError):
        kl.MaxPooling2D(pool_size=(2, 2, 2))
    with pytest.raises(ConfigError):
        kl.AveragePooling3D(data_format="NCHW")
    with pytest.raises(ShapeError):
        kl.MaxPooling2D(pool_size=5)(kl.Input((3, 8, 2)))
    with pytest.raises(ShapeError):
        kl.MaxPooling2D()(kl.Input((8, 2)))


@pytest.mark.parametrize("rank,data_format,layout", [(1, "channels_last", "NWC"), (2, "channels_first", "NCHW"),
                                                      (3, "channels_last", "NDHWC")])
def test_pooling_symbolic(rank, data_format, layout):
    inp = kl.Input(SHAPES[rank][1:])
    out = getattr(kl, f"MaxPooling{rank}D")(pool_size=3, strides=2, padding="same", data_format=data_format)(inp)
    assert out.layout == layout
    assert out.shape[0] is None


# ---------------------------------------------------------------------------------------------- global


@pytest.mark.parametrize("kind", ["Max", "Average"])
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling(tfk, rng, kind, rank, data_format, keepdims):
    shape = SHAPES[rank] if data_format == "channels_last" else _cf(SHAPES[rank])
    ours, _ = check_layer(tfk, f"Global{kind}Pooling{rank}D", {"data_format": data_format, "keepdims": keepdims},
                          _x(rng, shape))
    out = ours(kl.Input(shape[1:]))
    assert out.layout == (kl.pooling.spatial_layout(rank, data_format) if keepdims else None)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pooling1d_mask(tfk, rng, data_format, keepdims):
    x = _x(rng, (3, 9, 4) if data_format == "channels_last" else (3, 4, 9))
    mask = rng.random((3, 9)) < 0.6
    mask[:, 0] = True
    kwargs = {"data_format": data_format, "keepdims": keepdims}
    ours, ref = check_layer(tfk, "GlobalAveragePooling1D", kwargs, x, call_kwargs={"mask": mask},
                            tf_call_kwargs={"mask": mask})
    assert ours.supports_masking and ours.compute_mask(x, mask) is None
    # without the mask it is the plain mean, which differs
    assert not np.allclose(ours(x), ref)


def test_global_average_pooling1d_fully_masked_is_nan(tfk, rng):
    x = _x(rng, (2, 5, 3))
    mask = np.array([[True, False, True, False, False], [False] * 5])
    ref = tfk.layers.GlobalAveragePooling1D()(x, mask=mask).numpy()
    ours = kl.GlobalAveragePooling1D()(x, mask=mask)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, equal_nan=True)
    assert np.isnan(ours[1]).all()


def test_global_pooling_keras3_config(rng):
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    x = _x(rng, (2, 5, 7, 3))
    for name, kwargs in [("GlobalAveragePooling2D", {"keepdims": True}),
                         ("MaxPooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}),
                         ("AveragePooling2D", {"pool_size": (2, 3), "padding": "same"})]:
        k3 = getattr(keras.layers, name)(**kwargs)
        layer = kl.deserialize({"class_name": name, "config": _json(k3.get_config())})
        assert_close(layer(x), np.asarray(k3(x)), what=name)


# ---------------------------------------------------------------------------------------------- ops


def test_avg_pool_count_include_pad():
    x = np.arange(1, 26, dtype="float32").reshape(1, 5, 5, 1)
    pads = ((1, 1), (1, 1))
    incl = ops.avg_pool(x, (3, 3), (2, 2), pads, count_include_pad=True)
    excl = ops.avg_pool(x, (3, 3), (2, 2), pads, count_include_pad=False)
    assert incl[0, 0, 0, 0] == pytest.approx((1 + 2 + 6 + 7) / 9)
    assert excl[0, 0, 0, 0] == pytest.approx((1 + 2 + 6 + 7) / 4)
    assert incl[0, 1, 1, 0] == excl[0, 1, 1, 0] == pytest.approx(13.0)
    assert ops.max_pool(-np.abs(x), (3, 3), (2, 2), pads)[0, 0, 0, 0] == -1.0  # padding never wins


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("mode", ["max", "avg_excl", "avg_incl"])
def test_pool_ops_onnx(rng, mode, channels_last):
    x = _x(rng, (2, 9, 7, 3) if channels_last else (2, 3, 9, 7))
    kw = {"ksize": (3, 2), "strides": (2, 3), "pads": ((1, 1), (0, 1)), "channels_last": channels_last}
    if mode == "max":
        op, ref = ops.OPS["max_pool"], ops.max_pool(x, **kw)
    else:
        kw["count_include_pad"] = mode == "avg_incl"
        op, ref = ops.OPS["avg_pool"], ops.avg_pool(x, **kw)
    b = OnnxBuilder()
    y = op.to_onnx(b, ["x"], **kw)
    out = run_onnx(b, [("x", x.shape)], [(y, ref.shape)], {"x": x})
    assert_close(out, ref)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_global_pool_ops_onnx(rng, keepdims, masked):
    x = _x(rng, (2, 7, 3))
    feeds, inputs = {"x": x}, [("x", x.shape)]
    b = OnnxBuilder()
    if masked:
        m = (rng.random((2, 7, 1)) < 0.5).astype("float32")
        m[:, 0] = 1
        ref = ops.global_avg_pool(x, (1,), keepdims, mask=m)
        y = ops.OPS["global_avg_pool"].to_onnx(b, ["x", "m"], axes=(1,), keepdims=keepdims)
        feeds["m"], inputs = m, inputs + [("m", m.shape)]
    else:
        ref = ops.global_max_pool(x, (1,), keepdims)
        y = ops.OPS["global_max_pool"].to_onnx(b, ["x"], axes=(1,), keepdims=keepdims)
    out = run_onnx(b, inputs, [(y, ref.shape)], feeds)
    assert_close(out, ref)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_pool_gradients_match_tf(rng, mode, channels_last):
    import tensorflow as tf

    x = _x(rng, (2, 9, 7, 3))
    pads = ops.explicit_pads("same", (9, 7), (3, 2), (2, 2))
    op = ops.OPS["max_pool" if mode == "max" else "avg_pool"]
    xin = x if channels_last else np.ascontiguousarray(np.moveaxis(x, -1, 1))
    y = op.forward(xin, (3, 2), (2, 2), pads, channels_last=channels_last)
    g = _x(rng, y.shape)
    (gx,) = op.backward(g, (xin,), y, (3, 2), (2, 2), pads, channels_last=channels_last)

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        pool = tf.nn.max_pool2d if mode == "max" else tf.nn.avg_pool2d
        yt = pool(xt, (3, 2), (2, 2), "SAME")
        loss = tf.reduce_sum(yt * (g if channels_last else np.moveaxis(g, 1, -1)))
    ref = tape.gradient(loss, xt).numpy()
    assert_close(gx if channels_last else np.moveaxis(gx, 1, -1), ref)


def test_global_pool_gradients(rng):
    x = _x(rng, (2, 5, 3))
    m = (rng.random((2, 5, 1)) < 0.5).astype("float32")
    m[:, 0] = 1
    g = _x(rng, (2, 3))
    (gmax,) = ops.OPS["global_max_pool"].backward(g, (x,), ops.global_max_pool(x, (1,)), axes=(1,))
    assert_close(gmax.sum(axis=1), g)
    assert ((gmax != 0).sum(axis=1) == 1).all()
    gavg, _ = ops.OPS["global_avg_pool"].backward(g, (x, m), None, axes=(1,))
    # finite differences of sum(g * masked_mean(x))
    eps, i = 1e-2, (1, 0, 2)
    xp, xm = x.copy(), x.copy()
    xp[i] += eps
    xm[i] -= eps
    fd = (np.sum(g * ops.global_avg_pool(xp, (1,), mask=m)) - np.sum(g * ops.global_avg_pool(xm, (1,), mask=m)))
    assert gavg[i] == pytest.approx(fd / (2 * eps), rel=1e-3, abs=1e-4)


def test_masked_global_average_in_model(tfk, rng):
    """The mask made upstream (Masking) reaches GlobalAveragePooling1D through a model read from JSON."""
    from kconvert.models import model_from_json

    model = tfk.Sequential([tfk.layers.Masking(0.0, input_shape=(7, 4)), tfk.layers.GlobalAveragePooling1D()])
    x = _x(rng, (3, 7, 4))
    x[0, 3:] = 0
    x[2, :2] = 0
    assert_close(model_from_json(model.to_json()).predict(x, verbose=0), model.predict(x, verbose=0))
