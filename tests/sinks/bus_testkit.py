"""Test helpers for sinks: a real XPUB publisher that knows when a subscriber is listening,
a sink child process, readers that turn each sink kind's output back into comparable rows,
and an in-memory Sink fake."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest
import zmq
from pyconpro.acquisition.wire import Event, Message, Sample, Stats, unescape_name
from pyconpro.sinks.base import BusGap, Sink
from pyconpro.sinks.records import iso_time, to_json
from pyconpro.workers.process import spawn

# An address of our own inside 127/8 so concurrent test runs of other suites do not meet ours;
# ports are always chosen by the kernel.
BUS_HOST = "127.83.61.7"
# Generous: a sink that restarts onto a large spool subscribes only after opening it, and a busy
# machine may take tens of seconds for that; a test fails only when the deadline passes.
RECV_TIMEOUT_MS = 60_000
PROCESS_TIMEOUT_S = 30
REPO = Path(__file__).resolve().parents[2]


class TestPublisher:
    """An XPUB socket on ``tcp://BUS_HOST:<kernel port>``.

    XPUB hands us each subscription as it reaches the publisher, which is the slow-joiner fix:
    ``wait_subscribed`` returns once every expected prefix is live, and from then on nothing
    published is lost to a subscriber that has not finished connecting.
    """

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 10_000)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # test traffic is bounded; never drop it here
        self.sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        self.sock.bind(f"tcp://{BUS_HOST}:*")
        self.endpoint: str = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._closed = False

    def wait_subscribed(self, prefixes: Iterable[bytes]) -> None:
        missing = set(prefixes)
        while missing:
            try:
                frame = self.sock.recv()
            except zmq.Again:
                raise AssertionError(
                    f"no subscription for {sorted(missing)} within {RECV_TIMEOUT_MS} ms"
                ) from None
            if frame[:1] == b"\x01":
                missing.discard(frame[1:])

    def send(self, msg: Message) -> None:
        self.sock.send_multipart(list(msg.encode()))

    def send_frames(self, frames: Sequence[bytes]) -> None:
        self.sock.send_multipart(list(frames))

    def close(self) -> None:
        """Close and wait (bounded by LINGER) until everything sent has left this process."""
        if not self._closed:
            self._closed = True
            self.sock.close()
            self.ctx.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def publisher() -> Iterator[TestPublisher]:
    """A ZeroMQ publisher on loopback that the sink processes under test connect to (a fixture
    of every test: tests/conftest.py)."""
    pub = TestPublisher()
    try:
        yield pub
    finally:
        pub.close()


class SinkProcess:
    """``python -m pyconpro.sinks.cli KIND --connect ... <options>`` as a child process."""

    def __init__(self, kind: str, endpoint: str, out: Path, extra: Sequence[str] = (),
                 conninfo: str = "") -> None:  # fmt: skip
        self.kind = kind
        self.out = out
        # the database of a postgres sink, the server of a nats sink, host:port/root of mqtt
        self.conninfo = conninfo
        self.reader: Any = None  # what reads the output back, when it is not a file (mqtt)
        out.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "pyconpro.sinks.cli", kind, "--connect", endpoint, *extra]
        args += kind_options(kind, out, conninfo)
        self.stdout_path = out / "stdout.txt"
        self.stderr_path = out / "stderr.txt"
        for path in (self.stdout_path, self.stderr_path):
            path.write_bytes(b"")  # fresh files (spawn appends)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = spawn(args, stdout=self.stdout_path, stderr=self.stderr_path, cwd=REPO,
                          env=env)

    def terminate(self) -> int:
        """SIGTERM, then wait; a sink that does not stop in time is killed and fails the test."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.kind} sink ignored SIGTERM for {PROCESS_TIMEOUT_S}s") from None

    def kill(self) -> None:
        self.proc.kill()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")


def kind_options(kind: str, out: Path, conninfo: str = "") -> list[str]:
    if kind == "sqlite":
        return ["--db", str(out / "bus.db")]
    if kind == "postgres":
        return ["--conninfo", conninfo, "--spool-dir", str(out / "spool")]
    if kind == "mqtt" and not conninfo:
        return []  # the test gives every flag
    if kind == "mqtt":  # JSON, every field of every record, under the test's topic root
        hostport, root = conninfo.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        return ["--host", host, "--port", port, "--payload", "json", "--spool-dir",
                str(out / "spool"), "--sample-topic", f"{root}/{{plc}}/{{tag}}", "--event-topic",
                f"{root}/{{plc}}/_events", "--gap-topic", f"{root}/_gaps"]  # fmt: skip
    if kind == "nats":
        name = nats_name(out)
        return ["--servers", conninfo, "--stream", name, "--subject-prefix", name,
                "--spool-dir", str(out / "spool")]
    if kind in ("jsonl", "csv"):
        return ["--dir", str(out / "files")]
    if kind == "stdout":
        return ["--raw", "--utc"]  # UTC "Z" times compare as text with the other kinds
    raise AssertionError(kind)


def nats_name(out: Path) -> str:
    """The stream name and subject prefix of a nats sink writing for ``out`` (a test's own)."""
    import hashlib

    return "T" + hashlib.blake2b(str(out).encode(), digest_size=6).hexdigest()


# --------------------------------------------------------------------------- comparable rows
# Each sink kind keeps different detail; these views hold what every kind must keep.

SampleRow = tuple[str, str, str, str, int, int, str, str, int]
EventRow = tuple[str, str, str, str, str | None, str | None, int | None, int | None, str, int]
GapRow = tuple[str, str, int, int, int, bool]


def sample_row(s: Sample) -> SampleRow:
    return (
        iso_time(s.t_wall_ns), s.plc, s.tag, _canon(to_json(s.value)), s.cip_seq, s.gap,
        s.raw.hex(), s.publisher, s.seq,
    )  # fmt: skip


def event_row(e: Event) -> EventRow:
    return (
        iso_time(e.t_wall_ns), e.plc, e.tag, str(e.kind), e.state_from, e.state_to,
        e.cip_general, e.cip_extended, e.publisher, e.seq,
    )  # fmt: skip


def gap_row(g: BusGap) -> GapRow:
    return (g.publisher, g.topic, g.expected_seq, g.received_seq, g.missed, g.restart)


def _canon(value_json: str) -> str:
    return json.dumps(json.loads(value_json), sort_keys=True)


@dataclass
class Output:
    samples: list[SampleRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    gaps: list[GapRow] = field(default_factory=list)


def read_output(proc: SinkProcess) -> Output:
    return _READERS[proc.kind](proc)


def _read_sqlite(proc: SinkProcess) -> Output:
    db = sqlite3.connect(proc.out / "bus.db")
    try:
        o = Output()
        for r in db.execute(
            "SELECT t_wall_ns, plc, tag, value_json, cip_seq, gap, raw, publisher, seq"
            " FROM samples ORDER BY id"
        ):
            o.samples.append((iso_time(r[0]), r[1], r[2], _canon(r[3]), r[4], r[5], r[6].hex(),
                              r[7], r[8]))  # fmt: skip
        for r in db.execute(
            "SELECT t_wall_ns, plc, tag, kind, state_from, state_to, cip_general, cip_extended,"
            " publisher, seq FROM events ORDER BY id"
        ):
            o.events.append((iso_time(r[0]), *r[1:]))
        for r in db.execute(
            "SELECT publisher, topic, expected_seq, received_seq, missed, restart FROM gaps"
            " ORDER BY id"
        ):
            o.gaps.append((r[0], r[1], r[2], r[3], r[4], bool(r[5])))
        return o
    finally:
        db.close()


def _stream_files(proc: SinkProcess, stream: str, suffix: str) -> list[Path]:
    return sorted((proc.out / "files").glob(f"pyconpro-{stream}-*{suffix}"))


def _records(proc: SinkProcess, stream: str) -> list[dict[str, str]]:
    """Records of one stream as dicts of text (CSV) or JSON values (JSONL)."""
    rows: list[dict[str, Any]] = []
    if proc.kind == "jsonl":
        for p in _stream_files(proc, stream, ".jsonl"):
            rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
    else:
        for p in _stream_files(proc, stream, ".csv"):
            with open(p, newline="", encoding="utf-8") as f:
                rows += list(csv.DictReader(f))
    return rows


def _opt_int(x: object) -> int | None:
    return None if x in (None, "") else int(x)  # type: ignore[call-overload]


def _opt_str(x: object, csv_mode: bool) -> str | None:
    # CSV cannot tell None from "": the conformance views only use it where both mean "none".
    return None if x is None or (csv_mode and x == "") else str(x)


def _read_files(proc: SinkProcess) -> Output:
    csv_mode = proc.kind == "csv"
    o = Output()
    for r in _records(proc, "samples"):
        value = r["value"] if csv_mode else json.dumps(r["value"])
        o.samples.append((r["time"], r["plc"], r["tag"], _canon(value), int(r["cip_seq"]),
                          int(r["gap"]), r["raw"], r["publisher"], int(r["seq"])))  # fmt: skip
    for r in _records(proc, "events"):
        o.events.append((r["time"], r["plc"], r["tag"], r["kind"],
                         _opt_str(r["state_from"], csv_mode), _opt_str(r["state_to"], csv_mode),
                         _opt_int(r["cip_general"]), _opt_int(r["cip_extended"]),
                         r["publisher"], int(r["seq"])))  # fmt: skip
    for r in _records(proc, "gaps"):
        restart = r["restart"] in (True, "1")
        o.gaps.append((r["publisher"], r["topic"], int(r["expected_seq"]),
                       int(r["received_seq"]), int(r["missed"]), restart))  # fmt: skip
    return o


_SAMPLE_LINE = re.compile(
    r"^(?P<time>\S+) sample (?P<plc>[^/\s]+)/(?P<tag>[^/\s]+)(?: \S+)? = (?P<value>.*)"
    r"  \[cs=(?P<cs>\d+) gap=(?P<gap>\d+) pub=(?P<pub>\S+) sq=(?P<sq>\d+)(?: st=(?P<st>\S+))?"
    r" raw=(?P<raw>[0-9a-f]*)\]$"
)
_EVENT_LINE = re.compile(
    r"^(?P<time>\S+) EVENT (?P<plc>[^/\s]+)/(?P<tag>[^/\s]*) (?P<kind>\S+)"
    r"(?: (?P<sf>[^\s>]+)->(?P<st>\S+))?"
    r"(?: status=0x(?P<gs>[0-9A-F]{2})(?:/0x(?P<es>[0-9A-F]{4}))?)?"
    r".*  \[pub=(?P<pub>\S+) sq=(?P<sq>\d+)\]$"
)
_LOSS_LINE = re.compile(
    r"^\S+ BUS-LOSS missed=(?P<missed>\d+) from (?P<pub>\S+) on (?P<topic>\S+)"
    r" \(sq (?P<got>\d+), expected (?P<exp>\d+)\)$"
)
_RESTART_LINE = re.compile(
    r"^\S+ BUS-RESTART (?P<pub>\S+) on (?P<topic>\S+) restarted at sq (?P<got>\d+)"
    r" \(was at (?P<last>\d+)\); missed=(?P<missed>\d+)$"
)


def _read_stdout(proc: SinkProcess) -> Output:
    o = Output()
    for line in proc.stdout.splitlines():
        if m := _SAMPLE_LINE.match(line):
            o.samples.append((m["time"], unescape_name(m["plc"]), unescape_name(m["tag"]),
                              _canon(m["value"]), int(m["cs"]), int(m["gap"]), m["raw"],
                              m["pub"], int(m["sq"])))  # fmt: skip
        elif m := _EVENT_LINE.match(line):
            sf = None if m["sf"] in (None, "?") else m["sf"]
            st = None if m["st"] in (None, "?") else m["st"]
            o.events.append((m["time"], unescape_name(m["plc"]), unescape_name(m["tag"]),
                             m["kind"], sf, st, _opt_int(m["gs"] and int(m["gs"], 16)),
                             _opt_int(m["es"] and int(m["es"], 16)), m["pub"], int(m["sq"])))
        elif m := _LOSS_LINE.match(line):
            o.gaps.append((m["pub"], m["topic"], int(m["exp"]), int(m["got"]),
                           int(m["missed"]), False))  # fmt: skip
        elif m := _RESTART_LINE.match(line):
            o.gaps.append((m["pub"], m["topic"], int(m["last"]) + 1, int(m["got"]),
                           int(m["missed"]), True))  # fmt: skip
        elif " stats " not in line:
            raise AssertionError(f"stdout sink printed a line no reader understands: {line!r}")
    return o


def _read_postgres(proc: SinkProcess) -> Output:
    import psycopg

    from tests.support.postgres import json_value

    o = Output()
    with psycopg.connect(proc.conninfo) as db:
        for r in db.execute(
            "SELECT s.t_wall_ns, t.plc, t.tag, s.value_int, s.value_real, s.value_bool,"
            " s.value_text, s.value_json, s.cip_seq, s.gap, s.raw, s.publisher, s.seq"
            " FROM pyconpro.samples s JOIN pyconpro.tags t ON t.id = s.tag_id ORDER BY s.time"
        ):
            o.samples.append((iso_time(r[0]), r[1], r[2], _canon(to_json(json_value(*r[3:8]))),
                              r[8], r[9], bytes(r[10]).hex(), r[11], r[12]))  # fmt: skip
        for r in db.execute(
            "SELECT t_wall_ns, plc, tag, kind, state_from, state_to, cip_general, cip_extended,"
            " publisher, seq FROM pyconpro.events ORDER BY time"
        ):
            o.events.append((iso_time(r[0]), *r[1:]))
        for r in db.execute(
            "SELECT publisher, topic, expected_seq, received_seq, missed, restart"
            " FROM pyconpro.gaps WHERE kind = 'bus' ORDER BY time"
        ):
            o.gaps.append((r[0], r[1], r[2], r[3], r[4], r[5]))
    return o


def _read_mqtt(proc: SinkProcess) -> Output:
    """What the broker delivered to the test's subscriber (JSON payloads), up to a barrier."""
    o = Output()
    for m in proc.reader.barrier():
        r = json.loads(m.payload)
        if m.topic.endswith("/_events"):
            o.events.append((r["time"], r["plc"], r["tag"], r["kind"], r["state_from"],
                             r["state_to"], r["cip_general"], r["cip_extended"],
                             r["publisher"], r["seq"]))  # fmt: skip
        elif m.topic.endswith("/_gaps"):
            if r["cause"] == "bus":
                o.gaps.append((r["publisher"], r["topic"], r["expected_seq"],
                               r["received_seq"], r["missed"], r["restart"]))  # fmt: skip
        else:
            o.samples.append((r["time"], r["plc"], r["tag"], _canon(json.dumps(r["value"])),
                              r["cip_seq"], r["gap"], r["raw"], r["publisher"], r["seq"]))
    return o


def _read_nats(proc: SinkProcess) -> Output:
    """The sink's stream read back by a JetStream consumer; each message's kind from its
    subject (``<prefix>.sample.<plc>.<tag>`` ...), its fields from the JSON payload."""
    from tests.support.nats import read_stream

    o = Output()
    for m in read_stream(proc.conninfo, nats_name(proc.out)):
        kind = m.subject.split(".")[1]
        r = json.loads(m.data)
        if kind == "sample":
            o.samples.append((r["time"], r["plc"], r["tag"], _canon(json.dumps(r["value"])),
                              r["cip_seq"], r["gap"], r["raw"], r["publisher"], r["seq"]))
        elif kind == "event":
            o.events.append((r["time"], r["plc"], r["tag"], r["kind"], r["state_from"],
                             r["state_to"], r["cip_general"], r["cip_extended"],
                             r["publisher"], r["seq"]))  # fmt: skip
        elif kind == "gap" and r["cause"] == "bus":
            o.gaps.append((r["publisher"], r["topic"], r["expected_seq"], r["received_seq"],
                           r["missed"], r["restart"]))  # fmt: skip
    return o


_READERS = {
    "sqlite": _read_sqlite,
    "postgres": _read_postgres,
    "mqtt": _read_mqtt,
    "nats": _read_nats,
    "jsonl": _read_files,
    "csv": _read_files,
    "stdout": _read_stdout,
}


# --------------------------------------------------------------------------- fakes


class MemorySink(Sink):
    """Keeps everything in lists; ``flushed`` holds what a flush made durable."""

    def __init__(self) -> None:
        self.opened = False
        self.closed = False
        self.pending: list[object] = []
        self.flushed: list[object] = []
        self.flush_calls = 0

    def open(self) -> None:
        self.opened = True

    def write_samples(self, samples: list[Sample]) -> None:
        self.pending += samples

    def write_events(self, events: list[Event]) -> None:
        self.pending += events

    def write_gaps(self, gaps: list[BusGap]) -> None:
        self.pending += gaps

    def write_stats(self, stats: list[Stats]) -> None:
        self.pending += stats

    def flush(self) -> None:
        self.flush_calls += 1
        self.flushed += self.pending
        self.pending = []

    def close(self) -> None:
        self.closed = True
