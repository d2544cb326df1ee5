"""Fuzzing the Caffe readers: prototxt text, binary caffemodel, `mean.binaryproto`, and the conversion of the pair.

Mutated committed fixtures, then hostile files: prototxt with huge repeated dims, wrong field types and deep
nesting; caffemodels whose declared blob shapes do not match their data, huge shapes, truncated varints; mean
files that lie about their shape.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kconvert.formats.caffe.schema import BlobProto

from .harness import FIXTURES, Case, assert_contract, cases_per_file, examples, mutation_cases, run_all

CAFFE = FIXTURES / "caffe"
NETS = ["tiny", "lenet", "v0_layers", "v1_layers"]
WARM_UP = [{"reader": "prototxt", "path": str(CAFFE / f"{n}.prototxt"), "extra": {"caffemodel": str(CAFFE / f"{n}.caffemodel")}}
           for n in NETS]


@pytest.fixture(scope="module")
def mean_file(tmp_path_factory):
    blob = BlobProto(num=1, channels=3, height=5, width=7)
    blob.data.extend(np.random.default_rng(0).uniform(0, 255, 105).astype("float32").tolist())
    path = tmp_path_factory.mktemp("mean") / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    return path


def test_mutated_caffe_files_keep_the_contract(worker, tmp_path, mean_file):
    corpus = []
    for n in NETS:
        proto, weights = CAFFE / f"{n}.prototxt", CAFFE / f"{n}.caffemodel"
        corpus += [("prototxt", proto, {"caffemodel": str(weights)}), ("caffemodel", weights, {"prototxt": str(proto)})]
    corpus += [("binaryproto", mean_file, {}), ("detect", CAFFE / "tiny.caffemodel", {}),
               ("detect", CAFFE / "tiny.prototxt", {})]
    outcomes = run_all(worker, mutation_cases(tmp_path, corpus, cases_per_file(60, len(corpus)), salt=4))
    assert_contract(outcomes)
    assert sum(o.status == "kerror" for o in outcomes) > len(outcomes) // 10


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    return bytes(out + bytes([v]))


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _blob(shape=None, legacy=None, data: bytes = b"") -> bytes:
    out = b""
    if legacy:
        out += b"".join(_field(i + 1, 0, _varint(d)) for i, d in enumerate(legacy))
    if data:
        out += _field(5, 2, data)
    if shape is not None:
        out += _field(7, 2, _field(1, 2, b"".join(_varint(d) for d in shape)))
    return out


def _net(*blobs: bytes, name: str = "conv1", type_: str = "Convolution") -> bytes:
    layer = _field(1, 2, name.encode()) + _field(2, 2, type_.encode()) + b"".join(_field(7, 2, b) for b in blobs)
    return _field(100, 2, layer)


def test_hostile_caffemodels_are_refused(worker, tmp_path):
    four = np.ones(4, "<f4").tobytes()
    cases = {
        "shape_needs_more_data": _net(_blob(shape=[2, 3], data=four)),
        "huge_shape": _net(_blob(shape=[10**9, 10**9, 10**9], data=four)),
        "shape_product_wraps": _net(_blob(shape=[2**32, 2**32, 4], data=four)),
        "negative_dim": _net(_blob(shape=[-1, 4], data=four)),
        "huge_legacy_dims": _net(_blob(legacy=[2**31 - 1] * 4, data=four)),
        "truncated_varint": _net(_blob(shape=[4], data=four))[:-len(four) - 3] + b"\xff\xff",
        "varint_too_long": _field(100, 2, b"\x0a" + b"\xff" * 12),
        "length_past_end": _field(100, 2, b"")[:-1] + _varint(1 << 40),
        "group_wire_type": b"\x0b\x0c",
        "field_zero": b"\x00\x00",
        "data_not_whole_floats": _net(_field(5, 2, b"\x00" * 7)),
    }
    _all_refused(worker, tmp_path, cases, "caffemodel")


def _all_refused(worker, tmp_path, cases: dict, kind: str) -> None:
    """Write each case as `<name>.<kind>`, read it with the `kind` reader: every one must be a kconvert error."""
    paths = {}
    for name, data in cases.items():
        paths[name] = tmp_path / f"{name}.{kind}"
        paths[name].write_bytes(data)
    assert_contract(run_all(worker, [Case(kind, str(p), name) for name, p in paths.items()]), expect_error=True)


def test_hostile_mean_files_are_refused(worker, tmp_path):
    four = np.ones(4, "<f4").tobytes()
    cases = {"mean_shape_lies": _blob(shape=[1, 3, 5, 7], data=four),
             "mean_huge_shape": _blob(shape=[2**32, 2**32, 4], data=four),
             "mean_wrapping_shape": _blob(shape=[2**62, 4, 1], data=four),
             "mean_negative": _blob(shape=[-4, -1], data=four),
             "mean_truncated": _blob(shape=[4], data=four)[:-3],
             "mean_empty_blob": _field(1, 0, _varint(1))}
    _all_refused(worker, tmp_path, cases, "binaryproto")


def test_hostile_prototxts_are_refused(worker, tmp_path):
    head = 'name: "n"\ninput: "data"\n'
    cases = {
        "huge_input_dims": head + "input_dim: 1000000000\n" * 4,
        "huge_shape_repeated": 'layer { name: "d" type: "Input" top: "d" input_param { shape { '
                               + "dim: 2147483647 " * 2000 + "} } }\n",
        "huge_num_output": head + "input_dim: 1\ninput_dim: 3\ninput_dim: 5\ninput_dim: 7\n"
                           'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                           "convolution_param { num_output: 4000000000 kernel_size: 3 } }\n",
        "huge_kernel": head + "input_dim: 1\ninput_dim: 3\ninput_dim: 5\ninput_dim: 7\n"
                       'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                       "convolution_param { num_output: 2 kernel_size: 3000000000 } }\n",
        "wrong_field_type": 'layer { name: "c" type: "Convolution" convolution_param { num_output: "many" } }\n',
        "enum_as_number_garbage": 'layers { name: "c" type: 9999 }\n',
        "deep_nesting": "layer { " * 20_000 + "} " * 20_000,
        "unbalanced": 'layer { name: "c" type: "ReLU" ',
        "cyclic_tops": head + "input_dim: 1\ninput_dim: 3\ninput_dim: 5\ninput_dim: 7\n"
                       'layer { name: "a" type: "ReLU" bottom: "b" top: "a" }\n'
                       'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n',
        "binary_junk": "\x00\x01\x02 layer {",
    }
    outcomes = []
    for name, text in cases.items():
        path = tmp_path / f"{name}.prototxt"
        path.write_text(text, encoding="utf-8")
        outcomes += run_all(worker, [Case("prototxt", str(path), name)])
    assert_contract(outcomes, expect_error=True)


_TEXT_VALUES = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats().map(repr), st.text(max_size=12).map(repr),
                         st.sampled_from(["{}", "{ dim: 99999999999 }", "true", "CEIL", "[1, 2]", "-0", "nan", "inf"]))


@settings(max_examples=examples(120), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(net=st.sampled_from(NETS), data=st.data())
def test_prototxt_values_of_any_type_keep_the_contract(worker, tmp_path_factory, net, data):
    lines = (CAFFE / f"{net}.prototxt").read_text().splitlines()
    valued = [i for i, line in enumerate(lines) if ":" in line]
    i = data.draw(st.sampled_from(valued))
    key = lines[i].split(":", 1)[0]
    lines[i] = f"{key}: {data.draw(_TEXT_VALUES)}"
    path = tmp_path_factory.mktemp("proto") / f"{net}.prototxt"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    extra = {"caffemodel": str(CAFFE / f"{net}.caffemodel")}
    assert_contract(run_all(worker, [Case("prototxt", str(path), f"{net} line {i + 1}: {lines[i][:60]}", extra)]))
