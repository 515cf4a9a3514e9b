"""The replay service in the supervisor: requests on its control socket, relayed to the
forwarder's replay thread, answered by it; a client written from docs/wire-format.md alone
(plain ZeroMQ and MessagePack, no pyconpro code) gets the buffered messages after its mark,
then the marker on the bus. The supervisor runs in a thread with stand-in workers (as in
test_supervisor.py); a test publisher feeds the forwarder's input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
from pyconpro.acquisition.wire import SampleStream
from pyconpro.workers.replay import ReplayThread

from pyconpro.status_cli import request
from tests.support.wait import wait_for
from tests.workers.test_supervisor import config_text, running, status


def test_a_client_replays_through_the_supervisors_control_socket(tmp_path: Path) -> None:
    with running(tmp_path, config_text(tmp_path)) as sup:
        ctx: zmq.Context[Any] = zmq.Context.instance()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(sup.forwarder.upstream_endpoint)
        stream = SampleStream("w9", "p1", "Counter", "DINT")
        bodies: list[bytes] = []

        def publish() -> bool:
            body = stream.encode(time.time_ns(), time.monotonic_ns(), 0, 0, len(bodies), b"1234")
            pub.send_multipart([stream.topic, body])
            bodies.append(body)
            return len(bodies) >= 60 and status(sup)["forwarder"]["replay"]["messages"] >= 50

        wait_for(publish, "messages in the replay buffer", interval=0.01)
        sent = len(bodies)
        mark = msgpack.unpackb(bodies[9])  # the client stored up to sq 9
        sub = ctx.socket(zmq.SUB)
        dealer = ctx.socket(zmq.DEALER)
        try:
            for sock in (sub, dealer):
                sock.setsockopt(zmq.LINGER, 0)
            sub.subscribe(b"sample/")
            sub.connect(f"ipc://{tmp_path}/bus")
            sub.subscribe(b"replay/t1/")  # after connect: it travels behind the data's
            dealer.connect(sup.control_endpoint)
            req = {"op": "replay", "id": "t1", "after": [["w9", stream.topic, 9, mark["tm"]]]}
            dealer.send_multipart([b"", msgpack.packb(req)])
            got: list[int] = []
            while True:
                assert dealer.poll(10_000), "no reply to the replay request"
                reply = msgpack.unpackb(dealer.recv_multipart()[-1])
                assert reply["ok"] and reply["id"] == "t1", reply
                got += [msgpack.unpackb(body)["sq"] for _topic, body in reply["m"]]
                if reply["end"]:
                    break
                dealer.send_multipart([b"", msgpack.packb({"op": "replay_next", "id": "t1"})])
            assert got[: sent - 10] == list(range(10, sent))
            assert got == list(range(10, 10 + len(got)))
            assert reply["sent"] == len(got) and reply["evicted"] == 0
            # the marker, on the bus, is where live data takes over
            deadline = time.monotonic() + 10
            while True:
                assert sub.poll(max(0, int((deadline - time.monotonic()) * 1000)))
                if sub.recv_multipart()[0] == b"replay/t1/":
                    break
            replay = wait_for(lambda: (r := status(sup)["forwarder"]["replay"])["replays"] and r,
                              "the replay counted in status (read every second)")  # fmt: skip
            assert replay["replays"] == 1 and replay["replayed"] == len(got)
        finally:
            for sock in (sub, dealer, pub):
                sock.close()


def test_without_a_buffer_a_replay_request_says_how_to_get_one(tmp_path: Path) -> None:
    text = config_text(tmp_path).replace("[bus]\n", "[bus]\nreplay_s = 0\n")
    with running(tmp_path, text) as sup:
        assert status(sup)["forwarder"]["replay"] is None
        reply = request(sup.control_endpoint, {"op": "replay", "id": "x"}, 5.0)
        assert reply == {"ok": False, "error": "this pipeline keeps no replay buffer ([bus]"
                         " replay_s or replay_bytes is 0): set both above 0 and restart"
                         " `pyconpro run`"}  # fmt: skip
        sink = next(s for s in sup.specs.values() if s.name == "sink-db")
        assert "--replay" not in sink.argv


def test_the_replay_thread_keeps_every_copy_of_a_burst_and_of_a_trickle() -> None:
    # The thread reads the capture in batches, at most every few milliseconds while it keeps
    # up: a burst of several batches is read on at once, a trickle a moment later; neither
    # loses a copy (``lost`` counts sq jumps of what it kept).
    ctx: zmq.Context[Any] = zmq.Context()
    capture, marker = ctx.socket(zmq.PUB), ctx.socket(zmq.XSUB)
    for sock in (capture, marker):
        sock.setsockopt(zmq.LINGER, 0)
    capture.setsockopt(zmq.SNDHWM, 0)
    capture.bind("inproc://test-replay-capture")
    marker.bind("inproc://test-replay-marker")
    thread = ReplayThread(ctx, capture="inproc://test-replay-capture",
                          marker="inproc://test-replay-marker", max_age_s=600.0,
                          max_bytes=1 << 30, hwm=0)  # fmt: skip
    thread.start()
    stream = SampleStream("w1", "p1", "Counter", "DINT")
    try:
        # The capture SUB connects after start(): until then what is sent is not for it.
        wait_for(lambda: _send(capture, stream) and thread.stats()["added"] > 0,
                 "the replay thread subscribed to the capture", interval=0.01)  # fmt: skip
        first = thread.stats()["added"]
        sent = 0
        for _ in range(5_000):  # five batches
            sent += _send(capture, stream)
        for _ in range(20):
            time.sleep(0.002)
            sent += _send(capture, stream)
        stats = wait_for(lambda: (s := thread.stats())["added"] >= first + sent and s,
                         "every copy in the buffer (stats are read every second)")  # fmt: skip
        assert stats["lost"] == 0 and stats["skipped"] == 0
    finally:
        thread.stop()
        capture.close()
        marker.close()
        ctx.term()


def _send(sock: zmq.Socket[Any], stream: SampleStream) -> int:
    sock.send_multipart([stream.topic, stream.encode(0, time.monotonic_ns(), 0, 0, 1, b"")])
    return 1
