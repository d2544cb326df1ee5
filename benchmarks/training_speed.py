"""Training speed on the CPU: kconvert `fit` vs tf_keras `fit` (default tf.function) on the same weights and data.

Run: python benchmarks/training_speed.py [--repeat 3] [--rounds 3]
Three models: (a) a small CNN on 32x32x3 (Conv 3x3x16 -> Conv 3x3x32 -> MaxPool 2 -> Dense 10, batch 32),
(b) an MLP (784-256-256-10, batch 128), (c) a small LSTM (20 steps x 8 features, LSTM 32 -> Dense 1, batch 32),
SGD with momentum, no shuffling. Each run is a fresh process: one warm-up epoch (tf_keras traces its graph),
then `fit(epochs=2)` timed; a run's figure is the median over `--repeat` timed fits of the per-step time. The
configurations take turns for `--rounds` rounds, and each shows its fastest round, with the median and the slowest
beside it (this VM's speed swings by up to 2x within minutes: the fastest round is each configuration on an
undisturbed machine).
kconvert runs with its default BLAS threads (fit picks them: no env var set) and with BLAS limited to 1 and 2
threads (OMP/OPENBLAS/MKL env vars), tf_keras with 1 and 2 intra-op threads; the ratios are kconvert's default
and kconvert's best over tf_keras's best. The final losses of both are printed as a check
that both trained the same model. Results are printed and saved to benchmarks/results/training_speed.txt.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from _train_common import blas_env, machine_lines, run

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "training_speed"
RESULTS = HERE / "results"

# name: (tf_keras model code, input shape, target kind, loss, batch size, samples, learning rate). The CNN's rate
# keeps its softmax off saturation (both tools take the crossentropy from the softmax's logits; the rate was chosen
# when kconvert still clipped the probabilities, and is kept so that the figures stay comparable).
MODELS = {
    "cnn": ("k.Sequential([k.Input((32, 32, 3)), L.Conv2D(16, 3, activation='relu'), "
            "L.Conv2D(32, 3, activation='relu'), L.MaxPooling2D(2), L.Flatten(), L.Dense(10, activation='softmax')])",
            (32, 32, 3), "classes", "categorical_crossentropy", 32, 512, 0.002),
    "mlp": ("k.Sequential([k.Input((784,)), L.Dense(256, activation='relu'), L.Dense(256, activation='relu'), "
            "L.Dense(10, activation='softmax')])",
            (784,), "classes", "categorical_crossentropy", 128, 2048, 0.01),
    "lstm": ("k.Sequential([k.Input((20, 8)), L.LSTM(32), L.Dense(1)])",
             (20, 8), "regression", "mse", 32, 512, 0.01),
}

MAKE = r"""
import os, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as k
L = k.layers
k.utils.set_random_seed(0)
m = {code}
rng = np.random.default_rng(0)
for w in m.weights:  # scaled so that activations are neither dead nor saturated
    fan_in = int(np.prod(w.shape[:-1])) if len(w.shape) > 1 else 1
    w.assign((rng.standard_normal(w.shape) * (1.0 / np.sqrt(fan_in) if len(w.shape) > 1 else 0.05)).astype("float32"))
m.save(r"{model}")
x = rng.standard_normal(({n},) + {shape}).astype("float32")
y = (np.eye(10, dtype="float32")[rng.integers(0, 10, {n})] if "{kind}" == "classes"
     else rng.standard_normal(({n}, 1)).astype("float32"))
np.savez(r"{data}", x=x, y=y)
"""

FIT = r"""
import json, os, statistics, time, numpy as np
d = np.load(r"{data}")
x, y = d["x"], d["y"]
if "{tool}" == "tf_keras":
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads({threads})
    import tf_keras as k
    m = k.models.load_model(r"{model}", compile=False)
    m.compile(k.optimizers.SGD({lr}, momentum=0.9), "{loss}")
else:
    import kconvert as k
    m = k.load_model(r"{model}", compile=False)
    m.compile(k.optimizers.SGD({lr}, momentum=0.9), "{loss}")
m.fit(x, y, batch_size={batch}, epochs=1, shuffle=False, verbose=0)  # warm-up (tf_keras traces its graph)
times, loss = [], None
for _ in range({repeat}):
    t0 = time.perf_counter()
    h = m.fit(x, y, batch_size={batch}, epochs=2, shuffle=False, verbose=0)
    times.append(time.perf_counter() - t0)
    loss = h.history["loss"][-1]
print(json.dumps({{"time": statistics.median(times), "loss": float(loss)}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="timed fits per run; a run reports their median")
    ap.add_argument("--rounds", type=int, default=3, help="runs per configuration, taking turns; the fastest shown")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    lines = [f"Training speed, fit() per step: each configuration run {args.rounds} times, taking turns, in fresh "
             f"processes; a run's figure is the median of {args.repeat} timed 2-epoch fits after a warm-up epoch; the "
             "fastest run shown, with the median and the slowest run; SGD momentum, shuffle=False",
             *machine_lines(), ""]
    configs = (("kconvert", None), ("kconvert", 1), ("kconvert", 2), ("tf_keras", 1), ("tf_keras", 2))
    for name in args.models.split(","):
        code, shape, kind, loss, batch, n, lr = MODELS[name]
        model, data = WORK / f"{name}.h5", WORK / f"{name}.npz"
        if not model.exists():
            subprocess.run([sys.executable, "-c", MAKE.format(code=code, model=model, data=data, n=n, shape=shape,
                                                              kind=kind)], check=True)
        steps = 2 * -(-n // batch)
        runs: dict[tuple, list[dict]] = {c: [] for c in configs}
        for _ in range(args.rounds):
            for tool, threads in configs:
                env = blas_env(threads) if tool == "kconvert" else {}
                r = run(FIT.format(data=data, model=model, tool=tool, threads=threads or 0, loss=loss, batch=batch,
                                   lr=lr, repeat=args.repeat), env)
                runs[(tool, threads)].append(r)
                print(f"  {name}: {tool} {threads or 'default'}: {1e3 * r['time'] / steps:.2f} ms/step", flush=True)
        rows = []
        for (tool, threads), rs in runs.items():
            if threads is None:
                label = "kconvert (default threads)"
            else:
                label = f"{tool} ({threads} {'BLAS' if tool == 'kconvert' else 'intra-op'} thread" \
                        f"{'s' if threads > 1 else ''})"
            times = sorted(r["time"] / steps for r in rs)
            fastest = min(rs, key=lambda r: r["time"])
            rows.append((tool, label, times[0], statistics.median(times), times[-1], fastest["loss"]))
        best = {tool: min(r[2] for r in rows if r[0] == tool) for tool in ("kconvert", "tf_keras")}
        default = rows[0][2]
        lines.append(f"({name}) {code.split('[', 1)[1].rsplit(']', 1)[0]}")
        lines.append(f"    batch {batch}, {n} samples, {steps} steps timed")
        lines.append(f"    {'':<30} {'fastest':>14}  {'(median, slowest)':>18} {'samples/s':>10}   final loss")
        lines += [f"    {label:<30} {1e3 * t:8.2f} ms/step  ({1e3 * med:6.2f}, {1e3 * hi:6.2f}) {batch / t:10.0f}   "
                  f"{ls:.5f}" for _, label, t, med, hi, ls in rows]
        lines += [f"    time ratio kconvert / tf_keras (fastest runs): default threads vs tf_keras's best "
                  f"{default / best['tf_keras']:.2f}x, best of each {best['kconvert'] / best['tf_keras']:.2f}x", ""]
    text = "\n".join(lines)
    print(text)
    (RESULTS / "training_speed.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
