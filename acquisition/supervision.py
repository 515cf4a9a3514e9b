"""Pure model of child-process supervision (I/O workers, sinks, the web process, the forwarder).

Owns: the per-child state machine in the style of supervisord / circus (STOPPED, STARTING,
RUNNING, BACKOFF, STOPPING, EXITED, FATAL), capped exponential backoff with jitter, the FATAL
threshold for children that keep dying during start-up, stop-then-kill escalation, and the
graceful shutdown order of a whole pipeline (workers first so they Forward_Close while sinks still
listen, sinks after them so they flush everything the workers published, the web page after them
so it shows the stop to the end, the forwarder last).

It does nothing itself: time is an argument, randomness comes from a passed-in ``rng`` callable,
and every decision comes back as data, drained in order with ``take_outputs()``: ``Spawn`` /
``Signal`` actions for the supervisor process to carry out and ``Transition`` events for it to
publish (ARCHITECTURE.md "Processes" and "The one shape of a sans-IO machine"; STYLE.md 2, 8).
No protocol.md section is implemented here; ``RestartPolicy`` defaults follow protocol.md 7.7's
retry advice (0.5 s doubling to a 30 s cap, plus jitter).

Inputs a child accepts (each also a method): ``StartRequested``, ``Spawned(pid)`` (the supervisor
started the process), ``Ready(pid)`` (the child said so, e.g. its control socket answered),
``Exited(pid, code, signal)``, ``StopRequested``, and the timer (``next_deadline()`` +
``on_timer(now)``); inputs return None. Inputs that do not apply in the current state (a late
``Exited`` of a previous incarnation, ``Ready`` after a crash) are ignored and counted, never
raised: they are races between processes, not bugs.

States are ``ChildState``; what moves a child is a ``Trigger`` (an input kind refined by the
condition that picked the outcome: an ``Exited`` while STARTING is a ``QUICK_FAILURE`` or, at the
limit, ``TOO_MANY_FAILURES``); the data table ``TRANSITIONS`` maps ``(state, trigger)`` to the next
state and ``Child._transition`` is the one place that changes ``state``, emitting one
``Transition`` each time. ``ACCEPTS`` lists the ``(state, input kind)`` pairs that do anything.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from pyconpro.acquisition.errors import UsageError

__all__ = [
    "ACCEPTS",
    "TRANSITIONS",
    "Action",
    "Child",
    "ChildKind",
    "ChildState",
    "Exited",
    "Input",
    "InputKind",
    "Output",
    "Ready",
    "RestartPolicy",
    "Signal",
    "Spawn",
    "Spawned",
    "StartRequested",
    "StopRequested",
    "Supervision",
    "Timer",
    "Transition",
    "Trigger",
    "backoff_delay",
    "next_states",
    "start_phases",
    "stop_phases",
]


class ChildState(enum.Enum):
    STOPPED = "STOPPED"  # not running and not wanted
    STARTING = "STARTING"  # spawned (or being spawned), not yet ready / alive for start_seconds
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"  # died while STARTING; respawn at the deadline
    STOPPING = "STOPPING"  # TERM sent; KILL at the deadline
    EXITED = "EXITED"  # died after RUNNING; respawn at the deadline (if autorestart)
    FATAL = "FATAL"  # died while STARTING max_quick_failures times in a row; needs a START


class ChildKind(enum.IntEnum):
    """What a child is; the value is its rank in the stop order (lowest stops first)."""

    WORKER = 0  # stops first: Forward_Close while the bus and the sinks still run
    SINK = 1  # then flushes what the workers published
    WEB = 2  # the live page and /metrics: watches the others stop (started before them)
    FORWARDER = 3  # the bus endpoint goes last so sinks drain through it


class InputKind(enum.Enum):
    START = "start"
    SPAWNED = "spawned"
    READY = "ready"
    EXITED = "exited"
    STOP = "stop"
    TIMER = "timer"


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class StartRequested:
    kind: ClassVar[InputKind] = InputKind.START


@dataclass(frozen=True, slots=True)
class Spawned:
    pid: int
    kind: ClassVar[InputKind] = InputKind.SPAWNED


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int | None = None  # None: whichever process is current
    kind: ClassVar[InputKind] = InputKind.READY


@dataclass(frozen=True, slots=True)
class Exited:
    """The process ended. ``pid=None`` with nothing spawned yet means the spawn itself failed."""

    pid: int | None = None
    code: int | None = None
    signal: str | None = None  # e.g. "KILL", "SEGV"
    kind: ClassVar[InputKind] = InputKind.EXITED


@dataclass(frozen=True, slots=True)
class StopRequested:
    kind: ClassVar[InputKind] = InputKind.STOP


@dataclass(frozen=True, slots=True)
class Timer:
    kind: ClassVar[InputKind] = InputKind.TIMER


Input = StartRequested | Spawned | Ready | Exited | StopRequested | Timer


# ----------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start a new process for ``child``; report ``Spawned(pid)`` (or ``Exited()`` on failure)."""

    child: str


@dataclass(frozen=True, slots=True)
class Signal:
    """Send ``signal`` ("TERM" or "KILL") to process ``pid`` of ``child``."""

    child: str
    pid: int
    signal: str


Action = Spawn | Signal


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change of one child, for the event stream and the status screen."""

    child: str
    old: ChildState
    new: ChildState
    at: float
    reason: str
    pid: int | None = None
    exit_code: int | None = None
    exit_signal: str | None = None
    failures: int = 0  # consecutive quick failures so far
    deadline: float | None = None  # when the child next needs attention (retry, kill, ...)


Output = Spawn | Signal | Transition
"""What ``take_outputs()`` returns: actions to carry out and transitions to publish, in order."""


# ----------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a child is started, restarted and stopped. Durations in seconds.

    start_seconds: alive this long (or ``Ready``) counts as started; dying sooner is a quick
        failure. backoff_*: delay before respawn after the n-th consecutive quick failure is
        ``min(backoff_max, backoff_initial * backoff_factor ** (n - 1))`` reduced by up to
        ``jitter`` (a fraction) so that children failing together do not restart in lock step.
        A child that dies after RUNNING is respawned after the first backoff step.
    max_quick_failures: that many quick failures in a row make the child FATAL.
    stop_timeout: seconds between TERM and KILL.
    autorestart: respawn children that exit after RUNNING.
    """

    start_seconds: float = 1.0
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    jitter: float = 0.2
    max_quick_failures: int = 5
    stop_timeout: float = 10.0
    autorestart: bool = True

    def __post_init__(self) -> None:
        if self.start_seconds < 0 or self.stop_timeout < 0:
            raise UsageError("start_seconds and stop_timeout must be >= 0")
        if not 0 <= self.backoff_initial <= self.backoff_max:
            raise UsageError("need 0 <= backoff_initial <= backoff_max")
        if self.backoff_factor < 1:
            raise UsageError("backoff_factor must be >= 1 (the delay never shrinks)")
        if not 0 <= self.jitter <= 1:
            raise UsageError("jitter is a fraction between 0 and 1")
        if self.max_quick_failures < 1:
            raise UsageError("max_quick_failures must be >= 1")


def backoff_delay(policy: RestartPolicy, failures: int, u: float) -> float:
    """Delay before the respawn that follows ``failures`` (>= 1) consecutive failures.

    ``u`` in [0, 1) is the random draw; the result lies in ``[base * (1 - jitter), base]`` with
    ``base`` capped at ``backoff_max``, so the cap is a hard ceiling.
    """
    base = policy.backoff_initial
    for _ in range(max(failures, 1) - 1):  # a loop, not **, so huge counts cannot overflow
        base *= policy.backoff_factor
        if base >= policy.backoff_max:
            break
    base = min(base, policy.backoff_max)
    u = min(max(u, 0.0), 1.0)
    return base * (1.0 - policy.jitter * u)


# ----------------------------------------------------------------------------- the table

S = ChildState
I = InputKind  # noqa: E741 - short alias keeps the transition table readable


class Trigger(enum.Enum):
    """What moves a child from one state to another: the input, and the condition that chose."""

    START = "start"  # StartRequested (an operator START also forgives a FATAL child)
    SPAWNED = "spawned"  # Spawned with start_seconds == 0: started at once
    READY = "ready"  # the child said it is ready
    ALIVE = "alive"  # the timer: alive for start_seconds
    QUICK_FAILURE = "quick failure"  # Exited during start-up, below max_quick_failures
    TOO_MANY_FAILURES = "too many failures"  # Exited during start-up, max_quick_failures reached
    CRASHED = "crashed"  # Exited after RUNNING
    STOP = "stop"  # StopRequested
    RESPAWN = "respawn"  # the timer: a BACKOFF / EXITED child's restart is due
    STOPPED = "stopped"  # Exited while STOPPING
    STOPPED_START = "stopped, start"  # Exited while STOPPING with a START remembered

    @property
    def input(self) -> InputKind:
        return _INPUT_OF[self]


_INPUT_OF: Final[Mapping[Trigger, InputKind]] = {
    Trigger.START: I.START,
    Trigger.SPAWNED: I.SPAWNED,
    Trigger.READY: I.READY,
    Trigger.ALIVE: I.TIMER,
    Trigger.QUICK_FAILURE: I.EXITED,
    Trigger.TOO_MANY_FAILURES: I.EXITED,
    Trigger.CRASHED: I.EXITED,
    Trigger.STOP: I.STOP,
    Trigger.RESPAWN: I.TIMER,
    Trigger.STOPPED: I.EXITED,
    Trigger.STOPPED_START: I.EXITED,
}

T = Trigger

TRANSITIONS: Final[Mapping[tuple[ChildState, Trigger], ChildState]] = {
    (S.STOPPED, T.START): S.STARTING,
    (S.STARTING, T.SPAWNED): S.RUNNING,
    (S.STARTING, T.READY): S.RUNNING,
    (S.STARTING, T.ALIVE): S.RUNNING,
    (S.STARTING, T.QUICK_FAILURE): S.BACKOFF,
    (S.STARTING, T.TOO_MANY_FAILURES): S.FATAL,
    (S.STARTING, T.STOP): S.STOPPING,
    (S.RUNNING, T.CRASHED): S.EXITED,
    (S.RUNNING, T.STOP): S.STOPPING,
    (S.BACKOFF, T.RESPAWN): S.STARTING,
    (S.BACKOFF, T.STOP): S.STOPPED,
    (S.STOPPING, T.STOPPED): S.STOPPED,
    (S.STOPPING, T.STOPPED_START): S.STARTING,
    (S.EXITED, T.START): S.STARTING,
    (S.EXITED, T.RESPAWN): S.STARTING,
    (S.EXITED, T.STOP): S.STOPPED,
    (S.FATAL, T.START): S.STARTING,
}

# Inputs that act without changing state (only while STOPPING, plus the Spawned that a
# STARTING child waits for).
_IN_PLACE: Final = frozenset({
    (S.STARTING, I.SPAWNED),  # the process exists; started after start_seconds or Ready
    (S.STOPPING, I.START),  # remembered: start again once it exited
    (S.STOPPING, I.SPAWNED),  # stop raced the spawn: TERM it now
    (S.STOPPING, I.STOP),  # cancels a remembered start
    (S.STOPPING, I.TIMER),  # stop_timeout: KILL
})

# Every (state, input kind) that does something; any other pair is ignored and counted.
ACCEPTS: Final[frozenset[tuple[ChildState, InputKind]]] = frozenset(
    {(state, trigger.input) for state, trigger in TRANSITIONS} | _IN_PLACE
)


def next_states(state: ChildState, kind: InputKind) -> frozenset[ChildState]:
    """The states an input of ``kind`` may lead to from ``state`` (``state`` itself included
    when it may act in place)."""
    out = {new for (old, t), new in TRANSITIONS.items() if old is state and t.input is kind}
    if (state, kind) in _IN_PLACE:
        out.add(state)
    return frozenset(out)


# States in which no process exists and nothing is scheduled.
AT_REST: Final = frozenset({S.STOPPED, S.FATAL})


# ----------------------------------------------------------------------------- one child


class Child:
    """The supervision state of one child process.

    ``rng`` returns floats in [0, 1) (pass ``random.Random(seed).random``); it is only called
    when a backoff delay is drawn. ``outputs``: the queue ``take_outputs()`` drains; a
    ``Supervision`` passes one queue to all its children so their outputs keep one order.
    """

    def __init__(
        self,
        name: str,
        policy: RestartPolicy | None = None,
        rng: Callable[[], float] = lambda: 0.5,
        kind: ChildKind = ChildKind.WORKER,
        *,
        outputs: list[Output] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.policy = policy if policy is not None else RestartPolicy()
        self._rng = rng
        self.state = ChildState.STOPPED
        self.pid: int | None = None
        self.failures = 0  # consecutive quick failures
        self.restarts = 0  # respawns not asked for by a START
        self.ignored = 0  # inputs that did not apply (races); visible in status
        self.last_exit: tuple[int | None, str | None] | None = None
        self._deadline: float | None = None
        self._start_after_stop = False
        self._now = float("-inf")
        self._outputs: list[Output] = outputs if outputs is not None else []

    # -- outputs and queries

    def take_outputs(self) -> list[Output]:
        """Everything decided since the last call, in order (and forget it)."""
        out, self._outputs[:] = list(self._outputs), []
        return out

    def next_deadline(self) -> float | None:
        """Absolute time at which ``on_timer`` must be called, or None."""
        return self._deadline

    @property
    def at_rest(self) -> bool:
        """No process and nothing scheduled (STOPPED, FATAL, or EXITED without autorestart)."""
        return self.state in AT_REST or (self.state is S.EXITED and self._deadline is None)

    # -- inputs

    def start(self, now: float) -> None:
        self.handle(StartRequested(), now)

    def spawned(self, pid: int, now: float) -> None:
        self.handle(Spawned(pid), now)

    def ready(self, now: float, pid: int | None = None) -> None:
        self.handle(Ready(pid), now)

    def exited(
        self, now: float, pid: int | None = None, code: int | None = None, signal: str | None = None
    ) -> None:
        self.handle(Exited(pid, code, signal), now)

    def stop(self, now: float) -> None:
        self.handle(StopRequested(), now)

    def on_timer(self, now: float) -> None:
        self.handle(Timer(), now)

    def handle(self, inp: Input, now: float) -> None:
        """Feed one input at time ``now``; never raises for any input in any state."""
        # A clock that steps back (caller bug, or two clocks) must not move deadlines backwards.
        now = max(now, self._now)
        self._now = now
        if (self.state, inp.kind) not in ACCEPTS:
            self.ignored += 1
            return
        _HANDLERS[inp.kind](self, inp, now)

    # -- the one place that changes state

    def _transition(
        self,
        trigger: Trigger,
        now: float,
        reason: str,
        deadline: float | None,
        exit_: Exited | None = None,
    ) -> None:
        new = TRANSITIONS.get((self.state, trigger))
        if new is None:  # pragma: no cover - a bug in this module, caught by the tests
            raise AssertionError(f"{self.state} + {trigger} is not in TRANSITIONS")
        old, self.state = self.state, new
        self._deadline = deadline
        self._outputs.append(Transition(
            child=self.name,
            old=old,
            new=new,
            at=now,
            reason=reason,
            pid=self.pid,
            exit_code=exit_.code if exit_ else None,
            exit_signal=exit_.signal if exit_ else None,
            failures=self.failures,
            deadline=deadline,
        ))

    def _spawn(self, trigger: Trigger, now: float, reason: str) -> None:
        self.pid = None
        self._transition(trigger, now, reason, None)
        self._outputs.append(Spawn(self.name))

    def _signal(self, pid: int, signal: str) -> None:
        self._outputs.append(Signal(self.name, pid, signal))

    # -- handlers, one per input kind

    def _on_start(self, inp: Input, now: float) -> None:
        if self.state is S.STOPPING:
            self._start_after_stop = True
            return
        if self.state is S.FATAL:
            self.failures = 0  # an operator START gives a FATAL child a fresh budget
        self._spawn(T.START, now, "start requested")

    def _on_spawned(self, inp: Input, now: float) -> None:
        assert isinstance(inp, Spawned)
        if self.pid is not None:  # a second Spawned for one Spawn: stale, ignore
            self.ignored += 1
            return
        self.pid = inp.pid
        if self.state is S.STOPPING:
            # The stop came before the process existed; now it does, so stop it.
            self._deadline = now + self.policy.stop_timeout
            self._signal(inp.pid, "TERM")
        elif self.policy.start_seconds == 0:
            self._transition(T.SPAWNED, now, "spawned", None)
        else:
            self._deadline = now + self.policy.start_seconds

    def _on_ready(self, inp: Input, now: float) -> None:
        assert isinstance(inp, Ready)
        if self.pid is None or (inp.pid is not None and inp.pid != self.pid):
            self.ignored += 1
            return
        self._running(T.READY, now, "reported ready")

    def _running(self, trigger: Trigger, now: float, reason: str) -> None:
        self.failures = 0
        self._transition(trigger, now, reason, None)

    def _on_timer(self, inp: Input, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        if self.state is S.STARTING:
            if self.pid is None:  # pragma: no cover - no deadline is set before Spawned
                return
            self._running(T.ALIVE, now, f"alive for {self.policy.start_seconds:g} s")
        elif self.state is S.STOPPING:
            assert self.pid is not None
            self._deadline = None  # KILL cannot be ignored; nothing more to escalate to
            self._signal(self.pid, "KILL")
        else:
            self.restarts += 1
            self._spawn(T.RESPAWN, now, f"restart after {self.state.value.lower()}")

    def _on_exited(self, inp: Input, now: float) -> None:
        assert isinstance(inp, Exited)
        if self.pid is None:
            # Only a failed spawn reports an exit before Spawned (pid unknown).
            stale = inp.pid is not None or self.state not in (S.STARTING, S.STOPPING)
        else:
            stale = inp.pid is not None and inp.pid != self.pid
        if stale:
            self.ignored += 1
            return
        self.last_exit = (inp.code, inp.signal)
        how = _describe_exit(inp)
        if self.state is S.STOPPING:
            if self._start_after_stop:
                self._start_after_stop = False
                self._transition(T.STOPPED_START, now, f"stopped ({how}); start requested", None)
                self.pid = None
                self._outputs.append(Spawn(self.name))
                return
            self._transition(T.STOPPED, now, f"stopped ({how})", None, inp)
        elif self.state is S.STARTING:
            self.failures += 1
            limit = self.policy.max_quick_failures
            if self.failures >= limit:
                self._transition(
                    T.TOO_MANY_FAILURES,
                    now,
                    f"{how} during start-up, {self.failures} times in a row; not restarting",
                    None,
                    inp,
                )
            else:
                delay = backoff_delay(self.policy, self.failures, self._rng())
                self._transition(
                    T.QUICK_FAILURE,
                    now,
                    f"{how} during start-up ({self.failures}/{limit}); retry in {delay:.3g} s",
                    now + delay,
                    inp,
                )
        else:  # RUNNING
            deadline = (
                now + backoff_delay(self.policy, 1, self._rng())
                if self.policy.autorestart else None
            )
            self._transition(T.CRASHED, now, how, deadline, inp)
        self.pid = None

    def _on_stop(self, inp: Input, now: float) -> None:
        if self.state is S.STOPPING:
            self._start_after_stop = False
        elif self.state in (S.STARTING, S.RUNNING):
            if self.pid is None:  # spawn still in flight: TERM it when Spawned arrives
                self._transition(T.STOP, now, "stop requested", None)
                return
            self._transition(T.STOP, now, "stop requested", now + self.policy.stop_timeout)
            self._signal(self.pid, "TERM")
        else:  # BACKOFF / EXITED: no process, just cancel the respawn
            self._transition(T.STOP, now, "stop requested", None)


def _describe_exit(inp: Exited) -> str:
    if inp.signal is not None:
        return f"killed by SIG{inp.signal}"
    if inp.code is not None:
        return f"exited with code {inp.code}"
    if inp.pid is None:
        return "failed to spawn"
    return "exited"


_HANDLERS: Final[Mapping[InputKind, Callable[[Child, Input, float], None]]] = {
    I.START: Child._on_start,
    I.SPAWNED: Child._on_spawned,
    I.READY: Child._on_ready,
    I.TIMER: Child._on_timer,
    I.EXITED: Child._on_exited,
    I.STOP: Child._on_stop,
}


# ----------------------------------------------------------------------------- ordering


def stop_phases(kinds: Mapping[str, ChildKind]) -> tuple[tuple[str, ...], ...]:
    """Graceful stop order as phases: every worker, then every sink, the web process, then the
    forwarder.

    A phase starts when every child of the previous one has exited, so workers can Forward_Close
    and publish their last samples while sinks are still there to write them.
    """
    ranks = sorted({k for k in kinds.values()})
    return tuple(tuple(n for n, k in kinds.items() if k == rank) for rank in ranks)


def start_phases(kinds: Mapping[str, ChildKind]) -> tuple[tuple[str, ...], ...]:
    """Start order: the reverse of the stop order (bus, then sinks, then workers)."""
    return tuple(reversed(stop_phases(kinds)))


# ----------------------------------------------------------------------------- the group


class Supervision:
    """Every child of one supervisor, plus the graceful-shutdown sequence across them.

    The children share this object's output queue: ``take_outputs()`` returns what every child
    decided, in order, whether the input came through here or straight to a ``Child``.
    """

    def __init__(
        self, policy: RestartPolicy | None = None, rng: Callable[[], float] = lambda: 0.5
    ) -> None:
        self.policy = policy if policy is not None else RestartPolicy()
        self._rng = rng
        self.children: dict[str, Child] = {}
        self._phases: tuple[tuple[str, ...], ...] = ()
        self._phase = -1  # -1: not shutting down
        self._outputs: list[Output] = []

    def take_outputs(self) -> list[Output]:
        """Every action and transition since the last call, in order (and forget them)."""
        out, self._outputs[:] = list(self._outputs), []
        return out

    def add(self, name: str, kind: ChildKind, policy: RestartPolicy | None = None) -> Child:
        if name in self.children:
            raise UsageError(f"child {name!r} already exists; remove it first")
        if self.shutting_down:
            raise UsageError("cannot add children during shutdown")
        child = Child(name, policy or self.policy, self._rng, kind, outputs=self._outputs)
        self.children[name] = child
        return child

    def remove(self, name: str) -> None:
        """Forget a child that is at rest (stop it first, e.g. on a config reload)."""
        child = self.child(name)
        if not child.at_rest:
            raise UsageError(f"child {name!r} is {child.state.value}; stop it before removing it")
        del self.children[name]

    def child(self, name: str) -> Child:
        try:
            return self.children[name]
        except KeyError:
            raise UsageError(f"no child named {name!r}") from None

    @property
    def shutting_down(self) -> bool:
        return self._phase >= 0

    @property
    def done(self) -> bool:
        """Shutdown finished: every child at rest."""
        return self.shutting_down and all(c.at_rest for c in self.children.values())

    def _kinds(self) -> dict[str, ChildKind]:
        return {n: c.kind for n, c in self.children.items()}

    def start_all(self, now: float) -> None:
        """START every child, in start order (the forwarder first, workers last)."""
        if self.shutting_down:
            return
        for phase in start_phases(self._kinds()):
            for name in phase:
                self.children[name].start(now)

    def handle(self, name: str, inp: Input, now: float) -> None:
        """Route an input to one child (a START during shutdown is dropped)."""
        child = self.child(name)
        if self.shutting_down and inp.kind is I.START:
            child.ignored += 1
            return
        child.handle(inp, now)
        self._advance(now)

    def on_timer(self, now: float) -> None:
        for child in list(self.children.values()):
            deadline = child.next_deadline()
            if deadline is not None and deadline <= now:
                child.on_timer(now)
        self._advance(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for c in self.children.values() if (d := c.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def shutdown(self, now: float) -> None:
        """Begin the graceful stop: workers, then sinks, then the forwarder."""
        if self.shutting_down:
            return
        self._phases = stop_phases(self._kinds())
        self._phase = 0
        self._stop_phase(now)
        self._advance(now)

    def _stop_phase(self, now: float) -> None:
        if self._phase >= len(self._phases):
            return
        for name in self._phases[self._phase]:
            if name in self.children:
                self.children[name].stop(now)

    def _advance(self, now: float) -> None:
        while self.shutting_down and self._phase < len(self._phases):
            phase = self._phases[self._phase]
            if not all(self.children[n].at_rest for n in phase if n in self.children):
                break
            self._phase += 1
            self._stop_phase(now)
