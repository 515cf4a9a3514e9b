"""``pyconpro tail``: topic arguments, output lines, and a live run against a test publisher."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import zmq
from pyconpro.acquisition.wire import Event, Sample, Stats
from pyconpro.workers.process import spawn

from pyconpro import tail_cli
from pyconpro.tail_cli import json_line, text_line, topic_filters, unknown_plcs

REPO = Path(__file__).resolve().parents[2]

SAMPLE = Sample(seq=7, publisher="w1", plc="line 1", tag="Count", t_wall_ns=1_700_000_000 * 10**9,
                t_mono_ns=5, cip_seq=42, gap=0, value=12, raw=b"\x0c\0\0\0", type_name="DINT")
EVENT = Event(seq=1, publisher="w1", plc="line 1", tag="Count", t_wall_ns=1_700_000_000 * 10**9,
              t_mono_ns=5, kind="state", state_from="OPENING", state_to="RUNNING", message="open")


def test_topic_filters() -> None:
    assert topic_filters([]) == [b"sample/", b"event/"]
    assert topic_filters(["event/", "stats/", "sample/line1/"]) == [b"event/", b"stats/",
                                                                     b"sample/line1/"]
    # a shorthand shows the tag's events too (a FAILED tag's error)
    assert topic_filters(["line1"]) == [b"sample/line1/", b"event/line1/"]
    assert topic_filters(["line 1/Count"]) == [b"sample/line%201/Count/",
                                               b"event/line%201/Count/"]  # fmt: skip
    assert unknown_plcs(["line1", "nosuch/T", "event/x/", "stats/"], ["line1"]) == ["nosuch"]


def test_lines() -> None:
    assert text_line(SAMPLE, utc=True) == (
        "2023-11-14T22:13:20.000000000Z sample line%201/Count DINT = 12  [cs=42 gap=0 pub=w1 sq=7]"
    )
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
    proc = spawn(
        [sys.executable, "-m", "pyconpro.cli", "tail", "line 1", "--json", "--count", "3",
         "--timeout", "20", "--connect", endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        subs = {pub.recv() for _ in range(3)}  # the subscriptions arrive: tail is listening
        assert subs == {b"\x01sample/line%201/", b"\x01event/line%201/", b"\x01stats/"}
        for i in range(3):
            pub.send_multipart(list(replace(SAMPLE, seq=i, value=i).encode()))
        out, err = proc.communicate(30)
    finally:
        proc.kill()  # when it is still running; reaps it and closes the pipes
        pub.close()
        ctx.term()
    assert proc.returncode == 0, err
    assert [json.loads(x)["value"] for x in out.splitlines()] == [0, 1, 2]
    assert f"subscribed to sample/line%201/, event/line%201/ on {endpoint}" in err


def test_a_plc_not_in_the_config_is_named_with_the_known_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[[plc]]\nname = "line1"\naddress = "127.0.0.2"\n  [[plc.tag]]\n'
                   '  name = "T"\n[[plc]]\nname = "line2"\naddress = "127.0.0.3"\n'
                   '  [[plc.tag]]\n  name = "T"\n')  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "pyconpro.cli", "tail", "--config", str(cfg), "nosuchplc"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 2
    assert f"PLC 'nosuchplc' is not in {cfg}; its PLCs: line1, line2" in res.stderr


def _tail_args(endpoint: str, timeout: float) -> argparse.Namespace:
    return argparse.Namespace(topics=["line1"], connect=endpoint, config=None, json=False,
                              raw=False, count=0, timeout=timeout)  # fmt: skip


def test_hint_says_the_bus_is_up_when_only_stats_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tail_cli, "HINT_AFTER_S", 0.0)
    monkeypatch.setattr(tail_cli, "HINT_EVERY_S", 0.1)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/bus"
    pub.bind(endpoint)
    stop = threading.Event()

    def publish() -> None:  # stats only, like a running pipeline whose tag is not there
        seq = 0
        while not stop.is_set():
            if pub.poll(50):
                pub.recv()
            st = Stats(seq=seq, publisher="w1", worker="w1", t_wall_ns=1, t_mono_ns=1)
            pub.send_multipart(list(st.encode()))
            seq += 1

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        assert tail_cli.run(_tail_args(endpoint, 1.5)) == 1  # --timeout: nothing matched
    finally:
        stop.set()
        thread.join(10)
        pub.close()
        ctx.term()
    err = capsys.readouterr().err
    assert "the bus is up (stats arrive) but nothing matched" in err
    assert "STATS" not in capsys.readouterr().out


def test_hint_asks_whether_run_is_up_when_nothing_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tail_cli, "HINT_AFTER_S", 0.0)
    assert tail_cli.run(_tail_args(f"ipc://{tmp_path}/nobody", 0.5)) == 1
    err = capsys.readouterr().err
    assert "is `pyconpro run` up" in err and "stats arrive" not in err
