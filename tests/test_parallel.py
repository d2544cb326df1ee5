"""ops/parallel.py: memory-bound passes split over the cores, and the callers that use it give the same bits
split or not."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest

from kconvert.ops import parallel, pooling
from kconvert.runtime.blockwise import blockwise
from kconvert.runtime.grad_rules import masked

conv = importlib.import_module("kconvert.ops.conv")  # the package's `conv` is the function


@pytest.fixture
def two_parts(monkeypatch):
    monkeypatch.setattr(parallel, "PARTS", 2)


def test_parts_partition_the_range_and_small_work_stays_whole(two_parts):
    assert parallel.parts(7, parallel.MIN_BYTES) == [slice(0, 3), slice(3, 7)]
    assert parallel.parts(1, parallel.MIN_BYTES) == [slice(0, 1)]
    assert parallel.parts(7, parallel.MIN_BYTES - 1) == [slice(0, 7)]
    assert parallel.parts(0, parallel.MIN_BYTES) == [slice(0, 0)]


def test_parts_follow_the_core_count(monkeypatch):
    monkeypatch.setattr(parallel, "PARTS", 3)
    assert parallel.parts(10, parallel.MIN_BYTES) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    monkeypatch.setattr(parallel, "PARTS", 1)
    assert parallel.parts(10, parallel.MIN_BYTES) == [slice(0, 10)]


def test_omp_num_threads_limits_the_parts(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel._cores() == 1


def test_split_runs_every_part_once_on_two_threads_at_once(two_parts):
    seen: dict[int, str] = {}
    both_running = threading.Barrier(2, timeout=10)  # fails unless the two parts run at the same time

    def work(part: slice) -> None:
        both_running.wait()
        for i in range(part.start, part.stop):
            seen[i] = threading.current_thread().name

    parallel.split(work, 10, parallel.MIN_BYTES)
    assert sorted(seen) == list(range(10))
    assert seen[0] == threading.current_thread().name
    assert seen[9].startswith("kconvert-split-")


def test_a_worker_s_exception_reaches_the_caller(two_parts):
    def work(part: slice) -> None:
        if part.start > 0:
            raise ValueError(f"part {part.start}")

    with pytest.raises(ValueError, match="part 5"):
        parallel.split(work, 10, parallel.MIN_BYTES)
    seen = []
    parallel.split(lambda part: seen.append(part), 4, parallel.MIN_BYTES)  # the worker still serves
    assert sorted(p.start for p in seen) == [0, 2]


def test_a_split_inside_a_worker_runs_in_one_piece(two_parts):
    inner: list[list[slice]] = []

    def work(part: slice) -> None:
        if part.start > 0:
            inner.append(parallel.parts(8, parallel.MIN_BYTES))

    parallel.split(work, 2, parallel.MIN_BYTES)
    assert inner == [[slice(0, 8)]]


def _both(monkeypatch, fn):
    """fn() in one piece, then split in two; asserts that the split run really split its work."""
    monkeypatch.setattr(parallel, "PARTS", 1)
    whole = fn()
    monkeypatch.setattr(parallel, "PARTS", 2)
    counted = []
    real_parts = parallel.parts
    monkeypatch.setattr(parallel, "parts", lambda n, nbytes: counted.append(len(real_parts(n, nbytes))) or
                        real_parts(n, nbytes))
    split = fn()
    monkeypatch.setattr(parallel, "parts", real_parts)
    assert 2 in counted, "the work was not split"
    return whole, split


@pytest.fixture
def small_split(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_BYTES", 1024)  # small arrays split too


def _input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 13, 11, 6)).astype(np.float32)
    x[:, ::3] = np.maximum(x[:, ::3], 0.5)  # ties for the max-pooling winners
    return x, rng


@pytest.mark.parametrize("channels", [6, 1])  # the window copy, and the tap-by-tap copy of one channel
def test_im2col_is_the_same_split_or_not(channels, small_split, monkeypatch):
    x = np.ascontiguousarray(_input()[0][..., :channels])
    xp = conv._pad(x, ((1, 2), (2, 1)))
    whole, split = _both(monkeypatch, lambda: conv._columns(xp, (3, 4), (2, 1), (1, 2), (7, 8)).copy())
    np.testing.assert_array_equal(whole, split)


@pytest.mark.parametrize("ksize, strides, pads", [((2, 2), (2, 2), None), ((3, 2), (2, 1), ((1, 1), (0, 1)))])
def test_max_pooling_is_the_same_split_or_not(ksize, strides, pads, small_split, monkeypatch):
    x, rng = _input()
    if pads is None:
        x = np.ascontiguousarray(x[:, :12, :10])  # windows that tile the input exactly
    y_whole, y_split = _both(monkeypatch, lambda: pooling.MaxPool.forward_saving((True,), x, ksize, strides, pads))
    np.testing.assert_array_equal(y_whole[0], y_split[0])
    np.testing.assert_array_equal(y_whole[1], y_split[1])
    if pads is None:  # tiled: the backward pass that splits
        g = rng.standard_normal(y_whole[0].shape).astype(np.float32)
        gx_whole, gx_split = _both(monkeypatch, lambda: pooling.MaxPool.backward(g, (x,), y_whole[0], ksize,
                                                                                 strides, saved=y_whole[1])[0])
        np.testing.assert_array_equal(gx_whole, gx_split)
        assert np.count_nonzero(gx_whole) == np.count_nonzero(g)  # one winner per window


def test_relu_mask_is_the_same_split_or_not(small_split, monkeypatch):
    x, rng = _input()
    g = rng.standard_normal(x.shape).astype(np.float32)
    whole, split = _both(monkeypatch, lambda: masked(x > 0, g))
    np.testing.assert_array_equal(whole, split)
    np.testing.assert_array_equal(whole, np.where(x > 0, g, 0))


def test_blockwise_update_is_the_same_split_or_not(monkeypatch):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(1 << 21).astype(np.float32)  # blockwise splits only past 4 blocks
    g = rng.standard_normal(w0.shape).astype(np.float32)

    def update():
        w = w0.copy()
        blockwise(lambda w_, g_: np.subtract(w_, g_ * np.float32(0.1), out=w_), w, g)
        return w

    whole, split = _both(monkeypatch, update)
    np.testing.assert_array_equal(whole, split)
    np.testing.assert_array_equal(whole, w0 - g * np.float32(0.1))


def test_limit_caps_the_parts_in_this_thread(two_parts):
    with parallel.limit(1):
        assert parallel.parts(10, parallel.MIN_BYTES) == [slice(0, 10)]
        with parallel.limit(None):
            assert len(parallel.parts(10, parallel.MIN_BYTES)) == 2
    assert len(parallel.parts(10, parallel.MIN_BYTES)) == 2


def test_the_one_thread_step_mode_does_not_split(two_parts):
    from kconvert.runtime.blas_threads import StepThreads

    policy = StepThreads(cores=2)
    for mode, expected in (("one", 1), ("mlas", 2), ("all", 2)):
        with policy._mode(mode):
            assert len(parallel.parts(10, parallel.MIN_BYTES)) == expected, mode


@pytest.mark.parametrize("threads", [0, 2])
def test_conv_input_gradient_split_over_the_batch_matches_one_piece(threads, two_parts, monkeypatch):
    """With MLAS on 2 threads the per-tap input-gradient products run as two batch halves on one thread each;
    without MLAS (numpy's BLAS, whose own threads would compete) the loop is never split."""
    from kconvert.ops import gemm

    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 9, 8, 5)).astype(np.float32)
    kernel = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    dy = rng.standard_normal((7, 5, 8, 6)).astype(np.float32)
    geometry = {"strides": (2, 1), "pads": ((1, 1), (2, 1)), "dilations": (1, 1)}
    monkeypatch.setattr(gemm, "MIN_MACS", 1)  # small products go through the MLAS path too
    monkeypatch.setattr(parallel, "MIN_BYTES", 1024)
    counted = []
    real_parts = parallel.parts
    monkeypatch.setattr(parallel, "parts", lambda n, nbytes: counted.append(len(real_parts(n, nbytes))) or
                        real_parts(n, nbytes))
    with gemm.use_mlas(threads):
        split = conv.Conv.backward(dy, (x, kernel), None, needs=(True, False), **geometry)[0]
    assert counted == ([2] if threads else [])
    whole = conv.Conv.backward(dy, (x, kernel), None, needs=(True, False), **geometry)[0]  # numpy, one piece
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)
    # and both are the transposed convolution of the output gradient (ops.conv_transpose's own loop)
    reference = conv.ConvTranspose.forward(dy, kernel, geometry["strides"], geometry["pads"])
    np.testing.assert_allclose(whole, reference, rtol=1e-5, atol=1e-5)
