"""acquisition.target: the Connection Manager and class-1 production of the simulated controller.

Fake clock throughout (``now`` is an argument); no sockets, no sleeping. The state machine of a
connection is checked over every (state, input) pair in tables; rejections and the production
schedule have one readable test each.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from dataclasses import dataclass, field

import pytest
from pyconpro.acquisition import cip, class1, cm, cpf, epath
from pyconpro.acquisition.target import (
    KIND_RULES,
    CloseSession,
    ConnectionKind,
    ProducerTarget,
    SendDatagram,
    TargetConnection,
    TargetEvent,
    TargetEventKind,
)
from pyconpro.acquisition.target_options import (
    KeyIdentity,
    Seq16Mode,
    TargetOptions,
    multicast_base,
    multicast_group,
)

from tests.support.clients import class3_fo

PEER = "127.0.0.1"
OTHER = "127.0.0.9"
SESSION = 0x1111


def events(t: ProducerTarget) -> list[TargetEvent]:
    """The events among the target's outputs (the outputs are taken)."""
    return [o for o in t.take_outputs() if isinstance(o, TargetEvent)]


def session_closes(t: ProducerTarget) -> list[str]:
    """The peers whose sessions the target wants closed (the outputs are taken)."""
    return [o.peer for o in t.take_outputs() if isinstance(o, CloseSession)]


def produce(t: ProducerTarget, now: float) -> list[tuple[bytes, tuple[str, int]]]:
    """Fire the timer at ``now``; the datagrams it sent as (data, (ip, port))."""
    t.on_timer(now)
    return [(o.data, o.address) for o in t.take_outputs() if isinstance(o, SendDatagram)]


# --------------------------------------------------------------------------- fakes


@dataclass
class FakeTag:
    name: str
    nbytes: int = 4
    produced: bool = True
    max_consumers: int = 4
    rpi_min_us: int = 1_000
    rpi_max_us: int = 750_000_000
    default_rpi_us: int | None = None
    unicast_allowed: bool = True
    instance_id: int = 1
    value: int = 0

    def size(self) -> int:
        return self.nbytes

    def image(self) -> bytes:
        return (self.value & ((1 << (8 * self.nbytes)) - 1)).to_bytes(self.nbytes, "little")


@dataclass
class FakeStore:
    tags: list[FakeTag] = field(default_factory=list)
    incarnation: int = 7
    ticks: list[float] = field(default_factory=list)

    def find(self, name: str) -> FakeTag | None:
        return next((t for t in self.tags if t.name.casefold() == name.casefold()), None)

    def by_instance(self, instance_id: int) -> FakeTag | None:
        return next((t for t in self.tags if t.instance_id == instance_id), None)

    def tick(self, now: float) -> None:
        self.ticks.append(now)

    def restart(self, now: float) -> None:
        self.incarnation += 1


def test_fake_store_finds_case_insensitively_and_by_instance() -> None:
    s = FakeStore([FakeTag("Alpha", instance_id=3)])
    s.restart(1.0)
    assert s.incarnation == 8
    assert s.find("ALPHA") is s.tags[0] and s.by_instance(3) is s.tags[0]
    assert s.find("beta") is None and s.by_instance(4) is None
    assert FakeTag("x", nbytes=2, value=0x1234).image() == b"\x34\x12"


def make(options: TargetOptions | None = None,
         **tag_kw: object) -> tuple[ProducerTarget, FakeStore]:
    store = FakeStore(
        [
            FakeTag("Prod", **tag_kw),  # type: ignore[arg-type]
            FakeTag("Hidden", produced=False, instance_id=2),
            FakeTag("Big", nbytes=100, instance_id=3),
        ]
    )
    return ProducerTarget(store, options or TargetOptions(initial_watchdog_s=1.0)), store


def fo(
    tag: str = "Prod",
    tag_bytes: int = 4,
    *,
    serial: int = 0x1234,
    to_id: int = 0xA0000001,
    rpi: int = 10_000,
    mult: int = 0,
    multicast: bool = False,
    slot: int | None = 0,
    key: epath.ElectronicKey | None = epath.NO_KEY,
    **changes: object,
) -> cm.ForwardOpenRequest:
    req = cm.produced_tag_forward_open(
        tag=tag,
        tag_bytes=tag_bytes,
        to_rpi_us=rpi,
        ot_rpi_us=10_000,
        connection_serial=serial,
        vendor_id=0x0F0F,
        originator_serial=0xCAFE,
        to_connection_id=to_id,
        multicast=multicast,
        timeout_multiplier=mult,
        slot=slot,
        key=key,
    )
    return dataclasses.replace(req, **changes) if changes else req  # type: ignore[arg-type]


def status(reply: cip.Reply) -> tuple[int, tuple[int, ...]]:
    return reply.status, reply.additional


def opened(
    target: ProducerTarget,
    req: cm.ForwardOpenRequest,
    now: float = 0.0,
    ip: str = PEER,
    session: int = SESSION,
    to_sockaddr: cpf.Sockaddr | None = None,
) -> tuple[cm.ForwardOpenSuccess, tuple[cpf.Item, ...]]:
    reply, items = target.forward_open(req, ip, session, now, to_sockaddr)
    assert reply.status == 0, reply.error()
    ok = cm.decode_forward_open_reply(reply)
    assert isinstance(ok, cm.ForwardOpenSuccess)
    return ok, items


def rejected(
    target: ProducerTarget, req: cm.ForwardOpenRequest, now: float = 0.0, ip: str = PEER
) -> tuple[int, tuple[int, ...]]:
    reply, items = target.forward_open(req, ip, SESSION, now, None)
    assert items == ()
    failure = cm.decode_forward_open_reply(reply)
    assert isinstance(failure, cm.ConnectionFailure)
    assert failure.triad == req.triad and failure.remaining_path_size == 0
    return failure.general_status, failure.additional


# --------------------------------------------------------------------------- success path


def test_p2p_forward_open_reply_and_items() -> None:
    t, _ = make(TargetOptions(udp_port=40000, initial_watchdog_s=1.0))
    ok, items = opened(t, fo())
    assert ok.to_connection_id == 0xA0000001  # originator's P2P T->O id is kept (5.7)
    assert ok.ot_connection_id == (7 << 16) | 1  # incarnation << 16 | counter
    assert (ok.ot_api, ok.to_api) == (10_000, 10_000)
    assert ok.triad == cm.Triad(0x1234, 0x0F0F, 0xCAFE)
    assert items == (cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_O2T, cpf.Sockaddr("0.0.0.0", 40000)),)
    (conn,) = t.connections()
    assert conn.dest == (PEER, 2222) and conn.kind is ConnectionKind.CLASS1 and conn.tag == "Prod"
    ev = events(t)
    assert [e.kind for e in ev] == [TargetEventKind.OPENED] and "tag=Prod" in str(ev[0])


def test_p2p_destination_port_from_t2o_sockaddr_item() -> None:
    t, _ = make()
    opened(t, fo(), to_sockaddr=cpf.Sockaddr("0.0.0.0", 31337))
    assert t.connections()[0].dest == (PEER, 31337)


def test_ot_sockaddr_item_can_be_switched_off() -> None:
    t, _ = make(TargetOptions(reply_ot_sockaddr=False))
    assert opened(t, fo())[1] == ()


def test_large_forward_open_for_a_produced_tag_is_accepted() -> None:
    t, _ = make()
    reply, _ = t.forward_open(fo(large=True), PEER, SESSION, 0.0, None)
    assert reply.service == cip.Service.LARGE_FORWARD_OPEN and reply.status == 0


@pytest.mark.parametrize(
    "path",
    [
        epath.produced_tag_connection_path("Prod", 0, epath.NO_KEY),
        epath.produced_tag_connection_path(
            "Prod", None, None
        ),  # CompactLogix style, no port, no key
        epath.produced_tag_connection_path("PROD", 0, None),  # Logix names are case-insensitive
        epath.produced_tag_connection_path("Prod", 0, epath.ElectronicKey(1, 0x0E, 166, 33, 11)),
        epath.produced_tag_connection_path("Prod", 0, epath.ElectronicKey(1, 0, 0, 33, 5, True)),
        bytes.fromhex("0100 4305")
        + epath.encode_path([epath.SymbolicSegment("Prod")]),  # inhibit time
        bytes.fromhex("20042401 2CC6 2C01"),  # assembly path: config 1, O->T heartbeat 0xC6, T->O 1
        bytes.fromhex("0100 20042C01"),  # one connection point = the produced one
        bytes.fromhex("20042401 2C972C01 80021234 5678"),  # configuration data is ignored
    ],
    ids=[
        "slot+nokey",
        "bare",
        "case",
        "key-match",
        "key-compat",
        "network-seg",
        "assembly",
        "assembly-1cp",
        "assembly-data",
    ],
)
def test_accepted_connection_paths(path: bytes) -> None:
    t, _ = make()
    opened(t, fo(path=path))
    assert t.connections()[0].tag == "Prod"


def test_assembly_map_option_names_the_tag() -> None:
    t, _ = make(TargetOptions(assemblies={100: "Big"}))
    opened(t, fo(tag_bytes=100, path=bytes.fromhex("20042401 2C96 2C64")))
    assert t.connections()[0].tag == "Big"
    assert rejected(t, fo(path=bytes.fromhex("20042401 2C96 2C01"), serial=9)) == (1, (0x031F,))


def test_multicast_shares_id_group_and_production() -> None:
    t, _ = make()
    ok1, items1 = opened(t, fo(multicast=True, serial=1, to_id=111), ip=PEER)
    ok2, items2 = opened(t, fo(multicast=True, serial=2, to_id=222), ip=OTHER)
    assert ok1.to_connection_id == ok2.to_connection_id != 111  # target chooses (5.7)
    assert ok1.ot_connection_id != ok2.ot_connection_id
    group = multicast_group("127.0.0.2", "255.0.0.0", 0)
    t2o = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr(group, 2222))
    assert items1[-1] == items2[-1] == t2o
    assert items1[0].type_id == cpf.ItemId.SOCKADDR_O2T  # O->T before T->O (2.8)
    assert len(t.producers()) == 1
    out = produce(t, 0.01)
    assert len(out) == 1 and out[0][1] == (group, 2222)
    # One consumer leaving keeps the stream for the other.
    t.forward_close(cm.forward_close_for(fo(multicast=True, serial=1)), PEER, 0.011)
    assert len(produce(t, 0.02)) == 1
    t.forward_close(cm.forward_close_for(fo(multicast=True, serial=2)), OTHER, 0.021)
    assert t.producers() == [] and t.next_deadline() is None


def test_second_multicast_tag_gets_the_next_group() -> None:
    t, _ = make()
    opened(t, fo(multicast=True, serial=1))
    _, items = opened(t, fo("Big", 100, multicast=True, serial=2))
    assert items[-1].sockaddr.address == multicast_group("127.0.0.2", "255.0.0.0", 1)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "address,netmask,group",
    [
        ("192.168.1.10", "255.255.255.0", "239.192.2.32"),  # protocol.md 6.7 example
        ("127.0.0.2", "255.0.0.0", "239.192.1.32"),
        ("10.0.0.1", "255.0.0.0", "239.192.1.0"),
    ],
)
def test_multicast_base_allocation(address: str, netmask: str, group: str) -> None:
    assert multicast_base(address, netmask) == group
    assert multicast_group(address, netmask, 33) == multicast_group(address, netmask, 1)


# --------------------------------------------------------------------------- rejections


def _reject_cases() -> list[
    tuple[str, dict[str, object], TargetOptions | None, tuple[int, tuple[int, ...]]]
]:
    p = epath.produced_tag_connection_path
    ncp = cm.NetworkParameters
    P2P, MC, NULL = (
        cm.ConnectionType.POINT_TO_POINT,
        cm.ConnectionType.MULTICAST,
        cm.ConnectionType.NULL,
    )
    sched = cm.Priority.SCHEDULED
    return [
        ("size", {"to_params": ncp(P2P, sched, False, 8)}, None, (1, (0x0109, 6))),
        (
            "size-cip",
            {"to_params": ncp(P2P, sched, False, 8)},
            TargetOptions(size_error=0x0128),
            (1, (0x0128, 6)),
        ),
        ("ot-size", {"ot_params": ncp(P2P, sched, False, 0)}, None, (1, (0x0109, 2))),
        (
            "ot-size-cip",
            {"ot_params": ncp(P2P, sched, False, 4)},
            TargetOptions(size_error=0x0128),
            (1, (0x0127, 2)),
        ),
        ("unknown", {"path": p("Nope", 0)}, None, (1, (0x031F,))),
        ("not-produced", {"path": p("Hidden", 0)}, None, (1, (0x031F,))),
        (
            "unknown-012E",
            {"path": p("Nope", 0)},
            TargetOptions(unknown_tag_error=0x012E),
            (1, (0x012E,)),
        ),
        (
            "unknown-0315",
            {"path": p("Hidden", 0)},
            TargetOptions(unknown_tag_error=0x0315),
            (1, (0x0315,)),
        ),
        (
            "program-scope",
            {"path": epath.encode_path(epath.tag_path("Program:Main.Prod"))},
            None,
            (1, (0x031F,)),
        ),
        ("member", {"path": epath.encode_path(epath.tag_path("Prod[1]"))}, None, (1, (0x0315,))),
        ("bad-segment", {"path": b"\x91\x05Prod"}, None, (1, (0x0315,))),  # truncated symbol
        ("other-class", {"path": bytes.fromhex("20012401")}, None, (1, (0x0315,))),
        ("assembly-3cp", {"path": bytes.fromhex("2004 2C01 2C01 2C01")}, None, (1, (0x0315,))),
        ("unknown-point", {"path": bytes.fromhex("20042401 2CC6 2C55")}, None, (1, (0x031F,))),
        ("wrong-slot", {"path": p("Prod", 3)}, None, (1, (0x0312,))),
        ("wrong-port", {"path": bytes.fromhex("0200") + p("Prod", None)}, None, (1, (0x0311,))),
        (
            "second-hop",
            {"path": bytes.fromhex("0100 0200") + p("Prod", None)},
            None,
            (1, (0x0311,)),
        ),
        (
            "key-vendor",
            {"path": p("Prod", 0, epath.ElectronicKey(vendor_id=2))},
            None,
            (1, (0x0114,)),
        ),
        (
            "key-product",
            {"path": p("Prod", 0, epath.ElectronicKey(product_code=1))},
            None,
            (1, (0x0114,)),
        ),
        (
            "key-type",
            {"path": p("Prod", 0, epath.ElectronicKey(device_type=0x0C))},
            None,
            (1, (0x0115,)),
        ),
        (
            "key-major",
            {"path": p("Prod", 0, epath.ElectronicKey(major_revision=20))},
            None,
            (1, (0x0116,)),
        ),
        (
            "key-minor",
            {"path": p("Prod", 0, epath.ElectronicKey(major_revision=33, minor_revision=2))},
            None,
            (1, (0x0116,)),
        ),
        (
            "key-compat-newer",
            {"path": p("Prod", 0, epath.ElectronicKey(0, 0, 0, 33, 12, True))},
            None,
            (1, (0x0116,)),
        ),
        ("transport-class3", {"transport": 0xA3}, None, (1, (0x0103,))),
        ("transport-cos", {"transport": 0x91}, None, (1, (0x0103,))),
        ("transport-class0", {"transport": 0x80}, None, (1, (0x0103,))),
        ("ot-multicast", {"ot_params": ncp(MC, sched, False, 2)}, None, (1, (0x0123,))),
        ("to-null", {"to_params": ncp(NULL, sched, False, 6)}, None, (1, (0x0124,))),
        ("ot-variable", {"ot_params": ncp(P2P, sched, True, 2)}, None, (1, (0x011F,))),
        ("to-variable", {"to_params": ncp(P2P, sched, True, 6)}, None, (1, (0x0120,))),
        ("rpi-low", {"to_rpi": 999}, None, (1, (0x0111,))),
        ("rpi-high", {"to_rpi": 750_000_001}, None, (1, (0x0111,))),
        ("ot-rpi-zero", {"ot_rpi": 0}, None, (1, (0x0111,))),
        # PEER 127.0.0.1 is outside 127.0.1.0/24 (protocol.md 6.7, 7.6)
        (
            "off-subnet-multicast",
            {"multicast": True},
            TargetOptions(address="127.0.1.2", netmask="255.255.255.0"),
            (1, (0x0813,)),
        ),
    ]


@pytest.mark.parametrize(
    "name,changes,options,expected", _reject_cases(), ids=[c[0] for c in _reject_cases()]
)
def test_rejections(
    name: str,
    changes: dict[str, object],
    options: TargetOptions | None,
    expected: tuple[int, tuple[int, ...]],
) -> None:
    t, _ = make(options)
    assert rejected(t, fo(**changes)) == expected  # type: ignore[arg-type]
    assert t.connections() == [] and t.next_deadline() is None
    (ev,) = events(t)
    assert ev.kind is TargetEventKind.REJECTED and f"0x{expected[1][0]:04X}" in ev.detail
    assert t.counters.rejects == 1


def test_unicast_not_allowed_rejects_p2p_but_accepts_multicast() -> None:
    t, _ = make(unicast_allowed=False)
    assert rejected(t, fo()) == (1, (0x0124,))
    opened(t, fo(multicast=True))


@pytest.mark.parametrize(
    "address,netmask,peer,ok",
    [
        ("127.0.1.2", "255.255.255.0", "127.0.1.200", True),  # same /24
        ("127.0.1.2", "255.255.255.0", "127.0.2.1", False),
        ("127.0.1.2", "255.255.255.0", "127.0.0.1", False),
        ("127.0.1.2", "255.255.0.0", "127.0.2.1", True),  # a wider mask takes it in
        ("127.0.0.2", "255.0.0.0", "127.99.3.4", True),  # the default: all of loopback
        ("192.168.1.10", "255.255.255.0", "192.168.2.10", False),
        ("127.0.1.2", "255.255.255.0", "::1", False),  # not even IPv4
    ],
)
def test_multicast_only_for_originators_on_our_subnet(
    address: str, netmask: str, peer: str, ok: bool
) -> None:
    t, _ = make(TargetOptions(address=address, netmask=netmask, initial_watchdog_s=1.0))
    if ok:
        opened(t, fo(multicast=True), ip=peer)
    else:
        assert rejected(t, fo(multicast=True), ip=peer) == (1, (0x0813,))
        assert t.producers() == [] and t.counters.reject_codes == {"0x01/0x0813": 1}
    # Point-to-point data is routed: the subnet does not matter for it.
    opened(t, fo(serial=0x4321), ip=peer)


def test_off_subnet_check_comes_after_the_path_and_type_checks() -> None:
    t, _ = make(TargetOptions(address="127.0.1.2", netmask="255.255.255.0"))
    p = epath.produced_tag_connection_path
    assert rejected(t, fo(multicast=True, path=p("Nope", 0))) == (1, (0x031F,))
    bad_ot = cm.NetworkParameters(cm.ConnectionType.MULTICAST, cm.Priority.SCHEDULED, False, 2)
    assert rejected(t, fo(multicast=True, ot_params=bad_ot)) == (1, (0x0123,))
    assert rejected(t, fo(multicast=True, transport=0x91)) == (1, (0x0103,))
    assert rejected(t, fo(multicast=True, rpi=1)) == (1, (0x0813,))  # before RPI and sizes
    assert rejected(t, fo(multicast=True, tag_bytes=9)) == (1, (0x0813,))


def test_duplicate_triad() -> None:
    t, _ = make()
    opened(t, fo())
    assert rejected(t, fo(to_id=5)) == (1, (0x0100,))
    opened(t, fo(serial=0x1235))  # a fresh connection serial is a new triad


def test_max_consumers_then_slot_freed_by_close() -> None:
    t, _ = make(max_consumers=2)
    opened(t, fo(serial=1))
    opened(t, fo(serial=2, multicast=True))
    assert rejected(t, fo(serial=3)) == (1, (0x031E,))
    t.forward_close(cm.forward_close_for(fo(serial=1)), PEER, 0.5)
    opened(t, fo(serial=3), now=0.5)


def test_global_connection_limit_counts_class3_too() -> None:
    t, _ = make(TargetOptions(max_connections=2))
    opened(t, fo(serial=1))
    opened(t, class3_fo())
    assert rejected(t, fo(serial=3)) == (1, (0x0113,))
    assert rejected(t, class3_fo(serial=4)) == (1, (0x0113,))


def test_rpi_with_producer_default_gives_0112_and_the_acceptable_rpis() -> None:
    t, _ = make(default_rpi_us=20_000, rpi_min_us=5_000, rpi_max_us=50_000)
    general, words = rejected(t, fo(rpi=1_000, ot_rpi=70_000))
    assert general == 1 and words[0] == 0x0112 and len(words) == 6
    assert words[1] == 0x0100  # O->T type 0 (fine as requested), T->O type 1 (use this)
    assert words[2] | words[3] << 16 == 70_000 and words[4] | words[5] << 16 == 20_000
    assert "acceptable O->T RPI 70000 us, T->O RPI 20000 us" in str(
        cip.Reply(0x54, general, words).error()
    )
    # A negotiating consumer re-issues with the returned RPI.
    opened(t, fo(rpi=20_000, ot_rpi=70_000))


def test_ot_rpi_out_of_range_with_default_reports_the_limit() -> None:
    t, _ = make(TargetOptions(ot_rpi_min_us=500), default_rpi_us=20_000)
    _, words = rejected(t, fo(ot_rpi=100))
    assert words[1] == 0x0002 and words[2] == 500 and words[4] == 10_000


@pytest.mark.parametrize("code", [0x0112, 0x0801])
def test_multicast_rpi_mismatch(code: int) -> None:
    t, _ = make(TargetOptions(multicast_rpi_error=code))
    opened(t, fo(multicast=True, serial=1, rpi=10_000))
    general, words = rejected(t, fo(multicast=True, serial=2, rpi=20_000))
    if code == 0x0801:
        assert (general, words) == (1, (0x0801,))
    else:
        assert words[:2] == (0x0112, 0x0400) and words[4] | words[5] << 16 == 10_000
    opened(t, fo(multicast=True, serial=3, rpi=10_000))
    opened(t, fo(serial=4, rpi=20_000))  # P2P consumers choose freely


def test_options_validate_uncertain_codes() -> None:
    for bad in (
        {"size_error": 0x0127},
        {"unknown_tag_error": 0x0114},
        {"multicast_rpi_error": 0x0111},
        {"address": "not-an-ip"},
        {"max_connections": -1},
    ):
        with pytest.raises(ValueError):
            TargetOptions(**bad)


# --------------------------------------------------------------------------- class 3


def test_class3_open_has_no_sockaddr_items_and_checks_its_own_rules() -> None:
    t, _ = make()
    ok, items = opened(t, class3_fo())
    assert items == () and ok.to_connection_id == 0x11223344
    assert rejected(t, class3_fo(serial=2, transport=0x81)) == (1, (0x0103,))
    big = cm.NetworkParameters(cm.ConnectionType.POINT_TO_POINT, cm.Priority.LOW, True, 5000)
    assert rejected(t, class3_fo(serial=3, to_params=big)) == (1, (0x0109, 4002))
    assert rejected(t, class3_fo(serial=4, ot_params=big)) == (1, (0x0109, 4002))
    mc = cm.NetworkParameters(cm.ConnectionType.MULTICAST, cm.Priority.LOW, True, 500)
    assert rejected(t, class3_fo(serial=5, to_params=mc)) == (1, (0x0124,))
    assert rejected(t, class3_fo(serial=6, ot_params=mc)) == (1, (0x0123,))
    assert rejected(t, class3_fo(serial=7, to_rpi=0)) == (1, (0x0111,))
    assert rejected(t, class3_fo(serial=8, path=bytes.fromhex("0103 20022401"))) == (1, (0x0312,))
    opened(t, class3_fo(serial=9, large=False))
    assert rejected(t, fo(path=bytes.fromhex("20022401"), serial=10)) == (1, (0x0103,))


# --------------------------------------------------------------------------- CM dispatch


def _cm(
    target: ProducerTarget, service: int, data: bytes, items: tuple[cpf.Item, ...] = ()
) -> tuple[cip.Reply, tuple[cpf.Item, ...]]:
    return target.handle_cm(
        cip.Request(service, epath.CONNECTION_MANAGER_PATH, data), PEER, SESSION, 0.0, items
    )


def test_handle_cm_dispatches_forward_open_with_its_t2o_sockaddr() -> None:
    t, _ = make()
    req = fo()
    item = cpf.SockaddrInfo(cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("0.0.0.0", 5555))
    reply, items = _cm(t, 0x54, req.encode_body(), (item,))
    assert items[0].type_id == cpf.ItemId.SOCKADDR_O2T
    assert reply.status == 0 and t.connections()[0].dest == (PEER, 5555)
    reply, _ = _cm(t, 0x4E, cm.forward_close_for(req).encode_body())
    assert reply.status == 0 and t.connections() == []
    assert _cm(t, 0x57, b"")[0].status == 0x08


def test_large_forward_open_switched_off_answers_service_not_supported() -> None:
    """Old firmware (protocol.md 7.6): 0x5B -> general 0x08, no triad, no connection; the same
    request as a Forward_Open (0x54) still opens, which is the originators' fallback."""
    t, _ = make(TargetOptions(large_forward_open=False))
    for req in (fo(large=True), class3_fo(large=True)):
        for body in (req.encode_body(), req.encode_body()[:7], b""):  # not even parsed
            reply, items = _cm(t, 0x5B, body)
            assert (reply.service, reply.status, reply.additional, reply.data) == (
                0x5B,
                0x08,
                (),
                b"",
            )
            assert items == ()
        reply, items = t.forward_open(req, PEER, SESSION, 0.0, None)  # direct call: same answer
        assert (reply.status, reply.data, items) == (0x08, b"", ())
    assert t.connections() == []
    assert t.counters.reject_codes == {"0x08": 8}
    assert all(e.kind is TargetEventKind.REJECTED and "0x08" in e.detail for e in events(t))
    reply, _ = _cm(t, 0x54, fo(large=False).encode_body())
    assert reply.status == 0
    reply, _ = _cm(t, 0x54, class3_fo(large=False).encode_body())
    assert reply.status == 0 and len(t.connections()) == 2


def test_large_forward_open_is_on_by_default() -> None:
    t, _ = make()
    assert TargetOptions().large_forward_open is True
    assert _cm(t, 0x5B, class3_fo(large=True).encode_body())[0].status == 0


@pytest.mark.parametrize("service", [0x54, 0x5B])
def test_malformed_forward_open_bodies(service: int) -> None:
    t, _ = make()
    body = fo(large=service == 0x5B).encode_body()
    for cut in range(len(body)):
        reply, items = _cm(t, service, body[:cut])
        assert reply.status == 0x13 and items == ()
        if cut >= 18:  # the triad is there: echo it (protocol.md 5.9)
            assert cm.ConnectionFailure.from_reply(reply).triad == fo().triad
        else:
            assert reply.data == b""
    reply, _ = _cm(t, service, body + b"\x00\x00")
    assert reply.status == 0x15 and cm.ConnectionFailure.from_reply(reply).triad == fo().triad
    assert t.connections() == []


def test_malformed_forward_close_bodies() -> None:
    t, _ = make()
    body = cm.forward_close_for(fo()).encode_body()
    for cut in range(len(body)):
        assert _cm(t, 0x4E, body[:cut])[0].status == 0x13
    assert _cm(t, 0x4E, body + b"\x01\x02")[0].status == 0x15


# --------------------------------------------------------------------------- production


def _datagrams(out: list[tuple[bytes, tuple[str, int]]]) -> list[class1.Class1Datagram]:
    return [class1.Class1Datagram.decode(d) for d, _ in out]


def test_production_at_the_rpi_on_absolute_deadlines() -> None:
    t, store = make()
    opened(t, fo(rpi=10_000), now=100.0)
    assert t.next_deadline() == pytest.approx(100.01)
    assert produce(t, 100.0099) == []
    sent = []
    # Serve each deadline 3 ms late: the schedule must not drift (absolute deadlines).
    for _ in range(1000):
        due = t.next_deadline()
        assert due is not None
        now = due + 0.003
        out = produce(t, now)
        assert len(out) == 1
        sent.append(now)
        t.on_datagram(class1.heartbeat(t.connections()[0].ot_id, len(sent)), PEER, now)
    assert t.next_deadline() == pytest.approx(100.0 + 1001 * 0.01)
    assert t.counters.production_slots_missed == 0 and t.counters.datagrams_sent == 1000
    assert store.ticks[0] == pytest.approx(100.013)


def test_missed_slots_are_skipped_not_bursted() -> None:
    t, _ = make()
    opened(t, fo(rpi=10_000))
    assert len(produce(t, 0.055)) == 1  # slots 1..5 due; one datagram
    assert t.next_deadline() == pytest.approx(0.06)
    assert t.counters.production_slots_missed == 4


def test_datagram_layout_sequences_and_values() -> None:
    t, store = make()
    ok, _ = opened(t, fo())
    tag = store.find("Prod")
    assert tag is not None
    tag.value = 42
    first = produce(t, 0.01)
    assert first[0][1] == (PEER, 2222)
    # protocol.md A.4: count 2, 0x8002 len 8, id, seq32, 0x00B1 len 6, seq16, value 42.
    raw = first[0][0]
    assert raw[:6] == bytes.fromhex("02000280 0800") and raw[14:18] == bytes.fromhex("B1000600")
    assert raw[20:] == struct.pack("<i", 42)
    d = _datagrams(first)[0]
    assert (d.connection_id, d.sequence, d.cip_sequence) == (ok.to_connection_id, 1, 1)
    d2 = _datagrams(produce(t, 0.02))[0]
    assert (d2.sequence, d2.cip_sequence, d2.data) == (2, 1, d.data)  # unchanged image: same seq16
    tag.value = 43
    d3 = _datagrams(produce(t, 0.03))[0]
    assert (d3.sequence, d3.cip_sequence, d3.data) == (3, 2, struct.pack("<i", 43))


def test_seq16_every_packet_mode() -> None:
    t, _ = make(TargetOptions(seq16_mode=Seq16Mode.EVERY_PACKET))
    opened(t, fo())
    seqs = [_datagrams(produce(t, 0.01 * k))[0].cip_sequence for k in range(1, 5)]
    assert seqs == [1, 2, 3, 4]


def test_sequences_wrap() -> None:
    t, _ = make(TargetOptions(seq16_mode=Seq16Mode.EVERY_PACKET))
    opened(t, fo())
    (p,) = t.producers()
    p.seq32, p.seq16 = 0xFFFFFFFF, 0xFFFF
    d = _datagrams(produce(t, 0.01))[0]
    assert (d.sequence, d.cip_sequence) == (0, 0)


def test_two_p2p_consumers_have_independent_schedules_even_with_equal_ids() -> None:
    t, _ = make()
    opened(t, fo(serial=1, to_id=77, rpi=10_000), ip=PEER)
    opened(t, fo(serial=2, to_id=77, rpi=25_000), ip=OTHER, now=0.001)
    assert {d for _, d in produce(t, 0.01)} == {(PEER, 2222)}
    assert {d for _, d in produce(t, 0.0261)} == {(PEER, 2222), (OTHER, 2222)}
    t.forward_close(cm.forward_close_for(fo(serial=1)), PEER, 0.03)
    assert [d for _, d in produce(t, 0.0512)] == [(OTHER, 2222)]


# --------------------------------------------------------------------------- heartbeats


def test_heartbeat_watchdog_is_api_times_multiplier_after_the_initial_period() -> None:
    t, _ = make(TargetOptions(initial_watchdog_s=10.0))
    ok, _ = opened(t, fo(ot_rpi=100_000, mult=1))  # 0.1 s x 8 = 0.8 s
    conn = t.connections()[0]
    assert conn.deadline == pytest.approx(10.0)
    t.on_datagram(class1.heartbeat(ok.ot_connection_id, 1), PEER, 2.0)
    assert conn.deadline == pytest.approx(2.8)
    t.on_timer(2.79)
    assert t.connections() == [conn]
    t.on_timer(2.8)
    assert t.connections() == [] and t.producers() == []
    (ev,) = [e for e in events(t) if e.kind is TargetEventKind.TIMED_OUT]
    assert "no heartbeat for 0.8s" in ev.detail


def test_initial_watchdog_shorter_when_configured() -> None:
    t, _ = make(TargetOptions(initial_watchdog_s=0.0))
    opened(t, fo(ot_rpi=10_000))
    assert t.next_deadline() == pytest.approx(0.01)  # production slot
    assert t.connections()[0].deadline == pytest.approx(0.04)


def test_malformed_and_unknown_datagrams_are_counted() -> None:
    t, _ = make()
    ok, _ = opened(t, fo())
    t.on_datagram(b"\x02\x00garbage", PEER, 0.1)
    t.on_datagram(class1.heartbeat(ok.ot_connection_id + 99, 1), PEER, 0.1)
    t.on_datagram(class1.heartbeat(ok.to_connection_id, 1), PEER, 0.1)  # T->O id is not O->T
    assert (t.counters.datagrams_malformed, t.counters.heartbeats_unknown) == (1, 2)


# --------------------------------------------------------------------------- state tables

# Class-1 connection, triad fo(): states and the inputs that can reach it.
C1_STATES = ["absent", "open", "running", "closed", "expired", "restarted"]
C1_INPUTS = [
    "fo_same",
    "fo_new_triad",
    "fc",
    "fc_other_ip",
    "hb_new",
    "hb_stale",
    "hb_foreign",
    "timer_before",
    "timer_at",
    "session_closed",
    "restart",
]

# (state, input) -> (observed state after, outcome)
# outcome: reply status "0" / "0x01/0x0100" ..., or a counter name that went up, or "-".
_C1: dict[tuple[str, str], tuple[str, str]] = {}
for _s in C1_STATES:
    _live = _s in ("open", "running")
    _C1[(_s, "fo_same")] = (_s, "0x01/0x0100") if _live else ("open", "0")
    _C1[(_s, "fo_new_triad")] = (_s if _live else "absent", "0")
    _C1[(_s, "fc")] = ("absent", "0") if _live else ("absent", "0x01/0x0107")
    _C1[(_s, "fc_other_ip")] = (_s, "0x0F") if _live else ("absent", "0x01/0x0107")
    _C1[(_s, "hb_new")] = ("running", "heartbeats") if _live else ("absent", "heartbeats_unknown")
    _C1[(_s, "hb_stale")] = (
        ("running", "heartbeats")
        if _s == "open"
        else ("running", "heartbeats_stale")
        if _s == "running"
        else ("absent", "heartbeats_unknown")
    )
    _C1[(_s, "hb_foreign")] = (
        (_s, "heartbeats_foreign") if _live else ("absent", "heartbeats_unknown")
    )
    _C1[(_s, "timer_before")] = (_s if _live else "absent", "-")
    _C1[(_s, "timer_at")] = ("absent", "timeouts") if _live else ("absent", "-")
    _C1[(_s, "session_closed")] = (_s if _live else "absent", "-")
    _C1[(_s, "restart")] = ("absent", "-")


def _c1_observe(t: ProducerTarget) -> str:
    conn = next((c for c in t.connections() if c.triad == fo().triad), None)
    if conn is None:
        return "absent"
    return "running" if conn.heartbeats else "open"


def _c1_setup(state: str) -> tuple[ProducerTarget, int, float]:
    """A target in ``state``; returns it, the O->T id the connection had (or a fresh one) and
    the watchdog deadline (or a time when nothing is pending)."""
    t, _ = make(TargetOptions(initial_watchdog_s=1.0))
    if state == "absent":
        return t, 0x00070001, 2.0
    ok, _ = opened(t, fo(ot_rpi=10_000, mult=0))
    ot = ok.ot_connection_id
    if state == "running":
        t.on_datagram(class1.heartbeat(ot, 5), PEER, 0.5)
    elif state == "closed":
        assert t.forward_close(cm.forward_close_for(fo()), PEER, 0.5).status == 0
    elif state == "expired":
        t.on_timer(1.0)
    elif state == "restarted":
        t.restart(0.5)
    assert _c1_observe(t) == ("absent" if state in ("closed", "expired", "restarted") else state)
    conn = next(iter(t.connections()), None)
    return t, ot, conn.deadline if conn else 2.0


def _c1_apply(t: ProducerTarget, inp: str, ot: int, deadline: float) -> str:
    counters_before = t.counters.as_dict()
    now = min(deadline, 2.0) - 0.001 if inp != "timer_at" else deadline
    result = "-"
    if inp == "fo_same":
        result = _code(t.forward_open(fo(), PEER, SESSION, now, None)[0])
    elif inp == "fo_new_triad":
        result = _code(t.forward_open(fo(serial=0x9999), PEER, SESSION, now, None)[0])
    elif inp == "fc":
        result = _code(t.forward_close(cm.forward_close_for(fo()), PEER, now))
    elif inp == "fc_other_ip":
        result = _code(t.forward_close(cm.forward_close_for(fo()), OTHER, now))
    elif inp in ("hb_new", "hb_stale", "hb_foreign"):
        seq = 10 if inp == "hb_new" else 5
        t.on_datagram(class1.heartbeat(ot, seq), OTHER if inp == "hb_foreign" else PEER, now)
    elif inp in ("timer_before", "timer_at"):
        t.on_timer(now)
    elif inp == "session_closed":
        t.session_closed(SESSION, now)
    elif inp == "restart":
        t.restart(now)
    if result == "-":
        after = t.counters.as_dict()
        changed = [
            k
            for k in (
                "heartbeats",
                "heartbeats_stale",
                "heartbeats_foreign",
                "heartbeats_unknown",
                "timeouts",
            )
            if after[k] != counters_before[k]
        ]
        assert len(changed) <= 1, changed
        result = changed[0] if changed else "-"
    return result


def _code(reply: cip.Reply) -> str:
    if reply.status == 0:
        return "0"
    if reply.additional:
        return f"0x{reply.status:02X}/0x{reply.additional[0]:04X}"
    return f"0x{reply.status:02X}"


@pytest.mark.parametrize("state", C1_STATES)
@pytest.mark.parametrize("inp", C1_INPUTS)
def test_class1_state_table(state: str, inp: str) -> None:
    t, ot, deadline = _c1_setup(state)
    outcome = _c1_apply(t, inp, ot, deadline)
    assert (_c1_observe(t), outcome) == _C1[(state, inp)]


def test_class1_heartbeat_extends_only_when_accepted() -> None:
    t, ot, _ = _c1_setup("running")
    conn = t.connections()[0]
    assert conn.deadline == pytest.approx(0.54)
    t.on_datagram(class1.heartbeat(ot, 5), PEER, 0.52)  # stale
    t.on_datagram(class1.heartbeat(ot, 6), OTHER, 0.52)  # foreign
    assert conn.deadline == pytest.approx(0.54)
    t.on_datagram(class1.heartbeat(ot, 0x80000006), PEER, 0.53)  # not newer on the 32-bit circle
    assert conn.deadline == pytest.approx(0.54)
    t.on_datagram(class1.heartbeat(ot, 6), PEER, 0.53)
    assert conn.deadline == pytest.approx(0.57)


def test_restart_bumps_incarnation_and_ids() -> None:
    t, store = make()
    ok, _ = opened(t, fo())
    t.restart(1.0)
    assert store.incarnation == 8 == t.incarnation
    ok2, _ = opened(t, fo(), now=1.0)
    assert ok2.ot_connection_id >> 16 == 8 and ok2.ot_connection_id != ok.ot_connection_id
    assert any(e.kind is TargetEventKind.RESTARTED and "lost 1" in e.detail for e in events(t))


# Class-3 connection, triad class3_fo(), session SESSION.
C3_STATES = ["absent", "open", "active", "closed"]
C3_INPUTS = [
    "fo_same",
    "fc",
    "fc_other_ip",
    "req_new",
    "req_repeat",
    "req_other_session",
    "session_closed",
    "other_session_closed",
    "timer_before",
    "timer_at",
    "restart",
    "class1_datagram",
]

_C3: dict[tuple[str, str], tuple[str, str]] = {}
for _s in C3_STATES:
    _live = _s in ("open", "active")
    _C3[(_s, "fo_same")] = (_s, "0x01/0x0100") if _live else ("open", "0")
    _C3[(_s, "fc")] = ("absent", "0") if _live else ("absent", "0x01/0x0107")
    _C3[(_s, "fc_other_ip")] = (_s, "0x0F") if _live else ("absent", "0x01/0x0107")
    _C3[(_s, "req_new")] = ("active", "handled") if _live else ("absent", "none")
    _C3[(_s, "req_repeat")] = (
        ("active", "retransmit")
        if _s == "active"
        else ("active", "handled")
        if _live
        else ("absent", "none")
    )
    _C3[(_s, "req_other_session")] = (_s if _live else "absent", "none")
    _C3[(_s, "session_closed")] = ("absent", "-")
    _C3[(_s, "other_session_closed")] = (_s if _live else "absent", "-")
    _C3[(_s, "timer_before")] = (_s if _live else "absent", "-")
    _C3[(_s, "timer_at")] = ("absent", "timeouts") if _live else ("absent", "-")
    _C3[(_s, "restart")] = ("absent", "-")
    _C3[(_s, "class1_datagram")] = (_s if _live else "absent", "heartbeats_unknown")


def _c3_observe(t: ProducerTarget) -> str:
    conn = next((c for c in t.connections() if c.triad == class3_fo().triad), None)
    if conn is None:
        return "absent"
    return "active" if conn.last_seq16 is not None else "open"


def _c3_setup(state: str) -> tuple[ProducerTarget, int, float, list[bytes]]:
    t, _ = make(TargetOptions(initial_watchdog_s=0.0))
    calls: list[bytes] = []
    if state == "absent":
        return t, 0x00070001, 2.0, calls
    ok, _ = opened(t, class3_fo(ot_rpi=1_000, timeout_multiplier=0))  # 4 ms watchdog
    ot = ok.ot_connection_id
    if state == "active":

        def first(message: bytes, when: float, conn: object) -> bytes:
            calls.append(message)
            return b"reply1"

        assert t.connected_request(ot, SESSION, 1, b"\x01\x02\x20\x64\x24\x01", 0.001, first) == (
            0x11223344,
            b"reply1",
        )
    elif state == "closed":
        t.forward_close(cm.forward_close_for(class3_fo()), PEER, 0.001)
    conn = next(iter(t.connections()), None)
    return t, ot, conn.deadline if conn else 2.0, calls


@pytest.mark.parametrize("state", C3_STATES)
@pytest.mark.parametrize("inp", C3_INPUTS)
def test_class3_state_table(state: str, inp: str) -> None:
    t, ot, deadline, calls = _c3_setup(state)
    now = deadline if inp == "timer_at" else deadline - 0.0001
    before = t.counters.as_dict()
    result = "-"
    n_calls = len(calls)

    def handler(message: bytes, when: float, conn: TargetConnection) -> bytes:
        assert conn.to_size == 4000
        calls.append(message)
        return b"reply2"

    if inp == "fo_same":
        result = _code(t.forward_open(class3_fo(), PEER, SESSION, now, None)[0])
    elif inp == "fc":
        result = _code(t.forward_close(cm.forward_close_for(class3_fo()), PEER, now))
    elif inp == "fc_other_ip":
        result = _code(t.forward_close(cm.forward_close_for(class3_fo()), OTHER, now))
    elif inp.startswith("req_"):
        session = SESSION + 1 if inp == "req_other_session" else SESSION
        seq = 1 if inp == "req_repeat" else 2
        got = t.connected_request(ot, session, seq, b"msg", now, handler)
        if got is None:
            result = "none"
        else:
            assert got[0] == 0x11223344
            result = "handled" if len(calls) > n_calls else "retransmit"
            assert got[1] == (b"reply2" if result == "handled" else b"reply1")
    elif inp == "session_closed":
        t.session_closed(SESSION, now)
    elif inp == "other_session_closed":
        t.session_closed(SESSION + 1, now)
    elif inp in ("timer_before", "timer_at"):
        t.on_timer(now)
    elif inp == "restart":
        t.restart(now)
    elif inp == "class1_datagram":
        t.on_datagram(class1.heartbeat(ot, 1), PEER, now)
    if result == "-":
        after = t.counters.as_dict()
        changed = [k for k in ("timeouts", "heartbeats_unknown") if after[k] != before[k]]
        result = changed[0] if changed else "-"
    assert (_c3_observe(t), result) == _C3[(state, inp)]


def test_event_strings_name_what_happened() -> None:
    t, _ = make()
    rejected(t, fo(path=epath.produced_tag_connection_path("Nope", 0)))
    (ev,) = events(t)
    text = str(ev)
    assert text.startswith(
        "rejected tag=Nope peer=127.0.0.1 triad=0x1234/0x0f0f/0x0000cafe 0x01/0x031F"
    )


def test_snapshot_is_plain_data() -> None:
    import json

    t, _ = make()
    opened(t, fo())
    snap = t.snapshot()
    json.dumps(snap)
    assert snap["connections"][0]["tag"] == "Prod"  # type: ignore[index]
    assert KeyIdentity().vendor_id == 1


def test_session_close_request_when_the_originators_last_connection_times_out() -> None:
    t, _ = make(TargetOptions(initial_watchdog_s=0.0, close_sessions_on_timeout=True))
    opened(t, fo(serial=1, ot_rpi=10_000))
    opened(t, fo(serial=2, ot_rpi=100_000))  # same originator, 0.4 s watchdog
    t.on_timer(0.05)
    assert session_closes(t) == []  # the originator still has serial 2
    t.on_timer(0.5)
    assert session_closes(t) == [PEER] and session_closes(t) == []


def test_outputs_are_one_ordered_list_timeouts_before_production() -> None:
    t, _ = make(TargetOptions(initial_watchdog_s=0.0, close_sessions_on_timeout=True))
    opened(t, fo(serial=1, ot_rpi=10_000))  # 40 ms watchdog
    opened(t, fo(serial=2, ot_rpi=100_000, originator_serial=0xBEEF), ip=OTHER)
    t.take_outputs()  # the OPENED events
    t.on_timer(0.05)
    timed_out, close, datagram = t.take_outputs()
    assert isinstance(timed_out, TargetEvent) and timed_out.kind is TargetEventKind.TIMED_OUT
    assert close == CloseSession(PEER)
    assert isinstance(datagram, SendDatagram) and datagram.address == (OTHER, 2222)
    assert t.take_outputs() == []  # taken means forgotten


def test_every_connection_kind_has_its_rules_as_data() -> None:
    assert set(KIND_RULES) == set(ConnectionKind)
    c1, c3 = KIND_RULES[ConnectionKind.CLASS1], KIND_RULES[ConnectionKind.CLASS3]
    assert c1.udp_heartbeats and not c1.ends_with_session  # class 1 outlives its session (2.4)
    assert c3.connected_requests and c3.ends_with_session


def test_no_session_close_request_by_default() -> None:
    t, _ = make(TargetOptions(initial_watchdog_s=0.0))
    opened(t, fo())
    t.on_timer(1.0)
    assert t.connections() == [] and session_closes(t) == []


# --------------------------------------------------------------------------- fuzzing

_FUZZ_PEERS = ("127.0.0.1", "127.0.0.9", "127.0.1.7", "127.200.3.4", "10.1.2.3")
_FUZZ_OPTIONS = (
    TargetOptions(initial_watchdog_s=0.05),
    TargetOptions(
        large_forward_open=False,
        size_error=0x0128,
        unknown_tag_error=0x0315,
        initial_watchdog_s=0.0,
    ),
    TargetOptions(
        address="127.0.1.2",
        netmask="255.255.255.0",
        max_connections=5,
        multicast_rpi_error=0x0801,
        close_sessions_on_timeout=True,
        seq16_mode=Seq16Mode.EVERY_PACKET,
        assemblies={1: "Prod", 2: "Hidden"},
    ),
)


def _fuzz_seeds() -> list[tuple[int, bytes]]:
    """Valid Connection Manager requests of every shape the target knows: (service, body)."""
    p = epath.produced_tag_connection_path
    opens = [
        fo(),
        fo(large=True),
        fo(multicast=True),
        fo(multicast=True, large=True),
        fo("Big", 100, rpi=2_000, mult=3),
        fo(path=p("Prod", None, None)),
        fo(path=p("Prod", 0, epath.ElectronicKey(1, 0x0E, 166, 33, 11))),
        fo(path=bytes.fromhex("20042401 2CC6 2C01")),
        fo(path=bytes.fromhex("0100 20042C01")),
        fo(path=bytes.fromhex("20042401 2C972C01 80021234 5678")),
        fo(path=epath.encode_path(epath.tag_path("Program:Main.Prod[1].X"))),
        class3_fo(),
        class3_fo(large=False),
    ]
    seeds = [(int(r.service), r.encode_body()) for r in opens]
    seeds += [(0x4E, cm.forward_close_for(r).encode_body()) for r in opens]
    return seeds


def _mutate(rng: random.Random, body: bytes, seeds: list[tuple[int, bytes]]) -> bytes:
    data = bytearray(body)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        how = rng.randrange(8)
        if how == 0 and data:  # flip 1..8 bits
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == 1:  # truncate
            del data[rng.randrange(len(data) + 1) :]
        elif how == 2:  # extend with junk
            data += rng.randbytes(rng.randint(1, 40))
        elif how == 3 and data:  # corrupt a length: the path size byte of FO, LFO or FC
            at = rng.choice([i for i in (35, 39, 10) if i < len(data)] or [0])
            data[at] = rng.choice((0, 1, data[at] + 1 & 0xFF, data[at] - 1 & 0xFF, 0x7F, 0xFF))
        elif how == 4 and data:  # overwrite a byte (a field, an id, a segment type)
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 5:  # splice two valid requests
            other = rng.choice(seeds)[1]
            cut = rng.randrange(min(len(data), len(other)) + 1)
            data = data[:cut] + bytearray(other[cut:])
        elif how == 6 and data:  # delete or insert a byte in the middle (misaligns the rest)
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                del data[at]
            else:
                data.insert(at, rng.randrange(256))
        elif how == 7 and len(data) > 4:  # extreme values in a 32-bit field (ids, RPIs)
            at = rng.randrange(len(data) - 3)
            data[at : at + 4] = rng.choice((b"\x00" * 4, b"\xff" * 4, b"\x00\x00\x00\x80"))
    return bytes(data)


def _check_reply(service: int, reply: cip.Reply, items: tuple[cpf.Item, ...], where: str) -> None:
    """The reply is a well-formed CIP reply to ``service``; a Connection Manager reply with a
    body decodes as one (success: the Forward_Open / Forward_Close reply; failure: the triad)."""
    back = cip.Reply.decode(reply.encode())
    assert back == reply and back.service == service, where
    if not reply.data:
        assert reply.status != 0 and items == (), where
        return
    decoded: cm.ForwardOpenSuccess | cm.ForwardCloseSuccess | cm.ConnectionFailure
    if service in (0x54, 0x5B):
        decoded = cm.decode_forward_open_reply(back)
    elif service == 0x4E:
        decoded = cm.decode_forward_close_reply(back)
    else:
        raise AssertionError(f"{where}: data in the reply to an unsupported service")
    if isinstance(decoded, cm.ConnectionFailure):
        assert reply.status != 0 and items == (), where
    for item in items:
        assert isinstance(item, cpf.SockaddrInfo), where
        item.sockaddr.encode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_cm_requests_and_datagrams_never_escape(seed: int) -> None:
    """~25,000 random and mutated Forward_Open / Large_Forward_Open / Forward_Close bodies
    through ``handle_cm`` and ~12,000 random and mutated datagrams through ``on_datagram``
    (per seed), interleaved with timers, closes and restarts on three option sets: nothing
    raises, every reply is a well-formed CIP reply, every produced datagram decodes."""
    rng = random.Random(seed)
    seeds = _fuzz_seeds()
    targets = [make(opt)[0] for opt in _FUZZ_OPTIONS]
    now = 0.0
    opened_before = 0
    for i in range(25_000):
        t = targets[i % len(targets)]
        now += rng.choice((0.0, 0.0005, 0.003, 0.02))
        service, body = rng.choice(seeds)
        roll = rng.random()
        if roll < 0.07:
            body = rng.randbytes(rng.randrange(120))  # pure noise
        elif roll < 0.9:
            body = _mutate(rng, body, seeds)  # else: the valid request itself
        if rng.random() < 0.05:
            service = rng.choice((0x54, 0x5B, 0x4E, 0x52, 0x57, 0x00, 0x7F))
        peer = rng.choice(_FUZZ_PEERS)
        items: tuple[cpf.Item, ...] = ()
        if rng.random() < 0.2:
            items = (
                cpf.SockaddrInfo(
                    cpf.ItemId.SOCKADDR_T2O, cpf.Sockaddr("0.0.0.0", rng.randrange(65536))
                ),
            )
        request = cip.Request(service, epath.CONNECTION_MANAGER_PATH, body)
        where = f"seed {seed} #{i}: service 0x{service:02X} body {body.hex()} peer {peer}"
        try:
            reply, out_items = t.handle_cm(request, peer, rng.randrange(1, 5), now, items)
        except Exception as err:  # noqa: BLE001 - report the input that broke it
            pytest.fail(f"handle_cm raised {err!r}; {where}")
        _check_reply(service, reply, out_items, where)

        if i % 2 == 0:  # datagrams: noise, or a heartbeat of a live connection, mutated
            live = t.connections()
            conn = rng.choice(live) if live else None
            if conn is not None and rng.random() < 0.8:
                dgram = class1.heartbeat(conn.ot_id, rng.randrange(1 << 32), rng.randrange(1 << 16))
                if rng.random() < 0.7:
                    dgram = _mutate(rng, dgram, [(0, dgram)])
            else:
                dgram = rng.randbytes(rng.randrange(64))
            src = (
                conn.peer_ip if conn is not None and rng.random() < 0.7 else rng.choice(_FUZZ_PEERS)
            )
            try:
                t.on_datagram(dgram, src, now)
            except Exception as err:  # noqa: BLE001
                pytest.fail(f"on_datagram raised {err!r}; seed {seed} #{i} {dgram.hex()}")
        if i % 50 == 0:
            for data, dest in produce(t, now):
                class1.Class1Datagram.decode(data)
                assert isinstance(dest[0], str) and 0 <= dest[1] <= 0xFFFF
            events(t)
            session_closes(t)
        if i % 997 == 0:
            t.session_closed(rng.randrange(1, 5), now)
        if i % 4001 == 0:
            opened_before += len(t.connections())
            t.restart(now)
    # The corpus really reached deep states, not only early rejections.
    total = sum(len(x.connections()) for x in targets) + opened_before
    codes = set().union(*(x.counters.reject_codes for x in targets))
    assert total > 0 and sum(x.counters.heartbeats for x in targets) > 0
    assert {"0x13", "0x15", "0x08", "0x01/0x0100", "0x01/0x0813", "0x01/0x0315"} <= codes, codes
    assert sum(x.counters.datagrams_malformed for x in targets) > 1000


def test_stopped_production_builds_nothing_and_resumes_at_the_next_slot() -> None:
    t, _ = make(TargetOptions(seq16_mode=Seq16Mode.EVERY_PACKET))
    opened(t, fo(rpi=10_000), now=0.0)
    assert len(produce(t, 0.01)) == 1
    last = t.producers()[0]
    seq32, seq16 = last.seq32, last.seq16
    t.set_producing(False, 0.012)
    assert not t.producing
    # Only the watchdog is due: no production slot wakes a stopped target.
    watchdog = t.connections()[0].deadline
    assert t.next_deadline() == watchdog
    t.on_datagram(class1.heartbeat(t.connections()[0].ot_id, 1), PEER, 0.02)
    assert produce(t, 0.04) == [] and len(t.connections()) == 1
    assert (last.seq32, last.seq16) == (seq32, seq16)  # held for a source taking over
    t.set_producing(True, 0.0434)
    assert t.next_deadline() == pytest.approx(0.05)
    out = _datagrams(produce(t, 0.05))
    assert [(d.sequence, d.cip_sequence) for d in out] == [(seq32 + 1, seq16 + 1)]
    assert t.counters.production_slots_missed == 0


def test_a_stopped_target_wakes_no_later_than_its_watchdogs_and_expires_only_the_silent() -> None:
    # Without production the next deadline is a lower bound of the watchdogs, kept as
    # heartbeats arrive (no look at every connection per datagram): never later than the
    # earliest, and a connection whose heartbeats go on is not expired when it is reached.
    t, _ = make(TargetOptions(initial_watchdog_s=0.0))
    talking, _ = opened(t, fo(ot_rpi=100_000, mult=1))  # watchdog 0.8 s
    opened(t, fo("Big", 100, serial=0x1235, to_id=0xA0000002, ot_rpi=100_000, mult=1))
    t.set_producing(False, 0.0)
    silent = [c for c in t.connections() if c.tag == "Big"][0]
    now, hb = 0.0, 0
    while t.connections() != [c for c in t.connections() if c.tag == "Prod"]:
        due = t.next_deadline()
        assert due is not None and due <= min(c.deadline for c in t.connections()) + 1e-9
        now = min(due, now + 0.1)
        hb += 1
        t.on_datagram(class1.heartbeat(talking.ot_connection_id, hb), PEER, now)
        t.on_timer(now)
        assert now < 5.0
    assert now == pytest.approx(silent.deadline) and len(t.connections()) == 1
    (ev,) = [e for e in events(t) if e.kind is TargetEventKind.TIMED_OUT]
    assert ev.tag == "Big"
