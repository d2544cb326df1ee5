"""Fuzzing the Keras JSON and YAML configuration readers (load_model on a file, model_from_json/yaml on text).

Mutated committed configs, then structural cases from hypothesis: a field of a real config replaced by a value of
the wrong type or an absurd size, deep nesting, cyclic inbound nodes, duplicate and unicode layer names.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import FIXTURES, Case, assert_contract, cases_per_file, examples, mutation_cases, run_all

K2, K3, KL = FIXTURES / "keras2", FIXTURES / "keras3", FIXTURES / "keras_legacy"
WARM_UP = [{"reader": "load_model", "path": str(K2 / "siamese_conv.json")},
           {"reader": "load_model", "path": str(K2 / "seq_mlp.yaml")},
           {"reader": "load_model", "path": str(K3 / "k3_seq_mlp.json")}]
CORPUS = [K2 / "seq_mlp.json", K2 / "seq_mlp.yaml", K2 / "siamese_conv.json", K2 / "siamese_conv.yaml",
          K2 / "embedding_mask.json", K3 / "k3_seq_mlp.json", K3 / "k3_nested.json", KL / "k1_mlp.json",
          KL / "k1_mlp.yaml"]


def test_mutated_configs_keep_the_contract(worker, tmp_path):
    corpus = [("load_model", p, {}) for p in CORPUS]
    outcomes = run_all(worker, mutation_cases(tmp_path, corpus, cases_per_file(60, len(corpus)), salt=2))
    assert_contract(outcomes)
    assert sum(o.status == "kerror" for o in outcomes) > len(outcomes) // 4


def _run_config(worker, tmp_path, text: str, label: str, fmt: str = "json", reader: str = "load_model"):
    path = tmp_path / f"config.{fmt}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    extra = {"fmt": fmt} if reader == "model_from_text" else {}
    return run_all(worker, [Case(reader, str(path), label, extra)])


_HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([10**12, 2**31, 2**63 - 1, -1, 0, 3 * 10**9]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.lists(st.integers(-5, 10**10), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.recursive(st.integers(0, 3), lambda c: st.lists(c, max_size=3), max_leaves=20))
_SEEDS = [K2 / "seq_mlp.json", K2 / "siamese_conv.json", K3 / "k3_seq_mlp.json", KL / "k1_mlp.json"]


def _set_random_field(config: dict, data) -> str:
    """Replace one value somewhere in the config (chosen by hypothesis) with a hostile one; returns its path."""
    node, path = config, []
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return "/".join(path)
        key = data.draw(st.sampled_from(keys))
        path.append(str(key))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(_HOSTILE_VALUES)
        return "/".join(path)


@settings(max_examples=examples(150), deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(seed=st.sampled_from(_SEEDS), data=st.data(), fmt=st.sampled_from(["json", "yaml"]))
def test_configs_with_hostile_values_keep_the_contract(worker, tmp_path_factory, seed, data, fmt):
    import yaml

    config = json.loads(seed.read_text())
    where = _set_random_field(config, data)
    text = json.dumps(config) if fmt == "json" else yaml.safe_dump(config)
    assert_contract(_run_config(worker, tmp_path_factory.mktemp("cfg"), text, f"{seed.name} {where}", fmt))


def _layers(config):
    return config["config"]["layers"]


def test_structural_configs_are_refused_or_load(worker, tmp_path):
    seq = json.loads((K2 / "seq_mlp.json").read_text())
    fun = json.loads((K2 / "siamese_conv.json").read_text())
    cases = {}
    huge = json.loads(json.dumps(seq))
    next(e for e in _layers(huge) if e["class_name"] == "Dense")["config"]["units"] = 10**12
    cases["dense_units_1e12"] = json.dumps(huge)
    conv = json.loads(json.dumps(fun))
    next(e for e in _layers(conv) if "kernel_size" in e["config"])["config"]["kernel_size"] = [3 * 10**9, 3 * 10**9]
    cases["conv_kernel_3e9"] = json.dumps(conv)
    cyclic = json.loads(json.dumps(fun))
    a, b = [e for e in _layers(cyclic) if e["class_name"] != "InputLayer"][:2]
    a["inbound_nodes"] = [[[b["name"], 0, 0, {}]]]
    b["inbound_nodes"] = [[[a["name"], 0, 0, {}]]]
    cases["cyclic_inbound_nodes"] = json.dumps(cyclic)
    self_loop = json.loads(json.dumps(fun))
    looped = next(e for e in _layers(self_loop) if e["class_name"] != "InputLayer")
    looped["inbound_nodes"] = [[[looped["name"], 0, 0, {}]]]
    cases["self_inbound_node"] = json.dumps(self_loop)
    dup = json.loads(json.dumps(fun))
    for e in _layers(dup)[1:3]:
        e["name"] = e["config"]["name"] = "same"
    cases["duplicate_names"] = json.dumps(dup)
    dup_seq = json.loads(json.dumps(seq))
    for e in _layers(dup_seq):
        e["config"]["name"] = "same"
    cases["duplicate_names_sequential"] = json.dumps(dup_seq)
    cases["deep_lists"] = '{"class_name": "Sequential", "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    cases["deep_dicts"] = '{"class_name": "Sequential", "config": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001
    cases["node_index_huge"] = json.dumps(fun).replace(', 0, 0, {}]', ', 99999999999999999999, 0, {}]', 1)
    cases["not_a_mapping"] = "[1, 2, 3]"
    for name, text in cases.items():
        outcomes = _run_config(worker, tmp_path, text, name)
        assert_contract(outcomes, expect_error=True)
    deep_yaml = "a: " + "[" * 50_000 + "]" * 50_000 + "\n"
    assert_contract(_run_config(worker, tmp_path, deep_yaml, "deep_yaml", "yaml"), expect_error=True)
    for text in ("class_name: Sequential\nconfig: &a [*a]\n", "class_name: Sequential\nconfig: &a {layers: [*a]}\n"):
        assert_contract(_run_config(worker, tmp_path, text, "recursive_yaml_alias", "yaml", reader="model_from_text"),
                        expect_error=True)


def test_unicode_layer_names_load(worker, tmp_path):
    fun = json.loads((K2 / "siamese_conv.json").read_text())
    text = json.dumps(fun)
    for e in _layers(fun):
        text = text.replace(f'"{e["name"]}"', f'"{e["name"]}_ü层\U0001f600"')
    outcomes = _run_config(worker, tmp_path, text, "unicode_names")
    assert_contract(outcomes)
    assert outcomes[0].status == "ok", outcomes[0].message
