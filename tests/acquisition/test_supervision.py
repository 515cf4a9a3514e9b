"""The pure supervision model: every (state, input) pair, edges, backoff, shutdown order."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.supervision import (
    ACCEPTS,
    TRANSITIONS,
    Action,
    Child,
    ChildKind,
    ChildState,
    Exited,
    Input,
    InputKind,
    Output,
    Ready,
    RestartPolicy,
    Signal,
    Spawn,
    Spawned,
    StartRequested,
    StopRequested,
    Supervision,
    Timer,
    Transition,
    Trigger,
    backoff_delay,
    next_states,
    start_phases,
    stop_phases,
)

S = ChildState


@dataclass(frozen=True)
class Drained:
    """What a machine's take_outputs() returned, split into actions and transitions."""

    actions: tuple[Action, ...] = ()
    events: tuple[Transition, ...] = ()
    order: tuple[Output, ...] = ()


NOTHING = Drained()


def drain(m: Child | Supervision) -> Drained:
    outs = m.take_outputs()
    return Drained(
        tuple(o for o in outs if not isinstance(o, Transition)),
        tuple(o for o in outs if isinstance(o, Transition)),
        tuple(outs),
    ) if outs else NOTHING


POLICY = RestartPolicy(
    start_seconds=1.0,
    backoff_initial=0.5,
    backoff_factor=2.0,
    backoff_max=30.0,
    jitter=0.2,
    max_quick_failures=3,
    stop_timeout=5.0,
)
PID = 100


def child_in(state: ChildState) -> tuple[Child, float]:
    """A child driven into ``state`` through ordinary inputs, its outputs so far drained;
    returns it and the clock."""
    c, t = _drive_into(state)
    c.take_outputs()
    return c, t


def _drive_into(state: ChildState) -> tuple[Child, float]:
    c = Child("w", POLICY, rng=lambda: 0.5)
    t = 0.0
    if state is S.STOPPED:
        return c, t
    c.start(t)
    if state is S.FATAL:
        for i in range(POLICY.max_quick_failures):
            c.spawned(PID + i, t)
            c.exited(t, PID + i, code=1)
            if c.state is S.BACKOFF:
                t = c.next_deadline() or t
                c.on_timer(t)
        assert c.state is S.FATAL
        return c, t
    c.spawned(PID, t)
    if state is S.STARTING:
        return c, t
    if state is S.BACKOFF:
        c.exited(0.2, PID, code=1)
        return c, 0.2
    c.ready(0.1)
    if state is S.RUNNING:
        return c, 0.1
    if state is S.STOPPING:
        c.stop(0.2)
        return c, 0.2
    if state is S.EXITED:
        c.exited(0.5, PID, code=1)
        return c, 0.5
    raise AssertionError(state)


def the_input(kind: InputKind) -> Input:
    inputs: dict[InputKind, Input] = {
        InputKind.START: StartRequested(),
        InputKind.SPAWNED: Spawned(200),
        InputKind.READY: Ready(),
        InputKind.EXITED: Exited(PID, code=3),
        InputKind.STOP: StopRequested(),
        InputKind.TIMER: Timer(),
    }
    return inputs[kind]


# (state, input) -> (expected state, expected actions). Spawned(200) arrives while pid 100 is
# known (or no Spawn is pending), so it is always stale here; its useful cases have own tests.
TERM = Signal("w", PID, "TERM")
KILL = Signal("w", PID, "KILL")
SPAWN = Spawn("w")
EXPECTED: dict[tuple[ChildState, InputKind], tuple[ChildState, tuple[object, ...]]] = {
    (S.STOPPED, InputKind.START): (S.STARTING, (SPAWN,)),
    (S.STOPPED, InputKind.SPAWNED): (S.STOPPED, ()),
    (S.STOPPED, InputKind.READY): (S.STOPPED, ()),
    (S.STOPPED, InputKind.EXITED): (S.STOPPED, ()),
    (S.STOPPED, InputKind.STOP): (S.STOPPED, ()),
    (S.STOPPED, InputKind.TIMER): (S.STOPPED, ()),
    (S.STARTING, InputKind.START): (S.STARTING, ()),
    (S.STARTING, InputKind.SPAWNED): (S.STARTING, ()),
    (S.STARTING, InputKind.READY): (S.RUNNING, ()),
    (S.STARTING, InputKind.EXITED): (S.BACKOFF, ()),
    (S.STARTING, InputKind.STOP): (S.STOPPING, (TERM,)),
    (S.STARTING, InputKind.TIMER): (S.RUNNING, ()),
    (S.RUNNING, InputKind.START): (S.RUNNING, ()),
    (S.RUNNING, InputKind.SPAWNED): (S.RUNNING, ()),
    (S.RUNNING, InputKind.READY): (S.RUNNING, ()),
    (S.RUNNING, InputKind.EXITED): (S.EXITED, ()),
    (S.RUNNING, InputKind.STOP): (S.STOPPING, (TERM,)),
    (S.RUNNING, InputKind.TIMER): (S.RUNNING, ()),
    (S.BACKOFF, InputKind.START): (S.BACKOFF, ()),
    (S.BACKOFF, InputKind.SPAWNED): (S.BACKOFF, ()),
    (S.BACKOFF, InputKind.READY): (S.BACKOFF, ()),
    (S.BACKOFF, InputKind.EXITED): (S.BACKOFF, ()),
    (S.BACKOFF, InputKind.STOP): (S.STOPPED, ()),
    (S.BACKOFF, InputKind.TIMER): (S.STARTING, (SPAWN,)),
    (S.STOPPING, InputKind.START): (S.STOPPING, ()),
    (S.STOPPING, InputKind.SPAWNED): (S.STOPPING, ()),
    (S.STOPPING, InputKind.READY): (S.STOPPING, ()),
    (S.STOPPING, InputKind.EXITED): (S.STOPPED, ()),
    (S.STOPPING, InputKind.STOP): (S.STOPPING, ()),
    (S.STOPPING, InputKind.TIMER): (S.STOPPING, (KILL,)),
    (S.EXITED, InputKind.START): (S.STARTING, (SPAWN,)),
    (S.EXITED, InputKind.SPAWNED): (S.EXITED, ()),
    (S.EXITED, InputKind.READY): (S.EXITED, ()),
    (S.EXITED, InputKind.EXITED): (S.EXITED, ()),
    (S.EXITED, InputKind.STOP): (S.STOPPED, ()),
    (S.EXITED, InputKind.TIMER): (S.STARTING, (SPAWN,)),
    (S.FATAL, InputKind.START): (S.STARTING, (SPAWN,)),
    (S.FATAL, InputKind.SPAWNED): (S.FATAL, ()),
    (S.FATAL, InputKind.READY): (S.FATAL, ()),
    (S.FATAL, InputKind.EXITED): (S.FATAL, ()),
    (S.FATAL, InputKind.STOP): (S.FATAL, ()),
    (S.FATAL, InputKind.TIMER): (S.FATAL, ()),
}


def test_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(PAIRS)


PAIRS = [(s, i) for s in ChildState for i in InputKind]


@pytest.mark.parametrize(("state", "kind"), PAIRS)
def test_every_state_input_pair(state: ChildState, kind: InputKind) -> None:
    c, t = child_in(state)
    assert c.state is state
    deadline = c.next_deadline()
    now = deadline if (kind is InputKind.TIMER and deadline is not None) else t + 0.01
    c.handle(the_input(kind), now)
    step = drain(c)
    want_state, want_actions = EXPECTED[(state, kind)]
    assert c.state is want_state
    assert step.actions == want_actions
    if want_state is state:
        assert step.events == ()
    else:
        (ev,) = step.events
        assert (ev.child, ev.old, ev.new, ev.at) == ("w", state, want_state, now)
        assert ev.deadline == c.next_deadline()
        assert want_state in next_states(state, kind)


def test_table_lists_only_pairs_that_can_do_something() -> None:
    # Every listed pair changes state or acts in at least one reachable situation (checked above
    # or in the edge tests below); an unlisted pair is counted as ignored.
    c, t = child_in(S.RUNNING)
    before = c.ignored
    c.handle(StartRequested(), t)
    assert c.ignored == before + 1


def test_transitions_are_one_next_state_per_state_and_trigger() -> None:
    assert {t for _, t in TRANSITIONS} == set(Trigger)  # every trigger moves some state
    assert all((state, t.input) in ACCEPTS for state, t in TRANSITIONS)
    # where one input has two outcomes, each has its own trigger
    assert next_states(S.STARTING, InputKind.EXITED) == {S.BACKOFF, S.FATAL}
    assert next_states(S.STOPPING, InputKind.EXITED) == {S.STOPPED, S.STARTING}


def test_outputs_are_drained_in_order_transition_then_its_action() -> None:
    c = Child("w", POLICY)
    c.start(0.0)
    ev, spawn = c.take_outputs()
    assert isinstance(ev, Transition) and (ev.old, ev.new) == (S.STOPPED, S.STARTING)
    assert spawn == Spawn("w")
    assert c.take_outputs() == []  # taken means forgotten


def test_group_keeps_one_order_across_children_and_direct_inputs() -> None:
    sup = Supervision(POLICY)
    sup.add("a", ChildKind.SINK)
    sup.add("b", ChildKind.WORKER)
    sup.start_all(0.0)
    assert [(type(o).__name__, o.child) for o in sup.take_outputs()] == [
        ("Transition", "a"), ("Spawn", "a"), ("Transition", "b"), ("Spawn", "b")]
    sup.child("b").stop(0.1)  # an input given to a child straight lands in the same queue
    (ev,) = sup.take_outputs()
    assert isinstance(ev, Transition) and (ev.child, ev.new) == ("b", S.STOPPING)


# ----------------------------------------------------------------------------- edges


def test_alive_for_start_seconds_is_running_but_not_before() -> None:
    c, _ = child_in(S.STARTING)
    assert c.next_deadline() == 1.0
    c.on_timer(0.999)
    assert drain(c) == NOTHING
    assert c.state is S.STARTING
    c.on_timer(1.0)
    (ev,) = drain(c).events
    assert ev.new is S.RUNNING and "alive for 1 s" in ev.reason
    assert c.next_deadline() is None


def test_spawn_failure_counts_as_a_quick_failure() -> None:
    c = Child("w", POLICY, rng=lambda: 0.0)
    c.start(0.0)
    drain(c)
    c.exited(0.0)
    (ev,) = drain(c).events  # no pid: the spawn itself failed
    assert ev.new is S.BACKOFF and "failed to spawn" in ev.reason
    assert c.next_deadline() == pytest.approx(0.5)


def test_stale_exit_of_previous_process_is_ignored() -> None:
    c, t = child_in(S.RUNNING)
    c.exited(t, pid=99, code=0)
    assert drain(c) == NOTHING
    assert c.state is S.RUNNING and c.ignored == 1
    c.ready(t, pid=99)
    assert drain(c) == NOTHING


def test_stop_while_spawn_in_flight_terms_the_process_once_it_exists() -> None:
    c = Child("w", POLICY)
    c.start(0.0)
    drain(c)
    c.stop(0.1)
    step = drain(c)
    assert c.state is S.STOPPING and step.actions == () and c.next_deadline() is None
    c.spawned(321, 0.2)
    step = drain(c)
    assert step.actions == (Signal("w", 321, "TERM"),)
    assert c.next_deadline() == pytest.approx(5.2)
    c.exited(0.3, 321, signal="TERM")
    (ev,) = drain(c).events
    assert ev.new is S.STOPPED and "SIGTERM" in ev.reason


def test_spawn_failure_while_stopping_ends_stopped() -> None:
    c = Child("w", POLICY)
    c.start(0.0)
    c.stop(0.1)
    drain(c)
    c.exited(0.2)
    (ev,) = drain(c).events
    assert ev.new is S.STOPPED


def test_start_during_stop_restarts_after_exit_and_stop_cancels_it() -> None:
    c, _ = child_in(S.STOPPING)
    c.start(1.0)
    c.exited(2.0, PID, code=0)
    step = drain(c)
    assert c.state is S.STARTING and step.actions == (Spawn("w"),)

    c, _ = child_in(S.STOPPING)
    c.start(1.0)
    c.stop(1.5)
    c.exited(2.0, PID, code=0)
    assert c.state is S.STOPPED


def test_kill_escalation_after_stop_timeout() -> None:
    c, _ = child_in(S.RUNNING)
    c.stop(10.0)
    step = drain(c)
    assert step.actions == (Signal("w", PID, "TERM"),)
    assert c.next_deadline() == 15.0
    c.on_timer(14.999)
    assert drain(c) == NOTHING
    c.on_timer(15.0)
    assert drain(c).actions == (Signal("w", PID, "KILL"),)
    assert c.next_deadline() is None  # KILL cannot be ignored: nothing further to schedule
    c.on_timer(100.0)
    assert drain(c) == NOTHING
    c.exited(15.1, PID, signal="KILL")
    (ev,) = drain(c).events
    assert ev.new is S.STOPPED and ev.exit_signal == "KILL"


def test_start_seconds_zero_runs_on_spawn() -> None:
    c = Child("w", RestartPolicy(start_seconds=0))
    c.start(0.0)
    drain(c)
    c.spawned(5, 0.0)
    (ev,) = drain(c).events
    assert ev.new is S.RUNNING


def test_exit_after_running_restarts_after_first_backoff_step() -> None:
    c, _ = child_in(S.RUNNING)
    c.exited(7.0, PID, code=-11, signal="SEGV")
    (ev,) = drain(c).events
    assert ev.new is S.EXITED and ev.pid == PID and ev.exit_signal == "SEGV"
    assert c.pid is None and c.failures == 0
    assert c.next_deadline() == pytest.approx(7.0 + 0.5 * (1 - 0.2 * 0.5))
    c.on_timer(c.next_deadline() or 0)
    step = drain(c)
    assert step.actions == (Spawn("w"),) and c.restarts == 1


def test_no_autorestart_leaves_exited_at_rest() -> None:
    c = Child("w", RestartPolicy(autorestart=False))
    c.start(0)
    c.spawned(1, 0)
    c.ready(0)
    c.exited(1, 1, code=0)
    assert c.state is S.EXITED and c.next_deadline() is None and c.at_rest


def test_fatal_after_exactly_max_quick_failures_and_running_resets_the_count() -> None:
    c = Child("w", POLICY, rng=lambda: 0.0)
    t = 0.0
    c.start(t)
    states = []
    for i in range(POLICY.max_quick_failures):
        c.spawned(i + 1, t)
        c.exited(t + 0.1, i + 1, code=1)
        states.append(c.state)
        t = c.next_deadline() or t
        c.on_timer(t)
    assert states == [S.BACKOFF, S.BACKOFF, S.FATAL]
    assert c.failures == 3 and c.at_rest and c.next_deadline() is None

    c.start(t)  # operator START gives a fresh budget
    assert c.failures == 0 and c.state is S.STARTING
    c.spawned(9, t)
    c.exited(t, 9, code=1)
    c.on_timer(c.next_deadline() or 0)
    c.spawned(10, t + 5)
    c.ready(t + 5)
    assert c.failures == 0  # reaching RUNNING forgives earlier failures


def test_quick_failure_backoff_doubles_then_caps() -> None:
    policy = RestartPolicy(
        backoff_initial=1, backoff_factor=2, backoff_max=10, jitter=0, max_quick_failures=100
    )
    c = Child("w", policy)
    t = 0.0
    c.start(t)
    delays = []
    for i in range(6):
        c.spawned(i + 1, t)
        c.exited(t, i + 1, code=1)
        d = c.next_deadline()
        assert d is not None
        delays.append(d - t)
        t = d
        c.on_timer(t)
    assert delays == [1, 2, 4, 8, 10, 10]


def test_backoff_delay_jitter_bounds() -> None:
    p = RestartPolicy(backoff_initial=0.5, backoff_factor=2, backoff_max=30, jitter=0.2)
    assert backoff_delay(p, 1, 0.0) == 0.5
    assert backoff_delay(p, 1, 1.0) == pytest.approx(0.4)
    assert backoff_delay(p, 7, 0.0) == 30  # 0.5 * 64 = 32 -> capped
    assert backoff_delay(p, 10**9, 0.0) == 30  # no overflow on absurd counts
    assert backoff_delay(p, 3, 5.0) == pytest.approx(2.0 * 0.8)  # u is clamped to [0, 1]


@given(
    failures=st.integers(1, 10_000),
    u=st.floats(0, 1),
    initial=st.floats(0, 100),
    extra=st.floats(0, 1000),
    factor=st.floats(1, 10),
    jitter=st.floats(0, 1),
)
def test_backoff_delay_stays_within_bounds(
    failures: int, u: float, initial: float, extra: float, factor: float, jitter: float
) -> None:
    p = RestartPolicy(
        backoff_initial=initial, backoff_max=initial + extra, backoff_factor=factor, jitter=jitter
    )
    d = backoff_delay(p, failures, u)
    try:
        base = min(initial * factor ** (failures - 1), p.backoff_max)
    except OverflowError:  # factor ** n beyond float range: capped, unless it started at 0
        base = p.backoff_max if initial > 0 else 0.0
    assert 0 <= d <= p.backoff_max
    assert base * (1 - jitter) - 1e-9 * max(1, base) <= d <= base + 1e-9 * max(1, base)


def test_jitter_comes_from_the_passed_rng() -> None:
    draws = iter([0.0, 1.0])
    c = Child("w", POLICY, rng=lambda: next(draws))
    c.start(0)
    c.spawned(1, 0)
    c.exited(0, 1, code=1)
    assert c.next_deadline() == pytest.approx(0.5)
    c.on_timer(0.5)
    c.spawned(2, 0.5)
    c.exited(0.5, 2, code=1)
    assert c.next_deadline() == pytest.approx(0.5 + 1.0 * 0.8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_seconds": -1},
        {"stop_timeout": -1},
        {"backoff_initial": 5, "backoff_max": 1},
        {"backoff_factor": 0.5},
        {"jitter": 1.5},
        {"max_quick_failures": 0},
    ],
)
def test_restart_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_clock_stepping_back_does_not_move_deadlines_back() -> None:
    c, _ = child_in(S.RUNNING)
    c.stop(100.0)
    assert c.next_deadline() == 105.0
    c, _ = child_in(S.STARTING)
    c.exited(50.0, PID, code=1)
    c.on_timer(c.next_deadline() or 0)
    c.spawned(7, 10.0)  # clock went back: treated as 50+
    deadline = c.next_deadline()
    assert deadline is not None and deadline >= 50.0 + POLICY.start_seconds


# ----------------------------------------------------------------------------- property

INPUTS = st.one_of(
    st.just(StartRequested()),
    st.builds(Spawned, st.integers(1, 5)),
    st.builds(Ready, st.one_of(st.none(), st.integers(1, 5))),
    st.builds(
        Exited,
        st.one_of(st.none(), st.integers(1, 5)),
        st.one_of(st.none(), st.integers(-15, 255)),
        st.one_of(st.none(), st.sampled_from(["KILL", "TERM", "SEGV"])),
    ),
    st.just(StopRequested()),
    st.just(Timer()),
)
STEPS = st.lists(st.tuples(INPUTS, st.floats(0, 60)), max_size=60)
POLICIES = st.builds(
    RestartPolicy,
    start_seconds=st.sampled_from([0.0, 0.5, 1.0]),
    backoff_initial=st.sampled_from([0.0, 0.5]),
    backoff_max=st.sampled_from([1.0, 30.0]),
    jitter=st.floats(0, 1),
    max_quick_failures=st.integers(1, 4),
    stop_timeout=st.sampled_from([0.0, 2.0]),
    autorestart=st.booleans(),
)


@settings(max_examples=300)
@given(policy=POLICIES, steps=STEPS, seed=st.integers(0, 2**32))
def test_any_input_sequence_never_raises_and_deadlines_never_go_back(
    policy: RestartPolicy, steps: list[tuple[Input, float]], seed: int
) -> None:
    c = Child("w", policy, rng=random.Random(seed).random)
    now = 0.0
    for inp, dt in steps:
        now += dt
        old_state, old_deadline = c.state, c.next_deadline()
        c.handle(inp, now)
        step = drain(c)
        deadline = c.next_deadline()
        if deadline is not None:
            assert deadline >= now
            if c.state is old_state and old_deadline is not None and not step.actions:
                assert deadline >= old_deadline
        for ev in step.events:
            assert ev.new in next_states(ev.old, inp.kind)
        if c.state in (S.STOPPED, S.FATAL, S.RUNNING):
            assert deadline is None
        if c.state in (S.STOPPED, S.FATAL, S.BACKOFF, S.EXITED):
            assert c.pid is None
        for a in step.actions:
            if isinstance(a, Signal):
                assert a.pid == c.pid and a.signal in ("TERM", "KILL")
        # and the shell may always fire the timer at its deadline
        if deadline is not None:
            c.on_timer(deadline)
            c.take_outputs()
            now = max(now, deadline)


# ----------------------------------------------------------------------------- the group


KINDS = {
    "sqlite": ChildKind.SINK,
    "w1": ChildKind.WORKER,
    "bus": ChildKind.FORWARDER,
    "w2": ChildKind.WORKER,
    "jsonl": ChildKind.SINK,
}


def test_stop_phases_workers_then_sinks_then_forwarder() -> None:
    assert stop_phases(KINDS) == (("w1", "w2"), ("sqlite", "jsonl"), ("bus",))
    assert start_phases(KINDS) == (("bus",), ("sqlite", "jsonl"), ("w1", "w2"))
    assert stop_phases({}) == ()


def running_group() -> tuple[Supervision, dict[str, int]]:
    sup = Supervision(POLICY)
    for name, kind in KINDS.items():
        sup.add(name, kind)
    sup.start_all(0.0)
    step = drain(sup)
    assert [a for a in step.actions] == [Spawn(n) for n in ("bus", "sqlite", "jsonl", "w1", "w2")]
    pids = {name: 10 + i for i, name in enumerate(KINDS)}
    for name, pid in pids.items():
        sup.handle(name, Spawned(pid), 0.0)
        sup.handle(name, Ready(), 0.1)
    assert all(c.state is S.RUNNING for c in sup.children.values())
    drain(sup)
    return sup, pids


def test_graceful_shutdown_waits_for_each_phase() -> None:
    sup, pids = running_group()
    sup.shutdown(1.0)
    step = drain(sup)
    assert {a for a in step.actions} == {
        Signal("w1", pids["w1"], "TERM"),
        Signal("w2", pids["w2"], "TERM"),
    }
    sup.handle("w1", Exited(pids["w1"], 0), 1.1)
    assert drain(sup).actions == ()
    sup.handle("w2", Exited(pids["w2"], 0), 1.2)
    step = drain(sup)
    assert set(step.actions) == {
        Signal("sqlite", pids["sqlite"], "TERM"),
        Signal("jsonl", pids["jsonl"], "TERM"),
    }
    sup.handle("sqlite", Exited(pids["sqlite"], 0), 1.3)
    assert not sup.done and drain(sup).actions == ()
    sup.handle("jsonl", Exited(pids["jsonl"], 0), 1.4)
    step = drain(sup)
    assert step.actions == (Signal("bus", pids["bus"], "TERM"),)
    sup.handle("bus", Exited(pids["bus"], 0), 1.5)
    assert sup.done and sup.next_deadline() is None


def test_shutdown_escalates_a_stuck_worker_before_moving_on() -> None:
    sup, pids = running_group()
    sup.shutdown(1.0)
    sup.handle("w1", Exited(pids["w1"], 0), 1.1)
    drain(sup)
    assert sup.next_deadline() == 6.0
    sup.on_timer(5.9)
    assert drain(sup) == NOTHING
    sup.on_timer(6.0)
    assert drain(sup).actions == (Signal("w2", pids["w2"], "KILL"),)
    sup.handle("w2", Exited(pids["w2"], signal="KILL"), 6.1)
    step = drain(sup)
    assert {a.child for a in step.actions} == {"sqlite", "jsonl"}


def test_shutdown_skips_children_with_no_process_and_refuses_starts() -> None:
    sup, pids = running_group()
    sup.handle("w1", Exited(pids["w1"], code=1), 0.5)  # EXITED, restart pending
    assert sup.child("w1").state is S.EXITED
    sup.shutdown(1.0)
    drain(sup)
    assert sup.child("w1").state is S.STOPPED
    sup.handle("w1", StartRequested(), 1.1)
    assert drain(sup) == NOTHING
    assert sup.child("w1").state is S.STOPPED
    sup.start_all(1.2)
    assert drain(sup) == NOTHING
    sup.shutdown(1.3)
    assert drain(sup) == NOTHING  # idempotent
    with pytest.raises(UsageError):
        sup.add("w3", ChildKind.WORKER)


def test_group_timer_restarts_crashed_child_and_bookkeeping() -> None:
    sup, pids = running_group()
    sup.handle("sqlite", Exited(pids["sqlite"], signal="KILL"), 2.0)
    drain(sup)
    deadline = sup.next_deadline()
    assert deadline is not None and deadline > 2.0
    sup.on_timer(deadline)
    assert drain(sup).actions == (Spawn("sqlite"),)
    with pytest.raises(UsageError):
        sup.remove("w1")  # still running
    sup.handle("w1", StopRequested(), 3.0)
    sup.handle("w1", Exited(pids["w1"], 0), 3.1)
    sup.remove("w1")
    assert "w1" not in sup.children
    with pytest.raises(UsageError):
        sup.child("w1")
    with pytest.raises(UsageError):
        sup.add("w2", ChildKind.WORKER)


GROUP_INPUTS = st.tuples(st.sampled_from(sorted(KINDS)), INPUTS, st.floats(0, 30))


@settings(max_examples=200)
@given(steps=st.lists(st.one_of(GROUP_INPUTS, st.just("shutdown"), st.just("timer")), max_size=50))
def test_group_never_raises_and_deadlines_are_not_in_the_past(steps: list[object]) -> None:
    sup = Supervision(POLICY, rng=random.Random(1).random)
    for name, kind in KINDS.items():
        sup.add(name, kind)
    now = 0.0
    sup.start_all(now)
    direct_stop = False
    for s in steps:
        if s == "shutdown":
            sup.shutdown(now)
        elif s == "timer":
            d = sup.next_deadline()
            now = max(now, d if d is not None else now)
            sup.on_timer(now)
        else:
            assert isinstance(s, tuple)
            name, inp, dt = s
            direct_stop = direct_stop or isinstance(inp, StopRequested)
            now += dt
            sup.on_timer(now)  # as the shell does: overdue timers first, then the input
            sup.handle(name, inp, now)
        d = sup.next_deadline()
        assert d is None or d >= now
        if sup.shutting_down and not direct_stop:
            # nothing of a later phase is stopped while an earlier phase still has a process
            ranks_busy = [c.kind for c in sup.children.values() if not c.at_rest]
            if ranks_busy:
                low = min(ranks_busy)
                for c in sup.children.values():
                    if c.kind > low and c.state is S.STOPPING:
                        pytest.fail(f"{c.name} stopping before {low.name} finished")
