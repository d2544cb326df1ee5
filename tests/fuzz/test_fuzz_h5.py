"""Fuzzing the HDF5 readers: whole-model `.h5` (Keras 1, 2, 3), `save_weights` `.h5` and Keras 3 `.weights.h5`.

Mutated committed fixtures, then hostile files built with h5py: external and soft links out of the file or into
cycles, wrong dtypes, shapes and attribute types, decompression bombs, duplicate and unicode names.
"""

import json
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import FIXTURES, Case, assert_contract, cases_per_file, examples, mutation_cases, run_all

K2, K3, KL = FIXTURES / "keras2", FIXTURES / "keras3", FIXTURES / "keras_legacy"
SEQ_MLP = str(K2 / "seq_mlp.h5")
K3_MLP = str(K3 / "k3_seq_mlp.keras")
WARM_UP = [{"reader": "load_model", "path": SEQ_MLP},
           {"reader": "load_weights", "path": str(K2 / "seq_mlp_weights.h5"), "extra": {"base": SEQ_MLP}},
           {"reader": "load_weights", "path": str(KL / "k1_mlp_weights.h5"), "extra": {"base": str(KL / "k1_mlp.h5")}},
           {"reader": "load_model", "path": K3_MLP}]


@pytest.fixture(scope="module")
def k3_weights(tmp_path_factory):
    """The Keras 3 `.weights.h5` inside the committed archive (the layout `save_weights` writes)."""
    out = tmp_path_factory.mktemp("k3") / "k3_seq_mlp.weights.h5"
    with zipfile.ZipFile(K3_MLP) as z:
        out.write_bytes(z.read("model.weights.h5"))
    return out


def test_mutated_h5_files_keep_the_contract(worker, tmp_path, k3_weights):
    corpus = [("load_model", K2 / "seq_mlp.h5", {}), ("load_model", K2 / "siamese_conv.h5", {}),
              ("load_model", KL / "k1_mlp.h5", {}), ("load_model", K3 / "k3_seq_mlp.h5", {}),
              ("load_model", K3 / "k3_nested.h5", {}),
              ("load_weights", K2 / "seq_mlp_weights.h5", {"base": SEQ_MLP}),
              ("load_weights", K2 / "seq_mlp_weights.h5", {"base": SEQ_MLP, "by_name": True}),
              ("load_weights", KL / "k1_mlp_weights.h5", {"base": str(KL / "k1_mlp.h5")}),
              ("load_weights", k3_weights, {"base": K3_MLP}),
              ("detect", K2 / "conv2d_cl.h5", {})]
    outcomes = run_all(worker, mutation_cases(tmp_path, corpus, cases_per_file(120, len(corpus)), salt=1))
    assert_contract(outcomes)
    assert sum(o.status == "kerror" for o in outcomes) > len(outcomes) // 4  # the mutations do reach the checks


# ------------------------------------------------------------------------------------------------ hostile files


def _legacy_weights(path, layers, **attrs):
    """A save_weights-layout file: {layer: {weight name: array}}; extra root attributes as given."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.21.0"
        for name, weights in layers.items():
            g = f.create_group(name)
            g.attrs["weight_names"] = [w.encode() for w in weights]
            for wname, value in weights.items():
                if value is not None:
                    g[wname] = value
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def _copy(source, path):
    """`path`, holding a byte copy of `source` (a committed fixture) to edit in place."""
    path.write_bytes(source.read_bytes())
    return path


def _text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def _seq_mlp_layers():
    with h5py.File(K2 / "seq_mlp_weights.h5", "r") as f:
        names = [_text(n) for n in f.attrs["layer_names"]]
        return {n: {_text(w): np.asarray(f[n][_text(w)]) for w in f[n].attrs["weight_names"]} for n in names}


def _external_target(tmp_path):
    target = tmp_path / "outside.h5"
    with h5py.File(target, "w") as f:
        f["kernel"] = np.ones((8, 8), "float32")
        f.create_group("grp")["kernel:0"] = np.ones((8, 8), "float32")
    return target


def _hostile_h5(tmp_path):
    """(name, builder) pairs; each builder writes a file and returns (reader, path, extra)."""
    base = _seq_mlp_layers()
    first = next(n for n, w in base.items() if w)
    wname = next(iter(base[first]))
    lw = {"base": SEQ_MLP}

    def external_weight():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first][wname] = None
        p = _legacy_weights(tmp_path / "ext_weight.h5", layers)
        with h5py.File(p, "a") as f:
            f[first][wname] = h5py.ExternalLink(str(_external_target(tmp_path)), "/kernel")
        return "load_weights", p, lw

    def external_intermediate():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first] = {f"grp/{wname.split('/')[-1]}": None}
        p = _legacy_weights(tmp_path / "ext_mid.h5", layers)
        with h5py.File(p, "a") as f:
            f[first]["grp"] = h5py.ExternalLink(str(_external_target(tmp_path)), "/grp")
        return "load_weights", p, lw

    def external_layer_group():
        p = _legacy_weights(tmp_path / "ext_layer.h5", {k: v for k, v in base.items() if k != first})
        with h5py.File(p, "a") as f:
            f.attrs["layer_names"] = [n.encode() for n in base]
            f[first] = h5py.ExternalLink(str(_external_target(tmp_path)), "/")
        return "load_weights", p, lw

    def external_model_weights():
        p = _copy(K2 / "seq_mlp.h5", tmp_path / "ext_model.h5")
        inner = _copy(K2 / "seq_mlp_weights.h5", tmp_path / "inner_weights.h5")
        with h5py.File(p, "a") as f:
            del f["model_weights"]
            f["model_weights"] = h5py.ExternalLink(str(inner), "/")
        return "load_model", p, {}

    def soft_link_cycle_k3():
        p = tmp_path / "cycle.weights.h5"
        with h5py.File(p, "w") as f:
            f.create_group("layers/dense/vars")["0"] = np.ones((2, 2), "float32")
            f["layers/dense/loop"] = h5py.SoftLink("/layers")
        return "load_weights", p, {"base": K3_MLP}

    def hard_link_cycle_k3():
        p = tmp_path / "hcycle.weights.h5"
        with h5py.File(p, "w") as f:
            g = f.create_group("layers/dense")
            g["self"] = g
        return "load_weights", p, {"base": K3_MLP}

    def external_k3():
        p = tmp_path / "ext.weights.h5"
        with h5py.File(p, "w") as f:
            f["layers"] = h5py.ExternalLink(str(_external_target(tmp_path)), "/")
        return "load_weights", p, {"base": K3_MLP}

    def dangling_soft_link():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first][wname] = None
        p = _legacy_weights(tmp_path / "dangling.h5", layers)
        with h5py.File(p, "a") as f:
            f[first][wname] = h5py.SoftLink("/nowhere/at/all")
        return "load_weights", p, lw

    def string_weight():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first][wname] = np.array([b"not", b"numbers"])
        return "load_weights", _legacy_weights(tmp_path / "strings.h5", layers), lw

    def compound_weight():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first][wname] = np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])
        return "load_weights", _legacy_weights(tmp_path / "compound.h5", layers), lw

    def wrong_shape():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first][wname] = np.ones((3, 5, 7), "float32")
        return "load_weights", _legacy_weights(tmp_path / "shape.h5", layers), lw

    def bomb():
        layers = {k: dict(v) for k, v in base.items()}
        layers[first][wname] = None
        p = _legacy_weights(tmp_path / "bomb.h5", layers)
        with h5py.File(p, "a") as f:
            f[first].create_dataset(wname, shape=(1 << 20, 1 << 14), dtype="float32", chunks=(1024, 1024),
                                    compression="gzip", fillvalue=1.0)
        return "load_weights", p, lw

    def k3_bomb():
        p = tmp_path / "bomb.weights.h5"
        with h5py.File(p, "w") as f:
            f.create_group("layers/dense/vars").create_dataset("0", shape=(1 << 20, 1 << 14), dtype="float32",
                                                                chunks=(1024, 1024), compression="gzip")
        return "load_weights", p, {"base": K3_MLP}

    def layer_names_ints():
        p = _legacy_weights(tmp_path / "ints.h5", base)
        with h5py.File(p, "a") as f:
            f.attrs["layer_names"] = np.arange(4)
        return "load_weights", p, lw

    def model_config_not_json():
        p = _copy(K2 / "seq_mlp.h5", tmp_path / "config_int.h5")
        with h5py.File(p, "a") as f:
            f.attrs["model_config"] = np.arange(3.0)
        return "load_model", p, {}

    def model_config_huge_units():
        p = _copy(K2 / "seq_mlp.h5", tmp_path / "units.h5")
        with h5py.File(p, "a") as f:
            config = json.loads(f.attrs["model_config"])
            config["config"]["layers"][1]["config"]["units"] = 10**12
            f.attrs["model_config"] = json.dumps(config).encode()
        return "load_model", p, {}

    def version_wrong_type():
        p = _legacy_weights(tmp_path / "version.h5", base)
        with h5py.File(p, "a") as f:
            f.attrs["keras_version"] = np.arange(5.0)
        return "load_weights", p, lw

    def duplicate_layer_names():
        p = _legacy_weights(tmp_path / "dup.h5", base)
        with h5py.File(p, "a") as f:
            f.attrs["layer_names"] = [first.encode()] * len(base)
        return "load_weights", p, lw

    def unicode_names():
        renamed = {f"dénse_{i}_层_\U0001f600": v for i, v in enumerate(base.values())}
        return "load_weights", _legacy_weights(tmp_path / "unicode.h5", renamed), lw

    def weight_names_nested():
        p = _legacy_weights(tmp_path / "nested_names.h5", base)
        with h5py.File(p, "a") as f:
            f[first].attrs["weight_names"] = np.zeros((2, 2, 2), "S3")
        return "load_weights", p, lw

    return {f.__name__: f for f in (external_weight, external_intermediate, external_layer_group,
                                    external_model_weights, soft_link_cycle_k3, hard_link_cycle_k3, external_k3,
                                    dangling_soft_link, string_weight, compound_weight, wrong_shape, bomb, k3_bomb,
                                    layer_names_ints, model_config_not_json, model_config_huge_units,
                                    version_wrong_type, duplicate_layer_names, unicode_names, weight_names_nested)}


LOADABLE = {"unicode_names"}


def test_hostile_h5_files_are_refused(worker, tmp_path):
    cases = []
    for name, build in _hostile_h5(tmp_path).items():
        reader, path, extra = build()
        cases.append(Case(reader, str(path), name, extra))
    outcomes = run_all(worker, cases)
    assert_contract([o for o in outcomes if o.case.label in LOADABLE])  # may load: names do not matter by position
    assert_contract([o for o in outcomes if o.case.label not in LOADABLE], expect_error=True)
    by_name = {o.case.label: o.message for o in outcomes}
    for name in ("external_weight", "external_intermediate", "external_layer_group", "external_model_weights",
                 "external_k3"):
        assert "external link" in by_name[name], by_name[name]
    assert "bomb" in by_name["bomb"] and "bomb" in by_name["k3_bomb"]


_ATTR_VALUES = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40),
    st.lists(st.integers(-10, 10**6), max_size=6), st.lists(st.text(max_size=8), max_size=6),
    st.just(np.zeros((2, 3), "f4")), st.just(np.array([b"a", b"b"])))
_ATTRS = ["layer_names", "backend", "keras_version", "weight_names", "model_config", "training_config"]


@settings(max_examples=examples(40), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(attr=st.sampled_from(_ATTRS), value=_ATTR_VALUES, on_layer=st.booleans())
def test_attributes_of_any_type_keep_the_contract(worker, tmp_path_factory, attr, value, on_layer):
    tmp = tmp_path_factory.mktemp("attrs")
    path = _copy(K2 / "seq_mlp.h5", tmp / "m.h5")
    with h5py.File(path, "a") as f:
        target = f["model_weights/dense"] if on_layer else (f if attr in ("model_config", "training_config")
                                                             else f["model_weights"])
        try:
            target.attrs[attr] = value
        except (TypeError, ValueError):  # h5py cannot store it as is (a NUL in a string, a ragged list)
            target.attrs[attr] = str(value).replace("\0", "\\0")
    assert_contract(run_all(worker, [Case("load_model", str(path), f"{attr}={value!r:.60} layer={on_layer}")]))
