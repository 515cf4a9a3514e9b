"""The config model: valid files, every error message (file, key, line, problem, fix)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition import config as cfg
from pyconpro.acquisition import toml_check
from pyconpro.acquisition.config import (
    BusConfig,
    ConfigError,
    ConsumerSpec,
    RouteHop,
    consumer_specs,
    group_by_local_address,
    multiplier_code,
    validate_tag_name,
)
from pyconpro.acquisition.errors import PyconproError, UsageError
from pyconpro.acquisition.produce_config import PRODUCE_KEYS
from pyconpro.acquisition.sink_config import COMMON_KEYS
from pyconpro.acquisition.supervision import RestartPolicy
from pyconpro.acquisition.web_config import WEB_KEYS
from pyconpro.sinks.registry import sink_schemas

from tests.support.configs import ONE_PLC as BASE
from tests.support.configs import file_issues as issues_of
from tests.support.configs import one_file_issue as one_issue
from tests.support.configs import parse_file as parse

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"

# ----------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("value", [0, 212992, 8 << 20, 1 << 30])
def test_worker_udp_rcvbuf_is_taken_from_the_file(value: int) -> None:
    c = parse(f"[worker]\nudp_rcvbuf = {value}\n" + BASE)
    assert c.worker.udp_rcvbuf == value


@pytest.mark.parametrize("value", [0, 1, 10, 99])
def test_worker_realtime_priority_is_taken_from_the_file(value: int) -> None:
    c = parse(f"[worker]\nrealtime_priority = {value}\n" + BASE)
    assert c.worker.realtime_priority == value


@pytest.mark.parametrize("value", [0, 1, 10, 99])
def test_bus_realtime_priority_is_taken_from_the_file(value: int) -> None:
    c = parse(f"[bus]\nrealtime_priority = {value}\n" + BASE)
    assert c.bus.realtime_priority == value


def test_minimal_file_gets_every_default() -> None:
    c = parse(BASE)
    assert c.source == "plant.toml"
    assert c.bus == BusConfig()
    assert c.logging.level == "INFO" and c.logging.file is None
    assert c.worker.udp_port == 2222 and c.worker.stats_interval_s == 5.0
    assert c.worker.udp_rcvbuf == 4 << 20
    assert c.worker.realtime_priority == 0
    assert c.bus.realtime_priority == 0
    assert c.supervisor == RestartPolicy()
    assert c.sinks == ()
    (plc,) = c.plcs
    assert (plc.name, plc.address, plc.slot, plc.route, plc.udp_port) == (
        "line1",
        "127.0.0.2",
        0,
        (),
        2222,
    )
    (tag,) = plc.tags
    assert (tag.name, tag.rpi_ms, tag.ot_rpi_ms, tag.multiplier, tag.transport) == (
        "Speed",
        100.0,
        100.0,
        16,
        "unicast",
    )
    assert tag.size is None and tag.alias is None and tag.topic_name == "Speed"
    assert c.plc("line1") is plc
    with pytest.raises(KeyError):
        c.plc("nope")


def test_settings_inherit_tag_then_plc_then_defaults() -> None:
    c = parse(
        """
[defaults]
rpi_ms = 10
multiplier = "x64"
transport = "multicast"
udp_port = 2300

[[plc]]
name = "a"
address = "10.0.0.1"
rpi_ms = 20
ot_rpi_ms = 30
udp_port = 2400

  [[plc.tag]]
  name = "Inherits"

  [[plc.tag]]
  name = "Own"
  rpi_ms = 5
  multiplier = 8
  transport = "unicast"

[[plc]]
name = "b"
address = "10.0.0.2"

  [[plc.tag]]
  name = "T"
  rpi_ms = 7.5
"""
    )
    a, b = c.plcs
    inherits, own = a.tags
    assert (inherits.rpi_ms, inherits.ot_rpi_ms, inherits.multiplier, inherits.transport) == (
        20,
        30,
        64,
        "multicast",
    )
    # ot_rpi_ms set on the PLC wins over "same as rpi" even when the tag sets its own rpi
    assert (own.rpi_ms, own.ot_rpi_ms, own.multiplier, own.transport) == (5, 30, 8, "unicast")
    assert a.udp_port == 2400 and b.udp_port == 2300
    (t,) = b.tags
    assert (t.rpi_ms, t.ot_rpi_ms, t.multiplier) == (7.5, 7.5, 64)
    assert c.defaults.rpi_ms == 10 and c.defaults.ot_rpi_ms is None


def test_consumer_specs_carry_wire_units() -> None:
    c = parse(
        BASE
        + """\
  rpi_ms = 12.3456
  ot_rpi_ms = 1100
  multiplier = 512
  size = 6
  alias = "speed_fast"

[[plc]]
name = "remote"
address = "192.168.1.20"
slot = 2
route = [["bp", 3], ["enet", "192.168.2.10"], [1, 0]]
transport = "multicast"
udp_port = 2223

  [[plc.tag]]
  name = "Counts"
""".replace('transport = "multicast"\n', "")
    )
    specs = consumer_specs(c)
    assert list(specs) == ["line1", "remote"]
    assert specs["line1"] == (
        ConsumerSpec(
            plc="line1",
            address="127.0.0.2",
            slot=0,
            route=(),
            tag="Speed",
            rpi_us=12346,
            ot_rpi_us=1_100_000,
            multiplier=7,
            multicast=False,
            size=6,
            alias="speed_fast",
            udp_port=2222,
        ),
    )
    (remote,) = specs["remote"]
    assert remote.route == (RouteHop(1, 3), RouteHop(2, "192.168.2.10"), RouteHop(1, 0))
    assert remote.hops == (*remote.route, RouteHop(1, 2))
    assert remote.udp_port == 2223 and remote.multiplier == 2 and remote.multiplier_factor == 16
    assert specs["line1"][0].topic_name == "speed_fast" and remote.topic_name == "Counts"


def test_multicast_flag_and_frozen_values() -> None:
    c = parse(BASE + '  transport = "multicast"\n')
    (spec,) = consumer_specs(c)["line1"]
    assert spec.multicast is True
    with pytest.raises(AttributeError):
        spec.rpi_us = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.plcs = ()  # type: ignore[misc]
    assert hash(spec) == hash(consumer_specs(c)["line1"][0])


def _doc_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    part = text.split("## Full example", 1)[1]
    m = re.search(r"```toml\n(.*?)```", part, re.DOTALL)
    assert m is not None
    return m.group(1)


def test_documented_full_example_is_valid_and_uses_every_section() -> None:
    c = parse(_doc_example(), "doc")
    assert [p.name for p in c.plcs] == ["press1", "packer"]
    assert [s.kind for s in c.sinks] == ["sqlite", "jsonl", "stdout"]
    forces = c.plcs[0].tags[1]
    assert (forces.multiplier, forces.ot_rpi_ms, forces.alias) == (32, 40, "forces")


def test_every_key_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    groups = {
        "bus": cfg._BUS_KEYS,
        "logging": cfg._LOGGING_KEYS,
        "defaults": cfg._DEFAULTS_KEYS,
        "plc": cfg._PLC_KEYS,
        "plc.tag": cfg._TAG_KEYS,
        "worker": cfg._WORKER_KEYS,
        "supervisor": cfg._SUPERVISOR_KEYS,
        "web": WEB_KEYS,
        "produce": PRODUCE_KEYS,
        "sink": (*COMMON_KEYS, *(k for schema in sink_schemas().values() for k in schema.keys)),
    }
    missing = [f"{g}.{k}" for g, keys in groups.items() for k in keys if f"`{k}`" not in text]
    assert missing == []
    for section in cfg._TOP_KEYS:
        assert f"[{section}]" in text or f"[[{section}]]" in text


def test_control_endpoints() -> None:
    assert BusConfig().control_endpoint("worker-1", 1) == "ipc:///tmp/pyconpro-worker-1"
    tcp = BusConfig(control_base="tcp://127.0.0.1:5600")
    assert tcp.control_endpoint("supervisor", 0) == "tcp://127.0.0.1:5600"
    assert tcp.control_endpoint("w", 3) == "tcp://127.0.0.1:5603"


def test_multiplier_code() -> None:
    assert [multiplier_code(f) for f in (4, 8, 16, 32, 64, 128, 256, 512)] == list(range(8))
    with pytest.raises(UsageError):
        multiplier_code(3)


# ----------------------------------------------------------------------------- error messages

# (text, key, line, words in the problem, words in the fix)
CASES: list[tuple[str, str, str, int | None, str, str]] = [
    (
        "rpi below minimum",
        BASE + "  rpi_ms = 0.1\n",
        "plc[0].tag[0].rpi_ms",
        7,
        "rpi_ms = 0.1 is below the 0.5 ms minimum",
        "use a value between 0.5 and 10000",
    ),
    (
        "rpi above maximum",
        BASE + "  rpi_ms = 20000\n",
        "plc[0].tag[0].rpi_ms",
        7,
        "rpi_ms = 20000 is above the 10000 ms maximum",
        "between 0.5 and 10000",
    ),
    (
        "rpi infinite",
        BASE + "  rpi_ms = inf\n",
        "plc[0].tag[0].rpi_ms",
        7,
        "above the 10000 ms maximum",
        "between 0.5 and 10000",
    ),
    ("rpi nan", BASE + "  rpi_ms = nan\n", "plc[0].tag[0].rpi_ms", 7, "not a number", "between"),
    (
        "rpi quoted",
        BASE + '  rpi_ms = "100"\n',
        "plc[0].tag[0].rpi_ms",
        7,
        "must be a number, not a string",
        "without quotes",
    ),
    (
        "rpi boolean",
        BASE + "  rpi_ms = true\n",
        "plc[0].tag[0].rpi_ms",
        7,
        "must be a number, not a boolean",
        "without quotes",
    ),
    (
        "ot rpi on plc",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\not_rpi_ms = 0\n'),
        "plc[0].ot_rpi_ms",
        4,
        "ot_rpi_ms = 0 is below the 0.5 ms minimum",
        "between 0.5 and 10000",
    ),
    (
        "unknown key, close match",
        BASE + "  rpi = 100\n",
        "plc[0].tag[0].rpi",
        7,
        "unknown key 'rpi' in [plc[0].tag[0]]",
        "did you mean 'rpi_ms'?",
    ),
    (
        "unknown key, no match",
        BASE + "  colour = 1\n",
        "plc[0].tag[0].colour",
        7,
        "unknown key 'colour'",
        "the keys allowed here are: name, rpi_ms",
    ),
    (
        "unknown section",
        '[buss]\nendpoint = "tcp://127.0.0.1:1"\n' + BASE,
        "buss",
        1,
        "unknown key 'buss' in the top level",
        "did you mean 'bus'?",
    ),
    (
        "unknown key in bus",
        '[bus]\nendpont = "tcp://127.0.0.1:1"\n' + BASE,
        "bus.endpont",
        2,
        "unknown key 'endpont' in [bus]",
        "did you mean 'endpoint'?",
    ),
    (
        "tags written as tags",
        BASE.replace("[[plc.tag]]", "[[plc.tags]]"),
        "plc[0].tags",
        5,
        "unknown key 'tags'",
        "did you mean 'tag'?",
    ),
    (
        "bad ip",
        BASE.replace("127.0.0.2", "192.168.1.300"),
        "plc[0].address",
        3,
        "address = '192.168.1.300' is not an IPv4 address",
        'four numbers 0-255, e.g. "192.168.1.10"',
    ),
    (
        "host name",
        BASE.replace("127.0.0.2", "plc.local"),
        "plc[0].address",
        3,
        "is not an IPv4 address",
        "host names are not resolved",
    ),
    (
        "multicast plc address",
        BASE.replace("127.0.0.2", "239.192.1.1"),
        "plc[0].address",
        3,
        "multicast, broadcast or unspecified",
        "own unicast address",
    ),
    (
        "missing address",
        BASE.replace('address = "127.0.0.2"\n', ""),
        "plc[0].address",
        1,
        "missing required key 'address'",
        'add address = "..."',
    ),
    (
        "missing tag name",
        BASE.replace('  name = "Speed"\n', "  rpi_ms = 10\n"),
        "plc[0].tag[0].name",
        5,
        "missing required key 'name'",
        'add name = "..."',
    ),
    (
        "duplicate tag, other case",
        BASE + '\n  [[plc.tag]]\n  name = "speed"\n',
        "plc[0].tag[1].name",
        9,
        "listed twice for this PLC (first at plc[0].tag[0]; Logix tag names are case-insensitive)",
        "remove one entry",
    ),
    (
        "duplicate alias",
        BASE + '  alias = "v"\n\n  [[plc.tag]]\n  name = "Other"\n  alias = "v"\n',
        "plc[0].tag[1].alias",
        11,
        "topic name 'v' is already used by plc[0].tag[0]",
        "different alias",
    ),
    (
        "alias equal to another tag's name",
        BASE + '\n  [[plc.tag]]\n  name = "Other"\n  alias = "Speed"\n',
        "plc[0].tag[1].alias",
        10,
        "topic name 'Speed' is already used by plc[0].tag[0]",
        "different alias",
    ),
    (
        "alias with slash",
        BASE + '  alias = "a/b"\n',
        "plc[0].tag[0].alias",
        7,
        "alias 'a/b' cannot be a topic segment",
        "no '/' or spaces",
    ),
    (
        "duplicate plc name",
        BASE + "\n" + BASE.replace("127.0.0.2", "127.0.0.3"),
        "plc[1].name",
        9,
        "PLC name 'line1' is already used by plc[0]",
        "unique name",
    ),
    (
        "plc name with space",
        BASE.replace('"line1"', '"line 1"'),
        "plc[0].name",
        2,
        "PLC name 'line 1' cannot be a topic segment",
        'e.g. "line1"',
    ),
    (
        "program-scoped tag",
        BASE.replace('"Speed"', '"Program:MainProgram.Speed"'),
        "plc[0].tag[0].name",
        6,
        "is program-scoped; only controller-scoped tags are produced",
        "move the tag to controller scope",
    ),
    (
        "member",
        BASE.replace('"Speed"', '"Drive.Speed"'),
        "plc[0].tag[0].name",
        6,
        "'Drive.Speed' names a member or element",
        "consume 'Drive' and pick the member",
    ),
    (
        "element",
        BASE.replace('"Speed"', '"Speeds[3]"'),
        "plc[0].tag[0].name",
        6,
        "names a member or element",
        "consume 'Speeds'",
    ),
    (
        "too long",
        BASE.replace('"Speed"', '"' + "A" * 41 + '"'),
        "plc[0].tag[0].name",
        6,
        "is 41 characters long; Logix tag names have at most 40",
        "exactly as Studio 5000 shows it",
    ),
    (
        "bad character",
        BASE.replace('"Speed"', '"Motor-1 Speed"'),
        "plc[0].tag[0].name",
        6,
        "contains ' -'; Logix tag names use only A-Z a-z 0-9 _",
        "exactly as Studio 5000",
    ),
    (
        "leading digit",
        BASE.replace('"Speed"', '"1Speed"'),
        "plc[0].tag[0].name",
        6,
        "starts with a digit",
        "Studio 5000",
    ),
    (
        "double underscore",
        BASE.replace('"Speed"', '"My__Speed"'),
        "plc[0].tag[0].name",
        6,
        "two consecutive underscores",
        "Studio 5000",
    ),
    (
        "trailing underscore",
        BASE.replace('"Speed"', '"Speed_"'),
        "plc[0].tag[0].name",
        6,
        "ends with an underscore",
        "Studio 5000",
    ),
    ("empty tag name", BASE.replace('"Speed"', '""'), "plc[0].tag[0].name", 6, "empty", "name"),
    (
        "multiplier as wire code",
        BASE + "  multiplier = 2\n",
        "plc[0].tag[0].multiplier",
        7,
        "multiplier = 2 looks like the 0..7 wire code",
        "write multiplier = 16 (code 2 means x16)",
    ),
    (
        "multiplier not a power",
        BASE + "  multiplier = 10\n",
        "plc[0].tag[0].multiplier",
        7,
        "multiplier = 10 is not a timeout multiplier",
        "use one of 4, 8, 16, 32, 64, 128, 256, 512",
    ),
    (
        "multiplier bad string",
        BASE + '  multiplier = "x17"\n',
        "plc[0].tag[0].multiplier",
        7,
        "multiplier = 'x17' is not a timeout multiplier",
        "use one of 4, 8",
    ),
    (
        "transport typo",
        BASE + '  transport = "Multicast"\n',
        "plc[0].tag[0].transport",
        7,
        'transport = \'Multicast\' is not one of "unicast", "multicast"',
        "did you mean 'multicast'?",
    ),
    (
        "size above produced limit",
        BASE + "  size = 600\n",
        "plc[0].tag[0].size",
        7,
        "size = 600 is above the 500 bytes a standard produced tag can carry",
        "split the data into several produced tags",
    ),
    (
        "size zero",
        BASE + "  size = 0\n",
        "plc[0].tag[0].size",
        7,
        "size = 0 is below the 1 bytes minimum",
        "between 1 and 500",
    ),
    (
        "size fractional",
        BASE + "  size = 4.5\n",
        "plc[0].tag[0].size",
        7,
        "size must be an integer, not a number",
        "whole number between 1 and 500",
    ),
    (
        "slot as float",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nslot = 1.0\n'),
        "plc[0].slot",
        4,
        "slot must be an integer",
        "write slot = 1",
    ),
    (
        "slot too big",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nslot = 300\n'),
        "plc[0].slot",
        4,
        "slot = 300 is above the 255 maximum",
        "between 0 and 255",
    ),
    (
        "multicast through route (tag)",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nroute = [["bp", 1]]\n')
        + '  transport = "multicast"\n',
        "plc[0].tag[0].transport",
        8,
        "tag 'Speed' uses multicast through a route",
        'never crosses a router (docs/configuration.md, transport): use transport = "unicast"',
    ),
    (
        "multicast through route (defaults)",
        '[defaults]\ntransport = "multicast"\n'
        + BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nroute = [["bp", 1]]\n'),
        "defaults.transport",
        2,
        "uses multicast through a route",
        'use transport = "unicast"',
    ),
    (
        "route not an array",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nroute = "1/0"\n'),
        "plc[0].route",
        4,
        "route must be an array of [port, link] pairs, not a string",
        'route = [["backplane", 2], ["enet", "192.168.2.10"]]',
    ),
    (
        "route bad slot",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nroute = [["bp", 300]]\n'),
        "plc[0].route[0]",
        4,
        "route link 300 is neither a slot number nor an IPv4 address",
        "slot 0-255",
    ),
    (
        "route bad port",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nroute = [["usb", 1]]\n'),
        "plc[0].route[0]",
        4,
        "route port 'usb' is not a port number or name",
        "'backplane'",
    ),
    (
        "route hop not a pair",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nroute = [[1]]\n'),
        "plc[0].route[0]",
        4,
        "route hop [1] is not a [port, link] pair",
        "write e.g.",
    ),
    (
        "interface and local address",
        BASE.replace(
            'address = "127.0.0.2"\n',
            'address = "127.0.0.2"\ninterface = "eth0"\nlocal_address = "127.0.0.1"\n',
        ),
        "plc[0].interface",
        4,
        "interface and local_address are both set",
        "keep one",
    ),
    (
        "bad local address",
        BASE.replace('address = "127.0.0.2"\n', 'address = "127.0.0.2"\nlocal_address = "eth0"\n'),
        "plc[0].local_address",
        4,
        "local_address = 'eth0' is not an IPv4 address",
        "local interface",
    ),
    (
        "plc without tags",
        '[[plc]]\nname = "a"\naddress = "10.0.0.1"\n',
        "plc[0]",
        1,
        "PLC 'a' has no tags",
        "add at least one [[plc.tag]]",
    ),
    ("no plc at all", "[bus]\nhwm = 5\n", "plc", None, "no [[plc]] entries", "add a [[plc]]"),
    (
        "plc as table",
        '[plc]\nname = "a"\n',
        "plc",
        1,
        "plc must be an array of tables",
        "[[plc]] section",
    ),
    (
        "tag as string",
        '[[plc]]\nname = "a"\naddress = "10.0.0.1"\ntag = "Speed"\n',
        "plc[0].tag",
        4,
        "tag must be an array of tables",
        "[[plc.tag]] section",
    ),
    ("bus not a table", "bus = 5\n" + BASE, "bus", 1, "bus must be a table", "[bus] section"),
    (
        "endpoint without scheme",
        '[bus]\nendpoint = "127.0.0.1:5555"\n' + BASE,
        "bus.endpoint",
        2,
        "endpoint = '127.0.0.1:5555' is not a ZeroMQ endpoint",
        'write "tcp://HOST:PORT"',
    ),
    (
        "endpoint port out of range",
        '[bus]\nendpoint = "tcp://127.0.0.1:70000"\n' + BASE,
        "bus.endpoint",
        2,
        "has port 70000",
        "between 1 and 65535",
    ),
    (
        "empty ipc path",
        '[bus]\ncontrol_base = "ipc://"\n' + BASE,
        "bus.control_base",
        2,
        "has no path",
        "ipc:///tmp/pyconpro",
    ),
    (
        "log level",
        '[logging]\nlevel = "verbose"\n' + BASE,
        "logging.level",
        2,
        "level = 'verbose' is not one of \"DEBUG\"",
        'use one of "DEBUG", "INFO"',
    ),
    (
        "backoff cap below initial",
        "[supervisor]\nbackoff_initial_s = 5\nbackoff_max_s = 1\n" + BASE,
        "supervisor.backoff_max_s",
        3,
        "backoff_max_s = 1 is below backoff_initial_s = 5",
        "at least backoff_initial_s",
    ),
    (
        "stop timeout zero",
        "[supervisor]\nstop_timeout_s = 0\n" + BASE,
        "supervisor.stop_timeout_s",
        2,
        "stop_timeout_s = 0 is below the 0 s minimum",
        "between 0 and 3600",
    ),
    (
        "worker port",
        "[worker]\nudp_port = 0\n" + BASE,
        "worker.udp_port",
        2,
        "udp_port = 0 is below the 1 minimum",
        "between 1 and 65535",
    ),
    (
        "worker receive buffer negative",
        "[worker]\nudp_rcvbuf = -1\n" + BASE,
        "worker.udp_rcvbuf",
        2,
        "udp_rcvbuf = -1 is below the 0 bytes minimum",
        "between 0 and 1073741824",
    ),
    (
        "worker real-time priority above SCHED_FIFO's",
        "[worker]\nrealtime_priority = 100\n" + BASE,
        "worker.realtime_priority",
        2,
        "realtime_priority = 100 is above the 99 maximum",
        "between 0 and 99",
    ),
    (
        "bus real-time priority negative",
        "[bus]\nrealtime_priority = -1\n" + BASE,
        "bus.realtime_priority",
        2,
        "realtime_priority = -1 is below the 0 minimum",
        "between 0 and 99",
    ),
    (
        "bus real-time priority not a whole number",
        "[bus]\nrealtime_priority = 10.5\n" + BASE,
        "bus.realtime_priority",
        2,
        "realtime_priority must be an integer, not a number",
        "use a whole number between 0 and 99",
    ),
    (
        "worker receive buffer not a whole number",
        "[worker]\nudp_rcvbuf = 4.5e6\n" + BASE,
        "worker.udp_rcvbuf",
        2,
        "udp_rcvbuf must be an integer, not a number",
        "write udp_rcvbuf = 4500000",
    ),
    (
        "sink without kind",
        BASE + '\n[[sink]]\npath = "x.db"\n',
        "sink[0].kind",
        8,
        "missing required key 'kind'",
        'add kind = one of "sqlite", "postgres", "mqtt", "nats", "jsonl", "csv", "stdout"',
    ),
    (
        "sink kind unknown",
        BASE + '\n[[sink]]\nkind = "sqlit"\n',
        "sink[0].kind",
        9,
        "kind = 'sqlit' is not one of",
        "did you mean 'sqlite'?",
    ),
    (
        "option of another sink kind",
        BASE + '\n[[sink]]\nkind = "sqlite"\nrotate_bytes = 100000\n',
        "sink[0].rotate_bytes",
        10,
        "rotate_bytes is not an option of sink kind 'sqlite'",
        "it applies to kind 'jsonl', 'csv'; remove it",
    ),
    (
        "tiny rotation",
        BASE + '\n[[sink]]\nkind = "jsonl"\nrotate_bytes = 100\n',
        "sink[0].rotate_bytes",
        10,
        "rotate_bytes = 100 would start a new file every few records",
        "use 0 (never rotate by size) or at least 4096",
    ),
    (
        "topic root typo",
        BASE + '\n[[sink]]\nkind = "stdout"\ntopics = ["samples/"]\n',
        "sink[0].topics[0]",
        10,
        "topic filter 'samples/' matches nothing",
        'did you mean "sample/"?',
    ),
    (
        "topic names unknown plc",
        BASE + '\n[[sink]]\nkind = "stdout"\ntopics = ["sample/line9/"]\n',
        "sink[0].topics[0]",
        10,
        "topic filter 'sample/line9/' names PLC 'line9', which is not configured",
        "did you mean 'line1'?",
    ),
    (
        "topic names tag instead of alias",
        BASE + '  alias = "spd"\n\n[[sink]]\nkind = "stdout"\ntopics = ["sample/line1/Speed/"]\n',
        "sink[0].topics[0]",
        11,
        "names tag 'Speed', which PLC 'line1' does not publish (topics use the alias",
        "use one of: spd",
    ),
    (
        "empty topics",
        BASE + '\n[[sink]]\nkind = "stdout"\ntopics = []\n',
        "sink[0].topics",
        10,
        "topics is empty",
        "list at least one prefix",
    ),
    (
        "topics not strings",
        BASE + '\n[[sink]]\nkind = "stdout"\ntopics = "sample/"\n',
        "sink[0].topics",
        10,
        "topics must be an array of strings",
        'topics = ["sample/"',
    ),
    (
        "duplicate sink names",
        BASE + '\n[[sink]]\nkind = "stdout"\nname = "s"\n\n[[sink]]\nkind = "sqlite"\nname = "s"\n',
        "sink[1].name",
        14,
        "sink name 's' is already used by sink[0]",
        "unique name",
    ),
    (
        "two sqlite sinks on the default path",
        BASE + '\n[[sink]]\nkind = "sqlite"\n\n[[sink]]\nkind = "sqlite"\ntopics = ["event/"]\n',
        "sink[1]",
        11,
        "sink 'sqlite-1' and sink[0] ('sqlite-0') both write to the database",
        "give each sqlite sink its own path",
    ),
    (
        "two sqlite sinks on one path spelled differently",
        BASE + '\n[[sink]]\nkind = "sqlite"\npath = "a.db"\n\n[[sink]]\nkind = "sqlite"\n'
        'path = "./a.db"\n',
        "sink[1].path",
        14,
        "a.db'",
        'path = "second.sqlite3"',
    ),
    (
        "two jsonl sinks on the same directory and prefix",
        BASE + '\n[[sink]]\nkind = "jsonl"\ndirectory = "d"\n\n[[sink]]\nkind = "jsonl"\n'
        'directory = "d"\nprefix = "pyconpro"\n',
        "sink[1].prefix",
        15,
        "both write to the files pyconpro-*.jsonl in",
        "give each jsonl sink its own directory or prefix",
    ),
    (
        "sink boolean quoted",
        BASE + '\n[[sink]]\nkind = "stdout"\nraw = "yes"\n',
        "sink[0].raw",
        10,
        "raw must be true or false, not a string",
        "true or false without quotes",
    ),
    (
        "file prefix with slash",
        BASE + '\n[[sink]]\nkind = "csv"\nprefix = "a/b"\n',
        "sink[0].prefix",
        10,
        "prefix = 'a/b' is not a plain file name prefix",
        "no '/'",
    ),
    (
        "key inside an inline table points at the enclosing key",
        '[[plc]]\nname = "a"\naddress = "10.0.0.1"\ntag = [ { name = "X", rpi_ms = 0 } ]\n',
        "plc[0].tag[0].rpi_ms",
        4,
        "rpi_ms = 0 is below the 0.5 ms minimum",
        "between 0.5 and 10000",
    ),
    (
        "dotted key",
        "[bus]\nendpoint.x = 1\n" + BASE,
        "bus.endpoint",
        2,
        "endpoint must be a string, not a table",
        "write it in quotes",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "line", "problem", "fix"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_names_file_key_line_problem_and_fix(
    text: str, key: str, line: int | None, problem: str, fix: str
) -> None:
    issue = one_issue(text)
    assert (issue.file, issue.key, issue.line) == ("plant.toml", key, line)
    assert problem in issue.problem
    assert fix in issue.fix
    where = f"plant.toml:{line}" if line is not None else "plant.toml"
    assert str(issue) == f"{where}: {key}: {issue.problem}; {issue.fix}"
    if line is not None:
        # the line really is where the key (or its section) is written
        written = text.splitlines()[line - 1]
        last = re.split(r"[.\[]", key)[-1].rstrip("]")
        assert last in written or "[" in written or "{" in written


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = (
        '[bus]\nendpont = "x"\n'  # 2
        "[[plc]]\n"
        'name = "a"\n'
        'address = "1.2.3"\n'  # 5
        "[[plc.tag]]\n"
        'name = "A.B"\n'  # 7
        "rpi_ms = 0\n"  # 8
        "[[plc]]\n"
        'name = "a"\n'  # 10 duplicate
        'address = "10.0.0.1"\n'
        "[[plc.tag]]\n"
        'name = "T"\n'
        "[[sink]]\n"
        'kind = "csv"\n'
        "rotate_bytes = 1\n"  # 16
    )
    issues = issues_of(text)
    assert [(i.key, i.line) for i in issues] == [
        ("bus.endpont", 2),
        ("plc[0].address", 5),
        ("plc[0].tag[0].name", 7),
        ("plc[0].tag[0].rpi_ms", 8),
        ("plc[1].name", 10),
        ("sink[0].rotate_bytes", 16),
    ]
    err = ConfigError(issues)
    assert str(err).startswith("6 problems in the configuration:\nplant.toml:2: bus.endpont:")
    assert err.first is issues[0]
    assert isinstance(err, PyconproError) and isinstance(err, ValueError)


def test_toml_syntax_error_has_line_and_column() -> None:
    issue = one_issue(BASE + "  rpi_ms = \n")
    assert issue.line == 7 and issue.key == ""
    assert issue.problem.startswith("TOML syntax error: ") and "column" in issue.problem
    assert "strings need quotes" in issue.fix
    assert str(issue).startswith("plant.toml:7: TOML syntax error")


def test_toml_duplicate_key_is_a_syntax_error_with_line() -> None:
    issue = one_issue(BASE + '  name = "Again"\n')
    assert issue.line == 7


# ----------------------------------------------------------------------------- key lines


def test_key_lines_follow_headers_dotted_keys_and_skip_multiline_strings() -> None:
    text = """\
# comment
[bus]
endpoint = "tcp://127.0.0.1:1"   # trailing comment
[logging]
file = \"\"\"
rpi_ms = 5
[[plc]]
\"\"\"
[[plc]]
  name = 'a'
  "quoted key" = 1
  [[plc.tag]]
  name = "x"
  [[plc.tag]]
  name = "y"
[[plc]]
  [[plc.tag]]
  a.b = 1
[ worker ]
udp_port = 1
"""
    lines = toml_check.KeyLines(text).lines
    assert lines["bus"] == 2 and lines["bus.endpoint"] == 3
    assert lines["logging.file"] == 5 and "logging.rpi_ms" not in lines
    assert lines["plc[0]"] == 9 and lines["plc[0].name"] == 10
    assert lines["plc[0].quoted key"] == 11
    assert lines["plc[0].tag[0].name"] == 13 and lines["plc[0].tag[1].name"] == 15
    assert lines["plc[1]"] == 16 and lines["plc[1].tag[0].a.b"] == 18
    assert lines["plc[1].tag[0].a"] == 18 and lines["plc[0].tag"] == 12
    assert lines["worker.udp_port"] == 20
    finder = toml_check.KeyLines(text)
    assert finder.find("plc[1].tag[0].name") == 17  # missing key -> its section header
    assert finder.find("plc[0].tag[1].size") == 14
    assert finder.find("nothing.here") is None


# ----------------------------------------------------------------------------- tag names


@pytest.mark.parametrize("name", ["A", "_x", "Speed_1", "a" * 40, "Tag_With_Parts9"])
def test_valid_tag_names(name: str) -> None:
    assert validate_tag_name(name) is None


@pytest.mark.parametrize(
    "name", ["", "Program:P.T", "T.M", "T[1]", "T[1,2]", "a" * 41, "9a", "a b", "é", "a__b", "a_"]
)
def test_invalid_tag_names_say_why_and_how(name: str) -> None:
    why = validate_tag_name(name)
    assert why is not None and all(why)


@given(st.text(max_size=50))
def test_tag_name_validator_agrees_with_the_logix_rules(name: str) -> None:
    ok = (
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", name) is not None
        and "__" not in name
        and not name.endswith("_")
    )
    assert (validate_tag_name(name) is None) == ok


# ----------------------------------------------------------------------------- grouping


GROUPING = """\
[[plc]]
name = "near"
address = "10.0.0.20"
  [[plc.tag]]
  name = "A"
[[plc]]
name = "pinned"
address = "10.0.0.21"
local_address = "192.168.5.1"
  [[plc.tag]]
  name = "B"
[[plc]]
name = "by_if"
address = "172.16.0.9"
interface = "eth1"
  [[plc.tag]]
  name = "C"
[[plc]]
name = "near2"
address = "10.0.0.22"
  [[plc.tag]]
  name = "D"
  [[plc.tag]]
  name = "E"
"""


def test_group_by_local_address() -> None:
    c = parse(GROUPING)
    asked: list[str] = []

    def resolve(addr: str) -> str:
        asked.append(addr)
        return "10.0.0.5"

    groups = group_by_local_address(c, resolve, {"eth1": "172.16.0.1"}.__getitem__)
    assert asked == ["10.0.0.20", "10.0.0.22"]  # explicit choices are not resolved
    assert [(g.local_address, g.plcs) for g in groups] == [
        ("10.0.0.5", ("near", "near2")),
        ("172.16.0.1", ("by_if",)),
        ("192.168.5.1", ("pinned",)),
    ]
    assert [s.tag for s in groups[0].consumers] == ["A", "D", "E"]
    assert groups[0].name == "worker-10.0.0.5"


def test_group_by_local_address_failures_name_the_plc() -> None:
    c = parse(GROUPING, "plant.toml")

    def unreachable(addr: str) -> str:
        raise OSError(101, "Network is unreachable")

    with pytest.raises(ConfigError) as info:
        group_by_local_address(c, unreachable, lambda name: "172.16.0.1")
    issue = info.value.first
    assert (issue.file, issue.key, issue.line) == ("plant.toml", "plc[0].address", 3)
    assert "cannot find the local address for PLC 'near'" in issue.problem
    assert "ip route get 10.0.0.20" in issue.fix and "local_address" in issue.fix

    no_interfaces: dict[str, str] = {}
    with pytest.raises(ConfigError) as info:
        group_by_local_address(c, lambda a: "10.0.0.5", no_interfaces.__getitem__)
    assert info.value.first.key == "plc[2].interface" and info.value.first.line == 15

    with pytest.raises(ConfigError):
        group_by_local_address(c, lambda a: "not an address", lambda n: "172.16.0.1")

    with pytest.raises(UsageError):
        group_by_local_address(c, lambda a: "10.0.0.5")  # interface used, no callback


# ----------------------------------------------------------------------------- robustness

FRAGMENTS = st.sampled_from(
    [
        "[[plc]]",
        "[[plc.tag]]",
        "[[sink]]",
        "[bus]",
        "[defaults]",
        "[supervisor]",
        'name = "A"',
        'name = "A.B"',
        'address = "10.0.0.1"',
        'address = "x"',
        "rpi_ms = 0",
        "rpi_ms = 5",
        'multiplier = "x8"',
        "multiplier = 3",
        'transport = "multicast"',
        'route = [["bp", 1]]',
        "route = [[1]]",
        'kind = "csv"',
        'kind = "sqlite"',
        'topics = ["sample/A/"]',
        'alias = "A"',
        "size = 1000",
        "slot = -1",
        "backoff_max_s = 0",
        "tag = 3",
        "plc = 1",
        'x = """',
        "= =",
    ]
)


@settings(max_examples=300)
@given(st.lists(FRAGMENTS, max_size=25))
def test_any_fragment_soup_gives_a_config_or_a_config_error(lines: list[str]) -> None:
    try:
        parse("\n".join(lines) + "\n", "f.toml")
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file == "f.toml" and issue.problem
            assert issue.line is None or 1 <= issue.line <= len(lines) + 1


@given(st.text(max_size=200))
def test_arbitrary_text_gives_a_config_or_a_config_error(text: str) -> None:
    try:
        parse(text)
    except ConfigError:
        pass


# --------------------------------------------------------------------------- the PLC session


def test_session_keys_are_inherited_plc_from_defaults() -> None:
    config = parse("""\
[defaults]
reconnect_max_s = 2.0
max_in_flight = 4

[[plc]]
name = "a"
address = "127.0.0.2"
connect_timeout_s = 0.5
  [[plc.tag]]
  name = "X"

[[plc]]
name = "b"
address = "127.0.0.3"
reconnect_min_s = 0.05
reconnect_max_s = 0.2
  [[plc.tag]]
  name = "Y"
""")
    a, b = config.plcs
    assert a.session == cfg.SessionPolicy(0.1, 2.0, 0.5, 4)
    assert b.session == cfg.SessionPolicy(0.05, 0.2, 2.0, 4)
    specs = consumer_specs(config)
    assert specs["a"][0].session == a.session and specs["b"][0].session == b.session
    assert parse(BASE).plcs[0].session == cfg.SessionPolicy()


@pytest.mark.parametrize(("lines", "key", "needle"), [
    ("reconnect_max_s = 0.01", "plc[0].reconnect_max_s", "below the 0.05 s minimum"),
    ("reconnect_min_s = 120", "plc[0].reconnect_min_s", "above the 60 s maximum"),
    ("reconnect_min_s = 2\nreconnect_max_s = 1", "plc[0].reconnect_max_s",
     "reconnect_max_s = 1 is below reconnect_min_s = 2"),
    ("connect_timeout_s = \"2\"", "plc[0].connect_timeout_s", "must be a number"),
    ("max_in_flight = 0", "plc[0].max_in_flight", "below the 1 requests minimum"),
])
def test_bad_session_keys_name_the_key_and_the_fix(lines: str, key: str, needle: str) -> None:
    head, tag = BASE.split("\n\n")
    issue = one_issue(f"{head}\n{lines}\n\n{tag}")
    assert issue.key == key and needle in issue.problem and issue.fix
