"""The bus forwarder of ``pyconpro run`` on its own, for the latency figure's forwarded step.

    python -m pyconpro.bench.forward --upstream EP [--realtime-priority N]

Runs ``workers.forwarder.Forwarder`` as the supervisor does, with ``[bus]``'s defaults (HWM,
linger, the replay buffer with its capture socket, a context of its own) and
``--realtime-priority`` as ``[bus] realtime_priority``: its XSUB connected to the publisher at
EP (the worker's PUB socket), its XPUB bound on a loopback port the kernel chooses. It is a
process of its own, as the supervisor is to the worker and the sinks. It prints
``{"ready": true, "public": ENDPOINT}`` and forwards until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from pyconpro.acquisition.config import BusConfig
from pyconpro.workers.forwarder import Forwarder


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyconpro.bench.forward", description=__doc__)
    ap.add_argument("--upstream", required=True, help="the publisher's endpoint to connect to")
    ap.add_argument("--realtime-priority", type=int, choices=range(100), default=0,
                    metavar="0..99", help="[bus] realtime_priority [0: normal scheduling]")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    bus = BusConfig()
    fwd = Forwarder("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", hwm=bus.hwm,
                    linger_ms=bus.linger_ms, replay_s=bus.replay_s,
                    replay_bytes=bus.replay_bytes,
                    realtime_priority=args.realtime_priority)  # fmt: skip
    fwd.start()
    try:
        fwd.set_upstreams([args.upstream])
        sys.stdout.write(json.dumps({"ready": True, "public": fwd.public_endpoint}) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        fwd.stop()  # and its context
    return 0


if __name__ == "__main__":
    sys.exit(main())
