"""The `kconvert` command: output content and exit codes (0 ok, 1 input error, 2 usage, 3 over tolerance)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close

from kconvert.cli import main


@pytest.fixture
def saved(tfk, tmp_path, rng):
    model = tfk.Sequential([tfk.layers.Dense(5, activation="relu", input_shape=(3,), name="hidden"),
                            tfk.layers.Dense(2, name="out")], name="tiny")
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path / "tiny.h5"
    model.save(path)
    return model, path


def test_inspect_reports_format_layers_and_weights(saved, capsys):
    _, path = saved
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "keras_h5_model" in out and "2.21" in out
    assert "hidden (Dense)" in out and "(None, 5)" in out and "20" in out  # 3*5+5 parameters
    assert "hidden/kernel:0" in out and "(3, 5)" in out and "float32" in out
    assert "Total params: 32" in out


def test_inspect_json(saved, capsys):
    import json

    _, path = saved
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "keras_h5_model"
    assert [w["name"] for w in report["weights"]] == ["hidden/kernel:0", "hidden/bias:0", "out/kernel:0",
                                                     "out/bias:0"]
    assert report["outputs"][0]["shape"] == [None, 2]


def test_inspect_corrupt_file_exits_1_with_one_line(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "bad.h5"
    bad.write_bytes(path.read_bytes()[:3000])
    proc = subprocess.run([sys.executable, "-m", "kconvert", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.h5" in lines[0] and "Traceback" not in proc.stderr


def test_usage_error_exits_2(capsys):
    assert main(["inspect"]) == 2
    assert main([]) == 2


def test_predict_writes_outputs(saved, tmp_path, rng):
    model, path = saved
    x = rng.normal(size=(4, 3)).astype("float32")
    np.savez(tmp_path / "x.npz", input_0=x)
    assert main(["predict", str(path), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    assert_close(np.load(tmp_path / "y.npz")["output_0"], model.predict(x, verbose=0))


def test_validate_equal_and_different_models(saved, tfk, tmp_path, capsys):
    model, path = saved
    (tmp_path / "tiny.json").write_text(model.to_json())
    model.save_weights(tmp_path / "tiny_w.h5")
    assert main(["validate", str(path), str(tmp_path / "tiny.json"), "--weights-b", str(tmp_path / "tiny_w.h5")]) == 0
    assert "ok" in capsys.readouterr().out
    weights = model.get_weights()
    weights[-1] = weights[-1] + 0.5
    model.set_weights(weights)
    model.save(tmp_path / "other.h5")
    assert main(["validate", str(path), str(tmp_path / "other.h5")]) == 3
    assert "OVER TOLERANCE" in capsys.readouterr().out


def test_validate_config_without_weights_is_an_error(saved, tmp_path, capsys):
    model, path = saved
    (tmp_path / "tiny.json").write_text(model.to_json())
    assert main(["validate", str(path), str(tmp_path / "tiny.json")]) == 1
    assert "weights" in capsys.readouterr().err


def test_predict_expect_compares_with_reference(saved, tmp_path, rng, capsys):
    model, path = saved
    x = rng.normal(size=(4, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    np.savez(tmp_path / "io.npz", input_0=x, output_0=y)
    assert main(["predict", str(path), "--input", str(tmp_path / "io.npz"), "--expect", str(tmp_path / "io.npz")]) == 0
    assert "ok" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", output_0=y + 1.0)
    assert main(["predict", str(path), "--input", str(tmp_path / "io.npz"), "--expect", str(tmp_path / "bad.npz")]) == 3
    assert "OVER TOLERANCE" in capsys.readouterr().out


def test_inspect_keras3_archive_and_weights(tmp_path, rng, capsys):
    import keras

    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, keras.layers.Dense(4, name="d3")(inp))
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    assert main(["inspect", str(tmp_path / "m.keras")]) == 0
    out = capsys.readouterr().out
    assert "keras_zip" in out and keras.__version__ in out and "d3 (Dense)" in out and "Total params: 16" in out
    assert main(["inspect", str(tmp_path / "m.weights.h5"), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "keras3_weights_h5"
    assert {(w["name"], tuple(w["shape"])) for w in report["weights"]} == {("layers/dense/vars/0", (3, 4)),
                                                                          ("layers/dense/vars/1", (4,))}
