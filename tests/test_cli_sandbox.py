"""The `kconvert` command runs each command in a child process (kconvert/sandbox.py): a native crash, a hang or
an allocation over `--max-memory` in a reader becomes one error line and exit 1; everything else is unchanged.

Faults are injected with a `sitecustomize.py` put first on PYTHONPATH: it replaces `h5py.File` (the door to
libhdf5) with a subclass that segfaults, hangs or allocates when it opens a file named `victim*`."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_close

KCONVERT = os.path.join(os.path.dirname(sys.executable), "kconvert")
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
SEQ_MLP = os.path.join(FIXTURES, "keras2", "seq_mlp.h5")
LENET = [os.path.join(FIXTURES, "caffe", f"lenet.{ext}") for ext in ("prototxt", "caffemodel")]

SITECUSTOMIZE = '''
import os

FAULT = os.environ.get("KCONVERT_TEST_FAULT")
STATE = os.environ.get("KCONVERT_TEST_STATE", "")


def _note(name, text):
    with open(os.path.join(STATE, name), "w") as f:
        f.write(str(text))


def _fault():
    import signal, subprocess, sys, time

    _note("fault_pid", os.getpid())
    _note("fault_sandboxed", os.environ.get("KCONVERT_SANDBOXED", ""))
    if FAULT == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif FAULT in ("hang", "hang_signal_elsewhere"):
        _note("grandchild_pid", subprocess.Popen(["sleep", "60"]).pid)  # the reader's own helper process
        time.sleep(60)
    elif FAULT == "alloc":  # a header claiming 1 GiB: fine without a limit, over a 512M one
        import numpy as np

        np.empty(2 ** 27, dtype=np.float64)


if FAULT == "hang_signal_elsewhere":  # Ctrl-C handed by the kernel to another thread of the parent, not its main
    import signal
    import threading
    import time

    def _interrupt_from_here():
        while not os.path.exists(os.path.join(STATE, "grandchild_pid")):
            time.sleep(0.01)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    threading.Thread(target=_interrupt_from_here, daemon=True).start()

if FAULT in ("segv", "hang", "hang_signal_elsewhere", "alloc"):
    import h5py

    class File(h5py.File):
        def __init__(self, name, *args, **kwargs):
            if isinstance(name, (str, os.PathLike)) and os.path.basename(os.fspath(name)).startswith("victim"):
                _fault()
            super().__init__(name, *args, **kwargs)

    h5py.File = File
elif FAULT == "parent_modules":  # what the parent holds when it forks: no native reader library yet
    import sys

    import kconvert.sandbox

    _run = kconvert.sandbox.run

    def run(*args, **kwargs):
        _note("parent_modules", " ".join(sorted(m for m in ("h5py", "onnx", "onnxruntime", "google.protobuf", "cv2",
                                                           "yaml", "tf_keras", "keras") if m in sys.modules)))
        return _run(*args, **kwargs)

    kconvert.sandbox.run = run
elif FAULT == "slow_commit":  # an output about to be published: wait (the timeout kills the child here)
    _replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if ".kconvert-tmp-" in os.fspath(src):
            import time

            _note("publishing", dst)
            time.sleep(60)
        return _replace(src, dst, *args, **kwargs)

    os.replace = replace
'''


@pytest.fixture
def cli(tmp_path):
    """Run the real `kconvert` entry point with a fault injected; returns (process, stdout, stderr, seconds)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def run(*args, fault=None, after_fault=None, env=None, wait_file="grandchild_pid"):
        extra, env = env or {}, {k: v for k, v in os.environ.items() if not k.startswith("KCONVERT_")}
        env.update(extra, PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   KCONVERT_TEST_STATE=str(tmp_path))
        if fault:
            env["KCONVERT_TEST_FAULT"] = fault
        start = time.monotonic()
        # a pytest started in the background of a non-interactive shell ignores SIGINT, and kconvert would inherit
        # that: Ctrl-C as a terminal delivers it is what these tests are about
        proc = subprocess.Popen([KCONVERT, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if after_fault:
            _wait_for(tmp_path / wait_file)
            if callable(after_fault):
                after_fault(proc)
            else:
                proc.send_signal(after_fault)
        out, err = proc.communicate(timeout=60)
        return proc, out, err, time.monotonic() - start

    return run


def _wait_for(path, seconds=30):
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    time.sleep(0.05)
    return path.read_text()


def _state(pid: int) -> str:
    """The process state letter (R, S, T, Z, ...); X when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "X"


def _alive(pid: int) -> bool:
    return _state(pid) not in ("Z", "X")  # a zombie is dead (init reaps it)


def _until(predicate, seconds=10) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.h5"
    shutil.copy(SEQ_MLP, path)
    return path


def test_a_reader_crash_is_one_line_naming_file_and_signal(cli, victim, tmp_path):
    proc, out, err, _ = cli("inspect", victim, fault="segv")
    assert proc.returncode == 1
    line = _one_line(err)
    assert line.startswith("kconvert: error: reading ") and str(victim) in line
    assert "crashed (signal SIGSEGV)" in line and "corrupt or hostile" in line
    # the fault ran in a child process that knew it was sandboxed
    assert int((tmp_path / "fault_pid").read_text()) != proc.pid
    assert (tmp_path / "fault_sandboxed").read_text() == "1"


def test_without_sandbox_the_same_crash_kills_the_command(cli, victim, tmp_path):
    proc, _, err, _ = cli("inspect", victim, "--no-sandbox", fault="segv")
    assert proc.returncode == -signal.SIGSEGV
    assert int((tmp_path / "fault_pid").read_text()) == proc.pid
    assert "kconvert: error" not in err


def test_a_hang_is_stopped_by_the_timeout_with_its_process_group(cli, victim, tmp_path):
    proc, _, err, seconds = cli("--timeout", "2", "inspect", victim, fault="hang")
    assert proc.returncode == 1 and seconds < 5
    line = _one_line(err)
    assert str(victim) in line and "did not finish within 2 s" in line
    child, grandchild = (int((tmp_path / name).read_text()) for name in ("fault_pid", "grandchild_pid"))
    assert not _alive(child) and not _alive(grandchild)


def test_a_child_killed_while_writing_leaves_the_previous_output(cli, tmp_path):
    from kconvert.formats.atomic import stale_temporaries

    out = tmp_path / "lenet.h5"
    out.write_bytes(b"the previous output")
    proc, _, err, _ = cli("caffe2keras", *LENET, "-o", out, fault="slow_commit", env={"KCONVERT_TIMEOUT": "5.5"})
    assert proc.returncode == 1 and "did not finish within 5.5 s" in _one_line(err)
    assert (tmp_path / "publishing").read_text() == str(out)  # killed with the new file written, not yet renamed
    assert len(stale_temporaries(out)) == 1
    assert out.read_bytes() == b"the previous output"


def test_sigterm_while_writing_removes_the_temporary(cli, tmp_path):
    """A terminated conversion (SIGTERM to `kconvert`, passed on to the child) ends like Ctrl-C: the output being
    published is dropped with its temporary, the previous output stays."""
    from kconvert.formats.atomic import stale_temporaries

    out = tmp_path / "lenet.h5"
    out.write_bytes(b"the previous output")

    def terminate_when_publishing(proc):
        _wait_for(tmp_path / "publishing")
        proc.send_signal(signal.SIGTERM)

    proc, _, err, _ = cli("caffe2keras", *LENET, "-o", out, fault="slow_commit", after_fault=terminate_when_publishing,
                          wait_file="publishing")
    assert proc.returncode == 128 + signal.SIGTERM
    assert stale_temporaries(out) == [] and out.read_bytes() == b"the previous output"


def test_ctrl_c_reaches_the_child_and_exits_130(cli, victim, tmp_path):
    proc, _, err, seconds = cli("inspect", victim, fault="hang", after_fault=signal.SIGINT)
    assert proc.returncode == 130 and seconds < 30
    assert _one_line(err) == "kconvert: interrupted"
    child, grandchild = (int((tmp_path / name).read_text()) for name in ("fault_pid", "grandchild_pid"))
    assert not _alive(child) and not _alive(grandchild)


def test_ctrl_c_landing_on_another_thread_of_the_parent_still_reaches_the_child(cli, victim, tmp_path):
    """The kernel may hand a process's signal to any thread that does not block it (numpy's BLAS workers live in
    the parent); Python runs the handler on the main thread, so the parent's wait must wake up to run it."""
    proc, _, err, seconds = cli("inspect", victim, fault="hang_signal_elsewhere")
    assert proc.returncode == 130 and seconds < 30
    assert _one_line(err) == "kconvert: interrupted"
    child, grandchild = (int((tmp_path / name).read_text()) for name in ("fault_pid", "grandchild_pid"))
    assert not _alive(child) and not _alive(grandchild)


def test_ctrl_z_stops_the_child_too_and_resumes_it(cli, victim, tmp_path):
    def stop_and_resume(proc):
        child = int(_wait_for(tmp_path / "fault_pid"))
        proc.send_signal(signal.SIGTSTP)
        assert _until(lambda: _state(proc.pid) == "T" and _state(child) == "T")
        proc.send_signal(signal.SIGCONT)
        assert _until(lambda: _state(proc.pid) != "T" and _state(child) not in "TX")
        proc.send_signal(signal.SIGINT)

    proc, _, err, _ = cli("inspect", victim, fault="hang", after_fault=stop_and_resume)
    assert proc.returncode == 130 and _one_line(err) == "kconvert: interrupted"


def test_an_allocation_over_max_memory_is_one_line(cli, victim):
    proc, out, err, _ = cli("inspect", victim, fault="alloc")  # the same allocation without a limit works
    assert proc.returncode == 0 and "dense_3/kernel:0" in out and err == ""
    proc, out, err, _ = cli("inspect", victim, "--max-memory", "512M", fault="alloc")
    assert proc.returncode == 1
    line = _one_line(err)
    assert str(victim) in line and "memory limit of 512M" in line


def test_commands_behave_the_same_with_and_without_sandbox(cli, tfk, tmp_path):
    runs = {}
    for mode in ("sandbox", "no-sandbox"):
        flags = ["--no-sandbox"] if mode == "no-sandbox" else []
        inspect = cli(*flags, "inspect", SEQ_MLP)
        out = tmp_path / f"lenet_{mode}.h5"
        convert = cli(*flags, "caffe2keras", *LENET, "-o", out)
        runs[mode] = [(p.returncode, o.replace(str(out), "OUT"), e) for p, o, e, _ in (inspect, convert)]
    assert runs["sandbox"] == runs["no-sandbox"]
    (code, inspect_out, _), (convert_code, convert_out, _) = runs["sandbox"]
    assert code == 0 and "dense_3/kernel:0" in inspect_out
    assert convert_code == 0 and convert_out.startswith("wrote OUT")
    io = np.load(os.path.join(FIXTURES, "caffe", "lenet_io.npz"))
    x = io["input_0"].transpose(0, 2, 3, 1)
    for mode in ("sandbox", "no-sandbox"):  # what the child wrote is what real Keras reads and Caffe computes
        model = tfk.models.load_model(tmp_path / f"lenet_{mode}.h5", compile=False)
        assert_close(model.predict(x, verbose=0), io["layer:prob"])


def test_exit_codes_pass_through(cli, tmp_path):
    io = np.load(os.path.join(FIXTURES, "keras2", "seq_mlp_io.npz"))
    np.savez(tmp_path / "wrong.npz", output_0=io["output_0"] + 0.5)
    io_path = os.path.join(FIXTURES, "keras2", "seq_mlp_io.npz")
    args = ["predict", SEQ_MLP, "--input", io_path, "--runtime", "numpy", "--expect"]
    proc, out, _, _ = cli(*args, io_path)
    assert proc.returncode == 0 and "(ok)" in out
    proc, out, _, _ = cli(*args, tmp_path / "wrong.npz")
    assert proc.returncode == 3 and "OVER TOLERANCE" in out
    assert cli("--timeout", "-1", "inspect", SEQ_MLP)[0].returncode == 2  # usage errors: the parent's argparse


def test_debug_shows_the_childs_traceback(cli, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(open(SEQ_MLP, "rb").read()[:3000])
    proc, _, err, _ = cli("inspect", bad)
    assert proc.returncode == 1 and str(bad) in _one_line(err)
    proc, _, err, _ = cli("inspect", bad, "--debug")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in err and "kconvert.errors." in err
    assert "in _child" in err  # raised in the sandbox's child process


def test_the_parent_holds_no_native_reader_library(cli, tmp_path):
    proc, out, _, _ = cli("inspect", SEQ_MLP, fault="parent_modules")
    assert proc.returncode == 0 and "dense_3/kernel:0" in out
    assert (tmp_path / "parent_modules").read_text() == ""


def test_a_memory_error_in_process_is_one_line_too(monkeypatch, capsys):
    import kconvert.api
    from kconvert.cli import main

    def reader(path, **kwargs):
        raise MemoryError

    monkeypatch.setattr(kconvert.api, "inspect_file", reader)
    assert main(["inspect", SEQ_MLP]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"kconvert: error: reading {SEQ_MLP}: ") and "memory" in line
