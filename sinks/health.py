"""Whether a sink's output takes writes and, while it does not, when to try again and when to
remind the user: pure bookkeeping that the SUB loop (``sinks/base.py``) feeds with the outcome
of each write and ``now``."""

from __future__ import annotations

import enum

from pyconpro.acquisition.originator import BackoffPolicy

__all__ = ["OutputHealth", "OutputState"]


class OutputState(enum.Enum):
    WRITING = "writing"
    RETRYING = "retrying"  # the last write raised OutputUnavailable; records are kept


class OutputHealth:
    """Whether the output takes writes and, while it does not, when to try again and when to
    remind the user. Pure bookkeeping: the loop reports each write's outcome with ``now``."""

    __slots__ = (
        "_next_reminder", "_policy", "_remind_every", "cause", "failures", "message",
        "next_attempt", "since", "state",
    )  # fmt: skip

    def __init__(self, policy: BackoffPolicy, remind_every: float) -> None:
        self._policy = policy
        self._remind_every = remind_every
        self._next_reminder = 0.0
        self.state = OutputState.WRITING
        self.cause = ""
        self.message = ""
        self.since = 0.0  # when the current state began
        self.failures = 0  # consecutive failed writes
        self.next_attempt: float | None = None  # while retrying

    @property
    def retrying(self) -> bool:
        return self.state is OutputState.RETRYING

    def failed(self, cause: str, message: str, now: float) -> bool:
        """A write raised ``OutputUnavailable``. True when the user should be told: the first
        failure of an outage, or a cause other than the last one."""
        tell = not self.retrying or cause != self.cause
        if not self.retrying:
            self.state, self.since = OutputState.RETRYING, now
        if tell:
            self._next_reminder = now + self._remind_every
        self.next_attempt = now + self._policy.nominal(self.failures)
        self.failures += 1
        self.cause, self.message = cause, message
        return tell

    def succeeded(self, now: float) -> float | None:
        """A write went through; the length of the outage it ends, None if there was none."""
        if not self.retrying:
            return None
        outage = now - self.since
        self.state, self.since = OutputState.WRITING, now
        self.failures, self.next_attempt = 0, None
        return outage

    def attempt_due(self, now: float) -> bool:
        return self.next_attempt is not None and now >= self.next_attempt

    def reminder_due(self, now: float) -> bool:
        """True once per ``remind_every`` seconds while retrying."""
        if not self.retrying or now < self._next_reminder:
            return False
        self._next_reminder = now + self._remind_every
        return True
