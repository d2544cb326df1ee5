"""A small helper collecting ONNX nodes and initializers with unique names, for op emissions."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# onnx may write an IR version newer than the installed onnxruntime reads; 8 covers opsets 13-17.
IR_VERSION = 8


class OnnxBuilder:
    """Accumulates nodes and constant initializers of one ONNX graph."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._counter = 0
        self.stream = None  # a StreamedOnnx (formats/onnx_stream.py): large constants go straight to the file

    def unique(self, hint: str) -> str:
        self._counter += 1
        return f"{self.prefix}{hint}_{self._counter}"

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        name = self.unique(hint)
        array = np.asarray(value, dtype=dtype)
        if self.stream is not None and array.nbytes >= self.stream.min_bytes:
            self.initializers.append(self.stream.add(name, array))
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op_type: str, inputs: list[str], n_outputs: int = 1, output: str | None = None,
             **attrs) -> str | list[str]:
        outs = [output] if (output and n_outputs == 1) else [self.unique(op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.unique(op_type), **attrs))
        return outs[0] if n_outputs == 1 else outs

    def make_model(self, inputs: list[tuple[str, tuple]], outputs: list[tuple[str, tuple]], opset: int = 17):
        """Wrap what was emitted into a float32 ModelProto (used by tests and, later, the exporter)."""
        def vi(name, shape):
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

        graph = helper.make_graph(self.nodes, "kconvert", [vi(*i) for i in inputs], [vi(*o) for o in outputs],
                                  initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, IR_VERSION)
        return model
