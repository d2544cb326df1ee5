"""kconvert.backend against tf_keras.backend: every function on the same inputs, values and dtypes."""

import inspect

import numpy as np
import pytest
from conftest import assert_close

from kconvert import backend as K

R = np.random.default_rng(7)
X4 = R.normal(0.0, 1.5, (2, 5, 7, 3)).astype(np.float32)  # batch, H, W, C
X4_CF = np.ascontiguousarray(X4.transpose(0, 3, 1, 2))
X3 = R.normal(0.0, 1.5, (3, 5, 4)).astype(np.float32)
Y3 = R.normal(0.0, 1.5, (3, 4, 6)).astype(np.float32)
X2 = R.normal(0.0, 1.5, (3, 7)).astype(np.float32)
Y2 = R.normal(0.0, 1.5, (3, 7)).astype(np.float32)
W2 = R.normal(0.0, 1.0, (4, 6)).astype(np.float32)
POS = R.uniform(0.2, 3.0, (3, 5, 4)).astype(np.float32)
V5 = R.normal(0.0, 1.5, (2, 3, 5, 7, 3)).astype(np.float32)
ROUNDED = np.round(X3)  # many equal pairs for the comparisons
IDS = np.array([[0, 4, 2], [6, 1, 4]], np.int32)
COND2 = R.normal(size=(3, 5)) > 0
BIAS = R.normal(size=(3,)).astype(np.float32)

# (id, function name, positional args, keyword args); numpy arrays become tf constants for tf_keras
CASES = [
    ("resize_images_nearest", "resize_images", (X4, 2, 3, "channels_last"), {}),
    ("resize_images_bilinear", "resize_images", (X4, 3, 2, "channels_last"), {"interpolation": "bilinear"}),
    ("resize_images_cf", "resize_images", (X4_CF, 2, 2, "channels_first"), {"interpolation": "bilinear"}),
    ("resize_volumes", "resize_volumes", (V5, 2, 1, 3, "channels_last"), {}),
    ("concatenate", "concatenate", ([X2, Y2],), {}),
    ("concatenate_axis0", "concatenate", ([X3, POS],), {"axis": 0}),
    ("stack", "stack", ([X2, Y2],), {"axis": 1}),
    ("mean", "mean", (X3,), {}),
    ("mean_axis", "mean", (X3,), {"axis": 1, "keepdims": True}),
    ("mean_bool", "mean", (X3 > 0,), {"axis": [0, 2]}),
    ("sum", "sum", (X3,), {"axis": -1}),
    ("max", "max", (X4,), {"axis": (1, 2)}),
    ("min", "min", (X3,), {"axis": 1, "keepdims": True}),
    ("prod", "prod", (POS,), {"axis": 2}),
    ("std", "std", (X3,), {"axis": 1}),
    ("var", "var", (X3,), {"axis": -1, "keepdims": True}),
    ("var_all", "var", (X4,), {}),
    ("square", "square", (X3,), {}),
    ("sqrt", "sqrt", (X3,), {}),  # negative inputs are clipped to 0
    ("exp", "exp", (X3,), {}),
    ("log", "log", (POS,), {}),
    ("abs", "abs", (X3,), {}),
    ("pow_int", "pow", (X3, 3), {}),
    ("pow_float", "pow", (POS, 1.5), {}),
    ("clip", "clip", (X3, -0.5, 0.7), {}),
    ("clip_max_below_min", "clip", (X3, 0.5, -1.0), {}),
    ("clip_none", "clip", (X3, None, 0.3), {}),
    ("expand_dims", "expand_dims", (X3, 1), {}),
    ("expand_dims_default", "expand_dims", (X3,), {}),
    ("squeeze", "squeeze", (X4[:, :, :1], 2), {}),
    ("reshape", "reshape", (X4, (-1, 7 * 3)), {}),
    ("permute_dimensions", "permute_dimensions", (X4, (0, 3, 1, 2)), {}),
    ("transpose", "transpose", (X3,), {}),
    ("repeat_elements", "repeat_elements", (X3, 3, 1), {}),
    ("repeat", "repeat", (X2, 4), {}),
    ("tile", "tile", (X3, [2, 1, 3]), {}),
    ("tile_int", "tile", (BIAS, 3), {}),
    ("flatten", "flatten", (X3,), {}),
    ("batch_flatten", "batch_flatten", (X4,), {}),
    ("reverse", "reverse", (X3, [1, 2]), {}),
    ("l2_normalize", "l2_normalize", (X3,), {"axis": -1}),
    ("l2_normalize_all", "l2_normalize", (X3,), {}),
    ("dot_2d", "dot", (X2, X2.T.copy()), {}),
    ("dot_nd", "dot", (X3, Y3[0]), {}),
    ("dot_3d_3d", "dot", (X3, Y3), {}),
    ("batch_dot", "batch_dot", (X3, Y3), {}),
    ("batch_dot_2d", "batch_dot", (X2, Y2), {}),
    ("batch_dot_axes", "batch_dot", (X3, POS), {"axes": (1, 1)}),
    ("batch_dot_3d_2d", "batch_dot", (X3, X2[:, :4]), {"axes": (2, 1)}),
    ("softmax", "softmax", (X3,), {}),
    ("softmax_axis", "softmax", (X3,), {"axis": 1}),
    ("sigmoid", "sigmoid", (X3,), {}),
    ("hard_sigmoid", "hard_sigmoid", (X3 * 2,), {}),
    ("tanh", "tanh", (X3,), {}),
    ("relu", "relu", (X3,), {}),
    ("relu_full", "relu", (X3,), {"alpha": 0.1, "max_value": 2.0, "threshold": 0.3}),
    ("relu6", "relu", (X3 * 4,), {"max_value": 6}),
    ("relu_leaky", "relu", (X3,), {"alpha": 0.2}),
    ("elu", "elu", (X3,), {}),
    ("elu_alpha", "elu", (X3,), {"alpha": 0.5}),
    ("softplus", "softplus", (X3,), {}),
    ("softsign", "softsign", (X3,), {}),
    ("argmax", "argmax", (X3,), {}),
    ("argmin", "argmin", (X3,), {"axis": 1}),
    ("cast_int", "cast", (X3 * 3, "int32"), {}),
    ("cast_half", "cast", (X3, "float16"), {}),
    ("int_shape", "int_shape", (X4,), {}),
    ("shape", "shape", (X4,), {}),
    ("ndim", "ndim", (X4,), {}),
    ("dtype", "dtype", (X3,), {}),
    ("count_params", "count_params", (X4,), {}),
    ("ones_like", "ones_like", (X3,), {}),
    ("zeros_like", "zeros_like", (X3,), {"dtype": "int32"}),
    ("ones", "ones", ((3, 5),), {}),
    ("zeros", "zeros", ((2, 7),), {"dtype": "int32"}),
    ("eye", "eye", (5,), {}),
    ("arange", "arange", (7,), {}),
    ("arange_step", "arange", (2, 11, 3), {"dtype": "float32"}),
    ("epsilon", "epsilon", (), {}),
    ("floatx", "floatx", (), {}),
    ("image_data_format", "image_data_format", (), {}),
    ("learning_phase", "learning_phase", (), {}),
    ("gather", "gather", (X2.T.copy(), IDS), {}),
    ("one_hot", "one_hot", (IDS, 7), {}),
    ("one_hot_out_of_range", "one_hot", (IDS, 5), {}),
    ("maximum", "maximum", (X3, POS), {}),
    ("minimum", "minimum", (X3, 0.25), {}),
    ("equal", "equal", (ROUNDED, ROUNDED[:, :, ::-1].copy()), {}),
    ("not_equal", "not_equal", (ROUNDED, ROUNDED[:, :, ::-1].copy()), {}),
    ("greater", "greater", (X3, POS - 1), {}),
    ("greater_equal", "greater_equal", (ROUNDED, 0.0), {}),
    ("less", "less", (X3, POS - 1), {}),
    ("less_equal", "less_equal", (ROUNDED, 0.0), {}),
    ("switch_scalar", "switch", (np.array(False), X3, POS), {}),
    ("switch_same_rank", "switch", (X3 > 0, X3, POS), {}),
    ("switch_lower_rank", "switch", (COND2, X3, POS), {}),
    ("cumsum", "cumsum", (X3,), {"axis": 1}),
    ("cumsum_default", "cumsum", (X3,), {}),
    ("cumprod", "cumprod", (POS,), {"axis": 2}),
    ("round", "round", (X3 * 2,), {}),
    ("sign", "sign", (ROUNDED,), {}),
    ("cos", "cos", (X3,), {}),
    ("sin", "sin", (X3,), {}),
    ("any", "any", (X3 > 1.5,), {"axis": 1}),
    ("all", "all", (X3 > -1.5,), {"axis": -1, "keepdims": True}),
    ("bias_add", "bias_add", (X4, BIAS), {}),
    ("bias_add_cf", "bias_add", (X4_CF, BIAS), {"data_format": "channels_first"}),
    ("bias_add_nd", "bias_add", (X4, R.normal(size=(5, 7, 3)).astype(np.float32)), {}),
    ("bias_add_nd_cf", "bias_add", (X4_CF, R.normal(size=(5, 7, 3)).astype(np.float32)),
     {"data_format": "channels_first"}),
    ("temporal_padding", "temporal_padding", (X3, (1, 2)), {}),
    ("spatial_2d_padding", "spatial_2d_padding", (X4, ((1, 0), (2, 3))), {}),
    ("spatial_2d_padding_cf", "spatial_2d_padding", (X4_CF, ((0, 1), (1, 1))), {"data_format": "channels_first"}),
    ("in_train_phase", "in_train_phase", (X3, POS), {}),
    ("in_train_phase_training", "in_train_phase", (X3, POS), {"training": 1}),
    ("in_test_phase", "in_test_phase", (X3, POS), {}),
    ("constant", "constant", (2.5,), {"shape": (3, 5)}),
    ("constant_list", "constant", ([[1, 2, 3], [4, 5, 6]],), {"shape": (3, 2)}),
    ("constant_int", "constant", ([1, 2],), {"dtype": "int32"}),
    ("variable", "variable", (X2,), {}),
    ("get_value", "get_value", (X2,), {}),
    ("eval", "eval", (X2,), {}),
    ("batch_get_value", "batch_get_value", ([X2, X3],), {}),
]

# functions with no computed value (configuration, session state) are checked by hand below
_STATEFUL = {"set_epsilon", "set_floatx", "set_image_data_format", "clear_session", "backend", "is_tensor"}


def _to_tf(v):
    import tensorflow as tf

    if isinstance(v, np.ndarray):
        return tf.constant(v)
    if isinstance(v, list) and v and isinstance(v[0], np.ndarray):
        return [tf.constant(a) for a in v]
    return v


def _np(v):
    if isinstance(v, (list, tuple)) and v and not isinstance(v[0], (int, float, type(None))):
        return [_np(a) for a in v]
    if hasattr(v, "numpy"):
        return v.numpy()
    return v


def _assert_same(ours, ref, what):
    if isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref), what
        for o, r in zip(ours, ref):
            _assert_same(o, r, what)
        return
    if isinstance(ref, (str, tuple, int, float)) and not isinstance(ref, bool):
        assert ours == ref, f"{what}: {ours!r} != {ref!r}"
        return
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != {ref.dtype}"
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    if ref.dtype.kind == "f":
        assert_close(ours, ref, what=what)
    else:
        np.testing.assert_array_equal(ours, ref, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_tf_keras(tfk, case):
    _, name, args, kwargs = case
    ref = getattr(tfk.backend, name)(*[_to_tf(a) for a in args], **kwargs)
    ours = getattr(K, name)(*args, **kwargs)
    _assert_same(ours, _np(ref), name)


def test_every_public_function_is_compared():
    public = {n for n, v in vars(K).items() if inspect.isfunction(v) and not n.startswith("_")
              and v.__module__ == K.__name__}
    untested = public - {c[1] for c in CASES} - _STATEFUL
    assert not untested, f"backend functions without a tf_keras comparison: {sorted(untested)}"


def test_inputs_are_not_modified():
    x = X3.copy()
    for name in ("sqrt", "clip", "relu", "l2_normalize", "softmax", "switch"):
        args = {"clip": (x, 0, 1), "switch": (x > 0, x, x * 2)}.get(name, (x,))
        getattr(K, name)(*args)
    np.testing.assert_array_equal(x, X3)


def test_switch_callables_and_rank_error(tfk):
    import tensorflow as tf

    ours = K.switch(np.array(True), lambda: X3 * 2, lambda: POS)
    ref = tfk.backend.switch(tf.constant(True), lambda: tf.constant(X3) * 2, lambda: tf.constant(POS))
    assert_close(ours, ref.numpy())
    with pytest.raises(ValueError, match="rank"):
        K.switch(X3 > 0, X2, Y2)


def test_configuration_round_trips(tfk):
    assert K.backend() == "numpy"
    assert K.is_tensor(X3) and not K.is_tensor([1.0])
    try:
        K.set_epsilon(1e-5)
        K.set_floatx("float64")
        K.set_image_data_format("channels_first")
        assert (K.epsilon(), K.floatx(), K.image_data_format()) == (1e-5, "float64", "channels_first")
        assert K.variable([1, 2]).dtype == np.float64
        assert_close(K.bias_add(X4_CF, BIAS), tfk.backend.bias_add(X4_CF, BIAS, data_format="channels_first"))
        with pytest.raises(ValueError):
            K.set_floatx("float8")
        with pytest.raises(ValueError):
            K.set_image_data_format("nhwc")
    finally:
        K.set_epsilon(1e-7)
        K.set_floatx("float32")
        K.set_image_data_format("channels_last")


def test_clear_session_runs_reset_hooks():
    from kconvert.layers import Dense

    K.clear_session()
    assert Dense(2).name == "dense"
    assert Dense(2).name == "dense_1"
    K.clear_session()  # the layer-name counters are one of the registered hooks
    assert Dense(2).name == "dense"


def test_unsupported_resize_interpolation_is_named():
    with pytest.raises(ValueError, match="bicubic"):
        K.resize_images(X4, 2, 2, "channels_last", interpolation="bicubic")
