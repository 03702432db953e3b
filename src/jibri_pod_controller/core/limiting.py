"""A token bucket per source address, so one client cannot flood the webhook path.

A real Jibri sends a status every minute plus one per change; the default (5/s, burst 20) is
far above that and far below what it takes to hurt the API server. The table of buckets is
bounded: kept in least-recently-used order, and when it holds ``max_sources`` (20,000) buckets
the one idle longest is evicted (an evicted source starts again with a full bucket).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_sources: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def allow(self, source: str) -> bool:
        if not self.enabled:
            return True
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.popitem(last=False)
            bucket = self._buckets[source] = _Bucket(self._burst, now)
        else:
            self._buckets.move_to_end(source)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
