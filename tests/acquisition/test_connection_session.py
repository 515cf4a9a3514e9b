"""The consumer connection while its PLC's session is down (WAITING: no back-off for "no
session", open at once when the session is back) and the outage records of its data
(acquisition/connection.py), on a fake clock."""

from __future__ import annotations

import pytest
from pyconpro.acquisition import cm
from pyconpro.acquisition.connection import (
    TRANSITIONS,
    ConnEvent,
    ConsumerConnection,
    OutageEnded,
    Resolve,
    SendForwardClose,
    SendForwardOpen,
    State,
    Trigger,
    expected_samples,
)
from pyconpro.acquisition.logix_types import DINT
from pyconpro.acquisition.originator import BackoffPolicy
from pyconpro.acquisition.wire import OutageCause

from tests.acquisition.test_connection import (
    EXPECTED_BY_VARIANT,
    INPUTS,
    T0,
    deadline,
    in_state,
    make,
    ok_reply,
    outputs_of,
    pending_open,
    reject_reply,
    state,
)

# --------------------------------------------------------------------------- session down

# Written from the design: with the session down, a request that fails or would be made waits
# for the session (WAITING); what the PLC itself answers is handled as before.
_DOWN: dict[State, dict[str, State]] = {
    State.IDLE: {"start": State.WAITING},
    State.RESOLVING: {"resolve_error": State.WAITING, "timer": State.WAITING},
    # and a given size opens without the type only once the session is back
    State.OPENING: {"request_error": State.WAITING, "timer": State.WAITING},
    State.BACKOFF: {"timer": State.WAITING},
}


def _expected_down(variant: str) -> dict[State, dict[str, State]]:
    out = {st: dict(row) for st, row in EXPECTED_BY_VARIANT[variant].items()}
    for st, row in _DOWN.items():
        out[st].update(row)
        if "timer" in row:
            out[st]["timer_data_pending"] = row["timer"]
    if variant == "sized":
        out[State.RESOLVING]["resolve_fatal"] = State.WAITING
    out[State.WAITING] = {"stop": State.CLOSED}  # the session is not back yet
    return out


@pytest.mark.parametrize("variant", ["given", "learned", "sized"])
@pytest.mark.parametrize("st", list(State))
@pytest.mark.parametrize("name", [n for n in INPUTS if n != "session_ready"])
def test_every_state_input_pair_with_the_session_down(st: State, name: str,
                                                      variant: str) -> None:
    conn = in_state(st, variant)
    conn.on_session_lost(T0)
    assert conn.state is st and conn.take_outputs() == []  # losing it moves nothing by itself
    INPUTS[name](conn)
    expected = _expected_down(variant)[st].get(name, st)
    assert conn.state is expected
    for ev in (o for o in conn.take_outputs() if isinstance(o, ConnEvent) and o.state_to):
        assert ev.state_from is not None and ev.state_to is not None
        assert any(TRANSITIONS.get((State(ev.state_from), t)) is State(ev.state_to)
                   for t in Trigger)
    if expected is State.WAITING:
        assert conn.next_deadline() is None  # no timer: only the session's return moves it


# --------------------------------------------------------------------------- no back-off


def test_no_session_failures_never_grow_the_backoff() -> None:
    conn = make(backoff=BackoffPolicy(0.5, 30.0, 0.0))
    conn.start(T0)
    now = T0
    for _ in range(20):  # twenty reconnects of the session, each taking the request with it
        req = pending_open(conn)
        conn.on_session_lost(now)
        conn.on_request_error(now, req, "no session to PLC 10.0.0.5:44818: Connection refused")
        assert state(conn) is State.WAITING
        now += 0.5
        conn.on_session_ready(now)
        assert state(conn) is State.OPENING
        # Sent at once, on the session's return, not after a back-off.
        assert [o for o in conn.take_outputs() if isinstance(o, SendForwardOpen)]
    assert conn.counters.waits == 20
    # A real reject now backs off from the base, as if nothing had happened.
    req = pending_open(conn)
    conn.on_forward_open_reply(now, req, reject_reply(req, 0x01, 0x0203))
    assert conn.state is State.BACKOFF and deadline(conn) == pytest.approx(now + 0.5)


def test_no_forward_close_is_tried_while_the_session_is_down() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    conn.take_outputs()
    conn.on_session_lost(T0 + 1)
    conn.on_request_error(T0 + 1, req, "no session")
    assert outputs_of(conn, SendForwardClose) == []


def test_watchdog_while_the_session_is_down_waits_and_reopens_when_it_is_back() -> None:
    conn = make(multiplier=2)  # x16
    req = _running(conn)
    conn.on_data(T0 + 0.1)
    conn.on_session_lost(T0 + 0.15)
    conn.take_outputs()
    assert conn.granted is not None
    at = conn.granted.watchdog_at
    conn.on_timer(at)
    outs = conn.take_outputs()
    assert conn.state is State.WAITING and conn.next_deadline() is None
    events = [o for o in outs if isinstance(o, ConnEvent) and o.state_to]
    assert [(e.kind, e.state_from, e.state_to) for e in events] == [
        ("timeout", "RUNNING", "WAITING")]
    assert not [o for o in outs if isinstance(o, SendForwardClose)]
    conn.on_session_ready(at + 7.0)
    sent = outputs_of(conn, SendForwardOpen)
    assert state(conn) is State.OPENING and len(sent) == 1
    assert sent[0].request.connection_serial != req.connection_serial  # a fresh triad


def test_a_learned_type_is_learned_again_when_the_session_is_back() -> None:
    conn = make(tag_type=None)
    conn.start(T0)
    conn.on_resolved(T0, 4, DINT)
    _reply_ok(conn, T0)
    conn.on_session_lost(T0 + 1)
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)
    conn.take_outputs()
    conn.on_session_ready(T0 + 5)
    assert conn.state is State.RESOLVING
    assert outputs_of(conn, Resolve) == [Resolve("Count", refresh=True)]


def test_a_real_reject_backs_off_even_while_the_session_is_down() -> None:
    conn = make()
    conn.start(T0)
    req = pending_open(conn)
    conn.on_session_lost(T0 + 0.01)  # the reply was already on its way
    conn.on_forward_open_reply(T0 + 0.01, req, reject_reply(req, 0x01, 0x031E))
    assert conn.state is State.BACKOFF  # the PLC said no: its rule (wait the old timeout)
    conn.on_timer(deadline(conn))
    assert state(conn) is State.WAITING  # ... then wait for the session


def test_a_consumer_started_while_the_session_is_down_waits_without_a_timer() -> None:
    conn = make()
    conn.on_session_lost(T0)
    conn.start(T0)
    outs = conn.take_outputs()
    assert conn.state is State.WAITING and conn.next_deadline() is None
    assert not [o for o in outs if isinstance(o, SendForwardOpen)]
    conn.on_session_ready(T0 + 3)
    assert state(conn) is State.OPENING


# --------------------------------------------------------------------------- outages


def _reply_ok(conn: ConsumerConnection, now: float, **kw: int) -> None:
    req = pending_open(conn)
    conn.on_forward_open_reply(now, req, ok_reply(req, **kw))
    assert conn.state is State.RUNNING


def _running(conn: ConsumerConnection, now: float = T0, **kw: int) -> cm.ForwardOpenRequest:
    conn.start(now)
    req = pending_open(conn)
    _reply_ok(conn, now, **kw)
    return req


def _stream(conn: ConsumerConnection, start: float, end: float, period: float) -> float:
    """Datagrams every ``period`` from ``start`` while before ``end``; the last one's time."""
    t, last = start, start
    while t < end - 1e-9:
        conn.on_data(t)
        last = t
        t = round(t + period, 9)
    return last


def test_a_one_second_t_to_o_stall_is_one_outage_with_its_missed_samples() -> None:
    # 20 ms RPI, x16: the watchdog is 0.32 s; data stops for 1 s; the reopen takes its time.
    conn = make(rpi_us=20_000, multiplier=2, backoff=BackoffPolicy(0.5, 30.0, 0.0))
    _running(conn, T0, to_api=20_000, ot_api=20_000)
    last = _stream(conn, T0 + 0.02, T0 + 1.0, 0.02)  # the last datagram at T0 + 0.98
    conn.take_outputs()
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)  # T0 + 1.30: no data
    assert conn.state is State.BACKOFF
    reopen_at = deadline(conn)
    conn.on_timer(reopen_at)  # back-off over: reopen
    _reply_ok(conn, reopen_at + 0.002, to_api=20_000, ot_api=20_000)
    first = T0 + 2.0
    conn.on_data(first)
    outages = outputs_of(conn, OutageEnded)
    assert outages == [OutageEnded(last, first, 20_000, 50, OutageCause.TIMEOUT, True)]
    assert conn.counters.outages == 1 and conn.counters.outage_missed == 50
    assert conn.counters.gap == 0  # the CIP gap counter never sees a loss across a reopen
    conn.on_data(first + 0.02)
    assert outputs_of(conn, OutageEnded) == []  # once


def test_an_outage_while_the_session_was_down_says_so() -> None:
    conn = make(rpi_us=50_000, multiplier=1)
    _running(conn, T0, to_api=50_000, ot_api=50_000)
    conn.on_data(T0 + 0.05)
    conn.on_session_lost(T0 + 0.06)
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)
    conn.on_session_ready(T0 + 30.0)
    _reply_ok(conn, T0 + 30.01, to_api=50_000, ot_api=50_000)
    conn.take_outputs()
    conn.on_data(T0 + 30.05)
    (outage,) = outputs_of(conn, OutageEnded)
    assert (outage.cause, outage.start, outage.end) == (OutageCause.SESSION, T0 + 0.05,
                                                        T0 + 30.05)
    assert outage.expected == 599  # 30 s at 50 ms, less the sample that ends it


def test_reopens_that_bring_no_data_extend_the_same_outage() -> None:
    conn = make(rpi_us=100_000, multiplier=0, backoff=BackoffPolicy(0.5, 0.5, 0.0))  # x4
    _running(conn, T0)
    conn.on_data(T0 + 0.1)
    now = T0
    for _ in range(3):  # watchdog, reopen, no data, watchdog ...
        assert conn.granted is not None
        now = conn.granted.watchdog_at
        conn.on_timer(now)
        now = deadline(conn)
        conn.on_timer(now)
        _reply_ok(conn, now)
    conn.take_outputs()
    conn.on_data(now + 3.0)
    (outage,) = outputs_of(conn, OutageEnded)
    assert outage.start == T0 + 0.1 and conn.counters.outages == 1


def test_no_outage_before_the_first_datagram() -> None:
    conn = make(backoff=BackoffPolicy(0.5, 0.5, 0.0))
    _running(conn, T0)
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)  # the first connection never brought data
    reopen_at = deadline(conn)
    conn.on_timer(reopen_at)
    _reply_ok(conn, reopen_at)
    conn.take_outputs()
    conn.on_data(T0 + 5)
    assert outputs_of(conn, OutageEnded) == [] and conn.counters.outages == 0


def test_a_restarted_worker_reports_the_outage_since_the_previous_ones_last_data() -> None:
    conn = make(rpi_us=100_000)
    conn.start(T0, outage_since=T0 - 4.0)
    _reply_ok(conn, T0 + 0.01, to_api=100_000)
    conn.take_outputs()
    conn.on_data(T0 + 0.05)
    assert outputs_of(conn, OutageEnded) == [
        OutageEnded(T0 - 4.0, T0 + 0.05, 100_000, 39, OutageCause.RESTART, True)]


def test_stopping_during_an_outage_ends_it_unresumed() -> None:
    conn = make(rpi_us=100_000, multiplier=0)
    _running(conn, T0)
    conn.on_data(T0 + 0.1)
    assert conn.granted is not None
    conn.on_timer(conn.granted.watchdog_at)
    conn.take_outputs()
    snap = conn.snapshot(T0 + 2.15)
    assert snap["outage"] == {"since_s": T0 + 0.1, "cause": "timeout", "for_s": 2.05,
                              "missed": 20}
    conn.stop(T0 + 2.15)
    assert outputs_of(conn, OutageEnded) == [
        OutageEnded(T0 + 0.1, T0 + 2.15, 100_000, 20, OutageCause.TIMEOUT, False)]
    assert "outage" not in conn.snapshot(T0 + 3)
    conn.stop(T0 + 3)
    assert outputs_of(conn, OutageEnded) == []


@pytest.mark.parametrize(("start", "end", "api", "resumed", "expected"), [
    (0.0, 0.02, 0.02, True, 0),  # the next datagram on time: nothing missed
    (0.0, 0.04, 0.02, True, 1),
    (0.0, 1.02, 0.02, True, 50),
    (0.0, 0.031, 0.02, True, 1),  # late arrivals round to the nearest period
    (0.0, 0.05, 0.02, False, 2),  # stopped at 0.05: 0.02 and 0.04 were due
    (1.0, 1.0, 0.02, True, 0),
    (0.0, 5.0, 0.0, True, 0),
])
def test_expected_samples(start: float, end: float, api: float, resumed: bool,
                          expected: int) -> None:
    assert expected_samples(start, end, api, resumed=resumed) == expected
