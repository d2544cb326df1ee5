"""`kconvert caffe2keras` / `caffe2onnx` on a VGG16-size caffemodel: whole-process time vs copying the file, peak RSS
vs the weight bytes, side by side with the caffe2onnx package (pure-Python protobuf).

Run: python benchmarks/caffe_convert.py [--repeat 3] [--regenerate] [--caffe2onnx-venv DIR] [--skip-caffe2onnx]

The net, written here and cached in benchmarks/work/caffe_convert/: the real VGG16 layer list as a deploy prototxt
(`input:` + `input_dim` 1x3x224x224, V2 `layer {}`), and a TRAIN-net caffemodel shaped like the published one: V2
layers in training order (Data, 13 convs, relus, pools, fc6-fc8, dropouts, SoftmaxWithLoss, Accuracy; only convs and
fcs hold blobs), legacy 4-D num/channels/height/width dims (fc6's weight 1x1x4096x25088, biases 1x1x1xN), He-scaled
random float32 weights; blobs over 64 MB are drawn in 16 MB chunks into a scratch memmap, so the generator holds no
big array in its heap (its RSS still shows the mapped scratch pages). Also the same net with every width / 8.

Measured, each a fresh process with the caffemodel warm in the page cache, median of --repeat (peak RSS: the largest
ru_maxrss of its runs, from wait4):
- `python -m kconvert caffe2keras deploy.prototxt train.caffemodel -o out.h5` and `... caffe2onnx ... -o out.onnx`
  (kconvert byte-compiled first, as pip installs it; both fsync their output);
- the baseline: a python process doing shutil.copyfile + os.fsync of the caffemodel; for reference `cat file`,
  `python -m kconvert --help` (interpreter + CLI imports) and OpenCV's `cv2.dnn.readNetFromCaffe` (load only);
- one in-process conversion per target: phase times, RSS sampled every 5 ms (heap vs mapped-file pages) and the
  functions with the most own time (cProfile);
- the caffe2onnx PyPI package (2.0.1; it pins onnx==1.6.0, which has no wheel for this Python) in its own venv
  (default /work/caffe2onnx-venv, created when missing: the pinned install is tried and its exact error kept, then the
  package goes in with --no-deps next to this venv's onnx/protobuf/numpy), run with
  PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, once per net, under --caffe2onnx-timeout seconds and a
  --caffe2onnx-mem GiB address-space limit, on the VGG16 file and on the width / 8 one next to kconvert caffe2onnx;
- every output against OpenCV's forward on a batch of 2 (.h5 through kconvert's load_model + predict, .onnx through
  onnxruntime; the package's graph restamped to the IR/opset its pinned onnx writes, since onnxruntime refuses the
  IR version today's onnx stamps).
Ratios against the issue's goals are printed and saved to benchmarks/results/caffe_convert.txt.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from versions import onnxruntime_package, version

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "caffe_convert"
RESULTS = HERE / "results"
DEFAULT_C2O_VENV = Path("/work/caffe2onnx-venv")
C2O_VERSION = "2.0.1"
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")
CHUNK = 4 << 20  # float32 values per generated chunk (16 MB)
SMALL = 8  # the side-by-side net: VGG16 with every width divided by this (the caffe2onnx package fits in memory)

# VGG16 (Simonyan & Zisserman, configuration D): (name, out channels) per conv, a pool name after each block
VGG16_CONVS = [("conv1_1", 64), ("conv1_2", 64), "pool1", ("conv2_1", 128), ("conv2_2", 128), "pool2",
               ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool3",
               ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), "pool4",
               ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512), "pool5"]
VGG16_FCS = [("fc6", 4096), ("fc7", 4096), ("fc8", 1000)]


def paths(div: int = 1) -> tuple[Path, Path]:
    """(deploy prototxt, training caffemodel) of VGG16 with widths divided by div."""
    stem = "vgg16" if div == 1 else f"vgg16_w{div}"
    return WORK / f"{stem}_deploy.prototxt", WORK / f"{stem}_train.caffemodel"


# ---------------------------------------------------------------------------------------------- the net


def param_shapes(div: int = 1) -> list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]:
    """(layer, type, weight shape, bias shape) of every VGG16 layer with blobs, Caffe layout; widths / div except
    the input's 3 channels and fc8's 1000 classes."""
    shapes, c_in = [], 3
    for item in VGG16_CONVS:
        if isinstance(item, tuple):
            name, filters = item[0], item[1] // div
            shapes.append((name, "Convolution", (filters, c_in, 3, 3), (filters,)))
            c_in = filters
    k = c_in * 7 * 7
    for name, units in VGG16_FCS:
        units = units if name == "fc8" else units // div
        shapes.append((name, "InnerProduct", (units, k), (units,)))
        k = units
    return shapes


def deploy_prototxt(div: int = 1) -> str:
    """The VGG16 deploy net, laid out as the published VGG_ILSVRC_16_layers_deploy.prototxt (in V2 syntax)."""
    out = ['name: "VGG_ILSVRC_16_layers"', 'input: "data"', *(f"input_dim: {d}" for d in (1, 3, 224, 224))]

    def layer(name: str, type_: str, bottom: str, top: str, param: str = "") -> None:
        out.append(f'layer {{\n  name: "{name}"\n  type: "{type_}"\n  bottom: "{bottom}"\n  top: "{top}"\n'
                   f"{param}}}")

    shapes = {name: w for name, _, w, _ in param_shapes(div)}
    bottom = "data"
    for item in VGG16_CONVS:
        if isinstance(item, str):
            layer(item, "Pooling", bottom, item, "  pooling_param {\n    pool: MAX\n    kernel_size: 2\n"
                                                 "    stride: 2\n  }\n")
            bottom = item
            continue
        name = item[0]
        layer(name, "Convolution", bottom, name, f"  convolution_param {{\n    num_output: {shapes[name][0]}\n"
                                                 "    pad: 1\n    kernel_size: 3\n  }\n")
        layer(name.replace("conv", "relu"), "ReLU", name, name)
        bottom = name
    for name, _ in VGG16_FCS:
        layer(name, "InnerProduct", bottom, name,
              f"  inner_product_param {{\n    num_output: {shapes[name][0]}\n  }}\n")
        bottom = name
        if name != "fc8":
            layer(name.replace("fc", "relu"), "ReLU", name, name)
            layer(name.replace("fc", "drop"), "Dropout", name, name, "  dropout_param {\n"
                                                                     "    dropout_ratio: 0.5\n  }\n")
    layer("prob", "Softmax", "fc8", "prob")
    return "\n".join(out) + "\n"


def weight_bytes(div: int = 1) -> int:
    return sum(4 * (int(np.prod(w)) + int(np.prod(b))) for _, _, w, b in param_shapes(div))


def _random_blob(shape: tuple[int, ...], scale: float, rng: np.random.Generator, scratch: Path) -> np.ndarray:
    """Normal(0, scale) float32; over 64 MB it is drawn chunkwise into a scratch memmap (mapped read-only after)."""
    n = int(np.prod(shape))
    if 4 * n <= 64 << 20:
        return (rng.standard_normal(n, dtype=np.float32) * np.float32(scale)).reshape(shape)
    mm = np.memmap(scratch, np.float32, "w+", shape=(n,))
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        mm[i:i + m] = rng.standard_normal(m, dtype=np.float32) * np.float32(scale)
    mm.flush()
    del mm
    return np.memmap(scratch, np.float32, "r", shape=shape)


def train_layers(div: int, rng: np.random.Generator):
    """The training net's layers, (name, type, blobs), one at a time and in Caffe's training order; He-scaled
    weights (activations keep their scale through the ReLUs), small biases."""
    scratch = WORK / ".scratch.f32"
    shapes = {name: (w, b) for name, _, w, b in param_shapes(div)}

    def blobs(name: str) -> list[np.ndarray]:
        w, b = shapes[name]
        return [_random_blob(w, (2.0 / np.prod(w[1:])) ** 0.5, rng, scratch), _random_blob(b, 0.05, rng, scratch)]

    try:
        yield "data", "Data", []
        for item in VGG16_CONVS:
            if isinstance(item, str):
                yield item, "Pooling", []
                continue
            yield item[0], "Convolution", blobs(item[0])
            yield item[0].replace("conv", "relu"), "ReLU", []
        for name, _ in VGG16_FCS:
            yield name, "InnerProduct", blobs(name)
            if name != "fc8":
                yield name.replace("fc", "relu"), "ReLU", []
                yield name.replace("fc", "drop"), "Dropout", []
        yield "loss", "SoftmaxWithLoss", []
        yield "accuracy", "Accuracy", []
    finally:
        scratch.unlink(missing_ok=True)


def generate(div: int, regenerate: bool) -> None:
    """Write the deploy prototxt and (unless cached) the training caffemodel with legacy 4-D blob dims."""
    from kconvert.formats.caffe.caffemodel import write_caffemodel

    WORK.mkdir(parents=True, exist_ok=True)
    deploy, model = paths(div)
    deploy.write_text(deploy_prototxt(div))
    if model.exists() and not regenerate:
        return
    print(f"writing {model} ({weight_bytes(div) / 2**20:.0f} MB of weights) ...", flush=True)
    write_caffemodel(model, train_layers(div, np.random.default_rng(div)), version=2, name="VGG_ILSVRC_16_layers",
                     legacy_dims=True)


# ---------------------------------------------------------------------------------------------- measuring


def run_measured(cmd: list[str], *, env_extra: dict | None = None, timeout: float | None = None,
                 mem_limit: int | None = None, stdout=None) -> dict:
    """Run cmd as a fresh process: {'seconds', 'rss' (peak bytes), 'rc', 'error' (last output line or None), 'log'}.

    The peak RSS comes from GNU time where installed: wait4's ru_maxrss of a child forked from this process starts at
    this process's own RSS (the pre-exec copy counts), which would put a ~40 MB floor under small commands.
    """
    log, rss_file = WORK / ".run.log", WORK / ".run.rss"
    rss_file.unlink(missing_ok=True)
    if GNU_TIME:
        cmd = [GNU_TIME, "-o", str(rss_file), "-f", "%M", *cmd]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **(env_extra or {})}, stdout=stdout or out, stderr=out,
                                preexec_fn=limit if mem_limit else None, start_new_session=True)
        killed: list[bool] = []
        timer = None
        if timeout:
            def kill() -> None:
                killed.append(True)
                os.killpg(proc.pid, signal.SIGKILL)
            timer = threading.Timer(timeout, kill)
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if timer:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    rss = usage.ru_maxrss * 1024
    reported = rss_file.read_text().split() if rss_file.exists() else []
    if reported and reported[-1].isdigit():
        rss = int(reported[-1]) * 1024
    error = None
    if killed:
        error = f"killed after {timeout:.0f} s (time limit)"
    elif proc.returncode != 0:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        error = (lines[-1] if lines else f"exit code {proc.returncode}")[:300]
    return {"seconds": seconds, "rss": rss, "rc": proc.returncode, "error": error, "log": text}


def measure(cmd_for_run, repeat: int, before=None, **kw) -> dict:
    """Median seconds and largest peak RSS over `repeat` runs (stops at the first failure)."""
    runs = []
    for _ in range(repeat):
        if before:
            before()
        r = run_measured(cmd_for_run(), **kw)
        runs.append(r)
        if r["error"]:
            return {"error": r["error"], "seconds": r["seconds"], "rss": r["rss"], "log": r["log"]}
    return {"seconds": statistics.median(r["seconds"] for r in runs), "min": min(r["seconds"] for r in runs),
            "rss": max(r["rss"] for r in runs), "error": None, "log": runs[-1]["log"]}


COPY = ("import os, shutil, sys\nshutil.copyfile(sys.argv[1], sys.argv[2])\nfd = os.open(sys.argv[2], os.O_RDONLY)\n"
        "os.fsync(fd)\nos.close(fd)\n")
OPENCV_LOAD = "import sys, cv2\nnet = cv2.dnn.readNetFromCaffe(sys.argv[1], sys.argv[2])\nprint(len(net.getLayerNames()))\n"


# ---------------------------------------------------------------------------------------------- caffe2onnx package


def setup_caffe2onnx(venv: Path) -> list[str]:
    """Create the caffe2onnx venv when missing; returns notes (the pinned install's exact error)."""
    notes: list[str] = []
    marker = venv / "pinned_install_error.txt"
    python = venv / "bin" / "python"
    if python.exists():
        if marker.exists():
            notes.append(marker.read_text().strip())
        return notes
    print(f"creating the caffe2onnx venv {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    done = subprocess.run([*pip, f"caffe2onnx=={C2O_VERSION}"], capture_output=True, text=True)
    if done.returncode != 0:
        text = done.stdout + done.stderr
        cmake = re.search(r"CMake Error[^\n]*\n\s*([^\n]+)", text)
        errors = re.findall(r"^ERROR: (.*)$", text, re.M)
        why = "; ".join(([f"CMake Error: {cmake.group(1).strip()}"] if cmake else []) + errors[-1:])
        note = (f"`pip install caffe2onnx=={C2O_VERSION}` fails: its onnx==1.6.0 pin has no wheel for Python "
                f"{platform.python_version()} and the source build stops: {why}")
        marker.write_text(note + "\n")
        notes.append(note)
        pins = [f"{p}=={metadata.version(p)}" for p in ("onnx", "protobuf", "numpy")]
        subprocess.run([*pip, "--no-deps", f"caffe2onnx=={C2O_VERSION}"], check=True, capture_output=True)
        subprocess.run([*pip, *pins], check=True, capture_output=True)
    return notes


def caffe2onnx_versions(python: Path) -> str:
    code = ("import json, importlib.metadata as m, platform; print(json.dumps([platform.python_version()] + "
            "[m.version(p) for p in ('caffe2onnx', 'onnx', 'protobuf', 'numpy')]))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return f"caffe2onnx venv {python}: cannot read versions"
    py, c2o, onnx_v, pb, npv = json.loads(out.stdout)
    return (f"caffe2onnx venv: python {py} ({python}): caffe2onnx {c2o} (installed --no-deps), onnx {onnx_v}, "
            f"protobuf {pb} (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python), numpy {npv}")


# ---------------------------------------------------------------------------------------------- workers

CHECK = r"""
import json, sys, numpy as np, cv2
deploy, model, *outputs = sys.argv[1:]
x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32) * INPUT_SCALE
net = cv2.dnn.readNetFromCaffe(deploy, model)
net.setInput(x)
prob, fc8 = (o.reshape(2, -1).astype(np.float64) for o in net.forward(["prob", "fc8"]))
res = {"max_prob": float(prob.max()), "fc8_std": float(fc8.std())}
for path in outputs:
    try:
        if path.endswith(".h5"):
            import kconvert
            y = kconvert.load_model(path).predict(x.transpose(0, 2, 3, 1))
        else:
            import onnx, onnxruntime as ort
            graph = path
            if "caffe2onnx" in path:  # stamped IR 14 / opset 28 by today's onnx: restamp as its onnx==1.6.0 pin would
                m = onnx.load(path)
                m.ir_version = 6
                for o in m.opset_import:
                    o.version = 11
                graph = m.SerializeToString()
            so = ort.SessionOptions()
            so.log_severity_level = 3
            s = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
            i = s.get_inputs()[0]
            y = np.concatenate([s.run(None, {i.name: x[j:j + 1]})[0] for j in range(2)])  # batch 1 fits any graph
        res[path] = float(np.abs(np.asarray(y, np.float64).reshape(2, -1) - prob).max())
    except Exception as e:
        res[path] = "failed: " + (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
print(json.dumps(res))
"""
INPUT_SCALE = 1.0  # uniform(-1, 1) inputs keep VGG16's He-scaled logits in softmax's sensitive range


def phases_worker(target: str) -> None:
    """Worker: one in-process conversion with phase times and a 5 ms RSS sampler (anonymous / file-backed split)."""
    t0 = time.perf_counter()
    state = {"phase": "imports", "peak": (0, 0, 0, "")}

    def status() -> tuple[int, int, int]:
        d = {}
        for line in open("/proc/self/status"):
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                key, value = line.split(":")
                d[key] = int(value.split()[0]) << 10
        return d["VmRSS"], d["RssAnon"], d["RssFile"]

    def sample() -> None:
        while True:
            rss = status()
            if rss[0] > state["peak"][0]:
                state["peak"] = (*rss, state["phase"])
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    import cProfile
    import pstats

    from kconvert.convert import caffe_to_keras, keras_to_onnx

    deploy, model = paths(1)
    times = {"imports": time.perf_counter() - t0}
    state["phase"] = "read + build (weights deferred)"
    profile = cProfile.Profile()
    profile.enable()
    t0 = time.perf_counter()
    net = caffe_to_keras(deploy, model, data_format="channels_first" if target == "onnx" else "channels_last")
    times[state["phase"]] = time.perf_counter() - t0
    after = status()
    state["phase"] = "transform + write .onnx" if target == "onnx" else "transform + write .h5"
    t0 = time.perf_counter()
    if target == "onnx":  # as the CLI does it: weights streamed to the file as they are lowered
        keras_to_onnx(net, WORK / "phases.onnx", stream=True)
    else:
        net.save(WORK / "phases.h5")
    times[state["phase"]] = time.perf_counter() - t0
    profile.disable()
    time.sleep(0.02)
    stats = pstats.Stats(profile).stats  # (file, line, function) -> (calls, _, own time, cumulative, callers)
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:8]
    hot = [(f"{Path(f).name}:{line} {fn}" if line else fn, own, calls) for (f, line, fn), (calls, _, own, _, _) in top]
    print(json.dumps({"times": times, "after_convert": after, "peak": state["peak"], "hot": hot}))


# ---------------------------------------------------------------------------------------------- report


def mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def verdict(r: float, goal: float) -> str:
    return f"{r:5.2f}x ({'ok' if r <= goal else 'MISSED'}, goal <= {goal:g}x)"


def versions() -> str:
    ver = version
    ort_pkg = onnxruntime_package()
    cv = next((ver(p) for p in ("opencv-python", "opencv-python-headless", "opencv-contrib-python")
               if ver(p) != "absent"), "absent")
    return (f"python {platform.python_version()} ({sys.executable}): kconvert {ver('kconvert')}, numpy {ver('numpy')},"
            f" h5py {ver('h5py')}, onnx {ver('onnx')}, protobuf {ver('protobuf')}, {ort_pkg} {ver(ort_pkg)}, "
            f"opencv {cv}")


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def run_rows(runs: dict, notes: list[str]) -> list[str]:
    lines = [f"{'process':<50} {'median':>8} {'min':>8} {'peak RSS':>9}   output"]
    for label, r in runs.items():
        if r["error"]:
            lines.append(f"{label:<50} {'failed':>8} {'':>8} {mb(r['rss']):>9}   after {r['seconds']:.1f} s")
            notes.append(f"{label}: {r['error']}")
            continue
        out = r.get("output")
        out_text = f"{mb(out.stat().st_size)} {out.name}" if out and out.exists() else ""
        lines.append(f"{label:<50} {r['seconds']:7.2f}s {r.get('min', r['seconds']):7.2f}s {mb(r['rss']):>9}   "
                     f"{out_text}")
    return lines


def check_rows(check: dict) -> list[str]:
    if "error" in check:
        return [f"check failed: {check['error']}"]
    lines = [f"(OpenCV: largest probability {check.pop('max_prob'):.3f}, fc8 logits std {check.pop('fc8_std'):.2f})"]
    for path, err in check.items():
        lines.append(f"{err if isinstance(err, str) else f'{err:.2e}':<10} {path}")
    return lines


def report(res: dict, header: list[str], repeat: int) -> str:
    wbytes = weight_bytes(1)
    runs, notes = res["runs"], []
    lines = header + ["", f"1. Whole process on the VGG16 file, median of {repeat} (the caffe2onnx package: one run), "
                      "the caffemodel warm in the page cache; peak RSS = ru_maxrss of the process", ""]
    lines += run_rows(runs, notes) + notes
    copy, best = (runs["baseline: copy + fsync (python shutil)"][k] for k in ("seconds", "min"))
    lines += ["", f"2. Against the goals (weight bytes {wbytes:,} = {mb(wbytes)}; time / the copy + fsync process)",
              ""]
    for label, key, rss_goal in (("caffe2keras", "kconvert caffe2keras -> .h5", 1.5),
                                 ("caffe2onnx", "kconvert caffe2onnx -> .onnx", 2.0)):
        r = runs[key]
        if r["error"]:
            lines.append(f"{label:<12} failed: {r['error']}")
            continue
        lines.append(f"{label:<12} time {verdict(r['seconds'] / copy, 2.0)} (best runs {r['min'] / best:.2f}x)   "
                     f"peak RSS / weight bytes {verdict(r['rss'] / wbytes, rss_goal)}")
    startup = runs["reference: python -m kconvert --help"]
    lines.append(f"(interpreter + CLI imports alone: {startup['seconds']:.2f} s, {mb(startup['rss'])} peak RSS)")

    lines += ["", "3. Where kconvert's time and memory go: one in-process conversion per target, RSS sampled every 5 ms "
              "(anon = heap, file = pages of the mapped caffemodel)", ""]
    for target, ph in res["phases"].items():
        if "error" in ph:
            lines.append(f"{target}: failed: {ph['error']}")
            continue
        times = ", ".join(f"{k} {v:.2f} s" for k, v in ph["times"].items())
        rss, anon, file, phase = ph["peak"]
        a_rss, a_anon, a_file = ph["after_convert"]
        lines.append(f"{target:<12} {times}")
        lines.append(f"{'':<12} peak RSS {mb(rss)} (anon {mb(anon)}, file {mb(file)}) during {phase}; after the "
                     f"conversion {mb(a_rss)} (anon {mb(a_anon)}, file {mb(a_file)})")
        lines.append(f"{'':<12} own time of the busiest functions (cProfile, convert + write):")
        lines += [f"{'':<14} {own:6.2f} s  {calls:>4}x  {where}" for where, own, calls in ph["hot"]]

    small = res["small"]
    lines += ["", f"4. Side by side with the caffe2onnx {C2O_VERSION} package (pure-Python protobuf), one run each", ""]
    lines += res["c2o_notes"]
    if small:
        sw = weight_bytes(SMALL)
        lines += ["", f"VGG16 with widths / {SMALL} (same layer list and file layout, {mb(paths(SMALL)[1].stat().st_size)}"
                  f" caffemodel, {sw:,} weight bytes), where the package fits in memory:", ""]
        notes = []
        lines += run_rows(small, notes) + notes
        k = small.get("kconvert caffe2onnx -> .onnx (widths / 8)")
        c = small.get(f"caffe2onnx {C2O_VERSION} package (widths / 8)")
        if k and c and not k["error"] and not c["error"]:
            lines.append(f"caffe2onnx package / kconvert: time {c['seconds'] / k['seconds']:.1f}x, peak RSS "
                         f"{c['rss'] / k['rss']:.1f}x")

    lines += ["", "5. Outputs on a batch of 2 (uniform(-1, 1) NCHW input): max |prob - OpenCV readNetFromCaffe "
              "forward|", ""]
    for title, check in res["checks"].items():
        lines += [title] + check_rows(check) + [""]
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------------------------------------- main


def check(div: int, outputs: list[Path]) -> dict:
    deploy, model = paths(div)
    code = CHECK.replace("INPUT_SCALE", repr(INPUT_SCALE))
    done = subprocess.run([sys.executable, "-c", code, str(deploy), str(model), *map(str, outputs)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    res = json.loads(done.stdout.strip().splitlines()[-1])
    def label(k: str) -> str:
        name = Path(k).name
        if k.endswith(".h5"):
            return f"{name} (kconvert load_model + predict)"
        if "caffe2onnx" in name:
            return f"{name} (onnxruntime; restamped IR 6 / opset 11, as its onnx==1.6.0 pin writes)"
        return f"{name} (onnxruntime)" if k.endswith(".onnx") else k

    return {label(k): v for k, v in res.items()}


def run_caffe2onnx(python: Path, div: int, out: Path, args) -> dict:
    deploy, model = paths(div)
    out.unlink(missing_ok=True)
    subprocess.run(["cat", str(model)], stdout=subprocess.DEVNULL, check=True)
    r = run_measured([str(python), "-m", "caffe2onnx.convert", "--prototxt", str(deploy), "--caffemodel", str(model),
                      "--onnx", str(out)], env_extra={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
                     timeout=args.caffe2onnx_timeout, mem_limit=int(args.caffe2onnx_mem * 2**30))
    if not r["error"] and not out.exists():  # it catches its own save errors and exits 0
        said = [ln for ln in r["log"].splitlines() if ln.strip()]
        r["error"] = "no output written: " + (" | ".join(said[-2:]) if said else "(no message)")[:300]
    if r["error"] and "MemoryError" in r["log"]:
        log = r["log"].splitlines()
        frames = [ln.strip() for ln in log if ln.strip().startswith("File ") and "/caffe2onnx/" in ln]
        said = [ln.strip() for ln in log if ln.startswith(("convert layer", "caffe model has been"))]
        where = re.match(r'File "(?:.*site-packages/)?([^"]+)", line (\d+), in (\S+)', frames[-1]) if frames else None
        r["error"] = (f"MemoryError under the {args.caffe2onnx_mem:g} GiB address-space limit"
                      + (f", in {where[3]} ({where[1]}:{where[2]})" if where else "")
                      + (f"; its last progress line: '{said[-1]}'" if said else ""))
    r["output"] = out
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per process (median time, largest peak RSS)")
    ap.add_argument("--regenerate", action="store_true", help="rewrite the cached caffemodels")
    ap.add_argument("--caffe2onnx-venv", type=Path, default=DEFAULT_C2O_VENV)
    ap.add_argument("--caffe2onnx-timeout", type=float, default=300.0, help="seconds the caffe2onnx package may run")
    ap.add_argument("--caffe2onnx-mem", type=float, default=10.0, help="GiB of address space caffe2onnx may use")
    ap.add_argument("--skip-caffe2onnx", action="store_true", help="leave the caffe2onnx package out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        phases_worker(args.worker)
        return

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    import kconvert

    # pip compiles installed packages; an editable checkout under PYTHONDONTWRITEBYTECODE has no bytecode
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(kconvert.__file__).parent)], check=True)
    for div in (1, SMALL):
        generate(div, args.regenerate)
    deploy, model = paths(1)
    py = sys.executable
    out_h5, out_onnx, copy = WORK / "out.h5", WORK / "out.onnx", WORK / "copy.caffemodel"

    def warm() -> None:
        subprocess.run(["cat", str(model)], stdout=subprocess.DEVNULL, check=True)

    tools = {
        "baseline: copy + fsync (python shutil)": ([py, "-c", COPY, str(model), str(copy)], copy),
        "reference: cat file > /dev/null": (["cat", str(model)], None),
        "reference: python -m kconvert --help": ([py, "-m", "kconvert", "--help"], None),
        "kconvert caffe2keras -> .h5": ([py, "-m", "kconvert", "caffe2keras", str(deploy), str(model), "-o",
                                         str(out_h5)], out_h5),
        "kconvert caffe2onnx -> .onnx": ([py, "-m", "kconvert", "caffe2onnx", str(deploy), str(model), "-o",
                                          str(out_onnx)], out_onnx),
        "reference: OpenCV readNetFromCaffe (load only)": ([py, "-c", OPENCV_LOAD, str(deploy), str(model)], None),
    }
    runs: dict = {}
    for label, (cmd, output) in tools.items():
        print(f"timing {label} ...", flush=True)

        def fresh(output=output) -> None:
            if output is not None:
                output.unlink(missing_ok=True)
            warm()

        runs[label] = measure(lambda cmd=cmd: cmd, args.repeat, before=fresh,
                              stdout=subprocess.DEVNULL if cmd[0] == "cat" else None)
        runs[label]["output"] = output
    copy.unlink(missing_ok=True)

    print("phase breakdown ...", flush=True)
    phases = {}
    for target in ("caffe2keras", "caffe2onnx"):
        warm()
        done = subprocess.run([py, __file__, "--worker", "onnx" if target == "caffe2onnx" else "h5"],
                              capture_output=True, text=True)
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        phases[target] = json.loads(lines[-1]) if done.returncode == 0 else {"error": lines[-1] if lines else "?"}
    for extra in ("phases.h5", "phases.onnx"):
        (WORK / extra).unlink(missing_ok=True)

    header_extra, c2o_notes, small = [], [], {}
    c2o_full, c2o_small = WORK / "out.caffe2onnx.onnx", WORK / f"out_w{SMALL}.caffe2onnx.onnx"
    k_small = WORK / f"out_w{SMALL}.onnx"
    c2o_python = args.caffe2onnx_venv / "bin" / "python"
    if args.skip_caffe2onnx:
        c2o_notes.append("(left out: --skip-caffe2onnx)")
    else:
        try:
            c2o_notes += setup_caffe2onnx(args.caffe2onnx_venv)
        except subprocess.CalledProcessError as e:
            c2o_notes.append(f"the caffe2onnx venv could not be set up: {e}")
    if not args.skip_caffe2onnx and c2o_python.exists():
        header_extra.append(caffe2onnx_versions(c2o_python))
        label = f"caffe2onnx {C2O_VERSION} package"
        print(f"timing {label} on the VGG16 file (one run, up to {args.caffe2onnx_timeout:.0f} s) ...", flush=True)
        r = run_caffe2onnx(c2o_python, 1, c2o_full, args)
        runs[f"{label} (pure-Python protobuf)"] = r
        c2o_notes.append(f"On the VGG16 file: {r['error'] or 'converted'} (after {r['seconds']:.0f} s, peak RSS "
                         f"{mb(r['rss'])})")
        print(f"timing {label} and kconvert caffe2onnx on VGG16 widths / {SMALL} ...", flush=True)
        small[f"{label} (widths / {SMALL})"] = run_caffe2onnx(c2o_python, SMALL, c2o_small, args)
        sd, sm = paths(SMALL)
        k_small.unlink(missing_ok=True)
        small[f"kconvert caffe2onnx -> .onnx (widths / {SMALL})"] = run_measured(
            [py, "-m", "kconvert", "caffe2onnx", str(sd), str(sm), "-o", str(k_small)])
        small[f"kconvert caffe2onnx -> .onnx (widths / {SMALL})"]["output"] = k_small

    print("checking outputs against OpenCV ...", flush=True)
    checks = {"VGG16:": check(1, [p for p in (out_h5, out_onnx, c2o_full) if p.exists()])}
    if small:
        checks[f"VGG16 widths / {SMALL}:"] = check(SMALL, [p for p in (k_small, c2o_small) if p.exists()])

    header = [f"kconvert caffe2keras / caffe2onnx on a VGG16-size training caffemodel, "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              f"machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
              versions(), *header_extra,
              f"net: {deploy.name} (VGG16 deploy, input: + input_dim 1x3x224x224) + {model.name} "
              f"({mb(model.stat().st_size)}: V2 training net with Data/SoftmaxWithLoss/Accuracy layers, legacy 4-D "
              f"blob dims, {weight_bytes(1) // 4:,} float32 weights)",
              f"benchmark wall time: {time.perf_counter() - started:.0f} s; 1-min load average at start "
              f"{load_start:.1f}, at end {os.getloadavg()[0]:.1f} (other work on the machine skews the timings)"]
    text = report({"runs": runs, "phases": phases, "c2o_notes": c2o_notes, "small": small, "checks": checks},
                  header, args.repeat)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "caffe_convert.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
