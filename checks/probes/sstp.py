"""SSTP on TCP 443: is an SSTP server there? MS-SSTP's HTTPS handshake, nothing more.

Over a fresh TLS session we send SSTP_DUPLEX_POST to the well-known SSTP path; an SSTP server
answers `HTTP/1.1 200` with Content-Length 2^64-1 (MS-SSTP §4.1, "HTTPS Layer Establishment")
and would then expect SSTP control packets. We stop there: no PPP, no credentials. The
certificate is not judged here (`tls_tcp443` does that), only recorded.

A 200 alone proves a web server, not an SSTP server: many answer 200 to any method and path.
sstp-client (`sstpc`, sstp-http.c) refuses a 200 whose Content-Length is not 2^64-1; we
also refuse one without a Content-Length or with a body framed by Transfer-Encoding, which
sstpc lets through its HTTP step only to find no SSTP after it. Every SSTP server sends the
endless Content-Length: its packets take the place of the body.
"""

from __future__ import annotations

import uuid
from typing import Any

from checks.contract import Check, CheckContext, Outcome
from checks.transport.tls_client import ResponseHead, Result, TlsSession, probe_gateways, read_response

PORT = 443
SSTP_PATH = "/sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/"
# MS-SSTP: both sides announce an endless body (2^64 - 1 bytes), since SSTP packets follow the head.
SSTP_CONTENT_LENGTH = "18446744073709551615"


def duplex_post(host: str, correlation_id: str) -> bytes:
    return (f"SSTP_DUPLEX_POST {SSTP_PATH} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"SSTPCORRELATIONID: {correlation_id}\r\n"
            f"Content-Length: {SSTP_CONTENT_LENGTH}\r\n\r\n").encode("ascii")


def _why_not_sstp(answer: ResponseHead) -> str | None:
    """Why a 200 to SSTP_DUPLEX_POST is not an SSTP server's answer; None when it is one."""
    framing = answer.header("Transfer-Encoding")
    if framing is not None:
        return f"a body framed by Transfer-Encoding {framing[:40]!r}, where SSTP packets follow the head"
    lengths = [value for name, value in answer.headers if name.lower() == "content-length"]
    if not lengths:
        return f"no Content-Length, where an SSTP server announces {SSTP_CONTENT_LENGTH}"
    if len(lengths) > 1:
        return f"{len(lengths)} Content-Length fields, where an SSTP server sends one"
    if lengths[0] != SSTP_CONTENT_LENGTH:
        return f"Content-Length {lengths[0][:40]!r}, where an SSTP server announces {SSTP_CONTENT_LENGTH}"
    return None


async def _duplex_post(ctx: CheckContext, gateway: str, session: TlsSession) -> tuple[Result, str, dict[str, Any]]:
    correlation_id = "{" + str(uuid.uuid4()).upper() + "}"
    session.writer.write(duplex_post(gateway, correlation_id))
    answer = await read_response(session.reader)
    content_length = answer.header("Content-Length")
    own = answer.evidence() | {
        "correlation_id": correlation_id,
        # sstp-client refuses a 200 with any other value; Windows servers always send it.
        "sstp_content_length": None if content_length is None else content_length == SSTP_CONTENT_LENGTH,
    }
    if answer.status != 200:
        return Result.UNEXPECTED_STATUS, f"not an SSTP server: SSTP_DUPLEX_POST answered {answer.status_line!r}", own
    problem = _why_not_sstp(answer)
    if problem is not None:
        # A server is there and answers HTTP, but not as MS-SSTP says: its answer breaks the protocol.
        return Result.INVALID_RESPONSE, f"HTTP 200 but not SSTP: {problem}", own
    return Result.SUCCESS, f"SSTP server: {answer.status_line!r}", own


async def probe(ctx: CheckContext, port: int = PORT) -> Outcome:
    return await probe_gateways(ctx, port, _duplex_post, f"SSTP on TCP {port}")


CHECK = Check(
    name="sstp",
    summary="SSTP on TCP 443 to each gateway: SSTP_DUPLEX_POST over TLS answered 200 with MS-SSTP's Content-Length",
    probe=probe,
)
