"""The originator encapsulation session (acquisition/session.py): registration, request/reply
matching by sender context, and validation of every reply (command, status, length, session,
CPF layout, CIP service) on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import cip, cm, cpf, encap
from pyconpro.acquisition.session import (
    ReplyReceived,
    RequestFailed,
    Session,
    SessionFailed,
    SessionReady,
    SessionState,
)

HANDLE = 0x11223344
FO = bytes.fromhex("54022006240100")  # any message whose first byte is the service


def frames(data: bytes) -> list[encap.EncapsulationPacket]:
    return encap.FrameBuffer().feed(data)


def registered(now: float = 0.0) -> Session:
    s = Session(request_timeout=5.0)
    s.start(now)
    req = frames(s.data_to_send())[0]
    reply = encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0, req.context)
    assert s.receive_data(reply.encode(), now) == [SessionReady(HANDLE)]
    return s


def rr_reply(context: bytes, reply: cip.Reply, *, extra: tuple = (), status: int = 0,
             session: int = HANDLE, command: int = 0x6F) -> bytes:
    data = b"" if status else encap.send_rr_data(reply.encode(), extra)
    return encap.EncapsulationPacket(command, data, session, status, context).encode()


def send(s: Session, message: bytes = FO, now: float = 0.0, **kw) -> tuple[int, bytes]:
    handle = s.send_rr(message, now, **kw)
    sent = frames(s.data_to_send())
    assert len(sent) == 1
    return handle, sent[0].context


def test_register_session_request_bytes() -> None:
    s = Session()
    s.start(0.0)
    out = s.data_to_send()
    assert out[:4] == bytes.fromhex("65000400") and out[4:12] == bytes(8)
    assert out[20:] == bytes.fromhex("00000000 0100 0000")
    assert len(out) == 28 and s.state is SessionState.REGISTERING


def test_requests_made_while_registering_are_sent_after_ready() -> None:
    s = Session()
    s.start(0.0)
    reg = frames(s.data_to_send())[0]
    handle = s.send_rr(FO, 0.0)
    assert s.data_to_send() == b""
    s.receive_data(encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode(), 0.0)
    sent = frames(s.data_to_send())
    assert len(sent) == 1 and sent[0].session == HANDLE and sent[0].command == 0x6F
    assert encap.SendData.decode(sent[0].data).unconnected() == FO
    reply = cip.Reply(0x54, 0, (), b"")
    assert s.receive_data(rr_reply(sent[0].context, reply), 0.0) == [
        ReplyReceived(handle, reply)]


@pytest.mark.parametrize(
    ("status", "data", "session", "needle"),
    [
        (0x0002, b"", HANDLE, "0x0002"),
        (0, b"\x01\x00", HANDLE, "2 data bytes"),
        (0, b"\x02\x00\x00\x00", HANDLE, "protocol version 2"),
        (0, b"\x01\x00\x00\x00", 0, "without a session handle"),
    ],
)
def test_register_reply_validated(status: int, data: bytes, session: int, needle: str) -> None:
    s = Session()
    s.start(0.0)
    reg = frames(s.data_to_send())[0]
    s.send_rr(FO, 0.0)
    events = s.receive_data(
        encap.EncapsulationPacket(0x65, data, session, status, reg.context).encode(), 0.0)
    assert s.state is SessionState.FAILED
    assert isinstance(events[-1], SessionFailed) and needle in events[-1].reason
    assert isinstance(events[0], RequestFailed)  # the queued request fails too


def test_reply_with_sockaddr_items_and_failure_status_is_delivered() -> None:
    s = registered()
    handle, ctx = send(s)
    item = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("239.192.1.32", 2222))
    reply = cm.ConnectionFailure(0x01, (0x0109, 6), 1, 2, 3).to_reply(0x54)
    events = s.receive_data(rr_reply(ctx, reply, extra=(item,)), 0.0)
    assert events == [ReplyReceived(handle, reply, (item,))]
    assert s.state is SessionState.READY and s.pending == 0


def test_replies_matched_by_context_in_any_order_and_split_anywhere() -> None:
    s = registered()
    h1, c1 = send(s)
    h2, c2 = send(s)
    r1, r2 = cip.Reply(0x54, 0, (), b"\x01\x00"), cip.Reply(0x54, 0, (), b"\x02\x00")
    stream = rr_reply(c2, r2) + rr_reply(c1, r1)
    events = []
    for i in range(len(stream)):  # one byte at a time
        events += s.receive_data(stream[i:i + 1], 0.0)
    assert events == [ReplyReceived(h2, r2), ReplyReceived(h1, r1)]


def test_encapsulation_error_reply_fails_request_and_session() -> None:
    s = registered()
    _handle, ctx = send(s)
    events = s.receive_data(rr_reply(ctx, cip.Reply(0x54), status=0x0064), 0.0)
    assert isinstance(events[0], RequestFailed) and "0x0064" in events[0].reason
    assert isinstance(events[-1], SessionFailed) and events[-1].encapsulation_status == 0x64
    assert s.state is SessionState.FAILED


def test_unknown_context_ignored_and_counted() -> None:
    s = registered()
    send(s)
    assert s.receive_data(rr_reply(b"XXXXXXXX", cip.Reply(0x54)), 0.0) == []
    assert s.unmatched_replies == 1 and s.pending == 1


def test_wrong_session_handle_fails_session() -> None:
    s = registered()
    _, ctx = send(s)
    events = s.receive_data(rr_reply(ctx, cip.Reply(0x54), session=HANDLE + 1), 0.0)
    assert isinstance(events[-1], SessionFailed)


def test_wrong_command_fails_session() -> None:
    s = registered()
    _, ctx = send(s)
    events = s.receive_data(rr_reply(ctx, cip.Reply(0x54), command=0x70), 0.0)
    assert isinstance(events[-1], SessionFailed) and s.state is SessionState.FAILED


def test_wrong_cpf_layout_fails_only_the_request() -> None:
    s = registered()
    _handle, ctx = send(s)
    data = encap.SendData((cpf.ConnectedAddress(1), cpf.ConnectedData(b"\0\0\xd4\0\0\0"))).encode()
    events = s.receive_data(encap.EncapsulationPacket(0x6F, data, HANDLE, 0, ctx).encode(), 0.0)
    assert len(events) == 1 and isinstance(events[0], RequestFailed)
    assert "NullAddress" in events[0].reason and s.state is SessionState.READY


def test_reply_service_must_match_request() -> None:
    s = registered()
    _handle, ctx = send(s)
    events = s.receive_data(rr_reply(ctx, cip.Reply(0x4E)), 0.0)
    assert isinstance(events[0], RequestFailed) and "0xCE" in events[0].reason


def test_truncated_cip_reply_fails_request() -> None:
    s = registered()
    _handle, ctx = send(s)
    data = encap.send_rr_data(b"\xd4\x00")
    events = s.receive_data(encap.EncapsulationPacket(0x6F, data, HANDLE, 0, ctx).encode(), 0.0)
    assert isinstance(events[0], RequestFailed) and "malformed" in events[0].reason


def test_request_timeout_fails_session() -> None:
    s = registered(now=10.0)
    handle, _ = send(s, now=10.0)
    assert s.next_deadline() == 15.0
    assert s.on_timer(14.9) == []
    events = s.on_timer(15.0)
    assert events[0] == RequestFailed(handle, "no reply within 5 s")
    assert isinstance(events[1], SessionFailed)


def test_register_timeout() -> None:
    s = Session(request_timeout=2.0)
    s.start(1.0)
    assert s.next_deadline() == 3.0
    assert isinstance(s.on_timer(3.0)[-1], SessionFailed)


def test_eof_fails_pending() -> None:
    s = registered()
    handle, _ = send(s)
    events = s.receive_data(b"", 0.0)
    assert events[0] == RequestFailed(handle, "the PLC closed the TCP connection")
    with pytest.raises(Exception, match="FAILED"):
        s.send_rr(FO, 0.0)


def test_close_sends_unregister_and_fails_pending() -> None:
    s = registered()
    handle, _ = send(s)
    events = s.close()
    assert events == [RequestFailed(handle, "session closed")]
    out = frames(s.data_to_send())
    assert [(f.command, f.session, len(f.data)) for f in out] == [(0x66, HANDLE, 0)]
    assert s.state is SessionState.CLOSED
    assert s.receive_data(b"anything", 0.0) == []


def test_keepalive_is_a_nop_only_when_ready() -> None:
    s = Session()
    s.keepalive()
    assert s.data_to_send() == b""
    s = registered()
    s.keepalive()
    assert [(f.command, f.session) for f in frames(s.data_to_send())] == [(0, HANDLE)]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    s = registered()
    send(s)
    s.receive_data(data, 0.0)


def test_routed_request_accepts_the_embedded_service_reply() -> None:
    """A successful Unconnected_Send is answered with the embedded service's reply
    (protocol.md 5.11), e.g. 0x81 to a routed Get_Attributes_All."""
    from pyconpro.acquisition import cip as _cip
    from pyconpro.acquisition import encap as _encap
    from pyconpro.acquisition.session import ReplyReceived, Session

    s = Session()
    s.start(0.0)
    first = _encap.EncapsulationPacket.decode(s.data_to_send())
    s.receive_data(_encap.EncapsulationPacket(first.command, first.data, 0x42, 0, first.context).encode(), 0.0)
    inner = _cip.Request(0x01, bytes.fromhex("20012401")).encode()
    routed = _cip.Request(0x52, bytes.fromhex("20062401"),
                          _cip.UnconnectedSend(inner, b"\x01\x00").encode()).encode()
    h = s.send_rr(routed, 0.0)
    req = _encap.EncapsulationPacket.decode(s.data_to_send())
    reply = _cip.Reply(0x01, 0, (), b"identity").encode()
    events = s.receive_data(_encap.EncapsulationPacket(
        0x6F, _encap.send_rr_data(reply), 0x42, 0, req.context).encode(), 0.1)
    assert [type(e) for e in events] == [ReplyReceived] and events[0].handle == h
    assert events[0].reply.data == b"identity"
