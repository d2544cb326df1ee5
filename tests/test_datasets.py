"""kconvert.datasets against the real loaders: tf_keras (and Keras 3 for $KERAS_HOME) given the same .npz file.

The real loaders check the file's hash against the published dataset; our files are small synthetic ones in
Keras's layout, so the tests let the real `get_file` run with `file_hash=None` and make any download fail."""

import os

import numpy as np
import pytest

import kconvert
from kconvert.datasets import boston_housing, mnist
from kconvert.errors import FormatError


def fail_download(*args, **kwargs):
    raise AssertionError("the reference loader tried to download")


@pytest.fixture
def tf_loaders(tfk, monkeypatch):
    """tf_keras's mnist and boston_housing modules, with the hash check off and downloads refused."""
    from tf_keras.src.datasets import boston_housing as tf_boston
    from tf_keras.src.datasets import mnist as tf_mnist
    from tf_keras.src.utils import data_utils

    real = data_utils.get_file

    def get_file(fname, origin, file_hash=None, cache_dir=None, **kwargs):
        return real(fname, origin=origin, file_hash=None, cache_dir=cache_dir, **kwargs)

    monkeypatch.setattr(data_utils, "urlretrieve", fail_download)
    for module in (tf_mnist, tf_boston):
        monkeypatch.setattr(module, "get_file", get_file)
    return tf_mnist, tf_boston


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home folder (`~`), and no $KERAS_HOME."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    return path


def write_mnist(path, n_train=50, n_test=17, seed=0, **override):
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_boston(path, n=50, seed=0, **override):
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal((n, 13)) * 10 + 20, "y": rng.uniform(5, 50, n)}
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def assert_same(ours, ref):
    """Both loaders' `(x_train, y_train), (x_test, y_test)`: same dtypes, shapes and values."""
    ours, ref = [a for pair in ours for a in pair], [a for pair in ref for a in pair]
    assert len(ours) == len(ref) == 4
    for a, b in zip(ours, ref):
        assert isinstance(a, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_both_import_forms():
    assert kconvert.datasets.mnist.load_data is mnist.load_data
    assert kconvert.datasets.boston_housing.load_data is boston_housing.load_data


def test_mnist_absolute_path_matches_tf_keras(tf_loaders, tmp_path, home):
    path = write_mnist(tmp_path / "data" / "digits.npz")
    ours = mnist.load_data(str(path))
    assert ours[0][0].shape == (50, 28, 28) and ours[1][1].shape == (17,) and ours[0][1].dtype == np.uint8
    assert_same(ours, tf_loaders[0].load_data(path=str(path)))


def test_mnist_relative_path_is_used_as_is(tmp_path, home, monkeypatch):
    write_mnist(tmp_path / "here" / "mine.npz", seed=3)
    write_mnist(home / ".keras" / "datasets" / "mine.npz", seed=4)  # found in the cache only if `path` is missing
    monkeypatch.chdir(tmp_path / "here")
    ours = mnist.load_data("mine.npz")
    with np.load(tmp_path / "here" / "mine.npz") as f:
        np.testing.assert_array_equal(ours[0][0], f["x_train"])


def test_mnist_found_in_home_cache_as_tf_keras(tf_loaders, tmp_path, home, monkeypatch):
    write_mnist(home / ".keras" / "datasets" / "mnist.npz", seed=5)
    monkeypatch.chdir(tmp_path)
    assert_same(mnist.load_data(), tf_loaders[0].load_data())


def test_mnist_cache_dir_as_tf_keras(tf_loaders, tmp_path, home, monkeypatch):
    write_mnist(tmp_path / "cache" / "datasets" / "mnist.npz", n_train=31, n_test=9, seed=6)
    write_mnist(home / ".keras" / "datasets" / "mnist.npz", seed=7)
    monkeypatch.chdir(tmp_path)
    ours = mnist.load_data(cache_dir=str(tmp_path / "cache"))
    assert ours[0][0].shape == (31, 28, 28)
    assert_same(ours, tf_loaders[0].load_data(cache_dir=str(tmp_path / "cache")))


def test_mnist_keras_home_before_home_as_keras3(tmp_path, home, monkeypatch):
    """$KERAS_HOME wins over ~/.keras, as in Keras 3 (which reads $KERAS_HOME when it is imported)."""
    import keras
    from keras.src.backend import config
    from keras.src.datasets import mnist as k3_mnist
    from keras.src.utils import file_utils

    write_mnist(tmp_path / "kh" / "datasets" / "mnist.npz", n_train=23, n_test=11, seed=8)
    write_mnist(home / ".keras" / "datasets" / "mnist.npz", seed=9)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "kh"))
    monkeypatch.setattr(file_utils, "urlretrieve", fail_download)
    real = file_utils.get_file
    monkeypatch.setattr(k3_mnist, "get_file", lambda fname, origin, file_hash=None, **kw: real(fname, origin=origin,
                                                                                               **kw))
    monkeypatch.chdir(tmp_path)
    ours = mnist.load_data()
    assert ours[0][0].shape == (23, 28, 28)
    assert_same(ours, keras.datasets.mnist.load_data())


@pytest.mark.parametrize("test_split, seed", [(0.2, 113), (0.0, 113), (0.33, 7), (0.5, 0)])
def test_boston_split_matches_tf_keras(tf_loaders, tmp_path, home, test_split, seed):
    path = write_boston(tmp_path / "boston.npz", n=53, seed=seed)
    ours = boston_housing.load_data(str(path), test_split=test_split, seed=seed)
    assert len(ours[0][0]) == int(53 * (1 - test_split)) and ours[0][0].shape[1] == 13
    assert_same(ours, tf_loaders[1].load_data(path=str(path), test_split=test_split, seed=seed))
    with np.load(path) as f:  # a real shuffle: not the file's order
        assert not np.array_equal(ours[0][1], f["y"][: len(ours[0][1])])


def test_boston_defaults_and_float32_file_as_tf_keras(tf_loaders, tmp_path, home, monkeypatch):
    rng = np.random.default_rng(11)
    write_boston(home / ".keras" / "datasets" / "boston_housing.npz",
                 x=rng.standard_normal((41, 13)).astype(np.float32), y=rng.uniform(5, 50, 41).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    ours = boston_housing.load_data()
    assert ours[0][0].dtype == np.float32
    assert_same(ours, tf_loaders[1].load_data())


def test_absent_file_names_places_and_url(tmp_path, home, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FormatError) as e:
        mnist.load_data()
    text = str(e.value)
    assert os.path.join(str(tmp_path / "kh"), "datasets", "mnist.npz") in text
    assert os.path.join(str(home), ".keras", "datasets", "mnist.npz") in text
    assert "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in text
    assert "does not download" in text
    with pytest.raises(FormatError, match="boston_housing.npz"):
        boston_housing.load_data(cache_dir=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("override, message", [
    ({"y_test": None}, "missing arrays \\['y_test'\\]"),
    ({"x_train": np.zeros((50, 28, 27), np.uint8)}, "'x_train' has shape \\(50, 28, 27\\)"),
    ({"x_test": np.zeros((17, 784), np.uint8)}, "'x_test' has shape \\(17, 784\\)"),
    ({"y_train": np.zeros(49, np.uint8)}, "'y_train' has shape \\(49,\\)"),
    ({"y_train": np.array(["a"] * 50)}, "dtype <U1"),
])
def test_mnist_bad_layout_names_the_file(tmp_path, override, message):
    path = write_mnist(tmp_path / "bad.npz", **override)
    with pytest.raises(FormatError, match=message) as e:
        mnist.load_data(str(path))
    assert e.value.file == str(path)


def test_boston_bad_layout_names_the_file(tmp_path):
    path = write_boston(tmp_path / "b.npz", x=np.zeros((50, 12)))
    with pytest.raises(FormatError, match="'x' has shape \\(50, 12\\)") as e:
        boston_housing.load_data(str(path))
    assert e.value.file == str(path)
    with pytest.raises(ValueError, match="test_split"):
        boston_housing.load_data(str(write_boston(tmp_path / "ok.npz")), test_split=1.0)


def test_unreadable_files_never_unpickle(tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3))
    text = tmp_path / "text.npz"
    text.write_text("not a zip file")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((3, 13)))
    for path, message in ((pickled, "allow_pickle"), (text, "cannot read"), (single, "not an .npz")):
        with pytest.raises(FormatError, match=message) as e:
            boston_housing.load_data(str(path))
        assert e.value.file == str(path)
