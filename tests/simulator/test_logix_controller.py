"""acquisition.logix_controller: what the simulated Logix CPU answers to each explicit request.

Requests are built by pycomm3's own packet classes wherever it has one (an encoder independent
of ours), and replies are checked with pycomm3's parsers or our logix_objects parsers; the tag
values come from the simulator's default tag set. No sockets, fake clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycomm3.cip import DataTypes
from pycomm3.custom_types import ModuleIdentityObject, StructTemplateAttributes
from pycomm3.packets.logix import (
    MultiServiceRequestPacket,
    ReadModifyWriteRequestPacket,
    ReadTagFragmentedRequestPacket,
    ReadTagRequestPacket,
    WriteTagFragmentedRequestPacket,
    WriteTagRequestPacket,
)
from pycomm3.packets.util import request_path, wrap_unconnected_send
from pyconpro.acquisition import cip, encap, epath
from pyconpro.acquisition.errors import MalformedPacket
from pyconpro.acquisition.logix_controller import LogixController, TcpIpSettings
from pyconpro.acquisition.logix_objects import (
    PYCOMM3_SYMBOL_ATTRIBUTES,
    SymbolInstance,
    TemplateAttributes,
    encode_attribute_ids,
    encode_template_definition,
    parse_attribute_results,
    parse_symbol_instances,
    parse_template_definition,
    template_read_area,
)
from pyconpro.acquisition.logix_requests import (
    Identity,
    Location,
    ReadModifyWriteRequest,
    ReadTagFragmentedRequest,
    ReadTagRequest,
    WriteTagRequest,
    locate,
)
from pyconpro.acquisition.logix_types import (
    DINT,
    STRING,
    ArrayType,
    AtomicType,
    DataTypeCode,
    ReadTagType,
    StructType,
)
from pyconpro.simulator.tags import MOTOR_DATA, POSITION, TagStore, default_store
from pylogix import PLC
from pylogix.lgx_device import Device

from tests.acquisition.codec_helpers import assert_prefixes_malformed
from tests.support.clients import assert_pylogix_tag_list

NOW = 5.0


@pytest.fixture
def store() -> TagStore:
    s = default_store()
    s.tick(0.0)
    return s


@pytest.fixture
def target(store: TagStore) -> LogixController:
    return LogixController(store)


def call(target: LogixController, message: bytes, **kw: object) -> cip.Reply:
    return cip.Reply.decode(target.handle(message, NOW, **kw))  # type: ignore[arg-type]


def request(service: int, segments: Sequence[epath.Segment], data: bytes = b"") -> bytes:
    return cip.Request(service, epath.encode_path(list(segments)), data).encode()


def sym(name: str) -> epath.SymbolicSegment:
    return epath.SymbolicSegment(name)


def pycomm3_message(packet: object) -> bytes:
    """The CIP message a pycomm3 request packet sends (its 2-byte sequence count stripped)."""
    message: bytes = packet.build_message()  # type: ignore[attr-defined]
    return message[2:]


def tag_info(store: TagStore, name: str) -> dict[str, object]:
    """The bits of pycomm3's tag definition its packet classes use."""
    tag = store.find(name)
    assert tag is not None
    t = tag.type
    elem = t.element if isinstance(t, ArrayType) else t
    if isinstance(t, ArrayType) and t.is_bool_array:
        return {"instance_id": tag.instance_id, "data_type_name": "DWORD", "tag_type": "atomic",
                "data_type": "DWORD"}
    if isinstance(elem, AtomicType):
        return {"instance_id": tag.instance_id, "data_type_name": elem.name,
                "tag_type": "atomic", "data_type": elem.name}
    return {"instance_id": tag.instance_id, "data_type_name": elem.name, "tag_type": "struct",
            "data_type": {"template": {"structure_handle": elem.handle}}}


SEQ = itertools.count(1)

# ---------------------------------------------------------------------------------------------
# Wire structs: golden bytes, encode back, truncated prefixes, Hypothesis round trip
# ---------------------------------------------------------------------------------------------

# Identity Get_Attributes_All data laid out by hand from protocol.md 10.2 row 3.
IDENTITY_GOLDEN = bytes.fromhex("0100 0e00 a600 21 0b 6030 eeffc000 0b") + b"1756-L83E/B"


def test_identity_golden_and_pycomm3_decodes_it() -> None:
    ident = Identity.decode(IDENTITY_GOLDEN)
    assert ident == Identity()
    assert ident.product_name == "1756-L83E/B" and ident.revision_major == 33
    assert ident.encode() == IDENTITY_GOLDEN == Identity().encode()
    value = ModuleIdentityObject.decode(IDENTITY_GOLDEN)
    assert value["vendor"] == "Rockwell Automation/Allen-Bradley"
    assert value["product_type"] == "Programmable Logic Controller"
    assert value["revision"] == {"major": 33, "minor": 11}
    assert value["serial"] == "00c0ffee"
    assert value["status"] == b"\x60\x30"  # pycomm3 KEYSWITCH[0x60][0x30] = "REMOTE RUN"
    assert_prefixes_malformed(Identity.decode, IDENTITY_GOLDEN)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(1, 127), st.integers(0, 255),
       st.integers(0, 0xFFFFFFFF), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/", max_size=32))
def test_identity_round_trip(vendor: int, code: int, major: int, minor: int, serial: int,
                             name: str) -> None:
    ident = Identity(vendor_id=vendor, product_code=code, revision_major=major,
                     revision_minor=minor, serial_number=serial, product_name=name, state=3)
    assert Identity.decode(ident.encode()) == ident


def _data_after_path(message: bytes) -> bytes:
    return message[2 + 2 * message[1]:]


def test_read_tag_request_golden_from_pycomm3(store: TagStore) -> None:
    msg = pycomm3_message(ReadTagRequestPacket(next(SEQ), "Array10", 10,
                                               tag_info(store, "Array10"), 0, True))
    data = _data_after_path(msg)
    assert data == b"\x0a\x00"
    assert ReadTagRequest.parse(data) == ReadTagRequest(10)
    assert ReadTagRequest(10).encode() == data
    assert_prefixes_malformed(ReadTagRequest.parse, data)


def test_read_fragmented_request_golden_from_pycomm3(store: TagStore) -> None:
    msg = pycomm3_message(ReadTagFragmentedRequestPacket(
        next(SEQ), "Big", 125, tag_info(store, "Big"), 0, True, 0x1F4))
    assert msg[0] == 0x52
    data = _data_after_path(msg)
    assert data == bytes.fromhex("7d00 f4010000")
    assert ReadTagFragmentedRequest.parse(data) == ReadTagFragmentedRequest(125, 500)
    assert ReadTagFragmentedRequest(125, 500).encode() == data
    assert_prefixes_malformed(ReadTagFragmentedRequest.parse, data)


def test_write_tag_request_golden_from_pycomm3(store: TagStore) -> None:
    value = DataTypes["REAL"].encode(1.25)
    packet = WriteTagRequestPacket(next(SEQ), "Setpoint", 1, tag_info(store, "Setpoint"), 0,
                                   True, value)
    msg = pycomm3_message(packet)
    data = _data_after_path(msg)
    assert data == bytes.fromhex("ca00 0100 0000a03f")
    req = WriteTagRequest.parse(data)
    assert req == WriteTagRequest(ReadTagType(0xCA), 1, bytes.fromhex("0000a03f"))
    assert req.encode() == data
    assert_prefixes_malformed(WriteTagRequest.parse, data[:4])


def test_write_struct_and_fragmented_request_golden_from_pycomm3(store: TagStore) -> None:
    packet = WriteTagFragmentedRequestPacket(next(SEQ), "Text", 1, tag_info(store, "Text"), 0,
                                             True, 4, b"abcd")
    packet.request_path = pycomm3_request_path(store, "Text")  # type: ignore[assignment]
    msg = pycomm3_message(packet)
    assert msg[0] == 0x53
    data = _data_after_path(msg)
    assert data == bytes.fromhex("a002ce0f 0100 04000000") + b"abcd"
    req = WriteTagRequest.parse(data, fragmented=True)
    assert req == WriteTagRequest(ReadTagType(0x02A0, 0x0FCE), 1, b"abcd", 4)
    assert req.encode() == data
    assert_prefixes_malformed(lambda d: WriteTagRequest.parse(d, fragmented=True), data[:10])


def pycomm3_request_path(store: TagStore, name: str) -> bytes:
    tag = store.find(name)
    assert tag is not None
    return request_path(0x6B, tag.instance_id)


def test_read_modify_write_golden() -> None:
    # 1756-PM020 layout: mask size 2, OR mask 0x0008, AND mask 0xFFFF.
    data = bytes.fromhex("0200 0800 ffff")
    req = ReadModifyWriteRequest.parse(data)
    assert req == ReadModifyWriteRequest(b"\x08\x00", b"\xff\xff")
    assert req.encode() == data
    assert_prefixes_malformed(ReadModifyWriteRequest.parse, data)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=40),
       st.booleans(), st.integers(0, 0xFFFF))
def test_tag_request_round_trips(elements: int, offset: int, payload: bytes, struct_type: bool,
                                 handle: int) -> None:
    assert ReadTagRequest.parse(ReadTagRequest(elements).encode()) == ReadTagRequest(elements)
    frag = ReadTagFragmentedRequest(elements, offset)
    assert ReadTagFragmentedRequest.parse(frag.encode()) == frag
    t = ReadTagType(0x02A0, handle) if struct_type else ReadTagType(0xC4)
    w = WriteTagRequest(t, elements, payload)
    assert WriteTagRequest.parse(w.encode()) == w
    wf = WriteTagRequest(t, elements, payload, offset)
    assert WriteTagRequest.parse(wf.encode(), fragmented=True) == wf
    mask = payload[: len(payload) // 2]
    rmw = ReadModifyWriteRequest(mask, payload[len(mask): 2 * len(mask)])
    assert ReadModifyWriteRequest.parse(rmw.encode()) == rmw


# ---------------------------------------------------------------------------------------------
# locate()
# ---------------------------------------------------------------------------------------------


def test_locate_members_elements_and_bits() -> None:
    counts = next(m for m in MOTOR_DATA.members if m.name == "Counts")
    pos = next(m for m in MOTOR_DATA.members if m.name == "Pos")
    homed = next(m for m in POSITION.members if m.name == "Homed")
    assert locate(MOTOR_DATA, ["counts", (2,)]) == Location(counts.offset + 8, DINT, 2)
    assert locate(MOTOR_DATA, ["Counts"]) == Location(counts.offset, DINT, 4)
    assert locate(MOTOR_DATA, ["Pos", "Homed"]) == Location(
        pos.offset + homed.offset, AtomicType(DataTypeCode.BOOL), 1, homed.bit)
    matrix = ArrayType(AtomicType(DataTypeCode.INT), (2, 3))
    assert locate(matrix, [(1, 2)]) == Location(10, AtomicType(DataTypeCode.INT), 1)
    bools = ArrayType(AtomicType(DataTypeCode.BOOL), (64,))
    assert locate(bools, []) == Location(0, AtomicType(DataTypeCode.DWORD), 2)
    assert locate(bools, [(1,)]) == Location(4, AtomicType(DataTypeCode.DWORD), 1)


# ---------------------------------------------------------------------------------------------
# Identity, program name, TCP/IP object
# ---------------------------------------------------------------------------------------------


def test_identity_through_unconnected_send_as_pycomm3_sends_it(target: LogixController) -> None:
    # protocol.md 10.2 row 3, byte for byte.
    msg = bytes.fromhex("52 02 20 06 24 01 0A 05 06 00 01 02 20 01 24 01 01 00 01 00")
    assert msg == wrap_unconnected_send(bytes.fromhex("01 02 20 01 24 01"), b"\x01\x00\x01\x00")
    reply = call(target, msg)
    assert (reply.service, reply.status, reply.additional) == (0x01, 0, ())
    assert reply.data == Identity().encode()


def test_identity_get_attribute_single(target: LogixController) -> None:
    path = [epath.class_id(1), epath.instance_id(1)]
    for attr, value in [(1, b"\x01\x00"), (2, b"\x0e\x00"), (4, b"\x21\x0b"),
                        (6, bytes.fromhex("eeffc000")), (7, b"\x0b1756-L83E/B")]:
        reply = call(target, request(0x0E, path + [epath.attribute_id(attr)]))
        assert (reply.status, reply.data) == (0, value)
    assert call(target, request(0x0E, path + [epath.attribute_id(99)])).status == 0x14
    assert call(target, request(0x0E, path)).status == 0x04
    assert call(target, request(0x10, path + [epath.attribute_id(1)], b"\x01\x00")).status \
        == 0x15
    assert call(target, request(0x05, path)).status == 0x08
    assert call(target, request(0x01, [epath.class_id(1), epath.instance_id(2)])).status == 0x05
    assert call(target, request(0x01, path, b"\x00")).status == 0x15


def test_identity_reply_ends_with_the_product_name_as_a_logix_and_pylogix_reads_it(
        target: LogixController) -> None:
    # A 1756-L61/B (rev 20.11) answers Get_Attributes_All with 35 data bytes ending with the
    # product name: no State, Configuration Consistency Value or Heartbeat Interval after it
    # (protocol.md 10.2 row 3), though CIP allows them and Wireshark would decode them.
    l61 = Identity(product_code=54, revision_major=20, revision_minor=11, status=0x3160,
                   serial_number=0x006C061A, product_name="1756-L61/B LOGIX5561")
    assert len(l61.encode()) == 35 and l61.encode().endswith(b"\x141756-L61/B LOGIX5561")
    # pylogix GetDeviceProperties: Unconnected_Send of Get_Attributes_All to 01 <slot>, then
    # Device.parse of 4 zero bytes + the SendRRData reply, whose last byte it calls the State
    # (the field that ends a ListIdentity item): on a Logix, the product name's last letter.
    msg = PLC()._cip_message(0x01, 0x01, 0x01)
    reply = call(target, wrap_unconnected_send(msg, b"\x01\x00\x01\x00"))
    assert reply.status == 0
    packet = encap.EncapsulationPacket(encap.Command.SEND_RR_DATA,
                                       encap.send_rr_data(reply.encode()), 1, 0, bytes(8))
    device = Device.parse(bytes(4) + packet.encode(), "127.0.0.2")
    assert (device.VendorID, device.DeviceID, device.ProductCode) == (1, 14, 166)
    assert (device.Revision, device.Status, device.SerialNumber) == ("33.11", 0x3060, "0xc0ffee")
    assert device.ProductName == "1756-L83E/B"
    assert device.State == ord("B")


def test_program_name(target: LogixController, store: TagStore) -> None:
    reply = call(target, bytes.fromhex("01 02 20 64 24 01"))
    assert reply.status == 0
    assert reply.data == struct.pack("<H", len(store.program_name)) + b"PYCONPRO_SIM"
    assert call(target, bytes.fromhex("0E 02 20 64 24 01")).status == 0x08


def test_tcpip_object_attributes(store: TagStore) -> None:
    target = LogixController(store, tcpip=TcpIpSettings(address="192.168.1.10",
                                                       netmask="255.255.255.0"))

    def attr(n: int) -> cip.Reply:
        return call(target, request(0x0E, [epath.class_id(0xF5), epath.instance_id(1),
                                           epath.attribute_id(n)]))

    assert attr(8).data == b"\x01"
    # protocol.md 6.7 example: 192.168.1.10/24 -> host 10 -> 239.192.2.32, 32 groups.
    assert attr(9).data == b"\x00\x00\x20\x00" + struct.pack("<I", 0xEFC00220)
    assert attr(13).data == struct.pack("<H", 120)
    assert attr(5).data[:8] == struct.pack("<II", 0xC0A8010A, 0xFFFFFF00)
    assert attr(6).status == 0 and attr(1).data == b"\x01\x00\x00\x00"
    assert attr(7).status == 0x14


# ---------------------------------------------------------------------------------------------
# Symbol object: 0x55 listing with continuation
# ---------------------------------------------------------------------------------------------


def list_all(target: LogixController, prefix: Sequence[epath.Segment], limit: int,
             attrs: tuple[int, ...] = PYCOMM3_SYMBOL_ATTRIBUTES,
             ) -> tuple[list[SymbolInstance], int]:
    """Walk the listing like pycomm3 (next instance = last + 1 while status 0x06)."""
    out: list[SymbolInstance] = []
    start, calls = 0, 0
    while True:
        calls += 1
        reply = call(target, request(0x55, [*prefix, epath.class_id(0x6B),
                                                     epath.instance_id(start)],
                                     encode_attribute_ids(attrs)), reply_limit=limit)
        assert reply.status in (0, 0x06) and reply.additional == ()
        assert len(reply.encode()) <= limit
        page = parse_symbol_instances(reply.data, attrs)
        out.extend(page)
        if reply.status == 0:
            return out, calls
        start = page[-1].instance_id + 1


@pytest.mark.parametrize("limit", [100, 200, 504, 3998])
def test_controller_listing_with_continuation(target: LogixController, store: TagStore,
                                              limit: int) -> None:
    listed, calls = list_all(target, [], limit)
    assert listed == [dataclasses.replace(s, element_size=None) for s in store.listing(None) or ()]
    assert calls > 1 if limit <= 504 else calls == 1
    names = {s.name for s in listed}
    assert {"Counter", "Motor", "Text", "Program:MainProgram", "Task:MainTask"} <= names
    assert "Hidden" not in names and "Local" not in names
    assert any(s.instance_id > 255 for s in listed)  # continuation uses 25 00 lo hi


def test_program_listing(target: LogixController, store: TagStore) -> None:
    prefix = [sym("Program:MainProgram")]
    listed, _ = list_all(target, prefix, 120)
    assert [s.name for s in listed] == ["Routine:MainRoutine", "Local", "Recipe"]
    assert listed == [dataclasses.replace(s, element_size=None)
                      for s in store.listing("MainProgram") or ()]
    reply = call(target, request(0x55, [sym("Program:Nope"), epath.class_id(0x6B),
                                        epath.instance_id(0)], encode_attribute_ids((1,))))
    assert (reply.status, reply.additional) == (0x04, (0,))


def test_listing_libplctag_attributes(target: LogixController, store: TagStore) -> None:
    listed, _ = list_all(target, [], 3998, (2, 7, 8, 1))
    big = next(s for s in listed if s.name == "Big")
    assert (big.element_size, big.dims, big.type_word) == (4, (125, 0, 0), 0x20C4)


def test_listing_request_errors(target: LogixController) -> None:
    path = [epath.class_id(0x6B), epath.instance_id(0)]
    assert call(target, request(0x55, path, b"\x02\x00\x01\x00")).status == 0x13
    assert call(target, request(0x55, path, b"\x01\x00\x01\x00\x00")).status == 0x15
    assert call(target, request(0x55, path, encode_attribute_ids((4,)))).status == 0x14
    assert call(target, request(0x55, path, encode_attribute_ids((1,))),
                reply_limit=8).status == 0x11
    assert call(target, request(0x55, [epath.class_id(0x6B)], b"\x00\x00")).status == 0x04


# ---------------------------------------------------------------------------------------------
# Template object
# ---------------------------------------------------------------------------------------------


def template_path(instance: int) -> list[epath.Segment]:
    return [epath.class_id(0x6C), epath.instance_id(instance)]


@pytest.mark.parametrize("st_type", [MOTOR_DATA, POSITION, STRING])
@pytest.mark.parametrize("limit", [40, 3998])
def test_template_attributes_and_read(target: LogixController, st_type: StructType,
                                      limit: int) -> None:
    # pycomm3's exact request (protocol.md 10.2 row 8) and its attribute parser.
    attrs_req = request(0x03, template_path(st_type.instance_id),
                        bytes.fromhex("04 00 04 00 05 00 02 00 01 00"))
    reply = call(target, attrs_req)
    assert reply.status == 0
    parsed = StructTemplateAttributes.decode(reply.data)
    assert parsed["structure_size"]["size"] == st_type.size
    assert parsed["member_count"]["count"] == len(st_type.members)
    assert parsed["structure_handle"]["handle"] == st_type.handle
    words = parsed["object_definition_size"]["size"]
    attributes = TemplateAttributes.from_results(parse_attribute_results(reply.data))
    # Read as pycomm3 does: 4 * size - 21 - offset bytes while status is 0x06.
    raw, offset = b"", 0
    while True:
        r = call(target, request(0x4C, template_path(st_type.instance_id),
                                 struct.pack("<IH", offset, words * 4 - 21 - offset)),
                 reply_limit=limit)
        assert r.status in (0, 0x06) and len(r.encode()) <= limit
        raw += r.data
        offset += len(r.data)
        if r.status == 0:
            break
    definition = encode_template_definition(st_type)
    assert raw == template_read_area(definition)[:words * 4 - 21]  # all of it, zeros after
    rebuilt = parse_template_definition(raw, attributes, instance_id=st_type.instance_id,
                                        lookup=lambda i: target.store.templates()[i])
    assert rebuilt == st_type


@pytest.mark.parametrize("st_type", [MOTOR_DATA, POSITION, STRING])
@pytest.mark.parametrize("limit", [40, 3998])
def test_template_read_as_pylogix_reads_it(target: LogixController, st_type: StructType,
                                           limit: int) -> None:
    """pylogix asks for attributes 4, 3, 2, 1, reads the member count 18 bytes into the reply
    data, then reads 4 * attribute 4 - 23 rounded up to 4 bytes, asking again from the end of
    what it has until it has them all (eip.py ``_get_udt``, ``_get_template``)."""
    reply = call(target, request(0x03, template_path(st_type.instance_id),
                                 bytes.fromhex("04 00 04 00 03 00 02 00 01 00")))
    assert reply.status == 0
    words = struct.unpack_from("<I", reply.data, 6)[0]
    assert struct.unpack_from("<H", reply.data, 20)[0] == len(st_type.members)
    assert [(a.attribute, a.status) for a in parse_attribute_results(reply.data)] \
        == [(4, 0), (3, 0), (2, 0), (1, 0)]
    size = -(-(words * 4 - 23) // 4) * 4
    data, requests = b"", 0
    while len(data) < size:
        r = call(target, request(0x4C, template_path(st_type.instance_id),
                                 struct.pack("<IH", len(data), size - len(data))),
                 reply_limit=limit)
        requests += 1
        assert r.status in (0, 0x06) and r.data and requests < 50
        data += r.data
    assert data == template_read_area(encode_template_definition(st_type))
    # At the end there is nothing more: an error, never an empty success to ask again after.
    end = call(target, request(0x4C, template_path(st_type.instance_id),
                               struct.pack("<IH", len(data), 4)))
    assert (end.status, end.additional) == (0xFF, (0x2104,))


def test_template_errors(target: LogixController) -> None:
    assert call(target, request(0x03, template_path(0x0EEE), b"\x01\x00\x01\x00")).status \
        == 0x05
    mixed = call(target, request(0x03, template_path(MOTOR_DATA.instance_id),
                                 encode_attribute_ids((1, 6))))
    assert mixed.status == 0x0A
    assert [(a.attribute, a.status) for a in parse_attribute_results(mixed.data)] \
        == [(1, 0), (6, 0x14)]
    read = template_path(MOTOR_DATA.instance_id)
    assert call(target, request(0x4C, read, b"\x00\x00")).status == 0x13
    assert call(target, request(0x4C, read, bytes(7))).status == 0x15
    far = call(target, request(0x4C, read, struct.pack("<IH", 10_000, 10)))
    assert (far.status, far.additional) == (0xFF, (0x2104,))
    assert call(target, request(0x4D, read)).status == 0x08


class PylogixConnection:
    """Stands in for pylogix's ``Connection`` (lgx_comm.py): each connected request goes to
    the controller, and the reply comes back where pylogix looks for it in a SendUnitData
    reply, the CIP reply at byte 46. A fake of the transport only: pylogix's own code builds
    every request and parses every reply."""

    def __init__(self, target: LogixController) -> None:
        self.target = target
        self.requests: list[bytes] = []

    def connect(self, connected: bool = True) -> tuple[bool, None]:
        return True, None

    def send(self, request: bytes, connected: bool = True, slot: int | None = None
             ) -> tuple[int, bytes]:
        assert connected and slot is None
        self.requests.append(request)
        reply = self.target.handle(request, NOW)
        return reply[2], bytes(46) + reply


def test_pylogix_lists_tags_and_decodes_udts(target: LogixController, store: TagStore) -> None:
    plc = PLC()
    conn = PylogixConnection(target)
    plc.conn = conn
    result = plc.GetTagList()
    assert result.Status == "Success"
    assert len(conn.requests) < 40  # listings and templates once each, no endless re-reads
    tags = {t.TagName: t for t in result.Value}
    assert {"Program:MainProgram", "Program:Aux"} <= set(tags)
    assert_pylogix_tag_list(tags, store)
    udts = {u.Name: u for u in plc.UDT.values()}
    assert set(udts) == {"MotorData", "Position", "CellStatus", "ASCIISTRING82"}
    for st_type in (MOTOR_DATA, POSITION):
        fields = udts[st_type.name].Fields
        assert [f.TagName for f in fields] == [m.name for m in st_type.members]
        assert [f.Internal for f in fields] == [m.hidden for m in st_type.members]
    pos = udts["MotorData"].FieldsByName["Pos"]
    assert (pos.Struct, pos.DataType) == (1, "Position")
    counts = udts["MotorData"].FieldsByName["Counts"]
    assert (counts.Array, counts.Size, counts.DataType) == (1, 4, "DINT")


def test_wall_clock_through_the_controller(target: LogixController) -> None:
    t0 = 1_700_000_000_000_000
    target.wall_clock.set_utc(t0, NOW)
    get = bytes.fromhex("03 02 20 8B 24 01 0100 0600")  # pycomm3 get_plc_time
    assert cip.Reply.decode(target.handle(get, NOW + 1.5)).data[6:] == struct.pack(
        "<Q", t0 + 1_500_000)
    # unconnected, as pylogix Message() and libplctag raw tags may send it, and in a packet
    routed = call(target, wrap_unconnected_send(get, b"\x01\x00\x01\x00"))
    assert routed.data[6:] == struct.pack("<Q", t0)
    multi = call(target, request(0x0A, [epath.class_id(2), epath.instance_id(1)],
                                 cip.encode_multiple([get, bytes.fromhex("0E03 208B 2401 300A")])))
    parts = [cip.Reply.decode(p) for p in cip.decode_multiple(multi.data)]
    assert [(p.service, p.status, p.data[-1:]) for p in parts] == [(0x03, 0, b"\x00"),
                                                                   (0x0E, 0, b"\x00")]
    put = bytes.fromhex("10 03 20 8B 24 01 30 0A 01")  # Set_Attribute_Single DST = 1
    assert call(target, put).status == 0 and target.wall_clock.dst
    assert call(target, bytes.fromhex("03 02 20 8B 24 02 0100 0600")).status == 0x05
    assert call(target, bytes.fromhex("03 02 20 8B 24 00 0100 0600")).status == 0x05
    assert call(target, bytes.fromhex("03 04 20 8B 24 01 30 06 30 06")).status == 0x04


# ---------------------------------------------------------------------------------------------
# Tag services
# ---------------------------------------------------------------------------------------------


def read_via_pycomm3(target: LogixController, store: TagStore, name: str, elements: int = 1,
                     instance: bool = True) -> cip.Reply:
    base = name.split(".")[0].split("[")[0]
    if name.startswith("Program:"):
        base = ".".join(name.split(".")[:2])
    msg = pycomm3_message(ReadTagRequestPacket(next(SEQ), name, elements,
                                               tag_info(store, base), 0, instance))
    return call(target, msg)


@pytest.mark.parametrize("instance", [True, False])
@pytest.mark.parametrize("name", ["Counter", "Sine", "Setpoint", "Flag", "Small", "Medium",
                                  "Large", "Precise", "Version"])
def test_read_atomic_tags(target: LogixController, store: TagStore, name: str,
                          instance: bool) -> None:
    reply = read_via_pycomm3(target, store, name, instance=instance)
    tag = store.find(name)
    assert tag is not None and isinstance(tag.type, AtomicType)
    assert (reply.service, reply.status, reply.additional) == (0x4C, 0, ())
    assert reply.data == struct.pack("<H", tag.type.code) + tag.image()


def test_read_moves_with_time(target: LogixController, store: TagStore) -> None:
    msg = request(0x4C, [sym("Counter")], b"\x01\x00")
    first = cip.Reply.decode(target.handle(msg, 1.0)).data
    second = cip.Reply.decode(target.handle(msg, 2.0)).data
    assert struct.unpack("<i", first[2:])[0] == 10 and struct.unpack("<i", second[2:])[0] == 20


def test_read_structures_strings_and_members(target: LogixController, store: TagStore) -> None:
    motor = store.find("Motor")
    assert motor is not None
    reply = read_via_pycomm3(target, store, "Motor")
    assert reply.data == struct.pack("<HH", 0x02A0, MOTOR_DATA.handle) + motor.image()
    text = read_via_pycomm3(target, store, "Text")
    assert text.data[:4] == bytes.fromhex("a002ce0f")
    assert text.data[4:] == struct.pack("<i", 5) + b"hello" + bytes(STRING.size - 9)
    speed = call(target, request(0x4C, [sym("Motor"), sym("Speed")], b"\x01\x00"))
    assert speed.data == b"\xca\x00" + motor.image()[4:8]
    counts = call(target, request(0x4C, [sym("Motor"), sym("Counts"), epath.member_id(1)],
                                  b"\x03\x00"))
    assert counts.data == b"\xc4\x00" + motor.image()[12:24]
    pos = call(target, request(0x4C, [sym("Station"), sym("Pos")], b"\x01\x00"))
    assert pos.data[:4] == struct.pack("<HH", 0x02A0, POSITION.handle)
    homed = call(target, request(0x4C, [sym("Station"), sym("Pos"), sym("Homed")], b"\x01\x00"))
    assert homed.data == b"\xc1\x00\x01"


def test_read_arrays(target: LogixController, store: TagStore) -> None:
    matrix = store.find("Matrix")
    assert matrix is not None
    whole = call(target, request(0x4C, [sym("Matrix")], b"\x06\x00"))
    assert whole.data == b"\xc3\x00" + matrix.image()
    one = call(target, request(0x4C, [sym("Matrix"), epath.member_id(1), epath.member_id(2)],
                               b"\x01\x00"))
    assert one.data == b"\xc3\x00" + struct.pack("<h", 6)
    bits = call(target, request(0x4C, [sym("Bits"), epath.member_id(0)], b"\x02\x00"))
    assert bits.data[:2] == b"\xd3\x00" and len(bits.data) == 10
    prog = read_via_pycomm3(target, store, "Program:MainProgram.Recipe", 4, instance=False)
    assert prog.data == b"\xca\x00" + struct.pack("<4f", 1.5, 2.5, 3.5, 4.5)


def test_read_errors(target: LogixController, store: TagStore) -> None:
    def status(segments: list[epath.Segment],
               data: bytes = b"\x01\x00") -> tuple[int, tuple[int, ...]]:
        r = call(target, request(0x4C, segments, data))
        return r.status, r.additional

    assert status([sym("Nope")]) == (0x04, (0,))
    assert status([sym("Hidden")]) == (0x04, (0,))
    assert status([sym("Motor"), sym("Nope")]) == (0x04, (0,))
    assert status([sym("Counter"), sym("X")]) == (0x04, (0,))
    assert status([sym("Array10"), epath.member_id(10)]) == (0x05, (0,))
    assert status([sym("Matrix"), epath.member_id(1)]) == (0x04, (0,))
    assert status([sym("Array10"), epath.member_id(8)], b"\x03\x00") == (0xFF, (0x2105,))
    assert status([sym("Counter")], b"\x00\x00") == (0xFF, (0x2105,))
    assert status([sym("Counter")], b"\x01") == (0x13, ())
    assert status([sym("Counter")], b"\x01\x00\x00") == (0x15, ())
    assert status([epath.class_id(0x6B), epath.instance_id(9999)]) == (0x05, (0,))
    local = store.find("Program:MainProgram.Local")
    assert local is not None
    # A program tag's instance is not reachable without its program prefix.
    assert status([epath.class_id(0x6B), epath.instance_id(local.instance_id)]) == (0x05, (0,))
    assert status([sym("Program:MainProgram"), epath.class_id(0x6B),
                   epath.instance_id(local.instance_id)])[0] == 0
    assert status([sym("Program:MainProgram")]) == (0x04, (0,))
    assert status([epath.class_id(0x77), epath.instance_id(1)]) == (0x05, (0,))


def test_read_too_large_is_partial_and_fragmented_read_reassembles(
        target: LogixController, store: TagStore) -> None:
    big = store.find("Big")
    assert big is not None
    plain = call(target, request(0x4C, [sym("Big")], struct.pack("<H", 125)), reply_limit=200)
    assert plain.status == 0x06 and len(plain.encode()) <= 200
    image = big.image()  # the clock stays at NOW from here on
    got, offset = b"", 0
    info = tag_info(store, "Big")
    packet = ReadTagRequestPacket(next(SEQ), "Big", 125, info, 0, True)
    while True:
        frag = ReadTagFragmentedRequestPacket.from_request(iter([next(SEQ)]), packet, offset)
        r = call(target, pycomm3_message(frag), reply_limit=200)
        assert r.data[:2] == b"\xc4\x00" and len(r.encode()) <= 200
        got += r.data[2:]
        offset += len(r.data) - 2
        if r.status == 0:
            break
        assert r.status == 0x06
    assert got == image
    beyond = call(target, request(0x52, [sym("Big")], struct.pack("<HI", 125, 500)))
    assert (beyond.status, beyond.additional) == (0xFF, (0x2104,))


def write(target: LogixController, segments: Sequence[epath.Segment], type_word: bytes,
          elements: int, data: bytes, offset: int | None = None) -> cip.Reply:
    body = type_word + struct.pack("<H", elements)
    body += struct.pack("<I", offset) if offset is not None else b""
    return call(target, request(0x53 if offset is not None else 0x4D, segments, body + data))


def test_write_each_type_then_read_back(target: LogixController, store: TagStore) -> None:
    cases = [("Setpoint", "REAL", 1.25), ("Small", "SINT", -100), ("Medium", "INT", -2),
             ("Large", "LINT", -(1 << 50)), ("Precise", "LREAL", 0.1), ("Flag", "BOOL", False)]
    for name, dt, value in cases:
        t: Any = DataTypes[dt]
        packet = WriteTagRequestPacket(next(SEQ), name, 1, tag_info(store, name), 0, True,
                                       t.encode(value))
        reply = call(target, pycomm3_message(packet))
        assert (reply.service, reply.status) == (0x4D, 0), name
        tag = store.find(name)
        assert tag is not None and tag.value() == pytest.approx(value), name
    # pycomm3's single-tag write repeats its request after the data: the surplus is ignored.
    packet = WriteTagRequestPacket(next(SEQ), "Medium", 1, tag_info(store, "Medium"), 0, True,
                                   DataTypes["INT"].encode(77))
    packet.build_message()
    packet._msg_setup = False
    doubled = pycomm3_message(packet)
    assert len(doubled) > 16
    assert call(target, doubled).status == 0
    assert store.find("Medium").value() == 77  # type: ignore[union-attr]


def test_write_structures_strings_members_and_arrays(target: LogixController,
                                                     store: TagStore) -> None:
    text = STRING.size
    raw = struct.pack("<i", 3) + b"abc" + bytes(text - 7)
    assert write(target, [sym("Text")], bytes.fromhex("a002ce0f"), 1, raw).status == 0
    assert store.find("Text").value() == "abc"  # type: ignore[union-attr]
    station = store.find("Station")
    assert station is not None
    homed: list[epath.Segment] = [sym("Station"), sym("Pos"), sym("Homed")]
    assert write(target, homed, b"\xc1\x00", 1, b"\x00").status == 0
    assert station.value()["Pos"]["Homed"] is False
    assert write(target, homed, b"\xc1\x00", 1, b"\x01").status == 0
    assert station.value()["Pos"]["Homed"] is True
    counts: list[epath.Segment] = [sym("Station"), sym("Counts"), epath.member_id(2)]
    assert write(target, counts, b"\xc4\x00", 2, struct.pack("<2i", 30, 40)).status == 0
    assert station.value()["Counts"] == [1, 2, 30, 40]
    pos = bytes(POSITION.size)
    assert write(target, [sym("Station"), sym("Pos")],
                 struct.pack("<HH", 0x02A0, POSITION.handle), 1, pos).status == 0
    assert station.value()["Pos"] == {"X": 0.0, "Y": 0.0, "Homed": False}
    cube = [sym("Cube")]
    assert write(target, cube, b"\xc2\x00", 8, bytes(range(8))).status == 0
    assert store.find("Cube").value() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]  # type: ignore


def test_write_fragmented(target: LogixController, store: TagStore) -> None:
    recipe = [sym("Program:MainProgram"), sym("Recipe")]
    data = struct.pack("<4f", 9, 8, 7, 6)
    assert write(target, recipe, b"\xca\x00", 4, data[:8], 0).status == 0
    assert write(target, recipe, b"\xca\x00", 4, data[8:], 8).status == 0
    assert store.find("Program:MainProgram.Recipe").value() == [9, 8, 7, 6]  # type: ignore
    assert write(target, recipe, b"\xca\x00", 4, data[:12], 8).status == 0x15
    r = write(target, recipe, b"\xca\x00", 4, b"\x00", 16)
    assert (r.status, r.additional) == (0xFF, (0x2104,))


def test_write_errors(target: LogixController, store: TagStore) -> None:
    before = store.find("Setpoint").image()  # type: ignore[union-attr]
    r = write(target, [sym("Setpoint")], b"\xc4\x00", 1, b"\x01\x00\x00\x00")
    assert (r.status, r.additional) == (0xFF, (0x2107,))
    r = write(target, [sym("Station")], struct.pack("<HH", 0x02A0, 0x1234), 1,
              bytes(MOTOR_DATA.size))
    assert (r.status, r.additional) == (0xFF, (0x2107,))
    assert write(target, [sym("Setpoint")], b"\xca\x00", 1, b"\x00\x00").status == 0x13
    r = write(target, [sym("Setpoint")], b"\xca\x00", 2, bytes(8))
    assert (r.status, r.additional) == (0xFF, (0x2105,))
    assert write(target, [sym("Version")], b"\xc4\x00", 1, bytes(4)).status == 0x0F
    assert call(target, request(0x4D, [sym("Setpoint")], b"\xca")).status == 0x13
    assert store.find("Setpoint").image() == before  # type: ignore[union-attr]


def test_read_modify_write(target: LogixController, store: TagStore) -> None:
    medium = store.find("Medium")
    assert medium is not None
    medium.set(0x0F0F)
    packet = ReadModifyWriteRequestPacket(next(SEQ), "Medium", tag_info(store, "Medium"), -1,
                                          True)
    packet.set_bit(4, True, 0)
    packet.set_bit(0, False, 1)
    assert call(target, pycomm3_message(packet)).status == 0  # 8-byte AND mask accepted
    assert medium.value() == 0x0F1E
    bits = store.find("Bits")
    assert bits is not None
    rmw = ReadModifyWriteRequest(b"\x00\x00\x00\x80", b"\xff\xff\xff\xff").encode()
    assert call(target, request(0x4E, [sym("Bits"), epath.member_id(1)], rmw)).status == 0
    assert bits.value()[63] is True
    r = call(target, request(0x4E, [sym("Setpoint")], rmw))
    assert (r.status, r.additional) == (0xFF, (0x2107,))
    assert call(target, request(0x4E, [sym("Medium")], b"\x02\x00\x01")).status == 0x13
    assert call(target, request(0x4E, [sym("Version")], rmw)).status == 0x0F


# ---------------------------------------------------------------------------------------------
# Multiple Service Packet and Unconnected_Send
# ---------------------------------------------------------------------------------------------


def test_multiple_service_packet_from_pycomm3(target: LogixController, store: TagStore) -> None:
    reads = [ReadTagRequestPacket(next(SEQ), n, 1, tag_info(store, n), i, True)
             for i, n in enumerate(["Counter", "Sine", "Text"])]
    for r in reads:
        r.build_message()  # as LogixDriver._read_build_multi_requests does
    msg = pycomm3_message(MultiServiceRequestPacket(next(SEQ), reads))
    reply = call(target, msg)
    assert (reply.service, reply.status) == (0x0A, 0)
    parts = [cip.Reply.decode(p) for p in cip.decode_multiple(reply.data)]
    for part, name in zip(parts, ["Counter", "Sine", "Text"]):
        tag = store.find(name)
        assert part.service == 0x4C and part.status == 0
        assert part.data.endswith(tag.image())  # type: ignore[union-attr]


def test_multiple_service_packet_with_a_failure(target: LogixController) -> None:
    embedded = [request(0x4C, [sym("Counter")], b"\x01\x00"),
                request(0x4C, [sym("Nope")], b"\x01\x00"),
                request(0x0A, [epath.class_id(2), epath.instance_id(1)],
                        cip.encode_multiple([]))]
    reply = call(target, request(0x0A, [epath.class_id(2), epath.instance_id(1)],
                                 cip.encode_multiple(embedded)))
    assert reply.status == 0x1E
    parts = [cip.Reply.decode(p) for p in cip.decode_multiple(reply.data)]
    assert [(p.service, p.status) for p in parts] == [(0x4C, 0), (0x4C, 0x04), (0x0A, 0x08)]


def test_multiple_service_packet_errors(target: LogixController) -> None:
    router = [epath.class_id(2), epath.instance_id(1)]
    assert call(target, request(0x0A, router, b"\x02\x00\x06\x00")).status == 0x13
    assert call(target, request(0x0A, router, b"\x01\x00\x09\x00\x00")).status == 0x20
    assert call(target, request(0x0E, router)).status == 0x08
    # Each embedded service gets the room left: a read that no longer fits is partial, a
    # listing whose first entry does not fit answers 0x11.
    many = [request(0x4C, [sym("Big")], struct.pack("<H", 125))] * 3 + [
        request(0x55, [epath.class_id(0x6B), epath.instance_id(0)], encode_attribute_ids((1,)))]
    reply = call(target, request(0x0A, router, cip.encode_multiple(many)), reply_limit=1100)
    parts = [cip.Reply.decode(p) for p in cip.decode_multiple(reply.data)]
    assert [p.status for p in parts] == [0, 0, 0x06, 0x11] and reply.status == 0x1E
    assert len(reply.encode()) <= 1100


def unconnected(embedded: bytes, route: bytes) -> bytes:
    return wrap_unconnected_send(embedded, route)


def test_unconnected_send_routes(store: TagStore) -> None:
    target = LogixController(store, slot=3)
    get_all = bytes.fromhex("01 02 20 01 24 01")
    ok = call(target, unconnected(get_all, b"\x01\x00\x01\x03"))
    assert ok.status == 0 and ok.service == 0x01
    assert call(target, unconnected(get_all, b"\x00\x00")).status == 0  # empty route = local
    wrong_slot = call(target, unconnected(get_all, b"\x01\x00\x01\x00"))
    assert (wrong_slot.service, wrong_slot.status, wrong_slot.additional, wrong_slot.data) \
        == (0x52, 0x01, (0x0312,), b"\x01")
    assert call(target, unconnected(get_all, b"\x01\x00\x02\x03")).additional == (0x0311,)
    two_hops = call(target, unconnected(get_all, b"\x02\x00\x01\x03\x01\x00"))
    assert two_hops.additional == (0x0315,)
    odd = call(target, unconnected(bytes.fromhex("4C 03 91 03 42 69 67 00 7D"),
                                   b"\x01\x00\x01\x03"))
    assert odd.status == 0x13  # the embedded Read Tag lacks a byte of its element count
    msg = unconnected(get_all, b"\x01\x00\x01\x03")
    assert call(target, msg[:-1]).status == 0x13
    assert call(target, msg + b"\x00").status == 0x15


def test_other_connection_manager_services_go_to_the_cm_handler(store: TagStore) -> None:
    seen: list[bytes] = []

    def cm(message: bytes) -> bytes:
        seen.append(message)
        return cip.Reply(message[0], 0x01, (0x0100,)).encode()

    fo = request(0x54, [epath.class_id(6), epath.instance_id(1)], bytes(36))
    assert call(LogixController(store), fo).status == 0x08
    reply = call(LogixController(store, cm_handler=cm), fo)
    assert (reply.service, reply.status, reply.additional) == (0x54, 0x01, (0x0100,))
    assert seen == [fo]


# ---------------------------------------------------------------------------------------------
# Bad input never raises: truncations, garbage
# ---------------------------------------------------------------------------------------------


def valid_requests(store: TagStore) -> list[bytes]:
    rmw = ReadModifyWriteRequest(b"\x02\x00", b"\xff\xff").encode()
    return [
        bytes.fromhex("52 02 20 06 24 01 0A 05 06 00 01 02 20 01 24 01 01 00 01 00"),
        bytes.fromhex("01 02 20 64 24 01"),
        bytes.fromhex("0E 03 20 F5 24 01 30 09"),
        request(0x55, [epath.class_id(0x6B), epath.instance_id(0)],
                encode_attribute_ids(PYCOMM3_SYMBOL_ATTRIBUTES)),
        request(0x55, [sym("Program:MainProgram"), epath.class_id(0x6B),
                       epath.instance_id(0)], encode_attribute_ids((1, 2))),
        request(0x03, template_path(MOTOR_DATA.instance_id),
                bytes.fromhex("04 00 04 00 05 00 02 00 01 00")),
        request(0x4C, template_path(MOTOR_DATA.instance_id), struct.pack("<IH", 0, 100)),
        request(0x4C, [sym("Motor"), sym("Counts"), epath.member_id(1)], b"\x02\x00"),
        request(0x52, [sym("Big")], struct.pack("<HI", 125, 0)),
        request(0x4D, [sym("Setpoint")], bytes.fromhex("ca00 0100 0000a03f")),
        request(0x4E, [sym("Medium")], rmw),
        request(0x0A, [epath.class_id(2), epath.instance_id(1)], cip.encode_multiple(
            [request(0x4C, [sym("Counter")], b"\x01\x00")] * 2)),
    ]


def test_every_truncated_request_gets_an_error_reply(store: TagStore) -> None:
    target = LogixController(store)
    for msg in valid_requests(store):
        assert cip.Reply.decode(target.handle(msg, NOW)).status == 0, msg.hex(" ")
        for n in range(len(msg)):
            reply = cip.Reply.decode(target.handle(msg[:n], NOW))
            assert reply.status not in (0, 0x06), (msg[:n].hex(" "), reply)
            if n:
                assert reply.service == msg[0] & 0x7F


def test_write_fragment_prefixes_never_raise(store: TagStore) -> None:
    target = LogixController(store)
    msg = request(0x53, [sym("Big")], struct.pack("<HHI", 0xC4, 125, 0) + bytes(40))
    for n in range(len(msg) + 1):
        cip.Reply.decode(target.handle(msg[:n], NOW))  # a prefix may be a valid short fragment


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_garbage_never_raises(data: bytes) -> None:
    target = LogixController(_STORE)
    reply = cip.Reply.decode(target.handle(data, NOW))
    assert reply.service == (data[0] & 0x7F if data else 0)


@settings(max_examples=300)
@given(st.sampled_from([0x01, 0x03, 0x0A, 0x0E, 0x4C, 0x4D, 0x4E, 0x52, 0x53, 0x55]),
       st.sampled_from([b"\x20\x01\x24\x01", b"\x20\x6b\x24\x00", b"\x20\x6c\x25\x00\x02\x01",
                        b"\x91\x07Counter\x00", b"\x91\x05Motor\x00\x91\x04Pos\x00",
                        b"\x20\x02\x24\x01", b"\x20\x06\x24\x01", b"\x20\xf5\x24\x01"]),
       st.binary(max_size=40))
def test_random_request_data_never_raises(service: int, path: bytes, data: bytes) -> None:
    target = LogixController(_STORE)
    message = bytes([service, len(path) // 2]) + path + data
    reply = cip.Reply.decode(target.handle(message, NOW))
    assert reply.service == service


_STORE = default_store()


def test_counters(target: LogixController) -> None:
    target.handle(bytes.fromhex("01 02 20 64 24 01"), NOW)
    target.handle(b"\x4c", NOW)
    assert (target.requests, target.errors) == (2, 1)


def test_malformed_packet_is_the_only_parser_error() -> None:
    for parse in (ReadTagRequest.parse, ReadTagFragmentedRequest.parse, WriteTagRequest.parse,
                  ReadModifyWriteRequest.parse, Identity.decode):
        with pytest.raises(MalformedPacket):
            parse(b"\x01")
