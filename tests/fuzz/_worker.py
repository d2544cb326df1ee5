"""The fuzz worker: a long-lived subprocess that runs reader cases one JSON line at a time.

Each request names a reader and a file; the reply says how it ended: "ok" (a clean load), "kerror" (a
kconvert.errors exception, with its message), "error" (anything else escaped: a contract failure, with the
traceback) or "timeout" (SIGALRM after the per-case limit). The address space is capped (RLIMIT_AS) at what the
warm-up used plus a fixed margin, so a reader that allocates for a huge declared size before validating it fails
with MemoryError instead of taking the machine down; the reply also gives the case's peak resident memory growth
(the kernel's VmHWM mark, reset before each case), which the parent bounds by a multiple of the file's size. A native crash kills only this process; the parent records it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

MARGIN_BYTES = int(os.environ.get("KCONVERT_FUZZ_MEMORY_MARGIN", str(1536 << 20)))


class CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that reader code catching Exception cannot swallow it."""


def _alarm(signum, frame):
    raise CaseTimeout()


_BASE_MODELS: dict = {}


def _base_model(path: str):
    import kconvert

    if path not in _BASE_MODELS:
        _BASE_MODELS[path] = kconvert.load_model(path, compile=False)
    return _BASE_MODELS[path]


def _touch(obj) -> None:
    """Read every weight value, so that lazily mapped or deferred data is really decoded."""
    import numpy as np

    layers = getattr(obj, "layers", None) or []
    for layer in layers:
        for w in getattr(layer, "weights", []):
            np.asarray(w.value).sum()


def run_reader(reader: str, path: str, extra: dict):
    if reader == "selftest":  # misbehaviours the parent must catch (tests/fuzz/test_harness.py)
        _selftest(extra["do"])
        return
    import numpy as np

    import kconvert

    if reader == "load_model":
        _touch(kconvert.load_model(path, safe_mode=True))
    elif reader == "model_from_text":
        from kconvert.models import model_from_json, model_from_yaml

        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        (model_from_yaml if extra.get("fmt") == "yaml" else model_from_json)(text)
    elif reader == "load_weights":
        _base_model(extra["base"]).load_weights(path, by_name=bool(extra.get("by_name")))
    elif reader == "detect":
        from kconvert.formats.detect import detect_format

        detect_format(path)
    elif reader == "prototxt":
        from kconvert.convert import caffe_to_keras
        from kconvert.formats.caffe import read_prototxt, upgrade

        upgrade(read_prototxt(path), file=path)
        _touch(caffe_to_keras(path, extra.get("caffemodel")))
    elif reader == "caffemodel":
        from kconvert.convert import caffe_to_keras
        from kconvert.formats.caffe.caffemodel import read_caffemodel

        for layer in read_caffemodel(path).layers:
            for blob in layer.blobs:
                np.asarray(blob, dtype=np.float64).sum()
        if extra.get("prototxt"):
            _touch(caffe_to_keras(extra["prototxt"], path))
    elif reader == "binaryproto":
        from kconvert.formats.caffe import read_mean_binaryproto

        read_mean_binaryproto(path).sum()
    else:
        raise SystemExit(f"unknown reader {reader}")


def _selftest(do: str) -> None:
    import numpy as np

    if do == "allocate":
        np.ones(256 << 20, np.uint8)
    elif do == "spin":
        while True:
            pass
    elif do == "abort":
        os.abort()
    elif do == "native_hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        time.sleep(60)
    elif do == "type_error":
        raise TypeError("not a kconvert error")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kib("VmRSS") * 1024


def run_case(request: dict) -> dict:
    from kconvert.errors import KConvertError

    reply = {"id": request["id"]}
    rss_before = _reset_peak_rss()
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, float(request.get("timeout", 5.0)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_reader(request["reader"], request["path"], request.get("extra") or {})
        reply["status"] = "ok"
    except CaseTimeout:
        reply["status"] = "timeout"
    except KConvertError as e:
        reply.update(status="kerror", type=type(e).__name__, message=str(e)[:2000])
    except BaseException as e:  # noqa: BLE001 - the contract is checked by the parent
        reply.update(status="error", type=type(e).__name__, message=str(e)[:2000],
                     traceback=traceback.format_exc()[-6000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    reply["seconds"] = time.perf_counter() - start
    reply["rss_growth"] = max(0, _status_kib("VmHWM") * 1024 - rss_before)
    return reply


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    signal.signal(signal.SIGALRM, _alarm)
    for warm in json.loads(sys.argv[1]) if len(sys.argv) > 1 else []:
        reply = run_case({**warm, "id": "warm-up", "timeout": 60})
        if reply["status"] != "ok":
            print(json.dumps({"id": "warm-up", "status": "error", "message": json.dumps(reply)}), flush=True)
            return
    limit = _vm_size() + MARGIN_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    print(json.dumps({"id": "ready", "limit": limit}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(run_case(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
