"""Field-by-field comparison of our decoded Connection Manager / class-1 / identity values with
what tshark decodes from the same frame. Each function asserts, naming the field that differs.

The tshark side is the ``cipcm`` layer (so a reply's copy of its request's path, and the CM
request path in the ``cip`` layer, are not mixed up with the connection path).
"""

from __future__ import annotations

from pyconpro.acquisition import cip, class1, cm, cpf, epath

from tests.support.tshark import FrameFields


def _eq(frame: int, name: str, ours: object, theirs: object) -> None:
    assert ours == theirs, f"frame {frame}: {name}: ours {ours!r}, tshark {theirs!r}"


def _ncp_fields(p: cm.NetworkParameters) -> tuple[int, int, int, int, int]:
    return (
        int(p.redundant_owner),
        int(p.connection_type),
        int(p.priority),
        int(p.variable),
        p.size,
    )


def segment_first_bytes(path: bytes) -> list[int]:
    """The type byte of each segment, by decoding with our EPATH walker and re-encoding."""
    return [seg.encode()[0] for seg in epath.decode_path(path)]


def assert_connection_path(n: int, path: bytes, t: FrameFields) -> None:
    """Our path walk against tshark's segment list (type bytes, classes, instances...)."""
    segs = epath.decode_path(path)
    _eq(n, "cip.cm.connpath_size", len(path) // 2, t.int_value("cip.cm.connpath_size"))
    theirs = t.int_values("cip.path_segment")
    if theirs:  # tshark lists segments one by one for assembly / symbolic paths
        _eq(n, "cip.path_segment", segment_first_bytes(path), theirs)
    classes = [
        s.value
        for s in segs
        if isinstance(s, epath.LogicalSegment) and s.kind == epath.LogicalType.CLASS_ID
    ]
    instances = [
        s.value
        for s in segs
        if isinstance(s, epath.LogicalSegment) and s.kind == epath.LogicalType.INSTANCE_ID
    ]
    points = [
        s.value
        for s in segs
        if isinstance(s, epath.LogicalSegment) and s.kind == epath.LogicalType.CONNECTION_POINT
    ]
    ports = [s for s in segs if isinstance(s, epath.PortSegment)]
    symbols = [s.name for s in segs if isinstance(s, epath.SymbolicSegment)]
    keys = [s for s in segs if isinstance(s, epath.ElectronicKey)]
    _eq(n, "cip.class", classes, t.int_values("cip.class"))
    _eq(n, "cip.instance", instances, t.int_values("cip.instance"))
    _eq(n, "cip.connpoint", points, t.int_values("cip.connpoint"))
    _eq(n, "cip.port", [p.port for p in ports], t.int_values("cip.port"))
    _eq(
        n,
        "cip.linkaddress.byte",
        [p.link[0] for p in ports if len(p.link) == 1],
        t.int_values("cip.linkaddress.byte"),
    )
    _eq(n, "cip.symbol", symbols, t.values("cip.symbol"))
    _eq(n, "cip.ekey.vendor", [k.vendor_id for k in keys], t.int_values("cip.ekey.vendor"))
    _eq(
        n,
        "cip.ekey.product_code",
        [k.product_code for k in keys],
        t.int_values("cip.ekey.product_code"),
    )


def assert_forward_open_request(n: int, fo: cm.ForwardOpenRequest, t: FrameFields) -> None:
    _eq(n, "cip.cm.sc", int(fo.service), t.int_value("cip.cm.sc"))
    _eq(n, "cip.cm.priority", (fo.priority_tick >> 4) & 1, t.int_value("cip.cm.priority"))
    _eq(n, "cip.cm.tick_time", fo.priority_tick & 0x0F, t.int_value("cip.cm.tick_time"))
    _eq(n, "cip.cm.timeout_tick", fo.timeout_ticks, t.int_value("cip.cm.timeout_tick"))
    _eq(n, "cip.cm.ot_connid", fo.ot_connection_id, t.int_value("cip.cm.ot_connid"))
    _eq(n, "cip.cm.to_connid", fo.to_connection_id, t.int_value("cip.cm.to_connid"))
    _eq(n, "cip.cm.conn_serial_num", fo.connection_serial, t.int_value("cip.cm.conn_serial_num"))
    _eq(n, "cip.cm.vendor", fo.vendor_id, t.int_value("cip.cm.vendor"))
    _eq(n, "cip.cm.orig_serial_num", fo.originator_serial, t.int_value("cip.cm.orig_serial_num"))
    _eq(
        n,
        "cip.cm.timeout_multiplier",
        fo.timeout_multiplier,
        t.int_value("cip.cm.timeout_multiplier"),
    )
    _eq(n, "cip.reserved", int.from_bytes(fo.reserved, "little"), t.int_value("cip.reserved"))
    _eq(n, "cip.cm.otrpi", fo.ot_rpi, t.int_value("cip.cm.otrpi"))
    _eq(n, "cip.cm.torpi", fo.to_rpi, t.int_value("cip.cm.torpi"))
    word = cm.NetworkParameters.to_word32 if fo.large else cm.NetworkParameters.to_word16
    _eq(n, "cip.cm.ot_net_params", word(fo.ot_params), t.int_value("cip.cm.ot_net_params"))
    _eq(n, "cip.cm.to_net_params", word(fo.to_params), t.int_value("cip.cm.to_net_params"))
    ours = [_ncp_fields(fo.ot_params), _ncp_fields(fo.to_params)]
    theirs = list(
        zip(
            *(t.int_values(f"cip.cm.fwo.{k}") for k in ("owner", "type", "prio", "f_v", "consize")),
            strict=True,
        )
    )
    _eq(n, "cip.cm.fwo.(owner,type,prio,f_v,consize) [O->T, T->O]", ours, theirs)
    _eq(
        n,
        "cip.cm.transport_type_trigger",
        fo.transport,
        t.int_value("cip.cm.transport_type_trigger"),
    )
    tt = fo.transport_trigger
    _eq(n, "cip.cm.fwo.dir", int(tt.server), t.int_value("cip.cm.fwo.dir"))
    _eq(n, "cip.cm.fwo.trigger", int(tt.trigger), t.int_value("cip.cm.fwo.trigger"))
    _eq(n, "cip.cm.fwo.transport", int(tt.transport_class), t.int_value("cip.cm.fwo.transport"))
    assert_connection_path(n, fo.path, t)


def assert_reply_status(n: int, reply: cip.Reply, t: FrameFields) -> None:
    _eq(n, "cip.cm.sc", reply.service, t.int_value("cip.cm.sc"))
    _eq(n, "cip.genstat", reply.status, t.int_value("cip.genstat"))
    _eq(n, "cip.addstat", list(reply.additional), t.int_values("cip.addstat"))


def assert_forward_open_success(n: int, ok: cm.ForwardOpenSuccess, t: FrameFields) -> None:
    _eq(n, "cip.cm.ot_connid", ok.ot_connection_id, t.int_value("cip.cm.ot_connid"))
    _eq(n, "cip.cm.to_connid", ok.to_connection_id, t.int_value("cip.cm.to_connid"))
    _eq(n, "cip.cm.conn_serial_num", ok.connection_serial, t.int_value("cip.cm.conn_serial_num"))
    _eq(n, "cip.cm.vendor", ok.vendor_id, t.int_value("cip.cm.vendor"))
    _eq(n, "cip.cm.orig_serial_num", ok.originator_serial, t.int_value("cip.cm.orig_serial_num"))
    _eq(n, "cip.cm.otapi", ok.ot_api, t.int_value("cip.cm.otapi"))
    _eq(n, "cip.cm.toapi", ok.to_api, t.int_value("cip.cm.toapi"))
    _eq(
        n,
        "cip.cm.app_reply_size",
        len(ok.application_reply) // 2,
        t.int_value("cip.cm.app_reply_size"),
    )
    _eq(n, "cip.reserved", ok.reserved, t.int_value("cip.reserved"))


def assert_connection_failure(n: int, fail: cm.ConnectionFailure, t: FrameFields) -> None:
    _eq(n, "cip.cm.genstat", fail.general_status, t.int_value("cip.cm.genstat"))
    _eq(n, "cip.cm.addstat_size", len(fail.additional), t.int_value("cip.cm.addstat_size"))
    _eq(n, "cip.cm.ext_status", fail.extended_status, t.int_value("cip.cm.ext_status"))
    if fail.extended_status == 0x0127:
        _eq(n, "cip.cm.ext127_size", fail.additional[1], t.int_value("cip.cm.ext127_size"))
    _eq(n, "cip.cm.conn_serial_num", fail.connection_serial, t.int_value("cip.cm.conn_serial_num"))
    _eq(n, "cip.cm.vendor", fail.vendor_id, t.int_value("cip.cm.vendor"))
    _eq(n, "cip.cm.orig_serial_num", fail.originator_serial, t.int_value("cip.cm.orig_serial_num"))
    _eq(
        n,
        "cip.cm.remain_path_size",
        fail.remaining_path_size,
        t.int_value("cip.cm.remain_path_size"),
    )
    _eq(n, "cip.reserved", fail.reserved, t.int_value("cip.reserved"))


def assert_forward_close_request(n: int, fc: cm.ForwardCloseRequest, t: FrameFields) -> None:
    _eq(n, "cip.cm.sc", int(cip.Service.FORWARD_CLOSE), t.int_value("cip.cm.sc"))
    _eq(n, "cip.cm.priority", (fc.priority_tick >> 4) & 1, t.int_value("cip.cm.priority"))
    _eq(n, "cip.cm.tick_time", fc.priority_tick & 0x0F, t.int_value("cip.cm.tick_time"))
    _eq(n, "cip.cm.timeout_tick", fc.timeout_ticks, t.int_value("cip.cm.timeout_tick"))
    _eq(n, "cip.cm.conn_serial_num", fc.connection_serial, t.int_value("cip.cm.conn_serial_num"))
    _eq(n, "cip.cm.vendor", fc.vendor_id, t.int_value("cip.cm.vendor"))
    _eq(n, "cip.cm.orig_serial_num", fc.originator_serial, t.int_value("cip.cm.orig_serial_num"))
    _eq(n, "cip.reserved", fc.reserved, t.int_value("cip.reserved"))
    assert_connection_path(n, fc.path, t)


def assert_forward_close_success(n: int, ok: cm.ForwardCloseSuccess, t: FrameFields) -> None:
    _eq(n, "cip.cm.conn_serial_num", ok.connection_serial, t.int_value("cip.cm.conn_serial_num"))
    _eq(n, "cip.cm.vendor", ok.vendor_id, t.int_value("cip.cm.vendor"))
    _eq(n, "cip.cm.orig_serial_num", ok.originator_serial, t.int_value("cip.cm.orig_serial_num"))
    _eq(
        n,
        "cip.cm.app_reply_size",
        len(ok.application_reply) // 2,
        t.int_value("cip.cm.app_reply_size"),
    )
    _eq(n, "cip.reserved", ok.reserved, t.int_value("cip.reserved"))


def assert_sockaddrs(n: int, items: list[cpf.SockaddrInfo], t: FrameFields) -> None:
    _eq(
        n,
        "enip.cpf.typeid (sockaddr)",
        [int(i.direction) for i in items],
        [x for x in t.int_values("enip.cpf.typeid") if x in (0x8000, 0x8001)],
    )
    _eq(n, "enip.sinfamily", [i.sockaddr.family for i in items], t.int_values("enip.sinfamily"))
    _eq(n, "enip.sinport", [i.sockaddr.port for i in items], t.int_values("enip.sinport"))
    _eq(n, "enip.sinaddr", [i.sockaddr.address for i in items], t.values("enip.sinaddr"))
    _eq(
        n,
        "enip.sinzero",
        [i.sockaddr.zero for i in items],
        [bytes.fromhex(v.replace(":", "")) for v in t.values("enip.sinzero")],
    )


def assert_class1(n: int, d: class1.Class1Datagram, t: FrameFields, *, split: bool) -> None:
    """``split``: tshark knows the connection (its Forward_Open is in the capture) and so shows
    sequence count / run-idle header / data separately; otherwise ``cipio.data`` is the whole
    connected-data item."""
    _eq(n, "enip.cpf.sai.connid", d.connection_id, t.int_value("enip.cpf.sai.connid"))
    _eq(n, "enip.cpf.sai.seq", d.sequence, t.int_value("enip.cpf.sai.seq"))
    _eq(n, "enip.cpf.length", [8, d.connection_size], t.int_values("enip.cpf.length"))
    if split:
        _eq(n, "cip.seq", d.cip_sequence, t.int_value("cip.seq"))
        _eq(
            n,
            "cip.32bitheader",
            [] if d.run_idle is None else [d.run_idle],
            t.int_values("cip.32bitheader"),
        )
        _eq(n, "cipio.data", d.data, t.bytes_value("cipio.data"))
    else:
        header = b"" if d.run_idle is None else d.run_idle.to_bytes(4, "little")
        whole = d.cip_sequence.to_bytes(2, "little") + header + d.data
        _eq(n, "cipio.data", whole, t.bytes_value("cipio.data"))


def assert_identity(n: int, item: cpf.IdentityItem, t: FrameFields) -> None:
    _eq(n, "enip.encapver", item.protocol_version, t.int_value("enip.encapver"))
    _eq(n, "enip.sinfamily", item.sockaddr.family, t.int_value("enip.sinfamily"))
    _eq(n, "enip.sinport", item.sockaddr.port, t.int_value("enip.sinport"))
    _eq(n, "enip.sinaddr", item.sockaddr.address, t.one("enip.sinaddr"))
    _eq(n, "enip.lir.vendor", item.vendor_id, t.int_value("enip.lir.vendor"))
    _eq(n, "enip.lir.devtype", item.device_type, t.int_value("enip.lir.devtype"))
    _eq(n, "enip.lir.prodcode", item.product_code, t.int_value("enip.lir.prodcode"))
    # tshark shows the two revision bytes as one number, major * 256 + minor ("4.03")
    _eq(
        n,
        "enip.lir.revision",
        item.revision_major << 8 | item.revision_minor,
        t.int_value("enip.lir.revision"),
    )
    _eq(n, "enip.lir.status", item.status, t.int_value("enip.lir.status"))
    _eq(n, "enip.lir.serial", item.serial_number, t.int_value("enip.lir.serial"))
    _eq(n, "enip.lir.namelen", len(item.product_name), t.int_value("enip.lir.namelen"))
    _eq(n, "enip.lir.name", item.product_name, t.one("enip.lir.name"))
    _eq(n, "enip.lir.state", item.state, t.int_value("enip.lir.state"))
