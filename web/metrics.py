"""``/metrics``: the pipeline's counters in the Prometheus text format, version 0.0.4 (pure).

Owns: the metric names, their types, help and label names (``METRICS``, the one table;
docs/operations.md lists the same, and a test holds the names and label sets stable), and
``render``, which turns the supervisor's ``status`` map (docs/operations.md "Status map") plus
what only the web process knows (CPU seconds read from /proc, the age of each tag's last
sample, its own counters) into the exposition text.

Conventions (https://prometheus.io/docs/practices/naming/): every name starts ``pyconpro_``,
counters end ``_total``, units are in the name in base units (``_seconds``, ``_bytes``); an
enumerated state is one gauge per possible state (1 for the current one, 0 for the others) so
that every series exists from the start; label values are escaped as the format says.
Counters restart from zero when their process restarts, which Prometheus's ``rate()`` handles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pyconpro.acquisition.connection import State
from pyconpro.acquisition.demux import DropReason
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.supervision import ChildState

__all__ = ["CONTENT_TYPE", "METRICS", "Metric", "WebCounters", "render"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family: its full name, ``counter`` or ``gauge``, help text, label names."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ()


_W = ("worker",)
_P = ("process", "kind")
_T = ("worker", "plc", "tag")
_S = ("sink",)
_PLC = ("worker", "plc", "address")


def _c(name: str, help_: str, labels: tuple[str, ...] = ()) -> Metric:
    return Metric(name, "counter", help_, labels)


def _g(name: str, help_: str, labels: tuple[str, ...] = ()) -> Metric:
    return Metric(name, "gauge", help_, labels)


METRICS: Final[tuple[Metric, ...]] = (
    # the pipeline
    _g("pyconpro_up", "1 when the supervisor answered the last status request of the web "
       "process, 0 when it did not (the other series then come from its last answer)"),
    _g("pyconpro_status_age_seconds", "Age of the supervisor status these series come from"),
    _g("pyconpro_supervisor_uptime_seconds", "Seconds since pyconpro run started"),
    _c("pyconpro_supervisor_reloads_total", "Configuration reloads asked for (SIGHUP or reload)"),
    _c("pyconpro_bus_messages_total", "Messages the bus forwarder took in from publishers"),
    _c("pyconpro_bus_bytes_total", "Bytes the bus forwarder took in from publishers"),
    _g("pyconpro_bus_subscriptions", "Subscriptions the bus endpoint's subscribers hold"),
    _c("pyconpro_bus_subscriptions_refused_total",
       "Subscriptions refused: too long, past the per-peer or the total cap"),
    _c("pyconpro_bus_connections_closed_total",
       "Subscriber connections closed for a refusal or for sending too much"),
    _g("pyconpro_bus_replay_messages", "Messages the bus's replay buffer holds"),
    _g("pyconpro_bus_replay_bytes", "Bytes the replay buffer holds (as replay_bytes counts)"),
    _g("pyconpro_bus_replay_oldest_seconds", "Age of the oldest message in the replay buffer"),
    _c("pyconpro_bus_replay_evicted_total", "Messages the replay buffer let go (age or size)"),
    _c("pyconpro_bus_replay_lost_total", "Messages the replay buffer could not keep up with"),
    _c("pyconpro_bus_replayed_total", "Messages sent to sinks that restarted"),
    _c("pyconpro_curve_admitted_total", "CURVE clients the supervisor's allow-list admitted"),
    _c("pyconpro_curve_refused_total", "CURVE clients the supervisor's allow-list refused"),
    # processes
    _g("pyconpro_process_state", "1 for the state the process is in, 0 for the others",
       (*_P, "state")),
    _c("pyconpro_process_restarts_total", "Times the supervisor started the process again", _P),
    _c("pyconpro_process_cpu_seconds_total", "CPU time (user + system) of the running process",
       _P),
    # I/O workers
    _c("pyconpro_worker_datagrams_total", "Class-1 datagrams the worker received", _W),
    _c("pyconpro_worker_samples_total", "Samples the worker published", _W),
    _c("pyconpro_worker_dropped_datagrams_total",
       "Datagrams the worker dropped, by reason (docs/worker.md)", (*_W, "reason")),
    _c("pyconpro_worker_publish_drops_total", "Samples the bus could not take (high-water mark)",
       _W),
    _c("pyconpro_worker_udp_kernel_drops_total",
       "Datagrams the kernel dropped because the worker's UDP receive buffer was full", _W),
    _g("pyconpro_worker_udp_receive_buffer_bytes", "UDP receive buffer the kernel granted", _W),
    _c("pyconpro_worker_heartbeats_total", "O->T heartbeats the worker sent", _W),
    _c("pyconpro_worker_heartbeat_send_errors_total", "O->T heartbeats that could not be sent",
       _W),
    _c("pyconpro_worker_decode_errors_total", "Datagrams whose tag value could not be decoded",
       _W),
    _g("pyconpro_worker_uptime_seconds", "Seconds since the worker process started", _W),
    # PLC sessions
    _g("pyconpro_plc_session_up", "1 while the worker's TCP session to the PLC is up", _PLC),
    _c("pyconpro_plc_sessions_opened_total", "TCP sessions opened to the PLC", _PLC),
    _c("pyconpro_plc_sessions_failed_total", "TCP sessions to the PLC that failed", _PLC),
    # tags
    _c("pyconpro_tag_samples_total", "Samples of the tag the worker published", _T),
    _c("pyconpro_tag_gaps_total", "Datagrams lost inside a connection (CIP sequence gaps)", _T),
    _c("pyconpro_tag_timeouts_total", "T->O watchdog expiries: no data for RPI x multiplier",
       _T),
    _c("pyconpro_tag_reconnects_total", "Connections opened again after the first", _T),
    _c("pyconpro_tag_rejects_total", "Forward_Open requests the PLC refused", _T),
    _c("pyconpro_tag_outages_total", "Interruptions of the tag's data that are over", _T),
    _c("pyconpro_tag_outage_missed_samples_total",
       "Samples the RPI promised during those outages that never came", _T),
    _g("pyconpro_tag_outage_in_progress", "1 while the tag's data is interrupted", _T),
    _g("pyconpro_tag_state", "1 for the connection state the tag is in, 0 for the others",
       (*_T, "state")),
    _g("pyconpro_tag_rpi_seconds", "The tag's T->O requested packet interval", _T),
    _g("pyconpro_tag_last_sample_age_seconds",
       "Seconds since the web process received the tag's last sample", _T),
    # sinks
    _c("pyconpro_sink_received_total", "Bus messages the sink received", _S),
    _c("pyconpro_sink_written_total", "Records the sink's output took", _S),
    _g("pyconpro_sink_pending_records", "Records received and not written yet", _S),
    _c("pyconpro_sink_dropped_total", "Records dropped, oldest first, past max_pending", _S),
    _c("pyconpro_sink_write_failures_total", "Writes the output refused (disk full, ...)", _S),
    _c("pyconpro_sink_bus_lost_total", "Bus messages the sink missed (sequence gaps)", _S),
    _c("pyconpro_sink_malformed_total", "Bus messages the sink skipped as malformed", _S),
    _c("pyconpro_sink_replayed_total", "Messages the bus's replay brought the sink at its start",
       _S),
    _c("pyconpro_sink_filtered_total", "Samples the sink's report-by-exception rule left out", _S),
    _g("pyconpro_sink_retrying", "1 while the sink's output cannot be written", _S),
    _g("pyconpro_sink_report_age_seconds", "Age of the sink's last report to the supervisor",
       _S),
    # the web process itself
    _c("pyconpro_web_bus_messages_total", "Bus messages the web process received"),
    _c("pyconpro_web_bus_lost_total", "Bus messages the web process missed (sequence gaps)"),
    _g("pyconpro_web_clients", "Pages connected to the live event stream"),
    _c("pyconpro_web_requests_refused_total", "HTTP requests refused for a missing or wrong token"),
)  # fmt: skip

_BY_NAME: Final = {m.name: m for m in METRICS}


@dataclass(frozen=True, slots=True)
class WebCounters:
    """What only the web process knows."""

    bus_messages: int = 0
    bus_lost: int = 0
    clients: int = 0
    refused: int = 0


class _Samples:
    """Samples per family, label names checked against ``METRICS``."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {
            m.name: [] for m in METRICS
        }

    def add(self, name: str, value: Any, **labels: Any) -> None:
        metric = _BY_NAME[name]
        if tuple(labels) != metric.labels:
            raise UsageError(f"{name}: labels {tuple(labels)}, declared {metric.labels}")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            return  # not reported (yet): no sample rather than a made-up one
        self.by_name[name].append((tuple((k, str(v)) for k, v in labels.items()), value))

    def stateset(self, name: str, current: Any, states: Iterable[str], **labels: Any) -> None:
        for state in states:
            self.add(name, 1 if state == current else 0, **labels, state=state)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _text(samples: _Samples) -> str:
    lines: list[str] = []
    for m in METRICS:
        help_ = m.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {m.name} {help_}", f"# TYPE {m.name} {m.type}"]
        for labels, value in samples.by_name[m.name]:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{m.name}{{{text}}} {_number(value)}" if text
                         else f"{m.name} {_number(value)}")  # fmt: skip
    return "\n".join(lines) + "\n"


def render(
    status: Mapping[str, Any] | None,
    *,
    up: bool,
    status_age_s: float | None = None,
    cpu_s: Mapping[str, float] | None = None,
    sample_ages: Mapping[str, float] | None = None,
    web: WebCounters | None = None,
) -> str:
    """The exposition text. ``status``: the supervisor's last ``status`` map (None: never
    answered); ``up``: whether it answered the last request; ``cpu_s``: CPU seconds by process
    name (``supervisor`` for the supervisor itself); ``sample_ages``: seconds since the last
    sample by ``<plc>/<tag>``."""
    out = _Samples()
    out.add("pyconpro_up", up)
    out.add("pyconpro_status_age_seconds", status_age_s)
    st = status or {}
    _pipeline(out, st)
    _processes(out, st, cpu_s or {})
    for name, w in (st.get("workers") or {}).items():
        _worker(out, name, w, sample_ages or {})
    for name, r in (st.get("sinks") or {}).items():
        _sink(out, str(name).removeprefix("sink-"), r)
    web = web or WebCounters()
    out.add("pyconpro_web_bus_messages_total", web.bus_messages)
    out.add("pyconpro_web_bus_lost_total", web.bus_lost)
    out.add("pyconpro_web_clients", web.clients)
    out.add("pyconpro_web_requests_refused_total", web.refused)
    return _text(out)


def _pipeline(out: _Samples, st: Mapping[str, Any]) -> None:
    sup = st.get("supervisor") or {}
    fwd = st.get("forwarder") or {}
    security = sup.get("security") or {}
    out.add("pyconpro_supervisor_uptime_seconds", sup.get("uptime_s"))
    out.add("pyconpro_supervisor_reloads_total", sup.get("reloads"))
    out.add("pyconpro_bus_messages_total", fwd.get("messages_in"))
    out.add("pyconpro_bus_bytes_total", fwd.get("bytes_in"))
    subs = fwd.get("subscribers") or {}
    out.add("pyconpro_bus_subscriptions", subs.get("held"))
    out.add("pyconpro_bus_subscriptions_refused_total", subs.get("refused"))
    closed = [subs.get(k) for k in ("closed_for_refusal", "closed_for_rate")]
    out.add("pyconpro_bus_connections_closed_total",
            None if None in closed else sum(c for c in closed if c is not None))
    replay = fwd.get("replay") or {}  # null without a replay buffer
    for metric, key in (("pyconpro_bus_replay_messages", "messages"),
                        ("pyconpro_bus_replay_bytes", "bytes"),
                        ("pyconpro_bus_replay_oldest_seconds", "oldest_s"),
                        ("pyconpro_bus_replay_evicted_total", "evicted"),
                        ("pyconpro_bus_replay_lost_total", "lost"),
                        ("pyconpro_bus_replayed_total", "replayed")):  # fmt: skip
        out.add(metric, replay.get(key))
    out.add("pyconpro_curve_admitted_total", security.get("curve_admitted"))
    out.add("pyconpro_curve_refused_total", security.get("curve_refused"))


def _processes(out: _Samples, st: Mapping[str, Any], cpu_s: Mapping[str, float]) -> None:
    if "supervisor" in cpu_s:
        out.add("pyconpro_process_cpu_seconds_total", cpu_s["supervisor"],
                process="supervisor", kind="supervisor")  # fmt: skip
    states = [s.value for s in ChildState]
    for c in st.get("children") or []:
        name, kind = str(c.get("name")), str(c.get("kind"))
        out.stateset("pyconpro_process_state", c.get("state"), states, process=name, kind=kind)
        out.add("pyconpro_process_restarts_total", c.get("restarts"), process=name, kind=kind)
        out.add("pyconpro_process_cpu_seconds_total", cpu_s.get(name), process=name, kind=kind)


_WORKER_COUNTERS: Final = (
    ("pyconpro_worker_datagrams_total", "datagrams"),
    ("pyconpro_worker_samples_total", "samples"),
    ("pyconpro_worker_publish_drops_total", "pub_drops"),
    ("pyconpro_worker_heartbeats_total", "heartbeats"),
    ("pyconpro_worker_heartbeat_send_errors_total", "heartbeat_send_errors"),
    ("pyconpro_worker_decode_errors_total", "decode_errors"),
    ("pyconpro_worker_udp_receive_buffer_bytes", "udp_rcvbuf"),
)
_TAG_COUNTERS: Final = (
    ("pyconpro_tag_gaps_total", "gap"),
    ("pyconpro_tag_timeouts_total", "timeouts"),
    ("pyconpro_tag_rejects_total", "rejects"),
    ("pyconpro_tag_outages_total", "outages"),
    ("pyconpro_tag_outage_missed_samples_total", "outage_missed"),
)


def _worker(out: _Samples, name: str, w: Mapping[str, Any], ages: Mapping[str, float]) -> None:
    counters = w.get("counters") or {}
    if counters:
        for metric, key in _WORKER_COUNTERS:
            out.add(metric, counters.get(key), worker=name)
        drops = counters.get("udp_kernel_drops")
        if isinstance(drops, int) and drops >= 0:  # -1: cannot be read on this system
            out.add("pyconpro_worker_udp_kernel_drops_total", drops, worker=name)
        reasons = [r.value for r in DropReason]
        reasons += sorted(k[5:] for k in counters if k.startswith("drop_") and k[5:] not in reasons)
        for reason in reasons:
            out.add("pyconpro_worker_dropped_datagrams_total",
                    counters.get(f"drop_{reason}", 0), worker=name, reason=reason)  # fmt: skip
    out.add("pyconpro_worker_uptime_seconds", w.get("uptime_s"), worker=name)
    names: dict[str, str] = {}  # plc name -> its session's address
    for link in w.get("plcs") or []:
        address = f"{link.get('address')}:{link.get('port')}"
        for key in link.get("consumers") or ():
            plc = str(key).partition("/")[0]
            if plc in names:
                continue
            names[plc] = address
            labels = {"worker": name, "plc": plc, "address": address}
            out.add("pyconpro_plc_session_up", link.get("up"), **labels)
            out.add("pyconpro_plc_sessions_opened_total", link.get("sessions_opened"), **labels)
            out.add("pyconpro_plc_sessions_failed_total", link.get("sessions_failed"), **labels)
    states = [s.value for s in State]
    for c in w.get("consumers") or []:
        key = c.get("key")
        if not isinstance(key, str):
            continue
        plc, _, tag = key.partition("/")
        labels = {"worker": name, "plc": plc, "tag": tag}
        cc = c.get("counters") or {}
        out.add("pyconpro_tag_samples_total", c.get("samples"), **labels)
        for metric, ckey in _TAG_COUNTERS:
            out.add(metric, cc.get(ckey), **labels)
        opens = cc.get("opens")
        out.add("pyconpro_tag_reconnects_total",
                max(0, opens - 1) if isinstance(opens, int) else None, **labels)  # fmt: skip
        out.add("pyconpro_tag_outage_in_progress", isinstance(c.get("outage"), dict), **labels)
        out.stateset("pyconpro_tag_state", c.get("state"), states, **labels)
        rpi = c.get("rpi_us")
        out.add("pyconpro_tag_rpi_seconds", rpi / 1e6 if isinstance(rpi, int) else None, **labels)
        out.add("pyconpro_tag_last_sample_age_seconds", ages.get(key), **labels)


def _sink(out: _Samples, name: str, r: Mapping[str, Any]) -> None:
    out.add("pyconpro_sink_report_age_seconds", r.get("age_s"), sink=name)
    if r.get("age_s") is None:
        return  # no report yet
    for metric, key in (("pyconpro_sink_received_total", "received"),
                        ("pyconpro_sink_written_total", "written"),
                        ("pyconpro_sink_pending_records", "pending"),
                        ("pyconpro_sink_dropped_total", "dropped"),
                        ("pyconpro_sink_write_failures_total", "write_failures"),
                        ("pyconpro_sink_bus_lost_total", "lost"),
                        ("pyconpro_sink_malformed_total", "malformed"),
                        ("pyconpro_sink_replayed_total", "replayed"),
                        ("pyconpro_sink_filtered_total", "filtered")):  # fmt: skip
        out.add(metric, r.get(key), sink=name)
    out.add("pyconpro_sink_retrying", r.get("state") == "retrying", sink=name)
