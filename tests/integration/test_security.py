"""CURVE end to end: ``pyconpro run`` with its bus and control sockets on TCP behind CURVE.

One simulated PLC on 127.74.N.2, its worker on 127.74.N.1, the SQLite sink; the bus endpoint
and the control sockets on 127.0.0.1 ports the kernel picked free, with ``curve_on_loopback``
so loopback behaves as the network would. What must hold:

- the pipeline's own processes (worker, forwarder, sink, supervisor) talk through CURVE: rows
  reach the database and ``status`` answers a client with a key from ``client_keys``;
- a subscriber with an allowed key gets samples; one with another key, and one without CURVE,
  get nothing, and the refused key is counted in the supervisor's status;
- ``pyconpro status CONFIG`` and ``pyconpro tail --config`` use the config's keys by themselves.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire
from pyconpro.workers import process
from pyconpro.workers.guard import ClientKeys, keygen, load_key_pair, load_public_key

from pyconpro.status_cli import request
from tests.support.ports import free_port, free_subnet, free_udp_port

simulator_testing = pytest.importorskip("pyconpro.simulator.testing")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0








def wait_for(cond: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _seqs(db: Path) -> list[int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT seq FROM samples ORDER BY id").fetchall()
        assert con.execute("SELECT COUNT(*) FROM gaps WHERE kind = 'bus'").fetchone()[0] == 0
        return [seq for (seq,) in rows]
    finally:
        con.close()


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        con.close()


class Keys:
    def __init__(self, tmp: Path) -> None:
        (tmp / "clients").mkdir()
        self.server_secret = keygen(tmp / "plant")[1]
        self.server_public = load_public_key(tmp / "plant.key")
        public, self.client_secret = keygen(tmp / "operator")
        public.rename(tmp / "clients" / public.name)
        self.stranger_secret = keygen(tmp / "stranger")[1]

    def client(self, secret: Path) -> ClientKeys:
        return ClientKeys(load_key_pair(secret), self.server_public)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Path, Keys, str, str]]:
    net = free_subnet(74)
    keys = Keys(tmp_path)
    bus, control = free_port(), free_port()
    with simulator_testing.start_simulator(f"127.74.{net}.2", tcp_port=44818) as sim:
        config = tmp_path / "plant.toml"
        config.write_text(f"""
[bus]
endpoint = "tcp://127.0.0.1:{bus}"
control_base = "tcp://127.0.0.1:{control}"
[security]
server_key = "plant.key_secret"
client_keys = "clients"
curve_on_loopback = true
[worker]
udp_port = {free_udp_port(f"127.74.{net}.1")}
stats_interval_s = 1
[[plc]]
name = "line1"
address = "127.74.{net}.2"
local_address = "127.74.{net}.1"
udp_port = {sim.udp_port}
  [[plc.tag]]
  name = "Counter"
  rpi_ms = 50
[[sink]]
kind = "sqlite"
path = "out.sqlite3"
flush_interval_s = 0.2
""")
        yield config, keys, f"tcp://127.0.0.1:{bus}", f"tcp://127.0.0.1:{control}"


def _subscriber(ctx: zmq.Context[Any], endpoint: str, curve: ClientKeys | None) -> Any:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.subscribe(b"sample/")
    if curve is not None:
        curve.apply(sub)
    sub.connect(endpoint)
    return sub


def _samples(sub: Any) -> int:
    n = 0
    while sub.poll(0):
        topic, body = sub.recv_multipart()
        msg = wire.decode(topic, body)
        assert isinstance(msg, wire.Sample) and msg.plc == "line1"
        n += 1
    return n


def test_bus_and_control_behind_curve(secured: tuple[Path, Keys, str, str]) -> None:
    config, keys, bus, control = secured
    log = config.parent / "run.log"
    run = process.spawn([sys.executable, "-m", "pyconpro.cli", "run", str(config)],
                        stdout=log, stderr=log, cwd=REPO)  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    subs: list[Any] = []
    try:
        operator = keys.client(keys.client_secret)

        def status() -> dict[str, Any] | None:
            assert run.alive(), f"pyconpro run exited:\n{log.read_text()[-4000:]}"
            return request(control, {"op": "status"}, 2.0, curve=operator)

        st = wait_for(status, "the supervisor's status over CURVE")
        assert st["ok"] and st["supervisor"]["security"]["curve_control"] is True
        assert st["supervisor"]["security"]["curve_bus"] is True
        # Without CURVE, or with a key the pipeline does not know, no answer at all.
        assert request(control, {"op": "status"}, 1.0) is None
        assert request(control, {"op": "status"}, 1.0,
                       curve=keys.client(keys.stranger_secret)) is None  # fmt: skip

        db = config.parent / "out.sqlite3"
        wait_for(lambda: _rows(db) >= 20, "rows from the sink (which connects through CURVE)")

        def sink_reported() -> bool:  # ... and reports its state to the control socket too
            st = status()
            return st is not None and st["sinks"]["sink-sqlite-0"].get("state") == "writing"

        wait_for(sink_reported, "the sink's own report (through CURVE) in status")

        # Killed and restarted, the sink asks the control socket, through CURVE too, for what
        # it missed while it was down (the bus's replay buffer) and gets it.
        st = status()
        assert st is not None and st["forwarder"]["replay"]["messages"] > 0
        pid = next(c["pid"] for c in st["children"] if c["name"] == "sink-sqlite-0")
        stored = _rows(db)
        os.kill(pid, signal.SIGKILL)
        try:
            replayed = wait_for(lambda: re.findall(r"replay done in [\d.]+ s: (\d+) message",
                                                   log.read_text()),
                                "the restarted sink's replay", 90.0)  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{log.read_text()[-5000:]}") from None
        assert int(replayed[0]) > 0
        wait_for(lambda: _rows(db) > stored + int(replayed[0]) + 20, "live rows after it")
        seqs = _seqs(db)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "each sample once, no hole"

        good = _subscriber(ctx, bus, operator)
        stranger = _subscriber(ctx, bus, keys.client(keys.stranger_secret))
        plain = _subscriber(ctx, bus, None)
        subs += [good, stranger, plain]
        got = {"good": 0, "stranger": 0, "plain": 0}

        def enough() -> bool:
            for name, sub in (("good", good), ("stranger", stranger), ("plain", plain)):
                got[name] += _samples(sub)
            return got["good"] >= 40

        wait_for(enough, "samples at the subscriber with an allowed key")
        assert got["stranger"] == 0 and got["plain"] == 0, got

        def refused() -> int:
            reply = request(control, {"op": "status"}, 2.0, curve=operator)
            return int(reply["supervisor"]["security"]["curve_refused"]) if reply else 0

        assert wait_for(refused, "the refused keys in status") >= 2  # control and bus

        # The command-line tools take the keys from the config file.
        out = config.parent / "status.json"
        code = process.spawn([sys.executable, "-m", "pyconpro.cli", "status", str(config),
                              "--json"], stdout=out, stderr=log, cwd=REPO).wait(60)  # fmt: skip
        assert code == 0 and '"curve_control": true' in out.read_text()
        tail_out = config.parent / "tail.txt"
        code = process.spawn([sys.executable, "-m", "pyconpro.cli", "tail", "--config",
                              str(config), "--count", "3", "--timeout", "30"],
                             stdout=tail_out, stderr=log, cwd=REPO).wait(60)  # fmt: skip
        assert code == 0, tail_out.read_text() + log.read_text()[-3000:]
        assert tail_out.read_text().count("sample line1/Counter") == 3
    finally:
        for sub in subs:
            sub.close(0)
        ctx.term()
        assert run.stop(30) == 0, log.read_text()[-4000:]

