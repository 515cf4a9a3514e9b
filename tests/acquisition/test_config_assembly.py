"""``[[plc.assembly]]`` in the config file: the typed entries, the consumer definitions a worker
gets from them, and every error (file, key, line, problem, fix)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyconpro.acquisition import config as cfg
from pyconpro.acquisition import control
from pyconpro.acquisition.assembly import MAP_KEYS, AssemblySpec, ConnectionKind, assembly_from_map
from pyconpro.acquisition.config import (
    AssemblyConfig,
    LayoutField,
    RouteHop,
    consumer_specs,
)

from tests.support.configs import one_file_issue as one_issue
from tests.support.configs import parse_file as parse

ROOT = Path(__file__).resolve().parents[2]

# Line 5 is the first "[[plc.assembly]]"; cases append keys to it from line 9 on.
BASE = """\
[[plc]]
name = "drive1"
address = "192.168.1.20"
rpi_ms = 10
  [[plc.assembly]]
  name = "status"
  connection = "input_only"
  input = 100
"""
FULL = BASE + """\
  output = 152
  config = 151
  layout = [{name = "speed", type = "INT"}, {name = "fault", type = "BOOL"}]
  [[plc.assembly]]
  name = "command"
  connection = "exclusive_owner"
  input = 100
  output = 150
  config = 151
  config_data = "0102 0304"
  input_size = 32
  output_size = 32
  ot_run_idle = true
  to_run_idle = true
  multiplier = 32
  ot_rpi_ms = 20
    [[plc.assembly.layout]]
    name = "count"
    type = "DINT"
    [[plc.assembly.layout]]
    name = "flags"
    type = "BOOL"
    offset = 8
    bit = 3
"""


def test_assembly_entries_are_typed_and_inherit_the_plc_settings() -> None:
    c = parse(FULL)
    [plc] = c.plcs
    assert plc.tags == () and plc.assembly_slot is None
    status, command = plc.assemblies
    assert status == AssemblyConfig(
        name="status", rpi_ms=10.0, ot_rpi_ms=10.0, multiplier=16,
        spec=AssemblySpec(ConnectionKind.INPUT_ONLY, input=100, output=152, config=151),
        layout=(LayoutField("speed", "INT"), LayoutField("fault", "BOOL")),
    )
    assert not status.exclusive_owner and command.exclusive_owner
    spec = command.spec
    assert (spec.config_data, spec.input_size, spec.output_size) == (
        bytes.fromhex("01020304"), 32, 32)
    assert (command.multiplier, command.ot_rpi_ms, spec.to_run_idle) == (32, 20.0, True)
    assert command.layout == (LayoutField("count", "DINT"), LayoutField("flags", "BOOL", 8, 3))
    assert command.describe() == "exclusive_owner input 100 output 150 config 151"


def test_consumer_specs_give_the_worker_the_assembly_map_and_no_slot() -> None:
    specs = consumer_specs(parse(FULL))["drive1"]
    assert [(s.tag, s.slot, s.hops, s.multicast, s.size) for s in specs] == [
        ("status", None, (), False, None), ("command", None, (), False, None)]
    status, command = specs
    assert (command.rpi_us, command.ot_rpi_us, command.multiplier) == (10_000, 20_000, 3)
    d = control.consumer_from_spec(command)
    assert d.assembly == {
        "connection": "exclusive_owner", "input": 100, "output": 150, "config": 151,
        "input_size": 32, "output_size": 32, "config_data": "01020304",
        "ot_run_idle": True, "to_run_idle": True,
        "layout": [{"name": "count", "type": "DINT"},
                   {"name": "flags", "type": "BOOL", "offset": 8, "bit": 3}],
    }
    # What the worker gets over its control socket is the same definition, and it opens.
    again = control.consumer_from_map(control.consumer_to_map(d))
    assert again == d and again.slot is None
    spec, layout = assembly_from_map(d.tag, d.assembly or {})
    assert spec.connection_path() == bytes.fromhex("2004 2497 2C96 2C64 8002 01020304")
    assert layout is not None and [m.name for m in layout.members] == ["count", "flags"]
    p = control.consumer_from_spec(status).params()
    assert p.assembly is not None and p.connection_path() == bytes.fromhex("20042497 2C98 2C64")
    assert hash(status) == hash(consumer_specs(parse(FULL))["drive1"][0])


def test_a_slot_written_on_the_plc_puts_the_backplane_hop_in_the_assembly_path() -> None:
    text = FULL.replace('rpi_ms = 10\n', 'rpi_ms = 10\nslot = 2\nroute = [["enet", "10.0.0.9"]]\n',
                        1)
    status = consumer_specs(parse(text))["drive1"][0]
    assert status.slot == 2
    assert status.hops == (RouteHop(2, "10.0.0.9"), RouteHop(1, 2))
    path = control.consumer_from_spec(status).params().connection_path()
    assert path.startswith(bytes.fromhex("1208") + b"10.0.0.9" + bytes.fromhex("0102"))


def test_tags_and_assemblies_of_one_plc_keep_their_own_slot_default() -> None:
    text = BASE + '  output = 152\n  [[plc.tag]]\n  name = "Speed"\n'
    specs = consumer_specs(parse(text))["drive1"]
    assert [(s.tag, s.slot) for s in specs] == [("Speed", 0), ("status", None)]


def test_a_raw_path_replaces_the_points() -> None:
    text = BASE.replace("  input = 100\n", '  path = "20 04 24 97 2C 98 2C 64"\n')
    [a] = parse(text).plcs[0].assemblies
    assert a.spec.raw_path == bytes.fromhex("200424972C982C64")
    assert control.consumer_from_spec(consumer_specs(parse(text))["drive1"][0]).assembly == {
        "connection": "input_only", "path": "200424972c982c64", "ot_run_idle": True,
        "to_run_idle": False}


def test_sink_topics_may_name_an_assembly() -> None:
    text = FULL + '[[sink]]\nkind = "stdout"\ntopics = ["sample/drive1/status/"]\n'
    assert parse(text).sinks[0].topics == ("sample/drive1/status/",)


@pytest.mark.parametrize(("lines", "key", "line", "needle"), [
    ("", "plc[0].assembly[0].output", 5, "missing required key 'output'"),
    ('output = 152\nconection = "x"', "plc[0].assembly[0].conection", 10,
     "did you mean 'connection'"),
    ('output = 152\ntransport = "multicast"', "plc[0].assembly[0].transport", 10,
     "unknown key 'transport'"),
    ("output = 152\ninput_size = 600", "plc[0].assembly[0].input_size", 10,
     "above the 505 bytes maximum"),
    ("output = 70000", "plc[0].assembly[0].output", 9, "above the 65535 maximum"),
    ('output = 152\nconfig_data = "zz"', "plc[0].assembly[0].config_data", 10, "not hex"),
    ('output = 152\nconfig_data = "010203"', "plc[0].assembly[0].config_data", 10,
     "an even number of bytes"),
    ('output = 152\npath = "20 04 24"', "plc[0].assembly[0].path", 10, "even number of bytes"),
    ("output = 152\noutput_size = 4", "plc[0].assembly[0].output_size", 10,
     "sends no output data"),
    ('output = 152\nlayout = [{name = "s", type = "STRING"}]', "plc[0].assembly[0].layout", 10,
     "atomic type"),
    ('output = 152\nlayout = [{name = "s"}]', "plc[0].assembly[0].layout[0].type", 10,
     "missing required key 'type'"),
    ('output = 152\nlayout = [{name = "s", type = "INT", offset = 2, bits = 1}]',
     "plc[0].assembly[0].layout[0].bits", 10, "did you mean 'bit'"),
    ('output = 152\nlayout = "INT"', "plc[0].assembly[0].layout", 10,
     "layout must be an array of fields"),
    ("output = 152\nto_run_idle = 1", "plc[0].assembly[0].to_run_idle", 10, "true or false"),
    ("output = 152\nrpi_ms = 0.1", "plc[0].assembly[0].rpi_ms", 10, "below the 0.5 ms minimum"),
])  # fmt: skip
def test_assembly_errors_name_the_key_its_line_and_the_fix(
    lines: str, key: str, line: int, needle: str
) -> None:
    issue = one_issue(BASE + "".join(f"  {x}\n" for x in lines.splitlines()))
    assert (issue.file, issue.key, issue.line) == ("plant.toml", key, line), str(issue)
    assert needle in str(issue) and issue.fix


def test_connection_is_required_and_one_of_three() -> None:
    issue = one_issue(BASE.replace('  connection = "input_only"\n', "") + "  output = 152\n")
    assert issue.key == "plc[0].assembly[0].connection"
    assert "'exclusive_owner', 'input_only', 'listen_only'" in issue.fix
    issue = one_issue(BASE.replace("input_only", "input-only") + "  output = 152\n")
    assert (issue.key, issue.line) == ("plc[0].assembly[0].connection", 7)
    assert "did you mean 'input_only'" in issue.fix


def test_an_assembly_name_is_a_topic_segment_unique_among_the_plcs_topics() -> None:
    issue = one_issue(BASE.replace('"status"', '"a/b"') + "  output = 152\n")
    assert issue.key == "plc[0].assembly[0].name" and "topic segment" in issue.problem
    text = BASE + '  output = 152\n  [[plc.tag]]\n  name = "Speed"\n  alias = "status"\n'
    issue = one_issue(text)
    assert issue.key == "plc[0].assembly[0].name"
    assert "already used by plc[0].tag[0]" in issue.problem


def test_a_plc_needs_tags_or_assemblies() -> None:
    issue = one_issue('[[plc]]\nname = "x"\naddress = "10.0.0.1"\n')
    assert "[[plc.assembly]]" in issue.fix


def test_every_assembly_key_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## `[[plc.assembly]]`", 1)[1].split("\n## ", 1)[0]
    assert [k for k in (*cfg._ASSEMBLY_KEYS, *cfg._LAYOUT_KEYS) if f"`{k}`" not in section] == []
    assert set(cfg._ASSEMBLY_KEYS) >= set(MAP_KEYS)
    assert "`assembly`" in text.split("## `[[plc]]`", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(("doc", "heading"), [
    ("README.md", "## Generic adapters"),
    ("docs/configuration.md", "## `[[plc.assembly]]`"),
])
def test_the_documented_examples_are_valid(doc: str, heading: str) -> None:
    section = (ROOT / doc).read_text(encoding="utf-8").split(heading, 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    [plc] = parse(example).plcs
    assert [(a.name, a.exclusive_owner) for a in plc.assemblies] == [
        ("status", False), ("command", True)]
    assert plc.assembly_slot is None and plc.assemblies[0].layout


OWNER = BASE.replace("input_only", "exclusive_owner") + "  output = 150\n"


def test_an_output_layout_reaches_the_worker_and_fits_the_output_size() -> None:
    text = OWNER + """\
  output_size = 4
  output_layout = [{name = "speed", type = "INT"}, {name = "run", type = "BOOL", bit = 2}]
"""
    [command] = parse(text).plcs[0].assemblies
    assert command.output_layout == (LayoutField("speed", "INT"), LayoutField("run", "BOOL",
                                                                               None, 2))
    d = control.consumer_from_spec(consumer_specs(parse(text))["drive1"][0])
    assert d.assembly is not None and d.assembly["output_layout"] == [
        {"name": "speed", "type": "INT"}, {"name": "run", "type": "BOOL", "bit": 2}]
    p = control.consumer_from_map(control.consumer_to_map(d)).params()
    assert p.output_layout is not None and p.output_layout.size == 4
    assert [(m.name, m.offset, m.bit) for m in p.output_layout.members] == [
        ("speed", 0, None), ("run", 2, 2)]


@pytest.mark.parametrize(("lines", "key", "line", "needle"), [
    ('output_size = 2\noutput_layout = [{name = "a", type = "DINT"}]',
     "plc[0].assembly[0].output_layout", 11, "its fields need 4 bytes but the assembly is 2"),
    ('output_layout = [{name = "a", type = "STRING"}]', "plc[0].assembly[0].output_layout", 10,
     "atomic type"),
    ('output_layout = [{name = "a", type = "INT", bit = 9}]',
     "plc[0].assembly[0].output_layout[0].bit", 10, "above the 7 maximum"),
    ('output_layout = "INT"', "plc[0].assembly[0].output_layout", 10,
     "output_layout must be an array of fields"),
])  # fmt: skip
def test_output_layout_errors_name_the_key_its_line_and_the_fix(
    lines: str, key: str, line: int, needle: str
) -> None:
    issue = one_issue(OWNER + "".join(f"  {x}\n" for x in lines.splitlines()))
    assert (issue.file, issue.key, issue.line) == ("plant.toml", key, line), str(issue)
    assert needle in str(issue) and issue.fix


def test_an_output_layout_on_a_heartbeat_connection_is_refused() -> None:
    issue = one_issue(BASE + '  output = 152\n  output_layout = [{name = "a", type = "INT"}]\n')
    assert issue.key == "plc[0].assembly[0].output_layout"
    assert "sends no output data" in issue.problem and "leave output_layout out" in issue.problem
