"""Comparisons the training tests share: two Histories, two models' weights, a load that must not warn."""

import warnings

import numpy as np
from conftest import assert_close

import kconvert


def same_history(ref: dict, ours: dict) -> None:
    """The same History keys and, per key, values within the project tolerance."""
    assert set(ref) == set(ours)
    for key in ref:
        assert_close(np.array(ours[key]), np.array(ref[key]), what=key)


def same_weights(ref, ours) -> None:
    """The same number of weights, each within the project tolerance."""
    a, b = ref.get_weights(), ours.get_weights()
    assert len(a) == len(b)
    for r, o in zip(a, b):
        assert_close(o, r)


def load_quietly(path):
    """kconvert.load_model, failing on any warning (state or configuration that could not be restored warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return kconvert.load_model(path)
