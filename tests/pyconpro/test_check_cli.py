"""``pyconpro check CONFIG``: valid files get a summary and exit 0; invalid ones print every
problem with file, line, key and fix and exit 1. Nothing is started either way."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyconpro import check_cli
from pyconpro.check_cli import check, is_local_address
from pyconpro.cli import main
from pyconpro.config_file import load_config

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


@pytest.fixture
def all_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every address counts as this host's, so output does not depend on the test machine."""
    monkeypatch.setattr(check_cli, "is_local_address", lambda address: True)


def test_valid_file_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], all_local: None
) -> None:
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
        "  bus tcp://127.0.0.1:5599; control ipc:///tmp/pyconpro-supervisor; replay buffer 60 s,"
        " 64 MiB",
    ]


def test_the_web_page_is_in_the_summary_and_an_open_one_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], all_local: None
) -> None:
    cfg = tmp_path / "web.toml"
    cfg.write_text(VALID + '[web]\naddress = "0.0.0.0"\nport = 9100\n')
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  web http://127.0.0.1:9100/ (listening on 0.0.0.0:9100, no token)" in out
    [warning] = [line for line in out if line.startswith("WARNING:")]
    assert warning.startswith(f"WARNING: {cfg}:")
    assert "web.address: address = '0.0.0.0' serves the live page" in warning
    token = tmp_path / "web.token"
    cfg.write_text(VALID + '[web]\naddress = "0.0.0.0"\ntoken_file = "web.token"\n')
    assert main(["check", str(cfg)]) == 1  # the token file does not exist
    text = capsys.readouterr().out
    assert f"web.token_file: the token file {str(token)!r} cannot be read" in text
    token.write_text("Zx9-4kQ_vT2mLp8sR1wY\n")
    assert main(["check", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "token required" in text and "WARNING" not in text


def test_invalid_file_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(INVALID)
    assert main(["check", str(cfg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{cfg}:3: bus.endpont: unknown key 'endpont' in [bus]; did you mean 'endpoint'?"
    )
    assert out[1] == (
        f"{cfg}:8: plc[0].tag[0].name: tag name 'Program:Main.X' cannot be consumed: "
        "'Program:Main.X' is program-scoped; only controller-scoped tags are produced "
        "(README: Configuring the produced tag in Studio 5000); move the tag to controller scope "
        "in Studio 5000 and use its plain name"
    )
    assert out[2].startswith(f"{cfg}:9: plc[0].tag[0].rpi_ms: rpi_ms = 0.1 is below the 0.5 ms")
    assert out[-1] == f"{cfg}: 3 problems; nothing was started"
    assert len(out) == 4


def test_unknown_interface_is_a_problem_unless_not_resolving(tmp_path: Path) -> None:
    cfg = tmp_path / "route.toml"
    cfg.write_text(
        VALID.replace('address = "127.0.0.2"', 'address = "127.0.0.2"\ninterface = "nosuchif9"')
    )
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
                         check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 1
    assert f"{missing}: cannot read the file" in res.stdout
    ok = tmp_path / "ok.toml"
    ok.write_text(VALID.replace('local_address = "10.99.0.1"', 'local_address = "127.0.0.1"'))
    res = subprocess.run([sys.executable, "-m", "pyconpro.cli", "check", "-q", str(ok)],
                         check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
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
    assert check(str(cfg), resolve=False, out=out) == 1  # its keys are made by the next step
    assert "security.server_key" in out.getvalue() and "pyconpro keygen" in out.getvalue()
    # the README's commands: `mkdir -p keys/clients && pyconpro keygen keys/plant`, then check
    (tmp_path / "keys" / "clients").mkdir(parents=True)
    assert main(["keygen", str(tmp_path / "keys" / "plant")]) == 0
    out = io.StringIO()
    assert check(str(cfg), resolve=False, out=out) == 0, out.getvalue()
    assert "WARNING" not in out.getvalue()  # the network bus is behind CURVE
    assert "plc press1 at 192.168.1.20 slot 0: PressStatus, PressForces" in out.getvalue()


def test_is_local_address() -> None:
    assert is_local_address("127.0.0.1")
    assert is_local_address("127.61.4.9")  # all of 127/8 is this host's on Linux
    from pyconpro.workers.explicit_client import local_ipv4_interfaces

    if any(i.address == "203.0.113.77" for i in local_ipv4_interfaces()):
        pytest.skip("this host really has 203.0.113.77")
    assert not is_local_address("203.0.113.77")  # TEST-NET-3


def test_local_address_not_on_this_host_is_a_warning_not_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def is_local(address: str) -> bool:
        asked.append(address)
        return address != "10.99.0.1"

    monkeypatch.setattr(check_cli, "is_local_address", is_local)
    cfg = tmp_path / "ok.toml"
    cfg.write_text(VALID)
    warning = (
        f"WARNING: {cfg}:15: plc[1].local_address: 10.99.0.1 is not an address of this host, so "
        "the worker for PLC 'far' cannot start here; if the file is for another machine that is "
        "fine, otherwise use one of this host's addresses (`ip -4 addr`) or remove local_address"
    )
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{cfg}: OK: ") and out[-1] == warning
    assert asked == ["10.99.0.1"]  # only explicit local addresses are tested
    assert main(["check", "-q", str(cfg)]) == 0
    assert capsys.readouterr().out.splitlines() == [warning]
    assert main(["check", "--no-resolve", str(cfg)]) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_two_sinks_on_one_database_are_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], all_local: None
) -> None:
    cfg = tmp_path / "two.toml"
    cfg.write_text(VALID + '[[sink]]\nkind = "sqlite"\nname = "again"\npath = "x.sqlite3"\n')
    assert main(["check", str(cfg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{cfg}:24: sink[1].path: sink 'again' and sink[0] ('sqlite-0') both write to the "
        f"database {str(tmp_path / 'x.sqlite3')!r}; give each sqlite sink its own path, e.g. "
        'path = "second.sqlite3"',
        f"{cfg}: 1 problem; nothing was started",
    ]


def test_nats_options_that_do_not_go_together_are_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], all_local: None
) -> None:
    """What the NATS sink would refuse at its start is found before anything starts, on the
    key and line of the file, with the fix."""
    cfg = tmp_path / "nats.toml"
    cfg.write_text(VALID + '[[sink]]\nkind = "nats"\nuser = "pyconpro"\n'
                   'creds_file = "site.creds"\n')
    assert main(["check", str(cfg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{cfg}:24: sink[1].creds_file: user and creds_file are set: a NATS login is one of"
        " user (with password_file), token_file, creds_file, nkey_file; keep one of them and"
        " remove the other",
        f"{cfg}: 1 problem; nothing was started",
    ]


def test_produce_examples_of_readme_and_configuration_md_are_valid(tmp_path: Path) -> None:
    """README "Feeding a Logix controller" and configuration.md "[[produce]]": each block
    passes `pyconpro check`, which lists the produced tags."""
    readme = (REPO / "README.md").read_text()
    reference = (REPO / "docs" / "configuration.md").read_text()
    blocks = [re.search(r"## Feeding a Logix controller.*?```toml\n(.*?)```", readme, re.DOTALL),
              re.search(r"## `\[\[produce\]\]`.*?```toml\n(.*?)```", reference, re.DOTALL)]
    for block, name, type_ in zip(blocks, ("PcSetpoint", "PcSetpoints"), ("REAL", "Setpoints"),
                                  strict=True):
        assert block is not None
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(block.group(1))
        out = io.StringIO()
        assert check(str(cfg), resolve=False, out=out) == 0, out.getvalue()
        lines = out.getvalue().splitlines()
        assert lines[0].endswith("1 produced tag(s)"), lines
        assert lines[1].startswith(f"  produce {name} ({type_}, at most "), lines
        assert "the local address routing to 10.0.0.5" in lines[1]


def test_a_produce_local_address_not_on_this_host_is_a_warning(tmp_path: Path) -> None:
    cfg = tmp_path / "far.toml"
    cfg.write_text('[[produce]]\nname = "PcCounter"\ntype = "DINT"\nlocal_address = "10.99.0.1"\n')
    warnings = check_cli.local_address_warnings(load_config(str(cfg)), str(cfg),
                                                lambda a: a != "10.99.0.1")  # fmt: skip
    assert [str(w) for w in warnings] == [
        f"{cfg}:4: produce[0].local_address: 10.99.0.1 is not an address of this host, so no"
        " worker can produce 'PcCounter' here; if the file is for another machine that is fine,"
        " otherwise use one of this host's addresses (`ip -4 addr`) or give consumer_address"
        " instead"]


def test_assemblies_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], all_local: None
) -> None:
    cfg = tmp_path / "io.toml"
    cfg.write_text("""
[[plc]]
name = "drive1"
address = "127.0.0.2"
rpi_ms = 10
  [[plc.assembly]]
  name = "status"
  connection = "input_only"
  input = 100
  output = 152
  layout = [{name = "speed", type = "INT"}]
  [[plc.assembly]]
  name = "command"
  connection = "exclusive_owner"
  input = 100
  output = 150
  config = 151
  output_layout = [{name = "speed", type = "INT"}, {name = "run", type = "BOOL"}]
""")
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        f"{cfg}: OK: 1 PLC(s), 0 tag(s), 2 assembly(ies), 0 sink(s)",
        "  assembly drive1/status at 127.0.0.2: input_only input 100 heartbeat 152, rpi 10 ms,"
        " layout of 1 field(s)",
        "  assembly drive1/command at 127.0.0.2: exclusive_owner input 100 output 150 config"
        " 151, rpi 10 ms; output image from output/drive1/command/ (or its 2 output_layout"
        " field(s))",
    ]
