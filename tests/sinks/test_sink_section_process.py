"""The supervisor's plan starts each sink with its validated ``[[sink]]`` section as data: a
real sink process started with that very command writes where the config file says (relative
paths resolved against the file's directory, whatever directory the sink runs in)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
import zmq
from pyconpro.acquisition.config import group_by_local_address
from pyconpro.acquisition.wire import Sample, SeqCounter, topic_for_sample
from pyconpro.workers.process import Child, spawn
from pyconpro.workers.supervisor import Runtime, plan_children

from pyconpro.config_file import load_config
from tests.sinks.bus_testkit import PROCESS_TIMEOUT_S, TestPublisher
from tests.support.configs import ONE_PLC

pytestmark = pytest.mark.timeout(90)

CONFIG = ONE_PLC + """
[[sink]]
kind = "sqlite"
name = "db"
path = "out/db.sqlite3"

[[sink]]
kind = "jsonl"
name = "files"
topics = ["sample/line1/"]
prefix = "plant"
"""


def samples(n: int) -> list[Sample]:
    seqs = SeqCounter()
    return [
        Sample(seq=seqs.next(topic_for_sample("line1", "Speed")), publisher="w1", plc="line1",
               tag="Speed", t_wall_ns=1_700_000_000_000_000_000 + i, t_mono_ns=i, cip_seq=i,
               gap=0, value=i * 0.5, raw=i.to_bytes(4, "little"), type_name="REAL")
        for i in range(n)
    ]  # fmt: skip


def test_a_sink_started_with_the_planned_command_writes_where_the_config_says(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "conf"
    (conf / "out").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"  # the sinks' working directory: not the file's
    elsewhere.mkdir()
    path = conf / "plant.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_config(path)
    groups = group_by_local_address(config, lambda address: "127.0.0.1")
    sent = samples(40)
    with TestPublisher() as pub:
        pub.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every sink's subscriptions
        plan = plan_children(config, groups, Runtime(bus_connect=pub.endpoint,
                                                     python=sys.executable))  # fmt: skip
        specs = [plan["sink-db"], plan["sink-files"]]
        for spec, sink in zip(specs, config.sinks, strict=True):
            argv = list(spec.argv)
            assert argv[1:3] == ["-m", "pyconpro.sinks.cli"]
            assert json.loads(argv[argv.index("--section") + 1]) == sink.section()
            assert argv[argv.index("--connect") + 1] == pub.endpoint
        children: list[Child] = []
        try:
            for spec, sink in zip(specs, config.sinks, strict=True):
                children.append(spawn(spec.argv, cwd=elsewhere,
                                      stderr=tmp_path / f"{spec.name}.err"))  # fmt: skip
                pub.wait_subscribed(t.encode() for t in sink.topics)
            for s in sent:
                pub.send(s)
            pub.close()  # returns once everything sent has left this process
        finally:
            codes = [c.stop(timeout_s=PROCESS_TIMEOUT_S) for c in children]
    errors = [(tmp_path / f"{s.name}.err").read_text() for s in specs]
    assert codes == [0, 0], errors

    db = sqlite3.connect(conf / "out" / "db.sqlite3")
    try:
        rows = db.execute("SELECT plc, tag, value_real FROM samples ORDER BY id").fetchall()
    finally:
        db.close()
    assert rows == [("line1", "Speed", s.value) for s in sent]
    files = sorted((conf / "data").glob("plant-samples-*.jsonl"))
    assert files, f"no jsonl files in {conf / 'data'}"
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [rec["value"] for rec in lines] == [s.value for s in sent]
    assert list(elsewhere.iterdir()) == []  # nothing written relative to the working directory
