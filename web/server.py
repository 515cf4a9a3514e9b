"""The web process: ``python -m pyconpro.web.server``, started by ``pyconpro run`` for ``[web]``.

It subscribes to the bus (``sample/`` and ``event/``), asks the supervisor for its ``status``
every ``--status-interval`` seconds over the supervisor's control socket
(``pyconpro.status_cli.request``, with the pipeline's key pair when that socket uses CURVE,
as a sink does for its reports), and serves the live page, its event stream, ``/api/*`` and
``/metrics`` over HTTP (``web/http.py``). ``web/live.py`` holds what the page shows;
``web/metrics.py`` renders the metrics.

Threads, so that neither side waits on the other: the main thread reads the bus and feeds
``LiveView``; one thread asks the supervisor for status (a supervisor that does not answer
costs that thread a timeout, nothing else); the HTTP server runs in its own thread plus one per
connection. ``LiveView`` is touched under one lock, for short calls; JSON is encoded outside it.
The bus loop publishes each update once into the ``Broadcaster``; slow pages never hold it up.

CPU seconds per process (for ``/metrics``) are read from ``/proc/<pid>/stat`` of the
supervisor and of each child it reports: they all run on this host.

Once it listens it prints one JSON line on standard output, ``{"ready": true, "url": ...,
"port": N}`` (``--port 0`` takes a free port: tests read it there).

Exit status: 0 after SIGTERM / SIGINT, 2 when the address cannot be listened on, the token file
cannot be used or an argument is wrong (the message says which and what to do).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import zmq
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.web_config import WebConfig, token_problem
from pyconpro.acquisition.wire import Event, Sample, decode, topic_prefix
from pyconpro.sinks.base import GapDetector
from pyconpro.web.http import (
    Broadcaster,
    WebHTTPServer,
    read_token_file,
    sse_frame,
    token_digest,
)
from pyconpro.web.live import LiveView, StatusChanged, Values
from pyconpro.web.metrics import WebCounters, render
from pyconpro.workers.guard import (
    ClientKeys,
    CurveError,
    add_client_arguments,
    client_keys_from_args,
    load_key_pair,
)
from pyconpro.workers.logfmt import LOG_FORMAT

from pyconpro.status_cli import request

log = logging.getLogger("pyconpro.web")

TOKEN_ENV = "PYCONPRO_WEB_TOKEN"  # a token for a web process started by hand
BUS_TOPICS = (topic_prefix("sample"), topic_prefix("event"))
BUS_BATCH = 2000  # messages taken per loop turn before the timers run
RCVHWM = 100_000
MAX_WAIT_S = 0.25


class WebError(Exception):
    """The web process cannot start; the message says why and what to do."""


@dataclass
class WebOptions:
    address: str = "127.0.0.1"
    port: int = 8780
    connect: Sequence[str] = ()
    control: str | None = None
    bus_curve: ClientKeys | None = None
    control_curve: ClientKeys | None = None
    token_sha256: bytes | None = None
    history_s: float = 300.0
    updates_per_s: float = 4.0
    status_interval_s: float = 1.0
    status_timeout_s: float = 2.0
    clock: Callable[[], float] = field(default=time.monotonic)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``), None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class WebProcess:
    """The bus loop, the status thread and the HTTP server of one web process."""

    def __init__(self, options: WebOptions) -> None:
        self.opt = options
        self.token_sha256 = options.token_sha256
        self.live = LiveView(updates_per_s=options.updates_per_s, history_s=options.history_s)
        self.lock = threading.Lock()
        self.broadcaster = Broadcaster()
        self.gaps = GapDetector()
        self.bus_messages = 0
        self.bus_lost = 0
        self._refused = 0
        self._cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self.ctx: zmq.Context[Any] | None = None
        self.sub: zmq.Socket[Any] | None = None
        self.http: WebHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._serving = False  # serve_forever runs (shutdown() would wait for it forever else)

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose for ``--port 0``)."""
        return int(self.http.server_address[1]) if self.http is not None else self.opt.port

    @property
    def url(self) -> str:
        return WebConfig(address=self.opt.address, port=self.port).url

    # ------------------------------------------------------------------ life

    def open(self) -> None:
        """Listen, subscribe, start the threads; ``WebError`` when the address is taken."""
        try:
            self.http = WebHTTPServer((self.opt.address, self.opt.port), self)
        except OSError as exc:
            raise WebError(
                f"cannot listen on {self.opt.address} port {self.opt.port}: {exc.strerror}; "
                "another program (or pyconpro) uses it: set [web].port to a free port"
                if exc.errno == errno.EADDRINUSE else
                f"cannot listen on {self.opt.address} port {self.opt.port}: {exc.strerror}; "
                "set [web].address to an address of this host"
            ) from None  # fmt: skip
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, RCVHWM)  # a display: it drops (counted), never blocks
        for prefix in BUS_TOPICS:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        if self.opt.bus_curve is not None:
            self.opt.bus_curve.apply(self.sub)
        for endpoint in self.opt.connect:
            self.sub.connect(endpoint)
        self._start(self.http.serve_forever, "web-http")
        self._serving = True
        if self.opt.control is not None:
            self._start(self._status_loop, "web-status")
        log.info("live page at %s (%s), metrics at %smetrics; bus %s", self.url,
                 "token required" if self.token_sha256 else "no token",
                 self.url, ", ".join(self.opt.connect) or "none")  # fmt: skip

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self.broadcaster.close()  # every event stream ends
        if self.http is not None:
            if self._serving:
                self.http.shutdown()
            self.http.server_close()  # joins the connection threads
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.sub is not None:
            self.sub.close(0)
            self.sub = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    # ------------------------------------------------------------------ the bus loop

    def run(self, should_stop: Callable[[], bool]) -> None:
        assert self.sub is not None
        while not should_stop():
            now = self.opt.clock()
            with self.lock:
                due = self.live.next_deadline()
            wait = MAX_WAIT_S if due is None else min(MAX_WAIT_S, max(0.0, due - now))
            if self.sub.poll(math.ceil(wait * 1000)):
                self._receive()
            with self.lock:
                self.live.on_timer(self.opt.clock())
            self._publish()

    def _receive(self) -> None:
        assert self.sub is not None
        batch: list[Sample | Event] = []
        for _ in range(BUS_BATCH):
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.bus_messages += 1
            try:
                msg = decode(frames[0], frames[1]) if len(frames) == 2 else None
            except MalformedPacket:
                msg = None
            if not isinstance(msg, (Sample, Event)):
                continue
            gap = self.gaps.observe(msg.publisher, frames[0], msg.seq, time.time_ns())
            if gap is not None and not gap.restart:
                self.bus_lost += gap.missed
            batch.append(msg)
        now = self.opt.clock()
        with self.lock:
            for msg in batch:
                if isinstance(msg, Sample):
                    self.live.on_sample(msg, now)
                else:
                    self.live.on_event(msg, now)

    def _publish(self) -> None:
        """Send what ``LiveView`` says changed to every page (encoded outside the lock)."""
        with self.lock:
            outputs = self.live.take_outputs()
            view = None
            if any(isinstance(o, StatusChanged) for o in outputs):
                view = self.live.status_view(self.opt.clock(), time.time_ns())
        for out in outputs:
            if isinstance(out, Values):
                self.broadcaster.publish(sse_frame("values", out.updates))
        if view is not None:
            self.broadcaster.publish(sse_frame("status", view))

    # ------------------------------------------------------------------ the status thread

    def _status_loop(self) -> None:
        assert self.opt.control is not None
        while not self._stop.is_set():
            started = self.opt.clock()
            reply = request(self.opt.control, {"op": "status"}, self.opt.status_timeout_s,
                            self.opt.control_curve)  # fmt: skip
            status = reply if reply is not None and reply.get("ok") else None
            cpu = _cpu_of(status) if status is not None else None
            with self.lock:
                self.live.on_status(status, self.opt.clock(), time.time_ns())
                if cpu is not None:
                    self._cpu = cpu
            self._publish()
            left = self.opt.status_interval_s - (self.opt.clock() - started)
            self._stop.wait(max(0.05, left))

    # ------------------------------------------------------------------ what HTTP asks for

    def status_json(self) -> bytes:
        with self.lock:
            view = self.live.status_view(self.opt.clock(), time.time_ns())
        return _json(view)

    def last_json(self) -> bytes:
        with self.lock:
            last = self.live.last_values()
        return _json(last)

    def metrics_text(self) -> bytes:
        with self.lock:
            live = self.live
            status, at = live.status, live.status_at
            up = status is not None and live.silent_since is None
            ages = live.sample_ages(time.monotonic_ns())
            cpu = dict(self._cpu)
            web = WebCounters(self.bus_messages, self.bus_lost, self.broadcaster.clients,
                              self._refused)  # fmt: skip
        age = round(self.opt.clock() - at, 3) if status is not None else None
        return render(status, up=up, status_age_s=age, cpu_s=cpu, sample_ages=ages,
                      web=web).encode()  # fmt: skip

    def hello(self) -> tuple[bytes, int]:
        with self.lock:
            data = {"status": self.live.status_view(self.opt.clock(), time.time_ns()),
                    "values": self.live.updates(), "history": self.live.histories()}
            position = self.broadcaster.position()
        return sse_frame("hello", data), position

    def refused(self) -> None:
        with self.lock:
            self._refused += 1


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=str).encode()  # fmt: skip


def _cpu_of(status: dict[str, Any]) -> dict[str, float]:
    """CPU seconds of the supervisor and of every child with a pid, by process name."""
    out: dict[str, float] = {}
    pid = (status.get("supervisor") or {}).get("pid")
    pids = [("supervisor", pid)] + [(c.get("name"), c.get("pid"))
                                    for c in status.get("children") or []]  # fmt: skip
    for name, p in pids:
        if isinstance(name, str) and isinstance(p, int) and p > 0:
            seconds = cpu_seconds(p)
            if seconds is not None:
                out[name] = seconds
    return out


# ============================================================================ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyconpro.web.server",
        description="The live page, /api and /metrics of a running pipeline (pyconpro run "
        "starts it for a [web] section; docs/operations.md).",
    )
    p.add_argument("--address", default="127.0.0.1", help="address to listen on [%(default)s]")
    p.add_argument("--port", type=int, default=8780, help="TCP port [%(default)s]")
    p.add_argument("--connect", action="append", default=[], metavar="ENDPOINT",
                   help="bus endpoint to subscribe to (repeatable)")
    add_client_arguments(p)
    p.add_argument("--control", metavar="ENDPOINT",
                   help="the supervisor's control socket, asked for status")
    p.add_argument("--control-curve-key", metavar="FILE",
                   help="CURVE: the pipeline's secret key file when --control uses CURVE")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="FILE",
                       help=f"a file holding the bearer token (or set {TOKEN_ENV})")
    token.add_argument("--token-sha256", metavar="HEX", help="the token's SHA-256, in hex")
    p.add_argument("--history", type=float, default=300.0, metavar="S",
                   help="seconds of history in the sparklines [%(default)s]")
    p.add_argument("--updates-per-s", type=float, default=4.0, metavar="N",
                   help="most value updates per tag and second sent to a page [%(default)s]")
    p.add_argument("--status-interval", type=float, default=1.0, metavar="S",
                   help="how often the supervisor is asked for status [%(default)s]")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p  # fmt: skip


def options_from_args(args: argparse.Namespace) -> WebOptions:
    """``WebError`` / ``CurveError`` for arguments that cannot work."""
    if not 0 < args.updates_per_s <= 50 or not 10 <= args.history <= 3600:
        raise WebError("--updates-per-s must be in (0, 50] and --history in [10, 3600]")
    digest: bytes | None = None
    if args.token_sha256 is not None:
        try:
            digest = bytes.fromhex(args.token_sha256)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise WebError("--token-sha256 takes 64 hex digits (the token's SHA-256)")
    elif args.token_file is not None:
        try:
            digest = token_digest(read_token_file(args.token_file))
        except ValueError as exc:
            raise WebError(f"the token file {args.token_file} {exc}; put a random token of at "
                           "least 16 characters in it ([web].token_file)") from None
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
        why = token_problem(token)
        if why is not None:
            raise WebError(f"{TOKEN_ENV}: {why}")
        digest = token_digest(token)
    control_curve = None
    if args.control_curve_key is not None:
        pair = load_key_pair(args.control_curve_key)
        control_curve = ClientKeys(pair, pair.public)
    return WebOptions(
        address=args.address, port=args.port, connect=list(args.connect),
        control=args.control, bus_curve=client_keys_from_args(args, None, None),
        control_curve=control_curve, token_sha256=digest, history_s=args.history,
        updates_per_s=args.updates_per_s, status_interval_s=args.status_interval,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format=LOG_FORMAT)  # fmt: skip
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    web: WebProcess | None = None
    try:
        web = WebProcess(options_from_args(args))
        web.open()
        # The ready line (as the I/O worker's): one JSON object; with --port 0, where it listens.
        print(json.dumps({"ready": True, "url": web.url, "port": web.port}), flush=True)
        web.run(stop.is_set)
    except (WebError, CurveError, zmq.ZMQError) as exc:
        print(f"error: web: {exc}", file=sys.stderr)
        return 2
    finally:
        if web is not None:
            web.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
