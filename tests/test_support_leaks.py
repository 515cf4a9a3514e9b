"""The leak detector behind the autouse ``no_leaks`` fixture finds what it should."""

import socket
import subprocess
import sys
import threading

from tests.support import leaks


def test_detects_a_thread_a_process_and_a_socket() -> None:
    before = leaks.snapshot()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="leaky-thread")
    t.start()
    # A bare Popen on purpose, not workers/process.spawn: the detector must find any child
    # this process has, however it was started (the helper's exec wrapper, process group and
    # parent-death signal are not what is tested here).
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        found = leaks.leaked(before, leaks.snapshot())
        assert found["threads"] == ["leaky-thread"]
        assert [line.split()[0] for line in found["processes"]] == [str(p.pid)]
        assert len(found["sockets"]) == 1
    finally:
        stop.set()
        t.join()
        p.kill()
        p.wait()
        s.close()
    assert leaks.leaked(before, leaks.snapshot()) == {}


def test_a_reaped_process_is_not_a_leak() -> None:
    before = leaks.snapshot()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert leaks.leaked(before, leaks.snapshot()) == {}
