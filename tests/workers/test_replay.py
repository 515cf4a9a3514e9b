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
