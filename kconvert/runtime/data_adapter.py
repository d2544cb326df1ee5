"""What `fit` does with its data, as tf_keras 2.x's `engine/data_adapter.py` does it, in plain numpy.

`DataHandler(x, y, ...).epochs()` yields `(epoch, steps)`; `steps` yields `(step, (x, y, sample_weight))`
batches. Arrays (or lists / dicts of arrays) are batched from one stream of `epochs - initial_epoch` passes,
so a `steps_per_epoch` shorter or longer than a pass carries on where the last epoch stopped, as in Keras;
a `kconvert.utils.Sequence` is re-read each epoch (`on_epoch_end` called after it); a Python generator is read
on. Float arrays become float32 (Keras's floatx). Shuffling uses a numpy Generator (`seed`) in place of
TensorFlow's random ops, so the permutations differ from Keras's while following the same rules.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from ..errors import ConfigError

Batch = tuple  # (x, y, sample_weight), y and sample_weight possibly None


def map_structure(fn: Callable, data):
    """Apply `fn` to every leaf of nested lists, tuples and dicts (None stays None)."""
    if data is None:
        return None
    if isinstance(data, Mapping):
        return {k: map_structure(fn, v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(map_structure(fn, v) for v in data)
    return fn(data)


def flatten(data) -> list:
    """The leaves of nested lists, tuples and dicts, None left out."""
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [leaf for v in data.values() for leaf in flatten(v)]
    if isinstance(data, (list, tuple)):
        return [leaf for v in data for leaf in flatten(v)]
    return [data]


def _is_list_of_scalars(v) -> bool:
    if isinstance(v, (int, float, str, bytes, bytearray)):
        return True
    return isinstance(v, (list, tuple)) and bool(v) and _is_list_of_scalars(v[0])


def _as_array(v):
    """Numpy, with floats as float32 (Keras converts float arrays to floatx)."""
    a = np.asarray(v)
    return a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) and a.dtype != np.float32 else a


def _standardize(data):
    """Arrays (a list of scalars is one array; other lists are several inputs/outputs), floats as float32."""
    if data is None:
        return None
    if _is_list_of_scalars(data) and isinstance(data, (list, tuple)):
        return _as_array(data)
    return map_structure(_as_array, data)


def unpack_x_y_sample_weight(data) -> Batch:
    """`x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)` as a 3-tuple with Nones."""
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) in (1, 2, 3):
        return tuple(data) + (None,) * (3 - len(data))
    raise ConfigError("Data is expected to be in format `x`, `(x,)`, `(x, y)`, or `(x, y, sample_weight)`, "
                      f"found a tuple of {len(data)} elements")


def _num_samples(data) -> int:
    sizes = {int(np.shape(a)[0]) for a in flatten(data)}
    if len(sizes) > 1:
        msg = "Data cardinality is ambiguous:\n"
        for label, part in zip(("x", "y", "sample_weight"), data):
            msg += f"  {label} sizes: {', '.join(str(np.shape(a)[0]) for a in flatten(part))}\n"
        raise ConfigError(msg + "Make sure all arrays contain the same number of samples.")
    return sizes.pop() if sizes else 0


def train_validation_split(arrays, validation_split: float):
    """Split `(x, y, sample_weight)` into train and validation parts: the last fraction validates (no shuffle)."""
    if any(_is_sequence(a) or _is_generator(a) for a in arrays):
        raise ConfigError("`validation_split` is only supported for NumPy arrays, not for generators or "
                          "Sequences; pass `validation_data`")
    arrays = tuple(np.asarray(a) if _is_list_of_scalars(a) and isinstance(a, list) else a for a in arrays)
    flat = flatten(arrays)
    bad = [type(t).__name__ for t in flat if not isinstance(t, np.ndarray)]
    if bad:
        raise ConfigError(f"`validation_split` is only supported for NumPy arrays, found: {bad}")
    if not flat:
        return arrays, arrays
    batch_dim = int(flat[0].shape[0])
    split_at = int(math.floor(batch_dim * (1.0 - validation_split)))
    if split_at in (0, batch_dim):
        raise ConfigError(f"Training data contains {batch_dim} samples, which is not sufficient to split it into "
                          f"a validation and training set as specified by `validation_split={validation_split}`. "
                          "Either provide more data, or a different value for the `validation_split` argument.")
    return (map_structure(lambda t: t[:split_at], arrays), map_structure(lambda t: t[split_at:], arrays))


def split_validation(x, y=None, sample_weight=None, validation_split: float = 0.0, validation_data=None):
    """What `fit` does first: returns `((x, y, sw), (val_x, val_y, val_sw) or None)`.

    `validation_data` wins over `validation_split`, as in Keras; a generator or Sequence as validation data
    comes back as `(it, None, None)`.
    """
    if validation_split and validation_data is None:
        (x, y, sample_weight), validation_data = train_validation_split((x, y, sample_weight), validation_split)
    val = unpack_x_y_sample_weight(validation_data) if validation_data is not None else None
    return (x, y, sample_weight), val


def class_weight_fn(class_weight: Mapping) -> Callable:
    """`(x, y, sw) -> (x, y, sw * class_weight[class of y])` as Keras's `_make_class_weight_map_fn`."""
    class_ids = sorted(class_weight.keys())
    if class_ids != list(range(len(class_ids))):
        raise ConfigError("Expected `class_weight` to be a dict with keys from 0 to one less than the number of "
                          f"classes, found {class_weight}")
    table = np.asarray([class_weight[int(c)] for c in class_ids], dtype=np.float32)

    def apply(x, y, sw):
        if isinstance(y, (list, tuple, Mapping)):
            raise ConfigError("`class_weight` is only supported for Models with a single output.")
        y = np.asarray(y)
        if y.ndim >= 2:
            # one-hot (last axis > 1): argmax; a trailing axis of 1 holds the class id
            classes = np.argmax(y, axis=-1) if y.shape[-1] > 1 else np.round(np.squeeze(y, -1)).astype(np.int64)
        else:
            classes = np.round(y).astype(np.int64)
        bad = classes[(classes < 0) | (classes >= len(table))]
        if bad.size:
            raise ConfigError(f"`class_weight` has weights for classes 0..{len(table) - 1}, "
                              f"the targets hold class {int(bad.flat[0])}")
        cw = table[classes]
        if sw is None:
            return x, y, cw
        sw = np.asarray(sw)
        cw = cw.astype(sw.dtype)
        sw = sw.reshape(sw.shape + (1,) * max(cw.ndim - sw.ndim, 0))
        return x, y, sw * cw

    return apply


def _fill_partial_sample_weights(y, sample_weight):
    """Outputs without a sample weight in a list get ones, when some output has one (Keras's rule)."""
    if not isinstance(sample_weight, (list, tuple)) or all(w is None for w in sample_weight):
        return None if isinstance(sample_weight, (list, tuple)) else sample_weight
    ys = flatten(y)
    return [np.ones((np.shape(ys[i])[0],), np.float32) if w is None else w for i, w in enumerate(sample_weight)]


class _ArrayAdapter:
    """Arrays batched by index: every pass a permutation (shuffle=True), batch-wise shuffle, or in order."""

    recreate_each_epoch = False

    def __init__(self, x, y, sample_weight, batch_size, steps, passes, shuffle, rng):
        x, y, sample_weight = _standardize(x), _standardize(y), _standardize(sample_weight)
        sample_weight = _fill_partial_sample_weights(y, sample_weight)
        self._data = (x, y, sample_weight)
        self._n = _num_samples(self._data)
        if not batch_size:
            batch_size = int(math.ceil(self._n / steps)) if steps and steps > 0 else 32
        self.batch_size = batch_size
        self._size = int(math.ceil(self._n / batch_size))
        self._passes = passes
        self._shuffle = shuffle
        self._rng = rng

    def size(self) -> int:
        return self._size

    def _pass_indices(self) -> list[np.ndarray]:
        n, bs = self._n, self.batch_size
        order = self._rng.permutation(n) if self._shuffle is True else np.arange(n)
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        if self._shuffle == "batch":
            # Keras shuffles the batch order and the rows inside each batch; here x, y and
            # sample_weight keep their rows aligned (tf_keras shuffles each of them separately).
            batches = [self._rng.permutation(batches[i]) for i in self._rng.permutation(len(batches))]
        return batches

    def stream(self) -> Iterator[Batch]:
        for _ in range(self._passes):
            for idx in self._pass_indices():
                yield map_structure(lambda a, idx=idx: a[idx], self._data)

    def on_epoch_end(self) -> None:
        pass


class _GeneratorAdapter:
    """A Python generator or iterator yielding `x`, `(x, y)` or `(x, y, sample_weight)`; read on, never rewound."""

    recreate_each_epoch = False
    batch_size = None

    def __init__(self, gen):
        self._gen = gen

    def size(self) -> int | None:
        return None

    def stream(self) -> Iterator[Batch]:
        for item in self._gen:
            yield tuple(_standardize(part) for part in unpack_x_y_sample_weight(item))

    def on_epoch_end(self) -> None:
        pass


class _SequenceAdapter(_GeneratorAdapter):
    """A `kconvert.utils.Sequence`: `len` batches per epoch, order shuffled when asked, `on_epoch_end` after."""

    recreate_each_epoch = True

    def __init__(self, seq, shuffle, rng):
        super().__init__(seq)
        self._shuffle = bool(shuffle)
        self._rng = rng

    def size(self) -> int:
        return len(self._gen)

    def stream(self) -> Iterator[Batch]:
        order = range(len(self._gen))
        if self._shuffle:
            order = self._rng.permutation(len(self._gen)).tolist()
        for i in order:
            yield tuple(_standardize(part) for part in unpack_x_y_sample_weight(self._gen[i]))

    def on_epoch_end(self) -> None:
        self._gen.on_epoch_end()


class Sequence:
    """Base of a data set read by index (`kconvert.utils.Sequence`, as `keras.utils.Sequence`).

    Implement `__getitem__(index)` returning a batch `(x, y)` or `(x, y, sample_weight)` and `__len__`
    (batches per epoch); `on_epoch_end` runs after every epoch of `fit`.
    """

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError

    def on_epoch_end(self):
        """Called at the end of every epoch (shuffle here if you like)."""

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def _is_sequence(x) -> bool:
    return isinstance(x, Sequence)


def _is_generator(x) -> bool:
    return hasattr(x, "__next__") and hasattr(x, "__iter__") and not _is_sequence(x)


def _is_empty(data) -> bool:
    return data is None or not flatten(data)


def _by_name(data, names: list[str] | None, what: str, optional: bool = False):
    """A dict keyed by input/output name as a list in the model's order (other structures unchanged)."""
    if names is None or not isinstance(data, Mapping):
        return data
    if optional:  # sample weights: an output without one gets None (then ones)
        data = {n: data.get(n) for n in names} | {k: v for k, v in data.items() if k not in names}
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"{what}: no data for model {what} {missing}; the dict has keys {sorted(data)}")
    extra = sorted(set(data) - set(names))
    if extra:
        warnings.warn(f"{what}: keys {extra} match no model {what} ({names}) and are ignored", stacklevel=4)
    return [data[n] for n in names] if len(names) > 1 else data[names[0]]


def _check_positive(name: str, value) -> None:
    if value <= 0:
        raise ConfigError(f"Expected {name} to be positive. Received is {value}.")


class DataHandler:
    """Batches for every epoch of `fit` (or the single pass of `evaluate`/`predict`), as Keras makes them.

    `shuffle`: True (a new permutation every pass), False, or 'batch' (shuffle batch order and rows within
    each batch). `class_weight` becomes the sample weights. With `input_names`/`output_names`, dicts keyed
    by name come out as lists in the model's order. `seed` makes shuffling reproducible.
    """

    def __init__(self, x, y=None, sample_weight=None, batch_size: int | None = None,
                 steps_per_epoch: int | None = None, initial_epoch: int = 0, epochs: int = 1, shuffle=False,
                 class_weight: Mapping | None = None, seed: int | None = None,
                 input_names: list[str] | None = None, output_names: list[str] | None = None):
        if batch_size is not None:
            _check_positive("batch_size", batch_size)
        if steps_per_epoch not in (None, -1) and steps_per_epoch <= 0:
            raise ConfigError(f"steps_per_epoch must be positive, None or -1. Received {steps_per_epoch}.")
        if initial_epoch < 0:
            raise ConfigError(f"Expected initial_epoch to be non-negative. Received is {initial_epoch}.")
        _check_positive("epochs", epochs)
        if isinstance(shuffle, str):
            shuffle = "batch" if shuffle.lower() == "batch" else bool(shuffle)
        rng = np.random.default_rng(seed)
        self._initial_epoch = initial_epoch
        self._epochs = epochs
        self._steps_per_epoch = steps_per_epoch
        self._names = (input_names, output_names)
        if _is_sequence(x) or _is_generator(x):
            kind = "keras.utils.Sequence" if _is_sequence(x) else "a python generator"
            if not _is_empty(y):
                raise ConfigError(f"`y` argument is not supported when using {kind} as input.")
            if not _is_empty(sample_weight):
                raise ConfigError(f"`sample_weight` argument is not supported when using {kind} as input.")
            self._adapter = _SequenceAdapter(x, shuffle, rng) if _is_sequence(x) else _GeneratorAdapter(x)
        else:
            x, y, sample_weight = self._by_names(x, y, sample_weight)
            self._adapter = _ArrayAdapter(x, y, sample_weight, batch_size, steps_per_epoch,
                                          epochs - initial_epoch, shuffle, rng)
        self._class_weight = class_weight_fn(class_weight) if class_weight else None
        self.insufficient_data = False
        self._inferred_steps = self._infer_steps()
        if self._inferred_steps == 0:
            raise ConfigError("Expected input data to be non-empty.")

    @property
    def inferred_steps(self) -> int | None:
        """Steps per epoch; None for a generator without `steps_per_epoch` until its first epoch ends."""
        return self._inferred_steps

    @property
    def batch_size(self) -> int | None:
        """The batch size for array data (Keras's default 32, or `ceil(n / steps_per_epoch)`)."""
        return self._adapter.batch_size

    def _infer_steps(self) -> int | None:
        if self._steps_per_epoch == -1:
            return None
        if self._steps_per_epoch is not None:
            return self._steps_per_epoch
        return self._adapter.size()

    def epochs(self) -> Iterator[tuple[int, Iterator[tuple[int, Batch]]]]:
        """Yield `(epoch, steps)` from `initial_epoch`; stops early when the data ran out."""
        stream = self._adapter.stream()
        for epoch in range(self._initial_epoch, self._epochs):
            if self.insufficient_data:
                break
            if self._adapter.recreate_each_epoch:
                stream = self._adapter.stream()
                steps = self._infer_steps()
                if steps is not None:
                    self._inferred_steps = steps
            yield epoch, self._steps(stream)
            self._adapter.on_epoch_end()

    def _steps(self, stream: Iterator[Batch]) -> Iterator[tuple[int, Batch]]:
        step = 0
        while self._inferred_steps is None or step < self._inferred_steps:
            try:
                batch = next(stream)
            except StopIteration:
                if self._inferred_steps is None:
                    self._inferred_steps = step
                else:
                    self.insufficient_data = True
                    total = (self._epochs - self._initial_epoch) * self._inferred_steps
                    warnings.warn("Your input ran out of data; interrupting training. Make sure that your "
                                  "dataset or generator can generate at least `steps_per_epoch * epochs` "
                                  f"batches (in this case, {total} batches).", stacklevel=2)
                return
            yield step, self._finish(batch)
            step += 1

    def _by_names(self, x, y, sw):
        x = _by_name(x, self._names[0], "inputs")
        y = _by_name(y, self._names[1], "outputs")
        sw = _by_name(sw, self._names[1], "outputs", optional=True)
        return x, y, sw

    def _finish(self, batch: Batch) -> Batch:
        x, y, sw = batch
        if isinstance(self._adapter, _GeneratorAdapter):
            x, y, sw = self._by_names(x, y, sw)
            sw = _fill_partial_sample_weights(y, sw)
        if self._class_weight is not None and y is not None:
            x, y, sw = self._class_weight(x, y, sw)
        return x, y, sw


__all__ = ["DataHandler", "Sequence", "split_validation", "train_validation_split", "unpack_x_y_sample_weight",
           "class_weight_fn"]
