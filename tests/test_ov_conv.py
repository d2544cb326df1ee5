"""Convolutions on OpenVINO's kernels inside training steps (ops/ov_conv.py), against kconvert's numpy kernels.

The numpy kernels are themselves checked against tf_keras and finite differences (test_layers_conv.py,
test_autodiff_layers.py); here the OpenVINO forward pass and input gradient must match them to float32 rounding
on awkward geometries, fall back where they do not apply, and be used only where a training step asks for them.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kconvert as k
from kconvert.ops import gemm, ov_conv
from kconvert.runtime import blas_threads

pytest.importorskip("openvino")
conv_mod = importlib.import_module("kconvert.ops.conv")
Conv = conv_mod.Conv
L = k.layers

# (x shape NHWC, kernel HWIO, strides, pads, dilations): H != W != C, odd sizes, strides that do not divide
CASES = {
    "same_5x5": ((3, 13, 11, 6), (5, 5, 6, 7), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    "valid_3x2_stride_2x3": ((2, 15, 17, 5), (3, 2, 5, 4), (2, 3), ((0, 0), (0, 0)), (1, 1)),
    "same_asymmetric_stride_2": ((2, 9, 12, 3), (3, 3, 3, 8), (2, 2), ((0, 1), (1, 1)), (1, 1)),
    "dilated": ((2, 12, 10, 4), (3, 3, 4, 5), (1, 1), ((2, 2), (2, 2)), (2, 2)),
    "one_channel": ((4, 28, 26, 1), (5, 5, 1, 9), (1, 1), ((2, 2), (2, 2)), (1, 1)),
}


@pytest.fixture(autouse=True)
def _small_convolutions_too(monkeypatch):
    monkeypatch.setattr(ov_conv, "MIN_MACS", 0)  # these geometries are small: send them anyway


def _case(name, seed=0):
    xs, ks, strides, pads, dil = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    kernel = (rng.standard_normal(ks) / np.sqrt(np.prod(ks[:3]))).astype(np.float32)
    return x, kernel, strides, [list(p) for p in pads], dil


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_the_numpy_kernels(name):
    x, kernel, strides, pads, dil = _case(name)
    y_np, cols = Conv.forward_saving((True, True), x, kernel, strides, pads, dil)
    g = np.random.default_rng(1).standard_normal(y_np.shape).astype(np.float32)
    gx_np, gk_np = Conv.backward(g, (x, kernel), y_np, strides, pads, dil, saved=cols)
    with ov_conv.use(2):
        y_ov, cols_ov = Conv.forward_saving((True, True), x, kernel, strides, pads, dil)
        gx_ov, gk_ov = Conv.backward(g, (x, kernel), y_ov, strides, pads, dil, saved=cols_ov)
    assert cols_ov is None  # OpenVINO ran the forward pass: no im2col matrix was built
    scale = np.abs(y_np).max()
    np.testing.assert_allclose(y_ov, y_np, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(gx_ov, gx_np, rtol=1e-5, atol=1e-5 * np.abs(gx_np).max())
    np.testing.assert_allclose(gk_ov, gk_np, rtol=1e-5, atol=1e-5 * np.abs(gk_np).max())


def test_it_is_used_only_inside_a_step_and_only_where_it_applies(monkeypatch):
    calls = []
    real = ov_conv._run
    monkeypatch.setattr(ov_conv, "_run", lambda kind, *a: calls.append(kind) or real(kind, *a))
    x, kernel, strides, pads, dil = _case("same_5x5")
    Conv.forward(x, kernel, strides, pads, dil)
    assert calls == []  # outside a training step: numpy's kernels
    with ov_conv.use(1):
        Conv.forward(x, kernel, strides, pads, dil)
        Conv.forward(x.astype(np.float64), kernel.astype(np.float64), strides, pads, dil)  # float64: numpy
        Conv.forward(x[..., :4], kernel[:, :, :2, :6], strides, pads, dil, groups=2)  # grouped: numpy
        y_first = Conv.forward(np.moveaxis(x, -1, 1), kernel, strides, pads, dil, channels_last=False)
        with ov_conv.disabled():
            Conv.forward(x, kernel, strides, pads, dil)
    assert calls == ["forward", "forward"]  # channels_first is made channels-last first: OpenVINO too
    np.testing.assert_allclose(np.moveaxis(y_first, 1, -1), Conv.forward(x, kernel, strides, pads, dil), rtol=1e-5,
                               atol=1e-5)


def test_small_convolutions_stay_in_numpy(monkeypatch):
    monkeypatch.setattr(ov_conv, "MIN_MACS", 1 << 21)
    x, kernel, strides, pads, dil = _case("same_5x5")  # 3*13*11 outputs x 5*5*6*7 taps: 450,450 multiply-adds
    with ov_conv.use(2):
        assert ov_conv.forward(x, kernel, strides, pads, dil, (13, 11)) is None
        big = np.zeros((8, 40, 40, 6), np.float32)  # 8*40*40 x 1050: 13.4 million
        assert ov_conv.forward(big, kernel, strides, pads, dil, (40, 40)) is not None


def test_a_stride_whose_transposed_size_misses_the_input_falls_back():
    # 2x2 kernel, stride 3 on 10 columns: 3 outputs; (3-1)*3+2 = 8 != 10, the last 2 columns get no gradient
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 10, 10, 3)).astype(np.float32)
    kernel = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    with ov_conv.use(2):
        y = Conv.forward(x, kernel, (3, 3), [[0, 0], [0, 0]], (1, 1))
        assert ov_conv.input_grad(np.ones_like(y), kernel, x.shape, (3, 3), [[0, 0], [0, 0]], (1, 1)) is None
        gx, _ = Conv.backward(np.ones_like(y), (x, kernel), y, (3, 3), [[0, 0], [0, 0]], (1, 1))
    gx_np, _ = Conv.backward(np.ones_like(y), (x, kernel), y, (3, 3), [[0, 0], [0, 0]], (1, 1))
    np.testing.assert_array_equal(gx, gx_np)
    assert not gx[:, 8:].any() and gx[:, :8].any()


def test_training_steps_turn_it_on_and_a_fixed_thread_count_keeps_numpy(monkeypatch):
    seen = []
    monkeypatch.setattr(blas_threads.StepThreads, "_next", lambda self: "mlas")
    real = ov_conv.forward
    monkeypatch.setattr(conv_mod.ov_conv, "forward", lambda *a: seen.append(ov_conv.threads()) or real(*a))
    model = k.Sequential([k.Input((9, 7, 2)), L.Conv2D(3, 3, padding="same"), L.Flatten(), L.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(3).standard_normal((4, 9, 7, 2)).astype(np.float32)
    y = np.zeros((4, 2), np.float32)
    if model._compiled.threads.user_fixed:
        pytest.skip("the environment fixes the BLAS thread count")
    model.train_on_batch(x, y)
    assert seen and seen[0] == model._compiled.threads.cores
    seen.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fixed = k.Sequential([k.Input((9, 7, 2)), L.Conv2D(3, 3, padding="same"), L.Flatten(), L.Dense(2)])
    fixed.compile(optimizer="sgd", loss="mse")
    fixed.train_on_batch(x, y)
    assert seen == [0]  # the layer asked, OpenVINO was off
    assert gemm.threads() == 0


def test_a_cnn_trains_to_the_same_losses_with_and_without_it():
    def make():
        return k.Sequential([k.Input((15, 13, 2)), L.Conv2D(8, 5, padding="same", activation="relu"),
                             L.MaxPooling2D(2), L.Conv2D(6, 3, strides=2, activation="relu"), L.Flatten(),
                             L.Dense(5, activation="softmax")])

    rng = np.random.default_rng(4)
    x = rng.standard_normal((48, 15, 13, 2)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 48)]
    init, losses = None, []
    for off in (False, True):
        model = make()
        model.compile(optimizer=k.optimizers.SGD(0.05, momentum=0.9), loss="categorical_crossentropy")
        init = init or model.get_weights()
        model.set_weights(init)
        if off:
            with ov_conv.disabled():
                losses.append([model.train_on_batch(x[i:i + 16], y[i:i + 16]) for i in (0, 16, 32) * 4])
        else:
            losses.append([model.train_on_batch(x[i:i + 16], y[i:i + 16]) for i in (0, 16, 32) * 4])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert losses[0][-1] < losses[0][0]
