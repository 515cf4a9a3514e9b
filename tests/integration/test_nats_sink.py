"""The NATS JetStream sink and its spool against a real nats-server that the tests kill, stop
and restart (same port, same store directory): a real sink process fed by a real publisher,
the stream read back by a JetStream consumer and every tag's bus ``sq`` numbers counted (each
exactly once, in order)."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from pyconpro.acquisition.wire import Event, EventKind, Sample
from pyconpro.sinks.nats import NatsSink, msg_id, name_of_token
from pyconpro.sinks.spool import spool_depth

from tests.sinks.bus_testkit import (
    PROCESS_TIMEOUT_S,
    REPO,
    SinkProcess,
    TestPublisher,
    nats_name,
)
from tests.support.nats import NatsServer, read_stream, require_nats, stream_count
from tests.support.plant import Plant, assert_outage_bridged, publish_steadily, summary
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

TOPICS = (b"sample/", b"event/", b"stats/")


@pytest.fixture
def server() -> Iterator[NatsServer]:
    """A server of this test's own (it is killed and restarted)."""
    srv = NatsServer(require_nats())
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def start_sink(pub: TestPublisher, srv: NatsServer, out: Path, *extra: str) -> SinkProcess:
    proc = SinkProcess("nats", pub.endpoint, out,
                       ["--flush-interval", "0.2", "--rcvhwm", "1000000", *extra], srv.url)
    pub.wait_subscribed(TOPICS)
    return proc


def spooling_sink(pub: TestPublisher, srv: NatsServer, out: Path) -> SinkProcess:
    """A sink started while its server is down: whatever it gets goes to its spool."""
    srv.kill()
    return start_sink(pub, srv, out)


def stored(srv: NatsServer, out: Path) -> int:
    """Messages in the sink's stream, 0 while the server is down or the stream is missing."""
    return stream_count(srv.url, nats_name(out))


def spooled(out: Path) -> int:
    return spool_depth(out / "spool" / "nats.spool")


def assert_each_once_in_order(srv: NatsServer, out: Path, plant: Plant) -> None:
    """In stream order, every tag's samples are its ``sq`` numbers from 0 on, none missing,
    none twice, up to the last one published; and every message id is different."""
    name = nats_name(out)
    msgs = read_stream(srv.url, name, f"{name}.sample.>")
    got: dict[str, list[int]] = {}
    for m in msgs:
        tag = name_of_token(m.subject.split(".")[3])
        got.setdefault(tag, []).append(json.loads(m.data)["seq"])
    per_tag = plant.next_seqs()
    for tag in plant.tags:
        assert got.get(tag) == list(range(per_tag[tag])), tag
    assert len({m.msg_id for m in msgs}) == len(msgs) == plant.sent


@pytest.mark.slow
def test_server_killed_for_30_s_under_load_loses_nothing_and_duplicates_nothing(
    server: NatsServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    """3 000 samples/s over 50 tags; the server SIGKILLed 5 s in and started again 30 s later
    on the same store; 5 s more: every sample published is in the stream exactly once, in
    order per tag."""
    plant = Plant(50)
    rate = 3000
    out = tmp_path / "sink"
    proc = start_sink(publisher, server, out)
    restarted_at = 0.0

    def restart() -> None:
        nonlocal restarted_at
        server.start()
        restarted_at = time.monotonic()

    at = publish_steadily(publisher, plant, rate, 40.0, {5.0: server.kill, 35.0: restart})
    wait_for(lambda: stored(server, out) == plant.sent, f"{plant.sent} messages stored",
             timeout=120)  # fmt: skip
    drained_s = time.monotonic() - restarted_at
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert_each_once_in_order(server, out, plant)
    # What the server missed went through the spool, and came back out of it.
    counts = assert_outage_bridged(proc.stderr, 30 * rate * 0.9)
    print(f"\n{plant.sent} samples, {plant.sent - at[5.0]} while the server was down or back;"
          f" all in the stream {drained_s:.1f} s after the restart; spooled"
          f" {counts['spooled']}")  # fmt: skip


@pytest.mark.slow
def test_sink_killed_while_sending_its_spool_stores_each_sample_once(
    server: NatsServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(20)
    out = tmp_path / "sink"
    proc = spooling_sink(publisher, server, out)
    n = 100_000
    plant.publish(publisher, n)
    wait_for(lambda: spooled(out) == n, f"{n} samples in the spool", timeout=120)
    server.start()
    # SIGKILL as soon as the first batches are in: mid-replay, between any acknowledgement
    # and the spool's delete of what was acknowledged.
    wait_for(lambda: stored(server, out) > 0, "the replay to start", timeout=60, interval=0.005)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(30)
    at_kill = stored(server, out)
    assert 0 < at_kill < n, "the replay ended before the kill: the test proves nothing"
    first_log = proc.stderr

    proc = start_sink(publisher, server, out)
    wait_for(lambda: stored(server, out) == n and spooled(out) == 0, f"{n} messages stored",
             timeout=120)  # fmt: skip
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert_each_once_in_order(server, out, plant)
    assert summary(proc.stderr)["spool_depth"] == 0
    assert "from before: sending them first" in proc.stderr, first_log[-2000:]
    dup = re.search(r"(\d+) of \d+ message\(s\) were in the stream already", proc.stderr)
    print(f"\n{at_kill} of {n} stored at the kill; sent again and recognised by their"
          f" Nats-Msg-Id: {dup.group(1) if dup else 0}")  # fmt: skip


def test_a_stop_with_the_server_down_keeps_the_spool_for_the_next_start(
    server: NatsServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(5)
    out = tmp_path / "sink"
    proc = spooling_sink(publisher, server, out)
    plant.publish(publisher, 1000)
    wait_for(lambda: "cannot reach the server" in proc.stderr, "the sink to try")
    rc = proc.terminate()  # graceful: what is in memory goes to the spool
    assert rc == 0, proc.stderr
    assert "stopping with 1000 record(s) in the spool" in proc.stderr
    assert spooled(out) == 1000

    server.start()
    proc = start_sink(publisher, server, out)
    wait_for(lambda: stored(server, out) == 1000, "the spooled samples to be stored")
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert_each_once_in_order(server, out, plant)
    assert spooled(out) == 0


def _odd_samples() -> list[Sample]:
    names = [("line/2", "Motor Speed"), ("plc1", "Program:Main.Arr[3]"), ("é", "a>b*c")]
    return [Sample(seq=i, publisher="w1", plc=names[i % 3][0], tag=names[i % 3][1],
                   t_wall_ns=1_700_000_000_000_000_000 + i, t_mono_ns=i, cip_seq=i, gap=0,
                   value=[math.nan, 1.5, -math.inf][i % 3], raw=bytes([i, 0xFF]),
                   type_name="REAL")
            for i in range(9)]  # fmt: skip


def test_a_batch_sent_twice_is_stored_once_and_subjects_map_back_to_names(
    server: NatsServer,
) -> None:
    """In process: the same records flushed twice (as after a crash between the
    acknowledgement and the spool's delete) are stored once, the server says the second
    copies are duplicates; the stream the sink created has the documented duplicate window;
    MessagePack bodies carry the values as decoded; every subject names its PLC and tag."""
    samples = _odd_samples()
    event = Event(seq=0, publisher="w1", plc="plc1", tag="", t_wall_ns=1, t_mono_ns=1,
                  kind=EventKind.ERROR, message="session lost")  # fmt: skip
    sink = NatsSink(server.url, stream="ODD", subject_prefix="site1.odd", payload="msgpack")
    try:
        sink.open()
        for _ in range(2):
            sink.write_samples(samples)
            sink.write_events([event])
            sink.flush()
    finally:
        sink.close()
    assert (sink.published, sink.duplicates) == (10, 10)
    msgs = read_stream(server.url, "ODD")
    assert [m.msg_id for m in msgs] == [*map(msg_id, samples), msg_id(event)]
    for m, s in zip(msgs, samples, strict=False):
        prefix1, prefix2, kind, plc, tag = m.subject.split(".")
        assert (prefix1, prefix2, kind, name_of_token(plc), name_of_token(tag)) == (
            "site1", "odd", "sample", s.plc, s.tag)
        body = msgpack.unpackb(m.data)
        assert (body["raw"], body["seq"], body["tag"]) == (s.raw, s.seq, s.tag)
        assert repr(body["value"]) == repr(s.value)  # nan, 1.5, -inf as floats
    assert msgs[-1].subject == "site1.odd.event.plc1.~"
    window = _stream_window(server.url, "ODD")
    assert window == 120.0


def _stream_window(url: str, stream: str) -> float:
    import asyncio

    from tests.support.nats import client

    async def ask() -> float:
        nc = await client(url, 5)
        try:
            info = await nc.jetstream().stream_info(stream)
            return float(info.config.duplicate_window or 0)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_token_login_and_a_refused_one(publisher: TestPublisher, tmp_path: Path) -> None:
    """A server that wants a token: the sink with token_file stores; one without it says
    the login was refused and keeps its records in the spool."""
    srv = NatsServer(require_nats(), token="s3cret-token")
    try:
        srv.start()
        token = tmp_path / "token"
        token.write_text("s3cret-token\n")
        good = SinkProcess("nats", publisher.endpoint, tmp_path / "good", ["--flush-interval",
                           "0.1", "--token-file", str(token)], srv.url)  # fmt: skip
        publisher.wait_subscribed(TOPICS)
        Plant(3).publish(publisher, 30)
        publisher.close()
        assert good.terminate() == 0, good.stderr
        with TestPublisher() as other:  # a second publisher: XPUB shows a topic's first subscriber
            bad = SinkProcess("nats", other.endpoint, tmp_path / "bad", ["--flush-interval",
                              "0.1"], srv.url)  # fmt: skip
            other.wait_subscribed(TOPICS)
            Plant(3).publish(other, 30)
            wait_for(lambda: "login refused" in bad.stderr, "the refused login to be logged")
            wait_for(lambda: spooled(tmp_path / "bad") == 30, "the refused sink to spool")
        assert bad.terminate() == 0, bad.stderr
        assert srv.count(nats_name(tmp_path / "good")) == 30, good.stderr
    finally:
        srv.close()


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--user", "u", "--token-file", "/nonexistent"], "user and token_file are set"),
        (["--password-file", "/x"], "password_file is set without user"),
        (["--tls-cert", "/x.pem"], "tls_cert and tls_key go together"),
        (["--tls-ca", "/nonexistent/ca.pem"], "cannot load the TLS files"),
    ],
)
def test_bad_options_exit_2_with_the_cause_and_the_fix(flags: list[str], reason: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pyconpro.sinks.cli", "nats", "--connect", "tcp://127.0.0.1:1",
         *flags],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert reason in r.stderr and "error: nats sink:" in r.stderr
