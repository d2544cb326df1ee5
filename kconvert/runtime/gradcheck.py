"""Checking the tape's gradients against central finite differences (as `tf.test.compute_gradient` does).

Use float64 arrays (and float64 layers, `dtype="float64"`): the kernels then run in float64 and the central
difference is accurate to ~1e-9. The checked scalar is `sum(output * R)` with a fixed random `R` per output, so
every output element counts with a different weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .autodiff import GradientTape, _raw


def _outputs(y) -> list[np.ndarray]:
    return [np.asarray(_raw(v)) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(_raw(y))]


def check_gradients(fn: Callable, arrays: Sequence[np.ndarray], eps: float = 1e-6, rtol: float = 1e-6,
                    atol: float = 1e-8, max_points: int = 40, seed: int = 0,
                    before_call: Callable | None = None) -> list[np.ndarray]:
    """Assert that the tape's gradients of `sum(fn(*arrays) * R)` w.r.t. every array match central differences
    at up to `max_points` random elements per array (and that the forward value on the tape equals the plain
    numpy one bit for bit). Returns the tape's gradients. `before_call()` runs before every evaluation
    (resetting a random generator, say)."""
    arrays = [np.array(a, dtype=np.float64 if np.asarray(a).dtype.kind != "f" else None, order="C") for a in arrays]
    rng = np.random.default_rng(seed)

    def run(args):
        if before_call is not None:
            before_call()
        return fn(*args)

    plain = _outputs(run(arrays))
    weights = [rng.standard_normal(p.shape) for p in plain]

    def scalar(outs):
        return sum(float(np.sum(o.astype(np.float64) * w)) for o, w in zip(outs, weights))

    with GradientTape() as tape:
        vars_ = [tape.watch(a) for a in arrays]
        y = run(vars_)
        ys = y if isinstance(y, (list, tuple)) else [y]
        loss = None
        for o, w in zip(ys, weights):
            term = np.sum(o * w)
            loss = term if loss is None else loss + term
    taped = _outputs(y)
    for i, (a, b) in enumerate(zip(taped, plain)):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), \
            f"output {i}: the forward on the tape differs from the plain numpy forward"
    grads = tape.gradient(loss, vars_)
    for k, (a, g) in enumerate(zip(arrays, grads)):
        g = np.zeros_like(a) if g is None else np.asarray(g)
        assert g.shape == a.shape, f"input {k}: gradient shape {g.shape} != {a.shape}"
        flat = a.reshape(-1)  # a view: `a` is C-contiguous
        points = np.arange(flat.size) if flat.size <= max_points else rng.choice(flat.size, max_points, False)
        numeric = np.empty(len(points))
        for j, p in enumerate(points):
            keep = flat[p]
            flat[p] = keep + eps
            hi = scalar(_outputs(run(arrays)))
            flat[p] = keep - eps
            lo = scalar(_outputs(run(arrays)))
            flat[p] = keep
            numeric[j] = (hi - lo) / (2 * eps)
        ours = g.reshape(-1)[points]
        tol = atol + rtol * max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
        err = np.abs(ours - numeric)
        worst = int(np.argmax(err)) if err.size else 0
        assert not err.size or err[worst] <= tol, (
            f"input {k} element {int(points[worst])}: tape {ours[worst]:.9g} vs finite difference "
            f"{numeric[worst]:.9g} (error {err[worst]:.3g} > {tol:.3g})")
    return grads


def check_layer_gradients(layer, inputs, eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-8,
                          max_points: int = 40, seed: int = 0, before_call: Callable | None = None,
                          **call_kwargs) -> list[np.ndarray]:
    """`check_gradients` of `layer(inputs, **call_kwargs)` w.r.t. its floating inputs and trainable weights.

    Integer inputs (token ids) are passed as they are. Every evaluation starts from the layer's weights as they
    were (state a training call assigns, such as BatchNormalization's moving statistics, is reset).
    Returns the gradients: the floating inputs' first, then the trainable weights' in their order.
    """
    many = isinstance(inputs, (list, tuple))
    ins = list(inputs) if many else [inputs]
    layer(ins if many else ins[0], **call_kwargs)  # builds it
    diff = [i for i, x in enumerate(ins) if np.asarray(x).dtype.kind == "f"]
    trainable = list(layer.trainable_weights)
    saved = {id(w): (w, w.value, w.stamp) for w in layer.weights}

    def fn(*args):
        xs = list(ins)
        for i, a in zip(diff, args[:len(diff)]):
            xs[i] = a
        for w, value, _ in saved.values():
            w.value = value
        for w, a in zip(trainable, args[len(diff):]):
            w.value = a
        return layer(xs if many else xs[0], **call_kwargs)

    try:
        return check_gradients(fn, [ins[i] for i in diff] + [w.value for w in trainable], eps, rtol, atol,
                               max_points, seed, before_call)
    finally:
        for w, value, stamp in saved.values():
            w.value, w.stamp = value, stamp
