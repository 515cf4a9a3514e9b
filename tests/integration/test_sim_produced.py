"""Our codec (acquisition/ + plain sockets) consuming produced tags from the real simulator
process on loopback: data at the RPI with the right values and sequence numbers, multicast,
the assembly path, the heartbeat watchdog, every rejection of protocol.md 7.6 / 10.4, the
datagram faults and a restart.

Each module-scoped simulator runs on an address of its own with kernel-chosen ports; the
consumer side binds port 0 and announces it in a T->O sockaddr item (as the I/O worker does).
Every receive has a timeout.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition import class1, cm, cpf, epath
from pyconpro.acquisition.target_options import multicast_group
from pyconpro.simulator.control import ControlError
from pyconpro.simulator.testing import EncapClient, SimulatorProcess, start_simulator

from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(90)

TAGS_TOML = """
[[tags]]
name = "Fixed"
type = "DINT"
produced = true
max_consumers = 2
value = 305419896

[[tags]]
name = "Count"
type = "DINT"
produced = true
max_consumers = 8
generator = { kind = "counter", interval_s = 0.05 }

[[tags]]
name = "Arr"
type = "INT[5]"
produced = true
max_consumers = 4
instance_id = 900
value = [1, -2, 3, -4, 5]

[[tags]]
name = "Plain"
type = "DINT"
value = 7

[[tags]]
name = "Limited"
type = "DINT"
produced = true
max_consumers = 4
rpi_min_us = 10000
rpi_max_us = 100000
default_rpi_us = 20000

[[tags]]
name = "McOnly"
type = "REAL"
produced = true
max_consumers = 4
unicast_allowed = false
value = 1.5
"""

ADDRESS = "127.0.93.2"
# A /24 like a plant network: consumers on 127.0.93.x are on the simulator's subnet, the
# default consumer (127.0.0.1) is not, so its multicast requests get 0x0813 (protocol.md 6.7).
NETMASK = "255.255.255.0"
ADDRESS_ALT = "127.0.93.3"
_serials = itertools.count(0x100)


@pytest.fixture(scope="module")
def tags_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "tags.toml"
    path.write_text(TAGS_TOML)
    return path


@pytest.fixture(scope="module")
def mcast_port() -> int:
    return free_port("0.0.0.0", socket.SOCK_DGRAM)


@pytest.fixture(scope="module")
def sim(tags_file: Path, mcast_port: int) -> Iterator[SimulatorProcess]:
    args = ["--initial-watchdog", "0.3", "--multicast-port", str(mcast_port), "--seed", "3",
            "--netmask", NETMASK]
    with start_simulator(ADDRESS, config=tags_file, extra_args=args) as s:
        yield s
        assert s.alive(), s.log_text()


@pytest.fixture(scope="module")
def sim_alt(tags_file: Path) -> Iterator[SimulatorProcess]:
    """The uncertain codes switched to their alternatives, a tiny connection pool, and old
    firmware without Large_Forward_Open."""
    args = ["--size-error", "0x0128", "--unknown-tag-error", "0x012E", "--multicast-rpi-error",
            "0x0801", "--max-connections", "2", "--initial-watchdog", "0.3",
            "--no-large-forward-open",
            "--multicast-port", str(free_port("0.0.0.0", socket.SOCK_DGRAM))]
    with start_simulator(ADDRESS_ALT, config=tags_file, extra_args=args) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("sim", "sim_alt"):
        if name in request.fixturenames:
            s: SimulatorProcess = request.getfixturevalue(name)
            s.control.clear_faults()
            s.control.restart()  # drop whatever a failed test left open


class Consumer:
    """One originator: a TCP session and a UDP socket on the same local address."""

    def __init__(self, sim: SimulatorProcess, source: str = "127.0.0.1", udp_port: int = 0) -> None:
        self.sim = sim
        self.tcp = EncapClient(sim.address, sim.tcp_port, source=source)
        self.ip = self.tcp.sock.getsockname()[0]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.ip, udp_port))
        self.udp.settimeout(2.0)
        self.port = self.udp.getsockname()[1]
        self.hb_seq = 0

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()

    def request(self, tag: str = "Fixed", tag_bytes: int = 4, *, rpi_us: int = 20_000,
                ot_rpi_us: int = 20_000, mult: int = 2, multicast: bool = False,
                **changes: object) -> cm.ForwardOpenRequest:
        import dataclasses

        req = cm.produced_tag_forward_open(
            tag=tag, tag_bytes=tag_bytes, to_rpi_us=rpi_us, ot_rpi_us=ot_rpi_us,
            connection_serial=next(_serials), vendor_id=0x0FAB, originator_serial=0x5EED,
            to_connection_id=0xC0DE0000 + next(_serials), multicast=multicast,
            timeout_multiplier=mult,
        )
        return dataclasses.replace(req, **changes) if changes else req  # type: ignore[arg-type]

    def open(
        self, req: cm.ForwardOpenRequest
    ) -> tuple[cm.ForwardOpenSuccess | cm.ConnectionFailure, tuple[cpf.Item, ...]]:
        extra: tuple[cpf.Item, ...] = ()
        if self.port != 2222:
            extra = (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("0.0.0.0", self.port)),)
        return self.tcp.forward_open(req, extra)

    def open_ok(
        self, req: cm.ForwardOpenRequest
    ) -> tuple[cm.ForwardOpenSuccess, tuple[cpf.Item, ...]]:
        res, items = self.open(req)
        assert isinstance(res, cm.ForwardOpenSuccess), (
            res.error() if isinstance(res, cm.ConnectionFailure) else res
        )
        return res, items

    def reject(self, req: cm.ForwardOpenRequest) -> tuple[int, tuple[int, ...]]:
        res, items = self.open(req)
        assert isinstance(res, cm.ConnectionFailure), res
        assert items == () and res.triad == req.triad
        return res.general_status, res.additional

    def heartbeat(self, ot_id: int) -> None:
        self.hb_seq += 1
        self.udp.sendto(class1.heartbeat(ot_id, self.hb_seq), (self.sim.address, self.sim.udp_port))

    def receive(self, sock: socket.socket | None = None) -> tuple[class1.Class1Datagram, float]:
        data, src = (sock or self.udp).recvfrom(2048)
        assert src[0] == self.sim.address
        return class1.Class1Datagram.decode(data), time.monotonic()

    def stream(
        self,
        ok: cm.ForwardOpenSuccess,
        seconds: float,
        heartbeat: bool = True,
        sock: socket.socket | None = None,
    ) -> list[tuple[class1.Class1Datagram, float]]:
        """Receive for ``seconds``, heartbeating once per datagram (the RPIs are equal)."""
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            d, t = self.receive(sock)
            if d.connection_id == ok.to_connection_id:
                out.append((d, t))
            if heartbeat:
                self.heartbeat(ok.ot_connection_id)
        return out


@pytest.fixture
def consumer(sim: SimulatorProcess) -> Iterator[Consumer]:
    c = Consumer(sim)
    yield c
    c.close()


# --------------------------------------------------------------------------- data at the RPI


def test_data_arrives_at_the_rpi_with_the_tag_value(consumer: Consumer) -> None:
    req = consumer.request("Fixed", rpi_us=20_000)
    ok, items = consumer.open_ok(req)
    assert (ok.to_api, ok.to_connection_id) == (20_000, req.to_connection_id)
    assert items[0] == cpf.SockaddrInfo(
        cpf.ItemId.SOCKADDR_O2T, cpf.Sockaddr("0.0.0.0", consumer.sim.udp_port)
    )
    got = consumer.stream(ok, 1.0)
    assert 40 <= len(got) <= 55, len(got)
    intervals = (got[-1][1] - got[0][1]) / (len(got) - 1)
    assert 0.017 < intervals < 0.023
    assert [d.sequence for d, _ in got] == list(
        range(got[0][0].sequence, got[0][0].sequence + len(got))
    )
    assert {d.data for d, _ in got} == {struct.pack("<i", 305419896)}
    assert {d.cip_sequence for d, _ in got} == {1}  # value never changes: seq16 stays (on change)
    assert isinstance(consumer.tcp.forward_close(cm.forward_close_for(req)), cm.ForwardCloseSuccess)


def test_changing_value_advances_seq16_exactly_on_change(consumer: Consumer) -> None:
    ok, _ = consumer.open_ok(consumer.request("Count", rpi_us=10_000, ot_rpi_us=10_000))
    got = [d for d, _ in consumer.stream(ok, 0.8)]
    values = [struct.unpack("<i", d.data)[0] for d in got]
    assert values == sorted(values) and values[-1] - values[0] >= 8  # 0.05 s counter
    for a, b in itertools.pairwise(got):
        assert class1.seq16_diff(b.cip_sequence, a.cip_sequence) == (1 if b.data != a.data else 0)


def test_assembly_path_reaches_the_tag_by_instance(consumer: Consumer) -> None:
    req = consumer.request("Arr", 10, path=bytes.fromhex("0100 20042401 2CC6 2D00 8403"))
    ok, _ = consumer.open_ok(req)
    d, _ = consumer.stream(ok, 0.1)[0]
    assert struct.unpack("<5h", d.data) == (1, -2, 3, -4, 5)


def test_multicast_consumers_share_one_stream(sim: SimulatorProcess, mcast_port: int) -> None:
    a, b = Consumer(sim, "127.0.93.11"), Consumer(sim, "127.0.93.12")
    socks = []
    try:
        # x128 watchdog: each consumer only heartbeats while it is the one receiving.
        ok_a, items_a = a.open_ok(a.request("McOnly", multicast=True, rpi_us=20_000, mult=5))
        ok_b, items_b = b.open_ok(b.request("McOnly", multicast=True, rpi_us=20_000, mult=5))
        group = multicast_group(ADDRESS, NETMASK, 0)
        t2o = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr(group, mcast_port))
        assert items_a[-1] == items_b[-1] == t2o and ok_a.to_connection_id == ok_b.to_connection_id
        for c in (a, b):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((group, mcast_port))
            s.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton(c.ip),
            )
            s.settimeout(2.0)
            socks.append(s)
        for c, ok, s in ((a, ok_a, socks[0]), (b, ok_b, socks[1])):
            got = c.stream(ok, 0.3, sock=s)
            assert len(got) >= 8 and {d.data for d, _ in got} == {struct.pack("<f", 1.5)}
        # P2P is refused for this tag (producer does not allow unicast).
        assert a.reject(a.request("McOnly")) == (1, (0x0124,))
        # Another RPI than the running multicast production: 0x0112 with the one to use.
        general, words = b.reject(b.request("McOnly", multicast=True, rpi_us=40_000))
        assert (general, words[0]) == (1, 0x0112) and words[4] | words[5] << 16 == 20_000
    finally:
        for s in socks:
            s.close()
        a.close()
        b.close()


# --------------------------------------------------------------------------- watchdog


def test_connection_dropped_after_heartbeats_stop(
    consumer: Consumer, sim: SimulatorProcess
) -> None:
    req = consumer.request("Fixed", rpi_us=10_000, ot_rpi_us=20_000, mult=0)  # 20 ms x 4
    ok, _ = consumer.open_ok(req)
    assert len(consumer.stream(ok, 0.4)) > 10  # beyond the 0.3 s initial watchdog
    last_heartbeat = time.monotonic()
    consumer.heartbeat(ok.ot_connection_id)
    last_data = last_heartbeat
    consumer.udp.settimeout(0.5)
    with pytest.raises(TimeoutError):
        while True:
            consumer.receive()
            last_data = time.monotonic()
    assert last_data - last_heartbeat < 0.3  # 80 ms watchdog, far less than the 0.5 s silence
    assert not any(c["serial"] == req.connection_serial for c in sim.control.connections())
    assert "timed_out tag=Fixed" in sim.log_text()
    # The consumer slot is free again, and Forward_Close of the dead triad says 0x0107.
    closed = consumer.tcp.forward_close(cm.forward_close_for(req))
    assert isinstance(closed, cm.ConnectionFailure) and closed.additional == (0x0107,)


def test_heartbeats_from_another_ip_do_not_count(sim: SimulatorProcess, consumer: Consumer) -> None:
    ok, _ = consumer.open_ok(consumer.request("Fixed", ot_rpi_us=20_000, mult=0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
        intruder.bind(("127.0.93.99", 0))
        for seq in range(1, 200):
            intruder.sendto(class1.heartbeat(ok.ot_connection_id, seq), (sim.address, sim.udp_port))
    assert sim.control.status()["target"]["heartbeats_foreign"] >= 199


# --------------------------------------------------------------------------- rejections


def _rejections() -> list[tuple[str, dict[str, object], tuple[int, tuple[int, ...]]]]:
    p = epath.produced_tag_connection_path
    ncp = cm.NetworkParameters
    P2P, MC = cm.ConnectionType.POINT_TO_POINT, cm.ConnectionType.MULTICAST
    s = cm.Priority.SCHEDULED
    return [
        ("size", {"to_params": ncp(P2P, s, False, 8)}, (1, (0x0109, 6))),
        ("unknown", {"path": p("NoSuchTag", 0)}, (1, (0x031F,))),
        ("not-produced", {"path": p("Plain", 0)}, (1, (0x031F,))),
        ("rpi", {"to_rpi": 500}, (1, (0x0111,))),
        (
            "rpi-default",
            {"path": p("Limited", 0), "to_rpi": 5_000},
            (1, (0x0112, 0x0100, 20_000, 0, 20_000, 0)),
        ),
        ("transport", {"transport": 0x83}, (1, (0x0103,))),
        ("ot-type", {"ot_params": ncp(MC, s, False, 2)}, (1, (0x0123,))),
        ("to-type", {"to_params": ncp(cm.ConnectionType.NULL, s, False, 6)}, (1, (0x0124,))),
        ("slot", {"path": p("Fixed", 4)}, (1, (0x0312,))),
        ("port", {"path": bytes.fromhex("0300") + p("Fixed", None)}, (1, (0x0311,))),
        ("key-vendor", {"path": p("Fixed", 0, epath.ElectronicKey(vendor_id=9))}, (1, (0x0114,))),
        ("key-type", {"path": p("Fixed", 0, epath.ElectronicKey(device_type=7))}, (1, (0x0115,))),
        (
            "key-revision",
            {"path": p("Fixed", 0, epath.ElectronicKey(major_revision=1))},
            (1, (0x0116,)),
        ),
        ("bad-path", {"path": bytes.fromhex("0100 20012401")}, (1, (0x0315,))),
        # the consumer (127.0.0.1) is outside the simulator's 127.0.93.0/24
        ("off-subnet-multicast", {"multicast": True}, (1, (0x0813,))),
    ]


@pytest.mark.parametrize("name,changes,expected", _rejections(), ids=[r[0] for r in _rejections()])
def test_rejections(
    consumer: Consumer, name: str, changes: dict[str, object], expected: tuple[int, tuple[int, ...]]
) -> None:
    assert consumer.reject(consumer.request("Fixed", **changes)) == expected  # type: ignore[arg-type]


def test_duplicate_triad_max_consumers_and_slot_freed_by_close(sim: SimulatorProcess) -> None:
    a, b = Consumer(sim), Consumer(sim)
    try:
        first = a.request("Fixed")
        a.open_ok(first)
        assert a.reject(first) == (1, (0x0100,))
        b.open_ok(b.request("Fixed"))
        third = b.request("Fixed")
        assert b.reject(third) == (1, (0x031E,))  # max_consumers = 2
        assert isinstance(a.tcp.forward_close(cm.forward_close_for(first)), cm.ForwardCloseSuccess)
        b.open_ok(third)
    finally:
        a.close()
        b.close()


def test_forward_close_of_an_unknown_triad(consumer: Consumer) -> None:
    res = consumer.tcp.forward_close(cm.forward_close_for(consumer.request("Fixed")))
    assert isinstance(res, cm.ConnectionFailure) and (res.general_status, res.additional) == (
        1,
        (0x0107,),
    )


def test_forward_close_from_another_ip_is_refused(
    sim: SimulatorProcess, consumer: Consumer
) -> None:
    req = consumer.request("Fixed")
    consumer.open_ok(req)
    other = Consumer(sim, "127.0.93.21")
    try:
        res = other.tcp.forward_close(cm.forward_close_for(req))
        assert isinstance(res, cm.ConnectionFailure) and res.general_status == 0x0F
    finally:
        other.close()


@pytest.mark.parametrize("cut,general", [(20, 0x13), (-1, 0x13), (None, 0x15)])
def test_malformed_forward_open_bodies(consumer: Consumer, cut: int | None, general: int) -> None:
    req = consumer.request("Fixed")
    body = req.encode_body()
    body = body + b"\x00\x00" if cut is None else body[:cut]
    from pyconpro.acquisition import cip

    reply, _ = consumer.tcp.send_rr(cip.Request(0x54, epath.CONNECTION_MANAGER_PATH, body).encode())
    assert reply.status == general and cm.ConnectionFailure.from_reply(reply).triad == req.triad


def test_alternative_codes(sim_alt: SimulatorProcess) -> None:
    c = Consumer(sim_alt)
    d = Consumer(sim_alt, "127.0.93.31")
    try:
        p = epath.produced_tag_connection_path
        size = cm.NetworkParameters(
            cm.ConnectionType.POINT_TO_POINT, cm.Priority.SCHEDULED, False, 9
        )
        assert c.reject(c.request("Fixed", to_params=size)) == (1, (0x0128, 6))
        assert c.reject(c.request("Fixed", path=p("Plain", 0))) == (1, (0x012E,))
        c.open_ok(c.request("McOnly", multicast=True, rpi_us=20_000))
        assert d.reject(d.request("McOnly", multicast=True, rpi_us=30_000)) == (1, (0x0801,))
        d.open_ok(d.request("McOnly", multicast=True, rpi_us=20_000))
        assert d.reject(d.request("Count")) == (1, (0x0113,))  # pool of 2 is full
    finally:
        c.close()
        d.close()


def test_large_forward_open_is_on_by_default(consumer: Consumer) -> None:
    ok, _ = consumer.open_ok(consumer.request("Fixed", large=True))
    assert ok.to_api == 20_000


def test_no_large_forward_open_answers_0x08_and_forward_open_still_works(
    sim_alt: SimulatorProcess,
) -> None:
    """--no-large-forward-open: 0x5B refused with general status 0x08 and no data, directly and
    inside Unconnected_Send (protocol.md 7.6); the same request as 0x54 opens."""
    from pyconpro.acquisition import cip

    c = Consumer(sim_alt)
    try:
        req = c.request("Fixed", large=True)
        reply, items = c.tcp.send_rr(req.encode())
        assert (reply.service, reply.status, reply.additional, reply.data, items) == (
            0x5B,
            0x08,
            (),
            b"",
            (),
        )
        routed = cip.Request(
            cip.Service.UNCONNECTED_SEND,
            epath.CONNECTION_MANAGER_PATH,
            cip.UnconnectedSend(req.encode(), bytes.fromhex("0100")).encode(),
        )
        reply, _ = c.tcp.send_rr(routed.encode())
        assert (reply.service, reply.status, reply.data) == (0x5B, 0x08, b"")
        assert sim_alt.control.connections() == []
        assert "0x08 service 0x5B not supported" in sim_alt.log_text()
        ok, _ = c.open_ok(dataclasses.replace(req, large=False))
        d, _ = c.stream(ok, 0.1)[0]
        assert d.data == struct.pack("<i", 305419896)
    finally:
        c.close()


# --------------------------------------------------------------------------- faults, restart


def test_drop_and_duplicate_faults(sim: SimulatorProcess, consumer: Consumer) -> None:
    ok, _ = consumer.open_ok(consumer.request("Fixed", rpi_us=10_000, ot_rpi_us=10_000))
    consumer.stream(ok, 0.05)
    sim.control.faults(duplicate=1.0)
    dup = [d.sequence for d, _ in consumer.stream(ok, 0.3)]
    assert len(dup) >= 10 and all(dup.count(s) == 2 for s in dup[2:-2])
    sim.control.faults(clear=True, drop=0.5)
    seqs = [d.sequence for d, _ in consumer.stream(ok, 0.6)]
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(seqs))
    assert gaps > len(seqs) // 3  # about half the datagrams missing, sequence still counted
    assert sim.control.status()["fault_counters"]["dropped"] >= gaps


def test_stop_producing_keeps_the_connection(sim: SimulatorProcess, consumer: Consumer) -> None:
    # O->T every 100 ms: the simulator's watchdog (1.6 s) outlasts this test process being
    # descheduled on a busy machine; the loop below heartbeats every 50 ms or sooner.
    ok, _ = consumer.open_ok(consumer.request("Fixed", rpi_us=10_000, ot_rpi_us=100_000))
    consumer.stream(ok, 0.05)
    sim.control.faults(stop_producing=True)
    consumer.udp.settimeout(0.05)
    received_after = 0
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        consumer.heartbeat(ok.ot_connection_id)
        try:
            consumer.receive()
            received_after += 1
        except TimeoutError:
            pass
    assert received_after <= 2  # at most what was already in flight
    assert any(c["to_id"] == ok.to_connection_id for c in sim.control.connections())
    sim.control.faults(stop_producing=False)
    consumer.udp.settimeout(2.0)
    assert consumer.stream(ok, 0.1)


def test_producers_tell_a_load_source_what_to_send(
    sim: SimulatorProcess, consumer: Consumer
) -> None:
    ok, _ = consumer.open_ok(consumer.request("Fixed", rpi_us=10_000, ot_rpi_us=10_000))
    consumer.stream(ok, 0.05)
    raw, _ = consumer.udp.recvfrom(2048)
    seen = class1.Class1Datagram.decode(raw)
    [p] = [p for p in sim.control.producers() if p["to_id"] == ok.to_connection_id]
    assert p["tag"] == "Fixed" and p["dest"] == [consumer.ip, consumer.port]
    assert p["multicast"] is False and p["consumers"] == 1 and p["rpi_us"] == 10_000
    assert class1.seq32_diff(p["seq32"], seen.sequence) >= 0  # the last one produced
    # the simulator's datagram is the template with the sequence numbers written in
    image = bytes.fromhex(p["image"])
    assert raw == class1.Class1Datagram(
        ok.to_connection_id, seen.sequence, seen.cip_sequence, image).encode()


def test_record_heartbeats_with_their_receive_times(
    sim: SimulatorProcess, consumer: Consumer, tmp_path: Path
) -> None:
    from pyconpro.simulator.server import HEARTBEAT_RECORD

    ok, _ = consumer.open_ok(consumer.request("Fixed", rpi_us=100_000, ot_rpi_us=100_000))
    path = tmp_path / "heartbeats.bin"
    received = sim.control.status()["server"]["datagrams_received"]
    assert sim.control.record_heartbeats(str(path)) == 0
    before = time.time_ns()
    for _ in range(5):
        consumer.heartbeat(ok.ot_connection_id)
    consumer.udp.sendto(b"\x00", (sim.address, sim.udp_port))  # too short: ids 0
    deadline = time.monotonic() + 10
    while sim.control.status()["server"]["datagrams_received"] < received + 6:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sim.control.record_heartbeats(None) == 6
    after = time.time_ns()
    records = list(HEARTBEAT_RECORD.iter_unpack(path.read_bytes()))
    assert [(cid, seq) for _, cid, seq in records] == [
        (ok.ot_connection_id, n) for n in range(1, 6)] + [(0, 0)]
    times = [t for t, _, _ in records]
    assert before <= times[0] and times == sorted(times) and times[-1] <= after
    # not recording any more; a path that cannot be written is refused
    consumer.heartbeat(ok.ot_connection_id)
    assert sim.control.record_heartbeats(None) == 0 and len(path.read_bytes()) == 6 * 16
    with pytest.raises(ControlError, match="cannot write"):
        sim.control.record_heartbeats(str(tmp_path / "no-such-dir" / "x.bin"))


def test_restart_loses_connections_and_changes_ids(
    sim: SimulatorProcess, consumer: Consumer
) -> None:
    req = consumer.request("Fixed", rpi_us=10_000)
    ok, _ = consumer.open_ok(req)
    consumer.stream(ok, 0.05)
    sim.control.restart()
    consumer.udp.settimeout(0.3)
    with pytest.raises(TimeoutError):
        while True:
            consumer.receive()
    ok2, _ = consumer.open_ok(req)  # same triad is free again
    assert ok2.ot_connection_id >> 16 != ok.ot_connection_id >> 16


def test_originator_sessions_closed_when_its_last_connection_times_out(tags_file: Path) -> None:
    """--close-sessions-on-timeout: the OpENer behaviour behind protocol.md 7.7 mechanism 2."""
    args = ["--initial-watchdog", "0", "--close-sessions-on-timeout"]
    with start_simulator("127.0.93.4", config=tags_file, extra_args=args) as s:
        c = Consumer(s)
        try:
            c.open_ok(c.request("Fixed", ot_rpi_us=20_000, mult=0))  # 80 ms, no heartbeat sent
            c.tcp.sock.settimeout(5)
            assert c.tcp.sock.recv(100) == b""  # the simulator closed our TCP session
        finally:
            c.close()
        st = s.control.status()
        assert st["target"]["timeouts"] == 1 and st["sessions"] == 0
