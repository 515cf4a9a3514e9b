"""The class-1 receive path: one UDP datagram in, at most one accepted delivery out.

Owns: the routing table (source address, T->O connection id) -> connection, admission of each
datagram (layout, source, id, freshness of the 32-bit sequence, size) and the drop counters by
reason. Implements protocol.md 5.7 (the T->O id is the demultiplexing key; P2P ids are ours,
multicast ids the producer's), 6.1 (datagram layout), 6.4 (32-bit sequence: accept only newer,
count the datagrams skipped) and 6.5 (a target accepts data only from the peer that opened the
connection; we do the same for T->O).

Nothing here raises on network bytes: every datagram is either delivered or dropped and counted
(``DropReason``), so a receive loop cannot be crashed by a hostile or broken sender.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field

from pyconpro.acquisition import class1
from pyconpro.acquisition.errors import MalformedPacket, UsageError

__all__ = ["Delivery", "Demux", "DropReason", "Route"]


class DropReason(enum.StrEnum):
    MALFORMED = "malformed"  # not a class-1 datagram (layout, lengths)
    UNKNOWN_ID = "unknown_id"  # no live connection has this T->O id
    WRONG_SOURCE = "wrong_source"  # the id is ours, the sender is not the PLC that owns it
    STALE = "stale"  # 32-bit sequence not newer than the last accepted (duplicate/reordered)
    WRONG_SIZE = "wrong_size"  # data length differs from the tag size of the connection


@dataclass(slots=True)
class Route:
    """One T->O stream. Several owners share it when they consume the same multicast stream."""

    source: str
    connection_id: int
    data_size: int
    owners: list[Hashable] = field(default_factory=list)
    last_seq32: int | None = None
    accepted: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """An accepted datagram: who gets it, what it carried, how many datagrams were skipped."""

    owners: tuple[Hashable, ...]
    datagram: class1.Class1Datagram
    missed: int


class Demux:
    """(source ip, T->O id) -> Route in O(1); counts drops by reason."""

    def __init__(self) -> None:
        self._by_id: dict[int, dict[str, Route]] = {}
        self.drops: dict[DropReason, int] = {r: 0 for r in DropReason}
        self.accepted = 0

    def add(self, source: str, connection_id: int, data_size: int, owner: Hashable) -> Route:
        """Route datagrams of ``connection_id`` from ``source`` to ``owner``.

        A second owner of the same stream must expect the same size (it is the same data).
        """
        by_src = self._by_id.setdefault(connection_id, {})
        route = by_src.get(source)
        if route is None:
            route = by_src[source] = Route(source, connection_id, data_size)
        elif route.data_size != data_size:
            raise UsageError(
                f"T->O id 0x{connection_id:08X} from {source} is already routed with"
                f" {route.data_size} data bytes, not {data_size}"
            )
        if owner not in route.owners:
            route.owners.append(owner)
        return route

    def remove(self, source: str, connection_id: int, owner: Hashable) -> None:
        by_src = self._by_id.get(connection_id)
        route = by_src.get(source) if by_src else None
        if route is None or by_src is None:
            return
        if owner in route.owners:
            route.owners.remove(owner)
        if not route.owners:
            del by_src[source]
            if not by_src:
                del self._by_id[connection_id]

    def route(self, source: str, connection_id: int) -> Route | None:
        by_src = self._by_id.get(connection_id)
        return by_src.get(source) if by_src else None

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())

    def _drop(self, reason: DropReason) -> None:
        self.drops[reason] += 1

    def receive(self, data: bytes, source: str) -> Delivery | None:
        """Admit one datagram from ``source`` (the sender's IPv4 address) or drop and count it."""
        try:
            dgram = class1.Class1Datagram.decode(data)
        except MalformedPacket:
            self._drop(DropReason.MALFORMED)
            return None
        by_src = self._by_id.get(dgram.connection_id)
        if by_src is None:
            self._drop(DropReason.UNKNOWN_ID)
            return None
        route = by_src.get(source)
        if route is None:
            self._drop(DropReason.WRONG_SOURCE)
            return None
        if len(dgram.data) != route.data_size:
            self._drop(DropReason.WRONG_SIZE)
            return None
        missed = 0
        if route.last_seq32 is not None:
            diff = class1.seq32_diff(dgram.sequence, route.last_seq32)
            if diff <= 0:
                self._drop(DropReason.STALE)
                return None
            missed = diff - 1
        route.last_seq32 = dgram.sequence
        route.accepted += 1
        self.accepted += 1
        return Delivery(tuple(route.owners), dgram, missed)

    def counters(self) -> dict[str, int]:
        out = {f"drop_{r.value}": n for r, n in self.drops.items()}
        out["accepted"] = self.accepted
        out["routes"] = len(self)
        return out
