"""Latency to the far end: TCP connect times and UDP round trips while the path is idle.

How round trips are taken, and why TCP connect and STUN: checks/transport/rtt.py (`throughput`
samples them under load with the same functions).
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.targets import Targets
from checks.transport.rtt import SAMPLE_TIMEOUT_SECONDS, UDP_PORT, RoundTrips, far_end_address, measure

SAMPLES = 20
SAMPLE_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class LatencyEvidence:
    address: str
    tcp_port: int
    udp_port: int
    tcp: RoundTrips
    udp: RoundTrips


async def probe(ctx: CheckContext) -> Outcome:
    far_end = ctx.target.endpoint
    ip = await far_end_address(ctx)
    if isinstance(ip, Outcome):
        return ip
    measured = await measure(ip, far_end.port, SAMPLES, SAMPLE_INTERVAL_SECONDS, ctx.clock, ctx.deadline - 0.5)
    evidence = LatencyEvidence(ip, far_end.port, UDP_PORT, measured.tcp, measured.udp)
    tcp, udp = measured.tcp, measured.udp
    if tcp.rtt_p50_seconds is None:
        if tcp.refused == tcp.samples:
            return Outcome.fail(Reason.CONNECTION_REFUSED, f"every TCP connect to {ip}:{far_end.port} was refused "
                                                           f"({tcp.samples} tries): nothing listens there", evidence)
        return Outcome.fail(Reason.NO_RESPONSE, f"no TCP connection to {ip}:{far_end.port} in {tcp.samples} tries",
                            evidence)
    udp_note = ("no UDP answers on port 3478 (a stock iperf3 host has no UDP responder)"
                if udp.rtt_p50_seconds is None else f"UDP p50 {udp.rtt_p50_seconds * 1000:.1f} ms")
    return Outcome.ok(evidence, f"TCP connect p50 {tcp.rtt_p50_seconds * 1000:.1f} ms; {udp_note}")


def _budget(targets: Targets) -> float:
    return SAMPLES * SAMPLE_INTERVAL_SECONDS + SAMPLE_TIMEOUT_SECONDS if targets.iperf else 0.0


CHECK = Check(
    name="latency",
    summary="TCP connect and UDP round trips to the far end (--iperf): p50/p90/p99, jitter, loss",
    scope=Scope.FAR_END,
    evidence=LatencyEvidence,
    probe=probe,
    budget_seconds=_budget,
)
