"""Shared fixtures. Keep this file small: helpers live in ``tests/support/``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import golden_pcap
from tests.support import tshark as _tshark


@pytest.fixture(scope="session")
def tshark_bin() -> str:
    """Path of tshark; skips the test when missing (fails when PYCONPRO_REQUIRE_TSHARK=1)."""
    return _tshark.require_tshark()


@pytest.fixture(scope="session")
def tshark_frames(tshark_bin: str) -> Callable[[str], dict[int, _tshark.FrameFields]]:
    """``tshark_frames("eipscanner_opener.pcap")`` -> {frame number: FrameFields}; each
    reference capture is dissected once per session."""

    def get(name: str) -> dict[int, _tshark.FrameFields]:
        return _tshark.dissect(golden_pcap(name))

    return get
