"""MNIST digits from Keras's `mnist.npz` (`x_train`, `y_train`, `x_test`, `y_test`), as `keras.datasets.mnist`."""

from __future__ import annotations

import os

import numpy as np

from ._npz import check_samples, find, read_arrays


def load_data(path: str | os.PathLike = "mnist.npz",
              cache_dir: str | os.PathLike | None = None) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                   tuple[np.ndarray, np.ndarray]]:
    """`(x_train, y_train), (x_test, y_test)` as stored (Keras's file: uint8 (n, 28, 28) images, uint8 labels).

    `path` is used as is when it exists, else looked up under `cache_dir`, `$KERAS_HOME` and `~/.keras`
    (each `/datasets/`); nothing is downloaded (FormatError naming the places searched)."""
    found = find(path, "mnist", cache_dir)
    arrays = read_arrays(found, ("x_train", "y_train", "x_test", "y_test"))
    for split in ("train", "test"):
        check_samples(found, arrays, f"x_{split}", f"y_{split}", (28, 28))
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
