"""Writing ONNX model files atomically; models over 2 GB go to ONNX external data beside the file."""

from __future__ import annotations

import os
import shutil
import tempfile

import onnx

from ..errors import FormatError
from .atomic import atomic_write

# protobuf cannot serialize a message of 2 GB or more; stay clear of the limit
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**24


def write_onnx(proto: onnx.ModelProto, path: str | os.PathLike, external_data: bool | None = None,
               serialized: bytes | None = None) -> list[str]:
    """Write `proto` to `path` (temporary file, then rename); returns the paths written.

    With `external_data` (default: when the model is too big for one protobuf), the tensors go to
    `<name>.data` next to the file, as ONNX external data; the data file is renamed into place first.
    `serialized` is the proto's bytes when the caller already has them.
    """
    path = os.fspath(path)
    if external_data is None:
        external_data = serialized is None and too_big_for_protobuf(proto)
    if not external_data:
        with atomic_write(path, "wb") as f:
            f.write(serialized if serialized is not None else proto.SerializeToString())
        return [path]
    directory = os.path.dirname(os.path.abspath(path))
    data_name = os.path.basename(path) + ".data"
    staging = tempfile.mkdtemp(prefix=".kconvert-", dir=directory)
    try:
        staged = os.path.join(staging, os.path.basename(path))
        onnx.save_model(proto, staged, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        onnx.checker.check_model(staged, full_check=True)
        umask = os.umask(0)
        os.umask(umask)
        for name in (data_name, os.path.basename(path)):
            os.chmod(os.path.join(staging, name), 0o666 & ~umask)
        os.replace(os.path.join(staging, data_name), os.path.join(directory, data_name))
        os.replace(staged, os.path.join(directory, os.path.basename(path)))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise FormatError(f"cannot write the ONNX model with external data: {e}", file=path) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [path, os.path.join(directory, data_name)]


def too_big_for_protobuf(proto: onnx.ModelProto) -> bool:
    """Whether the initializers alone come near protobuf's 2 GB message limit (then: external data)."""
    total = 0
    for t in proto.graph.initializer:
        total += len(t.raw_data) or 4 * len(t.float_data)
        if total > EXTERNAL_DATA_THRESHOLD:
            return True
    return False
