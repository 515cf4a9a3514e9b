"""Consumed tags of the simulated controller: it opens class-1 connections to a *producer*.

A Logix controller consumes a tag from another device by opening the Forward_Open itself; the
simulator does the same to test a pyconpro worker that produces tags (docs/simulator.md
"Consumed tags"). Each consumed tag is the originator machinery the I/O worker uses, unchanged:
``acquisition.session.PlcSession`` (TCP, RegisterSession, requests) and
``acquisition.connection.ConsumerConnection`` (Forward_Open, heartbeats on absolute deadlines,
the T->O watchdog, back-off, Forward_Close), with ``acquisition.demux.Demux`` admitting the
T->O datagrams. This module is their socket shell inside the simulator's selector loop: the
heartbeats leave through the simulator's class-1 socket (``send``), and the simulator hands
each datagram that arrives there to ``on_datagram`` first.

What it receives is recorded (``records``): receive time (wall and monotonic), the CIP sequence
count and the value decoded with the tag's type; the control command ``consumed`` returns it.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyconpro.acquisition import cip, cpf
from pyconpro.acquisition.class1 import PREFIX_SIZE
from pyconpro.acquisition.connection import (
    ConnEvent,
    ConsumerConnection,
    Listen,
    SendForwardClose,
    SendForwardOpen,
    SendHeartbeat,
    Unlisten,
)
from pyconpro.acquisition.demux import Demux
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_types import byte_size, parse_type
from pyconpro.acquisition.originator import ConsumerParams, Originator
from pyconpro.acquisition.produce import ProduceSpec
from pyconpro.acquisition.session import (
    CloseSocket,
    Connect,
    PlcSession,
    PlcSessionOutput,
    ReplyReceived,
    RequestFailed,
    SessionFailed,
    SessionReady,
    Transmit,
)

log = logging.getLogger("pyconpro.sim")

_KEEP = 100_000  # records kept per consumed tag (the oldest go first)


@dataclass(frozen=True, slots=True)
class ConsumedSpec:
    """A consumed tag: ``tag`` produced by the device at ``address`` (TCP ``port``, class-1
    ``udp_port``), of ``type`` (a type text, or a UDT name with ``members``)."""

    address: str
    tag: str
    type: str
    members: tuple[tuple[str, str], ...] = ()
    rpi_ms: float = 100.0
    multiplier: int = 1  # wire code: x8
    port: int = 44818
    udp_port: int = 2222

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConsumedSpec:
        try:
            return cls(str(d["address"]), str(d["tag"]), str(d["type"]),
                       tuple((str(m), str(t)) for m, t in d.get("members") or ()),
                       float(d.get("rpi_ms", 100.0)), int(d.get("multiplier", 1)),
                       int(d.get("port", 44818)), int(d.get("udp_port", 2222)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"consumed tag {d!r}: {exc}; give address, tag and type") from None


@dataclass(eq=False)
class ConsumedTag:
    spec: ConsumedSpec
    conn: ConsumerConnection
    session: PlcSession
    decode: Callable[[bytes], Any]
    sock: socket.socket | None = None
    connecting: bool = False
    outbuf: bytearray = field(default_factory=bytearray)
    callbacks: dict[int, tuple[Callable[..., None], Callable[[str], None]]] = field(
        default_factory=dict)
    listening: int | None = None  # the T->O id routed here
    records: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_KEEP))
    received: int = 0
    events: list[str] = field(default_factory=list)


class ConsumedTags:
    """Every consumed tag of one simulator (module docstring)."""

    def __init__(self, selector: selectors.BaseSelector, local_address: str, udp_port: int,
                 send: Callable[[bytes, tuple[str, int]], None],
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None) -> None:
        self.selector = selector
        self.local_address = local_address
        self.udp_port = udp_port
        self._send = send
        self._clock = clock
        self._rng = random.Random(seed)
        self.originator = Originator(self._rng)
        self.demux = Demux()
        self.tags: dict[str, ConsumedTag] = {}

    # ------------------------------------------------------------------ set-up

    def add(self, spec: ConsumedSpec, now: float) -> ConsumedTag:
        key = f"{spec.address}/{spec.tag}"
        if key in self.tags:
            raise UsageError(f"consumed tag {key} exists already")
        typ = (ProduceSpec(spec.tag, spec.type, spec.members).logix_type() if spec.members
               else parse_type(spec.type, {}))
        params = ConsumerParams(
            plc=spec.address, tag=spec.tag, rpi_us=round(spec.rpi_ms * 1000),
            multiplier=spec.multiplier, slot=None, tag_bytes=byte_size(typ), tag_type=typ,
            plc_udp_port=spec.udp_port,
        )
        session = PlcSession(spec.address, spec.port, rng=self._rng, request_timeout=5.0)
        c = ConsumedTag(spec, ConsumerConnection(params, self.originator), session,
                        compile_decoder(typ))
        self.tags[key] = c
        c.conn.start(now)
        self.pump(c, now)
        return c

    def close(self) -> None:
        now = self._clock()
        for c in self.tags.values():
            c.session.close(now)
            self._pump_session(c, now)
            self._close_socket(c)

    # ------------------------------------------------------------------ data

    def on_datagram(self, data: bytes, src: tuple[str, int], now: float) -> bool:
        """A datagram on the simulator's class-1 socket: True when it was a consumed tag's."""
        if len(data) < PREFIX_SIZE:
            return False
        cid = int.from_bytes(data[6:10], "little")
        if self.demux.route(src, cid) is None:
            return False
        route = self.demux.admit(data, src)
        if route is None:
            return True  # ours, but stale or malformed: counted by the demultiplexer
        for key in route.owners:
            c = self.tags.get(str(key))
            if c is None:
                continue
            c.conn.on_data(now, route.missed)
            c.received += 1
            try:
                value = c.decode(data[PREFIX_SIZE:])
            except Exception as exc:  # noqa: BLE001 - recorded, never fatal
                value = f"<undecodable: {exc}>"
            c.records.append({"t_wall": time.time(), "t": now, "seq": route.cip_sequence,
                              "missed": route.missed, "value": value})
            self.pump(c, now)
        return True

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        times = [t for c in self.tags.values()
                 for t in (c.conn.next_deadline(), c.session.next_deadline()) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        for c in self.tags.values():
            d = c.session.next_deadline()
            if d is not None and d <= now:
                c.session.on_timer(now, reconnect=c.conn.is_live)
                self._pump_session(c, now)
            d = c.conn.next_deadline()
            if d is not None and d <= now:
                c.conn.on_timer(now)
                self.pump(c, now)

    # ------------------------------------------------------------------ status

    def status(self, since: int = 0) -> list[dict[str, Any]]:
        out = []
        for key, c in self.tags.items():
            records = list(c.records)
            out.append({
                "key": key,
                "state": c.conn.state.value,
                "failure": c.conn.failure,
                "received": c.received,
                "records": records[since:] if since >= 0 else records[since:],
                "events": c.events[-20:],
            })
        return out

    # ------------------------------------------------------------------ the connection

    def pump(self, c: ConsumedTag, now: float) -> None:
        key = f"{c.spec.address}/{c.spec.tag}"
        for out in c.conn.take_outputs():
            if isinstance(out, SendHeartbeat):
                self._send(out.datagram, (c.spec.address, out.port))
            elif isinstance(out, Listen):
                self.demux.add((c.spec.address, c.spec.udp_port), out.connection_id,
                               out.data_size, key)
                c.listening = out.connection_id
            elif isinstance(out, Unlisten):
                self.demux.remove((c.spec.address, c.spec.udp_port), out.connection_id, key)
                c.listening = None
            elif isinstance(out, SendForwardOpen):
                self._forward_open(c, out, now)
            elif isinstance(out, SendForwardClose):
                self._forward_close(c, out, now)
            elif isinstance(out, ConnEvent):
                c.events = [*c.events[-49:], str(out)]
                log.info("consumed %s: %s", key, out)

    def _forward_open(self, c: ConsumedTag, out: SendForwardOpen, now: float) -> None:
        req = out.request
        # P2P data to our class-1 port (protocol.md 6.7): the T->O sockaddr item.
        extra = (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O,
                                  cpf.Sockaddr("0.0.0.0", self.udp_port)),)

        def on_reply(reply: cip.Reply, items: tuple[cpf.Item, ...]) -> None:
            c.conn.on_forward_open_reply(self._clock(), req, reply, items)
            self.pump(c, self._clock())

        def on_error(reason: str) -> None:
            c.conn.on_request_error(self._clock(), req, reason)
            self.pump(c, self._clock())

        self._request(c, req.encode(), extra, on_reply, on_error, now)

    def _forward_close(self, c: ConsumedTag, out: SendForwardClose, now: float) -> None:
        req = out.request

        def on_reply(reply: cip.Reply, items: tuple[cpf.Item, ...]) -> None:
            if out.awaited:
                c.conn.on_forward_close_reply(self._clock(), req, reply)
                self.pump(c, self._clock())

        def on_error(reason: str) -> None:
            if out.awaited:
                c.conn.on_request_error(self._clock(), req, reason)
                self.pump(c, self._clock())

        self._request(c, req.encode(), (), on_reply, on_error, now)

    def _request(self, c: ConsumedTag, message: bytes, extra: tuple[cpf.Item, ...],
                 on_reply: Callable[..., None], on_error: Callable[[str], None],
                 now: float) -> None:
        handle = c.session.send_rr(message, now, extra_items=extra)
        c.callbacks[handle] = (on_reply, on_error)
        self._pump_session(c, now)

    # ------------------------------------------------------------------ the session

    def _pump_session(self, c: ConsumedTag, now: float) -> None:
        while True:
            outs = c.session.take_outputs()
            if not outs:
                if self._write(c, now):
                    break
                continue  # the write failed: the session has more to say
            for out in outs:
                self._carry_out(c, out, now)

    def _carry_out(self, c: ConsumedTag, out: PlcSessionOutput, now: float) -> None:
        match out:
            case Transmit(data):
                if c.sock is not None:
                    c.outbuf += data
            case Connect():
                self._connect(c, now)
            case CloseSocket():
                self._close_socket(c)
            case SessionReady():
                c.conn.on_session_ready(now)
                self.pump(c, now)
            case ReplyReceived(handle, reply, items):
                cb = c.callbacks.pop(handle, None)
                if cb is not None:
                    cb[0](reply, items)
            case RequestFailed(handle, reason):
                cb = c.callbacks.pop(handle, None)
                if cb is not None:
                    cb[1](reason)
            case SessionFailed():
                c.conn.on_session_lost(now)
                self.pump(c, now)

    def _connect(self, c: ConsumedTag, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((self.local_address, 0))  # from our address: the producer answers here
            rc = sock.connect_ex((c.spec.address, c.spec.port))
        except OSError as exc:
            sock.close()
            c.session.connect_failed(f"cannot connect: {exc}", now)
            return
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            c.session.connect_failed(f"TCP connect failed: {os.strerror(rc)}", now)
            return
        c.sock, c.connecting = sock, True
        c.outbuf.clear()
        self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                               lambda mask, c=c: self._on_io(c, mask))

    def _on_io(self, c: ConsumedTag, mask: int) -> None:
        now = self._clock()
        sock = c.sock
        if sock is None:
            return
        if c.connecting:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                c.session.connect_failed(f"TCP connect failed: {os.strerror(err)}", now)
                self._pump_session(c, now)
                return
            c.connecting = False
            c.session.connected(now)
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as exc:
                c.session.connection_lost(f"TCP receive failed: {exc}", now)
                data = None
            else:
                if data:
                    c.session.receive_data(data, now)
                else:
                    c.session.connection_lost("the producer closed the TCP connection", now)
        self._pump_session(c, now)

    def _write(self, c: ConsumedTag, now: float) -> bool:
        """Write what is buffered; False when the write failed (the session was told)."""
        sock = c.sock
        if sock is None:
            return True
        if not c.connecting and c.outbuf:
            try:
                n = sock.send(c.outbuf)
                del c.outbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                c.session.connection_lost(f"TCP send failed: {exc}", now)
                return False
        events = selectors.EVENT_READ | (
            selectors.EVENT_WRITE if c.connecting or c.outbuf else 0)
        self.selector.modify(sock, events, lambda mask, c=c: self._on_io(c, mask))
        return True

    def _close_socket(self, c: ConsumedTag) -> None:
        sock, c.sock, c.connecting = c.sock, None, False
        if sock is not None:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        c.outbuf.clear()
