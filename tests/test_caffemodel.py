"""The .caffemodel reader and writer (kconvert.formats.caffe.caffemodel), checked against google.protobuf's
own parser/serializer (a runtime-built descriptor with BVLC Caffe's field numbers) and against OpenCV's
Caffe importer, which reads our files with its own protobuf code."""

import mmap
import os
import struct
import tracemalloc

import numpy as np
import pytest

from kconvert.errors import ExportError, FormatError
from kconvert.formats.caffe import caffemodel as cm
from kconvert.formats.caffe.caffemodel import CaffeLayer, iter_layers, read_caffemodel, write_caffemodel

# ------------------------------------------------------------------------------------------ wire helpers


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def unknown_fields() -> bytes:
    """One field of every wire type under numbers no Caffe message uses."""
    return (vi(9999, 123456789) + key(9998, 1) + struct.pack("<d", 2.5) + ld(9997, b"fork junk \x00\xff")
            + key(9996, 5) + struct.pack("<f", 1.5))


# ------------------------------------------------------------------------------ protobuf reference classes


@pytest.fixture(scope="module")
def pb():
    """Message classes for a minimal Caffe subset, with BVLC's field numbers (NVIDIA/caffe's for raw_data),
    built at test time from a descriptor. Enums are plain varints on the wire, so they are int32 here."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="kctest_caffemodel.proto", package="kctest", syntax="proto2")
    T = {"i32": F.TYPE_INT32, "u32": F.TYPE_UINT32, "i64": F.TYPE_INT64, "f": F.TYPE_FLOAT, "d": F.TYPE_DOUBLE,
         "s": F.TYPE_STRING, "b": F.TYPE_BYTES, "bool": F.TYPE_BOOL}

    def msg(name, *fields):
        m = fdp.message_type.add(name=name)
        for spec in fields:
            fname, number, ftype = spec[:3]
            repeated = "rep" in spec or "packed" in spec
            f = m.field.add(name=fname, number=number, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if ftype in T:
                f.type = T[ftype]
            else:
                f.type, f.type_name = F.TYPE_MESSAGE, f".kctest.{ftype}"
            if "packed" in spec:
                f.options.packed = True

    msg("BlobShape", ("dim", 1, "i64", "packed"))
    msg("BlobProto", ("num", 1, "i32"), ("channels", 2, "i32"), ("height", 3, "i32"), ("width", 4, "i32"),
        ("data", 5, "f", "packed"), ("diff", 6, "f", "packed"), ("shape", 7, "BlobShape"),
        ("double_data", 8, "d", "packed"), ("double_diff", 9, "d", "packed"),
        ("raw_data_type", 10, "i32"), ("raw_data", 12, "b"))
    msg("ParamSpec", ("name", 1, "s"), ("lr_mult", 3, "f"), ("decay_mult", 4, "f"))
    msg("NetStateRule", ("phase", 1, "i32"), ("stage", 4, "s", "rep"))
    msg("ConvolutionParameter", ("num_output", 1, "u32"), ("bias_term", 2, "bool"), ("pad", 3, "u32", "rep"),
        ("kernel_size", 4, "u32", "rep"), ("group", 5, "u32"), ("stride", 6, "u32", "rep"))
    msg("LayerParameter", ("name", 1, "s"), ("type", 2, "s"), ("bottom", 3, "s", "rep"), ("top", 4, "s", "rep"),
        ("param", 6, "ParamSpec", "rep"), ("blobs", 7, "BlobProto", "rep"), ("include", 8, "NetStateRule", "rep"),
        ("phase", 10, "i32"), ("convolution_param", 106, "ConvolutionParameter"))
    msg("V0LayerParameter", ("name", 1, "s"), ("type", 2, "s"), ("num_output", 3, "u32"),
        ("kernelsize", 5, "u32"), ("blobs", 50, "BlobProto", "rep"), ("blobs_lr", 51, "f", "rep"))
    msg("V1LayerParameter", ("layer", 1, "V0LayerParameter"), ("bottom", 2, "s", "rep"), ("top", 3, "s", "rep"),
        ("name", 4, "s"), ("type", 5, "i32"), ("blobs", 6, "BlobProto", "rep"), ("blobs_lr", 7, "f", "rep"),
        ("convolution_param", 10, "ConvolutionParameter"))
    msg("NetParameter", ("name", 1, "s"), ("layers", 2, "V1LayerParameter", "rep"), ("input", 3, "s", "rep"),
        ("input_dim", 4, "i32", "rep"), ("layer", 100, "LayerParameter", "rep"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)

    class Classes:
        pass

    for m in fdp.message_type:
        d = pool.FindMessageTypeByName(f"kctest.{m.name}")
        cls = (message_factory.GetMessageClass(d) if hasattr(message_factory, "GetMessageClass")
               else message_factory.MessageFactory(pool).GetPrototype(d))
        setattr(Classes, m.name, cls)
    return Classes


def pb_blob(pb, arr, storage="float", legacy=False):
    b = pb.BlobProto()
    arr = np.asarray(arr)
    if legacy:
        b.num, b.channels, b.height, b.width = (1,) * (4 - arr.ndim) + arr.shape
    elif arr.ndim:
        b.shape.dim.extend(arr.shape)
    flat = arr.reshape(-1)
    if storage == "float":
        b.data.extend(flat.astype(np.float32).tolist())
    elif storage == "double":
        b.double_data.extend(flat.astype(np.float64).tolist())
    else:
        b.raw_data_type = 2
        b.raw_data = flat.astype("<f2").tobytes()
    return b


def pb_blob_array(blob) -> np.ndarray:
    """What protobuf parsed, as an array (Caffe's shape rules, no kconvert code)."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if len(blob.double_data):
        values = np.array(blob.double_data, np.float64)
    elif len(blob.data):
        values = np.array(blob.data, np.float32)
    else:
        values = np.frombuffer(blob.raw_data, {0: "<f8", 1: "<f4", 2: "<f2"}[blob.raw_data_type])
    return values.astype(np.float32).reshape(shape)


V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18, "Scale": None, "Data": 5}
V0_TYPES = {"Convolution": "conv", "InnerProduct": "innerproduct", "ReLU": "relu", "Data": "data"}


def pb_net(pb, layers, version, storage, legacy, name):
    net = pb.NetParameter()
    if name:
        net.name = name
    for lname, ltype, blobs in layers:
        pblobs = [pb_blob(pb, b, storage, legacy) for b in blobs]
        if version == 2:
            layer = net.layer.add(name=lname, type=ltype)
            layer.blobs.extend(pblobs)
        elif version == 1:
            layer = net.layers.add(name=lname, type=V1_TYPES[ltype])
            layer.blobs.extend(pblobs)
        else:
            v0 = net.layers.add().layer
            v0.name, v0.type = lname, V0_TYPES[ltype]
            v0.blobs.extend(pblobs)
    return net


def sample_layers(rng):
    """Blobs of many shapes: conv (out, in, kh, kw) with H != W != C, odd sizes, a bias, an InnerProduct
    weight, a scalar, an empty blob, and a layer with no blobs."""
    conv_w = (rng.standard_normal((7, 3, 5, 3)) * 0.3).astype(np.float32)
    conv_b = rng.standard_normal(7).astype(np.float32)
    ip_w = rng.standard_normal((11, 13)).astype(np.float32)
    return [
        ("data", "Data", []),
        ("conv1", "Convolution", [conv_w, conv_b]),
        ("relu1", "ReLU", []),
        ("fc", "InnerProduct", [ip_w, np.float32(-0.625), np.zeros((0, 3), np.float32)]),
    ]


def expected(arr, storage, legacy):
    arr = np.asarray(arr, np.float32)
    if storage == "fp16":
        arr = arr.astype(np.float16).astype(np.float32)
    if legacy:
        arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
    return arr


def bitwise_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("legacy", [False, True], ids=["shape", "legacy_dims"])
@pytest.mark.parametrize("storage", ["float", "double", "fp16"])
@pytest.mark.parametrize("version", [2, 1, 0])
def test_writer_bytes_equal_protobuf_and_read_back(pb, tmp_path, rng, version, storage, legacy):
    layers = sample_layers(rng)
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, layers, version, name="testnet", storage=storage, legacy_dims=legacy)
    ours = path.read_bytes()
    reference = pb_net(pb, layers, version, storage, legacy, "testnet")
    # our writer emits exactly what protobuf serializes, so protobuf (and Caffe) parse it back the same
    assert ours == reference.SerializeToString()
    parsed = pb.NetParameter.FromString(ours)
    assert parsed == reference

    model = read_caffemodel(path)
    assert model.name == "testnet"
    assert [(layer.name, layer.type, layer.version) for layer in model.layers] == [
        (n, t, version) for n, t, _ in layers]
    raw_types = {2: [t for _, t, _ in layers], 1: [V1_TYPES[t] for _, t, _ in layers],
                 0: [V0_TYPES[t] for _, t, _ in layers]}[version]
    assert [layer.raw_type for layer in model.layers] == raw_types
    for (_, _, blobs), layer in zip(layers, model.layers):
        assert len(layer.blobs) == len(blobs)
        for ref, got in zip(blobs, layer.blobs):
            assert bitwise_equal(got, expected(ref, storage, legacy))
            assert not got.flags.writeable
    # the scalar blob (a channel-shared PReLU slope, say) has shape () in the shape form
    assert model.layers[3].blobs[1].shape == ((1, 1, 1, 1) if legacy else ())


@pytest.mark.parametrize("storage", ["float", "double", "fp16"])
def test_keep_dtype_returns_views_in_stored_dtype(tmp_path, rng, storage):
    w = rng.standard_normal((5, 9, 3)).astype(np.float32)
    path = tmp_path / "k.caffemodel"
    write_caffemodel(path, [("ip", "InnerProduct", [w])], storage=storage)
    (got,) = read_caffemodel(path, keep_dtype=True).layers[0].blobs
    stored = {"float": np.float32, "double": np.float64, "fp16": np.float16}[storage]
    assert got.dtype == stored and bitwise_equal(got, w.astype(stored))
    assert not got.flags.owndata and isinstance(_root_base(got), mmap.mmap)
    (converted,) = read_caffemodel(path).layers[0].blobs
    assert converted.dtype == np.float32 and bitwise_equal(converted, w.astype(stored).astype(np.float32))


def test_protobuf_serialized_training_net_with_unknown_fields(pb, tmp_path, rng):
    """A training net as protobuf writes it (bottom/top/param/include/convolution_param, diffs) with unknown
    fields of every wire type interleaved at every level: we skip them and read the same blobs."""
    w = rng.standard_normal((6, 4, 3, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    head = pb.LayerParameter(name="conv1", type="Convolution", bottom=["data"], top=["conv1"],
                             param=[pb.ParamSpec(lr_mult=1.0), pb.ParamSpec(lr_mult=2.0, decay_mult=0.0)],
                             include=[pb.NetStateRule(phase=0, stage=["x"])], phase=0)
    head.convolution_param.num_output = 6
    head.convolution_param.kernel_size.extend([3, 5])
    blob_w = pb_blob(pb, w)
    blob_w.diff.extend(np.full(w.size, 7.0, np.float32).tolist())  # diffs are skipped
    blob_w_bytes = unknown_fields() + blob_w.SerializeToString() + unknown_fields()  # inside the blob too
    # concatenated serializations merge: name/type..., unknown, blob 0, unknown, blob 1, unknown
    layer_bytes = (head.SerializeToString() + unknown_fields() + ld(7, blob_w_bytes) + unknown_fields()
                   + pb.LayerParameter(blobs=[pb_blob(pb, b)]).SerializeToString() + unknown_fields())
    v1 = pb.V1LayerParameter(name="ip_old", type=14, bottom=["conv1"], top=["ip"], blobs_lr=[1.0, 2.0])
    v1.blobs.append(pb_blob(pb, w[:, :, 0, 0], legacy=True))
    v1.convolution_param.num_output = 3  # a V1 param field, skipped
    data = (pb.NetParameter(name="train", input=["data"], input_dim=[2, 4, 9, 11]).SerializeToString()
            + unknown_fields() + ld(100, layer_bytes) + unknown_fields() + ld(2, v1.SerializeToString())
            + ld(100, pb.LayerParameter(name="loss", type="SoftmaxWithLoss").SerializeToString()))
    net = pb.NetParameter.FromString(data)  # protobuf accepts the bytes
    assert [layer.name for layer in net.layer] == ["conv1", "loss"] and net.layers[0].name == "ip_old"
    path = tmp_path / "train.caffemodel"
    path.write_bytes(data)

    model = read_caffemodel(path)
    assert model.name == "train"
    assert [(layer.name, layer.type) for layer in model.layers] == [
        ("conv1", "Convolution"), ("ip_old", "InnerProduct"), ("loss", "SoftmaxWithLoss")]
    refs = [list(net.layer[0].blobs), list(net.layers[0].blobs), []]
    for layer, ref in zip(model.layers, refs):
        assert len(layer.blobs) == len(ref)
        for got, r in zip(layer.blobs, ref):
            assert bitwise_equal(got, pb_blob_array(r))
    assert bitwise_equal(model.layers[0].blobs[0], w)
    assert model.layers[1].blobs[0].shape == (1, 1, 6, 4)  # legacy dims as stored (right-aligned)


def test_unpacked_and_split_repeated_values_match_protobuf(pb, tmp_path, rng):
    """Writers may emit `data` unpacked (one fixed32 per value), split over several packed chunks, or mixed;
    dims unpacked too. Protobuf concatenates all of them; so do we (the values gathered in one strided copy)."""
    vals = rng.standard_normal(70001).astype(np.float32)  # more than one 65536-value scan block
    dbl = rng.standard_normal(23)
    unpacked = b"".join(key(5, 5) + struct.pack("<f", v) for v in vals[10:70000])
    blob1 = (ld(5, vals[:3].tobytes()) + ld(5, vals[3:10].tobytes()) + unpacked
             + vi(20, 5)  # an unknown field between runs
             + key(5, 5) + vals[70000:].tobytes()
             + ld(7, key(1, 0) + varint(70001)))  # shape after the data (as Caffe orders it), dim unpacked
    blob2 = (b"".join(key(8, 1) + struct.pack("<d", v) for v in dbl[:20]) + ld(8, dbl[20:].tobytes())
             + ld(7, vi(1, 23)))
    blob3 = vi(3, 1) + vi(4, 2) + key(5, 5) + struct.pack("<f", 1.25) + key(5, 5) + struct.pack("<f", -3.0)
    layer = ld(1, b"mixed") + ld(2, b"InnerProduct") + ld(7, blob1) + ld(7, blob2) + ld(7, blob3)
    data = ld(100, layer)
    path = tmp_path / "mixed.caffemodel"
    path.write_bytes(data)
    net = pb.NetParameter.FromString(data)
    got = read_caffemodel(path).layers[0].blobs
    assert len(got) == 3
    for g, r in zip(got[:2], net.layer[0].blobs[:2]):
        assert bitwise_equal(g, pb_blob_array(r))
    assert bitwise_equal(got[0], vals)
    assert bitwise_equal(got[1], dbl.astype(np.float32))
    # absent num/channels count as 1 (Caffe would read 0 and reject the two values)
    assert list(net.layer[0].blobs[2].data) == [1.25, -3.0]
    assert bitwise_equal(got[2], np.array([1.25, -3.0], np.float32).reshape(1, 1, 1, 2))


def test_v0_layer_inside_v1_wrapper(pb, tmp_path, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    net = pb.NetParameter(name="v0net")
    wrapper = net.layers.add(bottom=["data"], top=["conv1"])
    wrapper.layer.name, wrapper.layer.type = "conv1", "conv"
    wrapper.layer.num_output, wrapper.layer.kernelsize = 4, 3
    wrapper.layer.blobs.append(pb_blob(pb, w, legacy=True))
    wrapper.layer.blobs_lr.extend([1.0, 2.0])
    pad = net.layers.add(bottom=["x"], top=["y"])
    pad.layer.name, pad.layer.type = "pad1", "padding"
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(net.SerializeToString())
    model = read_caffemodel(path)
    conv, padding = model.layers
    assert (conv.name, conv.type, conv.raw_type, conv.version) == ("conv1", "Convolution", "conv", 0)
    assert bitwise_equal(conv.blobs[0], w)
    assert (padding.name, padding.type, padding.blobs) == ("pad1", "padding", [])


def test_opencv_runs_our_caffemodel(tmp_path, rng):
    """OpenCV's Caffe importer (its own protobuf code, with raw_data FP16 support) loads what we write,
    V1 and V2, shape and legacy dims, float and FP16, and computes the conv and InnerProduct from our bytes."""
    import cv2
    proto = tmp_path / "deploy.prototxt"
    proto.write_text("""name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 7 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 5 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 4 } }
""")
    w = (rng.standard_normal((5, 3, 3, 2)) * 0.4).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    wf = (rng.standard_normal((4, 5 * 7 * 8)) * 0.1).astype(np.float32)
    bf = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    for version, storage, legacy in [(2, "float", False), (1, "float", True), (2, "fp16", False),
                                     (1, "fp16", True), (2, "float", True)]:
        weights = tmp_path / f"w{version}{storage}{legacy}.caffemodel"
        write_caffemodel(weights, [("data", "Data", []), ("conv1", "Convolution", [w, b]),
                                   ("fc", "InnerProduct", [wf, bf])], version, storage=storage, legacy_dims=legacy)
        net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
        net.setInput(x)
        conv, fc = net.forward(["conv1", "fc"])
        # numpy reference computed from the blobs as read back by our reader
        cw, cb = read_caffemodel(weights).by_name()["conv1"].blobs
        fw, fb = (blob.reshape(blob.shape[-2:]) if blob.ndim == 4 else blob
                  for blob in read_caffemodel(weights).by_name()["fc"].blobs)
        fb = fb.reshape(-1)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0))).astype(np.float64)
        ref = np.zeros((2, 5, 7, 8))
        for i in range(3):
            for j in range(2):
                ref += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 7, j:j + 8], cw[:, :, i, j])
        ref += cb.reshape(-1)[None, :, None, None]
        ref_fc = ref.reshape(2, -1) @ fw.T.astype(np.float64) + fb
        scale_c, scale_f = np.abs(ref).max(), np.abs(ref_fc).max()
        assert np.abs(conv - ref).max() <= 1e-5 + 1e-4 * scale_c, (version, storage, legacy)
        assert np.abs(fc - ref_fc).max() <= 1e-5 + 1e-4 * scale_f, (version, storage, legacy)
        if storage == "fp16":  # the fp16 rounding is visible: proves OpenCV used the FP16 raw_data
            assert np.abs(cw - w).max() > 0


def _root_base(arr):
    while isinstance(arr, np.ndarray):
        arr = arr.base
    return arr


def test_big_blob_is_a_view_and_reading_allocates_nothing(tmp_path, rng):
    big = rng.standard_normal((2500, 4001), dtype=np.float32)  # ~40 MB
    path = tmp_path / "big.caffemodel"
    write_caffemodel(path, [("fc6", "InnerProduct", [big, np.ones(2500, np.float32)])])
    tracemalloc.start()
    try:
        model = read_caffemodel(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"reading a 40 MB caffemodel allocated {peak} bytes"
    arr = model.layers[0].blobs[0]
    assert not arr.flags.owndata and not arr.flags.writeable
    assert isinstance(_root_base(arr), mmap.mmap)  # a view into the mapped file, no copy
    assert bitwise_equal(arr, big)
    tracemalloc.start()
    try:
        for layer in iter_layers(path):
            assert layer.blobs[0].shape == (2500, 4001)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


class _SparseSink:
    """A binary 'file' that keeps only small writes and their offsets, so a multi-GB caffemodel can be
    framed by the real writer without writing its payload."""

    def __init__(self):
        self.pos = 0
        self.kept = []

    def write(self, data):
        n = memoryview(data).nbytes
        if n <= 1 << 16:
            self.kept.append((self.pos, bytes(data)))
        self.pos += n
        return n


def test_over_2gb_write_framing_and_read(tmp_path):
    """A 2 GiB + 12 byte blob (over protobuf's 2 GB and Caffe's 512 MB limits), then a small layer at an
    offset past 2^31: the writer's length prefixes and the reader's offsets need 64-bit sizes. The payload
    lives in sparse files, so nothing of it is written or read."""
    n = 2**29 + 3
    source = tmp_path / "zeros.f32"
    with open(source, "wb") as f:
        f.truncate(4 * n)
    big = np.memmap(source, dtype=np.float32, mode="r", shape=(n,))
    small = np.array([1.5, -2.25, 3.0], np.float32)
    sink = _SparseSink()
    total = cm._write_net(sink, [("huge", "InnerProduct", [big]), ("after", "Scale", [small])], name="g")
    assert total == sink.pos > 2**31
    path = tmp_path / "huge.caffemodel"
    with open(path, "wb") as f:
        for pos, data in sink.kept:
            f.seek(pos)
            f.write(data)
        f.truncate(sink.pos)
    huge, after = read_caffemodel(path).layers
    assert (huge.name, huge.blobs[0].shape, huge.blobs[0].dtype) == ("huge", (n,), np.float32)
    assert not huge.blobs[0].flags.owndata
    assert after.name == "after" and after.offset > 2**31 and bitwise_equal(after.blobs[0], small)


def test_iter_layers_is_lazy(tmp_path, rng):
    """A file cut inside its second layer: iter_layers still yields the first before it raises."""
    good = rng.standard_normal((3, 5)).astype(np.float32)
    path = tmp_path / "two.caffemodel"
    write_caffemodel(path, [("ok", "InnerProduct", [good]), ("cut", "InnerProduct", [good])])
    data = path.read_bytes()
    it = iter_layers(_write(tmp_path / "cut.caffemodel", data[:-10]))
    first = next(it)
    assert first.name == "ok" and bitwise_equal(first.blobs[0], good)
    with pytest.raises(FormatError, match="truncated"):
        next(it)
    with pytest.raises(FormatError):
        read_caffemodel(tmp_path / "cut.caffemodel")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _format_error(path, *needles):
    with pytest.raises(FormatError) as info:
        read_caffemodel(path)
    text = str(info.value)
    assert str(path) in text
    for needle in needles:
        assert needle in text, text
    return text


def test_errors_name_file_layer_and_offset(tmp_path, rng):
    w = rng.standard_normal((4, 6)).astype(np.float32)
    good = tmp_path / "good.caffemodel"
    write_caffemodel(good, [("ip1", "InnerProduct", [w])])
    data = good.read_bytes()

    # truncated: the layer declares more bytes than the file has
    _format_error(_write(tmp_path / "trunc.caffemodel", data[:-7]), "truncated", "byte offset 0")
    # a length running past the end of its enclosing message, inside the layer
    blob = ld(7, vi(1, 4)) + key(5, 2) + varint(1000) + w.tobytes()
    _format_error(_write(tmp_path / "past.caffemodel", ld(100, ld(1, b"ip1") + ld(7, blob))),
                  "layer 'ip1'", "blob 0", "declares 1000 bytes", "byte offset")
    # blob element count not matching its shape
    blob = ld(5, w.tobytes()) + ld(7, ld(1, varint(5) + varint(6)))
    _format_error(_write(tmp_path / "count.caffemodel", ld(100, ld(1, b"ip1") + ld(7, blob))),
                  "layer 'ip1'", "shape (5, 6) needs 30 values but the blob holds 24")
    # huge declared sizes: a 2^62-byte field, a 2^60 x 2^40 shape
    _format_error(_write(tmp_path / "hugelen.caffemodel", key(100, 2) + varint(1 << 62) + data),
                  "declares 4611686018427387904 bytes")
    blob = ld(5, w.tobytes()) + ld(7, ld(1, varint(1 << 60) + varint(1 << 40)))
    _format_error(_write(tmp_path / "hugeshape.caffemodel", ld(100, ld(1, b"ip1") + ld(7, blob))),
                  "layer 'ip1'", "needs 1267650600228229401496703205376 values")
    # a shape with data missing altogether
    _format_error(_write(tmp_path / "nodata.caffemodel", ld(100, ld(1, b"ip1") + ld(7, ld(7, vi(1, 3))))),
                  "holds 0")
    # negative dims, legacy and shape
    _format_error(_write(tmp_path / "neg.caffemodel", ld(100, ld(1, b"n") + ld(7, vi(1, -2)))),
                  "layer 'n'", "negative")
    _format_error(_write(tmp_path / "neg2.caffemodel", ld(100, ld(1, b"n") + ld(7, ld(7, vi(1, -2))))),
                  "negative")
    # packed data that is not a whole number of floats
    _format_error(_write(tmp_path / "odd.caffemodel", ld(100, ld(1, b"o") + ld(7, ld(5, b"\0" * 7)))),
                  "not a whole number")
    # raw_data without a type, or of a non-weight type
    _format_error(_write(tmp_path / "raw1.caffemodel", ld(100, ld(1, b"r") + ld(7, ld(12, b"\0" * 4)))),
                  "layer 'r'", "raw_data without raw_data_type")
    _format_error(_write(tmp_path / "raw2.caffemodel",
                         ld(100, ld(1, b"r") + ld(7, vi(10, 3) + ld(12, b"\0" * 4)))), "type INT")
    # groups, invalid wire types, field 0, unterminated varint
    _format_error(_write(tmp_path / "group.caffemodel", key(5, 3) + key(5, 4)), "group", "byte offset 0")
    _format_error(_write(tmp_path / "wt7.caffemodel", data + key(3, 7)), f"byte offset {len(data)}")
    _format_error(_write(tmp_path / "zero.caffemodel", b"\x00\x00"), "field number 0")
    _format_error(_write(tmp_path / "varint.caffemodel", data + b"\xff\xff"), "truncated varint")
    # errors found before the layer's name is known name the layer by index and offset
    _format_error(_write(tmp_path / "early.caffemodel", data + ld(100, key(2, 2) + varint(50))),
                  f"layer #1 at byte {len(data)}")
    with pytest.raises(FormatError, match="no such file"):
        read_caffemodel(tmp_path / "missing.caffemodel")


def test_every_truncation_and_corruption_gives_format_error(tmp_path, rng):
    """Every prefix and many single-byte corruptions of a real file either parse or raise FormatError:
    never an IndexError, a numpy error, or a hang."""
    layers = [("c", "Convolution", [rng.standard_normal((2, 3, 1, 2)).astype(np.float32), np.ones(2)]),
              ("p", "PReLU", [np.float32(0.25)])]
    path = tmp_path / "t.caffemodel"
    write_caffemodel(path, layers, name="n")
    data = path.read_bytes()
    bad = tmp_path / "bad.caffemodel"
    outcomes = set()
    cases = [data[:i] for i in range(len(data))]
    for i in range(len(data)):
        for value in (0x00, 0xFF, data[i] ^ 0x07):
            cases.append(data[:i] + bytes([value]) + data[i + 1:])
    for case in cases:
        bad.write_bytes(case)
        try:
            read_caffemodel(bad)
            outcomes.add("ok")
        except FormatError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}


def test_empty_file_and_by_name(tmp_path, rng):
    assert read_caffemodel(_write(tmp_path / "empty.caffemodel", b"")).layers == []
    a, b = np.ones((2, 3), np.float32), np.full((3,), 2.0, np.float32)
    path = tmp_path / "dup.caffemodel"
    write_caffemodel(path, [CaffeLayer("x", "InnerProduct", [a]), ("y", "ReLU", []), ("x", "InnerProduct", [b])])
    model = read_caffemodel(path)
    assert [layer.name for layer in model.layers] == ["x", "y", "x"]
    assert bitwise_equal(model.by_name()["x"].blobs[0], b)  # the last wins, as in Caffe
    assert model.by_name()["y"].blobs == []


def test_writer_converts_any_layout_in_chunks(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(cm, "_CHUNK_BYTES", 64)
    base = rng.standard_normal((9, 7, 5))
    views = [base.transpose(2, 0, 1), base[::2, :, 1:], base.astype(np.float32)[:, ::-1], (base > 0),
             np.arange(30, dtype=np.int64).reshape(5, 6)]
    for storage in ["float", "double", "fp16"]:
        path = tmp_path / f"l{storage}.caffemodel"
        write_caffemodel(path, [("l", "InnerProduct", views)], storage=storage)
        got = read_caffemodel(path, keep_dtype=True).layers[0].blobs
        dtype = {"float": "<f4", "double": "<f8", "fp16": "<f2"}[storage]
        for v, g in zip(views, got):
            assert bitwise_equal(g, np.ascontiguousarray(v, dtype=dtype))


def test_writer_errors_are_clean_and_atomic(tmp_path):
    path = tmp_path / "out.caffemodel"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError, match="layer 'c5'.*5-D blob"):
        write_caffemodel(path, [("c5", "Convolution", [np.zeros((1, 2, 3, 4, 5))])], legacy_dims=True)
    with pytest.raises(ExportError, match="layer 's'.*'Scale' has no V1"):
        write_caffemodel(path, [("ok", "ReLU", []), ("s", "Scale", [np.ones(3)])], version=1)
    with pytest.raises(ExportError, match="complex"):
        write_caffemodel(path, [("c", "Scale", [np.ones(3, np.complex64)])])

    def layers():
        yield ("a", "InnerProduct", [np.ones((3, 4), np.float32)])
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_caffemodel(path, layers())
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.caffemodel"]  # no temporary file left behind
