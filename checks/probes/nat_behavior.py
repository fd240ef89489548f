"""NAT mapping and filtering behaviour discovery (RFC 5780 §4.3 and §4.4).

Probes each STUN server that returned OTHER-ADDRESS (or RFC 3489's CHANGED-ADDRESS) in
`stun_binding`; the others are skipped as not supporting it. Filtering runs first, on its own socket: the mapping tests send to the server's alternate
address, which would open the very filter holes the filtering tests look for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.transport.addressing import AddressClass, classify
from checks.protocols.stun import TransportAddress
from checks.transport.stun_client import BindingAnswer, Deadline, StunClient, cached_rto, unusable_address

ENDPOINT_INDEPENDENT = "endpoint-independent"
ADDRESS_DEPENDENT = "address-dependent"
ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"

# A filtering test concludes "filtered" from silence, so its requests are sent this many times,
# one RTO apart (no backoff: three small packets), and silence must last a whole window. RFC 5780
# leaves the wait open; at least MIN_FILTERING_WAIT_SECONDS keeps `xcheck run` near a second.
FILTERING_SENDS = 3
MIN_FILTERING_WAIT_SECONDS = 0.3
# The alternate address answered nothing in this long while the primary answered at once:
# it is unreachable, and waiting for the whole check timeout would tell no more.
MIN_ALTERNATE_WAIT_SECONDS = 1.0
ALTERNATE_WAIT_RTOS = 8

# How far an address reaches. An alternate address that reaches less far than the server's own
# cannot be the server's (we reached it beyond this host, this link, this private network), but
# would steer our requests to this host, its link or its LAN.
_REACH = {AddressClass.LOOPBACK: 0, AddressClass.LINK_LOCAL: 1, AddressClass.RFC1918: 2, AddressClass.CGNAT: 2,
          AddressClass.UNIQUE_LOCAL: 2, AddressClass.PUBLIC: 3}

Address = tuple[str, int]


@dataclass(frozen=True)
class StunTest:
    result: Reason
    detail: str
    attempts: int
    mapped: str | None
    source: str | None  # where the answer came from


@dataclass(frozen=True)
class Discovery:
    """One of §4.3 / §4.4: the behaviour found, or why none was."""

    behavior: str | None
    failure: Reason | None
    reason: str | None
    tests: Mapping[str, StunTest]
    wait_seconds: float | None = None  # how long silence had to last (filtering)


@dataclass(frozen=True)
class NatBehaviorEvidence:
    primary: str
    other: str | None
    filtering: Discovery | None = None
    mapping: Discovery | None = None


def _test_evidence(answer: BindingAnswer) -> StunTest:
    mapped = answer.mapped
    return StunTest(answer.kind, answer.detail, answer.attempts, str(mapped) if mapped else None,
                    f"{answer.source[0]}:{answer.source[1]}" if answer.source else None)


def _undecided(answer: BindingAnswer, what: str, tests: Mapping[str, StunTest], wait: float | None = None) -> Discovery:
    return Discovery(None, answer.kind, f"{what}: {answer.kind} {answer.detail}".strip(), tests, wait)


async def _filtering(ctx: CheckContext, primary: Address, other: Address, rto: float) -> Discovery:
    """§4.4: after a binding to primary, ask for answers from the other addresses (CHANGE-REQUEST)."""
    with StunClient.open(ctx.clock) as client:
        test1 = await client.binding(primary, deadline=Deadline(ctx.deadline), rto=rto)
        if test1.kind is not Reason.SUCCESS:
            return _undecided(test1, "test I", {"test1": _test_evidence(test1)})
        wait = max(MIN_FILTERING_WAIT_SECONDS, FILTERING_SENDS * rto)
        window = Deadline(min(ctx.deadline, ctx.clock() + wait))
        test2, test3 = await asyncio.gather(
            client.binding(primary, deadline=window, rto=rto, backoff=1.0, change_ip=True, change_port=True,
                           expect_from=other),
            client.binding(primary, deadline=window, rto=rto, backoff=1.0, change_port=True,
                           expect_from=(primary[0], other[1])),
        )
    tests = {"test1": _test_evidence(test1), "test2": _test_evidence(test2), "test3": _test_evidence(test3)}
    wait = round(wait, 3)
    for answer, name in ((test2, "test II (change IP and port)"), (test3, "test III (change port)")):
        if answer.kind not in (Reason.SUCCESS, Reason.NO_RESPONSE):
            # E.g. an answer from the primary address: the server ignored CHANGE-REQUEST.
            return _undecided(answer, name, tests, wait)
    if test2.kind is Reason.SUCCESS:
        return Discovery(ENDPOINT_INDEPENDENT, None, None, tests, wait)
    if test3.kind is Reason.SUCCESS:
        return Discovery(ADDRESS_DEPENDENT, None, None, tests, wait)
    return Discovery(ADDRESS_AND_PORT_DEPENDENT, None, None, tests, wait)


async def _mapping(ctx: CheckContext, primary: Address, other: Address, rto: float) -> Discovery:
    """§4.3: one local port toward primary, then (other IP, primary port) and other."""
    with StunClient.open(ctx.clock) as client:
        test1 = await client.binding(primary, deadline=Deadline(ctx.deadline), rto=rto)
        if test1.kind is not Reason.SUCCESS:
            return _undecided(test1, "test I", {"test1": _test_evidence(test1)})
        wait = max(MIN_ALTERNATE_WAIT_SECONDS, ALTERNATE_WAIT_RTOS * rto)
        alternate = Deadline(min(ctx.deadline, ctx.clock() + wait))
        test2, test3 = await asyncio.gather(
            client.binding((other[0], primary[1]), deadline=alternate, rto=rto),
            client.binding(other, deadline=alternate, rto=rto),
        )
    tests = {"test1": _test_evidence(test1), "test2": _test_evidence(test2), "test3": _test_evidence(test3)}
    for answer, name in ((test2, "test II (other IP, primary port)"), (test3, "test III (other IP and port)")):
        if answer.kind is not Reason.SUCCESS:
            return _undecided(answer, name, tests)
    if test2.mapped == test1.mapped:
        return Discovery(ENDPOINT_INDEPENDENT, None, None, tests)
    if test3.mapped == test2.mapped:
        return Discovery(ADDRESS_DEPENDENT, None, None, tests)
    return Discovery(ADDRESS_AND_PORT_DEPENDENT, None, None, tests)


def alternate_address_problem(other: TransportAddress, server: TransportAddress) -> str | None:
    """Why the tests must not send to the alternate address a server named, or None.

    RFC 5780 §6.1: the other address differs from the server's in both IP and port. A server's
    word is not enough to send to an address no host has, or to one that reaches less far than
    the server's own (`_REACH`). A directed broadcast address cannot be told from here; the
    socket never sets SO_BROADCAST, so the kernel refuses to send to one of a local subnet.
    """
    problem = unusable_address(other)
    if problem:
        return problem
    if other.ip.version != server.ip.version:
        return f"not IPv{server.ip.version} like the server"
    if other.ip == server.ip or other.port == server.port:
        return f"not different from the server's {server} in both IP and port (RFC 5780 §6.1)"
    other_class, server_class = classify(other.ip), classify(server.ip)
    # Only a server the user named at an address no host has lacks a reach: nothing is below it.
    if _REACH[other_class] < _REACH.get(server_class, 0):
        return f"{other_class} address, though the server {server.ip} is {server_class}"
    return None


def _address(text: str) -> Address:
    address = TransportAddress.parse(text)
    return str(address.ip), address.port


async def probe(ctx: CheckContext) -> Outcome:
    binding = ctx.dependency("stun_binding")
    if binding is None or not binding.succeeded:
        # Say what stun_binding found, which is not always silence (the name did not resolve, ...).
        found = f"{binding.reason}: {binding.detail}" if binding else "not run"
        return Outcome.skipped(Reason.DEPENDENCY_UNAVAILABLE, f"needs a STUN Binding answer; stun_binding: {found}")
    server = binding.evidence
    if not server.other_address:
        return Outcome.skipped(Reason.NOT_SUPPORTED, "the server returned no OTHER-ADDRESS (RFC 5780)")
    evidence = NatBehaviorEvidence(primary=server.address, other=server.other_address)
    problem = alternate_address_problem(TransportAddress.parse(server.other_address),
                                        TransportAddress.parse(server.address))
    if problem:
        return Outcome.fail(Reason.INVALID_RESPONSE, f"{server.other_address_attribute} {server.other_address} "
                            f"from {server.address} is refused, nothing was sent to it: {problem}", evidence)
    primary, other = _address(server.address), _address(server.other_address)
    rto = cached_rto(server.rtt_seconds)
    filtering = await _filtering(ctx, primary, other, rto)
    mapping = await _mapping(ctx, primary, other, rto)
    evidence = NatBehaviorEvidence(server.address, server.other_address, filtering, mapping)
    undecided = [(name, part) for name, part in (("filtering", filtering), ("mapping", mapping)) if part.failure]
    if undecided:
        detail = "; ".join(f"{name}: {part.reason}" for name, part in undecided)
        return Outcome.fail(undecided[0][1].failure, detail, evidence)
    return Outcome.ok(evidence, f"mapping {mapping.behavior}, filtering {filtering.behavior}")


CHECK = Check(
    name="nat_behavior",
    summary="RFC 5780 NAT mapping and filtering behaviour, with a server that returns OTHER-ADDRESS",
    scope=Scope.STUN_SERVER,
    evidence=NatBehaviorEvidence,
    probe=probe,
    depends_on=("stun_binding",),
    every_target=False,  # one server that supports RFC 5780 is enough
)
