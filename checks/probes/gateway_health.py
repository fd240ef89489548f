"""The VPN gateway's health probe: GET https://GATEWAY:8081/healthprobe.

Azure's VPN troubleshooting guide has users open this URL: an answer means the gateway
instance is up and nothing between (an NSG on the GatewaySubnet, a firewall) blocks it. The
gateway's certificate on 8081 is not one clients are meant to trust (the guide says to click
through the warning), so it is recorded, not judged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.transport.tls_client import TlsEvidence, contexts_session, TlsSession, probe_target, read_response

PORT = 8081
PATH = "/healthprobe"
BODY_EXCERPT_BYTES = 512  # Azure's answer is a one-line XML string; enough to read it
# After the head, the body gets this long: a peer that announces more than it sends must not
# hold the check to its deadline for a few bytes of evidence.
BODY_WAIT_SECONDS = 0.5
DEADLINE_MARGIN_SECONDS = 0.05


async def _read_excerpt(ctx: CheckContext, reader: asyncio.StreamReader, content_length: str | None) -> bytes:
    wanted = BODY_EXCERPT_BYTES
    if content_length is not None and content_length.isdigit():
        wanted = min(wanted, int(content_length))
    excerpt = b""
    try:
        # Inside the deadline with a margin: the head already came, and must not be lost to the body.
        async with asyncio.timeout(min(BODY_WAIT_SECONDS, max(0.0, ctx.remaining() - DEADLINE_MARGIN_SECONDS))):
            while len(excerpt) < wanted and (chunk := await reader.read(wanted - len(excerpt))):
                excerpt += chunk
    except (TimeoutError, OSError):
        pass  # an excerpt is evidence, not the verdict: keep what came
    return excerpt


@dataclass(frozen=True)
class HealthProbeEvidence:
    answer: Mapping[str, Any]  # the HTTP answer's status line and headers
    body_excerpt: str
    certificate_subject: str | None


@dataclass(frozen=True)
class TlsHealthProbeEvidence(TlsEvidence):
    exchange: HealthProbeEvidence | None = None


async def _get_healthprobe(ctx: CheckContext, gateway: str, session: TlsSession) -> tuple[Reason, str, HealthProbeEvidence]:
    session.writer.write(f"GET {PATH} HTTP/1.1\r\nHost: {gateway}:{PORT}\r\nUser-Agent: xcheck\r\n"
                         "Accept: */*\r\nConnection: close\r\n\r\n".encode("ascii"))
    answer = await read_response(session.reader)
    body = await _read_excerpt(ctx, session.reader, answer.header("Content-Length"))
    own = HealthProbeEvidence(answer.evidence(), body.decode("utf-8", errors="replace"),
                              session.certificate.subject if session.certificate else None)
    if answer.status != 200:
        return Reason.UNEXPECTED_STATUS, f"{PATH} answered {answer.status_line!r}", own
    return Reason.SUCCESS, f"{PATH} answered {answer.status_line!r}", own


async def probe(ctx: CheckContext, port: int = PORT) -> Outcome:
    return await probe_target(ctx, port, _get_healthprobe, TlsHealthProbeEvidence)


CHECK = Check(
    name="gateway_health",
    summary="Gateway health probe: GET https://GATEWAY:8081/healthprobe answered with HTTP 200",
    scope=Scope.GATEWAY,
    session=contexts_session,
    evidence=TlsHealthProbeEvidence,
    probe=probe,
)
