"""Learn a tag's Logix type and byte size by explicit messaging (protocol.md 9.2-9.4).

A ``TagResolver`` is a small request/reply sequence driven by the worker over the PLC's
encapsulation session (unconnected SendRRData, so no class-3 connection is needed):

1. Symbol object 0x6B, Get_Instance_Attribute_List (0x55) with attributes 1, 2, 7, 8 (name,
   type word, element size, dimensions), from instance 0, continued from last + 1 while the
   status is 0x06, until the tag is found (case-insensitive, like Logix) or the list ends;
2. for a structure: Template 0x6C Get_Attribute_List (0x03) then Read (0x4C) of the definition,
   for the tag's template and every nested one.

The result is the full ``LogixType`` (atomic, array, or UDT) and ``tag_bytes`` per 9.4.
Everything is pure: ``first()`` returns the first CIP request, ``on_reply(reply)`` returns the
next request or a ``Resolved`` / ``NotResolved`` result.

This is the one-tag lookup the I/O worker runs before a Forward_Open (it stops at the tag and
fetches only the templates that tag needs); ``acquisition.discovery`` is the full upload that
builds a whole ``TagCatalog`` (browse, the in-process API's datasize check).
"""

from __future__ import annotations

from dataclasses import dataclass

from acquisition import cip, epath, logix_objects
from acquisition.errors import MalformedPacket, UsageError
from acquisition.logix_types import LogixType, StructType

SYMBOL_CLASS = 0x6B
TEMPLATE_CLASS = 0x6C
_ATTRS = (1, 2, 7, 8)
_TEMPLATE_ATTRS = (4, 5, 2, 1)


@dataclass(frozen=True, slots=True)
class Resolved:
    tag_type: LogixType
    tag_bytes: int


@dataclass(frozen=True, slots=True)
class NotResolved:
    message: str
    permanent: bool


Result = Resolved | NotResolved


def _path(cls: int, instance: int) -> bytes:
    return epath.encode_path((epath.class_id(cls), epath.instance_id(instance)))


class TagResolver:
    def __init__(self, tag: str, max_requests: int = 2000) -> None:
        self.tag = tag
        self.requests = 0
        self.max_requests = max_requests
        self._want = tag.casefold()
        self._symbol: logix_objects.SymbolInstance | None = None
        self._templates: dict[int, StructType] = {}
        self._todo: list[int] = []  # template ids still to fetch (stack)
        self._current: int | None = None
        self._attrs: logix_objects.TemplateAttributes | None = None
        self._definition = bytearray()
        self._step = "symbols"

    # -------------------------------------------------------------- requests

    def _request(self, message: bytes) -> bytes:
        self.requests += 1
        return message

    def first(self) -> bytes:
        return self._symbols_from(0)

    def _symbols_from(self, instance: int) -> bytes:
        self._step = "symbols"
        return self._request(cip.Request(cip.Service.GET_INSTANCE_ATTRIBUTE_LIST,
                                         _path(SYMBOL_CLASS, instance),
                                         logix_objects.encode_attribute_ids(_ATTRS)).encode())

    def _template_attrs(self, template_id: int) -> bytes:
        self._step = "template attributes"
        self._current = template_id
        self._definition = bytearray()
        return self._request(cip.Request(cip.Service.GET_ATTRIBUTE_LIST,
                                         _path(TEMPLATE_CLASS, template_id),
                                         logix_objects.encode_attribute_ids(_TEMPLATE_ATTRS)
                                         ).encode())

    def _template_read(self) -> bytes:
        assert self._attrs is not None and self._current is not None
        self._step = "template read"
        total = self._attrs.definition_size * 4 - 21  # pycomm3's count (protocol.md 9.3)
        remaining = max(total - len(self._definition), 1)
        req = logix_objects.TemplateReadRequest(len(self._definition), min(remaining, 0xFFFF))
        return self._request(cip.Request(cip.Service.READ_TAG, _path(TEMPLATE_CLASS,
                                                                     self._current),
                                         req.encode()).encode())

    # -------------------------------------------------------------- replies

    def on_reply(self, reply: cip.Reply) -> bytes | Result:
        if self.requests >= self.max_requests:
            return NotResolved(f"tag {self.tag!r}: gave up after {self.requests} requests",
                               False)
        try:
            if self._step == "symbols":
                return self._on_symbols(reply)
            if self._step == "template attributes":
                return self._on_template_attrs(reply)
            return self._on_template_read(reply)
        except (MalformedPacket, UsageError) as exc:
            return NotResolved(f"tag {self.tag!r}: unusable {self._step} reply: {exc}", False)

    def _on_symbols(self, reply: cip.Reply) -> bytes | Result:
        if reply.status not in (0x00, 0x06):
            return NotResolved(
                f"cannot list the controller's tags to size {self.tag!r}: "
                f"{reply.error()}; give the tag's 'size' (or 'type') in the configuration",
                reply.status in (0x08, 0x05, 0x04))
        instances = logix_objects.parse_symbol_instances(reply.data, _ATTRS)
        for inst in instances:
            if inst.name is not None and inst.name.casefold() == self._want:
                self._symbol = inst
                return self._next_template_or_done()
        if reply.status == 0x06 and instances:
            return self._symbols_from(instances[-1].instance_id + 1)
        return NotResolved(f"tag {self.tag!r} is not in the controller's tag list: check the"
                           " name (produced tags are controller-scoped)", True)

    def _lookup(self, template_id: int) -> StructType:
        try:
            return self._templates[template_id]
        except KeyError:
            raise LookupError(template_id) from None

    def _next_template_or_done(self) -> bytes | Result:
        sym = self._symbol
        assert sym is not None
        st = sym.symbol_type
        if st.is_struct and st.template_id not in self._templates and not self._todo:
            self._todo.append(st.template_id)
        while self._todo:
            tid = self._todo[-1]
            if tid in self._templates:
                self._todo.pop()
                continue
            return self._template_attrs(tid)
        t = logix_objects.tag_type(sym, self._lookup)
        size = logix_objects.tag_byte_size(
            sym, lambda tid: self._templates[tid].size)
        return Resolved(t, size)

    def _on_template_attrs(self, reply: cip.Reply) -> bytes | Result:
        if reply.status != 0:
            return NotResolved(f"template {self._current} of {self.tag!r}: {reply.error()}",
                               False)
        results = logix_objects.parse_attribute_results(reply.data)
        self._attrs = logix_objects.TemplateAttributes.from_results(results)
        return self._template_read()

    def _on_template_read(self, reply: cip.Reply) -> bytes | Result:
        if reply.status not in (0x00, 0x06):
            return NotResolved(f"template {self._current} of {self.tag!r}: {reply.error()}",
                               False)
        self._definition += reply.data
        if reply.status == 0x06 and reply.data:
            return self._template_read()
        assert self._attrs is not None and self._current is not None
        data = bytes(self._definition)
        deps = logix_objects.template_dependencies(data, self._attrs.member_count)
        missing = [d for d in deps if d not in self._templates and d not in self._todo]
        if missing:  # fetch nested structures first, then come back to this one
            self._todo.extend(missing)
            return self._template_attrs(self._todo[-1])
        st = logix_objects.parse_template_definition(
            data, self._attrs, instance_id=self._current, lookup=self._lookup)
        self._templates[self._current] = st
        self._todo = [t for t in self._todo if t != self._current]
        return self._next_template_or_done()
