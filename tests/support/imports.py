"""What a Python source file imports, read from its syntax tree (nothing is imported): the
module each ``import x`` / absolute ``from x import ...`` names, with its line. The purity test
of ``acquisition/`` and the namespace check of the static checks read imports with it.

    for line, module in imports_of(path):   # (12, "pyconpro.acquisition.cip"), ...
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every module imported by ``path``; a relative import is none."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
