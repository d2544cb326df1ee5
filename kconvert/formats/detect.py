"""Which model format a path holds, from its bytes (magic numbers, HDF5 layout) rather than its name.

`detect_format(path)` returns one of:

    'keras_h5_model'     legacy whole-model .h5 (root attr model_config / group model_weights)
    'keras_h5_weights'   legacy save_weights .h5 (root attr layer_names or layer_names0)
    'keras3_weights_h5'  Keras 3 / TF >= 2.12 .weights.h5 (groups layers/, vars/)
    'keras_zip'          Keras 3 .keras archive (ZIP with config.json)
    'json'               a Keras JSON configuration (to_json)
    'yaml'               a Keras YAML configuration (to_yaml)
    'caffe_prototxt'     a Caffe net definition in protobuf text (`layer {`, `layers {` or `input:` fields)
    'caffemodel'         Caffe weights: a binary NetParameter (its first field tags are checked)
    'caffe_binaryproto'  a Caffe mean file: one binary BlobProto (its first field tags are checked)

A TensorFlow SavedModel or TF checkpoint, or a Caffe solver prototxt, raises UnsupportedFormatError saying
what it is and what to do instead; anything else (missing, empty, unrecognised) raises FormatError naming the file.
"""

from __future__ import annotations

import os
import re
import zipfile

from ..errors import FormatError, UnsupportedFormatError
from .hdf5_safety import check_global_heaps
from .keras_h5 import has_hdf5_signature

__all__ = ["detect_format", "FORMATS", "CAFFE_FORMATS"]

CAFFE_FORMATS = ("caffe_prototxt", "caffemodel", "caffe_binaryproto")
FORMATS = ("keras_h5_model", "keras_h5_weights", "keras3_weights_h5", "keras_zip", "json", "yaml", *CAFFE_FORMATS)

ZIP_MAGIC = b"PK\x03\x04"
# Last 8 bytes of a TensorFlow checkpoint .index file (a LevelDB-style table): kTableMagicNumber.
TF_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_DATA_SHARD_SUFFIX = ".data-00000-of-00001"

_SAVEDMODEL_HINT = (
    "is a TensorFlow SavedModel, which kconvert does not read (it stores TensorFlow graphs, not a Keras "
    "configuration). Re-save the model from Keras with model.save('model.h5') or model.save('model.keras'), "
    "or export its weights with model.save_weights('weights.h5')"
)
_CHECKPOINT_RESAVE = (
    "Load it in Keras and re-save it with model.save_weights('weights.h5') or model.save('model.h5')"
)
_CHECKPOINT_HINT = (
    "is a TensorFlow checkpoint (save_weights without the .h5 suffix), which kconvert does not read. "
    + _CHECKPOINT_RESAVE
)


def _is_tf_index(path: str) -> bool:
    try:
        size = os.path.getsize(path)
        if size < 48:  # a table footer is 48 bytes
            return False
        with open(path, "rb") as f:
            f.seek(size - 8)
            return f.read(8) == TF_TABLE_MAGIC
    except OSError:
        return False


def _checkpoint_prefix_exists(prefix: str) -> bool:
    return os.path.isfile(prefix + ".index") and (
        os.path.isfile(prefix + _DATA_SHARD_SUFFIX) or any(_shards(prefix))
    )


def _shards(prefix: str):
    directory, base = os.path.split(prefix)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for n in names:
        if n.startswith(base + ".data-") and "-of-" in n:
            yield n


def _is_checkpoint_state_file(path: str) -> bool:
    """The text file `checkpoint` that tf.train.Checkpoint writes next to the shards."""
    if os.path.basename(path) != "checkpoint":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"model_checkpoint_path" in head


def _detect_directory(path: str) -> str:
    names = set(os.listdir(path))
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        raise UnsupportedFormatError(_SAVEDMODEL_HINT, file=path)
    if "checkpoint" in names or any(n.endswith(".index") for n in names):
        raise UnsupportedFormatError(
            "is a folder of TensorFlow checkpoint files, which kconvert does not read. " + _CHECKPOINT_RESAVE,
            file=path,
        )
    if "config.json" in names and ("model.weights.h5" in names or "metadata.json" in names):
        raise UnsupportedFormatError(
            "is an unzipped Keras 3 model folder (saved with zipped=False); save it with zipped=True "
            "or zip its files into a .keras archive",
            file=path,
        )
    raise FormatError("is a directory, not a model file", file=path)


def _detect_hdf5(path: str) -> str:
    import h5py

    check_global_heaps(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if "layer_names" in attrs or "layer_names0" in attrs:
                return "keras_h5_weights"
            if "model_config" in attrs or "model_weights" in f:
                return "keras_h5_model"
            if "layers" in f or "vars" in f or "optimizer" in f:
                return "keras3_weights_h5"
            if path.lower().endswith(".caffemodel.h5") or _is_caffe_hdf5(f):
                raise UnsupportedFormatError(
                    "is a Caffe HDF5 weights file (.caffemodel.h5), which kconvert does not read; save the net's "
                    "weights as a binary .caffemodel (net.save) instead",
                    file=path,
                )
            if "nb_layers" in attrs:
                raise UnsupportedFormatError(
                    "is a pre-Keras-1 weights file (nb_layers/layer_k layout), which kconvert does not read",
                    file=path,
                )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise FormatError(f"is an HDF5 file that cannot be opened (truncated or corrupt?): {e}", file=path) from None
    raise FormatError(
        "is an HDF5 file but not a Keras model or weights file (no model_config, model_weights, layer_names, "
        "or Keras 3 layers/vars groups)",
        file=path,
    )


def _is_caffe_hdf5(f) -> bool:
    """Caffe's HDF5 weights (Net::ToHDF5): groups data/<layer>/ holding datasets named 0, 1, ..."""
    import h5py

    if not isinstance(f.get("data", getlink=True), h5py.HardLink):
        return False
    data = f["data"]
    if not isinstance(data, h5py.Group) or not len(data):
        return False
    for key in data:  # links are looked at, never followed
        if not isinstance(data.get(key, getlink=True), h5py.HardLink):
            return False
        g = data[key]
        if not isinstance(g, h5py.Group) or not all(k.isdigit() for k in g):
            return False
    return True


def _detect_zip(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise FormatError(f"is a ZIP file that cannot be read (truncated or corrupt?): {e}", file=path) from None
    if "config.json" in names:
        return "keras_zip"
    if "saved_model.pb" in names or any(n.endswith("/saved_model.pb") for n in names):
        raise UnsupportedFormatError(
            "is a ZIP archive holding a TensorFlow SavedModel, which kconvert does not read. Re-save the model "
            "from Keras with model.save('model.h5') or model.save('model.keras')",
            file=path,
        )
    raise FormatError(
        "is a ZIP archive without config.json, so not a Keras .keras file "
        f"(it holds: {', '.join(sorted(names)[:5]) or 'nothing'})",
        file=path,
    )


def _detect_text(path: str, head: bytes) -> str:
    ext = os.path.splitext(path)[1].lower()
    if b"\x00" in head:
        raise FormatError("is not a model file kconvert recognises (unknown binary data)", file=path)
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # The head may end inside a multi-byte character; only a failure before the end is fatal.
        if e.start < len(head) - 3:
            raise FormatError("is not a model file kconvert recognises (unknown binary data)", file=path) from None
        text = head[: e.start].decode("utf-8-sig")
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise FormatError("is empty", file=path)
    if ext == ".json":
        return "json"
    if ext in (".yaml", ".yml"):
        return "yaml"
    if stripped[0] in "{[":
        return "json"
    if not _KERAS_KEY.search(stripped):
        caffe = _caffe_text(path, stripped, ext)
        if caffe is not None:
            return caffe
    if "class_name" in stripped or stripped.startswith(("---", "%YAML")):
        return "yaml"
    raise FormatError(
        "is a text file but not a Keras JSON or YAML configuration (no 'class_name' found) nor a Caffe prototxt",
        file=path,
    )


def detect_format(path: str | os.PathLike) -> str:
    """Sniff the model format at `path`; see the module docstring for the names returned."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _detect_directory(path)
    if not os.path.exists(path):
        if _checkpoint_prefix_exists(path):
            raise UnsupportedFormatError(_CHECKPOINT_HINT, file=path)
        raise FormatError("no such file", file=path)

    if _is_checkpoint_state_file(path):
        raise UnsupportedFormatError(_CHECKPOINT_HINT, file=path)
    if os.path.basename(path) == "saved_model.pb":
        raise UnsupportedFormatError(_SAVEDMODEL_HINT, file=path)

    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise FormatError(f"cannot read the file: {e.strerror or e}", file=path) from None
    if not head:
        raise FormatError("is empty", file=path)

    if has_hdf5_signature(path):
        return _detect_hdf5(path)
    if head.startswith(ZIP_MAGIC):
        return _detect_zip(path)

    name = os.path.basename(path)
    if (name.endswith(".index") and _is_tf_index(path)) or (".data-" in name and "-of-" in name):
        raise UnsupportedFormatError(_CHECKPOINT_HINT, file=path)
    caffe = _caffe_binary(path, head)
    if caffe is not None:
        return caffe
    return _detect_text(path, head)


# ---------------------------------------------------------------------------------------------- Caffe

_KERAS_KEY = re.compile(r"""^[ \t]*-?[ \t]*["']?class_name["']?[ \t]*:""", re.M)
# Net-level fields of a prototxt at the start of a line: `layer {`, `layers {`, `input: "data"`, `input_dim:`,
# `input_shape {`. Keras YAML has `layers:` followed by a list, and always `class_name:` keys (checked first).
_PROTOTXT_NET = re.compile(
    r"""^[ \t]*(?:layers?[ \t]*:?\s*[{<]|input[ \t]*:[ \t]*["']|input_dim[ \t]*:|input_shape[ \t]*:?\s*[{<])""",
    re.M,
)
_SOLVER_KEY = re.compile(r"^[ \t]*(?:base_lr|lr_policy|max_iter|solver_type|snapshot_prefix|test_iter)[ \t]*:", re.M)
_SOLVER_NET = re.compile(r"""^[ \t]*(?:train_)?net[ \t]*:[ \t]*["']([^"'\n]*)["']""", re.M)
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f]")
_PROTOTXT_EXTS = (".prototxt",)  # not .pbtxt: TensorFlow graphs use it too
_CAFFEMODEL_EXTS = (".caffemodel",)
_BINARYPROTO_EXTS = (".binaryproto",)


def _caffe_text(path: str, text: str, ext: str) -> str | None:
    """'caffe_prototxt' for a Caffe net definition; a Caffe solver file is refused with a pointer to its net."""
    if _SOLVER_KEY.search(text):
        named = _SOLVER_NET.search(text)
        where = f" ({named.group(1)})" if named else ""
        raise UnsupportedFormatError(
            f"is a Caffe solver definition (training settings), not a net; use the net prototxt it names{where}",
            file=path,
        )
    if ext in _PROTOTXT_EXTS or _PROTOTXT_NET.search(text):
        return "caffe_prototxt"
    return None


def _caffe_binary(path: str, head: bytes) -> str | None:
    """'caffemodel' / 'caffe_binaryproto' when the first fields of the file fit NetParameter / BlobProto.

    Files named .caffemodel / .binaryproto need one well-formed field; others (binary-looking only) need three,
    counting the fields of the first nested messages, so that random binary data is not taken for Caffe's.
    """
    ext = os.path.splitext(path)[1].lower()
    named = {**dict.fromkeys(_CAFFEMODEL_EXTS, "caffemodel"), **dict.fromkeys(_BINARYPROTO_EXTS, "caffe_binaryproto")}
    if ext not in named and not _looks_binary(head):
        return None
    from .caffe import schema

    size = os.path.getsize(path)
    candidates = {"caffemodel": schema.NetParameter.DESCRIPTOR, "caffe_binaryproto": schema.BlobProto.DESCRIPTOR}
    if ext in named:
        kind = named[ext]
        if _proto_fields(head, 0, size, candidates[kind], 0) >= 1:
            return kind
        what = "a Caffe NetParameter" if kind == "caffemodel" else "a Caffe BlobProto (mean file)"
        raise FormatError(f"is named {ext} but its first bytes are not {what} (another format, or corrupt?)",
                          file=path)
    for kind, descriptor in candidates.items():
        if _proto_fields(head, 0, size, descriptor, 0) >= 3:
            return kind
    return None


def _looks_binary(head: bytes) -> bool:
    if _BINARY_BYTES.search(head):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 3  # a multi-byte character cut by the head's end is not binary
    return False


def _wire_type(field) -> int:
    t = field.type
    if t in (field.TYPE_DOUBLE, field.TYPE_FIXED64, field.TYPE_SFIXED64):
        return 1
    if t in (field.TYPE_FLOAT, field.TYPE_FIXED32, field.TYPE_SFIXED32):
        return 5
    if t in (field.TYPE_STRING, field.TYPE_BYTES, field.TYPE_MESSAGE):
        return 2
    return 0


def _is_repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while pos < len(buf) and shift < 70:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    return None


def _proto_fields(buf: bytes, pos: int, end: int, descriptor, depth: int) -> int:
    """How many well-formed fields of `descriptor` the bytes from `pos` hold (up to the end of `buf`, or `end`, the
    message's declared end), descending into nested messages; -1 when one contradicts the schema. Unknown field
    numbers end the count inside nested messages (forks add fields there) and contradict it at the top."""
    count = 0
    end_here = min(end, len(buf))
    while pos < end_here:
        key = _varint(buf, pos)
        if key is None:
            return count
        number, wire = key[0] >> 3, key[0] & 7
        field = descriptor.fields_by_number.get(number)
        if field is None:
            return -1 if depth == 0 or number == 0 or wire not in (0, 1, 2, 5) else count
        expected = _wire_type(field)
        if wire != expected and not (wire == 2 and expected != 2 and _is_repeated(field)):
            return -1
        pos = key[1]
        if wire == 0:
            value = _varint(buf, pos)
            if value is None:
                return count
            pos = value[1]
        elif wire == 2:
            length = _varint(buf, pos)
            if length is None:
                return count
            start, pos = length[1], length[1] + length[0]
            if pos > end:
                return -1  # longer than the message (or the file) that holds it
            if field.message_type is not None and depth < 2:
                nested = _proto_fields(buf, start, pos, field.message_type, depth + 1)
                if nested < 0:
                    return -1
                count += nested
        else:
            pos += 4 if wire == 5 else 8
            if pos > end:
                return -1
        count += 1
    return count
