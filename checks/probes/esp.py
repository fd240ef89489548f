"""ESP (IP protocol 50) toward each gateway: echoed, refused, or unknown.

IPsec's ESP carries the tunnel's traffic once IKE has set up a security association (SA).
A VPN gateway drops ESP that belongs to no SA without a word, so silence from a gateway
proves nothing: it is `reachable: None` ("a gateway answers ESP only inside an SA"), never
False. What can be measured: `xcheck responder` (agent/esp_echo.py) echoes xcheck's own ESP
probes, so an echo proves ESP passes both ways; and an ICMP destination unreachable
(protocol unreachable, administratively prohibited, ...) for our packets, read from the raw
socket's error queue (IP_RECVERR), proves that something on the way or the host refused it.

A probe is an ESP packet (RFC 4303: SPI, sequence number, then what would be ciphertext)
whose SPI is PROBE_SPI and whose payload is MAGIC, a kind (request or echo) and a random
token; the echo is the same packet with the kind changed, so it is never larger. Sending
and receiving ESP takes a raw socket, and so CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from checks.contract import Check, CheckContext, Outcome, Reason
from checks.transport.icmp_errors import ICMP_DEST_UNREACH, enable_error_queue, read_error_queue, send_once_more_on_error

PROBE_SPI = 0x78636B31  # "xck1": fixed, so a responder knows xcheck's probes by their first 4 bytes
MAGIC = b"xcheck-esp-probe"
TOKEN_BYTES = 16
PROBE_BYTES = 8 + len(MAGIC) + 4 + TOKEN_BYTES  # SPI, sequence, magic, kind + 3 reserved, token
_PROBE = struct.Struct(f"!II{len(MAGIC)}sB3x{TOKEN_BYTES}s")
IPV4_HEADER_MIN_BYTES = 20
_IP_MF, _IP_OFFSET = 0x2000, 0x1FFF
# Probes are resent this often until an echo, an ICMP error or the deadline: a lost packet
# must not read as silence, and a few packets a second is nothing to any link.
RESEND_INTERVAL_SECONDS = 0.25
DEADLINE_MARGIN_SECONDS = 0.05  # return before the runner's deadline, not at it
NO_SA_DETAIL = "no echo: a gateway answers ESP only inside an SA, so silence proves nothing"
ICMP_PROTOCOL_UNREACH = 2
_ICMP_UNREACH_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                       3: "port unreachable", 9: "network administratively prohibited",
                       10: "host administratively prohibited", 13: "communication administratively prohibited"}


class EspParseError(ValueError):
    """The bytes are not an IPv4 datagram carrying one of xcheck's ESP probes."""


class Kind(enum.IntEnum):
    REQUEST = 1
    ECHO = 2


@dataclass(frozen=True)
class EspProbe:
    kind: Kind
    sequence: int
    token: bytes

    def encode(self) -> bytes:
        return _PROBE.pack(PROBE_SPI, self.sequence, MAGIC, self.kind, self.token)

    @classmethod
    def parse(cls, esp: bytes) -> EspProbe:
        """An ESP packet (no IP header) that must be exactly one of xcheck's probes."""
        if len(esp) != PROBE_BYTES:
            raise EspParseError(f"{len(esp)} bytes, a probe has {PROBE_BYTES}")
        spi, sequence, magic, kind, token = _PROBE.unpack(esp)
        if spi != PROBE_SPI or magic != MAGIC:
            raise EspParseError(f"SPI {spi:#010x} is not an xcheck probe")
        try:
            return cls(Kind(kind), sequence, token)
        except ValueError:
            raise EspParseError(f"unknown probe kind {kind}") from None


def esp_of_ipv4(datagram: bytes) -> bytes:
    """The ESP packet inside an IPv4 datagram as a raw socket reads it (header included)."""
    if len(datagram) < IPV4_HEADER_MIN_BYTES or datagram[0] >> 4 != 4:
        raise EspParseError("not an IPv4 datagram")
    header_bytes = (datagram[0] & 0x0F) * 4
    total_length, flags_offset = struct.unpack_from("!H2xH", datagram, 2)
    if header_bytes < IPV4_HEADER_MIN_BYTES or total_length != len(datagram) or total_length < header_bytes:
        raise EspParseError("IPv4 header and datagram length disagree")
    if datagram[9] != socket.IPPROTO_ESP:
        raise EspParseError(f"IP protocol {datagram[9]}, not ESP")
    if flags_offset & (_IP_MF | _IP_OFFSET):
        raise EspParseError("a fragment")
    return datagram[header_bytes:]


# ---------------------------------------------------------------------------------------
# the check


class Result(enum.StrEnum):
    ECHOED = "echoed"
    NO_RESPONSE = "no_response"
    TIMEOUT = "timeout"  # the deadline passed before the first probe went out: nothing was tried
    REFUSED = "refused"  # ICMP destination unreachable for our ESP from the way there
    UNHANDLED = "unhandled"  # the target itself said "protocol unreachable": no ESP stack or echo there
    NETWORK_ERROR = "network_error"
    RESOLVE_FAILED = "resolve_failed"


_REASONS = {Result.REFUSED: Reason.PROHIBITED, Result.UNHANDLED: Reason.PORT_UNREACHABLE, Result.NETWORK_ERROR: Reason.NETWORK_ERROR,
            Result.NO_RESPONSE: Reason.NO_RESPONSE, Result.TIMEOUT: Reason.TIMEOUT,
            Result.RESOLVE_FAILED: Reason.RESOLVE_FAILED}
# ESP that the target itself refuses will not carry a tunnel either; anything else: not known.
_REACHABLE = {Result.ECHOED: True, Result.REFUSED: False, Result.UNHANDLED: False}


def _entry(gateway: str, address: str | None, result: Result, detail: str, sent: int, echoed: int) -> dict[str, Any]:
    return {"gateway": gateway, "address": address, "reachable": _REACHABLE.get(result), "result": str(result),
            "detail": detail, "sent": sent, "echoed": echoed}


def _refusal(icmp_code: int, offender: str | None, address: str) -> tuple[Result, str]:
    what = _ICMP_UNREACH_CODES.get(icmp_code, f"code {icmp_code}")
    if icmp_code == ICMP_PROTOCOL_UNREACH and offender == address:
        return Result.UNHANDLED, (f"ICMP {what} from the target itself: ESP reached it, but nothing there takes"
                                  " ESP (is `xcheck responder` running with CAP_NET_RAW?)")
    return Result.REFUSED, f"ICMP {what} from {offender}"


def open_esp_socket() -> socket.socket:
    """A raw ESP socket; PermissionError without CAP_NET_RAW."""
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)


async def _probe_gateway(ctx: CheckContext, gateway: str) -> dict[str, Any]:
    try:
        address = await ctx.resolver.resolve(gateway, ctx.remaining())
    except OSError as exc:
        return _entry(gateway, None, Result.RESOLVE_FAILED, str(exc), 0, 0)
    token = os.urandom(TOKEN_BYTES)
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[tuple[Result, str]] = loop.create_future()
    sent = echoed = 0
    with open_esp_socket() as sock:
        sock.setblocking(False)
        enable_error_queue(sock)
        try:
            sock.connect((address, 0))  # the kernel then hands us only ESP from the gateway, and its errors
        except OSError as exc:  # no route: the local stack refuses before anything is sent
            detail = f"cannot send ESP to {address}: {exc.strerror or exc}"
            return _entry(gateway, address, Result.NETWORK_ERROR, detail, 0, 0)

        def readable() -> None:
            nonlocal echoed
            for error in read_error_queue(sock):
                if error.from_icmp and error.icmp_type == ICMP_DEST_UNREACH and not ended.done():
                    ended.set_result(_refusal(error.icmp_code, error.offender, address))
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
                        ended.set_result((Result.ECHOED, f"echoed from {address}"))

        loop.add_reader(sock.fileno(), readable)
        try:
            while not ended.done():
                budget = ctx.remaining() - DEADLINE_MARGIN_SECONDS
                if budget <= 0:
                    ended.set_result((Result.NO_RESPONSE, NO_SA_DETAIL) if sent else
                                     (Result.TIMEOUT, "the deadline passed before the first ESP probe was sent"))
                    break
                error = send_once_more_on_error(sock, EspProbe(Kind.REQUEST, sent + 1, token).encode())
                if error is not None:
                    ended.set_result((Result.NETWORK_ERROR, f"cannot send ESP to {address}: {error.strerror}"))
                    break
                sent += 1
                await asyncio.wait([ended], timeout=min(RESEND_INTERVAL_SECONDS, budget))
        finally:
            loop.remove_reader(sock.fileno())
    result, detail = ended.result()
    return _entry(gateway, address, result, detail, sent, echoed)


async def probe(ctx: CheckContext) -> Outcome:
    if not ctx.targets.gateways:
        return Outcome.skipped(Reason.NO_TARGET, "no gateway given (--gateway)")
    try:
        open_esp_socket().close()
    except PermissionError:
        return Outcome.skipped(Reason.NOT_PERMITTED, "sending ESP (IP protocol 50) needs CAP_NET_RAW (run as root)")
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_probe_gateway(ctx, gateway)) for gateway in ctx.targets.gateways]
    gateways = [task.result() for task in tasks]
    results = [Result(g["result"]) for g in gateways]
    refused = {Result.REFUSED, Result.UNHANDLED} & set(results)
    reachable = False if refused else (True if set(results) == {Result.ECHOED} else None)
    evidence = {"gateways": gateways, "reachable": reachable}
    summary = "; ".join(f"{g['gateway']}: {g['detail']}" for g in gateways)
    if reachable:
        return Outcome.ok(evidence, summary)
    # The most telling failure decides: a refusal, then local trouble, then silence, then too little time.
    worst = next(r for r in (Result.REFUSED, Result.UNHANDLED, Result.NETWORK_ERROR, Result.NO_RESPONSE,
                             Result.RESOLVE_FAILED, Result.TIMEOUT) if r in results)
    return Outcome.fail(_REASONS[worst], summary, evidence)


CHECK = Check(
    name="esp",
    summary="ESP (IP protocol 50) to each gateway: echoed by `xcheck responder`, refused by ICMP, or unknown",
    probe=probe,
)
