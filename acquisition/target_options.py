"""What the producer target (``acquisition.target``) is configured with and works on, pure.

``TargetOptions`` (identity, limits, and the codes protocol.md leaves uncertain, defaulting to
the most probable Logix behaviour), the tag collaborators a target produces from
(``ProducibleTag`` / ``TagSource``, implemented by the simulator's tag store), and the
multicast group allocation of protocol.md 6.7.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from pyconpro.acquisition.status import ExtendedStatus

# --------------------------------------------------------------------------- collaborators


class ProducibleTag(Protocol):
    """What the target needs of a tag (``simulator.tags.SimTag`` satisfies it)."""

    name: str
    produced: bool
    max_consumers: int
    rpi_min_us: int
    rpi_max_us: int
    default_rpi_us: int | None
    unicast_allowed: bool

    def size(self) -> int: ...

    def image(self) -> bytes: ...


class TagSource(Protocol):
    """What the target needs of the tag database (``simulator.tags.TagStore`` satisfies it)."""

    incarnation: int  # changes on a simulated download / restart

    def find(self, name: str) -> ProducibleTag | None: ...

    def by_instance(self, instance_id: int) -> ProducibleTag | None: ...

    def tick(self, now: float) -> None: ...

    def restart(self, now: float) -> None: ...  # initial values, incarnation + 1


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """The identity an electronic key segment is compared with (protocol.md 4.1)."""

    vendor_id: int = 1
    device_type: int = 0x0E
    product_code: int = 166
    major_revision: int = 33
    minor_revision: int = 11


class Seq16Mode(str, Enum):
    """When the producer advances the 16-bit CIP sequence count (protocol.md 6.4)."""

    ON_CHANGE = "change"  # only when the tag image differs from the last datagram (OpENer)
    EVERY_PACKET = "every"


#: Codes accepted for the options that protocol.md marks uncertain.
SIZE_ERRORS = (ExtendedStatus.INVALID_CONNECTION_SIZE, ExtendedStatus.INVALID_TO_SIZE)
UNKNOWN_TAG_ERRORS = (
    ExtendedStatus.NO_CONSUMER_RESOURCES_CONFIGURED,
    ExtendedStatus.PRODUCING_SYMBOL_DOES_NOT_EXIST,
    ExtendedStatus.INVALID_SEGMENT_IN_PATH,
)
MULTICAST_RPI_ERRORS = (
    ExtendedStatus.RPI_NOT_ACCEPTABLE,
    ExtendedStatus.INCOMPATIBLE_MULTICAST_RPI,
)


@dataclass(frozen=True, slots=True)
class TargetOptions:
    """Everything configurable about the target role; defaults are the Logix-like choices."""

    slot: int = 0
    address: str = "127.0.0.2"
    netmask: str = "255.0.0.0"
    identity: KeyIdentity = KeyIdentity()
    #: 0x0109 + wanted size (Logix, default) or the CIP pair 0x0127 (O->T) / 0x0128 (T->O).
    size_error: int = ExtendedStatus.INVALID_CONNECTION_SIZE
    #: unknown or non-produced tag: 0x031F (Logix-like), 0x012E or 0x0315.
    unknown_tag_error: int = ExtendedStatus.NO_CONSUMER_RESOURCES_CONFIGURED
    #: multicast consumer asking another RPI than the running multicast production.
    multicast_rpi_error: int = ExtendedStatus.RPI_NOT_ACCEPTABLE
    #: every connection (class 1 and class 3) counts against this pool.
    max_connections: int = 250
    #: the first watchdog period after the Forward_Open is at least this (OpENer: 10 s).
    initial_watchdog_s: float = 10.0
    seq16_mode: Seq16Mode = Seq16Mode.ON_CHANGE
    #: port of P2P T->O data when the Forward_Open carries no T->O sockaddr item.
    consumer_port: int = 2222
    #: destination port of multicast T->O data (and the port in the 0x8001 reply item).
    multicast_port: int = 2222
    #: our class-1 UDP port, announced in the O->T sockaddr item (0x8000) of class-1 replies.
    udp_port: int = 2222
    reply_ot_sockaddr: bool = True
    #: O->T (heartbeat) RPI limits; T->O limits come from each tag.
    ot_rpi_min_us: int = 100
    ot_rpi_max_us: int = 750_000_000
    #: largest class-3 connection size (Large_Forward_Open; a Forward_Open stops at 511).
    class3_max_size: int = 4002
    #: connection point -> tag name for assembly-style paths; None = the Symbol instance id.
    assemblies: Mapping[int, str] | None = None
    #: OpENer-like (protocol.md 6.6 item 3): when a class-1 connection times out and its
    #: originator (vendor + serial) has no other connection, ask the server to close every TCP
    #: session from that IP (a ``CloseSession`` output). Unknown for Logix, hence off.
    close_sessions_on_timeout: bool = False
    #: False = old firmware without Large_Forward_Open: 0x5B gets general status 0x08 (7.6).
    large_forward_open: bool = True

    def __post_init__(self) -> None:
        if self.size_error not in SIZE_ERRORS:
            raise ValueError(f"size_error must be 0x0109 or 0x0128, not 0x{self.size_error:04X}")
        if self.unknown_tag_error not in UNKNOWN_TAG_ERRORS:
            raise ValueError(
                f"unknown_tag_error must be 0x031F, 0x012E or 0x0315, not"
                f" 0x{self.unknown_tag_error:04X}"
            )
        if self.multicast_rpi_error not in MULTICAST_RPI_ERRORS:
            raise ValueError(
                "multicast_rpi_error must be 0x0112 or 0x0801,"
                f" not 0x{self.multicast_rpi_error:04X}"
            )
        if self.max_connections < 0 or self.initial_watchdog_s < 0:
            raise ValueError("max_connections and initial_watchdog_s must be >= 0")
        ipaddress.IPv4Network(f"{self.address}/{self.netmask}", strict=False)


# --------------------------------------------------------------------------- multicast (6.7)


def multicast_base(address: str, netmask: str) -> str:
    """First group of the device's 32-group block: 239.192.1.0 + 32 * ((host_id - 1) & 0x3FF)."""
    ip = int(ipaddress.IPv4Address(address))
    mask = int(ipaddress.IPv4Address(netmask))
    host_id = ((ip & ~mask & 0xFFFFFFFF) - 1) & 0x3FF
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("239.192.1.0")) + 32 * host_id))


def multicast_group(address: str, netmask: str, index: int) -> str:
    """The ``index``-th group (modulo 32) of the device's block."""
    base = int(ipaddress.IPv4Address(multicast_base(address, netmask)))
    return str(ipaddress.IPv4Address(base + index % 32))
