#!/usr/bin/env python3
"""Benchmark of the I/O worker's class-1 receive path, stage by stage, in one process.

For each tag shape it times, per datagram:
  baseline   one struct.unpack_from of the 20-byte prefix (the floor any Python parser pays)
  parse      acquisition.class1.Class1Datagram.decode
  demux      acquisition.demux.Demux.receive (parse + route lookup + seq32 + size checks)
  decode     demux + the tag's compiled value decoder
  publish    decode + msgpack-encoding the bus Sample with wire.SampleStream (what the worker
             sends)
  validated  the same with the fully validated wire.Sample.encode, for comparison
and prints microseconds per datagram, the ratio to the baseline measured in the same run, and
how many datagrams per second one core sustains at the "publish" stage. Machines are noisy:
compare the ratios, not the absolute numbers, across machines.

    python scripts/bench_receive.py [--datagrams N] [--connections K]
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable
from typing import Any

from pyconpro.acquisition import class1, wire
from pyconpro.acquisition.demux import Delivery, Demux
from pyconpro.acquisition.logix_codec import compile_decoder, compile_encoder
from pyconpro.acquisition.logix_types import (
    ArrayType,
    AtomicType,
    DataTypeCode,
    LogixType,
    StructType,
    byte_size,
)

_PREFIX = struct.Struct("<HHHIIHHH")

MOTOR = StructType.build(
    "BenchMotor",
    [("Running", "BOOL"), ("Faulted", "BOOL"), ("Speed", "REAL"), ("Counts", "DINT", 40),
     ("Temps", "REAL", 40), ("Name", "STRING")],
    instance_id=0x300, handle=0x3000,
)

SHAPES: list[tuple[str, LogixType, Any]] = [
    ("DINT", AtomicType(DataTypeCode.DINT), 7),
    ("REAL[100]", ArrayType(AtomicType(DataTypeCode.REAL), (100,)), [float(i) for i in range(100)]),
    # a zero image decoded gives a valid value of the UDT
    (f"UDT ({byte_size(MOTOR)} bytes)", MOTOR, compile_decoder(MOTOR)(bytes(byte_size(MOTOR)))),
]


def _time(fn: Callable[[bytes], object], frames: list[bytes]) -> float:
    start = time.perf_counter()
    for f in frames:
        fn(f)
    return (time.perf_counter() - start) / len(frames)


def bench(name: str, t: LogixType, value: Any, n: int, connections: int) -> None:
    image = compile_encoder(t)(value)
    decoder = compile_decoder(t)
    demux = Demux()
    source = ("10.0.0.5", 2222)
    for k in range(connections):
        demux.add(source, 0x1000 + k, len(image), owner=k)
    frames = [
        class1.Class1Datagram(
            0x1000 + (i % connections), i // connections + 1, i & 0xFFFF, image
        ).encode()
        for i in range(n)
    ]
    seqs = wire.SeqCounter()

    def baseline(f: bytes) -> object:
        return _PREFIX.unpack_from(f)

    def parse(f: bytes) -> object:
        return class1.Class1Datagram.decode(f)

    def make_demux_stage(extra: Callable[[Delivery], object] | None) -> Callable[[bytes], object]:
        def stage(f: bytes) -> object:
            d = demux.receive(f, source)
            return extra(d) if extra and d is not None else d

        return stage

    def with_decode(d: Delivery) -> object:
        return decoder(d.datagram.data)

    stream = wire.SampleStream("bench", "plc1", name, name)

    def with_publish(d: Delivery) -> object:
        return stream.encode(
            time.time_ns(),
            time.monotonic_ns(),
            d.datagram.cip_sequence,
            0,
            decoder(d.datagram.data),
            d.datagram.data,
        )

    def with_validated_sample(d: Delivery) -> object:
        s = wire.Sample(
            seq=0,
            publisher="bench",
            plc="plc1",
            tag=name,
            t_wall_ns=time.time_ns(),
            t_mono_ns=time.monotonic_ns(),
            cip_seq=d.datagram.cip_sequence,
            gap=0,
            value=decoder(d.datagram.data),
            raw=d.datagram.data,
            type_name=name,
        )
        topic = s.topic
        return s.encode(), seqs.next(topic)

    results = {"baseline": _time(baseline, frames), "parse": _time(parse, frames)}
    stages = (
        ("demux", None),
        ("decode", with_decode),
        ("publish", with_publish),
        ("validated", with_validated_sample),
    )
    for stage, extra in stages:
        # fresh routes each stage: the seq32 check would drop replays as stale
        demux = Demux()
        for k in range(connections):
            demux.add(source, 0x1000 + k, len(image), owner=k)
        results[stage] = _time(make_demux_stage(extra), frames)
    assert demux.drops and sum(demux.drops.values()) == 0, demux.drops
    base = results["baseline"]
    print(f"\n{name}: {len(image)} tag bytes, {connections} connections, {n} datagrams")
    for stage, sec in results.items():
        print(f"  {stage:<9} {sec * 1e6:8.2f} us/datagram  x{sec / base:6.1f} baseline")
    print(f"  -> {1 / results['publish']:,.0f} datagrams/s on one core at the publish stage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=50_000)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    for name, t, value in SHAPES:
        bench(name, t, value, args.datagrams, args.connections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
