"""The originator side of the EtherNet/IP encapsulation session to one PLC, sans-IO.

Two machines, one inside the other:

``Session`` is one encapsulation session (one TCP connection). It owns RegisterSession /
UnRegisterSession, sending unconnected CIP requests in SendRRData (matched to their replies by
sender context), class-3 connected requests in SendUnitData (matched by T->O connection id and
CIP sequence count, protocol.md 10.2 row 5), ListIdentity over TCP (2.5, matched by sender
context), per-request timeouts, and the validation of every reply before anything in it is
used: encapsulation command, status, length, session handle, CPF layout (null address +
unconnected data, or connected address + connected data), CIP reply service. The CIP *status*
is left to the caller (a failed Forward_Open is an answer, not a transport error) but is
decoded. Implements protocol.md 2.1 (header), 2.3 (status; an error reply is 24 bytes), 2.4
(RegisterSession rules), 2.7/2.8 (SendRRData / SendUnitData CPF), 3 (reply framing) and 7.7
steps 2-3 (validate everything; any encapsulation error or EOF ends the session so the owner
reconnects and backs off). A failure caused by an encapsulation status carries that status and
the command of the reply (``SessionFailed.encapsulation_status`` / ``encapsulation_command``).

``PlcSession`` is the life of the session to one PLC across TCP connections: connect on demand,
a fresh ``Session`` per TCP connection, a bounded TCP connect (``connect_timeout``), a NOP
keep-alive while idle (protocol.md 7.7 step 8), reconnect after a failure on a short, capped,
jittered schedule (7.7 step 6: reachability attempts are cheap, so the cap is a few seconds at
most and a PLC that comes back is found at once), refusing requests while backing off, and a
bound on the requests in flight (``max_in_flight``: when hundreds of consumers reopen at once
after an outage, their Forward_Opens go out as earlier ones are answered, not all at once). When
the session fails, ``SessionFailed`` comes before the ``RequestFailed`` of the requests it took
with it, so the owner knows why they failed (its consumers then wait for the session instead of
backing off each on its own). The I/O worker owns the socket and carries out its ``Connect`` /
``Transmit`` / ``CloseSocket`` actions.

Both follow the one shape of ARCHITECTURE.md: inputs are method calls that take ``now`` and
return None (``send_rr``, ``send_connected`` and ``list_identity`` return the handle their
answer will carry, an id, not an output); everything to do or to know is drained in order with
``take_outputs()``: ``Transmit`` (bytes for the TCP socket), ``SessionReady``,
``ReplyReceived``, ``IdentityReceived``, ``RequestFailed``, ``SessionFailed`` (and
for ``PlcSession`` also ``Connect`` and ``CloseSocket``); the timer is ``next_deadline()`` +
``on_timer(now)``. States are enums, transitions the tables ``TRANSITIONS`` and
``PLC_TRANSITIONS``, changed only by ``_transition``.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from pyconpro.acquisition import cip, cpf, encap
from pyconpro.acquisition.errors import EncapsulationError, MalformedPacket, UsageError
from pyconpro.acquisition.originator import BackoffPolicy, Rng
from pyconpro.acquisition.status import encapsulation_status_text

__all__ = [
    "PLC_TRANSITIONS",
    "TRANSITIONS",
    "CloseSocket",
    "Connect",
    "IdentityReceived",
    "PlcSession",
    "PlcSessionOutput",
    "PlcState",
    "ReplyReceived",
    "RequestFailed",
    "Session",
    "SessionFailed",
    "SessionOutput",
    "SessionReady",
    "SessionState",
    "Transmit",
]


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Transmit:
    """Action: write ``data`` to the session's TCP socket (in order, after earlier ones)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Connect:
    """Action: open a TCP connection to ``(host, port)``; answer with ``connected(now)`` or
    ``connect_failed(reason, now)``. ``Transmit`` outputs that follow are buffered by the
    shell until the connection is up (RegisterSession is queued at once)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Action: close the TCP socket. ``flush``: write what is buffered first (blocking,
    briefly: UnRegisterSession has no reply); otherwise drop it (the connection is broken)."""

    flush: bool


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
class IdentityReceived:
    """The validated reply to ListIdentity request ``handle``: the target's identity item."""

    handle: int
    identity: cpf.IdentityItem


@dataclass(frozen=True, slots=True)
class RequestFailed:
    handle: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """The session ended by a fault. From a ``PlcSession``: ``retry_in`` is the back-off
    (seconds) before it reconnects, ``retry_at`` the absolute time. A reply with a non-zero
    encapsulation status gives ``encapsulation_status`` and the reply's command
    (``encapsulation_command``), enough to rebuild the ``EncapsulationError``."""

    reason: str
    encapsulation_status: int | None = None
    retry_in: float | None = None
    retry_at: float | None = None
    encapsulation_command: int | None = None


SessionOutput = (Transmit | SessionReady | ReplyReceived | IdentityReceived | RequestFailed
                 | SessionFailed)
PlcSessionOutput = SessionOutput | Connect | CloseSocket


# --------------------------------------------------------------------------- Session


class SessionState(enum.StrEnum):
    IDLE = "IDLE"  # created, RegisterSession not sent
    REGISTERING = "REGISTERING"  # RegisterSession sent; requests are queued
    READY = "READY"  # session handle known
    CLOSED = "CLOSED"  # UnRegisterSession sent / closed by us
    FAILED = "FAILED"  # peer fault or EOF: the owner closes the TCP socket and backs off


class _Trigger(enum.StrEnum):
    START = "RegisterSession sent"
    REGISTERED = "RegisterSession answered"
    FAULT = "peer fault, EOF or timeout"
    CLOSE = "closed by the owner"


_S, _T = SessionState, _Trigger
#: (state, trigger) -> next state of a ``Session``. Anything not listed is not a transition.
TRANSITIONS: Mapping[tuple[SessionState, _Trigger], SessionState] = {
    (_S.IDLE, _T.START): _S.REGISTERING,
    (_S.IDLE, _T.FAULT): _S.FAILED,
    (_S.IDLE, _T.CLOSE): _S.CLOSED,
    (_S.REGISTERING, _T.REGISTERED): _S.READY,
    (_S.REGISTERING, _T.FAULT): _S.FAILED,
    (_S.REGISTERING, _T.CLOSE): _S.CLOSED,
    (_S.READY, _T.FAULT): _S.FAILED,
    (_S.READY, _T.CLOSE): _S.CLOSED,
}
del _S, _T

_CONTEXT = struct.Struct("<Q")
#: How a pending request is found again: its sender context (SendRRData, ListIdentity), or the
#: T->O connection id and CIP sequence count its SendUnitData reply echoes.
_Key = bytes | tuple[int, int]


@dataclass(slots=True)
class _Pending:
    handle: int
    service: int
    command: int
    frame: bytes  # unsent until READY (requests made while REGISTERING are queued)
    deadline: float
    context: bytes  # sender context of the request frame
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
    """One encapsulation session, originator side, for the life of one TCP connection
    (reconnecting means a new ``Session``). See the module docstring."""

    def __init__(self, *, request_timeout: float = 10.0, context_base: int = 0) -> None:
        if request_timeout <= 0:
            raise UsageError("request_timeout must be positive seconds")
        self.request_timeout = request_timeout
        self.state = SessionState.IDLE
        self.handle = 0
        self.failure: str | None = None
        self.unmatched_replies = 0
        self._frames = encap.FrameBuffer()
        self._outputs: list[SessionOutput] = []
        self._next_context = context_base & 0xFFFF_FFFF_FFFF_FFFF
        self._pending: dict[_Key, _Pending] = {}
        self._sequences: dict[int, int] = {}  # O->T connection id -> last sequence count
        self._handles = 0
        self._register_context = b""
        self._register_deadline: float | None = None

    # ------------------------------------------------------------------ plumbing

    def take_outputs(self) -> list[SessionOutput]:
        out, self._outputs = self._outputs, []
        return out

    def _emit(self, item: SessionOutput) -> None:
        self._outputs.append(item)

    def _transmit(self, data: bytes) -> None:
        # Bytes queued back to back go out as one write.
        if self._outputs and isinstance(self._outputs[-1], Transmit):
            self._outputs[-1] = Transmit(self._outputs[-1].data + data)
        else:
            self._outputs.append(Transmit(data))

    def _transition(self, trigger: _Trigger) -> None:
        """The single place that changes ``state``."""
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise UsageError(f"session: no transition from {self.state} on {trigger!r}")
        self.state = target

    def _context(self) -> bytes:
        self._next_context = (self._next_context + 1) & 0xFFFF_FFFF_FFFF_FFFF
        return _CONTEXT.pack(self._next_context)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ requests

    def start(self, now: float) -> None:
        """Queue RegisterSession (protocol.md 2.4): version 1, options 0, session 0."""
        if self.state is not SessionState.IDLE:
            raise UsageError(f"session already started ({self.state})")
        self._register_context = self._context()
        self._transmit(encap.EncapsulationPacket(
            encap.Command.REGISTER_SESSION, encap.RegisterSessionData().encode(), 0, 0,
            self._register_context,
        ).encode())
        self._register_deadline = now + self.request_timeout
        self._transition(_Trigger.START)

    def send_rr(self, message: bytes, now: float, *, extra_items: tuple[cpf.Item, ...] = (),
                timeout: float | None = None) -> int:
        """Queue one unconnected CIP request; returns the handle its answer will carry.

        While REGISTERING it waits for the session handle; on a closed or failed session it
        raises UsageError (the owner must make a new Session)."""
        self._check_open()
        if not message:
            raise UsageError("empty CIP message")
        return self._queue(None, message[0], encap.Command.SEND_RR_DATA,
                           encap.send_rr_data(message, extra_items), now, timeout,
                           _embedded_service(message))

    def send_connected(self, message: bytes, now: float, *, ot_connection_id: int,
                       to_connection_id: int, timeout: float | None = None) -> int:
        """Queue one CIP request on a class-3 connection (SendUnitData, protocol.md 10.2 row
        5): addressed to ``ot_connection_id``, with the connection's next 16-bit sequence count
        (1, 2, ... per O->T id); its reply must come on ``to_connection_id`` echoing that
        count. Returns the handle its answer will carry."""
        self._check_open()
        if not message:
            raise UsageError("empty CIP message")
        seq = (self._sequences.get(ot_connection_id, 0) + 1) & 0xFFFF
        self._sequences[ot_connection_id] = seq
        return self._queue((to_connection_id, seq), message[0], encap.Command.SEND_UNIT_DATA,
                           encap.send_unit_data(ot_connection_id, seq, message), now, timeout)

    def list_identity(self, now: float, *, timeout: float | None = None) -> int:
        """Queue ListIdentity over this TCP connection (protocol.md 2.5; what pycomm3 does at
        open). Answered by ``IdentityReceived`` or ``RequestFailed``."""
        return self._queue(None, 0, encap.Command.LIST_IDENTITY, b"", now, timeout)

    def _check_open(self) -> None:
        if self.state not in (SessionState.REGISTERING, SessionState.READY):
            raise UsageError(f"cannot send on a session that is {self.state}")

    def _queue(self, key: tuple[int, int] | None, service: int, command: int, frame: bytes,
               now: float, timeout: float | None, embedded: int | None = None) -> int:
        """Queue one request (sent at once when READY, else once registered); ``key``: how its
        reply is found (None: by a fresh sender context)."""
        self._check_open()
        self._handles += 1
        context = self._context()
        p = _Pending(self._handles, service, command, frame,
                     now + (timeout or self.request_timeout), context,
                     embedded_service=embedded)
        self._pending[context if key is None else key] = p
        if self.state is SessionState.READY:
            self._send(p)
        return p.handle

    def _send(self, p: _Pending) -> None:
        self._transmit(encap.EncapsulationPacket(p.command, p.frame, self.handle, 0,
                                                 p.context).encode())
        p.sent = True

    def keepalive(self, now: float) -> None:
        """Queue a NOP (no reply, 2.2) so an idle session survives the target's encapsulation
        inactivity timeout and stays usable for Forward_Close (protocol.md 7.7 step 8)."""
        if self.state is SessionState.READY:
            self._transmit(encap.EncapsulationPacket(encap.Command.NOP, b"", self.handle, 0,
                                                     bytes(8)).encode())

    def close(self, now: float) -> None:
        """Queue UnRegisterSession (no reply is expected, 2.2) and fail what is pending."""
        if self.state is SessionState.READY:
            self._transmit(encap.EncapsulationPacket(encap.Command.UNREGISTER_SESSION, b"",
                                                     self.handle, 0, self._context()).encode())
        if self.state in (SessionState.REGISTERING, SessionState.READY, SessionState.IDLE):
            self._fail_pending("session closed")
            self._transition(_Trigger.CLOSE)

    # ------------------------------------------------------------------ input

    @property
    def failed(self) -> bool:
        return self.state is SessionState.FAILED

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the TCP socket; ``b""`` is EOF."""
        if self.state in (SessionState.CLOSED, SessionState.FAILED):
            return
        if not data:
            self._failed("the PLC closed the TCP connection")
            return
        try:
            packets = self._frames.feed(data)
        except MalformedPacket as exc:
            self._failed(f"unparseable encapsulation frame: {exc}")
            return
        for packet in packets:
            self._handle(packet)
            if self.failed:
                break

    def connection_lost(self, reason: str, now: float) -> None:
        if self.state in (SessionState.CLOSED, SessionState.FAILED):
            return
        self._failed(reason)

    def _handle(self, packet: encap.EncapsulationPacket) -> None:
        if self.state is SessionState.REGISTERING:
            self._handle_register(packet)
            return
        if packet.command == encap.Command.SEND_UNIT_DATA and self._connected_pending():
            self._handle_connected(packet)
            return
        pending = self._pending.get(packet.context)
        if pending is None or not pending.sent:
            # A reply to a request that timed out, or garbage: never used, only counted.
            self.unmatched_replies += 1
            return
        del self._pending[packet.context]
        if packet.command != pending.command:
            self._emit(RequestFailed(pending.handle, "reply with the wrong command"))
            self._failed(f"reply command 0x{packet.command:04X} to a request 0x"
                         f"{pending.command:04X}")
            return
        if packet.status != 0:
            err = EncapsulationError(packet.status, packet.command)
            self._emit(RequestFailed(pending.handle, str(err)))
            self._failed(f"{err}: reconnecting", packet.status, packet.command)
            return
        if pending.command == encap.Command.LIST_IDENTITY:
            self._handle_identity(pending, packet)  # any session handle (2.5: no session needed)
            return
        if packet.session != self.handle:
            self._emit(RequestFailed(pending.handle, "reply for another session"))
            self._failed(f"reply carries session 0x{packet.session:08X}, ours is"
                         f" 0x{self.handle:08X}")
            return
        try:
            data = encap.SendData.decode(packet.data)
            message = data.unconnected()
            reply = cip.Reply.decode(message)
        except MalformedPacket as exc:
            self._emit(RequestFailed(pending.handle, f"malformed SendRRData reply: {exc}"))
            return
        if reply.service not in (pending.service & 0x7F, pending.embedded_service):
            self._emit(RequestFailed(pending.handle,
                                     f"reply service 0x{reply.service | 0x80:02X} to request"
                                     f" service 0x{pending.service:02X}"))
            return
        self._emit(ReplyReceived(pending.handle, reply, data.items[2:]))

    def _connected_pending(self) -> list[tuple[int, int]]:
        return [key for key in self._pending if isinstance(key, tuple)]

    def _handle_connected(self, packet: encap.EncapsulationPacket) -> None:
        """A SendUnitData reply while class-3 requests are pending. It names its request only
        inside its CPF (connection id, sequence count), so a reply that cannot be matched is a
        fault of the session, not of one request."""
        keys = self._connected_pending()
        if packet.status != 0:
            err = EncapsulationError(packet.status, packet.command)
            self._failed(f"{err}: reconnecting", packet.status, packet.command)
            return
        if packet.session != self.handle:
            self._failed(f"reply carries session 0x{packet.session:08X}, ours is"
                         f" 0x{self.handle:08X}")
            return
        try:
            conn_id, seq, body = encap.SendData.decode(packet.data).connected()
        except MalformedPacket as exc:
            self._failed(f"SendUnitData reply: {exc}")
            return
        ours = sorted({c for c, _ in keys})
        if conn_id not in ours:
            self._failed(f"SendUnitData reply on connection 0x{conn_id:08X}, ours is "
                         + ", ".join(f"0x{c:08X}" for c in ours))
            return
        pending = self._pending.pop((conn_id, seq), None)
        if pending is None:
            expected = sorted(s for c, s in keys if c == conn_id)
            self._failed(f"SendUnitData reply with sequence {seq}, expected "
                         + ", ".join(str(s) for s in expected))
            return
        try:
            reply = cip.Reply.decode(body)
        except MalformedPacket as exc:
            self._emit(RequestFailed(pending.handle, f"malformed SendUnitData reply: {exc}"))
            return
        if reply.service != pending.service & 0x7F:
            self._emit(RequestFailed(pending.handle,
                                     f"reply service 0x{reply.service | 0x80:02X} to request"
                                     f" service 0x{pending.service:02X}"))
            return
        self._emit(ReplyReceived(pending.handle, reply))

    def _handle_identity(self, pending: _Pending, packet: encap.EncapsulationPacket) -> None:
        try:
            items = cpf.decode_items(packet.data, 0, context="ListIdentity reply")
        except MalformedPacket as exc:
            self._emit(RequestFailed(pending.handle, str(exc)))
            return
        for item in items:
            if isinstance(item, cpf.IdentityItem):
                self._emit(IdentityReceived(pending.handle, item))
                return
        self._emit(RequestFailed(pending.handle, "ListIdentity reply without an identity item"))

    def _handle_register(self, packet: encap.EncapsulationPacket) -> None:
        if packet.context != self._register_context:
            self.unmatched_replies += 1
            return
        if packet.command != encap.Command.REGISTER_SESSION:
            self._failed(f"RegisterSession answered with command 0x{packet.command:04X}")
            return
        if packet.status != 0:
            self._failed(f"RegisterSession refused: encapsulation status 0x{packet.status:04X}"
                         f" {encapsulation_status_text(packet.status)}", packet.status,
                         packet.command)
            return
        if len(packet.data) != 4:
            self._failed(f"RegisterSession reply of {len(packet.data)} data bytes, not 4")
            return
        try:
            body = encap.RegisterSessionData.decode(packet.data)
        except MalformedPacket as exc:  # pragma: no cover - length checked above
            self._failed(str(exc))
            return
        if body.protocol_version != 1:
            self._failed(f"RegisterSession reply with protocol version {body.protocol_version}")
            return
        if packet.session == 0:
            self._failed("RegisterSession reply without a session handle (0)")
            return
        self.handle = packet.session
        self._transition(_Trigger.REGISTERED)
        self._register_deadline = None
        self._emit(SessionReady(self.handle))
        for p in self._pending.values():
            self._send(p)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        if self.state is SessionState.REGISTERING:
            return self._register_deadline
        if self.state is SessionState.READY and self._pending:
            return min(p.deadline for p in self._pending.values())
        return None

    def on_timer(self, now: float) -> None:
        if self.state is SessionState.REGISTERING:
            if self._register_deadline is not None and now >= self._register_deadline:
                self._failed(f"no RegisterSession reply within {self.request_timeout:g} s")
            return
        if self.state is not SessionState.READY:
            return
        if any(now >= p.deadline for p in self._pending.values()):
            # A target that stops answering is unusable: fail the session so the owner
            # reconnects.
            self._failed(f"no reply within {self.request_timeout:g} s")

    # ------------------------------------------------------------------ failure

    def _fail_pending(self, reason: str) -> None:
        for p in self._pending.values():
            self._emit(RequestFailed(p.handle, reason))
        self._pending.clear()

    def _failed(self, reason: str, status: int | None = None,
                command: int | None = None) -> None:
        self._transition(_Trigger.FAULT)
        self.failure = reason
        self._fail_pending(reason)
        self._emit(SessionFailed(reason, status, encapsulation_command=command))


# --------------------------------------------------------------------------- PlcSession


class PlcState(enum.StrEnum):
    IDLE = "IDLE"  # no TCP connection; the next request connects
    CONNECTING = "CONNECTING"  # Connect asked, RegisterSession queued behind it
    REGISTERING = "REGISTERING"  # TCP connected, RegisterSession sent
    READY = "READY"  # session registered: requests go out, NOP keep-alive while idle
    BACKOFF = "BACKOFF"  # failed: requests are refused until ``retry_at``, then it reconnects
    CLOSED = "CLOSED"  # closed by the owner (UnRegisterSession); terminal


class _PlcTrigger(enum.StrEnum):
    CONNECT = "connect"
    TCP_UP = "TCP connected"
    REGISTERED = "session registered"
    FAILED = "session failed"
    RETRY_IDLE = "back-off over, nobody needs the session now"
    CLOSE = "closed by the owner"


_P, _PT = PlcState, _PlcTrigger
#: (state, trigger) -> next state of a ``PlcSession``. Anything not listed is not a transition.
PLC_TRANSITIONS: Mapping[tuple[PlcState, _PlcTrigger], PlcState] = {
    (_P.IDLE, _PT.CONNECT): _P.CONNECTING,
    (_P.BACKOFF, _PT.CONNECT): _P.CONNECTING,  # back-off over (timer or request), or forced
    (_P.BACKOFF, _PT.RETRY_IDLE): _P.IDLE,
    (_P.CONNECTING, _PT.TCP_UP): _P.REGISTERING,
    (_P.CONNECTING, _PT.FAILED): _P.BACKOFF,
    (_P.REGISTERING, _PT.REGISTERED): _P.READY,
    (_P.REGISTERING, _PT.FAILED): _P.BACKOFF,
    (_P.READY, _PT.FAILED): _P.BACKOFF,
    **{(state, _PT.CLOSE): _P.CLOSED for state in _P if state is not _P.CLOSED},
}
del _P, _PT


@dataclass(frozen=True, slots=True)
class _Held:
    """A request waiting for a place among the requests in flight (``max_in_flight``)."""

    handle: int
    message: bytes
    extra_items: tuple[cpf.Item, ...]
    timeout: float | None


class PlcSession:
    """The encapsulation session to one PLC across TCP connections (see the module docstring).

    Requests (``send_rr``) connect on demand; while backing off they fail at once with
    ``RequestFailed`` ("no session to PLC ... reconnecting in ...") unless ``force`` (a
    Forward_Close at stop needs a session whatever the back-off says). When the back-off is
    over ``on_timer`` reconnects ahead of need (``reconnect=True``: the owner has live users),
    else the session waits, IDLE, for the next request. ``SessionReady`` tells the owner when
    requests can go out (its users wait for it); ``SessionFailed`` carries the back-off and
    comes before the failures of the requests the session took with it.

    ``backoff`` is the reconnect schedule (the pipeline's ``reconnect_min_s`` /
    ``reconnect_max_s``), ``connect_timeout`` bounds one TCP connect, ``max_in_flight`` the
    requests handed to the TCP session at once (the others wait here, in order, and are not
    timed until they go out).
    """

    def __init__(self, host: str, port: int, *, rng: Rng, request_timeout: float = 10.0,
                 keepalive_s: float = 30.0,
                 backoff: BackoffPolicy = BackoffPolicy(0.1, 0.5, 0.25),
                 connect_timeout: float = 2.0, max_in_flight: int = 8,
                 context_rng: Rng | None = None) -> None:
        if keepalive_s <= 0:
            raise UsageError("keepalive_s must be positive seconds")
        self.host = host
        self.port = port
        self.request_timeout = request_timeout
        self.keepalive_s = keepalive_s
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.max_in_flight = max_in_flight
        self.configure(backoff=backoff, connect_timeout=connect_timeout,
                       max_in_flight=max_in_flight)
        self._rng = rng
        self._context_rng = context_rng or rng
        self.state = PlcState.IDLE
        self.session: Session | None = None  # the one of the current TCP connection
        self.attempt = 0  # back-off exponent; reset when a session registers
        self.retry_at = 0.0
        self.connect_deadline = 0.0  # while CONNECTING: give the TCP connect up then
        self.keepalive_at = 0.0
        self.sessions_opened = 0
        self.sessions_failed = 0
        self.last_failure: str | None = None
        self.down_since: float | None = None  # first failure since the session was last up
        self._outputs: list[PlcSessionOutput] = []
        self._handles = 0
        self._outer: dict[int, int] = {}  # handle of the current Session -> our handle
        self._held: deque[_Held] = deque()  # requests waiting for a place in flight

    def configure(self, *, backoff: BackoffPolicy, connect_timeout: float,
                  max_in_flight: int) -> None:
        """Set the reconnect schedule and limits (from the next attempt / request on)."""
        if connect_timeout <= 0:
            raise UsageError("connect_timeout must be positive seconds")
        if max_in_flight < 1:
            raise UsageError("max_in_flight must be at least 1 request")
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.max_in_flight = max_in_flight

    # ------------------------------------------------------------------ plumbing

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self.state is PlcState.READY

    @property
    def down(self) -> bool:
        """The last attempt failed and the next one is not due yet: a request now would fail
        at once, so users wait for ``SessionReady`` instead of asking."""
        return self.state is PlcState.BACKOFF

    @property
    def in_flight(self) -> int:
        """Requests handed to the TCP session and not answered yet."""
        return len(self._outer)

    @property
    def held(self) -> int:
        """Requests waiting for a place among those in flight."""
        return len(self._held)

    def take_outputs(self) -> list[PlcSessionOutput]:
        out, self._outputs = self._outputs, []
        return out

    def _transition(self, trigger: _PlcTrigger) -> None:
        """The single place that changes ``state``."""
        target = PLC_TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise UsageError(f"PLC {self.name}: no transition from {self.state} on {trigger!r}")
        self.state = target

    def _absorb(self, now: float, *, request_reason: str | None = None) -> None:
        """Take the current Session's outputs (translate handles, follow its state), and hand
        it held requests while there is room in flight."""
        while self.session is not None:
            self._take(self.session, now, request_reason)
            if not self._release(now):
                return

    def _take(self, session: Session, now: float, request_reason: str | None) -> None:
        failed: SessionFailed | None = None
        requests_failed: list[PlcSessionOutput] = []
        for out in session.take_outputs():
            if isinstance(out, SessionReady):
                self._transition(_PlcTrigger.REGISTERED)
                self.attempt = 0
                self.down_since = None
                self.sessions_opened += 1
                self.keepalive_at = now + self.keepalive_s
                self._outputs.append(out)
            elif isinstance(out, ReplyReceived):
                self._outputs.append(ReplyReceived(self._outer.pop(out.handle), out.reply,
                                                   out.items))
            elif isinstance(out, RequestFailed):
                requests_failed.append(RequestFailed(self._outer.pop(out.handle),
                                                     request_reason or out.reason))
            elif isinstance(out, SessionFailed):
                failed = out
            else:
                self._outputs.append(out)
        if failed is not None:
            # The session first, then the requests it took with it (and those still held):
            # whoever made them learns why before hearing that they failed.
            self._failed(failed, now)
            reason = request_reason or f"no session to PLC {self.name}: {failed.reason}"
            requests_failed += [RequestFailed(h.handle, reason) for h in self._held]
            self._held.clear()
        self._outputs.extend(requests_failed)

    def _release(self, now: float) -> bool:
        """Hand held requests to the session while fewer than ``max_in_flight`` are out;
        True when one was handed over (its outputs are then taken)."""
        session = self.session
        moved = False
        while self._held and session is not None and len(self._outer) < self.max_in_flight:
            h = self._held.popleft()
            inner = session.send_rr(h.message, now, extra_items=h.extra_items, timeout=h.timeout)
            self._outer[inner] = h.handle
            moved = True
        return moved

    def _failed(self, failed: SessionFailed, now: float) -> None:
        self.session = None
        self._outer.clear()
        self.sessions_failed += 1
        self.last_failure = failed.reason
        if self.down_since is None:
            self.down_since = now
        delay = self.backoff.delay(self.attempt, self._rng)
        self.attempt += 1
        self.retry_at = now + delay
        self._transition(_PlcTrigger.FAILED)
        self._outputs.append(SessionFailed(failed.reason, failed.encapsulation_status, delay,
                                           self.retry_at, failed.encapsulation_command))
        self._outputs.append(CloseSocket(flush=False))

    def _connect(self, now: float) -> None:
        self._transition(_PlcTrigger.CONNECT)
        self.session = Session(request_timeout=self.request_timeout,
                               context_base=self._context_rng.getrandbits(32) << 16)
        self._outer.clear()
        self.connect_deadline = now + self.connect_timeout
        self._outputs.append(Connect(self.host, self.port))
        self.session.start(now)
        self._absorb(now)

    # ------------------------------------------------------------------ inputs

    def send_rr(self, message: bytes, now: float, *, extra_items: tuple[cpf.Item, ...] = (),
                timeout: float | None = None, force: bool = False) -> int:
        """Queue one unconnected CIP request; returns the handle of its ``ReplyReceived`` or
        ``RequestFailed``. ``force``: connect now even while backing off."""
        if not message:
            raise UsageError("empty CIP message")
        self._handles += 1
        handle = self._handles
        if self.state is PlcState.CLOSED:
            self._outputs.append(RequestFailed(handle, "session closed"))
            return handle
        if self.state is PlcState.BACKOFF and now < self.retry_at and not force:
            self._outputs.append(RequestFailed(
                handle, f"no session to PLC {self.name} (last failure: {self.last_failure};"
                f" reconnecting in {self.retry_at - now:.1f} s)"))
            return handle
        if self.state in (PlcState.IDLE, PlcState.BACKOFF):
            self._connect(now)
        self._held.append(_Held(handle, message, extra_items, timeout))
        self._absorb(now)
        return handle

    def connected(self, now: float) -> None:
        """The TCP connection asked by ``Connect`` is up."""
        if self.state is PlcState.CONNECTING:
            self._transition(_PlcTrigger.TCP_UP)

    def connect_failed(self, reason: str, now: float) -> None:
        """The TCP connection asked by ``Connect`` could not be made."""
        if self.session is None:
            return
        self.session.connection_lost(reason, now)
        self._absorb(now, request_reason=f"no session to PLC {self.name}: {reason}")

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the TCP socket; ``b""`` is EOF."""
        if self.session is not None:
            self.session.receive_data(data, now)
            self._absorb(now)

    def connection_lost(self, reason: str, now: float) -> None:
        """The TCP connection broke (a send or receive error)."""
        if self.session is not None:
            self.session.connection_lost(reason, now)
            self._absorb(now)

    def close(self, now: float) -> None:
        """UnRegisterSession when registered, close the socket, fail what is pending."""
        if self.state is PlcState.CLOSED:
            return
        session, self.session = self.session, None
        rest: list[PlcSessionOutput] = []
        if session is not None:
            flush = session.state is SessionState.READY
            session.close(now)
            for out in session.take_outputs():
                if isinstance(out, Transmit):
                    self._outputs.append(out)
                elif isinstance(out, RequestFailed):
                    rest.append(RequestFailed(self._outer.pop(out.handle), out.reason))
            self._outputs.append(CloseSocket(flush=flush))
            self._outer.clear()
        rest += [RequestFailed(h.handle, "session closed") for h in self._held]
        self._held.clear()
        self._outputs.extend(rest)
        self._transition(_PlcTrigger.CLOSE)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        deadlines: list[float] = []
        if self.session is not None:
            d = self.session.next_deadline()
            if d is not None:
                deadlines.append(d)
        if self.state is PlcState.READY:
            deadlines.append(self.keepalive_at)
        elif self.state is PlcState.BACKOFF:
            deadlines.append(self.retry_at)
        elif self.state is PlcState.CONNECTING:
            deadlines.append(self.connect_deadline)
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float, *, reconnect: bool = True) -> None:
        """Request timeouts, the connect timeout, the keep-alive, the end of the back-off.
        ``reconnect``: the owner has users that will need the session, so reconnect ahead of
        need (a Forward_Close at stop needs one, protocol.md 7.7 step 8, and waiting
        consumers reopen the moment it is back); else wait, IDLE, for the next request."""
        if self.state is PlcState.CONNECTING and now >= self.connect_deadline:
            self.connect_failed(f"TCP connect to {self.name}: no answer within"
                                f" {self.connect_timeout:g} s", now)
            return
        if self.session is not None:
            self.session.on_timer(now)
            self._absorb(now)
        if self.state is PlcState.READY and now >= self.keepalive_at:
            assert self.session is not None
            self.session.keepalive(now)
            self.keepalive_at = now + self.keepalive_s
            self._absorb(now)
        elif self.state is PlcState.BACKOFF and now >= self.retry_at:
            if reconnect:
                self._connect(now)
            else:
                self._transition(_PlcTrigger.RETRY_IDLE)
