"""The ONNX surface: `kconvert keras2onnx`, `keras_to_onnx`, `Model.to_onnx`, and `Model.predict` on onnxruntime."""

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.cli import main
from kconvert.convert import keras_to_onnx
from kconvert.formats import onnx_file
from kconvert.layers import Dense, Input, Layer
from kconvert.runtime import numpy_engine

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CONV = os.path.join(FIXTURES, "keras2", "conv2d_cl")


def _ort(path_or_proto):
    data = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _expected():
    io = np.load(CONV + "_io.npz")
    return io["input_0"], [io[f"output_{i}"] for i in range(3)]


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_keras2onnx_writes_a_model_that_predicts_tf_keras_outputs(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["keras2onnx", CONV + ".h5", "-o", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "ok" in printed and "OVER" not in printed
    x, refs = _expected()
    for y, ref in zip(_ort(str(out)).run(None, {"image": x}), refs):
        assert_close(y, ref)


def test_cli_config_plus_weights_fixed_batch_and_nchw(tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["keras2onnx", CONV + ".json", "--weights", CONV + "_weights.h5", "-o", str(out), "--batch", "3",
                 "--inputs-as-nchw", "--check"]) == 0
    sess = _ort(str(out))
    assert sess.get_inputs()[0].shape == [3, 3, 13, 10]
    x, refs = _expected()
    for y, ref in zip(sess.run(None, {"image": np.transpose(x, (0, 3, 1, 2))}), refs):
        assert_close(y, ref)


def test_cli_check_input_file(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    np.save(tmp_path / "x.npy", _expected()[0])
    assert main(["keras2onnx", CONV + ".h5", "-o", str(out), "--check", "--check-input",
                 str(tmp_path / "x.npy")]) == 0
    assert capsys.readouterr().out.count(" ok") == 3


@pytest.mark.parametrize("args, message", [
    (["--opset", "12"], "opset 12"),
    (["--weights", "/nonexistent.h5"], "nonexistent"),
])
def test_cli_errors_are_one_line_and_exit_1(tmp_path, capsys, args, message):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    assert main(["keras2onnx", CONV + ".h5", "-o", str(out), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert out.read_bytes() == b"previous"  # a failed conversion leaves the existing output untouched


def test_cli_config_without_weights_is_an_error(tmp_path, capsys):
    assert main(["keras2onnx", CONV + ".json", "-o", str(tmp_path / "m.onnx")]) == 1
    assert "weights" in capsys.readouterr().err


def test_cli_unsafe_lambda_needs_the_flag(tmp_path, tfk, capsys):
    """A tf_keras Lambda holds bytecode: refused without --unsafe, converted with it."""
    inp = tfk.Input((5,))
    model = tfk.Model(inp, tfk.layers.Lambda(lambda t: t * 3.0 + 1.0)(tfk.layers.Dense(4)(inp)))
    path = str(tmp_path / "lam.h5")
    model.save(path)
    out = str(tmp_path / "lam.onnx")
    assert main(["keras2onnx", path, "-o", out]) == 1
    assert "safe" in capsys.readouterr().err.lower()
    assert main(["keras2onnx", path, "-o", out, "--unsafe", "--check"]) == 0  # the Lambda is traced
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    sess = _ort(out)
    assert_close(sess.run(None, {sess.get_inputs()[0].name: x})[0], model.predict(x, verbose=0))


# ---------------------------------------------------------------------------------------------- library


def test_keras_to_onnx_and_model_to_onnx_agree(tmp_path):
    model = kconvert.load_model(CONV + ".h5")
    a = keras_to_onnx(CONV + ".h5", tmp_path / "a.onnx")
    b = model.to_onnx(str(tmp_path / "b.onnx"), opset=17)
    assert os.path.exists(tmp_path / "a.onnx") and os.path.exists(tmp_path / "b.onnx")
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    onnx.checker.check_model(str(tmp_path / "a.onnx"), full_check=True)
    assert a.opset_import[0].version == 17 and a.ir_version <= onnx.IR_VERSION


def test_external_data_round_trip(tmp_path, monkeypatch):
    """Models over the protobuf limit go to external data; forced here by lowering the threshold."""
    monkeypatch.setattr(onnx_file, "EXTERNAL_DATA_THRESHOLD", 1000)
    model = kconvert.load_model(CONV + ".h5")
    path = tmp_path / "big.onnx"
    model.to_onnx(str(path))
    assert os.path.exists(str(path) + ".data")
    stored = onnx.load(str(path), load_external_data=False)
    external = [t for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(not t.raw_data for t in external)
    x, refs = _expected()
    for y, ref in zip(_ort(str(path)).run(None, {"image": x}), refs):
        assert_close(y, ref)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".kconvert")]


# ---------------------------------------------------------------------------------------------- predict


def _mlp(rng):
    x = Input((6,))
    model = kconvert.Model(x, Dense(3, activation="tanh")(Dense(5, activation="relu")(x)))
    for w in model.weights:
        w.assign(rng.standard_normal(w.shape).astype(np.float32))
    return model


def test_predict_runs_on_onnxruntime_by_default(rng):
    model = _mlp(rng)
    x = rng.standard_normal((70, 6)).astype(np.float32)
    y = model.predict(x)
    assert model._predictor is not None and model._predictor._session is not None
    assert_close(y, model.predict(x, runtime="numpy"))
    assert_close(y, numpy_engine.predict(model._graph, [x])[0])
    assert_close(model.predict_on_batch(x[:3]), y[:3])


def test_predict_session_is_cached_and_invalidated_by_new_weights(rng):
    model = _mlp(rng)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y1 = model.predict(x)
    session = model._predictor._session
    model.predict(x)
    assert model._predictor._session is session
    weights = model.get_weights()
    weights[-1] = weights[-1] + 1.0
    model.set_weights(weights)
    y2 = model.predict(x)
    assert model._predictor._session is not session
    assert_close(y2, numpy_engine.predict(model._graph, [x])[0])
    assert np.abs(y2 - y1).max() > 1e-3


def test_predict_falls_back_to_numpy_with_one_warning(rng):
    class Sign(Layer):  # Python control flow on values: no ONNX form
        def call(self, inputs):
            return inputs if float(np.asarray(inputs).sum()) > 0 else -inputs

    x = Input((4,))
    model = kconvert.Model(x, Sign(name="sign")(Dense(4)(x)))
    xv = rng.standard_normal((3, 4)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = model.predict(xv)
        model.predict(xv)
    messages = [str(w.message) for w in caught if "numpy engine" in str(w.message)]
    assert len(messages) == 1 and "sign" in messages[0]
    assert_close(y, model.predict(xv, runtime="numpy"))


def test_unknown_runtime_is_a_config_error(rng):
    with pytest.raises(kconvert.errors.ConfigError, match="runtime"):
        _mlp(rng).predict(np.zeros((1, 6), np.float32), runtime="tensorflow")


def test_dynamic_spatial_sizes(tmp_path, rng):
    """A fully convolutional net exported with --dynamic runs at other image sizes (odd, strides not dividing)."""
    from kconvert.layers import Conv2D, GlobalAveragePooling2D, MaxPooling2D

    x = Input((16, 12, 3), name="img")
    y = Conv2D(5, 3, strides=2, padding="same", activation="relu")(x)
    y = MaxPooling2D(3, strides=2, padding="same")(y)
    y = Dense(4)(GlobalAveragePooling2D()(y))
    model = kconvert.Model(x, y)
    for w in model.weights:
        w.assign((rng.standard_normal(w.shape) * 0.5).astype(np.float32))
    path = str(tmp_path / "dyn.onnx")
    assert main(["keras2onnx", "--dynamic", "-o", path, "--check", _save(model, tmp_path)]) == 0
    sess = _ort(path)
    assert sess.get_inputs()[0].shape[1:3] == ["img_dim1", "img_dim2"]
    for h, w in ((16, 12), (23, 9), (7, 30)):
        xv = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        ref = numpy_engine.run_graph(model._graph, [xv])[0][0]
        assert_close(sess.run(None, {"img": xv})[0], ref, what=f"{h}x{w}")


def test_dynamic_falls_back_to_fixed_sizes_with_a_warning(tmp_path, capsys):
    path = str(tmp_path / "fixed.onnx")
    assert main(["keras2onnx", "--dynamic", "-o", path, CONV + ".h5"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "fixed" in err and "head" in err
    assert _ort(path).get_inputs()[0].shape[1:] == [13, 10, 3]


def _save(model, tmp_path) -> str:
    path = str(tmp_path / "model.h5")
    model.save(path)
    return path


@pytest.mark.parametrize("runtime", ["onnx", "numpy"])
def test_cli_predict_runtime(runtime, capsys):
    code = main(["predict", CONV + ".h5", "--input", CONV + "_io.npz", "--expect", CONV + "_io.npz",
                 "--runtime", runtime, "--device", "cpu"])
    assert code == 0
    assert capsys.readouterr().out.count("(ok)") == 3


def test_stateful_predict_carries_states_through_onnxruntime(rng):
    """Stateful LSTM and Bidirectional GRU: predict on ONNX feeds each state in and keeps what comes out, batch
    after batch and across calls, equal to the numpy engine; reset_states starts again from zeros."""
    from kconvert.layers import GRU, LSTM, Bidirectional

    def build():
        x = Input(batch_shape=(3, 5, 4))
        h = LSTM(6, stateful=True, return_sequences=True, name="lstm")(x)
        model = kconvert.Model(x, Bidirectional(GRU(5, stateful=True), name="bi")(h))
        return model

    a, b = build(), build()
    b.set_weights([w.value for w in a.weights])
    for w_a, w_b in zip(a.weights, b.weights):
        values = (rng.standard_normal(w_a.shape) * 0.5).astype(np.float32)
        w_a.assign(values)
        w_b.assign(values)
    x1, x2 = (rng.standard_normal((6, 5, 4)).astype(np.float32) for _ in range(2))
    for xv in (x1, x2):  # two batches per call, two calls: the state runs through all four
        got, ref = a.predict(xv, batch_size=3), b.predict(xv, batch_size=3, runtime="numpy")
        assert_close(got, ref)
    assert a._predictor._session is not None and len(a._predictor._session.state_slots) == 4
    a.reset_states()
    b.reset_states()
    assert_close(a.predict(x1, batch_size=3), b.predict(x1, batch_size=3, runtime="numpy"))
