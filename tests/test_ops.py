"""The registered ops (matmul, add, conv, conv_transpose): numpy kernels against an independent reference,
gradients against central finite differences in float64, and ONNX emissions run in onnxruntime."""

import importlib
import itertools

import numpy as np
import onnx
import pytest
from conftest import assert_close

from kconvert import ops
from kconvert.ops.base import OPS
from kconvert.ops.onnx_builder import OnnxBuilder

ort = importlib.import_module("onnxruntime")
conv_mod = importlib.import_module("kconvert.ops.conv")  # `kconvert.ops.conv` is also the function's name


# ---------------------------------------------------------------------------------------------- helpers


def numeric_grads(fn, inputs, weight, eps=1e-6):
    """Central finite differences of sum(fn(*inputs) * weight) with respect to every input."""
    grads = []
    for i, x in enumerate(inputs):
        g = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            plus = [a.copy() for a in inputs]
            minus = [a.copy() for a in inputs]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            g[idx] = (np.sum(fn(*plus) * weight) - np.sum(fn(*minus) * weight)) / (2 * eps)
        grads.append(g)
    return grads


def check_gradients(op, inputs, rng, **attrs):
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    out = op.forward(*inputs, **attrs)
    weight = rng.standard_normal(np.shape(out))
    analytic = op.backward(weight, tuple(inputs), out, **attrs)
    numeric = numeric_grads(lambda *a: op.forward(*a, **attrs), inputs, weight)
    assert len(analytic) == len(inputs)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        assert np.shape(a) == np.shape(inputs[i]), f"gradient {i} has shape {np.shape(a)}"
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-7, err_msg=f"gradient of input {i}")


def run_onnx(builder, feeds, out_name, out_shape):
    model = builder.make_model([(k, v.shape) for k, v in feeds.items()], [(out_name, out_shape)])
    # the installed onnx may default to an IR version newer than onnxruntime reads: pin the lowest that
    # carries the model's opset
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})[0]


def naive_conv(x, k, strides, pads, dilations, groups):
    """Direct loops over output positions and kernel taps (channels last), for reference only."""
    n_sp = k.ndim - 2
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    ks = k.shape[:n_sp]
    cin_g, cout = k.shape[-2:]
    cout_g = cout // groups
    outs = [(xp.shape[1 + i] - dilations[i] * (ks[i] - 1) - 1) // strides[i] + 1 for i in range(n_sp)]
    y = np.zeros((x.shape[0], *outs, cout))
    for o in itertools.product(*map(range, outs)):
        for t in itertools.product(*map(range, ks)):
            v = xp[(slice(None), *(o[i] * strides[i] + t[i] * dilations[i] for i in range(n_sp)))]
            for g in range(groups):
                y[(slice(None), *o, slice(g * cout_g, (g + 1) * cout_g))] += (
                    v[:, g * cin_g:(g + 1) * cin_g] @ k[t][:, g * cout_g:(g + 1) * cout_g])
    return y


def test_registry():
    for name in ("matmul", "add", "conv", "conv_transpose"):
        assert name in OPS


# ---------------------------------------------------------------------------------------------- conv

# (input shape channels-last, kernel shape (*k, C/groups, out), strides, pads, dilations, groups)
CONV_CASES = [
    ((2, 9, 4), (3, 4, 5), (2,), ((1, 2),), (1,), 1),
    ((2, 8, 6), (2, 3, 4), (1,), ((0, 1),), (3,), 2),
    ((2, 7, 6, 3), (3, 2, 3, 4), (2, 3), ((1, 0), (2, 1)), (1, 1), 1),
    ((2, 7, 6, 4), (2, 3, 2, 6), (1, 1), ((0, 1), (1, 1)), (2, 1), 2),
    ((2, 6, 5, 3), (3, 2, 1, 6), (2, 1), ((1, 1), (0, 1)), (1, 2), 3),  # depthwise, multiplier 2
    ((2, 7, 5, 4), (2, 3, 1, 4), (3, 2), ((0, 1), (1, 0)), (1, 1), 4),  # depthwise, multiplier 1
    ((2, 7, 3), (3, 1, 3), (2,), ((1, 1),), (1,), 3),  # 1-D depthwise
    ((2, 5, 4, 6, 2), (2, 3, 2, 2, 3), (2, 1, 3), ((1, 0), (0, 2), (1, 1)), (1, 1, 1), 1),
    ((2, 5, 6, 4, 4), (2, 2, 2, 2, 4), (1, 2, 1), ((0, 0), (1, 0), (0, 1)), (2, 1, 2), 2),
    ((3, 9, 7, 1), (3, 2, 1, 4), (2, 3), ((1, 2), (0, 1)), (2, 1), 1),  # one channel: tap-major columns
    ((2, 10, 1), (4, 1, 3), (3,), ((2, 0),), (2,), 1),
    ((2, 5, 6, 4, 1), (2, 3, 2, 1, 3), (2, 1, 3), ((1, 0), (0, 2), (1, 1)), (1, 2, 1), 1),
]


def _conv_id(case):
    x, k, s, p, d, g = case
    return f"x{list(x)}-k{list(k)}-s{list(s)}-p{[list(q) for q in p]}-d{list(d)}-g{g}"


@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv_forward_against_direct_loops(case, channels_last, rng):
    xs, ks, s, p, d, g = case
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    ref = naive_conv(x, k, s, p, d, g)
    if channels_last:
        y = ops.conv(x, k, s, p, d, g)
    else:
        y = np.moveaxis(ops.conv(np.moveaxis(x, -1, 1), k, s, p, d, g, channels_last=False), 1, -1)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv_gradients(case, channels_last, rng):
    xs, ks, s, p, d, g = case
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    if not channels_last:
        x = np.moveaxis(x, -1, 1)
    check_gradients(OPS["conv"], [x, k], rng, strides=s, pads=p, dilations=d, groups=g,
                    channels_last=channels_last)


@pytest.mark.parametrize("kernel_as_input", [False, True], ids=["const", "input"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv_onnx(case, channels_last, kernel_as_input, rng):
    xs, ks, s, p, d, g = case
    x = rng.standard_normal(xs).astype(np.float32)
    k = (rng.standard_normal(ks) / np.sqrt(np.prod(ks[:-1]))).astype(np.float32)
    if not channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    attrs = {"strides": s, "pads": p, "dilations": d, "groups": g, "channels_last": channels_last}
    ref = OPS["conv"].forward(x, k, **attrs)
    b = OnnxBuilder()
    if kernel_as_input:
        y = OPS["conv"].to_onnx(b, ["x", "k"], **attrs)
        got = run_onnx(b, {"x": x, "k": k}, y, ref.shape)
    else:
        y = OPS["conv"].to_onnx(b, ["x"], kernel_value=k, **attrs)
        got = run_onnx(b, {"x": x}, y, ref.shape)
    assert_close(got, ref)


def test_conv_batch_chunks_give_the_same_result(monkeypatch, rng):
    x, k = rng.standard_normal((5, 7, 6, 4)), rng.standard_normal((3, 2, 2, 6))
    attrs = {"strides": (2, 1), "pads": ((1, 1), (0, 1)), "dilations": (1, 1), "groups": 2}
    y = ops.conv(x, k, **attrs)
    gy = rng.standard_normal(y.shape)
    gx, gk = OPS["conv"].backward(gy, (x, k), y, **attrs)
    monkeypatch.setattr(conv_mod, "_MAX_COLS", 100)  # a chunk of one sample
    np.testing.assert_allclose(ops.conv(x, k, **attrs), y, rtol=1e-12, atol=1e-12)
    gx2, gk2 = OPS["conv"].backward(gy, (x, k), y, **attrs)
    np.testing.assert_allclose(gx2, gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gk2, gk, rtol=1e-12, atol=1e-12)
    kt = rng.standard_normal((3, 2, 5, 4))
    yt = ops.conv_transpose(x, kt, (2, 3), ((1, 0), (0, 2)))
    monkeypatch.setattr(conv_mod, "_MAX_COLS", 1 << 24)
    np.testing.assert_allclose(ops.conv_transpose(x, kt, (2, 3), ((1, 0), (0, 2))), yt, rtol=1e-12, atol=1e-12)


def test_conv_rejects_bad_shapes(rng):
    with pytest.raises(ValueError, match="channels"):
        ops.conv(rng.standard_normal((1, 5, 5, 3)), rng.standard_normal((3, 3, 2, 4)))
    with pytest.raises(ValueError, match="too small"):
        ops.conv(rng.standard_normal((1, 2, 5, 3)), rng.standard_normal((3, 3, 3, 4)))
    with pytest.raises(ValueError, match="divisible"):
        ops.conv(rng.standard_normal((1, 5, 5, 4)), rng.standard_normal((3, 3, 2, 5)), groups=2)


# ---------------------------------------------------------------------------------------------- conv_transpose

# (input shape channels-last, kernel shape (*k, out, in), strides, pads, dilations, output_padding)
CONVT_CASES = [
    ((2, 5, 3), (3, 4, 3), (2,), ((1, 1),), (1,), (1,)),
    ((2, 4, 3), (2, 2, 3), (3,), ((0, -2),), (1,), (0,)),  # negative pad: trailing zeros
    ((2, 5, 3), (3, 2, 3), (1,), ((2, 1),), (2,), (0,)),
    ((2, 4, 5, 3), (3, 2, 4, 3), (2, 3), ((1, 0), (0, 1)), (1, 1), (1, 2)),
    ((2, 4, 3, 2), (2, 3, 3, 2), (1, 1), ((1, 1), (2, 1)), (2, 2), (0, 0)),
    ((2, 3, 4, 2, 2), (2, 3, 2, 3, 2), (2, 1, 2), ((0, 1), (1, 1), (1, 0)), (1, 1, 1), (1, 0, 1)),
]


def _convt_id(case):
    x, k, s, p, d, op = case
    return f"x{list(x)}-k{list(k)}-s{list(s)}-p{[list(q) for q in p]}-d{list(d)}-op{list(op)}"


@pytest.mark.parametrize("case", CONVT_CASES, ids=_convt_id)
def test_conv_transpose_is_the_adjoint_of_conv(case, rng):
    """<conv_transpose(y, k), x> == <y, conv(x, k)> on the uncropped output, the defining property."""
    xs, ks, s, p, d, op = case
    y = rng.standard_normal(xs)
    k = rng.standard_normal(ks)
    out = ops.conv_transpose(y, k, s, p, d, op)
    n_sp = k.ndim - 2
    expect = [(i - 1) * st + dd * (kk - 1) + 1 + o - lo - hi
              for i, st, dd, kk, o, (lo, hi) in zip(xs[1:-1], s, d, ks[:n_sp], op, p)]
    assert out.shape == (xs[0], *expect, ks[-2])
    x = rng.standard_normal(out.shape)
    # conv over x padded back to the full output: pads are the negated crops, output_padding on the right
    fwd = ops.conv(x, k, s, [(lo, hi) for lo, hi in p], d)[(slice(None), *(slice(0, i) for i in xs[1:-1]))]
    np.testing.assert_allclose(np.sum(out * x), np.sum(y * fwd), rtol=1e-10)


@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("case", CONVT_CASES, ids=_convt_id)
def test_conv_transpose_gradients(case, channels_last, rng):
    xs, ks, s, p, d, op = case
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    if not channels_last:
        x = np.moveaxis(x, -1, 1)
    check_gradients(OPS["conv_transpose"], [x, k], rng, strides=s, pads=p, dilations=d, output_padding=op,
                    channels_last=channels_last)


@pytest.mark.parametrize("kernel_as_input", [False, True], ids=["const", "input"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("case", CONVT_CASES, ids=_convt_id)
def test_conv_transpose_onnx(case, channels_last, kernel_as_input, rng):
    xs, ks, s, p, d, op = case
    x = rng.standard_normal(xs).astype(np.float32)
    k = rng.standard_normal(ks).astype(np.float32)
    if not channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    attrs = {"strides": s, "pads": p, "dilations": d, "output_padding": op, "channels_last": channels_last}
    ref = OPS["conv_transpose"].forward(x, k, **attrs)
    b = OnnxBuilder()
    if kernel_as_input:
        y = OPS["conv_transpose"].to_onnx(b, ["x", "k"], **attrs)
        got = run_onnx(b, {"x": x, "k": k}, y, ref.shape)
    else:
        y = OPS["conv_transpose"].to_onnx(b, ["x"], kernel_value=k, **attrs)
        got = run_onnx(b, {"x": x}, y, ref.shape)
    assert_close(got, ref)


# ---------------------------------------------------------------------------------------------- matmul, add

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims on both sides
    ((1, 3, 4), (2, 4, 5)),
    ((4,), (2, 4, 3)),  # vector @ batched matrix
    ((2, 3, 4), (4,)),  # batched matrix @ vector
    ((4,), (4, 3)),
    ((4,), (4,)),  # inner product, scalar output
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_gradients(shapes, rng):
    a, b = (rng.standard_normal(s) for s in shapes)
    np.testing.assert_allclose(ops.matmul(a, b), np.matmul(a, b))
    check_gradients(OPS["matmul"], [a, b], rng)


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_onnx(shapes, rng):
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    ref = ops.matmul(a, b)
    builder = OnnxBuilder()
    y = OPS["matmul"].to_onnx(builder, ["a", "b"])
    assert_close(run_onnx(builder, {"a": a, "b": b}, y, np.shape(ref)), ref)


ADD_SHAPES = [
    ((2, 3, 4), (2, 3, 4)),
    ((2, 3, 4), (4,)),
    ((2, 1, 4), (3, 1)),
    ((3, 1), (1, 4)),
    ((), (2, 3)),  # scalar
    ((5, 1, 1, 2), (1, 3, 1)),
]


@pytest.mark.parametrize("shapes", ADD_SHAPES, ids=str)
def test_add_gradients(shapes, rng):
    a, b = (rng.standard_normal(s) for s in shapes)
    np.testing.assert_allclose(ops.add(a, b), a + b)
    check_gradients(OPS["add"], [a, b], rng)


@pytest.mark.parametrize("shapes", ADD_SHAPES, ids=str)
def test_add_onnx(shapes, rng):
    a, b = (np.asarray(rng.standard_normal(s), dtype=np.float32) for s in shapes)
    ref = ops.add(a, b)
    builder = OnnxBuilder()
    y = OPS["add"].to_onnx(builder, ["a", "b"])
    assert_close(run_onnx(builder, {"a": a, "b": b}, y, np.shape(ref)), ref)


@pytest.mark.parametrize("xs,ks", [((3, 9, 7, 1), (3, 2, 1, 4)), ((3, 9, 7, 2), (3, 2, 2, 4))],
                         ids=["one-channel", "two-channels"])
def test_conv_kept_columns_give_the_kernel_gradient(xs, ks, rng):
    """`forward_saving` keeps the im2col matrix (tap-major for one channel); `backward` with it gives the same
    gradients as rebuilding it, and the same output as `forward`."""
    x, k = rng.standard_normal(xs), rng.standard_normal(ks)
    attrs = dict(strides=(2, 3), pads=((1, 2), (0, 1)), dilations=(2, 1))
    y, cols = OPS["conv"].forward_saving((True, True), x, k, **attrs)
    assert cols is not None and cols.shape == (y.size // ks[-1], int(np.prod(ks[:-1])))
    np.testing.assert_array_equal(y, OPS["conv"].forward(x, k, **attrs))
    gy = rng.standard_normal(y.shape)
    with_cols = OPS["conv"].backward(gy, (x, k), y, saved=cols, **attrs)
    without = OPS["conv"].backward(gy, (x, k), y, **attrs)
    for a, b in zip(with_cols, without):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    ref = naive_conv(x, k, attrs["strides"], attrs["pads"], attrs["dilations"], 1)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
