"""The ``[[produce]]`` entries of a config file: tags the pipeline produces for Logix consumers.

Owns the keys of one entry (docs/configuration.md "[[produce]]"), their checks and messages,
and which worker serves it: ``local_address``, ``interface`` or ``consumer_address`` (the
consuming PLC's address: the local address that routes to it, as ``[[plc]]`` entries are
grouped). ``acquisition.config`` calls ``read_produce``; the result is
``acquisition.produce.ProduceSpec`` values plus how to place them (``ProducePlacement``).
Pure: the address lookups are the caller's callbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pyconpro.acquisition.consumer_keys import read_ipv4, read_tag_name
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.produce import (
    MAX_CONSUMERS_DEFAULT,
    RPI_MAX_US_DEFAULT,
    RPI_MIN_US_DEFAULT,
    ProduceSpec,
)
from pyconpro.acquisition.toml_check import IssueLog, Table

__all__ = ["PRODUCE_KEYS", "ProducePlacement", "read_produce"]

PRODUCE_KEYS: Final = (
    "name", "type", "members", "max_consumers", "rpi_min_ms", "rpi_max_ms", "local_address",
    "interface", "consumer_address",
)  # fmt: skip
_MEMBER_KEYS: Final = ("name", "type")


@dataclass(frozen=True, slots=True)
class ProducePlacement:
    """Where a produced tag is served: exactly one of the three is set."""

    local_address: str | None = None
    interface: str | None = None
    consumer_address: str | None = None


def _members(t: Table) -> tuple[tuple[str, str], ...] | None:
    raw = t.raw("members")
    if not t.has("members"):
        return ()
    fix = 'write members = [{ name = "Speed", type = "REAL" }, ...]'
    if not isinstance(raw, list) or not raw:
        t.ctx.error(t.key("members"), "members must be a non-empty array of inline tables", fix)
        return None
    out: list[tuple[str, str]] = []
    for j, m in enumerate(raw):
        key = f"{t.key('members')}[{j}]"
        if not isinstance(m, Mapping):
            t.ctx.error(key, "a member must be an inline table", fix)
            return None
        mt = Table(t.ctx, key, m, _MEMBER_KEYS)
        name, typ = mt.string("name", None, required=True), mt.string("type", None, required=True)
        if name is None or typ is None:
            return None
        out.append((name, typ))
    return tuple(out)


def read_produce(
    ctx: IssueLog, index: int, data: Mapping[str, Any]
) -> tuple[ProduceSpec, ProducePlacement] | None:
    """One ``[[produce]]`` entry, or None (the issues are recorded in ``ctx``)."""
    path = f"produce[{index}]"
    t = Table(ctx, path, data, PRODUCE_KEYS)
    name = read_tag_name(t, "name")
    typ = t.string("type", None, required=True)
    members = _members(t)
    max_consumers = t.integer("max_consumers", MAX_CONSUMERS_DEFAULT, 1, 250)
    rpi_min = t.number("rpi_min_ms", RPI_MIN_US_DEFAULT / 1000, 0.1, 750_000.0, "ms")
    rpi_max = t.number("rpi_max_ms", RPI_MAX_US_DEFAULT / 1000, 0.1, 750_000.0, "ms")
    placement = ProducePlacement(
        read_ipv4(t, "local_address", what="local interface"),
        t.string("interface", None),
        read_ipv4(t, "consumer_address", what="consuming PLC"),
    )
    given = [k for k in ("local_address", "interface", "consumer_address") if t.has(k)]
    if len(given) != 1:
        ctx.error(
            path if not given else t.key(given[1]),
            "say which interface serves this tag" if not given
            else f"{' and '.join(given)} are all set",
            "set one of local_address (the PC's address the PLC reaches), interface, or"
            " consumer_address (the consuming PLC's address)",
        )
        return None
    if rpi_min > rpi_max:
        ctx.error(t.key("rpi_min_ms"), f"rpi_min_ms = {rpi_min:g} is above rpi_max_ms ="
                  f" {rpi_max:g}", "make rpi_min_ms at most rpi_max_ms")
        return None
    if name is None or typ is None or members is None:
        return None
    try:
        spec = ProduceSpec(name, typ, members, max_consumers, round(rpi_min * 1000),
                           round(rpi_max * 1000))
    except UsageError as exc:
        ctx.error(t.key("members" if members and "member" in str(exc) else "type"), str(exc),
                  "write an atomic type (DINT, REAL, ...), STRING, an array like DINT[4], or a"
                  " UDT name with its members")
        return None
    return spec, placement
