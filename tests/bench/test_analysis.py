"""The pure parts of ``pyconpro bench``: heartbeat timing against its ideal schedule, the step
counter's accounting of ``cs`` and ``sq``, the ladder that finds a zero-loss ceiling, and the
JSON record. Synthetic inputs with known answers; no process, no socket, no clock."""

from __future__ import annotations

import argparse
import math
import random

import pytest

from pyconpro.bench import heartbeats, runner
from pyconpro.bench.ceiling import Step, climb, held_rate
from pyconpro.bench.common import Figure
from pyconpro.bench.counting import StepCounter
from pyconpro.bench.native import SendResult
from pyconpro.bench.options import FIGURES, add_arguments
from pyconpro.bench.sinks import SinkOptions

MS = 1_000_000


def schedule(cid: int, origin: int, period: int, slots: range,
             late: list[int] | int = 0) -> list[tuple[int, int, int]]:
    lateness = late if isinstance(late, list) else [late] * len(slots)
    return [(origin + k * period + lt, cid, k + 1) for k, lt in zip(slots, lateness, strict=True)]


def test_heartbeats_on_time_have_no_lateness_and_the_nominal_rate() -> None:
    recs = schedule(7, 10**18, 10 * MS, range(1000))
    s = heartbeats.analyse(recs, 10 * MS)
    assert (s.connections, s.heartbeats, s.skipped, s.duplicates) == (1, 1000, 0, 0)
    assert set(s.lateness_ns) == {0} and s.rate_ratio == pytest.approx(1.0)


def test_lateness_is_measured_from_the_start_of_the_arc_even_across_zero() -> None:
    rng = random.Random(4)
    late = [rng.randrange(0, 3 * MS) for _ in range(500)]
    late[17] = 0  # the earliest one is on time
    # origin's phase near the end of the period: late heartbeats wrap past phase 0
    recs = schedule(1, 10**15 + 9 * MS, 10 * MS, range(500), late)
    s = heartbeats.analyse(recs, 10 * MS)
    assert sorted(s.lateness_ns) == sorted(late)
    assert s.skipped == 0 and s.duplicates == 0


def test_missing_slots_are_skipped_slots() -> None:
    slots = [k for k in range(200) if k % 10 != 5]  # 20 slots missing between first and last
    recs = [(10**12 + k * MS, 3, k) for k in slots]
    s = heartbeats.analyse(recs, MS)
    assert s.skipped == 20 and s.duplicates == 0
    # 180 heartbeats over 199 periods
    assert s.rate_error_pct == pytest.approx(100 * (179 / 199 - 1), rel=1e-9)


def test_a_drifting_sender_shows_in_the_rate_and_the_skipped_slots() -> None:
    recs = [(10**12 + round(k * 1.25 * MS), 9, k) for k in range(4001)]
    s = heartbeats.analyse(recs, MS)
    assert s.rate_error_pct == pytest.approx(-20.0, rel=1e-3)
    assert s.skipped == pytest.approx(1000, abs=5)


def test_connections_are_judged_each_on_its_own_phase() -> None:
    recs = schedule(1, 10**12, 10 * MS, range(100), 1 * MS) + schedule(
        2, 10**12 + 3 * MS, 10 * MS, range(100), 2 * MS)
    recs.append((10**12, 0, 0))  # a datagram too short to carry an id: ignored
    s = heartbeats.analyse(recs, 10 * MS)
    assert s.connections == 2 and s.heartbeats == 200 and set(s.lateness_ns) == {0}


def test_ideal_phase_makes_the_mean_lateness_smallest() -> None:
    # heartbeats more than a period apart: any phase puts each in a slot of its own
    assert heartbeats.ideal_phase([4, 15, 26], 10) == 4  # phases 4, 5, 6
    assert heartbeats.ideal_phase([7, 18, 29, 41], 10) == 7  # the arc 7, 8, 9, 1 wraps past 0
    # phases 1, 2, 3, 8: lateness 0, 1, 2, 7 (sum 10) beats 0, 3, 4, 5 from 8 (sum 12)
    assert heartbeats.ideal_phase([1, 12, 23, 38], 10) == 1


def test_ideal_phase_puts_every_heartbeat_in_a_slot_of_its_own() -> None:
    # phases 2, 3, 1, 4 (lateness 1, 2, 0, 3 from phase 1): by the mean lateness alone phase 2
    # wins (sum 0, 1, 9, 2 = 12 against 6 from phase 1), reading 21 as slot 1's second heartbeat
    ts = [2, 13, 21, 34]
    assert heartbeats.ideal_phase(ts, 10) == 1
    s = heartbeats.analyse([(t, 1, 0) for t in ts], 10)
    assert s.lateness_ns == (0, 1, 2, 3) and s.skipped == 0 and s.duplicates == 0


def test_heartbeats_a_little_earlier_than_most_are_not_read_as_the_previous_slot() -> None:
    # 1 ms for 5 s: most arrive 30-40 us after their deadline, a few 0-6 us after it (a quicker
    # wake-up). Counting one of 5,000 as a whole period late costs 0.2 us of mean lateness,
    # less than starting the arc those few microseconds earlier: that read each of them as the
    # previous slot's second heartbeat and its own slot as skipped.
    rng = random.Random(15)
    late = [30_000 + rng.randrange(10_000) for _ in range(5000)]
    for k in rng.sample(range(1, 5000), 12):
        late[k] = rng.randrange(6_000)
    late[2500] = 0
    recs = schedule(4, 10**15 + 700_000, MS, range(5000), late)
    s = heartbeats.analyse(recs, MS)
    assert s.skipped == 0 and s.duplicates == 0
    assert sorted(s.lateness_ns) == sorted(late)


def test_a_slot_the_sender_skipped_is_skipped_and_a_catch_up_is_an_extra() -> None:
    rng = random.Random(2)
    late = [rng.randrange(50_000) for _ in range(1000)]
    late[0] = 0
    recs = schedule(1, 10**12, MS, range(1000), late)
    # slot 400 went without: slot 401's heartbeat came 1.3 periods after slot 400's deadline
    skip = [r for r in recs if r[2] != 401]
    late_one = [(t + 300_000 if seq == 402 else t, c, seq) for t, c, seq in skip]
    s = heartbeats.analyse(late_one, MS)
    assert (s.skipped, s.duplicates) == (1, 0)
    assert s.lateness_ns[-1] == 300_000 + late[401]
    # the same stall caught up by sending slot 400's heartbeat with slot 401's: at the receiver
    # both fall in slot 401; the receiver cannot tell a catch-up from a skipped slot
    stalled = 10**12 + 401 * MS + 300_000
    caught_up = [(stalled if seq == 401 else stalled + 20_000 if seq == 402 else t, c, seq)
                 for t, c, seq in recs]
    s = heartbeats.analyse(caught_up, MS)
    assert (s.skipped, s.duplicates) == (1, 1)


def test_a_sender_faster_than_the_period_shows_extra_heartbeats() -> None:
    recs = [(10**12 + round(k * 0.8 * MS), 9, k) for k in range(5001)]
    s = heartbeats.analyse(recs, MS)
    assert s.rate_error_pct == pytest.approx(25.0, rel=1e-3)
    assert s.duplicates == pytest.approx(1000, abs=2) and s.skipped == 0


def test_a_few_very_late_heartbeats_do_not_move_the_schedule() -> None:
    late = [0, 1 * MS, 2 * MS] * 100 + [8 * MS] * 5  # a sparse cluster 8 ms late of 10
    recs = schedule(5, 10**12, 10 * MS, range(len(late)), late)
    s = heartbeats.analyse(recs, 10 * MS)
    assert sorted(s.lateness_ns) == sorted(late)
    assert s.skipped == 0 and s.duplicates == 0


def _sample(sq: int, cs: int, tm: int = 0) -> dict[str, object]:
    return {"sq": sq, "cs": cs, "tm": tm}


def test_step_counter_counts_loss_by_where_it_happened() -> None:
    a, b = b"sample/p/A/", b"sample/p/B/"
    c = StepCounter({a: 0, b: 1})
    c.begin([0xFFFE, 10], record=True)
    c.handle(a, _sample(1, 0xFFFD), 1)  # sent before this step: stray
    c.handle(a, _sample(2, 0xFFFE), 2)
    c.handle(a, _sample(3, 0x0001), 3)  # cs 0xFFFF and 0x0000 never came: 2 lost before the bus
    c.handle(b, _sample(40, 10), 4)
    c.handle(b, _sample(43, 11, tm=77), 5)  # two messages lost on the bus
    c.handle(b"event/p/A/", {"k": "timeout"}, 6)
    assert (c.received, c.cip_lost, c.bus_lost, c.stray, c.last_rx_ns) == (4, 2, 2, 1, 5)
    assert c.events == {"timeout": 1}
    assert c.samples == [(0, 0, 2, 0), (0, 3, 3, 0), (1, 0, 4, 0), (1, 1, 5, 77)]
    c.begin([2, 12])
    assert (c.received, c.cip_lost, c.bus_lost, c.samples) == (0, 0, 0, [])


def _step(rate: float, ok: bool, achieved: float | None = None) -> Step:
    seconds = 1.0
    sent = round((achieved or rate) * seconds)
    return Step("test", rate, sent, SendResult(sent, 0, int(seconds * 1e9), 1, 0),
                sent if ok else sent - 1, 0, 0, 0, 0.0, 0.1, 0.5)


def test_climb_finds_the_highest_held_rate_then_bisects() -> None:
    capacity = 45_000.0
    seen: list[float] = []

    def step(rate: float) -> Step:
        seen.append(rate)
        return _step(rate, rate <= capacity)

    ladder = climb(step, 10_000.0, 2.0, 2, lambda _: None)
    assert seen[:3] == [10_000.0, 20_000.0, 40_000.0] and seen[3] == 80_000.0
    assert ladder.best is not None and 40_000.0 <= ladder.best.rate <= capacity
    assert len(seen) == 6 and ladder.note == ""


def test_climb_goes_down_when_the_first_step_fails() -> None:
    ladder = climb(lambda r: _step(r, r <= 3000), 10_000.0, 2.0, 0, lambda _: None)
    assert ladder.best is not None and ladder.best.rate == 2500.0


def test_climb_stops_where_the_source_cannot_keep_up() -> None:
    ladder = climb(lambda r: _step(r, True, achieved=min(r, 300_000.0)), 100_000.0, 2.0, 2,
                   lambda _: None)
    assert ladder.best is not None and ladder.best.rate == 400_000.0
    assert held_rate(ladder) == pytest.approx(300_000.0)  # what the source achieved there
    assert "load source reached its limit" in ladder.note


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_defaults_and_explicit_options() -> None:
    plan = runner.plan_from_args(_args("--quick", "--connections", "7", "--only", "ceiling,sinks"))
    assert plan.figures == ("ceiling", "sinks")
    assert plan.ceiling.streams == 7 and plan.ceiling.step_s < 1
    assert plan.sinks.samples < SinkOptions().samples
    full = runner.plan_from_args(_args("--hb-single-rpi-ms", "2"))
    assert full.figures == FIGURES and full.single.connections == 1 and full.single.rpi_ms == 2
    # open: the target's 1,000 connections across 10 PLCs at RPI 100 ms, held 60 s; --quick
    # keeps the RPI and holds seconds
    assert (full.open.connections, full.open.plcs, full.open.rpi_ms, full.open.hold_s) == (
        1000, 10, 100.0, 60.0)
    quick = runner.plan_from_args(_args("--quick"))
    assert quick.open.plcs == 2 and quick.open.rpi_ms == 100.0 and quick.open.hold_s <= 2


@pytest.mark.parametrize("argv, message", [
    (["--only", "ceiling,speed"], "from ceiling, latency"),
    (["--repeat", "0"], "above 0"),
    (["--addresses", "10.0.0"], "loopback"),
])
def test_bad_options_say_what_to_give(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _args(*argv)
    assert message in capsys.readouterr().err


def test_record_has_one_key_per_figure_value_with_the_spread_of_repeats() -> None:
    plan = runner.plan_from_args(_args("--only", "open"))
    keys = runner.figure_keys("open")
    runs = [Figure(values={k: float(i) for k in keys}) for i in (3, 1, 2)]
    runs[1].values["open_add_ms"] = math.nan
    rec = runner.record(runs, plan, False, ["machine"], 1.0)
    assert set(rec["figures"]) == set(keys)
    assert rec["figures"]["open_timeouts"] == 2.0
    assert rec["spread"]["open_timeouts"] == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert rec["figures"]["open_add_ms"] == 2.5  # the median of what was measured
