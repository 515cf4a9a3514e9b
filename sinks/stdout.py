"""Human-readable live lines on stdout (or any text stream), one per record::

    2023-11-14T22:13:20.123456789Z sample plc1/Count DINT = 42  [cs=4660 gap=2 pub=w1 sq=7]
    2023-11-14T22:13:20.123456789Z sample plc1/Status Status = {...}  [cs=1 gap=0 pub=w1 sq=8
        st=2023-11-14T22:13:20.118000000Z]         (with the controller's time: source_time)
    2023-11-14T22:13:21.000000000Z EVENT plc1/Count reject OPENING->BACKOFF status=0x01/0x0109
        (invalid connection size)  [pub=w1 sq=3]
    2023-11-14T22:13:22.000000000Z BUS-LOSS 5 message(s) from w1 on sample/plc1/Count/ ...
    2023-11-14T22:13:23.000000000Z stats w1 rx=300 rate=0.5  [pub=w1 sq=1]

Times are UTC (``Z``) when ``utc`` is set, else local time with its offset
(``2023-11-14T23:13:20.123456789+01:00``). PLC and tag names are shown escaped as in topics (no
spaces or control characters), values as compact JSON, except that a REAL (32-bit float) is shown
as the shortest decimal that reads back as the same float32 (``-53.95303``, not the float64
digits ``-53.95302963256836``). A structure's members carry no type on the bus, so inside a
UDT every float that is exactly a float32 value is shown that way (an LREAL member holding such a
value, say 0.5, shows the same digits either way unless it needs more than float32 precision,
which it then keeps). Meant for people and ``grep``; use jsonl/csv/sqlite for machines.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import struct
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from pyconpro.acquisition.logix_types import DataTypeCode
from pyconpro.acquisition.sink_config import Option, OptionValue, SinkSchema
from pyconpro.acquisition.wire import Event, Sample, Stats, Value, escape_name
from pyconpro.sinks.base import BusGap, Sink
from pyconpro.sinks.records import iso_time, to_json
from pyconpro.sinks.registry import SinkKind

STDOUT_SCHEMA = SinkSchema(
    kind="stdout",
    help="print human-readable live lines",
    options=(
        Option("raw", "boolean", False, "Also show the raw tag bytes."),
        Option("utc", "boolean", False, "Times in UTC with `Z` instead of local time with offset."),
    ),
    flush_interval_s=0.1,  # people watch it live
)

_F32 = struct.Struct("<f")
_ATOMIC_NAMES = frozenset(c.name for c in DataTypeCode)


@functools.lru_cache(maxsize=1 << 16)  # escaped once per stream, not per line
def _name(plc: str, tag: str) -> str:
    return f"{escape_name(plc)}/{escape_name(tag)}"


@functools.lru_cache(maxsize=8)
def _local_second(secs: int, _zone: object) -> tuple[str, str] | None:
    """The local date and time of ``secs`` and its offset ``+01:00``; None out of range.
    ``_zone`` is the process's time zone (``time.tzname``, ``time.timezone``: set again by
    ``time.tzset()``), so that a change of it is not answered from the cache."""
    try:
        local = _dt.datetime.fromtimestamp(secs, _dt.UTC).astimezone()
    except (OverflowError, OSError, ValueError):
        return None
    offset = local.strftime("%z")
    return local.strftime("%Y-%m-%dT%H:%M:%S"), f"{offset[:3]}:{offset[3:]}"


def display_time(t_wall_ns: int, *, utc: bool = False) -> str:
    """ISO 8601 with nanoseconds: UTC with ``Z``, or local time with its UTC offset."""
    if utc:
        return iso_time(t_wall_ns)
    secs, ns = divmod(t_wall_ns, 1_000_000_000)
    # The same for every line of a second: formatted once.
    local = _local_second(secs, (time.tzname, time.timezone))
    if local is None:
        return f"@{t_wall_ns}ns"
    return f"{local[0]}.{ns:09d}{local[1]}"


def float32_text(x: float) -> str | None:
    """The shortest decimal that reads back as the float32 ``x``; None if ``x`` is no float32."""
    if not math.isfinite(x):
        return None
    try:
        if _F32.unpack(_F32.pack(x))[0] != x:
            return None
    except OverflowError:
        return None
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        text = f"{x:.{digits}g}"
        try:
            if _F32.unpack(_F32.pack(float(text)))[0] == x:
                break
        except OverflowError:  # rounded up past FLT_MAX: more digits needed
            continue
    if "e" not in text and "." not in text:
        text += ".0"
    return text


@functools.lru_cache(maxsize=1 << 10)
def _float64_digits(type_name: str | None) -> bool:
    """An atomic type other than REAL (or an array of one): JSON's digits are right for it."""
    base = (type_name or "").split("[", 1)[0]
    return base in _ATOMIC_NAMES and base != "REAL"


def display_value(value: Value, type_name: str | None) -> str:
    """``value`` as compact JSON, REAL values (and float32 values in a UDT) in float32 digits."""
    if _float64_digits(type_name):
        return to_json(value)  # LREAL keeps its float64 digits; integers are exact anyway
    return _json32(value)


def _json32(value: Value) -> str:
    if type(value) is float:
        return float32_text(value) or to_json(value)
    if type(value) is list:
        return "[" + ",".join(_json32(v) for v in value) + "]"
    if type(value) is dict:
        return (
            "{"
            + ",".join(
                json.dumps(k, ensure_ascii=False) + ":" + _json32(v) for k, v in value.items()
            )
            + "}"
        )
    return to_json(value)


def format_sample(s: Sample, *, raw: bool = False, utc: bool = False) -> str:
    type_part = f" {s.type_name}" if s.type_name else ""
    raw_part = f" raw={s.raw.hex()}" if raw else ""
    st_part = "" if s.source_ns is None else f" st={display_time(s.source_ns, utc=utc)}"
    return (
        f"{display_time(s.t_wall_ns, utc=utc)} sample {_name(s.plc, s.tag)}{type_part}"
        f" = {display_value(s.value, s.type_name)}"
        f"  [cs={s.cip_seq} gap={s.gap} pub={s.publisher} sq={s.seq}{st_part}{raw_part}]"
    )


def format_event(e: Event, *, utc: bool = False) -> str:
    parts = [display_time(e.t_wall_ns, utc=utc), "EVENT", _name(e.plc, e.tag), str(e.kind)]
    if e.state_from is not None or e.state_to is not None:
        parts.append(f"{e.state_from or '?'}->{e.state_to or '?'}")
    if e.cip_general is not None:
        ext = f"/0x{e.cip_extended:04X}" if e.cip_extended is not None else ""
        parts.append(f"status=0x{e.cip_general:02X}{ext}")
    if e.status_text:
        parts.append(f"({e.status_text})")
    if e.message:
        parts.append(f": {e.message}")
    return " ".join(parts) + f"  [pub={e.publisher} sq={e.seq}]"


def format_gap(g: BusGap, *, utc: bool = False) -> str:
    when = display_time(g.t_wall_ns, utc=utc)
    if g.restart:
        return (
            f"{when} BUS-RESTART {g.publisher} on {g.topic} restarted at sq"
            f" {g.received_seq} (was at {g.expected_seq - 1}); missed={g.missed}"
        )
    return (
        f"{when} BUS-LOSS missed={g.missed} from {g.publisher} on {g.topic}"
        f" (sq {g.received_seq}, expected {g.expected_seq})"
    )


def format_stats(s: Stats, *, utc: bool = False) -> str:
    counters = " ".join(f"{escape_name(k)}={v}" for k, v in s.counters.items())
    return (
        f"{display_time(s.t_wall_ns, utc=utc)} stats {escape_name(s.worker)} {counters}"
        f"  [pub={s.publisher} sq={s.seq}]"
    )


class StdoutSink(Sink):
    def __init__(
        self, stream: TextIO | None = None, *, raw: bool = False, utc: bool = False
    ) -> None:
        self.stream = stream
        self.raw = raw
        self.utc = utc

    @property
    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def _lines(self, lines: list[str]) -> None:
        if lines:
            try:
                self._out.write("\n".join(lines) + "\n")
            except BrokenPipeError:
                raise SystemExit(0) from None

    def write_samples(self, samples: list[Sample]) -> None:
        self._lines([format_sample(s, raw=self.raw, utc=self.utc) for s in samples])

    def write_events(self, events: list[Event]) -> None:
        self._lines([format_event(e, utc=self.utc) for e in events])

    def write_gaps(self, gaps: list[BusGap]) -> None:
        self._lines([format_gap(g, utc=self.utc) for g in gaps])

    def write_stats(self, stats: list[Stats]) -> None:
        self._lines([format_stats(s, utc=self.utc) for s in stats])

    def flush(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError:
            # `pyconpro sink stdout | head`: the reader left; nothing more to show anyone.
            raise SystemExit(0) from None


def from_options(options: Mapping[str, OptionValue]) -> StdoutSink:
    return StdoutSink(raw=bool(options["raw"]), utc=bool(options["utc"]))


SINK_KINDS = (SinkKind(STDOUT_SCHEMA, from_options),)
