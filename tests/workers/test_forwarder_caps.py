"""The bus forwarder's subscription caps, with real sockets and a real flooding process: a peer
that sends 200,000 subscriptions of 200 bytes (issue 10: the supervisor grew by 2.2 GB) is
refused past its cap and cut off, the refusal is counted and visible in the forwarder's stats,
the supervisor's memory stays bounded and comes back near where it started once the peer is
gone, and a subscriber on another address keeps getting every message all along. On both
forwarding loops (compiled and Python: tests/support/receive_paths.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import zmq
from pyconpro.acquisition.subscriptions import SubscriptionLimits
from pyconpro.workers.forwarder import Forwarder
from pyconpro.workers.process import json_ready, spawn

from tests.support.receive_paths import PATHS, forwarding_path
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

HOST = "127.61.10.1"  # the bus, and the legitimate subscriber's address
FLOOD_FROM = "127.61.10.2"  # the flooding peer's source address

# A peer that subscribes to 200,000 random 200-byte prefixes as fast as it can, through an
# XSUB (what a SUB sends, without the SUB's own checks), then waits to be stopped. ZeroMQ
# reconnects it by itself when the forwarder cuts it off, and sends everything again.
FLOODER = r"""
import json, random, sys, time, zmq
endpoint, count = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context()
s = ctx.socket(zmq.XSUB)
s.setsockopt(zmq.SNDHWM, 0)
s.setsockopt(zmq.LINGER, 0)
s.connect(endpoint)
rnd = random.Random(7)
print(json.dumps({"ready": True}), flush=True)
for _ in range(count):
    s.send(b"\x01sample/" + rnd.randbytes(193))
while True:
    time.sleep(1)
"""


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class Subscriber:
    """A SUB on the bus from ``HOST`` that counts the messages of the publisher's sequence."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.subscribe(b"sample/plc1/")
        self.sock.connect(endpoint)
        self.seen: list[int] = []

    def drain(self) -> None:
        while True:
            try:
                _, body = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.seen.append(int(body))


class Publisher:
    """A PUB connected to the forwarder's upstream side, numbering its messages."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.connect(endpoint)
        self.n = 0

    def send(self) -> None:
        self.sock.send_multipart([b"sample/plc1/A/", str(self.n).encode()])
        self.n += 1


@pytest.mark.parametrize("path", PATHS)
def test_a_subscription_flood_is_capped_counted_and_its_memory_given_back(path: str) -> None:
    limits = SubscriptionLimits(per_peer=1000, total=10_000)
    fwd = Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", limits=limits,
                    path=forwarding_path(path))
    fwd.start()
    ctx: zmq.Context[Any] = zmq.Context()
    pub = Publisher(ctx, fwd.upstream_endpoint)
    sub = Subscriber(ctx, fwd.public_endpoint)
    flooder = None
    try:
        def pump(until: Any, what: str, timeout: float = 60.0) -> None:
            def step() -> Any:
                pub.send()
                sub.drain()
                return until()
            wait_for(step, what, timeout=timeout, interval=0.01)

        pump(lambda: sub.seen, "the subscriber's first message")
        first = sub.seen[0]
        baseline = _rss_mb()
        port = fwd.public_endpoint.rsplit(":", 1)[1]
        flooder = spawn([sys.executable, "-c", FLOODER, f"tcp://{FLOOD_FROM}:0;{HOST}:{port}",
                         "200000"], ready=json_ready, ready_timeout_s=30)  # fmt: skip
        peak = baseline

        def cut_twice() -> bool:
            nonlocal peak
            peak = max(peak, _rss_mb())
            st = fwd.stats()
            if st is None:
                return False
            s = st.subscribers
            return bool(s["closed_for_refusal"] + s["closed_for_rate"] >= 2 and s["refused"] > 0)

        # Cut off for sending too much too fast, or refused past the cap and cut off; ZeroMQ
        # reconnects it and it floods again.
        pump(cut_twice, "the flooding peer refused and cut off twice")
        st = fwd.stats()
        assert st is not None
        subs = st.subscribers
        assert subs["held"] <= limits.per_peer + 1  # the flooder's at most, and ours
        assert peak - baseline < 200, f"RSS grew {peak - baseline:.0f} MB during the flood"
        flooder.stop()
        flooder = None

        def released() -> bool:
            s = fwd.stats()
            return s is not None and s.subscribers["held"] == 1 and s.subscribers["peers"] == 1

        # What the statistics said while it flooded, for the record (pytest -s).
        print(json.dumps({"baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1), **subs}))

        pump(released, "the flooding peer's subscriptions released")
        # The memory the flood took comes back (glibc's malloc_trim once the peer is gone).
        pump(lambda: _rss_mb() < baseline * 1.10 + 5,
             f"RSS back within 10 % of {baseline:.0f} MB (now {_rss_mb():.0f} MB)")
        # The subscriber got every message published, during the flood too, in order. No more
        # are sent meanwhile: a message sent just before each look would always be in flight.
        def last_arrived() -> bool:
            sub.drain()
            return bool(sub.seen) and sub.seen[-1] == pub.n - 1

        wait_for(last_arrived, "the last message", timeout=60.0, interval=0.01)
        assert sub.seen == list(range(first, pub.n)), "a message was lost or reordered"
        print(json.dumps({"after_mb": round(_rss_mb(), 1)}))
    finally:
        if flooder is not None:
            flooder.stop()
        sub.sock.close()
        pub.sock.close()
        ctx.term()
        fwd.stop()


@pytest.mark.parametrize("path", PATHS)
def test_too_long_a_subscription_is_refused_and_its_connection_closed(path: str) -> None:
    fwd = Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", path=forwarding_path(path))
    fwd.start()
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        port = fwd.public_endpoint.rsplit(":", 1)[1]
        sock.connect(f"tcp://{FLOOD_FROM}:0;{HOST}:{port}")
        sock.send(b"\x01sample/" + b"x" * 600)  # longer than any topic (512)

        def refused() -> dict[str, Any] | None:
            st = fwd.stats()
            s = st.subscribers if st is not None else {}
            return s if s.get("refused_too_long") and s.get("closed_for_refusal") else None

        subs = wait_for(refused, "the long subscription refused and its connection closed")
        assert subs["held"] == 0
    finally:
        sock.close()
        ctx.term()
        fwd.stop()
