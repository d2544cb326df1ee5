"""The `kconvert` command. Exit codes: 0 ok, 1 conversion or input error, 2 usage, 3 validation over tolerance,
4 internal error (a bug)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH, EXIT_BUG = 0, 1, 2, 3, 4

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


# ---------------------------------------------------------------------------------------------- inspect


@command("inspect")
def cmd_inspect(args: argparse.Namespace) -> int:
    from .api import inspect_file
    from .formats.detect import CAFFE_FORMATS, detect_format

    if args.caffemodel and args.weights and args.caffemodel != args.weights:
        from .errors import ConfigError

        raise ConfigError("give the caffemodel once: as the second argument or as --weights")
    from .cli_convert import inspect_onnx, is_onnx, print_onnx_report

    weights = args.weights or args.caffemodel
    if is_onnx(args.file):
        report = inspect_onnx(args.file)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_onnx_report(report)
        return EXIT_OK
    config_weights = weights if weights and detect_format(args.file) in ("json", "yaml") else None
    report = inspect_file(args.file, weights=None if config_weights else weights, mean=args.mean)
    if config_weights:
        report["weights"] = _config_weights(args.file, config_weights)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return EXIT_OK
    if report.get("kind") in CAFFE_FORMATS:
        _print_caffe_report(report)
        return EXIT_OK
    print(f"file:    {report['file']}")
    print(f"format:  {report['format']}")
    if report.get("keras_version"):
        print(f"keras:   {report['keras_version']} (backend: {report.get('backend') or 'unknown'})")
    if report.get("summary"):
        print()
        print("\n".join(report["summary"]))
    for key, title in (("inputs", "inputs"), ("outputs", "outputs")):
        if report.get(key):
            print(f"\n{title}:")
            for item in report[key]:
                print(f"  {item['name']:<30} {str(tuple(item['shape'])):<24} {item['dtype']}")
    if report.get("weights"):
        print("\nweights:")
        for w in report["weights"]:
            print(f"  {w['name']:<50} {str(tuple(w['shape'])):<24} {w['dtype']}")
    return EXIT_OK


def _config_weights(path: str, weights: str) -> list[dict]:
    """The weights of a JSON/YAML config as loaded from its weights file (checked against the model)."""
    from .api import load_any

    model = load_any(path, weights=weights)
    return [{"name": w.name, "shape": list(w.shape), "dtype": str(w.value.dtype)} for w in model.weights]


def _shape_text(shape) -> str:
    return "?" if shape is None else "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _size_text(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]], indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print((indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip())


def _print_caffe_report(r: dict) -> None:
    """The text form of a Caffe inspect report (prototxt, caffemodel or mean file)."""
    print(f"file:    {r['file']}")
    print(f"format:  {r['format']}")
    if "net" in r:
        print(f"net:     {r['net'] or '(unnamed)'}")
    w = r.get("weights")
    if w:
        print(f"weights: {w['file']} (net '{w['net']}': {w['layers']} layers with {w['blobs']} blobs, "
              f"{w['values']:,} values, {_size_text(w['bytes'])})")
        if w["not_in_deploy_net"]:
            print(f"         layers with weights the deploy net does not use: {', '.join(w['not_in_deploy_net'])}")
    if "inputs" in r:
        print(f"\ninputs (NCHW, from {r['input_form']}):")
        for i in r["inputs"]:
            shape = _shape_text(i["shape"]) if i["shape"] else "no shape in the file"
            how = f"; shape from {i['shape_from']}" if i.get("shape_from") else ""
            print(f"  {i['name']:<20} {shape:<20} {i['from']}{how}")
    if r["kind"] == "caffe_prototxt":
        rows = [["name", "type", "bottoms -> tops", "output (NCHW)"] + (["blobs"] if w else []) + ["note"]]
        for la in r["layers"]:
            shapes = " ".join(_shape_text(s) for s in la["output_shapes"]) if la["output_shapes"] else "-"
            note = "" if la["deploy"] is not False else "not in the deploy net"
            note = ", ".join(x for x in (la["phase"] and f"phase {la['phase']}", note) if x)
            blobs = [" ".join(_shape_text(b) for b in la["blobs"]) or "-"] if w else []
            rows.append([la["name"], la["type"], f"{','.join(la['bottoms']) or '-'} -> {','.join(la['tops'])}",
                         shapes, *blobs, note])
        print("\nlayers:")
        _table(rows)
        if r["outputs"]:
            print("\noutputs:")
            for o in r["outputs"]:
                print(f"  {o['name']:<20} {_shape_text(o['shape'])}")
        if r["conversion_error"]:
            what = "with the weights failed (shapes from the architecture alone)" if r["outputs"] else \
                "failed (no output shapes)"
            print(f"\nconversion {what}: {r['conversion_error']}")
    elif r["kind"] == "caffemodel":
        rows = [["name", "type", "version", "blobs", "bytes"]]
        for la in r["layers"]:
            rows.append([la["name"], la["type"], f"V{la['version']}",
                         " ".join(_shape_text(b["shape"]) for b in la["blobs"]) or "-",
                         _size_text(sum(b["bytes"] for b in la["blobs"])) if la["blobs"] else "-"])
        print("\nlayers:")
        _table(rows)
        t = r["weights_total"]
        print(f"\ntotal: {t['layers']} layers with {t['blobs']} blobs, {t['values']:,} values, "
              f"{_size_text(t['bytes'])}")
    m = r.get("mean")
    if m:
        print(f"\nmean:    {m['file']}: shape {_shape_text(m['shape'])}, per-channel mean "
              f"[{', '.join(f'{v:.6g}' for v in m['per_channel_mean'])}], min {m['min']:.6g}, max {m['max']:.6g}")
    if r.get("channel_order"):
        print(f"\nchannel order: {r['channel_order']}")
    if r.get("preprocessing"):
        print("preprocessing:")
        for line in r["preprocessing"]:
            print(f"  {line}")
    for warning in r.get("warnings") or []:
        print(f"warning: {warning}")


# ---------------------------------------------------------------------------------------------- validate


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    from .api import compare_models
    from .cli_convert import load_for_validate

    model_a = load_for_validate(args.model_a, args.weights_a)
    model_b = load_for_validate(args.model_b, args.weights_b)
    inputs = None
    if args.input:
        inputs = _load_inputs(args.input)
    report = compare_models(model_a, model_b, inputs=inputs, batch=args.batch, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=1))
        return EXIT_OK if report["ok"] else EXIT_MISMATCH
    return _print_report(report)


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from .api import load_any, random_inputs
    from .formats.atomic import atomic_write

    model = load_any(args.model, weights=args.weights)
    feeds = _load_inputs(args.input) if args.input else random_inputs(model, args.batch, args.seed)
    outputs = model.predict(feeds if len(feeds) > 1 else feeds[0], batch_size=args.batch_size, runtime=args.runtime,
                            device=args.device)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for name, y in zip(model.output_names, outputs):
        flat = y.reshape(-1)
        head = ", ".join(f"{v:.6g}" for v in flat[:6])
        print(f"{name}: shape={y.shape} dtype={y.dtype} mean={float(y.mean()):.6g} "
              f"first=[{head}{', ...' if flat.size > 6 else ''}]")
    if args.output:
        with atomic_write(args.output) as f:
            np.savez(f, **{f"output_{i}": y for i, y in enumerate(outputs)})
        print(f"wrote {args.output}")
    if args.expect:
        return _compare_expected(args.expect, model.output_names, outputs)
    return EXIT_OK


def _compare_expected(path: str, names: list[str], outputs: list[np.ndarray]) -> int:
    from .api import tolerance
    from .errors import FormatError

    try:
        expected = np.load(path, allow_pickle=False)
        refs = [expected[f"output_{i}"] for i in range(len(outputs))]
    except (OSError, ValueError, KeyError) as e:
        raise FormatError(f"cannot read expected outputs output_0..output_{len(outputs) - 1}: {e}",
                          file=path) from None
    ok = True
    for name, y, ref in zip(names, outputs, refs):
        err = float(np.max(np.abs(y.astype(np.float64) - ref))) if ref.shape == y.shape else float("inf")
        within = err <= tolerance(ref)
        ok &= within
        print(f"{name}: max |ours - expected| = {err:.3g} ({'ok' if within else 'OVER TOLERANCE'})")
    return EXIT_OK if ok else EXIT_MISMATCH


def _load_inputs(path: str) -> list[np.ndarray]:
    from .errors import FormatError

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read the input array: {e}", file=path) from None
    if isinstance(data, np.ndarray):
        return [data]
    keys = [k for k in data.files if k.startswith("input")] or list(data.files)
    keys = sorted(keys, key=lambda k: (len(k), k))
    return [data[k] for k in keys]


# ---------------------------------------------------------------------------------------------- keras2onnx


@command("keras2onnx")
def cmd_keras2onnx(args: argparse.Namespace) -> int:
    from .api import check_onnx, load_any
    from .convert import keras_to_onnx

    model = load_any(args.model, weights=args.weights, safe_mode=not args.unsafe)
    proto = keras_to_onnx(model, args.output, opset=args.opset, batch=args.batch,
                          inputs_as_nchw=args.inputs_as_nchw, progress=_progress_bar("lowering"),
                          dynamic=args.dynamic, stream=True)
    n_transpose = sum(n.op_type == "Transpose" for n in proto.graph.node)
    print(f"wrote {args.output}: opset {args.opset}, {len(proto.graph.node)} nodes ({n_transpose} Transpose), "
          f"inputs {', '.join(i.name for i in proto.graph.input)}")
    if not args.check:
        return EXIT_OK
    inputs = _load_inputs(args.check_input) if args.check_input else None
    print("check: numpy engine vs onnxruntime on the written file")
    return _print_report(check_onnx(model, args.output, inputs=inputs, batch=args.batch or 2,
                                    inputs_as_nchw=args.inputs_as_nchw))


def _progress_bar(what: str, min_total: int = 100):
    """A tqdm bar on stderr for long work of at least `min_total` steps (shown only on a terminal)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    state = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state and total >= min_total:
            state["bar"] = tqdm(total=total, desc=what, unit="layer", leave=False)
        bar = state.get("bar")
        if bar is not None:
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
    return update


def _print_report(report: dict) -> int:
    if report.get("skipped"):
        print(f"  not compared: {report['skipped']}")
        return EXIT_OK
    width = max(len(r["name"]) for r in report["outputs"])
    for r in report["outputs"]:
        status = "ok" if r["ok"] else "OVER TOLERANCE"
        print(f"{r['name']:<{width}}  max_abs={r['max_abs']:.3g}  max_rel={r['max_rel']:.3g}  "
              f"tolerance={r['tolerance']:.3g}  {status}")
    return EXIT_OK if report["ok"] else EXIT_MISMATCH


# ---------------------------------------------------------------------------------------------- Caffe


def _input_shape(text: str | None) -> tuple | None:
    from .errors import ConfigError

    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-shape wants N,C,H,W integers, got {text!r}") from None
    if len(dims) < 2 or any(d <= 0 for d in dims):
        raise ConfigError(f"--input-shape wants positive N,C,H,W integers, got {text!r}")
    return dims


@command("caffe2keras")
def cmd_caffe2keras(args: argparse.Namespace) -> int:
    from .convert import caffe_to_keras

    model = caffe_to_keras(args.prototxt, args.caffemodel, data_format=args.data_format,
                           input_shape=_input_shape(args.input_shape), progress=_caffe_progress(args.caffemodel))
    write_keras(model, args.output, keras_version=args.keras_version, weights_out=args.weights_out,
                note=f"{args.data_format}{'' if args.caffemodel else ', architecture only'}")
    return _check_caffe_report(args, model) if args.check else EXIT_OK


def write_keras(model, out: str, keras_version: str | None = None, weights_out: str | None = None,
                note: str = "") -> None:
    """Save `model` by OUT's extension: .h5 (tf_keras, or Keras 3's with keras_version "3"), .keras, or a .json/.yaml
    config (plus its weights in `weights_out`: a legacy .h5, or Keras 3's layout when it ends in .weights.h5)."""
    from .errors import ConfigError
    from .formats.atomic import atomic_write

    ext = os.path.splitext(out)[1].lower()
    if ext not in (".h5", ".hdf5", ".keras", ".json", ".yaml", ".yml"):
        raise ConfigError(f"the output must end in .h5, .keras, .json or .yaml, got {out!r}")
    if (keras_version == "2" and ext == ".keras") or (keras_version == "3" and ext in (".yaml", ".yml")):
        raise ConfigError(f"Keras {keras_version} does not read {ext} files", file=out)
    if weights_out and ext not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"a {ext} file holds its weights; --weights-out goes with a .json/.yaml output", file=out)
    if ext in (".h5", ".hdf5", ".keras"):
        model.save(out, keras_version=keras_version)
    else:
        with atomic_write(out, "w") as f:
            f.write(model.to_json(keras_version=keras_version) if ext == ".json" else model.to_yaml())
        if weights_out:
            model.save_weights(weights_out)
    what = f" and {weights_out}" if weights_out else ("" if ext in (".h5", ".hdf5", ".keras") else " (config only)")
    print(f"wrote {out}{what}: {len(model.layers)} layers, inputs {', '.join(model.input_names)}, outputs "
          f"{', '.join(model.output_names)}{f' ({note})' if note else ''}")


def _caffe_progress(caffemodel: str | None):
    """A progress bar over the layers when the weights are big enough for the conversion to take a while."""
    big = caffemodel is not None and os.path.exists(caffemodel) and os.path.getsize(caffemodel) > 64 * 2**20
    return _progress_bar("converting", min_total=1) if big else None


@command("keras2caffe")
def cmd_keras2caffe(args: argparse.Namespace) -> int:
    from .api import check_keras_caffe, load_any
    from .convert import keras_to_caffe

    if not args.output.endswith(".prototxt"):
        from .errors import ConfigError

        raise ConfigError("the output (-o) must end in .prototxt (the weights go to --weights OUT.caffemodel)")
    model = load_any(args.model, weights=args.model_weights, safe_mode=not args.unsafe)
    net = keras_to_caffe(model, args.output, args.weights)
    print(f"wrote {args.output}" + (f" and {args.weights}" if args.weights else "") +
          f": {len(net.layer)} Caffe layers, inputs {', '.join(model.input_names)}")
    if not args.check:
        return EXIT_OK
    if not args.weights:
        from .errors import ConfigError

        raise ConfigError("--check needs --weights (the caffemodel to run)")
    code = EXIT_OK
    for what, report in check_keras_caffe(model, args.output, args.weights):
        print(f"check: the Keras model vs {what}")
        code = max(code, _print_report(report))
    return code


@command("caffe2onnx")
def cmd_caffe2onnx(args: argparse.Namespace) -> int:
    from .convert import caffe_to_keras, keras_to_onnx

    model = caffe_to_keras(args.prototxt, args.caffemodel, data_format="channels_first",
                           input_shape=_input_shape(args.input_shape), progress=_caffe_progress(args.caffemodel))
    proto = keras_to_onnx(model, args.output, opset=args.opset, progress=_progress_bar("lowering"), stream=True)
    print(f"wrote {args.output}: opset {args.opset}, {len(proto.graph.node)} nodes, inputs "
          f"{', '.join(i.name for i in proto.graph.input)}")
    if not args.check:
        return EXIT_OK
    from .api import check_onnx

    print("check: kconvert's NCHW run vs onnxruntime on the written file")
    code = _print_report(check_onnx(model, args.output))
    return max(code, _check_caffe_report(args, model))


def _check_caffe_report(args: argparse.Namespace, model) -> int:
    from .api import check_caffe

    if args.caffemodel is None:
        from .errors import ConfigError

        raise ConfigError("--check needs the caffemodel")
    code = EXIT_OK
    data_format = getattr(args, "data_format", "channels_first")
    for what, report in check_caffe(model, args.prototxt, args.caffemodel, data_format,
                                    input_shape=_input_shape(args.input_shape)):
        print(f"check: converted model vs {what}")
        status = _print_report(report)
        deviations = report.get("opencv_deviations")
        if deviations:
            print(f"  (informational: OpenCV departs from Caffe in {len(deviations)} layer(s), so differences here "
                  "do not fail the check: " + "; ".join(deviations) + ")")
            status = EXIT_OK
        code = max(code, status)
    return code


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kconvert", description="Convert, inspect and validate Keras/Caffe models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    pi = sub.add_parser("inspect", help="show a model file's format, layers, inputs/outputs and weights (Caffe: "
                        "also input shape, channel order and preprocessing)")
    pi.add_argument("file", help="a Keras, Caffe or .onnx file")
    pi.add_argument("caffemodel", nargs="?", help="with a Caffe prototxt: its .caffemodel (as --weights)")
    pi.add_argument("--weights", help="with a Caffe prototxt: its .caffemodel (blob shapes, checked against the net); "
                    "with a JSON/YAML config: its weights .h5 (listed as loaded)")
    pi.add_argument("--mean", help="with a Caffe prototxt: the mean .binaryproto of its training data")
    pi.add_argument("--json", action="store_true", help="machine-readable output")

    pp = sub.add_parser("predict", help="run a model on inputs from a .npy/.npz file (or random ones)")
    pp.add_argument("model")
    pp.add_argument("--weights", help="weights file when MODEL is a JSON/YAML config (a .caffemodel for a prototxt)")
    pp.add_argument("--input", help=".npy (one input) or .npz (keys input_0, input_1, ... or any, in key order)")
    pp.add_argument("-o", "--output", help="write the outputs to this .npz (output_0, output_1, ...)")
    pp.add_argument("--expect", help=".npz with reference outputs output_0, ... to compare against (exit 3 if over "
                    "tolerance)")
    pp.add_argument("--batch", type=int, default=2, help="batch size of the random input (default 2)")
    pp.add_argument("--batch-size", type=int, default=32, help="prediction batch size (default 32)")
    pp.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    pp.add_argument("--runtime", choices=("onnx", "numpy"), default="onnx",
                    help="onnxruntime (default) or kconvert's numpy reference engine")
    pp.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto",
                    help="onnxruntime device (default auto: CUDA when it works, else CPU)")

    pk = sub.add_parser("keras2onnx", help="convert a Keras model (.h5, .keras, or JSON/YAML + --weights) to ONNX")
    pk.add_argument("model")
    pk.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    pk.add_argument("--weights", help="weights file when MODEL is a JSON/YAML config")
    pk.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 to the newest onnxruntime runs (default 17)")
    pk.add_argument("--batch", type=int, help="fix the batch dimension (symbolic by default)")
    pk.add_argument("--dynamic", action="store_true",
                    help="symbolic sequence lengths and spatial sizes where the model allows (fixed otherwise)")
    pk.add_argument("--inputs-as-nchw", action="store_true", help="declare channels_last image inputs as NCHW")
    pk.add_argument("--unsafe", action="store_true", help="allow Lambda bytecode from the file (safe_mode=False)")
    pk.add_argument("--check", action="store_true",
                    help="run the numpy engine and onnxruntime on the same inputs and compare (exit 3 if over "
                         "tolerance)")
    pk.add_argument("--check-input", help="a .npy/.npz input for --check (random inputs otherwise)")

    pc = sub.add_parser("caffe2keras", help="convert a Caffe deploy prototxt (+ caffemodel) to a Keras model")
    pc.add_argument("prototxt")
    pc.add_argument("caffemodel", nargs="?", help="the weights (without them: the architecture only)")
    pc.add_argument("-o", "--output", required=True, help="OUT.h5 (tf_keras), OUT.keras (Keras 3), .json or .yaml")
    pc.add_argument("--data-format", choices=("channels_last", "channels_first"), default="channels_last")
    pc.add_argument("--input-shape", help="N,C,H,W replacing the prototxt's input shape")
    pc.add_argument("--keras-version", choices=("2", "3"), help="with .h5/.json: 2 (tf_keras, default) or 3 (Keras 3)")
    pc.add_argument("--weights-out", help="with a .json/.yaml output: write the weights to this .h5 (.weights.h5: "
                    "Keras 3's layout)")
    pc.add_argument("--check", action="store_true", help="compare with the net run as Caffe computes it "
                    "(kconvert's NCHW run, and OpenCV 4.x when installed); exit 3 if over tolerance")

    po = sub.add_parser("caffe2onnx", help="convert a Caffe deploy prototxt + caffemodel to ONNX (NCHW)")
    po.add_argument("prototxt")
    po.add_argument("caffemodel")
    po.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    po.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    po.add_argument("--input-shape", help="N,C,H,W replacing the prototxt's input shape")
    po.add_argument("--check", action="store_true", help="compare onnxruntime and OpenCV 4.x with kconvert's run")

    pc = sub.add_parser("keras2caffe", help="convert a Keras model to a Caffe deploy prototxt (+ caffemodel)")
    pc.add_argument("model")
    pc.add_argument("-o", "--output", required=True, help="the deploy .prototxt to write")
    pc.add_argument("--weights", help="the .caffemodel to write (the architecture only without it)")
    pc.add_argument("--model-weights", help="weights file when MODEL is a JSON/YAML config")
    pc.add_argument("--unsafe", action="store_true", help="allow Lambda bytecode from the file (safe_mode=False)")
    pc.add_argument("--check", action="store_true",
                    help="run the written net (read back by kconvert, and by OpenCV 4.x when installed) against "
                         "the Keras model (exit 3 if over tolerance)")

    pv = sub.add_parser("validate", help="run two models (any format kconvert reads, or .onnx) on the same input "
                        "and compare their outputs")
    pv.add_argument("model_a")
    pv.add_argument("model_b")
    pv.add_argument("--weights-a", help="weights file for MODEL_A when it is a JSON/YAML config")
    pv.add_argument("--weights-b", help="weights file for MODEL_B when it is a JSON/YAML config")
    pv.add_argument("--input", help="a .npy (one input) or .npz (inputs in key order) to feed both models")
    pv.add_argument("--batch", type=int, default=2, help="batch size of the random input (default 2)")
    pv.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    pv.add_argument("--json", action="store_true", help="machine-readable output")

    from .cli_convert import register as register_convert

    register_convert(sub)
    from .cli_plot import register as register_plot

    register_plot(sub)
    for subparser in sub.choices.values():  # --debug after the subcommand too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show full tracebacks on errors")
    for parser in (p, *sub.choices.values()):  # the sandbox options, before or after the subcommand
        _add_sandbox_options(parser, default=argparse.SUPPRESS if parser is not p else None)
    return p


def _add_sandbox_options(p: argparse.ArgumentParser, default) -> None:
    from . import sandbox

    def arg_type(parse):
        def convert(text: str):
            try:
                return parse(text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return convert

    env = os.environ.get
    p.add_argument("--timeout", metavar="SECONDS", type=arg_type(sandbox.parse_seconds),
                   default=default or env(sandbox.TIMEOUT_ENV, f"{sandbox.DEFAULT_TIMEOUT:g}"),
                   help=f"stop a command still running after this many seconds: exit 1 (default "
                        f"${sandbox.TIMEOUT_ENV} or {sandbox.DEFAULT_TIMEOUT:g}; 0: no limit)")
    p.add_argument("--max-memory", metavar="SIZE", type=arg_type(sandbox.parse_size),
                   default=default or env(sandbox.MAX_MEMORY_ENV, "0"),
                   help=f"cap the command's address space, e.g. 512M or 8G: exit 1 when over it (default "
                        f"${sandbox.MAX_MEMORY_ENV}, or no cap)")
    p.add_argument("--no-sandbox", action="store_true", default=default or False,
                   help="run in this process, not in a child process that turns a crash of a native reader "
                        "into an error line (no --timeout, no --max-memory then)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    if args.version:
        from . import __version__

        print(f"kconvert {__version__}")
        return EXIT_OK
    if not args.command:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("KCONVERT_CLI", "1")
    if not args.debug:
        import warnings

        warnings.showwarning = _one_line_warning
    from . import sandbox

    if argv is None and sandbox.wanted(args.no_sandbox):  # the real command line: readers in a child process
        return sandbox.run(lambda: _run(args), sandbox.input_files(args), args.timeout, args.max_memory)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the command; errors become one line and an exit code (the traceback with --debug)."""
    from .errors import KConvertError

    try:
        return COMMANDS[args.command](args)
    except KConvertError as e:
        if args.debug:
            raise
        print(f"kconvert: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("kconvert: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at interpreter exit
        return EXIT_OK
    except OSError as e:  # the system refused: a missing folder, no permission, a full disk
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"kconvert: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:  # a file claiming huge sizes, or over --max-memory
        if args.debug:
            raise
        from .sandbox import input_files, memory_error_line

        print(memory_error_line(input_files(args)), file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a bug in kconvert: one line, the traceback with --debug
        if args.debug:
            raise
        text = " ".join(str(e).split())[:300]
        print(f"kconvert: internal error: {type(e).__name__}: {text} (a bug in kconvert; rerun with --debug for "
              "the traceback and report it)", file=sys.stderr)
        return EXIT_BUG


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message)
    text = text[len("kconvert: "):] if text.startswith("kconvert: ") else text
    print(f"kconvert: warning: {text}", file=sys.stderr)


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
