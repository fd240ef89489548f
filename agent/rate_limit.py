"""Per-source token buckets for the responder's listeners: bounded whatever the traffic."""

from __future__ import annotations

import collections
from collections.abc import Callable

MAX_TRACKED_SOURCES = 4096  # oldest forgotten first


class TokenBuckets:
    """`rate` answers a second per source address, with bursts of `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, source: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_TRACKED_SOURCES:
            self._buckets.popitem(last=False)
        return allowed
