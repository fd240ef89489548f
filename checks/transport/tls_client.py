"""TLS toward a gateway (direct or through an HTTP CONNECT proxy), and the bytes it returns.

Shared by the checks on TCP 443 and 8081 (`tls_tcp443`, `sstp`, `gateway_health`):

* `probe_target` runs one exchange over a fresh TLS session to the check's target;
* the session is opened verifying the chain with the system's CAs; when that fails on the
  certificate alone it is opened again without verification, so an untrusted certificate is
  still described, and the verification result is kept apart from the description;
* HTTP heads are read from the stream within MAX_HEAD_BYTES; their codec is
  checks/protocols/http.py, the certificate parser checks/protocols/x509.py;
* a connect that fails is told apart as data: a reset (`connection_refused`), an ICMP error
  from the path or the gateway (`port_unreachable`, `prohibited`, read from the socket's
  error queue with IP_RECVERR, the report in the evidence), the local stack's refusal
  (`network_error`), and a SYN never answered (`no_response`, which proves nothing).

Only the standard library: checks must run wherever Python does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from checks.contract import CheckContext, Outcome, Reason
from checks.protocols.http import MAX_HEAD_BYTES, HttpParseError, ResponseHead, parse_response_head
from checks.protocols.x509 import Certificate, CertificateParseError, parse_certificate
from checks.transport.icmp_errors import IP_RECVERR, IcmpReport, classify_icmp, enable_error_queue, read_error_queue

# OpenSSL's verify codes for "no CA this host trusts vouches for the issuer": what a middlebox
# re-signing with its own CA produces (unlike an expired or wrong-name certificate).
UNKNOWN_ISSUER_VERIFY_CODES = frozenset({
    2,   # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN (the middlebox sent its own root along)
    20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
})


# Three states, False only with proof: an answer that refuses (a reset, an ICMP error, a peer that
# is not what the check wants). Silence (before the connect or after it), a deadline, and a failure
# that never reached the network say nothing about the path; nor does what the proxy said about
# itself (see `ProbeFailure.at_proxy`). A reason not listed here is not known either way.
REACHABLE: dict[Reason, bool | None] = {
    Reason.SUCCESS: True,
    Reason.NO_RESPONSE: None, Reason.STALLED: None, Reason.TIMEOUT: None, Reason.RESOLVE_FAILED: None,
    Reason.NETWORK_ERROR: None, Reason.INVALID_TARGET: None, Reason.PROXY_REFUSED: None,
    Reason.CONNECTION_REFUSED: False, Reason.PORT_UNREACHABLE: False, Reason.PROHIBITED: False,
    Reason.TLS_FAILED: False, Reason.CONNECTION_LOST: False, Reason.UNEXPECTED_STATUS: False,
    Reason.INVALID_RESPONSE: False,
}
# A SYN never answered: what it may be, since it proves neither.
SYN_SILENCE = ("no answer to the SYN before the deadline (silence proves nothing: a filter that drops it, "
               "or a host that ignores it)")


class ProbeFailure(Exception):
    """One gateway's exchange ended short of success; `result` says how, `icmp` what refused it.
    `at_proxy`: it ended at the HTTP proxy (its connect, its CONNECT answer), which proves nothing
    about the gateway behind it (a 502 is the proxy's own trouble, a 407 wants credentials)."""

    def __init__(self, result: Reason, detail: str, icmp: IcmpReport | None = None, at_proxy: bool = False) -> None:
        super().__init__(detail)
        self.result = result
        self.detail = detail
        self.icmp = icmp
        self.at_proxy = at_proxy


# --------------------------------------------------------------------------------------
# HTTP heads from the stream

async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Bytes up to and including the first CRLF CRLF; ProbeFailure if they break our bounds.

    The reader must have been opened with `limit=MAX_HEAD_BYTES` so that a peer that never
    ends its head is cut off there rather than buffered without end.
    """
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProbeFailure(Reason.INVALID_RESPONSE, f"answer head longer than {MAX_HEAD_BYTES} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ProbeFailure(Reason.CONNECTION_LOST, "closed without answering") from None
        raise ProbeFailure(Reason.INVALID_RESPONSE,
                           f"closed after {len(exc.partial)} bytes, in the middle of an HTTP head: "
                           f"{exc.partial[:60]!r}") from None


async def read_response(reader: asyncio.StreamReader) -> ResponseHead:
    data = await read_head(reader)
    try:
        return parse_response_head(data)
    except HttpParseError as exc:
        raise ProbeFailure(Reason.INVALID_RESPONSE, f"not HTTP: {exc}") from None
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
async def _stage(ctx: CheckContext, what: str, silence: Reason = Reason.STALLED,
                 said: str = "no answer before the deadline") -> AsyncIterator[None]:
    """Bound one step by the check's deadline and name its network failure.

    Silence once the TCP connection is up (no TLS handshake, no HTTP answer) is `stalled`: the
    peer is there, and that is no proof of a filter either (a path MTU black hole swallows the
    server's full-size segments, its certificate flight, while the small SYN/ACK passed).
    """
    try:
        async with asyncio.timeout(ctx.remaining()):
            yield
    except TimeoutError:  # before OSError: TimeoutError is one
        raise ProbeFailure(silence, f"{what}: {said}") from None
    except ssl.SSLCertVerificationError:
        raise  # the caller tries again without verification
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, ConnectionAbortedError,
            BrokenPipeError, asyncio.IncompleteReadError) as exc:
        raise ProbeFailure(Reason.CONNECTION_LOST, f"{what}: the peer closed the connection ({exc})") from None
    except ssl.SSLError as exc:
        raise ProbeFailure(Reason.TLS_FAILED, f"{what}: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise ProbeFailure(Reason.CONNECTION_REFUSED, f"{what}: connection refused") from None
    except OSError as exc:
        # asyncio words a failed connect "Connect call failed (address)": the errno says more.
        raise ProbeFailure(Reason.NETWORK_ERROR, f"{what}: {os.strerror(exc.errno) if exc.errno else exc}") from None


def _icmp_refusal(sock: socket.socket) -> tuple[Reason, IcmpReport] | None:
    """The ICMP error that ended a connect, from the socket's error queue, if one did."""
    return next(filter(None, map(classify_icmp, read_error_queue(sock))), None)


async def _connect(ctx: CheckContext, address: str, port: int, what: str) -> socket.socket:
    """A TCP connection to address:port, or ProbeFailure saying what ended the SYN: a reset,
    an ICMP error (with its report), the local stack, or silence."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Linux ends a connect in SYN_SENT on any ICMP destination unreachable, but tells only
        # an errno (a port unreachable reads as a reset); the queue keeps the ICMP error itself.
        enable_error_queue(sock)
        try:
            async with _stage(ctx, what, Reason.NO_RESPONSE, SYN_SILENCE):
                await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except ProbeFailure:
            refusal = _icmp_refusal(sock)
            if refusal is None:
                raise
            result, report = refusal
            raise ProbeFailure(result, f"{what}: {report.detail}", report) from None
        # Once connected, IP_RECVERR would make TCP treat every ICMP error (a transient host
        # unreachable) as fatal; off, it also empties the queue.
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 0)
    except BaseException:
        sock.close()
        raise
    return sock


async def _open(ctx: CheckContext, gateway: str, port: int, first_hop: str, proxy: Proxy | None,
                context: ssl.SSLContext) -> TlsSession:
    hop_port = proxy.port if proxy else port
    started = ctx.clock()
    try:
        sock = await _connect(ctx, first_hop, hop_port,
                              f"TCP connect to {_authority(first_hop, hop_port)}" + (" (proxy)" if proxy else ""))
    except ProbeFailure as failure:
        failure.at_proxy = proxy is not None
        raise
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD_BYTES)
    except BaseException:
        sock.close()
        raise
    connected = ctx.clock()
    tunnelled = None
    try:
        if proxy:
            target = _authority(gateway, port)
            try:
                async with _stage(ctx, f"CONNECT {target} via proxy {proxy}"):
                    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
                                 + (f"Proxy-Authorization: {proxy.authorization}\r\n".encode() if proxy.authorization
                                    else b"")
                                 + b"\r\n")
                    answer = await read_response(reader)
            except ProbeFailure as failure:
                failure.at_proxy = True
                raise
            if answer.status != 200:
                raise ProbeFailure(Reason.PROXY_REFUSED, f"proxy {proxy} answered CONNECT {target} with "
                                                         f"{answer.status_line!r}", at_proxy=True)
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


@contextlib.asynccontextmanager
async def contexts_session(targets: Any, clock: Any) -> AsyncIterator[ClientContexts]:
    """`Check.session` of the TLS checks: the system's CAs read once per run of a check, not per gateway."""
    yield await ClientContexts.load()


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
Exchange = Callable[[CheckContext, str, TlsSession], Awaitable[tuple[Reason, str, Any]]]


@dataclass(frozen=True)
class TlsEvidence:
    """A TLS session to one gateway and, under `exchange`, what the check did over it."""

    address: str | None  # None through a proxy: the proxy resolves the gateway
    port: int
    reachable: bool | None
    result: Reason
    path: str  # direct or proxy
    proxy: str | None = None
    connect_seconds: float | None = None
    tunnel_seconds: float | None = None
    handshake_seconds: float | None = None
    tls_version: str | None = None
    cipher: str | None = None
    chain_verified: bool | None = None
    name_matches: bool | None = None
    verified: bool | None = None
    verify_error: str | None = None
    exchange: Any = None  # the check's own frozen evidence
    icmp: IcmpReport | None = None  # the ICMP error that refused the connect, when one did


async def probe_target(ctx: CheckContext, port: int, exchange: Exchange, kind: type[TlsEvidence]) -> Outcome:
    """Run `exchange` over a fresh TLS session to ctx.target: ok when it succeeds, else why not.
    `kind` is the check's TlsEvidence, typed with what its exchange records; `ctx.session` is the
    check's `ClientContexts` (`contexts_session`)."""
    gateway = ctx.target.host
    try:
        proxy = Proxy.parse(ctx.targets.proxy) if ctx.targets.proxy else None
    except ValueError as exc:  # config validates the proxy; this guards direct callers
        return Outcome.fail(Reason.INVALID_TARGET, str(exc),
                            kind(None, port, None, Reason.INVALID_TARGET, "proxy"))
    fields: dict[str, Any] = {"path": "proxy" if proxy else "direct", "proxy": str(proxy) if proxy else None}
    address = None
    own = None
    icmp = None
    at_proxy = False
    try:
        try:
            first_hop = await ctx.resolver.resolve(proxy.host if proxy else gateway, ctx.remaining())
        except OSError as exc:
            raise ProbeFailure(Reason.RESOLVE_FAILED, str(exc)) from None
        address = None if proxy else first_hop
        session = await open_session(ctx, gateway, port, first_hop, proxy, ctx.session)
        try:
            name_matches = session.certificate.covers(gateway) if session.certificate else None
            verify_error = session.verify_error
            if verify_error is None and name_matches is False:
                verify_error = f"the certificate does not name {gateway}"
            fields.update(
                connect_seconds=session.connect_seconds, tunnel_seconds=session.tunnel_seconds,
                handshake_seconds=session.handshake_seconds, tls_version=session.tls_version, cipher=session.cipher,
                chain_verified=session.chain_verified, name_matches=name_matches,
                verified=None if name_matches is None else session.chain_verified and name_matches,
                verify_error=verify_error,
            )
            async with _stage(ctx, f"exchange with {_authority(gateway, port)}"):
                result, detail, own = await exchange(ctx, gateway, session)
        finally:
            session.abort()
    except ProbeFailure as failure:
        result, detail, icmp, at_proxy = failure.result, failure.detail, failure.icmp, failure.at_proxy
    ctx.logger.debug("%s:%d: %s %s", gateway, port, result, detail)
    evidence = kind(address, port, None if at_proxy else REACHABLE.get(result), result, exchange=own, icmp=icmp,
                    **fields)
    if result is Reason.SUCCESS:
        return Outcome.ok(evidence, detail)
    return Outcome.fail(result, detail, evidence)
