"""What the live page shows, kept up to date from the bus and the supervisor's status (pure).

Owns: the last value of every tag and a short history of its numeric values (the sparkline),
the throttle that keeps a 20 ms tag from flooding browsers (at most ``updates_per_s`` value
updates per tag and second reach the page; the last value always does), and the page's view of
the pipeline: per PLC its TCP session, per tag its connection state, rate, gaps, outages, last
error, and whether that adds up to ``ok``, ``warn`` or ``error`` (``tag_health``).

Inputs (``now`` is monotonic seconds, as everywhere): ``on_sample`` / ``on_event`` (decoded bus
messages), ``on_status`` (the supervisor's ``status`` reply, or None when it did not answer),
and the timer (``next_deadline()`` / ``on_timer(now)``). Outputs, drained with
``take_outputs()``: ``Values`` (the tags whose update is due, coalesced) and ``StatusChanged``
(the status view changed: a new status, or an event that changes a tag's state or error; at
most every ``STATUS_MIN_INTERVAL_S``). The web process (``web/server.py``) turns them into
Server-Sent Events; the views (``status_view``, ``last_values``, ``histories``) are what
``/api/status``, ``/api/last`` and a new page get.

Where the status and the bus disagree the newer wins: a worker's ``status`` is read by the
supervisor once a second, so a state change event from the bus that is newer than that reading
shows at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pyconpro.acquisition.wire import Event, EventKind, Sample, is_number
from pyconpro.sinks.records import iso_time, json_safe

__all__ = [
    "ERROR_STATES",
    "STATUS_MIN_INTERVAL_S",
    "LiveView",
    "StatusChanged",
    "Values",
    "tag_health",
]

#: A status view pushed because of bus events is pushed at most this often.
STATUS_MIN_INTERVAL_S: Final = 0.5
#: Connection states that need someone to look (a permanent reject; the PLC unreachable).
ERROR_STATES: Final = frozenset({"FAILED", "WAITING"})
_WORKING_STATES: Final = frozenset({"IDLE", "RESOLVING", "OPENING", "BACKOFF", "CLOSING"})
_ERROR_KINDS: Final = frozenset({EventKind.REJECT, EventKind.TIMEOUT, EventKind.ERROR})
HISTORY_POINTS: Final = 300  # points per sparkline, at most


@dataclass(frozen=True, slots=True)
class Values:
    """Value updates due now: tag key -> ``{"v", "ty", "t", "cs", "gap"[, "p"]}``: the value
    (JSON-safe), its type, receive time (ms since the epoch), CIP sequence count and gap
    counter, and for a finite number the sparkline point ``[t, v]``."""

    updates: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """``status_view`` has changed; read it again."""


Output = Values | StatusChanged


def tag_health(state: str | None, session_up: bool | None) -> str:
    """``ok`` (data flows), ``warn`` (opening, backing off, closing), ``error`` (failed, or the
    PLC's session is down), ``off`` (closed) or ``unknown`` (no status yet)."""
    if state is None:
        return "unknown"
    if state in ERROR_STATES or session_up is False:
        return "error"
    if state == "RUNNING":
        return "ok"
    if state == "CLOSED":
        return "off"
    return "warn" if state in _WORKING_STATES else "unknown"


@dataclass(slots=True)
class _Tag:
    """One tag as the bus showed it."""

    plc: str
    tag: str
    sample: Sample | None = None
    value: Any = None  # JSON-safe
    seen: int = 0  # samples this process received
    pending: bool = False  # a value not sent to the page yet
    next_send: float = 0.0  # not before this (the throttle)
    history: deque[list[float]] = field(default_factory=deque)  # [t_wall_ms, value]
    state: str | None = None  # from the last state event
    state_at_ns: int = 0  # its wall time
    error: dict[str, Any] | None = None  # the last reject / timeout / error event


class LiveView:
    """The page's model. Not thread-safe: the web process holds its lock around every call."""

    def __init__(self, *, updates_per_s: float = 4.0, history_s: float = 300.0) -> None:
        if updates_per_s <= 0 or history_s <= 0:
            raise ValueError("updates_per_s and history_s must be positive")
        self.interval = 1.0 / updates_per_s
        self.history_s = history_s
        # One point per bucket: at least one throttle interval, at most HISTORY_POINTS points.
        self.bucket_ms = max(self.interval, history_s / HISTORY_POINTS) * 1000.0
        self.tags: dict[str, _Tag] = {}
        self.status: Mapping[str, Any] | None = None
        self.status_at = 0.0  # monotonic, when it came
        self.status_wall_ns = 0
        self.status_failures = 0  # requests in a row that got no answer
        self.silent_since: float | None = None  # the supervisor has not answered since then
        self._emitted: dict[str, dict[str, Any]] = {}
        self._status_changed = False
        self._status_dirty = False  # an event changed the view; push it when allowed
        self._next_status = 0.0

    # ------------------------------------------------------------------ inputs

    def _tag(self, plc: str, tag: str) -> _Tag:
        key = f"{plc}/{tag}"
        t = self.tags.get(key)
        if t is None:
            t = self.tags[key] = _Tag(plc, tag)
        return t

    def on_sample(self, sample: Sample, now: float) -> None:
        t = self._tag(sample.plc, sample.tag)
        t.sample = sample
        t.value = json_safe(sample.value)
        t.seen += 1
        value = sample.value
        if is_number(value) and math.isfinite(float(value)):  # type: ignore[arg-type]
            self._add_point(t, sample.t_wall_ns / 1e6, float(value))  # type: ignore[arg-type]
        if now >= t.next_send:
            self._emit(f"{sample.plc}/{sample.tag}", t, now)
        else:
            t.pending = True

    def _add_point(self, t: _Tag, t_ms: float, value: float) -> None:
        h = t.history
        if h and t_ms // self.bucket_ms == h[-1][0] // self.bucket_ms:
            h[-1] = [t_ms, value]  # the bucket keeps its latest value
        else:
            h.append([t_ms, value])
        cutoff = t_ms - self.history_s * 1000.0
        while h and h[0][0] < cutoff:
            h.popleft()

    def on_event(self, event: Event, now: float) -> None:
        if not event.tag:  # a PLC-wide event: the session's state comes with the status
            return
        t = self._tag(event.plc, event.tag)
        changed = False
        if event.kind == EventKind.STATE and event.state_to:
            t.state, t.state_at_ns = event.state_to, event.t_wall_ns
            changed = True
        if event.kind in _ERROR_KINDS:
            t.error = _error_entry(event.kind, event.message, event.status_text, event.t_wall_ns)
            changed = True
        if changed:
            self._status_dirty = True

    def on_status(self, status: Mapping[str, Any] | None, now: float, wall_ns: int) -> None:
        """The supervisor's ``status`` reply (its ``ok`` map), or None: no answer in time."""
        if status is None:
            self.status_failures += 1
            if self.silent_since is None:
                self.silent_since = now
                self._status_changed = True
            return
        self.status, self.status_at, self.status_wall_ns = status, now, wall_ns
        self.status_failures = 0
        self.silent_since = None
        self._status_changed = True
        self._status_dirty = False
        self._next_status = now + STATUS_MIN_INTERVAL_S

    def on_timer(self, now: float) -> None:
        for key, t in self.tags.items():
            if t.pending and now >= t.next_send:
                self._emit(key, t, now)
        if self._status_dirty and now >= self._next_status:
            self._status_dirty = False
            self._status_changed = True
            self._next_status = now + STATUS_MIN_INTERVAL_S

    def next_deadline(self) -> float | None:
        due = [t.next_send for t in self.tags.values() if t.pending]
        if self._status_dirty:
            due.append(self._next_status)
        return min(due) if due else None

    def take_outputs(self) -> list[Output]:
        out: list[Output] = []
        if self._emitted:
            out.append(Values(self._emitted))
            self._emitted = {}
        if self._status_changed:
            out.append(StatusChanged())
            self._status_changed = False
        return out

    def _emit(self, key: str, t: _Tag, now: float) -> None:
        t.pending = False
        t.next_send = now + self.interval
        self._emitted[key] = self._update(t)

    def _update(self, t: _Tag) -> dict[str, Any]:
        s = t.sample
        assert s is not None
        out: dict[str, Any] = {"v": t.value, "ty": s.type_name, "t": s.t_wall_ns // 1_000_000,
                               "cs": s.cip_seq, "gap": s.gap}  # fmt: skip
        if is_number(s.value) and math.isfinite(float(s.value)):  # type: ignore[arg-type]
            out["p"] = [s.t_wall_ns / 1e6, float(s.value)]  # type: ignore[arg-type]
        return out

    # ------------------------------------------------------------------ views

    def last_values(self) -> dict[str, dict[str, Any]]:
        """``/api/last``: every tag's last sample as this process received it."""
        out: dict[str, dict[str, Any]] = {}
        for key, t in self.tags.items():
            s = t.sample
            if s is None:
                continue
            out[key] = {
                "plc": s.plc, "tag": s.tag, "type": s.type_name, "value": t.value,
                "time": iso_time(s.t_wall_ns), "t_wall_ms": s.t_wall_ns // 1_000_000,
                "cip_seq": s.cip_seq, "gap": s.gap, "publisher": s.publisher,
            }  # fmt: skip
        return out

    def updates(self) -> dict[str, dict[str, Any]]:
        """The current value update of every tag that has a value (what a new page starts with)."""
        return {key: self._update(t) for key, t in self.tags.items() if t.sample is not None}

    def histories(self) -> dict[str, list[list[float]]]:
        """Every tag's sparkline points ``[t_wall_ms, value]``, oldest first."""
        return {key: list(t.history) for key, t in self.tags.items() if t.history}

    def sample_ages(self, now_mono_ns: int) -> dict[str, float]:
        """Seconds since each tag's last sample was received (the worker's monotonic clock,
        the same as this host's)."""
        return {key: max(0.0, (now_mono_ns - t.sample.t_mono_ns) / 1e9)
                for key, t in self.tags.items() if t.sample is not None}  # fmt: skip

    def status_view(self, now: float, wall_ns: int) -> dict[str, Any]:
        """``/api/status``: what the page shows, as plain data (docs/operations.md)."""
        st = self.status or {}
        sup = st.get("supervisor") or {}
        fwd = st.get("forwarder") or {}
        plcs, sessions = _plcs(st.get("workers") or {})
        tags = self._tag_views(st, sessions, wall_ns)
        for view in tags:
            entry = plcs.get(view["plc"])
            if entry is None:  # a PLC only the bus has shown so far
                entry = plcs[view["plc"]] = _plc_entry(view["plc"], None, {})
            entry["tags"].append(view["key"])
        return {
            "now_wall_ms": wall_ns // 1_000_000,
            "supervisor": {
                "answering": self.status is not None and self.silent_since is None,
                "silent_for_s": None if self.silent_since is None
                else round(now - self.silent_since, 1),
                "status_age_s": round(now - self.status_at, 3) if self.status else None,
                **{k: sup.get(k) for k in ("pid", "state", "uptime_s", "config", "reloads")},
            },
            "bus": {"rate_msgs_s": fwd.get("rate_msgs_s"), "messages": fwd.get("messages_in"),
                    "alive": fwd.get("alive")},  # fmt: skip
            "plcs": list(plcs.values()),
            "tags": tags,
            "processes": [
                {k: c.get(k) for k in ("name", "kind", "state", "pid", "restarts", "last_exit",
                                       "reason")}  # fmt: skip
                for c in st.get("children") or []
            ],
            "sinks": [_sink_view(name, r) for name, r in (st.get("sinks") or {}).items()],
            "history_s": self.history_s,
            "updates_per_s": round(1.0 / self.interval, 3),
        }

    def _tag_views(self, st: Mapping[str, Any], sessions: Mapping[str, dict[str, Any]],
                   wall_ns: int) -> list[dict[str, Any]]:
        """One view per tag: those in the workers' status first (config order), then the ones
        only the bus has shown so far."""
        last_errors = st.get("last_errors") or {}
        views: dict[str, dict[str, Any]] = {}
        for wname, w in (st.get("workers") or {}).items():
            age = w.get("age_s")
            # When the worker answered the status these counters come from (wall ns).
            taken_ns = self.status_wall_ns - int((age if isinstance(age, (int, float)) else 0)
                                                 * 1e9)  # fmt: skip
            rates = w.get("rates") or {}
            for c in w.get("consumers") or []:
                key = c.get("key")
                if not isinstance(key, str):
                    continue
                plc, _, tag = key.partition("/")
                views[key] = self._tag_view(key, plc, tag, wname, c, rates.get(key),
                                            sessions.get(plc), last_errors.get(key), taken_ns)
        for key, t in self.tags.items():
            if key not in views:
                views[key] = self._tag_view(key, t.plc, t.tag, None, {}, None, None, None, 0)
        return list(views.values())

    def _tag_view(self, key: str, plc: str, tag: str, worker: str | None,
                  c: Mapping[str, Any], rate: Any, session: Mapping[str, Any] | None,
                  status_error: Mapping[str, Any] | None, taken_ns: int) -> dict[str, Any]:
        live = self.tags.get(key)
        state = c.get("state")
        if live is not None and live.state is not None and live.state_at_ns > taken_ns:
            state = live.state  # a state event newer than the worker's status
        error = _newest(
            _error_entry(status_error.get("kind"), status_error.get("message"),
                         status_error.get("status"), status_error.get("t_wall_ns"))
            if status_error else None,
            live.error if live is not None else None,
        )  # fmt: skip
        session_up = session.get("up") if session is not None else None
        counters = c.get("counters") or {}
        rpi = c.get("rpi_us")
        outage = c.get("outage")
        return {
            "key": key, "plc": plc, "tag": tag, "worker": worker,
            "state": state,
            "health": tag_health(state, session_up if isinstance(session_up, bool) else None),
            "problem": _problem(state, c, session),
            "type": c.get("type") or (live.sample.type_name if live and live.sample else None),
            "rpi_ms": rpi / 1000 if isinstance(rpi, (int, float)) else None,
            "rate": rate,
            "samples": c.get("samples"),
            "received": live.seen if live is not None else 0,
            "gaps": counters.get("gap"),
            "timeouts": counters.get("timeouts"),
            "rejects": counters.get("rejects"),
            "reconnects": _reconnects(counters),
            "outages": counters.get("outages"),
            "outage_missed": counters.get("outage_missed"),
            "outage": {k: outage.get(k) for k in ("for_s", "missed", "cause")}
            if isinstance(outage, dict) else None,
            "last_error": error,
            "t_wall_ms": live.sample.t_wall_ns // 1_000_000 if live and live.sample else None,
        }  # fmt: skip


def _error_entry(kind: Any, message: Any, status: Any, t_wall_ns: Any) -> dict[str, Any]:
    text = str(message or "")
    if status and str(status) not in text:
        text = f"{text} ({status})" if text else str(status)
    t = t_wall_ns // 1_000_000 if isinstance(t_wall_ns, int) else None
    return {"kind": str(kind or ""), "message": text, "t_wall_ms": t}


def _newest(*entries: dict[str, Any] | None) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    for e in entries:
        if e is not None and (best is None or (e["t_wall_ms"] or 0) > (best["t_wall_ms"] or 0)):
            best = e
    return best


def _reconnects(counters: Mapping[str, Any]) -> int | None:
    """Connections opened again after the first one (a new worker process counts anew)."""
    opens = counters.get("opens")
    return max(0, opens - 1) if isinstance(opens, int) else None


def _problem(state: Any, c: Mapping[str, Any], session: Mapping[str, Any] | None) -> str:
    """What is wrong with a tag now, in a few words (empty when data flows)."""
    if session is not None and session.get("up") is False:
        text = "PLC unreachable"
        down = session.get("down_for_s")
        if isinstance(down, (int, float)):
            text += f" for {down:.0f} s"
        if session.get("last_failure"):
            text += f": {session['last_failure']}"
        return text
    if state == "RUNNING":
        return ""
    for why in (c.get("failure"), c.get("last_status")):
        if why:
            return str(why)
    return {"WAITING": "waiting for the PLC's session", "BACKOFF": "waiting to retry",
            "RESOLVING": "learning the tag's type", "OPENING": "opening the connection",
            "CLOSED": "stopped"}.get(str(state), "")  # fmt: skip


def _plc_entry(name: str, worker: str | None, link: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "worker": worker,
        **{k: link.get(k) for k in ("address", "port", "up", "state", "down_for_s", "attempts",
                                    "last_failure", "sessions_opened", "sessions_failed")},
        "tags": [],
    }  # fmt: skip


def _plcs(workers: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]],
                                               dict[str, dict[str, Any]]]:
    """Each PLC (by name) with its worker's TCP session to it; and the sessions by PLC name.
    A worker's ``plcs`` lists sessions by address, with the keys of their consumers."""
    plcs: dict[str, dict[str, Any]] = {}
    for wname, w in workers.items():
        for link in w.get("plcs") or []:
            for name in _plc_names(link.get("consumers") or ()):
                plcs.setdefault(name, _plc_entry(name, wname, link))
        for c in w.get("consumers") or []:  # PLCs whose session is not there yet
            name = str(c.get("key", "")).partition("/")[0]
            if name and name not in plcs:
                plcs[name] = _plc_entry(name, wname, {})
    return plcs, {n: p for n, p in plcs.items() if p.get("address") is not None}


def _plc_names(keys: Iterable[Any]) -> list[str]:
    names: list[str] = []
    for key in keys:
        name = str(key).partition("/")[0]
        if name not in names:
            names.append(name)
    return names


def _sink_view(name: str, r: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, **{k: r.get(k) for k in (
        "state", "cause", "message", "received", "written", "pending", "dropped", "age_s")}}
