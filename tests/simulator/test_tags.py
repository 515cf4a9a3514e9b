"""simulator.tags: the tag database, value generators, the default set and TOML loading.

Generators are pure functions of the time passed in, so every test uses a fake clock.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition.logix_objects import ExternalAccess
from pyconpro.acquisition.logix_types import (
    CONNECTION_STATUS,
    PRODUCED_TAG_MAX_BYTES,
    STRING,
    ArrayType,
    AtomicType,
    DataTypeCode,
    StructType,
)
from pyconpro.simulator.tags import (
    CELL_STATUS,
    MOTOR_DATA,
    POSITION,
    Generator,
    GeneratorKind,
    SimConfigError,
    SimTag,
    TagStore,
    default_store,
    load_store,
    parse_type,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sim-tags.toml"
K = GeneratorKind


def get(s: TagStore, name: str) -> SimTag:
    found = s.find(name)
    assert found is not None, name
    return found


def tag(name: str, spec: str, **kw: Any) -> SimTag:
    return SimTag(name, parse_type(spec, {"Position": POSITION, "MotorData": MOTOR_DATA}), **kw)


# ---------------------------------------------------------------------------------------------
# Default tag set: every kind of tag the tests and the demo rely on
# ---------------------------------------------------------------------------------------------


def test_default_store_has_every_required_kind_of_tag() -> None:
    s = default_store()
    t = {x.name: x for x in s}

    clock = iter(range(1, 1000))

    def moves(name: str) -> bool:
        now = 7.3 * next(clock)
        s.tick(now)
        before = t[name].image()
        s.tick(now + 3.1)
        return t[name].image() != before

    assert t["Counter"].produced and t["Counter"].type == AtomicType(DataTypeCode.DINT)
    assert t["Sine"].produced and t["Sine"].type == AtomicType(DataTypeCode.REAL)
    assert t["Array10"].produced and t["Array10"].type == ArrayType(
        AtomicType(DataTypeCode.DINT), (10,))
    motor = t["Motor"].type
    assert t["Motor"].produced and isinstance(motor, StructType)
    members = {m.name: m for m in motor.members}
    assert isinstance(members["Pos"].type, StructType)  # nested UDT
    assert members["Running"].bit is not None  # BOOL member
    assert isinstance(members["Counts"].type, ArrayType)  # array member
    assert t["Message"].produced and t["Message"].type == STRING
    assert not t["Setpoint"].produced
    assert t["Exclusive"].produced and t["Exclusive"].max_consumers == 1
    lim = t["Limited"]
    assert (lim.rpi_min_us, lim.rpi_max_us, lim.default_rpi_us) == (10_000, 100_000, 20_000)
    assert t["Big"].produced and t["Big"].size() == PRODUCED_TAG_MAX_BYTES
    assert t["Program:MainProgram.Local"].program == "MainProgram"
    assert not t["Walk"].unicast_allowed
    for name in ("Counter", "Sine", "Array10", "Motor", "Message", "Big", "Walk"):
        assert moves(name), name
    assert all(x.size() <= PRODUCED_TAG_MAX_BYTES for x in s.produced())


def test_lookups_and_listing() -> None:
    s = default_store()
    assert s.find("counter") is s.find("COUNTER") is s.find("Counter")
    assert s.find("program:mainprogram.LOCAL") is s.find("Program:MainProgram.Local")
    assert s.find("Local") is None
    counter = s.find("Counter")
    assert counter is not None and s.by_instance(counter.instance_id) is counter
    listing = s.listing(None)
    assert listing is not None
    ids = [x.instance_id for x in listing]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    names = [x.name for x in listing]
    assert "Hidden" not in names and "Program:MainProgram" in names and "Local" not in names
    assert s.listing("MAINPROGRAM") == s.listing("MainProgram")
    assert s.listing("Nope") is None
    assert set(s.templates()) == {POSITION.instance_id, MOTOR_DATA.instance_id,
                                  STRING.instance_id, CELL_STATUS.instance_id,
                                  CONNECTION_STATUS.instance_id}


def test_default_store_has_a_produced_udt_with_connection_status_first() -> None:
    """protocol.md 7.2: the status member is the first bytes of the produced image; the
    simulated controller runs, so RunMode is set and stays set; ConnectionFaulted is clear."""
    s = default_store()
    cell = get(s, "CellStatus")
    assert cell.produced and cell.type is CELL_STATUS
    first = CELL_STATUS.visible_members[0]
    assert (first.name, first.type, first.offset) == ("Status", CONNECTION_STATUS, 0)
    assert [m.name for m in CELL_STATUS.visible_members] == ["Status", "Parts", "Temperature"]
    assert cell.size() == 12
    s.tick(0.0)
    assert cell.value()["Status"] == {"RunMode": True, "ConnectionFaulted": False}
    assert cell.image()[0] == 0b01  # RunMode = bit 0 of byte 0 (the assumed layout)
    cell.set({"Status": {"RunMode": False, "ConnectionFaulted": True}, "Parts": 0,
              "Temperature": 0.0})
    s.tick(1.6)
    value = cell.value()
    assert value["Status"] == {"RunMode": True, "ConnectionFaulted": True}  # RunMode re-asserted
    assert value["Parts"] == 3 and 35.0 <= value["Temperature"] <= 45.0
    s.restart(2.0)
    assert cell.value()["Status"] == {"RunMode": True, "ConnectionFaulted": False}


def test_default_store_keeps_instance_ids_of_the_earlier_tags() -> None:
    """New default tags go at the end: ids other tests and saved configs use never move."""
    s = default_store()
    tags = list(s)
    assert tags[-1].name == "CellStatus"
    without = TagStore([dataclasses.replace(t, instance_id=0) for t in tags[:-1]],
                       programs=s.programs)
    assert {t.name: t.instance_id for t in without} == {t.name: t.instance_id for t in tags[:-1]}
    listing = s.listing(None)
    assert listing is not None and max(x.instance_id for x in listing) == tags[-1].instance_id


# ---------------------------------------------------------------------------------------------
# Generators (fake clock)
# ---------------------------------------------------------------------------------------------


def value_at(t: SimTag, *times: float) -> Any:
    s = TagStore([t])
    for now in times:
        s.tick(now)
    return t.value()


def test_counter_wraps_like_the_integer_type() -> None:
    gen = {"": Generator(K.COUNTER, start=120, step=5, interval_s=1.0)}
    assert value_at(tag("A", "SINT", generators=gen), 100.0, 101.0) == 125
    assert value_at(tag("A", "SINT", generators=gen), 100.0, 102.0) == -126
    assert value_at(tag("A", "USINT", generators=gen), 100.0, 104.0) == 140
    assert value_at(tag("A", "DINT[3]", generators=gen), 0.0, 2.5) == [130, 135, 140]


def test_ramp_sine_and_bool_conversions() -> None:
    ramp = {"": Generator(K.RAMP, minimum=10.0, maximum=20.0, period_s=4.0)}
    assert value_at(tag("R", "REAL", generators=ramp), 0.0, 1.0) == pytest.approx(12.5)
    assert value_at(tag("R", "REAL", generators=ramp), 0.0, 5.0) == pytest.approx(12.5)
    sine = {"": Generator(K.SINE, amplitude=2.0, offset=1.0, period_s=8.0)}
    assert value_at(tag("S", "LREAL", generators=sine), 0.0, 2.0) == pytest.approx(3.0)
    assert value_at(tag("S", "BOOL", generators=sine), 0.0, 2.0) is True
    assert value_at(tag("S", "BOOL", generators=sine), 0.0, 6.0) is False
    toggle = {"": Generator(K.COUNTER, interval_s=1.0)}
    assert value_at(tag("B", "BOOL", generators=toggle), 0.0, 1.0) is True
    assert value_at(tag("B", "BOOL", generators=toggle), 0.0, 2.0) is False
    assert value_at(tag("B", "BOOL[32]", generators=toggle), 0.0, 1.0)[:3] == [True, False, True]


def test_string_and_member_generators() -> None:
    fmt = {"": Generator(K.COUNTER, interval_s=2.0, start=7, format="n={v}")}
    assert value_at(tag("T", "STRING", generators=fmt), 0.0, 4.1) == "n=9"
    gens = {"Pos.X": Generator(K.RAMP, minimum=0.0, maximum=100.0, period_s=10.0),
            "Running": Generator(K.COUNTER, interval_s=1.0),
            "Counts[2]": Generator(K.CONSTANT, value=5)}
    v = value_at(tag("M", "MotorData", generators=gens), 0.0, 3.0)
    assert v["Pos"]["X"] == pytest.approx(30.0) and v["Running"] is True
    assert v["Counts"] == [0, 0, 5, 0]


def test_random_walk_is_a_pure_function_of_time() -> None:
    gen = {"": Generator(K.RANDOM_WALK, start=50.0, step=3.0, interval_s=0.1, seed=11)}
    direct = value_at(tag("W", "REAL[4]", generators=gen), 0.0, 7.0)
    stepped = value_at(tag("W", "REAL[4]", generators=gen), 0.0, *[i / 10 for i in range(71)])
    back = value_at(tag("W", "REAL[4]", generators=gen), 0.0, 9.0, 2.0, 7.0)
    assert direct == stepped == back
    assert len(set(direct)) == 4  # each element walks its own way
    assert all(0.0 <= x <= 100.0 for x in direct)
    other = value_at(tag("W", "REAL[4]", generators={"": Generator(
        K.RANDOM_WALK, start=50.0, step=3.0, interval_s=0.1, seed=12)}), 0.0, 7.0)
    assert other != direct


@settings(deadline=None, max_examples=50)
@given(st.floats(0, 2000), st.floats(0, 2000))
def test_two_stores_agree_at_the_same_times(t1: float, t2: float) -> None:
    a, b = default_store(), default_store()
    for s in (a, b):
        s.tick(1000.0)
    a.tick(1000.0 + t1)
    a.tick(1000.0 + t2)
    b.tick(1000.0 + t2)
    assert [x.image() for x in a] == [x.image() for x in b]


def test_writes_stick_constants_revert_and_generators_overwrite() -> None:
    s = default_store()
    s.tick(0.0)
    setpoint, heartbeat, counter = s.find("Setpoint"), s.find("Heartbeat"), s.find("Counter")
    assert setpoint and heartbeat and counter
    setpoint.set(1.5)
    heartbeat.set(0)
    counter.set(-1)
    assert (setpoint.value(), heartbeat.value(), counter.value()) == (1.5, 0, -1)
    s.tick(0.5)
    assert (setpoint.value(), heartbeat.value(), counter.value()) == (1.5, 1, 5)
    assert setpoint.writes == 1
    with pytest.raises(Exception, match="outside"):
        setpoint.write(b"\x00" * 8)


def test_restart_resets_values_epoch_and_incarnation() -> None:
    s = default_store()
    s.tick(100.0)
    s.tick(110.0)
    get(s, "Setpoint").set(0.0)
    before = s.incarnation
    s.restart(500.0)
    assert s.incarnation == before + 1
    assert get(s, "Setpoint").value() == 42.5
    assert get(s, "Counter").value() == 0
    s.tick(501.0)
    assert get(s, "Counter").value() == 10


def test_store_refuses_what_logix_refuses() -> None:
    with pytest.raises(Exception, match="500"):
        TagStore([tag("Big", "DINT[126]", produced=True)])
    with pytest.raises(Exception, match="controller-scoped"):
        TagStore([tag("Program:P.T", "DINT", produced=True)])
    with pytest.raises(Exception, match="twice"):
        TagStore([tag("A", "DINT"), tag("a", "INT")])
    with pytest.raises(Exception, match="instance id 5 is used twice"):
        TagStore([tag("A", "DINT", instance_id=5), tag("B", "DINT", instance_id=5)])
    with pytest.raises(Exception, match="members instead"):
        tag("M", "MotorData", generators={"": Generator(K.SINE)})
    with pytest.raises(Exception, match="no member"):
        tag("M", "MotorData", generators={"Nope": Generator(K.SINE)})


# ---------------------------------------------------------------------------------------------
# TOML
# ---------------------------------------------------------------------------------------------


def test_example_file_loads_and_moves() -> None:
    s = load_store(EXAMPLE)
    assert s.program_name == "PACKAGING_LINE" and s.identity.revision_major == 33
    infeed = s.find("Infeed")
    assert infeed and infeed.max_consumers == 1 and not infeed.unicast_allowed
    assert infeed.value()["Pos"]["Homed"] is True
    pressure = s.find("Pressure")
    assert pressure and pressure.default_rpi_us == 20_000
    assert get(s, "LineCounter").max_consumers == 8
    assert get(s, "Zones").max_consumers == 2  # the Logix default
    assert get(s, "FirmwareId").external_access == ExternalAccess.READ_ONLY
    assert get(s, "Program:MainProgram.StepNo").value() == 1
    s.tick(0.0)
    s.tick(25.0)
    assert get(s, "Batch").value() == "BATCH-1002"
    assert get(s, "Recipe").value() == [[1, 2, 3], [4, 5, 6]]
    assert 3.5 <= pressure.value() <= 8.5


def test_docs_describe_every_tag_key() -> None:
    doc = (ROOT / "docs" / "simulator.md").read_text()
    for key in ("name", "type", "dims", "produced", "max_consumers", "rpi_min_us",
                "default_rpi_us", "unicast_allowed", "access", "instance_id", "value",
                "generator", "generators", "random_walk", "format"):
        assert f"`{key}`" in doc, key


def write_toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sim.toml"
    p.write_text(text)
    return p


BAD_FILES = [
    ('[[tags]]\nname = "A"\ntype = "DINTT"\n', "tags[0] (A).type", "unknown type"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\nproduce = true\n', "tags[0].produce", "unknown key"),
    ('[[tags]]\nname = "A"\n', "tags[0]", "needs name and type"),
    ('[[tags]]\nname = "A"\ntype = "DINT[200]"\nproduced = true\n', "tags[0] (A)",
     "at most 500"),
    ('[[tags]]\nname = "Program:P.A"\ntype = "DINT"\nproduced = true\n', "tags[0] (Program:P.A)",
     "controller-scoped"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\n[[tags]]\nname = "a"\ntype = "DINT"\n',
     "tags[1] (a)", "declared twice"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\nrpi_min_us = 5000\nrpi_max_us = 1000\n',
     "tags[0] (A).rpi_min_us", "swap"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\ndefault_rpi_us = 10\n', "tags[0] (A).default_rpi_us",
     "inside the RPI limits"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\nmax_consumers = 0\n', "tags[0] (A).max_consumers",
     "positive"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\ngenerator = { kind = "square" }\n',
     "tags[0] (A).generator.kind", "use one of"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\ngenerator = { kind = "sine", step = 1 }\n',
     "tags[0] (A).generator.step", "unknown key"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\ngenerator = { kind = "sine", period_s = 0 }\n',
     "tags[0] (A).generator", "> 0"),
    ('[[tags]]\nname = "A"\ntype = "STRING"\ngenerator = { kind = "counter", format = "x" }\n',
     "tags[0] (A).generator.format", "{v}"),
    ('[[tags]]\nname = "A"\ntype = "SINT"\nvalue = 300\n', "tags[0] (A)", "does not fit SINT"),
    ('[[tags]]\nname = "A"\ntype = "DINT"\naccess = "rw"\n', "tags[0] (A).access",
     "read/write"),
    ('[[tags]]\nname = "A.B"\ntype = "DINT"\n', "tags[0] (A.B).name", "no members"),
    ('[[tags]]\nname = "A"\ntype = "DINT[2]"\ndims = 3\n', "tags[0] (A).dims", "dims given"),
    (('[types.U]\nmembers = [{ name = "A", type = "V" }]\n'
     '[types.V]\nmembers = [{ name = "B", type = "U" }]\n'), "types.U", "cycle"),
    ('[types.U]\nmembers = []\n', "types.U.members", "missing or empty"),
    ('[types.U]\nmembers = [{ name = "A", type = "DINT" }, { name = "a", type = "INT" }]\n',
     "types.U", "declared twice"),
    (('[[tags]]\nname = "A"\ntype = "U"\n[tags.generators]\n"X" = { kind = "sine" }\n'
     '[types.U]\nmembers = [{ name = "B", type = "DINT" }]\n'), "tags[0] (A)", "no member"),
    ('[controller]\nrevision = "33"\n', "controller.revision", "MAJOR.MINOR"),
    ('[controller]\nmode = "fast"\n', "controller.mode", "remote run"),
    ('[controller]\nproduct_name = "' + "x" * 40 + '"\n', "controller.product_name", "1-32"),
    ('[controller]\nserial = -1\n', "controller.serial", "out of range"),
    ('[controller]\nprogram_name = 5\n', "controller.program_name", "a string"),
    ('[plc]\n', "(top level).plc", "unknown key"),
    ("[[tags]\n", "not valid TOML", "fix the syntax"),
]


@pytest.mark.parametrize(("text", "key", "fix"), BAD_FILES)
def test_errors_name_file_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(SimConfigError) as info:
        load_store(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert key in message and fix in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SimConfigError, match="file not found; check the path"):
        load_store(tmp_path / "nope.toml")


def test_udts_in_any_order_with_ids_and_layout(tmp_path: Path) -> None:
    path = write_toml(tmp_path, """
[types.Outer]
members = [{ name = "Flag", type = "BOOL" }, { name = "In", type = "Inner", dims = 2 },
           { name = "Big", type = "LINT" }]
[types.Inner]
instance_id = 0x345
handle = 0x1234
members = [{ name = "V", type = "INT" }]
[[tags]]
name = "O"
type = "Outer"
value = { In = [{ V = 1 }, { V = 2 }] }
""")
    s = load_store(path)
    outer = s.find("O")
    assert outer is not None and isinstance(outer.type, StructType)
    inner = s.templates()[0x345]
    assert inner.handle == 0x1234 and inner.size == 4
    assert outer.type.size == 24  # host@0, In@4 (2 x 4), Big@16 aligned to 8
    assert outer.value() == {"Flag": False, "In": [{"V": 1}, {"V": 2}], "Big": 0}
    assert struct.unpack_from("<h", outer.image(), 8)[0] == 2


def test_parse_type() -> None:
    assert parse_type("dint[2, 3]", {}) == ArrayType(AtomicType(DataTypeCode.DINT), (2, 3))
    assert parse_type("STRING", {}) == STRING
    with pytest.raises(Exception, match="NAME"):
        parse_type("DINT[]", {})
    with pytest.raises(Exception, match="multiple of 32"):
        parse_type("BOOL[10]", {})
    cube = parse_type("SINT[2,2,2]", {})
    assert isinstance(cube, ArrayType) and math.prod(cube.dims) == 8


def test_a_misspelt_key_gets_the_shared_did_you_mean(tmp_path: Path) -> None:
    """Tag files are checked with the pipeline config's helpers (acquisition/toml_check.py)."""
    path = write_toml(tmp_path, '[[tags]]\nname = "A"\ntype = "DINT"\nproduce = true\n')
    with pytest.raises(SimConfigError) as info:
        load_store(path)
    assert str(info.value).startswith(f"{path}: tags[0].produce: unknown key; did you mean"
                                      " 'produced'? use one of ")


def test_a_wall_clock_generator_writes_the_controllers_time_into_a_lint(tmp_path: Path) -> None:
    """A produced UDT whose LINT member holds the controller's clock, as a task's GSV
    WallClockTime CurrentValue would write it: what a tag's ``source_time`` reads."""
    path = write_toml(tmp_path, """
[types.Stamped]
members = [{ name = "Value", type = "REAL" }, { name = "Stamp", type = "LINT" }]

[[tags]]
name = "Line"
type = "Stamped"
produced = true
generators = { "Value" = { kind = "sine" }, "Stamp" = { kind = "wall_clock" } }
""")
    store = load_store(path)
    store.wall_clock = lambda now: 1_700_000_000_000_000 + round(now * 1e6)  # µs, as 0x8B
    store.tick(5.0)
    line = get(store, "Line")
    assert line.value()["Stamp"] == 1_700_000_005_000_000
    store.tick(5.25)
    assert line.value()["Stamp"] == 1_700_000_005_250_000
    assert struct.unpack_from("<q", line.image(), 8)[0] == 1_700_000_005_250_000
    alone = value_at(tag("T", "LINT", generators={"": Generator(K.WALL_CLOCK)}), 10.0, 12.5)
    assert alone == 2_500_000  # no clock attached: µs since the simulator's start
    with pytest.raises(Exception, match="wall_clock generator writes microseconds"):
        tag("T", "DINT", generators={"": Generator(K.WALL_CLOCK)})
