"""Run a CLI command in a child process, so that a native library crashing or hanging on hostile bytes
(libhdf5, protobuf, onnxruntime) becomes one error line instead of a dead or stuck `kconvert`.

The `kconvert` command forks after parsing its arguments: the child runs the command (the parent has already
imported kconvert, so the child starts at no cost and prints straight to the inherited stdout/stderr), and
the parent waits for it:

- the child's exit code passes through;
- a child killed by a signal (SIGSEGV, SIGBUS, SIGABRT, SIGKILL from the out-of-memory killer) exits 1 with one
  line naming the input files and the signal;
- a child still running after `--timeout` seconds is killed with its process group (anything it started):
  one line, exit 1;
- `--max-memory SIZE` caps the child's address space (RLIMIT_AS): an allocation over it is a MemoryError, one
  line, exit 1 (an allocation in native code that cannot cope ends as a crash, also one line);
- Ctrl-C (SIGINT), SIGTERM and SIGHUP reach the child (a second Ctrl-C kills it); the parent then exits
  128 + the signal number (130 for Ctrl-C). Ctrl-Z stops both; the time stopped does not count as running.

Outputs are written atomically (kconvert.formats.atomic), so a child killed midway leaves any previous output
intact. Only a fork start is supported (Linux, macOS); elsewhere the command runs in-process.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence

WAKE_S = 0.1  # the longest the parent waits for its child without running pending signal handlers
SANDBOX_ENV = "KCONVERT_SANDBOXED"  # set in the child: a `kconvert` it runs does not fork again
TIMEOUT_ENV = "KCONVERT_TIMEOUT"
MAX_MEMORY_ENV = "KCONVERT_MAX_MEMORY"
DEFAULT_TIMEOUT = 3600.0
EXIT_ERROR = 1

# A crash: the process did something the kernel or the C runtime stopped (a bug tripped by the bytes read).
CRASH_SIGNALS = frozenset(getattr(signal, n) for n in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE",
                                                          "SIGSYS", "SIGTRAP") if hasattr(signal, n))
FORWARDED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

# Argument names (argparse dests) holding files a command reads; the ones a command writes instead are below.
INPUT_ARGS = frozenset({"file", "input", "prototxt", "model", "model_a", "model_b", "caffemodel", "weights",
                        "model_weights", "weights_a", "weights_b", "mean", "check_input", "expect"})
WRITTEN_ARGS = {"keras2caffe": frozenset({"weights"})}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)


def available() -> bool:
    """Whether commands can run isolated here: a fork start (POSIX), from the main thread (signal handlers)."""
    import threading

    return hasattr(os, "fork") and hasattr(os, "killpg") and threading.current_thread() is threading.main_thread()


def wanted(no_sandbox: bool) -> bool:
    """Isolate this command: not asked off, not already inside a sandbox, and possible here."""
    return not no_sandbox and not os.environ.get(SANDBOX_ENV) and available()


def parse_seconds(text: str) -> float:
    """`--timeout` / KCONVERT_TIMEOUT: seconds >= 0 (0: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"expected seconds >= 0, got {text!r}")
    return value


def parse_size(text: str) -> int:
    """`--max-memory` / KCONVERT_MAX_MEMORY: bytes, or a number with K, M, G or T (powers of 1024); 0: no limit."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"expected a size such as 512M or 8G, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


def input_files(args) -> list[str]:
    """The files an argparse Namespace of the CLI reads, in command-line definition order."""
    skip = WRITTEN_ARGS.get(getattr(args, "command", None), frozenset())
    return [v for k, v in vars(args).items() if k in INPUT_ARGS and k not in skip and isinstance(v, str)]


def describe(files: Sequence[str]) -> str:
    return "reading " + ", ".join(files) if files else "running the command"


def memory_error_line(files: Sequence[str]) -> str:
    """The one error line of a MemoryError: over the address-space limit (--max-memory, `ulimit -v`) or the
    machine's memory."""
    limit = _memory_limit()
    what = f"over the memory limit of {_size_text(limit)} (--max-memory)" if limit else "out of memory"
    return f"kconvert: error: {describe(files)}: {what}; the file is too large or claims sizes it does not hold"


def _memory_limit() -> int:
    """The soft RLIMIT_AS of this process in bytes (0: none)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        return 0 if soft == resource.RLIM_INFINITY else soft
    except (ImportError, AttributeError, OSError):
        return 0


def run(command: Callable[[], int], files: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
        max_memory: int = 0) -> int:
    """Run `command` (returning an exit code) in a forked child; return the exit code the CLI should end with."""
    _flush()  # nothing buffered may be printed twice
    watch = _Supervisor()
    handled = FORWARDED_SIGNALS + ((signal.SIGTSTP,) if hasattr(signal, "SIGTSTP") else ())
    # Signals wait (blocked) across the fork: the child gets the usual handlers back, the parent forwards them.
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    previous = {s: signal.signal(s, watch.suspend if s == getattr(signal, "SIGTSTP", None) else watch.forward)
                for s in handled}
    try:
        try:
            watch.child = os.fork()
        except OSError as e:
            print(f"kconvert: error: cannot start the child process that reads the files ({e.strerror or e}); "
                  "--no-sandbox runs the command in this process", file=sys.stderr)
            return EXIT_ERROR
        if watch.child == 0:
            _child(command, previous, handled, max_memory)  # never returns
        try:
            os.setpgid(watch.child, watch.child)  # the child does it too: whichever runs first
        except OSError:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        status = _wait(watch, timeout)
        if status is None:
            _kill_group(watch.child, signal.SIGKILL)
            os.waitpid(watch.child, 0)
            print(f"kconvert: error: {describe(files)}: did not finish within {timeout:g} s (--timeout)",
                  file=sys.stderr)
            return EXIT_ERROR
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if watch.received:
        return 128 + watch.received[0]
    if os.WIFSIGNALED(status):
        print(_signal_line(files, os.WTERMSIG(status), max_memory), file=sys.stderr)
        return EXIT_ERROR
    return os.waitstatus_to_exitcode(status)


class _Supervisor:
    """The parent's view of the child: its pid (= its process group), signals passed on, time spent stopped."""

    def __init__(self):
        self.child = 0
        self.received: list[int] = []
        self.stopped = 0.0  # seconds stopped by Ctrl-Z: not counted against --timeout

    def forward(self, signum, frame) -> None:  # a second Ctrl-C (or SIGTERM) kills outright
        self.received.append(signum)
        _kill_group(self.child, signal.SIGKILL if self.received.count(signum) > 1 else signum)

    def suspend(self, signum, frame) -> None:  # Ctrl-Z: stop the child too, and resume it with the parent
        start = time.monotonic()
        _kill_group(self.child, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)
        _kill_group(self.child, signal.SIGCONT)
        self.stopped += time.monotonic() - start


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _child(command: Callable[[], int], handlers: dict, blocked: tuple, max_memory: int) -> None:
    """The child: run the command and exit with its code (never return into the caller's stack)."""
    code = EXIT_ERROR
    try:
        for s, handler in handlers.items():
            # SIGTERM/SIGHUP end the command as Ctrl-C does (an exception): outputs being written remove their
            # temporaries instead of leaving them behind, as the default handler's instant death would
            signal.signal(s, _interrupt if s != signal.SIGINT and handler == signal.SIG_DFL
                          and s in FORWARDED_SIGNALS else handler)
        os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        _die_with_parent()
        os.environ[SANDBOX_ENV] = "1"
        if max_memory:
            _limit_memory(max_memory)
        code = command()
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else EXIT_ERROR
    except BaseException:  # what --debug re-raises: the traceback, as the interpreter prints it
        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            _flush()
        finally:
            os._exit(code)


def _wait(watch: _Supervisor, timeout: float):
    """The child's wait status, or None when it still runs after `timeout` seconds (0: wait for ever)."""
    start = time.monotonic()
    pidfd = None
    if hasattr(os, "pidfd_open"):  # Linux: wake up the moment the child ends
        try:
            pidfd = os.pidfd_open(watch.child)
        except OSError:  # an old kernel
            pass
    delay = 0.001
    try:
        while True:
            done, status = os.waitpid(watch.child, os.WNOHANG)
            if done:
                return status
            left = start + timeout + watch.stopped - time.monotonic() if timeout else None
            if left is not None and left <= 0:
                return None
            if pidfd is not None:
                import select

                # bounded: a signal the kernel hands to another thread (numpy's BLAS workers exist here) does not
                # interrupt this wait, and Python runs the handler that forwards it only when the wait returns
                select.select([pidfd], [], [], WAKE_S if left is None else min(left, WAKE_S))
            else:
                time.sleep(delay if left is None else min(delay, left))
                delay = min(2 * delay, 0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed or broken stream
            pass


def _kill_group(pid: int, signum: int) -> None:
    if pid <= 0:
        return
    try:
        os.killpg(pid, signum)
    except OSError:  # not yet its own group, or already gone
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the parent dies (killed outright, it cannot forward anything)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(EXIT_ERROR)
    except (OSError, AttributeError):
        pass


def _limit_memory(max_memory: int) -> None:
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = max_memory if hard == resource.RLIM_INFINITY else min(max_memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, AttributeError, ValueError, OSError) as e:
        print(f"kconvert: warning: --max-memory is not available here ({e}); running without it", file=sys.stderr)


def _signal_line(files: Sequence[str], signum: int, max_memory: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = str(signum)
    if signum in CRASH_SIGNALS:
        what = f"the reader crashed (signal {name}); the file is probably corrupt or hostile"
    elif signum == getattr(signal, "SIGKILL", None):
        what = (f"the reader was killed (signal {name}), perhaps by the system when memory ran out"
                + ("" if max_memory else "; --max-memory turns that into an error"))
    else:
        what = f"the reader was killed (signal {name})"
    return f"kconvert: error: {describe(files)}: {what}"


def _size_text(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        scale = 1024 ** " KMGT".index(unit)
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n} bytes"
