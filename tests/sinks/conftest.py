"""Fixtures of the sink tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sinks.bus_testkit import TestPublisher


@pytest.fixture
def publisher() -> Iterator[TestPublisher]:
    """A ZeroMQ publisher on loopback that the sink processes under test connect to."""
    pub = TestPublisher()
    try:
        yield pub
    finally:
        pub.close()
