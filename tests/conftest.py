"""Shared fixtures. Keep this file small: helpers live in ``tests/support/``."""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.sinks.bus_testkit import publisher  # noqa: F401 (a fixture)
from tests.support import golden_pcap, leaks
from tests.support import tshark as _tshark
from tests.support.mosquitto import mosquitto_broker, mqtt_root  # noqa: F401 (fixtures)
from tests.support.nats import nats_server  # noqa: F401 (fixtures)
from tests.support.postgres import postgres_db, postgres_server  # noqa: F401 (fixtures)
from tests.support.receive_paths import PATHS, use_receive_path

# A suite started in the background by a shell without job control (`cmd &` in a script)
# inherits SIGINT ignored, and every process a test starts would inherit it too: the tests of
# Ctrl-C would then see programs that, rightly, ignore it. Tests send their own SIGINTs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(params=PATHS)
def receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per receive path of the worker ("python", "compiled"); the compiled
    one skips where it was not built (fails where PYCONPRO_REQUIRE_FASTPATH=1)."""
    return use_receive_path(str(request.param), monkeypatch)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads, child processes or sockets behind (STYLE.md #14).

    Things finish asynchronously (a stopped thread, a process reaped a moment later), so the
    check retries for up to two seconds before it fails. Leaked child processes are killed so
    one bad test does not cascade into the next.
    """
    before = leaks.snapshot()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        found = leaks.leaked(before, leaks.snapshot())
        if not found or time.monotonic() > deadline:
            break
        gc.collect()  # sockets owned by unreachable objects close when collected
        time.sleep(0.05)
    if found:
        for line in found.get("processes", []):
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        pytest.fail(f"{request.node.nodeid} left behind: {found}", pytrace=False)
