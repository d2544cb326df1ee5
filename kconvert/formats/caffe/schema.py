"""Caffe message classes, built at import from the committed descriptor set (no protoc, no generated code).

`caffe_descriptor.pb` is `caffe.proto` compiled by `make_descriptor.py`. The classes live in a private
descriptor pool, so they never clash with a `caffe_pb2` module (pycaffe) that a program also imports.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "POOL", "FILE", "message_class",
    "NetParameter", "LayerParameter", "V1LayerParameter", "V0LayerParameter",
    "BlobProto", "BlobShape", "BlobProtoVector", "Datum", "ParamSpec", "NetState", "NetStateRule",
    "FillerParameter", "TransformationParameter", "InputParameter", "PoolingParameter",
    "ConvolutionParameter", "TRAIN", "TEST",
]

_DESCRIPTOR_FILE = Path(__file__).with_name("caffe_descriptor.pb")
PACKAGE = "caffe"


def _load_pool() -> tuple[descriptor_pool.DescriptorPool, object]:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(_DESCRIPTOR_FILE.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return pool, pool.FindFileByName(files.file[0].name)


POOL, FILE = _load_pool()

if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
    def _make_class(descriptor):
        return message_factory.GetMessageClass(descriptor)
else:  # protobuf 4.21
    _FACTORY = message_factory.MessageFactory(POOL)

    def _make_class(descriptor):
        return _FACTORY.GetPrototype(descriptor)


def message_class(name: str) -> type:
    """The message class for a Caffe message name ("NetParameter", "PoolingParameter", ...)."""
    return _make_class(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = message_class("NetParameter")
LayerParameter = message_class("LayerParameter")
V1LayerParameter = message_class("V1LayerParameter")
V0LayerParameter = message_class("V0LayerParameter")
BlobProto = message_class("BlobProto")
BlobShape = message_class("BlobShape")
BlobProtoVector = message_class("BlobProtoVector")
Datum = message_class("Datum")
ParamSpec = message_class("ParamSpec")
NetState = message_class("NetState")
NetStateRule = message_class("NetStateRule")
FillerParameter = message_class("FillerParameter")
TransformationParameter = message_class("TransformationParameter")
InputParameter = message_class("InputParameter")
PoolingParameter = message_class("PoolingParameter")
ConvolutionParameter = message_class("ConvolutionParameter")

TRAIN = POOL.FindEnumTypeByName(f"{PACKAGE}.Phase").values_by_name["TRAIN"].number
TEST = POOL.FindEnumTypeByName(f"{PACKAGE}.Phase").values_by_name["TEST"].number
