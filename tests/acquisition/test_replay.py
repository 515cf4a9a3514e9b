"""The bus's replay, pure: the buffer's bounds and eviction, the server's replays and markers, the
sink's merge of replayed and live messages, the protocol's messages, the ``[bus]`` keys. Time is
a fake clock (plain numbers); a simulated bus drives server and client together."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition import config as cfg
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.replay import (
    DEFAULT_REPLY_BYTES,
    ENTRY_OVERHEAD,
    Deliver,
    Key,
    Mark,
    NextRequest,
    PublishMarker,
    ReplayBuffer,
    ReplayClient,
    ReplayEnded,
    ReplayRequest,
    ReplayService,
    Reply,
    SendRequest,
    decode_request,
    marker_topic,
    message_mark,
)
from pyconpro.acquisition.toml_check import ConfigError
from pyconpro.acquisition.wire import Event, SampleStream

TOPIC = b"sample/p1/Count/"
ENV = (b"client-1", b"")


class Publisher:
    """One worker's streams: bodies as the worker encodes them, ``tm`` 1 ms apart."""

    def __init__(self, name: str = "w1", t0_ns: int = 10**12) -> None:
        self.name = name
        self.t_ns = t0_ns
        self.streams: dict[str, SampleStream] = {}

    def sample(self, tag: str = "Count") -> tuple[bytes, bytes]:
        stream = self.streams.get(tag)
        if stream is None:
            stream = self.streams[tag] = SampleStream(self.name, "p1", tag, "DINT")
        self.t_ns += 1_000_000
        return stream.topic, stream.encode(self.t_ns, self.t_ns, 0, 0, 1, b"\x01\0\0\0")


def marks_of(messages: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, bytes, int]]:
    out = []
    for topic, body in messages:
        m = message_mark(body)
        assert m is not None
        out.append((m[0], topic, m[2]))
    return out


def seqs(messages: Iterable[tuple[bytes, bytes]]) -> list[int]:
    return [sq for _, _, sq in marks_of(messages)]


# --------------------------------------------------------------------------- message_mark


def test_message_mark_reads_pub_tm_and_sq_of_every_kind() -> None:
    topic, body = Publisher().sample()
    assert message_mark(body) == ("w1", 10**12 + 1_000_000, 0)
    ev = Event(seq=7, publisher="w2", plc="p1", tag="", t_wall_ns=1, t_mono_ns=-5, kind="state")
    assert message_mark(ev.encode()[1]) == ("w2", -5, 7)


@pytest.mark.parametrize("body", [
    b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb({"sq": 1, "pub": "w"}),
    msgpack.packb({"sq": -1, "pub": "w", "tm": 0}), msgpack.packb({"sq": 1, "pub": "", "tm": 0}),
    msgpack.packb({"sq": 1, "pub": "w", "tm": 2**63}), msgpack.packb({"sq": 1, "pub": 3, "tm": 0}),
    msgpack.packb({"sq": True, "pub": "w", "tm": 0}), msgpack.packb({1: 2}),
])  # fmt: skip
def test_message_mark_is_none_for_what_carries_no_mark(body: bytes) -> None:
    assert message_mark(body) is None


# --------------------------------------------------------------------------- the buffer


def test_the_buffer_numbers_messages_and_counts_their_bytes() -> None:
    pub = Publisher()
    buf = ReplayBuffer(60.0, 1 << 20)
    msgs = [pub.sample() for _ in range(5)]
    for i, (topic, body) in enumerate(msgs):
        assert buf.add(topic, body, float(i))
    assert (len(buf), buf.first, buf.end, buf.streams) == (5, 0, 5, 1)
    assert buf.bytes == sum(len(t) + len(b) + ENTRY_OVERHEAD for t, b in msgs)
    assert [e[3] for e in buf.entries_from(3)] == [3, 4]
    assert buf.oldest_age(10.0) == 10.0


def test_the_buffer_evicts_the_oldest_past_its_byte_bound() -> None:
    pub = Publisher()
    topic, body = pub.sample()
    size = len(topic) + len(body) + ENTRY_OVERHEAD
    buf = ReplayBuffer(60.0, 3 * size)
    buf.add(topic, body, 0.0)
    for _ in range(4):
        buf.add(*pub.sample(), 0.0)
    assert (len(buf), buf.first, buf.end, buf.evicted) == (3, 2, 5, 2)
    assert buf.bytes == 3 * size
    assert [e[3] for e in buf.entries_from(0)] == [2, 3, 4]  # asked from an evicted one


def test_the_buffer_evicts_by_age_on_add_and_on_its_timer() -> None:
    pub = Publisher()
    buf = ReplayBuffer(10.0, 1 << 30)
    buf.add(*pub.sample(), 0.0)
    buf.add(*pub.sample(), 5.0)
    assert buf.next_deadline() == 10.0
    buf.on_timer(9.99)
    assert len(buf) == 2
    buf.on_timer(10.0)  # exactly replay_s old: still held
    assert len(buf) == 2
    buf.on_timer(10.01)
    assert (len(buf), buf.first, buf.next_deadline()) == (1, 1, 15.0)
    buf.add(*pub.sample(), 16.0)  # an add evicts too
    assert ([e[3] for e in buf.entries_from(0)], buf.evicted) == ([2], 2)
    buf.on_timer(100.0)
    assert (len(buf), buf.bytes, buf.streams, buf.next_deadline()) == (0, 0, 0, None)


def test_the_buffer_skips_bodies_without_a_mark_and_counts_capture_loss() -> None:
    pub = Publisher()
    buf = ReplayBuffer(60.0, 1 << 20)
    assert not buf.add(TOPIC, b"junk", 0.0)
    msgs = [pub.sample() for _ in range(6)]
    for i in (0, 1, 4, 5):  # 2 and 3 never reached the buffer
        buf.add(*msgs[i], 0.0)
    restarted = Publisher(t0_ns=10**13)
    buf.add(*restarted.sample(), 0.0)  # sq 0 again: a restart, not a loss
    assert (buf.skipped, buf.lost, len(buf)) == (1, 2, 5)


def test_the_buffer_refuses_bounds_of_zero() -> None:
    with pytest.raises(UsageError):
        ReplayBuffer(0.0, 1)
    with pytest.raises(UsageError):
        ReplayBuffer(1.0, 0)


# --------------------------------------------------------------------------- the protocol


def test_a_request_round_trips_and_takes_topics_as_str_too() -> None:
    req = ReplayRequest("abc-1", {("w1", TOPIC): (5, 3)}, (b"event/",), 1 << 16)
    assert decode_request(req.encode()) == req
    assert decode_request(NextRequest("abc-1").encode()) == NextRequest("abc-1")
    other = msgpack.packb({"op": "replay", "id": "x", "after": [["w1", TOPIC.decode(), 3, 5]]})
    assert decode_request(other) == ReplayRequest("x", {("w1", TOPIC): (5, 3)})


@pytest.mark.parametrize(("request_map", "said"), [
    ({"op": "nope", "id": "a"}, "'op' must be one of replay, replay_next"),
    ({"op": "replay", "id": "a/b"}, "'id' must be 1 to 64 letters"),
    ({"op": "replay", "id": "a", "after": [["w", b"t/", 1]]}, "after[0] must be"),
    ({"op": "replay", "id": "a", "after": [["", b"t/", 1, 2]]}, "non-empty str"),
    ({"op": "replay", "id": "a", "after": [["w", 5, 1, 2]]}, "topic (bin or str)"),
    ({"op": "replay", "id": "a", "after": [["w", b"t/", -1, 2]]}, "after[0] sq"),
    ({"op": "replay", "id": "a", "max_bytes": 10}, "'max_bytes' must be an integer in"),
    ({"op": "replay", "id": "a", "new": "sample/"}, "'new' must be a list"),
])  # fmt: skip
def test_a_bad_request_says_what_is_wrong(request_map: dict[str, object], said: str) -> None:
    with pytest.raises(UsageError, match=re.escape(said)):
        decode_request(msgpack.packb(request_map))
    with pytest.raises(UsageError, match="one MessagePack map"):
        decode_request(b"\xc1")


# --------------------------------------------------------------------------- the server


def reply_map(out: object) -> dict[str, object]:
    assert isinstance(out, Reply)
    m = msgpack.unpackb(out.body, raw=False)
    assert isinstance(m, dict)
    return m


def replayed_in(out: object) -> list[tuple[bytes, bytes]]:
    m = reply_map(out)
    assert m["ok"] is True, m
    return [(t, b) for t, b in m["m"]]  # type: ignore[attr-defined]


def service_with(n: int, max_bytes: int = 1 << 20) -> tuple[ReplayService, Publisher, list[
        tuple[bytes, bytes]]]:  # fmt: skip
    pub = Publisher()
    svc = ReplayService(ReplayBuffer(60.0, max_bytes))
    msgs = [pub.sample() for _ in range(n)]
    for topic, body in msgs:
        svc.captured([topic, body], 0.0)
    return svc, pub, msgs


def start(svc: ReplayService, req: ReplayRequest, now: float = 1.0,
          subscribe_first: bool = False) -> list[object]:  # fmt: skip
    """Request, subscription (either first) and the marker back through the capture."""
    sub = b"\x01" + marker_topic(req.id)
    if subscribe_first:
        svc.subscription(sub, now)
    svc.request(ENV, req.encode(), now)
    if not subscribe_first:
        assert svc.take_outputs() == []  # waits for the subscription
        svc.subscription(sub, now)
    out = svc.take_outputs()
    assert out == [PublishMarker(marker_topic(req.id))]
    svc.captured([marker_topic(req.id), b""], now)
    return list(svc.take_outputs())


@pytest.mark.parametrize("subscribe_first", [False, True])
def test_a_replay_brings_what_follows_the_mark_up_to_the_marker(subscribe_first: bool) -> None:
    svc, pub, msgs = service_with(10)
    mark = message_mark(msgs[3][1])
    assert mark is not None
    req = ReplayRequest("r1", {("w1", TOPIC): (mark[1], mark[2])})
    (out,) = start(svc, req, subscribe_first=subscribe_first)
    assert isinstance(out, Reply) and out.envelope == ENV
    assert seqs(replayed_in(out)) == [4, 5, 6, 7, 8, 9]
    m = reply_map(out)
    assert (m["end"], m["sent"], m["evicted"], m["id"]) == (True, 6, 0, "r1")
    # after the marker: live for the client, never replayed
    svc.captured(list(pub.sample()), 2.0)
    assert svc.stats(2.0)["replays"] == 1 and svc.stats(2.0)["under_way"] == 0


def test_streams_not_stored_are_replayed_only_for_the_new_prefixes() -> None:
    pub = Publisher()
    svc = ReplayService(ReplayBuffer(60.0, 1 << 20))
    for tag in ("A", "B", "A", "B"):
        svc.captured(list(pub.sample(tag)), 0.0)
    (out,) = start(svc, ReplayRequest("r1"))
    assert replayed_in(out) == []
    (out,) = start(svc, ReplayRequest("r2", new=(b"sample/p1/B/",)))
    assert marks_of(replayed_in(out)) == [("w1", b"sample/p1/B/", 0), ("w1", b"sample/p1/B/", 1)]


def test_a_restarted_publisher_is_replayed_after_the_old_runs_tail() -> None:
    """``sq`` starts again at 0 under the same name; ``tm`` goes on, so marks still order."""
    old = Publisher()
    svc = ReplayService(ReplayBuffer(60.0, 1 << 20))
    first = [old.sample() for _ in range(5)]
    new = Publisher(t0_ns=old.t_ns + 10**9)
    second = [new.sample() for _ in range(3)]
    for topic, body in first + second:
        svc.captured([topic, body], 0.0)
    mark = message_mark(first[2][1])
    assert mark is not None
    (out,) = start(svc, ReplayRequest("r1", {("w1", TOPIC): (mark[1], mark[2])}))
    assert seqs(replayed_in(out)) == [3, 4, 0, 1, 2]


def test_replies_are_cut_at_max_bytes_and_continued_on_next() -> None:
    svc, _, msgs = service_with(50)
    per = len(msgs[0][0]) + len(msgs[0][1])
    req = ReplayRequest("r1", {("w1", TOPIC): (0, 0)}, max_bytes=1 << 12)
    got: list[tuple[bytes, bytes]] = []
    (out,) = start(svc, req)
    while True:
        assert isinstance(out, Reply)
        part = replayed_in(out)
        assert sum(len(t) + len(b) for t, b in part) < (1 << 12) + per
        got += part
        if reply_map(out)["end"]:
            break
        svc.request(ENV, NextRequest("r1").encode(), 2.0)
        (out,) = svc.take_outputs()
    assert seqs(got) == list(range(50))  # the mark (0, 0) is before every message


def test_messages_evicted_during_a_replay_are_skipped_and_counted() -> None:
    pub = Publisher()
    per = len(TOPIC) + len(Publisher().sample()[1]) + ENTRY_OVERHEAD
    # (bodies from sq 128 on are one byte longer: room for those, not for one more message)
    svc = ReplayService(ReplayBuffer(60.0, 100 * per + 100))
    for _ in range(100):
        svc.captured(list(pub.sample()), 0.0)
    (out,) = start(svc, ReplayRequest("r1", {("w1", TOPIC): (0, 0)}, max_bytes=1 << 12))
    first = seqs(replayed_in(out))
    assert 0 < len(first) < 80 and not reply_map(out)["end"]
    for _ in range(80):  # pushes the 80 oldest out meanwhile, some not replayed yet
        svc.captured(list(pub.sample()), 1.5)
    got = []
    while True:
        svc.request(ENV, NextRequest("r1").encode(), 2.0)
        (out,) = svc.take_outputs()
        got += seqs(replayed_in(out))
        if reply_map(out)["end"]:
            break
    assert first + got == first + list(range(80, 100))  # up to the marker, not after it
    assert reply_map(out)["evicted"] == 80 - len(first)


@dataclass
class Errors:
    svc: ReplayService
    replies: list[str] = field(default_factory=list)

    def ask(self, body: bytes, now: float = 1.0) -> str:
        self.svc.request(ENV, body, now)
        (out,) = self.svc.take_outputs()
        assert isinstance(out, Reply)
        m = reply_map(out)
        assert m["ok"] is False
        return str(m["error"])


def test_the_server_refuses_what_it_cannot_serve_with_the_reason() -> None:
    e = Errors(ReplayService(ReplayBuffer(60.0, 1 << 20), max_replays=1))
    assert "bad replay request" in e.ask(b"\xc1")
    assert "no replay 'zz' under way" in e.ask(NextRequest("zz").encode())
    e.svc.request(ENV, ReplayRequest("a").encode(), 1.0)
    assert "already under way" in e.ask(ReplayRequest("a").encode())
    assert "1 replays are under way" in e.ask(ReplayRequest("b").encode())
    assert "no replay 'a' under way" in e.ask(NextRequest("a").encode())  # not started yet


def test_a_replay_whose_marker_never_comes_back_times_out_with_the_fix() -> None:
    svc = ReplayService(ReplayBuffer(60.0, 1 << 20), marker_timeout_s=5.0)
    svc.request(ENV, ReplayRequest("a").encode(), 1.0)
    assert svc.next_deadline() == 6.0
    svc.on_timer(5.9)
    assert svc.take_outputs() == []
    svc.on_timer(6.0)
    (out,) = svc.take_outputs()
    assert isinstance(out, Reply)
    error = str(reply_map(out)["error"])
    assert "subscription to its marker topic did not arrive within 5 s" in error
    assert "subscribe to 'replay/a/'" in error
    assert svc.stats(7.0)["failed"] == 1 and svc.next_deadline() is None


def test_a_replay_whose_client_stops_asking_is_forgotten() -> None:
    svc, _, _ = service_with(100)
    svc.idle_timeout_s = 10.0
    start(svc, ReplayRequest("a", {("w1", TOPIC): (0, 0)}, max_bytes=1 << 12), now=1.0)
    assert svc.next_deadline() == 11.0
    svc.on_timer(11.0)
    assert svc.take_outputs() == [] and svc.stats(11.0)["under_way"] == 0


def test_early_subscriptions_are_bounded_and_expire() -> None:
    svc = ReplayService(ReplayBuffer(60.0, 1 << 20), max_replays=1, marker_timeout_s=5.0)
    for i in range(10):
        svc.subscription(b"\x01" + marker_topic(f"s{i}"), 0.0)
    svc.subscription(b"\x00" + marker_topic("gone"), 0.0)  # unsubscriptions mean nothing
    svc.subscription(b"\x01sample/", 0.0)  # neither do other topics
    assert svc.next_deadline() == 5.0
    svc.on_timer(5.0)
    assert svc.next_deadline() is None


# --------------------------------------------------------------------------- the client


def client_reply(rid: str, messages: list[tuple[bytes, bytes]], end: bool, **extra: object
                 ) -> bytes:  # fmt: skip
    packed: bytes = msgpack.packb({"ok": True, "id": rid, "m": [list(m) for m in messages],
                                   "end": end, **extra}, use_bin_type=True)  # fmt: skip
    return packed


def drain(client: ReplayClient) -> tuple[list[tuple[bytes, bytes]], list[object]]:
    """Messages the client delivered (in order) and its other outputs."""
    delivered: list[tuple[bytes, bytes]] = []
    other: list[object] = []
    for out in client.take_outputs():
        if isinstance(out, Deliver):
            delivered += out.messages
        else:
            other.append(out)
    return delivered, other


def test_the_client_delivers_the_replay_then_the_live_messages_it_did_not_bring() -> None:
    pub = Publisher()
    msgs = [pub.sample() for _ in range(10)]
    stored = message_mark(msgs[2][1])
    assert stored is not None
    c = ReplayClient("r1", {("w1", TOPIC): (stored[1], stored[2])}, timeout_s=10.0)
    c.start(100.0)
    (req,) = c.take_outputs()
    assert isinstance(req, SendRequest)
    assert decode_request(req.body) == ReplayRequest("r1", {("w1", TOPIC): (stored[1], 2)})
    for m in msgs[5:8]:  # live, while the replay runs: held
        c.live(*m, 100.2)
    c.reply(client_reply("r1", msgs[3:5], False), 100.5)
    delivered, other = drain(c)
    assert seqs(delivered) == [3, 4] and other == [SendRequest(NextRequest("r1").encode())]
    c.live(*msgs[8], 100.7)
    c.reply(client_reply("r1", msgs[5:7], True, evicted=0), 101.0)  # 5, 6 came live too
    delivered, other = drain(c)
    assert seqs(delivered) == [5, 6, 7, 8] and other == []
    # Until the marker comes live, what was queued before it may be replayed: filtered.
    assert c.active and c.next_deadline() == 111.0
    c.live(*msgs[6], 101.1)
    c.live(*msgs[9], 101.1)
    assert seqs(drain(c)[0]) == [9]
    c.live(c.marker_topic, b"", 101.2)
    delivered, other = drain(c)
    assert delivered == []
    assert other == [ReplayEnded(True, replayed=4, held=4, duplicates=3, seconds=1.0)]
    assert not c.active and c.next_deadline() is None
    with pytest.raises(UsageError):
        c.live(*msgs[9], 102.0)


def test_the_client_gives_up_after_its_timeout_and_releases_what_it_held() -> None:
    pub = Publisher()
    msgs = [pub.sample() for _ in range(4)]
    mark = message_mark(msgs[0][1])
    assert mark is not None
    c = ReplayClient("r1", {("w1", TOPIC): (mark[1], mark[2])}, timeout_s=10.0)
    c.start(0.0)
    c.take_outputs()
    for m in msgs[:3]:
        c.live(*m, 1.0)  # msgs[0] is what the sink already stored
    assert c.next_deadline() == 10.0
    c.on_timer(9.9)
    assert c.take_outputs() == []
    c.on_timer(10.0)  # no reply at all: nothing was replayed, no marker to wait for
    delivered, other = drain(c)
    assert seqs(delivered) == [1, 2]
    assert other == [ReplayEnded(False, 0, 3, 1, 10.0, reason="no reply within 10 s")]


def test_a_client_whose_marker_never_comes_live_stops_filtering_after_its_timeout() -> None:
    pub = Publisher()
    msgs = [pub.sample() for _ in range(3)]
    c = ReplayClient("r1", {("w1", TOPIC): (0, 0)}, timeout_s=5.0)
    c.start(0.0)
    c.take_outputs()
    c.reply(client_reply("r1", msgs[:2], True), 1.0)
    assert seqs(drain(c)[0]) == [0, 1] and c.active and c.next_deadline() == 6.0
    c.on_timer(6.0)
    (ended,) = c.take_outputs()
    assert ended == ReplayEnded(True, 2, 0, 0, 1.0)
    assert not c.active


@pytest.mark.parametrize(("body", "reason"), [
    (msgpack.packb({"ok": False, "id": "r1", "error": "too many"}), "refused: too many"),
    (msgpack.packb({"ok": False, "id": None, "error": "bad request"}), "refused: bad request"),
    (msgpack.packb({"ok": True, "id": "r1", "m": [[b"t"]], "end": True}), "unreadable reply"),
    (msgpack.packb([1, 2]), "unreadable reply"),
])  # fmt: skip
def test_the_client_gives_up_on_a_refusal_or_garbage(body: bytes, reason: str) -> None:
    c = ReplayClient("r1", {})
    c.start(0.0)
    c.take_outputs()
    c.reply(msgpack.packb({"ok": True, "id": "other", "m": [], "end": True}), 0.5)  # not ours
    assert c.active and c.take_outputs() == []
    c.reply(body, 1.0)
    (ended,) = c.take_outputs()
    assert isinstance(ended, ReplayEnded) and not ended.ok and ended.reason.startswith(reason)


def test_the_client_bounds_what_it_holds_and_can_be_abandoned() -> None:
    pub = Publisher()
    c = ReplayClient("r1", {}, max_held=2)
    c.start(0.0)
    c.live(*pub.sample(), 0.0)
    assert not c.held_full
    c.live(*pub.sample(), 0.0)
    assert c.held_full
    assert c.abandon() == 2 and not c.active and c.next_deadline() is None


# --------------------------------------------------------------------------- both, on a bus


@dataclass
class SimBus:
    """The forwarder's proxy without sockets: messages pass it one at a time, in one order;
    each goes to the capture (the service) and, once the sink's data subscription is in force,
    to the sink's live queue. Replies and requests travel with delays the schedule decides."""

    svc: ReplayService
    rng: random.Random
    now: float = 0.0
    live_on: bool = False
    cut: bool = False  # the replay's marker has passed
    live: list[tuple[bytes, bytes]] = field(default_factory=list)
    to_server: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)
    subscription: bytes | None = None  # the marker's, on its way to the service

    def forward(self, topic: bytes, body: bytes) -> None:
        self.now += 0.001
        self.svc.captured([topic, body], self.now)
        self.cut = self.cut or topic.startswith(b"replay/")
        if self.live_on:
            self.live.append((topic, body))
        self.service_outputs()

    def deliver(self, what: int, client: ReplayClient) -> None:
        """One thing on its way arrives (if there is one): 1 the marker's subscription at the
        service, 2 a request at the service, 3 a reply at the client, 4 a live message."""
        if what == 1 and self.subscription is not None:
            self.svc.subscription(self.subscription, self.now)
            self.subscription = None
        elif what == 2 and self.to_server:
            self.svc.request(ENV, self.to_server.pop(0), self.now)
        elif what == 3 and self.to_client:
            client.reply(self.to_client.pop(0), self.now)
        elif what == 4 and self.live and not client.held_full:
            client.live(*self.live.pop(0), self.now)
        self.service_outputs()

    def service_outputs(self) -> None:
        for out in self.svc.take_outputs():
            if isinstance(out, PublishMarker):
                self.forward(out.topic, b"")
            else:
                assert isinstance(out, Reply)
                self.to_client.append(out.body)


@dataclass
class Outcome:
    """Per stream: ``after_mark``, every message published after the sink's mark (streams it
    had stored); ``live``, those published once its subscription was in force; ``after_cut``,
    those published after the replay's marker; ``got``, what it received (replayed, then
    live)."""

    after_mark: dict[Key, list[int]]
    live: dict[Key, list[int]]
    after_cut: dict[Key, list[int]]
    got: dict[Key, list[int]]
    ended: ReplayEnded


def run_replay(seed: int, stored_at: int, published_before: int, buffer_msgs: int,
               tags: int) -> Outcome:  # fmt: skip
    """Publish, restart a sink that stored up to ``stored_at`` of each stream, interleave
    everything at random."""
    rng = random.Random(seed)
    pub = Publisher()
    one = len(pub.sample()[1]) + len(TOPIC) + ENTRY_OVERHEAD
    pub = Publisher()
    bus = SimBus(ReplayService(ReplayBuffer(1e9, buffer_msgs * one)), rng)
    names = [f"T{i}" for i in range(tags)]
    published: dict[Key, list[tuple[int, int]]] = {}  # (tm, sq) of each message
    live: dict[Key, list[int]] = {}
    after_cut: dict[Key, list[int]] = {}
    marks: dict[Key, Mark] = {}

    def publish() -> None:
        topic, body = pub.sample(rng.choice(names))
        m = message_mark(body)
        assert m is not None
        published.setdefault((m[0], topic), []).append((m[1], m[2]))
        if m[2] == stored_at and not bus.live_on:  # what the sink stored before it stopped
            marks[(m[0], topic)] = (m[1], m[2])
        if bus.live_on:
            live.setdefault((m[0], topic), []).append(m[2])
        if bus.cut:
            after_cut.setdefault((m[0], topic), []).append(m[2])
        bus.forward(topic, body)

    for _ in range(published_before):
        publish()
    client = ReplayClient("r1", marks, timeout_s=1e9, max_bytes=1 << 12, max_held=20)
    bus.live_on = True  # the sink subscribed (and connected): live data flows to it
    bus.subscription = b"\x01" + client.marker_topic
    client.start(bus.now)
    got: list[tuple[bytes, bytes]] = []
    ended: ReplayEnded | None = None
    while ended is None:
        for out in client.take_outputs():
            if isinstance(out, SendRequest):
                bus.to_server.append(out.body)
            elif isinstance(out, Deliver):
                got += out.messages
            else:
                assert isinstance(out, ReplayEnded)
                ended = out
        if ended is not None:
            break
        step = rng.randrange(5)
        if step == 0:
            publish()
        else:
            bus.deliver(step, client)
    for _ in range(5):  # and after the replay, live data goes straight to the sink
        publish()
    got += bus.live
    have: dict[Key, list[int]] = {}
    for publisher, topic, sq in marks_of(got):
        have.setdefault((publisher, topic), []).append(sq)
    after = {k: [sq for tm, sq in v if (tm, sq) > marks[k]] for k, v in published.items()
             if k in marks}  # fmt: skip
    return Outcome(after, live, after_cut, have, ended)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), stored_at=st.integers(0, 30),
       before=st.integers(0, 300), tags=st.integers(1, 4))  # fmt: skip
def test_with_a_buffer_big_enough_the_sink_gets_each_message_after_its_mark_once(
    seed: int, stored_at: int, before: int, tags: int
) -> None:
    o = run_replay(seed, stored_at, before, 10_000, tags)
    assert o.ended.ok
    for key in o.after_mark.keys() | o.live.keys() | o.got.keys():
        # stored before: all that followed; new: from the subscription on (not replayed)
        want = o.after_mark[key] if key in o.after_mark else o.live[key]
        assert o.got.get(key, []) == want, key


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), stored_at=st.integers(0, 30),
       before=st.integers(50, 300), buffer_msgs=st.integers(5, 60))  # fmt: skip
def test_with_a_small_buffer_the_sink_gets_what_was_held_in_order_without_duplicates(
    seed: int, stored_at: int, before: int, buffer_msgs: int
) -> None:
    """What the buffer no longer held is missing, and nothing else: what it gets is in order
    and once each, so the sink's gap detector (seeded with the mark) records exactly what is
    missing; everything published after the marker arrives."""
    o = run_replay(seed, stored_at, before, buffer_msgs, 2)
    assert o.ended.ok
    for key, got in o.got.items():
        assert got == sorted(set(got)), key  # in order, once each
        assert set(o.after_cut.get(key, [])) <= set(got), key
        if key in o.after_mark:
            assert set(got) <= set(o.after_mark[key]), key
        else:
            assert got == o.live[key], key


# --------------------------------------------------------------------------- [bus] keys


def bus(text: str) -> cfg.BusConfig:
    plc = '\n[[plc]]\nname = "p"\naddress = "10.0.0.5"\n  [[plc.tag]]\n  name = "T"\n'
    return cfg.parse_config(text + plc, "t.toml", sink_kinds={}).bus


def test_replay_keys_default_to_60_s_and_64_mib_and_zero_disables() -> None:
    d = bus("")
    assert (d.replay_s, d.replay_bytes, d.replay) == (60.0, 64 << 20, True)
    assert bus("[bus]\nreplay_s = 0\n").replay is False
    assert bus("[bus]\nreplay_bytes = 0\n").replay is False
    assert bus("[bus]\nreplay_s = 2.5\nreplay_bytes = 1000\n").replay_bytes == 1000


@pytest.mark.parametrize(("line", "said"), [
    ("replay_s = -1", "replay_s = -1 is below the 0 s minimum"),
    ("replay_s = 1e6", "replay_s = 1000000 is above the 86400 s maximum"),
    ('replay_bytes = "64 MiB"', "replay_bytes must be an integer"),
    ("replay_bytes = 1.5", "replay_bytes must be an integer"),
])  # fmt: skip
def test_bad_replay_keys_are_errors_naming_the_key(line: str, said: str) -> None:
    with pytest.raises(ConfigError) as err:
        bus(f"[bus]\n{line}\n")
    assert said in str(err.value), str(err.value)
    assert DEFAULT_REPLY_BYTES == 1 << 20
