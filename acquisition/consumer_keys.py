"""The rules of a consumer's keys, declared once for every way a consumer is described.

A consumer (one produced tag of one PLC) is described by the pipeline's config file
(``acquisition.config``: ``[defaults]``, ``[[plc]]``, ``[[plc.tag]]``) and by a map on an I/O
worker's control socket or its ``--consumer`` command line (``acquisition.control``). Both read
every key through the functions here, each over a ``toml_check.Table``, so a value one of them
refuses the other refuses too, with the same words: what is wrong and how to fix it. The rules:
names (tag names as Logix writes them, PLC names and aliases as topic segments, with their
lengths), addresses, ports and slots, routes, RPIs, the timeout multiplier, transport, the tag
size and the PLC session's reconnect keys (``SessionPolicy``), with the ranges below.

Each reader records an issue in the table's ``IssueLog`` and returns a fallback instead of
raising, so one pass reports every problem (the config file lists them all; the control socket
refuses the request with all of them).

Protocol facts used here (protocol.md): the timeout multiplier encoding 0..7 = x4..x512 (5.4),
RPI ranges (7.5) and the 500-byte produced-tag limit (7.3).

Pure: works on decoded values (TOML or MessagePack), no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final

from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.originator import SessionPolicy
from pyconpro.acquisition.toml_check import MISSING, Table, fmt, type_name

__all__ = [
    "CONNECT_TIMEOUT_RANGE_S",
    "MAX_IN_FLIGHT_RANGE",
    "MAX_ROUTE_HOPS",
    "MAX_TAG_SIZE",
    "MULTIPLIER_FACTORS",
    "PLC_ADDRESS",
    "PORT_NAMES",
    "RECONNECT_MAX_RANGE_S",
    "RECONNECT_MIN_RANGE_S",
    "RPI_MAX_MS",
    "RPI_MIN_MS",
    "Inherited",
    "RouteHop",
    "multiplier_code",
    "read_consumer_keys",
    "read_ipv4",
    "read_multiplier",
    "read_route",
    "read_session",
    "read_source_time",
    "read_tag_name",
    "read_tag_size",
    "read_topic_segment",
    "shown",
    "validate_tag_name",
]

# RPI limits. protocol.md 7.5: vendors quote ~0.5-750 ms for EtherNet/IP I/O; the controller
# has the final word (0x0111/0x0112), so the ceiling here is generous and only catches unit
# mistakes (microseconds typed as milliseconds).
RPI_MIN_MS: Final = 0.5
RPI_MAX_MS: Final = 10_000.0
# The session's reconnect schedule and limits (acquisition.originator.SessionPolicy): attempts
# are cheap, so the cap stays short; the ceilings only catch unit mistakes.
RECONNECT_MIN_RANGE_S: Final = (0.01, 60.0)
RECONNECT_MAX_RANGE_S: Final = (0.05, 60.0)
CONNECT_TIMEOUT_RANGE_S: Final = (0.1, 60.0)
MAX_IN_FLIGHT_RANGE: Final = (1, 256)
# protocol.md 7.3: standard produced tags carry at most 500 bytes.
MAX_TAG_SIZE: Final = 500
# protocol.md 5.4: code m means a timeout of (4 << m) x RPI.
MULTIPLIER_FACTORS: Final = tuple(4 << m for m in range(8))
# Hops of a route: real ones have one to four. 16 hops of the longest kind (an extended port
# and an IPv4 address: 20 bytes) and the tag's own path fit the 510 bytes of a Forward_Open's
# connection path (its size is a USINT of words, protocol.md 5.2).
MAX_ROUTE_HOPS: Final = 16
# Port names as pycomm3 spells them in a route, so users can copy paths between the tools.
PORT_NAMES: Final = {"bp": 1, "backplane": 1, "enet": 2, "a": 2, "b": 3}

_TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
# PLC names and aliases become topic segments (`sample/<plc>/<tag>/`): no separators, no spaces.
_TOPIC_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
PLC_ADDRESS: Final = "PLC's EtherNet/IP module address"  # what an ``address`` key holds
_SHOWN_MAX = 48  # characters of a value repeated in a message (a 100 KB name is not echoed)
_USE_THE_NAME = "use the tag's name exactly as Studio 5000 shows it"


def shown(value: object) -> str:
    """``repr(value)``, shortened when long: messages name the value without echoing 100 KB."""
    text = repr(value)
    if len(text) <= _SHOWN_MAX:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters"
    return f"{text[:_SHOWN_MAX - 8]}... ({size})"


@dataclass(frozen=True, slots=True)
class RouteHop:
    """One port segment of a route: leave through ``port`` towards ``link`` (slot or IP)."""

    port: int
    link: int | str


def multiplier_code(factor: int) -> int:
    """x4 -> 0, x8 -> 1, ..., x512 -> 7 (protocol.md 5.4)."""
    try:
        return MULTIPLIER_FACTORS.index(factor)
    except ValueError:
        raise UsageError(
            f"timeout multiplier {factor} is not one of {', '.join(map(str, MULTIPLIER_FACTORS))}"
        ) from None


def validate_tag_name(name: str) -> tuple[str, str] | None:
    """``(problem, fix)`` when ``name`` cannot be consumed as a produced tag, else None.

    Produced tags are whole controller-scoped tags (protocol.md 7.3), so program scope, members
    and elements are refused here with the reason; the rest are Logix identifier rules.
    """
    if name == "":
        return "the tag name is empty", "write the produced tag's name"
    if ":" in name:
        return (
            f"{shown(name)} is program-scoped; only controller-scoped tags are produced (README:"
            " Configuring the produced tag in Studio 5000)",
            "move the tag to controller scope in Studio 5000 and use its plain name",
        )
    if "." in name or "[" in name:
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        return (
            f"{shown(name)} names a member or element; a produced-tag connection carries one"
            " whole tag",
            f"consume {shown(base)} and pick the member from the decoded value",
        )
    if len(name) > 40:
        return (
            f"{shown(name)} is {len(name)} characters long; Logix tag names have at most 40",
            _USE_THE_NAME,
        )
    if not _TAG_NAME.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "_"))})
        if bad:
            return (
                f"{name!r} contains {''.join(bad)!r}; Logix tag names use only A-Z a-z 0-9 _",
                _USE_THE_NAME,
            )
        return (f"{name!r} starts with a digit; Logix tag names start with a letter or _",
                _USE_THE_NAME)  # fmt: skip
    if "__" in name:
        return (f"{name!r} contains two consecutive underscores, which Logix does not allow",
                _USE_THE_NAME)  # fmt: skip
    if name.endswith("_"):
        return f"{name!r} ends with an underscore, which Logix does not allow", _USE_THE_NAME
    return None


# --------------------------------------------------------------------------------------------
# readers: one per kind of key, over a Table (issues recorded, a fallback returned)


def read_tag_name(t: Table, key: str) -> str | None:
    """The produced tag's name at ``key`` (required), or None when missing or unusable."""
    name = t.string(key, None, required=True)
    if name is None:
        return None
    why = validate_tag_name(name)
    if why is not None:
        t.ctx.error(t.key(key), f"tag name {shown(name)} cannot be consumed: {why[0]}", why[1])
        return None
    return str(name)


def read_topic_segment(t: Table, key: str, what: str, *, required: bool = False) -> str | None:
    """A PLC name or an alias (``what``: "PLC name", "alias"): a segment of every topic."""
    value = t.string(key, None, required=required)
    if value is None:
        return None
    if not _TOPIC_SEGMENT.fullmatch(value):
        example = ', e.g. "line1"' if what.startswith("PLC") else ""
        t.ctx.error(
            t.key(key),
            f"{what} {shown(value)} cannot be a topic segment",
            f"use 1-64 characters from A-Z a-z 0-9 _ . - (no '/' or spaces){example}",
        )
        return None
    return str(value)


_MEMBER_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}(?:\.[A-Za-z_][A-Za-z0-9_]{0,39}){0,7}")


def read_source_time(t: Table) -> str | None:
    """``source_time``: the member of the tag's UDT that holds the controller's time, a name
    or a path into nested structures (``Header.Stamp``); its type is checked once the tag's
    type is known (``acquisition.source_time``)."""
    value = t.string("source_time", None)
    if value is None:
        return None
    if not _MEMBER_PATH.fullmatch(value):
        t.ctx.error(
            t.key("source_time"),
            f"source_time = {shown(value)} is not the name of a UDT member",
            'name the LINT member that holds the controller\'s time, e.g. source_time = "Stamp"'
            ' (a member of a nested structure: "Header.Stamp"; no array elements)',
        )
        return None
    return str(value)


def read_ipv4(t: Table, key: str, *, what: str, required: bool = False) -> str | None:
    value = t.string(key, None, required=required)
    if value is None:
        return None
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        t.ctx.error(
            t.key(key),
            f"{key} = {shown(value)} is not an IPv4 address",
            f'write the {what} as four numbers 0-255, e.g. "192.168.1.10" '
            "(host names are not resolved: the worker matches datagrams by source address)",
        )
        return None
    if addr.is_multicast or addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
        t.ctx.error(
            t.key(key),
            f"{key} = {value!r} is a multicast, broadcast or unspecified address",
            f"write the {what}'s own unicast address",
        )
        return None
    return str(addr)


def read_multiplier(t: Table, key: str, default: Any) -> Any:
    """The timeout multiplier as its factor (4..512; "x16" style accepted), or ``default``."""
    value = t.raw(key)
    if value is MISSING:
        return default
    factors = ", ".join(map(str, MULTIPLIER_FACTORS))
    if isinstance(value, str):
        m = re.fullmatch(r"[xX]?(\d+)", value.strip())
        if m is not None and int(m.group(1)) in MULTIPLIER_FACTORS:
            return int(m.group(1))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value in MULTIPLIER_FACTORS:
            return value
        if 0 <= value <= 7:
            t.ctx.error(
                t.key(key),
                f"multiplier = {value} looks like the 0..7 wire code; this key takes the timeout "
                "factor",
                f"write multiplier = {4 << value} (code {value} means x{4 << value}); "
                f"allowed: {factors}",
            )
            return default
    t.ctx.error(
        t.key(key),
        f"multiplier = {shown(value)} is not a timeout multiplier",
        f'use one of {factors} (or "x16" style); the connection times out after '
        "multiplier x RPI without data",
    )
    return default


@dataclass(frozen=True, slots=True)
class Inherited:
    """A consumer setting as resolved so far, with the key path that set it (for errors)."""

    rpi_ms: tuple[float, str]
    ot_rpi_ms: tuple[float | None, str]
    multiplier: tuple[int, str]
    transport: tuple[str, str]


def read_consumer_keys(t: Table, parent: Inherited) -> Inherited:
    """``rpi_ms``, ``ot_rpi_ms``, ``multiplier`` and ``transport`` of ``t`` over ``parent``
    (what it inherits)."""

    def pick(key: str, value: Any, old: tuple[Any, str]) -> tuple[Any, str]:
        return (value, t.key(key)) if t.has(key) and value is not MISSING else old

    rpi = t.number("rpi_ms", MISSING, RPI_MIN_MS, RPI_MAX_MS, "ms")
    ot = t.number("ot_rpi_ms", MISSING, RPI_MIN_MS, RPI_MAX_MS, "ms")
    mult = read_multiplier(t, "multiplier", MISSING)
    transport = t.choice("transport", MISSING, ("unicast", "multicast"))
    return Inherited(
        rpi_ms=pick("rpi_ms", rpi, parent.rpi_ms),
        ot_rpi_ms=pick("ot_rpi_ms", ot, parent.ot_rpi_ms),
        multiplier=pick("multiplier", mult, parent.multiplier),
        transport=pick("transport", transport, parent.transport),
    )


def read_session(t: Table, parent: SessionPolicy) -> SessionPolicy:
    """The PLC session's keys of ``t`` over ``parent`` (what it inherits)."""
    lo_min, hi_min = RECONNECT_MIN_RANGE_S
    lo_max, hi_max = RECONNECT_MAX_RANGE_S
    lo_conn, hi_conn = CONNECT_TIMEOUT_RANGE_S
    lo_flight, hi_flight = MAX_IN_FLIGHT_RANGE
    low = t.number("reconnect_min_s", parent.reconnect_min_s, lo_min, hi_min, "s")
    high = t.number("reconnect_max_s", parent.reconnect_max_s, lo_max, hi_max, "s")
    if high < low:
        key = "reconnect_max_s" if t.has("reconnect_max_s") else "reconnect_min_s"
        t.ctx.error(
            t.key(key),
            f"reconnect_max_s = {fmt(high)} is below reconnect_min_s = {fmt(low)}",
            "make reconnect_max_s (the longest wait between two reconnect attempts) at least"
            " reconnect_min_s (the first wait)",
        )
        low, high = parent.reconnect_min_s, max(parent.reconnect_max_s, parent.reconnect_min_s)
    return SessionPolicy(
        reconnect_min_s=low,
        reconnect_max_s=high,
        connect_timeout_s=t.number(
            "connect_timeout_s", parent.connect_timeout_s, lo_conn, hi_conn, "s"
        ),
        max_in_flight=t.integer(
            "max_in_flight", parent.max_in_flight, lo_flight, hi_flight, "requests"
        ),
    )


_ROUTE_EXAMPLE = 'route = [["backplane", 2], ["enet", "192.168.2.10"]]'
_BAD_LINK_FIX = 'use a slot 0-255 or an address like "192.168.2.10"'


def read_route(t: Table) -> tuple[RouteHop, ...]:
    """``route``: [port, link] pairs before the slot (port by number or name, link a slot or an
    IPv4 address)."""
    value = t.raw("route")
    if value is MISSING:
        return ()
    if not isinstance(value, list):
        t.ctx.error(
            t.key("route"),
            f"route must be an array of [port, link] pairs, not {type_name(value)}",
            f"write e.g. {_ROUTE_EXAMPLE}",
        )
        return ()
    if len(value) > MAX_ROUTE_HOPS:
        t.ctx.error(
            t.key("route"),
            f"route has {len(value)} hops; a connection path holds at most {MAX_ROUTE_HOPS}",
            "list only the hops from this network to the PLC's chassis (usually one to four)",
        )
        return ()
    hops: list[RouteHop] = []
    for i, hop in enumerate(value):
        key = f"{t.key('route')}[{i}]"
        if not (isinstance(hop, list) and len(hop) == 2):
            t.ctx.error(key, f"route hop {shown(hop)} is not a [port, link] pair",
                        f"write e.g. {_ROUTE_EXAMPLE}")  # fmt: skip
            continue
        port_v, link_v = hop
        if isinstance(port_v, str) and port_v.lower() in PORT_NAMES:
            port = PORT_NAMES[port_v.lower()]
        elif isinstance(port_v, int) and not isinstance(port_v, bool) and 1 <= port_v <= 0xFFFF:
            port = port_v
        else:
            t.ctx.error(
                key,
                f"route port {shown(port_v)} is not a port number or name",
                f"use 1-65535 or one of {', '.join(repr(n) for n in PORT_NAMES)}",
            )
            continue
        link: int | str
        if isinstance(link_v, int) and not isinstance(link_v, bool) and 0 <= link_v <= 255:
            link = link_v
        else:
            try:
                if not isinstance(link_v, str):
                    raise ValueError(link_v)
                link = str(ipaddress.IPv4Address(link_v))
            except ValueError:
                t.ctx.error(
                    key,
                    f"route link {shown(link_v)} is neither a slot number nor an IPv4 address",
                    _BAD_LINK_FIX,
                )
                continue
        hops.append(RouteHop(port, link))
    return tuple(hops)


def read_tag_size(t: Table) -> int | None:
    """``size``: the tag's bytes without the sequence count (None: learn it)."""
    value = t.raw("size")
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TAG_SIZE:
        t.ctx.error(
            t.key("size"),
            f"size = {value} is above the {MAX_TAG_SIZE} bytes a standard produced tag can carry "
            "(README: Configuring the produced tag in Studio 5000)",
            "split the data into several produced tags, or omit size to learn it from the "
            "controller",
        )
        return None
    size: int | None = t.integer("size", None, 1, MAX_TAG_SIZE, "bytes")
    return size
