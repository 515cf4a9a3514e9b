"""The TCP socket of an encapsulation session that this side opens (the originator's).

``acquisition.session.PlcSession`` decides (connect, RegisterSession, keep-alive, back-off,
request matching); ``SessionSocket`` carries out what it asks on a non-blocking socket bound to
a local address, so the other side answers to that address (protocol.md 6.7): ``Connect`` opens
the socket, ``Transmit`` is buffered and written as far as the socket takes it, ``CloseSocket``
closes it (writing an UnRegisterSession first when the session asks), and a reply or a failed
request goes to the callbacks its request left. What the socket reads and how its connect,
send and receive fail go back to the session.

The I/O worker (one per PLC, ``workers/io_worker.py``) and the simulator's consumed tags (one
per tag, ``simulator/consumed.py``) both run their sessions through it; each waits on the
socket in its own loop (``watch`` / ``unwatch``, then ``on_io`` when it is ready) and hears the
session's own news, ``SessionReady`` and ``SessionFailed``, through ``on_session``.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from pyconpro.acquisition import cip, cpf
from pyconpro.acquisition.session import (
    CloseSocket,
    Connect,
    PlcSession,
    PlcSessionOutput,
    ReplyReceived,
    RequestFailed,
    SessionFailed,
    SessionReady,
    Transmit,
)

__all__ = ["Callback", "SessionSocket"]

#: What a request leaves: called with its reply (and the CPF items after the data item), or
#: with the reason it failed.
Callback = tuple[Callable[[cip.Reply, tuple[cpf.Item, ...]], None], Callable[[str], None]]

_RECV = 65536


class SessionSocket:
    """The socket side of ``plc``, opened from ``local_address``.

    ``watch(sock, write)``: wait for ``sock`` to be readable, and writable too when ``write``
    (called again whenever that changes; the first call registers it); ``unwatch(sock)``: stop
    waiting, it is about to be closed. ``on_session(output, now)``: the session is registered
    (``SessionReady``) or failed (``SessionFailed``; the requests it took fail right after).
    ``pumped()``: the session's outputs were all carried out (its deadline may have moved).
    """

    __slots__ = ("plc", "local_address", "sock", "connecting", "outbuf", "callbacks",
                 "pumping", "_watch", "_unwatch", "_on_session", "_pumped")  # fmt: skip

    def __init__(
        self,
        plc: PlcSession,
        local_address: str,
        *,
        watch: Callable[[socket.socket, bool], None],
        unwatch: Callable[[socket.socket], None],
        on_session: Callable[[SessionReady | SessionFailed, float], None],
        pumped: Callable[[], None] | None = None,
    ) -> None:
        self.plc = plc
        self.local_address = local_address
        self.sock: socket.socket | None = None
        self.connecting = False  # connect() asked, its outcome not known yet
        self.outbuf = bytearray()  # what the session transmitted and the socket did not take yet
        self.callbacks: dict[int, Callback] = {}  # request handle -> what it left
        self.pumping = False  # carrying out ``plc``'s outputs (reentrant calls leave them to it)
        self._watch = watch
        self._unwatch = unwatch
        self._on_session = on_session
        self._pumped = pumped

    @property
    def name(self) -> str:
        return self.plc.name

    # ------------------------------------------------------------------ requests

    def request(
        self,
        message: bytes,
        extra: tuple[cpf.Item, ...],
        on_reply: Callable[[cip.Reply, tuple[cpf.Item, ...]], None],
        on_error: Callable[[str], None],
        now: float,
        *,
        force: bool = False,
    ) -> None:
        """Send one unconnected request (``extra``: CPF items after its data item); exactly one
        of ``on_reply`` and ``on_error`` is called later. ``force``: connect now even while the
        session backs off."""
        handle = self.plc.send_rr(message, now, extra_items=extra, force=force)
        self.callbacks[handle] = (on_reply, on_error)
        self.pump(now)

    def close(self, now: float) -> None:
        """UnRegisterSession (when registered) and close; pending requests fail."""
        self.plc.close(now)
        self.pump(now)  # the session asks to close the socket when one is open

    # ------------------------------------------------------------------ the session's outputs

    def pump(self, now: float) -> None:
        """Carry out what the session asked for, in order, then write."""
        if self.pumping:
            return  # called back from one of its outputs: the running pump drains the rest
        self.pumping = True
        try:
            while True:
                outs = self.plc.take_outputs()
                if not outs:
                    if self._write(now):
                        break
                    continue  # the write failed: the session has more to say
                for out in outs:
                    self._carry_out(out, now)
        finally:
            self.pumping = False
        if self._pumped is not None:
            self._pumped()

    def _carry_out(self, out: PlcSessionOutput, now: float) -> None:
        match out:
            case Transmit(data):
                if self.sock is not None:
                    self.outbuf += data
            case Connect(host, port):
                self._connect(host, port, now)
            case CloseSocket(flush):
                self.close_socket(flush=flush)
            case ReplyReceived(handle, reply, items):
                cb = self.callbacks.pop(handle, None)
                if cb is not None:
                    cb[0](reply, items)
            case RequestFailed(handle, reason):
                cb = self.callbacks.pop(handle, None)
                if cb is not None:
                    cb[1](reason)
            case SessionReady() | SessionFailed():
                self._on_session(out, now)

    # ------------------------------------------------------------------ the socket

    def _connect(self, host: str, port: int, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # From our address, so the other side sends P2P data back here (6.7).
            sock.bind((self.local_address, 0))
            rc = sock.connect_ex((host, port))
        except OSError as exc:
            sock.close()
            self.plc.connect_failed(f"cannot connect from {self.local_address}: {exc}", now)
            return
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.plc.connect_failed(f"TCP connect to {self.name} failed: {os.strerror(rc)}", now)
            return
        self.sock = sock
        self.connecting = True
        self.outbuf.clear()
        self._watch(sock, True)

    def _write(self, now: float) -> bool:
        """Write what is buffered as far as the socket takes it; False when the write failed
        (the session was told)."""
        sock = self.sock
        if sock is None:
            return True
        if not self.connecting and self.outbuf:
            try:
                n = sock.send(self.outbuf)
                del self.outbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self.plc.connection_lost(f"TCP send to {self.name} failed: {exc}", now)
                return False
        self._watch(sock, self.connecting or bool(self.outbuf))
        return True

    def on_io(self, readable: bool, now: float) -> None:
        """The socket is ready (``readable``: for reading; else writable, or in error)."""
        sock = self.sock
        if sock is None:
            return
        if self.connecting:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.plc.connect_failed(
                    f"TCP connect to {self.name} failed: {os.strerror(err)}", now
                )
                self.pump(now)
                return
            self.connecting = False
            self.plc.connected(now)
        if readable:
            try:
                data = sock.recv(_RECV)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self.plc.connection_lost(f"TCP receive from {self.name} failed: {exc}", now)
            else:
                self.plc.receive_data(data, now)  # b"": the other side closed it
        self.pump(now)

    def close_socket(self, *, flush: bool) -> None:
        """Close the socket; ``flush``: write what is buffered first (blocking, briefly:
        UnRegisterSession has no reply, so only the kernel taking it can be waited for)."""
        sock = self.sock
        self.sock = None
        self.connecting = False
        if sock is not None:
            if flush and self.outbuf:
                try:
                    sock.setblocking(True)
                    sock.settimeout(0.5)
                    sock.sendall(self.outbuf)
                except OSError:
                    pass
            self._unwatch(sock)
            sock.close()
        self.outbuf.clear()
