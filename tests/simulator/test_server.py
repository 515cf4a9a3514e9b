"""simulator.server over real sockets: the encapsulation rules of protocol.md 2 / 10.1, the
CIP dispatch, class-3 connected messaging, TCP faults and the control channel.

One simulator subprocess per module on an address of its own (ports chosen by the kernel);
every socket has a timeout and is closed.
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pyconpro.acquisition import cip, cm, cpf, encap, epath
from pyconpro.acquisition.encap import Command
from pyconpro.acquisition.errors import EncapsulationError
from pyconpro.simulator import cli
from pyconpro.simulator.control import ControlError, SimulatorControl, parse_endpoint
from pyconpro.simulator.testing import EncapClient, SimulatorProcess, start_simulator

ADDRESS = "127.0.92.2"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with start_simulator(ADDRESS, extra_args=["--seed", "5"]) as s:
        yield s
        assert s.alive(), s.log_text()


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[EncapClient]:
    sim.control.clear_faults()
    with EncapClient(sim.address, sim.tcp_port, timeout=5.0) as c:
        yield c


def raw_request(c: EncapClient, command: int, data: bytes = b"", session: int | None = None,
                context: bytes = b"_pycomm_") -> tuple[bytes, encap.EncapsulationPacket]:
    """Send one frame; return the raw reply bytes and the decoded packet."""
    c.send(command, data, session=session, context=context)
    reply = c.receive()
    return reply.encode(), reply


# --------------------------------------------------------------------------- sessions


def test_register_session_echoes_body_and_context(sim: SimulatorProcess) -> None:
    with EncapClient(sim.address, sim.tcp_port, register=False) as c:
        raw, reply = raw_request(c, Command.REGISTER_SESSION, b"\x01\x00\x00\x00", session=0)
        assert (reply.command, reply.status, reply.data, reply.context) == (
            Command.REGISTER_SESSION, 0, b"\x01\x00\x00\x00", b"_pycomm_")
        assert reply.session != 0 and len(raw) == 28
        # A second RegisterSession on the same socket: 0x0001 and the existing handle (2.4).
        _, again = raw_request(c, Command.REGISTER_SESSION, b"\x01\x00\x00\x00", session=0)
        assert (again.status, again.session) == (0x0001, reply.session)


@pytest.mark.parametrize("body,status", [
    (b"\x02\x00\x00\x00", 0x0069), (b"\x01\x00\x01\x00", 0x0069), (b"\x01\x00", 0x0065),
])
def test_register_session_refusals(sim: SimulatorProcess, body: bytes, status: int) -> None:
    with EncapClient(sim.address, sim.tcp_port, register=False) as c:
        raw, reply = raw_request(c, Command.REGISTER_SESSION, body, session=0)
        assert reply.status == status and len(raw) == 24


def test_sessions_are_distinct_across_many_clients(sim: SimulatorProcess) -> None:
    clients = [EncapClient(sim.address, sim.tcp_port) for _ in range(20)]
    try:
        assert len({c.session for c in clients}) == 20 and 0 not in {c.session for c in clients}
        for c in clients:  # interleaved requests on every socket
            c.send(Command.LIST_SERVICES)
        for c in clients:
            assert c.receive().command == Command.LIST_SERVICES
        assert sim.control.status()["sessions"] >= 20
    finally:
        for c in clients:
            c.close()


def test_unregister_wrong_handle_then_right_handle_closes(client: EncapClient) -> None:
    raw, reply = raw_request(client, Command.UNREGISTER_SESSION, session=client.session + 1)
    assert reply.status == 0x0064 and len(raw) == 24
    client.send(Command.UNREGISTER_SESSION)
    assert client.sock.recv(100) == b""  # closed, no reply (2.4)


# --------------------------------------------------------------------------- error statuses


@pytest.mark.parametrize("command", [Command.SEND_RR_DATA, Command.SEND_UNIT_DATA])
def test_bad_session_handle_is_a_24_byte_0x0064(client: EncapClient, command: int) -> None:
    data = encap.send_rr_data(cip.Request(1, bytes.fromhex("20012401")).encode())
    raw, reply = raw_request(client, command, data, session=client.session ^ 0x5A5A)
    assert reply.status == 0x0064 and len(raw) == 24 and reply.context == b"_pycomm_"


@pytest.mark.parametrize(
    "command", [Command.LIST_TARGETS, Command.INDICATE_STATUS, Command.CANCEL, 0x1234]
)
def test_unsupported_command(client: EncapClient, command: int) -> None:
    raw, reply = raw_request(client, command)
    assert (reply.command, reply.status, len(raw)) == (command, 0x0001, 24)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no interface handle / timeout
        b"\x00" * 6,  # no CPF
        b"\x00" * 6 + b"\x02\x00\x00\x00\x00\x00\xb2\x00\x10\x00\x01",  # item longer than the data
        encap.SendData((cpf.ConnectedAddress(1), cpf.UnconnectedData(b"\x01\x00"))).encode(),
        encap.SendData((cpf.NullAddress(),)).encode(),
    ],
    ids=["empty", "no-cpf", "short-item", "wrong-address-item", "one-item"],
)
def test_bad_cpf_on_send_rr_data(client: EncapClient, data: bytes) -> None:
    raw, reply = raw_request(client, Command.SEND_RR_DATA, data, session=client.session)
    assert reply.status == 0x0003 and len(raw) == 24


def test_bad_cpf_on_send_unit_data(client: EncapClient) -> None:
    data = encap.send_rr_data(b"\x01\x02\x20\x01\x24\x01")  # unconnected layout
    assert (
        raw_request(client, Command.SEND_UNIT_DATA, data, session=client.session)[1].status
        == 0x0003
    )


def test_nop_gets_no_reply(client: EncapClient) -> None:
    client.send(Command.NOP, b"anything")
    ctx = client.send(Command.LIST_SERVICES)
    reply = client.receive()
    assert reply.command == Command.LIST_SERVICES and reply.context == ctx


# --------------------------------------------------------------------------- discovery


@pytest.mark.parametrize("session", [0, None, 0xDEADBEEF])
def test_list_identity_over_tcp_whatever_the_session(
    client: EncapClient, sim: SimulatorProcess, session: int | None
) -> None:
    _, reply = raw_request(client, Command.LIST_IDENTITY, session=session)
    assert reply.status == 0
    (item,) = cpf.decode_items(reply.data)
    assert isinstance(item, cpf.IdentityItem)
    assert (item.vendor_id, item.device_type) == (1, 0x0E) and item.revision_major >= 21
    assert item.sockaddr == cpf.Sockaddr(ADDRESS, sim.tcp_port)
    assert not item.product_name.startswith("2080")
    # pycomm3 decodes the item at frame offset 26 (just after the count), protocol.md 10.2.
    assert reply.encode()[26:28] == b"\x0c\x00"


def test_list_services_and_interfaces_over_tcp(client: EncapClient) -> None:
    _, services = raw_request(client, Command.LIST_SERVICES, session=0)
    (item,) = cpf.decode_items(services.data)
    assert isinstance(item, cpf.ServicesItem) and item.capabilities & 0x0120 == 0x0120
    assert item.name.rstrip(b"\x00") == b"Communications"
    _, interfaces = raw_request(client, Command.LIST_INTERFACES)
    assert interfaces.status == 0 and interfaces.data == b"\x00\x00"


def _udp(sim: SimulatorProcess, command: int) -> encap.EncapsulationPacket:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind(("127.0.0.1", 0))
        s.sendto(
            encap.EncapsulationPacket(command, context=b"\xf4\x01udp!!!").encode(),
            (sim.address, sim.tcp_port),
        )
        data, src = s.recvfrom(2048)
        assert src == (sim.address, sim.tcp_port)
        return encap.EncapsulationPacket.decode(data)


def test_udp_discovery(sim: SimulatorProcess) -> None:
    ident = _udp(sim, Command.LIST_IDENTITY)
    assert ident.context == b"\xf4\x01udp!!!" and isinstance(
        cpf.decode_items(ident.data)[0], cpf.IdentityItem
    )
    assert isinstance(cpf.decode_items(_udp(sim, Command.LIST_SERVICES).data)[0], cpf.ServicesItem)
    other = _udp(sim, Command.REGISTER_SESSION)
    assert other.status == 0x0001 and other.data == b""


# --------------------------------------------------------------------------- CIP dispatch


def test_unconnected_send_identity_like_pycomm3(client: EncapClient) -> None:
    # protocol.md 10.2 row 3, byte for byte.
    reply, items = client.send_rr(
        bytes.fromhex("52022006240 10A05 0600 01022001 2401 0100 0100".replace(" ", ""))
    )
    assert items == () and reply.service == 0x01 and reply.status == 0
    vendor, dtype = struct.unpack_from("<HH", reply.data)
    assert (vendor, dtype) == (1, 0x0E)


def test_unconnected_send_to_a_wrong_slot_is_refused(client: EncapClient) -> None:
    msg = cip.UnconnectedSend(bytes.fromhex("01022001 2401"), bytes.fromhex("0105"))
    reply, _ = client.send_rr(
        cip.Request(0x52, epath.CONNECTION_MANAGER_PATH, msg.encode()).encode()
    )
    assert reply.status != 0


def test_forward_open_inside_unconnected_send_reaches_the_target(client: EncapClient) -> None:
    fo = cm.produced_tag_forward_open(
        tag="Counter",
        tag_bytes=4,
        to_rpi_us=100_000,
        ot_rpi_us=100_000,
        connection_serial=0x4321,
        vendor_id=0x77,
        originator_serial=0x88,
        to_connection_id=0x99,
    )
    wrapped = cip.UnconnectedSend(fo.encode(), bytes.fromhex("0100"))
    reply, _ = client.send_rr(
        cip.Request(0x52, epath.CONNECTION_MANAGER_PATH, wrapped.encode()).encode()
    )
    ok = cm.decode_forward_open_reply(reply)
    assert isinstance(ok, cm.ForwardOpenSuccess)
    assert isinstance(client.forward_close(cm.forward_close_for(fo)), cm.ForwardCloseSuccess)


def test_unknown_cm_service_is_not_supported(client: EncapClient) -> None:
    reply, _ = client.send_rr(cip.Request(0x57, epath.CONNECTION_MANAGER_PATH).encode())
    assert reply.status == 0x08


def _class3(serial: int) -> cm.ForwardOpenRequest:
    # pycomm3's Large_Forward_Open (protocol.md 10.2 row 4).
    body = bytes.fromhex(
        "0A05 00000000 44332211" + struct.pack("<H", serial).hex() + "0910 78563412 07 000000"
        "01402000 A00F0042 01402000 A00F0042 A3 03 0100 2002 2401"
    )
    return cm.ForwardOpenRequest.decode_body(body, large=True)


def test_class3_connected_messaging(sim: SimulatorProcess, client: EncapClient) -> None:
    ok, items = client.forward_open(_class3(0x0427))
    assert isinstance(ok, cm.ForwardOpenSuccess) and items == ()  # no sockaddr for class 3
    program_name = bytes.fromhex("01022064 2401")
    cid, seq, reply = client.send_unit(ok.ot_connection_id, 1, program_name)
    assert (cid, seq, reply.service, reply.status) == (0x11223344, 1, 0x01, 0)
    length = struct.unpack_from("<H", reply.data)[0]
    assert reply.data[2 : 2 + length].decode()
    # Same sequence count again = retransmission: same reply, request not executed twice.
    before = sim.control.status()["target"]["connected_retransmits"]
    assert client.send_unit(ok.ot_connection_id, 1, program_name)[2] == reply
    assert sim.control.status()["target"]["connected_retransmits"] == before + 1
    # Another session cannot use this connection id.
    with EncapClient(sim.address, sim.tcp_port) as other:
        _, bad = raw_request(
            other,
            Command.SEND_UNIT_DATA,
            encap.send_unit_data(ok.ot_connection_id, 2, program_name),
            session=other.session,
        )
        assert bad.status == 0x0003
    closed = client.forward_close(cm.forward_close_for(_class3(0x0427)))
    assert isinstance(closed, cm.ForwardCloseSuccess)
    with pytest.raises(EncapsulationError) as err:
        client.send_unit(ok.ot_connection_id, 3, program_name)
    assert err.value.status == 0x0003


def test_closing_the_session_closes_its_class3_connections(sim: SimulatorProcess) -> None:
    with EncapClient(sim.address, sim.tcp_port) as c:
        ok, _ = c.forward_open(_class3(0x0500))
        assert isinstance(ok, cm.ForwardOpenSuccess)
        assert any(x["serial"] == 0x0500 for x in sim.control.connections())
    for _ in range(50):  # the server notices the close asynchronously
        if not any(x["serial"] == 0x0500 for x in sim.control.connections()):
            break
    assert not any(x["serial"] == 0x0500 for x in sim.control.connections())


# --------------------------------------------------------------------------- TCP faults


def test_refuse_register_fault(sim: SimulatorProcess) -> None:
    sim.control.faults(refuse_register=True)
    try:
        with EncapClient(sim.address, sim.tcp_port, register=False) as c:
            raw, reply = raw_request(c, Command.REGISTER_SESSION, b"\x01\x00\x00\x00", session=0)
            assert (reply.status, reply.session, len(raw)) == (0x0002, 0, 24)
    finally:
        sim.control.clear_faults()
    EncapClient(sim.address, sim.tcp_port).close()


def test_stop_answering_tcp_then_recover(sim: SimulatorProcess) -> None:
    with EncapClient(sim.address, sim.tcp_port, timeout=0.3) as c:
        sim.control.faults(stop_answering_tcp=True)
        c.send(Command.LIST_SERVICES)
        with pytest.raises(TimeoutError):
            c.receive()
        sim.control.faults(stop_answering_tcp=False)
        c.sock.settimeout(5)
        c.send(Command.LIST_SERVICES)
        assert c.receive().command == Command.LIST_SERVICES


def test_reset_tcp_fault(sim: SimulatorProcess) -> None:
    with EncapClient(sim.address, sim.tcp_port) as c:
        assert sim.control.reset_tcp() >= 1
        with pytest.raises((ConnectionResetError, ConnectionError)):
            c.send(Command.LIST_SERVICES)
            c.receive()


def test_restart_with_close_tcp(sim: SimulatorProcess) -> None:
    with EncapClient(sim.address, sim.tcp_port) as c:
        inc = sim.control.status()["incarnation"]
        assert sim.control.restart(close_tcp=True) != inc
        assert c.sock.recv(100) == b""


# --------------------------------------------------------------------------- control channel


def test_control_status_and_errors(sim: SimulatorProcess) -> None:
    st = sim.control.status()
    assert (
        st["address"] == ADDRESS
        and st["tcp_port"] == sim.tcp_port
        and st["udp_port"] == sim.udp_port
    )
    assert set(st) >= {"connections", "target", "server", "faults", "fault_counters", "incarnation"}
    with pytest.raises(ControlError, match="unknown command"):
        sim.control.call("explode")
    with pytest.raises(ControlError, match="unknown fault"):
        sim.control.faults(explode=1)
    with pytest.raises(ControlError, match="no tag"):
        sim.control.set_produced("NoSuchTag")
    with pytest.raises(ControlError, match="between 0 and 1"):
        sim.control.faults(drop=3)
    with SimulatorControl(sim.control_address) as ctl:
        ctl._sock.sendall(b"not json\n[1, 2]\n")
        with pytest.raises(ControlError, match="JSON"):
            ctl.call("ping")  # the bad lines' error replies come first
        with pytest.raises(ControlError, match="cmd"):
            ctl.call("ping")
        ctl.ping()


def test_control_flips_the_produced_flag(sim: SimulatorProcess, client: EncapClient) -> None:
    fo = cm.produced_tag_forward_open(
        tag="Counter",
        tag_bytes=4,
        to_rpi_us=100_000,
        ot_rpi_us=100_000,
        connection_serial=0x7001,
        vendor_id=0x77,
        originator_serial=0x88,
        to_connection_id=0x99,
    )
    assert sim.control.set_produced("Counter") is False
    try:
        res, _ = client.forward_open(fo)
        assert isinstance(res, cm.ConnectionFailure) and res.additional == (0x031F,)
    finally:
        assert sim.control.set_produced("Counter", True) is True


def test_parse_endpoint() -> None:
    assert parse_endpoint("4000") == ("127.0.0.1", 4000)
    assert parse_endpoint("127.0.0.5:0") == ("127.0.0.5", 0)
    for bad in ("x", "1:99999", ""):
        with pytest.raises(ValueError, match="control endpoint"):
            parse_endpoint(bad)


# --------------------------------------------------------------------------- CLI / process


def test_cli_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.address, args.tcp_port, args.udp_port, args.slot, args.control) == (
        "127.0.0.2",
        44818,
        2222,
        0,
        None,
    )
    args = parser.parse_args(
        ["--size-error", "0x0128", "--unknown-tag-error", "0x012e", "--drop", "0.5"]
    )
    assert (args.size_error, args.unknown_tag_error, args.drop) == (0x0128, 0x012E, 0.5)
    for bad, why in (
        (["--size-error", "0x0114"], "'0x0114': choose one of 0x0109, 0x0128"),
        (["--drop", "2"], "'2': give a probability between 0 and 1"),
        (["--drop", "often"], "'often': give a probability between 0 and 1"),
        (["--tcp-port", "70000"], "'70000': give a port 0..65535 (0 = any free port)"),
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        assert why in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_stop_on_signals(sig: int) -> None:
    sim = start_simulator("127.0.92.3")
    try:
        sim.proc.send_signal(sig)
        assert sim.proc.wait(10) == 0
        assert "stopped" in sim.log_text()
    finally:
        sim.close()


def test_control_stop_command() -> None:
    with start_simulator("127.0.92.4") as sim:
        sim.control.stop()
        assert sim.proc.wait(10) == 0


def test_busy_port_is_reported() -> None:
    with start_simulator("127.0.92.5") as sim:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyconpro.simulator",
                "--address",
                "127.0.92.5",
                "--tcp-port",
                str(sim.tcp_port),
                "--udp-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 2 and "cannot open the simulator's sockets" in proc.stderr


def test_udp_list_identity_after_a_random_delay() -> None:
    """protocol.md 2.5: the reply waits a random time below max(context ms, 500 ms)."""
    with start_simulator("127.0.92.6", identity_delay=True, extra_args=["--seed", "1"]) as s:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.bind(("127.0.0.1", 0))
            for _ in range(3):
                u.sendto(
                    encap.EncapsulationPacket(
                        Command.LIST_IDENTITY, context=b"\x01\x00delay!"
                    ).encode(),
                    (s.address, s.tcp_port),
                )
            replies = [encap.EncapsulationPacket.decode(u.recvfrom(2048)[0]) for _ in range(3)]
        assert all(r.context == b"\x01\x00delay!" and r.status == 0 for r in replies)


def test_share_udp_port_lets_a_load_source_send_from_the_class1_port(
    sim: SimulatorProcess,
) -> None:
    def bind_shared(address: str, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((address, port))

    with pytest.raises(OSError):  # without the option the port is the simulator's alone
        bind_shared(sim.address, sim.udp_port)
    with start_simulator("127.0.92.7", extra_args=["--share-udp-port"]) as shared:
        bind_shared(shared.address, shared.udp_port)
