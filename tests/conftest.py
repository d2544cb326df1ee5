"""Shared test helpers: the design doc's tolerance and the real frameworks used as oracles."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np
import pytest


def assert_close(ours, ref, rtol_scale: float = 1.0, what: str = ""):
    """Design doc tolerance: max|ours - ref| <= 1e-5 + 1e-4 * max|ref| (scaled by rtol_scale)."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what} shape {ours.shape} != reference {ref.shape}"
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    tol = rtol_scale * (1e-5 + 1e-4 * (float(np.max(np.abs(ref))) if ref.size else 0.0))
    assert err <= tol, f"{what} max abs error {err:.3g} > tolerance {tol:.3g}"


@pytest.fixture(scope="session")
def tfk():
    """Real tf_keras (Keras 2), the reference implementation. Installed by the test extra."""
    import tf_keras

    return tf_keras


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
