"""Exceptions a user can cause. Every one names the file and, where known, the layer."""

from __future__ import annotations

import os


class KConvertError(Exception):
    """Base of every error kconvert raises for bad input or an impossible request."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, layer: str | None = None):
        self.message = message
        self.file = os.fspath(file) if file is not None else None
        self.layer = layer
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}")
        if self.layer:
            parts.append(f"layer '{self.layer}'")
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def with_context(self, *, file=None, layer=None) -> KConvertError:
        """Fill in the file or layer if not known yet; returns self for `raise e.with_context(...)`."""
        if file is not None and self.file is None:
            self.file = os.fspath(file)
        if layer is not None and self.layer is None:
            self.layer = layer
        self.args = (str(self),)
        return self


class FormatError(KConvertError):
    """The bytes of a file cannot be read as the format they claim (corrupt, truncated, wrong kind)."""


class UnsupportedFormatError(FormatError):
    """A recognised format kconvert does not read (a TensorFlow SavedModel, a TF checkpoint)."""


class ConfigError(KConvertError):
    """A model or layer configuration is malformed or names something unknown."""


class UnknownLayerError(ConfigError):
    """A configuration names a layer class kconvert does not know."""


class WeightsError(KConvertError):
    """Weights do not fit the model (count, shape, missing names)."""


class GraphError(KConvertError):
    """The model graph is invalid: dangling inputs, cycles, shape conflicts."""


class ShapeError(GraphError):
    """A layer received an input shape it cannot process."""


class UnsafeError(KConvertError):
    """Loading would execute code from the file; the caller must opt in (safe_mode=False)."""


class ExportError(KConvertError):
    """A layer (or one of its options) cannot be written in the target format (ONNX, Caffe)."""


class GraphvizNotFoundError(ExportError):
    """Rendering a plot (png, svg, pdf) needs Graphviz's `dot` program, which is not installed."""


class KConvertWarning(UserWarning):
    """Something in an input file is suspicious but loadable (NaN/Inf weights); `strict=True` makes it an error."""


class NonFiniteWeightsError(WeightsError):
    """Weights hold NaN or Inf (a corrupted file that still parses), refused because the caller passed strict=True."""
