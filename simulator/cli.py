"""``pyconpro sim``: run the Logix PLC simulator in the foreground.

Builds the tag database (``--config FILE`` or the built-in default set), the target role
(``acquisition.target``), the simulated controller's object model
(``acquisition.logix_controller``), the fault switches and
the socket server, then serves until Ctrl-C / SIGTERM (or the control channel's ``stop``).
Logs one line per event (sessions, connections opened / rejected / closed / timed out, faults)
on stderr. Once every socket is bound it prints one line on stdout, which launchers wait for::

    READY tcp=127.0.0.2:44818 udp=127.0.0.2:2222 control=127.0.0.1:40123 pid=4242
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import TypeVar

from pyconpro.acquisition.adapter import default_adapter
from pyconpro.acquisition.logix_objects import ExternalAccess
from pyconpro.acquisition.target import ProducerTarget
from pyconpro.acquisition.target_options import (
    MULTICAST_RPI_ERRORS,
    SIZE_ERRORS,
    UNKNOWN_TAG_ERRORS,
    KeyIdentity,
    Seq16Mode,
    TargetOptions,
)
from pyconpro.simulator.control import ControlServer, parse_endpoint
from pyconpro.simulator.faults import DatagramFaults, FaultSettings
from pyconpro.simulator.server import ServerConfig, SimulatorServer
from pyconpro.workers.logfmt import LOG_FORMAT

log = logging.getLogger("pyconpro.sim")


_N = TypeVar("_N", int, float)


def _checked(convert: Callable[[str], _N], accept: Callable[[_N], bool],
             hint: str) -> Callable[[str], _N]:
    """An argparse ``type``: ``convert`` the text, refuse it unless ``accept``; the error
    quotes the text and says ``hint``."""

    def parse(text: str) -> _N:
        try:
            value = convert(text)
            if accept(value):
                return value
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"{text!r}: {hint}")

    return parse


def _code(choices: tuple[int, ...]) -> Callable[[str], int]:
    return _checked(lambda text: int(text, 0), choices.__contains__,
                    f"choose one of {', '.join(f'0x{c:04X}' for c in choices)}")


_rate = _checked(float, lambda v: 0.0 <= v <= 1.0, "give a probability between 0 and 1")
_port = _checked(int, lambda v: 0 <= v <= 65535, "give a port 0..65535 (0 = any free port)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("controller")
    g.add_argument("--config", metavar="FILE", help="tag database (TOML); default: built-in tags")
    g.add_argument(
        "--address", default="127.0.0.2", help="IPv4 address to serve on (default %(default)s)"
    )
    g.add_argument(
        "--netmask",
        default="255.0.0.0",
        help="netmask of that address: the multicast groups, and multicast "
        "consumers from outside the subnet get 0x0813 (default %(default)s)",
    )
    g.add_argument(
        "--slot", type=int, default=0, help="backplane slot of the CPU (default %(default)s)"
    )
    g.add_argument(
        "--tcp-port",
        type=_port,
        default=44818,
        help="encapsulation port, TCP and UDP (default %(default)s; 0 = any)",
    )
    g.add_argument(
        "--udp-port",
        type=_port,
        default=2222,
        help="class-1 I/O port (default %(default)s; 0 = any)",
    )
    g.add_argument(
        "--share-udp-port",
        action="store_true",
        help="open the class-1 port with SO_REUSEPORT, so that a load generator (pyconpro"
        " bench) can send T->O data from it; heartbeats still arrive here if the generator"
        " steers the port's datagrams to this socket, as pyconpro bench's does",
    )
    g.add_argument(
        "--consumer-port",
        type=_port,
        default=2222,
        help="port of P2P T->O data when the Forward_Open names none (default %(default)s)",
    )
    g.add_argument(
        "--multicast-port",
        type=_port,
        default=2222,
        help="port of multicast T->O data (default %(default)s)",
    )
    g.add_argument(
        "--control",
        metavar="[HOST:]PORT",
        help="serve the JSON control channel here (e.g. 127.0.0.1:0); default: off",
    )
    g.add_argument(
        "--max-sessions", type=int, default=64, help="encapsulation sessions (default %(default)s)"
    )
    g.add_argument(
        "--no-identity-delay",
        action="store_true",
        help="answer UDP ListIdentity at once instead of after a random delay",
    )
    g.add_argument("--seed", type=int, help="seed of every random choice (faults, delays, handles)")

    t = parser.add_argument_group("connection manager")
    t.add_argument(
        "--max-connections",
        type=int,
        default=250,
        help="connection pool, class 1 + class 3 (default %(default)s) -> 0x0113",
    )
    t.add_argument(
        "--initial-watchdog",
        type=float,
        default=10.0,
        metavar="S",
        help="first heartbeat watchdog period at least S seconds (default %(default)s)",
    )
    t.add_argument(
        "--seq16",
        choices=[m.value for m in Seq16Mode],
        default=Seq16Mode.ON_CHANGE.value,
        help="advance the 16-bit sequence on every packet or on change (default %(default)s)",
    )
    t.add_argument(
        "--size-error",
        type=_code(SIZE_ERRORS),
        default=0x0109,
        help="extended status for a wrong connection size: 0x0109 or 0x0128",
    )
    t.add_argument(
        "--unknown-tag-error",
        type=_code(UNKNOWN_TAG_ERRORS),
        default=0x031F,
        help="extended status for an unknown / not produced tag: 0x031F, 0x012E, 0x0315",
    )
    t.add_argument(
        "--close-sessions-on-timeout",
        action="store_true",
        help="OpENer-like: close an originator's TCP sessions when its last class-1 "
        "connection times out",
    )
    t.add_argument(
        "--multicast-rpi-error",
        type=_code(MULTICAST_RPI_ERRORS),
        default=0x0112,
        help="extended status for a multicast RPI mismatch: 0x0112 or 0x0801",
    )
    t.add_argument(
        "--no-large-forward-open",
        action="store_true",
        help="old firmware: answer Large_Forward_Open (0x5B) with general status "
        "0x08, so originators fall back to Forward_Open (0x54)",
    )
    parser.add_argument(
        "--adapter", choices=("none", "plain", "t2o-run-idle"), default="none",
        help="also be a generic adapter with OpENer's sample assemblies (input 100, output 150,"
        " config 151, heartbeats 152/153; docs/simulator.md); t2o-run-idle: its T->O data"
        " carries the run/idle header",
    )

    f = parser.add_argument_group("fault injection (also switchable at run time via --control)")
    f.add_argument("--drop", type=_rate, default=0.0, metavar="P", help="drop T->O datagrams")
    f.add_argument(
        "--duplicate", type=_rate, default=0.0, metavar="P", help="duplicate T->O datagrams"
    )
    f.add_argument("--reorder", type=_rate, default=0.0, metavar="P", help="reorder T->O datagrams")
    f.add_argument(
        "--delay", type=float, default=0.0, metavar="S", help="delay T->O datagrams by S seconds"
    )
    f.add_argument(
        "--delay-rate", type=_rate, default=1.0, metavar="P", help="share of datagrams delayed"
    )
    f.add_argument(
        "--stop-producing", action="store_true", help="produce no T->O data (connections stay open)"
    )
    f.add_argument(
        "--stop-answering-tcp", action="store_true", help="read TCP requests, answer none"
    )
    f.add_argument("--refuse-register", action="store_true", help="refuse RegisterSession (0x0002)")
    f.add_argument(
        "--endless-listing", choices=("new", "repeat"), default="",
        help="the symbol listing never ends: new tags forever, or the same ones again under"
        " new instance numbers",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def build(args: argparse.Namespace) -> tuple[SimulatorServer, ControlServer | None]:
    """Everything ``run`` serves, bound to its sockets (separate for in-process use)."""
    from pyconpro.acquisition.logix_controller import LogixController, TcpIpSettings
    from pyconpro.simulator import tags

    store = tags.load_store(args.config) if args.config else tags.default_store()
    ident = store.identity
    faults = FaultSettings(
        drop=args.drop,
        duplicate=args.duplicate,
        reorder=args.reorder,
        delay_s=args.delay,
        delay_rate=args.delay_rate,
        stop_producing=args.stop_producing,
        stop_answering_tcp=args.stop_answering_tcp,
        refuse_register=args.refuse_register,
        endless_listing=args.endless_listing,
    )
    rng = random.Random(args.seed)
    server_config = ServerConfig(
        address=args.address,
        tcp_port=args.tcp_port,
        udp_port=args.udp_port,
        share_udp_port=args.share_udp_port,
        max_sessions=args.max_sessions,
        udp_identity_delay=not args.no_identity_delay,
    )
    # The target needs the real UDP port (0 = any) for its O->T sockaddr item: bind first.
    target_options = TargetOptions(
        slot=args.slot,
        address=args.address,
        netmask=args.netmask,
        identity=KeyIdentity(
            ident.vendor_id,
            ident.device_type,
            ident.product_code,
            ident.revision_major,
            ident.revision_minor,
        ),
        size_error=args.size_error,
        unknown_tag_error=args.unknown_tag_error,
        multicast_rpi_error=args.multicast_rpi_error,
        max_connections=args.max_connections,
        initial_watchdog_s=args.initial_watchdog,
        seq16_mode=Seq16Mode(args.seq16),
        consumer_port=args.consumer_port,
        multicast_port=args.multicast_port,
        close_sessions_on_timeout=args.close_sessions_on_timeout,
        large_forward_open=not args.no_large_forward_open,
    )
    controller = LogixController(
        store, args.slot, tcpip=TcpIpSettings(address=args.address, netmask=args.netmask)
    )
    adapter = (default_adapter(to_run_idle=args.adapter == "t2o-run-idle")
               if args.adapter != "none" else None)
    target = ProducerTarget(store, target_options, adapter=adapter)
    server = SimulatorServer(
        server_config,
        store,
        target,
        controller,
        faults=DatagramFaults(faults, random.Random(rng.random())),
        rng=rng,
    )
    server.bind()
    target.options = replace(target_options, udp_port=server.udp_port)
    # The controller's wall clock (class 0x8B) starts at the host's time, then runs on its own
    # (clients may set it, as they set a real controller's).
    controller.wall_clock.set_utc(time.time_ns() // 1_000, server.clock())
    store.wall_clock = controller.wall_clock.utc_us  # what wall_clock generators write
    control = None
    if args.control:
        host, port = parse_endpoint(args.control)
        control = ControlServer(server, host, port)
    return server, control


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    try:
        server, control = build(args)
    except OSError as e:
        log.error(
            "cannot open the simulator's sockets on %s: %s (is another simulator running "
            "there? pick another --address or port)",
            args.address,
            e,
        )
        return 2
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        server.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    ctl = f" control={control.address[0]}:{control.address[1]}" if control else ""
    tags = list(server.store)
    # Tags with External Access "None" exist but are hidden from clients (browse lists the rest).
    visible = sum(1 for t in tags if t.external_access != ExternalAccess.NONE)
    log.info(
        "serving %d tags (%d visible to clients, %d produced) as %s slot %d",
        len(tags),
        visible,
        len(server.store.produced()),
        args.address,
        args.slot,
    )
    print(
        f"READY tcp={args.address}:{server.tcp_port} udp={args.address}:{server.udp_port}"
        f"{ctl} pid={os.getpid()}",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if control:
            control.close()
        server.close()
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyconpro.simulator", description="Run the Logix PLC simulator."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
