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
    event/<plc>/<tag>/      connection state change, reject, gap, timeout, error
                            (<tag> may be empty for PLC-wide events: ``event/<plc>//``)
    stats/<worker>/         periodic counters of one worker

Names are *escaped* inside topics, never rejected: ``%``, ``/``, whitespace and every
non-printable character become ``%XX`` per UTF-8 byte (upper-case hex), so any name a PLC or a
config file can produce has exactly one topic and prefix filters stay exact. Bodies carry the
names unescaped, so a subscriber never needs to unescape. Empty PLC, tag (for samples), worker
and publisher names are rejected.

Bodies are one MessagePack map with short string keys (tables next to each class below).
The schema evolves only by adding keys: decoders ignore keys they do not know and accept any
``v >= 1``; a key's meaning never changes. Every body carries ``sq``, a sequence number that
the publisher counts per topic from 0 (``SeqCounter``), so any subscriber, whatever prefixes it
filters on, can detect lost messages; a sequence that goes backwards means the publisher
restarted.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

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


# --------------------------------------------------------------------------- field checks


def _check_uint(what: str, x: object, maximum: int) -> int:
    if type(x) is not int or not 0 <= x <= maximum:
        raise _Invalid(f"{what} must be an integer in 0..{maximum}, got {x!r}")
    return x


def _check_int64(what: str, x: object) -> int:
    if type(x) is not int or not I64_MIN <= x <= I64_MAX:
        raise _Invalid(f"{what} must be a 64-bit signed integer, got {x!r}")
    return x


def _check_opt_uint(what: str, x: object, maximum: int) -> int | None:
    return None if x is None else _check_uint(what, x, maximum)


def _check_opt_str(what: str, x: object) -> str | None:
    return None if x is None else _check_name(what, x, allow_empty=True)


def _check_version(x: object) -> int:
    # Any version >= 1 is accepted: versions only add keys, which decoders ignore.
    if type(x) is not int or not 1 <= x <= U64_MAX:
        raise _Invalid(f"schema version 'v' must be an integer >= 1, got {x!r}")
    return x


def _check_value(x: object) -> Value:
    """msgpack-native, JSON-shaped values only: nil, bool, int, float, str, list, str-keyed map."""
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
            stack.extend((e, depth + 1) for e in item)
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
        return msgpack.packb(body, use_bin_type=True)
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


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One produced-tag value as received by a worker.

    ====  ============  =========  ==================================================
    key   field         msgpack    meaning
    ====  ============  =========  ==================================================
    v     v             uint       schema version (1)
    sq    seq           uint64     per-publisher, per-topic sequence, from 0
    pub   publisher     str        worker id that published it
    plc   plc           str        PLC name (configured), non-empty
    tag   tag           str        tag name, non-empty
    tw    t_wall_ns     int64      receive time, ns since the Unix epoch (UTC)
    tm    t_mono_ns     int64      receive time, publisher's monotonic clock, ns
    cs    cip_seq       uint16     CIP sequence count of the datagram (protocol.md 6.4)
    gap   gap           uint64     datagrams/values missed on this connection so far
    val   value         any        decoded value: nil/bool/int/float/str/list/map
    raw   raw           bin        tag bytes exactly as received
    ty    type_name     str        Logix type name, e.g. "DINT" (optional, omitted if None)
    ====  ============  =========  ==================================================
    """

    KIND: ClassVar[TopicKind] = TopicKind.SAMPLE
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

    @property
    def topic(self) -> bytes:
        return topic_for_sample(self.plc, self.tag)

    def _checked_body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "v": _check_version(self.v),
            "sq": _check_uint("seq", self.seq, U64_MAX),
            "pub": _check_name("publisher", self.publisher),
            "plc": _check_name("plc", self.plc),
            "tag": _check_name("tag", self.tag),
            "tw": _check_int64("t_wall_ns", self.t_wall_ns),
            "tm": _check_int64("t_mono_ns", self.t_mono_ns),
            "cs": _check_uint("cip_seq", self.cip_seq, U16_MAX),
            "gap": _check_uint("gap", self.gap, U64_MAX),
            "val": _check_value(self.value),
            "raw": _check_bytes("raw", self.raw),
        }
        if self.type_name is not None:
            body["ty"] = _check_name("type_name", self.type_name)
        return body

    def encode(self) -> tuple[bytes, bytes]:
        """``(topic, body)``; raises UsageError if a field breaks the schema."""
        return self.topic, _encode_checked(self._checked_body, "Sample")

    @classmethod
    def decode(cls, topic: bytes, body: bytes) -> Sample:
        """Parse and validate; MalformedPacket on anything that is not a v>=1 sample."""
        m = _unpack(body, "sample")
        try:
            ty = m.get("ty")
            msg = cls(
                v=_check_version(_get(m, "v", "sample")),
                seq=_check_uint("seq", _get(m, "sq", "sample"), U64_MAX),
                publisher=_check_name("publisher", _get(m, "pub", "sample")),
                plc=_check_name("plc", _get(m, "plc", "sample")),
                tag=_check_name("tag", _get(m, "tag", "sample")),
                t_wall_ns=_check_int64("t_wall_ns", _get(m, "tw", "sample")),
                t_mono_ns=_check_int64("t_mono_ns", _get(m, "tm", "sample")),
                cip_seq=_check_uint("cip_seq", _get(m, "cs", "sample"), U16_MAX),
                gap=_check_uint("gap", _get(m, "gap", "sample"), U64_MAX),
                value=_check_value(_get(m, "val", "sample")),
                raw=_check_bytes("raw", _get(m, "raw", "sample")),
                type_name=None if ty is None else _check_name("type_name", ty),
            )
        except _Invalid as exc:
            raise MalformedPacket(f"valid sample fields: {exc}", 0, "sample") from None
        _expect_topic(topic, TopicKind.SAMPLE, (msg.plc, msg.tag), "sample")
        return msg


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
               raw: bytes) -> bytes:
        """The next message body of this stream (the caller sends ``[stream.topic, body]``)."""
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
        return _pack(body, "Sample")


def _check_bytes(what: str, x: object) -> bytes:
    if type(x) is not bytes:
        raise _Invalid(f"{what} must be bytes (MessagePack bin), got {type(x).__name__}")
    return x


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened to a connection or a PLC session.

    ====  =============  =========  =================================================
    key   field          msgpack    meaning
    ====  =============  =========  =================================================
    v     v              uint       schema version (1)
    sq    seq            uint64     per-publisher, per-topic sequence, from 0
    pub   publisher      str        worker id
    plc   plc            str        PLC name, non-empty
    tag   tag            str        tag name; "" when the event is about the whole PLC
    tw    t_wall_ns      int64      when it happened, ns since the Unix epoch (UTC)
    tm    t_mono_ns      int64      same, publisher's monotonic clock, ns
    k     kind           str        "state", "reject", "gap", "timeout", "error", ...
    from  state_from     str        previous connection state (optional)
    to    state_to       str        new connection state (optional)
    gs    cip_general    uint8      CIP general status (optional, protocol.md 8.1)
    es    cip_extended   uint16     CIP extended status (optional, protocol.md 8.2)
    stx   status_text    str        human text of the status (optional)
    msg   message        str        free text for people (always present, may be "")
    ====  =============  =========  =================================================

    Optional keys are omitted when None; decoders treat an absent key and nil alike.
    """

    KIND: ClassVar[TopicKind] = TopicKind.EVENT
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

    @property
    def topic(self) -> bytes:
        return topic_for_event(self.plc, self.tag)

    def _checked_body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "v": _check_version(self.v),
            "sq": _check_uint("seq", self.seq, U64_MAX),
            "pub": _check_name("publisher", self.publisher),
            "plc": _check_name("plc", self.plc),
            "tag": _check_name("tag", self.tag, allow_empty=True),
            "tw": _check_int64("t_wall_ns", self.t_wall_ns),
            "tm": _check_int64("t_mono_ns", self.t_mono_ns),
            "k": _check_name("kind", str(self.kind)),
        }
        optional: dict[str, object] = {
            "from": _check_opt_str("state_from", self.state_from),
            "to": _check_opt_str("state_to", self.state_to),
            "gs": _check_opt_uint("cip_general", self.cip_general, 0xFF),
            "es": _check_opt_uint("cip_extended", self.cip_extended, U16_MAX),
            "stx": _check_opt_str("status_text", self.status_text),
        }
        body.update((k, x) for k, x in optional.items() if x is not None)
        body["msg"] = _check_name("message", self.message, allow_empty=True)
        return body

    def encode(self) -> tuple[bytes, bytes]:
        """``(topic, body)``; raises UsageError if a field breaks the schema."""
        return self.topic, _encode_checked(self._checked_body, "Event")

    @classmethod
    def decode(cls, topic: bytes, body: bytes) -> Event:
        """Parse and validate; MalformedPacket on anything that is not a v>=1 event."""
        m = _unpack(body, "event")
        try:
            msg = cls(
                v=_check_version(_get(m, "v", "event")),
                seq=_check_uint("seq", _get(m, "sq", "event"), U64_MAX),
                publisher=_check_name("publisher", _get(m, "pub", "event")),
                plc=_check_name("plc", _get(m, "plc", "event")),
                tag=_check_name("tag", _get(m, "tag", "event"), allow_empty=True),
                t_wall_ns=_check_int64("t_wall_ns", _get(m, "tw", "event")),
                t_mono_ns=_check_int64("t_mono_ns", _get(m, "tm", "event")),
                kind=_check_name("kind", _get(m, "k", "event")),
                state_from=_check_opt_str("state_from", m.get("from")),
                state_to=_check_opt_str("state_to", m.get("to")),
                cip_general=_check_opt_uint("cip_general", m.get("gs"), 0xFF),
                cip_extended=_check_opt_uint("cip_extended", m.get("es"), U16_MAX),
                status_text=_check_opt_str("status_text", m.get("stx")),
                message=_check_name("message", m.get("msg", ""), allow_empty=True),
            )
        except _Invalid as exc:
            raise MalformedPacket(f"valid event fields: {exc}", 0, "event") from None
        _expect_topic(topic, TopicKind.EVENT, (msg.plc, msg.tag), "event")
        return msg


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Periodic counters of one worker.

    ====  ============  =========  ==================================================
    key   field         msgpack    meaning
    ====  ============  =========  ==================================================
    v     v             uint       schema version (1)
    sq    seq           uint64     per-publisher, per-topic sequence, from 0
    pub   publisher     str        id of the process that published it
    wk    worker        str        worker the counters describe (topic name)
    tw    t_wall_ns     int64      when the counters were read, ns since the Unix epoch
    tm    t_mono_ns     int64      same, publisher's monotonic clock, ns
    c     counters      map        counter name (str) -> int or float
    ====  ============  =========  ==================================================
    """

    KIND: ClassVar[TopicKind] = TopicKind.STATS
    v: int = SCHEMA_VERSION
    seq: int
    publisher: str
    worker: str
    t_wall_ns: int
    t_mono_ns: int
    counters: dict[str, int | float] = field(default_factory=dict)

    @property
    def topic(self) -> bytes:
        return topic_for_stats(self.worker)

    def encode(self) -> tuple[bytes, bytes]:
        """``(topic, body)``; raises UsageError if a field breaks the schema."""
        try:
            body: dict[str, object] = {
                "v": _check_version(self.v),
                "sq": _check_uint("seq", self.seq, U64_MAX),
                "pub": _check_name("publisher", self.publisher),
                "wk": _check_name("worker", self.worker),
                "tw": _check_int64("t_wall_ns", self.t_wall_ns),
                "tm": _check_int64("t_mono_ns", self.t_mono_ns),
                "c": _check_counters(self.counters),
            }
        except _Invalid as exc:
            raise UsageError(f"cannot encode Stats: {exc}") from None
        return self.topic, _pack(body, "Stats")

    @classmethod
    def decode(cls, topic: bytes, body: bytes) -> Stats:
        """Parse and validate; MalformedPacket on anything that is not v>=1 stats."""
        m = _unpack(body, "stats")
        try:
            msg = cls(
                v=_check_version(_get(m, "v", "stats")),
                seq=_check_uint("seq", _get(m, "sq", "stats"), U64_MAX),
                publisher=_check_name("publisher", _get(m, "pub", "stats")),
                worker=_check_name("worker", _get(m, "wk", "stats")),
                t_wall_ns=_check_int64("t_wall_ns", _get(m, "tw", "stats")),
                t_mono_ns=_check_int64("t_mono_ns", _get(m, "tm", "stats")),
                counters=_check_counters(_get(m, "c", "stats")),
            )
        except _Invalid as exc:
            raise MalformedPacket(f"valid stats fields: {exc}", 0, "stats") from None
        _expect_topic(topic, TopicKind.STATS, (msg.worker,), "stats")
        return msg


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
    kind, _names = parse_topic(topic)
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
