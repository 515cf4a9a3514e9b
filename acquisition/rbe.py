"""Report by exception: which samples of a tag a sink keeps, by a deadband, a longest interval
and a shortest spacing (docs/sinks.md "Report by exception").

Owns: the rule (``ExceptionRule``) and its decision for one sample (``keep``), the rules of one
sink, its default and per-tag overrides (``ReportByException``), the per-tag state that applies
them to a stream of samples (``ExceptionFilter``), and the reading of the keys of a ``[[sink]]``
section that configure them (``read_exception``: ``deadband``, ``max_interval_s``,
``min_spacing_s``, ``by_tag``). The SUB loop of every sink (``sinks/base.py``) runs the filter
between the bus and its batches; what the filter leaves out never reaches the output.

The rule, for a sample at receive time ``t`` (the publisher's monotonic clock, ``tm``) with
value ``v``, against the last sample of the same tag that was kept, ``(t0, v0)``:

1. the tag's first sample (or the first after a reset) is kept;
2. ``t - t0 < min_spacing_s``: left out, whatever the value;
3. no deadband: kept (the rule is only a spacing);
4. ``t - t0 >= max_interval_s``: kept, whatever the value;
5. kept when the value changed: a number (int or float, not bool) when it moved by **more
   than** ``deadband`` from ``v0`` (``deadband = 0``: any change); anything else (bool, string,
   array, UDT map, nil) when it is not equal to ``v0`` (NaN equals NaN here).

A time that goes backwards (a sample from another host's clock) counts as a first sample.
The comparison is always with the last *kept* sample, so a slow drift is kept once it adds up
to more than the deadband, and a change held back by ``min_spacing_s`` is kept by the first
sample after the spacing that still differs.

Pure: values and times in, decisions out; no clock.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyconpro.acquisition.toml_check import MISSING, IssueLog, Table, did_you_mean
from pyconpro.acquisition.toml_check import fmt as _fmt
from pyconpro.acquisition.toml_check import join as _join
from pyconpro.acquisition.wire import Value

__all__ = [
    "EXCEPTION_KEYS",
    "ExceptionFilter",
    "ExceptionRule",
    "ReportByException",
    "changed",
    "keep",
    "read_exception",
]

#: The keys of a ``[[sink]]`` section that this module reads.
EXCEPTION_KEYS: Final = ("deadband", "max_interval_s", "min_spacing_s", "by_tag")
_RULE_KEYS: Final = ("deadband", "max_interval_s", "min_spacing_s")
_MAX_S: Final = 31_622_400.0  # a year: longer intervals are mistakes


@dataclass(frozen=True, slots=True)
class ExceptionRule:
    """One tag's rule. ``deadband`` None: no change test (every sample passes it, only the
    spacing applies); ``max_interval_s`` None: no longest interval; ``min_spacing_s`` 0: no
    spacing. The default keeps every sample."""

    deadband: float | None = None
    max_interval_s: float | None = None
    min_spacing_s: float = 0.0

    @property
    def keeps_all(self) -> bool:
        return self.deadband is None and self.min_spacing_s == 0.0

    def section(self) -> dict[str, Any]:
        """The keys that differ from the default, as a section writes them."""
        out: dict[str, Any] = {}
        if self.deadband is not None:
            out["deadband"] = self.deadband
        if self.max_interval_s is not None:
            out["max_interval_s"] = self.max_interval_s
        if self.min_spacing_s:
            out["min_spacing_s"] = self.min_spacing_s
        return out


KEEP_ALL: Final = ExceptionRule()


def _number(x: Value) -> float | int | None:
    """``x`` when it is an int or a float (not a bool), else None."""
    return x if type(x) is int or type(x) is float else None


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN at any depth (a REAL tag holding NaN has not changed)."""
    if a == b:
        return True
    if type(a) is float and type(b) is float:
        return math.isnan(a) and math.isnan(b)
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(map(_same, a, b))
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    return False


def changed(before: Value, after: Value, deadband: float) -> bool:
    """Rule 5 of the module doc: has ``after`` changed from ``before``?"""
    a, b = _number(before), _number(after)
    if a is None or b is None:
        return not _same(before, after)
    if a == b or (math.isnan(a) and math.isnan(b)):
        return False
    if not (math.isfinite(a) and math.isfinite(b)):
        return True  # to, from or between NaN and the infinities: a change
    return abs(b - a) > deadband


def keep(rule: ExceptionRule, last: tuple[int, Value] | None, t_ns: int, value: Value) -> bool:
    """The rule of the module doc: keep the sample ``(t_ns, value)`` given the last kept one
    of its tag, ``last`` (None: there is none)?"""
    if last is None:
        return True
    t0, v0 = last
    dt = t_ns - t0
    if dt < 0:
        return True
    if dt < rule.min_spacing_s * 1e9:
        return False
    if rule.deadband is None:
        return True
    if rule.max_interval_s is not None and dt >= rule.max_interval_s * 1e9:
        return True
    return changed(v0, value, rule.deadband)


@dataclass(frozen=True, slots=True)
class ReportByException:
    """The rules of one sink: ``rule`` for every tag but those an entry of ``by_tag`` names
    (``"<plc>/<tag>"`` patterns with ``*``, ``?`` and ``[...]``, in the order written; the first
    that matches a tag's topic names wins)."""

    rule: ExceptionRule = KEEP_ALL
    by_tag: tuple[tuple[str, ExceptionRule], ...] = ()

    @property
    def active(self) -> bool:
        """False when every tag keeps every sample (the loop then runs no filter)."""
        return not (self.rule.keeps_all and all(r.keeps_all for _, r in self.by_tag))

    def rule_for(self, plc: str, tag: str) -> ExceptionRule:
        name = f"{plc}/{tag}"
        for pattern, rule in self.by_tag:
            if pattern == name or fnmatch.fnmatchcase(name, pattern):
                return rule
        return self.rule

    def section(self) -> dict[str, Any]:
        """The keys of a ``[[sink]]`` section that give these rules back (none: the default)."""
        out = self.rule.section()
        if self.by_tag:
            out["by_tag"] = {p: _override(self.rule, r) for p, r in self.by_tag}
        return out


def _override(base: ExceptionRule, rule: ExceptionRule) -> dict[str, Any]:
    """An entry of ``by_tag`` that turns ``base`` into ``rule``."""
    out: dict[str, Any] = {}
    if rule.deadband != base.deadband:
        out["deadband"] = False if rule.deadband is None else rule.deadband
    if rule.max_interval_s != base.max_interval_s:
        out["max_interval_s"] = 0.0 if rule.max_interval_s is None else rule.max_interval_s
    if rule.min_spacing_s != base.min_spacing_s:
        out["min_spacing_s"] = rule.min_spacing_s
    return out


class ExceptionFilter:
    """The rules of a sink applied to its samples, tag by tag: ``keep(plc, tag, t_ns, value)``
    for each sample in arrival order; ``reset(plc, tag)`` when something happened to the tag's
    data (an event, bus loss) so that its next sample is kept. Counts what it left out."""

    __slots__ = ("_last", "_rules", "config", "filtered")

    def __init__(self, config: ReportByException) -> None:
        self.config = config
        self.filtered = 0
        self._rules: dict[tuple[str, str], ExceptionRule] = {}
        self._last: dict[tuple[str, str], tuple[int, Value]] = {}

    def keep(self, plc: str, tag: str, t_ns: int, value: Value) -> bool:
        key = (plc, tag)
        rule = self._rules.get(key)
        if rule is None:
            rule = self._rules[key] = self.config.rule_for(plc, tag)
        if keep(rule, self._last.get(key), t_ns, value):
            self._last[key] = (t_ns, value)
            return True
        self.filtered += 1
        return False

    def reset(self, plc: str, tag: str) -> None:
        """Start ``tag`` over; an empty ``tag`` (a PLC-wide event): every tag of ``plc``."""
        if tag:
            self._last.pop((plc, tag), None)
        else:
            for key in [k for k in self._last if k[0] == plc]:
                del self._last[key]


# --------------------------------------------------------------------------------------------
# reading a [[sink]] section


def _read_deadband(t: Table, default: float | None, override: bool) -> float | None:
    """``deadband``: a number >= 0, or false (none) in a ``by_tag`` entry."""
    value = t.raw("deadband")
    if value is MISSING:
        return default
    if value is False and override:
        return None
    if type(value) in (int, float) and value >= 0 and math.isfinite(value):
        return float(value)
    t.ctx.error(
        t.key("deadband"),
        f"deadband = {value!r} is not a number >= 0",
        "write the change that makes a sample worth keeping, e.g. deadband = 0.5 (0: any"
        " change)" + ("; false: no deadband for these tags" if override else ""),
    )
    return default


def _read_rule(t: Table, base: ExceptionRule, override: bool) -> ExceptionRule:
    """The rule of table ``t``, keys not written taken from ``base``."""
    deadband = _read_deadband(t, base.deadband, override)
    interval = t.number("max_interval_s", base.max_interval_s, 0.0, _MAX_S, "s")
    if override and t.has("max_interval_s") and interval == 0:
        interval = None  # 0 in an entry: none, whatever the sink's is
    elif t.has("max_interval_s") and interval == 0:
        t.ctx.error(
            t.key("max_interval_s"),
            "max_interval_s = 0 would keep every sample",
            "give the longest time between two kept samples, e.g. max_interval_s = 60, or"
            " remove it",
        )
        interval = base.max_interval_s
    spacing = t.number("min_spacing_s", base.min_spacing_s, 0.0, _MAX_S, "s")
    rule = ExceptionRule(deadband, interval, spacing)
    if t.has("max_interval_s") and interval is not None and deadband is None:
        t.ctx.error(
            t.key("max_interval_s"),
            f"max_interval_s = {_fmt(interval)} without a deadband: every sample is kept anyway",
            "add deadband = 0 (keep changes, and an unchanged value every max_interval_s) or a"
            " larger deadband",
        )
    if interval is not None and interval <= spacing and (
        t.has("max_interval_s") or t.has("min_spacing_s")
    ):
        t.ctx.error(
            t.key("min_spacing_s" if t.has("min_spacing_s") else "max_interval_s"),
            f"min_spacing_s = {_fmt(spacing)} is not shorter than max_interval_s ="
            f" {_fmt(interval)}",
            "make min_spacing_s shorter than max_interval_s",
        )
    return rule


def _check_pattern(
    ctx: IssueLog, key: str, pattern: str, plcs: Mapping[str, Sequence[str]] | None
) -> bool:
    if pattern.count("/") != 1 or not all(pattern.split("/")):
        ctx.error(
            key,
            f"by_tag entry {pattern!r} is not a <plc>/<tag> pattern",
            'write the PLC and tag names (alias when set) with one "/", * and ? as wildcards,'
            ' e.g. "press1/Temp*" or "*/Alarms"',
        )
        return False
    if plcs is None:
        return True
    names = [f"{p}/{tag}" for p, tags in plcs.items() for tag in tags]
    if not any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in names):
        ctx.error(
            key,
            f"by_tag entry {pattern!r} matches no configured tag",
            did_you_mean(pattern, names) or f"tags are: {', '.join(names) or '(none)'}",
        )
    return True


def read_exception(
    t: Table, plcs: Mapping[str, Sequence[str]] | None = None
) -> ReportByException:
    """The report-by-exception keys of the ``[[sink]]`` table ``t`` (problems go to its log);
    ``plcs`` (PLC name -> tag topic names) lets ``by_tag`` patterns be checked."""
    rule = _read_rule(t, KEEP_ALL, override=False)
    entries = t.table("by_tag")
    by_tag: list[tuple[str, ExceptionRule]] = []
    for pattern, entry in entries.items():
        key = _join(t.key("by_tag"), pattern)  # as KeyLines indexes it: unquoted
        if not isinstance(entry, dict):
            t.ctx.error(
                key,
                f"by_tag entry {pattern!r} must be a table",
                f'write it as [sink.by_tag."{pattern}"] with deadband, max_interval_s,'
                " min_spacing_s",
            )
            continue
        if _check_pattern(t.ctx, key, pattern, plcs):
            sub = Table(t.ctx, key, entry, _RULE_KEYS)
            by_tag.append((pattern, _read_rule(sub, rule, override=True)))
    return ReportByException(rule, tuple(by_tag))
