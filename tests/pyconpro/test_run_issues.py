"""What ``pyconpro run`` would die of, caught by ``pyconpro check`` first
(``config_file.run_issues``): the log file's directory missing or unwritable, ipc socket paths
longer than a Unix socket path for the worker names the config produces, sink outputs that
cannot be written. ``check`` exits 1 naming the key, line and fix; ``run`` exits 2 with the
same words and no traceback, having started nothing."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pyconpro.check_cli import check
from pyconpro.config_file import IPC_PATH_MAX, load_config, run_issues
from tests.support.requirements import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


def config(tmp: Path, *, control_base: str | None = None, extra: str = "") -> str:
    """A pipeline whose worker name is known without asking the OS (local_address given)."""
    return f"""\
[bus]
endpoint = "ipc://{tmp}/bus"
control_base = "{control_base or f'ipc://{tmp}/ctl'}"
{extra}
[[plc]]
name = "line1"
address = "127.0.0.2"
local_address = "127.0.0.1"
  [[plc.tag]]
  name = "Speed"
"""


def write(tmp: Path, text: str) -> Path:
    cfg = tmp / "plant.toml"
    cfg.write_text(text)
    return cfg


def checked(cfg: Path, *, resolve: bool = True) -> tuple[int, str]:
    out = io.StringIO()
    return check(str(cfg), resolve=resolve, out=out), out.getvalue()


def run(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyconpro.cli", "run", str(cfg)],
                          check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def assert_check_and_run_refuse(cfg: Path, line: str) -> None:
    """``check`` prints ``line`` and exits 1; ``run`` prints it as an error and exits 2."""
    code, out = checked(cfg)
    assert code == 1, out
    assert out.splitlines()[0] == line, out
    res = run(cfg)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines()[0] == f"error: {line}"
    assert "Traceback" not in res.stderr


def test_a_valid_file_has_no_run_issues(tmp_path: Path) -> None:
    extra = f'[logging]\nfile = "{tmp_path}/logs/run.log"\n'
    (tmp_path / "logs").mkdir()
    cfg = write(tmp_path, config(tmp_path, control_base=f"ipc://{tmp_path}/new/dirs/ctl",
                                 extra=extra))
    assert run_issues(load_config(cfg), ["worker-127.0.0.1"]) == []
    assert checked(cfg)[0] == 0


def test_log_file_in_a_missing_directory(tmp_path: Path) -> None:
    cfg = write(tmp_path, config(tmp_path, extra='[logging]\nfile = "nodir/run.log"\n'))
    assert_check_and_run_refuse(
        cfg, f"{cfg}:5: logging.file: the log file's directory '{tmp_path}/nodir' does not"
        " exist; create the directory, or point file at a writable one (or remove file:"
        " standard error)")  # fmt: skip


def test_log_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    cfg = write(tmp_path, config(tmp_path, extra='[logging]\nfile = "logs"\n'))
    assert_check_and_run_refuse(
        cfg, f"{cfg}:5: logging.file: the log file '{tmp_path}/logs' is a directory; name a"
        f" file in it, e.g. '{tmp_path}/logs/pyconpro.log'")  # fmt: skip


def as_unprivileged_user() -> list[str]:
    """The prefix that runs a command as ``nobody``: root may write in any directory, so as
    root the test runs ``check`` and ``run`` as a user the permission bits apply to."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv", "as root this test runs pyconpro as 'nobody' with setpriv:"
                     " apt-get install util-linux")  # fmt: skip
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def test_log_file_in_a_directory_this_user_may_not_write() -> None:
    prefix = as_unprivileged_user()
    # pytest's tmp_path is private to root; this directory is one that nobody may enter.
    with tempfile.TemporaryDirectory(prefix="pyconpro-perm-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o777)
        locked = tmp / "locked"
        locked.mkdir(mode=0o500)
        locked.chmod(0o555)
        cfg = write(tmp, config(tmp, extra='[logging]\nfile = "locked/run.log"\n'))
        line = (f"{cfg}:5: logging.file: the log file cannot be written: '{locked}' is not"
                " writable by this user; create the directory, or point file at a writable one"
                " (or remove file: standard error)")  # fmt: skip
        cli = [*prefix, sys.executable, "-m", "pyconpro.cli"]
        checked_ = subprocess.run([*cli, "check", str(cfg)], check=False, capture_output=True,
                                  text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
        assert checked_.returncode == 1, checked_.stdout + checked_.stderr
        assert checked_.stdout.splitlines()[0] == line, checked_.stdout
        ran = subprocess.run([*cli, "run", str(cfg)], check=False, capture_output=True,
                             text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
        assert ran.returncode == 2, ran.stderr
        assert ran.stderr.splitlines()[0] == f"error: {line}"
        assert "Traceback" not in ran.stderr


def base_of(tmp: Path, pub_path_bytes: int) -> str:
    """A control_base whose worker-127.0.0.1 PUB socket path has ``pub_path_bytes`` bytes."""
    suffix = "-worker-127.0.0.1.pub"
    head = f"{tmp}/"
    return "ipc://" + head + "c" * (pub_path_bytes - len(head) - len(suffix))


def test_ipc_paths_too_long_for_the_worker_names(tmp_path: Path) -> None:
    base = base_of(tmp_path, IPC_PATH_MAX + 1)
    cfg = write(tmp_path, config(tmp_path, control_base=base))
    path = base.removeprefix("ipc://") + "-worker-127.0.0.1.pub"
    assert_check_and_run_refuse(
        cfg, f"{cfg}:3: bus.control_base: the ipc socket path {path!r} (worker-127.0.0.1's PUB"
        f" socket) is {IPC_PATH_MAX + 1} bytes long; a Unix socket path has at most"
        f" {IPC_PATH_MAX}; use a control_base path of at most {len(base) - 6 - 1} bytes, e.g."
        ' "ipc:///tmp/pyconpro"')  # fmt: skip


def test_ipc_length_with_the_real_worker_names_or_the_longest(tmp_path: Path) -> None:
    """Just short enough for worker-127.0.0.1 (this host's name), too long for the longest a
    worker can have: fine with the names resolved, a problem with --no-resolve."""
    cfg = write(tmp_path, config(tmp_path, control_base=base_of(tmp_path, IPC_PATH_MAX)))
    assert checked(cfg)[0] == 0
    code, out = checked(cfg, resolve=False)
    assert code == 1
    assert "(worker-255.255.255.255's PUB socket, the longest worker name possible) is 113" \
        " bytes long" in out


def test_bus_endpoint_in_a_missing_directory(tmp_path: Path) -> None:
    cfg = write(tmp_path, config(tmp_path).replace(f"ipc://{tmp_path}/bus",
                                                   f"ipc://{tmp_path}/gone/bus"))
    assert_check_and_run_refuse(
        cfg, f"{cfg}:2: bus.endpoint: the bus socket cannot be made: '{tmp_path}/gone' does not"
        " exist; create the directory, or point endpoint at a writable one")  # fmt: skip


def test_control_base_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    cfg = write(tmp_path, config(tmp_path, control_base=f"ipc://{tmp_path}/afile/sub/ctl"))
    assert_check_and_run_refuse(
        cfg, f"{cfg}:3: bus.control_base: the directory of control_base '{tmp_path}/afile/sub'"
        f" cannot be created: '{tmp_path}/afile' is not a directory; point control_base at a"
        " directory this user may create")  # fmt: skip


def test_files_sink_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    sink = '[[sink]]\nkind = "jsonl"\nname = "j"\ndirectory = "afile/out"\n'
    cfg = write(tmp_path, config(tmp_path) + sink)
    assert_check_and_run_refuse(
        cfg, f"{cfg}:14: sink[0].directory: sink 'j' cannot write its directory:"
        f" '{tmp_path}/afile/out' cannot be created: '{tmp_path}/afile' is not a directory;"
        " create the directory, or set directory to a writable place")  # fmt: skip
    # A directory that does not exist yet is fine: the sink creates it with its parents.
    cfg = write(tmp_path, config(tmp_path) + sink.replace("afile/out", "new/out"))
    assert checked(cfg)[0] == 0


def test_sqlite_sink_in_a_missing_directory_is_a_warning(tmp_path: Path) -> None:
    """The SQLite sink waits for its directory (a disk mounted late): ``run`` starts, ``check``
    warns."""
    sink = '[[sink]]\nkind = "sqlite"\nname = "db"\npath = "nodir/x.sqlite3"\n'
    cfg = write(tmp_path, config(tmp_path) + sink)
    code, out = checked(cfg)
    assert code == 0, out
    assert out.splitlines()[-1] == (
        f"WARNING: {cfg}:14: sink[0].path: sink 'db' cannot write its path: its directory"
        f" '{tmp_path}/nodir' does not exist (the sqlite sink waits for it, keeping records in"
        " memory); create the directory, or set path to a writable place")
    assert run_issues(load_config(cfg), ["worker-127.0.0.1"]) == []


def test_no_resolve_leaves_the_file_system_out(tmp_path: Path) -> None:
    """A file written for another machine: its directories are that machine's business."""
    cfg = write(tmp_path, config(tmp_path, extra='[logging]\nfile = "/nonexistent/run.log"\n'))
    assert checked(cfg)[0] == 1
    assert checked(cfg, resolve=False)[0] == 0
