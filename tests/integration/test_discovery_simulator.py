"""Tag discovery against the simulator process: every default tag discovered, sized and decoded
(compared with pycomm3's own read of the same tag), a download with a changed UDT noticed, and
the ``browse`` / ``discover`` commands end to end.

Simulator on 127.62.4.2 (ports 0), our client connects from 127.62.4.1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycomm3 import LogixDriver
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_objects import ExternalAccess
from pyconpro.acquisition.logix_types import ArrayType
from pyconpro.simulator.tags import default_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pyconpro.workers.explicit_client import ExplicitClient

from pyconpro import discover_cli, discovery_cli

SIM = "127.62.4.2"
LOCAL = "127.62.4.1"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with start_simulator(SIM) as proc:
        yield proc


def client(sim: SimulatorProcess, **kw: Any) -> ExplicitClient:
    return ExplicitClient(sim.address, port=sim.tcp_port, local_address=LOCAL, timeout=5.0,
                          **kw)


def _flatten(v: Any) -> Any:
    if isinstance(v, list) and v and isinstance(v[0], list):
        return [x for sub in v for x in _flatten(sub)]
    return v


@pytest.mark.parametrize("connected", [False, True], ids=["unconnected", "class3"])
def test_every_default_tag_is_discovered_sized_and_decoded_like_pycomm3(
        sim: SimulatorProcess, connected: bool) -> None:
    store = default_store()
    expected = {t.name: t for t in store.tags if t.external_access != ExternalAccess.NONE}
    with client(sim, connected=connected) as c:
        assert (c.class3 is not None) == connected
        catalog = c.discover()
        assert sorted(catalog.tags) == sorted(expected)
        images = {}
        for name, tag in expected.items():
            info = catalog[name]
            assert info.type == tag.type, name
            assert info.byte_size == tag.size(), name
            _, data = c.read_tag(name, max(1, _elements(info.dims)))
            assert len(data) == info.byte_size, name
            images[name] = data
    plc = LogixDriver(f"{sim.address}:{sim.tcp_port}")
    plc.socket_timeout = 5.0
    with plc:
        for name, data in images.items():
            info = catalog[name]
            ours = info.decode(data)
            count = _elements(info.dims)
            if isinstance(info.type, ArrayType) and info.type.is_bool_array:
                count = info.type.dims[0]  # pycomm3 counts BOOLs; the listing counts DWORDs
            theirs = plc.read(f"{name}{{{count}}}" if count else name)
            assert theirs.error is None, (name, theirs.error)
            # generated tags move between the two reads: compare the decoded *structure*, and
            # values for tags that are constant
            if not store.find(name).generators:  # type: ignore[union-attr]
                assert _flatten(ours) == _normalize(theirs.value), name
            assert _shape(_flatten(ours)) == _shape(_normalize(theirs.value)), name
            # pycomm3's own description of the controller tags agrees with ours
            if not name.startswith("Program:"):
                p3 = plc.tags[name]
                assert tuple(p3["dimensions"][: p3["dim"]]) == info.dims, name
                if p3["tag_type"] == "struct":
                    assert p3["data_type"]["template"]["structure_size"] == info.element_size


def _elements(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n if dims else 0


def _normalize(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _normalize(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_normalize(x) for x in v]
    return v


def _shape(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_shape(x) for x in v]
    return type(v).__name__


def test_decoders_agree_with_the_simulator_images(sim: SimulatorProcess) -> None:
    with client(sim) as c:
        catalog = c.discover()
        for name in ("Station", "Text", "Matrix", "Cube", "Bits", "Precise", "Version"):
            _, data = c.read_tag(name, max(1, _elements(catalog[name].dims)))
            tag = default_store().find(name)
            assert tag is not None
            assert catalog[name].decode(data) == compile_decoder(tag.type)(tag.image())
        st = catalog.resolve("Station.Pos.Homed")
        _, data = c.read_tag("Station")
        assert st.decode_from_base(data) is True
        assert catalog.resolve("Station.Counts[2]").decode_from_base(data) == 3


# ---------------------------------------------------------------------------------------------
# A download with a changed UDT
# ---------------------------------------------------------------------------------------------

TAGS_V1 = """
[controller]
programs = ["MainProgram"]

[types.Recipe]
members = [
  { name = "Speed", type = "REAL" },
  { name = "Count", type = "DINT" },
]

[[tags]]
name = "Current"
type = "Recipe"
produced = true

[[tags]]
name = "Plain"
type = "DINT"
produced = true
"""

TAGS_V2 = TAGS_V1.replace('{ name = "Count", type = "DINT" },',
                          '{ name = "Count", type = "DINT" },\n  { name = "Temp", type = "REAL" },')


def test_a_download_with_a_changed_udt_is_noticed(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.toml", tmp_path / "v2.toml"
    v1.write_text(TAGS_V1)
    v2.write_text(TAGS_V2)
    address = "127.62.4.3"
    with start_simulator(address, config=v1) as s1:
        with client(s1) as c:
            before = c.discover()
            assert not c.has_changed(before)
        assert before["Current"].byte_size == 8
    with start_simulator(address, config=v1) as same, client(same) as c:  # restart, same project
        assert not c.has_changed(before)
    # download: Recipe gained a member
    with start_simulator(address, config=v2) as s2, client(s2) as c:
        assert c.has_changed(before)
        after = c.discover()
    diff = before.diff(after)
    assert diff.changed == ("Current",) and not diff.added and not diff.removed
    assert after["Current"].byte_size == 12 and after.check_datasize("Current", None) == 14
    assert after["Current"].decode(bytes(12)) == {"Speed": 0.0, "Count": 0, "Temp": 0.0}


# ---------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------


def _run(module: Any, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)))


def test_browse_json_and_probe(sim: SimulatorProcess, capsys: pytest.CaptureFixture[str]
                               ) -> None:
    base = [SIM, "--port", str(sim.tcp_port), "--interface", LOCAL]
    assert _run(discovery_cli, base + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    tags = {t["name"]: t for t in doc["tags"]}
    assert doc["identity"]["product_name"] == default_store().identity.product_name
    assert tags["Counter"]["datasize"] == 6 and tags["Counter"]["produced"] is None
    assert tags["Motor"]["type"] == "MotorData"
    assert tags["Program:MainProgram.Local"]["produced"] is False
    assert _run(discovery_cli, base + ["--json", "--probe"]) == 0
    probed = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tags"]}
    store = default_store()
    for tag in store.tags:
        if tag.external_access == ExternalAccess.NONE or tag.name.startswith("Program:"):
            continue
        assert probed[tag.name]["produced"] is tag.produced, tag.name
    assert "multicast only" in probed["Walk"]["produced_detail"]
    # the probe closed what it opened: no connection is left in the simulator
    assert sim.control.connections() == []
    assert _run(discovery_cli, base) == 0
    table = capsys.readouterr().out
    assert "Counter" in table and "unknown" in table and "--probe" in table


def test_browse_reports_an_unreachable_plc(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(discovery_cli, ["127.62.4.9", "--port", "1", "--timeout", "1"]) == 1
    assert "refused the TCP connection" in capsys.readouterr().err


def test_discover_finds_the_simulator(sim: SimulatorProcess,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--address", SIM, "--interface", LOCAL, "--port", str(sim.tcp_port),
            "--timeout", "1"]
    assert _run(discover_cli, argv + ["--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    ident = default_store().identity
    assert [(d["address"], d["serial"], d["product_name"], d["via"]) for d in found] == [
        (SIM, f"0x{ident.serial_number:08X}", ident.product_name, LOCAL)]
    assert _run(discover_cli, argv) == 0
    out = capsys.readouterr().out
    assert "Rockwell Automation/Allen-Bradley" in out and SIM in out
    assert _run(discover_cli, ["--address", "127.62.4.9", "--interface", LOCAL, "--port",
                               str(sim.tcp_port), "--timeout", "0.3"]) == 0
    assert "no EtherNet/IP device answered" in capsys.readouterr().out
