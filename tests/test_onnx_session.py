"""kconvert.runtime.onnx_session: provider choice (mocked onnxruntime), real sessions, batching, the cache."""

import os
import threading
import time
import types
import warnings

import numpy as np
import onnxruntime as real_ort
import pytest
from conftest import assert_close
from onnx import TensorProto, helper, numpy_helper

from kconvert.errors import ConfigError, FormatError, ShapeError
from kconvert.runtime import OnnxSession, SessionCache, resolve_providers
from kconvert.runtime import onnx_session as osess

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture(autouse=True)
def fresh_probes(monkeypatch):
    monkeypatch.setattr(osess, "ort", real_ort)
    osess.reset_provider_probes()
    yield
    osess.reset_provider_probes()


def collect(fn, *args):
    """(fn(*args), the kconvert RuntimeWarnings it emitted)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [str(w.message) for w in caught
                    if issubclass(w.category, RuntimeWarning) and "kconvert" in str(w.message)]


# --------------------------------------------------------------------------- a fake onnxruntime


class FakeOrt:
    """Stands in for onnxruntime: `behaviour` per provider is 'works', 'silent' (session drops it),
    'raise' (session creation fails after C++-style logging to fd 2) or 'run_fails'."""

    GraphOptimizationLevel = types.SimpleNamespace(ORT_DISABLE_ALL=0, ORT_ENABLE_BASIC=1,
                                                   ORT_ENABLE_EXTENDED=2, ORT_ENABLE_ALL=99)

    class SessionOptions:
        pass

    def __init__(self, listed, behaviour):
        self.listed = list(listed)
        self.behaviour = behaviour
        self.created = []  # provider lists passed to InferenceSession

    def get_available_providers(self):
        return list(self.listed) + [CPU]

    def InferenceSession(self, model, sess_options=None, providers=None, enable_fallback=1):
        assert sess_options.log_severity_level == 3 and enable_fallback == 0
        self.created.append(list(providers))
        kept, run_fails = [], False
        for p in providers:
            mode = self.behaviour.get(p, "works")
            if mode == "raise":
                lib = {CUDA: "cuda", TRT: "tensorrt"}[p]
                os.write(2, f"\x1b[1;31m[E:onnxruntime] Failed to load library libonnxruntime_providers_{lib}.so "
                            f"with error: lib{lib}_missing.so.12: cannot open shared object file\x1b[m\n".encode())
                raise RuntimeError(f"{p} could not be created")
            if mode == "run_fails":
                run_fails = True
            if mode != "silent":
                kept.append(p)

        def run(outputs, feed):
            if run_fails:
                raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
            return [feed["x"] * 2]

        return types.SimpleNamespace(get_providers=lambda: kept, run=run)


def use_fake(monkeypatch, listed, **behaviour):
    fake = FakeOrt(listed, {({"cuda": CUDA, "trt": TRT})[k]: v for k, v in behaviour.items()})
    monkeypatch.setattr(osess, "ort", fake)
    return fake


def test_cuda_listed_and_working_comes_first(monkeypatch):
    fake = use_fake(monkeypatch, [CUDA])
    for device in ["cuda", "CUDA", "gpu", "auto", " Auto "]:
        providers, warned = collect(resolve_providers, device)
        assert providers == [CUDA, CPU] and warned == []
    assert resolve_providers("cpu") == [CPU]
    assert fake.created == [[CUDA, CPU]]  # probed once per process


@pytest.mark.parametrize("mode", ["silent", "raise", "run_fails"])
def test_cuda_listed_but_broken_falls_back_with_one_line(monkeypatch, capfd, mode):
    fake = use_fake(monkeypatch, [TRT, CUDA], cuda=mode)
    results, messages = [], []
    for device in ["cuda", "auto", "gpu", "cuda"]:
        providers, warned = collect(resolve_providers, device)
        results.append(providers)
        messages += warned
    assert results == [[CPU]] * 4
    assert len(messages) == 1, messages
    assert messages[0].startswith("kconvert: CUDAExecutionProvider is listed by onnxruntime but does not work here (")
    assert messages[0].endswith("; running on CPU") and "\n" not in messages[0]
    reason = {"silent": "silently used ['CPUExecutionProvider']",
              "raise": "libcuda_missing.so.12: cannot open shared object file",
              "run_fails": "CUDA failure 100"}[mode]
    assert reason in messages[0]
    assert len(fake.created) == 1
    assert "Failed to load library" not in capfd.readouterr().err  # onnxruntime's C++ log is swallowed


def test_cuda_not_listed_is_silent_for_auto(monkeypatch):
    fake = use_fake(monkeypatch, [])
    assert collect(resolve_providers, "auto") == ([CPU], [])
    assert fake.created == []  # nothing listed: nothing to probe
    providers, warned = collect(resolve_providers, "cuda")  # an explicit request that cannot be met says so
    assert providers == [CPU] and len(warned) == 1 and "not available in this onnxruntime" in warned[0]


def test_tensorrt_only_on_request(monkeypatch):
    use_fake(monkeypatch, [TRT, CUDA])
    assert collect(resolve_providers, "auto") == ([CUDA, CPU], [])
    assert collect(resolve_providers, "cuda") == ([CUDA, CPU], [])
    assert collect(resolve_providers, "TensorRT") == ([TRT, CUDA, CPU], [])


def test_auto_never_picks_tensorrt_even_when_cuda_alone_fails(monkeypatch):
    use_fake(monkeypatch, [TRT, CUDA], cuda="silent")
    providers, warned = collect(resolve_providers, "auto")
    assert providers == [CPU] and len(warned) == 1 and TRT not in warned[0]


def test_tensorrt_falls_back_to_cuda_then_cpu(monkeypatch):
    use_fake(monkeypatch, [TRT, CUDA], trt="raise")
    providers, warned = collect(resolve_providers, "tensorrt")
    assert providers == [CUDA, CPU]
    assert len(warned) == 1 and "libtensorrt_missing.so.12" in warned[0]
    assert warned[0].endswith("running on CUDAExecutionProvider")
    assert collect(resolve_providers, "tensorrt") == ([CUDA, CPU], [])

    osess.reset_provider_probes()
    use_fake(monkeypatch, [TRT, CUDA], trt="raise", cuda="raise")
    providers, warned = collect(resolve_providers, "tensorrt")
    assert providers == [CPU] and len(warned) == 1
    assert TRT in warned[0] and CUDA in warned[0] and warned[0].endswith("running on CPU")


@pytest.mark.parametrize("device", ["tpu", "", "cuda:0", None, 3])
def test_unknown_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_providers(device)


# --------------------------------------------------------------------------- real onnxruntime

H, W, C = 3, 5, 7


def matmul_add_model(batch, rng):
    """y = x @ k + b with x (batch, H, W), k (W, C); batch is 'N' (symbolic) or an int."""
    k = (rng.standard_normal((W, C)) / np.sqrt(W)).astype(np.float32)
    b = (0.1 * rng.standard_normal(C)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "k"], ["xk"]), helper.make_node("Add", ["xk", "b"], ["y"])],
        "matmul_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, H, C])],
        [numpy_helper.from_array(k, "k"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, (lambda x: np.asarray(x, np.float32) @ k + b)


def two_input_model():
    """s = a + b (float, (N, 4)) and t = i * 2 (int64, (N, 2))."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Add", ["i", "i"], ["t"])],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("i", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("t", TensorProto.INT64, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class RunSpy:
    """Wraps an InferenceSession to record what each run was fed."""

    def __init__(self, session):
        self.session, self.feeds = session, []

    def run(self, output_names, feed):
        assert output_names is None
        self.feeds.append(feed)
        return self.session.run(output_names, feed)


def spied(session):
    session.session = RunSpy(session.session)
    return session.session


def test_run_matches_numpy_and_reports_the_session(rng):
    model, ref = matmul_add_model("N", rng)
    s = OnnxSession(model, device="cpu")
    assert s.input_names == ["x"] and s.output_names == ["y"]
    assert s.input_shapes == [(None, H, W)] and s.providers == [CPU]
    x = rng.standard_normal((2, H, W)).astype(np.float32)
    spy = spied(s)
    (y_list,) = s.run([x])
    (y_dict,) = s.run({"x": x})
    (y_array,) = s.run(x)
    assert y_list.shape == (2, H, C)
    assert_close(y_list, ref(x))
    np.testing.assert_array_equal(y_list, y_dict)
    np.testing.assert_array_equal(y_list, y_array)
    assert all(f["x"] is x for f in spy.feeds)  # already float32 and contiguous: passed without a copy


def test_dtype_conversion_to_declared_types(rng):
    s = OnnxSession(two_input_model().SerializeToString())
    a = rng.standard_normal((3, 4))  # float64
    b = np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))  # not C-contiguous
    i = rng.integers(-50, 50, (3, 2)).astype(np.int32)
    spy = spied(s)
    out_s, out_t = s.run({"i": i, "b": b, "a": a})
    fed = spy.feeds[0]
    assert fed["a"].dtype == np.float32 and fed["i"].dtype == np.int64 and fed["b"].flags.c_contiguous
    assert_close(out_s, a.astype(np.float32) + b)
    assert out_t.dtype == np.int64
    np.testing.assert_array_equal(out_t, 2 * i.astype(np.int64))
    out_s2, out_t2 = s.run([a.tolist(), b, i.tolist()])  # nested lists are converted too
    np.testing.assert_array_equal(out_s, out_s2)
    np.testing.assert_array_equal(out_t, out_t2)


def test_predict_chunks_symbolic_batch(rng):
    model, ref = matmul_add_model("N", rng)
    s = OnnxSession(model)
    x = rng.standard_normal((11, H, W))
    spy = spied(s)
    (y,) = s.predict(x, batch_size=4)
    assert [f["x"].shape[0] for f in spy.feeds] == [4, 4, 3]
    assert y.shape == (11, H, C)
    assert_close(y, ref(x))
    spy.feeds.clear()
    (y_whole,) = s.predict([x])
    assert len(spy.feeds) == 1
    assert_close(y_whole, y)


def test_predict_fixed_batch_pads_and_trims(rng):
    model, ref = matmul_add_model(3, rng)
    s = OnnxSession(model)
    assert s.input_shapes == [(3, H, W)] and s.fixed_batch() == 3
    x = rng.standard_normal((7, H, W)).astype(np.float32)
    spy = spied(s)
    (y,) = s.predict(x, batch_size=5)  # the model's fixed batch wins
    assert [f["x"].shape for f in spy.feeds] == [(3, H, W)] * 3
    last = spy.feeds[-1]["x"]
    np.testing.assert_array_equal(last[:1], x[6:])
    assert not last[1:].any()  # padded with zeros
    assert y.shape == (7, H, C)
    assert_close(y, ref(x))
    with pytest.raises(ShapeError, match="input 'x' expects shape \\(3, 3, 5\\)"):
        s.run(x)


def test_predict_multiple_inputs_and_outputs(rng):
    s = OnnxSession(two_input_model())
    a, b = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    i = rng.integers(-9, 9, (9, 2))
    out_s, out_t = s.predict({"a": a, "b": b, "i": i}, batch_size=2)
    assert_close(out_s, a + b)
    np.testing.assert_array_equal(out_t, 2 * i)
    with pytest.raises(ShapeError, match="different batch sizes"):
        s.predict([a, b[:8], i])
    with pytest.raises(ConfigError, match="batch_size"):
        s.predict([a, b, i], batch_size=0)


def test_options_reach_the_session(rng):
    model, _ = matmul_add_model("N", rng)
    s = OnnxSession(model, intra_op_threads=1, inter_op_threads=2, optimization_level="basic")
    opts = s.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 2
    assert opts.graph_optimization_level == real_ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for level, want in [("disable", "ORT_DISABLE_ALL"), ("Extended", "ORT_ENABLE_EXTENDED"), ("all", "ORT_ENABLE_ALL")]:
        got = OnnxSession(model, optimization_level=level).session.get_session_options().graph_optimization_level
        assert got == getattr(real_ort.GraphOptimizationLevel, want)
    with pytest.raises(ConfigError, match="optimization_level"):
        OnnxSession(model, optimization_level="max")
    with pytest.raises(ConfigError, match="intra_op_num_threads"):
        OnnxSession(model, intra_op_threads=-1)


def test_options_set_on_session_options_with_a_spy(monkeypatch):
    fake = use_fake(monkeypatch, [])
    seen = {}

    def session(model, sess_options=None, providers=None, enable_fallback=1):
        seen.update(vars(sess_options), providers=providers, enable_fallback=enable_fallback)
        raise RuntimeError("stop here")

    fake.InferenceSession = session
    with pytest.raises(FormatError, match="stop here"):
        OnnxSession(b"model", device="cpu", intra_op_threads=3, inter_op_threads=1, optimization_level="extended")
    assert seen == {"graph_optimization_level": 2, "log_severity_level": 3, "intra_op_num_threads": 3,
                    "inter_op_num_threads": 1, "providers": [CPU], "enable_fallback": 0}


def test_models_onnxruntime_refuses_are_format_errors(rng, tmp_path):
    with pytest.raises(FormatError, match="onnxruntime cannot load the model: .*INVALID_PROTOBUF"):
        OnnxSession(b"\x08\x07 not an onnx model")
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    bad.ir_version = 8
    with pytest.raises(FormatError, match="NoSuchOp"):
        OnnxSession(bad)
    missing = tmp_path / "missing.onnx"
    with pytest.raises(FormatError, match="missing.onnx: no such file"):
        OnnxSession(missing)
    path = tmp_path / "model.onnx"
    model, ref = matmul_add_model("N", rng)
    path.write_bytes(model.SerializeToString())
    x = rng.standard_normal((2, H, W)).astype(np.float32)
    assert_close(OnnxSession(str(path)).run([x])[0], ref(x))
    path.write_bytes(b"garbage")
    with pytest.raises(FormatError, match="model.onnx: onnxruntime cannot load"):
        OnnxSession(path)


def test_bad_feeds_are_shape_errors(rng):
    model, _ = matmul_add_model("N", rng)
    s = OnnxSession(model)
    x = rng.standard_normal((2, H, W)).astype(np.float32)
    with pytest.raises(ShapeError, match="unknown input.*'z'"):
        s.run({"z": x})
    with pytest.raises(ShapeError, match="takes 1 input"):
        s.run([x, x])
    with pytest.raises(ShapeError, match="input 'x' expects rank 3"):
        s.predict(x[0])
    with pytest.raises(ShapeError, match="input 'x' expects shape"):
        s.run(rng.standard_normal((2, W, H)))
    with pytest.raises(ShapeError, match="no value fed for input.*'b'"):
        OnnxSession(two_input_model()).run({"a": np.zeros((1, 4)), "i": np.zeros((1, 2))})


def test_real_onnxruntime_cuda_request_on_this_machine(rng, capfd):
    """onnxruntime-gpu without a GPU or CUDA libraries lists CUDA: one line, then CPU."""
    model, ref = matmul_add_model("N", rng)
    (s, warned) = collect(OnnxSession, model, "cuda")
    again = [collect(resolve_providers, d) for d in ["cuda", "auto", "gpu"]]
    x = rng.standard_normal((2, H, W)).astype(np.float32)
    assert_close(s.run([x])[0], ref(x))
    works, reason = osess.probe_provider(CUDA)
    if CUDA not in real_ort.get_available_providers():  # plain onnxruntime: nothing to say
        assert s.providers == [CPU] and len(warned) == 1 and "not available" in warned[0]
    elif works:
        assert s.providers[0] == CUDA and warned == []
    else:
        assert s.providers == [CPU] and reason
        assert warned == [f"kconvert: {CUDA} is listed by onnxruntime but does not work here ({reason}); running on CPU"]
        assert again == [([CPU], [])] * 3
        assert "Failed to load library" not in capfd.readouterr().err


# --------------------------------------------------------------------------- the cache


def test_session_cache_is_lru_and_builds_once():
    cache = SessionCache()
    built = []

    def factory(key):
        def make():
            built.append(key)
            return object()
        return make

    first = {k: cache.get(k, factory(k)) for k in "abcd"}
    assert cache.get("a", factory("a")) is first["a"]  # cached: factory not called; 'a' becomes newest
    assert built == list("abcd")
    cache.get("e", factory("e"))  # evicts 'b', the least recently used
    assert len(cache) == 4 and "b" not in cache and "a" in cache
    assert cache.get("b", factory("b")) is not first["b"]
    assert built == list("abcdeb") and "c" not in cache
    cache.clear()
    assert len(cache) == 0
    cache.get("a", factory("a"))
    assert built[-1] == "a"


def test_session_cache_is_thread_safe():
    cache = SessionCache()
    built = []

    def make():
        built.append(1)
        time.sleep(0.02)
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(("model", 1), make))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(got) == 8 and all(g is got[0] for g in got)
