"""Fuzz every parser of network bytes with random and mutated datagrams (STYLE.md #7).

Seeds are the golden frames (tests/golden/pcaps/ and appendix_a.py) cut at each protocol layer;
mutations are bit flips, byte overwrites, truncations, insertions, deletions, duplications and
corruption of 16-bit length fields with boundary values; a share of inputs is pure random bytes.
Parsers may raise ``MalformedPacket`` and nothing else; receive loops that promise never to raise
(``Demux.receive``, ``Session.receive_data``) must not raise at all.

Deterministic by default (fixed seed, ~300 000 inputs, well under a minute). Scale up with
environment variables, e.g. an overnight run:

    PYCONPRO_FUZZ_SCALE=50 PYCONPRO_FUZZ_SEED=$RANDOM python -m pytest
    tests/acquisition/test_fuzz.py

A failure lists, per (parser, exception type), the first input that escaped, in hex, so it can be
pasted into a regression test.
"""

from __future__ import annotations

import os
import random
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, partial
from typing import Any

import pytest
from pyconpro.acquisition import (
    cip,
    class1,
    cm,
    cpf,
    encap,
    epath,
    logix_objects,
    logix_requests,
    logix_types,
    wire,
)
from pyconpro.acquisition.demux import Demux
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.session import Session

from tests.golden import appendix_a
from tests.support import PCAP_DIR, pcap

SCALE = float(os.environ.get("PYCONPRO_FUZZ_SCALE", "1"))
SEED = int(os.environ.get("PYCONPRO_FUZZ_SEED", "20261124"))
#: inputs per target at scale 1 (about 300 000 in all)
PER_TARGET = 20000


# ---------------------------------------------------------------------------------------------
# seed corpus: the golden frames cut at each layer


@dataclass(slots=True)
class Corpus:
    encap_frames: list[bytes]
    send_data: list[bytes]
    cpf_blocks: list[bytes]
    cip_requests: list[bytes]
    cip_replies: list[bytes]
    request_bodies: dict[int, list[bytes]]  # service -> request data
    reply_bodies: dict[int, list[bytes]]  # service -> reply data (success and failure)
    paths: list[bytes]
    datagrams: list[bytes]


def _safe(fn: Callable[[], object]) -> object | None:
    try:
        return fn()
    except MalformedPacket:
        return None


@cache
def corpus() -> Corpus:
    c = Corpus([], [], [], [], [], {}, {}, [], [])
    for path in sorted(PCAP_DIR.glob("*.pcap")):
        udp = [p.payload for p in pcap.udp_datagrams(path, 2222)]
        if path.name.startswith("cipdip"):
            # 1900 near-identical bad datagrams: keep a few, plus what follows their
            # encapsulation header + interface handle + timeout, a class-0 style CPF block
            udp = udp[:4] + [d[30:] for d in udp[:4]]
        c.datagrams += udp
        for pdu in pcap.enip_tcp_pdus(path):
            c.encap_frames.append(pdu.data)
            pkt = _safe(partial(encap.EncapsulationPacket.decode, pdu.data))
            if not isinstance(pkt, encap.EncapsulationPacket) or not pkt.data:
                continue
            if pkt.command in (encap.Command.LIST_IDENTITY, encap.Command.LIST_SERVICES):
                c.cpf_blocks.append(pkt.data)
            if pkt.command not in (encap.Command.SEND_RR_DATA, encap.Command.SEND_UNIT_DATA):
                continue
            c.send_data.append(pkt.data)
            c.cpf_blocks.append(pkt.data[6:])
            for item in cpf.decode_items(pkt.data[6:]):
                msg = item.body()
                if isinstance(item, cpf.ConnectedData):
                    msg = msg[2:]
                elif not isinstance(item, cpf.UnconnectedData):
                    continue
                if msg[:1] and msg[0] & 0x80:
                    c.cip_replies.append(msg)
                    rep = _safe(partial(cip.Reply.decode, msg))
                    if isinstance(rep, cip.Reply):
                        c.reply_bodies.setdefault(rep.service, []).append(rep.data)
                else:
                    c.cip_requests.append(msg)
                    req = _safe(partial(cip.Request.decode, msg))
                    if isinstance(req, cip.Request):
                        c.paths.append(req.path)
                        c.request_bodies.setdefault(req.service, []).append(req.data)
                        if req.service in (0x54, 0x4E):
                            size_at = 35 if req.service == 0x54 else 10
                            skip = 1 if req.service == 0x54 else 2
                            c.paths.append(req.data[size_at + skip :])
    a = appendix_a
    c.encap_frames += [a.A1_FRAME, a.A2_FRAME, a.A3_FRAME]
    c.datagrams += [a.A4_DATAGRAM, a.A5_HEARTBEAT, a.RCONPRO_HEARTBEAT]
    c.paths += [a.CONNECTION_PATH, a.CM_PATH, bytes.fromhex("120d3139322e3136382e312e313000")]
    c.request_bodies.setdefault(0x54, []).append(a.A1_CIP_FORWARD_OPEN[6:])
    c.request_bodies.setdefault(0x4E, []).append(a.A6_CIP_FORWARD_CLOSE[6:])
    c.reply_bodies.setdefault(0x54, []).extend([a.A2_CIP_REPLY[4:], a.A3_CIP_REPLY[8:]])
    # a Large_Forward_Open body: the 16-bit NCPs of A.1 widened to 32 bits
    fo = cm.ForwardOpenRequest.decode_body(a.A1_CIP_FORWARD_OPEN[6:])
    c.request_bodies.setdefault(0x5B, []).append(replace(fo, large=True).encode_body())
    c.datagrams.append(class1.Class0Datagram(0x10000ACE, b"\x01\x00\x02\x00").encode())
    # an Unconnected_Send with an odd-length embedded request (the pad byte matters)
    odd = cip.Request(0x0E, epath.encode_path((epath.class_id(1), epath.instance_id(1))), b"\x07")
    c.request_bodies.setdefault(0x52, []).append(
        cip.UnconnectedSend(odd.encode(), b"\x01\x00").encode()
    )
    for name in (
        "encap_frames",
        "send_data",
        "cpf_blocks",
        "cip_requests",
        "cip_replies",
        "paths",
        "datagrams",
    ):
        setattr(c, name, list(dict.fromkeys(getattr(c, name))))  # drop duplicate seeds
    return c


# ---------------------------------------------------------------------------------------------
# mutations


_BOUNDARY16 = (0, 1, 2, 3, 4, 6, 8, 0x7F, 0x80, 0xFF, 0x100, 0x1FF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)


def mutate(rng: random.Random, seed: bytes) -> bytes:
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(0, 64))
    b = bytearray(seed)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(9)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # byte overwrite
            b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0x80, 0x7F, rng.randrange(256)))
        elif op == 2:  # truncation
            del b[rng.randrange(len(b) + 1) :]
        elif op == 3:  # insertion
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 4 and b:  # deletion
            i = rng.randrange(len(b))
            del b[i : i + rng.randrange(1, 9)]
        elif op == 5 and len(b) >= 2:  # length-field corruption (16-bit LE, even offsets)
            i = rng.randrange(0, len(b) - 1) & ~1
            value = rng.choice((*_BOUNDARY16, len(b), len(b) - i, len(b) - i - 2, len(b) + 1))
            struct.pack_into("<H", b, i, value & 0xFFFF)
        elif op == 6 and len(b) >= 1:  # length byte corruption (path sizes, counts)
            b[rng.randrange(len(b))] = rng.choice((0, 1, 2, 3, 0x7F, 0xFF, len(b) // 2))
        elif op == 7 and b:  # duplicate a slice
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randrange(1, 17))
            b[j:j] = b[i:j]
        elif op == 8:  # append junk
            b += rng.randbytes(rng.randrange(1, 5))
    return bytes(b)


# ---------------------------------------------------------------------------------------------
# targets


def _send_data_all(d: bytes) -> object:
    sd = encap.SendData.decode(d)
    return (_safe(sd.unconnected), _safe(sd.connected))


def _full_chain(frame: bytes) -> object:
    """What a receive path does with a SendRRData reply or a target with a request."""
    pkt = encap.EncapsulationPacket.decode(frame)
    if pkt.command == encap.Command.LIST_IDENTITY and pkt.data:
        return cpf.decode_items(pkt.data)
    sd = encap.SendData.decode(pkt.data)
    msg = sd.unconnected() if pkt.command == encap.Command.SEND_RR_DATA else sd.connected()[2]
    if msg[:1] and msg[0] & 0x80:
        rep = cip.Reply.decode(msg)
        if rep.service in (0x54, 0x5B):
            return cm.decode_forward_open_reply(rep)
        if rep.service == 0x4E:
            return cm.decode_forward_close_reply(rep)
        return rep
    req = cip.Request.decode(msg)
    epath.decode_path(req.path)
    if req.service in (0x54, 0x5B):
        fo = cm.ForwardOpenRequest.from_request(req)
        return epath.decode_path(fo.path)
    if req.service == 0x4E:
        return epath.decode_path(cm.ForwardCloseRequest.decode_body(req.data).path)
    if req.service == 0x52:
        return cip.Request.decode(cip.UnconnectedSend.decode(req.data).message)
    if req.service == 0x0A:
        return [cip.Request.decode(m) for m in cip.decode_multiple(req.data)]
    return req


def _fo_reply(body: bytes) -> object:
    return cm.decode_forward_open_reply(cip.Reply(0x54, 0, (), body))


def _fo_failure(body: bytes) -> object:
    return cm.decode_forward_open_reply(cip.Reply(0x54, 0x01, (0x0127, 38), body))


def _fc_reply(body: bytes) -> object:
    return cm.decode_forward_close_reply(cip.Reply(0x4E, 0, (), body))


def _frame_buffer(stream: bytes) -> object:
    fb = encap.FrameBuffer()
    out = []
    for i in range(0, len(stream), 7):
        out += fb.feed(stream[i : i + 7])
    return out


def _demux_never_raises(d: bytes) -> object:
    dm = Demux()
    dm.add(("10.0.0.1", 2222), class1.peek_connection_id(d) or 1, 4, "owner", max_jump=16)
    return dm.receive(d, ("10.0.0.1", 2222))


def _session_never_raises(stream: bytes) -> object:
    s = Session()
    s.start(0.0)
    s.take_outputs()
    s.receive_data(stream, 0.5)
    return s.take_outputs()


def _symbols(d: bytes) -> object:
    return logix_objects.parse_symbol_instances(d, (1, 2, 7, 8))


def _template_records(d: bytes) -> object:
    return logix_objects.parse_template_records(d, d[0] if d else 0)


# Bus messages (acquisition.wire): a subscriber decodes whatever arrives on the bus.
_BUS_TOPIC = wire.topic_for_sample("plc", "tag")


def _bus_bodies() -> list[bytes]:
    sample = wire.Sample(
        seq=3,
        publisher="w",
        plc="plc",
        tag="tag",
        t_wall_ns=1,
        t_mono_ns=2,
        cip_seq=4,
        gap=0,
        value={"a": [1, 2.5, True, "x"]},
        raw=b"\x01\x02",
        type_name="MotorData",
    )
    event = wire.Event(
        seq=1,
        publisher="w",
        plc="plc",
        tag="tag",
        t_wall_ns=1,
        t_mono_ns=2,
        kind=wire.EventKind.REJECT,
        state_from="OPENING",
        state_to="BACKOFF",
        cip_general=1,
        cip_extended=0x0109,
        status_text="x",
        message="m",
    )
    return [sample.encode()[1], event.encode()[1]]


def _bus_body(d: bytes) -> object:
    return wire.decode(_BUS_TOPIC, d)


def _bus_topic(d: bytes) -> object:
    return wire.decode(d, _bus_bodies()[0])


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    parse: Callable[[bytes], object]
    seeds: Callable[[Corpus], list[bytes]]
    never_raises: bool = False  # True: not even MalformedPacket may escape


def _cm(c: Corpus, *services: int, replies: bool = False) -> list[bytes]:
    src = c.reply_bodies if replies else c.request_bodies
    return [b for s in services for b in src.get(s, [])] or [b""]


TARGETS = [
    Target(
        "EncapsulationPacket.decode", encap.EncapsulationPacket.decode, lambda c: c.encap_frames
    ),
    Target("FrameBuffer.feed", _frame_buffer, lambda c: c.encap_frames),
    Target(
        "RegisterSessionData.decode",
        encap.RegisterSessionData.decode,
        lambda c: [b"\x01\x00\x00\x00"],
    ),
    Target("SendData.decode", _send_data_all, lambda c: c.send_data),
    Target("cpf.decode_items", cpf.decode_items, lambda c: c.cpf_blocks + c.datagrams),
    Target("cip.Request.decode", cip.Request.decode, lambda c: c.cip_requests),
    Target("cip.Reply.decode", cip.Reply.decode, lambda c: c.cip_replies),
    Target("cip.decode_multiple", cip.decode_multiple, lambda c: _cm(c, 0x0A)),
    Target("cip.UnconnectedSend.decode", cip.UnconnectedSend.decode, lambda c: _cm(c, 0x52)),
    Target("epath.decode_path", epath.decode_path, lambda c: c.paths),
    Target(
        "ForwardOpenRequest.decode_body", cm.ForwardOpenRequest.decode_body, lambda c: _cm(c, 0x54)
    ),
    Target(
        "ForwardOpenRequest.decode_body(large)",
        lambda d: cm.ForwardOpenRequest.decode_body(d, large=True),
        lambda c: _cm(c, 0x5B),
    ),
    Target("decode_forward_open_reply(success)", _fo_reply, lambda c: _cm(c, 0x54, replies=True)),
    Target("decode_forward_open_reply(failure)", _fo_failure, lambda c: _cm(c, 0x54, replies=True)),
    Target(
        "ForwardCloseRequest.decode_body",
        cm.ForwardCloseRequest.decode_body,
        lambda c: _cm(c, 0x4E),
    ),
    Target("decode_forward_close_reply", _fc_reply, lambda c: _cm(c, 0x4E, replies=True)),
    Target("Class1Datagram.decode", class1.Class1Datagram.decode, lambda c: c.datagrams),
    Target(
        "Class1Datagram.decode(run_idle)",
        lambda d: class1.Class1Datagram.decode(d, run_idle_header=True),
        lambda c: c.datagrams,
    ),
    Target("Class0Datagram.decode", class1.Class0Datagram.decode, lambda c: c.datagrams),
    Target("full chain (encapsulation -> CM)", _full_chain, lambda c: c.encap_frames),
    Target("Demux.receive", _demux_never_raises, lambda c: c.datagrams, never_raises=True),
    Target("wire.decode (body)", _bus_body, lambda c: _bus_bodies()),
    Target("wire.decode (topic)", _bus_topic, lambda c: [_BUS_TOPIC, b"event/plc/tag/"]),
    Target(
        "Session.receive_data", _session_never_raises, lambda c: c.encap_frames, never_raises=True
    ),
    Target(
        "logix_requests.ReadTagRequest.parse",
        logix_requests.ReadTagRequest.parse,
        lambda c: [b"\x01\x00", b"\x0a\x00"],
    ),
    Target(
        "logix_requests.ReadTagFragmentedRequest.parse",
        logix_requests.ReadTagFragmentedRequest.parse,
        lambda c: [b"\x01\x00\x00\x00\x00\x00"],
    ),
    Target(
        "logix_requests.WriteTagRequest.parse",
        logix_requests.WriteTagRequest.parse,
        lambda c: [b"\xc4\x00\x01\x00\x2a\x00\x00\x00", b"\xa0\x02\x34\x12\x01\x00\x00\x00"],
    ),
    Target(
        "logix_requests.ReadModifyWriteRequest.parse",
        logix_requests.ReadModifyWriteRequest.parse,
        lambda c: [b"\x04\x00\xff\x00\x00\x00\xff\xff\xff\xff"],
    ),
    Target(
        "logix_requests.Identity.decode",
        logix_requests.Identity.decode,
        lambda c: _cm(c, 0x01, replies=True),
    ),
    Target(
        "logix_objects.parse_attribute_ids",
        logix_objects.parse_attribute_ids,
        lambda c: [b"\x03\x00\x01\x00\x02\x00\x08\x00"],
    ),
    Target(
        "logix_objects.parse_symbol_instances",
        _symbols,
        lambda c: [b"\x01\x00\x00\x00\x04\x00test\xc4\x00\x04\x00" + bytes(12)],
    ),
    Target(
        "logix_objects.parse_attribute_results",
        logix_objects.parse_attribute_results,
        lambda c: [b"\x02\x00\x01\x00\x00\x00\x2a\x00\x02\x00\x00\x00\x04\x00\x00\x00"],
    ),
    Target(
        "logix_objects.TemplateReadRequest.parse",
        logix_objects.TemplateReadRequest.parse,
        lambda c: [b"\x00\x00\x00\x00\x10\x00"],
    ),
    Target(
        "logix_objects.parse_template_records",
        _template_records,
        lambda c: [b"\x02\x00\xc4\x00\x00\x00\x00\x00\x00\x00\xc3\x00\x04\x00\x00\x00"],
    ),
    Target(
        "logix_types.ReadTagType.parse",
        lambda d: logix_types.ReadTagType.parse(d),
        lambda c: [b"\xc4\x00", b"\xa0\x02\x34\x12"],
    ),
]


def _run(target: Target, n: int, rng: random.Random) -> dict[tuple[str, str], bytes]:
    seeds = target.seeds(corpus()) or [b""]
    escaped: dict[tuple[str, str], bytes] = {}
    for _ in range(n):
        data = mutate(rng, rng.choice(seeds))
        try:
            target.parse(data)
        except MalformedPacket:
            if target.never_raises:
                escaped.setdefault(("MalformedPacket", ""), data)
        except Exception as e:  # noqa: BLE001 - the point is to catch anything else
            where = traceback.extract_tb(e.__traceback__)[-1]
            key = (type(e).__name__, f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}")
            escaped.setdefault(key, data)
    return escaped


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_only_malformed_packet_escapes(target: Target) -> None:
    rng = random.Random(f"{SEED}:{target.name}")
    escaped = _run(target, max(1, int(PER_TARGET * SCALE)), rng)
    if escaped:
        lines = [
            f"{kind} at {where}: {target.name}(bytes.fromhex({data.hex()!r}))"
            for (kind, where), data in escaped.items()
        ]
        pytest.fail(
            f"{len(escaped)} kind(s) of exception escaped (seed {SEED}):\n" + "\n".join(lines)
        )


def test_corpus_covers_every_layer() -> None:
    c = corpus()
    assert len(c.encap_frames) > 1000 and len(c.datagrams) > 400
    assert len(c.cip_requests) > 200 and len(c.cip_replies) > 200
    assert {0x54, 0x4E, 0x52, 0x0A} <= set(c.request_bodies)
    assert {0x54, 0x4E} <= set(c.reply_bodies)


def test_mutator_is_deterministic_and_varied() -> None:
    seed = appendix_a.A1_FRAME
    a = [mutate(random.Random(7), seed) for _ in range(3)]
    b = [mutate(random.Random(7), seed) for _ in range(3)]
    assert a == b
    outs = {mutate(r, seed) for r in [random.Random(i) for i in range(200)]}
    assert len(outs) > 150
    assert any(len(o) < len(seed) for o in outs) and any(len(o) > len(seed) for o in outs)


# ---------------------------------------------------------------------------------------------
# decode -> encode is exact for everything a parser accepts


@dataclass(frozen=True, slots=True)
class RoundTrip:
    name: str
    decode: Callable[[bytes], object]
    encode: Callable[[Any], bytes]
    seeds: Callable[[Corpus], list[bytes]]


def _fc_body(d: bytes) -> cm.ForwardCloseRequest:
    return cm.ForwardCloseRequest.decode_body(d)


ROUND_TRIPS = [
    RoundTrip(
        "EncapsulationPacket",
        encap.EncapsulationPacket.decode,
        lambda v: v.encode(),
        lambda c: c.encap_frames,
    ),
    RoundTrip(
        "SendData",
        encap.SendData.decode,
        lambda v: v.encode(),
        lambda c: c.send_data,
    ),
    RoundTrip(
        "cpf items",
        cpf.decode_items,
        cpf.encode_items,
        lambda c: c.cpf_blocks,
    ),
    RoundTrip(
        "cip.Request",
        cip.Request.decode,
        lambda v: v.encode(),
        lambda c: c.cip_requests,
    ),
    RoundTrip(
        "cip.Reply",
        cip.Reply.decode,
        lambda v: v.encode(),
        lambda c: c.cip_replies,
    ),
    RoundTrip(
        "cip.UnconnectedSend",
        cip.UnconnectedSend.decode,
        lambda v: v.encode(),
        lambda c: _cm(c, 0x52),
    ),
    RoundTrip(
        "epath",
        epath.decode_path,
        epath.encode_path,
        lambda c: c.paths,
    ),
    RoundTrip(
        "ForwardOpenRequest",
        cm.ForwardOpenRequest.decode_body,
        lambda v: v.encode_body(),
        lambda c: _cm(c, 0x54),
    ),
    RoundTrip(
        "LargeForwardOpenRequest",
        lambda d: cm.ForwardOpenRequest.decode_body(d, large=True),
        lambda v: v.encode_body(),
        lambda c: _cm(c, 0x5B),
    ),
    RoundTrip(
        "ForwardOpenSuccess",
        cm.ForwardOpenSuccess.decode_body,
        lambda v: v.encode_body(),
        lambda c: _cm(c, 0x54, replies=True),
    ),
    RoundTrip(
        "ForwardCloseRequest",
        _fc_body,
        lambda v: v.encode_body(),
        lambda c: _cm(c, 0x4E),
    ),
    RoundTrip(
        "ForwardCloseSuccess",
        cm.ForwardCloseSuccess.decode_body,
        lambda v: v.encode_body(),
        lambda c: _cm(c, 0x4E, replies=True),
    ),
    RoundTrip(
        "Class1Datagram",
        class1.Class1Datagram.decode,
        lambda v: v.encode(),
        lambda c: c.datagrams,
    ),
    RoundTrip(
        "Class1Datagram(run_idle)",
        lambda d: class1.Class1Datagram.decode(d, run_idle_header=True),
        lambda v: v.encode(),
        lambda c: c.datagrams,
    ),
]


@pytest.mark.parametrize(
    "rt",
    ROUND_TRIPS,
    ids=lambda r: r.name,
)
def test_decode_then_encode_gives_the_same_bytes(rt: RoundTrip) -> None:
    rng = random.Random(f"{SEED}:roundtrip:{rt.name}")
    seeds = rt.seeds(corpus()) or [b""]
    mismatches: dict[str, bytes] = {}
    for _ in range(max(1, int(PER_TARGET * SCALE) // 4)):
        data = mutate(rng, rng.choice(seeds))
        try:
            value = rt.decode(data)
        except MalformedPacket:
            continue
        try:
            again = rt.encode(value)
        except Exception as e:  # noqa: BLE001 - an encoder refusing a decoded value is the bug
            mismatches.setdefault(f"encode raised {type(e).__name__}: {e}", data)
            continue
        if again != data:
            mismatches.setdefault("re-encoded bytes differ", data)
    assert not mismatches, "\n".join(
        f"{what}: {rt.name} of bytes.fromhex({data.hex()!r})" for what, data in mismatches.items()
    )


# Regressions: the shortest inputs this test found that once decoded to values that did not
# encode back to the same bytes (fixed in b7eee46). A parser must either reject the bytes
# (MalformedPacket) or give a value that encodes back to exactly them.
_EXACT_CASES = [
    ("epath: zero-length symbol", epath.decode_path, epath.encode_path, "9100"),
    ("epath: 32-bit class id", epath.decode_path, epath.encode_path, "220001000000"),
    ("epath: 32-bit attribute id", epath.decode_path, epath.encode_path, "320001000000"),
    ("epath: extended link of 1 byte", epath.decode_path, epath.encode_path, "11010500"),
    ("epath: extended link of 0 bytes", epath.decode_path, epath.encode_path, "1400"),
    ("epath: extended port number below 15", epath.decode_path, epath.encode_path, "0f010005"),
    ("epath: non-zero pad in a 16-bit segment", epath.decode_path, epath.encode_path, "31032400"),
    (
        "Forward_Open: NCP reserved bit 12",
        cm.ForwardOpenRequest.decode_body,
        lambda v: v.encode_body(),
        appendix_a.A1_CIP_FORWARD_OPEN[6:].hex().replace("0248", "0258", 1),
    ),
    (
        "Unconnected_Send: non-zero pad byte",
        cip.UnconnectedSend.decode,
        lambda v: v.encode(),
        "0a0507000e022001240107ff01000100",
    ),
]


@pytest.mark.parametrize("case", _EXACT_CASES, ids=[c[0] for c in _EXACT_CASES])
def test_once_inexact_inputs(
    case: tuple[str, Callable[[bytes], Any], Callable[[Any], bytes], str],
) -> None:
    _name, decode, encode, hexdata = case
    data = bytes.fromhex(hexdata)
    try:
        value = decode(data)
    except MalformedPacket:
        return
    assert encode(value) == data
