"""``pyconpro.config_file.load_config``: reading the file, its encoding, paths relative to it,
and sink sections validated with every sink kind's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyconpro.acquisition.config import ConfigError

from pyconpro.config_file import load_config
from tests.support.configs import ONE_PLC as BASE

ROOT = Path(__file__).resolve().parents[2]


def test_examples_are_valid() -> None:
    # Pipeline configs are every example except the simulator's tag files (sim-*.toml).
    names = sorted(
        p.name for p in (ROOT / "examples").glob("*.toml") if not p.name.startswith("sim-")
    )
    assert {"pipeline.toml", "real-plc.toml"} <= set(names)
    for name in names:
        load_config(ROOT / "examples" / name)
    pipeline = load_config(ROOT / "examples" / "pipeline.toml")
    assert [p.address for p in pipeline.plcs] == ["127.0.0.2", "127.0.0.3"]
    # relative sink paths are relative to the file, not the working directory
    db = next(s for s in pipeline.sinks if s.kind == "sqlite")
    assert db.options["path"] == str(ROOT / "examples" / "pipeline.sqlite3")


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(BASE + "  rpi_ms = 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:7: plc[0].tag[0].rpi_ms: rpi_ms = 0.1")

    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert "cannot read the file" in str(info.value) and "check the path" in str(info.value)

    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[[plc]]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.first.line == 2 and "UTF-8" in info.value.first.problem


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "plant.toml"
    path.parent.mkdir()
    path.write_text(
        BASE + '\n[logging]\nfile = "logs/p.log"\n\n[[sink]]\nkind = "jsonl"\n'
        '\n[[sink]]\nkind = "sqlite"\npath = "/abs/db.sqlite3"\n',
        encoding="utf-8",
    )
    c = load_config(path)
    assert c.source == str(path)
    assert c.logging.file == str(tmp_path / "conf" / "logs" / "p.log")
    assert c.sinks[0].options["directory"] == str(tmp_path / "conf" / "data")
    assert c.sinks[1].options["path"] == "/abs/db.sqlite3"


def test_sink_errors_in_a_file_name_the_file_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(BASE + '\n[[sink]]\nkind = "csv"\nsynchronous = "FULL"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = info.value.first
    assert (issue.file, issue.key, issue.line) == (str(path), "sink[0].synchronous", 10)
    assert issue.problem == "synchronous is not an option of sink kind 'csv'"
    assert issue.fix == "it applies to kind 'sqlite'; remove it"
