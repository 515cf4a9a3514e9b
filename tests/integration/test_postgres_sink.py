"""The PostgreSQL sink and its spool against a real PostgreSQL server: a real sink process fed
by a real publisher, the database read back and every tag's bus ``sq`` numbers counted (each
exactly once, in order). The outages it shares with the other network sinks (server killed,
sink killed mid-replay, stop while the server is down) are in test_sink_outages.py."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition.wire import Sample, SeqCounter, topic_for_sample

from tests.sinks.bus_testkit import SinkProcess, TestPublisher
from tests.support.plant import Plant, summary
from tests.support.postgres import PostgresServer, require_postgres
from tests.support.sink_outages import DB, TOPICS, Postgres
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server of this test's own (it is killed and restarted), with database ``plant``."""
    srv = PostgresServer(require_postgres())
    try:
        srv.start()
        srv.create_database(DB)
        yield srv
    finally:
        srv.close()


@pytest.mark.slow
def test_a_full_spool_drops_the_oldest_counts_them_and_keeps_running(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(10)
    out = tmp_path / "sink"
    dest = Postgres(server, out)
    proc = dest.spooling_sink(publisher, "--spool-max-bytes", str(1 << 20))
    n = 20_000  # about 3 MB of samples for a 1 MiB spool
    plant.publish(publisher, n)
    wait_for(lambda: "dropped the" in proc.stderr, "the spool to drop its oldest", timeout=60)
    server.start()
    wait_for(lambda: dest.stored() and dest.stored() == n - dropped_so_far(out)
             and spool_gaps(server) == dropped_so_far(out),
             "what the spool kept, and the record of what it dropped, to be stored",
             timeout=120)  # fmt: skip
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    counts = summary(proc.stderr)
    dropped = counts["spool_dropped"]
    assert dropped > 0 and dest.stored() == n - dropped
    # Per tag, what was stored and what the gap rows say was dropped make up every sample
    # published, each once: the oldest in the spool went at each drop (those not yet sent).
    stored_seqs: dict[str, list[int]] = {}
    for tag, seq in server.query(DB, "SELECT t.tag, s.seq FROM pyconpro.samples s JOIN"
                                     " pyconpro.tags t ON t.id = s.tag_id"):  # fmt: skip
        stored_seqs.setdefault(tag, []).append(seq)
    dropped_seqs: dict[str, list[int]] = {}
    for topic, first, end, missed in server.query(
        DB, "SELECT topic, expected_seq, received_seq, missed FROM pyconpro.gaps"
            " WHERE kind = 'spool'"
    ):  # fmt: skip
        assert end - first == missed  # one stream's dropped records are a run of its sq
        dropped_seqs.setdefault(topic.split("/")[2], []).extend(range(first, end))
    for tag in plant.tags:
        assert sorted(stored_seqs[tag] + dropped_seqs.get(tag, [])) == list(range(n // 10))
    gaps = server.query(DB, "SELECT sum(missed)::bigint, min(expected_seq) FROM pyconpro.gaps"
                            " WHERE kind = 'spool'")  # fmt: skip
    assert gaps == [(dropped, 0)] and counts["spool_depth"] == 0
    assert "spool_max_bytes reached" in proc.stderr


def dropped_so_far(out: Path) -> int:
    """What the spool dropped, from the sink's log lines (``dropped the N oldest``)."""
    log = (out / "stderr.txt").read_text(errors="replace")
    return sum(int(x) for x in re.findall(r"dropped the (\d+) oldest", log))


def spool_gaps(srv: PostgresServer) -> int:
    """Samples the database says a full spool dropped (its gaps of kind 'spool')."""
    rows = srv.query(DB, "SELECT coalesce(sum(missed), 0)::bigint FROM pyconpro.gaps"
                         " WHERE kind = 'spool'")  # fmt: skip
    return int(rows[0][0])


def test_samples_of_a_restarted_publisher_are_stored_whatever_their_numbers(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    """A worker that restarts numbers its messages from 0 again: the key (tag, time, sq)
    keeps its new samples apart from the old ones with the same numbers."""
    plant = Plant(2)
    dest = Postgres(server, tmp_path / "sink")
    proc = dest.start_sink(publisher)
    first = [plant.next() for _ in range(10)]
    again = [dataclasses.replace(s, t_wall_ns=s.t_wall_ns + 10**9) for s in first]
    for s in [*first, *again]:
        publisher.send(s)
    wait_for(lambda: dest.stored() == 20, "both runs stored")
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert summary(proc.stderr)["restarts"] == 2


def doc_query(name: str) -> str:
    """The SQL block of docs/sinks.md that starts with ``-- query: <name>``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "sinks.md").read_text()
    for block in re.findall(r"```sql\n(.*?)```", text, re.DOTALL):
        if block.startswith(f"-- query: {name}\n"):
            return str(block)
    raise AssertionError(f"docs/sinks.md has no query {name!r}")


def test_the_documented_queries_answer_what_they_say(
    postgres_db: str, publisher: TestPublisher, tmp_path: Path
) -> None:
    import datetime as dt

    import psycopg
    from pyconpro.acquisition.wire import Event, EventKind

    t0 = time.time_ns() // 10**9 * 10**9
    seqs = SeqCounter()

    def smp(tag: str, i: int, value: object, ty: str) -> Sample:
        return Sample(seq=seqs.next(topic_for_sample("press1", tag)), publisher="w1",
                      plc="press1", tag=tag, t_wall_ns=t0 + i * 10**9, t_mono_ns=i * 10**9,
                      cip_seq=i, gap=0, value=value, raw=b"\0\0\0\0", type_name=ty)  # type: ignore[arg-type]  # fmt: skip

    sent = [smp("PressForce", i, 10.0 + i, "REAL") for i in range(10)]
    sent += [smp("Status", i, {"Speed": i, "On": True}, "PressUdt") for i in range(3)]
    outage = Event(seq=0, publisher="w1", plc="press1", tag="PressForce",
                   t_wall_ns=t0 + 5 * 10**9 + 1, t_mono_ns=5 * 10**9 + 1, kind=EventKind.OUTAGE,
                   message="outage", outage_start_wall_ns=t0 + 4 * 10**9,
                   outage_start_mono_ns=4 * 10**9, expected=9, rpi_us=100_000, cause="timeout",
                   resumed=True)  # fmt: skip
    proc = SinkProcess("postgres", publisher.endpoint, tmp_path / "sink", ["--flush-interval",
                       "0.1"], postgres_db)  # fmt: skip
    publisher.wait_subscribed(TOPICS)
    for s in sent:
        publisher.send(s)
    publisher.send(outage)
    publisher.close()
    assert proc.terminate() == 0, proc.stderr

    def utc(ns: int) -> str:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()

    with psycopg.connect(postgres_db) as db:
        last = db.execute(doc_query("last value per tag")).fetchall()
        assert [(r[0], r[1], r[3]) for r in last] == [
            ("press1", "PressForce", 19.0), ("press1", "Status", {"Speed": 2, "On": True})]
        assert last[0][2] == dt.datetime.fromtimestamp((t0 + 9 * 10**9) / 1e9, dt.UTC)
        ranged = doc_query("one tag over a time range").replace(
            "2026-12-01 08:00:00+00", utc(t0 + 2 * 10**9)).replace(
            "2026-12-01 09:00:00+00", utc(t0 + 5 * 10**9))  # fmt: skip
        assert [r[1] for r in db.execute(ranged)] == [12.0, 13.0, 14.0]
        gaps = db.execute(doc_query("gaps of one tag")).fetchall()
        assert [(g[0], g[3], g[4]) for g in gaps] == [("outage", 9, "timeout")]
