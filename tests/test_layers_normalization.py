"""BatchNormalization and LayerNormalization against tf_keras (Keras 2)."""

import importlib

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import compare_layer, compare_unbuilt_config, json_round_trip

import kconvert.layers
from kconvert.layers.normalization import BatchNormalization, LayerNormalization

BN_CASES = [
    ({}, (3, 5, 7, 4)),                                  # NHWC, axis -1 (fused path in tf_keras)
    ({"axis": 1}, (3, 4, 5, 7)),                         # channels_first
    ({"axis": 3}, (2, 5, 7, 4)),
    ({"axis": [1, 2]}, (3, 5, 7, 4)),                    # several axes: full-rank parameters
    ({"axis": (-1, 1)}, (2, 5, 3, 4)),
    ({}, (4, 6)),                                        # Dense-style 2-D input
    ({"axis": 1}, (3, 6, 5)),                            # 3-D, channels first
    ({}, (2, 3, 5, 7, 4)),                               # 5-D
    ({"axis": 1}, (2, 4, 3, 5, 7)),
    ({"center": False}, (3, 5, 7, 4)),
    ({"scale": False}, (3, 5, 7, 4)),
    ({"center": False, "scale": False}, (3, 5, 6)),
    ({"epsilon": 1e-5, "momentum": 0.9}, (3, 5, 7, 4)),
    ({"epsilon": 0.25}, (3, 6)),
    ({"beta_initializer": "ones", "gamma_initializer": "he_normal",
      "gamma_regularizer": "l2", "beta_constraint": "non_neg"}, (2, 5)),
    ({"renorm": True, "renorm_clipping": {"rmax": 3.0}}, (3, 5, 4)),
]


@pytest.mark.parametrize("kwargs,shape", BN_CASES)
def test_batch_normalization_inference(tfk, rng, kwargs, shape):
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    compare_layer(tfk.layers.BatchNormalization(name="bn", **kwargs), x, rng)
    compare_unbuilt_config(tfk.layers.BatchNormalization(name="bn0", **kwargs),
                           BatchNormalization(name="bn0", **kwargs))


@pytest.mark.parametrize("kwargs,shape", [({}, (6, 5, 7, 4)), ({"axis": 1}, (5, 4, 3, 7)), ({}, (8, 5)),
                                          ({"axis": [1, 2], "momentum": 0.5}, (4, 5, 3, 2)),
                                          ({"center": False, "scale": False}, (5, 3))])
def test_batch_normalization_training(tfk, rng, kwargs, shape):
    """training=True normalizes with the batch statistics and moves the moving statistics like tf_keras."""
    x = rng.normal(1.0, 3.0, shape).astype(np.float32)
    ours, _, _ = compare_layer(tfk.layers.BatchNormalization(name="bn", **kwargs), x, rng,
                               call_kwargs={"training": True})


def test_batch_normalization_training_updates_moving_stats(tfk, rng):
    x = rng.normal(1.0, 3.0, (6, 5, 7, 4)).astype(np.float32)
    tf_bn = tfk.layers.BatchNormalization(momentum=0.8, name="bn")
    ours, _, _ = compare_layer(tf_bn, x, rng, call_kwargs={"training": True})
    x2 = rng.normal(-1.0, 0.5, x.shape).astype(np.float32)
    assert_close(ours(x2, training=True), tf_bn(x2, training=True).numpy())
    for a, b in zip(ours.get_weights(), tf_bn.get_weights()):
        assert_close(a, b)
    assert_close(ours(x2), tf_bn(x2, training=False).numpy())


def test_batch_normalization_frozen_runs_in_inference_mode(tfk, rng):
    x = rng.normal(1.0, 3.0, (4, 5, 3)).astype(np.float32)
    tf_bn = tfk.layers.BatchNormalization(name="bn", trainable=False)
    ours, _, _ = compare_layer(tf_bn, x, rng, call_kwargs={"training": True})
    assert [w.name for w in ours.non_trainable_weights] == [w.name for w in tf_bn.non_trainable_weights]
    assert ours.trainable_weights == []


def test_batch_normalization_virtual_batch_size(tfk, rng):
    # tf_keras's built config names the axes shifted for its ghost-batch reshape, so it cannot be rebuilt
    # (in tf_keras either): the twin is made from the unbuilt config
    x = rng.normal(0.5, 2.0, (4, 5, 3)).astype(np.float32)
    compare_layer(tfk.layers.BatchNormalization(name="bn", virtual_batch_size=2), x, rng, from_unbuilt=True)


def test_batch_normalization_weight_layout(tfk):
    bn = BatchNormalization(name="bn", center=False)
    bn._maybe_build((None, 5, 7, 4))
    assert [w.name for w in bn.weights] == ["bn/gamma:0", "bn/moving_mean:0", "bn/moving_variance:0"]
    assert [w.trainable for w in bn.weights] == [True, False, False]
    assert bn.get_config()["axis"] == [3]
    bn2 = BatchNormalization(axis=[1, 2])
    bn2._maybe_build((None, 5, 7, 4))
    assert bn2.weights[0].shape == (1, 5, 7, 1)


def test_batch_normalization_errors():
    with pytest.raises(kconvert.errors.ConfigError):
        BatchNormalization(axis="channels")
    bn = BatchNormalization(axis=4)
    with pytest.raises(kconvert.errors.ShapeError):
        bn(np.zeros((2, 3, 4), np.float32))


LN_CASES = [
    ({}, (3, 5, 7, 4)),
    ({"axis": [1, 2]}, (3, 5, 7, 4)),
    ({"axis": [-2, -1]}, (2, 5, 7, 4)),
    ({"axis": [1, 2, 3]}, (2, 5, 3, 4)),
    ({"axis": 1}, (3, 6, 5)),
    ({"axis": [2, 1]}, (3, 6, 5)),                        # tf_keras reshapes (does not transpose) gamma
    ({}, (4, 9)),
    ({"center": False}, (3, 5, 4)),
    ({"scale": False}, (3, 5, 4)),
    ({"center": False, "scale": False, "epsilon": 1e-6}, (3, 5, 4)),
    ({"epsilon": 0.3}, (3, 7)),
]


@pytest.mark.parametrize("kwargs,shape", LN_CASES)
def test_layer_normalization(tfk, rng, kwargs, shape):
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    compare_layer(tfk.layers.LayerNormalization(name="ln", **kwargs), x, rng)
    compare_unbuilt_config(tfk.layers.LayerNormalization(name="ln0", **kwargs),
                           LayerNormalization(name="ln0", **kwargs))


@pytest.mark.filterwarnings("ignore:.*rms_scaling")
def test_layer_normalization_rms_scaling_matches_keras3(rng):
    keras = importlib.import_module("keras")
    x = rng.normal(0.5, 2.0, (3, 5, 4)).astype(np.float32)
    k3 = keras.layers.LayerNormalization(rms_scaling=True, epsilon=1e-3)
    k3.build(x.shape)
    gamma = rng.normal(size=(4,)).astype(np.float32)
    k3.set_weights([gamma])
    ours = LayerNormalization(rms_scaling=True, epsilon=1e-3)
    ours._maybe_build((None, 5, 4))
    ours.set_weights([gamma])
    assert_close(ours(x), np.asarray(k3(x)))
    assert json_round_trip(ours.get_config())["rms_scaling"] is True
