"""A generic EtherNet/IP adapter's assemblies and its Connection Manager rules, pure.

Owns what the target role (``acquisition.target``) needs to play an I/O device the way OpENer
does (appcontype.c, cipioconnection.c): the assembly instances (input, output, configuration,
heartbeat) with their bytes, the connections the device offers (exclusive owner, input only,
listen only: an O->T point, a T->O point and a configuration point each), the run/idle header
settings, and the checks that turn a Forward_Open's connection points, sizes and configuration
data into an accepted connection or the extended status OpENer answers:

* no offered connection has these points: 0x012F (OpENer: a point pair that matches only
  partly gives 0x012B, a wrong producing point, or 0x012F);
* exclusive owner while another exclusive owner holds the output assembly: 0x0106;
* listen only while no other connection produces its input assembly: 0x0119;
* sizes (protocol.md 6.2): O->T = 2 + 4 (run/idle, not on a heartbeat) + output bytes, T->O =
  2 (+ 4 when the device sends run/idle) + input bytes; a mismatch is the target's size code
  (0x0109 or 0x0127 / 0x0128) with the wanted size;
* configuration data (the data segment) of another size than the configuration assembly:
  0x0129 (OpENer, ``HandleConfigData``); different data while another connection uses the
  same configuration point: 0x0106.

Time-driven content: an input assembly may count (``counter_interval_s``: its first four bytes
are a DINT counter), so a consumer sees it move.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyconpro.acquisition import class1, cm
from pyconpro.acquisition.assembly import RUN_IDLE_SIZE, ConnectionKind
from pyconpro.acquisition.errors import MalformedPacket, UsageError
from pyconpro.acquisition.status import ExtendedStatus

__all__ = ["Adapter", "AdapterReject", "Assembly", "AssemblyRole", "OfferedConnection",
           "default_adapter"]

_DINT = struct.Struct("<i")


class AssemblyRole(enum.StrEnum):
    INPUT = "input"  # produced T->O
    OUTPUT = "output"  # consumed O->T (exclusive owner)
    CONFIG = "config"  # written by the Forward_Open's data segment
    HEARTBEAT = "heartbeat"  # size 0: the O->T point of input-only / listen-only


@dataclass(slots=True, eq=False)
class Assembly:
    """One assembly instance and its current bytes."""

    instance: int
    role: AssemblyRole
    size: int
    data: bytearray = field(default_factory=bytearray)
    counter_interval_s: float | None = None  # input: first DINT counts (time-driven)
    updates: int = 0  # output / config: times it was written
    run_idle: int | None = None  # output: the last run/idle header received

    def __post_init__(self) -> None:
        if not 0 < self.instance <= 0xFFFF:
            raise UsageError(f"assembly instance {self.instance} out of range 1..65535")
        if self.role is AssemblyRole.HEARTBEAT and self.size:
            raise UsageError(f"assembly {self.instance}: a heartbeat assembly has size 0")
        if not 0 <= self.size <= 505:
            raise UsageError(f"assembly {self.instance}: size {self.size} out of range 0..505")
        if len(self.data) > self.size:
            raise UsageError(f"assembly {self.instance}: {len(self.data)} bytes of data for a"
                             f" size of {self.size}")
        self.data.extend(bytes(self.size - len(self.data)))
        if self.counter_interval_s is not None and (self.role is not AssemblyRole.INPUT
                                                    or self.size < 4
                                                    or self.counter_interval_s <= 0):
            raise UsageError(f"assembly {self.instance}: a counter needs an input assembly of"
                             " at least 4 bytes and a positive interval")


@dataclass(frozen=True, slots=True)
class OfferedConnection:
    """A connection the device offers: its type and (O->T point, T->O point, config point)."""

    kind: ConnectionKind
    output: int
    input: int
    config: int | None


class AdapterReject(Exception):
    """A Forward_Open refusal: the extended status and its additional words."""

    def __init__(self, extended: int, *extra: int) -> None:
        self.additional = (int(extended), *extra)
        super().__init__(self.additional)


@dataclass(frozen=True, slots=True)
class OpenedAssembly:
    """What the target keeps of an accepted assembly connection."""

    offered: OfferedConnection
    output: Assembly | None  # the output assembly of an exclusive owner
    input: Assembly


class Adapter:
    """The device's assemblies and offered connections (module docstring)."""

    def __init__(self, assemblies: Iterable[Assembly], offered: Iterable[OfferedConnection], *,
                 ot_run_idle: bool = True, to_run_idle: bool = False,
                 max_per_point: int = 4) -> None:
        self.assemblies: dict[int, Assembly] = {}
        for a in assemblies:
            if a.instance in self.assemblies:
                raise UsageError(f"assembly instance {a.instance} is declared twice")
            self.assemblies[a.instance] = a
        self.offered = tuple(offered)
        for o in self.offered:
            self._check_offered(o)
        self.ot_run_idle = ot_run_idle
        self.to_run_idle = to_run_idle
        self.max_per_point = max_per_point
        self._epoch: float | None = None

    def _check_offered(self, o: OfferedConnection) -> None:
        want_out = (AssemblyRole.OUTPUT if o.kind is ConnectionKind.EXCLUSIVE_OWNER
                    else AssemblyRole.HEARTBEAT)
        for point, role in ((o.output, want_out), (o.input, AssemblyRole.INPUT),
                            (o.config, AssemblyRole.CONFIG)):
            if point is None:
                continue
            a = self.assemblies.get(point)
            if a is None or a.role is not role:
                raise UsageError(f"{o.kind.value} connection: point {point} must be a declared"
                                 f" {role.value} assembly")

    def produces(self, point: int) -> bool:
        a = self.assemblies.get(point)
        return a is not None and a.role is AssemblyRole.INPUT

    # ------------------------------------------------------------------ Forward_Open checks

    def match(self, ot_point: int, to_point: int, config: int | None) -> OfferedConnection:
        """The offered connection these points name (OpENer's search order: exclusive owner,
        input only, listen only), or ``AdapterReject``."""
        partial = False
        for kind in (ConnectionKind.EXCLUSIVE_OWNER, ConnectionKind.INPUT_ONLY,
                     ConnectionKind.LISTEN_ONLY):
            for o in self.offered:
                if o.kind is not kind or o.output != ot_point:
                    continue
                if o.input == to_point and o.config == config:
                    return o
                partial = partial or o.input != to_point
        if partial:
            raise AdapterReject(ExtendedStatus.INVALID_PRODUCING_APPLICATION_PATH)
        raise AdapterReject(ExtendedStatus.INCONSISTENT_APPLICATION_PATH)

    def expected_sizes(self, o: OfferedConnection) -> tuple[int, int]:
        """(O->T, T->O) connection sizes of an offered connection (protocol.md 6.2)."""
        out = self.assemblies[o.output]
        ot = cm.CLASS1_SEQUENCE_SIZE + (
            out.size + (RUN_IDLE_SIZE if self.ot_run_idle else 0) if out.size else 0)
        inp = self.assemblies[o.input]
        to = cm.CLASS1_SEQUENCE_SIZE + inp.size + (RUN_IDLE_SIZE if self.to_run_idle else 0)
        return ot, to

    def check_config(self, o: OfferedConnection, data: bytes | None,
                     in_use: Mapping[int, bytes]) -> None:
        """Configuration data of the data segment: the configuration assembly's size (0x0129),
        and the same bytes as a connection already open on that point (0x0106)."""
        if data is None or o.config is None:
            return
        cfg = self.assemblies[o.config]
        if len(data) != cfg.size:
            raise AdapterReject(ExtendedStatus.INVALID_CONFIGURATION_APPLICATION_PATH)
        current = in_use.get(o.config)
        if current is not None and current != data:
            raise AdapterReject(ExtendedStatus.OWNERSHIP_CONFLICT)
        cfg.data[:] = data
        cfg.updates += 1

    # ------------------------------------------------------------------ data

    def image(self, point: int) -> bytes:
        """What a T->O datagram of input ``point`` carries after the sequence count: the run/idle
        header (run) when the device sends one, then the assembly's bytes."""
        data = bytes(self.assemblies[point].data)
        return (class1.RUN_IDLE_RUN.to_bytes(4, "little") + data) if self.to_run_idle else data

    def consumed(self, point: int, datagram: bytes) -> None:
        """An exclusive owner's O->T datagram for output ``point``: its run/idle header and, in
        run mode, its image (OpENer keeps the image in idle mode; so do we). Raises
        ``MalformedPacket`` for a datagram of the wrong layout or size."""
        out = self.assemblies[point]
        d = class1.Class1Datagram.decode(datagram, run_idle_header=self.ot_run_idle)
        if len(d.data) != out.size:
            raise MalformedPacket(f"{out.size} bytes of output data, got {len(d.data)}",
                                  20, "O->T data")
        out.run_idle = d.run_idle
        if d.run_idle is None or d.run_idle & class1.RUN_IDLE_RUN:
            out.data[:] = d.data
        out.updates += 1

    def tick(self, now: float) -> None:
        if self._epoch is None:
            self._epoch = now
        for a in self.assemblies.values():
            if a.counter_interval_s is not None:
                n = int((now - self._epoch) / a.counter_interval_s) & 0xFFFFFFFF
                _DINT.pack_into(a.data, 0, n - (1 << 32) if n >= 1 << 31 else n)

    def restart(self) -> None:
        self._epoch = None

    def snapshot(self) -> list[dict[str, object]]:
        return [{"instance": a.instance, "role": a.role.value, "size": a.size,
                 "data": bytes(a.data).hex(), "updates": a.updates, "run_idle": a.run_idle}
                for a in self.assemblies.values()]


def default_adapter(*, ot_run_idle: bool = True, to_run_idle: bool = False) -> Adapter:
    """The device of OpENer's sample application: input 100 (32 bytes, counting), output 150
    (32 bytes), config 151 (10 bytes), heartbeats 152 (input only) and 153 (listen only)."""
    return Adapter(
        [Assembly(100, AssemblyRole.INPUT, 32, counter_interval_s=0.1),
         Assembly(150, AssemblyRole.OUTPUT, 32), Assembly(151, AssemblyRole.CONFIG, 10),
         Assembly(152, AssemblyRole.HEARTBEAT, 0), Assembly(153, AssemblyRole.HEARTBEAT, 0)],
        [OfferedConnection(ConnectionKind.EXCLUSIVE_OWNER, 150, 100, 151),
         OfferedConnection(ConnectionKind.INPUT_ONLY, 152, 100, 151),
         OfferedConnection(ConnectionKind.LISTEN_ONLY, 153, 100, 151)],
        ot_run_idle=ot_run_idle, to_run_idle=to_run_idle,
    )


@dataclass(slots=True, eq=False)
class InputImage:
    """An input assembly as the target's producer sees a tag (``ProducibleTag``): what each
    T->O datagram carries is ``Adapter.image``."""

    adapter: Adapter
    point: int
    name: str = ""
    produced: bool = True
    max_consumers: int = 0
    rpi_min_us: int = 100
    rpi_max_us: int = 750_000_000
    default_rpi_us: int | None = None
    unicast_allowed: bool = True

    def __post_init__(self) -> None:
        self.name = self.name or f"assembly {self.point}"
        self.max_consumers = self.max_consumers or self.adapter.max_per_point

    def size(self) -> int:
        return len(self.adapter.image(self.point))

    def image(self) -> bytes:
        return self.adapter.image(self.point)
