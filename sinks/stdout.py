"""Human-readable live lines on stdout (or any text stream), one per record::

    2023-11-14T22:13:20.123456789Z sample plc1/Count DINT = 42  [cs=4660 gap=2 pub=w1 sq=7]
    2023-11-14T22:13:21.000000000Z EVENT plc1/Count reject OPENING->BACKOFF status=0x01/0x0109
        (invalid connection size)  [pub=w1 sq=3]
    2023-11-14T22:13:22.000000000Z BUS-LOSS 5 message(s) from w1 on sample/plc1/Count/ ...
    2023-11-14T22:13:23.000000000Z stats w1 rx=300 rate=0.5  [pub=w1 sq=1]

PLC and tag names are shown escaped as in topics (no spaces or control characters), values as
compact JSON. Meant for people and ``grep``; use jsonl/csv/sqlite for machines.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from pyconpro.acquisition.sink_config import Option, OptionValue, SinkSchema
from pyconpro.acquisition.wire import Event, Sample, Stats, escape_name
from pyconpro.sinks.base import BusGap, Sink
from pyconpro.sinks.records import iso_time, to_json
from pyconpro.sinks.registry import SinkKind

STDOUT_SCHEMA = SinkSchema(
    kind="stdout",
    help="print human-readable live lines",
    options=(Option("raw", "boolean", False, "Also show the raw tag bytes."),),
    flush_interval_s=0.1,  # people watch it live
)


def _name(plc: str, tag: str) -> str:
    return f"{escape_name(plc)}/{escape_name(tag)}"


def format_sample(s: Sample, *, raw: bool = False) -> str:
    type_part = f" {s.type_name}" if s.type_name else ""
    raw_part = f" raw={s.raw.hex()}" if raw else ""
    return (
        f"{iso_time(s.t_wall_ns)} sample {_name(s.plc, s.tag)}{type_part} = {to_json(s.value)}"
        f"  [cs={s.cip_seq} gap={s.gap} pub={s.publisher} sq={s.seq}{raw_part}]"
    )


def format_event(e: Event) -> str:
    parts = [iso_time(e.t_wall_ns), "EVENT", _name(e.plc, e.tag), str(e.kind)]
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


def format_gap(g: BusGap) -> str:
    if g.restart:
        return (
            f"{iso_time(g.t_wall_ns)} BUS-RESTART {g.publisher} on {g.topic} restarted at sq"
            f" {g.received_seq} (was at {g.expected_seq - 1}); missed={g.missed}"
        )
    return (
        f"{iso_time(g.t_wall_ns)} BUS-LOSS missed={g.missed} from {g.publisher} on {g.topic}"
        f" (sq {g.received_seq}, expected {g.expected_seq})"
    )


def format_stats(s: Stats) -> str:
    counters = " ".join(f"{escape_name(k)}={v}" for k, v in s.counters.items())
    return (
        f"{iso_time(s.t_wall_ns)} stats {escape_name(s.worker)} {counters}"
        f"  [pub={s.publisher} sq={s.seq}]"
    )


class StdoutSink(Sink):
    def __init__(self, stream: TextIO | None = None, *, raw: bool = False) -> None:
        self.stream = stream
        self.raw = raw

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
        self._lines([format_sample(s, raw=self.raw) for s in samples])

    def write_events(self, events: list[Event]) -> None:
        self._lines([format_event(e) for e in events])

    def write_gaps(self, gaps: list[BusGap]) -> None:
        self._lines([format_gap(g) for g in gaps])

    def write_stats(self, stats: list[Stats]) -> None:
        self._lines([format_stats(s) for s in stats])

    def flush(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError:
            # `pyconpro sink stdout | head`: the reader left; nothing more to show anyone.
            raise SystemExit(0) from None


def from_options(options: Mapping[str, OptionValue]) -> StdoutSink:
    return StdoutSink(raw=bool(options["raw"]))


SINK_KINDS = (SinkKind(STDOUT_SCHEMA, from_options),)
