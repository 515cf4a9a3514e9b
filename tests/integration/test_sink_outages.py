"""Each network sink with a spool (NATS JetStream, PostgreSQL) through the outages it must
bridge (tests/support/sink_outages.py), against a real server of the test's own that the test
kills and restarts (same port, same store): nothing lost, nothing stored twice, in order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sinks.bus_testkit import TestPublisher
from tests.support.nats import NatsServer, require_nats
from tests.support.postgres import PostgresServer, require_postgres
from tests.support.sink_outages import (
    DB,
    Destination,
    Nats,
    Postgres,
    server_killed_under_load,
    sink_killed_while_sending_its_spool,
    stop_with_the_server_down_keeps_the_spool,
)

pytestmark = pytest.mark.timeout(300)

#: Samples/s of the load test, and how many the sink spools before it is killed mid-replay.
LOAD = {"nats": 3000, "postgres": 5000}
SPOOLED = {"nats": 100_000, "postgres": 150_000}


@pytest.fixture(params=["nats", "postgres"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Destination[Any]]:
    """A sink of that kind writing to a server of this test's own."""
    out = tmp_path / "sink"
    if request.param == "nats":
        nats = NatsServer(require_nats())
        with contextlib.closing(nats):
            nats.start()
            yield Nats(nats, out)
    else:
        pg = PostgresServer(require_postgres())
        with contextlib.closing(pg):
            pg.start()
            pg.create_database(DB)
            yield Postgres(pg, out)


@pytest.mark.slow
def test_server_killed_for_30_s_under_load_loses_nothing_and_duplicates_nothing(
    dest: Destination[Any], publisher: TestPublisher
) -> None:
    server_killed_under_load(dest, publisher, rate=LOAD[dest.kind])


@pytest.mark.slow
def test_sink_killed_while_sending_its_spool_stores_each_sample_once(
    dest: Destination[Any], publisher: TestPublisher
) -> None:
    sink_killed_while_sending_its_spool(dest, publisher, SPOOLED[dest.kind])


def test_a_stop_with_the_server_down_keeps_the_spool_for_the_next_start(
    dest: Destination[Any], publisher: TestPublisher
) -> None:
    stop_with_the_server_down_keeps_the_spool(dest, publisher)
