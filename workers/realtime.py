"""Real-time scheduling for the threads on the bus's path: the I/O worker's and the forwarder's.

``set_realtime_priority(priority, setting, context)`` runs the calling thread at a SCHED_FIFO
priority and, given a ZeroMQ context that has no socket yet, that context's own threads too
(libzmq's I/O thread, which moves every message between the sockets and the network, and its
reaper). Everything else the thread starts from then on, threads and processes, runs at normal
priority. On a host whose cores are busy with other work, a thread at normal priority waits for
a core when a datagram arrives, a heartbeat is due or a message is to be forwarded, and the
scheduler, not the program, then sets the latency (docs/performance.md "Latency, where it
goes"; docs/deployment.md "Latency on a busy host").

Why the context's threads are started here: libzmq starts them with the context's first socket,
and a new thread takes its creator's policy only when the creator's policy does not carry
``SCHED_RESET_ON_FORK`` (the kernel resets every task a task with that flag creates, a thread as
well as a process). So the calling thread first takes the policy without the flag, creates and
closes a socket (the context's threads start then, and take it), then takes it with the flag.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import zmq

__all__ = ["set_realtime_priority"]

log = logging.getLogger("pyconpro.realtime")


def set_realtime_priority(priority: int, setting: str,
                          context: zmq.Context[Any] | None = None) -> bool:  # fmt: skip
    """Run the calling thread at the SCHED_FIFO real-time ``priority`` (1..99), and with
    ``context`` (one without a socket yet) that context's libzmq threads; threads and processes
    the calling thread starts from now on run at normal priority. False, with a warning that
    names the fix (``setting``, e.g. ``"[worker] realtime_priority"``, is what to set to 0),
    when the system refuses it: everything then runs at normal priority. A context whose
    threads already run (it has had a socket) keeps them at the priority they have."""
    param = os.sched_param(priority)
    try:
        if context is not None:
            os.sched_setscheduler(0, os.SCHED_FIFO, param)  # inherited by the threads made now
            context.socket(zmq.PAIR).close(0)  # the context's first socket starts its threads
        os.sched_setscheduler(0, os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0), param)
    except (OSError, AttributeError) as exc:  # AttributeError: no such call on this system
        log.warning(
            "real-time priority %d refused (%s): running at normal priority. Allow it with"
            " CAP_SYS_NICE or an RLIMIT_RTPRIO of at least %d (systemd: LimitRTPRIO=%d), or set"
            " %s = 0", priority, exc, priority, priority, setting,
        )  # fmt: skip
        return False
    log.info("running at SCHED_FIFO real-time priority %d (%s)", priority, setting)
    return True
