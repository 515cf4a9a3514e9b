"""Learn a tag's Logix type and byte size by explicit messaging (protocol.md 9.2-9.4).

A ``TagResolver`` is a small request/reply sequence driven by the worker over the PLC's
encapsulation session (unconnected SendRRData, so no class-3 connection is needed):

1. Symbol object 0x6B, Get_Instance_Attribute_List (0x55) with attributes 1, 2, 7, 8 (name,
   type word, element size, dimensions), from instance 0, continued from last + 1 while the
   status is 0x06, until the tag is found (case-insensitive, like Logix) or the list ends;
2. for a structure: Template 0x6C Get_Attribute_List (0x03) then Read (0x4C) of the definition,
   for the tag's template and every nested one.

The result is the full ``LogixType`` (atomic, array, or UDT) and ``tag_bytes`` per 9.4.
Everything is pure and has the one shape of ARCHITECTURE.md: ``start()`` and
``on_reply(reply)`` return nothing; ``take_outputs()`` gives ``ResolverRequest`` actions (the
CIP request to send) and, at the end, one ``Resolved`` / ``NotResolved`` result.

``TagResolver`` is the one-tag lookup (it stops at the tag and fetches only the templates that
tag needs). ``TypeCache`` is what the I/O worker runs: the same requests, shared by every
consumer of one PLC (one listing in flight serves every waiting consumer, symbols and templates
seen are kept until the PLC's tag table may have changed), so N consumers cost O(symbol pages +
templates) requests instead of O(N x pages). ``acquisition.discovery`` is the full upload that
builds a whole ``TagCatalog`` (browse, the in-process API's datasize check).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pyconpro.acquisition import cip, epath, logix_objects
from pyconpro.acquisition.discovery import ListingLimits, listing_too_large
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.logix_types import LogixType, StructType

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


@dataclass(frozen=True, slots=True)
class ResolverRequest:
    """Action: send this CIP request and feed its reply to ``TagResolver.on_reply``."""

    message: bytes


ResolverOutput = ResolverRequest | Resolved | NotResolved


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
        self._outputs: list[ResolverOutput] = []
        self.result: Result | None = None

    def take_outputs(self) -> list[ResolverOutput]:
        out, self._outputs = self._outputs, []
        return out

    def _emit(self, step: bytes | Result) -> None:
        if isinstance(step, bytes):
            self._outputs.append(ResolverRequest(step))
        else:
            self.result = step
            self._outputs.append(step)

    # -------------------------------------------------------------- requests

    def _request(self, message: bytes) -> bytes:
        self.requests += 1
        return message

    def start(self) -> None:
        """Ask for the first page of the symbol listing."""
        self._emit(self._symbols_from(0))

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

    def on_reply(self, reply: cip.Reply) -> None:
        """The reply to the last ``ResolverRequest``."""
        if self.result is not None:
            return  # done: nothing was asked
        self._emit(self._on_reply(reply))

    def _on_reply(self, reply: cip.Reply) -> bytes | Result:
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


# ------------------------------------------------------------------------------------------
# The per-PLC type cache: one shared lookup for every consumer of a PLC
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """Action: send this CIP request over the PLC's session; answer with
    ``TypeCache.on_reply(token, reply)`` or ``TypeCache.on_error(token, reason)``."""

    token: int
    message: bytes
    what: str  # for logs: "symbols from instance 0", "template 0x101 attributes", ...


@dataclass(frozen=True, slots=True)
class Answer:
    """Notification: the result for one waiter, learned from the cache of ``generation``."""

    waiter: Hashable
    tag: str
    result: Result
    generation: int


TypeCacheOutput = CacheRequest | Answer


class TypeCache:
    """What one PLC's tag table told us, shared by every consumer of that PLC.

    ``TagResolver`` walks the symbol table from instance 0 for every tag it is asked about, so
    N consumers of one PLC cost N listings. The cache keeps every symbol and template it has
    seen and serves all lookups of one PLC with at most one request in flight:

    Inputs return nothing; ``take_outputs()`` drains, in order, ``Answer`` notifications and
    ``CacheRequest`` actions (the one shape of ARCHITECTURE.md; no timers: the session that
    carries the requests times them out):

    * ``resolve(tag, waiter)`` answers a hit at once (the symbol and every template it needs are
      known, or the listing is complete and the tag is not in it); a miss queues ``waiter``;
    * after every input the next request goes out when none is in flight and something is
      missing: first the templates of waiters whose symbol is known (nested ones first, each
      read once), then the next page of the symbol listing (0x55, continued from the last
      instance + 1; the listing stops as soon as every waiter's symbol is known and resumes
      where it stopped for a later miss). One listing page serves every waiter at once;
    * ``on_reply`` / ``on_error`` answer every waiter that is now settled.

    So N consumers cost O(symbol pages + templates) requests, not O(N x pages).

    A listing is bounded (``discovery.ListingLimits``: symbol entries, templates, bytes; and
    ``max_requests``): past a limit every waiter fails (transient: it backs off and asks again)
    with a message naming ``plc`` and the limit, and what was read is dropped.

    ``invalidate()`` forgets everything (the controller's tag table may have changed: a lost
    session, a size reject) and starts a new ``generation``; a reply to a request of an older
    generation is ignored, waiters are kept and served from the new one. A waiter that doubts
    its answer (``refresh_for(generation)``) invalidates only if its answer came from the
    current generation: the first of N consumers that notice a download refills the cache,
    the other N - 1 share the refill.

    Pure: no I/O, no clock (protocol.md 9.2-9.4; the same requests as ``TagResolver``).
    """

    def __init__(self, *, max_requests: int = 5000, plc: str = "",
                 limits: ListingLimits = ListingLimits()) -> None:
        self.max_requests = max_requests  # per generation: a runaway listing gives up
        self.plc = plc  # for messages: "PLC 10.0.0.5:44818"
        self.limits = limits
        self.given_up = 0  # listings stopped by a limit
        self.generation = 1
        self.requests = 0  # every request handed out, all generations
        self.hits = 0
        self.misses = 0
        self.listings = 0  # symbol listings started from instance 0
        self.invalidations = 0
        self._generation_requests = 0
        self._token = 0
        self._inflight: tuple[int, str] | None = None  # (token, step)
        self._waiting: dict[Hashable, str] = {}
        self._outputs: list[TypeCacheOutput] = []
        self._reset()

    def take_outputs(self) -> list[TypeCacheOutput]:
        out, self._outputs = self._outputs, []
        return out

    def _answer_all(self, answers: list[Answer]) -> None:
        self._outputs.extend(answers)
        self._request_next()

    def _reset(self) -> None:
        self._symbols: dict[str, logix_objects.SymbolInstance] = {}
        self._entries = 0  # symbol entries listed (a controller may repeat names)
        self._bytes = 0  # reply bytes of symbol pages and template definitions
        self._next_instance = 0
        self._complete = False
        self._structs: dict[int, StructType] = {}
        # template fetch in progress: stack of ids (nested ones pushed on top), the attributes
        # and definition bytes of the top one, definitions read whose nested ones are missing
        self._stack: list[int] = []
        self._attrs: logix_objects.TemplateAttributes | None = None
        self._definition = bytearray()
        self._raw: dict[int, tuple[logix_objects.TemplateAttributes, bytes]] = {}

    # -------------------------------------------------------------- queries

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def complete(self) -> bool:
        """The whole symbol listing of this generation has been read."""
        return self._complete

    def snapshot(self) -> dict[str, int | bool]:
        return {"generation": self.generation, "symbols": len(self._symbols),
                "templates": len(self._structs), "complete": self._complete,
                "requests": self.requests, "generation_requests": self._generation_requests,
                "listings": self.listings, "hits": self.hits,
                "misses": self.misses, "invalidations": self.invalidations,
                "given_up": self.given_up, "waiting": len(self._waiting)}

    def resolve(self, tag: str, waiter: Hashable) -> None:
        """``waiter`` wants the type of ``tag``: its ``Answer`` comes out at once on a hit,
        else when a reply settles it (the requests go out by themselves)."""
        result = self._answer(tag)
        if result is not None:
            self.hits += 1
            self._waiting.pop(waiter, None)
            self._outputs.append(Answer(waiter, tag, result, self.generation))
            return
        self.misses += 1
        self._waiting[waiter] = tag
        self._request_next()

    def forget(self, waiter: Hashable) -> None:
        """``waiter`` no longer wants an answer (its consumer was removed)."""
        self._waiting.pop(waiter, None)

    def invalidate(self) -> None:
        """The tag table may have changed: forget every symbol and template."""
        self.generation += 1
        self.invalidations += 1
        self._generation_requests = 0
        self._inflight = None  # its reply belongs to the old generation
        self._reset()
        self._request_next()

    def refresh_for(self, generation: int | None) -> bool:
        """A waiter whose answer came from ``generation`` doubts it (a size reject, a T->O
        watchdog, a lost session): invalidate unless a newer generation was started since
        (by another waiter or a lost session). Returns whether it invalidated."""
        if generation is not None and generation < self.generation:
            return False
        self.invalidate()
        return True

    def _answer(self, tag: str) -> Result | None:
        sym = self._symbols.get(tag.casefold())
        if sym is None:
            if self._complete:
                return NotResolved(f"tag {tag!r} is not in the controller's tag list: check the"
                                   " name (produced tags are controller-scoped)", True)
            return None
        try:
            t = logix_objects.tag_type(sym, self._structs.__getitem__)
            size = logix_objects.tag_byte_size(sym, lambda tid: self._structs[tid].size)
        except LookupError:
            return None  # a template still to read
        except (MalformedPacket, UsageError) as exc:
            return NotResolved(f"tag {tag!r}: unusable symbol entry: {exc}", False)
        return Resolved(t, size)

    # -------------------------------------------------------------- requests

    def _request_next(self) -> None:
        """Emit the next request unless one is in flight or nothing is missing."""
        if self._inflight is not None or not self._waiting:
            return
        step, message, what = self._next()
        if not message:
            return
        self._token += 1
        self._inflight = (self._token, step)
        self.requests += 1
        self._generation_requests += 1
        self._outputs.append(CacheRequest(self._token, message, what))

    def _next(self) -> tuple[str, bytes, str]:
        if not self._stack:
            for tag in self._waiting.values():
                sym = self._symbols.get(tag.casefold())
                if sym is not None and sym.type_word is not None and sym.symbol_type.is_struct:
                    tid = sym.symbol_type.template_id
                    if tid not in self._structs:
                        self._stack.append(tid)
                        break
        if self._stack:
            tid = self._stack[-1]
            if self._attrs is None:
                return ("template attributes", cip.Request(
                    cip.Service.GET_ATTRIBUTE_LIST, _path(TEMPLATE_CLASS, tid),
                    logix_objects.encode_attribute_ids(_TEMPLATE_ATTRS)).encode(),
                    f"template 0x{tid:03X} attributes")
            total = self._attrs.definition_size * 4 - 21  # pycomm3's count (protocol.md 9.3)
            remaining = max(total - len(self._definition), 1)
            req = logix_objects.TemplateReadRequest(len(self._definition), min(remaining, 0xFFFF))
            return ("template read", cip.Request(cip.Service.READ_TAG, _path(TEMPLATE_CLASS, tid),
                                                 req.encode()).encode(),
                    f"template 0x{tid:03X} definition from byte {len(self._definition)}")
        if not self._complete and any(t.casefold() not in self._symbols
                                      for t in self._waiting.values()):
            if self._next_instance == 0:
                self.listings += 1
            return ("symbols", cip.Request(
                cip.Service.GET_INSTANCE_ATTRIBUTE_LIST, _path(SYMBOL_CLASS, self._next_instance),
                logix_objects.encode_attribute_ids(_ATTRS)).encode(),
                f"symbols from instance {self._next_instance}")
        return ("", b"", "")

    # -------------------------------------------------------------- replies

    def on_reply(self, token: int, reply: cip.Reply) -> None:
        if self._inflight is None or self._inflight[0] != token:
            return  # a reply for an older generation (or a request we gave up on)
        step = self._inflight[1]
        self._inflight = None
        self._answer_all(self._on_reply(step, reply))

    def _on_reply(self, step: str, reply: cip.Reply) -> list[Answer]:
        self._bytes += len(reply.data)
        if self._generation_requests >= self.max_requests:
            return self._give_up(f"the limit of {self.max_requests} requests")
        try:
            if step == "symbols":
                answers = self._on_symbols(reply)
            elif step == "template attributes":
                answers = self._on_template_attrs(reply)
            else:
                answers = self._on_template_read(reply)
        except (MalformedPacket, UsageError, LookupError) as exc:
            if step == "symbols":
                return self._fail_listing(f"unusable symbol list reply: {exc}", False)
            return self._fail_templates(f"unusable {step} reply: {exc}")
        passed = self.limits.exceeded(self._entries, len(self._structs) + len(self._raw)
                                      + len(self._stack), self._bytes)
        return answers + self._give_up(passed) if passed is not None else answers

    def _give_up(self, passed: str) -> list[Answer]:
        """The listing passed a limit (``ListingLimits``, or ``max_requests``): every waiter
        gets a transient failure naming the PLC and the limit (its connection backs off and
        asks again later), and everything read is dropped, so memory is given back and the
        next try starts from the first symbol."""
        self.given_up += 1
        reason = listing_too_large(self.plc, passed)
        self._abandon_templates()
        self._reset()
        self._generation_requests = 0
        return self._fail(lambda tag: True, lambda tag: f"type of {tag!r}: {reason}", False)

    def on_error(self, token: int, reason: str) -> None:
        """The request ``token`` failed below CIP (session lost, no reply): every waiter gets
        a transient failure (its connection backs off and asks again)."""
        if self._inflight is None or self._inflight[0] != token:
            return
        self._inflight = None
        self._abandon_templates()
        self._answer_all(self._fail_all(reason, False))

    def _on_symbols(self, reply: cip.Reply) -> list[Answer]:
        if reply.status not in (0x00, 0x06):
            return self._fail_listing(f"{reply.error()}; give the tag's 'size' (or 'type') in"
                                      " the configuration", reply.status in (0x08, 0x05, 0x04))
        instances = logix_objects.parse_symbol_instances(reply.data, _ATTRS)
        self._entries += len(instances)
        for inst in instances:
            if inst.name is not None:
                self._symbols[inst.name.casefold()] = inst
        if reply.status == 0x06:
            if not instances:
                raise MalformedPacket("at least one symbol in a partial (0x06) reply", 0,
                                      "symbol list")
            last = max(i.instance_id for i in instances)
            if last < self._next_instance:
                raise MalformedPacket(f"instances from {self._next_instance} on, got up to"
                                      f" {last}", 0, "symbol list")
            self._next_instance = last + 1
        else:
            self._complete = True
        return self._settle()

    def _on_template_attrs(self, reply: cip.Reply) -> list[Answer]:
        tid = self._stack[-1]
        if reply.status != 0:
            return self._fail_templates(f"template 0x{tid:03X}: {reply.error()}")
        self._attrs = logix_objects.TemplateAttributes.from_results(
            logix_objects.parse_attribute_results(reply.data))
        self._definition = bytearray()
        return []

    def _on_template_read(self, reply: cip.Reply) -> list[Answer]:
        tid = self._stack[-1]
        attrs = self._attrs
        assert attrs is not None
        if reply.status not in (0x00, 0x06):
            return self._fail_templates(f"template 0x{tid:03X}: {reply.error()}")
        self._definition += reply.data
        if reply.status == 0x06:
            if not reply.data or len(self._definition) >= 4 * attrs.definition_size:
                return self._fail_templates(
                    f"template 0x{tid:03X}: the controller keeps answering 0x06 beyond the"
                    f" {4 * attrs.definition_size}-byte definition")
            return []
        self._raw[tid] = (attrs, bytes(self._definition))
        self._attrs, self._definition = None, bytearray()
        # Parse every definition on the stack whose nested templates are known; push the
        # missing nested ones (each read once: a parent waits in ``_raw``, never read again).
        while self._stack:
            top = self._stack[-1]
            if top not in self._raw:
                break
            top_attrs, data = self._raw[top]
            deps = logix_objects.template_dependencies(data, top_attrs.member_count)
            missing = sorted(d for d in deps if d not in self._structs)
            if missing:
                cycle = [d for d in missing if d in self._stack]
                if cycle:
                    return self._fail_templates(f"template 0x{top:03X} contains itself (cycle"
                                                f" through 0x{cycle[0]:03X})")
                self._stack.extend(missing)
                break
            self._structs[top] = logix_objects.parse_template_definition(
                data, top_attrs, instance_id=top, lookup=self._structs.__getitem__)
            del self._raw[top]
            self._stack.pop()
        return self._settle()

    # -------------------------------------------------------------- settling

    def _settle(self) -> list[Answer]:
        out: list[Answer] = []
        for waiter, tag in list(self._waiting.items()):
            result = self._answer(tag)
            if result is not None:
                del self._waiting[waiter]
                out.append(Answer(waiter, tag, result, self.generation))
        return out

    def _fail(self, pick: Callable[[str], bool], message: Callable[[str], str],
              permanent: bool) -> list[Answer]:
        out: list[Answer] = []
        for waiter, tag in list(self._waiting.items()):
            if pick(tag):
                del self._waiting[waiter]
                out.append(Answer(waiter, tag, NotResolved(message(tag), permanent),
                                  self.generation))
        return out

    def _fail_all(self, reason: str, permanent: bool) -> list[Answer]:
        return self._fail(lambda tag: True, lambda tag: f"tag {tag!r}: {reason}", permanent)

    def _fail_listing(self, reason: str, permanent: bool) -> list[Answer]:
        """The listing failed: every waiter whose symbol is not known yet gets it."""
        return self._fail(lambda tag: tag.casefold() not in self._symbols,
                          lambda tag: f"cannot list the controller's tags to size {tag!r}:"
                          f" {reason}", permanent)

    def _abandon_templates(self) -> None:
        self._stack.clear()
        self._raw.clear()
        self._attrs, self._definition = None, bytearray()

    def _fail_templates(self, reason: str) -> list[Answer]:
        """A template could not be read: waiters whose symbol is known but whose type is not
        complete get a transient failure (they ask again after back-off; nothing of the failed
        fetch is kept, so the next try reads it anew)."""
        self._abandon_templates()
        return self._fail(lambda tag: tag.casefold() in self._symbols
                          and self._answer(tag) is None,
                          lambda tag: f"{reason} (type of {tag!r})", False)
