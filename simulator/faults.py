"""Fault injection for the simulator (protocol.md 10.4 item 13): what goes wrong, and when.

``FaultSettings`` is the switchable state (from CLI flags at start, or the control channel at
run time). ``DatagramFaults`` applies the T->O datagram faults — drop, duplicate, reorder,
delay, stop producing — to what ``ProducerTarget.on_timer`` wants to send; it is pure (time is
an argument, randomness comes from a seeded ``random.Random``) so tests drive it with a fake
clock. The TCP-side switches (stop answering, refuse RegisterSession) are read by the server,
and so is ``endless_listing``: the symbol listing (0x55) never ends, ``endless_listing_reply``
answers it in its place (a hostile or broken controller, for the listing limits of
``acquisition.discovery.ListingLimits``).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pyconpro.acquisition import cip, epath
from pyconpro.acquisition.discovery import SYMBOL_CLASS
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_objects import (
    SymbolInstance,
    encode_symbol_instances,
    parse_attribute_ids,
)
from pyconpro.acquisition.logix_types import DINT
from pyconpro.acquisition.status import GeneralStatus

Datagram = tuple[bytes, tuple[str, int]]

#: How long a datagram held back for reordering waits for a successor before it goes anyway.
REORDER_HOLD_S = 0.5
ENDLESS_LISTING_MODES = ("", "new", "repeat")
_ENDLESS_PAGE = 8  # symbols per page of an endless listing (fits an unconnected reply)


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Every switch; the defaults inject nothing. Rates are probabilities per datagram."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_s: float = 0.0
    delay_rate: float = 1.0  # share of datagrams delayed by ``delay_s`` (when delay_s > 0)
    stop_producing: bool = False
    stop_answering_tcp: bool = False
    refuse_register: bool = False
    # The symbol listing never ends: "new" lists new tags forever, "repeat" the same tags again
    # and again under new instance numbers; "" answers it truly.
    endless_listing: str = ""

    def __post_init__(self) -> None:
        if self.endless_listing not in ENDLESS_LISTING_MODES:
            raise ValueError(f"fault endless_listing={self.endless_listing!r}: give one of"
                             f" {', '.join(map(repr, ENDLESS_LISTING_MODES))}")
        for name in ("drop", "duplicate", "reorder", "delay_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name}={value!r}: give a probability between 0 and 1")
        if not isinstance(self.delay_s, (int, float)) or not 0.0 <= self.delay_s <= 60.0:
            raise ValueError(f"fault delay_s={self.delay_s!r}: give seconds between 0 and 60")

    def updated(self, changes: dict[str, Any]) -> FaultSettings:
        """A copy with ``changes`` applied; unknown names raise ValueError naming the valid ones."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(names)}")
        for key in ("stop_producing", "stop_answering_tcp", "refuse_register"):
            if key in changes and not isinstance(changes[key], bool):
                raise ValueError(f"fault {key} must be true or false, not {changes[key]!r}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self != FaultSettings()


@dataclass(slots=True)
class FaultCounters:
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    suppressed: int = 0  # not sent because production is stopped

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class DatagramFaults:
    """Applies ``settings`` to outgoing T->O datagrams."""

    settings: FaultSettings = field(default_factory=FaultSettings)
    rng: random.Random = field(default_factory=random.Random)
    counters: FaultCounters = field(default_factory=FaultCounters)
    _delayed: list[tuple[float, int, Datagram]] = field(default_factory=list)
    _held: dict[tuple[str, int], tuple[float, Datagram]] = field(default_factory=dict)
    _order: int = 0

    def process(self, datagrams: list[Datagram], now: float) -> list[Datagram]:
        """What to send now for the datagrams produced now (plus nothing that is only due
        later: call ``due`` for those)."""
        s = self.settings
        out: list[Datagram] = []
        for dgram in datagrams:
            if s.stop_producing:
                self.counters.suppressed += 1
                continue
            if s.drop and self.rng.random() < s.drop:
                self.counters.dropped += 1
                continue
            copies = [dgram]
            if s.duplicate and self.rng.random() < s.duplicate:
                self.counters.duplicated += 1
                copies.append(dgram)
            for c in copies:
                if s.delay_s > 0 and self.rng.random() < s.delay_rate:
                    self.counters.delayed += 1
                    self._order += 1
                    heapq.heappush(self._delayed, (now + s.delay_s, self._order, c))
                else:
                    out.extend(self._reorder(c, now))
        return out

    def _reorder(self, dgram: Datagram, now: float) -> list[Datagram]:
        dest = dgram[1]
        held = self._held.pop(dest, None)
        if held is not None:
            return [dgram, held[1]]  # the held one goes after its successor: swapped
        if self.settings.reorder and self.rng.random() < self.settings.reorder:
            self.counters.reordered += 1
            self._held[dest] = (now + REORDER_HOLD_S, dgram)
            return []
        return [dgram]

    def next_deadline(self) -> float | None:
        times = [t for t, _ in self._held.values()]
        if self._delayed:
            times.append(self._delayed[0][0])
        return min(times) if times else None

    def due(self, now: float) -> list[Datagram]:
        """Delayed datagrams whose time has come, and held ones that waited too long."""
        out: list[Datagram] = []
        while self._delayed and self._delayed[0][0] <= now:
            out.append(heapq.heappop(self._delayed)[2])
        for dest, (t, dgram) in list(self._held.items()):
            if t <= now:
                del self._held[dest]
                out.append(dgram)
        return out

    def clear(self) -> None:
        """Forget queued datagrams (restart, or faults switched off)."""
        self._delayed.clear()
        self._held.clear()

    def pending(self) -> int:
        return len(self._delayed) + len(self._held)


def endless_listing_reply(message: bytes, mode: str) -> bytes | None:
    """The reply of a controller whose symbol listing never ends to ``message``, when it asks
    for the listing (0x55 on the Symbol class, straight or inside Unconnected_Send); None for
    any other request (the controller answers those). Every page is "partial, more follows"
    (0x06): ``mode`` "new" lists new DINT tags ``Endless<n>`` forever, "repeat" the same
    ``_ENDLESS_PAGE`` names again under ever higher instance numbers."""
    try:
        req = cip.Request.decode(message)
        if (req.service == cip.Service.UNCONNECTED_SEND
                and req.path == epath.CONNECTION_MANAGER_PATH):
            req = cip.Request.decode(cip.UnconnectedSend.decode(req.data).message)
        logical = [s.value for s in epath.decode_path(req.path)
                   if isinstance(s, epath.LogicalSegment)]  # fmt: skip
        attrs = parse_attribute_ids(req.data)
    except (MalformedPacket, UsageError, ValueError):
        return None
    if req.service != cip.Service.GET_INSTANCE_ATTRIBUTE_LIST or logical[:1] != [SYMBOL_CLASS]:
        return None
    start = logical[1] if len(logical) > 1 else 0
    page = [SymbolInstance.for_tag(start + i, f"Endless{start + i if mode == 'new' else i}", DINT)
            for i in range(_ENDLESS_PAGE)]  # fmt: skip
    try:
        data = encode_symbol_instances(page, attrs)
    except UsageError:
        return None
    return cip.Reply(req.service, GeneralStatus.PARTIAL_TRANSFER, (), data).encode()
