"""Class-1 connections to a generic adapter's assemblies (I/O blocks, drives, OpENer devices).

Owns, pure: what an assembly connection is (``AssemblySpec``: connection type, connection
points, sizes, run/idle headers, configuration data), its connection path, its Forward_Open,
the sizes a device asks for in a size reject, the O->T datagram an exclusive owner sends, and
the declared layout that names the fields of an input image (``parse_layout`` -> a
``logix_types.StructType`` the existing decoders turn into ``{"speed": 1200, ...}``), and the
declared output layout an exclusive owner's output image is written through
(``encode_output``: ``{"speed": 1200}`` -> the image bytes, other fields kept).

Implements protocol.md 4.3 (``[port] [key] 20 04 24 <config> 2C <O->T> 2C <T->O> [80 <data>]``:
the first connection point is the consumed one, the second the produced one), 5.2 / 5.5 /
5.6 (a scanner's Forward_Open: transport 0x01, client, cyclic, class 1), 5.9 (0x0109 / 0x0127 /
0x0128 + the size the device wants), 6.2 (what counts toward a connection size: the 16-bit
sequence count, the 32-bit run/idle header when present, the data) and 6.3 (the run/idle
header: bit 0 run).

The three connection types (as OpENer configures them, appcontype.c):

* exclusive owner: O->T carries the output image (with the run/idle header by default); one
  owner per output assembly, a second gets 0x0106;
* input only: O->T is a heartbeat connection point (an assembly of size 0: the datagram holds
  only the sequence count, no run/idle header);
* listen only: like input only on another heartbeat point, and the device accepts it only while
  a non-listen-only connection produces the same input assembly (else 0x0119).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyconpro.acquisition import class1, cm, epath
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_encoder
from pyconpro.acquisition.logix_types import (
    ATOMIC_FORMATS,
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    Member,
    StructType,
    byte_size,
    resolve_type,
)

__all__ = [
    "RUN_IDLE_SIZE", "AssemblySpec", "ConnectionKind", "Direction", "SizeAnswer",
    "assembly_forward_open", "encode_output", "layout_end", "output_datagram",
    "output_layout_from_map", "parse_layout", "size_answer",
]

RUN_IDLE_SIZE = 4  # the 32-bit run/idle header (protocol.md 6.3)
MAX_CONNECTION_SIZE = 0x1FF  # what a (16-bit NCP) Forward_Open can carry


class ConnectionKind(enum.StrEnum):
    """The application connection type, as the config names it."""

    EXCLUSIVE_OWNER = "exclusive_owner"
    INPUT_ONLY = "input_only"
    LISTEN_ONLY = "listen_only"


class Direction(enum.StrEnum):
    OT = "O->T"
    TO = "T->O"


@dataclass(frozen=True, slots=True)
class AssemblySpec:
    """One assembly connection as the originator needs it.

    ``input`` is the T->O connection point (the input assembly the device produces);
    ``output`` the O->T point: the output assembly (exclusive owner) or the heartbeat point
    (input only / listen only). ``config`` the configuration instance (``24 <config>``; None:
    no instance segment), ``config_data`` the bytes of the data segment (even length).
    ``raw_path`` replaces everything after the port segments with these EPATH bytes (for
    anything exotic); the points are then only labels. ``input_size`` / ``output_size`` are data
    bytes without sequence count and run/idle header; None = take what the device asks for
    (protocol.md 5.9). ``ot_run_idle`` / ``to_run_idle``: the 32-bit header on that direction
    (never on a heartbeat).
    """

    kind: ConnectionKind
    input: int | None = None
    output: int | None = None
    config: int | None = None
    config_data: bytes = b""
    raw_path: bytes | None = None
    input_size: int | None = None
    output_size: int | None = None
    ot_run_idle: bool = True
    to_run_idle: bool = False

    def __post_init__(self) -> None:
        if self.raw_path is None:
            if self.input is None or self.output is None:
                raise UsageError("an assembly connection needs its input (T->O) and output"
                                 " (O->T or heartbeat) connection points, or a raw path")
            for what, value in (("input", self.input), ("output", self.output),
                                ("config", self.config)):
                if value is not None and not 0 <= value <= 0xFFFF:
                    raise UsageError(f"{what} point {value} out of range 0..65535")
        elif len(self.raw_path) % 2 or not self.raw_path:
            raise UsageError("a raw connection path is an even number of bytes (padded EPATH)")
        if len(self.config_data) % 2 or len(self.config_data) > 510:
            raise UsageError(
                f"configuration data of {len(self.config_data)} bytes: the data segment carries"
                " an even number of bytes, at most 510 (pad it with a zero byte)")
        for what, size in (("input", self.input_size), ("output", self.output_size)):
            if size is not None and not 0 <= size <= MAX_CONNECTION_SIZE - 6:
                raise UsageError(f"{what} size {size} bytes out of range 0..505")
        if self.heartbeat and self.output_size:
            raise UsageError(f"a {self.kind.value} connection sends no output data: its O->T"
                             " point is a heartbeat (leave output_size out)")

    @property
    def heartbeat(self) -> bool:
        """O->T is a heartbeat (sequence count only), not an output image."""
        return self.kind is not ConnectionKind.EXCLUSIVE_OWNER

    @property
    def ot_header(self) -> int:
        """Bytes of run/idle header in each O->T datagram."""
        return RUN_IDLE_SIZE if self.ot_run_idle and not self.heartbeat else 0

    @property
    def to_header(self) -> int:
        return RUN_IDLE_SIZE if self.to_run_idle else 0

    def application_path(self) -> bytes:
        """``20 04 [24 cfg] 2C <O->T> 2C <T->O> [80 n data]``, or the raw path."""
        if self.raw_path is not None:
            return self.raw_path
        assert self.input is not None and self.output is not None
        segments: list[epath.Segment] = [epath.class_id(0x04)]
        if self.config is not None:
            segments.append(epath.instance_id(self.config))
        segments += [epath.connection_point(self.output), epath.connection_point(self.input)]
        if self.config_data:
            segments.append(epath.DataSegment(self.config_data))
        return epath.encode_path(segments)

    def connection_path(self, hops: Sequence[epath.PortSegment] = (),
                        key: epath.ElectronicKey | None = None) -> bytes:
        """Port segments (none for a device that owns its IP), optional key, then the path."""
        head = b"".join(h.encode() for h in hops) + (key.encode() if key is not None else b"")
        return head + self.application_path()

    def to_connection_size(self, input_bytes: int) -> int:
        return class1_size(input_bytes, self.to_header)

    def ot_connection_size(self, output_bytes: int) -> int:
        return class1_size(0 if self.heartbeat else output_bytes, self.ot_header)

    def to_map(self) -> dict[str, Any]:
        """This spec as an ``assembly`` map (``MAP_KEYS``; ``assembly_from_map`` reads it
        back), without a layout."""
        m: dict[str, Any] = {"connection": self.kind.value}
        for key in ("input", "output", "config", "input_size", "output_size"):
            if getattr(self, key) is not None:
                m[key] = getattr(self, key)
        if self.config_data:
            m["config_data"] = self.config_data.hex()
        if self.raw_path is not None:
            m["path"] = self.raw_path.hex()
        m["ot_run_idle"], m["to_run_idle"] = self.ot_run_idle, self.to_run_idle
        return m

    def describe(self) -> str:
        if self.raw_path is not None:
            return f"{self.kind.value} path {self.raw_path.hex()}"
        cfg = f" config {self.config}" if self.config is not None else ""
        out = "heartbeat" if self.heartbeat else "output"
        return f"{self.kind.value} input {self.input} {out} {self.output}{cfg}"


def class1_size(data_bytes: int, header: int) -> int:
    """The NCP size of a class-1 direction: sequence count + header + data (protocol.md 6.2)."""
    return cm.CLASS1_SEQUENCE_SIZE + header + data_bytes


def assembly_forward_open(
    spec: AssemblySpec, *, input_bytes: int, output_bytes: int, to_rpi_us: int, ot_rpi_us: int,
    connection_serial: int, vendor_id: int, originator_serial: int, to_connection_id: int,
    timeout_multiplier: int = 1, hops: Sequence[epath.PortSegment] = (),
) -> cm.ForwardOpenRequest:
    """A scanner's Forward_Open to an adapter (protocol.md 4.3, 5.2): both directions P2P,
    scheduled, fixed; transport 0x01 (client, cyclic, class 1)."""
    cm.check_timing(to_rpi_us, ot_rpi_us, timeout_multiplier)
    to_size = spec.to_connection_size(input_bytes)
    ot_size = spec.ot_connection_size(output_bytes)
    for name, size in (("T->O", to_size), ("O->T", ot_size)):
        if size > MAX_CONNECTION_SIZE:
            raise UsageError(f"{name} connection size {size} does not fit a Forward_Open (511)")
    return cm.class1_forward_open(
        ot_size=ot_size, to_size=to_size, server=False, path=spec.connection_path(hops),
        to_rpi_us=to_rpi_us, ot_rpi_us=ot_rpi_us, timeout_multiplier=timeout_multiplier,
        connection_serial=connection_serial, vendor_id=vendor_id,
        originator_serial=originator_serial, to_connection_id=to_connection_id,
    )


# ----------------------------------------------------------------------- size negotiation


@dataclass(frozen=True, slots=True)
class SizeAnswer:
    """What a size reject asks for: ``direction`` and its data bytes (header and sequence count
    taken off), or ``problem`` when the answer cannot be used."""

    direction: Direction | None
    data_bytes: int | None
    problem: str | None = None


def size_answer(spec: AssemblySpec, additional: tuple[int, ...], *, input_known: bool,
                output_known: bool) -> SizeAnswer:
    """Read a 0x0109 / 0x0127 / 0x0128 reject (protocol.md 5.9: one more word, the size the
    device wants, sequence count and headers included).

    0x0127 is the O->T direction, 0x0128 the T->O one. 0x0109 does not say which: the device
    checks O->T before T->O (OpENer does), so it is the first direction not known yet (given
    in the config, or learned from an earlier answer); a heartbeat O->T is always known.
    """
    if len(additional) < 2:
        return SizeAnswer(None, None, "the device did not say which size it wants")
    ext, wanted = additional[0], additional[1]
    direction: Direction | None
    if ext == 0x0127:
        direction = Direction.OT
    elif ext == 0x0128:
        direction = Direction.TO
    elif ext == 0x0109:
        ot_known = output_known or spec.heartbeat
        direction = (Direction.OT if not ot_known else Direction.TO if not input_known
                     else None)
        if direction is None:
            to_data = wanted - cm.CLASS1_SEQUENCE_SIZE - spec.to_header
            ot_data = wanted - cm.CLASS1_SEQUENCE_SIZE - spec.ot_header
            return SizeAnswer(None, None, f"the device wants a connection size of {wanted}"
                              f" bytes: set input_size = {to_data} if it is the T->O size"
                              + ("" if spec.heartbeat else
                                 f", output_size = {ot_data} if it is the O->T size")
                              + ", or leave the sizes out to take the device's")
    else:
        return SizeAnswer(None, None, f"0x{ext:04X} is not a size reject")
    if direction is Direction.OT:
        if spec.heartbeat:
            return SizeAnswer(direction, None, f"the device wants an O->T size of {wanted} on a"
                              f" heartbeat point: point {spec.output} is not a heartbeat"
                              " assembly of this device (check its EDS file)")
        data = wanted - cm.CLASS1_SEQUENCE_SIZE - spec.ot_header
    else:
        data = wanted - cm.CLASS1_SEQUENCE_SIZE - spec.to_header
    if data < 0:
        return SizeAnswer(direction, None, f"the device wants a {direction.value} size of"
                          f" {wanted} bytes, less than the sequence count and headers: check"
                          " the run/idle header settings")
    return SizeAnswer(direction, data)


# ----------------------------------------------------------------------- O->T data


RUN = class1.RUN_IDLE_RUN
IDLE = 0


def output_datagram(ot_id: int, sequence: int, image: bytes, *, run: bool,
                    header: bool) -> bytes:
    """The O->T datagram of an exclusive owner (protocol.md 6.1, 6.3): sequenced address, then
    the 16-bit sequence count (+1 with every datagram, so the device takes each as new data),
    the run/idle header (bit 0: run) when the connection has one, the output image."""
    return class1.Class1Datagram(
        ot_id, sequence & 0xFFFFFFFF, sequence & 0xFFFF, image,
        (RUN if run else IDLE) if header else None,
    ).encode()


# ----------------------------------------------------------------------- declared layout

_FIELD_KEYS = ("name", "type", "offset", "bit")


def parse_layout(name: str, fields: Sequence[Mapping[str, Any]],
                 size: int | None = None, *, key: str = "layout") -> StructType:
    """A declared layout -> a structure the Logix decoders read.

    Each field: ``name``, ``type`` (an atomic type, or an array of one such as ``"INT[4]"``),
    optional ``offset`` (bytes from the start; default: right after the previous field,
    packed, no alignment: an assembly is a byte image, not a Logix UDT) and ``bit`` (BOOL only,
    0..7; consecutive BOOLs without an offset share a byte, bit after bit, and a ``bit``
    without an offset stays in that byte when it is past the previous BOOL's bit, else starts
    the next byte). ``size``: the
    image size, when known (fields must fit in it; bytes after the last field are kept but not
    decoded). ``key``: the key the fields were given under (``layout``, ``output_layout``),
    for the messages. Raises ``UsageError`` naming the field and the fix.
    """
    if not fields:
        raise UsageError(f"{key} of {name!r}: declare at least one field")
    members: list[Member] = []
    seen: set[str] = set()
    offset = 0
    bool_byte: int | None = None
    next_bit = 0
    for i, f in enumerate(fields):
        where = f"{key} of {name!r}, field {i}"
        unknown = sorted(set(f) - set(_FIELD_KEYS))
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r}; a field has"
                             f" {', '.join(_FIELD_KEYS)}")
        fname, ftype = f.get("name"), f.get("type")
        if not isinstance(fname, str) or not fname.isidentifier():
            raise UsageError(f"{where}: name {fname!r} must be an identifier such as 'speed'")
        if fname.casefold() in seen:
            raise UsageError(f"{where}: field {fname!r} is declared twice")
        seen.add(fname.casefold())
        if not isinstance(ftype, str):
            raise UsageError(f"{where} ({fname}): give type, e.g. \"INT\", \"REAL\", \"BOOL\""
                             " or \"DINT[4]\"")
        t = _field_type(ftype, f"{where} ({fname})")
        explicit = f.get("offset")
        bit = f.get("bit")
        if explicit is not None and (isinstance(explicit, bool) or not isinstance(explicit, int)
                                     or explicit < 0):
            raise UsageError(f"{where} ({fname}): offset must be a byte offset >= 0")
        is_bool = t == AtomicType(DataTypeCode.BOOL)
        if bit is not None and (not is_bool or isinstance(bit, bool) or not isinstance(bit, int)
                                or not 0 <= bit <= 7):
            raise UsageError(f"{where} ({fname}): bit is for BOOL fields, 0..7")
        if is_bool:
            if explicit is not None:
                at, b = explicit, bit if bit is not None else 0
                bool_byte, next_bit = at, b + 1
            elif bool_byte is not None and (next_bit <= 7 if bit is None else bit >= next_bit):
                # the previous BOOL's byte: its next bit, or a later bit named by ``bit``
                at, b = bool_byte, next_bit if bit is None else bit
                next_bit = b + 1
            else:
                at, b = offset, bit if bit is not None else 0
                bool_byte, next_bit = at, b + 1
            members.append(Member(fname, t, at, bit=b))
            offset = max(offset, at + 1)
            continue
        bool_byte = None
        at = explicit if explicit is not None else offset
        members.append(Member(fname, t, at))
        offset = max(offset, at + byte_size(t))
    total = offset if size is None else size
    if total < offset:
        size_key = "output_size" if key == "output_layout" else "input_size"
        raise UsageError(f"{key} of {name!r}: its fields need {offset} bytes but the"
                         f" assembly is {total} ({size_key}); fix the offsets or the size")
    return StructType(f"Assembly_{name}" if name.isidentifier() else "Assembly", 0, 0, total,
                      tuple(members))


def _field_type(text: str, where: str) -> AtomicType | ArrayType:
    base, _, rest = text.partition("[")
    t = resolve_type(base.strip(), context=where)
    if not isinstance(t, AtomicType):
        raise UsageError(f"{where}: type {text!r}: an assembly field is an atomic type or an"
                         " array of one (STRING and structures are not packed images)")
    if not rest:
        return t
    if not rest.endswith("]") or not rest[:-1].strip().isdigit():
        raise UsageError(f"{where}: type {text!r}: write arrays as \"INT[4]\"")
    count = int(rest[:-1])
    if t.code == DataTypeCode.BOOL:
        raise UsageError(f"{where}: BOOL arrays: declare BOOL fields with bits, or a BYTE/WORD")
    return ArrayType(t, (count,))


def layout_end(t: StructType) -> int:
    """The bytes a declared layout's fields reach (the least image size they fit in)."""
    return max((m.offset + (1 if m.bit is not None else byte_size(m.type)) for m in t.members),
               default=0)


def encode_output(layout: StructType, values: Mapping[str, Any], previous: bytes) -> bytes:
    """An output image written through a declared output layout: ``previous`` (the image sent
    so far; zeros before the first) with the fields named in ``values`` replaced, each encoded
    as the layout says (BOOL fields set or clear their bit, the other bits of the byte kept).
    Fields not named keep their bytes, so ``{"speed": 1200}`` changes the speed alone.

    ``UsageError`` names the field and the fix (a field not in the layout, a value of the
    wrong type or out of the type's range); nothing is written then, the caller keeps
    ``previous``."""
    if not isinstance(values, Mapping):
        raise UsageError(f"output of {layout.name}: give a map of field names to values, e.g."
                         f" {{{layout.members[0].name!r}: ...}}, or the image as bytes")
    end = layout_end(layout)
    if len(previous) < end:
        raise UsageError(f"output of {layout.name}: the output image is {len(previous)} bytes"
                         f" but the output layout needs {end}; fix output_layout")
    by_name = {m.name: m for m in layout.members}
    image = bytearray(previous)
    for key, value in values.items():
        m = by_name.get(key) if isinstance(key, str) else None
        if m is None:
            raise UsageError(f"output field {key!r} is not in the output layout: its fields are"
                             f" {', '.join(by_name)} (names are case-sensitive)")
        if m.bit is not None:
            if not isinstance(value, int) or value not in (0, 1):
                raise UsageError(f"output field {key!r} (BOOL): {value!r} is not a BOOL;"
                                 " give true or false")
            mask = 1 << m.bit
            image[m.offset] = image[m.offset] | mask if value else image[m.offset] & ~mask
            continue
        try:
            packed = compile_encoder(m.type)(value)
        except UsageError as exc:  # "INT[4][3]: 70000 does not fit INT"
            head, _, problem = str(exc).partition(": ")
            raise UsageError(f"output field '{key}{head[len(m.type.name):]}' ({m.type.name}):"
                             f" {problem}; give {_value_hint(m.type)}") from None
        image[m.offset:m.offset + len(packed)] = packed
    return bytes(image)


def _value_hint(t: LogixType) -> str:
    """What a value of ``t`` looks like, for a refused one."""
    if isinstance(t, ArrayType):
        return f"a list of {t.count} values, each {_value_hint(t.element)}"
    assert isinstance(t, AtomicType)
    if t.code in (DataTypeCode.REAL, DataTypeCode.LREAL):
        return "a number" + (" within +-3.4e38" if t.code == DataTypeCode.REAL else "")
    fmt, size = ATOMIC_FORMATS[t.code]
    bits = 8 * size
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt.islower() else (0, (1 << bits) - 1)
    return f"a whole number in {lo}..{hi}"


# ----------------------------------------------------------------------- the map form

#: The keys of an assembly consumer's ``assembly`` map (config file ``[plc.assembly]``
#: entries, the control socket, the Python API), with what each means.
MAP_KEYS: Mapping[str, str] = {
    "connection": "exclusive_owner, input_only or listen_only (required)",
    "input": "T->O connection point: the input assembly instance",
    "output": "O->T connection point: output assembly (exclusive owner) or heartbeat point",
    "config": "configuration assembly instance (the 24 <instance> segment; none by default)",
    "config_data": "configuration data sent in the Forward_Open, hex (even length)",
    "path": "raw application path, hex, instead of input/output/config",
    "input_size": "input data bytes (default: the size the device asks for)",
    "output_size": "output data bytes (default: the size the device asks for)",
    "ot_run_idle": "32-bit run/idle header on O->T data (default true; never on heartbeats)",
    "to_run_idle": "32-bit run/idle header on T->O data (default false)",
    "layout": "fields of the input image: [{name, type, offset?, bit?}, ...]",
    "output_layout": "fields of the output image (exclusive owner): same form as layout",
}


def _hex(m: Mapping[str, Any], key: str) -> bytes | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"assembly.{key}: give hex text such as \"0102\"")
    try:
        return bytes.fromhex(value.replace(" ", ""))
    except ValueError:
        raise UsageError(f"assembly.{key} {value!r}: not hex; write bytes as \"20 04 24 97\""
                         ) from None


def _int(m: Mapping[str, Any], key: str) -> int | None:
    value = m.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"assembly.{key}: give a whole number, not {value!r}")
    return value


def _bool(m: Mapping[str, Any], key: str, default: bool) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"assembly.{key}: give true or false, not {value!r}")
    return value


def assembly_from_map(name: str, m: Mapping[str, Any]) -> tuple[AssemblySpec, StructType | None]:
    """The spec and the declared layout (None: samples carry bytes only) of an ``assembly``
    map (``MAP_KEYS``); ``UsageError`` names the key and the fix."""
    unknown = sorted(set(m) - set(MAP_KEYS))
    if unknown:
        raise UsageError(f"assembly.{unknown[0]}: unknown key; use {', '.join(MAP_KEYS)}")
    kind_text = m.get("connection")
    try:
        kind = ConnectionKind(str(kind_text))
    except ValueError:
        raise UsageError(f"assembly.connection {kind_text!r}: use exclusive_owner, input_only"
                         " or listen_only") from None
    spec = AssemblySpec(
        kind, input=_int(m, "input"), output=_int(m, "output"), config=_int(m, "config"),
        config_data=_hex(m, "config_data") or b"", raw_path=_hex(m, "path"),
        input_size=_int(m, "input_size"), output_size=_int(m, "output_size"),
        ot_run_idle=_bool(m, "ot_run_idle", True), to_run_idle=_bool(m, "to_run_idle", False),
    )
    output_layout_from_map(name, m, spec)  # checked with the rest
    fields = _fields(m, "layout")
    return spec, (parse_layout(name, fields, spec.input_size) if fields is not None else None)


def output_layout_from_map(name: str, m: Mapping[str, Any],
                           spec: AssemblySpec) -> StructType | None:
    """The declared output layout of an ``assembly`` map (None: output images are bytes
    only); only an exclusive owner has one, and its fields fit ``output_size`` when given."""
    fields = _fields(m, "output_layout")
    if fields is None:
        return None
    if spec.heartbeat:
        raise UsageError(f"output_layout of {name!r}: a {spec.kind.value} connection sends no"
                         " output data (its O->T point is a heartbeat); leave output_layout"
                         " out, or use connection = \"exclusive_owner\"")
    return parse_layout(name, fields, spec.output_size, key="output_layout")


def _fields(m: Mapping[str, Any], key: str) -> list[Mapping[str, Any]] | None:
    fields = m.get(key)
    if fields is None:
        return None
    if not isinstance(fields, list) or not all(isinstance(f, Mapping) for f in fields):
        raise UsageError(f"assembly.{key}: give a list of fields, e.g. [{{name = \"speed\","
                         " type = \"INT\"}]")
    return fields
