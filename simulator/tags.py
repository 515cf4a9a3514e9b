"""The simulated controller's tag database: tags, values, value generators, TOML loading.

Pure (no sockets, no clock): time comes in as ``now`` (monotonic seconds) through
``TagStore.tick``. Owns

* ``SimTag`` — one controller- or program-scoped tag: its Logix type (acquisition.logix_types),
  its memory image, produced-tag settings (max consumers, RPI limits, default RPI, unicast);
* ``Generator`` — how a tag (or a member / array of it) moves: constant, counter, ramp, sine,
  seeded random walk, or driven only by writes. A generator is a pure function of the time
  elapsed since the store's epoch (the first ``tick``, or the last ``restart``);
* ``TagStore`` — identity, program name, programs, incarnation, lookups by name (case-
  insensitive like Logix) and by Symbol instance, the 0x55 listing per scope, templates;
* ``default_store()`` — the built-in tag set (demo and tests), ``load_store(path)`` — a TOML
  file (format in docs/simulator.md, example in examples/sim-tags.toml).

Writes land in the image at once; a time-driven generator covering the written bytes
overwrites them at the next tick, as a PLC program writing that tag every scan would.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from pyconpro.acquisition.epath import parse_tag_name
from pyconpro.acquisition.errors import UsageError
from pyconpro.acquisition.logix_codec import compile_decoder, compile_encoder
from pyconpro.acquisition.logix_objects import ExternalAccess, SymbolInstance
from pyconpro.acquisition.logix_requests import (
    STATUS_REMOTE_PROG,
    STATUS_REMOTE_RUN,
    Identity,
    PathError,
    locate,
)
from pyconpro.acquisition.logix_types import (
    PRODUCED_TAG_MAX_BYTES,
    STRING,
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    StructType,
    byte_size,
    parse_type,
)
from pyconpro.acquisition.logix_types import TYPE_TEXT_RE as _TYPE_RE
from pyconpro.acquisition.toml_check import ConfigIssue, did_you_mean

# Symbol type words of non-data symbols a controller lists (system flag 0x1000 set, so
# pycomm3 and our browser skip them; values as seen in pycomm3 debug logs of real CPUs).
PROGRAM_SYMBOL_TYPE = 0x1068
ROUTINE_SYMBOL_TYPE = 0x106D
TASK_SYMBOL_TYPE = 0x1070
MAP_SYMBOL_TYPE = 0x1069

DEFAULT_MAX_CONSUMERS = 2  # RSLogix 5000's default for a new produced tag (tag files)
DEFAULT_RPI_MIN_US = 1_000
DEFAULT_RPI_MAX_US = 750_000_000

_SIGNED = frozenset({DataTypeCode.SINT, DataTypeCode.INT, DataTypeCode.DINT, DataTypeCode.LINT,
                     DataTypeCode.STIME})
_FLOATS = frozenset({DataTypeCode.REAL, DataTypeCode.LREAL})


class SimConfigError(UsageError):
    """A tag file (or a built-in declaration) is invalid; the message names file, key and fix."""


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


class GeneratorKind(str, Enum):
    CONSTANT = "constant"  # re-asserts ``value`` every tick (writes are reverted)
    COUNTER = "counter"  # start + step * (floor(t / interval_s) + element index)
    RAMP = "ramp"  # minimum -> maximum over period_s, repeating (sawtooth)
    SINE = "sine"  # offset + amplitude * sin(2 pi t / period_s + phase)
    RANDOM_WALK = "random_walk"  # +-step every interval_s from start, clamped, seeded
    WRITES = "writes"  # no movement: only Write Tag changes it (the default)
    # The controller's wall clock, µs since 1970 UTC (GSV WallClockTime CurrentValue), into a
    # LINT / ULINT / LWORD: what a tag's ``source_time`` member holds.
    WALL_CLOCK = "wall_clock"


_GENERATOR_PARAMS: dict[GeneratorKind, frozenset[str]] = {
    GeneratorKind.CONSTANT: frozenset({"value"}),
    GeneratorKind.COUNTER: frozenset({"start", "step", "interval_s", "format"}),
    GeneratorKind.RAMP: frozenset({"minimum", "maximum", "period_s", "format"}),
    GeneratorKind.SINE: frozenset({"amplitude", "offset", "period_s", "phase", "format"}),
    GeneratorKind.RANDOM_WALK: frozenset({"start", "step", "interval_s", "minimum", "maximum",
                                          "seed", "format"}),
    GeneratorKind.WRITES: frozenset(),
    GeneratorKind.WALL_CLOCK: frozenset(),
}
_CLOCK_CODES = (DataTypeCode.LINT, DataTypeCode.ULINT, DataTypeCode.LWORD)

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    # A tiny, well-mixed, seedable hash: the random walk stays a pure function of time without
    # keeping a PRNG whose state would depend on how often tick() ran.
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class Generator:
    """A value as a function of elapsed seconds (and of the element index for arrays)."""

    kind: GeneratorKind = GeneratorKind.WRITES
    value: Any = None
    start: float = 0.0
    step: float = 1.0
    interval_s: float = 1.0
    minimum: float = 0.0
    maximum: float = 100.0
    period_s: float = 10.0
    amplitude: float = 1.0
    offset: float = 0.0
    phase: float = 0.0
    seed: int = 0
    format: str = "{v}"

    def __post_init__(self) -> None:
        for name in ("interval_s", "period_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0 seconds")
        if self.maximum < self.minimum:
            raise UsageError("maximum must be >= minimum")

    @property
    def moves(self) -> bool:
        return self.kind is not GeneratorKind.WRITES

    def steps(self, elapsed: float) -> int:
        return math.floor(max(elapsed, 0.0) / self.interval_s)

    def number(self, elapsed: float, index: int = 0) -> float:
        """The numeric value at ``elapsed`` for array element ``index`` (not for CONSTANT)."""
        k = self.kind
        if k is GeneratorKind.COUNTER:
            return self.start + self.step * (self.steps(elapsed) + index)
        if k is GeneratorKind.RAMP:
            frac = (elapsed / self.period_s + index * 0.05) % 1.0
            return self.minimum + (self.maximum - self.minimum) * frac
        if k is GeneratorKind.SINE:
            angle = 2 * math.pi * elapsed / self.period_s + self.phase + index * 0.5
            return self.offset + self.amplitude * math.sin(angle)
        if k is GeneratorKind.RANDOM_WALK:
            return self.walk(self.steps(elapsed), index)
        raise UsageError(f"a {k.value} generator has no numeric value")

    def walk(self, n: int, index: int, memo: dict[int, tuple[int, float]] | None = None) -> float:
        """Position after ``n`` steps; ``memo`` (index -> (n, value)) makes ticks incremental."""
        done, v = (0, self._clamp(self.start))
        if memo is not None and index in memo and memo[index][0] <= n:
            done, v = memo[index]
        base = _splitmix64((self.seed & _MASK64) ^ _splitmix64(index))
        for i in range(done + 1, n + 1):
            u = _splitmix64(base ^ i) / _MASK64  # 0..1
            v = self._clamp(v + (2 * u - 1) * self.step)
        if memo is not None:
            memo[index] = (n, v)
        return v

    def _clamp(self, v: float) -> float:
        return min(max(v, self.minimum), self.maximum)


def _convert(gen: Generator, raw: float, element: LogixType) -> Any:
    """Generator number -> a value of ``element`` (as compile_encoder takes it)."""
    if isinstance(element, StructType):  # string-like (checked at bind time)
        v: float | int = int(raw) if float(raw).is_integer() else raw
        return gen.format.format(v=v)[: element.string_capacity or 0]
    assert isinstance(element, AtomicType)
    code = element.code
    if code == DataTypeCode.BOOL:
        if gen.kind is GeneratorKind.COUNTER:
            return int(raw) % 2 == 1
        if gen.kind is GeneratorKind.SINE:
            return raw >= gen.offset
        return raw >= (gen.minimum + gen.maximum) / 2
    if code in _FLOATS:
        return float(raw)
    bits = 8 * element.size
    n = round(raw) & ((1 << bits) - 1)
    if code in _SIGNED and n >= 1 << (bits - 1):
        n -= 1 << bits
    return n


# ---------------------------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Binding:
    """A generator driving one region of a tag image."""

    path: str
    offset: int
    type: LogixType
    bit: int | None
    generator: Generator
    memo: dict[int, tuple[int, float]] = field(default_factory=dict)

    def apply(self, image: bytearray, elapsed: float, wall_us: int | None = None) -> None:
        gen = self.generator
        if gen.kind is GeneratorKind.CONSTANT:
            data = compile_encoder(self.type)(gen.value) if self.bit is None else None
            value = gen.value
        elif gen.kind is GeneratorKind.WALL_CLOCK:
            # Without a clock (a store used alone): µs since the simulator's start.
            value = wall_us if wall_us is not None else round(elapsed * 1e6)
            data = compile_encoder(self.type)(value)
        else:
            value = self._value(elapsed)
            data = compile_encoder(self.type)(value) if self.bit is None else None
        if self.bit is not None:
            mask = 1 << self.bit
            image[self.offset] = image[self.offset] | mask if value else image[self.offset] & ~mask
            return
        assert data is not None
        image[self.offset:self.offset + len(data)] = data

    def _value(self, elapsed: float) -> Any:
        gen, t = self.generator, self.type
        if not isinstance(t, ArrayType):
            return _convert(gen, self._number(elapsed, 0), t)
        flat = [_convert(gen, self._number(elapsed, i), t.element) for i in range(t.count)]
        return _reshape(flat, t.dims)

    def _number(self, elapsed: float, index: int) -> float:
        gen = self.generator
        if gen.kind is GeneratorKind.RANDOM_WALK:
            return gen.walk(gen.steps(elapsed), index, self.memo)
        return gen.number(elapsed, index)


def _reshape(flat: list[Any], dims: tuple[int, ...]) -> list[Any]:
    if len(dims) == 1:
        return flat
    inner = math.prod(dims[1:])
    return [_reshape(flat[i * inner:(i + 1) * inner], dims[1:]) for i in range(dims[0])]


@dataclass(eq=False)
class SimTag:
    """One tag of the simulated controller (see the module docstring)."""

    name: str  # "Tag", or "Program:<program>.Tag" for program-scoped tags
    type: LogixType
    produced: bool = False
    max_consumers: int = 1
    rpi_min_us: int = DEFAULT_RPI_MIN_US
    rpi_max_us: int = DEFAULT_RPI_MAX_US
    default_rpi_us: int | None = None  # producer-offered RPI -> 0x0112 negotiation
    unicast_allowed: bool = True
    external_access: int = ExternalAccess.READ_WRITE
    instance_id: int = 0
    initial: Any = None  # value at start / restart (None = all zero)
    generators: dict[str, Generator] = field(default_factory=dict)  # member path ("" = all)
    _image: bytearray = field(init=False, repr=False)
    _initial_image: bytes = field(init=False, repr=False)
    _bindings: list[_Binding] = field(init=False, repr=False)
    writes: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._initial_image = self._encode_initial()
        self._image = bytearray(self._initial_image)
        self._bindings = [self._bind(path, gen) for path, gen in self.generators.items()
                          if gen.moves]

    # -- identity of the tag -----------------------------------------------------------------

    @property
    def program(self) -> str | None:
        if self.name.lower().startswith("program:"):
            return self.name[len("program:"):].split(".", 1)[0]
        return None

    @property
    def base_name(self) -> str:
        """The name within its scope (what the 0x55 listing shows)."""
        return self.name.split(".", 1)[1] if self.program is not None else self.name

    def size(self) -> int:
        return byte_size(self.type)

    # -- value -------------------------------------------------------------------------------

    def image(self) -> bytes:
        return bytes(self._image)

    def write(self, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > len(self._image):
            raise UsageError(f"{self.name}: write of {len(data)} bytes at {offset} outside the "
                             f"{len(self._image)}-byte image")
        self._image[offset:offset + len(data)] = data
        self.writes += 1

    def value(self) -> Any:
        """The decoded current value (ints, floats, bools, str, lists, dicts)."""
        return compile_decoder(self.type)(bytes(self._image))

    def set(self, value: Any) -> None:
        """Replace the whole value (encoded like compile_encoder); counts as a write."""
        self.write(compile_encoder(self.type)(value))

    def tick(self, elapsed: float, wall_us: int | None = None) -> None:
        for b in self._bindings:
            b.apply(self._image, elapsed, wall_us)

    def reset(self) -> None:
        self._image[:] = self._initial_image
        for b in self._bindings:
            b.memo.clear()

    # -- construction helpers ----------------------------------------------------------------

    def _encode_initial(self) -> bytes:
        if self.initial is None:
            return bytes(self.size())
        zero = compile_decoder(self.type)(bytes(self.size()))
        merged = _merge(zero, self.initial)
        return compile_encoder(self.type)(merged)

    def _bind(self, path: str, gen: Generator) -> _Binding:
        selectors: list[str | tuple[int, ...]] = []
        if path:
            parsed = parse_tag_name(f"X.{path}" if not path.startswith("[") else f"X{path}")
            for i, part in enumerate(parsed.parts):
                if i:
                    selectors.append(part.name)
                if part.indices:
                    selectors.append(part.indices)
        try:
            loc = locate(self.type, selectors, self.name)
        except PathError as err:
            raise UsageError(f"generator target {path!r}: {err.why}") from None
        # locate() describes elements; a generator drives the whole addressed value.
        t = _target_type(self.type, selectors)
        elem = t.element if isinstance(t, ArrayType) else t
        if isinstance(elem, StructType) and elem.string_capacity is None \
                and gen.kind is not GeneratorKind.CONSTANT:
            raise UsageError(
                f"generator target {path or self.name!r} is a {elem.name} structure: drive its "
                "members instead (e.g. generators.\"Member\" = {...})")
        if gen.kind is GeneratorKind.CONSTANT and loc.bit is None:
            compile_encoder(t)(gen.value)  # raises UsageError naming the member
        if gen.kind is GeneratorKind.WALL_CLOCK and not (
                isinstance(t, AtomicType) and t.code in _CLOCK_CODES):
            raise UsageError(
                f"generator target {path or self.name!r} is a {t.name}: a wall_clock generator"
                " writes microseconds since 1970 into a LINT (or ULINT, LWORD) member")
        return _Binding(path, loc.offset, t, loc.bit, gen)


def _target_type(t: LogixType, selectors: Sequence[str | tuple[int, ...]]) -> LogixType:
    for sel in selectors:
        if isinstance(sel, tuple):
            assert isinstance(t, ArrayType)
            t = t.element
        else:
            assert isinstance(t, StructType)
            t = next(m.type for m in t.members if m.name.lower() == sel.lower())
    return t


def _merge(base: Any, override: Any) -> Any:
    """Overlay a partial value (dict of members) on a full one."""
    if isinstance(base, dict) and isinstance(override, Mapping):
        out = dict(base)
        lower = {k.lower(): k for k in base}
        for k, v in override.items():
            key = lower.get(str(k).lower())
            if key is None:
                raise UsageError(f"unknown member {k!r} (members are {', '.join(base)})")
            out[key] = _merge(base[key], v)
        return out
    return override


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemSymbol:
    """A non-data symbol listed by 0x55 (``Program:X``, ``Task:X``, ``Routine:X``, ``Map:X``)."""

    instance_id: int
    name: str
    type_word: int
    program: str | None = None  # scope it is listed in


class TagStore:
    """All tags of one simulated controller plus its identity (see the module docstring)."""

    def __init__(
        self,
        tags: Iterable[SimTag] = (),
        *,
        identity: Identity | None = None,
        program_name: str = "PYCONPRO_SIM",
        programs: Sequence[str] = (),
        tasks: Sequence[str] = ("MainTask",),
        first_instance: int = 100,
        instance_step: int = 12,
    ) -> None:
        self.identity = identity or Identity()
        self.program_name = program_name
        self.programs: list[str] = []
        self.incarnation = 1
        self._tags: list[SimTag] = []
        self._by_name: dict[str, SimTag] = {}
        self._by_instance: dict[int, SimTag] = {}
        self._system: list[SystemSymbol] = []
        self._templates: dict[int, StructType] = {}
        self._next_instance = first_instance
        self._step = instance_step
        self._epoch: float | None = None
        self._last: float | None = None
        # The controller's wall clock (UTC µs at a monotonic ``now``) that ``wall_clock``
        # generators write; the simulator attaches its Wall Clock object's.
        self.wall_clock: Callable[[float], int] | None = None
        for p in programs:
            self.add_program(p)
        for t in tasks:
            self._system.append(SystemSymbol(self._allocate(), f"Task:{t}", TASK_SYMBOL_TYPE))
        for tag in tags:
            self.add(tag)

    # -- building ----------------------------------------------------------------------------

    def _allocate(self, wanted: int = 0) -> int:
        if wanted:
            if wanted in self._by_instance or any(s.instance_id == wanted for s in self._system):
                raise UsageError(f"symbol instance id {wanted} is used twice; give each tag a "
                                 "unique instance_id or leave it out")
            return wanted
        used = set(self._by_instance) | {s.instance_id for s in self._system}
        while self._next_instance in used:
            self._next_instance += 1
        iid = self._next_instance
        self._next_instance += self._step
        return iid

    def add_program(self, name: str) -> str:
        for p in self.programs:
            if p.lower() == name.lower():
                return p
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", name):
            raise UsageError(f"program name {name!r}: use 1-40 letters, digits or _")
        self.programs.append(name)
        self._system.append(SystemSymbol(self._allocate(), f"Program:{name}",
                                         PROGRAM_SYMBOL_TYPE))
        self._system.append(SystemSymbol(self._allocate(), "Routine:MainRoutine",
                                         ROUTINE_SYMBOL_TYPE, name))
        return name

    def add(self, tag: SimTag) -> SimTag:
        key = tag.name.lower()
        if key in self._by_name:
            raise UsageError(f"tag {tag.name!r} declared twice (Logix names are "
                             "case-insensitive)")
        program = tag.program
        if program is not None:
            canonical = self.add_program(program)
            tag.name = f"Program:{canonical}.{tag.base_name}"
            if tag.produced:
                raise UsageError(
                    f"{tag.name}: produced tags must be controller-scoped "
                    "(README: Configuring the produced tag in Studio 5000); move it out of the"
                    " program or set "
                    "produced = false"
                )
        if tag.produced and tag.size() > PRODUCED_TAG_MAX_BYTES:
            raise UsageError(
                f"{tag.name}: {tag.size()} bytes, but a standard produced tag holds "
                f"at most {PRODUCED_TAG_MAX_BYTES} (README: Configuring the produced tag in"
                " Studio 5000); shrink it or "
                "set produced = false"
            )
        tag.instance_id = self._allocate(tag.instance_id)
        self._tags.append(tag)
        self._by_name[key] = tag
        self._by_instance[tag.instance_id] = tag
        for st in _structs(tag.type):
            known = self._templates.get(st.instance_id)
            if known is not None and known != st:
                raise UsageError(
                    f"template instance {st.instance_id:#x} is used by both "
                    f"{known.name} and {st.name}; give the UDTs distinct ids"
                )
            self._templates[st.instance_id] = st
        return tag

    # -- lookups (acquisition.logix_controller.TagDatabase)
    # ------------------------------------------

    @property
    def tags(self) -> list[SimTag]:
        return list(self._tags)

    def __iter__(self) -> Iterator[SimTag]:
        return iter(self._tags)

    def find(self, name: str) -> SimTag | None:
        """A tag by its full name (``Tag`` or ``Program:P.Tag``), case-insensitive."""
        return self._by_name.get(name.lower())

    def by_instance(self, instance_id: int) -> SimTag | None:
        return self._by_instance.get(instance_id)

    def produced(self) -> list[SimTag]:
        return [t for t in self._tags if t.produced]

    def templates(self) -> dict[int, StructType]:
        return dict(self._templates)

    def listing(self, program: str | None) -> list[SymbolInstance] | None:
        """The Symbol instances of a scope (controller when None) sorted by instance id, or
        None when the program does not exist."""
        if program is not None:
            match = [p for p in self.programs if p.lower() == program.lower()]
            if not match:
                return None
            program = match[0]
        out: list[SymbolInstance] = []
        for tag in self._tags:
            if tag.program != program or tag.external_access == ExternalAccess.NONE:
                continue
            out.append(
                SymbolInstance.for_tag(
                    tag.instance_id,
                    tag.base_name,
                    tag.type,
                    address=0x1000_0000 + 0x100 * tag.instance_id,
                    object_address=0x2000_0000 + 0x40 * tag.instance_id,
                    external_access=tag.external_access,
                )
            )
        for s in self._system:
            if s.program == program:
                out.append(
                    SymbolInstance(
                        s.instance_id,
                        s.name,
                        s.type_word,
                        0,
                        0,
                        0,
                        0,
                        (0, 0, 0),
                        ExternalAccess.NONE,
                    )
                )
        return sorted(out, key=lambda s: s.instance_id)

    # -- time --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance every generator to ``now`` (the first call sets the epoch)."""
        if self._epoch is None:
            self._epoch = now
        if now == self._last:
            return
        self._last = now
        elapsed = now - self._epoch
        wall_us = self.wall_clock(now) if self.wall_clock is not None else None
        for tag in self._tags:
            tag.tick(elapsed, wall_us)

    def restart(self, now: float) -> None:
        """Simulated download / power cycle: new incarnation, initial values, epoch = now."""
        self.incarnation += 1
        self._epoch = now
        self._last = None
        for tag in self._tags:
            tag.reset()
        self.tick(now)


def _structs(t: LogixType) -> Iterator[StructType]:
    if isinstance(t, ArrayType):
        yield from _structs(t.element)
    elif isinstance(t, StructType):
        yield t
        for m in t.members:
            yield from _structs(m.type)


# ---------------------------------------------------------------------------------------------
# Built-in default tag set
# ---------------------------------------------------------------------------------------------

POSITION = StructType.build(
    "Position", [("X", "REAL"), ("Y", "REAL"), ("Homed", "BOOL")], instance_id=0x0101, handle=0x5A01
)
MOTOR_DATA = StructType.build(
    "MotorData",
    [
        ("Running", "BOOL"),
        ("Faulted", "BOOL"),
        ("Speed", "REAL"),
        ("Counts", "DINT", 4),
        ("Pos", POSITION),
        ("Flags", "BOOL", 32),
        ("Energy", "LREAL"),
    ],
    instance_id=0x0102,
    handle=0x5A02,
)
# A produced UDT "with status" (protocol.md 7.2): CONNECTION_STATUS first, so consumers see the
# producer's RunMode (and set ConnectionFaulted themselves when the connection breaks).
CELL_STATUS = StructType.build(
    "CellStatus",
    [("Status", "CONNECTION_STATUS"), ("Parts", "DINT"), ("Temperature", "REAL")],
    instance_id=0x0103,
    handle=0x5A03,
)


def _t(spec: str, types: Mapping[str, StructType] | None = None) -> LogixType:
    return parse_type(
        spec, types or {"Position": POSITION, "MotorData": MOTOR_DATA, "CellStatus": CELL_STATUS}
    )


def default_store() -> TagStore:
    """The built-in tag set used by the demo and the tests (documented in docs/simulator.md)."""
    G = Generator
    K = GeneratorKind
    motor_zero = {
        "Running": False,
        "Faulted": False,
        "Speed": 0.0,
        "Counts": [0, 0, 0, 0],
        "Pos": {"X": 0.0, "Y": 0.0, "Homed": True},
        "Flags": [False] * 32,
        "Energy": 0.0,
    }
    tags = [
        # produced tags
        SimTag(
            "Counter",
            _t("DINT"),
            produced=True,
            max_consumers=8,
            generators={"": G(K.COUNTER, interval_s=0.1)},
        ),
        SimTag(
            "Sine",
            _t("REAL"),
            produced=True,
            max_consumers=8,
            generators={"": G(K.SINE, amplitude=100.0, period_s=10.0)},
        ),
        SimTag(
            "Array10",
            _t("DINT[10]"),
            produced=True,
            max_consumers=4,
            generators={"": G(K.COUNTER, interval_s=0.5)},
        ),
        SimTag(
            "Motor",
            _t("MotorData"),
            produced=True,
            max_consumers=4,
            initial=motor_zero,
            generators={
                "Running": G(K.COUNTER, interval_s=2.0),
                "Speed": G(K.SINE, amplitude=1500.0, offset=1500.0, period_s=20.0),
                "Counts": G(K.COUNTER, interval_s=0.25),
                "Pos.X": G(K.RAMP, minimum=0.0, maximum=100.0, period_s=30.0),
                "Pos.Y": G(K.RANDOM_WALK, start=50.0, step=1.0, interval_s=0.2, seed=7),
                "Flags": G(K.COUNTER, interval_s=1.0),
                "Energy": G(K.RAMP, minimum=0.0, maximum=1e6, period_s=3600.0),
            },
        ),
        SimTag(
            "Message",
            _t("STRING"),
            produced=True,
            max_consumers=4,
            generators={"": G(K.COUNTER, interval_s=1.0, format="tick {v}")},
        ),
        SimTag(
            "Exclusive",
            _t("DINT"),
            produced=True,
            max_consumers=1,
            generators={"": G(K.COUNTER, interval_s=0.1, start=1000)},
        ),
        SimTag(
            "Limited",
            _t("DINT"),
            produced=True,
            max_consumers=4,
            rpi_min_us=10_000,
            rpi_max_us=100_000,
            default_rpi_us=20_000,
            generators={"": G(K.COUNTER, interval_s=0.02)},
        ),
        SimTag(
            "Big",
            _t("DINT[125]"),
            produced=True,
            max_consumers=4,
            generators={"": G(K.RAMP, minimum=0.0, maximum=1_000_000.0, period_s=60.0)},
        ),
        SimTag(
            "Walk",
            _t("REAL"),
            produced=True,
            max_consumers=4,
            unicast_allowed=False,
            generators={
                "": G(
                    K.RANDOM_WALK,
                    start=0.0,
                    step=0.5,
                    minimum=-10.0,
                    maximum=10.0,
                    interval_s=0.1,
                    seed=42,
                )
            },
        ),
        # the original library's README examples consume "test" and "test2" (DINT, datasize 6)
        SimTag(
            "test",
            _t("DINT"),
            produced=True,
            max_consumers=4,
            generators={"": G(K.COUNTER, interval_s=0.5)},
        ),
        SimTag(
            "test2",
            _t("DINT"),
            produced=True,
            max_consumers=4,
            generators={"": G(K.COUNTER, interval_s=1.0, start=100)},
        ),
        # not produced: written by clients (one per type) and fixed values
        SimTag("Setpoint", _t("REAL"), initial=42.5),
        SimTag("Flag", _t("BOOL"), initial=True),
        SimTag("Small", _t("SINT"), initial=-5),
        SimTag("Medium", _t("INT"), initial=1234),
        SimTag("Large", _t("LINT"), initial=1 << 40),
        SimTag("Precise", _t("LREAL"), initial=math.pi),
        SimTag("Text", _t("STRING"), initial="hello"),
        SimTag("Matrix", _t("INT[2,3]"), initial=[[1, 2, 3], [4, 5, 6]]),
        SimTag("Cube", _t("SINT[2,2,2]"), initial=[[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
        SimTag("Bits", _t("BOOL[64]"), initial=[i % 3 == 0 for i in range(64)]),
        SimTag(
            "Station",
            _t("MotorData"),
            initial={**motor_zero, "Speed": 12.5, "Counts": [1, 2, 3, 4]},
        ),
        SimTag("Version", _t("DINT"), initial=33, external_access=ExternalAccess.READ_ONLY),
        SimTag("Heartbeat", _t("DINT"), generators={"": G(K.CONSTANT, value=1)}, initial=1),
        SimTag("Hidden", _t("DINT"), initial=99, external_access=ExternalAccess.NONE),
        # program-scoped
        SimTag("Program:MainProgram.Local", _t("DINT"), initial=7),
        SimTag("Program:MainProgram.Recipe", _t("REAL[4]"), initial=[1.5, 2.5, 3.5, 4.5]),
        # Added last so the instance ids above never move. The simulated controller is in
        # (remote) run mode: RunMode is set and held (a write is reverted at the next tick);
        # ConnectionFaulted is the consumer's to set, the producer sends it clear.
        SimTag(
            "CellStatus",
            _t("CellStatus"),
            produced=True,
            max_consumers=4,
            initial={"Status": {"RunMode": True, "ConnectionFaulted": False}},
            generators={
                "Status.RunMode": G(K.CONSTANT, value=True),
                "Parts": G(K.COUNTER, interval_s=0.5),
                "Temperature": G(K.SINE, amplitude=5.0, offset=40.0, period_s=30.0),
            },
        ),
    ]
    return TagStore(tags, programs=("MainProgram", "Aux"))


# ---------------------------------------------------------------------------------------------
# Type strings and TOML loading
# ---------------------------------------------------------------------------------------------

_CONTROLLER_KEYS = {
    "program_name",
    "product_name",
    "product_code",
    "revision",
    "serial",
    "mode",
    "programs",
    "tasks",
    "vendor_id",
    "device_type",
}
_TAG_KEYS = {
    "name",
    "type",
    "dims",
    "produced",
    "max_consumers",
    "rpi_min_us",
    "rpi_max_us",
    "default_rpi_us",
    "unicast_allowed",
    "access",
    "instance_id",
    "value",
    "generator",
    "generators",
    "description",
}
_ACCESS = {
    "read/write": ExternalAccess.READ_WRITE,
    "read only": ExternalAccess.READ_ONLY,
    "none": ExternalAccess.NONE,
}
_MODES = {
    "remote run": STATUS_REMOTE_RUN,
    "remote program": STATUS_REMOTE_PROG,
    "run": 0x1060,
    "program": 0x2070,
}


class _Ctx:
    """Error helper over the shared TOML checks (``acquisition.toml_check``): every message
    names the file and the key, and a misspelt key gets a "did you mean"."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, problem: str, fix: str) -> SimConfigError:
        return SimConfigError(str(ConfigIssue(self.path, key, None, problem, fix)))

    def check_keys(self, key: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            hint = did_you_mean(unknown[0], sorted(allowed))
            raise self.error(
                f"{key}.{unknown[0]}",
                "unknown key",
                f"{hint + ' ' if hint else ''}use one of {', '.join(sorted(allowed))}",
            )

    def get(
        self,
        key: str,
        table: Mapping[str, Any],
        name: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        what: str,
    ) -> Any:
        if name not in table:
            return default
        value = table[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(f"{key}.{name}", f"{value!r} is not {what}", f"write {what}")
        return value


def load_store(path: str | Path) -> TagStore:
    """Build a TagStore from a TOML tag file (format: docs/simulator.md)."""
    p = Path(path)
    ctx = _Ctx(str(p))
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise SimConfigError(f"{p}: file not found; check the path given to --config") from None
    except tomllib.TOMLDecodeError as err:
        raise SimConfigError(f"{p}: not valid TOML ({err}); fix the syntax at that line") from None
    ctx.check_keys("(top level)", doc, {"controller", "types", "tags"})
    store = _controller(ctx, doc.get("controller", {}))
    types = _types(ctx, doc.get("types", {}))
    raw_tags = doc.get("tags", [])
    if not isinstance(raw_tags, list):
        raise ctx.error("tags", "must be an array of tables", "write [[tags]] sections")
    for i, table in enumerate(raw_tags):
        tag = _tag(ctx, f"tags[{i}]", table, types)
        try:
            store.add(tag)
        except UsageError as err:
            raise ctx.error(f"tags[{i}] ({tag.name})", str(err), "see docs/simulator.md") from None
    return store


def _controller(ctx: _Ctx, table: Any) -> TagStore:
    if not isinstance(table, Mapping):
        raise ctx.error("controller", "must be a table", "write a [controller] section")
    ctx.check_keys("controller", table, _CONTROLLER_KEYS)
    ident = Identity()
    rev = ctx.get("controller", table, "revision", str, what='a string like "33.11"')
    if rev is not None:
        m = re.fullmatch(r"(\d+)\.(\d+)", rev)
        if m is None or not 1 <= int(m.group(1)) <= 127 or int(m.group(2)) > 255:
            raise ctx.error(
                "controller.revision",
                f"{rev!r} is not MAJOR.MINOR",
                'write e.g. "33.11" (major >= 21 for symbol-instance addressing)',
            )
        ident = replace(ident, revision_major=int(m.group(1)), revision_minor=int(m.group(2)))
    mode = ctx.get("controller", table, "mode", str, what="a keyswitch mode string")
    if mode is not None:
        if mode.lower() not in _MODES:
            raise ctx.error(
                "controller.mode", f"unknown mode {mode!r}", f"use one of {', '.join(_MODES)}"
            )
        ident = replace(ident, status=_MODES[mode.lower()])
    for key, attr, limit in (
        ("product_code", "product_code", 0xFFFF),
        ("serial", "serial_number", 0xFFFFFFFF),
        ("vendor_id", "vendor_id", 0xFFFF),
        ("device_type", "device_type", 0xFFFF),
    ):
        v = ctx.get("controller", table, key, int, what="an integer")
        if v is not None:
            if not 0 <= v <= limit:
                raise ctx.error(f"controller.{key}", f"{v} out of range", f"use 0..{limit}")
            ident = replace(ident, **{attr: v})
    pname = ctx.get("controller", table, "product_name", str, what="a string")
    if pname is not None:
        if not pname.isascii() or not 1 <= len(pname) <= 32:
            raise ctx.error(
                "controller.product_name",
                f"{pname!r}",
                'use 1-32 ASCII characters, e.g. "1756-L83E/B"',
            )
        ident = replace(ident, product_name=pname)
    program_name = ctx.get(
        "controller", table, "program_name", str, "PYCONPRO_SIM", what="a string"
    )
    programs = ctx.get("controller", table, "programs", list, [], what="a list of names")
    tasks = ctx.get("controller", table, "tasks", list, ["MainTask"], what="a list of names")
    try:
        return TagStore(identity=ident, program_name=program_name, programs=programs, tasks=tasks)
    except UsageError as err:
        raise ctx.error("controller.programs", str(err), "fix the program name") from None


def _types(ctx: _Ctx, table: Any) -> dict[str, StructType]:
    if not isinstance(table, Mapping):
        raise ctx.error("types", "must be a table of UDTs", "write [types.<Name>] sections")
    done: dict[str, StructType] = {}
    visiting: list[str] = []

    def build(name: str) -> StructType:
        if name in done:
            return done[name]
        if name in visiting:
            raise ctx.error(
                f"types.{name}",
                f"contains itself (through {' -> '.join(visiting + [name])})",
                "remove the cycle",
            )
        visiting.append(name)
        udt = table[name]
        key = f"types.{name}"
        if not isinstance(udt, Mapping):
            raise ctx.error(key, "must be a table", f"write [types.{name}] with members = [...]")
        ctx.check_keys(key, udt, {"members", "instance_id", "handle"})
        members = udt.get("members")
        if not isinstance(members, list) or not members:
            raise ctx.error(
                f"{key}.members",
                "missing or empty",
                'write members = [{ name = "X", type = "REAL" }, ...]',
            )
        specs: list[tuple[str, LogixType]] = []
        for j, m in enumerate(members):
            mkey = f"{key}.members[{j}]"
            if not isinstance(m, Mapping):
                raise ctx.error(
                    mkey, "must be an inline table", 'write { name = "X", type = "REAL" }'
                )
            ctx.check_keys(mkey, m, {"name", "type", "dims", "description"})
            mname = ctx.get(mkey, m, "name", str, what="a member name string")
            mtype = ctx.get(mkey, m, "type", str, what="a type string")
            if mname is None or mtype is None:
                raise ctx.error(mkey, "needs name and type", 'write { name = "X", type = "REAL" }')
            mt = _member_type(ctx, f"{mkey}.type", mtype, m.get("dims"), table, build, done)
            specs.append((mname, mt))
        ids: dict[str, int] = {}
        for k in ("instance_id", "handle"):
            v = ctx.get(key, udt, k, int, what="an integer")
            if v is not None:
                ids[k] = v
        if "instance_id" not in ids:
            ids["instance_id"] = 0x100 + len(done)
        try:
            st = StructType.build(name, specs, **ids)  # type: ignore[arg-type]
        except UsageError as err:
            raise ctx.error(key, str(err), "fix the declaration") from None
        visiting.pop()
        done[name] = st
        return st

    for name in table:
        build(name)
    return done


def _member_type(
    ctx: _Ctx,
    key: str,
    spec: str,
    dims: Any,
    table: Mapping[str, Any],
    build: Any,
    done: Mapping[str, StructType],
) -> LogixType:
    m = _TYPE_RE.match(spec)
    if m is None:
        raise ctx.error(key, f"{spec!r} is not a type", "write NAME or NAME[n]")
    base = m.group(1)
    if base in table and base not in done:
        build(base)
    if dims is not None:
        if m.group(2) is not None:
            raise ctx.error(key, "dims given twice", "use either NAME[n] or dims = n")
        spec = f"{base}[{dims if isinstance(dims, int) else ','.join(map(str, dims))}]"
    try:
        return parse_type(spec, done)
    except UsageError as err:
        raise ctx.error(key, str(err), "declare the UDT under [types] or fix the name") from None


def _generator(ctx: _Ctx, key: str, table: Any) -> Generator:
    if not isinstance(table, Mapping):
        raise ctx.error(key, "must be an inline table", 'write { kind = "sine", ... }')
    kind_text = table.get("kind")
    try:
        kind = GeneratorKind(kind_text)
    except ValueError:
        raise ctx.error(
            f"{key}.kind",
            f"unknown generator {kind_text!r}",
            f"use one of {', '.join(k.value for k in GeneratorKind)}",
        ) from None
    allowed = set(_GENERATOR_PARAMS[kind]) | {"kind"}
    ctx.check_keys(key, table, allowed)
    params: dict[str, Any] = {}
    for name, value in table.items():
        if name == "kind":
            continue
        if name == "format":
            if not isinstance(value, str) or "{v" not in value:
                raise ctx.error(
                    f"{key}.format",
                    f"{value!r}",
                    'write a format string using {v}, e.g. "tick {v}"',
                )
        elif name == "seed":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ctx.error(f"{key}.seed", f"{value!r} is not an integer", "write seed = 7")
        elif name != "value":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ctx.error(f"{key}.{name}", f"{value!r} is not a number", "write a number")
            value = float(value)
        params[name] = value
    if kind is GeneratorKind.CONSTANT and "value" not in params:
        raise ctx.error(key, "a constant generator needs value", "add value = ...")
    try:
        return Generator(kind, **params)
    except UsageError as err:
        raise ctx.error(key, str(err), "fix the parameter") from None


# Checks every key of one [[tag]] table in file order, one branch per key, so each error names
# its key and line (complexity 19).
def _tag(ctx: _Ctx, key: str, table: Any, types: Mapping[str, StructType]) -> SimTag:  # noqa: C901
    if not isinstance(table, Mapping):
        raise ctx.error(key, "must be a table", "write [[tags]] with name and type")
    ctx.check_keys(key, table, _TAG_KEYS)
    name = ctx.get(key, table, "name", str, what="a tag name string")
    spec = ctx.get(key, table, "type", str, what="a type string")
    if name is None or spec is None:
        raise ctx.error(key, "needs name and type", 'write name = "Counter" and type = "DINT"')
    key = f"{key} ({name})"
    try:
        parsed = parse_tag_name(name)
    except UsageError as err:
        raise ctx.error(f"{key}.name", str(err), "use a Logix identifier") from None
    if len(parsed.parts) != 1 or parsed.parts[0].indices:
        raise ctx.error(
            f"{key}.name",
            "a tag name has no members or indices",
            'write "Tag" or "Program:Main.Tag" and give dims in type',
        )
    dims = table.get("dims")
    if dims is not None:
        if "[" in spec:
            raise ctx.error(f"{key}.dims", "dims given twice", "use either TYPE[n] or dims")
        if isinstance(dims, int):
            dims = [dims]
        if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
            raise ctx.error(f"{key}.dims", f"{dims!r}", "write dims = 10 or dims = [2, 3]")
        spec = f"{spec}[{','.join(map(str, dims))}]"
    try:
        t = parse_type(spec, types)
    except UsageError as err:
        raise ctx.error(f"{key}.type", str(err), "declare UDTs under [types.<Name>]") from None
    access_text = ctx.get(key, table, "access", str, "read/write", what="an access string")
    if access_text.lower() not in _ACCESS:
        raise ctx.error(f"{key}.access", f"{access_text!r}", f"use one of {', '.join(_ACCESS)}")
    ints: dict[str, int | None] = {}
    for k in ("max_consumers", "rpi_min_us", "rpi_max_us", "default_rpi_us", "instance_id"):
        v = ctx.get(key, table, k, int, what="an integer")
        if v is not None and v < 1:
            raise ctx.error(f"{key}.{k}", f"{v}", "use a positive integer")
        ints[k] = v
    rmin = ints["rpi_min_us"] or DEFAULT_RPI_MIN_US
    rmax = ints["rpi_max_us"] or DEFAULT_RPI_MAX_US
    if rmin > rmax:
        raise ctx.error(f"{key}.rpi_min_us", f"{rmin} > rpi_max_us {rmax}", "swap them")
    drpi = ints["default_rpi_us"]
    if drpi is not None and not rmin <= drpi <= rmax:
        raise ctx.error(
            f"{key}.default_rpi_us",
            f"{drpi} outside {rmin}..{rmax}",
            "pick a default inside the RPI limits",
        )
    gens: dict[str, Generator] = {}
    if "generator" in table:
        gens[""] = _generator(ctx, f"{key}.generator", table["generator"])
    members = table.get("generators", {})
    if not isinstance(members, Mapping):
        raise ctx.error(
            f"{key}.generators",
            "must be a table of member path -> generator",
            'write generators = { "Speed" = { kind = "sine" } }',
        )
    for path, g in members.items():
        gens[path] = _generator(ctx, f"{key}.generators.{path}", g)
    try:
        return SimTag(
            name=name,
            type=t,
            produced=ctx.get(key, table, "produced", bool, False, what="true or false"),
            max_consumers=ints["max_consumers"] or DEFAULT_MAX_CONSUMERS,
            rpi_min_us=rmin,
            rpi_max_us=rmax,
            default_rpi_us=drpi,
            unicast_allowed=ctx.get(
                key, table, "unicast_allowed", bool, True, what="true or false"
            ),
            external_access=_ACCESS[access_text.lower()],
            instance_id=ints["instance_id"] or 0,
            initial=table.get("value"),
            generators=gens,
        )
    except UsageError as err:
        raise ctx.error(key, str(err), "fix the value or generator") from None


__all__ = [
    "DEFAULT_RPI_MAX_US",
    "DEFAULT_RPI_MIN_US",
    "MOTOR_DATA",
    "POSITION",
    "STRING",
    "Generator",
    "GeneratorKind",
    "SimConfigError",
    "SimTag",
    "SystemSymbol",
    "TagStore",
    "default_store",
    "load_store",
    "parse_type",
]
