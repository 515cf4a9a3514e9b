"""Controller time end to end (issue 11, item 6): a simulated controller writes its wall clock
into a LINT member of a produced UDT (the simulator's ``wall_clock`` generator, what ``GSV
WallClockTime CurrentValue`` does in a Logix); ``pyconpro run`` with that member named in the
tag's ``source_time`` stores it beside the receive time in SQLite; a ``source_time`` naming a
member that is not a LINT fails that tag with a message naming the member and its type, and
nothing else."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyconpro.simulator.testing import start_simulator
from pyconpro.workers.process import spawn

from pyconpro.status_cli import request
from tests.support.ports import free_subnet, free_udp_port
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0

SIM_TAGS = """
[types.Stamped]
members = [{ name = "Value", type = "REAL" }, { name = "Stamp", type = "LINT" }]

[[tags]]
name = "Line"
type = "Stamped"
produced = true
generators = { "Value" = { kind = "sine" }, "Stamp" = { kind = "wall_clock" } }

[[tags]]
name = "Other"
type = "Stamped"
produced = true
generators = { "Value" = { kind = "sine" }, "Stamp" = { kind = "wall_clock" } }
"""


def _rows(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT t_wall_ns, t_source_ns, value_json FROM samples"
                           " WHERE tag = 'Line' ORDER BY seq").fetchall()  # fmt: skip
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        con.close()


def _consumer(control: str, key: str) -> dict[str, Any] | None:
    """The worker's status of consumer ``key`` as the supervisor last had it."""
    st = request(control, {"op": "status"}, 5.0) or {}
    for worker in (st.get("workers") or {}).values():
        for c in worker.get("consumers") or []:
            if c.get("key") == key:
                found: dict[str, Any] = c
                return found
    return None


def test_the_controllers_time_is_stored_beside_the_receive_time(tmp_path: Path) -> None:
    net = free_subnet(79)
    tags = tmp_path / "sim-tags.toml"
    tags.write_text(SIM_TAGS)
    with start_simulator(f"127.79.{net}.2", tcp_port=44818, config=tags) as sim:
        cfg = tmp_path / "pipeline.toml"
        cfg.write_text(f"""
[bus]
endpoint = "ipc://{tmp_path}/bus"
control_base = "ipc://{tmp_path}/ctl"
[worker]
udp_port = {free_udp_port(f"127.79.{net}.1")}

[[plc]]
name = "press1"
address = "127.79.{net}.2"
local_address = "127.79.{net}.1"
udp_port = {sim.udp_port}
  [[plc.tag]]
  name = "Line"
  rpi_ms = 50
  source_time = "Stamp"
  [[plc.tag]]
  name = "Other"
  rpi_ms = 50
  source_time = "Value"

[[sink]]
kind = "sqlite"
path = "{tmp_path}/out.sqlite3"
flush_interval_s = 0.2
""")
        log = tmp_path / "run.log"
        run = spawn([sys.executable, "-m", "pyconpro.cli", "run", str(cfg)], stdout=log,
                    stderr=log, cwd=REPO)  # fmt: skip
        control = f"ipc://{tmp_path}/ctl-supervisor"
        try:
            rows = wait_for(lambda: (r := _rows(tmp_path / "out.sqlite3")) and len(r) >= 20
                            and r, "20 rows of press1/Line", WAIT_S)  # fmt: skip
            other = wait_for(lambda: (c := _consumer(control, "press1/Other")) is not None
                             and c.get("state") == "FAILED" and c,
                             "press1/Other FAILED", WAIT_S)  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{log.read_text(errors='replace')[-6000:]}"
                                 ) from None  # fmt: skip
        finally:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(60)
            except subprocess.TimeoutExpired:
                run.kill()
        stamps = [source for _, source, _ in rows]
        assert all(isinstance(s, int) for s in stamps), stamps[:5]
        assert stamps == sorted(stamps) and stamps[-1] > stamps[0], "the controller's clock runs"
        for wall, source, _ in rows:
            # The simulator's clock is this host's (set at its start): microseconds apart, not
            # seconds; the controller sampled before the datagram was received.
            assert abs(wall - source) < 5_000_000_000, (wall, source)
        message = str(other.get("failure"))
        assert "Value" in message and "REAL" in message, message
