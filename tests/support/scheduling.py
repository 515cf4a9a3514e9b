"""Which threads of a process run at which scheduling policy (``/proc/PID/task``), and whether
this machine lets a test ask for a real-time one (CAP_SYS_NICE or an ``RLIMIT_RTPRIO``).

    need_realtime()                        # skipped here, a failure in CI (as root)
    threads(pid)[tid].sched == (os.SCHED_FIFO, 7)
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.support.requirements import skip_or_fail
from tests.support.wait import wait_for

NORMAL = (os.SCHED_OTHER, 0)


@dataclass(frozen=True)
class Task:
    name: str  # the kernel's: "python" for Python threads, "ZMQbg/IO/0" for libzmq's I/O thread
    sched: tuple[int, int]  # (policy without SCHED_RESET_ON_FORK, priority)


def scheduling(tid: int) -> tuple[int, int]:
    """(policy without ``SCHED_RESET_ON_FORK``, priority) of thread ``tid`` (0: the caller)."""
    return (os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK,
            os.sched_getparam(tid).sched_priority)  # fmt: skip


def threads(pid: int) -> dict[int, Task]:
    """Every thread of process ``pid`` now, by thread id (those that end meanwhile left out)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = Task((task / "comm").read_text().strip(),
                                       scheduling(int(task.name)))  # fmt: skip
        except (OSError, ValueError):
            continue
    return out


def new_threads(pid: int, before: set[int], libzmq: int) -> dict[int, Task]:
    """The threads of ``pid`` not in ``before``, once ``libzmq`` of them carry libzmq's names
    (``ZMQbg/...``: a new thread names itself a moment after it starts)."""
    found: dict[int, Task] = {}

    def named() -> bool:
        found.clear()
        found.update((tid, t) for tid, t in threads(pid).items() if tid not in before)
        return sum(t.name.startswith("ZMQbg/") for t in found.values()) >= libzmq

    wait_for(named, f"{libzmq} libzmq threads named")
    return found


def need_realtime() -> None:
    """Skip (fail where ``PYCONPRO_REQUIRE_REALTIME=1``, as CI sets as root) when this process
    may not run a thread at a SCHED_FIFO priority."""
    refused: list[OSError] = []

    def attempt() -> None:  # in a thread of its own: this one's policy stays as it is
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError as exc:
            refused.append(exc)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    if refused:
        skip_or_fail("realtime", f"a SCHED_FIFO priority is refused here ({refused[0]}): run as"
                     " root, or with CAP_SYS_NICE or an RLIMIT_RTPRIO (ulimit -r) of at least 7")
