"""Large float32 products through numpy's BLAS or onnxruntime's MLAS, chosen per shape (kconvert/ops/gemm.py)."""

import time

import numpy as np
import pytest

import kconvert
from kconvert.ops import gemm, ov_conv
from kconvert.runtime import blas_threads
from kconvert.runtime.blas_threads import StepThreads


@pytest.fixture
def forced(monkeypatch):
    """MLAS for every eligible product (no timing), from 1 multiply-add up; counts the MLAS calls."""
    calls = []
    real = gemm._mlas
    monkeypatch.setattr(gemm, "MIN_MACS", 1)
    monkeypatch.setattr(gemm, "_choice", {})
    monkeypatch.setattr(gemm, "_faster_is_mlas", lambda *args: True)
    monkeypatch.setattr(gemm, "_mlas", lambda *args: (calls.append(args[1].shape), real(*args))[1])
    return calls


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_mlas_products_equal_numpys(ta, tb, threads, forced):
    """Every transposition (a transposed view goes to Gemm's transA/transB, not copied), into `out` or not."""
    rng = np.random.default_rng(ta * 2 + tb)
    m, k, n = 37, 53, 29
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    a, b = (a.T if ta else a), (b.T if tb else b)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    with gemm.use_mlas(threads):
        got = gemm.matmul(a, b)
        out = np.full((m, n), np.nan, np.float32)
        into = gemm.matmul(a, b, out=out)
    assert into is out and len(forced) == 2
    for y in (got, out):
        assert y.dtype == np.float32 and y.shape == (m, n)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_numpy_outside_the_block_and_for_what_mlas_does_not_take(forced):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20, 30), dtype=np.float32), rng.standard_normal((30, 10), dtype=np.float32)
    np.testing.assert_array_equal(gemm.matmul(a, b), np.matmul(a, b))  # not inside use_mlas
    with gemm.use_mlas(0):
        gemm.matmul(a, b)
    with gemm.use_mlas(1):
        for x, y in [(a.astype(np.float64), b), (a[None], b), (a[:, ::2], b[::2])]:  # float64, 3-D, strided
            np.testing.assert_array_equal(gemm.matmul(x, y), np.matmul(x, y))
        out = np.empty((10, 20), np.float32).T  # not C-contiguous: numpy writes it
        gemm.matmul(a, b, out=out)
        np.testing.assert_array_equal(out, np.matmul(a, b, out=np.empty((10, 20), np.float32).T))
        assert not forced
        np.testing.assert_allclose(gemm.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
    assert len(forced) == 1  # the contiguous float32 2-D pair


def test_the_choice_is_timed_once_per_shape(monkeypatch):
    monkeypatch.setattr(gemm, "MIN_MACS", 1)
    monkeypatch.setattr(gemm, "_choice", {})
    timed = []
    real = gemm._faster_is_mlas
    monkeypatch.setattr(gemm, "_faster_is_mlas",
                        lambda *args: (timed.append((args[1].shape, args[2].shape, args[3].shape)), real(*args))[1])
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((40, 30), dtype=np.float32), rng.standard_normal((30, 20), dtype=np.float32)
    with gemm.use_mlas(1):
        for _ in range(3):
            np.testing.assert_allclose(gemm.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
        gemm.matmul(a.T.copy().T, b)  # the same shape and transposition: no new timing
        out = np.full((40, 20), np.nan, np.float32)  # timed on the product itself: `out` ends as the product
        assert gemm.matmul(np.ascontiguousarray(a.T).T, b, out=out) is out  # a transposed A: a new key
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    assert timed == [((40, 30), (30, 20), (40, 30)), ((40, 30), (30, 20), (30, 40))]  # the stored A: a or a.T
    assert set(gemm._choice) == {(40, 30, 20, 0, 0, 1), (40, 30, 20, 1, 0, 1)}


def _cnn_fit(mode, seed=0):
    L = kconvert.layers
    model = kconvert.Sequential([kconvert.Input((13, 11, 3)), L.Conv2D(8, 3, activation="relu"),
                                 L.Conv2D(12, 3, strides=2, padding="same", activation="relu"), L.Flatten(),
                                 L.Dense(40, activation="relu"), L.Dense(4, activation="softmax")])
    rng = np.random.default_rng(seed)
    model.set_weights([(rng.standard_normal(w.shape) / np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1 else
                        np.full(w.shape, 0.02)).astype(np.float32) for w in model.get_weights()])
    model.compile(kconvert.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy")
    policy = StepThreads(cores=2, load=type("Quiet", (), {"available": True, "cores": lambda self, **k: 0.0})())
    policy.warm, policy.choice, policy.next_probe = True, mode, time.monotonic() + 100
    model._compiled.threads = policy
    x = rng.random((48, 13, 11, 3), dtype=np.float32)
    y = kconvert.utils.to_categorical(rng.integers(0, 4, 48), 4)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]
    return history, model.get_weights(), model.evaluate(x, y, verbose=0)


@pytest.mark.parametrize("mode", ["one", "mlas"])
def test_training_in_mlas_matches_numpy_beyond_rounding(mode, forced, monkeypatch):
    """A CNN trained with every product in MLAS (the convolutions' forward, kernel and input gradients, the dense
    layers' three products) follows the numpy-only run to float32 rounding."""
    for var in blas_threads._BLAS_ENV:
        monkeypatch.delenv(var, raising=False)
    with ov_conv.disabled():  # the convolutions' products in MLAS, not OpenVINO's kernels (test_ov_conv.py)
        with_mlas = _cnn_fit(mode)
        assert len(forced) > 6 * 8  # 6 steps x (2 conv forward + kernel grads + 1 input grad + 2 x 3 dense) at least
        forced.clear()
        numpy_only = _cnn_fit("all")  # numpy's BLAS only
    assert not forced
    np.testing.assert_allclose(with_mlas[0], numpy_only[0], rtol=2e-5)
    for a, b in zip(with_mlas[1], numpy_only[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(with_mlas[2], numpy_only[2], rtol=2e-5)


def test_a_count_fixed_in_the_environment_never_uses_mlas(forced, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    _cnn_fit("mlas")
    assert not forced
