"""kconvert.formats.caffe: our schema's field numbers, prototxt reading/upgrading/deploy filtering, mean files.

The wire format is proved against an independent Caffe reader: OpenCV 4.x (`cv2.dnn.readNetFromCaffe`)
loads a prototxt and a caffemodel serialized with our message classes and computes what numpy does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_close

from kconvert.errors import FormatError
from kconvert.formats.caffe import (
    BlobProto,
    NetParameter,
    deploy_net,
    read_mean_binaryproto,
    read_prototxt,
    schema,
    upgrade,
)
from kconvert.formats.caffe.prototxt import V1_TYPES

# ----------------------------------------------------------------------------------------------- schema

# (message, field, number) as in BVLC caffe.proto (see shared/reference/caffe_semantics.md), plus forks.
FIELD_NUMBERS = [
    ("NetParameter", "name", 1), ("NetParameter", "layers", 2), ("NetParameter", "input", 3),
    ("NetParameter", "input_dim", 4), ("NetParameter", "input_shape", 8), ("NetParameter", "layer", 100),
    ("LayerParameter", "name", 1), ("LayerParameter", "type", 2), ("LayerParameter", "bottom", 3),
    ("LayerParameter", "top", 4), ("LayerParameter", "param", 6), ("LayerParameter", "blobs", 7),
    ("LayerParameter", "include", 8), ("LayerParameter", "exclude", 9), ("LayerParameter", "phase", 10),
    ("LayerParameter", "concat_param", 104), ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "eltwise_param", 110), ("LayerParameter", "inner_product_param", 117),
    ("LayerParameter", "lrn_param", 118), ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "power_param", 122), ("LayerParameter", "relu_param", 123),
    ("LayerParameter", "softmax_param", 125), ("LayerParameter", "slice_param", 126),
    ("LayerParameter", "prelu_param", 131), ("LayerParameter", "reshape_param", 133),
    ("LayerParameter", "flatten_param", 135), ("LayerParameter", "batch_norm_param", 139),
    ("LayerParameter", "elu_param", 140), ("LayerParameter", "scale_param", 142),
    ("LayerParameter", "input_param", 143), ("LayerParameter", "crop_param", 144),
    ("LayerParameter", "clip_param", 148), ("LayerParameter", "permute_param", 202),
    ("V1LayerParameter", "layer", 1), ("V1LayerParameter", "bottom", 2), ("V1LayerParameter", "top", 3),
    ("V1LayerParameter", "name", 4), ("V1LayerParameter", "type", 5), ("V1LayerParameter", "blobs", 6),
    ("V1LayerParameter", "concat_param", 9), ("V1LayerParameter", "convolution_param", 10),
    ("V1LayerParameter", "inner_product_param", 17), ("V1LayerParameter", "lrn_param", 18),
    ("V1LayerParameter", "pooling_param", 19), ("V1LayerParameter", "eltwise_param", 24),
    ("V1LayerParameter", "include", 32), ("V1LayerParameter", "param", 1001),
    ("V0LayerParameter", "kernelsize", 8), ("V0LayerParameter", "pad", 7), ("V0LayerParameter", "blobs", 50),
    ("V0LayerParameter", "k", 22), ("V0LayerParameter", "concat_dim", 65),
    ("BlobProto", "num", 1), ("BlobProto", "channels", 2), ("BlobProto", "height", 3), ("BlobProto", "width", 4),
    ("BlobProto", "data", 5), ("BlobProto", "shape", 7), ("BlobProto", "double_data", 8),
    ("BlobProto", "raw_data_type", 10), ("BlobProto", "raw_data", 12), ("BlobShape", "dim", 1),
    ("PoolingParameter", "round_mode", 13), ("PoolingParameter", "global_pooling", 12),
    ("ConvolutionParameter", "dilation", 18), ("ConvolutionParameter", "group", 5),
    ("ConcatParameter", "axis", 2), ("ConcatParameter", "concat_dim", 1), ("SliceParameter", "axis", 3),
    ("BatchNormParameter", "eps", 3), ("ScaleParameter", "bias_term", 4), ("NetStateRule", "phase", 1),
    ("TransformationParameter", "mean_file", 4), ("ParamSpec", "lr_mult", 3), ("Datum", "float_data", 6),
]


@pytest.mark.parametrize("message,field,number", FIELD_NUMBERS, ids=[f"{m}.{f}" for m, f, _ in FIELD_NUMBERS])
def test_field_numbers_are_caffes(message, field, number):
    desc = schema.POOL.FindMessageTypeByName(f"caffe.{message}")
    assert desc.fields_by_name[field].number == number


def test_enums_and_defaults_are_caffes():
    v1 = schema.V1LayerParameter.LayerType
    assert {n: v1.Value(n) for n in ("CONCAT", "CONVOLUTION", "DROPOUT", "FLATTEN", "INNER_PRODUCT", "LRN",
                                     "POOLING", "RELU", "SOFTMAX", "SPLIT", "ELTWISE", "POWER", "SLICE",
                                     "DECONVOLUTION", "TANH", "SOFTMAX_LOSS")} == {
        "CONCAT": 3, "CONVOLUTION": 4, "DROPOUT": 6, "FLATTEN": 8, "INNER_PRODUCT": 14, "LRN": 15,
        "POOLING": 17, "RELU": 18, "SOFTMAX": 20, "SPLIT": 22, "ELTWISE": 25, "POWER": 26, "SLICE": 33,
        "DECONVOLUTION": 39, "TANH": 23, "SOFTMAX_LOSS": 21}
    assert set(V1_TYPES) == set(v1.keys())  # every V1 enum value has a V2 name
    assert (schema.PoolingParameter.CEIL, schema.PoolingParameter.FLOOR) == (0, 1)
    assert (schema.TRAIN, schema.TEST) == (0, 1)
    eltwise = schema.message_class("EltwiseParameter")
    assert (eltwise.PROD, eltwise.SUM, eltwise.MAX) == (0, 1, 2)
    # defaults carry meaning (an unset field is read as its default)
    layer = schema.LayerParameter()
    assert layer.pooling_param.stride == 1 and layer.pooling_param.round_mode == schema.PoolingParameter.CEIL
    assert layer.convolution_param.group == 1 and layer.convolution_param.bias_term is True
    assert layer.lrn_param.local_size == 5 and layer.lrn_param.k == 1.0 and layer.lrn_param.beta == 0.75
    assert layer.batch_norm_param.eps == pytest.approx(1e-5)
    assert layer.batch_norm_param.moving_average_fraction == pytest.approx(0.999)
    assert layer.eltwise_param.operation == eltwise.SUM
    assert layer.concat_param.axis == 1 and layer.softmax_param.axis == 1 and layer.crop_param.axis == 2
    assert layer.flatten_param.end_axis == -1 and layer.reshape_param.num_axes == -1
    assert layer.scale_param.num_axes == 1 and layer.scale_param.bias_term is False
    assert layer.exp_param.base == -1.0 and layer.power_param.power == 1.0
    assert layer.dropout_param.dropout_ratio == 0.5 and layer.elu_param.alpha == 1.0
    assert schema.NetState().phase == schema.TEST


# ----------------------------------------------------------------------------------------------- prototxt V2

V2_QUIRKS = """# a net written by hand, the way real files look
name: 'quirky'	# single quotes, tab
layer {
\tname: "data"; type: "Input", top: "data"
\tinput_param { shape: { dim: 2 dim: 3 dim: 17 dim: 11 } }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0. }
  convolution_param {
    num_output: 5, kernel_h: 3; kernel_w: 2
    pad_h: 1 pad_w: 0 stride: 2 group: 1 dilation: 1
    weight_filler { type: 'xavier' }  bias_filler { type: "constant" value: 0. }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 1e-4 } }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 ceil_mode: false }  # fork spelling
}
layer {
  name: "scale" type: "Power" bottom: "pool1" top: "pow"
  power_param { power: .5 scale: 2.5e+1 shift: -1 }
}
layer { name: "cat" type: "Concat" bottom: "pow" bottom: "pool1" top: "cat" concat_param { axis: 1 } }
"""


def test_v2_text_with_real_file_quirks(tmp_path):
    path = tmp_path / "quirky.prototxt"
    path.write_text(V2_QUIRKS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown fields here: no warning either
        net = read_prototxt(path)
    assert net.name == "quirky"
    assert [(lay.name, lay.type) for lay in net.layer] == [
        ("data", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("pool1", "Pooling"),
        ("scale", "Power"), ("cat", "Concat")]
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 3, 17, 11]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    cp = conv.convolution_param
    assert (cp.num_output, cp.kernel_h, cp.kernel_w, cp.pad_h, cp.pad_w) == (5, 3, 2, 1, 0)
    assert list(cp.stride) == [2] and list(cp.dilation) == [1] and cp.weight_filler.type == "xavier"
    assert net.layer[2].relu_param.negative_slope == pytest.approx(1e-4)
    assert list(net.layer[2].top) == list(net.layer[2].bottom) == ["conv1"]  # in-place kept as written
    pp = net.layer[3].pooling_param
    assert pp.pool == schema.PoolingParameter.AVE and pp.round_mode == schema.PoolingParameter.FLOOR
    pw = net.layer[4].power_param
    assert (pw.power, pw.scale, pw.shift) == (0.5, 25.0, -1.0)
    assert list(net.layer[5].bottom) == ["pow", "pool1"]
    assert upgrade(net) == net  # already current: nothing to change
    assert read_prototxt(V2_QUIRKS) == net and read_prototxt(str(path)) == net
    assert read_prototxt(V2_QUIRKS.encode()) == net


@pytest.mark.parametrize("text,mode", [("ceil_mode: false", "FLOOR"), ("ceil_mode: true", "CEIL"),
                                       ("ceil_mode: 0", "FLOOR"), ("ceil_mode : False", "FLOOR"),
                                       ("round_mode: FLOOR", "FLOOR"), ("round_mode: CEIL", "CEIL"), ("", "CEIL")])
def test_pooling_rounding_both_spellings(text, mode):
    net = read_prototxt(f'layer {{ name: "p" type: "Pooling" pooling_param {{ kernel_size: 3 {text} }} }}')
    assert schema.PoolingParameter.RoundMode.Name(net.layer[0].pooling_param.round_mode) == mode


def test_ceil_mode_outside_pooling_is_not_rewritten():
    with pytest.warns(UserWarning, match=r"ConvolutionParameter\.ceil_mode"):
        net = read_prototxt('layer { name: "c" convolution_param { ceil_mode: false num_output: 3 } '
                            'pooling_param { ceil_mode: false } }')
    assert net.layer[0].convolution_param.num_output == 3
    assert net.layer[0].pooling_param.round_mode == schema.PoolingParameter.FLOOR


def test_unknown_fork_fields_skipped_with_one_warning(tmp_path):
    """Fields of forks kconvert does not model (YOLO's reorg and region layers, an `engine` on a layer) are skipped
    with one warning naming each; the fork fields kconvert knows (SSD's norm/permute params) parse."""
    path = tmp_path / "yolo.prototxt"
    path.write_text("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 6 } } }
layer { name: "norm" type: "Normalize" bottom: "data" top: "norm"
  norm_param { across_spatial: false scale_filler { type: "constant" value: 20 } channel_shared: false }
}
layer { name: "perm" type: "Permute" bottom: "norm" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "reorg" type: "Reorg" bottom: "perm" top: "reorg"
  reorg_param { stride: 2 }
}
layer { name: "region" type: "Region" bottom: "reorg" top: "region" region_param { classes: 20 } engine: CAFFE }
layer { name: "region2" type: "Region" bottom: "region" top: "region2" region_param { classes: 20 } }
""")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = read_prototxt(path)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert str(path) in msg
    for name in ("LayerParameter.reorg_param (line 8)", "LayerParameter.region_param (line 10, 2 times)",
                 "LayerParameter.engine"):
        assert name in msg
    assert "permute_param" not in msg and "norm_param" not in msg and "stride" not in msg  # known; nested
    assert [lay.name for lay in net.layer] == ["data", "norm", "perm", "reorg", "region", "region2"]
    assert not net.layer[1].norm_param.across_spatial
    assert list(net.layer[2].permute_param.order) == [0, 2, 3, 1]
    assert list(net.layer[3].bottom) == ["perm"]


@pytest.mark.parametrize("text,line,what", [
    ('name: "t"\nlayer {\n  name: "a"\n  type: "ReLU"\n', 4, "truncated"),          # truncated
    ('layer {\n name: "a }\n', 2, "quote"),                                          # unterminated string
    ('layer { name: "a" }\n}\n', 2, "}"),                                             # extra brace
    ('layer {\n convolution_param { num_output: -3 } }', 2, "-3"),                   # out of range
    ('layer {\n pooling_param { pool: MEDIAN } }', 2, "MEDIAN"),                      # unknown enum value
    ('layers { type: CONVOLUTION_3D }', 1, "CONVOLUTION_3D"),
])
def test_malformed_text_names_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        read_prototxt(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: line {line}") and what in msg


def test_files_that_are_not_prototxt(tmp_path):
    binary = tmp_path / "w.caffemodel"
    binary.write_bytes(NetParameter(name="n", layer=[schema.LayerParameter(name="a")]).SerializeToString()
                       + b"\x00\x01\x02")
    with pytest.raises(FormatError, match="binary file"):
        read_prototxt(binary)
    with pytest.raises(FormatError, match="no such file"):
        read_prototxt(tmp_path / "missing.prototxt")
    empty = tmp_path / "empty.prototxt"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(FormatError, match="no layers"):
        read_prototxt(empty)


# ----------------------------------------------------------------------------------------------- V1 / V0

V1_TEXT = """
name: "v1net"
layers {
  name: "data" type: DATA top: "data" top: "label"
  data_param { source: "train_lmdb" batch_size: 16 scale: 0.00390625 mean_file: "mean.binaryproto" crop_size: 27 }
  include { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 param: "w1" param: "b1"
  convolution_param { num_output: 6 kernel_size: 5 stride: 1 group: 2 }
}
layers { name: "tanh1" type: TANH bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "up1" type: DECONVOLUTION bottom: "pool1" top: "up1" convolution_param { num_output: 3 kernel_size: 4 stride: 2 } }
layers { name: "sum" type: ELTWISE bottom: "up1" bottom: "up1" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layers { name: "cat" type: CONCAT bottom: "sum" bottom: "up1" top: "cat" concat_param { concat_dim: 1 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "cat" top: "fc" inner_product_param { num_output: 10 } }
layers { name: "drop" type: DROPOUT bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss" loss_weight: 1 }
layers { name: "lrn" type: LRN bottom: "pool1" top: "lrn" lrn_param { local_size: 3 alpha: 2e-4 beta: 0.7 } }
"""


def test_v1_layers_upgrade_field_by_field():
    old = read_prototxt(V1_TEXT)
    net = upgrade(old)
    assert len(old.layers) == 11 and len(old.layer) == 0  # the input is not changed
    assert len(net.layers) == 0
    assert [(lay.name, lay.type) for lay in net.layer] == [
        ("data", "Data"), ("conv1", "Convolution"), ("tanh1", "TanH"), ("pool1", "Pooling"),
        ("up1", "Deconvolution"), ("sum", "Eltwise"), ("cat", "Concat"), ("fc", "InnerProduct"),
        ("drop", "Dropout"), ("loss", "SoftmaxWithLoss"), ("lrn", "LRN")]
    data, conv = net.layer[0], net.layer[1]
    assert list(data.top) == ["data", "label"] and data.include[0].phase == schema.TRAIN
    assert data.data_param.source == "train_lmdb" and data.data_param.batch_size == 16
    assert not data.data_param.HasField("mean_file") and not data.data_param.HasField("scale")
    assert data.transform_param.mean_file == "mean.binaryproto" and data.transform_param.crop_size == 27
    assert data.transform_param.scale == pytest.approx(1 / 256)
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [("w1", 1, 1), ("b1", 2, 0)]
    assert conv.convolution_param.num_output == 6 and list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.group == 2
    assert net.layer[3].pooling_param.kernel_size == 2 and net.layer[3].pooling_param.stride == 2
    assert net.layer[4].convolution_param.num_output == 3
    assert list(net.layer[5].eltwise_param.coeff) == [1.0, -0.5]
    assert net.layer[6].concat_param.concat_dim == 1 and list(net.layer[6].bottom) == ["sum", "up1"]
    assert net.layer[7].inner_product_param.num_output == 10
    assert net.layer[8].dropout_param.dropout_ratio == pytest.approx(0.3) and list(net.layer[8].top) == ["fc"]
    assert list(net.layer[9].loss_weight) == [1.0]
    lrn = net.layer[10].lrn_param
    assert (lrn.local_size, lrn.beta) == (3, pytest.approx(0.7)) and lrn.alpha == pytest.approx(2e-4)


def test_v1_and_v2_mixed_is_refused():
    net = read_prototxt('layers { name: "a" type: RELU } layer { name: "b" type: "ReLU" }')
    with pytest.raises(FormatError, match="mixes"):
        upgrade(net)


V0_TEXT = """
name: "v0net"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 19 input_dim: 15
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 2 group: 1 biasterm: false
          weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 weight_decay: 1 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } bottom: "pad2" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 k: 2 } bottom: "pool1" top: "norm1" }
layers { layer { name: "cat" type: "concat" concat_dim: 1 } bottom: "norm1" bottom: "pool1" top: "cat" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.25 } bottom: "cat" top: "cat" }
layers { layer { name: "flat" type: "flatten" } bottom: "cat" top: "flat" }
layers { layer { name: "fc" type: "innerproduct" num_output: 10 } bottom: "flat" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_v0_layers_with_padding_layers_upgrade():
    net = upgrade(read_prototxt(V0_TEXT))
    assert len(net.input) == len(net.input_dim) == 0
    assert [(lay.name, lay.type, list(lay.bottom), list(lay.top)) for lay in net.layer] == [
        ("input", "Input", [], ["data"]),
        ("conv1", "Convolution", ["data"], ["conv1"]),    # padding layer gone, its input rewired
        ("relu1", "ReLU", ["conv1"], ["conv1"]),
        ("pool1", "Pooling", ["conv1"], ["pool1"]),
        ("norm1", "LRN", ["pool1"], ["norm1"]),
        ("cat", "Concat", ["norm1", "pool1"], ["cat"]),
        ("drop", "Dropout", ["cat"], ["cat"]),
        ("flat", "Flatten", ["cat"], ["flat"]),
        ("fc", "InnerProduct", ["flat"], ["fc"]),
        ("prob", "Softmax", ["fc"], ["prob"])]
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 3, 19, 15]
    conv = net.layer[1]
    cp = conv.convolution_param
    assert list(cp.pad) == [2] and list(cp.kernel_size) == [5] and list(cp.stride) == [2]
    assert cp.num_output == 8 and cp.bias_term is False and cp.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1)]
    pp = net.layer[3].pooling_param
    assert (pp.pad, pp.kernel_size, pp.stride, pp.pool) == (1, 3, 2, schema.PoolingParameter.AVE)
    lrn = net.layer[4].lrn_param
    assert (lrn.local_size, lrn.beta, lrn.k) == (3, 0.75, 2.0) and lrn.alpha == pytest.approx(1e-4)
    assert net.layer[5].concat_param.concat_dim == 1
    assert net.layer[6].dropout_param.dropout_ratio == 0.25
    assert net.layer[8].inner_product_param.num_output == 10


def test_v0_padding_into_a_non_conv_layer_is_an_error():
    text = ('input: "data" layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "p" } '
            'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }')
    with pytest.raises(FormatError, match="layer 'r'.*padding"):
        upgrade(read_prototxt(text))
    with pytest.raises(FormatError, match="layer 'x'.*unknown V0 layer type 'warp'"):
        upgrade(read_prototxt('input: "d" layers { layer { name: "x" type: "warp" } bottom: "d" top: "y" }'))


# ----------------------------------------------------------------------------------------------- inputs


def test_input_forms():
    by_shape = upgrade(read_prototxt('input: "a" input_shape { dim: 2 dim: 5 } input: "b" '
                                     'input_shape { dim: 2 dim: 3 dim: 7 dim: 9 } '
                                     'layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" }'))
    first = by_shape.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 5], [2, 3, 7, 9]]
    assert [lay.name for lay in by_shape.layer] == ["input", "c"]
    by_dim = upgrade(read_prototxt('input: "x" input_dim: 3 input_dim: 1 input_dim: 13 input_dim: 6 '
                                   'input: "y" input_dim: 3 input_dim: 2 input_dim: 1 input_dim: 1 '
                                   'layer { name: "r" type: "ReLU" bottom: "x" top: "r" }'))
    assert [list(s.dim) for s in by_dim.layer[0].input_param.shape] == [[3, 1, 13, 6], [3, 2, 1, 1]]
    layer = read_prototxt('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 } } }')
    assert upgrade(layer) == layer
    with pytest.raises(FormatError, match="2 inputs need 8 input_dim values"):
        upgrade(read_prototxt('input: "x" input: "y" input_dim: 1 input_dim: 3 input_dim: 5 input_dim: 5'))
    with pytest.raises(FormatError, match="2 inputs but 1 input_shape"):
        upgrade(read_prototxt('input: "x" input: "y" input_shape { dim: 1 }'))


# ----------------------------------------------------------------------------------------------- deploy

# A CaffeNet-style training definition, written for this test: both data phases, per-blob learning rates,
# LRN, grouped convolutions, in-place ReLU/Dropout, an Accuracy layer for TEST and the training loss.
CAFFENET_TRAIN_VAL = """
name: "CaffeNetLike"
layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param { mirror: true crop_size: 227 mean_file: "data/ilsvrc12/imagenet_mean.binaryproto" }
  data_param { source: "examples/imagenet/ilsvrc12_train_lmdb" batch_size: 256 backend: LMDB }
}
layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TEST }
  transform_param { mirror: false crop_size: 227 mean_file: "data/ilsvrc12/imagenet_mean.binaryproto" }
  data_param { source: "examples/imagenet/ilsvrc12_val_lmdb" batch_size: 50 backend: LMDB }
}
layer {
  name: "conv1"  type: "Convolution"  bottom: "data"  top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 96 kernel_size: 11 stride: 4
    weight_filler { type: "gaussian" std: 0.01 }
    bias_filler { type: "constant" value: 0 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 }
}
layer {
  name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }
}
layer {
  name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 1 } }
}
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool2" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc6" top: "fc8" inner_product_param { num_output: 1000 } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc8" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
layer { name: "silence" type: "Silence" bottom: "label" }
"""


def test_deploy_of_a_train_val_net(tmp_path):
    path = tmp_path / "train_val.prototxt"
    path.write_text(CAFFENET_TRAIN_VAL)
    net = deploy_net(read_prototxt(path), file=path)
    assert [(lay.name, lay.type) for lay in net.layer] == [
        ("data", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("pool1", "Pooling"), ("norm1", "LRN"),
        ("conv2", "Convolution"), ("relu2", "ReLU"), ("pool2", "Pooling"), ("fc6", "InnerProduct"),
        ("relu6", "ReLU"), ("drop6", "Dropout"), ("fc8", "InnerProduct")]
    data = net.layer[0]
    assert list(data.top) == ["data"] and len(data.input_param.shape) == 0  # label: only the loss read it
    assert data.transform_param.mirror is False and data.transform_param.crop_size == 227  # the TEST one
    assert data.transform_param.mean_file.endswith("imagenet_mean.binaryproto")
    assert net.layer[5].convolution_param.group == 2 and list(net.layer[5].convolution_param.pad) == [2]
    assert list(net.layer[10].top) == ["fc6"]
    train = deploy_net(read_prototxt(path), phase=schema.TRAIN)
    assert train.layer[0].transform_param.mirror is True and "accuracy" not in [lay.name for lay in train.layer]


def test_deploy_keeps_data_shapes_and_drops_train_layers():
    net = deploy_net(read_prototxt("""
layer { name: "mem" type: "MemoryData" top: "img" top: "lbl"
        memory_data_param { batch_size: 4 channels: 3 height: 9 width: 5 } }
layer { name: "dummy" type: "DummyData" top: "aux" dummy_data_param { shape { dim: 4 dim: 7 } } }
layer { name: "c" type: "Concat" bottom: "img" bottom: "img" top: "c" }
layer { name: "ip" type: "InnerProduct" bottom: "aux" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "euc" type: "EuclideanLoss" bottom: "ip" bottom: "lbl" top: "l2" }
layer { name: "h5" type: "HDF5Output" bottom: "ip" bottom: "lbl" }
"""))
    assert [(lay.name, lay.type, list(lay.top)) for lay in net.layer] == [
        ("mem", "Input", ["img"]), ("dummy", "Input", ["aux"]), ("c", "Concat", ["c"]), ("ip", "InnerProduct", ["ip"])]
    assert list(net.layer[0].input_param.shape[0].dim) == [4, 3, 9, 5]
    assert list(net.layer[1].input_param.shape[0].dim) == [4, 7]


def test_deploy_rules_levels_and_stages():
    net = read_prototxt("""
state { stage: "deploy" }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { phase: TEST stage: "deploy" } }
layer { name: "b" type: "ReLU" bottom: "x" top: "b" include { stage: "export" } }
layer { name: "c" type: "ReLU" bottom: "x" top: "c" exclude { not_stage: "export" } }
layer { name: "d" type: "ReLU" bottom: "x" top: "d" include { min_level: 1 } }
layer { name: "e" type: "ReLU" bottom: "x" top: "e" exclude { phase: TEST } }
layer { name: "f" type: "ReLU" bottom: "x" top: "f" include { phase: TRAIN } include { max_level: 0 } }
""")
    assert [lay.name for lay in deploy_net(net).layer] == ["in", "a", "f"]
    assert [lay.name for lay in deploy_net(net, stages=["export"], level=1).layer] == ["in", "a", "b", "c", "d"]
    both = read_prototxt('layer { name: "g" type: "ReLU" include { phase: TEST } exclude { stage: "x" } }')
    with pytest.raises(FormatError, match="layer 'g'.*not both"):
        deploy_net(both)


def test_python_layer_is_a_clear_error(tmp_path):
    path = tmp_path / "py.prototxt"
    path.write_text("""
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "feed" type: "Python" top: "y" python_param { module: "my_layers" layer: "Feeder" } include { phase: TRAIN } }
layer { name: "roi" type: "Python" bottom: "x" top: "z" python_param { module: "rpn.proposal" layer: "ProposalLayer" } }
""")
    with pytest.raises(FormatError) as info:
        deploy_net(read_prototxt(path), file=path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: layer 'roi'") and "rpn.proposal" in msg and "ProposalLayer" in msg
    path.write_text(path.read_text().replace('layer { name: "roi"', '# layer { name: "roi"'))
    assert [lay.name for lay in deploy_net(read_prototxt(path)).layer] == ["in"]  # TRAIN-only Python layer


def test_deploy_upgrades_legacy_nets_first():
    net = deploy_net(read_prototxt(V1_TEXT))
    assert net.layer[0].name == "conv1" and "loss" not in [lay.name for lay in net.layer]
    assert all(lay.type for lay in net.layer) and not len(net.layers)


# ----------------------------------------------------------------------------------------------- mean files


def _mean_blob(values: np.ndarray, legacy: bool) -> BlobProto:
    blob = BlobProto()
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = values.shape
    else:
        blob.shape.dim.extend(values.shape)
    blob.data.extend(values.ravel().tolist())
    return blob


@pytest.mark.parametrize("legacy", [True, False], ids=["num-channels-height-width", "shape"])
def test_mean_binaryproto_round_trip(tmp_path, rng, legacy):
    mean = (rng.uniform(90, 130, size=(1, 3, 7, 5))).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(_mean_blob(mean, legacy).SerializeToString())
    got = read_mean_binaryproto(path)
    assert got.dtype == np.float32 and got.shape == (1, 3, 7, 5)
    np.testing.assert_array_equal(got, mean)


def test_mean_binaryproto_double_and_fp16(tmp_path, rng):
    mean = rng.uniform(-2, 2, size=(3, 4, 6))
    blob = BlobProto()
    blob.shape.dim.extend(mean.shape)
    blob.double_data.extend(mean.ravel().tolist())
    path = tmp_path / "double.binaryproto"
    path.write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(read_mean_binaryproto(path), mean.astype(np.float32))
    half = BlobProto(raw_data_type=schema.message_class("BlobProto").DESCRIPTOR.fields_by_name[
        "raw_data_type"].enum_type.values_by_name["FLOAT16"].number, raw_data=mean.astype("<f2").tobytes())
    half.shape.dim.extend(mean.shape)
    path.write_bytes(half.SerializeToString())
    np.testing.assert_array_equal(read_mean_binaryproto(path), mean.astype(np.float16).astype(np.float32))


def test_mean_binaryproto_errors(tmp_path, rng):
    path = tmp_path / "mean.binaryproto"
    good = _mean_blob(rng.uniform(size=(1, 3, 4, 4)).astype(np.float32), legacy=True).SerializeToString()
    path.write_bytes(good[:-7])
    with pytest.raises(FormatError, match=f"{path}: not a Caffe BlobProto \\(truncated"):
        read_mean_binaryproto(path)
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_mean_binaryproto(path)
    wrong = BlobProto(num=1, channels=3, height=2, width=2, data=[1.0, 2.0])
    path.write_bytes(wrong.SerializeToString())
    with pytest.raises(FormatError, match=r"shape \(1, 3, 2, 2\) needs 12 values, the file holds 2"):
        read_mean_binaryproto(path)
    with pytest.raises(FormatError, match="no such file"):
        read_mean_binaryproto(tmp_path / "nope.binaryproto")


# ----------------------------------------------------------------------------------------------- OpenCV interop

OPENCV_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 8 } } }
layer {
  name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 }
}
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def _numpy_reference(x, w, b):
    """Caffe's conv (pad_h 1) + ReLU + 2x2/2 max pooling with ceil rounding (windows clipped at the edge)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    oh, ow = h + 2 - kh + 1, wd - kw + 1
    y = np.zeros((n, o, oh, ow)) + b[None, :, None, None]
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
    y = np.maximum(y, 0)
    ph, pw = -(-(oh - 2) // 2) + 1, -(-(ow - 2) // 2) + 1
    out = np.empty((n, o, ph, pw))
    for i in range(ph):
        for j in range(pw):
            out[:, :, i, j] = y[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(2, 3))
    return out


def _blob(array: np.ndarray, form: str) -> BlobProto:
    blob = BlobProto()
    if form == "legacy":  # right-aligned 4-D dims
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    if form == "fp16":
        blob.raw_data_type = schema.POOL.FindEnumTypeByName("caffe.Type").values_by_name["FLOAT16"].number
        blob.raw_data = array.astype("<f2").tobytes()
    else:
        blob.data.extend(array.ravel().tolist())
    return blob


@pytest.mark.parametrize("form", ["shape", "legacy", "fp16", "v1"])
def test_opencv_reads_our_prototxt_and_caffemodel(tmp_path, rng, form):
    import cv2
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = (rng.standard_normal((4, 3, 3, 2)) / np.sqrt(3 * 3 * 2)).astype(np.float32)
    b = rng.uniform(-0.2, 0.2, size=4).astype(np.float32)
    if form == "fp16":
        w, b = w.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32)
    net = NetParameter(name="tiny")
    if form == "v1":  # legacy V1 `layers` entries: type enum and blobs at V1's own field numbers
        layer = net.layers.add(name="conv", type=schema.V1LayerParameter.CONVOLUTION, bottom=["data"], top=["conv"])
        layer.convolution_param.num_output = 4
        layer.blobs.extend([_blob(w, "legacy"), _blob(b, "legacy")])
        net.layers.add(name="relu", type=schema.V1LayerParameter.RELU, bottom=["conv"], top=["conv"])
    else:
        text = read_prototxt(OPENCV_NET)
        net.layer.extend(text.layer)  # a trained model holds the layer definitions too
        net.layer[1].blobs.extend([_blob(w, form), _blob(b, form)])
    proto, model = tmp_path / "tiny.prototxt", tmp_path / "tiny.caffemodel"
    proto.write_text(OPENCV_NET)
    model.write_bytes(net.SerializeToString())
    assert NetParameter.FromString(model.read_bytes()) == net
    cv_net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv_net.setInput(x)
    got = cv_net.forward("pool")
    assert got.shape == (2, 4, 5, 4)  # ceil rounding: 9 -> 5 and 7 -> 4
    assert np.isfinite(got).all() and 0.2 < (got > 0).mean() < 1.0
    assert_close(got, _numpy_reference(x, w, b), what=f"OpenCV on our {form} caffemodel")
