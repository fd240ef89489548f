"""IKE to one gateway: does an IKE responder answer, and is a NAT on the path?

One probe, three rows of the registry (checks/registry.py), each an `IkeVariant`:
IKEv2 IKE_SA_INIT on UDP 500; the same on UDP 4500 behind the non-ESP marker (NAT-T: behind a
NAT, IKE and ESP move to 4500, RFC 3948, so a path that passes 500 but not 4500 sets up nothing;
an initiator may start on 4500 directly, RFC 7296 §2.23); and IKEv1 Main Mode on UDP 500
(policy-based gateways speak nothing else; IKEv1 exchanges NAT detection only in its third and
fourth messages, so `nat_detected` stays None there).

The request (checks/protocols/ike.py) goes from an ordinary UDP socket (no privilege, an
ephemeral port: the path's filters and NATs treat it as they would a VPN device's). Any
well-formed answer for our SPI proves reachability, refusals included. Where an IKEv2 answer
asks for it, the exchange goes one step further as a real initiator would: a new request with
the DH group an INVALID_KE_PAYLOAD names, or the same one with the COOKIE the responder handed
out. That earns a full IKE_SA_INIT response where the gateway accepts one of our suites, and
with it the responder's NAT_DETECTION hashes: a second NAT signal, independent of STUN (whether
the gateway saw our packets come from the address and port we sent them from). No AUTH follows,
so the gateway drops its half-open SA by itself.

No answer is told apart by checks/transport/udp_probe.py: ICMP port unreachable,
administratively prohibited (a filter that says no), or silence after retransmissions, which
is `reachable: None`: a filter that drops, or a gateway that ignores unknown peers (cloud VPN
gateways do until the site's address is configured on their side). agent/facts.py proves a
filter where it can, by contrast with the gateway's other IKE port.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.targets import Targets
from checks.transport.icmp_errors import IcmpReport
from checks.transport.udp_probe import InvalidAnswer, UdpExchange, UdpProbe

if TYPE_CHECKING:  # checks.protocols.ike imports scapy: loaded only when a probe runs (`xcheck --help` stays light)
    from checks.protocols.ike import IkeAnswer, IkeSaInit, MainModeRequest
    from checks.protocols.ike_suites import IkeOffer

DEADLINE_MARGIN_SECONDS = 0.05  # return before the runner's deadline, not at it
# An INVALID_KE_PAYLOAD and a COOKIE are each followed once, as an initiator would; a
# responder that keeps asking gets no more of our packets.
MAX_FOLLOW_UPS = 2


@dataclass(frozen=True)
class IkeVariant:
    port: int
    version: int  # 1 or 2
    natt: bool  # behind the non-ESP marker (RFC 3948)
    what: str  # for details: what was sent where


@dataclass(frozen=True)
class IkeStep:
    """One request and how it ended."""

    dh_group: int | None
    cookie: bool
    attempts: int
    result: Reason
    answer: str | None  # the kind of IKE answer
    notify: str | None
    summary: str


@dataclass(frozen=True)
class IkeEvidence:
    address: str | None
    port: int
    reachable: bool | None  # True: an IKE answer; False: an ICMP refusal; None: silence or not known
    result: Reason
    attempts: int = 0
    rtt_seconds: float | None = None
    local_address: str | None = None
    local_port: int | None = None
    answer: str | None = None
    notify: str | None = None
    responder_spi: str | None = None
    chosen_proposal: str | None = None
    nat_detected: bool | None = None  # NAT_DETECTION: a NAT between us and the gateway
    responder_nat_detected: bool | None = None
    icmp: IcmpReport | None = None
    exchanges: tuple[IkeStep, ...] = ()


def prepare(targets: Targets) -> None:
    """Import scapy (through checks.protocols.ike) before the deadlines start, when there is a gateway to probe."""
    if targets.gateways:
        importlib.import_module("checks.protocols.ike")


def probe_with(variant: IkeVariant):
    async def probe(ctx: CheckContext) -> Outcome:
        return await _probe(ctx, variant)
    return probe


async def _probe(ctx: CheckContext, variant: IkeVariant) -> Outcome:
    offer = ctx.targets.ike_offer
    if offer is None:
        return Outcome.skipped(Reason.NO_TARGET, "no IKE suites to propose (a rule set's [ike] table)")
    # Imported already when the runner prepared the check; else in a thread, so concurrent checks run on.
    ike = await asyncio.to_thread(importlib.import_module, "checks.protocols.ike")
    deadline = ctx.deadline - DEADLINE_MARGIN_SECONDS
    try:
        ip = await ctx.resolver.resolve(ctx.target.host, max(0.0, deadline - ctx.clock()))
    except OSError as exc:
        return Outcome.fail(Reason.RESOLVE_FAILED, str(exc),
                            IkeEvidence(None, variant.port, None, Reason.RESOLVE_FAILED))
    try:
        udp = UdpProbe.open((ip, variant.port), ctx.clock)
    except OSError as exc:
        return Outcome.fail(Reason.NETWORK_ERROR, f"no way to {ip}: {exc.strerror or exc}",
                            IkeEvidence(ip, variant.port, None, Reason.NETWORK_ERROR))
    with udp:
        local = udp.local_address
        if variant.version == 1:
            request = ike.MainModeRequest.build(offer=offer)
            exchanges = [(request, await udp.exchange(request.datagram, _judge(ike, request), deadline=deadline))]
        else:
            exchanges = await _ikev2_exchanges(ctx, ike, udp, local, variant, offer, deadline)
    ctx.logger.debug("%s (%s:%d): %s", ctx.target.name, ip, variant.port,
                     [(str(e.result), e.answer.notify if e.answer else None) for _, e in exchanges])
    evidence, detail = _describe(ike, exchanges, local, (ip, variant.port))
    if evidence.result is Reason.SUCCESS:
        return Outcome.ok(evidence, f"{variant.what}: {detail}")
    return Outcome.fail(evidence.result, detail, evidence)


async def _ikev2_exchanges(ctx: CheckContext, ike: ModuleType, udp: UdpProbe, local: tuple[str, int],
                           variant: IkeVariant, offer: IkeOffer, deadline: float) -> list[tuple[IkeSaInit, UdpExchange[IkeAnswer]]]:
    request = ike.IkeSaInit.build(local, udp.target, natt=variant.natt, offer=offer)
    exchanges = []
    while True:
        exchange = await udp.exchange(request.datagram, _judge(ike, request), deadline=deadline)
        exchanges.append((request, exchange))
        answer = exchange.answer
        if answer is None or len(exchanges) > MAX_FOLLOW_UPS or ctx.clock() >= deadline:
            return exchanges
        tried_groups = {r.dh_group for r, _ in exchanges}
        if answer.notify_type == ike.INVALID_KE_PAYLOAD and answer.requested_group in offer.ikev2_groups \
                and answer.requested_group not in tried_groups:
            request = request.with_group(answer.requested_group)
        elif answer.notify_type == ike.COOKIE and answer.cookie is not None and request.cookie is None:
            request = request.with_cookie(answer.cookie)
        else:
            return exchanges


def _judge(ike: ModuleType, request: IkeSaInit | MainModeRequest):
    def judge(datagram: bytes) -> IkeAnswer:
        try:
            return request.parse_answer(datagram)
        except ike.IkeParseError as exc:
            raise InvalidAnswer(f"not an IKE answer to our request: {exc}") from None
    return judge


def _describe(ike: ModuleType, exchanges: list[tuple[IkeSaInit | MainModeRequest, UdpExchange[IkeAnswer]]],
              local: tuple[str, int], remote: tuple[str, int]) -> tuple[IkeEvidence, str]:
    """The evidence and detail the exchanges give: the last answer speaks for the gateway."""
    answered = [(request, e) for request, e in exchanges if e.answer is not None]
    steps = tuple(_step(request, e) for request, e in exchanges)
    common = {"address": remote[0], "port": remote[1], "local_address": local[0], "local_port": local[1],
              "attempts": sum(e.attempts for _, e in exchanges), "rtt_seconds": exchanges[0][1].rtt_seconds,
              "exchanges": steps}
    if not answered:
        first = exchanges[0][1]
        reachable = False if first.result in _REFUSED else None  # silence proves nothing: agent/facts.py weighs it
        return IkeEvidence(**common, result=first.result, reachable=reachable,
                           icmp=first.icmp), first.detail
    request, last = answered[-1]
    answer = last.answer
    assert answer is not None
    verdict = ike.nat_verdict(answer, request.spi, local, remote) if answer.version == 2 else None
    detail = ", then ".join(step.summary for step in steps)
    if verdict is not None and verdict.nat_before_us is not None:
        detail += ("; NAT_DETECTION: a NAT is between us and the gateway" if verdict.nat_before_us
                   else "; NAT_DETECTION: no NAT between us and the gateway")
    return IkeEvidence(
        **common, result=Reason.SUCCESS, reachable=True,
        answer=str(answer.kind), notify=answer.notify,
        responder_spi=answer.responder_spi.hex() if any(answer.responder_spi) else None,
        chosen_proposal=answer.chosen_proposal,
        nat_detected=verdict.nat_before_us if verdict else None,
        responder_nat_detected=verdict.nat_before_responder if verdict else None,
    ), detail


# Results that prove the gateway cannot be reached on this port. Silence is not one of them: a
# gateway may ignore IKE from a peer it has no connection for, as a filter on the way would drop it.
_REFUSED = {Reason.PORT_UNREACHABLE, Reason.PROHIBITED}


def _step(request: IkeSaInit | MainModeRequest, exchange: UdpExchange[IkeAnswer]) -> IkeStep:
    answer = exchange.answer
    if answer is None:
        summary = exchange.detail
    elif answer.notify is not None:
        summary = answer.notify + (f" (wants DH group {answer.requested_group})" if answer.requested_group else "")
    else:
        summary = f"{answer.kind} choosing {answer.chosen_proposal}"
    return IkeStep(dh_group=request.dh_group, cookie=request.cookie is not None, attempts=exchange.attempts,
                   result=exchange.result, answer=str(answer.kind) if answer else None,
                   notify=answer.notify if answer else None, summary=summary)


def check(name: str, variant: IkeVariant, summary: str) -> Check:
    """One row of the registry over this probe."""
    return Check(name=name, summary=summary, scope=Scope.GATEWAY, probe=probe_with(variant), evidence=IkeEvidence,
                 prepare=prepare)
