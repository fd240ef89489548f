"""Throughput to the far end, the way Microsoft measures a link: iperf3 against a host in the
virtual network (any stock `iperf3 -s`, or `xcheck responder`), upload then download, one stage
per stream count (AzureCT: 1, 6 and 16), with latency sampled under the load.

It loads the path (`Check.loads_path`): the runner starts it once every other check of the run
has finished, so that the idle figures and the gateway probes are measured on a quiet path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.targets import Targets, ThroughputPlan
from checks.protocols import iperf3
from checks.transport import iperf3_client
from checks.transport.rtt import PathRoundTrips, far_end_address, measure

# Beyond a stage's planned seconds: connection set-up, results exchange, a slow server's end.
STAGE_SLACK_SECONDS = 3.0
UNDER_LOAD_INTERVAL_SECONDS = 0.2
BUSY_RETRY_PAUSES_SECONDS = (0.25, 0.5, 1.0)
STAGE_END_GUARD_SECONDS = 2.0

_FAILURE_REASONS = {
    iperf3_client.Failure.CONNECTION_FAILED: Reason.CONNECTION_FAILED,
    iperf3_client.Failure.CONNECTION_REFUSED: Reason.CONNECTION_REFUSED,
    iperf3_client.Failure.ACCESS_DENIED: Reason.PEER_BUSY,
    iperf3_client.Failure.SERVER_ERROR: Reason.PEER_ERROR,
    iperf3_client.Failure.PROTOCOL_ERROR: Reason.INVALID_RESPONSE,
    iperf3_client.Failure.NO_RESPONSE: Reason.NO_RESPONSE,
    iperf3_client.Failure.STALLED: Reason.STALLED,
    iperf3_client.Failure.SERVER_GONE: Reason.CONNECTION_LOST,
}


def _direction(reverse: bool) -> str:
    return "download" if reverse else "upload"


@dataclass(frozen=True)
class Stage:
    """One iperf3 test: a direction and a number of streams."""

    direction: str  # upload or download
    streams: int
    ok: bool
    failure: iperf3_client.Failure | None
    detail: str
    partial: bool  # figures from before a failure
    bits_per_second: float | None
    bytes_received: int | None
    duration_seconds: float | None
    retransmits: int | None
    local_cpu_percent: float | None
    remote_cpu_percent: float | None
    cpu_limited: bool | None
    latency_under_load: PathRoundTrips | None
    disputed: Mapping[str, Any] | None = None  # the server's figures, refused beside ours
    i_errno: int | None = None  # the server's error number


@dataclass(frozen=True)
class ThroughputEvidence:
    address: str
    seconds: float
    omit_seconds: float
    stages: tuple[Stage, ...]


def _stage_evidence(result: iperf3_client.TestResult, under_load: PathRoundTrips | None) -> Stage:
    return Stage(
        direction=_direction(result.spec.reverse),
        streams=result.spec.streams,
        ok=result.ok,
        failure=result.failure,
        detail=result.detail,
        partial=result.partial,
        bits_per_second=result.bits_per_second,
        bytes_received=result.bytes_received,
        duration_seconds=result.duration_seconds,
        retransmits=result.retransmits,
        local_cpu_percent=result.local_cpu_percent,
        remote_cpu_percent=result.remote_cpu_percent,
        cpu_limited=result.cpu_limited,
        latency_under_load=under_load,
        disputed=result.disputed,
        i_errno=result.i_errno,
    )


async def _stage(ctx: CheckContext, ip: str, port: int, plan: ThroughputPlan, streams: int, reverse: bool,
                 done_before: float) -> Stage:
    spec = iperf3_client.TestSpec(host=ip, port=port, duration_seconds=plan.seconds, omit_seconds=plan.omit_seconds,
                                  streams=streams, reverse=reverse, window_bytes=plan.window_bytes)
    total = plan.load_seconds()
    label = f"{_direction(reverse)}, {streams} stream{'s' if streams > 1 else ''}"

    def progress(elapsed: float, bits_per_second: float) -> None:
        ctx.progress(min(1.0, (done_before + elapsed) / total), f"{label}: {bits_per_second / 1e6:.1f} Mbit/s")

    started = ctx.clock()
    # The check's own deadline minus a guard, so that a stage cut short still reports its figures.
    stage_deadline = min(ctx.deadline - STAGE_END_GUARD_SECONDS, started + plan.seconds + plan.omit_seconds
                         + STAGE_SLACK_SECONDS)
    load = asyncio.ensure_future(asyncio.to_thread(iperf3_client.run_test, spec, deadline=stage_deadline,
                                                   progress=progress, clock=ctx.clock))

    async def under_load() -> PathRoundTrips:
        await asyncio.sleep(plan.omit_seconds)  # sample the settled load, not slow start
        return await measure(ip, port, count=10_000, interval=UNDER_LOAD_INTERVAL_SECONDS, clock=ctx.clock,
                             until=started + plan.omit_seconds + plan.seconds)

    sampling = asyncio.ensure_future(under_load())
    try:
        result = await load
    except BaseException:  # cut off by the runner, or a crash: the sampler must not go on probing the far end
        sampling.cancel()
        raise
    if not result.ok:
        sampling.cancel()  # a failed test leaves no load to sample under
    try:
        sampled: PathRoundTrips | None = await sampling
    except asyncio.CancelledError:
        sampled = None
    ctx.logger.debug("%s: %s", label, result)
    return _stage_evidence(result, sampled)


async def _stage_with_retries(ctx: CheckContext, ip: str, port: int, plan: ThroughputPlan, streams: int,
                              reverse: bool, done_before: float) -> Stage:
    """A stock iperf3 3.12 server closes and reopens its listener after every test, and takes each
    idle latency sample for a client: refused or busy for a moment is not refused or busy."""
    stage = await _stage(ctx, ip, port, plan, streams, reverse, done_before)
    for pause in BUSY_RETRY_PAUSES_SECONDS:
        if stage.failure not in (iperf3_client.Failure.CONNECTION_FAILED, iperf3_client.Failure.CONNECTION_REFUSED,
                                 iperf3_client.Failure.ACCESS_DENIED):
            break
        await asyncio.sleep(pause)
        stage = await _stage(ctx, ip, port, plan, streams, reverse, done_before)
    return stage


async def probe(ctx: CheckContext) -> Outcome:
    far_end, plan = ctx.target.endpoint, ctx.targets.throughput
    if plan is None:
        return Outcome.skipped(Reason.DISABLED, "throughput not measured (--no-throughput)")
    ip = await far_end_address(ctx)
    if isinstance(ip, Outcome):
        return ip
    stages: list[Stage] = []
    done = 0.0
    for streams, reverse in ((n, r) for n in plan.streams for r in (False, True)):
        stages.append(await _stage_with_retries(ctx, ip, far_end.port, plan, streams, reverse, done))
        done += plan.seconds + plan.omit_seconds
        if not stages[-1].ok:
            break
    evidence = ThroughputEvidence(ip, plan.seconds, plan.omit_seconds, tuple(stages))
    failed = next((s for s in stages if not s.ok), None)
    if failed is not None:
        what = f"{failed.direction} with {failed.streams} streams: {failed.failure}: {failed.detail}"
        if failed.partial:
            what += " (figures before the failure are marked partial)"
        if failed.i_errno == iperf3.IEDURATION:
            what += (f"; use a shorter --throughput-seconds (each stage adds a {plan.omit_seconds:g} s warm-up), or "
                     "let the far end take longer tests (xcheck responder --max-test-seconds)")
        return Outcome.fail(_FAILURE_REASONS[failed.failure], what, evidence)
    rates = {d: max(s.bits_per_second for s in stages if s.direction == d) for d in ("upload", "download")}
    return Outcome.ok(evidence, f"upload {rates['upload'] / 1e6:.1f} Mbit/s, download {rates['download'] / 1e6:.1f} Mbit/s")


def _budget(targets: Targets) -> float:
    if targets.iperf is None or targets.throughput is None:
        return 0.0
    plan = targets.throughput
    retries = sum(BUSY_RETRY_PAUSES_SECONDS) + len(BUSY_RETRY_PAUSES_SECONDS) * STAGE_SLACK_SECONDS
    return plan.load_seconds() + 2 * len(plan.streams) * STAGE_SLACK_SECONDS + retries + STAGE_END_GUARD_SECONDS


CHECK = Check(
    name="throughput",
    summary="iperf3-compatible throughput to the far end (--iperf), upload and download, latency under load",
    scope=Scope.FAR_END,
    evidence=ThroughputEvidence,
    probe=probe,
    loads_path=True,  # after the others: the load would skew what they measure
    budget_seconds=_budget,
)
