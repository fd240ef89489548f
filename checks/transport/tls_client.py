"""TLS toward a gateway (direct or through an HTTP CONNECT proxy), and the bytes it returns.

Shared by the checks on TCP 443 and 8081 (`tls_tcp443`, `sstp`, `gateway_health`):

* `probe_gateways` runs one exchange over a fresh TLS session to every gateway at once and
  sums the results up as the check contract wants;
* the session is opened verifying the chain with the system's CAs; when that fails on the
  certificate alone it is opened again without verification, so an untrusted certificate is
  still described, and the verification result is kept apart from the description;
* HTTP/1.1 heads (responses here, requests for the responder) and X.509 certificates are
  parsed strictly and within fixed bounds: garbage gives `HttpParseError` /
  `CertificateParseError`, nothing else.

Only the standard library: checks must run wherever Python does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import enum
import hashlib
import ipaddress
import re
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from checks.contract import CheckContext, Outcome, Reason

# An SSTP or health-probe answer head is a few hundred bytes; 16 KiB leaves room for any real
# server while bounding what a hostile peer can make us hold.
MAX_HEAD_BYTES = 16384
MAX_HEADER_FIELDS = 64
# Header values kept in evidence are cut here: enough to read a Server or Location header.
MAX_EVIDENCE_VALUE_CHARS = 200
# OpenSSL's verify codes for "no CA this host trusts vouches for the issuer": what a middlebox
# re-signing with its own CA produces (unlike an expired or wrong-name certificate).
UNKNOWN_ISSUER_VERIFY_CODES = frozenset({
    2,   # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN (the middlebox sent its own root along)
    20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
})


class Result(enum.StrEnum):
    """What came of one gateway. Closed: reports and metrics may enumerate it."""

    SUCCESS = "success"
    RESOLVE_FAILED = "resolve_failed"
    NETWORK_ERROR = "network_error"  # the local stack refused (no route, unreachable network)
    CONNECTION_REFUSED = "connection_refused"  # TCP RST to our SYN: the host is there, nothing listens
    NO_RESPONSE = "no_response"  # silence until the deadline (TCP, CONNECT, TLS or HTTP)
    CONNECTION_LOST = "connection_lost"  # the peer closed or reset mid-exchange
    PROXY_REFUSED = "proxy_refused"  # the proxy answered CONNECT with an error status
    TLS_FAILED = "tls_failed"  # a TLS alert or bytes that are not TLS: no handshake
    INVALID_RESPONSE = "invalid_response"  # an HTTP answer that breaks the protocol
    UNEXPECTED_STATUS = "unexpected_status"  # a well-formed HTTP answer, but not the one the check wants


REASONS: dict[Result, Reason] = {
    Result.SUCCESS: Reason.SUCCESS,
    Result.RESOLVE_FAILED: Reason.RESOLVE_FAILED,
    Result.NETWORK_ERROR: Reason.NETWORK_ERROR,
    Result.CONNECTION_REFUSED: Reason.CONNECTION_FAILED,
    Result.NO_RESPONSE: Reason.NO_RESPONSE,
    Result.CONNECTION_LOST: Reason.CONNECTION_LOST,
    Result.PROXY_REFUSED: Reason.PEER_ERROR,
    Result.TLS_FAILED: Reason.INVALID_RESPONSE,
    Result.INVALID_RESPONSE: Reason.INVALID_RESPONSE,
    Result.UNEXPECTED_STATUS: Reason.NOT_SUPPORTED,
}
# Three states: a failure that never reached the network says nothing about the path.
REACHABLE: dict[Result, bool | None] = {result: result is Result.SUCCESS for result in Result} | {
    Result.RESOLVE_FAILED: None,
    Result.NETWORK_ERROR: None,
}


class ProbeFailure(Exception):
    """One gateway's exchange ended short of success; `result` says how."""

    def __init__(self, result: Result, detail: str) -> None:
        super().__init__(detail)
        self.result = result
        self.detail = detail


# --------------------------------------------------------------------------------------
# HTTP/1.1 heads

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


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Bytes up to and including the first CRLF CRLF; ProbeFailure if they break our bounds.

    The reader must have been opened with `limit=MAX_HEAD_BYTES` so that a peer that never
    ends its head is cut off there rather than buffered without end.
    """
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProbeFailure(Result.INVALID_RESPONSE, f"answer head longer than {MAX_HEAD_BYTES} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ProbeFailure(Result.CONNECTION_LOST, "closed without answering") from None
        raise ProbeFailure(Result.INVALID_RESPONSE,
                           f"closed after {len(exc.partial)} bytes, in the middle of an HTTP head: "
                           f"{exc.partial[:60]!r}") from None


async def read_response(reader: asyncio.StreamReader) -> ResponseHead:
    data = await read_head(reader)
    try:
        return parse_response_head(data)
    except HttpParseError as exc:
        raise ProbeFailure(Result.INVALID_RESPONSE, f"not HTTP: {exc}") from None


# --------------------------------------------------------------------------------------
# X.509 certificates (DER), for what the handshake showed

class CertificateParseError(ValueError):
    """Bytes that are not an X.509 certificate as far as we read one."""


_NAME_ATTRIBUTES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}
_STRING_ENCODINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
                     0x1C: "utf-32-be"}
_SUBJECT_ALT_NAME = "2.5.29.17"


@dataclass(frozen=True)
class Certificate:
    subject: str  # attributes in the certificate's order, as `openssl x509 -subject` shows them
    issuer: str
    common_name: str | None
    san_dns: tuple[str, ...]
    san_ip: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    self_issued: bool  # issuer and subject are the same name: no CA stands behind it
    sha256: str  # of the DER, lower-case hex without colons

    def covers(self, host: str) -> bool:
        """Whether the certificate names `host` (RFC 6125: SANs; the CN only when there are none)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            return str(address) in self.san_ip
        names = self.san_dns or ((self.common_name,) if self.common_name and not self.san_ip else ())
        wanted = host.lower().rstrip(".")
        for name in names:
            pattern = name.lower().rstrip(".")
            if pattern == wanted:
                return True
            # A wildcard stands for exactly one whole left-most label.
            label, _, rest = wanted.partition(".")
            if pattern.startswith("*.") and label and rest and pattern[2:] == rest:
                return True
        return False

    def evidence(self, now: dt.datetime) -> dict[str, Any]:
        left = (self.not_after - now).total_seconds()
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "self_issued": self.self_issued,
            "san_dns": list(self.san_dns),
            "san_ip": list(self.san_ip),
            "not_before": _rfc3339(self.not_before),
            "not_after": _rfc3339(self.not_after),
            "seconds_until_expiry": round(left),
            "days_until_expiry": int(left // 86400),
            "expired": left < 0,
            "sha256": self.sha256,
        }


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _tlv(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at `offset`, which must lie before `end`."""
    if offset + 2 > end:
        raise CertificateParseError(f"truncated element at byte {offset}")
    tag, length = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise CertificateParseError(f"high tag number at byte {offset}")
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or offset + count > end:  # indefinite lengths are not DER
            raise CertificateParseError(f"bad length at byte {offset - 1}")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    if offset + length > end:
        raise CertificateParseError(f"element at byte {offset} runs past its container")
    return tag, offset, offset + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    children = []
    while start < end:
        child = _tlv(data, start, end)
        children.append(child)
        start = child[2]
    return children


def _expect(element: tuple[int, int, int], tag: int, what: str) -> tuple[int, int]:
    if element[0] != tag:
        raise CertificateParseError(f"{what}: expected tag {tag:#04x}, got {element[0]:#04x}")
    return element[1], element[2]


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise CertificateParseError("malformed object identifier")
    arcs, current = [], 0
    for byte in value:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def _name(data: bytes, start: int, end: int) -> tuple[str, str | None]:
    """An X.501 Name as `CN=..., O=...` and its common name."""
    parts, common_name = [], None
    for rdn in _children(data, start, end):
        for attribute in _children(data, *_expect(rdn, 0x31, "relative distinguished name")):
            fields = _children(data, *_expect(attribute, 0x30, "attribute"))
            if len(fields) != 2:
                raise CertificateParseError("attribute is not a type and a value")
            oid = _oid(data[slice(*_expect(fields[0], 0x06, "attribute type"))])
            tag, value_start, value_end = fields[1]
            text = data[value_start:value_end].decode(_STRING_ENCODINGS.get(tag, "latin-1"), errors="replace")
            key = _NAME_ATTRIBUTES.get(oid, oid)
            parts.append(f"{key}={text}")
            if key == "CN" and common_name is None:
                common_name = text
    return ", ".join(parts), common_name


def _time(data: bytes, element: tuple[int, int, int]) -> dt.datetime:
    tag, start, end = element
    text = data[start:end].decode("ascii", errors="replace")
    if (tag, len(text)) == (0x17, 13) and text[:2].isdigit():
        text = ("19" if int(text[:2]) >= 50 else "20") + text  # RFC 5280 §4.1.2.5.1 (not strptime's %y)
    elif (tag, len(text)) != (0x18, 15):
        raise CertificateParseError(f"not a UTCTime or GeneralizedTime: {text[:20]!r}")
    try:
        return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise CertificateParseError(f"bad time {text!r}") from None


def _subject_alt_names(data: bytes, start: int, end: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    dns, ips = [], []
    for tag, value_start, value_end in _children(data, *_expect(_tlv(data, start, end), 0x30, "subjectAltName")):
        value = data[value_start:value_end]
        if tag == 0x82:  # [2] dNSName
            dns.append(value.decode("ascii", errors="replace"))
        elif tag == 0x87 and len(value) in (4, 16):  # [7] iPAddress
            ips.append(str(ipaddress.ip_address(value)))
    return tuple(dns), tuple(ips)


def parse_certificate(der: bytes) -> Certificate:
    """Subject, issuer, SANs and validity of one DER certificate; CertificateParseError otherwise."""
    tag, start, end = _tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise CertificateParseError("not one DER SEQUENCE")
    outer = _children(der, start, end)
    if not outer:
        raise CertificateParseError("empty certificate")
    tbs = _children(der, *_expect(outer[0], 0x30, "tbsCertificate"))
    if tbs and tbs[0][0] == 0xA0:  # [0] version, absent for v1
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise CertificateParseError("tbsCertificate has too few fields")
    _serial, _signature, issuer, validity, subject, _key, *optional = tbs
    issuer_name, _ = _name(der, *_expect(issuer, 0x30, "issuer"))
    subject_name, common_name = _name(der, *_expect(subject, 0x30, "subject"))
    times = _children(der, *_expect(validity, 0x30, "validity"))
    if len(times) != 2:
        raise CertificateParseError("validity is not two times")
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    for element in optional:
        if element[0] != 0xA3:  # [3] extensions; [1], [2] unique IDs say nothing we report
            continue
        for extension in _children(der, *_expect(_tlv(der, element[1], element[2]), 0x30, "extensions")):
            parts = _children(der, *_expect(extension, 0x30, "extension"))
            if len(parts) < 2:
                raise CertificateParseError("extension without a value")
            if _oid(der[slice(*_expect(parts[0], 0x06, "extension id"))]) == _SUBJECT_ALT_NAME:
                san_dns, san_ip = _subject_alt_names(der, *_expect(parts[-1], 0x04, "extension value"))
    return Certificate(
        subject=subject_name,
        issuer=issuer_name,
        common_name=common_name,
        san_dns=san_dns,
        san_ip=san_ip,
        not_before=_time(der, times[0]),
        not_after=_time(der, times[1]),
        self_issued=der[issuer[1]:issuer[2]] == der[subject[1]:subject[2]],
        sha256=hashlib.sha256(der).hexdigest(),
    )


# --------------------------------------------------------------------------------------
# The path: direct or through a CONNECT proxy

@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # a Proxy-Authorization value, from user:password in the URL

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """`http://[USER:PASSWORD@]HOST:PORT[/]`; ValueError with a message otherwise."""
        parts = urllib.parse.urlsplit(url.strip())
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"proxy: {exc}") from None  # never the URL: it may carry a password
        if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/") \
                or parts.query or parts.fragment:
            raise ValueError("proxy: expected http://[USER:PASSWORD@]HOST:PORT")
        authorization = None
        if parts.username is not None:
            secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(secret.encode()).decode("ascii")
        return cls(parts.hostname, port, authorization)

    def __str__(self) -> str:  # never the credentials: this goes into reports
        return f"{self.host}:{self.port}"


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class TlsSession:
    """An open TLS stream to a gateway, and what it took to open it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    leaf_der: bytes
    tls_version: str | None
    cipher: str | None
    connect_seconds: float
    tunnel_seconds: float | None  # the proxy's answer to CONNECT; None on a direct path
    handshake_seconds: float
    chain_verified: bool
    verify_error: str | None
    verify_code: int | None
    certificate: Certificate | None = None  # None when the leaf is beyond our parser

    def abort(self) -> None:
        # A probe owes the peer no orderly TLS close, and an abort cannot hang on one.
        self.writer.transport.abort()


@contextlib.asynccontextmanager
async def _stage(ctx: CheckContext, what: str) -> AsyncIterator[None]:
    """Bound one step by the check's deadline and name its network failure."""
    try:
        async with asyncio.timeout(ctx.remaining()):
            yield
    except TimeoutError:  # before OSError: TimeoutError is one
        raise ProbeFailure(Result.NO_RESPONSE, f"{what}: no answer before the deadline") from None
    except ssl.SSLCertVerificationError:
        raise  # the caller tries again without verification
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, ConnectionAbortedError,
            BrokenPipeError, asyncio.IncompleteReadError) as exc:
        raise ProbeFailure(Result.CONNECTION_LOST, f"{what}: the peer closed the connection ({exc})") from None
    except ssl.SSLError as exc:
        raise ProbeFailure(Result.TLS_FAILED, f"{what}: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise ProbeFailure(Result.CONNECTION_REFUSED, f"{what}: connection refused") from None
    except OSError as exc:
        raise ProbeFailure(Result.NETWORK_ERROR, f"{what}: {exc.strerror or exc}") from None


async def _open(ctx: CheckContext, gateway: str, port: int, first_hop: str, proxy: Proxy | None,
                context: ssl.SSLContext) -> TlsSession:
    hop_port = proxy.port if proxy else port
    started = ctx.clock()
    async with _stage(ctx, f"TCP connect to {_authority(first_hop, hop_port)}" + (" (proxy)" if proxy else "")):
        reader, writer = await asyncio.open_connection(first_hop, hop_port, limit=MAX_HEAD_BYTES)
    connected = ctx.clock()
    tunnelled = None
    try:
        if proxy:
            target = _authority(gateway, port)
            async with _stage(ctx, f"CONNECT {target} via proxy {proxy}"):
                writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
                             + (f"Proxy-Authorization: {proxy.authorization}\r\n".encode() if proxy.authorization else b"")
                             + b"\r\n")
                answer = await read_response(reader)
            if answer.status != 200:
                raise ProbeFailure(Result.PROXY_REFUSED, f"proxy {proxy} answered CONNECT {target} with {answer.status_line!r}")
            tunnelled = ctx.clock()
        async with _stage(ctx, f"TLS handshake with {gateway}"):
            # The deadline, not asyncio's own handshake timeout, must be what ends a silent peer.
            await writer.start_tls(context, server_hostname=gateway, ssl_handshake_timeout=ctx.remaining() + 1.0)
    except BaseException:
        writer.transport.abort()
        raise
    done = ctx.clock()
    tls = writer.get_extra_info("ssl_object")
    cipher = writer.get_extra_info("cipher")
    return TlsSession(
        reader=reader, writer=writer, leaf_der=tls.getpeercert(binary_form=True) or b"",
        tls_version=tls.version(), cipher=cipher[0] if cipher else None,
        connect_seconds=connected - started,
        tunnel_seconds=None if tunnelled is None else tunnelled - connected,
        handshake_seconds=done - (tunnelled or connected),
        chain_verified=context.verify_mode == ssl.CERT_REQUIRED, verify_error=None, verify_code=None,
    )


@dataclass(frozen=True)
class ClientContexts:
    verifying: ssl.SSLContext  # the chain against the system's CAs; the name is judged apart
    describing: ssl.SSLContext  # no verification: to describe a certificate the first one refused

    @classmethod
    async def load(cls) -> ClientContexts:
        # Reading the system's CAs takes tens of milliseconds: in a thread, so that it does not
        # stall the event loop while other checks time round trips.
        return await asyncio.to_thread(cls._load)

    @classmethod
    def _load(cls) -> ClientContexts:
        verifying = ssl.create_default_context()
        verifying.check_hostname = False
        describing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        describing.check_hostname = False
        describing.verify_mode = ssl.CERT_NONE
        return cls(verifying, describing)


async def open_session(ctx: CheckContext, gateway: str, port: int, first_hop: str, proxy: Proxy | None,
                       contexts: ClientContexts) -> TlsSession:
    """TLS to gateway:port, verifying first; again without verification if only the certificate failed.

    `first_hop` is the gateway's address, or the proxy's when `proxy` is given (the proxy
    resolves the gateway's name itself). ProbeFailure when there is no session.
    """
    verifying, describing = contexts.verifying, contexts.describing
    try:
        session = await _open(ctx, gateway, port, first_hop, proxy, verifying)
    except ssl.SSLCertVerificationError as exc:
        session = await _open(ctx, gateway, port, first_hop, proxy, describing)
        session.verify_error = f"{exc.verify_message} (OpenSSL verify code {exc.verify_code})"
        session.verify_code = exc.verify_code
    try:
        session.certificate = parse_certificate(session.leaf_der)
    except CertificateParseError as exc:
        ctx.logger.debug("%s: certificate not understood: %s", gateway, exc)
    return session


# --------------------------------------------------------------------------------------
# One exchange with every gateway

# What a check does over an open session to a gateway: (result, detail, evidence of its own).
# It may raise ProbeFailure; the caller bounds it by the check's deadline.
Exchange = Callable[[CheckContext, str, TlsSession], Awaitable[tuple[Result, str, dict[str, Any]]]]


def _empty_entry(gateway: str, port: int, proxy: Proxy | None) -> dict[str, Any]:
    """Every key a gateway's evidence has, unmeasured: the shape does not depend on how far we got."""
    return {
        "gateway": gateway, "address": None, "port": port, "reachable": None, "result": None, "detail": "",
        "path": "proxy" if proxy else "direct", "proxy": str(proxy) if proxy else None,
        "connect_seconds": None, "tunnel_seconds": None, "handshake_seconds": None,
        "tls_version": None, "cipher": None,
        "chain_verified": None, "name_matches": None, "verified": None, "verify_error": None,
    }


async def _probe_gateway(ctx: CheckContext, gateway: str, port: int, proxy: Proxy | None,
                         contexts: ClientContexts, exchange: Exchange) -> dict[str, Any]:
    entry = _empty_entry(gateway, port, proxy)
    hop = proxy.host if proxy else gateway
    try:
        try:
            first_hop = await ctx.resolver.resolve(hop, ctx.remaining())
        except OSError as exc:
            raise ProbeFailure(Result.RESOLVE_FAILED, str(exc)) from None
        entry["address"] = None if proxy else first_hop
        session = await open_session(ctx, gateway, port, first_hop, proxy, contexts)
        try:
            name_matches = session.certificate.covers(gateway) if session.certificate else None
            verify_error = session.verify_error
            if verify_error is None and name_matches is False:
                verify_error = f"the certificate does not name {gateway}"
            entry.update(
                connect_seconds=session.connect_seconds, tunnel_seconds=session.tunnel_seconds,
                handshake_seconds=session.handshake_seconds, tls_version=session.tls_version, cipher=session.cipher,
                chain_verified=session.chain_verified, name_matches=name_matches,
                verified=None if name_matches is None else session.chain_verified and name_matches,
                verify_error=verify_error,
            )
            async with _stage(ctx, f"exchange with {_authority(gateway, port)}"):
                result, detail, own = await exchange(ctx, gateway, session)
            entry.update(own)
        finally:
            session.abort()
    except ProbeFailure as failure:
        result, detail = failure.result, failure.detail
    ctx.logger.debug("%s:%d: %s %s", gateway, port, result, detail)
    entry.update(result=str(result), detail=detail, reachable=REACHABLE[result])
    return entry


async def probe_gateways(ctx: CheckContext, port: int, exchange: Exchange, what: str) -> Outcome:
    """Run `exchange` with every gateway at once: ok when all are reachable, else the first failure."""
    if not ctx.targets.gateways:
        return Outcome.skipped(Reason.NO_TARGET, "no gateway given (--gateway)")
    try:
        proxy = Proxy.parse(ctx.targets.proxy) if ctx.targets.proxy else None
    except ValueError as exc:  # config validates the proxy; this guards direct callers
        return Outcome.skipped(Reason.NO_TARGET, str(exc))
    contexts = await ClientContexts.load()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_probe_gateway(ctx, gateway, port, proxy, contexts, exchange))
                 for gateway in ctx.targets.gateways]
    gateways = [task.result() for task in tasks]
    evidence = {"gateways": gateways}
    failed = [g for g in gateways if g["reachable"] is not True]
    if not failed:
        return Outcome.ok(evidence, f"{what} on {len(gateways)} of {len(gateways)} gateways")
    detail = "; ".join(f"{g['gateway']}: {g['detail']}" for g in failed)
    return Outcome.fail(REASONS[Result(failed[0]["result"])], detail, evidence)
