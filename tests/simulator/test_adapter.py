"""The consumer machine against the target role with a generic adapter (acquisition/adapter.py,
acquisition/target.py), both sans-IO: the three connection types, sizes learned from 0x0109 and
0x0127/0x0128 replies, run/idle both ways, listen-only refused without an owner, ownership
conflicts, configuration data, and the exclusive owner's output image reaching the device."""

from __future__ import annotations

import random

import pytest
from pyconpro.acquisition import class1
from pyconpro.acquisition.adapter import default_adapter
from pyconpro.acquisition.assembly import AssemblySpec, ConnectionKind, parse_layout
from pyconpro.acquisition.connection import (
    ConnEvent,
    ConsumerConnection,
    Listen,
    SendForwardClose,
    SendForwardOpen,
    SendHeartbeat,
    State,
)
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.originator import ConsumerParams, Originator
from pyconpro.acquisition.status import ExtendedStatus
from pyconpro.acquisition.target import ProducerTarget, SendDatagram
from pyconpro.acquisition.target_options import TargetOptions

from tests.simulator.test_target import FakeStore

PEER = "127.0.0.1"
T0 = 100.0
EO, IO, LO = (ConnectionKind.EXCLUSIVE_OWNER, ConnectionKind.INPUT_ONLY,
              ConnectionKind.LISTEN_ONLY)
POINTS = {EO: 150, IO: 152, LO: 153}


def state(c: ConsumerConnection) -> State:
    """Read afresh (mypy keeps ``c.state`` narrowed across calls)."""
    return c.state


class Loop:
    """Consumers and the target wired together in memory (Forward_Opens answered at once,
    heartbeats delivered to the target)."""

    def __init__(self, **adapter_kw: bool) -> None:
        opts = TargetOptions(initial_watchdog_s=1.0, **adapter_kw.pop("options", {}))  # type: ignore[arg-type]
        self.adapter = default_adapter(**adapter_kw)
        self.target = ProducerTarget(FakeStore(), opts, adapter=self.adapter)
        self.rng = random.Random(3)
        self.events: list[ConnEvent] = []
        self.listens: list[Listen] = []

    def consumer(self, kind: ConnectionKind, name: str = "dev", **kw: object
                 ) -> ConsumerConnection:
        spec = AssemblySpec(kind, input=100, output=POINTS[kind], config=151, **kw)  # type: ignore[arg-type]
        params = ConsumerParams(plc="io", tag=name, rpi_us=10_000, slot=None, assembly=spec)
        return ConsumerConnection(params, Originator(self.rng))

    def pump(self, c: ConsumerConnection, now: float) -> None:
        for _ in range(10):
            outs = c.take_outputs()
            if not outs:
                return
            for o in outs:
                if isinstance(o, SendForwardOpen):
                    reply, items = self.target.forward_open(o.request, PEER, 1, now)
                    c.on_forward_open_reply(now, o.request, reply, items)
                elif isinstance(o, SendHeartbeat):
                    self.target.on_datagram(o.datagram, PEER, now)
                elif isinstance(o, ConnEvent):
                    self.events.append(o)
                elif isinstance(o, Listen):
                    self.listens.append(o)

    def start(self, c: ConsumerConnection, now: float = T0) -> ConsumerConnection:
        c.start(now)
        self.pump(c, now)
        return c


@pytest.mark.parametrize("kind", [EO, IO])
def test_sizes_are_learned_from_0109_then_the_connection_runs(kind: ConnectionKind) -> None:
    loop = Loop()
    c = loop.start(loop.consumer(kind))
    assert c.state is State.RUNNING, [e.message for e in loop.events]
    assert c.tag_bytes == 32 and c.ot_bytes == (32 if kind is EO else 0)
    rejects = [e for e in loop.events if e.kind == "reject"]
    assert [e.cip_extended for e in rejects] == [0x0109] * (2 if kind is EO else 1)
    assert loop.listens == [Listen(c.granted.to_id, 32)]  # type: ignore[union-attr]
    assert "device wants 32 data bytes" in rejects[0].message


def test_sizes_from_the_cip_pair_0127_0128() -> None:
    loop = Loop(options={"size_error": ExtendedStatus.INVALID_TO_SIZE})  # type: ignore[arg-type]
    c = loop.start(loop.consumer(EO))
    assert c.state is State.RUNNING
    assert [e.cip_extended for e in loop.events if e.kind == "reject"] == [0x0127, 0x0128]


def test_a_given_size_the_device_refuses_fails_with_the_key_to_fix() -> None:
    loop = Loop()
    c = loop.start(loop.consumer(IO, input_size=16))
    assert c.state is State.FAILED
    assert "input_size = 32" in (c.failure or "") and "Studio" not in (c.failure or "")


def test_run_idle_header_on_t_to_o_counts_in_sizes_and_data() -> None:
    loop = Loop(to_run_idle=True)
    c = loop.start(loop.consumer(IO, to_run_idle=True))
    assert c.state is State.RUNNING and c.tag_bytes == 32
    assert loop.listens[-1].data_size == 36  # the worker strips the 4-byte header
    loop.target.on_timer(T0 + 0.02)
    sent = [o for o in loop.target.take_outputs() if isinstance(o, SendDatagram)]
    d = class1.Class1Datagram.decode(sent[0].data, run_idle_header=True)
    assert d.run_idle == 1 and len(d.data) == 32
    # The originator without the header setting is told the size with the header counted.
    loop2 = Loop(to_run_idle=True)
    c2 = loop2.start(loop2.consumer(IO))
    assert c2.state is State.RUNNING and c2.tag_bytes == 36  # taken as data: documented


def test_listen_only_is_refused_without_an_owner_then_opens_after_one() -> None:
    loop = Loop()
    lo = loop.start(loop.consumer(LO, "listen", input_size=32))
    assert lo.state is State.BACKOFF
    refusal = [e for e in loop.events if e.kind == "reject"][-1]
    assert refusal.cip_extended == 0x0119 and "listen-only" in refusal.message
    io = loop.start(loop.consumer(IO, "input", input_size=32))
    assert io.state is State.RUNNING
    now = lo.next_deadline() or 0.0
    lo.on_timer(now)
    loop.pump(lo, now)
    assert state(lo) is State.RUNNING
    # Closing the last non-listen-only connection closes the listen-only one at the device.
    io.stop(now)
    for o in io.take_outputs():
        if isinstance(o, SendForwardClose):
            loop.target.forward_close(o.request, PEER, now)
    assert loop.target.connections() == []


def test_second_exclusive_owner_is_an_ownership_conflict() -> None:
    loop = Loop()
    first = loop.start(loop.consumer(EO, "a", input_size=32, output_size=32))
    second = loop.start(loop.consumer(EO, "b", input_size=32, output_size=32))
    assert first.state is State.RUNNING and second.state is State.BACKOFF
    last = [e for e in loop.events if e.kind == "reject"][-1]
    assert last.cip_extended == 0x0106 and "owns this output assembly" in last.message


def test_output_image_reaches_the_device_in_run_mode_zeros_in_idle_before() -> None:
    loop = Loop()
    c = loop.start(loop.consumer(EO, input_size=32, output_size=32))
    out = loop.adapter.assemblies[150]
    assert out.run_idle == 0 and bytes(out.data) == bytes(32)  # first datagram: idle, zeros
    assert c.snapshot()["assembly"]["output"].startswith("not fed")  # type: ignore[index]
    image = bytes(range(32))
    c.set_output(T0 + 0.001, image)
    now = c.next_deadline() or 0.0
    c.on_timer(now)
    loop.pump(c, now)
    assert out.run_idle == 1 and bytes(out.data) == image
    assert c.snapshot()["assembly"]["output"] == "fed"  # type: ignore[index]
    c.set_output(now, b"short")
    assert c.counters.outputs_refused == 1
    assert any("refused" in e.message for e in c.take_outputs() if isinstance(e, ConnEvent))


def test_configuration_data_of_the_wrong_size_fails_with_an_adapter_hint() -> None:
    loop = Loop()
    c = loop.start(loop.consumer(IO, input_size=32, config_data=b"\x01\x02"))
    assert c.state is State.FAILED
    assert "configuration" in (c.failure or "") and "Studio" not in (c.failure or "")
    ok = loop.start(loop.consumer(IO, "ok", input_size=32, config_data=bytes(range(10))))
    assert ok.state is State.RUNNING
    assert bytes(loop.adapter.assemblies[151].data) == bytes(range(10))
    other = loop.start(loop.consumer(IO, "other", input_size=32, config_data=bytes(10)))
    assert [e for e in loop.events if e.kind == "reject"][-1].cip_extended == 0x0106
    assert other.state is State.BACKOFF


def test_unknown_points_never_mention_studio_5000() -> None:
    loop = Loop()
    spec = AssemblySpec(IO, input=100, output=199, config=151, input_size=32)
    c = ConsumerConnection(ConsumerParams(plc="io", tag="x", rpi_us=10_000, slot=None,
                                          assembly=spec), Originator(loop.rng))
    loop.start(c)
    assert c.state is State.FAILED
    assert "EDS" in (c.failure or "") and "Studio" not in (c.failure or "")


def test_declared_layout_is_resized_when_the_size_is_learned() -> None:
    loop = Loop()
    layout = parse_layout("dev", [{"name": "count", "type": "DINT"}])
    spec = AssemblySpec(IO, input=100, output=152, config=151)
    c = ConsumerConnection(ConsumerParams(plc="io", tag="x", rpi_us=10_000, slot=None,
                                          assembly=spec, tag_type=layout), Originator(loop.rng))
    loop.start(c)
    assert c.state is State.RUNNING and c.tag_type is not None
    loop.adapter.tick(T0)
    loop.adapter.tick(T0 + 0.35)
    assert compile_decoder(c.tag_type)(loop.adapter.image(100)) == {"count": 3}


def _owner_with_fields(loop: Loop, fields: list[dict[str, object]]) -> ConsumerConnection:
    spec = AssemblySpec(EO, input=100, output=150, config=151)  # both sizes learned
    params = ConsumerParams(plc="io", tag="dev", rpi_us=10_000, slot=None, assembly=spec,
                            output_layout=parse_layout("dev", fields, key="output_layout"))
    return ConsumerConnection(params, Originator(loop.rng))


def test_output_fields_wait_for_the_size_then_reach_the_device() -> None:
    loop = Loop()
    c = _owner_with_fields(loop, [{"name": "speed", "type": "INT"},
                                  {"name": "run", "type": "BOOL"}])
    with pytest.raises(UsageError, match="output size is not known yet.*set output_size"):
        c.set_output(T0, {"speed": 5})
    assert c.counters.outputs_refused == 1
    loop.start(c)
    assert c.state is State.RUNNING and c.ot_bytes == 32
    c.set_output(T0 + 0.001, {"speed": 1200, "run": True})
    now = c.next_deadline() or 0.0
    c.on_timer(now)
    loop.pump(c, now)
    out = loop.adapter.assemblies[150]
    assert out.run_idle == 1 and bytes(out.data) == bytes.fromhex("b00401") + bytes(29)
    with pytest.raises(UsageError, match="io/dev: output field 'speed' \\(INT\\)"):
        c.set_output(now, {"speed": 1 << 20})
    assert any("output field 'speed'" in e.message and "still sending the previous image"
               in e.message for e in c.take_outputs() if isinstance(e, ConnEvent))
    with pytest.raises(UsageError, match="only an exclusive-owner"):
        loop.consumer(IO, "x").set_output(now, {"speed": 1})


def test_output_fields_larger_than_the_learned_output_size_fail_the_consumer() -> None:
    loop = Loop()
    c = loop.start(_owner_with_fields(loop, [{"name": "a", "type": "LINT[5]"}]))
    assert c.state is State.FAILED
    assert "32 output bytes but the declared output_layout needs 40" in (c.failure or "")
