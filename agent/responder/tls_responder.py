"""The TLS side of `xcheck responder`: SSTP's HTTPS handshake on 443, the health probe on 8081.

It answers what an Azure VPN gateway answers, and no more: `SSTP_DUPLEX_POST` to the SSTP
path gets `HTTP/1.1 200` as from a Windows SSTP server (MS-SSTP's HTTPS handshake; enough for
`sstpc` to pass its HTTPS handshake, no PPP after it), `GET /healthprobe` gets 200.

Without a certificate it makes a self-signed one at start with the `openssl` CLI (Debian
package `openssl`): the `cryptography` package is not a runtime dependency of xcheck, and
standard-library `ssl` cannot make certificates. The SHA-256 fingerprint is logged so users can pin it (--gateway-fingerprint).

Guard rails, so that a few sources cannot take the listeners from everyone: a per-source rate
limit on new connections and a cap on connections open at once per source and in all, with
the last slots kept for sources that have none open (all checked before the TLS handshake,
which costs the most); time limits on the handshake, on the request head (a client that
trickles it is cut off as one that sends nothing) and on silence after the SSTP answer, so
that no connection holds its slot for long; a size cap on the request head and strict
parsing. Anything else closes the connection.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import ipaddress
import logging
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.responder.rate_limit import ConnectionSlots, TokenBuckets
from checks.protocols.http import MAX_HEAD_BYTES, HttpParseError, RequestHead, parse_request_head
from checks.protocols.sstp import SSTP_CONTENT_LENGTH, SSTP_PATH

# A probe opens one or two connections per check run; a burst of 20 and 5 a second more
# serves a user running xcheck in a loop while capping what one source can make us do.
RATE_PER_SECOND = 5.0
BURST = 20.0
MAX_CONNECTIONS = 128
# One xcheck run holds at most six at once per gateway it names (tls_tcp443, sstp and
# gateway_health, each of which may connect again without verification before the server has
# seen the first one close). Hosts behind one NAT share it.
MAX_CONNECTIONS_PER_SOURCE = 8
# Without a reserve, 16 sources at their share fill MAX_CONNECTIONS and refuse everyone else.
# Once 96 are open, a source gets a slot only if it has none open: 12 sources fill the 96, and
# each further source holds at most one above them, so those 16 sources leave at least 16
# slots to newcomers: one connection each while the line is passed, enough to be served,
# not for a whole xcheck run at once.
RESERVED_CONNECTIONS = 32
# A TLS handshake is two round trips, a request head one: seconds cover a satellite link
# several times over, and bound how long a silent or trickling client keeps its slot.
HANDSHAKE_SECONDS = 5.0
REQUEST_SECONDS = 5.0  # from the end of the handshake to the end of the head, however it trickles
# After the 200 an SSTP client sends its Call Connect Request and waits; we hold the line
# (reading and dropping at most SSTP_DRAIN_BYTES) so the client sees a server that stops
# talking, not one that hangs up at once: until it is silent for IDLE_SECONDS, at most
# SSTP_HOLD_SECONDS.
IDLE_SECONDS = 5.0
SSTP_HOLD_SECONDS = 10.0
SSTP_DRAIN_BYTES = 65536
CLOSE_SECONDS = 1.0
CERTIFICATE_DAYS = 365
HEALTH_PATH = "/healthprobe"
_PEM_END = "-----END CERTIFICATE-----"
# Shaped like the gateway's own answer (an XML string naming the instance), saying what we are.
HEALTH_BODY = (b'<?xml version="1.0"?><string xmlns="http://schemas.microsoft.com/2003/10/Serialization/">'
               b"xcheck responder</string>")


@dataclass(frozen=True)
class Limits:
    """What the TLS listeners grant (the defaults above; tests shorten them).

    A connection holds its slot at most handshake + request + SSTP hold + CLOSE_SECONDS
    (21 s by default), and a silent one at most the handshake or request time (5 s).
    """

    per_source: int = MAX_CONNECTIONS_PER_SOURCE
    total: int = MAX_CONNECTIONS
    reserve: int = RESERVED_CONNECTIONS
    handshake_seconds: float = HANDSHAKE_SECONDS
    request_seconds: float = REQUEST_SECONDS
    idle_seconds: float = IDLE_SECONDS
    sstp_hold_seconds: float = SSTP_HOLD_SECONDS

    def __str__(self) -> str:
        return (f"{self.per_source} connections per source, {self.total} in all, the last {self.reserve} "
                f"for sources with none open; "
                f"handshake {self.handshake_seconds:g} s, request head {self.request_seconds:g} s, "
                f"idle {self.idle_seconds:g} s, SSTP hold {self.sstp_hold_seconds:g} s")


# A port's answer to a request: (bytes to send, whether SSTP would follow so the line stays open).
Answer = Callable[[RequestHead], tuple[bytes, bool]]


def _response(status: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers),
             f"Date: {email.utils.formatdate(usegmt=True)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _sstp_answer(request: RequestHead) -> tuple[bytes, bool]:
    if request.method == "SSTP_DUPLEX_POST" and request.target.lower() == SSTP_PATH.lower():
        # A bare "200" with the endless Content-Length, as Windows' HTTP.sys sends; sstpc
        # checks both. Few headers: sstpc parses at most seven.
        return _response("200", [("Content-Length", SSTP_CONTENT_LENGTH), ("Server", "xcheck-responder")]), True
    return _not_found(), False


def _health_answer(request: RequestHead) -> tuple[bytes, bool]:
    if request.method in ("GET", "HEAD") and request.target == HEALTH_PATH:
        body = HEALTH_BODY if request.method == "GET" else b""
        return _response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(HEALTH_BODY))),
                                    ("Connection", "close")], body), False
    return _not_found(), False


def _not_found() -> bytes:
    return _response("404 Not Found", [("Content-Length", "0"), ("Connection", "close")])


class TlsResponder:
    """One TLS context, one rate limit and one set of connection slots for all of the ports."""

    def __init__(self, context: ssl.SSLContext, logger: logging.Logger, limits: Limits = Limits(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._context = context
        self._log = logger
        self._limits = limits
        self._buckets = TokenBuckets(RATE_PER_SECOND, BURST, clock)
        self._slots = ConnectionSlots(limits.per_source, limits.total, limits.reserve)

    def handler(self, answer: Answer) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            source = writer.get_extra_info("peername")[0]
            refused = self._slots.take(source)
            if refused is None and not self._buckets.allow(source):
                self._slots.give_back(source)
                refused = "rate limited"
            if refused:
                self._log.debug("%s: connection refused: %s", source, refused)
                writer.transport.abort()
                return
            try:
                await self._serve(reader, writer, answer, source)
                await self._close(writer)
            except asyncio.CancelledError:
                # Each connection is a task of its own that nothing awaits: cancelled, the responder
                # is shutting down. Python 3.11 logs a cancelled handler as an error; end quietly.
                pass
            except Exception:  # a bug must cost one connection, not the responder
                self._log.exception("%s: connection failed", source)
            finally:
                self._slots.give_back(source)
                writer.transport.abort()
        return serve

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     answer: Answer, source: str) -> None:
        try:
            async with asyncio.timeout(self._limits.handshake_seconds):
                await writer.start_tls(self._context)
            async with asyncio.timeout(self._limits.request_seconds):
                head = await reader.readuntil(b"\r\n\r\n")
            request = parse_request_head(head)
        except (HttpParseError, asyncio.LimitOverrunError) as exc:
            self._log.debug("%s: bad request: %s", source, exc)
            writer.write(_response("400 Bad Request", [("Content-Length", "0"), ("Connection", "close")]))
            return
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError is an OSError
            stage = "TLS handshake" if writer.get_extra_info("ssl_object") is None else "request"
            self._log.debug("%s: no %s: %s", source, stage, str(exc) or type(exc).__name__)
            return
        response, sstp = answer(request)
        self._log.info("%s: %s %s -> %s", source, request.method, request.target[:80],
                       response.split(b"\r\n", 1)[0].decode("ascii"))
        writer.write(response)
        if sstp:
            await self._hold(reader)

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        drained = 0
        try:
            async with asyncio.timeout(self._limits.sstp_hold_seconds):
                while drained < SSTP_DRAIN_BYTES:
                    async with asyncio.timeout(self._limits.idle_seconds):
                        chunk = await reader.read(4096)
                    if not chunk:
                        break
                    drained += len(chunk)
        except (TimeoutError, OSError):
            pass  # the client went quiet or away: either way we are done

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        """Deliver what was written and close (TLS close_notify), but never wait long for the peer."""
        writer.close()
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass  # a client that does not read its answer loses it; the caller aborts


def _certificate_names(host: str) -> tuple[str, str]:
    """(common name, subjectAltName value) for a self-signed certificate of this machine."""
    name = socket.gethostname() or "xcheck-responder"
    alt = [f"DNS:{name}"]
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified:
            alt.append(f"IP:{address}")
    except ValueError:
        alt.append(f"DNS:{host}")
    return name, ",".join(alt)


async def self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """A fresh P-256 key and self-signed certificate in `directory`, made by the openssl CLI."""
    cert, key = directory / "responder.pem", directory / "responder.key"
    common_name, alt_names = _certificate_names(host)
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-days", str(CERTIFICATE_DAYS), "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={alt_names}",
               "-keyout", str(key), "-out", str(cert)]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {done.stderr.strip()}")
    return cert, key


async def serve_tls(host: str, ports: tuple[int, int] = (443, 8081), cert: Path | None = None,
                    key: Path | None = None, logger: logging.Logger | None = None,
                    limits: Limits = Limits()) -> list[asyncio.AbstractServer]:
    """Listen on host: `ports[0]` for SSTP, `ports[1]` for the health probe (0: any free port).

    `cert` is a PEM chain, leaf first; `key` may be None when that file holds the key too.
    Without `cert`, a fresh self-signed certificate is made (see the module's docstring).

    Returns the servers (their sockets tell the bound ports); closing them stops serving.
    """
    log = logger or logging.getLogger("xcheck.responder.tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert is None:
        with tempfile.TemporaryDirectory(prefix="xcheck-tls-") as directory:
            cert, key = await self_signed(Path(directory), host)
            context.load_cert_chain(cert, key)  # read now: the files go with the directory
            pem = cert.read_text()
        cert = None
    else:
        context.load_cert_chain(cert, key)
        pem = cert.read_text()
    # The leaf is the first block of a chain file.
    leaf = pem[:pem.index(_PEM_END) + len(_PEM_END)] if _PEM_END in pem else pem
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(leaf)).hexdigest()
    log.info("TLS certificate %s, SHA-256 %s", "self-signed (openssl)" if cert is None else cert, fingerprint)
    log.info("TLS limits: %s", limits)
    responder = TlsResponder(context, log, limits)
    servers = []
    try:
        for port, answer in zip(ports, (_sstp_answer, _health_answer), strict=True):
            # TLS is started in the handler, after the rate limit: a refused source costs no handshake.
            servers.append(await asyncio.start_server(responder.handler(answer), host, port, limit=MAX_HEAD_BYTES))
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
