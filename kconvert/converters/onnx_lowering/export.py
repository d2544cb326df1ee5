"""Lower a Keras-model graph to an ONNX ModelProto: graph passes, one lowering per layer, layout bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from ...errors import ExportError, KConvertError
from ...formats.onnx_file import too_big_for_protobuf
from .context import ONNX_DTYPES, LoweringContext
from .passes import plan_passes
from .refs import UNSUPPORTED_MASK, TensorRef, channels_first_perm
from .registry import lowering_for
from .trace import trace_lowering

MIN_OPSET = 13
DEFAULT_OPSET = 17


def lower_model(model, opset: int = DEFAULT_OPSET, batch: int | None = None, inputs_as_nchw: bool = False,
                optimize: bool = True, check: bool = True, progress=None, stream=None) -> onnx.ModelProto:
    """The ONNX model computing `model` (a kconvert Model) at inference.

    The batch dimension is symbolic ("N") unless `batch` fixes it; other unknown dims are symbolic too.
    `inputs_as_nchw` declares channels_last image inputs channels-first. `optimize` runs the graph passes
    (BatchNormalization folding, identity removal). `progress(done, total)` is called after each layer.
    With `stream` (a formats.onnx_stream.StreamedOnnx) large constants are written to the file as they are made
    and the graph keeps stubs; deferred weights are let go of after their layer (the model never sits whole in
    memory).
    """
    from .opsets import check_opset

    check_opset(opset)
    graph = getattr(model, "_graph", None)
    if graph is None:
        raise ExportError("the model has no graph to export (build it by calling it on an input first)",
                          layer=getattr(model, "name", None))
    ctx = LoweringContext(opset)
    ctx.builder.stream = stream
    ctx.progress = _Progress(graph, progress)
    inputs, env = [], {}
    for v in graph.inputs:
        ref, info = _graph_input(v, batch, inputs_as_nchw)
        inputs.append(info)
        env[id(v)] = ref
    plan = plan_passes(graph) if optimize else None
    ctx.folded = plan.folded if plan else {}
    _lower_graph(ctx, graph, env, plan)
    outputs = _graph_outputs(ctx, graph, env, batch, model)
    onnx_graph = helper.make_graph(ctx.builder.nodes, _safe_name(getattr(model, "name", "model")),
                                   inputs + ctx.extra_inputs, outputs + ctx.extra_outputs,
                                   initializer=ctx.builder.initializers)
    opsets = [helper.make_opsetid("", int(opset))]
    proto = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="kconvert",
                              producer_version=_version())
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    if check:
        check_proto(proto)
    return proto


class _Progress:
    def __init__(self, graph, callback):
        self.callback = callback
        self.total = _count_nodes(graph)
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def _count_nodes(graph) -> int:
    n = 0
    for node in graph.nodes:
        inner = getattr(node.layer, "_graph", None)
        n += _count_nodes(inner) if inner is not None and hasattr(node.layer, "_is_graph_network") else 1
    return n


def check_proto(proto: onnx.ModelProto, serialized: bytes | None = None, stubs=()) -> None:
    """onnx.checker with its full check (strict shape inference); raises ExportError on a malformed graph.

    `serialized` (the proto's bytes, when the caller has them for writing) spares a second serialization.
    Models over 2 GB cannot be serialized: the file writer checks those by path after saving. `stubs` names
    initializers streamed to the file (the proto holds only their name, type and dims): they are checked as
    graph inputs of that type and shape.
    """
    if stubs:
        proto = _stubs_as_inputs(proto, set(stubs))
    elif serialized is None and too_big_for_protobuf(proto):
        return
    try:
        onnx.checker.check_model(serialized if serialized is not None else proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
        raise ExportError(f"the exported ONNX graph does not pass onnx.checker: {e}") from e


def _stubs_as_inputs(proto: onnx.ModelProto, stubs: set) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    kept = [t for t in out.graph.initializer if t.name not in stubs]
    inputs = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in out.graph.initializer
              if t.name in stubs]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    out.graph.input.extend(inputs)
    return out


def _version() -> str:
    from ... import __version__

    return __version__


def _safe_name(name) -> str:
    return str(name or "model")


def _symbolic_dims(shape: Sequence, batch: int | None, name: str) -> list:
    dims = []
    for i, d in enumerate(shape):
        if i == 0:
            dims.append(int(batch) if batch is not None else "N")
        else:
            dims.append(int(d) if d is not None else f"{name}_dim{i}")
    return dims


def _graph_input(v, batch, inputs_as_nchw):
    name = v.node.layer.name
    dtype = v.dtype if v.dtype in ONNX_DTYPES else "float32"
    perm = None
    if inputs_as_nchw and 3 <= len(v.shape) <= 5 and dtype.startswith("float"):
        perm = channels_first_perm(len(v.shape))
    shape = v.shape
    if batch is not None:
        shape = (int(batch), *shape[1:])
    ref = TensorRef(name, shape, dtype, perm)
    dims = _symbolic_dims(ref.physical_shape(), batch, name)
    return ref, helper.make_tensor_value_info(name, ONNX_DTYPES[dtype], dims)


def _lower_graph(ctx: LoweringContext, graph, env: dict, plan) -> None:
    for node in graph.nodes:
        if node.is_input:
            continue
        layer = node.layer
        ins = [env[id(v)] for v in node.inputs]
        if plan is not None and id(node) in plan.dropped:
            for v in node.outputs:
                env[id(v)] = ins[0]
            continue
        if getattr(layer, "_graph", None) is not None and hasattr(layer, "_is_graph_network"):
            outs = lower_nested(ctx, layer, ins, plan)
        else:
            deferred = [w for w in layer.weights if w.deferred] if ctx.builder.stream is not None else ()
            outs = lower_node(ctx, node, ins)
            for w in deferred:  # written to the file: computed again if the model is used later
                w.release()
        if len(outs) != len(node.outputs):
            raise ExportError(f"the lowering produced {len(outs)} outputs, the layer has {len(node.outputs)}",
                              layer=layer.name)
        for v, ref in zip(node.outputs, outs):
            env[id(v)] = ref
        ctx.progress.step()


def lower_nested(ctx, model, ins: list[TensorRef], plan) -> list[TensorRef]:
    """Lower a nested model's graph inline on the given input refs; returns its output refs."""
    inner = model._graph
    env = {id(v): r for v, r in zip(inner.inputs, ins)}
    _lower_graph(ctx, inner, env, plan)
    return [env[id(v)] for v in inner.outputs]


def lower_node(ctx: LoweringContext, node, ins: list[TensorRef]) -> list[TensorRef]:
    """Lower one layer call: its registered lowering (the traced call as fallback), masks handled."""
    layer = node.layer
    fn = lowering_for(layer) or trace_lowering  # no registered lowering: trace its numpy call (ExportError if not)
    if any(r.mask for r in ins) and uses_mask(layer) and not getattr(fn, "handles_mask", False):
        raise ExportError(f"{type(layer).__name__} with a Keras mask (from Embedding(mask_zero=True) or Masking) "
                          "cannot be lowered to ONNX yet", layer=layer.name)
    if any(r.mask == UNSUPPORTED_MASK for r in ins) and uses_mask(layer):
        raise ExportError("the Keras mask reaching this layer cannot be lowered to ONNX", layer=layer.name)
    ctx.builder.prefix = f"{layer.name}/"
    try:
        outs = _lower_or_trace(ctx, fn, layer, ins, node)
    except KConvertError as e:
        raise e.with_context(layer=layer.name) from None
    finally:
        ctx.builder.prefix = ""
    if fn is not trace_lowering and getattr(ctx, "_traced_instead", None) is layer:
        fn = trace_lowering
    if getattr(fn, "handles_mask", False):  # the lowering computed its outputs' masks itself
        return [_with_shape(r, v.shape, r.mask) for r, v in zip(outs, node.outputs)]
    mask = passed_mask(layer, ins)
    return [_with_shape(r, v.shape, mask) for r, v in zip(outs, node.outputs)]


def _lower_or_trace(ctx: LoweringContext, fn, layer, ins: list[TensorRef], node) -> list[TensorRef]:
    """The registered lowering; where it cannot express an option (a custom activation, say), the traced call."""
    if fn is trace_lowering:
        return fn(ctx, layer, ins, node)
    mark = ctx.checkpoint()
    try:
        return fn(ctx, layer, ins, node)
    except ExportError as first:
        ctx.rollback(mark)
        try:
            outs = trace_lowering(ctx, layer, ins, node)
        except ExportError as second:
            raise ExportError(f"{first.message}; tracing its call failed too: {second.message}",
                              layer=layer.name) from None
        ctx._traced_instead = layer
        return outs


def _with_shape(ref: TensorRef, shape, mask: str | None) -> TensorRef:
    if ref.mask == mask and ref.shape == tuple(shape):
        return ref
    return TensorRef(ref.name, tuple(shape), ref.dtype, ref.perm, ref.flat_of, mask)


def uses_mask(layer) -> bool:
    """Whether the layer's `call` takes a `mask` argument."""
    import inspect

    try:
        return "mask" in inspect.signature(type(layer).call).parameters
    except (TypeError, ValueError):
        return False


def passed_mask(layer, ins: list[TensorRef]) -> str | None:
    """The mask a layer passes on when its lowering sets none: Keras's default compute_mask (the input's)."""
    from ...layers.base import Layer

    masks = {r.mask for r in ins if r.mask}
    if not masks or not layer.supports_masking:
        return None
    if len(masks) == 1 and type(layer).compute_mask is Layer.compute_mask:
        return masks.pop()
    return UNSUPPORTED_MASK


def _graph_outputs(ctx: LoweringContext, graph, env: dict, batch, model) -> list:
    names = [v.node.layer.name for v in graph.outputs]
    taken: set[str] = {i.name for i in ctx.builder.initializers} | {v.node.layer.name for v in graph.inputs}
    refs = [ctx.keras(env[id(v)]) for v in graph.outputs]  # every Transpose first, then the renames
    infos = []
    for ref, base in zip(refs, names):
        name = base
        k = 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        _bind_output(ctx, ref.name, name)
        dims = _symbolic_dims(ref.shape, batch, name)
        infos.append(helper.make_tensor_value_info(name, ONNX_DTYPES.get(ref.dtype, 1), dims))
    return infos


def _bind_output(ctx: LoweringContext, current: str, wanted: str) -> None:
    """Make the value `current` available under the graph-output name `wanted`."""
    renamed = ctx.__dict__.setdefault("_bound_outputs", {})
    current = renamed.get(current, current)
    producer = next((n for n in ctx.builder.nodes if current in n.output), None)
    if producer is None or current in renamed.values():  # a graph input, a constant, or already an output
        ctx.builder.nodes.append(helper.make_node("Identity", [current], [wanted], name=f"{wanted}/Identity"))
        return
    renamed[current] = wanted
    for n in ctx.builder.nodes:
        for i, x in enumerate(n.output):
            if x == current:
                n.output[i] = wanted
        for i, x in enumerate(n.input):
            if x == current:
                n.input[i] = wanted
