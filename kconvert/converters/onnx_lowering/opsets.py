"""Which ONNX opsets an export may target: from 13 to the newest the installed onnxruntime runs."""

from __future__ import annotations

import functools

from ...errors import ConfigError

MIN_OPSET = 13
# every onnxruntime kconvert supports (>= 1.16) runs these; newer opsets are probed against the installed one
ALWAYS_SUPPORTED = 19


@functools.lru_cache(maxsize=1)
def max_opset() -> int:
    """The newest opset both the installed onnx and onnxruntime support (probed once: a one-node model)."""
    import onnx
    from onnx import TensorProto, helper

    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return newest
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    options = ort.SessionOptions()
    options.log_severity_level = 4
    for opset in range(newest, MIN_OPSET - 1, -1):
        ids = [helper.make_opsetid("", opset)]
        model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]),
                                  opset_imports=ids)
        model.ir_version = helper.find_min_ir_version_for(ids)
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return opset
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types for an unsupported opset
            continue
    return MIN_OPSET


def check_opset(opset: int) -> None:
    """Raise ConfigError for an opset outside [13, max_opset()]."""
    if isinstance(opset, int) and not isinstance(opset, bool) and MIN_OPSET <= opset <= ALWAYS_SUPPORTED:
        return
    top = max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"opset {opset!r} is not supported: choose one from {MIN_OPSET} to {top} (the newest the "
                          f"installed onnxruntime runs)")
