"""Crossentropy after a softmax or sigmoid output is computed from its logits, as tf_keras and Keras 3 compute it.

Both read the pre-activation tensor the activation leaves on its output (`_keras_logits`, backend `_get_logits`)
and switch to `softmax_cross_entropy_with_logits` / `sigmoid_cross_entropy_with_logits`. With weights scaled so
the outputs saturate (probabilities of 1e-30 and exactly 1.0), the clipped-probability formula gives a very
different loss and a vanishing gradient; each test checks that it would have (so it can fail) and that kconvert
follows the real framework step by step.
"""

import warnings

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert import losses

STEPS = 20


def _data(classes=5, n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 7)) * 3).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return x, labels, np.eye(classes, dtype=np.float32)[labels]


def _head(mod, kind: str, classes: int):
    """The output head: an activation inside Dense, an Activation layer, a Softmax layer."""
    L = mod.layers
    inp = mod.Input((7,))
    h = L.Dense(9, activation="tanh")(inp)
    if kind == "dense_softmax":
        out = L.Dense(classes, activation="softmax")(h)
    elif kind == "dense_sigmoid":
        out = L.Dense(classes, activation="sigmoid")(h)
    elif kind == "activation_softmax":
        out = L.Activation("softmax")(L.Dense(classes)(h))
    elif kind == "softmax_layer":
        out = L.Softmax()(L.Dense(classes)(h))
    elif kind == "softmax_then_reshape":  # the loss sees a Reshape's output: no logits, the clipped formula
        out = L.Reshape((classes,))(L.Dense(classes, activation="softmax")(h))
    return mod.Model(inp, out)


def _saturated_pair(tfk, kind: str, classes: int):
    ref = _head(tfk, kind, classes)
    rng = np.random.default_rng(3)
    weights = [rng.uniform(-3, 3, w.shape).astype(np.float32) for w in ref.get_weights()]
    weights[-2] *= 5  # logits of +-50: probabilities far below the 1e-7 clip
    ref.set_weights(weights)
    ours = _head(kconvert, kind, classes)
    ours.set_weights(weights)
    return ref, ours


def _steps(model, x, y, batch=16):
    """STEPS train_on_batch calls cycling through the batches; (loss, metrics...) per step."""
    starts = [(i * batch) % len(x) for i in range(STEPS)]
    return np.array([model.train_on_batch(x[s:s + batch], y[s:s + batch]) for s in starts])


CASES = [
    ("dense_softmax", "categorical_crossentropy", "onehot"),
    ("activation_softmax", "sparse_categorical_crossentropy", "labels"),
    ("softmax_layer", "categorical_crossentropy", "onehot"),
    ("dense_sigmoid", "binary_crossentropy", "onehot"),
    ("dense_softmax", "binary_crossentropy", "onehot"),  # tf_keras reads the softmax's logits as sigmoid logits
    ("softmax_then_reshape", "categorical_crossentropy", "onehot"),
]


@pytest.mark.parametrize("kind,loss,target", CASES)
def test_saturated_training_follows_tf_keras(tfk, kind, loss, target):
    x, labels, onehot = _data()
    y = labels if target == "labels" else onehot
    ref, ours = _saturated_pair(tfk, kind, 5)
    ref.compile(tfk.optimizers.SGD(0.02), loss, metrics=["accuracy", loss])
    ours.compile(kconvert.optimizers.SGD(0.02), loss, metrics=["accuracy", loss])
    probs = ours.predict(x[:16])
    clipped = float(np.mean(losses.get(loss)(y[:16], probs)))  # no tracking here: the probability formula
    ref_first = float(ref.evaluate(x[:16], y[:16], verbose=0)[0])
    if kind == "softmax_then_reshape":
        assert_close(np.float32(clipped), np.float32(ref_first), what="clipped formula where tf has no logits")
    else:
        assert abs(clipped - ref_first) > 0.05 * abs(ref_first), "the case does not saturate: it tests nothing"
    r, o = _steps(ref, x, y), _steps(ours, x, y)
    assert_close(o[:, 0], r[:, 0], rtol_scale=10, what="loss per step")
    assert_close(o[:, 2], r[:, 2], rtol_scale=10, what="crossentropy metric per step")
    for a, b in zip(ref.get_weights(), ours.get_weights()):
        assert_close(b, a, rtol_scale=10, what="weights after 20 steps")
    ours_eval, ref_eval = ours.evaluate(x, y, verbose=0), ref.evaluate(x, y, verbose=0)
    # loss and crossentropy; accuracy is left out: saturated outputs tie (several exactly 1.0) within float noise
    assert_close(np.array(ours_eval)[[0, 2]], np.array(ref_eval)[[0, 2]], rtol_scale=10, what="evaluate")


def test_from_logits_true_on_a_softmax_output_takes_its_logits(tfk):
    x, _, y = _data()
    ref, ours = _saturated_pair(tfk, "dense_softmax", 5)
    ref.compile(tfk.optimizers.SGD(0.02), tfk.losses.CategoricalCrossentropy(from_logits=True))
    ours.compile(kconvert.optimizers.SGD(0.02), kconvert.losses.CategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o = [ours.train_on_batch(x[i:i + 16], y[i:i + 16]) for i in range(0, 80, 16)]
    r = [ref.train_on_batch(x[i:i + 16], y[i:i + 16]) for i in range(0, 80, 16)]
    assert_close(np.array(o), np.array(r), rtol_scale=10)
    assert any("from_logits=True" in str(w.message) for w in caught)


def test_sigmoid_conv_segmentation_head(tfk):
    """A per-pixel sigmoid (Conv2D output) with binary crossentropy, the masks as (n, H, W, 1)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 9, 7, 3)).astype(np.float32)
    y = (rng.random((12, 9, 7, 1)) > 0.5).astype(np.float32)

    def build(mod):
        return mod.Sequential([mod.Input((9, 7, 3)), mod.layers.Conv2D(4, 3, padding="same", activation="relu"),
                               mod.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    ref, ours = build(tfk), build(kconvert)
    weights = [rng.uniform(-2, 2, w.shape).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    ours.set_weights(weights)
    ref.compile(tfk.optimizers.Adam(0.05), "binary_crossentropy")
    ours.compile(kconvert.optimizers.Adam(0.05), "binary_crossentropy")
    h_ref = ref.fit(x, y, batch_size=4, epochs=4, shuffle=False, verbose=0)
    h_ours = ours.fit(x, y, batch_size=4, epochs=4, shuffle=False, verbose=0)
    assert_close(np.array(h_ours.history["loss"]), np.array(h_ref.history["loss"]), rtol_scale=10)


def test_keras3_reads_the_logits_too():
    import keras

    x, labels, _ = _data()
    ref = _head(keras, "dense_softmax", 5)
    rng = np.random.default_rng(3)
    weights = [rng.uniform(-3, 3, w.shape).astype(np.float32) for w in ref.get_weights()]
    weights[-2] *= 5
    ref.set_weights(weights)
    ours = _head(kconvert, "dense_softmax", 5)
    ours.set_weights(weights)
    ref.compile(keras.optimizers.SGD(0.02), "sparse_categorical_crossentropy")
    ours.compile(kconvert.optimizers.SGD(0.02, dialect="keras3"), "sparse_categorical_crossentropy")
    r = [float(ref.train_on_batch(x[i:i + 16], labels[i:i + 16])) for i in range(0, 80, 16)]
    o = [float(ours.train_on_batch(x[i:i + 16], labels[i:i + 16])) for i in range(0, 80, 16)]
    assert_close(np.array(o), np.array(r), rtol_scale=10)


def test_outside_a_step_the_probability_formula_is_used():
    """`losses.categorical_crossentropy(y, model.predict(x))` sees plain probabilities, as in Keras."""
    p = np.array([[1.0, 0.0, 0.0]], np.float32)
    y = np.array([[0.0, 1.0, 0.0]], np.float32)
    assert_close(losses.categorical_crossentropy(y, p), np.array([-np.log(1e-7)], np.float32))
