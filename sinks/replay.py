"""A sink's link to the replay endpoint (the supervisor's control socket): one DEALER socket
and the replay it carries (``acquisition.replay.ReplayClient``). ``sinks/base.py`` runs it at
start, before live data (docs/operations.md "When a sink restarts")."""

from __future__ import annotations

from typing import Any

import zmq
from pyconpro.acquisition.replay import ReplayClient
from pyconpro.workers.guard import ClientKeys

__all__ = ["ReplayLink"]


class ReplayLink:
    """A DEALER to the replay endpoint (the supervisor's control socket) and the replay it
    carries; one request or reply of about ``max_bytes`` in flight each way."""

    def __init__(
        self, ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None, client: ReplayClient
    ) -> None:
        self.client = client
        self.sock: zmq.Socket[Any] | None = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 16)
        self.sock.setsockopt(zmq.RCVHWM, 16)
        if curve is not None:
            curve.apply(self.sock)
        self.sock.connect(endpoint)

    def send(self, body: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send_multipart([b"", body], zmq.NOBLOCK)
        except zmq.ZMQError:  # cannot queue: the replay's timeout gives it up
            pass

    def replies(self) -> list[bytes]:
        out: list[bytes] = []
        while self.sock is not None:
            try:
                out.append(self.sock.recv_multipart(zmq.NOBLOCK)[-1])
            except zmq.Again:
                break
        return out

    def wait(self, live: zmq.Socket[Any], timeout_ms: int) -> set[zmq.Socket[Any]]:
        """The sockets readable within ``timeout_ms``: replies, and live data unless the
        client holds all it may."""
        poller = zmq.Poller()
        if self.sock is not None:
            poller.register(self.sock, zmq.POLLIN)
        if not self.client.held_full:
            poller.register(live, zmq.POLLIN)
        return {sock for sock, _ in poller.poll(timeout_ms)}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
