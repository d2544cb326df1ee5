"""Whole-process time to `load_model` + first `predict` of a MobileNet-size `.h5`: kconvert vs tf_keras.

Run: python benchmarks/load_predict.py [--repeat 3]
Each measurement is a fresh Python process (imports included), as a user running a script sees it.
kconvert runs with BLAS limited to 1 and to 2 threads; the ratio uses the better of the two.
Results are printed and saved to benchmarks/results/load_predict.txt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"

MAKE = r"""
import os, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as k
k.utils.set_random_seed(0)
m = k.applications.MobileNet(weights=None, input_shape=(224, 224, 3))
rng = np.random.default_rng(0)
for layer in m.layers:
    if layer.__class__.__name__ == "BatchNormalization":
        g, b, mm, mv = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                           rng.normal(0, 0.5, mm.shape), rng.uniform(0.5, 2, mv.shape)])
m.save(r"{model}")
np.save(r"{inp}", rng.standard_normal((1, 224, 224, 3)).astype("float32"))
"""

RUN_KCONVERT = r"""
import numpy as np, kconvert
m = kconvert.load_model(r"{model}")
y = m.predict(np.load(r"{inp}"))
np.save(r"{out}", y)
"""

RUN_TF_KERAS = r"""
import os, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as k
m = k.models.load_model(r"{model}", compile=False)
y = m.predict(np.load(r"{inp}"), verbose=0)
np.save(r"{out}", y)
"""


def timed(code: str, env_extra: dict | None = None) -> float:
    env = {**os.environ, **(env_extra or {})}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    model, inp = WORK / "mobilenet.h5", WORK / "mobilenet_input.npy"
    if not model.exists():
        print("building MobileNet (224x224, random weights) with tf_keras ...", flush=True)
        subprocess.run([sys.executable, "-c", MAKE.format(model=model, inp=inp)], check=True)
    size_mb = model.stat().st_size / 2**20
    out_k, out_t = WORK / "out_kconvert.npy", WORK / "out_tf_keras.npy"
    rows = []
    for label, code, env in (
        ("kconvert (1 BLAS thread)", RUN_KCONVERT, {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}),
        ("kconvert (2 BLAS threads)", RUN_KCONVERT, {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}),
        ("tf_keras", RUN_TF_KERAS, {}),
    ):
        out = out_t if label == "tf_keras" else out_k
        times = [timed(code.format(model=model, inp=inp, out=out), env) for _ in range(args.repeat)]
        rows.append((label, statistics.median(times), min(times)))
    import numpy as np

    yk, yt = np.load(out_k), np.load(out_t)
    err = float(np.max(np.abs(yk - yt)))
    best_k = min(r[1] for r in rows if r[0].startswith("kconvert"))
    tf_time = next(r[1] for r in rows if r[0] == "tf_keras")
    lines = [f"load_model + first predict, MobileNet 224x224 ({size_mb:.1f} MB .h5), whole process, "
             f"median of {args.repeat}", ""]
    lines += [f"{label:<28} median {med:7.2f} s   min {mn:7.2f} s" for label, med, mn in rows]
    lines += ["", f"speed-up kconvert vs tf_keras: {tf_time / best_k:.1f}x  (goal >= 10x)",
              f"max |kconvert - tf_keras| on the output: {err:.2e}"]
    text = "\n".join(lines)
    print(text)
    (RESULTS / "load_predict.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
