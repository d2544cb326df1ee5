"""Kept work buffers (kconvert/ops/scratch.py): handed out again only when no array or view refers to them, so a
convolution's im2col matrix saved for the backward pass is never overwritten by the next convolution."""

import importlib

import numpy as np
import pytest

from kconvert.ops import scratch

conv_mod = importlib.import_module("kconvert.ops.conv")


@pytest.fixture
def small_pool(monkeypatch):
    """Pool arrays from 1 KiB up, in an empty pool."""
    monkeypatch.setattr(scratch, "MIN_BYTES", 1024)
    monkeypatch.setattr(scratch, "_pool", {})


def test_small_arrays_are_never_kept(monkeypatch):
    monkeypatch.setattr(scratch, "_pool", {})
    a = scratch.buffer("t", (10, 10), np.float32)
    assert a.shape == (10, 10) and a.dtype == np.float32 and scratch._pool == {}


def test_a_buffer_comes_back_only_when_nothing_refers_to_it(small_pool):
    a = scratch.buffer("t", (64, 33), np.float32)
    b = scratch.buffer("t", (64, 33), np.float32)
    assert b is not a  # a is held
    view = a.T[::2]
    first = id(a)
    del a
    c = scratch.buffer("t", (64, 33), np.float32)  # a is reachable through the view, b is held: a new one
    assert not np.shares_memory(view, c) and not np.shares_memory(b, c)
    third = id(c)
    assert len(scratch._pool[("t", (64, 33), "<f4")]) == 3
    del view, c
    d = scratch.buffer("t", (64, 33), np.float32)
    assert id(d) in (first, third) and d.flags.c_contiguous and d.shape == (64, 33)
    assert len(scratch._pool[("t", (64, 33), "<f4")]) == 3


def test_keys_and_the_limit_per_key(small_pool):
    held = [scratch.buffer("t", (512,), np.float32) for _ in range(scratch.PER_KEY + 2)]
    assert len({id(a) for a in held}) == len(held)  # all held: all distinct
    assert len(scratch._pool[("t", (512,), "<f4")]) == scratch.PER_KEY
    other = [scratch.buffer("u", (512,), np.float32), scratch.buffer("t", (512,), np.float64),
             scratch.buffer("t", (256, 2), np.float32)]
    assert all(not any(np.shares_memory(o, h) for h in held) for o in other)
    kept = scratch._pool[("t", (512,), "<f4")]
    kept_ids = {id(a) for a in kept}
    del held
    again = scratch.buffer("t", (512,), np.float32)
    assert id(again) in kept_ids
    scratch.clear()
    assert scratch._pool == {}


def test_saved_im2col_survives_the_next_convolution(small_pool):
    """Two convolutions of one shape: the first's kept im2col matrix stays what it was while the second runs."""
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((3, 9, 7, 5)).astype(np.float32)
    x2 = rng.standard_normal((3, 9, 7, 5)).astype(np.float32)
    k = rng.standard_normal((3, 2, 5, 4)).astype(np.float32)
    geometry = dict(strides=(2, 1), pads=((1, 1), (0, 1)), dilations=(1, 1), groups=1)
    y1, cols1 = conv_mod._conv_forward_last(x1, k, keep_cols=True, **geometry)
    expected = cols1.copy()
    y2, cols2 = conv_mod._conv_forward_last(x2, k, keep_cols=True, **geometry)
    assert not np.shares_memory(cols1, cols2)
    np.testing.assert_array_equal(cols1, expected)
    del cols1, y1
    y3, cols3 = conv_mod._conv_forward_last(x1, k, keep_cols=True, **geometry)  # reuses the released buffer
    np.testing.assert_array_equal(cols3, expected)
    np.testing.assert_array_equal(y3, conv_mod._conv_forward_last(x1, k, **geometry))
    assert len(scratch._pool) == 1
