"""Child processes: the one way pyconpro starts and stops them (issue 9).

Owns: spawning a child in its own process group with the Linux parent-death signal, waiting
(with a deadline) for the ready line it prints first on stdout, and the graceful stop:
SIGTERM, wait, SIGKILL, reap. The supervisor, the in-process API, the demo, the simulator's
test helper, the benchmarks and the tests all start their children here.

    child = spawn([sys.executable, "-m", "pyconpro.simulator", ...],
                  ready=regex_ready(r"READY tcp=(?P<addr>[\\d.]+):(?P<tcp>\\d+)"),
                  stderr=log_path)
    child.ready["tcp"]          # what the ready line said
    child.stop(5.0)             # SIGTERM, up to 5 s, then SIGKILL; returns the exit status

    with spawn(argv, ready=json_ready) as child:   # stopped on the way out
        ...

    child = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(30)   # wait for the exit; what it printed, as text

    child = spawn_with_log(argv, log_prefix="pyconpro-sim-", ready=..., env=source_env(root))
    child.stderr_text()         # its log so far (a temporary file the child owns)
    child.close()               # stop it and delete the log

Ready lines kept as the children print them today: the I/O worker prints one JSON object with
``"ready": true`` (``json_ready``), the simulator a ``READY tcp=... udp=...`` text line
(``regex_ready``). Only the first line counts (``ready_lines`` allows a few lines before it, for
a program that warns first, such as tshark running as root); lines are read one byte at a time
so nothing after the ready line is consumed.

Why the parent-death signal is set by a tiny exec wrapper rather than ``preexec_fn``: Python
code between fork and exec may deadlock when the parent has other threads (the API's dispatcher,
supervisors that tests run in threads), and the wrapper works from any thread. It is
``python -I -S -c BOOT`` (about 20 ms): ``prctl(PR_SET_PDEATHSIG)``, exit at once if the parent
already died, then ``execvp`` the real command (same pid; exec keeps the setting). As the kernel
defines it, the signal fires when the *thread* that spawned the child ends. Elsewhere than Linux
the child is started directly, without the signal.

Stopping never signals a pid that is not our child: ``Popen.send_signal`` polls first, and a
reaped child is never signalled again (its pid may belong to someone else by then).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "Child",
    "ReadyParser",
    "SpawnError",
    "describe_status",
    "json_ready",
    "regex_ready",
    "source_env",
    "spawn",
    "spawn_with_log",
    "stop",
]

DEFAULT_READY_TIMEOUT_S = 15.0
DEFAULT_STOP_TIMEOUT_S = 5.0
_REAP_AFTER_KILL_S = 5.0  # SIGKILL cannot be ignored; this only bounds a stuck uninterruptible wait
_TAIL_LINES = 20

# A ready parser gets the child's first stdout line (decoded, without the newline) and returns
# what it says, or None when it is not a ready line.
ReadyParser = Callable[[str], Mapping[str, Any] | None]

# Where a child's stdout/stderr go: what Popen accepts (None: inherit, subprocess.DEVNULL, a file
# descriptor or a file object; subprocess.PIPE, read with Child.communicate; for stderr,
# subprocess.STDOUT), or a path: the file is opened for appending, and its last lines are quoted
# when the child fails to start.
Stream = int | IO[Any] | str | os.PathLike[str] | None

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_BOOT = """\
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]), 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[2]):
    sys.exit(0)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    sys.stderr.write(f"cannot start {sys.argv[3]}: {exc}\\n")
    sys.exit(127)
"""


class SpawnError(RuntimeError):
    """The child did not become ready; it has been reaped (killed first if it still ran).

    ``returncode`` is its exit status (negative: the signal), or None when it was killed by us
    after printing nothing or something else; ``first_line`` is what it printed instead of a
    ready line; ``stderr_tail`` its last stderr lines when they went to a file we know.
    """

    def __init__(self, message: str, *, argv: Sequence[str], returncode: int | None,
                 first_line: str, stderr_tail: str) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.first_line = first_line
        self.stderr_tail = stderr_tail


def describe_status(returncode: int) -> str:
    """``exit status 3`` / ``killed by SIGKILL``: an exit status as a person reads it."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def json_ready(line: str) -> dict[str, Any] | None:
    """The I/O worker's ready line: one JSON object with ``"ready": true``."""
    try:
        info = json.loads(line)
    except ValueError:
        return None
    if not isinstance(info, dict) or info.get("ready") is not True:
        return None
    return info


def regex_ready(pattern: str | re.Pattern[str]) -> ReadyParser:
    """A ready line that ``pattern`` matches (``search``); its named groups are the info."""
    rx = re.compile(pattern)

    def parse(line: str) -> dict[str, Any] | None:
        m = rx.search(line)
        return None if m is None else dict(m.groupdict())

    return parse


class Child:
    """A child process started by ``spawn``: its ready info, signals, and the graceful stop."""

    def __init__(self, proc: subprocess.Popen[bytes], argv: Sequence[str],
                 stderr_path: Path | None) -> None:
        self.proc = proc
        self.argv = list(argv)
        self.stderr_path = stderr_path
        self.owns_stderr_file = False  # spawn_with_log made it: close() deletes it
        self.ready: dict[str, Any] = {}
        self.first_line = ""  # the first stdout line (the ready line, or what came instead)

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else describe_status(self.returncode)
        return f"<Child pid={self.pid} {state}: {' '.join(self.argv)[:80]}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else None."""
        return self.proc.returncode

    def poll(self) -> int | None:
        """Reap the child if it has exited (never blocks); its exit status or None."""
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the exit; ``subprocess.TimeoutExpired`` when it outlives ``timeout_s``."""
        return self.proc.wait(timeout_s)

    def send_signal(self, sig: int) -> bool:
        """Signal the child if it is still ours to signal (not yet reaped); True if sent."""
        if self.proc.poll() is not None:
            return False
        try:
            self.proc.send_signal(sig)  # polls again itself: never a reaped (reusable) pid
        except ProcessLookupError:  # pragma: no cover - exited between poll and kill
            return False
        return self.proc.returncode is None

    def communicate(self, timeout_s: float | None = None) -> tuple[str, str]:
        """Wait for the exit; what it wrote to its stdout and stderr pipes (spawned with
        ``subprocess.PIPE``; after a ready line, the rest of stdout), decoded; "" for a stream
        that is not a pipe. ``subprocess.TimeoutExpired`` when it outlives ``timeout_s``: it
        keeps running (``stop`` or ``kill`` it), and a later call reads on."""
        out, err = self.proc.communicate(timeout=timeout_s)
        return _text(out), _text(err)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; reap; close our end of its pipes.
        Idempotent; returns the exit status."""
        if self.proc.poll() is None and timeout_s > 0:
            self.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        return self.kill()

    def kill(self) -> int:
        """SIGKILL (if still running) and reap; close our end of its pipes; the exit status."""
        if self.proc.poll() is None:
            self.send_signal(signal.SIGKILL)
            self.proc.wait(_REAP_AFTER_KILL_S)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def close(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """``stop``, then delete its stderr file if ``spawn_with_log`` made it; the exit status."""
        try:
            return self.stop(timeout_s)
        finally:
            if self.owns_stderr_file and self.stderr_path is not None:
                self.stderr_path.unlink(missing_ok=True)

    def stderr_text(self) -> str:
        """Everything in its stderr file so far ("" when stderr is not a file we know)."""
        if self.stderr_path is None:
            return ""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of its stderr when it goes to a file (else "")."""
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def stop(child: Child, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
    """``child.stop(timeout_s)``: SIGTERM, wait, SIGKILL, reap; the exit status."""
    return child.stop(timeout_s)


def source_env(root: str | os.PathLike[str]) -> dict[str, str]:
    """This process's environment for a Python child that runs the code of the checkout at
    ``root``: ``root`` first on PYTHONPATH, and PYTHONUNBUFFERED=1 so each line it logs is in
    its log file as soon as it is written."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.fspath(root), env.get("PYTHONPATH", ""))
                                        if p)
    return env


def spawn_with_log(
    argv: Sequence[str],
    *,
    log_prefix: str,
    ready: ReadyParser | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: Stream = None,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> Child:
    """``spawn`` with stderr in a new temporary file (``<log_prefix>XXXXXXXX.log`` in the
    temporary directory) that the child owns: ``Child.stderr_text`` reads it, ``Child.close``
    (and ``with``) stops the child and deletes it. A child that does not start leaves no file
    behind (a ``SpawnError`` quotes its last lines). ``stdout`` as for ``spawn`` (without a
    ready line)."""
    fd, name = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
    os.close(fd)
    log = Path(name)
    try:
        child = spawn(argv, ready=ready, env=env, cwd=cwd, stdout=stdout, stderr=log,
                      ready_timeout_s=ready_timeout_s)
    except BaseException:
        log.unlink(missing_ok=True)
        raise
    child.owns_stderr_file = True
    return child


def spawn(
    argv: Sequence[str],
    *,
    ready: ReadyParser | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: Stream = None,
    stderr: Stream = None,
    parent_death_signal: bool | int = True,
    process_group: bool = True,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ready_lines: int = 1,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Start ``argv`` (stdin from /dev/null) and return its ``Child``.

    ``process_group``: the child leads a process group of its own, so a Ctrl-C in the terminal
    reaches only us and we stop children in our own order. ``parent_death_signal``: the signal
    Linux sends the child when the spawning thread ends (True: SIGTERM, so it can still close
    gracefully; False: none). ``ready``: wait up to ``ready_timeout_s`` for the first stdout
    line and parse it (stdout is then a pipe); ``SpawnError`` when the child exits first,
    prints something else, or stays silent. ``ready_lines``: the ready line may be any of the
    first that many lines (a program that warns before it is ready; with
    ``stderr=subprocess.STDOUT`` for one that says it is ready on stderr).
    ``stdout`` / ``stderr``: see ``Stream``. ``pass_fds``: file descriptors the child keeps
    open, under the same numbers (``subprocess.Popen``'s; a pipe to a browser's DevTools).
    OSError (as from Popen) when the program cannot be found or run.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("spawn needs a command")
    if ready is not None and stdout is not None:
        raise ValueError("with ready=..., stdout is the pipe the ready line is read from")
    if ready_lines < 1:
        raise ValueError(f"ready_lines must be at least 1, not {ready_lines}")
    sig = int(signal.SIGTERM) if parent_death_signal is True else int(parent_death_signal)
    cmd = argv
    if sig and sys.platform.startswith("linux"):
        _check_runnable(argv[0], env, cwd)  # the wrapper's execvp could only exit 127
        cmd = [sys.executable, "-I", "-S", "-c", _BOOT, str(sig), str(os.getpid()), *argv]
    stderr_path = _as_path(stderr)
    with contextlib.ExitStack() as files:
        out = subprocess.PIPE if ready is not None else _open(stdout, files)
        err = _open(stderr, files)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=None if env is None else dict(env), cwd=cwd,
                                process_group=0 if process_group else None,
                                pass_fds=tuple(pass_fds))
    child = Child(proc, argv, stderr_path)
    if ready is None:
        return child
    try:
        _await_ready(child, ready, ready_timeout_s, ready_lines,
                     merged=stderr == subprocess.STDOUT)
    except BaseException:
        child.kill()  # a SpawnError, or an interrupt while waiting: never leave it behind
        raise
    return child


def _await_ready(child: Child, parse: ReadyParser, timeout_s: float, max_lines: int, *,
                 merged: bool) -> None:
    stdout = child.proc.stdout
    assert stdout is not None
    lines: list[str] = []
    eof = False
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(stdout, selectors.EVENT_READ)
        while len(lines) < max_lines:
            line, eof = _read_line(stdout.fileno(), sel, deadline)
            if line:
                lines.append(line.decode(errors="replace").strip())
                child.first_line = lines[0]
            if not line.endswith(b"\n"):
                break  # EOF or the deadline, before a whole line
            info = parse(lines[-1])
            if info is not None:
                child.ready = dict(info)
                return
    if eof:  # it closed stdout: normally it exited; give it a moment to be reaped
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(min(2.0, max(0.1, deadline - time.monotonic())))
    text = "\n".join(lines)
    code = child.poll()
    if code is not None:
        why = f"exited ({describe_status(code)}) before it was ready"
    elif text:
        why = f"printed {text[:200]!r} instead of its ready line"
    else:
        why = f"printed no ready line within {timeout_s:g} s"
    child.kill()
    tail = child.stderr_tail()
    if tail:
        where = f"last lines of its stderr ({child.stderr_path}):\n{tail}"
    elif child.stderr_path is not None:
        where = f"its stderr ({child.stderr_path}) is empty"
    elif merged:
        where = "its stderr went to the same pipe as its stdout"
    else:
        where = "its stderr did not go to a file (see this process's stderr or its log)"
    raise SpawnError(f"{' '.join(child.argv)}\n  (pid {child.pid}) {why}; {where}",
                     argv=child.argv, returncode=code, first_line=child.first_line,
                     stderr_tail=tail)


def _read_line(fd: int, sel: selectors.BaseSelector, deadline: float) -> tuple[bytes, bool]:
    """One line (with its newline), or less at the deadline or EOF; and whether EOF came. One
    byte at a time: never read past the line."""
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            return line, False
        chunk = os.read(fd, 1)
        if not chunk:
            return line, True
        line += chunk
    return line, False


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode(errors="replace")


def _as_path(stream: Stream) -> Path | None:
    return Path(stream) if isinstance(stream, str | os.PathLike) else None


def _open(stream: Stream, files: contextlib.ExitStack) -> int | IO[Any] | None:
    """A path becomes a file opened for appending (closed here once the child has it)."""
    if isinstance(stream, str | os.PathLike):
        return files.enter_context(open(stream, "ab"))  # noqa: SIM115 - closed by the stack
    return stream


def _check_runnable(program: str, env: Mapping[str, str] | None,
                    cwd: str | os.PathLike[str] | None) -> None:
    """Raise what Popen would raise for a missing program, before the wrapper runs."""
    if os.sep in program:
        path = program if os.path.isabs(program) else os.path.join(cwd or os.getcwd(), program)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
