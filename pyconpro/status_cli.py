"""``pyconpro status [CONFIG] [--control EP] [--once] [--interval S] [--json]``: one screen.

Asks the supervisor of a running ``pyconpro run`` (its control socket, ``[bus].control_base`` +
``-supervisor``; default ``ipc:///tmp/pyconpro-supervisor``) for its status and shows: the
supervisor and bus forwarder (endpoint, messages/s), every child process with its state
(STARTING / RUNNING / BACKOFF / EXITED / STOPPING / FATAL), pid, restarts and last exit, every
sink's output (writing, or retrying with the cause and the fix; records written, pending in
memory and dropped), every
worker's PLC sessions, and every consumer (PLC/tag) with its connection state, samples/s,
samples, CIP gaps, outages (interruptions of its data) and the samples they cost, timeouts, the
worker's drop counters, and the last error seen for that tag; and the tags a worker produces
(``[[produce]]``): its EtherNet/IP server, who feeds each tag (or that zeros go out), its
consumers and the last refused value.
Refreshes every ``--interval`` seconds until Ctrl-C; ``--once`` prints one screen and exits;
``--json`` prints the raw status map (docs/operations.md describes it).

Exit status: 0, or 1 when the supervisor does not answer at the first contact (the message
says what to check). When it stops answering later, one line waiting for it is redrawn in place
until it answers again; Ctrl-C then exits 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pyconpro.workers.guard import ClientKeys

DEFAULT_CONTROL = "ipc:///tmp/pyconpro-supervisor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG",
                        help="pipeline file of the running supervisor (finds its control socket)")
    parser.add_argument("--control", metavar="ENDPOINT",
                        help=f"supervisor control endpoint (default {DEFAULT_CONTROL})")
    parser.add_argument("--once", action="store_true", help="print one screen and exit")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="refresh period in seconds [%(default)s]")
    parser.add_argument("--json", action="store_true", help="print the status map as JSON")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S",
                        help="how long to wait for the supervisor's answer [%(default)s]")
    from pyconpro.workers.guard import add_client_arguments

    add_client_arguments(parser)


def control_endpoint(control: str | None, config: str | None) -> str:
    return control_target(control, config)[0]


def control_target(
    control: str | None, config: str | None, args: argparse.Namespace | None = None
) -> tuple[str, ClientKeys | None]:
    """The supervisor's control endpoint (``--control``, else the config's, else the default)
    and the CURVE client keys to reach it (the flags in ``args``, else the config's keys when
    its control socket uses CURVE; None: plain)."""
    from pyconpro.workers.guard import client_keys_from_args

    args = args if args is not None else argparse.Namespace()
    if not config:
        return control or DEFAULT_CONTROL, client_keys_from_args(args, None, None)
    from pyconpro.config_file import load_config
    from pyconpro.workers.supervisor import supervisor_control_endpoint

    cfg = load_config(config)
    configured = supervisor_control_endpoint(cfg)
    return control or configured, client_keys_from_args(args, cfg.security, configured)


def request(
    endpoint: str, req: dict[str, Any], timeout: float = 3.0, curve: ClientKeys | None = None
) -> dict[str, Any] | None:
    """One request to a supervisor control socket; None when it does not answer in time.

    ``curve``: client keys when the control socket uses CURVE (a client whose key is refused
    gets no answer either: the handshake fails before the request is sent)."""
    import msgpack
    import zmq

    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 16)  # one request, one reply
    sock.setsockopt(zmq.RCVHWM, 16)
    try:
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        sock.send_multipart([b"", msgpack.packb(req, use_bin_type=True)])
        if not sock.poll(int(timeout * 1000)):
            return None
        frames = sock.recv_multipart()
        reply = msgpack.unpackb(frames[-1], raw=False)
        return reply if isinstance(reply, dict) else None
    finally:
        sock.close()


# ----------------------------------------------------------------------------- rendering


def _fmt_s(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return "-"
    x = float(x)
    if x < 120:
        return f"{x:.0f}s"
    if x < 7200:
        return f"{x / 60:.0f}m"
    return f"{x / 3600:.1f}h"


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [len(h) for h in header]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return [fmt.format(*header).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def _clip(text: str, n: int) -> str:
    """``text`` in at most ``n`` characters, an ellipsis marking what was cut."""
    return text if len(text) <= n else text[: max(0, n - 1)] + "…"


def _fields(parts: list[str], width: int) -> list[str]:
    """Header fields joined by two spaces, a new line wherever the next would pass ``width``
    (so the header never wraps in a terminal that narrow)."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "  " + part
        else:
            lines.append(part)
    return lines


def _last_error(c: dict[str, Any], entry: dict[str, Any] | None, now_ns: int) -> str:
    """The LAST ERROR cell: the consumer's current failure, else the last error event of the
    tag with its age, marked ``past`` when the tag has been running since."""
    if c.get("failure"):
        return str(c["failure"])
    if entry and entry.get("message"):
        text = str(entry["message"])
        t = entry.get("t_wall_ns")
        age = f"{_fmt_s((now_ns - t) / 1e9)} ago" if isinstance(t, int) else ""
        if c.get("state") == "RUNNING":
            return f"(past{', ' + age if age else ''}) {text}"
        return f"({age}) {text}" if age else text
    status = c.get("last_status")
    return str(status) if status else ""


def render(st: dict[str, Any], width: int = 160, now_ns: int | None = None) -> str:
    """The status screen as text (pure: tests call it with a status map and ``now_ns``, the
    wall clock the ages of last errors are taken from)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    sup = st.get("supervisor", {})
    fwd = st.get("forwarder", {})
    lines = _fields([f"pyconpro {sup.get('state', '?')}", f"pid {sup.get('pid')}",
                     f"up {_fmt_s(sup.get('uptime_s'))}", f"config {sup.get('config')}"],
                    width)  # fmt: skip
    bus = [f"bus {sup.get('bus')}", f"{fwd.get('rate_msgs_s', 0):.0f} msg/s",
           f"{fwd.get('messages_in', 0)} msgs forwarded",
           f"{len(fwd.get('upstreams', []))} publisher(s)"]  # fmt: skip
    if not fwd.get("alive", True):
        bus.append("FORWARDER DOWN")
    lines += _fields(bus, width)
    reload_ = sup.get("last_reload")
    if reload_:
        ok = "ok" if reload_.get("ok") else "FAILED"
        lines.append(f"last reload {ok}: {str(reload_.get('message', '')).splitlines()[0]}")
    lines.append("")
    rows = []
    for c in st.get("children", []):
        extra = c.get("reason") or ""
        if c.get("next_in_s") is not None and c.get("state") in ("BACKOFF", "EXITED"):
            extra += f"; retry in {c['next_in_s']:.1f}s"
        rows.append([
            c.get("name", "?"), c.get("kind", "?"), c.get("state", "?"), str(c.get("pid") or "-"),
            str(c.get("restarts", 0)), c.get("last_exit") or "-", extra,
        ])  # fmt: skip
    lines += _table(rows, ["PROCESS", "KIND", "STATE", "PID", "RESTARTS", "LAST EXIT", "WHY"])
    lines += _sink_lines(st.get("sinks") or {})
    errors = st.get("last_errors", {})
    for wname, w in st.get("workers", {}).items():
        lines.append("")
        counters = w.get("counters") or {}
        drops = {k: v for k, v in counters.items()
                 if (k.startswith("drop_") or k == "pub_drops") and v}  # fmt: skip
        drop_text = " ".join(f"{k}={v}" for k, v in drops.items()) or "none"
        if w.get("age_s") is None:
            lines.append(f"{wname}: no status yet (starting, or its control socket "
                         f"{w.get('control')} does not answer)")  # fmt: skip
            continue
        lines.append(
            f"{wname}  {w.get('local_address')}:{w.get('udp_port')}  "
            f"{w.get('rates', {}).get('*', 0):.1f} samples/s  drops: {drop_text}"
        )
        for plc in w.get("plcs") or []:
            state = "up" if plc.get("up") else "DOWN"
            if not plc.get("up") and isinstance(plc.get("down_for_s"), (int, float)):
                state += f" for {plc['down_for_s']:.1f}s ({plc.get('attempts', 0)} attempts)"
            fail = f"  last failure: {plc['last_failure']}" if plc.get("last_failure") else ""
            lines.append(f"  session {plc.get('address')}:{plc.get('port')} {state}{fail}")
        rows = []
        for c in w.get("consumers") or []:
            key = c.get("key", "?")
            cc = c.get("counters") or {}
            rate = (w.get("rates") or {}).get(key)
            err = _last_error(c, errors.get(key), now_ns)
            outages, missed = _outages(c)
            rows.append([
                key, str(c.get("state", "?")),
                str(c.get("type") or ("bytes" if "assembly" in c else "?")),
                f"{rate:.1f}" if isinstance(rate, (int, float)) else "-",
                str(c.get("samples", 0)), str(cc.get("gap", 0)), outages, missed,
                str(cc.get("timeouts", 0)), str(cc.get("rejects", 0)),
                _clip(err, max(40, width - 80)),
            ])  # fmt: skip
        if rows:
            lines += ["  " + x for x in _table(
                rows, ["TAG", "STATE", "TYPE", "RATE/s", "SAMPLES", "GAPS", "OUTAGES", "MISSED",
                       "TIMEOUTS", "REJECTS", "LAST ERROR"])]  # fmt: skip
        lines += _assembly_lines(w.get("consumers") or [])
        lines += _produce_lines(w.get("produce"), w.get("local_address"), width)
    return "\n".join(lines)


def _produce_lines(p: Any, address: Any, width: int) -> list[str]:
    """The tags a worker produces (docs/worker.md "Producing tags"): its EtherNet/IP server,
    then per tag who feeds it (or that zeros go out) and its consumers."""
    if not isinstance(p, dict):
        return []
    t = p.get("target") or {}
    rejects = ", ".join(f"{k} x{v}" for k, v in (t.get("reject_codes") or {}).items())
    lines = [f"  producing on TCP {address}:{p.get('tcp_port')}  forward_opens"
             f" {t.get('forward_opens', 0)}  rejects {t.get('rejects', 0)}"
             f"{f' ({rejects})' if rejects else ''}  timeouts {t.get('timeouts', 0)}"]
    rows = []
    for tag in p.get("tags") or []:
        if tag.get("fed"):
            fed = f"{tag.get('source')} {_fmt_s(tag.get('age_s'))} ago"
        else:
            fed = "NO: sending zeros"
        consumers = tag.get("consumers") or []
        peers = " ".join(
            f"{c.get('peer')}@{(c.get('rpi_us') or 0) / 1000:g}ms"
            f"{' mcast' if c.get('multicast') else ''}" for c in consumers)
        rows.append([
            str(tag.get("name", "?")), str(tag.get("type", "?")), fed,
            str(tag.get("updates", 0)), str(tag.get("rejected", 0)),
            f"{len(consumers)}/{tag.get('max_consumers', '?')}", peers or "-",
            _clip(str(tag.get("last_error") or ""), max(30, width - 100)),
        ])  # fmt: skip
    if rows:
        lines += ["  " + x for x in _table(
            rows, ["PRODUCED", "TYPE", "FED", "UPDATES", "REJECTED", "CONSUMERS", "PEERS",
                   "LAST ERROR"])]  # fmt: skip
    return lines


def _assembly_lines(consumers: list[dict[str, Any]]) -> list[str]:
    """One line per assembly consumer under its worker's table: its connection and, for an
    exclusive owner, whether a process feeds its output image (docs/assemblies.md)."""
    out = []
    for c in consumers:
        a = c.get("assembly")
        if not isinstance(a, dict):
            continue
        line = f"  assembly {c.get('key', '?')}: {a.get('path', a.get('connection', '?'))}"
        if "output" in a:
            line += f"; output {a['output']}"
            if isinstance(a.get("output_age_s"), (int, float)):
                line += f" (last image {_fmt_s(a['output_age_s'])} ago)"
        out.append(line)
    return out


def _sink_lines(sinks: dict[str, Any]) -> list[str]:
    """A table of the sinks from their own reports, then, for each one that cannot write, its
    message in full (it names the fix)."""
    if not sinks:
        return []
    rows, messages = [], []
    for name, r in sinks.items():
        if r.get("age_s") is None:
            rows.append([name, "-", "-", "-", "-", "-", "no report yet"])
            continue
        state, why = str(r.get("state", "?")), ""
        if state == "retrying":
            state = f"RETRYING {_fmt_s(r.get('since_s'))}"
            why = str(r.get("cause") or "")
            if isinstance(r.get("retry_in_s"), (int, float)):
                why += f"; next try in {r['retry_in_s']:.0f}s"
            messages.append(f"  {name}: {r.get('message')}")
        dropped = sum(int(r.get(k) or 0) for k in ("dropped", "spool_dropped", "spool_expired"))
        rows.append([name, state, str(r.get("written", 0)), str(r.get("pending", 0)),
                     _spool_cell(r), str(dropped), why])  # fmt: skip
    return ["", *_table(rows, ["SINK", "OUTPUT", "WRITTEN", "PENDING", "SPOOL", "DROPPED",
                               "WHY"]), *messages]  # fmt: skip


def _spool_cell(r: dict[str, Any]) -> str:
    """A network sink's spool: records waiting, their size and the age of the oldest
    (``-`` for a sink without a spool)."""
    depth = r.get("spool_depth")
    if not isinstance(depth, int):
        return "-"
    if depth == 0:
        return "0"
    size = float(r.get("spool_bytes") or 0) / 1e6
    return f"{depth} {size:.1f}MB {_fmt_s(r.get('spool_oldest_s'))}"


def _outages(c: dict[str, Any]) -> tuple[str, str]:
    """The OUTAGES and MISSED cells of a consumer: outages over, and the samples they cost,
    plus the one in progress (``+1`` and its samples so far)."""
    cc = c.get("counters") or {}
    count, missed = str(cc.get("outages", 0)), int(cc.get("outage_missed", 0) or 0)
    current = c.get("outage")
    if isinstance(current, dict):
        count += "+1"
        missed += int(current.get("missed", 0) or 0)
    return count, str(missed)


def _no_answer(endpoint: str, why: str) -> str:
    return (f"pyconpro status: the supervisor at {endpoint} did not answer ({why}). "
            "Is `pyconpro run` running? Give its config file (or --control) if it "
            "uses another [bus].control_base.")  # fmt: skip


def watch(
    endpoint: str,
    args: argparse.Namespace,
    *,
    ask: Callable[[str, dict[str, Any], float], dict[str, Any] | None] = request,
    sleep: Callable[[float], None] = time.sleep,
    out: TextIO | None = None,
    err: TextIO | None = None,
    tty: bool = False,
) -> int:
    """The status loop (``run`` with the I/O injectable for tests). Returns the exit status.

    No answer at the first contact (or with ``--once`` / ``--json``): the message, status 1.
    Contact lost later: one waiting line, redrawn in place on a terminal (printed once
    otherwise), until the supervisor answers again or Ctrl-C (then status 1).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    answered = False
    lost_at: float | None = None
    try:
        while True:
            st = ask(endpoint, {"op": "status"}, args.timeout)
            if st is None or not st.get("ok"):
                why = str(st.get("error")) if st else f"no answer within {args.timeout:g} s"
                if not answered or args.once or args.json:
                    print(_no_answer(endpoint, why), file=err)
                    return 1
                now = time.monotonic()
                first_loss = lost_at is None
                if lost_at is None:
                    lost_at = now
                line = (f"pyconpro status: lost contact with the supervisor at {endpoint} "
                        f"({why}) {now - lost_at:.0f} s ago; waiting for it (Ctrl-C to stop)")
                if tty:
                    out.write("\r\x1b[K" + line)
                    out.flush()
                elif first_loss:
                    print(line, file=err, flush=True)
            else:
                answered = True
                lost_at = None
                if args.json:
                    print(json.dumps(st, default=str, indent=1), file=out)
                else:
                    text = render(st, shutil.get_terminal_size((160, 40)).columns)
                    if tty:
                        out.write("\x1b[H\x1b[2J" + text + "\n")
                        out.flush()
                    else:
                        print(text + "\n", file=out, flush=True)
            if args.once or args.json:
                return 0
            sleep(max(0.1, args.interval))
    except KeyboardInterrupt:
        if tty and lost_at is not None:
            out.write("\n")
        return 1 if lost_at is not None else 0


def run(args: argparse.Namespace) -> int:
    from pyconpro.acquisition.config import ConfigError
    from pyconpro.workers.guard import CurveError

    try:
        endpoint, curve = control_target(args.control, args.config, args)
    except (ConfigError, CurveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty() and not args.json and not args.once
    return watch(endpoint, args, tty=tty, ask=functools.partial(request, curve=curve))
