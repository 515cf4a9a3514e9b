"""acquisition.produce: the worker as a class-1 target (producing tags a Logix consumes), pure.

Fake clock throughout: encapsulation frames in, replies and datagrams out. The Forward_Open
rules themselves are the target role's (tests/simulator/test_target.py); here: the
encapsulation side, the values fed to the tags, the slot freed by Forward_Close and by a
heartbeat loss, the refusal over max consumers, the explicit requests before an open.
"""

from __future__ import annotations

import struct

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, encap, epath
from pyconpro.acquisition.encap import Command
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.produce import (
    CloseClient,
    ProducedTags,
    ProducerEndpoint,
    ProduceSpec,
    SendTcp,
    produce_topic,
)
from pyconpro.acquisition.status import EncapsulationStatus, ExtendedStatus
from pyconpro.acquisition.target import SendDatagram, TargetEvent, TargetEventKind
from pyconpro.acquisition.target_options import TargetOptions

PEER = "127.0.0.2"
SETPOINTS = ProduceSpec("Setpoints", "Sp", members=(("Speed", "REAL"), ("Run", "BOOL"),
                                                    ("Counts", "DINT[3]")), max_consumers=1)
COUNTER = ProduceSpec("Counter", "DINT", max_consumers=2, rpi_min_us=5_000, rpi_max_us=1_000_000)


def make() -> ProducerEndpoint:
    tags = ProducedTags([SETPOINTS, COUNTER])
    opts = TargetOptions(address="127.0.0.1", netmask="0.0.0.0", initial_watchdog_s=0.0)
    return ProducerEndpoint(tags, opts, tcp_port=44818)


def frame(command: int, data: bytes = b"", session: int = 0) -> bytes:
    return encap.EncapsulationPacket(command, data, session, 0, bytes(8), 0).encode()


def replies(ep: ProducerEndpoint, client: int = 1) -> list[encap.EncapsulationPacket]:
    out = []
    for o in ep.take_outputs():
        if isinstance(o, SendTcp) and o.client == client:
            out.extend(encap.FrameBuffer().feed(o.data))
    return out


def register(ep: ProducerEndpoint, client: int = 1, peer: str = PEER) -> int:
    ep.accepted(client, peer, 0.0)
    ep.receive(client, frame(Command.REGISTER_SESSION, encap.RegisterSessionData().encode()), 0.0)
    (reply,) = replies(ep, client)
    assert reply.status == 0 and reply.session
    return reply.session


def forward_open(tag: str, size: int, *, serial: int, rpi_us: int = 10_000,
                 to_port: int = 2300) -> bytes:
    req = cm.produced_tag_forward_open(
        tag=tag, tag_bytes=size, to_rpi_us=rpi_us, ot_rpi_us=rpi_us, connection_serial=serial,
        vendor_id=0x0F0F, originator_serial=0xCAFE, to_connection_id=0xA000_0000 | serial,
        multicast=False, timeout_multiplier=0, slot=None, key=epath.NO_KEY,
    )
    items = (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("0.0.0.0", to_port)),)
    return encap.send_rr_data(req.encode(), items)


def open_tag(ep: ProducerEndpoint, session: int, tag: str, size: int, *, serial: int,
             client: int = 1, now: float = 0.0, **kw: int) -> tuple[cip.Reply, list[cpf.Item]]:
    ep.receive(client, frame(Command.SEND_RR_DATA, forward_open(tag, size, serial=serial, **kw),
                             session), now)
    (reply,) = replies(ep, client)
    assert reply.status == 0
    send = encap.SendData.decode(reply.data)
    return cip.Reply.decode(send.unconnected()), list(send.items[2:])


Sent = list[tuple[class1.Class1Datagram, tuple[str, int]]]


def datagrams(ep: ProducerEndpoint, now: float) -> Sent:
    ep.on_timer(now)
    return [(class1.Class1Datagram.decode(o.data), o.address) for o in ep.take_outputs()
            if isinstance(o, SendDatagram)]


def heartbeat(ot_id: int, seq: int) -> bytes:
    return class1.Class1Datagram(ot_id, seq, seq & 0xFFFF, b"").encode()


# --------------------------------------------------------------------------- definitions


def test_spec_round_trips_and_lays_out_the_udt_like_logix() -> None:
    assert ProduceSpec.from_dict(SETPOINTS.as_dict()) == SETPOINTS
    tags = ProducedTags([SETPOINTS])
    tag = tags.find("setpoints")
    assert tag is not None and tag.size() == 20  # REAL 4, BOOL in a SINT (+3 pad), DINT[3] 12
    assert tag.value() == {"Speed": 0.0, "Run": False, "Counts": [0, 0, 0]}


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"type": "DUNNO"}, "unknown type"),
        ({"type": "DINT[200]"}, "at most 500"),
        ({"max_consumers": 0}, "max_consumers"),
        ({"rpi_min_us": 10, "rpi_max_us": 5}, "rpi_min at most rpi_max"),
        ({"name": "Program:Main.X"}, "controller-scoped"),
    ],
)
def test_bad_definitions_name_the_tag_and_the_fix(kw: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"name": "T", "type": "DINT", **kw}
    with pytest.raises(UsageError, match=words):
        ProduceSpec(**args)  # type: ignore[arg-type]


def test_topic_is_escaped_like_every_topic() -> None:
    assert produce_topic("Line 2") == b"produce/Line%202/"


# --------------------------------------------------------------------------- encapsulation


def test_list_identity_and_services_need_no_session() -> None:
    ep = make()
    ep.accepted(1, PEER, 0.0)
    ep.receive(1, frame(Command.LIST_IDENTITY) + frame(Command.LIST_SERVICES), 0.0)
    ident, services = replies(ep)
    (item,) = cpf.decode_items(ident.data)
    assert isinstance(item, cpf.IdentityItem) and item.product_name == "pyconpro"
    assert item.sockaddr.port == 44818
    assert services.command == Command.LIST_SERVICES and services.status == 0
    assert ep.udp_request(frame(Command.LIST_IDENTITY), "127.0.0.1") is not None


def test_send_rr_data_without_a_session_is_refused() -> None:
    ep = make()
    ep.accepted(1, PEER, 0.0)
    ep.receive(1, frame(Command.SEND_RR_DATA, forward_open("Counter", 4, serial=1), 0x99), 0.0)
    (reply,) = replies(ep)
    assert reply.status == EncapsulationStatus.INVALID_SESSION_HANDLE and reply.data == b""


def test_unregister_closes_the_client() -> None:
    ep = make()
    session = register(ep)
    ep.receive(1, frame(Command.UNREGISTER_SESSION, b"", session), 0.0)
    assert CloseClient(1) in ep.take_outputs()


def test_identity_and_the_tag_listing_answer_before_the_open() -> None:
    """The explicit requests a consumer may make first (protocol.md 10.7 ⚠️): the Identity
    object, and the Symbol object listing the produced tags, read only."""
    ep = make()
    session = register(ep)
    ident = cip.Request(cip.Service.GET_ATTRIBUTES_ALL,
                        epath.encode_path((epath.class_id(1), epath.instance_id(1))), b"")
    ep.receive(1, frame(Command.SEND_RR_DATA, encap.send_rr_data(ident.encode()), session), 0.0)
    (reply,) = replies(ep)
    answer = cip.Reply.decode(encap.SendData.decode(reply.data).unconnected())
    assert answer.status == 0 and b"pyconpro" in answer.data


# --------------------------------------------------------------------------- class 1


def test_open_produce_the_latest_value_at_the_rpi_and_close() -> None:
    ep = make()
    session = register(ep)
    reply, items = open_tag(ep, session, "Counter", 4, serial=1)
    ok = cm.ForwardOpenSuccess.decode_body(reply.data)
    assert ok.to_api == 10_000
    assert any(isinstance(i, cpf.SockaddrInfo) and i.direction == cpf.ItemId.SOCKADDR_O2T
               for i in items)
    # Nobody fed it: zeros go out, and status says so.
    assert [(d.data, dest) for d, dest in datagrams(ep, 0.010)] == [(bytes(4), (PEER, 2300))]
    assert ep.status(0.01)["tags"][1]["sending"].startswith("zeros")
    ep.set_value("counter", 42, 0.015, "bus")
    (d2, _), = datagrams(ep, 0.020)
    assert struct.unpack("<i", d2.data) == (42,) and d2.connection_id == 0xA000_0001
    assert datagrams(ep, 0.025) == []  # not due: absolute slots of 10 ms
    ep.set_value("Counter", 43, 0.026, "api")
    ep.set_value("Counter", 44, 0.027, "api")
    (d3, _), = datagrams(ep, 0.030)
    assert struct.unpack("<i", d3.data) == (44,)  # the latest value, never a queue
    assert d3.sequence == d2.sequence + 1
    st = ep.status(0.03)["tags"][1]
    assert st["updates"] == 3 and st["source"] == "api" and len(st["consumers"]) == 1
    # Forward_Close frees the slot: production stops.
    close = cm.ForwardCloseRequest(1, 0x0F0F, 0xCAFE, epath.produced_tag_connection_path(
        "Counter", None))
    ep.receive(1, frame(Command.SEND_RR_DATA, encap.send_rr_data(close.encode()), session), 0.031)
    (r,) = replies(ep)
    assert cip.Reply.decode(encap.SendData.decode(r.data).unconnected()).status == 0
    assert ep.connections() == [] and datagrams(ep, 1.0) == []


def test_udt_values_are_encoded_with_the_logix_layout() -> None:
    ep = make()
    session = register(ep)
    open_tag(ep, session, "Setpoints", 20, serial=2)
    ep.set_value("Setpoints", {"Speed": 1.5, "Run": True, "Counts": [1, 2, 3]}, 0.0, "bus")
    (d, _), = datagrams(ep, 0.010)
    assert compile_decoder(ProducedTags([SETPOINTS]).tags()[0].type)(d.data) == {
        "Speed": 1.5, "Run": True, "Counts": [1, 2, 3]}


def test_a_value_that_does_not_fit_keeps_the_previous_one_and_is_counted() -> None:
    ep = make()
    ep.set_value("Counter", 7, 0.0, "bus")
    with pytest.raises(UsageError, match="Counter"):
        ep.set_value("Counter", "seven", 0.1, "bus")
    with pytest.raises(UsageError, match="4"):
        ep.set_value("Counter", b"\0\0", 0.1, "bus")
    with pytest.raises(UsageError, match="no produced tag 'Nope'"):
        ep.set_value("Nope", 1, 0.1, "bus")
    st = ep.status(0.2)["tags"][1]
    assert st["rejected"] == 2 and st["updates"] == 1 and "bus" in st["last_error"]
    tag = ep.tags.find("Counter")
    assert tag is not None and tag.value() == 7


def test_over_max_consumers_is_refused_with_0x031E_until_a_slot_is_freed() -> None:
    ep = make()
    session = register(ep)
    open_tag(ep, session, "Setpoints", 20, serial=1)
    reply, _ = open_tag(ep, session, "Setpoints", 20, serial=2)
    assert (reply.status, reply.additional[:1]) == (
        0x01, (ExtendedStatus.NO_CONSUMER_RESOURCES_AVAILABLE,))


def test_heartbeat_loss_frees_the_slot_and_is_counted() -> None:
    ep = make()
    session = register(ep)
    reply, _ = open_tag(ep, session, "Setpoints", 20, serial=1)
    ot_id = cm.ForwardOpenSuccess.decode_body(reply.data).ot_connection_id
    assert ep.owns_ot_id(ot_id)
    # Heartbeats keep it: O->T RPI 10 ms x4 = 40 ms watchdog.
    for k in range(1, 8):
        ep.on_datagram(heartbeat(ot_id, k), PEER, k * 0.02)
        datagrams(ep, k * 0.02)
    assert len(ep.connections()) == 1
    ep.on_datagram(heartbeat(ot_id, 99), "127.0.0.9", 0.15)  # not the originator: ignored
    datagrams(ep, 0.19)
    assert ep.connections() == [] and not ep.owns_ot_id(ot_id)
    st = ep.status(0.2)
    assert st["target"]["timeouts"] == 1 and st["target"]["heartbeats_foreign"] == 1
    assert st["tags"][0]["consumers"] == []
    # The consumer comes back (a restart): the slot is free again.
    reply, _ = open_tag(ep, session, "Setpoints", 20, serial=5, now=0.3)
    assert reply.status == 0


def test_timeout_event_is_reported() -> None:
    ep = make()
    session = register(ep)
    open_tag(ep, session, "Counter", 4, serial=1)
    ep.take_outputs()
    ep.on_timer(1.0)
    kinds = [o.kind for o in ep.take_outputs() if isinstance(o, TargetEvent)]
    assert TargetEventKind.TIMED_OUT in kinds


def test_class1_connection_outlives_its_tcp_session() -> None:
    """protocol.md 2.4: only Forward_Close or the watchdog end a class-1 connection."""
    ep = make()
    session = register(ep)
    open_tag(ep, session, "Counter", 4, serial=1)
    ep.closed(1, 0.001)
    assert len(ep.connections()) == 1


def test_rpi_outside_the_range_is_refused() -> None:
    ep = make()
    session = register(ep)
    reply, _ = open_tag(ep, session, "Counter", 4, serial=1, rpi_us=2_000)
    assert (reply.status, reply.additional[:1]) == (0x01, (ExtendedStatus.RPI_NOT_SUPPORTED,))
