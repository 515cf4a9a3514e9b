"""``pyconpro run`` with a SQLite sink whose directory is missing at start, then appears, then
is removed and created again while samples flow: the sink process is never restarted (no crash
loop, no FATAL), ``pyconpro status`` shows why it waits and how much it keeps, and it writes by
itself once it can. Two simulated PLCs and real processes, as in test_run.py."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest

from pyconpro.status_cli import render
from tests.integration import test_run
from tests.integration.test_run import Plant, Run
from tests.support.sqlite_rows import stored_count as rows
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# The plant of test_run.py: two simulated PLCs, and `pyconpro run` started on its config.
plant = test_run.plant
run_factory = test_run.run_factory


def sink_state(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sink's child entry and its own report, from one ``status``."""
    st = run.status()
    child = next(c for c in st["children"] if c["name"] == "sink-db")
    return child, st["sinks"]["sink-db"]


def test_a_missing_then_removed_directory_is_waited_for_without_restarts(
    plant: Plant, run_factory: Callable[..., Run]
) -> None:
    data = plant.tmp / "data"
    db = data / "out.sqlite3"
    run = run_factory(plant.config().replace('path = "out.sqlite3"', 'path = "data/out.sqlite3"'))

    def waiting() -> dict[str, Any] | None:
        child, report = sink_state(run)
        ok = child["state"] == "RUNNING" and report.get("cause") == "directory missing"
        return report if ok and report.get("pending", 0) > 0 else None

    report = wait_for(waiting, "the sink waiting for its directory, samples kept")
    assert report["message"] == (f"directory {data} does not exist (removed, or its disk not"
                                 " mounted): create it or point `path` elsewhere")  # fmt: skip
    screen = render(run.status())
    assert "RETRYING" in screen and f"directory {data} does not exist" in screen, screen

    data.mkdir()
    made = time.monotonic()
    wait_for(lambda: rows(db) > 0, "rows once the directory exists")
    first_rows_s = time.monotonic() - made
    wait_for(lambda: sink_state(run)[1].get("state") == "writing", "the sink writing")

    shutil.rmtree(data)
    wait_for(lambda: sink_state(run)[1].get("cause") == "directory missing",
             "the removed directory noticed")  # fmt: skip
    wait_for(lambda: sink_state(run)[1].get("pending", 0) > 20, "samples kept meanwhile")
    data.mkdir()
    kept = sink_state(run)[1]["pending"]
    wait_for(lambda: rows(db) >= kept, f"the {kept} kept samples written to the new database")

    child, report = sink_state(run)
    assert (child["state"], child["restarts"]) == ("RUNNING", 0)
    assert report["dropped"] == 0 and report["write_failures"] >= 2
    assert run.stop() == 0, run.log_text()
    run.assert_children_gone()
    log = run.log_text()
    assert "Traceback" not in log
    print(f"\nmissing directory: first rows {first_rows_s:.2f} s after it was created;"
          f" {kept} samples kept while it was removed again, all written")  # fmt: skip
