"""The I/O worker's control protocol and the consumer definition it carries, declared once.

A consumer definition (``ConsumerDef``) is one produced tag consumed from one PLC. It arrives
from the command line (``--consumer plc=p1,address=10.0.0.5,tag=Count,rpi_ms=100``), from the
control socket (a msgpack map with the same keys, ``consumer_from_map``) or from the typed
configuration (``acquisition.config.ConsumerSpec``); ``consumer_to_map`` writes the map back.
A map is read through the config file's own rules (``acquisition.consumer_keys``: names and
their lengths, addresses, ranges, types, the session's keys), so what the file refuses the
socket refuses, in the same words: every error names the key and the fix.

The control socket (docs/worker.md "Control socket") takes one MessagePack map per request,
``{"op": <name>, ...}``, and answers one map, ``{"ok": true, ...}`` or ``{"ok": false, "error":
<text>}``. Each request and reply is a frozen dataclass here with ``to_map()`` (what goes on the
wire) and, for requests, ``from_map()`` (validation, UsageError naming the fix);
``decode_request(body)`` picks the class from ``REQUESTS`` (op -> class). The worker answers
with a table keyed by request class; clients (the supervisor, ``pyconpro.api``) build their
requests from these classes. Sans-IO: no sockets, only MessagePack.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeAlias

import msgpack
from pyconpro.acquisition import epath
from pyconpro.acquisition.assembly import assembly_from_map, output_layout_from_map
from pyconpro.acquisition.consumer_keys import (
    PLC_ADDRESS,
    RPI_MAX_MS,
    RPI_MIN_MS,
    Inherited,
    multiplier_code,
    read_consumer_keys,
    read_ipv4,
    read_route,
    read_session,
    read_source_time,
    read_tag_name,
    read_tag_size,
    read_topic_segment,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_types import ArrayType, LogixType, StructType, resolve_type
from pyconpro.acquisition.originator import ConsumerParams, SessionPolicy
from pyconpro.acquisition.produce import ProduceSpec
from pyconpro.acquisition.toml_check import ConfigIssue, IssueLog, Table

KEYS = {
    "plc": "PLC name used in topics, 1-64 of A-Z a-z 0-9 _ . - (default: the address)",
    "address": "PLC IPv4 address (required)",
    "port": "PLC TCP encapsulation port (default 44818)",
    "udp_port": "PLC class-1 UDP port heartbeats go to (default 2222)",
    "slot": "CPU slot 0-255 (default 0; 'none' for no port segment)",
    "route": "port segments before the slot: [[port, link], ...] or '1/2,2/10.0.0.9'",
    "tag": "produced tag name, controller scope, as Logix writes it (required)",
    "alias": "tag segment of the topics instead of the tag name",
    "source_time": "UDT member (a LINT of µs since 1970) holding the controller's time",
    "rpi_ms": "T->O RPI in ms, 0.5-10000 (default 100)",
    "ot_rpi_ms": "O->T (heartbeat) RPI in ms (default: rpi_ms)",
    "multiplier": "timeout multiplier 4, 8, ..., 512 (default 8)",
    "transport": "unicast or multicast (default unicast)",
    "size": "tag bytes without the sequence count, 1-500 (default: learned from the controller)",
    "type": "Logix type, e.g. DINT, REAL[10], INT[2,3] (default: learned)",
    "reconnect_min_s": "first wait before reconnecting the PLC's session (default 0.1)",
    "reconnect_max_s": "longest wait between reconnect attempts (default 0.5)",
    "connect_timeout_s": "give one TCP connect to the PLC up after this long (default 2)",
    "max_in_flight": "requests (Forward_Open, ...) sent to the PLC at once (default 8)",
    "assembly": "a generic adapter's assembly instead of a tag: {connection, input, output,"
                " config, ...} (docs/configuration.md, Assemblies); slot then defaults to none",
}
_SESSION_DEFAULTS = SessionPolicy()

_TYPE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([0-9,\s]+)\])?\s*\Z")


@dataclass(frozen=True, slots=True)
class ConsumerDef:
    plc: str
    address: str
    tag: str
    rpi_us: int = 100_000
    ot_rpi_us: int | None = None
    multiplier: int = 1  # wire code: x8
    multicast: bool = False
    slot: int | None = 0
    route: tuple[tuple[int, int | str], ...] = ()
    size: int | None = None
    type: str | None = None
    alias: str | None = None
    port: int = 44818
    udp_port: int = 2222
    # The PLC's session (the same for every consumer of that PLC; the last one added wins).
    reconnect_min_s: float = _SESSION_DEFAULTS.reconnect_min_s
    reconnect_max_s: float = _SESSION_DEFAULTS.reconnect_max_s
    connect_timeout_s: float = _SESSION_DEFAULTS.connect_timeout_s
    max_in_flight: int = _SESSION_DEFAULTS.max_in_flight
    # A generic adapter's assembly instead of a Logix tag (acquisition.assembly MAP_KEYS);
    # ``tag`` is then the consumer's name.
    assembly: Mapping[str, Any] | None = None
    source_time: str | None = None  # the UDT member holding the controller's time

    @property
    def key(self) -> str:
        """Identity inside one worker: ``<plc>/<topic name>``."""
        return f"{self.plc}/{self.topic_name}"

    @property
    def topic_name(self) -> str:
        return self.alias if self.alias is not None else self.tag

    def logix_type(self) -> LogixType | None:
        return parse_type(self.type) if self.type is not None else None

    def params(self) -> ConsumerParams:
        route = tuple(
            epath.PortSegment(port, bytes([link]) if isinstance(link, int) else link.encode())
            for port, link in self.route
        )
        if self.assembly is not None:
            spec, layout = assembly_from_map(self.tag, self.assembly)
            return ConsumerParams(
                plc=self.plc, tag=self.tag, rpi_us=self.rpi_us, ot_rpi_us=self.ot_rpi_us,
                multiplier=self.multiplier, slot=self.slot, route=route, tag_type=layout,
                plc_udp_port=self.udp_port, assembly=spec,
                output_layout=output_layout_from_map(self.tag, self.assembly, spec),
            )
        return ConsumerParams(
            plc=self.plc, tag=self.tag, rpi_us=self.rpi_us, ot_rpi_us=self.ot_rpi_us,
            multiplier=self.multiplier, multicast=self.multicast, slot=self.slot, route=route,
            tag_bytes=self.size, tag_type=self.logix_type(), plc_udp_port=self.udp_port,
            source_time=self.source_time,
        )

    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(self.reconnect_min_s, self.reconnect_max_s,
                             self.connect_timeout_s, self.max_in_flight)

    def to_map(self) -> dict[str, Any]:
        out = asdict(self)
        out["route"] = [list(hop) for hop in self.route]
        if self.assembly is not None:
            out["assembly"] = dict(self.assembly)
        return out


def parse_type(text: str) -> LogixType:
    m = _TYPE.match(text)
    if m is None:
        raise UsageError(f"type {text!r}: write an atomic type with optional dims, e.g. DINT,"
                         " REAL[10], INT[2,3]")
    elem = resolve_type(m.group(1), context="type")
    if isinstance(elem, StructType) and elem.name not in ("STRING",):
        raise UsageError(f"type {text!r}: only atomic types and STRING can be given; omit"
                         " 'type' to learn a UDT from the controller")
    if m.group(2) is None:
        return elem
    try:
        dims = tuple(int(d) for d in m.group(2).split(",") if d.strip())
    except ValueError:
        raise UsageError(f"type {text!r}: dims must be integers") from None
    return ArrayType(elem, dims)  # type: ignore[arg-type]


class ConsumerKeyError(UsageError):
    """A consumer map was refused. ``issues`` are what the config file would say of the same
    values (``acquisition.consumer_keys``): key path, problem and fix, every one found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(_issue_text(i) for i in self.issues))


def _issue_text(issue: ConfigIssue) -> str:
    fix = f"; {issue.fix}" if issue.fix else ""
    return f"{issue.key}: {issue.problem}{fix}"


#: Keys whose text on the command line is a number ("rpi_ms=20"), as they are in a map.
_NUMERIC_KEYS = frozenset({
    "port", "udp_port", "slot", "rpi_ms", "rpi_us", "ot_rpi_ms", "ot_rpi_us", "multiplier",
    "size", "reconnect_min_s", "reconnect_max_s", "connect_timeout_s", "max_in_flight",
})  # fmt: skip
_CONTROL_START = Inherited(
    rpi_ms=(100.0, "consumer.rpi_ms"),
    ot_rpi_ms=(None, "consumer.ot_rpi_ms"),
    multiplier=(8, "consumer.multiplier"),
    transport=("unicast", "consumer.transport"),
)


def _number_text(text: str) -> int | float | str:
    """``"20"`` -> 20, ``"2.5"`` -> 2.5; anything else stays text (and is refused as such)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _route_pairs(text: str) -> list[list[int | float | str]]:
    """``"1/2,2/10.0.0.9"`` -> ``[[1, 2], [2, "10.0.0.9"]]`` (a hop without '/' stays whole
    and is refused by the route rule)."""
    hops: list[list[int | float | str]] = []
    for hop in (h.strip() for h in text.split(",") if h.strip()):
        port, slash, link = hop.partition("/")
        hops.append([_number_text(port), _number_text(link)] if slash else [hop])
    return hops


def _rpi_us(t: Table, key: str) -> int | None:
    """``rpi_us`` / ``ot_rpi_us``: the same range as the ms keys, in whole microseconds."""
    value: int | None = t.integer(key, None, round(RPI_MIN_MS * 1000), round(RPI_MAX_MS * 1000),
                                  "us")
    return value


def _slot(t: Table) -> int | None:
    if t.raw("slot") in (None, "none", ""):
        return None  # no port segment: the path goes to the target itself
    slot: int = t.integer("slot", 0, 0, 255)
    return slot


def consumer_from_map(m: Mapping[str, Any]) -> ConsumerDef:
    """Validate a map of the keys in ``KEYS`` through the config file's own rules
    (``acquisition.consumer_keys``); ``ConsumerKeyError`` lists every problem with its key and
    fix."""
    if isinstance(m.get("route"), str):
        m = {**m, "route": _route_pairs(m["route"])}
    log = IssueLog("consumer", "")
    t = Table(log, "consumer", m, (*KEYS, "rpi_us", "ot_rpi_us"))
    address = read_ipv4(t, "address", what=PLC_ADDRESS, required=True)
    assembly = m.get("assembly")
    # An assembly consumer's ``tag`` is only its name, a topic segment (no Logix rules).
    tag = (read_topic_segment(t, "tag", "assembly name", required=True) if assembly is not None
           else read_tag_name(t, "tag"))
    plc = read_topic_segment(t, "plc", "PLC name")
    alias = read_topic_segment(t, "alias", "alias")
    source_time = read_source_time(t)
    inh = read_consumer_keys(t, _CONTROL_START)
    rpi_us = _rpi_us(t, "rpi_us") if t.has("rpi_us") else round(inh.rpi_ms[0] * 1000)
    ot_ms = inh.ot_rpi_ms[0]
    ot_rpi_us = (_rpi_us(t, "ot_rpi_us") if t.has("ot_rpi_us")
                 else None if ot_ms is None else round(ot_ms * 1000))
    if assembly is not None and not isinstance(assembly, Mapping):
        log.error("consumer.assembly", "not a table of assembly keys",
                  "give e.g. {connection = \"input_only\", input = 100, output = 152}")
        assembly = None
    slot = None if assembly is not None and not t.has("slot") else _slot(t)
    route = read_route(t)
    size = read_tag_size(t)
    type_text = t.string("type", None)
    port = t.integer("port", 44818, 1, 65535)
    udp_port = t.integer("udp_port", 2222, 1, 65535)
    session = read_session(t, _SESSION_DEFAULTS)
    if log.issues or address is None or tag is None:
        raise ConsumerKeyError(log.issues)
    d = ConsumerDef(
        plc=plc or address, address=address, tag=tag, rpi_us=rpi_us or 100_000,
        ot_rpi_us=ot_rpi_us, multiplier=multiplier_code(inh.multiplier[0]),
        multicast=inh.transport[0] == "multicast", slot=slot,
        route=tuple((hop.port, hop.link) for hop in route), size=size,
        type=type_text or None, alias=alias, port=port, udp_port=udp_port,
        reconnect_min_s=session.reconnect_min_s, reconnect_max_s=session.reconnect_max_s,
        connect_timeout_s=session.connect_timeout_s, max_in_flight=session.max_in_flight,
        assembly=dict(assembly) if assembly is not None else None,
        source_time=source_time,
    )
    d.params().connection_path()  # the type and its agreement with size; the path encodes
    return d


def consumer_from_text(text: str) -> ConsumerDef:
    """``key=value,key=value``; a route's own commas are written with ';'
    (``route=1/2;2/10.0.0.9``). Numbers are read as numbers, so the values meet the same rules
    as in a map."""
    m: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise UsageError(f"--consumer {text!r}: {part!r} is not key=value")
        key, value = key.strip(), value.strip()
        m[key] = _number_text(value) if key in _NUMERIC_KEYS else value
    if "route" in m:
        m["route"] = _route_pairs(str(m["route"]).replace(";", ","))
    return consumer_from_map(m)


def consumer_to_map(d: ConsumerDef) -> dict[str, Any]:
    """The control-socket map of ``d``: ``consumer_from_map(consumer_to_map(d)) == d``.
    Keys that hold their default or None are left out (except the core ones, always sent)."""
    m: dict[str, Any] = {
        "plc": d.plc,
        "address": d.address,
        "tag": d.tag,
        "rpi_us": d.rpi_us,
    }
    if d.ot_rpi_us is not None:
        m["ot_rpi_us"] = d.ot_rpi_us
    m["multiplier"] = 4 << d.multiplier
    m["transport"] = "multicast" if d.multicast else "unicast"
    m["slot"] = "none" if d.slot is None else d.slot
    m["udp_port"] = d.udp_port
    if d.route:
        m["route"] = [[port, link] for port, link in d.route]
    if d.size is not None:
        m["size"] = d.size
    if d.alias is not None:
        m["alias"] = d.alias
    if d.source_time is not None:
        m["source_time"] = d.source_time
    if d.type is not None:
        m["type"] = d.type
    if d.port != 44818:
        m["port"] = d.port
    if d.assembly is not None:
        m["assembly"] = dict(d.assembly)
    session = d.session_policy()
    for key in ("reconnect_min_s", "reconnect_max_s", "connect_timeout_s", "max_in_flight"):
        if getattr(session, key) != getattr(_SESSION_DEFAULTS, key):
            m[key] = getattr(session, key)
    return m


def consumer_digest(d: ConsumerDef) -> str:
    """A short fingerprint of ``d`` (of its control-socket map): the worker reports it per
    consumer in ``status`` (``def``), so the supervisor sees a consumer changed behind its back
    without the whole definition in every status reply."""
    packed: bytes = msgpack.packb(consumer_to_map(d), use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()[:16]


def consumer_from_spec(spec: Any) -> ConsumerDef:
    """From ``acquisition.config.ConsumerSpec`` (the supervisor's typed configuration)."""
    return ConsumerDef(
        plc=spec.plc,
        address=spec.address,
        tag=spec.tag,
        rpi_us=spec.rpi_us,
        ot_rpi_us=spec.ot_rpi_us,
        multiplier=spec.multiplier,
        multicast=spec.multicast,
        slot=spec.slot,
        route=tuple((h.port, h.link) for h in spec.route),
        size=spec.size,
        alias=spec.alias,
        udp_port=spec.udp_port,
        reconnect_min_s=spec.session.reconnect_min_s,
        reconnect_max_s=spec.session.reconnect_max_s,
        connect_timeout_s=spec.session.connect_timeout_s,
        max_in_flight=spec.session.max_in_flight,
        source_time=spec.source_time,
        assembly=spec.assembly.assembly_map() if spec.assembly is not None else None,
    )


# ============================================================================ control protocol


def _key_of(req: Mapping[str, Any]) -> object:
    """``key``, or ``<plc>/<tag>`` when the request names the consumer by plc and tag."""
    key = req.get("key")
    if key is None and req.get("plc") is not None and req.get("tag") is not None:
        key = f"{req['plc']}/{req['tag']}"
    return key


def no_recorder_key(key: object) -> UsageError:
    """The error of a ``recorder`` request whose key names no consumer."""
    return UsageError(
        f"'recorder' needs the 'key' of a consumer (<plc>/<tag or alias>), got"
        f" {key!r}; 'list' shows the keys"
    )


@dataclass(frozen=True, slots=True)
class AddRequest:
    """Start consuming a tag: ``{"op": "add", "consumer": {<consumer keys>}}``.

    ``outage_since`` (optional): the tag's data stopped then, before this add, on this host's
    monotonic clock (seconds, ``time.monotonic()``): the supervisor says so when it adds the
    consumers of a worker that replaces one that died or was restarted, and the first sample
    ends an outage of cause ``restart`` that began then."""

    OP: ClassVar[str] = "add"
    consumer: ConsumerDef
    outage_since: float | None = None

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> AddRequest:
        spec = req.get("consumer")
        if not isinstance(spec, dict):
            raise UsageError("'add' needs 'consumer': a map with at least address and tag")
        since = req.get("outage_since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))
                                  or not math.isfinite(since) or since < 0):
            raise UsageError(f"'add': outage_since {since!r} is not a time: give the"
                             " monotonic clock's seconds when the tag's data stopped, or omit it")
        return cls(consumer_from_map(spec), None if since is None else float(since))

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.OP, "consumer": consumer_to_map(self.consumer)}
        if self.outage_since is not None:
            out["outage_since"] = self.outage_since
        return out


@dataclass(frozen=True, slots=True)
class RemoveRequest:
    """Stop a consumer (Forward_Close): ``{"op": "remove", "key": "a/Count"}`` (or plc + tag)."""

    OP: ClassVar[str] = "remove"
    key: str

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> RemoveRequest:
        key = _key_of(req)
        if not isinstance(key, str):
            raise UsageError("'remove' needs 'key' (<plc>/<tag or alias>) or 'plc' and 'tag'")
        return cls(key)

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP, "key": self.key}


@dataclass(frozen=True, slots=True)
class ListRequest:
    """The consumers and their states: ``{"op": "list"}``."""

    OP: ClassVar[str] = "list"

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> ListRequest:
        return cls()

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP}


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """The worker's status: ``{"op": "status"}``, flight recorders with ``"recorder": true``."""

    OP: ClassVar[str] = "status"
    recorder: bool = False

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> StatusRequest:
        return cls(recorder=req.get("recorder") is True)

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP, **({"recorder": True} if self.recorder else {})}


@dataclass(frozen=True, slots=True)
class RecorderRequest:
    """One consumer's flight recorder: ``{"op": "recorder", "key": "a/Count"}`` (or plc + tag)."""

    OP: ClassVar[str] = "recorder"
    key: str

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> RecorderRequest:
        key = _key_of(req)
        if not isinstance(key, str):
            raise no_recorder_key(key)
        return cls(key)

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP, "key": self.key}


@dataclass(frozen=True, slots=True)
class OutputRequest:
    """The output image of an exclusive-owner assembly consumer, sent from its next O->T
    datagram on: ``{"op": "output", "key": "io/drive", "data": <bin>}`` (or plc + tag);
    ``data`` may be a map of fields when the consumer declares an ``output_layout``
    (``{"speed": 1200}``: the fields not named keep their value). The bus topic
    ``output/<plc>/<name>/`` does the same for any process; this is the API's way, with an
    answer (a wrong size or field is refused with the fix)."""

    OP: ClassVar[str] = "output"
    key: str
    data: bytes | dict[str, Any]

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> OutputRequest:
        key, data = _key_of(req), req.get("data")
        if not isinstance(key, str) or not isinstance(data, (bytes, dict)):
            raise UsageError("'output' needs 'key' (<plc>/<name>) and 'data' (the output image"
                             " as bytes, or a map of its output_layout's fields)")
        return cls(key, data)

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP, "key": self.key, "data": self.data}


@dataclass(frozen=True, slots=True)
class StopRequest:
    """Shut down as on SIGTERM: ``{"op": "stop"}``."""

    OP: ClassVar[str] = "stop"

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> StopRequest:
        return cls()

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP}


@dataclass(frozen=True, slots=True)
class ProduceRequest:
    """Produce a tag for Logix consumers (docs/worker.md "Producing tags"):
    ``{"op": "produce", "produce": {"name": "Setpoint", "type": "REAL", ...}}`` (the keys of
    ``acquisition.produce.ProduceSpec``)."""

    OP: ClassVar[str] = "produce"
    spec: ProduceSpec

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> ProduceRequest:
        spec = req.get("produce")
        if not isinstance(spec, dict):
            raise UsageError("'produce' needs 'produce': a map with at least name and type")
        return cls(ProduceSpec.from_dict(spec))

    def to_map(self) -> dict[str, Any]:
        return {"op": self.OP, "produce": self.spec.as_dict()}


@dataclass(frozen=True, slots=True)
class SetRequest:
    """The new value of a produced tag: ``{"op": "set", "tag": "Setpoint", "value": 1.5}``, or
    ``"raw": <bytes>`` (the tag image, exactly its size) instead of ``value``."""

    OP: ClassVar[str] = "set"
    tag: str
    value: Any

    @classmethod
    def from_map(cls, req: Mapping[str, Any]) -> SetRequest:
        tag = req.get("tag")
        if not isinstance(tag, str):
            raise UsageError("'set' needs 'tag' (a produced tag's name) and 'value' or 'raw'")
        if "raw" in req:
            raw = req["raw"]
            if not isinstance(raw, bytes):
                raise UsageError("'set': 'raw' must be bytes (the tag image)")
            return cls(tag, raw)
        if "value" not in req:
            raise UsageError(f"'set' {tag!r}: give 'value' (or 'raw' bytes)")
        return cls(tag, req["value"])

    def to_map(self) -> dict[str, Any]:
        key = "raw" if isinstance(self.value, bytes) else "value"
        return {"op": self.OP, "tag": self.tag, key: self.value}


Request: TypeAlias = (
    AddRequest | RemoveRequest | ListRequest | StatusRequest | RecorderRequest | OutputRequest
    | StopRequest | ProduceRequest | SetRequest
)

#: op -> request class; the order is the one error messages list the ops in.
REQUESTS: dict[str, type[Request]] = {
    cls.OP: cls
    for cls in (AddRequest, RemoveRequest, ListRequest, StatusRequest, RecorderRequest,
                OutputRequest, StopRequest, ProduceRequest, SetRequest)
}


def request_from_map(req: object) -> Request:
    """Validate one decoded request map; UsageError names the fix."""
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise UsageError(
            "control request must be a map with an 'op' string (add, remove, list, status, stop)"
        )
    cls = REQUESTS.get(req["op"])
    if cls is None:
        raise UsageError(
            f"unknown op {req['op']!r}: use {', '.join(list(REQUESTS)[:-1])} or"
            f" {list(REQUESTS)[-1]}"
        )
    return cls.from_map(req)


def decode_request(body: bytes) -> Request:
    """One control request as the worker receives it (a MessagePack map)."""
    try:
        req = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise UsageError(
            "control request is not MessagePack: send a map like {'op': 'list'}"
        ) from None
    return request_from_map(req)


def encode_request(req: Request) -> bytes:
    packed: bytes = msgpack.packb(req.to_map(), use_bin_type=True)
    return packed


# ---------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class ConsumerReply:
    """The reply to ``add`` and ``remove``: the consumer's key and its state now."""

    key: str
    state: str

    def to_map(self) -> dict[str, Any]:
        return {"ok": True, "key": self.key, "state": self.state}


@dataclass(frozen=True, slots=True)
class ConsumerListing:
    """One entry of the ``list`` reply."""

    key: str
    plc: str
    tag: str
    address: str
    state: str
    failure: str | None

    def to_map(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "plc": self.plc,
            "tag": self.tag,
            "address": self.address,
            "state": self.state,
            "failure": self.failure,
        }


@dataclass(frozen=True, slots=True)
class ListReply:
    consumers: tuple[ConsumerListing, ...]

    def to_map(self) -> dict[str, Any]:
        return {"ok": True, "consumers": [c.to_map() for c in self.consumers]}


@dataclass(frozen=True, slots=True)
class StatusReply:
    """The ``status`` reply; its fields are documented in docs/worker.md."""

    status: Mapping[str, Any]

    def to_map(self) -> dict[str, Any]:
        return {"ok": True, **self.status}


@dataclass(frozen=True, slots=True)
class RecorderReply:
    key: str
    state: str
    recorder: list[str]

    def to_map(self) -> dict[str, Any]:
        return {"ok": True, "key": self.key, "state": self.state, "recorder": self.recorder}


@dataclass(frozen=True, slots=True)
class StopReply:
    def to_map(self) -> dict[str, Any]:
        return {"ok": True, "stopping": True}


@dataclass(frozen=True, slots=True)
class ProducedReply:
    """The reply to ``produce`` and ``set``: the produced tag's status
    (``acquisition.produce.ProducedTag.status``)."""

    tag: Mapping[str, Any]

    def to_map(self) -> dict[str, Any]:
        return {"ok": True, "tag": dict(self.tag)}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A refused request: ``{"ok": false, "error": <text for people>}``."""

    error: str

    def to_map(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error}


Reply: TypeAlias = (
    ConsumerReply | ListReply | StatusReply | RecorderReply | StopReply | ProducedReply | ErrorReply
)


def encode_reply(reply: Reply) -> bytes:
    # default=str: a status value of a type MessagePack lacks is sent as its text.
    packed: bytes = msgpack.packb(reply.to_map(), use_bin_type=True, default=str)
    return packed
