"""What a test leaves behind: Python threads, child processes, open sockets (STYLE.md #14).

Read from ``threading`` and ``/proc`` only, so it needs no extra dependency. Used by the
autouse fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Snapshot:
    threads: frozenset[int]
    children: frozenset[int]
    sockets: frozenset[str]


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        out.update(int(p) for p in text.split())
    return out


def alive(pid: int) -> bool:
    """``pid`` still runs: it exists and is not a zombie (a zombie has exited; its parent reaps
    it later). For tests that wait until processes they did not start are gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # zombies are reaped later, not leaked


def _sockets() -> set[str]:
    out: set[str] = set()
    for fd in Path("/proc/self/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(f"{fd.name}->{target}")
    return out


# Children that a session-scoped fixture owns (a database server shared by the tests): the
# test that first asked for one did not leak it; the fixture stops it at the end.
_session_children: set[int] = set()


def session_child(pid: int) -> None:
    """``pid`` belongs to a session fixture: not counted as left behind by any test."""
    _session_children.add(pid)


def snapshot() -> Snapshot:
    return Snapshot(
        frozenset(t.ident for t in threading.enumerate() if t.ident is not None and t.is_alive()),
        frozenset(p for p in _children(os.getpid()) if alive(p) and p not in _session_children),
        frozenset(_sockets()),
    )


def leaked(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    threads = {t.ident: t for t in threading.enumerate()}
    out: dict[str, list[str]] = {}
    new_threads = after.threads - before.threads
    if new_threads:
        out["threads"] = sorted(threads[i].name if i in threads else str(i) for i in new_threads)
    new_children = after.children - before.children
    if new_children:
        out["processes"] = [_describe(p) for p in sorted(new_children)]
    new_sockets = after.sockets - before.sockets
    if new_sockets:
        out["sockets"] = sorted(new_sockets)
    return out


def _describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        cmd = "?"
    return f"{pid} {cmd[:120]}"
