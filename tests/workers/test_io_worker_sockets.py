"""The I/O worker's sockets, opened in this process (no PLC needed): the UDP receive buffer it
asks for, and what it reports about it."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.workers.io_worker import DEFAULT_UDP_RCVBUF, IoWorker, WorkerOptions
from pyconpro.workers.realtime import set_realtime_priority

LOCAL = "127.61.12.1"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux doubles and caps SO_RCVBUF (socket(7))")


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


@pytest.fixture
def open_worker() -> Iterator[list[IoWorker]]:
    opened: list[IoWorker] = []
    yield opened
    for w in opened:
        w.close()


def start(opened: list[IoWorker], **kw: object) -> IoWorker:
    w = IoWorker(WorkerOptions(local_address=LOCAL, udp_port=0, pub_endpoint="tcp://127.0.0.1:0",
                               control_endpoint="tcp://127.0.0.1:0", **kw))  # type: ignore[arg-type]
    opened.append(w)
    w.open()
    return w


@linux_only
def test_udp_receive_buffer_asked_read_back_and_reported(open_worker: list[IoWorker]) -> None:
    asked = min(256 * 1024, rmem_max())
    w = start(open_worker, udp_rcvbuf=asked)
    assert w.udp is not None
    granted = w.udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert granted == 2 * asked  # Linux reports twice what it was asked (socket(7))
    status = w.status()
    assert status["udp_rcvbuf"] == granted and status["counters"]["udp_rcvbuf"] == granted


@linux_only
def test_default_asks_4_mib_and_a_capped_grant_is_logged_with_the_fix(
        open_worker: list[IoWorker], caplog: pytest.LogCaptureFixture) -> None:
    assert DEFAULT_UDP_RCVBUF == 4 << 20
    caplog.set_level(logging.INFO, logger="pyconpro.io_worker")
    w = start(open_worker)
    assert w.udp_rcvbuf == 2 * min(DEFAULT_UDP_RCVBUF, rmem_max())
    caplog.clear()
    w2 = start(open_worker, udp_rcvbuf=2 * rmem_max())  # more than the kernel allows
    assert w2.udp_rcvbuf == 2 * rmem_max()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("net.core.rmem_max" in m and str(w2.udp_rcvbuf) in m for m in warnings)


def test_zero_keeps_the_system_default(open_worker: list[IoWorker]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    w = start(open_worker, udp_rcvbuf=0)
    assert w.udp_rcvbuf == default


@pytest.mark.parametrize("text", ["-1", str((1 << 30) + 1), "4MiB"])
def test_a_bad_command_line_value_is_refused_naming_the_range(
        text: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pyconpro.workers.io_worker import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["--local-address", LOCAL, "--udp-rcvbuf", text])
    err = capsys.readouterr().err
    assert "--udp-rcvbuf" in err and ("0 = the system default" in err)


@linux_only
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_config_file_sets_the_buffer_and_the_command_line_wins(tmp_path: Path) -> None:
    from tests.workers.worker_process import start_worker

    asked = min(128 * 1024, rmem_max())
    config = tmp_path / "pipeline.toml"
    # a PLC nobody answers for: the worker only needs to be assigned to LOCAL
    config.write_text(f"[worker]\nudp_rcvbuf = {asked}\n\n[[plc]]\nname = \"p\"\n"
                      f"address = \"127.61.12.9\"\nlocal_address = \"{LOCAL}\"\n"
                      "  [[plc.tag]]\n  name = \"Counter\"\n  size = 4\n")
    with start_worker(LOCAL, extra_args=["--config", str(config)]) as w:
        assert w.control("status")["udp_rcvbuf"] == 2 * asked
    with start_worker(LOCAL, extra_args=["--config", str(config),
                                         "--udp-rcvbuf", str(asked // 2)]) as w:
        assert w.control("status")["udp_rcvbuf"] == asked


@linux_only
def test_realtime_priority_is_the_threads_or_refused_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # In a thread of its own: the call sets the calling thread's policy (and that of the threads
    # it starts later), never this test's.
    got: dict[str, int | bool] = {}

    def run() -> None:
        got["granted"] = set_realtime_priority(7, "[worker] realtime_priority")
        got["policy"] = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
        got["priority"] = os.sched_getparam(0).sched_priority

    caplog.set_level(logging.INFO, logger="pyconpro")
    thread = threading.Thread(target=run, name="realtime-under-test")
    thread.start()
    thread.join(10)
    if got["granted"]:
        assert (got["policy"], got["priority"]) == (os.SCHED_FIFO, 7)
        assert "real-time priority 7" in caplog.text
    else:  # no CAP_SYS_NICE here (not root, or a container without it): the fix is named
        assert os.geteuid() != 0 or "Operation not permitted" in caplog.text
        assert got["policy"] == os.SCHED_OTHER
        assert "LimitRTPRIO=7" in caplog.text and "[worker] realtime_priority = 0" in caplog.text
    assert os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER
