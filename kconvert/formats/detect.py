"""Which model format a path holds, from its bytes (magic numbers, HDF5 layout) rather than its name.

`detect_format(path)` returns one of:

    'keras_h5_model'     legacy whole-model .h5 (root attr model_config / group model_weights)
    'keras_h5_weights'   legacy save_weights .h5 (root attr layer_names or layer_names0)
    'keras3_weights_h5'  Keras 3 / TF >= 2.12 .weights.h5 (groups layers/, vars/)
    'keras_zip'          Keras 3 .keras archive (ZIP with config.json)
    'json'               a Keras JSON configuration (to_json)
    'yaml'               a Keras YAML configuration (to_yaml)

A TensorFlow SavedModel or TF checkpoint raises UnsupportedFormatError saying what it is and what to
do instead; anything else (missing, empty, unrecognised) raises FormatError naming the file.
"""

from __future__ import annotations

import os
import zipfile

from ..errors import FormatError, UnsupportedFormatError
from .keras_h5 import has_hdf5_signature

__all__ = ["detect_format", "FORMATS"]

FORMATS = ("keras_h5_model", "keras_h5_weights", "keras3_weights_h5", "keras_zip", "json", "yaml")

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

    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if "layer_names" in attrs or "layer_names0" in attrs:
                return "keras_h5_weights"
            if "model_config" in attrs or "model_weights" in f:
                return "keras_h5_model"
            if "layers" in f or "vars" in f or "optimizer" in f:
                return "keras3_weights_h5"
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
    if "class_name" in stripped or stripped.startswith(("---", "%YAML")):
        return "yaml"
    raise FormatError(
        "is a text file but not a Keras JSON or YAML configuration (no 'class_name' found)", file=path
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
    return _detect_text(path, head)
