"""The MQTT sink the SUB loop drives: records handed since the last flush are published at the
flush, and the flush returns once the broker acknowledged all of them (QoS 1, 2), so a record
leaves the spool only after the broker has it.

Any failure (the broker away, a refused login, acknowledgements not coming, the primary host
application offline) drops the connection and raises ``OutputUnavailable``: the loop spools the
batch and retries with backoff; the next connection is a new one (Sparkplug: the next bdSeq,
kept in the spool directory so that the next process goes on from it, a new NBIRTH and
DBIRTHs) and what waited in the spool goes first (Sparkplug: ``is_historical``; JSON:
``"historical": true``).

Messages that reached the broker before a connection broke are published again with their
batch: delivery is at least once; each JSON payload carries its key (``plc``, ``tag``,
``t_wall_ns``, ``seq``) for a consumer that must see each sample once (docs/sinks.md "MQTT").
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyconpro.acquisition.sink_config import OptionValue
from pyconpro.acquisition.wire import Event, Sample, Stats
from pyconpro.sinks.base import OutputUnavailable, PendingSink
from pyconpro.sinks.mqtt import MQTT_SCHEMA, topic_name
from pyconpro.sinks.mqtt.connection import Broker, Connection
from pyconpro.sinks.mqtt.sparkplug import (
    NAMESPACE,
    EdgeNode,
    Publish,
    parse_state,
    rebirth_requested,
)
from pyconpro.sinks.password import read_password
from pyconpro.sinks.records import event_record, gap_record, sample_record

log = logging.getLogger("pyconpro.sink")

# After subscribing to the primary host's STATE, how long to wait for its retained message
# before taking the host as offline (the broker sends it right after the SUBACK).
STATE_WAIT_S = 2.0
HOST_OFFLINE = "primary host offline"


@dataclass(frozen=True, slots=True)
class Settings:
    """The sink's options (``[[sink]] kind = "mqtt"``), validated."""

    broker: Broker
    password_file: str = ""
    password_env: str = ""
    payload: str = "sparkplug"
    qos: int = 1
    ack_timeout_s: float = 30.0
    group_id: str = "pyconpro"
    edge_node_id: str = "pyconpro"
    primary_host_id: str = ""
    sample_topic: str = "pyconpro/{plc}/{tag}"
    event_topic: str = "pyconpro/{plc}/_events"
    gap_topic: str = "pyconpro/_gaps"
    retain: bool = False
    # Sparkplug: the file the last bdSeq is kept in across processes (``bd_seq_path``); "":
    # not kept.
    bd_seq_file: str = ""


def settings_from_options(o: Mapping[str, OptionValue]) -> Settings:
    """``Settings`` from options; ``ValueError`` naming the key and the fix for options that
    do not go together (the config file's own rules, ``MQTT_SCHEMA.validate``: options that
    came through a section passed them already) and for TLS files that are missing."""
    MQTT_SCHEMA.validate(o)
    tls = bool(o["tls"])
    for key in ("ca_file", "cert_file", "key_file"):
        path = str(o[key])
        if path and not Path(path).is_file():
            raise ValueError(f"{key} = {path!r} is not a readable file: fix the path")
    node = str(o["edge_node_id"]) or topic_name(socket.gethostname())
    client_id = str(o["client_id"]) or (
        f"pyconpro-{node}" if o["payload"] == "sparkplug" else f"pyconpro-{node}-{os.getpid()}"
    )
    broker = Broker(
        str(o["host"]), int(o["port"]), client_id, int(o["keepalive_s"]),
        float(o["connect_timeout_s"]), tls, str(o["ca_file"]), str(o["cert_file"]),
        str(o["key_file"]), str(o["username"]),
    )  # fmt: skip
    spool_dir = str(o.get("spool_dir", ""))
    bd_seq_file = str(bd_seq_path(spool_dir, str(o["group_id"]), node)) \
        if spool_dir and o["payload"] == "sparkplug" else ""  # fmt: skip
    return Settings(
        broker, str(o["password_file"]), str(o["password_env"]), str(o["payload"]),
        int(o["qos"]), float(o["ack_timeout_s"]), str(o["group_id"]), node,
        str(o["primary_host_id"]), str(o["sample_topic"]), str(o["event_topic"]),
        str(o["gap_topic"]), bool(o["retain"]), bd_seq_file,
    )  # fmt: skip


def bd_seq_path(spool_dir: str, group_id: str, edge_node_id: str) -> Path:
    """The file that keeps the edge node's last bdSeq, in the spool directory; ``+`` (which
    neither id may hold) separates the ids."""
    return Path(spool_dir) / f"sparkplug+{group_id}+{edge_node_id}.bdseq"


def load_bd_seq(path: Path) -> int:
    """The last bdSeq ``save_bd_seq`` kept in ``path``; -1 (the next is 0) when there is none
    or it cannot be read (logged: a host application may then see a bdSeq again)."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return -1
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the last Sparkplug bdSeq from %s (%s): starting at 0", path, exc)
        return -1
    value = text.strip()
    if not value.isdigit() or int(value) > 255:
        log.warning("%s does not hold a Sparkplug bdSeq (0..255) but %r: starting at 0",
                    path, value[:40])  # fmt: skip
        return -1
    return int(value)


def save_bd_seq(path: Path, bd_seq: int) -> None:
    """Keep ``bd_seq`` in ``path`` for the next process: a temporary file written and synced,
    renamed over ``path``, the directory synced, so a crash leaves the old value or the new.
    A failure is logged, not raised: the node goes on publishing."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{bd_seq}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("cannot keep the Sparkplug bdSeq %d in %s (%s): the next sink process may"
                    " use it again; make the spool directory writable", bd_seq, path, exc)


def _fill(template: str, plc: str, tag: str) -> str:
    return template.replace("{plc}", topic_name(plc) if plc else "").replace(
        "{tag}", topic_name(tag) if tag else "")


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")  # fmt: skip


class MqttSink(PendingSink):
    """One broker connection at a time (``Connection``), opened on first use and again after
    any failure; the records handed since the last flush are kept until the flush."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.s = settings
        self.node = EdgeNode(settings.group_id, settings.edge_node_id, settings.qos)
        self.sparkplug = settings.payload == "sparkplug"
        self.published = 0  # messages the broker acknowledged (this process)
        self._conn: Connection | None = None
        # paho's thread notes a primary host's STATE under _note (a flush may wait for it),
        # and answers a rebirth request and a host going offline itself under _lock, which
        # the loop's thread holds while it composes and publishes (never while it joins
        # paho's thread: closing a connection happens outside it).
        self._note = threading.Lock()
        self._lock = threading.Lock()
        self._host: tuple[bool, int] | None = None  # primary host (online, timestamp)

    @property
    def where(self) -> str:
        return self.s.broker.where

    # -- paho's thread -------------------------------------------------------------------

    def _state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.s.primary_host_id}"

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.s.primary_host_id and topic == self._state_topic():
            self._on_state(topic, payload)
        elif topic == self.node.ncmd_topic() and rebirth_requested(payload):
            with self._lock:
                conn = self._conn
                if conn is None or conn.lost is not None or not self.node.born:
                    return  # births come with the next connection anyway
                log.info("Node Control/Rebirth asked (NCMD): NBIRTH and DBIRTHs again")
                try:
                    for p in self.node.birth(_now_ms()):
                        conn.publish(p)
                except OutputUnavailable:
                    pass  # the connection broke: the next flush makes a new one

    def _on_state(self, topic: str, payload: bytes) -> None:
        """A STATE newer than the last one is noted; online -> offline while born: NDEATH and
        a disconnect (Sparkplug 3.0); the next connection waits for online again."""
        state = parse_state(payload)
        if state is None:
            log.warning("ignored a STATE message on %s that is not Sparkplug 3.0 JSON: %r",
                        topic, payload[:200])  # fmt: skip
            return
        with self._note:
            if self._host is not None and state.timestamp < self._host[1]:
                return  # older than what we know
            was_online = self._host is not None and self._host[0]
            self._host = (state.online, state.timestamp)
        conn = self._conn
        if conn is not None:
            conn.notify()
        if not (was_online and not state.online):
            return
        with self._lock:
            conn = self._conn
            if conn is None or conn.lost is not None:
                return
            log.warning("primary host %r went offline: NDEATH, disconnecting; records wait in"
                        " the spool until it is online again", self.s.primary_host_id)
            if self.node.born:
                try:
                    conn.publish(self.node.death(_now_ms()))
                except OutputUnavailable:
                    pass
            self.node.born = False
            conn.drop(f"primary host {self.s.primary_host_id!r} went offline")

    # -- the connection (the loop's thread) -------------------------------------------------

    def _connect(self) -> Connection:
        subscriptions: list[str] = []
        will = None
        if self.sparkplug:
            will = self.node.will(_now_ms())
            if self.s.bd_seq_file:  # kept before the broker may publish it as the Will
                save_bd_seq(Path(self.s.bd_seq_file), self.node.bd_seq)
            subscriptions.append(self.node.ncmd_topic())
            if self.s.primary_host_id:
                subscriptions.append(self._state_topic())
        with self._note:
            self._host = None
        password = read_password(self.s.password_file, self.s.password_env)
        conn = self._conn = Connection(self.s.broker, password, will, subscriptions,
                                       self._on_message)  # fmt: skip
        conn.open()  # on failure, the caller abandons it (outside _lock)
        log.info("connected to %s as %r%s", self.where, self.s.broker.client_id,
                 f" (Sparkplug node {self.s.group_id}/{self.s.edge_node_id}, bdSeq"
                 f" {self.node.bd_seq})" if self.sparkplug else "")  # fmt: skip
        return conn

    def _session(self) -> Connection:
        """Under _lock: a working connection; Sparkplug: born (NBIRTH, DBIRTHs); with a
        primary host, only while it is online."""
        conn = self._conn or self._connect()
        if conn.lost is not None:
            raise conn.unavailable(conn.lost)
        if self.sparkplug:
            if self.s.primary_host_id:
                self._check_host(conn)
            if not self.node.born:
                for p in self.node.birth(_now_ms()):
                    conn.publish(p)
        return conn

    def _check_host(self, conn: Connection) -> None:
        if self._host is None:  # its retained STATE follows the SUBACK
            conn.wait_for(lambda: self._host is not None, STATE_WAIT_S)
        with self._note:
            host = self._host
        if host is None or not host[0]:
            raise OutputUnavailable(
                HOST_OFFLINE,
                f"primary host application {self.s.primary_host_id!r} is not online (its STATE"
                f" on {self._state_topic()} says so, or is missing): records wait in the spool"
                " until it is; check the host application, or primary_host_id",
            )  # fmt: skip

    def _abandon(self, graceful: bool = False) -> None:
        """Close the connection (an NDEATH first when ``graceful``); never under _lock, since
        closing joins paho's thread, which may be waiting for it."""
        with self._lock:
            conn, self._conn = self._conn, None
            last = self.node.death(_now_ms()) if graceful and self.node.born else None
            self.node.born = False
        if conn is not None:
            if conn.lost is not None and not graceful:
                log.warning("%s: %s", self.where, conn.lost)
            conn.close(last)

    def open(self) -> None:
        """Sparkplug: the bdSeq goes on from the last process's (Sparkplug 3.0: a host
        application matches an NDEATH to its NBIRTH by it); then connect and be born."""
        if self.s.bd_seq_file:
            self.node.bd_seq = load_bd_seq(Path(self.s.bd_seq_file))
        self.flush()

    # -- writing -----------------------------------------------------------------------------

    def write_stats(self, stats: list[Stats]) -> None:
        """Worker counters are not published."""

    def flush(self) -> None:
        """Publish everything handed since the last flush and wait for the acknowledgements;
        the same records are handed again after a failure, so they are dropped here whatever
        happens."""
        try:
            try:
                with self._lock:
                    conn = self._session()
                    messages = self._sparkplug() if self.sparkplug else self._json()
                    infos = [conn.publish(p) for p in messages]
                conn.wait(infos, self.s.ack_timeout_s)
            except OutputUnavailable as exc:
                if exc.cause != HOST_OFFLINE:  # keep listening for the host's STATE
                    self._abandon()
                raise
            self.published += len(infos)
        finally:
            self.pending.clear()

    def _sparkplug(self) -> Iterator[Publish]:
        """Births, data and deaths in the order the records happened (samples and events
        merged by receive time: a DDEATH falls between the samples before and after it)."""
        now = _now_ms()
        node = self.node
        historical = self.from_spool
        merged: Iterator[Sample | Event] = heapq.merge(
            self.pending.samples, self.pending.events, key=_receive_time)
        for r in merged:
            if isinstance(r, Sample):
                yield from node.samples((r,), now, historical=historical)
            else:
                yield from node.events((r,), now)

    def _json(self) -> Iterator[Publish]:
        s, qos, historical = self.s, self.s.qos, self.from_spool
        for smp in self.pending.samples:
            record = sample_record(smp)
            record["quality"] = "bad" if smp.value is None else "good"
            record["historical"] = historical
            yield Publish(_fill(s.sample_topic, smp.plc, smp.tag), _json(record), qos, s.retain)
        if s.event_topic:
            for e in self.pending.events:
                yield Publish(_fill(s.event_topic, e.plc, e.tag), _json(event_record(e)), qos)
        if s.gap_topic:
            for g in self.pending.gaps:
                record = {**gap_record(g), "cause": g.cause}
                yield Publish(_fill(s.gap_topic, "", ""), _json(record), qos)

    def close(self) -> None:
        """A clean stop: NDEATH (Sparkplug), then a clean disconnect."""
        self._abandon(graceful=True)


def _receive_time(r: Sample | Event) -> int:
    return r.t_wall_ns


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
