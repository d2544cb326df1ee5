"""Boston housing prices from Keras's `boston_housing.npz` (`x`, `y`), split as `keras.datasets.boston_housing`."""

from __future__ import annotations

import os

import numpy as np

from ._npz import check_samples, find, read_arrays


def load_data(path: str | os.PathLike = "boston_housing.npz", test_split: float = 0.2, seed: int = 113,
              cache_dir: str | os.PathLike | None = None) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                   tuple[np.ndarray, np.ndarray]]:
    """`(x_train, y_train), (x_test, y_test)`: the (n, 13) features and (n,) prices shuffled with
    `np.random.RandomState(seed)`, the last `test_split` of them held out, exactly as Keras splits them.

    The file is found as in `kconvert.datasets.mnist.load_data`; nothing is downloaded."""
    if not 0 <= test_split < 1:
        raise ValueError(f"test_split must be in [0, 1), got {test_split}")
    found = find(path, "boston_housing", cache_dir)
    arrays = read_arrays(found, ("x", "y"))
    check_samples(found, arrays, "x", "y", (13,))
    x, y = arrays["x"], arrays["y"]
    indices = np.arange(len(x))
    np.random.RandomState(seed).shuffle(indices)
    x, y = x[indices], y[indices]
    cut = int(len(x) * (1 - test_split))
    return (np.array(x[:cut]), np.array(y[:cut])), (np.array(x[cut:]), np.array(y[cut:]))
