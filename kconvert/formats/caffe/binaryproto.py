"""Caffe `.binaryproto` mean files: one serialized BlobProto, read as a numpy array."""

from __future__ import annotations

import math
import os

import numpy as np
from google.protobuf.message import DecodeError

from ...errors import FormatError
from ..files import read_bytes
from .schema import BlobProto

__all__ = ["read_mean_binaryproto", "blob_to_array", "blob_shape"]

_RAW_DTYPES = {"FLOAT": "<f4", "FLOAT16": "<f2", "DOUBLE": "<f8"}


def blob_shape(blob: BlobProto) -> tuple[int, ...]:
    """The blob's shape: `shape` if present, else the legacy 4-D num/channels/height/width."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    legacy = (blob.num, blob.channels, blob.height, blob.width)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return tuple(int(d) for d in legacy)
    return ()


def blob_to_array(blob: BlobProto, *, file: str | None = None, what: str = "blob") -> np.ndarray:
    """The values of a BlobProto as a float32 array of its shape (double and FP16 data converted)."""
    shape = blob_shape(blob)
    if any(d < 0 for d in shape):
        raise FormatError(f"{what}: shape {shape} has a negative dimension", file=file)
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    elif len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    elif blob.HasField("raw_data"):
        type_name = BlobProto.DESCRIPTOR.fields_by_name["raw_data_type"].enum_type.values_by_number.get(
            blob.raw_data_type)
        dtype = _RAW_DTYPES.get(type_name.name if type_name is not None else "")
        if dtype is None:
            raise FormatError(f"{what}: raw_data of type {blob.raw_data_type} is not a float type", file=file)
        if len(blob.raw_data) % np.dtype(dtype).itemsize:
            raise FormatError(f"{what}: raw_data holds {len(blob.raw_data)} bytes, not a whole number of "
                              f"{np.dtype(dtype).name} values", file=file)
        values = np.frombuffer(blob.raw_data, dtype=dtype).astype(np.float32)
    else:
        raise FormatError(f"{what} holds no data", file=file)
    expected = math.prod(shape)  # Python integers: a huge declared shape cannot wrap around
    if values.size != expected:
        raise FormatError(f"{what}: shape {shape} needs {expected} values, the file holds {values.size}", file=file)
    return values.reshape(shape)


def read_mean_binaryproto(path: str | os.PathLike) -> np.ndarray:
    """Read a mean file (e.g. `imagenet_mean.binaryproto`) as float32, shaped as stored (usually 1, C, H, W)."""
    path = os.fspath(path)
    data = read_bytes(path, ".binaryproto file")
    if not data:
        raise FormatError("the file is empty", file=path)
    blob = BlobProto()
    try:
        blob.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise FormatError(f"not a Caffe BlobProto (truncated or another format): {err}", file=path) from None
    return blob_to_array(blob, file=path, what="the mean blob")
