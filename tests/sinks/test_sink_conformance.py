"""One conformance suite for every sink kind: real sink processes fed by a real ZeroMQ
publisher on loopback, stopped with SIGTERM, their output read back and compared."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition.wire import Event, EventKind, Sample, SeqCounter, topic_for_sample
from pyconpro.sinks.base import DEFAULT_TOPICS
from pyconpro.sinks.registry import sink_kinds

from tests.sinks.bus_testkit import (
    BUS_HOST,
    SinkProcess,
    TestPublisher,
    event_row,
    read_output,
    sample_row,
)

pytestmark = pytest.mark.timeout(90)

ALL_KINDS = sorted(sink_kinds())
T0 = 1_700_000_000_000_000_000


@pytest.fixture
def start_sink(tmp_path: Path, publisher: TestPublisher, request: pytest.FixtureRequest
               ) -> Iterator[Callable[..., SinkProcess]]:  # fmt: skip
    started: list[SinkProcess] = []

    def start(kind: str, *extra: str) -> SinkProcess:
        # A network sink writes to a server of its own: a new database on the session's, a
        # topic root of its own on the session's broker (its subscriber reads the output).
        conninfo, reader = "", None
        if kind == "postgres":
            conninfo = str(request.getfixturevalue("postgres_db"))
        elif kind == "nats":
            conninfo = request.getfixturevalue("nats_server").url
        elif kind == "mqtt":
            root, reader = request.getfixturevalue("mqtt_root")
            conninfo = f"{reader.broker_host}:{reader.broker_port}/{root}"
        proc = SinkProcess(kind, publisher.endpoint, tmp_path / kind, extra, conninfo)
        proc.reader = reader
        started.append(proc)
        publisher.wait_subscribed(DEFAULT_TOPICS)
        return proc

    yield start
    for proc in started:
        proc.kill()  # no-op for those the test already stopped


VALUES = [
    42,
    -7,
    2**40,
    1.25,
    math.inf,
    True,
    None,
    "text with spaces and é",
    [1, 2, 3],
    {"Speed": 1.5, "Flags": [True, False], "Name": "x"},
]


def make_samples(n: int, pub: str = "w1") -> list[Sample]:
    """n samples spread over tags whose names need escaping, with varied values."""
    names = [("plc1", "Count"), ("line/2", "Motor Speed"), ("plc1", "Program:Main.Arr[3]")]
    seqs = SeqCounter()
    out = []
    for i in range(n):
        plc, tag = names[i % len(names)]
        out.append(
            Sample(
                seq=seqs.next(topic_for_sample(plc, tag)),
                publisher=pub,
                plc=plc,
                tag=tag,
                t_wall_ns=T0 + i * 1_000_123,
                t_mono_ns=i * 1_000_000,
                cip_seq=(65530 + i) & 0xFFFF,
                gap=i // 50,
                value=VALUES[i % len(VALUES)],
                raw=i.to_bytes(4, "little"),
                type_name="DINT" if i % 2 else None,
            )
        )
    return out


def make_events(pub: str = "w1") -> list[Event]:
    return [
        Event(seq=0, publisher=pub, plc="plc1", tag="Count", t_wall_ns=T0 + 5, t_mono_ns=5,
              kind=EventKind.STATE, state_from="OPENING", state_to="RUNNING"),
        Event(seq=1, publisher=pub, plc="plc1", tag="Count", t_wall_ns=T0 + 6, t_mono_ns=6,
              kind=EventKind.REJECT, state_from="OPENING", state_to="BACKOFF", cip_general=1,
              cip_extended=0x0109, status_text="invalid connection size", message="wants 8"),
        Event(seq=0, publisher=pub, plc="line/2", tag="", t_wall_ns=T0 + 7, t_mono_ns=7,
              kind=EventKind.ERROR, message="session lost"),
    ]  # fmt: skip


def stop(proc: SinkProcess, publisher: TestPublisher) -> None:
    publisher.close()  # returns once every message has left the test process
    rc = proc.terminate()
    assert rc == 0, f"{proc.kind} sink exited {rc}; stderr:\n{proc.stderr}"


def summary(proc: SinkProcess) -> dict[str, int]:
    m = re.search(r"sink stopped: (.*)$", proc.stderr, re.MULTILINE)
    assert m, f"no summary line in stderr:\n{proc.stderr}"
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_delivers_exactly_what_was_published(kind: str, publisher: TestPublisher,
        start_sink: Callable[..., SinkProcess]) -> None:
    proc = start_sink(kind)
    samples = make_samples(120)
    events = make_events()
    for i, s in enumerate(samples):
        publisher.send(s)
        if i % 40 == 0:
            publisher.send(events[i // 40])
    stop(proc, publisher)

    out = read_output(proc)
    assert sorted(out.samples) == sorted(sample_row(s) for s in samples)
    assert sorted(out.events, key=repr) == sorted((event_row(e) for e in events), key=repr)
    assert out.gaps == []
    counts = summary(proc)
    assert (counts["samples"], counts["events"], counts["malformed"]) == (120, 3, 0)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bus_loss_and_publisher_restart_are_recorded(kind: str, publisher: TestPublisher,
        start_sink: Callable[..., SinkProcess]) -> None:
    proc = start_sink(kind)
    base = make_samples(1)[0]
    a = dataclasses.replace(base, tag="A")
    b = dataclasses.replace(base, tag="B")
    sent: list[Sample] = []
    # Topic A: 0..9, then 15..19 (5 lost). Topic B: 0..4, then the publisher restarts: 0..2.
    # Each message is received later than the one before (a restarted publisher's messages
    # have new receive times: a sink may take the same message twice for one, as the
    # PostgreSQL sink does).
    for seq in [*range(10), *range(15, 20)]:
        sent.append(dataclasses.replace(a, seq=seq, t_wall_ns=a.t_wall_ns + 1000 * len(sent)))
    for seq in [*range(5), *range(3)]:
        sent.append(dataclasses.replace(b, seq=seq, t_wall_ns=b.t_wall_ns + 1000 * len(sent)))
    for s in sent:
        publisher.send(s)
    stop(proc, publisher)

    out = read_output(proc)
    assert sorted(out.samples) == sorted(sample_row(s) for s in sent)
    assert sorted(out.gaps) == sorted(
        [
            ("w1", "sample/plc1/A/", 10, 15, 5, False),
            ("w1", "sample/plc1/B/", 5, 0, 0, True),
        ]
    )
    counts = summary(proc)
    assert (counts["gaps"], counts["lost"], counts["restarts"]) == (1, 5, 1)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_malformed_messages_are_counted_and_skipped(kind: str, publisher: TestPublisher,
        start_sink: Callable[..., SinkProcess]) -> None:
    proc = start_sink(kind)
    good = make_samples(6)
    topic, body = good[0].encode()
    junk = [
        [topic, b"\xc1junk"],  # not MessagePack
        [topic],  # one frame
        [topic, body, b"extra"],  # three frames
        [topic, body[:-3]],  # truncated body
        [b"sample/plc1/Elsewhere/", body],  # topic does not match the body
        [b"sample/\xff/x/", body],  # topic not UTF-8
    ]
    for g, j in zip(good, junk, strict=True):
        publisher.send_frames(j)
        publisher.send(g)
    stop(proc, publisher)

    assert sorted(read_output(proc).samples) == sorted(sample_row(s) for s in good)
    counts = summary(proc)
    assert (counts["malformed"], counts["samples"]) == (6, 6)
    assert "skipped malformed message" in proc.stderr


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_report_by_exception_keeps_what_the_rule_says(kind: str, publisher: TestPublisher,
        start_sink: Callable[..., SinkProcess]) -> None:
    """A sine, a text and a counter through ``--deadband 1.5 --max-interval 0.25`` with the
    counter's tags exempted: each sink kind writes exactly the samples the rule keeps, and
    what it left out is neither loss nor gap."""
    proc = start_sink(kind, "--deadband", "1.5", "--max-interval", "0.25",
                      "--by-tag", "plc1/Raw*", "deadband=false")  # fmt: skip
    base = make_samples(1)[0]
    seqs = SeqCounter()
    sent: list[Sample] = []
    for i in range(150):  # every 10 ms: a sine of amplitude 10, a mode, a counter
        for tag, value in (("Sine", 10 * math.sin(2 * math.pi * i / 100)),
                           ("Mode", "RUN" if (i // 40) % 2 == 0 else "STOP"),
                           ("RawCount", 7)):  # fmt: skip
            sent.append(dataclasses.replace(
                base, tag=tag, value=value, seq=seqs.next(topic_for_sample("plc1", tag)),
                t_wall_ns=T0 + i * 10_000_000, t_mono_ns=i * 10_000_000,
            ))  # fmt: skip
    for s in sent:
        publisher.send(s)
    stop(proc, publisher)

    # The rule, applied here per tag: the first sample; then a sample 0.25 s or more after the
    # last kept one, or a number more than 1.5 from it, or a text that differs from it. The
    # counter's tag has no deadband: all of it.
    expected: list[Sample] = []
    last: dict[str, Sample] = {}
    for s in sent:
        ref = last.get(s.tag)
        if ref is None or s.tag == "RawCount" or s.t_mono_ns - ref.t_mono_ns >= 250_000_000 or (
            abs(s.value - ref.value) > 1.5 if s.tag == "Sine" else s.value != ref.value  # type: ignore[operator]
        ):
            expected.append(s)
            last[s.tag] = s
    assert 150 + 20 < len(expected) < 300  # the sine and the mode lost most of theirs
    out = read_output(proc)
    assert sorted(out.samples) == sorted(sample_row(s) for s in expected)
    assert out.gaps == []
    counts = summary(proc)
    assert (counts["samples"], counts["filtered"], counts["gaps"], counts["lost"]) == (
        len(sent), len(sent) - len(expected), 0, 0)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_sigterm_flushes_everything_received(kind: str, publisher: TestPublisher,
        start_sink: Callable[..., SinkProcess]) -> None:
    """With writes held back (hour-long interval, huge batches), only the SIGTERM path can
    produce output: N published -> N written."""
    proc = start_sink(kind, "--flush-interval", "3600", "--batch-size", "1000000")
    samples = make_samples(3000)
    for s in samples:
        publisher.send(s)
    stop(proc, publisher)

    out = read_output(proc)
    assert len(out.samples) == len(samples)
    assert sorted(out.samples) == sorted(sample_row(s) for s in samples)


def test_unusable_output_or_endpoint_exits_2_with_a_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.sinks.bus_testkit import PROCESS_TIMEOUT_S, REPO

    # A database path that is a directory cannot become usable by itself; a missing or
    # read-only directory can (tests/sinks/test_sqlite_disk.py: the sink waits for it).
    cases = [
        (["sqlite", "--connect", f"tcp://{BUS_HOST}:1", "--db", str(tmp_path)],
         "is a directory: `path` names the database file"),
        (["stdout", "--connect", "nonsense://x"], "endpoints look like"),
    ]  # fmt: skip
    for argv, reason in cases:
        r = subprocess.run(
            [sys.executable, "-m", "pyconpro.sinks.cli", *argv],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
        )
        assert r.returncode == 2, r.stderr
        assert reason in r.stderr
        assert "sink stopped" not in r.stderr  # only the error, no counters of nothing
