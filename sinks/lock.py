"""One writer per file across processes: an exclusive ``flock`` on ``<file>.lock`` beside it,
holding the owner's PID so that a refusal can name it.

The lock is the kernel's, so it goes with its process: the file a killed process left holds a
dead PID and is simply taken over. Used by the SQLite sink (its database) and the network sinks'
spool (``sinks/spool.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock; ``owner`` is the PID it wrote ("unknown" if none)."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(f"{path} is held by PID {owner}")
        self.path = path
        self.owner = owner


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def take(path: Path) -> int:
    """Hold ``<path>.lock``; its file descriptor (``release`` it). ``LockHeld`` when another
    process holds it; ``OSError`` when the lock file cannot be created."""
    lock = lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(lock, owner) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def release(fd: int) -> None:
    """Give the lock up (the file stays, empty)."""
    with contextlib.suppress(OSError):  # a failing disk: the PID stays, stale
        os.ftruncate(fd, 0)
    os.close(fd)  # releases the flock
