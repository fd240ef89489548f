"""Path MTU toward each gateway: the largest IPv4 packet that reaches it whole with DF set.

Method, and why. The kernel's own path MTU discovery (connect a UDP socket, set DF, read
IP_MTU) trusts ICMP "fragmentation needed" alone: where a filter drops those (a PMTU black
hole, the failure that makes tunnels hang) it reports the local link's MTU, a guess. So
sizes are probed, and a size counts as passing only when the far end answers that very
packet. The answer comes from ICMP echo, the one thing nearly every host answers:

* `icmp_echo`: echo requests with DF (IP_MTU_DISCOVER=IP_PMTUDISC_PROBE, which sets DF and
  ignores the kernel's cached path MTU so that sizes above it can be tried again) from a
  ping socket (unprivileged where net.ipv4.ping_group_range allows), else a raw ICMP socket
  (CAP_NET_RAW). An echo reply for a size proves it passes.
* `udp`: where the far end answers no echo (Azure VPN gateways do not), or echo sockets are
  not permitted, UDP datagrams with DF to an unused port (as tracepath does); an ICMP port
  unreachable from the target itself proves the size reached it.

Either way ICMP "fragmentation needed" from a router on the way (read with IP_RECVERR) marks a
size too big at once and names the MTU to try next; silence only marks it too big for the
search, never the result: a path MTU is reported only when one size was answered and the
next larger one was not. Sizes are searched several at a time (k-ary search, two copies of
each so one lost packet is not taken for "too big"); a round ends when every size is
settled or after a wait scaled to the measured round-trip time. Where the target answers
neither way, `path_mtu_bytes` is None and `upper_bound_bytes` says what ICMP and the local
link allow; an IKE-based probe (the one thing an Azure gateway does answer) would close
that gap.

What Azure allows through its tunnels (1400-byte packets, MSS 1350) is the rule set's to
compare, not this probe's.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.transport.icmp_errors import (
    ICMP_DEST_UNREACH,
    ICMP_FRAG_NEEDED,
    ICMP_PORT_UNREACH,
    MAX_IPV4_PACKET,
    IcmpError,
    enable_error_queue,
    read_error_queue,
    send_once_more_on_error,
)

# Linux socket options Python 3.11 does not name (include/uapi/linux/in.h, errqueue.h).
IP_MTU_DISCOVER = 10
IP_MTU = 14
IP_PMTUDISC_PROBE = 3  # set DF, ignore the cached path MTU
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8

IPV4_MIN_MTU = 68  # RFC 791: every IPv4 link carries this; the smallest size probed
PROBE_HEADER_BYTES = 28  # IPv4 header (20) + ICMP echo or UDP header (8)
SIZES_PER_ROUND = 8  # k of the k-ary search: 1500 bytes of range take 3-4 rounds
COPIES = 2  # per size, so one lost packet does not make the result smaller
MAX_ROUNDS = 12
# The first round waits this long for silence: the target's round-trip time is not known yet.
FIRST_ROUND_WAIT_SECONDS = 0.5
# Later rounds wait a few round-trip times, floored so a sub-millisecond lab RTT still lets a
# router's ICMP arrive.
RTT_WAITS = 4.0
MIN_ROUND_WAIT_SECONDS = 0.05
DEADLINE_MARGIN_SECONDS = 0.05  # return before the runner's deadline, not at it
UDP_PROBE_PORT = 33434  # traceroute's first port: nothing listens, so a host answers "port unreachable"


# ---------------------------------------------------------------------------------------
# the search, independent of how sizes are probed


@dataclass
class RoundResult:
    passed: set[int] = field(default_factory=set)  # the target answered a packet of this size
    too_big: dict[int, int | None] = field(default_factory=dict)  # size -> MTU a router named, if any
    rtt_seconds: float | None = None  # the fastest answer of the round


class SizeProber(Protocol):
    method: str
    # False where the target's answers are rate-limited (ICMP errors): then silence proves nothing.
    silence_means_too_big: bool
    min_round_wait_seconds: float

    async def round(self, sizes: Sequence[int], wait: float) -> RoundResult:
        """Send COPIES packets of each total IP size; collect what comes back within `wait`."""
        ...


@dataclass(frozen=True)
class SearchResult:
    largest_passed: int | None  # the largest size the target answered
    upper_bound: int  # no size above it passed (a router said so, or silence)
    probes: int  # packets sent
    rounds: int

    @property
    def path_mtu(self) -> int | None:
        """Exact only when the largest answered size is also the bound."""
        return self.largest_passed if self.largest_passed == self.upper_bound else None


def sizes_between(low: int, high: int, count: int) -> list[int]:
    """Up to `count` sizes spread evenly over (low, high], always with `high`."""
    span = high - low
    return sorted({low + -(-span * i // count) for i in range(1, count + 1)} - {low})


async def search(prober: SizeProber, floor: int, ceiling: int,
                 remaining: Callable[[], float]) -> SearchResult:
    """The largest size in [floor, ceiling] that passes, by k-ary search with the prober."""
    low: int | None = None  # largest size answered
    high = ceiling  # largest size not yet shown too big
    hints: set[int] = set()  # MTUs routers named: usually exactly the answer
    wait, probes, rounds = FIRST_ROUND_WAIT_SECONDS, 0, 0
    while rounds < MAX_ROUNDS and (low is None or low < high):
        budget = remaining() - DEADLINE_MARGIN_SECONDS
        if budget <= 0:
            break
        base = floor - 1 if low is None else low
        sizes = set(sizes_between(base, high, SIZES_PER_ROUND)) | {h for h in hints if base < h <= high}
        if low is None:
            sizes.add(floor)  # first make sure the target answers at all
        result = await prober.round(sorted(sizes), min(wait, budget))
        probes, rounds = probes + COPIES * len(sizes), rounds + 1
        if result.passed:
            low = max(low or 0, *result.passed)
        for size, mtu in result.too_big.items():
            if mtu is not None and floor <= mtu < size:
                hints.add(mtu)
                high = min(high, mtu)
            high = min(high, size - 1)
        if low is None:
            break  # not even the smallest packet was answered: the target does not answer this way
        if prober.silence_means_too_big:
            # Silence above the largest answered size counts as too big; below it, as a loss.
            silent = (s for s in sizes if s not in result.passed and s not in result.too_big)
            high = min([high, *(s - 1 for s in silent if s > low)])
        high = max(high, low)  # a size that was answered passes, whatever was said about larger ones
        if result.rtt_seconds is not None:
            wait = max(prober.min_round_wait_seconds, RTT_WAITS * result.rtt_seconds)
    return SearchResult(low, high, probes, rounds)


# ---------------------------------------------------------------------------------------
# probing sizes on real sockets


def _internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class _SocketProber:
    """Shared by both methods: send sized packets, settle them from answers and ICMP errors."""

    method = ""
    silence_means_too_big = True
    min_round_wait_seconds = MIN_ROUND_WAIT_SECONDS

    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        self._sock = sock
        self._clock = clock
        self._token = os.urandom(8)  # marks our packets inside ICMP errors and echo replies
        self._sequence = 0
        self._sent: dict[int, tuple[int, float]] = {}  # sequence -> (size, sent at)

    def _packet(self, sequence: int, size: int) -> bytes:
        raise NotImplementedError

    def _answered(self, datagram: bytes) -> int | None:
        """The sequence number of ours that this received datagram answers, if any."""
        raise NotImplementedError

    def _sequence_in(self, quoted: bytes) -> int | None:
        """Our sequence number in the start of one of our packets, quoted by an ICMP error."""
        raise NotImplementedError

    def _is_answer(self, error: IcmpError) -> bool:
        return False

    async def round(self, sizes: Sequence[int], wait: float) -> RoundResult:
        loop = asyncio.get_running_loop()
        result = RoundResult()
        settled = asyncio.Event()
        pending = set(sizes)

        def settle(size: int, passed: bool, mtu: int | None = None, sent_at: float | None = None) -> None:
            if passed:
                result.passed.add(size)
                result.too_big.pop(size, None)
                if sent_at is not None:
                    rtt = self._clock() - sent_at
                    result.rtt_seconds = rtt if result.rtt_seconds is None else min(result.rtt_seconds, rtt)
            elif size not in result.passed:
                result.too_big[size] = mtu if mtu is not None else result.too_big.get(size)
            pending.discard(size)
            if not pending:
                settled.set()

        def readable() -> None:
            for error in read_error_queue(self._sock):
                sequence = self._sequence_in(error.quoted)
                if sequence not in self._sent:
                    continue
                size, sent_at = self._sent[sequence]
                if self._is_answer(error):
                    settle(size, True, sent_at=sent_at)
                elif error.from_icmp and (error.icmp_type, error.icmp_code) == (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED):
                    settle(size, False, error.info or None)
            while True:
                try:
                    datagram = self._sock.recv(MAX_IPV4_PACKET)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue  # the pending error of an ICMP message, read above from the queue
                sequence = self._answered(datagram)
                if sequence in self._sent:
                    size, sent_at = self._sent[sequence]
                    settle(size, True, sent_at=sent_at)

        loop.add_reader(self._sock.fileno(), readable)
        try:
            for size in sorted(sizes, reverse=True):
                for _ in range(COPIES):
                    self._sequence = (self._sequence + 1) & 0xFFFF
                    self._sent[self._sequence] = (size, self._clock())
                    error = send_once_more_on_error(self._sock, self._packet(self._sequence, size))
                    if error is not None and error.errno == errno.EMSGSIZE:
                        settle(size, False)  # larger than this host's own link
                    # other local trouble (no route) shows as silence
            try:
                await asyncio.wait_for(settled.wait(), wait)
            except TimeoutError:
                pass
        finally:
            loop.remove_reader(self._sock.fileno())
        return result


class EchoProber(_SocketProber):
    method = "icmp_echo"

    def __init__(self, sock: socket.socket, clock: Callable[[], float], raw: bool) -> None:
        super().__init__(sock, clock)
        self._raw = raw  # a raw socket sees IP headers and every ICMP message; a ping socket only its own
        self._identifier = int.from_bytes(os.urandom(2), "big")  # a ping socket puts its own

    def _packet(self, sequence: int, size: int) -> bytes:
        payload = self._token.ljust(size - PROBE_HEADER_BYTES, b"\0")
        header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, self._identifier, sequence)
        checksum = _internet_checksum(header + payload) if self._raw else 0  # the kernel fills a ping socket's
        return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum, self._identifier, sequence) + payload

    def _echo_fields(self, icmp: bytes, kind: int) -> int | None:
        if len(icmp) < 16 or icmp[0] != kind or icmp[8:16] != self._token:
            return None
        identifier, sequence = struct.unpack_from("!HH", icmp, 4)
        if self._raw and identifier != self._identifier:
            return None
        size = self._sent.get(sequence, (None, 0.0))[0]
        # An answer shorter than what was sent does not prove the size passed.
        return sequence if size is not None and len(icmp) == size - PROBE_HEADER_BYTES + 8 else None

    def _answered(self, datagram: bytes) -> int | None:
        if self._raw:
            if len(datagram) < 20:
                return None
            datagram = datagram[(datagram[0] & 0x0F) * 4:]
        return self._echo_fields(datagram, ICMP_ECHO_REPLY)

    def _sequence_in(self, quoted: bytes) -> int | None:
        if len(quoted) < 8 or quoted[0] != ICMP_ECHO_REQUEST:
            return None
        return struct.unpack_from("!H", quoted, 6)[0]


class UdpProber(_SocketProber):
    """Answers are ICMP port unreachable, which Linux sends at most 6 at once and then 1 a second
    to one peer (icmp_ratelimit): silence proves nothing, and sizes go largest first so that
    the answers that do come are about the sizes that matter."""

    method = "udp"
    silence_means_too_big = False
    min_round_wait_seconds = 1.0  # the target's ICMP rate limit gives one answer a second

    def __init__(self, sock: socket.socket, clock: Callable[[], float], target: str) -> None:
        super().__init__(sock, clock)
        self._target = target

    def _packet(self, sequence: int, size: int) -> bytes:
        return (self._token + struct.pack("!H", sequence)).ljust(size - PROBE_HEADER_BYTES, b"\0")

    def _answered(self, datagram: bytes) -> int | None:
        return self._sequence_in(datagram)  # a service that echoes what it got

    def _sequence_in(self, quoted: bytes) -> int | None:
        if len(quoted) < 10 or quoted[:8] != self._token:
            return None
        return struct.unpack_from("!H", quoted, 8)[0]

    def _is_answer(self, error: IcmpError) -> bool:
        # The target itself saying "port unreachable" received the whole packet (DF: no fragments).
        return error.from_icmp and error.offender == self._target \
            and (error.icmp_type, error.icmp_code) == (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH)


def open_echo_socket() -> tuple[socket.socket, bool] | str:
    """A ping socket, else a raw ICMP socket (and whether it is raw); why neither, as text."""
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), False
    except PermissionError:
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), True
        except PermissionError:
            return (f"ICMP echo needs a ping socket (net.ipv4.ping_group_range excludes group {os.getgid()})"
                    " or CAP_NET_RAW")


def _prepare(sock: socket.socket, address: str, port: int) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    enable_error_queue(sock)
    sock.connect((address, port))


def link_mtu_toward(address: str) -> int:
    """The MTU of the interface the route toward `address` leaves by: nothing larger leaves this host."""
    import psutil  # a compiled extension: loaded only when the check runs

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((address, UDP_PROBE_PORT))  # consults the routing table only: nothing is sent
        source = sock.getsockname()[0]
        route_mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    stats = psutil.net_if_stats()
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == source for a in addresses) and name in stats:
            return min(stats[name].mtu, MAX_IPV4_PACKET)
    return route_mtu  # no interface holds the source address (odd, but the route still knows an MTU)


# ---------------------------------------------------------------------------------------
# the check


@dataclass(frozen=True)
class PathMtuEvidence:
    address: str | None
    path_mtu_bytes: int | None = None  # the largest packet that passes with DF, proven by an answer
    method: str | None = None  # icmp_echo or udp (DF datagrams answered by ICMP port unreachable)
    largest_passed_bytes: int | None = None
    upper_bound_bytes: int | None = None  # what ICMP and the local link allow
    link_mtu_bytes: int | None = None
    probes_sent: int = 0


def _describe(search_result: SearchResult, method: str, link_mtu: int) -> str:
    mtu, low, high = search_result.path_mtu, search_result.largest_passed, search_result.upper_bound
    if search_result.probes == 0:
        return f"the deadline passed before the first {method} probe was sent"
    if mtu is not None:
        return (f"{mtu} bytes pass with DF and {mtu + 1} do not" if mtu < link_mtu
                else f"{mtu} bytes (this host's link MTU) pass with DF")
    if low is None:
        return f"the target answered no {method} probe; ICMP and the local link allow at most {high} bytes"
    return f"search cut short: {low} bytes pass; sizes up to {high} were not settled"


async def _search_with(prober: SizeProber, sock: socket.socket, address: str, port: int,
                       ceiling: int, ctx: CheckContext) -> SearchResult:
    with sock:
        _prepare(sock, address, port)
        return await search(prober, IPV4_MIN_MTU, ceiling, ctx.remaining)


async def probe(ctx: CheckContext) -> Outcome:
    try:
        address = await ctx.resolver.resolve(ctx.target.host, ctx.remaining())
    except OSError as exc:
        return Outcome.fail(Reason.RESOLVE_FAILED, str(exc), PathMtuEvidence(None))
    try:
        link_mtu = link_mtu_toward(address)
    except OSError as exc:  # no route: the local stack refuses before anything is sent
        return Outcome.fail(Reason.NETWORK_ERROR, f"no way to {address}: {exc.strerror or exc}",
                            PathMtuEvidence(address))
    notes: list[str] = []
    result: SearchResult | None = None
    probes_sent = 0
    method = None
    echo = open_echo_socket()
    if isinstance(echo, str):
        notes.append(echo)
    else:
        sock, raw = echo
        result = await _search_with(EchoProber(sock, ctx.clock, raw), sock, address, 0, link_mtu, ctx)
        probes_sent += result.probes
        method = EchoProber.method
    if result is None or result.largest_passed is None:
        if result is not None and result.probes:
            notes.append("no answer to ICMP echo")
        ceiling = link_mtu if result is None else result.upper_bound  # what routers said still holds
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        result = await _search_with(UdpProber(sock, ctx.clock, address), sock, address, UDP_PROBE_PORT,
                                    ceiling, ctx)
        probes_sent += result.probes
        method = UdpProber.method
    evidence = PathMtuEvidence(address, result.path_mtu, method, result.largest_passed, result.upper_bound,
                               link_mtu, probes_sent)
    detail = "; ".join([*notes, _describe(result, method, link_mtu)])
    if result.path_mtu is not None:
        return Outcome.ok(evidence, detail)
    if not probes_sent:
        return Outcome.fail(Reason.TIMEOUT, detail, evidence)  # silence is no answer only to a probe sent
    return Outcome.fail(Reason.NO_RESPONSE, detail, evidence)


CHECK = Check(
    name="path_mtu",
    summary="Path MTU toward each gateway (DF probes answered by the target); the rule set compares it with Azure's limit",
    scope=Scope.GATEWAY,
    evidence=PathMtuEvidence,
    probe=probe,
)
