"""The reference loops of ``pyconpro bench``: what plain Python does with the same input, run as
child processes in the same run as the real thing, so that figures compare as ratios.

    python -m pyconpro.bench.bare recv --address A [--rcvbuf BYTES]
    python -m pyconpro.bench.bare sink {sqlite,jsonl,stdout} --connect EP --count N [--out PATH]

``recv``: a UDP socket like the worker's (same address, same ``SO_RCVBUF`` asked) read by a bare
``recvfrom`` loop that only counts. It prints ``{"ready": true, "port": P, "rcvbuf": B}``, then
one line ``{"count": N, "t_ns": T}`` for every 1-byte datagram (the native sender's end marker):
datagrams counted so far, and when the marker was read (``time.monotonic_ns()``).

``sink``: SUB + ``msgpack.unpackb`` + the store, nothing else: SQLite ``executemany`` into the
SQLite sink's own schema, one transaction per 1,000 samples, WAL and ``synchronous=NORMAL`` as
the sink; JSON Lines records with the JSON Lines sink's fields written to a file; the stdout
sink's line format written to stdout. It subscribes to ``sample/`` (the publisher sees the
subscription arrive), takes ``--count`` samples, makes them durable as the sink does (commit,
file flush) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import msgpack
import zmq

from pyconpro.acquisition.config import UDP_RCVBUF_DEFAULT
from pyconpro.bench.options import SINK_KINDS
from pyconpro.sinks.records import iso_time
from pyconpro.sinks.sqlite import SCHEMA

BATCH = 1000  # the sinks' default batch_size


def _say(out: TextIO, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def recv_loop(address: str, rcvbuf: int, out: TextIO) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((address, 0))
    _say(out, ready=True, port=sock.getsockname()[1],
         rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    recvfrom = sock.recvfrom
    count = 0
    while True:
        data, _source = recvfrom(2048)
        if len(data) == 1:
            _say(out, count=count, t_ns=time.monotonic_ns())
            continue
        count += 1


# ====================================================================== bare sinks


Writer = tuple[Callable[[list[dict[str, Any]]], None], Callable[[], None]]  # (write, close)


def _sqlite_writer(path: str) -> Writer:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    dumps = json.dumps
    insert = (
        "INSERT INTO samples (plc, tag, t_wall_ns, t_mono_ns, type, value_json, value_real,"
        " raw, cip_seq, gap, publisher, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )

    def write(batch: list[dict[str, Any]]) -> None:
        db.execute("BEGIN")
        db.executemany(insert, [
            (m["plc"], m["tag"], m["tw"], m["tm"], m.get("ty"), dumps(m["val"]),
             float(m["val"]) if type(m["val"]) in (int, float) else None, m["raw"], m["cs"],
             m["gap"], m["pub"], m["sq"])
            for m in batch
        ])  # fmt: skip
        db.execute("COMMIT")

    return write, db.close


def _jsonl_writer(path: str) -> Writer:
    f = open(path, "wb")  # noqa: SIM115 - closed by the returned close
    dumps = json.dumps

    def write(batch: list[dict[str, Any]]) -> None:
        for m in batch:
            v = m["val"]
            record = {
                "time": iso_time(m["tw"]), "t_wall_ns": m["tw"], "t_mono_ns": m["tm"],
                "plc": m["plc"], "tag": m["tag"], "type": m.get("ty"), "value": v,
                "value_real": float(v) if type(v) in (int, float) else None, "cip_seq": m["cs"],
                "gap": m["gap"], "publisher": m["pub"], "seq": m["sq"], "raw": m["raw"].hex(),
            }  # fmt: skip
            f.write((dumps(record, separators=(",", ":")) + "\n").encode())
        f.flush()

    return write, f.close


def _stdout_writer(out: TextIO) -> Writer:
    dumps = json.dumps

    def write(batch: list[dict[str, Any]]) -> None:
        out.write("".join(
            f"{iso_time(m['tw'])} sample {m['plc']}/{m['tag']} {m.get('ty')} = {dumps(m['val'])}"
            f"  [cs={m['cs']} gap={m['gap']} pub={m['pub']} sq={m['sq']}]\n"
            for m in batch
        ))  # fmt: skip
        out.flush()

    return write, out.flush


def sink_loop(kind: str, endpoint: str, count: int, path: str | None) -> None:
    if kind == "sqlite":
        write, close = _sqlite_writer(path or "bare.sqlite3")
    elif kind == "jsonl":
        write, close = _jsonl_writer(path or "bare.jsonl")
    else:
        write, close = _stdout_writer(sys.stdout)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)  # the sinks' default
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"sample/")
    sub.connect(endpoint)
    unpackb, recv = msgpack.unpackb, sub.recv_multipart
    batch: list[dict[str, Any]] = []
    for _ in range(count):
        batch.append(unpackb(recv()[1], raw=False))
        if len(batch) >= BATCH:
            write(batch)
            batch = []
    if batch:
        write(batch)
    close()
    sub.close()
    ctx.term()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyconpro.bench.bare", description=__doc__)
    sub = ap.add_subparsers(dest="loop", required=True)
    r = sub.add_parser("recv", help="bare recvfrom loop that counts datagrams")
    r.add_argument("--address", required=True)
    r.add_argument("--rcvbuf", type=int, default=UDP_RCVBUF_DEFAULT)
    s = sub.add_parser("sink", help="bare SUB + unpackb + store loop")
    s.add_argument("kind", choices=SINK_KINDS)
    s.add_argument("--connect", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--out", help="database or file to write (sqlite, jsonl)")
    args = ap.parse_args(argv)
    if args.loop == "recv":
        recv_loop(args.address, args.rcvbuf, sys.stdout)
    else:
        sink_loop(args.kind, args.connect, args.count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
