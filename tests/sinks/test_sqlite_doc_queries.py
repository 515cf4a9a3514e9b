"""Every SQL query of docs/sqlite.md runs against a database the SQLite sink wrote, and the
ones whose answer the data fixes give that answer."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from pyconpro.acquisition.wire import Sample, Value
from pyconpro.sinks.sqlite import SqliteSink

DOC = Path(__file__).resolve().parents[2] / "docs" / "sqlite.md"


def queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def sample(i: int, tag: str, value: Value, type_name: str, t_wall_ns: int) -> Sample:
    return Sample(seq=i, publisher="w1", plc="demo", tag=tag, t_wall_ns=t_wall_ns, t_mono_ns=i,
                  cip_seq=i, gap=0, value=value, raw=b"\0", type_name=type_name)  # fmt: skip


def test_every_documented_query_runs_and_answers(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite3"
    now = time.time_ns()
    sink = SqliteSink(db)
    sink.open()
    rows = [sample(i, "Sine", float(v), "REAL", now - (10 - i) * 10**9)
            for i, v in enumerate([9, 10, 2.5])]  # fmt: skip
    rows += [sample(10 + i, "Motor", {"Speed": s, "Running": True}, "MotorData", now - 10**9)
             for i, s in enumerate([1200.0, 1300.0])]  # fmt: skip
    rows.append(sample(20, "Counter", 7, "DINT", now - 7200 * 10**9))  # two hours ago
    sink.write_samples(rows)
    sink.flush()
    sink.close()
    found = queries()
    assert len(found) == 5
    con = sqlite3.connect(db)
    try:
        answers = [con.execute(q).fetchall() for q in found]
    finally:
        con.close()
    last, hour, summary, member, _loss = answers
    assert [(r[1], r[3]) for r in last] == [
        ("Counter", "7"), ("Motor", '{"Speed":1300.0,"Running":true}'), ("Sine", "2.5")]
    assert [r[1] for r in hour] == [9.0, 10.0, 2.5]  # Sine, the last hour, in time order
    # numbers compared as numbers: 10 is the maximum, not "9"
    assert ("Sine", 3, 2.5, 10.0) in summary
    assert member == [(1300.0,)]
