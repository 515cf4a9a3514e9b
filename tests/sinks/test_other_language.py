"""A subscriber written in C from docs/wire-format.md reads what pyconpro publishes.

Needs a C compiler, pkg-config, and the libzmq and msgpack-c development packages
(Debian 12: ``apt-get install libzmq3-dev libmsgpack-dev``; Debian 13: ``libzmq3-dev
libmsgpack-c-dev``). Without them the test skips, saying what to install; with
``PYCONPRO_REQUIRE_OTHER_LANGUAGE=1`` (CI) it fails instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import msgpack
import pytest
from pyconpro.acquisition.wire import Event, EventKind, Sample, Value
from pyconpro.workers.process import spawn

from tests.sinks.bus_testkit import PROCESS_TIMEOUT_S, TestPublisher

pytestmark = pytest.mark.timeout(120)

SOURCE = Path(__file__).parent / "other_language" / "pyconpro_sub.c"
APT_HINT = (
    "install a C compiler, pkg-config and the ZeroMQ + msgpack-c headers, e.g. `apt-get install"
    " gcc pkg-config libzmq3-dev libmsgpack-dev` (Debian 13: libmsgpack-c-dev)"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("PYCONPRO_REQUIRE_OTHER_LANGUAGE") == "1":
        pytest.fail(f"{reason}; {APT_HINT}")
    pytest.skip(f"{reason}; {APT_HINT}")


def _pkg_flags() -> list[str] | None:
    pkg_config = shutil.which("pkg-config")
    if pkg_config is None:
        return None
    # msgpack-c's pkg-config module was renamed between Debian releases.
    for msgpack_module in ("msgpack-c", "msgpack"):
        r = subprocess.run(
            [pkg_config, "--cflags", "--libs", "libzmq", msgpack_module],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if r.returncode == 0:
            return r.stdout.split()
    return None


@pytest.fixture(scope="module")
def c_subscriber(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _unavailable("no C compiler (cc/gcc) on PATH")
    flags = _pkg_flags()
    if flags is None:
        _unavailable("pkg-config does not know libzmq and msgpack-c")
    assert cc is not None and flags is not None
    exe = tmp_path_factory.mktemp("c_sub") / "pyconpro_sub"
    r = subprocess.run(
        [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-o", str(exe), str(SOURCE),
         *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, f"C subscriber does not build:\n{r.stderr}"
    return exe


def wire_view(msg: Sample | Event) -> dict[str, object]:
    """What the C program should print, spelled with docs/wire-format.md's keys."""
    d: dict[str, object] = {
        "topic": msg.topic.decode(),
        "v": msg.v,
        "sq": msg.seq,
        "pub": msg.publisher,
        "plc": msg.plc,
        "tag": msg.tag,
        "tw": msg.t_wall_ns,
        "tm": msg.t_mono_ns,
    }
    if isinstance(msg, Sample):
        d.update(cs=msg.cip_seq, gap=msg.gap, val=msg.value, raw=msg.raw.hex())
        if msg.type_name is not None:
            d["ty"] = msg.type_name
    else:
        d.update(k=str(msg.kind), msg=msg.message)
        for key, value in [("from", msg.state_from), ("to", msg.state_to),
                           ("gs", msg.cip_general), ("es", msg.cip_extended),
                           ("stx", msg.status_text)]:  # fmt: skip
            if value is not None:
                d[key] = value
    return d


def test_c_subscriber_reads_the_bus(c_subscriber: Path) -> None:
    base = Sample(
        seq=0, publisher="w1", plc="plc1", tag="Count", t_wall_ns=1_700_000_000_123_456_789,
        t_mono_ns=5, cip_seq=65535, gap=3, value=0, raw=b"\x00\x01\xfe\xff", type_name="DINT",
    )  # fmt: skip
    values: list[Value] = [42, -(2**40), 0.1, 'ünïcode "quoted"\n', [True, None, {"x": 1.5}]]
    samples = [
        dataclasses.replace(
            base,
            seq=i,
            tag=f"T {i}",
            t_wall_ns=base.t_wall_ns + i,
            value=v,
            type_name=None if i % 2 else "X",
        )
        for i, v in enumerate(values)
    ]
    event = Event(
        seq=0, publisher="w1", plc="plc1", tag="", t_wall_ns=9, t_mono_ns=8,
        kind=EventKind.REJECT, state_from="OPENING", state_to="BACKOFF", cip_general=1,
        cip_extended=0x0109, status_text="invalid connection size", message="m",
    )  # fmt: skip
    # A body from a newer publisher: v=2 plus a key v1 readers have never seen.
    newer_topic, body = base.encode()
    newer = msgpack.unpackb(body, raw=False)
    newer.update(v=2, zz={"future": [1, 2]})
    newer_expected = {**wire_view(base), "v": 2}

    with TestPublisher() as pub:
        proc = spawn(
            [str(c_subscriber), pub.endpoint, "7", "sample/plc1/", "event/"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            pub.wait_subscribed([b"sample/plc1/", b"event/"])
            pub.send_frames([newer_topic, b"\x93\x01"])  # an array, not a map: malformed
            pub.send(dataclasses.replace(base, plc="plc10"))  # not subscribed: filtered out
            for s in samples:
                pub.send(s)
            pub.send_frames([newer_topic, msgpack.packb(newer, use_bin_type=True)])
            pub.send(event)
            out, err = proc.communicate(PROCESS_TIMEOUT_S)
        finally:
            proc.kill()  # when it is still running; reaps it and closes the pipes
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[-1] == "done received=7 malformed=1"
    got = [json.loads(line) for line in lines[:-1]]
    assert got == [*(wire_view(s) for s in samples), newer_expected, wire_view(event)]
