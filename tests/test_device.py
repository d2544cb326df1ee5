"""Training on a device array module (`kconvert.device`), checked without a GPU through a strict stand-in.

`fake_device` behaves as CuPy does where the engine could go wrong (no implicit conversion to numpy, no numpy
array operands, ufuncs that refuse the tape's Var) but computes with numpy, so a step on it must give the host
step's numbers bit for bit. The CUDA tests at the end run the same models on CuPy when a GPU is there.
"""

from __future__ import annotations

import contextlib

import fake_device
import numpy as np
import pytest

import kconvert as k
from kconvert.ops import array_module, ov_conv

L = k.layers


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    array_module.register(fake_device, "fake_device")
    # the host's steps would pick BLAS thread counts and run convolutions in OpenVINO, both of which change the
    # last bits; a device step does neither. A thread count fixed in the environment keeps the host's alone too
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with ov_conv.disabled():
        yield
    array_module.unregister(fake_device)


def _mlp():
    # Dense first: its product meets the batch itself (a device array, not a Var); 64x600 ReLU outputs are large
    # enough for the host's blocked maximum (ops/ufuncs.py)
    return k.Sequential([k.Input((37,)), L.Dense(600, activation="relu"), L.Dropout(0.3, seed=5),
                         L.Dense(7, activation="softmax")])


def _cnn():
    # no bias on a convolution right before BatchNormalization: its gradient is zero but for rounding, which Adam
    # would scale into full steps in directions that differ by device
    return k.Sequential([k.Input((19, 15, 3)), L.Conv2D(16, 3, padding="same", use_bias=False),
                         L.BatchNormalization(), L.Activation("relu"), L.MaxPooling2D(2), L.Conv2D(6, (3, 2), strides=2, activation="relu"),
                         L.AveragePooling2D(2, padding="same"), L.Flatten(), L.Dropout(0.2, seed=3),
                         L.Dense(7, activation="softmax")])


def _data(shape, n=45, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, n)]
    return x, y


def _fit_twice(make, shape, optimizer, module, loss="categorical_crossentropy"):
    """fit + evaluate on the host and inside `device(module)`, from the same weights: (host, device) results."""
    x, y = _data(shape)
    init = None
    out = []
    for dev in (False, True):
        model = make()
        model.compile(optimizer=optimizer(), loss=loss, metrics=["accuracy"])
        init = init or model.get_weights()
        model.set_weights(init)
        with k.device(module) if dev else contextlib.nullcontext():
            hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, validation_split=0.2)
            ev = model.evaluate(x, y, batch_size=32, verbose=0)
        out.append((hist.history, ev, model.get_weights(), model))
    return out


def test_the_stand_in_is_as_strict_as_cupy():
    a = fake_device.asarray(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError):
        np.asarray(a)
    with pytest.raises(TypeError):
        a + np.ones(3, np.float32)
    with pytest.raises(TypeError):
        a * np.asarray(2.0, np.float32)  # not even a 0-d numpy array
    with pytest.raises(TypeError):
        np.full((2,), 1.0, like=a)  # numpy 2 passes device=, which CuPy's full does not take
    assert type(a * np.float32(2)) is fake_device.FakeArray
    assert type(np.sum(a)) is fake_device.FakeArray  # 0-d results stay arrays, as CuPy's


@pytest.mark.parametrize("opt", [lambda: k.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                                 lambda: k.optimizers.Adam(0.01)], ids=["sgd-nesterov", "adam"])
def test_mlp_fit_on_the_device_is_the_host_fit_bit_for_bit(opt):
    (h_host, e_host, w_host, _), (h_dev, e_dev, w_dev, _) = _fit_twice(_mlp, (37,), opt, fake_device)
    assert h_dev == h_host
    assert e_dev == e_host
    assert h_host["loss"][1] < h_host["loss"][0]  # it trains
    for a, b in zip(w_host, w_dev):
        assert type(b) is np.ndarray  # back on the host after the block
        np.testing.assert_array_equal(a, b)


def test_cnn_with_batchnorm_and_pooling_on_the_device_is_the_host_fit_bit_for_bit():
    (h_host, e_host, w_host, m_host), (h_dev, e_dev, w_dev, m_dev) = _fit_twice(
        _cnn, (19, 15, 3), lambda: k.optimizers.Adam(0.01), fake_device)
    assert h_dev == h_host
    assert e_dev == e_host
    for a, b in zip(w_host, w_dev):  # includes BatchNormalization's moving mean and variance
        np.testing.assert_array_equal(a, b)
    for a, b in zip(m_host.optimizer.get_weights(), m_dev.optimizer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_move_once_and_stay_on_the_device_between_steps():
    model = _mlp()
    model.compile(optimizer=k.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    x, y = _data((37,), n=64)
    n_weights = len(model.weights)
    with k.device(fake_device):
        fake_device.moved.clear()
        model.train_on_batch(x[:32], y[:32])
        first = list(fake_device.moved)
        fake_device.moved.clear()
        model.train_on_batch(x[32:], y[32:])
        second = list(fake_device.moved)
        assert all(type(w._value) is fake_device.FakeArray for w in model.weights)
        assert all(type(s) is fake_device.FakeArray for s in model.optimizer._slots["m"])
        values = model.get_weights()  # read outside a step: back to the host
        assert all(type(v) is np.ndarray for v in values)
        assert all(type(w._value) is np.ndarray for w in model.weights)
    weight_sizes = sorted(w.value.size for w in model.weights)
    batch = [("to_device", 32 * 37), ("to_device", 32 * 7), ("to_device", 32 * 600)]  # x, y, dropout mask
    # first step: the weights, then the batch; every step: the loss back for the logs (no metrics: nothing else)
    assert sorted(n for d, n in first if d == "to_device") == sorted(weight_sizes + [n for _, n in batch])
    assert sorted(d for d in second if d[0] == "to_device") == sorted(batch)
    assert [n for d, n in second if d == "to_host"] == [1]
    assert len(first) == n_weights + len(batch) + 1


def test_a_checkpoint_written_during_a_device_fit_loads_and_predicts(tmp_path):
    model = _mlp()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = _data((37,))
    path = tmp_path / "ck.h5"
    with k.device(fake_device):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[k.callbacks.ModelCheckpoint(str(path), save_weights_only=False)])
    loaded = k.load_model(str(path))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_device_names():
    with k.device("cpu"):
        assert array_module.current() is np
    with k.device(fake_device):
        assert array_module.current() is fake_device
        with k.device("cpu"):
            assert array_module.current() is np
        assert array_module.current() is fake_device
    assert array_module.current() is np


def test_cuda_without_cupy_says_how_to_install_it(monkeypatch):
    real_import = array_module.importlib.import_module

    def no_cupy(name, *args):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args)

    monkeypatch.setattr(array_module.importlib, "import_module", no_cupy)
    monkeypatch.delitem(array_module._names, "cupy", raising=False)
    with pytest.raises(ImportError, match=r"kconvert\[cuda\]"):
        with k.device("cuda"):
            pass


# ---------------------------------------------------------------------------------------------- real CUDA


def _cupy():
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy without a driver
        pytest.skip(f"no CUDA device ({type(e).__name__}: {e})")
    if count < 1:
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.parametrize("make,shape", [(_mlp, (37,)), (_cnn, (19, 15, 3))], ids=["mlp", "cnn"])
def test_cuda_fit_matches_the_host_fit(make, shape):
    _cupy()
    (h_host, e_host, w_host, _), (h_dev, e_dev, w_dev, _) = _fit_twice(make, shape, lambda: k.optimizers.Adam(0.01),
                                                                       "cuda")
    # cuBLAS and CUDA's reductions round differently from numpy's: close, not equal
    np.testing.assert_allclose(h_dev["loss"], h_host["loss"], rtol=1e-4)
    np.testing.assert_allclose(h_dev["val_loss"], h_host["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(e_dev, e_host, rtol=1e-4)
    for a, b in zip(w_host, w_dev):
        assert type(b) is np.ndarray
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------------------------- every layer family


def _layer_grads(make, inputs, kwargs, module):
    """The layer's outputs and the gradients of sum(out**2 * r) w.r.t. its floating inputs and trainable weights,
    computed on `module`'s arrays (weights copied from a host-built twin, so both runs start equal)."""
    from kconvert.runtime.autodiff import GradientTape
    from kconvert.runtime.autodiff import _raw as raw

    many = isinstance(inputs, list)
    ins = list(inputs) if many else [inputs]
    layer = make()
    if hasattr(layer, "_rng"):
        layer._rng = np.random.default_rng(5)
    layer(ins if many else ins[0], **kwargs)  # builds it
    rng = np.random.default_rng(1)
    for w in layer.weights:  # the same values in both runs (variances and scales positive)
        low = 0.5 if "variance" in w.name or "gamma" in w.name else -0.5
        w.value = rng.uniform(low, low + 1.0, w.shape).astype(w.dtype)
    if hasattr(layer, "_rng"):
        layer._rng = np.random.default_rng(5)
    step = array_module.step(module) if module is not np else contextlib.nullcontext()
    with step:
        for w in layer.weights:
            w.place(module)
        ins = [array_module.to_device(np.asarray(x), module) for x in ins]
        kw = {key: array_module.to_device(v, module) if isinstance(v, np.ndarray) else v for key, v in kwargs.items()}
        weights = list(layer.trainable_weights)
        saved = [w.value for w in weights]
        with GradientTape() as tape:
            xs = [tape.watch(x) if x.dtype.kind == "f" else x for x in ins]
            ws = [tape.watch(v) for v in saved]
            for w, v in zip(weights, ws):
                w.value = v
            out = layer(xs if many else xs[0], **kw)
            outs = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(np.sum(o * o) for o in outs)
        grads = tape.gradient(loss, [x for x in xs if x.dtype.kind == "f"] + ws)
        for w, v in zip(weights, saved):
            w.value = v
        return ([array_module.to_host(raw(o)) for o in outs],
                [None if g is None else array_module.to_host(g) for g in grads])


def _layer_cases():
    from test_autodiff_layers import LAYER_CASES

    return LAYER_CASES


@pytest.fixture(params=["fake", "cuda"])
def device_module(request):
    """The strict stand-in (results bit for bit the host's) or, where a GPU is there, CuPy (close to them)."""
    return fake_device if request.param == "fake" else _cupy()


def _same(host, dev, module, rtol=1e-7, atol=1e-9):
    """Equal on the stand-in; on CUDA within `rtol`/`atol` (float32 training runs: 1e-4 relative, the tolerance
    of the Keras-equality tests)."""
    assert type(dev) is np.ndarray
    if module is fake_device:
        np.testing.assert_array_equal(dev, host)
    else:  # CUDA's kernels round differently from numpy's
        np.testing.assert_allclose(dev, host, rtol=rtol, atol=atol)


def _same_runs(host: tuple, dev: tuple, module) -> None:
    """(history, evaluate result, weights) of a host run and a device run: the same (float32 training: 1e-4)."""
    (hist_h, ev_h, w_h), (hist_d, ev_d, w_d) = host, dev
    assert hist_d.keys() == hist_h.keys()
    for key in hist_h:
        _same(np.array(hist_h[key]), np.array(hist_d[key]), module, rtol=1e-4, atol=1e-5)
    _same(np.array(ev_h), np.array(ev_d), module, rtol=1e-4, atol=1e-5)
    for a, b in zip(w_h, w_d):
        _same(a, b, module, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", _layer_cases(), ids=[c[0] for c in _layer_cases()])
def test_every_layer_family_trains_on_the_device(case, device_module):
    _, make, inputs, kwargs = case
    outs_host, grads_host = _layer_grads(make, inputs, kwargs, np)
    outs_dev, grads_dev = _layer_grads(make, inputs, kwargs, device_module)
    assert len(outs_dev) == len(outs_host) and len(grads_dev) == len(grads_host)
    for a, b in zip(outs_host + grads_host, outs_dev + grads_dev):
        _same(a, b, device_module)


def _noise_cases():
    from test_autodiff_layers import NOISE_CASES

    return NOISE_CASES


@pytest.mark.parametrize("case", _noise_cases(), ids=[c[0] for c in _noise_cases()])
def test_noise_layers_draw_the_same_noise_on_the_device(case, device_module):
    _, make, x = case
    outs_host, grads_host = _layer_grads(make, x, {"training": True}, np)
    outs_dev, grads_dev = _layer_grads(make, x, {"training": True}, device_module)
    assert not np.array_equal(outs_host[0], x)  # the noise is there
    for a, b in zip(outs_host + grads_host, outs_dev + grads_dev):
        _same(a, b, device_module)


OPTIMIZERS = {
    "sgd": lambda: k.optimizers.SGD(0.05),
    "sgd_momentum_decay": lambda: k.optimizers.SGD(0.05, momentum=0.8, decay=0.01),
    "rmsprop_centered": lambda: k.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "adagrad": lambda: k.optimizers.Adagrad(0.05),
    "adadelta": lambda: k.optimizers.Adadelta(1.0),
    "adam_amsgrad_clipnorm": lambda: k.optimizers.Adam(0.01, amsgrad=True, clipnorm=0.5),
    "adamw": lambda: k.optimizers.AdamW(0.01, weight_decay=0.01),
    "adamax_clipvalue": lambda: k.optimizers.Adamax(0.01, clipvalue=0.05),
    "nadam": lambda: k.optimizers.Nadam(0.01),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps_on_the_device(name, device_module):
    def make():  # a regularizer and a constraint too (constraints run after each update)
        return k.Sequential([k.Input((5,)), L.Dense(8, activation="tanh", kernel_regularizer="l2"),
                             L.Dense(3, kernel_constraint={"class_name": "MaxNorm", "config": {"max_value": 0.6}},
                                     bias_constraint="non_neg")])
    x, _ = _data((5,), n=24, seed=3)
    y = np.random.default_rng(4).standard_normal((24, 3)).astype(np.float32)
    init, results = None, []
    for module in (np, device_module):
        model = make()
        model.compile(optimizer=OPTIMIZERS[name](), loss="mse", metrics=["mae"])
        init = init or model.get_weights()
        model.set_weights(init)
        with k.device(module):
            logs = [model.train_on_batch(x[i:i + 8], y[i:i + 8], return_dict=True) for i in (0, 8, 16, 0)]
        results.append((logs, model.get_weights(), model.optimizer.get_weights()))
    (logs_h, w_h, o_h), (logs_d, w_d, o_d) = results
    for lh, ld in zip(logs_h, logs_d):
        assert lh.keys() == ld.keys()
        _same(np.array(list(lh.values())), np.array(list(ld.values())), device_module, rtol=1e-4, atol=1e-5)
    for a, b in zip(w_h + o_h, w_d + o_d):
        _same(a, b, device_module, rtol=1e-4, atol=1e-5)


LOSSES = ["mse", "mae", "mape", "msle", "binary_crossentropy", "categorical_crossentropy",
          "sparse_categorical_crossentropy", "hinge", "squared_hinge", "categorical_hinge", "kld", "poisson",
          "cosine_similarity", "huber", "log_cosh"]


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_and_metric_on_the_device(loss, device_module):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, 4, (30, 1)).astype(np.float32)
    elif loss == "binary_crossentropy":
        y = (rng.random((30, 4)) > 0.5).astype(np.float32)
    else:
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 30)]
    if loss == "mape":  # no zero targets: their 1e-7 floor makes gradients of 1e7 that no two devices round alike
        y += 0.5
    w = rng.uniform(0.5, 2.0, 30).astype(np.float32)
    activation = "sigmoid" if loss == "binary_crossentropy" else "softmax"
    init, results = None, []
    for module in (np, device_module):
        model = k.Sequential([k.Input((6,)), L.Dense(4, activation=activation)])
        model.compile(optimizer=k.optimizers.SGD(0.1), loss=loss, metrics=["accuracy", "mse"],
                      weighted_metrics=["mae"])
        init = init or model.get_weights()
        model.set_weights(init)
        with k.device(module):
            hist = model.fit(x, y, sample_weight=w, batch_size=8, epochs=2, verbose=0, shuffle=False)
            ev = model.evaluate(x, y, sample_weight=w, verbose=0)
        results.append((hist.history, ev, model.get_weights()))
    _same_runs(*results, device_module)


# ---------------------------------------------------------------------------------------------- whole models


def _masked_lstm():
    return k.Sequential([k.Input((6, 4)), L.Masking(0.0), L.LSTM(5, return_sequences=True, dropout=0.2,
                                                                recurrent_dropout=0.2, seed=2),
                         L.GRU(3), L.Dense(7, activation="softmax")])


def _embedding_gru():
    return k.Sequential([k.Input((6,), dtype="int32"), L.Embedding(11, 4, mask_zero=True), L.GRU(5),
                         L.Dense(7, activation="softmax")])


def _two_outputs():
    inp = k.Input((9,))
    h = L.Dense(12, activation="relu")(inp)
    return k.Model(inp, [L.Dense(7, activation="softmax", name="cls")(h), L.Dense(2, name="reg")(h)])


def _model_data(name):
    rng = np.random.default_rng(8)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 40)]
    if name == "masked_lstm":
        x = rng.standard_normal((40, 6, 4)).astype(np.float32)
        x[::3, 4:] = 0.0  # masked steps
        return x, y
    if name == "embedding_gru":
        x = rng.integers(1, 11, (40, 6)).astype(np.int32)
        x[::2, 3:] = 0
        return x, y
    return rng.standard_normal((40, 9)).astype(np.float32), [y, rng.standard_normal((40, 2)).astype(np.float32)]


MODELS = {"masked_lstm": (_masked_lstm, {}),
          "embedding_gru": (_embedding_gru, {"class_weight": {i: 1.0 + i / 4 for i in range(7)}}),
          "two_outputs": (_two_outputs, {})}


@pytest.mark.parametrize("name", list(MODELS))
def test_whole_models_fit_on_the_device(name, device_module):
    make, fit_kwargs = MODELS[name]
    x, y = _model_data(name)
    init, results = None, []
    for module in (np, device_module):
        model = make()
        if name == "two_outputs":
            model.compile(optimizer=k.optimizers.RMSprop(0.01), loss={"cls": "categorical_crossentropy", "reg": "mse"},
                          loss_weights={"cls": 1.0, "reg": 0.3}, metrics={"cls": "accuracy"})
        else:
            model.compile(optimizer=k.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
        init = init or model.get_weights()
        model.set_weights(init)
        with k.device(module):
            hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, validation_data=(x, y),
                             **fit_kwargs)
            ev = model.evaluate(x, y, verbose=0)
        results.append((hist.history, ev, model.get_weights()))
    _same_runs(*results, device_module)


def test_a_stateful_lstm_carries_its_states_on_the_device(device_module):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    y = rng.standard_normal((4, 2)).astype(np.float32)
    init, results = None, []
    for module in (np, device_module):
        model = k.Sequential([k.Input((5, 3), batch_size=4), L.LSTM(6, stateful=True), L.Dense(2)])
        model.compile(optimizer=k.optimizers.SGD(0.05), loss="mse")
        init = init or model.get_weights()
        model.set_weights(init)
        with k.device(module):
            losses = [model.train_on_batch(x, y) for _ in range(3)]
            model.reset_states()
            losses += [model.train_on_batch(x, y) for _ in range(2)]
        results.append((losses, model.get_weights()))
    _same(np.array(results[0][0]), np.array(results[1][0]), device_module, rtol=1e-4, atol=1e-6)
    assert results[0][0][3] != results[0][0][2]  # the states carried over, and were reset
    for a, b in zip(results[0][1], results[1][1]):
        _same(a, b, device_module, rtol=1e-4, atol=1e-6)
