"""``pyconpro check CONFIG``: valid files get a summary and exit 0; invalid ones print every
problem with file, line, key and fix and exit 1. Nothing is started either way."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyconpro.check_cli import check
from pyconpro.cli import main

REPO = Path(__file__).resolve().parents[2]

VALID = """
[bus]
endpoint = "tcp://127.0.0.1:5599"
[[plc]]
name = "line1"
address = "127.0.0.2"
  [[plc.tag]]
  name = "Counter"
  [[plc.tag]]
  name = "Sine"
  alias = "wave"
[[plc]]
name = "far"
address = "10.99.0.7"
local_address = "10.99.0.1"
  [[plc.tag]]
  name = "Speed"
[[sink]]
kind = "sqlite"
path = "x.sqlite3"
"""

INVALID = """
[bus]
endpont = "tcp://127.0.0.1:5599"
[[plc]]
name = "line1"
address = "127.0.0.2"
  [[plc.tag]]
  name = "Program:Main.X"
  rpi_ms = 0.1
"""


def test_valid_file_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text(VALID)
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{cfg}: OK: 2 PLC(s), 3 tag(s), 1 sink(s)",
        "  plc line1 at 127.0.0.2 slot 0: Counter, Sine as wave",
        "  plc far at 10.99.0.7 slot 0: Speed",
        "  worker worker-10.99.0.1: far",
        "  worker worker-127.0.0.1: line1",
        f"  sink sqlite-0 (sqlite) -> {tmp_path / 'x.sqlite3'}; topics sample/, event/, stats/",
        "  bus tcp://127.0.0.1:5599; control ipc:///tmp/pyconpro-supervisor",
    ]


def test_invalid_file_prints_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(INVALID)
    assert main(["check", str(cfg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{cfg}:3: bus.endpont: unknown key 'endpont' in [bus]; did you mean 'endpoint'?"
    )
    assert out[1] == (
        f"{cfg}:8: plc[0].tag[0].name: name = 'Program:Main.X' cannot be consumed: "
        "'Program:Main.X' is program-scoped; only controller-scoped tags are produced "
        "(README: Configuring the produced tag in Studio 5000); move the tag to controller scope "
        "in Studio 5000 and use its plain name"
    )
    assert out[2].startswith(f"{cfg}:9: plc[0].tag[0].rpi_ms: rpi_ms = 0.1 is below the 0.5 ms")
    assert out[-1] == f"{cfg}: 3 problems; nothing was started"
    assert len(out) == 4


def test_unknown_interface_is_a_problem_unless_not_resolving(tmp_path: Path) -> None:
    cfg = tmp_path / "route.toml"
    cfg.write_text(VALID.replace('address = "127.0.0.2"', 'address = "127.0.0.2"\ninterface = "nosuchif9"'))
    lines: list[str] = []

    class Out:
        def write(self, s: str) -> None:
            lines.append(s)

        def flush(self) -> None:
            pass

    code = check(str(cfg), out=Out())  # type: ignore[arg-type]
    text = "".join(lines)
    assert code == 1, text
    assert text.splitlines()[0] == (
        f"{cfg}:7: plc[0].interface: cannot find the local address for PLC 'line1' (interface "
        "'nosuchif9'): interface 'nosuchif9': no such interface; check the interface is up and a "
        "route exists (`ip route get 127.0.0.2`), or set local_address for this PLC"
    )
    assert check(str(cfg), resolve=False, out=Out()) == 0  # type: ignore[arg-type]


def test_missing_file_and_quiet_mode(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    res = subprocess.run([sys.executable, "-m", "pyconpro.cli", "check", "-q", str(missing)],
                         check=False, capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert res.returncode == 1
    assert f"{missing}: cannot read the file" in res.stdout
    ok = tmp_path / "ok.toml"
    ok.write_text(VALID)
    res = subprocess.run([sys.executable, "-m", "pyconpro.cli", "check", "-q", str(ok)],
                         check=False, capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert (res.returncode, res.stdout) == (0, "")


def test_shipped_examples_are_valid() -> None:
    for example in (REPO / "examples" / "pipeline.toml", REPO / "examples" / "real-plc.toml"):
        out = io.StringIO()
        assert check(str(example), resolve=False, out=out) == 0, out.getvalue()


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## A real PLC.*?```toml\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    cfg = tmp_path / "plant.toml"
    cfg.write_text("\n".join(line.removeprefix("   ") for line in block.group(1).splitlines()))
    out = io.StringIO()
    assert check(str(cfg), resolve=False, out=out) == 0, out.getvalue()
    assert "plc press1 at 192.168.1.20 slot 0: PressStatus, PressForces" in out.getvalue()
