"""Every writer kconvert has is atomic: a failed or killed conversion leaves an existing output byte-identical.

(a) Injected write errors, in process: the disk "fills up" mid-write (RLIMIT_FSIZE makes the kernel's write fail with
EFBIG at a byte offset, inside h5py, zipfile, onnx and our own writers alike), or the final fsync fails (ENOSPC);
the old output must be untouched, no temporary may be left, the error must reach the caller.
(b) Killed mid-write: the real `kconvert` CLI (and the ONNX external-data writer) runs in a child Python that the
kernel kills at byte N of its output (RLIMIT_FSIZE with SIGXFSZ's default action), or that SIGKILLs itself at its
first fsync or at the rename that publishes the output. The old output must be byte-identical and still load; a
leftover temporary carries the recognisable name `.<name>.kconvert-tmp-*`, a later run does not remove it (it could
belong to a running writer) and `remove_stale_temporaries` does.
"""

import contextlib
import errno
import os
import resource
import signal
import stat
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_close

from kconvert.cli import main, write_keras
from kconvert.convert import caffe_to_keras, keras_to_caffe, keras_to_onnx
from kconvert.errors import KConvertError
from kconvert.formats import onnx_stream
from kconvert.formats.atomic import TEMP_MARK, remove_stale_temporaries, stale_temporaries
from kconvert.models import load_model
from kconvert.plot import plot_model

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "caffe")
TINY = (os.path.join(FIXTURES, "tiny.prototxt"), os.path.join(FIXTURES, "tiny.caffemodel"))
LENET = (os.path.join(FIXTURES, "lenet.prototxt"), os.path.join(FIXTURES, "lenet.caffemodel"))


def _tiny(scale: float):
    """The tiny Caffe fixture (13x11x3 input, conv/BN/PReLU/pool/dense, two outputs) with its weights scaled."""
    model = caffe_to_keras(*TINY)
    model.set_weights([w * np.float32(scale) if w.ndim > 1 else w for w in model.get_weights()])
    return model


class CliFailed(Exception):
    pass


def _cli(*args: str) -> None:
    with contextlib.redirect_stdout(None):
        code = main(list(args))
    if code != 0:  # the CLI reports the error on stderr and exits non-zero
        raise CliFailed(f"exit {code}")


# each writer: (output suffixes, in the order they are written; write(model, paths, variant)). variant 0 writes the
# "old" output, 1 the "new" one; the two differ in content.
WRITERS = {
    "h5": ((".h5",), lambda m, p, v: m.save(p[0])),
    "h5_keras3": ((".h5",), lambda m, p, v: m.save(p[0], keras_version="3")),
    "weights_h5": ((".h5",), lambda m, p, v: m.save_weights(p[0])),
    "weights_keras3": ((".weights.h5",), lambda m, p, v: m.save_weights(p[0])),
    "keras": ((".keras",), lambda m, p, v: m.save(p[0])),
    "json": ((".json",), lambda m, p, v: write_keras(m, p[0], keras_version=str(2 + v))),
    "yaml": ((".yaml",), lambda m, p, v: _mark_old(write_keras(m, p[0]), p[0], v)),
    "onnx": ((".onnx",), lambda m, p, v: keras_to_onnx(m, p[0])),
    "onnx_stream": ((".onnx",), lambda m, p, v: keras_to_onnx(m, p[0], stream=True)),
    "onnx_external": ((".onnx.data", ".onnx"), lambda m, p, v: keras_to_onnx(m, p[1], external_data=True)),
    "onnx_stream_external": ((".onnx.data", ".onnx"),
                             lambda m, p, v: keras_to_onnx(m, p[1], stream=True, external_data=True)),
    "caffe": ((".caffemodel", ".prototxt"), lambda m, p, v: keras_to_caffe(m, p[1], p[0])),
    "prototxt": ((".prototxt",), lambda m, p, v: _mark_old(keras_to_caffe(m, p[0]), p[0], v)),
    "predict_npz": ((".npz",), lambda m, p, v: _cli("predict", *TINY[:1], "--weights", TINY[1], "--seed", str(v),
                                                      "--runtime", "numpy", "-o", p[0])),
    "plot_dot": ((".dot",), lambda m, p, v: plot_model(m, p[0], show_shapes=bool(v))),
}


def _mark_old(_, path: str, variant: int) -> None:
    """The old text output gets a comment line (both variants have the same architecture, the text no weights)."""
    if variant == 0:
        with open(path, "a", encoding="utf-8") as f:
            f.write("# old\n")


@pytest.fixture(scope="module")
def models():
    return _tiny(1.0), _tiny(0.5)


@pytest.fixture(autouse=True)
def _stream_everything(monkeypatch):
    monkeypatch.setattr(onnx_stream, "STREAM_MIN_BYTES", 0)  # the streamed writers stream every initializer


def _write(name: str, model, directory, variant: int) -> list[str]:
    suffixes, write = WRITERS[name]
    paths = [os.path.join(directory, f"out{s}") for s in suffixes]
    with contextlib.redirect_stdout(None):
        write(model, paths, variant)
    return paths


def _snapshot(directory) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


@contextlib.contextmanager
def _disk_full_at(limit: int):
    """Writes past byte `limit` of any file fail with EFBIG (the kernel's file-size limit, SIGXFSZ ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _old_and_new(name, models, tmp_path):
    """(target directory holding the old output, its snapshot, sizes of the new output's files, new bytes)."""
    reference = tmp_path / "reference"
    reference.mkdir()
    _write(name, models[1], reference, 1)
    target = tmp_path / "target"
    target.mkdir()
    _write(name, models[0], target, 0)
    old, new = _snapshot(target), _snapshot(reference)
    assert set(old) == set(new)
    assert old != new, "the old and the new output must differ, or the test could not tell them apart"
    return target, old, new


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_disk_full_mid_write_keeps_old_output(name, models, tmp_path):
    target, old, new = _old_and_new(name, models, tmp_path)
    limit = max(1, min(len(b) for b in new.values()) // 2)
    with pytest.raises((OSError, KConvertError, CliFailed)) as info, _disk_full_at(limit):
        _write(name, models[1], target, 1)
    assert _snapshot(target) == old, f"{name}: the old output changed (error was {info.value!r})"
    # and with room on the disk the same call writes the new output
    _write(name, models[1], target, 1)
    written = _snapshot(target)
    assert set(written) == set(new)
    if name not in ("h5", "h5_keras3", "weights_h5", "weights_keras3", "keras"):  # HDF5 object times, date_saved
        assert written == new


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_failed_final_fsync_keeps_old_output(name, models, tmp_path, monkeypatch):
    target, old, _ = _old_and_new(name, models, tmp_path)
    calls = []
    real_fsync = os.fsync

    def counting_fsync(fd):  # the syncs of files (a directory's sync after a rename is best effort)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    _write(name, models[1], tmp_path / "reference", 1)  # again, counting its syncs
    n_syncs = len(calls)
    assert n_syncs >= len(WRITERS[name][0]), f"{name} does not fsync every file it writes"
    calls.clear()

    def failing_fsync(fd):  # every file is written; the last sync before the renames fails
        counting_fsync(fd)
        if len(calls) == n_syncs:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises((OSError, KConvertError, CliFailed)):
        _write(name, models[1], target, 1)
    assert _snapshot(target) == old


def test_each_file_of_a_pair_failing_keeps_the_old_pair(models, tmp_path, monkeypatch):
    """keras2caffe: the prototxt failing after the caffemodel was written leaves the old caffemodel too."""
    target, old, _ = _old_and_new("caffe", models, tmp_path)

    def broken(net, path):
        with open(path, "w") as f:
            f.write("name: ")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("kconvert.formats.caffe.write_prototxt", broken)
    with pytest.raises(OSError):
        _write("caffe", models[1], target, 1)
    assert _snapshot(target) == old


@pytest.mark.parametrize("name", ["onnx_external", "onnx_stream_external", "caffe"])
def test_two_file_outputs_rename_the_referenced_file_last(name, models, tmp_path, monkeypatch):
    """Both files are synced before the first rename; the file that refers to the other (the ONNX model, the
    prototxt) is renamed last, so a first conversion never shows it without its partner."""
    events = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("sync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda src, dst: (events.append(os.path.basename(dst)), real_replace(src, dst))[1])
    paths = _write(name, models[1], tmp_path, 1)
    published = [e for e in events if e != "sync" and TEMP_MARK not in e]
    assert published == [os.path.basename(p) for p in paths]  # the suffix order of WRITERS: referenced file first
    first = events.index(published[0])
    assert events[:first].count("sync") >= 2  # both files synced before the first rename


# ---------------------------------------------------------------------------------------------- killed mid-write

CHILD = r"""
import os, resource, signal, sys
mode, limit = sys.argv[1], int(sys.argv[2])
mark = ".kconvert-tmp-"
if mode == "bytes":  # the kernel kills the process (SIGXFSZ) when a write reaches byte `limit` of a file
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
elif mode == "fsync":  # at the sync of an output's temporary: everything written, nothing renamed
    real_fsync = os.fsync
    def fsync(fd):
        if "/.m." in os.readlink(f"/proc/self/fd/{fd}"):  # a temporary of m.*, or a file in one
            os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(fd)
    os.fsync = fsync
elif mode == "rename":  # at the first rename that publishes an output
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        if mark not in os.path.basename(dst):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
if sys.argv[3] == "external":
    from kconvert.convert import keras_to_onnx
    keras_to_onnx(sys.argv[4], sys.argv[5], external_data=True)
    sys.exit(0)
from kconvert.cli import main
sys.exit(main(sys.argv[3:]))
"""

# name: (CLI args with {src} and {out}, output files, old source, new source)
CONVERSIONS = {
    "caffe2keras_h5": (["caffe2keras", "{src}.prototxt", "{src}.caffemodel", "-o", "{out}/m.h5"], ["m.h5"]),
    "caffe2keras_keras": (["caffe2keras", "{src}.prototxt", "{src}.caffemodel", "-o", "{out}/m.keras"], ["m.keras"]),
    "keras2onnx": (["keras2onnx", "{src}.h5", "-o", "{out}/m.onnx"], ["m.onnx"]),
    "keras2caffe": (["keras2caffe", "{src}.h5", "-o", "{out}/m.prototxt", "--weights", "{out}/m.caffemodel"],
                    ["m.prototxt", "m.caffemodel"]),
    "onnx_external_data": (["external", "{src}.h5", "{out}/m.onnx"], ["m.onnx", "m.onnx.data"]),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """lenet and tiny, as Caffe files and as .h5: the old outputs come from lenet, the new ones from tiny."""
    d = tmp_path_factory.mktemp("sources")
    for name, files in (("lenet", LENET), ("tiny", TINY)):
        for src in files:
            os.symlink(os.path.abspath(src), d / os.path.basename(src))
        caffe_to_keras(*files).save(str(d / f"{name}.h5"))
    return d


def _run_child(args: list[str], mode: str, limit: int, tmpdir) -> tuple[int, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(tmpdir), CUDA_VISIBLE_DEVICES="-1")
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(limit), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    return proc.returncode, proc.stderr


def _run_here(args: list[str]) -> None:
    """What the child runs, in this process."""
    if args[0] == "external":
        keras_to_onnx(args[1], args[2], external_data=True)
    else:
        _cli(*args)


def _check_loads(directory, files: list[str], expected) -> None:
    """The output in `directory` is complete and computes what `expected` (the source model) computes."""
    x = [np.random.default_rng(5).standard_normal((2, *v.shape[1:])).astype(np.float32) for v in expected.inputs]
    x = x if len(x) > 1 else x[0]
    ref = expected.predict(x, runtime="numpy")
    ref = ref if isinstance(ref, list) else [ref]
    first = os.path.join(directory, files[0])
    if first.endswith(".onnx"):
        sess = ort.InferenceSession(first, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})
    elif first.endswith(".prototxt"):
        from kconvert.api import load_any

        got = load_any(first, weights=os.path.join(directory, files[1])).predict(x, runtime="numpy")
    else:
        got = load_model(first).predict(x, runtime="numpy")
    got = got if isinstance(got, list) else [got]
    for g, r in zip(sorted(got, key=np.size), sorted(ref, key=np.size)):
        assert_close(g, r, what=f"{files[0]}")


@pytest.mark.parametrize("conversion", sorted(CONVERSIONS))
def test_killed_conversion_keeps_old_output(conversion, sources, tmp_path):
    template, files = CONVERSIONS[conversion]
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def args(src: str, out) -> list[str]:
        return [a.format(src=sources / src, out=out) for a in template]

    reference = tmp_path / "reference"
    reference.mkdir()
    _run_here(args("tiny", reference))
    new = _snapshot(reference)
    target = tmp_path / "target"
    target.mkdir()
    _run_here(args("lenet", target))
    old = _snapshot(target)
    assert sorted(old) == sorted(new) == sorted(files) and all(old[f] != new[f] for f in files)

    limit = min(len(b) for b in new.values()) // 2
    leftovers = set()
    for mode, signals in (("bytes", (signal.SIGXFSZ,)), ("fsync", (signal.SIGKILL,)), ("rename", (signal.SIGKILL,))):
        code, err = _run_child(args("tiny", target), mode, limit, tmpdir=scratch)
        assert -code in signals, f"{mode}: the child was not killed mid-write (exit {code}): {err[-2000:]}"
        now = _snapshot_names(target)
        assert {f: _read(target / f) for f in files} == old, f"{mode}: the old output changed"
        extra = now - set(files)
        assert all(n.startswith(".m.") and TEMP_MARK in n for n in extra), extra
        assert extra == {os.path.basename(t) for f in files for t in stale_temporaries(target / f)}
        if mode == "fsync":  # killed with every temporary written: they are left, under their recognisable names
            assert extra
        leftovers |= extra
    _check_loads(target, files, load_model(str(sources / "lenet.h5")))

    # a later run publishes the new output and leaves others' temporaries alone; remove_stale_temporaries clears them
    _run_here(args("tiny", target))
    assert _snapshot_names(target) - set(files) == leftovers
    if not conversion.startswith("caffe2keras"):  # HDF5 object times and .keras's date_saved change per run
        assert {f: _read(target / f) for f in files} == new
    _check_loads(target, files, load_model(str(sources / "tiny.h5")))
    removed = {os.path.basename(p) for f in files for p in remove_stale_temporaries(target / f)}
    assert removed == leftovers
    assert _snapshot_names(target) == set(files)


def _snapshot_names(directory) -> set[str]:
    return set(os.listdir(directory))


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()
