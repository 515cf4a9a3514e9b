"""The supervisor's plan for ``[[produce]]`` entries (pure): which worker serves each produced
tag, the flags it gets (``worker_produce_args``: ``--tcp-port``, ``--bus-connect``, one
``--produce`` per tag, as the worker parses them), and what a reload restarts."""

from __future__ import annotations

import json

from pyconpro.acquisition.config import group_by_local_address, parse_config
from pyconpro.acquisition.produce import ProduceSpec
from pyconpro.sinks.registry import sink_schemas
from pyconpro.workers.io_worker import _parser
from pyconpro.workers.produce_server import DEFAULT_TCP_PORT
from pyconpro.workers.supervisor import (
    ChildSpec,
    Runtime,
    diff_plans,
    plan_children,
    worker_produce_args,
)

BUS = "ipc:///tmp/pyconpro-plan-test-bus"
TEXT = """
[bus]
control_base = "ipc:///tmp/pyconpro-plan-test"
[[plc]]
name = "line1"
address = "10.0.0.5"
local_address = "10.0.0.1"
  [[plc.tag]]
  name = "Speed"
[[plc]]
name = "line2"
address = "10.0.1.5"
local_address = "10.0.1.1"
  [[plc.tag]]
  name = "Count"
[[produce]]
name = "PcSetpoints"
type = "Setpoints"
members = [{ name = "Speed", type = "REAL" }, { name = "Run", type = "BOOL" }]
max_consumers = 3
rpi_min_ms = 2
local_address = "10.0.0.1"
[[produce]]
name = "PcCounter"
type = "DINT"
consumer_address = "10.0.2.5"
"""
# The PLC at 10.0.2.5 is reached through 10.0.2.1: that worker produces PcCounter only.
ROUTES = {"10.0.2.5": "10.0.2.1"}


def plan(text: str) -> dict[str, ChildSpec]:
    cfg = parse_config(text, "p.toml", sink_kinds=sink_schemas())
    groups = group_by_local_address(cfg, lambda a: ROUTES[a])
    return plan_children(cfg, groups, Runtime(bus_connect=BUS, python="py"))


def produced(argv: tuple[str, ...] | list[str]) -> list[ProduceSpec]:
    """The produced tags a worker command carries, as the worker itself reads them."""
    args = _parser().parse_args(list(argv[3:]))
    return [ProduceSpec.from_dict(json.loads(text)) for text in args.produce]


def test_each_produced_tag_goes_to_the_worker_of_its_address() -> None:
    p = plan(TEXT)
    assert list(p) == ["worker-10.0.0.1", "worker-10.0.1.1", "worker-10.0.2.1"]
    one, two, three = (p[n].argv for n in p)
    assert [s.name for s in produced(one)] == ["PcSetpoints"]
    assert produced(two) == []
    assert [s.name for s in produced(three)] == ["PcCounter"]
    # a worker that produces nothing gets none of the flags: no listener, no bus feed
    assert "--tcp-port" not in two and "--bus-connect" not in two
    assert p["worker-10.0.2.1"].consumers == ()  # produced tags only


def test_the_worker_parses_its_produce_flags_back_to_the_configured_tags() -> None:
    cfg = parse_config(TEXT.replace("[bus]", "[worker]\ntcp_port = 44900\n[bus]"), "p.toml",
                       sink_kinds=sink_schemas())  # fmt: skip
    groups = group_by_local_address(cfg, lambda a: ROUTES[a])
    group = next(g for g in groups if g.local_address == "10.0.0.1")
    flags = worker_produce_args(cfg, group, BUS)
    args = _parser().parse_args(["--local-address", "10.0.0.1", *flags])
    assert (args.tcp_port, args.bus_connect) == (44900, BUS)
    specs = [ProduceSpec.from_dict(json.loads(t)) for t in args.produce]
    assert specs == [cfg.produce[0][0]]
    assert specs[0] == ProduceSpec("PcSetpoints", "Setpoints", (("Speed", "REAL"), ("Run", "BOOL")),
                                   max_consumers=3, rpi_min_us=2000)
    # no [[produce]] for the group: nothing at all
    other = next(g for g in groups if g.local_address == "10.0.1.1")
    assert worker_produce_args(cfg, other, BUS) == ()
    # the default port is the worker's own default, 44818
    default_cfg = parse_config(TEXT, "p.toml", sink_kinds=sink_schemas())
    flags = worker_produce_args(default_cfg, group, BUS)
    assert flags[flags.index("--tcp-port") + 1] == str(DEFAULT_TCP_PORT) == "44818"


def test_a_changed_produce_entry_restarts_only_the_worker_that_serves_it() -> None:
    old = plan(TEXT)
    changed = plan(TEXT.replace("max_consumers = 3", "max_consumers = 4"))
    d = diff_plans(old, changed)
    assert d.restart == ("worker-10.0.0.1",)
    assert not (d.start or d.stop or d.add_consumers or d.remove_consumers)
    assert [s.max_consumers for s in produced(changed["worker-10.0.0.1"].argv)] == [4]
    # a tag added to a PLC of that worker, produce unchanged: no restart, an add
    added = plan(TEXT.replace('  name = "Speed"\n', '  name = "Speed"\n  [[plc.tag]]\n'
                              '  name = "Flow"\n'))  # fmt: skip
    d2 = diff_plans(old, added)
    assert d2.restart == () and list(d2.add_consumers) == ["worker-10.0.0.1"]
    # the last produced tag of a worker with no PLC removed: that worker stops
    gone = plan(TEXT.split('[[produce]]\nname = "PcCounter"')[0])
    assert diff_plans(old, gone).stop == ("worker-10.0.2.1",)
