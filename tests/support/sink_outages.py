"""The outages a network sink with a spool must bridge, told once for every such sink
(tests/integration/test_sink_outages.py runs each for each kind): its server killed under live
data, the sink itself killed while it sends its spool, a stop while the server is down. Each
runs a real sink process fed by a real publisher against a throw-away server of the test's own,
and checks that every tag's bus ``sq`` numbers were stored exactly once, in order.

A ``Destination`` says how a sink kind is started and read back; ``Nats`` and ``Postgres``
serve the other tests of those sinks too (tests/integration/test_nats_sink.py, ...):

    dest = Postgres(server, tmp_path / "sink")    # server: a started PostgresServer, DB made
    proc = dest.start_sink(publisher)             # a SinkProcess subscribed to the bus
    wait_for(lambda: dest.stored() == 20, "all stored")
"""

from __future__ import annotations

import json
import re
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic

from pyconpro.sinks.nats import name_of_token
from pyconpro.sinks.spool import spool_depth

from tests.sinks.bus_testkit import SinkProcess, TestPublisher, nats_name
from tests.support.nats import NatsServer, read_stream, stream_count
from tests.support.plant import Plant, assert_outage_bridged, publish_steadily, summary
from tests.support.postgres import PostgresServer
from tests.support.servers import S
from tests.support.wait import wait_for

TOPICS = (b"sample/", b"event/", b"stats/")
DB = "plant"  # the database of a Postgres destination


class Destination(ABC, Generic[S]):
    """A sink of kind ``kind`` writing to ``server``, its directory ``out`` (its log, its spool
    ``spool/<kind>.spool``)."""

    kind: ClassVar[str]

    def __init__(self, server: S, out: Path) -> None:
        self.server = server
        self.out = out

    @abstractmethod
    def target(self) -> str:
        """Where the sink writes (``SinkProcess``'s ``conninfo``)."""

    @abstractmethod
    def stored(self) -> int:
        """Samples stored, 0 while the server is down or has nothing yet."""

    @abstractmethod
    def stored_seqs(self) -> dict[str, list[int]]:
        """Each tag's stored ``sq`` numbers, in the order stored."""

    def assert_each_once_in_order(self, plant: Plant) -> None:
        """Every tag's samples, in the order stored, are its ``sq`` numbers from 0 up to the
        last one ``plant`` published: none missing, none twice, nothing else."""
        got = self.stored_seqs()
        per_tag = plant.next_seqs()
        for tag in plant.tags:
            assert got.get(tag) == list(range(per_tag[tag])), tag
        assert sum(map(len, got.values())) == plant.sent

    def start_sink(self, pub: TestPublisher, *extra: str) -> SinkProcess:
        proc = SinkProcess(self.kind, pub.endpoint, self.out,
                           ["--flush-interval", "0.2", "--rcvhwm", "1000000", *extra],
                           self.target())  # fmt: skip
        pub.wait_subscribed(TOPICS)
        return proc

    def spooling_sink(self, pub: TestPublisher, *extra: str) -> SinkProcess:
        """A sink started while its server is down: whatever it gets goes to its spool."""
        self.server.kill()
        return self.start_sink(pub, *extra)

    def spooled(self) -> int:
        return spool_depth(self.out / "spool" / f"{self.kind}.spool")

    def replay_note(self, log: str) -> str:
        """What the log of a sink that sent a spool again says about it, for the figures."""
        return ""


class Nats(Destination[NatsServer]):
    """The sink's stream is named after its directory (``nats_name``)."""

    kind = "nats"

    def target(self) -> str:
        return self.server.url

    def stored(self) -> int:
        """Messages in the sink's stream, 0 while the server is down or the stream is
        missing."""
        return stream_count(self.server.url, nats_name(self.out))

    def stored_seqs(self) -> dict[str, list[int]]:
        """In stream order; every message id is different."""
        name = nats_name(self.out)
        msgs = read_stream(self.server.url, name, f"{name}.sample.>")
        assert len({m.msg_id for m in msgs}) == len(msgs)
        got: dict[str, list[int]] = {}
        for m in msgs:
            tag = name_of_token(m.subject.split(".")[3])
            got.setdefault(tag, []).append(json.loads(m.data)["seq"])
        return got

    def replay_note(self, log: str) -> str:
        dup = re.search(r"(\d+) of \d+ message\(s\) were in the stream already", log)
        return f"sent again and recognised by their Nats-Msg-Id: {dup.group(1) if dup else 0}"


class Postgres(Destination[PostgresServer]):
    """The sink writes to database ``plant``."""

    kind = "postgres"

    def target(self) -> str:
        return self.server.conninfo(DB)

    def stored(self) -> int:
        """Samples in the database, 0 while it is down or has no table yet."""
        import psycopg

        try:
            return int(self.server.query(DB, "SELECT count(*) FROM pyconpro.samples")[0][0])
        except psycopg.Error:
            return 0

    def stored_seqs(self) -> dict[str, list[int]]:
        """By receive time."""
        got: dict[str, list[int]] = {}
        for tag, seq in self.server.query(DB, "SELECT t.tag, s.seq FROM pyconpro.samples s JOIN"
                                              " pyconpro.tags t ON t.id = s.tag_id"
                                              " ORDER BY t.tag, s.time"):  # fmt: skip
            got.setdefault(tag, []).append(seq)
        return got


def server_killed_under_load(dest: Destination[Any], pub: TestPublisher, rate: int) -> None:
    """``rate`` samples/s over 50 tags; the server SIGKILLed 5 s in and started again 30 s
    later (on the same store); 5 s more: every sample published is stored exactly once, in
    order per tag, and what the server missed went through the spool and came back out."""
    plant = Plant(50)
    proc = dest.start_sink(pub)
    restarted_at = 0.0

    def restart() -> None:
        nonlocal restarted_at
        dest.server.start()
        restarted_at = time.monotonic()

    at = publish_steadily(pub, plant, rate, 40.0, {5.0: dest.server.kill, 35.0: restart})
    wait_for(lambda: dest.stored() == plant.sent, f"{plant.sent} samples stored", timeout=120)
    drained_s = time.monotonic() - restarted_at
    pub.close()
    assert proc.terminate() == 0, proc.stderr
    dest.assert_each_once_in_order(plant)
    counts = assert_outage_bridged(proc.stderr, 30 * rate * 0.9)
    print(f"\n{plant.sent} samples, {plant.sent - at[5.0]} while the server was down or back;"
          f" all stored {drained_s:.1f} s after the restart; spooled"
          f" {counts['spooled']}")  # fmt: skip


def sink_killed_while_sending_its_spool(dest: Destination[Any], pub: TestPublisher,
                                        n: int) -> None:  # fmt: skip
    """``n`` samples over 20 tags spooled while the server is down; the server back, the sink
    SIGKILLed as soon as the first of them are stored (between the server's acknowledgement
    and the spool's delete of what it acknowledged); a new sink stores each sample once."""
    plant = Plant(20)
    proc = dest.spooling_sink(pub)
    plant.publish(pub, n)
    wait_for(lambda: dest.spooled() == n, f"{n} samples in the spool", timeout=120)
    dest.server.start()
    wait_for(lambda: dest.stored() > 0, "the replay to start", timeout=60, interval=0.005)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(30)
    at_kill = dest.stored()
    assert 0 < at_kill < n, "the replay ended before the kill: the test proves nothing"
    first_log = proc.stderr

    proc = dest.start_sink(pub)
    wait_for(lambda: dest.stored() == n and dest.spooled() == 0, f"{n} samples stored",
             timeout=120)  # fmt: skip
    pub.close()
    assert proc.terminate() == 0, proc.stderr
    dest.assert_each_once_in_order(plant)
    assert summary(proc.stderr)["spool_depth"] == 0
    assert "from before: sending them first" in proc.stderr, first_log[-2000:]
    note = dest.replay_note(proc.stderr)
    print(f"\n{at_kill} of {n} stored at the kill{'; ' + note if note else ''}")


def stop_with_the_server_down_keeps_the_spool(dest: Destination[Any], pub: TestPublisher) -> None:
    """A sink stopped (gracefully) while its server is down writes what it holds to its
    spool; the next one, with the server back, stores it all."""
    plant = Plant(5)
    proc = dest.spooling_sink(pub)
    plant.publish(pub, 1000)
    wait_for(lambda: "cannot reach the server" in proc.stderr, "the sink to try")
    rc = proc.terminate()  # graceful: what is in memory goes to the spool
    assert rc == 0, proc.stderr
    assert "stopping with 1000 record(s) in the spool" in proc.stderr
    assert dest.spooled() == 1000

    dest.server.start()
    proc = dest.start_sink(pub)
    wait_for(lambda: dest.stored() == 1000, "the spooled samples to be stored")
    pub.close()
    assert proc.terminate() == 0, proc.stderr
    dest.assert_each_once_in_order(plant)
    assert dest.spooled() == 0
