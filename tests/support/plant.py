"""A plant's samples for the network sinks' integration tests: tags numbered per topic as a
worker numbers them, published at a steady rate while the test breaks things on a schedule,
and the counters a sink prints when it stops."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

from pyconpro.acquisition.wire import Sample, SeqCounter, topic_for_sample

from tests.sinks.bus_testkit import TestPublisher


class Plant:
    """Samples of ``tags`` tags of PLC ``plc1``, numbered per topic as a worker numbers them;
    each one received 1 ms after the one before."""

    def __init__(self, tags: int) -> None:
        self.tags = [f"T{i:03d}" for i in range(tags)]
        self.seqs = SeqCounter()
        self.sent = 0
        self.t0 = time.time_ns()  # the spool keeps a week: the data must be recent

    def next(self) -> Sample:
        i = self.sent
        tag = self.tags[i % len(self.tags)]
        self.sent += 1
        return Sample(seq=self.seqs.next(topic_for_sample("plc1", tag)), publisher="w1",
                      plc="plc1", tag=tag, t_wall_ns=self.t0 + i * 1_000_000,
                      t_mono_ns=i * 1_000_000, cip_seq=i & 0xFFFF, gap=0, value=i * 0.5,
                      raw=i.to_bytes(4, "little"), type_name="REAL")  # fmt: skip

    def publish(self, pub: TestPublisher, n: int) -> None:
        for _ in range(n):
            pub.send(self.next())

    def next_seqs(self) -> dict[str, int]:
        """Per tag, the ``sq`` its next sample would get: one past the last published."""
        return {tag: self.seqs.next(topic_for_sample("plc1", tag)) for tag in self.tags}


def publish_steadily(pub: TestPublisher, plant: Plant, rate: int, seconds: float,
                     actions: Mapping[float, Callable[[], None]]) -> dict[float, int]:  # fmt: skip
    """Publish ``rate`` samples/s for ``seconds`` (in 10 ms steps), calling each action once
    when its time (seconds from the start) has come, even if a busy machine let the run pass
    its end first; the samples sent when each ran."""
    tick = 0.01
    start = time.monotonic()
    done: dict[float, int] = {}
    while (elapsed := time.monotonic() - start) < seconds or len(done) < len(actions):
        due = int(elapsed / tick) + 1
        while plant.sent < due * rate * tick:
            pub.send(plant.next())
        for at, action in actions.items():
            if at not in done and elapsed >= at:
                action()
                done[at] = plant.sent
        time.sleep(max(0.0, start + due * tick - time.monotonic()))
    return done


def summary(text: str) -> dict[str, int]:
    """The counters of the last ``sink stopped: key=value ...`` line in a sink's log."""
    m = re.findall(r"sink stopped: (.*)$", text, re.MULTILINE)
    assert m, f"no summary line in:\n{text}"
    return {k: int(v) for k, v in (kv.split("=") for kv in m[-1].split())}


def assert_outage_bridged(stderr: str, min_spooled: float) -> dict[str, int]:
    """The counters of a sink that bridged its destination's outage: at least ``min_spooled``
    records went through the spool and all came back out of it, nothing lost, dropped or
    malformed, the outage logged when it began and when it ended."""
    counts = summary(stderr)
    assert counts["spooled"] >= min_spooled and counts["spool_depth"] == 0
    assert (counts["lost"], counts["spool_dropped"], counts["malformed"]) == (0, 0, 0)
    assert "cannot reach the server" in stderr and "writing again after" in stderr
    return counts
