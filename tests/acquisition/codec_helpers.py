"""Shared assertions for the four tests every wire struct gets (STYLE.md #12)."""

from collections.abc import Callable

import pytest
from pyconpro.acquisition.errors import MalformedPacket


def assert_prefixes_malformed(decode: Callable[[bytes], object], data: bytes) -> None:
    """Every strict prefix of a valid encoding must raise MalformedPacket, nothing else."""
    for n in range(len(data)):
        with pytest.raises(MalformedPacket):
            decode(data[:n])
