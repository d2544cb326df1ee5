"""Saved weights of Keras 1, of Theano-trained models and of CuDNN RNNs, rewritten into the layout of the layer
they load into: Keras 2's `preprocess_weights_for_loading` (reference/keras_formats.md §3.2, §3.3, §3.5).

    Keras 1 conv kernels      Conv2D th (out, in, r, c) -> (r, c, in, out); Conv1D (len, 1, in, out) -> (len, in, out)
    Keras 1 RNN gate arrays   GRU W_z, U_z, b_z, W_r, ... (9 arrays); LSTM i, c, f, o (12) -> kernel, recurrent, bias
    Theano kernels            Theano convolves (flips the kernel), TensorFlow correlates: flip every spatial axis
    CuDNN <-> native RNN      per-gate transposes; LSTM biases summed or halved, GRU biases reshaped

Wrappers and nested models are recursed into. The rewriting is registered into
`weight_preprocess.PREPROCESSORS`; the file-level questions (which backend wrote the file, which layers Keras 1
saved for a Sequential that starts with a Merge) are answered by `source_backend` and `topological_layers`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import WeightsError
from .keras_weights import legacy_weights
from .weight_preprocess import PREPROCESSORS

_CONV_LAYERS = {"Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "ConvLSTM2D"}
_USES_CORRELATION = {"tensorflow": True, "theano": False, "cntk": True}
_MODELS = {"Sequential", "Functional", "Model"}


def _cls(layer) -> str:
    return type(layer).__name__


def _is_model(layer) -> bool:
    return _cls(layer) in _MODELS or bool(getattr(layer, "_is_graph_network", False))


def _sublayers(layer) -> list:
    """The layers whose weights a nested model (or a Merge of models) holds, in Keras's order."""
    return list(getattr(layer, "layers", None) or [])


def convert_kernel(kernel: np.ndarray) -> np.ndarray:
    """Flip every spatial axis of a conv kernel `(*spatial, in, out)`: convolution <-> correlation."""
    kernel = np.asarray(kernel)
    if not 3 <= kernel.ndim <= 5:
        raise ValueError(f"a conv kernel has 3 to 5 dimensions, got shape {kernel.shape}")
    return np.ascontiguousarray(kernel[(slice(None, None, -1),) * (kernel.ndim - 2)])


def _need_flip(original_backend: str | None) -> bool:
    # kconvert computes as TensorFlow does (correlation); unknown backends are left alone, as Keras does
    return original_backend in _USES_CORRELATION and not _USES_CORRELATION[original_backend]


# ---------------------------------------------------------------------------------------------- nesting


def _nested_model(layer, arrays: list, version, backend) -> list:
    """tf_keras's `convert_nested_model`: split trainable/non-trainable per sublayer, convert, reassemble."""
    n_trainable = len(layer.trainable_weights)
    trainable, non_trainable = arrays[:n_trainable], arrays[n_trainable:]
    new_trainable, new_non_trainable = [], []
    for sub in _sublayers(layer):
        nt, nn = len(sub.trainable_weights), len(sub.non_trainable_weights)
        if not layer.trainable:  # a frozen model lists every weight as non-trainable, sublayer by sublayer
            nt, nn = 0, nt + nn
        if nt + nn == 0:
            continue
        converted = preprocess_legacy(sub, trainable[:nt] + non_trainable[:nn], version, backend)
        new_trainable += converted[:nt]
        new_non_trainable += converted[nt:]
        trainable, non_trainable = trainable[nt:], non_trainable[nn:]
    return new_trainable + new_non_trainable + trainable + non_trainable


def _nested(layer, arrays: list, version, backend) -> list:
    cls = _cls(layer)
    if cls == "Bidirectional":
        half = len(arrays) // 2
        return (preprocess_legacy(layer.forward_layer, arrays[:half], version, backend)
                + preprocess_legacy(layer.backward_layer, arrays[half:], version, backend))
    if cls == "TimeDistributed":
        return preprocess_legacy(layer.layer, arrays, version, backend)
    if _is_model(layer) or (cls == "Merge" and _sublayers(layer)):
        return _nested_model(layer, arrays, version, backend)
    return arrays


# ---------------------------------------------------------------------------------------------- Keras 1


def _gates(arrays: list, order: Sequence[int]) -> list[np.ndarray]:
    """Per-gate [W, U, b] triples concatenated on the last axis in `order` (indices of the triples)."""
    return [np.concatenate([arrays[3 * g + k] for g in order], axis=-1) for k in range(3)]


def _keras1(layer, arrays: list) -> list:
    cls = _cls(layer)
    arrays = list(arrays)
    if not arrays:
        return arrays
    if cls == "Conv1D":
        w = np.asarray(arrays[0])
        if w.ndim == 4:
            if w.shape[:2] != (layer.kernel_size[0], 1) or w.shape[3] != layer.filters:
                # Keras 1.1 layout (filters, input_dim, filter_length, 1)
                if w.shape[0] != layer.filters or w.shape[2:] != (layer.kernel_size[0], 1):
                    raise WeightsError(f"a Keras 1 Conv1D kernel of shape {w.shape} does not fit the layer",
                                       layer=layer.name)
                w = np.transpose(w, (2, 3, 1, 0))
            arrays[0] = w[:, 0, :, :]
    elif cls in ("Conv2D", "SeparableConv2D") and layer.data_format == "channels_first":
        # (out, in, rows, cols) -> (rows, cols, in, out); separable: depthwise (dm, in, r, c), pointwise (out, in·dm, 1, 1)
        n = 2 if cls == "SeparableConv2D" else 1
        arrays[:n] = [np.transpose(a, (2, 3, 1, 0)) if np.ndim(a) == 4 else a for a in arrays[:n]]
    elif cls == "Conv2DTranspose":
        perm = (0, 1, 3, 2) if layer.data_format == "channels_last" else (2, 3, 0, 1)
        arrays[0] = np.transpose(arrays[0], perm)
    elif cls == "Conv3D" and layer.data_format == "channels_first":
        arrays[0] = np.transpose(arrays[0], (2, 3, 4, 1, 0))
    elif cls == "GRU" and len(arrays) == 9:
        arrays = _gates(arrays, (0, 1, 2))  # z, r, h
    elif cls in ("LSTM", "ConvLSTM2D") and len(arrays) == 12:
        if cls == "ConvLSTM2D" and layer.data_format == "channels_first":
            arrays = [a if i % 3 == 2 else np.transpose(a, (2, 3, 1, 0)) for i, a in enumerate(arrays)]
        arrays = _gates(arrays, (0, 2, 1, 3))  # Keras 1 saved i, c, f, o; Keras 2 holds i, f, c, o
    return arrays


def _conv_kernels(layer, arrays: list, backend) -> list:
    """Theano flip, then Keras's catch-all for conv kernels saved in another order: transpose (3, 2, 0, 1)."""
    n = 2 if _cls(layer) == "ConvLSTM2D" else 1
    if _need_flip(backend):
        arrays[:n] = [convert_kernel(a) for a in arrays[:n]]
        kernel, strides = getattr(layer, "kernel_size", ()), getattr(layer, "strides", ())
        if getattr(layer, "padding", None) == "same" and (any(k % 2 == 0 for k in kernel) or max(strides, default=1) > 1):
            warnings.warn(f"layer '{layer.name}': Theano padded 'same' convolutions with even kernels or strides > 1 "
                          "one pixel differently from TensorFlow; kconvert computes TensorFlow's 'same', as Keras 2 "
                          "did when it loaded Theano weights", stacklevel=2)
    target = [w.shape for w in legacy_weights(layer)[:n]]
    for i, shape in enumerate(target):
        a = np.asarray(arrays[i])
        if a.shape != shape and a.ndim == 4 and np.transpose(a, (3, 2, 0, 1)).shape == shape:
            arrays[i] = np.transpose(a, (3, 2, 0, 1))
    return arrays


# ---------------------------------------------------------------------------------------------- CuDNN


def _per_gate(kernel: np.ndarray, fn, n_gates: int) -> np.ndarray:
    return np.hstack([fn(k) for k in np.hsplit(np.asarray(kernel), n_gates)])


def _cudnn_kernels(arrays: list, n_gates: int, from_cudnn: bool) -> list:
    order = "F" if from_cudnn else "C"
    kernel = _per_gate(arrays[0], lambda k: k.T.reshape(k.shape, order=order), n_gates)
    recurrent = _per_gate(arrays[1], lambda k: k.T, n_gates)
    return [kernel, recurrent]


def _cudnn(layer, arrays: list) -> list:
    """Between CuDNNLSTM and LSTM, and between CuDNNGRU and GRU(reset_after=True) (`_convert_rnn_weights`)."""
    cls = _cls(layer)
    if len(arrays) != 3:
        return arrays
    units = np.shape(arrays[1])[0]
    bias_shape = np.shape(arrays[2])
    if cls in ("LSTM", "CuDNNLSTM"):
        if bias_shape == (8 * units,):
            source = "CuDNNLSTM"
        elif bias_shape == (4 * units,):
            source = "LSTM"
        else:
            raise WeightsError(f"invalid LSTM bias shape {bias_shape} for {units} units", layer=layer.name)
        if source == cls:
            return arrays
        from_cudnn = source == "CuDNNLSTM"
        bias = (np.sum(np.split(np.asarray(arrays[2]), 2), axis=0) if from_cudnn
                else np.tile(0.5 * np.asarray(arrays[2]), 2))
        return _cudnn_kernels(arrays, 4, from_cudnn) + [bias]
    if cls in ("GRU", "CuDNNGRU"):
        if bias_shape == (6 * units,):
            source = "CuDNNGRU"
        elif bias_shape == (2, 3 * units):
            source = "GRU(reset_after=True)"
        elif bias_shape == (3 * units,):
            source = "GRU(reset_after=False)"
        else:
            raise WeightsError(f"invalid GRU bias shape {bias_shape} for {units} units", layer=layer.name)
        if cls == "CuDNNGRU":
            target = "CuDNNGRU"
        else:
            target = "GRU(reset_after=True)" if getattr(layer, "reset_after", True) else "GRU(reset_after=False)"
        if source == target:
            return arrays
        if "GRU(reset_after=False)" in (source, target):
            raise WeightsError(f"{source} weights cannot be loaded into a {target} layer: only GRU(reset_after=True) "
                               "computes as CuDNNGRU", layer=layer.name)
        from_cudnn = source == "CuDNNGRU"
        bias = np.asarray(arrays[2]).reshape((2, -1) if from_cudnn else -1)
        return _cudnn_kernels(arrays, 3, from_cudnn) + [bias]
    return arrays


# ---------------------------------------------------------------------------------------------- entry points


def preprocess_legacy(layer, arrays: Sequence[np.ndarray], original_keras_version: str | None,
                      original_backend: str | None) -> list[np.ndarray]:
    """One layer's saved arrays, written by `original_keras_version` on `original_backend`, in its own layout."""
    arrays = _nested(layer, list(arrays), original_keras_version, original_backend)
    if original_keras_version == "1":
        arrays = _keras1(layer, arrays)
    if _cls(layer) in _CONV_LAYERS and arrays:
        arrays = _conv_kernels(layer, arrays, original_backend)
    return _cudnn(layer, arrays)


def source_backend(h5, override: str | None = None) -> str | None:
    """The backend that wrote a KerasH5File's weights: the caller's override, the file's `backend` attribute,
    else for a Keras 1 file 'theano' when its weight names lack TensorFlow's ':0' suffix (Theano names
    variables `dense_1_W`, TensorFlow `dense_1_W:0`)."""
    if override is not None:
        if override not in _USES_CORRELATION:
            raise WeightsError(f"unknown source backend {override!r}; expected one of {sorted(_USES_CORRELATION)}",
                               file=h5.path)
        return override
    backend = h5.weights_backend or h5.backend
    if backend is not None or h5.original_keras_version != "1":
        return backend
    names = [n for weights in h5.layer_weights.values() for n, _ in weights]
    if names and not any(n.endswith(":0") for n in names):
        return "theano"
    return "tensorflow" if names else None


def _weighted(layers) -> int:
    return sum(1 for la in layers if legacy_weights(la))


def _k1_flattened(layers: list) -> list:
    """Keras 1's `flattened_layers`: the layers of the branch models merged by a leading Merge, then the rest.

    For a model read from a Keras 1 config the Merge has become a native merge layer fed by nested branch
    models; those are the nested models that take model inputs directly.
    """
    out: list = []

    def add(la):
        if all(la is not o for o in out):
            out.append(la)

    for la in layers:
        if _cls(la) == "Merge" and _sublayers(la):
            for branch in _sublayers(la):
                for sub in (_k1_flattened(_sublayers(branch)) if _is_model(branch) else [branch]):
                    add(sub)
        elif _is_model(la) and la._inbound_nodes and _fed_by_inputs(la):
            for sub in _k1_flattened(_sublayers(la)):
                add(sub)
        else:
            add(la)
    return out


def _fed_by_inputs(model) -> bool:
    nodes = [n for n in model._inbound_nodes if n.inputs]
    return bool(nodes) and all(v.node.is_input for n in nodes for v in n.inputs)


def _merge_era(version: str | None) -> bool:
    """Keras 1 to 2.1.6 had the Merge layer (and saved Merge Sequentials flattened)."""
    parts = str(version or "").split(".")
    return parts[0] == "1" or (parts[0] == "2" and len(parts) > 1 and parts[1] in ("0", "1"))


def topological_layers(layers: Sequence, h5) -> list:
    """The layers to pair by position with the saved layers of `h5`.

    Keras 1 (and Keras 2.0–2.1) saved a Sequential that starts with a Merge of models with the branch models'
    layers in place of the Merge; when the counts only match that way, those layers are used.
    """
    layers = list(layers)
    saved = sum(1 for n in h5.layer_names if h5.layer_weights.get(n))
    if _weighted(layers) == saved or not _merge_era(h5.original_keras_version):
        return layers
    flat = _k1_flattened(layers)
    return flat if _weighted(flat) == saved else layers


def by_name_layers(layers: Sequence, h5) -> list:
    """Layers to match by name: for a Keras 1 file also the layers inside nested models the file lacks."""
    layers = list(layers)
    if h5.original_keras_version != "1":
        return layers
    out = []
    for la in layers:
        out.append(la)
        if la.name not in h5.layer_weights and (_is_model(la) or _cls(la) == "Merge"):
            out += by_name_layers(_sublayers(la), h5)
    return out


def convert_dense_weights_data_format(kernel: np.ndarray, previous_feature_map_shape: Sequence[int],
                                      target_data_format: str = "channels_first") -> np.ndarray:
    """Re-order the rows of a Dense kernel that follows a Flatten when the conv part before it changes
    `data_format` (th <-> tf ordering), as Keras's `convert_dense_weights_data_format`.

    `previous_feature_map_shape`: the 3 batchless dims before the Flatten, in the target data format
    ((c, h, w) for 'channels_first', (h, w, c) for 'channels_last').
    """
    kernel = np.asarray(kernel)
    rows = np.arange(kernel.shape[0])
    if target_data_format == "channels_first":
        c, h, w = previous_feature_map_shape
        rows = rows.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
    elif target_data_format == "channels_last":
        h, w, c = previous_feature_map_shape
        rows = rows.reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    else:
        raise ValueError(f"target_data_format must be 'channels_first' or 'channels_last', not {target_data_format!r}")
    return kernel[rows]


PREPROCESSORS.append(preprocess_legacy)

__all__ = ["preprocess_legacy", "convert_kernel", "source_backend", "topological_layers", "by_name_layers",
           "convert_dense_weights_data_format"]
