"""``/metrics`` (web/metrics.py): the text parses with the official Prometheus parser, the
names and label sets are the documented, stable ones, and the values are the status map's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pyconpro.acquisition.errors import UsageError
from pyconpro.web.metrics import METRICS, WebCounters, _Samples, render

from tests.web.status_maps import status_map

prometheus_parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus_client comes with the test extras")

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "operations.md"
TAG = ("worker", "plc", "tag")
WORKER = ("worker",)
PROCESS = ("process", "kind")
SINK = ("sink",)
PLC = ("worker", "plc", "address")

# The published interface: dashboards and alerts are written against these. Changing one is a
# breaking change for users (and needs docs/operations.md changed with it).
STABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "pyconpro_up": ("gauge", ()),
    "pyconpro_status_age_seconds": ("gauge", ()),
    "pyconpro_supervisor_uptime_seconds": ("gauge", ()),
    "pyconpro_supervisor_reloads_total": ("counter", ()),
    "pyconpro_bus_messages_total": ("counter", ()),
    "pyconpro_bus_bytes_total": ("counter", ()),
    "pyconpro_bus_subscriptions": ("gauge", ()),
    "pyconpro_bus_subscriptions_refused_total": ("counter", ()),
    "pyconpro_bus_connections_closed_total": ("counter", ()),
    "pyconpro_bus_replay_messages": ("gauge", ()),
    "pyconpro_bus_replay_bytes": ("gauge", ()),
    "pyconpro_bus_replay_oldest_seconds": ("gauge", ()),
    "pyconpro_bus_replay_evicted_total": ("counter", ()),
    "pyconpro_bus_replay_lost_total": ("counter", ()),
    "pyconpro_bus_replayed_total": ("counter", ()),
    "pyconpro_curve_admitted_total": ("counter", ()),
    "pyconpro_curve_refused_total": ("counter", ()),
    "pyconpro_process_state": ("gauge", (*PROCESS, "state")),
    "pyconpro_process_restarts_total": ("counter", PROCESS),
    "pyconpro_process_cpu_seconds_total": ("counter", PROCESS),
    "pyconpro_worker_datagrams_total": ("counter", WORKER),
    "pyconpro_worker_samples_total": ("counter", WORKER),
    "pyconpro_worker_dropped_datagrams_total": ("counter", (*WORKER, "reason")),
    "pyconpro_worker_publish_drops_total": ("counter", WORKER),
    "pyconpro_worker_udp_kernel_drops_total": ("counter", WORKER),
    "pyconpro_worker_udp_receive_buffer_bytes": ("gauge", WORKER),
    "pyconpro_worker_heartbeats_total": ("counter", WORKER),
    "pyconpro_worker_heartbeat_send_errors_total": ("counter", WORKER),
    "pyconpro_worker_decode_errors_total": ("counter", WORKER),
    "pyconpro_worker_uptime_seconds": ("gauge", WORKER),
    "pyconpro_plc_session_up": ("gauge", PLC),
    "pyconpro_plc_sessions_opened_total": ("counter", PLC),
    "pyconpro_plc_sessions_failed_total": ("counter", PLC),
    "pyconpro_tag_samples_total": ("counter", TAG),
    "pyconpro_tag_gaps_total": ("counter", TAG),
    "pyconpro_tag_timeouts_total": ("counter", TAG),
    "pyconpro_tag_reconnects_total": ("counter", TAG),
    "pyconpro_tag_rejects_total": ("counter", TAG),
    "pyconpro_tag_outages_total": ("counter", TAG),
    "pyconpro_tag_outage_missed_samples_total": ("counter", TAG),
    "pyconpro_tag_outage_in_progress": ("gauge", TAG),
    "pyconpro_tag_state": ("gauge", (*TAG, "state")),
    "pyconpro_tag_rpi_seconds": ("gauge", TAG),
    "pyconpro_tag_last_sample_age_seconds": ("gauge", TAG),
    "pyconpro_sink_received_total": ("counter", SINK),
    "pyconpro_sink_written_total": ("counter", SINK),
    "pyconpro_sink_pending_records": ("gauge", SINK),
    "pyconpro_sink_dropped_total": ("counter", SINK),
    "pyconpro_sink_write_failures_total": ("counter", SINK),
    "pyconpro_sink_bus_lost_total": ("counter", SINK),
    "pyconpro_sink_malformed_total": ("counter", SINK),
    "pyconpro_sink_replayed_total": ("counter", SINK),
    "pyconpro_sink_filtered_total": ("counter", SINK),
    "pyconpro_sink_retrying": ("gauge", SINK),
    "pyconpro_sink_report_age_seconds": ("gauge", SINK),
    "pyconpro_web_bus_messages_total": ("counter", ()),
    "pyconpro_web_bus_lost_total": ("counter", ()),
    "pyconpro_web_clients": ("gauge", ()),
    "pyconpro_web_requests_refused_total": ("counter", ()),
}


def parse(text: str) -> dict[str, Any]:
    """{family name as declared: (type, [(labels, value), ...])} through the official parser."""
    out: dict[str, Any] = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = (family.type, [(s.labels, s.value) for s in family.samples])
        assert all(s.name == name for s in family.samples), family
    return out


def value(parsed: dict[str, Any], name: str, **labels: str) -> float:
    found = [v for got, v in parsed[name][1] if all(got.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, parsed[name])
    return float(found[0])


def full_text() -> str:
    return render(status_map(), up=True, status_age_s=0.25,
                  cpu_s={"supervisor": 1.5, "worker-127.0.0.1": 12.25, "sink-db": 3.0},
                  sample_ages={"line1/Counter": 0.04},
                  web=WebCounters(bus_messages=900, bus_lost=3, clients=2, refused=5))  # fmt: skip


def test_names_types_and_label_sets_are_the_stable_ones() -> None:
    assert {m.name: (m.type, m.labels) for m in METRICS} == STABLE
    parsed = parse(full_text())
    assert set(parsed) == set(STABLE)  # every family is declared, even one without samples
    for name, (kind, samples) in parsed.items():
        assert kind == STABLE[name][0]
        for labels, _ in samples:
            assert tuple(labels) == STABLE[name][1], (name, labels)


def test_names_follow_the_prometheus_conventions() -> None:
    for m in METRICS:
        assert re.fullmatch(r"pyconpro_[a-z0-9_]+", m.name), m.name
        assert m.name.endswith("_total") == (m.type == "counter"), m.name
        assert not re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", m.name), m.name
        assert m.help and "\n" not in m.help, m.name


def test_every_metric_is_documented_in_operations_md() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert [m.name for m in METRICS if f"`{m.name}`" not in text] == []


def test_the_grafana_example_asks_for_metrics_that_exist() -> None:
    import json

    dashboard = json.loads((REPO / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs
            for n in re.findall(r"pyconpro_[a-z0-9_]+", e)}  # fmt: skip
    assert used and used <= {m.name for m in METRICS}, used - {m.name for m in METRICS}


def test_values_come_from_the_status_map() -> None:
    p = parse(full_text())
    assert value(p, "pyconpro_up") == 1
    assert value(p, "pyconpro_status_age_seconds") == 0.25
    assert value(p, "pyconpro_supervisor_reloads_total") == 2
    assert value(p, "pyconpro_bus_messages_total") == 9000
    assert value(p, "pyconpro_bus_subscriptions") == 5
    assert value(p, "pyconpro_bus_subscriptions_refused_total") == 7
    assert value(p, "pyconpro_bus_connections_closed_total") == 3
    assert value(p, "pyconpro_curve_refused_total") == 3
    assert value(p, "pyconpro_bus_replay_messages") == 1500
    assert value(p, "pyconpro_bus_replay_oldest_seconds") == 59.5
    assert value(p, "pyconpro_bus_replay_evicted_total") == 300
    assert value(p, "pyconpro_bus_replayed_total") == 368
    w = {"worker": "worker-127.0.0.1"}
    assert value(p, "pyconpro_worker_datagrams_total", **w) == 5000
    drops = {labels["reason"]: v for labels, v in p["pyconpro_worker_dropped_datagrams_total"][1]}
    assert drops == {"malformed": 1, "unknown_id": 2, "wrong_source": 0, "wrong_port": 3,
                     "stale": 4, "seq_jump": 5, "wrong_size": 0}  # fmt: skip
    assert value(p, "pyconpro_worker_udp_kernel_drops_total", **w) == 7
    assert value(p, "pyconpro_worker_udp_receive_buffer_bytes", **w) == 8388608
    assert value(p, "pyconpro_plc_session_up", plc="line1", address="127.0.0.2:44818") == 1
    assert value(p, "pyconpro_plc_session_up", plc="line2") == 0
    assert value(p, "pyconpro_plc_sessions_failed_total", plc="line2") == 9
    counter = {"plc": "line1", "tag": "Counter"}
    assert value(p, "pyconpro_tag_samples_total", **counter) == 1200
    assert value(p, "pyconpro_tag_reconnects_total", **counter) == 2  # opened 3 times
    assert value(p, "pyconpro_tag_gaps_total", **counter) == 2
    assert value(p, "pyconpro_tag_timeouts_total", **counter) == 1
    assert value(p, "pyconpro_tag_rpi_seconds", **counter) == 0.05
    assert value(p, "pyconpro_tag_last_sample_age_seconds", **counter) == 0.04
    assert value(p, "pyconpro_tag_outage_missed_samples_total", plc="line1", tag="Sine") == 40
    assert value(p, "pyconpro_tag_outage_in_progress", plc="line2", tag="Level") == 1
    states = {labels["state"]: v for labels, v in p["pyconpro_tag_state"][1]
              if labels["tag"] == "Level"}  # fmt: skip
    assert states["WAITING"] == 1 and sum(states.values()) == 1 and len(states) == 9
    assert value(p, "pyconpro_process_restarts_total", process="worker-127.0.0.1") == 1
    assert value(p, "pyconpro_process_state", process="web", state="BACKOFF") == 1
    assert value(p, "pyconpro_process_cpu_seconds_total", process="supervisor") == 1.5
    assert value(p, "pyconpro_process_cpu_seconds_total", process="worker-127.0.0.1") == 12.25
    assert all(labels["process"] != "web"  # no pid: no CPU figure rather than a made-up one
               for labels, _ in p["pyconpro_process_cpu_seconds_total"][1])  # fmt: skip
    assert value(p, "pyconpro_sink_pending_records", sink="db") == 500
    assert value(p, "pyconpro_sink_written_total", sink="db") == 8500
    assert value(p, "pyconpro_sink_received_total", sink="db") == 9000
    assert value(p, "pyconpro_sink_bus_lost_total", sink="db") == 6
    assert value(p, "pyconpro_sink_retrying", sink="db") == 1
    assert value(p, "pyconpro_sink_replayed_total", sink="db") == 368
    assert value(p, "pyconpro_sink_filtered_total", sink="db") == 1200
    assert value(p, "pyconpro_web_clients") == 2
    assert value(p, "pyconpro_web_requests_refused_total") == 5


def test_without_a_status_only_what_the_web_process_knows() -> None:
    p = parse(render(None, up=False))
    assert value(p, "pyconpro_up") == 0
    assert p["pyconpro_tag_samples_total"][1] == []
    assert p["pyconpro_status_age_seconds"][1] == []
    assert p["pyconpro_bus_replay_messages"][1] == []  # no buffer: no series
    assert value(p, "pyconpro_web_bus_messages_total") == 0


def test_a_kernel_drop_count_that_cannot_be_read_is_left_out() -> None:
    st = status_map()
    st["workers"]["worker-127.0.0.1"]["counters"]["udp_kernel_drops"] = -1
    assert parse(render(st, up=True))["pyconpro_worker_udp_kernel_drops_total"][1] == []


def test_label_values_are_escaped() -> None:
    st = status_map()
    odd = 'sink "a"\\b\nc'
    st["sinks"] = {f"sink-{odd}": st["sinks"]["sink-db"]}
    p = parse(render(st, up=True))
    assert value(p, "pyconpro_sink_pending_records", sink=odd) == 500


def test_labels_other_than_the_declared_ones_are_a_bug() -> None:
    with pytest.raises(UsageError, match="declared"):
        _Samples().add("pyconpro_tag_samples_total", 1, plc="a", tag="b")
