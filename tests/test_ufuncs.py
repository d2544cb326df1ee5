"""numpy ufunc calls sent to faster kernels (kconvert/ops/ufuncs.py): the same values, bit for bit, and only
where that holds."""

import numpy as np
import pytest

from kconvert import ops
from kconvert.ops import ufuncs

R = np.random.default_rng(11)


def _special(shape, dtype):
    """Random values with -0.0, +-inf and NaNs of both signs among them."""
    x = (R.standard_normal(shape) * 4).astype(dtype)
    flat = x.reshape(-1)
    flat[:6] = np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, -np.nan], dtype)
    R.shuffle(flat)
    return x


@pytest.mark.parametrize("ufunc", [np.maximum, np.minimum, np.fmax, np.fmin])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scalar", [0, 0.0, -1.5, 3])
def test_min_max_with_a_scalar_matches_numpy_bit_for_bit(ufunc, dtype, scalar, monkeypatch):
    seen = []
    monkeypatch.setattr(ufuncs, "_block_like", lambda s, x, f=ufuncs._block_like: seen.append(f(s, x)) or seen[-1])
    x = _special((5, 33, 7, 31), dtype)  # trailing axes 7 * 31 < BLOCK: the block spans three of them
    for args in ((x, scalar), (scalar, x), (x, dtype(scalar))):
        got = ufuncs.call(ufunc, *args)
        expected = ufunc(*args)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
    assert seen and all(b is not None and b.shape == (33, 7, 31) for b in seen)  # the block path ran


def test_cases_left_to_numpy(monkeypatch):
    calls = []
    real = ufuncs._block_like
    monkeypatch.setattr(ufuncs, "_block_like", lambda s, x: calls.append(real(s, x)) or calls[-1])
    big = R.standard_normal((64, 1024)).astype(np.float32)
    for args in ((big, np.float64(0.5)),  # another dtype: numpy's promotion decides
                 (big, 0.1),  # not exact in float32
                 (big[:, ::2], 0),  # strided
                 (big[:2], 0),  # small
                 (big.astype(np.int32), 0)):  # not float
        got, expected = ufuncs.call(np.maximum, *args), np.maximum(*args)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert len(calls) == 5 and all(c is None for c in calls)
    a, b = R.standard_normal((300, 200)).astype(np.float32), R.standard_normal((200, 50)).astype(np.float32)
    np.testing.assert_allclose(ufuncs.call(np.matmul, a, b), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ufuncs.call(np.add, a, 1.0), a + 1.0)


def test_relu_takes_the_block_path_and_keeps_its_values():
    x = _special((64, 28, 28, 32), np.float32)
    np.testing.assert_array_equal(ops.relu(x).view(np.uint32), np.maximum(x, 0).view(np.uint32))
