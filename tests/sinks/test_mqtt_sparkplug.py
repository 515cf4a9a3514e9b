"""The MQTT sink as a Sparkplug B 3.0 edge node, checked on what a real Mosquitto broker
delivers, decoded by an independent decoder: ``protoc --decode`` (protoc's C++ parser) over the
Tahu ``sparkplug_b.proto``, not the Python protobuf runtime the sink encodes with.

Checked: NBIRTH first with seq 0 and its bdSeq, seq counting every message and wrapping 255 ->
0, DBIRTH before a device's data with every metric (UDT members as ``Tag/Member``) and aliases
unique across the node, DDATA by alias only with the sample's receive time and value, DDEATH
when the PLC's connections leave RUNNING and DBIRTH when data comes back, a rebirth on NCMD,
NDEATH on a clean stop and as the Will on a kill (its bdSeq the NBIRTH's), bdSeq going on
across sink processes (kept in the spool directory), and a primary host's STATE: nothing
published while it is offline, what waited sent as historical."""

from __future__ import annotations

import codecs
import dataclasses
import filecmp
import itertools
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyconpro.acquisition.wire import Event, EventKind, Sample, SeqCounter, topic_for_event
from pyconpro.acquisition.wire import topic_for_sample as sample_topic
from pyconpro.sinks.base import DEFAULT_TOPICS

from tests.sinks.bus_testkit import REPO, SinkProcess, TestPublisher
from tests.support.mosquitto import MosquittoBroker, Subscriber
from tests.support.requirements import skip_or_fail

pytestmark = pytest.mark.timeout(120)

PACKAGE = REPO / "sinks" / "mqtt"
PAYLOAD = "org.eclipse.tahu.protobuf.Payload"
REBIRTH_TEXT = 'metrics { name: "Node Control/Rebirth" datatype: 11 boolean_value: true }'
_groups = itertools.count(1)


def require_protoc() -> str:
    found = shutil.which("protoc")
    if found is None:
        skip_or_fail("protoc", "protoc is not installed: apt-get install protobuf-compiler")
    return found


# --------------------------------------------------------------------------- the decoder


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        return codecs.escape_decode(text[1:-1].encode("ascii"))[0].decode("utf-8")
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_text_format(text: str) -> dict[str, list[Any]]:
    """protoc's text format as nested dicts, every field a list of its values."""
    stack: list[dict[str, list[Any]]] = [{}]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.endswith("{"):
            child: dict[str, list[Any]] = {}
            stack[-1].setdefault(line[:-1].strip(), []).append(child)
            stack.append(child)
        elif line == "}":
            stack.pop()
        else:
            key, _, value = line.partition(": ")
            stack[-1].setdefault(key, []).append(_scalar(value))
    return stack[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_all(protoc: str, tmp: Path, payloads: list[bytes]) -> list[dict[str, list[Any]]]:
    """Every payload decoded by one ``protoc --decode`` run: they go in as the repeated field
    1 of a wrapper message (tag 0x0A, length, bytes) declared beside the Tahu schema."""
    (tmp / "batch.proto").write_text(
        'syntax = "proto2";\nimport "sparkplug_b.proto";\n'
        f"message Batch {{ repeated {PAYLOAD} p = 1; }}\n", encoding="utf-8")  # fmt: skip
    data = b"".join(b"\x0a" + _varint(len(p)) + p for p in payloads)
    out = subprocess.run(
        [protoc, f"--proto_path={PACKAGE}", f"--proto_path={tmp}", "--decode=Batch",
         "batch.proto"], input=data, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    decoded = parse_text_format(out.stdout.decode("utf-8")).get("p", [])
    assert len(decoded) == len(payloads)
    return decoded


def encode(protoc: str, text: str) -> bytes:
    out = subprocess.run([protoc, f"--proto_path={PACKAGE}", f"--encode={PAYLOAD}",
                          "sparkplug_b.proto"], input=text.encode(), capture_output=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def one(d: dict[str, list[Any]], key: str) -> Any:
    values = d.get(key)
    return values[0] if values else None


_BITS = {1: 8, 2: 16, 3: 32, 4: 64}  # signed Int8..Int64: two's complement in the proto


def value_of(metric: dict[str, list[Any]], datatype: int) -> Any:
    if one(metric, "is_null"):
        return None
    for key in ("int_value", "long_value", "float_value", "double_value", "boolean_value",
                "string_value"):  # fmt: skip
        if key in metric:
            v = one(metric, key)
            bits = _BITS.get(datatype)
            if bits is not None and v >= 1 << (bits - 1):
                v -= 1 << bits
            return v
    raise AssertionError(f"no value in {metric}")


@dataclasses.dataclass
class Msg:
    kind: str  # NBIRTH, DBIRTH, DDATA, ...
    device: str | None
    body: dict[str, list[Any]]

    @property
    def seq(self) -> int | None:
        seq: int | None = one(self.body, "seq")
        return seq

    def metrics(self) -> list[dict[str, list[Any]]]:
        return self.body.get("metrics", [])

    def bd_seq(self) -> int:
        bd: int = next(one(m, "long_value") for m in self.metrics() if one(m, "name") == "bdSeq")
        return bd


# --------------------------------------------------------------------------- fixtures


@dataclasses.dataclass
class Node:
    """A Sparkplug sink process and a subscriber to its group."""

    group: str
    sub: Subscriber
    protoc: str
    tmp: Path
    start: Callable[..., SinkProcess]

    def messages(self) -> list[Msg]:
        raw = self.sub.barrier()
        raw = [m for m in raw if "/STATE/" not in m.topic and "/NCMD/" not in m.topic]
        bodies = decode_all(self.protoc, self.tmp, [m.payload for m in raw])
        out = []
        for m, body in zip(raw, bodies, strict=True):
            parts = m.topic.split("/")
            assert parts[0] == "spBv1.0" and parts[1] == self.group and parts[3] == "node1"
            out.append(Msg(parts[2], parts[4] if len(parts) > 4 else None, body))
        return out

    def wait(self, kind: str, count: int = 1, device: str | None = None) -> None:
        self.sub.wait(lambda: sum(
            f"/{kind}/" in m.topic and (device is None or m.topic.endswith("/" + device))
            for m in self.sub.messages) >= count, what=f"{count} {kind} {device or ''}")


@pytest.fixture
def node(mosquitto_broker: MosquittoBroker, publisher: TestPublisher, tmp_path: Path
         ) -> Iterator[Node]:  # fmt: skip
    protoc = require_protoc()
    group = f"g{next(_groups)}x{id(tmp_path):x}"
    sub = Subscriber(mosquitto_broker, [f"spBv1.0/{group}/#"])
    procs: list[SinkProcess] = []

    def start(*extra: str) -> SinkProcess:
        proc = SinkProcess("mqtt", publisher.endpoint, tmp_path / f"sink{len(procs)}", [
            "--flush-interval", "0.05", "--host", mosquitto_broker.host, "--port",
            str(mosquitto_broker.port), "--group-id", group, "--edge-node-id", "node1",
            "--spool-dir", str(tmp_path / "spool"), *extra,
        ])  # fmt: skip
        procs.append(proc)
        publisher.wait_subscribed(DEFAULT_TOPICS)
        return proc

    try:
        yield Node(group, sub, protoc, tmp_path, start)
    finally:
        for p in procs:
            p.kill()
        sub.close()


class Plant:
    """Samples of plc1 (a DINT that goes negative, a UDT) and plc2 (a REAL), and the state
    events of their connections, numbered as a worker numbers them."""

    def __init__(self) -> None:
        self.seqs = SeqCounter()
        self.t0 = time.time_ns()  # recent: the spool keeps a week
        self.n = 0
        self.sent: list[Sample] = []

    def sample(self, plc: str, tag: str) -> Sample:
        i = self.n
        self.n += 1
        value: Any
        if tag == "A":
            value, ty = i - 150, "DINT"
        elif tag == "U":
            value, ty = {"Speed": i * 0.25, "Count": -i, "On": i % 2 == 0}, "MyUdt"
        else:
            value, ty = float(i) * 0.5, "REAL"
        s = Sample(seq=self.seqs.next(sample_topic(plc, tag)), publisher="w1", plc=plc,
                   tag=tag, t_wall_ns=self.t0 + i * 1_000_000_000 // 997, t_mono_ns=i,
                   cip_seq=i, gap=0, value=value, raw=b"\x00", type_name=ty)  # fmt: skip
        self.sent.append(s)
        return s

    def state(self, plc: str, tag: str, to: str) -> Event:
        self.n += 1
        return Event(seq=self.seqs.next(topic_for_event(plc, tag)), publisher="w1", plc=plc,
                     tag=tag, t_wall_ns=self.t0 + self.n * 1_000_000_000 // 997, t_mono_ns=0,
                     kind=EventKind.STATE, state_from="RUNNING" if to != "RUNNING" else
                     "OPENING", state_to=to)  # fmt: skip


def expected_metrics(s: Sample) -> dict[str, Any]:
    if isinstance(s.value, dict):
        return {f"{s.tag}/{k}": v for k, v in s.value.items()}
    return {s.tag: s.value}


# --------------------------------------------------------------------------- tests


def test_generated_module_is_what_protoc_makes_of_the_tahu_schema(tmp_path: Path) -> None:
    from pyconpro.sinks.mqtt.sparkplug import PROTOC_VERSION

    protoc = require_protoc()
    version = subprocess.run([protoc, "--version"], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()  # fmt: skip
    if version != PROTOC_VERSION:
        pytest.skip(f"the committed module is {PROTOC_VERSION}'s output, this is {version}:"
                    " scripts/gen_sparkplug.sh regenerates it")  # fmt: skip
    shutil.copy(PACKAGE / "sparkplug_b.proto", tmp_path)
    subprocess.run([protoc, f"--proto_path={tmp_path}", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", "sparkplug_b.proto"], check=True, cwd=tmp_path,
                   timeout=60)  # fmt: skip
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert filecmp.cmp(tmp_path / name, PACKAGE / name, shallow=False), name
    assert "SPDX-License-Identifier: EPL-2.0" in (PACKAGE / "sparkplug_b.proto").read_text()


def test_births_data_deaths_rebirth_and_sequence_numbers(node: Node, publisher: TestPublisher
                                                         ) -> None:  # fmt: skip
    plant = Plant()
    proc = node.start()
    for _ in range(100):  # 300 DDATA: seq wraps
        for plc, tag in (("plc1", "A"), ("plc1", "U"), ("plc2", "B")):
            publisher.send(plant.sample(plc, tag))
    node.wait("DDATA", 300)
    # plc1's connections leave RUNNING: DDEATH; its data again: DBIRTH first.
    publisher.send(plant.state("plc1", "A", "BACKOFF"))
    publisher.send(plant.state("plc1", "U", "WAITING"))
    node.wait("DDEATH", 1, "plc1")
    publisher.send(plant.state("plc1", "A", "RUNNING"))
    publisher.send(plant.sample("plc1", "A"))
    node.wait("DDATA", 301)
    # Node Control/Rebirth: NBIRTH (seq 0, same bdSeq) and both DBIRTHs again.
    node.sub.publish(f"spBv1.0/{node.group}/NCMD/node1", encode(node.protoc, REBIRTH_TEXT))
    node.wait("NBIRTH", 2)
    publisher.send(plant.sample("plc2", "B"))
    node.wait("DDATA", 302)
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    node.wait("NDEATH")

    msgs = node.messages()
    # At the start, NBIRTH alone; a device's DBIRTH before its first DDATA, again when a
    # sample brings metrics it did not announce (plc1: A, then U's members).
    assert [m.kind for m in msgs[:6]] == ["NBIRTH", "DBIRTH", "DDATA", "DBIRTH", "DDATA",
                                          "DBIRTH"]  # fmt: skip
    nbirth = msgs[0]
    assert nbirth.seq == 0 and nbirth.device is None
    assert {one(m, "name") for m in nbirth.metrics()} == {"bdSeq", "Node Control/Rebirth"}
    # seq: every message but NDEATH, +1 modulo 256, 0 at each NBIRTH; it wrapped.
    seqs = [m.seq for m in msgs if m.kind != "NDEATH"]
    for prev, m in zip(msgs, msgs[1:], strict=False):
        if m.kind == "NBIRTH":
            assert m.seq == 0
        elif m.kind != "NDEATH":
            assert prev.seq is not None
            assert m.seq == (prev.seq + 1) % 256, (prev.kind, prev.seq, m.kind, m.seq)
    assert any(a == 255 and b == 0 for a, b in itertools.pairwise(seqs))
    # Births: every metric, aliases unique across the node; data: aliases only, the
    # sample's receive time (ms) and value, each sample once, in order.
    births: dict[str, dict[int, tuple[str, int]]] = {}
    all_aliases: dict[str, int] = {}
    got: list[tuple[str, dict[str, Any], int]] = []
    dead: set[str] = set()
    for m in msgs:
        if m.kind == "DBIRTH":
            assert m.device is not None
            births[m.device] = {one(x, "alias"): (one(x, "name"), one(x, "datatype"))
                                for x in m.metrics()}  # fmt: skip
            for alias, (name, _dt) in births[m.device].items():
                assert all_aliases.setdefault(f"{m.device}:{name}", alias) == alias
            dead.discard(m.device)
        elif m.kind == "DDEATH":
            assert m.device is not None
            dead.add(m.device)
        elif m.kind == "DDATA":
            assert m.device in births and m.device not in dead, "DDATA without a live DBIRTH"
            values, stamps = {}, set()
            for x in m.metrics():
                assert "name" not in x
                name, datatype = births[m.device][one(x, "alias")]
                values[name] = value_of(x, datatype)
                stamps.add(one(x, "timestamp"))
                assert not one(x, "is_historical")
            assert len(stamps) == 1
            got.append((m.device, values, stamps.pop()))
    assert len(set(all_aliases.values())) == len(all_aliases)
    assert births["plc1"] and {n for n, _ in births["plc1"].values()} == {
        "A", "U/Speed", "U/Count", "U/On"}
    assert [dt for n, dt in births["plc1"].values() if n == "A"] == [3]  # DINT: Int32
    want = [(s.plc, expected_metrics(s), s.t_wall_ns // 1_000_000) for s in plant.sent]
    assert got == want
    # plc1: DDEATH after its last data, then DBIRTH before its next.
    kinds1 = [m.kind for m in msgs if m.device == "plc1"]
    i = kinds1.index("DDEATH")
    assert kinds1[i - 1] == "DDATA" and kinds1[i + 1] == "DBIRTH"
    # The rebirth: NBIRTH with the same bdSeq, then the DBIRTH of both devices.
    j = [k for k, m in enumerate(msgs) if m.kind == "NBIRTH"][1]
    assert msgs[j].bd_seq() == nbirth.bd_seq()
    assert sorted(m.device or "" for m in msgs[j + 1:j + 3]) == ["plc1", "plc2"]
    assert all(m.kind == "DBIRTH" for m in msgs[j + 1:j + 3])
    # A clean stop: NDEATH with the NBIRTH's bdSeq, last.
    assert msgs[-1].kind == "NDEATH" and msgs[-1].bd_seq() == nbirth.bd_seq()
    assert msgs[-1].seq is None


def test_the_will_is_an_ndeath_with_the_births_bdseq(node: Node, publisher: TestPublisher
                                                     ) -> None:  # fmt: skip
    plant = Plant()
    proc = node.start()
    publisher.send(plant.sample("plc2", "B"))
    node.wait("DDATA")
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(30)
    node.wait("NDEATH")  # the broker publishes the Will of a connection that broke
    msgs = node.messages()
    assert [m.kind for m in msgs] == ["NBIRTH", "DBIRTH", "DDATA", "NDEATH"]
    assert msgs[-1].bd_seq() == msgs[0].bd_seq() == 0


def test_a_primary_host_offline_holds_publishing_and_what_waited_is_historical(
    node: Node, publisher: TestPublisher
) -> None:
    plant = Plant()
    host = f"scada{node.group}"
    state = f"spBv1.0/STATE/{host}"
    proc = node.start("--primary-host-id", host)
    for _ in range(5):
        publisher.send(plant.sample("plc2", "B"))
    # No STATE: not even an NBIRTH; the samples wait in the spool.
    node.sub.wait(lambda: "primary host" in proc.stderr, what="the sink to say it waits")
    assert node.messages() == []
    node.sub.publish(state, b'{"online": true, "timestamp": 1000}', retain=True)
    node.wait("DDATA", 5)
    publisher.send(plant.sample("plc2", "B"))
    node.wait("DDATA", 6)
    # Offline (a newer timestamp): NDEATH and a disconnect; samples wait; online again: a new
    # connection (next bdSeq), and what waited comes as historical.
    node.sub.publish(state, b'{"online": false, "timestamp": 2000}', retain=True)
    node.wait("NDEATH")
    for _ in range(3):
        publisher.send(plant.sample("plc2", "B"))
    node.sub.publish(state, b'{"online": true, "timestamp": 3000}', retain=True)
    node.wait("DDATA", 9)
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    node.sub.publish(state, b"", retain=True)  # the retained STATE goes

    msgs = node.messages()
    kinds = [m.kind for m in msgs]
    assert kinds[:2] == ["NBIRTH", "DBIRTH"] and kinds.count("NBIRTH") == 2
    first, second = (m for m in msgs if m.kind == "NBIRTH")
    assert (first.bd_seq(), second.bd_seq()) == (0, 1)
    ndeaths = [m for m in msgs if m.kind == "NDEATH"]
    assert ndeaths[0].bd_seq() == 0 and kinds.index("NDEATH") < kinds.index("NBIRTH", 1)
    data = [m for m in msgs if m.kind == "DDATA"]
    historical = [bool(one(m.metrics()[0], "is_historical")) for m in data]
    # The first five waited for the host, the last three for its return.
    assert historical == [True] * 5 + [False] + [True] * 3
    assert [value_of(m.metrics()[0], 9) for m in data] == [s.value for s in plant.sent]


def test_bdseq_goes_on_across_sink_processes_after_a_stop_and_a_kill(
    node: Node, publisher: TestPublisher
) -> None:
    plant = Plant()
    # A clean stop: NDEATH with the first bdSeq.
    proc = node.start()
    publisher.send(plant.sample("plc2", "B"))
    node.wait("DDATA", 1)
    assert proc.terminate() == 0, proc.stderr
    node.wait("NDEATH", 1)
    # The next process on the same spool directory: the next bdSeq; SIGKILL: the broker
    # publishes its Will, an NDEATH with that bdSeq.
    proc = node.start()
    publisher.send(plant.sample("plc2", "B"))
    node.wait("DDATA", 2)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(30)
    node.wait("NDEATH", 2)
    # After the kill, the next again.
    proc = node.start()
    publisher.send(plant.sample("plc2", "B"))
    node.wait("DDATA", 3)
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    node.wait("NDEATH", 3)

    msgs = node.messages()
    births = [m.bd_seq() for m in msgs if m.kind == "NBIRTH"]
    deaths = [m.bd_seq() for m in msgs if m.kind == "NDEATH"]
    assert births == deaths == [0, 1, 2]
    assert [m.kind for m in msgs] == ["NBIRTH", "DBIRTH", "DDATA", "NDEATH"] * 3


def test_the_kept_bdseq_wraps_and_a_file_that_is_not_one_starts_at_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pyconpro.sinks.mqtt.sink import bd_seq_path, load_bd_seq, save_bd_seq
    from pyconpro.sinks.mqtt.sparkplug import EdgeNode

    path = bd_seq_path(str(tmp_path / "spool"), "g1", "node1")
    assert load_bd_seq(path) == -1  # none yet: the first connection's is 0
    save_bd_seq(path, 255)  # creates the spool directory
    node = EdgeNode("g1", "node1", 1)
    node.bd_seq = load_bd_seq(path)
    node.will(0)
    assert node.bd_seq == 0  # 255 + 1, modulo 256
    save_bd_seq(path, node.bd_seq)
    assert load_bd_seq(path) == 0
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    path.write_text("not a number\n", encoding="ascii")
    assert load_bd_seq(path) == -1
    assert "does not hold a Sparkplug bdSeq" in caplog.text


def test_a_missing_tls_file_is_refused_at_the_start_with_the_fix() -> None:
    """What the file cannot tell (the certificate is not there on this host) stops the sink;
    options that do not go together are the config file's problems (test_sink_options.py)."""
    from pyconpro.acquisition.sink_config import parse_sink_section
    from pyconpro.sinks.mqtt.sink import settings_from_options
    from pyconpro.sinks.registry import sink_schemas

    config = parse_sink_section({"kind": "mqtt", "tls": True, "ca_file": "/nonexistent/ca.pem"},
                                sink_schemas())  # fmt: skip
    with pytest.raises(ValueError, match="is not a readable file: fix the path"):
        settings_from_options(config.options)


def test_options_given_in_code_are_held_to_the_file_s_rules() -> None:
    from pyconpro.acquisition.sink_config import parse_sink_section
    from pyconpro.sinks.mqtt.sink import settings_from_options
    from pyconpro.sinks.registry import sink_schemas

    options = dict(parse_sink_section({"kind": "mqtt"}, sink_schemas()).options)
    with pytest.raises(ValueError, match="^ca_file is set but tls = false: set tls = true"):
        settings_from_options({**options, "ca_file": "/etc/hostname"})
    with pytest.raises(ValueError, match=r"^a password is given \(password_env\) without a"
                       " username: set username"):  # fmt: skip
        settings_from_options({**options, "password_env": "X"})
