"""The socket of an encapsulation session the originator opens (workers/session_socket.py), on
loopback against a tiny encapsulation listener served in this thread
(tests/support/encap_listener.py): it connects from its
local address, writes what the session transmits once connected, tells the owner the session's
news, closes with UnRegisterSession written first, and reports a refused connect to the
session (whose requests then fail)."""

from __future__ import annotations

import random
import selectors
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from pyconpro.acquisition import encap
from pyconpro.acquisition.session import PlcSession, SessionFailed, SessionReady
from pyconpro.workers.session_socket import SessionSocket

from tests.support.encap_listener import HANDLE, Listener

LOCAL = "127.61.31.1"
PEER = "127.61.31.2"


class Rig:
    """A ``SessionSocket`` waited on by a selector, as the simulator does it."""

    def __init__(self, port: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.news: list[SessionReady | SessionFailed] = []
        self.watched: list[bool] = []  # the ``write`` of each watch call
        self.unwatched = 0
        self.errors: list[str] = []
        self.on_news: Callable[[SessionReady | SessionFailed], None] = lambda out: None
        plc = PlcSession(PEER, port, rng=random.Random(1), request_timeout=60.0)
        self.tcp = SessionSocket(plc, LOCAL, watch=self._watch, unwatch=self._unwatch,
                                 on_session=self._on_session)

    def _watch(self, sock: socket.socket, write: bool) -> None:
        self.watched.append(write)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        if sock in self.selector.get_map():
            self.selector.modify(sock, events)
        else:
            self.selector.register(sock, events)

    def _unwatch(self, sock: socket.socket) -> None:
        self.unwatched += 1
        self.selector.unregister(sock)

    def _on_session(self, out: SessionReady | SessionFailed, now: float) -> None:
        self.news.append(out)
        self.on_news(out)

    def request(self) -> None:
        self.tcp.request(b"\x4c\x00", (), lambda reply, items: None, self.errors.append,
                         time.monotonic())

    def run_until(self, listener: Listener | None, cond: Callable[[], bool]) -> None:
        end = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < end, "condition not reached in time"
            for _, mask in self.selector.select(0.01):
                self.tcp.on_io(bool(mask & selectors.EVENT_READ), time.monotonic())
            if listener is not None:
                listener.service()

    def close(self) -> None:
        self.tcp.close_socket(flush=False)
        self.selector.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    listener = Listener(PEER)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def rig(listener: Listener) -> Iterator[Rig]:
    rig = Rig(listener.port)
    try:
        yield rig
    finally:
        rig.close()


def test_a_request_registers_from_the_local_address_then_goes_out(
        rig: Rig, listener: Listener) -> None:
    rig.request()
    assert rig.tcp.sock is not None and rig.tcp.connecting and rig.watched[-1] is True
    rig.run_until(listener, lambda: encap.Command.SEND_RR_DATA in listener.commands)
    assert listener.peers == [LOCAL]  # bound to the local address: P2P data comes back here
    assert listener.commands == [encap.Command.REGISTER_SESSION, encap.Command.SEND_RR_DATA]
    assert rig.news == [SessionReady(HANDLE)] and rig.tcp.plc.up
    assert not rig.tcp.outbuf and rig.watched[-1] is False  # all written: read interest only


def test_a_request_made_while_the_session_is_pumped_goes_out_in_order(
        rig: Rig, listener: Listener) -> None:
    """The owner asks again from inside the pump (its users go when the session is ready):
    the running pump carries that out too."""
    rig.on_news = lambda out: rig.request()
    rig.request()
    rig.run_until(listener, lambda: listener.commands.count(encap.Command.SEND_RR_DATA) == 2)
    assert listener.commands == [encap.Command.REGISTER_SESSION, *[encap.Command.SEND_RR_DATA] * 2]
    assert not rig.tcp.pumping


def test_close_writes_unregister_session_before_closing(rig: Rig, listener: Listener) -> None:
    rig.request()
    rig.run_until(listener, lambda: encap.Command.SEND_RR_DATA in listener.commands)
    rig.tcp.close(time.monotonic())
    assert rig.tcp.sock is None and not rig.selector.get_map() and rig.unwatched == 1
    assert rig.errors == ["session closed"]  # the request in flight fails
    rig.run_until(listener, lambda: listener.eof == 1)
    assert listener.commands[-1] == encap.Command.UNREGISTER_SESSION


def test_a_refused_connect_fails_the_session_and_its_requests(listener: Listener) -> None:
    port = listener.port
    listener.close()  # nothing listens there any more: the connect is refused
    rig = Rig(port)
    try:
        rig.request()
        rig.run_until(None, lambda: bool(rig.news))
        (failed,) = rig.news
        assert isinstance(failed, SessionFailed)
        assert failed.reason == f"TCP connect to {PEER}:{port} failed: Connection refused"
        assert rig.errors == [f"no session to PLC {PEER}:{port}: {failed.reason}"]
        assert rig.tcp.sock is None and not rig.selector.get_map()
    finally:
        rig.close()
