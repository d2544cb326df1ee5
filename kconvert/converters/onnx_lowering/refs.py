"""What the lowering knows about one ONNX value: its Keras (logical) shape and how it is laid out physically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorRef:
    """An ONNX value standing for one Keras tensor.

    `shape` is the Keras shape (None for unknown dims). `perm` says how the ONNX tensor is laid out:
    onnx_value = transpose(keras_tensor, perm); None means in Keras's own axis order. A channels_last
    activation kept in NCHW inside the graph has perm (0, 3, 1, 2). `flat_of` marks a Flatten of a
    permuted tensor whose flattening has not been emitted: the Keras value is Flatten(keras(flat_of)),
    while a Dense reading it may instead flatten the permuted tensor and permute its kernel rows.
    `mask` names the ONNX bool tensor holding the Keras mask that travels with the value (Embedding with
    mask_zero, Masking); UNSUPPORTED_MASK marks a mask the lowering could not compute.
    """

    name: str
    shape: tuple
    dtype: str = "float32"
    perm: tuple | None = None
    flat_of: TensorRef | None = field(default=None, compare=False)
    mask: str | None = None  # ONNX bool tensor (N, steps) with the Keras mask, if the value carries one

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def physical_axis(self, axis: int) -> int:
        """The ONNX axis holding Keras axis `axis`."""
        axis = axis % self.ndim
        return self.perm.index(axis) if self.perm else axis

    def physical_shape(self) -> tuple:
        return tuple(self.shape[p] for p in self.perm) if self.perm else self.shape


UNSUPPORTED_MASK = "<mask not lowered>"


def channels_first_perm(ndim: int) -> tuple:
    """(0, ndim-1, 1, ..., ndim-2): a channels_last tensor seen channels-first."""
    return (0, ndim - 1, *range(1, ndim - 1))


def compose(first: Sequence[int], then: Sequence[int]) -> tuple:
    """The single permutation equal to transpose(transpose(x, first), then)."""
    return tuple(first[i] for i in then)


def inverse(perm: Sequence[int]) -> tuple:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def normalize_perm(perm: Sequence[int] | None) -> tuple | None:
    """None for the identity permutation."""
    if perm is None:
        return None
    perm = tuple(int(p) for p in perm)
    return None if perm == tuple(range(len(perm))) else perm
