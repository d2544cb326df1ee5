"""Reshaping layers (and the resize / layout ops under them) against tf_keras, and Keras 3 where it differs."""

import json
import os

import numpy as np
import pytest
from conftest import assert_close

import kconvert.layers as kl
from kconvert import ops
from kconvert.errors import ConfigError, ShapeError
from kconvert.layers import keras_dialect
from kconvert.ops.onnx_builder import OnnxBuilder


def _json(d):
    return json.loads(json.dumps(d))


def _x(rng, shape):
    return rng.standard_normal(shape).astype("float32")


def _cf(shape):
    """The channels_first shape with the same spatial sizes as a channels_last `shape`."""
    return (shape[0], shape[-1], *shape[1:-1])


def check_layer(tfk, class_name, kwargs, x):
    """Build `class_name(**kwargs)` in tf_keras and kconvert; compare outputs, shapes, configs, round trip."""
    tf_layer = getattr(tfk.layers, class_name)(**kwargs)
    ref = tf_layer(x).numpy()
    cfg = _json(tf_layer.get_config())

    ours = getattr(kl, class_name)(name=tf_layer.name, **kwargs)
    assert_close(ours(x), ref, what=class_name)
    assert _json(ours.get_config()) == cfg
    in_shape = (None, *x.shape[1:])
    assert tuple(ours.compute_output_shape(in_shape)) == (None, *ref.shape[1:])
    assert tuple(ours.compute_output_shape(in_shape)) == tuple(tf_layer.compute_output_shape(in_shape))

    again = kl.deserialize({"class_name": class_name, "config": cfg})
    assert type(again) is getattr(kl, class_name)
    assert _json(again.get_config()) == cfg
    assert_close(again(x), ref, what=f"{class_name} from config")
    return ours, ref


def run_onnx(builder, inputs, outputs, feeds):
    import onnxruntime as ort

    model = builder.make_model(inputs, outputs)
    model.ir_version = 8  # onnx writes a newer IR version by default than onnxruntime may read
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


# ---------------------------------------------------------------------------------------------- simple layers


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 4, 5, 3, 2), (2, 7), (2, 5, 3)])
def test_flatten(tfk, rng, data_format, shape):
    ours, _ = check_layer(tfk, "Flatten", {"data_format": data_format}, _x(rng, shape))
    out = ours(kl.Input(shape[1:]))
    assert out.shape == (None, int(np.prod(shape[1:]))) and out.layout is None
    assert ours.compute_output_shape((None, 5, None, 3)) == (None, None)


def test_flatten_channels_first_order():
    x = np.arange(2 * 3 * 2 * 2, dtype="float32").reshape(2, 3, 2, 2)  # NCHW
    y = kl.Flatten(data_format="channels_first")(x)
    np.testing.assert_array_equal(y, np.moveaxis(x, 1, -1).reshape(2, -1))


@pytest.mark.parametrize("target", [(-1,), (30,), (5, -1), (3, 2, -1), (-1, 3), (2, 3, 5)])
def test_reshape(tfk, rng, target):
    check_layer(tfk, "Reshape", {"target_shape": target}, _x(rng, (2, 6, 5)))


def test_reshape_unknown_and_errors():
    assert kl.Reshape((5, -1)).compute_output_shape((None, None, 5)) == (None, 5, None)
    with pytest.raises(ShapeError):
        kl.Reshape((7, -1))(kl.Input((6, 5)))
    with pytest.raises(ConfigError):
        kl.Reshape((-1, -1))


@pytest.mark.parametrize("dims", [(1, 2, 3), (2, 1, 3), (3, 1, 2), (2, 3, 1), (3, 2, 1)])
def test_permute(tfk, rng, dims):
    ours, _ = check_layer(tfk, "Permute", {"dims": dims}, _x(rng, (2, 3, 5, 4)))
    with pytest.raises(ConfigError):
        kl.Permute((0, 1))


def test_permute_layout():
    inp = kl.Input((5, 7, 3))
    inp.layout = "NHWC"
    assert kl.Permute((3, 1, 2))(inp).layout == "NCHW"
    assert kl.Permute((2, 1, 3))(inp).layout is None  # 'NWHC' is no layout the IR names


@pytest.mark.parametrize("n", [1, 3])
def test_repeat_vector(tfk, rng, n):
    check_layer(tfk, "RepeatVector", {"n": n}, _x(rng, (2, 5)))
    with pytest.raises(ConfigError):
        kl.RepeatVector(2.0)


# ---------------------------------------------------------------------------------------------- padding / cropping

SPATIAL = {1: (2, 7, 3), 2: (2, 9, 7, 3), 3: (2, 6, 7, 9, 3)}


@pytest.mark.parametrize("padding", [1, 0, (2, 3), (0, 2)])
def test_zero_padding1d(tfk, rng, padding):
    check_layer(tfk, "ZeroPadding1D", {"padding": padding}, _x(rng, SPATIAL[1]))


@pytest.mark.parametrize("cropping", [(1, 1), 2, (0, 3), (2, 0)])
def test_cropping1d(tfk, rng, cropping):
    check_layer(tfk, "Cropping1D", {"cropping": cropping}, _x(rng, SPATIAL[1]))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("rank,kind,arg", [
    (2, "ZeroPadding", None), (2, "ZeroPadding", 2), (2, "ZeroPadding", (2, 1)), (2, "ZeroPadding", ((1, 2), (3, 0))),
    (3, "ZeroPadding", None), (3, "ZeroPadding", 1), (3, "ZeroPadding", (1, 2, 0)),
    (3, "ZeroPadding", ((1, 0), (0, 2), (2, 1))),
    (2, "Cropping", None), (2, "Cropping", 1), (2, "Cropping", (2, 1)), (2, "Cropping", ((1, 2), (0, 3))),
    (2, "Cropping", ((0, 3), (2, 0))),
    (3, "Cropping", None), (3, "Cropping", 2), (3, "Cropping", (1, 0, 2)),
    (3, "Cropping", ((1, 0), (0, 2), (2, 1))), (3, "Cropping", ((0, 1), (2, 0), (0, 0))),
])
def test_padding_cropping(tfk, rng, data_format, rank, kind, arg):
    shape = SPATIAL[rank] if data_format == "channels_last" else _cf(SPATIAL[rank])
    kwargs = {"data_format": data_format}
    if arg is not None:
        kwargs["padding" if kind == "ZeroPadding" else "cropping"] = arg
    ours, ref = check_layer(tfk, f"{kind}{rank}D", kwargs, _x(rng, shape))
    out = ours(kl.Input(shape[1:]))
    assert out.shape == (None, *ref.shape[1:])
    assert out.layout == kl.pooling.spatial_layout(rank, data_format)


def test_cropping_too_large():
    with pytest.raises(ShapeError):
        kl.Cropping2D(((3, 3), (0, 0)))(kl.Input((6, 5, 2)))
    with pytest.raises(ShapeError):
        kl.Cropping1D((4, 3))(np.zeros((1, 7, 2), "float32"))
    with pytest.raises(ConfigError):
        kl.ZeroPadding2D(((1, 2, 3), (1, 2)))


# ---------------------------------------------------------------------------------------------- upsampling


@pytest.mark.parametrize("size", [2, 3])
def test_upsampling1d(tfk, rng, size):
    check_layer(tfk, "UpSampling1D", {"size": size}, _x(rng, (2, 5, 3)))


UP2D = [(2, "nearest"), ((2, 3), "nearest"), ((3, 1), "nearest"), (2, "bilinear"), ((2, 3), "bilinear"),
        ((3, 1), "bilinear"), ((1, 4), "BILINEAR")]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("size,interpolation", UP2D)
def test_upsampling2d(tfk, rng, data_format, size, interpolation):
    shape = (2, 5, 7, 3) if data_format == "channels_last" else (2, 3, 5, 7)
    ours, ref = check_layer(tfk, "UpSampling2D", {"size": size, "data_format": data_format,
                                                  "interpolation": interpolation}, _x(rng, shape))
    assert ours(kl.Input(shape[1:])).layout == ("NHWC" if data_format == "channels_last" else "NCHW")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("size,interpolation", UP2D)
def test_upsampling2d_keras3(rng, data_format, size, interpolation):
    """Keras 3 resizes as tf_keras does (half-pixel, no antialias when upsampling): same code, both dialects."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    x = _x(rng, (2, 5, 7, 3) if data_format == "channels_last" else (2, 3, 5, 7))
    k3 = keras.layers.UpSampling2D(size=size, data_format=data_format, interpolation=interpolation)
    ref = np.asarray(k3(x))
    with keras_dialect(3):
        ours = kl.deserialize({"class_name": "UpSampling2D", "config": _json(k3.get_config())})
    assert ours._keras_major == 3
    assert_close(ours(x), ref)


def test_upsampling2d_unsupported_interpolation(tfk, rng):
    layer = kl.deserialize({"class_name": "UpSampling2D",
                            "config": _json(tfk.layers.UpSampling2D(interpolation="bicubic").get_config())})
    assert layer.get_config()["interpolation"] == "bicubic"
    with pytest.raises(ConfigError, match="bicubic"):
        layer(_x(rng, (1, 3, 3, 1)))
    with pytest.raises(ConfigError):
        kl.UpSampling2D(interpolation="cubic-ish")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("size", [2, (1, 2, 3), (3, 1, 2)])
def test_upsampling3d(tfk, rng, data_format, size):
    shape = (2, 3, 4, 5, 2) if data_format == "channels_last" else (2, 2, 3, 4, 5)
    check_layer(tfk, "UpSampling3D", {"size": size, "data_format": data_format}, _x(rng, shape))


# ---------------------------------------------------------------------------------------------- resize op


def _tf_resize(x, size, mode, transform):
    import tensorflow as tf

    if transform == "half_pixel":
        return tf.image.resize(x, size, method=mode, antialias=False).numpy()
    fn = tf.compat.v1.image.resize_bilinear if mode == "bilinear" else tf.compat.v1.image.resize_nearest_neighbor
    return fn(x, size, align_corners=transform == "align_corners", half_pixel_centers=False).numpy()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("transform", ["half_pixel", "asymmetric", "align_corners"])
@pytest.mark.parametrize("size", [(12, 4), (9, 13), (5, 7), (2, 3)])
def test_resize_op_matches_tf(rng, mode, transform, size):
    x = _x(rng, (2, 5, 7, 3))
    ref = _tf_resize(x, size, mode, transform)
    assert_close(ops.resize(x, size, mode, transform), ref)
    xcf = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    assert_close(np.moveaxis(ops.resize(xcf, size, mode, transform, channels_last=False), 1, -1), ref)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("transform", ["half_pixel", "asymmetric", "align_corners"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_resize_op_onnx(rng, mode, transform, channels_last):
    x = _x(rng, (2, 5, 7, 3) if channels_last else (2, 3, 5, 7))
    sizes = (10, 21) if transform != "align_corners" else (9, 13)
    kw = {"sizes": sizes, "mode": mode, "coordinate_transformation": transform, "channels_last": channels_last}
    ref = ops.resize(x, **kw)
    b = OnnxBuilder()
    y = ops.OPS["resize"].to_onnx(b, ["x"], **kw)
    assert_close(run_onnx(b, [("x", x.shape)], [(y, ref.shape)], {"x": x}), ref)


def test_resize_gradient_matches_tf(rng):
    import tensorflow as tf

    x = _x(rng, (2, 5, 7, 3))
    for mode in ("bilinear", "nearest"):
        y = ops.resize(x, (12, 4), mode)
        g = _x(rng, y.shape)
        (gx,) = ops.OPS["resize"].backward(g, (x,), y, (12, 4), mode)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(tf.image.resize(xt, (12, 4), method=mode) * g)
        assert_close(gx, tape.gradient(loss, xt).numpy(), what=mode)


# ---------------------------------------------------------------------------------------------- layout ops

LINEAR_OPS = [
    ("reshape", (2, 6, 5), {"shape": (0, -1, 3)}),
    ("transpose", (2, 6, 5), {"perm": (0, 2, 1)}),
    ("pad", (2, 6, 5, 3), {"pads": {1: (1, 2), 2: (0, 3)}}),
    ("crop", (2, 6, 5, 3), {"crops": {1: (1, 2), 3: (1, 0)}}),
    ("repeat", (2, 6, 5), {"repeats": 3, "axis": 1}),
    ("repeat", (2, 6, 5), {"repeats": 2, "axis": 2}),
    ("tile", (2, 1, 5), {"reps": (1, 4, 1)}),
    ("resize", (2, 5, 7, 3), {"sizes": (12, 4), "mode": "bilinear", "coordinate_transformation": "align_corners"}),
    ("resize", (2, 5, 7, 3), {"sizes": (9, 13), "mode": "nearest", "coordinate_transformation": "asymmetric"}),
    ("avg_pool", (2, 9, 7, 3), {"ksize": (3, 2), "strides": (2, 3), "pads": ((1, 1), (0, 1))}),
]


@pytest.mark.parametrize("name,shape,attrs", LINEAR_OPS)
def test_linear_op_gradient_is_adjoint(rng, name, shape, attrs):
    """For a linear op f: <f(x), g> == <x, f'(g)>, which checks the gradient against the kernel."""
    op = ops.OPS[name]
    x = rng.standard_normal(shape)
    y = op.forward(x, **attrs)
    g = rng.standard_normal(y.shape)
    (gx,) = op.backward(g, (x,), y, **attrs)[:1]
    assert gx.shape == x.shape
    assert np.sum(y * g) == pytest.approx(np.sum(x * gx), rel=1e-9)


@pytest.mark.parametrize("name,shape,attrs", [case for case in LINEAR_OPS if case[0] != "resize"])
def test_layout_ops_onnx(rng, name, shape, attrs):
    x = _x(rng, shape)
    ref = ops.OPS[name].forward(x, **attrs)
    extra = {"ndim": len(shape)} if name in ("pad", "repeat") else {}
    b = OnnxBuilder()
    y = ops.OPS[name].to_onnx(b, ["x"], **attrs, **extra)
    assert_close(run_onnx(b, [("x", x.shape)], [(y, ref.shape)], {"x": x}), ref)


def test_shape_arithmetic():
    assert ops.same_pads(7, 3, 2) == (1, 1)
    assert ops.same_pads(8, 3, 2) == (0, 1)  # TF puts the odd pixel at the end
    assert ops.same_pads(5, 1, 3) == (0, 0)
    assert ops.explicit_pads("causal", (9,), (3,), None, (2,)) == ((4, 0),)
    assert ops.output_length(None, 3, "same", 2) is None
    assert ops.output_length(9, 3, "valid", 2) == 4
    assert ops.output_length(9, 3, "same", 2) == 5


def test_model_of_reshaping_layers(tfk, rng):
    """A tf_keras model chaining these layers, read back from its JSON, predicts what tf_keras predicts."""
    from kconvert.models import model_from_json

    inp = tfk.Input((9, 7, 3))
    h = tfk.layers.ZeroPadding2D(((1, 0), (2, 1)))(inp)
    h = tfk.layers.MaxPooling2D(3, strides=2, padding="same")(h)
    h = tfk.layers.UpSampling2D((2, 3), interpolation="bilinear")(h)
    h = tfk.layers.Cropping2D(((1, 2), (0, 3)))(h)
    h = tfk.layers.AveragePooling2D((2, 3), padding="same")(h)
    h = tfk.layers.Permute((3, 1, 2))(h)
    h = tfk.layers.Reshape((3, -1))(h)
    h = tfk.layers.UpSampling1D(2)(h)
    h = tfk.layers.Flatten()(h)
    out = tfk.layers.RepeatVector(2)(h)
    model = tfk.Model(inp, out)
    x = _x(rng, (2, 9, 7, 3))
    assert_close(model_from_json(model.to_json()).predict(x, verbose=0), model.predict(x, verbose=0))
