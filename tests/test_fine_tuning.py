"""The fine-tuning workflow end to end on converted Caffe models, against real tf_keras doing the same.

A Caffe net converts to a Keras `.h5`; kconvert and tf_keras both load that file, freeze the base, attach the same
new head (the same initial weights) and train with the same settings. The History, every weight after training
(the frozen ones unchanged, BatchNormalization frozen in inference mode as in TF2) and the fine-tuned file must
agree; the fine-tuned `.h5` written by kconvert loads, predicts and keeps training in tf_keras as in kconvert.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import kconvert
from kconvert.convert import caffe_to_keras

CAFFE = Path(__file__).resolve().parent.parent / "fixtures" / "caffe"

# net, the layer the new head grows from, whether the head pools first, the layers left trainable
NETS = {
    "alexnet_like": ("relu6", False, {"fc6"}),  # LRN and Caffe-rounded pooling in the frozen base
    "resnet_block": ("add_relu", True, set()),  # BatchNormalization + Add in the frozen base
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = {}
    folder = tmp_path_factory.mktemp("converted")
    for name in NETS:
        path = folder / f"{name}.h5"
        caffe_to_keras(CAFFE / f"{name}.prototxt", CAFFE / f"{name}.caffemodel").save(path)
        out[name] = path
    return out


def _tuned(lib, base, net: str):
    """`base` frozen (but for the net's trainable layers) with a new softmax head of 4 classes."""
    cut, pool, trainable = NETS[net]
    x = base.get_layer(cut).output
    if pool:
        x = lib.layers.GlobalAveragePooling2D(name="new_pool")(x)
    out = lib.layers.Dense(4, activation="softmax", name="new_head")(x)
    model = lib.Model(base.input, out)
    for layer in base.layers:
        layer.trainable = layer.name in trainable
    return model


def _data(model, n=40, seed=0):
    rng = np.random.default_rng(seed)
    shape = tuple(model.input_shape[1:])
    x = rng.uniform(-1, 1, (n, *shape)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    return x, y


def _pair(tfk, path: Path, net: str):
    ours = _tuned(kconvert, kconvert.load_model(path), net)
    ref = _tuned(tfk, tfk.models.load_model(path, custom_objects=kconvert.keras_objects("tf_keras"), compile=False),
                 net)
    head = ours.get_layer("new_head")
    rng = np.random.default_rng(7)
    weights = [rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in head.get_weights()]
    head.set_weights(weights)
    ref.get_layer("new_head").set_weights(weights)
    return ours, ref


@pytest.mark.parametrize("net", list(NETS))
def test_fine_tune_converted_caffe_net_like_tf_keras(net, tfk, converted, tmp_path):
    ours, ref = _pair(tfk, converted[net], net)
    assert [w.name.split(":")[0] for w in ref.trainable_weights] == \
        [w.name.split(":")[0] for w in ours.trainable_weights]
    x, y = _data(ours)
    frozen_before = {layer.name: layer.get_weights() for layer in ours.layers if not layer.trainable}
    ours.compile(kconvert.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy", ["accuracy"])
    ref.compile(tfk.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy", ["accuracy"])
    h_ours = ours.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, validation_split=0.2)
    h_ref = ref.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, validation_split=0.2)
    assert h_ours.history["loss"][-1] < h_ours.history["loss"][0]
    for key in h_ref.history:
        assert_close(np.array(h_ours.history[key]), np.array(h_ref.history[key]), what=key)
    for layer in ours.layers:
        for a, b in zip(layer.get_weights(), ref.get_layer(layer.name).get_weights()):
            assert_close(a, b, what=f"{layer.name} after fine-tuning")
        if layer.name in frozen_before:  # frozen: not one bit moved (BatchNormalization's statistics included)
            for a, b in zip(layer.get_weights(), frozen_before[layer.name]):
                np.testing.assert_array_equal(a, b)

    # the fine-tuned model written by kconvert: tf_keras loads it, predicts the same, and resumes as kconvert does
    ours.save(tmp_path / "tuned.h5")
    back = tfk.models.load_model(tmp_path / "tuned.h5", custom_objects=kconvert.keras_objects("tf_keras"))
    assert_close(back.predict(x, verbose=0), ours.predict(x))
    assert [w.name for w in back.trainable_weights] == [w.name for w in ref.trainable_weights]
    resumed = [back.train_on_batch(x[i:i + 8], y[i:i + 8])[0] for i in range(0, 40, 8)]
    ours_more = [ours.train_on_batch(x[i:i + 8], y[i:i + 8])[0] for i in range(0, 40, 8)]
    assert_close(np.array(ours_more), np.array(resumed), what="losses after resuming in tf_keras")


def test_new_model_takes_converted_weights_by_name(tfk, converted):
    """A new network that reuses the converted net's layer names loads them with `load_weights(by_name=True)`;
    its other layers keep their own weights; training then matches tf_keras doing the same."""
    path = converted["alexnet_like"]

    def build(lib):
        inp = lib.Input((108,))
        h = lib.layers.Dense(16, activation="relu", name="fc6")(inp)  # the converted fc6: 108 -> 16
        out = lib.layers.Dense(3, activation="softmax", name="fresh")(h)
        return lib.Model(inp, out)

    ours, ref = build(kconvert), build(tfk)
    fresh = [np.full(w.shape, 0.1, np.float32) + np.arange(w.size, dtype=np.float32).reshape(w.shape) * 0.01
             for w in ours.get_layer("fresh").get_weights()]
    ours.get_layer("fresh").set_weights(fresh)
    ref.get_layer("fresh").set_weights(fresh)
    ours.load_weights(path, by_name=True)
    ref.load_weights(path, by_name=True)
    converted_fc6 = kconvert.load_model(path).get_layer("fc6").get_weights()
    for a, b in zip(ours.get_layer("fc6").get_weights(), converted_fc6):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ours.get_layer("fresh").get_weights(), fresh):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 2, (30, 108)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    ours.compile(kconvert.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    ref.compile(tfk.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    h_ours = ours.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0)
    h_ref = ref.fit(x, y, batch_size=10, epochs=3, shuffle=False, verbose=0)
    for key in h_ref.history:
        assert_close(np.array(h_ours.history[key]), np.array(h_ref.history[key]), what=key)
