"""Bus schema (acquisition/wire.py): golden bodies written by hand from docs/wire-format.md,
round trips, junk and truncation, forward compatibility, topic escaping."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition import wire
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.wire import (
    SCHEMA_VERSION,
    Event,
    EventKind,
    Sample,
    SeqCounter,
    Stats,
    TopicKind,
    decode,
    escape_name,
    parse_topic,
    topic_for_event,
    topic_for_sample,
    topic_for_stats,
    topic_prefix,
    unescape_name,
)

# --------------------------------------------------------------------------- golden bodies
# Each body is spelled out byte by byte from the MessagePack spec, independently of the
# encoder, in the key order docs/wire-format.md gives.

GOLDEN_SAMPLE = Sample(
    seq=7,
    publisher="w1",
    plc="plc1",
    tag="Count",
    t_wall_ns=1_700_000_000_123_456_789,
    t_mono_ns=5_000_000_000,
    cip_seq=0x1234,
    gap=2,
    value=42,
    raw=b"\x2a\x00\x00\x00",
    type_name="DINT",
)
GOLDEN_SAMPLE_TOPIC = b"sample/plc1/Count/"
GOLDEN_SAMPLE_BODY = bytes.fromhex(
    "8c"  # fixmap, 12 pairs
    "a176 01"  # "v": 1
    "a27371 07"  # "sq": 7
    "a3707562 a27731"  # "pub": "w1"
    "a3706c63 a4706c6331"  # "plc": "plc1"
    "a3746167 a5436f756e74"  # "tag": "Count"
    "a27477 cf17979cfe3d85cd15"  # "tw": uint64 1700000000123456789
    "a2746d cf000000012a05f200"  # "tm": uint64 5000000000
    "a26373 cd1234"  # "cs": uint16 0x1234
    "a3676170 02"  # "gap": 2
    "a376616c 2a"  # "val": 42
    "a3726177 c4042a000000"  # "raw": bin8, 4 bytes
    "a27479 a444494e54"  # "ty": "DINT"
)

GOLDEN_UDT_SAMPLE = Sample(
    seq=0,
    publisher="w1",
    plc="plc1",
    tag="Recipe",
    t_wall_ns=-1,
    t_mono_ns=0,
    cip_seq=0xFFFF,
    gap=0,
    value={"a": [True, None], "t": 1.5},
    raw=b"",
)
GOLDEN_UDT_SAMPLE_BODY = bytes.fromhex(
    "8b"  # fixmap, 11 pairs (no "ty")
    "a176 01"
    "a27371 00"
    "a3707562 a27731"
    "a3706c63 a4706c6331"
    "a3746167 a6526563697065"  # "Recipe"
    "a27477 ff"  # negative fixint -1
    "a2746d 00"
    "a26373 cdffff"
    "a3676170 00"
    "a376616c 82 a161 92c3c0 a174 cb3ff8000000000000"  # {"a":[true,nil],"t":1.5}
    "a3726177 c400"  # empty bin
)

GOLDEN_EVENT = Event(
    seq=3,
    publisher="w1",
    plc="plc1",
    tag="Count",
    t_wall_ns=10,
    t_mono_ns=20,
    kind=EventKind.REJECT,
    state_from="OPENING",
    state_to="BACKOFF",
    cip_general=0x01,
    cip_extended=0x0109,
    status_text="invalid connection size",
    message="",
)
GOLDEN_EVENT_TOPIC = b"event/plc1/Count/"
GOLDEN_EVENT_BODY = bytes.fromhex(
    "8e"  # fixmap, 14 pairs
    "a176 01"
    "a27371 03"
    "a3707562 a27731"
    "a3706c63 a4706c6331"
    "a3746167 a5436f756e74"
    "a27477 0a"
    "a2746d 14"
    "a16b a672656a656374"  # "k": "reject"
    "a466726f6d a74f50454e494e47"  # "from": "OPENING"
    "a2746f a74241434b4f4646"  # "to": "BACKOFF"
    "a26773 01"  # "gs": 1
    "a26573 cd0109"  # "es": 0x0109
    "a3737478 b7"
    + b"invalid connection size".hex()  # "stx": fixstr 23
    + "a36d7367 a0"  # "msg": ""
)

GOLDEN_STATS = Stats(
    seq=1,
    publisher="w1",
    worker="w1",
    t_wall_ns=1,
    t_mono_ns=2,
    counters={"rx": 300, "rate": 0.5},
)
GOLDEN_STATS_TOPIC = b"stats/w1/"
GOLDEN_STATS_BODY = bytes.fromhex(
    "87"
    "a176 01"
    "a27371 01"
    "a3707562 a27731"
    "a2776b a27731"  # "wk": "w1"
    "a27477 01"
    "a2746d 02"
    "a163 82 a27278 cd012c a472617465 cb3fe0000000000000"  # {"rx":300,"rate":0.5}
)

GOLDEN = [
    (GOLDEN_SAMPLE, GOLDEN_SAMPLE_TOPIC, GOLDEN_SAMPLE_BODY),
    (GOLDEN_UDT_SAMPLE, b"sample/plc1/Recipe/", GOLDEN_UDT_SAMPLE_BODY),
    (GOLDEN_EVENT, GOLDEN_EVENT_TOPIC, GOLDEN_EVENT_BODY),
    (GOLDEN_STATS, GOLDEN_STATS_TOPIC, GOLDEN_STATS_BODY),
]
GOLDEN_IDS = ["sample", "udt-sample", "event", "stats"]


@pytest.mark.parametrize(("msg", "topic", "body"), GOLDEN, ids=GOLDEN_IDS)
def test_decode_golden(msg: wire.Message, topic: bytes, body: bytes) -> None:
    assert decode(topic, body) == msg
    assert type(msg).decode(topic, body) == msg


@pytest.mark.parametrize(("msg", "topic", "body"), GOLDEN, ids=GOLDEN_IDS)
def test_encode_golden(msg: wire.Message, topic: bytes, body: bytes) -> None:
    assert msg.encode() == (topic, body)


@pytest.mark.parametrize(("msg", "topic", "body"), GOLDEN, ids=GOLDEN_IDS)
def test_every_truncated_prefix_is_malformed(msg: wire.Message, topic: bytes, body: bytes) -> None:
    for n in range(len(body)):
        with pytest.raises(MalformedPacket):
            decode(topic, body[:n])


@pytest.mark.parametrize(("msg", "topic", "body"), GOLDEN, ids=GOLDEN_IDS)
def test_trailing_bytes_are_malformed(msg: wire.Message, topic: bytes, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode(topic, body + b"\x00")


def test_example_in_docs_matches_the_encoder() -> None:
    """docs/wire-format.md shows GOLDEN_SAMPLE in hex; keep the two in step."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
    text = doc.read_text(encoding="utf-8")
    hex_lines: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == "<!-- example-sample-hex -->":
            inside = True
            continue
        if inside and line.startswith("```") and hex_lines:
            break
        if inside and not line.startswith("```"):
            hex_lines.append(line.split("#")[0])
    assert bytes.fromhex("".join(hex_lines)) == GOLDEN_SAMPLE_BODY


# --------------------------------------------------------------------------- forward compat


def _patched(body: bytes, **changes: object) -> bytes:
    m = msgpack.unpackb(body, raw=False)
    m.update(changes)
    packed: bytes = msgpack.packb(m, use_bin_type=True)
    return packed


def test_unknown_extra_fields_are_ignored() -> None:
    body = _patched(GOLDEN_SAMPLE_BODY, zz=[1, 2, {"x": b"\x00"}], q=None)
    assert decode(GOLDEN_SAMPLE_TOPIC, body) == GOLDEN_SAMPLE


def test_later_schema_version_is_accepted_and_kept() -> None:
    body = _patched(GOLDEN_EVENT_BODY, v=2, new_field="x")
    got = decode(GOLDEN_EVENT_TOPIC, body)
    assert isinstance(got, Event)
    assert got.v == 2
    assert got.kind == "reject"


def test_key_order_and_float32_from_other_encoders() -> None:
    """Another language may order keys differently and send a float32 value."""
    m = msgpack.unpackb(GOLDEN_SAMPLE_BODY, raw=False)
    reordered = b"\x8c" + b"".join(
        msgpack.packb(k) + (b"\xca\x3f\xc0\x00\x00" if k == "val" else msgpack.packb(m[k]))
        for k in reversed(list(m))
    )
    got = decode(GOLDEN_SAMPLE_TOPIC, reordered)
    assert isinstance(got, Sample)
    assert got.value == 1.5


def test_optional_keys_absent_or_nil_are_alike() -> None:
    minimal = msgpack.packb(
        {"v": 1, "sq": 0, "pub": "w", "plc": "p", "tag": "", "tw": 0, "tm": 0, "k": "error"}
    )
    with_nils = _patched(minimal, **{"from": None, "to": None, "gs": None, "es": None})
    a = decode(b"event/p//", minimal)
    assert a == decode(b"event/p//", with_nils)
    assert a == Event(seq=0, publisher="w", plc="p", t_wall_ns=0, t_mono_ns=0, kind="error")


# --------------------------------------------------------------------------- junk


JUNK = [
    (GOLDEN_SAMPLE_TOPIC, b"", "empty body"),
    (GOLDEN_SAMPLE_TOPIC, b"\xc1", "reserved byte"),
    (GOLDEN_SAMPLE_TOPIC, msgpack.packb([1, 2]), "array, not map"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, v=0), "version 0"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, v="1"), "version as str"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, sq=-1), "negative seq"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, sq=True), "bool seq"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, cs=0x10000), "cip_seq > u16"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, raw="2a"), "raw as str"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, val=b"\x01"), "bin value"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, tw=1.0), "float time"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, plc=""), "empty plc"),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, ty=5), "type name as int"),
    (GOLDEN_SAMPLE_TOPIC, GOLDEN_SAMPLE_BODY[:-5] + b"\xa4\xff\xfe\xfd\xfc", "bad UTF-8"),
    (GOLDEN_SAMPLE_TOPIC, msgpack.packb({"v": 1}), "missing keys"),
    (GOLDEN_SAMPLE_TOPIC, msgpack.packb({1: 2}), "int key"),
    (
        GOLDEN_SAMPLE_TOPIC,
        _patched(GOLDEN_SAMPLE_BODY, val=msgpack.ExtType(5, b"x")),
        "ext type value",
    ),
    (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, val={"a": {1: 2}}), "int map key"),
    (b"sample/plc1/Other/", GOLDEN_SAMPLE_BODY, "topic tag differs from body"),
    (b"sample/plc2/Count/", GOLDEN_SAMPLE_BODY, "topic plc differs from body"),
    (b"event/plc1/Count/", GOLDEN_SAMPLE_BODY, "sample body on event topic"),
    (b"sample/plc1/Count", GOLDEN_SAMPLE_BODY, "no trailing slash"),
    (b"sample/plc1/Count/x/", GOLDEN_SAMPLE_BODY, "extra segment"),
    (b"alarm/plc1/Count/", GOLDEN_SAMPLE_BODY, "unknown topic kind"),
    (b"sample/plc%31/Count/", GOLDEN_SAMPLE_BODY, "non-canonical escape"),
    (b"\xff/", GOLDEN_SAMPLE_BODY, "topic not UTF-8"),
    (GOLDEN_STATS_TOPIC, _patched(GOLDEN_STATS_BODY, c={"rx": "many"}), "counter as str"),
    (GOLDEN_STATS_TOPIC, _patched(GOLDEN_STATS_BODY, c=[1]), "counters as list"),
    (GOLDEN_EVENT_TOPIC, _patched(GOLDEN_EVENT_BODY, gs=256), "general status > u8"),
    (GOLDEN_EVENT_TOPIC, _patched(GOLDEN_EVENT_BODY, k=""), "empty kind"),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "body", "why"), JUNK)
def test_junk_is_malformed(topic: bytes, body: bytes, why: str) -> None:
    with pytest.raises(MalformedPacket):
        decode(topic, body)


@pytest.mark.parametrize(("topic", "body", "why"), JUNK)
def test_junk_of_a_known_stream_is_malformed(topic: bytes, body: bytes, why: str) -> None:
    # The golden sample's stream is known to the hot-path reader: its quick checks must reject
    # what the reference rejects, and the error is the reference's.
    assert decode(GOLDEN_SAMPLE_TOPIC, GOLDEN_SAMPLE_BODY) == GOLDEN_SAMPLE
    with pytest.raises(MalformedPacket) as quick:
        decode(topic, body)
    with pytest.raises(MalformedPacket) as reference:
        kind, _ = parse_topic(topic)
        {TopicKind.SAMPLE: Sample._decode_checked, TopicKind.EVENT: Event.decode,
         TopicKind.STATS: Stats.decode}[kind](topic, body)  # fmt: skip
    assert str(quick.value) == str(reference.value)


def test_deeply_nested_value_is_malformed_not_a_crash() -> None:
    nested = b"\xa3val" + b"\x91" * 500 + b"\x2a"  # "val": [[[...[42]...]]]
    body = GOLDEN_SAMPLE_BODY.replace(bytes.fromhex("a376616c2a"), nested)
    with pytest.raises(MalformedPacket):
        decode(GOLDEN_SAMPLE_TOPIC, body)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_malformed(body: bytes) -> None:
    try:
        decode(GOLDEN_SAMPLE_TOPIC, body)
    except MalformedPacket:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_random_topics_raise_only_malformed(topic: bytes) -> None:
    try:
        decode(topic, GOLDEN_SAMPLE_BODY)
    except MalformedPacket:
        pass


# --------------------------------------------------------------------------- round trips

names = st.text(min_size=1, max_size=20)
u64 = st.integers(0, wire.U64_MAX)
i64 = st.integers(wire.I64_MIN, wire.I64_MAX)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(wire.I64_MIN, wire.U64_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
opt_names = st.none() | st.text(max_size=10)

samples = st.builds(
    Sample,
    seq=u64,
    publisher=names,
    plc=names,
    tag=names,
    t_wall_ns=i64,
    t_mono_ns=i64,
    cip_seq=st.integers(0, 0xFFFF),
    gap=u64,
    value=values,
    raw=st.binary(max_size=64),
    type_name=st.none() | names,
)
events = st.builds(
    Event,
    seq=u64,
    publisher=names,
    plc=names,
    tag=st.text(max_size=10),
    t_wall_ns=i64,
    t_mono_ns=i64,
    kind=st.sampled_from(list(EventKind)) | names,
    state_from=opt_names,
    state_to=opt_names,
    cip_general=st.none() | st.integers(0, 0xFF),
    cip_extended=st.none() | st.integers(0, 0xFFFF),
    status_text=opt_names,
    message=st.text(max_size=30),
)
stats = st.builds(
    Stats,
    seq=u64,
    publisher=names,
    worker=names,
    t_wall_ns=i64,
    t_mono_ns=i64,
    counters=st.dictionaries(
        st.text(max_size=8), st.integers(wire.I64_MIN, wire.U64_MAX) | st.floats(allow_nan=False)
    ),
)


@settings(max_examples=200)
@given(samples | events | stats)
def test_round_trip(msg: wire.Message) -> None:
    topic, body = msg.encode()
    assert decode(topic, body) == msg
    assert type(msg).decode(topic, body).encode() == (topic, body)


def test_nan_value_round_trips_bit_for_bit() -> None:
    msg = Sample(
        seq=0,
        publisher="w",
        plc="p",
        tag="r",
        t_wall_ns=0,
        t_mono_ns=0,
        cip_seq=0,
        gap=0,
        value=[math.nan, math.inf],
        raw=b"",
    )
    topic, body = msg.encode()
    got = decode(topic, body)
    assert isinstance(got, Sample) and isinstance(got.value, list)
    assert math.isnan(got.value[0]) and got.value[1] == math.inf
    assert got.encode() == (topic, body)


@pytest.mark.parametrize(
    "change",
    [
        {"seq": -1},
        {"seq": 2**64},
        {"cip_seq": 0x10000},
        {"plc": ""},
        {"tag": ""},
        {"publisher": ""},
        {"value": (1, 2)},
        {"value": b"bytes"},
        {"value": {1: "int key"}},
        {"value": 2**64},
        {"raw": "not bytes"},
        {"t_wall_ns": 2**63},
        {"v": 0},
        {"plc": "bad\ud800surrogate"},
    ],
)
def test_encode_rejects_what_the_schema_forbids(change: dict[str, object]) -> None:
    bad = dataclasses.replace(GOLDEN_SAMPLE, **change)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        bad.encode()


def test_event_without_tag_uses_empty_segment() -> None:
    ev = Event(seq=0, publisher="w", plc="p", t_wall_ns=0, t_mono_ns=0, kind=EventKind.ERROR)
    topic, body = ev.encode()
    assert topic == b"event/p//"
    assert topic.startswith(topic_prefix("event", "p"))
    assert decode(topic, body) == ev


def test_outage_event_round_trips_and_an_older_reader_sees_a_plain_event() -> None:
    ev = Event(seq=12, publisher="w1", plc="plc1", tag="Count", t_wall_ns=1_700_000_002_020_000_000,
               t_mono_ns=52_020_000_000, kind=EventKind.OUTAGE, message="outage",
               outage_start_wall_ns=1_700_000_001_000_000_000, outage_start_mono_ns=51_000_000_000,
               expected=50, rpi_us=20_000, cause=wire.OutageCause.TIMEOUT, resumed=True)
    topic, body = ev.encode()
    assert decode(topic, body) == ev
    m = msgpack.unpackb(body, raw=False)
    assert {k: m[k] for k in ("k", "stw", "stm", "exp", "rpi", "cause", "res")} == {
        "k": "outage", "stw": 1_700_000_001_000_000_000, "stm": 51_000_000_000, "exp": 50,
        "rpi": 20_000, "cause": "timeout", "res": True}
    # Every other event leaves the outage keys out.
    plain = msgpack.unpackb(dataclasses.replace(ev, kind="state", outage_start_wall_ns=None,
                                                outage_start_mono_ns=None, expected=None,
                                                rpi_us=None, cause=None, resumed=None
                                                ).encode()[1], raw=False)
    assert not {"stw", "stm", "exp", "rpi", "cause", "res"} & set(plain)


@pytest.mark.parametrize("change", [{"resumed": 1}, {"expected": -1}, {"rpi_us": 2**32},
                                    {"cause": ""}])
def test_outage_keys_are_checked(change: dict[str, object]) -> None:
    ev = Event(seq=0, publisher="w", plc="p", tag="T", t_wall_ns=0, t_mono_ns=0,
               kind=EventKind.OUTAGE, outage_start_wall_ns=0, outage_start_mono_ns=0, expected=0,
               rpi_us=1000, cause="timeout", resumed=False)
    with pytest.raises(UsageError):
        dataclasses.replace(ev, **change).encode()  # type: ignore[arg-type]


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("Count", "Count"),
        ("Program:Main.Arr[3]", "Program:Main.Arr[3]"),
        ("a/b", "a%2Fb"),
        ("50%", "50%25"),
        ("two words", "two%20words"),
        ("tab\there", "tab%09here"),
        ("nl\n", "nl%0A"),
        ("\x00", "%00"),
        ("Température", "Température"),
        ("nbsp\u00a0", "nbsp%C2%A0"),
    ],
)
def test_escape_name(name: str, escaped: str) -> None:
    assert escape_name(name) == escaped
    assert unescape_name(escaped) == name


@given(st.text(max_size=30))
def test_escape_round_trip_and_no_separator(name: str) -> None:
    esc = escape_name(name)
    assert "/" not in esc
    assert all(ch.isprintable() and not ch.isspace() for ch in esc)
    assert unescape_name(esc) == name


@pytest.mark.parametrize("bad", ["%", "%4", "%zz", "%2f", "%41", "%FF"])
def test_unescape_rejects_non_canonical(bad: str) -> None:
    with pytest.raises(MalformedPacket):
        unescape_name(bad)


def test_topic_helpers() -> None:
    assert topic_for_sample("plc1", "Count") == b"sample/plc1/Count/"
    assert topic_for_sample("line/2", "x y") == b"sample/line%2F2/x%20y/"
    assert topic_for_event("plc1", "Count") == b"event/plc1/Count/"
    assert topic_for_event("plc1") == b"event/plc1//"
    assert topic_for_stats("eth0") == b"stats/eth0/"
    assert topic_prefix() == b""
    assert topic_prefix(TopicKind.SAMPLE) == b"sample/"
    assert topic_prefix("sample", "plc1") == b"sample/plc1/"
    assert topic_prefix("sample", "plc1", "Count") == b"sample/plc1/Count/"
    assert topic_prefix("stats", "eth0") == b"stats/eth0/"
    assert parse_topic(b"sample/line%2F2/x%20y/") == (TopicKind.SAMPLE, ("line/2", "x y"))


def test_prefix_filter_is_exact() -> None:
    """The trailing separator keeps plc1 from matching plc10 under prefix subscription."""
    assert not topic_for_sample("plc10", "T").startswith(topic_prefix("sample", "plc1"))
    assert topic_for_sample("plc1", "T").startswith(topic_prefix("sample", "plc1"))
    assert not topic_for_sample("plc1", "Tag10").startswith(topic_prefix("sample", "plc1", "Tag1"))


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("nope",), "unknown kind"),
        (("stats", "a", "b"), "too many names"),
        ((None, "a"), "name without kind"),
    ],
)
def test_topic_prefix_misuse(args: tuple[Any, ...], why: str) -> None:
    with pytest.raises((UsageError, ValueError)):
        topic_prefix(*args)


def test_seq_counter_counts_per_topic_from_zero() -> None:
    c = SeqCounter()
    a, b = topic_for_sample("p", "a"), topic_for_sample("p", "b")
    assert [c.next(a), c.next(a), c.next(b), c.next(a)] == [0, 1, 0, 2]
    assert SeqCounter().next(a) == 0  # a new publisher instance starts again


def test_schema_version_constant() -> None:
    assert SCHEMA_VERSION == 1
    assert GOLDEN_SAMPLE.v == 1


# --------------------------------------------------------------------------- sans-IO


FORBIDDEN = ("socket", "asyncio", "zmq", "time", "threading", "multiprocessing", "select")


def test_wire_imports_no_io_modules() -> None:
    src = Path(wire.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & set(FORBIDDEN)
    # And nothing it pulls in loads them either (beyond what the interpreter preloads).
    code = (
        "import sys; before = set(sys.modules); import acquisition.wire; "
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ hot-path sample encoder


def test_sample_stream_bytes_equal_sample_encode() -> None:
    stream = wire.SampleStream("w1", "plc/1", "Motor %1", "MotorData")
    for seq, value in enumerate([1, 2.5, {"a": [True, "x"]}, None]):
        source = None if seq % 2 else 1_700_000_000_123_456_000 + seq  # the controller's time
        body = stream.encode(10 + seq, 20, 7, 1, value, b"\x01\x02", source)
        expected = wire.Sample(
            seq=seq,
            publisher="w1",
            plc="plc/1",
            tag="Motor %1",
            t_wall_ns=10 + seq,
            t_mono_ns=20,
            cip_seq=7,
            gap=1,
            value=value,
            raw=b"\x01\x02",
            type_name="MotorData",
            source_ns=source,
        ).encode()
        assert (stream.topic, body) == expected
        decoded = wire.decode(stream.topic, body)
        assert (decoded.seq, getattr(decoded, "source_ns", "?")) == (seq, source)


def test_a_reader_from_before_st_still_reads_a_sample_with_it() -> None:
    """``st`` is an added optional key: a decoder that knows only the older keys (the keys
    without it) reads the same sample, and a body without it decodes with ``source_ns`` None."""
    stream = wire.SampleStream("w1", "p", "Status", "Status")
    with_st = msgpack.unpackb(stream.encode(1, 2, 3, 0, {"Stamp": 5}, b"\x05", 5000), raw=False)
    older = [k.key for k in wire.SAMPLE_KEYS if k.key != "st"]
    assert set(with_st) - set(older) == {"st"}
    assert wire.Sample.decode(stream.topic, stream.encode(1, 2, 3, 0, 1, b"")).source_ns is None


def test_sample_stream_checks_constant_fields_once() -> None:
    with pytest.raises(UsageError, match="plc must not be empty"):
        wire.SampleStream("w1", "", "tag")
    stream = wire.SampleStream("w1", "p", "t")
    assert wire.Sample.decode(stream.topic, stream.encode(1, 2, 3, 4, [1.5], b"")).type_name is None


@given(
    st.lists(st.floats(allow_nan=False), max_size=20),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)
def test_sample_stream_round_trip(values: list[Any], cip_seq: int, raw: bytes) -> None:
    stream = wire.SampleStream("pub", "plc", "tag", "REAL")
    s = wire.Sample.decode(stream.topic, stream.encode(5, 6, cip_seq, 0, values, raw))
    assert (s.value, s.cip_seq, s.raw, s.seq) == (values, cip_seq, raw, 0)


def test_sample_stream_shares_the_publishers_counter() -> None:
    counter = wire.SeqCounter()
    first = wire.SampleStream("w", "p", "t", counter=counter)
    assert [wire.decode(first.topic, first.encode(0, 0, 0, 0, 1, b"")).seq for _ in range(2)] == [
        0,
        1,
    ]
    again = wire.SampleStream("w", "p", "t", counter=counter)  # consumer removed and re-added
    assert wire.decode(again.topic, again.encode(0, 0, 0, 0, 1, b"")).seq == 2


# ------------------------------------------------------------------ hot-path sample reader


def test_sample_reader_checks_every_key_of_the_schema() -> None:
    keys = (*wire.SAMPLE_STREAM_KEYS, *wire.SAMPLE_MESSAGE_KEYS)
    assert sorted(keys) == sorted(k.key for k in wire.SAMPLE_KEYS)


def test_sample_reader_knows_a_stream_after_the_reference_accepted_it() -> None:
    reader = wire.SampleReader()
    assert reader.quick(GOLDEN_SAMPLE_TOPIC, GOLDEN_SAMPLE_BODY) is None  # unknown yet
    assert reader.decode(GOLDEN_SAMPLE_TOPIC, GOLDEN_SAMPLE_BODY) == GOLDEN_SAMPLE
    later = _patched(GOLDEN_SAMPLE_BODY, sq=8, val=[1.5, None], tw=-1, st=-5)
    assert reader.quick(GOLDEN_SAMPLE_TOPIC, later) == dataclasses.replace(
        GOLDEN_SAMPLE, seq=8, value=[1.5, None], t_wall_ns=-1, source_ns=-5
    )
    # Another stream (publisher, names, type or topic) is the reference's again.
    for topic, body in [
        (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, pub="w2")),
        (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, ty="INT")),
        (GOLDEN_SAMPLE_TOPIC, _patched(GOLDEN_SAMPLE_BODY, ty=None)),
        (b"sample/plc1/Other/", _patched(GOLDEN_SAMPLE_BODY, tag="Other")),
    ]:
        assert reader.quick(topic, body) is None
        assert reader.decode(topic, body) == Sample._decode_checked(topic, body)
        assert reader.quick(topic, body) == Sample._decode_checked(topic, body)


def test_sample_reader_forgets_past_its_bound() -> None:
    reader = wire.SampleReader(max_streams=2)
    for tag in ("a", "b", "c"):
        stream = wire.SampleStream("w", "p", tag)
        reader.decode(stream.topic, stream.encode(0, 0, 0, 0, 1, b""))
    stream = wire.SampleStream("w", "p", "c")
    assert reader.quick(stream.topic, stream.encode(0, 0, 0, 0, 1, b"")) is not None
    stream = wire.SampleStream("w", "p", "a")
    assert reader.quick(stream.topic, stream.encode(0, 0, 0, 0, 1, b"")) is None


# What a hostile or broken publisher may put under a key of a known stream.
odd_values = (
    values
    | st.binary(max_size=4)
    | st.integers(wire.I64_MIN, wire.U64_MAX)
    | st.floats()
    | st.lists(st.integers(wire.I64_MIN, wire.U64_MAX), max_size=2)
    | st.dictionaries(st.integers(0, 3), st.none(), max_size=2)
    | st.just(msgpack.ExtType(1, b"x"))
)


@settings(max_examples=300)
@given(samples, st.sampled_from([k.key for k in wire.SAMPLE_KEYS] + ["zz"]), odd_values,
       st.booleans())  # fmt: skip
def test_sample_reader_agrees_with_the_reference(
    msg: Sample, key: str, value: object, drop: bool
) -> None:
    reader = wire.SampleReader()
    topic, body = msg.encode()
    assert reader.decode(topic, body) == msg
    assert reader.quick(topic, body) == msg
    fields = msgpack.unpackb(body, raw=False)
    if drop:
        fields.pop(key, None)
    else:
        fields[key] = value
    changed = msgpack.packb(fields, use_bin_type=True)
    try:
        expected: Sample | MalformedPacket = Sample._decode_checked(topic, changed)
    except MalformedPacket as exc:
        expected = exc
    quick = reader.quick(topic, changed)
    try:
        got: Sample | MalformedPacket = reader.decode(topic, changed)
    except MalformedPacket as exc:
        got = exc
    if isinstance(expected, MalformedPacket):
        assert quick is None
        assert isinstance(got, MalformedPacket) and str(got) == str(expected)
    else:  # compared as bytes: a NaN is not equal to itself
        assert quick is None or quick.encode() == expected.encode()
        assert isinstance(got, Sample) and got.encode() == expected.encode()


@given(
    st.sampled_from([None, "DINT", "T" * 40]),
    st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**63 - 1),
    st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1),
    st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=40)),
    st.binary(max_size=300),
)
def test_fragments_around_the_packed_fields_are_the_encoded_body(
    type_name: str | None, seq: int, t_wall: int, t_mono: int, cip_seq: int, gap: int,
    value: Any, raw: bytes,
) -> None:
    # The layout a compiled encoder writes (workers/_fastpath.c): the fragments, and each
    # variable field as msgpack packs it, give the bytes of encode.
    counter = wire.SeqCounter()
    counter.table[topic_for_sample("plc1", "Tag %1")] = seq
    stream = wire.SampleStream("w1", "plc1", "Tag %1", type_name, counter)
    f = stream.fragments()

    def p(x: object) -> bytes:
        packed: bytes = msgpack.packb(x, use_bin_type=True)
        return packed

    joined = (f[0] + p(seq) + f[1] + p(t_wall) + f[2] + p(t_mono) + f[3] + p(cip_seq) + f[4]
              + p(gap) + f[5] + p(value) + f[6] + p(raw) + f[7])
    assert joined == stream.encode(t_wall, t_mono, cip_seq, gap, value, raw)
    assert counter.table[stream.topic] == (seq + 1) % 2**64


# --------------------------------------------------------------------------- schema tables


def _doc_tables_script() -> ModuleType:

    path = Path(__file__).resolve().parents[2] / "scripts" / "doc_tables.py"
    spec = importlib.util.spec_from_file_location("doc_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_tables_are_generated_from_the_schema() -> None:
    """docs/wire-format.md's key tables are what ``wire.schema_markdown`` renders (regenerate
    them with scripts/doc_tables.py)."""
    doc_tables = _doc_tables_script()
    doc = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
    text = doc.read_text(encoding="utf-8")
    assert doc_tables.blocks_in(text) == ["wire sample", "wire event", "wire stats"]
    new, stale = doc_tables.regenerate(text)
    assert stale == [], f"run scripts/doc_tables.py: {stale}"
    assert new == text


def test_schema_tables_name_every_field_once() -> None:
    for cls in (Sample, Event, Stats):
        attrs = [k.attr for k in cls.KEYS]
        keys = [k.key for k in cls.KEYS]
        assert sorted(attrs) == sorted(f.name for f in dataclasses.fields(cls))
        assert len(set(keys)) == len(keys)


def test_sample_stream_key_order_is_the_schema_order() -> None:
    body = wire.SampleStream("w1", "plc1", "Count", "DINT").encode(1, 2, 3, 4, 5, b"", 6)
    assert list(msgpack.unpackb(body, raw=False)) == [k.key for k in wire.SAMPLE_KEYS]
