"""Read what a SQLite sink stored, as another program would while the sink runs (read-only,
WAL lets it read during the sink's writes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def stored_seqs(path: Path) -> list[int]:
    """The ``seq`` of every sample row, in insertion order; asserts ``PRAGMA integrity_check``
    is ok. OperationalError while the file or its tables do not exist."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [seq for (seq,) in db.execute("SELECT seq FROM samples ORDER BY id")]
    finally:
        db.close()


def stored_count(path: Path) -> int:
    """Sample rows in ``path`` now (integrity checked); 0 while there is no database yet."""
    try:
        return len(stored_seqs(path)) if path.exists() else 0
    except sqlite3.OperationalError:
        return 0
