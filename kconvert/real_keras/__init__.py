"""Real-Keras implementations of kconvert-only layers, one module per family, found through a registry.

A module registers a factory per layer: `@implementation("LRN")` on `def make(lib, target) -> type`, where `lib`
is the imported `keras` (target "keras3") or `tf_keras` (target "tf_keras"). `kconvert.keras_objects(target)`
builds every registered class when asked, so kconvert itself never imports Keras or TensorFlow. Keras 3 classes
are registered as `kconvert>Name` (the name kconvert's `.keras` writer records); tf_keras ones by class name.
"""

from __future__ import annotations

from collections.abc import Callable

FACTORIES: dict[str, Callable] = {}
MODULES = ("caffe_elementwise_shapes", "caffe_forks", "caffe_pooling_normalization", "caffe_ssd")  # the modules that register factories (imported by keras_objects when it builds them)


def implementation(name: str) -> Callable:
    """Register `factory(lib, target) -> class` as the real-Keras implementation of kconvert layer `name`."""
    def deco(factory: Callable) -> Callable:
        FACTORIES[name] = factory
        return factory
    return deco


def build_all(lib, target: str) -> dict[str, type]:
    """Every registered implementation for `target`, keyed by the name the files record."""
    import importlib

    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    out = {}
    for name, factory in FACTORIES.items():
        cls = factory(lib, target)
        if target == "keras3":
            cls = lib.saving.register_keras_serializable(package="kconvert", name=name)(cls)
            out[f"kconvert>{name}"] = cls
        else:
            out[name] = cls
    return out
