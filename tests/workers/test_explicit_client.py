"""Tests of workers.explicit_client against a fake PLC on loopback.

The fake is a real TCP server (one thread, 127.61.7.1, port 0) whose CIP answers come from the
simulator's pure explicit-message target (acquisition.logix_controller.LogixController over the
default
simulated tag set), with switchable misbehaviours to exercise every reply check. Every socket
has a timeout; the fixture joins the thread and closes every socket.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pyconpro.acquisition import cip, cm, cpf, encap
from pyconpro.acquisition.discovery import DiscoveryError, ListingLimits, ListingTooLarge
from pyconpro.acquisition.errors import CipError, EncapsulationError, UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_controller import LogixController
from pyconpro.acquisition.logix_types import DINT, STRING
from pyconpro.simulator.faults import endless_listing_reply
from pyconpro.simulator.tags import default_store
from pyconpro.workers.explicit_client import (
    ExplicitClient,
    ExplicitClientError,
    list_identity,
    local_ipv4_interfaces,
    subnet_broadcast,
)

HOST = "127.61.7.1"
CLIENT_ADDR = "127.61.7.2"


class FakePLC:
    """Encapsulation server, a thread per client; ``mode`` selects a misbehaviour."""

    def __init__(self, slot: int = 0) -> None:
        self.store = default_store()
        self.target = LogixController(self.store, slot, cm_handler=self._cm)
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.mode = "normal"
        self.peers: list[str] = []
        self.commands: list[int] = []
        self.class3_to_id: int | None = None
        self._stop = threading.Event()
        self._clients: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for t in self._clients:
            t.join(5)
        self.listener.close()
        assert not self._thread.is_alive() and not any(t.is_alive() for t in self._clients)

    def _cm(self, message: bytes) -> bytes:
        req = cm.ForwardOpenRequest.from_request(cip.Request.decode(message))
        if self.mode == "refuse_class3":
            return (
                cm.ConnectionFailure(
                    0x01, (0x0113,), req.connection_serial, req.vendor_id, req.originator_serial
                )
                .to_reply(req.service)
                .encode()
            )
        self.class3_to_id = req.to_connection_id
        return (
            cm.ForwardOpenSuccess(
                0xC0DE0001,
                req.to_connection_id,
                req.connection_serial,
                req.vendor_id,
                req.originator_serial,
                req.ot_rpi,
                req.to_rpi,
            )
            .to_reply()
            .encode()
        )

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue
            self.peers.append(peer[0])
            t = threading.Thread(target=self._client_thread, args=(conn,), daemon=True)
            self._clients.append(t)
            t.start()

    def _client_thread(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            self._client(conn)

    def _client(self, conn: socket.socket) -> None:
        frames = encap.FrameBuffer()
        session = 0x5E55
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            for pkt in frames.feed(data):
                self.commands.append(pkt.command)
                out = self._answer(pkt, session)
                if out is None:
                    return
                conn.sendall(out)

    # The fake controller's dispatch: one branch per encapsulation command and fault it plays.
    def _answer(self, pkt: encap.EncapsulationPacket,  # noqa: C901
                session: int) -> bytes | None:
        def reply(
            data: bytes,
            status: int = 0,
            sess: int = session,
            context: bytes = pkt.context,
            command: int = pkt.command,
        ) -> bytes:
            return encap.EncapsulationPacket(command, data, sess, status, context).encode()

        mode = self.mode
        if pkt.command == encap.Command.REGISTER_SESSION:
            if mode == "refuse_register":
                return reply(b"", status=0x0002, sess=0)
            return reply(pkt.data)
        if pkt.command == encap.Command.UNREGISTER_SESSION:
            return None
        if pkt.command == encap.Command.LIST_IDENTITY:
            item = self.store.identity.item(cpf.Sockaddr(HOST, 44818))
            return reply(cpf.encode_items([item]))
        if mode == "close":
            return None
        if mode == "silent":
            return b""
        if mode == "encap_error":
            return reply(b"", status=0x0064)
        if mode == "wrong_session":
            return reply(b"", sess=session + 1)
        if mode == "garbage":
            return reply(b"\x00\x00")
        send = encap.SendData.decode(pkt.data)
        if pkt.command == encap.Command.SEND_UNIT_DATA:
            conn_id, seq, message = send.connected()
            assert conn_id == 0xC0DE0001 and self.class3_to_id is not None
            answer = self.target.handle(message, time.monotonic())
            if mode == "wrong_seq":
                seq += 1
            if mode == "wrong_conn":
                return reply(encap.send_unit_data(self.class3_to_id + 1, seq, answer))
            return reply(encap.send_unit_data(self.class3_to_id, seq, answer))
        if mode == "endless_listing":  # the symbol listing never ends
            answer = endless_listing_reply(send.unconnected(), "new") or self.target.handle(
                send.unconnected(), time.monotonic())
        elif mode == "endless_read":  # a fragmented read whose data never ends
            routed = cip.Request.decode(send.unconnected())  # inside Unconnected_Send
            service = cip.UnconnectedSend.decode(routed.data).message[0]
            answer = cip.Reply(service, 0x06, (), struct.pack("<H", 0xC4) + bytes(400)).encode()
        else:
            answer = self.target.handle(send.unconnected(), time.monotonic())
        body = reply(encap.send_rr_data(answer))
        if mode == "stale_first":
            self.mode = "normal"
            stale = reply(
                encap.send_rr_data(b"\xcc\x00\x00\x00\xc4\x00\x00\x00\x00\x00"), context=b"oldreply"
            )
            return stale + body
        if mode == "split":
            return body  # sent whole; see test_reply_split_across_segments
        return body


@pytest.fixture
def plc() -> Iterator[FakePLC]:
    server = FakePLC()
    yield server
    server.close()


@pytest.fixture
def client_factory(plc: FakePLC) -> Iterator[Callable[..., ExplicitClient]]:
    made: list[ExplicitClient] = []

    def make(**kw: object) -> ExplicitClient:
        kw.setdefault("timeout", 2.0)
        c = ExplicitClient(HOST, port=plc.port, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _dint(c: ExplicitClient, name: str) -> int:
    header, data = c.read_tag(name)
    assert header.code == 0xC4
    return int(compile_decoder(DINT)(data))


# ---------------------------------------------------------------------------------------------


def test_session_routed_requests_and_clean_close(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory(local_address=CLIENT_ADDR).open()
    assert c.session_handle == 0x5E55 and c.local_endpoint[0] == CLIENT_ADDR
    assert plc.peers == [CLIENT_ADDR]
    assert _dint(c, "Version") == 33
    header, data = c.read_tag("Text")
    assert header.is_struct and compile_decoder(STRING)(data) == "hello"
    ident = c.list_identity()
    assert ident.vendor_id == 1 and ident.product_name == plc.store.identity.product_name
    c.close()
    assert not c.is_open
    deadline = time.monotonic() + 2
    while encap.Command.UNREGISTER_SESSION not in plc.commands and time.monotonic() < deadline:
        time.sleep(0.01)
    assert plc.commands[0] == encap.Command.REGISTER_SESSION
    assert plc.commands[-1] == encap.Command.UNREGISTER_SESSION
    c.close()  # idempotent


def test_unconnected_send_to_the_wrong_slot_is_a_routing_error(
    client_factory: Callable[..., ExplicitClient],
) -> None:
    c = client_factory(slot=3).open()
    with pytest.raises(CipError, match="routing to slot 3 failed") as err:
        c.request(cip.Request(0x4C, b"\x91\x07Version\x00", b"\x01\x00").encode())
    assert err.value.general == 0x01 and err.value.extended == 0x0312
    assert c.is_open  # a CIP refusal leaves the session usable
    direct = client_factory(slot=None).open()
    assert _dint(direct, "Version") == 33


def test_large_reads_continue_with_fragmented_reads(
    client_factory: Callable[..., ExplicitClient],
) -> None:
    c = client_factory().open()
    header, data = c.read_tag("Big", 125)
    assert header.code == 0xC4 and len(data) == 500


def test_discovery_over_the_client_finds_the_simulated_tags(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory().open()
    cat = c.discover()
    listed = [t for t in plc.store.tags if t.external_access != 3]  # access None: unlisted
    assert sorted(cat.tags) == sorted(t.name for t in listed)
    for tag in listed:
        info = cat[tag.name]
        assert info.type == tag.type and info.byte_size == tag.size()
        assert info.decode(tag.image()) == compile_decoder(tag.type)(tag.image())
    assert not c.has_changed(cat)


def test_discovery_refusal_raises_discovery_error_and_keeps_the_session(
    client_factory: Callable[..., ExplicitClient],
) -> None:
    c = client_factory().open()
    with pytest.raises(DiscoveryError, match="symbol list of Program:Ghost from instance 0"):
        c.discover(programs=["Ghost"])
    assert c.is_open and _dint(c, "Version") == 33


def test_a_listing_that_never_ends_raises_naming_the_plc_and_the_limit(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory().open()
    plc.mode = "endless_listing"
    with pytest.raises(DiscoveryError) as info:
        c.discover(limits=ListingLimits(symbols=2000))
    assert isinstance(info.value.cause, ListingTooLarge)
    assert f"the tag listing of PLC {HOST}:{plc.port} passed the limit of 2000 symbol entries" \
        in str(info.value)
    assert c.requests <= 2000 // 8 + 2
    plc.mode = "normal"
    assert c.is_open and _dint(c, "Version") == 33  # the session is still good


def test_a_fragmented_read_that_never_ends_is_given_up(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory().open()
    plc.mode = "endless_read"
    with pytest.raises(ExplicitClientError, match="more than 10000 bytes"):
        c.read_tag("Big", 125, max_bytes=10_000)


def test_class3_encapsulation_error_ends_the_session(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory(connected=True).open()
    assert c.class3 is not None
    plc.mode = "encap_error"
    with pytest.raises(EncapsulationError, match="0x0064") as err:
        _dint(c, "Version")
    assert err.value.command == encap.Command.SEND_UNIT_DATA and not c.is_open


def test_class3_connection_carries_requests(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory(connected=True).open()
    assert c.class3 is not None and c.class3.ot_connection_id == 0xC0DE0001
    assert _dint(c, "Version") == 33
    assert encap.Command.SEND_UNIT_DATA in plc.commands
    plc.mode = "wrong_seq"
    with pytest.raises(ExplicitClientError, match="sequence"):
        _dint(c, "Version")
    assert not c.is_open


def test_class3_wrong_connection_id(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory(connected=True).open()
    plc.mode = "wrong_conn"
    with pytest.raises(ExplicitClientError, match="on connection"):
        _dint(c, "Version")


def test_class3_refusal_falls_back_to_unconnected(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    plc.mode = "refuse_class3"
    c = client_factory(connected=True).open()
    assert c.class3 is None and c.class3_refusal is not None
    assert c.class3_refusal.extended == 0x0113
    plc.mode = "normal"
    assert _dint(c, "Version") == 33


@pytest.mark.parametrize(
    "mode,error,match",
    [
        ("encap_error", EncapsulationError, "0x0064"),
        ("wrong_session", ExplicitClientError, "session 0x00005E56"),
        ("garbage", ExplicitClientError, "unusable reply"),
        ("close", ExplicitClientError, "closed the TCP connection"),
    ],
)
def test_bad_replies_end_the_session(
    plc: FakePLC,
    client_factory: Callable[..., ExplicitClient],
    mode: str,
    error: type[Exception],
    match: str,
) -> None:
    c = client_factory().open()
    plc.mode = mode
    with pytest.raises(error, match=match):
        _dint(c, "Version")
    assert not c.is_open
    with pytest.raises(UsageError, match="not open"):
        _dint(c, "Version")


def test_no_reply_times_out(plc: FakePLC, client_factory: Callable[..., ExplicitClient]) -> None:
    ticks = iter(range(1000))
    # fake clock: each reading is 0.1 s later, so the 0.25 s deadline passes after two reads
    c = client_factory(timeout=0.25, clock=lambda: next(ticks) * 0.1).open()
    plc.mode = "silent"
    with pytest.raises(ExplicitClientError, match=r"no reply .* within 0.25 s"):
        _dint(c, "Version")
    assert not c.is_open


def test_stale_reply_is_skipped(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    c = client_factory().open()
    plc.mode = "stale_first"
    assert _dint(c, "Version") == 33
    assert c.stale_replies == 1


def test_refused_register_session(
    plc: FakePLC, client_factory: Callable[..., ExplicitClient]
) -> None:
    plc.mode = "refuse_register"
    with pytest.raises(EncapsulationError, match="0x0002"):
        client_factory().open()


def test_connect_errors_name_the_cause() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(ExplicitClientError, match="refused the TCP connection"):
            ExplicitClient(HOST, port=port, timeout=1).open()
    with pytest.raises(ExplicitClientError, match="not an address of this host"):
        ExplicitClient(HOST, port=port, local_address="192.0.2.77", timeout=1).open()
    with pytest.raises(UsageError):
        ExplicitClient(HOST, timeout=0)


# ---------------------------------------------------------------------------------------------
# ListIdentity over UDP
# ---------------------------------------------------------------------------------------------


def test_list_identity_collects_replies_and_skips_garbage() -> None:
    store = default_store()
    responder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    responder.bind((HOST, 0))
    responder.settimeout(2)
    port = responder.getsockname()[1]

    def answer() -> None:
        data, src = responder.recvfrom(1024)
        pkt = encap.EncapsulationPacket.decode(data)
        assert pkt.command == encap.Command.LIST_IDENTITY
        assert struct.unpack_from("<H", pkt.context)[0] >= 1  # max delay in ms
        item = store.identity.item(cpf.Sockaddr(HOST, 44818))
        good = encap.EncapsulationPacket(0x63, cpf.encode_items([item]), 0, 0, pkt.context)
        responder.sendto(b"junk", src)
        responder.sendto(
            encap.EncapsulationPacket(0x63, good.data, 0, 0, bytes(8)).encode(), src
        )  # wrong context: not an answer to us
        responder.sendto(good.encode(), src)
        responder.sendto(good.encode(), src)  # duplicate

    t = threading.Thread(target=answer)
    t.start()
    try:
        found = list_identity([(CLIENT_ADDR, HOST)], timeout=0.5, port=port)
    finally:
        t.join(5)
        responder.close()
    assert len(found) == 1
    dev = found[0]
    assert dev.address == HOST and dev.via == CLIENT_ADDR
    assert dev.identity.serial_number == store.identity.serial_number
    assert dev.identity.product_name == store.identity.product_name


def test_local_interfaces_include_loopback() -> None:
    ifaces = local_ipv4_interfaces()
    assert any(i.address.startswith("127.") for i in ifaces)


@pytest.mark.parametrize(
    ("address", "netmask", "broadcast"),
    [
        ("10.1.2.3", "255.255.255.0", "10.1.2.255"),
        ("192.168.17.40", "255.255.240.0", "192.168.31.255"),
        ("172.16.0.1", "255.255.0.0", "172.16.255.255"),
        ("10.0.0.8", "255.255.255.252", "10.0.0.11"),
        ("10.0.0.8", "255.255.255.254", None),  # /31: no broadcast address
        ("10.0.0.8", "255.255.255.255", None),
        ("10.0.0.8", "255.0.255.0", None),  # not a netmask
    ],
)
def test_subnet_broadcast_from_address_and_netmask(address: str, netmask: str,
                                                   broadcast: str | None) -> None:
    assert subnet_broadcast(address, netmask) == broadcast
