"""compile / fit / evaluate / *_on_batch against real tf_keras: the same model, weights, data and settings must give
the same History, evaluation and final weights (no shuffling, no random layers, so both runs are deterministic)."""

import warnings

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert.errors import ConfigError

EPOCHS = 3


def _pair(tfk, build, tmp_path, seed=0):
    """A tf_keras model and the kconvert model loaded from its file (the same weights)."""
    ref = build(tfk)
    rng = np.random.default_rng(seed)
    for w in ref.weights:
        if "moving_variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
        elif "moving_mean" not in w.name:
            w.assign(rng.uniform(-0.4, 0.4, w.shape).astype(np.float32))
    ref.save(tmp_path / "m.h5")
    return ref, kconvert.load_model(tmp_path / "m.h5", compile=False)


def _same_history(h_ref, h_ours, rtol_scale=1.0):
    assert list(h_ref.history) == list(h_ours.history)
    for key in h_ref.history:
        assert_close(np.array(h_ours.history[key]), np.array(h_ref.history[key]), rtol_scale=rtol_scale, what=key)


def _same_weights(ref, ours, rtol_scale=1.0):
    for a, b in zip(ref.get_weights(), ours.get_weights()):
        assert_close(b, a, rtol_scale=rtol_scale)


def _cnn(tfk):
    L = tfk.layers
    return tfk.Sequential([tfk.Input((9, 7, 3)), L.Conv2D(6, 3, strides=2, activation="relu"),
                           L.BatchNormalization(), L.Flatten(), L.Dense(5, activation="softmax")])


def test_cnn_sgd_momentum_categorical(tfk, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((45, 9, 7, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 45)]
    ref, ours = _pair(tfk, _cnn, tmp_path)
    ref.compile(tfk.optimizers.SGD(0.05, momentum=0.9, nesterov=True), "categorical_crossentropy", ["accuracy"])
    ours.compile(kconvert.optimizers.SGD(0.05, momentum=0.9, nesterov=True), "categorical_crossentropy",
                 ["accuracy"])
    h_ref = ref.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0, validation_split=0.2)
    h_ours = ours.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0, validation_split=0.2)
    assert set(h_ours.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert h_ours.history["loss"][-1] < h_ours.history["loss"][0]
    _same_history(h_ref, h_ours)
    _same_weights(ref, ours)  # BatchNormalization's moving statistics included
    assert_close(np.array(ours.evaluate(x, y, verbose=0)), np.array(ref.evaluate(x, y, verbose=0)))


def _mlp(tfk):
    L = tfk.layers
    inp = tfk.Input((6,))
    h = L.Dense(8, activation="tanh", kernel_regularizer=tfk.regularizers.l2(0.01),
                activity_regularizer=tfk.regularizers.l1(0.001), kernel_constraint=tfk.constraints.max_norm(0.9))(inp)
    return tfk.Model(inp, L.Dense(2)(h))


# Nadam is left out here: inside tf_keras's compiled train step its shared momentum product is multiplied once per
# variable rather than once per step (eager `apply_gradients` multiplies it once), so tf_keras's own fit disagrees
# with its optimizer; tests/test_optimizers.py checks kconvert's Nadam against tf_keras's eager updates.
@pytest.mark.parametrize("opt", ["adam", "rmsprop", "adagrad", "adamax", "adadelta"])
def test_mlp_regularized_with_sample_weights(opt, tfk, tmp_path):
    """Kernel and activity regularizers in the loss, a max_norm constraint after each step, sample weights, mse
    with mae as a metric, validation_data."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 6)).astype(np.float32)
    y = rng.standard_normal((37, 2)).astype(np.float32)
    sw = rng.uniform(0.2, 2.0, 37).astype(np.float32)
    val = (x[:9] * 0.5, y[:9])
    ref, ours = _pair(tfk, _mlp, tmp_path)
    ref.compile(opt, "mse", ["mae"])
    ours.compile(opt, "mse", ["mae"])
    h_ref = ref.fit(x, y, sample_weight=sw, batch_size=10, epochs=EPOCHS, shuffle=False, verbose=0,
                    validation_data=val)
    h_ours = ours.fit(x, y, sample_weight=sw, batch_size=10, epochs=EPOCHS, shuffle=False, verbose=0,
                      validation_data=val)
    _same_history(h_ref, h_ours)
    _same_weights(ref, ours)


def _two_heads(tfk):
    L = tfk.layers
    inp = tfk.Input((5,), name="features")
    h = L.Dense(7, activation="relu")(inp)
    return tfk.Model(inp, [L.Dense(3, activation="softmax", name="cls")(h), L.Dense(1, name="reg")(h)])


def test_two_outputs_losses_by_name_and_loss_weights(tfk, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    target = rng.standard_normal((30, 1)).astype(np.float32)
    ref, ours = _pair(tfk, _two_heads, tmp_path)
    kw = dict(loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"}, loss_weights={"cls": 1.0, "reg": 0.3},
              metrics={"cls": ["accuracy"], "reg": ["mae"]})
    ref.compile(tfk.optimizers.Adam(0.01), **kw)
    ours.compile(kconvert.optimizers.Adam(0.01), **kw)
    h_ref = ref.fit(x, {"cls": labels, "reg": target}, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0)
    h_ours = ours.fit(x, {"cls": labels, "reg": target}, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0)
    assert list(h_ours.history) == ["loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"]
    _same_history(h_ref, h_ours)
    got = ours.evaluate(x, [labels, target], verbose=0, return_dict=True)
    want = ref.evaluate(x, [labels, target], verbose=0, return_dict=True)
    assert got.keys() == want.keys()
    assert_close(np.array(list(got.values())), np.array(list(want.values())))


def test_class_weight_and_batch_calls(tfk, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 9, 7, 3)).astype(np.float32)
    labels = rng.integers(0, 5, 24)
    y = np.eye(5, dtype=np.float32)[labels]
    ref, ours = _pair(tfk, _cnn, tmp_path)
    for m, opt in ((ref, tfk.optimizers.SGD(0.1)), (ours, kconvert.optimizers.SGD(0.1))):
        m.compile(opt, "categorical_crossentropy", ["accuracy"])
    cw = {0: 1.0, 1: 2.0, 2: 0.5, 3: 1.5, 4: 1.0}
    _same_history(ref.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, class_weight=cw),
                  ours.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, class_weight=cw))
    assert_close(np.array(ours.train_on_batch(x[:8], y[:8])), np.array(ref.train_on_batch(x[:8], y[:8])))
    assert_close(np.array(ours.test_on_batch(x[8:], y[8:])), np.array(ref.test_on_batch(x[8:], y[8:])))
    assert_close(ours.predict_on_batch(x[:5]), ref.predict_on_batch(x[:5]))
    _same_weights(ref, ours)


def test_frozen_layers_do_not_move(tfk, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 9, 7, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 20)]
    ref, ours = _pair(tfk, _cnn, tmp_path)
    frozen_before = [w.copy() for w in ours.layers[0].get_weights()]
    for m in (ref, ours):
        m.layers[0].trainable = False
        m.compile("sgd", "categorical_crossentropy")
    ref.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    ours.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(frozen_before, ours.layers[0].get_weights()):
        assert np.array_equal(a, b)
    _same_weights(ref, ours)


def test_lstm_backprop_through_time(tfk, tmp_path):
    def build(tfk):
        L = tfk.layers
        return tfk.Sequential([tfk.Input((6, 4)), L.LSTM(5, return_sequences=True), L.GRU(3), L.Dense(1)])

    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 6, 4)).astype(np.float32)
    y = rng.standard_normal((16, 1)).astype(np.float32)
    ref, ours = _pair(tfk, build, tmp_path)
    ref.compile(tfk.optimizers.RMSprop(0.01), "mae")
    ours.compile(kconvert.optimizers.RMSprop(0.01), "mae")
    _same_history(ref.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0),
                  ours.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0))
    _same_weights(ref, ours, rtol_scale=2.0)


def test_early_stopping_and_generators(tfk, tmp_path):
    """EarlyStopping with restore_best_weights stops at tf_keras's epoch; a generator and a Sequence train as the
    arrays they yield do."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = rng.standard_normal((32, 2)).astype(np.float32)
    ref, ours = _pair(tfk, _mlp, tmp_path)
    ref.compile(tfk.optimizers.SGD(2.0), "mse")  # a rate too high: the loss goes up and training stops
    ours.compile(kconvert.optimizers.SGD(2.0), "mse")
    stop_ref = tfk.callbacks.EarlyStopping("loss", patience=1, restore_best_weights=True)
    stop_ours = kconvert.callbacks.EarlyStopping("loss", patience=1, restore_best_weights=True)
    h_ref = ref.fit(x, y, batch_size=8, epochs=10, shuffle=False, verbose=0, callbacks=[stop_ref])
    h_ours = ours.fit(x, y, batch_size=8, epochs=10, shuffle=False, verbose=0, callbacks=[stop_ours])
    assert len(h_ours.history["loss"]) == len(h_ref.history["loss"]) < 10
    assert stop_ours.stopped_epoch == stop_ref.stopped_epoch
    _same_weights(ref, ours)

    class Batches(kconvert.utils.Sequence):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]

    def gen():
        while True:
            for i in range(4):
                yield x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]

    fresh = kconvert.load_model(tmp_path / "m.h5", compile=False)
    fresh.compile(kconvert.optimizers.SGD(0.01), "mse")
    h_seq = fresh.fit(Batches(), epochs=2, shuffle=False, verbose=0)
    arrays = kconvert.load_model(tmp_path / "m.h5", compile=False)
    arrays.compile(kconvert.optimizers.SGD(0.01), "mse")
    h_arr = arrays.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert_close(np.array(h_seq.history["loss"]), np.array(h_arr.history["loss"]))
    third = kconvert.load_model(tmp_path / "m.h5", compile=False)
    third.compile(kconvert.optimizers.SGD(0.01), "mse")
    with pytest.warns(DeprecationWarning, match="samples_per_epoch"):
        h_gen = third.fit_generator(gen(), samples_per_epoch=4, nb_epoch=2, verbose=0)
    assert_close(np.array(h_gen.history["loss"]), np.array(h_arr.history["loss"]))


def test_progress_bar_and_classes(tfk, tmp_path, capsys):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((20, 9, 7, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 20)]
    _, ours = _pair(tfk, _cnn, tmp_path)
    ours.compile("adam", "categorical_crossentropy", ["acc"])
    ours.fit(x, y, batch_size=10, epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 2 and "2/2 - " in out and " - loss: " in out and " - acc: " in out
    classes = ours.predict_classes(x)
    assert classes.shape == (20,) and np.array_equal(classes, ours.predict_proba(x).argmax(-1))


def test_training_needs_compile_with_a_loss(tmp_path, tfk):
    _, ours = _pair(tfk, _cnn, tmp_path)
    x = np.zeros((2, 9, 7, 3), np.float32)
    with pytest.raises(ConfigError, match="compile"):
        ours.fit(x, np.zeros((2, 5)), verbose=0)
    ours.compile("sgd")
    with pytest.raises(ConfigError, match="without a loss"):
        ours.evaluate(x, np.zeros((2, 5)), verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="bogus"):
            ours.fit(x, np.zeros((2, 5)), bogus=1)


def test_save_and_resume_matches_an_uninterrupted_run(tfk, tmp_path):
    """training_config + optimizer_weights: tf_keras trains 2 epochs and saves; kconvert loads the file (compiled,
    Adam's moments restored) and its next epoch equals tf_keras's third; kconvert's own save resumes in tf_keras
    and in kconvert the same way."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30, 9, 7, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 30)]
    ref, ours = _pair(tfk, _cnn, tmp_path)
    ref.compile(tfk.optimizers.Adam(0.01), "categorical_crossentropy", ["accuracy"])
    ref.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    ref.save(tmp_path / "after2.h5")
    h_ref3 = ref.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)

    resumed = kconvert.load_model(tmp_path / "after2.h5")  # compile=True: the file's training configuration
    assert resumed.optimizer.get_config()["learning_rate"] == pytest.approx(0.01)
    assert int(resumed.optimizer.iterations) == 6
    h_ours3 = resumed.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    _same_history(h_ref3, h_ours3)
    _same_weights(ref, resumed)

    # kconvert trains, saves; tf_keras and kconvert both continue from the file
    ours.compile(kconvert.optimizers.Adam(0.01), "categorical_crossentropy", ["accuracy"])
    ours.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    ours.save(tmp_path / "ours2.h5")
    h_direct = ours.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    in_tf = tfk.models.load_model(tmp_path / "ours2.h5")
    h_tf = in_tf.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    again = kconvert.load_model(tmp_path / "ours2.h5")
    h_again = again.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    _same_history(h_tf, h_direct)
    _same_history(h_tf, h_again)
    _same_weights(in_tf, again)


def test_compiled_but_untrained_model_saves_its_configuration(tfk, tmp_path):
    _, ours = _pair(tfk, _cnn, tmp_path)
    ours.compile(kconvert.optimizers.SGD(0.02, momentum=0.5), "categorical_crossentropy",
                 [kconvert.metrics.CategoricalAccuracy(name="cat_acc"), "mse"])
    ours.save(tmp_path / "untrained.h5")
    loaded = tfk.models.load_model(tmp_path / "untrained.h5")
    assert loaded.optimizer.get_config()["momentum"] == pytest.approx(0.5)
    again = kconvert.load_model(tmp_path / "untrained.h5")
    assert again.optimizer.get_config()["learning_rate"] == pytest.approx(0.02)
    x = np.random.default_rng(10).standard_normal((6, 9, 7, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0]]
    assert again.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "cat_acc", "mse"}


def test_keras3_batch_normalization_moves_the_uncorrected_variance():
    """Keras 3 has no fused kernel: after a training call on a 4-D batch the moving variance moves towards the
    biased batch variance, where tf_keras's fused kernel uses n / (n - 1) (tests/test_autodiff_layers.py)."""
    import keras

    from kconvert.layers.base import keras_dialect

    x = np.random.default_rng(4).standard_normal((3, 5, 4, 6)).astype(np.float32)
    ref = keras.layers.BatchNormalization(momentum=0.5)
    ref(x, training=True)
    with keras_dialect(3):
        ours = kconvert.layers.BatchNormalization(momentum=0.5)
    ours.build(x.shape)
    ours.call(x, training=True)
    assert_close(ours.moving_variance.value, np.asarray(ref.moving_variance))
    assert_close(ours.moving_mean.value, np.asarray(ref.moving_mean))
