"""``pyconpro demo [--duration S]``: the whole pipeline on loopback, live values on screen.

What it does, saying so as it goes:

1. starts the PLC simulator (``python -m pyconpro.simulator``, built-in tag set) on 127.0.0.2, or
on a
   free 127.x.y.2 address when something already listens there;
2. writes a pipeline config (``demo.toml``) into the demo directory (``./pyconpro-demo/`` by
   default): one PLC with five produced tags (DINT, REAL, DINT[10], a UDT, a STRING), one SQLite
   sink, the live page (``[web]``) on 127.0.0.1 port 8780 (or a free port), the bus on a free
   127.0.0.1 TCP port, the I/O worker on 127.0.0.1 (UDP 2222, or a free port when 2222 is taken);
3. starts ``pyconpro run demo.toml`` (the supervisor: forwarder, worker, SQLite sink, the web
   page), prints the page's address, and shows the connection progress (resolving,
   Forward_Open, retries) from the bus events;
4. shows every tag's latest value updating in place for ``--duration`` seconds from the first
   sample (0 = until Ctrl-C);
5. stops the supervisor gracefully (Forward_Close, then the sink flushes), then the simulator,
   and prints where the database is, how many rows it holds, and how to query it.

The config's control sockets live in the demo directory (or, when that path is too long for
an ``ipc://`` socket, in a short ``/tmp/pyconpro-demo-<hash>`` directory that ``pyconpro run``
creates), so ``pyconpro run DIR/demo.toml`` works after the demo too. Commands are shown as
``pyconpro ...``, or with the prefix in ``PYCONPRO_PROG`` when that is set (``./dev`` sets it).

Exit status 0 when rows were written, 1 otherwise (the message says which log to read), 130
when interrupted before the first sample.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pyconpro.workers.process import Child, SpawnError, regex_ready, spawn

DEMO_TAGS: tuple[tuple[str, float], ...] = (
    ("Counter", 100.0),  # DINT, counts up
    ("Sine", 50.0),  # REAL, a sine wave
    ("Array10", 200.0),  # DINT[10]
    ("Motor", 200.0),  # a UDT (MotorData), published as a map
    ("Message", 500.0),  # STRING
)
PLC_NAME = "demo"
DB_NAME = "demo.sqlite3"
CONNECT_TIMEOUT_S = 30.0
# An ipc:// path must fit sun_path (108 bytes with the NUL); the longest file the supervisor and
# its worker derive from control_base adds "-worker-<address>.pub" (at most ~30 bytes).
IPC_PATH_MAX = 107
IPC_SUFFIX_MAX = 32
WEB_PORT = 8780  # the live page's port when it is free ([web].port's default)
_READY = re.compile(r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+) udp=[\d.]+:(?P<udp>\d+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds of live values after the first sample; 0 = until Ctrl-C [%(default)s]",
    )
    parser.add_argument(
        "--dir",
        default="pyconpro-demo",
        metavar="DIR",
        help="where the config, database and logs go [%(default)s]",
    )
    parser.add_argument(
        "--sim-address",
        default="127.0.0.2",
        metavar="ADDR",
        help="simulator address; a free 127.x.y.2 is used if it is busy [%(default)s]",
    )
    parser.add_argument("--local-address", default="127.0.0.1", metavar="ADDR",
                        help="the I/O worker's address [%(default)s]")  # fmt: skip


# ----------------------------------------------------------------------------- addresses


def _tcp_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _udp_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _free_port(address: str, kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
    return port


def pick_sim_address(wanted: str, rng: random.Random | None = None) -> str:
    """``wanted`` if its TCP 44818 is free, else a random free 127.x.y.2."""
    if _tcp_free(wanted, 44818) and _udp_free(wanted, 44818):
        return wanted
    rng = rng or random.Random()
    for _ in range(50):
        addr = f"127.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}.2"
        if _tcp_free(addr, 44818) and _udp_free(addr, 44818):
            return addr
    raise OSError(f"{wanted}:44818 is busy and no free 127.x.y.2 address was found")


def prog() -> str:
    """How to spell the command in advice: ``$PYCONPRO_PROG`` (``./dev`` sets it) or pyconpro."""
    return os.environ.get("PYCONPRO_PROG", "").strip() or "pyconpro"


def control_base_for(directory: Path) -> str:
    """A control_base for the demo's config that outlives the demo: inside ``directory``, or
    a short path under /tmp named after it when that is too long for an ipc socket (the
    supervisor creates the missing directory)."""
    path = str(directory.resolve() / "ctl")
    if len(path) + IPC_SUFFIX_MAX > IPC_PATH_MAX:
        digest = hashlib.sha1(str(directory.resolve()).encode("utf-8")).hexdigest()[:12]
        path = f"/tmp/pyconpro-demo-{digest}/ctl"
    return f"ipc://{path}"


# ----------------------------------------------------------------------------- the demo


@dataclass
class TagView:
    type_name: str = "?"
    value: str = ""
    count: int = 0
    first: float = 0.0
    last: float = 0.0


@dataclass
class Demo:
    duration: float
    directory: Path
    sim_address: str
    local_address: str
    out: TextIO = sys.stdout
    python: str = sys.executable
    sim: Child | None = None
    sup: Child | None = None
    control_base: str = ""
    web_url: str = ""
    first_sample: bool = False
    tags: dict[str, TagView] = field(default_factory=dict)
    drawn_lines: int = 0
    tty: bool = False
    out_closed: bool = False

    # -------------------------------------------------------------- output

    def say(self, text: str) -> None:
        if self.out_closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:  # `pyconpro demo | head`: keep going, stop cleanly, say nothing
            self.out_closed = True

    def rel(self, p: Path) -> str:
        try:
            r = os.path.relpath(p)
        except ValueError:
            return str(p)
        return r if not r.startswith("..") else str(p)

    # -------------------------------------------------------------- processes

    def start_simulator(self) -> tuple[str, int]:
        addr = pick_sim_address(self.sim_address)
        if addr != self.sim_address:
            self.say(f"  {self.sim_address}:44818 is in use; the simulator uses {addr} instead")
        log_path = self.directory / "simulator.log"
        self.say(f"[1/3] starting the PLC simulator on {addr} (log: {self.rel(log_path)}) ...")
        # UDP 2222 like a real controller when it is free, so demo.toml also works against a
        # plain `pyconpro sim`; any free port otherwise.
        udp = "2222" if _udp_free(addr, 2222) else "0"
        log_path.write_bytes(b"")  # a fresh log per run (spawn appends)
        try:
            self.sim = spawn(
                [self.python, "-m", "pyconpro.simulator", "--address", addr, "--udp-port", udp,
                 "--no-identity-delay"],
                ready=regex_ready(_READY), stderr=log_path, ready_timeout_s=15.0,
            )  # fmt: skip
        except SpawnError as err:
            status = "still running" if err.returncode is None else err.returncode
            raise RuntimeError(
                f"the simulator did not start (exit code {status}); see "
                f"{self.rel(log_path)}:\n{_tail(log_path)}"
            ) from None
        m = self.sim.ready
        self.say(f"      simulated controller ready: TCP {addr}:{m['tcp']}, UDP port {m['udp']}")
        return addr, int(m["udp"])

    def write_config(self, sim_addr: str, sim_udp: int) -> Path:
        self.control_base = control_base_for(self.directory)
        bus_port = _free_port("127.0.0.1", socket.SOCK_STREAM)
        web_port = WEB_PORT if _tcp_free("127.0.0.1", WEB_PORT) else _free_port(
            "127.0.0.1", socket.SOCK_STREAM)  # fmt: skip
        udp = 2222 if _udp_free(self.local_address, 2222) else _free_port(
            self.local_address, socket.SOCK_DGRAM)  # fmt: skip
        tags = "\n".join(
            f'  [[plc.tag]]\n  name = "{name}"\n  rpi_ms = {rpi:g}\n' for name, rpi in DEMO_TAGS
        )
        text = f"""# Written by `{prog()} demo`: one simulated PLC, one I/O worker, one SQLite sink.
# Every key is documented in docs/configuration.md.

[bus]
endpoint = "tcp://127.0.0.1:{bus_port}"   # `{prog()} tail --connect tcp://127.0.0.1:{bus_port}`
control_base = "{self.control_base}"

[logging]
level = "INFO"
file = "pyconpro.log"

[worker]
udp_port = {udp}
stats_interval_s = 2

[[plc]]
name = "{PLC_NAME}"
address = "{sim_addr}"
local_address = "{self.local_address}"
udp_port = {sim_udp}          # the simulator's class-1 port (real PLCs: 2222)

{tags}
[[sink]]
kind = "sqlite"
name = "db"
path = "{DB_NAME}"
flush_interval_s = 0.5

[web]                         # the live page: http://127.0.0.1:{web_port}/ (and /metrics)
port = {web_port}
"""
        path = self.directory / "demo.toml"
        path.write_text(text, encoding="utf-8")
        self.bus = f"tcp://127.0.0.1:{bus_port}"
        self.control = f"{self.control_base}-supervisor"
        self.web_url = f"http://127.0.0.1:{web_port}/"
        return path

    def start_pipeline(self, config: Path) -> None:
        self.say(f"[2/3] starting the pipeline: {prog()} run {self.rel(config)} "
                 f"(log: {self.rel(self.directory / 'pyconpro.log')}) ...")  # fmt: skip
        err = self.directory / "supervisor.err"
        err.write_bytes(b"")  # a fresh file per run (spawn appends)
        self.sup = spawn(
            [self.python, "-m", "pyconpro.workers.supervisor", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        self.say(f"      live page: {self.web_url} (Prometheus metrics: {self.web_url}metrics)")
        self.say(f"      bus {self.bus}: connecting to the PLC (resolve tag types, Forward_Open)")

    # -------------------------------------------------------------- live view

    def watch(self) -> bool:
        """Progress, then live values. Returns True when samples arrived."""
        import zmq

        from pyconpro.acquisition.errors import MalformedPacket
        from pyconpro.acquisition.wire import Event, Sample, decode
        from pyconpro.sinks.stdout import display_value

        ctx: zmq.Context[Any] = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)  # a display: if it falls behind, drop, never block
        sub.subscribe(b"sample/")
        sub.subscribe(b"event/")
        sub.connect(self.bus)
        start = time.monotonic()
        first: float | None = None
        next_hint = start + 1.0
        next_draw = 0.0
        shown: set[str] = set()
        try:
            while True:
                now = time.monotonic()
                if first is not None and self.duration > 0 and now - first >= self.duration:
                    return True
                if first is None and now - start > CONNECT_TIMEOUT_S:
                    self.say(f"      no data after {CONNECT_TIMEOUT_S:g} s; giving up")
                    self._show_status(set(), "final")
                    return False
                if self.sup is not None and self.sup.poll() is not None:
                    self.say(f"      the supervisor exited (code {self.sup.returncode}):")
                    self.say(_tail(self.directory / "supervisor.err")
                             or _tail(self.directory / "pyconpro.log"))  # fmt: skip
                    return first is not None
                if first is None and now >= next_hint:
                    next_hint = now + 1.0
                    self._show_status(shown, f"{now - start:.0f} s")
                if first is not None and now >= next_draw:
                    next_draw = now + (0.2 if self.tty else 1.0)
                    self._draw(now, first)
                if not sub.poll(100):
                    continue
                for _ in range(1000):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = decode(frames[0], frames[1])
                    except (MalformedPacket, IndexError):
                        continue
                    if isinstance(msg, Sample):
                        if first is None:
                            first = time.monotonic()
                            self.first_sample = True
                            until = (f"for {self.duration:g} s" if self.duration > 0
                                     else "until Ctrl-C")  # fmt: skip
                            self.say(f"[3/3] live values from {PLC_NAME} ({until}):")
                        tv = self.tags.setdefault(msg.tag, TagView(first=time.monotonic()))
                        tv.type_name = msg.type_name or "?"
                        # REAL in float32 digits (-53.95303), as the stdout sink and tail
                        tv.value = display_value(msg.value, msg.type_name)
                        tv.count += 1
                        tv.last = time.monotonic()
                    elif isinstance(msg, Event) and first is None:
                        change = (f"{msg.state_from} -> {msg.state_to}" if msg.state_to
                                  else str(msg.kind))  # fmt: skip
                        text = f": {msg.message}" if msg.message else ""
                        self.say(f"      {msg.plc}/{msg.tag}: {change}{text}")
        finally:
            if first is not None:
                self._draw(time.monotonic(), first)
            sub.close()

    def _draw(self, now: float, first: float) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        lines = []
        for name, _rpi in DEMO_TAGS:
            tv = self.tags.get(name)
            if tv is None:
                lines.append(f"  {name:8} (no sample yet)")
                continue
            span = max(tv.last - tv.first, 1e-9)
            rate = (tv.count - 1) / span if tv.count > 1 else 0.0
            head = f"  {name:8} {tv.type_name:10} {tv.count:6} samples {rate:5.1f}/s  = "
            lines.append(head + tv.value[: max(10, width - len(head) - 1)])
        if self.tty and not self.out_closed:
            up = f"\x1b[{self.drawn_lines}F" if self.drawn_lines else ""
            try:
                self.out.write(up + "".join(line + "\x1b[K\n" for line in lines))
                self.out.flush()
            except BrokenPipeError:
                self.out_closed = True
            self.drawn_lines = len(lines)
        else:
            self.say(f"  t={now - first:4.1f}s")
            for line in lines:
                self.say(line)

    def _show_status(self, shown: set[str], when: str) -> None:
        """Print the processes' and connections' states that changed since the last call."""
        from pyconpro.status_cli import request

        st = request(self.control, {"op": "status"}, 1.0)
        if not st or not st.get("ok"):
            if "no answer" not in shown:
                shown.add("no answer")
                self.say(f"      ({when}) waiting for the supervisor to answer ...")
            return
        lines = [f"{c['name']}: {c['state']} ({c.get('reason', '')})"
                 for c in st.get("children", [])]  # fmt: skip
        for w in st.get("workers", {}).values():
            for c in w.get("consumers") or []:
                why = c.get("failure") or c.get("last_status") or ""
                lines.append(f"{c.get('key')}: {c.get('state')} {why}".rstrip())
        new = [line for line in lines if line not in shown]
        shown.update(new)
        for line in new:
            self.say(f"      ({when}) {line}")
        if not new:
            self.say(f"      ({when}) still waiting for the first sample ...")

    # -------------------------------------------------------------- stop and report

    def stop(self) -> None:
        if self.sup is not None and self.sup.poll() is None:
            self.say("stopping: the worker closes its connections (Forward_Close), "
                     "then the SQLite sink flushes ...")  # fmt: skip
            self.sup.stop(30.0)  # SIGTERM, wait, SIGKILL
        if self.sim is not None:
            self.sim.stop(10.0)
        short = self.control_base.removeprefix("ipc://")
        if short.startswith("/tmp/pyconpro-demo-"):  # the fallback: leave no empty directory
            try:
                os.rmdir(os.path.dirname(short))
            except OSError:
                pass

    def report(self) -> int:
        db = self.directory / DB_NAME
        rows: list[tuple[str, int]] = []
        events = 0
        if db.exists():
            # Everything has stopped by now: a read-write connection is the last one to close,
            # so SQLite checkpoints the WAL and leaves one tidy file (a read-only one cannot).
            con = sqlite3.connect(db)
            try:
                rows = con.execute(
                    "SELECT tag, COUNT(*) FROM samples GROUP BY tag ORDER BY tag"
                ).fetchall()
                events = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            except sqlite3.Error as exc:
                self.say(f"cannot read {self.rel(db)}: {exc}")
            finally:
                con.close()
        total = sum(n for _, n in rows)
        if total == 0:
            self.say(f"no samples were written to {self.rel(db)}; read "
                     f"{self.rel(self.directory / 'pyconpro.log')} and "
                     f"{self.rel(self.directory / 'simulator.log')} for why")  # fmt: skip
            return 1
        d = self.rel(db)
        per_tag = ", ".join(f"{t} {n}" for t, n in rows)
        self.say("")
        self.say(f"The data is in {d}: {total} samples ({per_tag}) and {events} events.")
        self.say("Query it with the sqlite3 shell:")
        self.say(f'  sqlite3 {d} "SELECT tag, COUNT(*), MIN(value_real), MAX(value_real) FROM'
                 ' samples GROUP BY tag"')
        self.say("or with Python:")
        self.say(f"  {Path(self.python).name} -c \"import sqlite3; db = sqlite3.connect('{d}'); "
                 "print(db.execute('SELECT tag, value_json FROM samples ORDER BY id DESC "
                 "LIMIT 5').fetchall())\"")  # fmt: skip
        self.say(f"Tables, columns and more queries: docs/sqlite.md. "
                 f"Config: {self.rel(self.directory / 'demo.toml')} "
                 f"(run it yourself with `{prog()} sim --address {self.sim_address}` and "
                 f"`{prog()} run {self.rel(self.directory / 'demo.toml')}`).")  # fmt: skip
        return 0

    def run(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):  # a fresh database per demo run
            (self.directory / (DB_NAME + suffix)).unlink(missing_ok=True)
        interrupted = False
        try:
            sim_addr, sim_udp = self.start_simulator()
            self.sim_address = sim_addr
            config = self.write_config(sim_addr, sim_udp)
            self.start_pipeline(config)
            self.watch()
        except KeyboardInterrupt:
            interrupted = True
            self.say("")
        except (RuntimeError, OSError) as exc:
            self.say(f"error: {exc}")
        finally:
            try:
                self.stop()
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, kill
                for p in (self.sup, self.sim):
                    if p is not None:
                        p.kill()
        if interrupted and not self.first_sample:
            self.say("interrupted before the first sample; nothing was written")
            return 130
        code = self.report()
        return code if not interrupted or code else 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run(args: argparse.Namespace) -> int:
    demo = Demo(
        duration=args.duration,
        directory=Path(args.dir),
        sim_address=args.sim_address,
        local_address=args.local_address,
        tty=sys.stdout.isatty(),
    )

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        return demo.run()
    finally:
        signal.signal(signal.SIGTERM, old)
