"""Writing an ONNX model while it is being built: large initializers go to the file as they are created.

A converted VGG16 holds 528 MB of weights; building its ModelProto, serializing it and writing the bytes would
hold them three times over. Instead, `StreamedOnnx.add` writes each large initializer straight to the output
(and the exporter lets go of the array), the graph keeps a stub with the tensor's name, type and dims, and
`finish` writes the rest of the model. Protobuf allows a message's fields in any order, so the file is laid out
as one `graph` field whose initializers come first, then the rest of the graph, then the ModelProto's other
fields. The graph's length is only known at the end: it is written as a fixed 5-byte varint (a non-minimal
encoding every protobuf parser accepts) and patched in place. Models at or over protobuf's 2 GB limit use ONNX
external data instead: the tensors go to `<name>.data` beside the model, referenced by offset.
Both files are written to temporary names in the target directory and renamed into place at the end.
"""

from __future__ import annotations

import os

import numpy as np
from onnx import ModelProto, TensorProto, helper

from ..errors import KConvertError
from .atomic import _remove_quietly, _target, commit, create_temp

# protobuf field tags (field number << 3 | length-delimited)
_MODEL_GRAPH = 0x3A  # ModelProto.graph = 7
_GRAPH_INITIALIZER = 0x2A  # GraphProto.initializer = 5
_GRAPH_RESERVED = 0x1A  # GraphProto field 3, reserved: a withdrawn initializer becomes an ignored unknown field
_TENSOR_RAW_DATA = 0x4A  # TensorProto.raw_data = 9

STREAM_MIN_BYTES = 1 << 20  # smaller initializers stay in the proto


def _varint5(n: int) -> bytes:
    """`n` as a 5-byte varint (padded with continuation bits), patchable in place."""
    return bytes([(n >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5)])


class StreamedOnnx:
    """The output file(s) of one streamed ONNX export; `external` puts tensors in `<name>.data`."""

    def __init__(self, path: str | os.PathLike, external: bool = False):
        self.path = _target(path)
        self.external = external
        self.data_name = os.path.basename(self.path) + ".data"
        self._tmp_model = self._tmp_data = None
        self.streamed: dict[str, int] = {}  # initializer name -> offset of its entry (inline) or data
        self.min_bytes = STREAM_MIN_BYTES
        self._f = None
        try:
            self._tmp_model = create_temp(self.path)
            if external:
                self._tmp_data = create_temp(os.path.join(os.path.dirname(self.path), self.data_name))
            self._f = open(self._tmp_data if external else self._tmp_model, "r+b")
            if not external:
                self._f.write(bytes([_MODEL_GRAPH]) + _varint5(0))
        except OSError as e:
            self.abort()
            raise KConvertError(f"cannot write the ONNX model: {e.strerror or e}", file=self.path) from None

    def add(self, name: str, array: np.ndarray) -> TensorProto:
        """Write `array` as initializer `name`; returns the stub the graph keeps in its place."""
        array = np.ascontiguousarray(array)
        dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
        stub = TensorProto(name=name, data_type=dtype, dims=array.shape)
        data = memoryview(array.reshape(-1)).cast("B") if array.size else b""
        f = self._f
        try:
            if self.external:
                offset = f.tell()
                f.write(data)
                stub.data_location = TensorProto.EXTERNAL
                for key, value in (("location", self.data_name), ("offset", str(offset)), ("length", str(len(data)))):
                    entry = stub.external_data.add()
                    entry.key, entry.value = key, value
            else:
                offset = f.tell()
                header = stub.SerializeToString()
                tensor_len = len(header) + 1 + 5 + len(data)
                f.write(bytes([_GRAPH_INITIALIZER]) + _varint5(tensor_len) + header + bytes([_TENSOR_RAW_DATA])
                        + _varint5(len(data)))
                f.write(data)
        except OSError as e:
            self.abort()
            raise KConvertError(f"cannot write the ONNX model: {e.strerror or e}", file=self.path) from None
        self.streamed[name] = offset
        return stub

    def withdraw(self, names) -> None:
        """Initializers the exporter took back (a lowering rolled back): inline, their entries become an unknown
        field the parsers skip; in external data the bytes are simply left unreferenced."""
        for name in names:
            offset = self.streamed.pop(name, None)
            if offset is not None and not self.external:
                end = self._f.tell()
                self._f.seek(offset)
                self._f.write(bytes([_GRAPH_RESERVED]))
                self._f.seek(end)

    def finish(self, proto: ModelProto) -> list[str]:
        """Write the rest of `proto` (whose graph holds the stubs), sync, and rename into place (`atomic.commit`)."""
        try:
            if self.external:
                self._f.close()
                with open(self._tmp_model, "r+b") as f:
                    f.write(proto.SerializeToString())
                # the data file first: the model is what refers to it (see formats.onnx_file for the order)
                commit([(self._tmp_data, os.path.join(os.path.dirname(self.path), self.data_name)),
                        (self._tmp_model, self.path)])
                return [self.path, os.path.join(os.path.dirname(self.path), self.data_name)]
            graph = proto.graph
            rest = [t for t in graph.initializer if t.name not in self.streamed]
            head = ModelProto()
            head.CopyFrom(proto)
            head.ClearField("graph")
            graph_rest = type(graph)()
            graph_rest.CopyFrom(graph)
            del graph_rest.initializer[:]
            graph_rest.initializer.extend(rest)
            tail = graph_rest.SerializeToString()
            f = self._f
            f.write(tail)
            graph_len = f.tell() - 6
            if graph_len >= 1 << 31:
                raise KConvertError("the ONNX model is over protobuf's 2 GB limit; write it with external data",
                                    file=self.path)
            f.write(head.SerializeToString())
            f.seek(1)
            f.write(_varint5(graph_len))
            f.close()
            commit([(self._tmp_model, self.path)])
            return [self.path]
        except OSError as e:
            self.abort()
            raise KConvertError(f"cannot write the ONNX model: {e.strerror or e}", file=self.path) from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the temporary files (any existing output stays untouched)."""
        if self._f is not None and not self._f.closed:
            self._f.close()
        for tmp in (self._tmp_model, self._tmp_data):
            if tmp:
                _remove_quietly(tmp)
