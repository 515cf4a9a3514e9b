"""The bus's replay service: a thread of the supervisor next to the forwarder's proxy.

Owns: the thread that keeps the replay buffer (``acquisition.replay``: the buffer, the
protocol and the decisions are there; this is its shell) and its three sockets:

- a SUB on the proxy's capture socket: libzmq's ``zmq_proxy_steerable`` copies every message it
  forwards there, in C, after reading it and before passing it on; the capture is a PUB, so
  the forwarding path never waits for this thread (a thread that falls behind loses copies,
  counted as ``lost``, never bus messages);
- an XPUB connected to the forwarder's input (its XSUB, on an inproc endpoint): it sees every
  subscription the bus passes upstream, among them a replay client's ``replay/<id>/``, and
  publishes the marker that cuts that client's replay from its live data;
- a PAIR to the supervisor's thread, which relays the requests arriving on its control socket
  (``{"op": "replay" | "replay_next"}``, docs/wire-format.md "Replay") and sends the replies
  back the same way. The control socket thus covers the replay: ipc file permissions, or CURVE
  with the allow-list, whatever ``[security]`` says for it.

Sockets are never shared across threads: this thread creates, uses and closes its three; the
supervisor's thread only ever touches its end of the PAIR (``socket``, ``request``,
``replies``, ``stop``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from pyconpro.acquisition.replay import PublishMarker, ReplayBuffer, ReplayService, Reply

__all__ = ["REPLAY_OPS", "ReplayThread"]

log = logging.getLogger("pyconpro.replay")

# Control ops the supervisor hands to this thread.
REPLAY_OPS = frozenset({"replay", "replay_next"})
_STOP = b"STOP"  # the one-frame command on the PAIR; requests have two frames or more
_PIPE_HWM = 1000  # requests and replies between the two threads
_CAPTURE_BATCH = 1000  # captured messages taken per wake-up before the others get a turn
# The capture is read at most this often while it keeps up: woken for every message, this thread
# cost about 20 us per message at 10,000 messages/s (a quarter of a core), nearly all of it the
# wake-up, and took that core from the worker and the forwarding path; read every 5 ms it takes
# the copies in batches (they wait in the capture socket meanwhile; the bus never waits for them).
_CAPTURE_PERIOD_S = 0.005
_STATS_EVERY_S = 1.0
_INSTANCES = itertools.count()


class ReplayThread:
    """``start()``, then from the supervisor's thread: ``request(frames)`` for each replay
    request (``[*envelope, body]`` as the control socket received it), and ``replies()``
    whenever ``socket`` is readable (each ``[*envelope, body]`` goes back on the control
    socket); ``stats()`` for ``status``; ``stop()``."""

    def __init__(
        self,
        context: zmq.Context[Any],
        *,
        capture: str,
        marker: str,
        max_age_s: float,
        max_bytes: int,
        hwm: int,
    ) -> None:
        self._ctx = context
        self._capture_ep = capture
        self._marker_ep = marker
        self._service = ReplayService(ReplayBuffer(max_age_s, max_bytes))
        self._hwm = hwm
        self._n = next(_INSTANCES)  # a unique inproc name (workers/forwarder.py says why)
        self._pipe_ep = f"inproc://pyconpro-replay-{self._n}"
        self._pipe: zmq.Socket[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stats: dict[str, Any] = self._service.stats(time.monotonic())
        self._ready = threading.Event()

    @property
    def socket(self) -> zmq.Socket[Any]:
        """The supervisor's end of the pipe: readable when replies wait (``replies()``)."""
        assert self._pipe is not None, "start() first"
        return self._pipe

    def start(self, timeout: float = 5.0) -> None:
        pipe = self._ctx.socket(zmq.PAIR)
        pipe.setsockopt(zmq.LINGER, 0)
        pipe.setsockopt(zmq.SNDHWM, _PIPE_HWM)
        pipe.setsockopt(zmq.RCVHWM, _PIPE_HWM)
        pipe.bind(self._pipe_ep)
        self._pipe = pipe
        self._thread = threading.Thread(target=self._run, name="bus-replay", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)

    def request(self, frames: Sequence[bytes]) -> bool:
        """Hand a request over; False when the thread cannot take it now (the client's
        timeout then tells it)."""
        if self._pipe is None or len(frames) < 2:
            return False
        try:
            self._pipe.send_multipart(list(frames), zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def replies(self) -> list[list[bytes]]:
        """The replies waiting, each ``[*envelope, body]``."""
        out: list[list[bytes]] = []
        if self._pipe is None:
            return out
        for _ in range(_PIPE_HWM):
            try:
                out.append(self._pipe.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return out

    def stats(self) -> dict[str, Any]:
        """The buffer's and the replays' counters, at most a second old."""
        return self._stats

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        if self._pipe is None:
            return
        if self._thread is not None and self._thread.is_alive():
            try:
                self._pipe.send(_STOP, zmq.NOBLOCK)
            except zmq.ZMQError:  # pragma: no cover - pipe full of requests: join times out
                pass
            self._thread.join(timeout)
        self._pipe.close()
        self._pipe = None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        capture = self._ctx.socket(zmq.SUB)
        marker = self._ctx.socket(zmq.XPUB)
        pipe = self._ctx.socket(zmq.PAIR)
        try:
            for sock in (capture, marker, pipe):
                sock.setsockopt(zmq.LINGER, 0)
            capture.setsockopt(zmq.RCVHWM, self._hwm)
            capture.subscribe(b"")
            capture.connect(self._capture_ep)
            marker.setsockopt(zmq.SNDHWM, self._hwm)
            marker.setsockopt(zmq.RCVHWM, self._hwm)
            marker.connect(self._marker_ep)
            pipe.setsockopt(zmq.SNDHWM, _PIPE_HWM)
            pipe.setsockopt(zmq.RCVHWM, _PIPE_HWM)
            pipe.connect(self._pipe_ep)
            self._ready.set()
            self._loop(capture, marker, pipe)
        except zmq.ContextTerminated:
            pass
        except Exception:  # pragma: no cover - a bug: the bus goes on without replays
            log.exception("the replay thread stopped; sinks that restart now get no replay")
        finally:
            self._ready.set()
            for sock in (capture, marker, pipe):
                sock.close()

    def _loop(self, capture: zmq.Socket[Any], marker: zmq.Socket[Any],
              pipe: zmq.Socket[Any]) -> None:  # fmt: skip
        service = self._service
        every, requests = zmq.Poller(), zmq.Poller()  # the capture too, or only the requests
        for sock in (capture, marker, pipe):
            every.register(sock, zmq.POLLIN)
        for sock in (marker, pipe):
            requests.register(sock, zmq.POLLIN)
        next_stats = 0.0
        capture_at = 0.0  # the capture is read again from then on (_CAPTURE_PERIOD_S)
        while True:
            now = time.monotonic()
            due = service.next_deadline()
            if due is not None and due <= now:
                service.on_timer(now)
                due = service.next_deadline()
            if now >= next_stats:
                self._stats = service.stats(now)
                next_stats = now + _STATS_EVERY_S
            wait = next_stats if due is None else min(due, next_stats)
            poller = every
            if now < capture_at:
                poller, wait = requests, min(wait, capture_at)
            ready = dict(poller.poll(max(0, int((wait - now) * 1000)) + 1))
            now = time.monotonic()
            if capture in ready:
                taken = _drain(capture, _CAPTURE_BATCH,
                               lambda frames: service.captured(frames, now))  # fmt: skip
                # A full batch: more is waiting, read on at once; else in a while.
                capture_at = now if taken == _CAPTURE_BATCH else now + _CAPTURE_PERIOD_S
            if marker in ready:
                _drain(marker, _CAPTURE_BATCH, lambda frames: service.subscription(frames[0], now))
            if pipe in ready and _drain(pipe, _PIPE_HWM, lambda frames: self._request(
                    frames, now)) is None:  # fmt: skip
                return
            self._carry_out(marker, pipe)

    def _request(self, frames: list[bytes], now: float) -> bool:
        if frames == [_STOP]:
            return False
        self._service.request(frames[:-1], frames[-1], now)
        return True

    def _carry_out(self, marker: zmq.Socket[Any], pipe: zmq.Socket[Any]) -> None:
        for out in self._service.take_outputs():
            match out:
                case PublishMarker(topic):
                    sock, frames, what = marker, [topic, b""], "marker"
                case Reply(envelope, body):
                    sock, frames, what = pipe, [*envelope, body], "reply"
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # the forwarder or the supervisor is stuck: the client times out
                log.warning("replay %s dropped: its queue is full", what)


def _drain(
    sock: zmq.Socket[Any], limit: int, take: Callable[[list[bytes]], object]
) -> int | None:
    """Up to ``limit`` waiting messages of ``sock`` to ``take``: how many it took, None as soon
    as ``take`` returns False (a stop)."""
    taken = 0
    while taken < limit:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        if take(frames) is False:
            return None
        taken += 1
    return taken
