"""Streaming conversion of large weights: deferred weights, Caffe blobs transformed block by block, Keras .h5 and
ONNX files written as the weights are made, and the memory that bounds.

The numbers are checked against plain eager computations (numpy transposes of the same blobs) and against
onnxruntime / kconvert running the files; the memory tests use tracemalloc, which sees numpy's allocations.
"""

import os
import tracemalloc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.convert import caffe_to_keras, keras_to_onnx
from kconvert.converters import caffe_layers
from kconvert.errors import WeightsError
from kconvert.formats.caffe.caffemodel import read_caffemodel, release_pages, write_caffemodel
from kconvert.formats.onnx_stream import StreamedOnnx
from kconvert.layers.base import Weight

# ---------------------------------------------------------------------------------------------- Weight


def test_deferred_weight_is_computed_on_first_use_and_can_be_released():
    calls = []

    def producer():
        calls.append(1)
        return np.arange(12, dtype=np.float64).reshape(3, 4)

    w = Weight("d/kernel:0", np.zeros((3, 4), np.float32))
    stamp = w.stamp
    w.defer(producer)
    assert w.deferred and w.shape == (3, 4) and w.dtype == np.float32 and w.stamp != stamp
    p = w.produce()  # computed, not kept
    assert p.dtype == np.float32 and w.deferred and len(calls) == 1
    assert_close(w.value, np.arange(12).reshape(3, 4))  # computed and kept
    assert not w.deferred and len(calls) == 2
    w.value  # noqa: B018 - no recomputation once kept
    assert len(calls) == 2
    w.release()
    assert w.deferred and w.value.sum() == 66 and len(calls) == 3
    w.assign(np.ones((3, 4)))  # an assignment replaces the producer for good
    w.release()
    assert not w.deferred and w.value.sum() == 12 and len(calls) == 3


def test_deferred_weight_of_the_wrong_shape_is_a_weights_error():
    w = Weight("d/kernel:0", np.zeros((3, 4), np.float32))
    w.defer(lambda: np.zeros((4, 3)))
    with pytest.raises(WeightsError, match=r"\(3, 4\).*\(4, 3\)"):
        w.value  # noqa: B018


def test_chunks_of_a_plain_weight_is_its_value():
    w = Weight("d/bias:0", np.arange(5, dtype=np.float32))
    (start, block), = list(w.chunks())
    assert start == 0 and np.array_equal(block, np.arange(5))


# ---------------------------------------------------------------------------------------------- Caffe blocks


@pytest.mark.parametrize("shape", [(7, 5, 3, 2), (11, 6, 5, 3), (9, 13), (300, 4, 3, 5)])
def test_units_last_blocks_equal_a_plain_transpose(shape, monkeypatch):
    """Caffe (units, inner, *spatial) -> (*spatial, inner, units), in blocks smaller than one leading row, uneven
    last block, and tiles of units smaller than the unit count."""
    monkeypatch.setattr(caffe_layers, "_BLOCK_BYTES", 200)
    monkeypatch.setattr(caffe_layers, "_UNIT_TILE", 4)
    monkeypatch.setattr(caffe_layers, "_THREADED_BYTES", 64)  # the two-thread copy too
    src = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = np.transpose(src, (*range(2, src.ndim), 1, 0))
    assert np.array_equal(caffe_layers._units_last(src), expected)
    rows = np.empty_like(expected)
    seen = []
    for start, block in caffe_layers._units_last_blocks(src):
        rows[start:start + len(block)] = block
        seen.append(start)
    assert np.array_equal(rows, expected)
    assert len(seen) == expected.shape[0] or expected.ndim == 2 or len(seen) > 1


def test_later_chunks_reshape_to_the_dense_kernel(monkeypatch):
    """An InnerProduct after a (C=5, H=3, W=4) map: Keras kernel rows in H,W,C order, streamed by H."""
    monkeypatch.setattr(caffe_layers, "_BLOCK_BYTES", 5 * 4 * 6 * 4)  # one H row per block
    blob = np.random.default_rng(1).standard_normal((6, 5, 3, 4)).astype(np.float32)  # (units, C, H, W)
    later = caffe_layers.Later(caffe_layers._units_last, blob, (60, 6))
    expected = blob.transpose(2, 3, 1, 0).reshape(60, 6)
    assert np.array_equal(later(), expected)
    got = np.empty_like(expected)
    starts = []
    for start, block in later.chunks():
        got[start:start + len(block)] = block
        starts.append(start)
    assert starts == [0, 20, 40] and np.array_equal(got, expected)


def test_released_blob_pages_read_back_the_same(tmp_path):
    path = tmp_path / "w.caffemodel"
    data = np.random.default_rng(2).standard_normal((64, 3, 5, 7)).astype(np.float32)
    write_caffemodel(path, [("conv", "Convolution", [data])])
    view = read_caffemodel(path).layers[0].blobs[0]
    first = np.array(view)
    release_pages(view)
    release_pages(view[3:5])  # a partial view, not page aligned
    release_pages(np.zeros(3))  # not a mapped blob: nothing to do
    assert np.array_equal(view, first) and np.array_equal(first, data)


# ---------------------------------------------------------------------------------------------- whole nets

_NET = """name: "big_fc"
input: "data"
input_shape { dim: 2 dim: 5 dim: 17 dim: 13 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 48 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 700 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc" top: "fc2" inner_product_param { num_output: 9 } }
"""
# fc holds 48*17*13 x 700 floats = 29.7 MB; everything else is small


@pytest.fixture(scope="module")
def big_net(tmp_path_factory):
    d = tmp_path_factory.mktemp("big_fc")
    rng = np.random.default_rng(3)
    (d / "net.prototxt").write_text(_NET)
    k = 48 * 17 * 13

    def he(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    write_caffemodel(d / "net.caffemodel", [
        ("conv", "Convolution", [he(48, 5, 3, 3), rng.uniform(-0.1, 0.1, 48).astype(np.float32)]),
        ("fc", "InnerProduct", [he(700, k), rng.uniform(-0.1, 0.1, 700).astype(np.float32)]),
        ("fc2", "InnerProduct", [he(9, 700), rng.uniform(-0.1, 0.1, 9).astype(np.float32)]),
    ])
    x = rng.standard_normal((2, 17, 13, 5)).astype(np.float32)
    return d / "net.prototxt", d / "net.caffemodel", x, 4 * (48 * 45 + 48 + 700 * k + 700 + 9 * 700 + 9)


def _eager_reference(prototxt, caffemodel, x):
    """The same conversion with every weight computed up front (no deferral anywhere)."""
    model = caffe_to_keras(prototxt, caffemodel)
    for w in model.weights:
        w.value  # noqa: B018
    assert not any(w.deferred for w in model.weights)
    return model.predict(x)


def test_converted_caffe_weights_stay_deferred_until_used(big_net):
    prototxt, caffemodel, x, _ = big_net
    model = caffe_to_keras(prototxt, caffemodel)
    kernels = {w.name: w for w in model.weights}
    assert kernels["fc/kernel:0"].deferred and kernels["conv/kernel:0"].deferred
    y = model.predict(x)
    assert not kernels["fc/kernel:0"].deferred
    blob = read_caffemodel(caffemodel).by_name()["fc"].blobs[0].reshape(700, 48, 17, 13)
    assert np.array_equal(kernels["fc/kernel:0"].value, blob.transpose(2, 3, 1, 0).reshape(-1, 700))
    assert y.shape == (2, 9) and y.std() > 0.1


def test_h5_save_streams_the_weights_and_predicts_the_same(big_net, tmp_path, monkeypatch):
    prototxt, caffemodel, x, weight_bytes = big_net
    monkeypatch.setattr(caffe_layers, "_BLOCK_BYTES", 1 << 20)  # fc in 17 blocks of one H row (1.7 MB each)
    expected = _eager_reference(prototxt, caffemodel, x)
    model = caffe_to_keras(prototxt, caffemodel)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        model.save(tmp_path / "out.h5")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # two block buffers of fc (3.4 MB) and small weights; holding fc whole would be 29.7 MB
    assert peak < 0.25 * weight_bytes, f"peak {peak / 2**20:.1f} MB while writing {weight_bytes / 2**20:.1f} MB"
    assert all(w.deferred for w in model.weights if w.name.endswith("kernel:0"))  # nothing kept after writing
    assert_close(kconvert.load_model(tmp_path / "out.h5").predict(x), expected)


def test_streamed_onnx_export_matches_and_bounds_memory(big_net, tmp_path):
    prototxt, caffemodel, x, weight_bytes = big_net
    nchw = x.transpose(0, 3, 1, 2)
    model = caffe_to_keras(prototxt, caffemodel, data_format="channels_first")
    expected = model.predict(nchw)
    for w in model.weights:
        w.release()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        proto = keras_to_onnx(model, tmp_path / "out.onnx", stream=True)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # fc is made once (29.7 MB) and written; the eager path holds it in the model, the proto and its bytes
    assert peak < 1.3 * weight_bytes, f"peak {peak / 2**20:.1f} MB for {weight_bytes / 2**20:.1f} MB of weights"
    stubs = [t for t in proto.graph.initializer if not t.raw_data and not t.float_data]
    assert stubs and all(t.dims for t in stubs)  # the returned proto keeps name, type and dims only
    assert all(w.deferred for w in model.weights if w.name.endswith("kernel:0"))
    on_disk = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(on_disk, full_check=True)
    assert {t.name for t in on_disk.graph.initializer} == {t.name for t in proto.graph.initializer}
    sess = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {sess.get_inputs()[0].name: nchw})[0], expected)
    plain = keras_to_onnx(model, None)  # the in-memory export holds the same tensors
    by_name = {t.name: onnx.numpy_helper.to_array(t) for t in on_disk.graph.initializer}
    for t in plain.graph.initializer:
        assert np.array_equal(by_name[t.name], onnx.numpy_helper.to_array(t)), t.name


def test_streamed_onnx_with_external_data(big_net, tmp_path):
    prototxt, caffemodel, x, _ = big_net
    model = caffe_to_keras(prototxt, caffemodel)
    expected = model.predict(x)
    keras_to_onnx(model, tmp_path / "ext.onnx", stream=True, external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 29e6
    assert (tmp_path / "ext.onnx").stat().st_size < 1e6
    assert sorted(os.listdir(tmp_path)) == ["ext.onnx", "ext.onnx.data"]  # no temporary files left
    onnx.checker.check_model(str(tmp_path / "ext.onnx"), full_check=True)
    sess = ort.InferenceSession(str(tmp_path / "ext.onnx"), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {sess.get_inputs()[0].name: x})[0], expected)


def test_withdrawn_streamed_initializer_is_skipped_by_parsers(tmp_path):
    """A lowering that rolls back after streaming a constant: the entry stays in the file as an unknown field."""
    from onnx import helper

    w = np.random.default_rng(4).standard_normal((300, 1000)).astype(np.float32)  # 1.2 MB: streamed
    out = StreamedOnnx(tmp_path / "m.onnx")
    stub_gone = out.add("gone", w * 2)
    stub = out.add("W", w)
    out.withdraw([stub_gone.name])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, ["N", 300])],
                              [helper.make_tensor_value_info("y", 1, ["N", 1000])], initializer=[stub])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    assert out.finish(proto) == [str(tmp_path / "m.onnx")]
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    assert [t.name for t in loaded.graph.initializer] == ["W"]
    x = np.random.default_rng(5).standard_normal((3, 300)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {"x": x})[0], x @ w)


def test_failed_streamed_export_leaves_the_existing_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    out = StreamedOnnx(target)
    out.add("W", np.ones((600, 600), np.float32))
    out.abort()
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.onnx"]
