"""keras.applications architectures built at test time (weights=None, small inputs) load and predict exactly.

One architecture per family runs here, through both upgrade paths:

* tf_keras -> .h5 -> kconvert (predict) -> kconvert `save('.keras')` -> real Keras 3 `load_model` (predict);
* real Keras 3 -> .keras -> kconvert (predict).

`fixtures/check_applications.py` runs every architecture.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import kconvert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))
from fixture_weights import randomize_batchnorm  # noqa: E402 - shared with fixtures/check_applications.py

# name -> input (height, width); width != height on purpose where the architecture allows it
FAMILIES = {
    "MobileNet": (64, 67), "MobileNetV2": (64, 67), "MobileNetV3Small": (64, 67), "ResNet50V2": (64, 67),
    "ResNetRS50": (64, 67), "DenseNet121": (64, 67), "VGG16": (64, 67), "Xception": (71, 74),
    "InceptionV3": (75, 78), "InceptionResNetV2": (75, 78), "NASNetMobile": (64, 64), "EfficientNetB0": (64, 67),
    "EfficientNetV2B0": (64, 67), "ConvNeXtTiny": (64, 67), "RegNetX002": (64, 67),
}
# families keras.applications (Keras 3.15) does not have; test_keras3_lacks checks the list stays true
KERAS3_LACKS = {"ResNetRS50", "RegNetX002"}



def build(lib, name, size, rng):
    """The architecture in `lib` (tf_keras or keras), BatchNormalization randomised, and a batch of 2 images."""
    model = getattr(lib.applications, name)(weights=None, include_top=False, pooling="avg",
                                            input_shape=(*size, 3))
    randomize_batchnorm(model, rng)
    x = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
    return model, x


@pytest.fixture(scope="module")
def keras3():
    import keras

    return keras


@pytest.fixture(scope="module")
def tf_keras_cases(tmp_path_factory):
    """name -> (x, tf_keras output, param count, kconvert model loaded from the .h5), each built once."""
    import tf_keras

    cache = {}

    def get(name):
        if name not in cache:
            rng = np.random.default_rng(1234)
            model, x = build(tf_keras, name, FAMILIES[name], rng)
            ref = model(x, training=False).numpy()
            path = tmp_path_factory.mktemp("tf_keras") / f"{name}.h5"
            model.save(path)
            cache[name] = (x, ref, model.count_params(), kconvert.load_model(path))
            tf_keras.backend.clear_session()
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tf_keras_application(name, tf_keras_cases):
    x, ref, params, ours = tf_keras_cases(name)
    assert_close(ours.predict(x), ref, what=name)
    assert ours.count_params() == params


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tf_keras_application_upgrades_to_keras3(name, tf_keras_cases, keras3, tmp_path):
    """kconvert writes the tf_keras model as a .keras archive that real Keras 3 loads and predicts exactly."""
    x, ref, params, ours = tf_keras_cases(name)
    path = tmp_path / f"{name}.keras"
    ours.save(path)
    model = keras3.saving.load_model(path)
    assert_close(np.asarray(model(x, training=False)), ref, what=f"{name} in Keras 3")
    assert model.count_params() == params
    keras3.backend.clear_session()


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - KERAS3_LACKS))
def test_keras3_application(name, keras3, tmp_path):
    """The architecture built with real Keras 3, saved as .keras, loads in kconvert and predicts exactly."""
    model, x = build(keras3, name, FAMILIES[name], np.random.default_rng(4321))
    ref = np.asarray(model(x, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    params = model.count_params()
    keras3.backend.clear_session()
    ours = kconvert.load_model(path)
    assert_close(ours.predict(x), ref, what=f"Keras 3 {name}")
    assert ours.count_params() == params


def test_keras3_lacks(keras3):
    assert sorted(n for n in KERAS3_LACKS if hasattr(keras3.applications, n)) == []
    assert all(hasattr(keras3.applications, n) for n in set(FAMILIES) - KERAS3_LACKS)
