"""Keras 1 keyword names in layer constructors (as Keras 2's legacy interfaces took them) and a classic Keras 1
tutorial script: each classic form builds the layer its modern spelling builds, in kconvert and in real tf_keras."""

import warnings

import numpy as np
import pytest
from conftest import assert_close
from layer_compare import json_round_trip

import kconvert
import kconvert.layers as L
from kconvert.errors import ConfigError

# (classic kconvert call, modern call as `lib.layers.X(...)`, old names that must be warned about)
CASES = [
    (lambda: L.Dense(output_dim=7, init="he_uniform", W_regularizer="l2", b_regularizer="l1",
                     activity_regularizer="l2", W_constraint="non_neg", b_constraint="non_neg", bias=True,
                     input_dim=5, name="x"),
     lambda k: k.layers.Dense(7, kernel_initializer="he_uniform", kernel_regularizer="l2", bias_regularizer="l1",
                              activity_regularizer="l2", kernel_constraint="non_neg", bias_constraint="non_neg",
                              use_bias=True, input_dim=5, name="x"),
     ["output_dim", "init", "W_regularizer", "b_regularizer", "W_constraint", "b_constraint", "bias"]),
    (lambda: L.Dense(3, bias=False, name="x"), lambda k: k.layers.Dense(3, use_bias=False, name="x"), ["bias"]),
    (lambda: L.Conv2D(6, 3, 5, border_mode="same", subsample=(2, 1), dim_ordering="tf", init="he_normal",
                      bias=False, name="x"),
     lambda k: k.layers.Conv2D(6, (3, 5), strides=(2, 1), padding="same", data_format="channels_last",
                               kernel_initializer="he_normal", use_bias=False, name="x"),
     ["nb_row/nb_col", "border_mode", "subsample", "dim_ordering", "init", "bias"]),
    (lambda: L.Convolution2D(nb_filter=4, nb_row=3, nb_col=2, dim_ordering="th", name="x"),
     lambda k: k.layers.Conv2D(4, (3, 2), data_format="channels_first", name="x"), ["nb_filter", "nb_row/nb_col"]),
    (lambda: L.Conv2D(4, 3, nb_col=1, name="x"), lambda k: k.layers.Conv2D(4, (3, 1), name="x"), ["nb_row/nb_col"]),
    (lambda: L.Conv1D(nb_filter=4, filter_length=3, subsample_length=2, border_mode="same", input_dim=5,
                      input_length=9, name="x"),
     lambda k: k.layers.Conv1D(4, 3, strides=2, padding="same", input_shape=(9, 5), name="x"),
     ["nb_filter", "filter_length", "subsample_length", "border_mode", "input_dim/input_length"]),
    (lambda: L.Conv3D(3, 2, 3, 2, border_mode="same", name="x"),
     lambda k: k.layers.Conv3D(3, (2, 3, 2), padding="same", name="x"), ["kernel_dim1/kernel_dim2/kernel_dim3"]),
    (lambda: L.SeparableConv2D(4, 3, 3, init="he_normal", border_mode="same", name="x"),
     lambda k: k.layers.SeparableConv2D(4, (3, 3), depthwise_initializer="he_normal",
                                        pointwise_initializer="he_normal", padding="same", name="x"),
     ["init", "nb_row/nb_col", "border_mode"]),
    (lambda: L.MaxPooling2D(pool_size=(2, 3), strides=(1, 2), border_mode="same", dim_ordering="tf", name="x"),
     lambda k: k.layers.MaxPooling2D((2, 3), (1, 2), padding="same", data_format="channels_last", name="x"),
     ["border_mode", "dim_ordering"]),
    (lambda: L.AveragePooling1D(pool_length=3, stride=2, border_mode="valid", name="x"),
     lambda k: k.layers.AveragePooling1D(3, 2, padding="valid", name="x"), ["pool_length", "stride", "border_mode"]),
    (lambda: L.GlobalAveragePooling2D(dim_ordering="th", name="x"),
     lambda k: k.layers.GlobalAveragePooling2D(data_format="channels_first", name="x"), ["dim_ordering"]),
    (lambda: L.Dropout(p=0.25, name="x"), lambda k: k.layers.Dropout(0.25, name="x"), ["p"]),
    (lambda: L.SpatialDropout1D(p=0.3, name="x"), lambda k: k.layers.SpatialDropout1D(0.3, name="x"), ["p"]),
    (lambda: L.GaussianNoise(sigma=0.2, name="x"), lambda k: k.layers.GaussianNoise(0.2, name="x"), ["sigma"]),
    (lambda: L.GaussianDropout(p=0.1, name="x"), lambda k: k.layers.GaussianDropout(0.1, name="x"), ["p"]),
    (lambda: L.Embedding(11, 4, init="normal", W_regularizer="l1", W_constraint="unit_norm", input_length=6,
                         name="x"),
     lambda k: k.layers.Embedding(11, 4, embeddings_initializer="normal", embeddings_regularizer="l1",
                                  embeddings_constraint="unit_norm", input_length=6, name="x"),
     ["init", "W_regularizer", "W_constraint"]),
    (lambda: L.LSTM(output_dim=5, init="he_uniform", inner_init="orthogonal", inner_activation="hard_sigmoid",
                    W_regularizer="l2", U_regularizer="l1", b_regularizer="l2", dropout_W=0.1, dropout_U=0.2,
                    consume_less="mem", forget_bias_init="one", input_dim=3, input_length=7, name="x"),
     lambda k: k.layers.LSTM(5, kernel_initializer="he_uniform", recurrent_initializer="orthogonal",
                             recurrent_activation="hard_sigmoid", kernel_regularizer="l2", recurrent_regularizer="l1",
                             bias_regularizer="l2", dropout=0.1, recurrent_dropout=0.2, implementation=1,
                             unit_forget_bias=True, input_shape=(7, 3), name="x"),
     ["output_dim", "init", "inner_init", "inner_activation", "W_regularizer", "U_regularizer", "dropout_W",
      "dropout_U", "consume_less", "forget_bias_init"]),
    (lambda: L.GRU(3, input_dim=4, input_length=6, name="x"),  # tf.keras's RNNs still take these, silently
     lambda k: k.layers.GRU(3, input_dim=4, input_length=6, name="x"), []),
    (lambda: L.GRU(output_dim=4, consume_less="gpu", W_constraint="max_norm", U_constraint="non_neg", name="x"),
     lambda k: k.layers.GRU(4, implementation=2, kernel_constraint="max_norm", recurrent_constraint="non_neg",
                            name="x"),
     ["output_dim", "consume_less", "W_constraint", "U_constraint"]),
    (lambda: L.SimpleRNN(output_dim=3, init="glorot_normal", inner_init="identity", name="x"),
     lambda k: k.layers.SimpleRNN(3, kernel_initializer="glorot_normal", recurrent_initializer="identity", name="x"),
     ["output_dim", "init", "inner_init"]),
    (lambda: L.BatchNormalization(mode=0, axis=1, beta_init="ones", gamma_init="zeros", name="x"),
     lambda k: k.layers.BatchNormalization(axis=1, beta_initializer="ones", gamma_initializer="zeros", name="x"),
     ["mode", "beta_init", "gamma_init"]),
    (lambda: L.UpSampling1D(length=3, name="x"), lambda k: k.layers.UpSampling1D(3, name="x"), ["length"]),
    (lambda: L.UpSampling2D(size=(2, 3), dim_ordering="th", name="x"),
     lambda k: k.layers.UpSampling2D((2, 3), data_format="channels_first", name="x"), ["dim_ordering"]),
    (lambda: L.ZeroPadding2D(padding=(1, 2), dim_ordering="tf", name="x"),
     lambda k: k.layers.ZeroPadding2D((1, 2), data_format="channels_last", name="x"), ["dim_ordering"]),
    (lambda: L.PReLU(init="ones", name="x"), lambda k: k.layers.PReLU(alpha_initializer="ones", name="x"), ["init"]),
]


@pytest.mark.parametrize("classic, modern, old_names", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_classic_form_builds_the_modern_layer(tfk, classic, modern, old_names):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = classic()
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    for old in old_names:
        assert any(f"`{old}`" in m for m in messages), (old, messages)
    assert all(w.filename == __file__ for w in caught)  # the warning points at the user's call
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the modern spelling warns about nothing
        modern_ours = modern(kconvert)
    config = json_round_trip(ours.get_config())
    assert config == json_round_trip(modern_ours.get_config())
    assert config == json_round_trip(modern(tfk).get_config())  # the real tf_keras layer


def test_classic_dense_computes_as_tf_keras(tfk, rng):
    with pytest.warns(DeprecationWarning, match="`init`.*`kernel_initializer`"):
        ours = L.Dense(output_dim=6, init="uniform", activation="tanh", input_dim=5)
    ref = tfk.layers.Dense(6, kernel_initializer="uniform", activation="tanh")
    x = rng.standard_normal((3, 5)).astype(np.float32)
    ref(x)
    ours(x)
    weights = [rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in ref.get_weights()]
    ref.set_weights(weights)
    ours.set_weights(weights)
    assert_close(ours(x), ref(x).numpy())


@pytest.mark.parametrize("call", [
    lambda: L.Dense(10, output_dim=5),  # both the old and the new name
    lambda: L.Conv2D(8, 3, 3, strides=2),  # Keras 2 refused integer sizes together with strides
    lambda: L.Conv2D(8, nb_row=3),  # half a Keras 1 kernel size
    lambda: L.BatchNormalization(mode=2, name="bn"),  # Keras 2 kept only mode=0
])
def test_ambiguous_or_unsupported_classic_forms_are_errors(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError):
            call()


def test_embedding_dropout_is_dropped_with_a_warning():
    with pytest.warns(DeprecationWarning, match="SpatialDropout1D"):
        layer = L.Embedding(9, 3, dropout=0.2, name="e")
    assert json_round_trip(layer.get_config()) == json_round_trip(L.Embedding(9, 3, name="e").get_config())


def test_custom_layers_keep_their_own_argument_names():
    class Custom(L.Layer):
        def __init__(self, p=0.5, init="x", **kwargs):
            super().__init__(**kwargs)
            self.p, self.init = p, init

    class MyDense(L.Dense):  # inherits Dense's constructor, so it takes Dense's Keras 1 names as Keras 2 did
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = Custom(p=0.2, init="y")
    assert (layer.p, layer.init) == (0.2, "y")
    with pytest.warns(DeprecationWarning, match="`output_dim`"):
        assert MyDense(output_dim=4).units == 4


def _tutorial_data(rng):
    x = rng.standard_normal((96, 7)).astype(np.float32)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 0.8)
    return x, np.eye(3, dtype=np.float32)[labels]


def _run_tutorial(classic: bool, weights, x, y):
    """The Keras 1 MLP tutorial, in its classic spelling or in today's."""
    kconvert.backend.clear_session()
    if classic:
        model = kconvert.models.Sequential()
        model.add(L.Dense(output_dim=16, input_dim=7, init="uniform"))
        model.add(L.Activation("tanh"))
        model.add(L.Dropout(p=0.0))
        model.add(L.Dense(output_dim=3, init="uniform"))
        model.add(L.Activation("softmax"))
        sgd = kconvert.optimizers.SGD(lr=0.1, momentum=0.9, nesterov=True)
        model.compile(loss="categorical_crossentropy", optimizer=sgd, metrics=["accuracy"])
        model.set_weights(weights)
        return model, model.fit(x, y, nb_epoch=4, batch_size=16, show_accuracy=True, shuffle=False, verbose=0)
    model = kconvert.models.Sequential([L.Dense(16, input_dim=7, kernel_initializer="uniform"), L.Activation("tanh"),
                                        L.Dropout(0.0), L.Dense(3, kernel_initializer="uniform"),
                                        L.Activation("softmax")])
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"],
                  optimizer=kconvert.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True))
    model.set_weights(weights)
    return model, model.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)


def test_classic_keras1_tutorial_matches_the_modern_spelling_and_tf_keras(tfk, rng):
    x, y = _tutorial_data(rng)
    weights = [rng.standard_normal(s).astype(np.float32) * 0.4 for s in [(7, 16), (16,), (16, 3), (3,)]]
    with pytest.warns(DeprecationWarning) as record:
        classic, h_classic = _run_tutorial(True, weights, x, y)
    messages = " ".join(str(w.message) for w in record)
    for old in ("output_dim", "init", "`p`", "lr", "nb_epoch", "show_accuracy"):
        assert old in messages, old
    modern, h_modern = _run_tutorial(False, weights, x, y)
    assert h_classic.history == h_modern.history  # exactly the same numbers
    assert h_classic.params == h_modern.params
    for a, b in zip(classic.get_weights(), modern.get_weights()):
        np.testing.assert_array_equal(a, b)

    ref = tfk.Sequential([tfk.layers.Dense(16, input_dim=7), tfk.layers.Activation("tanh"), tfk.layers.Dropout(0.0),
                          tfk.layers.Dense(3), tfk.layers.Activation("softmax")])
    ref.compile(loss="categorical_crossentropy", metrics=["accuracy"],
                optimizer=tfk.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True), run_eagerly=True)
    ref.set_weights(weights)
    h_ref = ref.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    assert sorted(h_ref.history) == sorted(h_classic.history)
    assert h_classic.history["loss"][-1] < 0.9 * h_classic.history["loss"][0]  # it learns
    for key in h_ref.history:
        assert_close(h_classic.history[key], h_ref.history[key], what=key)
    for a, b in zip(classic.get_weights(), ref.get_weights()):
        assert_close(a, b, what="weights after training")
