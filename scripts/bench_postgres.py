#!/usr/bin/env python3
"""The PostgreSQL sink's figures (docs/sinks.md): its ingest rate against a bare COPY loop of
the same data in the same run, how fast it sends a spooled backlog, and the spool's size per
record.

Starts a throw-away PostgreSQL server (Debian's ``postgresql``, as the tests do:
``tests/support/postgres.py``; run from the checkout, as root or as a user initdb accepts).

1. ingest: N samples of 100 REAL tags, encoded as a worker encodes them, sent as fast as an
   XPUB socket sends them to ``pyconpro.sinks.cli postgres`` (what ``pyconpro run`` starts);
   time from the first message to the moment the database holds N rows.
2. bare COPY: the same N bodies, ``msgpack.unpackb`` each, rows built, ``COPY ... FROM STDIN
   (FORMAT BINARY)`` in transactions of ``batch_size`` rows into a table of the same shape
   (with its unique index), in this process.
3. spool: the server stopped, the same N samples sent to a fresh sink: they all go to its spool
   (bytes per record: the spool file with its WAL, and what the spool counts against
   ``spool_max_bytes``); then the server started: the time until the database holds N rows.

    .venv/bin/python scripts/bench_postgres.py [--samples 200000]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psycopg
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyconpro.acquisition.wire import Sample, SeqCounter, topic_for_sample  # noqa: E402
from pyconpro.sinks.postgres import (  # noqa: E402
    _SAMPLE_COLUMNS,
    _SAMPLE_TYPES,
    SCHEMA_SQL,
    _json_text_dumper,
    value_columns,
)
from pyconpro.sinks.spool import spool_depth  # noqa: E402
from pyconpro.workers.process import spawn  # noqa: E402

from tests.support.postgres import PostgresServer, bin_dir  # noqa: E402

TAGS = 100
BATCH = 1000


def dataset(n: int) -> list[tuple[bytes, bytes]]:
    seqs = SeqCounter()
    t0 = time.time_ns()
    out = []
    for i in range(n):
        tag = f"Tag{i % TAGS:03d}"
        s = Sample(seq=seqs.next(topic_for_sample("plc1", tag)), publisher="w1", plc="plc1",
                   tag=tag, t_wall_ns=t0 + i * 100_000, t_mono_ns=i * 100_000, cip_seq=i & 0xFFFF,
                   gap=0, value=i * 0.25, raw=i.to_bytes(4, "little"), type_name="REAL")
        out.append(s.encode())
    return out


def count(srv: PostgresServer, db: str, table: str = "pyconpro.samples") -> int:
    try:
        return int(srv.query(db, f"SELECT count(*) FROM {table}")[0][0])
    except psycopg.Error:
        return 0


def run_sink(srv: PostgresServer, db: str, data: list[tuple[bytes, bytes]], spool: Path,
             down: bool, rate: float = 0.0) -> tuple[float, float, int]:
    """Send ``data`` to a sink process (as fast as possible, or ``rate`` per second); (seconds
    until stored or spooled, seconds from the server's start until stored when ``down``, the
    spool's files' bytes when full)."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind("tcp://127.83.61.7:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    spool.parent.mkdir(parents=True, exist_ok=True)
    log = spool.parent / "sink.log"
    child = spawn([sys.executable, "-m", "pyconpro.sinks.cli", "postgres", "--connect",
                   endpoint, "--conninfo", srv.conninfo(db), "--spool-dir", str(spool),
                   "--rcvhwm", "10000000"], stderr=log, cwd=ROOT)
    try:
        pub.setsockopt(zmq.RCVTIMEO, 30_000)
        while pub.recv()[:1] != b"\x01":
            pass
        n = len(data)
        start = time.monotonic()
        for i, (topic, body) in enumerate(data):
            pub.send_multipart([topic, body])
            if rate and i % 100 == 99:
                time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        if down:
            path = spool / "postgres.spool"
            while spool_depth(path) < n:
                time.sleep(0.05)
            took = time.monotonic() - start
            full = sum(p.stat().st_size for p in spool.glob("postgres.spool*"))
            srv.start()
            back = time.monotonic()
            while count(srv, db) < n:
                time.sleep(0.02)
            return took, time.monotonic() - back, full
        while count(srv, db) < n:
            time.sleep(0.02)
        return time.monotonic() - start, 0.0, 0
    finally:
        child.stop(30)
        pub.close(0)
        ctx.term()
        words = re.findall(r"sink stopped: .*\bspooled=(\d+)", log.read_text())
        how = f"paced at {rate:.0f}/s" if rate else "burst"
        print(f"  (sink {how}: {words[-1] if words else '?'} record(s) went through the spool)")


def bare_copy(srv: PostgresServer, db: str, data: list[tuple[bytes, bytes]]) -> float:
    with psycopg.connect(srv.conninfo(db), autocommit=True) as conn:
        conn.adapters.register_dumper(None, _json_text_dumper())
        for statement in SCHEMA_SQL.format(s="bare").split(";"):
            if statement.strip():
                conn.execute(statement)
        ids = {}
        for i in range(TAGS):
            row = conn.execute("INSERT INTO bare.tags (plc, tag) VALUES ('plc1', %s)"
                               " RETURNING id", (f"Tag{i:03d}",)).fetchone()
            assert row is not None
            ids[f"Tag{i:03d}"] = row[0]
        import datetime as dt

        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        cols = ", ".join(_SAMPLE_COLUMNS)
        start = time.monotonic()
        for i in range(0, len(data), BATCH):
            rows = []
            for _topic, body in data[i : i + BATCH]:
                m = msgpack.unpackb(body, raw=False)
                rows.append((epoch + dt.timedelta(microseconds=m["tw"] // 1000), ids[m["tag"]],
                             *value_columns(m["val"]), m["tw"], m["tm"], m["cs"], m["gap"],
                             m["raw"], m["pub"], m["sq"]))
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY bare.samples ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(list(_SAMPLE_TYPES))
                    for row in rows:
                        cp.write_row(row)
        return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=20_000.0,
                    help="the paced run's samples/s [%(default)s]")
    args = ap.parse_args(argv)
    found = bin_dir()
    if found is None:
        print("PostgreSQL server binaries not found: apt-get install postgresql", file=sys.stderr)
        return 2
    data = dataset(args.samples)
    n = len(data)
    srv = PostgresServer(found)
    try:
        srv.start()
        for name in ("sink", "paced", "bare", "spooled"):
            srv.create_database(name)
        with tempfile.TemporaryDirectory(prefix="pyconpro-bench-pg-") as tmp:
            sink_s, _, _ = run_sink(srv, "sink", data, Path(tmp) / "a" / "spool", down=False)
            bare_s = bare_copy(srv, "bare", data)
            print(f"ingest  sink {n / sink_s:9.0f} samples/s   bare COPY {n / bare_s:9.0f}"
                  f" samples/s   ratio {bare_s / sink_s:.2f}")
            paced_s, _, _ = run_sink(srv, "paced", data, Path(tmp) / "p" / "spool", down=False,
                                     rate=args.rate)
            print(f"paced   sent at {args.rate:.0f}/s: all stored {paced_s - n / args.rate:.2f} s"
                  " after the last was sent")
            spool = Path(tmp) / "b" / "spool"
            srv.stop()
            spool_s, drain_s, files = run_sink(srv, "spooled", data, spool, down=True)
            print(f"spool   {n / spool_s:9.0f} samples/s into the spool; sent to the server at"
                  f" {n / drain_s:9.0f} samples/s once it was back ({drain_s:.1f} s for {n})")
            print(f"spool holding {n}: {files / n:.0f} bytes per record on disk (file + WAL)")
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
