"""``pyconpro status``: the screen rendered from a status map, and the message when no
supervisor answers (a real control socket that nobody serves, with a short timeout)."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyconpro.status_cli import control_endpoint, render, watch

REPO = Path(__file__).resolve().parents[2]

STATUS = {
    "ok": True,
    "supervisor": {"pid": 42, "config": "/etc/plant.toml", "bus": "tcp://127.0.0.1:5555",
                   "uptime_s": 3725.0, "state": "running",
                   "last_reload": {"ok": False, "message": "the new configuration is not valid, "
                                   "nothing changed:\nplant.toml:3: ..."}},
    "forwarder": {"alive": True, "upstreams": ["ipc:///tmp/w1.pub"], "rate_msgs_s": 30.4,
                  "messages_in": 1234},
    "children": [
        {"name": "worker-10.0.0.1", "kind": "worker", "state": "RUNNING", "pid": 100,
         "restarts": 1, "last_exit": "killed by SIGKILL", "reason": "reported ready",
         "next_in_s": None},
        {"name": "sink-db", "kind": "sink", "state": "BACKOFF", "pid": None, "restarts": 2,
         "last_exit": "exit code 2", "reason": "exited with code 2 during start-up (2/5)",
         "next_in_s": 1.5},
    ],
    "workers": {
        "worker-10.0.0.1": {
            "control": "ipc:///tmp/w1", "age_s": 0.2, "local_address": "10.0.0.1",
            "udp_port": 2222, "rates": {"line1/Counter": 10.0, "*": 10.0},
            "counters": {"samples": 500, "drop_wrong_source": 3, "drop_stale": 0, "pub_drops": 0},
            "plcs": [{"address": "10.0.0.5", "port": 44818, "up": True, "last_failure": None},
                     {"address": "10.0.0.6", "port": 44818, "up": False, "down_for_s": 12.34,
                      "attempts": 25, "last_failure": "Connection refused"}],
            "consumers": [
                {"key": "line1/Counter", "state": "RUNNING", "type": "DINT", "samples": 500,
                 "counters": {"gap": 2, "timeouts": 0, "rejects": 0, "outages": 2,
                              "outage_missed": 75}},
                {"key": "line2/Speed", "state": "WAITING", "type": "REAL", "samples": 9,
                 "counters": {"gap": 0, "timeouts": 1, "rejects": 0, "outages": 0,
                              "outage_missed": 0},
                 "outage": {"since_s": 5.0, "cause": "session", "for_s": 1.0, "missed": 10}},
                {"key": "line1/Missing", "state": "FAILED", "type": None, "samples": 0,
                 "failure": "tag 'Missing' is not in the controller's tag list",
                 "counters": {"gap": 0, "timeouts": 0, "rejects": 1}},
                {"key": "line1/Busy", "state": "BACKOFF", "type": "REAL", "samples": 0,
                 "counters": {"gap": 0, "timeouts": 0, "rejects": 3}},
            ],
        },
        "worker-10.0.1.1": {"control": "ipc:///tmp/w2", "age_s": None},
    },
    "last_errors": {"line1/Busy": {"kind": "reject", "message": "0x01/0x0113 out of connections"}},
}  # fmt: skip


def test_render_one_screen() -> None:
    lines = render(STATUS).splitlines()
    assert lines[0] == "pyconpro running  pid 42  up 62m  config /etc/plant.toml"
    assert lines[1] == "bus tcp://127.0.0.1:5555  30 msg/s  1234 msgs forwarded  1 publisher(s)"
    assert lines[2] == "last reload FAILED: the new configuration is not valid, nothing changed:"
    text = "\n".join(lines)
    assert (
        "worker-10.0.0.1  worker  RUNNING  100  1         killed by SIGKILL  reported ready" in text
    )
    assert ("sink-db          sink    BACKOFF  -    2         exit code 2        exited with code 2"
            " during start-up (2/5); retry in 1.5s") in text  # fmt: skip
    assert "worker-10.0.0.1  10.0.0.1:2222  10.0 samples/s  drops: drop_wrong_source=3" in text
    assert "  session 10.0.0.5:44818 up" in text
    assert ("  session 10.0.0.6:44818 DOWN for 12.3s (25 attempts)  last failure: Connection"
            " refused") in text
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  line")}
    assert rows["line1/Counter"][:10] == ["line1/Counter", "RUNNING", "DINT", "10.0", "500",
                                          "2", "2", "75", "0", "0"]  # fmt: skip
    # an outage in progress: counted as one more, its samples so far in MISSED
    assert rows["line2/Speed"][:10] == ["line2/Speed", "WAITING", "REAL", "-", "9", "0", "0+1",
                                        "10", "1", "0"]  # fmt: skip
    assert "not in the controller's tag list" in " ".join(rows["line1/Missing"])
    assert " ".join(rows["line1/Busy"][10:]) == "0x01/0x0113 out of connections"
    assert "worker-10.0.1.1: no status yet" in text


def test_render_shows_each_sink_writing_or_why_it_cannot() -> None:
    st = {**STATUS, "sinks": {
        "sink-db": {"state": "retrying", "cause": "disk full", "since_s": 95.0,
                    "retry_in_s": 4.2, "written": 1200, "pending": 5000, "dropped": 7,
                    "message": "disk full at /data: free space there or point `path` elsewhere",
                    "age_s": 0.5},
        "sink-files": {"state": "writing", "cause": "", "message": "", "since_s": None,
                       "retry_in_s": None, "written": 9, "pending": 0, "dropped": 0,
                       "age_s": 1.0},
        "sink-new": {"age_s": None},
        "sink-pg": {"state": "retrying", "cause": "unreachable", "since_s": 31.0,
                    "retry_in_s": 5.0, "written": 50, "pending": 3, "dropped": 0,
                    "message": "PostgreSQL db1: cannot reach the server", "age_s": 0.2,
                    "spool_depth": 150000, "spool_bytes": 24_300_000, "spool_oldest_s": 31.4,
                    "spool_dropped": 10, "spool_expired": 2},
        "sink-pg2": {"state": "writing", "written": 5, "pending": 0, "dropped": 0,
                     "age_s": 0.2, "spool_depth": 0, "spool_dropped": 0, "spool_expired": 0},
    }}  # fmt: skip
    lines = render(st).splitlines()
    start = lines.index("SINK        OUTPUT        WRITTEN  PENDING  SPOOL              DROPPED"
                        "  WHY")
    assert lines[start + 1 : start + 8] == [
        "sink-db     RETRYING 95s  1200     5000     -                  7        disk full;"
        " next try in 4s",
        "sink-files  writing       9        0        -                  0",
        "sink-new    -             -        -        -                  -        no report yet",
        "sink-pg     RETRYING 31s  50       3        150000 24.3MB 31s  12       unreachable;"
        " next try in 5s",
        "sink-pg2    writing       5        0        0                  0",
        "  sink-db: disk full at /data: free space there or point `path` elsewhere",
        "  sink-pg: PostgreSQL db1: cannot reach the server",
    ]


def test_no_supervisor_says_what_to_check(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/nobody-supervisor"
    res = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "status", "--once", "--control", endpoint,
         "--timeout", "0.5"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 1
    assert f"the supervisor at {endpoint} did not answer (no answer within 0.5 s)" in res.stderr
    assert "Is `pyconpro run` running?" in res.stderr


def test_control_endpoint_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[bus]\ncontrol_base = "tcp://127.0.0.1:7100"\n[[plc]]\nname = "a"\n'
                   'address = "127.0.0.2"\n  [[plc.tag]]\n  name = "T"\n')  # fmt: skip
    assert control_endpoint(None, str(cfg)) == "tcp://127.0.0.1:7100"
    assert control_endpoint("ipc:///x", str(cfg)) == "ipc:///x"
    assert control_endpoint(None, None) == "ipc:///tmp/pyconpro-supervisor"


def _args(**kw: Any) -> argparse.Namespace:
    base = {"once": False, "json": False, "interval": 1.0, "timeout": 0.5}
    return argparse.Namespace(**{**base, **kw})


def _scripted(replies: list[Any]) -> Callable[..., dict[str, Any] | None]:
    it = iter(replies)

    def ask(endpoint: str, req: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        r = next(it)
        if r is KeyboardInterrupt:
            raise KeyboardInterrupt
        return r  # type: ignore[no-any-return]

    return ask


def test_refreshing_mode_without_a_supervisor_exits_1_at_once() -> None:
    out, err = io.StringIO(), io.StringIO()
    sleeps: list[float] = []
    code = watch("ipc:///x", _args(), ask=_scripted([None]), sleep=sleeps.append, out=out,
                 err=err, tty=True)  # fmt: skip
    assert code == 1 and sleeps == []
    assert err.getvalue().count("did not answer (no answer within 0.5 s)") == 1
    assert "Is `pyconpro run` running?" in err.getvalue()


def test_lost_contact_redraws_one_line_in_place() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = watch("ipc:///x", _args(), ask=_scripted([STATUS, None, None, None, KeyboardInterrupt]),
                 sleep=lambda s: None, out=out, err=err, tty=True)  # fmt: skip
    assert code == 1
    text = out.getvalue()
    assert text.count("\x1b[H\x1b[2J") == 1  # the screen once
    assert text.count("\r\x1b[K") == 3  # then the same line, redrawn (no scrolling)
    assert text.count("\n", text.index("\r\x1b[K")) == 1  # only the newline after Ctrl-C
    assert "lost contact with the supervisor at ipc:///x" in text and err.getvalue() == ""


def test_lost_contact_without_a_terminal_says_it_once_and_recovers() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = watch("ipc:///x", _args(), ask=_scripted([STATUS, None, None, STATUS,
                                                     KeyboardInterrupt]),
                 sleep=lambda s: None, out=out, err=err, tty=False)  # fmt: skip
    assert code == 0
    assert err.getvalue().count("lost contact") == 1
    assert out.getvalue().count("pyconpro running  pid 42") == 2


def test_last_error_has_its_age_and_is_marked_past_once_the_tag_runs() -> None:
    now = 1_800_000_000 * 10**9
    st = {**STATUS, "last_errors": {
        "line1/Busy": {"kind": "reject", "message": "0x01/0x0113 out of connections",
                       "t_wall_ns": now - 95 * 10**9},
        "line1/Counter": {"kind": "timeout", "message": "no T->O data for 0.8 s",
                          "t_wall_ns": now - 3 * 3600 * 10**9},
    }}  # fmt: skip
    text = render(st, now_ns=now)
    busy = next(x for x in text.splitlines() if x.startswith("  line1/Busy"))
    assert busy.endswith("(95s ago) 0x01/0x0113 out of connections")  # still backing off
    counter = next(x for x in text.splitlines() if x.startswith("  line1/Counter"))
    assert counter.endswith("(past, 3.0h ago) no T->O data for 0.8 s")  # running again since


def test_long_errors_end_with_an_ellipsis_and_the_header_fits_80_columns() -> None:
    base: Any = STATUS
    long_failure = "tag 'Missing' is not in the controller's tag list; " + "x" * 200
    consumers = [dict(c) for c in base["workers"]["worker-10.0.0.1"]["consumers"]]
    consumers[2]["failure"] = long_failure
    worker = {**base["workers"]["worker-10.0.0.1"], "consumers": consumers}
    sup = {**base["supervisor"], "config": "/srv/pyconpro/plants/north-hall/line-3.toml",
           "bus": "ipc:///var/run/pyconpro/north-hall/line-3/bus"}  # fmt: skip
    st = {**base, "supervisor": sup, "workers": {"worker-10.0.0.1": worker}}
    lines = render(st, width=80, now_ns=0).splitlines()
    missing = next(x for x in lines if x.startswith("  line1/Missing"))
    assert missing.endswith("controller'…")  # 40 characters of it, the cut marked
    head = lines[: lines.index("")]
    assert all(len(x) <= 80 for x in head), head
    assert " ".join(head).split() == (
        "pyconpro running pid 42 up 62m config /srv/pyconpro/plants/north-hall/line-3.toml bus"
        " ipc:///var/run/pyconpro/north-hall/line-3/bus 30 msg/s 1234 msgs forwarded 1"
        " publisher(s) last reload FAILED: the new configuration is not valid, nothing"
        " changed:").split()


def test_produced_tags_show_who_feeds_them_and_their_consumers() -> None:
    base: Any = STATUS
    produce = {
        "tcp_port": 44818,
        "tags": [
            {"name": "PcCounter", "type": "DINT", "fed": True, "source": "bus", "age_s": 0.4,
             "updates": 120, "rejected": 2, "max_consumers": 2,
             "last_error": "bus: 'fast' is not an integer",
             "consumers": [{"peer": "10.0.0.5", "rpi_us": 20_000, "multicast": False},
                           {"peer": "10.0.0.6", "rpi_us": 50_000, "multicast": True}]},
            {"name": "PcSetpoints", "type": "Setpoints", "fed": False, "source": None,
             "age_s": None, "updates": 0, "rejected": 0, "max_consumers": 1, "last_error": None,
             "consumers": []},
        ],
        "target": {"forward_opens": 4, "rejects": 1, "reject_codes": {"0x01/0x031E": 1},
                   "timeouts": 1},
    }  # fmt: skip
    worker = {**base["workers"]["worker-10.0.0.1"], "produce": produce}
    text = render({**base, "workers": {"worker-10.0.0.1": worker}}, now_ns=0)
    lines = text.splitlines()
    assert ("  producing on TCP 10.0.0.1:44818  forward_opens 4  rejects 1 (0x01/0x031E x1)"
            "  timeouts 1") in lines
    header = next(x for x in lines if x.startswith("  PRODUCED"))
    assert header.split() == ["PRODUCED", "TYPE", "FED", "UPDATES", "REJECTED", "CONSUMERS",
                              "PEERS", "LAST", "ERROR"]  # fmt: skip
    counter = next(x for x in lines if x.startswith("  PcCounter"))
    assert counter.split()[:11] == ["PcCounter", "DINT", "bus", "0s", "ago", "120", "2", "2/2",
                                    "10.0.0.5@20ms", "10.0.0.6@50ms", "mcast"]  # fmt: skip
    assert counter.endswith("bus: 'fast' is not an integer")
    unfed = next(x for x in lines if x.startswith("  PcSetpoints"))
    assert unfed.split()[:8] == ["PcSetpoints", "Setpoints", "NO:", "sending", "zeros", "0", "0",
                                 "0/1"]  # fmt: skip
    # a worker that produces nothing has no such lines
    assert "PRODUCED" not in render(base, now_ns=0)


def test_assembly_consumers_show_their_connection_and_whether_their_output_is_fed() -> None:
    owner: dict[str, Any] = {
        "key": "drive1/command", "plc": "drive1", "tag": "command", "state": "RUNNING",
        "type": None, "samples": 5, "counters": {},
        "assembly": {"connection": "exclusive_owner",
                     "path": "exclusive_owner input 100 output 150 config 151",
                     "output": "not fed: sending zeros in idle mode"}}
    inputs = {"key": "drive1/status", "plc": "drive1", "tag": "status", "state": "RUNNING",
              "type": "Assembly_status", "samples": 9, "counters": {},
              "assembly": {"connection": "input_only",
                           "path": "input_only input 100 heartbeat 152 config 151"}}
    st = {"ok": True, "workers": {"worker-10.0.0.1": {
        "age_s": 0.5, "local_address": "10.0.0.1", "udp_port": 2222,
        "consumers": [owner, inputs]}}}
    lines = render(st, now_ns=0).splitlines()
    row = next(line for line in lines if line.strip().startswith("drive1/command"))
    assert row.split()[1:3] == ["RUNNING", "bytes"]  # no layout: the samples carry bytes
    assert ("  assembly drive1/command: exclusive_owner input 100 output 150 config 151;"
            " output not fed: sending zeros in idle mode") in lines
    assert "  assembly drive1/status: input_only input 100 heartbeat 152 config 151" in lines
    owner["assembly"].update(output="fed", output_age_s=0.25)
    assert ("  assembly drive1/command: exclusive_owner input 100 output 150 config 151;"
            " output fed (last image 0s ago)") in render(st, now_ns=0).splitlines()
