"""The worker's two receive paths side by side: the same datagrams, hostile ones among them, to
a worker on the pure-Python path and a worker on the compiled one (workers/fastpath.py), and
the same results sample by sample and counter by counter.

Both workers consume the same tags of one simulated PLC (real Forward_Opens, real
connections). Then the simulator stops producing and this test sends the T->O datagrams
itself, from the simulator's address and class-1 port (``--share-udp-port``): for each
connection the same images and sequence numbers, with gaps, a duplicate, a forged jump and a
real one, junk, a truncated datagram, a wrong size, an unknown id, another sender and another
port of the PLC's host between them. Heartbeats go on at an RPI x multiplier the simulator
never times out."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from pyconpro.acquisition import class1, wire
from pyconpro.acquisition.control import consumer_from_text
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pyconpro.workers import fastpath
from pyconpro.workers.io_worker import IoWorker, WorkerOptions

from tests.support.receive_paths import compiled

pytestmark = pytest.mark.timeout(180)

SIM = "127.61.16.2"
LOCAL = {"python": "127.61.16.1", "compiled": "127.61.16.3"}
STRANGER = "127.61.16.9"
TAGS = """
[types.Motor]
members = [
  { name = "Running", type = "BOOL" },
  { name = "Faulted", type = "BOOL" },
  { name = "Speed", type = "REAL" },
  { name = "Counts", type = "DINT", dims = 3 },
  { name = "Label", type = "STRING" },
  { name = "Alarms", type = "BOOL[32]" },
]
""" + "".join(f"""
[[tags]]
name = "{name}"
type = "{ty}"
produced = true
max_consumers = 8
""" for name, ty in [("D", "DINT"), ("R", "REAL[10]"), ("B", "BOOL[64]"), ("S", "STRING"),
                     ("M", "INT[2,3]"), ("U", "Motor"), ("L", "LINT"), ("Q", "LREAL[3]")])
# The consumers of each worker: every tag by its type, and D once more with its size given
# (checked against the type it learns, decoded all the same).
CONSUMERS = [*(f"tag={t}" for t in "DRBSMULQ"), "tag=D,alias=Draw,size=4"]
ROUNDS = 24


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    tags = tmp_path / "tags.toml"
    tags.write_text(TAGS)
    with start_simulator(SIM, config=tags, extra_args=["--share-udp-port"]) as s:
        yield s


class Side:
    """One worker (in this process, stepped by the test) and a subscriber to all it says."""

    def __init__(self, path: str, sim: SimulatorProcess, ctx: zmq.Context[Any]) -> None:
        choice = (fastpath.Choice(None, "pure Python (test)") if path == "python"
                  else fastpath.Choice(compiled(), "compiled (test)"))
        self.w = IoWorker(WorkerOptions(
            local_address=LOCAL[path], udp_port=0, pub_endpoint="tcp://127.0.0.1:0",
            control_endpoint="tcp://127.0.0.1:0", stats_interval_s=0), path=choice)
        self.w.open()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.w.pub_endpoint)
        self.messages: list[tuple[bytes, dict[str, Any]]] = []
        for spec in CONSUMERS:
            self.w.add_consumer(consumer_from_text(
                f"plc=p,address={SIM},port={sim.tcp_port},udp_port={sim.udp_port},{spec},"
                "rpi_ms=1000,ot_rpi_ms=1000,multiplier=512"), time.monotonic())

    def step(self) -> None:
        self.w.step(max_wait_s=0.002)
        while True:
            try:
                topic, body = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.messages.append((topic, msgpack.unpackb(body, raw=False)))

    def close(self) -> None:
        self.sub.close()
        self.w.close()


def step_until(sides: list[Side], cond: Callable[[], bool], what: str, timeout: float = 30.0,
               ) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        for side in sides:
            side.step()


def datagram(to_id: int, seq: int, image: bytes) -> bytes:
    return class1.Class1Datagram(to_id, seq & 0xFFFFFFFF, seq & 0xFFFF, image).encode()


Sent = tuple[str, str | None, int, bytes, bool]


def script(streams: dict[str, dict[str, Any]], rng: random.Random) -> list[Sent]:
    """What is sent, by consumer key: (who sends, key, seq, image, cut) with ``who`` the
    PLC's port, another port of its host or another host, ``key`` None for junk (``image``
    as it is), ``seq`` an offset from the stream's first sequence number, ``cut`` the last
    byte cut off the datagram. The same script goes to both workers."""
    out: list[Sent] = []
    next_seq = dict.fromkeys(streams, 0)
    for k in range(ROUNDS):
        for key, st in streams.items():
            size = st["size"]
            image = rng.randbytes(size)
            seq = next_seq[key]
            if key == "p/D" and k == 5:
                seq += 3  # three datagrams lost: a gap
            if key == "p/R" and k == 7:
                out.append(("plc", key, seq - 1, image, False))  # the last one again: stale
            if key == "p/S" and k == 9:
                out.append(("plc", key, seq + 1_000_000, image, False))  # forged jump: dropped
            if key == "p/M" and k == 11:
                # A real jump: dropped, then believed because its successor follows it.
                out.append(("plc", key, seq + 5000, image, False))
                seq += 5001
            next_seq[key] = seq + 1
            out.append(("plc", key, seq, image, False))
        if k % 6 == 3:
            u, size = next_seq["p/U"], streams["p/U"]["size"]
            out += [("plc", None, 0, b"junk", False), ("plc", None, 0, b"", False),
                    ("plc", "p/U", u, rng.randbytes(size + 1), False),  # wrong size
                    ("plc", "p/U", u, rng.randbytes(size), True),  # truncated
                    ("other port", "p/L", next_seq["p/L"] + 1, bytes(8), False),
                    ("other host", "p/L", next_seq["p/L"] + 1, bytes(8), False),
                    ("plc", "unknown", 1, bytes(4), False)]
    return out


def published(side: Side) -> dict[bytes, list[Any]]:
    """By topic: the samples without what differs between two workers (their names, read
    times, where their ``sq`` started: it must count up by one), packed again so NaNs
    compare by their bits; the events' kinds and texts."""
    by_topic: dict[bytes, list[Any]] = {}
    for topic, m in side.messages:
        if topic.startswith(b"sample/"):
            rest = {k: v for k, v in m.items() if k not in ("tw", "tm", "pub", "sq")}
            by_topic.setdefault(topic, []).append((m["sq"], msgpack.packb(rest)))
        elif topic.startswith(b"event/"):
            by_topic.setdefault(topic, []).append((m["k"], m["msg"]))
    for topic, items in by_topic.items():
        if topic.startswith(b"sample/"):
            first = items[0][0]
            assert [sq for sq, _ in items] == list(range(first, first + len(items)))
            by_topic[topic] = [rest for _, rest in items]
    return by_topic


def counters(side: Side) -> dict[str, Any]:
    st = side.w.status()
    c = {k: v for k, v in st["counters"].items()
         if k in ("datagrams", "samples", "pub_drops", "decode_errors", "accepted")
         or k.startswith("drop_")}
    for consumer in st["consumers"]:
        cc = consumer["counters"]
        c[consumer["key"]] = (consumer["samples"], cc["datagrams"], cc["gap"])
    return c


def test_both_receive_paths_give_the_same_samples_and_counters(sim: SimulatorProcess) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sides = [Side("python", sim, ctx), Side("compiled", sim, ctx)]
    plc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        plc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        plc.bind((SIM, sim.udp_port))  # beside the simulator's own socket (--share-udp-port)
        other_port.bind((SIM, 0))
        other_host.bind((STRANGER, 0))
        senders = {"plc": plc, "other port": other_port, "other host": other_host}
        step_until(sides, lambda: all(
            c["state"] == "RUNNING" for s in sides for c in s.w.status()["consumers"]),
            "every consumer of both workers RUNNING")
        sim.control.faults(stop_producing=True)
        end = time.monotonic() + 0.3
        step_until(sides, lambda: time.monotonic() > end, "quiet")
        producers = {p["to_id"]: p for p in sim.control.producers()}
        streams: dict[str, dict[str, dict[str, Any]]] = {}
        for side in sides:
            streams[side.w.path.name] = {}
            for c in side.w.status()["consumers"]:
                p = producers[c["to_id"]]
                streams[side.w.path.name][c["key"]] = {
                    "to_id": c["to_id"], "size": len(bytes.fromhex(p["image"])),
                    "seq": (p["seq32"] + 1) & 0xFFFFFFFF, "dest": tuple(p["dest"])}
        plan = script(streams["python"], random.Random(15))
        before = [counters(side) for side in sides]
        for side in sides:
            side.messages.clear()
        for side in sides:
            mine = streams[side.w.path.name]
            for i, (who, key, seq, image, cut) in enumerate(plan):
                st = mine.get(key) if key is not None else None
                data = (image if key is None else datagram(
                    st["to_id"] if st else 0x5EED0000, (st["seq"] if st else 0) + seq, image))
                if cut:
                    data = data[:-1]
                dest = next(iter(mine.values()))["dest"]
                senders[who].sendto(data, dest)
                if i % 40 == 39:
                    side.step()  # bursts, read in batches
        sent = len(plan)
        step_until(sides, lambda: all(
            counters(s)["datagrams"] - b["datagrams"] >= sent for s, b in zip(sides, before,
                                                                              strict=True)),
            "every datagram read")
        end = time.monotonic() + 0.5
        step_until(sides, lambda: time.monotonic() > end, "the last samples")
        after = [counters(side) for side in sides]
        diffs = [{k: (tuple(v - w for v, w in zip(a[k], b[k], strict=True))
                      if isinstance(a[k], tuple) else a[k] - b[k]) for k in a}
                 for a, b in zip(after, before, strict=True)]
        assert diffs[0] == diffs[1]
        assert diffs[0]["datagrams"] == sent
        assert diffs[0]["drop_seq_jump"] == 2 and diffs[0]["drop_stale"] == 1
        assert diffs[0]["drop_wrong_port"] == diffs[0]["drop_wrong_source"] == 4
        assert diffs[0]["drop_malformed"] == 12 and diffs[0]["drop_wrong_size"] == 4
        python, ours = published(sides[0]), published(sides[1])
        assert python.keys() == ours.keys()
        for topic in python:
            assert python[topic] == ours[topic], topic
        assert len(python[wire.topic_for_sample("p", "D")]) == ROUNDS
        gap_events = python[wire.topic_for_event("p", "D")]
        assert [k for k, _ in gap_events] == ["gap"]
        for key in streams["python"]:  # the flight recorders, but for the connection ids
            rec = [[(r.what, r.size, r.data[:6] + r.data[10:])
                    for r in s.w.consumers[key].conn.recorder.incoming] for s in sides]
            assert len(rec[0]) == 8 and rec[0] == rec[1], key
    finally:
        for s in (plc, other_port, other_host):
            s.close()
        for side in sides:
            side.close()
        ctx.term()
