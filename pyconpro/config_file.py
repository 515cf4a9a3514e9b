"""Reading a pipeline config file: the file, its encoding, and validation with every sink kind;
and what the file system and the OS say of it before ``pyconpro run`` starts.

The config model (``acquisition/config.py``) is pure and works on text; this is the one place
that opens the file. Sink sections are validated with the schemas their sinks declare
(``sinks/registry.py``), and relative paths are resolved against the file's directory.

``run_issues`` is what ``pyconpro check`` and ``pyconpro run`` both ask before anything starts,
so ``check`` catches what ``run`` would die of: the log file's directory missing or not
writable, ipc socket paths longer than a Unix socket path can be for the worker names this
config produces, sink output directories that cannot be created, a ``[web]`` token file that
cannot be read. ``run_warnings`` is what
``run`` survives but should be said (a database whose directory is missing: its sink waits).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from pyconpro.acquisition.config import Config, parse_config
from pyconpro.acquisition.toml_check import ConfigError, ConfigIssue
from pyconpro.sinks.registry import sink_schemas

__all__ = ["IPC_PATH_MAX", "LONGEST_WORKER_NAME", "load_config", "run_issues", "run_warnings"]

#: Bytes of a Unix socket path on Linux (``sun_path`` holds 108 with the terminating NUL).
IPC_PATH_MAX: Final = 107
#: The longest name a worker gets (``worker-<local IPv4 address>``), when the names are unknown.
LONGEST_WORKER_NAME: Final = "worker-255.255.255.255"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the TOML file at ``path``; ``ConfigError`` lists every problem."""
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    filename,
                    "",
                    None,
                    f"cannot read the file: {exc.strerror or exc}",
                    "check the path and its permissions",
                )
            ]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                ConfigIssue(
                    filename,
                    "",
                    line,
                    "the file is not valid UTF-8",
                    "save it as UTF-8 (TOML requires it)",
                )
            ]
        ) from None
    config = parse_config(
        text,
        filename,
        sink_kinds=sink_schemas(),
        base_dir=os.path.dirname(os.path.abspath(filename)),
    )
    _check_key_files(config)
    return config


def _check_key_files(config: Config) -> None:
    """The key files ``[security]`` names exist and hold keys (``check`` finds what ``run``
    would stop on)."""
    from pyconpro.workers.guard import CurveError, load_allowed, load_key_pair

    issues = []
    for key, load in (("server_key", load_key_pair), ("client_keys", load_allowed)):
        path = getattr(config.security, key)
        if path is None:
            continue
        try:
            load(path)
        except CurveError as exc:
            full = f"security.{key}"
            issues.append(ConfigIssue(config.source, full, config.key_lines.get(full), str(exc)))
    if issues:
        raise ConfigError(issues)


def run_issues(config: Config, worker_names: Sequence[str] | None = None, *,
               files: bool = True) -> list[ConfigIssue]:
    """What ``pyconpro run`` would stop on that the file's own rules cannot see (module doc).

    ``worker_names``: the workers the config produces on this host (``WorkerGroup.name``);
    None when unknown (``check --no-resolve``): the longest name a worker can have is assumed.
    ``files=False`` leaves this host's file system out (a file written for another machine:
    ``check --no-resolve``); the socket path lengths are checked either way.
    """
    names = list(worker_names) if worker_names is not None else [LONGEST_WORKER_NAME]
    issues = _ipc_issues(config, names, assumed=worker_names is None, files=files)
    if files:
        issues = [*_log_file_issues(config), *issues, *_sink_issues(config, "directory"),
                  *_web_issues(config)]
    return issues


def run_warnings(config: Config) -> list[ConfigIssue]:
    """Outputs that cannot be written now but that their sink waits for (a database whose
    directory is missing: a disk not mounted yet): ``run`` starts and the sink retries, so
    these are warnings (``check`` prints them, ``run`` logs them)."""
    return _sink_issues(config, "file")


def _issue(config: Config, key: str, problem: str, fix: str) -> ConfigIssue:
    return ConfigIssue(config.source, key, config.key_lines.get(key), problem, fix)


def _unwritable(directory: str) -> str | None:
    """Why nothing can be created in the existing ``directory``, or None."""
    if not os.path.isdir(directory):
        return f"{directory!r} is not a directory"
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"{directory!r} is on a read-only file system"
    except OSError as exc:
        return f"{directory!r} cannot be examined: {exc.strerror}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory!r} is not writable by this user"
    return None


def _uncreatable(directory: str) -> str | None:
    """Why ``directory`` cannot be created with its parents (``mkdir -p``), or None (it
    exists, or its nearest existing ancestor is a writable directory)."""
    if os.path.isdir(directory):
        return None
    probe = os.path.abspath(directory)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    why = _unwritable(probe)
    return None if why is None else f"{directory!r} cannot be created: {why}"


def _log_file_issues(config: Config) -> list[ConfigIssue]:
    path = config.logging.file
    if path is None:
        return []
    directory = os.path.dirname(os.path.abspath(path))
    fix = "create the directory, or point file at a writable one (or remove file: standard error)"
    if os.path.isdir(path):
        return [_issue(config, "logging.file", f"the log file {path!r} is a directory",
                       "name a file in it, e.g. " + repr(os.path.join(path, "pyconpro.log")))]
    if not os.path.lexists(directory):
        return [_issue(config, "logging.file",
                       f"the log file's directory {directory!r} does not exist", fix)]
    why = _unwritable(directory)
    if why is None and os.path.exists(path) and not os.access(path, os.W_OK):
        why = f"{path!r} is not writable by this user"
    if why is not None:
        return [_issue(config, "logging.file", f"the log file cannot be written: {why}", fix)]
    return []


def _ipc_issues(config: Config, worker_names: Sequence[str], *, assumed: bool,
                files: bool) -> list[ConfigIssue]:
    """ipc endpoints whose socket path is too long (``assumed``: the worker names are the
    longest possible, not this host's); with ``files``, the bus endpoint's directory missing
    (the forwarder binds in it) and a control_base directory that cannot be created (the
    supervisor creates it)."""
    from pyconpro.workers.supervisor import control_base_endpoints, ipc_path

    issues: list[ConfigIssue] = []
    bus = ipc_path(config.bus.endpoint)
    if bus is not None and len(bus.encode()) > IPC_PATH_MAX:
        issues.append(_issue(
            config, "bus.endpoint",
            f"the ipc socket path {bus!r} is {len(bus.encode())} bytes long; a Unix socket"
            f" path has at most {IPC_PATH_MAX}",
            f"use a path of at most {IPC_PATH_MAX} bytes, e.g. \"ipc:///tmp/pyconpro-bus\"",
        ))  # fmt: skip
    elif bus is not None and files:
        directory = os.path.dirname(os.path.abspath(bus))
        why = (f"{directory!r} does not exist" if not os.path.lexists(directory)
               else _unwritable(directory))
        if why is not None:
            issues.append(_issue(config, "bus.endpoint", f"the bus socket cannot be made: {why}",
                                 "create the directory, or point endpoint at a writable one"))
    base = ipc_path(config.bus.control_base)
    if base is None:
        return issues
    paths = [(what, ipc_path(ep) or "") for what, ep in control_base_endpoints(config,
                                                                              worker_names)]
    what, longest = max(paths, key=lambda p: len(p[1].encode()))
    size = len(longest.encode())
    if size > IPC_PATH_MAX:
        room = IPC_PATH_MAX - (size - len(base.encode()))
        issues.append(_issue(
            config, "bus.control_base",
            f"the ipc socket path {longest!r} ({what}"
            f"{', the longest worker name possible' if assumed else ''}) is {size} bytes long;"
            f" a Unix socket path has at most {IPC_PATH_MAX}",
            f"use a control_base path of at most {max(room, 1)} bytes, e.g."
            ' "ipc:///tmp/pyconpro"',
        ))  # fmt: skip
    why = _uncreatable(os.path.dirname(base) or ".") if files else None
    if why is not None:
        issues.append(_issue(config, "bus.control_base", f"the directory of control_base {why}",
                             "point control_base at a directory this user may create"))
    return issues


def _web_issues(config: Config) -> list[ConfigIssue]:
    """``[web].token_file`` unreadable or not a usable token: the web process would not start."""
    web = config.web
    if web is None or web.token_file is None:
        return []
    from pyconpro.web.http import read_token_file

    try:
        read_token_file(web.token_file)
    except ValueError as exc:
        return [_issue(config, "web.token_file", f"the token file {web.token_file!r} {exc}",
                       "put a random token of at least 16 characters in it, e.g. `python3 -c "
                       "'import secrets; print(secrets.token_urlsafe(32))' > FILE`")]
    return []


def _sink_issues(config: Config, creates: str) -> list[ConfigIssue]:
    """Sink outputs named by ``path`` options that create ``creates`` ("directory": the sink
    creates it with its parents or dies; "file": it waits for the file's directory)."""
    schemas = sink_schemas()
    issues: list[ConfigIssue] = []
    for i, sink in enumerate(config.sinks):
        for option in schemas[sink.kind].options:
            value = sink.options.get(option.key)
            if option.creates != creates or not isinstance(value, str):
                continue
            key = f"sink[{i}].{option.key}"
            if option.creates == "directory":
                why = _uncreatable(value)
            elif os.path.isdir(value):
                why = f"{value!r} is a directory, not a file"
            else:
                directory = os.path.dirname(os.path.abspath(value))
                why = (f"its directory {directory!r} does not exist (the {sink.kind} sink"
                       " waits for it, keeping records in memory)"
                       if not os.path.lexists(directory) else _unwritable(directory))
            if why is not None:
                issues.append(_issue(
                    config, key, f"sink {sink.name!r} cannot write its {option.key}: {why}",
                    f"create the directory, or set {option.key} to a writable place"))
    return issues
