"""Bus loss seen by a subscriber: the ``sq`` numbers of each (publisher, topic) stream, where
they jump (messages lost on the way) or go back (the publisher restarted); pure logic that the
SUB loop (``sinks/base.py``) feeds, and the record of each jump (``BusGap``) that sinks store
(docs/wire-format.md "Detecting loss")."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BusGap", "GapDetector"]


@dataclass(frozen=True, slots=True)
class BusGap:
    """Loss or a restart seen in one publisher's ``sq`` numbers on one topic.

    ``missed`` messages never reached this subscriber. For a restart (``restart=True``, the
    sequence went backwards) ``missed`` counts the messages of the new run numbered below
    ``received_seq``; the old run's tail cannot be known and is not guessed.

    ``cause`` ``"spool"``: not bus loss but the ``missed`` messages of that stream numbered
    ``expected_seq`` .. ``received_seq - 1`` that a full spool dropped (``sinks/spool.py``).
    """

    publisher: str
    topic: str
    expected_seq: int
    received_seq: int
    missed: int
    restart: bool
    t_wall_ns: int  # when this subscriber noticed, ns since the Unix epoch
    cause: str = "bus"  # or "spool"


class GapDetector:
    """Tracks the last ``sq`` per (publisher, topic); pure logic, fed by the loop.

    ``seed`` starts a stream from what the output stored before this process started, so the
    first message after a restart is compared with it (``resuming`` until then).
    """

    __slots__ = ("_last", "_seeded")

    def __init__(self) -> None:
        self._last: dict[tuple[str, bytes], int] = {}
        self._seeded: set[tuple[str, bytes]] = set()

    def seed(self, publisher: str, topic: bytes, seq: int) -> None:
        self._last[(publisher, topic)] = seq
        self._seeded.add((publisher, topic))

    def resuming(self, publisher: str, topic: bytes) -> bool:
        """True until the first message of a seeded stream has been observed."""
        return bool(self._seeded) and (publisher, topic) in self._seeded

    def observe(self, publisher: str, topic: bytes, seq: int, now_wall_ns: int) -> BusGap | None:
        key = (publisher, topic)
        last = self._last.get(key)
        self._last[key] = seq
        if self._seeded:
            self._seeded.discard(key)
        if last is None or seq == last + 1:
            # First sight of a stream: a late joiner cannot know what it missed before.
            return None
        topic_text = topic.decode("utf-8", "replace")
        if seq <= last:
            return BusGap(publisher, topic_text, last + 1, seq, seq, True, now_wall_ns)
        return BusGap(publisher, topic_text, last + 1, seq, seq - last - 1, False, now_wall_ns)
