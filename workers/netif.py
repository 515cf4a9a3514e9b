"""The host's IPv4 addresses with their prefixes, and the netmask of one local address.

A producing worker needs its interface's netmask (docs/worker.md "Producing tags"): a
multicast consumer from off its subnet is refused with 0x01/0x0813, as a Logix producer and
OpENer do (protocol.md 6.7), since multicast data sent with TTL 1 cannot reach it. The
addresses come from the kernel's routing netlink socket (``RTM_GETADDR``, every address of
every interface, secondary ones included, which the ``SIOCGIFNETMASK`` ioctl does not see);
``parse_addresses`` is the pure decoding of its answer and ``netmask_for`` the pure choice.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Address", "address_netmask", "ipv4_addresses", "netmask_for", "parse_addresses"]

_NETLINK_ROUTE = 0
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type


@dataclass(frozen=True, slots=True)
class Address:
    """One IPv4 address of an interface (``index``: the interface's index)."""

    address: str
    prefixlen: int
    index: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.address}/{self.prefixlen}", strict=False)


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_addresses(data: bytes) -> tuple[list[Address], bool]:
    """The IPv4 addresses in one netlink answer, and whether the dump is complete (an
    ``NLMSG_DONE`` or an error ends it). Truncated or foreign messages are skipped."""
    out: list[Address] = []
    offset, done = 0, False
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            break
        body = data[offset + _NLMSG.size:offset + length]
        offset += _align(length)
        if kind in (_NLMSG_DONE, _NLMSG_ERROR):
            done = True
            break
        if kind != _RTM_NEWADDR or len(body) < _IFADDRMSG.size:
            continue
        family, prefixlen, _f, _scope, index = _IFADDRMSG.unpack_from(body)
        if family != socket.AF_INET:
            continue
        attrs: dict[int, bytes] = {}
        at = _IFADDRMSG.size
        while at + _RTATTR.size <= len(body):
            alen, atype = _RTATTR.unpack_from(body, at)
            if alen < _RTATTR.size or at + alen > len(body):
                break
            attrs[atype] = body[at + _RTATTR.size:at + alen]
            at += _align(alen)
        # IFA_LOCAL is the address itself; IFA_ADDRESS the peer's on a point-to-point link.
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if raw is not None and len(raw) == 4 and 0 <= prefixlen <= 32:
            out.append(Address(socket.inet_ntoa(raw), prefixlen, index))
    return out, done


def ipv4_addresses() -> list[Address]:
    """Every IPv4 address of this host (of this network namespace); [] where the routing
    netlink socket is not available (not Linux)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
    except (AttributeError, OSError):
        return []
    out: list[Address] = []
    with sock:
        sock.settimeout(2.0)
        request = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        sock.send(_NLMSG.pack(_NLMSG.size + len(request), _RTM_GETADDR,
                              _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + request)  # fmt: skip
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return out
            got, done = parse_addresses(data)
            out += got
            if done or not data:
                return out


def netmask_for(address: str, addresses: Iterable[Address]) -> str | None:
    """The netmask of local ``address``: that of the interface address it is, else of the
    narrowest assigned network holding it (any 127.x.y.z is in lo's 127.0.0.1/8); None when
    no interface has it."""
    ip = ipaddress.IPv4Address(address)
    known = list(addresses)
    exact = [a for a in known if a.address == address]
    holding = exact or [a for a in known if ip in a.network]
    if not holding:
        return None
    best = max(holding, key=lambda a: a.prefixlen)
    return str(best.network.netmask)


def address_netmask(address: str) -> str | None:
    """The netmask of local ``address`` on this host (``netmask_for`` over the kernel's
    addresses), None when it cannot be told."""
    return netmask_for(address, ipv4_addresses())
