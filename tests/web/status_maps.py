"""A supervisor ``status`` map shaped like the real one (workers/supervisor.py ``status()``,
docs/operations.md "Status map"), for the web process's pure parts: one worker serving two
PLCs (``line2``'s session down), a SQLite sink, the web process itself."""

from __future__ import annotations

from typing import Any


def consumer(key: str, state: str = "RUNNING", *, samples: int = 100, opens: int = 1,
             outage: dict[str, Any] | None = None, rpi_us: int = 50_000,
             **counters: int) -> dict[str, Any]:
    plc, _, tag = key.partition("/")
    out: dict[str, Any] = {
        "key": key, "def": "d1", "samples": samples, "plc": plc, "tag": tag, "state": state,
        "size": 4, "type": "DINT", "learned": True, "rpi_us": rpi_us, "ot_rpi_us": rpi_us,
        "multicast": False, "failure": None,
        "counters": {"forward_opens": opens, "rejects": 0, "opens": opens, "heartbeats": 10,
                     "heartbeats_late": 0, "datagrams": samples, "gap": 0, "timeouts": 0,
                     "request_errors": 0, "forward_closes": 0, "waits": 0, "outages": 0,
                     "outage_missed": 0, **counters},
        "last_data_s": 1000.0,
    }  # fmt: skip
    if outage is not None:
        out["outage"] = outage
    return out


def status_map() -> dict[str, Any]:
    worker = "worker-127.0.0.1"
    return {
        "ok": True,
        "supervisor": {"pid": 4242, "config": "/srv/plant.toml", "bus": "tcp://127.0.0.1:5555",
                       "control": "ipc:///tmp/pyconpro-supervisor", "uptime_s": 120.5,
                       "started_wall": 1.7e9, "state": "running", "reloads": 2,
                       "last_reload": None,
                       "security": {"curve_bus": False, "curve_control": False,
                                    "curve_admitted": 0, "curve_refused": 3}},
        "forwarder": {"alive": True, "upstreams": ["ipc:///tmp/pyconpro-worker-127.0.0.1.pub"],
                      "rate_msgs_s": 70.0, "messages_in": 9000, "frames_in": 18000,
                      "bytes_in": 1_200_000, "frames_out": 18000, "bytes_out": 1_200_000,
                      "subscriptions": 3,
                      "subscribers": {"held": 5, "topics": 4, "peers": 2, "refused": 7,
                                      "closed_for_refusal": 1, "closed_for_rate": 2},
                      "replay": {"messages": 1500, "bytes": 420_000, "streams": 3,
                                 "oldest_s": 59.5, "max_s": 60.0, "max_bytes": 67_108_864,
                                 "added": 1800, "evicted": 300, "lost": 0, "skipped": 0,
                                 "replays": 1, "replayed": 368, "under_way": 0, "failed": 0}},
        "children": [
            {"name": worker, "kind": "worker", "state": "RUNNING", "pid": 101, "restarts": 1,
             "failures": 0, "last_exit": "killed by SIGKILL", "reason": "reported ready",
             "since_s": 60.0, "next_in_s": None},
            {"name": "sink-db", "kind": "sink", "state": "RUNNING", "pid": 102, "restarts": 0,
             "failures": 0, "last_exit": None, "reason": "alive for 1 s", "since_s": 119.0,
             "next_in_s": None},
            {"name": "web", "kind": "web", "state": "BACKOFF", "pid": None, "restarts": 0,
             "failures": 2, "last_exit": "exit code 2", "reason": "quick failure",
             "since_s": 1.0, "next_in_s": 0.8},
        ],
        "workers": {
            worker: {
                "control": "ipc:///tmp/pyconpro-worker-127.0.0.1", "age_s": 0.4,
                "rates": {"line1/Counter": 20.0, "line1/Sine": 50.0, "line2/Level": 0.0,
                          "*": 70.0},
                "consumers_added": True, "local_address": "127.0.0.1", "udp_port": 2222,
                "pub": "ipc:///tmp/pyconpro-worker-127.0.0.1.pub", "uptime_s": 60.2,
                "bus_subscriptions": 3,
                "counters": {"datagrams": 5000, "samples": 4990, "pub_drops": 0,
                             "heartbeats": 4000, "heartbeat_send_errors": 0,
                             "decode_errors": 0, "control_errors": 0, "drop_malformed": 1,
                             "drop_unknown_id": 2, "drop_wrong_source": 0, "drop_wrong_port": 3,
                             "drop_stale": 4, "drop_seq_jump": 5, "drop_wrong_size": 0,
                             "accepted": 4990, "routes": 3, "udp_rcvbuf": 8388608,
                             "udp_kernel_drops": 7},
                "plcs": [
                    {"address": "127.0.0.2", "port": 44818, "up": True, "state": "READY",
                     "down_for_s": None, "attempts": 0, "sessions_opened": 1,
                     "sessions_failed": 0, "last_failure": None,
                     "consumers": ["line1/Counter", "line1/Sine"]},
                    {"address": "127.0.0.3", "port": 44818, "up": False, "state": "BACKOFF",
                     "down_for_s": 12.3, "attempts": 9, "sessions_opened": 1,
                     "sessions_failed": 9,
                     "last_failure": "TCP connect to 127.0.0.3:44818 failed: Connection refused",
                     "consumers": ["line2/Level"]},
                ],
                "consumers": [
                    consumer("line1/Counter", samples=1200, opens=3, gap=2, timeouts=1),
                    consumer("line1/Sine", samples=3000, rpi_us=20_000, outages=1,
                             outage_missed=40),
                    consumer("line2/Level", "WAITING", samples=50,
                             outage={"since_s": 990.0, "cause": "session", "for_s": 12.3,
                                     "missed": 123}),
                ],
            },
        },
        "sinks": {
            "sink-db": {"state": "retrying", "cause": "disk full", "message": "cannot write",
                        "since_s": 3.0, "retry_in_s": 2.0, "pending": 500,
                        "max_pending": 100000, "received": 9000, "samples": 8000,
                        "events": 900, "stats": 100, "malformed": 0, "gaps": 1, "lost": 6,
                        "restarts": 0, "flushes": 80, "written": 8500, "dropped": 0,
                        "write_failures": 4, "replayed": 368, "filtered": 1200, "pid": 102,
                        "age_s": 1.5},
        },
        "last_events": {},
        "last_errors": {
            "line2/Level": {"kind": "timeout", "from": None, "to": None,
                            "message": "no T->O data for 0.8 s", "status": None,
                            "cip_general": None, "cip_extended": None,
                            "t_wall_ns": 1_700_000_000_000_000_000, "publisher": worker},
        },
    }  # fmt: skip
