"""Real-time priority (workers/realtime.py) as the kernel reports it for each thread: the
calling thread and its context's libzmq threads take it, what the thread starts later does not;
the bus forwarder's threads and its own context's ([bus] realtime_priority), the I/O worker's
([worker] realtime_priority); a refusal is a warning naming the fix, and normal priority."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
from typing import Any

import pytest
import zmq
from pyconpro.workers.forwarder import Forwarder
from pyconpro.workers.process import json_ready, spawn, spawn_with_log
from pyconpro.workers.realtime import set_realtime_priority

from tests.support.requirements import skip_or_fail
from tests.support.scheduling import NORMAL, need_realtime, new_threads, scheduling, threads
from tests.support.wait import wait_for
from tests.workers.worker_process import start_worker

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's policies")]

HOST = "127.61.23.1"
FIFO_7 = (os.SCHED_FIFO, 7)


def _python_thread(name: str) -> int:
    (tid,) = [t.native_id for t in threading.enumerate() if t.name == name and t.native_id]
    return tid


def test_the_thread_and_its_contexts_threads_take_it_what_it_starts_later_does_not() -> None:
    need_realtime()
    ctx: zmq.Context[Any] = zmq.Context()
    got: dict[str, Any] = {}

    def run() -> None:  # a thread of its own: the call sets the calling thread's policy
        before = set(threads(os.getpid()))
        got["granted"] = set_realtime_priority(7, "[test] realtime_priority", ctx)
        got["self"] = scheduling(0)
        got["libzmq"] = new_threads(os.getpid(), before, libzmq=2)
        later = threading.Thread(target=lambda: got.update(later=scheduling(0)))
        later.start()
        later.join()
        child = spawn([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                      stdout=subprocess.PIPE)  # fmt: skip
        got["child"] = child.communicate(30)[0].strip()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    ctx.term()
    assert got["granted"] and got["self"] == FIFO_7
    assert sorted(t.name for t in got["libzmq"].values()) == ["ZMQbg/IO/0", "ZMQbg/Reaper"]
    assert {t.sched for t in got["libzmq"].values()} == {FIFO_7}
    assert got["later"] == NORMAL and got["child"] == str(os.SCHED_OTHER)
    assert scheduling(0) == NORMAL  # this thread's never changed


@pytest.mark.parametrize("priority", [0, 7])
def test_the_forwarding_and_io_threads_run_at_the_bus_priority_the_others_at_normal(
        priority: int) -> None:
    if priority:
        need_realtime()
    want = (os.SCHED_FIFO, priority) if priority else NORMAL
    before = set(threads(os.getpid()))
    fwd = Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", replay_s=60, replay_bytes=1 << 20,
                    realtime_priority=priority)  # fmt: skip
    fwd.start()
    ctx: zmq.Context[Any] | None = None
    try:
        new = new_threads(os.getpid(), before, libzmq=2)  # its threads and its context's
        libzmq = [t for t in new.values() if t.name.startswith("ZMQbg/")]
        assert sorted(t.name for t in libzmq) == ["ZMQbg/IO/0", "ZMQbg/Reaper"]
        assert {t.sched for t in libzmq} == {want}
        assert scheduling(_python_thread("bus-forwarder")) == want
        assert scheduling(_python_thread("bus-replay")) == NORMAL  # not on the path
        assert scheduling(_python_thread("bus-connections")) == NORMAL
        assert scheduling(0) == NORMAL  # the caller's thread (the supervisor's)
        # and it forwards
        ctx = zmq.Context()
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for sock in (pub, sub):
            sock.setsockopt(zmq.LINGER, 0)
        pub.connect(fwd.upstream_endpoint)
        sub.subscribe(b"t/")
        sub.connect(fwd.public_endpoint)

        def through() -> bool:
            pub.send_multipart([b"t/", b"x"])
            return bool(sub.poll(50))

        wait_for(through, "a message through the forwarder")
        pub.close()
        sub.close()
    finally:
        fwd.stop()
        if ctx is not None:
            ctx.term()


def test_a_forwarder_at_a_realtime_priority_refuses_a_shared_context() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with pytest.raises(ValueError, match="context of its own"):
            Forwarder(f"tcp://{HOST}:0", f"tcp://{HOST}:0", context=ctx, realtime_priority=7)
    finally:
        ctx.term()


def test_a_refused_bus_priority_is_a_warning_naming_the_fix_and_the_forwarder_runs() -> None:
    prefix: list[str] = []
    if os.geteuid() == 0:  # root may: the forwarder runs as a user the limit applies to
        if shutil.which("setpriv") is None:
            skip_or_fail("setpriv", "as root this test runs the forwarder as 'nobody' with"
                         " setpriv: apt-get install util-linux")  # fmt: skip
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    elif resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 7:
        pytest.skip("RLIMIT_RTPRIO allows priority 7 to this user: nothing is refused")
    argv = [*prefix, sys.executable, "-m", "pyconpro.bench.forward", "--upstream",
            f"tcp://{HOST}:9", "--realtime-priority", "7"]  # fmt: skip
    with spawn_with_log(argv, log_prefix="pyconpro-fwd-", ready=json_ready) as child:
        assert child.ready["public"].startswith("tcp://127.0.0.1:")
        log = child.stderr_text()
        assert "real-time priority 7 refused" in log
        assert "LimitRTPRIO=7" in log and "[bus] realtime_priority = 0" in log
        assert {t.sched for t in threads(child.pid).values()} == {NORMAL}


def test_a_workers_io_thread_runs_at_its_priority() -> None:
    need_realtime()
    with start_worker("127.61.23.5", extra_args=["--realtime-priority", "7"]) as w:
        tasks = new_threads(w.pid, set(), libzmq=2)
        assert tasks[w.pid].sched == FIFO_7  # the main thread: the loop
        (io,) = [t for t in tasks.values() if t.name == "ZMQbg/IO/0"]
        assert io.sched == FIFO_7
