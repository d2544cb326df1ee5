"""Library functions behind the CLI: open any supported file, describe it, compare two models."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from typing import Any

import numpy as np

from .errors import FormatError, KConvertError, WeightsError
from .models import Model, load_model


def tolerance(reference: np.ndarray) -> float:
    """The design doc's tolerance: 1e-5 + 1e-4 * max|reference|."""
    ref = np.asarray(reference, dtype=np.float64)
    return 1e-5 + 1e-4 * (float(np.max(np.abs(ref))) if ref.size else 0.0)


def load_any(path: str, weights: str | None = None, custom_objects: dict | None = None,
             safe_mode: bool = True) -> Model:
    """A model from a whole-model `.h5`/`.keras`, or a JSON/YAML config plus an optional weights `.h5`."""
    model = load_model(path, custom_objects=custom_objects, safe_mode=safe_mode)
    if weights:
        model.load_weights(weights)
    elif _is_config_only(path) and model.weights:
        raise WeightsError("a JSON/YAML config holds no weights; pass the weights file too", file=path)
    return model


def _is_config_only(path: str) -> bool:
    from .formats.detect import detect_format

    return detect_format(path) in ("json", "yaml")


def inspect_file(path: str) -> dict[str, Any]:
    """What a file is and what it holds: format, version, layer table, inputs/outputs, weights."""
    from .formats.detect import detect_format
    from .formats.keras_h5 import read_keras_h5

    path = os.fspath(path)
    kind = detect_format(path)
    report: dict[str, Any] = {"file": path, "format": kind}
    if kind == "keras_h5_weights":
        h5 = read_keras_h5(path)
        report["keras_version"] = h5.weights_keras_version or h5.keras_version
        report["backend"] = h5.weights_backend or h5.backend
        report["weights"] = [{"layer": ln, "name": wn, "shape": list(a.shape), "dtype": str(a.dtype)}
                             for ln in h5.layer_names for wn, a in h5.layer_weights.get(ln, [])]
        return report
    if kind == "keras3_weights_h5":
        from .formats.keras3_weights import read_keras3_weights

        tree = read_keras3_weights(path)
        report["weights"] = [{"layer": gpath, "name": f"{gpath}/vars/{i}", "shape": list(a.shape),
                              "dtype": str(a.dtype)}
                             for gpath, group in tree.walk() for i, a in enumerate(group.vars)]
        return report
    if kind not in ("keras_h5_model", "keras_zip", "json", "yaml"):
        raise FormatError(f"inspect does not read '{kind}' files yet", file=path)
    model = load_model(path)
    if kind == "keras_h5_model":
        h5 = read_keras_h5(path)
        report["keras_version"], report["backend"] = h5.keras_version, h5.backend
        report["compiled"] = h5.training_config is not None
    elif kind == "keras_zip":
        from .formats.keras_zip import read_keras_zip

        archive = read_keras_zip(path, load_weights=False)
        report["keras_version"] = archive.keras_version
        report["compiled"] = "compile_config" in archive.config
    lines: list[str] = []
    if isinstance(model, Model):
        buf = io.StringIO()
        with redirect_stdout(buf):
            model.summary()
        lines = buf.getvalue().rstrip("\n").split("\n")
        report["inputs"] = [{"name": v.node.layer.name, "shape": list(v.shape), "dtype": v.dtype}
                            for v in model.inputs]
        report["outputs"] = [{"name": v.node.layer.name, "shape": list(v.shape), "dtype": v.dtype}
                             for v in model.outputs]
    report["summary"] = lines
    report["weights"] = [{"name": w.name, "shape": list(w.shape), "dtype": str(w.value.dtype)}
                         for w in model.weights] if kind in ("keras_h5_model", "keras_zip") else []
    return report


def random_inputs(model: Model, batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Random inputs fitting `model`: standard normal floats, small non-negative integers for int inputs."""
    rng = np.random.default_rng(seed)
    out = []
    for v in model.inputs:
        shape = tuple(batch if i == 0 else (d if d is not None else 8) for i, d in enumerate(v.shape))
        if v.dtype.startswith("int") or v.dtype.startswith("uint"):
            out.append(rng.integers(0, 10, shape).astype(v.dtype))
        else:
            out.append(rng.standard_normal(shape).astype(np.float32))
    return out


def compare_models(a: Model, b: Model, inputs: list[np.ndarray] | None = None, batch: int = 2,
                   seed: int = 0) -> dict[str, Any]:
    """Run both models on the same inputs; per output max abs/rel error and whether it is within tolerance."""
    if len(a.inputs) != len(b.inputs):
        raise KConvertError(f"the models have {len(a.inputs)} and {len(b.inputs)} inputs")
    feeds = inputs if inputs is not None else random_inputs(a, batch, seed)
    ya = a.predict(feeds if len(feeds) > 1 else feeds[0])
    yb = b.predict(feeds if len(feeds) > 1 else feeds[0])
    return compare_outputs(a.output_names, ya, yb)


def check_onnx(model: Model, onnx_path: str, inputs: list[np.ndarray] | None = None, batch: int = 2,
               seed: int = 0, inputs_as_nchw: bool = False) -> dict[str, Any]:
    """Run the numpy engine and onnxruntime (on the written file) on the same inputs and compare the outputs.

    `inputs` are in the Keras model's layout; with `inputs_as_nchw` they are transposed for the ONNX model.
    """
    from .runtime.onnx_session import OnnxSession

    feeds = inputs if inputs is not None else random_inputs(model, batch, seed)
    ya = model.predict(feeds if len(feeds) > 1 else feeds[0], runtime="numpy")
    onnx_feeds = [np.moveaxis(x, -1, 1) if inputs_as_nchw and 3 <= x.ndim <= 5 and x.dtype.kind == "f" else x
                  for x in feeds]
    yb = OnnxSession(onnx_path, device="cpu").predict(onnx_feeds)
    return compare_outputs(model.output_names, ya, yb)


def compare_outputs(names: list[str], ya, yb) -> dict[str, Any]:
    """Per output: max abs/rel error of `yb` against the reference `ya`, and whether it is within tolerance."""
    ya = ya if isinstance(ya, list) else [ya]
    yb = yb if isinstance(yb, list) else [yb]
    if len(ya) != len(yb):
        raise KConvertError(f"the models have {len(ya)} and {len(yb)} outputs")
    rows = []
    for name, ra, rb in zip(names, ya, yb):
        if ra.shape != rb.shape:
            rows.append({"name": name, "max_abs": float("inf"), "max_rel": float("inf"), "tolerance": 0.0,
                         "ok": False})
            continue
        diff = np.abs(ra.astype(np.float64) - rb.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.max(np.abs(ra))) if ra.size else 0.0
        tol = tolerance(ra)
        rows.append({"name": name, "max_abs": max_abs, "max_rel": max_abs / scale if scale else max_abs,
                     "tolerance": tol, "ok": max_abs <= tol})
    return {"outputs": rows, "ok": all(r["ok"] for r in rows)}


def check_caffe(model: Model, prototxt: str, caffemodel: str | None, data_format: str, batch: int = 2,
                seed: int = 0, input_shape: tuple | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Run the Caffe net as Caffe computes it — kconvert's NCHW reference run, and OpenCV 4.x when installed — and
    the converted model on the same random input; one comparison report per reference."""
    from .convert import caffe_to_keras

    reference = caffe_to_keras(prototxt, caffemodel, data_format="channels_first", input_shape=input_shape)
    x_nchw = random_inputs(reference, batch, seed)
    to_model = [np.moveaxis(x, 1, -1) if data_format == "channels_last" and x.ndim == 4 else x for x in x_nchw]
    ours = model.predict(to_model if len(to_model) > 1 else to_model[0])
    ours = [np.moveaxis(y, -1, 1) if data_format == "channels_last" and y.ndim == 4 else y
            for y in (ours if isinstance(ours, list) else [ours])]
    ref = reference.predict(x_nchw if len(x_nchw) > 1 else x_nchw[0], runtime="numpy")
    reports = [("kconvert NCHW reference", compare_outputs(model.output_names, ref, ours))]
    try:
        import cv2
    except ImportError:
        return reports
    if caffemodel is not None:
        net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
        for name, x in zip(reference.input_names, x_nchw):
            net.setInput(x, name)
        cv_out = net.forward(model.output_names)
        cv_out = [np.asarray(o).reshape(y.shape) for o, y in zip(cv_out, ours)]
        reports.append((f"OpenCV {cv2.__version__}", compare_outputs(model.output_names, cv_out, ours)))
    return reports
