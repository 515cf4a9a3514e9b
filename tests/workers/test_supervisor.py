"""The launch supervisor (workers/supervisor.py).

Pure parts: the consumer encoding the worker parses, the plan a config means, the reload diff,
local address lookup. Runtime: a real ``Supervisor`` (in a thread, so the test can inject
stand-in children) driving small stand-in processes: a fake worker that speaks the worker's
control protocol and logs what it is asked, and a fake sink that logs when it is stopped.
The model's timing itself is tested with a fake clock in tests/acquisition/test_supervision.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition.config import Config, WorkerGroup, consumer_specs, parse_config
from pyconpro.acquisition.supervision import ChildKind
from pyconpro.sinks.registry import sink_schemas
from pyconpro.workers.forwarder import ForwarderError
from pyconpro.workers.supervisor import (
    CONTROL_HWM,
    FATAL_REMINDER_S,
    LINK_HWM,
    MAX_WAIT_S,
    ChildSpec,
    Runtime,
    Supervisor,
    consumer_key,
    consumer_map,
    consumer_set_diff,
    consumer_text,
    diff_plans,
    interface_address,
    plan_children,
    resolve_local_address,
    restart_outages,
)

from pyconpro.status_cli import request
from tests.support.scheduling import NORMAL, need_realtime, new_threads, scheduling, threads
from tests.support.wait import wait_for

TIMEOUT_S = 20.0

FAKE_WORKER = r"""
import json, os, signal, sys, time
import msgpack, zmq
control, pub, log, name = sys.argv[1:5]
keys = {}
for i, a in enumerate(sys.argv):
    if sys.argv[i - 1] == "--consumer":
        m = dict(kv.split("=", 1) for kv in a.split(","))
        keys[m["plc"] + "/" + (m.get("alias") or m["tag"])] = m
def write(**ev):
    with open(log, "a") as f:
        f.write(json.dumps({"t": time.time(), "pid": os.getpid(), "name": name, **ev}) + "\n")
ctx = zmq.Context()
r = ctx.socket(zmq.ROUTER); r.setsockopt(zmq.LINGER, 0); r.bind(control)
p = ctx.socket(zmq.XPUB); p.setsockopt(zmq.LINGER, 0); p.bind(pub)
hold = os.path.join(os.path.dirname(log), "hold-subscriptions")  # while it exists: report none
subs = set()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
write(ev="start", consumers=sorted(keys))
def subscribed():
    while p.poll(0):
        m = p.recv()
        if m[:1] == b"\x01":
            if not subs:
                write(ev="subscribed")
            subs.add(m[1:])
        elif m[:1] == b"\x00":
            subs.discard(m[1:])
    return 0 if os.path.exists(hold) else len(subs)
while not stop:
    if not r.poll(20):
        continue
    *env, body = r.recv_multipart()
    req = msgpack.unpackb(body)
    op = req.get("op")
    if op == "status":
        rep = {"ok": True, "pub": pub, "counters": {"samples": 0},
               "bus_subscriptions": subscribed(),
               "consumers": [{"key": k, "samples": 0, "state": "RUNNING"} for k in keys]}
    elif op == "add":
        m = req["consumer"]; k = m["plc"] + "/" + (m.get("alias") or m["tag"])
        keys[k] = m; rep = {"ok": True, "key": k}; write(ev="add", key=k, consumer=m)
    elif op == "remove":
        keys.pop(req["key"], None); rep = {"ok": True}; write(ev="remove", key=req["key"])
    else:
        rep = {"ok": False, "error": "unknown op"}
    r.send_multipart([*env, msgpack.packb(rep)])
write(ev="stop")
time.sleep(0.3)  # stands for the Forward_Close round trips of a real worker
write(ev="exit")
"""

FAKE_SINK = r"""
import json, os, signal, sys, time
log, name = sys.argv[1:3]
def write(**ev):
    with open(log, "a") as f:
        f.write(json.dumps({"t": time.time(), "pid": os.getpid(), "name": name, **ev}) + "\n")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
write(ev="start", argv=sys.argv[3:])
while not stop:
    time.sleep(0.02)
write(ev="stop")
"""


def config_text(tmp: Path, *, tags: Sequence[str] = ("Counter", "Sine"), second_plc: bool = True,
                sink_batch: int = 1000, crash_sink: bool = False) -> str:  # fmt: skip
    plc2 = """
[[plc]]
name = "p2"
address = "127.88.1.3"
local_address = "127.88.1.4"
  [[plc.tag]]
  name = "Counter"
""" if second_plc else ""  # fmt: skip
    crash = '\n[[sink]]\nkind = "stdout"\nname = "crash"\n' if crash_sink else ""
    tag_text = "".join(f'  [[plc.tag]]\n  name = "{t}"\n' for t in tags)
    return f"""
[bus]
endpoint = "ipc://{tmp}/bus"
control_base = "ipc://{tmp}/ctl"
[supervisor]
start_s = 0.3
backoff_initial_s = 0.05
backoff_max_s = 0.2
max_quick_failures = 3
stop_timeout_s = 5
[[plc]]
name = "p1"
address = "127.88.1.2"
local_address = "127.88.1.1"
{tag_text}{plc2}
[[sink]]
kind = "sqlite"
name = "db"
path = "db.sqlite3"
batch_size = {sink_batch}
{crash}"""


def stand_in_planner(tmp: Path) -> Callable[[Config, Sequence[WorkerGroup], Runtime],
                                            dict[str, ChildSpec]]:  # fmt: skip
    worker_py = tmp / "fake_worker.py"
    sink_py = tmp / "fake_sink.py"
    worker_py.write_text(FAKE_WORKER)
    sink_py.write_text(FAKE_SINK)
    log = str(tmp / "children.log")

    def planner(config: Config, groups: Sequence[WorkerGroup], rt: Runtime) -> dict[str, ChildSpec]:
        real = plan_children(config, groups, rt)
        out = {}
        for name, spec in real.items():
            if spec.kind is ChildKind.WORKER:
                assert spec.control is not None and spec.pub is not None
                argv: tuple[str, ...] = (sys.executable, str(worker_py), spec.control, spec.pub,
                                         log, name)  # fmt: skip
            elif name == "sink-crash":
                argv = (sys.executable, "-c", "raise SystemExit(3)")
            else:
                # The sink's real options follow, so a changed option changes the command.
                argv = (sys.executable, str(sink_py), log, name, *spec.argv[3:])
            out[name] = replace(spec, argv=argv)
        return out

    return planner


def read_log(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "children.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def status(sup: Supervisor) -> dict[str, Any]:
    st = request(sup.control_endpoint, {"op": "status"}, 5.0)
    assert st is not None and st["ok"], st
    return st


def child(st: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in st["children"] if c["name"] == name)


@contextmanager
def running(tmp: Path, text: str) -> Iterator[Supervisor]:
    cfg = tmp / "pipe.toml"
    cfg.write_text(text)
    sup = Supervisor(str(cfg), planner=stand_in_planner(tmp))
    sup.open()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    try:
        yield sup
    finally:
        sup.request(signal.SIGTERM)
        thread.join(TIMEOUT_S)
        pids = [p.pid for p in sup.procs.values()]
        sup.close()  # kills (by pid) anything still running
        assert not thread.is_alive(), "supervisor did not stop"
        assert result == [0]
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


# ============================================================================ pure parts


def test_consumer_text_is_what_the_worker_parses() -> None:
    from pyconpro.acquisition import control as consumers
    cfg = parse_config("""
[[plc]]
name = "line1"
address = "10.1.2.3"
slot = 2
route = [["backplane", 3], ["enet", "192.168.2.10"]]
udp_port = 2300
  [[plc.tag]]
  name = "Speed"
  rpi_ms = 20
  ot_rpi_ms = 40
  multiplier = 64
  size = 8
  alias = "spd"
[[plc]]
name = "line2"
address = "10.1.2.4"
  [[plc.tag]]
  name = "Flags"
  transport = "multicast"
""", sink_kinds=sink_schemas())
    for spec in (s for specs in consumer_specs(cfg).values() for s in specs):
        for parsed in (consumers.consumer_from_text(consumer_text(spec)),
                       consumers.consumer_from_map(consumer_map(spec))):  # fmt: skip
            assert parsed == consumers.consumer_from_spec(spec)
            assert parsed.key == consumer_key(spec)


def _plan(text: str, tmp: Path) -> dict[str, ChildSpec]:
    cfg = parse_config(text, "p.toml", sink_kinds=sink_schemas(), base_dir=str(tmp))
    from pyconpro.acquisition.config import group_by_local_address

    groups = group_by_local_address(cfg, lambda a: "x")
    return plan_children(cfg, groups, Runtime(bus_connect="ipc:///b", python="py"))


def test_plan_one_worker_per_local_address_and_every_sink(tmp_path: Path) -> None:
    plan = _plan(config_text(tmp_path), tmp_path)
    assert list(plan) == ["worker-127.88.1.1", "worker-127.88.1.4", "sink-db"]
    w = plan["worker-127.88.1.1"]
    assert w.kind is ChildKind.WORKER
    assert w.control == f"ipc://{tmp_path}/ctl-worker-127.88.1.1"
    assert w.pub == f"ipc://{tmp_path}/ctl-worker-127.88.1.1.pub"
    argv = w.command()
    assert argv[:3] == ["py", "-m", "pyconpro.workers.io_worker"]
    assert argv[argv.index("--local-address") + 1] == "127.88.1.1"
    assert [argv[i + 1].split(",")[2] for i, a in enumerate(argv) if a == "--consumer"] == [
        "tag=Counter", "tag=Sine"]  # fmt: skip
    sink = plan["sink-db"]
    assert sink.kind is ChildKind.SINK
    from pyconpro.sinks.cli import build_parser, sink_from_args

    # the sink gets its validated section, paths resolved against the file's directory
    assert sink.argv[:4] == ("py", "-m", "pyconpro.sinks.cli", "--section")
    section = json.loads(sink.argv[4])
    assert (section["kind"], section["path"]) == ("sqlite", str(tmp_path / "db.sqlite3"))
    args = build_parser().parse_args(list(sink.argv[3:]))
    config, endpoints, *_ = sink_from_args(args)
    assert endpoints == ["ipc:///b"]
    assert args.report == f"ipc://{tmp_path}/ctl-supervisor"  # where it sends its state
    assert args.replay == f"ipc://{tmp_path}/ctl-supervisor"  # where it asks what it missed
    assert config == parse_config(config_text(tmp_path), "p.toml", sink_kinds=sink_schemas(),
                                  base_dir=str(tmp_path)).sinks[0]  # fmt: skip


def test_rejects_are_logged_unless_a_stdout_sink_prints_every_event_of_the_worker(
    tmp_path: Path,
) -> None:
    def problem_level(sinks: str) -> dict[str, str]:
        plan = _plan(config_text(tmp_path) + sinks, tmp_path)
        return {name: spec.command()[spec.command().index("--problem-log-level") + 1]
                for name, spec in plan.items() if spec.kind is ChildKind.WORKER}

    both = ["worker-127.88.1.1", "worker-127.88.1.4"]
    assert set(problem_level("").values()) == {"WARNING"}  # only the sqlite sink
    # a stdout sink of every topic, or of event/: it prints each reject on the same console
    for topics in ('["sample/", "event/"]', '["event/"]', '["event"]'):
        levels = problem_level(f'[[sink]]\nkind = "stdout"\ntopics = {topics}\n')
        assert levels == dict.fromkeys(both, "DEBUG"), topics
    # samples only, or the events of one PLC: the other worker's rejects stay in the log
    assert set(problem_level('[[sink]]\nkind = "stdout"\ntopics = ["sample/"]\n').values()) == {
        "WARNING"}
    one = problem_level('[[sink]]\nkind = "stdout"\ntopics = ["event/p1/"]\n')
    assert sorted(one.values()) == ["DEBUG", "WARNING"]


def test_worker_argv_carries_the_udp_receive_buffer_of_the_file(tmp_path: Path) -> None:
    from pyconpro.workers.io_worker import DEFAULT_UDP_RCVBUF, _parser

    default = _plan(config_text(tmp_path), tmp_path)["worker-127.88.1.1"].command()
    assert default[default.index("--udp-rcvbuf") + 1] == str(DEFAULT_UDP_RCVBUF)
    text = "[worker]\nudp_rcvbuf = 262144\n" + config_text(tmp_path)
    for name in ("worker-127.88.1.1", "worker-127.88.1.4"):
        argv = _plan(text, tmp_path)[name].command()
        assert argv[argv.index("--udp-rcvbuf") + 1] == "262144"
        assert _parser().parse_args(argv[3:]).udp_rcvbuf == 262144  # the worker takes it


def test_worker_argv_carries_the_realtime_priority_of_the_file(tmp_path: Path) -> None:
    from pyconpro.workers.io_worker import _parser

    default = _plan(config_text(tmp_path), tmp_path)["worker-127.88.1.1"].command()
    assert default[default.index("--realtime-priority") + 1] == "0"
    argv = _plan("[worker]\nrealtime_priority = 10\n" + config_text(tmp_path),
                 tmp_path)["worker-127.88.1.1"].command()  # fmt: skip
    assert _parser().parse_args(argv[3:]).realtime_priority == 10  # the worker takes it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's policies")
@pytest.mark.parametrize("priority", [0, 7])
def test_the_bus_priority_is_the_forwarders_and_the_supervisors_threads_stay_normal(
        tmp_path: Path, priority: int) -> None:
    if priority:
        need_realtime()
    want = (os.SCHED_FIFO, priority) if priority else NORMAL
    cfg = tmp_path / "pipe.toml"
    text = config_text(tmp_path)
    cfg.write_text(text.replace("[bus]\n", f"[bus]\nrealtime_priority = {priority}\n"))
    before = set(threads(os.getpid()))
    sup = Supervisor(str(cfg), planner=stand_in_planner(tmp_path))
    sup.open()
    try:
        assert sup.forwarder.realtime_priority == priority
        new = new_threads(os.getpid(), before, libzmq=4).values()  # two contexts
        # Two contexts, two I/O threads: the forwarder's own takes the bus priority, the
        # supervisor's (control socket, worker links, its events) stays at normal priority.
        io = sorted(t.sched for t in new if t.name.startswith("ZMQbg/IO/"))
        assert io == sorted([NORMAL, want])
        (forwarding,) = [t.native_id for t in threading.enumerate() if t.name == "bus-forwarder"]
        assert forwarding is not None and scheduling(forwarding) == want
        assert scheduling(0) == NORMAL  # the supervisor's own thread
    finally:
        sup.close()


def test_tcp_control_base_gives_ports_and_learned_pub(tmp_path: Path) -> None:
    text = config_text(tmp_path).replace(f'"ipc://{tmp_path}/ctl"', '"tcp://127.0.0.1:7000"')
    plan = _plan(text, tmp_path)
    assert plan["worker-127.88.1.1"].control == "tcp://127.0.0.1:7001"
    assert plan["worker-127.88.1.4"].control == "tcp://127.0.0.1:7002"
    assert plan["worker-127.88.1.1"].pub is None  # learned from the worker's status


def test_diff_plans(tmp_path: Path) -> None:
    old = _plan(config_text(tmp_path), tmp_path)
    assert diff_plans(old, old).empty
    assert diff_plans(old, old).describe() == "no changes"
    # a tag added to p1, p2 (its own worker) removed, a sink option changed
    new = _plan(config_text(tmp_path, tags=("Counter", "Sine", "Array10"), second_plc=False,
                            sink_batch=10), tmp_path)  # fmt: skip
    d = diff_plans(old, new)
    assert d.start == ()
    assert d.stop == ("worker-127.88.1.4",)
    assert d.restart == ("sink-db",)
    assert [consumer_key(s) for s in d.add_consumers["worker-127.88.1.1"]] == ["p1/Array10"]
    assert d.remove_consumers == {}
    # a changed consumer is removed then added; a removed one only removed
    new2 = _plan(config_text(tmp_path, tags=("Sine",)).replace(
        '  name = "Sine"\n', '  name = "Sine"\n  rpi_ms = 20\n', 1), tmp_path)  # fmt: skip
    d2 = diff_plans(old, new2)
    assert d2.remove_consumers == {"worker-127.88.1.1": ("p1/Counter", "p1/Sine")}
    assert [s.rpi_us for s in d2.add_consumers["worker-127.88.1.1"]] == [20_000]
    assert d2.restart == () and d2.stop == () and d2.start == ()
    # back again: the removed worker is started
    assert diff_plans(new, old).start == ("worker-127.88.1.4",)


def test_plan_a_web_process_only_for_a_web_section(tmp_path: Path) -> None:
    from pyconpro.web.server import build_parser, options_from_args

    assert all(s.kind is not ChildKind.WEB for s in _plan(config_text(tmp_path), tmp_path).values())
    token = "Zx9-4kQ_vT2mLp8sR1wY"
    text = config_text(tmp_path) + f'[web]\nport = 9100\ntoken = "{token}"\nupdates_per_s = 2\n'
    plan = _plan(text, tmp_path)
    assert list(plan)[-1] == "web"
    web = plan["web"]
    assert web.kind is ChildKind.WEB and web.control is None
    assert web.argv[:3] == ("py", "-m", "pyconpro.web.server")
    assert token not in " ".join(web.argv)  # only its SHA-256 is in the process list
    opts = options_from_args(build_parser().parse_args(list(web.argv[3:])))
    assert (opts.address, opts.port, opts.updates_per_s) == ("127.0.0.1", 9100, 2.0)
    assert opts.connect == ["ipc:///b"]  # the bus, like the sinks
    assert opts.control == f"ipc://{tmp_path}/ctl-supervisor"  # where it asks for status
    assert opts.token_sha256 == hashlib.sha256(token.encode()).digest()
    # A token file is read by the web process itself; a change of [web] restarts it.
    other = _plan(text.replace(f'token = "{token}"', 'token_file = "web.token"'), tmp_path)
    assert other["web"].argv[-2:] == ("--token-file", str(tmp_path / "web.token"))
    assert diff_plans(plan, other).restart == ("web",)
    assert diff_plans(plan, _plan(config_text(tmp_path), tmp_path)).stop == ("web",)


def test_consumer_set_diff_judges_a_workers_status_against_the_configuration() -> None:
    configured = {"p/A": "aaaa", "p/B": "bbbb", "p/C": "cccc", "p/D": "dddd"}
    reported = [
        {"key": "p/A", "def": "aaaa", "state": "RUNNING"},  # as configured
        {"key": "p/B", "def": "b2b2", "state": "RUNNING"},  # changed behind our back
        {"key": "p/C", "def": "c3c3", "state": "CLOSING"},  # on its way out: wait
        {"key": "p/X", "def": "xxxx", "state": "OPENING"},  # not configured
        {"key": "p/Y", "def": "yyyy", "state": "CLOSED"},  # not configured, leaving anyway
        {"key": "p/E", "state": "RUNNING"},  # no fingerprint (an older worker): not judged
        "garbage", {"key": 5},
    ]
    diff = consumer_set_diff({**configured, "p/E": "eeee"}, reported)
    assert diff.missing == {"p/D"}
    assert diff.extra == {"p/X"}
    assert diff.changed == {"p/B"}
    assert consumer_set_diff(configured, [
        {"key": k, "def": d, "state": "RUNNING"} for k, d in configured.items()]) == type(diff)()


def test_local_address_lookup() -> None:
    assert resolve_local_address("127.0.0.1") == "127.0.0.1"
    assert interface_address("lo") == "127.0.0.1"
    with pytest.raises(OSError, match="no-such-if0"):
        interface_address("no-such-if0")


# ============================================================================ runtime


def test_starts_everything_reports_status_and_stops_workers_before_sinks(tmp_path: Path) -> None:
    with running(tmp_path, config_text(tmp_path)) as sup:
        st = wait_for(lambda: (s := status(sup)) and all(
            c["state"] == "RUNNING" for c in s["children"]) and s, "every child RUNNING")
        assert {c["name"] for c in st["children"]} == {
            "worker-127.88.1.1", "worker-127.88.1.4", "sink-db"}  # fmt: skip
        # A worker counts as started when its first status reply says it is ready, or when it
        # has been alive start_s (0.3 s) before that reply came, as on a busy machine.
        assert child(st, "worker-127.88.1.1")["reason"] in ("reported ready", "alive for 0.3 s")
        assert st["supervisor"]["bus"] == f"ipc://{tmp_path}/bus"
        assert st["forwarder"]["alive"]
        assert f"ipc://{tmp_path}/ctl-worker-127.88.1.1.pub" in st["forwarder"]["upstreams"]
        w = wait_for(lambda: status(sup)["workers"]["worker-127.88.1.1"].get("consumers"),
                     "worker status")  # fmt: skip
        assert [c["key"] for c in w] == ["p1/Counter", "p1/Sine"]
        assert request(sup.control_endpoint, {"op": "nope"}, 5.0) == {
            "ok": False,
            "error": "unknown op 'nope'; use one of status, reload, start, stop, restart, "
            "shutdown, ping, sink_report, replay",
        }
        # A sink's own report of its output (sinks/base.py sends it) shows in the status.
        assert status(sup)["sinks"] == {"sink-db": {"age_s": None}}
        report = {"state": "retrying", "cause": "disk full", "pending": 12, "dropped": 0}
        assert request(sup.control_endpoint, {"op": "sink_report", "child": "sink-db",
                                              "pid": 7, "report": report}, 5.0) == {"ok": True}
        got = status(sup)["sinks"]["sink-db"]
        assert {k: got[k] for k in (*report, "pid")} == {**report, "pid": 7}
        refused = request(sup.control_endpoint, {"op": "sink_report",
                                                 "child": "worker-127.88.1.1", "report": {}}, 5.0)
        assert refused is not None and not refused["ok"]
    log = read_log(tmp_path)
    worker_exits = [e["t"] for e in log if e["ev"] == "exit"]
    sink_stops = [e["t"] for e in log if e["ev"] == "stop" and e["name"] == "sink-db"]
    assert len(worker_exits) == 2 and len(sink_stops) == 1
    assert max(worker_exits) <= sink_stops[0]  # sinks are told to stop after workers exited


def test_control_socket_and_worker_links_have_explicit_hwm(tmp_path: Path) -> None:
    cfg = tmp_path / "pipe.toml"
    cfg.write_text(config_text(tmp_path))
    sup = Supervisor(str(cfg), planner=stand_in_planner(tmp_path))
    sup.open()
    try:
        assert sup.control is not None
        assert sup.control.getsockopt(zmq.SNDHWM) == CONTROL_HWM != 1000  # not libzmq's default
        assert sup.control.getsockopt(zmq.RCVHWM) == CONTROL_HWM
        assert sup.links
        for link in sup.links.values():
            sock = sup._link_socket(link)
            assert sock.getsockopt(zmq.SNDHWM) == LINK_HWM != 1000
            assert sock.getsockopt(zmq.RCVHWM) == LINK_HWM
    finally:
        sup.close()


def test_sigkilled_children_come_back(tmp_path: Path) -> None:
    with running(tmp_path, config_text(tmp_path, second_plc=False)) as sup:
        # each worker process starts empty and gets every consumer through its control socket
        def adds_by_start(n: int) -> list[list[str]] | None:
            log = read_log(tmp_path)
            starts = [e for e in log if e["ev"] == "start" and "consumers" in e]
            assert all(e["consumers"] == [] for e in starts)
            adds = [sorted(e["key"] for e in log if e["ev"] == "add" and e["pid"] == start["pid"])
                    for start in starts]  # fmt: skip
            return adds if adds == [["p1/Counter", "p1/Sine"]] * n else None

        wait_for(lambda: adds_by_start(1), "the first worker process got both consumers")
        st = wait_for(lambda: (s := status(sup)) and all(
            c["state"] == "RUNNING" for c in s["children"]) and s, "every child RUNNING")
        old = {c["name"]: c["pid"] for c in st["children"]}
        for pid in old.values():
            os.kill(pid, signal.SIGKILL)

        def back() -> dict[str, Any] | None:
            s = status(sup)
            ok = all(c["state"] == "RUNNING" and c["pid"] not in (None, old[c["name"]])
                     for c in s["children"])  # fmt: skip
            return s if ok else None

        st = wait_for(back, "both children restarted")
        for c in st["children"]:
            assert c["restarts"] == 1
            assert c["last_exit"] == "killed by SIGKILL"
        wait_for(lambda: adds_by_start(2), "the restarted worker process got both consumers")


def test_child_dying_at_start_becomes_fatal_and_others_run(tmp_path: Path) -> None:
    with running(tmp_path, config_text(tmp_path, second_plc=False, crash_sink=True)) as sup:
        st = wait_for(lambda: (s := status(sup)) and child(s, "sink-crash")["state"] == "FATAL"
                      and s, "sink-crash FATAL")  # fmt: skip
        c = child(st, "sink-crash")
        assert c["failures"] == 3 and c["last_exit"] == "exit code 3"
        assert "3 times in a row; not restarting" in c["reason"]
        assert child(st, "sink-db")["state"] in ("STARTING", "RUNNING")
        # an operator start gives it a new budget
        reply = request(sup.control_endpoint, {"op": "start", "child": "sink-crash"}, 5.0)
        assert reply == {"ok": True, "child": "sink-crash", "state": "STARTING"}
        reply = request(sup.control_endpoint, {"op": "start", "child": "nobody"}, 5.0)
        assert reply is not None and not reply["ok"] and "no child named 'nobody'" in reply["error"]


def test_reload_changes_consumers_without_restarting_the_worker(tmp_path: Path) -> None:
    with running(tmp_path, config_text(tmp_path)) as sup:
        st = wait_for(lambda: (s := status(sup)) and all(
            c["state"] == "RUNNING" for c in s["children"]) and all(
            w["consumers_added"] for w in s["workers"].values()) and s,
            "every child RUNNING with its consumers")  # fmt: skip
        pids = {c["name"]: c["pid"] for c in st["children"]}
        t_reload = time.time()
        (tmp_path / "pipe.toml").write_text(config_text(
            tmp_path, tags=("Sine", "Array10"), second_plc=False, sink_batch=10))  # fmt: skip
        reply = request(sup.control_endpoint, {"op": "reload"}, 5.0)
        assert reply is not None and reply["ok"], reply
        assert reply["changes"] == (
            "stop worker-127.88.1.4; restart sink-db; worker-127.88.1.1: add p1/Array10; "
            "worker-127.88.1.1: remove p1/Counter"
        )

        def applied() -> dict[str, Any] | None:
            s = status(sup)
            names = {c["name"]: c for c in s["children"]}
            ok = ("worker-127.88.1.4" not in names and names["sink-db"]["state"] == "RUNNING"
                  and names["sink-db"]["pid"] != pids["sink-db"])  # fmt: skip
            return s if ok else None

        st = wait_for(applied, "reload applied")
        assert child(st, "worker-127.88.1.1")["pid"] == pids["worker-127.88.1.1"]
        ops = [(e["ev"], e["key"]) for e in wait_for(
            lambda: [e for e in read_log(tmp_path) if e["ev"] in ("add", "remove")
                     and e["t"] >= t_reload],
            "control requests")]  # fmt: skip
        assert sorted(ops) == [("add", "p1/Array10"), ("remove", "p1/Counter")]
        sink_start = [e for e in read_log(tmp_path) if e["ev"] == "start" and "argv" in e][-1]
        section = json.loads(sink_start["argv"][sink_start["argv"].index("--section") + 1])
        assert section["batch_size"] == 10
        # an invalid file changes nothing and says why
        (tmp_path / "pipe.toml").write_text(config_text(tmp_path) + "\n[bus]\nendpont = 1\n")
        reply = request(sup.control_endpoint, {"op": "reload"}, 5.0)
        assert reply is not None and not reply["ok"]
        assert "not valid, nothing changed" in reply["error"]
        assert "pipe.toml" in reply["error"]
        assert status(sup)["supervisor"]["last_reload"]["ok"] is False


def test_consumers_are_added_only_once_the_bus_subscription_reached_the_worker(
        tmp_path: Path) -> None:
    hold = tmp_path / "hold-subscriptions"
    hold.touch()  # the stand-in worker reports no subscription while this file exists
    with running(tmp_path, config_text(tmp_path, second_plc=False)) as sup:
        name = "worker-127.88.1.1"

        def answered_unsubscribed() -> bool:
            s = status(sup)
            w = s["workers"][name]
            return bool(child(s, name)["state"] == "RUNNING" and w["bus_subscriptions"] == 0)

        wait_for(answered_unsubscribed, "the worker answering with no subscription")
        # The supervisor has seen a status without subscription: nothing may be added yet.
        assert not status(sup)["workers"][name]["consumers_added"]
        assert not [e for e in read_log(tmp_path) if e["ev"] == "add"]
        hold.unlink()
        wait_for(lambda: status(sup)["workers"][name]["consumers_added"], "consumers added")
        log = wait_for(lambda: (lg := read_log(tmp_path)) and len(
            [e for e in lg if e["ev"] == "add"]) == 2 and lg, "two adds")  # fmt: skip
        subscribed = [e["t"] for e in log if e["ev"] == "subscribed"]
        assert subscribed and all(e["t"] >= subscribed[0] for e in log if e["ev"] == "add")
        assert status(sup)["workers"][name]["bus_subscriptions"] >= 1


# ============================================================================ idle, FATAL,
# control_base


def _fatal_worker(tmp: Path) -> tuple[Supervisor, float]:
    """A Supervisor (not opened) whose one worker failed start-up until FATAL (fake clock)."""
    cfg = tmp / "pipe.toml"
    cfg.write_text(config_text(tmp, second_plc=False))
    sup = Supervisor(str(cfg))
    sup.sup.add("w", ChildKind.WORKER)
    sup._add_link("w", ChildSpec("w", ChildKind.WORKER, ("x",), control=f"ipc://{tmp}/w"))
    c = sup.sup.child("w")
    t = 100.0
    c.start(t)
    c.spawned(4242, t)
    sup.links["w"].next_poll = t  # a live worker's status poll is due now
    assert sup.loop_wait(t) == 0.0
    for attempt in range(3):  # max_quick_failures = 3 in config_text
        if attempt:
            deadline = c.next_deadline()
            assert deadline is not None
            t = deadline
            c.on_timer(t)
            c.spawned(4242 + attempt, t)
        c.exited(t, 4242 + attempt, 2)
    assert c.state.value == "FATAL"
    return sup, t


def test_loop_does_not_spin_while_a_worker_is_fatal(tmp_path: Path) -> None:
    sup, t = _fatal_worker(tmp_path)
    try:
        # next_poll stays in the past (nobody polls a dead worker): it must not count.
        assert sup.links["w"].next_poll < t
        assert sup.loop_wait(t) == MAX_WAIT_S
        assert sup.loop_wait(t + 3600) == MAX_WAIT_S
        # a request still in flight wakes the loop at its deadline
        sup.links["w"].inflight = lambda reply: None
        sup.links["w"].deadline = t + 0.2
        assert sup.loop_wait(t) == pytest.approx(0.2)
    finally:
        sup.close()


def test_every_worker_fatal_is_reminded_every_minute(tmp_path: Path) -> None:
    sup, t = _fatal_worker(tmp_path)
    try:
        assert sup.fatal_reminder(t) is None  # the FATAL transition itself was logged
        assert sup.fatal_reminder(t + FATAL_REMINDER_S - 1) is None
        text = sup.fatal_reminder(t + FATAL_REMINDER_S)
        assert text is not None and "every worker is FATAL (w)" in text
        assert "pyconpro status" in text and "restart" in text
        assert sup.fatal_reminder(t + FATAL_REMINDER_S + 1) is None
        assert sup.fatal_reminder(t + 2 * FATAL_REMINDER_S) is not None
        sup.sup.child("w").start(t + 200)  # an operator start: no longer all FATAL
        assert sup.fatal_reminder(t + 3 * FATAL_REMINDER_S) is None
    finally:
        sup.close()


def test_worker_argv_tells_the_config_key_for_a_busy_udp_port(tmp_path: Path) -> None:
    spec = _plan(config_text(tmp_path, second_plc=False), tmp_path)
    argv = next(s.argv for s in spec.values() if s.kind is ChildKind.WORKER)
    assert argv[argv.index("--udp-port-hint") + 1] == "set [worker].udp_port in the config"


def test_second_supervisor_on_the_same_control_base_is_refused(tmp_path: Path) -> None:
    text = config_text(tmp_path, second_plc=False)
    with running(tmp_path, text) as first:
        wait_for(lambda: child(status(first), "sink-db")["state"] == "RUNNING", "sink running")
        second = Supervisor(str(tmp_path / "pipe.toml"), planner=stand_in_planner(tmp_path))
        try:
            with pytest.raises(ForwarderError) as info:
                second.open()
        finally:
            second.close()
        assert str(info.value).startswith(
            f"another pyconpro run (pid {os.getpid()}) already uses control_base "
            f"ipc://{tmp_path}/ctl; stop it or set [bus].control_base"
        )
        # the first one still owns its sockets
        assert status(first)["supervisor"]["pid"] == os.getpid()
        assert (tmp_path / "ctl-supervisor").exists()
    # a clean stop leaves no socket files behind
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_socket())
    assert left == []


def test_stale_socket_files_are_replaced_and_a_missing_directory_created(tmp_path: Path) -> None:
    base = tmp_path / "run" / "sub"  # does not exist yet
    text = config_text(tmp_path, second_plc=False).replace(
        f'control_base = "ipc://{tmp_path}/ctl"', f'control_base = "ipc://{base}/ctl"'
    )
    assert f"ipc://{base}/ctl" in text
    with running(tmp_path, text) as first:
        wait_for(lambda: child(status(first), "sink-db")["state"] == "RUNNING", "sink running")
    assert not (base / "ctl-supervisor").exists()
    # a killed supervisor's file: nobody answers on it, so the next run takes it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(base / "ctl-supervisor"))
    assert (base / "ctl-supervisor").is_socket()
    with running(tmp_path, text) as again:
        assert status(again)["supervisor"]["control"] == f"ipc://{base}/ctl-supervisor"
    assert not (base / "ctl-supervisor").exists()


def test_restart_outages_say_when_each_consumers_data_stopped() -> None:
    status = {"consumers": [
        {"key": "a/Running", "state": "RUNNING", "last_data_s": 99.9},
        {"key": "a/Out", "state": "WAITING", "last_data_s": 90.0,
         "outage": {"since_s": 90.0, "cause": "session"}},
        {"key": "a/Never", "state": "BACKOFF"},
    ]}  # fmt: skip
    # Killed: a running tag lost its data at the exit; one already out, at its outage's start.
    assert restart_outages(status, 100.0, crashed=True) == {"a/Running": 100.0, "a/Out": 90.0}
    # Stopped cleanly: the worker recorded its open outage up to its stop itself.
    assert restart_outages(status, 100.0, crashed=False) == {"a/Running": 100.0,
                                                            "a/Out": 100.0}
    assert restart_outages(None, 100.0, crashed=True) == {}


def _raw_request(endpoint: str, body: bytes) -> dict[str, Any]:
    """Send ``body`` as it is (not necessarily msgpack) to a supervisor control socket."""
    import msgpack

    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(TIMEOUT_S * 1000))
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"", body])
        reply: dict[str, Any] = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
        return reply
    finally:
        sock.close()


def test_a_bad_control_request_gets_an_error_reply_and_the_supervisor_goes_on(
        tmp_path: Path) -> None:
    import msgpack

    with running(tmp_path, config_text(tmp_path, second_plc=False)) as sup:
        not_msgpack = _raw_request(sup.control_endpoint, b"\xc1")
        assert not_msgpack["ok"] is False
        assert not_msgpack["error"].startswith("bad request: ")
        assert not_msgpack["error"].endswith("send a msgpack map like {'op': 'status'}")
        not_a_map = _raw_request(sup.control_endpoint, msgpack.packb([1, 2]))
        assert not_a_map == {
            "ok": False,
            "error": "a request is a map with 'op' (one of status, reload, start, stop, restart,"
            " shutdown, ping, sink_report, replay)",
        }
        assert status(sup)["ok"]
