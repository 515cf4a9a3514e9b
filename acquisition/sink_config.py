"""A ``[[sink]]`` section: the keys every sink has, and the schema type each sink kind declares
for its own options.

Owns: ``SinkConfig`` (the common keys: kind, name, topics, the loop's limits, plus the validated
options of its kind as a mapping), the declarative option schema (``Option``, ``Output``,
``SinkSchema`` with its check of the options together), the reading of one section
(``read_sink``: from the config file, with key paths and lines, or ``parse_sink_section`` for a
section handed to a sink process as data), the check that no two sinks write the same output
(``OutputCheck``), and the markdown table of a kind's options (``options_markdown``, for
docs/configuration.md).

The schemas themselves live with their sinks (``sinks/sqlite.py``, ``sinks/files.py``, ...) and
reach this module as a parameter, a mapping kind -> ``SinkSchema``: the core never imports
``sinks/``. From one schema come both the validation of the file's keys and the command-line
flags of ``pyconpro sink KIND`` (``sinks/cli.py``).

Pure: works on decoded TOML / JSON values; ``os.path`` only to compare paths.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from pyconpro.acquisition.rbe import EXCEPTION_KEYS, ReportByException, read_exception
from pyconpro.acquisition.toml_check import MISSING, ConfigError, IssueLog, Table, did_you_mean
from pyconpro.acquisition.toml_check import fmt as _fmt
from pyconpro.acquisition.toml_check import join as _join
from pyconpro.acquisition.toml_check import relative_to as _relative_to

__all__ = [
    "COMMON_KEYS",
    "DEFAULT_TOPICS",
    "TOPIC_ROOTS",
    "Option",
    "OptionValue",
    "Output",
    "OutputCheck",
    "SectionCheck",
    "SinkConfig",
    "SinkSchema",
    "options_markdown",
    "parse_sink_section",
    "read_sink",
]

OptionValue = str | int | float | bool
OptionType = Literal["string", "path", "integer", "number", "boolean", "choice"]
#: A check on a value written in the file: ``(problem, fix)`` when it cannot be used, else None.
OptionCheck = Callable[[Any], tuple[str, str] | None]
#: A check of a kind's options together (keys that need or exclude one another): one
#: ``(key, problem, fix)`` per rule the options break, ``key`` the option it is reported on.
SectionCheck = Callable[[Mapping[str, OptionValue]], list[tuple[str, str, str]]]

COMMON_KEYS: Final = (
    "kind", "name", "topics", "rcvhwm", "batch_size", "flush_interval_s", "drain_max_s",
    "replay", *EXCEPTION_KEYS,
)  # fmt: skip
# What a sink asks the bus's replay buffer for when it starts (docs/operations.md "When a sink
# restarts"): what follows what its output stored, that and every other stream it subscribes
# to (a new sink gets what the buffer holds), or nothing.
REPLAY_MODES: Final = ("stored", "all", "none")
DEFAULT_TOPICS: Final = ("sample/", "event/", "stats/")
TOPIC_ROOTS: Final = ("sample", "event", "stats")
# Sink names become process names (``sink-<name>``) and log labels.
_PROCESS_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a sink kind's section, and the flag it becomes on ``pyconpro sink KIND``.

    ``type``: ``path`` is a string resolved against the config file's directory; ``choice``
    takes one of ``choices`` (compared upper-cased when ``fold``). ``lo`` / ``hi`` bound
    integers and numbers (``unit`` words the messages). ``check`` sees a value the file wrote
    that passed the type and range checks. ``flag`` overrides the derived ``--key-name``;
    ``cli_required`` makes the flag mandatory for hand use (the file keeps the default).
    ``creates`` says what a ``path`` option names, for ``pyconpro check``: ``"file"`` (its
    directory must exist and be writable) or ``"directory"`` (created with its parents if
    missing, so its nearest existing ancestor must be a writable directory).
    """

    key: str
    type: OptionType
    default: OptionValue
    help: str
    lo: int | float = 0
    hi: int | float = 0
    unit: str = ""
    choices: tuple[str, ...] = ()
    fold: bool = False
    check: OptionCheck | None = None
    flag: str = ""
    cli_required: bool = False
    doc_default: str = ""  # how the docs show the default when the value alone says too little
    creates: Literal["", "file", "directory"] = ""

    def __post_init__(self) -> None:
        if self.key in COMMON_KEYS:
            raise ValueError(f"sink option {self.key!r} is a common [[sink]] key")
        numeric = self.type in ("integer", "number")
        if numeric and not (
            isinstance(self.default, int | float) and self.lo <= self.default <= self.hi
        ):
            raise ValueError(f"sink option {self.key!r}: default outside {self.lo}..{self.hi}")
        if self.type == "choice" and self.default not in self.choices:
            raise ValueError(f"sink option {self.key!r}: default is not one of its choices")

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    def read(self, t: Table, base_dir: str | None) -> OptionValue:
        """This option's value in table ``t`` (the default when absent or refused)."""
        before = len(t.ctx.issues)
        value: OptionValue
        if self.type in ("string", "path"):
            value = t.string(self.key, self.default)
            # An optional path (default "": not set) may be written empty; a path that must
            # name something may not.
            if self.type == "path" and t.has(self.key) and value == "" and self.default != "":
                t.ctx.error(
                    t.key(self.key),
                    f"{self.key} is empty",
                    f'write a {self.key}, e.g. {self.key} = "{self.default}"',
                )
                value = self.default
        elif self.type == "integer":
            value = t.integer(self.key, self.default, int(self.lo), int(self.hi), self.unit)
        elif self.type == "number":
            value = t.number(self.key, self.default, self.lo, self.hi, self.unit)
        elif self.type == "boolean":
            value = t.boolean(self.key, bool(self.default))
        else:
            value = t.choice(self.key, self.default, self.choices, fold=self.fold)
        if self.check is not None and t.has(self.key) and len(t.ctx.issues) == before:
            why = self.check(value)
            if why is not None:
                t.ctx.error(t.key(self.key), *why)
                value = self.default
        if self.type == "path":  # an optional path left empty stays empty: not set
            return (_relative_to(base_dir, str(value)) or "") if value else ""
        return value


@dataclass(frozen=True, slots=True)
class Output:
    """Which options name what a sink writes, so two sinks writing the same output are refused.

    Two sinks of one kind whose ``keys`` are equal (``path`` options as absolute paths) write
    the same output. ``what`` (the output in a sentence), ``fix`` (for a duplicate) and
    ``where`` (the output in a summary line) are ``str.format`` templates over the options.
    """

    keys: tuple[str, ...]
    what: str
    fix: str
    where: str


@dataclass(frozen=True, slots=True)
class SinkSchema:
    """Everything a sink kind adds to a ``[[sink]]`` section.

    ``check`` sees the section's options together once each passed its own checks: the rules
    between keys (a login given twice, a certificate without its key), so that the file's
    validation (``pyconpro check``, ``pyconpro run``'s load) refuses what the sink would refuse
    at its start. A sink built from options that did not come through a section runs the same
    rules with ``validate``.
    """

    kind: str
    help: str
    options: tuple[Option, ...] = ()
    output: Output | None = None
    flush_interval_s: float = 1.0  # this kind's default of the common key
    check: SectionCheck | None = None

    def __post_init__(self) -> None:
        keys = [o.key for o in self.options]
        if len(set(keys)) != len(keys):
            raise ValueError(f"sink kind {self.kind!r} declares an option twice")
        if self.output is not None and not set(self.output.keys) <= set(keys):
            raise ValueError(f"sink kind {self.kind!r}: output keys are not its options")

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.options)

    def option(self, key: str) -> Option:
        for o in self.options:
            if o.key == key:
                return o
        raise KeyError(key)

    def validate(self, options: Mapping[str, OptionValue]) -> None:
        """Raise ``ValueError`` ("problem: fix") for the first of ``options`` that fails its
        option's check, then for the first rule of ``check`` they break. ``options`` may leave
        out keys whose option checks are not wanted, never a key ``check`` reads."""
        for o in self.options:
            why = o.check(options[o.key]) if o.check is not None and o.key in options else None
            if why is not None:
                raise ValueError(f"{why[0]}: {why[1]}")
        for _key, problem, fix in self.check(options) if self.check is not None else ():
            raise ValueError(f"{problem}: {fix}")

    def where(self, options: Mapping[str, OptionValue]) -> str:
        """What a sink of this kind with ``options`` writes, in a few words."""
        if self.output is None:
            return self.kind
        return self.output.where.format(**options)


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """A ``[[sink]]`` entry; one sink process (``pyconpro sink``, see ``sinks/cli.py``).

    ``options`` holds every option of ``kind``'s schema, validated, defaults filled in and
    paths resolved against the config file's directory.
    """

    kind: str
    name: str
    topics: tuple[str, ...] = DEFAULT_TOPICS
    rcvhwm: int = 100_000
    batch_size: int = 1000
    flush_interval_s: float = 1.0
    drain_max_s: float = 5.0
    replay: str = "stored"  # one of REPLAY_MODES
    options: Mapping[str, OptionValue] = field(default_factory=lambda: MappingProxyType({}))
    # Which samples the sink keeps (acquisition/rbe.py); the default keeps every one.
    exception: ReportByException = ReportByException()

    def section(self) -> dict[str, Any]:
        """This sink as a section (JSON-ready); ``parse_sink_section`` gives it back."""
        return {
            "kind": self.kind,
            "name": self.name,
            "topics": list(self.topics),
            "rcvhwm": self.rcvhwm,
            "batch_size": self.batch_size,
            "flush_interval_s": self.flush_interval_s,
            "drain_max_s": self.drain_max_s,
            "replay": self.replay,
            **self.exception.section(),
            **self.options,
        }


# --------------------------------------------------------------------------------------------
# reading a section


def _check_topic_filter(
    ctx: IssueLog, key: str, topic: str, plcs: Mapping[str, Sequence[str]] | None
) -> None:
    """``plcs``: PLC name -> the tag names its topics use; None skips the names (a section
    checked without its file)."""
    if topic == "":
        return
    parts = topic.split("/")
    complete = parts[:-1]  # segments followed by '/' are whole; the last one may be a prefix
    root_ok = (
        any(r.startswith(parts[0]) for r in TOPIC_ROOTS)
        if not complete
        else parts[0] in TOPIC_ROOTS
    )
    if not root_ok:
        roots = ", ".join(f'"{r}/"' for r in TOPIC_ROOTS)
        close = difflib.get_close_matches(parts[0], TOPIC_ROOTS, n=1, cutoff=0.6)
        hint = f'did you mean "{close[0]}/"?' if close else ""
        ctx.error(
            key,
            f"topic filter {topic!r} matches nothing: topics start with {roots}",
            hint or 'write e.g. "sample/" or "sample/<plc>/"',
        )
        return
    if plcs is None or len(complete) < 2 or parts[0] not in ("sample", "event"):
        return
    plc_name = parts[1]
    if plc_name not in plcs:
        ctx.error(
            key,
            f"topic filter {topic!r} names PLC {plc_name!r}, which is not configured",
            did_you_mean(plc_name, plcs)
            or f"use one of the [[plc]] names: {', '.join(plcs) or '(none)'}",
        )
        return
    names = plcs[plc_name]
    if len(complete) >= 3 and parts[2] not in names:
        ctx.error(
            key,
            f"topic filter {topic!r} names tag {parts[2]!r}, which PLC {plc_name!r} does "
            "not publish (topics use the alias when one is set)",
            did_you_mean(parts[2], names) or f"use one of: {', '.join(names)}",
        )


def _read_topics(t: Table, plcs: Mapping[str, Sequence[str]] | None) -> tuple[str, ...]:
    value = t.raw("topics")
    if value is MISSING:
        return DEFAULT_TOPICS
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        t.ctx.error(
            t.key("topics"),
            "topics must be an array of strings",
            'write e.g. topics = ["sample/", "event/line1/"]',
        )
        return DEFAULT_TOPICS
    if not value:
        t.ctx.error(
            t.key("topics"),
            "topics is empty, so this sink would receive nothing",
            'list at least one prefix, e.g. topics = ["sample/"], or remove the key',
        )
        return DEFAULT_TOPICS
    for i, topic in enumerate(value):
        _check_topic_filter(t.ctx, f"{t.key('topics')}[{i}]", topic, plcs)
    return tuple(value)


def _kind_of(
    ctx: IssueLog, path: str, data: Mapping[str, Any], kinds: Mapping[str, SinkSchema]
) -> tuple[str | None, Mapping[str, Any]]:
    """The section's kind when it is a known one, and the section without the options of other
    kinds (each of which is reported: that is a clearer mistake than an unknown key)."""
    kind_v = data.get("kind")
    if not (isinstance(kind_v, str) and kind_v in kinds):
        return None, data
    own = kinds[kind_v].keys
    for key in data:
        owners = [k for k, s in kinds.items() if key in s.keys]
        if owners and key not in own:
            ctx.error(
                _join(path, key),
                f"{key} is not an option of sink kind {kind_v!r}",
                f"it applies to kind {', '.join(repr(k) for k in owners)}; remove it",
            )
    foreign = {key for s in kinds.values() for key in s.keys} - set(own)
    return kind_v, {k: v for k, v in data.items() if k not in foreign}


def read_sink(
    ctx: IssueLog,
    path: str,
    data: Mapping[str, Any],
    kinds: Mapping[str, SinkSchema],
    *,
    default_name: str,
    plcs: Mapping[str, Sequence[str]] | None = None,
    base_dir: str | None = None,
) -> SinkConfig | None:
    """Read one ``[[sink]]`` table at key path ``path``; problems go to ``ctx``.

    ``kinds`` maps each sink kind to its schema; ``default_name`` is used when ``name`` is not
    written (``{kind}`` in it becomes the kind); ``plcs`` (PLC name -> tag topic names) lets
    topic filters that name PLCs or tags be checked; relative ``path`` options are joined to
    ``base_dir``. None when the section cannot be used (the reasons are in ``ctx``).
    """
    kind, data = _kind_of(ctx, path, data, kinds)
    every_option = [key for s in kinds.values() for key in s.keys]
    allowed = (*COMMON_KEYS, *(kinds[kind].keys if kind is not None else every_option))
    t = Table(ctx, path, data, dict.fromkeys(allowed))
    if not t.has("kind"):
        choices = ", ".join(f'"{k}"' for k in kinds)
        ctx.error(
            _join(path, "kind"), "missing required key 'kind'", f"add kind = one of {choices}"
        )
    elif kind is None:
        t.choice("kind", None, tuple(kinds))
    name = t.string("name", default_name.format(kind=kind or "sink"))
    if not _PROCESS_NAME.fullmatch(name):
        ctx.error(
            t.key("name"),
            f"name = {name!r} is not usable as a process name",
            "use 1-64 characters from A-Z a-z 0-9 _ . -",
        )
    topics = _read_topics(t, plcs)
    d = SinkConfig(kind="", name="")
    flush_default = kinds[kind].flush_interval_s if kind is not None else d.flush_interval_s
    common = {
        "rcvhwm": t.integer("rcvhwm", d.rcvhwm, 1, 10_000_000, "messages"),
        "batch_size": t.integer("batch_size", d.batch_size, 1, 1_000_000),
        "flush_interval_s": t.number("flush_interval_s", flush_default, 0.0, 3600.0, "s"),
        "drain_max_s": t.number("drain_max_s", d.drain_max_s, 0.0, 3600.0, "s"),
        "replay": t.choice("replay", d.replay, REPLAY_MODES),
        "exception": read_exception(t, plcs),
    }
    if kind is None:
        return None
    schema = kinds[kind]
    before = len(ctx.issues)
    options = {o.key: o.read(t, base_dir) for o in schema.options}
    if schema.check is not None and len(ctx.issues) == before:  # each key is fine on its own
        for key, problem, fix in schema.check(options):
            ctx.error(t.key(key), problem, fix)
    return SinkConfig(
        kind=kind, name=name, topics=topics, options=MappingProxyType(options), **common
    )


def parse_sink_section(
    data: object, kinds: Mapping[str, SinkSchema], source: str = "<section>"
) -> SinkConfig:
    """Validate one sink section given as data (a ``[[sink]]`` table decoded from JSON, or
    built from command-line flags); raise ``ConfigError`` naming ``source`` and the keys.

    Paths are taken as given: the supervisor already resolved them against the config file.
    """
    ctx = IssueLog(source, "")
    if not isinstance(data, dict):
        ctx.error("", "a sink section must be a table (a JSON object)", 'e.g. {"kind": "stdout"}')
        raise ConfigError(ctx.issues)
    sink = read_sink(ctx, "", data, kinds, default_name="{kind}")
    if ctx.issues or sink is None:
        raise ConfigError(ctx.issues)
    return sink


class OutputCheck:
    """Refuses a sink that writes what an earlier sink of the file already writes.

    Two sinks on one SQLite file, or two file sinks rotating the same names, interleave or
    duplicate every record; both usually come from leaving path / directory at the default.
    """

    def __init__(self, kinds: Mapping[str, SinkSchema]) -> None:
        self.kinds = kinds
        self.seen: dict[tuple[str, ...], str] = {}

    def add(self, ctx: IssueLog, path: str, entry: Mapping[str, Any], sink: SinkConfig) -> None:
        schema = self.kinds[sink.kind]
        out = schema.output
        if out is None:
            return
        identity = [sink.kind]
        for key in out.keys:
            value = sink.options[key]
            if schema.option(key).type == "path":
                value = os.path.normcase(os.path.abspath(str(value)))
            identity.append(str(value))
        first = self.seen.get(tuple(identity))
        if first is None:
            self.seen[tuple(identity)] = f"{path} ({sink.name!r})"
            return
        written = [key for key in out.keys if key in entry]
        if written:
            default = ""
        else:
            default = f" (the default {out.keys[0]})" if len(out.keys) == 1 else " (the defaults)"
        what = out.what.format(**sink.options)
        ctx.error(
            _join(path, written[-1]) if written else path,
            f"sink {sink.name!r} and {first} both write to {what}{default}",
            out.fix.format(**sink.options),
        )


# --------------------------------------------------------------------------------------------
# documentation


def _doc_type(o: Option) -> str:
    if o.type == "choice":
        return "string: " + ", ".join(f"`{c}`" for c in o.choices)
    if o.type in ("integer", "number"):
        return f"{o.type} {_fmt(o.lo)}..{_fmt(o.hi)}"
    return "string" if o.type == "path" else o.type


def _doc_value(value: OptionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return _fmt(value)


def options_markdown(schema: SinkSchema) -> str:
    """The markdown table of ``schema``'s keys (docs/configuration.md, scripts/doc_tables.py)."""
    lines = ["| key | type | default | flag | meaning |", "| --- | --- | --- | --- | --- |"]
    for o in schema.options:
        default = o.doc_default or f"`{_doc_value(o.default)}`"
        lines.append(f"| `{o.key}` | {_doc_type(o)} | {default} | `{o.cli_flag}` | {o.help} |")
    return "\n".join(lines) + "\n"
