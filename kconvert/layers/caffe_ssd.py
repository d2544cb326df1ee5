"""SSD's layers (weiliu89/caffe, ssd branch): Normalize, PriorBox and DetectionOutput.

CaffeNormalize (`src/caffe/layers/normalize_layer.cpp`): `y = x / sqrt(S + eps) * scale`, S the sum of x**2 over
C, H and W of each sample (`across_spatial`) or over C at each position; `scale` is one value (`channel_shared`)
or one per channel. eps is added inside the square root, as Caffe and OpenCV do.

PriorBox (`prior_box_layer.cpp`): a constant computed from the feature map's and the image's sizes, Caffe's blob
(1, 2, H*W*num_priors*4): row 0 the boxes (xmin, ymin, xmax, ymax normalized by the image size) for each position
(h, w) and each prior, row 1 their variances. Per min_size (truncated to an integer, as Caffe does): the box
min_size, then sqrt(min_size * max_size) when max_size is given, then min_size * (sqrt(ar), 1/sqrt(ar)) for each
aspect ratio of Caffe's list (1 first; a ratio within 1e-6 of one already listed is skipped; `flip` adds 1/ar).
Centres are `(w + offset) * step_w`, step = image size / feature size unless `step`/`step_h`/`step_w` is given;
the image size is bottom[1]'s unless `img_size`/`img_h`/`img_w` is. `clip` clips the boxes to [0, 1]. Computed in
float32 with OpenCV's operation order (Caffe's double intermediates differ by at most an ulp).

DetectionOutput (`detection_output_layer.cpp`, `bbox_util.cpp`): boxes decoded from the priors (CORNER,
CENTER_SIZE or CORNER_SIZE, with the prior variances unless `variance_encoded_in_target`; OpenCV's `clip` clips
them to [0, 1]); per class except the background: the scores above `confidence_threshold` sorted descending
(stable), the first `top_k`, then greedy NMS (kept while the Jaccard overlap with every kept box is <=
`nms_threshold`; with eta < 1 the threshold is multiplied by eta after each kept box while it is above 0.5); then at
most `keep_top_k` detections per image, the highest scores. Rows [image_id, label, score, xmin, ymin, xmax, ymax]
in OpenCV's order: the images one after another, each by score descending (label, then prior index, break ties,
which OpenCV leaves to std::sort); Caffe itself groups an image's rows by label. The output is OpenCV's fixed-size
blob (1, 1, batch * keep_top_k, 7) with the unused rows zero (keep_top_k = -1: room for every candidate); in
channels_last it is held, like every 4-D Caffe blob, as (1, batch * keep_top_k, 7, 1).
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..errors import ConfigError
from ..ops.array_module import const
from .base import Layer, is_shape_list, register_layer
from .caffe_pooling import kconvert_only_keras3
from .pooling import normalize_data_format

CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


def _floats(values) -> list[float]:
    if values is None:
        return []
    if isinstance(values, (int, float)):
        return [float(values)]
    return [float(v) for v in values]


# ---------------------------------------------------------------------------------------------- Normalize


@register_layer()
class CaffeNormalize(Layer):
    """SSD's Normalize: L2 normalization over C,H,W or over C, times a learned scale. Weights: ["scale"]."""

    registered_name = "CaffeNormalize"

    def __init__(self, across_spatial: bool = True, channel_shared: bool = True, eps: float = 1e-10,
                 data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.across_spatial = bool(across_spatial)
        self.channel_shared = bool(channel_shared)
        self.eps = float(eps)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        self.scale = None

    def _channel_axis(self, ndim: int) -> int:
        return ndim - 1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"expects an input with a channel axis, got shape {tuple(input_shape)}")
        channels = input_shape[self._channel_axis(len(input_shape))]
        if not self.channel_shared and channels is None:
            raise ValueError("the number of channels must be known for a per-channel scale")
        self.scale = self.add_weight("scale", (1,) if self.channel_shared else (int(channels),), "ones")

    def call(self, inputs):
        x = inputs
        c = self._channel_axis(x.ndim)
        axes = tuple(range(1, x.ndim)) if self.across_spatial else (c,)
        norm = ops.sqrt(ops.add(ops.reduce_sum(ops.square(x), axis=axes, keepdims=True),
                                const(self.eps, x.dtype)))
        shape = [1] * x.ndim
        shape[c] = -1
        return ops.multiply(ops.divide(x, norm), self.scale.value.reshape(shape))

    def get_config(self):
        return {**super().get_config(), "across_spatial": self.across_spatial,
                "channel_shared": self.channel_shared, "eps": self.eps, "data_format": self.data_format}


# ---------------------------------------------------------------------------------------------- PriorBox


def expand_aspect_ratios(aspect_ratios, flip: bool) -> list[np.float32]:
    """Caffe's aspect ratio list: 1, then each new ratio (and 1/ratio with flip); near-duplicates dropped."""
    out = [np.float32(1.0)]
    for ar in aspect_ratios:
        ar = np.float32(ar)
        if any(abs(float(ar) - float(a)) < 1e-6 for a in out):
            continue
        out.append(ar)
        if flip:
            out.append(np.float32(1.0 / float(ar)))
    return out


def prior_box_sizes(min_sizes, max_sizes, aspect_ratios, flip: bool) -> np.ndarray:
    """(num_priors, 2) float32 box (width, height) in pixels, in Caffe's order."""
    ars = expand_aspect_ratios(aspect_ratios, flip)
    sizes = []
    for i, mn in enumerate(min_sizes):
        mn = np.float32(int(mn))  # Caffe: int min_size_ = min_sizes_[s]
        sizes.append((mn, mn))
        if max_sizes:
            side = np.float32(np.sqrt(float(mn) * float(int(max_sizes[i]))))
            sizes.append((side, side))
        for ar in ars:
            if abs(float(ar) - 1.0) < 1e-6:
                continue
            root = np.sqrt(ar)
            sizes.append((mn * root, mn / root))
    return np.asarray(sizes, np.float32).reshape(-1, 2)


def prior_boxes(feature_hw, image_hw, sizes: np.ndarray, variance, clip: bool, step_hw=(0.0, 0.0),
                offset: float = 0.5) -> np.ndarray:
    """Caffe's PriorBox blob without its leading 1: (2, H * W * num_priors * 4) float32."""
    fh, fw = (int(v) for v in feature_hw)
    ih, iw = (np.float32(v) for v in image_hw)
    f32 = np.float32
    step_h = f32(step_hw[0]) if step_hw[0] and step_hw[1] else ih / f32(fh)
    step_w = f32(step_hw[1]) if step_hw[0] and step_hw[1] else iw / f32(fw)
    cx = (np.arange(fw, dtype=f32) + f32(offset)) * step_w  # (W,)
    cy = (np.arange(fh, dtype=f32) + f32(offset)) * step_h  # (H,)
    half_w, half_h = sizes[:, 0] * f32(0.5), sizes[:, 1] * f32(0.5)  # (K,)
    cxb, cyb = cx[None, :, None], cy[:, None, None]
    boxes = np.stack(np.broadcast_arrays((cxb - half_w) / iw, (cyb - half_h) / ih,
                                         (cxb + half_w) / iw, (cyb + half_h) / ih), axis=-1)  # (H, W, K, 4)
    boxes = boxes.reshape(-1).astype(f32)
    if clip:
        boxes = np.clip(boxes, f32(0.0), f32(1.0))
    var = _floats(variance) or [0.1]
    variances = np.tile(np.asarray(var, f32), boxes.size // len(var)) if len(var) == 4 else \
        np.full(boxes.shape, var[0], f32)
    return np.stack([boxes, variances])


@register_layer()
class PriorBox(Layer):
    """SSD's PriorBox, called on [feature map, image]: a constant (1, 2, P*4) (channels_last: (1, P*4, 2))."""

    registered_name = "PriorBox"

    def __init__(self, min_size=(), max_size=(), aspect_ratio=(), flip: bool = True, clip: bool = False,
                 variance=(), img_size=(0, 0), step=(0.0, 0.0), offset: float = 0.5,
                 data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.min_size, self.max_size = _floats(min_size), _floats(max_size)
        self.aspect_ratio, self.variance = _floats(aspect_ratio), _floats(variance)
        self.flip, self.clip, self.offset = bool(flip), bool(clip), float(offset)
        self.img_size = [int(v) for v in (img_size if isinstance(img_size, (list, tuple)) else (img_size,) * 2)]
        self.step = [float(v) for v in (step if isinstance(step, (list, tuple)) else (step,) * 2)]
        self.data_format = normalize_data_format(data_format, layer=self.name)
        if not self.min_size or any(m <= 0 for m in self.min_size):
            raise ConfigError("PriorBox needs positive min_size values", layer=self.name)
        if self.max_size and (len(self.max_size) != len(self.min_size)
                              or any(mx <= mn for mn, mx in zip(self.min_size, self.max_size))):
            raise ConfigError("PriorBox needs one max_size > min_size per min_size", layer=self.name)
        if len(self.variance) not in (0, 1, 4) or any(v <= 0 for v in self.variance):
            raise ConfigError("PriorBox takes 1 or 4 positive variances", layer=self.name)
        self.sizes = prior_box_sizes(self.min_size, self.max_size, self.aspect_ratio, self.flip)

    def _hw(self, shape) -> tuple[int, int]:
        hw = shape[1:3] if self.data_format == "channels_last" else shape[2:4]
        if len(shape) != 4 or any(d is None for d in hw):
            raise ValueError(f"needs 4-D inputs of known spatial size, got {tuple(shape)}")
        return int(hw[0]), int(hw[1])

    def priors(self, input_shapes) -> np.ndarray:
        """The Caffe blob (1, 2, P*4) for the [feature map, image] shapes."""
        if not is_shape_list(input_shapes) or len(input_shapes) != 2:
            raise ValueError("PriorBox is called on [feature map, image]")
        image = tuple(self.img_size) if all(self.img_size) else self._hw(input_shapes[1])
        return prior_boxes(self._hw(input_shapes[0]), image, self.sizes, self.variance, self.clip,
                           tuple(self.step), self.offset)[None]

    def constant(self, input_shapes) -> np.ndarray:
        """The output in this layer's data format."""
        p = self.priors(input_shapes)
        return np.ascontiguousarray(p.transpose(0, 2, 1)) if self.data_format == "channels_last" else p

    def build(self, input_shape):
        self.priors(input_shape)

    def call(self, inputs):
        return self.constant([(None, *x.shape[1:]) for x in inputs])

    def compute_output_shape(self, input_shape):
        return self.constant(input_shape).shape

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    def get_config(self):
        return {**super().get_config(), "min_size": self.min_size, "max_size": self.max_size,
                "aspect_ratio": self.aspect_ratio, "flip": self.flip, "clip": self.clip, "variance": self.variance,
                "img_size": self.img_size, "step": self.step, "offset": self.offset, "data_format": self.data_format}


# ---------------------------------------------------------------------------------------------- DetectionOutput


def box_size(b: np.ndarray) -> np.ndarray:
    """Caffe's BBoxSize of normalized boxes (..., 4): w * h, 0 for an invalid box."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.where((w < 0) | (h < 0), np.float32(0), w * h).astype(np.float32)


def pairwise_iou(b: np.ndarray) -> np.ndarray:
    """Caffe's JaccardOverlap between every pair of boxes (..., K, 4) -> (..., K, K), float32."""
    lo = np.maximum(b[..., :, None, :2], b[..., None, :, :2])
    hi = np.minimum(b[..., :, None, 2:], b[..., None, :, 2:])
    inter = box_size(np.concatenate([lo, hi], axis=-1))
    area = box_size(b)
    union = area[..., :, None] + area[..., None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, np.float32(0)).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray | None, code_type: str,
                 clip: bool) -> np.ndarray:
    """Boxes (..., P, 4) from predictions `loc` (..., P, 4), priors (P, 4) and variances (P, 4) (None: encoded
    in the target)."""
    f32 = np.float32
    d = loc * variances if variances is not None else loc
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if code_type == "CORNER":
        out = priors + d
    elif code_type == "CORNER_SIZE":
        out = priors + d * np.stack([pw, ph, pw, ph], axis=-1)
    else:  # CENTER_SIZE, OpenCV's operation order
        pcx, pcy = priors[:, 0] + pw * f32(0.5), priors[:, 1] + ph * f32(0.5)
        cx, cy = d[..., 0] * pw + pcx, d[..., 1] * ph + pcy
        w, h = np.exp(d[..., 2]) * pw, np.exp(d[..., 3]) * ph
        out = np.stack([cx - w * f32(0.5), cy - h * f32(0.5), cx + w * f32(0.5), cy + h * f32(0.5)], axis=-1)
    out = out.astype(f32)
    return np.clip(out, f32(0), f32(1)) if clip else out


@register_layer()
class DetectionOutput(Layer):
    """SSD's DetectionOutput, called on [loc, conf, priors] (see the module doc). No weights."""

    registered_name = "DetectionOutput"
    mixes_batch = True  # one output for the whole batch: predict must not split the batch into chunks

    def __init__(self, num_classes: int = 2, share_location: bool = True, background_label_id: int = 0,
                 nms_threshold: float = 0.3, top_k: int = -1, eta: float = 1.0, code_type: str = "CORNER",
                 variance_encoded_in_target: bool = False, keep_top_k: int = -1,
                 confidence_threshold: float | None = None, clip: bool = False, data_format: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        kconvert_only_keras3(self)
        self.num_classes = int(num_classes)
        self.share_location = bool(share_location)
        self.background_label_id = int(background_label_id)
        self.nms_threshold, self.eta = float(nms_threshold), float(eta)
        self.top_k, self.keep_top_k = int(top_k), int(keep_top_k)
        self.code_type = str(code_type).upper()
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.confidence_threshold = None if confidence_threshold is None else float(confidence_threshold)
        self.clip = bool(clip)
        self.data_format = normalize_data_format(data_format, layer=self.name)
        if self.code_type not in CODE_TYPES:
            raise ConfigError(f"code_type must be one of {CODE_TYPES}, got {code_type!r}", layer=self.name)
        if self.num_classes < 1 or not 0 < self.eta <= 1 or self.nms_threshold <= 0:
            raise ConfigError("DetectionOutput needs num_classes >= 1, 0 < eta <= 1 and nms_threshold > 0",
                              layer=self.name)

    # ------------------------------------------------------------------ geometry
    @property
    def classes(self) -> list[int]:
        """The labels that get detections (all but the background)."""
        return [c for c in range(self.num_classes) if c != self.background_label_id]

    @property
    def num_loc_classes(self) -> int:
        return 1 if self.share_location else self.num_classes

    def num_priors(self, input_shapes) -> int:
        if not is_shape_list(input_shapes) or len(input_shapes) != 3:
            raise ValueError("DetectionOutput is called on [loc, conf, priors]")
        loc, conf, prior = input_shapes
        p4 = prior[2] if self.data_format == "channels_first" else prior[1]
        rows = prior[1] if self.data_format == "channels_first" else prior[2]
        if len(prior) != 3 or p4 is None or p4 % 4:
            raise ValueError(f"priors must be a (1, 2, num_priors * 4) blob, got {tuple(prior)}")
        p = p4 // 4
        if rows != (1 if self.variance_encoded_in_target else 2):
            raise ValueError("priors need a variance row unless variance_encoded_in_target")
        if len(loc) != 2 or len(conf) != 2 or loc[1] != p * 4 * self.num_loc_classes or \
                conf[1] != p * self.num_classes:
            raise ValueError(f"loc {tuple(loc)} and conf {tuple(conf)} must be flat with {p * 4 * self.num_loc_classes}"
                             f" and {p * self.num_classes} values per image for {p} priors")
        return p

    def candidates(self, num_priors: int) -> int:
        """How many boxes of one class NMS looks at."""
        return min(self.top_k, num_priors) if self.top_k > 0 else num_priors

    def rows_per_image(self, num_priors: int) -> int:
        return self.keep_top_k if self.keep_top_k > -1 else len(self.classes) * self.candidates(num_priors)

    def build(self, input_shape):
        self.num_priors(input_shape)

    def compute_output_shape(self, input_shape):
        k = self.rows_per_image(self.num_priors(input_shape))
        n = input_shape[0][0]
        rows = None if n is None else n * k
        return (1, 1, rows, 7) if self.data_format == "channels_first" else (1, rows, 7, 1)

    def compute_output_layout(self, input_layouts, output_shape):
        return None

    # ------------------------------------------------------------------ numpy
    def decoded(self, loc: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """(N, C', P, 4) boxes of each detected class (C' = len(classes))."""
        if self.data_format == "channels_last":
            prior = prior.transpose(0, 2, 1)
        p = prior.shape[2] // 4
        priors = prior[0, 0].reshape(p, 4)
        variances = None if self.variance_encoded_in_target else prior[0, 1].reshape(p, 4)
        loc = loc.reshape(loc.shape[0], p, self.num_loc_classes, 4).transpose(0, 2, 1, 3)
        if not self.share_location:
            loc = loc[:, self.classes]
        return decode_boxes(loc, priors, variances, self.code_type, self.clip)

    def call(self, inputs):
        loc, conf, prior = (np.asarray(a, np.float32) for a in inputs)
        n = loc.shape[0]
        boxes = self.decoded(loc, prior)  # (N, 1 or C', P, 4)
        p = boxes.shape[2]
        scores = conf.reshape(n, p, self.num_classes).transpose(0, 2, 1)[:, self.classes]  # (N, C', P)
        k0, k = self.candidates(p), self.rows_per_image(p)
        threshold = -np.inf if self.confidence_threshold is None else self.confidence_threshold
        out = np.zeros((n * k, 7), np.float32)
        count = 0
        for i in range(n):
            found = []  # (score, label, prior)
            for ci, label in enumerate(self.classes):
                s = scores[i, ci]
                cand = np.nonzero(s > threshold)[0]
                order = cand[np.argsort(-s[cand], kind="stable")][:k0]
                b = boxes[i, 0 if self.share_location else ci]
                found += [(s[j], label, j) for j in self.nms(b[order], order)]
            found.sort(key=lambda t: (-t[0], t[1], t[2]))
            for score, label, j in found[:k] if self.keep_top_k > -1 else found:
                box = boxes[i, 0 if self.share_location else self.classes.index(label), j]
                out[count] = (i, label, score, *box)
                count += 1
        shape = (1, 1, n * k, 7) if self.data_format == "channels_first" else (1, n * k, 7, 1)
        return out.reshape(shape)

    def nms(self, boxes: np.ndarray, index: np.ndarray) -> list[int]:
        """Caffe's ApplyNMSFast on boxes already sorted by score; returns the kept `index` entries in order."""
        iou = pairwise_iou(boxes)
        threshold = self.nms_threshold
        kept: list[int] = []
        for i in range(len(index)):
            if all(iou[i, j] <= threshold for j in kept):
                kept.append(i)
                if self.eta < 1 and threshold > 0.5:
                    threshold = float(np.float32(threshold * self.eta))
        return [int(index[i]) for i in kept]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "share_location": self.share_location,
                "background_label_id": self.background_label_id, "nms_threshold": self.nms_threshold,
                "top_k": self.top_k, "eta": self.eta, "code_type": self.code_type,
                "variance_encoded_in_target": self.variance_encoded_in_target, "keep_top_k": self.keep_top_k,
                "confidence_threshold": self.confidence_threshold, "clip": self.clip,
                "data_format": self.data_format}
