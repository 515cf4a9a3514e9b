"""``pyconpro browse PLC`` and ``pyconpro discover``: what is on the network, what a PLC holds.

``browse`` uploads a controller's tag list and templates over explicit messaging
(acquisition.discovery through workers.explicit_client) and prints every tag with its type, tag
bytes, the ``datasize`` a produced-tag consumer uses (tag bytes + 2) and whether it is produced.
The symbol attributes do not say whether a tag is produced nor its Max Consumers
(protocol.md 9.4): that column shows ``unknown`` unless ``--probe`` is given, which makes one
Forward_Open + Forward_Close per candidate tag and reports what the controller answered (it uses
one consumer slot of each tag for a moment — never done without asking). Tags that cannot be
standard produced tags (program scope, more than 500 bytes) say so without probing.

``discover`` sends ListIdentity by UDP broadcast on each local IPv4 interface (or to the given
addresses) and prints vendor, product, revision, serial and IP of everything that answers within
the timeout (protocol.md 2.5).

Registered in pyconpro/cli.py as ``browse`` (this module: ``add_arguments``/``run``) and
``discover`` (pyconpro.discover_cli, which re-exports ``add_discover_arguments`` /
``run_discover`` from here).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pyconpro.acquisition import cm, cpf
from pyconpro.acquisition.discovery import TagCatalog, TagInfo
from pyconpro.acquisition.errors import PyconproError
from pyconpro.acquisition.logix_objects import ExternalAccess
from pyconpro.workers.explicit_client import (
    ENIP_PORT,
    VENDOR_ID,
    DiscoveredDevice,
    ExplicitClient,
    list_identity,
    local_ipv4_interfaces,
)

VENDORS = {1: "Rockwell Automation/Allen-Bradley"}
DEVICE_TYPES = {0x0C: "communications adapter", 0x0E: "programmable logic controller",
                0x2B: "generic device"}
PROBE_RPI_US = 100_000

# Forward_Open answers that mean "this tag is not (or cannot be) produced" (protocol.md 7.6).
_NOT_PRODUCED = frozenset({0x031F, 0x012E, 0x0315})


# ---------------------------------------------------------------------------------------------
# browse
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plc", metavar="PLC", help="IP address (or host name) of the controller")
    parser.add_argument("--slot", type=int, default=0,
                        help="backplane slot of the CPU (default %(default)s); "
                             "--slot -1 sends requests unrouted (CompactLogix, simulator)")
    parser.add_argument("--port", type=int, default=ENIP_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--interface", metavar="ADDR",
                        help="local address to connect from (default: chosen by routing)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="per-request timeout in seconds (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--probe", action="store_true",
                        help="find out which tags are produced: one Forward_Open + "
                             "Forward_Close per candidate tag (briefly uses a consumer slot)")
    parser.add_argument("--no-programs", action="store_true",
                        help="skip program-scoped tags (they cannot be produced anyway)")
    parser.add_argument("--connected", action="store_true",
                        help="use a class-3 connection (faster uploads of big tag lists)")


@dataclass(slots=True)
class ProbeResult:
    produced: bool | None
    detail: str


def run(args: argparse.Namespace) -> int:
    slot = None if args.slot is not None and args.slot < 0 else args.slot
    try:
        with ExplicitClient(args.plc, port=args.port, slot=slot, local_address=args.interface,
                            timeout=args.timeout, connected=args.connected) as client:
            try:
                identity: cpf.IdentityItem | None = client.list_identity()
            except PyconproError:
                identity = None
            catalog = client.discover(programs=not args.no_programs)
            probes = probe_catalog(client, catalog, slot) if args.probe else {}
    except PyconproError as err:
        print(f"pyconpro browse: {args.plc}: {err}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(browse_json(args.plc, slot, identity, catalog, probes), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_browse(sys.stdout, args.plc, slot, identity, catalog, probes,
                     probed=args.probe)
    return 0


def probe_catalog(client: ExplicitClient, catalog: TagCatalog,
                  slot: int | None) -> dict[str, ProbeResult]:
    """One Forward_Open + Forward_Close per tag that could be produced."""
    out: dict[str, ProbeResult] = {}
    originator = random.getrandbits(32)
    for info in catalog:
        if info.produce_problem is not None:
            continue
        out[info.name] = probe_tag(client, info, slot, originator)
    return out


def probe_tag(client: ExplicitClient, info: TagInfo, slot: int | None,
              originator_serial: int) -> ProbeResult:
    result: cm.ForwardOpenSuccess | cm.ConnectionFailure | None = None
    for multicast in (False, True):
        request = cm.produced_tag_forward_open(
            tag=info.name, tag_bytes=info.byte_size, to_rpi_us=PROBE_RPI_US,
            ot_rpi_us=PROBE_RPI_US, connection_serial=random.getrandbits(16),
            vendor_id=VENDOR_ID, originator_serial=originator_serial,
            to_connection_id=random.getrandbits(32) | 1, multicast=multicast, slot=slot,
        )
        result, _ = client.forward_open(request)
        if isinstance(result, cm.ForwardOpenSuccess):
            closed = client.forward_close(cm.forward_close_for(request))
            note = "" if isinstance(closed, cm.ForwardCloseSuccess) else (
                f"; Forward_Close refused: {closed.error()}")
            return ProbeResult(True, ("produced (multicast only)" if multicast else "produced")
                               + note)
        # A producer that refuses point-to-point (0x0123/0x0124 invalid connection type)
        # may still accept multicast: try that once.
        if result.extended_status not in (0x0123, 0x0124):
            break
    assert isinstance(result, cm.ConnectionFailure)
    err = result.error()
    ext = result.extended_status
    if ext in _NOT_PRODUCED:
        return ProbeResult(False, f"not produced: Forward_Open refused with "
                                  f"0x{result.general_status:02X}/0x{ext:04X}")
    if ext == 0x031E:
        return ProbeResult(True, f"produced, all consumer slots in use ({err})")
    if ext == 0x0109 and len(result.additional) > 1:
        return ProbeResult(None, f"size refused: controller wants datasize "
                                 f"{result.additional[1]} ({err})")
    return ProbeResult(None, f"Forward_Open refused: {err}")


def _produced_text(info: TagInfo, probe: ProbeResult | None) -> str:
    if info.produce_problem is not None and info.program is not None:
        return "no (program scope)"
    if info.byte_size > 500:
        return "no (> 500 bytes)"
    if probe is None:
        return "unknown"
    return {True: "yes", False: "no", None: "?"}[probe.produced]


_ACCESS = {ExternalAccess.READ_WRITE: "read/write", ExternalAccess.READ_ONLY: "read only",
           ExternalAccess.NONE: "none"}


def _access_text(access: int | None) -> str:
    return "" if access is None else _ACCESS.get(access, str(access))  # type: ignore[call-overload]


def print_browse(out: TextIO, plc: str, slot: int | None, identity: cpf.IdentityItem | None,
                 catalog: TagCatalog, probes: dict[str, ProbeResult], *,
                 probed: bool) -> None:
    if identity is not None:
        out.write(f"{plc}: {identity.product_name}, revision {identity.revision_major}."
                  f"{identity.revision_minor}, serial 0x{identity.serial_number:08X}"
                  f"{'' if slot is None else f', slot {slot}'}\n")
    rows = [("TAG", "TYPE", "BYTES", "DATASIZE", "PRODUCED", "ACCESS", "NOTE")]
    for info in sorted(catalog, key=lambda i: (i.program or "", i.name.lower())):
        probe = probes.get(info.name)
        note = info.problem or ""
        if probe is not None and (probe.produced is not True or "(" in probe.detail):
            note = probe.detail  # a refusal, or "produced (multicast only)" and the like
        elif info.produce_problem and info.byte_size > 500:
            note = f"{info.byte_size} bytes > 500: split into several produced tags"
        rows.append((info.name, info.type_name, str(info.byte_size),
                     str(info.connection_size), _produced_text(info, probe),
                     _access_text(info.external_access), note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out.writelines("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] + "\n"
                   for r in rows)
    out.write(f"{len(catalog)} tags, {len(catalog.templates)} structure types")
    if catalog.template_problems:
        out.write(f", {len(catalog.template_problems)} unreadable")
    out.write(".\n")
    if not probed:
        out.write("PRODUCED 'unknown': the tag list does not say whether a tag is produced "
                  "(nor its max consumers); --probe asks the controller with a Forward_Open + "
                  "Forward_Close per tag.\n")


def browse_json(plc: str, slot: int | None, identity: cpf.IdentityItem | None,
                catalog: TagCatalog, probes: dict[str, ProbeResult]) -> dict[str, Any]:
    tags = []
    for info in sorted(catalog, key=lambda i: (i.program or "", i.name.lower())):
        probe = probes.get(info.name)
        produced: bool | None = probe.produced if probe is not None else None
        if info.produce_problem is not None and (info.program is not None
                                                 or info.byte_size > 500):
            produced = False
        tags.append({
            "name": info.name,
            "program": info.program,
            "type": info.type_name,
            "dims": list(info.dims),
            "element_size": info.element_size,
            "bytes": info.byte_size,
            "datasize": info.connection_size,
            "produced": produced,
            "produced_detail": (probe.detail if probe is not None
                                else info.produce_problem or "unknown: not in the tag list"),
            "max_consumers": info.max_consumers,
            "external_access": _access_text(info.external_access) or None,
            "problem": info.problem,
        })
    return {
        "plc": plc,
        "slot": slot,
        "identity": None if identity is None else _identity_json(identity),
        "fingerprint": catalog.fingerprint,
        "templates": {f"0x{tid:03X}": st.name for tid, st in sorted(catalog.templates.items())},
        "tags": tags,
    }


def _identity_json(i: cpf.IdentityItem) -> dict[str, Any]:
    return {"vendor_id": i.vendor_id, "vendor": VENDORS.get(i.vendor_id, f"vendor {i.vendor_id}"),
            "device_type": i.device_type, "product_code": i.product_code,
            "product_name": i.product_name,
            "revision": f"{i.revision_major}.{i.revision_minor}",
            "serial": f"0x{i.serial_number:08X}", "status": f"0x{i.status:04X}",
            "address": i.sockaddr.address}


# ---------------------------------------------------------------------------------------------
# discover
# ---------------------------------------------------------------------------------------------


def add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S",
                        help="how long to collect replies (default %(default)s s)")
    parser.add_argument("--interface", metavar="ADDR", action="append",
                        help="only this local address (repeatable; default: every interface)")
    parser.add_argument("--address", metavar="DEST", action="append",
                        help="ask this address (unicast or a broadcast address) instead of "
                             "each interface's broadcast address (repeatable)")
    parser.add_argument("--port", type=int, default=ENIP_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def discover_targets(interfaces: Sequence[str] | None,
                     addresses: Sequence[str] | None) -> list[tuple[str, str]]:
    """(local address, destination) pairs to send ListIdentity to."""
    known = local_ipv4_interfaces()
    if interfaces:
        locals_ = list(interfaces)
    else:
        locals_ = [i.address for i in known if not i.address.startswith("127.")] or ["0.0.0.0"]
    if addresses:
        return [(local, dest) for local in locals_ for dest in addresses]
    targets = []
    for local in locals_:
        iface = next((i for i in known if i.address == local), None)
        targets.append((local, iface.broadcast if iface and iface.broadcast
                        else "255.255.255.255"))
    return targets


def run_discover(args: argparse.Namespace) -> int:
    targets = discover_targets(args.interface, args.address)
    try:
        devices = list_identity(targets, timeout=args.timeout, port=args.port)
    except OSError as err:
        print(f"pyconpro discover: {err} (check --interface: it must be a local address)",
              file=sys.stderr)
        return 1
    if args.json:
        json.dump([{**_identity_json(d.identity), "address": d.address, "via": d.via}
                   for d in devices], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print_devices(sys.stdout, devices, targets, args.timeout)
    return 0


def print_devices(out: TextIO, devices: Sequence[DiscoveredDevice],
                  targets: Sequence[tuple[str, str]], timeout: float) -> None:
    if not devices:
        asked = ", ".join(f"{d} from {s}" for s, d in targets)
        out.write(f"no EtherNet/IP device answered within {timeout:g} s (asked {asked})\n")
        return
    rows = [("IP", "VENDOR", "PRODUCT", "TYPE", "REVISION", "SERIAL", "VIA")]
    for d in devices:
        i = d.identity
        rows.append((d.address, VENDORS.get(i.vendor_id, f"vendor {i.vendor_id}"),
                     f"{i.product_name} (code {i.product_code})",
                     DEVICE_TYPES.get(i.device_type, f"0x{i.device_type:02X}"),
                     f"{i.revision_major}.{i.revision_minor}", f"0x{i.serial_number:08X}",
                     d.via))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    out.writelines("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n"
                   for r in rows)
