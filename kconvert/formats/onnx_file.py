"""Writing ONNX model files atomically; models over 2 GB go to ONNX external data beside the file."""

from __future__ import annotations

import os
import shutil
import tempfile

import onnx

from ..errors import FormatError
from .atomic import TEMP_MARK, _target, atomic_write, commit

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
    target = _target(path)
    directory, name = os.path.split(target)
    data_name = name + ".data"
    # onnx writes the data file beside the model it saves: both go to a hidden staging folder in the target's
    # directory, then are renamed into place, the data file first. A run killed between the two renames leaves
    # the new data beside the old model; the other order would leave the new model beside the old data. Data
    # first means a first conversion never shows a model file whose data is missing or half-written.
    staging = tempfile.mkdtemp(prefix=f".{name}{TEMP_MARK}", dir=directory)
    try:
        staged = os.path.join(staging, name)
        onnx.save_model(proto, staged, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        onnx.checker.check_model(staged, full_check=True)
        commit([(os.path.join(staging, data_name), os.path.join(directory, data_name)), (staged, target)])
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise FormatError(f"cannot write the ONNX model with external data: {e}", file=path) from None
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
