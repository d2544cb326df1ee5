"""kconvert vs tf2onnx on the same tf_keras `.h5` models: MobileNet 224, the IMDB LSTM and the MNIST MLP.

Run: python benchmarks/onnx_vs_tf2onnx.py [--tf2onnx-python PATH] [--threads 1 2] [--repeat 3] [--budget 3]
tf2onnx runs in its own virtualenv (default /work/tf2onnx-venv): create it with `bash benchmarks/setup_tf2onnx.sh`.

What is timed, per model (the models are built here with tf_keras and cached in benchmarks/work/onnx_vs_tf2onnx/):
- conversion: wall time of a fresh process, imports included, median of --repeat, the two tools taking turns:
  `python -m kconvert keras2onnx M.h5 -o M.onnx` vs
  `TF_USE_LEGACY_KERAS=1 <tf2onnx python> -m tf2onnx.convert --keras M.h5 --output M.onnx` (its default opset).
- onnxruntime latency of both graphs at batch 1 and 32: this venv's onnxruntime, CPUExecutionProvider, the same
  SessionOptions for both (intra_op_num_threads = each --threads value, inter_op_num_threads 1, ORT_ENABLE_ALL);
  the two sessions run in turn after warm-up, median per call.
- node and Transpose counts of both graph files.
- batch-1 latency of kconvert `load_model(M).predict(x)` (device "cpu" where predict takes one) vs tf_keras
  `model.predict(x)` and `model(x)` (separate process, TensorFlow's default threads) and vs a raw onnxruntime
  session on kconvert's graph (default SessionOptions, as the wrapper's).
- max |output - tf_keras predict| of every path on a batch of 2, so a fast but wrong graph shows.
Until `kconvert keras2onnx` exists its columns read "not yet" under the note "kconvert keras2onnx not available
yet", and the raw session runs the model's `to_onnx()` graph where it has one.
Results are printed and saved to benchmarks/results/onnx_vs_tf2onnx.txt.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from versions import onnxruntime_package, version

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "onnx_vs_tf2onnx"
RESULTS = HERE / "results"
FIXTURES = HERE.parent / "fixtures"
DEFAULT_TF2ONNX_PYTHON = "/work/tf2onnx-venv/bin/python"
NOT_YET = "kconvert keras2onnx not available yet"

# name -> (input shape without batch, input dtype, token range for integer inputs)
MODELS: dict[str, tuple[tuple[int, ...], str, int]] = {
    "mobilenet": ((224, 224, 3), "float32", 0),
    "lstm": ((80,), "int32", 20000),
    "mlp": ((784,), "float32", 0),
}
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64}


# ---------------------------------------------------------------------------------------------- workers


def build_models(names: list[str]) -> None:
    """Worker (tf_keras): build and save each model with fan-in-scaled random weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(FIXTURES))
    import tf_keras as k
    from fixture_weights import weight_value

    L = k.layers
    for name in names:
        k.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        if name == "mobilenet":
            model = k.applications.MobileNet(weights=None, input_shape=(224, 224, 3))
        elif name == "lstm":  # classic imdb_lstm
            model = k.Sequential([k.Input((80,), dtype="int32"), L.Embedding(20000, 128), L.LSTM(128),
                                  L.Dense(1, activation="sigmoid")])
        else:  # classic mnist_mlp
            model = k.Sequential([k.Input((784,)), L.Dense(512, activation="relu"), L.Dropout(0.2),
                                  L.Dense(512, activation="relu"), L.Dropout(0.2), L.Dense(10, activation="softmax")])
        for layer in model.layers:
            strides = getattr(layer, "strides", 1)
            values = [weight_value(type(layer).__name__, w.name.split("/")[-1].split(":")[0], tuple(w.shape),
                                   strides, rng) for w in layer.weights]
            if values:
                layer.set_weights(values)
        model.save(WORK / f"{name}.h5")


def tf_keras_worker(name: str, runs: int, budget: float) -> None:
    """Worker (tf_keras): save the reference output, print batch-1 latency of predict and of a direct call."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras as k

    model = k.models.load_model(WORK / f"{name}.h5", compile=False)
    inputs = np.load(WORK / f"{name}_inputs.npz")
    np.save(WORK / f"{name}_reference.npy", model.predict(inputs["check"], verbose=0))
    x = inputs["b1"]
    times = latencies({"predict": lambda: model.predict(x, verbose=0),
                       "call": lambda: model(x, training=False)}, runs, budget)
    print(json.dumps(times))


# ---------------------------------------------------------------------------------------------- measuring


def latencies(fns: dict[str, Callable[[], object]], runs: int, budget: float, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each fn; the fns are called in turn, up to `runs` rounds or `budget` seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for i in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if i >= 4 and time.perf_counter() - start > budget:
            break
    return {name: statistics.median(t) for name, t in times.items()}


def run_process(cmd: list[str], env_extra: dict | None = None) -> tuple[float, str | None]:
    """(wall seconds, None) for a process that succeeded, else (seconds, its last error line)."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **(env_extra or {})}, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode == 0:
        return elapsed, None
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return elapsed, (lines[-1] if lines else f"exit code {done.returncode}")[:160]


def converters(tf2onnx_python: str | None, kconvert_ok: bool) -> dict[str, Callable[[str], tuple[list[str], dict]]]:
    """tool -> (model name -> (command, extra environment)) for the tools available here."""
    tools: dict[str, Callable[[str], tuple[list[str], dict]]] = {}
    if kconvert_ok:
        tools["kconvert"] = lambda n: ([sys.executable, "-m", "kconvert", "keras2onnx", str(WORK / f"{n}.h5"),
                                        "-o", str(WORK / f"{n}.kconvert.onnx")], {})
    if tf2onnx_python:
        tools["tf2onnx"] = lambda n: ([tf2onnx_python, "-m", "tf2onnx.convert", "--keras", str(WORK / f"{n}.h5"),
                                       "--output", str(WORK / f"{n}.tf2onnx.onnx")], {"TF_USE_LEGACY_KERAS": "1"})
    return tools


def time_conversions(name: str, tools: dict, repeat: int) -> dict[str, float | str]:
    """tool -> median conversion seconds, or the error text of its first failure."""
    times: dict[str, list[float]] = {tool: [] for tool in tools}
    failed: dict[str, str] = {}
    for _ in range(repeat):
        for tool, make in tools.items():
            if tool in failed:
                continue
            seconds, error = run_process(*make(name))
            if error:
                failed[tool] = f"failed: {error}"
            else:
                times[tool].append(seconds)
    return {tool: failed.get(tool) or statistics.median(times[tool]) for tool in tools}


def graph_stats(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path))
    ops = Counter(node.op_type for node in model.graph.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"nodes": len(model.graph.node), "transpose": ops.get("Transpose", 0), "opset": opset,
            "ops": ", ".join(f"{op} {n}" for op, n in ops.most_common())}


def ort_session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:  # None: onnxruntime's defaults, as kconvert's wrapper uses them
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_runner(session, x: np.ndarray) -> Callable[[], object]:
    """A no-argument call running the session on x, cast to the graph's input dtype."""
    info = session.get_inputs()[0]
    feed = {info.name: np.ascontiguousarray(x, dtype=ORT_DTYPES.get(info.type, x.dtype))}
    return lambda: session.run(None, feed)


def max_error(y, reference: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(y, dtype=np.float64) - reference)))


# ---------------------------------------------------------------------------------------------- report


def cell(v: float | str | None, unit: str, where: str, notes: list[str]) -> str:
    """A number in s or ms; a failure becomes 'failed' with its message added to notes."""
    if isinstance(v, float):
        return f"{v:.2f} s" if unit == "s" else f"{v * 1e3:.3f} ms"
    if isinstance(v, str) and v.startswith("failed"):
        notes.append(f"{where}: {v}")
        return "failed"
    return str(v)


def ratio(num, den, goal: str, at_least: bool) -> str:
    """num/den with a verdict against goal (e.g. '20x', at_least) or '-' when either side is missing."""
    if not (isinstance(num, float) and isinstance(den, float)) or den <= 0:
        return "-"
    r = num / den
    limit = float(goal.rstrip("x"))
    ok = r >= limit if at_least else r <= limit
    return f"{r:7.2f}x ({'ok' if ok else 'MISSED'}, goal {'>=' if at_least else '<='} {goal})"


def versions(tf2onnx_python: str | None) -> list[str]:
    ver = version
    ort_pkg = onnxruntime_package()
    lines = [f"python {platform.python_version()} ({sys.executable}): kconvert {ver('kconvert')}, numpy "
             f"{ver('numpy')}, onnx {ver('onnx')}, {ort_pkg} {ver(ort_pkg)}, tf_keras {ver('tf_keras')}, "
             f"tensorflow {ver('tensorflow')}"]
    if tf2onnx_python:
        code = ("import json, importlib.metadata as m, platform; print(json.dumps([platform.python_version()] + "
                "[m.version(p) for p in ('tf2onnx', 'tensorflow', 'tf_keras', 'onnx', 'protobuf', 'numpy')]))")
        out = subprocess.run([tf2onnx_python, "-c", code], capture_output=True, text=True, check=True).stdout
        py, t2o, tf, tfk, onnx_v, pb, npv = json.loads(out)
        lines.append(f"tf2onnx venv: python {py} ({tf2onnx_python}): tf2onnx {t2o}, tensorflow {tf}, tf_keras {tfk},"
                     f" onnx {onnx_v}, protobuf {pb}, numpy {npv}")
    return lines


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


# ---------------------------------------------------------------------------------------------- main


def kconvert_has_keras2onnx() -> bool:
    done = subprocess.run([sys.executable, "-m", "kconvert", "--help"], capture_output=True, text=True)
    return done.returncode == 0 and "keras2onnx" in done.stdout


def make_inputs(name: str) -> None:
    shape, dtype, high = MODELS[name]
    rng = np.random.default_rng(1)

    def draw(batch: int) -> np.ndarray:
        if high:
            return rng.integers(0, high, (batch, *shape)).astype(dtype)
        return rng.standard_normal((batch, *shape)).astype(dtype)

    np.savez(WORK / f"{name}_inputs.npz", b1=draw(1), b32=draw(32), check=draw(2))


def bench_model(name: str, args, tools: dict, kconvert_ok: bool) -> dict:
    """Every measurement for one model, as a dict of plain values (seconds, counts or error texts)."""
    res: dict = {"convert": time_conversions(name, tools, args.repeat)}
    graphs = {tool: WORK / f"{name}.{tool}.onnx" for tool in ("kconvert", "tf2onnx")}
    graphs = {t: p for t, p in graphs.items() if isinstance(res["convert"].get(t), float) and p.exists()}
    res["graphs"] = {tool: graph_stats(path) for tool, path in graphs.items()}

    done = subprocess.run([sys.executable, __file__, "--worker", "tf_keras", name, "--runs", str(args.runs),
                           "--budget", str(args.budget)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tf_keras worker failed on {name}:\n{done.stderr[-2000:]}")
    res["tf_keras"] = json.loads(done.stdout.strip().splitlines()[-1])
    inputs = np.load(WORK / f"{name}_inputs.npz")
    reference = np.load(WORK / f"{name}_reference.npy").astype(np.float64)
    res["scale"] = float(np.max(np.abs(reference)))

    res["error"] = {}
    for tool, path in graphs.items():
        res["error"][f"{tool} graph (onnxruntime)"] = max_error(ort_runner(ort_session(path, None),
                                                                           inputs["check"])()[0], reference)
    res["ort"] = {}
    for threads in args.threads:
        for batch in (1, 32):
            x = inputs[f"b{batch}"]
            runners = {}
            for tool, path in graphs.items():
                try:
                    runners[tool] = ort_runner(ort_session(path, threads), x)
                    runners[tool]()
                except Exception as e:  # onnxruntime's own exception types
                    runners.pop(tool, None)
                    res["ort"][(threads, batch, tool)] = f"failed: {str(e).splitlines()[0][:120]}"
            for tool, seconds in latencies(runners, args.runs, args.budget).items():
                res["ort"][(threads, batch, tool)] = seconds

    res["predict"] = kconvert_predict(name, graphs.get("kconvert"), inputs, reference, args, res["error"])
    return res


def kconvert_predict(name: str, graph: Path | None, inputs, reference: np.ndarray, args, errors: dict) -> dict:
    """Batch-1 latency of kconvert Model.predict (on CPU) and of a raw onnxruntime session on kconvert's graph.

    The graph is the `keras2onnx` file, else (until that command lands) the model's own `to_onnx()` export.
    """
    import inspect
    import warnings

    import kconvert

    res: dict = {"notes": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = kconvert.load_model(WORK / f"{name}.h5", compile=False)
            cpu = {"device": "cpu"} if "device" in inspect.signature(model.predict).parameters else {}
            errors["kconvert Model.predict"] = max_error(model.predict(inputs["check"], **cpu), reference)
        except Exception as e:  # report, do not stop the other columns
            return {"kconvert": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}", "notes": []}
        if graph is None and hasattr(model, "to_onnx"):
            try:
                graph = WORK / f"{name}.kconvert_to_onnx.onnx"
                model.to_onnx(str(graph))
                res["graph"] = "Model.to_onnx()"
            except Exception as e:  # no graph for the raw session: say why
                graph = None
                res["raw_ort"] = f"failed: Model.to_onnx(): {str(e).splitlines()[0][:100]}"
    res["notes"] = sorted({str(w.message) for w in caught})
    x = inputs["b1"]
    fns = {"kconvert": lambda: model.predict(x, **cpu)}
    if graph is not None:
        fns["raw_ort"] = ort_runner(ort_session(graph, None), x)
    res.update(latencies(fns, args.runs, args.budget))
    return res


def report(results: dict, args, kconvert_ok: bool, tf2onnx_python: str | None, header: list[str]) -> str:
    miss_k = "-" if kconvert_ok else "not yet"
    miss_t = "no venv" if tf2onnx_python is None else "-"
    note_k = [] if kconvert_ok else [f"kconvert columns: {NOT_YET}"]
    lines = header + ["", f"1. Conversion, whole process incl. imports, median of {args.repeat} "
                      "(speed-up = tf2onnx / kconvert)", *note_k, ""]
    lines.append(f"{'model':<10} {'kconvert':>11} {'tf2onnx':>11}   speed-up")
    notes: list[str] = []
    for name, r in results.items():
        k, t = r["convert"].get("kconvert", miss_k), r["convert"].get("tf2onnx", miss_t)
        lines.append(f"{name:<10} {cell(k, 's', f'{name} kconvert', notes):>11} "
                     f"{cell(t, 's', f'{name} tf2onnx', notes):>11}   {ratio(t, k, '20x', True)}")
    lines += notes

    lines += ["", "2. onnxruntime latency, same SessionOptions (intra_op threads as listed, inter_op 1, "
              "ORT_ENABLE_ALL), CPU, median per call (ratio = kconvert / tf2onnx)", *note_k, ""]
    lines.append(f"{'model':<10} {'threads':>7} {'batch':>5} {'kconvert':>12} {'tf2onnx':>12}   ratio")
    notes = []
    for name, r in results.items():
        for threads in args.threads:
            for batch in (1, 32):
                k = r["ort"].get((threads, batch, "kconvert"), miss_k)
                t = r["ort"].get((threads, batch, "tf2onnx"), miss_t)
                where = f"{name} {threads} thread(s) batch {batch}"
                lines.append(f"{name:<10} {threads:>7} {batch:>5} {cell(k, 'ms', where + ' kconvert', notes):>12} "
                             f"{cell(t, 'ms', where + ' tf2onnx', notes):>12}   {ratio(k, t, '1.0x', False)}")
    lines += notes

    lines += ["", "3. Graphs: nodes in the .onnx files (before onnxruntime's own optimizations)", *note_k, ""]
    lines.append(f"{'model':<10} {'graph':<9} {'opset':>5} {'nodes':>6} {'Transpose':>9}   ops")
    for name, r in results.items():
        for tool, miss in (("kconvert", miss_k), ("tf2onnx", miss_t)):
            g = r["graphs"].get(tool)
            if g:
                lines.append(f"{name:<10} {tool:<9} {g['opset']:>5} {g['nodes']:>6} {g['transpose']:>9}   {g['ops']}")
            else:
                lines.append(f"{name:<10} {tool:<9} {miss:>5}")

    lines += ["", "4. Batch-1 predict latency, median per call. kconvert Model.predict (device cpu) and the raw "
              "onnxruntime session (default SessionOptions) in this process; tf_keras in its own process; "
              "default threads everywhere", ""]
    lines.append(f"{'model':<10} {'kconvert':>12} {'tf_keras':>12} {'tf_keras':>12} {'raw ORT on':>12}")
    lines.append(f"{'':<10} {'.predict':>12} {'.predict':>12} {'model(x)':>12} {'kconvert gr.':>12}")
    notes = []
    for name, r in results.items():
        p, tk = r["predict"], r["tf_keras"]
        lines.append(f"{name:<10} {cell(p.get('kconvert'), 'ms', f'{name} kconvert predict', notes):>12} "
                     f"{cell(tk['predict'], 'ms', '', notes):>12} {cell(tk['call'], 'ms', '', notes):>12} "
                     f"{cell(p.get('raw_ort', miss_k), 'ms', f'{name} raw ORT', notes):>12}")
        if p.get("graph"):
            notes.append(f"{name}: raw ORT runs kconvert's {p['graph']} graph (no keras2onnx file)")
        notes += [f"{name}: kconvert warned: {n}" for n in p.get("notes", [])]
    lines.append("")
    for name, r in results.items():
        p, tk = r["predict"], r["tf_keras"]
        k = p.get("kconvert")
        lines.append(f"{name:<10} tf_keras predict / kconvert predict  {ratio(tk['predict'], k, '20x', True)}")
        lines.append(f"{'':<10} tf_keras model(x) / kconvert predict {ratio(tk['call'], k, '20x', True)}")
        lines.append(f"{'':<10} kconvert predict / raw ORT           {ratio(k, p.get('raw_ort'), '1.5x', False)}")
    lines += notes

    lines += ["", "5. max |output - tf_keras predict| on a batch of 2", ""]
    for name, r in results.items():
        for path_name, err in r["error"].items():
            lines.append(f"{name:<10} {path_name:<30} {err:.2e}   (max |tf_keras output| {r['scale']:.2e})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf2onnx-python", default=DEFAULT_TF2ONNX_PYTHON,
                    help="python of the tf2onnx virtualenv (see benchmarks/setup_tf2onnx.sh)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime intra-op threads to try")
    ap.add_argument("--repeat", type=int, default=3, help="conversions per tool and model (median)")
    ap.add_argument("--runs", type=int, default=200, help="most timed calls per latency measurement")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds after which a latency measurement stops")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--rebuild", action="store_true", help="rebuild the .h5 models")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.worker:
        kind, *names = args.worker
        if kind == "build":
            build_models(names)
        else:
            tf_keras_worker(names[0], args.runs, args.budget)
        return

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    tf2onnx_python: str | None = args.tf2onnx_python
    if not Path(tf2onnx_python).exists():
        print(f"tf2onnx python {tf2onnx_python} not found: create it with `bash benchmarks/setup_tf2onnx.sh` "
              "(or pass --tf2onnx-python); the tf2onnx columns are skipped", flush=True)
        tf2onnx_python = None
    # pip compiles installed packages (tf2onnx, TensorFlow) to bytecode; an editable checkout under
    # PYTHONDONTWRITEBYTECODE has none, so compile kconvert once to time both tools as installed
    import kconvert

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(kconvert.__file__).parent)], check=True)
    kconvert_ok = kconvert_has_keras2onnx()
    if not kconvert_ok:
        print(NOT_YET, flush=True)
    missing = [n for n in args.models if args.rebuild or not (WORK / f"{n}.h5").exists()]
    if missing:
        print(f"building {', '.join(missing)} with tf_keras ...", flush=True)
        subprocess.run([sys.executable, __file__, "--worker", "build", *missing], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    header = [f"kconvert vs tf2onnx on the same tf_keras .h5 models, "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              f"machine: {cpu_name()}, {os.cpu_count()} cores; onnxruntime CPUExecutionProvider",
              *versions(tf2onnx_python),
              "tf2onnx command: TF_USE_LEGACY_KERAS=1 python -m tf2onnx.convert --keras M.h5 --output M.onnx",
              "kconvert command: python -m kconvert keras2onnx M.h5 -o M.onnx (kconvert byte-compiled first, as pip "
              "installs it)",
              "models: " + ", ".join(f"{n} {(WORK / f'{n}.h5').stat().st_size / 2**20:.1f} MB" for n in args.models)]
    tools = converters(tf2onnx_python, kconvert_ok)
    results = {}
    for name in args.models:
        print(f"measuring {name} ...", flush=True)
        make_inputs(name)
        results[name] = bench_model(name, args, tools, kconvert_ok)
    header.append(f"benchmark wall time: {time.perf_counter() - started:.0f} s; 1-min load average at start "
                  f"{load_start:.1f}, at end {os.getloadavg()[0]:.1f} (other work on the machine skews the timings, "
                  "2-thread ones most)")
    text = report(results, args, kconvert_ok, tf2onnx_python, header)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx_vs_tf2onnx.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
