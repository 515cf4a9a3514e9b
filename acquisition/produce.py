"""Producing tags that a Logix controller consumes: the I/O worker as a class-1 *target*, pure.

Owns, with no I/O and time passed in:

* ``ProduceSpec``: one ``[[produce]]`` entry (name, type or UDT layout, max consumers, the RPI
  range accepted), as the config, the worker's command line and its control socket carry it;
* ``ProducedTag`` / ``ProducedTags``: the tags a worker produces, with the latest value of each
  as its tag image (encoded by ``logix_codec``), and whether anybody feeds them. They satisfy
  both the producer target's ``TagSource`` and the simulated controller's ``TagDatabase``, so
  the two existing sans-IO roles serve them unchanged;
* ``ProducerEndpoint``: the encapsulation side of a target (protocol.md 2.4-2.7, 10.1):
  RegisterSession / UnRegisterSession, ListIdentity / ListServices / ListInterfaces, SendRRData
  and SendUnitData, over any number of TCP clients. Connection Manager requests go to the
  existing ``acquisition.target.ProducerTarget`` (Forward_Open, Forward_Close, heartbeats, the
  T->O production on absolute deadlines, watchdogs, max consumers: 0x01/0x031E); every other
  explicit request (Identity, the Symbol and Template objects a consumer may read before it
  opens, Unconnected_Send around a Forward_Open) to the existing
  ``acquisition.logix_controller.LogixController``. Nothing of the target role is written twice.

What a Logix consumer sends before its Forward_Open is not verified on hardware (protocol.md
10.7, marked ⚠️): the endpoint answers the discovery commands, RegisterSession, the Identity object
and the tag services, which covers what a scanner and pycomm3-style clients are known to ask.

The machine has the one shape of ARCHITECTURE.md: inputs are method calls taking ``now``
(``accepted``, ``receive``, ``closed``, ``on_datagram``, ``set_value``); outputs are drained with
``take_outputs()`` (``SendTcp``, ``CloseClient``, and the target's ``SendDatagram``,
``CloseSession``, ``TargetEvent``), in order; the timer is ``next_deadline()`` + ``on_timer``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from pyconpro.acquisition import cpf, encap, epath
from pyconpro.acquisition.encap import Command
from pyconpro.acquisition.encap_server import (
    Sessions,
    connection_manager_request,
    discovery_reply,
    embedded_cm_reply,
    reply,
)
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_codec import compile_decoder, compile_encoder
from pyconpro.acquisition.logix_controller import UNCONNECTED_REPLY_LIMIT, LogixController
from pyconpro.acquisition.logix_objects import ExternalAccess, SymbolInstance
from pyconpro.acquisition.logix_requests import Identity
from pyconpro.acquisition.logix_types import (
    PRODUCED_TAG_MAX_BYTES,
    LogixType,
    StructType,
    byte_size,
    parse_type,
)
from pyconpro.acquisition.status import EncapsulationStatus
from pyconpro.acquisition.target import (
    CloseSession,
    ProducerTarget,
    SendDatagram,
    TargetConnection,
    TargetEvent,
)
from pyconpro.acquisition.target_options import TargetOptions
from pyconpro.acquisition.wire import escape_name, unescape_name

__all__ = [
    "MAX_CONSUMERS_DEFAULT",
    "RPI_MAX_US_DEFAULT",
    "RPI_MIN_US_DEFAULT",
    "CloseClient",
    "ProduceOutput",
    "ProduceSpec",
    "ProducedTag",
    "ProducedTags",
    "ProducerEndpoint",
    "SendTcp",
    "decode_feed",
    "produce_topic",
]

#: Studio 5000's default "Max Consumers" of a produced tag.
MAX_CONSUMERS_DEFAULT = 2
#: The T->O RPI range a produced tag accepts unless its entry says otherwise (microseconds).
RPI_MIN_US_DEFAULT = 1_000
RPI_MAX_US_DEFAULT = 750_000_000
#: The first instance id of the Symbol objects the produced tags are listed as.
_FIRST_INSTANCE = 0x100


def produce_topic(name: str) -> bytes:
    """The bus topic a user process publishes a produced tag's values on (wire-format.md
    "Feeding a produced tag"): ``produce/<name>/``, the name escaped like every topic."""
    return f"produce/{escape_name(name)}/".encode()


# --------------------------------------------------------------------------- the definition


@dataclass(frozen=True, slots=True)
class ProduceSpec:
    """One produced tag. ``type`` is a type text (``DINT``, ``REAL[4]``, ``STRING``); with
    ``members`` (``(name, type text)`` pairs, in declaration order) it is the name of the UDT
    they lay out, with Logix's rules (the consumer's UDT must be the same, member for member).
    ``local_address``: the worker (interface) that serves it; None = the config's only one."""

    name: str
    type: str
    members: tuple[tuple[str, str], ...] = ()
    max_consumers: int = MAX_CONSUMERS_DEFAULT
    rpi_min_us: int = RPI_MIN_US_DEFAULT
    rpi_max_us: int = RPI_MAX_US_DEFAULT
    local_address: str | None = None

    def __post_init__(self) -> None:
        epath.produced_tag_connection_path(self.name, None)  # a controller-scoped tag name
        if not 1 <= self.max_consumers <= 250:
            raise UsageError(f"produced tag {self.name}: max_consumers must be 1..250")
        if not 0 < self.rpi_min_us <= self.rpi_max_us:
            raise UsageError(
                f"produced tag {self.name}: the RPI range {self.rpi_min_us}..{self.rpi_max_us}"
                " us is empty; make rpi_min at most rpi_max"
            )
        size = byte_size(self.logix_type())
        if size > PRODUCED_TAG_MAX_BYTES:
            raise UsageError(
                f"produced tag {self.name}: {size} bytes; a standard produced tag holds at most"
                f" {PRODUCED_TAG_MAX_BYTES} (protocol.md 7.3): split it into several tags"
            )

    def logix_type(self) -> LogixType:
        """The type; raises UsageError naming the tag when the text or a member is wrong."""
        try:
            if self.members:
                return StructType.build(self.type, [(m, parse_type(t, {})) for m, t in
                                                    self.members])
            return parse_type(self.type, {})
        except UsageError as exc:
            raise UsageError(f"produced tag {self.name}: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        """The JSON / msgpack form (the worker's ``--produce`` and its control socket)."""
        return {
            "name": self.name,
            "type": self.type,
            "members": [list(m) for m in self.members],
            "max_consumers": self.max_consumers,
            "rpi_min_us": self.rpi_min_us,
            "rpi_max_us": self.rpi_max_us,
            "local_address": self.local_address,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProduceSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(f"produce definition: unknown keys {sorted(unknown)}")
        try:
            members = tuple((str(m), str(t)) for m, t in d.get("members") or ())
            return cls(
                name=str(d["name"]),
                type=str(d["type"]),
                members=members,
                max_consumers=int(d.get("max_consumers", MAX_CONSUMERS_DEFAULT)),
                rpi_min_us=int(d.get("rpi_min_us", RPI_MIN_US_DEFAULT)),
                rpi_max_us=int(d.get("rpi_max_us", RPI_MAX_US_DEFAULT)),
                local_address=d.get("local_address"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"produce definition {dict(d)!r}: {exc}; give at least name and type"
            ) from None


# --------------------------------------------------------------------------- the tags


@dataclass(slots=True, eq=False)
class ProducedTag:
    """A produced tag and its latest value. Until somebody feeds it, the image is all zeros
    (what is sent meanwhile); ``updates`` / ``last_update`` / ``source`` say who fed it."""

    spec: ProduceSpec
    instance_id: int
    # ProducibleTag (acquisition.target_options) and TagLike (acquisition.logix_controller):
    # copied from the spec so both protocols see plain attributes.
    name: str = field(init=False)
    max_consumers: int = field(init=False)
    rpi_min_us: int = field(init=False)
    rpi_max_us: int = field(init=False)
    type: LogixType = field(init=False)
    produced: bool = True
    default_rpi_us: int | None = None
    unicast_allowed: bool = True
    external_access: int = ExternalAccess.READ_ONLY
    updates: int = 0
    rejected: int = 0
    last_update: float | None = None
    source: str | None = None
    last_error: str | None = None
    _image: bytes = b""
    _encode: Callable[[Any], bytes] = field(init=False, repr=False)
    _decode: Callable[[bytes], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = self.spec.name
        self.max_consumers = self.spec.max_consumers
        self.rpi_min_us, self.rpi_max_us = self.spec.rpi_min_us, self.spec.rpi_max_us
        self.type = self.spec.logix_type()
        self._image = bytes(byte_size(self.type))
        self._encode = compile_encoder(self.type)
        self._decode = compile_decoder(self.type)

    @property
    def program(self) -> str | None:
        return None

    def size(self) -> int:
        return len(self._image)

    def image(self) -> bytes:
        return self._image

    def write(self, data: bytes, offset: int = 0) -> None:
        raise UsageError(f"produced tag {self.name} is read only over explicit messaging")

    def value(self) -> Any:
        """The value being sent, decoded (status)."""
        return self._decode(self._image)

    def set(self, value: Any, now: float, source: str) -> None:
        """Encode ``value`` as the new image; UsageError (counted) when it does not fit."""
        try:
            image = self._encode(value)
        except UsageError as exc:
            self.rejected += 1
            self.last_error = f"{source}: {exc}"
            raise UsageError(f"produced tag {self.name}: {exc}") from None
        self._image = image
        self.updates += 1
        self.last_update = now
        self.source = source

    def set_image(self, image: bytes, now: float, source: str) -> None:
        """Take a raw tag image of exactly the tag's size."""
        if len(image) != len(self._image):
            self.rejected += 1
            self.last_error = f"{source}: {len(image)} bytes, the tag has {len(self._image)}"
            raise UsageError(
                f"produced tag {self.name}: raw image of {len(image)} bytes; the tag has"
                f" {len(self._image)}"
            )
        self._image = bytes(image)
        self.updates += 1
        self.last_update = now
        self.source = source

    def status(self, now: float) -> dict[str, Any]:
        fed = self.last_update is not None
        return {
            "name": self.name,
            "type": self.spec.type,
            "size": self.size(),
            "max_consumers": self.max_consumers,
            "fed": fed,
            "updates": self.updates,
            "rejected": self.rejected,
            "source": self.source,
            "age_s": None if self.last_update is None else round(now - self.last_update, 3),
            "last_error": self.last_error,
            # What goes out while nobody feeds it: the zero image (every member 0 / false / "").
            "sending": "latest value" if fed else "zeros (nobody has fed it yet)",
        }


class ProducedTags:
    """The produced tags of one worker: the target's ``TagSource`` and the controller's
    ``TagDatabase`` (both read only here; values come through ``ProducedTag.set``)."""

    program_name = ""

    def __init__(self, specs: Sequence[ProduceSpec] = (), *, identity: Identity | None = None,
                 incarnation: int = 1) -> None:
        self.identity = identity or Identity(product_name="pyconpro")
        self.incarnation = incarnation
        self._tags: dict[str, ProducedTag] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ProduceSpec) -> ProducedTag:
        key = spec.name.casefold()
        if key in self._tags:
            raise UsageError(f"produced tag {spec.name!r} exists already")
        used = {t.instance_id for t in self._tags.values()}
        instance = next(i for i in range(_FIRST_INSTANCE, _FIRST_INSTANCE + 0x10000)
                        if i not in used)
        tag = self._tags[key] = ProducedTag(spec, instance)
        return tag

    def tags(self) -> list[ProducedTag]:
        return list(self._tags.values())

    def find(self, name: str) -> ProducedTag | None:
        return self._tags.get(name.casefold())

    def by_instance(self, instance_id: int) -> ProducedTag | None:
        return next((t for t in self._tags.values() if t.instance_id == instance_id), None)

    def tick(self, now: float) -> None:
        """Values change only when fed: nothing moves with time."""

    def restart(self, now: float) -> None:
        self.incarnation = (self.incarnation % 0xFFFF) + 1

    def listing(self, program: str | None) -> list[SymbolInstance] | None:
        if program is not None:
            return None
        return [
            SymbolInstance.for_tag(t.instance_id, t.name, t.type,
                                   external_access=ExternalAccess.READ_ONLY)
            for t in self._tags.values()
        ]

    def templates(self) -> dict[int, StructType]:
        return {t.type.instance_id: t.type for t in self._tags.values()
                if isinstance(t.type, StructType)}


# --------------------------------------------------------------------------- the endpoint


@dataclass(frozen=True, slots=True)
class SendTcp:
    """Write ``data`` to TCP client ``client``."""

    client: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close TCP client ``client`` once what was written to it is sent."""

    client: int


ProduceOutput = SendTcp | CloseClient | SendDatagram | CloseSession | TargetEvent
"""What ``ProducerEndpoint.take_outputs()`` returns."""


@dataclass(slots=True, eq=False)
class _Client:
    peer_ip: str
    frames: encap.FrameBuffer = field(default_factory=encap.FrameBuffer)
    session: int = 0


class ProducerEndpoint:
    """The encapsulation server of a producing worker, over the existing target role and
    controller model (module docstring). ``tcp_port`` is announced in ListIdentity."""

    def __init__(
        self,
        tags: ProducedTags,
        options: TargetOptions,
        *,
        tcp_port: int = 44818,
        max_sessions: int = 64,
        first_session: int = 1,
    ) -> None:
        self.tags = tags
        self.options = options
        self.tcp_port = tcp_port
        self.target = ProducerTarget(tags, options)
        self.controller = LogixController(tags, options.slot, cm_handler=self._cm_embedded)
        self._clients: dict[int, _Client] = {}
        self._sessions: Sessions[int] = Sessions(max_sessions, max(first_session, 1) - 1)
        self._outputs: list[ProduceOutput] = []
        self._embedded: tuple[str, int, float] = ("0.0.0.0", 0, 0.0)
        self.counters: dict[str, int] = {
            "tcp_clients": 0, "sessions": 0, "encap_errors": 0, "explicit_requests": 0,
        }

    # ------------------------------------------------------------------ views

    def take_outputs(self) -> list[ProduceOutput]:
        self._outputs.extend(self.target.take_outputs())
        out, self._outputs = self._outputs, []
        return out

    def next_deadline(self) -> float | None:
        return self.target.next_deadline()

    def on_timer(self, now: float) -> None:
        self.target.on_timer(now)

    def on_datagram(self, data: bytes, src_ip: str, now: float) -> None:
        """An O->T datagram (a consumer's heartbeat) for one of our connections."""
        self.target.on_datagram(data, src_ip, now)

    def owns_ot_id(self, connection_id: int) -> bool:
        return any(c.ot_id == connection_id for c in self.target.connections())

    def connections(self) -> list[TargetConnection]:
        return self.target.connections()

    def identity_item(self, address: str) -> cpf.IdentityItem:
        return self.tags.identity.item(cpf.Sockaddr(address, self.tcp_port))

    # ------------------------------------------------------------------ TCP clients

    def accepted(self, client: int, peer_ip: str, now: float) -> None:
        self._clients[client] = _Client(peer_ip)
        self.counters["tcp_clients"] += 1

    def closed(self, client: int, now: float) -> None:
        """The client's socket closed: its session and its class-3 connections end
        (class-1 ones stay until Forward_Close or their watchdog, protocol.md 2.4)."""
        c = self._clients.pop(client, None)
        if c is not None and c.session:
            self._sessions.drop(c.session)
            self.target.session_closed(c.session, now)

    def receive(self, client: int, data: bytes, now: float) -> None:
        c = self._clients.get(client)
        if c is None:
            return
        try:
            packets = c.frames.feed(data)
        except MalformedPacket:
            self._outputs.append(CloseClient(client))
            return
        for pkt in packets:
            reply = self._packet(client, c, pkt, now)
            if reply is not None:
                self._outputs.append(SendTcp(client, reply))

    def udp_request(self, data: bytes, address: str) -> bytes | None:
        """A ListIdentity / ListServices / ListInterfaces on UDP 44818: the reply, or None."""
        try:
            pkt = encap.EncapsulationPacket.decode(data)
        except MalformedPacket:
            return None
        return self._discovery(pkt, address)

    # ------------------------------------------------------------------ encapsulation

    def _packet(self, client: int, c: _Client, pkt: encap.EncapsulationPacket,
                now: float) -> bytes | None:
        cmd = pkt.command
        if cmd == Command.NOP:
            return None
        found = self._discovery(pkt, self.options.address)
        if found is not None:
            return found
        if cmd == Command.REGISTER_SESSION:
            got = self._sessions.register(pkt, c.session, client)
            if got.error:
                self.counters["encap_errors"] += 1
            if got.session:
                c.session = got.session
                self.counters["sessions"] += 1
            return got.answer
        if cmd == Command.UNREGISTER_SESSION:
            if c.session and pkt.session == c.session:
                self._outputs.append(CloseClient(client))
                return None
            return self._error(pkt, EncapsulationStatus.INVALID_SESSION_HANDLE)
        if cmd not in (Command.SEND_RR_DATA, Command.SEND_UNIT_DATA):
            return self._error(pkt, EncapsulationStatus.INVALID_COMMAND)
        if not c.session or pkt.session != c.session:
            return self._error(pkt, EncapsulationStatus.INVALID_SESSION_HANDLE)
        try:
            send = encap.SendData.decode(pkt.data)
            if cmd == Command.SEND_RR_DATA:
                return reply(pkt, self._unconnected(c, send, now))
            conn_id, seq, message = send.connected()
        except MalformedPacket:
            return self._error(pkt, EncapsulationStatus.INCORRECT_DATA)
        result = self.target.connected_request(conn_id, c.session, seq, message, now,
                                               self._explicit_connected)
        if result is None:
            return self._error(pkt, EncapsulationStatus.INCORRECT_DATA)
        return reply(pkt, encap.send_unit_data(result[0], seq, result[1]))

    def _discovery(self, pkt: encap.EncapsulationPacket, address: str) -> bytes | None:
        return discovery_reply(pkt, self.identity_item(address))

    def _error(self, pkt: encap.EncapsulationPacket, status: int) -> bytes:
        self.counters["encap_errors"] += 1
        return reply(pkt, status=status)

    # ------------------------------------------------------------------ CIP

    def _unconnected(self, c: _Client, send: encap.SendData, now: float) -> bytes:
        """SendRRData: a Connection Manager request to the target (with the CPF items after
        the unconnected data item), anything else to the controller model."""
        message = send.unconnected()
        request = connection_manager_request(message)
        if request is not None:
            cm_reply, items = self.target.handle_cm(request, c.peer_ip, c.session, now,
                                                    send.items[2:])
            return encap.send_rr_data(cm_reply.encode(), items)
        self.counters["explicit_requests"] += 1
        self._embedded = (c.peer_ip, c.session, now)
        answer = self.controller.handle(message, now, reply_limit=UNCONNECTED_REPLY_LIMIT)
        return encap.send_rr_data(answer)

    def _explicit_connected(self, message: bytes, now: float, conn: TargetConnection) -> bytes:
        self.counters["explicit_requests"] += 1
        return self.controller.handle(
            message, now, reply_limit=(conn.to_size - 2) if conn.to_size > 2 else None)

    def _cm_embedded(self, message: bytes) -> bytes:
        """A Connection Manager request that arrived inside Unconnected_Send."""
        peer, session, now = self._embedded
        return embedded_cm_reply(self.target, message, peer, session, now)

    # ------------------------------------------------------------------ values

    def set_value(self, name: str, value: Any, now: float, source: str) -> ProducedTag:
        """Feed produced tag ``name``; UsageError for an unknown tag or a value that does
        not fit its type (the image keeps the previous value)."""
        tag = self.tags.find(name)
        if tag is None:
            known = ", ".join(t.name for t in self.tags.tags()) or "none"
            raise UsageError(f"no produced tag {name!r} (produced here: {known})")
        if isinstance(value, (bytes, bytearray)):
            tag.set_image(bytes(value), now, source)
        else:
            tag.set(value, now, source)
        return tag

    def status(self, now: float) -> dict[str, Any]:
        conns = self.target.connections()
        out = []
        for tag in self.tags.tags():
            mine = [c for c in conns if c.tag is not None and c.tag.casefold() ==
                    tag.name.casefold()]
            out.append({
                **tag.status(now),
                "consumers": [
                    {"peer": c.peer_ip, "rpi_us": c.to_api_us, "ot_rpi_us": c.ot_api_us,
                     "multiplier": c.multiplier, "multicast": c.multicast,
                     "dest": list(c.dest) if c.dest else None, "heartbeats": c.heartbeats,
                     "open_s": round(now - c.opened_at, 3)}
                    for c in mine
                ],
            })
        return {
            "tcp_port": self.tcp_port,
            "tags": out,
            "target": self.target.counters.as_dict(),
            "endpoint": dict(self.counters, sessions_open=len(self._sessions)),
        }


def decode_feed(frames: Sequence[bytes]) -> tuple[str, Any]:
    """A value published for a produced tag (wire-format.md "Feeding a produced tag"):
    ``[b"produce/<name>/", msgpack {"value": v}]`` (or ``{"raw": <bytes>}``, the tag image) ->
    (name, value or bytes). UsageError names what is wrong."""
    if len(frames) != 2:
        raise UsageError(f"{len(frames)} frames; a produce message is [topic, body]")
    topic, body = frames
    parts = topic.decode("utf-8", "replace").split("/")
    if len(parts) != 3 or parts[0] != "produce" or not parts[1] or parts[2]:
        raise UsageError(f"topic {topic!r} is not produce/<name>/")
    try:
        msg = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise UsageError("the body is not MessagePack") from None
    if not isinstance(msg, dict) or ("value" not in msg and "raw" not in msg):
        raise UsageError("the body must be a map with 'value' (or 'raw' bytes)")
    if "raw" in msg:
        if not isinstance(msg["raw"], bytes):
            raise UsageError("'raw' must be bytes (the tag image)")
        return unescape_name(parts[1]), msg["raw"]
    return unescape_name(parts[1]), msg["value"]
