"""One set of rules for a consumer's keys (acquisition/consumer_keys.py): every value the config
file refuses, a worker's control socket refuses too, with the same problem and the same fix.

Each case writes the value once into a config file (in the table the key belongs to: the PLC's
or the tag's) and once into an ``add`` request's consumer map, and compares the one issue each
reports."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from pyconpro.acquisition import control
from pyconpro.acquisition.config import ConfigError, ConfigIssue, parse_config
from pyconpro.acquisition.consumer_keys import shown
from pyconpro.acquisition.errors import UsageError
from pyconpro.sinks.registry import sink_schemas

# id: (table in the file, the file's key, the map's key, value); the two keys differ only for
# the names: [[plc]] name is the map's plc, [[plc.tag]] name its tag.
CASES: dict[str, tuple[str, str, str, Any]] = {
    "slash in a tag name": ("tag", "name", "tag", "A/B"),
    "100 KB tag name": ("tag", "name", "tag", "X" * 100_000),
    "program-scoped tag": ("tag", "name", "tag", "Program:Main.X"),
    "member of a tag": ("tag", "name", "tag", "Drive.Speed"),
    "slash in a PLC name": ("plc", "name", "plc", "a/b"),
    "100 KB PLC name": ("plc", "name", "plc", "p" * 100_000),
    "slash in an alias": ("tag", "alias", "alias", "a/b"),
    "fractional slot": ("plc", "slot", "slot", 1.5),
    "slot out of range": ("plc", "slot", "slot", 300),
    "slot as a boolean": ("plc", "slot", "slot", True),
    "host name as address": ("plc", "address", "address", "plc.example.com"),
    "multicast address": ("plc", "address", "address", "239.1.1.1"),
    "udp_port 0": ("plc", "udp_port", "udp_port", 0),
    "route not an array": ("plc", "route", "route", 5),
    "route link of 600 characters": ("plc", "route", "route", [[1, "x" * 600]]),
    "route port unknown": ("plc", "route", "route", [["moon", 1]]),
    "route hop of one item": ("plc", "route", "route", [[1]]),
    "route of 17 hops": ("plc", "route", "route", [[1, 0]] * 17),
    "rpi below the minimum": ("tag", "rpi_ms", "rpi_ms", 0.1),
    "rpi as text": ("tag", "rpi_ms", "rpi_ms", "fast"),
    "rpi not a number": ("tag", "rpi_ms", "rpi_ms", math.nan),
    "ot_rpi above the maximum": ("tag", "ot_rpi_ms", "ot_rpi_ms", 20_000),
    "multiplier as wire code": ("tag", "multiplier", "multiplier", 2),
    "multiplier not a factor": ("tag", "multiplier", "multiplier", 10),
    "transport broadcast": ("tag", "transport", "transport", "broadcast"),
    "size above 500": ("tag", "size", "size", 501),
    "size 0": ("tag", "size", "size", 0),
    "fractional size": ("tag", "size", "size", 4.5),
    "reconnect_min_s too short": ("plc", "reconnect_min_s", "reconnect_min_s", 0.001),
    "reconnect_max_s as text": ("plc", "reconnect_max_s", "reconnect_max_s", "soon"),
    "connect_timeout_s above the maximum": ("plc", "connect_timeout_s", "connect_timeout_s", 600),
    "max_in_flight 0": ("plc", "max_in_flight", "max_in_flight", 0),
    "fractional max_in_flight": ("plc", "max_in_flight", "max_in_flight", 1.5),
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def config_issue(plc: dict[str, Any], tag: dict[str, Any]) -> ConfigIssue:
    plc = {"name": "p1", "address": "10.0.0.5", **plc}
    tag = {"name": "T", **tag}
    text = "[[plc]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in plc.items())
    text += "  [[plc.tag]]\n" + "".join(f"  {k} = {toml_value(v)}\n" for k, v in tag.items())
    with pytest.raises(ConfigError) as info:
        parse_config(text, "plant.toml", sink_kinds=sink_schemas())
    [issue] = info.value.issues
    return issue


def control_error(consumer: dict[str, Any]) -> control.ConsumerKeyError:
    body = msgpack.packb({"op": "add", "consumer": {"plc": "p1", "address": "10.0.0.5",
                                                    "tag": "T", **consumer}})
    with pytest.raises(control.ConsumerKeyError) as info:
        control.decode_request(body)
    return info.value


@pytest.mark.parametrize("case", CASES)
def test_file_and_control_socket_refuse_with_the_same_words(case: str) -> None:
    table, file_key, map_key, value = CASES[case]
    where: dict[str, dict[str, Any]] = {"plc": {}, "tag": {}}
    where[table][file_key] = value
    issue = config_issue(where["plc"], where["tag"])
    error = control_error({map_key: value})
    [refused] = error.issues
    assert (refused.problem, refused.fix) == (issue.problem, issue.fix)
    assert issue.fix  # every refusal says how to fix it
    # Each names its own key: the file's key path, the map's key.
    assert issue.key.removeprefix("plc[0].").removeprefix("tag[0].").startswith(file_key)
    assert refused.key.startswith(f"consumer.{map_key}")
    assert str(error) == f"{refused.key}: {issue.problem}; {issue.fix}"
    assert len(str(error)) < 1000  # a 100 KB value is named, not echoed


def test_reconnect_max_below_min_is_the_same_refusal() -> None:
    keys = {"reconnect_min_s": 2, "reconnect_max_s": 1}
    issue = config_issue(keys, {})
    [refused] = control_error(keys).issues
    assert (refused.problem, refused.fix) == (issue.problem, issue.fix)
    assert "reconnect_max_s = 1 is below reconnect_min_s = 2" in issue.problem


@pytest.mark.parametrize(("text", "problem"), [
    ("slot=1.5", "slot must be an integer, not a number"),
    ("rpi_ms=0.1", "rpi_ms = 0.1 is below the 0.5 ms minimum"),
    ("max_in_flight=0", "max_in_flight = 0 is below the 1 requests minimum"),
    ("route=1/moon", "route link 'moon' is neither a slot number nor an IPv4 address"),
    ("route=1", "route hop ['1'] is not a [port, link] pair"),
    ("plc=a/b", "PLC name 'a/b' cannot be a topic segment"),
])
def test_the_command_line_reads_numbers_as_numbers_and_meets_the_same_rules(
    text: str, problem: str
) -> None:
    with pytest.raises(control.ConsumerKeyError) as info:
        control.consumer_from_text(f"address=10.0.0.5,tag=T,{text}")
    assert problem in str(info.value)


def test_every_problem_of_one_map_is_reported() -> None:
    error = control_error({"slot": 1.5, "tag": "A/B", "colour": "red"})
    assert [i.key for i in error.issues] == ["consumer.colour", "consumer.tag", "consumer.slot"]


def test_the_control_socket_keeps_what_it_accepted_before() -> None:
    d = control.consumer_from_map({"address": "10.0.0.5", "tag": "T", "slot": "none",
                                   "route": "1/2,2/10.0.0.9", "multiplier": "x16",
                                   "rpi_us": 20_000, "type": "REAL[4]"})
    assert (d.slot, d.route, d.multiplier, d.rpi_us) == (None, ((1, 2), (2, "10.0.0.9")), 2, 20_000)
    with pytest.raises(UsageError, match="does not match type"):
        control.consumer_from_map({"address": "10.0.0.5", "tag": "T", "size": 8, "type": "DINT"})


def test_shown_names_long_values_without_echoing_them() -> None:
    assert shown("abc") == "'abc'"
    long = shown("x" * 100_000)
    assert long.endswith("... (100000 characters)") and len(long) < 70
