"""Caffe formats: our own schema (`caffe.proto`, shipped compiled), prototxt text, mean `.binaryproto` files.

The `.caffemodel` weight reader lives in `caffemodel.py`.
"""

from .binaryproto import blob_shape, blob_to_array, read_mean_binaryproto
from .prototxt import deploy_net, needs_upgrade, parse_prototxt, read_prototxt, upgrade, write_prototxt
from .schema import BlobProto, BlobShape, LayerParameter, NetParameter, V1LayerParameter, message_class

__all__ = [
    "read_prototxt", "parse_prototxt", "write_prototxt", "upgrade", "deploy_net", "needs_upgrade",
    "read_mean_binaryproto", "blob_to_array", "blob_shape",
    "NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto", "BlobShape", "message_class",
]
