"""The core's reading of ``[[sink]]`` sections, with schemas declared here: whatever a sink
kind declares (every option type, a check, the options naming its output) is validated, given
defaults, resolved and round-tripped the same way, without the core knowing any real sink."""

from __future__ import annotations

from typing import Any

import pytest
from pyconpro.acquisition.config import ConfigError, parse_config
from pyconpro.acquisition.sink_config import (
    Option,
    Output,
    SinkConfig,
    SinkSchema,
    options_markdown,
    parse_sink_section,
)

BASE = '[[plc]]\nname = "p"\naddress = "10.0.0.1"\n  [[plc.tag]]\n  name = "T"\n'


def _even(n: int) -> tuple[str, str] | None:
    return None if n % 2 == 0 else (f"level = {n} is odd", "use an even level")


PROBE = SinkSchema(
    kind="probe",
    help="a sink kind of this test",
    options=(
        Option("file", "path", "probe.out", "Where."),
        Option("label", "string", "x", "A label."),
        Option("level", "integer", 2, "A level.", lo=0, hi=10, check=_even),
        Option("ratio", "number", 0.5, "A ratio.", lo=0.0, hi=1.0, unit="s"),
        Option("loud", "boolean", False, "Louder."),
        Option("mode", "choice", "FAST", "A mode.", choices=("FAST", "SAFE"), fold=True),
    ),
    output=Output(keys=("file", "label"), what="{file} as {label}", fix="change label",
                  where="{file}"),  # fmt: skip
    flush_interval_s=0.25,
)
OTHER = SinkSchema(kind="other", help="another", options=(Option("level", "integer", 1, "L",
                                                                  lo=0, hi=3),
                                                           Option("color", "string", "", "C")))
KINDS = {"probe": PROBE, "other": OTHER}


def issues(text: str) -> list[tuple[str, int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text, "f.toml", sink_kinds=KINDS)
    return [(i.key, i.line, i.problem, i.fix) for i in info.value.issues]


def test_defaults_types_and_paths() -> None:
    text = BASE + '[[sink]]\nkind = "probe"\nmode = "safe"\nratio = 1\n[[sink]]\nkind = "other"\n'
    c = parse_config(text, sink_kinds=KINDS, base_dir="/etc/pp")
    probe, other = c.sinks
    assert probe == SinkConfig(
        kind="probe", name="probe-0", flush_interval_s=0.25,
        options={"file": "/etc/pp/probe.out", "label": "x", "level": 2, "ratio": 1.0,
                 "loud": False, "mode": "SAFE"},
    )  # fmt: skip
    assert (other.name, dict(other.options), other.flush_interval_s) == (
        "other-1", {"level": 1, "color": ""}, 1.0)  # fmt: skip
    assert parse_sink_section(probe.section(), KINDS) == probe
    assert PROBE.where(probe.options) == "/etc/pp/probe.out"


def test_each_option_is_checked_with_its_key_and_line() -> None:
    found = issues('[[sink]]\nkind = "probe"\nlevel = 3\nratio = 2\nloud = "y"\ncolor = "r"\n'
                   'mode = "slow"\nfile = ""\nlabl = "a"\n')  # fmt: skip
    assert found == [
        ("sink[0].color", 11, "color is not an option of sink kind 'probe'",
         "it applies to kind 'other'; remove it"),
        ("sink[0].labl", 14, "unknown key 'labl' in [sink[0]]", "did you mean 'label'?"),
        ("sink[0].file", 13, "file is empty", 'write a file, e.g. file = "probe.out"'),
        ("sink[0].level", 8, "level = 3 is odd", "use an even level"),
        ("sink[0].ratio", 9, "ratio = 2 is above the 1 s maximum", "use a value between 0 and 1"),
        ("sink[0].loud", 10, "loud must be true or false, not a string",
         "write true or false without quotes"),
        ("sink[0].mode", 12, "mode = 'slow' is not one of \"FAST\", \"SAFE\"",
         'use one of "FAST", "SAFE"'),
    ]  # fmt: skip


def test_an_unknown_kind_is_refused_and_its_options_are_not_read() -> None:
    found = issues('[[sink]]\nkind = "nope"\nlevel = 2\n')
    assert [f[0] for f in found] == ["sink[0].kind"]
    assert found[0][2] == "kind = 'nope' is not one of \"probe\", \"other\""


def test_two_sinks_on_one_output_are_refused_on_the_key_last_written() -> None:
    dup = '[[sink]]\nkind = "probe"\n[[sink]]\nkind = "probe"\nlabel = "x"\n'
    assert issues(dup) == [("sink[1].label", 10,
                            "sink 'probe-1' and sink[0] ('probe-0') both write to probe.out as x",
                            "change label")]  # fmt: skip
    assert issues('[[sink]]\nkind = "probe"\n[[sink]]\nkind = "probe"\n')[0][2].endswith(
        "(the defaults)")
    # the same values for another kind, or another label, are another output
    parse_config(BASE + '[[sink]]\nkind = "probe"\n[[sink]]\nkind = "probe"\nlabel = "y"\n'
                 '[[sink]]\nkind = "other"\n[[sink]]\nkind = "other"\n', sink_kinds=KINDS)


def _pair(o: Any) -> list[tuple[str, str, str]]:
    return [("label", "label is set without file", "set file too")] if o["label"] and \
        not o["file"] else []  # fmt: skip


PAIRED = SinkSchema(kind="paired", help="options that go together", options=(
    Option("file", "path", "", "Where."), Option("label", "string", "", "A label."),
    Option("level", "integer", 2, "A level.", lo=0, hi=10, check=_even)), check=_pair)


def test_options_that_do_not_go_together_are_refused_on_the_key_the_check_names() -> None:
    """The kind's section check sees the options together once each passed its own checks;
    its problem has the key and line of the file, like any other."""
    kinds = {"paired": PAIRED}
    text = BASE + '[[sink]]\nkind = "paired"\nlevel = 4\nlabel = "a"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "f.toml", sink_kinds=kinds)
    assert [(i.key, i.line, i.problem, i.fix) for i in info.value.issues] == [
        ("sink[0].label", 9, "label is set without file", "set file too")]
    # an option refused on its own: the section check does not add to it
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("level = 4", "level = 3"), "f.toml", sink_kinds=kinds)
    assert [i.key for i in info.value.issues] == ["sink[0].level"]
    sink = parse_config(text + 'file = "x"\n', sink_kinds=kinds, base_dir="/d").sinks[0]
    assert dict(sink.options) == {"file": "/d/x", "label": "a", "level": 4}


def test_validate_runs_the_same_rules_on_options_given_in_code() -> None:
    PAIRED.validate({"file": "", "label": "", "level": 4})
    PAIRED.validate({"file": "", "label": ""})  # a key not given is not checked
    with pytest.raises(ValueError, match="^level = 3 is odd: use an even level$"):
        PAIRED.validate({"file": "", "label": "", "level": 3})
    with pytest.raises(ValueError, match="^label is set without file: set file too$"):
        PAIRED.validate({"file": "", "label": "a", "level": 4})


def test_schemas_that_cannot_work_are_refused_where_declared() -> None:
    bad: list[Any] = [
        lambda: Option("topics", "string", "", "clashes with a common key"),
        lambda: Option("n", "integer", 5, "default outside", lo=0, hi=3),
        lambda: Option("m", "choice", "C", "default not a choice", choices=("A",)),
        lambda: SinkSchema("k", "twice", options=(Option("a", "boolean", False, ""),) * 2),
        lambda: SinkSchema("k", "output", output=Output(("a",), "", "", "")),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()


def test_options_markdown_lists_every_key_with_its_flag() -> None:
    table = options_markdown(PROBE).splitlines()
    assert table[0] == "| key | type | default | flag | meaning |"
    assert table[2] == '| `file` | string | `"probe.out"` | `--file` | Where. |'
    assert table[4] == "| `level` | integer 0..10 | `2` | `--level` | A level. |"
    assert table[6] == "| `loud` | boolean | `false` | `--loud` | Louder. |"
    assert table[7] == "| `mode` | string: `FAST`, `SAFE` | `\"FAST\"` | `--mode` | A mode. |"
