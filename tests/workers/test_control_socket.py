"""workers/control_socket.py: answering the requests waiting on a ROUTER socket (real ZeroMQ
sockets over inproc; every receive has a timeout)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from pyconpro.workers.control_socket import answer_waiting

TIMEOUT_MS = 10_000


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.term()


def _pair(ctx: zmq.Context[Any], name: str) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"inproc://{name}")
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    req.connect(f"inproc://{name}")
    return router, req


def _wait_readable(sock: zmq.Socket[Any]) -> None:
    assert sock.poll(TIMEOUT_MS), "no request arrived"


def test_each_request_gets_its_reply(ctx: zmq.Context[Any]) -> None:
    router, req = _pair(ctx, "answer")
    try:
        req.send(b"ping")
        _wait_readable(router)
        assert answer_waiting(router, lambda body: body.upper()) == 1
        assert req.recv() == b"PING"
        assert answer_waiting(router, lambda body: body) == 0  # nothing waiting: no block
    finally:
        req.close()
        router.close()


def test_at_most_limit_per_call(ctx: zmq.Context[Any]) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://limit")
    dealers = []
    try:
        for i in range(3):
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
            d.connect("inproc://limit")
            d.send_multipart([b"", str(i).encode()])
            dealers.append(d)
        seen: list[bytes] = []

        def answer(body: bytes) -> bytes:
            seen.append(body)
            return b"ok " + body

        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while len(seen) < 3 and time.monotonic() < deadline:
            _wait_readable(router)
            assert answer_waiting(router, answer, limit=1) <= 1
        assert sorted(seen) == [b"0", b"1", b"2"]
        for i, d in enumerate(dealers):
            assert d.recv_multipart() == [b"", b"ok " + str(i).encode()]
    finally:
        for d in dealers:
            d.close()
        router.close()


def test_a_reply_the_peer_cannot_take_is_dropped(ctx: zmq.Context[Any]) -> None:
    # A peer that does not read: its queue holds a reply or two, the rest cannot be sent
    # (ROUTER_MANDATORY makes that an error instead of a silent drop); none of it may raise.
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 1)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind("inproc://full")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVHWM, 1)
    dealer.connect("inproc://full")
    try:
        for i in range(50):
            dealer.send_multipart([b"", str(i).encode()])
        seen: list[bytes] = []

        def answer(body: bytes) -> bytes:
            seen.append(body)
            return body

        answered = 0
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while len(seen) < 50 and time.monotonic() < deadline:
            _wait_readable(router)
            answered += answer_waiting(router, answer)
        assert len(seen) == 50  # every request was read and answered
        assert answered < 50  # but not every reply fit
        received = 0
        while dealer.poll(200):
            dealer.recv_multipart()
            received += 1
        assert received == answered
    finally:
        dealer.close()
        router.close()
