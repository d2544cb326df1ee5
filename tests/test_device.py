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
from kconvert.ops import array_module

L = k.layers


@pytest.fixture(autouse=True)
def _registered():
    array_module.register(fake_device, "fake_device")
    yield
    array_module.unregister(fake_device)


def _mlp():
    # Dense first: its product meets the batch itself (a device array, not a Var); 64x600 ReLU outputs are large
    # enough for the host's blocked maximum (ops/ufuncs.py)
    return k.Sequential([k.Input((37,)), L.Dense(600, activation="relu"), L.Dropout(0.3, seed=5),
                         L.Dense(7, activation="softmax")])


def _cnn():
    return k.Sequential([k.Input((19, 15, 3)), L.Conv2D(16, 3, padding="same", activation="relu"),
                         L.BatchNormalization(), L.MaxPooling2D(2), L.Conv2D(6, (3, 2), strides=2, activation="relu"),
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
    # first step: the weights, then the batch; every step: the loss, outputs and targets back for the metrics
    assert sorted(n for d, n in first if d == "to_device") == sorted(weight_sizes + [n for _, n in batch])
    assert sorted(d for d in second if d[0] == "to_device") == sorted(batch)
    assert sorted(n for d, n in second if d == "to_host") == [1, 1, 32 * 7, 32 * 7]  # total and output loss
    assert len(first) == n_weights + len(batch) + 4


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
