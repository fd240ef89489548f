"""MS-SSTP's HTTPS handshake on the wire (no I/O): the request a client sends, and whether an answer is an SSTP server's.

A client sends SSTP_DUPLEX_POST to the well-known SSTP path; an SSTP server answers
`HTTP/1.1 200` with Content-Length 2^64-1 (MS-SSTP §4.1, "HTTPS Layer Establishment"), and
SSTP control packets follow. Shared by the probe (checks/probes/sstp.py) and the responder
(agent/responder/tls_responder.py).

A 200 alone proves a web server, not an SSTP server: many answer 200 to any method and path.
sstp-client (`sstpc`, sstp-http.c) refuses a 200 whose Content-Length is not 2^64-1; we
also refuse one without a Content-Length or with a body framed by Transfer-Encoding, which
sstpc lets through its HTTP step only to find no SSTP after it. Every SSTP server sends the
endless Content-Length: its packets take the place of the body.
"""

from __future__ import annotations

from checks.protocols.http import ResponseHead

SSTP_PATH = "/sra_{BA195980-CD49-458b-9E23-C84EE0ADCD75}/"
# MS-SSTP: both sides announce an endless body (2^64 - 1 bytes), since SSTP packets follow the head.
SSTP_CONTENT_LENGTH = "18446744073709551615"


def duplex_post(host: str, correlation_id: str) -> bytes:
    """The request that opens MS-SSTP's HTTPS handshake, as a client sends it."""
    return (f"SSTP_DUPLEX_POST {SSTP_PATH} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"SSTPCORRELATIONID: {correlation_id}\r\n"
            f"Content-Length: {SSTP_CONTENT_LENGTH}\r\n\r\n").encode("ascii")


def why_not_sstp(answer: ResponseHead) -> str | None:
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
