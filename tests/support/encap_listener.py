"""A tiny encapsulation listener served in the test's own thread, for tests of the originator's
session socket (``workers/session_socket.py``, the I/O worker's PLC sessions): it accepts TCP
connections, answers RegisterSession with ``HANDLE``, records every command and where each
connection came from, and answers nothing else (a Forward_Open sent to it stays pending).

    listener = Listener("127.61.13.2")
    ...                         # the code under test connects to (listener address, port)
    listener.service()          # in the test's wait loop: accept, read, answer
"""

from __future__ import annotations

import socket

from pyconpro.acquisition import encap

HANDLE = 0x0BADCAFE


class Listener:
    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.conns: list[tuple[socket.socket, encap.FrameBuffer]] = []
        self.accepted = 0
        self.peers: list[str] = []  # the source address of each accepted connection
        self.commands: list[int] = []
        self.eof = 0  # connections the other side closed

    def service(self) -> None:
        """Accept one waiting connection, read what each has sent, answer RegisterSession."""
        try:
            conn, peer = self.sock.accept()
        except BlockingIOError:
            pass
        else:
            conn.setblocking(False)
            self.conns.append((conn, encap.FrameBuffer()))
            self.accepted += 1
            self.peers.append(peer[0])
        for conn, frames in list(self.conns):
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                self.eof += 1
                self.conns.remove((conn, frames))
                conn.close()
                continue
            for f in frames.feed(data):
                self.commands.append(f.command)
                if f.command == encap.Command.REGISTER_SESSION:
                    conn.sendall(encap.EncapsulationPacket(f.command, f.data, HANDLE, 0,
                                                           f.context).encode())

    def drop(self) -> None:
        """Close every accepted connection (the other side reads EOF)."""
        for conn, _ in self.conns:
            conn.close()
        self.conns.clear()

    def close(self) -> None:
        self.drop()
        self.sock.close()
