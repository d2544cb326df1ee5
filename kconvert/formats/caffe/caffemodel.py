"""Binary `.caffemodel` files (a serialized `caffe.NetParameter`), read and written without protobuf.

Reading walks the protobuf wire format with small Python loops over *fields* (a net has few) and
returns every blob payload as a read-only numpy view of an mmap of the file: nothing is decoded value
by value and nothing is copied unless the encoding forces it. Files over 2 GB, or over Caffe's own
512 MB message limit, are read like small ones. Writing streams each blob from its array; length
prefixes are computed from sizes, so no message is ever built in memory.

Field numbers (BVLC `src/caffe/proto/caffe.proto`):

    NetParameter      name=1  layers=2 (V1LayerParameter)  layer=100 (LayerParameter)
    LayerParameter    name=1  type=2 (string)  blobs=7
    V1LayerParameter  layer=1 (a V0LayerParameter)  name=4  type=5 (enum LayerType)  blobs=6
    V0LayerParameter  name=1  type=2 (string: "conv", "innerproduct", ...)  blobs=50
    BlobProto         num=1 channels=2 height=3 width=4 (legacy int32)  data=5 (packed float)
                      diff=6  shape=7 (BlobShape: dim=1, packed int64)  double_data=8  double_diff=9
                      raw_data_type=10  raw_data=12 (bytes)

`raw_data`/`raw_data_type` come from the NVIDIA/caffe fork (its `src/caffe/proto/caffe.proto`, read by
`Blob::FromProto` and written by `Blob::ToProto` in `src/caffe/blob.cpp`; OpenCV's opencv-caffe.proto
has the same numbers). Enum `Type`: DOUBLE=0, FLOAT=1, FLOAT16=2 (INT=3, UINT=4, BOOL=5 are not weights).

What a blob becomes (as Caffe's `Blob::FromProto` reads it):

- Shape: when any legacy dim (num/channels/height/width) is present, always 4-D
  `(num, channels, height, width)`, as stored: old Caffe wrote an InnerProduct weight as (1, 1, N, K)
  and its bias as (1, 1, 1, N); the converter squeezes to the deploy net's shape (Caffe matches them
  right-aligned). An absent legacy dim counts as 1 (Caffe reads 0 and then rejects any data).
  Otherwise the `shape` dims; a blob with neither is a scalar, shape ().
- Values: `double_data` if any, else `data`, else `raw_data` (Caffe's order). Packed `data` and raw
  FLOAT data are zero-copy views. `double_data` and FP16 `raw_data` become float32 copies, or, with
  `keep_dtype=True`, views in their stored dtype. Unpacked floats (one tag per value) are gathered
  with one strided copy. Every returned array is read-only.
- `diff`, `double_diff`, `raw_diff` and every other field are skipped by wire type, never decoded.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ExportError, FormatError
from ..atomic import atomic_write

__all__ = [
    "CaffeLayer",
    "CaffeModel",
    "read_caffemodel",
    "iter_layers",
    "write_caffemodel",
    "V1_LAYER_TYPES",
    "V0_LAYER_TYPES",
]

# V1LayerParameter.LayerType -> V2 type string (BVLC upgrade_proto.cpp, UpgradeV1LayerType).
V1_LAYER_TYPES: dict[int, str] = {
    0: "", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
    4: "Convolution", 39: "Deconvolution", 5: "Data", 6: "Dropout", 32: "DummyData", 7: "EuclideanLoss",
    25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
    16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid",
    27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
    33: "Slice", 23: "TanH", 24: "WindowData", 31: "Threshold",
}
_V1_ENUMS = {name: number for number, name in V1_LAYER_TYPES.items()}

# V0 type strings -> V2 type strings (BVLC upgrade_proto.cpp, UpgradeV0LayerType then UpgradeV1LayerType).
# "padding" has no V2 type (the upgrade folds it into the next layer); it is returned as is.
V0_LAYER_TYPES: dict[str, str] = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution", "data": "Data",
    "dropout": "Dropout", "euclidean_loss": "EuclideanLoss", "flatten": "Flatten", "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output", "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN", "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling", "relu": "ReLU", "sigmoid": "Sigmoid", "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss", "split": "Split", "tanh": "TanH", "window_data": "WindowData",
}
_V0_NAMES = {v2: v0 for v0, v2 in V0_LAYER_TYPES.items()}

# BlobProto.raw_data_type (NVIDIA/caffe enum Type) -> stored dtype
_RAW_DTYPES = {0: np.dtype("<f8"), 1: np.dtype("<f4"), 2: np.dtype("<f2")}
_RAW_TYPE_NAMES = {3: "INT", 4: "UINT", 5: "BOOL"}
_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")

# wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, its V2 type string and its parameter blobs.

    `version` is 2 for `layer {}` (LayerParameter), 1 for `layers {}` (V1, enum type), 0 for a V1
    wrapper around a V0 `layer`. `raw_type` is the type as stored (V1 enum number, V0 string, V2 string).
    An unknown V1 enum becomes the type "V1:<number>". `offset` is the layer's byte offset in the file.
    """

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    version: int = 2
    raw_type: int | str | None = None
    offset: int = -1


@dataclass
class CaffeModel:
    """A whole caffemodel: the net's name and its layers in file order (usually the training net)."""

    path: str
    name: str
    layers: list[CaffeLayer]

    def by_name(self) -> dict[str, CaffeLayer]:
        """Layers by name; a repeated name keeps its last layer, as Caffe's CopyTrainedLayersFrom does."""
        return {layer.name: layer for layer in self.layers}


# ---------------------------------------------------------------------------------------------- reading


class _WireError(Exception):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _WireError("truncated varint", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes", start)


def _field(buf, pos: int, end: int) -> tuple[int, int, int, int]:
    """The field at `pos`: (number, wire type, a, next). `a` is the value of a varint, else where the
    payload starts; `next` is where the field ends. Raises _WireError on anything malformed."""
    key, p = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise _WireError("field number 0 (corrupt data or not a caffemodel)", pos)
    if wire == _VARINT:
        value, p = _varint(buf, p, end)
        return number, wire, value, p
    if wire == _LEN:
        n, p = _varint(buf, p, end)
        if n > end - p:
            raise _WireError(f"field {number} declares {n} bytes but only {end - p} remain in its message", pos)
        return number, wire, p, p + n
    if wire in (_I32, _I64):
        n = 4 if wire == _I32 else 8
        if n > end - p:
            raise _WireError(f"field {number} is cut short: {n} bytes needed, {end - p} remain", pos)
        return number, wire, p, p + n
    if wire in (3, 4):
        raise _WireError(f"field {number} is a protobuf group (wire type {wire}), which Caffe never writes", pos)
    raise _WireError(f"field {number} has invalid wire type {wire}", pos)


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _open_map(path: str):
    """A read-only mmap of the file (bytes for an empty or unmappable file)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FormatError("no such file", file=path) from None
    except OSError as e:
        raise FormatError(f"cannot open: {e.strerror or e}", file=path) from None
    with f:
        try:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            try:
                return f.read()
            except OSError as e:
                raise FormatError(f"cannot read: {e.strerror or e}", file=path) from None


class _Reader:
    """Scans one caffemodel; `layers()` yields its layers one at a time."""

    def __init__(self, path: str | os.PathLike, keep_dtype: bool):
        self.path = os.fspath(path)
        self.keep_dtype = keep_dtype
        self.buf = _open_map(self.path)
        self.size = len(self.buf)
        self.net_name = ""

    def _error(self, e: _WireError, layer: str | None, what: str) -> FormatError:
        msg = e.message
        if "remain" in msg and what == "net":
            msg += " (the file is truncated)"
        return FormatError(f"{what}: {msg} (byte offset {e.offset})", file=self.path, layer=layer)

    def _text(self, a: int, b: int) -> str:
        return bytes(self.buf[a:b]).decode("utf-8", errors="replace")

    def layers(self) -> Iterator[CaffeLayer]:
        buf, pos, end = self.buf, 0, self.size
        index = 0
        while pos < end:
            try:
                number, wire, a, nxt = _field(buf, pos, end)
            except _WireError as e:
                raise self._error(e, None, "net") from None
            if wire == _LEN and number in (2, 100):
                yield self._layer(a, nxt, 2 if number == 100 else 1, pos, index)
                index += 1
            elif wire == _LEN and number == 1:
                self.net_name = self._text(a, nxt)
            pos = nxt

    def _scan(self, start: int, end: int, wanted: dict[int, int], label: str) -> dict[int, list]:
        """Collect the fields named in `wanted` (number -> wire type) of the message [start, end)."""
        found: dict[int, list] = {n: [] for n in wanted}
        pos = start
        while pos < end:
            try:
                number, wire, a, nxt = _field(self.buf, pos, end)
            except _WireError as e:
                raise self._error(e, None, label) from None
            if wanted.get(number) == wire:
                found[number].append(a if wire == _VARINT else (a, nxt, pos))
            pos = nxt
        return found

    def _layer(self, start: int, end: int, version: int, offset: int, index: int) -> CaffeLayer:
        label = f"layer #{index} at byte {offset}"
        if version == 2:
            f = self._scan(start, end, {1: _LEN, 2: _LEN, 7: _LEN}, label)
            name = self._text(*f[1][-1][:2]) if f[1] else ""
            raw_type = self._text(*f[2][-1][:2]) if f[2] else ""
            type_, blob_ranges = raw_type, f[7]
        else:
            f = self._scan(start, end, {1: _LEN, 4: _LEN, 5: _VARINT, 6: _LEN}, label)
            name = self._text(*f[4][-1][:2]) if f[4] else ""
            raw_type = f[5][-1] if f[5] else None
            blob_ranges = f[6]
            if f[1]:  # a V0 layer inside the V1 wrapper: take what the wrapper lacks from it
                a, b, _ = f[1][-1]
                v0 = self._scan(a, b, {1: _LEN, 2: _LEN, 50: _LEN}, label)
                name = name or (self._text(*v0[1][-1][:2]) if v0[1] else "")
                blob_ranges = blob_ranges or v0[50]
                if raw_type is None:
                    version = 0
                    raw_type = self._text(*v0[2][-1][:2]) if v0[2] else ""
            if version == 0:
                type_ = V0_LAYER_TYPES.get(raw_type, raw_type)
            else:
                raw_type = _int32(raw_type or 0)
                type_ = V1_LAYER_TYPES.get(raw_type, f"V1:{raw_type}")
        layer_name = name or label
        blobs = [self._blob(a, b, boff, layer_name, i) for i, (a, b, boff) in enumerate(blob_ranges)]
        return CaffeLayer(name, type_, blobs, version, raw_type, offset)

    # -- blobs

    def _run(self, pos: int, end: int, tag: int, width: int) -> int:
        """How many consecutive unpacked fixed-width values start at `pos` (each one tag byte + value)."""
        buf = self.buf
        n = 0
        block = 1 << 16
        while True:
            avail = (end - pos) // width - n
            if avail <= 0:
                return n
            m = min(block, avail)
            tags = np.frombuffer(buf, np.uint8, count=(m - 1) * width + 1, offset=pos + n * width)[::width]
            bad = tags != tag
            if bad.any():
                return n + int(np.argmax(bad))
            n += m

    def _values(self, segments: list[tuple[int, int, int]], dtype: np.dtype) -> np.ndarray:
        """Concatenate (offset, count, stride) segments of the file; a single packed one is a view."""
        segments = [s for s in segments if s[1]]
        views = [np.ndarray((n,), dtype, buffer=self.buf, offset=off, strides=(stride,))
                 for off, n, stride in segments]
        if not views:
            return np.empty(0, dtype)
        if len(views) == 1 and segments[0][2] == dtype.itemsize:
            return views[0]
        return np.concatenate(views)

    def _dims(self, a: int, b: int, where: str) -> list[int]:
        dims: list[int] = []
        pos = a
        while pos < b:
            number, wire, v, nxt = _field(self.buf, pos, b)
            if number == 1 and wire == _VARINT:
                dims.append(_int64(v))
            elif number == 1 and wire == _LEN:
                p = v
                while p < nxt:
                    d, p = _varint(self.buf, p, nxt)
                    dims.append(_int64(d))
            pos = nxt
        if any(d < 0 for d in dims):
            raise _WireError(f"{where} has a negative dimension in shape {tuple(dims)}", a)
        return dims

    def _blob(self, start: int, end: int, offset: int, layer: str, index: int) -> np.ndarray:
        where = f"blob {index}"
        try:
            return self._read_blob(start, end, offset, where)
        except _WireError as e:
            raise self._error(e, layer, where) from None

    def _read_blob(self, start: int, end: int, offset: int, where: str) -> np.ndarray:
        buf = self.buf
        legacy: list[int | None] = [None] * 4
        dims: list[int] = []
        floats: list[tuple[int, int, int]] = []
        doubles: list[tuple[int, int, int]] = []
        raw_type: int | None = None
        raw: tuple[int, int, int] | None = None
        pos = start
        while pos < end:
            number, wire, a, nxt = _field(buf, pos, end)
            if number in (5, 8) and wire == _LEN:
                size = 4 if number == 5 else 8
                if (nxt - a) % size:
                    raise _WireError(f"packed {'data' if size == 4 else 'double_data'} of {nxt - a} bytes "
                                     f"is not a whole number of {size}-byte values", pos)
                (floats if number == 5 else doubles).append((a, (nxt - a) // size, size))
            elif (number, wire) in ((5, _I32), (8, _I64)):
                width = 5 if number == 5 else 9
                n = self._run(pos, end, buf[pos], width) if a == pos + 1 else 1
                (floats if number == 5 else doubles).append((a, n, width))
                nxt = pos + n * width if n > 1 else nxt
            elif 1 <= number <= 4 and wire == _VARINT:
                legacy[number - 1] = _int32(a)
            elif number == 7 and wire == _LEN:
                dims.extend(self._dims(a, nxt, where))  # a repeated message field merges, as in protobuf
            elif number == 10 and wire == _VARINT:
                raw_type = _int32(a)
            elif number == 12 and wire == _LEN:
                raw = (a, nxt, pos)
            pos = nxt

        if any(d is not None for d in legacy):
            shape = tuple(1 if d is None else d for d in legacy)
            if min(shape) < 0:
                raise _WireError(f"{where} has a negative legacy dimension {shape}", offset)
        else:
            shape = tuple(dims)
        count = math.prod(shape)

        if doubles:
            values = self._values(doubles, _F64)
        elif floats:
            values = self._values(floats, _F32)
        elif raw is not None:
            a, b, rpos = raw
            if raw_type is None:
                raise _WireError("raw_data without raw_data_type", rpos)
            dtype = _RAW_DTYPES.get(raw_type)
            if dtype is None:
                kind = _RAW_TYPE_NAMES.get(raw_type, str(raw_type))
                raise _WireError(f"raw_data of type {kind} is not a weight type (DOUBLE, FLOAT, FLOAT16)", rpos)
            if (b - a) % dtype.itemsize:
                raise _WireError(f"raw_data of {b - a} bytes is not a whole number of {dtype.itemsize}-byte "
                                 "values", rpos)
            values = self._values([(a, (b - a) // dtype.itemsize, dtype.itemsize)], dtype)
        else:
            values = np.empty(0, _F32)
        if values.size != count:
            raise _WireError(f"shape {shape} needs {count} values but the blob holds {values.size}", offset)
        if values.dtype != _F32 and not self.keep_dtype:
            values = values.astype(_F32)
        values = values.reshape(shape)
        values.flags.writeable = False
        return values


def release_pages(view: np.ndarray) -> None:
    """Unmap the file pages a blob view has touched from this process (they stay in the page cache, and a later
    read maps them again): after a blob is converted, its pages need not count against the converter's memory.
    A no-op for arrays that are not views of a mapped caffemodel, and where madvise is unavailable."""
    base = view
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, mmap.mmap) or base.closed or not hasattr(base, "madvise") or view.nbytes == 0:
        return
    start = view.__array_interface__["data"][0] - np.frombuffer(base, np.uint8, count=1).__array_interface__["data"][0]
    first = start - start % mmap.PAGESIZE
    length = min(start + view.nbytes, len(base)) - first
    try:
        base.madvise(mmap.MADV_DONTNEED, first, length)
    except (OSError, ValueError):
        pass


def iter_layers(path: str | os.PathLike, *, keep_dtype: bool = False) -> Iterator[CaffeLayer]:
    """Yield the layers of a caffemodel one at a time, in file order (bounded memory: blobs are views
    of the mapped file, and a layer is only parsed when asked for). Malformed input raises FormatError
    naming the file, the layer when known and the byte offset."""
    return _Reader(path, keep_dtype).layers()


def read_caffemodel(path: str | os.PathLike, *, keep_dtype: bool = False, strict: bool = False) -> CaffeModel:
    """Read a whole caffemodel (V0, V1 or V2 layers). Blobs are read-only views of the mapped file
    where the encoding allows (the file stays mapped while any of them is alive); see the module
    docstring for shapes and dtypes. Parsing touches only the few bytes around the blobs.
    NaN/Inf in the blobs warn (KConvertWarning), or raise NonFiniteWeightsError with `strict=True`; the scan
    reads each blob once and gives its pages back."""
    from ..finite_weights import check_finite, nonfinite_count

    reader = _Reader(path, keep_dtype)
    layers = list(reader.layers())
    bad = []
    for layer in layers:
        for i, blob in enumerate(layer.blobs):
            if nonfinite_count(blob):
                bad.append((layer.name, f"{layer.name} blob {i}", blob))
            release_pages(blob)
    if bad:
        check_finite(bad, reader.path, strict)
    return CaffeModel(reader.path, reader.net_name, layers)


# ---------------------------------------------------------------------------------------------- writing

_STORAGE = {"float": _F32, "double": _F64, "fp16": np.dtype("<f2")}
_CHUNK_BYTES = 16 << 20


def _enc_varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


class _Payload:
    """An array to be written as raw little-endian values of `dtype`, in chunks."""

    def __init__(self, array: np.ndarray, dtype: np.dtype):
        self.array = array
        self.dtype = dtype
        self.nbytes = array.size * dtype.itemsize


def _size(pieces: list) -> int:
    return sum(p.nbytes if isinstance(p, _Payload) else len(p) for p in pieces)


def _message(number: int, pieces: list) -> list:
    return [_key(number, _LEN) + _enc_varint(_size(pieces)), *pieces]


def _string(number: int, text: str) -> bytes:
    data = text.encode("utf-8")
    return _key(number, _LEN) + _enc_varint(len(data)) + data


def _blob_pieces(array: np.ndarray, storage: np.dtype, legacy_dims: bool, fail) -> list:
    """A BlobProto's fields in field-number order (as protobuf serializes them)."""
    pieces: list = []
    if legacy_dims:
        if array.ndim > 4:
            raise fail(f"a {array.ndim}-D blob {array.shape} has no legacy 4-D form")
        dims4 = (1,) * (4 - array.ndim) + array.shape
        if max(dims4) > 2**31 - 1:
            raise fail(f"blob shape {array.shape} does not fit the legacy int32 dims")
        pieces += [_key(n, _VARINT) + _enc_varint(d) for n, d in zip((1, 2, 3, 4), dims4)]
    shape = []
    if not legacy_dims and array.ndim:
        dims = b"".join(_enc_varint(d) for d in array.shape)
        shape = _message(7, [_key(1, _LEN) + _enc_varint(len(dims)) + dims])
    payload = _Payload(array, storage)
    if storage == _F32:
        pieces += (_message(5, [payload]) if array.size else []) + shape
    elif storage == _F64:
        pieces += shape + (_message(8, [payload]) if array.size else [])
    else:  # FP16 in NVIDIA/caffe's raw_data
        pieces += shape + [_key(10, _VARINT) + _enc_varint(2)] + _message(12, [payload])
    return pieces


def _layer_fields(layer: Any) -> tuple[str, str | int, list]:
    if isinstance(layer, CaffeLayer):
        return layer.name, layer.type, layer.blobs
    name, type_, blobs = layer
    return name, type_, blobs


def _layer_pieces(name: str, type_: str | int, blobs: list, version: int, storage: np.dtype,
                  legacy_dims: bool, path: str) -> list:
    def fail(message: str) -> ExportError:
        return ExportError(message, file=path, layer=name)

    arrays = []
    for b in blobs:
        a = np.asarray(b)
        if a.dtype.kind not in "biuf":
            raise fail(f"a blob of dtype {a.dtype} cannot be written to a caffemodel")
        arrays.append(a)
    blob_msgs = [_blob_pieces(a, storage, legacy_dims, fail) for a in arrays]
    if isinstance(type_, int) and version != 1:
        if type_ not in V1_LAYER_TYPES:
            raise fail(f"unknown V1 LayerType enum value {type_}")
        type_ = V1_LAYER_TYPES[type_]
    if version == 2:
        pieces = [_string(1, name), _string(2, type_)]
        for m in blob_msgs:
            pieces += _message(7, m)
        return _message(100, pieces)
    if version == 1:
        enum = type_ if isinstance(type_, int) else _V1_ENUMS.get(type_)
        if enum is None:
            raise fail(f"layer type {type_!r} has no V1 LayerType enum value")
        pieces = [_string(4, name), _key(5, _VARINT) + _enc_varint(enum)]
        for m in blob_msgs:
            pieces += _message(6, m)
        return _message(2, pieces)
    if version == 0:
        pieces = [_string(1, name), _string(2, _V0_NAMES.get(type_, type_))]
        for m in blob_msgs:
            pieces += _message(50, m)
        return _message(2, _message(1, pieces))
    raise ValueError(f"version must be 0, 1 or 2, not {version!r}")


def _write_payload(f, p: _Payload) -> None:
    array = p.array
    if not array.size:
        return
    step = max(1, _CHUNK_BYTES // p.dtype.itemsize)
    flat = array.reshape(-1) if array.flags.c_contiguous else None
    for i in range(0, array.size, step):
        part = flat[i:i + step] if flat is not None else array.flat[i:i + step]
        part = np.ascontiguousarray(part, dtype=p.dtype)  # no copy when already right
        f.write(memoryview(part).cast("B"))


def _write_net(f, layers: Iterable[Any], *, version: int = 2, name: str = "", storage: str = "float",
               legacy_dims: bool = False, path: str = "") -> int:
    """Stream a NetParameter to the binary file object `f`; returns the number of bytes written."""
    if storage not in _STORAGE:
        raise ValueError(f"storage must be one of {sorted(_STORAGE)}, not {storage!r}")
    if version not in (0, 1, 2):
        raise ValueError(f"version must be 0, 1 or 2, not {version!r}")
    dtype = _STORAGE[storage]
    written = 0
    if name:
        head = _string(1, name)
        f.write(head)
        written += len(head)
    for layer in layers:
        lname, ltype, blobs = _layer_fields(layer)
        pieces = _layer_pieces(lname, ltype, list(blobs), version, dtype, legacy_dims, path)
        pending = bytearray()
        for p in pieces:
            if isinstance(p, _Payload):
                f.write(pending)
                pending = bytearray()
                _write_payload(f, p)
            else:
                pending += p
        f.write(pending)
        written += _size(pieces)
    return written


def write_caffemodel(path: str | os.PathLike, layers: Iterable[Any], version: int = 2, *, name: str = "",
                     storage: str = "float", legacy_dims: bool = False) -> None:
    """Write a caffemodel (temporary file, then rename), streaming each blob from its array.

    `layers`: CaffeLayer objects or (name, type, blobs) tuples, consumed one at a time (a generator
    keeps memory bounded). `version` 2 writes `layer {}` with string types; 1 writes V1 `layers {}`
    with enum types (a V2 type string is mapped; an unknown one is an ExportError); 0 writes a V1
    wrapper around a V0 layer (V0 type strings). `storage`: "float" (packed `data`, as BVLC Caffe
    writes), "double" (`double_data`) or "fp16" (NVIDIA `raw_data`, FLOAT16). `legacy_dims` writes
    num/channels/height/width (right-aligned, up to 4-D) instead of `shape`. Any size, over 2 GB too.
    """
    path = os.fspath(path)
    with atomic_write(path, "wb") as f:
        _write_net(f, layers, version=version, name=name, storage=storage, legacy_dims=legacy_dims,
                   path=path)
