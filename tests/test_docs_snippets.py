"""Every code block of README.md and docs/*.md, and every file in examples/, runs as written
against `pyconpro sim`, or says why it cannot (issue 14).

The convention (docs/STYLE.md, "Code blocks in the docs"):

* every fenced block names its language; ```python, ```sh and ```toml blocks are run, ```text
  is output, a diagram or a byte layout and is never run;
* a block of any other language, or a python / sh / toml block that cannot run here (a real
  PLC, sudo, systemd, a command of minutes), has on the line right before its fence
  ``<!-- not-run: REASON -->``, or ``<!-- run-by: tests/FILE.py -->`` when another test runs it
  (that file must exist and name the document);
* ``<!-- setup: SHELL -->`` before a block: commands run first in its directory (the keys a
  config names).

How each is run, in a fresh directory holding a link to examples/, with the package's
``pyconpro`` and ``python`` first on PATH: ``python`` as a script; ``sh`` with ``bash -e`` (a
line starting ``pyconpro sim`` is started in the background, on the block's own address when it
names none, its READY line awaited, and stopped when the block is done); ``toml`` with
``pyconpro check --no-resolve`` (a file written for a plant's addresses and paths), or, for a
simulator's tag file (a top-level ``tags``), loaded as ``pyconpro sim --config`` would; a
``[[sink]]`` section alone is checked inside a minimal pipeline of one PLC. The
simulator's default addresses 127.0.0.2 and 127.0.0.3 become addresses of this test's own
(127.93.N.2 / .3, ports as written), and the in-process API binds 127.93.0.1 with a free UDP
port (``PYCONPRO_LOCAL_ADDRESS``, ``PYCONPRO_UDP_PORT``), so runs never meet another simulator
on this host. A python block and an example must exit 0 and print something; everything runs at
once, within ``RUN_TIMEOUT_S``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyconpro.simulator.tags import load_store
from pyconpro.simulator.testing import SimulatorProcess, start_simulator
from pyconpro.workers.process import Child, regex_ready, spawn

from tests.support.configs import ONE_PLC

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
RUN_LANGS = frozenset({"python", "sh", "toml"})
PROSE_LANGS = frozenset({"text"})
RUN_TIMEOUT_S = 60.0
MINIMAL_PLC = "\n" + ONE_PLC
BIN = Path(sys.executable).parent
SIM_READY = r"READY tcp=(?P<addr>[\d.]+):(?P<tcp>\d+)"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|run-by|setup):(?P<text>.*?)-->\s*$")


@dataclass(frozen=True, slots=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS and not {"not-run", "run-by"} & set(self.markers)


def parse_blocks(doc: Path, text: str) -> list[Block]:
    """The fenced blocks of ``text`` with the markers on the lines right above each fence."""
    lines = text.split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, fence, indent = i, m["fence"], m["indent"]
        lang = m["info"].strip().split(" ")[0]
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        markers: dict[str, str] = {}
        j = start - 1
        while j >= 0 and (mm := _MARKER.match(lines[j])):
            markers[mm["kind"]] = mm["text"].strip()
            j -= 1
        out.append(Block(doc, start + 1, lang, "\n".join(body) + "\n", markers))
        i += 1
    return out


def block_problems(block: Block) -> list[str]:
    """Why ``block`` breaks the convention (empty when it keeps it)."""
    where = block.name
    if not block.lang:
        return [f"{where}: a block without a language: write ```text for output, a diagram or "
                "bytes, or the language of code (python, sh, toml run; see docs/STYLE.md)"]
    problems = []
    for kind in ("not-run", "run-by"):
        if kind in block.markers and not block.markers[kind]:
            problems.append(f"{where}: <!-- {kind}: --> needs a reason")
    run_by = block.markers.get("run-by")
    if run_by:
        test = ROOT / run_by
        if not test.is_file():
            problems.append(f"{where}: <!-- run-by: {run_by} -->: no such file")
        elif block.doc.name not in test.read_text():
            problems.append(f"{where}: {run_by} never names {block.doc.name}")
    if (block.lang not in RUN_LANGS | PROSE_LANGS
            and not {"not-run", "run-by"} & set(block.markers)):
        problems.append(f"{where}: ```{block.lang} blocks are not run: mark it"
                        " <!-- not-run: REASON --> or <!-- run-by: tests/FILE.py -->")
    return problems


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in parse_blocks(doc, doc.read_text())]


# --------------------------------------------------------------------------- the convention


def test_every_block_is_run_or_says_why_not() -> None:
    problems = [p for b in all_blocks() for p in block_problems(b)]
    assert not problems, "\n".join(problems)


def test_the_convention_refuses_what_would_go_untested() -> None:
    doc = ROOT / "docs" / "sqlite.md"  # named by the test below, so run-by can point at it
    text = """
```
pyconpro sim
```
```json
{}
```
<!-- not-run:   -->
```sh
pyconpro run plant.toml
```
<!-- run-by: tests/no_such_test.py -->
```sql
SELECT 1
```
<!-- run-by: tests/sinks/test_sqlite_doc_queries.py -->
```sql
SELECT 1
```
   <!-- setup: mkdir keys -->
   ```toml
   [bus]
   ```
```text
output
```
"""
    blocks = parse_blocks(doc, text)
    assert [(b.line, b.lang) for b in blocks] == [
        (2, ""), (5, "json"), (9, "sh"), (13, "sql"), (17, "sql"), (21, "toml"), (24, "text")]
    assert blocks[5].markers == {"setup": "mkdir keys"} and blocks[5].body == "[bus]\n"
    assert [b.runs for b in blocks] == [False, False, False, False, False, True, False]
    problems = [block_problems(b) for b in blocks]
    assert "without a language" in problems[0][0]
    assert "not run: mark it" in problems[1][0]
    assert "needs a reason" in problems[2][0]
    assert "no such file" in problems[3][0]
    assert problems[4:] == [[], [], []]


# --------------------------------------------------------------------------- running them


@dataclass
class Run:
    name: str
    argv: list[str]
    cwd: Path
    must_print: bool = False
    stdin: str | None = None
    child: Child | None = None
    servers: list[Child] = field(default_factory=list)


def _addresses(n: int) -> dict[str, str]:
    return {"127.0.0.2": f"127.93.{n}.2", "127.0.0.3": f"127.93.{n}.3"}


def _rewrite(text: str, addresses: dict[str, str]) -> str:
    for old, new in addresses.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def _workdir(tmp: Path, name: str) -> Path:
    d = tmp / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    d.mkdir()
    (d / "examples").symlink_to(ROOT / "examples")
    return d


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                PYCONPRO_LOCAL_ADDRESS="127.93.0.1", PYCONPRO_UDP_PORT="0",
                PYTHONUNBUFFERED="1")


def _plan(block: Block, n: int, tmp: Path) -> Run:
    cwd = _workdir(tmp, block.name)
    addresses = _addresses(n)
    body = _rewrite(block.body, addresses)
    setup = block.markers.get("setup", "")
    if block.lang == "python":
        script = cwd / "snippet.py"
        script.write_text(body)
        return Run(block.name, ["bash", "-ec", f"{setup}\npython snippet.py"], cwd,
                   must_print=True)
    if block.lang == "toml":
        parsed = tomllib.loads(body)
        if "sink" in parsed and "plc" not in parsed and "produce" not in parsed:
            body += MINIMAL_PLC  # a [[sink]] section alone: checked inside a minimal pipeline
        (cwd / "config.toml").write_text(body)
        if "tags" in parsed:  # a simulator's tag file (docs/simulator.md)
            load = "from pyconpro.simulator.tags import load_store; load_store('config.toml')"
            return Run(block.name, ["bash", "-ec", f'{setup}\npython -c "{load}"'], cwd)
        return Run(block.name, ["bash", "-ec", f"{setup}\npyconpro check --no-resolve config.toml"],
                   cwd)
    servers = [line for line in body.splitlines() if line.lstrip().startswith("pyconpro sim")]
    rest = [line for line in body.splitlines() if line not in servers]
    run = Run(block.name, ["bash", "-ec", setup + "\n" + "\n".join(rest)], cwd)
    for line in servers:
        command = line.split("#", 1)[0].strip()
        if "--address" not in command:  # never the default 127.0.0.2 of this host
            command += f" --address {addresses['127.0.0.2']}"
        run.servers.append(spawn(["bash", "-c", "exec " + command], cwd=cwd, env=_env(),
                                 ready=regex_ready(SIM_READY), stderr=cwd / "sim.log"))
    return run


def _example_runs(tmp: Path, sims: list[SimulatorProcess]) -> list[Run]:
    runs = []
    for i, path in enumerate(sorted(p for p in (ROOT / "examples").iterdir() if p.suffix == ".py")):
        cwd = _workdir(tmp, f"examples/{path.name}")
        script = cwd / path.name
        script.write_text(_rewrite(path.read_text(), {"127.0.0.2": sims[i % len(sims)].address}))
        runs.append(Run(f"examples/{path.name}", ["python", path.name], cwd, must_print=True))
    return runs


@pytest.fixture
def sims() -> Iterator[list[SimulatorProcess]]:
    """Two plain `pyconpro sim` (the python blocks and examples share them; two keep the
    consumers of one tag below its limit of 4)."""
    with start_simulator("127.93.1.2", tcp_port=44818, udp_port=2222) as a, \
            start_simulator("127.93.2.2", tcp_port=44818, udp_port=2222) as b:
        yield [a, b]


def _finish(runs: list[Run], deadline: float) -> list[str]:
    failures = []
    for run in runs:
        assert run.child is not None
        code: int | None
        try:
            code = run.child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        run.child.stop(5.0)
        for server in run.servers:
            server.stop(5.0)
        out = (run.cwd / "out.txt").read_text(errors="replace")
        err = (run.cwd / "err.txt").read_text(errors="replace")
        if code is None:
            failures.append(f"{run.name}: still running after {RUN_TIMEOUT_S:g} s\n{out}{err}")
        elif code != 0:
            failures.append(f"{run.name}: exit {code}\n{out}{err}")
        elif run.must_print and not out.strip():
            failures.append(f"{run.name}: printed nothing\n{err}")
    return failures


def test_runnable_blocks_and_examples_run_against_the_simulator(
    tmp_path: Path, sims: list[SimulatorProcess]
) -> None:
    blocks = [b for b in all_blocks() if b.runs]
    assert {b.lang for b in blocks} == RUN_LANGS  # the test reaches every kind
    runs: list[Run] = []
    try:
        for n, block in enumerate(blocks):
            # python blocks share the two simulators; a block that starts its own gets its own
            # addresses
            shared = block.lang == "python" or "pyconpro sim" not in block.body
            runs.append(_plan(block, 1 + n % 2 if shared else 10 + n, tmp_path))
        runs += _example_runs(tmp_path, sims)
        for run in runs:
            run.child = spawn(run.argv, cwd=run.cwd, env=_env(), stdout=run.cwd / "out.txt",
                              stderr=run.cwd / "err.txt")
        failures = _finish(runs, time.monotonic() + RUN_TIMEOUT_S)
    finally:
        for run in runs:
            for child in (run.child, *run.servers):
                if child is not None:
                    child.stop(5.0)
    assert not failures, "\n\n".join(failures)


def test_example_data_files_are_valid() -> None:
    """The examples that are not programs: configs pass `pyconpro check`, simulator tag files
    load, the dashboard is JSON. A new kind of file here needs a way to be checked."""
    from pyconpro.check_cli import check

    for path in sorted((ROOT / "examples").iterdir()):
        if path.suffix == ".py":
            continue  # run above
        if path.name.startswith("sim-") and path.suffix == ".toml":
            assert load_store(path).tags, path
        elif path.suffix == ".toml":
            out = io.StringIO()
            assert check(str(path), resolve=False, out=out) == 0, out.getvalue()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            raise AssertionError(f"{path}: no check for this kind of example; add one here")
