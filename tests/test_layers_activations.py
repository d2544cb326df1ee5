"""Activation layers (ReLU, LeakyReLU, PReLU, ELU, ThresholdedReLU, Softmax) against tf_keras."""

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import compare_layer, compare_unbuilt_config

import kconvert.layers
from kconvert.layers import activation_layers as A


def _inputs(rng, shape=(3, 5, 7, 4)):
    """Normal values plus the exact points where these layers switch branch (0, 0.5, 1, 6, ...)."""
    x = rng.normal(0.0, 3.0, shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:10] = [0.0, 0.5, 1.0, 6.0, -0.5, 0.25, 2.0, -6.0, 0.3, 7.5]
    return x


RELU_CASES = [
    {},
    {"max_value": 6.0},
    {"max_value": 2.5},
    {"negative_slope": 0.1},
    {"threshold": 0.5},
    {"threshold": 1.0, "negative_slope": 0.2},
    {"max_value": 4, "negative_slope": 0.3},
    {"max_value": 6.1, "negative_slope": 0.05, "threshold": 0.25},
    {"max_value": 0.4, "threshold": 1.0},            # cap below the threshold
]


@pytest.mark.parametrize("kwargs", RELU_CASES)
def test_relu(tfk, rng, kwargs):
    compare_layer(tfk.layers.ReLU(name="r", **kwargs), _inputs(rng))
    compare_unbuilt_config(tfk.layers.ReLU(name="r0", **kwargs), A.ReLU(name="r0", **kwargs))


def test_relu_rejects_negative_arguments():
    for kwargs in ({"max_value": -1}, {"negative_slope": -0.1}, {"threshold": -1}):
        with pytest.raises(kconvert.errors.ConfigError):
            A.ReLU(**kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 0.1}, {"alpha": 0.0}, {"alpha": 1.7}])
def test_leaky_relu(tfk, rng, kwargs):
    compare_layer(tfk.layers.LeakyReLU(name="l", **kwargs), _inputs(rng, (4, 9)))
    compare_unbuilt_config(tfk.layers.LeakyReLU(name="l0", **kwargs), A.LeakyReLU(name="l0", **kwargs))


def test_leaky_relu_default_and_keras3_argument():
    assert A.LeakyReLU().get_config()["alpha"] == pytest.approx(0.3)
    assert A.LeakyReLU(negative_slope=0.2).get_config()["alpha"] == pytest.approx(0.2)


PRELU_CASES = [
    ({}, (3, 5, 7, 4)),
    ({"shared_axes": [1, 2]}, (3, 5, 7, 4)),
    ({"shared_axes": 1}, (3, 6, 5)),
    ({"shared_axes": (2, 3)}, (2, 4, 5, 7)),         # channels_first feature maps
    ({"alpha_initializer": "ones", "alpha_regularizer": "l2", "alpha_constraint": "non_neg"}, (4, 6)),
]


@pytest.mark.parametrize("kwargs,shape", PRELU_CASES)
def test_prelu(tfk, rng, kwargs, shape):
    ours, _, _ = compare_layer(tfk.layers.PReLU(name="p", **kwargs), _inputs(rng, shape), rng)
    expected = [1 if i + 1 in (ours.shared_axes or []) else d for i, d in enumerate(shape[1:])]
    assert list(ours.alpha.shape) == expected
    compare_unbuilt_config(tfk.layers.PReLU(name="p0", **kwargs), A.PReLU(name="p0", **kwargs))


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 0.5}, {"alpha": 2.3}])
def test_elu(tfk, rng, kwargs):
    compare_layer(tfk.layers.ELU(name="e", **kwargs), _inputs(rng, (3, 5, 6)))
    compare_unbuilt_config(tfk.layers.ELU(name="e0", **kwargs), A.ELU(name="e0", **kwargs))


@pytest.mark.parametrize("kwargs", [{}, {"theta": 0.3}, {"theta": 0.0}, {"theta": 2.0}])
def test_thresholded_relu(tfk, rng, kwargs):
    compare_layer(tfk.layers.ThresholdedReLU(name="t", **kwargs), _inputs(rng, (3, 5, 6)))
    compare_unbuilt_config(tfk.layers.ThresholdedReLU(name="t0", **kwargs), A.ThresholdedReLU(name="t0", **kwargs))


@pytest.mark.parametrize("axis,shape", [(-1, (3, 5, 7, 4)), (1, (3, 5, 7, 4)), (2, (3, 5, 7)), ([1, 2], (3, 5, 7, 4)),
                                        ([-1], (3, 5, 4)), ((1, 3), (2, 3, 5, 4)), (-1, (4, 9))])
def test_softmax(tfk, rng, axis, shape):
    compare_layer(tfk.layers.Softmax(axis=axis, name="s"), _inputs(rng, shape))
    compare_unbuilt_config(tfk.layers.Softmax(axis=axis, name="s0"), A.Softmax(axis=axis, name="s0"))


@pytest.mark.parametrize("robust", [False, True])
def test_softmax_with_mask(tfk, rng, robust):
    x = _inputs(rng, (3, 4, 6))
    mask = rng.random((3, 4, 6)) > 0.3
    mask[..., 0] = True
    import tensorflow as tf

    ref = tfk.layers.Softmax(robust_masking=robust)(x, mask=tf.constant(mask)).numpy()
    ours = A.Softmax(robust_masking=robust)(x, mask=mask)
    assert_close(ours, ref)
    compare_unbuilt_config(tfk.layers.Softmax(robust_masking=robust, name="s"),
                           A.Softmax(robust_masking=robust, name="s"))


@pytest.mark.parametrize("cls", ["ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax"])
def test_activation_layers_support_masking(cls):
    layer = getattr(A, cls)()
    m = np.array([[True, False, True]])
    assert layer.compute_mask(np.zeros((1, 3, 2), np.float32), m) is m
