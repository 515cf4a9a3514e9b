"""Tag size/type discovery (acquisition/resolve.py) driven against the simulator's pure explicit
target: atomic types, arrays, BOOL arrays, UDTs (with nested templates), continuation of the
symbol listing, unknown tags; and the per-PLC ``TypeCache`` against a fake controller built from
the logix_objects encoders, counting the requests N consumers cost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from pyconpro.acquisition import cip, epath
from pyconpro.acquisition.discovery import ListingLimits
from pyconpro.acquisition.logix_controller import DEFAULT_REPLY_LIMIT, LogixController
from pyconpro.acquisition.logix_objects import (
    SymbolInstance,
    TemplateAttributes,
    TemplateReadRequest,
    encode_attribute_results,
    encode_symbol_instances,
    encode_template_definition,
    parse_attribute_ids,
)
from pyconpro.acquisition.logix_types import DINT, REAL, ArrayType, LogixType, StructType, byte_size
from pyconpro.acquisition.resolve import (
    SYMBOL_CLASS,
    Answer,
    CacheRequest,
    NotResolved,
    Resolved,
    ResolverRequest,
    Result,
    TagResolver,
    TypeCache,
)
from pyconpro.simulator.faults import endless_listing_reply
from pyconpro.simulator.tags import default_store


def drive(r: TagResolver, answer: Callable[[bytes], cip.Reply]) -> Result:
    """Run a ``TagResolver`` to its result; ``answer(message) -> cip.Reply``."""
    r.start()
    for _ in range(5000):
        outs = r.take_outputs()
        assert len(outs) == 1  # one request at a time, or the result
        (out,) = outs
        if not isinstance(out, ResolverRequest):
            assert r.take_outputs() == [] and r.result == out
            return out
        r.on_reply(answer(out.message))
    raise AssertionError("resolver does not terminate")


def first_step(r: TagResolver) -> None:
    r.start()
    assert isinstance(r.take_outputs()[0], ResolverRequest)


def reply_step(r: TagResolver, reply: cip.Reply) -> object:
    r.on_reply(reply)
    (out,) = r.take_outputs()
    return out


class Cache:
    """The request/answer view of a ``TypeCache`` the tests below were written against, over
    its ``take_outputs()``: requests are queued (never more than one in flight), answers are
    returned by the input that settled them."""

    def __init__(self) -> None:
        self.cache = TypeCache()
        self.requests_out: list[CacheRequest] = []

    @property
    def generation(self) -> int:
        return self.cache.generation

    @property
    def requests(self) -> int:
        return self.cache.requests

    @property
    def hits(self) -> int:
        return self.cache.hits

    @property
    def listings(self) -> int:
        return self.cache.listings

    @property
    def waiting(self) -> int:
        return self.cache.waiting

    @property
    def complete(self) -> bool:
        return self.cache.complete

    def snapshot(self) -> dict[str, int | bool]:
        return self.cache.snapshot()

    def forget(self, waiter: int) -> None:
        self.cache.forget(waiter)

    def _drain(self) -> list[Answer]:
        answers: list[Answer] = []
        for out in self.cache.take_outputs():
            if isinstance(out, CacheRequest):
                self.requests_out.append(out)
                assert len(self.requests_out) == 1  # one request in flight per PLC
            else:
                answers.append(out)
        return answers

    def resolve(self, tag: str, waiter: int) -> Result | None:
        self.cache.resolve(tag, waiter)
        answers = self._drain()
        assert all(a.waiter == waiter for a in answers)
        return answers[0].result if answers else None

    def take_request(self) -> CacheRequest | None:
        self._drain()
        return self.requests_out.pop(0) if self.requests_out else None

    def on_reply(self, token: int, reply: cip.Reply) -> list[Answer]:
        self.cache.on_reply(token, reply)
        return self._drain()

    def on_error(self, token: int, reason: str) -> list[Answer]:
        self.cache.on_error(token, reason)
        return self._drain()

    def invalidate(self) -> None:
        self.cache.invalidate()
        self._drain()

    def refresh_for(self, generation: int | None) -> bool:
        done = self.cache.refresh_for(generation)
        self._drain()
        return done


def run(tag: str, *, reply_limit: int | None = None) -> tuple[Resolved | NotResolved, int]:
    store = default_store()
    target = LogixController(store, reply_limit=reply_limit or DEFAULT_REPLY_LIMIT)
    r = TagResolver(tag)
    result = drive(r, lambda m: cip.Reply.decode(target.handle(m, 0.0)))
    assert isinstance(result, (Resolved, NotResolved))
    return result, r.requests


@pytest.mark.parametrize("name", ["Counter", "Sine", "Array10", "Big", "Matrix", "Cube", "Bits",
                                  "Message", "Motor", "Station", "Large", "counter"])
def test_resolves_type_and_size_like_the_store(name: str) -> None:
    store = default_store()
    expected = store.find(name)
    assert expected is not None
    got, _ = run(name)
    assert isinstance(got, Resolved), got
    assert got.tag_bytes == expected.size()
    assert byte_size(got.tag_type) == expected.size()
    assert got.tag_type.name == expected.type.name


def test_small_replies_force_continuation() -> None:
    got, requests = run("Heartbeat", reply_limit=120)
    assert isinstance(got, Resolved) and got.tag_bytes == 4
    assert requests > 2


def test_unknown_tag_is_permanent() -> None:
    got, _ = run("NoSuchTag")
    assert isinstance(got, NotResolved) and got.permanent and "NoSuchTag" in got.message


def test_error_reply_is_reported() -> None:
    r = TagResolver("X")
    first_step(r)
    got = reply_step(r, cip.Reply(0x55, 0x08))
    assert isinstance(got, NotResolved) and "size" in got.message


def test_garbage_reply_is_transient() -> None:
    r = TagResolver("X")
    first_step(r)
    got = reply_step(r, cip.Reply(0x55, 0x00, (), b"\x01\x02\x03"))
    assert isinstance(got, NotResolved) and not got.permanent


# =============================================================================================
# TypeCache: one shared lookup per PLC
# =============================================================================================

POSITION = StructType.build("Position", [("X", "REAL"), ("Y", "REAL"), ("Homed", "BOOL")],
                            instance_id=0x101, handle=0x1111)
AXIS = StructType.build("Axis", [("Pos", POSITION), ("Speed", "REAL"), ("Flags", "BOOL", 32)],
                        instance_id=0x102, handle=0x2222)
CELL = StructType.build("Cell", [("A", AXIS), ("B", AXIS), ("Count", "DINT")],
                        instance_id=0x103, handle=0x3333)
SYMBOL_ATTRS = (1, 2, 7, 8)


class FakePlc:
    """A controller's explicit answers, built from the logix_objects encoders: the Symbol
    listing in pages of ``page`` symbols (0x06 while more follow), template attributes, and
    template definitions in chunks of ``chunk`` bytes. ``log`` records every request."""

    def __init__(self, tags: dict[str, LogixType], *, page: int = 20, chunk: int = 64) -> None:
        self.symbols = [SymbolInstance.for_tag(100 + 12 * i, name, t)
                        for i, (name, t) in enumerate(tags.items())]
        self.structs: dict[int, StructType] = {}
        for t in tags.values():
            self._collect(t)
        self.page = page
        self.chunk = chunk
        self.log: list[str] = []

    def _collect(self, t: LogixType) -> None:
        if isinstance(t, ArrayType):
            self._collect(t.element)
        elif isinstance(t, StructType):
            self.structs[t.instance_id] = t
            for m in t.members:
                self._collect(m.type)

    @property
    def symbol_pages(self) -> int:
        return -(-len(self.symbols) // self.page)

    def answer(self, message: bytes) -> cip.Reply:
        req = cip.Request.decode(message)
        segments = epath.decode_path(req.path)
        cls, inst = (s.value for s in segments if isinstance(s, epath.LogicalSegment))
        if cls == SYMBOL_CLASS:
            assert req.service == cip.Service.GET_INSTANCE_ATTRIBUTE_LIST
            assert parse_attribute_ids(req.data) == SYMBOL_ATTRS
            self.log.append(f"symbols {inst}")
            rest = [s for s in self.symbols if s.instance_id >= inst]
            more = len(rest) > self.page
            return cip.Reply(req.service, 0x06 if more else 0x00, (),
                             encode_symbol_instances(rest[:self.page], SYMBOL_ATTRS))
        st = self.structs[inst]
        definition = encode_template_definition(st)
        if req.service == cip.Service.GET_ATTRIBUTE_LIST:
            self.log.append(f"attributes 0x{inst:03X}")
            return cip.Reply(req.service, 0, (), encode_attribute_results(
                TemplateAttributes.for_struct(st).results()))
        read = TemplateReadRequest.parse(req.data)
        self.log.append(f"definition 0x{inst:03X} @{read.offset}")
        chunk = definition[read.offset:read.offset + min(read.length, self.chunk)]
        more = read.offset + len(chunk) < len(definition)
        return cip.Reply(req.service, 0x06 if more else 0x00, (), chunk)

    def requests(self, prefix: str) -> int:
        return sum(1 for line in self.log if line.startswith(prefix))


def many_tags(n: int) -> dict[str, LogixType]:
    """``n`` tags: DINTs, REAL arrays, and every fifth one a nested UDT (3 templates)."""
    tags: dict[str, LogixType] = {}
    for i in range(n):
        tags[f"Tag{i:03d}"] = (CELL if i % 5 == 0 else ArrayType(REAL, (3,)) if i % 5 == 1
                               else AXIS if i % 5 == 2 else DINT)
    return tags


def serve(cache: Cache, plc: FakePlc, *, arrivals: list[tuple[str, int]] | None = None,
          max_steps: int = 10_000) -> dict[int, Result]:
    """Answer every request the cache asks until it asks nothing; ``arrivals`` (tag, waiter)
    are queued one per reply (consumers that turn up while the listing is under way)."""
    got: dict[int, Result] = {}
    pending = list(arrivals or [])
    for _ in range(max_steps):
        if pending:
            tag, waiter = pending.pop(0)
            hit = cache.resolve(tag, waiter)
            if hit is not None:
                got[waiter] = hit
        req = cache.take_request()
        if req is None:
            if not pending:
                return got
            continue
        assert cache.take_request() is None  # one request in flight per PLC
        for a in cache.on_reply(req.token, plc.answer(req.message)):
            assert isinstance(a.waiter, int) and a.waiter not in got
            got[a.waiter] = a.result
    raise AssertionError("the cache does not settle")


def resolver_requests(plc: FakePlc, tag: str) -> int:
    """What the one-tag ``TagResolver`` costs for ``tag`` (the worker's lookup before)."""
    r = TagResolver(tag)
    drive(r, plc.answer)
    return r.requests


def check(result: Result | None, t: LogixType) -> None:
    assert isinstance(result, Resolved), result
    assert result.tag_type == t and result.tag_bytes == byte_size(t)


def test_n_consumers_cost_symbol_pages_plus_templates_not_n_listings() -> None:
    tags = many_tags(300)
    plc = FakePlc(tags, page=20)
    consumers = list(tags)[-200:]  # the last 200: their symbols are spread over most pages
    cache = Cache()
    for waiter, tag in enumerate(consumers):
        assert cache.resolve(tag, waiter) is None
    got = serve(cache, plc)
    for waiter, tag in enumerate(consumers):
        check(got[waiter], tags[tag])
    # every page once, every template's attributes once, every definition read once
    template_requests = sum(1 + -(-len(encode_template_definition(st)) // plc.chunk)
                            for st in plc.structs.values())
    assert plc.requests("symbols") == plc.symbol_pages == 15
    assert plc.requests("attributes") == len(plc.structs) == 3
    assert len(plc.log) == cache.requests == plc.symbol_pages + template_requests
    # before: each consumer walked the listing to its tag and read its templates itself
    before = sum(resolver_requests(FakePlc(tags, page=20), tag) for tag in consumers)
    assert before > 20 * cache.requests
    assert cache.snapshot()["listings"] == 1


def test_consumers_arriving_during_the_listing_share_it() -> None:
    tags = many_tags(120)
    plc = FakePlc(tags, page=10)
    cache = Cache()
    arrivals = [(tag, i) for i, tag in enumerate(reversed(list(tags)))]  # last tag first
    got = serve(cache, plc, arrivals=arrivals)
    assert len(got) == len(tags)
    for tag, waiter in arrivals:
        check(got[waiter], tags[tag])
    assert plc.requests("symbols") == plc.symbol_pages
    assert plc.requests("attributes") == 3
    assert cache.hits > 0 and cache.listings == 1


def test_hits_need_no_request_and_a_missing_tag_is_permanent_once_the_listing_is_complete(
) -> None:
    tags = many_tags(30)
    plc = FakePlc(tags, page=8)
    cache = Cache()
    cache.resolve("Tag029", 1)
    cache.resolve("Tag010", 2)
    serve(cache, plc)
    assert cache.complete
    sent = len(plc.log)
    check(cache.resolve("tag010", 2), CELL)  # case-insensitive like Logix
    check(cache.resolve("TAG029", 3), DINT)
    check(cache.resolve("Tag012", 5), AXIS)  # its template was read as a member of Cell
    missing = cache.resolve("NoSuchTag", 4)
    assert isinstance(missing, NotResolved) and missing.permanent and "NoSuchTag" in missing.message
    assert cache.take_request() is None and len(plc.log) == sent and cache.waiting == 0


def test_the_listing_stops_at_the_last_wanted_tag_and_resumes_where_it_stopped() -> None:
    tags = many_tags(100)
    plc = FakePlc(tags, page=10)
    cache = Cache()
    cache.resolve("Tag003", 1)
    got = serve(cache, plc)
    check(got[1], DINT)
    assert plc.log == ["symbols 0"] and not cache.complete
    cache.resolve("Tag095", 2)
    got = serve(cache, plc)
    check(got[2], CELL)
    symbol_requests = [line for line in plc.log if line.startswith("symbols")]
    # page 0 is not read again: the next pages continue from the last instance + 1
    assert symbol_requests == ["symbols 0"] + [f"symbols {100 + 12 * (10 * k - 1) + 1}"
                                               for k in range(1, 10)]


def test_nested_templates_are_read_once_and_a_parent_definition_is_not_read_again() -> None:
    plc = FakePlc({"C": CELL, "A": AXIS, "P": POSITION}, chunk=16)
    cache = Cache()
    for waiter, tag in enumerate(("C", "A", "P")):
        cache.resolve(tag, waiter)
    got = serve(cache, plc)
    check(got[0], CELL)
    check(got[1], AXIS)
    check(got[2], POSITION)
    for tid, st in plc.structs.items():
        size = len(encode_template_definition(st))
        assert plc.requests(f"attributes 0x{tid:03X}") == 1
        assert plc.requests(f"definition 0x{tid:03X}") == -(-size // 16)


def test_invalidate_ignores_old_replies_keeps_waiters_and_refills_from_instance_zero() -> None:
    drive_before = StructType.build("Drive", [("Speed", "REAL"), ("Count", "DINT")],
                                    instance_id=0x100, handle=1)
    drive_after = StructType.build("Drive", [("Speed", "REAL"), ("Count", "DINT"),
                                             ("Batch", "DINT")], instance_id=0x100, handle=2)
    before: dict[str, LogixType] = {"Drive": drive_before, "Spare": DINT}
    after: dict[str, LogixType] = {"Drive": drive_after, "Spare": DINT}
    old, new = FakePlc(before, page=1), FakePlc(after, page=1)
    cache = Cache()
    cache.resolve("Drive", 1)
    check(serve(cache, old)[1], before["Drive"])
    assert cache.generation == 1
    cache.resolve("Other", 2)  # a miss in flight when the tag table changes
    stale = cache.take_request()
    assert stale is not None
    cache.invalidate()
    assert cache.generation == 2 and cache.waiting == 1
    assert cache.on_reply(stale.token, old.answer(stale.message)) == []  # old generation
    assert cache.on_error(stale.token, "late") == []
    cache.resolve("Drive", 3)
    got = serve(cache, new)
    check(got[3], after["Drive"])
    assert isinstance(got[2], NotResolved) and got[2].permanent
    assert new.log[0] == "symbols 0" and cache.listings == 2


def test_a_doubt_refills_once_for_every_consumer_of_the_same_generation() -> None:
    tags = many_tags(60)
    plc = FakePlc(tags, page=10)
    cache = Cache()
    for waiter, tag in enumerate(tags):
        cache.resolve(tag, waiter)
    serve(cache, plc)
    generation = cache.generation
    first_fill = len(plc.log)
    # a download: 60 consumers get a size reject (or a watchdog), one after the other
    invalidated = [cache.refresh_for(generation) for _ in tags]
    assert invalidated == [True] + [False] * 59 and cache.generation == generation + 1
    for waiter, tag in enumerate(tags):
        cache.resolve(tag, waiter)
    got = serve(cache, plc)
    assert len(got) == 60 and len(plc.log) == 2 * first_fill  # refilled once, not 60 times
    # an answer of the new generation doubted again refills again
    assert cache.refresh_for(cache.generation) is True


def test_a_request_error_fails_every_waiter_transiently() -> None:
    cache = Cache()
    cache.resolve("A", 1)
    cache.resolve("B", 2)
    req = cache.take_request()
    assert req is not None
    answers = cache.on_error(req.token, "session lost")
    assert {a.waiter for a in answers} == {1, 2} and cache.waiting == 0
    assert all(isinstance(a.result, NotResolved) and not a.result.permanent
               and "session lost" in a.result.message for a in answers)
    assert cache.take_request() is None


@pytest.mark.parametrize(("status", "permanent"), [(0x08, True), (0x05, True), (0x01, False)])
def test_a_refused_listing_fails_the_waiters_whose_symbol_is_unknown(status: int,
                                                                    permanent: bool) -> None:
    plc = FakePlc(many_tags(30), page=10)
    cache = Cache()
    cache.resolve("Tag001", 1)
    serve(cache, plc)
    cache.resolve("Tag025", 2)
    req = cache.take_request()
    assert req is not None
    (a,) = cache.on_reply(req.token, cip.Reply(0x55, status))
    assert a.waiter == 2 and isinstance(a.result, NotResolved)
    assert a.result.permanent is permanent and "'size'" in a.result.message
    # the listing goes on from where it was the next time
    cache.resolve("Tag025", 3)
    got = serve(cache, plc)
    check(got[3], CELL)


def test_garbage_replies_are_transient() -> None:
    cache = Cache()
    cache.resolve("X", 1)
    req = cache.take_request()
    assert req is not None
    (a,) = cache.on_reply(req.token, cip.Reply(0x55, 0x00, (), b"\x01\x02\x03"))
    assert isinstance(a.result, NotResolved) and not a.result.permanent
    cache.resolve("X", 1)
    req = cache.take_request()
    assert req is not None
    (a,) = cache.on_reply(req.token, cip.Reply(0x55, 0x06, (), b""))  # 0x06 and no symbol
    assert isinstance(a.result, NotResolved) and not a.result.permanent


def test_a_template_that_cannot_be_read_fails_its_waiters_and_is_read_again_next_time() -> None:
    plc = FakePlc({"C": CELL, "D": DINT})
    cache = Cache()
    cache.resolve("C", 1)
    cache.resolve("D", 2)
    got: dict[int, Result] = {}
    req = cache.take_request()
    assert req is not None
    got.update((a.waiter, a.result) for a in cache.on_reply(req.token, plc.answer(req.message))
               if isinstance(a.waiter, int))
    check(got[2], DINT)
    req = cache.take_request()
    assert req is not None and "template 0x103" in req.what
    (a,) = cache.on_reply(req.token, cip.Reply(0x03, 0x05))
    assert a.waiter == 1 and isinstance(a.result, NotResolved) and not a.result.permanent
    assert "0x103" in a.result.message
    cache.resolve("C", 1)
    check(serve(cache, plc)[1], CELL)


def test_forget_drops_a_waiter() -> None:
    cache = Cache()
    cache.resolve("A", 1)
    req = cache.take_request()  # asked at once
    assert req is not None
    cache.forget(1)
    assert cache.waiting == 0
    assert cache.on_reply(req.token, cip.Reply(0x55, 0x00)) == []  # nobody left to answer
    assert cache.take_request() is None


@pytest.mark.parametrize("name", ["Counter", "Sine", "Array10", "Big", "Matrix", "Cube", "Bits",
                                  "Message", "Motor", "Station", "Large", "CellStatus", "Hidden"])
def test_the_cache_answers_like_the_one_tag_resolver_on_the_simulated_controller(
        name: str) -> None:
    target = LogixController(default_store(), reply_limit=200)
    cache = Cache()
    got = cache.resolve(name, 1)
    while got is None:
        req = cache.take_request()
        assert req is not None
        for a in cache.on_reply(req.token, cip.Reply.decode(target.handle(req.message, 0.0))):
            got = a.result
    expected, _ = run(name, reply_limit=200)
    assert got == expected


def test_the_cache_speaks_through_take_outputs_in_order() -> None:
    cache = TypeCache()
    cache.resolve("A", 1)
    (req,) = cache.take_outputs()
    assert isinstance(req, CacheRequest) and req.what == "symbols from instance 0"
    cache.resolve("B", 2)
    assert cache.take_outputs() == []  # the request in flight serves both
    cache.on_error(req.token, "session lost")
    outs = cache.take_outputs()
    answers = [o for o in outs if isinstance(o, Answer)]
    assert [type(o) for o in outs] == [Answer, Answer] and answers == outs
    assert [a.waiter for a in answers] == [1, 2]
    assert cache.take_outputs() == []  # nobody waits: nothing more is asked


# --------------------------------------------------------------------------- listing limits


def endless(mode: str) -> Callable[[bytes], cip.Reply]:
    """The simulator's endless listing fault, as replies (every page "more follows")."""
    def answer(message: bytes) -> cip.Reply:
        reply = endless_listing_reply(message, mode)
        assert reply is not None, "only the symbol listing is asked"
        return cip.Reply.decode(reply)
    return answer


def serve_until_answered(cache: TypeCache, answer: Callable[[bytes], cip.Reply]) -> list[Answer]:
    """Answer the cache's requests until it answers a waiter; the answers."""
    for _ in range(10_000):
        outs = cache.take_outputs()
        answers = [o for o in outs if isinstance(o, Answer)]
        if answers:
            assert not [o for o in outs if isinstance(o, CacheRequest)]  # nothing more asked
            return answers
        (req,) = outs
        assert isinstance(req, CacheRequest)
        cache.on_reply(req.token, answer(req.message))
    raise AssertionError("the listing is not bounded")


@pytest.mark.parametrize(("mode", "limits", "passed"), [
    ("new", ListingLimits(symbols=1000), "the limit of 1000 symbol entries"),
    ("repeat", ListingLimits(symbols=1000), "the limit of 1000 symbol entries"),
    ("new", ListingLimits(bytes=20_000), "the limit of 20000 bytes"),
])
def test_a_listing_that_never_ends_is_given_up_at_a_limit_and_its_memory_dropped(
    mode: str, limits: ListingLimits, passed: str
) -> None:
    cache = TypeCache(plc="10.0.0.5:44818", limits=limits)
    cache.resolve("Wanted", 1)
    cache.resolve("Other", 2)
    answers = serve_until_answered(cache, endless(mode))
    assert [a.waiter for a in answers] == [1, 2]
    for a in answers:
        assert isinstance(a.result, NotResolved) and not a.result.permanent  # it backs off
        assert f"the tag listing of PLC 10.0.0.5:44818 passed {passed}" in a.result.message
        assert "give the tags' 'size' (or 'type')" in a.result.message
    snap = cache.snapshot()
    assert snap["given_up"] == 1 and snap["symbols"] == 0 and snap["waiting"] == 0
    assert cache.requests <= 1000 // 8 + 2  # pages of 8 up to the limit, not one more
    # The next try (after the consumer's back-off) reads the listing from its start again.
    cache.resolve("Wanted", 1)
    (req,) = cache.take_outputs()
    assert isinstance(req, CacheRequest) and req.what == "symbols from instance 0"
    assert cache.snapshot()["listings"] == 2


def test_a_template_definition_that_never_ends_is_given_up_at_the_byte_limit() -> None:
    motor = next(iter(FakePlc({"M": CELL}).structs.values()))
    endless_attrs = replace(TemplateAttributes.for_struct(motor), definition_size=0x3FFFFFFF)
    cache = TypeCache(plc="plc1", limits=ListingLimits(bytes=50_000))

    def answer(message: bytes) -> cip.Reply:
        req = cip.Request.decode(message)
        if req.service == cip.Service.GET_INSTANCE_ATTRIBUTE_LIST:
            return cip.Reply(req.service, 0, (), encode_symbol_instances(
                [SymbolInstance.for_tag(1, "M", motor)], SYMBOL_ATTRS))
        if req.service == cip.Service.GET_ATTRIBUTE_LIST:
            return cip.Reply(req.service, 0, (), encode_attribute_results(endless_attrs.results()))
        return cip.Reply(req.service, 0x06, (), b"\x00" * 400)  # the definition never ends

    cache.resolve("M", 1)
    [a] = serve_until_answered(cache, answer)
    assert isinstance(a.result, NotResolved) and not a.result.permanent
    assert "the tag listing of PLC plc1 passed the limit of 50000 bytes" in a.result.message
    assert cache.snapshot()["templates"] == 0 and cache.requests < 50_000 // 400 + 5


def test_max_requests_gives_up_the_same_way() -> None:
    cache = TypeCache(plc="plc1", max_requests=20)
    cache.resolve("Wanted", 1)
    [a] = serve_until_answered(cache, endless("new"))
    assert isinstance(a.result, NotResolved)
    assert "passed the limit of 20 requests" in a.result.message
    assert cache.snapshot()["generation_requests"] == 0
