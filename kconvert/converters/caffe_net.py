"""A deploy Caffe net (V2 NetParameter) and its caffemodel blobs -> a kconvert Model.

Blobs are tracked by name as Caffe does: an in-place layer (top == bottom) rebinds the name to its output, Split
tops alias their bottom, and the model's outputs are the tops no later layer reads (as in Caffe's Net::Init, a
blob an in-place layer rewrites last is one), in the prototxt order of their last writers. A
BatchNorm followed in place by a Scale becomes one Keras BatchNormalization.
"""

from __future__ import annotations

from ..errors import ConfigError, KConvertError, UnknownLayerError
from .caffe_layers import CAFFE_LAYERS, CaffeBuilder, batch_norm
from .keras_config import CONFIG_FAILURES


def caffe_net_to_model(net, weights: dict | None = None, data_format: str = "channels_last",
                       file: str | None = None, model_cls=None, progress=None):
    """Build the model of a deploy net; `weights` maps layer names to caffemodel layers (None: architecture only).

    `progress(done, total)` is called after each Caffe layer.
    """
    try:
        if weights is not None:  # every weight is then set from a blob: skip the random draws it would overwrite
            from ..layers.base import weights_follow

            with weights_follow():
                return _build(net, weights, data_format, file, model_cls, progress)
        return _build(net, weights, data_format, file, model_cls, progress)
    except MemoryError as e:  # the layers' own handler names the layer; this catches what falls between them
        raise ConfigError(f"the net declares weights too large to allocate ({e})", file=file) from None
    except CONFIG_FAILURES as e:
        raise ConfigError(f"the net cannot be built ({type(e).__name__}: {e})", file=file) from e


def _build(net, weights, data_format, file, model_cls, progress):
    builder = CaffeBuilder(data_format, weights, file)
    values: dict[str, object] = {}
    inputs = []
    available: dict[str, None] = {}  # Caffe's net outputs: tops no later layer reads (an in-place top stays one)
    layer_outputs: dict[str, list] = {}
    layers = list(net.layer)
    skip: set[int] = set()
    for i, lp in enumerate(layers):
        if i in skip:
            continue
        try:
            ins = [values[b] for b in lp.bottom]
        except KeyError as e:
            raise ConfigError(f"bottom blob '{e.args[0]}' is produced by no earlier layer", file=file,
                              layer=lp.name) from None
        for bottom in lp.bottom:
            available.pop(bottom, None)
        if lp.type == "Split":
            if len(ins) != 1:
                raise ConfigError(f"a Split layer reads one bottom, this one {len(ins)}", file=file, layer=lp.name)
            outs = [ins[0]] * len(lp.top)
        elif lp.type == "BatchNorm" and _scale_follows(layers, i):
            outs = batch_norm(builder, lp, ins, scale_lp=layers[i + 1])
            skip.add(i + 1)
            lp = layers[i + 1]
            for bottom in lp.bottom:
                available.pop(bottom, None)
        else:
            fn = CAFFE_LAYERS.get(lp.type)
            if fn is None:
                raise UnknownLayerError(f"Caffe layer type '{lp.type}' is not supported", file=file,
                                        layer=lp.name)
            try:
                outs = fn(builder, lp, ins)
            except KConvertError as e:
                raise e.with_context(file=file, layer=lp.name) from None
            except MemoryError as e:
                raise ConfigError(f"{lp.type}: its parameters declare weights too large to allocate ({e})", file=file,
                                  layer=lp.name) from None
            except CONFIG_FAILURES as e:
                raise ConfigError(f"{lp.type}: {e}", file=file, layer=lp.name) from None
        if lp.type == "Input":
            inputs.extend(outs)
        if len(outs) != len(lp.top):
            raise ConfigError(f"{lp.type} produced {len(outs)} blobs for {len(lp.top)} tops", file=file,
                              layer=lp.name)
        layer_outputs[lp.name] = list(outs)
        if progress is not None:
            progress(i + 1, len(layers))
        for top, value in zip(lp.top, outs):
            values[top] = value
            available.pop(top, None)
            available[top] = None
    if not inputs:
        raise ConfigError("the net has no input (an Input layer, or input: with input_shape/input_dim)", file=file)
    outputs = []
    for top in available:  # in the order of their (last) writers in the prototxt
        if values[top] not in outputs and values[top] not in inputs:
            outputs.append(values[top])
    if not outputs:
        raise ConfigError("the net has no output (every top is an input or read by a later layer)", file=file)
    if model_cls is None:
        from ..layers.base import get_layer_class

        model_cls = get_layer_class("Functional")
    model = model_cls(inputs, outputs if len(outputs) > 1 else outputs[0], name=net.name or "caffe_net")
    model.caffe_blobs = dict(values)  # blob name -> the model value holding it (its last writer's output)
    model.caffe_layers = layer_outputs  # Caffe layer name -> its output values (a fused BatchNorm: its Scale's)
    return model


def _scale_follows(layers: list, i: int) -> bool:
    """A Scale right after BatchNorm reading its top (in place or not), which no one else reads."""
    if i + 1 >= len(layers):
        return False
    bn, nxt = layers[i], layers[i + 1]
    if nxt.type != "Scale" or len(nxt.bottom) != 1 or nxt.bottom[0] != bn.top[0]:
        return False
    p = nxt.scale_param
    if (p.HasField("axis") and p.axis != 1) or (p.HasField("num_axes") and p.num_axes != 1):
        return False
    if bn.top[0] != bn.bottom[0]:  # not in place: the BatchNorm top must have no other reader
        readers = sum(bn.top[0] in la.bottom for la in layers[i + 2:])
        return readers == 0 or nxt.top[0] == bn.top[0]
    return True
