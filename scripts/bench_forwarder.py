#!/usr/bin/env python3
"""Throughput of the supervisor's bus forwarder vs a direct PUB/SUB link, in the same run.

    scripts/bench_forwarder.py [--messages N] [--size BYTES] [--address 127.x.y.z]

A publisher process sends N two-frame messages ``[topic, body]`` (body of --size bytes, about a
sample's size by default) as fast as it can; a subscriber process receives them. Three paths are
measured one after the other on loopback TCP with kernel-chosen ports:

  direct      PUB (bind) -> SUB                         what a per-worker endpoint would give
  forwarder   PUB (connect) -> XSUB | proxy | XPUB -> SUB  what `pyconpro run` gives
  (workers.forwarder)

Prints messages/s and MB/s per path and the forwarder's cost relative to direct. HWMs are
unlimited here so that nothing is dropped and the rate is the real end-to-end rate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyconpro.workers.forwarder import Forwarder

TOPIC = b"sample/bench/Tag/"
WARM = b"warm/"
END = b"end/"


def _publisher(endpoint: str, bind: bool, n: int, size: int, go: mp.synchronize.Event) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 30_000)
    if bind:
        pub.bind(endpoint)
    else:
        pub.connect(endpoint)
    body = b"x" * size
    # Slow-joiner handshake: send warm-up messages until the subscriber has seen one.
    while not go.wait(0.01):
        pub.send_multipart([WARM, b""])
    for _ in range(n):
        pub.send_multipart([TOPIC, body])
    for _ in range(10):
        pub.send_multipart([END, b""])
    pub.close()
    ctx.term()


def _measure(pub_ep: str, pub_bind: bool, sub_ep: str, n: int, size: int) -> tuple[float, int]:
    """Returns (seconds from first to last message, messages received)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, 20_000)
    sub.subscribe(b"")
    sub.connect(sub_ep)
    go = mp.Event()
    proc = mp.Process(target=_publisher, args=(pub_ep, pub_bind, n, size, go), daemon=True)
    proc.start()
    got = 0
    first = last = 0.0
    try:
        while True:
            try:
                topic, _body = sub.recv_multipart()
            except zmq.Again:
                print("  (timed out waiting for messages)", file=sys.stderr)
                break
            if topic == WARM:
                go.set()
                continue
            if topic == END:
                break
            if got == 0:
                first = time.perf_counter()
            got += 1
            last = time.perf_counter()
    finally:
        go.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        sub.close()
    return (last - first, got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=160, help="body bytes per message [160]")
    ap.add_argument("--address", default="127.0.0.1", help="loopback address to use")
    args = ap.parse_args(argv)
    host = args.address
    results: dict[str, float] = {}

    # direct: the publisher binds, the subscriber connects.
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    probe = ctx.socket(zmq.PUB)
    probe.bind(f"tcp://{host}:0")
    direct_ep = probe.getsockopt_string(zmq.LAST_ENDPOINT)
    probe.close()  # the publisher process re-binds the same kernel-chosen port
    secs, got = _measure(direct_ep, True, direct_ep, args.messages, args.size)
    results["direct"] = _report("direct PUB -> SUB", secs, got, args.messages, args.size)

    fwd = Forwarder(f"tcp://{host}:0", f"tcp://{host}:0", hwm=0, linger_ms=0)
    fwd.start()
    try:
        secs, got = _measure(
            fwd.upstream_endpoint, False, fwd.public_endpoint, args.messages, args.size
        )
        results["forwarder"] = _report(
            "PUB -> forwarder (XSUB/XPUB proxy) -> SUB", secs, got, args.messages, args.size
        )
        stats = fwd.stats()
        if stats is not None:
            print(f"  forwarder counters: {stats.as_dict()}")
    finally:
        fwd.stop()
    if results.get("direct") and results.get("forwarder"):
        ratio = results["forwarder"] / results["direct"]
        print(f"forwarder / direct = {ratio:.2f}")
    return 0


def _report(label: str, secs: float, got: int, n: int, size: int) -> float:
    rate = got / secs if secs > 0 else 0.0
    mb = rate * (size + len(TOPIC)) / 1e6
    lost = f", {n - got} lost" if got != n else ""
    print(f"{label:45s} {rate:12,.0f} msgs/s  {mb:7.1f} MB/s  ({got} msgs{lost})")
    return rate


if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    sys.exit(main())
