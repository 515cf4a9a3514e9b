"""A throw-away NATS server with JetStream for tests: ``nats-server -js`` on a private loopback
address and a kernel-chosen port, its store in a new temporary directory, stopped (or killed)
by its PID (``tests/support/servers.py``); and a JetStream consumer that reads a stream back.

The binary is Debian's ``nats-server`` (a test skips with the install command when it is
missing, and fails in CI, where ``PYCONPRO_REQUIRE_NATS=1``). A server killed and started
again keeps its port and store directory, so what the stream held before is there again.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import nats.aio.client

from tests.support.ports import free_port
from tests.support.servers import ThrowAwayServer, require_server, session_server

# An address of our own inside 127/8, so that a developer's NATS on 127.0.0.1:4222 and other
# suites' servers never meet ours.
NATS_HOST = "127.83.61.11"
INSTALL = "apt-get install nats-server"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_CANDIDATES = ("/usr/sbin/nats-server", "/usr/bin/nats-server")


def require_nats() -> str:
    """The ``nats-server`` binary; skips the test (fails in CI) when there is none, or when
    the nats-py client the sink and these helpers use is missing."""
    return require_server("nats", "nats-server", _CANDIDATES,
                          f"nats-server not found: {INSTALL}", "nats", "nats-py")


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One message of a stream as a consumer receives it."""

    seq: int  # the stream's sequence number
    subject: str
    msg_id: str | None  # its Nats-Msg-Id header
    data: bytes


class NatsServer(ThrowAwayServer):
    """One server and its store directory (``ThrowAwayServer``; SIGKILL is a crash: the next
    ``start`` recovers the store)."""

    NAME = "nats-server"
    STOP_TIMEOUT_S = STOP_TIMEOUT_S

    def __init__(self, binary: str, host: str = NATS_HOST, token: str | None = None) -> None:
        super().__init__("pyconpro-nats-", "server.log")
        self.binary = binary
        self.host = host
        self.port = free_port(host)
        self.token = token  # a server that wants this token from every client
        self.store = self.root / "store"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and return once JetStream answers (a restarted server first
        recovers its store)."""
        argv = [self.binary, "-js", "-a", self.host, "-p", str(self.port), "-sd",
                str(self.store), *(["--auth", self.token] if self.token else [])]  # fmt: skip
        self._launch(argv, self._ready, timeout_s, retry=False)

    def _ready(self) -> bool:
        async def ask() -> bool:
            try:
                nc = await client(self.url, 1, self.token)
            except Exception:  # noqa: BLE001 - not up yet
                return False
            try:
                await nc.jetstream().account_info()
                return True
            except Exception:  # noqa: BLE001 - JetStream not ready yet
                return False
            finally:
                await nc.close()

        return asyncio.run(ask())

    def count(self, stream: str) -> int:
        return stream_count(self.url, stream, self.token)

    def read(self, stream: str, subjects: str = ">") -> list[StoredMsg]:
        return read_stream(self.url, stream, subjects, token=self.token)


# -- reading a stream back -----------------------------------------------------------------


async def client(url: str, timeout_s: float, token: str | None = None
                 ) -> nats.aio.client.Client:  # fmt: skip
    """A connection of the test's own: one attempt, no reconnects, errors not logged (the
    tests connect while servers are down on purpose)."""
    import nats

    async def quiet(_exc: Exception) -> None:
        pass

    return await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1,
                              reconnect_time_wait=0, connect_timeout=timeout_s,
                              error_cb=quiet, token=token)  # fmt: skip


def stream_count(url: str, stream: str, token: str | None = None) -> int:
    """Messages in ``stream``; 0 while the server is down or the stream does not exist."""

    async def ask() -> int:
        nc = await client(url, 2, token)
        try:
            info = await nc.jetstream().stream_info(stream)
            return int(info.state.messages)
        finally:
            await nc.close()

    try:
        return asyncio.run(ask())
    except Exception:  # noqa: BLE001 - down, starting, or no stream yet
        return 0


def read_stream(url: str, stream: str, subjects: str = ">", timeout_s: float = 120.0,
                token: str | None = None) -> list[StoredMsg]:  # fmt: skip
    """Every message of ``stream`` on ``subjects``, in stream order, through an ephemeral pull
    consumer (what any JetStream client downstream does)."""

    async def fetch_all() -> list[StoredMsg]:
        from nats.errors import TimeoutError as FetchTimeoutError
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        nc = await client(url, 5, token)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(
                subjects, stream=stream,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE,
                                      deliver_policy=DeliverPolicy.ALL),
            )  # fmt: skip
            out: list[StoredMsg] = []
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(1000, timeout=1)
                except (TimeoutError, FetchTimeoutError):  # nats-py raises either
                    if (await sub.consumer_info()).num_pending == 0:
                        break
                    continue
                for m in msgs:
                    headers = m.headers or {}
                    out.append(StoredMsg(m.metadata.sequence.stream, m.subject,
                                         headers.get("Nats-Msg-Id"), m.data))  # fmt: skip
            else:
                raise AssertionError(f"reading stream {stream} took over {timeout_s} s")
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    return asyncio.run(fetch_all())


# --------------------------------------------------------------------------- pytest fixtures
# Imported by tests/conftest.py.


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One server for the session (each sink writes a stream and subjects of its own,
    ``nats_name`` in tests/sinks/bus_testkit.py); the tests that kill or stop a server start
    their own ``NatsServer``."""
    yield from session_server(NatsServer(require_nats()))


_names = itertools.count(1)


def unique_name() -> str:
    """A stream name and subject prefix no other sink of this session uses."""
    return f"t{next(_names)}_{os.getpid()}"
