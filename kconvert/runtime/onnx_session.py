"""onnxruntime sessions: execution-provider choice, session options, a session cache and batched prediction.

onnxruntime-gpu lists CUDAExecutionProvider (and TensorRT) even where no GPU or CUDA library exists and
then silently runs on CPU, so a provider counts as usable only after a probe: a one-node model is loaded
and run with it, and the provider must really be in the session's providers. Probes run once per process
per provider; each fallback is reported once per process as a RuntimeWarning.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError, FormatError, GraphError, ShapeError

ort: Any = None  # the onnxruntime module, imported on first use; tests replace it with a fake

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# device name -> provider chains in order of preference; the first chain whose head works is used
DEVICE_CHAINS: dict[str, list[list[str]]] = {
    "cpu": [[CPU]],
    "auto": [[CUDA, CPU]],
    "cuda": [[CUDA, CPU]],
    "gpu": [[CUDA, CPU]],
    "tensorrt": [[TENSORRT, CUDA, CPU], [CUDA, CPU]],
}

# the name of each provider's shared library in onnxruntime's load errors (libonnxruntime_providers_<tag>.so)
_LIBRARY_TAGS = {CUDA: "cuda", TENSORRT: "tensorrt"}

OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64,
    "tensor(uint32)": np.uint32,
    "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

_LOCK = threading.RLock()
_PROBES: dict[str, tuple[bool, str]] = {}
_WARNED: set[tuple[str, ...]] = set()
_PROBE_MODEL: bytes | None = None
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _ort() -> Any:
    global ort
    if ort is None:
        import onnxruntime

        ort = onnxruntime
    return ort


def reset_provider_probes() -> None:
    """Forget the cached provider probes and which fallback warnings were already given."""
    with _LOCK:
        _PROBES.clear()
        _WARNED.clear()


def _probe_model() -> bytes:
    """A one-node model (y = x + x) used to check that a provider really starts."""
    global _PROBE_MODEL
    if _PROBE_MODEL is None:
        from onnx import TensorProto, helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "kconvert_probe", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        _PROBE_MODEL = model.SerializeToString()
    return _PROBE_MODEL


@contextlib.contextmanager
def _swallow_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file (onnxruntime's C++ logger writes there); yields [text]."""
    captured = [""]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured[0] = tmp.read().decode("utf-8", errors="replace")


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_reason(provider: str, log: str, error: BaseException | None, used: list[str] | None) -> str:
    """The most specific reason a provider did not start: its library's load error, the exception, or what ran."""
    log = _ANSI.sub("", log)
    tag = _LIBRARY_TAGS.get(provider, "")
    match = re.search(rf"providers_{tag}\.\w+ with error: ([^\n]+)", log) or re.search(r"with error: ([^\n]+)", log)
    if match:
        return _one_line(match.group(1))
    if error is not None:
        return _one_line(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    if used is not None:
        return f"onnxruntime silently used {used} instead"
    return "unknown failure"


def _probe_uncached(provider: str) -> tuple[bool, str]:
    rt = _ort()
    if provider not in rt.get_available_providers():
        return False, "not listed"
    chain = next((c for chains in DEVICE_CHAINS.values() for c in chains if c[0] == provider), [provider, CPU])
    options = rt.SessionOptions()
    options.log_severity_level = 3
    error: BaseException | None = None
    used: list[str] | None = None
    with _swallow_stderr() as log:
        try:
            session = rt.InferenceSession(_probe_model(), sess_options=options, providers=chain, enable_fallback=0)
            used = list(session.get_providers())
            if provider in used:
                session.run(None, {"x": np.ones(1, np.float32)})
        except Exception as e:  # onnxruntime raises its own exception types from C++
            error = e
    if error is None and used is not None and provider in used:
        return True, ""
    return False, _failure_reason(provider, log[0], error, used)


def probe_provider(provider: str) -> tuple[bool, str]:
    """(works, reason) for an execution provider; probed once per process, then cached."""
    with _LOCK:
        if provider not in _PROBES:
            _PROBES[provider] = _probe_uncached(provider)
        return _PROBES[provider]


def _warn_once(failures: list[tuple[str, str]], chosen: str) -> None:
    key = (*(name for name, _ in failures), chosen)
    with _LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    parts = []
    for name, reason in failures:
        if reason == "not listed":
            parts.append(f"{name} is not available in this onnxruntime (install onnxruntime-gpu)")
        else:
            parts.append(f"{name} is listed by onnxruntime but does not work here ({reason})")
    target = "CPU" if chosen == CPU else chosen
    warnings.warn(f"kconvert: {'; '.join(parts)}; running on {target}", RuntimeWarning, stacklevel=3)


def resolve_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers for device 'auto', 'cpu', 'cuda' (or 'gpu') or 'tensorrt', best working first.

    'auto' takes CUDA when it is listed and works, else CPU, and never TensorRT; an explicit request that
    cannot be met falls back (TensorRT -> CUDA -> CPU) with one RuntimeWarning per process.
    """
    key = device.strip().lower() if isinstance(device, str) else None
    if key not in DEVICE_CHAINS:
        raise ConfigError(f"unknown device {device!r}; expected one of 'auto', 'cpu', 'cuda', 'gpu', 'tensorrt'")
    failures: list[tuple[str, str]] = []
    for chain in DEVICE_CHAINS[key]:
        works, reason = probe_provider(chain[0]) if chain[0] != CPU else (True, "")
        if works:
            if failures:
                _warn_once(failures, chain[0])
            return list(chain)
        failures.append((chain[0], reason))
    if not (key == "auto" and all(reason == "not listed" for _, reason in failures)):
        _warn_once(failures, CPU)
    return [CPU]


def _session_options(intra_op_threads: int | None, inter_op_threads: int | None, optimization_level: str) -> Any:
    rt = _ort()
    level = OPTIMIZATION_LEVELS.get(str(optimization_level).lower())
    if level is None:
        raise ConfigError(f"unknown optimization_level {optimization_level!r}; "
                          f"expected one of {', '.join(OPTIMIZATION_LEVELS)}")
    options = rt.SessionOptions()
    options.graph_optimization_level = getattr(rt.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    for field, value in (("intra_op_num_threads", intra_op_threads), ("inter_op_num_threads", inter_op_threads)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{field} must be a non-negative integer (0 = onnxruntime's default), got {value!r}")
        setattr(options, field, int(value))
    return options


def _model_source(model: Any) -> tuple[Any, str | None]:
    """(what InferenceSession takes, file name for errors) for a ModelProto, bytes or a path."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FormatError("no such file" if not os.path.exists(path) else "is not a file", file=path)
        return path, path
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), None
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString(), None
    raise FormatError(f"expected an onnx.ModelProto, serialized bytes or a path, got {type(model).__name__}")


def _dim(d: Any) -> int | None:
    return int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None


class OnnxSession:
    """One onnxruntime.InferenceSession with named inputs, dtype conversion and batched `predict`."""

    def __init__(self, model: Any, device: str = "auto", intra_op_threads: int | None = None,
                 inter_op_threads: int | None = None, optimization_level: str = "all"):
        source, self.file = _model_source(model)
        self.options = _session_options(intra_op_threads, inter_op_threads, optimization_level)
        self.device = device
        requested = resolve_providers(device)
        try:
            self.session = _ort().InferenceSession(source, sess_options=self.options, providers=requested,
                                                   enable_fallback=0)
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, NotImplemented, ...)
            raise FormatError(f"onnxruntime cannot load the model: {_one_line(str(e), 2000)}", file=self.file) from None
        inputs = self.session.get_inputs()
        self.input_names: list[str] = [i.name for i in inputs]
        self.input_shapes: list[tuple[int | None, ...]] = [tuple(_dim(d) for d in (i.shape or ())) for i in inputs]
        self.input_types: list[str] = [i.type for i in inputs]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.providers: list[str] = list(self.session.get_providers())

    def __repr__(self) -> str:
        return f"OnnxSession(inputs={self.input_names}, outputs={self.output_names}, providers={self.providers})"

    def _arrays(self, feeds: Any) -> list[np.ndarray]:
        """Feeds (list in input order, dict by name, or one array) as arrays of the declared dtypes, checked."""
        if isinstance(feeds, Mapping):
            unknown = [k for k in feeds if k not in self.input_names]
            if unknown:
                raise ShapeError(f"feeds name unknown input(s) {unknown}; the model's inputs are {self.input_names}",
                                 file=self.file)
            missing = [n for n in self.input_names if n not in feeds]
            if missing:
                raise ShapeError(f"no value fed for input(s) {missing}", file=self.file)
            values = [feeds[n] for n in self.input_names]
        else:
            values = list(feeds) if isinstance(feeds, (list, tuple)) else [feeds]
            if len(values) != len(self.input_names):
                raise ShapeError(f"the model takes {len(self.input_names)} input(s) {self.input_names}, "
                                 f"got {len(values)}", file=self.file)
        arrays = []
        for name, shape, kind, value in zip(self.input_names, self.input_shapes, self.input_types, values):
            dtype = NUMPY_DTYPES.get(kind)
            array = np.ascontiguousarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
            if array.ndim != len(shape):
                raise ShapeError(f"input '{name}' expects rank {len(shape)} (shape {_show(shape)}), "
                                 f"got shape {array.shape}", file=self.file)
            arrays.append(array)
        return arrays

    def _check_dims(self, arrays: list[np.ndarray], skip_batch: bool) -> None:
        for name, shape, array in zip(self.input_names, self.input_shapes, arrays):
            for axis, (want, got) in enumerate(zip(shape, array.shape)):
                if want is not None and want != got and not (skip_batch and axis == 0):
                    raise ShapeError(f"input '{name}' expects shape {_show(shape)}, got {array.shape}", file=self.file)

    def _run_arrays(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, dict(zip(self.input_names, arrays)))
        except Exception as e:  # onnxruntime's own exception types
            raise GraphError(f"onnxruntime failed to run the model: {_one_line(str(e), 2000)}", file=self.file) from None

    def run(self, feeds: Any) -> list[np.ndarray]:
        """Run once on feeds (a list in input order, a dict by name, or one array); returns every output."""
        arrays = self._arrays(feeds)
        self._check_dims(arrays, skip_batch=False)
        return self._run_arrays(arrays)

    def fixed_batch(self) -> int | None:
        """The batch size the model is fixed to (first axis of its inputs), or None when it is free."""
        return next((s[0] for s in self.input_shapes if s and s[0] is not None), None)

    def predict(self, feeds: Any, batch_size: int | None = None) -> list[np.ndarray]:
        """Run on axis-0 chunks of batch_size rows (None: one run) and concatenate the outputs.

        A model whose batch axis is fixed to N runs on chunks of N; the last is padded with zeros and the
        outputs trimmed to the real rows.
        """
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        arrays = self._arrays(feeds)
        self._check_dims(arrays, skip_batch=True)
        if any(a.ndim == 0 for a in arrays) or not arrays:
            return self._run_arrays(arrays)
        rows = {a.shape[0] for a in arrays}
        if len(rows) > 1:
            raise ShapeError(f"inputs {self.input_names} have different batch sizes {[a.shape[0] for a in arrays]}",
                             file=self.file)
        n = rows.pop()
        fixed = self.fixed_batch()
        step = fixed or batch_size or max(n, 1)
        if (fixed is None and n <= step) or n == step:
            return self._run_arrays(arrays)
        results: list[np.ndarray] | None = None
        for start in range(0, max(n, 1), step):
            stop = min(start + step, n)
            chunk = [a[start:stop] for a in arrays]
            if stop - start < step and fixed is not None:
                chunk = [_pad_rows(c, step) for c in chunk]
            outs = self._run_arrays(chunk)
            if results is None:
                results = [self._output_buffer(name, o, len(chunk[0]), n) for name, o in zip(self.output_names, outs)]
            for buffer, o in zip(results, outs):
                buffer[start:stop] = o[: stop - start]
        return results

    def _output_buffer(self, name: str, first: np.ndarray, chunk_rows: int, n: int) -> np.ndarray:
        if first.ndim == 0 or first.shape[0] != chunk_rows:
            raise ShapeError(f"output '{name}' (shape {first.shape}) has no batch axis of {chunk_rows} rows, "
                             "so it cannot be computed in chunks; use run()", file=self.file)
        return np.empty((n, *first.shape[1:]), dtype=first.dtype)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    padded = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    padded[: len(array)] = array
    return padded


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class SessionCache:
    """A small thread-safe LRU of OnnxSession keyed by the caller (e.g. (id(model), weights_version, device)).

    Put whatever changes the exported graph (weights version, opset, device) into the key: a new key
    builds a new session and the oldest entries drop out.
    """

    def __init__(self, maxsize: int = 4):
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, OnnxSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, factory: Callable[[], OnnxSession]) -> OnnxSession:
        """The session cached under key, or a new one from factory() (then cached, evicting the oldest)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            session = factory()
            self._entries[key] = session
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return session

    def clear(self) -> None:
        """Drop every cached session."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
