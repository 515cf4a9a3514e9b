"""The launch supervisor: ``pyconpro run CONFIG`` (ARCHITECTURE.md "Processes", issue 5).

Owns: the config file, which I/O worker serves which PLCs (grouped by the local address that
routes to each PLC: ``group_by_local_address`` with ``resolve_local_address``, or the PLC's
``local_address`` / ``interface``), starting / watching / restarting the worker and sink child
processes (and the web process of ``[web]``: the live page and ``/metrics``), the single public
bus endpoint (``workers.forwarder``: an XSUB/XPUB proxy thread that connects to every worker's
PUB socket), graceful shutdown, reload, and a control/status socket.

What it decides and what it does are separate: every start/restart/stop decision comes from the
pure ``acquisition.supervision.Supervision`` model (STARTING / RUNNING / BACKOFF / EXITED /
STOPPING / FATAL, capped backoff with jitter, the FATAL threshold, the stop order workers ->
sinks); this module is the thin shell that spawns processes, reaps them, sends signals and feeds
the results back as inputs. The pure parts that are specific to the pipeline (which children a
config means: ``plan_children``; what a reload changes: ``diff_plans``) are plain functions.

Processes:

* children run in their own process group, so a Ctrl-C in the terminal reaches only the
  supervisor, which then stops them in order (workers Forward_Close first, sinks flush last);
  each child also gets ``PR_SET_PDEATHSIG`` = SIGTERM so none outlives a supervisor that was
  killed outright (both done by ``workers.process.spawn``, the project's one spawn);
* a worker is ready when its control socket answers ``status``; a sink (and the web process) is
  ready after ``[supervisor].start_s`` alive;
* a worker is spawned without consumers; they are added through its control socket once its
  ``status`` reports a bus subscription (``bus_subscriptions`` > 0), i.e. once the forwarder has
  connected to its PUB socket and the subscriptions of the supervisor and of every subscriber
  already on the bus endpoint have arrived there (the XSUB side sends them all at once when it
  connects). So a consumer's first events (IDLE -> RESOLVING -> OPENING -> RUNNING) are never
  lost to ZeroMQ's slow-joiner window; the same after every restart of a worker;
* every worker's ``status`` (read every second) is compared with the configured consumer set
  (keys, and each definition's ``def`` fingerprint): a consumer removed, added or changed
  through the worker's control socket behind the supervisor's back is put back (re-added,
  removed, or removed then added), with a warning line and an ``error`` event naming what was
  changed and that it was restored, published on the bus by ``supervisor`` through the
  forwarder's workers' side;
* SIGTERM / SIGINT: graceful shutdown (a second one kills what is left); SIGHUP: reload.

Reload (SIGHUP or the ``reload`` control op) reads the file again and diffs it against what runs:
consumers added to / removed from a worker that stays are sent to that worker's control socket
(``add`` / ``remove``) without restarting it (a changed one is removed, and added again by the
consumer-set check once its key is free); a worker whose other settings changed is restarted;
new local addresses get a new worker, vanished ones are stopped; sinks whose options changed are
restarted, new ones started, removed ones stopped; other sinks and workers are untouched.
``[bus]`` changes need a restart of ``pyconpro run`` (logged, not applied).

Control socket (ZeroMQ ROUTER at ``[bus].control_base`` for name ``supervisor``; clients use REQ
or DEALER): requests and replies are msgpack maps. Requests ``{"op": "status"}``, ``"reload"``,
``"start"`` / ``"stop"`` / ``"restart"`` with ``"child": NAME``, ``"shutdown"``, ``"ping"``.
Replies ``{"ok": true, ...}`` or ``{"ok": false, "error": "what went wrong and what to do"}``.
``"replay"`` / ``"replay_next"`` (a sink that restarts asking for what it missed) are handed to
the forwarder's replay thread, which answers through this socket (``workers/replay.py``).
docs/operations.md documents the status map. Before binding, ``open()`` pings that socket: a
supervisor that answers owns the control_base (exit 2 naming its pid: ZeroMQ's ipc bind would
silently take its sockets over); otherwise socket files a killed one left are removed. The
directory of an ipc control_base is created if missing; ``close()`` removes the socket files
this run created.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import fcntl
import hashlib
import json
import logging
import os
import random
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
import zmq
from pyconpro.acquisition import control
from pyconpro.acquisition.config import (
    Config,
    ConfigError,
    ConsumerSpec,
    WorkerGroup,
    group_by_local_address,
)
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.security import SecurityConfig, uses_curve
from pyconpro.acquisition.sink_config import SinkConfig
from pyconpro.acquisition.subscriptions import SubscriptionLimits
from pyconpro.acquisition.supervision import (
    ChildKind,
    ChildState,
    Exited,
    Ready,
    Signal,
    Spawn,
    Spawned,
    Supervision,
    Transition,
)
from pyconpro.acquisition.wire import Event, EventKind, SeqCounter, decode
from pyconpro.workers.control_socket import answer_waiting
from pyconpro.workers.forwarder import Forwarder, ForwarderError, connectable
from pyconpro.workers.guard import CurveError, ServerGuard, private_directory, restrict_ipc
from pyconpro.workers.logfmt import LOG_FORMAT
from pyconpro.workers.process import Child, spawn
from pyconpro.workers.replay import REPLAY_OPS

from pyconpro.config_file import load_config, run_issues, run_warnings
from pyconpro.run_cli import add_arguments  # `pyconpro run` takes the same arguments

__all__ = [
    "ChildSpec",
    "ReloadPlan",
    "Runtime",
    "Supervisor",
    "consumer_key",
    "consumer_map",
    "consumer_set_diff",
    "consumer_text",
    "control_base_endpoints",
    "diff_plans",
    "interface_address",
    "main",
    "plan_children",
    "resolve_local_address",
    "restart_outages",
    "supervisor_control_endpoint",
    "web_argv",
]

log = logging.getLogger("pyconpro.supervisor")

STATUS_INTERVAL_S = 1.0  # how often each worker's status is read (rates, states, errors)
STARTING_POLL_S = 0.2  # ... while a worker is starting, so readiness is seen quickly
SUBSCRIBED_POLL_S = 0.05  # ... while waiting for the bus subscription to reach a new worker
SUBSCRIPTION_WARN_S = 10.0  # log it when a worker's PUB gets no subscription for this long
CONTROL_TIMEOUT_S = 2.0  # a worker that does not answer a control request within this
MAX_WAIT_S = 0.5  # upper bound of one loop wait (child exits are also signalled by SIGCHLD)
# High-water marks (STYLE.md #10): the control socket serves a few `pyconpro status` clients,
# a worker link carries one request at a time (the rest wait in _WorkerLink.queue).
CONTROL_HWM = 100
LINK_HWM = 16
ERROR_EVENT_KINDS = frozenset({"reject", "timeout", "error"})
PING_TIMEOUT_S = 0.3  # is another supervisor on this control_base? (answers in milliseconds)
FATAL_REMINDER_S = 60.0  # while every worker is FATAL, say so this often
RESTORE_RETRY_S = 5.0  # a consumer set restored behind our back is restored again after this
SUPERVISOR_PUBLISHER = "supervisor"  # ``pub`` of the events the supervisor publishes
UDP_PORT_HINT = "set [worker].udp_port in the config"  # the worker's bind error, under `run`
WEB_CHILD = "web"  # the name of the web process (the live page and /metrics) among the children


# ============================================================================ local addresses


def resolve_local_address(address: str) -> str:
    """The local IPv4 address the OS would use to reach ``address``.

    A UDP ``connect()`` sends nothing; it only asks the routing table, so this works for PLCs
    that are down. Raises OSError (no route) like the OS does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, 44818))
        local: str = s.getsockname()[0]
    return local


_SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str:
    """IPv4 address of network interface ``name`` (Linux ``SIOCGIFADDR``); OSError if none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(
                s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode("utf-8")[:15])
            )
        except OSError as exc:
            reason = "no such interface" if exc.errno == errno.ENODEV else "it has no IPv4 address"
            raise OSError(f"interface {name!r}: {reason}") from None
    return socket.inet_ntoa(packed[20:24])


# ============================================================================ the plan (pure)


def consumer_key(spec: ConsumerSpec) -> str:
    """A consumer's identity inside its worker: ``<plc>/<tag or alias>`` (the worker's key)."""
    return f"{spec.plc}/{spec.topic_name}"


def consumer_map(spec: ConsumerSpec) -> dict[str, Any]:
    """The worker control socket's ``add`` map for ``spec`` (``acquisition.control``)."""
    return control.consumer_to_map(control.consumer_from_spec(spec))


def consumer_text(spec: ConsumerSpec) -> str:
    """The same as ``consumer_map`` in the worker's ``--consumer key=value,...`` form (not for
    an assembly consumer: its ``assembly`` map has no text form)."""
    if spec.assembly is not None:
        raise UsageError(f"{consumer_key(spec)}: an assembly consumer has no --consumer text;"
                         " add it through the worker's control socket")
    parts = []
    for key, value in consumer_map(spec).items():
        if key == "route":
            value = ";".join(f"{port}/{link}" for port, link in value)
        parts.append(f"{key}={value}")
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the plan needs besides the config: fixed for the life of one supervisor."""

    bus_connect: str  # where sinks connect (the forwarder's public side, connectable)
    control_base: Config | None = None  # the config whose [bus] named the control sockets
    python: str = sys.executable
    log_level: str = "INFO"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child process as the plan wants it.

    For a worker, ``argv`` is the command without its consumers; the supervisor spawns it so and
    adds ``consumers`` through the control socket once the bus subscription reached the worker
    (the current set, so a restart after a reload starts with it). ``command()`` is the same
    worker with the consumers on its command line (for running it by hand). ``control`` /
    ``pub`` are the worker's endpoints (``pub`` None: learned from status).
    """

    name: str
    kind: ChildKind
    argv: tuple[str, ...]
    control: str | None = None
    pub: str | None = None
    consumers: tuple[ConsumerSpec, ...] = ()

    def command(self) -> list[str]:
        out = list(self.argv)
        for spec in self.consumers:
            if spec.assembly is None:  # the supervisor adds every consumer by control anyway
                out += ["--consumer", consumer_text(spec)]
        return out

    def consumer_keys(self) -> dict[str, ConsumerSpec]:
        return {consumer_key(c): c for c in self.consumers}


def _pub_endpoint(config: Config, name: str) -> str:
    base = config.bus.control_base
    if base.startswith("ipc://"):
        return f"{base}-{name}.pub"
    return "tcp://127.0.0.1:0"  # a tcp control base: the worker picks a port, status tells it


# What the supervisor's status repeats of each worker's own status reply (None until it came).
_WORKER_STATUS_KEYS = (
    "local_address", "udp_port", "pub", "uptime_s", "counters", "plcs", "bus_subscriptions",
    "produce",  # the tags it produces (null when none): docs/worker.md "Producing tags"
)  # fmt: skip


# Children whose standard output is not for people (see ``_spawn``).
_QUIET_STDOUT = (ChildKind.WORKER, ChildKind.WEB)


def worker_security_args(security: SecurityConfig) -> tuple[str, ...]:
    """The I/O worker's flags for the pipeline's ``[security]`` (none without a key)."""
    if security.server_key is None:
        return ()
    out: tuple[str, ...] = ("--curve-key", security.server_key)
    if security.client_keys is not None:
        out += ("--curve-clients", security.client_keys)
    if security.curve_on_loopback:
        out += ("--curve-on-loopback",)
    return out


def worker_produce_args(config: Config, group: WorkerGroup, bus: str) -> tuple[str, ...]:
    """A worker's flags for the ``[[produce]]`` tags it serves (none when it serves none): each
    tag, its EtherNet/IP server's port, and the bus it reads their values from. A change of
    any of them changes the command, so a reload restarts that worker."""
    if not group.produce:
        return ()
    out: tuple[str, ...] = ("--tcp-port", str(config.worker.tcp_port), "--bus-connect", bus)
    for spec in group.produce:
        out += ("--produce", json.dumps(spec.as_dict(), sort_keys=True, separators=(",", ":")))
    return out


def client_security_args(security: SecurityConfig, endpoint: str) -> tuple[str, ...]:
    """Flags of a child that connects to the pipeline's ``endpoint`` (a sink to the bus): the
    pipeline's own key pair as a client when that endpoint uses CURVE."""
    if security.server_key is None or not uses_curve(endpoint, security):
        return ()
    return ("--curve-server-key", security.server_key, "--curve-key", security.server_key)


def sink_report_args(config: Config) -> tuple[str, ...]:
    """Flags that make a sink send its state to our control socket (with the pipeline's own
    key pair when that socket uses CURVE)."""
    return _control_client_args(config, "--report")


def sink_replay_args(config: Config) -> tuple[str, ...]:
    """Flags that make a sink that starts ask our control socket for the messages it missed
    (the forwarder's replay buffer), when ``[bus]`` keeps one."""
    return _control_client_args(config, "--replay") if config.bus.replay else ()


def _control_client_args(config: Config, flag: str) -> tuple[str, ...]:
    """``flag`` with our control socket, and ``flag-curve-key`` with the pipeline's own key
    pair when that socket uses CURVE."""
    endpoint = supervisor_control_endpoint(config)
    out: tuple[str, ...] = (flag, connectable(endpoint))
    security = config.security
    if security.server_key is not None and uses_curve(endpoint, security):
        out += (f"{flag}-curve-key", security.server_key)
    return out


def web_argv(config: Config, bus_cfg: Config, runtime: Runtime) -> tuple[str, ...] | None:
    """The web process's command for ``config``'s ``[web]`` (None: no [web] section).

    An inline ``token`` is passed as its SHA-256 (the process compares digests), so the secret
    is not in the process list and a changed token still changes the command (a reload then
    restarts the web process); a ``token_file`` is read by the process itself."""
    web = config.web
    if web is None:
        return None
    argv: tuple[str, ...] = (
        runtime.python, "-m", "pyconpro.web.server",
        "--address", web.address,
        "--port", str(web.port),
        "--history", repr(web.history_s),
        "--updates-per-s", repr(web.updates_per_s),
        "--connect", runtime.bus_connect,
        *client_security_args(bus_cfg.security, bus_cfg.bus.endpoint),
        *_control_client_args(bus_cfg, "--control"),
        "--log-level", runtime.log_level if runtime.log_level != "CRITICAL" else "ERROR",
    )  # fmt: skip
    if web.token is not None:
        argv += ("--token-sha256", hashlib.sha256(web.token.encode()).hexdigest())
    elif web.token_file is not None:
        argv += ("--token-file", web.token_file)
    return argv


def supervisor_control_endpoint(config: Config) -> str:
    """Where ``pyconpro status`` finds the supervisor of ``config``."""
    return config.bus.control_endpoint("supervisor", 0)


def ipc_path(endpoint: str) -> str | None:
    """The file of an ``ipc://`` endpoint, None for other transports."""
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def bus_in_endpoint(config: Config) -> str:
    """Where the forwarder's workers' side is bound (publishers may connect there)."""
    base = config.bus.control_base
    return f"{base}-bus-in" if base.startswith("ipc://") else "tcp://127.0.0.1:0"


def control_base_endpoints(config: Config, worker_names: Sequence[str]) -> list[tuple[str, str]]:
    """Every endpoint ``pyconpro run`` binds under ``[bus].control_base``, as (what, endpoint):
    its own control socket, the forwarder's workers' side, each worker's control and PUB
    sockets (``worker_names`` in the order the plan numbers them)."""
    out = [("the supervisor's control socket", supervisor_control_endpoint(config)),
           ("the bus forwarder's workers' side", bus_in_endpoint(config))]
    for index, name in enumerate(worker_names, start=1):
        out += [(f"{name}'s control socket", config.bus.control_endpoint(name, index)),
                (f"{name}'s PUB socket", _pub_endpoint(config, name))]
    return out


def stdout_prints_events(sinks: Sequence[SinkConfig], plcs: Sequence[str]) -> bool:
    """Whether a stdout sink prints every event of ``plcs`` (its topic filters cover each
    ``event/<plc>/``): its lines go where the workers' log goes (the terminal, or
    ``[logging].file``), so a worker's log would show each of them twice."""
    return any(
        sink.kind == "stdout"
        and all(any(f"event/{plc}/".startswith(t) for t in sink.topics)
                for plc in plcs)
        for sink in sinks
    )


def plan_children(
    config: Config, groups: Sequence[WorkerGroup], runtime: Runtime
) -> dict[str, ChildSpec]:
    """Every child ``config`` means: one I/O worker per group, one process per sink, and the
    web process when the file has a ``[web]`` section."""
    bus_cfg = runtime.control_base if runtime.control_base is not None else config
    out: dict[str, ChildSpec] = {}
    level = runtime.log_level
    for index, group in enumerate(groups, start=1):
        name = group.name
        control = bus_cfg.bus.control_endpoint(name, index)
        pub = _pub_endpoint(bus_cfg, name)
        argv: tuple[str, ...] = (
            runtime.python, "-m", "pyconpro.workers.io_worker",
            "--name", name,
            "--local-address", group.local_address,
            "--udp-port", str(config.worker.udp_port),
            "--pub", pub,
            "--control", control,
            "--stats-interval", repr(config.worker.stats_interval_s),
            "--udp-rcvbuf", str(config.worker.udp_rcvbuf),
            "--realtime-priority", str(config.worker.realtime_priority),
            "--hwm", str(bus_cfg.bus.hwm),
            "--log-level", level,
            "--udp-port-hint", UDP_PORT_HINT,
            "--event-log-level", "DEBUG",  # the events are on the bus (and in the sinks)
            # rejects, timeouts, errors: in the log unless a stdout sink prints them already
            "--problem-log-level",
            "DEBUG" if stdout_prints_events(config.sinks, group.plcs) else "WARNING",
            *worker_security_args(bus_cfg.security),
            *worker_produce_args(config, group, runtime.bus_connect),
        )  # fmt: skip
        if "--bus-connect" not in argv and any(
                c.assembly is not None and c.assembly.exclusive_owner for c in group.consumers):
            # Output images of exclusive owners come from the bus (wire-format.md).
            argv += ("--bus-connect", runtime.bus_connect)
        out[name] = ChildSpec(
            name=name,
            kind=ChildKind.WORKER,
            argv=argv,
            control=control,
            pub=None if pub.endswith(":0") else pub,
            consumers=group.consumers,
        )
    for sink in config.sinks:
        # The sink gets its validated section (paths resolved) as data, not the file: a reload
        # compares these commands to decide restarts, and a crash restart must run the
        # configuration loaded here, not whatever the file says meanwhile.
        # It reports its state (writing / retrying and why, pending, dropped) to our control
        # socket: ``sink_report``, shown in ``status``.
        name = f"sink-{sink.name}"
        argv = (runtime.python, "-m", "pyconpro.sinks.cli",
                "--section", json.dumps(sink.section(), sort_keys=True, separators=(",", ":")),
                "--connect", runtime.bus_connect,
                *client_security_args(bus_cfg.security, bus_cfg.bus.endpoint),
                *sink_report_args(bus_cfg),
                *sink_replay_args(bus_cfg),
                "--log-level", level if level != "CRITICAL" else "ERROR")  # fmt: skip
        out[name] = ChildSpec(name=name, kind=ChildKind.SINK, argv=argv)
    web = web_argv(config, bus_cfg, runtime)
    if web is not None:  # [web]: the live page and /metrics (pyconpro.web.server)
        out[WEB_CHILD] = ChildSpec(name=WEB_CHILD, kind=ChildKind.WEB, argv=web)
    return out


def restart_outages(
    status: Mapping[str, Any] | None, exited_at: float, *, crashed: bool
) -> dict[str, float]:
    """When the data of each consumer of a worker that exited stopped (monotonic seconds, the
    host's clock), from the worker's last ``status``: the worker that replaces it reports the
    outage from then to its first sample (``AddRequest.outage_since``, cause ``restart``).

    A worker cannot record its own death. A consumer whose data was flowing lost it when the
    worker exited (``exited_at``, when the supervisor saw it). One already in an outage lost
    it at that outage's start, unless the worker stopped cleanly: then it recorded that outage
    up to its stop itself (``resumed`` false), and the new one starts at the exit. A consumer
    that never had data has no outage."""
    out: dict[str, float] = {}
    for c in (status or {}).get("consumers") or []:
        key = c.get("key")
        if not isinstance(key, str):
            continue
        outage = c.get("outage")
        since = outage.get("since_s") if isinstance(outage, dict) else None
        if crashed and isinstance(since, (int, float)) and not isinstance(since, bool):
            out[key] = min(float(since), exited_at)
        elif isinstance(c.get("last_data_s"), (int, float)) or since is not None:
            out[key] = exited_at
    return out


@dataclass(frozen=True, slots=True)
class ConsumerSetDiff:
    """How a worker's consumers differ from the configured ones (keys)."""

    missing: frozenset[str] = frozenset()  # configured, not in the worker
    extra: frozenset[str] = frozenset()  # in the worker, not configured
    changed: frozenset[str] = frozenset()  # in both, with another definition


def consumer_set_diff(configured: Mapping[str, str], reported: Sequence[Any]) -> ConsumerSetDiff:
    """Compare the configured consumers (key -> ``control.consumer_digest``) with the
    ``consumers`` of a worker's ``status`` (pure). One on its way out (CLOSING, CLOSED) is
    neither extra nor changed, but not missing either until it is gone; an entry without a
    ``def`` fingerprint is not judged changed."""
    have = {c["key"]: c for c in reported if isinstance(c, dict) and isinstance(c.get("key"), str)}
    live = {k for k, c in have.items() if c.get("state") not in ("CLOSING", "CLOSED")}
    return ConsumerSetDiff(
        missing=frozenset(configured.keys() - have.keys()),
        extra=frozenset(live - configured.keys()),
        changed=frozenset(k for k in live & configured.keys()
                          if isinstance(have[k].get("def"), str)
                          and have[k]["def"] != configured[k]),
    )


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload changes. Children not named anywhere here are left alone."""

    start: tuple[str, ...] = ()  # new children
    stop: tuple[str, ...] = ()  # children that are gone from the config
    restart: tuple[str, ...] = ()  # children whose command changed
    add_consumers: Mapping[str, tuple[ConsumerSpec, ...]] = field(default_factory=dict)
    remove_consumers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # keys

    @property
    def empty(self) -> bool:
        return not (
            self.start or self.stop or self.restart or self.add_consumers or self.remove_consumers
        )

    def describe(self) -> str:
        parts = []
        for label, names in (("start", self.start), ("stop", self.stop),
                             ("restart", self.restart)):  # fmt: skip
            if names:
                parts.append(f"{label} {', '.join(names)}")
        for worker, specs in self.add_consumers.items():
            parts.append(f"{worker}: add {', '.join(consumer_key(s) for s in specs)}")
        for worker, keys in self.remove_consumers.items():
            parts.append(f"{worker}: remove {', '.join(keys)}")
        return "; ".join(parts) if parts else "no changes"


def diff_plans(old: Mapping[str, ChildSpec], new: Mapping[str, ChildSpec]) -> ReloadPlan:
    """What to do to go from the running ``old`` plan to ``new`` (pure).

    A worker whose command (without consumers) is unchanged keeps running; its consumer changes
    become ``add_consumers`` / ``remove_consumers`` (a changed consumer is removed then added).
    """
    start = tuple(n for n in new if n not in old)
    stop = tuple(n for n in old if n not in new)
    restart: list[str] = []
    add: dict[str, tuple[ConsumerSpec, ...]] = {}
    remove: dict[str, tuple[str, ...]] = {}
    for name in (n for n in new if n in old):
        a, b = old[name], new[name]
        if a.argv != b.argv or a.kind != b.kind or a.control != b.control:
            restart.append(name)
            continue
        before, after = a.consumer_keys(), b.consumer_keys()
        gone = tuple(k for k in before if k not in after or after[k] != before[k])
        added = tuple(s for k, s in after.items() if k not in before or before[k] != s)
        if gone:
            remove[name] = gone
        if added:
            add[name] = added
    return ReloadPlan(start, stop, tuple(restart), add, remove)


# ============================================================================ processes


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name.removeprefix("SIG")
    except ValueError:
        return str(-returncode)


@dataclass(slots=True)
class _WorkerLink:
    """The supervisor's DEALER to one worker's control socket; one request in flight."""

    endpoint: str
    sock: zmq.Socket[Any] | None = None
    queue: deque[tuple[dict[str, Any], Callable[[dict[str, Any] | None], None]]] = field(
        default_factory=deque
    )
    inflight: Callable[[dict[str, Any] | None], None] | None = None
    deadline: float = 0.0
    next_poll: float = 0.0
    status: dict[str, Any] | None = None
    status_at: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    added_pid: int | None = None  # the worker process whose consumers were added
    # Consumer key -> when its data stopped, for the next process (``restart_outages``).
    outage_since: dict[str, float] = field(default_factory=dict)
    answered_at: float | None = None  # first answer of the current process (for the warning)
    warned_pid: int | None = None
    changes: int = 0  # add / remove requests sent and not answered yet
    # Consumers changed behind our back: key -> what happened, while the configured one is
    # being put back (a changed one is removed first, then added); and when a key may be
    # restored again (a restore that keeps failing is retried, not repeated every second).
    restoring: dict[str, str | None] = field(default_factory=dict)  # None: a reload of ours
    restore_after: dict[str, float] = field(default_factory=dict)


# ============================================================================ the supervisor


class Supervisor:
    """The running supervisor of one config file. ``run()`` until stopped; returns the exit code.

    ``resolve`` / ``interface`` answer which local address reaches a PLC (tests pass fakes);
    ``planner`` turns a config into child specs (tests pass stand-in commands).
    """

    def __init__(
        self,
        config_path: str,
        *,
        config: Config | None = None,
        resolve: Callable[[str], str] = resolve_local_address,
        interface: Callable[[str], str] = interface_address,
        planner: Callable[[Config, Sequence[WorkerGroup], Runtime], dict[str, ChildSpec]]
        | None = None,
        log_level: str | None = None,
        child_output: Any = None,
    ) -> None:
        self.config_path = config_path
        self.config = config if config is not None else load_config(config_path)
        self._resolve = resolve
        self._interface = interface
        self._planner = planner or plan_children
        self.log_level = log_level or self.config.logging.level
        self._child_output = child_output  # file for children's stdout+stderr; None: inherit
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.guard = ServerGuard(self.config.security)  # CurveError: a bad key file
        self.forwarder = Forwarder(
            self.config.bus.endpoint,
            bus_in_endpoint(self.config),
            hwm=self.config.bus.hwm,
            linger_ms=self.config.bus.linger_ms,
            guard=self.guard,
            replay_s=self.config.bus.replay_s,
            replay_bytes=self.config.bus.replay_bytes,
            limits=SubscriptionLimits(per_peer=self.config.bus.max_subscriptions_per_peer,
                                      total=self.config.bus.max_subscriptions),
            # A context of its own: its I/O thread takes the priority, the supervisor's stays
            # at normal priority with its other threads.
            realtime_priority=self.config.bus.realtime_priority,
        )
        self.control_endpoint = supervisor_control_endpoint(self.config)
        self.sup = Supervision(self.config.supervisor, random.Random().random)
        self.specs: dict[str, ChildSpec] = {}
        self.procs: dict[str, Child] = {}
        self.links: dict[str, _WorkerLink] = {}
        self.learned_pubs: dict[str, str] = {}
        self.last_transition: dict[str, Transition] = {}
        self.last_events: dict[str, dict[str, Any]] = {}  # "<plc>/<tag>" -> last event
        self.last_errors: dict[str, dict[str, Any]] = {}  # "<plc>/<tag>" -> last error event
        self.sink_reports: dict[str, tuple[float, dict[str, Any]]] = {}  # name -> (at, report)
        self.pending_remove: set[str] = set()
        self.reloads = 0
        self.last_reload: dict[str, Any] | None = None
        self.started_wall = time.time()
        self.started = time.monotonic()
        self._signals: deque[int] = deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup = -1
        self.control: zmq.Socket[Any] | None = None
        self.events: zmq.Socket[Any] | None = None
        self.bus_out: zmq.Socket[Any] | None = None  # our own events, into the forwarder
        self._bus_seq = SeqCounter()
        self.poller = zmq.Poller()
        self._kill_all = False
        self._stop_at = 0.0
        self._fwd_stats: tuple[float, int] | None = None
        self._fwd_rate = 0.0
        self._fwd_status: dict[str, Any] = {}
        self._next_fwd_stats = 0.0
        self._ipc_files: dict[str, int] = {}  # ipc socket file -> inode, bound by this process
        self._claimed = False  # the control_base is ours (files under it may be removed)
        self._all_fatal_since: float | None = None
        self._next_fatal_reminder = 0.0

    # ------------------------------------------------------------------ plan

    def _groups(self, config: Config) -> tuple[WorkerGroup, ...]:
        return group_by_local_address(config, self._resolve, self._interface)

    def _runtime(self) -> Runtime:
        return Runtime(
            bus_connect=connectable(self.forwarder.public_endpoint),
            control_base=self.config,
            log_level=self.log_level,
        )

    def _plan(self, config: Config) -> dict[str, ChildSpec]:
        return self._planner(config, self._groups(config), self._runtime())

    # ------------------------------------------------------------------ set-up

    def open(self) -> None:
        """Bind the bus and the control socket, install signal handlers. Raises on failure
        with a message that names the endpoint and the fix."""
        groups = self._groups(self.config)  # fail before binding anything if a PLC is unreachable
        self._claim_control_base(groups)
        self._claimed = True
        self.forwarder.start()
        self._bound_ipc(self.forwarder.upstream_endpoint)
        self._bound_ipc(self.forwarder.public_endpoint)
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.SNDHWM, CONTROL_HWM)
        self.control.setsockopt(zmq.RCVHWM, CONTROL_HWM)
        try:
            self.guard.secure_bind(self.control, self.control_endpoint)
            self.control.bind(self.control_endpoint)
        except zmq.ZMQError as exc:
            self.forwarder.stop()
            other = self.ping_other()
            if other is not None:
                raise ForwarderError(self._in_use_message(other)) from None
            raise ForwarderError(
                f"cannot bind the supervisor's control socket {self.control_endpoint}: {exc}; "
                "is another `pyconpro run` using the same [bus].control_base? stop it or give "
                "this config its own control_base"
            ) from None
        self._bound_ipc(self.control_endpoint)
        self.poller.register(self.control, zmq.POLLIN)
        if self.forwarder.replay is not None:
            self.poller.register(self.forwarder.replay.socket, zmq.POLLIN)
        self.events = self.ctx.socket(zmq.SUB)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.setsockopt(zmq.RCVHWM, 10_000)
        self.events.subscribe(b"event/")
        self.guard.secure_connect(self.events, self.config.bus.endpoint)
        self.events.connect(connectable(self.forwarder.public_endpoint))
        self.poller.register(self.events, zmq.POLLIN)
        self.bus_out = self.ctx.socket(zmq.PUB)
        self.bus_out.setsockopt(zmq.LINGER, 0)
        self.bus_out.setsockopt(zmq.SNDHWM, CONTROL_HWM)
        self.guard.secure_connect(self.bus_out, self.forwarder.upstream_endpoint)
        self.bus_out.connect(connectable(self.forwarder.upstream_endpoint))
        self._install_signals()
        self.specs = self._plan(self.config)
        for name, spec in self.specs.items():
            self.sup.add(name, spec.kind)
            if spec.kind is ChildKind.WORKER:
                self._add_link(name, spec)
        self._update_upstreams()

    def ping_other(self, timeout: float = PING_TIMEOUT_S) -> dict[str, Any] | None:
        """The ``ping`` reply of a supervisor already answering on our control endpoint."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            self.guard.secure_connect(sock, self.control_endpoint)
            sock.connect(self.control_endpoint)
            sock.send_multipart([b"", msgpack.packb({"op": "ping"}, use_bin_type=True)])
            if not sock.poll(int(timeout * 1000)):
                return None
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
        except (zmq.ZMQError, ValueError, msgpack.UnpackException):
            return None
        finally:
            sock.close(0)
        return reply if isinstance(reply, dict) and reply.get("ok") else None

    def _in_use_message(self, reply: Mapping[str, Any]) -> str:
        return (
            f"another pyconpro run (pid {reply.get('pid', '?')}) already uses control_base "
            f"{self.config.bus.control_base}; stop it or set [bus].control_base in "
            f"{self.config_path} to a path of its own"
        )

    def _claim_control_base(self, groups: Sequence[WorkerGroup]) -> None:
        """Refuse a control_base another live supervisor uses; clear what a dead one left.

        ZeroMQ's ipc bind silently replaces an existing socket file, so without this check a
        second `pyconpro run` would steal the first one's sockets and `pyconpro status` could
        never reach the first again.
        """
        path = ipc_path(self.config.bus.control_base)
        if path is None:
            return  # tcp: a port in use makes the bind fail (open() then names the owner)
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            try:
                private_directory(parent)
            except OSError as exc:
                raise ForwarderError(
                    f"cannot create {parent} for [bus].control_base "
                    f"{self.config.bus.control_base}: {exc.strerror}; pick a writable directory"
                ) from None
        sup_path = ipc_path(self.control_endpoint)
        if sup_path is not None and os.path.exists(sup_path):
            other = self.ping_other()
            if other is not None:
                raise ForwarderError(self._in_use_message(other))
        # Nobody answers: the files are left over from a supervisor that was killed.
        stale = control_base_endpoints(self.config, [g.name for g in groups])
        for _, endpoint in stale:
            p = ipc_path(endpoint)
            try:
                if p is not None and stat.S_ISSOCK(os.lstat(p).st_mode):
                    os.unlink(p)
                    log.info("removed %s, left over by a supervisor that is gone", p)
            except OSError:
                pass

    def _bound_ipc(self, endpoint: str) -> None:
        """Remember an ipc socket file this process bound (removed again by close())."""
        p = ipc_path(endpoint)
        if p is None:
            return
        restrict_ipc(endpoint)
        try:
            self._ipc_files[p] = os.lstat(p).st_ino
        except OSError:
            pass

    def _remove_ipc_files(self) -> None:
        # Only files that are still the ones this run created (same inode): never another's.
        files: dict[str, int | None] = dict(self._ipc_files)
        for spec in self.specs.values():
            for endpoint in (spec.control, spec.pub):
                p = ipc_path(endpoint) if endpoint else None
                if p is not None and p not in files:
                    files[p] = None
        for p, ino in files.items():
            try:
                st = os.lstat(p)
                if stat.S_ISSOCK(st.st_mode) and (ino is None or st.st_ino == ino):
                    os.unlink(p)
            except OSError:
                pass
        self._ipc_files.clear()

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller.register(self._wake_r, zmq.POLLIN)
        try:
            self._old_wakeup = signal.set_wakeup_fd(
                self._wake_w.fileno(), warn_on_full_buffer=False
            )
        except ValueError:  # not the main thread (tests run supervisors in threads)
            self._old_wakeup = -1
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def request(self, signum: int) -> None:
        """Deliver a signal's meaning from another thread (tests, embedding)."""
        self._signals.append(signum)
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    def close(self) -> None:
        """Release everything (children must be stopped already; any left are killed)."""
        for name, proc in list(self.procs.items()):
            if proc.alive():
                log.warning("%s (pid %d) still running at exit; killing it", name, proc.pid)
            proc.kill()
        self.procs.clear()
        if self._old_handlers:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers.clear()
            signal.set_wakeup_fd(self._old_wakeup)
        for link in self.links.values():
            if link.sock is not None:
                link.sock.close(0)
        self.links.clear()
        for s in (self.control, self.events, self.bus_out):
            if s is not None:
                s.close(0)
        self.control = self.events = self.bus_out = None
        self.forwarder.stop()
        self.guard.close()
        for w in (self._wake_r, self._wake_w):
            if w is not None:
                w.close()
        self._wake_r = self._wake_w = None
        stuck = self.forwarder.stuck_threads()
        if stuck:
            # Terminating the context would wait for their sockets forever: exit without it,
            # and leave the stacks in the log for whoever finds out why.
            log.error("the bus forwarder's thread(s) %s did not stop within 5 s; exiting"
                      " without waiting for them (their stacks follow)", ", ".join(stuck))
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        else:
            self.ctx.term()
        if self._claimed:
            self._remove_ipc_files()

    # ------------------------------------------------------------------ actions

    def _execute(self, now: float) -> None:
        """Carry out, in order, what the supervision decided: log each transition, spawn,
        signal. A spawn feeds its outcome (Spawned, or Exited if it failed) straight back, and
        what that decides is carried out in the next round."""
        outputs = self.sup.take_outputs()
        while True:
            for out in outputs:
                match out:
                    case Transition():
                        self._log_transition(out)
                    case Spawn():
                        self._spawn(out.child, now)
                    case Signal():
                        self._send_signal(out)
            self._finish_removals()
            outputs = self.sup.take_outputs()
            if not outputs:
                return

    def _spawn(self, name: str, now: float) -> None:
        spec = self.specs.get(name)
        if spec is None:  # removed by a reload while a restart was scheduled
            return self.sup.handle(name, Exited(None), now)
        # A worker starts empty: its consumers are added once the bus can hear it (module doc).
        argv = list(spec.argv) if spec.kind is ChildKind.WORKER else spec.command()
        out = self._child_output
        try:
            # Own process group + parent-death SIGTERM (module doc); the parent-death signal
            # follows the spawning thread, which is the one running this loop.
            proc = spawn(
                argv,
                # A worker's and the web process's stdout carries only the ready line for a
                # program that starts them directly; here readiness comes through the control
                # socket, and the console keeps what people read (logs, the stdout sink).
                stdout=subprocess.DEVNULL if spec.kind in _QUIET_STDOUT else out,
                stderr=out,
                cwd=os.path.dirname(os.path.abspath(self.config_path)) or None,
            )
        except OSError as exc:
            log.error("%s: cannot start %s: %s", name, argv[0], exc)
            return self.sup.handle(name, Exited(None), now)
        self.procs[name] = proc
        log.debug("%s: spawned pid %d: %s", name, proc.pid, " ".join(argv))
        link = self.links.get(name)
        if link is not None:
            link.next_poll = now + STARTING_POLL_S
            link.added_pid = link.answered_at = None
        return self.sup.handle(name, Spawned(proc.pid), now)

    def _send_signal(self, action: Signal) -> None:
        # The model times TERM -> KILL (this loop never blocks); Child.send_signal never
        # signals a pid that was already reaped.
        proc = self.procs.get(action.child)
        if proc is None or proc.pid != action.pid:
            return
        sig = signal.SIGKILL if action.signal == "KILL" else signal.SIGTERM
        if sig is signal.SIGKILL and proc.alive():
            log.warning("%s (pid %d) did not stop in time; killing it", action.child, action.pid)
        proc.send_signal(sig)

    def _reap(self, now: float) -> None:
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[name]
            sig = _signal_name(code)
            link = self.links.get(name)
            if link is not None and link.added_pid == proc.pid:
                stopped = restart_outages(link.status, now, crashed=code != 0)
                link.outage_since = {**stopped, **link.outage_since}  # the older ones stand
            self.sup.handle(name, Exited(proc.pid, None if sig else code, sig), now)
            self._execute(now)

    def _log_transition(self, ev: Transition) -> None:
        self.last_transition[ev.child] = ev
        level = logging.INFO
        if ev.new is ChildState.FATAL:
            level = logging.ERROR
        elif ev.new in (ChildState.BACKOFF, ChildState.EXITED):
            level = logging.WARNING
        pid = f" pid {ev.pid}" if ev.pid else ""
        log.log(level, "%s%s: %s -> %s (%s)", ev.child, pid, ev.old.value, ev.new.value,
                ev.reason)  # fmt: skip

    def _finish_removals(self) -> None:
        for name in list(self.pending_remove):
            child = self.sup.children.get(name)
            if child is None or child.at_rest:
                if child is not None:
                    self.sup.remove(name)
                self.pending_remove.discard(name)
                link = self.links.pop(name, None)
                if link is not None and link.sock is not None:
                    self.poller.unregister(link.sock)
                    link.sock.close(0)
                self.learned_pubs.pop(name, None)
                self._update_upstreams()

    # ------------------------------------------------------------------ worker control

    def _add_link(self, name: str, spec: ChildSpec) -> None:
        assert spec.control is not None
        self.links[name] = _WorkerLink(spec.control)

    def _link_socket(self, link: _WorkerLink) -> zmq.Socket[Any]:
        if link.sock is None:
            link.sock = self.ctx.socket(zmq.DEALER)
            link.sock.setsockopt(zmq.LINGER, 0)
            link.sock.setsockopt(zmq.SNDHWM, LINK_HWM)
            link.sock.setsockopt(zmq.RCVHWM, LINK_HWM)
            self.guard.secure_connect(link.sock, link.endpoint)
            link.sock.connect(link.endpoint)
            self.poller.register(link.sock, zmq.POLLIN)
        return link.sock

    def _drop_link_socket(self, link: _WorkerLink) -> None:
        # A timed-out request may still be answered later; a fresh socket never sees that reply.
        if link.sock is not None:
            self.poller.unregister(link.sock)
            link.sock.close(0)
            link.sock = None

    def worker_request(
        self, name: str, request: dict[str, Any], done: Callable[[dict[str, Any] | None], None]
    ) -> None:
        """Queue a control request to worker ``name``; ``done(reply or None on timeout)``."""
        link = self.links.get(name)
        if link is None:
            done(None)
            return
        link.queue.append((request, done))
        self._pump_link(link, time.monotonic())

    def _pump_link(self, link: _WorkerLink, now: float) -> None:
        if link.inflight is not None or not link.queue:
            return
        request, done = link.queue.popleft()
        sock = self._link_socket(link)
        try:
            sock.send_multipart([b"", msgpack.packb(request, use_bin_type=True)], zmq.NOBLOCK)
        except zmq.ZMQError:
            done(None)
            return
        link.inflight = done
        link.deadline = now + CONTROL_TIMEOUT_S

    def _on_link_reply(self, name: str, link: _WorkerLink, now: float) -> None:
        assert link.sock is not None
        while True:
            try:
                frames = link.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            done, link.inflight = link.inflight, None
            try:
                reply = msgpack.unpackb(frames[-1], raw=False)
            except (ValueError, msgpack.UnpackException):  # a garbled reply counts as none
                reply = None
            if done is not None:
                done(reply if isinstance(reply, dict) else None)
        self._pump_link(link, now)

    def _link_timers(self, now: float) -> None:
        for name, link in list(self.links.items()):
            if link.inflight is not None and now >= link.deadline:
                done, link.inflight = link.inflight, None
                link.errors += 1
                self._drop_link_socket(link)
                done(None)
            child = self.sup.children.get(name)
            if child is None:
                continue
            live = child.state in (ChildState.STARTING, ChildState.RUNNING) and child.pid
            if (
                live
                and link.inflight is None
                and now >= link.next_poll
                and not any(r.get("op") == "status" for r, _ in link.queue)
            ):
                if child.state is ChildState.STARTING:
                    interval = STARTING_POLL_S
                elif link.added_pid != child.pid:
                    interval = SUBSCRIBED_POLL_S
                else:
                    interval = STATUS_INTERVAL_S
                link.next_poll = now + interval
                self.worker_request(
                    name, control.StatusRequest().to_map(), self._status_callback(name, child.pid)
                )
            self._pump_link(link, now)

    def _status_callback(
        self, name: str, pid: int | None
    ) -> Callable[[dict[str, Any] | None], None]:
        return lambda reply: self._on_status(name, pid, reply)

    def _on_status(self, name: str, pid: int | None, reply: dict[str, Any] | None) -> None:
        link = self.links.get(name)
        child = self.sup.children.get(name)
        if link is None or child is None or reply is None or not reply.get("ok"):
            return
        now = time.monotonic()
        previous, prev_at = link.status, link.status_at
        link.status, link.status_at = reply, now
        link.rates = _rates(previous, prev_at, reply, now)
        pub = reply.get("pub")
        if isinstance(pub, str) and pub and self.learned_pubs.get(name) != pub:
            self.learned_pubs[name] = pub
            self._update_upstreams()
        if child.state is ChildState.STARTING and child.pid == pid:
            self.sup.handle(name, Ready(pid), now)
            self._execute(now)
        if pid is None or child.pid != pid:
            return
        if link.added_pid != pid and child.state in (ChildState.STARTING, ChildState.RUNNING):
            self._maybe_add_consumers(name, link, pid, reply, now)
        elif link.added_pid == pid and child.state is ChildState.RUNNING:
            self._reconcile(name, link, reply, now)

    def _maybe_add_consumers(
        self, name: str, link: _WorkerLink, pid: int, reply: dict[str, Any], now: float
    ) -> None:
        """Add the worker's consumers once a bus subscription reached its PUB socket."""
        if link.answered_at is None:
            link.answered_at = now
        subscribed = reply.get("bus_subscriptions")
        if not isinstance(subscribed, int) or subscribed <= 0:
            if now - link.answered_at >= SUBSCRIPTION_WARN_S and link.warned_pid != pid:
                link.warned_pid = pid
                log.warning(
                    "%s answers but the bus forwarder's subscription has not reached its PUB"
                    " socket %s after %.0f s; its consumers are added once it does (check"
                    " 'forwarder.upstreams' in `pyconpro status`)", name, reply.get("pub"),
                    now - link.answered_at)  # fmt: skip
            return
        link.added_pid = pid
        spec = self.specs.get(name)
        consumers = spec.consumers if spec is not None else ()
        log.info("%s: bus subscription reached the worker; adding %d consumer(s)", name,
                 len(consumers))  # fmt: skip
        since, link.outage_since = link.outage_since, {}
        link.restoring.clear()
        for c in consumers:
            self._send_change(name, control.AddRequest(
                control.consumer_from_spec(c), outage_since=since.get(consumer_key(c))
            ).to_map())  # fmt: skip

    def _reconcile(self, name: str, link: _WorkerLink, reply: dict[str, Any], now: float) -> None:
        """Put back the configured consumer set of worker ``name`` when its ``status`` shows
        a consumer removed, added or changed behind the supervisor's back (through the
        worker's control socket): re-add the missing, remove the extra, replace the changed
        (removed first, added once it is gone). Nothing is judged while our own add / remove
        requests are unanswered: the status may be older than they are."""
        spec = self.specs.get(name)
        if link.changes or spec is None:
            return
        want = {consumer_key(c): c for c in spec.consumers}
        quiet = {k for k, at in link.restore_after.items() if now < at}  # restored a moment ago
        diff = consumer_set_diff(
            {k: control.consumer_digest(control.consumer_from_spec(c)) for k, c in want.items()},
            reply.get("consumers") or [])
        for key in sorted(diff.extra - quiet):
            self._restore(name, link, key, f"{key} was added to {name}", "removed it",
                          control.RemoveRequest(key), now)
        for key in sorted(diff.changed - quiet):
            what = link.restoring[key] = f"{key} on {name} was changed"
            self._restore(name, link, key, what, "removed it, to add the configured one",
                          control.RemoveRequest(key), now)
        for key in sorted(diff.missing - (quiet - set(link.restoring))):
            add = control.AddRequest(control.consumer_from_spec(want[key]))
            incident = link.restoring.get(key, f"{key} was removed from {name}")
            if incident is None:  # replaced by a reload of ours: not news
                link.restoring.pop(key)
                self._send_change(name, add.to_map())
                continue
            self._restore(name, link, key, incident, "added the configured one", add, now)

    def _restore(self, name: str, link: _WorkerLink, key: str, what: str, how: str,
                 request: control.AddRequest | control.RemoveRequest, now: float) -> None:
        """One step of putting the configured set back: log it, send ``request``. The last
        step publishes an ``error`` event saying what was changed and that it was restored
        (or why it could not be)."""
        link.restore_after[key] = now + RESTORE_RETRY_S
        head = (f"consumer {what} behind the supervisor's back (through the worker's control"
                " socket, not the config file)")
        log.warning("%s: %s; restoring the configured set: %s", name, head, how.replace(
            "removed", "removing").replace("added", "adding"))  # fmt: skip
        last = key not in link.restoring or isinstance(request, control.AddRequest)
        plc, _, tag = key.partition("/")

        def done(reply: dict[str, Any] | None) -> None:
            if reply is None or not reply.get("ok"):
                error = "no answer" if reply is None else reply.get("error")
                link.restoring.pop(key, None)
                self._publish_event(plc, tag, f"{head}; not restored: {error}")
            elif last:
                link.restoring.pop(key, None)
                log.warning("%s: %s; restored: %s", name, head, how)
                self._publish_event(plc, tag, f"{head}; restored: {how}")

        self._send_change(name, request.to_map(), done)

    def _publish_event(self, plc: str, tag: str, message: str) -> None:
        """An ``error`` event about ``plc`` / ``tag`` on the bus (publisher ``supervisor``)."""
        if self.bus_out is None:
            return
        event = Event(seq=0, publisher=SUPERVISOR_PUBLISHER, plc=plc, tag=tag,
                      t_wall_ns=time.time_ns(), t_mono_ns=time.monotonic_ns(),
                      kind=EventKind.ERROR.value, message=message)  # fmt: skip
        topic = event.topic
        try:
            _, body = replace(event, seq=self._bus_seq.next(topic)).encode()
            self.bus_out.send_multipart([topic, body], zmq.NOBLOCK)
        except zmq.Again:  # never block the loop: the event is in the log as well
            log.debug("event on %r dropped: the bus forwarder is not taking it", topic)

    def _update_upstreams(self) -> None:
        eps = set(self.learned_pubs.values())
        for spec in self.specs.values():
            if spec.pub is not None:
                eps.add(spec.pub)
        self.forwarder.set_upstreams(eps)

    # ------------------------------------------------------------------ reload

    def reload(self) -> dict[str, Any]:
        """Read the config file again and apply the difference (see the module docstring)."""
        now = time.monotonic()
        self.reloads += 1
        if self.sup.shutting_down:
            return self._reload_result(False, "shutting down; reload ignored")
        try:
            new_config = load_config(self.config_path)
            new_specs = self._plan(new_config)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("reload: %s", issue)
            return self._reload_result(
                False, f"the new configuration is not valid, nothing changed:\n{exc}"
            )
        for section, changed in (("[bus]", new_config.bus != self.config.bus),
                                 ("[security]", new_config.security != self.config.security)):
            if changed:
                log.warning(
                    "reload: %s changed in %s; it takes effect only when `pyconpro run` restarts",
                    section, self.config_path,
                )  # fmt: skip
        plan = diff_plans(self.specs, new_specs)
        log.info("reload: %s", plan.describe())
        self.config = replace(new_config, bus=self.config.bus, security=self.config.security)
        old_specs, self.specs = self.specs, new_specs
        for name in plan.stop:
            self.sup.child(name).stop(now)
            self._execute(now)
            self.pending_remove.add(name)
        for name in plan.restart:
            child = self.sup.child(name)
            child.stop(now)
            self._execute(now)
            child.start(now)
            self._execute(now)
        for name in plan.start:
            if name in self.pending_remove:  # stopped by an earlier reload, wanted again
                self.pending_remove.discard(name)
                self.sup.child(name).start(now)
                self._execute(now)
                continue
            self.sup.add(name, new_specs[name].kind)
            if new_specs[name].kind is ChildKind.WORKER:
                self._add_link(name, new_specs[name])
            self.sup.child(name).start(now)
            self._execute(now)
        self._change_consumers(plan)
        self._finish_removals()
        self._update_upstreams()
        del old_specs
        return self._reload_result(True, plan.describe())

    def _change_consumers(self, plan: ReloadPlan) -> None:
        """The consumers a reload removes from and adds to workers that keep running."""
        for name, keys in plan.remove_consumers.items():
            for key in keys:
                self._worker_change(name, control.RemoveRequest(key).to_map())
        for name, specs in plan.add_consumers.items():
            replaced = set(plan.remove_consumers.get(name, ()))
            link = self.links.get(name)
            for spec in specs:
                if consumer_key(spec) in replaced and link is not None:
                    # Its key is taken until the old one's Forward_Close is answered: the
                    # consumer-set check adds the new definition once the old one is gone.
                    link.restoring[consumer_key(spec)] = None
                    continue
                self._worker_change(
                    name, control.AddRequest(control.consumer_from_spec(spec)).to_map()
                )

    def _reload_result(self, ok: bool, message: str) -> dict[str, Any]:
        self.last_reload = {"ok": ok, "message": message, "t_wall": time.time()}
        return {"ok": ok, "changes" if ok else "error": message}

    def _worker_change(self, name: str, request: dict[str, Any]) -> None:
        child = self.sup.children.get(name)
        link = self.links.get(name)
        if (
            child is None
            or child.state is not ChildState.RUNNING
            or link is None
            or link.added_pid != child.pid
        ):
            # Not running, or its consumers are not added yet: that (at the next spawn or once
            # the bus subscription arrives) uses the new consumer list from the plan.
            return
        self._send_change(name, request)

    def _send_change(self, name: str, request: dict[str, Any],
                     then: Callable[[dict[str, Any] | None], None] | None = None) -> None:
        """Send an add / remove to worker ``name``, counted until it is answered (the
        consumer set is judged only when none is outstanding); ``then(reply)`` after."""
        link = self.links.get(name)
        if link is not None:
            link.changes += 1
        self.worker_request(name, request, self._change_done(name, request, link, then))

    def _change_done(
        self, name: str, request: dict[str, Any], link: _WorkerLink | None = None,
        then: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> Callable[[dict[str, Any] | None], None]:
        def done(reply: dict[str, Any] | None) -> None:
            if link is not None:
                link.changes = max(0, link.changes - 1)
            if then is not None:
                then(reply)
            what = request.get("key") or consumer_key_of_map(request.get("consumer", {}))
            if reply is None:
                log.error("%s: no answer to %s %s; restarting it to apply the config", name,
                          request["op"], what)  # fmt: skip
                now = time.monotonic()
                c = self.sup.children.get(name)
                if c is not None:
                    c.stop(now)
                    self._execute(now)
                    c.start(now)
                    self._execute(now)
            elif not reply.get("ok"):
                log.error("%s: %s %s refused: %s", name, request["op"], what, reply.get("error"))
            else:
                log.info("%s: %s %s: ok", name, request["op"], what)

        return done

    # ------------------------------------------------------------------ control socket

    def _on_control(self, now: float) -> None:
        assert self.control is not None
        answer_waiting(self.control, lambda body: msgpack.packb(
            self._control_reply(body, now), use_bin_type=True, default=str),
            take=self._take_replay)

    def _control_reply(self, body: bytes, now: float) -> dict[str, Any]:
        try:
            return self._control_request(msgpack.unpackb(body, raw=False), now)
        except Exception as exc:  # a bad request must never stop the supervisor
            if not isinstance(exc, (ValueError, msgpack.UnpackException)):
                log.exception("control request failed")
            return {"ok": False, "error": f"bad request: {exc}; send a msgpack map like "
                    "{'op': 'status'}"}  # fmt: skip

    def _take_replay(self, frames: list[bytes]) -> bool:
        """A replay request goes to the forwarder's replay thread, which answers it (True);
        without one, or when it cannot take it now, ``_control_request`` says so."""
        replay = self.forwarder.replay
        if replay is None or b"replay" not in frames[-1]:
            return False
        try:
            req = msgpack.unpackb(frames[-1], raw=False)
        except (ValueError, msgpack.UnpackException):
            return False
        return isinstance(req, dict) and req.get("op") in REPLAY_OPS and replay.request(frames)

    def _replay_refused(self) -> dict[str, Any]:
        if self.forwarder.replay is None:
            return {"ok": False, "error": "this pipeline keeps no replay buffer ([bus]"
                    " replay_s or replay_bytes is 0): set both above 0 and restart"
                    " `pyconpro run`"}  # fmt: skip
        return {"ok": False, "error": "the replay thread is busy or gone: try again"}

    def _on_replay_replies(self) -> None:
        assert self.control is not None and self.forwarder.replay is not None
        for frames in self.forwarder.replay.replies():
            try:
                self.control.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError:  # the client is gone or not reading: its timeout tells it
                pass

    def _control_request(self, req: Any, now: float) -> dict[str, Any]:
        ops = "status, reload, start, stop, restart, shutdown, ping, sink_report, replay"
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return {"ok": False, "error": f"a request is a map with 'op' (one of {ops})"}
        op = req["op"]
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "sink_report":
            return self._sink_report(req, now)
        if op in REPLAY_OPS:  # not taken by the replay thread (_take_replay)
            return self._replay_refused()
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "reload":
            return self.reload()
        if op == "shutdown":
            self._signals.append(signal.SIGTERM)
            return {"ok": True, "stopping": True}
        if op in ("start", "stop", "restart"):
            name = req.get("child")
            if name not in self.sup.children:
                names = ", ".join(self.sup.children) or "none"
                return {"ok": False, "error": f"no child named {name!r}; children: {names}"}
            if self.sup.shutting_down:
                return {"ok": False, "error": "shutting down"}
            child = self.sup.child(name)
            if op in ("stop", "restart"):
                child.stop(now)
                self._execute(now)
            if op in ("start", "restart"):
                child.start(now)
                self._execute(now)
            return {"ok": True, "child": name, "state": child.state.value}
        return {"ok": False, "error": f"unknown op {op!r}; use one of {ops}"}

    def _security_status(self) -> dict[str, Any]:
        """Which endpoints use CURVE, and how many clients the ZAP handler admitted/refused."""
        bus = self.config.bus
        return {
            "curve_bus": self.guard.uses_curve(bus.endpoint),
            "curve_control": self.guard.uses_curve(self.control_endpoint),
            **self.guard.stats(),
        }

    def _sink_report(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        """A sink's state, sent by the sink itself (``sinks/base.py``) every few seconds."""
        name, report = req.get("child"), req.get("report")
        child = self.sup.children.get(name) if isinstance(name, str) else None
        if child is None or child.kind is not ChildKind.SINK or not isinstance(report, dict):
            return {"ok": False, "error": f"sink_report: {name!r} is not a sink of this "
                    "pipeline, or 'report' is not a map"}  # fmt: skip
        self.sink_reports[str(name)] = (now, {**report, "pid": req.get("pid")})
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        """Everything ``pyconpro status`` shows, as plain data (docs/operations.md)."""
        now = time.monotonic()
        children = []
        for name, child in self.sup.children.items():
            ev = self.last_transition.get(name)
            deadline = child.next_deadline()
            children.append({
                "name": name,
                "kind": child.kind.name.lower(),
                "state": child.state.value,
                "pid": child.pid,
                "restarts": child.restarts,
                "failures": child.failures,
                "last_exit": _describe_exit(child.last_exit),
                "reason": ev.reason if ev else "",
                "since_s": round(now - self.started - (ev.at - self.started), 3) if ev else None,
                "next_in_s": round(deadline - now, 3) if deadline is not None else None,
            })  # fmt: skip
        workers: dict[str, Any] = {}
        for name, link in self.links.items():
            st = link.status
            wc = self.sup.children.get(name)
            # The same keys whether or not the worker has answered yet (None/empty until then),
            # so a reader never meets a missing key.
            entry: dict[str, Any] = {
                "control": link.endpoint,
                "age_s": None,
                "rates": link.rates,
                "consumers_added": wc is not None and link.added_pid == wc.pid,
                "consumers": [],
                **{k: (st or {}).get(k) for k in _WORKER_STATUS_KEYS},
            }
            if st is not None:
                entry["age_s"] = round(now - link.status_at, 3)
                entry["consumers"] = [
                    {k: v for k, v in c.items() if k != "recorder"} for c in st.get("consumers", [])
                ]
            workers[name] = entry
        sinks: dict[str, Any] = {}
        for name, child in self.sup.children.items():
            if child.kind is ChildKind.SINK:
                got = self.sink_reports.get(name)
                sinks[name] = (
                    {**got[1], "age_s": round(now - got[0], 3)} if got else {"age_s": None}
                )
        return {
            "supervisor": {
                "pid": os.getpid(),
                "config": os.path.abspath(self.config_path),
                "bus": self.forwarder.public_endpoint,
                "control": self.control_endpoint,
                "uptime_s": round(now - self.started, 3),
                "started_wall": self.started_wall,
                "state": "stopping" if self.sup.shutting_down else "running",
                "reloads": self.reloads,
                "last_reload": self.last_reload,
                "security": self._security_status(),
            },
            "forwarder": {
                "alive": self.forwarder.alive,
                "path": self.forwarder.path.name,
                "upstreams": sorted(self.forwarder.upstreams),
                "rate_msgs_s": round(self._fwd_rate, 1),
                **self._fwd_status,
                "replay": self.forwarder.replay.stats() if self.forwarder.replay else None,
            },
            "children": children,
            "workers": workers,
            "sinks": sinks,
            "last_events": self.last_events,
            "last_errors": self.last_errors,
        }

    def _forwarder_stats(self, now: float) -> None:
        if now < self._next_fwd_stats:
            return
        self._next_fwd_stats = now + STATUS_INTERVAL_S
        st = self.forwarder.stats(timeout_ms=200)
        if st is None:
            return
        if self._fwd_stats is not None:
            t0, n0 = self._fwd_stats
            if now > t0:
                self._fwd_rate = (st.messages_in - n0) / (now - t0)
        self._fwd_stats = (now, st.messages_in)
        self._fwd_status = st.as_dict()

    # ------------------------------------------------------------------ bus events

    def _on_events(self) -> None:
        assert self.events is not None
        for _ in range(1000):
            try:
                topic, body = self.events.recv_multipart(zmq.NOBLOCK)[:2]
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                msg = decode(topic, body)
            except MalformedPacket:  # malformed bus traffic is the sinks' business to count
                continue
            if not isinstance(msg, Event):
                continue
            key = f"{msg.plc}/{msg.tag}"
            entry = {
                "kind": msg.kind,
                "from": msg.state_from,
                "to": msg.state_to,
                "message": msg.message,
                "status": msg.status_text,
                "cip_general": msg.cip_general,
                "cip_extended": msg.cip_extended,
                "t_wall_ns": msg.t_wall_ns,
                "publisher": msg.publisher,
            }
            self.last_events[key] = entry
            if msg.kind in ERROR_EVENT_KINDS:
                self.last_errors[key] = entry

    # ------------------------------------------------------------------ the loop

    def _handle_signals(self, now: float) -> None:
        while self._signals:
            sig = self._signals.popleft()
            if sig in (signal.SIGTERM, signal.SIGINT):
                if self.sup.shutting_down:
                    # The same signal often arrives twice at once (timeout(1), shells and
                    # service managers signal the whole process group): only a repeat after a
                    # second means "stop waiting".
                    if not self._kill_all and now - self._stop_at >= 1.0:
                        log.warning("second stop request: killing every child now")
                        self._kill_all = True
                        for proc in self.procs.values():
                            proc.send_signal(signal.SIGKILL)  # reaped by _reap, no wait here
                    continue
                self._stop_at = now
                log.info("stopping (%s): workers first, then sinks",
                         signal.Signals(sig).name)  # fmt: skip
                self.sup.shutdown(now)
                self._execute(now)
            elif sig == signal.SIGHUP:
                log.info("SIGHUP: reloading %s", self.config_path)
                self.reload()
            # SIGCHLD only wakes the loop; _reap does the rest.

    def fatal_reminder(self, now: float) -> str | None:
        """While every worker is FATAL nothing is acquired, yet `run` keeps serving status:
        return (and log) a reminder every ``FATAL_REMINDER_S`` seconds, None otherwise."""
        workers = [c for c in self.sup.children.values() if c.kind is ChildKind.WORKER]
        if not workers or any(c.state is not ChildState.FATAL for c in workers):
            self._all_fatal_since = None
            return None
        if self._all_fatal_since is None:
            self._all_fatal_since = now
            self._next_fatal_reminder = now + FATAL_REMINDER_S
            return None
        if now < self._next_fatal_reminder:
            return None
        self._next_fatal_reminder = now + FATAL_REMINDER_S
        names = ", ".join(c.name for c in workers)
        text = (
            f"every worker is FATAL ({names}) for {now - self._all_fatal_since:.0f} s: nothing "
            "is being acquired. `pyconpro status` shows why (the log above has each worker's "
            "error); fix the cause, then restart `pyconpro run` (or send the control op "
            "{'op': 'start', 'child': NAME} to start one again)"
        )
        log.error("%s", text)
        return text

    def loop_wait(self, now: float) -> float:
        """Seconds the loop may sleep at ``now``: until the next supervision deadline, the next
        status poll of a live worker, or the deadline of a control request in flight.

        Only live children count: ``_link_timers`` moves ``next_poll`` forward only for
        STARTING / RUNNING workers, so the stale ``next_poll`` of a BACKOFF / EXITED / FATAL
        one would otherwise make every wait 0 (a busy loop).
        """
        wait = MAX_WAIT_S
        deadline = self.sup.next_deadline()
        if deadline is not None:
            wait = min(wait, deadline - now)
        for name, link in self.links.items():
            if link.inflight is not None:
                wait = min(wait, link.deadline - now)
                continue
            child = self.sup.children.get(name)
            if (
                child is not None
                and child.pid
                and child.state in (ChildState.STARTING, ChildState.RUNNING)
            ):
                wait = min(wait, link.next_poll - now)
        return max(0.0, wait)

    def run(self) -> int:
        """Start every child and supervise until a graceful stop finishes. Returns 0."""
        now = time.monotonic()
        log.info(
            "pyconpro run %s: bus %s, control %s, %d worker(s), %d sink(s)",
            self.config_path, self.forwarder.public_endpoint, self.control_endpoint,
            sum(1 for s in self.specs.values() if s.kind is ChildKind.WORKER),
            sum(1 for s in self.specs.values() if s.kind is ChildKind.SINK),
        )  # fmt: skip
        for name, spec in self.specs.items():
            if spec.kind is ChildKind.WORKER:
                log.info("%s serves %s (%d consumer(s))", name,
                         ", ".join(sorted({c.plc for c in spec.consumers})) or "nothing",
                         len(spec.consumers))  # fmt: skip
        self.sup.start_all(now)
        self._execute(now)
        while not self.sup.done:
            now = time.monotonic()
            self._handle_signals(now)
            self._reap(now)
            self.sup.on_timer(now)
            self._execute(now)
            self._link_timers(now)
            self._forwarder_stats(now)
            if not self.sup.shutting_down:
                self.fatal_reminder(now)
            if self.sup.done:
                break
            wait = self.loop_wait(time.monotonic())
            for sock, _flags in self.poller.poll(int(wait * 1000) + 1):
                now = time.monotonic()
                if sock is self.control:
                    self._on_control(now)
                elif self.forwarder.replay is not None and sock is self.forwarder.replay.socket:
                    self._on_replay_replies()
                elif sock is self.events:
                    self._on_events()
                elif self._wake_r is not None and sock in (self._wake_r, self._wake_r.fileno()):
                    # pyzmq reports a plain socket by its file descriptor (an int), not the
                    # object: matching only the object left the wake-up byte unread, and the
                    # loop spun at 100 % CPU from the first signal (a child's SIGCHLD) on.
                    try:
                        while self._wake_r.recv(512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                else:
                    for name, link in list(self.links.items()):
                        if link.sock is sock:
                            self._on_link_reply(name, link, now)
                            break
        log.info("stopped: every worker and sink has exited")
        return 0


def consumer_key_of_map(m: Mapping[str, Any]) -> str:
    return f"{m.get('plc')}/{m.get('alias') or m.get('tag')}"


def _describe_exit(last: tuple[int | None, str | None] | None) -> str | None:
    if last is None:
        return None
    code, sig = last
    if sig is not None:
        return f"killed by SIG{sig}"
    if code is not None:
        return f"exit code {code}"
    return "failed to start"


def _rates(
    prev: dict[str, Any] | None, prev_at: float, cur: dict[str, Any], now: float
) -> dict[str, float]:
    """Samples per second per consumer key (and ``"*"`` for the worker) between two statuses."""
    if prev is None or now <= prev_at:
        return {}
    dt = now - prev_at
    before = {c.get("key"): c.get("samples", 0) for c in prev.get("consumers", [])}
    out: dict[str, float] = {}
    for c in cur.get("consumers", []):
        key = c.get("key")
        if key in before and isinstance(c.get("samples"), int):
            out[key] = round(max(0, c["samples"] - before[key]) / dt, 2)
    total_prev = (prev.get("counters") or {}).get("samples")
    total_cur = (cur.get("counters") or {}).get("samples")
    if isinstance(total_prev, int) and isinstance(total_cur, int):
        out["*"] = round(max(0, total_cur - total_prev) / dt, 2)
    return out


# ============================================================================ entry point


def setup_logging(config: Config, level: str | None = None) -> Any:
    """Configure the root logger from ``[logging]``; returns the log file object (or None)
    so children can write to the same file."""
    level = level or config.logging.level
    handlers: list[logging.Handler] = []
    log_file = None
    if config.logging.file:
        log_file = open(config.logging.file, "a", buffering=1)  # noqa: SIM115 - lives until exit
        handlers.append(logging.StreamHandler(log_file))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=getattr(logging, level),
        handlers=handlers,
        format=LOG_FORMAT,
        force=True,
    )
    return log_file


def run_config(path: str, *, log_level: str | None = None) -> int:
    """Load ``path``, supervise until stopped. Exit codes: 0 stopped, 2 unusable config/bus."""
    try:
        config = load_config(path)
        try:
            names: list[str] | None = [g.name for g in group_by_local_address(
                config, resolve_local_address, interface_address)]
        except ConfigError:
            names = None  # open() reports it, with the same words
        issues = run_issues(config, names)  # what `pyconpro check` reports too
        if issues:
            raise ConfigError(issues)
        log_file = setup_logging(config, log_level)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    except OSError as exc:  # the log file, between the check and the open
        print(f"error: cannot open the log file {config.logging.file}: {exc.strerror};"
              " check [logging].file", file=sys.stderr)
        return 2
    for warning in (*config.warnings, *run_warnings(config)):
        log.warning("%s", warning)
    try:
        sup = Supervisor(path, config=config, log_level=log_level, child_output=log_file)
    except (ConfigError, CurveError) as exc:  # a key file named by [security] is unusable
        print(f"error: {exc}", file=sys.stderr)
        if log_file is not None:
            log_file.close()
        return 2
    try:
        try:
            sup.open()
        except (ConfigError, ForwarderError, OSError) as exc:
            problems: Sequence[object] = exc.issues if isinstance(exc, ConfigError) else (exc,)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        code = sup.run()
        return code
    finally:
        sup.close()
        if log_file is not None:
            log_file.close()


def build_parser(prog: str = "python -m pyconpro.workers.supervisor") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(p)
    return p


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m pyconpro.workers.supervisor"
) -> int:
    args = build_parser(prog).parse_args(argv)
    return run_config(args.config, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
