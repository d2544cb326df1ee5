"""kconvert's DataHandler batches what tf_keras's DataHandler (engine/data_adapter.py) batches."""

import numpy as np
import pytest

from kconvert.errors import ConfigError
from kconvert.runtime.data_adapter import DataHandler, class_weight_fn, split_validation
from kconvert.utils import Sequence, normalize, to_categorical

N = 25  # odd: batch 7 leaves a partial batch of 4


def canon(data):
    """Nested lists/tuples/dicts of tensors or arrays -> nested lists/dicts of numpy arrays."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: canon(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [canon(v) for v in data]
    return np.asarray(data)


def assert_same(ours, ref, what="batch"):
    assert type(ours) is type(ref), f"{what}: {type(ours)} != {type(ref)}"
    if isinstance(ref, dict):
        assert sorted(ours) == sorted(ref), what
        for k in ref:
            assert_same(ours[k], ref[k], f"{what}[{k}]")
    elif isinstance(ref, list):
        assert len(ours) == len(ref), what
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same(a, b, f"{what}[{i}]")
    elif ref is not None:
        assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != {ref.dtype}"
        np.testing.assert_array_equal(ours, ref, err_msg=what)


def tf_epochs(**kwargs):
    """Drive tf_keras's DataHandler as Model.fit does (enumerate_epochs / steps / catch_stop_iteration)."""
    from tf_keras.src.engine import data_adapter as tda

    handler = tda.DataHandler(**kwargs)
    epochs = []
    for epoch, iterator in handler.enumerate_epochs():
        batches = []
        with handler.catch_stop_iteration():
            for _ in handler.steps():
                batches.append(canon(list(tda.unpack_x_y_sample_weight(next(iterator)))))
        epochs.append((epoch, batches))
    return epochs, handler


def our_epochs(**kwargs):
    handler = DataHandler(**kwargs)
    epochs = [(epoch, [canon(list(batch)) for _, batch in steps]) for epoch, steps in handler.epochs()]
    return epochs, handler


def compare(tfk, **kwargs):
    ref, ref_handler = tf_epochs(**kwargs)
    ours, handler = our_epochs(**kwargs)
    assert [e for e, _ in ours] == [e for e, _ in ref]
    assert [len(b) for _, b in ours] == [len(b) for _, b in ref]
    for (epoch, a), (_, b) in zip(ours, ref):
        for step, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"epoch {epoch} step {step}")
    assert handler.inferred_steps == ref_handler.inferred_steps
    assert handler.insufficient_data == ref_handler._insufficient_data
    return ours


def data(rng, n=N):
    idx = np.arange(n)
    x1 = rng.standard_normal((n, 5, 3))  # float64: both frameworks give float32
    x1[:, 0, 0] = idx  # row id, to check alignment
    x2 = rng.standard_normal((n, 4)).astype(np.float32)
    y_onehot = np.eye(3)[rng.integers(0, 3, n)].astype(np.float32)
    y_reg = np.c_[idx.astype(np.float64)]
    sw = rng.uniform(0.5, 2.0, n)
    return x1, x2, y_onehot, y_reg, sw


def test_arrays_in_order_multi_input_output_partial_weights(tfk, rng):
    x1, x2, y1, y2, sw = data(rng)
    compare(tfk, x=[x1, x2], y=[y1, y2], sample_weight=[sw, None], batch_size=7, epochs=2, shuffle=False)


def test_dict_inputs_and_int_targets(tfk, rng):
    x1, x2, _, _, sw = data(rng)
    y = rng.integers(0, 4, N).astype(np.int32)
    compare(tfk, x={"pixels": x1, "aux": x2}, y=y, sample_weight=sw, batch_size=6, epochs=1)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("batch_size,steps,epochs,initial_epoch", [
    (7, 3, 3, 0),     # epochs continue where the last one stopped in the pass
    (7, 5, 3, 0),     # runs out of data in the third epoch
    (None, 4, 2, 0),  # batch size ceil(25 / 4) = 7
    (7, 5, 4, 2),     # initial_epoch: two passes of data for epochs 2 and 3
    (None, None, 2, 0),  # default batch size 32: one batch
])
def test_steps_per_epoch_and_initial_epoch(tfk, rng, batch_size, steps, epochs, initial_epoch):
    x1, _, y1, _, _ = data(rng)
    ours = compare(tfk, x=x1, y=y1, batch_size=batch_size, steps_per_epoch=steps, epochs=epochs,
                   initial_epoch=initial_epoch)
    assert ours[0][0] == initial_epoch


def _rows(batches):
    return [b[0][:, 0, 0].astype(int).tolist() for b in batches]


def test_shuffle_true_is_a_fresh_aligned_permutation_each_pass(tfk, rng):
    x1, _, _, y2, sw = data(rng)
    ref, _ = tf_epochs(x=x1, y=y2, sample_weight=sw, batch_size=7, epochs=3, shuffle=True)
    ours, _ = our_epochs(x=x1, y=y2, sample_weight=sw, batch_size=7, epochs=3, shuffle=True, seed=5)
    again, _ = our_epochs(x=x1, y=y2, sample_weight=sw, batch_size=7, epochs=3, shuffle=True, seed=5)
    other, _ = our_epochs(x=x1, y=y2, sample_weight=sw, batch_size=7, epochs=3, shuffle=True, seed=6)
    for epochs in (ref, ours):
        assert [[len(b[0]) for b in e] for _, e in epochs] == [[7, 7, 7, 4]] * 3
        orders = [sum(_rows(e), []) for _, e in epochs]
        assert all(sorted(o) == list(range(N)) for o in orders)
        assert orders[0] != list(range(N)) and orders[0] != orders[1]
    for _, e in ours:  # rows stay aligned across x, y and sample_weight
        for x, y, w in e:
            np.testing.assert_array_equal(y[:, 0], x[:, 0, 0])
            np.testing.assert_array_equal(w, sw[x[:, 0, 0].astype(int)].astype(np.float32))
    assert _rows(again[0][1]) == _rows(ours[0][1]) and _rows(other[0][1]) != _rows(ours[0][1])


def test_shuffle_batch_keeps_batches_and_shuffles_their_order(tfk, rng):
    x1, _, _, y2, _ = data(rng, n=61)
    ref, _ = tf_epochs(x=x1, y=y2, batch_size=6, epochs=2, shuffle="batch")
    ours, _ = our_epochs(x=x1, y=y2, batch_size=6, epochs=2, shuffle="batch", seed=1)
    in_order = [list(range(i, min(i + 6, 61))) for i in range(0, 61, 6)]
    for epochs in (ref, ours):
        for _, e in epochs:
            assert sorted(sorted(r) for r in _rows(e)) == in_order  # the same row blocks
        assert [sorted(r) for r in _rows(epochs[0][1])] != in_order  # in another order
    # tf_keras shuffles x and y inside a batch separately; kconvert keeps them aligned
    for _, e in ours:
        for x, y, _ in e:
            np.testing.assert_array_equal(y[:, 0], x[:, 0, 0])
        assert any(r != sorted(r) for r in _rows(e))


@pytest.mark.parametrize("split", [0.2, 0.33, 0.5])
def test_validation_split_takes_the_last_fraction(tfk, rng, split):
    from tf_keras.src.engine import data_adapter as tda

    x1, x2, y1, _, sw = data(rng)
    (ref_train, ref_val) = tda.train_validation_split(([x1, x2], y1, sw), validation_split=split)
    train, val = split_validation([x1, x2], y1, sw, validation_split=split)
    assert_same(canon(list(train)), canon(list(ref_train)))
    assert_same(canon(list(val)), canon(list(ref_val)))
    assert len(val[1]) == N - int(np.floor(N * (1 - split)))


def test_validation_data_wins_and_split_errors(rng):
    x1, _, y1, _, sw = data(rng)
    train, val = split_validation(x1, y1, validation_split=0.5, validation_data=(x1[:3], y1[:3], sw[:3]))
    assert train[0] is x1 and len(val) == 3 and val[2].shape == (3,)
    assert split_validation(x1, y1, validation_data=[x1, y1])[1][2] is None
    with pytest.raises(ConfigError, match="not sufficient"):
        split_validation(x1, y1, validation_split=0.99)
    with pytest.raises(ConfigError, match="generators"):
        split_validation(iter([(x1, y1)]), validation_split=0.2)


CW = {0: 0.5, 1: 2.0, 2: 1.25, 3: 3}


def _targets(rng):
    classes = rng.integers(0, 4, N)
    return {
        "sparse": classes.astype(np.int64),
        "sparse_float_col": (classes[:, None] + rng.choice([-0.3, 0.3], (N, 1))).astype(np.float32),  # rounded
        "onehot": np.eye(4, dtype=np.float32)[classes],
        "temporal_onehot": np.eye(4, dtype=np.float32)[rng.integers(0, 4, (N, 3))],
    }


@pytest.mark.parametrize("kind", ["sparse", "sparse_float_col", "onehot", "temporal_onehot"])
@pytest.mark.parametrize("with_sw", [False, True])
def test_class_weight_to_sample_weight_matches_tf_keras(tfk, rng, kind, with_sw):
    import tensorflow as tf
    from tf_keras.src.engine import data_adapter as tda

    x = rng.standard_normal((N, 2)).astype(np.float32)
    y = _targets(rng)[kind]
    sw = rng.uniform(0.5, 2, N).astype(np.float32) if with_sw else None
    args = (x, y) if sw is None else (x, y, sw)
    ref = tda._make_class_weight_map_fn(CW)(*[tf.constant(a) for a in args])
    ours = class_weight_fn(CW)(x, y, sw)
    np.testing.assert_allclose(ours[2], np.asarray(ref[2]), rtol=1e-7)
    assert ours[2].shape == tuple(ref[2].shape) and len(set(np.ravel(ours[2]))) > 2


def test_class_weight_through_the_handler(tfk, rng):
    x1, _, y1, _, sw = data(rng)
    compare(tfk, x=x1, y=y1, batch_size=7, epochs=2, class_weight={0: 1.5, 1: 0.25, 2: 4.0})
    # With sample_weight too, tf_keras's dataset map fails to reshape a batch of unknown size
    # (`sw.shape + [1] * rank_delta`); its eager rule, checked above, multiplies the two.
    (_, steps), = list(DataHandler(x1, y1, sw, batch_size=7, class_weight={0: 1.5, 1: 0.25, 2: 4.0}).epochs())
    _, (_, _, w) = next(steps)
    np.testing.assert_allclose(w, sw[:7].astype(np.float32) * np.array([1.5, 0.25, 4.0])[y1[:7].argmax(-1)],
                               rtol=1e-6)


def test_class_weight_errors(rng):
    with pytest.raises(ConfigError, match="keys from 0"):
        class_weight_fn({1: 1.0, 2: 2.0})
    x1, x2, y1, y2, _ = data(rng)
    handler = DataHandler([x1, x2], [y1, y2], batch_size=7, class_weight={0: 1.0, 1: 2.0, 2: 3.0})
    with pytest.raises(ConfigError, match="single output"):
        next(next(handler.epochs())[1])
    handler = DataHandler(x1, np.full(N, 5), batch_size=7, class_weight={0: 1.0, 1: 2.0})
    with pytest.raises(ConfigError, match="class 5"):
        next(next(handler.epochs())[1])


def _gen(x, y, sw=None, form="xy"):
    for i in range(0, len(x), 4):
        if form == "x":
            yield x[i:i + 4]
        elif form == "xy":
            yield x[i:i + 4], y[i:i + 4]
        else:
            yield [x[i:i + 4], y[i:i + 4], sw[i:i + 4]]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("steps,form", [(None, "xy"), (2, "xy"), (3, "xys"), (None, "x")])
def test_python_generators(tfk, rng, steps, form):
    x1, _, _, y2, sw = data(rng)
    # Each framework gets its own generator over the same data; no steps: the first epoch learns the length.
    ref, ref_handler = tf_epochs(x=_gen(x1, y2, sw, form), steps_per_epoch=steps, epochs=3)
    ours, handler = our_epochs(x=_gen(x1, y2, sw, form), steps_per_epoch=steps, epochs=3)
    assert [len(b) for _, b in ours] == [len(b) for _, b in ref]
    for (_, a), (_, b) in zip(ours, ref):
        for x, y in zip(a, b):
            assert_same(x, y)
    assert handler.inferred_steps == ref_handler.inferred_steps
    assert handler.insufficient_data == ref_handler._insufficient_data


def _sequences(tfk, x, y, n_batches=4):
    size = -(-len(x) // n_batches)

    def make(base):
        class Seq(base):
            def __init__(self):
                self.ends = 0

            def __len__(self):
                return n_batches

            def __getitem__(self, i):
                return x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]

            def on_epoch_end(self):
                self.ends += 1

        return Seq()

    return make(tfk.utils.Sequence), make(Sequence)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("steps", [None, 2, 6])
def test_sequence_matches_tf_keras(tfk, rng, steps):
    x1, _, _, y2, _ = data(rng)
    ref_seq, seq = _sequences(tfk, x1, y2)
    ref, ref_handler = tf_epochs(x=ref_seq, steps_per_epoch=steps, epochs=3)
    ours, handler = our_epochs(x=seq, steps_per_epoch=steps, epochs=3)
    assert [len(b) for _, b in ours] == [len(b) for _, b in ref]
    for (_, a), (_, b) in zip(ours, ref):
        for x, y in zip(a, b):
            assert_same(x, y)
    assert seq.ends == ref_seq.ends  # on_epoch_end after each completed epoch
    assert handler.insufficient_data == ref_handler._insufficient_data


def test_sequence_shuffle_reads_every_batch_each_epoch(tfk, rng):
    x1, _, _, y2, _ = data(rng, n=40)
    _, seq = _sequences(tfk, x1, y2, n_batches=8)
    ours, _ = our_epochs(x=seq, epochs=3, shuffle=True, seed=2)
    orders = [[int(b[0][0, 0, 0]) for b in e] for _, e in ours]
    assert all(sorted(o) == list(range(0, 40, 5)) for o in orders)
    assert orders[0] != sorted(orders[0]) and seq.ends == 3


def test_names_map_dicts_to_the_model_order(rng):
    x1, x2, y1, y2, sw = data(rng)
    handler = DataHandler({"b": x2, "a": x1}, {"out2": y2, "out1": y1}, sample_weight={"out2": sw},
                          batch_size=10, input_names=["a", "b"], output_names=["out1", "out2"])
    (_, steps), = list(handler.epochs())
    _, (x, y, w) = next(steps)
    np.testing.assert_array_equal(x[0], x1[:10].astype(np.float32))
    np.testing.assert_array_equal(y[1], y2[:10].astype(np.float32))
    np.testing.assert_array_equal(w[0], np.ones(10, np.float32))
    np.testing.assert_array_equal(w[1], sw[:10].astype(np.float32))
    with pytest.raises(ConfigError, match=r"\['b'\]"):
        DataHandler({"a": x1}, y1, input_names=["a", "b"])


def test_input_errors(rng):
    x1, _, y1, _, _ = data(rng)
    with pytest.raises(ConfigError, match="cardinality"):
        DataHandler(x1, y1[:-1])
    with pytest.raises(ConfigError, match="`y` argument"):
        DataHandler(iter([(x1, y1)]), y1)
    with pytest.raises(ConfigError, match="batch_size"):
        DataHandler(x1, y1, batch_size=0)
    with pytest.raises(ConfigError, match="non-empty"):
        DataHandler(x1[:0], y1[:0])


def test_lists_of_scalars_are_arrays(tfk):
    compare(tfk, x=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], y=[0, 1, 1], batch_size=2, epochs=1)


def test_to_categorical_and_normalize_match_tf_keras(tfk, rng):
    for y, k in ((rng.integers(0, 5, 13), None), (rng.integers(0, 3, (7, 1)), 4), (rng.integers(0, 6, (3, 5)), None)):
        ref = tfk.utils.to_categorical(y, k)
        ours = to_categorical(y, k)
        assert ours.shape == ref.shape and ours.dtype == ref.dtype
        np.testing.assert_array_equal(ours, ref)
    x = rng.standard_normal((6, 5, 3))
    x[0] = 0
    for axis, order in ((-1, 2), (1, 1), (0, 2)):
        np.testing.assert_allclose(normalize(x, axis, order), tfk.utils.normalize(x, axis, order), rtol=1e-12)
