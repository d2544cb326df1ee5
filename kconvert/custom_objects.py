"""Custom objects for deserialization: a global registry and nested scopes, as Keras has them.

Names are looked up when a config names something kconvert does not define itself: a custom layer class,
an activation function, an initializer, a function or global name inside a Lambda. The `custom_objects`
argument of the loading functions is the innermost scope; inner scopes win over outer ones, and every
scope wins over the global registry (`get_custom_objects()`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

_GLOBAL_CUSTOM_OBJECTS: dict[str, Any] = {}
_SCOPES: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar("custom_object_scopes", default=())


def get_custom_objects() -> dict[str, Any]:
    """The global registry itself (mutable): `get_custom_objects()['MyLayer'] = MyLayer`."""
    return _GLOBAL_CUSTOM_OBJECTS


@contextlib.contextmanager
def custom_object_scope(*scopes: dict[str, Any] | None) -> Iterator[None]:
    """Make the objects of the given dicts known by name to every deserialization inside the block."""
    merged: dict[str, Any] = {}
    for scope in scopes:
        merged.update(scope or {})
    token = _SCOPES.set((*_SCOPES.get(), merged))
    try:
        yield
    finally:
        _SCOPES.reset(token)


CustomObjectScope = custom_object_scope


def current_custom_objects(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything known by name now: the global registry, the open scopes, then `extra`, later ones winning.

    An object registered as 'Package>Name' is also known as 'Name' unless that name is taken.
    """
    merged = dict(_GLOBAL_CUSTOM_OBJECTS)
    for scope in _SCOPES.get():
        merged.update(scope)
    merged.update(extra or {})
    for key in [k for k in merged if ">" in k]:
        merged.setdefault(key.split(">")[-1], merged[key])
    return merged


def get_custom_object(name: str | None) -> Any:
    """The object known as `name` (or as its short form after 'Package>'), or None."""
    if not name:
        return None
    objects = current_custom_objects()
    return objects.get(name, objects.get(name.split(">")[-1]))


def register_keras_serializable(package: str = "Custom", name: str | None = None) -> Callable[[Any], Any]:
    """Decorator: register a class or function globally as '<package>><name>' (Keras's registered name)."""

    def deco(obj):
        key = f"{package}>{name or obj.__name__}"
        if key in _GLOBAL_CUSTOM_OBJECTS:
            raise ValueError(f"{key} has already been registered to {_GLOBAL_CUSTOM_OBJECTS[key]}")
        _GLOBAL_CUSTOM_OBJECTS[key] = obj
        return obj

    return deco


__all__ = ["get_custom_objects", "custom_object_scope", "CustomObjectScope", "current_custom_objects",
           "get_custom_object", "register_keras_serializable"]
