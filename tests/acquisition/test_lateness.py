"""The heartbeat lateness histogram (acquisition/lateness.py): percentiles to the bucket's
upper edge, the exact maximum, late values beyond the last bucket, reset per interval."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyconpro.acquisition.lateness import BUCKET_S, LatenessHistogram


def test_empty_says_none() -> None:
    h = LatenessHistogram()
    assert h.summary_ms() == {"p50_ms": None, "p99_ms": None, "max_ms": None}


def test_percentiles_of_known_values() -> None:
    h = LatenessHistogram()
    for us in range(1, 101):  # 1 .. 100 us
        h.add(us * 1e-6)
    assert h.count == 100
    assert h.percentile_s(0.5) == pytest.approx(50e-6)  # the 50th value is in [50, 60) us
    assert h.percentile_s(0.99) == pytest.approx(100e-6)  # the 99th is 99 us: edge 100 us
    assert h.summary_ms() == {"p50_ms": 0.05, "p99_ms": 0.1, "max_ms": 0.1}


def test_late_beyond_the_buckets_and_early_values() -> None:
    h = LatenessHistogram()
    h.add(-0.001)  # a negative value counts as on time
    h.add(0.5)  # half a second: past the last bucket, the maximum is still exact
    assert h.percentile_s(0.5) == pytest.approx(BUCKET_S)
    assert h.percentile_s(1.0) == 0.5 and h.max_s == 0.5


def test_reset_starts_a_new_interval() -> None:
    h = LatenessHistogram()
    h.add(0.002)
    h.reset()
    h.add(0.0001)
    assert h.count == 1 and h.max_s == 0.0001


@given(st.lists(st.floats(0, 0.02), min_size=1, max_size=300), st.sampled_from([0.5, 0.99]))
def test_a_percentile_is_within_one_bucket_of_the_exact_one(values: list[float],
                                                            q: float) -> None:
    h = LatenessHistogram()
    for v in values:
        h.add(v)
    exact = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    got = h.percentile_s(q)
    assert got is not None
    if exact < 0.01:
        assert exact <= got + 1e-12 and got - exact <= BUCKET_S + 1e-12
    assert got <= max(values) + 1e-12


def test_many_values_cost_no_memory() -> None:
    h = LatenessHistogram()
    rng = random.Random(1)
    for _ in range(100_000):
        h.add(rng.random() * 0.002)
    assert len(h.counts) == 1001 and h.count == 100_000
