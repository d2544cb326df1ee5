"""SSD's Caffe layers (weiliu89/caffe, ssd branch) -> kconvert's CaffeNormalize, PriorBox and DetectionOutput.

SSD's Permute and Flatten are mapped in caffe_layers.py. Parameters follow SSD's caffe.proto, plus OpenCV's `clip`
of DetectionOutput; the semantics are described in kconvert/layers/caffe_ssd.py.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..layers.caffe_ssd import CaffeNormalize, DetectionOutput, PriorBox
from .caffe_layers import CaffeBuilder, caffe_layer


@caffe_layer("Normalize")
def normalize(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.norm_param
    x = ins[0]
    layer = CaffeNormalize(across_spatial=bool(p.across_spatial), channel_shared=bool(p.channel_shared),
                           eps=float(p.eps), data_format=b.data_format, name=lp.name)
    blobs = b.blobs(lp)
    weights = None
    if blobs is not None:
        shape = (1,) if p.channel_shared else (b.caffe_shape(x)[1],)
        weights = [b.blob(lp, blobs, 0, shape)]
    elif p.HasField("scale_filler") and p.scale_filler.type == "constant":  # the architecture's initial scale
        out = b.call(layer, ins)
        layer.set_weights([np.full(layer.scale.shape, p.scale_filler.value, np.float32)])
        return out
    return b.call(layer, ins, weights)


def _step(p) -> tuple[float, float]:
    if p.HasField("step_h") or p.HasField("step_w"):
        if p.HasField("step"):
            raise ConfigError("PriorBox takes step or step_h/step_w, not both")
        return float(p.step_h), float(p.step_w)
    return (float(p.step),) * 2 if p.HasField("step") else (0.0, 0.0)


def _img_size(p) -> tuple[int, int]:
    if p.HasField("img_h") or p.HasField("img_w"):
        if p.HasField("img_size"):
            raise ConfigError("PriorBox takes img_size or img_h/img_w, not both")
        return int(p.img_h), int(p.img_w)
    return (int(p.img_size),) * 2 if p.HasField("img_size") else (0, 0)


@caffe_layer("PriorBox")
def prior_box(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.prior_box_param
    if len(ins) != 2:
        raise ConfigError(f"PriorBox needs two bottoms (feature map, image), got {len(ins)}")
    step, img = _step(p), _img_size(p)
    if any(s < 0 for s in step) or (any(step) and not all(step)) or (any(img) and not all(img)):
        raise ConfigError(f"PriorBox step {step} and image size {img} must be positive")
    layer = PriorBox(min_size=list(p.min_size), max_size=list(p.max_size), aspect_ratio=list(p.aspect_ratio),
                     flip=bool(p.flip), clip=bool(p.clip), variance=list(p.variance), img_size=img, step=step,
                     offset=float(p.offset), data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)


@caffe_layer("DetectionOutput")
def detection_output(b: CaffeBuilder, lp, ins: list) -> list:
    p = lp.detection_output_param
    if len(ins) != 3:
        raise ConfigError(f"DetectionOutput needs three bottoms (loc, conf, priors), got {len(ins)}")
    if not p.HasField("num_classes"):
        raise ConfigError("DetectionOutput needs num_classes")
    nms = p.nms_param
    code = p.DESCRIPTOR.fields_by_name["code_type"].enum_type.values_by_number[int(p.code_type)].name
    layer = DetectionOutput(
        num_classes=int(p.num_classes), share_location=bool(p.share_location),
        background_label_id=int(p.background_label_id), nms_threshold=float(nms.nms_threshold),
        top_k=int(nms.top_k) if nms.HasField("top_k") else -1, eta=float(nms.eta), code_type=code,
        variance_encoded_in_target=bool(p.variance_encoded_in_target), keep_top_k=int(p.keep_top_k),
        confidence_threshold=float(p.confidence_threshold) if p.HasField("confidence_threshold") else None,
        clip=bool(p.clip), data_format=b.data_format, name=lp.name)
    return b.call(layer, ins)
