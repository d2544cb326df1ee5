"""`kconvert convert IN -o OUT`: the format pair chosen by the files, dispatched to the subcommand that does it.

The input kind comes from the file's bytes (`formats.detect`), the output kind from OUT's extension; `PAIRS` maps
(input kind, output kind) to a handler that turns the convert options into the target subcommand's arguments and
runs it (`keras2onnx`, `keras2caffe`, `caffe2keras`, `caffe2onnx`) or, Keras to Keras, loads and saves. Also here:
reading `.onnx` files for `inspect` and `validate` (ONNX is an output format; these only describe and run it).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from contextlib import redirect_stdout
from io import StringIO
from typing import Any

import numpy as np

# input kinds: what `detect_format` says, grouped by who reads it
INPUT_KINDS = {"keras_h5_model": "keras", "keras_zip": "keras", "json": "keras", "yaml": "keras",
               "caffe_prototxt": "caffe"}
WEIGHTS_ONLY = ("keras_h5_weights", "keras3_weights_h5", "caffemodel", "caffe_binaryproto")
OUTPUT_KINDS = {".h5": "h5", ".hdf5": "h5", ".keras": "keras", ".json": "config", ".yaml": "config", ".yml": "config",
                ".onnx": "onnx", ".prototxt": "prototxt"}
# options of `convert` that only some targets take: name -> (the targets taking it, store_true?)
OPTIONS = {
    "opset": ({"keras2onnx", "caffe2onnx"}, False),
    "batch": ({"keras2onnx"}, False),
    "dynamic": ({"keras2onnx"}, True),
    "inputs_as_nchw": ({"keras2onnx"}, True),
    "check_input": ({"keras2onnx"}, False),
    "unsafe": ({"keras2onnx", "keras2caffe", "keras2keras"}, True),
    "data_format": ({"caffe2keras"}, False),
    "input_shape": ({"caffe2keras", "caffe2onnx"}, False),
    "keras_version": ({"caffe2keras", "keras2keras"}, False),
    "weights_out": ({"caffe2keras", "keras2keras", "keras2caffe"}, False),
    "check": ({"keras2onnx", "caffe2onnx", "caffe2keras", "keras2caffe", "keras2keras"}, True),
}
RENAMED = {("keras2caffe", "weights_out"): "--weights"}  # keras2caffe's --weights is the caffemodel it writes

Handler = Callable[[argparse.Namespace], tuple[str, list[str]]]
PAIRS: dict[tuple[str, str], Handler] = {}


def pair(*keys: tuple[str, str]):
    def deco(fn: Handler) -> Handler:
        for key in keys:
            PAIRS[key] = fn
        return fn
    return deco


def supported_pairs() -> str:
    """The supported conversions, in one line."""
    ins = {"keras": "Keras (.h5, .keras, JSON/YAML + --weights)", "caffe": "Caffe (.prototxt [+ .caffemodel])"}
    exts = {"h5": ".h5", "keras": ".keras", "config": ".json/.yaml", "onnx": ".onnx", "prototxt": ".prototxt"}
    return "; ".join(f"{text} -> {', '.join(e for d, e in exts.items() if (src, d) in PAIRS)}"
                     for src, text in ins.items())


# ---------------------------------------------------------------------------------------------- handlers
# Each returns (target subcommand, its argv after the subcommand name).


def _input_weights(args: argparse.Namespace) -> str | None:
    from .errors import ConfigError

    if args.caffemodel and args.weights and args.caffemodel != args.weights:
        raise ConfigError("give the input weights once: as the second argument or as --weights")
    return args.weights or args.caffemodel


@pair(("keras", "onnx"))
def _keras_onnx(args: argparse.Namespace) -> tuple[str, list[str]]:
    weights = _input_weights(args)
    return "keras2onnx", [args.input, "-o", args.output, *(["--weights", weights] if weights else [])]


@pair(("keras", "prototxt"), ("caffe", "prototxt"))
def _to_caffe(args: argparse.Namespace) -> tuple[str, list[str]]:
    weights = _input_weights(args)
    beside = args.weights_out is None and (weights or args.kind in ("keras_h5_model", "keras_zip"))
    caffemodel = ["--weights", os.path.splitext(args.output)[0] + ".caffemodel"] if beside else []
    return "keras2caffe", [args.input, "-o", args.output, *(["--model-weights", weights] if weights else []),
                           *caffemodel]


@pair(("caffe", "h5"), ("caffe", "keras"), ("caffe", "config"))
def _caffe_keras(args: argparse.Namespace) -> tuple[str, list[str]]:
    weights = _input_weights(args)
    return "caffe2keras", [args.input, *([weights] if weights else []), "-o", args.output]


@pair(("caffe", "onnx"))
def _caffe_onnx(args: argparse.Namespace) -> tuple[str, list[str]]:
    from .errors import ConfigError

    weights = _input_weights(args)
    if not weights:
        raise ConfigError("converting a Caffe net to ONNX needs its .caffemodel (second argument or --weights)",
                          file=args.input)
    return "caffe2onnx", [args.input, weights, "-o", args.output]


@pair(("keras", "h5"), ("keras", "keras"), ("keras", "config"))
def _keras_keras(args: argparse.Namespace) -> tuple[str, list[str]]:
    weights = _input_weights(args)
    return "keras2keras", [args.input, "-o", args.output, *(["--model-weights", weights] if weights else [])]


def keras2keras(args: argparse.Namespace) -> int:
    """Keras to Keras (any dialect in, tf_keras .h5, Keras 3 .keras/.h5, or a JSON/YAML config out)."""
    from .api import compare_models, load_any
    from .cli import EXIT_OK, _print_report, write_keras
    from .errors import ConfigError
    from .models import load_model

    config_out = OUTPUT_KINDS.get(os.path.splitext(args.output)[1].lower()) == "config"
    if args.check and config_out and not args.weights_out:
        raise ConfigError("--check of a config-only output needs --weights-out (the weights to run it with)")
    if config_out and not args.model_weights and not args.weights_out:  # a config to a config: no weights needed
        model = load_model(args.model, compile=False, safe_mode=not args.unsafe)
    else:
        model = load_any(args.model, weights=args.model_weights, safe_mode=not args.unsafe)
    write_keras(model, args.output, keras_version=args.keras_version, weights_out=args.weights_out)
    if not args.check:
        return EXIT_OK
    print("check: the input model vs the written file read back")
    return _print_report(compare_models(model, load_any(args.output, weights=args.weights_out,
                                                        safe_mode=not args.unsafe)))


# ---------------------------------------------------------------------------------------------- the command


def _kinds(args: argparse.Namespace) -> tuple[str, str]:
    from .errors import ConfigError, FormatError
    from .formats.detect import detect_format

    ext = os.path.splitext(args.output)[1].lower()
    out_kind = OUTPUT_KINDS.get(ext)
    if os.path.splitext(args.input)[1].lower() == ".onnx":
        if not os.path.exists(args.input):
            raise FormatError("no such file", file=args.input)
        kind = "onnx"
    else:
        kind = detect_format(args.input)
    args.kind = kind
    if kind in WEIGHTS_ONLY:
        raise ConfigError(f"is a weights-only file ('{kind}'); give the model (config or prototxt) as IN and this "
                          f"file as --weights. Supported: {supported_pairs()}", file=args.input)
    in_kind = INPUT_KINDS.get(kind, kind)
    if out_kind is None or (in_kind, out_kind) not in PAIRS:
        what = f"'{ext or os.path.basename(args.output)}' outputs" if out_kind is None else f"'{kind}' to {ext}"
        raise ConfigError(f"cannot convert {what}. Supported: {supported_pairs()}", file=args.input)
    return in_kind, out_kind


def _options_argv(args: argparse.Namespace, target: str, in_kind: str, out_kind: str) -> list[str]:
    from .errors import ConfigError

    argv = []
    for name, (targets, flag) in OPTIONS.items():
        value = getattr(args, name)
        if value is None or value is False:
            continue
        option = "--" + name.replace("_", "-")
        if target not in targets:
            raise ConfigError(f"{option} does not apply to converting {in_kind} to {out_kind} (via {target})")
        option = RENAMED.get((target, name), option)
        argv += [option] if flag else [option, str(value)]
    return argv


def cmd_convert(args: argparse.Namespace) -> int:
    """Detect both formats, map the options onto the target subcommand and run it."""
    from .cli import COMMANDS, build_parser

    in_kind, out_kind = _kinds(args)
    target, argv = PAIRS[(in_kind, out_kind)](args)
    argv += _options_argv(args, target, in_kind, out_kind)
    target_args = build_parser().parse_args([target, *argv])
    run = COMMANDS[target]
    if not args.json:
        return run(target_args)
    log = StringIO()
    with redirect_stdout(log):
        code = run(target_args)
    written = [p for p in (target_args.output, getattr(target_args, "weights_out", None),
                           target_args.weights if target == "keras2caffe" else None) if p]
    print(json.dumps({"input": args.input, "input_format": args.kind, "output": args.output,
                      "output_format": out_kind, "via": target, "written": written, "exit_code": code,
                      "log": log.getvalue().splitlines()}, indent=1))
    return code


def register(subparsers: Any) -> None:
    """Add `convert` (and the hidden Keras-to-Keras target it dispatches to) to the `kconvert` parser."""
    from .cli import COMMANDS

    pc = subparsers.add_parser(
        "convert", help="convert IN to OUT, the formats chosen by the files (IN's content, OUT's extension)",
        description="Input: a Keras .h5/.keras (or JSON/YAML config + --weights), or a Caffe .prototxt "
                    "(+ its .caffemodel). Output by extension: .h5 (tf_keras; --keras-version 3 for Keras 3's "
                    ".h5), .keras, .json/.yaml (config; --weights-out W.h5 or W.weights.h5 for the weights), .onnx, "
                    ".prototxt (with OUT.caffemodel beside it when the input has weights, or --weights-out).")
    pc.add_argument("input", metavar="IN")
    pc.add_argument("caffemodel", nargs="?", help="with a Caffe prototxt: its .caffemodel (as --weights)")
    pc.add_argument("-o", "--output", required=True, metavar="OUT")
    pc.add_argument("--weights", help="the input's weights: a .h5 for a JSON/YAML config, a .caffemodel for a "
                    "prototxt")
    pc.add_argument("--weights-out", help="the output's weights file: .h5/.weights.h5 beside a .json/.yaml, the "
                    ".caffemodel beside a .prototxt (default OUT.caffemodel when the input has weights)")
    pc.add_argument("--keras-version", choices=("2", "3"), help="the Keras that reads OUT: 2 (tf_keras, default for "
                    ".h5/.json) or 3 (Keras 3's legacy .h5, Keras 3 JSON)")
    pc.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    pc.add_argument("--batch", type=int, help="ONNX from Keras: fix the batch dimension")
    pc.add_argument("--dynamic", action="store_true", default=None, help="ONNX from Keras: symbolic sizes")
    pc.add_argument("--inputs-as-nchw", action="store_true", default=None, help="ONNX from Keras: NCHW image inputs")
    pc.add_argument("--data-format", choices=("channels_last", "channels_first"), help="Keras from Caffe")
    pc.add_argument("--input-shape", help="Caffe input: N,C,H,W replacing the prototxt's input shape")
    pc.add_argument("--unsafe", action="store_true", default=None,
                    help="Keras input: allow Lambda bytecode from the file (safe_mode=False)")
    pc.add_argument("--check", action="store_true", default=None, help="compare the written model with the input "
                    "(as the target subcommand's --check does); exit 3 if over tolerance")
    pc.add_argument("--check-input", help="ONNX from Keras: a .npy/.npz input for --check")
    pc.add_argument("--json", action="store_true", help="print a JSON record of what was written")
    COMMANDS["convert"] = cmd_convert

    pk = subparsers.add_parser("keras2keras", help="convert a Keras model to .h5, .keras, .json or .yaml "
                               "(what `convert` runs for Keras to Keras)")
    pk.add_argument("model")
    pk.add_argument("-o", "--output", required=True, help="OUT.h5, OUT.keras, OUT.json or OUT.yaml")
    pk.add_argument("--model-weights", help="weights file when MODEL is a JSON/YAML config")
    pk.add_argument("--weights-out", help="with a .json/.yaml output: write the weights here too")
    pk.add_argument("--keras-version", choices=("2", "3"), help="2 (tf_keras) or 3 (Keras 3)")
    pk.add_argument("--unsafe", action="store_true", help="allow Lambda bytecode from the file (safe_mode=False)")
    pk.add_argument("--check", action="store_true", help="read the written file back and compare (exit 3 if over "
                    "tolerance)")
    COMMANDS["keras2keras"] = keras2keras


# ---------------------------------------------------------------------------------------------- ONNX files


def is_onnx(path: str) -> bool:
    """An `.onnx` file (by name: ONNX has no magic number)."""
    return os.path.splitext(os.fspath(path))[1].lower() == ".onnx"


def _read_onnx(path: str):
    import onnx

    from .errors import FormatError

    if not os.path.isfile(path):
        raise FormatError("no such file", file=path)
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise FormatError(f"cannot be read as an ONNX model (truncated or corrupt?): {e}", file=path) from None


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_param or None if not d.HasField("dim_value") else d.dim_value for d in shape.dim]


def inspect_onnx(path: str) -> dict[str, Any]:
    """An ONNX file's opset, producer, inputs/outputs (shape, element type), node counts and parameters."""
    import onnx

    proto = _read_onnx(path)
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1

    def io(v) -> dict[str, Any]:
        elem = v.type.tensor_type.elem_type
        return {"name": v.name, "shape": _dims(v), "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name
                if elem else "?"}

    return {"file": path, "format": "onnx", "ir_version": proto.ir_version,
            "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(), "graph": graph.name,
            "inputs": [io(v) for v in graph.input if v.name not in inits],
            "outputs": [io(v) for v in graph.output], "nodes": len(graph.node), "ops": ops,
            "initializers": len(graph.initializer),
            "parameters": int(sum(int(np.prod(t.dims)) for t in graph.initializer))}


def print_onnx_report(r: dict[str, Any]) -> None:
    print(f"file:    {r['file']}")
    print(f"format:  onnx (IR {r['ir_version']}, opset {', '.join(f'{d} {v}' for d, v in r['opset'].items())})")
    print(f"producer: {r['producer'] or 'unknown'}; graph '{r['graph']}'")
    for key in ("inputs", "outputs"):
        print(f"\n{key}:")
        for v in r[key]:
            shape = "(" + ", ".join("?" if d is None else str(d) for d in v["shape"]) + ")"
            print(f"  {v['name']:<30} {shape:<24} {v['dtype']}")
    print(f"\nnodes: {r['nodes']} ({', '.join(f'{op} {n}' for op, n in sorted(r['ops'].items()))})")
    print(f"parameters: {r['parameters']:,} in {r['initializers']} initializers")


class OnnxModel:
    """An ONNX file run by onnxruntime (CPU) with the few Model attributes `compare_models` uses."""

    def __init__(self, path: str):
        from types import SimpleNamespace

        from .runtime.onnx_session import NUMPY_DTYPES, OnnxSession

        _read_onnx(path)  # a clear error for a corrupt file before onnxruntime's
        self.session = OnnxSession(path, device="cpu")
        self.inputs = [SimpleNamespace(shape=shape, dtype=np.dtype(NUMPY_DTYPES.get(kind, np.float32)).name)
                       for shape, kind in zip(self.session.input_shapes, self.session.input_types)]
        self.output_names = self.session.output_names

    def predict(self, x, **kwargs):
        y = self.session.predict(x if isinstance(x, list) else [x])
        return y if len(y) > 1 else y[0]


def load_for_validate(path: str, weights: str | None):
    """A model for `validate`: whatever `load_any` reads, or an `.onnx` file."""
    from .api import load_any

    if is_onnx(path):
        if weights:
            from .errors import ConfigError

            raise ConfigError("an ONNX file holds its weights; give no weights file for it", file=path)
        return OnnxModel(path)
    return load_any(path, weights=weights)
