"""Lowerings of the rest of the vocabulary: inference identities, preprocessing (Rescaling, Normalization,
Resizing, CenterCrop), the applications' layers, LocallyConnected, GroupNormalization, Keras 1's Merge and the
ConvLSTMs (unrolled over their static timesteps with native Conv ops).
"""

from __future__ import annotations

import string

import numpy as np

from ...layers.convolutional import conv_pads
from ...layers.preprocessing import _area_matrix, _bicubic_matrix, _to_aspect
from ...ops.resize import nearest_indices
from .activations import apply_activation
from .attention import unsqueeze
from .context import ONNX_DTYPES, LoweringContext
from .conv import emit_conv
from .refs import TensorRef, channels_first_perm
from .registry import lowers, unsupported
from .wrappers import fold_time, shape_slice, unfold_time

FLOAT = ONNX_DTYPES["float32"]


def _elementwise_input(ctx: LoweringContext, ref: TensorRef) -> TensorRef:
    return ref if ref.flat_of is None else ctx.keras(ref)


def _same(ref: TensorRef, name: str, dtype: str | None = None) -> TensorRef:
    return TensorRef(name, ref.shape, dtype or ref.dtype, ref.perm)


def keras_param(value, ref: TensorRef, dtype=np.float32) -> np.ndarray:
    """A parameter broadcasting (numpy's rule) against the Keras value of `ref`, laid out like `ref`."""
    v = np.asarray(value, dtype)
    if v.ndim > ref.ndim:
        raise ValueError(f"a parameter of shape {v.shape} cannot broadcast against {ref.shape}")
    full = v.reshape((1,) * (ref.ndim - v.ndim) + v.shape)
    return np.transpose(full, ref.perm) if ref.perm else full


def _cast(ctx: LoweringContext, ref: TensorRef, dtype: str, layer) -> TensorRef:
    if ref.dtype == dtype:
        return ref
    if dtype not in ONNX_DTYPES:
        raise unsupported(layer, f"the dtype {dtype}")
    return _same(ref, ctx.node("Cast", [ref.name], to=ONNX_DTYPES[dtype]), dtype)


# ---------------------------------------------------------------------------------------------- identities


@lowers("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
        "AlphaDropout", "ActivityRegularization", "StochasticDepth")
def inference_identity(ctx, layer, ins, node):
    """The identity at inference (what the graph passes drop when they run)."""
    return [ins[0]]


@lowers("_InferenceIdentity")
def augmentation_identity(ctx, layer, ins, node):
    """A random augmentation layer: its input cast to the layer's dtype."""
    return [_cast(ctx, _elementwise_input(ctx, ins[0]), layer.dtype, layer)]


# ---------------------------------------------------------------------------------------------- preprocessing


@lowers("Rescaling")
def rescaling(ctx, layer, ins, node):
    x = _cast(ctx, _elementwise_input(ctx, ins[0]), layer.dtype, layer)
    dtype = np.dtype(layer.dtype)
    y = ctx.node("Mul", [x.name, ctx.const(keras_param(layer.scale, x, dtype), "scale", dtype)])
    y = ctx.node("Add", [y, ctx.const(keras_param(layer.offset, x, dtype), "offset", dtype)])
    return [_same(x, y)]


@lowers("Normalization")
def normalization(ctx, layer, ins, node):
    """(x - mean) / max(sqrt(variance), 1e-7), the constants computed in numpy as the layer does."""
    x = _cast(ctx, _elementwise_input(ctx, ins[0]), layer.dtype, layer)
    dtype = np.dtype(layer.dtype)
    mean, variance = (np.asarray(s, dtype) for s in layer._stats())
    std = np.maximum(np.sqrt(variance), np.asarray(1e-7, dtype))
    m, s = ctx.const(keras_param(mean, x, dtype), "mean", dtype), ctx.const(keras_param(std, x, dtype), "std", dtype)
    if layer.invert:
        y = ctx.node("Add", [m, ctx.node("Mul", [x.name, s])])
    else:
        y = ctx.node("Div", [ctx.node("Sub", [x.name, m]), s])
    return [_same(x, y)]


def _image_input(ctx: LoweringContext, layer, ref: TensorRef) -> tuple[TensorRef, tuple, tuple | None]:
    """(the image batch as float32 (N, C, H, W), its (H, W), the perm of a result laid out the same way)."""
    if ref.ndim != 4:
        raise unsupported(layer, f"an input of rank {ref.ndim}")
    if layer.dtype != "float32":
        raise unsupported(layer, f"the dtype {layer.dtype}")
    perm = None if layer._channels_first() else channels_first_perm(4)
    x = _cast(ctx, ctx.as_perm(ref, perm), "float32", layer)
    hw = tuple(x.physical_shape()[2:])
    return x, hw, perm


def _crop(ctx: LoweringContext, x: str, top: int, left: int, h: int, w: int) -> str:
    return ctx.node("Slice", [x, ctx.ints([top, left], "starts"), ctx.ints([top + h, left + w], "ends"),
                              ctx.ints([2, 3], "axes")])


def _resize(ctx: LoweringContext, layer, x: str, hw, size, interpolation: str) -> str:
    """tf.image.resize of (N, C, H, W) to `size`: native Resize (bilinear), Gathers (nearest, exact indices),
    constant interpolation matrices (bicubic and area, TensorFlow's tables)."""
    if interpolation == "bilinear":
        full = ctx.node("Concat", [shape_slice(ctx, x, 0, 2), ctx.ints(list(size), "sizes")], axis=0)
        return ctx.node("Resize", [x, "", "", full], mode="linear", coordinate_transformation_mode="half_pixel")
    if any(d is None for d in hw):
        raise unsupported(layer, f"'{interpolation}' resizing of images of unknown size")
    if interpolation == "nearest":
        for axis, out, n in ((2, size[0], hw[0]), (3, size[1], hw[1])):
            if out != n:
                x = ctx.node("Gather", [x, ctx.ints(nearest_indices(out, n, "half_pixel"), "indices")], axis=axis)
        return x
    matrix = {"bicubic": _bicubic_matrix, "area": _area_matrix}.get(interpolation)
    if matrix is None:
        raise unsupported(layer, f"the interpolation '{interpolation}'")
    y = ctx.node("MatMul", [ctx.const(matrix(size[0], hw[0]), "rows"), x])
    return ctx.node("MatMul", [y, ctx.const(np.ascontiguousarray(matrix(size[1], hw[1]).T), "cols")])


def _smart_resize(ctx, layer, x: str, hw, size, interpolation: str) -> str:
    ch, cw = _to_aspect(hw, size, pad=False)
    h0, w0 = int(np.float32(hw[0] - ch) / 2), int(np.float32(hw[1] - cw) / 2)
    return _resize(ctx, layer, _crop(ctx, x, h0, w0, ch, cw), (ch, cw), size, interpolation)


@lowers("Resizing")
def resizing(ctx, layer, ins, node):
    x, hw, perm = _image_input(ctx, layer, ins[0])
    size = (layer.height, layer.width)
    y = x.name
    if (layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio) and any(d is None for d in hw):
        raise unsupported(layer, "fitting the aspect ratio of images of unknown size")
    if layer.crop_to_aspect_ratio:
        y = _smart_resize(ctx, layer, y, hw, size, layer.interpolation)
    else:
        if layer.pad_to_aspect_ratio:
            ph, pw = _to_aspect(hw, size, pad=True)
            top, left = int(np.float32(ph - hw[0]) / 2), int(np.float32(pw - hw[1]) / 2)
            y = ctx.node("Pad", [y, ctx.ints([0, 0, top, left, 0, 0, top, left], "pads"),
                                 ctx.const(np.float32(layer.fill_value), "fill")])
            hw = (hw[0] + 2 * top, hw[1] + 2 * left)
        y = _resize(ctx, layer, y, hw, size, layer.interpolation)
    return [TensorRef(y, node.outputs[0].shape, "float32", perm)]


@lowers("CenterCrop")
def center_crop(ctx, layer, ins, node):
    x, hw, perm = _image_input(ctx, layer, ins[0])
    if any(d is None for d in hw):
        raise unsupported(layer, "images of unknown size")
    dh, dw = hw[0] - layer.height, hw[1] - layer.width
    if dh >= 0 and dw >= 0:
        y = _crop(ctx, x.name, dh // 2, dw // 2, layer.height, layer.width)
    else:
        y = _smart_resize(ctx, layer, x.name, hw, (layer.height, layer.width), "bilinear")
    return [TensorRef(y, node.outputs[0].shape, "float32", perm)]


# ---------------------------------------------------------------------------------------------- applications


@lowers("CustomScaleLayer")
def custom_scale(ctx, layer, ins, node):
    if len(ins) != 2 or ins[0].ndim != ins[1].ndim:
        raise unsupported(layer, "inputs other than two of the same rank")
    perm = ctx.common_perm(ins)
    a, b = (ctx.as_perm(r, perm) for r in ins)
    y = ctx.node("Add", [a.name, ctx.node("Mul", [b.name, ctx.const(np.float32(layer.scale), "scale")])])
    return [_same(a, y)]


@lowers("LayerScale")
def layer_scale(ctx, layer, ins, node):
    x = _elementwise_input(ctx, ins[0])
    return [_same(x, ctx.node("Mul", [x.name, ctx.const(keras_param(layer.gamma.value, x), "gamma")]))]


# ---------------------------------------------------------------------------------------------- LocallyConnected


@lowers("LocallyConnected1D", "LocallyConnected2D")
def locally_connected(ctx, layer, ins, node):
    """Gather every output position's window (constant indices), one Einsum with the per-position kernels."""
    rank, nd = layer.rank, layer.rank + 2
    x = ctx.as_perm(ins[0], None if layer.data_format == "channels_last" else (0, *range(2, nd), 1))
    spatial, out, ks = layer._in_spatial, layer._out_spatial_shape, layer.kernel_size
    starts = [layer._starts(d) for d in range(rank)]
    lo = [max(0, -int(s[0])) for s in starts]
    hi = [max(0, int(s[-1]) + k - n) for s, k, n in zip(starts, ks, spatial)]
    y = x.name
    if any(lo) or any(hi):
        y = ctx.node("Pad", [y, ctx.ints([0, *lo, 0, 0, *hi, 0], "pads")])
    padded = [n + a + b for n, a, b in zip(spatial, lo, hi)]
    taps = [(s + a)[:, None] + np.arange(k)[None, :] for s, a, k in zip(starts, lo, ks)]  # (out_d, k_d) each
    if rank == 1:
        index = taps[0]
    else:  # (OH, OW, KH, KW) flat indices into the padded rows * cols
        index = taps[0][:, None, :, None] * padded[1] + taps[1][None, :, None, :]
    positions, window, cin, f = int(np.prod(out)), int(np.prod(ks)), layer._cin, layer.filters
    y = ctx.node("Reshape", [y, ctx.ints([0, int(np.prod(padded)), cin], "shape")])
    y = ctx.node("Gather", [y, ctx.ints(index.reshape(positions, window), "windows")], axis=1)  # (N, P, K, C)
    y = ctx.node("Reshape", [y, ctx.ints([0, positions, window * cin], "shape")])
    kernel = layer._local_kernel().reshape(positions, window * cin, f)
    y = ctx.node("Einsum", [y, ctx.const(kernel, "kernel")], equation="npk,pkf->npf")
    bias = layer.bias.value if layer.bias is not None else None
    if layer.data_format == "channels_last":
        if bias is not None:
            y = ctx.node("Add", [y, ctx.const(bias.reshape(positions, f), "bias")])
        y = ctx.node("Reshape", [y, ctx.ints([0, *out, f], "shape")])
    else:  # tf.keras adds the (*out, filters) bias reshaped, not transposed, to the channels-first output
        y = ctx.node("Transpose", [y], perm=[0, 2, 1])
        if bias is not None:
            y = ctx.node("Add", [y, ctx.const(bias.reshape(f, positions), "bias")])
        y = ctx.node("Reshape", [y, ctx.ints([0, f, *out], "shape")])
    return [apply_activation(ctx, TensorRef(y, node.outputs[0].shape, "float32"), layer._act, layer)]


# ---------------------------------------------------------------------------------------------- GroupNormalization


@lowers("GroupNormalization")
def group_norm(ctx, layer, ins, node):
    """Native GroupNormalization (opset 21, channels on ONNX axis 1), else the grouped moments as Keras computes."""
    x = _elementwise_input(ctx, ins[0])
    axis = layer.axis % x.ndim
    pa = x.physical_axis(axis)
    channels, groups = x.shape[axis], layer.groups
    if pa == 0 or channels is None:
        raise unsupported(layer, f"normalizing over axis {layer.axis}")
    gamma = layer.gamma.value if layer.gamma is not None else None
    beta = layer.beta.value if layer.beta is not None else None
    if ctx.opset >= 21 and pa == 1:
        scale = np.ones(channels, np.float32) if gamma is None else gamma
        bias = np.zeros(channels, np.float32) if beta is None else beta
        y = ctx.node("GroupNormalization", [x.name, ctx.const(scale, "gamma"), ctx.const(bias, "beta")],
                     epsilon=float(layer.epsilon), num_groups=int(groups))
        return [_same(x, y)]
    phys = list(x.physical_shape())
    grouped = [groups, channels // groups]
    tail = [-1 if d is None else d for d in phys[pa + 1:]]
    if tail.count(-1) <= 1:
        target = ctx.ints([0] * pa + grouped + tail, "shape")
    else:
        target = ctx.node("Concat", [shape_slice(ctx, x.name, 0, pa), ctx.ints(grouped, "groups"),
                                     shape_slice(ctx, x.name, pa + 1)], axis=0)
    xg = ctx.node("Reshape", [x.name, target])
    axes = [a for a in range(1, x.ndim + 1) if a != pa]
    mean = _reduce_mean(ctx, xg, axes)
    centered = ctx.node("Sub", [xg, mean])
    var = _reduce_mean(ctx, ctx.node("Mul", [centered, centered]), axes)
    inv = ctx.node("Reciprocal", [ctx.node("Sqrt", [ctx.node("Add", [var, ctx.const(float(layer.epsilon))])])])
    param_shape = [1] * (x.ndim + 1)
    param_shape[pa:pa + 2] = grouped
    if gamma is not None:
        inv = ctx.node("Mul", [inv, ctx.const(gamma.reshape(param_shape), "gamma")])
    shift = ctx.node("Mul", [mean, inv])
    shift = (ctx.node("Sub", [ctx.const(beta.reshape(param_shape), "beta"), shift]) if beta is not None
             else ctx.node("Neg", [shift]))
    y = ctx.node("Add", [ctx.node("Mul", [xg, inv]), shift])
    return [_same(x, ctx.node("Reshape", [y, ctx.node("Shape", [x.name])]))]


def _reduce_mean(ctx: LoweringContext, x: str, axes: list[int]) -> str:
    if ctx.opset >= 18:
        return ctx.node("ReduceMean", [x, ctx.ints(axes, "axes")], keepdims=1)
    return ctx.node("ReduceMean", [x], axes=list(axes), keepdims=1)


# ---------------------------------------------------------------------------------------------- Keras 1 Merge


def batch_dot(ctx: LoweringContext, x: TensorRef, y: TensorRef, a0: int, a1: int) -> str:
    """Keras's batch_dot of two Keras-layout values as one Einsum; (N, 1) for two 2-D inputs."""
    letters = iter(string.ascii_lowercase[2:])
    s1 = ["a"] + [next(letters) for _ in range(x.ndim - 1)]
    s2 = ["a"] + [next(letters) for _ in range(y.ndim - 1)]
    s1[a0] = s2[a1] = "b"
    out = ["a"] + [c for i, c in enumerate(s1) if i not in (0, a0)] + [c for i, c in enumerate(s2) if i not in (0, a1)]
    z = ctx.node("Einsum", [x.name, y.name], equation=f"{''.join(s1)},{''.join(s2)}->{''.join(out)}")
    return unsqueeze(ctx, z, [1]) if len(out) == 1 else z


@lowers("Merge")
def legacy_merge(ctx, layer, ins, node):
    mode = layer.mode
    if callable(mode):
        raise unsupported(layer, "a Merge with a Python function as its mode")
    out_shape = node.outputs[0].shape
    if mode in ("dot", "cos"):
        x, y = ctx.keras(ins[0]), ctx.keras(ins[1])
        a0, a1 = layer._axes(x.ndim, y.ndim)
        dot = batch_dot(ctx, x, y, a0, a1)
        if mode == "cos":
            norms = ctx.node("Sqrt", [ctx.node("Mul", [batch_dot(ctx, x, x, a0 % x.ndim, a1 % x.ndim),
                                                        batch_dot(ctx, y, y, a0 % y.ndim, a1 % y.ndim)])])
            dot = ctx.node("Div", [dot, ctx.node("Max", [norms, ctx.const(np.float32(1e-7), "epsilon")])])
        return [TensorRef(dot, out_shape, "float32")]
    if len({r.ndim for r in ins}) != 1:
        raise unsupported(layer, "inputs of different ranks")
    perm = ctx.common_perm(ins)
    refs = [ctx.as_perm(r, perm) for r in ins]
    names = [r.name for r in refs]
    if mode == "concat":
        y = ctx.node("Concat", names, axis=refs[0].physical_axis(layer.concat_axis))
    else:
        op = {"sum": "Add", "ave": "Add", "mul": "Mul", "max": "Max"}[mode]
        y = names[0]
        for n in names[1:]:
            y = ctx.node(op, [y, n])
        if mode == "ave":
            y = ctx.node("Div", [y, ctx.const(np.float32(len(names)), "count")])
    return [TensorRef(y, out_shape, refs[0].dtype, perm)]


# ---------------------------------------------------------------------------------------------- ConvLSTM


def _step_masks(ctx: LoweringContext, mask: str, rank: int, last: bool) -> str:
    """The mask (N, T, ...) of any rank with size-1 axes appended up to rank + 3 (Keras expands each step's mask
    against the step's output that way), then laid out like the steps (channels-first): Gather(axis=1) gives one
    step's mask."""
    ones = ctx.ints([1] * (rank + 1), "ones")
    target = ctx.node("Slice", [ctx.node("Concat", [ctx.node("Shape", [mask]), ones], axis=0), ctx.ints([0], "starts"),
                                ctx.ints([rank + 3], "ends")])
    mask = ctx.node("Reshape", [mask, target])
    return ctx.node("Transpose", [mask], perm=[0, 1, rank + 2, *range(2, rank + 2)]) if last else mask


@lowers("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", handles_mask=True)
def conv_lstm(ctx, layer, ins, node):
    """Unrolled over the static timesteps, channels-first inside: one Conv for every step's input part, then per
    step a recurrent Conv, the gates (i, f, c, o) and Keras's masking (masked steps keep the states and repeat
    the previous output)."""
    if layer.stateful:
        raise unsupported(layer, "stateful=True")
    if layer.time_major:
        raise unsupported(layer, "time_major=True")
    if len(ins) not in (1, 3):
        raise unsupported(layer, f"{len(ins) - 1} initial states")
    x, rank = ins[0], layer.rank
    steps = x.shape[1]
    if steps is None:
        raise unsupported(layer, "an unknown number of timesteps (the steps are unrolled)")
    last = layer._channels_last
    seq = ctx.as_perm(x, (0, 1, rank + 2, *range(2, rank + 2)) if last else None)  # (N, T, C, *spatial)
    child = fold_time(ctx, seq)
    in_spatial = child.physical_shape()[2:]
    if any(d is None for d in in_spatial):
        raise unsupported(layer, "images of unknown size")
    pads = conv_pads(layer.padding, in_spatial, layer.kernel_size, layer.strides, layer.dilation_rate)
    xp = emit_conv(ctx, child.name, layer.kernel.value, layer.bias.value if layer.bias is not None else None,
                   layer.strides, pads, layer.dilation_rate, 1)
    step_shape = tuple(layer._step_output_shape(x.shape))  # Keras (N, *out, f) or (N, f, *out)
    gates_shape = (*step_shape[:-1], 4 * layer.filters) if last else (step_shape[0], 4 * layer.filters,
                                                                         *step_shape[2:])
    state_perm = channels_first_perm(rank + 2) if last else None
    xp = unfold_time(ctx, TensorRef(xp, gates_shape, "float32", state_perm), seq,
                     (gates_shape[0], steps, *gates_shape[1:])).name  # (N, T, 4f, *out)
    out_spatial = step_shape[1:-1] if last else step_shape[2:]
    phys_step = (None, layer.filters, *out_spatial)
    h = c = None
    if len(ins) == 3:
        h, c = (ctx.as_perm(s, state_perm).name for s in ins[1:])
    ones = (1,) * rank
    rec_pads = conv_pads("same", out_spatial, layer.kernel_size, ones, ones)
    mask = _step_masks(ctx, x.mask, rank, last) if x.mask else None
    zero = ctx.const(np.float32(0.0), "zero")

    def act(name: str, fn) -> str:
        return apply_activation(ctx, TensorRef(name, phys_step), fn, layer).name

    out, outputs = None, []
    for t in (range(steps - 1, -1, -1) if layer.go_backwards else range(steps)):
        z = ctx.node("Gather", [xp, ctx.const(t, "step", np.int64)], axis=1)
        if h is not None:
            z = ctx.node("Add", [z, emit_conv(ctx, h, layer.recurrent_kernel.value, None, ones, rec_pads, ones, 1)])
        zi, zf, zc, zo = ctx.node("Split", [z, ctx.ints([layer.filters] * 4, "split")], n_outputs=4, axis=1)
        ig = ctx.node("Mul", [act(zi, layer._ract), act(zc, layer._act)])
        c_new = ig if c is None else ctx.node("Add", [ctx.node("Mul", [act(zf, layer._ract), c]), ig])
        h_new = ctx.node("Mul", [act(zo, layer._ract), act(c_new, layer._act)])
        if mask is None:
            out, h, c = h_new, h_new, c_new
        else:
            keep = ctx.node("Gather", [mask, ctx.const(t, "step", np.int64)], axis=1)
            fill = zero if layer.zero_output_for_mask or out is None else out
            out = ctx.node("Where", [keep, h_new, fill])
            h = ctx.node("Where", [keep, h_new, zero if h is None else h])
            c = ctx.node("Where", [keep, c_new, zero if c is None else c])
        if layer.return_sequences:
            outputs.append(unsqueeze(ctx, out, [1]))
    shapes = [v.shape for v in node.outputs]
    if layer.return_sequences:
        y = outputs[0] if len(outputs) == 1 else ctx.node("Concat", outputs, axis=1)
        seq_perm = (0, 1, rank + 2, *range(2, rank + 2)) if last else None
        results = [TensorRef(y, shapes[0], "float32", seq_perm, None, x.mask)]
    else:
        results = [TensorRef(out, shapes[0], "float32", state_perm)]
    if layer.return_state:
        results += [TensorRef(h, shapes[1], "float32", state_perm), TensorRef(c, shapes[2], "float32", state_perm)]
    return results
