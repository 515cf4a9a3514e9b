"""A learned tag type is learned again when the controller's tag table may have changed (issue 6):
after a watchdog expiry, a failed request, a lost session and a 0x0109/0x0128 size reject; a
changed type is announced; a type the user gave is never re-learned (a given size only checks
the learned one)."""

from __future__ import annotations

from pyconpro.acquisition.connection import (
    ConnEvent,
    ConsumerConnection,
    Resolve,
    SendForwardOpen,
    State,
)
from pyconpro.acquisition.logix_types import (
    DINT,
    REAL,
    ArrayType,
    LogixType,
    Member,
    StructType,
    byte_size,
)

from tests.acquisition.test_connection import (
    T0,
    failure,
    make,
    ok_reply,
    pending_open,
    reject_reply,
    state,
)

# The same UDT before and after a download that appended a member.
OLD_UDT = StructType("Drive", 0x100, 0x1111, 8, (Member("Speed", REAL, 0),
                                                  Member("Count", DINT, 4)))
NEW_UDT = StructType("Drive", 0x100, 0x2222, 12, (Member("Speed", REAL, 0),
                                                   Member("Count", DINT, 4),
                                                   Member("Extra", DINT, 8)))


def events(conn: ConsumerConnection) -> list[ConnEvent]:
    return [o for o in conn.take_outputs() if isinstance(o, ConnEvent)]


def running_learned(tag_type: LogixType = OLD_UDT, now: float = T0) -> ConsumerConnection:
    conn = make(tag_type=None)
    conn.start(now)
    conn.on_resolved(now, byte_size(tag_type), tag_type)
    req = pending_open(conn)
    conn.on_forward_open_reply(now, req, ok_reply(req))
    assert conn.state is State.RUNNING
    conn.take_outputs()
    return conn


def expire_watchdog(conn: ConsumerConnection) -> float:
    assert conn.granted is not None
    at = conn.granted.watchdog_at
    conn.on_timer(at)
    assert conn.state is State.BACKOFF
    return at


def end_backoff(conn: ConsumerConnection) -> float:
    at = conn.next_deadline()
    assert at is not None
    conn.on_timer(at)
    return at


def test_after_a_watchdog_expiry_the_learned_type_is_learned_again() -> None:
    conn = running_learned()
    expire_watchdog(conn)
    conn.take_outputs()
    end_backoff(conn)
    assert conn.state is State.RESOLVING
    out = conn.take_outputs()
    assert Resolve("Count", refresh=True) in out
    ev = [o for o in out if isinstance(o, ConnEvent)]
    assert ev[-1].state_to == "RESOLVING" and "again" in ev[-1].message
    assert not [o for o in out if isinstance(o, SendForwardOpen)]  # no open with the old size


def test_a_changed_type_is_announced_and_opened_with_the_new_size() -> None:
    conn = running_learned()
    old_object = conn.tag_type
    expire_watchdog(conn)
    end_backoff(conn)
    conn.take_outputs()
    conn.on_resolved(T0 + 5, 12, NEW_UDT)
    ev = events(conn)
    assert conn.state is State.OPENING
    assert ev[-1].kind == "state" and (ev[-1].state_from, ev[-1].state_to) == ("RESOLVING",
                                                                               "OPENING")
    assert ev[-1].message == "tag type changed after a download: 8 -> 12 bytes (Drive)"
    assert conn.tag_bytes == 12 and conn.tag_type == NEW_UDT and conn.tag_type is not old_object
    assert pending_open(conn).to_params.size == 12 + 2


def test_an_unchanged_type_keeps_its_object_so_the_decoder_is_kept() -> None:
    conn = running_learned()
    kept = conn.tag_type
    expire_watchdog(conn)
    end_backoff(conn)
    conn.take_outputs()
    equal_copy = StructType(OLD_UDT.name, OLD_UDT.instance_id, OLD_UDT.handle, OLD_UDT.size,
                            OLD_UDT.members)
    conn.on_resolved(T0 + 5, 8, equal_copy)
    ev = events(conn)
    assert conn.tag_type is kept
    assert ev[-1].message == "type unchanged: 8 bytes (Drive)"


def test_same_size_new_layout_is_announced() -> None:
    other = StructType("Drive", 0x100, 0x3333, 8, (Member("Count", DINT, 0),
                                                    Member("Speed", REAL, 4)))
    conn = running_learned()
    expire_watchdog(conn)
    end_backoff(conn)
    conn.take_outputs()
    conn.on_resolved(T0 + 5, 8, other)
    assert events(conn)[-1].message == ("tag type changed after a download: 8 bytes, Drive"
                                        " with a new layout")
    assert conn.tag_type is other


def test_a_size_reject_with_a_learned_type_learns_it_again_then_opens_with_the_new_size() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 8, OLD_UDT)
    req = pending_open(conn)
    conn.take_outputs()
    # the controller was downloaded between our discovery and our Forward_Open
    conn.on_forward_open_reply(T0 + 0.1, req, reject_reply(req, 0x01, 0x0109, 14))
    out = conn.take_outputs()
    ev = [o for o in out if isinstance(o, ConnEvent)]
    assert conn.state is State.RESOLVING and Resolve("Count", refresh=True) in out
    assert (ev[-1].kind, ev[-1].cip_general, ev[-1].cip_extended) == ("reject", 0x01, 0x0109)
    assert "12 bytes" in ev[-1].message and "again" in ev[-1].message
    conn.on_resolved(T0 + 0.2, 12, NEW_UDT)
    assert "8 -> 12 bytes" in events(conn)[-1].message
    req2 = pending_open(conn)
    assert req2.to_params.size == 14 and req2.connection_serial != req.connection_serial
    conn.on_forward_open_reply(T0 + 0.3, req2, ok_reply(req2))
    assert state(conn) is State.RUNNING


def test_a_size_reject_that_survives_a_fresh_discovery_is_a_type_mismatch() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 8, OLD_UDT)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0 + 0.1, req, reject_reply(req, 0x01, 0x0109, 14))
    conn.on_resolved(T0 + 0.2, 8, OLD_UDT)  # the controller still describes 8 bytes
    req2 = pending_open(conn)
    conn.on_forward_open_reply(T0 + 0.3, req2, reject_reply(req2, 0x01, 0x0109, 14))
    assert conn.state is State.FAILED
    assert conn.failure is not None and "type mismatch" in conn.failure
    assert "12 bytes" in conn.failure and "8 bytes" in conn.failure


def test_the_refresh_allowance_is_renewed_once_the_connection_opened() -> None:
    conn = running_learned()
    expire_watchdog(conn)
    end_backoff(conn)
    conn.on_resolved(T0 + 5, 8, OLD_UDT)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0 + 5.1, req, reject_reply(req, 0x01, 0x0128, 14))
    assert conn.state is State.RESOLVING  # the earlier open reset the allowance


def test_a_request_failure_makes_the_next_attempt_learn_again() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)
    conn.on_request_error(T0 + 0.1, pending_open(conn), "session lost: EOF")
    assert conn.state is State.BACKOFF
    end_backoff(conn)
    assert state(conn) is State.RESOLVING


def test_a_lost_session_changes_nothing_now_then_waits_and_learns_again_when_back() -> None:
    conn = running_learned()
    conn.on_session_lost(T0 + 0.1)
    assert conn.state is State.RUNNING and conn.take_outputs() == []
    # a transient reject alone would retry the Forward_Open directly (next test) ...
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)
    assert state(conn) is State.WAITING and conn.next_deadline() is None
    conn.on_session_ready(T0 + 9)
    assert state(conn) is State.RESOLVING
    assert [o for o in conn.take_outputs() if isinstance(o, Resolve)] == [
        Resolve("Count", refresh=True)]


def test_a_transient_reject_alone_retries_without_discovery() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0 + 0.1, req, reject_reply(req, 0x01, 0x0203))
    end_backoff(conn)
    assert conn.state is State.OPENING


def test_session_lost_during_backoff_after_a_transient_reject_learns_again() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0 + 0.1, req, reject_reply(req, 0x01, 0x0203))
    conn.on_session_lost(T0 + 0.2)
    end_backoff(conn)  # the back-off of the reject is served, then it waits for the session
    assert conn.state is State.WAITING
    conn.on_session_ready(T0 + 5)
    assert state(conn) is State.RESOLVING


def test_a_tag_gone_after_a_download_fails_loudly() -> None:
    conn = running_learned()
    expire_watchdog(conn)
    end_backoff(conn)
    conn.on_resolve_error(T0 + 5, "tag 'Count' is not in the controller's tag list", True)
    assert conn.state is State.FAILED and "not in the controller's tag list" in failure(conn)


def test_a_failed_rediscovery_is_retried_after_backoff() -> None:
    conn = running_learned()
    expire_watchdog(conn)
    end_backoff(conn)
    conn.on_resolve_error(T0 + 5, "no session", False)
    assert conn.state is State.BACKOFF
    end_backoff(conn)
    assert state(conn) is State.RESOLVING  # still stale: never opens with the old size


def test_a_given_size_is_checked_against_the_type_learned_again_after_a_download() -> None:
    conn = make(4, tag_type=None)  # a size only: the type is learned all the same
    assert conn.learned
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0, req, ok_reply(req))
    expire_watchdog(conn)
    conn.take_outputs()
    end_backoff(conn)
    assert conn.state is State.RESOLVING
    assert Resolve("Count", refresh=True) in conn.take_outputs()
    conn.on_resolved(T0 + 5, 4, DINT)
    assert [e.message for e in events(conn)][-1] == "type unchanged: 4 bytes (DINT)"
    # a download made it a DINT[2] since: the controller refuses the 4 bytes
    req2 = pending_open(conn)
    conn.on_forward_open_reply(T0 + 5, req2, reject_reply(req2, 0x01, 0x0109, 10))
    assert state(conn) is State.RESOLVING
    dint2 = ArrayType(DINT, (2,))
    conn.on_resolved(T0 + 5.1, 8, dint2)  # the given size is now the wrong one: adopted
    assert (conn.tag_bytes, conn.tag_type) == (8, dint2)
    assert pending_open(conn).to_params.size == 10
    adopted = events(conn)[-1]
    assert (adopted.kind, adopted.cip_extended) == ("reject", 0x0109)
    assert "the given size, 4 bytes, is not the size of 'Count'" in adopted.message
    assert "adopting 8. Set size = 8" in adopted.message


def test_a_given_type_is_never_learned_again_and_adopts_its_own_size() -> None:
    conn = make(tag_type=ArrayType(REAL, (1,)))
    assert not conn.learned
    conn.start(T0)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0, req, ok_reply(req))
    expire_watchdog(conn)
    end_backoff(conn)
    assert conn.state is State.OPENING
    req2 = pending_open(conn)
    conn.on_forward_open_reply(T0 + 5, req2, reject_reply(req2, 0x01, 0x0109, 10))
    assert state(conn) is State.FAILED and "type mismatch" in failure(conn)
    assert "8 bytes" in failure(conn) and "REAL[1]" in failure(conn) and "4 bytes" in failure(conn)


def test_snapshot_says_where_the_type_came_from() -> None:
    assert running_learned().snapshot()["learned"] is True
    assert make(4, tag_type=None).snapshot()["learned"] is True  # a size only checks it
    assert make().snapshot()["learned"] is False  # a given type
