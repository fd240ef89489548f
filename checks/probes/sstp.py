"""SSTP on TCP 443: is an SSTP server there? MS-SSTP's HTTPS handshake, nothing more.

Over a fresh TLS session we send SSTP_DUPLEX_POST to the well-known SSTP path; an SSTP server
answers `HTTP/1.1 200` with Content-Length 2^64-1 (MS-SSTP §4.1, "HTTPS Layer Establishment")
and would then expect SSTP control packets. We stop there: no PPP, no credentials. The
certificate is not judged here (`tls_tcp443` does that), only recorded.

What makes a 200 an SSTP server's answer, and the request itself, are in
checks/protocols/sstp.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.protocols.sstp import SSTP_CONTENT_LENGTH, duplex_post, why_not_sstp
from checks.transport.tls_client import TlsEvidence, contexts_session, TlsSession, probe_target, read_response

PORT = 443


@dataclass(frozen=True)
class SstpEvidence:
    answer: Mapping[str, Any]  # the HTTP answer's status line and headers
    correlation_id: str
    # sstp-client refuses a 200 with any other value; Windows servers always send it.
    sstp_content_length: bool | None


@dataclass(frozen=True)
class TlsSstpEvidence(TlsEvidence):
    exchange: SstpEvidence | None = None


async def _duplex_post(ctx: CheckContext, gateway: str, session: TlsSession) -> tuple[Reason, str, SstpEvidence]:
    correlation_id = "{" + str(uuid.uuid4()).upper() + "}"
    session.writer.write(duplex_post(gateway, correlation_id))
    answer = await read_response(session.reader)
    content_length = answer.header("Content-Length")
    own = SstpEvidence(answer.evidence(), correlation_id,
                       None if content_length is None else content_length == SSTP_CONTENT_LENGTH)
    if answer.status != 200:
        return Reason.UNEXPECTED_STATUS, f"not an SSTP server: SSTP_DUPLEX_POST answered {answer.status_line!r}", own
    problem = why_not_sstp(answer)
    if problem is not None:
        # A server is there and answers HTTP, but not as MS-SSTP says: its answer breaks the protocol.
        return Reason.INVALID_RESPONSE, f"HTTP 200 but not SSTP: {problem}", own
    return Reason.SUCCESS, f"SSTP server: {answer.status_line!r}", own


async def probe(ctx: CheckContext, port: int = PORT) -> Outcome:
    return await probe_target(ctx, port, _duplex_post, TlsSstpEvidence)


CHECK = Check(
    name="sstp",
    summary="SSTP on TCP 443 to each gateway: SSTP_DUPLEX_POST over TLS answered 200 with MS-SSTP's Content-Length",
    scope=Scope.GATEWAY,
    session=contexts_session,
    evidence=TlsSstpEvidence,
    probe=probe,
)
