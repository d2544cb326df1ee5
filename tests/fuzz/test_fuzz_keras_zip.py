"""Fuzzing the Keras 3 `.keras` archive reader: mutated committed archives, then hostile archives built with
zipfile: zip-slip member names, zip bombs and lying size headers, missing and duplicated members, hostile configs."""

import json
import struct
import zipfile

from .harness import FIXTURES, Case, assert_contract, cases_per_file, mutation_cases, run_all

K3 = FIXTURES / "keras3"
MLP = K3 / "k3_seq_mlp.keras"
WARM_UP = [{"reader": "load_model", "path": str(MLP)}, {"reader": "load_model", "path": str(K3 / "k3_nested.keras")}]


def test_mutated_archives_keep_the_contract(worker, tmp_path):
    corpus = [("load_model", MLP, {}), ("load_model", K3 / "k3_nested.keras", {}),
              ("load_model", K3 / "k3_embedding_mask.keras", {}), ("detect", MLP, {}),
              ("load_weights", MLP, {"base": str(MLP)})]
    outcomes = run_all(worker, mutation_cases(tmp_path, corpus, cases_per_file(100, len(corpus)), salt=3))
    assert_contract(outcomes)
    assert sum(o.status == "kerror" for o in outcomes) > len(outcomes) // 10


def _members():
    with zipfile.ZipFile(MLP) as z:
        return {n: z.read(n) for n in z.namelist()}


def _archive(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return path


def _lie_about_size(path, member: str, size: int):
    """Rewrite the central-directory uncompressed size of `member` (what zipfile trusts) to `size`."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, at + 24, size)
            break
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def test_hostile_archives_are_refused(worker, tmp_path):
    base = _members()
    config = json.loads(base["config.json"])
    cases = {
        "dotdot": {**base, "../evil.txt": b"x"},
        "absolute": {**base, "/tmp/evil.txt": b"x"},
        "drive": {**base, "C:/evil.txt": b"x"},
        "backslash": {**base, "assets\\..\\..\\evil": b"x"},
        "nested_dotdot": {**base, "assets/../../evil": b"x"},
        "no_config": {k: v for k, v in base.items() if k != "config.json"},
        "config_not_object": {**base, "config.json": b"[1, 2]"},
        "config_deep": {**base, "config.json": b"[" * 100_000 + b"]" * 100_000},
        "config_not_utf8": {**base, "config.json": b"\xff\xfe{}"},
        "metadata_garbage": {**base, "metadata.json": b"\x00\x01garbage"},
        "weights_not_hdf5": {**base, "model.weights.h5": b"not an hdf5 file at all"},
        "weights_empty": {**base, "model.weights.h5": b""},
        "weights_npz": {k: v for k, v in base.items() if k != "model.weights.h5"} | {"model.weights.npz": b"PK"},
        "units_1e12": {**base, "config.json": json.dumps(_with_units(config, 10**12)).encode()},
    }
    outcomes = []
    for name, members in cases.items():
        path = _archive(tmp_path / f"{name}.keras", members)
        outcomes += run_all(worker, [Case("load_model", str(path), name)])
    bomb = _archive(tmp_path / "bomb.keras", {**base, "assets/zeros.bin": bytes(64 << 20)}, zipfile.ZIP_DEFLATED)
    outcomes += run_all(worker, [Case("load_model", str(bomb), "zip_bomb")])
    liar = _lie_about_size(_archive(tmp_path / "liar.keras", base), "model.weights.h5", 10)
    outcomes += run_all(worker, [Case("load_model", str(liar), "size_header_lies")])
    huge = _lie_about_size(_archive(tmp_path / "huge.keras", base), "config.json", 0xFFFFFFFF)
    outcomes += run_all(worker, [Case("load_model", str(huge), "huge_declared_config")])
    assert_contract(outcomes, expect_error=True)
    messages = {o.case.label: o.message for o in outcomes}
    assert all("zip-slip" in messages[n] for n in ("dotdot", "absolute", "drive", "backslash", "nested_dotdot"))
    assert "zip bomb" in messages["zip_bomb"]
    assert not (tmp_path.parent / "evil.txt").exists()


def _with_units(config, units):
    config = json.loads(json.dumps(config))
    layers = config["config"]["layers"]
    next(e for e in layers if e["class_name"] == "Dense")["config"]["units"] = units
    return config


def test_duplicate_members_keep_the_contract(worker, tmp_path):
    base = _members()
    path = tmp_path / "dup.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in base.items():
            z.writestr(name, data)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
            z.writestr("config.json", b"{}")
    assert_contract(run_all(worker, [Case("load_model", str(path), "duplicate_member")]))
