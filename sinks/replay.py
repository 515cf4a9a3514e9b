"""A sink's links to the supervisor's control socket, each one DEALER socket: the replay
endpoint and the replay it carries (``acquisition.replay.ReplayClient``), which ``sinks/base.py``
runs at start, before live data (docs/operations.md "When a sink restarts"); and the reports of
the sink's state (``sink_report``), which ``pyconpro status`` shows."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import zmq
from pyconpro.acquisition.replay import ReplayClient
from pyconpro.workers.guard import ClientKeys

__all__ = ["ReplayLink", "Reporter"]


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


class Reporter:
    """A DEALER socket to the supervisor's control socket: ``sink_report`` requests, sent
    without waiting (a supervisor that does not read them costs nothing); replies are
    discarded."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 4)
        self.sock.setsockopt(zmq.RCVHWM, 4)
        if curve is not None:
            curve.apply(self.sock)
        self.sock.connect(endpoint)

    def send(self, name: str, report: dict[str, Any]) -> None:
        request = {"op": "sink_report", "child": name, "pid": os.getpid(), "report": report}
        try:
            while self.sock.poll(0, zmq.POLLIN):
                self.sock.recv_multipart(zmq.NOBLOCK)
            self.sock.send_multipart([b"", msgpack.packb(request, use_bin_type=True)], zmq.NOBLOCK)
        except zmq.ZMQError:  # queue full (supervisor busy or gone): the next report follows
            pass

    def close(self) -> None:
        self.sock.close(linger=0)
