"""Who subscribed to what on the public bus endpoint, within caps (pure).

The supervisor's forwarder runs its public XPUB in manual mode (``workers/forwarder.py``):
libzmq hands it every (un)subscription message a subscriber sends, with the sending
connection's metadata, and applies a subscription to its matching table only when the
forwarder says so. This table makes that decision and keeps the counts:

- a subscription longer than ``max_bytes`` is refused (``too_long``): no topic the pipeline
  publishes is that long (``TOPIC_MAX_BYTES``, the configuration checks its topics against it);
- a *peer* holds at most ``per_peer`` subscriptions (``peer_full``), all peers together at most
  ``total`` (``bus_full``);
- every refusal is counted; the first one of a peer says so (``Refusal.first``) so that the
  forwarder logs it once, with the peer's address.

A *peer* is what the connection's metadata tells: its address (``Peer-Address``: the IP
address of a TCP connection, ``:uid:gid:pid`` of an ipc one) and, with CURVE, its public key
(``User-Id``). libzmq does not say which of one address's TCP connections a message came from,
so two subscribers on one host without CURVE share a peer's cap.

Unsubscriptions: an explicit one names its peer. When a connection ends libzmq sends an
unsubscription for each topic it held, without metadata (``peer=None``); the forwarder tells
the table which address it saw leave (``left``) and the table releases the holding of that
address first (any peer's otherwise). ``gone`` drops every peer of an address that has no
connection left, whatever was missed: the counts cannot drift past the life of a peer.

Only the replay markers (``replay/<id>/``) go upstream one by one (``Upstream`` in
``take_outputs()``: the first holder subscribes, the last one's leaving unsubscribes): the
forwarder subscribes its publishers to everything otherwise, so what a subscriber asks for
never reaches the workers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

__all__ = [
    "REFUSALS",
    "TOPIC_MAX_BYTES",
    "Peer",
    "Refusal",
    "SubscriptionLimits",
    "SubscriptionTable",
    "Upstream",
]

# The longest subscription the bus takes, in bytes. Topics are ``kind/<plc>/<tag>/`` with the
# names escaped (docs/wire-format.md); the configuration refuses names whose topic is longer.
TOPIC_MAX_BYTES: Final = 512
PER_PEER_DEFAULT: Final = 1000
TOTAL_DEFAULT: Final = 10_000
REPLAY_PREFIX: Final = b"replay/"
_LEFT_MEMORY_S: Final = 5.0  # how long an address that left is preferred for anonymous releases


class Refusal(Enum):
    TOO_LONG = "too_long"
    PEER_FULL = "peer_full"
    BUS_FULL = "bus_full"


REFUSALS: Final = tuple(r.value for r in Refusal)


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """``[bus] max_subscriptions_per_peer``, ``max_subscriptions``; ``max_bytes`` is fixed."""

    per_peer: int = PER_PEER_DEFAULT
    total: int = TOTAL_DEFAULT
    max_bytes: int = TOPIC_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Peer:
    """A subscriber as its connection's metadata names it (``key``: a CURVE user id or "")."""

    address: str
    key: str = ""

    def __str__(self) -> str:
        where = self.address or "an unknown address"
        return f"{where} (CURVE key {self.key})" if self.key else where


@dataclass(frozen=True, slots=True)
class Upstream:
    """Send ``b"\\x01" + topic`` (subscribe) or ``b"\\x00" + topic`` upstream."""

    subscribe: bool
    topic: bytes

    @property
    def frame(self) -> bytes:
        return (b"\x01" if self.subscribe else b"\x00") + self.topic


@dataclass(slots=True)
class _PeerState:
    held: dict[bytes, int] = field(default_factory=dict)  # topic -> holdings
    count: int = 0  # sum of held
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``subscribe`` decided: ``refusal`` None = apply it; ``first``: the first refusal
    of this peer (log it)."""

    refusal: Refusal | None
    first: bool = False


_ACCEPT: Final = Decision(None)


class SubscriptionTable:
    """``subscribe`` / ``unsubscribe`` per message, ``left`` / ``gone`` per connection end;
    ``take_outputs()`` the upstream (un)subscriptions; ``stats()`` for ``status``."""

    def __init__(self, limits: SubscriptionLimits | None = None) -> None:
        self.limits = limits if limits is not None else SubscriptionLimits()
        self._peers: dict[Peer, _PeerState] = {}
        self._topics: dict[bytes, int] = {}  # topic -> holdings over every peer
        self._total = 0
        self._left: deque[tuple[float, str]] = deque()  # (when, address) of ended connections
        self._outputs: list[Upstream] = []
        self.accepted = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.released = 0

    # ------------------------------------------------------------------ inputs

    def subscribe(self, peer: Peer, topic: bytes) -> Decision:
        st = self._peers.get(peer)
        if len(topic) > self.limits.max_bytes:
            return self._refuse(peer, st, Refusal.TOO_LONG)
        if st is not None and st.count >= self.limits.per_peer:
            return self._refuse(peer, st, Refusal.PEER_FULL)
        if self._total >= self.limits.total:
            return self._refuse(peer, st, Refusal.BUS_FULL)
        if st is None:
            st = self._peers[peer] = _PeerState()
        st.held[topic] = st.held.get(topic, 0) + 1
        st.count += 1
        self._hold(topic, +1)
        self.accepted += 1
        return _ACCEPT

    def unsubscribe(self, peer: Peer | None, topic: bytes, now: float) -> None:
        """An unsubscription; ``peer`` None: one libzmq sent for a connection that ended."""
        if peer is not None:
            st = self._peers.get(peer)
            if st is not None and topic in st.held:
                self._release(peer, st, topic)
            return
        self._forget_left(now)
        for _, address in self._left:
            for p, st in self._peers.items():
                if p.address == address and topic in st.held:
                    self._release(p, st, topic)
                    return
        for p, st in self._peers.items():
            if topic in st.held:
                self._release(p, st, topic)
                return

    def left(self, address: str, now: float) -> None:
        """A connection from ``address`` ended (its anonymous unsubscriptions may follow)."""
        self._forget_left(now)
        self._left.append((now, address))

    def gone(self, address: str) -> None:
        """No connection from ``address`` is left: drop its peers and what they held."""
        for p in [p for p in self._peers if p.address == address]:
            st = self._peers[p]
            for topic in list(st.held):
                while topic in st.held:
                    self._release(p, st, topic)
            self._peers.pop(p, None)

    # ------------------------------------------------------------------ outputs

    def take_outputs(self) -> list[Upstream]:
        out, self._outputs = self._outputs, []
        return out

    def addresses(self) -> set[str]:
        """The addresses of the peers the table knows."""
        return {p.address for p in self._peers}

    def holdings(self, peer: Peer) -> int:
        st = self._peers.get(peer)
        return 0 if st is None else st.count

    def stats(self) -> dict[str, object]:
        top = max(self._peers.items(), key=lambda kv: kv[1].count, default=None)
        return {
            "held": self._total,
            "topics": len(self._topics),
            "peers": len(self._peers),
            "max_per_peer": self.limits.per_peer,
            "max_total": self.limits.total,
            "max_bytes": self.limits.max_bytes,
            "accepted": self.accepted,
            "released": self.released,
            "refused": sum(self.refused.values()),
            **{f"refused_{k}": v for k, v in self.refused.items()},
            "largest_peer": None if top is None else {"peer": str(top[0]), "held": top[1].count},
        }

    # ------------------------------------------------------------------ internals

    def _refuse(self, peer: Peer, st: _PeerState | None, why: Refusal) -> Decision:
        self.refused[why.value] += 1
        if st is None:  # a peer whose first subscription is refused: remembered, counted
            st = self._peers[peer] = _PeerState()
        st.refused += 1
        return Decision(why, first=st.refused == 1)

    def _release(self, peer: Peer, st: _PeerState, topic: bytes) -> None:
        n = st.held[topic] - 1
        if n:
            st.held[topic] = n
        else:
            del st.held[topic]
        st.count -= 1
        self.released += 1
        self._hold(topic, -1)
        if st.count == 0 and st.refused == 0:
            del self._peers[peer]

    def _hold(self, topic: bytes, delta: int) -> None:
        n = self._topics.get(topic, 0) + delta
        self._total += delta
        if n > 0:
            self._topics[topic] = n
        else:
            self._topics.pop(topic, None)
        if topic.startswith(REPLAY_PREFIX) and (n == 1 and delta > 0 or n == 0):
            self._outputs.append(Upstream(delta > 0, topic))

    def _forget_left(self, now: float) -> None:
        while self._left and now - self._left[0][0] > _LEFT_MEMORY_S:
            self._left.popleft()
