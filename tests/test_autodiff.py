"""The autodiff tape (kconvert.runtime.autodiff): the gradient of every differentiable kconvert.ops function and of
the numpy calls layers make, against central finite differences in float64 (odd sizes, broadcasting, batch > 1);
the forward on the tape is bit-identical to plain numpy; the API (GradientTape, value_and_grad) and its errors."""

import numpy as np
import pytest

from kconvert import ops
from kconvert.ops import noise
from kconvert.ops.recurrent import gru_cell, gru_step, lstm_cell, lstm_step
from kconvert.runtime.autodiff import AutodiffError, GradientTape, Var, value_and_grad
from kconvert.runtime.gradcheck import check_gradients

R = np.random.default_rng(7)


def rand(*shape, lo=None):
    """float64 values spread around [-1.5, 1.5] (or in [lo, lo + 1.5] when lo is given)."""
    if lo is not None:
        return lo + 1.5 * R.random(shape)
    return R.uniform(-1.5, 1.5, shape)


def away_from_zero(*shape):
    """Values whose magnitude is at least 0.2: finite differences never straddle a kink at 0."""
    x = rand(*shape)
    return np.where(np.abs(x) < 0.2, np.sign(x + 1e-9) * 0.2 + x, x)


def distinct(*shape):
    """A random permutation of well-separated values: max/min pooling never has near ties."""
    return R.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.1 - 1.0


# (id, function, inputs): every differentiable op of kconvert.ops
OP_CASES = [
    ("add_broadcast", ops.add, [rand(2, 3, 5), rand(5)]),
    ("add_size1", ops.add, [rand(2, 1, 5), rand(3, 1)]),
    ("subtract", ops.subtract, [rand(3, 5), rand(2, 3, 5)]),
    ("multiply", ops.multiply, [rand(2, 3, 5), rand(3, 1)]),
    ("divide", ops.divide, [rand(2, 3, 5), rand(5, lo=0.5)]),
    ("maximum", ops.maximum, [distinct(2, 3, 5), distinct(2, 3, 5) + 0.05]),
    ("minimum", ops.minimum, [distinct(2, 3, 5), distinct(3, 5) + 0.05]),
    ("negative", ops.negative, [rand(2, 3)]),
    ("power", lambda x: ops.power(x, 2.5), [rand(3, 5, lo=0.3)]),
    ("power_both", ops.power, [rand(3, 5, lo=0.3), rand(5)]),
    ("square", ops.square, [rand(2, 5)]),
    ("sqrt", ops.sqrt, [rand(2, 5, lo=0.3)]),
    ("rsqrt", ops.rsqrt, [rand(2, 5, lo=0.3)]),
    ("exp", ops.exp, [rand(2, 5)]),
    ("log", ops.log, [rand(2, 5, lo=0.3)]),
    ("abs", ops.abs, [away_from_zero(2, 5)]),
    ("tanh", ops.tanh, [rand(2, 5)]),
    ("clip", lambda x: ops.clip(x, -0.5, 0.7), [away_from_zero(3, 7)]),
    ("where", lambda a, b: ops.where(a > 0, a, b), [away_from_zero(3, 7), rand(7)]),
    ("cast", lambda x: ops.cast(x, "float64") * 2, [rand(3, 5)]),
    ("relu", ops.relu, [away_from_zero(2, 3, 5)]),
    ("relu_leaky_capped", lambda x: ops.relu(x * 4, negative_slope=0.1, max_value=3.0), [away_from_zero(2, 3, 5)]),
    ("relu_threshold", lambda x: ops.relu(x, threshold=0.5), [away_from_zero(2, 3, 5) + 0.5]),
    ("sigmoid", ops.sigmoid, [rand(2, 3, 5) * 3]),
    ("softmax", ops.softmax, [rand(2, 3, 5)]),
    ("softmax_axis1", lambda x: ops.softmax(x, axis=1), [rand(2, 3, 5)]),
    ("log_softmax", lambda x: ops.log_softmax(x, axis=-1), [rand(2, 3, 5)]),
    ("softplus", ops.softplus, [rand(2, 5) * 3]),
    ("softsign", ops.softsign, [away_from_zero(2, 5)]),
    ("elu", lambda x: ops.elu(x, 0.7), [away_from_zero(3, 5)]),
    ("selu", ops.selu, [away_from_zero(3, 5)]),
    ("gelu", ops.gelu, [rand(3, 5) * 2]),
    ("gelu_tanh", lambda x: ops.gelu(x, approximate=True), [rand(3, 5) * 2]),
    ("erf", ops.erf, [rand(3, 5)]),
    ("l2_normalize", lambda x: ops.l2_normalize(x, axis=-1), [rand(3, 5)]),
    ("matmul_2d", ops.matmul, [rand(3, 5), rand(5, 4)]),
    ("matmul_batched_shared", ops.matmul, [rand(2, 3, 5), rand(5, 4)]),
    ("matmul_broadcast", ops.matmul, [rand(2, 1, 3, 5), rand(3, 5, 4)]),
    ("matmul_vector", ops.matmul, [rand(2, 3, 5), rand(5)]),
    ("matmul_vector_left", ops.matmul, [rand(5), rand(2, 5, 3)]),
    ("tensordot", lambda a, b: ops.tensordot(a, b, ([2, 0], [0, 2])), [rand(3, 4, 5), rand(5, 2, 3)]),
    ("einsum_mha", lambda a, b: ops.einsum("abc,cde->abde", a, b), [rand(2, 3, 5), rand(5, 2, 4)]),
    ("einsum_scores", lambda a, b: ops.einsum("aecd,abcd->acbe", a, b), [rand(2, 3, 2, 4), rand(2, 5, 2, 4)]),
    ("einsum_ellipsis_sum", lambda a, b: ops.einsum("...ij,jk", a, b), [rand(2, 3, 5), rand(5, 4)]),
    ("einsum_reduce_only", lambda a, b: ops.einsum("ij,kl->ik", a, b), [rand(3, 5), rand(4, 2)]),
    ("batch_dot", lambda a, b: ops.batch_dot(a, b, (2, 1)), [rand(2, 3, 5), rand(2, 5, 4)]),
    ("batch_dot_2d", lambda a, b: ops.batch_dot(a, b, 1), [rand(3, 5), rand(3, 5)]),
    ("concatenate", lambda a, b, c: ops.concatenate([a, b, c], axis=1), [rand(2, 3, 4), rand(2, 1, 4),
                                                                         rand(2, 5, 4)]),
    ("gather", lambda t: ops.gather(t, np.array([[1, 0, 4], [4, 4, 2]])), [rand(5, 3)]),
    ("reduce_sum", lambda x: ops.reduce_sum(x, axis=(0, 2)), [rand(2, 3, 5)]),
    ("reduce_mean", lambda x: ops.reduce_mean(x, axis=-1, keepdims=True), [rand(2, 3, 5)]),
    ("reduce_max", lambda x: ops.reduce_max(x, axis=1), [distinct(2, 3, 5)]),
    ("reduce_min", lambda x: ops.reduce_min(x, axis=None), [distinct(2, 3, 5)]),
    ("logsumexp", lambda x: ops.logsumexp(x, axis=1), [rand(2, 3, 5)]),
    ("moments", lambda x: ops.moments(x, (0, 1), keepdims=True), [rand(2, 3, 5)]),
    ("max_pool2d_same", lambda x: ops.max_pool(x, (3, 2), (2, 2), ((1, 1), (0, 1))), [distinct(2, 7, 5, 3)]),
    ("max_pool1d_cf", lambda x: ops.max_pool(x, (2,), (3,), channels_last=False), [distinct(2, 3, 8)]),
    ("avg_pool2d", lambda x: ops.avg_pool(x, (2, 3), (2, 2)), [rand(2, 7, 6, 3)]),
    ("avg_pool2d_pads", lambda x: ops.avg_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))), [rand(2, 7, 6, 3)]),
    ("avg_pool3d_incl_pad", lambda x: ops.avg_pool(x, (2, 2, 2), (2, 1, 2), ((0, 1), (1, 0), (0, 1)),
                                                   count_include_pad=True), [rand(2, 5, 4, 3, 2)]),
    ("global_avg_pool", lambda x: ops.global_avg_pool(x, (1, 2)), [rand(2, 5, 3, 4)]),
    ("global_avg_pool_mask", lambda x: ops.global_avg_pool(x, (1,), mask=np.array([[1, 1, 0, 1, 0],
                                                                                   [0, 1, 1, 1, 1]])[..., None]),
     [rand(2, 5, 4)]),
    ("global_max_pool", lambda x: ops.global_max_pool(x, (1, 2)), [distinct(2, 5, 3, 4)]),
    ("conv1d_stride_dilation", lambda x, k: ops.conv(x, k, (2,), ((2, 1),), (2,)), [rand(2, 11, 3), rand(3, 3, 4)]),
    ("conv2d_strides_not_dividing", lambda x, k: ops.conv(x, k, (2, 3), ((1, 1), (0, 2))),
     [rand(2, 7, 8, 3), rand(3, 2, 3, 5)]),
    ("conv2d_dilation", lambda x, k: ops.conv(x, k, None, None, (2, 1)), [rand(2, 7, 6, 3), rand(2, 3, 3, 4)]),
    ("conv2d_groups", lambda x, k: ops.conv(x, k, (1, 2), None, None, 2), [rand(2, 5, 7, 4), rand(3, 2, 2, 6)]),
    ("conv2d_depthwise", lambda x, k: ops.conv(x, k, (2, 1), ((1, 1), (1, 1)), None, 3),
     [rand(2, 7, 6, 3), rand(3, 3, 1, 6)]),
    ("conv2d_channels_first", lambda x, k: ops.conv(x, k, (2, 2), channels_last=False),
     [rand(2, 3, 7, 6), rand(2, 3, 3, 4)]),
    ("conv3d", lambda x, k: ops.conv(x, k, (1, 2, 2), ((0, 1), (1, 0), (0, 0))),
     [rand(2, 4, 5, 6, 2), rand(2, 3, 2, 2, 3)]),
    ("conv_transpose2d", lambda x, k: ops.conv_transpose(x, k, (2, 3), ((1, 0), (0, 1)), None, (1, 0)),
     [rand(2, 4, 3, 3), rand(3, 2, 5, 3)]),
    ("conv_transpose1d_dilation", lambda x, k: ops.conv_transpose(x, k, (1,), None, (2,)),
     [rand(2, 5, 3), rand(3, 4, 3)]),
    ("lstm_cell", lambda z, c: lstm_cell(z, c), [rand(3, 4 * 5), rand(3, 5)]),  # the fused training cell
    ("lstm_cell_seq", lambda z, c: lstm_cell(z, c), [rand(2, 3, 4 * 2), rand(2, 3, 2)]),
    ("gru_cell", lambda xp, inner, h: gru_cell(xp, inner, h), [rand(3, 3 * 4), rand(3, 3 * 4), rand(3, 4)]),
    ("resize_nearest", lambda x: ops.resize(x, (7, 4)), [rand(2, 3, 5, 2)]),
    ("resize_bilinear", lambda x: ops.resize(x, (7, 4), "bilinear"), [rand(2, 3, 5, 2)]),
    ("upsample", lambda x: ops.upsample(x, (2, 3)), [rand(2, 3, 5, 2)]),
    ("reshape", lambda x: ops.reshape(x, (0, -1)), [rand(2, 3, 5)]),
    ("transpose", lambda x: ops.transpose(x, (2, 0, 1)), [rand(2, 3, 5)]),
    ("pad", lambda x: ops.pad(x, {1: (1, 2), 2: (0, 1)}, 0.5), [rand(2, 3, 5)]),
    ("crop", lambda x: ops.crop(x, {1: (1, 0), 2: (1, 2)}), [rand(2, 3, 5)]),
    ("repeat", lambda x: ops.repeat(x, 3, 1), [rand(2, 3, 5)]),
    ("tile", lambda x: ops.tile(x, (1, 3, 2)), [rand(2, 3, 5)]),
    ("expand_dims", lambda x: ops.expand_dims(x, 1) * 2, [rand(2, 3)]),
    ("dropout_fixed_mask", lambda x: noise.dropout(x, 0.4, np.random.default_rng(3)), [rand(3, 7)]),
]


@pytest.mark.parametrize("fn,inputs", [c[1:] for c in OP_CASES], ids=[c[0] for c in OP_CASES])
def test_op_gradients_match_finite_differences(fn, inputs):
    check_gradients(fn, inputs)


def test_every_differentiable_op_has_a_case():
    covered = {c[0].split("_")[0] for c in OP_CASES} | {c[0] for c in OP_CASES}
    non_differentiable = {"greater", "not_equal", "sign", "reduce_all", "reduce_any", "conv_output_length",
                          "explicit_pads", "output_length", "same_pads", "spatial_axes", "OPS", "Op", "register",
                          "unbroadcast"}
    missing = [n for n in ops.__all__ if n not in non_differentiable and n not in covered
               and not any(c.startswith(n) for c in covered)]
    assert not missing, f"ops without a gradient case: {missing}"


# numpy calls layers make directly (not through kconvert.ops)
NUMPY_CASES = [
    ("split_concatenate", lambda x: np.concatenate(np.split(x, [1, 4], axis=1)[::-1], axis=1), [rand(2, 6, 3)]),
    ("array_split_hstack", lambda x: np.hstack(np.array_split(x, 3, axis=1)[1:]), [rand(2, 7)]),
    ("stack", lambda a, b: np.stack([a, b * 2], axis=1), [rand(2, 3), rand(2, 3)]),
    ("take_axis", lambda x: np.take(x, [2, 0, 2], axis=1), [rand(2, 3, 4)]),
    ("take_along_axis", lambda x: np.take_along_axis(x, np.array([[[1], [0], [2]]]), axis=2), [rand(2, 3, 4)]),
    ("getitem_basic", lambda x: x[:, 1:, ::2] * x[0, 0, 0], [rand(2, 3, 5)]),
    ("getitem_advanced_duplicates", lambda x: x[:, [0, 2, 0]], [rand(2, 3, 4)]),
    ("getitem_bool", lambda x: x[x > 0] * 3, [away_from_zero(3, 4)]),
    ("setitem", lambda x, v: _setitem(x, v), [rand(3, 5), rand(5)]),
    ("inplace_ops", lambda x, y: _inplace(x, y), [rand(3, 5), rand(5, lo=0.5)]),
    ("zeros_like_fill", lambda x: _fill(x), [rand(4, 3)]),
    ("var_std", lambda x: np.var(x, axis=0) + np.std(x, axis=(0, 2), keepdims=True, ddof=1).sum(), [rand(3, 4, 5)]),
    ("prod", lambda x: np.prod(x, axis=1), [rand(3, 4, lo=0.5)]),
    ("cumsum_flip", lambda x: np.flip(np.cumsum(x, axis=1), 0), [rand(3, 4)]),
    ("moveaxis_swapaxes", lambda x: np.swapaxes(np.moveaxis(x, 0, -1), 0, 1).T, [rand(2, 3, 5)]),
    ("broadcast_to_squeeze", lambda x: np.squeeze(np.broadcast_to(x, (3, 2, 1, 5)), 2), [rand(2, 1, 5)]),
    ("dot", lambda a, b: np.dot(a, b), [rand(2, 3, 5), rand(4, 5, 2)]),
    ("outer", np.outer, [rand(3), rand(4)]),
    ("tile_repeat", lambda x: np.repeat(np.tile(x, 2), [1, 0, 2], axis=0), [rand(3, 2)]),
    ("logaddexp_hypot", lambda a, b: np.logaddexp(a, b) + np.hypot(a, b), [rand(3, 4), rand(4)]),
    ("reductions_as_methods", lambda x: x.max(axis=1) + x.mean(0).sum() - x.min(), [distinct(3, 4)]),
    ("maximum_reduce", lambda x: np.maximum.reduce(x, axis=1), [distinct(3, 4)]),
    ("tril", lambda x: np.tril(x, -1) + np.triu(x, 1) * 2, [rand(4, 4)]),
    ("pad_numpy", lambda x: np.pad(x, ((0, 0), (2, 1))), [rand(3, 4)]),
    ("astype_roundtrip", lambda x: np.asarray(x, np.float32).astype(np.float64) * 0 + x.astype(np.float64) ** 2,
     [rand(3, 4)]),
    ("trig", lambda x: np.sin(x) * np.cos(x) + np.arctan(x) + np.expm1(x) + np.log1p(np.abs(x)), [rand(3, 4)]),
]


def _setitem(x, v):
    y = x * 1
    y[1] = v
    y[:, 0] += v[:3]
    return y


def _inplace(x, y):
    z = x * 1
    z += y
    z *= x
    z /= y
    z -= 1
    z **= 2
    np.add(z, x, out=z)
    return z


def _fill(x):
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        out[i] = x[i] * (i + 1)
    return out


@pytest.mark.parametrize("fn,inputs", [c[1:] for c in NUMPY_CASES], ids=[c[0] for c in NUMPY_CASES])
def test_numpy_call_gradients_match_finite_differences(fn, inputs):
    check_gradients(fn, inputs)


def test_float32_forward_is_bit_identical_and_gradients_stay_float32():
    x = R.standard_normal((4, 9, 7, 3)).astype(np.float32)
    k = (R.standard_normal((3, 3, 3, 5)) * 0.3).astype(np.float32)
    plain = ops.relu(ops.conv(x, k, (2, 2), ((1, 1), (1, 1))))
    value, (gx, gk) = value_and_grad(lambda a, b: ops.relu(ops.conv(a, b, (2, 2), ((1, 1), (1, 1)))), [x, k])
    assert value.dtype == np.float32 and np.array_equal(value, plain)
    assert gx.dtype == np.float32 and gk.dtype == np.float32


def test_gradient_tape_api():
    x = rand(3, 4)
    with GradientTape() as tape:
        v = tape.watch(x)
        u = tape.watch(rand(2))
        y = np.sum(np.exp(v) * 2)
    assert isinstance(v, np.ndarray) and isinstance(v, Var)
    gv, gu = tape.gradient(y, [v, u])
    np.testing.assert_allclose(gv, 2 * np.exp(x))
    assert gu is None  # not connected, as tf.GradientTape
    seeded = tape.gradient(np.exp(v), v, output_gradients=np.full((3, 4), 3.0))
    np.testing.assert_allclose(seeded, 3 * np.exp(x))
    assert np.asarray is not None and not isinstance(np.asarray(x), Var)


def test_value_and_grad_of_a_single_array_and_unconnected_params():
    value, g = value_and_grad(lambda a: (a ** 2).sum(), np.arange(3.0))
    assert float(value) == 5.0
    np.testing.assert_array_equal(g, [0.0, 2.0, 4.0])
    _, (g1, g2) = value_and_grad(lambda a, b: a.sum(), [np.ones(2), np.ones(3)])
    np.testing.assert_array_equal(g2, np.zeros(3))


def test_control_flow_reads_real_values():
    def f(x):
        return x * 2 if float(x.sum()) > 0 else x * -3

    _, g = value_and_grad(lambda a: f(a).sum(), np.ones(3))
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])
    _, g = value_and_grad(lambda a: f(a).sum(), -np.ones(3))
    np.testing.assert_array_equal(g, [-3.0, -3.0, -3.0])


def test_integer_and_boolean_results_are_plain_arrays():
    with GradientTape() as tape:
        v = tape.watch(rand(3, 4))
        assert type(np.argmax(v, axis=1)) is np.ndarray
        assert type(v > 0) is np.ndarray
        assert type(np.isfinite(v)) is np.ndarray
        assert np.shape(v) == (3, 4)


def test_writing_a_tracked_value_into_a_plain_array_is_an_error():
    with GradientTape() as tape:
        v = tape.watch(rand(3, 4))
        out = np.zeros((3, 4))
        with pytest.raises(AutodiffError, match="plain numpy array"):
            out[0] = v[0]
        with pytest.raises(AutodiffError, match="plain array"):
            np.multiply(v, 2, out=out)


def test_a_numpy_function_without_a_rule_is_an_error_not_a_silent_zero():
    with GradientTape() as tape:
        v = tape.watch(rand(5))
        with pytest.raises(AutodiffError, match="numpy.sort"):
            np.sort(v)


def test_tape_patch_is_removed_after_the_block():
    before = np.asarray
    with GradientTape():
        assert np.asarray is not before
    assert np.asarray is before


def test_gradient_with_respect_to_an_intermediate_value():
    with GradientTape() as tape:
        v = tape.watch(rand(3, 4))
        h = np.tanh(v)
        y = np.sum(h * h)
    gh, gv = tape.gradient(y, [h, v])
    np.testing.assert_allclose(gh, 2 * np.tanh(v.data))
    np.testing.assert_allclose(gv, 2 * np.tanh(v.data) * (1 - np.tanh(v.data) ** 2))


def test_fused_lstm_cell_is_lstm_step_bit_for_bit():
    """The fused training cell computes exactly what the generic step computes (the same order of operations)."""
    z, c = (R.standard_normal((4, 4 * 6)) * 3).astype(np.float32), R.standard_normal((4, 6)).astype(np.float32)
    h, c_new = lstm_step(z, c, np.tanh, ops.sigmoid)
    np.testing.assert_array_equal(lstm_cell(z, c), np.concatenate([h, c_new], axis=-1))


def test_fused_gru_cell_is_gru_step_bit_for_bit():
    xp, h = (R.standard_normal((4, 3 * 5)) * 2).astype(np.float32), R.standard_normal((4, 5)).astype(np.float32)
    kernel, bias = R.standard_normal((5, 15)).astype(np.float32), R.standard_normal(15).astype(np.float32)
    expected = gru_step(xp, h, kernel, bias, True, np.tanh, ops.sigmoid)
    np.testing.assert_array_equal(gru_cell(xp, h @ kernel + bias, h), expected)


def _looped_max_grad(x, grad, output, axes, ksize, strides, pads, out):
    """The reference for max pooling's gradient, any geometry: one pass per tap, each window's first maximum
    takes it."""
    from kconvert.ops.pooling import _crop_pads, _lowest, _pad, _tap_slice, _where_or_zero

    xp = _pad(x, axes, pads, _lowest(x.dtype))
    gxp = np.zeros(xp.shape, dtype=grad.dtype)
    taken = np.zeros(output.shape, dtype=bool)
    for tap in np.ndindex(*ksize):
        sl = _tap_slice(x.ndim, axes, tap, strides, out)
        hit = np.equal(xp[sl], output)
        hit &= ~taken
        gxp[sl] += _where_or_zero(hit, grad)
        taken |= hit
    return _crop_pads(gxp, axes, pads)


@pytest.mark.parametrize("ksize,strides,pads,channels_last", [
    ((2, 2), None, None, True),  # tiled: each tap's slice written once
    ((2, 3), None, None, False),
    ((3, 2), (2, 1), ((1, 1), (0, 1)), True),  # overlapping windows with padding: slices added
    ((3,), (2,), ((1, 0),), True),
    ((2, 2, 2), (1, 2, 2), None, False),
])
def test_max_pool_saved_winners_give_the_tap_loop_gradient(ksize, strides, pads, channels_last):
    """forward_saving keeps each window's first maximal tap; the backward pass from it equals the tap loop's
    gradient bit for bit: on distinct values, a ReLU output (all-zero windows tie), half-integers with a NaN
    window (no gradient) and all-equal windows (the first tap takes it), and its output is forward's."""
    from kconvert.ops.pooling import MaxPool, _geometry

    shape = (3, 8, 9, 4) if len(ksize) == 2 else (3, 9, 4) if len(ksize) == 1 else (2, 5, 6, 7, 3)
    x = R.standard_normal(shape).astype(np.float32)
    part = np.round(x * 2) / 2
    part.flat[5] = np.nan
    for case in (x, np.maximum(x, 0), part, np.ones_like(x)):
        if not channels_last:
            case = np.ascontiguousarray(np.moveaxis(case, -1, 1))
        y, won = MaxPool.forward_saving((True,), case, ksize, strides, pads, channels_last)
        np.testing.assert_array_equal(y, MaxPool.forward(case, ksize, strides, pads, channels_last))
        assert won.dtype == np.int8 and won.shape == y.shape
        g = (R.standard_normal(y.shape) * 3).astype(np.float32)
        got = MaxPool.backward(g, (case,), y, ksize, strides, pads, channels_last, saved=won)[0]
        ksz, st, pd, axes, _, out = _geometry(case, ksize, strides, pads, channels_last)
        expected = _looped_max_grad(case, g, y, axes, ksz, st, pd, out)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        assert got.shape == case.shape and got.dtype == np.float32
    assert MaxPool.forward_saving((False,), x, (2,) * (x.ndim - 2))[1] is None  # no gradient asked: nothing kept


@pytest.mark.parametrize("channels_last", [True, False])
def test_max_pool_gradient_fast_path_equals_the_tap_loop(channels_last):
    """MaxPool.backward without saved winners (it finds them itself) on windows that tile the input: the result
    is the tap loop's, bit for bit, with and without ties, and a window holding its maximum twice routes to the
    first tap."""
    from kconvert.ops.pooling import MaxPool, _geometry

    x = R.standard_normal((3, 6, 9, 4)).astype(np.float32)
    relu = np.maximum(x, 0)  # about 1 window in 64 is all zeros (a tie of 6 taps), others tie 2..5 zeros
    part = np.round(x * 2) / 2  # ties between taps in many windows, not all
    part[0, 0, 0, 0] = np.nan  # a NaN window takes no gradient in either path
    tied = np.ones_like(x)  # every window: all taps equal; the first tap takes the gradient
    for case in (x, relu, part, tied):
        has_nan = case is part
        if not channels_last:
            case = np.ascontiguousarray(case.transpose(0, 3, 1, 2))
        y = MaxPool.forward(case, (2, 3), channels_last=channels_last)
        g = R.standard_normal(y.shape).astype(np.float32)
        fast = MaxPool.backward(g, (case,), y, (2, 3), channels_last=channels_last)[0]
        _, strides, pads, axes, _, out = _geometry(case, (2, 3), None, None, channels_last)
        slow = _looped_max_grad(case, g, y, axes, (2, 3), strides, pads, out)
        np.testing.assert_array_equal(fast, slow)
        assert np.count_nonzero(fast) == g.size - has_nan
    first = fast[:, ::2, ::3] if channels_last else fast[:, :, ::2, ::3]
    np.testing.assert_array_equal(first, g)
    assert np.count_nonzero(relu.reshape(3, 3, 2, 3, 3, 4).max(axis=(2, 4)) == 0) > 0  # the ReLU case has a tie
