"""Caffe net definitions in protobuf text format (`.prototxt`): read, upgrade to `layer {}`, filter for deploy.

`read_prototxt` parses any generation as written. `upgrade` turns legacy nets into the current form:
V0 (`layers { layer { type: "conv" } }`, with separate `padding` layers) and V1 (`layers { type:
CONVOLUTION }`) become `layer { type: "Convolution" }`, and net-level `input:` fields become an Input
layer, as Caffe's own upgrade does. `deploy_net` keeps what Caffe runs at test time and drops what
only training needs.

Text quirks of real files are accepted: tabs, `#` comments, `;`/`,` separators, single quotes, `0.`,
`shape: {`. Fields this schema does not know (fork additions) are skipped with one warning that
names them. The fork spelling `ceil_mode: true|false` of pooling is read as `round_mode: CEIL|FLOOR`
(see the PoolingParameter comment in caffe.proto).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable

from google.protobuf import text_format

from ...errors import FormatError
from ..files import read_bytes
from . import schema
from .schema import LayerParameter, NetParameter, NetState

__all__ = ["read_prototxt", "parse_prototxt", "write_prototxt", "upgrade", "deploy_net", "needs_upgrade", "V1_TYPES",
           "V0_TYPES", "TRAIN_ONLY_TYPES"]

# ---------------------------------------------------------------------------------------------------
# Reading text
# ---------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:\[\],;])
  | (?P<word>[^\s{}<>:\[\],;'"\#]+)
""", re.VERBOSE)

_CEIL_MODE_VALUES = {"true": "CEIL", "t": "CEIL", "True": "CEIL", "1": "CEIL",
                     "false": "FLOOR", "f": "FLOOR", "False": "FLOOR", "0": "FLOOR"}
_CLOSE = {"{": "}", "<": ">"}


class _ScanError(Exception):
    """The text is malformed; text_format reports it properly."""


class _Scanner:
    """A structural walk over the text against the schema: finds unknown fields and `ceil_mode` edits.

    It never builds messages; text_format does the real parse afterwards.
    """

    def __init__(self, text: str):
        self.tokens: list[tuple[str, str, int, int, int]] = []  # (kind, text, start, end, line)
        line, pos = 1, 0
        for m in _TOKEN.finditer(text):
            if m.start() != pos:
                raise _ScanError("unrecognised characters")  # e.g. an unterminated string
            pos = m.end()
            kind = m.lastgroup
            if kind == "nl":
                line += 1
            elif kind not in ("ws", "comment"):
                self.tokens.append((kind, m.group(), m.start(), m.end(), line))
        if pos != len(text):
            raise _ScanError("unrecognised characters")
        self.pos = 0
        self.unknown: list[tuple[str, str, int]] = []  # (message name, field name, line)
        self.edits: list[tuple[int, int, str]] = []

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int, int, int]:
        if self.pos >= len(self.tokens):
            raise _ScanError("unexpected end")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _try(self, *texts: str) -> bool:
        if self._peek() in texts and self.tokens[self.pos][0] == "punct":
            self.pos += 1
            return True
        return False

    def walk(self, desc, close: str | None = None) -> None:
        while True:
            nxt = self._peek()
            if nxt is None:
                if close is None:
                    return
                raise _ScanError("unexpected end")
            if nxt in ("}", ">") and self.tokens[self.pos][0] == "punct":
                if nxt != close:
                    raise _ScanError("unbalanced")
                self.pos += 1
                return
            self._field(desc)

    def _field(self, desc) -> None:
        kind, name, start, _, line = self._take()
        if kind != "word":
            raise _ScanError("expected a field name")
        field = desc.fields_by_name.get(name) if desc is not None else None
        known = desc is None or field is not None
        self._try(":")
        nxt = self._peek()
        if nxt in _CLOSE:
            self.pos += 1
            self.walk(field.message_type if field is not None else None, _CLOSE[nxt])
        elif nxt == "[":
            self.pos += 1
            while not self._try("]"):
                if self._peek() in _CLOSE:
                    opened = self._take()[1]
                    self.walk(field.message_type if field is not None else None, _CLOSE[opened])
                else:
                    self._value()
                self._try(",")
        else:
            end, value = self._value()
            if (not known and name == "ceil_mode" and desc.name == "PoolingParameter"
                    and value in _CEIL_MODE_VALUES):
                self.edits.append((start, end, f"round_mode: {_CEIL_MODE_VALUES[value]}"))
                known = True
        if not known:
            self.unknown.append((desc.name, name, line))
        self._try(",", ";")

    def _value(self) -> tuple[int, str]:
        kind, text, _, end, _ = self._take()
        if kind == "punct":
            raise _ScanError("expected a value")
        while kind == "str" and self.pos < len(self.tokens) and self.tokens[self.pos][0] == "str":
            _, _, _, end, _ = self._take()  # adjacent strings concatenate
        return end, text


def _decode(data: bytes, file: str | None) -> str:
    if b"\x00" in data[:4096]:
        raise FormatError("this is a binary file (a .caffemodel?), not a text prototxt", file=file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # comments in a legacy code page; names are ASCII in practice


def _parse_error(err: text_format.ParseError, text: str, file: str | None) -> FormatError:
    msg = re.sub(r"^\d+:\d+ : ", "", str(err))
    msg = re.sub(r"^'.*?': (?=[A-Z])", "", msg)
    line, col = err.GetLine(), err.GetColumn()
    where = f"line {line}" + (f", column {col}" if col and col > 0 else "")
    lines = text.splitlines()
    near = lines[line - 1].strip()[:80] if line and 0 < line <= len(lines) else ""
    return FormatError(f"{where}: {msg}" + (f" (near: {near})" if near else ""), file=file)


def parse_prototxt(text: str, *, file: str | os.PathLike | None = None) -> NetParameter:
    """Parse prototxt text into a NetParameter as written (no upgrade). `file` names it in messages."""
    file = os.fspath(file) if file is not None else None
    scanner, problem = None, ""
    try:
        scanner = _Scanner(text)
        scanner.walk(NetParameter.DESCRIPTOR)
    except _ScanError as err:
        scanner, problem = None, str(err)  # malformed: let text_format find and report the error
    except RecursionError:
        raise FormatError("the text nests blocks too deeply to be a Caffe net", file=file) from None
    original = text
    if scanner is not None:
        for start, end, replacement in reversed(scanner.edits):
            text = text[:start] + replacement + text[end:]
    net = NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=scanner is None or bool(scanner.unknown))
    except RecursionError:
        raise FormatError("the text nests blocks too deeply to be a Caffe net", file=file) from None
    except text_format.ParseError as err:
        error = _parse_error(err, original, file)
        if problem == "unexpected end":
            error.message += "; the text ends inside an unclosed block (a truncated file?)"
        raise error.with_context() from None
    if scanner is not None and scanner.unknown:
        _warn_unknown(scanner.unknown, file)
    return net


def _warn_unknown(unknown: list[tuple[str, str, int]], file: str | None) -> None:
    seen: dict[str, list[int]] = {}
    for message, field, line in unknown:
        seen.setdefault(f"{message}.{field}", []).append(line)
    parts = [f"{name} (line {lines[0]}" + (f", {len(lines)} times)" if len(lines) > 1 else ")")
             for name, lines in seen.items()]
    warnings.warn(f"{file or 'prototxt'}: skipping fields the Caffe schema does not know (from a Caffe "
                  f"fork?): {', '.join(parts)}", UserWarning, stacklevel=3)


def _looks_like_text(s: str) -> bool:
    return "\n" in s or "{" in s or ":" in s.replace(":\\", "").replace(":/", "")


def read_prototxt(path_or_text: str | os.PathLike | bytes) -> NetParameter:
    """Read a Caffe net definition (a file path, or the prototxt text itself) as written, without upgrading.

    Raises FormatError (naming the file and line) for malformed text; warns once about unknown fields.
    """
    if isinstance(path_or_text, bytes):
        return parse_prototxt(_decode(path_or_text, None))
    if isinstance(path_or_text, str) and (_looks_like_text(path_or_text) and not os.path.isfile(path_or_text)):
        return parse_prototxt(path_or_text)
    path = os.fspath(path_or_text)
    data = read_bytes(path, "prototxt file")
    net = parse_prototxt(_decode(data, path), file=path)
    if not (len(net.layer) or len(net.layers) or len(net.input)):
        raise FormatError("the prototxt defines no layers", file=path)
    return net


# ---------------------------------------------------------------------------------------------------
# Upgrading legacy nets
# ---------------------------------------------------------------------------------------------------

#: V1 `LayerType` enum name -> V2 type string (as Caffe's upgrade names them).
V1_TYPES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

#: V0 type string -> V1 `LayerType` enum name.
V0_TYPES: dict[str, str] = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS", "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0 flat field -> {V0 type (or "*" for any): "sub_message.field"}. Repeated targets are appended to.
_V0_FIELDS: dict[str, dict[str, str]] = {
    "num_output": {"conv": "convolution_param.num_output", "innerproduct": "inner_product_param.num_output"},
    "biasterm": {"conv": "convolution_param.bias_term", "innerproduct": "inner_product_param.bias_term"},
    "weight_filler": {"conv": "convolution_param.weight_filler",
                      "innerproduct": "inner_product_param.weight_filler"},
    "bias_filler": {"conv": "convolution_param.bias_filler", "innerproduct": "inner_product_param.bias_filler"},
    "pad": {"conv": "convolution_param.pad", "pool": "pooling_param.pad"},
    "kernelsize": {"conv": "convolution_param.kernel_size", "pool": "pooling_param.kernel_size"},
    "group": {"conv": "convolution_param.group"},
    "stride": {"conv": "convolution_param.stride", "pool": "pooling_param.stride"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {"data": "data_param.source", "hdf5_data": "hdf5_data_param.source",
               "images": "image_data_param.source", "window_data": "window_data_param.source",
               "infogain_loss": "infogain_loss_param.source"},
    "scale": {"*": "transform_param.scale"},
    "meanfile": {"*": "transform_param.mean_file"},
    "cropsize": {"*": "transform_param.crop_size"},
    "mirror": {"*": "transform_param.mirror"},
    "batchsize": {"data": "data_param.batch_size", "hdf5_data": "hdf5_data_param.batch_size",
                  "images": "image_data_param.batch_size", "window_data": "window_data_param.batch_size"},
    "rand_skip": {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"},
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}
_V0_HANDLED_ELSEWHERE = {"name", "type", "blobs", "blobs_lr", "weight_decay"}

# V1 data layers whose own scale/mean_file/crop_size/mirror moved into transform_param.
_V1_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def needs_upgrade(net: NetParameter) -> bool:
    """True when the net uses V0/V1 `layers` or net-level `input` fields."""
    return bool(len(net.layers) or len(net.input) or len(net.input_shape) or len(net.input_dim))


def upgrade(net: NetParameter, *, file: str | os.PathLike | None = None) -> NetParameter:
    """A copy of `net` in the current format: `layer {}` with string types and an Input layer for inputs."""
    file = os.fspath(file) if file is not None else None
    out = NetParameter()
    out.CopyFrom(net)
    if len(net.layers):
        if len(net.layer):
            raise FormatError("the net mixes 'layer' (current) and 'layers' (legacy V1) entries; "
                              "Caffe refuses such a file too", file=file)
        v1_layers = list(net.layers)
        if any(entry.HasField("layer") for entry in v1_layers):
            v1_layers = [_v0_to_v1(entry, file) for entry in _fold_v0_padding(net, file)]
        del out.layers[:]
        for entry in v1_layers:
            _v1_to_v2(entry, out.layer.add(), file)
    if len(net.input) or len(net.input_shape) or len(net.input_dim):
        _inputs_to_layer(out, file)
    return out


def _is_repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28; `label` is deprecated there
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _set_path(msg, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        msg = getattr(msg, part)
    field = msg.DESCRIPTOR.fields_by_name[leaf]
    if field.message_type is not None:
        getattr(msg, leaf).CopyFrom(value)
    elif _is_repeated(field):
        getattr(msg, leaf).append(value)
    else:
        setattr(msg, leaf, value)


def _fold_v0_padding(net: NetParameter, file: str | None) -> list:
    """V0 `padding` layers removed; their pad moved into the conv/pool that reads their output."""
    producer: dict[str, int] = {name: -1 for name in net.input}
    kept = []
    for i, entry in enumerate(net.layers):
        v0 = entry.layer
        name = v0.name or f"#{i}"
        if v0.type != "padding":
            kept.append(schema.V1LayerParameter())
            kept[-1].CopyFrom(entry)
        for j, blob in enumerate(entry.bottom):
            if blob not in producer:
                raise FormatError(f"bottom '{blob}' is produced by no earlier layer", file=file, layer=name)
            src = producer[blob]
            if src == -1 or net.layers[src].layer.type != "padding":
                continue
            pad_layer = net.layers[src]
            if v0.type not in ("conv", "pool"):
                raise FormatError(f"a V0 padding layer ('{pad_layer.layer.name}') feeds a '{v0.type}' layer; "
                                  "only conv and pool layers can take it", file=file, layer=name)
            if len(entry.bottom) != 1 or len(pad_layer.bottom) != 1 or len(pad_layer.top) != 1:
                raise FormatError("a V0 padding layer and the layer it feeds must have one input and output",
                                  file=file, layer=name)
            kept[-1].layer.pad = pad_layer.layer.pad
            kept[-1].bottom[j] = pad_layer.bottom[0]
        for blob in entry.top:
            producer[blob] = i
    return kept


def _v0_to_v1(entry, file: str | None):
    """One V0 layer (the V1 wrapper with `layer` set) as a V1 layer with typed sub-messages."""
    v1 = schema.V1LayerParameter()
    v1.bottom.extend(entry.bottom)
    v1.top.extend(entry.top)
    if not entry.HasField("layer"):
        return v1
    v0 = entry.layer
    name = v0.name
    if v0.HasField("name"):
        v1.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_TYPES:
            raise FormatError(f"unknown V0 layer type '{v0.type}'", file=file, layer=name)
        v1.type = schema.V1LayerParameter.LayerType.Value(V0_TYPES[v0.type])
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    ignored = []
    for field, value in v0.ListFields():
        if field.name in _V0_HANDLED_ELSEWHERE:
            continue
        targets = _V0_FIELDS.get(field.name, {})
        target = targets.get(v0.type) or targets.get("*")
        if target is None:
            ignored.append(field.name)
            continue
        _set_path(v1, target, value)
    if ignored:
        warnings.warn(f"{file or 'prototxt'}: layer '{name}': V0 fields {', '.join(ignored)} do not apply to a "
                      f"'{v0.type}' layer and are ignored (as Caffe does)", UserWarning, stacklevel=4)
    return v1


def _v1_to_v2(v1, layer: LayerParameter, file: str | None) -> None:
    """One V1 layer as a V2 layer: enum type to string, sub-messages and per-blob settings moved."""
    layer.name = v1.name
    type_name = schema.V1LayerParameter.LayerType.Name(v1.type)
    if v1.HasField("type"):
        layer.type = V1_TYPES[type_name]
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.blobs.extend(v1.blobs)
    layer.loss_weight.extend(v1.loss_weight)
    per_blob = [("name", list(v1.param)), ("share_mode", list(v1.blob_share_mode)),
                ("lr_mult", list(v1.blobs_lr)), ("decay_mult", list(v1.weight_decay))]
    for attr, values in per_blob:
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            setattr(layer.param[i], attr, value)
    v2_fields = LayerParameter.DESCRIPTOR.fields_by_name
    for field, value in v1.ListFields():
        if field.message_type is not None and field.name.endswith("_param") and field.name in v2_fields:
            getattr(layer, field.name).CopyFrom(value)
    if type_name in _V1_DATA_PARAMS:
        sub = getattr(layer, _V1_DATA_PARAMS[type_name])
        for attr in _TRANSFORM_FIELDS:
            if sub.HasField(attr):
                setattr(layer.transform_param, attr, getattr(sub, attr))
                sub.ClearField(attr)
    if v1.HasField("layer"):
        raise FormatError("a V1 layer also holds a V0 layer", file=file, layer=v1.name)


def _inputs_to_layer(net: NetParameter, file: str | None) -> None:
    """Net-level `input` + `input_shape`/`input_dim` as a leading Input layer (shapes kept when given)."""
    names = list(net.input)
    shapes = [list(s.dim) for s in net.input_shape]
    dims = list(net.input_dim)
    if not names:
        raise FormatError("input_shape/input_dim given without 'input' names", file=file)
    if shapes and dims:
        raise FormatError("both input_shape and input_dim are given; use one", file=file)
    if shapes and len(shapes) != len(names):
        raise FormatError(f"{len(names)} inputs but {len(shapes)} input_shape entries", file=file)
    if dims:
        if len(dims) != 4 * len(names):
            raise FormatError(f"{len(names)} inputs need {4 * len(names)} input_dim values (N, C, H, W each), "
                              f"found {len(dims)}", file=file)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    layer = LayerParameter(name="input", type="Input", top=names)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape)
    layers = [layer] + list(net.layer)
    del net.layer[:]
    net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


# ---------------------------------------------------------------------------------------------------
# Deploy filtering
# ---------------------------------------------------------------------------------------------------

#: Layer types that only training uses; dropped from a deploy net (data layers become Input layers).
DATA_TYPES = frozenset({"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData",
                        "AnnotatedData", "VideoData"})
TRAIN_ONLY_TYPES = DATA_TYPES | {"Accuracy", "Silence", "HDF5Output"}


def _is_train_only(layer_type: str) -> bool:
    return layer_type in TRAIN_ONLY_TYPES or layer_type.endswith("Loss")


def _meets_rule(state: NetState, rule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def _included(layer: LayerParameter, state: NetState, file: str | None) -> bool:
    if len(layer.include) and len(layer.exclude):
        raise FormatError("a layer may have include rules or exclude rules, not both", file=file, layer=layer.name)
    if len(layer.include):
        return any(_meets_rule(state, r) for r in layer.include)
    return not any(_meets_rule(state, r) for r in layer.exclude)


def _data_as_input(layer: LayerParameter, used: set[str]) -> LayerParameter | None:
    """A data layer replaced by an Input layer for its tops that later layers read (shape where known)."""
    tops = [t for t in layer.top if t in used]
    if not tops:
        return None
    out = LayerParameter(name=layer.name, type="Input", top=tops)
    if layer.HasField("transform_param"):
        out.transform_param.CopyFrom(layer.transform_param)
    shapes: list[list[int]] = []
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        shapes = [[p.batch_size, p.channels, p.height, p.width], [p.batch_size]][:len(layer.top)]
    elif layer.type == "DummyData":
        p = layer.dummy_data_param
        if len(p.shape):
            shapes = [list(s.dim) for s in p.shape]
        elif len(p.num):
            shapes = [[p.num[i], p.channels[i], p.height[i], p.width[i]] for i in range(len(p.num))]
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
    if len(shapes) == len(layer.top):
        for top, shape in zip(layer.top, shapes):
            if top in used:
                out.input_param.shape.add().dim.extend(shape)
    return out


def deploy_net(net: NetParameter, *, file: str | os.PathLike | None = None, phase: int = schema.TEST,
               level: int = 0, stages: Iterable[str] = ()) -> NetParameter:
    """The net Caffe runs in `phase` (TEST): include/exclude rules applied, training-only layers dropped.

    Upgrades legacy nets first. Data layers whose tops later layers read become Input layers (with their
    transform_param, and a shape where the data layer states one); loss, Accuracy and Silence layers go.
    In-place layers are kept as written. A `Python` layer raises FormatError naming it.
    """
    file = os.fspath(file) if file is not None else None
    if needs_upgrade(net):
        net = upgrade(net, file=file)
    state = NetState()
    state.CopyFrom(net.state)  # stages named in the file's own `state` count, as in Caffe
    state.phase, state.level = phase, level
    state.stage.extend(stages)
    layers = [layer for layer in net.layer if _included(layer, state, file)]
    for layer in layers:
        if layer.type == "Python":
            p = layer.python_param
            raise FormatError(f"a Python layer (module '{p.module}', class '{p.layer}') runs user code through "
                              "pycaffe; kconvert cannot convert it", file=file, layer=layer.name)
    kept_consumers = {b for layer in layers if not _is_train_only(layer.type) for b in layer.bottom}
    out = NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in layers:
        if layer.type in DATA_TYPES:
            replacement = _data_as_input(layer, kept_consumers)
            if replacement is not None:
                out.layer.append(replacement)
        elif not _is_train_only(layer.type):
            out.layer.append(layer)
    return out


def write_prototxt(net: NetParameter, path: str | os.PathLike) -> None:
    """Write `net` as prototxt text (temporary file, then rename), as Caffe's own tools print a NetParameter."""
    from ..atomic import atomic_write

    with atomic_write(os.fspath(path), "w") as f:
        f.write(text_format.MessageToString(net))
