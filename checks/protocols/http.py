"""HTTP/1.1 message heads, parsed strictly and within fixed bounds (no I/O).

The status line, request line and header fields of RFC 9112 (§3, §4, §5): what the TLS probes
read from a gateway (SSTP, health probe, a proxy's answer to CONNECT) and what the responder
(agent/responder/tls_responder.py) reads from a client. Garbage gives `HttpParseError`,
nothing else; obsolete line folding and control bytes are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# An SSTP or health-probe head (request or answer) is a few hundred bytes; 16 KiB leaves room for any real
# server while bounding what a hostile peer can make us hold.
MAX_HEAD_BYTES = 16384
MAX_HEADER_FIELDS = 64
# Header values kept in evidence are cut here: enough to read a Server or Location header.
MAX_EVIDENCE_VALUE_CHARS = 200


class HttpParseError(ValueError):
    """Bytes that are not an HTTP/1.1 head within our bounds."""


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])")


@dataclass(frozen=True)
class ResponseHead:
    status_line: str
    status: int
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first field called `name` (any case), or None."""
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def evidence(self) -> dict[str, Any]:
        return {
            "status_line": self.status_line,
            "status": self.status,
            "headers": [[name, value[:MAX_EVIDENCE_VALUE_CHARS]] for name, value in self.headers],
        }


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]


def _split_head(data: bytes) -> tuple[bytes, list[bytes]]:
    if len(data) > MAX_HEAD_BYTES:
        raise HttpParseError(f"head longer than {MAX_HEAD_BYTES} bytes")
    if not data.endswith(b"\r\n\r\n"):
        raise HttpParseError("head does not end with an empty line (CRLF CRLF)")
    first, *fields = data[:-4].split(b"\r\n")
    return first, fields


def parse_header_fields(lines: list[bytes]) -> tuple[tuple[str, str], ...]:
    """`name: value` lines (RFC 9112 §5); obsolete line folding and stray bytes are refused."""
    if len(lines) > MAX_HEADER_FIELDS:
        raise HttpParseError(f"more than {MAX_HEADER_FIELDS} header fields")
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpParseError(f"malformed header field {line[:40]!r}")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise HttpParseError(f"control bytes in header field {name[:40]!r}")
        fields.append((name.decode("ascii"), value.decode("latin-1")))
    return tuple(fields)


def parse_response_head(data: bytes) -> ResponseHead:
    """Status line and header fields, `data` ending in CRLF CRLF; HttpParseError otherwise.

    The reason phrase is optional: SSTP servers answer a bare `HTTP/1.1 200`.
    """
    first, lines = _split_head(data)
    if not _STATUS_LINE.fullmatch(first):
        raise HttpParseError(f"not an HTTP/1.x status line: {first[:60]!r}")
    status_line = first.decode("latin-1")
    return ResponseHead(status_line, int(first[9:12]), parse_header_fields(lines))


def parse_request_head(data: bytes) -> RequestHead:
    """Request line and header fields, `data` ending in CRLF CRLF; HttpParseError otherwise."""
    first, lines = _split_head(data)
    match = _REQUEST_LINE.fullmatch(first)
    if not match:
        raise HttpParseError(f"not an HTTP/1.x request line: {first[:60]!r}")
    return RequestHead(match[1].decode("ascii"), match[2].decode("ascii"), parse_header_fields(lines))
