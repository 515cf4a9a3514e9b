"""Report by exception (acquisition/rbe.py): the rule over every branch, a sine through a
deadband against an independent computation, the longest interval and the shortest spacing,
"any change" for values that are not numbers, per-tag rules, and the [[sink]] keys."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pyconpro.acquisition.config import ConfigError, parse_config
from pyconpro.acquisition.rbe import (
    ExceptionFilter,
    ExceptionRule,
    ReportByException,
    changed,
    keep,
)
from pyconpro.acquisition.sink_config import SinkSchema, parse_sink_section
from pyconpro.acquisition.wire import Value

MS = 1_000_000  # ns
KINDS = {"probe": SinkSchema(kind="probe", help="a sink kind of this test")}
BASE = ('[[plc]]\nname = "p"\naddress = "10.0.0.1"\n  [[plc.tag]]\n  name = "Temp1"\n'
        '  [[plc.tag]]\n  name = "Temp2"\n  [[plc.tag]]\n  name = "Alarm"\n'
        '[[sink]]\nkind = "probe"\n')  # fmt: skip


def run(rule: ExceptionRule, samples: list[tuple[int, Value]]) -> list[int]:
    """Indices of ``samples`` (time ns, value) of one tag that the filter keeps."""
    f = ExceptionFilter(ReportByException(rule))
    return [i for i, (t, v) in enumerate(samples) if f.keep("p", "T", t, v)]


# --------------------------------------------------------------------------- the deadband


def test_a_sine_through_a_deadband_keeps_exactly_the_samples_the_rule_says() -> None:
    # 2 s of a sine of amplitude 10 and period 1 s, every 10 ms, through a deadband of 1.5.
    samples: list[tuple[int, Value]] = [
        (i * 10 * MS, 10 * math.sin(2 * math.pi * i / 100)) for i in range(200)
    ]
    kept = run(ExceptionRule(deadband=1.5), samples)
    # What the rule says, computed here from the values alone: a sample is kept when it is
    # more than 1.5 away from the last sample kept; the first is kept.
    expected, ref = [0], samples[0][1]
    for i, (_t, v) in enumerate(samples[1:], start=1):
        assert isinstance(v, float) and isinstance(ref, float)
        if abs(v - ref) > 1.5:
            expected.append(i)
            ref = v
    assert kept == expected
    # ... which keeps far fewer than the 200, and each kept value crossed the band.
    assert 20 < len(kept) < 100
    values = [samples[i][1] for i in kept]
    assert all(abs(b - a) > 1.5 for a, b in zip(values, values[1:]))  # type: ignore[operator]


def test_deadband_compares_with_the_last_kept_value_so_a_drift_is_kept_once_it_adds_up() -> None:
    samples: list[tuple[int, Value]] = [(i * MS, 0.3 * i) for i in range(12)]
    # 0, 0.3, 0.6 | 0.9 ... : each step is within 1, the sum is not.
    assert run(ExceptionRule(deadband=1.0), samples) == [0, 4, 8]


@pytest.mark.parametrize(
    ("before", "after", "deadband", "expected"),
    [
        (10, 10, 0.0, False),
        (10, 11, 0.0, True),  # deadband 0: any change
        (10, 11, 1.0, False),  # exactly the deadband is not more than it
        (10, 12, 1.0, True),
        (10, 8.9, 1.0, True),  # both directions
        (1.5, 1, 0.5, False),  # int and float compare as numbers
        (2**63, 2**63 + 1, 0.0, True),  # large integers exactly
        (math.nan, math.nan, 0.0, False),  # NaN stays NaN: no change
        (math.nan, 1.0, 100.0, True),
        (1.0, math.nan, 100.0, True),
        (math.inf, math.inf, 0.0, False),
        (math.inf, -math.inf, 0.0, True),
        (1.0, math.inf, 1e300, True),
        (True, True, 5.0, False),  # bools are not numbers here: any change, deadband or not
        (True, False, 5.0, True),
        ("run", "run", 0.0, False),
        ("run", "stop", 1e9, True),  # strings: any change
        ([1.0, 2.0], [1.0, 2.0], 0.0, False),
        ([1.0, 2.0], [1.0, 2.1], 5.0, True),  # arrays: any change, whatever the deadband
        ([1.0, math.nan], [1.0, math.nan], 0.0, False),
        ({"a": 1, "b": [math.nan]}, {"a": 1, "b": [math.nan]}, 0.0, False),
        ({"a": 1, "b": "x"}, {"a": 1, "b": "y"}, 10.0, True),  # UDTs: any change
        ({"a": 1}, {"a": 1, "b": 2}, 0.0, True),
        ([1], [1, 1], 0.0, True),
        (None, None, 0.0, False),  # a value the worker could not decode, twice
        (None, 1, 0.0, True),
        (1, "1", 0.0, True),
    ],
)
def test_changed(before: Value, after: Value, deadband: float, expected: bool) -> None:
    assert changed(before, after, deadband) is expected


def test_structures_and_strings_are_kept_on_any_change_only() -> None:
    values: list[Value] = [
        {"Stamp": 1, "Mode": "RUN"}, {"Stamp": 1, "Mode": "RUN"}, {"Stamp": 1, "Mode": "STOP"},
        {"Stamp": 1, "Mode": "STOP"}, {"Stamp": 2, "Mode": "STOP"},
    ]  # fmt: skip
    assert run(ExceptionRule(deadband=1000.0), [(i * MS, v) for i, v in enumerate(values)]) == [
        0, 2, 4]  # fmt: skip
    text: list[Value] = ["a", "a", "b", "b", "a"]
    assert run(ExceptionRule(deadband=0.0), [(i * MS, v) for i, v in enumerate(text)]) == [
        0, 2, 4]  # fmt: skip


# --------------------------------------------------------------------------- time


def test_max_interval_keeps_an_unchanged_value_that_often() -> None:
    # A constant every 100 ms for 3.5 s, at most 1 s apart: t = 0, 1.0, 2.0, 3.0 s.
    samples: list[tuple[int, Value]] = [(i * 100 * MS, 7) for i in range(36)]
    assert run(ExceptionRule(deadband=0.0, max_interval_s=1.0), samples) == [0, 10, 20, 30]
    # Measured from the last kept sample, whatever kept it: a change at 0.5 s moves it.
    changing: list[tuple[int, Value]] = [(t, 8 if t >= 500 * MS else 7) for t, _ in samples]
    assert run(ExceptionRule(deadband=0.0, max_interval_s=1.0), changing) == [0, 5, 15, 25, 35]


def test_min_spacing_drops_samples_closer_than_it_whatever_they_hold() -> None:
    # A new value every 10 ms, at most one sample per 50 ms: every fifth one.
    samples: list[tuple[int, Value]] = [(i * 10 * MS, i) for i in range(21)]
    assert run(ExceptionRule(min_spacing_s=0.05), samples) == [0, 5, 10, 15, 20]
    # With a deadband too, a change held back by the spacing is kept by the first sample
    # after it that still differs from the last kept value.
    steps: list[tuple[int, Value]] = [(i * 10 * MS, 0 if i < 2 else 5) for i in range(10)]
    assert run(ExceptionRule(deadband=1.0, min_spacing_s=0.05), steps) == [0, 5]


def test_min_spacing_wins_over_max_interval_and_time_going_back_starts_over() -> None:
    rule = ExceptionRule(deadband=0.0, max_interval_s=1.0, min_spacing_s=0.5)
    assert keep(rule, None, 0, 1)
    assert not keep(rule, (0, 1), 400 * MS, 2)  # changed, but too soon
    assert keep(rule, (0, 1), 500 * MS, 2)
    assert not keep(rule, (0, 1), 999 * MS, 1)
    assert keep(rule, (0, 1), 1000 * MS, 1)  # unchanged, but due
    assert keep(rule, (5000 * MS, 1), 100 * MS, 1)  # a clock from elsewhere: kept


def test_the_default_rule_keeps_every_sample() -> None:
    samples: list[tuple[int, Value]] = [(0, 1)] * 5
    assert run(ExceptionRule(), samples) == [0, 1, 2, 3, 4]
    assert not ReportByException().active
    assert ReportByException(ExceptionRule(), (("p/*", ExceptionRule(deadband=0.0)),)).active


# --------------------------------------------------------------------------- tags


def test_per_tag_rules_first_match_wins_and_each_tag_has_its_own_state() -> None:
    slow, alarms = ExceptionRule(deadband=5.0), ExceptionRule()
    rbe = ReportByException(ExceptionRule(deadband=0.0),
                            (("p/Alarm", alarms), ("p/Temp*", slow), ("*/*", alarms)))  # fmt: skip
    assert rbe.rule_for("p", "Temp1") is slow
    assert rbe.rule_for("p", "Alarm") is alarms
    assert rbe.rule_for("q", "X") is alarms
    f = ExceptionFilter(ReportByException(ExceptionRule(deadband=0.0), (("p/Temp*", slow),)))
    assert [f.keep("p", "Temp1", i, 1 + i) for i in range(3)] == [True, False, False]
    assert [f.keep("p", "Other", i, 1 + i) for i in range(3)] == [True, True, True]
    assert [f.keep("p", "Other", 3 + i, 3) for i in range(3)] == [False, False, False]
    assert f.filtered == 5


def test_reset_keeps_the_next_sample_of_the_tag_or_of_every_tag_of_the_plc() -> None:
    f = ExceptionFilter(ReportByException(ExceptionRule(deadband=0.0)))
    for tag in ("A", "B"):
        assert f.keep("p", tag, 0, 1)
        assert f.keep("q", tag, 0, 1)
    f.reset("p", "A")
    assert f.keep("p", "A", 1, 1)
    assert not f.keep("p", "B", 1, 1)
    f.reset("p", "")  # a PLC-wide event
    assert f.keep("p", "A", 2, 1) and f.keep("p", "B", 2, 1)
    assert not f.keep("q", "A", 2, 1)


# --------------------------------------------------------------------------- the keys


def read(text: str) -> ReportByException:
    return parse_config(BASE + text, "f.toml", sink_kinds=KINDS).sinks[0].exception


def issues(text: str) -> list[tuple[str, int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text, "f.toml", sink_kinds=KINDS)
    return [(i.key, i.line, i.problem, i.fix) for i in info.value.issues]


def test_keys_and_per_tag_entries_inherit_from_the_sink() -> None:
    assert read("") == ReportByException()
    rbe = read('deadband = 0.5\nmax_interval_s = 60\n[sink.by_tag."p/Temp*"]\ndeadband = 2\n'
               '[sink.by_tag."p/Alarm"]\ndeadband = false\nmin_spacing_s = 1\n'
               '[sink.by_tag."*/Temp2"]\nmax_interval_s = 0\n')  # fmt: skip
    assert rbe == ReportByException(
        ExceptionRule(0.5, 60.0),
        (("p/Temp*", ExceptionRule(2.0, 60.0)), ("p/Alarm", ExceptionRule(None, 60.0, 1.0)),
         ("*/Temp2", ExceptionRule(0.5, None))),
    )  # fmt: skip
    c = parse_config(BASE + 'deadband = 0.5\nmax_interval_s = 60\n[sink.by_tag."p/Alarm"]\n'
                     "deadband = false\n", "f.toml", sink_kinds=KINDS).sinks[0]  # fmt: skip
    assert parse_sink_section(c.section(), KINDS) == c  # a section gives the rules back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deadband = -1\n", [("sink[0].deadband", 12, "deadband = -1 is not a number >= 0",
                              "write the change that makes a sample worth keeping, e.g."
                              " deadband = 0.5 (0: any change)")]),
        ("deadband = false\n", [("sink[0].deadband", 12, "deadband = False is not a number >= 0",
                                 "write the change that makes a sample worth keeping, e.g."
                                 " deadband = 0.5 (0: any change)")]),
        ("max_interval_s = 60\n", [(
            "sink[0].max_interval_s", 12,
            "max_interval_s = 60 without a deadband: every sample is kept anyway",
            "add deadband = 0 (keep changes, and an unchanged value every max_interval_s) or a"
            " larger deadband")]),
        ("deadband = 0\nmax_interval_s = 0\n", [(
            "sink[0].max_interval_s", 13, "max_interval_s = 0 would keep every sample",
            "give the longest time between two kept samples, e.g. max_interval_s = 60, or"
            " remove it")]),
        ("deadband = 0\nmax_interval_s = 1\nmin_spacing_s = 1\n", [(
            "sink[0].min_spacing_s", 14, "min_spacing_s = 1 is not shorter than"
            " max_interval_s = 1", "make min_spacing_s shorter than max_interval_s")]),
        ("min_spacing_s = -1\n", [("sink[0].min_spacing_s", 12,
                                   "min_spacing_s = -1 is below the 0 s minimum",
                                   "use a value between 0 and 31622400")]),
        ("by_tag = 1\n", [("sink[0].by_tag", 12, "by_tag must be a table, not an integer",
                           "write it as a [sink[0].by_tag] section")]),
        ('[sink.by_tag."Temp1"]\ndeadband = 1\n', [(
            "sink[0].by_tag.Temp1", 12, "by_tag entry 'Temp1' is not a <plc>/<tag> pattern",
            'write the PLC and tag names (alias when set) with one "/", * and ? as wildcards,'
            ' e.g. "press1/Temp*" or "*/Alarms"')]),
        ('[sink.by_tag."p/Tmp1"]\ndeadband = 1\n', [(
            "sink[0].by_tag.p/Tmp1", 12, "by_tag entry 'p/Tmp1' matches no configured tag",
            "did you mean 'p/Temp1'?")]),
        ('[sink.by_tag."p/Temp1"]\ndeadbnd = 1\n', [(
            "sink[0].by_tag.p/Temp1.deadbnd", 13,
            "unknown key 'deadbnd' in [sink[0].by_tag.p/Temp1]", "did you mean 'deadband'?")]),
        ('by_tag = {"p/Temp1" = 3}\n', [(
            "sink[0].by_tag.p/Temp1", 12, "by_tag entry 'p/Temp1' must be a table",
            'write it as [sink.by_tag."p/Temp1"] with deadband, max_interval_s, min_spacing_s')]),
        ('deadband = 1\n[sink.by_tag."p/Temp1"]\nmax_interval_s = 5\nmin_spacing_s = 9\n', [(
            "sink[0].by_tag.p/Temp1.min_spacing_s", 15,
            "min_spacing_s = 9 is not shorter than max_interval_s = 5",
            "make min_spacing_s shorter than max_interval_s")]),
    ],
)
def test_mistakes_are_reported_with_key_line_and_fix(
    text: str, expected: list[tuple[str, int | None, str, str]]
) -> None:
    assert issues(text) == expected


def test_a_section_without_its_file_checks_patterns_but_not_tag_names() -> None:
    section: dict[str, Any] = {"kind": "probe", "deadband": 1,
                               "by_tag": {"x/Y*": {"deadband": 2}}}  # fmt: skip
    sink = parse_sink_section(section, KINDS)
    assert sink.exception.rule_for("x", "Yes") == ExceptionRule(2.0)
    with pytest.raises(ConfigError, match="not a <plc>/<tag> pattern"):
        parse_sink_section({**section, "by_tag": {"Y": {}}}, KINDS)
