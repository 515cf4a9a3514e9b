"""The `pyconpro` entry point: --version, --help, every registered command has help."""

import os
import subprocess
import sys

import pytest

from pyconpro import __version__
from pyconpro.cli import COMMANDS, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyconpro {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: pyconpro" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: pyconpro {command}" in capsys.readouterr().out


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "pyconpro.cli", "--version"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0 and __version__ in out.stdout


def test_reader_gone_exits_141_without_a_traceback() -> None:
    # `pyconpro ... | head -c 400` with head already gone: a pipe whose read end is closed
    # before the child starts, so its first write fails with EPIPE every time (no race).
    root = __file__.rsplit("/tests/", 1)[0]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyconpro.cli",
                "check",
                "--no-resolve",
                "examples/pipeline.toml",
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            cwd=root,
        )
    finally:
        os.close(write_end)
    assert out.stderr == ""
    assert out.returncode == 141
