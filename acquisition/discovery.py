"""Tag discovery: the explicit requests that learn a controller's tags, and the per-PLC catalog.

Owns, with no I/O (h11 style: the caller moves the bytes):

* building the explicit requests of a tag upload — Symbol object (0x6B) Get_Instance_Attribute_List
  (0x55) with continuation, for the controller scope and each ``Program:<name>`` scope
  (protocol.md 9.2, 10.2 rows 6-7); Template object (0x6C) Get_Attribute_List (0x03) and Read
  (0x4C) of each definition with continuation, nested templates first (protocol.md 9.3, 10.2
  rows 8-9);
* ``CatalogBuilder``: a sans-IO exchange in the one shape of ARCHITECTURE.md —
  ``take_outputs()`` gives ``CatalogRequest`` actions (the CIP request to send), ``on_reply()``
  takes the CIP reply — that ends in a ``CatalogDone`` notification carrying the ``TagCatalog``,
  or in a ``CatalogFailed`` notification carrying the ``DiscoveryError`` of a refusal;
* ``TagCatalog``: per PLC, tag name -> ``TagInfo`` (type, dims, element and tag byte size, T->O
  connection size and the 500-byte produced-tag check of protocol.md 7.3 / 9.4, compiled
  decoder); ``resolve()`` of members and array elements; ``check_datasize()`` for the seed API's
  ``datasize`` (tag bytes + 2) with an error that says the right value;
* change detection (a download, or a simulator restart with a changed UDT): a *shape
  fingerprint* over the symbol listing and the template attributes, which a cheap
  ``CatalogBuilder(read_definitions=False, ...)`` probe can recompute without reading a single
  template definition, plus a full fingerprint and ``TagCatalog.diff``.

Produced-ness: the Symbol object attributes do not say whether a tag is produced, nor its
Max Consumers (protocol.md 9.4, last paragraph); ``TagInfo.produced`` is therefore ``None``
("unknown") unless someone learned it from a Forward_Open and recorded it (``with_produced``).

Template definitions are read ``4 * attr4 - 21 - offset`` bytes at a time like pycomm3 (which is
known to work on real controllers; protocol.md 9.3 step 2), continuing while the status is 0x06.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from pyconpro.acquisition import cip, epath
from pyconpro.acquisition.errors import CipError, MalformedPacket, PyconproError, UsageError
from pyconpro.acquisition.logix_codec import compile_decoder
from pyconpro.acquisition.logix_objects import (
    PYCOMM3_TEMPLATE_ATTRIBUTES,
    SymbolAttribute,
    SymbolInstance,
    TemplateAttributes,
    TemplateReadRequest,
    encode_attribute_ids,
    parse_attribute_results,
    parse_symbol_instances,
    parse_template_definition,
    template_dependencies,
)
from pyconpro.acquisition.logix_objects import tag_type as _tag_type
from pyconpro.acquisition.logix_types import (
    PRODUCED_TAG_MAX_BYTES,
    SEQUENCE_COUNT_BYTES,
    ArrayType,
    DataTypeCode,
    LogixType,
    StructType,
    SymbolType,
    byte_size,
    element_size,
)

SYMBOL_CLASS = 0x6B
TEMPLATE_CLASS = 0x6C
STATUS_OK = 0x00
STATUS_PARTIAL = 0x06  # "reply data too large": more follows (protocol.md 8.1)

# What we ask of every symbol: name, type word, element size (so sizes need no template),
# dimensions, external access. Attribute 10 exists from firmware 18 on (protocol.md 9.2):
# pass ``LEGACY_SYMBOL_ATTRIBUTES`` to older controllers.
DISCOVERY_SYMBOL_ATTRIBUTES: tuple[int, ...] = tuple(int(a) for a in (
    SymbolAttribute.NAME,
    SymbolAttribute.TYPE,
    SymbolAttribute.ELEMENT_SIZE,
    SymbolAttribute.DIMENSIONS,
    SymbolAttribute.EXTERNAL_ACCESS,
))
LEGACY_SYMBOL_ATTRIBUTES: tuple[int, ...] = DISCOVERY_SYMBOL_ATTRIBUTES[:-1]
PROGRAM_PREFIX = "Program:"
# pycomm3 asks 4 * definition words - 21 bytes (protocol.md 9.3 step 2, 11.10).
TEMPLATE_READ_OVERHEAD = 21


@dataclass(frozen=True, slots=True)
class ListingLimits:
    """How much of a controller's tag table one listing may read (docs/worker.md "Listing
    limits"). A controller that never ends its symbol listing (or lists the same symbols
    again and again under new instance numbers), or whose template definitions never end,
    would otherwise fill the reader's memory: past a limit the listing stops with an error that
    names the PLC and the limit, and whoever asked backs off like after any failed listing.

    ``symbols``: entries listed, every scope together (a large controller has tens of
    thousands); ``templates``: structure templates read; ``bytes``: reply bytes of the symbol
    pages and the template definitions together."""

    symbols: int = 65_536
    templates: int = 8_192
    bytes: int = 8 << 20

    def exceeded(self, symbols: int, templates: int, nbytes: int) -> str | None:
        """Which limit the counts passed, in words, or None."""
        for count, limit, what in ((symbols, self.symbols, "symbol entries"),
                                   (templates, self.templates, "templates"),
                                   (nbytes, self.bytes, "bytes")):  # fmt: skip
            if count > limit:
                return f"the limit of {limit} {what}"
        return None


def listing_too_large(plc: str, passed: str) -> str:
    """The error of a listing stopped by ``ListingLimits``: which PLC, which limit, what to do."""
    who = f"PLC {plc}" if plc else "the controller"
    return (f"the tag listing of {who} passed {passed} (limits: docs/worker.md); stopped"
            " reading it: a controller that never ends its listing, or a very large tag table?"
            " give the tags' 'size' (or 'type') in the configuration: with a 'type' no listing"
            " is needed, with a 'size' they connect when it fails (samples undecoded)")


class ListingTooLarge(PyconproError):
    """A listing passed one of its ``ListingLimits``."""


class DiscoveryError(PyconproError):
    """A controller refused a discovery request; ``cause`` is the CipError, ``request`` says
    which one (e.g. ``symbol list of Program:Main from instance 0``)."""

    def __init__(self, request: str, cause: CipError | MalformedPacket | ListingTooLarge
                 ) -> None:
        self.request = request
        self.cause = cause
        super().__init__(f"{request}: {cause}")


# ---------------------------------------------------------------------------------------------
# Request builders (CIP message-router requests: service, path, data)
# ---------------------------------------------------------------------------------------------


def symbol_list_request(
    start_instance: int = 0,
    program: str | None = None,
    attributes: Sequence[int] = DISCOVERY_SYMBOL_ATTRIBUTES,
) -> bytes:
    """0x55 on the Symbol class from ``start_instance``; program scope is ``91 Program:<name>``
    in front of the class segment (protocol.md 9.2)."""
    segments: list[epath.Segment] = []
    if program is not None:
        segments.append(epath.SymbolicSegment(f"{PROGRAM_PREFIX}{program}"))
    segments += [epath.class_id(SYMBOL_CLASS), epath.instance_id(start_instance)]
    return cip.Request(cip.Service.GET_INSTANCE_ATTRIBUTE_LIST, epath.encode_path(segments),
                       encode_attribute_ids(attributes)).encode()


def _template_path(template_id: int) -> bytes:
    # pycomm3 always writes the 16-bit form for ids > 255 (protocol.md 10.2 row 8).
    return epath.encode_path((epath.class_id(TEMPLATE_CLASS), epath.instance_id(template_id)))


def template_attributes_request(template_id: int) -> bytes:
    """0x03 Get_Attribute_List of template attributes 4, 5, 2, 1 (protocol.md 9.3 step 1)."""
    return cip.Request(cip.Service.GET_ATTRIBUTE_LIST, _template_path(template_id),
                       encode_attribute_ids(PYCOMM3_TEMPLATE_ATTRIBUTES)).encode()


def template_read_request(template_id: int, offset: int, length: int) -> bytes:
    """0x4C Read of ``length`` definition bytes from ``offset`` (protocol.md 9.3 step 2)."""
    return cip.Request(cip.Service.READ_TAG, _template_path(template_id),
                       TemplateReadRequest(offset, length).encode()).encode()


# ---------------------------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------------------------


def type_name(t: LogixType) -> str:
    """``DINT``, ``REAL[10]``, ``Motor``, ``STRING``, ``Motor[2,3]``."""
    return t.name


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One tag as the controller lists it.

    ``type`` is None when its template could not be read (``problem`` says why); the sizes are
    still known then, from symbol attribute 7 (element size) and the dimensions.
    ``produced`` is None = unknown: the symbol attributes do not carry it (protocol.md 9.4).
    ``dims`` are the used dimensions as the controller lists them (attribute 8): the element
    count of a Read Tag; BOOL arrays count DWORDs there (``type`` says BOOL[32 n]).
    """

    name: str  # "Tag" or "Program:Main.Tag", as the controller spells it
    program: str | None
    instance_id: int
    type_word: int
    type: LogixType | None
    type_name: str
    dims: tuple[int, ...]
    element_size: int
    byte_size: int
    external_access: int | None = None
    problem: str | None = None
    produced: bool | None = None
    max_consumers: int | None = None

    @property
    def connection_size(self) -> int:
        """T->O connection size (the seed API's ``datasize``): tag bytes + 2 (protocol.md 6.2)."""
        return self.byte_size + SEQUENCE_COUNT_BYTES

    @property
    def produce_problem(self) -> str | None:
        """Why this tag cannot be a standard produced tag, as far as the listing tells; None
        when nothing speaks against it (it may still not be marked produced)."""
        if self.program is not None:
            return ("program-scoped: produced tags are controller-scoped (README: Configuring the "
                    "produced tag in Studio 5000); "
                    "move it to the controller scope")
        if self.byte_size > PRODUCED_TAG_MAX_BYTES:
            return (f"{self.byte_size} bytes: standard produced tags hold at most "
                    f"{PRODUCED_TAG_MAX_BYTES} bytes; split it into several "
                    "produced tags")
        if self.byte_size <= 0:
            return "0 bytes: nothing to produce"
        if self.produced is False:
            return "not marked produced in the controller"
        return None

    @property
    def decoder(self) -> Callable[[bytes], Any] | None:
        """Compiled tag-image decoder (cached per type by logix_types), None if type unknown."""
        return None if self.type is None else compile_decoder(self.type)

    def decode(self, data: bytes) -> Any:
        dec = self.decoder
        if dec is None:
            raise UsageError(f"tag {self.name}: type unknown ({self.problem}); only raw bytes")
        return dec(data)


@dataclass(frozen=True, slots=True)
class ResolvedTag:
    """A tag reference resolved inside its base tag: ``data[offset:offset + byte_size]`` of the
    base tag's image is this element/member (``bit`` for BOOL members packed in a host byte)."""

    name: str
    base: TagInfo
    type: LogixType
    offset: int
    byte_size: int
    bit: int | None = None

    def decode_from_base(self, base_image: bytes) -> Any:
        chunk = base_image[self.offset:self.offset + self.byte_size]
        if self.bit is not None:
            return bool(chunk[0] >> self.bit & 1) if chunk else False
        return compile_decoder(self.type)(chunk)


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # same name, different type / dims / size / template
    templates_changed: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.templates_changed)

    def __str__(self) -> str:
        parts = []
        for label, items in (("added", self.added), ("removed", self.removed),
                             ("changed", self.changed)):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        if self.templates_changed:
            parts.append("templates changed: "
                         + ", ".join(f"0x{t:03X}" for t in self.templates_changed))
        return "; ".join(parts) or "no change"


@dataclass(frozen=True)
class TagCatalog:
    """Every user tag of one controller, with types, sizes and decoders.

    Lookups are case-insensitive like Logix. ``shape_fingerprint`` covers the symbol listing and
    the template attributes (a cheap probe recomputes it, see ``CatalogBuilder``);
    ``fingerprint`` additionally covers every template definition byte.
    """

    tags: Mapping[str, TagInfo]
    templates: Mapping[int, StructType] = field(default_factory=dict)
    template_attributes: Mapping[int, TemplateAttributes] = field(default_factory=dict)
    template_problems: Mapping[int, str] = field(default_factory=dict)
    programs: tuple[str, ...] = ()
    shape_fingerprint: str = ""
    fingerprint: str = ""
    _index: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._index:
            object.__setattr__(self, "_index", {k.lower(): k for k in self.tags})

    def __iter__(self) -> Iterator[TagInfo]:
        return iter(self.tags.values())

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def get(self, name: str) -> TagInfo | None:
        key = self._index.get(name.lower())
        return None if key is None else self.tags[key]

    def __getitem__(self, name: str) -> TagInfo:
        info = self.get(name)
        if info is None:
            raise KeyError(self._unknown(name))
        return info

    def _unknown(self, name: str) -> str:
        near = [t for t in self.tags if t.lower().startswith(name.lower()[:3])][:5]
        hint = f"; similar: {', '.join(near)}" if near else ""
        return (f"tag {name!r} is not in the controller's tag list ({len(self.tags)} tags; "
                f"`pyconpro browse` lists them){hint}")

    # -- member / element references ------------------------------------------------------

    # One walk over the parsed reference, a branch per selector kind: splitting it would
    # scatter the offset arithmetic (complexity 16).
    def resolve(self, name: str) -> ResolvedTag:  # noqa: C901
        """Type, offset and size of ``Tag``, ``Tag[3]``, ``Udt.Member.Sub[1]``,
        ``Program:Main.Tag`` inside its base tag. Raises UsageError naming what is wrong."""
        ref = epath.parse_tag_name(name)
        base_name = (f"{PROGRAM_PREFIX}{ref.program}.{ref.base}" if ref.program else ref.base)
        base = self.get(base_name)
        if base is None:
            raise UsageError(self._unknown(base_name))
        if base.type is None:
            if len(ref.parts) == 1 and not ref.parts[0].indices:
                raise UsageError(f"tag {base.name}: type unknown ({base.problem})")
            raise UsageError(f"tag {base.name}: cannot resolve {name!r}, type unknown "
                             f"({base.problem})")
        t: LogixType = base.type
        offset = 0
        bit: int | None = None
        where = base.name
        for i, part in enumerate(ref.parts):
            if i:
                if not isinstance(t, StructType) or bit is not None:
                    raise UsageError(f"{where} is {t.name}, it has no member {part.name!r}")
                member = next((m for m in t.visible_members
                               if m.name.lower() == part.name.lower()), None)
                if member is None:
                    names = ", ".join(m.name for m in t.visible_members)
                    raise UsageError(f"{where} ({t.name}) has no member {part.name!r}; "
                                     f"members: {names}")
                where = f"{where}.{member.name}"
                t = member.type
                if member.bit is not None:  # predefined types number bits across a DINT host
                    offset += member.offset + member.bit // 8
                    bit = member.bit % 8
                else:
                    offset += member.offset
            if part.indices:
                if not isinstance(t, ArrayType):
                    raise UsageError(f"{where} is {t.name}, not an array")
                if len(part.indices) != len(t.dims):
                    raise UsageError(f"{where} has {len(t.dims)} dimension(s) {list(t.dims)}, "
                                     f"got indices {list(part.indices)}")
                for idx, dim in zip(part.indices, t.dims):
                    if idx >= dim:
                        raise UsageError(f"{where}: index {idx} out of range 0..{dim - 1}")
                flat = 0
                for idx, dim in zip(part.indices, t.dims):
                    flat = flat * dim + idx
                where = f"{where}[{','.join(map(str, part.indices))}]"
                if t.is_bool_array:
                    offset += flat // 8
                    bit = flat % 8
                    t = t.element
                else:
                    offset += flat * byte_size(t.element)
                    t = t.element
        size = 1 if bit is not None else byte_size(t)
        return ResolvedTag(name, base, t, offset, size, bit)

    # -- sizes -----------------------------------------------------------------------------

    def connection_size(self, name: str) -> int:
        """T->O size for consuming produced tag ``name``; UsageError if it cannot be one."""
        info = self[name]
        problem = info.produce_problem
        if problem is not None:
            raise UsageError(f"tag {info.name} cannot be consumed as a produced tag: {problem}")
        return info.connection_size

    def check_datasize(self, name: str, datasize: int | None) -> int:
        """The seed API's ``datasize`` (tag bytes + 2): returns the right value; if one was given
        and it is wrong, UsageError says the right one."""
        right = self.connection_size(name)
        if datasize is not None and datasize != right:
            info = self[name]
            raise UsageError(
                f"datasize={datasize} is wrong for tag {info.name} ({info.type_name}, "
                f"{info.byte_size} bytes): use datasize={right} (tag bytes + 2), or omit "
                "datasize and it is learned from the controller"
            )
        return right

    # -- change detection ------------------------------------------------------------------

    def diff(self, newer: TagCatalog) -> CatalogDiff:
        old = {k.lower(): v for k, v in self.tags.items()}
        new = {k.lower(): v for k, v in newer.tags.items()}
        changed = []
        templates_changed = sorted(
            tid for tid in set(self.templates) | set(newer.templates)
            if _template_key(self, tid) != _template_key(newer, tid)
        )
        for k in sorted(old.keys() & new.keys()):
            a, b = old[k], new[k]
            if (_symbol_key(a) != _symbol_key(b)
                    or (b.type_word & 0x8000 and (b.type_word & 0x0FFF) in templates_changed)
                    or a.type != b.type):
                changed.append(b.name)
        return CatalogDiff(
            added=tuple(new[k].name for k in sorted(new.keys() - old.keys())),
            removed=tuple(old[k].name for k in sorted(old.keys() - new.keys())),
            changed=tuple(changed),
            templates_changed=tuple(templates_changed),
        )

    def probe(self, *, attributes: Sequence[int] = DISCOVERY_SYMBOL_ATTRIBUTES,
              programs: bool | Iterable[str] = True) -> CatalogBuilder:
        """A cheap change check: lists symbols and reads template attributes (not definitions)
        for every template this catalog knows; ``probe.result().shape_fingerprint`` differs from
        ``self.shape_fingerprint`` iff the listing or some template's attributes changed."""
        return CatalogBuilder(attributes=attributes, programs=programs, read_definitions=False,
                              extra_templates=set(self.template_attributes)
                              | set(self.template_problems))

    def with_produced(self, name: str, produced: bool,
                      max_consumers: int | None = None) -> TagCatalog:
        """A copy recording what a Forward_Open told us about ``name``."""
        info = self[name]
        tags = dict(self.tags)
        tags[info.name] = replace(info, produced=produced, max_consumers=max_consumers)
        return replace(self, tags=tags, _index={})


def _symbol_key(t: TagInfo) -> tuple[Any, ...]:
    return (t.name.lower(), t.type_word, t.dims, t.element_size, t.external_access)


def _template_key(cat: TagCatalog, tid: int) -> tuple[Any, ...]:
    return (cat.template_attributes.get(tid), cat.templates.get(tid),
            cat.template_problems.get(tid))


def _canonical(x: Any) -> Any:
    # repr() of an IntEnum member differs from the int's; fingerprints must not depend on
    # whether a value came from a parser (int) or from an enum constant.
    if isinstance(x, int) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, (tuple, list)):
        return tuple(_canonical(i) for i in x)
    if isinstance(x, TemplateAttributes):
        return ("TemplateAttributes", x.definition_size, x.structure_size, x.member_count,
                x.handle)
    return x


def _hash(items: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(repr(_canonical(item)).encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# The exchange
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogRequest:
    """Action: send this CIP request and feed its reply to ``CatalogBuilder.on_reply``."""

    message: bytes
    what: str  # ``CatalogBuilder.describe()``: "symbol list of controller scope from ..."


@dataclass(frozen=True, slots=True)
class CatalogDone:
    """Notification: the upload is over."""

    catalog: TagCatalog


@dataclass(frozen=True, slots=True)
class CatalogFailed:
    """Notification: the upload ended on a refusal or an unusable reply; ``error`` names the
    request (a shell raises it). Nothing is outstanding afterwards."""

    error: DiscoveryError


CatalogOutput = CatalogRequest | CatalogDone | CatalogFailed


class _Step(Enum):
    SYMBOLS = "symbols"
    TEMPLATE_ATTRIBUTES = "template attributes"
    TEMPLATE_READ = "template read"
    DONE = "done"
    FAILED = "failed"


@dataclass(slots=True)
class _Template:
    attributes: TemplateAttributes | None = None
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False
    problem: str | None = None


class CatalogBuilder:
    """Sans-IO tag upload. Drive it with any transport::

        builder = CatalogBuilder()        # the first request is queued at once
        while outs := builder.take_outputs():
            for out in outs:
                if isinstance(out, CatalogRequest):
                    builder.on_reply(send_and_receive(out.message))  # cip.Reply or bytes
                elif isinstance(out, CatalogFailed):
                    raise out.error
        catalog = builder.result()          # or CatalogDone.catalog

    Order: controller-scope symbols (continuing from last instance + 1 while status 0x06), then
    each program's symbols (programs named by ``Program:<name>`` entries, or the given names;
    ``programs=False`` skips them), then for each structure type used by a tag: attributes,
    definition (continuing at offset + bytes received while 0x06), and the same for nested
    templates it names. Structures are built nested-first. A template that cannot be read does
    not fail the upload: its tags get ``type=None`` and a ``problem``; any other refusal, and a
    reply that does not parse or answers another service, ends it with ``CatalogFailed``
    carrying a ``DiscoveryError`` that names the request.

    ``read_definitions=False`` stops after the template attributes (a change probe, see
    ``TagCatalog.probe``); ``extra_templates`` are probed even if no tag names them. The
    upload is bounded by ``limits`` (``ListingLimits``): past one it ends with ``CatalogFailed``
    whose cause is ``ListingTooLarge``, naming ``plc`` (a label for messages) and the limit.
    """

    def __init__(
        self,
        *,
        attributes: Sequence[int] = DISCOVERY_SYMBOL_ATTRIBUTES,
        programs: bool | Iterable[str] = True,
        read_definitions: bool = True,
        extra_templates: Iterable[int] = (),
        plc: str = "",
        limits: ListingLimits = ListingLimits(),
    ) -> None:
        attrs = tuple(int(a) for a in attributes)
        for needed in (SymbolAttribute.NAME, SymbolAttribute.TYPE, SymbolAttribute.DIMENSIONS):
            if needed not in attrs:
                raise UsageError(f"symbol attributes {attrs}: discovery needs attribute "
                                 f"{int(needed)} ({needed.name})")
        self._attrs = attrs
        self._auto_programs = programs is True
        self._scopes: list[str | None] = [None]
        if programs is not True and programs is not False:
            self._scopes += list(programs)
        self._scope_index = 0
        self._start = 0
        self._symbols: dict[str | None, list[SymbolInstance]] = {}
        self._found_programs: list[str] = []
        self._read_definitions = read_definitions
        self._templates: dict[int, _Template] = {}
        self._template_queue: list[int] = sorted(set(extra_templates))
        self._current: int | None = None
        self._step = _Step.SYMBOLS
        self._request: bytes | None = self._symbol_request()
        self.requests_sent = 0
        self._plc = plc
        self._limits = limits
        self._entries = 0  # symbol entries listed, every scope
        self._bytes = 0  # reply bytes of symbol pages and template definitions
        self.error: DiscoveryError | None = None
        self._outputs: list[CatalogOutput] = [CatalogRequest(self._request, self.describe())]

    # -- public ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._step is _Step.DONE

    def take_outputs(self) -> list[CatalogOutput]:
        out, self._outputs = self._outputs, []
        return out

    @property
    def outstanding(self) -> bytes | None:
        """The request whose reply ``on_reply`` expects (None when done)."""
        return self._request

    def describe(self) -> str:
        """What the current request asks, for error messages and logs."""
        if self._step is _Step.SYMBOLS:
            scope = self._scopes[self._scope_index]
            where = "controller scope" if scope is None else f"{PROGRAM_PREFIX}{scope}"
            return f"symbol list of {where} from instance {self._start}"
        if self._step is _Step.DONE:
            return "discovery (done)"
        if self._step is _Step.FAILED:
            return "discovery (failed)"
        assert self._current is not None
        if self._step is _Step.TEMPLATE_ATTRIBUTES:
            return f"attributes of template 0x{self._current:03X}"
        return (f"definition of template 0x{self._current:03X} from byte "
                f"{len(self._templates[self._current].data)}")

    def on_reply(self, reply: cip.Reply | bytes) -> None:
        """Feed the reply to the outstanding request. A refusal that ends the upload, bytes
        that do not parse or a reply to another service end it with ``CatalogFailed``."""
        if self._request is None:
            state = "failed" if self._step is _Step.FAILED else "is done"
            raise UsageError(f"discovery {state}: no request is outstanding")
        try:
            if not isinstance(reply, cip.Reply):
                reply = cip.Reply.decode(reply)
            expected = self._request[0]
            if reply.service != expected:
                raise MalformedPacket(f"a reply to service 0x{expected:02X}, got reply service "
                                      f"0x{reply.service | 0x80:02X}", 0, self.describe())
            self.requests_sent += 1
            self._bytes += len(reply.data)
            if self._step is _Step.SYMBOLS:
                self._on_symbols(reply)
            elif self._step is _Step.TEMPLATE_ATTRIBUTES:
                self._on_template_attributes(reply)
            elif self._step is _Step.TEMPLATE_READ:
                self._on_template_read(reply)
            passed = self._limits.exceeded(self._entries, len(self._templates), self._bytes)
            if passed is not None:
                raise DiscoveryError(self.describe(),
                                     ListingTooLarge(listing_too_large(self._plc, passed)))
        except MalformedPacket as err:
            self._fail(DiscoveryError(self.describe(), err))
            return
        except DiscoveryError as err:
            self._fail(err)
            return
        self._request = self._next()
        if self._request is not None:
            self._outputs.append(CatalogRequest(self._request, self.describe()))
        else:
            self._outputs.append(CatalogDone(self.result()))

    def _fail(self, error: DiscoveryError) -> None:
        self.error = error
        self._request = None
        self._current = None
        self._step = _Step.FAILED
        self._outputs.append(CatalogFailed(error))

    def result(self) -> TagCatalog:
        """The catalog once done; raises the ``DiscoveryError`` of a failed upload."""
        if self.error is not None:
            raise self.error
        if not self.done:
            raise UsageError(f"discovery not finished (waiting for: {self.describe()})")
        return _build_catalog(self._symbols, self._templates, tuple(self._program_names()),
                              self._attrs)

    # -- steps -----------------------------------------------------------------------------

    def _program_names(self) -> list[str]:
        return [s for s in self._scopes[1:] if s is not None]

    def _symbol_request(self) -> bytes:
        return symbol_list_request(self._start, self._scopes[self._scope_index], self._attrs)

    def _on_symbols(self, reply: cip.Reply) -> None:
        scope = self._scopes[self._scope_index]
        if reply.status not in (STATUS_OK, STATUS_PARTIAL):
            raise DiscoveryError(self.describe(), reply.error())
        try:
            batch = parse_symbol_instances(reply.data, self._attrs)
        except MalformedPacket as err:
            raise DiscoveryError(self.describe(), err) from None
        self._symbols.setdefault(scope, []).extend(batch)
        self._entries += len(batch)
        if scope is None and self._auto_programs:
            for sym in batch:
                name = sym.name or ""
                if name.startswith(PROGRAM_PREFIX) and name[len(PROGRAM_PREFIX):]:
                    self._scopes.append(name[len(PROGRAM_PREFIX):])
        if reply.status == STATUS_PARTIAL:
            if not batch:
                raise DiscoveryError(self.describe(), MalformedPacket(
                    "at least one symbol in a partial (0x06) reply", 0, "symbol list"))
            last = max(s.instance_id for s in batch)
            if last < self._start:
                raise DiscoveryError(self.describe(), MalformedPacket(
                    f"instances from {self._start} on, got up to {last}", 0, "symbol list"))
            self._start = last + 1
            return
        self._scope_index += 1
        self._start = 0

    def _on_template_attributes(self, reply: cip.Reply) -> None:
        assert self._current is not None
        tpl = self._templates[self._current]
        if reply.status != STATUS_OK:
            tpl.problem = f"{self.describe()} refused: {reply.error()}"
            tpl.complete = True
            return
        try:
            tpl.attributes = TemplateAttributes.from_results(parse_attribute_results(reply.data))
        except MalformedPacket as err:
            tpl.problem = f"{self.describe()}: {err}"
            tpl.complete = True
            return
        if not self._read_definitions:
            tpl.complete = True

    def _on_template_read(self, reply: cip.Reply) -> None:
        assert self._current is not None
        tid = self._current
        tpl = self._templates[tid]
        assert tpl.attributes is not None
        if reply.status not in (STATUS_OK, STATUS_PARTIAL):
            tpl.problem = f"{self.describe()} refused: {reply.error()}"
            tpl.complete = True
            return
        tpl.data += reply.data
        if reply.status == STATUS_PARTIAL:
            if not reply.data or self._read_length(tpl) <= 0:
                tpl.problem = (f"{self.describe()}: the controller keeps answering 0x06 beyond "
                               f"the {4 * tpl.attributes.definition_size}-byte definition")
                tpl.complete = True
            return
        tpl.complete = True
        try:
            deps = template_dependencies(bytes(tpl.data), tpl.attributes.member_count)
        except MalformedPacket as err:
            tpl.problem = f"definition of template 0x{tid:03X}: {err}"
            return
        for dep in sorted(deps):
            if dep not in self._templates and dep not in self._template_queue:
                self._template_queue.append(dep)

    @staticmethod
    def _read_length(tpl: _Template) -> int:
        assert tpl.attributes is not None
        return 4 * tpl.attributes.definition_size - TEMPLATE_READ_OVERHEAD - len(tpl.data)

    def _next(self) -> bytes | None:
        if self._step is _Step.SYMBOLS:
            if self._scope_index < len(self._scopes):
                return self._symbol_request()
            for syms in self._symbols.values():
                for sym in syms:
                    if sym.is_user_tag and sym.type_word is not None:
                        st = SymbolType.decode(sym.type_word)
                        if st.is_struct and st.template_id not in self._template_queue:
                            self._template_queue.append(st.template_id)
        if self._current is not None:
            tpl = self._templates[self._current]
            if not tpl.complete:
                self._step = _Step.TEMPLATE_READ
                return template_read_request(self._current, len(tpl.data),
                                             max(self._read_length(tpl), 1))
        while self._template_queue:
            tid = self._template_queue.pop(0)
            if tid in self._templates:
                continue
            self._current = tid
            self._templates[tid] = _Template()
            self._step = _Step.TEMPLATE_ATTRIBUTES
            return template_attributes_request(tid)
        self._current = None
        self._step = _Step.DONE
        return None


# ---------------------------------------------------------------------------------------------
# From raw listings to the catalog
# ---------------------------------------------------------------------------------------------


def build_structs(
    definitions: Mapping[int, tuple[TemplateAttributes, bytes]],
) -> tuple[dict[int, StructType], dict[int, str]]:
    """Parse template definitions nested-first; returns (structs, problems by template id).

    A template whose definition is malformed, names a template that is missing or failed, or
    takes part in a cycle gets a problem instead of a structure.
    """
    structs: dict[int, StructType] = {}
    problems: dict[int, str] = {}
    visiting: set[int] = set()

    def build(tid: int) -> StructType:
        if tid in structs:
            return structs[tid]
        if tid in problems:
            raise LookupError(tid)
        if tid not in definitions:
            problems[tid] = f"template 0x{tid:03X} was not read"
            raise LookupError(tid)
        if tid in visiting:
            problems[tid] = f"template 0x{tid:03X} contains itself (cycle)"
            raise LookupError(tid)
        visiting.add(tid)
        attrs, data = definitions[tid]
        try:
            for dep in sorted(template_dependencies(data, attrs.member_count)):
                try:
                    build(dep)
                except LookupError:
                    problems.setdefault(tid, f"nested template 0x{dep:03X}: "
                                             f"{problems.get(dep, 'unavailable')}")
                    raise
            st = parse_template_definition(data, attrs, instance_id=tid, lookup=structs.__getitem__)
        except MalformedPacket as err:
            problems[tid] = f"definition of template 0x{tid:03X}: {err}"
            raise LookupError(tid) from None
        finally:
            visiting.discard(tid)
        structs[tid] = st
        return st

    for tid in sorted(definitions):
        try:
            build(tid)
        except LookupError:
            pass
    return structs, problems


def _build_catalog(
    symbols: Mapping[str | None, Sequence[SymbolInstance]],
    templates: Mapping[int, _Template],
    programs: tuple[str, ...],
    attrs: tuple[int, ...],
) -> TagCatalog:
    definitions = {tid: (t.attributes, bytes(t.data)) for tid, t in templates.items()
                   if t.attributes is not None and t.complete and t.problem is None and t.data}
    structs, problems = build_structs(definitions)
    for tid, t in templates.items():
        if t.problem is not None:
            problems[tid] = t.problem
    attributes = {tid: t.attributes for tid, t in templates.items() if t.attributes is not None}
    tags: dict[str, TagInfo] = {}
    for scope, syms in symbols.items():
        for sym in syms:
            if not sym.is_user_tag or sym.type_word is None:
                continue
            info = _tag_info(sym, scope, structs, problems, attributes)
            tags[info.name] = info
    shape = _hash(
        [("attrs", tuple(int(a) for a in attrs))]
        + sorted(_symbol_key(t) for t in tags.values())
        + sorted((tid, a) for tid, a in attributes.items())
        + sorted((tid, p.split(":")[0]) for tid, p in problems.items() if tid not in attributes)
    )
    full = _hash([shape] + sorted((tid, t.data.hex()) for tid, t in templates.items()))
    return TagCatalog(tags=tags, templates=structs, template_attributes=attributes,
                      template_problems=problems, programs=programs,
                      shape_fingerprint=shape, fingerprint=full)


def _tag_info(
    sym: SymbolInstance,
    scope: str | None,
    structs: Mapping[int, StructType],
    problems: Mapping[int, str],
    attributes: Mapping[int, TemplateAttributes],
) -> TagInfo:
    name = sym.name or ""
    full = name if scope is None else f"{PROGRAM_PREFIX}{scope}.{name}"
    assert sym.type_word is not None
    st = SymbolType.decode(sym.type_word)
    dims = tuple(d for d in (sym.dims or (0, 0, 0))[: st.dims])
    problem: str | None = None
    t: LogixType | None = None
    try:
        t = _tag_type(sym, structs.__getitem__)
    except LookupError:
        problem = problems.get(st.template_id, f"template 0x{st.template_id:03X} not read")
    except (MalformedPacket, UsageError) as err:
        problem = str(err)
    # Element size: attribute 7 when listed, else from the type / template attribute 5.
    elem = sym.element_size
    if elem is None:
        if t is not None:
            elem = element_size(t)
        elif st.is_struct and st.template_id in attributes:
            elem = attributes[st.template_id].structure_size
        elif not st.is_struct and st.code in DataTypeCode._value2member_map_:
            elem = DataTypeCode(st.code).size or 0
        else:
            elem = 0
    size = elem * math.prod(dims) if dims else elem
    if t is not None and byte_size(t) != size:
        problem = (f"the controller lists {size} bytes ({elem} per element) but the "
                   f"{t.name} layout is {byte_size(t)} bytes; using the controller's size")
        t = None
    if t is not None:
        tname = type_name(t)
    elif st.is_struct:
        tname = f"<template 0x{st.template_id:03X}>" + (f"[{','.join(map(str, dims))}]"
                                                        if dims else "")
    else:
        code = (DataTypeCode(st.code).name if st.code in DataTypeCode._value2member_map_
                else f"0x{st.code:02X}")
        tname = code + (f"[{','.join(map(str, dims))}]" if dims else "")
    return TagInfo(
        name=full, program=scope, instance_id=sym.instance_id, type_word=sym.type_word,
        type=t, type_name=tname, dims=dims, element_size=elem, byte_size=size,
        external_access=None if sym.external_access is None else int(sym.external_access),
        problem=problem,
    )


def catalog_from_listing(
    symbols: Sequence[SymbolInstance],
    structs: Mapping[int, StructType] = {},
    *,
    program_symbols: Mapping[str, Sequence[SymbolInstance]] = {},
) -> TagCatalog:
    """A catalog from already-known listings and structures (tests, offline tools): no
    fingerprint of definition bytes beyond what the structures re-encode to."""
    from pyconpro.acquisition.logix_objects import encode_template_definition

    templates: dict[int, _Template] = {}
    for tid, st in structs.items():
        templates[tid] = _Template(TemplateAttributes.for_struct(st),
                                   bytearray(encode_template_definition(st)), True)
    scoped: dict[str | None, Sequence[SymbolInstance]] = {None: symbols}
    scoped.update(program_symbols)
    return _build_catalog(scoped, templates, tuple(program_symbols),
                          DISCOVERY_SYMBOL_ATTRIBUTES)
