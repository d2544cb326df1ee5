"""A ReLU right before max pooling runs after it (runtime/deferred_relu.py): which pairs qualify, and that the
outputs and every weight's gradient are bit for bit those of the graph as written."""

from __future__ import annotations

import numpy as np
import pytest

import kconvert as k
from kconvert.runtime import autodiff, deferred_relu

L = k.layers


class _NoFusion:
    linear: dict = {}
    relu_after: set = set()


def _plain(monkeypatch):
    monkeypatch.setattr(deferred_relu, "plan", lambda graph: _NoFusion)


def _fused_names(model) -> tuple[list[str], list[str]]:
    plan = deferred_relu.plan(model._graph)
    nodes = model._graph.nodes
    return ([n.layer.name for n in nodes if id(n) in plan.linear],
            [n.layer.name for n in nodes if id(n) in plan.relu_after])


def test_plan_finds_relu_layers_whose_only_use_is_max_pooling():
    x = k.Input((9, 7, 3))
    a = L.Conv2D(4, 3, activation="relu", name="conv_relu")(x)
    a = L.MaxPooling2D(2, name="pool_a")(a)
    b = L.Conv2D(4, 3, name="conv_linear")(x)
    b = L.BatchNormalization(name="bn")(b)
    b = L.Activation("relu", name="act_relu")(b)
    b = L.MaxPooling2D(2, name="pool_b")(b)
    c = L.Conv2D(4, 3, name="conv_c")(x)
    c = L.ReLU(name="relu_layer")(c)
    c = L.MaxPooling2D(2, name="pool_c")(c)
    model = k.Model(x, L.Concatenate()([a, b, c]))
    producers, poolings = _fused_names(model)
    assert sorted(producers) == ["act_relu", "conv_relu", "relu_layer"]
    assert sorted(poolings) == ["pool_a", "pool_b", "pool_c"]


@pytest.mark.parametrize("case", ["avg_pool", "two_uses", "model_output", "activity", "tanh", "relu6",
                                  "leaky", "own_call"])
def test_plan_leaves_other_pairs_alone(case):
    x = k.Input((9, 7, 3))
    if case == "avg_pool":
        model = k.Model(x, L.AveragePooling2D(2)(L.Conv2D(4, 3, activation="relu")(x)))
    elif case == "two_uses":
        y = L.Conv2D(4, 3, activation="relu")(x)
        model = k.Model(x, L.Add()([L.MaxPooling2D(2, strides=1, padding="same")(y), y]))
    elif case == "model_output":
        y = L.Conv2D(4, 3, activation="relu")(x)
        model = k.Model(x, [L.MaxPooling2D(2)(y), y])
    elif case == "activity":
        y = L.Conv2D(4, 3, activation="relu", activity_regularizer="l2")(x)
        model = k.Model(x, L.MaxPooling2D(2)(y))
    elif case == "tanh":
        model = k.Model(x, L.MaxPooling2D(2)(L.Conv2D(4, 3, activation="tanh")(x)))
    elif case == "relu6":
        model = k.Model(x, L.MaxPooling2D(2)(L.ReLU(max_value=6.0)(x)))
    elif case == "leaky":
        model = k.Model(x, L.MaxPooling2D(2)(L.ReLU(negative_slope=0.1)(x)))
    else:
        class Shifted(L.Conv2D):  # its own call: what it computes is not known to the plan
            def call(self, inputs):
                return super().call(inputs) + 1.0

        model = k.Model(x, L.MaxPooling2D(2)(Shifted(4, 3, activation="relu")(x)))
    assert _fused_names(model) == ([], [])


def _ties(rng, shape, scale=0.5):
    """Half-integers: many equal values and exact zeros, so ties and ReLU's flat part are both exercised."""
    return (rng.integers(-3, 4, shape) * scale).astype(np.float32)


def _models():
    x = k.Input((11, 9, 2))
    y = L.Conv2D(5, (3, 2), activation="relu", padding="same", name="c1")(x)
    y = L.MaxPooling2D(2, name="p1")(y)  # 11x9 -> 5x4: the last row and column are dropped
    y = L.Conv2D(6, 3, strides=2, padding="same", name="c2")(y)
    y = L.BatchNormalization(name="bn")(y)
    y = L.Activation("relu", name="act")(y)
    y = L.MaxPooling2D(3, strides=2, padding="same", name="p2")(y)  # overlapping windows, -inf padding
    y = L.Flatten()(y)
    yield k.Model(x, L.Dense(3, name="head")(y))
    seq = k.Sequential([k.Input((13, 4)), L.Conv1D(7, 3, activation="relu", name="c"), L.MaxPooling1D(3, 2),
                        L.Flatten(), L.Dense(2)])
    yield seq


def _run(model, x, weights):
    model.set_weights(weights)
    target = np.linspace(-1.0, 1.0, int(np.prod(model.output_shape[1:]))).astype(np.float32)

    def loss(out):
        return ((out - target.reshape(model.output_shape[1:])) ** 2).sum()

    value, grads = autodiff.gradients(model, x, loss)
    # the numpy engine's outputs (predict would run the ONNX lowering, which has no such fusion)
    return model.call(x), float(value), [grads[w] for w in model.trainable_weights]


@pytest.mark.parametrize("index, relu_layer", [(0, "c1"), (1, "c")])
def test_fused_outputs_and_gradients_are_bitwise_those_of_the_graph_as_written(index, relu_layer, monkeypatch):
    model = list(_models())[index]
    assert _fused_names(model)[0], "the model is meant to have a fused pair"
    rng = np.random.default_rng(index)
    weights = [np.abs(_ties(rng, w.shape, 0.25)) + 0.5 if "variance" in w.name else _ties(rng, w.shape, 0.25)
               for w in model.weights]
    x = _ties(rng, (3, *model.input_shape[1:]))
    fused = _run(model, x, weights)
    with monkeypatch.context() as m:
        _plain(m)
        plain = _run(model, x, weights)
    np.testing.assert_array_equal(fused[0], plain[0])
    assert fused[1] == plain[1]
    for got, want in zip(fused[2], plain[2]):
        np.testing.assert_array_equal(got, want)
    # the case is not trivial: gradients flow, and some pooling windows are entirely non-positive
    assert all(np.any(g != 0) for g in fused[2])
    relu_out = k.Model(model.input, model.get_layer(relu_layer).output).predict(x, verbose=0)
    assert np.any(relu_out == 0) and np.any(relu_out > 0)


def test_training_step_with_the_fusion_matches_the_plain_graph(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # numpy's kernels in both runs: no timing-dependent choice
    def fit_once():
        model = list(_models())[0]
        rng = np.random.default_rng(5)
        model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in model.get_weights()])
        model.compile(optimizer=k.optimizers.SGD(0.05, momentum=0.9), loss="mse")
        x = rng.standard_normal((8, 11, 9, 2)).astype(np.float32)
        y = rng.standard_normal((8, 3)).astype(np.float32)
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        return history.history["loss"], model.get_weights()

    fused_loss, fused_w = fit_once()
    with monkeypatch.context() as m:
        _plain(m)
        plain_loss, plain_w = fit_once()
    assert fused_loss == plain_loss
    for a, b in zip(fused_w, plain_w):
        np.testing.assert_array_equal(a, b)
