"""A network sink's password: never in the config file or on a command line, but read at each
connection from a file (``password_file``, its first line) or an environment variable
(``password_env``); the ``[[sink]]`` options that name them, and their checks. The password
itself is never logged."""

from __future__ import annotations

import os
import re
from typing import Any

from pyconpro.acquisition.sink_config import Option
from pyconpro.sinks.base import OutputUnavailable


def check_env_name(value: Any) -> tuple[str, str] | None:
    if str(value) == "" or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(value)):
        return None
    return (f"password_env = {value!r} is not an environment variable name",
            "write the variable's name, e.g. password_env = \"PYCONPRO_PG_PASSWORD\"")


def password_options(file_help: str) -> tuple[Option, Option]:
    """``password_file`` (``file_help`` says what applies without one) and ``password_env``."""
    return (
        Option(
            "password_file", "path", "",
            "File holding the password (its first line), read at each connection; make it"
            f" readable by this user only. Empty: none{file_help}.",
        ),
        Option(
            "password_env", "string", "",
            "Name of an environment variable holding the password (set where `pyconpro run`"
            " starts). Empty: none.",
            check=check_env_name,
        ),
    )  # fmt: skip


def read_password(password_file: str, password_env: str) -> str | None:
    """The password from ``password_file`` (first line) or else ``password_env``; None when
    neither is set. An unreadable file is ``OutputUnavailable`` (it may be put right while the
    sink runs); an unset variable is a ``RuntimeError`` with the fix."""
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as exc:
            raise OutputUnavailable(
                "password file",
                f"cannot read password_file {password_file}: {exc.strerror}: create it (one"
                " line, readable by this user only) or fix the path",
            ) from exc
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise RuntimeError(
                f"password_env names {password_env}, which is not set: set it where the sink"
                " starts (for `pyconpro run`: in its environment)"
            )
        return value
    return None
