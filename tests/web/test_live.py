"""What the live page shows (web/live.py), on a fake clock: the per-tag throttle, the sparkline
history, the merge of the supervisor's status with the bus, and each tag's health."""

from __future__ import annotations

from typing import Any

import pytest
from pyconpro.acquisition.wire import Event, Sample, Value
from pyconpro.web.live import (
    STATUS_MIN_INTERVAL_S,
    LiveView,
    StatusChanged,
    Values,
    tag_health,
)

from tests.web.status_maps import status_map

T0_NS = 1_700_000_000_000_000_000  # the status map's last error happened here


def sample(tag: str, value: Value, t: float, *, plc: str = "line1", seq: int = 0,
           type_name: str = "DINT") -> Sample:
    return Sample(seq=seq, publisher="worker-127.0.0.1", plc=plc, tag=tag,
                  t_wall_ns=T0_NS + int(t * 1e9), t_mono_ns=int(t * 1e9), cip_seq=seq, gap=0,
                  value=value, raw=b"", type_name=type_name)  # fmt: skip


def event(tag: str, t_ns: int, *, kind: str = "state", to: str | None = None,
          message: str = "", plc: str = "line1") -> Event:
    return Event(seq=0, publisher="worker-127.0.0.1", plc=plc, tag=tag, t_wall_ns=t_ns,
                 t_mono_ns=0, kind=kind, state_to=to, message=message)  # fmt: skip


def values(outputs: list[Any]) -> dict[str, Any]:
    found = [o for o in outputs if isinstance(o, Values)]
    assert len(found) <= 1
    return dict(found[0].updates) if found else {}


def test_a_fast_tag_reaches_the_page_at_most_updates_per_s_times_a_second() -> None:
    live = LiveView(updates_per_s=4.0)
    sent: list[tuple[float, Any]] = []
    for i in range(201):  # a 10 ms tag for 2 s, the shell running its timer at every datagram
        now = i * 0.01
        live.on_sample(sample("Fast", i, now, seq=i), now)
        live.on_timer(now)
        sent += [(now, u["v"]) for u in values(live.take_outputs()).values()]
    times = [t for t, _ in sent]
    assert times[0] == 0.0 and sent[0][1] == 0  # the first value at once
    assert all(b - a >= 0.25 - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert len(sent) == 9  # 0, 0.25, ... 2.0: four a second
    # The last value is never held back for good: the timer sends it when its turn comes.
    live.on_sample(sample("Fast", 999, 2.001), 2.001)
    assert values(live.take_outputs()) == {}
    due = live.next_deadline()
    assert due == pytest.approx(2.25)
    live.on_timer(due)  # type: ignore[arg-type]
    assert values(live.take_outputs())["line1/Fast"]["v"] == 999
    assert live.next_deadline() is None


def test_each_tag_has_its_own_throttle() -> None:
    live = LiveView(updates_per_s=2.0)
    live.on_sample(sample("A", 1, 0.0), 0.0)
    live.on_sample(sample("B", 2, 0.1), 0.1)
    assert set(values(live.take_outputs())) == {"line1/A", "line1/B"}


def test_an_update_carries_the_value_its_type_time_and_a_sparkline_point() -> None:
    live = LiveView()
    live.on_sample(sample("Sine", 1.5, 2.0, type_name="REAL", seq=7), 2.0)
    live.on_sample(sample("Motor", {"Speed": 3.0, "Pos": {"X": 1}}, 2.0, type_name="MotorData"),
                   2.0)  # fmt: skip
    live.on_sample(sample("Bad", float("nan"), 2.0, type_name="REAL"), 2.0)
    got = values(live.take_outputs())
    t_ms = (T0_NS + 2_000_000_000) // 1_000_000
    assert got["line1/Sine"] == {"v": 1.5, "ty": "REAL", "t": t_ms, "cs": 7, "gap": 0,
                                 "p": [t_ms, 1.5]}  # fmt: skip
    assert got["line1/Motor"]["v"] == {"Speed": 3.0, "Pos": {"X": 1}}
    assert "p" not in got["line1/Motor"]  # only numbers have a sparkline
    assert got["line1/Bad"]["v"] == "NaN" and "p" not in got["line1/Bad"]  # JSON has no NaN
    assert live.last_values()["line1/Sine"]["value"] == 1.5
    assert live.updates() == got


def test_the_history_keeps_one_point_per_bucket_over_the_window() -> None:
    live = LiveView(updates_per_s=4.0, history_s=10.0)  # buckets of 0.25 s
    for i in range(1500):  # 15 s of a 10 ms tag
        live.on_sample(sample("Fast", i, i * 0.01), i * 0.01)
    points = live.histories()["line1/Fast"]
    assert 39 <= len(points) <= 41  # 10 s / 0.25 s
    assert points[-1][1] == 1499  # each bucket keeps its latest value
    assert points[-1][0] - points[0][0] <= 10_000
    assert [v for _, v in points] == sorted(v for _, v in points)


def test_the_status_view_per_plc_and_per_tag() -> None:
    live = LiveView()
    live.on_status(status_map(), 10.0, T0_NS)
    assert [type(o) for o in live.take_outputs()] == [StatusChanged]
    view = live.status_view(10.5, T0_NS + 500_000_000)
    assert view["supervisor"] == {"answering": True, "silent_for_s": None, "status_age_s": 0.5,
                                  "pid": 4242, "state": "running", "uptime_s": 120.5,
                                  "config": "/srv/plant.toml", "reloads": 2}  # fmt: skip
    plcs = {p["name"]: p for p in view["plcs"]}
    assert plcs["line1"]["up"] is True and plcs["line1"]["tags"] == ["line1/Counter", "line1/Sine"]
    assert plcs["line2"]["up"] is False and plcs["line2"]["down_for_s"] == 12.3
    tags = {t["key"]: t for t in view["tags"]}
    assert list(tags) == ["line1/Counter", "line1/Sine", "line2/Level"]  # the workers' order
    counter = tags["line1/Counter"]
    assert (counter["state"], counter["health"], counter["problem"]) == ("RUNNING", "ok", "")
    assert (counter["rate"], counter["samples"], counter["gaps"], counter["timeouts"],
            counter["reconnects"], counter["rpi_ms"]) == (20.0, 1200, 2, 1, 2, 50.0)
    assert tags["line1/Sine"]["outages"] == 1 and tags["line1/Sine"]["outage_missed"] == 40
    level = tags["line2/Level"]
    assert (level["state"], level["health"]) == ("WAITING", "error")
    assert level["problem"] == ("PLC unreachable for 12 s: TCP connect to 127.0.0.3:44818 "
                                "failed: Connection refused")  # fmt: skip
    assert level["outage"] == {"for_s": 12.3, "missed": 123, "cause": "session"}
    assert level["last_error"] == {"kind": "timeout", "message": "no T->O data for 0.8 s",
                                   "t_wall_ms": T0_NS // 1_000_000}  # fmt: skip
    assert [p["name"] for p in view["processes"]] == ["worker-127.0.0.1", "sink-db", "web"]
    [db] = view["sinks"]
    assert (db["name"], db["state"], db["pending"], db["written"]) == (
        "sink-db", "retrying", 500, 8500)


def test_a_state_event_newer_than_the_workers_status_shows_at_once() -> None:
    live = LiveView()
    live.on_status(status_map(), 10.0, T0_NS)  # the worker answered 0.4 s before that
    live.on_event(event("Counter", T0_NS - 1_000_000_000, to="BACKOFF"), 10.0)  # older
    assert _tag(live, "line1/Counter")["state"] == "RUNNING"
    live.on_event(event("Counter", T0_NS - 100_000_000, to="WAITING"), 10.1)  # newer
    view = _tag(live, "line1/Counter")
    assert (view["state"], view["health"]) == ("WAITING", "error")


def test_an_error_event_from_the_bus_becomes_the_last_error() -> None:
    live = LiveView()
    live.on_status(status_map(), 10.0, T0_NS)
    live.on_event(event("Level", T0_NS + 5_000_000_000, kind="reject", plc="line2",
                        message="Forward_Open rejected"), 11.0)  # fmt: skip
    assert _tag(live, "line2/Level")["last_error"] == {
        "kind": "reject", "message": "Forward_Open rejected",
        "t_wall_ms": (T0_NS + 5_000_000_000) // 1_000_000}  # fmt: skip


def test_status_pushed_for_events_at_most_every_half_second() -> None:
    live = LiveView()
    live.on_status(status_map(), 10.0, T0_NS)
    live.take_outputs()
    live.on_event(event("Counter", T0_NS + 1, to="BACKOFF"), 10.1)
    assert live.next_deadline() == pytest.approx(10.0 + STATUS_MIN_INTERVAL_S)
    live.on_timer(10.2)
    assert live.take_outputs() == []
    live.on_timer(10.5)
    assert live.take_outputs() == [StatusChanged()]
    assert live.next_deadline() is None


def test_a_silent_supervisor_keeps_its_last_status_and_says_so() -> None:
    live = LiveView()
    live.on_status(status_map(), 10.0, T0_NS)
    live.take_outputs()
    live.on_status(None, 12.0, T0_NS)
    live.on_status(None, 14.0, T0_NS)
    assert live.take_outputs() == [StatusChanged()]  # once, when it went silent
    view = live.status_view(15.0, T0_NS)
    assert view["supervisor"]["answering"] is False
    assert view["supervisor"]["silent_for_s"] == 3.0
    assert len(view["tags"]) == 3  # as last seen


def test_tags_only_the_bus_has_shown() -> None:
    live = LiveView()
    live.on_sample(sample("Counter", 5, 1.0, plc="press"), 1.0)
    view = live.status_view(1.0, T0_NS)
    assert view["supervisor"]["answering"] is False and view["supervisor"]["silent_for_s"] is None
    [tag] = view["tags"]
    assert (tag["key"], tag["health"], tag["type"], tag["received"]) == (
        "press/Counter", "unknown", "DINT", 1)
    [plc] = view["plcs"]
    assert (plc["name"], plc["up"], plc["tags"]) == ("press", None, ["press/Counter"])


@pytest.mark.parametrize(("state", "session_up", "health"), [
    ("RUNNING", True, "ok"), ("RUNNING", None, "ok"), ("RUNNING", False, "error"),
    ("WAITING", True, "error"), ("FAILED", True, "error"), ("OPENING", True, "warn"),
    ("BACKOFF", True, "warn"), ("RESOLVING", None, "warn"), ("IDLE", True, "warn"),
    ("CLOSING", True, "warn"), ("CLOSED", True, "off"), (None, None, "unknown"),
    ("SOMETHING_NEW", True, "unknown"),
])  # fmt: skip
def test_tag_health(state: str | None, session_up: bool | None, health: str) -> None:
    assert tag_health(state, session_up) == health


def _tag(live: LiveView, key: str) -> dict[str, Any]:
    return next(t for t in live.status_view(11.0, T0_NS)["tags"] if t["key"] == key)
