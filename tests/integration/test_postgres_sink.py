"""The PostgreSQL sink and its spool against a real PostgreSQL server that the tests kill,
stop and restart: a real sink process fed by a real publisher, the database read back and
every tag's bus ``sq`` numbers counted (each exactly once, in order)."""

from __future__ import annotations

import dataclasses
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition.wire import Sample, SeqCounter, topic_for_sample
from pyconpro.sinks.spool import spool_depth

from tests.sinks.bus_testkit import SinkProcess, TestPublisher
from tests.support.plant import Plant, assert_outage_bridged, publish_steadily, summary
from tests.support.postgres import PostgresServer, require_postgres
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(300)

DB = "plant"
TOPICS = (b"sample/", b"event/", b"stats/")


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


def start_sink(pub: TestPublisher, srv: PostgresServer, out: Path, *extra: str) -> SinkProcess:
    proc = SinkProcess("postgres", pub.endpoint, out,
                       ["--flush-interval", "0.2", "--rcvhwm", "1000000", *extra],
                       srv.conninfo(DB))  # fmt: skip
    pub.wait_subscribed(TOPICS)
    return proc


def spooling_sink(pub: TestPublisher, srv: PostgresServer, out: Path, *extra: str
                  ) -> SinkProcess:  # fmt: skip
    """A sink started while its server is down: whatever it gets goes to its spool."""
    srv.kill()
    return start_sink(pub, srv, out, *extra)


def stored(srv: PostgresServer) -> int:
    """Samples in the database, 0 while it is down or has no table yet."""
    import psycopg

    try:
        return int(srv.query(DB, "SELECT count(*) FROM pyconpro.samples")[0][0])
    except psycopg.Error:
        return 0


def spooled(out: Path) -> int:
    return spool_depth(out / "spool" / "postgres.spool")


def assert_each_once_in_order(srv: PostgresServer, plant: Plant, first: int = 0) -> None:
    """Every tag's samples, by receive time, are its ``sq`` numbers from ``first`` on, with
    none missing and none twice, up to the last one published."""
    rows = srv.query(DB, "SELECT t.tag, s.seq FROM pyconpro.samples s JOIN pyconpro.tags t"
                         " ON t.id = s.tag_id ORDER BY t.tag, s.time")  # fmt: skip
    got: dict[str, list[int]] = {}
    for tag, seq in rows:
        got.setdefault(tag, []).append(seq)
    per_tag = plant.next_seqs()
    for tag in plant.tags:
        assert got.get(tag) == list(range(first, per_tag[tag])), tag


@pytest.mark.slow
def test_server_killed_for_30_s_under_load_loses_nothing_and_duplicates_nothing(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    """5 000 samples/s over 50 tags; the server SIGKILLed 5 s in and restarted 30 s later;
    5 s more: every sample published reaches it exactly once, in order per tag."""
    plant = Plant(50)
    rate = 5000
    proc = start_sink(publisher, server, tmp_path / "sink")
    restarted_at = 0.0

    def restart() -> None:
        nonlocal restarted_at
        server.start()
        restarted_at = time.monotonic()

    at = publish_steadily(publisher, plant, rate, 40.0, {5.0: server.kill, 35.0: restart})
    killed_at = at[5.0]
    wait_for(lambda: stored(server) == plant.sent, f"{plant.sent} samples stored", timeout=120)
    drained_s = time.monotonic() - restarted_at
    assert stored(server) == plant.sent
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert_each_once_in_order(server, plant)
    # What the server missed went through the spool, and came back out of it.
    counts = assert_outage_bridged(proc.stderr, 30 * rate * 0.9)
    print(f"\n{plant.sent} samples, {plant.sent - killed_at} while the server was down or"
          f" back; all stored {drained_s:.1f} s after the restart; spooled"
          f" {counts['spooled']}")  # fmt: skip


@pytest.mark.slow
def test_sink_killed_while_sending_its_spool_stores_each_sample_once(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(20)
    out = tmp_path / "sink"
    proc = spooling_sink(publisher, server, out)
    n = 150_000
    plant.publish(publisher, n)
    wait_for(lambda: spooled(out) == n, f"{n} samples in the spool", timeout=120)
    server.start()
    # SIGKILL as soon as the first batches are in: mid-replay, between any commit and the
    # spool's delete of what it committed.
    wait_for(lambda: stored(server) > 0, "the replay to start", timeout=60, interval=0.005)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(30)
    at_kill = stored(server)
    assert 0 < at_kill < n, "the replay ended before the kill: the test proves nothing"
    first_log = proc.stderr

    proc = start_sink(publisher, server, out)
    wait_for(lambda: stored(server) == n, f"{n} samples stored", timeout=120)
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert_each_once_in_order(server, plant)
    assert summary(proc.stderr)["spool_depth"] == 0
    assert "from before: sending them first" in proc.stderr, first_log[-2000:]


@pytest.mark.slow
def test_a_full_spool_drops_the_oldest_counts_them_and_keeps_running(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(10)
    out = tmp_path / "sink"
    proc = spooling_sink(publisher, server, out, "--spool-max-bytes", str(1 << 20))
    n = 20_000  # about 3 MB of samples for a 1 MiB spool
    plant.publish(publisher, n)
    wait_for(lambda: "dropped the" in proc.stderr, "the spool to drop its oldest", timeout=60)
    server.start()
    wait_for(lambda: stored(server) and stored(server) == n - dropped_so_far(out)
             and spool_gaps(server) == dropped_so_far(out),
             "what the spool kept, and the record of what it dropped, to be stored",
             timeout=120)  # fmt: skip
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    counts = summary(proc.stderr)
    dropped = counts["spool_dropped"]
    assert dropped > 0 and stored(server) == n - dropped
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


def test_a_stop_with_the_server_down_keeps_the_spool_for_the_next_start(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    plant = Plant(5)
    out = tmp_path / "sink"
    proc = spooling_sink(publisher, server, out)
    plant.publish(publisher, 1000)
    wait_for(lambda: proc.stderr.count("cannot reach the server"), "the sink to try")
    rc = proc.terminate()  # graceful: what is in memory goes to the spool
    assert rc == 0, proc.stderr
    assert "stopping with 1000 record(s) in the spool" in proc.stderr
    assert spooled(out) == 1000

    server.start()
    proc = start_sink(publisher, server, out)
    wait_for(lambda: stored(server) == 1000, "the spooled samples to be stored")
    publisher.close()
    assert proc.terminate() == 0, proc.stderr
    assert_each_once_in_order(server, plant)
    assert spooled(out) == 0


def test_samples_of_a_restarted_publisher_are_stored_whatever_their_numbers(
    server: PostgresServer, publisher: TestPublisher, tmp_path: Path
) -> None:
    """A worker that restarts numbers its messages from 0 again: the key (tag, time, sq)
    keeps its new samples apart from the old ones with the same numbers."""
    plant = Plant(2)
    proc = start_sink(publisher, server, tmp_path / "sink")
    first = [plant.next() for _ in range(10)]
    again = [dataclasses.replace(s, t_wall_ns=s.t_wall_ns + 10**9) for s in first]
    for s in [*first, *again]:
        publisher.send(s)
    wait_for(lambda: stored(server) == 20, "both runs stored")
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
