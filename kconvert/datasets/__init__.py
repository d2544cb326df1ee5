"""Keras's small datasets read from the `.npz` files Keras caches (`~/.keras/datasets`); never downloads.

`kconvert.datasets.mnist.load_data()` and `kconvert.datasets.boston_housing.load_data()` return what
`keras.datasets.<name>.load_data()` returns for the same file."""

from . import boston_housing, mnist

__all__ = ["boston_housing", "mnist"]
