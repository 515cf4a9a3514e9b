"""How late the O->T heartbeats went out: a fixed histogram the worker fills per heartbeat and
summarises once per stats interval (p50, p99, max), pure.

Lateness is the send time minus the slot's deadline on the connection's absolute schedule
(``connection.SendHeartbeat.due``). Adding one value is a bucket increment, so 10,000
heartbeats/s cost nothing worth measuring and memory stays constant whatever the interval;
percentiles are read to the bucket's upper edge (``BUCKET_S``, 10 µs), the maximum exactly.
"""

from __future__ import annotations

__all__ = ["BUCKET_S", "LatenessHistogram"]

BUCKET_S = 10e-6  # resolution of the percentiles
_BUCKETS = 1000  # 0 .. 10 ms in BUCKET_S steps; anything later falls in the last bucket


class LatenessHistogram:
    """Lateness values (seconds) since the last ``reset``."""

    __slots__ = ("count", "counts", "max_s")

    def __init__(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.count = 0
        self.max_s = 0.0

    def add(self, late_s: float) -> None:
        """One heartbeat that went out ``late_s`` after its deadline (never negative: a
        heartbeat is not sent early; a negative value counts as on time)."""
        if late_s > self.max_s:
            self.max_s = late_s
        i = int(late_s / BUCKET_S) if late_s > 0 else 0
        self.counts[i if i < _BUCKETS else _BUCKETS] += 1
        self.count += 1

    def percentile_s(self, q: float) -> float | None:
        """The lateness that a fraction ``q`` (0..1) of the values did not exceed, to the
        bucket's upper edge (the exact maximum for the last one); None when empty."""
        if self.count == 0:
            return None
        rank = max(1, -(-q * self.count // 1))  # ceil(q * count), at least the first value
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min((i + 1) * BUCKET_S, self.max_s) if i < _BUCKETS else self.max_s
        return self.max_s  # pragma: no cover - the counts sum to ``count``

    def summary_ms(self) -> dict[str, float | None]:
        """``p50_ms``, ``p99_ms``, ``max_ms`` (None when no heartbeat was sent)."""
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        return {
            "p50_ms": ms(self.percentile_s(0.50)),
            "p99_ms": ms(self.percentile_s(0.99)),
            "max_ms": ms(self.max_s if self.count else None),
        }

    def reset(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.count = 0
        self.max_s = 0.0
