"""`kconvert plot`: draw a model file's layer graph (as tf_keras's `plot_model`) to svg, png, pdf or dot.

Without Graphviz a png/svg/pdf request still writes the graph text next to the output (same stem, `.dot`),
prints the `dot` command that renders it, and fails with one error line (exit 1): the picture asked for
was not written, as `keras.utils.plot_model` fails without Graphviz.
"""

from __future__ import annotations

import argparse
import json
import os

from .errors import FormatError, GraphvizNotFoundError

KERAS_MODEL_FORMATS = ("keras_h5_model", "keras_zip", "json", "yaml")


def load_architecture(path: str):
    """The model a Keras (.h5, .keras, JSON, YAML) or Caffe (deploy prototxt) file describes, without weights.

    The readers `kconvert inspect` uses (`load_model`; Caffe channels_last, as `load_any`), minus their
    demand for weights, which a plot does not need."""
    from .formats.detect import detect_format

    kind = detect_format(path)
    if kind == "caffe_prototxt":
        from .convert import caffe_to_keras

        return caffe_to_keras(path, data_format="channels_last")
    if kind not in KERAS_MODEL_FORMATS:
        raise FormatError(f"plot needs a model (Keras .h5/.keras/JSON/YAML or a Caffe deploy prototxt), "
                          f"this is a '{kind}' file", file=path)
    from .models import load_model

    return load_model(path)


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import DOT_FORMATS, graph_stats, model_to_dot, output_format, render, write_dot

    fmt = output_format(args.output)
    model = load_architecture(args.file)
    dot = model_to_dot(model, show_shapes=args.show_shapes, show_dtype=args.show_dtype, rankdir=args.rankdir,
                       expand_nested=args.expand_nested, dpi=args.dpi)
    report = {"output": args.output, "format": fmt, **graph_stats(dot)}
    if fmt in DOT_FORMATS:
        write_dot(dot, args.output)
    else:
        try:
            data = render(dot, fmt, args.output)
        except GraphvizNotFoundError:
            dot_file = os.path.splitext(args.output)[0] + ".dot"
            write_dot(dot, dot_file)
            command = f"dot -T{fmt} {dot_file} -o {args.output}"
            if args.json:
                print(json.dumps({**report, "output": dot_file, "format": "dot", "requested": args.output,
                                  "render": command}))
            else:
                print(f"wrote {dot_file} (Graphviz is not installed); render it with: {command}")
            raise
        from .formats.atomic import atomic_write

        with atomic_write(args.output, "wb") as f:
            f.write(data)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"wrote {args.output}: {report['layers']} layers, {report['edges']} edges ({fmt})")
    return 0


def register(subparsers) -> None:
    """Add `kconvert plot` to the CLI's subcommands."""
    from .cli import COMMANDS

    p = subparsers.add_parser("plot", help="draw a model's layer graph (as keras.utils.plot_model) to "
                              ".svg/.png/.pdf (needs Graphviz) or .dot")
    p.add_argument("file", help="a Keras .h5/.keras/JSON/YAML model or a Caffe deploy prototxt")
    p.add_argument("-o", "--output", required=True,
                   help="model.svg, .png or .pdf (rendered by Graphviz's dot) or model.dot (no Graphviz needed)")
    p.add_argument("--show-shapes", action="store_true", help="show each layer's input and output shapes")
    p.add_argument("--show-dtype", action="store_true", help="show each layer's dtype")
    p.add_argument("--expand-nested", action="store_true", help="draw nested models as clusters of their layers")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="TB: top to bottom (default), LR: left to right")
    p.add_argument("--dpi", type=int, default=96, help="resolution of png output (default 96)")
    p.add_argument("--json", action="store_true",
                   help='print {"output", "format", "layers", "edges"} as JSON instead of a sentence')
    COMMANDS["plot"] = cmd_plot
