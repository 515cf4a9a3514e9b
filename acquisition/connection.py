"""The originator side of one produced-tag class-1 connection, as a sans-IO state machine.

Owns: the life of one consumer connection (size discovery, Forward_Open, heartbeats, T->O
watchdog, back-off, rejects, Forward_Close); its parameters, timing, the originator's id
allocator and the flight recorder it writes to are ``acquisition.originator``.
Implements protocol.md 5.3 (fresh triad per Forward_Open), 5.4 (watchdog = API x multiplier),
5.7 (the originator picks non-zero, unique P2P T->O ids), 5.8 (use the granted APIs, the T->O
sockaddr item for multicast), 5.9 (failure replies and their additional words), 6.5 (heartbeats
from right after the reply, on absolute deadlines), 7.6 (which rejects are permanent) and 7.7
(the robust originator algorithm: back-off with jitter and a cap, retry after the old
connection's timeout, Forward_Close on every stop).

No I/O: every input is a method call that takes ``now`` (seconds, monotonic). What the caller
must do is queued as ``Output`` values and collected with ``take_outputs()``; the caller asks
``next_deadline()`` when to call ``on_timer(now)`` next (the aioquic pattern, STYLE.md #2).

States (``State``) and their transitions are the data table ``TRANSITIONS``; ``_transition`` is
the single place that changes ``state`` and it emits exactly one ``ConnEvent`` per transition.

A type the user gave is kept for the life of the connection (its size is the one opened
with). Without one, the type is the controller's: it is learned (RESOLVING) before the first
Forward_Open, also when a size was given, since that size is only a check: a given size that
is not the learned type's is replaced by the type's size (the size a Logix produces,
protocol.md 9.4; the seed's ``datasize`` counted the sequence count, so ``size = 6`` on a REAL
is a common mistake), with one warning naming both sizes and the fix. Only where the type
cannot be learned (a device that refuses the tag listing, a listing past its limits, no
answer) does a given size open the connection without it: the samples then carry the raw bytes
and no value. A size the controller refuses (0x0109/0x0128 with the size it produces) makes the
connection learn the type once more and adopt the wanted size if it is the type's, else FAILED
naming every size. A learned type is only as good as the controller's tag table, which a
download replaces: after anything that may hide one (T->O watchdog, a failed request, a lost
session, a 0x0109/0x0128 size reject) the next attempt goes through RESOLVING again, and a
changed type is announced ("tag type changed after a download: 32 -> 40 bytes") so the caller
rebuilds its decoder (issue 6; protocol.md 9.4).

The connection needs the PLC's encapsulation session for everything but the class-1 data
(size discovery, Forward_Open, Forward_Close). The caller says when that session is lost and
when it is back (``on_session_lost`` / ``on_session_ready``); while it is down, a connection
that would send a request waits in WAITING, without growing its back-off (a request then would
only fail at once with "no session"), and opens the moment the session is back. Back-off stays
for what the PLC itself refuses (protocol.md 7.7 step 5).

Every interruption of the data (a T->O watchdog expiry, whatever the reopen takes, a session
loss behind it, a restart of the worker reported through ``start(outage_since=...)``) is an
*outage*: it begins at the receive time of the last datagram before it and ends at the first
one after it (``OutageEnded``, with the samples the RPI promised in between), or when the
connection is stopped before the data came back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pyconpro.acquisition import assembly as asm
from pyconpro.acquisition import cip, class1, cm, cpf
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_types import LogixType, StructType, byte_size
from pyconpro.acquisition.originator import (
    BackoffPolicy,
    ConsumerParams,
    FlightRecorder,
    Originator,
    Timing,
)
from pyconpro.acquisition.source_time import SourceTime, SourceTimeError, locate
from pyconpro.acquisition.status import (
    describe_cip_status,
    extended_status_text,
    general_status_text,
)
from pyconpro.acquisition.wire import OutageCause

__all__ = [
    "TRANSITIONS",
    "ConnEvent",
    "ConsumerConnection",
    "JoinGroup",
    "LeaveGroup",
    "Listen",
    "Output",
    "OutageEnded",
    "RejectClass",
    "Resolve",
    "SendForwardClose",
    "SendForwardOpen",
    "SendHeartbeat",
    "State",
    "Trigger",
    "Unlisten",
    "classify_reject",
]


# --------------------------------------------------------------------------- states and table


class State(enum.StrEnum):
    IDLE = "IDLE"  # created, not started
    RESOLVING = "RESOLVING"  # learning the tag's type/size by explicit messaging (9.4)
    OPENING = "OPENING"  # Forward_Open sent, waiting for the reply
    RUNNING = "RUNNING"  # connection open: heartbeats out, data in
    CLOSING = "CLOSING"  # Forward_Close sent on stop, waiting for the reply
    BACKOFF = "BACKOFF"  # waiting before the next attempt
    WAITING = "WAITING"  # the PLC's session is down: wait for it, then open at once
    FAILED = "FAILED"  # permanent error (configuration); only stop() leaves it
    CLOSED = "CLOSED"  # stopped; terminal


class Trigger(enum.StrEnum):
    START_RESOLVE = "start, type to learn"
    START_OPEN = "start, type given or nothing to learn"
    RESOLVED = "type and size learned"
    RESOLVE_FAILED = "type discovery failed (transient)"
    RESOLVE_FATAL = "type discovery failed (permanent)"
    OPEN_UNTYPED = "type discovery failed, a size was given: open without the type"
    OPENED = "Forward_Open accepted"
    REOPEN_NOW = "Forward_Open rejected, retry at once with new values"
    REJECTED = "Forward_Open rejected (transient)"
    REJECTED_FATAL = "Forward_Open rejected (permanent)"
    REQUEST_FAILED = "request failed (session, timeout, malformed reply)"
    WATCHDOG = "T->O watchdog expired"
    RETRY_OPEN = "back-off over, nothing to learn"
    RETRY_RESOLVE = "back-off over, type to learn (again)"
    SIZE_REJECTED = "Forward_Open rejected for its size, learned type to be checked again"
    STOP = "stop, a connection may be open"
    STOP_NOW = "stop, nothing open"
    CLOSE_DONE = "Forward_Close answered or gave up"
    START_WAIT = "start, the PLC's session is down"
    WATCHDOG_WAIT = "T->O watchdog expired, the PLC's session is down"
    NO_SESSION = "the PLC's session is down: wait for it"
    SESSION_OPEN = "session back, nothing to learn"
    SESSION_RESOLVE = "session back, type to learn (again)"


S, T = State, Trigger
#: (state, trigger) -> next state. Anything not listed is not a transition.
TRANSITIONS: Mapping[tuple[State, Trigger], State] = {
    (S.IDLE, T.START_RESOLVE): S.RESOLVING,
    (S.IDLE, T.START_OPEN): S.OPENING,
    (S.IDLE, T.STOP_NOW): S.CLOSED,
    (S.IDLE, T.START_WAIT): S.WAITING,
    (S.RESOLVING, T.RESOLVED): S.OPENING,
    (S.RESOLVING, T.RESOLVE_FAILED): S.BACKOFF,
    (S.RESOLVING, T.RESOLVE_FATAL): S.FAILED,
    # The type cannot be learned (refused, past the listing limits, no answer) but a size was
    # given: that size opens the connection; its samples carry raw bytes and no value.
    (S.RESOLVING, T.OPEN_UNTYPED): S.OPENING,
    (S.RESOLVING, T.STOP_NOW): S.CLOSED,
    (S.RESOLVING, T.NO_SESSION): S.WAITING,
    (S.OPENING, T.OPENED): S.RUNNING,
    (S.OPENING, T.REOPEN_NOW): S.OPENING,
    (S.OPENING, T.REJECTED): S.BACKOFF,
    (S.OPENING, T.REJECTED_FATAL): S.FAILED,
    # 0x0109/0x0128 with a type we learned: the controller's tag table may have changed (a
    # download); learn the type again before the next Forward_Open.
    (S.OPENING, T.SIZE_REJECTED): S.RESOLVING,
    (S.OPENING, T.REQUEST_FAILED): S.BACKOFF,
    (S.OPENING, T.NO_SESSION): S.WAITING,
    # A Forward_Open in flight may open the connection: close its triad (TCP keeps the order).
    (S.OPENING, T.STOP): S.CLOSING,
    (S.RUNNING, T.WATCHDOG): S.BACKOFF,
    (S.RUNNING, T.WATCHDOG_WAIT): S.WAITING,
    (S.RUNNING, T.STOP): S.CLOSING,
    (S.CLOSING, T.CLOSE_DONE): S.CLOSED,
    (S.BACKOFF, T.RETRY_OPEN): S.OPENING,
    (S.BACKOFF, T.RETRY_RESOLVE): S.RESOLVING,
    (S.BACKOFF, T.STOP_NOW): S.CLOSED,
    (S.BACKOFF, T.NO_SESSION): S.WAITING,
    # The session is back: every waiting connection goes at once (the session paces the
    # requests it has in flight, so hundreds of Forward_Opens never hit the PLC at once).
    (S.WAITING, T.SESSION_OPEN): S.OPENING,
    (S.WAITING, T.SESSION_RESOLVE): S.RESOLVING,
    (S.WAITING, T.STOP_NOW): S.CLOSED,
    (S.FAILED, T.STOP_NOW): S.CLOSED,
}
del S, T


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class ConnEvent:
    """Something a person or a log should see. ``kind`` is a ``wire.EventKind`` value."""

    kind: str
    message: str
    state_from: str | None = None
    state_to: str | None = None
    cip_general: int | None = None
    cip_extended: int | None = None
    status_text: str | None = None


@dataclass(frozen=True, slots=True)
class Resolve:
    """Learn the tag's type and size; answer with ``on_resolved`` / ``on_resolve_error``.

    ``refresh``: a type was learned before and is now doubted (a T->O watchdog, a failed
    request, a lost session, a size reject may hide a download), so an answer cached from the
    same tag table as the doubted one will not do (the worker's ``TypeCache`` refills)."""

    tag: str
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class SendForwardOpen:
    """Send over the PLC's session; answer with ``on_forward_open_reply(now, request, ...)`` or
    ``on_request_error(now, request, text)``."""

    request: cm.ForwardOpenRequest


@dataclass(frozen=True, slots=True)
class SendForwardClose:
    """Send over the PLC's session. When ``awaited`` the connection waits in CLOSING for
    ``on_forward_close_reply`` / ``on_request_error``; otherwise the reply only gets logged
    (best-effort close of a connection we gave up on, which frees the PLC's consumer slot)."""

    request: cm.ForwardCloseRequest
    awaited: bool


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    """One O->T datagram to (PLC address, ``port``). ``due`` is its slot's deadline on the
    absolute schedule (the sender's lateness is its send time minus ``due``); ``skipped`` the
    slots passed without a heartbeat just before it (the caller was late by whole periods)."""

    datagram: bytes
    port: int
    due: float = 0.0
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Listen:
    """Route T->O datagrams with ``connection_id`` from the PLC to this connection."""

    connection_id: int
    data_size: int


@dataclass(frozen=True, slots=True)
class Unlisten:
    connection_id: int


@dataclass(frozen=True, slots=True)
class JoinGroup:
    """Join multicast ``group`` on this worker's interface (protocol.md 6.7)."""

    group: str


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    group: str


@dataclass(frozen=True, slots=True)
class OutageEnded:
    """An outage of the tag's data is over (``resumed``: its first datagram arrived at
    ``end``) or the connection stopped during it (``resumed`` False, ``end`` = the stop).

    ``start`` is the receive time of the last datagram before it (monotonic seconds, like
    ``now``); ``expected`` the datagrams the T->O API (``rpi_us``) promised in between and
    that never came; ``cause`` an ``OutageCause`` value (what interrupted the data)."""

    start: float
    end: float
    rpi_us: int
    expected: int
    cause: str
    resumed: bool = True


Output = (
    ConnEvent | Resolve | SendForwardOpen | SendForwardClose | SendHeartbeat | Listen | Unlisten
    | JoinGroup | LeaveGroup | OutageEnded
)


# --------------------------------------------------------------------------- reject classes


class RejectClass(enum.StrEnum):
    NEW_SERIAL = "new serial, retry now"  # 0x0100
    ADOPT_SIZE = "adopt the size the controller wants"  # 0x0109/0x0128 + word
    ADOPT_RPI = "adopt the producer's RPI"  # 0x0112 + 5 words
    AFTER_OLD_TIMEOUT = "retry after the old connection's timeout"  # 0x031E/0x0113/0x011A
    NOT_PRODUCED = "tag unknown or not produced"  # 0x031F/0x012E/0x0315, 0x04/0x05
    PERMANENT = "configuration error"
    TRANSIENT = "transient"


_PERMANENT_EXTENDED = {
    0x0103, 0x0108, 0x0111, 0x0114, 0x0115, 0x0116, 0x0117, 0x011C, 0x011D, 0x011E, 0x011F,
    0x0120, 0x0121, 0x0122, 0x0123, 0x0124, 0x0125, 0x0127, 0x0311, 0x0312, 0x0813,
}
_NOT_PRODUCED_EXTENDED = {0x031F, 0x012E, 0x0315, 0x012A, 0x012B}
_SLOT_EXTENDED = {0x0311, 0x0312}


def classify_reject(general: int, additional: tuple[int, ...]) -> RejectClass:
    """protocol.md 7.6 / 7.7 step 5 as a function of the CIP status of a failed Forward_Open."""
    ext = additional[0] if additional else None
    if general == 0x01 and ext is not None:
        if ext == 0x0100:
            return RejectClass.NEW_SERIAL
        if ext in (0x0109, 0x0128):
            return RejectClass.ADOPT_SIZE if len(additional) >= 2 else RejectClass.PERMANENT
        if ext == 0x0112:
            return RejectClass.ADOPT_RPI if len(additional) >= 6 else RejectClass.PERMANENT
        if ext in (0x031E, 0x0113, 0x011A):
            return RejectClass.AFTER_OLD_TIMEOUT
        if ext in _NOT_PRODUCED_EXTENDED:
            return RejectClass.NOT_PRODUCED
        if ext in _PERMANENT_EXTENDED:
            return RejectClass.PERMANENT
        return RejectClass.TRANSIENT
    if general in (0x04, 0x05):  # a generic target's answer for an unknown symbol
        return RejectClass.NOT_PRODUCED
    if general in (0x08, 0x26):
        return RejectClass.PERMANENT
    return RejectClass.TRANSIENT


#: A generic adapter's application-path answers (OpENer appcontype.c, protocol.md 8.2): the
#: connection points do not name a connection this device has.
_ASSEMBLY_PATH_EXTENDED = {0x0315, 0x0117, 0x0118, 0x0129, 0x012A, 0x012B, 0x012F, 0x031F,
                           0x012E}


def classify_assembly_reject(general: int, additional: tuple[int, ...]) -> RejectClass:
    """``classify_reject`` for an assembly connection: 0x0127 (O->T size) is a size the
    device asks for too, and an unknown path is the connection points' fault, not a tag's."""
    ext = additional[0] if additional else None
    if general == 0x01 and ext == 0x0127:
        return RejectClass.ADOPT_SIZE if len(additional) >= 2 else RejectClass.PERMANENT
    if general == 0x01 and ext in _ASSEMBLY_PATH_EXTENDED:
        return RejectClass.NOT_PRODUCED
    return classify_reject(general, additional)


#: What to tell the user about an adapter's refusal, by extended status (never Studio 5000:
#: the device is not a Logix controller).
ASSEMBLY_HINTS: Mapping[int, str] = {
    0x0106: "another originator owns this output assembly (exclusive owner): stop it, or"
            " open this connection as input_only / listen_only",
    0x0119: "a listen-only connection needs another connection (exclusive owner or input"
            " only) producing the same input assembly to be open first",
    0x0126: "the configuration data has the wrong size for the configuration assembly",
    0x0129: "the configuration data does not fit the configuration assembly (check"
            " config_data against the EDS file)",
    0x012F: "this device has no connection with these input / output / config points (see"
            " its EDS file, [Connection Manager] section)",
    0x012B: "the input (T->O) point is not one this device produces",
    0x012A: "the output (O->T) point is not one this device consumes",
    0x0315: "the connection path is not one this device understands (check the points, the"
            " port/slot, or the raw path)",
    0x011A: "the device has no free connection for this point: wait for an old one to"
            " time out",
}


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True, slots=True)
class _Reject:
    """One failed Forward_Open as the reject handlers see it."""

    now: float
    status: tuple[int, tuple[int, ...]]  # (general, additional words)
    text: str  # describe_cip_status of it

    @property
    def additional(self) -> tuple[int, ...]:
        return self.status[1]


@dataclass(slots=True)
class _Open:
    """What the PLC granted (or may have granted) for the current triad."""

    request: cm.ForwardOpenRequest
    ot_id: int = 0
    to_id: int = 0
    ot_api_s: float = 0.0
    to_api_s: float = 0.0
    group: str | None = None
    hb_origin: float = 0.0
    hb_index: int = 0
    hb_seq32: int = 0
    watchdog_at: float = 0.0


@dataclass(slots=True)
class _Outage:
    """The outage in progress: since when, why, and the T->O API the data came at (None until
    a connection of this consumer ran)."""

    start: float
    cause: str
    api_s: float | None


def expected_samples(start: float, end: float, api_s: float, *, resumed: bool) -> int:
    """Datagrams an API of ``api_s`` promised between the one received at ``start`` and the
    one received at ``end`` (``resumed``), or up to ``end`` (stopped before data came back)."""
    if api_s <= 0 or end <= start:
        return 0
    periods = (end - start) / api_s
    return max(0, round(periods) - 1) if resumed else int(periods)


@dataclass(slots=True)
class Counters:
    forward_opens: int = 0
    rejects: int = 0
    opens: int = 0
    heartbeats: int = 0
    heartbeats_late: int = 0
    datagrams: int = 0
    gap: int = 0
    timeouts: int = 0
    request_errors: int = 0
    forward_closes: int = 0
    waits: int = 0  # times it waited for the PLC's session instead of backing off
    outages: int = 0  # outages over (data back, or stopped during one)
    outage_missed: int = 0  # datagrams the RPI promised during those outages
    outputs: int = 0  # exclusive owner: output images handed in (``set_output``)
    outputs_refused: int = 0  # of them, images of the wrong size (not sent)


class ConsumerConnection:
    """One consumer connection. See the module docstring for the calling convention."""

    def __init__(
        self,
        params: ConsumerParams,
        originator: Originator,
        *,
        backoff: BackoffPolicy = BackoffPolicy(),
        timing: Timing = Timing(),
        recorder_size: int = 8,
    ) -> None:
        self.params = params
        self.originator = originator
        self.backoff = backoff
        self.timing = timing
        self.state = State.IDLE
        self.recorder = FlightRecorder(recorder_size)
        self.counters = Counters()
        self.tag_bytes: int | None = params.tag_bytes
        self.tag_type: LogixType | None = params.tag_type
        if self.tag_bytes is None and self.tag_type is not None:
            self.tag_bytes = byte_size(self.tag_type)
        # No type given: the type is the controller's (a given size only checks it), learned
        # before the first Forward_Open and again when a download may have changed it.
        self.learned = params.tag_type is None
        # Where the controller's time is in the tag's bytes (``source_time``), once the type
        # is known; checked in ConsumerParams for a given type, at ``on_resolved`` otherwise.
        self.source_at: SourceTime | None = (
            locate(params.tag_type, params.source_time, params.tag)
            if params.source_time is not None and params.tag_type is not None else None
        )
        self._resolved: tuple[int, LogixType | None] | None = None  # last discovery answer
        self._learn_type = self.learned  # ask for the type before the next Forward_Open
        self._size_refreshes = 0  # re-discoveries caused by size rejects since the last open
        # The tag bytes the controller said it produces in the size reject that sent this
        # connection to RESOLVING (None otherwise): the learned type is checked against it.
        self._size_wanted: int | None = None
        self.to_rpi_us = params.rpi_us
        self.ot_rpi_us = params.ot_rpi
        self.failure: str | None = None  # why FAILED
        self.last_status: tuple[int, tuple[int, ...]] | None = None
        self._outputs: list[Output] = []
        self._attempt = 0  # back-off exponent; reset when data flows
        self._immediate = 0  # consecutive immediate retries (0x0100 / adopted values)
        self._deadline: float | None = None  # the timer of the current state (not RUNNING)
        self._min_retry_at = 0.0  # earliest next Forward_Open (old connection's timeout)
        self._open: _Open | None = None  # current triad (OPENING, RUNNING, CLOSING)
        self._closing: cm.ForwardCloseRequest | None = None
        # False from a session loss until the session is back: requests wait (WAITING).
        self.session_up = True
        self._last_data: float | None = None  # receive time of the last datagram accepted
        self._outage: _Outage | None = None  # the interruption of the data in progress
        # An assembly consumer (acquisition.assembly): ``tag_bytes`` is its input size and
        # ``ot_bytes`` its output size (0 until given or learned: the device's size reject
        # says what it wants); ``_output`` the latest output image and when it came.
        self.assembly = params.assembly
        self.ot_bytes = 0
        self._known: set[asm.Direction] = set()
        self._output: bytes | None = None
        self._output_at: float | None = None
        self._output_refused = False
        if self.assembly is not None:
            spec = self.assembly
            self.learned = self._learn_type = False
            self.tag_bytes = spec.input_size if spec.input_size is not None else 0
            self.ot_bytes = spec.output_size or 0
            if spec.input_size is not None:
                self._known.add(asm.Direction.TO)
            if spec.output_size is not None or spec.heartbeat:
                self._known.add(asm.Direction.OT)

    # ------------------------------------------------------------------ plumbing

    @property
    def name(self) -> str:
        return f"{self.params.plc}/{self.params.tag}"

    def take_outputs(self) -> list[Output]:
        out, self._outputs = self._outputs, []
        return out

    @property
    def has_outputs(self) -> bool:
        """Something waits in ``take_outputs()`` (the receive loop asks before taking)."""
        return bool(self._outputs)

    def _emit(self, item: Output) -> None:
        self._outputs.append(item)

    def _transition(self, trigger: Trigger, now: float, *, kind: str = "state",
                    message: str = "", status: tuple[int, tuple[int, ...]] | None = None) -> None:
        """The single place that changes ``state``; emits one event per transition."""
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise UsageError(f"{self.name}: no transition from {self.state} on {trigger!r}")
        previous, self.state = self.state, target
        general = extended = None
        text = None
        if status is not None:
            general, additional = status
            extended = additional[0] if additional else None
            text = (extended_status_text(general, extended) if extended is not None
                    else "") or general_status_text(general)
        self._emit(ConnEvent(kind, message or str(trigger), previous.value, target.value,
                             general, extended, text))

    @property
    def is_live(self) -> bool:
        return self.state not in (State.FAILED, State.CLOSED)

    @property
    def data_is_routine(self) -> bool:
        """A datagram without a gap would change nothing here but the counters and the
        watchdog (RUNNING, no outage to end): a caller may then report such datagrams in
        bulk (``on_data(last, 0, count)``) before its next call that reads or moves this
        machine."""
        return self.state is State.RUNNING and self._open is not None and self._outage is None

    @property
    def granted(self) -> _Open | None:
        return self._open if self.state is State.RUNNING else None

    # ------------------------------------------------------------------ inputs

    def start(self, now: float, *, outage_since: float | None = None) -> None:
        """Start. ``outage_since``: this consumer's data stopped then, before this start (the
        worker that received it died or was restarted; the caller knows, this process cannot),
        so the first datagram ends an outage of cause ``restart`` that began then."""
        if self.state is not State.IDLE:
            return  # starting twice is harmless
        if outage_since is not None:
            self._outage = _Outage(min(outage_since, now), OutageCause.RESTART, None)
        if not self.session_up:
            self.counters.waits += 1
            self._transition(Trigger.START_WAIT, now,
                             message="waiting for the session to the PLC (it is down)")
        elif self._learn_type:
            self._enter_resolving(Trigger.START_RESOLVE, now)
        else:
            self._enter_opening(Trigger.START_OPEN, now)

    def stop(self, now: float) -> None:
        """Stop for good: Forward_Close if a connection is or may be open, then CLOSED. An
        outage in progress is over then (``OutageEnded`` with ``resumed`` False)."""
        if self.state not in (State.CLOSING, State.CLOSED):
            self._end_outage(now, resumed=False)
        if self.state in (State.OPENING, State.RUNNING):
            assert self._open is not None
            self._leave_running()
            self._closing = cm.forward_close_for(self._open.request)
            self.counters.forward_closes += 1
            self._emit(SendForwardClose(self._closing, awaited=True))
            self._deadline = now + self.timing.request_s
            self._transition(Trigger.STOP, now, message="stopping: Forward_Close sent")
        elif self.state in (State.IDLE, State.RESOLVING, State.BACKOFF, State.FAILED,
                            State.WAITING):
            self._deadline = None
            self._transition(Trigger.STOP_NOW, now, message="stopped")
        # CLOSING / CLOSED: already on the way out.

    def on_session_lost(self, now: float) -> None:
        """The PLC's encapsulation session ended (EOF, reset, encapsulation error), or it is
        down when this connection is created. The class-1 connection does not depend on it, so
        a RUNNING connection goes on; but the controller may have been restarted or
        downloaded, so a learned type is learned again before the next Forward_Open, and
        until ``on_session_ready`` every request this connection would make waits (WAITING)
        instead of failing and backing off. A request in flight fails next: that failure then
        means "wait", not "back off"."""
        self.session_up = False
        self._mark_stale()

    def on_session_ready(self, now: float) -> None:
        """The PLC's session is (back) up: a WAITING connection opens now, learning its type
        first when it is unknown or doubted."""
        self.session_up = True
        if self.state is State.WAITING:
            if self._learn_type:
                self._enter_resolving(Trigger.SESSION_RESOLVE, now)
            else:
                self._enter_opening(Trigger.SESSION_OPEN, now)

    def on_resolved(self, now: float, tag_bytes: int, tag_type: LogixType | None = None) -> None:
        if self.state is not State.RESOLVING:
            return  # a late answer to a discovery we gave up on
        problem = None
        given, wanted = self.params.tag_bytes, self._size_wanted
        if not 0 < tag_bytes <= cm.MAX_PRODUCED_TAG_BYTES:
            problem = (f"tag {self.params.tag!r} is {tag_bytes} bytes; a standard produced tag"
                       " holds 1..500 bytes (README: Configuring the produced tag in Studio"
                       " 5000): split it into several tags")
        elif given is not None and given != tag_bytes and wanted not in (None, tag_bytes):
            # else a given size that is not the type's is adopted below
            problem = self._size_mismatch(wanted, tag_bytes, tag_type,
                                          "its size reject and its tag list disagree")
        if problem is None and self.params.source_time is not None:
            try:
                self.source_at = locate(tag_type or self.tag_type, self.params.source_time,
                                        self.params.tag)  # fmt: skip
            except SourceTimeError as exc:
                problem = str(exc)
        self._size_wanted = None
        if problem is not None:
            self._fail(Trigger.RESOLVE_FATAL, now, problem)
            return
        previous, self._resolved = self._resolved, (tag_bytes, tag_type)
        self._learn_type = False
        self.tag_bytes = tag_bytes
        if tag_type is not None and tag_type != self.tag_type:
            # A new object only when the type changed: the caller rebuilds its decoder when
            # ``tag_type`` is another object.
            self.tag_type = tag_type
        kind, status = "state", None
        if given is not None and given != tag_bytes:
            # The size the user gave is not the type's, which is what a Logix produces (and,
            # after a size reject, what this controller wants): adopt it (README,
            # troubleshooting 0x0109), saying which setting to fix. A warning: the
            # configuration is wrong; with the reject's status when one led here.
            type_name = f" ({tag_type.name})" if tag_type is not None else ""
            message = (f"the given size, {given} bytes, is not the size of {self.params.tag!r}:"
                       f" the controller produces {tag_bytes} bytes, the size of its"
                       f" type{type_name}; adopting {tag_bytes}. Set size = {tag_bytes} (datasize"
                       f" = {tag_bytes + cm.CLASS1_SEQUENCE_SIZE} in the Python API) or remove it")
            kind, status = ("reject", self.last_status) if wanted is not None else ("error", None)
        elif previous is None:
            message = f"size learned: {tag_bytes} bytes" + (
                f" ({tag_type.name})" if tag_type is not None else "")
        elif previous != (tag_bytes, tag_type):
            message = "tag type changed after a download: " + _type_change(previous,
                                                                            (tag_bytes, tag_type))
        else:
            message = f"type unchanged: {tag_bytes} bytes" + (
                f" ({tag_type.name})" if tag_type is not None else "")
        self._enter_opening(Trigger.RESOLVED, now, kind=kind, message=message, status=status)

    def on_resolve_error(self, now: float, message: str, permanent: bool) -> None:
        """The type could not be learned. Without a given size the connection cannot open:
        FAILED when ``permanent``, else it backs off (or waits for the session) and asks
        again. With one it opens with that size, without the type (``OPEN_UNTYPED``)."""
        if self.state is not State.RESOLVING:
            return
        untyped = self.params.tag_bytes is not None
        if untyped and self.params.source_time is not None:
            untyped = False  # the controller's time is found by the type only
            message += (f" (source_time = {self.params.source_time!r} needs the tag's type:"
                        " remove source_time to connect with the given size alone)")
        if permanent and not untyped:
            self._fail(Trigger.RESOLVE_FATAL, now, message)
        elif not self.session_up:
            self._wait(now, message)
        elif untyped:
            self._open_untyped(now, message)
        else:
            self._enter_backoff(Trigger.RESOLVE_FAILED, now, kind="error", message=message)

    def _open_untyped(self, now: float, message: str) -> None:
        """A given size opens the connection where the type cannot be learned: no type (one
        learned before is doubted, and a download may have changed it with the same size),
        so the samples carry raw bytes; the type is asked again after the next outage."""
        self._learn_type = False
        self._size_wanted = None
        self.tag_type = None
        size = ("the given size" if self.tag_bytes == self.params.tag_bytes
                else "the size adopted before")
        self._enter_opening(Trigger.OPEN_UNTYPED, now, kind="error", message=(
            f"{message}; opening with {size}, {self.tag_bytes} bytes, without the type:"
            " samples carry the raw bytes and no value"))

    def on_forward_open_reply(
        self,
        now: float,
        request: cm.ForwardOpenRequest,
        reply: cip.Reply,
        items: tuple[cpf.Item, ...] = (),
    ) -> None:
        """The CIP reply to ``request`` (any status) plus the CPF items after it."""
        if self.state is not State.OPENING or self._open is None or self._open.request != request:
            return  # an answer to a request we no longer wait for
        self.recorder.record_in(now, "Forward_Open reply", reply.encode())
        try:
            result = cm.decode_forward_open_reply(reply)
        except MalformedPacket as exc:
            self._request_failed(now, f"unusable Forward_Open reply: {exc}")
            return
        if isinstance(result, cm.ConnectionFailure):
            self._rejected(now, result.general_status, result.additional)
            return
        if result.triad != request.triad:
            self._request_failed(
                now, f"Forward_Open reply for another triad ({result.triad}, ours {request.triad})")
            return
        group = None
        if self.params.multicast:
            t2o = next((i for i in items if isinstance(i, cpf.SockaddrInfo)
                        and i.direction == cpf.ItemId.SOCKADDR_T2O), None)
            if t2o is None:
                self._request_failed(now, "multicast Forward_Open reply without a T->O sockaddr"
                                     " item (0x8001): the producer did not say which group")
                return
            group = t2o.sockaddr.address
        else:
            if result.to_connection_id != request.to_connection_id:
                # P2P: the target must keep our id (5.7); anything else breaks demultiplexing.
                self._request_failed(now, f"target changed our P2P T->O id to"
                                     f" 0x{result.to_connection_id:08X}")
                return
        self._opened(now, result, group)

    def on_forward_close_reply(self, now: float, request: cm.ForwardCloseRequest,
                               reply: cip.Reply) -> None:
        if self.state is not State.CLOSING or request != self._closing:
            return
        self.recorder.record_in(now, "Forward_Close reply", reply.encode())
        if reply.status == 0:
            msg = "closed: Forward_Close accepted"
        else:
            msg = ("closed; Forward_Close answered " + describe_cip_status(reply.status,
                                                                            reply.additional))
        self._finish_close(now, msg)

    def on_request_error(self, now: float, request: object, message: str) -> None:
        """The exchange for ``request`` (a Forward_Open or Forward_Close) failed below CIP."""
        if self.state is State.OPENING and self._open is not None and request == self._open.request:
            self._request_failed(now, message)
        elif self.state is State.CLOSING and request == self._closing:
            self._finish_close(now, f"closed without confirmation: {message}")

    def on_data(self, now: float, missed: int = 0, count: int = 1) -> None:
        """A T->O datagram was accepted for this connection; ``missed`` = datagrams the 32-bit
        sequence says we did not get since the previous one. ``count`` > 1: that many were
        accepted in a row, none missed between them, the last at ``now`` (a caller that reads
        datagrams in batches may report them so)."""
        if self.state is not State.RUNNING or self._open is None:
            return
        o = self._open
        self.counters.datagrams += count
        self._attempt = 0  # data flows: the next failure starts back-off from the base
        self._immediate = 0
        o.watchdog_at = now + o.to_api_s * self.params.factor
        if self._outage is not None:
            self._end_outage(now, resumed=True)
        self._last_data = now
        if missed > 0:
            self.counters.gap += missed
            self._emit(ConnEvent("gap", f"{missed} datagram(s) missed (total {self.counters.gap})"))

    def set_output(self, now: float, image: bytes | Mapping[str, Any]) -> None:
        """The latest output image of an exclusive owner (from the bus, or the API): sent in
        run mode with every O->T datagram from the next one on. An image of another size than
        the connection's output size is refused (counted; one event until a good one comes).

        With a declared output layout, ``image`` may be a map of its fields: they are written
        into the image sent so far (zeros before the first; the fields not named keep their
        value). A map that does not fit (unknown field, wrong type, out of range, output size
        not known yet) raises ``UsageError`` naming the field and the fix; it is counted as
        refused, and the previous image is still sent."""
        spec = self.assembly
        if spec is None or spec.heartbeat:
            raise UsageError(f"{self.name}: only an exclusive-owner assembly connection sends"
                             " output data")
        self.counters.outputs += 1
        known = asm.Direction.OT in self._known
        if isinstance(image, Mapping):
            image = self._encode_output(image, known)
        if known and len(image) != self.ot_bytes:
            self._refuse_output(f"output image of {len(image)} bytes refused: the output"
                                f" assembly is {self.ot_bytes} bytes")
            return
        self._output_refused = False
        self._output = bytes(image)
        self._output_at = now

    def _encode_output(self, values: Mapping[str, Any], known: bool) -> bytes:
        """The image a map of output fields makes (``set_output``), or ``UsageError``."""
        layout = self.params.output_layout
        try:
            if layout is None:
                raise UsageError("a map of fields needs an output_layout on this assembly:"
                                 " declare one (docs/assemblies.md) or send the image as bytes")
            if not known:
                raise UsageError("the output size is not known yet (the device says it when"
                                 " the connection opens): set output_size, or send the fields"
                                 " once the connection is open")
            previous = (self._output if self._output is not None
                        and len(self._output) == self.ot_bytes else bytes(self.ot_bytes))
            return asm.encode_output(layout, values, previous)
        except UsageError as exc:
            self._refuse_output(f"output refused: {exc}")
            raise UsageError(f"{self.name}: {exc}") from None

    def _refuse_output(self, why: str) -> None:
        """An output image not taken: counted, one event until a good one comes."""
        self.counters.outputs_refused += 1
        if not self._output_refused:
            self._output_refused = True
            self._emit(ConnEvent("error", f"{why}; still sending the previous image"))

    def _sizes_text(self) -> str:
        if self.assembly is None:
            return f"{self.tag_bytes}+2"
        spec = self.assembly
        out = "heartbeat" if spec.heartbeat else f"output {self.ot_bytes}"
        return f"input {self.tag_bytes}, {out}"

    def next_deadline(self) -> float | None:
        if self.state is State.RUNNING and self._open is not None:
            o = self._open
            return min(o.hb_origin + o.hb_index * o.ot_api_s, o.watchdog_at)
        return self._deadline

    def on_timer(self, now: float, *, data_pending: bool = False) -> None:
        """Act on whatever is due at ``now``. ``data_pending``: the caller has received
        datagrams it has not read yet (it stopped draining its socket to serve other timers),
        any of which may be this connection's; a due T->O watchdog is then held until the
        caller has read them and calls again (a watchdog expires only when no datagram is
        waiting, so a pause of the caller never expires a connection whose data arrived in
        time). Heartbeats and the other states' timers are not held."""
        st = self.state
        if st is State.RUNNING:
            o = self._open
            assert o is not None
            if now >= o.watchdog_at and not data_pending:
                self._watchdog(now)
                return
            due = o.hb_origin + o.hb_index * o.ot_api_s
            if now >= due:
                # Absolute schedule (no drift); if we are late by whole periods, send one
                # heartbeat and skip the missed slots rather than bursting.
                slot = max(int((now - o.hb_origin) // o.ot_api_s), o.hb_index)
                skipped = slot - o.hb_index
                self.counters.heartbeats_late += skipped
                o.hb_index = slot + 1
                self._heartbeat(now, o.hb_origin + slot * o.ot_api_s, skipped)
            return
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        if st is State.RESOLVING:
            self.on_resolve_error(now, f"size discovery gave no answer within"
                                  f" {self.timing.resolve_s:g} s", permanent=False)
        elif st is State.OPENING:
            self._request_failed(now, f"no Forward_Open reply within {self.timing.request_s:g} s")
        elif st is State.CLOSING:
            self._finish_close(now, f"closed without confirmation: no Forward_Close reply within"
                               f" {self.timing.request_s:g} s")
        elif st is State.BACKOFF:
            if not self.session_up:
                self.counters.waits += 1
                self._transition(Trigger.NO_SESSION, now, message="back-off over; waiting for"
                                 " the session to the PLC (it is down)")
            elif self._learn_type:
                self._enter_resolving(Trigger.RETRY_RESOLVE, now)
            else:
                self._enter_opening(Trigger.RETRY_OPEN, now)

    # ------------------------------------------------------------------ internals

    def _mark_stale(self) -> None:
        if self.learned:
            self._learn_type = True

    def _enter_resolving(self, trigger: Trigger, now: float, *, kind: str = "state",
                         message: str = "", status: tuple[int, tuple[int, ...]] | None = None
                         ) -> None:
        self._deadline = now + self.timing.resolve_s
        if not message:
            message = (f"learning the type of {self.params.tag!r}" if self._resolved is None
                       else f"learning the type of {self.params.tag!r} again (the controller's"
                       " tag table may have changed)")
        self._transition(trigger, now, kind=kind, message=message, status=status)
        self._emit(Resolve(self.params.tag, refresh=self._resolved is not None))

    def _enter_opening(self, trigger: Trigger, now: float, *, kind: str = "state",
                       message: str = "", status: tuple[int, tuple[int, ...]] | None = None
                       ) -> None:
        assert self.tag_bytes is not None
        p = self.params
        o = self.originator
        to_id = 0 if p.multicast else o.new_connection_id()
        if self.assembly is not None:
            request = asm.assembly_forward_open(
                self.assembly, input_bytes=self.tag_bytes, output_bytes=self.ot_bytes,
                to_rpi_us=self.to_rpi_us, ot_rpi_us=self.ot_rpi_us,
                connection_serial=o.new_serial(), vendor_id=o.vendor_id,
                originator_serial=o.serial, to_connection_id=to_id,
                timeout_multiplier=p.multiplier, hops=p.hops,
            )
        else:
            request = cm.produced_tag_forward_open(
                tag=p.tag, tag_bytes=self.tag_bytes, to_rpi_us=self.to_rpi_us,
                ot_rpi_us=self.ot_rpi_us, connection_serial=o.new_serial(),
                vendor_id=o.vendor_id, originator_serial=o.serial, to_connection_id=to_id,
                multicast=p.multicast, timeout_multiplier=p.multiplier, slot=p.slot,
            )
            if p.route:
                request = _replace_path(request, p.connection_path())
        self._open = _Open(request)
        self._deadline = now + self.timing.request_s
        self.counters.forward_opens += 1
        self._transition(trigger, now, kind=kind, message=message or (
            f"Forward_Open serial 0x{request.connection_serial:04X}"
            f" T->O id 0x{to_id:08X} size {self._sizes_text()}"), status=status)
        self.recorder.record_out(now, "Forward_Open", request.encode())
        self._emit(SendForwardOpen(request))

    def _release_triad(self) -> None:
        """The current triad is dead or closed: its serial and id may not be reused soon (the
        Originator keeps serials out of reuse), but they no longer count as live."""
        if self._open is None:
            return
        req = self._open.request
        self.originator.release_serial(req.connection_serial)
        if req.to_connection_id:
            self.originator.release_connection_id(req.to_connection_id)

    def _opened(self, now: float, r: cm.ForwardOpenSuccess, group: str | None) -> None:
        o = self._open
        assert o is not None
        o.ot_id, o.to_id = r.ot_connection_id, r.to_connection_id
        # Granted APIs, not the requested RPIs (5.8); a zero API would mean "as requested".
        o.ot_api_s = (r.ot_api or self.ot_rpi_us) / 1e6
        o.to_api_s = (r.to_api or self.to_rpi_us) / 1e6
        o.group = group
        o.hb_origin, o.hb_index, o.hb_seq32 = now, 0, 0
        o.watchdog_at = now + max(o.to_api_s * self.params.factor, self.timing.first_data_s)
        self._deadline = None
        self._size_refreshes = 0
        self._size_wanted = None
        self.counters.opens += 1
        self._transition(
            Trigger.OPENED, now,
            message=f"open: O->T id 0x{o.ot_id:08X} API {r.ot_api} us, T->O id 0x{o.to_id:08X}"
            f" API {r.to_api} us" + (f", multicast {group}" if group else ""))
        if group is not None:
            self._emit(JoinGroup(group))
        assert self.tag_bytes is not None
        header = self.assembly.to_header if self.assembly is not None else 0
        self._emit(Listen(o.to_id, self.tag_bytes + header))
        # The consumer sends first (6.5): heartbeat now, then every O->T API.
        o.hb_index = 1
        self._heartbeat(now, now)

    def _heartbeat(self, now: float, due: float, skipped: int = 0) -> None:
        o = self._open
        assert o is not None
        o.hb_seq32 = seq = (o.hb_seq32 + 1) & 0xFFFFFFFF
        spec = self.assembly
        if spec is not None and not spec.heartbeat:
            # Exclusive owner: the latest output image in run mode; zeros in idle mode until
            # an image of the right size came (docs/wire-format.md "Output images").
            image = self._output if self._output is not None else bytes(self.ot_bytes)
            dgram = asm.output_datagram(o.ot_id, seq, image, run=self._output is not None,
                                        header=bool(spec.ot_header))
        else:
            dgram = class1.heartbeat(o.ot_id, seq, seq & 0xFFFF)
        self.counters.heartbeats += 1
        self.recorder.record_out(now, "heartbeat", dgram)
        self._outputs.append(SendHeartbeat(dgram, self.params.plc_udp_port, due, skipped))

    def _leave_running(self) -> None:
        """Stop routing data to a connection that is being abandoned or closed."""
        o = self._open
        if self.state is State.RUNNING and o is not None:
            self._emit(Unlisten(o.to_id))
            if o.group is not None:
                self._emit(LeaveGroup(o.group))

    def _watchdog(self, now: float) -> None:
        o = self._open
        assert o is not None
        self.counters.timeouts += 1
        self._mark_stale()  # data stopped: the controller may have been restarted or downloaded
        if self._outage is None and self._last_data is not None:
            cause = OutageCause.TIMEOUT if self.session_up else OutageCause.SESSION
            self._outage = _Outage(self._last_data, cause, o.to_api_s)
        self._leave_running()
        period = o.to_api_s * self.params.factor
        message = (f"no T->O data for {period:g} s (T->O API x {self.params.factor});"
                   " reopening with a new triad")
        if not self.session_up:
            # Nothing can reach the PLC now (not even a Forward_Close): wait for the session
            # and reopen the moment it is back.
            self._release_triad()
            self._open = None
            self.counters.waits += 1
            self._transition(Trigger.WATCHDOG_WAIT, now, kind="timeout",
                             message=f"{message} once the session to the PLC is back")
            return
        # The PLC may still hold the connection (e.g. only our receive path broke): close the
        # triad best-effort so a Max Consumers = 1 tag does not refuse the retry (7.4, 7.7).
        self._emit(SendForwardClose(cm.forward_close_for(o.request), awaited=False))
        self.counters.forward_closes += 1
        self._release_triad()
        self._enter_backoff(Trigger.WATCHDOG, now, kind="timeout", message=message)

    def _enter_backoff(self, trigger: Trigger, now: float, *, kind: str, message: str,
                       status: tuple[int, tuple[int, ...]] | None = None,
                       at_least: float = 0.0) -> None:
        delay = max(self.backoff.delay(self._attempt, self.originator.rng), at_least)
        self._attempt += 1
        self._immediate = 0
        self._deadline = now + delay
        if self.state is State.OPENING:
            self._release_triad()
        self._open = None
        self._transition(trigger, now, kind=kind, status=status,
                         message=f"{message}; retry in {delay:.2f} s")

    def _fail(self, trigger: Trigger, now: float, message: str,
              status: tuple[int, tuple[int, ...]] | None = None) -> None:
        self.failure = message
        self._deadline = None
        if self._open is not None:
            self._release_triad()
        self._open = None
        self._transition(trigger, now, kind="reject" if status else "error", message=message,
                         status=status)

    def _request_failed(self, now: float, message: str) -> None:
        self.counters.request_errors += 1
        self._mark_stale()  # session lost or PLC silent: it may have been restarted/downloaded
        if not self.session_up:
            # It failed because the session is gone: not the PLC's answer, so no back-off.
            # No Forward_Close either: nothing reaches the PLC now, and a triad it may have
            # opened times out there without our heartbeats.
            self._wait(now, message)
            return
        # The Forward_Open may still have reached the PLC: close that triad best-effort.
        assert self._open is not None
        self._emit(SendForwardClose(cm.forward_close_for(self._open.request), awaited=False))
        self._enter_backoff(Trigger.REQUEST_FAILED, now, kind="error", message=message)

    def _wait(self, now: float, message: str) -> None:
        """RESOLVING or OPENING, and the session is down: wait for it (no back-off)."""
        if self._open is not None:
            self._release_triad()
        self._open = None
        self._deadline = None
        self.counters.waits += 1
        self._transition(Trigger.NO_SESSION, now, kind="error",
                         message=f"{message}; waiting for the session to the PLC")

    def _end_outage(self, now: float, *, resumed: bool) -> None:
        """The outage in progress (if any) is over at ``now``: count it and say so."""
        outage, self._outage = self._outage, None
        if outage is None:
            return
        api_s = outage.api_s
        if api_s is None:
            api_s = (self._open.to_api_s if self._open is not None and self._open.to_api_s
                     else self.to_rpi_us / 1e6)
        expected = expected_samples(outage.start, now, api_s, resumed=resumed)
        self.counters.outages += 1
        self.counters.outage_missed += expected
        self._emit(OutageEnded(outage.start, now, round(api_s * 1e6), expected, outage.cause,
                               resumed))

    def _finish_close(self, now: float, message: str) -> None:
        self._release_triad()
        self._open = None
        self._closing = None
        self._deadline = None
        self._transition(Trigger.CLOSE_DONE, now, message=message)

    def _rejected(self, now: float, general: int, additional: tuple[int, ...]) -> None:
        self.counters.rejects += 1
        self.last_status = (general, additional)
        reject = _Reject(now, (general, additional),
                         describe_cip_status(general, additional,
                                             device=self.assembly is not None))
        if self.assembly is not None:
            cls = classify_assembly_reject(general, additional)
            _ASSEMBLY_REJECT_HANDLERS.get(cls, _REJECT_HANDLERS[cls])(self, reject)
            return
        _REJECT_HANDLERS[classify_reject(general, additional)](self, reject)

    # One handler per RejectClass (the table _REJECT_HANDLERS after the class); each decides
    # between retrying now, backing off, learning the type again and failing for good.

    def _can_retry_now(self) -> bool:
        return self._immediate < self.timing.max_immediate_retries

    def _on_new_serial_reject(self, r: _Reject) -> None:
        if self._can_retry_now():
            self._retry_now(r.now, r.status, f"{r.text}: retrying with a new connection serial")
        else:
            self._enter_backoff(Trigger.REJECTED, r.now, kind="reject", status=r.status,
                                message=f"{r.text} {self._immediate} times in a row")

    def _on_adopt_size_reject(self, r: _Reject) -> None:
        now, status = r.now, r.status
        wanted = r.additional[1] - cm.CLASS1_SEQUENCE_SIZE
        type_size = byte_size(self.tag_type) if self.tag_type is not None else None
        head = describe_cip_status(status[0], status[1][:1])  # the code, not the wanted word
        if type_size is not None and wanted == type_size and wanted != self.tag_bytes:
            asked, self.tag_bytes = self.tag_bytes, wanted
            self._retry_now(now, status, f"{head}: we asked for {asked} bytes, the controller"
                            f" produces {wanted} bytes, the size of type"
                            f" {self.tag_type.name if self.tag_type else '?'}: adopting {wanted}")
        elif self._size_refreshes == 0 and self.params.tag_type is None:
            # The type is the controller's (learned, or never asked for because a size was
            # given): learn it, once, and adopt the wanted size if it is that type's size. A
            # learned type may have changed with a download; a given size may simply be wrong
            # (the seed's datasize, which counted the 2-byte sequence count).
            self._size_refreshes += 1
            self._size_wanted = wanted
            self._release_triad()
            self._open = None
            why = (f"learning the type of {self.params.tag!r} again (changed by a download?)"
                   if self._resolved is not None else
                   f"learning the type of {self.params.tag!r} to check {wanted} bytes against it")
            self._enter_resolving(
                Trigger.SIZE_REJECTED, now, kind="reject", status=status,
                message=f"{head}: we asked for {self.tag_bytes} bytes, the controller produces"
                f" {wanted} bytes; {why}")
        else:
            self._fail(Trigger.REJECTED_FATAL, now, status=status,
                       message=self._size_mismatch(wanted, type_size, self.tag_type, head))

    def _size_mismatch(self, produces: int, type_size: int | None,
                       tag_type: LogixType | None, head: str) -> str:
        """The one FAILED message of a size that cannot be made to fit: every size in tag
        bytes (never the connection size, which adds the 2-byte sequence count) and the fix."""
        if type_size is None:
            return (f"size mismatch on {self.name}: we asked for {self.tag_bytes} bytes of tag"
                    f" data, the controller produces {produces}; set size = {produces}"
                    f" (datasize = {produces + cm.CLASS1_SEQUENCE_SIZE} in the Python API) or"
                    f" omit it so it is learned from the controller ({head})")
        name = tag_type.name if tag_type is not None else "?"
        given = self.params.tag_bytes
        asked = f"we asked for {self.tag_bytes}" + (
            f", the given size is {given}" if given not in (None, self.tag_bytes) else "")
        return (f"type mismatch on {self.name}: the controller produces {produces} bytes but"
                f" type {name} is {type_size} bytes ({asked}); check the tag's type ({head})")

    def _on_adopt_rpi_reject(self, r: _Reject) -> None:
        if not self._can_retry_now():
            self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status,
                       message=f"{self.name}: RPI negotiation does not converge ({r.text})")
            return
        additional = r.additional
        ot_rpi = additional[2] | (additional[3] << 16)
        to_rpi = additional[4] | (additional[5] << 16)
        if (to_rpi and to_rpi != self.to_rpi_us) or (ot_rpi and ot_rpi != self.ot_rpi_us):
            self.to_rpi_us = to_rpi or self.to_rpi_us
            self.ot_rpi_us = ot_rpi or self.ot_rpi_us
            self._retry_now(r.now, r.status, f"{r.text}: adopting the producer's RPI"
                            f" (T->O {self.to_rpi_us} us, O->T {self.ot_rpi_us} us)")
        else:
            self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status, message=(
                f"{self.name}: RPI refused again with the producer's own values ({r.text})"))

    def _on_after_old_timeout_reject(self, r: _Reject) -> None:
        # A previous connection (ours from an earlier run, or another consumer's) holds the
        # slot until its O->T watchdog expires: wait at least that long (7.4, 7.7 step 5).
        wait = (self.ot_rpi_us / 1e6) * self.params.factor + self.timing.old_connection_margin_s
        self._enter_backoff(Trigger.REJECTED, r.now, kind="reject", status=r.status,
                            at_least=wait,
                            message=f"{r.text}: waiting for the old connection's timeout")

    def _on_not_produced_reject(self, r: _Reject) -> None:
        p = self.params
        learned_type = self._resolved[1] if self._resolved is not None else None
        if r.additional[:1] == (0x031F,) and learned_type is not None:
            # The controller itself told us the tag's type, so the tag exists: only the
            # Produced setting is missing, and "check the name" would send the user astray.
            what = (f"exists ({learned_type.name}) but is not produced ({r.text}): mark it"
                    " produced")
        else:
            what = (f"does not exist or is not produced ({r.text}): check the name, and mark"
                    " it produced")
        self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status, message=(
            f"tag {p.tag!r} on PLC {p.plc!r} {what} in Studio 5000 (Tag Properties >"
            " Type: Produced, set Max Consumers)"))

    def _on_permanent_reject(self, r: _Reject) -> None:
        p = self.params
        hint = ""
        ext = r.additional[0] if r.additional else None
        if ext in _SLOT_EXTENDED:
            hint = f"; check the slot ({p.slot}) and route of PLC {p.plc!r}"
        elif ext == 0x0111:
            hint = (f"; choose an RPI the producer accepts (asked T->O {self.to_rpi_us} us,"
                    f" O->T {self.ot_rpi_us} us)")
        elif ext == 0x0813:
            hint = "; multicast does not cross subnets: use unicast"
        elif ext == 0x0124 and not p.multicast:
            # Logix answers a P2P request for a produced tag whose "Allow Unicast Consumer
            # Connections" box is clear with an invalid T->O connection type.
            hint = ("; the tag does not allow unicast consumers: tick 'Allow Unicast"
                    " Consumer Connections' in the produced tag's Connection settings, or"
                    ' use transport = "multicast"')
        self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status,
                   message=f"{self.name}: Forward_Open refused: {r.text}{hint}")

    def _on_transient_reject(self, r: _Reject) -> None:
        self._enter_backoff(Trigger.REJECTED, r.now, kind="reject", status=r.status,
                            message=f"Forward_Open refused: {r.text}")

    # The same decisions for an assembly consumer, whose sizes the device states and whose
    # errors talk about connection points (``_ASSEMBLY_REJECT_HANDLERS``).

    def _on_assembly_size_reject(self, r: _Reject) -> None:
        spec = self.assembly
        assert spec is not None
        answer = asm.size_answer(spec, r.additional, input_known=asm.Direction.TO in self._known,
                                 output_known=asm.Direction.OT in self._known)
        if answer.problem is None and answer.direction is not None:
            if answer.direction in self._known:
                given = (spec.output_size if answer.direction is asm.Direction.OT
                         else spec.input_size)
                answer = asm.SizeAnswer(None, None, (
                    f"the device wants {answer.data_bytes} data bytes {answer.direction.value},"
                    f" the config says {given}; set {_SIZE_KEY[answer.direction]} ="
                    f" {answer.data_bytes} or leave it out to take the device's size"))
            elif not self._can_retry_now():
                answer = asm.SizeAnswer(None, None, "size negotiation does not converge")
        if answer.problem is not None or answer.direction is None or answer.data_bytes is None:
            self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status,
                       message=f"{self.name}: Forward_Open refused: {r.text}: {answer.problem}")
            return
        data = answer.data_bytes
        self._known.add(answer.direction)
        if answer.direction is asm.Direction.OT:
            end = (asm.layout_end(self.params.output_layout)
                   if self.params.output_layout is not None else 0)
            if end > data:
                self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status,
                           message=f"{self.name}: the device takes {data} output bytes but the"
                           f" declared output_layout needs {end}; fix the output_layout"
                           f" ({r.text})")
                return
            self.ot_bytes = data
        else:
            problem = self._fit_layout(data)
            if problem is not None:
                self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status,
                           message=f"{self.name}: {problem} ({r.text})")
                return
            self.tag_bytes = data
        self._retry_now(r.now, r.status, f"{r.text}: the device wants {data} data bytes"
                        f" {answer.direction.value}; opening again with that size")

    def _fit_layout(self, size: int) -> str | None:
        """The declared layout (if any) covers an input image of ``size`` bytes now."""
        t = self.tag_type
        if not isinstance(t, StructType):
            return None
        end = asm.layout_end(t)
        if end > size:
            return (f"the device produces {size} input bytes but the declared layout needs"
                    f" {end}; fix the layout")
        self.tag_type = replace(t, size=size)
        return None

    def _on_assembly_path_reject(self, r: _Reject) -> None:
        ext = r.additional[0] if r.additional else None
        hint = ASSEMBLY_HINTS.get(ext or 0, "check the connection points against the device's"
                                  " EDS file")
        spec = self.assembly
        assert spec is not None
        self._fail(Trigger.REJECTED_FATAL, r.now, status=r.status, message=(
            f"{self.name}: Forward_Open refused: {r.text}: {hint} ({spec.describe()})"))

    def _on_assembly_transient_reject(self, r: _Reject) -> None:
        ext = r.additional[0] if r.additional else None
        hint = ASSEMBLY_HINTS.get(ext or 0)
        self._enter_backoff(Trigger.REJECTED, r.now, kind="reject", status=r.status,
                            message=f"Forward_Open refused: {r.text}"
                            + (f": {hint}" if hint else ""))

    def _retry_now(self, now: float, status: tuple[int, tuple[int, ...]], message: str) -> None:
        self._immediate += 1
        self._release_triad()
        self._enter_opening(Trigger.REOPEN_NOW, now, kind="reject", message=message,
                            status=status)

    # ------------------------------------------------------------------ reports

    def _assembly_status(self, now: float | None) -> dict[str, object]:
        spec = self.assembly
        assert spec is not None
        out: dict[str, object] = {
            "connection": spec.kind.value, "path": spec.describe(),
            "input_size": self.tag_bytes, "to_run_idle": spec.to_run_idle,
        }
        if not spec.heartbeat:
            fed = self._output is not None
            out.update(output_size=self.ot_bytes, ot_run_idle=spec.ot_run_idle,
                       output="fed" if fed else "not fed: sending zeros in idle mode")
            if self._output_at is not None and now is not None:
                out["output_age_s"] = round(max(0.0, now - self._output_at), 3)
        return out

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        """A plain-data status for the control socket. With ``now``, an outage in progress
        also says how long it lasts and how many datagrams it has cost so far."""
        o = self._open
        out: dict[str, object] = {
            "plc": self.params.plc,
            "tag": self.params.tag,
            "state": self.state.value,
            "size": self.tag_bytes,
            "type": self.tag_type.name if self.tag_type is not None else None,
            "learned": self.learned,
            "rpi_us": self.to_rpi_us,
            "ot_rpi_us": self.ot_rpi_us,
            "multicast": self.params.multicast,
            "failure": self.failure,
            "counters": {k: getattr(self.counters, k) for k in Counters.__dataclass_fields__},
        }
        if o is not None:
            out["serial"] = o.request.connection_serial
            if self.state is State.RUNNING:
                out.update(ot_id=o.ot_id, to_id=o.to_id, ot_api_us=round(o.ot_api_s * 1e6),
                           to_api_us=round(o.to_api_s * 1e6), group=o.group)
        if self.assembly is not None:
            out["assembly"] = self._assembly_status(now)
        if self.last_status is not None:
            out["last_status"] = describe_cip_status(*self.last_status,
                                                     device=self.assembly is not None)
        if self._last_data is not None:
            out["last_data_s"] = self._last_data  # monotonic seconds, the caller's clock
        outage = self._outage
        if outage is not None:
            current: dict[str, object] = {"since_s": outage.start, "cause": outage.cause}
            if now is not None:
                api_s = outage.api_s or self.to_rpi_us / 1e6
                current["for_s"] = round(max(0.0, now - outage.start), 3)
                current["missed"] = expected_samples(outage.start, now, api_s, resumed=False)
            out["outage"] = current
        return out


_ASSEMBLY_REJECT_HANDLERS: Mapping[RejectClass, Callable[[ConsumerConnection, _Reject], None]] = {
    RejectClass.ADOPT_SIZE: ConsumerConnection._on_assembly_size_reject,
    RejectClass.NOT_PRODUCED: ConsumerConnection._on_assembly_path_reject,
    RejectClass.TRANSIENT: ConsumerConnection._on_assembly_transient_reject,
}
"""An assembly consumer's own reject decisions; the other classes act as for a tag."""

_SIZE_KEY: Mapping[asm.Direction, str] = {asm.Direction.OT: "output_size",
                                          asm.Direction.TO: "input_size"}

_REJECT_HANDLERS: Mapping[RejectClass, Callable[[ConsumerConnection, _Reject], None]] = {
    RejectClass.NEW_SERIAL: ConsumerConnection._on_new_serial_reject,
    RejectClass.ADOPT_SIZE: ConsumerConnection._on_adopt_size_reject,
    RejectClass.ADOPT_RPI: ConsumerConnection._on_adopt_rpi_reject,
    RejectClass.AFTER_OLD_TIMEOUT: ConsumerConnection._on_after_old_timeout_reject,
    RejectClass.NOT_PRODUCED: ConsumerConnection._on_not_produced_reject,
    RejectClass.PERMANENT: ConsumerConnection._on_permanent_reject,
    RejectClass.TRANSIENT: ConsumerConnection._on_transient_reject,
}
"""What a Forward_Open reject does, by its class (protocol.md 7.6, 7.7 step 5)."""


def _type_change(old: tuple[int, LogixType | None], new: tuple[int, LogixType | None]) -> str:
    """``32 -> 40 bytes (Drive)`` / ``4 bytes, DINT -> REAL`` for the type-changed event."""
    (old_bytes, old_type), (new_bytes, new_type) = old, new
    old_name = old_type.name if old_type is not None else "?"
    new_name = new_type.name if new_type is not None else "?"
    names = new_name if old_name == new_name else f"{old_name} -> {new_name}"
    if old_bytes != new_bytes:
        return f"{old_bytes} -> {new_bytes} bytes ({names})"
    if old_name == new_name:
        return f"{new_bytes} bytes, {new_name} with a new layout"
    return f"{new_bytes} bytes, {names}"


def _replace_path(request: cm.ForwardOpenRequest, path: bytes) -> cm.ForwardOpenRequest:
    return replace(request, path=path)
