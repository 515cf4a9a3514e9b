"""The supervisor's plan for assembly consumers (pure): the worker of a PLC with an exclusive
owner reads output images from the bus (``--bus-connect``), every consumer reaches the worker
through its control map, and an assembly has no ``--consumer`` text."""

from __future__ import annotations

import pytest
from pyconpro.acquisition import control
from pyconpro.acquisition.config import consumer_specs, group_by_local_address, parse_config
from pyconpro.acquisition.errors import UsageError
from pyconpro.sinks.registry import sink_schemas
from pyconpro.workers.io_worker import _parser
from pyconpro.workers.supervisor import (
    ChildSpec,
    Runtime,
    consumer_key,
    consumer_map,
    consumer_text,
    plan_children,
)

TEXT = """
[bus]
control_base = "ipc:///tmp/pyconpro-plan-test"
[[plc]]
name = "io"
address = "10.0.0.5"
local_address = "10.0.0.1"
  [[plc.assembly]]
  name = "inputs"
  connection = "input_only"
  input = 100
  output = 152
[[plc]]
name = "line1"
address = "10.0.1.5"
local_address = "10.0.1.1"
  [[plc.tag]]
  name = "Speed"
"""
OWNER = """  [[plc.assembly]]
  name = "drive"
  connection = "exclusive_owner"
  input = 100
  output = 150
"""


def plan(text: str) -> dict[str, ChildSpec]:
    cfg = parse_config(text, "p.toml", sink_kinds=sink_schemas())
    groups = group_by_local_address(cfg, lambda a: "127.0.0.1")
    return plan_children(cfg, groups, Runtime(bus_connect="ipc:///bus", python="py"))


def test_only_the_worker_of_an_exclusive_owner_reads_output_images_from_the_bus() -> None:
    before = plan(TEXT)
    assert all("--bus-connect" not in w.argv for w in before.values())
    after = plan(TEXT.replace("[[plc]]\nname = \"line1\"", OWNER + "[[plc]]\nname = \"line1\""))
    io, line1 = after["worker-10.0.0.1"], after["worker-10.0.1.1"]
    assert io.argv[io.argv.index("--bus-connect") + 1] == "ipc:///bus"
    assert _parser().parse_args(list(io.argv[3:])).bus_connect == "ipc:///bus"
    assert "--bus-connect" not in line1.argv
    assert [consumer_key(c) for c in io.consumers] == ["io/inputs", "io/drive"]


def test_assembly_consumers_go_to_the_worker_as_control_maps_not_text() -> None:
    cfg = parse_config(TEXT + OWNER.replace("drive", "d2"), "p.toml", sink_kinds=sink_schemas())
    specs = consumer_specs(cfg)["line1"]
    assert [s.tag for s in specs] == ["Speed", "d2"] and specs[1].assembly is not None
    parsed = control.consumer_from_map(consumer_map(specs[1]))
    assert parsed == control.consumer_from_spec(specs[1])
    assert parsed.key == consumer_key(specs[1]) == "line1/d2"
    with pytest.raises(UsageError, match="control socket"):
        consumer_text(specs[1])
    w = plan(TEXT + OWNER.replace("drive", "d2"))["worker-10.0.1.1"]
    argv = w.command()  # the tag's text only; the supervisor adds both by control
    assert [argv[i + 1].split(",")[2] for i, a in enumerate(argv) if a == "--consumer"] == [
        "tag=Speed"]


def test_a_worker_with_an_exclusive_owner_and_a_produced_tag_reads_the_bus_once() -> None:
    text = TEXT.replace('[[plc]]\nname = "line1"', OWNER + '[[plc]]\nname = "line1"') + """
[[produce]]
name = "Setpoint"
type = "REAL"
local_address = "10.0.0.1"
"""
    io = plan(text)["worker-10.0.0.1"]
    assert io.argv.count("--bus-connect") == 1
    assert io.argv[io.argv.index("--bus-connect") + 1] == "ipc:///bus"
