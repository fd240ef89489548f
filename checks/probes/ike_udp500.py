"""IKEv2 on UDP 500 to each gateway: does an IKE responder answer, and is a NAT on the path?

An IKE_SA_INIT request (checks/ike.py) goes from an ordinary UDP socket (no privilege, an
ephemeral port: the path's filters and NATs treat it as they would a VPN device's). Any
well-formed IKEv2 answer for our SPI proves reachability, refusals included. Where the
answer asks for it, the exchange goes one step further as a real initiator would: a new
request with the DH group an INVALID_KE_PAYLOAD names, or the same one with the COOKIE
the responder handed out. That earns a full IKE_SA_INIT response where the gateway
accepts one of our suites, and with it the responder's NAT_DETECTION hashes: a second NAT
signal, independent of STUN (whether the gateway saw our packets come from the address and
port we sent them from). No AUTH follows, so the gateway drops its half-open SA by itself.

No answer is told apart by checks/udp_probe.py: ICMP port unreachable, administratively
prohibited (a filter that says no), or silence (one that drops) after retransmissions.

`probe_gateways` serves ike_natt_udp4500 and ikev1_udp500 too.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from checks.contract import Check, CheckContext, Outcome, Reason, Targets
from checks.transport.udp_probe import REASONS, InvalidAnswer, UdpExchange, UdpProbe, UdpResult

if TYPE_CHECKING:  # checks.protocols.ike imports scapy: loaded only when a probe runs (`xcheck --help` stays light)
    from checks.protocols.ike import IkeAnswer, IkeSaInit, MainModeRequest

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


IKEV2_UDP500 = IkeVariant(500, 2, False, "IKEv2 IKE_SA_INIT on UDP 500")


async def probe(ctx: CheckContext) -> Outcome:
    return await probe_gateways(ctx, IKEV2_UDP500)


def prepare(targets: Targets) -> None:
    """Import scapy (through checks.protocols.ike) before the deadlines start, when there is a gateway to probe."""
    if targets.gateways:
        importlib.import_module("checks.protocols.ike")


async def probe_gateways(ctx: CheckContext, variant: IkeVariant) -> Outcome:
    """Probe every gateway at once: ok when all answered, else fail with the first failure's reason."""
    if not ctx.targets.gateways:
        return Outcome.skipped(Reason.NO_TARGET, "no gateway given (--gateway)")
    # Imported already when the runner prepared the check; else in a thread, so concurrent checks run on.
    ike = await asyncio.to_thread(importlib.import_module, "checks.protocols.ike")
    deadline = ctx.deadline - DEADLINE_MARGIN_SECONDS
    gateways = list(await asyncio.gather(*(_probe_gateway(ctx, ike, host, variant, deadline)
                                           for host in ctx.targets.gateways)))
    evidence = {"gateways": gateways}
    failed = [g for g in gateways if g["result"] != UdpResult.ANSWERED]
    if not failed:
        return Outcome.ok(evidence, f"{variant.what}: {len(gateways)} of {len(gateways)} gateways answered")
    detail = "; ".join(f"{g['gateway']}: {g['detail']}" for g in failed)
    return Outcome.fail(REASONS[UdpResult(failed[0]["result"])], detail, evidence)


async def _probe_gateway(ctx: CheckContext, ike: ModuleType, host: str, variant: IkeVariant,
                         deadline: float) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "gateway": host, "address": None, "port": variant.port, "reachable": None, "result": None, "detail": "",
        "attempts": 0, "rtt_seconds": None, "local_address": None, "local_port": None,
        "answer": None, "notify": None, "responder_spi": None, "chosen_proposal": None,
        "nat_detected": None, "responder_nat_detected": None, "icmp": None, "exchanges": [],
    }
    try:
        ip = await ctx.resolver.resolve(host, max(0.0, deadline - ctx.clock()))
    except OSError as exc:
        return evidence | {"result": str(UdpResult.RESOLVE_FAILED), "detail": str(exc)}
    evidence["address"] = ip
    try:
        udp = UdpProbe.open((ip, variant.port), ctx.clock)
    except OSError as exc:
        return evidence | {"result": str(UdpResult.NETWORK_ERROR), "detail": f"no way to {ip}: {exc.strerror or exc}"}
    with udp:
        local = udp.local_address
        evidence["local_address"], evidence["local_port"] = local
        if variant.version == 1:
            request = ike.MainModeRequest.build()
            exchanges = [(request, await udp.exchange(request.datagram, _judge(ike, request), deadline=deadline))]
        else:
            exchanges = await _ikev2_exchanges(ctx, ike, udp, local, variant, deadline)
    ctx.logger.debug("%s (%s:%d): %s", host, ip, variant.port,
                     [(str(e.result), e.answer.notify if e.answer else None) for _, e in exchanges])
    return evidence | _describe(ike, exchanges, local, (ip, variant.port))


async def _ikev2_exchanges(ctx: CheckContext, ike: ModuleType, udp: UdpProbe, local: tuple[str, int],
                           variant: IkeVariant, deadline: float) -> list[tuple[IkeSaInit, UdpExchange[IkeAnswer]]]:
    request = ike.IkeSaInit.build(local, udp.target, natt=variant.natt)
    exchanges = []
    while True:
        exchange = await udp.exchange(request.datagram, _judge(ike, request), deadline=deadline)
        exchanges.append((request, exchange))
        answer = exchange.answer
        if answer is None or len(exchanges) > MAX_FOLLOW_UPS or ctx.clock() >= deadline:
            return exchanges
        tried_groups = {r.dh_group for r, _ in exchanges}
        if answer.notify_type == ike.INVALID_KE_PAYLOAD and answer.requested_group in ike.OFFERED_GROUPS \
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
              local: tuple[str, int], remote: tuple[str, int]) -> dict[str, Any]:
    """The evidence fields that come from the exchanges: the last answer speaks for the gateway."""
    answered = [(request, e) for request, e in exchanges if e.answer is not None]
    steps = [_step(request, e) for request, e in exchanges]
    common = {"attempts": sum(e.attempts for _, e in exchanges), "rtt_seconds": exchanges[0][1].rtt_seconds,
              "exchanges": steps}
    if not answered:
        first = exchanges[0][1]
        reachable = False if first.result in _REFUSED else None
        return common | {"result": str(first.result), "reachable": reachable, "detail": first.detail,
                         "icmp": first.icmp.to_dict() if first.icmp else None}
    request, last = answered[-1]
    answer = last.answer
    assert answer is not None
    verdict = ike.nat_verdict(answer, request.spi, local, remote) if answer.version == 2 else None
    detail = ", then ".join(step["summary"] for step in steps)
    if verdict is not None and verdict.nat_before_us is not None:
        detail += ("; NAT_DETECTION: a NAT is between us and the gateway" if verdict.nat_before_us
                   else "; NAT_DETECTION: no NAT between us and the gateway")
    return common | {
        "result": str(UdpResult.ANSWERED), "reachable": True, "detail": detail,
        "answer": str(answer.kind), "notify": answer.notify,
        "responder_spi": answer.responder_spi.hex() if any(answer.responder_spi) else None,
        "chosen_proposal": answer.chosen_proposal,
        "nat_detected": verdict.nat_before_us if verdict else None,
        "responder_nat_detected": verdict.nat_before_responder if verdict else None,
    }


# Results that say the gateway cannot be reached on this port; the others say nothing about it.
_REFUSED = {UdpResult.NO_RESPONSE, UdpResult.PORT_UNREACHABLE, UdpResult.PROHIBITED}


def _step(request: IkeSaInit | MainModeRequest, exchange: UdpExchange[IkeAnswer]) -> dict[str, Any]:
    answer = exchange.answer
    if answer is None:
        summary = exchange.detail
    elif answer.notify is not None:
        summary = answer.notify + (f" (wants DH group {answer.requested_group})" if answer.requested_group else "")
    else:
        summary = f"{answer.kind} choosing {answer.chosen_proposal}"
    return {"dh_group": request.dh_group, "cookie": request.cookie is not None,
            "attempts": exchange.attempts, "result": str(exchange.result),
            "answer": str(answer.kind) if answer else None, "notify": answer.notify if answer else None,
            "summary": summary}


CHECK = Check(
    name="ike_udp500",
    summary="IKEv2 IKE_SA_INIT on UDP 500 to each gateway: answered or why not, and NAT_DETECTION",
    probe=probe,
    prepare=prepare,
)
