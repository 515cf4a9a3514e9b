#!/usr/bin/env python3
"""Regenerate (or check) the tables in docs/ that are derived from schemas in the code.

A generated table sits between two markers in a markdown file::

    <!-- generated: wire sample -->
    | key | type | required | meaning |
    ...
    <!-- end generated -->

and is rewritten from the function ``GENERATORS[name]``. Run it after changing a schema:

    scripts/doc_tables.py            # rewrite the tables in place
    scripts/doc_tables.py --check    # exit 1 and name the stale tables (the tests do this)
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

from pyconpro.acquisition import sink_config, wire
from pyconpro.sinks.registry import sink_schemas

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Marker name -> the function that renders its table.
GENERATORS: dict[str, Callable[[], str]] = {
    "wire sample": lambda: wire.schema_markdown(wire.SAMPLE_KEYS),
    "wire event": lambda: wire.schema_markdown(wire.EVENT_KEYS),
    "wire stats": lambda: wire.schema_markdown(wire.STATS_KEYS),
    # docs/configuration.md: the keys of each sink kind, from the schema the sink declares
    **{
        f"sink {kind}": functools.partial(sink_config.options_markdown, schema)
        for kind, schema in sink_schemas().items()
    },
}

_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL
)


def regenerate(text: str) -> tuple[str, list[str]]:
    """``text`` with every generated block rewritten, and the names of the blocks that changed.
    An unknown block name raises KeyError."""
    stale: list[str] = []

    def fill(m: re.Match[str]) -> str:
        name = m.group("name")
        body = GENERATORS[name]()
        if body != m.group("body"):
            stale.append(name)
        return m.group(1) + body + m.group(4)

    return _BLOCK.sub(fill, text), stale


def blocks_in(text: str) -> list[str]:
    """Names of the generated blocks in ``text``, in order."""
    return [m.group("name") for m in _BLOCK.finditer(text)]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad: list[str] = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        new, stale = regenerate(text)
        if not stale:
            continue
        if check:
            bad += [f"{path.relative_to(ROOT)}: {name}" for name in stale]
        else:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}: {', '.join(stale)}")
    if bad:
        print("stale generated tables (run scripts/doc_tables.py):", *bad, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
