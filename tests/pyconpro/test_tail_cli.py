"""``pyconpro tail``: topic arguments, output lines, and a live run against a test publisher."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import zmq

from acquisition.wire import Event, Sample
from pyconpro.tail_cli import json_line, text_line, topic_filters

REPO = Path(__file__).resolve().parents[2]

SAMPLE = Sample(seq=7, publisher="w1", plc="line 1", tag="Count", t_wall_ns=1_700_000_000 * 10**9,
                t_mono_ns=5, cip_seq=42, gap=0, value=12, raw=b"\x0c\0\0\0", type_name="DINT")
EVENT = Event(seq=1, publisher="w1", plc="line 1", tag="Count", t_wall_ns=1_700_000_000 * 10**9,
              t_mono_ns=5, kind="state", state_from="OPENING", state_to="RUNNING", message="open")


def test_topic_filters() -> None:
    assert topic_filters([]) == [b"sample/", b"event/"]
    assert topic_filters(["event/", "stats/", "sample/line1/"]) == [b"event/", b"stats/",
                                                                     b"sample/line1/"]
    assert topic_filters(["line1"]) == [b"sample/line1/"]
    assert topic_filters(["line 1/Count"]) == [b"sample/line%201/Count/"]


def test_lines() -> None:
    assert text_line(SAMPLE) == ("2023-11-14T22:13:20.000000000Z sample line%201/Count DINT = 12"
                                 "  [cs=42 gap=0 pub=w1 sq=7]")
    rec = json.loads(json_line(SAMPLE))
    assert (rec["stream"], rec["plc"], rec["tag"], rec["value"], rec["raw"]) == (
        "sample", "line 1", "Count", 12, "0c000000")
    assert "EVENT line%201/Count state OPENING->RUNNING : open" in text_line(EVENT)
    assert (json.loads(json_line(EVENT))["stream"], json.loads(json_line(EVENT))["kind"]) == (
        "event", "state")


def test_tail_prints_live_samples(tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.RCVTIMEO, 20_000)
    endpoint = f"ipc://{tmp_path}/bus"
    pub.bind(endpoint)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyconpro.cli", "tail", "line 1", "--json", "--count", "3",
         "--timeout", "20", "--connect", endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        sub = pub.recv()  # the subscription arrives: tail is listening
        assert sub == b"\x01sample/line%201/"
        for i in range(3):
            pub.send_multipart(list(replace(SAMPLE, seq=i, value=i).encode()))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        pub.close()
        ctx.term()
    assert proc.returncode == 0, err
    assert [json.loads(x)["value"] for x in out.splitlines()] == [0, 1, 2]
    assert f"subscribed to sample/line%201/ on {endpoint}" in err
