"""Consumed tags of the simulated controller: it opens class-1 connections to a *producer*.

A Logix controller consumes a tag from another device by opening the Forward_Open itself; the
simulator does the same to test a pyconpro worker that produces tags (docs/simulator.md
"Consumed tags"). Each consumed tag is the originator machinery the I/O worker uses, unchanged:
``acquisition.session.PlcSession`` (TCP, RegisterSession, requests) and
``acquisition.connection.ConsumerConnection`` (Forward_Open, heartbeats on absolute deadlines,
the T->O watchdog, back-off, Forward_Close), with ``acquisition.demux.Demux`` admitting the
T->O datagrams, and the worker's session socket (``workers.session_socket.SessionSocket``).
This module is their shell inside the simulator's selector loop: the heartbeats leave through
the simulator's class-1 socket (``send``), and the simulator hands each datagram that arrives
there to ``on_datagram`` first.

What it receives is recorded (``records``): receive time (wall and monotonic), the CIP sequence
count and the value decoded with the tag's type; the control command ``consumed`` returns it.
"""

from __future__ import annotations

import logging
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
from pyconpro.acquisition.session import PlcSession, SessionFailed, SessionReady
from pyconpro.workers.session_socket import SessionSocket

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
    tcp: SessionSocket  # its session to the producer (``tcp.plc``)
    decode: Callable[[bytes], Any]
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
        c: ConsumedTag  # made below, before its socket can call back

        def watch(sock: socket.socket, write: bool) -> None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
            if sock in self.selector.get_map():
                self.selector.modify(sock, events, self._on_io(c.tcp))
            else:
                self.selector.register(sock, events, self._on_io(c.tcp))

        def on_session(out: SessionReady | SessionFailed, now: float) -> None:
            if isinstance(out, SessionReady):
                c.conn.on_session_ready(now)
            else:
                c.conn.on_session_lost(now)
            self.pump(c, now)

        tcp = SessionSocket(session, self.local_address, watch=watch, unwatch=self._unwatch,
                            on_session=on_session)
        c = ConsumedTag(spec, ConsumerConnection(params, self.originator), tcp,
                        compile_decoder(typ))
        self.tags[key] = c
        c.conn.start(now)
        self.pump(c, now)
        return c

    def close(self) -> None:
        now = self._clock()
        for c in self.tags.values():
            c.tcp.close(now)

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
                 for t in (c.conn.next_deadline(), c.tcp.plc.next_deadline()) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        for c in self.tags.values():
            d = c.tcp.plc.next_deadline()
            if d is not None and d <= now:
                c.tcp.plc.on_timer(now, reconnect=c.conn.is_live)
                c.tcp.pump(now)
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

        c.tcp.request(req.encode(), extra, on_reply, on_error, now)

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

        c.tcp.request(req.encode(), (), on_reply, on_error, now)

    # ------------------------------------------------------------------ the session's socket

    def _on_io(self, tcp: SessionSocket) -> Callable[[int], None]:
        """The selector's callback of ``tcp``'s socket."""
        return lambda mask: tcp.on_io(bool(mask & selectors.EVENT_READ), self._clock())

    def _unwatch(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
