"""The bus's replay: what a sink that (re)starts gets back of what it missed. Pure.

Owns: the replay buffer that the supervisor's forwarder keeps (``ReplayBuffer``), the server
side of the replay protocol (``ReplayService``), its client side for a sink
(``ReplayClient``) and the protocol's messages (docs/wire-format.md "Replay"). No sockets, no
clock: every input takes ``now``; the shells are ``workers/replay.py`` (a thread of the
supervisor) and ``sinks/base.py`` (the SUB loop). It implements no protocol.md section: the
bus is ours.

How it fits together (docs/operations.md "When a sink restarts"):

- The forwarder's proxy copies every message it forwards to a capture socket; the buffer keeps
  the latest, bounded by age (``[bus] replay_s``) and by bytes (``replay_bytes``), oldest out
  first. A message belongs to a *stream*, ``(publisher, topic)``, and its place in that stream
  is its **mark** ``(tm, sq)``: the publisher's monotonic time, then its per-topic sequence.
  ``sq`` alone does not do: a worker that restarts numbers every topic from 0 again under the
  same name. Its ``tm`` is the host's monotonic clock, which keeps growing across restarts of
  the worker, so marks order every message of a stream, run after run (equal ``tm``, as for
  events of one instant, fall back on ``sq``).
- A sink that restarts subscribes live first, then asks for every buffered message after the
  mark of the last message it stored of each stream. Nothing may fall between replay and live:
  after connecting, the sink also subscribes to a topic of its own, ``replay/<id>/``. That
  subscription travels to the service the way the sink's data subscriptions travel, behind
  them, so once it has arrived the data subscriptions are in force at the bus endpoint. Then
  the service publishes a marker on that topic through the proxy and cuts where the marker
  comes back through the capture: what the proxy forwarded before it is in the buffer, what it
  forwarded after it reaches the sink live.
- The sink holds its live messages until the replay has ended, then drops those the replay
  already gave it (a mark not after the last one it has of that stream), and goes on dropping
  such live messages until the marker itself arrives on its SUB: those were queued before the
  cut, and may have been replayed too. A live message that falls in a hole of the replay (the
  buffer dropped it before the replay got there) is dropped as well: it would come out of
  order, and the hole is recorded as a gap anyway.
- What the buffer no longer holds shows as a jump in ``sq`` between the stored mark and the
  first message of the stream the sink gets: its gap detector records that exact range.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias

import msgpack
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.wire import SAMPLE_KEYS, U64_MAX

__all__ = [
    "DEFAULT_REPLY_BYTES",
    "ENTRY_OVERHEAD",
    "REPLAY_TOPIC",
    "Deliver",
    "Key",
    "Mark",
    "NextRequest",
    "PublishMarker",
    "Reply",
    "ReplayBuffer",
    "ReplayClient",
    "ReplayEnded",
    "ReplayRequest",
    "ReplayService",
    "SendRequest",
    "decode_request",
    "marker_topic",
    "message_mark",
]

Key: TypeAlias = tuple[str, bytes]  # a stream: (publisher, topic)
Mark: TypeAlias = tuple[int, int]  # a message's place in its stream: (tm, sq)

# First segment of the topics the replay's markers travel on (never a sample/event/stats).
REPLAY_TOPIC: Final = b"replay/"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Memory a buffered message costs beyond its topic and body bytes: its entry tuple, the body's
# bytes object, the numbers in it, the deque slot (measured with tracemalloc: about 190 bytes;
# rounded up). ``replay_bytes`` counts it, so the bound is the buffer's memory, not its payload.
ENTRY_OVERHEAD: Final = 200
# Messages per reply, in bytes of topics and bodies: one reply at a time is in flight per
# replay, so this is the memory a replay costs on each side and its unit of flow control.
DEFAULT_REPLY_BYTES: Final = 1 << 20
REPLY_BYTES_RANGE: Final = (1 << 12, 1 << 26)
# The body keys every bus message carries (wire.py declares them once).
_KEY_OF = {k.attr: k.key for k in SAMPLE_KEYS}
_SQ, _PUB, _TM = _KEY_OF["seq"], _KEY_OF["publisher"], _KEY_OF["t_mono_ns"]
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_EVERYTHING: Final = (_I64_MIN - 1, -1)  # a mark before every message


def message_mark(body: bytes) -> tuple[str, int, int] | None:
    """``(publisher, tm, sq)`` of a bus message body, None when it carries none (not a v>=1
    MessagePack map with ``pub``, ``sq`` and ``tm``). Cheaper than ``wire.decode``: only the
    keys the replay needs are checked."""
    try:
        m = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if type(m) is not dict:
        return None
    pub, sq, tm = m.get(_PUB), m.get(_SQ), m.get(_TM)
    if type(pub) is not str or not pub or type(sq) is not int or type(tm) is not int:
        return None
    if not (0 <= sq <= U64_MAX and _I64_MIN <= tm <= _I64_MAX):
        return None
    return pub, tm, sq


def marker_topic(replay_id: str) -> bytes:
    """The topic a replay's marker travels on; the client subscribes to it."""
    return REPLAY_TOPIC + replay_id.encode("ascii") + b"/"


def _marker_id(topic: bytes) -> str | None:
    if not (topic.startswith(REPLAY_TOPIC) and topic.endswith(b"/")):
        return None
    text = topic[len(REPLAY_TOPIC) : -1].decode("ascii", "replace")
    return text if _ID.fullmatch(text) else None


# --------------------------------------------------------------------------- the protocol


def _check_id(value: object) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise UsageError(f"'id' must be 1 to 64 letters, digits, '_' or '-', got {value!r}")
    return value


def _topic_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise UsageError(f"{what} must be a topic (bin or str), got {value!r}")


def _int_in(value: object, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise UsageError(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """``{"op": "replay", ...}``: start a replay (docs/wire-format.md "Replay").

    ``after``: per stream the client stored, the mark of the last message it stored; the
    replay brings every buffered message of that stream after it. ``new``: topic prefixes
    whose other streams (none stored) are replayed from the oldest buffered message; empty,
    they are not replayed. ``max_bytes``: the largest reply, in bytes of topics and bodies.
    """

    OP = "replay"
    id: str
    after: Mapping[Key, Mark] = field(default_factory=dict)
    new: tuple[bytes, ...] = ()
    max_bytes: int = DEFAULT_REPLY_BYTES

    def to_map(self) -> dict[str, Any]:
        return {
            "op": self.OP,
            "id": self.id,
            "after": [[pub, topic, sq, tm] for (pub, topic), (tm, sq) in self.after.items()],
            "new": list(self.new),
            "max_bytes": self.max_bytes,
        }

    def encode(self) -> bytes:
        return _pack(self.to_map())

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> ReplayRequest:
        after_raw = m.get("after") or []
        if not isinstance(after_raw, list):
            raise UsageError("'after' must be a list of [publisher, topic, sq, tm]")
        after: dict[Key, Mark] = {}
        for i, item in enumerate(after_raw):
            if not isinstance(item, list) or len(item) != 4:
                raise UsageError(f"after[{i}] must be [publisher, topic, sq, tm], got {item!r}")
            pub, topic, sq, tm = item
            if not isinstance(pub, str) or not pub:
                raise UsageError(f"after[{i}]: the publisher must be a non-empty str")
            key = (pub, _topic_bytes(topic, f"after[{i}] topic"))
            after[key] = (
                _int_in(tm, _I64_MIN, _I64_MAX, f"after[{i}] tm"),
                _int_in(sq, 0, U64_MAX, f"after[{i}] sq"),
            )
        new_raw = m.get("new") or []
        if not isinstance(new_raw, list):
            raise UsageError("'new' must be a list of topic prefixes")
        lo, hi = REPLY_BYTES_RANGE
        max_bytes = m.get("max_bytes")
        return cls(
            id=_check_id(m.get("id")),
            after=after,
            new=tuple(_topic_bytes(p, "each of 'new'") for p in new_raw),
            max_bytes=DEFAULT_REPLY_BYTES
            if max_bytes is None
            else _int_in(max_bytes, lo, hi, "'max_bytes'"),
        )


@dataclass(frozen=True, slots=True)
class NextRequest:
    """``{"op": "replay_next", "id": ID}``: the next reply of a replay (after each one that
    did not say ``end``)."""

    OP = "replay_next"
    id: str

    def encode(self) -> bytes:
        return _pack({"op": self.OP, "id": self.id})

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> NextRequest:
        return cls(id=_check_id(m.get("id")))


REQUESTS: Final[dict[str, type[ReplayRequest] | type[NextRequest]]] = {
    ReplayRequest.OP: ReplayRequest,
    NextRequest.OP: NextRequest,
}


def decode_request(body: bytes) -> ReplayRequest | NextRequest:
    """A replay request; ``UsageError`` saying what is wrong with it."""
    try:
        m = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise UsageError(f"a request is one MessagePack map ({exc})") from None
    op = m.get("op") if isinstance(m, dict) else None
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise UsageError(f"'op' must be one of {', '.join(REQUESTS)}, got {op!r}")
    return cls.from_map(m)


def _pack(m: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(m, use_bin_type=True)
    return packed


def _reply(replay_id: str | None, **fields: Any) -> bytes:
    return _pack({"id": replay_id, **fields})


def error_reply(replay_id: str | None, error: str) -> bytes:
    return _reply(replay_id, ok=False, error=error)


# --------------------------------------------------------------------------- the buffer

# One buffered message: (time it was captured, stream, tm, sq, body). A tuple, not a
# dataclass: there are hundreds of thousands and each byte of bookkeeping counts.
_Entry: TypeAlias = tuple[float, Key, int, int, bytes]


class ReplayBuffer:
    """The latest bus messages, oldest out first once older than ``max_age_s`` or once they
    take more than ``max_bytes`` (topic, body and ``ENTRY_OVERHEAD`` each).

    Messages are numbered in capture order, without holes: the first one held is ``first``,
    the next one added gets ``end``. A body without a mark (``message_mark``) is not kept
    (``skipped``). ``lost`` counts messages missing between two of a stream while it is held
    (the capture dropped them: the buffer's thread could not keep up).
    """

    __slots__ = (
        "_entries", "_streams", "added", "bytes", "evicted", "first", "lost", "max_age_s",
        "max_bytes", "skipped",
    )  # fmt: skip

    def __init__(self, max_age_s: float, max_bytes: int) -> None:
        if max_age_s <= 0 or max_bytes <= 0:
            raise UsageError("a replay buffer needs max_age_s > 0 and max_bytes > 0")
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._entries: deque[_Entry] = deque()
        # Per stream held: [messages held, last sq, the key itself (shared by its entries)].
        self._streams: dict[Key, list[Any]] = {}
        self.first = 0
        self.bytes = 0
        self.added = self.evicted = self.skipped = self.lost = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def end(self) -> int:
        return self.first + len(self._entries)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def add(self, topic: bytes, body: bytes, now: float) -> bool:
        """Keep one captured message; False (and counted) when it has no mark."""
        mark = message_mark(body)
        if mark is None:
            self.skipped += 1
            return False
        pub, tm, sq = mark
        stream = self._streams.get((pub, topic))
        if stream is None:
            key = (pub, bytes(topic))
            stream = self._streams[key] = [0, sq, key]
        elif sq > stream[1] + 1:
            self.lost += sq - stream[1] - 1
        stream[0] += 1
        stream[1] = sq
        self._entries.append((now, stream[2], tm, sq, body))
        self.bytes += len(topic) + len(body) + ENTRY_OVERHEAD
        self.added += 1
        self.evict(now)
        return True

    def evict(self, now: float) -> None:
        """Drop the oldest messages while too old or too many bytes."""
        entries, too_old = self._entries, now - self.max_age_s
        while entries and (self.bytes > self.max_bytes or entries[0][0] < too_old):
            _, key, _, _, body = entries.popleft()
            self.bytes -= len(key[1]) + len(body) + ENTRY_OVERHEAD
            self.first += 1
            self.evicted += 1
            stream = self._streams[key]
            stream[0] -= 1
            if stream[0] == 0:
                del self._streams[key]

    def next_deadline(self) -> float | None:
        """When the oldest message ages out (``on_timer`` then drops it), None when empty."""
        return self._entries[0][0] + self.max_age_s if self._entries else None

    def on_timer(self, now: float) -> None:
        self.evict(now)

    def oldest_age(self, now: float) -> float | None:
        return now - self._entries[0][0] if self._entries else None

    def entries_from(self, number: int) -> Iterator[_Entry]:
        """The messages numbered ``number`` (or the first held, if later) and after."""
        return itertools.islice(self._entries, max(0, number - self.first), None)


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class PublishMarker:
    """Send ``[topic, b""]`` into the proxy (through the forwarder's input)."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``[*envelope, body]`` back to the client that asked."""

    envelope: tuple[bytes, ...]
    body: bytes


ServiceOutput: TypeAlias = PublishMarker | Reply


@dataclass(slots=True)
class _Replay:
    """One replay in progress on the server."""

    request: ReplayRequest
    envelope: tuple[bytes, ...]
    deadline: float  # marker wait, then idle time between replies
    subscribed: bool = False  # its marker topic's subscription arrived
    marker_sent: bool = False
    cutoff: int | None = None  # number of the first message not replayed (the marker's place)
    next: int = 0  # number of the next message to look at
    sent: int = 0
    skipped: int = 0  # evicted while the replay was under way (the client sees the gap)
    marks: dict[Key, Mark | None] = field(default_factory=dict)  # per stream seen: after what

    def after(self, key: Key) -> Mark | None:
        """Replay this stream's messages after the returned mark; None: not at all."""
        try:
            return self.marks[key]
        except KeyError:
            pass
        mark = self.request.after.get(key)
        if mark is None and any(key[1].startswith(p) for p in self.request.new):
            mark = _EVERYTHING
        self.marks[key] = mark
        return mark


class ReplayService:
    """The server side: a buffer, the replays under way, their markers.

    Inputs: ``captured(frames, now)`` for each message of the capture socket (a two-frame bus
    message is buffered; the marker of a replay cuts it), ``subscription(frame, now)`` for
    each subscription message the forwarder's input passes on (``\\x01replay/<id>/`` tells
    that a replay's client is ready), ``request(envelope, body, now)`` for each request from
    a client, and the timer. Outputs: ``PublishMarker`` and ``Reply``.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        *,
        marker_timeout_s: float = 5.0,
        idle_timeout_s: float = 10.0,
        max_replays: int = 64,
    ) -> None:
        self.buffer = buffer
        self.marker_timeout_s = marker_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_replays = max_replays
        self._replays: dict[str, _Replay] = {}
        self._early: dict[str, float] = {}  # marker subscriptions seen before their request
        self._outputs: list[ServiceOutput] = []
        self.replays = 0  # replays completed
        self.replayed = 0  # messages sent in replies
        self.failed = 0  # replays refused or timed out

    def take_outputs(self) -> list[ServiceOutput]:
        out, self._outputs = self._outputs, []
        return out

    # -- inputs

    def captured(self, frames: Sequence[bytes], now: float) -> None:
        if len(frames) != 2:
            return  # a subscription passing the other way, or not a bus message
        topic, body = frames
        if topic.startswith(REPLAY_TOPIC):
            self._marker_back(topic, now)
        else:
            self.buffer.add(topic, body, now)

    def subscription(self, frame: bytes, now: float) -> None:
        if frame[:1] != b"\x01":
            return
        replay_id = _marker_id(frame[1:])
        if replay_id is None:
            return
        r = self._replays.get(replay_id)
        if r is None:
            if len(self._early) >= 4 * self.max_replays:
                del self._early[next(iter(self._early))]
            self._early[replay_id] = now + self.marker_timeout_s
            return
        r.subscribed = True
        self._send_marker(replay_id, r)

    def request(self, envelope: Sequence[bytes], body: bytes, now: float) -> None:
        env = tuple(envelope)
        try:
            req = decode_request(body)
        except UsageError as exc:
            self._error(env, None, f"bad replay request: {exc}")
            return
        if isinstance(req, NextRequest):
            r = self._replays.get(req.id)
            if r is None or r.cutoff is None:
                self._error(env, req.id, f"no replay {req.id!r} under way (finished, timed out"
                            " or not started): start one with op 'replay'")  # fmt: skip
                return
            r.envelope = env
            self._send_chunk(req.id, r, now)
            return
        if req.id in self._replays:
            self._error(env, req.id, f"replay {req.id!r} is already under way: use a new id")
            return
        if len(self._replays) >= self.max_replays:
            self._error(env, req.id, f"{self.max_replays} replays are under way: try again"
                        " in a moment")  # fmt: skip
            return
        r = _Replay(req, env, now + self.marker_timeout_s)
        self._replays[req.id] = r
        if self._early.pop(req.id, None) is not None:
            r.subscribed = True
            self._send_marker(req.id, r)

    def next_deadline(self) -> float | None:
        times = [r.deadline for r in self._replays.values()]
        times.extend(self._early.values())
        buffered = self.buffer.next_deadline()
        if buffered is not None:
            times.append(buffered)
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        self.buffer.on_timer(now)
        for replay_id, until in list(self._early.items()):
            if until <= now:
                del self._early[replay_id]
        for replay_id, r in list(self._replays.items()):
            if r.deadline > now:
                continue
            del self._replays[replay_id]
            self.failed += 1
            if r.cutoff is None:
                why = (
                    "the client's subscription to its marker topic"
                    if not r.subscribed
                    else "the marker back through the forwarder"
                )
                marker = marker_topic(replay_id).decode()
                self._error(r.envelope, replay_id, f"replay {replay_id!r}: {why} did not arrive"
                            f" within {self.marker_timeout_s:g} s; subscribe to {marker!r} on"
                            " the bus after connecting, then ask")  # fmt: skip
            # else: the client stopped asking; nothing to tell

    # -- internals

    def _error(self, envelope: tuple[bytes, ...], replay_id: str | None, text: str) -> None:
        self._outputs.append(Reply(envelope, error_reply(replay_id, text)))

    def _send_marker(self, replay_id: str, r: _Replay) -> None:
        if not r.marker_sent:
            r.marker_sent = True
            self._outputs.append(PublishMarker(marker_topic(replay_id)))

    def _marker_back(self, topic: bytes, now: float) -> None:
        replay_id = _marker_id(topic)
        if replay_id is None:
            return
        r = self._replays.get(replay_id)
        if r is None or r.cutoff is not None or not r.marker_sent:
            return
        r.cutoff = self.buffer.end
        r.next = self.buffer.first
        self._send_chunk(replay_id, r, now)

    def _send_chunk(self, replay_id: str, r: _Replay, now: float) -> None:
        assert r.cutoff is not None
        buf = self.buffer
        if r.next < buf.first:
            r.skipped += buf.first - r.next
            r.next = buf.first
        stop = min(r.cutoff, buf.end)
        limit = r.request.max_bytes
        messages: list[tuple[bytes, bytes]] = []
        size = 0
        number = r.next
        for _, key, tm, sq, body in buf.entries_from(r.next):
            if number >= stop or size >= limit:
                break
            number += 1
            after = r.after(key)
            if after is None or (tm, sq) <= after:
                continue
            messages.append((key[1], body))
            size += len(key[1]) + len(body)
        r.next = number
        r.sent += len(messages)
        self.replayed += len(messages)
        end = number >= stop
        extra: dict[str, Any] = {}
        if end:
            del self._replays[replay_id]
            self.replays += 1
            age = buf.oldest_age(now)
            extra = {"sent": r.sent, "evicted": r.skipped,
                     "oldest_s": None if age is None else round(age, 3)}  # fmt: skip
        else:
            r.deadline = now + self.idle_timeout_s
        self._outputs.append(
            Reply(r.envelope, _reply(replay_id, ok=True, m=messages, end=end, **extra))
        )

    def stats(self, now: float) -> dict[str, Any]:
        """The buffer and the replays, for ``pyconpro status`` (``forwarder.replay``)."""
        buf = self.buffer
        age = buf.oldest_age(now)
        return {
            "messages": len(buf),
            "bytes": buf.bytes,
            "streams": buf.streams,
            "oldest_s": None if age is None else round(age, 3),
            "max_s": buf.max_age_s,
            "max_bytes": buf.max_bytes,
            "added": buf.added,
            "evicted": buf.evicted,
            "lost": buf.lost,
            "skipped": buf.skipped,
            "replays": self.replays,
            "replayed": self.replayed,
            "under_way": len(self._replays),
            "failed": self.failed,
        }


# --------------------------------------------------------------------------- client side


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send ``body`` to the replay endpoint (``[b"", body]`` on a DEALER)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand these ``(topic, body)`` messages to the sink, in order: replayed ones, or the live
    ones held during the replay that it did not bring."""

    messages: tuple[tuple[bytes, bytes], ...]
    replayed: bool


@dataclass(frozen=True, slots=True)
class ReplayEnded:
    """The replay is over (``ok``) or was given up (``reason`` says why); live from now on."""

    ok: bool
    replayed: int  # messages the replay brought
    held: int  # live messages held meanwhile
    duplicates: int  # of those, dropped: the replay had brought them
    seconds: float  # from start() to the end
    evicted: int = 0  # messages the buffer dropped while the replay was under way
    reason: str = ""


ClientOutput: TypeAlias = SendRequest | Deliver | ReplayEnded


class ReplayClient:
    """A sink's side of one replay, from its start to live data.

    ``marks``: per stream the sink stored, the mark of the last message it stored. ``new``:
    topic prefixes whose other streams are replayed too (empty: not). Inputs: ``start(now)``
    (after the live subscriptions and ``marker_topic`` are set up), ``reply(body, now)`` for
    each reply, ``live(topic, body, now)`` for each live message while ``active`` (the marker
    too), the timer. Outputs: ``SendRequest``, ``Deliver``, and one ``ReplayEnded``, after
    which ``active`` is False and live messages go straight to the sink.

    While replies come, live messages are held (``held_full``: hold no more, leave them in the
    socket). When the replay has ended, the held ones it did not bring are delivered; live
    messages that were still queued before the marker may have been replayed too, so until
    the marker itself arrives live each one is delivered only if it follows the last message
    of its stream the sink has. A replay that fails (refused, unreadable, no reply within
    ``timeout_s``) ends the same way; a marker that does not arrive within ``timeout_s`` of
    the replay's end is not waited for longer.
    """

    def __init__(
        self,
        replay_id: str,
        marks: Mapping[Key, Mark],
        new: Sequence[bytes] = (),
        *,
        timeout_s: float = 10.0,
        max_bytes: int = DEFAULT_REPLY_BYTES,
        max_held: int = 100_000,
    ) -> None:
        self.request = ReplayRequest(_check_id(replay_id), dict(marks), tuple(new), max_bytes)
        self.marker_topic = marker_topic(replay_id)
        self.timeout_s = timeout_s
        self.max_held = max_held
        self.active = False
        self._last: dict[Key, Mark] = dict(marks)
        self._held: list[tuple[bytes, bytes]] = []
        self._replying = False  # replies still to come: live messages are held
        self._answered = False  # a reply came: its marker went out on the bus
        self._marker_seen = False
        self._result: ReplayEnded | None = None  # the replay is over; waiting for the marker
        self._deadline: float | None = None
        self._started = 0.0
        self._replayed = 0
        self._duplicates = 0
        self._outputs: list[ClientOutput] = []

    def take_outputs(self) -> list[ClientOutput]:
        out, self._outputs = self._outputs, []
        return out

    @property
    def held_full(self) -> bool:
        """Hold no more now (the shell leaves further live messages in its socket)."""
        return self._replying and len(self._held) >= self.max_held

    def start(self, now: float) -> None:
        self.active = self._replying = True
        self._started = now
        self._ask(self.request.encode(), now)

    def live(self, topic: bytes, body: bytes, now: float) -> None:
        """A live message while ``active``: held while replies come, then delivered unless
        the replay brought it."""
        if not self.active:
            raise UsageError("a live message after the replay ended goes to the sink directly")
        if topic == self.marker_topic:
            self._marker_seen = True
            if self._result is not None:
                self._finish()
        elif self._replying:
            self._held.append((topic, body))
        elif self._new(topic, body):
            self._outputs.append(Deliver(((topic, body),), replayed=False))

    def reply(self, body: bytes, now: float) -> None:
        if not self._replying:
            return
        try:
            m = msgpack.unpackb(body, raw=False, strict_map_key=True)
            if not isinstance(m, dict):
                raise ValueError("not a map")
            if m.get("id") not in (self.request.id, None):
                return  # a late reply to an earlier request of this socket
            if not m.get("ok"):
                self._replay_over(now, False, f"refused: {m.get('error') or 'no reason given'}")
                return
            messages = _messages(m.get("m"))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._replay_over(now, False, f"unreadable reply ({exc})")
            return
        self._answered = True
        end = m.get("end") is True
        if not end:  # ask for the next one first: it comes while this one is handled
            self._ask(NextRequest(self.request.id).encode(), now)
        for topic, body_ in messages:
            mark = message_mark(body_)
            if mark is not None:
                key = (mark[0], topic)
                self._last[key] = max(self._last.get(key, _EVERYTHING), (mark[1], mark[2]))
        self._replayed += len(messages)
        if messages:
            self._outputs.append(Deliver(tuple(messages), replayed=True))
        if end:
            evicted = m.get("evicted")
            self._replay_over(now, True, "", evicted if type(evicted) is int else 0)

    def abandon(self) -> int:
        """Stop here (the sink is stopping): the held live messages are dropped, nothing more
        is asked; how many were held."""
        held, self._held = len(self._held), []
        self.active = self._replying = False
        self._deadline = None
        return held

    def next_deadline(self) -> float | None:
        return self._deadline

    def on_timer(self, now: float) -> None:
        if not self.active or self._deadline is None or now < self._deadline:
            return
        if self._replying:
            self._replay_over(now, False, f"no reply within {self.timeout_s:g} s")
        else:
            self._finish()  # the marker did not come through: stop filtering

    def _ask(self, body: bytes, now: float) -> None:
        self._deadline = now + self.timeout_s
        self._outputs.append(SendRequest(body))

    def _new(self, topic: bytes, body: bytes) -> bool:
        """Not a message of a stream the sink already has up to or past it."""
        mark = message_mark(body)
        if mark is not None:
            last = self._last.get((mark[0], topic))
            if last is not None and (mark[1], mark[2]) <= last:
                self._duplicates += 1
                return False
        return True

    def _replay_over(self, now: float, ok: bool, reason: str, evicted: int = 0) -> None:
        """No more replies: deliver the held live messages the replay did not bring; end now,
        or once the marker arrives (when a reply came, it is on its way)."""
        held, self._held = self._held, []
        self._replying = False
        kept = tuple(m for m in held if self._new(*m))
        if kept:
            self._outputs.append(Deliver(kept, replayed=False))
        self._result = ReplayEnded(ok, self._replayed, len(held), 0, now - self._started,
                                   evicted, reason)  # fmt: skip
        self._deadline = now + self.timeout_s
        if self._marker_seen or not self._answered:
            self._finish()

    def _finish(self) -> None:
        assert self._result is not None
        self.active = False
        self._deadline = None
        self._outputs.append(replace(self._result, duplicates=self._duplicates))


def _messages(raw: object) -> list[tuple[bytes, bytes]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("'m' is not a list")
    out: list[tuple[bytes, bytes]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and all(
                isinstance(x, bytes) for x in item)):  # fmt: skip
            raise ValueError("each of 'm' must be [topic, body] as bin")
        out.append((item[0], item[1]))
    return out
