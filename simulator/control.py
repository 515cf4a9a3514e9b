"""Run-time control of a running simulator: a line-based JSON protocol on a local TCP port.

One JSON object per line in, one per line out (``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}``). Commands (``cmd``):

| cmd              | arguments                             | effect                               |
|------------------|---------------------------------------|--------------------------------------|
| ``ping``         |                                       | ``{"ok": true}``                     |
| ``status``       |                                       | connections, counters, faults, ports |
| ``faults``       | ``set``: {name: val}, ``clear``: bool | change fault switches (faults.py)    |
| ``restart``      | ``close_tcp``: bool (default false)   | new incarnation, connections lost    |
| ``reset_tcp``    |                                       | RST every TCP connection             |
| ``set_produced`` | ``tag``, ``produced``: bool or null   | set (or flip, with null) the flag    |
| ``producers``    |                                       | every T->O stream: id, destination,  |
|                  |                                       | last sequence numbers, tag image     |
| ``record_heartbeats`` | ``path``: file, or null to stop  | write every class-1 datagram         |
|                  |                                       | received with its kernel time        |
|                  |                                       | (``server.HEARTBEAT_RECORD``)        |
| ``consume``      | ``tag``: {address, tag, type, ...}    | consume a tag from a producer        |
|                  |                                       | (simulator/consumed.py)              |
| ``unconsume``    | ``key``: ``<address>/<tag>``          | stop consuming it (Forward_Close)    |
| ``consumed``     | ``since``: index (default 0)          | each consumed tag: state, events and |
|                  |                                       | the values received from ``since``   |
| ``stop``         |                                       | end the simulator process cleanly    |

``ControlServer`` lives inside the simulator's selector loop (no threads); ``SimulatorControl``
is the blocking client tests use.
"""

from __future__ import annotations

import json
import selectors
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from pyconpro.acquisition.errors import UsageError
from pyconpro.simulator.consumed import ConsumedSpec
from pyconpro.simulator.faults import FaultSettings

if TYPE_CHECKING:
    from pyconpro.simulator.server import SimulatorServer

_MAX_LINE = 65536


def parse_endpoint(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` -> (host, port); ValueError names the expected form."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(
            f"control endpoint {text!r}: give PORT or HOST:PORT, e.g. 127.0.0.1:0"
        ) from None
    if not 0 <= number <= 65535:
        raise ValueError(f"control endpoint {text!r}: port must be 0..65535")
    return (host or default_host), number


@dataclass(eq=False)
class _Peer:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)


class ControlServer:
    """Accepts control clients on ``(host, port)`` and executes their commands."""

    def __init__(self, server: SimulatorServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listen.bind((host, port))
        self._listen.listen(8)
        self._listen.setblocking(False)
        self.address: tuple[str, int] = self._listen.getsockname()
        self._peers: dict[socket.socket, _Peer] = {}
        server.selector.register(self._listen, selectors.EVENT_READ, self._on_accept)

    def close(self) -> None:
        for peer in list(self._peers.values()):
            self._drop(peer)
        try:
            self.server.selector.unregister(self._listen)
        except (KeyError, ValueError):
            pass
        self._listen.close()

    def _on_accept(self, mask: int) -> None:
        try:
            sock, _ = self._listen.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        peer = _Peer(sock)
        self._peers[sock] = peer
        self.server.selector.register(
            sock, selectors.EVENT_READ, lambda m, p=peer: self._on_peer(p, m)
        )

    def _drop(self, peer: _Peer) -> None:
        if self._peers.pop(peer.sock, None) is None:
            return
        try:
            self.server.selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        peer.sock.close()

    def _on_peer(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if not mask & selectors.EVENT_READ or peer.sock not in self._peers:
            return
        try:
            data = peer.sock.recv(_MAX_LINE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(peer)
            return
        if not data:
            self._drop(peer)
            return
        peer.buf += data
        while b"\n" in peer.buf:
            line, _, rest = bytes(peer.buf).partition(b"\n")
            peer.buf = bytearray(rest)
            if line.strip():
                peer.out += json.dumps(self.execute_line(line), sort_keys=True).encode() + b"\n"
        if len(peer.buf) > _MAX_LINE:
            peer.out += b'{"ok": false, "error": "line too long"}\n'
            peer.buf.clear()
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        while peer.out:
            try:
                n = peer.sock.send(peer.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(peer)
                return
            del peer.out[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.out else 0)
        self.server.selector.modify(peer.sock, events, lambda m, p=peer: self._on_peer(p, m))

    # ------------------------------------------------------------------ commands

    def execute_line(self, line: bytes) -> dict[str, Any]:
        try:
            try:
                request = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"not JSON ({e}); send one JSON object per line") from None
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise TypeError('send a JSON object with a "cmd" string, e.g. {"cmd": "status"}')
            return {"ok": True, **self.execute(request)}
        except (ValueError, TypeError) as e:
            return {"ok": False, "error": str(e)}

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        srv = self.server
        cmd = request["cmd"]
        if cmd == "ping":
            return {}
        if cmd == "status":
            return {"status": srv.status()}
        if cmd == "faults":
            settings = FaultSettings() if request.get("clear") else srv.faults.settings
            changes = request.get("set") or {}
            if not isinstance(changes, dict):
                raise ValueError('"set" must be an object of fault names to values')
            srv.set_faults(settings.updated(changes))
            return {"faults": srv.faults.settings.as_dict()}
        if cmd == "restart":
            srv.restart(close_tcp=bool(request.get("close_tcp", False)))
            return {"incarnation": srv.target.incarnation}
        if cmd == "reset_tcp":
            return {"reset": srv.reset_tcp()}
        if cmd == "set_produced":
            tag = request.get("tag")
            if not isinstance(tag, str):
                raise ValueError('"tag" must be a tag name')
            produced = request.get("produced")
            if produced is not None and not isinstance(produced, bool):
                raise ValueError('"produced" must be true, false or null (flip)')
            return {"tag": tag, "produced": srv.set_produced(tag, produced)}
        if cmd == "producers":
            return {"producers": srv.producers()}
        if cmd == "record_heartbeats":
            path = request.get("path")
            if path is not None and not isinstance(path, str):
                raise ValueError('"path" must be a file path, or null to stop recording')
            return {"records": srv.record_heartbeats(path)}
        if cmd in ("consume", "unconsume", "consumed"):
            return self._consumed(cmd, request)
        if cmd == "stop":
            srv.request_stop()
            return {}
        raise ValueError(
            f"unknown command {cmd!r}; known: ping, status, faults, restart, reset_tcp,"
            " set_produced, producers, record_heartbeats, consume, unconsume, consumed, stop"
        )

    def _consumed(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        srv = self.server
        try:
            if cmd == "consume":
                spec = request.get("tag")
                if not isinstance(spec, dict):
                    raise ValueError('"tag" must be an object: address, tag, type, ...')
                srv.consume(ConsumedSpec.from_dict(spec))
            elif cmd == "unconsume":
                srv.unconsume(str(request.get("key")))
        except UsageError as e:
            raise ValueError(str(e)) from None
        since = request.get("since", 0)
        if not isinstance(since, int):
            raise ValueError('"since" must be an integer index')
        return {"consumed": srv.consumed_status(since)}


class ControlError(RuntimeError):
    """The simulator answered ``ok: false`` (the message says why)."""


class SimulatorControl:
    """Blocking client of the control channel, for tests and scripts.

    >>> ctl = SimulatorControl(("127.0.0.1", 41234))
    >>> ctl.faults(drop=0.5); ctl.status()["connections"]; ctl.close()
    """

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock = socket.create_connection(address, timeout=timeout)
        self._buf = b""

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self._sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        while b"\n" not in self._buf:
            chunk = self._sock.recv(_MAX_LINE)
            if not chunk:
                raise ConnectionError(f"simulator control {self.address} closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "unknown error"))
        return reply

    def ping(self) -> None:
        self.call("ping")

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.call("status")["status"]
        return status

    def connections(self) -> list[dict[str, Any]]:
        conns: list[dict[str, Any]] = self.status()["connections"]
        return conns

    def faults(self, clear: bool = False, **settings: Any) -> dict[str, Any]:
        """Set fault switches (``drop=0.5``, ``stop_producing=True`` ...); ``clear`` first
        resets every switch."""
        faults: dict[str, Any] = self.call("faults", set=settings, clear=clear)["faults"]
        return faults

    def clear_faults(self) -> dict[str, Any]:
        return self.faults(clear=True)

    def restart(self, close_tcp: bool = False) -> int:
        return int(self.call("restart", close_tcp=close_tcp)["incarnation"])

    def reset_tcp(self) -> int:
        return int(self.call("reset_tcp")["reset"])

    def set_produced(self, tag: str, produced: bool | None = None) -> bool:
        return bool(self.call("set_produced", tag=tag, produced=produced)["produced"])

    def producers(self) -> list[dict[str, Any]]:
        """Every T->O stream the simulator produces (``Producer.summary``)."""
        producers: list[dict[str, Any]] = self.call("producers")["producers"]
        return producers

    def record_heartbeats(self, path: str | None) -> int:
        """Start recording received class-1 datagrams to ``path`` (None: stop); the number of
        records the recording that ended wrote."""
        return int(self.call("record_heartbeats", path=path)["records"])

    def consume(self, address: str, tag: str, type: str, **options: Any) -> None:
        """Consume ``tag`` from the producer at ``address`` (options: members, rpi_ms,
        multiplier, port, udp_port; simulator/consumed.py)."""
        self.call("consume", tag={"address": address, "tag": tag, "type": type, **options})

    def unconsume(self, key: str) -> None:
        self.call("unconsume", key=key)

    def consumed(self, since: int = 0) -> list[dict[str, Any]]:
        """Every consumed tag: key, state, received, events, records from index ``since``."""
        tags: list[dict[str, Any]] = self.call("consumed", since=since)["consumed"]
        return tags

    def stop(self) -> None:
        self.call("stop")
