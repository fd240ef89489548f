"""Per-source limits for the responder's listeners (token buckets, open connections): bounded whatever the traffic."""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Callable

MAX_TRACKED_SOURCES = 4096  # oldest forgotten first
IPV6_SOURCE_PREFIX_LENGTH = 64


class TokenBuckets:
    """`rate` answers a second per source (see `source_key`), with bursts of `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, source: str) -> bool:
        """Whether the peer at address `source` may have one more answer now."""
        key, now = source_key(source), self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_TRACKED_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


def source_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address a peer has: an IPv4 client of a dual-stack socket (`::ffff:a.b.c.d`) is IPv4,
    and a link-local zone is dropped. ValueError if `address` is none."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def source_key(address: str) -> str:
    """What a per-source limit counts: an IPv4 address, or an IPv6 /64.

    One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses), so counting its
    addresses one by one would give it billions of allowances.
    """
    try:
        ip = source_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX_LENGTH), strict=False))
    return str(ip)


class ConnectionSlots:
    """Open connections: at most `per_source` from one source (see `source_key`), `total` in all,
    and the last `reserve` of them only for sources with none open.

    Without the reserve, total / per_source sources at their share take every slot; with it,
    each source gets at most one slot beyond total - reserve, so fewer sources than `reserve`
    cannot take them all. Only sources with a connection open are kept, so memory is bounded by `total`.
    """

    def __init__(self, per_source: int, total: int, reserve: int = 0) -> None:
        if not 0 <= reserve < total:
            raise ValueError(f"reserve {reserve} must be at least 0 and below the total, {total}")
        self._per_source, self._total, self._reserve = per_source, total, reserve
        self._open: collections.Counter[str] = collections.Counter()

    def take(self, source: str) -> str | None:
        """Take a slot for the peer at address `source` (give it back with `give_back`); None if
        taken, else why not."""
        key, open_now = source_key(source), self._open.total()
        if open_now >= self._total:
            return f"busy: {self._total} connections open"
        if self._open[key] >= self._per_source:
            return f"{self._per_source} connections already open from this source"
        if open_now >= self._total - self._reserve and self._open[key]:
            return f"{open_now} of {self._total} connections open: the rest are for sources with none open"
        self._open[key] += 1
        return None

    def give_back(self, source: str) -> None:
        key = source_key(source)
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
