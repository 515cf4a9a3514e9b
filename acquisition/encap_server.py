"""The server side of the encapsulation layer, pure: what every EtherNet/IP server of the
project answers the same way, the simulated controller (``simulator/server.py``) and a
producing worker (``acquisition/produce.py``).

Owns:

* ``reply``: the answer to a request, its command, sender context and options echoed;
* ``discovery_reply``: ListIdentity / ListServices / ListInterfaces (protocol.md 2.5), on TCP
  and UDP alike;
* ``Sessions``: RegisterSession (protocol.md 2.3): the request's checks, the handles given out
  and who holds each; the caller counts and logs from the ``Registered`` it gets back;
* ``connection_manager_request``: whether an unconnected message is one of the Connection
  Manager requests the target role answers (Forward_Open, Large_Forward_Open, Forward_Close);
* ``embedded_cm_reply``: the answer to one that arrived inside Unconnected_Send (the controller
  model hands it back).

The socket shells around it stay with their owners; so do the decisions of the target role
(``acquisition.target``) and of the controller model (``acquisition.logix_controller``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pyconpro.acquisition import cip, cpf, encap, epath
from pyconpro.acquisition.encap import Command
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.status import EncapsulationStatus
from pyconpro.acquisition.target import ProducerTarget

__all__ = [
    "CM_SERVICES",
    "Registered",
    "Sessions",
    "connection_manager_request",
    "discovery_reply",
    "embedded_cm_reply",
    "reply",
]

#: The Connection Manager services the target role answers.
CM_SERVICES = (cip.Service.FORWARD_OPEN, cip.Service.LARGE_FORWARD_OPEN,
               cip.Service.FORWARD_CLOSE)  # fmt: skip

_Owner = TypeVar("_Owner")


def reply(pkt: encap.EncapsulationPacket, data: bytes = b"", *, session: int | None = None,
          status: int = 0) -> bytes:
    """The answer to ``pkt``: its command, session (unless given), context and options."""
    return encap.EncapsulationPacket(pkt.command, data, pkt.session if session is None else
                                     session, status, pkt.context, pkt.options).encode()


def discovery_reply(pkt: encap.EncapsulationPacket, identity: cpf.IdentityItem) -> bytes | None:
    """The answer to a ListIdentity (with ``identity``), ListServices (the communications
    service, class 0/1 over TCP and UDP) or ListInterfaces (none); None for any other
    command."""
    if pkt.command == Command.LIST_IDENTITY:
        return reply(pkt, cpf.encode_items([identity]))
    if pkt.command == Command.LIST_SERVICES:
        return reply(pkt, cpf.encode_items([cpf.ServicesItem()]))
    if pkt.command == Command.LIST_INTERFACES:
        return reply(pkt, cpf.encode_items([]))
    return None


@dataclass(frozen=True, slots=True)
class Registered:
    """What a RegisterSession got: the ``answer`` to send, the new ``session`` handle (0 when
    none was given), whether it was an encapsulation ``error`` (bad length or version, or a
    second RegisterSession on one connection) or ``refused`` for want of room."""

    answer: bytes
    session: int = 0
    error: bool = False
    refused: bool = False


class Sessions(Generic[_Owner]):
    """The session handles a server gave out and who holds each (a TCP client). Handles count
    up from ``last + 1``, skip any still held, and wrap at 2**32 - 1 (never 0)."""

    def __init__(self, max_sessions: int, last: int = 0) -> None:
        self.max_sessions = max_sessions
        self._last = last
        self._held: dict[int, _Owner] = {}

    def __len__(self) -> int:
        return len(self._held)

    def get(self, handle: int) -> _Owner | None:
        return self._held.get(handle)

    def drop(self, handle: int) -> _Owner | None:
        """The session ended (its TCP connection closed): the handle is free again."""
        return self._held.pop(handle, None)

    def register(self, pkt: encap.EncapsulationPacket, current: int, owner: _Owner, *,
                 refuse: bool = False) -> Registered:
        """A RegisterSession from ``owner``, which holds session ``current`` (0: none yet).
        ``refuse``: answer "insufficient memory" as when the table is full."""
        try:
            body = encap.RegisterSessionData.decode(pkt.data)
        except MalformedPacket:
            return Registered(reply(pkt, status=EncapsulationStatus.INVALID_LENGTH), error=True)
        if body.protocol_version != 1 or body.options != 0:
            return Registered(reply(pkt, status=EncapsulationStatus.UNSUPPORTED_PROTOCOL_VERSION),
                              error=True)
        if current:
            return Registered(reply(pkt, pkt.data, session=current,
                                    status=EncapsulationStatus.INVALID_COMMAND), error=True)
        if refuse or len(self._held) >= self.max_sessions:
            return Registered(reply(pkt, session=0, status=EncapsulationStatus.INSUFFICIENT_MEMORY),
                              refused=True)
        while True:
            self._last = self._last % 0xFFFF_FFFF + 1
            if self._last not in self._held:
                break
        self._held[self._last] = owner
        return Registered(reply(pkt, pkt.data, session=self._last), session=self._last)


def connection_manager_request(message: bytes) -> cip.Request | None:
    """``message`` decoded when it is a Forward_Open, Large_Forward_Open or Forward_Close to the
    Connection Manager (the target's to answer); None for anything else."""
    try:
        request = cip.Request.decode(message)
    except MalformedPacket:
        return None
    if request.path == epath.CONNECTION_MANAGER_PATH and request.service in CM_SERVICES:
        return request
    return None


def embedded_cm_reply(target: ProducerTarget, message: bytes, peer_ip: str, session: int,
                      now: float) -> bytes:
    """The target's answer to a Connection Manager request that arrived inside
    Unconnected_Send from ``peer_ip`` on ``session`` (0x13 "not enough data" when it does not
    decode)."""
    try:
        request = cip.Request.decode(message)
    except MalformedPacket:
        return cip.Reply(message[0] & 0x7F if message else 0, 0x13).encode()
    answer, _ = target.handle_cm(request, peer_ip, session, now)
    return answer.encode()
