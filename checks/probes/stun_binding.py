"""STUN Binding to each configured server, all from one socket: the reflexive address, and NAT or not.

One socket for all servers (the check's session) means one local port, so the mappings the
servers report can be compared: when they differ, the NAT's mapping varies by destination
(RFC 4787 §4.1), which is all that can be said without an RFC 5780 server (agent/facts.py
compares them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.targets import Targets
from checks.transport.addressing import source_address_toward
from checks.transport.stun_client import BindingAnswer, Deadline, StunClient

# Once one server has answered, the others get this long: a dead default server must not hold
# `xcheck run` to the full timeout, and a live one is rarely this far behind the first.
SLOWER_SERVER_GRACE_SECONDS = 0.5


@dataclass(frozen=True)
class BindingEvidence:
    address: str | None  # IP:PORT the request went to
    result: Reason
    attempts: int = 0
    rtt_seconds: float | None = None
    local_address: str | None = None
    local_port: int | None = None
    mapped_address: str | None = None  # the reflexive address: ours as the server saw it
    mapped_port: int | None = None
    nat_detected: bool | None = None
    other_address: str | None = None  # RFC 5780's alternate address, for nat_behavior
    other_address_attribute: str | None = None
    response_origin: str | None = None
    response_origin_matches: bool | None = None
    software: str | None = None
    fingerprint: bool | None = None
    unsolicited_datagrams: int = 0  # on the shared socket so far: answers nobody asked for
    icmp_from: str | None = None  # who refused with ICMP: the server's host itself, or a filter on the way


@dataclass
class _Session:
    client: StunClient
    deadline: Deadline  # shared: brought forward once one server answered


@contextlib.asynccontextmanager
async def _session(targets: Targets, clock: Callable[[], float]) -> AsyncIterator[_Session]:
    with StunClient.open(clock) as client:
        yield _Session(client, Deadline(float("inf")))


def _evidence(local_port: int, answer: BindingAnswer, unsolicited: int) -> BindingEvidence:
    message, mapped = answer.message, answer.mapped
    server_ip, server_port = answer.server
    source = source_address_toward(server_ip, server_port)
    # RFC 3489 servers name their alternate address CHANGED-ADDRESS; RFC 5780 ones OTHER-ADDRESS.
    other = (message.other_address or message.changed_address) if message else None
    origin = message.response_origin if message else None
    return BindingEvidence(
        address=f"{server_ip}:{server_port}",
        result=answer.kind,
        attempts=answer.attempts,
        rtt_seconds=answer.rtt_seconds,
        local_address=source,
        local_port=local_port,
        mapped_address=str(mapped.ip) if mapped else None,
        mapped_port=mapped.port if mapped else None,
        nat_detected=(str(mapped.ip), mapped.port) != (source, local_port) if mapped else None,
        other_address=str(other) if other else None,
        other_address_attribute=None if other is None else (
            "OTHER-ADDRESS" if message.other_address else "CHANGED-ADDRESS"),
        response_origin=str(origin) if origin else None,
        # A server behind a NAT of its own reports an origin that is not where its answer came from.
        response_origin_matches=(str(origin.ip), origin.port) == answer.source if origin and answer.source else None,
        software=message.software if message else None,
        fingerprint=message.fingerprint_present if message else None,
        unsolicited_datagrams=unsolicited,
        icmp_from=answer.icmp.offender if answer.icmp else None,
    )


async def probe(ctx: CheckContext) -> Outcome:
    session: _Session = ctx.session
    session.deadline.bring_forward(ctx.deadline)
    target = ctx.target.endpoint
    try:
        ip = await ctx.resolver.resolve(target.host, ctx.remaining())
    except OSError as exc:
        ctx.logger.debug("%s: %s", target, exc)
        return Outcome.fail(Reason.RESOLVE_FAILED, str(exc),
                            BindingEvidence(None, Reason.RESOLVE_FAILED))
    answer = await session.client.binding((ip, target.port), deadline=session.deadline)
    ctx.logger.debug("%s (%s): %s after %d requests %s", target, ip, answer.kind, answer.attempts, answer.detail)
    if answer.kind is Reason.SUCCESS:
        session.deadline.bring_forward(ctx.clock() + SLOWER_SERVER_GRACE_SECONDS)
    evidence = _evidence(session.client.local_port, answer, session.client.unsolicited)
    if answer.kind is Reason.SUCCESS:
        return Outcome.ok(evidence, f"{evidence.mapped_address}:{evidence.mapped_port} as seen by {ip}:{target.port}")
    return Outcome.fail(answer.kind, answer.detail, evidence)


CHECK = Check(
    name="stun_binding",
    summary="STUN Binding (RFC 8489) to every server from one socket: reflexive address, NAT or not",
    scope=Scope.STUN_SERVER,
    evidence=BindingEvidence,
    probe=probe,
    every_target=False,  # servers stand in for each other: one answer is enough
    session=_session,
)
