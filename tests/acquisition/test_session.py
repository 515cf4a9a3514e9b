"""The originator encapsulation session (acquisition/session.py): registration, request/reply
matching by sender context (SendRRData, ListIdentity) or by connection id and sequence count
(class-3 SendUnitData), and validation of every reply (command, status, length, session, CPF
layout, CIP service) on a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition import cip, cm, cpf, encap
from pyconpro.acquisition.errors import EncapsulationError, UsageError
from pyconpro.acquisition.originator import BackoffPolicy
from pyconpro.acquisition.session import (
    PLC_TRANSITIONS,
    CloseSocket,
    Connect,
    IdentityReceived,
    PlcSession,
    PlcState,
    ReplyReceived,
    RequestFailed,
    Session,
    SessionFailed,
    SessionReady,
    SessionState,
    Transmit,
)

HANDLE = 0x11223344
FO = bytes.fromhex("54022006240100")  # any message whose first byte is the service


def frames(data: bytes) -> list[encap.EncapsulationPacket]:
    return encap.FrameBuffer().feed(data)


def wire_bytes(s: Session) -> bytes:
    """What the session wants written to TCP since the last call (its Transmit actions)."""
    outs = s.take_outputs()
    assert all(isinstance(o, Transmit) for o in outs), outs
    return b"".join(o.data for o in outs if isinstance(o, Transmit))


def events(s: Session) -> list[object]:
    """The notifications since the last call (every output that is not a Transmit)."""
    return [o for o in s.take_outputs() if not isinstance(o, Transmit)]


def feed(s: Session, data: bytes, now: float = 0.0) -> list[object]:
    s.receive_data(data, now)
    return events(s)


def registered(now: float = 0.0) -> Session:
    s = Session(request_timeout=5.0)
    s.start(now)
    req = frames(wire_bytes(s))[0]
    reply = encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0, req.context)
    assert feed(s, reply.encode(), now) == [SessionReady(HANDLE)]
    return s


def rr_reply(context: bytes, reply: cip.Reply, *, extra: tuple[cpf.Item, ...] = (), status: int = 0,
             session: int = HANDLE, command: int = 0x6F) -> bytes:
    data = b"" if status else encap.send_rr_data(reply.encode(), extra)
    return encap.EncapsulationPacket(command, data, session, status, context).encode()


def send(s: Session, message: bytes = FO, now: float = 0.0, **kw: Any) -> tuple[int, bytes]:
    handle = s.send_rr(message, now, **kw)
    sent = frames(wire_bytes(s))
    assert len(sent) == 1
    return handle, sent[0].context


def test_register_session_request_bytes() -> None:
    s = Session()
    s.start(0.0)
    out = wire_bytes(s)
    assert out[:4] == bytes.fromhex("65000400") and out[4:12] == bytes(8)
    assert out[20:] == bytes.fromhex("00000000 0100 0000")
    assert len(out) == 28 and s.state is SessionState.REGISTERING


def test_requests_made_while_registering_are_sent_after_ready() -> None:
    s = Session()
    s.start(0.0)
    reg = frames(wire_bytes(s))[0]
    handle = s.send_rr(FO, 0.0)
    assert wire_bytes(s) == b""
    s.receive_data(encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode(), 0.0)
    outs = s.take_outputs()
    assert outs[0] == SessionReady(HANDLE) and isinstance(outs[1], Transmit)
    sent = frames(outs[1].data)
    assert len(sent) == 1 and sent[0].session == HANDLE and sent[0].command == 0x6F
    assert encap.SendData.decode(sent[0].data).unconnected() == FO
    reply = cip.Reply(0x54, 0, (), b"")
    assert feed(s, rr_reply(sent[0].context, reply)) == [
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
    reg = frames(wire_bytes(s))[0]
    s.send_rr(FO, 0.0)
    events = feed(s, 
        encap.EncapsulationPacket(0x65, data, session, status, reg.context).encode())
    assert s.state is SessionState.FAILED
    assert isinstance(events[-1], SessionFailed) and needle in events[-1].reason
    assert isinstance(events[0], RequestFailed)  # the queued request fails too


def test_reply_with_sockaddr_items_and_failure_status_is_delivered() -> None:
    s = registered()
    handle, ctx = send(s)
    item = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("239.192.1.32", 2222))
    reply = cm.ConnectionFailure(0x01, (0x0109, 6), 1, 2, 3).to_reply(0x54)
    events = feed(s, rr_reply(ctx, reply, extra=(item,)))
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
        events += feed(s, stream[i:i + 1])
    assert events == [ReplyReceived(h2, r2), ReplyReceived(h1, r1)]


def test_encapsulation_error_reply_fails_request_and_session() -> None:
    s = registered()
    _handle, ctx = send(s)
    events = feed(s, rr_reply(ctx, cip.Reply(0x54), status=0x0064))
    assert isinstance(events[0], RequestFailed) and "0x0064" in events[0].reason
    assert isinstance(events[-1], SessionFailed) and events[-1].encapsulation_status == 0x64
    assert s.state is SessionState.FAILED


def test_unknown_context_ignored_and_counted() -> None:
    s = registered()
    send(s)
    assert feed(s, rr_reply(b"XXXXXXXX", cip.Reply(0x54))) == []
    assert s.unmatched_replies == 1 and s.pending == 1


def test_wrong_session_handle_fails_session() -> None:
    s = registered()
    _, ctx = send(s)
    events = feed(s, rr_reply(ctx, cip.Reply(0x54), session=HANDLE + 1))
    assert isinstance(events[-1], SessionFailed)


def test_wrong_command_fails_session() -> None:
    s = registered()
    _, ctx = send(s)
    events = feed(s, rr_reply(ctx, cip.Reply(0x54), command=0x70))
    assert isinstance(events[-1], SessionFailed) and s.state is SessionState.FAILED


def test_wrong_cpf_layout_fails_only_the_request() -> None:
    s = registered()
    _handle, ctx = send(s)
    data = encap.SendData((cpf.ConnectedAddress(1), cpf.ConnectedData(b"\0\0\xd4\0\0\0"))).encode()
    events = feed(s, encap.EncapsulationPacket(0x6F, data, HANDLE, 0, ctx).encode())
    assert len(events) == 1 and isinstance(events[0], RequestFailed)
    assert "NullAddress" in events[0].reason and s.state is SessionState.READY


def test_reply_service_must_match_request() -> None:
    s = registered()
    _handle, ctx = send(s)
    events = feed(s, rr_reply(ctx, cip.Reply(0x4E)))
    assert isinstance(events[0], RequestFailed) and "0xCE" in events[0].reason


def test_truncated_cip_reply_fails_request() -> None:
    s = registered()
    _handle, ctx = send(s)
    data = encap.send_rr_data(b"\xd4\x00")
    events = feed(s, encap.EncapsulationPacket(0x6F, data, HANDLE, 0, ctx).encode())
    assert isinstance(events[0], RequestFailed) and "malformed" in events[0].reason


def test_request_timeout_fails_session() -> None:
    s = registered(now=10.0)
    handle, _ = send(s, now=10.0)
    assert s.next_deadline() == 15.0
    s.on_timer(14.9)
    assert s.take_outputs() == []
    s.on_timer(15.0)
    events = s.take_outputs()
    assert events[0] == RequestFailed(handle, "no reply within 5 s")
    assert isinstance(events[1], SessionFailed)


def test_register_timeout() -> None:
    s = Session(request_timeout=2.0)
    s.start(1.0)
    assert s.next_deadline() == 3.0
    s.on_timer(3.0)
    assert isinstance(s.take_outputs()[-1], SessionFailed)


def test_eof_fails_pending() -> None:
    s = registered()
    handle, _ = send(s)
    events = feed(s, b"")
    assert events[0] == RequestFailed(handle, "the PLC closed the TCP connection")
    with pytest.raises(Exception, match="FAILED"):
        s.send_rr(FO, 0.0)


def test_close_sends_unregister_and_fails_pending() -> None:
    s = registered()
    handle, _ = send(s)
    s.close(0.0)
    outs = s.take_outputs()
    assert outs[1:] == [RequestFailed(handle, "session closed")]
    assert isinstance(outs[0], Transmit)
    out = frames(outs[0].data)
    assert [(f.command, f.session, len(f.data)) for f in out] == [(0x66, HANDLE, 0)]
    assert s.state is SessionState.CLOSED
    assert feed(s, b"anything") == []


def test_keepalive_is_a_nop_only_when_ready() -> None:
    s = Session()
    s.keepalive(0.0)
    assert wire_bytes(s) == b""
    s = registered()
    s.keepalive(0.0)
    assert [(f.command, f.session) for f in frames(wire_bytes(s))] == [(0, HANDLE)]


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
    first = _encap.EncapsulationPacket.decode(wire_bytes(s))
    feed(s, _encap.EncapsulationPacket(first.command, first.data, 0x42, 0, first.context).encode())
    inner = _cip.Request(0x01, bytes.fromhex("20012401")).encode()
    routed = _cip.Request(0x52, bytes.fromhex("20062401"),
                          _cip.UnconnectedSend(inner, b"\x01\x00").encode()).encode()
    h = s.send_rr(routed, 0.0)
    req = _encap.EncapsulationPacket.decode(wire_bytes(s))
    reply = _cip.Reply(0x01, 0, (), b"identity").encode()
    events = feed(s, _encap.EncapsulationPacket(
        0x6F, _encap.send_rr_data(reply), 0x42, 0, req.context).encode(), 0.1)
    assert [type(e) for e in events] == [ReplyReceived]
    assert isinstance(events[0], ReplyReceived) and events[0].handle == h
    assert events[0].reply.data == b"identity"


def test_encapsulation_status_failures_carry_the_reply_command() -> None:
    s = Session()
    s.start(0.0)
    reg = frames(wire_bytes(s))[0]
    (out,) = feed(s, encap.EncapsulationPacket(0x65, b"", 0, 0x0002, reg.context).encode())
    assert isinstance(out, SessionFailed) and out.reason.startswith(
        "RegisterSession refused: encapsulation status 0x0002 ")
    assert (out.encapsulation_status, out.encapsulation_command) == (0x0002, 0x65)
    s = registered()
    _, ctx = send(s)
    failed = feed(s, rr_reply(ctx, cip.Reply(0x54), status=0x0064))[-1]
    assert isinstance(failed, SessionFailed)
    assert (failed.encapsulation_status, failed.encapsulation_command) == (0x64, 0x6F)
    assert str(EncapsulationError(0x64, 0x6F)) in failed.reason


# ------------------------------------------------------------------------------------------
# Class 3: SendUnitData, matched by T->O connection id and CIP sequence count
# ------------------------------------------------------------------------------------------

OT, TO = 0xC0DE0001, 0x00A1B2C3
READ = bytes.fromhex("4c0391074d794e616d6500000100")  # any request: first byte the service


def unit_reply(reply: cip.Reply | bytes, seq: int, *, conn: int = TO, context: bytes = bytes(8),
               status: int = 0, session: int = HANDLE) -> bytes:
    body = reply if isinstance(reply, bytes) else reply.encode()
    data = b"" if status else encap.send_unit_data(conn, seq, body)
    return encap.EncapsulationPacket(0x70, data, session, status, context).encode()


def send_unit(s: Session, message: bytes = READ, now: float = 0.0, *, ot: int = OT,
              to: int = TO, **kw: Any) -> tuple[int, encap.EncapsulationPacket]:
    handle = s.send_connected(message, now, ot_connection_id=ot, to_connection_id=to, **kw)
    (sent,) = frames(wire_bytes(s))
    return handle, sent


def test_send_connected_frame_is_byte_exact_with_a_sequence_count_per_connection() -> None:
    s = registered()
    for seq in (1, 2, 3):
        _, sent = send_unit(s)
        assert sent.encode() == encap.EncapsulationPacket(
            0x70, encap.send_unit_data(OT, seq, READ), HANDLE, 0, sent.context).encode()
    _, other = send_unit(s, ot=OT + 1, to=TO + 1)
    assert encap.SendData.decode(other.data).connected() == (OT + 1, 1, READ)
    assert s.pending == 4


def test_sequence_count_wraps_at_16_bits() -> None:
    s = registered()
    s._sequences[OT] = 0xFFFE  # jump ahead rather than send 65534 requests
    seqs = [encap.SendData.decode(send_unit(s)[1].data).connected()[1] for _ in range(3)]
    assert seqs == [0xFFFF, 0, 1]


def test_connected_requests_made_while_registering_go_out_after_ready() -> None:
    s = Session()
    s.start(0.0)
    reg = frames(wire_bytes(s))[0]
    h = s.send_connected(READ, 0.0, ot_connection_id=OT, to_connection_id=TO)
    assert wire_bytes(s) == b""
    outs = feed(s, encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode())
    assert outs == [SessionReady(HANDLE)]
    reply = cip.Reply(0x4C, 0, (), b"\xc4\x00\x01\x00\x00\x00")
    assert feed(s, unit_reply(reply, 1)) == [ReplyReceived(h, reply)]


def test_connected_replies_matched_by_sequence_in_any_order_whatever_the_context() -> None:
    s = registered()
    h1, _ = send_unit(s)
    h2, _ = send_unit(s)
    r1, r2 = cip.Reply(0x4C, 0, (), b"\x01"), cip.Reply(0x4C, 0, (), b"\x02")
    stream = unit_reply(r2, 2, context=b"whatever") + unit_reply(r1, 1)
    got = []
    for i in range(len(stream)):
        got += feed(s, stream[i:i + 1])
    assert got == [ReplyReceived(h2, r2), ReplyReceived(h1, r1)]
    assert s.pending == 0 and s.unmatched_replies == 0 and s.state is SessionState.READY


@pytest.mark.parametrize(("reply", "needle"), [
    (unit_reply(cip.Reply(0x4C), 1, conn=TO + 1),
     f"SendUnitData reply on connection 0x{TO + 1:08X}, ours is 0x{TO:08X}"),
    (unit_reply(cip.Reply(0x4C), 2), "SendUnitData reply with sequence 2, expected 1"),
    (encap.EncapsulationPacket(0x70, encap.send_rr_data(b"\xcc\x00\x00\x00"), HANDLE, 0,
                               bytes(8)).encode(), "SendUnitData reply: "),
    (unit_reply(cip.Reply(0x4C), 1, session=HANDLE + 1), "reply carries session 0x11223345"),
])
def test_unmatchable_connected_reply_fails_the_session(reply: bytes, needle: str) -> None:
    s = registered()
    h, _ = send_unit(s)
    got = feed(s, reply)
    assert isinstance(got[-1], SessionFailed) and needle in got[-1].reason
    assert got[0] == RequestFailed(h, got[-1].reason)
    assert got[-1].encapsulation_status is None and s.state is SessionState.FAILED


def test_connected_encapsulation_error_fails_the_session_with_status_and_command() -> None:
    s = registered()
    h, _ = send_unit(s)
    got = feed(s, unit_reply(b"", 1, status=0x0064))
    assert isinstance(got[0], RequestFailed) and got[0].handle == h
    assert isinstance(got[-1], SessionFailed)
    assert (got[-1].encapsulation_status, got[-1].encapsulation_command) == (0x64, 0x70)


@pytest.mark.parametrize(("body", "needle"), [
    (b"\xcc", "malformed SendUnitData reply"),
    (cip.Reply(0x4E).encode(), "reply service 0xCE to request service 0x4C"),
])
def test_bad_connected_cip_reply_fails_only_the_request(body: bytes, needle: str) -> None:
    s = registered()
    h, _ = send_unit(s)
    (got,) = feed(s, unit_reply(body, 1))
    assert isinstance(got, RequestFailed) and got.handle == h and needle in got.reason
    assert s.state is SessionState.READY and s.pending == 0


def test_send_unit_data_reply_without_connected_requests_is_unmatched() -> None:
    s = registered()
    h, ctx = send(s)
    assert feed(s, unit_reply(cip.Reply(0x4C), 1)) == []
    assert s.unmatched_replies == 1 and s.pending == 1
    # ... unless it echoes the context of an unconnected request: a reply with the wrong command
    got = feed(s, unit_reply(cip.Reply(0x4C), 1, context=ctx))
    assert got[0] == RequestFailed(h, "reply with the wrong command")
    assert isinstance(got[-1], SessionFailed) and "0x0070 to a request 0x006F" in got[-1].reason


def test_connected_and_unconnected_requests_interleave() -> None:
    s = registered()
    hu, _ = send_unit(s)
    hr, ctx = send(s)
    ru, rr = cip.Reply(0x4C, 0, (), b"u"), cip.Reply(0x54, 0, (), b"r")
    assert feed(s, rr_reply(ctx, rr) + unit_reply(ru, 1)) == [ReplyReceived(hr, rr),
                                                              ReplyReceived(hu, ru)]


def test_connected_request_timeout_fails_the_session() -> None:
    s = registered(now=1.0)
    h, _ = send_unit(s, now=1.0, timeout=2.0)
    assert s.next_deadline() == 3.0
    s.on_timer(3.0)
    assert events(s)[0] == RequestFailed(h, "no reply within 5 s")
    assert s.state is SessionState.FAILED


@pytest.mark.parametrize("state", ["idle", "failed", "closed"])
def test_requests_refused_unless_registering_or_ready(state: str) -> None:
    s = Session()
    if state != "idle":
        s = registered()
        if state == "failed":
            s.receive_data(b"", 0.0)
        else:
            s.close(0.0)
    asks: list[Callable[[], int]] = [
        lambda: s.send_connected(READ, 0.0, ot_connection_id=OT, to_connection_id=TO),
        lambda: s.list_identity(0.0), lambda: s.send_rr(FO, 0.0)]
    for ask in asks:
        with pytest.raises(Exception, match=state.upper()):
            ask()
    s = registered()
    with pytest.raises(Exception, match="empty"):
        s.send_connected(b"", 0.0, ot_connection_id=OT, to_connection_id=TO)


# ------------------------------------------------------------------------------------------
# ListIdentity over TCP
# ------------------------------------------------------------------------------------------

IDENTITY = cpf.IdentityItem(1, 0x0E, 0x6C, 33, 11, 0x3060, 0x12345678, "1756-L83E/B", 3,
                            cpf.Sockaddr("127.0.0.1", 44818))


def identity_reply(context: bytes, data: bytes | None = None, *, status: int = 0,
                   session: int = HANDLE) -> bytes:
    if data is None:
        data = cpf.encode_items([IDENTITY])
    return encap.EncapsulationPacket(0x63, b"" if status else data, session, status,
                                     context).encode()


def test_list_identity_frame_is_byte_exact_and_the_reply_gives_the_identity() -> None:
    s = registered()
    h = s.list_identity(0.0)
    (sent,) = frames(wire_bytes(s))
    assert sent.encode() == encap.EncapsulationPacket(0x63, b"", HANDLE, 0, sent.context).encode()
    assert len(sent.encode()) == 24
    assert feed(s, identity_reply(sent.context, session=0)) == [IdentityReceived(h, IDENTITY)]
    assert s.pending == 0 and s.state is SessionState.READY


@pytest.mark.parametrize(("data", "needle"), [
    (b"\x01\x00", "ListIdentity reply"),
    (cpf.encode_items([cpf.NullAddress()]), "ListIdentity reply without an identity item"),
])
def test_bad_list_identity_reply_fails_only_the_request(data: bytes, needle: str) -> None:
    s = registered()
    h = s.list_identity(0.0)
    (sent,) = frames(wire_bytes(s))
    (got,) = feed(s, identity_reply(sent.context, data))
    assert isinstance(got, RequestFailed) and got.handle == h and needle in got.reason
    assert s.state is SessionState.READY


def test_list_identity_error_status_fails_the_session() -> None:
    s = registered()
    s.list_identity(0.0)
    (sent,) = frames(wire_bytes(s))
    got = feed(s, identity_reply(sent.context, status=0x0001))
    assert isinstance(got[-1], SessionFailed)
    assert (got[-1].encapsulation_status, got[-1].encapsulation_command) == (0x01, 0x63)


def test_list_identity_asked_while_registering_goes_out_after_ready() -> None:
    s = Session()
    s.start(0.0)
    reg = frames(wire_bytes(s))[0]
    h = s.list_identity(0.0, timeout=1.0)
    assert s.next_deadline() == s.request_timeout  # the registration's deadline
    s.receive_data(encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode(), 0.0)
    outs = s.take_outputs()
    assert outs[0] == SessionReady(HANDLE) and s.next_deadline() == 1.0
    assert isinstance(outs[1], Transmit)
    (sent,) = frames(outs[1].data)
    assert sent.command == 0x63 and sent.session == HANDLE
    assert feed(s, identity_reply(sent.context)) == [IdentityReceived(h, IDENTITY)]


# ------------------------------------------------------------------------------------------
# PlcSession: the session to one PLC across TCP connections (connect, keep-alive, back-off)
# ------------------------------------------------------------------------------------------


class FixedRng:
    """No jitter (``random() == 0``: the nominal back-off) and context base 0."""

    def getrandbits(self, k: int) -> int:
        return 0

    def random(self) -> float:
        return 0.0


def plc(**kw: object) -> PlcSession:
    return PlcSession("10.0.0.5", 44818, rng=FixedRng(), request_timeout=5.0, keepalive_s=30.0,
                      backoff=BackoffPolicy(0.5, 4.0, 0.25), **kw)  # type: ignore[arg-type]


def plc_state(p: PlcSession) -> PlcState:
    """The state read through a call, so mypy does not keep an earlier narrowing."""
    return p.state


def sent_frames(outs: Sequence[object]) -> list[encap.EncapsulationPacket]:
    return frames(b"".join(o.data for o in outs if isinstance(o, Transmit)))


def ready_plc(now: float = 0.0) -> PlcSession:
    """A PlcSession that connected and registered at ``now`` (one keep-alive request sent)."""
    p = plc()
    h = p.send_rr(FO, now)
    outs = p.take_outputs()
    assert outs[0] == Connect("10.0.0.5", 44818)
    reg = sent_frames(outs)[0]
    assert reg.command == encap.Command.REGISTER_SESSION and p.state is PlcState.CONNECTING
    p.connected(now)
    assert plc_state(p) is PlcState.REGISTERING
    p.receive_data(encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode(), now)
    outs = p.take_outputs()
    assert outs[0] == SessionReady(HANDLE)
    req = sent_frames(outs)[0]
    p.receive_data(rr_reply(req.context, cip.Reply(0x54)), now)
    assert p.take_outputs() == [ReplyReceived(h, cip.Reply(0x54))]
    assert p.up and p.sessions_opened == 1
    return p


def test_plc_session_connects_on_the_first_request_and_queues_it_behind_registration() -> None:
    p = ready_plc(now=100.0)
    assert p.keepalive_at == 130.0 and p.next_deadline() == 130.0


def test_plc_session_keepalive_exactly_at_its_deadline_then_every_interval() -> None:
    p = ready_plc(now=100.0)
    p.on_timer(129.999)
    assert p.take_outputs() == []
    p.on_timer(130.0)
    assert [(f.command, f.session) for f in sent_frames(p.take_outputs())] == [(0, HANDLE)]
    assert p.next_deadline() == 160.0


def test_plc_session_request_timeout_is_a_deadline_before_the_keepalive() -> None:
    p = ready_plc(now=0.0)
    h = p.send_rr(FO, 1.0)
    p.take_outputs()
    assert p.next_deadline() == 6.0
    p.on_timer(6.0)
    outs = p.take_outputs()
    # The session's failure first, then the request it took with it.
    assert outs == [SessionFailed("no reply within 5 s", None, 0.5, 6.5), CloseSocket(False),
                    RequestFailed(h, "no reply within 5 s")]
    assert p.state is PlcState.BACKOFF and p.next_deadline() == 6.5 and p.sessions_failed == 1


def test_plc_session_refuses_requests_while_backing_off_unless_forced() -> None:
    p = ready_plc()
    p.receive_data(b"", 10.0)  # EOF
    assert p.take_outputs()[:2] == [
        SessionFailed("the PLC closed the TCP connection", None, 0.5, 10.5), CloseSocket(False)]
    h = p.send_rr(FO, 10.2)
    assert p.take_outputs() == [RequestFailed(h, "no session to PLC 10.0.0.5:44818 (last"
                                              " failure: the PLC closed the TCP connection;"
                                              " reconnecting in 0.3 s)")]
    p.send_rr(FO, 10.2, force=True)  # stopping: Forward_Close needs a session now
    assert p.take_outputs()[0] == Connect("10.0.0.5", 44818)
    assert p.state is PlcState.CONNECTING


def test_plc_session_reconnects_exactly_when_the_backoff_ends_with_growing_delays() -> None:
    p = plc()
    now = 0.0
    delays = []
    for _ in range(5):
        p.send_rr(FO, now, force=True) if p.state is PlcState.IDLE else p.on_timer(now)
        assert p.take_outputs()[0] == Connect("10.0.0.5", 44818)
        p.connect_failed("TCP connect to 10.0.0.5:44818 failed: Connection refused", now)
        failed = [o for o in p.take_outputs() if isinstance(o, SessionFailed)][0]
        assert failed.retry_at == p.retry_at == p.next_deadline()
        delays.append(failed.retry_in)
        p.on_timer(p.retry_at - 1e-6)
        assert p.take_outputs() == [] and p.state is PlcState.BACKOFF
        now = p.retry_at
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]  # doubling up to the cap
    p.on_timer(now)
    assert p.take_outputs()[0] == Connect("10.0.0.5", 44818)


def test_plc_session_waits_idle_when_nobody_needs_it_after_the_backoff() -> None:
    p = ready_plc()
    p.connection_lost("TCP receive failed: reset", 1.0)
    p.take_outputs()
    p.on_timer(p.retry_at, reconnect=False)
    assert p.take_outputs() == [] and p.state is PlcState.IDLE and p.next_deadline() is None
    p.send_rr(FO, 50.0)  # the next request connects at once
    assert p.take_outputs()[0] == Connect("10.0.0.5", 44818)


def test_plc_session_registration_resets_the_backoff() -> None:
    p = plc()
    p.send_rr(FO, 0.0)
    p.take_outputs()
    p.connect_failed("refused", 0.0)
    p.take_outputs()
    assert p.attempt == 1
    p.on_timer(p.retry_at)
    reg = sent_frames(p.take_outputs())[0]
    p.connected(p.retry_at)
    p.receive_data(encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode(), p.retry_at)
    assert p.take_outputs()[0] == SessionReady(HANDLE) and p.attempt == 0


def test_plc_session_connect_failure_fails_the_waiting_requests_naming_the_plc() -> None:
    p = plc()
    h = p.send_rr(FO, 0.0)
    p.take_outputs()
    p.connect_failed("cannot connect from 127.0.0.1: boom", 0.0)
    assert p.take_outputs() == [
        SessionFailed("cannot connect from 127.0.0.1: boom", None, 0.5, 0.5), CloseSocket(False),
        RequestFailed(h, "no session to PLC 10.0.0.5:44818: cannot connect from 127.0.0.1:"
                         " boom")]
    assert p.last_failure == "cannot connect from 127.0.0.1: boom"


def test_plc_session_close_unregisters_then_closes_then_fails_pending() -> None:
    p = ready_plc()
    h = p.send_rr(FO, 1.0)
    p.take_outputs()
    p.close(2.0)
    outs = p.take_outputs()
    assert [(f.command, f.session) for f in sent_frames(outs)] == [(0x66, HANDLE)]
    assert outs[1:] == [CloseSocket(True), RequestFailed(h, "session closed")]
    assert p.state is PlcState.CLOSED and p.next_deadline() is None
    h2 = p.send_rr(FO, 3.0)
    assert p.take_outputs() == [RequestFailed(h2, "session closed")]


def test_plc_session_close_while_connecting_drops_the_buffer() -> None:
    p = plc()
    p.send_rr(FO, 0.0)
    p.take_outputs()
    p.close(0.1)
    outs = p.take_outputs()
    assert outs[0] == CloseSocket(False) and isinstance(outs[1], RequestFailed)


def _plc_in(state: PlcState) -> PlcSession:
    p = plc()
    if state is PlcState.IDLE:
        return p
    if state is PlcState.READY:
        p = ready_plc()
    elif state is PlcState.CLOSED:
        p.close(0.0)
    else:
        p.send_rr(FO, 0.0)
        if state in (PlcState.REGISTERING, PlcState.BACKOFF):
            p.connected(0.0)
        if state is PlcState.BACKOFF:
            p.connection_lost("reset", 0.0)
    p.take_outputs()
    assert p.state is state
    return p


_PLC_INPUTS = {
    "send_rr": lambda p: p.send_rr(FO, 0.1),
    "send_rr forced": lambda p: p.send_rr(FO, 0.1, force=True),
    "connected": lambda p: p.connected(0.1),
    "connect_failed": lambda p: p.connect_failed("refused", 0.1),
    "receive garbage": lambda p: p.receive_data(b"\xff" * 30, 0.1),
    "receive EOF": lambda p: p.receive_data(b"", 0.1),
    "connection_lost": lambda p: p.connection_lost("reset", 0.1),
    "close": lambda p: p.close(0.1),
    "on_timer early": lambda p: p.on_timer(0.1),
    "on_timer late": lambda p: p.on_timer(1000.0),
    "on_timer late, not needed": lambda p: p.on_timer(1000.0, reconnect=False),
}


@pytest.mark.parametrize("state", list(PlcState))
@pytest.mark.parametrize("name", list(_PLC_INPUTS))
def test_plc_session_every_input_in_every_state_follows_the_table(state: PlcState,
                                                                  name: str) -> None:
    p = _plc_in(state)
    _PLC_INPUTS[name](p)
    outs = p.take_outputs()
    reached = {PLC_TRANSITIONS[k] for k in PLC_TRANSITIONS if k[0] is state}
    # One input may pass through several transitions (connect, then fail at once): every
    # state it ends in is reachable through the table.
    assert p.state is state or p.state in reached or any(
        p.state is PLC_TRANSITIONS[k] for k in PLC_TRANSITIONS if k[0] in reached)
    handles = [o.handle for o in outs if isinstance(o, (ReplyReceived, RequestFailed))]
    assert len(handles) == len(set(handles))  # every request is answered at most once
    if p.state is PlcState.BACKOFF and state is not PlcState.BACKOFF:
        # The failure, the socket closed, then (only then) the requests it took with it.
        at = next(i for i, o in enumerate(outs) if isinstance(o, SessionFailed))
        assert outs[at + 1] == CloseSocket(False) and p.next_deadline() == p.retry_at
        assert all(isinstance(o, RequestFailed) for o in outs[at + 2:])
        assert not any(isinstance(o, RequestFailed) for o in outs[:at])
    assert (p.session is not None) == (p.state in (PlcState.CONNECTING, PlcState.REGISTERING,
                                                   PlcState.READY))


def test_plc_session_failure_keeps_the_encapsulation_status_and_command() -> None:
    p = ready_plc()
    p.send_rr(FO, 1.0)
    req = sent_frames(p.take_outputs())[0]
    p.receive_data(rr_reply(req.context, cip.Reply(0x54), status=0x0064), 1.0)
    failed = [o for o in p.take_outputs() if isinstance(o, SessionFailed)]
    assert [(f.encapsulation_status, f.encapsulation_command, f.retry_in) for f in failed] == [
        (0x64, 0x6F, 0.5)]


# ------------------------------------------------------------------------------------------
# PlcSession: a short reconnect schedule, a bounded connect, a bound on requests in flight
# ------------------------------------------------------------------------------------------


def test_plc_session_default_schedule_retries_within_half_a_second_whatever_the_outage() -> None:
    p = PlcSession("10.0.0.5", 44818, rng=FixedRng())
    delays = []
    now = 0.0
    p.send_rr(FO, now)
    for _ in range(200):  # 200 refused attempts: the PLC is down for a long time
        p.take_outputs()
        p.connect_failed("Connection refused", now)
        failed = [o for o in p.take_outputs() if isinstance(o, SessionFailed)][0]
        assert failed.retry_in is not None
        delays.append(failed.retry_in)
        now = p.retry_at
        p.on_timer(now)
    assert delays[:5] == [0.1, 0.2, 0.4, 0.5, 0.5] and max(delays) == 0.5
    assert p.down_since == 0.0 and p.attempt == 200


def test_plc_session_connect_that_gets_no_answer_is_given_up_at_its_deadline() -> None:
    p = plc(connect_timeout=1.5)
    h = p.send_rr(FO, 10.0)
    assert p.take_outputs()[0] == Connect("10.0.0.5", 44818)
    assert p.next_deadline() == 11.5  # before the RegisterSession timeout (15.0)
    p.on_timer(11.4999)
    assert p.take_outputs() == [] and p.state is PlcState.CONNECTING
    p.on_timer(11.5)
    reason = "TCP connect to 10.0.0.5:44818: no answer within 1.5 s"
    assert p.take_outputs() == [
        SessionFailed(reason, None, 0.5, 12.0), CloseSocket(False),
        RequestFailed(h, f"no session to PLC 10.0.0.5:44818: {reason}")]
    assert plc_state(p) is PlcState.BACKOFF and p.down_since == 11.5


def test_plc_session_down_since_the_first_failure_until_registered_again() -> None:
    p = ready_plc(now=0.0)
    assert p.down_since is None and not p.down
    p.receive_data(b"", 5.0)  # EOF: the PLC went away
    assert p.down and p.down_since == 5.0
    for _ in range(3):
        p.on_timer(p.retry_at)
        p.connect_failed("Connection refused", p.retry_at)
    assert p.down_since == 5.0 and p.sessions_failed == 4
    p.on_timer(p.retry_at)
    reg = sent_frames(p.take_outputs())[0]
    p.connected(p.retry_at)
    p.receive_data(encap.EncapsulationPacket(0x65, b"\x01\x00\x00\x00", HANDLE, 0,
                                             reg.context).encode(), p.retry_at)
    assert SessionReady(HANDLE) in p.take_outputs()
    assert p.down_since is None and p.up and p.attempt == 0


def test_plc_session_hands_the_session_at_most_max_in_flight_requests_in_order() -> None:
    p = ready_plc(now=0.0)
    p.configure(backoff=BackoffPolicy(0.5, 4.0, 0.25), connect_timeout=2.0, max_in_flight=2)
    handles = [p.send_rr(bytes([0x54, i]), 1.0) for i in range(5)]
    first = sent_frames(p.take_outputs())
    assert len(first) == 2 and p.in_flight == 2 and p.held == 3
    assert [encap.SendData.decode(f.data).unconnected() for f in first] == [b"\x54\x00",
                                                                           b"\x54\x01"]
    # One answer makes room for one more, the next in order; the request timeout of a held
    # request starts when it goes out.
    p.receive_data(rr_reply(first[0].context, cip.Reply(0x54)), 4.0)
    outs = p.take_outputs()
    assert outs[0] == ReplyReceived(handles[0], cip.Reply(0x54))
    nxt = sent_frames(outs)
    assert [encap.SendData.decode(f.data).unconnected() for f in nxt] == [b"\x54\x02"]
    assert p.in_flight == 2 and p.held == 2
    assert p.next_deadline() == 1.0 + 5.0  # the oldest in flight, sent at 1.0
    # The session fails: first that, then the requests in flight, then the held ones.
    p.receive_data(b"", 5.0)
    outs = p.take_outputs()
    assert isinstance(outs[0], SessionFailed) and outs[1] == CloseSocket(False)
    assert [o.handle for o in outs[2:] if isinstance(o, RequestFailed)] == handles[1:]
    assert p.in_flight == 0 and p.held == 0


def test_plc_session_close_fails_held_requests_too() -> None:
    p = ready_plc(now=0.0)
    p.configure(backoff=BackoffPolicy(0.5, 4.0, 0.25), connect_timeout=2.0, max_in_flight=1)
    h1, h2 = p.send_rr(FO, 1.0), p.send_rr(FO, 1.0)
    p.take_outputs()
    p.close(2.0)
    failed = [o for o in p.take_outputs() if isinstance(o, RequestFailed)]
    assert failed == [RequestFailed(h1, "session closed"), RequestFailed(h2, "session closed")]


@pytest.mark.parametrize(("kw", "needle"), [
    ({"connect_timeout": 0.0}, "connect_timeout"),
    ({"max_in_flight": 0}, "max_in_flight"),
])
def test_plc_session_refuses_nonsense_limits(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        plc(**kw)
