"""The bus forwarder's forwarding, on both of its loops (compiled and Python:
tests/support/receive_paths.py), with real sockets: whole messages reach the subscribers and
the replay buffer's capture as they were sent, in order, and are counted exactly; while a
publisher never pauses, a new subscriber is served, a bad subscription is refused, the
periodic duties are done and a stop is prompt; a context ended under the loop ends it.
The subscription caps are tests/workers/test_forwarder_caps.py; the compiled step alone,
tests/workers/test_fastpath.py."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
import zmq
from pyconpro.workers.forwarder import Forwarder
from pyconpro.workers.process import json_ready, spawn

from tests.support.receive_paths import PATHS, forwarding_path
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)

HOST = "127.61.22.1"  # the bus, and the subscribers' address
OTHER = "127.61.22.2"  # a peer whose subscription is refused

# A publisher that numbers its messages and sends them as fast as it can until stopped.
PUBLISHER = r"""
import json, sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PUB)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
send, more, n = s.send, zmq.SNDMORE, 0
while True:
    send(b"sample/plc1/A/", more)
    send(b"%d" % n)
    n += 1
"""


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 20_000)  # a message that does not come fails the test
    return sock


@pytest.mark.parametrize("path", PATHS)
def test_whole_messages_reach_subscribers_and_capture_in_order_and_are_counted(
        path: str) -> None:
    ctx: zmq.Context[Any] = zmq.Context()  # the capture is inproc: the forwarder's context
    fwd = Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", context=ctx, replay_s=60,
                    replay_bytes=1 << 20, path=forwarding_path(path))  # fmt: skip
    fwd.start()
    # An XPUB publishes: it sees the forwarder's subscription, so nothing it sends after that
    # is lost to the slow joiner, and the forwarder's counts can be checked to the byte.
    pub, sub, copies = _socket(ctx, zmq.XPUB), _socket(ctx, zmq.SUB), _socket(ctx, zmq.SUB)
    try:
        for sock in (pub, sub, copies):
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
        pub.connect(fwd.upstream_endpoint)
        assert pub.poll(10_000) and pub.recv() == b"\x01", "the forwarder's subscription"
        sub.subscribe(b"")
        sub.connect(fwd.public_endpoint)
        copies.subscribe(b"")
        copies.connect(fwd.capture_endpoint)
        wait_for(lambda: (st := fwd.stats()) is not None and st.subscribers["held"] == 1,
                 "the subscription applied")  # fmt: skip
        sent: list[list[bytes]] = []

        def warm() -> bool:  # until the capture's reader is there too
            sent.append([b"warm/", b"%d" % len(sent)])
            pub.send_multipart(sent[-1])
            return bool(copies.poll(10))

        wait_for(warm, "a message through to the capture", interval=0.01)
        warm_up = len(sent)
        sent += [[b"t/%d" % k] + [bytes([k & 0xFF]) * (k * 300)] * (k % 4) for k in range(300)]
        sent += [[b"big/", b"x" * 2_000_000, b"", b"tail"], [b"end/"]]
        for msg in sent[warm_up:]:
            pub.send_multipart(msg)
        got = [sub.recv_multipart() for _ in sent]
        assert got == sent
        copied: list[list[bytes]] = []
        while not copied or copied[-1] != [b"end/"]:
            assert copies.poll(10_000), "the capture's copies"
            copied.append(copies.recv_multipart())
        first = copied.index(sent[warm_up])
        assert copied[first:] == sent[warm_up:] and all(m[0] == b"warm/" for m in copied[:first])
        frames = sum(len(m) for m in sent)
        size = sum(len(f) for m in sent for f in m)

        def counted() -> bool:
            st = fwd.stats()
            return st is not None and (st.frames_in, st.bytes_in) == (frames, size)

        wait_for(counted, f"{frames} frames, {size} bytes counted")
    finally:
        for sock in (pub, sub, copies):
            sock.close()
        fwd.stop()
        ctx.term()


@pytest.mark.parametrize("path", PATHS)
def test_while_a_publisher_never_pauses_subscriptions_are_judged_and_stop_is_prompt(
        path: str) -> None:
    fwd = Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", path=forwarding_path(path))
    fwd.start()
    ctx: zmq.Context[Any] = zmq.Context()
    sub, bad = _socket(ctx, zmq.SUB), _socket(ctx, zmq.XSUB)
    publisher = None
    try:
        publisher = spawn([sys.executable, "-c", PUBLISHER, fwd.upstream_endpoint],
                          ready=json_ready, ready_timeout_s=30)  # fmt: skip

        def messages() -> int:
            st = fwd.stats()
            return st.messages_in if st is not None else 0

        wait_for(lambda: messages() > 50_000, "the publisher's messages through the forwarder")
        # A subscriber that joins now is served, and the figures of the subscribers (refreshed
        # every half second, between batches) say so.
        sub.subscribe(b"sample/")
        sub.connect(fwd.public_endpoint)
        assert sub.poll(20_000), "no message for a subscriber that joined during the flow"
        held = wait_for(lambda: (st := fwd.stats()) is not None
                        and st.subscribers["held"] == 1 and st.messages_in, "held = 1")
        # A subscription no topic can match is refused, and its connection closed (ZeroMQ
        # reconnects it and sends it again: refused again).
        port = fwd.public_endpoint.rsplit(":", 1)[1]
        bad.connect(f"tcp://{OTHER}:0;{HOST}:{port}")
        bad.send(b"\x01sample/" + b"x" * 600)
        wait_for(lambda: (st := fwd.stats()) is not None
                 and st.subscribers["refused_too_long"] >= 1
                 and st.subscribers["closed_for_refusal"] >= 1, "the refusal")
        # The publisher never paused: the messages went on through all of this, in order.
        assert messages() > held
        seen = [int(sub.recv_multipart()[1]) for _ in range(1000)]
        assert seen == sorted(seen), "reordered"
        fwd.stop(timeout=10)
        assert not fwd.alive, "the forwarder did not stop while messages kept coming"
        assert fwd.stuck_threads() == []  # the supervisor terminates its context only then
    finally:
        if publisher is not None:
            publisher.stop()
        sub.close()
        bad.close()
        ctx.term()
        fwd.stop()


@pytest.mark.parametrize("path", PATHS)
def test_a_context_ended_under_the_loop_ends_it(path: str) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    fwd = Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", context=ctx,
                    path=forwarding_path(path))  # fmt: skip
    fwd.start()
    term = threading.Thread(target=ctx.term)  # waits for every socket of the context
    term.start()
    try:
        wait_for(lambda: not fwd.alive, "the forwarder's end")
    finally:
        fwd.stop()  # closes the owner's end of the control pipe: the context can end
        term.join(10)
    assert not term.is_alive()
