"""Tag size/type discovery (workers/_resolve.py) driven against the simulator's pure explicit
target: atomic types, arrays, BOOL arrays, UDTs (with nested templates), continuation of the
symbol listing, unknown tags."""

from __future__ import annotations

import pytest

from acquisition import cip
from acquisition.explicit import ExplicitTarget
from acquisition.logix_types import byte_size
from acquisition.resolve import NotResolved, Resolved, TagResolver
from simulator.tags import default_store


def run(tag: str, *, reply_limit: int | None = None) -> tuple[Resolved | NotResolved, int]:
    store = default_store()
    target = ExplicitTarget(store, **({"reply_limit": reply_limit} if reply_limit else {}))
    r = TagResolver(tag)
    step: object = r.first()
    for _ in range(500):
        if not isinstance(step, bytes):
            return step, r.requests
        step = r.on_reply(cip.Reply.decode(target.handle(step, 0.0)))
    raise AssertionError("resolver does not terminate")


@pytest.mark.parametrize("name", ["Counter", "Sine", "Array10", "Big", "Matrix", "Cube", "Bits",
                                  "Message", "Motor", "Station", "Large", "counter"])
def test_resolves_type_and_size_like_the_store(name: str) -> None:
    store = default_store()
    expected = store.find(name)
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
    r.first()
    got = r.on_reply(cip.Reply(0x55, 0x08))
    assert isinstance(got, NotResolved) and "size" in got.message


def test_garbage_reply_is_transient() -> None:
    r = TagResolver("X")
    r.first()
    got = r.on_reply(cip.Reply(0x55, 0x00, (), b"\x01\x02\x03"))
    assert isinstance(got, NotResolved) and not got.permanent
