"""2-D convolutions on OpenVINO's CPU kernels (oneDNN), when the optional `openvino` package is installed.

numpy has no convolution: kconvert's own (ops/conv.py) copies the input into an im2col matrix and multiplies it in
BLAS, which on the MNIST CNN of benchmarks/train_vs_keras.py (2 cores) takes 7.8 ms for the second convolution's
forward pass and 7 ms for its input gradient; OpenVINO runs the same two in 3.9 and 3.5 ms (its input gradient is
ConvolutionBackpropData), and a training step goes from 37 to 33 ms, or 42 to 34 with the first convolution's
forward pass too (in-process A/B). So inside a training step (`use(threads)`, set per step by
runtime/blas_threads.py) a float32 channels-last 2-D convolution with groups == 1 runs here: its forward pass and
its input gradient; the kernel gradient stays an im2col product. Results differ from the numpy kernels' in the
last bits (relative 1e-6). `disabled()` turns this off (tests comparing two runs bit for bit); so does
KCONVERT_OPENVINO=0, and a BLAS thread count fixed in the environment, the way to bitwise-repeatable runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import numpy as np

_local = threading.local()  # .threads: OpenVINO threads in this step (0: off); .requests: per-thread requests
_lock = threading.Lock()
_compiled: dict[tuple, object] = {}
_core = None
_missing = False
_disabled = 0

# multiply-adds below which numpy's kernels are used: compiling a model for a new shape costs about 0.1 s, which a
# small convolution never wins back (the MNIST CNN's first convolution has 40 million)
MIN_MACS = 1 << 21
_NHWC_TO_NCHW = [0, 3, 1, 2]
_NCHW_TO_NHWC = [0, 2, 3, 1]
_HWIO_TO_OIHW = [3, 2, 0, 1]


def available() -> bool:
    """Whether OpenVINO can be imported (once tried, remembered)."""
    return _openvino() is not None


def _openvino():
    global _core, _missing
    if _core is not None or _missing:
        return _core
    with _lock:
        if _core is None and not _missing:
            try:
                import openvino as ov

                _core = ov.Core()
            except Exception:  # not installed, or a broken install: the numpy kernels serve
                _missing = True
    return _core


@contextlib.contextmanager
def use(threads: int) -> Iterator[None]:
    """Within the block (in this thread), eligible convolutions run in OpenVINO on `threads` threads (0: never)."""
    before = getattr(_local, "threads", 0)
    _local.threads = threads if os.environ.get("KCONVERT_OPENVINO", "1") != "0" else 0
    try:
        yield
    finally:
        _local.threads = before


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block (any thread), convolutions use the numpy kernels only."""
    global _disabled
    with _lock:
        _disabled += 1
    try:
        yield
    finally:
        with _lock:
            _disabled -= 1


def threads() -> int:
    """The OpenVINO thread count in effect in this thread (0: off, or OpenVINO missing)."""
    n = getattr(_local, "threads", 0)
    return n if n and not _disabled and available() else 0


def _eligible(kernel: np.ndarray, data: np.ndarray, out_shape: tuple, pads) -> bool:
    """In a step, float32 numpy arrays of a 2-D convolution without cropping pads, and large enough."""
    return bool(threads()) and kernel.ndim == 4 and \
        all(type(a) is np.ndarray and a.dtype == np.float32 for a in (kernel, data)) and \
        not any(lo < 0 or hi < 0 for lo, hi in pads) and \
        int(np.prod(out_shape[:-1])) * int(np.prod(kernel.shape)) >= MIN_MACS


def _request(kind: str, shapes: tuple, strides, pads, dilations, threads: int):
    """An infer request (this thread's own) for a compiled one-op model, NHWC data and HWIO kernel; None where
    OpenVINO gives another output shape."""
    key = (kind, shapes, tuple(strides), tuple(tuple(p) for p in pads), tuple(dilations), threads)
    requests = getattr(_local, "requests", None)
    if requests is None:
        requests = _local.requests = {}
    request = requests.get(key)
    if request is not None:
        return request
    with _lock:
        if key not in _compiled:
            try:
                _compiled[key] = _compile(kind, shapes, strides, pads, dilations, threads)
            except ValueError:  # a geometry OpenVINO sizes otherwise: remembered, numpy's kernels serve it
                _compiled[key] = None
        model = _compiled[key]
    if model is None:
        return None
    request = requests[key] = model.create_infer_request()
    return request


def _compile(kind: str, shapes: tuple, strides, pads, dilations, threads: int):
    import openvino as ov
    import openvino.opset13 as ops

    data_shape, kernel_shape, out_shape = shapes
    data = ops.parameter(list(data_shape), np.float32)
    kernel = ops.parameter(list(kernel_shape), np.float32)
    x = ops.transpose(data, ops.constant(np.array(_NHWC_TO_NCHW, np.int64)))
    w = ops.transpose(kernel, ops.constant(np.array(_HWIO_TO_OIHW, np.int64)))
    begin, end = [int(lo) for lo, _ in pads], [int(hi) for _, hi in pads]
    if kind == "forward":
        y = ops.convolution(x, w, list(strides), begin, end, list(dilations))
    else:  # the input gradient: the data is the output's gradient, (O, I, kh, kw) are (C_IN, C_OUT) here
        y = ops.convolution_backprop_data(x, w, strides=list(strides), pads_begin=begin, pads_end=end,
                                          dilations=list(dilations))
    y = ops.transpose(y, ops.constant(np.array(_NCHW_TO_NHWC, np.int64)))
    model = ov.Model([y], [data, kernel], f"kconvert_conv_{kind}")
    if tuple(model.output(0).get_shape()) != tuple(out_shape):
        raise ValueError(f"OpenVINO's {kind} convolution gives {model.output(0).get_shape()}, not {out_shape}")
    return _openvino().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                    "INFERENCE_PRECISION_HINT": "f32",
                                                    "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})


def _run(kind: str, data: np.ndarray, kernel: np.ndarray, out_shape: tuple, strides, pads, dilations):
    import openvino as ov

    n = threads()
    data, kernel = np.ascontiguousarray(data), np.ascontiguousarray(kernel)
    request = _request(kind, (data.shape, kernel.shape, tuple(out_shape)), strides, pads, dilations, n)
    if request is None:
        return None
    out = np.empty(out_shape, np.float32)
    request.set_input_tensor(0, ov.Tensor(data, shared_memory=True))
    request.set_input_tensor(1, ov.Tensor(kernel, shared_memory=True))
    request.set_output_tensor(ov.Tensor(out, shared_memory=True))
    request.infer()
    return out


def forward(x: np.ndarray, kernel: np.ndarray, strides, pads, dilations, out_sizes) -> np.ndarray | None:
    """The convolution of channels-last `x` with HWIO `kernel` (groups == 1), or None where it does not apply."""
    out_shape = (x.shape[0], *out_sizes, kernel.shape[-1])
    if not _eligible(kernel, x, out_shape, pads):
        return None
    return _run("forward", x, kernel, out_shape, strides, pads, dilations)


def input_grad(grad: np.ndarray, kernel: np.ndarray, x_shape: tuple, strides, pads, dilations) -> np.ndarray | None:
    """The input gradient of that convolution from the output's gradient `grad`, or None where it does not
    apply (a stride whose transposed output size is not the input's: the rows it skipped get zeros here)."""
    if not _eligible(kernel, grad, grad.shape, pads):
        return None
    for i, (g, s, d, (lo, hi)) in enumerate(zip(grad.shape[1:3], strides, dilations, pads)):
        if (g - 1) * s + d * (kernel.shape[i] - 1) + 1 - lo - hi != x_shape[1 + i]:
            return None
    return _run("input_grad", grad, kernel, tuple(x_shape), strides, pads, dilations)
