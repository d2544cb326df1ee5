"""Convolution layers against real tf_keras: outputs, configs, weights, output shapes and signatures.

Every case builds the same layer in tf_keras and in kconvert, sets the same random (fan-in scaled) weights
into both and compares the outputs with the design tolerance; inputs have H != W != C, odd sizes, batch >= 2
and strides that do not divide the input.
"""

import importlib
import inspect
import json

import numpy as np
import pytest
from conftest import assert_close

import kconvert.layers as kl
from kconvert.errors import ConfigError
from kconvert.layers import convolutional as kconv

CL, CF = "channels_last", "channels_first"

# (class name, positional args, keyword args, input shape)
CASES = [
    # ---- Conv1D
    ("Conv1D", (4, 3), {}, (2, 11, 5)),
    ("Conv1D", (4, 3), {"strides": 2, "padding": "same"}, (3, 11, 5)),
    ("Conv1D", (4, 4), {"strides": 3, "padding": "same"}, (2, 13, 5)),
    ("Conv1D", (4, 4), {"strides": 3}, (2, 13, 5)),
    ("Conv1D", (4, 3), {"padding": "causal", "dilation_rate": 2}, (2, 11, 5)),
    ("Conv1D", (4, 3), {"padding": "causal", "strides": 2}, (2, 11, 5)),
    ("Conv1D", (6, 3), {"groups": 3, "padding": "same"}, (2, 11, 6)),
    ("Conv1D", (4, 3), {"strides": 2, "padding": "same", "data_format": CF}, (2, 5, 11)),
    ("Conv1D", (4, 2), {"use_bias": False, "activation": "relu", "dilation_rate": 3}, (2, 11, 5)),
    # ---- Conv2D
    ("Conv2D", (4, (3, 2)), {"strides": (2, 3), "padding": "same"}, (2, 9, 8, 5)),
    ("Conv2D", (4, 3), {"strides": 2}, (2, 9, 8, 5)),
    ("Conv2D", (4, 2), {"padding": "same"}, (2, 6, 7, 3)),
    ("Conv2D", (4, 3), {"dilation_rate": (2, 3), "padding": "same"}, (2, 9, 8, 5)),
    ("Conv2D", (4, (3, 2)), {"strides": (2, 3), "padding": "same", "data_format": CF}, (2, 5, 9, 8)),
    ("Conv2D", (4, 3), {"dilation_rate": 2, "data_format": CF}, (2, 5, 9, 8)),
    ("Conv2D", (6, 3), {"groups": 2, "strides": 2, "padding": "same"}, (2, 9, 7, 4)),
    ("Conv2D", (4, 3), {"use_bias": False, "activation": "tanh"}, (2, 9, 8, 5)),
    ("Conv2D", (4, 3), {"padding": "same", "strides": 2}, (2, 3, 9, 8, 5)),  # extra batch dimension
    # ---- Conv3D
    ("Conv3D", (4, 3), {"strides": (2, 1, 3), "padding": "same"}, (2, 5, 7, 8, 3)),
    ("Conv3D", (4, (2, 3, 2)), {"dilation_rate": 2, "data_format": CF}, (2, 3, 5, 7, 6)),
    ("Conv3D", (4, 3), {"strides": 2, "padding": "same", "data_format": CF, "use_bias": False}, (2, 3, 5, 7, 6)),
    ("Conv3D", (4, 2), {"groups": 2, "activation": "sigmoid"}, (2, 5, 4, 3, 6)),
    # ---- Conv1DTranspose
    ("Conv1DTranspose", (4, 3), {}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 3), {"strides": 2, "padding": "same"}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 4), {"strides": 3, "output_padding": 2}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 3), {"strides": 2, "padding": "same", "output_padding": 0}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 1), {"strides": 2}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 3), {"dilation_rate": 2, "padding": "same"}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 2), {"dilation_rate": 3}, (2, 7, 5)),
    ("Conv1DTranspose", (4, 3), {"strides": 2, "padding": "same", "data_format": CF}, (2, 5, 7)),
    # ---- Conv2DTranspose
    ("Conv2DTranspose", (4, 3), {}, (2, 5, 7, 3)),
    ("Conv2DTranspose", (4, (3, 2)), {"strides": (2, 3), "padding": "same"}, (2, 5, 7, 3)),
    ("Conv2DTranspose", (4, 3), {"strides": 2, "output_padding": 1}, (2, 5, 7, 3)),
    ("Conv2DTranspose", (4, (4, 3)), {"strides": (3, 2), "padding": "same", "output_padding": (2, 1)}, (2, 5, 7, 3)),
    ("Conv2DTranspose", (4, (1, 2)), {"strides": (2, 3)}, (2, 5, 7, 3)),
    ("Conv2DTranspose", (4, 3), {"dilation_rate": 2, "padding": "same"}, (2, 5, 7, 3)),
    ("Conv2DTranspose", (4, 3), {"dilation_rate": 2, "data_format": CF}, (2, 3, 5, 7)),
    ("Conv2DTranspose", (4, (2, 3)), {"strides": (2, 3), "padding": "same", "data_format": CF}, (2, 3, 5, 7)),
    ("Conv2DTranspose", (4, 3), {"strides": 2, "use_bias": False, "activation": "relu"}, (2, 5, 7, 3)),
    # ---- Conv3DTranspose
    ("Conv3DTranspose", (4, 3), {"strides": (2, 1, 3), "padding": "same"}, (2, 3, 5, 4, 2)),
    ("Conv3DTranspose", (4, (2, 3, 2)), {"strides": 2, "output_padding": 1, "data_format": CF}, (2, 2, 3, 5, 4)),
    ("Conv3DTranspose", (4, 3), {"dilation_rate": 2}, (2, 3, 5, 4, 2)),  # tf_keras ignores the dilation
    # ---- SeparableConv1D
    ("SeparableConv1D", (4, 3), {"strides": 2, "padding": "same", "depth_multiplier": 2}, (2, 11, 5)),
    ("SeparableConv1D", (4, 3), {"padding": "causal", "dilation_rate": 2}, (2, 11, 5)),
    ("SeparableConv1D", (4, 3), {"strides": 3, "data_format": CF, "use_bias": False}, (2, 5, 11)),
    # ---- SeparableConv2D
    ("SeparableConv2D", (4, (3, 2)), {"strides": 2, "padding": "same", "depth_multiplier": 2}, (2, 9, 8, 5)),
    ("SeparableConv2D", (4, (2, 3)), {"strides": 3, "padding": "same"}, (2, 9, 8, 5)),
    ("SeparableConv2D", (4, 3), {"dilation_rate": 2, "data_format": CF, "activation": "relu"}, (2, 5, 9, 8)),
    ("SeparableConv2D", (4, 3), {"strides": 2, "use_bias": False}, (2, 9, 8, 5)),
    # ---- DepthwiseConv1D
    ("DepthwiseConv1D", (3,), {"strides": 2, "padding": "same", "depth_multiplier": 2}, (2, 11, 5)),
    ("DepthwiseConv1D", (3,), {"dilation_rate": 2, "data_format": CF}, (2, 5, 11)),
    # ---- DepthwiseConv2D
    ("DepthwiseConv2D", ((3, 2),), {"strides": 2, "padding": "same", "depth_multiplier": 3}, (2, 9, 8, 5)),
    ("DepthwiseConv2D", ((2, 3),), {"strides": 3, "padding": "same"}, (2, 9, 8, 5)),
    ("DepthwiseConv2D", ((2, 3),), {"strides": 2}, (2, 9, 8, 5)),
    ("DepthwiseConv2D", (3,), {"dilation_rate": 2, "data_format": CF, "use_bias": False}, (2, 5, 9, 8)),
    ("DepthwiseConv2D", (2,), {"padding": "same", "activation": "relu"}, (2, 6, 7, 4)),
]


def _case_id(case):
    name, args, kwargs, shape = case
    opts = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}{list(args)}[{opts}]{list(shape)}"


def _json(obj):
    return json.loads(json.dumps(obj))


def _random_weights(shapes, rng):
    """Random weights scaled by fan-in (the product of all but the last axis), biases non-zero."""
    out = []
    for shape in shapes:
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.5
        out.append((rng.standard_normal(shape) * scale).astype("float32"))
    return out


def _reference_output(tfk, ref_layer, name, args, kwargs, x, weights):
    """tf_keras's output, where TensorFlow's CPU kernels can compute it.

    Without oneDNN they run most convolutions channels-last only: a channels-first layer is then computed as
    the same layer channels-last on the transposed input, which is what channels-first means (Keras keeps
    the same kernel layout in both formats). Nor do they have a dilated Conv1DTranspose: that one is the
    dilated Conv2DTranspose (which tf_keras computes with `atrous_conv2d_transpose`) on a height-1 image.
    """
    try:
        return ref_layer(x).numpy()
    except Exception:  # tf.errors.UnimplementedError / InvalidArgumentError
        if name == "Conv1DTranspose" and kwargs.get("data_format", CL) == CL:
            (filters, k), d = args, kwargs["dilation_rate"]
            layer2d = tfk.layers.Conv2DTranspose(filters, (1, k), **{**kwargs, "dilation_rate": (d, d)})
            layer2d.build((None, 1, *x.shape[1:]))
            layer2d.set_weights([weights[0][None], *weights[1:]])
            return layer2d(x[:, None]).numpy()[:, 0]
        if kwargs.get("data_format") != CF:
            raise
        cl_layer = getattr(tfk.layers, name)(*args, **{**kwargs, "data_format": CL})
        x_cl = np.moveaxis(x, 1, -1)
        cl_layer.build((None, *x_cl.shape[1:]))
        cl_layer.set_weights(weights)
        return np.moveaxis(cl_layer(x_cl).numpy(), -1, 1)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_tf_keras(case, tfk, rng):
    name, args, kwargs, shape = case
    x = rng.standard_normal(shape).astype("float32")

    ref_layer = getattr(tfk.layers, name)(*args, **kwargs)
    ref_layer.build((None, *shape[1:]))
    weights = _random_weights([w.shape for w in ref_layer.get_weights()], rng)
    ref_layer.set_weights(weights)
    ref = _reference_output(tfk, ref_layer, name, args, kwargs, x, weights)

    ours = getattr(kl, name)(*args, **kwargs)
    ours(x)  # builds it
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in ref_layer.weights]
    assert [w.name.split("/")[-1] for w in ours.weights] == [w.name.split("/")[-1] for w in ref_layer.weights]
    ours.set_weights(weights)
    assert_close(ours(x), ref, what=name)

    # shape inference, config, and a round trip through tf_keras's config
    assert tuple(ours.compute_output_shape((None, *shape[1:]))) == tuple(
        ref_layer.compute_output_shape((None, *shape[1:])).as_list())
    ref_config = _json(ref_layer.get_config())
    ref_config.pop("name")
    config = _json(ours.get_config())
    config.pop("name")
    assert config == ref_config

    again = kl.deserialize({"class_name": name, "config": _json(ref_layer.get_config())})
    assert type(again) is type(ours)
    assert _json(again.get_config()) == _json(ref_layer.get_config())
    again(x)
    again.set_weights(weights)
    assert_close(again(x), ref, what=f"{name} from config")


CLASSES = ["Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
           "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D"]


@pytest.mark.parametrize("name", CLASSES)
def test_signature_and_default_config(name, tfk):
    """Same constructor arguments, in the same order with the same defaults, and the same default config."""
    def params(cls):
        return [(p.name, p.default) for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self"]

    assert params(getattr(kl, name)) == params(getattr(tfk.layers, name))
    args = (3,) if name.startswith("Depthwise") else (4, 3)
    ref = _json(getattr(tfk.layers, name)(*args, name="x").get_config())
    assert _json(getattr(kl, name)(*args, name="x").get_config()) == ref


def test_config_with_initializers_regularizers_constraints(tfk):
    max_norm = tfk.constraints.serialize(tfk.constraints.MaxNorm(3, axis=[0, 1, 2]))  # a config as read from a file
    kwargs = {"kernel_initializer": "he_normal", "bias_initializer": "ones", "kernel_regularizer": "l2",
              "bias_regularizer": "l1", "activity_regularizer": "l1_l2", "kernel_constraint": max_norm,
              "bias_constraint": "non_neg", "activation": "relu", "name": "c"}
    ref = _json(tfk.layers.Conv2D(4, 3, **kwargs).get_config())
    assert _json(kl.Conv2D(4, 3, **kwargs).get_config()) == ref
    sep = {"depthwise_initializer": "he_uniform", "pointwise_initializer": "lecun_normal",
           "depthwise_regularizer": "l2", "pointwise_regularizer": "l1", "depthwise_constraint": max_norm,
           "pointwise_constraint": "non_neg", "name": "s"}
    ref = _json(tfk.layers.SeparableConv2D(4, 3, **sep).get_config())
    assert _json(kl.SeparableConv2D(4, 3, **sep).get_config()) == ref
    dw = {k: v for k, v in sep.items() if not k.startswith("pointwise")}
    ref = _json(tfk.layers.DepthwiseConv2D(3, **dw).get_config())
    assert _json(kl.DepthwiseConv2D(3, **dw).get_config()) == ref


@pytest.mark.parametrize("alias,target", [
    ("Convolution1D", "Conv1D"), ("Convolution2D", "Conv2D"), ("Convolution3D", "Conv3D"),
    ("Deconvolution2D", "Conv2DTranspose"), ("Convolution2DTranspose", "Conv2DTranspose"),
    ("SeparableConvolution2D", "SeparableConv2D"), ("SeparableConvolution1D", "SeparableConv1D"),
])
def test_keras_aliases(alias, target, tfk):
    config = _json(getattr(tfk.layers, target)(4, 3, name="a").get_config())
    layer = kl.deserialize({"class_name": alias, "config": config})
    assert type(layer).__name__ == target
    assert _json(layer.get_config()) == config


def test_same_padding_is_tensorflows_asymmetric_split():
    # total padding (ceil(n/s)-1)*s + eff - n, the smaller half before
    assert kconv.same_pads(6, 2, 1) == (0, 1)
    assert kconv.same_pads(7, 4, 1) == (1, 2)
    assert kconv.same_pads(9, 3, 2) == (1, 1)
    assert kconv.same_pads(8, 3, 2) == (0, 1)
    assert kconv.same_pads(8, 3, 3) == (0, 1)
    assert kconv.same_pads(7, 3, 1, dilation=2) == (2, 2)
    assert kconv.same_pads(5, 1, 3) == (0, 0)
    # even kernel, stride 1: the extra row goes to the bottom/right, which shifts the output vs. Caffe
    x = np.arange(6, dtype="float32").reshape(1, 6, 1)
    layer = kl.Conv1D(1, 2, padding="same", use_bias=False)
    layer(x)
    layer.set_weights([np.array([[[1.0]], [[10.0]]], dtype="float32")])
    np.testing.assert_allclose(layer(x)[0, :, 0], [10, 21, 32, 43, 54, 5])


def test_transposed_output_length_follows_deconv_output_length():
    f = kconv.deconv_output_length
    assert f(5, 3, "valid", None, 2) == 11
    assert f(5, 1, "valid", None, 2) == 10  # kernel smaller than the stride: trailing zeros
    assert f(5, 3, "same", None, 2) == 10
    assert f(5, 3, "valid", 1, 2) == 12
    assert f(5, 4, "same", 2, 3) == 14
    assert f(5, 3, "same", None, 1, dilation=2) == 5
    assert f(None, 3, "same", None, 2) is None


@pytest.mark.parametrize("data_format,layout", [(CL, "NHWC"), (CF, "NCHW")])
def test_output_layout(data_format, layout):
    shape = (None, 7, 6, 3) if data_format == CL else (None, 3, 7, 6)
    for layer in (kl.Conv2D(4, 3, data_format=data_format), kl.Conv2DTranspose(4, 3, data_format=data_format),
                  kl.SeparableConv2D(4, 3, data_format=data_format), kl.DepthwiseConv2D(3, data_format=data_format)):
        y = layer(kl.Input(batch_shape=shape))
        assert y.layout == layout
        assert y.shape == layer.compute_output_shape(shape)
    one = "NWC" if data_format == CL else "NCW"
    three = "NDHWC" if data_format == CL else "NCDHW"
    assert kl.Conv1D(2, 3, data_format=data_format)(kl.Input(batch_shape=(None, 5, 5))).layout == one
    assert kl.Conv3D(2, 1, data_format=data_format)(kl.Input(batch_shape=(None, 5, 5, 5, 5))).layout == three


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="causal"):
        kl.Conv2D(4, 3, padding="causal")
    with pytest.raises(ConfigError, match="dilation"):
        kl.Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ConfigError, match="output padding"):
        kl.Conv2DTranspose(4, 3, strides=2, output_padding=2)
    with pytest.raises(ConfigError, match="groups"):
        kl.Conv2D(5, 3, groups=2)
    with pytest.raises(ConfigError, match="kernel_size"):
        kl.Conv2D(4, (3, 3, 3))
    with pytest.raises(ConfigError, match="padding"):
        kl.Conv1D(4, 3, padding="full")
    with pytest.raises(ConfigError, match="data_format"):
        kl.Conv1D(4, 3, data_format="NHWC")


def test_too_small_input_is_a_shape_error():
    from kconvert.errors import ShapeError

    with pytest.raises(ShapeError, match="<= 0"):
        kl.Conv2D(4, 5)(kl.Input(batch_shape=(None, 4, 9, 3)))


def test_conv3d_transpose_dilation_follows_the_keras_version():
    """tf_keras ignores Conv3DTranspose's dilation_rate; under the Keras 3 dialect it is applied."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 2)).astype("float32")
    k2 = kl.Conv3DTranspose(3, 2, dilation_rate=2, use_bias=False)
    with kl.keras_dialect(3):
        k3 = kl.Conv3DTranspose(3, 2, dilation_rate=2, use_bias=False)
    assert k2(x).shape == (2, 4, 5, 6, 3)
    assert k3(x).shape == (2, 5, 6, 7, 3)
    assert "dilation_rate" not in k2.get_config()  # as tf_keras
    assert k3.get_config()["dilation_rate"] == [2, 2, 2]


@pytest.mark.parametrize("kwargs", [{"dilation_rate": 2}, {"dilation_rate": (1, 2, 2), "padding": "same"},
                                    {"strides": (2, 3, 1), "padding": "same", "output_padding": (1, 0, 0)}])
def test_conv3d_transpose_matches_keras3_under_its_dialect(kwargs, rng):
    """Keras 3 applies Conv3DTranspose's dilation. TensorFlow's CPU kernel (without oneDNN) has no dilated
    transposed convolution, so Keras 3 computes the equivalent undilated layer whose kernel has zeros
    between the taps."""
    keras = importlib.import_module("keras")
    assert int(keras.__version__.split(".")[0]) >= 3, "the test extra installs Keras 3"
    x = rng.standard_normal((2, 3, 4, 5, 2)).astype("float32")
    ksize = (3, 2, 3) if "dilation_rate" in kwargs else (3, 3, 3)
    with kl.keras_dialect(3):
        ours = kl.Conv3DTranspose(3, ksize, **kwargs)
    ours(x)
    weights = _random_weights([w.shape for w in ours.weights], rng)
    ours.set_weights(weights)

    d = ours.dilation_rate
    eff = tuple(dd * (k - 1) + 1 for k, dd in zip(ksize, d))
    spread = np.zeros((*eff, *weights[0].shape[3:]), dtype="float32")
    spread[::d[0], ::d[1], ::d[2]] = weights[0]
    ref_layer = keras.layers.Conv3DTranspose(3, eff, **{**kwargs, "dilation_rate": 1})
    ref_layer.build(x.shape)
    ref_layer.set_weights([spread, weights[1]])
    assert_close(ours(x), np.asarray(ref_layer(x)))


KERAS3_CASES = [
    ("Conv1D", (4, 3), {"padding": "causal", "dilation_rate": 2}, (2, 9, 5)),
    ("Conv2D", (4, 3), {"strides": 2, "padding": "same", "groups": 2}, (2, 9, 8, 6)),
    ("Conv3D", (4, 2), {"padding": "same", "strides": (1, 2, 1)}, (2, 5, 4, 3, 2)),
    ("Conv1DTranspose", (4, 3), {"strides": 2, "padding": "same"}, (2, 7, 5)),
    ("Conv2DTranspose", (4, 3), {"strides": 2, "output_padding": 1}, (2, 5, 7, 3)),
    ("SeparableConv1D", (4, 3), {"depth_multiplier": 2, "padding": "same", "strides": 2}, (2, 9, 5)),
    ("SeparableConv2D", (4, 3), {"depth_multiplier": 2, "padding": "same", "strides": 2}, (2, 9, 8, 5)),
    ("DepthwiseConv1D", (3,), {"depth_multiplier": 2, "padding": "same"}, (2, 9, 5)),
    ("DepthwiseConv2D", (3,), {"depth_multiplier": 2, "padding": "same", "strides": 2}, (2, 9, 8, 5)),
]


@pytest.mark.parametrize("case", KERAS3_CASES, ids=_case_id)
def test_keras3_configs_load_and_compute_the_same(case, rng):
    """A Keras 3 config (dtype policy objects, initializer axes, no `groups` on transposes) deserializes."""
    keras = importlib.import_module("keras")
    assert int(keras.__version__.split(".")[0]) >= 3, "the test extra installs Keras 3"
    name, args, kwargs, shape = case
    x = rng.standard_normal(shape).astype("float32")
    ref_layer = getattr(keras.layers, name)(*args, **kwargs)
    ref_layer.build(shape)
    weights = _random_weights([tuple(w.shape) for w in ref_layer.get_weights()], rng)
    ref_layer.set_weights(weights)
    with kl.keras_dialect(3):
        ours = kl.deserialize({"class_name": name, "config": _json(ref_layer.get_config())})
    ours(x)
    ours.set_weights(weights)
    assert_close(ours(x), np.asarray(ref_layer(x)))
