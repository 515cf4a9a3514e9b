"""What a consumer connection is made of, pure: its parameters, timeouts and back-off policy,
the originator's identity and id allocator, and the flight recorder.

``ConsumerParams`` is one consumer as the connection machine (``acquisition.connection``) needs
it; ``Timing`` and ``BackoffPolicy`` its local timeouts and retry delays (protocol.md 7.7 step
6); ``SessionPolicy`` how the per-PLC session machine (``acquisition.session.PlcSession``)
reconnects and paces its requests (the pipeline's ``reconnect_min_s``, ``reconnect_max_s``,
``connect_timeout_s``, ``max_in_flight``); ``Originator`` the serials and
T->O connection ids of one worker run (protocol.md 5.3, 5.7, 7.7 step 4); ``FlightRecorder``
the last datagrams and messages each way, for error reports (STYLE.md #16).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from pyconpro.acquisition import cm, epath
from pyconpro.acquisition.assembly import AssemblySpec
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_types import LogixType, StructType, byte_size
from pyconpro.acquisition.source_time import SourceTimeError, locate

__all__ = ["BackoffPolicy", "ConsumerParams", "FlightRecorder", "Originator", "Recorded",
           "RECORD_BYTES", "RECORD_SIZE", "Rng", "SessionPolicy", "Timing", "what_code"]


class Rng(Protocol):
    """What we need from ``random.Random`` (injected so tests are deterministic)."""

    def getrandbits(self, k: int) -> int: ...

    def random(self) -> float: ...


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before attempt n (n = 0 after the first failure): nominal = min(cap, base * 2**n),
    actual uniform in [nominal * (1 - jitter), nominal] so it never exceeds the cap and
    originators restarted together spread out (protocol.md 7.7 step 6)."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s and 0 <= self.jitter < 1):
            raise UsageError("back-off needs 0 < base <= cap and 0 <= jitter < 1")

    def nominal(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * (2.0 ** min(attempt, 64)))

    def delay(self, attempt: int, rng: Rng) -> float:
        nominal = self.nominal(attempt)
        return nominal * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How the session to one PLC comes back after a failure, and how hard it is used.

    Reachability attempts are cheap (one TCP SYN), so the reconnect schedule is short and
    capped: ``reconnect_min_s`` after the first failure, doubling to at most
    ``reconnect_max_s`` (with jitter below it), whatever the outage length; a PLC that
    accepts TCP again is found within ``reconnect_max_s``. ``connect_timeout_s`` bounds one TCP
    connect that gets no answer (a PLC that is off or unreachable); ``max_in_flight`` bounds
    the unconnected requests (Forward_Open, Forward_Close, tag listing) sent to the PLC at
    once: when hundreds of consumers reopen together the rest follow as earlier ones are
    answered."""

    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 0.5
    connect_timeout_s: float = 2.0
    max_in_flight: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise UsageError(
                f"reconnect_min_s {self.reconnect_min_s:g} and reconnect_max_s"
                f" {self.reconnect_max_s:g}: need 0 < reconnect_min_s <= reconnect_max_s")
        if self.connect_timeout_s <= 0:
            raise UsageError(f"connect_timeout_s {self.connect_timeout_s:g}: give positive"
                             " seconds")
        if self.max_in_flight < 1:
            raise UsageError(f"max_in_flight {self.max_in_flight}: at least 1 request")

    def backoff(self, jitter: float = 0.25) -> BackoffPolicy:
        """The reconnect schedule as a back-off policy."""
        return BackoffPolicy(self.reconnect_min_s, self.reconnect_max_s, jitter)


@dataclass(frozen=True, slots=True)
class Timing:
    """Local timeouts (seconds). ``request_s`` bounds a Forward_Open/Close exchange,
    ``resolve_s`` a size discovery; ``first_data_s`` is the least time allowed for the first
    T->O datagram after the reply (a producer may start one RPI late); ``old_connection_margin_s``
    is added to the old connection's timeout before retrying on 0x031E/0x0113."""

    request_s: float = 10.0
    resolve_s: float = 30.0
    first_data_s: float = 2.0
    old_connection_margin_s: float = 0.5
    max_immediate_retries: int = 3


@dataclass(frozen=True, slots=True)
class ConsumerParams:
    """One consumer as the connection needs it.

    ``tag_bytes`` is the tag image size without the 2-byte sequence count (None = learn it);
    ``tag_type`` the Logix type when known (its size then checks ``tag_bytes`` and a 0x0109
    answer). ``multiplier`` is the wire code 0..7 (x4..x512). ``route`` are port segments
    placed before ``01 <slot>``; ``plc_udp_port`` is where heartbeats go.

    ``assembly``: this consumer reads a generic adapter's assembly, not a Logix tag
    (``acquisition.assembly``); ``tag`` is then only its name, ``slot`` None means no port
    segment (a device that owns its IP), ``tag_bytes`` the input size and ``tag_type`` its
    declared layout, if any; ``output_layout`` the declared layout of an exclusive owner's
    output image (``set_output`` then takes a map of its fields too).
    """

    plc: str
    tag: str
    rpi_us: int
    ot_rpi_us: int | None = None
    multiplier: int = 1
    multicast: bool = False
    slot: int | None = 0
    route: tuple[epath.PortSegment, ...] = ()
    tag_bytes: int | None = None
    tag_type: LogixType | None = None
    plc_udp_port: int = 2222
    assembly: AssemblySpec | None = None
    output_layout: StructType | None = None
    source_time: str | None = None  # the UDT member holding the controller's time

    def __post_init__(self) -> None:
        cm.multiplier_factor(self.multiplier)
        if self.rpi_us <= 0 or (self.ot_rpi_us is not None and self.ot_rpi_us <= 0):
            raise UsageError(f"{self.plc}/{self.tag}: RPIs must be positive microseconds")
        if self.assembly is not None:
            if self.multicast:
                raise UsageError(f"{self.plc}/{self.tag}: assembly connections are point to"
                                 " point here; use transport = \"unicast\"")
            self._check_path()
            return
        if self.tag_bytes is not None and not 0 < self.tag_bytes <= cm.MAX_PRODUCED_TAG_BYTES:
            raise UsageError(
                f"{self.plc}/{self.tag}: size {self.tag_bytes} bytes is outside 1..500, the"
                " limit of a standard produced tag (README: Configuring the produced tag in"
                " Studio 5000)"
            )
        if (self.tag_type is not None and self.tag_bytes is not None
                and byte_size(self.tag_type) != self.tag_bytes):
            raise UsageError(
                f"{self.plc}/{self.tag}: size {self.tag_bytes} does not match type"
                f" {self.tag_type.name} ({byte_size(self.tag_type)} bytes); fix one of them"
            )
        self._check_path()
        if self.source_time is not None and self.tag_type is not None:
            try:
                locate(self.tag_type, self.source_time, self.tag)
            except SourceTimeError as exc:
                raise UsageError(str(exc)) from None

    @property
    def ot_rpi(self) -> int:
        return self.ot_rpi_us if self.ot_rpi_us is not None else self.rpi_us

    @property
    def factor(self) -> int:
        return cm.multiplier_factor(self.multiplier)

    @property
    def hops(self) -> tuple[epath.PortSegment, ...]:
        """The port segments before the application path: the route, then ``01 <slot>``."""
        return self.route + ((epath.PortSegment.slot(self.slot),) if self.slot is not None
                             else ())

    def _check_path(self) -> None:
        """The whole connection path (route, slot, tag name or points) is checked now, not at
        the first Forward_Open: a type learned first would put a refusal in the worker's loop
        instead of the caller's ``add``."""
        path = self.connection_path()
        if len(path) > cm.MAX_CONNECTION_PATH_BYTES:
            raise UsageError(
                f"{self.plc}/{self.tag}: the connection path (route, slot and tag) is"
                f" {len(path)} bytes; a Forward_Open carries at most"
                f" {cm.MAX_CONNECTION_PATH_BYTES}: use fewer route hops")

    def connection_path(self) -> bytes:
        if self.assembly is not None:
            return self.assembly.connection_path(self.hops)
        return b"".join(seg.encode() for seg in self.route) + epath.produced_tag_connection_path(
            self.tag, self.slot
        )


# --------------------------------------------------------------------------- originator


class Originator:
    """The originator identity of one worker run and its id allocator.

    ``serial`` is random per worker start (the caller logs it, protocol.md 7.7 step 4), so a
    restarted worker never collides with its previous run's triads. Connection serials and P2P
    T->O ids are random, never 0, unique among live connections; a serial is also kept out of
    reuse for the next ``recent`` allocations because the PLC may still hold the old one.
    """

    def __init__(self, rng: Rng, vendor_id: int = 0x5059, serial: int | None = None,
                 recent: int = 1024) -> None:
        self.rng = rng
        self.vendor_id = vendor_id
        self.serial = serial if serial is not None else self._nonzero(32)
        self._live_serials: set[int] = set()
        self._recent_serials: deque[int] = deque(maxlen=recent)
        self._recent_set: set[int] = set()
        self._live_ids: set[int] = set()

    def _nonzero(self, bits: int) -> int:
        while True:
            v = self.rng.getrandbits(bits)
            if v:
                return v

    def new_serial(self) -> int:
        for _ in range(100_000):
            v = self._nonzero(16)
            if v not in self._live_serials and v not in self._recent_set:
                break
        else:  # pragma: no cover - needs ~65000 live connections
            raise UsageError("no free connection serial: too many live connections")
        if len(self._recent_serials) == self._recent_serials.maxlen:
            self._recent_set.discard(self._recent_serials[0])
        self._recent_serials.append(v)
        self._recent_set.add(v)
        self._live_serials.add(v)
        return v

    def release_serial(self, serial: int) -> None:
        self._live_serials.discard(serial)

    def new_connection_id(self) -> int:
        while True:
            v = self._nonzero(32)
            if v not in self._live_ids:
                self._live_ids.add(v)
                return v

    def release_connection_id(self, cid: int) -> None:
        self._live_ids.discard(cid)

    @property
    def live_connection_ids(self) -> frozenset[int]:
        return frozenset(self._live_ids)


# --------------------------------------------------------------------------- flight recorder

# One record of the ring (little-endian, no padding): receive/send time (monotonic seconds),
# the datagram's full length, the code of what it was (``what_code``), its first
# ``RECORD_BYTES`` bytes (zero-padded). The compiled receive path (workers/_fastpath.c) writes
# the same layout; tests/workers/test_fastpath.py holds both to it.
_RECORD = struct.Struct("<dIH2x64s")
RECORD_SIZE = _RECORD.size  # 80
RECORD_BYTES = 64  # bytes of each datagram kept (the dump shows at most these)
_COUNTS = 16  # two u64 counters (records in, records out) at the start of the ring

_WHAT: list[str] = []  # code -> what was recorded ("T->O", "heartbeat", ...)
_WHAT_CODES: dict[str, int] = {}


def what_code(what: str) -> int:
    """The ring's code for ``what`` (the kinds are few and fixed by the code that records)."""
    code = _WHAT_CODES.get(what)
    if code is None:
        if len(_WHAT) > 0xFFFF:
            raise UsageError("too many kinds of flight recorder entries")
        code = _WHAT_CODES[what] = len(_WHAT)
        _WHAT.append(what)
    return code


@dataclass(frozen=True, slots=True)
class Recorded:
    """One entry, formatted from the ring when asked: ``data`` holds at most ``RECORD_BYTES``
    of the ``size`` bytes recorded."""

    t: float
    what: str
    data: bytes
    size: int


class FlightRecorder:
    """The last ``size`` datagrams/messages in each direction (STYLE.md #16), for error reports.

    A preallocated ring of bytes (``buf``): recording one datagram is one ``pack_into`` and
    creates no object, because the receive path records every datagram and the recorder is
    read only when something failed or somebody asks. Layout: the number of records written
    in and out (two native u64), then ``size`` incoming records, then ``size`` outgoing ones
    (``_RECORD``); record k of a direction is in slot k % size.
    """

    __slots__ = ("_codes", "_counts", "buf", "size")

    def __init__(self, size: int = 8) -> None:
        if size < 1:
            raise UsageError("a flight recorder holds at least one record each way")
        self.size = size
        self.buf = bytearray(_COUNTS + 2 * size * RECORD_SIZE)
        self._counts = memoryview(self.buf)[:_COUNTS].cast("Q")
        self._codes = _WHAT_CODES

    def record_in(self, now: float, what: str, data: bytes) -> None:
        counts = self._counts
        k = counts[0]
        counts[0] = k + 1
        code = self._codes.get(what)
        _RECORD.pack_into(self.buf, _COUNTS + (k % self.size) * RECORD_SIZE, now, len(data),
                          what_code(what) if code is None else code, data)

    def record_out(self, now: float, what: str, data: bytes) -> None:
        counts = self._counts
        k = counts[1]
        counts[1] = k + 1
        code = self._codes.get(what)
        _RECORD.pack_into(self.buf, _COUNTS + (self.size + k % self.size) * RECORD_SIZE, now,
                          len(data), what_code(what) if code is None else code, data)

    def _entries(self, direction: int) -> list[Recorded]:
        size, written = self.size, self._counts[direction]
        base = _COUNTS + direction * size * RECORD_SIZE
        out = []
        for k in range(max(0, written - size), written):
            t, n, code, data = _RECORD.unpack_from(self.buf, base + (k % size) * RECORD_SIZE)
            what = _WHAT[code] if code < len(_WHAT) else f"entry {code}"
            out.append(Recorded(t, what, data[:min(n, RECORD_BYTES)], n))
        return out

    @property
    def incoming(self) -> list[Recorded]:
        """What was received, oldest first."""
        return self._entries(0)

    @property
    def outgoing(self) -> list[Recorded]:
        """What was sent, oldest first."""
        return self._entries(1)

    def dump(self, max_bytes: int = RECORD_BYTES) -> list[str]:
        """One line per entry (sent, then received): time, direction, what, size, hex."""
        max_bytes = min(max_bytes, RECORD_BYTES)
        lines = []
        for arrow, items in (("->", self.outgoing), ("<-", self.incoming)):
            for r in items:
                hx = r.data[:max_bytes].hex(" ")
                more = f" ... (+{r.size - max_bytes})" if r.size > max_bytes else ""
                lines.append(f"{r.t:.3f} {arrow} {r.what} [{r.size}] {hx}{more}")
        return lines
