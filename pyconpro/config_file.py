"""Reading a pipeline config file: the file, its encoding, and validation with every sink kind.

The config model (``acquisition/config.py``) is pure and works on text; this is the one place
that opens the file. Sink sections are validated with the schemas their sinks declare
(``sinks/registry.py``), and relative paths are resolved against the file's directory.
"""

from __future__ import annotations

import os

from pyconpro.acquisition.config import Config, parse_config
from pyconpro.acquisition.toml_check import ConfigError, ConfigIssue
from pyconpro.sinks.registry import sink_schemas

__all__ = ["load_config"]


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
