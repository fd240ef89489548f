"""Latency to the far end: TCP connect times and UDP round trips, idle (this check) and under load
(sampled by `throughput` with the same functions while it loads the path).

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
from typing import Any

from checks.transport.addressing import source_address_toward
from checks.contract import Check, CheckContext, Outcome, Reason, Targets
from checks.transport.stun_client import AnswerKind, Deadline, StunClient

SAMPLES = 20
SAMPLE_INTERVAL_SECONDS = 0.05
SAMPLE_TIMEOUT_SECONDS = 1.0  # a round trip slower than this counts as lost
UDP_PORT = 3478


def no_route_to(ip: str, port: int) -> Outcome | None:
    """The far end's checks' result when this host has no route to it: every connect would fail
    here, not out there."""
    if source_address_toward(ip, port) is None:
        return Outcome.fail(Reason.NETWORK_ERROR, f"this host has no route to {ip}")
    return None


async def tcp_connect_time(ip: str, port: int, timeout: float) -> float | None:
    """One connect() round trip; None when it timed out or failed."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        started = loop.time()
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (ip, port))
        return loop.time() - started
    except (OSError, TimeoutError):
        return None
    finally:
        sock.close()


async def udp_round_trip(client: StunClient, ip: str, timeout: float, clock: Callable[[], float]) -> float | None:
    """One STUN Binding sent once (no retransmission: a loss must count as a loss)."""
    started = clock()
    answer = await client.binding((ip, UDP_PORT), deadline=Deadline(started + timeout), rto=timeout)
    return clock() - started if answer.kind is AnswerKind.ANSWERED else None


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


def summarize(samples: Sequence[float | None]) -> dict[str, Any]:
    """p50/p90/p99, jitter (mean change between consecutive round trips, RFC 3550's idea) and loss."""
    answered = [s for s in samples if s is not None]
    summary: dict[str, Any] = {
        "samples": len(samples),
        "loss_ratio": (len(samples) - len(answered)) / len(samples) if samples else None,
        "rtt_p50_seconds": None, "rtt_p90_seconds": None, "rtt_p99_seconds": None, "jitter_seconds": None,
    }
    if len(answered) >= 2:
        cuts = statistics.quantiles(answered, n=100, method="inclusive")
        summary.update(rtt_p50_seconds=cuts[49], rtt_p90_seconds=cuts[89], rtt_p99_seconds=cuts[98],
                       jitter_seconds=statistics.fmean(abs(b - a) for a, b in zip(answered, answered[1:])))
    elif answered:
        summary.update(rtt_p50_seconds=answered[0], rtt_p90_seconds=answered[0], rtt_p99_seconds=answered[0])
    return summary


async def measure(ctx: CheckContext, ip: str, port: int, count: int, interval: float,
                  until: float | None = None) -> dict[str, Any]:
    """TCP and UDP samples side by side; returns {"tcp": summary, "udp": summary}.

    Not one UDP answer means no responder (a stock iperf3 host), not 100% loss: the UDP
    figures are then not measured, and `udp.responder` says why."""
    with StunClient.open(ctx.clock) as client:
        tcp, udp = await asyncio.gather(
            sample(lambda: tcp_connect_time(ip, port, SAMPLE_TIMEOUT_SECONDS), count, interval, until, ctx.clock),
            sample(lambda: udp_round_trip(client, ip, SAMPLE_TIMEOUT_SECONDS, ctx.clock), count, interval, until, ctx.clock),
        )
    responder = any(rtt is not None for rtt in udp)
    return {"tcp": summarize(tcp), "udp": summarize(udp if responder else []) | {"responder": responder}}


async def probe(ctx: CheckContext) -> Outcome:
    far_end = ctx.targets.iperf
    if far_end is None:
        return Outcome.skipped(Reason.NO_TARGET, "no far end given (--iperf HOST)")
    try:
        ip = await ctx.resolver.resolve(far_end.host, ctx.remaining())
    except OSError as exc:
        return Outcome.fail(Reason.RESOLVE_FAILED, str(exc))
    if (no_route := no_route_to(ip, far_end.port)) is not None:
        return no_route
    evidence = {"far_end": str(far_end), "address": ip, "tcp_port": far_end.port, "udp_port": UDP_PORT,
                **await measure(ctx, ip, far_end.port, SAMPLES, SAMPLE_INTERVAL_SECONDS, ctx.deadline - 0.5)}
    tcp = evidence["tcp"]
    if tcp["rtt_p50_seconds"] is None:
        return Outcome.fail(Reason.NO_RESPONSE, f"no TCP connection to {ip}:{far_end.port} in {tcp['samples']} tries", evidence)
    udp_note = ("no UDP answers on port 3478 (a stock iperf3 host has no UDP responder)"
                if evidence["udp"]["rtt_p50_seconds"] is None else f"UDP p50 {evidence['udp']['rtt_p50_seconds'] * 1000:.1f} ms")
    return Outcome.ok(evidence, f"TCP connect p50 {tcp['rtt_p50_seconds'] * 1000:.1f} ms; {udp_note}")


def _budget(targets: Targets) -> float:
    return SAMPLES * SAMPLE_INTERVAL_SECONDS + SAMPLE_TIMEOUT_SECONDS if targets.iperf else 0.0


CHECK = Check(
    name="latency",
    summary="TCP connect and UDP round trips to the far end (--iperf): p50/p90/p99, jitter, loss",
    probe=probe,
    budget_seconds=_budget,
)
