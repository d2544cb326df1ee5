"""keras.applications architectures built at test time (weights=None, small inputs) load and predict exactly.

One architecture per family runs here; `fixtures/check_applications.py` runs every architecture.
"""

import pytest
from conftest import assert_close

import kconvert

# name -> input (height, width); width != height on purpose where the architecture allows it
FAMILIES = {
    "MobileNet": (64, 67), "MobileNetV2": (64, 67), "MobileNetV3Small": (64, 67), "ResNet50V2": (64, 67),
    "ResNetRS50": (64, 67), "DenseNet121": (64, 67), "VGG16": (64, 67), "Xception": (71, 74),
    "InceptionV3": (75, 78), "InceptionResNetV2": (75, 78), "NASNetMobile": (64, 64), "EfficientNetB0": (64, 67),
    "EfficientNetV2B0": (64, 67), "ConvNeXtTiny": (64, 67), "RegNetX002": (64, 67),
}


def randomize_batchnorm(model, rng):
    """BatchNormalization statistics away from their defaults, so folding/ordering mistakes show."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            randomize_batchnorm(layer, rng)
        if type(layer).__name__ != "BatchNormalization":
            continue
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if "moving_mean" in w.name:
                values.append(rng.normal(0, 0.3, shape))
            elif "moving_variance" in w.name:
                values.append(rng.uniform(0.5, 1.5, shape))
            elif "gamma" in w.name:
                values.append(rng.uniform(0.8, 1.2, shape))
            else:
                values.append(rng.normal(0, 0.1, shape))
        layer.set_weights(values)


def build(lib, name, size, rng):
    model = getattr(lib.applications, name)(weights=None, include_top=False, pooling="avg",
                                            input_shape=(*size, 3))
    randomize_batchnorm(model, rng)
    x = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
    return model, x


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tf_keras_application(name, tfk, tmp_path, rng):
    model, x = build(tfk, name, FAMILIES[name], rng)
    path = tmp_path / f"{name}.h5"
    model.save(path)
    ref = model.predict(x, verbose=0)
    ours = kconvert.load_model(path)
    assert_close(ours.predict(x), ref, what=name)
    assert ours.count_params() == model.count_params()
