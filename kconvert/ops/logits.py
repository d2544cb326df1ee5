"""Which logits a softmax or sigmoid output was computed from, so that crossentropy losses can use them.

tf.keras and Keras 3 (TensorFlow backend) never compute a crossentropy from probabilities that came straight out
of a softmax or sigmoid: the activation leaves its input on the output tensor (`_keras_logits`), and
`categorical_crossentropy`, `sparse_categorical_crossentropy` and `binary_crossentropy` switch to the logits
form when they find it (backend `_get_logits`; in graph mode also when the tensor's op is Softmax/Sigmoid).
The attribute is not tied to the loss kind, so binary crossentropy after a softmax also reads the softmax's
logits, and `from_logits=True` on such an output also takes the logits (with a warning). The difference is
large once training saturates the output: clipped probabilities stop the gradient.

A numpy array cannot carry an attribute, so while `tracking()` is active (a train or test step) the two
kernels record `id(output) -> (output, logits)` here; holding the output keeps its id from being reused.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

_state = threading.local()


@contextlib.contextmanager
def tracking() -> Iterator[None]:
    """Record the logits of every softmax/sigmoid output computed in this block (this thread)."""
    previous = getattr(_state, "table", None)
    _state.table = {}
    try:
        yield
    finally:
        _state.table = previous


def mark(output, logits):
    """Note that `output` is the softmax/sigmoid of `logits` (when tracking); returns `output`."""
    table = getattr(_state, "table", None)
    if table is not None:
        table[id(output)] = (output, logits)
    return output


def resolve(y_pred, from_logits: bool, loss: str) -> tuple:
    """(logits, True) when `y_pred` is exactly a tracked softmax/sigmoid output, else (y_pred, from_logits)."""
    table = getattr(_state, "table", None)
    entry = table.get(id(y_pred)) if table else None
    if entry is None or entry[0] is not y_pred:
        return y_pred, from_logits
    if from_logits:
        warnings.warn(f"`{loss}` received `from_logits=True`, but the `output` argument was produced by a "
                      "softmax or sigmoid activation and thus does not represent logits; its logits are used",
                      stacklevel=3)
    return entry[1], True
