"""The class-1 receive path: one UDP datagram in, at most one accepted delivery out.

Owns: the routing table (T->O connection id, source address and port) -> connection, admission
of each datagram (layout, id, source, size, freshness and plausibility of the 32-bit sequence)
and the drop counters by reason. Implements protocol.md 5.7 (the T->O id is the demultiplexing
key; P2P ids are ours, multicast ids the producer's), 6.1 (datagram layout), 6.4 (32-bit
sequence: accept only newer, count the datagrams skipped) and 6.5 (a target accepts data only
from the peer that opened the connection; we do the same for T->O).

Whom a datagram is believed from: the controller's address **and** its class-1 UDP port, the
port we send its heartbeats to (2222 on a real controller, whose class-1 packets leave from
0x08AE; the simulator's or ``udp_port`` of the config otherwise). A datagram with a live id from
the controller's address but another port is dropped as ``wrong_port``: on a shared host any
local process could otherwise inject values.

A 32-bit sequence that jumps further ahead than the connection's watchdog allows
(``max_jump``: the timeout multiplier; a longer silence would have timed the connection out) is
``seq_jump``: dropped, never delivered, and the route keeps its place, so one forged datagram
cannot make the real ones look stale. A real jump (our socket buffer overflowed while the
process was stopped) is followed by datagrams that continue from it: when the next datagram is
the jumped one's successor within the window, the route resynchronises there and the skipped
datagrams are reported as missed.

Nothing here raises on network bytes: every datagram is either delivered or dropped and counted
(``DropReason``), so a receive loop cannot be crashed by a hostile or broken sender. The cheap
checks come first (length and item types, then the id and the sender), so a flood of junk costs
one ``unpack_from`` and a dictionary lookup per datagram.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Hashable
from dataclasses import dataclass, field

from pyconpro.acquisition import class1
from pyconpro.acquisition.errors import UsageError

__all__ = ["Delivery", "Demux", "DropReason", "Route", "Source"]

#: Where a datagram comes from: (IPv4 address, UDP port), as ``recvfrom`` reports it.
Source = tuple[str, int]

# The 20-byte prefix of a class-1 datagram (protocol.md 6.1): item count, sequenced address
# item type, its length, T->O connection id, 32-bit sequence, connected data item type, its
# length, CIP sequence count.
_PREFIX = struct.Struct("<HHHIIHHH")
_SEQUENCED_ADDRESS = 0x8002
_CONNECTED_DATA = 0x00B1


class DropReason(enum.StrEnum):
    MALFORMED = "malformed"  # not a class-1 datagram (layout, lengths)
    UNKNOWN_ID = "unknown_id"  # no live connection has this T->O id
    WRONG_SOURCE = "wrong_source"  # the id is ours, the sender's address is not the PLC's
    WRONG_PORT = "wrong_port"  # the PLC's address, but not its class-1 UDP port
    STALE = "stale"  # 32-bit sequence not newer than the last accepted (duplicate/reordered)
    SEQ_JUMP = "seq_jump"  # 32-bit sequence further ahead than the watchdog allows
    WRONG_SIZE = "wrong_size"  # data length differs from the tag size of the connection


@dataclass(slots=True)
class Route:
    """One T->O stream. Several owners share it when they consume the same multicast stream."""

    source: Source
    connection_id: int
    data_size: int
    max_jump: int | None = None  # largest plausible sequence step; None: any
    owners: list[Hashable] = field(default_factory=list)
    last_seq32: int | None = None
    jumped_to: int | None = None  # sequence of the last datagram dropped as a jump
    accepted: int = 0
    missed: int = 0  # of the last accepted datagram: datagrams skipped before it
    cip_sequence: int = 0  # of the last accepted datagram: its CIP sequence count


@dataclass(frozen=True, slots=True)
class Delivery:
    """An accepted datagram: who gets it, what it carried, how many datagrams were skipped."""

    owners: tuple[Hashable, ...]
    datagram: class1.Class1Datagram
    missed: int


class Demux:
    """(T->O id, source address and port) -> Route in O(1); counts drops by reason.

    ``last_dropped[reason]`` is the source of the latest datagram dropped for that reason (for
    the message that reports a flood).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, dict[Source, Route]] = {}
        self.drops: dict[DropReason, int] = {r: 0 for r in DropReason}
        self.last_dropped: dict[DropReason, Source] = {}
        self.accepted = 0

    def add(
        self,
        source: Source,
        connection_id: int,
        data_size: int,
        owner: Hashable,
        *,
        max_jump: int | None = None,
    ) -> Route:
        """Route datagrams of ``connection_id`` from ``source`` (address, port) to ``owner``.

        A second owner of the same stream must expect the same size (it is the same data).
        ``max_jump``: the largest sequence step believed (the connection's timeout multiplier).
        """
        if max_jump is not None and max_jump < 1:
            raise UsageError(f"max_jump must be at least 1, not {max_jump}")
        by_src = self._by_id.setdefault(connection_id, {})
        route = by_src.get(source)
        if route is None:
            route = by_src[source] = Route(source, connection_id, data_size, max_jump)
        elif route.data_size != data_size:
            raise UsageError(
                f"T->O id 0x{connection_id:08X} from {source[0]}:{source[1]} is already routed"
                f" with {route.data_size} data bytes, not {data_size}"
            )
        if owner not in route.owners:
            route.owners.append(owner)
        return route

    def remove(self, source: Source, connection_id: int, owner: Hashable) -> None:
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

    def route(self, source: Source, connection_id: int) -> Route | None:
        by_src = self._by_id.get(connection_id)
        return by_src.get(source) if by_src else None

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())

    def _drop(self, reason: DropReason, source: Source) -> None:
        self.drops[reason] += 1
        self.last_dropped[reason] = source

    def receive(self, data: bytes, source: Source) -> Delivery | None:
        """Admit one datagram from ``source`` (the sender's address and port) or drop it."""
        route = self.admit(data, source)
        if route is None:
            return None
        dgram = class1.Class1Datagram(route.connection_id, route.last_seq32 or 0,
                                      route.cip_sequence, data[class1.PREFIX_SIZE:])
        return Delivery(tuple(route.owners), dgram, route.missed)

    def admit(self, data: bytes, source: Source) -> Route | None:
        """``receive`` without a ``Delivery``: the route of an accepted datagram, whose
        ``missed`` and ``cip_sequence`` describe it (its data is ``data[PREFIX_SIZE:]``), or
        None when it was dropped. The receive loop's form: it creates no object per datagram.
        """
        if len(data) < class1.PREFIX_SIZE:
            self._drop(DropReason.MALFORMED, source)
            return None
        count, item_type, item_len, cid, seq, data_type, data_len, cseq = _PREFIX.unpack_from(
            data)
        if count != 2 or item_type != _SEQUENCED_ADDRESS or item_len != 8:
            self._drop(DropReason.MALFORMED, source)
            return None
        by_src = self._by_id.get(cid)
        if by_src is None:
            self._drop(DropReason.UNKNOWN_ID, source)
            return None
        route = by_src.get(source)
        if route is None:
            same_host = any(src[0] == source[0] for src in by_src)
            self._drop(DropReason.WRONG_PORT if same_host else DropReason.WRONG_SOURCE, source)
            return None
        # The connected data item (class1.Class1Datagram.decode's checks, without decoding).
        if data_type != _CONNECTED_DATA or data_len != len(data) - 18:
            self._drop(DropReason.MALFORMED, source)
            return None
        if len(data) - class1.PREFIX_SIZE != route.data_size:
            self._drop(DropReason.WRONG_SIZE, source)
            return None
        missed = self._admit(route, seq, source)
        if missed is None:
            return None
        route.last_seq32 = seq
        route.jumped_to = None
        route.accepted += 1
        route.missed = missed
        route.cip_sequence = cseq
        self.accepted += 1
        return route

    def _admit(self, route: Route, seq: int, source: Source) -> int | None:
        """The datagrams skipped before ``seq``, or None when it is dropped (and counted)."""
        if route.last_seq32 is None:
            return 0
        diff = class1.seq32_diff(seq, route.last_seq32)
        if diff <= 0:
            self._drop(DropReason.STALE, source)
            return None
        limit = route.max_jump
        if limit is None or diff <= limit:
            return diff - 1
        # Too far ahead: believed only when the previous datagram jumped to just before it.
        jumped = route.jumped_to
        if jumped is not None and 0 < class1.seq32_diff(seq, jumped) <= limit:
            return diff - 1
        route.jumped_to = seq
        self._drop(DropReason.SEQ_JUMP, source)
        return None

    def counters(self) -> dict[str, int]:
        out = {f"drop_{r.value}": n for r, n in self.drops.items()}
        out["accepted"] = self.accepted
        out["routes"] = len(self)
        return out
