"""Per-source limits for the responder's listeners (token buckets, open connections): bounded whatever the traffic."""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Callable

MAX_TRACKED_SOURCES = 4096  # oldest forgotten first
IPV6_SOURCE_PREFIX_LENGTH = 64


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


def source_key(address: str) -> str:
    """What a per-source limit counts: an IPv4 address, or an IPv6 /64.

    One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses), so counting its
    addresses one by one would give it billions of allowances.
    """
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # without a link-local zone
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX_LENGTH), strict=False))
    return str(ip)


class ConnectionSlots:
    """Open connections: at most `per_source` from one source (see `source_key`), `total` in all.

    Only sources with a connection open are kept, so memory is bounded by `total`.
    """

    def __init__(self, per_source: int, total: int) -> None:
        self._per_source, self._total = per_source, total
        self._open: collections.Counter[str] = collections.Counter()

    def take(self, source: str) -> str | None:
        """Take a slot for `source` (give it back with `give_back`); None if taken, else why not."""
        if self._open.total() >= self._total:
            return f"busy: {self._total} connections open"
        if self._open[source] >= self._per_source:
            return f"{self._per_source} connections already open from this source"
        self._open[source] += 1
        return None

    def give_back(self, source: str) -> None:
        self._open[source] -= 1
        if self._open[source] <= 0:
            del self._open[source]
