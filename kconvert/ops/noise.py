"""Random noise for training-time regularization layers; each takes a `numpy.random.Generator`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import array_module


def dropout(x: np.ndarray, rate: float, rng: np.random.Generator, noise_shape: Sequence[int] | None = None):
    """Inverted dropout as tf.nn.dropout: keep with probability 1-rate and scale kept values by 1/(1-rate).

    `noise_shape` (broadcastable to x) shares one keep/drop decision along its size-1 axes.
    """
    x = np.asarray(x)
    if rate <= 0:
        return x
    if rate >= 1:
        return np.zeros_like(x)
    shape = x.shape if noise_shape is None else tuple(noise_shape)
    scale = (rng.random(shape) >= rate).astype(x.dtype) * np.asarray(1.0 / (1.0 - rate), x.dtype)
    # drawn on the host from the layer's own generator, so that a seeded mask is the same on any device
    return (x * array_module.to_device(scale, array_module.module_of(x))).astype(x.dtype, copy=False)


def normal(shape: Sequence[int], rng: np.random.Generator, mean: float = 0.0, stddev: float = 1.0,
           dtype="float32", like=None) -> np.ndarray:
    """Normal noise drawn on the host from `rng` (the same on any device), on `like`'s device if given."""
    return _on(rng.normal(mean, stddev, tuple(shape)).astype(dtype), like)


def uniform(shape: Sequence[int], rng: np.random.Generator, dtype="float32", like=None) -> np.ndarray:
    """Uniform [0, 1) noise drawn on the host from `rng`, on `like`'s device if given."""
    return _on(rng.random(tuple(shape)).astype(dtype), like)


def _on(noise: np.ndarray, like):
    return noise if like is None else array_module.to_device(noise, array_module.module_of(like))


def resolve_noise_shape(noise_shape, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Keras's rule: None entries of a noise shape take the input's size on that axis."""
    if noise_shape is None:
        return tuple(input_shape)
    noise_shape = list(noise_shape)
    if len(noise_shape) != len(input_shape):
        raise ValueError(f"noise_shape {tuple(noise_shape)} does not have the rank of the input {tuple(input_shape)}")
    return tuple(int(d) if n is None else int(n) for n, d in zip(noise_shape, input_shape))
