"""Keras 1 layer configs (and the legacy parts of Keras 2.0–2.2 configs) rewritten into the tf.keras form.

Keras 2 read Keras 1 configs through argument-renaming decorators (`keras/legacy/interfaces.py`); this module
does the same rewriting on config dicts (reference/keras_formats.md §3.1), one rule per Keras 1 class name:

    Convolution2D(nb_filter, nb_row, nb_col, border_mode, subsample, dim_ordering, init, W_regularizer, bias)
      -> Conv2D(filters, kernel_size, padding, strides, data_format, kernel_initializer, kernel_regularizer, use_bias)

Keras 1's `Merge` (§3.4) becomes the native merge layer of its mode; a Sequential whose first layer is a
`Merge` of models becomes a functional model with the branch models nested in it. The rules are registered
into `dialects.NORMALIZERS[1]`. For Keras 2 files (`NORMALIZERS[2]`) only what Keras 2.0–2.2 wrote differently
is rewritten (`Merge`, a GRU config without `reset_after`, `implementation=0`), plus any entry that still
carries Keras 1 arguments (a Keras 1 JSON without a `keras_version`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, UnknownLayerError
from ..layers.legacy_names import DATA_FORMATS as _DATA_FORMATS
from ..layers.legacy_names import IMPLEMENTATION as _IMPLEMENTATION
from ..layers.legacy_names import RECURRENT_RENAMES, weight_renames
from .dialects import NORMALIZERS

Rule = Callable[[str, dict], tuple[str, dict]]
_RULES: dict[str, Rule] = {}
# Keras 1 argument names that tf.keras never writes for the classes below: an entry with one of them is Keras 1
_KERAS1_KEYS = {"output_dim", "nb_filter", "border_mode", "dim_ordering", "subsample", "subsample_length",
                "filter_length", "init", "inner_init", "inner_activation", "W_regularizer", "b_regularizer",
                "W_constraint", "b_constraint", "U_regularizer", "pool_length", "p", "sigma", "consume_less",
                "dropout_W", "dropout_U", "mode", "atrous_rate", "nb_row", "kernel_dim1", "length", "bias",
                "forget_bias_init", "input_dtype"}
_NO_KERAS2_EQUIVALENT = {
    "Highway": "Keras 2.2 removed Highway",
    "MaxoutDense": "Keras 2.2 removed MaxoutDense",
    "ParametricSoftplus": "Keras 2 has no ParametricSoftplus",
    "SReLU": "Keras 2 has no SReLU",
    "SimpleDeepRNN": "Keras 2 has no SimpleDeepRNN",
}


def rule(*class_names: str) -> Callable[[Rule], Rule]:
    """Register the rewriting of one or more Keras 1 class names: fn(class_name, config) -> (class, config)."""

    def deco(fn: Rule) -> Rule:
        for name in class_names:
            _RULES[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------------------------------------- values

_CONSTRAINT_ARGS = {"MaxNorm": {"m": "max_value"}, "MinMaxNorm": {"low": "min_value", "high": "max_value"},
                    "NonNeg": {}, "UnitNorm": {}}
_INITIALIZERS = {"orthogonal": {"class_name": "Orthogonal", "config": {"gain": 1.1, "seed": None}}}  # Keras 1 scale


def regularizer(value: Any, layer: str | None = None) -> Any:
    """A Keras 1 regularizer dict `{"name": "L1L2Regularizer", "l1", "l2"}` as `{"class_name": "L1L2", ...}`."""
    if not isinstance(value, dict) or "name" not in value or "class_name" in value:
        return value
    name = value["name"]
    if name in ("L1L2Regularizer", "WeightRegularizer", "ActivityRegularizer", "L1L2"):
        return {"class_name": "L1L2", "config": {"l1": float(value.get("l1", 0.0)), "l2": float(value.get("l2", 0.0))}}
    warnings.warn(f"layer '{layer}': the Keras 1 regularizer {name} has no Keras 2 equivalent and is dropped "
                  "(regularizers only matter for training)", stacklevel=4)
    return None


def constraint(value: Any, layer: str | None = None) -> Any:
    """A Keras 1 constraint dict `{"name": "MaxNorm", "m", "axis"}` as `{"class_name": "MaxNorm", ...}`."""
    if not isinstance(value, dict) or "name" not in value or "class_name" in value:
        return value
    name = value["name"]
    if name not in _CONSTRAINT_ARGS:
        raise ConfigError(f"unknown Keras 1 constraint '{name}'", layer=layer)
    renames = _CONSTRAINT_ARGS[name]
    return {"class_name": name, "config": {renames.get(k, k): v for k, v in value.items() if k != "name"}}


def _rename(config: dict, pairs: dict[str, str], layer: str | None) -> None:
    for old, new in pairs.items():
        if old not in config:
            continue
        value = config.pop(old)
        if new in config:
            raise ConfigError(f"the config has both the Keras 1 argument '{old}' and the Keras 2 argument '{new}'",
                              layer=layer)
        config[new] = value


def _data_format(config: dict, layer: str | None) -> None:
    if "dim_ordering" not in config:
        return
    value = config.pop("dim_ordering")
    if value not in _DATA_FORMATS:
        raise ConfigError(f"dim_ordering must be 'th' or 'tf', not {value!r}", layer=layer)
    config["data_format"] = _DATA_FORMATS[value]


def _padding(config: dict, layer: str | None) -> None:
    _rename(config, {"border_mode": "padding"}, layer)
    if config.get("padding") == "full":
        raise ConfigError("border_mode='full' (Theano only) has no Keras 2 equivalent", layer=layer)


def _weight_args(config: dict, layer: str | None, kernel: str = "kernel") -> None:
    """init, W_/b_regularizer, W_/b_constraint, bias -> <kernel>_initializer, ..., use_bias."""
    _rename(config, weight_renames(kernel), layer)


def _input_shape(config: dict, dims: tuple[str, ...]) -> None:
    """input_dim / input_length (+ more) -> batch_input_shape, unless the config already has one."""
    values = [config.pop(d, None) for d in dims]
    if config.get("batch_input_shape") is None and values[-1] is not None:
        config["batch_input_shape"] = [None, *values]


def _finish(config: dict, layer: str | None) -> dict:
    """Convert every regularizer/constraint/initializer value to the Keras 2 form."""
    for key in list(config):
        if key.endswith("_regularizer"):
            config[key] = regularizer(config[key], layer)
        elif key.endswith("_constraint"):
            config[key] = constraint(config[key], layer)
        elif key.endswith("_initializer") and isinstance(config[key], str):
            config[key] = copy.deepcopy(_INITIALIZERS.get(config[key], config[key]))
    config.pop("input_dtype", None)
    return config


# ---------------------------------------------------------------------------------------------- rules


@rule("Dense")
def _dense(cls, c):
    name = c.get("name")
    _rename(c, {"output_dim": "units"}, name)
    _weight_args(c, name)
    _input_shape(c, ("input_dim",))
    return "Dense", c


@rule("TimeDistributedDense")
def _time_distributed_dense(cls, c):
    name = c.get("name")
    outer = {k: c.pop(k) for k in ("name", "trainable", "batch_input_shape") if k in c}
    _input_shape(c, ("input_length", "input_dim"))
    if "batch_input_shape" in c:
        outer.setdefault("batch_input_shape", c.pop("batch_input_shape"))
    _, inner = _dense("Dense", c)
    inner["name"] = f"{name}_dense" if name else None
    return "TimeDistributed", {**outer, "layer": {"class_name": "Dense", "config": inner}}


@rule("Convolution1D", "AtrousConvolution1D", "Conv1D")
def _conv1d(cls, c):
    name = c.get("name")
    _rename(c, {"nb_filter": "filters", "filter_length": "kernel_size", "subsample_length": "strides",
                "atrous_rate": "dilation_rate"}, name)
    _padding(c, name)
    _weight_args(c, name)
    _input_shape(c, ("input_length", "input_dim"))
    return "Conv1D", c


def _kernel_size(c: dict, keys: tuple[str, ...], layer: str | None) -> None:
    if any(k in c for k in keys):
        if "kernel_size" in c:
            raise ConfigError(f"the config has both {keys} and kernel_size", layer=layer)
        c["kernel_size"] = [c.pop(k) for k in keys]


@rule("Convolution2D", "AtrousConvolution2D", "Conv2D")
def _conv2d(cls, c):
    name = c.get("name")
    _rename(c, {"nb_filter": "filters", "subsample": "strides", "atrous_rate": "dilation_rate"}, name)
    _kernel_size(c, ("nb_row", "nb_col"), name)
    _padding(c, name)
    _data_format(c, name)
    _weight_args(c, name)
    return "Conv2D", c


@rule("Deconvolution2D", "Deconv2D")
def _deconv2d(cls, c):
    """Keras 1 computes as many output pixels as its `output_shape` asks; tf.keras's `output_padding` does that.

    A working `output_shape` L fixes the input size n (TensorFlow needs ceil(L/s) = n for 'same' and
    ceil((L-k+1)/s) = n for 'valid'), so output_padding = L - ((n-1)s + k - 2·pad), pad = k//2 or 0.
    """
    output_shape = c.pop("output_shape", None)
    cls, c = _conv2d("Conv2D", c)
    if "output_padding" not in c:
        c["output_padding"] = _deconv_output_padding(c, output_shape)
    return "Conv2DTranspose", c


def _deconv_output_padding(c: dict, output_shape) -> list[int]:
    kernel = c.get("kernel_size")
    strides = c.get("strides") or (1, 1)
    spatial = None
    if isinstance(output_shape, (list, tuple)) and len(output_shape) == 4:
        spatial = output_shape[2:] if c.get("data_format") == "channels_first" else output_shape[1:3]
    if spatial is None or kernel is None or any(not isinstance(v, int) for v in spatial):
        return [0, 0]  # the output size Keras 1 computes itself (conv_input_length)
    pads = []
    for length, k, s in zip(spatial, kernel, strides):
        if c.get("padding") == "same":
            n, pad = -(-length // s), k // 2
        else:
            n, pad = -(-(length - k + 1) // s), 0
        pads.append(length - ((n - 1) * s + k - 2 * pad))
    if any(not 0 <= p < s for p, s in zip(pads, strides)):
        raise ConfigError(f"the Keras 1 output_shape {output_shape} does not fit the kernel and strides",
                          layer=c.get("name"))
    return pads


@rule("SeparableConvolution2D", "SeparableConv2D")
def _separable_conv2d(cls, c):
    name = c.get("name")
    if "init" in c:
        init = c.pop("init")
        c.setdefault("depthwise_initializer", init)
        c.setdefault("pointwise_initializer", init)
    _rename(c, {"nb_filter": "filters", "subsample": "strides", "b_regularizer": "bias_regularizer",
                "b_constraint": "bias_constraint", "bias": "use_bias"}, name)
    _kernel_size(c, ("nb_row", "nb_col"), name)
    _padding(c, name)
    _data_format(c, name)
    return "SeparableConv2D", c


@rule("Convolution3D", "Conv3D")
def _conv3d(cls, c):
    name = c.get("name")
    _rename(c, {"nb_filter": "filters", "subsample": "strides"}, name)
    _kernel_size(c, ("kernel_dim1", "kernel_dim2", "kernel_dim3"), name)
    _padding(c, name)
    _data_format(c, name)
    _weight_args(c, name)
    return "Conv3D", c


@rule("LocallyConnected1D")
def _local1d(cls, c):
    name = c.get("name")
    _rename(c, {"nb_filter": "filters", "filter_length": "kernel_size", "subsample_length": "strides"}, name)
    _padding(c, name)
    _weight_args(c, name)
    _input_shape(c, ("input_length", "input_dim"))
    return "LocallyConnected1D", c


@rule("LocallyConnected2D")
def _local2d(cls, c):
    name = c.get("name")
    _rename(c, {"nb_filter": "filters", "subsample": "strides"}, name)
    _kernel_size(c, ("nb_row", "nb_col"), name)
    _padding(c, name)
    _data_format(c, name)
    _weight_args(c, name)
    return "LocallyConnected2D", c


@rule("UpSampling1D")
def _upsampling1d(cls, c):
    _rename(c, {"length": "size"}, c.get("name"))
    return cls, c


@rule("UpSampling2D", "UpSampling3D", "ZeroPadding3D", "Cropping2D", "Cropping3D", "GlobalMaxPooling2D",
      "GlobalAveragePooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling3D")
def _data_format_only(cls, c):
    _data_format(c, c.get("name"))
    return cls, c


@rule("ZeroPadding2D")
def _zero_padding2d(cls, c):
    _data_format(c, c.get("name"))
    pad = c.get("padding")
    if isinstance(pad, dict):
        pad = [pad.get("top_pad", 0), pad.get("bottom_pad", 0), pad.get("left_pad", 0), pad.get("right_pad", 0)]
    if isinstance(pad, (list, tuple)) and len(pad) == 4 and all(isinstance(p, int) for p in pad):
        c["padding"] = [[pad[0], pad[1]], [pad[2], pad[3]]]
    return cls, c


@rule("MaxPooling1D", "AveragePooling1D")
def _pooling1d(cls, c):
    name = c.get("name")
    _rename(c, {"pool_length": "pool_size", "stride": "strides"}, name)
    _padding(c, name)
    return cls, c


@rule("MaxPooling2D", "AveragePooling2D", "MaxPooling3D", "AveragePooling3D")
def _pooling(cls, c):
    _padding(c, c.get("name"))
    _data_format(c, c.get("name"))
    return cls, c


@rule("BatchNormalization")
def _batch_norm(cls, c):
    name = c.get("name")
    mode = c.pop("mode", 0)
    if mode != 0:
        raise ConfigError(f"BatchNormalization(mode={mode}) has no Keras 2 equivalent: Keras 2 kept only mode=0 "
                          "(feature-wise normalization with moving statistics)", layer=name)
    _rename(c, {"beta_init": "beta_initializer", "gamma_init": "gamma_initializer"}, name)
    return cls, c


@rule("Dropout", "SpatialDropout1D", "GaussianDropout")
def _dropout(cls, c):
    _rename(c, {"p": "rate"}, c.get("name"))
    return cls, c


@rule("SpatialDropout2D", "SpatialDropout3D")
def _spatial_dropout(cls, c):
    _rename(c, {"p": "rate"}, c.get("name"))
    _data_format(c, c.get("name"))
    return cls, c


@rule("GaussianNoise")
def _gaussian_noise(cls, c):
    _rename(c, {"sigma": "stddev"}, c.get("name"))
    return cls, c


@rule("Embedding")
def _embedding(cls, c):
    name = c.get("name")
    if c.pop("dropout", 0):
        warnings.warn(f"layer '{name}': Keras 2 dropped the Embedding dropout argument (it only acts in training)",
                      stacklevel=4)
    _rename(c, {"init": "embeddings_initializer", "W_regularizer": "embeddings_regularizer",
                "W_constraint": "embeddings_constraint"}, name)
    return cls, c


@rule("PReLU")
def _prelu(cls, c):
    _rename(c, {"init": "alpha_initializer"}, c.get("name"))
    return cls, c


def _recurrent_args(c: dict, name: str | None) -> None:
    _rename(c, RECURRENT_RENAMES, name)
    if "consume_less" in c:
        c["implementation"] = _IMPLEMENTATION.get(c.pop("consume_less"), 1)
    if "forget_bias_init" in c:
        c["unit_forget_bias"] = c.pop("forget_bias_init") == "one"


@rule("SimpleRNN", "GRU", "LSTM")
def _recurrent(cls, c):
    name = c.get("name")
    _recurrent_args(c, name)
    _input_shape(c, ("input_length", "input_dim"))
    if cls == "GRU":
        c.setdefault("reset_after", False)  # Keras 1 computes the GRU candidate as reset_after=False
    if cls == "SimpleRNN":
        c.pop("implementation", None)  # Keras 2 ignores it for SimpleRNN
    return cls, c


@rule("ConvLSTM2D")
def _conv_lstm2d(cls, c):
    name = c.get("name")
    _recurrent_args(c, name)
    _rename(c, {"nb_filter": "filters", "subsample": "strides", "bias": "use_bias"}, name)
    _kernel_size(c, ("nb_row", "nb_col"), name)
    _padding(c, name)
    _data_format(c, name)
    return cls, c


@rule("Bidirectional", "TimeDistributed")
def _wrapper(cls, c):
    if isinstance(c.get("layer"), dict):
        c["layer"] = normalize_keras1(c["layer"])
    return cls, c


@rule("InputLayer")
def _input_layer(cls, c):
    if "input_dtype" in c:
        dtype = c.pop("input_dtype")
        c.setdefault("dtype", dtype)
    return cls, c


# ---------------------------------------------------------------------------------------------- Merge

_MERGE_CLASSES = {"sum": "Add", "mul": "Multiply", "ave": "Average", "max": "Maximum", "concat": "Concatenate",
                  "dot": "Dot", "cos": "Dot"}


def merge_as_native(config: dict) -> tuple[str, dict]:
    """A Keras 1 `Merge` config (no branch models) as the native merge layer of its mode (reference §3.4)."""
    name = config.get("name")
    mode = config.get("mode", "sum")
    if config.get("mode_type", "raw") != "raw" or mode not in _MERGE_CLASSES:
        raise ConfigError(f"a Merge with mode {str(mode)[:40]!r} (mode_type {config.get('mode_type')!r}) runs Python "
                          "code stored in the file; kconvert converts only the modes "
                          f"{sorted(_MERGE_CLASSES)}", layer=name)
    out: dict[str, Any] = {"name": name, "trainable": config.get("trainable", True)}
    if mode == "concat":
        out["axis"] = config.get("concat_axis", -1)
    elif mode in ("dot", "cos"):
        out["axes"] = config.get("dot_axes", -1)
        out["normalize"] = mode == "cos"
    return _MERGE_CLASSES[mode], out


def _merge_entry(entry: dict) -> dict:
    config = dict(entry.get("config") or {})
    if config.get("branch_weights_in_merge"):
        return entry  # written by kconvert's Merge of models: the Merge layer reads it back as it is
    if isinstance(config.get("layers"), list):
        raise ConfigError("a Merge of models can only be the first layer of a Sequential", layer=config.get("name"))
    cls, new = merge_as_native(config)
    return {**entry, "class_name": cls, "config": new}


def _sequential_parts(config: Any) -> tuple[str | None, list]:
    if isinstance(config, list):
        return None, config
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return config.get("name"), config["layers"]
    raise ConfigError("a Sequential config must be a list of layers or a dict with 'layers'")


def _starts_with_merge(entry: dict) -> bool:
    try:
        _, layers = _sequential_parts(entry.get("config"))
    except ConfigError:
        return False
    first = layers[0] if layers else None
    if not isinstance(first, dict) or first.get("class_name") != "Merge":
        return False
    merge = first.get("config") or {}
    return isinstance(merge.get("layers"), list) and not merge.get("branch_weights_in_merge")


def _model_inputs(entry: dict, normalize: Callable[[dict], dict]) -> list[dict]:
    """InputLayer entries for the inputs of a branch model config (in the order Keras gives them)."""
    entry = normalize(entry)
    cls, config = entry.get("class_name"), entry.get("config")
    if cls in ("Model", "Functional"):
        by_name = {la.get("name"): la for la in config.get("layers", [])}
        refs = config.get("input_layers") or []
        return [normalize(copy.deepcopy(by_name[r[0]])) for r in refs if r and r[0] in by_name]
    if cls == "Sequential":
        _, layers = _sequential_parts(config)
        if not layers:
            raise ConfigError("a Merge branch is an empty Sequential")
        first = normalize(copy.deepcopy(layers[0]))
        if first.get("class_name") == "InputLayer":
            return [first]
        shape = (first.get("config") or {}).get("batch_input_shape")
        if shape is None:
            raise ConfigError("the first layer of a Merge branch has no input shape", layer=first.get("config", {}).get("name"))
        fname = (first.get("config") or {}).get("name")
        return [{"class_name": "InputLayer", "config": {"batch_input_shape": shape, "dtype": "float32",
                                                        "sparse": False, "name": f"{fname}_input"}}]
    raise ConfigError(f"a Merge branch must be a Sequential or a Model, not {cls}")


def _first_call_index(entry: dict, normalize: Callable[[dict], dict]) -> int:
    """Node index of the first call of a nested layer: 1 for a model that owns a construction node."""
    entry = normalize(entry)
    cls = entry.get("class_name")
    if cls in ("Model", "Functional"):
        return 1
    if cls == "Sequential":
        _, layers = _sequential_parts(entry.get("config"))
        first = normalize(copy.deepcopy(layers[0])) if layers else {}
        has_shape = first.get("class_name") == "InputLayer" or (first.get("config") or {}).get("batch_input_shape")
        return 1 if has_shape else 0
    return 0


def merge_sequential_as_functional(entry: dict, normalize: Callable[[dict], dict]) -> dict:
    """A Sequential whose first layer is `Merge(layers=[models])` as a functional model config.

    Each branch model is nested as it is, fed by inputs of its own; the Merge becomes its native merge layer
    and the rest of the Sequential follows it. Keras 1 saved such a model's weights with the branch models'
    layers inlined (`flattened_layers`); `keras1_weights.topological_layers` pairs them.
    """
    name, layers = _sequential_parts(entry["config"])
    merge = copy.deepcopy(layers[0]["config"])
    branches = merge.pop("layers")
    out_layers: list[dict] = []
    inputs, merge_refs = [], []
    for i, branch in enumerate(branches):
        branch = copy.deepcopy(branch)
        if branch.get("class_name") not in ("Sequential", "Model", "Functional"):
            branch = {"class_name": "Sequential", "config": [branch]}  # a single layer with an input shape
        if branch["class_name"] == "Sequential" and isinstance(branch["config"], list):
            branch["config"] = {"name": f"{merge.get('name') or 'merge'}_branch_{i}", "layers": branch["config"]}
        branch_name = (branch.get("config") or {}).get("name")
        refs = []
        for inp in _model_inputs(branch, normalize):
            iname = inp["config"]["name"]
            if any(e["name"] == iname for e in out_layers):
                raise ConfigError(f"two Merge branches have an input named '{iname}'", layer=merge.get("name"))
            out_layers.append({"name": iname, "class_name": "InputLayer", "config": inp["config"],
                               "inbound_nodes": []})
            refs.append([iname, 0, 0, {}])
            inputs.append([iname, 0, 0])
        out_layers.append({"name": branch_name, "class_name": branch["class_name"], "config": branch["config"],
                           "inbound_nodes": [refs]})
        merge_refs.append([branch_name, _first_call_index(branch, normalize), 0, {}])
    cls, merge_config = merge_as_native(merge)
    out_layers.append({"name": merge_config["name"], "class_name": cls, "config": merge_config,
                       "inbound_nodes": [merge_refs]})
    previous = [merge_config["name"], 0, 0]
    for layer in layers[1:]:
        layer = copy.deepcopy(layer)
        lname = (layer.get("config") or {}).get("name")
        out_layers.append({**layer, "name": lname, "inbound_nodes": [[[*previous, {}]]]})
        previous = [lname, _first_call_index(layer, normalize), 0]
    config = {"name": name, "layers": out_layers, "input_layers": inputs, "output_layers": [previous]}
    return {"class_name": "Model", "config": config}


# ---------------------------------------------------------------------------------------------- entries


def _named_sequential(entry: dict) -> dict:
    """A nested Sequential in the list form (Keras <= 2.2.2) takes the name its functional entry gives it."""
    if entry.get("class_name") == "Sequential" and isinstance(entry.get("config"), list) and entry.get("name"):
        return {**entry, "config": {"name": entry["name"], "layers": entry["config"]}}
    return entry


def _layer_name(entry: dict) -> str | None:
    config = entry.get("config")
    return config.get("name") if isinstance(config, dict) else entry.get("name")


def normalize_keras1(entry: dict) -> dict:
    """One Keras 1 `{class_name, config}` entry (extra keys such as `inbound_nodes` are kept) in tf.keras form."""
    if not isinstance(entry, dict):
        return entry
    cls = entry.get("class_name")
    if cls == "Sequential" and _starts_with_merge(entry):
        return merge_sequential_as_functional(entry, normalize_keras1)
    if cls == "Sequential":
        return _named_sequential(entry)
    if cls == "Merge":
        return _merge_entry(entry)
    if cls in _NO_KERAS2_EQUIVALENT:
        raise UnknownLayerError(f"the Keras 1 layer {cls} cannot be converted: {_NO_KERAS2_EQUIVALENT[cls]}",
                                layer=_layer_name(entry))
    fn = _RULES.get(cls)
    if fn is None or not isinstance(entry.get("config"), dict):
        return entry
    config = copy.deepcopy(entry["config"])
    new_cls, config = fn(cls, config)
    return {**entry, "class_name": new_cls, "config": _finish(config, config.get("name"))}


def looks_keras1(entry: dict) -> bool:
    """True for an entry of a known class that still carries Keras 1 argument names."""
    cls, config = entry.get("class_name"), entry.get("config")
    if cls not in _RULES or not isinstance(config, dict):
        return False
    keys = set(config) & _KERAS1_KEYS
    if cls == "Embedding":
        keys -= {"output_dim"}
    if cls in ("Bidirectional", "TimeDistributed") and isinstance(config.get("layer"), dict):
        return looks_keras1(config["layer"])
    return bool(keys) or cls in ("TimeDistributedDense", "Convolution1D", "Convolution2D", "Convolution3D",
                                 "AtrousConvolution1D", "AtrousConvolution2D", "Deconvolution2D")


def normalize_keras2(entry: dict) -> dict:
    """What Keras 2.0–2.2 wrote differently from tf.keras, and entries still in the Keras 1 dialect."""
    if not isinstance(entry, dict):
        return entry
    cls, config = entry.get("class_name"), entry.get("config")
    if cls == "Sequential" and _starts_with_merge(entry):
        return merge_sequential_as_functional(entry, normalize_keras2)
    if cls == "Sequential":
        return _named_sequential(entry)
    if cls == "Merge":
        return _merge_entry(entry)
    if looks_keras1(entry):
        return normalize_keras1(entry)
    if cls in ("GRU", "LSTM", "SimpleRNN") and isinstance(config, dict):
        fixed = dict(config)
        if cls == "GRU":
            fixed.setdefault("reset_after", False)  # Keras < 2.1.3 had only the reset_after=False GRU
        if cls == "SimpleRNN":
            fixed.pop("implementation", None)  # Keras 2.0 wrote it; Keras ignores it
        elif fixed.get("implementation") == 0:
            fixed["implementation"] = 1  # tf.keras runs the deprecated 0 as 1
        if fixed != config:
            return {**entry, "config": fixed}
    if cls in ("Bidirectional", "TimeDistributed") and isinstance(config, dict) and isinstance(config.get("layer"), dict):
        inner = normalize_keras2(config["layer"])
        if inner is not config["layer"]:
            return {**entry, "config": {**config, "layer": inner}}
    return entry


NORMALIZERS.setdefault(1, []).append(normalize_keras1)
NORMALIZERS.setdefault(2, []).append(normalize_keras2)

__all__ = ["normalize_keras1", "normalize_keras2", "merge_as_native", "merge_sequential_as_functional",
           "looks_keras1", "regularizer", "constraint", "rule"]
