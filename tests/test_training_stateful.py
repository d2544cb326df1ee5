"""Stateful RNNs in training: the states carry across batches (and epochs) of fit(shuffle=False), reset_states()
clears them, and a callback may reset them between epochs — History, weights and states as in real tf_keras."""

import numpy as np
import pytest
from conftest import assert_close

import kconvert

B, T, F = 3, 5, 4  # a fixed batch_input_shape: batch 3, 5 steps, 4 features
N = 4 * B  # four batches an epoch


def _models(tfk, rng, layers):
    """The same stateful model in tf_keras and kconvert (read from tf_keras's JSON), with the same weights.

    tf_keras runs eagerly below: the same numbers, without graph tracing that would dominate the test's time."""
    ref = tfk.Sequential(layers)
    weights = [(rng.standard_normal(w.shape) * 0.4).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    ours = kconvert.models.model_from_json(ref.to_json())
    ours.set_weights(weights)
    return ref, ours


def _data(rng):
    x = rng.standard_normal((N, T, F)).astype(np.float32)
    y = np.tanh(x.sum(axis=1)[:, :2] * 0.5).astype(np.float32)
    return x, y


def _states(model):
    return [np.asarray(s) for layer in model.layers if getattr(layer, "stateful", False) for s in layer.states]


def _assert_same(ref, ours, h_ref, h_ours):
    assert sorted(h_ref.history) == sorted(h_ours.history)
    for key in h_ref.history:
        assert_close(h_ours.history[key], h_ref.history[key], what=key)
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        assert_close(a, b, what="weights")
    ref_states = [s.numpy() for layer in ref.layers if getattr(layer, "stateful", False) for s in layer.states]
    for a, b in zip(_states(ours), ref_states):
        assert_close(a, b, what="states")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_states_carry_across_batches_and_a_callback_resets_them_each_epoch(tfk, rng, kind):
    ref, ours = _models(tfk, rng, [getattr(tfk.layers, kind)(6, stateful=True, batch_input_shape=(B, T, F)),
                                   tfk.layers.Dense(2)])
    x, y = _data(rng)
    ref.compile(tfk.optimizers.SGD(0.1, momentum=0.5), "mse", metrics=["mae"], run_eagerly=True)
    ours.compile(kconvert.optimizers.SGD(0.1, momentum=0.5), "mse", metrics=["mae"])
    resets = []

    class Reset(kconvert.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            assert any(np.any(s) for s in _states(self.model))  # the last batch left states behind
            self.model.reset_states()
            resets.append(epoch)

    reset_ref = tfk.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ref.reset_states())
    h_ref = ref.fit(x, y, batch_size=B, epochs=3, shuffle=False, verbose=0, callbacks=[reset_ref])
    h_ours = ours.fit(x, y, batch_size=B, epochs=3, shuffle=False, verbose=0, callbacks=[Reset()])
    assert resets == [0, 1, 2]
    assert all(not np.any(s) for s in _states(ours))
    _assert_same(ref, ours, h_ref, h_ours)


def test_states_carry_across_epochs_without_a_reset_and_reset_states_clears_them(tfk, rng):
    layers = [tfk.layers.LSTM(6, stateful=True, return_sequences=True, batch_input_shape=(B, T, F)),
              tfk.layers.GRU(5, stateful=True), tfk.layers.Dense(2)]
    ref, ours = _models(tfk, rng, layers)
    x, y = _data(rng)
    ref.compile(tfk.optimizers.Adam(0.01), "mse", run_eagerly=True)
    ours.compile(kconvert.optimizers.Adam(0.01), "mse")
    h_ref = ref.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    h_ours = ours.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    _assert_same(ref, ours, h_ref, h_ours)
    assert all(np.any(s) for s in _states(ours))
    assert_close(ours.evaluate(x, y, batch_size=B, verbose=0), ref.evaluate(x, y, batch_size=B, verbose=0))
    ref.reset_states()
    ours.reset_states()
    assert all(not np.any(s) for s in _states(ours))
    assert_close(ours.predict(x[:B], batch_size=B, verbose=0), ref.predict(x[:B], batch_size=B, verbose=0))

    # the carried states matter: a non-stateful twin with the same weights trains to other numbers
    config = ours.get_config()
    for layer in config["layers"]:
        layer["config"].pop("stateful", None)
    twin = kconvert.models.Sequential.from_config(config)
    twin.set_weights(ref.get_weights())
    twin.compile(kconvert.optimizers.Adam(0.01), "mse")
    first = twin.train_on_batch(x[:B], y[:B])
    ours.compile(kconvert.optimizers.Adam(0.01), "mse")
    ours.reset_states()  # the predict above carried states on
    assert ours.train_on_batch(x[:B], y[:B]) == first  # from zero states: the same first step
    assert twin.train_on_batch(x[B:2 * B], y[B:2 * B]) != ours.train_on_batch(x[B:2 * B], y[B:2 * B])


def test_train_on_batch_carries_states_as_tf_keras(tfk, rng):
    ref, ours = _models(tfk, rng, [tfk.layers.SimpleRNN(4, stateful=True, batch_input_shape=(B, T, F)),
                                   tfk.layers.Dense(2)])
    x, y = _data(rng)
    ref.compile(tfk.optimizers.RMSprop(0.01), "mse", run_eagerly=True)
    ours.compile(kconvert.optimizers.RMSprop(0.01), "mse")
    for i in range(N // B):
        batch = slice(i * B, (i + 1) * B)
        assert_close(ours.train_on_batch(x[batch], y[batch]), ref.train_on_batch(x[batch], y[batch]))
    for a, b in zip(_states(ours), [s.numpy() for s in ref.layers[0].states]):
        assert_close(a, b, what="states")
