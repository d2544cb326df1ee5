"""Gradients of whole layers through the tape: every layer family against central finite differences in float64
(inputs and trainable weights), training-mode behaviour (Dropout family, BatchNormalization's batch statistics and
moving-average update, RNN masking and backprop through time), and `gradients(model, ...)` against real tf_keras's
tf.GradientTape for a small CNN and a small masked recurrent model with the same weights."""

import json

import numpy as np
import pytest
from conftest import assert_close

import kconvert
import kconvert.layers as L
from kconvert import backend as K
from kconvert import ops
from kconvert.runtime.autodiff import GradientTape, gradients
from kconvert.runtime.gradcheck import check_layer_gradients

F = "float64"
R = np.random.default_rng(11)


def rand(*shape):
    return R.uniform(-1.5, 1.5, shape)


MASK = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)

# (id, layer factory, inputs, call kwargs)
LAYER_CASES = [
    ("dense", lambda: L.Dense(4, activation="tanh", dtype=F), rand(2, 3, 5), {}),
    ("conv1d_strides_not_dividing", lambda: L.Conv1D(4, 3, strides=2, padding="same", dtype=F), rand(2, 10, 3), {}),
    ("conv1d_causal_dilation", lambda: L.Conv1D(4, 3, dilation_rate=2, padding="causal", dtype=F), rand(2, 9, 3), {}),
    ("conv2d_strides_same_relu", lambda: L.Conv2D(4, (3, 2), strides=(2, 3), padding="same", activation="relu",
                                                  dtype=F), rand(2, 7, 8, 3), {}),
    ("conv2d_dilation", lambda: L.Conv2D(4, 3, dilation_rate=(2, 1), dtype=F), rand(2, 7, 6, 3), {}),
    ("conv2d_channels_first", lambda: L.Conv2D(3, 2, strides=2, data_format="channels_first", dtype=F),
     rand(2, 3, 7, 6), {}),
    ("conv3d", lambda: L.Conv3D(3, 2, strides=(1, 2, 2), padding="same", dtype=F), rand(2, 4, 5, 3, 2), {}),
    ("depthwise_conv2d", lambda: L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same", dtype=F),
     rand(2, 7, 6, 3), {}),
    ("separable_conv2d", lambda: L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, dtype=F),
     rand(2, 7, 6, 3), {}),
    ("conv2d_transpose", lambda: L.Conv2DTranspose(4, 3, strides=2, padding="same", dtype=F), rand(2, 4, 3, 3), {}),
    ("conv2d_transpose_valid_output_padding", lambda: L.Conv2DTranspose(2, (3, 2), strides=(2, 3),
                                                                        output_padding=(1, 0), dtype=F),
     rand(2, 3, 4, 3), {}),
    ("max_pooling1d", lambda: L.MaxPooling1D(3, strides=2, dtype=F), rand(2, 9, 3), {}),
    ("max_pooling2d_same", lambda: L.MaxPooling2D((2, 3), strides=2, padding="same", dtype=F), rand(2, 7, 8, 3), {}),
    ("max_pooling3d", lambda: L.MaxPooling3D(2, dtype=F), rand(2, 4, 5, 3, 2), {}),
    ("average_pooling2d_same", lambda: L.AveragePooling2D(3, strides=2, padding="same", dtype=F),
     rand(2, 7, 8, 3), {}),
    ("average_pooling1d", lambda: L.AveragePooling1D(2, dtype=F), rand(2, 9, 3), {}),
    ("global_average_pooling2d", lambda: L.GlobalAveragePooling2D(dtype=F), rand(2, 5, 3, 4), {}),
    ("global_average_pooling1d_masked", lambda: L.GlobalAveragePooling1D(dtype=F), rand(3, 5, 4), {"mask": MASK}),
    ("global_max_pooling1d", lambda: L.GlobalMaxPooling1D(dtype=F), rand(2, 5, 4), {}),
    ("batch_normalization_training", lambda: L.BatchNormalization(dtype=F), rand(4, 3, 5), {"training": True}),
    ("batch_normalization_training_axis1", lambda: L.BatchNormalization(axis=1, dtype=F), rand(3, 4, 5, 2),
     {"training": True}),
    ("batch_normalization_inference", lambda: L.BatchNormalization(dtype=F), rand(4, 3, 5), {}),
    ("layer_normalization", lambda: L.LayerNormalization(dtype=F), rand(2, 3, 5), {}),
    ("layer_normalization_axes", lambda: L.LayerNormalization(axis=(1, 2), dtype=F), rand(2, 3, 5), {}),
    ("embedding", lambda: L.Embedding(7, 4, dtype=F), np.array([[1, 3, 6], [0, 3, 3]]), {}),
    ("simple_rnn_sequences", lambda: L.SimpleRNN(4, return_sequences=True, dtype=F), rand(3, 5, 3), {}),
    ("simple_rnn_masked", lambda: L.SimpleRNN(4, dtype=F), rand(3, 5, 3), {"mask": MASK}),
    ("lstm", lambda: L.LSTM(4, dtype=F), rand(3, 5, 3), {}),
    ("lstm_masked_sequences", lambda: L.LSTM(4, return_sequences=True, dtype=F), rand(3, 5, 3), {"mask": MASK}),
    ("lstm_backwards_state", lambda: L.LSTM(3, go_backwards=True, return_state=True, dtype=F), rand(3, 5, 3), {}),
    ("gru", lambda: L.GRU(4, return_sequences=True, dtype=F), rand(3, 5, 3), {}),
    ("gru_reset_before_masked", lambda: L.GRU(4, reset_after=False, dtype=F), rand(3, 5, 3), {"mask": MASK}),
    ("bidirectional_lstm", lambda: L.Bidirectional(L.LSTM(3, return_sequences=True, dtype=F), dtype=F),
     rand(3, 5, 3), {}),
    ("bidirectional_gru_masked_sum", lambda: L.Bidirectional(L.GRU(3, dtype=F), merge_mode="sum", dtype=F),
     rand(3, 5, 3), {"mask": MASK}),
    ("concatenate", lambda: L.Concatenate(dtype=F), [rand(2, 3), rand(2, 4)], {}),
    ("add", lambda: L.Add(dtype=F), [rand(2, 3), rand(2, 3), rand(2, 3)], {}),
    ("multiply", lambda: L.Multiply(dtype=F), [rand(2, 3), rand(2, 3)], {}),
    ("reshape", lambda: L.Reshape((3, 5), dtype=F), rand(2, 5, 3), {}),
    ("flatten", lambda: L.Flatten(dtype=F), rand(2, 5, 3), {}),
    ("permute", lambda: L.Permute((2, 1), dtype=F), rand(2, 5, 3), {}),
    ("activation_relu", lambda: L.Activation("relu", dtype=F), rand(2, 5, 3), {}),
    ("activation_softmax", lambda: L.Activation("softmax", dtype=F), rand(2, 5, 3), {}),
    ("activation_gelu", lambda: L.Activation("gelu", dtype=F), rand(2, 5, 3), {}),
    ("activation_swish", lambda: L.Activation("swish", dtype=F), rand(2, 5, 3), {}),
    ("activation_elu_selu_sigmoid", lambda: L.Activation("selu", dtype=F), rand(2, 5, 3), {}),
    ("leaky_relu", lambda: L.LeakyReLU(0.2, dtype=F), rand(2, 5, 3), {}),
    ("prelu", lambda: L.PReLU(dtype=F), rand(2, 5, 3), {}),
    ("attention", lambda: L.Attention(dtype=F), [rand(2, 3, 4), rand(2, 5, 4)], {}),
    ("attention_scaled_causal", lambda: L.Attention(use_scale=True, dtype=F), [rand(2, 5, 4), rand(2, 5, 4)],
     {"use_causal_mask": True}),
    ("multi_head_attention", lambda: L.MultiHeadAttention(2, 3, dtype=F), [rand(2, 3, 4), rand(2, 5, 4)], {}),
    ("additive_attention", lambda: L.AdditiveAttention(dtype=F), [rand(2, 3, 4), rand(2, 5, 4)], {}),
    ("einsum_dense", lambda: L.EinsumDense("abc,cd->abd", (None, 5), bias_axes="d", dtype=F), rand(2, 3, 4), {}),
    ("zero_padding_cropping", lambda: L.ZeroPadding2D(((1, 2), (0, 1)), dtype=F), rand(2, 3, 4, 2), {}),
    ("cropping2d", lambda: L.Cropping2D(((1, 0), (0, 1)), dtype=F), rand(2, 3, 4, 2), {}),
    ("upsampling2d_bilinear", lambda: L.UpSampling2D((2, 3), interpolation="bilinear", dtype=F), rand(2, 3, 4, 2),
     {}),
    ("repeat_vector", lambda: L.RepeatVector(3, dtype=F), rand(2, 4), {}),
    ("dot_normalized", lambda: L.Dot(axes=1, normalize=True, dtype=F), [rand(2, 4), rand(2, 4)], {}),
    ("group_normalization", lambda: L.GroupNormalization(2, dtype=F), rand(2, 3, 4), {}),
    ("locally_connected1d", lambda: L.LocallyConnected1D(3, 2, dtype=F), rand(2, 5, 3), {}),
    ("conv_lstm1d", lambda: L.ConvLSTM1D(2, 3, return_sequences=True, dtype=F), rand(2, 3, 6, 2), {}),
    ("time_distributed_conv", lambda: L.TimeDistributed(L.Conv2D(2, 2, dtype=F), dtype=F), rand(2, 3, 4, 5, 2),
     {}),
    ("lambda_with_backend", lambda: L.Lambda(lambda x: K.sum(K.square(x), axis=-1, keepdims=True) * K.sigmoid(x),
                                             dtype=F), rand(2, 3, 4), {}),
]


def _reset_rng(layer):
    if not hasattr(layer, "_rng"):
        return None

    def reset():
        layer._rng = np.random.default_rng(5)
    return reset


@pytest.mark.parametrize("make,inputs,kwargs", [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_layer_gradients_match_finite_differences(make, inputs, kwargs):
    layer = make()
    grads = check_layer_gradients(layer, inputs, **kwargs)
    n_float = sum(np.asarray(x).dtype.kind == "f" for x in (inputs if isinstance(inputs, list) else [inputs]))
    assert len(grads) == n_float + len(layer.trainable_weights)
    assert all(g is not None and np.any(g) for g in grads[n_float:])  # every trainable weight gets a gradient


class ScaledGate(L.Layer):
    """A user's custom layer written with numpy, kconvert.ops and the K backend, with no backward code."""

    def build(self, input_shape):
        self.w = self.add_weight("w", (input_shape[-1], input_shape[-1]), "glorot_uniform")
        self.s = self.add_weight("s", (input_shape[-1],), "ones")

    def call(self, inputs):
        x = np.asarray(inputs)
        gate = ops.sigmoid(K.dot(x, self.w.value))
        return np.tanh(x * gate) * self.s.value + K.mean(x, axis=1, keepdims=True)


def test_custom_layer_written_with_numpy_ops_and_backend_gets_gradients():
    layer = ScaledGate(dtype=F)
    grads = check_layer_gradients(layer, rand(2, 3, 5))
    assert len(grads) == 3 and all(np.any(g) for g in grads)


def test_masked_steps_get_no_gradient_and_states_carry_through_time():
    x = rand(3, 5, 3)
    layer = L.LSTM(4, return_sequences=True, dtype=F)
    layer(x)
    with GradientTape() as tape:
        v = tape.watch(x)
        y = layer(v, mask=MASK)
        loss = np.sum(y[:, -1] ** 2)  # only the last output: earlier steps reach it through the recurrence only
    g = tape.gradient(loss, v)
    assert np.all(g[~MASK] == 0)
    assert np.all(np.abs(g[MASK]).sum(axis=-1) > 0)


# ---------------------------------------------------------------------------------------------- training mode

NOISE_CASES = [
    ("dropout", lambda: L.Dropout(0.4, seed=1, dtype=F), rand(3, 5, 4)),
    ("dropout_noise_shape", lambda: L.Dropout(0.4, noise_shape=(None, 1, 4), seed=1, dtype=F), rand(3, 5, 4)),
    ("spatial_dropout1d", lambda: L.SpatialDropout1D(0.4, seed=1, dtype=F), rand(3, 5, 4)),
    ("spatial_dropout2d", lambda: L.SpatialDropout2D(0.4, seed=1, dtype=F), rand(3, 5, 4, 6)),
    ("gaussian_noise", lambda: L.GaussianNoise(0.3, seed=1, dtype=F), rand(3, 5, 4)),
    ("gaussian_dropout", lambda: L.GaussianDropout(0.3, seed=1, dtype=F), rand(3, 5, 4)),
    ("alpha_dropout", lambda: L.AlphaDropout(0.3, seed=1, dtype=F), rand(3, 5, 4)),
]


@pytest.mark.parametrize("make,x", [c[1:] for c in NOISE_CASES], ids=[c[0] for c in NOISE_CASES])
def test_noise_layers_train_with_their_random_masks(make, x):
    layer = make()
    reset = _reset_rng(layer)
    (gx,) = check_layer_gradients(layer, x, before_call=reset, training=True)
    reset()
    y = layer(x, training=True)
    assert not np.allclose(y, x)  # the noise is applied in training
    np.testing.assert_array_equal(layer(x), x)  # and not at inference
    if "Dropout" in type(layer).__name__ and "Alpha" not in type(layer).__name__ and "Gaussian" not in \
            type(layer).__name__:
        dropped = y == 0
        assert 0.2 < dropped.mean() < 0.6
        np.testing.assert_array_equal(gx == 0, dropped)
        np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.6)


def test_spatial_dropout_drops_whole_channels():
    layer = L.SpatialDropout2D(0.5, seed=3, dtype=F)
    x = rand(4, 5, 3, 6) + 3.0
    y = layer(x, training=True)
    dropped = y == 0
    assert np.array_equal(dropped, np.broadcast_to(dropped[:, :1, :1], dropped.shape))
    assert 0 < dropped.mean() < 1


@pytest.mark.parametrize("shape", [(6, 5, 3, 4), (7, 4)], ids=["fused_4d", "dense_2d"])
def test_batch_normalization_training_matches_tf_keras(tfk, shape):
    """Batch statistics in the gradient, and the moving mean/variance moved with `momentum` as Keras moves them
    (tf_keras's fused 4-D kernel uses the unbiased batch variance for the moving variance, the 2-D path the biased)."""
    import tensorflow as tf

    x = (R.standard_normal(shape) * 2 + 1).astype(np.float32)
    ref = tfk.layers.BatchNormalization(momentum=0.8, epsilon=1e-3)
    ref.build(x.shape)
    ref.set_weights([R.uniform(0.5, 1.5, 4).astype(np.float32), R.normal(0, 1, 4).astype(np.float32),
                     R.normal(0, 1, 4).astype(np.float32), R.uniform(0.5, 2, 4).astype(np.float32)])
    ours = kconvert.layers.deserialize({"class_name": "BatchNormalization", "config": ref.get_config()})
    ours._maybe_build((None, *shape[1:]))
    ours.set_weights(ref.get_weights())
    w = R.standard_normal(x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        loss_ref = tf.reduce_sum(ref(x, training=True) * w)
    ref_grads = tape.gradient(loss_ref, ref.trainable_weights)
    loss, grads = gradients(ours, x, lambda y: np.sum(y * w))
    assert_close(loss, float(loss_ref), what="loss")
    for ow, r in zip(ours.trainable_weights, ref_grads):
        assert_close(grads[ow], r.numpy(), what=ow.name)
    for ow, rw in zip(ours.weights, ref.weights):
        assert type(ow.value) is np.ndarray
        assert_close(ow.value, rw.numpy(), what=ow.name)
    assert not np.allclose(ours.moving_mean.value, 0)


# ---------------------------------------------------------------------------------------------- models vs tf_keras


def _twin(tf_model, rng):
    weights = [rng.uniform(0.5, 2, w.shape).astype(np.float32) if "variance" in w.name
               else rng.normal(0, 0.5, w.shape).astype(np.float32) for w in tf_model.weights]
    tf_model.set_weights(weights)
    ours = kconvert.models.model_from_json(tf_model.to_json())
    ours.set_weights(weights)
    return ours


def _compare_with_tf_gradient_tape(tf_model, ours, x, y_true):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss_ref = tf.reduce_mean(tf.square(tf_model(x, training=True) - y_true))
    ref = tape.gradient(loss_ref, tf_model.trainable_weights)
    stamps = [w.stamp for w in ours.trainable_weights]
    loss, grads = gradients(ours, x, lambda y: np.mean(np.square(y - y_true)))
    assert_close(loss, float(loss_ref), what="loss")
    assert [w.name for w in ours.trainable_weights] == [w.name for w in tf_model.trainable_weights]
    for w, r in zip(ours.trainable_weights, ref):
        assert_close(grads[w], tf.convert_to_tensor(r).numpy(), what=w.name)
    assert [w.stamp for w in ours.trainable_weights] == stamps  # trainable weights untouched
    assert all(type(w.value) is np.ndarray for w in ours.weights)
    for w, r in zip(ours.weights, tf_model.weights):  # state updated as Keras updates it (moving statistics)
        assert_close(w.value, r.numpy(), what=w.name)


def test_cnn_gradients_equal_tf_gradient_tape(tfk):
    rng = np.random.default_rng(3)
    inp = tfk.layers.Input((9, 11, 3))
    x = tfk.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    x = tfk.layers.BatchNormalization(momentum=0.9)(x)
    x = tfk.layers.MaxPooling2D(2, padding="same")(x)
    x = tfk.layers.Conv2D(5, (2, 3), activation="tanh")(x)
    x = tfk.layers.Flatten()(x)
    out = tfk.layers.Dense(3, activation="softmax")(x)
    tf_model = tfk.Model(inp, out)
    ours = _twin(tf_model, rng)
    _compare_with_tf_gradient_tape(tf_model, ours, rng.standard_normal((4, 9, 11, 3)).astype(np.float32),
                                   rng.standard_normal((4, 3)).astype(np.float32))


def test_masked_recurrent_model_gradients_equal_tf_gradient_tape(tfk):
    rng = np.random.default_rng(4)
    inp = tfk.layers.Input((7,), dtype="int32")
    x = tfk.layers.Embedding(10, 4, mask_zero=True)(inp)
    x = tfk.layers.Bidirectional(tfk.layers.LSTM(5, return_sequences=True))(x)
    x = tfk.layers.GRU(3)(x)
    out = tfk.layers.Dense(2)(x)
    tf_model = tfk.Model(inp, out)
    ours = _twin(tf_model, rng)
    ids = np.array([[1, 2, 3, 0, 0, 0, 0], [4, 5, 6, 7, 8, 9, 1], [2, 2, 0, 0, 0, 0, 0]], np.int32)
    _compare_with_tf_gradient_tape(tf_model, ours, ids, rng.standard_normal((3, 2)).astype(np.float32))


def test_frozen_layers_get_no_gradient_and_sequential_models_work():
    model = kconvert.models.Sequential([L.Dense(4, activation="relu", input_shape=(3,)), L.Dense(2)])
    model.layers[0].trainable = False
    x = R.standard_normal((5, 3)).astype(np.float32)
    loss, grads = gradients(model, x, lambda y: np.mean(y ** 2))
    assert list(grads) == model.layers[1].trainable_weights
    assert loss == pytest.approx(float(np.mean(model.predict(x, runtime="numpy") ** 2)), rel=1e-6)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_the_model_runs_the_inference_kernels_bit_for_bit():
    model = kconvert.models.Sequential([L.Conv2D(3, 3, strides=2, activation="relu", input_shape=(9, 7, 2)),
                                        L.MaxPooling2D(), L.Flatten(), L.Dense(2, activation="softmax")])
    x = R.standard_normal((3, 9, 7, 2)).astype(np.float32)
    seen = []
    gradients(model, x, lambda y: seen.append(y.data) or np.sum(y), training=False)
    assert seen[0].dtype == np.float32 and np.array_equal(seen[0], model.predict(x, runtime="numpy"))


def test_gradients_of_a_loss_that_ignores_a_weight_are_none():
    model = kconvert.models.Sequential([L.Dense(4, input_shape=(3,)), L.Dense(2)])
    x = R.standard_normal((5, 3)).astype(np.float32)
    _, grads = gradients(model, x, lambda y: np.float32(1.0) + 0 * np.sum(np.stack([model.layers[1].bias.value])))
    assert grads[model.layers[0].kernel] is None
    assert grads[model.layers[1].bias] is not None


def test_model_config_survives_gradient_pass():
    model = kconvert.models.Sequential([L.Dense(4, input_shape=(3,)), L.BatchNormalization(), L.Dense(2)])
    before = json.loads(model.to_json())
    gradients(model, R.standard_normal((5, 3)).astype(np.float32), lambda y: np.mean(y ** 2))
    assert json.loads(model.to_json()) == before


def test_dropout_in_a_model_is_applied_only_in_training():
    model = kconvert.models.Sequential([L.Dense(6, input_shape=(4,)), L.Dropout(0.5, seed=2), L.Dense(1)])
    x = R.standard_normal((8, 4)).astype(np.float32)
    loss_infer, g_infer = gradients(model, x, lambda y: np.mean(y ** 2), training=False)
    assert loss_infer == float(np.mean(model.predict(x, runtime="numpy") ** 2))
    loss_train, g_train = gradients(model, x, lambda y: np.mean(y ** 2))
    assert loss_train != loss_infer
    kernel = model.layers[2].kernel
    assert not np.allclose(g_train[kernel], g_infer[kernel])


def test_stateful_rnn_carries_plain_states_to_the_next_batch():
    model = kconvert.models.Sequential([L.SimpleRNN(3, stateful=True, batch_input_shape=(2, 4, 2)), L.Dense(1)])
    x = R.standard_normal((2, 4, 2)).astype(np.float32)
    rnn = model.layers[0]
    gradients(model, x, lambda y: np.mean(y ** 2))
    assert all(type(s) is np.ndarray for s in rnn.states) and np.any(rnn.states[0])
    after_first = rnn.states[0].copy()
    rnn.reset_states()
    model.predict(x, runtime="numpy")
    np.testing.assert_array_equal(rnn.states[0], after_first)  # the same final states as an inference pass
