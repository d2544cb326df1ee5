"""RNN `dropout` / `recurrent_dropout` in training, with tf_keras's masks (tf_keras/src/layers/rnn: the cells'
`get_dropout_mask_for_cell`: inverted dropout, one draw per batch reused at every timestep; LSTM/GRU use one input
mask for all gates (implementation 2) unless `recurrent_dropout` is set, which switches them to implementation 1
with one input and one recurrent mask per gate). Random masks cannot be compared with TensorFlow's draws, so the
tests check the structure on cells built so that the masks show in the output, and that the gate-wise code path
computes the undropped cell exactly when every mask keeps everything."""

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert import layers

RATE = 0.4


def _is_mask(values) -> None:
    """Only 0 and 1 / (1 - rate): inverted dropout."""
    kinds = np.unique(np.round(values.astype(np.float64), 4))
    assert len(kinds) == 2 and kinds[0] == 0 and abs(kinds[1] - 1 / (1 - RATE)) < 1e-3, kinds


def _layer(cls, units, features, **kw):
    layer = cls(units, **kw)
    layer.build((None, 7, features))
    return layer


def test_input_mask_is_drawn_once_and_reused_at_every_timestep():
    """A linear SimpleRNN with kernel I and no recurrence outputs x_t * mask: the ratio to x is the same at every
    timestep, 0 or 1/(1 - rate), and zero for about `rate` of the entries."""
    n, f = 400, 5
    rnn = _layer(layers.SimpleRNN, f, f, activation="linear", use_bias=False, dropout=RATE,
                 return_sequences=True)
    rnn.set_weights([np.eye(f, dtype=np.float32), np.zeros((f, f), np.float32)])
    x = np.random.default_rng(0).uniform(0.5, 1.5, (n, 7, f)).astype(np.float32)
    y = rnn.call(x, training=True)
    ratio = y / x
    assert np.allclose(ratio, ratio[:, :1, :])  # the same mask at every timestep
    _is_mask(ratio)
    assert abs((ratio[:, 0] == 0).mean() - RATE) < 0.05
    assert_close(rnn.call(x), x)  # inference: no dropout
    assert not np.allclose(rnn.call(x, training=True), y)  # a new draw for the next batch


def test_recurrent_mask_multiplies_the_previous_state():
    """No input path, recurrent kernel I, linear: h_t = h_{t-1} * mask, so h_t / h_{t-1} is one fixed mask."""
    n, u = 300, 4
    rnn = _layer(layers.SimpleRNN, u, 3, activation="linear", use_bias=False, recurrent_dropout=RATE,
                 return_sequences=True)
    rnn.set_weights([np.zeros((3, u), np.float32), np.eye(u, dtype=np.float32)])
    x = np.ones((n, 7, 3), np.float32)
    h0 = np.random.default_rng(1).uniform(1, 2, (n, u)).astype(np.float32)
    y = rnn.call([x, h0], training=True)
    mask = y[:, 0] / h0
    _is_mask(mask)
    assert_close(y[:, 3], h0 * mask ** 4)
    assert abs((mask == 0).mean() - RATE) < 0.06


@pytest.mark.parametrize("cls, kw", [(layers.LSTM, {}), (layers.GRU, {"reset_after": True}),
                                     (layers.GRU, {"reset_after": False}), (layers.SimpleRNN, {})])
@pytest.mark.parametrize("rates", [(1e-9, 0.0), (1e-9, 1e-9), (0.0, 1e-9)])
def test_gatewise_paths_equal_the_plain_cell_when_nothing_is_dropped(cls, kw, rates, tfk):
    """With rates so small that every mask keeps everything (and scales by 1/(1 - 1e-9) = 1 in float32), the
    per-gate projections (implementation 1) and the shared-mask one give tf_keras's output for the same weights."""
    dropout, recurrent = rates
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    ours = _layer(cls, 4, 5, dropout=dropout, recurrent_dropout=recurrent, return_sequences=True, **kw)
    ref_cls = getattr(tfk.layers, cls.__name__)
    ref = ref_cls(4, return_sequences=True, **kw)
    ref.build((None, 7, 5))
    weights = [rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights)
    ref.set_weights(weights)
    assert_close(ours.call(x, training=True), ref(x).numpy())


def test_fit_with_rnn_dropout_trains(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6, 3)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None] * 0.1
    model = kconvert.Sequential([kconvert.Input((6, 3)), layers.LSTM(8, dropout=0.2, recurrent_dropout=0.2),
                                 layers.Dense(1)])
    model.compile(kconvert.optimizers.Adam(0.01), "mse")
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_recurrent_dropout_switches_to_implementation_1_as_tf_keras(tfk):
    for name in ("LSTM", "GRU"):
        ours = getattr(layers, name)(4, recurrent_dropout=0.3).get_config()
        ref = getattr(tfk.layers, name)(4, recurrent_dropout=0.3).get_config()
        assert ours["implementation"] == ref["implementation"] == 1
        assert getattr(layers, name)(4, dropout=0.3).get_config()["implementation"] == 2

