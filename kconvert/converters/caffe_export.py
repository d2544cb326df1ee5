"""A kconvert Model -> a Caffe deploy net (V2 NetParameter) and its caffemodel blobs.

The graph is walked in order; each layer class has one mapping (`@to_caffe`, in caffe_export_layers.py) that
adds Caffe layers for it. Caffe is NCHW: a channels_last Keras value of shape (N, *spatial, C) is the Caffe blob
(N, C, *spatial), and Keras axes are mapped accordingly. Two Keras habits have no Caffe layer of their own and are
carried on the value instead: a Flatten of an NCHW blob (Caffe flattens C,H,W; Keras H,W,C — the Dense after it
permutes its kernel rows) and a ZeroPadding2D (folded into the convolution that reads it). Whatever Caffe cannot
compute exactly is an ExportError naming the layer; nothing is approximated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ExportError

KERAS_TO_CAFFE: dict[str, Callable] = {}


def to_caffe(*class_names: str) -> Callable:
    """Register `fn(exporter, layer, inputs: list[CaffeValue], output_shapes: list[tuple]) -> list[CaffeValue]`
    for Keras layer classes."""
    def deco(fn: Callable) -> Callable:
        for name in class_names:
            KERAS_TO_CAFFE[name] = fn
        return fn
    return deco


@dataclass(frozen=True)
class CaffeValue:
    """A Keras value as a Caffe blob: its top name, Keras shape and Caffe (NCHW) shape.

    `flat_of` is the Caffe (C, H, W) shape a Keras Flatten left in Caffe's C,H,W order; `pad` a ZeroPadding2D
    ((top, bottom), (left, right)) not yet applied (the blob is then the unpadded one); `uses` how many layer
    calls read the Keras value; `keras_is_caffe` marks a channels_last value whose blob holds the Keras axis order
    itself (after a Permute, Reshape or Dense over the last axis); `plain` permutes it to the NCHW convention for
    the layers that need it.
    """

    top: str
    keras_shape: tuple
    caffe_shape: tuple
    flat_of: tuple | None = None
    pad: tuple | None = None
    uses: int = 0
    keras_is_caffe: bool = False  # the Keras value holds the Caffe blob's own axis order (a Permute to NCHW)


class CaffeExporter:
    """Builds the NetParameter and remembers each Caffe layer's blobs (computed when the caffemodel is written)."""

    def __init__(self, model, name: str | None = None):
        from ..formats.caffe.schema import NetParameter

        self.model = model
        self.channels_last = not any(getattr(la, "data_format", None) == "channels_first" for la in model.layers)
        self.net = NetParameter()
        self.net.name = name or getattr(model, "name", "") or "net"
        self.blobs: dict[str, tuple[str, Callable[[], list[np.ndarray]]]] = {}
        self._tops: set[str] = set()
        self._layers: dict = {}  # Caffe layer name -> its LayerParameter

    # ------------------------------------------------------------------ shapes and axes
    def caffe_shape(self, keras_shape: tuple) -> tuple:
        s = tuple(keras_shape)
        if self.channels_last and len(s) >= 3:
            return (s[0], s[-1], *s[1:-1])
        return s

    def caffe_axis(self, keras_axis: int, ndim: int) -> int:
        """The Caffe (NCHW) axis of a Keras axis of a rank-`ndim` value."""
        a = keras_axis % ndim
        if not self.channels_last or ndim < 3 or a == 0:
            return a
        return 1 if a == ndim - 1 else a + 1

    def value(self, top: str, keras_shape: tuple, keras_is_caffe: bool = False, **kw) -> CaffeValue:
        """The CaffeValue of a Keras value; `keras_is_caffe`: its Keras axis order is the blob's own (an ordinary
        value when that is also the convention: rank <= 2 or a channels_first model)."""
        keras_shape = tuple(keras_shape)
        if keras_is_caffe and self.channels_last and len(keras_shape) >= 3:
            return CaffeValue(top, keras_shape, keras_shape, keras_is_caffe=True, **kw)
        return CaffeValue(top, keras_shape, self.caffe_shape(keras_shape), **kw)

    # ------------------------------------------------------------------ emitting
    def unique_top(self, name: str) -> str:
        top, i = name, 1
        while top in self._tops:
            i += 1
            top = f"{name}_{i}"
        self._tops.add(top)
        return top

    def unique_layer(self, name: str) -> str:
        """`name`, or `name_2`, ... when a Caffe layer already has it (layers kconvert adds of its own)."""
        out, i = name, 1
        while out in self._layers:
            i += 1
            out = f"{name}_{i}"
        return out

    def rename_layer(self, lp, new: str) -> None:
        """Rename a Caffe layer (its blobs follow it)."""
        if lp.name in self.blobs:
            self.blobs[new] = self.blobs.pop(lp.name)
        if self._layers.get(lp.name) is lp:
            del self._layers[lp.name]
        self._layers[new] = lp
        lp.name = new

    def rename_top(self, old: str, new: str) -> None:
        """Rename blob `old` to `new` in every layer (so a net output keeps the name of the Keras layer)."""
        for lp in self.net.layer:
            for field in (lp.top, lp.bottom):
                for i, name in enumerate(field):
                    if name == old:
                        field[i] = new
        self._tops.add(new)

    def add(self, type_: str, name: str, bottoms: list, tops: list[str] | None = None, blobs=None):
        """Append a Caffe layer; `bottoms` are CaffeValues or top names, `blobs` a function giving its blobs.

        A name already taken (a Keras layer shared by several calls) becomes `name_2`, ...; with blobs, the copies
        then name their parameters (`param { name }`), so that Caffe shares them as Keras does.
        """
        first = self._layers.get(name)
        if first is not None:
            name = self.unique_layer(name)
        lp = self.net.layer.add()
        lp.name, lp.type = name, type_
        self._layers[name] = lp
        lp.bottom.extend(b.top if isinstance(b, CaffeValue) else b for b in bottoms)
        lp.top.extend(tops if tops is not None else [self.unique_top(name)])
        if blobs is not None:
            self.blobs[name] = (type_, blobs)
            if first is not None:
                shared = [f"{first.name}_param{i}" for i in range(len(blobs()))]
                for copy in ((first, lp) if not first.param else (lp,)):
                    for n in shared:
                        copy.param.add().name = n
        return lp

    def plain(self, v: CaffeValue, layer) -> CaffeValue:
        """`v` as an ordinary blob (the NCHW convention): a value in Keras's axis order is permuted there; a pending
        padding or a C,H,W-ordered flatten reaching a layer that cannot take it is an error."""
        if v.pad is not None:
            raise ExportError("a ZeroPadding2D whose padding is not taken by a convolution right after it has no "
                              "exact Caffe form", layer=layer.name)
        if v.keras_is_caffe:
            r = len(v.keras_shape)
            lp = self.add("Permute", self.unique_layer(f"{layer.name}__nchw"), [v])
            lp.permute_param.order.extend([0, r - 1, *range(1, r - 1)])
            return CaffeValue(lp.top[0], v.keras_shape, self.caffe_shape(v.keras_shape), uses=v.uses)
        if v.flat_of is not None and int(np.prod(v.flat_of[1:])) > 1:
            raise ExportError(f"reads a Flatten of a {v.flat_of} map, which Caffe orders C,H,W and Keras H,W,C "
                              "(only a Dense can absorb the difference)", layer=layer.name)
        return v

    def keras_order(self, v: CaffeValue, layer) -> CaffeValue:
        """`v` as a blob holding its Keras axis order (a Permute from the NCHW convention where they differ)."""
        if v.keras_is_caffe:
            return v
        v = self.plain(v, layer)
        r = len(v.keras_shape)
        if not self.channels_last or r <= 2:
            return v
        lp = self.add("Permute", self.unique_layer(f"{layer.name}__keras_order"), [v])
        lp.permute_param.order.extend([0, *range(2, r), 1])
        return self.value(lp.top[0], v.keras_shape, keras_is_caffe=True)

    # ------------------------------------------------------------------ the walk
    def run(self) -> None:
        graph = self.model._graph
        env: dict[int, CaffeValue] = {}
        uses: dict[int, int] = {}
        for node in graph.nodes:
            for v in node.inputs:
                uses[id(v)] = uses.get(id(v), 0) + 1
        for v in graph.outputs:
            uses[id(v)] = uses.get(id(v), 0) + 1
        for v in graph.inputs:
            shape = tuple(v.shape)
            top = self.unique_top(v.node.layer.name)
            caffe = self.caffe_shape(shape)
            lp = self.add("Input", top, [], [top])
            lp.input_param.shape.add().dim.extend([1, *(int(d) for d in caffe[1:])])
            if any(d is None for d in caffe[1:]):
                raise ExportError(f"Caffe needs a fixed input shape, got {shape}", layer=v.node.layer.name)
            env[id(v)] = CaffeValue(top, shape, caffe, uses=uses.get(id(v), 0))
        for node in graph.nodes:
            if node.is_input:
                continue
            layer = node.layer
            fn = KERAS_TO_CAFFE.get(type(layer).__name__)
            if fn is None:
                raise ExportError(f"{type(layer).__name__} has no Caffe equivalent", layer=layer.name)
            ins = [env[id(v)] for v in node.inputs]
            outs = fn(self, layer, ins, [tuple(v.shape) for v in node.outputs])
            if len(outs) != len(node.outputs):
                raise ExportError(f"the mapping made {len(outs)} outputs for {len(node.outputs)}", layer=layer.name)
            for v, out in zip(node.outputs, outs):
                env[id(v)] = replace(out, uses=uses.get(id(v), 0))
        for v in graph.outputs:  # outputs in the NCHW convention, named as the Keras layer's blob was
            value = env[id(v)]
            producer = next((lp for lp in reversed(self.net.layer) if value.top in lp.top), None)
            out = self.plain(value, v.node.layer)
            if out.top != value.top:  # the Permute to NCHW takes the output's blob and layer names
                aside = self.unique_top(f"{value.top}__keras_order")
                self.rename_top(value.top, aside)
                self.rename_top(out.top, value.top)
                if producer is not None:
                    converter, name = self.net.layer[-1], producer.name
                    self.rename_layer(producer, self.unique_layer(f"{name}__keras_order"))
                    self.rename_layer(converter, name)

    def layer_blobs(self) -> Iterator[tuple[str, str, list[np.ndarray]]]:
        """(name, type, blobs) of every Caffe layer with blobs, in net order, each computed when reached."""
        for lp in self.net.layer:
            entry = self.blobs.get(lp.name)
            if entry is not None:
                yield lp.name, entry[0], [np.asarray(b, np.float32) for b in entry[1]()]


def model_to_caffe(model, name: str | None = None) -> CaffeExporter:
    """Map `model` to Caffe; the exporter holds the deploy net (`.net`) and yields the blobs (`.layer_blobs()`)."""
    from . import caffe_export_layers  # noqa: F401 - registers the mappings

    if getattr(model, "_graph", None) is None:
        raise ExportError("the model has no graph to export", layer=getattr(model, "name", None))
    exporter = CaffeExporter(model, name)
    exporter.run()
    return exporter
