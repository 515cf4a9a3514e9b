"""Answering a control socket (a ZeroMQ ROUTER): the I/O worker and the supervisor both do it here.

Owns: reading the requests that are waiting, without blocking and at most ``MAX_PER_WAKEUP`` of
them per call (a flood of requests cannot starve the caller's receive loop), and sending each
reply back with its request's envelope. What a request means and how replies are encoded stays
with the caller: the worker speaks ``acquisition/control.py``, the supervisor its msgpack maps
(docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

__all__ = ["MAX_PER_WAKEUP", "answer_waiting"]

MAX_PER_WAKEUP = 100


def answer_waiting(sock: zmq.Socket[Any], answer: Callable[[bytes], bytes],
                   limit: int = MAX_PER_WAKEUP,
                   take: Callable[[list[bytes]], bool] | None = None) -> int:  # fmt: skip
    """Answer up to ``limit`` requests waiting on ``sock``: ``answer(body)`` is the reply body.
    A message without an envelope is dropped unanswered, and so is a reply the peer can no
    longer take (it went away, or its queue is full: ``NOBLOCK``). ``take(frames)``, when
    given, sees each request first: True means the caller took it and answers it later itself,
    with the same envelope (the supervisor's replay requests). Returns how many requests were
    answered here."""
    answered = 0
    for _ in range(limit):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        if len(frames) < 2:
            continue
        if take is not None and take(frames):
            continue
        envelope, body = frames[:-1], frames[-1]
        reply = answer(body)
        try:
            sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError:
            continue
        answered += 1
    return answered
