"""STUN Binding to every configured server from one socket: the reflexive address, and NAT or not.

One socket for all servers means one local port, so the mappings the servers report can be
compared: when they differ, the NAT's mapping varies by destination (RFC 4787 §4.1), which is
all that can be said without an RFC 5780 server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from checks.transport.addressing import source_address_toward
from checks.contract import Check, CheckContext, Endpoint, Outcome, Reason
from checks.transport.stun_client import REASONS, AnswerKind, BindingAnswer, Deadline, StunClient


# Once one server has answered, the others get this long: a dead default server must not hold
# `xcheck run` to the full timeout, and a live one is rarely this far behind the first.
SLOWER_SERVER_GRACE_SECONDS = 0.5
_FAILURE_ORDER = (AnswerKind.INVALID_RESPONSE, AnswerKind.ERROR_RESPONSE, AnswerKind.NO_RESPONSE,
                  AnswerKind.NETWORK_ERROR, AnswerKind.RESOLVE_FAILED, AnswerKind.TIMEOUT)


def _server_evidence(target: Endpoint, local_port: int, answer: BindingAnswer) -> dict[str, Any]:
    message, mapped = answer.message, answer.mapped
    server_ip, server_port = answer.server
    source = source_address_toward(server_ip, server_port)
    # RFC 3489 servers name their alternate address CHANGED-ADDRESS; RFC 5780 ones OTHER-ADDRESS.
    other = (message.other_address or message.changed_address) if message else None
    origin = message.response_origin if message else None
    return {
        "server": str(target),
        "address": f"{server_ip}:{server_port}",
        "result": str(answer.kind),
        "detail": answer.detail,
        "attempts": answer.attempts,
        "rtt_seconds": answer.rtt_seconds,
        "local_address": source,
        "local_port": local_port,
        "mapped_address": str(mapped.ip) if mapped else None,
        "mapped_port": mapped.port if mapped else None,
        "nat_detected": (str(mapped.ip), mapped.port) != (source, local_port) if mapped else None,
        "other_address": str(other) if other else None,
        "other_address_attribute": None if other is None else (
            "OTHER-ADDRESS" if message.other_address else "CHANGED-ADDRESS"),
        "response_origin": str(origin) if origin else None,
        # A server behind a NAT of its own reports an origin that is not where its answer came from.
        "response_origin_matches": (str(origin.ip), origin.port) == answer.source if origin and answer.source else None,
        "software": message.software if message else None,
        "fingerprint": message.fingerprint_present if message else None,
    }


async def _bind_to_server(ctx: CheckContext, client: StunClient, target: Endpoint, deadline: Deadline) -> dict[str, Any]:
    try:
        ip = await ctx.resolver.resolve(target.host, ctx.remaining())
    except OSError as exc:
        ctx.logger.debug("%s: %s", target, exc)
        return {"server": str(target), "address": None, "result": str(AnswerKind.RESOLVE_FAILED), "detail": str(exc)}
    answer = await client.binding((ip, target.port), deadline=deadline)
    ctx.logger.debug("%s (%s): %s after %d requests %s", target, ip, answer.kind, answer.attempts, answer.detail)
    if answer.kind is AnswerKind.ANSWERED:
        deadline.bring_forward(ctx.clock() + SLOWER_SERVER_GRACE_SECONDS)
    return _server_evidence(target, client.local_port, answer)


def mapping_varies(servers: list[dict[str, Any]]) -> bool | None:
    """Whether servers at different IP addresses saw different mappings; None with fewer than two."""
    seen = {
        s["address"].rsplit(":", 1)[0]: (s["mapped_address"], s["mapped_port"])
        for s in servers
        if s["result"] == AnswerKind.ANSWERED
    }
    if len(seen) < 2:
        return None
    return len(set(seen.values())) > 1


async def probe(ctx: CheckContext) -> Outcome:
    if not ctx.targets.stun:
        return Outcome.skipped(Reason.NO_TARGET, "no STUN server given")
    deadline = Deadline(ctx.deadline)
    with StunClient.open(ctx.clock) as client:
        async with asyncio.TaskGroup() as group:  # a crash in one cancels the others before the socket closes
            tasks = [group.create_task(_bind_to_server(ctx, client, t, deadline)) for t in ctx.targets.stun]
        servers = [task.result() for task in tasks]
        evidence = {
            "local_port": client.local_port,
            "servers": servers,
            "mapping_varies_by_destination": mapping_varies(servers),
            "unsolicited_datagrams": client.unsolicited,
        }
    results = [AnswerKind(s["result"]) for s in servers]
    answered = results.count(AnswerKind.ANSWERED)
    if answered:
        return Outcome.ok(evidence, f"{answered} of {len(servers)} STUN servers answered")
    # No answer: report the most telling failure (something came back > silence > local trouble > too little time).
    kind = next(k for k in _FAILURE_ORDER if k in results)
    failed = "; ".join(f"{s['server']}: {s['detail']}" for s in servers if s["result"] == kind)
    return Outcome.fail(REASONS[kind], failed, evidence)


CHECK = Check(
    name="stun_binding",
    summary="STUN Binding (RFC 8489) to every server from one socket: reflexive address, NAT or not",
    probe=probe,
)
