"""The NATS JetStream sink against a real nats-server: its duplicate window and subjects, its
logins, its option errors. The outages it shares with the other network sinks (server killed,
sink killed mid-replay, stop while the server is down) are in test_sink_outages.py."""

from __future__ import annotations

import math
import subprocess
import sys
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
from tests.support.nats import NatsServer, read_stream, require_nats
from tests.support.plant import Plant
from tests.support.sink_outages import TOPICS
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def server() -> Iterator[NatsServer]:
    """A server of this test's own."""
    srv = NatsServer(require_nats())
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


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
            bad_spool = tmp_path / "bad" / "spool" / "nats.spool"
            wait_for(lambda: spool_depth(bad_spool) == 30, "the refused sink to spool")
        assert bad.terminate() == 0, bad.stderr
        assert srv.count(nats_name(tmp_path / "good")) == 30, good.stderr
    finally:
        srv.close()


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        # options that do not go together: the section's own check, as in the config file
        (["--user", "u", "--token-file", "/nonexistent"],
         "error: pyconpro sink: token_file: user and token_file are set"),
        (["--password-file", "/x"],
         "error: pyconpro sink: password_file: password_file is set without user; set user"),
        (["--tls-cert", "/x.pem"], "error: pyconpro sink: tls_cert: tls_cert is set without"
         " tls_key; tls_cert and tls_key go together"),
        # what only this host can tell: at the sink's start
        (["--tls-ca", "/nonexistent/ca.pem"], "error: nats sink: cannot load the TLS files"),
    ],
)
def test_bad_options_exit_2_with_the_cause_and_the_fix(flags: list[str], reason: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pyconpro.sinks.cli", "nats", "--connect", "tcp://127.0.0.1:1",
         *flags],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert reason in r.stderr
