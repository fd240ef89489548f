"""ESP (IP protocol 50) toward each gateway: echoed, refused, or unknown.

IPsec's ESP carries the tunnel's traffic once IKE has set up a security association (SA).
A VPN gateway drops ESP that belongs to no SA without a word, so silence from a gateway
proves nothing: it is `reachable: None` ("a gateway answers ESP only inside an SA"), never
False. What can be measured: `xcheck responder` (agent/responder/esp_echo.py) echoes xcheck's own ESP
probes, so an echo proves ESP passes both ways; and an ICMP destination unreachable
(protocol unreachable, administratively prohibited, ...) for our packets, read from the raw
socket's error queue (IP_RECVERR), proves that something on the way or the host refused it.

The probe packet and its codec are in checks/protocols/esp.py. Sending and receiving ESP
takes a raw socket, and so CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.protocols.esp import TOKEN_BYTES, EspParseError, EspProbe, Kind, esp_of_ipv4, open_esp_socket
from checks.transport.icmp_errors import (ICMP_DEST_UNREACH, IcmpError, IcmpReport, classify_icmp, enable_error_queue,
                                          read_error_queue, send_once_more_on_error)

# Probes are resent this often until an echo, an ICMP error or the deadline: a lost packet
# must not read as silence, and a few packets a second is nothing to any link.
RESEND_INTERVAL_SECONDS = 0.25
DEADLINE_MARGIN_SECONDS = 0.05  # return before the runner's deadline, not at it
NO_SA_DETAIL = "no echo: a gateway answers ESP only inside an SA, so silence proves nothing"
ICMP_PROTOCOL_UNREACH = 2


# ESP that the target itself refuses will not carry a tunnel either; anything else: not known.
_REACHABLE = {Reason.SUCCESS: True, Reason.PROHIBITED: False, Reason.PROTOCOL_UNREACHABLE: False}


@dataclass(frozen=True)
class EspEvidence:
    address: str | None
    reachable: bool | None
    result: Reason
    sent: int = 0
    echoed: int = 0
    icmp: IcmpReport | None = None  # the refusal, when one came


def _refusal(error: IcmpError, address: str) -> tuple[Reason, str, IcmpReport] | None:
    classified = classify_icmp(error)
    if classified is None:
        return None
    result, report = classified
    if error.icmp_type == ICMP_DEST_UNREACH and error.icmp_code == ICMP_PROTOCOL_UNREACH and error.offender == address:
        return Reason.PROTOCOL_UNREACHABLE, (f"{report.detail}, the target itself: ESP reached it, but nothing there "
                                             "handles ESP (no IPsec in its kernel; for `xcheck responder`, the ESP "
                                             "echo needs CAP_NET_RAW)"), report
    return result, report.detail, report


async def probe(ctx: CheckContext) -> Outcome:
    try:
        open_esp_socket().close()
    except PermissionError:
        return Outcome.skipped(Reason.NOT_PERMITTED, "sending ESP (IP protocol 50) needs CAP_NET_RAW (run as root)")
    try:
        address = await ctx.resolver.resolve(ctx.target.host, ctx.remaining())
    except OSError as exc:
        return _outcome(None, Reason.RESOLVE_FAILED, str(exc), 0, 0)
    token = os.urandom(TOKEN_BYTES)
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[tuple[Reason, str, IcmpReport | None]] = loop.create_future()
    sent = echoed = 0
    with open_esp_socket() as sock:
        sock.setblocking(False)
        enable_error_queue(sock)
        try:
            sock.connect((address, 0))  # the kernel then hands us only ESP from the gateway, and its errors
        except OSError as exc:  # no route: the local stack refuses before anything is sent
            detail = f"cannot send ESP to {address}: {exc.strerror or exc}"
            return _outcome(address, Reason.NETWORK_ERROR, detail, 0, 0)

        def readable() -> None:
            nonlocal echoed
            for error in read_error_queue(sock):
                refusal = _refusal(error, address)
                if refusal is not None and not ended.done():
                    ended.set_result(refusal)
            while True:
                try:
                    datagram = sock.recv(65535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue  # the pending error of an ICMP message, read above from the queue
                try:
                    answer = EspProbe.parse(esp_of_ipv4(datagram))
                except EspParseError:
                    continue  # other ESP from the gateway: not ours
                if answer.kind is Kind.ECHO and answer.token == token:
                    echoed += 1
                    if not ended.done():
                        ended.set_result((Reason.SUCCESS, f"echoed from {address}", None))

        loop.add_reader(sock.fileno(), readable)
        try:
            while not ended.done():
                budget = ctx.remaining() - DEADLINE_MARGIN_SECONDS
                if budget <= 0:
                    ended.set_result((Reason.NO_RESPONSE, NO_SA_DETAIL, None) if sent else
                                     (Reason.TIMEOUT, "the deadline passed before the first ESP probe was sent", None))
                    break
                error = send_once_more_on_error(sock, EspProbe(Kind.REQUEST, sent + 1, token).encode())
                if error is not None:
                    ended.set_result((Reason.NETWORK_ERROR, f"cannot send ESP to {address}: {error.strerror}", None))
                    break
                sent += 1
                await asyncio.wait([ended], timeout=min(RESEND_INTERVAL_SECONDS, budget))
        finally:
            loop.remove_reader(sock.fileno())
    result, detail, icmp = ended.result()
    return _outcome(address, result, detail, sent, echoed, icmp)


def _outcome(address: str | None, result: Reason, detail: str, sent: int, echoed: int,
             icmp: IcmpReport | None = None) -> Outcome:
    evidence = EspEvidence(address, _REACHABLE.get(result), result, sent, echoed, icmp)
    if result is Reason.SUCCESS:
        return Outcome.ok(evidence, detail)
    return Outcome.fail(result, detail, evidence)


CHECK = Check(
    name="esp",
    summary="ESP (IP protocol 50) to each gateway: echoed by `xcheck responder`, refused by ICMP, or unknown",
    scope=Scope.GATEWAY,
    evidence=EspEvidence,
    probe=probe,
)
