"""The state of one lowering: the ONNX builder, the opset, and the layout bookkeeping between layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...ops.onnx_builder import OnnxBuilder
from .refs import TensorRef, compose, inverse, normalize_perm

ONNX_DTYPES = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9, "float16": 10,
               "float64": 11}


class LoweringContext:
    """Emits nodes through an `OnnxBuilder` and converts values between layouts with as few Transposes as possible.

    Every layout change goes through `as_perm`, which caches what it emitted, so a value needed in the same
    layout by several consumers is transposed once.
    """

    def __init__(self, opset: int = 17, prefix: str = ""):
        self.opset = int(opset)
        self.builder = OnnxBuilder(prefix)
        self._layout_cache: dict[tuple, TensorRef] = {}
        self.extra_inputs: list = []  # ValueInfoProtos a lowering adds as graph inputs (stateful RNN states)
        self.extra_outputs: list = []  # ... and as graph outputs (their final states)

    # ------------------------------------------------------------------ emitting
    def node(self, op_type: str, inputs: Sequence[str], n_outputs: int = 1, **attrs):
        return self.builder.node(op_type, list(inputs), n_outputs=n_outputs, **attrs)

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        return self.builder.const(value, hint, dtype=dtype)

    def ints(self, values, hint: str = "shape") -> str:
        return self.builder.const(np.asarray(values, dtype=np.int64).reshape(-1), hint, dtype=np.int64)

    def checkpoint(self) -> tuple:
        """A mark to `rollback` to: what was emitted so far."""
        return (len(self.builder.nodes), len(self.builder.initializers), dict(self._layout_cache),
                len(self.extra_inputs), len(self.extra_outputs))

    def rollback(self, mark: tuple) -> None:
        """Forget everything emitted since `checkpoint` (a lowering that gave up half way)."""
        nodes, inits, cache, extra_in, extra_out = mark
        del self.builder.nodes[nodes:]
        if self.builder.stream is not None:
            self.builder.stream.withdraw([t.name for t in self.builder.initializers[inits:]])
        del self.builder.initializers[inits:]
        self._layout_cache = cache
        del self.extra_inputs[extra_in:]
        del self.extra_outputs[extra_out:]

    # ------------------------------------------------------------------ layouts
    def as_perm(self, ref: TensorRef, perm: Sequence[int] | None) -> TensorRef:
        """`ref` laid out as transpose(keras_value, perm) (None: Keras's own order)."""
        perm = normalize_perm(perm)
        if ref.flat_of is not None:
            ref = self._materialize_flat(ref)
        if ref.perm == perm:
            return ref
        key = (ref.name, ref.perm, perm)  # a relabelled value shares its name with another perm
        if key in self._layout_cache:
            return self._layout_cache[key]
        current = ref.perm or tuple(range(ref.ndim))
        # physical = transpose(keras, current); wanted = transpose(keras, perm) = transpose(physical, q)
        q = compose(inverse(current), perm or tuple(range(ref.ndim)))
        out = TensorRef("", ref.shape, ref.dtype, perm, None, ref.mask)
        if _moves_only_unit_axes(ref.physical_shape(), q):  # same element order: a free Reshape
            target = [0 if i == 0 and q[0] == 0 else d for i, d in enumerate(out.physical_shape())]
            name = self.node("Reshape", [ref.name, self.ints(target, "shape")])
        else:
            name = self.node("Transpose", [ref.name], perm=list(q))
        out = TensorRef(name, ref.shape, ref.dtype, perm, None, ref.mask)
        self._layout_cache[key] = out
        return out

    def keras(self, ref: TensorRef) -> TensorRef:
        """`ref` in Keras's axis order (emits a Transpose or a delayed Flatten when needed)."""
        return self.as_perm(ref, None)

    def flatten_physical(self, ref: TensorRef) -> tuple[str, tuple | None]:
        """For a Dense reading `ref`: (name of a 2-D tensor, source perm or None).

        With a source perm, the rows of the 2-D tensor are the permuted source's elements in C order, and the
        reader permutes its kernel rows to match instead of the activations being transposed.
        """
        if ref.flat_of is None:
            return self.keras(ref).name, None
        src = ref.flat_of
        key = (src.name, src.perm, "flat")
        if key not in self._layout_cache:
            name = self.node("Flatten", [src.name], axis=1)
            self._layout_cache[key] = TensorRef(name, ref.shape, ref.dtype)
        return self._layout_cache[key].name, src.perm

    def _materialize_flat(self, ref: TensorRef) -> TensorRef:
        key = (ref.flat_of.name, ref.flat_of.perm, "keras_flat")
        if key not in self._layout_cache:
            src = self.keras(ref.flat_of)
            name = self.node("Flatten", [src.name], axis=1)
            self._layout_cache[key] = TensorRef(name, ref.shape, ref.dtype, None, None, ref.mask)
        return self._layout_cache[key]

    def common_perm(self, refs: Sequence[TensorRef]) -> tuple | None:
        """The layout most inputs already have (so an elementwise merge transposes the fewest)."""
        if any(r.flat_of is not None for r in refs) or len({r.ndim for r in refs}) != 1:
            return None
        counts: dict = {}
        for r in refs:
            counts[r.perm] = counts.get(r.perm, 0) + 1
        return max(counts, key=lambda p: (counts[p], p is not None))


def _moves_only_unit_axes(shape: Sequence, q: Sequence[int]) -> bool:
    """True when transpose(x, q) keeps the element order (only size-1 axes move) and the result is static."""
    moved = [a for a in q if shape[a] != 1]
    if moved != sorted(moved):
        return False
    return all(d is not None for i, d in enumerate(shape) if i != 0) and (q[0] == 0)
