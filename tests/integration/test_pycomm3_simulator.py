"""pycomm3's LogixDriver against the real simulator process on loopback.

Each test starts ``python -m pyconpro.simulator`` on its own unusual 127.x.y.z address with TCP
port 0
(pycomm3 takes ``ip:port``), browses it with pycomm3 and checks what it gets against the same
tag set built in this process (``default_store()`` or the test's TOML file): the fixed values
exactly, the moving ones against their generators' ranges. Every socket has pycomm3's timeout;
the simulator is stopped (and its log shown on failure) at the end of each test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pycomm3 import LogixDriver
from pyconpro.acquisition.logix_types import ArrayType, StructType
from pyconpro.simulator.tags import TagStore, default_store, load_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.support.clients import (
    ATOMIC_WRITES,
    many_tags_file,
    same,
    simulator_fixture,
    visible_tags,
)

ADDRESS = "127.93.41.7"
sim = simulator_fixture(ADDRESS)


@pytest.fixture
def store() -> TagStore:
    return default_store()


def driver(sim: SimulatorProcess, **kw: object) -> LogixDriver:
    plc = LogixDriver(f"{sim.address}:{sim.tcp_port}", **kw)  # type: ignore[arg-type]
    plc.socket_timeout = 5.0
    return plc


def pycomm3_name(store: TagStore, name: str) -> str:
    """How pycomm3 addresses a whole tag: arrays as ``Tag{n}`` (BOOL arrays count bits)."""
    tag = store.find(name)
    assert tag is not None
    if isinstance(tag.type, ArrayType):
        return f"{name}{{{tag.type.count}}}"
    return name


def flat(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [x for sub in value for x in flat(sub)]
    return value


FIXED = [
    "Setpoint",
    "Flag",
    "Small",
    "Medium",
    "Large",
    "Precise",
    "Text",
    "Matrix",
    "Cube",
    "Bits",
    "Station",
    "Version",
    "Heartbeat",
    "Program:MainProgram.Local",
    "Program:MainProgram.Recipe",
]


def test_open_identity_and_tag_list(sim: SimulatorProcess, store: TagStore) -> None:
    with driver(sim) as plc:
        info = plc.info
        assert info["name"] == store.program_name
        assert info["keyswitch"] == "REMOTE RUN"
        assert info["revision"] == {"major": 33, "minor": 11}
        assert info["product_name"] == "1756-L83E/B" and info["serial"] == "00c0ffee"
        assert set(info["programs"]) == {"MainProgram", "Aux"}
        assert info["programs"]["MainProgram"]["routines"] == ["MainRoutine"]
        assert set(info["tasks"]) == {"MainTask"}
        assert plc.connected and plc.connection_size == 4000  # Large_Forward_Open granted

        tags = plc.tags
        assert set(tags) == set(visible_tags(store))
        for name, tag in visible_tags(store).items():
            got = tags[name]
            t = tag.type
            assert got["instance_id"] == tag.instance_id
            elem = t.element if isinstance(t, ArrayType) else t
            if isinstance(t, ArrayType) and t.is_bool_array:
                assert (got["data_type_name"], got["dimensions"][0]) == ("DWORD", t.count // 32)
                continue
            assert got["tag_type"] == ("struct" if isinstance(elem, StructType) else "atomic")
            assert got["data_type_name"] == elem.name
            dims = list(t.dims) if isinstance(t, ArrayType) else []
            assert got["dim"] == len(dims) and got["dimensions"][: len(dims)] == dims
            assert got["external_access"] == ("Read Only" if name == "Version" else "Read/Write")

        motor = plc.data_types["MotorData"]
        assert motor["attributes"] == [
            "Running",
            "Faulted",
            "Speed",
            "Counts",
            "Pos",
            "Flags",
            "Energy",
        ]
        assert motor["template"]["structure_size"] == 48
        internal = motor["internal_tags"]
        assert internal["Running"]["bit"] == 0 and internal["Faulted"]["bit"] == 1
        assert internal["Counts"]["array"] == 4
        assert internal["Pos"]["data_type"]["name"] == "Position"
        assert internal["Pos"]["data_type"]["internal_tags"]["Homed"]["data_type_name"] == "BOOL"
        assert plc.data_types["STRING"]["string"] == 82


def test_read_fixed_values_single_and_multi(sim: SimulatorProcess, store: TagStore) -> None:
    expected = {n: store.find(n).value() for n in FIXED}  # type: ignore[union-attr]
    with driver(sim) as plc:
        for name in FIXED:
            tag = plc.read(pycomm3_name(store, name))
            assert tag.error is None, (name, tag.error)
            assert same(tag.value, flat(expected[name])), (name, tag.value)
        results = plc.read(*[pycomm3_name(store, n) for n in FIXED])
        assert [r.error for r in results] == [None] * len(FIXED)
        for name, r in zip(FIXED, results):
            assert same(r.value, flat(expected[name])), (name, r.value)
        parts = plc.read(
            "Station.Speed",
            "Station.Counts[2]",
            "Station.Pos",
            "Matrix[1,2]",
            "Bits[3]",
            "Bits[4]",
            "Station.Pos.Homed",
            "Medium.2",
        )
        assert [p.value for p in parts] == [
            12.5,
            3,
            {"X": 0.0, "Y": 0.0, "Homed": True},
            6,
            True,
            False,
            True,
            False,
        ]
        missing = plc.read("Hidden")
        assert missing.error is not None and missing.value is None


def test_read_moving_values(sim: SimulatorProcess) -> None:
    with driver(sim) as plc:
        first = plc.read(
            "Counter",
            "Sine",
            "Array10{10}",
            "Motor",
            "Message",
            "Big{125}",
            "Walk",
            "Limited",
            "Exclusive",
        )
        assert [r.error for r in first] == [None] * len(first)
        counter, sine, array10, motor, message, big, walk, limited, exclusive = (
            r.value for r in first
        )
        assert counter >= 0 and -100.0 <= sine <= 100.0
        assert array10 == [array10[0] + i for i in range(10)]
        assert set(motor) == {"Running", "Faulted", "Speed", "Counts", "Pos", "Flags", "Energy"}
        assert 0.0 <= motor["Speed"] <= 3000.0 and 0.0 <= motor["Pos"]["X"] <= 100.0
        assert motor["Counts"] == [motor["Counts"][0] + i for i in range(4)]
        assert len(motor["Flags"]) == 32 and motor["Pos"]["Homed"] is True
        assert message.startswith("tick ")
        assert all(0 <= v <= 1_000_000 for v in big) and len(big) == 125
        assert -10.0 <= walk <= 10.0 and exclusive >= 1000 and limited >= 0
        # The counter advances every 0.1 s of the simulator's clock: poll (no sleeping) until
        # it has, for at most 5 s.
        deadline = time.monotonic() + 5.0
        later = counter
        while later <= counter and time.monotonic() < deadline:
            later = plc.read("Counter").value
        assert later > counter


def test_write_then_read_back(sim: SimulatorProcess, store: TagStore) -> None:
    station = store.find("Station").value()  # type: ignore[union-attr]
    station["Speed"] = -7.25
    station["Pos"] = {"X": 1.5, "Y": -2.5, "Homed": False}
    station["Flags"] = [i % 2 == 0 for i in range(32)]
    writes = [
        *ATOMIC_WRITES,
        ("Text", "written by pycomm3"),
        ("Matrix{6}", [6, 5, 4, 3, 2, 1]),
        ("Cube{8}", [-1, -2, -3, -4, 5, 6, 7, 8]),
        ("Bits{64}", [i % 5 == 0 for i in range(64)]),
        ("Station", station),
        ("Program:MainProgram.Local", -42),
        ("Program:MainProgram.Recipe{4}", [0.25, 0.5, 0.75, 1.0]),
    ]
    with driver(sim) as plc:
        for name, value in writes:  # one write per request (Write Tag)
            result = plc.write(name, value)
            assert result.error is None, (name, result.error)
    with driver(sim) as plc:  # a new session sees what the first one wrote
        for name, value in writes:
            got = plc.read(name)
            assert got.error is None and same(got.value, value), (name, got.value)

        # several at once (Multiple Service Packet), members, elements and bits
        many = plc.write(
            ("Station.Counts[1]", 99),
            ("Station.Pos.Homed", True),
            ("Matrix[0,1]", -9),
            ("Bits[33]", True),
            ("Medium.0", False),
            ("Small", 12),
            ("Text", "multi"),
        )
        assert [r.error for r in many] == [None] * 7
        back = plc.read(
            "Station.Counts{4}",
            "Station.Pos.Homed",
            "Matrix{6}",
            "Bits[33]",
            "Medium",
            "Small",
            "Text",
        )
        assert back[0].value == [1, 99, 3, 4] and back[1].value is True
        assert back[2].value == [6, -9, 4, 3, 2, 1] and back[3].value is True
        assert (back[4].value, back[5].value, back[6].value) == (32766, 12, "multi")

        denied = plc.write("Version", 1)
        assert denied.error is not None
        assert plc.read("Version").value == 33
        reverted = plc.write("Heartbeat", 5)
        assert reverted.error is None
        assert plc.read("Heartbeat").value == 1  # a constant generator re-asserts its value


def test_tag_file_with_many_tags_large_arrays_and_program_tags(tmp_path: Path) -> None:
    path = many_tags_file(tmp_path / "many.toml")
    local = load_store(path)
    assert len(local.listing(None)) * 40 > 4000  # type: ignore[arg-type]
    with start_simulator("127.93.41.8", config=path) as proc, driver(proc) as plc:
        assert plc.info["name"] == "MANY"
        assert set(plc.tags) == {t.name for t in local}
        assert max(t["instance_id"] for t in plc.tags.values()) > 0xFF
        reads = plc.read(
            *[f"Tag_{i:03d}" for i in range(0, 150, 7)], "Program:Cell1.Local_89", "Tag_149.A"
        )
        assert [r.value for r in reads[:-2]] == [{"A": i, "Ok": False} for i in range(0, 150, 7)]
        assert (reads[-2].value, reads[-1].value) == (89, 149)
        huge = plc.read("Huge{2000}")  # 8000 bytes: Read Tag Fragmented
        assert huge.error is None and huge.value == list(range(2000))
        values = [(i * 7919) % 100_000 - 50_000 for i in range(2000)]
        assert plc.write("Huge{2000}", values).error is None  # Write Tag Fragmented
        assert plc.read("Huge{2000}").value == values
        assert plc.write("Tag_010", {"A": -1, "Ok": True}).error is None
        assert plc.read("Tag_010").value == {"A": -1, "Ok": True}


def test_old_firmware_without_large_forward_open_falls_back_to_forward_open() -> None:
    """``--no-large-forward-open`` answers 0x5B with 0x08 (protocol.md 7.6); pycomm3 retries
    with a 0x54 Forward_Open of 500 bytes, reads and writes through it and closes it."""
    with start_simulator("127.93.41.9", extra_args=["--no-large-forward-open"]) as proc:
        with driver(proc) as plc:
            assert plc.connected and plc.connection_size == 500  # the fallback was taken
            assert plc.read("Version").value == 33
            assert plc.write("Setpoint", -3.5).error is None
            assert plc.read("Setpoint").value == -3.5
            (conn,) = [c for c in proc.control.connections() if c["kind"] == "class3"]
            assert conn["peer"] == "127.0.0.1"
        assert proc.control.connections() == []  # Forward_Close on close()
        log = proc.log_text()
        assert "0x08 service 0x5B not supported" in log
        assert log.count("opened") == 1 and "closed" in log
