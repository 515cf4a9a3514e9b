"""The smallest valid config file around the section a test is about: one PLC with one tag.

    config = parse('[web]\nport = 9100\n')        # + the PLC; relative paths under /srv/pp
    problems('[web]\nport = 0\n')                  # ["web.port: port = 0 is below ...; use ..."]

And a whole file as written, named ``plant.toml``: ``parse_file``, the issues it is refused
for (``file_issues``), the one issue it is refused for (``one_file_issue``); ``ONE_PLC`` is
that PLC's text, for a file written out or parsed whole (``parse_file(ONE_PLC + ...)``).
"""

from __future__ import annotations

import pytest
from pyconpro.acquisition.config import Config, ConfigError, ConfigIssue, parse_config
from pyconpro.sinks.registry import sink_schemas

# Line numbers matter in the tests that start a file with it: line 1 is "[[plc]]", line 5
# "[[plc.tag]]", line 6 its name; what follows starts at line 7.
ONE_PLC = """\
[[plc]]
name = "line1"
address = "127.0.0.2"

  [[plc.tag]]
  name = "Speed"
"""
BASE_DIR = "/srv/pp"


def parse(text: str) -> Config:
    """``text`` followed by ``ONE_PLC``, as the file ``plant.toml`` in ``BASE_DIR``."""
    return parse_file(f"{text}\n{ONE_PLC}", base_dir=BASE_DIR)


def problems(text: str, *, lines: bool = False) -> list[str]:
    """What ``parse`` refuses ``text`` for, as ``KEY: problem; fix`` (``LINE: KEY: ...``)."""
    with pytest.raises(ConfigError) as exc:
        parse(text)
    return [f"{f'{i.line}: ' if lines else ''}{i.key}: {i.problem}; {i.fix}"
            for i in exc.value.issues]  # fmt: skip


def parse_file(text: str, filename: str = "plant.toml", *, base_dir: str | None = None
               ) -> Config:  # fmt: skip
    """``text`` alone, as the file ``filename`` (in ``base_dir``), with the schemas of every
    sink kind."""
    return parse_config(text, filename, sink_kinds=sink_schemas(), base_dir=base_dir)


def file_issues(text: str) -> tuple[ConfigIssue, ...]:
    """Every issue ``parse_file`` refuses ``text`` for."""
    with pytest.raises(ConfigError) as info:
        parse_file(text)
    return info.value.issues


def one_file_issue(text: str) -> ConfigIssue:
    """The one issue ``parse_file`` refuses ``text`` for (fails when there are others)."""
    issues = file_issues(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]
