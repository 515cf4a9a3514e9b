"""The I/O worker against the simulator, as real processes on loopback.

Simulators listen on unusual 127.61.x.y addresses with every port chosen by the OS; the worker
binds its own 127.61.x.1 address with UDP port 0, so concurrent test runs never collide. The
worker publishes on tcp://127.0.0.1:<free port>; tests subscribe and check topics, decoded values,
sequence counts, events and the simulator's own connection table.
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
from pyconpro.acquisition import wire
from pyconpro.acquisition.control import parse_type
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.simulator.tags import default_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator

from tests.workers.worker_process import WorkerProcess, start_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WORKER = "127.61.4.1"
SIM_A = "127.61.4.2"
SIM_B = "127.61.4.3"


def consumer(sim: SimulatorProcess, plc: str, tag: str, rpi_ms: float = 20, **kw: object) -> str:
    fields = {"plc": plc, "address": sim.address, "port": sim.tcp_port,
              "udp_port": sim.udp_port, "tag": tag, "rpi_ms": rpi_ms, **kw}
    return ",".join(f"{k}={v}" for k, v in fields.items())


@pytest.fixture
def sim_a() -> Iterator[SimulatorProcess]:
    with start_simulator(SIM_A, extra_args=["--seq16", "every", "--initial-watchdog", "0.5",
                                            "--seed", "1"]) as sim:
        yield sim


@pytest.fixture
def sim_b() -> Iterator[SimulatorProcess]:
    with start_simulator(SIM_B, extra_args=["--seq16", "every", "--initial-watchdog", "0.5",
                                            "--seed", "2"]) as sim:
        yield sim


@pytest.fixture
def sim_steady() -> Iterator[SimulatorProcess]:
    """Like ``sim_a`` but without a longer first watchdog period: the simulator's O->T
    watchdog is API x multiplier from the Forward_Open on."""
    with start_simulator(SIM_A, extra_args=["--seq16", "every", "--initial-watchdog", "0",
                                            "--seed", "1"]) as sim:
        yield sim


def wait_running(w: WorkerProcess, keys: list[str], timeout: float = 10.0) -> None:
    for key in keys:
        w.wait_state(key, "RUNNING", timeout)


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, w: WorkerProcess | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if w is not None:
            w.poll(0.05)
        else:
            time.sleep(0.05)
    raise AssertionError(
        f"{what} within {timeout:g} s" + (f"; worker log:\n{w.log_text()[-4000:]}" if w else "")
    )


def sample_of(tag: str) -> Callable[[wire.Message], bool]:
    return lambda m: isinstance(m, wire.Sample) and m.tag == tag


# --------------------------------------------------------------------------- data path


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_several_tags_from_two_plcs_arrive_decoded_at_the_rpi(
    sim_a: SimulatorProcess, sim_b: SimulatorProcess
) -> None:
    specs = {
        ("a", "Counter"): (20, "DINT"),
        ("a", "Array10"): (40, "DINT[10]"),
        ("a", "Motor"): (20, "MotorData"),
        ("b", "Sine"): (20, "REAL"),
        ("b", "Counter"): (30, "DINT"),
    }
    sims = {"a": sim_a, "b": sim_b}
    # multiplier 32: a worker starved for a while on a busy machine keeps its connections
    # (the default 4 x RPI would let the simulator time them out, and the count below fail).
    cons = [consumer(sims[plc], plc, tag, rpi, multiplier=32)
            for (plc, tag), (rpi, _) in specs.items()]  # fmt: skip
    with start_worker(WORKER, cons) as w:
        wait_running(w, [f"{plc}/{tag}" for plc, tag in specs])
        w.messages.clear()
        w.collect(1.5)
        store = default_store()
        for (plc, tag), (rpi, type_name) in specs.items():
            samples = w.samples(plc, tag)
            assert samples, f"no samples for {plc}/{tag}"
            topic = wire.topic_for_sample(plc, tag)
            assert all(s.topic == topic for s in samples)
            # arrive at the RPI (loopback: within 40 % on the median interval)
            intervals = [(b.t_mono_ns - a.t_mono_ns) / 1e6 for a, b in itertools.pairwise(samples)]
            assert statistics.median(intervals) == pytest.approx(rpi, rel=0.4), (plc, tag)
            assert len(samples) >= 0.5 * 1500 / rpi
            # CIP sequence count +1 per datagram (--seq16 every), bus sequence +1 per message
            assert all(
                (b.cip_seq - a.cip_seq) & 0xFFFF == 1 for a, b in itertools.pairwise(samples)
            ), (plc, tag)
            assert all(b.seq == a.seq + 1 for a, b in itertools.pairwise(samples))
            assert all(s.gap == 0 for s in samples)
            # decoded by the tag's type, as the controller describes it
            sim_tag = store.find(tag)
            assert sim_tag is not None
            decode = compile_decoder(sim_tag.type)
            assert {s.type_name for s in samples} == {type_name}
            for s in samples:
                assert len(s.raw) == sim_tag.size()
                assert s.value == decode(s.raw)
        counters = [s.value for s in w.samples("a", "Counter")]
        ints = [c for c in counters if isinstance(c, int)]
        assert ints == counters  # DINT values
        assert ints == sorted(ints) and ints[-1] > ints[0]
        assert all(
            isinstance(s.value, list) and len(s.value) == 10 for s in w.samples("a", "Array10")
        )
        motor = w.samples("a", "Motor")[-1].value
        assert isinstance(motor, dict) and {"Speed", "Pos"} <= set(motor)
        assert all(isinstance(s.value, float) for s in w.samples("b", "Sine"))
        assert len(sim_a.control.connections()) == 3 and len(sim_b.control.connections()) == 2


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_given_type_skips_discovery_and_decodes(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim_a, "a", "Array10", 20, type="DINT[10]")]) as w:
        msg = w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "a sample")
        assert isinstance(msg, wire.Sample)
        assert msg.value == compile_decoder(parse_type("DINT[10]"))(msg.raw)
        assert not [e for e in w.events("Array10") if e.state_to == "RESOLVING"]


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_a_correct_given_size_still_learns_the_type_and_decodes(sim_a: SimulatorProcess) -> None:
    # `size` written "to be safe" on a DINT and on a UDT: the type is learned as without it,
    # checked against the size, and the samples are decoded (they carried raw bytes and a nil
    # value when a given size skipped the type)
    store = default_store()
    tags = {tag: store.find(tag) for tag in ("Counter", "Motor")}
    cons = [consumer(sim_a, "a", tag, 20, size=t.size())
            for tag, t in tags.items() if t is not None]  # fmt: skip
    assert len(cons) == 2
    with start_worker(WORKER, cons) as w:
        wait_running(w, ["a/Counter", "a/Motor"])
        for tag, sim_tag in tags.items():
            assert sim_tag is not None
            msg = w.wait_for(sample_of(tag), 10, f"a sample of {tag}")
            assert isinstance(msg, wire.Sample) and len(msg.raw) == sim_tag.size()
            assert msg.type_name == sim_tag.type.name
            assert msg.value is not None and msg.value == compile_decoder(sim_tag.type)(msg.raw)
            learned = next(e for e in w.events(tag) if e.state_to == "OPENING")
            assert learned.state_from == "RESOLVING" and learned.kind == "state"
            assert learned.message.startswith(f"size learned: {sim_tag.size()} bytes")
        assert isinstance(w.samples("a", "Counter")[-1].value, int)
        motor = w.samples("a", "Motor")[-1].value
        assert isinstance(motor, dict) and {"Speed", "Pos"} <= set(motor)
        assert not w.events(kind="reject")  # never a size the controller refused
        status = {c["tag"]: c for c in w.control("status")["consumers"]}
        assert status["Counter"]["type"] == "DINT" and status["Counter"]["learned"] is True


def test_a_wrong_given_size_is_replaced_by_the_tags_type_size(sim_a: SimulatorProcess) -> None:
    # size = 6 on a REAL (the seed's datasize, which counted the sequence count): the worker
    # learns REAL (4 bytes) before it opens, adopts 4 and says which setting to fix
    with start_worker(WORKER, [consumer(sim_a, "a", "Sine", 20, size=6)]) as w:
        w.wait_state("a/Sine", "RUNNING", 10)
        msg = w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "a sample")
        assert isinstance(msg, wire.Sample) and msg.type_name == "REAL"
        assert len(msg.raw) == 4 and isinstance(msg.value, float)  # decoded by the learned type
        adopted = next(e for e in w.events("Sine") if e.state_to == "OPENING")
        assert (adopted.state_from, adopted.kind) == ("RESOLVING", "error")
        assert "the given size, 6 bytes, is not the size of 'Sine'" in adopted.message
        assert "adopting 4. Set size = 4" in adopted.message
        assert not w.events("Sine", "reject")  # 6 bytes were never asked for
        assert not [e for e in w.events("Sine") if e.state_to == "FAILED"]


def test_where_the_type_cannot_be_learned_a_given_size_connects_with_raw_bytes() -> None:
    # a controller whose tag listing never ends: the worker gives it up at its limits, and the
    # given size opens the connection without the type (samples: raw bytes, nil value)
    with start_simulator(SIM_A, extra_args=["--endless-listing", "new"]) as sim, \
            start_worker(WORKER, [consumer(sim, "a", "Counter", 20, size=4)]) as w:
        w.wait_state("a/Counter", "RUNNING", 90)
        opened = next(e for e in w.events("Counter") if e.state_to == "OPENING")
        assert (opened.state_from, opened.kind) == ("RESOLVING", "error")
        assert "passed the limit" in opened.message
        assert opened.message.endswith("opening with the given size, 4 bytes, without the"
                                       " type: samples carry the raw bytes and no value")
        msg = w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "a sample")
        assert isinstance(msg, wire.Sample) and len(msg.raw) == 4
        assert msg.value is None and msg.type_name is None


def test_stats_are_published(sim_a: SimulatorProcess, receive_path: str) -> None:
    with start_worker(
        WORKER, [consumer(sim_a, "a", "Counter", 20)], extra_args=["--stats-interval", "0.3"]
    ) as w:
        wait_running(w, ["a/Counter"])
        st = w.wait_for(
            lambda m: isinstance(m, wire.Stats) and m.counters["samples"] > 0,
            5,
            "stats with samples",
        )
        assert isinstance(st, wire.Stats) and st.worker == w.info["worker"]
        assert st.counters["state_running"] == 1 and st.counters["sessions_up"] == 1
        # Which receive path runs, and how late this interval's heartbeats went out.
        assert st.counters["fastpath"] == (receive_path == "compiled")
        beat = w.wait_for(lambda m: isinstance(m, wire.Stats) and m.counters["heartbeats"] > 20
                          and m.counters["heartbeat_late_max_ms"] > 0, 10, "stats of heartbeats")
        assert isinstance(beat, wire.Stats)
        c = beat.counters
        assert 0 <= c["heartbeat_late_p50_ms"] <= c["heartbeat_late_p99_ms"]
        assert c["heartbeat_late_p99_ms"] <= c["heartbeat_late_max_ms"]
        assert c["heartbeats_skipped"] >= 0 and c["heartbeat_send_errors"] == 0
        status = w.control("status")
        assert status["receive_path"] == receive_path
        assert set(status["heartbeat_lateness"]) == {"p50_ms", "p99_ms", "max_ms"}


# --------------------------------------------------------------------------- stop


def test_stop_sends_forward_close_and_frees_the_slot(sim_a: SimulatorProcess) -> None:
    cons = [consumer(sim_a, "a", "Exclusive", 20), consumer(sim_a, "a", "Counter", 20)]
    with start_worker(WORKER, cons, via_control=False) as w:
        wait_running(w, ["a/Exclusive", "a/Counter"])
        assert len(sim_a.control.connections()) == 2
        assert w.stop() == 0
        assert sim_a.control.connections() == []  # immediately, not after a watchdog
        assert "Forward_Close accepted" in w.log_text()
    # Exclusive has Max Consumers = 1: a new run gets it at once, no 0x031E
    with start_worker(WORKER, cons[:1]) as w2:
        w2.wait_state("a/Exclusive", "RUNNING", 5)
        assert not w2.events("Exclusive", "reject")


def test_sigint_also_closes(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 20)], via_control=False) as w:
        wait_running(w, ["a/Counter"])
        w.proc.send_signal(signal.SIGINT)
        assert w.proc.wait(10) == 0
        assert sim_a.control.connections() == []


# --------------------------------------------------------------------------- faults


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_heartbeat_loss_in_the_simulators_view_is_recovered(sim_steady: SimulatorProcess) -> None:
    # O->T 50 ms x4 = 0.2 s at the simulator from the first period on (--initial-watchdog 0);
    # the worker is frozen until the simulator has dropped it
    sim_a = sim_steady
    c = consumer(sim_a, "a", "Counter", 20, ot_rpi_ms=50, multiplier=4)
    with start_worker(WORKER, [c]) as w:
        wait_running(w, ["a/Counter"])
        os.kill(w.pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: sim_a.control.connections() == [],
                5,
                "simulator dropped the silent consumer",
            )
        finally:
            os.kill(w.pid, signal.SIGCONT)
        w.wait_for(
            lambda m: isinstance(m, wire.Event) and m.kind == "timeout", 5, "a timeout event"
        )
        w.wait_for(lambda m: isinstance(m, wire.Event) and m.state_to == "RUNNING", 10, "reopened")
        w.wait_for(lambda m: isinstance(m, wire.Sample), 5, "samples again")
        assert len(sim_a.control.connections()) == 1


def test_simulator_restart_is_recovered(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 20, multiplier=4)]) as w:
        wait_running(w, ["a/Counter"])
        sim_a.control.restart()
        ev = w.wait_for(
            lambda m: isinstance(m, wire.Event) and m.kind == "timeout", 5, "a timeout event"
        )
        assert isinstance(ev, wire.Event)
        assert ev.state_from == "RUNNING" and ev.state_to == "BACKOFF"
        w.wait_for(lambda m: isinstance(m, wire.Event) and m.state_to == "RUNNING", 10, "reopened")
        first = w.wait_for(lambda m: isinstance(m, wire.Sample), 5, "samples again")
        assert isinstance(first, wire.Sample)
        assert len(sim_a.control.connections()) == 1


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_stop_producing_times_out_closes_and_reopens(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim_a, "a", "Exclusive", 20, multiplier=4)]) as w:
        wait_running(w, ["a/Exclusive"])
        sim_a.control.faults(stop_producing=True)
        w.wait_for(lambda m: isinstance(m, wire.Event) and m.kind == "timeout", 5, "timeout")
        sim_a.control.clear_faults()
        # the best-effort Forward_Close freed the Max Consumers = 1 slot: no 0x031E wait
        w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "samples again")
        assert len(sim_a.control.connections()) == 1


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_dropped_packets_are_counted_as_gaps(sim_a: SimulatorProcess) -> None:
    # watchdog 640 ms: a process starved on a busy machine must not turn this into a timeout
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 10, multiplier=64)]) as w:
        wait_running(w, ["a/Counter"])
        sim_a.control.faults(drop=0.3)
        w.messages.clear()
        w.collect(1.5)
        sim_a.control.clear_faults()
        samples = w.samples("a", "Counter")
        gaps = w.events("Counter", "gap")
        assert samples and gaps
        assert samples[-1].gap > 0
        jumps = sum(((b.cip_seq - a.cip_seq) & 0xFFFF) - 1 for a, b in itertools.pairwise(samples))
        assert samples[-1].gap - samples[0].gap == jumps
        assert w.state_of("a/Counter") == "RUNNING"


@pytest.mark.usefixtures("receive_path")  # on both receive paths
def test_duplicates_and_reordering_are_dropped_as_stale(sim_a: SimulatorProcess) -> None:
    # watchdog 640 ms: a process starved on a busy machine must not turn this into a timeout
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 10, multiplier=64)]) as w:
        wait_running(w, ["a/Counter"])
        sim_a.control.faults(duplicate=0.3, reorder=0.2)
        w.messages.clear()
        w.collect(1.5)
        sim_a.control.clear_faults()
        samples = w.samples("a", "Counter")
        assert all(
            ((b.cip_seq - a.cip_seq) & 0xFFFF) < 0x8000 and b.cip_seq != a.cip_seq
            for a, b in itertools.pairwise(samples)
        )
        assert w.control("status")["counters"]["drop_stale"] > 0


def test_tcp_reset_is_reported_and_the_session_comes_back(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 20)]) as w:
        wait_running(w, ["a/Counter"])
        assert sim_a.control.reset_tcp() >= 1
        ev = w.wait_for(
            lambda m: isinstance(m, wire.Event) and m.tag == "" and m.kind == "error",
            5,
            "a PLC-wide session event",
        )
        assert isinstance(ev, wire.Event)
        assert "session" in ev.message and ev.topic == b"event/a//"
        # class-1 data does not depend on the TCP session (protocol.md 2.4)
        assert w.state_of("a/Counter") == "RUNNING"
        wait_until(lambda: w.control("status")["plcs"][0]["up"], 10, "session re-registered", w)
        assert w.control("status")["plcs"][0]["sessions_opened"] == 2


def test_refused_register_session_backs_off_and_recovers(sim_a: SimulatorProcess) -> None:
    sim_a.control.faults(refuse_register=True)
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 20)]) as w:
        ev = w.wait_for(
            lambda m: isinstance(m, wire.Event) and m.tag == "" and m.kind == "error",
            5,
            "a PLC-wide session event",
        )
        assert isinstance(ev, wire.Event)
        assert "RegisterSession refused" in ev.message
        sim_a.control.clear_faults()
        w.wait_state("a/Counter", "RUNNING", 15)


# --------------------------------------------------------------------------- rejects


def test_rejects_are_reported_with_status(sim_a: SimulatorProcess) -> None:
    cons = [
        consumer(sim_a, "a", "Setpoint", 20, type="REAL"),  # exists, not produced
        consumer(sim_a, "a", "Counter", 20, type="DINT[2]", alias="TypeWrong"),
        consumer(sim_a, "a", "NoSuchTag", 20),  # discovery cannot find it
        consumer(sim_a, "a", "Walk", 20, type="REAL"),  # produced for multicast consumers only
    ]
    with start_worker(WORKER, cons) as w:
        for key in ("a/Setpoint", "a/TypeWrong", "a/NoSuchTag", "a/Walk"):
            w.wait_state(key, "FAILED", 10)
        w.collect(0.2)
        rej = [e for e in w.events("Setpoint", "reject") if e.state_to == "FAILED"]
        assert rej and rej[0].cip_general == 1 and rej[0].cip_extended == 0x031F
        assert "Studio 5000" in rej[0].message and "Setpoint" in rej[0].message
        mism = next(e for e in w.events("TypeWrong", "reject") if e.state_to == "FAILED")
        assert "type mismatch" in mism.message and "4" in mism.message and "8" in mism.message
        nf = next(e for e in w.events("NoSuchTag") if e.state_to == "FAILED")
        assert "not in the controller's tag list" in nf.message
        uni = next(e for e in w.events("Walk", "reject") if e.state_to == "FAILED")
        assert uni.cip_general == 1 and uni.cip_extended == 0x0124
        assert "Allow Unicast Consumer Connections" in uni.message
        assert 'transport = "multicast"' in uni.message
        failures = {c["key"]: c["failure"] for c in w.control("list")["consumers"]}
        assert all(failures.values())
        assert sim_a.control.connections() == []


def test_out_of_consumers_waits_then_takes_the_freed_slot(sim_a: SimulatorProcess) -> None:
    cons = [
        consumer(sim_a, "a", "Exclusive", 20, ot_rpi_ms=20, multiplier=4),
        consumer(sim_a, "a", "Exclusive", 20, ot_rpi_ms=20, multiplier=4, alias="Second"),
    ]
    with start_worker(WORKER, cons) as w:
        w.wait_for(
            lambda m: isinstance(m, wire.Event) and m.kind == "reject" and m.cip_extended == 0x031E,
            10,
            "a 0x031E reject",
        )
        keys = {c["key"]: c["state"] for c in w.control("list")["consumers"]}
        assert sorted(keys.values()) == ["BACKOFF", "RUNNING"]
        running = next(k for k, s in keys.items() if s == "RUNNING")
        other = next(k for k, s in keys.items() if s != "RUNNING")
        assert w.control("remove", key=running)["ok"]
        w.wait_state(other, "RUNNING", 15)
        assert len(sim_a.control.connections()) == 1


def test_producer_default_rpi_is_adopted(sim_a: SimulatorProcess) -> None:
    # "Limited" offers a default RPI of 20 ms outside the range asked for here
    # (heartbeats at 50 ms: the test is about the T->O RPI, and a 0.5 ms O->T RPI would let a
    # busy machine time the connection out at the simulator between two looks)
    with start_worker(WORKER, [consumer(sim_a, "a", "Limited", 0.5, ot_rpi_ms=50)]) as w:
        w.wait_state("a/Limited", "RUNNING", 10)
        w.collect(0.1)
        assert [e for e in w.events("Limited", "reject") if e.cip_extended == 0x0112]
        # the module's simulator may still be closing other tests' connections: pick ours
        deadline = time.monotonic() + 10
        while not (conns := [c for c in sim_a.control.connections() if c["tag"] == "Limited"]):
            assert time.monotonic() < deadline, "the simulator lists no Limited connection"
            w.poll(0.05)
        [conn] = conns
        assert conn["to_api_us"] == 20_000


# --------------------------------------------------------------------------- control socket


def test_control_socket_add_list_status_remove_and_errors(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, []) as w:
        assert w.control("list") == {"ok": True, "consumers": []}
        spec = {
            "plc": "a",
            "address": sim_a.address,
            "port": sim_a.tcp_port,
            "udp_port": sim_a.udp_port,
            "tag": "Counter",
            "rpi_ms": 20,
        }
        r = w.control("add", consumer=spec)
        assert r["ok"] and r["key"] == "a/Counter"
        w.wait_for(lambda m: isinstance(m, wire.Sample), 10, "a sample")
        dup = w.control("add", consumer=spec)
        assert not dup["ok"] and "exists already" in dup["error"]
        status = w.control("status")
        assert status["originator_serial"] == w.info["originator_serial"]
        [c] = status["consumers"]
        assert c["state"] == "RUNNING" and c["samples"] > 0
        # The flight recorder (hex dumps) only on request: the periodic status stays small.
        assert "recorder" not in c
        [full] = w.control("status", recorder=True)["consumers"]
        assert any("-> heartbeat" in line for line in full["recorder"])
        assert any("<- T->O" in line for line in full["recorder"])
        one = w.control("recorder", key="a/Counter")
        assert one["ok"] and one["state"] == "RUNNING"
        assert any("<- T->O" in line for line in one["recorder"])
        assert w.control("recorder", plc="a", tag="Counter")["ok"]
        assert "'list' shows the keys" in w.control("recorder", key="a/Nope")["error"]
        bad = w.control("add", consumer={"address": "nowhere", "tag": "X"})
        assert not bad["ok"] and "IPv4" in bad["error"]
        bad = w.control("add", consumer={"address": "1.2.3.4", "tag": "X", "colour": 1})
        assert not bad["ok"] and "colour" in bad["error"]
        assert "unknown op" in w.control("frobnicate")["error"]
        assert "MessagePack" in w.raw_control(b"\xc1")["error"]
        assert not w.raw_control(msgpack.packb([1, 2]))["ok"]
        assert "no consumer" in w.control("remove", key="a/Nope")["error"]
        assert w.control("remove", plc="a", tag="Counter")["ok"]
        wait_until(lambda: w.control("list")["consumers"] == [], 5, "consumer removed", w)
        assert sim_a.control.connections() == []
        assert w.control("stop")["ok"]
        assert w.proc.wait(10) == 0


def test_a_refused_add_leaves_the_key_free_for_a_correct_add(sim_a: SimulatorProcess) -> None:
    """Values the config file refuses are refused on the control socket too, and a refused add
    leaves nothing behind: no consumer holding the key, no session to the PLC opened for it."""
    with start_worker(WORKER, []) as w:
        good = {"plc": "a", "address": sim_a.address, "port": sim_a.tcp_port,
                "udp_port": sim_a.udp_port, "tag": "Counter", "rpi_ms": 20}
        for bad, problem in (
            ({"slot": 1.5}, "consumer.slot: slot must be an integer, not a number"),
            ({"route": [[1, 0]] * 17}, "consumer.route: route has 17 hops"),
            ({"route": [[1, "x" * 600]]}, "neither a slot number nor an IPv4 address"),
            ({"plc": "a/b"}, "consumer.plc: PLC name 'a/b' cannot be a topic segment"),
            ({"tag": "C" * 100_000}, "is 100000 characters long; Logix tag names have at most"),
        ):
            refused = w.control("add", consumer={**good, **bad})
            assert not refused["ok"] and problem in refused["error"], refused
            assert len(refused["error"]) < 1000
        status = w.control("status")
        assert status["consumers"] == [] and status["plcs"] == []
        assert sim_a.control.status()["server"]["tcp_accepted"] == 0
        added = w.control("add", consumer=good)
        assert added["ok"] and added["key"] == "a/Counter", added
        w.wait_state("a/Counter", "RUNNING", 10)
        assert [c["key"] for c in w.control("list")["consumers"]] == ["a/Counter"]


# --------------------------------------------------------------------------- configuration


def test_worker_takes_its_plcs_from_the_pipeline_config(tmp_path: Path) -> None:
    # The config names no TCP/UDP ports for PLCs: the simulator uses the standard ones on its
    # own address; the worker uses UDP 2222 on its own address (no collision on loopback).
    sim_addr, local = "127.61.7.2", "127.61.7.1"
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f"""
[worker]
udp_port = 2222
stats_interval_s = 0.5

[[plc]]
name = "cfgplc"
address = "{sim_addr}"
local_address = "{local}"

  [[plc.tag]]
  name = "Counter"
  rpi_ms = 20

  [[plc.tag]]
  name = "Sine"
  alias = "wave"
  rpi_ms = 20
""")
    with (
        start_simulator(sim_addr, tcp_port=44818, udp_port=2222) as sim,
        start_worker(local, [], udp_port=2222, extra_args=["--config", str(cfg)]) as w,
    ):
        assert sim.tcp_port == 44818
        w.wait_state("cfgplc/Counter", "RUNNING", 10)
        w.wait_state("cfgplc/wave", "RUNNING", 10)
        msg = w.wait_for(lambda m: isinstance(m, wire.Sample) and m.tag == "wave", 5, "wave")
        assert isinstance(msg, wire.Sample) and msg.type_name == "REAL"
        assert w.info["udp_port"] == 2222


def test_stop_right_after_session_loss_still_closes(sim_a: SimulatorProcess) -> None:
    with start_worker(WORKER, [consumer(sim_a, "a", "Counter", 20)]) as w:
        wait_running(w, ["a/Counter"])
        sim_a.control.reset_tcp()
        w.wait_for(
            lambda m: isinstance(m, wire.Event) and m.tag == "" and m.kind == "error",
            5,
            "the session loss event",
        )
        assert w.stop() == 0  # inside the reconnect back-off: must reconnect to close
        assert sim_a.control.connections() == []
