"""Library functions behind the CLI: open any supported file, describe it, compare two models."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from typing import Any

import numpy as np

from .errors import ConfigError, FormatError, KConvertError, WeightsError
from .models import Model, load_model


def tolerance(reference: np.ndarray) -> float:
    """The design doc's tolerance: 1e-5 + 1e-4 * max|reference|."""
    ref = np.asarray(reference, dtype=np.float64)
    return 1e-5 + 1e-4 * (float(np.max(np.abs(ref))) if ref.size else 0.0)


def load_any(path: str, weights: str | None = None, custom_objects: dict | None = None,
             safe_mode: bool = True) -> Model:
    """A model from a whole-model `.h5`/`.keras`, a JSON/YAML config plus an optional weights `.h5`, or a Caffe
    prototxt plus an optional `.caffemodel` (converted channels_last)."""
    from .formats.detect import CAFFE_FORMATS, detect_format

    kind = detect_format(path)
    if kind in CAFFE_FORMATS:
        return _load_caffe(os.fspath(path), kind, weights)
    model = load_model(path, custom_objects=custom_objects, safe_mode=safe_mode)
    if weights:
        model.load_weights(weights)
    elif _is_config_only(path) and model.weights:
        raise WeightsError("a JSON/YAML config holds no weights; pass the weights file too", file=path)
    return model


def _is_config_only(path: str) -> bool:
    from .formats.detect import detect_format

    return detect_format(path) in ("json", "yaml")


def inspect_file(path: str, weights: str | None = None, mean: str | None = None) -> dict[str, Any]:
    """What a file is and what it holds: format, version, layer table, inputs/outputs, weights.

    Caffe files: a prototxt (with an optional `.caffemodel` as `weights` and a mean `.binaryproto` as `mean`)
    gets its inputs, layer table with output shapes and the preprocessing its data layers state; a caffemodel
    alone its layers' blobs; a mean file its shape and per-channel mean. See `inspect_caffe`.
    """
    from .formats.detect import CAFFE_FORMATS, detect_format
    from .formats.keras_h5 import read_keras_h5

    path = os.fspath(path)
    kind = detect_format(path)
    if kind in CAFFE_FORMATS:
        return inspect_caffe(path, kind, weights=weights, mean=mean)
    if weights is not None or mean is not None:
        raise ConfigError(f"a weights or mean file goes with a Caffe prototxt; this file is '{kind}'", file=path)
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
    to_model = [np.moveaxis(x, 1, -1) if data_format == "channels_last" and x.ndim >= 3 else x for x in x_nchw]
    ours = model.predict(to_model if len(to_model) > 1 else to_model[0])
    ours = [np.moveaxis(y, -1, 1) if data_format == "channels_last" and y.ndim >= 3 else y
            for y in (ours if isinstance(ours, list) else [ours])]
    ref = reference.predict(x_nchw if len(x_nchw) > 1 else x_nchw[0], runtime="numpy")
    reports = [("kconvert NCHW reference", compare_outputs(model.output_names, ref, ours))]
    try:
        import cv2
    except ImportError:
        return reports
    if caffemodel is not None:
        try:
            net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
            for name, x in zip(reference.input_names, x_nchw):
                net.setInput(x, name)
            cv_out = net.forward(model.output_names)
        except cv2.error as e:  # a net OpenCV's importer does not support: no reference to compare with
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            reports.append((f"OpenCV {cv2.__version__}", {"outputs": [], "ok": True,
                                                          "skipped": f"OpenCV cannot run this net ({reason})"}))
            return reports
        cv_out = [np.asarray(o).reshape(y.shape) for o, y in zip(cv_out, ours)]
        report = compare_outputs(model.output_names, cv_out, ours)
        deviations = opencv_deviations(prototxt)
        if deviations:  # a difference there is OpenCV's, not the conversion's: the report informs, it does not fail
            report["opencv_deviations"] = deviations
        reports.append((f"OpenCV {cv2.__version__}", report))
    return reports


def check_keras_caffe(model: Model, prototxt: str, caffemodel: str, batch: int = 2,
                      seed: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Run a Keras model and the Caffe net written from it on the same random input: the net read back by kconvert
    and, when installed, by OpenCV 4.x; one comparison report per reader."""
    from .convert import caffe_to_keras

    channels_last = not any(getattr(la, "data_format", None) == "channels_first" for la in model.layers)
    xs = random_inputs(model, batch, seed)
    ours = model.predict(xs if len(xs) > 1 else xs[0])
    read_back = caffe_to_keras(prototxt, caffemodel, data_format="channels_last" if channels_last else
                               "channels_first")
    reports = [("the Caffe net read back by kconvert",
                compare_outputs(model.output_names, ours, read_back.predict(xs if len(xs) > 1 else xs[0])))]
    try:
        import cv2
    except ImportError:
        return reports
    net = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    for name, x in zip(read_back.input_names, xs):
        net.setInput(np.moveaxis(x, -1, 1) if channels_last and x.ndim >= 3 else x, name)
    outs = net.forward(read_back.output_names)
    ours_list = ours if isinstance(ours, list) else [ours]
    cv = [np.moveaxis(np.asarray(o).reshape(np.moveaxis(y, -1, 1).shape), 1, -1) if channels_last and y.ndim >= 3
          else np.asarray(o).reshape(y.shape) for o, y in zip(outs, ours_list)]
    reports.append((f"OpenCV {cv2.__version__}", compare_outputs(model.output_names, ours_list, cv)))
    return reports


def _lrn_k(lp) -> str | None:
    return f"LRN k={lp.lrn_param.k:g} (OpenCV uses k=1)" if lp.lrn_param.k != 1 else None


def _log_affine(lp) -> str | None:
    p = lp.log_param
    if p.scale != 1 or p.shift != 0:
        return f"Log scale={p.scale:g} shift={p.shift:g} (OpenCV computes log(x))"
    return None


def _pooling(lp) -> str | None:
    p = lp.pooling_param
    if p.HasField("round_mode") and int(p.round_mode) == 1:  # FLOOR
        return "Pooling round_mode FLOOR (OpenCV reads only ceil_mode and rounds up)"
    pads = (p.pad_h, p.pad_w) if (p.pad_h or p.pad_w) else (p.pad, p.pad)
    if not p.global_pooling and (pads[0] == 0) != (pads[1] == 0):
        return "Pooling padded on one axis only (OpenCV applies Caffe's ceil clip rule to the padded axis only)"
    return None


# what OpenCV 4.x's Caffe importer computes differently from Caffe, per layer type
_OPENCV_DEVIATIONS = {"LRN": _lrn_k, "Log": _log_affine, "Pooling": _pooling}


def opencv_deviations(prototxt: str) -> list[str]:
    """The layers of a deploy net where OpenCV 4.x departs from Caffe (`layer: what`), e.g. LRN's `k`."""
    from .formats.caffe import deploy_net, read_prototxt

    net = deploy_net(read_prototxt(prototxt), file=prototxt)
    out = []
    for lp in net.layer:
        rule = _OPENCV_DEVIATIONS.get(lp.type)
        reason = rule(lp) if rule is not None else None
        if reason:
            out.append(f"{lp.name}: {reason}")
    return out


# ---------------------------------------------------------------------------------------------- Caffe

BGR_ORDER = "BGR (Caffe convention; check your training data)"
_TRANSFORM_FIELDS = ("scale", "mean_value", "mean_file", "crop_size", "mirror", "force_color", "force_gray")
_PHASES = {0: "TRAIN", 1: "TEST"}


def _load_caffe(path: str, kind: str, weights: str | None) -> Model:
    """A Caffe prototxt (+ caffemodel) as a channels_last model, for predict/validate."""
    from .convert import caffe_to_keras
    from .formats.detect import detect_format

    if kind != "caffe_prototxt":
        raise FormatError(f"this is a Caffe '{kind}' file; pass the deploy prototxt as the model"
                          + (" and this file as its weights" if kind == "caffemodel" else ""), file=path)
    if weights is not None and detect_format(weights) != "caffemodel":
        raise WeightsError(f"the weights of a Caffe prototxt must be a .caffemodel, not '{detect_format(weights)}'",
                           file=weights)
    model = caffe_to_keras(path, weights, data_format="channels_last")
    if weights is None and model.weights:
        raise WeightsError("a prototxt holds no weights; pass the .caffemodel too", file=path)
    return model


def inspect_caffe(path: str, kind: str, weights: str | None = None, mean: str | None = None) -> dict[str, Any]:
    """The report of a Caffe file of detected `kind` ('caffe_prototxt', 'caffemodel', 'caffe_binaryproto')."""
    if kind == "caffe_prototxt":
        return _inspect_prototxt(path, weights, mean)
    if weights is not None or mean is not None:
        raise ConfigError("a weights or mean file goes with a Caffe prototxt, not with a "
                          f"{'caffemodel' if kind == 'caffemodel' else 'mean file'}", file=path)
    if kind == "caffemodel":
        return _inspect_caffemodel(path)
    return _inspect_mean(path)


def _inspect_caffemodel(path: str) -> dict[str, Any]:
    from .formats.caffe.caffemodel import read_caffemodel

    cm = read_caffemodel(path, keep_dtype=True)
    layers = [{"name": la.name, "type": la.type, "version": la.version, "blobs": [_blob_entry(b) for b in la.blobs]}
              for la in cm.layers]
    versions = sorted({la.version for la in cm.layers})
    return {"file": path, "kind": "caffemodel",
            "format": f"caffemodel ({', '.join(f'V{v}' for v in versions) or 'no layers'})",
            "net": cm.name, "layers": layers, "weights_total": _weights_total(cm.layers)}


def _blob_entry(blob: np.ndarray) -> dict[str, Any]:
    return {"shape": list(blob.shape), "dtype": str(blob.dtype), "bytes": int(blob.nbytes)}


def _weights_total(layers) -> dict[str, int]:
    with_blobs = [la for la in layers if la.blobs]
    return {"layers": len(with_blobs), "blobs": sum(len(la.blobs) for la in with_blobs),
            "values": sum(int(b.size) for la in with_blobs for b in la.blobs),
            "bytes": sum(int(b.nbytes) for la in with_blobs for b in la.blobs)}


def _inspect_mean(path: str) -> dict[str, Any]:
    summary = _mean_summary(path)
    channels = summary["channels"]
    order = BGR_ORDER if channels == 3 else "grayscale (1 channel)" if channels == 1 else None
    return {"file": path, "kind": "caffe_binaryproto", "format": "caffe mean (binaryproto BlobProto)",
            "mean": summary, "channel_order": order,
            "preprocessing": _mean_lines(summary, "BGR" if channels == 3 else None, scale=None, crop=None)}


def _mean_summary(path: str) -> dict[str, Any]:
    """Shape, channel count and per-channel mean of a mean `.binaryproto` (channels: axis -3 of a C,H,W blob)."""
    from .formats.caffe import read_mean_binaryproto

    array = read_mean_binaryproto(path).astype(np.float64)
    axis = array.ndim - 3 if array.ndim >= 3 else 0
    per_channel = array.reshape(1) if array.ndim == 0 else np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
    per_channel = per_channel.mean(axis=-1) if per_channel.ndim == 2 else per_channel
    hw = list(array.shape[-2:]) if array.ndim >= 3 else None
    return {"file": path, "shape": list(array.shape), "dtype": "float32", "channels": int(per_channel.size),
            "spatial": hw, "per_channel_mean": [float(v) for v in per_channel],
            "min": float(array.min()), "max": float(array.max())}


def _prototxt_version(net) -> str:
    if len(net.layers):
        return "V0" if any(entry.HasField("layer") for entry in net.layers) else "V1"
    return "V2"


def _phase(layer) -> str | None:
    for rule in layer.include:
        if rule.HasField("phase"):
            return _PHASES.get(rule.phase)
    for rule in layer.exclude:
        if rule.HasField("phase"):
            return f"not {_PHASES.get(rule.phase)}"
    return None


def _deploy_indices(net, path: str) -> set[int]:
    """Which layers of the (upgraded) net Caffe runs at TEST time; tagging names by position survives the filter."""
    from .formats.caffe import NetParameter, deploy_net

    tagged = NetParameter()
    tagged.CopyFrom(net)
    for i, layer in enumerate(tagged.layer):
        layer.name = f"{i}:{layer.name}"
    return {int(layer.name.split(":", 1)[0]) for layer in deploy_net(tagged, file=path).layer}


def _inspect_prototxt(path: str, weights: str | None, mean: str | None) -> dict[str, Any]:
    import warnings

    from .formats.caffe import deploy_net, needs_upgrade, read_prototxt, upgrade

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = read_prototxt(path)
        net = upgrade(raw, file=path) if needs_upgrade(raw) else raw
        report: dict[str, Any] = {"file": path, "kind": "caffe_prototxt",
                                  "format": f"caffe prototxt ({_prototxt_version(raw)})", "net": raw.name,
                                  "input_form": _input_form(raw), "weights": None}
        try:
            deploy = deploy_net(net, file=path)
            kept = _deploy_indices(net, path)
        except KConvertError as e:
            deploy, kept = None, None  # which layers Caffe would run is unknown
            report["conversion_error"] = str(e)
        report["inputs"] = _caffe_inputs(net, deploy, kept)
        _preprocessing_report(report, path, net, kept, mean)
        input_shape = _infer_input_shape(report, net, kept)
        model, error = _convert_for_inspect(path, weights, input_shape) if deploy is not None else (None, None)
        report["conversion_error"] = report.get("conversion_error") or error
        weight_layers = _weights_report(report, weights, deploy)
        batch = _common_batch(report["inputs"])
        shapes = _layer_shapes(deploy, model, batch) if model is not None else {}
        report["layers"] = [_layer_entry(la, None if kept is None else i in kept, shapes, weight_layers)
                            for i, la in enumerate(net.layer)]
        report["outputs"] = ([{"name": n, "shape": _with_batch(v.shape, batch)}
                              for n, v in zip(model.output_names, model.outputs)] if model is not None else [])
    report["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))
    return report


def _infer_input_shape(report: dict, net, kept: set[int] | None) -> tuple | None:
    """For a train/val net whose one data layer states no shape: N, C, H, W from its batch_size, the channels of
    the mean (or force_color/force_gray) and crop_size (or ImageData's resize); None when any is unknown."""
    inputs = report["inputs"]
    t = next((t for t in report["transform"] if t["deploy"]), None)
    if len(inputs) != 1 or inputs[0]["shape"] is not None or t is None or kept is None:
        return None
    hw = [t["crop_size"]] * 2 if t.get("crop_size") else t.get("resize")
    channels, said = report["mean"]["channels"] if report["mean"] else None, "the mean file's channels"
    if channels is None and len(t.get("mean_value", [])) > 1:
        channels, said = len(t["mean_value"]), "mean_value's channels"
    if channels is None and (t.get("force_gray") or t.get("is_color") is False or t.get("force_color")):
        channels, said = (3 if t.get("force_color") else 1), "force_color/force_gray"
    if not hw or not all(hw) or channels is None:
        return None
    layer = next(la for i, la in enumerate(net.layer) if i in kept and la.name == t["layer"])
    batch = next((getattr(layer, f).batch_size for f in ("data_param", "image_data_param", "window_data_param")
                  if layer.HasField(f)), 1) or 1
    shape = (int(batch), int(channels), int(hw[0]), int(hw[1]))
    inputs[0]["shape"] = list(shape)
    inputs[0]["shape_from"] = (f"batch_size, {said}, " + ("crop_size" if t.get("crop_size") else "resize")
                               + f" of {t['type']} layer '{t['layer']}'")
    return shape


def _input_form(raw) -> str:
    if len(raw.input):
        return "input: + input_dim" if len(raw.input_dim) else "input: + input_shape" if len(raw.input_shape) \
            else "input: (no shape)"
    if any(la.type == "Input" for la in raw.layer):
        return "Input layer"
    return "data layers"


def _convert_for_inspect(path: str, weights: str | None, input_shape: tuple | None):
    """The channels_first model of the net (None and the error's text where conversion fails); with weights that
    fail, the architecture alone still gives the shapes."""
    from .convert import caffe_to_keras

    error = None
    if weights is not None:
        try:
            return caffe_to_keras(path, weights, data_format="channels_first", input_shape=input_shape), None
        except KConvertError as e:
            error = str(e)
    try:
        return caffe_to_keras(path, data_format="channels_first", input_shape=input_shape), error
    except KConvertError as e:
        return None, error or str(e)


def _weights_report(report: dict, weights: str | None, deploy) -> dict | None:
    """The caffemodel's summary in the report; returns its layers by name (None without weights)."""
    if weights is None:
        return None
    from .formats.caffe.caffemodel import read_caffemodel
    from .formats.detect import detect_format

    if detect_format(weights) != "caffemodel":
        raise WeightsError(f"the weights of a Caffe prototxt must be a .caffemodel, not '{detect_format(weights)}'",
                           file=weights)
    cm = read_caffemodel(weights, keep_dtype=True)
    deploy_names = {la.name for la in deploy.layer} if deploy is not None else set()
    report["weights"] = {"file": weights, "net": cm.name, **_weights_total(cm.layers),
                         "not_in_deploy_net": [la.name for la in cm.layers if la.blobs and la.name not in deploy_names]}
    return cm.by_name()


def _caffe_inputs(net, deploy, kept: set[int] | None) -> list[dict[str, Any]]:
    """The deploy net's inputs with their NCHW shapes (None where the file states none)."""
    layers = deploy.layer if deploy is not None else [la for la in net.layer if la.type == "Input"]
    origin = {la.name: la.type for i, la in enumerate(net.layer) if kept is not None and i in kept}
    out = []
    for la in layers:
        if la.type != "Input":
            continue
        shapes = la.input_param.shape
        for i, top in enumerate(la.top):
            dims = list(shapes[min(i, len(shapes) - 1)].dim) if len(shapes) else None
            out.append({"name": top, "shape": [int(d) for d in dims] if dims else None, "layout": "NCHW",
                        "dtype": "float32", "from": f"{origin.get(la.name, 'Input')} layer '{la.name}'"})
    return out


def _common_batch(inputs: list[dict]) -> int | None:
    batches = {i["shape"][0] for i in inputs if i["shape"]}
    return batches.pop() if len(batches) == 1 else None


def _with_batch(shape, batch: int | None) -> list:
    return [batch if i == 0 and d is None else d for i, d in enumerate(shape)]


def _layer_shapes(deploy, model: Model, batch: int | None) -> dict[str, list]:
    """Caffe layer name -> the NCHW shapes of its tops, from the converted model (a BatchNorm fused into the Scale
    after it keeps its bottom's shape)."""
    blobs: dict[str, list] = {}
    out: dict[str, list] = {}
    for la in deploy.layer:
        values = model.caffe_layers.get(la.name)
        if values is not None:
            shapes = [_with_batch(v.shape, batch) for v in values]
        elif la.type == "BatchNorm" and la.bottom and la.bottom[0] in blobs:
            shapes = [blobs[la.bottom[0]]] * len(la.top)
        else:
            continue
        out[la.name] = shapes
        blobs.update(zip(la.top, shapes))
    return out


def _layer_entry(la, deploy: bool | None, shapes: dict, weight_layers: dict | None) -> dict[str, Any]:
    entry = {"name": la.name, "type": la.type, "bottoms": list(la.bottom), "tops": list(la.top),
             "phase": _phase(la), "deploy": deploy, "output_shapes": shapes.get(la.name) if deploy else None}
    if weight_layers is not None:
        found = weight_layers.get(la.name)
        entry["blobs"] = [list(b.shape) for b in found.blobs] if found is not None else []
    return entry


# ---------------------------------------------------------------------------------------------- preprocessing


def _transforms(net, kept: set[int] | None) -> list[dict[str, Any]]:
    out = []
    for i, la in enumerate(net.layer):
        if not la.HasField("transform_param"):
            continue
        t = la.transform_param
        entry: dict[str, Any] = {"layer": la.name, "type": la.type, "phase": _phase(la),
                                 "deploy": None if kept is None else i in kept}
        for name in _TRANSFORM_FIELDS:
            if name == "mean_value":
                if len(t.mean_value):
                    entry[name] = [_float32(v) for v in t.mean_value]
            elif t.HasField(name):
                value = getattr(t, name)
                entry[name] = _float32(value) if name == "scale" else value
        if la.type == "ImageData":
            p = la.image_data_param
            if p.HasField("is_color"):
                entry["is_color"] = p.is_color
            if p.new_height or p.new_width:
                entry["resize"] = [int(p.new_height), int(p.new_width)]
        out.append(entry)
    return out


def _float32(value: float) -> float:
    """A float field as written in the file (0.017, not float32's 0.017000000923871994)."""
    return float(str(np.float32(value)))


def _comment_order(path: str) -> str | None:
    """A comment of the prototxt that states RGB order (and not BGR), if any."""
    import re

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            comments = [line.split("#", 1)[1].strip() for line in f if "#" in line]
    except OSError:
        return None
    for c in comments:
        if re.search(r"\bRGB\b", c) and not re.search(r"\bBGR\b", c):
            return c
    return None


def _channel_order(channels: int | None, t: dict | None, path: str) -> tuple[str, str | None]:
    """(the channel order to report, the word for per-channel values: 'BGR', 'RGB' or None)."""
    if (t and (t.get("force_gray") or t.get("is_color") is False)) or channels == 1:
        return "grayscale (1 channel)", None
    if channels not in (None, 3):
        return f"{channels} channels (not a 3-channel image: no colour order applies)", None
    comment = _comment_order(path)
    if comment is not None:
        return f"RGB (a comment in the file says so: '{comment[:80]}'; Caffe's own convention is BGR)", "RGB"
    return BGR_ORDER, "BGR"


def _preprocessing_report(report: dict, path: str, net, kept: set[int] | None, mean: str | None) -> None:
    transforms = _transforms(net, kept)
    report["transform"] = transforms
    chosen = next((t for t in transforms if t["deploy"]), transforms[0] if transforms else None)
    mean_info, mean_note = _find_mean(path, chosen, mean)
    report["mean"] = mean_info
    first = report["inputs"][0]["shape"] if report["inputs"] else None
    channels = first[1] if first and len(first) >= 4 else None
    if channels is None and mean_info is not None:
        channels = mean_info["channels"]
    if channels is None and chosen and len(chosen.get("mean_value", [])) > 1:
        channels = len(chosen["mean_value"])
    report["channel_order"], word = _channel_order(channels, chosen, path)
    lines = _transform_lines(chosen, mean_info, word, first) if chosen else []
    if not chosen and mean_info is None:
        lines.append("the file states no preprocessing (no data layer with transform_param): feed what the net "
                     "was trained on; Caffe image nets usually take pixels 0..255 with the training mean subtracted")
    elif not chosen:
        lines.append("the file states no transform_param; from the mean file given:")
        lines += _mean_lines(mean_info, word, scale=None, crop=None, input_shape=first)
        lines.append("input = pixel - mean (times a scale only if the training data layer had one)")
    if mean_note:
        lines.append(mean_note)
    report["preprocessing"] = lines


def _find_mean(path: str, t: dict | None, mean: str | None) -> tuple[dict | None, str | None]:
    """The mean file's summary: `mean` if given, else the transform's mean_file where it can be found."""
    if mean is not None:
        return _mean_summary(os.fspath(mean)), None
    named = t.get("mean_file") if t else None
    if not named:
        return None, None
    here = os.path.dirname(os.path.abspath(path))
    for candidate in (named, os.path.join(here, named), os.path.join(here, os.path.basename(named))):
        if os.path.isfile(candidate):
            return _mean_summary(candidate), None
    return None, f"mean_file '{named}' was not found (relative to here or to the prototxt); pass it with --mean"


def _values_text(values: list[float], word: str | None) -> str:
    names = list(word) if word and len(values) == len(word) else [f"c{i}" for i in range(len(values))]
    return ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values))


def _scale_text(scale: float) -> str:
    inverse = 1.0 / scale if scale else 0.0
    exact = inverse and abs(inverse - round(inverse)) < 1e-3 * inverse and round(inverse) > 1
    return f"{scale:.8g}" + (f" (= 1/{round(inverse)})" if exact else "")


def _transform_lines(t: dict, mean_info: dict | None, word: str | None, input_shape) -> list[str]:
    where = f"from {t['type']} layer '{t['layer']}'" + (f" ({t['phase']})" if t["phase"] else "")
    lines = [f"transform_param {where}:"]
    if t.get("force_gray") or t.get("is_color") is False:
        lines.append("load images as grayscale (1 channel)")
    elif t.get("force_color"):
        lines.append("load images as 3-channel colour (force_color), in OpenCV's BGR order")
    if t.get("resize"):
        lines.append(f"resize images to {t['resize'][0]}x{t['resize'][1]} (H x W) first")
    crop = t.get("crop_size") or None
    if crop:
        lines.append(f"crop {crop}x{crop}: the centre crop at test time (a random one in training); the net sees "
                     f"{crop}x{crop}")
    if t.get("mirror"):
        lines.append("mirror: random horizontal flips in training only; nothing to do for inference")
    scale = t.get("scale")
    scale = None if scale is None or scale == 1.0 else scale
    then = f", then multiply by scale {_scale_text(scale)}" if scale else ""
    if t.get("mean_value") and t.get("mean_file"):
        lines.append("both mean_file and mean_value are given; Caffe refuses that ('Cannot specify mean_file and "
                     "mean_value at the same time')")
    if t.get("mean_value"):
        values = t["mean_value"]
        if len(values) == 1:
            lines.append(f"subtract mean_value {values[0]:.6g} from every channel{then}")
        else:
            order = f" in {word} order" if word else ""
            lines.append(f"subtract mean_value per channel{order} ({_values_text(values, word)}){then}")
    elif t.get("mean_file"):
        lines.append(f"subtract the mean image '{t['mean_file']}' pixel by pixel"
                     f"{' (cropped at the same offset as the data)' if crop else ''}{then}")
        if mean_info is not None:
            lines += _mean_lines(mean_info, word, scale=None, crop=crop, input_shape=input_shape)[1:]
    elif scale:
        lines.append(f"multiply pixel values by scale {_scale_text(scale)} (no mean subtracted)")
    if mean_info is not None and not t.get("mean_file"):
        lines += _mean_lines(mean_info, word, scale=None, crop=crop, input_shape=input_shape)[1:]
    lines.append("input = (pixel - mean) * scale, per element, as Caffe's DataTransformer computes it")
    return lines


def _mean_lines(info: dict, word: str | None, scale: float | None, crop: int | None,
                input_shape=None) -> list[str]:
    """What a mean file means for preprocessing; the first line says to subtract it."""
    shape = "x".join(str(d) for d in info["shape"])
    lines = [f"subtract the mean image from '{info['file']}' ({shape}) pixel by pixel"
             + (f", then multiply by scale {_scale_text(scale)}" if scale else ""),
             f"mean file {shape}: per-channel means {_values_text(info['per_channel_mean'], word)} (usable as "
             f"mean_value: {' '.join(f'{v:.6g}' for v in info['per_channel_mean'])})"]
    net_hw = [crop, crop] if crop else list(input_shape[2:]) if input_shape and len(input_shape) == 4 else None
    if info["spatial"] and net_hw and list(info["spatial"]) != net_hw:
        size = f"the mean image is {info['spatial'][0]}x{info['spatial'][1]} but the net sees {net_hw[0]}x{net_hw[1]}"
        if all(m >= n for m, n in zip(info["spatial"], net_hw)):
            lines.append(f"{size}: subtract it from images of its size before cropping them (Caffe crops the mean "
                         "at the data's offset, the centre at test time), or subtract the per-channel means")
        else:
            lines.append(f"{size}: it does not fit (Caffe wants the mean the size of the images before cropping); "
                         "subtract the per-channel means instead")
    return lines
