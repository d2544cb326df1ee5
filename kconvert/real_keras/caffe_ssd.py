"""Real-Keras (tf_keras, and Keras 3 on its TensorFlow backend) implementations of SSD's CaffeNormalize, PriorBox and
DetectionOutput (kconvert/layers/caffe_ssd.py, where the semantics are described), with the same configs and
weights.

PriorBox returns its constant (computed by kconvert's numpy code from the static shapes). DetectionOutput is the
same fixed-size computation as kconvert's: per class the top_k candidates above the threshold, greedy NMS as a
`tf.while_loop` over them, the best keep_top_k per image by (score, label, prior), the images' rows packed one
after another and zero rows after.
"""

from __future__ import annotations

import numpy as np

from . import implementation

_NEG = float("-inf")


def _tf(lib, target: str):
    """TensorFlow, or None for Keras 3 on another backend (the layers then refuse to be created)."""
    if target == "keras3" and lib.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf


def _need(tf, name: str) -> None:
    if tf is None:
        raise ValueError(f"kconvert's {name} layer for Keras 3 needs the TensorFlow backend")


def _ssd():
    # imported here: kconvert.real_keras is imported by keras_objects, which must stay light
    from ..layers import caffe_ssd

    return caffe_ssd


def _as_tuple(shape) -> tuple:
    return tuple(shape.as_list() if hasattr(shape, "as_list") else shape)


@implementation("CaffeNormalize")
def make_normalize(lib, target: str) -> type:
    tf = _tf(lib, target)

    class CaffeNormalize(lib.layers.Layer):
        def __init__(self, across_spatial=True, channel_shared=True, eps=1e-10, data_format=None, **kwargs):
            super().__init__(**kwargs)
            _need(tf, "CaffeNormalize")
            self.across_spatial, self.channel_shared = bool(across_spatial), bool(channel_shared)
            self.eps = float(eps)
            self.data_format = data_format or "channels_last"

        def _axis(self, ndim: int) -> int:
            return ndim - 1 if self.data_format == "channels_last" else 1

        def build(self, input_shape):
            shape = _as_tuple(input_shape)
            c = 1 if self.channel_shared else int(shape[self._axis(len(shape))])
            self.scale = self.add_weight(name="scale", shape=(c,), initializer="ones")
            self.built = True

        def call(self, inputs):
            ndim = len(inputs.shape)
            c = self._axis(ndim)
            axes = list(range(1, ndim)) if self.across_spatial else [c]
            norm = tf.sqrt(tf.reduce_sum(tf.square(inputs), axis=axes, keepdims=True) + self.eps)
            shape = [1] * ndim
            shape[c] = -1
            return inputs / norm * tf.reshape(self.scale, shape)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "across_spatial": self.across_spatial,
                    "channel_shared": self.channel_shared, "eps": self.eps, "data_format": self.data_format}

    return CaffeNormalize


@implementation("PriorBox")
def make_prior_box(lib, target: str) -> type:
    tf = _tf(lib, target)
    ssd = _ssd()

    class PriorBox(lib.layers.Layer):
        def __init__(self, min_size=(), max_size=(), aspect_ratio=(), flip=True, clip=False, variance=(),
                     img_size=(0, 0), step=(0.0, 0.0), offset=0.5, data_format=None, **kwargs):
            super().__init__(**kwargs)
            _need(tf, "PriorBox")
            self.config = {"min_size": min_size, "max_size": max_size, "aspect_ratio": aspect_ratio, "flip": flip,
                           "clip": clip, "variance": variance, "img_size": img_size, "step": step,
                           "offset": offset, "data_format": data_format}
            self.priors = ssd.PriorBox(**self.config)  # kconvert's layer computes the constant

        def _constant(self, shapes):
            return self.priors.constant([_as_tuple(s) for s in shapes])

        def call(self, inputs):
            return tf.constant(self._constant([x.shape for x in inputs]))

        def compute_output_shape(self, input_shape):
            return self._constant(input_shape).shape

        def get_config(self):
            return {**super().get_config(), **self.config}

    return PriorBox


@implementation("DetectionOutput")
def make_detection_output(lib, target: str) -> type:
    tf = _tf(lib, target)
    ssd = _ssd()

    class DetectionOutput(lib.layers.Layer):
        def __init__(self, num_classes=2, share_location=True, background_label_id=0, nms_threshold=0.3, top_k=-1,
                     eta=1.0, code_type="CORNER", variance_encoded_in_target=False, keep_top_k=-1,
                     confidence_threshold=None, clip=False, data_format=None, **kwargs):
            super().__init__(**kwargs)
            _need(tf, "DetectionOutput")
            self.config = {"num_classes": num_classes, "share_location": share_location,
                           "background_label_id": background_label_id, "nms_threshold": nms_threshold,
                           "top_k": top_k, "eta": eta, "code_type": code_type,
                           "variance_encoded_in_target": variance_encoded_in_target, "keep_top_k": keep_top_k,
                           "confidence_threshold": confidence_threshold, "clip": clip, "data_format": data_format}
            self.spec = ssd.DetectionOutput(**self.config)  # kconvert's layer: the geometry and the options

        def compute_output_shape(self, input_shape):
            return self.spec.compute_output_shape([_as_tuple(s) for s in input_shape])

        def _decode(self, loc, prior):
            spec = self.spec
            if spec.data_format == "channels_last":
                prior = tf.transpose(prior, (0, 2, 1))
            p = int(prior.shape[2]) // 4
            priors = tf.reshape(prior[0, 0], (p, 4))
            d = tf.transpose(tf.reshape(loc, (-1, p, spec.num_loc_classes, 4)), (0, 2, 1, 3))
            if not spec.share_location:
                d = tf.gather(d, spec.classes, axis=1)
            if not spec.variance_encoded_in_target:
                d = d * tf.reshape(prior[0, 1], (p, 4))
            xmin, ymin, xmax, ymax = (priors[:, i] for i in range(4))
            pw, ph = xmax - xmin, ymax - ymin
            if spec.code_type == "CORNER":
                out = priors + d
            elif spec.code_type == "CORNER_SIZE":
                out = priors + d * tf.stack([pw, ph, pw, ph], axis=-1)
            else:
                pcx, pcy = xmin + pw * 0.5, ymin + ph * 0.5
                cx, cy = d[..., 0] * pw + pcx, d[..., 1] * ph + pcy
                w, h = tf.exp(d[..., 2]) * pw, tf.exp(d[..., 3]) * ph
                out = tf.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=-1)
            return tf.clip_by_value(out, 0.0, 1.0) if spec.clip else out

        def call(self, inputs):
            spec = self.spec
            loc, conf, prior = inputs
            n = tf.shape(loc)[0]
            boxes = self._decode(loc, prior)  # (n, 1 or C', P, 4)
            p = int(boxes.shape[2])
            c_det = len(spec.classes)
            k0, k = spec.candidates(p), spec.rows_per_image(p)
            boxes = tf.broadcast_to(boxes, tf.stack([n, c_det, p, 4]))
            scores = tf.gather(tf.transpose(tf.reshape(conf, (-1, p, spec.num_classes)), (0, 2, 1)), spec.classes,
                               axis=1)
            threshold = _NEG if spec.confidence_threshold is None else spec.confidence_threshold
            passed = scores > threshold
            vals, idx = tf.math.top_k(tf.where(passed, scores, _NEG), k0)  # ties: the lower prior first
            valid = tf.gather(passed, idx, batch_dims=2)
            cand = tf.gather(boxes, idx, batch_dims=2)  # (n, C', k0, 4)
            keep = _greedy_nms(tf, cand, valid, spec.nms_threshold, spec.eta, k0)
            flat = tf.reshape(tf.where(keep, vals, _NEG), (-1, c_det * k0))
            kk = min(k, c_det * k0)
            top, pos = tf.math.top_k(flat, kk)  # score, then label, then NMS order (prior index) on ties
            ok = top > _NEG
            label = tf.gather(tf.constant(spec.classes, tf.float32), pos // k0)
            box = tf.gather(tf.reshape(cand, (-1, c_det * k0, 4)), pos, batch_dims=1)
            image = tf.cast(tf.broadcast_to(tf.range(n)[:, None], tf.shape(pos)), tf.float32)
            rows = tf.concat([image[..., None], label[..., None], top[..., None], box], axis=-1)
            rows = tf.where(ok[..., None], rows, 0.0)
            if kk < k:
                rows = tf.pad(rows, [[0, 0], [0, k - kk], [0, 0]])
                ok = tf.pad(ok, [[0, 0], [0, k - kk]])
            rows, ok = tf.reshape(rows, (-1, 7)), tf.reshape(ok, (-1,))
            order = tf.argsort(tf.cast(tf.logical_not(ok), tf.int32), stable=True)  # the images' rows packed first
            rows = tf.gather(rows, order)
            shape = (1, 1, -1, 7) if spec.data_format == "channels_first" else (1, -1, 7, 1)
            return tf.reshape(rows, shape)

        def get_config(self):
            return {**super().get_config(), **self.config}

    return DetectionOutput


def _greedy_nms(tf, boxes, valid, threshold: float, eta: float, k0: int):
    """Caffe's ApplyNMSFast over candidates (..., k0, 4) sorted by score: a boolean keep mask (..., k0)."""
    lo = tf.maximum(boxes[..., :, None, :2], boxes[..., None, :, :2])
    hi = tf.minimum(boxes[..., :, None, 2:], boxes[..., None, :, 2:])

    def size(lo, hi):
        wh = hi - lo
        return tf.where(tf.reduce_any(wh < 0, axis=-1), 0.0, wh[..., 0] * wh[..., 1])

    inter = size(lo, hi)
    area = size(boxes[..., :2], boxes[..., 2:])
    union = area[..., :, None] + area[..., None, :] - inter
    iou = tf.where(inter > 0, inter / tf.where(inter > 0, union, 1.0), 0.0)
    slots = tf.range(k0)
    thr0 = tf.fill(tf.shape(valid)[:-1], tf.constant(np.float32(threshold)))

    def body(i, keep, thr):
        suppressed = tf.reduce_any(keep & (iou[..., i, :] > thr[..., None]), axis=-1)
        kept = valid[..., i] & tf.logical_not(suppressed)
        keep = keep | (kept[..., None] & tf.equal(slots, i))
        if eta < 1:
            thr = tf.where(kept & (thr > 0.5), thr * eta, thr)
        return i + 1, keep, thr

    _, keep, _ = tf.while_loop(lambda i, *_: i < k0, body, (tf.constant(0), tf.zeros_like(valid), thr0))
    return keep
