"""Flat, JSON-safe records of bus messages: the one mapping the file, SQLite and stdout sinks
share, so that every output names and formats a field the same way.

JSON has no NaN or infinities; a REAL tag can hold them. They are written as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the raw bytes are always there too), so every
line stays strict JSON that any parser accepts.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from typing import Any

from pyconpro.acquisition.wire import (
    Event,
    Sample,
    Stats,
    Value,
    is_number,
    topic_for_event,
    topic_for_sample,
    topic_for_stats,
)
from pyconpro.sinks.base import BusGap

# Column order of each output stream (CSV header, SQLite column order, JSON key order).
SAMPLE_FIELDS = (
    "time", "t_wall_ns", "t_mono_ns", "plc", "tag", "type", "value", "value_real",
    "cip_seq", "gap", "publisher", "seq", "raw", "t_source_ns",
)  # fmt: skip
EVENT_FIELDS = (
    "time", "t_wall_ns", "t_mono_ns", "plc", "tag", "kind", "state_from", "state_to",
    "cip_general", "cip_extended", "status_text", "message", "publisher", "seq",
)  # fmt: skip
GAP_FIELDS = (
    "time", "t_wall_ns", "publisher", "topic", "expected_seq", "received_seq", "missed",
    "restart",
)  # fmt: skip
STATS_FIELDS = ("time", "t_wall_ns", "t_mono_ns", "worker", "publisher", "seq", "counters")


# Each record's topic, for the marks of what a sink stored: escaping the names per record
# would cost more than storing it.
sample_topic = functools.lru_cache(maxsize=1 << 16)(topic_for_sample)
event_topic = functools.lru_cache(maxsize=1 << 16)(topic_for_event)
stats_topic = functools.lru_cache(maxsize=1 << 12)(topic_for_stats)


def message_topic(m: Sample | Event | Stats) -> bytes:
    """``m.topic``, from the caches above."""
    if isinstance(m, Sample):
        return sample_topic(m.plc, m.tag)
    if isinstance(m, Event):
        return event_topic(m.plc, m.tag)
    return stats_topic(m.worker)


def json_safe(value: Value) -> Any:
    """``value`` with non-finite floats replaced by their names (see module docstring)."""
    if type(value) is float:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if type(value) is list:
        return [json_safe(v) for v in value]
    if type(value) is dict:
        return {k: json_safe(v) for k, v in value.items()}
    return value


# One encoder for every call: json.dumps with options builds a new one each time.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def to_json(value: Any) -> str:
    """Compact strict JSON, UTF-8 characters kept readable."""
    # An integer or a finite float, the common values, spelled as the encoder spells them.
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return _encode_json(json_safe(value))


@functools.lru_cache(maxsize=8)
def _utc_second(secs: int) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(secs, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None


def iso_time(t_wall_ns: int) -> str:
    """``2023-11-14T22:13:20.123456789Z`` (UTC, nanoseconds kept)."""
    secs, ns = divmod(t_wall_ns, 1_000_000_000)
    base = _utc_second(secs)  # the same for every sample of a second: formatted once
    if base is None:
        return f"@{t_wall_ns}ns"
    return f"{base}.{ns:09d}Z"


def value_real(value: Value) -> float | None:
    """The value as a float when it is a scalar number (bool as 0/1), else None."""
    return float(value) if is_number(value) else None  # type: ignore[arg-type]


def sample_record(s: Sample) -> dict[str, Any]:
    """``value`` stays a JSON-safe structure here; writers decide how to serialize it."""
    return {
        "time": iso_time(s.t_wall_ns),
        "t_wall_ns": s.t_wall_ns,
        "t_mono_ns": s.t_mono_ns,
        "plc": s.plc,
        "tag": s.tag,
        "type": s.type_name,
        "value": json_safe(s.value),
        "value_real": json_safe(value_real(s.value)),
        "cip_seq": s.cip_seq,
        "gap": s.gap,
        "publisher": s.publisher,
        "seq": s.seq,
        "raw": s.raw.hex(),
        "t_source_ns": s.source_ns,  # the controller's time (source_time), or None
    }


@functools.lru_cache(maxsize=1 << 16)
def _sample_names_json(plc: str, tag: str, type_name: str | None) -> str:
    return f'"plc":{_encode_json(plc)},"tag":{_encode_json(tag)},"type":{_encode_json(type_name)}'


@functools.lru_cache(maxsize=1 << 10)
def _publisher_json(publisher: str) -> str:
    return f'"publisher":{_encode_json(publisher)},"seq":'


def sample_json(s: Sample) -> str:
    """``to_json(sample_record(s))``, the same text, from pieces kept per stream (names, type,
    publisher) instead of a dict walked per sample."""
    value = s.value
    return (
        f'{{"time":"{iso_time(s.t_wall_ns)}","t_wall_ns":{s.t_wall_ns},'
        f'"t_mono_ns":{s.t_mono_ns},{_sample_names_json(s.plc, s.tag, s.type_name)},'
        f'"value":{to_json(value)},"value_real":{to_json(value_real(value))},'
        f'"cip_seq":{s.cip_seq},"gap":{s.gap},{_publisher_json(s.publisher)}{s.seq},'
        f'"raw":"{s.raw.hex()}","t_source_ns":{to_json(s.source_ns)}}}'
    )


def event_record(e: Event) -> dict[str, Any]:
    return {
        "time": iso_time(e.t_wall_ns),
        "t_wall_ns": e.t_wall_ns,
        "t_mono_ns": e.t_mono_ns,
        "plc": e.plc,
        "tag": e.tag,
        "kind": str(e.kind),
        "state_from": e.state_from,
        "state_to": e.state_to,
        "cip_general": e.cip_general,
        "cip_extended": e.cip_extended,
        "status_text": e.status_text,
        "message": e.message,
        "publisher": e.publisher,
        "seq": e.seq,
    }


def gap_record(g: BusGap) -> dict[str, Any]:
    return {
        "time": iso_time(g.t_wall_ns),
        "t_wall_ns": g.t_wall_ns,
        "publisher": g.publisher,
        "topic": g.topic,
        "expected_seq": g.expected_seq,
        "received_seq": g.received_seq,
        "missed": g.missed,
        "restart": g.restart,
    }


def stats_record(s: Stats) -> dict[str, Any]:
    return {
        "time": iso_time(s.t_wall_ns),
        "t_wall_ns": s.t_wall_ns,
        "t_mono_ns": s.t_mono_ns,
        "worker": s.worker,
        "publisher": s.publisher,
        "seq": s.seq,
        "counters": json_safe(s.counters),
    }
