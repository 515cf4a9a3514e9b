"""pylogix's PLC against the real simulator process on loopback.

pylogix is the second well-known Logix client the simulator must satisfy (beside pycomm3,
test_pycomm3_simulator.py): each test starts ``python -m pyconpro.simulator`` on its own unusual
127.x.y.z address with TCP port 0 (pylogix takes ``port=``), talks to it with pylogix and checks
what it gets against the same tag set built in this process (``default_store()`` or the test's
TOML file). pylogix's socket timeout is 5 s; the simulator is stopped at the end of each test.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import pytest
from pycomm3 import LogixDriver
from pyconpro.simulator.tags import TagStore, default_store, load_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pylogix import PLC

from tests.support.clients import (
    ATOMIC_WRITES,
    assert_pylogix_tag_list,
    many_tags_file,
    same,
    simulator_fixture,
)

ADDRESS = "127.93.42.7"
HOUR_US = 3_600_000_000
SLACK_US = 1_000_000  # host clock steps (NTP) between two readings; the clocks agree to µs


sim = simulator_fixture(ADDRESS)


@pytest.fixture
def store() -> TagStore:
    return default_store()


def plc(sim: SimulatorProcess) -> Any:
    comm = PLC(sim.address, port=sim.tcp_port)
    comm.SocketTimeout = 5.0
    return comm


def ok(response: Any) -> Any:
    assert response.Status == "Success", (response.TagName, response.Status)
    return response.Value


def now_us() -> int:
    return time.time_ns() // 1_000


def test_tag_list_with_udts_and_programs(sim: SimulatorProcess, store: TagStore) -> None:
    with plc(sim) as comm:
        assert_pylogix_tag_list({t.TagName: t for t in ok(comm.GetTagList())}, store)
        assert ok(comm.GetProgramsList()) == ["Program:MainProgram", "Program:Aux"]
        udts = {u.Name: u for u in comm.UDT.values()}
        assert set(udts) == {"MotorData", "Position", "CellStatus", "ASCIISTRING82"}
        motor = udts["MotorData"]
        assert [f.TagName for f in motor.Fields if not f.Internal] == [
            "Running", "Faulted", "Speed", "Counts", "Pos", "Flags", "Energy"]
        assert [f.DataType for f in motor.Fields if not f.Internal] == [
            "BOOL", "BOOL", "REAL", "DINT", "Position", "DWORD", "LREAL"]
        assert motor.FieldsByName["Counts"].Size == 4
        assert [f.TagName for f in udts["Position"].Fields if not f.Internal] \
            == ["X", "Y", "Homed"]
        program = ok(comm.GetProgramTagList("Program:MainProgram"))
        assert [t.TagName for t in program] == ["Program:MainProgram.Local",
                                                "Program:MainProgram.Recipe"]


def test_reads_atomic_arrays_members_and_strings(sim: SimulatorProcess, store: TagStore) -> None:
    def value(name: str) -> Any:
        tag = store.find(name)
        assert tag is not None
        return tag.value()

    single = ["Setpoint", "Flag", "Small", "Medium", "Large", "Precise", "Text", "Version",
              "Heartbeat", "Program:MainProgram.Local"]
    with plc(sim) as comm:
        for name in single:
            assert same(ok(comm.Read(name)), value(name)), name
        multi = comm.Read(single)  # Multiple Service Packet
        assert [r.Status for r in multi] == ["Success"] * len(single)
        assert all(same(r.Value, value(n)) for r, n in zip(multi, single))
        assert ok(comm.Read("Matrix", 6)) == [1, 2, 3, 4, 5, 6]
        assert ok(comm.Read("Cube", 8)) == [1, 2, 3, 4, 5, 6, 7, 8]
        assert ok(comm.Read("Matrix[1,2]")) == 6
        assert ok(comm.Read("Bits", 64)) == value("Bits")
        assert (ok(comm.Read("Bits[3]")), ok(comm.Read("Bits[4]"))) == (True, False)
        assert same(ok(comm.Read("Program:MainProgram.Recipe", 4)), [1.5, 2.5, 3.5, 4.5])
        station = store.find("Station")
        assert station is not None
        assert ok(comm.Read("Station")) == station.image()  # a whole UDT: its bytes
        assert ok(comm.Read("Station.Speed")) == 12.5
        assert ok(comm.Read("Station.Counts", 4)) == [1, 2, 3, 4]
        assert ok(comm.Read("Station.Counts[2]")) == 3
        assert ok(comm.Read("Station.Pos.Homed")) is True
        assert (ok(comm.Read("Medium.2")), ok(comm.Read("Medium.0"))) == (False, False)
        assert ok(comm.Read("CellStatus.Status.RunMode")) is True
        assert ok(comm.Read("Message")).startswith("tick ")
        array10 = ok(comm.Read("Array10", 10))
        assert array10 == [array10[0] + i for i in range(10)]
        big = ok(comm.Read("Big", 125))
        assert len(big) == 125 and all(0 <= v <= 1_000_000 for v in big)
        # The counter advances every 0.1 s of the simulator's clock: poll (no sleeping) until
        # it has, for at most 5 s.
        first = ok(comm.Read("Counter"))
        deadline = time.monotonic() + 5.0
        later = first
        while later <= first and time.monotonic() < deadline:
            later = ok(comm.Read("Counter"))
        assert later > first
        assert comm.Read("Hidden").Status == "Path segment error"


def test_writes_then_read_back(sim: SimulatorProcess) -> None:
    writes: list[tuple[str, Any]] = [
        *ATOMIC_WRITES,
        ("Text", "written by pylogix"),
        ("Program:MainProgram.Local", -42),
        ("Station.Speed", -7.25),
        ("Station.Counts[1]", 99),
        ("Station.Pos.Homed", False),
        ("Matrix[0,1]", -9),
        ("Bits[33]", True),
    ]
    with plc(sim) as comm:
        for name, value in writes:  # one at a time
            ok(comm.Write(name, value))
        ok(comm.Write("Program:MainProgram.Recipe", [0.25, 0.5, 0.75, 1.0]))  # an array
        many = comm.Write([("Medium.0", False), ("Cube[1,1,1]", -8), ("Text", "multi")])
        assert [r.Status for r in many] == ["Success"] * 3
    with plc(sim) as comm:  # a new session sees what the first one wrote
        for name, value in writes:
            if name not in ("Text", "Medium"):  # both written again below
                assert same(ok(comm.Read(name)), value), name
        assert ok(comm.Read("Text")) == "multi" and ok(comm.Read("Medium")) == 32766
        assert ok(comm.Read("Cube", 8)) == [1, 2, 3, 4, 5, 6, 7, -8]
        assert ok(comm.Read("Program:MainProgram.Recipe", 4)) == [0.25, 0.5, 0.75, 1.0]
        assert ok(comm.Read("Station.Counts", 4)) == [1, 99, 3, 4]
        assert comm.Write("Version", 1).Status == "Privilege violation"  # read only
        assert ok(comm.Read("Version")) == 33
        ok(comm.Write("Heartbeat", 5))
        assert ok(comm.Read("Heartbeat")) == 1  # a constant generator re-asserts its value


def test_plc_time_get_and_set(sim: SimulatorProcess) -> None:
    """pylogix reads the local time (attribute 11) and sets UTC (6) with a DST flag (10);
    pycomm3 reads and sets UTC (6). The simulated controller's time zone is UTC."""
    with plc(sim) as comm, LogixDriver(f"{sim.address}:{sim.tcp_port}") as p3:
        before = now_us()
        started = ok(comm.GetPLCTime(raw=True))  # the clock starts at the host's time
        assert before - SLACK_US <= started <= now_us() + SLACK_US
        assert comm.SetPLCTime(dst=1).Status == "Success"
        before = now_us()
        local = ok(comm.GetPLCTime(raw=True))
        utc = p3.get_plc_time().value["microseconds"]
        after = now_us()
        assert before + HOUR_US - SLACK_US <= local <= after + HOUR_US + SLACK_US
        assert before - SLACK_US <= utc <= after + SLACK_US
        human = ok(comm.GetPLCTime())  # the same local time as a naive datetime
        human_us = (human - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)
        assert before + HOUR_US - SLACK_US <= human_us <= now_us() + HOUR_US + SLACK_US

        # A time far from the host's: what was set, plus the time since.
        target = 981_173_106_000_000  # 2001-02-03 04:05:06 UTC
        t0 = time.monotonic()
        assert p3.set_plc_time(microseconds=target).error is None
        local = ok(comm.GetPLCTime(raw=True))
        elapsed_us = (time.monotonic() - t0) * 1e6
        assert 0 <= local - (target + HOUR_US) <= elapsed_us + 1
        assert comm.SetPLCTime(dst=0).Status == "Success"  # back to the host's time, no DST
        before = now_us()
        local = ok(comm.GetPLCTime(raw=True))
        assert before - SLACK_US <= local <= now_us() + SLACK_US


def test_device_and_module_properties(sim: SimulatorProcess, store: TagStore) -> None:
    with plc(sim) as comm:
        device = ok(comm.GetDeviceProperties())
        ident = store.identity
        assert (device.VendorID, device.Vendor) == (1, "Rockwell Automation/Allen-Bradley")
        assert (device.DeviceID, device.DeviceType) == (14, "Programmable Logic Controller")
        assert device.ProductCode == ident.product_code
        assert device.Revision == f"{ident.revision_major}.{ident.revision_minor}"
        assert device.Status == ident.status and device.SerialNumber == hex(ident.serial_number)
        assert device.ProductName == ident.product_name == "1756-L83E/B"
        # pylogix takes the reply's last byte for the State; a Logix's reply ends with the
        # product name (protocol.md 10.2 row 3), so it is the name's last letter there too.
        assert device.State == ord("B")
        cpu = ok(comm.GetModuleProperties(0))  # slot 0 is the simulated CPU
        assert (cpu.ProductName, cpu.Revision) == ("1756-L83E/B", "33.11")
        assert comm.GetModuleProperties(3).Status == "Connection failure"  # empty slot


def test_tag_file_with_many_tags_and_large_arrays(tmp_path: Path) -> None:
    """Listings over several 0x06 replies in both scopes, Read/Write Tag Fragmented."""
    path = many_tags_file(tmp_path / "many.toml")
    local = load_store(path)
    with start_simulator("127.93.42.8", config=path) as proc, plc(proc) as comm:
        tags = {t.TagName for t in ok(comm.GetTagList())}
        assert tags - {"Program:Cell1"} == {t.name for t in local}
        assert [u.Name for u in comm.UDT.values()] == ["Pair"]
        assert ok(comm.Read("Tag_149.A")) == 149 and ok(comm.Read("Program:Cell1.Local_89")) == 89
        assert ok(comm.Read("Huge", 2000)) == list(range(2000))  # 8000 bytes: fragmented
        values = [(i * 7919) % 100_000 - 50_000 for i in range(2000)]
        ok(comm.Write("Huge", values))
        assert ok(comm.Read("Huge", 2000)) == values
