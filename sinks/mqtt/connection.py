"""One MQTT connection of the MQTT sink: a new paho-mqtt client per connection (so nothing
queued for an old connection is ever sent on a new one, which would break Sparkplug's birth
and sequence order), its network thread (``loop_start``) with reconnection off, the CONNACK
and SUBACKs awaited, and acknowledgements of what was published awaited in order.

Everything that may pass (refused, unreachable, dropped, refused login, TLS handshake failed,
acknowledgements not coming) is ``OutputUnavailable`` with the cause and the fix; the caller
then drops the connection and makes a new one on its next attempt.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pyconpro.sinks.base import OutputUnavailable
from pyconpro.sinks.mqtt.sparkplug import Publish

log = logging.getLogger("pyconpro.sink")

# Messages in flight at once (QoS 1, 2); beyond, paho queues them until acknowledgements free
# a slot. About two batches, so the broker's round trip is not paid per message.
MAX_INFLIGHT = 2000


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and how to connect (the password is read at each connection, never kept)."""

    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    connect_timeout_s: float = 5.0
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""

    @property
    def where(self) -> str:
        return f"MQTT broker {self.host}:{self.port}{' (TLS)' if self.tls else ''}"


def _refused(code: ReasonCode, where: str) -> OutputUnavailable:
    text = str(code)
    low = text.lower()
    if "user name or password" in low or "bad authentication" in low:
        return OutputUnavailable("login refused", f"{where}: login refused ({text}): check"
                                 " username and the password (password_file, password_env)")
    if "not authorized" in low:
        return OutputUnavailable("not authorized", f"{where}: not authorized ({text}): allow"
                                 " this user / client id in the broker's ACL")
    if "identifier" in low:
        return OutputUnavailable("client id refused", f"{where}: client id refused ({text}):"
                                 " set another client_id")
    return OutputUnavailable("refused", f"{where}: connection refused ({text}): see the"
                             " broker's log")


class Connection:
    """Open with ``open``; then ``publish`` and ``wait``; ``close`` at the end. ``lost`` says
    why it broke (None while it works). ``on_message(topic, payload)`` runs on paho's network
    thread: it must only take note."""

    def __init__(self, broker: Broker, password: str | None, will: Publish | None,
                 subscriptions: Sequence[str], on_message: Callable[[str, bytes], None]
                 ) -> None:  # fmt: skip
        self.broker = broker
        self.lost: str | None = None
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._subacks: set[int] = set()
        self._started = False
        c = self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=broker.client_id, clean_session=True,
            protocol=mqtt.MQTTv311, reconnect_on_failure=False,
        )  # fmt: skip
        c.connect_timeout = broker.connect_timeout_s
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.max_queued_messages_set(0)
        if broker.tls:
            c.tls_set(ca_certs=broker.ca_file or None, certfile=broker.cert_file or None,
                      keyfile=broker.key_file or None)  # fmt: skip
        if broker.username:
            c.username_pw_set(broker.username, password)
        if will is not None:
            c.will_set(will.topic, will.payload, will.qos, will.retain)
        c.on_connect = self._connected
        c.on_disconnect = self._disconnected
        c.on_subscribe = self._subscribed
        c.on_publish = self._published
        c.on_message = self._message

    # -- paho's thread ------------------------------------------------------------------

    def _connected(self, _c: Any, _u: Any, _flags: Any, code: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._connack = code
            self._cond.notify_all()

    def _disconnected(self, _c: Any, _u: Any, _flags: Any, code: ReasonCode, _p: Any) -> None:
        with self._cond:
            if self.lost is None:
                self.lost = f"connection lost ({code})"
            self._cond.notify_all()

    def _subscribed(self, _c: Any, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        with self._cond:
            self._subacks.add(mid)
            self._cond.notify_all()

    def _published(self, _c: Any, _u: Any, _mid: int, _code: Any, _p: Any) -> None:
        with self._cond:
            self._cond.notify_all()

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload))

    # -- the caller's thread ----------------------------------------------------------------

    def unavailable(self, why: str) -> OutputUnavailable:
        where = self.broker.where
        return OutputUnavailable(
            "unreachable", f"{where}: {why}: check that it runs, the network, host and port;"
                           " retried until it answers",
        )  # fmt: skip

    def open(self) -> None:
        """Connect, wait for the CONNACK, subscribe and wait for the SUBACKs."""
        b = self.broker
        try:
            self._client.connect(b.host, b.port, keepalive=b.keepalive_s)
        except ssl.SSLError as exc:
            raise OutputUnavailable(
                "TLS refused", f"{b.where}: TLS handshake failed ({exc.reason or exc}): check"
                " ca_file (it must sign the broker's certificate, whose name must be host),"
                " cert_file and key_file",
            ) from exc  # fmt: skip
        except OSError as exc:
            raise self.unavailable(f"cannot connect ({exc.strerror or exc})") from exc
        self._client.loop_start()
        self._started = True
        deadline = time.monotonic() + b.connect_timeout_s
        with self._cond:
            self._until(lambda: self._connack is not None, deadline, "no CONNACK")
        assert self._connack is not None
        if self._connack.is_failure:
            raise _refused(self._connack, b.where)
        mids = []
        for topic in self._subscriptions:
            rc, mid = self._client.subscribe(topic, qos=1)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise self.unavailable(f"cannot subscribe to {topic} ({rc})")
            mids.append(mid)
        with self._cond:
            self._until(lambda: all(m in self._subacks for m in mids), deadline, "no SUBACK")

    def _until(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        """Wait (holding the condition) until ``ready()``; ``OutputUnavailable`` when the
        connection breaks or ``deadline`` passes first."""
        while not ready():
            if self.lost is not None:
                raise self.unavailable(self.lost)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.unavailable(f"{what} within {self.broker.connect_timeout_s:g} s")
            self._cond.wait(min(left, 0.5))

    def wait_for(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``ready()`` (a test of what ``on_message`` noted):
        True when it became so, False on timeout or a lost connection."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0 or self.lost is not None:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def notify(self) -> None:
        """Wake a ``wait_for`` (``on_message`` noted something)."""
        with self._cond:
            self._cond.notify_all()

    def publish(self, p: Publish) -> mqtt.MQTTMessageInfo:
        if self.lost is not None:
            raise self.unavailable(self.lost)
        info = self._client.publish(p.topic, p.payload, p.qos, p.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._cond:
                self.lost = self.lost or f"publish failed ({mqtt.error_string(info.rc)})"
            raise self.unavailable(self.lost)
        return info

    def wait(self, infos: Sequence[mqtt.MQTTMessageInfo], timeout_s: float) -> None:
        """Return once the broker acknowledged every one of ``infos`` (QoS 1: PUBACK; 2:
        PUBCOMP; 0: written to the socket); ``OutputUnavailable`` when the connection breaks
        or ``timeout_s`` passes first."""
        i, n = 0, len(infos)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                while i < n and infos[i].is_published():
                    i += 1
                if i == n:
                    return
                if self.lost is not None:
                    raise self.unavailable(f"{self.lost}, {n - i} of {n} not acknowledged")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OutputUnavailable(
                        "no acknowledgement",
                        f"{self.broker.where}: {n - i} of {n} message(s) not acknowledged"
                        f" within {timeout_s:g} s (ack_timeout_s): the broker is overloaded"
                        " or stuck; reconnecting",
                    )  # fmt: skip
                self._cond.wait(min(left, 0.5))

    def drop(self, why: str) -> None:
        """Disconnect now (from any thread); ``lost`` says ``why``."""
        with self._cond:
            self.lost = self.lost or why
            self._cond.notify_all()
        self._client.disconnect()

    def close(self, last: Publish | None = None) -> None:
        """Publish ``last`` (an NDEATH) if still connected, disconnect cleanly (the broker then
        drops the Will), stop the network thread."""
        c = self._client
        try:
            if self.lost is None and self._started and self._connack is not None \
                    and not self._connack.is_failure:  # fmt: skip
                if last is not None:
                    info = c.publish(last.topic, last.payload, last.qos, last.retain)
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        self.wait([info], min(5.0, self.broker.connect_timeout_s))
                c.disconnect()
        except OutputUnavailable:
            pass
        finally:
            if self._started:
                if self.lost is not None:
                    c.disconnect()  # closes what is left of the socket
                c.loop_stop()
            c._reset_sockets()  # paho closes its wake-up socket pair only in __del__
