"""One pipeline, three network destinations (issue 11's "done when"): ``pyconpro run`` with a
PostgreSQL, a Sparkplug B MQTT and a NATS JetStream sink against the simulator; each server is
stopped for a while and started again in turn, under live data; in the end each destination
holds every sample the worker published, in order per tag.

PostgreSQL and NATS store exactly once (idempotent keys, ``Nats-Msg-Id``); MQTT delivers at
least once, so the Sparkplug side is compared as a set of (device, metric, timestamp) after
the births told each alias's name. The reference is the bus itself: per tag, the ``sq``
numbers PostgreSQL holds must run 0..N-1 with no hole, and the other two must hold the same
samples."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.simulator import testing as simulator_testing
from pyconpro.workers.process import Child, spawn

from pyconpro.status_cli import request
from tests.support.mosquitto import MosquittoBroker, Subscriber, require_mosquitto
from tests.support.nats import NatsServer, read_stream, require_nats
from tests.support.ports import free_subnet, free_udp_port
from tests.support.postgres import PostgresServer, require_postgres
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 90.0
TAGS = ("Counter", "Sine")
GROUP, NODE = "plant1", "edge1"


def config(tmp: Path, net: int, sim: Any, udp_port: int, pg: PostgresServer,
           broker: MosquittoBroker, nats: NatsServer) -> str:  # fmt: skip
    tags = "".join(f'  [[plc.tag]]\n  name = "{t}"\n  rpi_ms = 20\n' for t in TAGS)
    common = "flush_interval_s = 0.2\nconnect_timeout_s = 2\n"
    return f"""
[bus]
endpoint = "ipc://{tmp}/bus"
control_base = "ipc://{tmp}/ctl"
[worker]
udp_port = {udp_port}
stats_interval_s = 1
[supervisor]
stop_timeout_s = 30

[[plc]]
name = "line1"
address = "127.78.{net}.2"
local_address = "127.78.{net}.1"
udp_port = {sim.udp_port}
{tags}
[[sink]]
kind = "postgres"
name = "historian"
conninfo = "{pg.conninfo("postgres")}"
spool_dir = "{tmp}/spool-pg"
flush_interval_s = 0.2

[[sink]]
kind = "mqtt"
name = "scada"
host = "{broker.host}"
port = {broker.port}
payload = "sparkplug"
group_id = "{GROUP}"
edge_node_id = "{NODE}"
spool_dir = "{tmp}/spool-mqtt"
{common}
[[sink]]
kind = "nats"
name = "sites"
servers = "{nats.url}"
stream = "PLANT"
subject_prefix = "site1"
spool_dir = "{tmp}/spool-nats"
{common}"""


class Pipeline:
    def __init__(self, tmp: Path, text: str) -> None:
        self.tmp = tmp
        cfg = tmp / "pipeline.toml"
        cfg.write_text(text)
        self.log = tmp / "run.log"
        self.control = f"ipc://{tmp}/ctl-supervisor"
        self.proc: Child = spawn([sys.executable, "-m", "pyconpro.cli", "run", str(cfg)],
                                 stdout=self.log, stderr=self.log, cwd=REPO)  # fmt: skip

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]

    def sinks(self) -> dict[str, dict[str, Any]]:
        st = request(self.control, {"op": "status"}, 5.0)
        if st is None or not st.get("ok"):
            return {}
        sinks: dict[str, dict[str, Any]] = st.get("sinks") or {}
        return sinks

    def report(self, name: str) -> dict[str, Any]:
        """The last report of the ``[[sink]]`` named ``name`` (its process is sink-<name>)."""
        return self.sinks().get(f"sink-{name}", {})

    def written(self, name: str) -> int:
        return int(self.report(name).get("written") or 0)

    def spool_depth(self, name: str) -> int:
        return int(self.report(name).get("spool_depth") or 0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pyconpro run did not stop; log:\n{self.log_text()}") from None


@pytest.fixture
def servers() -> Iterator[tuple[PostgresServer, MosquittoBroker, NatsServer]]:
    pg = PostgresServer(require_postgres())
    broker = MosquittoBroker(require_mosquitto(), persistence=True)
    nats = NatsServer(require_nats())
    try:
        for server in (pg, broker, nats):
            server.start()
        yield pg, broker, nats
    finally:
        for server in (nats, broker, pg):
            server.close()


def _postgres_samples(pg: PostgresServer) -> dict[str, list[tuple[int, int]]]:
    """Per tag, (seq, t_wall_ns) of every row, in seq order."""
    rows = pg.query("postgres", "SELECT t.tag, s.seq, s.t_wall_ns FROM pyconpro.samples s"
                    " JOIN pyconpro.tags t ON t.id = s.tag_id ORDER BY t.tag, s.seq")  # fmt: skip
    out: dict[str, list[tuple[int, int]]] = {}
    for tag, seq, t_wall in rows:
        out.setdefault(tag, []).append((seq, t_wall))
    return out


def _nats_samples(nats: NatsServer) -> dict[str, list[tuple[int, int]]]:
    import json

    out: dict[str, list[tuple[int, int]]] = {}
    for m in read_stream(nats.url, "PLANT", "site1.sample.>"):
        r = json.loads(m.data)
        out.setdefault(r["tag"], []).append((r["seq"], r["t_wall_ns"]))
    return out


def _sparkplug_samples(sub: Subscriber) -> set[tuple[str, int]]:
    """(tag, timestamp in ms) of every DDATA metric of device line1, names from its births."""
    from pyconpro.sinks.mqtt import sparkplug_b_pb2 as spb

    names: dict[int, str] = {}
    seen: set[tuple[str, int]] = set()
    for m in sub.snapshot():
        parts = m.topic.split("/")
        if len(parts) != 5 or parts[2] not in ("DBIRTH", "DDATA") or parts[4] != "line1":
            continue
        payload = spb.Payload.FromString(m.payload)
        for metric in payload.metrics:
            if parts[2] == "DBIRTH":
                names[metric.alias] = metric.name
            elif metric.alias in names:
                seen.add((names[metric.alias], metric.timestamp))
    return seen


def _outage(pipe: Pipeline, sink: str, stop: Callable[[], None], start: Callable[[], None]
            ) -> None:  # fmt: skip
    """Stop a destination, see its sink spool under live data, start it, see the spool empty."""
    stop()
    wait_for(lambda: pipe.spool_depth(sink) >= 50, f"{sink} spooling while its server is down",
             WAIT_S)  # fmt: skip
    start()
    wait_for(lambda: pipe.spool_depth(sink) == 0 and pipe.written(sink) > 0,
             f"{sink}'s spool sent once its server is back", WAIT_S)  # fmt: skip


def test_postgres_sparkplug_and_nats_each_survive_their_server_restart(
        tmp_path: Path, servers: tuple[PostgresServer, MosquittoBroker, NatsServer]) -> None:
    pg, broker, nats = servers
    net = free_subnet(78)
    with simulator_testing.start_simulator(f"127.78.{net}.2", tcp_port=44818) as sim:
        sub = Subscriber(broker, [f"spBv1.0/{GROUP}/#"], persistent=True)
        try:
            broker.save()  # the subscriber's session outlives the broker's restart
            pipe = Pipeline(tmp_path, config(tmp_path, net, sim, free_udp_port(f"127.78.{net}.1"),
                                             pg, broker, nats))  # fmt: skip
            try:
                try:
                    for sink in ("historian", "scada", "sites"):
                        wait_for(lambda s=sink: pipe.written(s) >= 100,  # type: ignore[misc]
                                 f"{sink} writing", WAIT_S)
                    _outage(pipe, "historian", pg.kill, pg.start)
                    _outage(pipe, "scada", broker.stop, broker.start)
                    _outage(pipe, "sites", nats.kill, nats.start)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; status of the sinks: {pipe.sinks()};"
                                         f" log:\n{pipe.log_text()}") from None
            finally:
                pipe.stop()
            stored = _postgres_samples(pg)
            assert set(stored) == set(TAGS), pipe.log_text()
            for tag, rows in stored.items():
                seqs = [seq for seq, _ in rows]
                assert seqs == list(range(len(seqs))), f"{tag}: a hole or a copy in PostgreSQL"
                assert len(seqs) > 200, tag
            assert _nats_samples(nats) == stored
            want = {(tag, t_wall // 1_000_000) for tag, rows in stored.items()
                    for _, t_wall in rows}  # fmt: skip
            wait_for(lambda: _sparkplug_samples(sub) >= want,
                     "every sample as a Sparkplug DDATA metric", WAIT_S)
            assert _sparkplug_samples(sub) == want
        finally:
            sub.close()
