"""Wait on a condition with a deadline, never on a bare sleep (tests must pass on a busy
machine: a generous deadline costs nothing when the condition comes true early)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    cond: Callable[[], Any], what: str, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """``cond()``'s first truthy value, polled every ``interval`` s; AssertionError naming
    ``what`` when ``timeout`` s pass without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
