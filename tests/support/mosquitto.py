"""A throw-away Mosquitto broker for tests, and a subscriber that collects what it delivers.

The broker is Debian's ``mosquitto`` (``/usr/sbin/mosquitto``; a test skips with the install
command when it is missing, and fails in CI, where ``PYCONPRO_REQUIRE_MOSQUITTO=1``), on a
private loopback address and a kernel-chosen port, with its config and log in a new temporary
directory, started with ``workers/process.py`` and stopped (or killed) by its PID
(``tests/support/servers.py``). It keeps no persistence unless asked (a kill loses what it
held, as a real broker without persistence would) and queues without limit for a slow
subscriber, so what the tests count is what the sink delivered.

``Subscriber`` is a paho-mqtt client on its own network thread, subscribed (QoS 1) to some
filters, that keeps every message in arrival order and reconnects (and subscribes again) after
the broker restarts. ``barrier()`` publishes a marker through the broker and waits for it: once
it is back, everything the broker had delivered before it is in ``messages``.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.ports import free_port
from tests.support.servers import ThrowAwayServer, require_server, session_server

BROKER_HOST = "127.83.61.11"
INSTALL = "apt-get install mosquitto"
START_TIMEOUT_S = 20.0
WAIT_S = 30.0


def require_mosquitto() -> str:
    """The broker binary; skips the test (fails in CI) when it is missing."""
    return require_server("mosquitto", "mosquitto", ("/usr/sbin/mosquitto",),
                          f"the Mosquitto broker is not installed: {INSTALL}", "paho.mqtt.client",
                          "paho-mqtt")  # fmt: skip


class MosquittoBroker(ThrowAwayServer):
    """One broker and its directory (``ThrowAwayServer``). ``extra`` lines go into its config
    (a password file, TLS listeners, ...)."""

    NAME = "mosquitto"
    STOP_TIMEOUT_S = 10.0

    def __init__(self, binary: str, host: str = BROKER_HOST, extra: Sequence[str] = (), *,
                 persistence: bool = False) -> None:  # fmt: skip
        super().__init__("pyconpro-mqtt-", "mosquitto.log")
        self.binary = binary
        self.host = host
        self.port = free_port(host)
        self.conf = self.root / "mosquitto.conf"
        self.conf.write_text("\n".join([
            f"listener {self.port} {host}",
            "allow_anonymous true",
            *(["persistence true", f"persistence_location {self.root}/",
               "autosave_interval 3600"] if persistence else ["persistence false"]),
            "max_queued_messages 0",  # no limit: a slow test subscriber loses nothing
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "user root",  # as root (CI) do not switch to the mosquitto user
            *extra,
        ]) + "\n", encoding="utf-8")  # fmt: skip

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the broker and return once it accepts connections."""
        self._launch([self.binary, "-c", str(self.conf)], self._accepts, timeout_s)

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port),
                                                                    timeout=1):  # fmt: skip
            return True
        return False

    def save(self) -> None:
        """Have it write its persistence file now (SIGUSR1), and wait until it is there."""
        assert self.child is not None
        db = self.root / "mosquitto.db"
        db.unlink(missing_ok=True)
        self.child.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not db.exists():
            assert time.monotonic() < deadline, "mosquitto did not save its database"
            time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


_ids = itertools.count(1)


class Subscriber:
    """A collecting subscriber (module docstring). ``messages`` grows on paho's thread; read
    it through ``wait``/``barrier``/``snapshot``."""

    def __init__(self, broker: MosquittoBroker, filters: Sequence[str], *,
                 persistent: bool = False) -> None:  # fmt: skip
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.filters = list(filters)
        self.broker_host, self.broker_port = broker.host, broker.port
        self.messages: list[Message] = []
        self.connects = 0
        self._cond = threading.Condition()
        self._tag = f"pyconpro-test-{next(_ids)}-{id(self):x}"
        # persistent: a session the broker keeps while we are away (and, with persistence,
        # across its restart), so nothing published meanwhile is missed.
        self._client = c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._tag,
                                       clean_session=not persistent)  # fmt: skip
        c.reconnect_delay_set(1, 1)
        c.max_inflight_messages_set(0)
        c.on_connect = self._connected
        c.on_message = self._message
        c.on_subscribe = self._subscribed
        self._subscribed_count = 0
        c.connect(broker.host, broker.port, keepalive=10)
        c.loop_start()
        self.wait(lambda: self._subscribed_count >= 1, what="the subscription")

    def _connected(self, client: Any, _u: Any, _f: Any, code: Any, _p: Any) -> None:
        if not code.is_failure:
            client.subscribe([(f, 1) for f in [*self.filters, f"{self._tag}/barrier/#"]])
            with self._cond:
                self.connects += 1

    def _subscribed(self, *_args: Any) -> None:
        with self._cond:
            self._subscribed_count += 1
            self._cond.notify_all()

    def _message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait(self, ready: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "") -> None:
        """Until ``ready()`` (called under the lock); AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not within {timeout_s} s: {what or ready}")
                self._cond.wait(min(left, 0.2))

    def snapshot(self) -> list[Message]:
        with self._cond:
            return list(self.messages)

    def barrier(self, timeout_s: float = WAIT_S) -> list[Message]:
        """Publish a marker and wait for it; the messages before it (markers left out)."""
        topic = f"{self._tag}/barrier/{next(_ids)}"
        self._client.publish(topic, b"", qos=1)
        self.wait(lambda: any(m.topic == topic for m in self.messages), timeout_s, topic)
        with self._cond:
            return [m for m in self.messages if not m.topic.startswith(f"{self._tag}/barrier/")]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish (QoS 1) and wait until the broker acknowledged it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()  # paho closes its wake-up socket pair only in __del__


# --------------------------------------------------------------------------- pytest fixtures
# Imported by tests/conftest.py.


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """One broker for the session; tests that kill or restart a broker start their own."""
    yield from session_server(MosquittoBroker(require_mosquitto()))


@pytest.fixture
def mqtt_root(mosquitto_broker: MosquittoBroker) -> Iterator[tuple[str, Subscriber]]:
    """A topic root of this test's own on the session's broker, and a subscriber to it."""
    root = f"t{next(_ids)}"
    sub = Subscriber(mosquitto_broker, [f"{root}/#"])
    try:
        yield root, sub
    finally:
        sub.close()

