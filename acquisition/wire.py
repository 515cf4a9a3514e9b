"""The bus contract: topics and MessagePack bodies of everything published on the ZeroMQ bus.

This module owns the schema that ARCHITECTURE.md "The wire contract on the bus" describes and
that ``docs/wire-format.md`` documents for subscribers in any language. It is the only place
that knows the map keys, the topic layout and the validation rules; workers build ``Sample`` /
``Event`` / ``Stats`` values and call ``encode()``, sinks call ``decode(topic, body)``.
It implements no protocol.md section (the bus is ours, not CIP's); the values it carries come
from protocol.md 6.4 (CIP sequence count) and 8 (status codes and their text).

Sans-IO like the rest of ``acquisition``: no sockets, no zmq, no clock reads. Timestamps are
fields the caller fills in.

Framing (one framing on the bus, STYLE.md #10): every message is a two-frame ZeroMQ multipart
``[topic, body]``.

Topics are UTF-8, ``/``-separated, with a trailing ``/`` so that a prefix subscription never
matches a longer name by accident (``sample/plc1/`` does not match ``sample/plc10/...``)::

    sample/<plc>/<tag>/     one decoded produced-tag value
    event/<plc>/<tag>/      connection state change, reject, gap, timeout, outage, error
                            (<tag> may be empty for PLC-wide events: ``event/<plc>//``)
    stats/<worker>/         periodic counters of one worker

Names are *escaped* inside topics, never rejected: ``%``, ``/``, whitespace and every
non-printable character become ``%XX`` per UTF-8 byte (upper-case hex), so any name a PLC or a
config file can produce has exactly one topic and prefix filters stay exact. Bodies carry the
names unescaped, so a subscriber never needs to unescape. Empty PLC, tag (for samples), worker
and publisher names are rejected.

Bodies are one MessagePack map with short string keys. Each message kind declares its keys
once, as a table of ``WireKey`` rows (``SAMPLE_KEYS``, ``EVENT_KEYS``, ``STATS_KEYS``: key,
dataclass field, MessagePack type, check, presence, meaning); encoding, decoding and the tables
in docs/wire-format.md (``schema_markdown``, checked by a test) all derive from them.
The schema evolves only by adding keys: decoders ignore keys they do not know and accept any
``v >= 1``; a key's meaning never changes. Every body carries ``sq``, a sequence number that
the publisher counts per topic from 0 (``SeqCounter``), so any subscriber, whatever prefixes it
filters on, can detect lost messages; a sequence that goes backwards means the publisher
restarted.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self, TypeAlias

import msgpack
from pyconpro.acquisition.errors import MalformedPacket, UsageError

SCHEMA_VERSION = 1

U16_MAX = 0xFFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
# Deepest nesting of lists/maps accepted in a value. Logix UDTs nest a few levels; the limit
# keeps validation iterative-safe and a hostile body from exhausting the stack.
MAX_VALUE_DEPTH = 32

Value: TypeAlias = None | bool | int | float | str | list[Any] | dict[str, Any]


class TopicKind(enum.StrEnum):
    """First topic segment: which kind of message follows."""

    SAMPLE = "sample"
    EVENT = "event"
    STATS = "stats"


class EventKind(enum.StrEnum):
    """Known values of ``Event.kind``. Decoders keep unknown kinds as plain strings."""

    STATE = "state"  # connection state machine transition (state_from -> state_to)
    REJECT = "reject"  # Forward_Open refused: CIP general/extended status and text
    GAP = "gap"  # CIP sequence count jumped: datagrams the PLC sent that we missed
    TIMEOUT = "timeout"  # T->O watchdog expired
    ERROR = "error"  # anything else worth a line in a log (session lost, bad datagram)
    OUTAGE = "outage"  # the tag's data was interrupted and is back (or the consumer stopped)


class OutageCause(enum.StrEnum):
    """Known values of an outage event's ``cause``: what interrupted the tag's data."""

    TIMEOUT = "timeout"  # T->O watchdog expired while the PLC's session was up
    SESSION = "session"  # T->O watchdog expired while the PLC's session was down
    RESTART = "restart"  # the worker that received the tag died or was restarted


class _Invalid(Exception):
    """A field breaks the schema; becomes UsageError on encode, MalformedPacket on decode."""


# --------------------------------------------------------------------------- topics


def escape_name(name: str) -> str:
    """Escape a PLC/tag/worker name for use as one topic segment (see module docstring)."""
    if not isinstance(name, str):
        raise UsageError(f"topic names are str, got {type(name).__name__}: pass the name as text")
    out: list[str] = []
    for ch in name:
        if ch == "%" or ch == "/" or ch.isspace() or not ch.isprintable():
            try:
                encoded = ch.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(
                    f"name {name!r} is not valid Unicode text (lone surrogate); fix the name"
                ) from None
            out.extend(f"%{b:02X}" for b in encoded)
        else:
            out.append(ch)
    return "".join(out)


_HEX = "0123456789ABCDEF"


def unescape_name(segment: str) -> str:
    """Inverse of ``escape_name``; raises MalformedPacket on a non-canonical escape."""
    raw = bytearray()
    i = 0
    n = len(segment)
    while i < n:
        ch = segment[i]
        if ch == "%":
            hx = segment[i + 1 : i + 3]
            if len(hx) != 2 or hx[0] not in _HEX or hx[1] not in _HEX:
                raise MalformedPacket("%XX escape with two upper-case hex digits", i, "topic")
            raw.append(int(hx, 16))
            i += 3
        else:
            raw += ch.encode("utf-8", "surrogatepass")
            i += 1
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("UTF-8 after unescaping", exc.start, "topic") from None
    if escape_name(name) != segment:
        raise MalformedPacket(f"canonical escaping {escape_name(name)!r}", 0, "topic")
    return name


def _check_name(what: str, name: object, *, allow_empty: bool = False) -> str:
    if not isinstance(name, str):
        raise _Invalid(f"{what} must be a string, got {type(name).__name__}")
    if not name and not allow_empty:
        raise _Invalid(f"{what} must not be empty")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(f"{what} {name!r} is not valid UTF-8 text") from None
    return name


def _topic(*segments: str) -> bytes:
    return ("".join(s + "/" for s in segments)).encode("utf-8")


def topic_for_sample(plc: str, tag: str) -> bytes:
    """``sample/<plc>/<tag>/`` with both names escaped."""
    return _topic(TopicKind.SAMPLE.value, escape_name(plc), escape_name(tag))


def topic_for_event(plc: str, tag: str = "") -> bytes:
    """``event/<plc>/<tag>/``; an empty tag means the event concerns the whole PLC."""
    return _topic(TopicKind.EVENT.value, escape_name(plc), escape_name(tag))


def topic_for_stats(worker: str) -> bytes:
    """``stats/<worker>/``."""
    return _topic(TopicKind.STATS.value, escape_name(worker))


# Output images of exclusive-owner assembly consumers go the other way: a user process
# publishes them into the bus (wire-format.md "Output images"); not a TopicKind, because no
# worker publishes them and sinks do not store them.
OUTPUT_PREFIX = b"output/"


def topic_for_output(plc: str, name: str) -> bytes:
    """``output/<plc>/<name>/``: where the output image of consumer ``<plc>/<name>`` is read."""
    return b"output/" + _topic(escape_name(plc), escape_name(name))


def encode_output(image: bytes | Mapping[str, Any]) -> bytes:
    """An output image body: ``{"v": 1, "data": <bin>}``, or ``{"v": 1, "data": {field:
    value, ...}}`` for an assembly with a declared output layout."""
    data = dict(image) if isinstance(image, Mapping) else bytes(image)
    return _pack({"v": SCHEMA_VERSION, "data": data}, "output image")


def decode_output(body: bytes) -> bytes | dict[str, Any]:
    """The image (bytes) or the output fields (a map) of an output body; ``UsageError`` when
    it is not one."""
    try:
        m = _unpack(body, "output image")
    except MalformedPacket as exc:
        raise UsageError(f"output image: {exc}") from None
    data = m.get("data")
    if m.get("v") != SCHEMA_VERSION or not isinstance(data, (bytes, dict)):
        raise UsageError('output image: want a map {"v": 1, "data": <bytes>} or, with an'
                         ' output_layout, {"v": 1, "data": {"speed": 1200, ...}}')
    return data


def topic_prefix(kind: TopicKind | str | None = None, *names: str) -> bytes:
    """A subscription filter: ``b""`` (everything), ``b"sample/"``, ``b"sample/plc1/"``,
    ``b"sample/plc1/Tag/"`` ... Each name given is escaped and closed with ``/`` so the
    prefix matches exactly that name, never a longer one."""
    if kind is None:
        if names:
            raise UsageError("topic_prefix: give the kind before any name")
        return b""
    kind = TopicKind(kind)
    limit = 1 if kind is TopicKind.STATS else 2
    if len(names) > limit:
        raise UsageError(f"topic_prefix: {kind.value} topics have at most {limit} names")
    return _topic(kind.value, *(escape_name(n) for n in names))


def parse_topic(topic: bytes) -> tuple[TopicKind, tuple[str, ...]]:
    """Split a topic into its kind and unescaped names; MalformedPacket on anything else."""
    if not isinstance(topic, (bytes, bytearray, memoryview)):
        raise MalformedPacket("topic frame as bytes", 0, "topic")
    try:
        text = bytes(topic).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("UTF-8 topic", exc.start, "topic") from None
    if not text.endswith("/"):
        raise MalformedPacket("topic ending with '/'", len(topic), "topic")
    parts = text[:-1].split("/")
    try:
        kind = TopicKind(parts[0])
    except ValueError:
        raise MalformedPacket("topic kind sample/, event/ or stats/", 0, "topic") from None
    want = 2 if kind is TopicKind.STATS else 3
    if len(parts) != want:
        raise MalformedPacket(f"{want - 1} name(s) after {kind.value}/", len(parts[0]), "topic")
    return kind, tuple(unescape_name(p) for p in parts[1:])


# --------------------------------------------------------------------------- sequence


class SeqCounter:
    """Per-topic sequence numbers for one publisher instance (the ``sq`` key).

    Counting per topic rather than per socket is what lets a subscriber that filters on
    ``sample/plc1/`` still see consecutive numbers and detect loss. A new instance (a restarted
    publisher) starts every topic again at 0, which subscribers read as a restart, not a gap.
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[bytes, int] = {}

    def next(self, topic: bytes) -> int:
        n = self._next.get(topic, 0)
        self._next[topic] = (n + 1) & U64_MAX
        return n

    @property
    def table(self) -> dict[bytes, int]:
        """The live table topic -> next ``sq``: a compiled encoder that publishes on the same
        topics numbers its messages in it, so both stay one sequence per topic."""
        return self._next


# --------------------------------------------------------------------------- field checks


def _check_uint(what: str, x: object, maximum: int) -> int:
    if type(x) is not int or not 0 <= x <= maximum:
        raise _Invalid(f"{what} must be an integer in 0..{maximum}, got {x!r}")
    return x


def _check_int64(what: str, x: object) -> int:
    if type(x) is not int or not I64_MIN <= x <= I64_MAX:
        raise _Invalid(f"{what} must be a 64-bit signed integer, got {x!r}")
    return x


def _check_version(x: object) -> int:
    # Any version >= 1 is accepted: versions only add keys, which decoders ignore.
    if type(x) is not int or not 1 <= x <= U64_MAX:
        raise _Invalid(f"schema version 'v' must be an integer >= 1, got {x!r}")
    return x


_PLAIN = (float, bool)  # value types valid whatever they hold


def _check_value(x: object) -> Value:
    """msgpack-native, JSON-shaped values only: nil, bool, int, float, str, list, str-keyed map."""
    # A scalar, the common case, without the walk.
    if x is None or type(x) is float or type(x) is bool:
        return x
    if type(x) is int and I64_MIN <= x <= U64_MAX:
        return x
    stack: list[tuple[object, int]] = [(x, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or type(item) in (bool, float, str):
            if type(item) is str:
                _check_name("a string inside value", item, allow_empty=True)
            continue
        if type(item) is int:
            if not I64_MIN <= item <= U64_MAX:
                raise _Invalid(f"integer {item} inside value does not fit MessagePack")
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise _Invalid(f"value nests deeper than {MAX_VALUE_DEPTH} lists/maps")
        if type(item) is list:
            # Floats and bools (a REAL array) need no more than their type: not pushed.
            stack.extend((e, depth + 1) for e in item if type(e) not in _PLAIN)
        elif type(item) is dict:
            for k, e in item.items():
                if type(k) is not str:
                    raise _Invalid(f"map keys inside value must be strings, got {k!r}")
                _check_name("a map key inside value", k, allow_empty=True)
                stack.append((e, depth + 1))
        else:
            raise _Invalid(
                f"value may hold only nil/bool/int/float/str/list/map, got {type(item).__name__}"
                " (convert it, e.g. tuples to lists, bytes to 'raw')"
            )
    return x  # type: ignore[return-value]


def _check_counters(x: object) -> dict[str, int | float]:
    if type(x) is not dict:
        raise _Invalid(f"counters must be a map, got {type(x).__name__}")
    for k, n in x.items():
        if type(k) is not str:
            raise _Invalid(f"counter names must be strings, got {k!r}")
        if type(n) is int:
            if not I64_MIN <= n <= U64_MAX:
                raise _Invalid(f"counter {k!r}={n} does not fit MessagePack")
        elif type(n) is not float:
            raise _Invalid(f"counter {k!r} must be a number, got {type(n).__name__}")
    return x


# --------------------------------------------------------------------------- packing


def _pack(body: dict[str, object], what: str) -> bytes:
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"{what}: cannot encode as MessagePack: {exc}") from None


def _encode_checked(checked_body: Callable[[], dict[str, object]], what: str) -> bytes:
    """Validate (``checked_body`` raises _Invalid) and pack one message body."""
    try:
        body = checked_body()
    except _Invalid as exc:
        raise UsageError(f"cannot encode {what}: {exc}") from None
    return _pack(body, what)


def _unpack(body: bytes, what: str) -> dict[str, Any]:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise MalformedPacket("body frame as bytes", 0, what)
    try:
        # raw=False: str stays str (invalid UTF-8 is an error), bin stays bytes.
        # strict_map_key keeps hostile keys (lists, maps) out; ext types come back as
        # ExtType/Timestamp and are rejected by the field checks.
        m = msgpack.unpackb(bytes(body), raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedPacket(f"one complete MessagePack map ({exc})", 0, what) from None
    if type(m) is not dict:
        raise MalformedPacket(f"a MessagePack map, got {type(m).__name__}", 0, what)
    return m


def _get(m: dict[str, Any], key: str, what: str) -> Any:
    try:
        return m[key]
    except KeyError:
        raise MalformedPacket(f"required key {key!r}", 0, what) from None


def _expect_topic(topic: bytes, kind: TopicKind, names: tuple[str, ...], what: str) -> None:
    got_kind, got_names = parse_topic(topic)
    if got_kind is not kind or got_names != names:
        raise MalformedPacket(
            f"topic {_topic(kind.value, *(escape_name(n) for n in names))!r} matching the body,"
            f" got {bytes(topic)!r}",
            0,
            what,
        )


def _check_bytes(what: str, x: object) -> bytes:
    if type(x) is not bytes:
        raise _Invalid(f"{what} must be bytes (MessagePack bin), got {type(x).__name__}")
    return x


# --------------------------------------------------------------------------- schema tables


class Presence(enum.Enum):
    """How a key appears in a body."""

    REQUIRED = "required"  # always encoded; decoding fails without it
    OPTIONAL = "optional"  # encoded only when the field is not None; absent and nil alike
    DEFAULTED = "defaulted"  # always encoded; a decoder takes the field's default when absent


Check: TypeAlias = Callable[[str, object], Any]


@dataclass(frozen=True, slots=True)
class WireKey:
    """One row of a message's schema: the body key, the dataclass field it fills, its
    MessagePack type as documented, the check that validates it both ways, and its meaning.

    Encoding, decoding and the tables of docs/wire-format.md are all derived from these rows
    (``schema_markdown``), so a key is declared exactly once."""

    key: str
    attr: str
    wire_type: str
    check: Check
    meaning: str
    presence: Presence = Presence.REQUIRED
    default: object = None

    def encode_value(self, obj: object) -> object:
        x = getattr(obj, self.attr)
        if self.presence is Presence.OPTIONAL and x is None:
            return None
        return self.check(self.attr, x)

    def decode_value(self, m: dict[str, Any], what: str) -> object:
        if self.presence is Presence.REQUIRED:
            return self.check(self.attr, _get(m, self.key, what))
        x = m.get(self.key, self.default)
        if self.presence is Presence.OPTIONAL and x is None:
            return None
        return self.check(self.attr, x)


def _uint(maximum: int) -> Check:
    return lambda what, x: _check_uint(what, x, maximum)


def _name(what: str, x: object) -> str:
    return _check_name(what, x)


def _name_or_empty(what: str, x: object) -> str:
    return _check_name(what, x, allow_empty=True)


def _kind(what: str, x: object) -> str:
    # EventKind members are str; send their plain value.
    return _check_name(what, str(x) if isinstance(x, str) else x)


def _version(what: str, x: object) -> int:
    return _check_version(x)


def _value(what: str, x: object) -> Value:
    return _check_value(x)


def _counters(what: str, x: object) -> dict[str, int | float]:
    return _check_counters(x)


def _bool(what: str, x: object) -> bool:
    if type(x) is not bool:
        raise _Invalid(f"{what} must be true or false, got {x!r}")
    return x


_SEQ_MEANING = "sequence number, per publisher and topic, from 0"


def _envelope(pub_meaning: str) -> tuple[WireKey, ...]:
    return (
        WireKey("v", "v", "uint", _version, f"schema version, {SCHEMA_VERSION}"),
        WireKey("sq", "seq", "uint64", _uint(U64_MAX), _SEQ_MEANING),
        WireKey("pub", "publisher", "str", _name, pub_meaning),
    )


SAMPLE_KEYS: tuple[WireKey, ...] = (
    *_envelope("id of the publishing worker"),
    WireKey("plc", "plc", "str", _name, "PLC name as configured"),
    WireKey("tag", "tag", "str", _name, "produced tag name"),
    WireKey("tw", "t_wall_ns", "int64", _check_int64, "receive time, ns since the Unix epoch"),
    WireKey("tm", "t_mono_ns", "int64", _check_int64,
            "receive time, publisher's monotonic clock, ns"),
    WireKey("cs", "cip_seq", "uint16", _uint(U16_MAX),
            "CIP sequence count of the class-1 datagram (wraps at 65535)"),
    WireKey("gap", "gap", "uint64", _uint(U64_MAX),
            "datagrams/values this connection missed so far (CIP-level loss, counted by the"
            " worker)"),
    WireKey("val", "value", "any", _value,
            "decoded value: nil, bool, int, float, str, array (Logix arrays), map with str keys"
            f" (UDTs); nested at most {MAX_VALUE_DEPTH} levels. nil when the worker could not"
            " decode the bytes"),
    WireKey("raw", "raw", "bin", _check_bytes,
            "the tag's bytes exactly as received (after the CIP sequence count and run/idle"
            " header)"),
    WireKey("ty", "type_name", "str", _name,
            "Logix type name, e.g. `DINT`, `REAL`, `MyUdt`", Presence.OPTIONAL),
    WireKey("st", "source_ns", "int64", _check_int64,
            "source time: the controller's own clock, ns since the Unix epoch, read from the"
            " UDT member the tag's `source_time` names (a LINT of µs, GSV WallClockTime"
            " CurrentValue); absent for other tags", Presence.OPTIONAL),
)

EVENT_KEYS: tuple[WireKey, ...] = (
    *_envelope("id of the publishing worker"),
    WireKey("plc", "plc", "str", _name, "PLC name as configured"),
    WireKey("tag", "tag", "str", _name_or_empty, 'tag name, `""` for PLC-wide events'),
    WireKey("tw", "t_wall_ns", "int64", _check_int64,
            "when it happened, ns since the Unix epoch"),
    WireKey("tm", "t_mono_ns", "int64", _check_int64,
            "when it happened, publisher's monotonic clock, ns"),
    WireKey("k", "kind", "str", _kind,
            "kind: `state`, `reject`, `gap`, `timeout`, `outage`, `error` (more may be added;"
            " show unknown kinds as text)"),
    WireKey("from", "state_from", "str", _name_or_empty,
            "previous connection state, e.g. `OPENING`", Presence.OPTIONAL),
    WireKey("to", "state_to", "str", _name_or_empty,
            "new connection state, e.g. `RUNNING`, `BACKOFF`", Presence.OPTIONAL),
    WireKey("gs", "cip_general", "uint8", _uint(0xFF),
            "CIP general status (e.g. 1 = connection failure; protocol.md 8.1)",
            Presence.OPTIONAL),
    WireKey("es", "cip_extended", "uint16", _uint(U16_MAX),
            "CIP extended status, first additional status word (e.g. 0x0109; protocol.md 8.2)",
            Presence.OPTIONAL),
    WireKey("stx", "status_text", "str", _name_or_empty, "human text for the status",
            Presence.OPTIONAL),
    WireKey("msg", "message", "str", _name_or_empty, 'free text for people, may be `""`',
            Presence.DEFAULTED, ""),
    # Outage events (k = "outage"), added in schema version 1: the record of one interruption
    # of a tag's data. The event's own tw/tm are its end.
    WireKey("stw", "outage_start_wall_ns", "int64", _check_int64,
            "outage: its start, ns since the Unix epoch: the receive time of the last sample"
            " before it (the end is `tw`: the first sample after it, or the consumer's stop)",
            Presence.OPTIONAL),
    WireKey("stm", "outage_start_mono_ns", "int64", _check_int64,
            "outage: its start on the publisher's monotonic clock, ns (the end is `tm`)",
            Presence.OPTIONAL),
    WireKey("exp", "expected", "uint64", _uint(U64_MAX),
            "outage: samples the RPI promised between its start and its end that never came",
            Presence.OPTIONAL),
    WireKey("rpi", "rpi_us", "uint32", _uint(0xFFFF_FFFF),
            "outage: the T->O RPI (granted API, µs) `exp` is counted at", Presence.OPTIONAL),
    WireKey("cause", "cause", "str", _name,
            "outage: what interrupted the data: `timeout` (no T->O data while the PLC's session"
            " was up), `session` (no data while the session was down: PLC unreachable or"
            " restarted), `restart` (the worker restarted); more may be added",
            Presence.OPTIONAL),
    WireKey("res", "resumed", "bool", _bool,
            "outage: true when data came back at its end, false when the consumer was stopped"
            " (removed, worker stopped) before it did", Presence.OPTIONAL),
)

STATS_KEYS: tuple[WireKey, ...] = (
    *_envelope("id of the process that published it"),
    WireKey("wk", "worker", "str", _name, "worker the counters describe"),
    WireKey("tw", "t_wall_ns", "int64", _check_int64,
            "when the counters were read, ns since the Unix epoch"),
    WireKey("tm", "t_mono_ns", "int64", _check_int64,
            "when the counters were read, publisher's monotonic clock, ns"),
    WireKey("c", "counters", "map", _counters, "counter name (str) → int or float"),
)


def _checked_body(obj: object, keys: tuple[WireKey, ...]) -> dict[str, object]:
    """The body map of ``obj`` in table order; raises _Invalid on a field that breaks it."""
    body: dict[str, object] = {}
    for k in keys:
        x = k.encode_value(obj)
        if x is not None or k.presence is not Presence.OPTIONAL:
            body[k.key] = x
    return body


def _decoded_fields(body: bytes, keys: tuple[WireKey, ...], what: str) -> dict[str, Any]:
    """Unpack and validate a body into dataclass keyword arguments; MalformedPacket on error."""
    m = _unpack(body, what)
    try:
        return {k.attr: k.decode_value(m, what) for k in keys}
    except _Invalid as exc:
        raise MalformedPacket(f"valid {what} fields: {exc}", 0, what) from None


def schema_markdown(keys: tuple[WireKey, ...]) -> str:
    """The markdown table of docs/wire-format.md for one message kind (key, type, required,
    meaning), generated from its schema rows."""
    lines = ["| key | type | required | meaning |", "| --- | --- | --- | --- |"]
    for k in keys:
        required = "no" if k.presence is Presence.OPTIONAL else "yes"
        lines.append(f"| `{k.key}` | {k.wire_type} | {required} | {k.meaning} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- messages


class _Message:
    """What every message kind does the same way: its body is its fields checked against its
    ``KEYS`` (both ways), its topic is its ``KIND`` and the names of ``_names()``."""

    __slots__ = ()
    KIND: ClassVar[TopicKind]
    KEYS: ClassVar[tuple[WireKey, ...]]

    def _names(self) -> tuple[str, ...]:
        """The names the topic carries after its kind, unescaped."""
        raise NotImplementedError

    @property
    def topic(self) -> bytes:
        return _topic(self.KIND.value, *(escape_name(n) for n in self._names()))

    def _checked_body(self) -> dict[str, object]:
        return _checked_body(self, self.KEYS)

    def encode(self) -> tuple[bytes, bytes]:
        """``(topic, body)``; raises UsageError if a field breaks the schema."""
        return self.topic, _encode_checked(self._checked_body, type(self).__name__)

    @classmethod
    def decode(cls, topic: bytes, body: bytes) -> Self:
        """Parse and validate; MalformedPacket on anything that is not a v>=1 message of this
        kind."""
        return cls._decode_checked(topic, body)

    @classmethod
    def _decode_checked(cls, topic: bytes, body: bytes) -> Self:
        """The reference decoder: every key through its ``KEYS`` check, the topic parsed and
        compared; the message of a MalformedPacket comes from here."""
        what = cls.KIND.value
        msg = cls(**_decoded_fields(body, cls.KEYS, what))
        _expect_topic(topic, cls.KIND, msg._names(), what)
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample(_Message):
    """One produced-tag value as received by a worker; its keys are ``SAMPLE_KEYS``."""

    KIND: ClassVar[TopicKind] = TopicKind.SAMPLE
    KEYS: ClassVar[tuple[WireKey, ...]] = SAMPLE_KEYS
    v: int = SCHEMA_VERSION
    seq: int
    publisher: str
    plc: str
    tag: str
    t_wall_ns: int
    t_mono_ns: int
    cip_seq: int
    gap: int
    value: Value
    raw: bytes
    type_name: str | None = None
    source_ns: int | None = None  # the controller's time of the value (``st``), ns

    def _names(self) -> tuple[str, ...]:
        return (self.plc, self.tag)

    @classmethod
    def decode(cls, topic: bytes, body: bytes) -> Sample:
        """Parse and validate; MalformedPacket on anything that is not a v>=1 sample (the
        fast ``SampleReader``, held to ``_decode_checked``)."""
        return _SAMPLE_READER.decode(topic, body)


class SampleStream:
    """The hot-path encoder for the samples of one connection (one plc/tag topic).

    ``Sample.encode`` validates every field, which costs more than decoding the datagram
    (about 20 us for a REAL[100] value, mostly walking the value). A worker publishes values
    produced by a compiled Logix decoder, which are schema-valid by construction, so this
    encoder checks the constant fields once, at construction, keeps the topic and the constant
    part of the body, numbers the messages itself (``sq`` per topic, like ``SeqCounter``) and
    only packs. The bytes are identical to ``Sample.encode`` (a test holds it to that).
    Give the publisher's ``SeqCounter`` as ``counter`` so a stream re-created for the same
    topic (a consumer removed and added again) continues its numbering.
    """

    __slots__ = ("_const", "_counter", "_next", "topic")

    def __init__(self, publisher: str, plc: str, tag: str, type_name: str | None = None,
                 counter: SeqCounter | None = None) -> None:
        probe = Sample(seq=0, publisher=publisher, plc=plc, tag=tag, t_wall_ns=0, t_mono_ns=0,
                       cip_seq=0, gap=0, value=None, raw=b"", type_name=type_name)
        try:
            body = probe._checked_body()
        except _Invalid as exc:
            raise UsageError(f"cannot encode Sample: {exc}") from None
        self.topic = probe.topic
        self._const = {k: body[k] for k in ("v", "pub", "plc", "tag")}
        if type_name is not None:
            self._const["ty"] = body["ty"]
        self._counter = counter
        self._next = 0

    def encode(self, t_wall_ns: int, t_mono_ns: int, cip_seq: int, gap: int, value: Value,
               raw: bytes, source_ns: int | None = None) -> bytes:
        """The next message body of this stream (the caller sends ``[stream.topic, body]``);
        ``source_ns``: the controller's time, an int64 (``st``; None: no such key)."""
        if self._counter is not None:
            seq = self._counter.next(self.topic)
        else:
            seq = self._next
            self._next = (seq + 1) & U64_MAX
        # Same key order as Sample._checked_body so the bytes match exactly.
        body = {"v": self._const["v"], "sq": seq, "pub": self._const["pub"],
                "plc": self._const["plc"], "tag": self._const["tag"], "tw": t_wall_ns,
                "tm": t_mono_ns, "cs": cip_seq, "gap": gap, "val": value, "raw": raw}
        if "ty" in self._const:
            body["ty"] = self._const["ty"]
        if source_ns is not None:
            body["st"] = source_ns
        return _pack(body, "Sample")

    def fragments(self) -> tuple[bytes, ...]:
        """The constant MessagePack around the variable fields of every body of this stream,
        for an encoder that writes the bytes itself (workers/_fastpath.c): a body is

            f[0] sq f[1] tw f[2] tm f[3] cs f[4] gap f[5] val f[6] raw f[7]

        with each variable field packed as ``msgpack.packb`` packs it (``raw`` as bin).
        Joined so, the bytes are ``encode``'s (tests/acquisition/test_wire.py)."""
        const = self._const

        def p(x: object) -> bytes:
            packed: bytes = msgpack.packb(x, use_bin_type=True)
            return packed

        header = msgpack.Packer(use_bin_type=True).pack_map_header(11 + ("ty" in const))
        return (
            header + p("v") + p(const["v"]) + p("sq"),
            p("pub") + p(const["pub"]) + p("plc") + p(const["plc"]) + p("tag") + p(const["tag"])
            + p("tw"),
            p("tm"),
            p("cs"),
            p("gap"),
            p("val"),
            p("raw"),
            p("ty") + p(const["ty"]) if "ty" in const else b"",
        )


# The keys of a sample body by how ``SampleReader`` checks them: those that are the same in
# every message of a stream (checked with the topic, once per stream), and the others.
SAMPLE_STREAM_KEYS = ("pub", "plc", "tag", "ty")
SAMPLE_MESSAGE_KEYS = ("v", "sq", "tw", "tm", "cs", "gap", "val", "raw", "st")
# Setters of Sample's slots in field order: a frozen dataclass's __init__ sets each field
# through object.__setattr__ by name, at twice the cost of these. (SampleReader.quick sets
# them one by one: a field added to Sample fails there, loudly, until it is set too.)
_SAMPLE_SETTERS = tuple(getattr(Sample, f.name).__set__ for f in fields(Sample))
_MISSING = object()


class SampleReader:
    """The hot-path decoder of samples, the counterpart of ``SampleStream``.

    ``Sample._decode_checked`` (the reference) runs every key through its check, parses the
    topic, unescapes its names and compares them with the body's: about 18 us for a DINT,
    against about 1 us to unpack the body. Most of that is the same for every message of a
    stream: its topic and the body's names and type. This reader remembers each stream the
    reference accepted (topic, ``pub``, ``plc``, ``tag``, ``ty``); a body of a known stream
    gets only its other keys checked, by type and range in one expression, the value in one
    walk (none for a scalar), and the Sample is built without its keyword ``__init__``.
    Anything else, or anything the quick checks do not accept, goes to the reference, which
    decodes it or raises its MalformedPacket: the result is the reference's in every case
    (tests/acquisition/test_wire.py holds it to that).
    """

    __slots__ = ("_streams", "max_streams")

    def __init__(self, max_streams: int = 1 << 16) -> None:
        self._streams: set[tuple[bytes, object, object, object, object]] = set()
        self.max_streams = max_streams  # past it the set starts again (hostile topics)

    def decode(self, topic: bytes, body: bytes) -> Sample:
        """``Sample.decode``: quick when it can be, else the reference."""
        msg = self.quick(topic, body)
        return msg if msg is not None else self.checked(topic, body)

    def checked(self, topic: bytes, body: bytes) -> Sample:
        """The reference decoder; the stream of what it accepts is known from now on."""
        msg = Sample._decode_checked(topic, body)
        if type(topic) is bytes:
            if len(self._streams) >= self.max_streams:
                self._streams.clear()
            self._streams.add((topic, msg.publisher, msg.plc, msg.tag, msg.type_name))
        return msg

    def quick(self, topic: bytes, body: bytes) -> Sample | None:
        """The sample, when ``body`` belongs to a known stream and every other key passes the
        quick checks; None for the reference to judge."""
        if type(body) is not bytes:
            return None
        try:
            m = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if type(m) is not dict:
            return None
        get = m.get
        pub, plc, tag, ty = get("pub"), get("plc"), get("tag"), get("ty")
        try:
            if (topic, pub, plc, tag, ty) not in self._streams:
                return None
        except TypeError:  # an unhashable list or map where a name belongs
            return None
        v, sq, tw, tm = get("v"), get("sq"), get("tw"), get("tm")
        cs, gap, val, raw = get("cs"), get("gap"), get("val", _MISSING), get("raw")
        st = get("st")  # optional: absent and nil alike
        if not (
            type(v) is int and 1 <= v <= U64_MAX
            and type(sq) is int and 0 <= sq <= U64_MAX
            and type(tw) is int and I64_MIN <= tw <= I64_MAX
            and type(tm) is int and I64_MIN <= tm <= I64_MAX
            and type(cs) is int and 0 <= cs <= U16_MAX
            and type(gap) is int and 0 <= gap <= U64_MAX
            and type(raw) is bytes
            and (st is None or (type(st) is int and I64_MIN <= st <= I64_MAX))
        ):  # fmt: skip
            return None
        try:
            _check_value(val)
        except _Invalid:
            return None
        # Unrolled: half the cost of a loop over the setters.
        s_v, s_sq, s_pub, s_plc, s_tag, s_tw, s_tm, s_cs, s_gap, s_val, s_raw, s_ty, s_st = (
            _SAMPLE_SETTERS
        )
        msg: Sample = object.__new__(Sample)
        s_v(msg, v)
        s_sq(msg, sq)
        s_pub(msg, pub)
        s_plc(msg, plc)
        s_tag(msg, tag)
        s_tw(msg, tw)
        s_tm(msg, tm)
        s_cs(msg, cs)
        s_gap(msg, gap)
        s_val(msg, val)
        s_raw(msg, raw)
        s_ty(msg, ty)
        s_st(msg, st)
        return msg


_SAMPLE_READER = SampleReader()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(_Message):
    """Something that happened to a connection or a PLC session; its keys are ``EVENT_KEYS``.

    Optional keys are omitted when None; decoders treat an absent key and nil alike.
    """

    KIND: ClassVar[TopicKind] = TopicKind.EVENT
    KEYS: ClassVar[tuple[WireKey, ...]] = EVENT_KEYS
    v: int = SCHEMA_VERSION
    seq: int
    publisher: str
    plc: str
    tag: str = ""
    t_wall_ns: int
    t_mono_ns: int
    kind: str
    state_from: str | None = None
    state_to: str | None = None
    cip_general: int | None = None
    cip_extended: int | None = None
    status_text: str | None = None
    message: str = ""
    outage_start_wall_ns: int | None = None
    outage_start_mono_ns: int | None = None
    expected: int | None = None
    rpi_us: int | None = None
    cause: str | None = None
    resumed: bool | None = None

    def _names(self) -> tuple[str, ...]:
        return (self.plc, self.tag)  # tag "": the event concerns the whole PLC


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats(_Message):
    """Periodic counters of one worker; its keys are ``STATS_KEYS``."""

    KIND: ClassVar[TopicKind] = TopicKind.STATS
    KEYS: ClassVar[tuple[WireKey, ...]] = STATS_KEYS
    v: int = SCHEMA_VERSION
    seq: int
    publisher: str
    worker: str
    t_wall_ns: int
    t_mono_ns: int
    counters: dict[str, int | float] = field(default_factory=dict)

    def _names(self) -> tuple[str, ...]:
        return (self.worker,)


Message: TypeAlias = Sample | Event | Stats

_BY_KIND: dict[TopicKind, type[Sample | Event | Stats]] = {
    TopicKind.SAMPLE: Sample,
    TopicKind.EVENT: Event,
    TopicKind.STATS: Stats,
}


def decode(topic: bytes, body: bytes) -> Message:
    """Decode any bus message, dispatching on the topic's first segment.

    Raises only MalformedPacket: unknown topic kinds, junk, truncated bodies, missing or
    ill-typed keys, and a topic that does not match the names in the body.
    """
    if type(topic) is bytes and topic.startswith(b"sample/"):
        msg = _SAMPLE_READER.quick(topic, body)  # the common case, without parse_topic
        if msg is not None:
            return msg
    kind, _names = parse_topic(topic)
    if kind is TopicKind.SAMPLE:
        return _SAMPLE_READER.checked(topic, body)
    return _BY_KIND[kind].decode(topic, body)


def is_number(value: Value) -> bool:
    """True for a scalar that a numeric (REAL) column can hold; bool counts, NaN/inf too."""
    return type(value) in (int, float, bool)


__all__ = [
    "MAX_VALUE_DEPTH",
    "SCHEMA_VERSION",
    "Event",
    "EventKind",
    "Message",
    "OutageCause",
    "Sample",
    "SeqCounter",
    "Stats",
    "TopicKind",
    "Value",
    "decode",
    "escape_name",
    "is_number",
    "parse_topic",
    "topic_for_event",
    "topic_for_sample",
    "topic_for_stats",
    "topic_prefix",
    "unescape_name",
]
