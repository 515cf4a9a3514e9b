"""The originator connection state machine (acquisition/connection.py): every (state, input)
pair, timers through deadlines on a fake clock, back-off bounds and each reject class."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, epath
from pyconpro.acquisition.connection import (
    TRANSITIONS,
    ConnEvent,
    ConsumerConnection,
    JoinGroup,
    LeaveGroup,
    Listen,
    RejectClass,
    Resolve,
    SendForwardClose,
    SendForwardOpen,
    SendHeartbeat,
    State,
    Trigger,
    Unlisten,
    classify_reject,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_types import DINT, REAL, ArrayType, LogixType
from pyconpro.acquisition.originator import BackoffPolicy, ConsumerParams, Originator, Timing

T0 = 1000.0
DEFAULT_TIMING = Timing()
DEFAULT_BACKOFF = BackoffPolicy()


def make(size: int | None = None, *, multicast: bool = False, seed: int = 1,
         rpi_us: int = 100_000, ot_rpi_us: int | None = None, multiplier: int = 1,
         tag_type: LogixType | None = DINT, timing: Timing = DEFAULT_TIMING,
         backoff: BackoffPolicy = DEFAULT_BACKOFF) -> ConsumerConnection:
    """A consumer of ``Count``. By default its type is given (DINT: nothing to learn, it
    opens at once); ``tag_type=None`` leaves the type to learn, with ``size`` given or not."""
    params = ConsumerParams(plc="plc1", tag="Count", rpi_us=rpi_us, ot_rpi_us=ot_rpi_us,
                            multiplier=multiplier, multicast=multicast, tag_bytes=size,
                            tag_type=tag_type)
    return ConsumerConnection(
        params, Originator(random.Random(seed)), timing=timing, backoff=backoff
    )


OutT = TypeVar("OutT")


def outputs_of(conn: ConsumerConnection, cls: type[OutT]) -> list[OutT]:
    return [o for o in conn.take_outputs() if isinstance(o, cls)]


def deadline(conn: ConsumerConnection) -> float:
    """The connection's next deadline, which the caller knows is set."""
    at = conn.next_deadline()
    assert at is not None
    return at


def state(conn: ConsumerConnection) -> State:
    """The state read afresh (mypy keeps ``conn.state`` narrowed across input calls)."""
    return conn.state


def failure(conn: ConsumerConnection) -> str:
    """Why the connection FAILED, which the caller knows it did."""
    assert conn.failure is not None
    return conn.failure


def watchdog_at(conn: ConsumerConnection) -> float:
    """When the open connection's T->O watchdog expires."""
    assert conn._open is not None
    return conn._open.watchdog_at


def pending_open(conn: ConsumerConnection) -> cm.ForwardOpenRequest:
    assert conn._open is not None
    return conn._open.request


def ok_reply(
    req: cm.ForwardOpenRequest,
    *,
    ot_id: int = 0x11110001,
    ot_api: int = 100_000,
    to_api: int = 100_000,
    to_id: int | None = None,
) -> cip.Reply:
    return cm.ForwardOpenSuccess(
        ot_id,
        req.to_connection_id if to_id is None else to_id,
        req.connection_serial,
        req.vendor_id,
        req.originator_serial,
        ot_api,
        to_api,
    ).to_reply()


def reject_reply(req: cm.ForwardOpenRequest, general: int, *additional: int) -> cip.Reply:
    return cm.ConnectionFailure(
        general, tuple(additional), req.connection_serial, req.vendor_id, req.originator_serial
    ).to_reply(cip.Service.FORWARD_OPEN)


def open_running(conn: ConsumerConnection, now: float = T0, **kw: int) -> cm.ForwardOpenRequest:
    conn.start(now)
    req = pending_open(conn)
    conn.on_forward_open_reply(now, req, ok_reply(req, **kw))
    assert conn.state is State.RUNNING
    return req


# --------------------------------------------------------------------------- reaching states


#: How the consumer was defined: its type given ("given"), nothing given ("learned"), or only
#: its size ("sized": the type is learned all the same, the size checked against it).
VARIANTS = ("given", "learned", "sized")


def in_state(state: State, variant: str = "given") -> ConsumerConnection:
    """A connection in ``state``. ``learned`` / ``sized``: the type (DINT) came from discovery;
    their BACKOFF follows a watchdog expiry, so the type is to be learned again."""
    if variant != "given":
        return _learned_in_state(state, 4 if variant == "sized" else None)
    conn = make()
    if state is State.IDLE:
        pass
    elif state is State.RESOLVING:
        conn = make(tag_type=None)
        conn.start(T0)
    elif state is State.OPENING:
        conn.start(T0)
    elif state is State.RUNNING:
        open_running(conn)
    elif state is State.CLOSING:
        open_running(conn)
        conn.stop(T0)
    elif state is State.BACKOFF:
        conn.start(T0)
        req = pending_open(conn)
        conn.on_forward_open_reply(T0, req, reject_reply(req, 0x01, 0x0203))
    elif state is State.FAILED:
        conn.start(T0)
        req = pending_open(conn)
        conn.on_forward_open_reply(T0, req, reject_reply(req, 0x01, 0x031F))
    elif state is State.CLOSED:
        conn.stop(T0)
    elif state is State.WAITING:
        conn.on_session_lost(T0)
        conn.start(T0)
    conn.take_outputs()
    assert conn.state is state
    return conn


def _learned_in_state(state: State, size: int | None) -> ConsumerConnection:
    conn = make(size, tag_type=None)
    if state is State.WAITING:
        conn.on_session_lost(T0)
    if state is not State.IDLE and state is not State.CLOSED:
        conn.start(T0)
    if state not in (State.IDLE, State.RESOLVING, State.CLOSED, State.WAITING):
        conn.on_resolved(T0, 4, DINT)
    if state in (State.RUNNING, State.CLOSING, State.BACKOFF):
        req = pending_open(conn)
        conn.on_forward_open_reply(T0, req, ok_reply(req))
    if state is State.CLOSING:
        conn.stop(T0)
    elif state is State.BACKOFF:
        assert conn.granted is not None
        conn.on_timer(conn.granted.watchdog_at)  # no data: the watchdog expires
    elif state is State.FAILED:
        req = pending_open(conn)
        conn.on_forward_open_reply(T0, req, reject_reply(req, 0x01, 0x031F))
    elif state is State.CLOSED:
        conn.stop(T0)
    conn.take_outputs()
    assert conn.state is state and conn.learned
    return conn


def _any_open_request(conn: ConsumerConnection) -> cm.ForwardOpenRequest:
    if conn._open is not None:
        return conn._open.request
    return cm.produced_tag_forward_open(
        tag="Count",
        tag_bytes=4,
        to_rpi_us=1,
        ot_rpi_us=1,
        connection_serial=9,
        vendor_id=1,
        originator_serial=1,
        to_connection_id=5,
    )


def _fire_timer(conn: ConsumerConnection, data_pending: bool = False) -> None:
    deadline = conn.next_deadline()
    conn.on_timer(deadline if deadline is not None else T0 + 1e6, data_pending=data_pending)


INPUTS: dict[str, Callable[[ConsumerConnection], None]] = {
    "start": lambda c: c.start(T0 + 0.01),
    "stop": lambda c: c.stop(T0 + 0.01),
    "resolved": lambda c: c.on_resolved(T0 + 0.01, 4, DINT),
    "resolve_error": lambda c: c.on_resolve_error(T0 + 0.01, "no session", permanent=False),
    "resolve_fatal": lambda c: c.on_resolve_error(T0 + 0.01, "tag not found", permanent=True),
    "open_ok": lambda c: c.on_forward_open_reply(
        T0 + 0.01, _any_open_request(c), ok_reply(_any_open_request(c))
    ),
    "open_transient": lambda c: c.on_forward_open_reply(
        T0 + 0.01, _any_open_request(c), reject_reply(_any_open_request(c), 0x01, 0x0203)
    ),
    "open_fatal": lambda c: c.on_forward_open_reply(
        T0 + 0.01, _any_open_request(c), reject_reply(_any_open_request(c), 0x01, 0x031F)
    ),
    # 0x0109 wanting 8 bytes + 2: neither the size we asked (4) nor DINT's
    "open_size": lambda c: c.on_forward_open_reply(
        T0 + 0.01, _any_open_request(c), reject_reply(_any_open_request(c), 0x01, 0x0109, 10)
    ),
    "session_lost": lambda c: c.on_session_lost(T0 + 0.01),
    "session_ready": lambda c: c.on_session_ready(T0 + 0.01),
    "request_error": lambda c: c.on_request_error(
        T0 + 0.01, c._closing if c.state is State.CLOSING else _any_open_request(c), "EOF"
    ),
    "close_reply": lambda c: c.on_forward_close_reply(
        T0 + 0.01,
        c._closing or cm.forward_close_for(_any_open_request(c)),
        cm.ForwardCloseSuccess(1, 1, 1).to_reply(),
    ),
    "data": lambda c: c.on_data(T0 + 0.01),
    "timer": _fire_timer,
    # the caller has unread datagrams: only a T->O watchdog is held, every other timer acts
    "timer_data_pending": lambda c: _fire_timer(c, data_pending=True),
}

# Written from the design (protocol.md 7.7 and ARCHITECTURE.md), not from TRANSITIONS.
EXPECTED: dict[State, dict[str, State]] = {
    State.IDLE: {"start": State.OPENING, "stop": State.CLOSED},
    State.RESOLVING: {
        "stop": State.CLOSED,
        "resolved": State.OPENING,
        "resolve_error": State.BACKOFF,
        "resolve_fatal": State.FAILED,
        "timer": State.BACKOFF,
    },
    State.OPENING: {
        "stop": State.CLOSING,
        "open_ok": State.RUNNING,
        "open_transient": State.BACKOFF,
        "open_fatal": State.FAILED,
        # the controller wants another size than the given type's: a type mismatch
        "open_size": State.FAILED,
        "request_error": State.BACKOFF,
        "timer": State.BACKOFF,
    },
    State.RUNNING: {"stop": State.CLOSING, "timer": State.RUNNING},  # first deadline: heartbeat
    State.CLOSING: {
        "close_reply": State.CLOSED,
        "request_error": State.CLOSED,
        "timer": State.CLOSED,
    },
    State.BACKOFF: {"stop": State.CLOSED, "timer": State.OPENING},
    State.FAILED: {"stop": State.CLOSED},
    State.CLOSED: {},
    # The session is down; nothing but its return (or a stop) moves the connection.
    State.WAITING: {"stop": State.CLOSED, "session_ready": State.OPENING},
}

# A type learned from the controller is learned before the first Forward_Open and again when
# it may be stale (issue 6): after a size reject (the controller wants another size: learn the
# type to check it against; it may have changed with a download), and after a watchdog expiry
# (how the learned BACKOFF is reached).
EXPECTED_LEARNED: dict[State, dict[str, State]] = {
    **EXPECTED,
    State.IDLE: {"start": State.RESOLVING, "stop": State.CLOSED},
    State.OPENING: {**EXPECTED[State.OPENING], "open_size": State.RESOLVING},
    State.BACKOFF: {"stop": State.CLOSED, "timer": State.RESOLVING},
    State.WAITING: {"stop": State.CLOSED, "session_ready": State.RESOLVING},
}
# A given size is only a check of the learned type, but where the type cannot be learned
# (refused, no answer) it is what opens the connection: no back-off, no failure.
EXPECTED_SIZED: dict[State, dict[str, State]] = {
    **EXPECTED_LEARNED,
    State.RESOLVING: {
        "stop": State.CLOSED,
        "resolved": State.OPENING,
        "resolve_error": State.OPENING,
        "resolve_fatal": State.OPENING,
        "timer": State.OPENING,
    },
}
EXPECTED_BY_VARIANT = {"given": EXPECTED, "learned": EXPECTED_LEARNED, "sized": EXPECTED_SIZED}
for _table in EXPECTED_BY_VARIANT.values():
    for _row in _table.values():
        if "timer" in _row:
            _row["timer_data_pending"] = _row["timer"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", list(INPUTS))
def test_every_state_input_pair(state: State, name: str, variant: str) -> None:
    conn = in_state(state, variant)
    INPUTS[name](conn)
    expected = EXPECTED_BY_VARIANT[variant][state].get(name, state)
    assert conn.state is expected
    events = [o for o in conn.take_outputs() if isinstance(o, ConnEvent) and o.state_to]
    if expected is state and state is not State.OPENING:
        assert events == []  # ignored inputs change nothing and say nothing
    for ev in events:  # every emitted transition is one the table allows
        assert ev.state_from is not None and ev.state_to is not None
        assert any(
            TRANSITIONS.get((State(ev.state_from), t)) is State(ev.state_to) for t in _triggers()
        )
    if expected is not state:
        assert len(events) >= 1 and events[-1].state_to == expected.value


def _triggers() -> list[Trigger]:
    return list(Trigger)


def test_resolving_then_timer_runs_back_into_resolving() -> None:
    conn = in_state(State.RESOLVING)
    _fire_timer(conn)
    assert conn.state is State.BACKOFF
    _fire_timer(conn)
    assert state(conn) is State.RESOLVING
    assert outputs_of(conn, Resolve) == [Resolve("Count")]  # asked again after back-off


def test_transition_table_has_no_exit_from_closed() -> None:
    assert not [k for k in TRANSITIONS if k[0] is State.CLOSED]
    assert {v for (s, _), v in TRANSITIONS.items() if s is State.FAILED} == {State.CLOSED}


# --------------------------------------------------------------------------- triads and ids


def test_each_forward_open_has_fresh_serial_and_to_id_originator_serial_constant() -> None:
    conn = make()
    conn.start(T0)
    seen: list[cm.ForwardOpenRequest] = []
    now = T0
    for _ in range(20):
        req = pending_open(conn)
        seen.append(req)
        conn.on_forward_open_reply(now, req, reject_reply(req, 0x01, 0x0203))
        now = deadline(conn)
        conn.on_timer(now)
    serials = [r.connection_serial for r in seen]
    ids = [r.to_connection_id for r in seen]
    assert len(set(serials)) == len(serials) and 0 not in serials
    assert len(set(ids)) == len(ids) and 0 not in ids
    assert {r.originator_serial for r in seen} == {conn.originator.serial}
    assert conn.originator.serial != 0


def test_to_ids_unique_among_live_connections_even_with_a_colliding_rng() -> None:
    class Repeating(random.Random):
        """Returns 7 three times, then counts up: forces the allocator to skip duplicates."""

        def __init__(self) -> None:
            super().__init__(0)
            self.values = [0, 7, 7, 7, 8, 9, 10, 11, 12]

        def getrandbits(self, k: int) -> int:
            return self.values.pop(0) if self.values else super().getrandbits(k)

    o = Originator(Repeating(), serial=1)
    a, b, c = o.new_connection_id(), o.new_connection_id(), o.new_connection_id()
    assert a == 7 and len({a, b, c}) == 3 and 0 not in (a, b, c)
    o.release_connection_id(a)
    assert a not in o.live_connection_ids


def test_released_serial_is_not_reused_soon() -> None:
    o = Originator(random.Random(3), serial=1, recent=4)
    first = o.new_serial()
    o.release_serial(first)
    o.rng = type(
        "R",
        (),
        {
            "vals": [first, first, 77],
            "getrandbits": lambda self, k: self.vals.pop(0),
            "random": lambda self: 0.5,
        },
    )()
    assert o.new_serial() == 77


def test_originator_serial_random_per_instance() -> None:
    assert Originator(random.Random(1)).serial != Originator(random.Random(2)).serial


# --------------------------------------------------------------------------- running


def test_open_emits_listen_and_first_heartbeat_immediately() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    assert outputs_of(conn, SendForwardOpen) == [SendForwardOpen(req)]
    conn.on_forward_open_reply(T0, req, ok_reply(req, ot_id=0xABCD0001))
    outs = conn.take_outputs()
    assert Listen(req.to_connection_id, 4) in outs
    hbs = [o for o in outs if isinstance(o, SendHeartbeat)]
    assert len(hbs) == 1 and hbs[0].port == 2222
    d = class1.Class1Datagram.decode(hbs[0].datagram)
    assert (d.connection_id, d.sequence, d.data) == (0xABCD0001, 1, b"")


def test_heartbeats_on_absolute_deadlines_without_drift() -> None:
    conn = make(ot_rpi_us=250_000)
    open_running(conn, ot_api=250_000)
    conn.take_outputs()
    deadlines = []
    for k in range(1, 41):
        at = deadline(conn)
        deadlines.append(at)
        conn.on_data(at)  # data keeps flowing, so only heartbeats are due
        conn.on_timer(at + 0.003)  # always a little late
        hb = outputs_of(conn, SendHeartbeat)
        assert len(hb) == 1
        assert class1.Class1Datagram.decode(hb[0].datagram).sequence == k + 1
    assert deadlines == pytest.approx([T0 + 0.25 * k for k in range(1, 41)])
    assert conn.counters.heartbeats_late == 0


def test_late_by_several_periods_sends_one_heartbeat_and_counts_the_skipped() -> None:
    conn = make(ot_rpi_us=100_000)
    open_running(conn, ot_api=100_000)
    conn.on_data(T0 + 0.05)
    conn.take_outputs()
    conn.on_timer(T0 + 0.35)  # slots 1, 2, 3 passed
    [hb] = outputs_of(conn, SendHeartbeat)
    assert conn.counters.heartbeats_late == 2
    # It stands for slot 3 (due T0 + 0.3); slots 1 and 2 went without one.
    assert hb.due == pytest.approx(T0 + 0.3) and hb.skipped == 2
    assert conn.next_deadline() == pytest.approx(T0 + 0.4)


def test_each_heartbeat_says_its_slot_so_the_sender_can_tell_its_lateness() -> None:
    conn = make(ot_rpi_us=100_000)
    open_running(conn, ot_api=100_000)
    [first] = outputs_of(conn, SendHeartbeat)
    assert (first.due, first.skipped) == (T0, 0)  # the one right after the reply
    for k in range(1, 6):
        conn.on_data(T0 + 0.1 * k - 0.01)
        conn.on_timer(T0 + 0.1 * k + 0.0007 * k)  # later and later, less than a period
        [hb] = outputs_of(conn, SendHeartbeat)
        assert hb.due == pytest.approx(T0 + 0.1 * k) and hb.skipped == 0


def test_early_timer_does_nothing() -> None:
    conn = make()
    open_running(conn)
    conn.take_outputs()
    conn.on_timer(T0 + 0.05)
    assert conn.take_outputs() == []


def test_uses_granted_api_not_requested_rpi() -> None:
    conn = make(rpi_us=100_000, ot_rpi_us=100_000, multiplier=0)
    open_running(conn, ot_api=200_000, to_api=300_000)
    conn.on_data(T0 + 0.01)
    # heartbeat at the O->T API, watchdog at T->O API x 4
    assert conn.next_deadline() == pytest.approx(T0 + 0.2)
    assert watchdog_at(conn) == pytest.approx(T0 + 0.01 + 1.2)


def test_watchdog_expiry_closes_best_effort_and_backs_off_with_timeout_event() -> None:
    conn = make(multiplier=0, timing=Timing(first_data_s=0.1))
    req = open_running(conn, to_api=100_000)
    conn.on_data(T0 + 0.1)
    now = T0 + 0.1
    while conn.state is State.RUNNING:
        now = deadline(conn)
        conn.on_timer(now)
    assert now == pytest.approx(T0 + 0.1 + 0.4)
    outs = conn.take_outputs()
    assert Unlisten(req.to_connection_id) in outs
    assert SendForwardClose(cm.forward_close_for(req), awaited=False) in outs
    ev = [o for o in outs if isinstance(o, ConnEvent) and o.state_to == "BACKOFF"]
    assert ev[0].kind == "timeout" and ev[0].state_from == "RUNNING"
    assert req.to_connection_id not in conn.originator.live_connection_ids
    # the retry uses a new triad
    conn.on_timer(deadline(conn))
    assert pending_open(conn).connection_serial != req.connection_serial


def test_watchdog_is_held_while_the_caller_has_unread_datagrams() -> None:
    # T->O API 100 ms x 4 = 0.4 s; heartbeats every 150 ms (O->T API)
    conn = make(multiplier=0, timing=Timing(first_data_s=0.1))
    open_running(conn, to_api=100_000, ot_api=150_000)
    conn.on_data(T0 + 0.1)
    conn.take_outputs()
    late = T0 + 0.1 + 0.4 + 0.2  # past the watchdog and past a heartbeat slot
    conn.on_timer(late, data_pending=True)
    assert conn.state is State.RUNNING and conn.counters.timeouts == 0
    assert len(outputs_of(conn, SendHeartbeat)) == 1  # heartbeats are not held
    assert deadline(conn) <= late  # still due: the caller asks again once it has read
    conn.on_data(late + 0.001)  # the waiting datagram was this connection's: alive
    conn.on_timer(late + 0.002)
    assert conn.state is State.RUNNING
    conn.on_timer(late + 0.001 + 0.4)  # nothing since, nothing waiting: it expires
    assert state(conn) is State.BACKOFF and conn.counters.timeouts == 1


def test_first_data_gets_at_least_first_data_timeout() -> None:
    conn = make(multiplier=0, timing=Timing(first_data_s=5.0))
    open_running(conn, to_api=10_000)
    assert watchdog_at(conn) == pytest.approx(T0 + 5.0)


def test_gap_counted_and_reported() -> None:
    conn = make()
    open_running(conn)
    conn.take_outputs()
    conn.on_data(T0 + 0.1, missed=0)
    conn.on_data(T0 + 0.2, missed=3)
    events = outputs_of(conn, ConnEvent)
    assert [e.kind for e in events] == ["gap"]
    assert conn.counters.gap == 3 and conn.counters.datagrams == 2


def test_stop_while_running_closes_and_releases() -> None:
    conn = make()
    req = open_running(conn)
    conn.take_outputs()
    conn.stop(T0 + 1)
    outs = conn.take_outputs()
    fc = cm.forward_close_for(req)
    assert SendForwardClose(fc, awaited=True) in outs and Unlisten(req.to_connection_id) in outs
    assert conn.state is State.CLOSING
    conn.on_forward_close_reply(
        T0 + 1.01,
        fc,
        cm.ForwardCloseSuccess(
            req.connection_serial, req.vendor_id, req.originator_serial
        ).to_reply(),
    )
    assert state(conn) is State.CLOSED
    assert conn.originator.live_connection_ids == frozenset()
    assert conn.next_deadline() is None


def test_stop_while_opening_closes_the_in_flight_triad() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    conn.take_outputs()
    conn.stop(T0)
    assert outputs_of(conn, SendForwardClose) == [
        SendForwardClose(cm.forward_close_for(req), awaited=True)
    ]
    # the late Forward_Open reply is ignored
    conn.on_forward_open_reply(T0, req, ok_reply(req))
    assert conn.state is State.CLOSING


def test_stale_reply_is_ignored() -> None:
    conn = make()
    conn.start(T0)
    first = pending_open(conn)
    conn.on_forward_open_reply(T0, first, reject_reply(first, 0x01, 0x0100))
    second = pending_open(conn)
    assert second != first
    conn.on_forward_open_reply(T0, first, ok_reply(first))
    assert conn.state is State.OPENING


def test_p2p_id_changed_by_target_is_an_error() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0, req, ok_reply(req, to_id=req.to_connection_id ^ 1))
    assert conn.state is State.BACKOFF


def test_request_error_backs_off_and_closes_best_effort() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    conn.take_outputs()
    conn.on_request_error(T0 + 0.1, req, "TCP connection reset")
    outs = conn.take_outputs()
    assert conn.state is State.BACKOFF
    assert SendForwardClose(cm.forward_close_for(req), awaited=False) in outs
    ev = next(o for o in outs if isinstance(o, ConnEvent))
    assert ev.kind == "error" and "TCP connection reset" in ev.message


def test_malformed_reply_counts_as_request_failure() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0, req, cip.Reply(cip.Service.FORWARD_OPEN, 0, (), b"\x01\x02"))
    assert conn.state is State.BACKOFF


# --------------------------------------------------------------------------- multicast


def test_multicast_joins_group_from_sockaddr_item_and_listens_on_target_id() -> None:
    conn = make(multicast=True)
    conn.start(T0)
    req = pending_open(conn)
    assert req.to_connection_id == 0
    assert req.to_params.connection_type is cm.ConnectionType.MULTICAST
    item = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("239.192.1.32", 2222))
    conn.take_outputs()
    conn.on_forward_open_reply(T0, req, ok_reply(req, to_id=0x55550001), (item,))
    outs = conn.take_outputs()
    assert JoinGroup("239.192.1.32") in outs and Listen(0x55550001, 4) in outs
    conn.stop(T0 + 1)
    outs = conn.take_outputs()
    assert LeaveGroup("239.192.1.32") in outs and Unlisten(0x55550001) in outs


def test_multicast_reply_without_group_is_an_error() -> None:
    conn = make(multicast=True)
    conn.start(T0)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0, req, ok_reply(req, to_id=0x55550001))
    assert conn.state is State.BACKOFF


# --------------------------------------------------------------------------- back-off


def test_backoff_bounds_grow_exponentially_to_the_cap() -> None:
    policy = BackoffPolicy(base_s=0.5, cap_s=8.0, jitter=0.25)
    conn = make(backoff=policy, seed=5)
    conn.start(T0)
    now = T0
    delays = []
    for _ in range(10):
        req = pending_open(conn)
        conn.on_forward_open_reply(now, req, reject_reply(req, 0x01, 0x0203))
        delay = deadline(conn) - now
        delays.append(delay)
        now += delay
        conn.on_timer(now)
    for n, d in enumerate(delays):
        nominal = min(8.0, 0.5 * 2**n)
        assert nominal * 0.75 <= d <= nominal
    assert max(delays) <= 8.0


@pytest.mark.parametrize("seed", range(20))
def test_backoff_policy_delay_within_bounds(seed: int) -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=30.0, jitter=0.5)
    rng = random.Random(seed)
    for attempt in range(12):
        d = policy.delay(attempt, rng)
        assert policy.nominal(attempt) * 0.5 <= d <= policy.nominal(attempt) <= 30.0


def test_backoff_policy_rejects_nonsense() -> None:
    with pytest.raises(UsageError):
        BackoffPolicy(base_s=0)
    with pytest.raises(UsageError):
        BackoffPolicy(jitter=1.0)


def test_backoff_resets_after_data_flows() -> None:
    policy = BackoffPolicy(base_s=1.0, cap_s=100.0, jitter=0.0)
    conn = make(backoff=policy, timing=Timing(first_data_s=0.1), multiplier=0)
    conn.start(T0)
    now = T0
    for _ in range(3):
        req = pending_open(conn)
        conn.on_forward_open_reply(now, req, reject_reply(req, 0x01, 0x0203))
        now = deadline(conn)
        conn.on_timer(now)
    assert conn._attempt == 3
    req = pending_open(conn)
    conn.on_forward_open_reply(now, req, ok_reply(req))
    conn.on_data(now + 0.01)
    while conn.state is State.RUNNING:
        t = deadline(conn)
        conn.on_timer(t)
    assert deadline(conn) - t == pytest.approx(1.0)


# --------------------------------------------------------------------------- rejects


@pytest.mark.parametrize(
    ("general", "additional", "cls"),
    [
        (0x01, (0x0100,), RejectClass.NEW_SERIAL),
        (0x01, (0x0109, 6), RejectClass.ADOPT_SIZE),
        (0x01, (0x0128, 6), RejectClass.ADOPT_SIZE),
        (0x01, (0x0109,), RejectClass.PERMANENT),
        (0x01, (0x0112, 0, 0x86A0, 0x1, 0x86A0, 0x1), RejectClass.ADOPT_RPI),
        (0x01, (0x031E,), RejectClass.AFTER_OLD_TIMEOUT),
        (0x01, (0x0113,), RejectClass.AFTER_OLD_TIMEOUT),
        (0x01, (0x031F,), RejectClass.NOT_PRODUCED),
        (0x01, (0x012E,), RejectClass.NOT_PRODUCED),
        (0x01, (0x0315,), RejectClass.NOT_PRODUCED),
        (0x05, (), RejectClass.NOT_PRODUCED),
        (0x01, (0x0111,), RejectClass.PERMANENT),
        (0x01, (0x0312,), RejectClass.PERMANENT),
        (0x01, (0x0203,), RejectClass.TRANSIENT),
        (0x02, (), RejectClass.TRANSIENT),
        (0x01, (), RejectClass.TRANSIENT),
    ],
)
def test_classify_reject(general: int, additional: tuple[int, ...], cls: RejectClass) -> None:
    assert classify_reject(general, additional) is cls


def reject_and_events(conn: ConsumerConnection, general: int, *additional: int) -> list[ConnEvent]:
    req = pending_open(conn)
    conn.take_outputs()
    conn.on_forward_open_reply(T0 + 0.01, req, reject_reply(req, general, *additional))
    return [o for o in conn.take_outputs() if isinstance(o, ConnEvent)]


def test_duplicate_triad_retries_at_once_with_new_serial_then_backs_off() -> None:
    conn = make()
    conn.start(T0)
    serials = [pending_open(conn).connection_serial]
    for _ in range(3):
        events = reject_and_events(conn, 0x01, 0x0100)
        assert conn.state is State.OPENING
        assert events[0].kind == "reject" and events[0].cip_extended == 0x0100
        serials.append(pending_open(conn).connection_serial)
    assert len(set(serials)) == 4
    reject_and_events(conn, 0x01, 0x0100)
    assert conn.state is State.BACKOFF


def test_wrong_size_adopted_when_it_matches_the_known_type() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    # discovery said 8 bytes (e.g. symbol element size) but the type is REAL[1] = 4 bytes
    conn.on_resolved(T0, 8, ArrayType(REAL, (1,)))
    assert pending_open(conn).to_params.size == 10
    events = reject_and_events(conn, 0x01, 0x0109, 6)
    assert conn.state is State.OPENING and conn.tag_bytes == 4
    assert pending_open(conn).to_params.size == 6
    assert events[0].state_from == events[0].state_to == "OPENING"


def test_wrong_size_not_matching_type_is_a_type_mismatch_naming_both_sizes() -> None:
    conn = make(4, tag_type=DINT)
    conn.start(T0)
    events = reject_and_events(conn, 0x01, 0x0109, 10)
    assert conn.state is State.FAILED
    assert "8" in failure(conn) and "4" in failure(conn) and "type mismatch" in failure(conn)
    assert events[-1].kind == "reject" and events[-1].cip_extended == 0x0109


# --------------------------------------------------------------------------- a given size

ADOPTING_4 = ("the given size, 6 bytes, is not the size of 'Count': the controller produces 4"
              " bytes, the size of its type (REAL); adopting 4. Set size = 4 (datasize = 6 in"
              " the Python API) or remove it")


def opened_event(conn: ConsumerConnection) -> ConnEvent:
    """The event of the transition into OPENING just made."""
    return next(o for o in reversed(conn.take_outputs())
                if isinstance(o, ConnEvent) and o.state_to == "OPENING")


def test_a_correct_given_size_still_learns_the_type_so_samples_are_decoded() -> None:
    # size = 4 written "to be safe": the type is asked for as without it, and checked
    conn = make(4, tag_type=None)
    conn.start(T0)
    assert conn.state is State.RESOLVING and outputs_of(conn, Resolve) == [Resolve("Count")]
    conn.on_resolved(T0 + 0.1, 4, REAL)
    assert state(conn) is State.OPENING and (conn.tag_bytes, conn.tag_type) == (4, REAL)
    event = opened_event(conn)
    assert (event.kind, event.message) == ("state", "size learned: 4 bytes (REAL)")
    req = pending_open(conn)
    assert req.to_params.size == 6
    conn.on_forward_open_reply(T0 + 0.2, req, ok_reply(req))
    assert state(conn) is State.RUNNING
    # the worker decodes by the connection's type: REAL, not raw bytes
    snap = conn.snapshot()
    assert (snap["type"], snap["size"], snap["learned"]) == ("REAL", 4, True)


def test_a_wrong_given_size_is_replaced_by_the_learned_type_size_before_any_forward_open(
) -> None:
    # size = 6 on a REAL (the seed's datasize): never asked of the controller
    conn = make(6, tag_type=None)
    conn.start(T0)
    assert outputs_of(conn, SendForwardOpen) == []
    conn.on_resolved(T0 + 0.1, 4, REAL)
    assert state(conn) is State.OPENING and (conn.tag_bytes, conn.tag_type) == (4, REAL)
    assert pending_open(conn).to_params.size == 6  # 4 + the sequence count
    event = opened_event(conn)
    # a warning (no reject led here): the configuration needs a fix
    assert (event.kind, event.message, event.cip_extended) == ("error", ADOPTING_4, None)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0 + 0.2, req, ok_reply(req))
    assert state(conn) is State.RUNNING and conn.failure is None


def test_a_wrong_given_size_the_controller_refuses_is_adopted_with_the_same_message() -> None:
    # the type could not be learned at first, so the given 6 bytes were asked for; the
    # controller wants 4 + 2: the type is asked again and its size adopted (the 0x0109 rule)
    conn = make(6, tag_type=None)
    conn.start(T0)
    conn.on_resolve_error(T0, "cannot list the controller's tags", permanent=True)
    assert pending_open(conn).to_params.size == 8
    events = reject_and_events(conn, 0x01, 0x0109, 6)
    assert state(conn) is State.RESOLVING and conn.failure is None
    assert events[-1].message == (
        "0x01/0x0109 invalid connection size: we asked for 6 bytes, the controller produces"
        " 4 bytes; learning the type of 'Count' to check 4 bytes against it")
    conn.on_resolved(T0 + 0.1, 4, REAL)
    assert state(conn) is State.OPENING and (conn.tag_bytes, conn.tag_type) == (4, REAL)
    assert pending_open(conn).to_params.size == 6
    event = opened_event(conn)
    # the same warning, with the status that caused it
    assert (event.kind, event.message, event.cip_extended) == ("reject", ADOPTING_4, 0x0109)


def test_a_given_size_the_controller_and_the_type_both_disagree_with_fails_naming_each() -> None:
    conn = make(6, tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)  # adopted: 4
    events = reject_and_events(conn, 0x01, 0x0109, 10)  # the controller produces 8 bytes
    assert state(conn) is State.RESOLVING
    assert events[-1].message.endswith("learning the type of 'Count' again (changed by a"
                                       " download?)")
    conn.on_resolved(T0 + 0.1, 4, DINT)  # its tag list still says DINT
    assert state(conn) is State.FAILED
    assert failure(conn) == (
        "type mismatch on plc1/Count: the controller produces 8 bytes but type DINT is 4"
        " bytes (we asked for 4, the given size is 6); check the tag's type (its size reject"
        " and its tag list disagree)")


@pytest.mark.parametrize("how", ["refused", "failed", "no answer"])
def test_where_the_type_cannot_be_learned_a_given_size_opens_with_raw_bytes(how: str) -> None:
    # a device without the Logix tag listing (0x08), a listing past its limits, no answer:
    # the given size is what makes the connection possible, as before the type was checked
    conn = make(4, tag_type=None)
    conn.start(T0)
    conn.take_outputs()
    if how == "refused":
        why = ("cannot list the controller's tags to size 'Count': 0x08 service not supported;"
               " give the tag's 'size' (or 'type') in the configuration")
        conn.on_resolve_error(T0 + 0.1, why, permanent=True)
    elif how == "failed":
        why = "type of 'Count': the tag listing of PLC 10.0.0.5:44818 passed the limit"
        conn.on_resolve_error(T0 + 0.1, why, permanent=False)
    else:
        why = "size discovery gave no answer within 30 s"
        _fire_timer(conn)
    assert state(conn) is State.OPENING and conn.tag_type is None and conn.failure is None
    event = opened_event(conn)
    assert event.kind == "error" and event.message == (
        f"{why}; opening with the given size, 4 bytes, without the type: samples carry the raw"
        " bytes and no value")
    req = pending_open(conn)
    assert req.to_params.size == 6
    conn.on_forward_open_reply(T0 + 0.2, req, ok_reply(req))
    assert state(conn) is State.RUNNING and conn.snapshot()["type"] is None
    # after an outage the type is asked again (the device may answer by then)
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)
    conn.take_outputs()
    _fire_timer(conn)
    assert state(conn) is State.RESOLVING and outputs_of(conn, Resolve) == [Resolve("Count")]


def test_without_a_given_size_a_refused_type_request_fails_and_a_failed_one_backs_off() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolve_error(T0, "no answer", permanent=False)
    assert state(conn) is State.BACKOFF
    _fire_timer(conn)
    conn.on_resolve_error(T0 + 5, "cannot list the controller's tags", permanent=True)
    assert state(conn) is State.FAILED and failure(conn) == "cannot list the controller's tags"


def test_a_type_learned_before_is_dropped_when_a_given_size_opens_without_it() -> None:
    # the type is doubted after an outage and cannot be learned now: a download may have
    # changed it with the same size, so the samples are raw rather than decoded wrongly
    conn = make(4, tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)
    req = pending_open(conn)
    conn.on_forward_open_reply(T0, req, ok_reply(req))
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)
    _fire_timer(conn)
    assert state(conn) is State.RESOLVING and conn.tag_type is DINT
    conn.on_resolve_error(T0 + 5, "no answer", permanent=False)
    assert state(conn) is State.OPENING and conn.tag_type is None and conn.tag_bytes == 4


def test_source_time_needs_the_type_so_a_given_size_alone_does_not_open() -> None:
    params = ConsumerParams(plc="p", tag="Status", rpi_us=1000, tag_bytes=16,
                            source_time="Stamp")
    conn = ConsumerConnection(params, Originator(random.Random(1)))
    conn.start(T0)
    conn.on_resolve_error(T0, "cannot list the controller's tags", permanent=True)
    assert conn.state is State.FAILED and failure(conn) == (
        "cannot list the controller's tags (source_time = 'Stamp' needs the tag's type: remove"
        " source_time to connect with the given size alone)")


def test_wrong_size_without_known_type_is_permanent_and_says_the_fix() -> None:
    conn = make(4, tag_type=None)
    conn.start(T0)
    conn.on_resolve_error(T0, "no answer", permanent=False)  # opened without the type
    reject_and_events(conn, 0x01, 0x0109, 10)
    assert conn.state is State.RESOLVING  # the type, to check the controller's 8 bytes
    conn.on_resolve_error(T0 + 0.1, "no answer", permanent=False)  # the type stays unknown
    assert state(conn) is State.OPENING  # the given size once more
    reject_and_events(conn, 0x01, 0x0109, 10)
    # one message, every size in tag bytes: no "wants 10" beside "asked for 4"
    assert state(conn) is State.FAILED and failure(conn) == (
        "size mismatch on plc1/Count: we asked for 4 bytes of tag data, the controller"
        " produces 8; set size = 8 (datasize = 10 in the Python API) or omit it so it is"
        " learned from the controller (0x01/0x0109 invalid connection size)")


def test_producer_default_rpi_adopted() -> None:
    conn = make(rpi_us=10_000)
    conn.start(T0)
    words = (0x0112, 0x0000, 50_000 & 0xFFFF, 50_000 >> 16, 200_000 & 0xFFFF, 200_000 >> 16)
    reject_and_events(conn, 0x01, *words)
    req = pending_open(conn)
    assert conn.state is State.OPENING and (req.to_rpi, req.ot_rpi) == (200_000, 50_000)
    # the same answer again means the producer does not accept its own values
    reject_and_events(conn, 0x01, *words)
    assert state(conn) is State.FAILED


@pytest.mark.parametrize("ext", [0x031E, 0x0113])
def test_out_of_consumers_waits_for_the_old_connection_timeout(ext: int) -> None:
    conn = make(ot_rpi_us=500_000, multiplier=2)  # old connection dies after 0.5 s x 16 = 8 s
    conn.start(T0)
    events = reject_and_events(conn, 0x01, ext)
    assert conn.state is State.BACKOFF
    assert deadline(conn) - (T0 + 0.01) >= 8.0
    assert events[0].kind == "reject" and events[0].cip_extended == ext


@pytest.mark.parametrize(
    ("general", "additional"), [(0x01, (0x031F,)), (0x01, (0x012E,)), (0x01, (0x0315,))]
)
def test_unknown_or_not_produced_tag_fails_loudly(
    general: int, additional: tuple[int, ...]
) -> None:
    conn = make()
    conn.start(T0)
    events = reject_and_events(conn, general, *additional)
    assert conn.state is State.FAILED
    assert "'Count'" in failure(conn) and "produced" in failure(conn)
    assert "Studio 5000" in failure(conn) and "'plc1'" in failure(conn)
    assert events[-1].kind == "reject" and events[-1].status_text
    assert conn.next_deadline() is None


@pytest.mark.parametrize("multicast", [False, True])
def test_not_produced_with_a_type_learned_from_the_controller_says_it_exists(
    multicast: bool,
) -> None:
    conn = make(tag_type=None, multicast=multicast)
    conn.start(T0)
    conn.on_resolved(T0, 4, REAL)  # the controller answered: the tag exists, as a REAL
    reject_and_events(conn, 0x01, 0x031F)
    assert conn.state is State.FAILED
    assert conn.failure is not None
    assert conn.failure.startswith("tag 'Count' on PLC 'plc1' exists (REAL) but is not produced (")
    assert "does not exist" not in conn.failure and "check the name" not in conn.failure
    assert "Type: Produced" in conn.failure


@pytest.mark.parametrize("ext", [0x012E, 0x0315])
def test_other_not_produced_codes_with_a_learned_type_keep_the_general_message(ext: int) -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, REAL)
    reject_and_events(conn, 0x01, ext)
    assert conn.failure is not None and "does not exist or is not produced" in conn.failure


def test_not_produced_with_a_configured_type_does_not_claim_the_tag_exists() -> None:
    conn = make(4, tag_type=REAL)  # the type comes from the config, not from the controller
    conn.start(T0)
    reject_and_events(conn, 0x01, 0x031F)
    assert conn.failure is not None and "does not exist or is not produced" in conn.failure
    assert "check the name" in conn.failure


def test_wrong_slot_fails_with_a_hint() -> None:
    conn = make()
    conn.start(T0)
    reject_and_events(conn, 0x01, 0x0312)
    assert conn.state is State.FAILED and "slot" in failure(conn)


def test_unicast_refused_for_the_tag_names_the_fix() -> None:
    # Logix: 0x01/0x0124 (invalid T->O connection type) when the produced tag does not allow
    # unicast consumers.
    conn = make()
    conn.start(T0)
    events = reject_and_events(conn, 0x01, 0x0124)
    assert conn.state is State.FAILED and events[-1].cip_extended == 0x0124
    assert "does not allow unicast consumers" in failure(conn)
    assert "'Allow Unicast Consumer Connections'" in failure(conn)
    assert 'transport = "multicast"' in failure(conn)
    # a multicast request refused the same way is another problem: no unicast advice
    conn = make(multicast=True)
    conn.start(T0)
    reject_and_events(conn, 0x01, 0x0124)
    assert conn.state is State.FAILED and "unicast" not in failure(conn)


def test_transient_reject_backs_off_with_status_in_event() -> None:
    conn = make()
    conn.start(T0)
    events = reject_and_events(conn, 0x01, 0x0203)
    assert conn.state is State.BACKOFF
    assert (events[0].cip_general, events[0].cip_extended) == (0x01, 0x0203)
    assert events[0].status_text == "connection timed out" or events[0].status_text


# --------------------------------------------------------------------------- resolving


def test_resolved_oversize_tag_fails() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 600, None)
    assert conn.state is State.FAILED and "500" in failure(conn)


def test_params_validation() -> None:
    with pytest.raises(UsageError):
        ConsumerParams(plc="p", tag="T", rpi_us=0)
    with pytest.raises(UsageError):
        ConsumerParams(plc="p", tag="T", rpi_us=10, multiplier=9)
    with pytest.raises(UsageError):
        ConsumerParams(plc="p", tag="T.member", rpi_us=10)
    with pytest.raises(UsageError):
        ConsumerParams(plc="p", tag="T", rpi_us=10, tag_bytes=8, tag_type=DINT)
    # a route too long for a Forward_Open is refused here, not after the type is learned
    with pytest.raises(UsageError, match=r"p/T: the connection path \(route, slot and tag\) is"
                       r" 616 bytes; a Forward_Open carries at most 510: use fewer route hops"):
        ConsumerParams(plc="p", tag="T", rpi_us=10, route=(epath.PortSegment.slot(0),) * 300)


def test_route_is_prepended_to_the_connection_path() -> None:
    params = ConsumerParams(
        plc="p", tag="T", rpi_us=1000, tag_type=DINT, route=(epath.PortSegment.slot(2, port=1),)
    )
    conn = ConsumerConnection(params, Originator(random.Random(1)))
    conn.start(T0)
    assert pending_open(conn).path.startswith(b"\x01\x02\x01\x00")


# --------------------------------------------------------------------------- recorder


def test_flight_recorder_keeps_the_last_datagrams_each_way() -> None:
    conn = make()
    open_running(conn)
    for k in range(20):
        conn.on_timer(deadline(conn))
        conn.recorder.record_in(T0 + k, "T->O", bytes([k]) * 30)
    assert len(conn.recorder.outgoing) == 8 and len(conn.recorder.incoming) == 8
    lines = conn.recorder.dump()
    assert any("heartbeat" in line for line in lines)
    assert any(line.startswith(f"{T0 + 19:.3f} <- T->O [30] 13 13") for line in lines)


def test_snapshot_is_plain_data() -> None:
    conn = make()
    open_running(conn)
    snap = conn.snapshot()
    counters = snap["counters"]
    assert isinstance(counters, dict)
    assert snap["state"] == "RUNNING" and snap["to_id"] and counters["opens"] == 1
