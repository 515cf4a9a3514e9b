"""The benchmark's native load source (pyconpro/bench/sender.c): built with the machine's C
compiler, it sends the datagrams of its plan with exactly the sequence numbers it should.

Every datagram is read from a real UDP socket and decoded with ``acquisition.class1``; its bytes
must equal what ``Class1Datagram.encode`` (what the simulator sends) gives for that stream and
sequence. Needs gcc (``apt-get install gcc``): skipped without it, failed in CI
(``PYCONPRO_REQUIRE_GCC=1``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyconpro.acquisition import class1

from pyconpro.bench import native
from pyconpro.bench.procs import BenchError
from tests.support.requirements import skip_or_fail

pytestmark = pytest.mark.timeout(120)

SOURCE = "127.83.62.2"  # the producer's address (the worker believes data only from it)
DEST = "127.83.62.1"


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return native.build_sender(tmp_path_factory.mktemp("cache"))
    except BenchError as exc:
        skip_or_fail("gcc", f"cannot build the load source: {exc}")


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((DEST, 0))
    sock.settimeout(10.0)
    yield sock
    sock.close()


def receive(sock: socket.socket, n: int) -> list[tuple[bytes, str]]:
    out = []
    for _ in range(n):
        data, src = sock.recvfrom(65536)
        out.append((data, src[0]))
    return out


def test_build_is_cached_per_source(tmp_path: Path, exe: Path) -> None:
    first = native.build_sender(tmp_path)
    assert first.parent == tmp_path and os.access(first, os.X_OK)
    stamp = first.stat().st_mtime_ns
    assert native.build_sender(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert first.name == exe.name  # named by the source's hash


def test_datagrams_decode_to_the_expected_sequence_numbers(
    exe: Path, receiver: socket.socket, tmp_path: Path
) -> None:
    images = [(7).to_bytes(4, "little"), bytes(range(200)) * 2, b"\x01\x02"]
    ids = [0x11110001, 0x11110002, 0xDEADBEEF]
    # sequence numbers about to wrap: 32-bit, 16-bit, and both
    starts = [(0xFFFFFFFE, 5), (100, 0xFFFE), (0xFFFFFFFF, 0xFFFF)]
    streams = [native.Stream(native.template(i, img), s32, s16)
               for i, img, (s32, s16) in zip(ids, images, starts, strict=True)]
    sender = native.Sender(exe, SOURCE, receiver.getsockname(), streams, tmp_path)
    timing = tmp_path / "timing.bin"
    rounds = 4
    sender.start(20_000.0, rounds, timing=timing, end_marker=True)
    got = receive(receiver, rounds * len(streams) + 1)
    result = sender.finish(30.0)

    assert result.sent == rounds * len(streams) and result.errors == 0
    *data, (marker, _) = got
    assert marker == b"\x00"
    for k, (raw, src) in enumerate(data):
        i, r = k % len(streams), k // len(streams)
        d = class1.Class1Datagram.decode(raw)
        s32, s16 = starts[i]
        assert src == SOURCE
        assert (d.connection_id, d.sequence, d.cip_sequence, d.data) == (
            ids[i], (s32 + r) & 0xFFFFFFFF, (s16 + r) & 0xFFFF, images[i])
        assert raw == class1.Class1Datagram(ids[i], d.sequence, d.cip_sequence, images[i]).encode()
    # the streams continue where this run ended
    assert [(s.seq32, s.seq16) for s in streams] == [
        ((s32 + rounds) & 0xFFFFFFFF, (s16 + rounds) & 0xFFFF) for s32, s16 in starts]
    t_call, first = native.read_timing(timing)
    assert len(t_call) == len(first) == result.calls >= 1
    assert list(first) == sorted(first) and first[0] == 0 and first[-1] < result.sent
    assert result.t_start_ns <= t_call[0] and t_call[-1] <= result.t_end_ns


def test_a_second_run_continues_the_sequence(
    exe: Path, receiver: socket.socket, tmp_path: Path
) -> None:
    stream = native.Stream(native.template(0x42, b"\x00" * 4), 1, 1)
    sender = native.Sender(exe, SOURCE, receiver.getsockname(), [stream], tmp_path)
    seqs = []
    for _ in range(2):
        sender.start(5000.0, 3)
        seqs += [class1.Class1Datagram.decode(raw).sequence for raw, _ in receive(receiver, 3)]
        sender.finish(30.0)
    assert seqs == [1, 2, 3, 4, 5, 6]


def test_a_shared_port_sends_from_it_and_leaves_what_arrives_to_its_first_socket(
    exe: Path, receiver: socket.socket, tmp_path: Path
) -> None:
    """How the benchmark sends from the simulator's class-1 port: the simulator's socket
    (here ``first``) keeps receiving every heartbeat sent to that port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind((SOURCE, 0))
        first.settimeout(10.0)
        port = first.getsockname()[1]
        stream = native.Stream(native.template(0x42, b"\x00" * 4), 1, 1)
        sender = native.Sender(exe, SOURCE, receiver.getsockname(), [stream], tmp_path,
                               bind_port=port, share_port=True)
        sender.start(100.0, 100)  # one second
        try:
            data, src = receiver.recvfrom(2048)  # it runs, from the shared port
            assert src == (SOURCE, port) and class1.Class1Datagram.decode(data).sequence == 1
            for k in range(1, 21):
                receiver.sendto(class1.heartbeat(7, k), (SOURCE, port))
            beats = [class1.Class1Datagram.decode(first.recvfrom(2048)[0]).sequence
                     for _ in range(20)]
            assert beats == list(range(1, 21))
            rest = [class1.Class1Datagram.decode(raw).sequence for raw, _ in receive(receiver, 99)]
            assert rest == list(range(2, 101))
        finally:
            sender.finish(30.0)


def test_a_port_nobody_shares_is_refused_with_the_reason(exe: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((SOURCE, 0))  # without SO_REUSEPORT
        stream = native.Stream(native.template(1, b""), 1, 1)
        sender = native.Sender(exe, SOURCE, (DEST, 9), [stream], tmp_path,
                               bind_port=taken.getsockname()[1], share_port=True)
        sender.start(1000.0, 1)
        with pytest.raises(BenchError, match="share-udp-port"):
            sender.finish(30.0)


def test_a_bad_template_is_refused(exe: Path, tmp_path: Path) -> None:
    sender = native.Sender(exe, SOURCE, (DEST, 9), [native.Stream(b"\x02\x00", 1, 1)], tmp_path)
    sender.start(1000.0, 1)
    with pytest.raises(BenchError, match="template"):
        sender.finish(30.0)


def test_no_compiler_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc, no cc
    with pytest.raises(BenchError, match=r"apt-get install gcc"):
        native.build_sender(tmp_path / "empty-cache")
