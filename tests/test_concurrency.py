"""Threads and processes working on the same models and files get what one sequential run gets.

- 8 threads predicting with one kconvert Model at once (numpy engine and onnxruntime, whose session is built once,
  under a lock, however many threads ask for it first) return exactly the sequential results, which match tf_keras.
- Threads loading the same .h5/.keras/prototxt files and converting them (to ONNX, Caffe, Keras) to different
  outputs get identical models and identical bytes.
- Processes (multiprocessing, spawn) writing one output path at once leave one complete output, the last writer's,
  never a mix; writing different outputs they produce identical bytes (ONNX, Caffe), or identical contents where the
  format stamps the time (HDF5 object times).
"""

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
from conftest import assert_close

from kconvert import onnx_predict
from kconvert.api import load_any
from kconvert.cli import main
from kconvert.convert import caffe_to_keras, keras_to_caffe, keras_to_onnx
from kconvert.formats.atomic import TEMP_MARK
from kconvert.models import load_model

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CONV = os.path.join(FIXTURES, "keras2", "conv2d_cl.h5")  # tf_keras: 13x10x3 convs (groups, dilation), 3 outputs
MASK = os.path.join(FIXTURES, "keras2", "embedding_mask.h5")  # tf_keras: Embedding(mask_zero), Masking, 2 inputs
RNN = os.path.join(FIXTURES, "keras3", "k3_recurrent.keras")  # Keras 3: LSTM/GRU/SimpleRNN, 2 inputs
TINY = (os.path.join(FIXTURES, "caffe", "tiny.prototxt"), os.path.join(FIXTURES, "caffe", "tiny.caffemodel"))
THREADS = 8


def _golden(path: str):
    """The fixture's inputs and the outputs its writing framework computed (saved next to it by the generator)."""
    io = np.load(path.rsplit(".", 1)[0] + "_io.npz")
    return ([io[k] for k in sorted(io.files) if k.startswith("input_")],
            [io[k] for k in sorted(io.files) if k.startswith("output_")])


def _feeds(model, seed: int, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for v in model.inputs:
        shape = (batch, *v.shape[1:])
        out.append(rng.integers(0, 5, shape).astype(v.dtype) if v.dtype.startswith("int")
                   else rng.standard_normal(shape).astype(np.float32))
    return out


def _one(x: list[np.ndarray]):
    return x if len(x) > 1 else x[0]


def _as_list(y) -> list[np.ndarray]:
    return list(y) if isinstance(y, list) else [y]


def _in_threads(fn, n: int = THREADS) -> list:
    """fn(i) in n threads released together; their results, or the first exception raised."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------------------------------------- predict in threads

def _caffe_golden():
    io = np.load(TINY[0].replace(".prototxt", "_io.npz"))  # made by the Caffe reference run (fixtures/make_caffe.py)
    return [io["input_0"]], [io["layer:prob"], io["layer:flat"]]


MODELS = {  # name: (load, the golden inputs and outputs)
    "conv2d": (lambda: load_model(CONV), lambda: _golden(CONV)),
    "embedding_mask": (lambda: load_model(MASK), lambda: _golden(MASK)),
    "keras3_rnn": (lambda: load_model(RNN), lambda: _golden(RNN)),
    "caffe_nchw": (lambda: caffe_to_keras(*TINY, data_format="channels_first"), _caffe_golden),
}


@pytest.mark.parametrize("runtime", ["numpy", "onnx"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_threads_predicting_one_model_get_the_sequential_results(name, runtime, monkeypatch):
    builds = []
    real_build, real_init = onnx_predict.OnnxPredictor._build, onnx_predict.OnnxPredictor.__init__
    monkeypatch.setattr(onnx_predict.OnnxPredictor, "_build",
                        staticmethod(lambda *a: (builds.append(1), real_build(*a))[1]))
    # a slow predictor construction widens the window in which threads could each make their own
    monkeypatch.setattr(onnx_predict.OnnxPredictor, "__init__", lambda self: (real_init(self), time.sleep(0.02))[0])
    model = MODELS[name][0]()
    x_golden, y_golden = MODELS[name][1]()
    jobs = [(_feeds(model, seed, batch), bs) for seed, (batch, bs) in enumerate([(3, None), (5, 2), (4, 3), (2, 32)])]
    jobs.append((x_golden, None))

    def work(i):  # each thread runs every job, starting at a different one
        order = [(i + k) % len(jobs) for k in range(len(jobs))]
        return {j: _as_list(model.predict(_one(jobs[j][0]), batch_size=jobs[j][1], runtime=runtime)) for j in order}

    concurrent = _in_threads(work)  # the first calls race to build the onnxruntime session
    sequential = work(0)
    for got in concurrent:
        for j, outs in got.items():
            assert all(np.array_equal(a, b) for a, b in zip(outs, sequential[j])), f"job {j} differs"
    for g, r in zip(sequential[len(jobs) - 1], y_golden):  # and the results are the writing framework's
        assert_close(g, r)
    assert len(builds) == (1 if runtime == "onnx" else 0)


def test_threaded_predictions_match_tf_keras(tfk):
    model = load_model(CONV)
    x = _feeds(model, 7, 6)
    ref = _as_list(tfk.models.load_model(CONV, compile=False).predict(x[0], verbose=0))
    for got in _in_threads(lambda i: _as_list(model.predict(x[0], batch_size=1 + i % 4)), 4):
        for g, r in zip(got, ref):
            assert_close(g, r)


# ---------------------------------------------------------------------------------------------- load and convert in threads

def _weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


@pytest.mark.parametrize("load", [lambda: load_model(CONV), lambda: load_model(RNN), lambda: load_any(TINY[0], TINY[1])],
                         ids=["h5", "keras", "prototxt"])
def test_threads_loading_the_same_file_get_the_same_model(load):
    reference = load()
    x = _feeds(reference, 3, 3)
    ref_out = _as_list(reference.predict(_one(x), runtime="numpy"))
    ref_config = reference.get_config()
    for model in _in_threads(lambda i: load(), 6):
        assert model.get_config() == ref_config
        assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(reference)))
        assert all(np.array_equal(a, b) for a, b in zip(_as_list(model.predict(_one(x), runtime="numpy")), ref_out))


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_threads_converting_to_different_outputs_write_identical_files(tmp_path):
    h5 = tmp_path / "tiny.h5"
    caffe_to_keras(*TINY).save(str(h5))

    def convert(i):
        d = tmp_path / f"t{i}"
        d.mkdir()
        keras_to_onnx(CONV, str(d / "conv.onnx"))  # from the file
        keras_to_onnx(CONV, str(d / "conv_streamed.onnx"), stream=True)
        keras_to_caffe(str(h5), str(d / "tiny.prototxt"), str(d / "tiny.caffemodel"))
        caffe_to_keras(*TINY).save(str(d / "tiny.h5"))
        return d

    dirs = _in_threads(convert, 4)
    for name in ("conv.onnx", "conv_streamed.onnx", "tiny.prototxt", "tiny.caffemodel"):
        assert len({_read(d / name) for d in dirs}) == 1, name
    # HDF5 stamps each object with its creation time: compare what the files hold
    x = _feeds(load_model(str(h5)), 1, 2)
    ref = _as_list(load_model(str(h5)).predict(_one(x), runtime="numpy"))
    for d in dirs:
        model = load_model(str(d / "tiny.h5"))
        assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(load_model(str(h5)))))
        assert all(np.array_equal(a, b) for a, b in zip(_as_list(model.predict(_one(x), runtime="numpy")), ref))
    assert not [n for d in dirs for n in os.listdir(d) if TEMP_MARK in n]


def test_threads_exporting_one_model_object_write_identical_files(tmp_path):
    model = load_model(MASK)
    paths = _in_threads(lambda i: keras_to_onnx(model, str(tmp_path / f"m{i}.onnx")) and tmp_path / f"m{i}.onnx", 4)
    assert len({_read(p) for p in paths}) == 1


# ---------------------------------------------------------------------------------------------- processes

def _cli_worker(barrier, commands: list[list[str]]) -> None:
    """A spawned process: wait for the others, then run kconvert commands one after another."""
    import contextlib
    import sys

    barrier.wait()
    with contextlib.redirect_stdout(None):
        codes = [main(args) for args in commands]
    sys.exit(max(codes))


def _in_processes(commands_per_process: list[list[list[str]]]) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(commands_per_process))
    procs = [ctx.Process(target=_cli_worker, args=(barrier, commands)) for commands in commands_per_process]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Three .h5 models of one architecture (the tiny Caffe net) with different weights, and their ONNX files
    written one after another."""
    d = tmp_path_factory.mktemp("variants")
    out = []
    for k, scale in enumerate((1.0, 0.5, -0.25)):
        model = caffe_to_keras(*TINY)
        model.set_weights([w * np.float32(scale) if w.ndim > 1 else w for w in model.get_weights()])
        path = str(d / f"v{k}.h5")
        model.save(path)
        keras_to_onnx(path, str(d / f"v{k}.onnx"), stream=True)
        out.append(path)
    return out


def test_processes_converting_at_once(variants, tmp_path):
    """Three processes run the same commands at the same moment: each converts its own variant to one shared output
    path (ONNX, then .h5), then one source to its own outputs (Caffe, then .h5 from Caffe)."""
    same, own = tmp_path / "same", tmp_path / "own"
    same.mkdir()
    own.mkdir()
    _in_processes([[["keras2onnx", v, "-o", str(same / "out.onnx")],
                    ["convert", v, "-o", str(same / "out.h5")],
                    ["keras2caffe", variants[1], "-o", str(own / f"c{i}.prototxt"), "--weights",
                     str(own / f"c{i}.caffemodel")],
                    ["convert", TINY[0], TINY[1], "-o", str(own / f"k{i}.h5")]] for i, v in enumerate(variants)])

    # one output path: the last writer's whole file, never a mix (the three variants differ), no temporaries left
    final = _read(same / "out.onnx")
    assert len([v for v in variants if _read(v[:-3] + ".onnx") == final]) == 1
    weights = _weights(load_model(str(same / "out.h5")))
    assert len([v for v in variants
                if all(np.array_equal(a, b) for a, b in zip(_weights(load_model(v)), weights))]) == 1
    assert sorted(os.listdir(same)) == ["out.h5", "out.onnx"]

    # own outputs: identical bytes, computing what the source computes
    for ext in ("prototxt", "caffemodel"):
        assert len({_read(own / f"c{i}.{ext}") for i in range(3)}) == 1
    net = load_any(str(own / "c0.prototxt"), str(own / "c0.caffemodel"))
    x = _feeds(net, 2, 2)
    assert_close(_as_list(net.predict(_one(x), runtime="numpy"))[0],
                 _as_list(load_model(variants[1]).predict(_one(x), runtime="numpy"))[0])
    # HDF5 stamps each object with its creation time, so the .h5 bytes differ between runs: the models are the same
    models = [load_model(str(own / f"k{i}.h5")) for i in range(3)]
    for m in models[1:]:
        assert m.get_config() == models[0].get_config()
        assert all(np.array_equal(a, b) for a, b in zip(_weights(m), _weights(models[0])))


def test_training_and_onnx_tracing_in_two_threads_keep_each_others_numpy_coercion():
    """The gradient tape and the ONNX tracer both need np.asarray to hand their values back; one thread recording a
    tape while another traces a Lambda must not restore numpy's functions under the other (kconvert/ops/coercion)."""
    import kconvert
    from kconvert.ops import coercion
    from kconvert.runtime.autodiff import GradientTape

    started, release = threading.Event(), threading.Event()

    def recording():
        with GradientTape():
            started.set()
            release.wait(10)
            assert np.asarray is not coercion.asarray  # still patched for this tape

    worker = threading.Thread(target=recording)
    worker.start()
    started.wait(10)
    inp = kconvert.Input((4,))
    model = kconvert.Model(inp, kconvert.layers.Lambda(lambda x: np.asarray(x) * 2.0, output_shape=lambda s: s)(inp))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = model.predict(x, runtime="onnx")  # lowering traces the Lambda: the tracer's handler joins, then leaves
    assert np.asarray is not coercion.asarray, "the tracer restored numpy's functions while a tape records"
    release.set()
    worker.join(10)
    np.testing.assert_array_equal(out, x * 2)
    assert np.asarray is coercion.asarray and np.array is coercion.array  # both done: numpy's own again
