"""The originator side of one EtherNet/IP encapsulation session (one TCP connection), sans-IO.

Owns: RegisterSession / UnRegisterSession, sending unconnected CIP requests in SendRRData,
matching replies to requests by sender context, per-request timeouts, and the validation of
every reply before anything in it is used: encapsulation command, status, length, session
handle, CPF layout (null address + unconnected data), CIP reply service. The CIP *status* is
left to the caller (a failed Forward_Open is an answer, not a transport error) but is decoded.
Implements protocol.md 2.1 (header), 2.3 (status; an error reply is 24 bytes), 2.4
(RegisterSession rules), 2.7/2.8 (SendRRData CPF), 3 (reply framing) and 7.7 steps 2-3 (validate
everything; any encapsulation error or EOF ends the session so the owner reconnects and backs
off).

Calling convention (h11 style): the owner of the TCP socket calls ``start``, writes
``data_to_send()``, feeds received bytes to ``receive_data`` (``b""`` = EOF) and calls
``on_timer(now)`` at ``next_deadline()``. Each call returns a list of ``SessionEvent``. A
``Session`` lives as long as one TCP connection; reconnecting means a new ``Session``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pyconpro.acquisition import cip, cpf, encap
from pyconpro.acquisition.errors import EncapsulationError, MalformedPacket, UsageError
from pyconpro.acquisition.status import encapsulation_status_text

__all__ = [
    "ReplyReceived",
    "RequestFailed",
    "Session",
    "SessionEvent",
    "SessionFailed",
    "SessionReady",
    "SessionState",
]


class SessionState(enum.StrEnum):
    IDLE = "IDLE"  # created, RegisterSession not sent
    REGISTERING = "REGISTERING"  # RegisterSession sent; requests are queued
    READY = "READY"  # session handle known
    CLOSED = "CLOSED"  # UnRegisterSession sent / closed by us
    FAILED = "FAILED"  # peer fault or EOF: the owner closes the TCP socket and backs off


@dataclass(frozen=True, slots=True)
class SessionReady:
    handle: int


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """A validated reply to request ``handle``; ``items`` are the CPF items after the
    unconnected data item (e.g. sockaddr info items of a Forward_Open reply)."""

    handle: int
    reply: cip.Reply
    items: tuple[cpf.Item, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestFailed:
    handle: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionFailed:
    reason: str
    encapsulation_status: int | None = None


SessionEvent = SessionReady | ReplyReceived | RequestFailed | SessionFailed

_CONTEXT = struct.Struct("<Q")


@dataclass(slots=True)
class _Pending:
    handle: int
    service: int
    command: int
    frame: bytes  # unsent until READY (requests made while REGISTERING are queued)
    deadline: float
    sent: bool = False
    # A successful Unconnected_Send is answered with the embedded service's reply (protocol.md
    # 5.11), so a routed request accepts that service too.
    embedded_service: int | None = None


def _embedded_service(message: bytes) -> int | None:
    """The service of the request an Unconnected_Send carries, or None for other requests."""
    if message[0] != cip.Service.UNCONNECTED_SEND:
        return None
    try:
        inner = cip.UnconnectedSend.decode(cip.Request.decode(message).data).message
    except MalformedPacket:
        return None
    return inner[0] & 0x7F if inner else None


class Session:
    """One encapsulation session, originator side. See the module docstring."""

    def __init__(self, *, request_timeout: float = 10.0, context_base: int = 0) -> None:
        if request_timeout <= 0:
            raise UsageError("request_timeout must be positive seconds")
        self.request_timeout = request_timeout
        self.state = SessionState.IDLE
        self.handle = 0
        self.failure: str | None = None
        self.unmatched_replies = 0
        self._frames = encap.FrameBuffer()
        self._out = bytearray()
        self._next_context = context_base & 0xFFFF_FFFF_FFFF_FFFF
        self._pending: dict[bytes, _Pending] = {}
        self._handles = 0
        self._register_context = b""
        self._register_deadline: float | None = None

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _context(self) -> bytes:
        self._next_context = (self._next_context + 1) & 0xFFFF_FFFF_FFFF_FFFF
        return _CONTEXT.pack(self._next_context)

    # ------------------------------------------------------------------ requests

    def start(self, now: float) -> None:
        """Queue RegisterSession (protocol.md 2.4): version 1, options 0, session 0."""
        if self.state is not SessionState.IDLE:
            raise UsageError(f"session already started ({self.state})")
        self._register_context = self._context()
        self._out += encap.EncapsulationPacket(
            encap.Command.REGISTER_SESSION, encap.RegisterSessionData().encode(), 0, 0,
            self._register_context,
        ).encode()
        self._register_deadline = now + self.request_timeout
        self.state = SessionState.REGISTERING

    def send_rr(self, message: bytes, now: float, *, extra_items: tuple[cpf.Item, ...] = (),
                timeout: float | None = None) -> int:
        """Queue one unconnected CIP request; returns the handle its answer will carry.

        While REGISTERING it waits for the session handle; on a closed or failed session it
        raises UsageError (the owner must make a new Session)."""
        if self.state not in (SessionState.REGISTERING, SessionState.READY):
            raise UsageError(f"cannot send on a session that is {self.state}")
        if not message:
            raise UsageError("empty CIP message")
        self._handles += 1
        context = self._context()
        p = _Pending(self._handles, message[0], encap.Command.SEND_RR_DATA,
                     encap.send_rr_data(message, extra_items), now + (timeout or
                                                                      self.request_timeout),
                     embedded_service=_embedded_service(message))
        self._pending[context] = p
        if self.state is SessionState.READY:
            self._send(context, p)
        return p.handle

    def _send(self, context: bytes, p: _Pending) -> None:
        self._out += encap.EncapsulationPacket(p.command, p.frame, self.handle, 0,
                                               context).encode()
        p.sent = True

    def keepalive(self) -> None:
        """Queue a NOP (no reply, 2.2) so an idle session survives the target's encapsulation
        inactivity timeout and stays usable for Forward_Close (protocol.md 7.7 step 8)."""
        if self.state is SessionState.READY:
            self._out += encap.EncapsulationPacket(encap.Command.NOP, b"", self.handle, 0,
                                                   bytes(8)).encode()

    def close(self) -> list[SessionEvent]:
        """Queue UnRegisterSession (no reply is expected, 2.2) and fail what is pending."""
        events: list[SessionEvent] = []
        if self.state is SessionState.READY:
            self._out += encap.EncapsulationPacket(encap.Command.UNREGISTER_SESSION, b"",
                                                   self.handle, 0, self._context()).encode()
        if self.state in (SessionState.REGISTERING, SessionState.READY, SessionState.IDLE):
            events = self._fail_pending("session closed")
            self.state = SessionState.CLOSED
        return events

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes, now: float) -> list[SessionEvent]:
        if self.state in (SessionState.CLOSED, SessionState.FAILED):
            return []
        if not data:
            return self._failed("the PLC closed the TCP connection")
        try:
            packets = self._frames.feed(data)
        except MalformedPacket as exc:
            return self._failed(f"unparseable encapsulation frame: {exc}")
        events: list[SessionEvent] = []
        for packet in packets:
            events += self._handle(packet)
            if self.state is SessionState.FAILED:
                break
        return events

    def connection_lost(self, reason: str) -> list[SessionEvent]:
        if self.state in (SessionState.CLOSED, SessionState.FAILED):
            return []
        return self._failed(reason)

    def _handle(self, packet: encap.EncapsulationPacket) -> list[SessionEvent]:
        if self.state is SessionState.REGISTERING:
            return self._handle_register(packet)
        pending = self._pending.get(packet.context)
        if pending is None or not pending.sent:
            # A reply to a request that timed out, or garbage: never used, only counted.
            self.unmatched_replies += 1
            return []
        del self._pending[packet.context]
        if packet.command != pending.command:
            return [RequestFailed(pending.handle, "reply with the wrong command"),
                    *self._failed(f"reply command 0x{packet.command:04X} to a request 0x"
                                  f"{pending.command:04X}")]
        if packet.status != 0:
            err = EncapsulationError(packet.status, packet.command)
            return [RequestFailed(pending.handle, str(err)),
                    *self._failed(f"{err}: reconnecting", packet.status)]
        if packet.session != self.handle:
            return [RequestFailed(pending.handle, "reply for another session"),
                    *self._failed(f"reply carries session 0x{packet.session:08X}, ours is"
                                  f" 0x{self.handle:08X}")]
        try:
            data = encap.SendData.decode(packet.data)
            message = data.unconnected()
            reply = cip.Reply.decode(message)
        except MalformedPacket as exc:
            return [RequestFailed(pending.handle, f"malformed SendRRData reply: {exc}")]
        if reply.service not in (pending.service & 0x7F, pending.embedded_service):
            return [RequestFailed(pending.handle,
                                  f"reply service 0x{reply.service | 0x80:02X} to request"
                                  f" service 0x{pending.service:02X}")]
        return [ReplyReceived(pending.handle, reply, data.items[2:])]

    def _handle_register(self, packet: encap.EncapsulationPacket) -> list[SessionEvent]:
        if packet.context != self._register_context:
            self.unmatched_replies += 1
            return []
        if packet.command != encap.Command.REGISTER_SESSION:
            return self._failed(f"RegisterSession answered with command 0x{packet.command:04X}")
        if packet.status != 0:
            return self._failed(
                f"RegisterSession refused: encapsulation status 0x{packet.status:04X}"
                f" {encapsulation_status_text(packet.status)}", packet.status)
        if len(packet.data) != 4:
            return self._failed(f"RegisterSession reply of {len(packet.data)} data bytes, not 4")
        try:
            body = encap.RegisterSessionData.decode(packet.data)
        except MalformedPacket as exc:  # pragma: no cover - length checked above
            return self._failed(str(exc))
        if body.protocol_version != 1:
            return self._failed(f"RegisterSession reply with protocol version"
                                f" {body.protocol_version}")
        if packet.session == 0:
            return self._failed("RegisterSession reply without a session handle (0)")
        self.handle = packet.session
        self.state = SessionState.READY
        self._register_deadline = None
        for context, p in self._pending.items():
            self._send(context, p)
        return [SessionReady(self.handle)]

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        if self.state is SessionState.REGISTERING:
            return self._register_deadline
        if self.state is SessionState.READY and self._pending:
            return min(p.deadline for p in self._pending.values())
        return None

    def on_timer(self, now: float) -> list[SessionEvent]:
        if self.state is SessionState.REGISTERING:
            if self._register_deadline is not None and now >= self._register_deadline:
                return self._failed(f"no RegisterSession reply within {self.request_timeout:g} s")
            return []
        if self.state is not SessionState.READY:
            return []
        expired = [c for c, p in self._pending.items() if now >= p.deadline]
        if not expired:
            return []
        # A target that stops answering is unusable: fail the session so the owner reconnects.
        return self._failed(f"no reply within {self.request_timeout:g} s")

    # ------------------------------------------------------------------ failure

    def _fail_pending(self, reason: str) -> list[SessionEvent]:
        events: list[SessionEvent] = [RequestFailed(p.handle, reason)
                                      for p in self._pending.values()]
        self._pending.clear()
        return events

    def _failed(self, reason: str, status: int | None = None) -> list[SessionEvent]:
        self.state = SessionState.FAILED
        self.failure = reason
        events = self._fail_pending(reason)
        events.append(SessionFailed(reason, status))
        return events

    @property
    def pending(self) -> int:
        return len(self._pending)
