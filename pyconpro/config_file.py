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
    return parse_config(
        text,
        filename,
        sink_kinds=sink_schemas(),
        base_dir=os.path.dirname(os.path.abspath(filename)),
    )
