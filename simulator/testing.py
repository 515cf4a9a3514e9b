"""Start the simulator as a subprocess for tests, wait until it is ready, stop it cleanly.

    from pyconpro.simulator.testing import start_simulator

    with start_simulator("127.0.91.2", extra_args=["--initial-watchdog", "0.5"]) as sim:
        sim.address, sim.tcp_port, sim.udp_port      # real ports (0 = any free port)
        sim.control.faults(drop=0.5)                 # SimulatorControl
        sim.control.connections()
    # stopped (SIGTERM, then SIGKILL after a grace period); logs in sim.log_text()
    # (started and stopped by pyconpro.workers.process.spawn_with_log: own process group,
    # parent-death signal, the log a temporary file deleted at the close)

Ports default to 0 so concurrent test runs never collide; the simulator reports the ports it
got on its READY line. Logs (stderr) go to a temporary file, so a chatty simulator can never
block on a full pipe. Every receive/wait has a timeout.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pyconpro.acquisition import cip, cm, cpf, encap
from pyconpro.simulator.control import SimulatorControl
from pyconpro.workers.process import Child, SpawnError, regex_ready, source_env, spawn_with_log

_READY = re.compile(
    r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+) udp=[\d.]+:(?P<udp>\d+)"
    r"(?: control=(?P<chost>[\d.]+):(?P<cport>\d+))? pid=(?P<pid>\d+)"
)
_ROOT = Path(__file__).resolve().parent.parent


class SimulatorError(RuntimeError):
    """The simulator did not start (the message carries its log)."""


class SimulatorProcess:
    """A running simulator subprocess (see the module docstring)."""

    def __init__(self, proc: Child, address: str, tcp_port: int, udp_port: int,
                 control_address: tuple[str, int]) -> None:
        self.proc = proc  # from spawn_with_log: its stderr is the log, deleted by close()
        self.address = address
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.control_address = control_address
        self.control = SimulatorControl(control_address)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.proc.stderr_text()

    def alive(self) -> bool:
        return self.proc.alive()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        try:
            self.control.close()
        except OSError:
            pass
        return self.proc.stop(timeout)

    def close(self) -> None:
        """``stop`` and delete the log."""
        self.stop()
        self.proc.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def simulator_command(
    address: str = "127.0.0.2",
    *,
    tcp_port: int = 0,
    udp_port: int = 0,
    config: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    identity_delay: bool = False,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pyconpro.simulator",
        "--address",
        address,
        "--tcp-port",
        str(tcp_port),
        "--udp-port",
        str(udp_port),
        "--control",
        "127.0.0.1:0",
    ]
    if not identity_delay:
        cmd.append("--no-identity-delay")
    if config is not None:
        cmd += ["--config", os.fspath(config)]
    return cmd + list(extra_args)


def start_simulator(
    address: str = "127.0.0.2",
    *,
    tcp_port: int = 0,
    udp_port: int = 0,
    config: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 15.0,
    identity_delay: bool = False,
) -> SimulatorProcess:
    """Start ``python -m pyconpro.simulator`` and return once its READY line is out and its control
    channel answers. Raises SimulatorError (with the log) when it does not come up."""
    cmd = simulator_command(
        address,
        tcp_port=tcp_port,
        udp_port=udp_port,
        config=config,
        extra_args=extra_args,
        identity_delay=identity_delay,
    )
    try:
        proc = spawn_with_log(cmd, log_prefix="pyconpro-sim-", ready=regex_ready(_READY),
                              cwd=_ROOT, env=source_env(_ROOT), ready_timeout_s=timeout)
    except SpawnError as err:
        raise SimulatorError(f"simulator did not report READY within {timeout:g}s: {err}") from None
    m = proc.ready
    try:
        if not m.get("cport"):
            raise SimulatorError(f"simulator READY line names no control port: {proc.first_line!r}")
        sim = SimulatorProcess(
            proc, m["addr"], int(m["tcp"]), int(m["udp"]), (m["chost"], int(m["cport"]))
        )
    except BaseException:
        proc.close(0)
        raise
    try:
        sim.control.ping()
    except Exception:
        sim.close()
        raise
    return sim


# ---------------------------------------------------------------------------------------------
# A minimal blocking encapsulation client (tests talk to the simulator with our own codec)
# ---------------------------------------------------------------------------------------------


class EncapClient:
    """One TCP encapsulation session, request/reply, every receive with a timeout."""

    def __init__(
        self,
        address: str,
        port: int,
        timeout: float = 5.0,
        register: bool = True,
        source: str | None = None,
    ) -> None:
        """``source``: connect from this local address (the simulator sends P2P T->O data to
        the TCP peer's IP, so a consumer on its own 127.x address gets its own data)."""
        self.sock = socket.create_connection(
            (address, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.frames = encap.FrameBuffer()
        self.pending: list[encap.EncapsulationPacket] = []
        self.session = 0
        self._context = 0
        if register:
            reply = self.request(
                encap.Command.REGISTER_SESSION, encap.RegisterSessionData().encode()
            )
            reply.check_status()
            self.session = reply.session

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        command: int,
        data: bytes = b"",
        *,
        session: int | None = None,
        context: bytes | None = None,
    ) -> bytes:
        self._context += 1
        ctx = context if context is not None else self._context.to_bytes(8, "little")
        frame = encap.EncapsulationPacket(
            command, data, self.session if session is None else session, 0, ctx
        ).encode()
        self.sock.sendall(frame)
        return ctx

    def receive(self) -> encap.EncapsulationPacket:
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the simulator closed the TCP connection")
            self.pending.extend(self.frames.feed(chunk))
        return self.pending.pop(0)

    def request(self, command: int, data: bytes = b"", **kw: object) -> encap.EncapsulationPacket:
        ctx = self.send(command, data, **kw)  # type: ignore[arg-type]
        reply = self.receive()
        assert reply.context == ctx, "reply context differs from the request's"
        return reply

    def send_rr(
        self, message: bytes, extra: tuple[cpf.Item, ...] = ()
    ) -> tuple[cip.Reply, tuple[cpf.Item, ...]]:
        """One unconnected CIP request; the reply and the CPF items after the data item."""
        reply = self.request(encap.Command.SEND_RR_DATA, encap.send_rr_data(message, extra))
        reply.check_status()
        send = encap.SendData.decode(reply.data)
        return cip.Reply.decode(send.unconnected()), send.items[2:]

    def send_unit(
        self, connection_id: int, sequence: int, message: bytes
    ) -> tuple[int, int, cip.Reply]:
        reply = self.request(
            encap.Command.SEND_UNIT_DATA, encap.send_unit_data(connection_id, sequence, message)
        )
        reply.check_status()
        cid, seq, body = encap.SendData.decode(reply.data).connected()
        return cid, seq, cip.Reply.decode(body)

    def forward_open(
        self, request: cm.ForwardOpenRequest, extra: tuple[cpf.Item, ...] = ()
    ) -> tuple[cm.ForwardOpenSuccess | cm.ConnectionFailure, tuple[cpf.Item, ...]]:
        reply, items = self.send_rr(request.encode(), extra)
        return cm.decode_forward_open_reply(reply), items

    def forward_close(
        self, request: cm.ForwardCloseRequest
    ) -> cm.ForwardCloseSuccess | cm.ConnectionFailure:
        reply, _ = self.send_rr(request.encode())
        return cm.decode_forward_close_reply(reply)
