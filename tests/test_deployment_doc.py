"""docs/deployment.md stays true: its pipeline file passes `pyconpro check`, and its systemd
unit stops the supervisor the way the supervisor stops its children (KillMode=mixed, a stop
timeout above twice the file's stop_timeout_s)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "deployment.md").read_text()


def _block(lang: str) -> str:
    [block] = re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)
    return str(block)


def _unit() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in _block("ini").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def test_the_pipeline_file_passes_check(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(_block("toml"))
    res = subprocess.run([sys.executable, "-m", "pyconpro.cli", "check", "--no-resolve",
                          str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_unit_lets_the_supervisor_stop_its_children() -> None:
    unit = _unit()
    stop_timeout_s = tomllib.loads(_block("toml"))["supervisor"]["stop_timeout_s"]
    assert unit["KillMode"] == "mixed"
    assert int(unit["TimeoutStopSec"]) > 2 * stop_timeout_s
    assert unit["ExecStart"].endswith("pyconpro run /etc/pyconpro/pipeline.toml")
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["RestartPreventExitStatus"] == "2"  # operations.md: exit 2 = fix the file
