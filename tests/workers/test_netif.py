"""workers.netif: the kernel's address dump decoded (synthetic netlink messages), the netmask
chosen for a local address, and the real lookup on this host's loopback."""

from __future__ import annotations

import socket
import struct

from pyconpro.workers.netif import (
    Address,
    address_netmask,
    ipv4_addresses,
    netmask_for,
    parse_addresses,
)


def attr(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + bytes(-len(data) % 4)


def message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def newaddr(family: int, prefixlen: int, index: int, *attrs: bytes) -> bytes:
    return message(20, struct.pack("=BBBBI", family, prefixlen, 0, 0, index) + b"".join(attrs))


def test_the_dump_is_decoded_local_address_first_other_families_skipped() -> None:
    data = b"".join([
        newaddr(socket.AF_INET, 8, 1, attr(1, socket.inet_aton("127.0.0.1")),
                attr(2, socket.inet_aton("127.0.0.1")), attr(3, b"lo\0")),
        # point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours
        newaddr(socket.AF_INET, 32, 5, attr(1, socket.inet_aton("10.9.9.9")),
                attr(2, socket.inet_aton("10.9.9.1"))),
        newaddr(socket.AF_INET6, 64, 2, attr(1, bytes(16))),
        newaddr(socket.AF_INET, 24, 2, attr(1, socket.inet_aton("192.168.7.20"))),
    ])  # fmt: skip
    got, done = parse_addresses(data)
    assert got == [Address("127.0.0.1", 8, 1), Address("10.9.9.1", 32, 5),
                   Address("192.168.7.20", 24, 2)]  # fmt: skip
    assert not done  # more parts of the dump follow
    assert parse_addresses(message(3, struct.pack("=i", 0))) == ([], True)  # NLMSG_DONE
    assert parse_addresses(data[:30]) == ([], False)  # truncated: nothing half-read


def test_the_netmask_of_a_local_address() -> None:
    known = [Address("127.0.0.1", 8, 1), Address("10.1.2.3", 24, 2), Address("10.1.2.9", 28, 2)]
    assert netmask_for("10.1.2.3", known) == "255.255.255.0"  # its own prefix
    assert netmask_for("10.1.2.9", known) == "255.255.255.240"
    assert netmask_for("127.61.13.1", known) == "255.0.0.0"  # lo answers for all of 127/8
    assert netmask_for("10.1.2.5", known) == "255.255.255.240"  # the narrowest holding it
    assert netmask_for("172.16.0.1", known) is None


def test_this_hosts_loopback() -> None:
    assert address_netmask("127.0.0.1") == "255.0.0.0"
    assert address_netmask("127.61.13.1") == "255.0.0.0"
    assert any((a.address, a.prefixlen) == ("127.0.0.1", 8) for a in ipv4_addresses())
