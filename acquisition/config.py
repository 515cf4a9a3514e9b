"""The typed configuration model: one TOML file -> one frozen, validated ``Config``.

Owns: the schema of the pipeline's config file (``docs/configuration.md`` documents every key),
its validation, and the two pure views the supervisor needs: the consumer definitions per PLC
(``consumer_specs``) and the grouping of PLCs into I/O workers by local address
(``group_by_local_address``).

The rules of each consumer key (names, addresses, routes, RPIs, multiplier, size, the PLC
session's keys, with their ranges) are ``acquisition.consumer_keys``, which the worker's control
socket reads its consumers through too. Protocol facts used here (protocol.md): multicast T->O
never crosses a router (6.7) and the recommended Forward_Open values (7.1).

Every problem found is collected and raised once as ``ConfigError`` whose ``issues`` each name the
file, the TOML key path (``plc[1].tag[0].rpi_ms``), the line where that key is written (found by
scanning the source text, because tomllib does not report positions of values), what is wrong and
how to fix it. Unknown keys are errors with a "did you mean" suggestion: a typo in a config file
must never silently fall back to a default.

A ``[[sink]]`` section's common keys are read by ``acquisition.sink_config``; the options of
each sink kind come from that kind's schema, which the caller passes in (``sink_kinds``: the
schemas live with their sinks, see ``sinks/registry.py``).

Pure: no sockets, no clock, no files: ``parse_config`` works on the text
(``pyconpro/config_file.py`` reads the file).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from pyconpro.acquisition.assembly import MAP_KEYS as ASSEMBLY_MAP_KEYS
from pyconpro.acquisition.assembly import AssemblySpec, ConnectionKind, assembly_from_map
from pyconpro.acquisition.consumer_keys import (
    PLC_ADDRESS,
    Inherited,
    RouteHop,
    multiplier_code,
    read_consumer_keys,
    read_ipv4,
    read_route,
    read_session,
    read_source_time,
    read_tag_name,
    read_tag_size,
    read_topic_segment,
    validate_tag_name,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.originator import SessionPolicy
from pyconpro.acquisition.produce import ProduceSpec
from pyconpro.acquisition.produce_config import ProducePlacement, read_produce
from pyconpro.acquisition.security import SecurityConfig, check_exposure, read_security
from pyconpro.acquisition.sink_config import OutputCheck, SinkConfig, SinkSchema, read_sink
from pyconpro.acquisition.subscriptions import PER_PEER_DEFAULT as SUBSCRIPTIONS_PER_PEER_DEFAULT
from pyconpro.acquisition.subscriptions import TOTAL_DEFAULT as SUBSCRIPTIONS_TOTAL_DEFAULT
from pyconpro.acquisition.supervision import RestartPolicy
from pyconpro.acquisition.toml_check import MISSING, ConfigError, ConfigIssue
from pyconpro.acquisition.toml_check import IssueLog as _Ctx
from pyconpro.acquisition.toml_check import KeyLines as _KeyLines
from pyconpro.acquisition.toml_check import Table as _Table
from pyconpro.acquisition.toml_check import fmt as _fmt
from pyconpro.acquisition.toml_check import parse_toml as _parse_toml
from pyconpro.acquisition.toml_check import relative_to as _relative_to
from pyconpro.acquisition.web_config import WebConfig, read_web, web_warnings

__all__ = [
    "AssemblyConfig",
    "BusConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConsumerSpec",
    "Defaults",
    "LoggingConfig",
    "PlcConfig",
    "RouteHop",
    "SecurityConfig",
    "SessionPolicy",
    "TagConfig",
    "WorkerConfig",
    "WebConfig",
    "WorkerGroup",
    "consumer_specs",
    "LayoutField",
    "group_by_local_address",
    "multiplier_code",
    "parse_config",
    "validate_tag_name",
]

Transport = Literal["unicast", "multicast"]
UDP_RCVBUF_DEFAULT: Final = 4 << 20  # 4 MiB: a burst or a pause of the worker fits in it
UDP_RCVBUF_MAX: Final = 1 << 30  # SO_RCVBUF is an int; Linux doubles what it grants

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# [bus] replay buffer: 60 s / 64 MiB by default (at 10 000 samples/s of ~200 bytes, 64 MiB
# holds about 20 s); the ceilings only catch unit mistakes.
REPLAY_S_DEFAULT: Final = 60.0
REPLAY_S_MAX: Final = 86_400.0
REPLAY_BYTES_DEFAULT: Final = 64 << 20
REPLAY_BYTES_MAX: Final = 1 << 40
SUBSCRIPTIONS_MAX: Final = 10_000_000
_ENDPOINT_TCP = re.compile(r"tcp://(?P<host>\*|[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d+)")


# --------------------------------------------------------------------------------------------
# the typed model


@dataclass(frozen=True, slots=True)
class BusConfig:
    """``[bus]``: where subscribers connect, where control sockets live, socket limits."""

    endpoint: str = "tcp://127.0.0.1:5555"
    control_base: str = "ipc:///tmp/pyconpro"
    hwm: int = 100_000
    linger_ms: int = 1000
    # The forwarder's replay buffer (acquisition/replay.py): the latest messages, at most this
    # old and this big, for sinks that restart. Either 0: no buffer, no replay.
    replay_s: float = REPLAY_S_DEFAULT
    replay_bytes: int = REPLAY_BYTES_DEFAULT
    # Subscriptions the public endpoint holds per peer and in total (acquisition/subscriptions.py).
    max_subscriptions_per_peer: int = SUBSCRIPTIONS_PER_PEER_DEFAULT
    max_subscriptions: int = SUBSCRIPTIONS_TOTAL_DEFAULT
    # SCHED_FIFO priority of the forwarder's threads (1..99; 0 = normal scheduling), for hosts
    # whose cores are busy with other work (docs/deployment.md "Latency on a busy host").
    realtime_priority: int = 0

    @property
    def replay(self) -> bool:
        return self.replay_s > 0 and self.replay_bytes > 0

    def control_endpoint(self, name: str, index: int) -> str:
        """Control endpoint of process ``name`` (index 0 is the supervisor, workers 1, 2, ...).

        ``ipc://`` bases get a suffix per name; ``tcp://host:port`` bases get ``port + index``.
        """
        m = _ENDPOINT_TCP.fullmatch(self.control_base)
        if m is not None:
            return f"tcp://{m.group('host')}:{int(m.group('port')) + index}"
        return f"{self.control_base}-{name}"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """``[logging]``: level name and an optional file (None = standard error)."""

    level: str = "INFO"
    file: str | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    """``[defaults]``: consumer settings every PLC and tag inherits unless it sets its own."""

    rpi_ms: float = 100.0
    ot_rpi_ms: float | None = None  # None: same as the tag's rpi_ms
    multiplier: int = 16  # the factor (x16 = code 2), protocol.md 7.1 recommends x8..x16
    transport: Transport = "unicast"
    udp_port: int = 2222
    session: SessionPolicy = field(default_factory=SessionPolicy)  # every PLC's, unless set


@dataclass(frozen=True, slots=True)
class TagConfig:
    """A ``[[plc.tag]]`` with every inherited value resolved."""

    name: str
    rpi_ms: float
    ot_rpi_ms: float
    multiplier: int  # factor 4..512
    transport: Transport
    size: int | None = None  # tag bytes (without the 2-byte sequence count); None = learn it
    alias: str | None = None
    source_time: str | None = None  # the UDT member holding the controller's time

    @property
    def topic_name(self) -> str:
        """The tag segment of this tag's topics."""
        return self.alias if self.alias is not None else self.name


@dataclass(frozen=True, slots=True)
class LayoutField:
    """One field of an assembly's declared layout (``acquisition.assembly.parse_layout``)."""

    name: str
    type: str
    offset: int | None = None
    bit: int | None = None


@dataclass(frozen=True, slots=True)
class AssemblyConfig:
    """A ``[[plc.assembly]]``: a connection to a generic adapter's assemblies
    (docs/assemblies.md), every inherited value resolved; ``spec`` holds its keys of
    ``acquisition.assembly.MAP_KEYS`` but the layouts."""

    name: str  # the ``<name>`` of its topics
    spec: AssemblySpec
    rpi_ms: float
    ot_rpi_ms: float
    multiplier: int  # factor 4..512
    layout: tuple[LayoutField, ...] = ()
    output_layout: tuple[LayoutField, ...] = ()  # exclusive owner: fields of the output image

    @property
    def exclusive_owner(self) -> bool:
        """Its O->T data is an output image read from the bus (``output/<plc>/<name>/``)."""
        return not self.spec.heartbeat

    def assembly_map(self) -> dict[str, Any]:
        """The ``assembly`` map of a worker's consumer definition (``assembly_from_map``)."""
        m = self.spec.to_map()
        for key, layout in (("layout", self.layout), ("output_layout", self.output_layout)):
            if layout:
                m[key] = [{k: v for k, v in (("name", f.name), ("type", f.type),
                                             ("offset", f.offset), ("bit", f.bit))
                           if v is not None} for f in layout]
        return m

    def describe(self) -> str:
        """``input_only input 100 heartbeat 152 config 151`` (``pyconpro check``)."""
        return self.spec.describe()


@dataclass(frozen=True, slots=True)
class PlcConfig:
    """A ``[[plc]]`` entry."""

    name: str
    address: str
    slot: int = 0
    route: tuple[RouteHop, ...] = ()
    interface: str | None = None
    local_address: str | None = None
    udp_port: int = 2222  # the PLC's class-1 UDP port (where O->T heartbeats go)
    tags: tuple[TagConfig, ...] = ()
    session: SessionPolicy = field(default_factory=SessionPolicy)  # reconnect and pacing
    assemblies: tuple[AssemblyConfig, ...] = ()
    # The backplane slot of the assemblies' paths: ``slot`` when the entry writes it, else
    # none (a generic adapter owns its address; tags keep slot 0 by default).
    assembly_slot: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """``[worker]``: settings shared by every I/O worker process."""

    udp_port: int = 2222  # the local port each worker binds on its interface address
    stats_interval_s: float = 5.0
    # SO_RCVBUF each worker asks for its UDP sockets (bytes; 0 = the system default). Linux
    # grants at most net.core.rmem_max; the worker logs and reports what it got.
    udp_rcvbuf: int = UDP_RCVBUF_DEFAULT
    # The TCP port of a worker that produces tags ([[produce]]): its EtherNet/IP server.
    tcp_port: int = 44818
    # SCHED_FIFO priority of each worker (1..99; 0 = normal scheduling), for hosts whose cores
    # are busy with other work (docs/deployment.md "Latency on a busy host").
    realtime_priority: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration. ``source`` is the file it came from."""

    source: str
    bus: BusConfig = field(default_factory=BusConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    defaults: Defaults = field(default_factory=Defaults)
    plcs: tuple[PlcConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    supervisor: RestartPolicy = field(default_factory=RestartPolicy)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    web: WebConfig | None = None  # None: no [web] section (or enabled = false): no web process
    # [[produce]]: tags produced for Logix consumers, with where each is served.
    produce: tuple[tuple[ProduceSpec, ProducePlacement], ...] = ()
    # What is valid but probably not meant (`check` prints them, `run` logs them).
    warnings: tuple[ConfigIssue, ...] = field(default=(), compare=False, repr=False)
    # Line of each key path in the source, so later checks (group_by_local_address) can still
    # point at a line. Not part of the value.
    key_lines: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def plc(self, name: str) -> PlcConfig:
        for p in self.plcs:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """Everything an I/O worker needs to open and keep one produced-tag connection.

    ``multiplier`` is the wire code 0..7 (timeout = (4 << code) x RPI, protocol.md 5.4);
    ``size`` is the tag's byte size without the 2-byte sequence count, or None to learn it.
    ``udp_port`` is the PLC's class-1 UDP port. With ``assembly``, the consumer opens a
    generic adapter's assemblies instead of a tag: ``tag`` is then its name, and ``slot``
    None means no backplane hop.
    """

    plc: str
    address: str
    slot: int | None
    route: tuple[RouteHop, ...]
    tag: str
    rpi_us: int
    ot_rpi_us: int
    multiplier: int
    multicast: bool
    size: int | None
    alias: str | None
    udp_port: int
    session: SessionPolicy = field(default_factory=SessionPolicy)  # its PLC's session
    source_time: str | None = None  # the UDT member holding the controller's time
    assembly: AssemblyConfig | None = None

    @property
    def topic_name(self) -> str:
        return self.alias if self.alias is not None else self.tag

    @property
    def multiplier_factor(self) -> int:
        return 4 << self.multiplier

    @property
    def hops(self) -> tuple[RouteHop, ...]:
        """The full port-segment path: the route, then the backplane hop to ``slot``."""
        return (*self.route, RouteHop(1, self.slot)) if self.slot is not None else self.route


@dataclass(frozen=True, slots=True)
class WorkerGroup:
    """The PLCs (and their consumers) one I/O worker serves from one local address."""

    local_address: str
    plcs: tuple[str, ...]
    consumers: tuple[ConsumerSpec, ...]
    produce: tuple[ProduceSpec, ...] = ()  # the [[produce]] tags this worker serves

    @property
    def name(self) -> str:
        return f"worker-{self.local_address}"


# --------------------------------------------------------------------------------------------
# sections


_BUS_KEYS: Final = ("endpoint", "control_base", "hwm", "linger_ms", "replay_s", "replay_bytes",
                    "max_subscriptions_per_peer", "max_subscriptions", "realtime_priority")
_LOGGING_KEYS: Final = ("level", "file")
_CONSUMER_KEYS: Final = ("rpi_ms", "ot_rpi_ms", "multiplier", "transport")
_SESSION_KEYS: Final = ("reconnect_min_s", "reconnect_max_s", "connect_timeout_s",
                        "max_in_flight")
_DEFAULTS_KEYS: Final = (*_CONSUMER_KEYS, "udp_port", *_SESSION_KEYS)
_PLC_KEYS: Final = (
    "name", "address", "slot", "route", "interface", "local_address", "udp_port",
    *_CONSUMER_KEYS, *_SESSION_KEYS, "tag", "assembly",
)  # fmt: skip
_TAG_KEYS: Final = ("name", *_CONSUMER_KEYS, "size", "alias", "source_time")
# An assembly connection is point to point both ways (acquisition.assembly): no transport.
_ASSEMBLY_KEYS: Final = ("name", "rpi_ms", "ot_rpi_ms", "multiplier", *ASSEMBLY_MAP_KEYS)
_LAYOUT_KEYS: Final = ("name", "type", "offset", "bit")
_CONNECTIONS: Final = tuple(k.value for k in ConnectionKind)
# Which key a cross-key complaint of ``assembly_from_map`` is about (its words -> the key).
_ASSEMBLY_BLAME: Final = (("output_layout of", "output_layout"), ("layout of", "layout"),
                          ("configuration data", "config_data"),
                          ("raw connection path", "path"), ("output_size", "output_size"))
_HEX_EXAMPLE: Final = 'write bytes as hex, e.g. "20 04 24 97 2C 96 2C 64"'
_WORKER_KEYS: Final = ("udp_port", "stats_interval_s", "udp_rcvbuf", "tcp_port",
                        "realtime_priority")
_SUPERVISOR_KEYS: Final = (
    "start_s", "backoff_initial_s", "backoff_factor", "backoff_max_s", "jitter",
    "max_quick_failures", "stop_timeout_s",
)  # fmt: skip
_TOP_KEYS: Final = (
    "bus", "logging", "defaults", "plc", "sink", "worker", "supervisor", "security", "web",
    "produce",
)  # fmt: skip


def _endpoint(t: _Table, key: str, default: str) -> str:
    value = t.string(key, default)
    if value.startswith("ipc://"):
        if len(value) <= len("ipc://"):
            t.ctx.error(
                t.key(key), f"{key} = {value!r} has no path", 'write e.g. "ipc:///tmp/pyconpro"'
            )
            return default
        return str(value)
    m = _ENDPOINT_TCP.fullmatch(value)
    if m is None:
        t.ctx.error(
            t.key(key),
            f"{key} = {value!r} is not a ZeroMQ endpoint",
            'write "tcp://HOST:PORT" (e.g. "tcp://127.0.0.1:5555") or "ipc:///path"',
        )
        return default
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        t.ctx.error(
            t.key(key), f"{key} = {value!r} has port {port}", "use a port between 1 and 65535"
        )
        return default
    return str(value)


def _read_bus(ctx: _Ctx, data: Mapping[str, Any]) -> BusConfig:
    t = _Table(ctx, "bus", data, _BUS_KEYS)
    d = BusConfig()
    return BusConfig(
        endpoint=_endpoint(t, "endpoint", d.endpoint),
        control_base=_endpoint(t, "control_base", d.control_base),
        hwm=t.integer("hwm", d.hwm, 1, 10_000_000, "messages"),
        linger_ms=t.integer("linger_ms", d.linger_ms, 0, 600_000, "ms"),
        replay_s=t.number("replay_s", d.replay_s, 0, REPLAY_S_MAX, "s"),
        replay_bytes=t.integer("replay_bytes", d.replay_bytes, 0, REPLAY_BYTES_MAX, "bytes"),
        max_subscriptions_per_peer=t.integer(
            "max_subscriptions_per_peer", d.max_subscriptions_per_peer, 1, SUBSCRIPTIONS_MAX),
        max_subscriptions=t.integer(
            "max_subscriptions", d.max_subscriptions, 1, SUBSCRIPTIONS_MAX),
        realtime_priority=t.integer("realtime_priority", d.realtime_priority, 0, 99),
    )


def _read_logging(ctx: _Ctx, data: Mapping[str, Any], base_dir: str | None) -> LoggingConfig:
    t = _Table(ctx, "logging", data, _LOGGING_KEYS)
    level = t.choice("level", "INFO", LOG_LEVELS, fold=True)
    file = t.string("file", None)
    if file == "":
        file = None
    return LoggingConfig(level=level, file=_relative_to(base_dir, file))


def _read_defaults(ctx: _Ctx, data: Mapping[str, Any]) -> tuple[Defaults, Inherited]:
    t = _Table(ctx, "defaults", data, _DEFAULTS_KEYS)
    base = Defaults()
    start = Inherited(
        rpi_ms=(base.rpi_ms, "defaults.rpi_ms"),
        ot_rpi_ms=(None, "defaults.ot_rpi_ms"),
        multiplier=(base.multiplier, "defaults.multiplier"),
        transport=(base.transport, "defaults.transport"),
    )
    inh = read_consumer_keys(t, start)
    udp_port = t.integer("udp_port", base.udp_port, 1, 65535)
    defaults = Defaults(
        rpi_ms=inh.rpi_ms[0],
        ot_rpi_ms=inh.ot_rpi_ms[0],
        multiplier=inh.multiplier[0],
        transport=inh.transport[0],  # type: ignore[arg-type]
        udp_port=udp_port,
        session=read_session(t, base.session),
    )
    return defaults, inh


def _read_tag(
    ctx: _Ctx, path: str, data: Mapping[str, Any], inherited: Inherited
) -> tuple[TagConfig | None, Inherited]:
    t = _Table(ctx, path, data, _TAG_KEYS)
    name = read_tag_name(t, "name")
    inh = read_consumer_keys(t, inherited)
    size = read_tag_size(t)
    alias = read_topic_segment(t, "alias", "alias")
    source_time = read_source_time(t)
    if name is None:
        return None, inh
    rpi = inh.rpi_ms[0]
    ot = inh.ot_rpi_ms[0] if inh.ot_rpi_ms[0] is not None else rpi
    return (
        TagConfig(
            name=name,
            rpi_ms=rpi,
            ot_rpi_ms=ot,
            multiplier=inh.multiplier[0],
            transport=inh.transport[0],  # type: ignore[arg-type]
            size=size,
            alias=alias,
            source_time=source_time,
        ),
        inh,
    )


def _read_hex(t: _Table, key: str) -> bytes | None:
    text = t.string(key, None)
    if text is None:
        return None
    try:
        return bytes.fromhex(str(text).replace(" ", ""))
    except ValueError:
        t.ctx.error(t.key(key), f"{key} = {text!r} is not hex bytes", _HEX_EXAMPLE)
        return None


def _read_layout(ctx: _Ctx, t: _Table, key: str = "layout") -> tuple[LayoutField, ...]:
    fields = t.raw(key)
    if fields is MISSING:
        return ()
    if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
        ctx.error(t.key(key), f"{key} must be an array of fields",
                  f'write {key} = [{{name = "speed", type = "INT"}}, ...] or one'
                  f" [[plc.assembly.{key}]] per field")
        return ()
    out: list[LayoutField] = []
    for k, entry in enumerate(fields):
        f = _Table(ctx, f"{t.key(key)}[{k}]", entry, _LAYOUT_KEYS)
        name = f.string("name", None, required=True)
        type_text = f.string("type", None, required=True)
        offset = f.integer("offset", None, 0, 504, "bytes")
        bit = f.integer("bit", None, 0, 7)
        if name is not None and type_text is not None:
            out.append(LayoutField(name, type_text, offset, bit))
    return tuple(out)


def _read_assembly(
    ctx: _Ctx, path: str, data: Mapping[str, Any], inherited: Inherited
) -> AssemblyConfig | None:
    """One ``[[plc.assembly]]``: each key by its own rules (its line in messages), then the
    whole through ``assembly_from_map``, the rules every assembly consumer meets."""
    before = len(ctx.issues)
    t = _Table(ctx, path, data, _ASSEMBLY_KEYS)
    name = read_topic_segment(t, "name", "assembly name", required=True)
    inh = read_consumer_keys(t, inherited)
    connection = t.choice("connection", None, _CONNECTIONS)
    if not t.has("connection"):
        ctx.error(t.key("connection"), "missing required key 'connection'",
                  f"add connection = one of {', '.join(repr(c) for c in _CONNECTIONS)}")
    points = {key: t.integer(key, None, 0, 0xFFFF) for key in ("input", "output", "config")}
    sizes = {key: t.integer(key, None, 0, 505, "bytes") for key in ("input_size", "output_size")}
    config_data, raw_path = _read_hex(t, "config_data"), _read_hex(t, "path")
    ot_run_idle, to_run_idle = t.boolean("ot_run_idle", True), t.boolean("to_run_idle", False)
    layout, output_layout = _read_layout(ctx, t), _read_layout(ctx, t, "output_layout")
    if not t.has("path"):
        for key in ("input", "output"):
            if not t.has(key):
                point = "T->O (input assembly)" if key == "input" else "O->T (output or heartbeat)"
                ctx.error(t.key(key), f"missing required key {key!r}",
                          f"add {key} = the {point} connection point (the device's EDS file"
                          " lists them, docs/assemblies.md), or give the whole path")
    if name is None or connection is None or len(ctx.issues) > before:
        return None
    rpi = inh.rpi_ms[0]
    try:  # what needs several keys at once: sizes against the type, the layout, the path
        out = AssemblyConfig(
            name=name, rpi_ms=rpi,
            ot_rpi_ms=inh.ot_rpi_ms[0] if inh.ot_rpi_ms[0] is not None else rpi,
            multiplier=inh.multiplier[0], layout=layout, output_layout=output_layout,
            spec=AssemblySpec(ConnectionKind(connection), config_data=config_data or b"",
                              raw_path=raw_path, ot_run_idle=ot_run_idle,
                              to_run_idle=to_run_idle, **points, **sizes),
        )
        assembly_from_map(out.name, out.assembly_map())
    except UsageError as exc:
        problem = str(exc)
        blamed = next((k for words, k in _ASSEMBLY_BLAME if words in problem and k in data),
                      None)
        ctx.error(t.key(blamed) if blamed is not None else path, problem,
                  "see docs/assemblies.md for the keys and the device's EDS file for the values")
        return None
    return out


def _read_plc(
    ctx: _Ctx, index: int, data: Mapping[str, Any], defaults: Defaults, inherited: Inherited
) -> PlcConfig | None:
    path = f"plc[{index}]"
    t = _Table(ctx, path, data, _PLC_KEYS)
    name = read_topic_segment(t, "name", "PLC name", required=True)
    address = read_ipv4(t, "address", what=PLC_ADDRESS, required=True)
    slot = t.integer("slot", 0, 0, 255)
    route = read_route(t)
    interface = t.string("interface", None)
    local_address = read_ipv4(t, "local_address", what="local interface")
    if t.has("interface") and t.has("local_address"):
        ctx.error(
            t.key("interface"),
            "interface and local_address are both set",
            "keep one: local_address picks the worker by address, interface by interface name",
        )
    udp_port = t.integer("udp_port", defaults.udp_port, 1, 65535)
    session = read_session(t, defaults.session)
    inh = read_consumer_keys(t, inherited)

    tags: list[TagConfig] = []
    seen: dict[str, str] = {}  # casefolded name -> key path; Logix names are case-insensitive
    topics: dict[str, str] = {}
    entries = t.array_of_tables("tag", "plc.tag")
    assembly_entries = t.array_of_tables("assembly", "plc.assembly")
    if not entries and not assembly_entries and "tag" not in data and "assembly" not in data \
            and not t.unknown:  # `tags = ...` was said already
        ctx.error(
            path, f"PLC {name or index!r} has no tags",
            "add at least one [[plc.tag]] with a name (or, for a generic adapter, one"
            " [[plc.assembly]])",
        )
    for j, entry in enumerate(entries):
        tpath = f"{path}.tag[{j}]"
        tag, tinh = _read_tag(ctx, tpath, entry, inh)
        if tag is None:
            continue
        folded = tag.name.casefold()
        if folded in seen:
            ctx.error(
                f"{tpath}.name",
                f"tag {tag.name!r} is listed twice for this PLC (first at {seen[folded]}; Logix "
                "tag names are case-insensitive)",
                "remove one entry; to publish the same tag under two names use one alias",
            )
            continue
        seen[folded] = tpath
        topic = tag.topic_name
        if topic.casefold() in topics:
            what = "alias" if tag.alias is not None else "name"
            ctx.error(
                f"{tpath}.{what}",
                f"topic name {topic!r} is already used by {topics[topic.casefold()]} on this PLC",
                "give one of them a different alias",
            )
            continue
        topics[topic.casefold()] = tpath
        if tag.transport == "multicast" and route:
            ctx.error(
                tinh.transport[1],
                f"tag {tag.name!r} uses multicast through a route",
                "multicast T->O has TTL 1 and never crosses a router (docs/configuration.md,"
                " transport): "
                'use transport = "unicast" for PLCs reached through a route',
            )
        tags.append(tag)
    assemblies: list[AssemblyConfig] = []
    for j, entry in enumerate(assembly_entries):
        apath = f"{path}.assembly[{j}]"
        assembly = _read_assembly(ctx, apath, entry, inh)
        if assembly is None:
            continue
        if assembly.name.casefold() in topics:
            ctx.error(
                f"{apath}.name",
                f"topic name {assembly.name!r} is already used by"
                f" {topics[assembly.name.casefold()]} on this PLC",
                "give the assembly another name",
            )
            continue
        topics[assembly.name.casefold()] = apath
        assemblies.append(assembly)
    if name is None or address is None:
        return None
    return PlcConfig(
        name=name,
        address=address,
        slot=slot,
        route=route,
        interface=interface,
        local_address=local_address,
        udp_port=udp_port,
        tags=tuple(tags),
        session=session,
        assemblies=tuple(assemblies),
        assembly_slot=slot if t.has("slot") else None,
    )


def _read_worker(ctx: _Ctx, data: Mapping[str, Any]) -> WorkerConfig:
    t = _Table(ctx, "worker", data, _WORKER_KEYS)
    d = WorkerConfig()
    return WorkerConfig(
        udp_port=t.integer("udp_port", d.udp_port, 1, 65535),
        stats_interval_s=t.number("stats_interval_s", d.stats_interval_s, 0.1, 3600.0, "s"),
        udp_rcvbuf=t.integer("udp_rcvbuf", d.udp_rcvbuf, 0, UDP_RCVBUF_MAX, "bytes"),
        tcp_port=t.integer("tcp_port", d.tcp_port, 0, 65535),
        realtime_priority=t.integer("realtime_priority", d.realtime_priority, 0, 99),
    )


def _read_supervisor(ctx: _Ctx, data: Mapping[str, Any]) -> RestartPolicy:
    t = _Table(ctx, "supervisor", data, _SUPERVISOR_KEYS)
    d = RestartPolicy()
    initial = t.number("backoff_initial_s", d.backoff_initial, 0.0, 3600.0, "s")
    cap = t.number("backoff_max_s", d.backoff_max, 0.0, 86400.0, "s")
    if cap < initial:
        ctx.error(
            t.key("backoff_max_s") if t.has("backoff_max_s") else t.key("backoff_initial_s"),
            f"backoff_max_s = {_fmt(cap)} is below backoff_initial_s = {_fmt(initial)}",
            "make backoff_max_s at least backoff_initial_s",
        )
        cap = initial
    return RestartPolicy(
        start_seconds=t.number("start_s", d.start_seconds, 0.0, 3600.0, "s"),
        backoff_initial=initial,
        backoff_factor=t.number("backoff_factor", d.backoff_factor, 1.0, 10.0),
        backoff_max=cap,
        jitter=t.number("jitter", d.jitter, 0.0, 1.0),
        max_quick_failures=t.integer("max_quick_failures", d.max_quick_failures, 1, 1000),
        stop_timeout=t.number("stop_timeout_s", d.stop_timeout, 0.0, 3600.0, "s", lo_open=True),
    )


# --------------------------------------------------------------------------------------------
# entry points


def _read_sinks(
    ctx: _Ctx,
    top: _Table,
    plcs: Mapping[str, PlcConfig],
    sink_kinds: Mapping[str, SinkSchema],
    base_dir: str | None,
) -> tuple[SinkConfig, ...]:
    sinks: list[SinkConfig] = []
    names: dict[str, str] = {}
    outputs = OutputCheck(sink_kinds)
    topic_names = {p.name: [tg.topic_name for tg in p.tags] + [a.name for a in p.assemblies]
                   for p in plcs.values()}
    for i, entry in enumerate(top.array_of_tables("sink", "sink")):
        path = f"sink[{i}]"
        sink = read_sink(
            ctx, path, entry, sink_kinds,
            default_name=f"{{kind}}-{i}", plcs=topic_names, base_dir=base_dir,
        )  # fmt: skip
        if sink is None:
            continue
        if sink.name in names:
            ctx.error(
                f"{path}.name" if "name" in entry else path,
                f"sink name {sink.name!r} is already used by {names[sink.name]}",
                "give every [[sink]] a unique name",
            )
            continue
        names[sink.name] = path
        outputs.add(ctx, path, entry, sink)
        sinks.append(sink)
    return tuple(sinks)


def _read_produce_entries(
    ctx: _Ctx, top: _Table
) -> tuple[tuple[ProduceSpec, ProducePlacement], ...]:
    out: list[tuple[ProduceSpec, ProducePlacement]] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(top.array_of_tables("produce", "produce")):
        got = read_produce(ctx, i, entry)
        if got is None:
            continue
        folded = got[0].name.casefold()
        if folded in seen:
            ctx.error(f"produce[{i}].name", f"tag {got[0].name!r} is produced twice (first at"
                      f" {seen[folded]})", "give every [[produce]] entry its own name")
            continue
        seen[folded] = f"produce[{i}]"
        out.append(got)
    return tuple(out)


def parse_config(
    text: str,
    filename: str = "<string>",
    *,
    sink_kinds: Mapping[str, SinkSchema],
    base_dir: str | None = None,
) -> Config:
    """Parse and validate TOML ``text``; raise ``ConfigError`` listing every problem.

    ``filename`` only labels error messages; ``sink_kinds`` maps each sink kind to the schema of
    its options (``sinks.registry.sink_schemas()``); relative sink/log paths are joined to
    ``base_dir`` when given (``pyconpro.config_file.load_config`` passes the file's directory).
    """
    raw = _parse_toml(text, filename)
    ctx = _Ctx(filename, text)
    top = _Table(ctx, "", raw, _TOP_KEYS)
    bus = _read_bus(ctx, top.table("bus"))
    logging_ = _read_logging(ctx, top.table("logging"), base_dir)
    defaults, inherited = _read_defaults(ctx, top.table("defaults"))

    plcs: dict[str, PlcConfig] = {}
    entries = top.array_of_tables("plc", "plc")
    produce = _read_produce_entries(ctx, top)
    if not entries and "plc" not in raw and not produce and "produce" not in raw:
        ctx.error(
            "plc",
            "no [[plc]] entries: there is nothing to consume",
            "add a [[plc]] section with name, address and at least one [[plc.tag]] or"
            " [[plc.assembly]] (or a [[produce]] entry)",
        )
    first_use: dict[str, str] = {}
    for i, entry in enumerate(entries):
        # Checked on the raw name so a duplicate is reported even when either entry has
        # other problems.
        raw_name = entry.get("name")
        duplicate = isinstance(raw_name, str) and raw_name in first_use
        if duplicate and isinstance(raw_name, str):
            ctx.error(
                f"plc[{i}].name",
                f"PLC name {raw_name!r} is already used by {first_use[raw_name]}",
                "give every [[plc]] a unique name (it is part of every topic)",
            )
        elif isinstance(raw_name, str):
            first_use[raw_name] = f"plc[{i}]"
        plc = _read_plc(ctx, i, entry, defaults, inherited)
        if plc is None or duplicate:
            continue
        plcs[plc.name] = plc

    sinks = _read_sinks(ctx, top, plcs, sink_kinds, base_dir)
    worker = _read_worker(ctx, top.table("worker"))
    supervisor = _read_supervisor(ctx, top.table("supervisor"))
    security = read_security(ctx, top.table("security"), base_dir)
    warnings = check_exposure(ctx, security, bus=bus.endpoint, control_base=bus.control_base)
    # Off unless the file has a [web] section (acquisition/web_config.py).
    web = read_web(ctx, top.table("web"), base_dir) if "web" in raw else None
    warnings += web_warnings(ctx, web)

    if ctx.issues:
        raise ConfigError(ctx.issues)
    return Config(
        source=filename,
        bus=bus,
        logging=logging_,
        defaults=defaults,
        plcs=tuple(plcs.values()),
        sinks=sinks,
        worker=worker,
        supervisor=supervisor,
        security=security,
        web=web,
        produce=produce,
        warnings=tuple(warnings),
        key_lines=MappingProxyType(dict(ctx.keylines.lines)),
    )


def consumer_specs(config: Config) -> dict[str, tuple[ConsumerSpec, ...]]:
    """The consumer definitions of every PLC, keyed by PLC name, in file order (its tags,
    then its assemblies)."""
    out: dict[str, tuple[ConsumerSpec, ...]] = {}
    for plc in config.plcs:
        entries: tuple[TagConfig | AssemblyConfig, ...] = (*plc.tags, *plc.assemblies)
        out[plc.name] = tuple(_consumer_spec(plc, entry) for entry in entries)
    return out


def _consumer_spec(plc: PlcConfig, entry: TagConfig | AssemblyConfig) -> ConsumerSpec:
    tag = entry if isinstance(entry, TagConfig) else None
    return ConsumerSpec(
        plc=plc.name,
        address=plc.address,
        slot=plc.slot if tag is not None else plc.assembly_slot,
        route=plc.route,
        tag=entry.name,
        # The Forward_Open carries RPIs as UDINT microseconds (protocol.md 5.2 / 7.5).
        rpi_us=round(entry.rpi_ms * 1000),
        ot_rpi_us=round(entry.ot_rpi_ms * 1000),
        multiplier=multiplier_code(entry.multiplier),
        multicast=tag is not None and tag.transport == "multicast",
        size=tag.size if tag is not None else None,
        alias=tag.alias if tag is not None else None,
        udp_port=plc.udp_port,
        session=plc.session,
        source_time=tag.source_time if tag is not None else None,
        assembly=entry if isinstance(entry, AssemblyConfig) else None,
    )


def group_by_local_address(
    config: Config,
    resolve: Callable[[str], str],
    interface_address: Callable[[str], str] | None = None,
) -> tuple[WorkerGroup, ...]:
    """Group PLCs into I/O workers by the local address that reaches each one.

    A PLC's ``local_address`` wins; else its ``interface`` is turned into an address by
    ``interface_address(name)``; else ``resolve(plc_address)`` says which local address routes to
    it (the supervisor passes a function that asks the OS). A ``[[produce]]`` entry is placed
    the same way (its ``consumer_address`` is the consuming PLC's address); a worker may serve
    produced tags only. Groups come sorted by address so that worker names are stable across
    runs. Failures of the callbacks become ``ConfigError`` naming the entry's key.
    """
    specs = consumer_specs(config)
    keylines = _KeyLines("")
    keylines.lines = dict(config.key_lines)
    groups: dict[str, tuple[list[str], list[ConsumerSpec], list[ProduceSpec]]] = {}
    for i, plc in enumerate(config.plcs):
        local = _local_address(config, keylines, f"plc[{i}]", f"PLC {plc.name!r}",
                               (plc.local_address, plc.interface, plc.address), resolve,
                               interface_address)
        names, consumers, _ = groups.setdefault(local, ([], [], []))
        names.append(plc.name)
        consumers.extend(specs[plc.name])
    for i, (spec, where) in enumerate(config.produce):
        local = _local_address(
            config, keylines, f"produce[{i}]", f"produced tag {spec.name!r}",
            (where.local_address, where.interface, where.consumer_address), resolve,
            interface_address)
        groups.setdefault(local, ([], [], []))[2].append(spec)
    return tuple(
        WorkerGroup(local_address=addr, plcs=tuple(names), consumers=tuple(consumers),
                    produce=tuple(produce))
        for addr, (names, consumers, produce) in sorted(
            groups.items(), key=lambda kv: ipaddress.IPv4Address(kv[0])
        )
    )


def _local_address(
    config: Config,
    keylines: _KeyLines,
    key: str,
    what: str,
    given: tuple[str | None, str | None, str | None],
    resolve: Callable[[str], str],
    interface_address: Callable[[str], str] | None,
) -> str:
    """The local address of one entry: ``given`` = (local_address, interface, the remote
    address to route to), the first that is set wins."""
    local_address, interface, remote = given
    try:
        if local_address is not None:
            local = local_address
        elif interface is not None:
            if interface_address is None:
                raise UsageError(
                    f"{key} names interface {interface!r} but no interface_address "
                    "callback was given to group_by_local_address"
                )
            key = f"{key}.interface"
            local = interface_address(interface)
        else:
            assert remote is not None
            key = f"{key}.{'address' if key.startswith('plc') else 'consumer_address'}"
            local = resolve(remote)
        return str(ipaddress.IPv4Address(local))
    except (OSError, ValueError, LookupError) as exc:
        if isinstance(exc, UsageError):
            raise
        target = f"interface {interface!r}" if key.endswith("interface") else remote
        raise ConfigError(
            [
                ConfigIssue(
                    config.source,
                    key,
                    keylines.find(key),
                    f"cannot find the local address for {what} ({target}): {exc}",
                    "check the interface is up and a route exists (`ip route get "
                    f"{remote}`), or set local_address for this"
                    f" {'PLC' if key.startswith('plc') else 'produced tag'}",
                )
            ]
        ) from exc
