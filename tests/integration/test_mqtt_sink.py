"""The MQTT sink (JSON payloads) and its spool against a real Mosquitto broker that the tests
kill and restart: a real sink process fed by a real publisher, a subscriber counting every
tag's bus ``sq`` numbers.

MQTT at QoS 1 delivers at least once: a batch the broker took part of before it died is
published again. So the subscriber keeps each sample once by its key (tag, ``t_wall_ns``,
``sq``, all in the payload) and the tests check that, so kept, every sample arrived, in order
per tag, and count the copies. The broker keeps its sessions across the kill (persistence,
saved with SIGUSR1 once the subscriber is in), so what the sink publishes before the subscriber
is back is queued for it, as it would be for any persistent subscriber."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition.wire import topic_for_sample
from pyconpro.sinks.spool import spool_depth

from tests.sinks.bus_testkit import SinkProcess, TestPublisher
from tests.support.mosquitto import MosquittoBroker, Subscriber, require_mosquitto
from tests.support.plant import Plant, publish_steadily
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

TOPICS = (b"sample/", b"event/", b"stats/")
ROOT = "plant"


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A broker of this test's own (it is killed and restarted), keeping its sessions."""
    b = MosquittoBroker(require_mosquitto(), persistence=True)
    try:
        b.start()
        yield b
    finally:
        b.close()


@pytest.fixture
def subscriber(broker: MosquittoBroker) -> Iterator[Subscriber]:
    sub = Subscriber(broker, [f"{ROOT}/#"], persistent=True)
    try:
        broker.save()  # its session survives the broker's kill
        yield sub
    finally:
        sub.close()




def start_sink(pub: TestPublisher, broker: MosquittoBroker, out: Path) -> SinkProcess:
    proc = SinkProcess("mqtt", pub.endpoint, out, [
        "--flush-interval", "0.2", "--rcvhwm", "1000000", "--host", broker.host, "--port",
        str(broker.port), "--payload", "json", "--sample-topic", f"{ROOT}/{{plc}}/{{tag}}",
        "--spool-dir", str(out / "spool"), "--connect-timeout-s", "2",
    ])  # fmt: skip
    pub.wait_subscribed(TOPICS)
    return proc


class Tally:
    """The subscriber's samples, each key once, in arrival order; copies counted."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.seen: set[tuple[str, int, int]] = set()
        self.per_tag: dict[str, list[int]] = {}
        self.copies = 0
        self.historical = 0
        self._read = 0

    def update(self) -> int:
        messages = self.sub.snapshot()
        for m in messages[self._read:]:
            if not m.topic.startswith(f"{ROOT}/plc1/"):
                continue
            r = json.loads(m.payload)
            key = (r["tag"], r["t_wall_ns"], r["seq"])
            if key in self.seen:
                self.copies += 1
                continue
            self.seen.add(key)
            self.per_tag.setdefault(r["tag"], []).append(r["seq"])
            self.historical += r["historical"]
        self._read = len(messages)
        return len(self.seen)

    def assert_each_once_in_order(self, plant: Plant) -> None:
        for tag in plant.tags:
            n = plant.seqs.next(topic_for_sample("plc1", tag))
            assert self.per_tag.get(tag) == list(range(n)), tag


@pytest.mark.slow
def test_broker_killed_under_load_every_sample_arrives_once_by_its_key_in_order(
    broker: MosquittoBroker, subscriber: Subscriber, publisher: TestPublisher, tmp_path: Path
) -> None:
    """3 000 samples/s over 30 tags for 14 s; the broker SIGKILLed 3 s in and restarted 7 s
    later."""
    plant = Plant(30)
    rate = 3000
    proc = start_sink(publisher, broker, tmp_path / "sink")
    restarted_at = 0.0

    def restart() -> None:
        nonlocal restarted_at
        broker.start()
        restarted_at = time.monotonic()

    at = publish_steadily(publisher, plant, rate, 14.0, {3.0: broker.kill, 10.0: restart})
    tally = Tally(subscriber)
    wait_for(lambda: tally.update() == plant.sent, f"{plant.sent} samples", timeout=120)
    drained_s = time.monotonic() - restarted_at
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    tally.assert_each_once_in_order(plant)
    # What was published while the broker was away went through the spool, marked so.
    assert tally.historical >= 7 * rate * 0.8, tally.historical
    assert "cannot connect" in proc.stderr or "connection lost" in proc.stderr
    print(f"\n{plant.sent} samples, {plant.sent - at[3.0]} after the kill; all delivered"
          f" {drained_s:.1f} s after the restart; {tally.historical} historical,"
          f" {tally.copies} copies of a sample delivered twice")  # fmt: skip


@pytest.mark.slow
def test_sink_killed_while_sending_its_spool_loses_nothing(
    broker: MosquittoBroker, subscriber: Subscriber, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(20)
    out = tmp_path / "sink"
    broker.kill()
    proc = start_sink(publisher, broker, out)
    n = 30_000
    plant.publish(publisher, n)
    wait_for(lambda: spool_depth(out / "spool" / "mqtt.spool") == n, f"{n} samples spooled",
             timeout=60)  # fmt: skip
    broker.start()
    tally = Tally(subscriber)
    # SIGKILL as soon as the first samples are through: between a batch's acknowledgement
    # and the spool's delete of it.
    wait_for(lambda: tally.update() > 0, "the replay to start", timeout=60, interval=0.005)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(30)
    left = spool_depth(out / "spool" / "mqtt.spool")
    delivered = tally.update()
    # Some delivered, not all (records still in the spool; those delivered but not yet
    # removed from it are published again by the next start).
    assert delivered < n and left > 0, "the replay ended before the kill: it proves nothing"

    proc = start_sink(publisher, broker, out)
    wait_for(lambda: tally.update() == n, f"{n} samples", timeout=120)
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    tally.assert_each_once_in_order(plant)
    assert tally.historical == n
    assert "from before: sending them first" in proc.stderr
    print(f"\nkilled with {delivered} of {n} delivered, {left} in the spool; {tally.copies}"
          " copies delivered twice")
