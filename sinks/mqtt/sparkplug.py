"""Sparkplug B 3.0 edge node: what the MQTT sink publishes in ``payload = "sparkplug"`` mode,
as data (topics and encoded payloads), without a connection.

The pyconpro pipeline is one Edge Node (``group_id``, ``edge_node_id``); each PLC is a Device
(its name, escaped). Every produced tag is one metric, named as the tag; a structured value is
flattened: a UDT member is ``Tag/Member`` (nested: ``Tag/Member/Sub``), an array element
``Tag[3]`` (``Tag[3]/Member`` for arrays of UDTs), so a Sparkplug host shows a UDT as a folder
of plain metrics. Each metric has an alias, unique across the node, given at the birth that
introduced it; DDATA carries aliases only.

Messages (``spBv1.0/<group>/<type>/<node>[/<device>]``):

- NDEATH: the MQTT Will of each connection (``will``), its ``bdSeq`` metric the one of the
  NBIRTH that follows on the same connection; also published before a clean disconnect.
- NBIRTH (``birth``): ``seq`` 0, the ``bdSeq`` metric and ``Node Control/Rebirth``; then a
  DBIRTH per Device that has data and is not dead, every metric with its last value.
- DDATA (``samples``): one per sample, each of its metrics with the sample's receive time as
  timestamp; ``is_historical`` when the sample came out of the spool.
- DBIRTH again when a Device comes back (data after its DDEATH), and when a sample brings a
  metric the last DBIRTH did not announce (a new tag, a UDT member, a type that changed).
- DDEATH (``events``) when every connection of the PLC whose state is known has left RUNNING
  (the bus's ``state`` events, docs/wire-format.md).
- ``seq`` counts every message after NBIRTH, 0..255, wrapping; ``bdSeq`` counts connections,
  0..255, wrapping; the sink keeps it across processes (``bd_seq`` is set from its file).

Values: ``DataType`` from the Logix type when the sample names one (``DINT`` -> Int32, ``REAL``
-> Float, ...), else from the decoded value (bool -> Boolean, int -> Int64, float -> Double, str
-> String); signed integers go in ``int_value`` / ``long_value`` as two's complement, as the
specification says. A value that could not be decoded is ``is_null``.

Encoding is the generated ``sparkplug_b_pb2`` module: protoc's output for the Eclipse Tahu
``sparkplug_b.proto`` beside it (``scripts/gen_sparkplug.sh`` regenerates both files; a test
checks they are what ``PROTOC_VERSION`` generates), run by the ``protobuf`` package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pyconpro.acquisition.wire import Event, EventKind, Sample
from pyconpro.sinks.mqtt import sparkplug_b_pb2 as pb
from pyconpro.sinks.mqtt import topic_name

NAMESPACE: Final = "spBv1.0"
# The protoc that generated sparkplug_b_pb2.py / .pyi (`protoc --version`).
PROTOC_VERSION: Final = "libprotoc 3.21.12"
BD_SEQ: Final = "bdSeq"
REBIRTH: Final = "Node Control/Rebirth"

# sparkplug_b.proto's DataType
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_BITS: Final = {INT8: 8, INT16: 16, INT32: 32, INT64: 64, UINT8: 8, UINT16: 16, UINT32: 32,
                UINT64: 64}  # fmt: skip
_SIGNED: Final = (INT8, INT16, INT32, INT64)
_LOGIX: Final = {
    "SINT": INT8, "INT": INT16, "DINT": INT32, "LINT": INT64, "USINT": UINT8, "UINT": UINT16,
    "UDINT": UINT32, "ULINT": UINT64, "REAL": FLOAT, "LREAL": DOUBLE, "BOOL": BOOLEAN,
    "STRING": STRING,
}  # fmt: skip
@dataclass(frozen=True, slots=True)
class Publish:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


# --------------------------------------------------------------------------- values


def _scalar_type(value: Any, logix: int | None) -> int:
    """The DataType of a scalar: the Logix type's when the value fits it, else the value's."""
    t = type(value)
    if logix is not None:
        if logix == BOOLEAN and t is bool:
            return logix
        if logix in _BITS and t is int and _fits(value, logix):
            return logix
        if logix in (FLOAT, DOUBLE) and t is float:
            return logix
        if logix == STRING and t is str:
            return logix
    if t is bool:
        return BOOLEAN
    if t is int:
        return INT64 if _fits(value, INT64) else UINT64 if _fits(value, UINT64) else STRING
    if t is float:
        return DOUBLE
    return STRING


def _fits(value: int, datatype: int) -> bool:
    bits = _BITS[datatype]
    if datatype in _SIGNED:
        return -(1 << (bits - 1)) <= value < (1 << (bits - 1))
    return 0 <= value < (1 << bits)


def flatten(tag: str, type_name: str | None, value: Any) -> list[tuple[str, int, Any]]:
    """The metrics of one sample: ``(name, datatype, value)``, a UDT's members and an array's
    elements each their own (module docstring); ``None`` values stay None (``is_null``)."""
    base = (type_name or "").split("[", 1)[0].upper()
    logix = _LOGIX.get(base)
    out: list[tuple[str, int, Any]] = []
    _walk(tag, value, logix, out)
    return out


def _walk(name: str, value: Any, logix: int | None, out: list[tuple[str, int, Any]]) -> None:
    if type(value) is dict:
        for k, v in value.items():
            _walk(f"{name}/{k}", v, None, out)
        if not value:
            out.append((name, STRING, None))
    elif type(value) is list:
        for i, v in enumerate(value):
            _walk(f"{name}[{i}]", v, logix, out)
        if not value:
            out.append((name, STRING, None))
    elif value is None:
        out.append((name, logix if logix is not None else STRING, None))
    else:
        out.append((name, _scalar_type(value, logix), value))


def set_value(m: Any, datatype: int, value: Any) -> None:
    """Fill metric ``m``'s value fields (``value`` already fits ``datatype``)."""
    if value is None:
        m.is_null = True
    elif datatype in _BITS:
        v = value + (1 << _BITS[datatype]) if value < 0 else value
        if _BITS[datatype] == 64:
            m.long_value = v
        else:
            m.int_value = v
    elif datatype == FLOAT:
        m.float_value = value
    elif datatype == DOUBLE:
        m.double_value = value
    elif datatype == BOOLEAN:
        m.boolean_value = value
    else:
        m.string_value = value if type(value) is str else str(value)


def metric_value(m: Any) -> Any:
    """The value of a decoded metric, signed integers back from two's complement (the
    inverse of ``set_value``; tests and tools)."""
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    v: Any = getattr(m, which) if which else None
    bits = _BITS.get(m.datatype)
    if bits is not None and m.datatype in _SIGNED and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


# --------------------------------------------------------------------------- the edge node


@dataclass
class _Metric:
    alias: int
    datatype: int
    value: Any
    timestamp_ms: int


@dataclass
class _Device:
    id: str
    metrics: dict[str, _Metric] = field(default_factory=dict)
    alive: bool = False  # a DBIRTH went out on this connection, no DDEATH since
    running: dict[str, bool] = field(default_factory=dict)  # tag -> connection RUNNING


@dataclass
class State:
    """A primary host application's STATE (spBv1.0/STATE/<host_id>, 3.0: JSON)."""

    online: bool
    timestamp: int


def parse_state(payload: bytes) -> State | None:
    """The STATE message's payload; None when it is not the 3.0 JSON form."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or type(doc.get("online")) is not bool:
        return None
    ts = doc.get("timestamp")
    return State(doc["online"], ts if type(ts) is int else 0)


def rebirth_requested(payload: bytes) -> bool:
    """An NCMD payload that asks for ``Node Control/Rebirth`` (true)."""
    p = pb.Payload()
    try:
        p.ParseFromString(payload)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError; anything unreadable is no rebirth
        return False
    return any(m.name == REBIRTH and m.boolean_value for m in p.metrics)


class EdgeNode:
    """The Sparkplug state of one edge node over its connections: bdSeq, seq, devices, their
    metrics and aliases. Each method returns the messages to publish, in order; the caller
    publishes them on the connection the last ``will`` was set on."""

    def __init__(self, group_id: str, node_id: str, qos: int) -> None:
        self.group_id = group_id
        self.node_id = node_id
        self.qos = qos
        self.bd_seq = -1  # the current connection's (``will`` makes the next)
        self.born = False  # NBIRTH went out on the current connection
        self._seq = 0
        self._alias = 0
        self._devices: dict[str, _Device] = {}

    def topic(self, kind: str, device: str | None = None) -> str:
        t = f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}"
        return t if device is None else f"{t}/{device}"

    def ncmd_topic(self) -> str:
        return self.topic("NCMD")

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, (self._seq + 1) % 256
        return seq

    def _payload(self, now_ms: int, seq: int | None) -> Any:
        p = pb.Payload()
        p.timestamp = now_ms
        if seq is not None:
            p.seq = seq
        return p

    def will(self, now_ms: int) -> Publish:
        """A new connection: the next bdSeq, and the NDEATH to set as its Will (QoS 1, not
        retained, as the specification says). Every device must be born again on it."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self.born = False
        for dev in self._devices.values():
            dev.alive = False
        return self.death(now_ms)

    def death(self, now_ms: int) -> Publish:
        """The NDEATH of the current connection (its Will, or sent before a clean stop)."""
        p = self._payload(now_ms, None)
        m = p.metrics.add()
        m.name, m.datatype, m.long_value = BD_SEQ, INT64, self.bd_seq
        return Publish(self.topic("NDEATH"), p.SerializeToString(), 1)

    def birth(self, now_ms: int) -> list[Publish]:
        """NBIRTH (seq 0) and a DBIRTH per device that had data and is not dead: at the start
        of a connection and on a rebirth request."""
        self._seq = 0
        p = self._payload(now_ms, self._next_seq())
        m = p.metrics.add()
        m.name, m.timestamp, m.datatype, m.long_value = BD_SEQ, now_ms, INT64, self.bd_seq
        m = p.metrics.add()
        m.name, m.timestamp, m.datatype, m.boolean_value = REBIRTH, now_ms, BOOLEAN, False
        out = [Publish(self.topic("NBIRTH"), p.SerializeToString(), self.qos)]
        self.born = True
        for dev in self._devices.values():
            if dev.metrics and (not dev.running or any(dev.running.values())):
                out.append(self._device_birth(dev, now_ms))
        return out

    def _device(self, plc: str) -> _Device:
        dev = self._devices.get(plc)
        if dev is None:
            dev = self._devices[plc] = _Device(topic_name(plc))
        return dev

    def _device_birth(self, dev: _Device, now_ms: int) -> Publish:
        p = self._payload(now_ms, self._next_seq())
        for name, met in dev.metrics.items():
            m = p.metrics.add()
            m.name, m.alias, m.timestamp, m.datatype = name, met.alias, met.timestamp_ms, \
                met.datatype
            set_value(m, met.datatype, met.value)
        dev.alive = True
        return Publish(self.topic("DBIRTH", dev.id), p.SerializeToString(), self.qos)

    def samples(self, samples: Iterable[Sample], now_ms: int, *, historical: bool = False
                ) -> Iterator[Publish]:  # fmt: skip
        """A DDATA per sample (after a DBIRTH when the device is not born, or the sample has
        a metric its DBIRTH did not announce)."""
        assert self.born, "NBIRTH first"
        for s in samples:
            dev = self._device(s.plc)
            ts = s.t_wall_ns // 1_000_000
            metrics = flatten(s.tag, s.type_name, s.value)
            dev.running[s.tag] = True  # data: its connection runs
            if self._learn(dev, metrics, ts) or not dev.alive:
                yield self._device_birth(dev, now_ms)
            yield self._data(dev, metrics, ts, now_ms, historical)

    def _learn(self, dev: _Device, metrics: Sequence[tuple[str, int, Any]], ts: int) -> bool:
        """Record the sample's values; True when a metric is new or changed its type."""
        changed = False
        known = dev.metrics
        for name, datatype, value in metrics:
            met = known.get(name)
            if met is None:
                self._alias += 1
                known[name] = _Metric(self._alias, datatype, value, ts)
                changed = True
                continue
            if met.datatype != datatype and value is not None:
                met.datatype, changed = datatype, True
            met.value, met.timestamp_ms = value, ts
        return changed

    def _data(self, dev: _Device, metrics: Sequence[tuple[str, int, Any]], ts: int,
              now_ms: int, historical: bool) -> Publish:  # fmt: skip
        p = self._payload(now_ms, self._next_seq())
        for name, _datatype, value in metrics:
            met = dev.metrics[name]
            m = p.metrics.add()
            m.alias, m.timestamp = met.alias, ts
            if historical:
                m.is_historical = True
            set_value(m, met.datatype, value)
        return Publish(self.topic("DDATA", dev.id), p.SerializeToString(), self.qos)

    def events(self, events: Iterable[Event], now_ms: int) -> Iterator[Publish]:
        """DDEATH for a born device once none of its connections is RUNNING."""
        for e in events:
            if e.kind != EventKind.STATE or not e.tag:
                continue
            dev = self._device(e.plc)
            dev.running[e.tag] = e.state_to == "RUNNING"
            if dev.alive and self.born and not any(dev.running.values()):
                dev.alive = False
                p = self._payload(now_ms, self._next_seq())
                yield Publish(self.topic("DDEATH", dev.id), p.SerializeToString(), self.qos)
