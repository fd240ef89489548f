"""NAT mapping and filtering behaviour discovery (RFC 5780 §4.3 and §4.4).

Needs a server that returned OTHER-ADDRESS in `stun_binding`. Mapping and filtering run at
once on two separate sockets: the mapping tests send to the server's alternate address, which
would open the very filter holes the filtering tests look for if they shared a mapping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from checks.contract import Check, CheckContext, Outcome, Reason
from checks.stun_client import AnswerKind, BindingAnswer, Deadline, StunClient, cached_rto

ENDPOINT_INDEPENDENT = "endpoint-independent"
ADDRESS_DEPENDENT = "address-dependent"
ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"

# How long silence must last before a filtering test counts as "filtered". RFC 5780 leaves it
# open; a few RTOs after a measured RTT, but at least this, keeps a lost packet from passing
# for a filter while keeping `xcheck run` near a second.
MIN_FILTERING_WAIT_SECONDS = 0.3
FILTERING_WAIT_RTOS = 3


def _answer(answer: BindingAnswer) -> dict[str, Any]:
    mapped = answer.mapped
    return {
        "result": str(answer.kind),
        "detail": answer.detail,
        "attempts": answer.attempts,
        "mapped": str(mapped) if mapped else None,
        "source": f"{answer.source[0]}:{answer.source[1]}" if answer.source else None,
    }


def _undecided(failure: AnswerKind, reason: str, tests: dict[str, Any]) -> dict[str, Any]:
    return {"behavior": None, "failure": str(failure), "reason": reason.strip(), "tests": tests}


_FAILURE_REASONS = {
    AnswerKind.NO_RESPONSE: Reason.NO_RESPONSE,
    AnswerKind.NETWORK_ERROR: Reason.NETWORK_ERROR,
    AnswerKind.INVALID_RESPONSE: Reason.INVALID_RESPONSE,
    AnswerKind.ERROR_RESPONSE: Reason.INVALID_RESPONSE,
}


def _rfc5780_server(binding: dict[str, Any]) -> dict[str, Any] | None:
    for server in binding["servers"]:
        if server["result"] == AnswerKind.ANSWERED and server["other_address"]:
            return server
    return None


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def _mapping(ctx: CheckContext, primary: tuple[str, int], other: tuple[str, int], rto: float) -> dict[str, Any]:
    """§4.3: the same local port toward primary, (other IP, primary port) and other."""
    alt_ip_primary_port = (other[0], primary[1])
    with StunClient.open(ctx.clock) as client:
        test1, test2, test3 = await asyncio.gather(
            *(client.binding(dest, deadline=Deadline(ctx.deadline), rto=rto) for dest in (primary, alt_ip_primary_port, other))
        )
    tests = {"test1": _answer(test1), "test2": _answer(test2), "test3": _answer(test3)}
    failed = next((a for a in (test1, test2, test3) if a.kind is not AnswerKind.ANSWERED), None)
    if failed is not None:
        return _undecided(failed.kind, f"test to {failed.server[0]}:{failed.server[1]}: {failed.kind} {failed.detail}", tests)
    if test2.mapped == test1.mapped:
        behavior = ENDPOINT_INDEPENDENT
    elif test3.mapped == test2.mapped:
        behavior = ADDRESS_DEPENDENT
    else:
        behavior = ADDRESS_AND_PORT_DEPENDENT
    return {"behavior": behavior, "failure": None, "reason": None, "tests": tests}


async def _filtering(ctx: CheckContext, primary: tuple[str, int], other: tuple[str, int], rto: float) -> dict[str, Any]:
    """§4.4: after a binding to primary, ask for answers from other addresses (CHANGE-REQUEST)."""
    with StunClient.open(ctx.clock) as client:
        test1 = await client.binding(primary, deadline=Deadline(ctx.deadline), rto=rto)
        if test1.kind is not AnswerKind.ANSWERED:
            return _undecided(test1.kind, f"test 1: {test1.kind} {test1.detail}", {"test1": _answer(test1)})
        wait = max(MIN_FILTERING_WAIT_SECONDS, FILTERING_WAIT_RTOS * rto)
        window = Deadline(min(ctx.deadline, ctx.clock() + wait))
        test2, test3 = await asyncio.gather(
            client.binding(primary, deadline=window, rto=rto, change_ip=True, change_port=True, expect_from=other),
            client.binding(primary, deadline=window, rto=rto, change_port=True, expect_from=(primary[0], other[1])),
        )
    tests = {"test1": _answer(test1), "test2": _answer(test2), "test3": _answer(test3), "wait_seconds": round(wait, 3)}
    # An answer from the wrong address means the server ignored CHANGE-REQUEST: no conclusion.
    wrong = next((a for a in (test2, test3) if a.kind not in (AnswerKind.ANSWERED, AnswerKind.NO_RESPONSE)), None)
    if wrong is not None:
        return _undecided(wrong.kind, f"server did not honour CHANGE-REQUEST: {wrong.detail}", tests)
    if test2.kind is AnswerKind.ANSWERED:
        behavior = ENDPOINT_INDEPENDENT
    elif test3.kind is AnswerKind.ANSWERED:
        behavior = ADDRESS_DEPENDENT
    else:
        behavior = ADDRESS_AND_PORT_DEPENDENT
    return {"behavior": behavior, "failure": None, "reason": None, "tests": tests}


async def probe(ctx: CheckContext) -> Outcome:
    binding = ctx.dependencies["stun_binding"]
    if not binding.succeeded:
        return Outcome.skipped(Reason.DEPENDENCY_UNAVAILABLE, "no STUN server answered a Binding request")
    server = _rfc5780_server(binding.evidence)
    if server is None:
        return Outcome.skipped(Reason.NOT_SUPPORTED, "no STUN server returned OTHER-ADDRESS (RFC 5780)")
    primary, other = _split(server["address"]), _split(server["other_address"])
    if other[0] == primary[0] or other[1] == primary[1]:
        return Outcome.fail(
            Reason.INVALID_RESPONSE,
            f"OTHER-ADDRESS {server['other_address']} must differ from {server['address']} in both IP and port",
        )
    rto = cached_rto(server["rtt_seconds"])
    mapping, filtering = await asyncio.gather(_mapping(ctx, primary, other, rto), _filtering(ctx, primary, other, rto))
    evidence = {"server": server["server"], "primary": server["address"], "other": server["other_address"],
                "mapping": mapping, "filtering": filtering}
    undecided = [(name, part) for name, part in (("mapping", mapping), ("filtering", filtering)) if part["failure"]]
    if undecided:
        detail = "; ".join(f"{name}: {part['reason']}" for name, part in undecided)
        return Outcome.fail(_FAILURE_REASONS[AnswerKind(undecided[0][1]["failure"])], detail, evidence)
    return Outcome.ok(evidence, f"mapping {mapping['behavior']}, filtering {filtering['behavior']}")


CHECK = Check(
    name="nat_behavior",
    summary="RFC 5780 NAT mapping and filtering behaviour, with a server that returns OTHER-ADDRESS",
    probe=probe,
    depends_on=("stun_binding",),
)
