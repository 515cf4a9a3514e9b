"""``pyconpro run`` with its SQLite sink SIGKILLed again and again while two simulated PLCs
produce: what the sink missed while it was down comes back from the bus's replay buffer before
live data, so every message published (as an independent subscriber that ran the whole time
saw it) is in the database exactly once and the gaps table stays empty. With a buffer shorter
than the outage, the exact range the buffer no longer held is a row of the gaps table, and the
rest is stored once. Real processes, as in test_run.py."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import pytest
import zmq
from pyconpro.acquisition import wire

from pyconpro.status_cli import request
from tests.integration import test_run
from tests.integration.test_run import Plant, Run
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

plant = test_run.plant
run_factory = test_run.run_factory

Stream = tuple[str, bytes]  # (publisher, topic)
KILLS = 10
TAGS1 = ("Counter", "Sine", "Array10", "Motor", "Message")  # line1; line2 has 2 tags


def config(plant: Plant, *, replay_s: float, sink_replay: str) -> str:
    """test_run.py's plant with every tag at 10 ms (about 700 samples/s), the replay buffer,
    and the sink's replay mode."""
    text = plant.config(line1_tags=", ".join(f'"{t}"' for t in TAGS1))
    text = re.sub(r"rpi_ms = \d+", "rpi_ms = 10", text)
    text = text.replace("[bus]\n", f"[bus]\nreplay_s = {replay_s}\n")
    assert text.count("[[sink]]") == 1
    return text + f'replay = "{sink_replay}"\n'


class Recorder:
    """An independent subscriber on the bus for the whole test: every ``sq`` of every stream,
    in arrival order. Its socket lives in its own thread, connected before ``pyconpro run``
    binds the endpoint, with no high-water mark: it loses nothing (the test checks that too)."""

    def __init__(self, endpoint: str) -> None:
        self.seen: dict[Stream, list[int]] = {}
        self.count = 0
        self._endpoint = endpoint
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bus-recorder")
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.RECONNECT_IVL, 10)
        for prefix in (b"sample/", b"event/", b"stats/"):
            sub.subscribe(prefix)
        sub.connect(self._endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sub.poll(100):
                    continue
                while True:
                    try:
                        topic, body = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = wire.decode(topic, body)
                    with self._lock:
                        self.seen.setdefault((msg.publisher, topic), []).append(msg.seq)
                        self.count += 1
        finally:
            sub.close()
            ctx.term()

    def total(self) -> int:
        with self._lock:
            return self.count

    def close(self) -> dict[Stream, list[int]]:
        """Once nothing more arrives (nothing new between two looks 0.5 s apart): stop, and
        every stream's numbers."""
        last = [-1]

        def quiet() -> bool:
            n, last[0] = self.total(), last[0]
            still, last[0] = n == last[0], n
            return still

        try:
            wait_for(quiet, "the recorder to see the bus quiet", interval=0.5)
        finally:
            self._stop.set()
            self._thread.join(10)
        return self.seen


def stored(run: Run) -> dict[Stream, list[int]]:
    """Every ``seq`` the database holds per stream (samples, events, stats), in row order."""
    db = sqlite3.connect(f"file:{run.db}?mode=ro", uri=True, timeout=10)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        out: dict[Stream, list[int]] = {}
        for pub, plc, tag, seq in db.execute(
            "SELECT publisher, plc, tag, seq FROM samples ORDER BY id"
        ):
            out.setdefault((pub, wire.topic_for_sample(plc, tag)), []).append(seq)
        for pub, plc, tag, seq in db.execute(
            "SELECT publisher, plc, tag, seq FROM events ORDER BY id"
        ):
            out.setdefault((pub, wire.topic_for_event(plc, tag)), []).append(seq)
        for pub, worker, seq in db.execute("SELECT publisher, worker, seq FROM stats ORDER BY id"):
            out.setdefault((pub, wire.topic_for_stats(worker)), []).append(seq)
        return out
    finally:
        db.close()


def gap_rows(run: Run) -> list[tuple[str, str, int, int, int, int]]:
    """Bus loss rows (outages of a tag's data at the worker are rows of their own kind)."""
    return run.query(
        "SELECT publisher, topic, expected_seq, received_seq, missed, restart FROM gaps"
        " WHERE kind = 'bus' ORDER BY id"
    )


def sink(run: Run) -> dict[str, Any]:
    st = run.status()
    return next(c for c in st["children"] if c["name"] == "sink-db")


def sample_rows(run: Run) -> int:
    try:
        return int(run.query("SELECT COUNT(*) FROM samples")[0][0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive numbers, as (first, last)."""
    out: list[tuple[int, int]] = []
    for n in sorted(seqs):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def log_times(text: str, pattern: str) -> list[float]:
    """Wall-clock times of the log lines matching ``pattern`` (the loggers' asctime)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern, line)
        if m:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def started(run: Run) -> Run:
    wait_for(lambda: sample_rows(run) > 100, "the first rows", 60)
    return run


def test_a_sink_killed_ten_times_under_load_stores_every_message_exactly_once(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    recorder = Recorder(f"ipc://{plant.tmp}/bus")
    try:
        run = started(run_factory(config(plant, replay_s=60, sink_replay="all")))
        killed: list[tuple[int, float]] = []  # (pid, when)
        for i in range(KILLS):
            rows_before = sample_rows(run)

            def fresh() -> dict[str, Any] | None:
                c = sink(run)
                ok = c["state"] == "RUNNING" and c["pid"] not in {p for p, _ in killed}
                # Every other kill as soon as the new sink runs (often mid-replay), the others
                # once it writes again.
                return c if ok and (i % 2 == 1 or sample_rows(run) > rows_before + 100) else None

            victim = wait_for(fresh, f"the sink running again before kill {i + 1}", 60)
            os.kill(victim["pid"], signal.SIGKILL)
            killed.append((victim["pid"], time.time()))
        last_kill = killed[-1][1]
        wait_for(lambda: sink(run)["state"] == "RUNNING", "the sink back after the last kill", 60)
        wait_for(lambda: run.query("SELECT COUNT(*) FROM samples WHERE t_wall_ns > ?",
                                   int((last_kill + 2) * 1e9))[0][0] > 100,
                 "rows published after the last kill", 60)  # fmt: skip
        assert sink(run)["restarts"] == KILLS
        assert run.stop() == 0, run.log_text()
        run.assert_children_gone()
    finally:
        recorded = recorder.close()

    assert gap_rows(run) == []
    got = stored(run)
    assert recorded, "the recorder saw nothing"
    for stream, seqs in recorded.items():
        assert seqs == list(range(len(seqs))), f"the recorder itself missed some of {stream}"
        rows = got.get(stream, [])
        dups = len(rows) - len(set(rows))
        missing = ranges(set(seqs) - set(rows))
        assert (dups, missing) == (0, []), f"{stream}: {dups} duplicate(s), missing {missing}"
        assert sorted(rows) == seqs, stream
    assert set(got) <= set(recorded)
    samples = sum(len(v) for k, v in recorded.items() if k[1].startswith(b"sample/"))
    log = run.log.read_text(errors="replace")
    done = [float(x) for x in re.findall(r"replay done in ([\d.]+) s", log)]
    assert done, log
    # From each SIGKILL to the end of the next replay (live data from then on), when the new
    # sink got that far before the next kill.
    ended = log_times(log, "replay done in")
    bounds = [k for _, k in killed] + [float("inf")]
    to_live = [min(t for t in ended if a < t < b) - a
               for a, b in zip(bounds, bounds[1:], strict=False) if any(a < t < b for t in ended)]
    assert to_live
    print(f"\n{KILLS} SIGKILLs: {samples} samples in {len(recorded)} streams, every one stored"
          f" exactly once, no gap; replays took {min(done):.3f}..{max(done):.3f} s; SIGKILL to"
          f" live data (restart + replay) {min(to_live):.2f}..{max(to_live):.2f} s")  # fmt: skip


def test_a_buffer_shorter_than_the_outage_records_the_exact_missing_range(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    recorder = Recorder(f"ipc://{plant.tmp}/bus")
    try:
        run = started(run_factory(config(plant, replay_s=1, sink_replay="stored")))
        # Down longer than the buffer holds: stopped (what it stored is exact), and started
        # again once 2000 more messages (about 3 s) were published.
        assert (request(run.control, {"op": "stop", "child": "sink-db"}, 10) or {}).get("ok")
        wait_for(lambda: sink(run)["state"] == "STOPPED", "the sink stopped")
        down_from = recorder.total()
        wait_for(lambda: recorder.total() > down_from + 2000, "messages while it is down", 60)
        assert (request(run.control, {"op": "start", "child": "sink-db"}, 10) or {}).get("ok")
        wait_for(lambda: "replay done in" in run.log.read_text(errors="replace"), "the replay")
        restarted = time.time_ns()
        wait_for(lambda: run.query("SELECT COUNT(*) FROM samples WHERE t_wall_ns > ?",
                                   restarted)[0][0] > 100, "live rows after the replay")
        assert run.stop() == 0, run.log_text()
        run.assert_children_gone()
    finally:
        recorded = recorder.close()

    got, gaps = stored(run), gap_rows(run)
    assert all(restart == 0 for *_, restart in gaps), gaps
    streams_with_gaps = set()
    for stream, seqs in recorded.items():
        rows = got.get(stream, [])
        recorded_gaps = [(e, r - 1, n) for p, t, e, r, n, _ in gaps if (p, t.encode()) == stream]
        if not rows:  # all of it published before the sink first connected (a new sink)
            assert recorded_gaps == [], stream
            continue
        assert len(rows) == len(set(rows)), f"duplicates in {stream}"
        expected = {s for s in seqs if s >= min(rows)}
        assert set(rows) <= expected, stream
        missing = [(a, b, b - a + 1) for a, b in ranges(expected - set(rows))]
        assert recorded_gaps == missing, (stream, recorded_gaps, missing)
        if missing:
            streams_with_gaps.add(stream)
    samples = {k for k in recorded if k[1].startswith(b"sample/")}
    assert samples <= streams_with_gaps, "every tag lost what the 1 s buffer no longer held"
    log = run.log.read_text(errors="replace")
    replayed = int(re.findall(r"replay done in [\d.]+ s: (\d+) message", log)[0])
    assert replayed > 0, "what the buffer still held came back"
    assert "the bus's replay buffer no longer held them" in log
    first = gaps[0]
    print(f"\nbuffer 1 s, sink down ~3 s: {replayed} message(s) replayed, {len(gaps)} gap row(s),"
          f" e.g. {first[1]} sq {first[2]}..{first[3] - 1} ({first[4]} missed)")  # fmt: skip
