"""TOML validation shared by every file pyconpro reads: the pipeline configuration
(``acquisition.config``) and the simulator's tag files (``simulator.tags``).

Owns: decoding TOML with positioned syntax errors (``parse_toml``), the issue record
(``ConfigIssue``: file, key path, line, problem, fix) and the error that carries them
(``ConfigError``), the line finder (``KeyLines``: tomllib does not report positions of values,
so the source text is scanned for the line that writes a key path), the collector (``IssueLog``)
that lets one run report every problem, typed access to one table (``Table``: unknown keys with
a "did you mean" suggestion, strings, numbers in a range, integers, choices, booleans,
sub-tables), the wording helpers (``did_you_mean``, ``type_name``, ``fmt``) and ``relative_to``
(paths written in a file are relative to that file).

Pure: works on strings and decoded TOML; reading files is the caller's business.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyconpro.acquisition.errors import PyconproError

__all__ = [
    "MISSING",
    "ConfigError",
    "ConfigIssue",
    "IssueLog",
    "KeyLines",
    "Table",
    "did_you_mean",
    "fmt",
    "join",
    "parse_toml",
    "relative_to",
    "type_name",
]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file: where (file, key path, line) and what to do about it."""

    file: str
    key: str
    line: int | None
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}:" if self.key else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}:{key} {self.problem}{fix}"


class ConfigError(PyconproError, ValueError):
    """The configuration file cannot be used. ``issues`` lists every problem found, in order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        count = len(self.issues)
        head = "" if count == 1 else f"{count} problems in the configuration:\n"
        super().__init__(head + "\n".join(str(i) for i in self.issues))

    @property
    def first(self) -> ConfigIssue:
        return self.issues[0]


# --------------------------------------------------------------------------------------------
# finding the line of a key path in the TOML source


_HEADER = re.compile(r"^\s*(\[\[?)\s*(?P<name>[^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEY_PART = r"(?:[A-Za-z0-9_\-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
_KEYLINE = re.compile(rf"^\s*(?P<key>{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(_KEY_PART, text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def parse_toml(text: str, filename: str) -> dict[str, Any]:
    """``text`` decoded as TOML; a syntax error is a ``ConfigError`` with its line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        col = f" (column {m.group(2)})" if m else ""
        raise ConfigError(
            [
                ConfigIssue(
                    filename,
                    "",
                    line,
                    f"TOML syntax error: {problem}{col}",
                    "check quotes, brackets and '=' on that line (strings need quotes, "
                    "tables are written [name] or [[name]])",
                )
            ]
        ) from None


class KeyLines:
    """Maps key paths (``plc[1].tag[0].rpi_ms``) to the 1-based line that writes them.

    A line scanner, not a TOML parser: it follows ``[table]`` and ``[[array]]`` headers and
    ``key =`` lines, skipping multi-line strings. Keys inside inline tables or multi-line arrays
    are not indexed; ``find`` then falls back to the nearest enclosing key that is.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        table = ""
        in_string: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if raw.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = _HEADER.match(raw)
            if header is not None:
                is_array = header.group(1) == "[["
                names = _split_dotted(header.group("name"))
                path = ""
                for i, name in enumerate(names):
                    path = f"{path}.{name}" if path else name
                    last = i == len(names) - 1
                    if last and is_array:
                        counts[path] = counts.get(path, 0) + 1
                        self.lines.setdefault(path, number)  # the array as a whole
                    if path in counts:
                        path = f"{path}[{counts[path] - 1}]"
                table = path
                self.lines.setdefault(table, number)
                continue
            key = _KEYLINE.match(raw)
            if key is not None:
                parts = _split_dotted(key.group("key"))
                for n in range(1, len(parts) + 1):  # `a.b = 1` also writes table `a`
                    dotted = ".".join(parts[:n])
                    self.lines.setdefault(f"{table}.{dotted}" if table else dotted, number)
                rest = raw[key.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_string = quote
                        break

    def find(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


# --------------------------------------------------------------------------------------------
# reading tables


class Missing:
    pass


MISSING: Final = Missing()


class IssueLog:
    """Collects issues while the file is read, so one run reports every problem."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.keylines = KeyLines(text)
        self.issues: list[ConfigIssue] = []

    def error(self, key: str, problem: str, fix: str = "") -> None:
        self.issues.append(ConfigIssue(self.filename, key, self.keylines.find(key), problem, fix))


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def relative_to(base_dir: str | None, path: str | None) -> str | None:
    """``path`` joined to ``base_dir`` unless it is absolute (or either is None).

    Paths in a file are relative to the file, so what it names is the same whatever directory
    the program is started from.
    """
    if path is None or base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class Table:
    """Typed access to one TOML table; every accessor records an issue instead of raising."""

    def __init__(self, ctx: IssueLog, path: str, data: Mapping[str, Any], allowed: Iterable[str]):
        self.ctx = ctx
        self.path = path
        self.data = data
        allowed = tuple(allowed)
        where = f"[{path}]" if path else "the top level"
        self.unknown = [key for key in data if key not in allowed]
        for key in data:
            if key not in allowed:
                hint = did_you_mean(key, allowed)
                known = ", ".join(allowed)
                ctx.error(
                    join(path, key),
                    f"unknown key {key!r} in {where}",
                    hint or f"the keys allowed here are: {known}",
                )

    def key(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    def string(self, key: str, default: Any = MISSING, *, required: bool = False) -> Any:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            if required:
                self.ctx.error(self.key(key), f"missing required key {key!r}", f'add {key} = "..."')
            return default
        if not isinstance(value, str):
            self.ctx.error(
                self.key(key),
                f"{key} must be a string, not {type_name(value)}",
                f'write it in quotes: {key} = "{value}"',
            )
            return default
        return value

    def number(
        self, key: str, default: Any, lo: float, hi: float, unit: str = "", *, lo_open: bool = False
    ) -> Any:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.ctx.error(
                self.key(key),
                f"{key} must be a number, not {type_name(value)}",
                f"write a number without quotes, between {fmt(lo)} and {fmt(hi)}",
            )
            return default
        unit_s = f" {unit}" if unit else ""
        if math.isnan(value):
            self.ctx.error(
                self.key(key),
                f"{key} = nan is not a number",
                f"use a value between {fmt(lo)} and {fmt(hi)}",
            )
            return default
        too_low = value <= lo if lo_open else value < lo
        if too_low or value > hi:
            rel = "above the" if value > hi else "below the"
            limit = hi if value > hi else lo
            word = "maximum" if value > hi else "minimum"
            self.ctx.error(
                self.key(key),
                f"{key} = {fmt(value)} is {rel} {fmt(limit)}{unit_s} {word}",
                f"use a value between {fmt(lo)} and {fmt(hi)}",
            )
            return default
        return float(value)

    def integer(self, key: str, default: Any, lo: int, hi: int, unit: str = "") -> Any:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                fix = f"write {key} = {int(value)}"
            else:
                fix = f"use a whole number between {lo} and {hi}"
            self.ctx.error(self.key(key), f"{key} must be an integer, not {type_name(value)}", fix)
            return default
        if value < lo or value > hi:
            unit_s = f" {unit}" if unit else ""
            rel, limit, word = (
                ("above the", hi, "maximum") if value > hi else ("below the", lo, "minimum")
            )
            self.ctx.error(
                self.key(key),
                f"{key} = {value} is {rel} {limit}{unit_s} {word}",
                f"use a value between {lo} and {hi}",
            )
            return default
        return value

    def choice(self, key: str, default: Any, choices: Sequence[str], *, fold: bool = False) -> Any:
        value = self.string(key, MISSING)
        if value is MISSING:
            return default
        probe = value.upper() if fold else value
        if probe not in choices:
            hint = did_you_mean(probe, choices)
            options = ", ".join(f'"{c}"' for c in choices)
            self.ctx.error(
                self.key(key),
                f"{key} = {value!r} is not one of {options}",
                hint or f"use one of {options}",
            )
            return default
        return probe

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.ctx.error(
                self.key(key),
                f"{key} must be true or false, not {type_name(value)}",
                "write true or false without quotes",
            )
            return default
        return value

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            return {}
        if not isinstance(value, dict):
            self.ctx.error(
                self.key(key),
                f"{key} must be a table, not {type_name(value)}",
                f"write it as a [{self.key(key)}] section",
            )
            return {}
        return value

    def array_of_tables(self, key: str, header: str) -> list[Mapping[str, Any]]:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.ctx.error(
                self.key(key),
                f"{key} must be an array of tables",
                f"write each entry as a [[{header}]] section",
            )
            return []
        return value


def fmt(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
