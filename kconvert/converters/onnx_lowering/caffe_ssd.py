"""Lowerings of SSD's CaffeNormalize, PriorBox and DetectionOutput (kconvert/layers/caffe_ssd.py).

- CaffeNormalize: x / Sqrt(ReduceSum(x * x) + eps) * scale, on the input's physical layout.
- PriorBox: its constant (computed by the layer from the static shapes).
- DetectionOutput: the decoding in elementwise ops; per class the top_k candidates above the threshold (TopK);
  NonMaxSuppression on them, one NMS batch per (image, class), fed scores that encode the candidates' order
  (so its own tie-breaking cannot reorder them) and `top_k` as the box limit; the kept boxes scattered back to a
  mask, the best keep_top_k per image by a second TopK (label-major, so ties go to the lower label, then the
  earlier candidate), and the images' rows packed first by a TopK on a position key, zero rows after. Caffe's
  adaptive NMS (eta < 1) has no ONNX form and is refused.
"""

from __future__ import annotations

import numpy as np

from .core import elementwise_input, keras_param, same_layout
from .refs import TensorRef
from .registry import lowers, unsupported

_NEG = float("-inf")


@lowers("CaffeNormalize")
def caffe_normalize(ctx, layer, ins, node):
    x = elementwise_input(ctx, ins[0])
    c = layer._channel_axis(x.ndim)
    axes = list(range(1, x.ndim)) if layer.across_spatial else [c]
    total = ctx.node("ReduceSum", [ctx.node("Mul", [x.name, x.name]),
                                   ctx.ints(sorted(x.physical_axis(a) for a in axes), "axes")], keepdims=1)
    norm = ctx.node("Sqrt", [ctx.node("Add", [total, ctx.const(np.float32(layer.eps), "eps")])])
    shape = [1] * x.ndim
    shape[c] = -1
    scale = keras_param(layer.scale.value.reshape(shape), x)
    return [same_layout(x, ctx.node("Mul", [ctx.node("Div", [x.name, norm]), ctx.const(scale, "scale")]))]


@lowers("PriorBox")
def prior_box(ctx, layer, ins, node):
    value = layer.constant([r.shape for r in ins])
    return [TensorRef(ctx.const(value, "priors"), value.shape)]


def _col(ctx, t: str, i: int) -> str:
    return ctx.node("Gather", [t, ctx.const(np.int64(i), "col", dtype=np.int64)], axis=-1)


def _stack(ctx, parts: list) -> str:
    return ctx.node("Concat", [ctx.node("Unsqueeze", [p, ctx.ints([-1], "axes")]) for p in parts], axis=-1)


def _decode(ctx, layer, loc: str, prior: str, p: int) -> str:
    """(N, L', P, 4) boxes."""
    blob = ctx.node("Reshape", [prior, ctx.ints([2 if not layer.variance_encoded_in_target else 1, p, 4])])
    priors = ctx.node("Gather", [blob, ctx.const(np.int64(0), "row", dtype=np.int64)], axis=0)  # (P, 4)
    d = ctx.node("Transpose", [ctx.node("Reshape", [loc, ctx.ints([-1, p, layer.num_loc_classes, 4])])],
                 perm=[0, 2, 1, 3])
    if not layer.share_location:
        d = ctx.node("Gather", [d, ctx.ints(layer.classes, "classes")], axis=1)
    if not layer.variance_encoded_in_target:
        d = ctx.node("Mul", [d, ctx.node("Gather", [blob, ctx.const(np.int64(1), "row", dtype=np.int64)], axis=0)])
    x0, y0, x1, y1 = (_col(ctx, priors, i) for i in range(4))
    pw, ph = ctx.node("Sub", [x1, x0]), ctx.node("Sub", [y1, y0])
    if layer.code_type == "CORNER":
        out = ctx.node("Add", [priors, d])
    elif layer.code_type == "CORNER_SIZE":
        out = ctx.node("Add", [priors, ctx.node("Mul", [d, _stack(ctx, [pw, ph, pw, ph])])])
    else:
        half = ctx.const(np.float32(0.5), "half")
        pcx = ctx.node("Add", [x0, ctx.node("Mul", [pw, half])])
        pcy = ctx.node("Add", [y0, ctx.node("Mul", [ph, half])])
        cx = ctx.node("Add", [ctx.node("Mul", [_col(ctx, d, 0), pw]), pcx])
        cy = ctx.node("Add", [ctx.node("Mul", [_col(ctx, d, 1), ph]), pcy])
        hw = ctx.node("Mul", [ctx.node("Mul", [ctx.node("Exp", [_col(ctx, d, 2)]), pw]), half])
        hh = ctx.node("Mul", [ctx.node("Mul", [ctx.node("Exp", [_col(ctx, d, 3)]), ph]), half])
        out = _stack(ctx, [ctx.node("Sub", [cx, hw]), ctx.node("Sub", [cy, hh]), ctx.node("Add", [cx, hw]),
                           ctx.node("Add", [cy, hh])])
    if layer.clip:
        out = ctx.node("Clip", [out, ctx.const(np.float32(0), "lo"), ctx.const(np.float32(1), "hi")])
    return out


@lowers("DetectionOutput")
def detection_output(ctx, layer, ins, node):
    if layer.eta < 1:
        raise unsupported(layer, "adaptive NMS (eta < 1)")
    loc, conf, prior = (ctx.keras(r).name for r in ins)
    if layer.data_format == "channels_last":
        prior = ctx.node("Transpose", [prior], perm=[0, 2, 1])
    p = layer.num_priors([r.shape for r in ins])
    c_det = len(layer.classes)
    k0, k = layer.candidates(p), layer.rows_per_image(p)
    kk = min(k, c_det * k0)
    batch = ctx.node("Slice", [ctx.node("Shape", [loc]), ctx.ints([0], "start"), ctx.ints([1], "end")])
    boxes = _decode(ctx, layer, loc, prior, p)
    boxes = ctx.node("Expand", [boxes, ctx.node("Concat", [batch, ctx.ints([c_det, p, 4], "shape")], axis=0)])
    scores = ctx.node("Transpose", [ctx.node("Reshape", [conf, ctx.ints([-1, p, layer.num_classes])])], perm=[0, 2, 1])
    scores = ctx.node("Gather", [scores, ctx.ints(layer.classes, "classes")], axis=1)  # (N, C', P)
    threshold = _NEG if layer.confidence_threshold is None else layer.confidence_threshold
    neg = ctx.const(np.float32(_NEG), "neg_inf")
    passed = ctx.node("Greater", [scores, ctx.const(np.float32(threshold), "confidence_threshold")])
    vals, idx = ctx.node("TopK", [ctx.node("Where", [passed, scores, neg]), ctx.ints([k0], "k")], n_outputs=2,
                         axis=-1, largest=1, sorted=1)
    valid = ctx.node("Cast", [ctx.node("GatherElements", [ctx.node("Cast", [passed], to=6), idx], axis=-1)], to=9)
    cand_shape = ctx.node("Concat", [batch, ctx.ints([c_det, k0, 4], "shape")], axis=0)
    idx4 = ctx.node("Expand", [ctx.node("Unsqueeze", [idx, ctx.ints([-1], "axes")]), cand_shape])
    cand = ctx.node("GatherElements", [boxes, idx4], axis=2)  # (N, C', k0, 4)
    # NMS in the candidates' order: scores k0, k0 - 1, ..., 1 for the valid ones, -1 (below 0) for the others
    order = ctx.const(np.arange(k0, 0, -1, dtype=np.float32), "order")
    nms_scores = ctx.node("Where", [valid, order, ctx.const(np.float32(-1), "minus_one")])
    selected = ctx.node("NonMaxSuppression", [
        ctx.node("Reshape", [cand, ctx.ints([-1, k0, 4])]),
        ctx.node("Reshape", [nms_scores, ctx.ints([-1, 1, k0])]), ctx.ints([k0], "max_boxes"),
        ctx.const(np.asarray([layer.nms_threshold], np.float32), "iou_threshold"),
        ctx.const(np.asarray([0.0], np.float32), "score_threshold")], center_point_box=0)
    flat_scores = ctx.node("Reshape", [nms_scores, ctx.ints([-1, k0])])
    zeros = ctx.node("Sub", [flat_scores, flat_scores])
    ones = ctx.node("Add", [ctx.node("Mul", [ctx.node("Cast", [_col(ctx, selected, 0)], to=1),
                                             ctx.const(np.float32(0), "zero")]), ctx.const(np.float32(1), "one")])
    where = ctx.node("Gather", [selected, ctx.ints([0, 2], "cols")], axis=1)
    keep = ctx.node("ScatterND", [zeros, where, ones])
    keep = ctx.node("Greater", [ctx.node("Reshape", [keep, ctx.ints([-1, c_det, k0])]), ctx.const(np.float32(0.5))])
    kept = ctx.node("Reshape", [ctx.node("Where", [keep, vals, neg]), ctx.ints([-1, c_det * k0])])
    top, pos = ctx.node("TopK", [kept, ctx.ints([kk], "k")], n_outputs=2, axis=-1, largest=1, sorted=1)
    ok = ctx.node("Greater", [top, neg])
    label = ctx.node("Gather", [ctx.const(np.asarray(layer.classes, np.float32), "labels"),
                                ctx.node("Div", [pos, ctx.const(np.int64(k0), "k0", dtype=np.int64)])])
    pos4 = ctx.node("Expand", [ctx.node("Unsqueeze", [pos, ctx.ints([-1], "axes")]),
                               ctx.node("Concat", [batch, ctx.ints([kk, 4], "shape")], axis=0)])
    box = ctx.node("GatherElements", [ctx.node("Reshape", [cand, ctx.ints([-1, c_det * k0, 4])]), pos4], axis=1)
    n_scalar = ctx.node("Squeeze", [batch, ctx.ints([0], "axes")])
    images = ctx.node("Cast", [ctx.node("Range", [ctx.const(np.int64(0), "start", dtype=np.int64), n_scalar,
                                                  ctx.const(np.int64(1), "delta", dtype=np.int64)])], to=1)
    images = ctx.node("Expand", [ctx.node("Unsqueeze", [images, ctx.ints([-1], "axes")]), ctx.node("Shape", [top])])
    rows = ctx.node("Concat", [ctx.node("Unsqueeze", [images, ctx.ints([-1], "axes")]),
                               ctx.node("Unsqueeze", [label, ctx.ints([-1], "axes")]),
                               ctx.node("Unsqueeze", [top, ctx.ints([-1], "axes")]), box], axis=-1)
    rows = ctx.node("Where", [ctx.node("Unsqueeze", [ok, ctx.ints([-1], "axes")]), rows,
                              ctx.const(np.float32(0), "zero")])
    if kk < k:
        rows = ctx.node("Pad", [rows, ctx.ints([0, 0, 0, 0, k - kk, 0], "pads")])
        ok = ctx.node("Cast", [ctx.node("Pad", [ctx.node("Cast", [ok], to=6), ctx.ints([0, 0, 0, k - kk], "pads")])],
                      to=9)
    rows = ctx.node("Reshape", [rows, ctx.ints([-1, 7])])
    # the rows of every image packed first, in order: TopK (smallest) on not(ok) * 2^23 + position
    not_ok = ctx.node("Cast", [ctx.node("Not", [ctx.node("Reshape", [ok, ctx.ints([-1])])])], to=1)
    count = ctx.node("Shape", [not_ok])
    position = ctx.node("Cast", [ctx.node("Range", [ctx.const(np.int64(0), "start", dtype=np.int64),
                                                    ctx.node("Squeeze", [count, ctx.ints([0], "axes")]),
                                                    ctx.const(np.int64(1), "delta", dtype=np.int64)])], to=1)
    key = ctx.node("Add", [ctx.node("Mul", [not_ok, ctx.const(np.float32(2 ** 23), "big")]), position])
    _, packed = ctx.node("TopK", [key, count], n_outputs=2, axis=-1, largest=0, sorted=1)
    rows = ctx.node("Gather", [rows, packed], axis=0)
    shape = [1, 1, -1, 7] if layer.data_format == "channels_first" else [1, -1, 7, 1]
    out = ctx.node("Reshape", [rows, ctx.ints(shape, "shape")])
    return [TensorRef(out, node.outputs[0].shape)]
