"""Round trips to the far end, idle (the `latency` check) and under load (`throughput` samples
with the same functions while it loads the path).

TCP: the time connect() takes to the iperf3 port is one SYN / SYN-ACK round trip, as psping
measures it for Microsoft's AzureCT. A stock iperf3 server answers an unsolicited connection
during a test with ACCESS_DENIED and goes on, so sampling under load does not disturb the test;
idle, it takes each sample for a client that left and logs "unable to receive parameters".
UDP: STUN Binding round trips to port 3478 of the far end, which `xcheck responder` answers;
a stock iperf3 host has no UDP responder, and then the UDP figures say so instead of guessing.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from checks.contract import CheckContext, Outcome, Reason
from checks.transport.addressing import source_address_toward
from checks.transport.stun_client import Deadline, StunClient

SAMPLE_TIMEOUT_SECONDS = 1.0  # a round trip slower than this counts as lost
UDP_PORT = 3478


@dataclass(frozen=True)
class RoundTrips:
    """p50/p90/p99, jitter (mean change between consecutive round trips, RFC 3550's idea) and loss."""

    samples: int
    loss_ratio: float | None
    rtt_p50_seconds: float | None = None
    rtt_p90_seconds: float | None = None
    rtt_p99_seconds: float | None = None
    jitter_seconds: float | None = None
    refused: int = 0  # TCP connects answered by a reset: the host is there, nothing listens
    responder: bool | None = None  # UDP: whether anything answered at all (a stock iperf3 host has no responder)


@dataclass(frozen=True)
class PathRoundTrips:
    tcp: RoundTrips
    udp: RoundTrips


async def far_end_address(ctx: CheckContext) -> str | Outcome:
    """The far end's IPv4 address, or the result that ends a far-end check here: its name does not
    resolve, or this host has no route to it (every connect would fail here, not out there)."""
    far_end = ctx.target.endpoint
    try:
        ip = await ctx.resolver.resolve(far_end.host, ctx.remaining())
    except OSError as exc:
        return Outcome.fail(Reason.RESOLVE_FAILED, str(exc))
    if source_address_toward(ip, far_end.port) is None:
        return Outcome.fail(Reason.NETWORK_ERROR, f"this host has no route to {ip}")
    return ip


async def tcp_connect_time(ip: str, port: int, timeout: float) -> float | None:
    """One connect() round trip; None when it timed out or failed; ConnectionRefusedError on a reset."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        started = loop.time()
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (ip, port))
        return loop.time() - started
    except ConnectionRefusedError:
        raise
    except (OSError, TimeoutError):
        return None
    finally:
        sock.close()


async def udp_round_trip(client: StunClient, ip: str, timeout: float, clock: Callable[[], float]) -> float | None:
    """One STUN Binding sent once (no retransmission: a loss must count as a loss)."""
    answer = await client.binding((ip, UDP_PORT), deadline=Deadline(clock() + timeout), rto=timeout)
    # Sent once (rto = timeout), so an answer's round trip is always measured, to its kernel arrival time.
    return answer.rtt_seconds if answer.kind is Reason.SUCCESS else None


async def sample(measure: Callable[[], Awaitable[float | None]], count: int, interval: float,
                 until: float | None = None, clock: Callable[[], float] | None = None) -> list[float | None]:
    """`count` samples started `interval` apart (or as many as start before `until`), like ping:
    a slow or lost one does not delay the next, so the whole takes count x interval + one timeout."""
    now = clock or asyncio.get_running_loop().time
    started: list[asyncio.Task[float | None]] = []
    while len(started) < count and (until is None or now() < until):
        started.append(asyncio.create_task(measure()))
        await asyncio.sleep(interval)
    return list(await asyncio.gather(*started))


def summarize(samples: Sequence[float | None], refused: int = 0, responder: bool | None = None) -> RoundTrips:
    answered = [s for s in samples if s is not None]
    loss = (len(samples) - len(answered)) / len(samples) if samples else None
    if len(answered) >= 2:
        cuts = statistics.quantiles(answered, n=100, method="inclusive")
        return RoundTrips(len(samples), loss, cuts[49], cuts[89], cuts[98],
                          statistics.fmean(abs(b - a) for a, b in zip(answered, answered[1:])), refused, responder)
    if answered:
        return RoundTrips(len(samples), loss, answered[0], answered[0], answered[0], None, refused, responder)
    return RoundTrips(len(samples), loss, refused=refused, responder=responder)


async def measure(ip: str, port: int, count: int, interval: float, clock: Callable[[], float],
                  until: float | None = None) -> PathRoundTrips:
    """TCP and UDP samples side by side.

    Not one UDP answer means no responder (a stock iperf3 host), not 100% loss: the UDP
    figures are then not measured, and `udp.responder` says why."""
    refused = 0

    async def tcp_once() -> float | None:
        nonlocal refused
        try:
            return await tcp_connect_time(ip, port, SAMPLE_TIMEOUT_SECONDS)
        except ConnectionRefusedError:
            refused += 1
            return None

    with StunClient.open(clock) as client:
        tcp, udp = await asyncio.gather(
            sample(tcp_once, count, interval, until, clock),
            sample(lambda: udp_round_trip(client, ip, SAMPLE_TIMEOUT_SECONDS, clock), count, interval, until, clock),
        )
    responder = any(rtt is not None for rtt in udp)
    return PathRoundTrips(summarize(tcp, refused), summarize(udp if responder else [], responder=responder))
