"""Training speed on an NVIDIA GPU: kconvert on CuPy (`with kconvert.device("cuda")`) vs PyTorch on CUDA.

Run (on a machine with a GPU, CuPy and, for the comparison, PyTorch): python benchmarks/train_gpu.py [--samples N]
The two models of benchmarks/train_vs_keras.py, the classic MNIST MLP (784-512-512-10, batch 128) and CNN (Conv 5x5
x32 -> pool -> Conv 5x5 x64 -> pool -> Dense 1024 -> Dropout 0.5 -> Dense 10, batch 64), SGD with momentum 0.9,
lr 0.01, one epoch on synthetic MNIST-shaped data, without shuffling. PyTorch is what a user training on a GPU would
pick instead; its models are the same layers (NCHW, crossentropy from the logits, as kconvert computes it from a
softmax output). Each tool runs one warm-up epoch on a tenth of the data, then `--repeat` timed epochs (the GPU
synchronized before the clock stops); the fastest is shown. kconvert's CPU figure (same process, its default BLAS
threads) is printed beside it. The table goes to benchmarks/results/train_gpu.txt with the default --samples.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FULL_SAMPLES = 60000
MODELS = {"mlp": ((784,), 128), "cnn": ((28, 28, 1), 64)}


def kconvert_model(name: str):
    import kconvert as k

    L = k.layers
    if name == "mlp":
        return k.Sequential([k.Input((784,)), L.Dense(512, activation="relu"), L.Dense(512, activation="relu"),
                             L.Dense(10, activation="softmax")])
    return k.Sequential([k.Input((28, 28, 1)), L.Conv2D(32, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
                         L.Conv2D(64, 5, padding="same", activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                         L.Dense(1024, activation="relu"), L.Dropout(0.5, seed=0), L.Dense(10, activation="softmax")])


def time_kconvert(name: str, x: np.ndarray, y: np.ndarray, device: str, repeat: int) -> tuple[float, float]:
    """(fastest epoch in seconds, its final loss) of kconvert's fit on `device`."""
    import kconvert as k

    _, batch = MODELS[name]
    model = kconvert_model(name)
    model.compile(optimizer=k.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    with k.device(device):
        model.fit(x[: len(x) // 10], y[: len(y) // 10], batch_size=batch, epochs=1, verbose=0, shuffle=False)
        best, loss = float("inf"), float("nan")
        for _ in range(repeat):
            start = time.perf_counter()
            hist = model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
            _synchronize(device)
            seconds = time.perf_counter() - start
            if seconds < best:
                best, loss = seconds, hist.history["loss"][-1]
    return best, loss


def _synchronize(device: str) -> None:
    if device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def time_torch(name: str, x: np.ndarray, y: np.ndarray, repeat: int) -> tuple[float, float] | None:
    """(fastest epoch, its mean loss) of the same model in PyTorch on CUDA, or None without PyTorch/CUDA."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        xt = torch.from_numpy(x)
    else:
        model = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(3136, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    model = model.to(dev)
    labels = torch.from_numpy(y.argmax(axis=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    _, batch = MODELS[name]

    def epoch(n: int) -> float:
        total, steps = 0.0, 0
        for i in range(0, n - batch + 1, batch):  # batches go over one at a time, as kconvert's do
            xb, yb = xt[i:i + batch].to(dev), labels[i:i + batch].to(dev)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1  # .item() syncs each step, as Keras's logs do
        return total / steps

    model.train()
    epoch(len(x) // 10)
    best, loss = float("inf"), float("nan")
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        mean = epoch(len(x))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if seconds < best:
            best, loss = seconds, mean
    return best, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=FULL_SAMPLES)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-cpu", action="store_true", help="skip kconvert's CPU run")
    args = parser.parse_args()
    import cupy

    gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    lines = [f"Training one epoch of {args.samples} samples on {gpu} (fastest of {args.repeat}); SGD momentum 0.9",
             f"numpy {np.__version__}, CuPy {cupy.__version__}, PyTorch {torch_version}", ""]
    for name, (shape, batch) in MODELS.items():
        rng = np.random.default_rng(0)
        x = rng.random((args.samples, *shape), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.samples)]
        steps = args.samples // batch
        gpu_s, gpu_loss = time_kconvert(name, x, y, "cuda", args.repeat)
        row = [f"{name} (batch {batch}, {steps} steps):",
               f"    kconvert on CUDA: {gpu_s:.2f} s ({gpu_s / steps * 1e3:.2f} ms/step), loss {gpu_loss:.4f}"]
        torch_result = time_torch(name, x, y, args.repeat)
        if torch_result is not None:
            t_s, t_loss = torch_result
            row.append(f"    PyTorch on CUDA:  {t_s:.2f} s ({t_s / steps * 1e3:.2f} ms/step), mean loss {t_loss:.4f}")
            row.append(f"    kconvert / PyTorch: {gpu_s / t_s:.2f}x")
        else:
            row.append("    PyTorch on CUDA: not installed here")
        if not args.no_cpu:
            cpu_s, _ = time_kconvert(name, x, y, "cpu", 1)
            row.append(f"    kconvert on this machine's CPU: {cpu_s:.2f} s ({cpu_s / steps * 1e3:.2f} ms/step); "
                       f"CUDA is {cpu_s / gpu_s:.1f}x faster")
        print("\n".join(row), flush=True)
        lines += row + [""]
    text = "\n".join(lines)
    if args.samples == FULL_SAMPLES:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "train_gpu.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
