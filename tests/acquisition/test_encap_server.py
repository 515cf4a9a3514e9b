"""acquisition.encap_server: what the simulator and a producing worker answer alike, pure:
replies echo the request, discovery answers, RegisterSession's checks and handles, which
unconnected messages go to the target, a Connection Manager request inside Unconnected_Send."""

from __future__ import annotations

from pyconpro.acquisition import cip, cpf, encap, epath
from pyconpro.acquisition.encap import Command
from pyconpro.acquisition.encap_server import (
    Sessions,
    connection_manager_request,
    discovery_reply,
    embedded_cm_reply,
    reply,
)
from pyconpro.acquisition.logix_requests import Identity
from pyconpro.acquisition.produce import ProducedTags
from pyconpro.acquisition.status import EncapsulationStatus
from pyconpro.acquisition.target import ProducerTarget
from pyconpro.acquisition.target_options import TargetOptions

CONTEXT = b"ctx12345"
REGISTER = encap.RegisterSessionData().encode()


def packet(command: int, data: bytes = b"", session: int = 0) -> encap.EncapsulationPacket:
    return encap.EncapsulationPacket(command, data, session, 0, CONTEXT, 0)


def decoded(data: bytes | None) -> encap.EncapsulationPacket:
    assert data is not None
    return encap.EncapsulationPacket.decode(data)


def test_a_reply_echoes_command_session_context_and_options() -> None:
    pkt = encap.EncapsulationPacket(Command.SEND_RR_DATA, b"x", 0x1234, 0, CONTEXT, 0)
    got = decoded(reply(pkt, b"abc"))
    assert (got.command, got.data, got.session, got.status, got.context) == (
        Command.SEND_RR_DATA, b"abc", 0x1234, 0, CONTEXT)
    got = decoded(reply(pkt, session=7, status=EncapsulationStatus.INVALID_COMMAND))
    assert (got.data, got.session, got.status) == (b"", 7, EncapsulationStatus.INVALID_COMMAND)


def test_discovery_answers_the_three_list_commands_only() -> None:
    item = Identity(product_name="pyconpro").item(cpf.Sockaddr("10.0.0.1", 44818))
    ident = decoded(discovery_reply(packet(Command.LIST_IDENTITY), item))
    assert cpf.decode_items(ident.data) == (item,)
    services = decoded(discovery_reply(packet(Command.LIST_SERVICES), item))
    assert cpf.decode_items(services.data) == (cpf.ServicesItem(),)
    interfaces = decoded(discovery_reply(packet(Command.LIST_INTERFACES), item))
    assert cpf.decode_items(interfaces.data) == ()
    assert discovery_reply(packet(Command.REGISTER_SESSION, REGISTER), item) is None


def test_sessions_count_up_skip_held_handles_wrap_and_free_on_drop() -> None:
    s: Sessions[str] = Sessions(max_sessions=3, last=0xFFFF_FFFE)
    a = s.register(packet(Command.REGISTER_SESSION, REGISTER), 0, "a")
    b = s.register(packet(Command.REGISTER_SESSION, REGISTER), 0, "b")
    assert (a.session, b.session) == (0xFFFF_FFFF, 1)  # wraps past 2**32 - 1, never 0
    assert decoded(a.answer).session == a.session and decoded(a.answer).data == REGISTER
    assert (s.get(1), len(s)) == ("b", 2)
    assert s.drop(a.session) == "a" and s.drop(a.session) is None and len(s) == 1


def test_register_refusals() -> None:
    s: Sessions[int] = Sessions(max_sessions=1)
    bad_version = encap.RegisterSessionData(protocol_version=2).encode()
    got = s.register(packet(Command.REGISTER_SESSION, bad_version), 0, 1)
    assert got.error and not got.session
    assert decoded(got.answer).status == EncapsulationStatus.UNSUPPORTED_PROTOCOL_VERSION
    got = s.register(packet(Command.REGISTER_SESSION, b"\x01"), 0, 1)
    assert got.error and decoded(got.answer).status == EncapsulationStatus.INVALID_LENGTH
    got = s.register(packet(Command.REGISTER_SESSION, REGISTER), 0, 1, refuse=True)
    assert got.refused and not got.error and got.session == 0
    assert decoded(got.answer).status == EncapsulationStatus.INSUFFICIENT_MEMORY
    first = s.register(packet(Command.REGISTER_SESSION, REGISTER), 0, 1)
    assert first.session == 1
    again = s.register(packet(Command.REGISTER_SESSION, REGISTER), first.session, 1)
    assert again.error and decoded(again.answer).session == first.session  # one per connection
    assert decoded(again.answer).status == EncapsulationStatus.INVALID_COMMAND
    full = s.register(packet(Command.REGISTER_SESSION, REGISTER), 0, 2)
    assert full.refused and len(s) == 1


def test_which_messages_are_the_targets() -> None:
    close = cip.Request(cip.Service.FORWARD_CLOSE, epath.CONNECTION_MANAGER_PATH, b"\x00")
    assert connection_manager_request(close.encode()) == close
    other_path = cip.Request(cip.Service.FORWARD_OPEN, epath.encode_path(
        (epath.class_id(0x01), epath.instance_id(0x01))))  # fmt: skip
    assert connection_manager_request(other_path.encode()) is None
    get_attr = cip.Request(0x0E, epath.CONNECTION_MANAGER_PATH)
    assert connection_manager_request(get_attr.encode()) is None
    assert connection_manager_request(b"\x54") is None  # does not decode


def test_an_embedded_request_that_does_not_decode_gets_0x13() -> None:
    target = ProducerTarget(ProducedTags(), TargetOptions(address="127.0.0.1"))
    answer = cip.Reply.decode(embedded_cm_reply(target, b"\x54", "127.0.0.2", 1, 0.0))
    assert (answer.service, answer.status) == (0x54, 0x13)
    # a decodable one is the target's: a Forward_Close for no connection is refused by it
    close = cip.Request(cip.Service.FORWARD_CLOSE, epath.CONNECTION_MANAGER_PATH, bytes(12))
    answer = cip.Reply.decode(embedded_cm_reply(target, close.encode(), "127.0.0.2", 1, 0.0))
    assert answer.service == cip.Service.FORWARD_CLOSE and answer.status != 0
