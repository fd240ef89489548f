"""TLS, SSTP and health-probe checks against real servers on loopback, and their parsers fuzzed.

Every peer here is started by the test on 127.0.0.1 with certificates from a test CA made
with `cryptography` (a test dependency). The checks judge chains with "the system's CAs",
which OpenSSL takes from SSL_CERT_FILE / SSL_CERT_DIR: the tests point those at the test CA
for the duration of a test, and never touch the real CA store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.responder import tls_responder
from agent.responder.tls_responder import serve_tls
from checks.probes import gateway_health, sstp, tls_tcp443
from agent.runner import run_checks
from checks.contract import Check, CheckContext, Outcome, Reason, Scope, Status
from checks.targets import Resolver, Targets
from checks.protocols.http import MAX_HEAD_BYTES, HttpParseError, parse_request_head, parse_response_head
from checks.protocols.sstp import SSTP_PATH, duplex_post
from checks.protocols.x509 import CertificateParseError, parse_certificate
from checks.transport.tls_client import ClientContexts, Proxy

LOCALHOST = "localhost"  # /etc/hosts: 127.0.0.1; a name, so SNI and name matching are exercised
NOW = dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------------------
# A test PKI

@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _issue(common_name: str, issuer: Issued | None, *, ca: bool = False, dns: tuple[str, ...] = (),
           ips: tuple[str, ...] = (), not_before: dt.datetime = NOW - dt.timedelta(days=1),
           not_after: dt.datetime = NOW + dt.timedelta(days=30)) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xcheck tests"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    if dns or ips:
        names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca: Issued
    good: Issued
    expired: Issued
    wrong_name: Issued
    intercept_ca: Issued  # a middlebox's own CA, which this host does not trust
    intercepted: Issued  # the middlebox's leaf for the gateway it re-signs
    directory: Path

    def context(self, leaf: Issued, *chain: Issued) -> ssl.SSLContext:
        """A server context presenting leaf (and chain)."""
        path = self.directory / f"{leaf.fingerprint()}.pem"
        path.write_bytes(b"".join(c.cert.public_bytes(serialization.Encoding.PEM) for c in (leaf, *chain))
                         + leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(path)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue("xcheck test CA", None, ca=True)
    intercept_ca = _issue("Middlebox Inspection CA", None, ca=True)
    pki = Pki(
        ca=ca,
        good=_issue("gateway", ca, dns=(LOCALHOST,), ips=("127.0.0.1",)),
        expired=_issue("gateway", ca, dns=(LOCALHOST,), not_before=NOW - dt.timedelta(days=60),
                       not_after=NOW - dt.timedelta(days=2)),
        wrong_name=_issue("elsewhere.example", ca, dns=("elsewhere.example",)),
        intercept_ca=intercept_ca,
        intercepted=_issue(LOCALHOST, intercept_ca, dns=(LOCALHOST,)),
        directory=directory,
    )
    (directory / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    (directory / "empty").mkdir()
    return pki


@pytest.fixture
def trust_test_ca(pki, monkeypatch) -> None:
    """Make the test CA this process's only "system" CA (OpenSSL reads these at each context)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.directory / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(pki.directory / "empty"))


# ---------------------------------------------------------------------------------------
# Peers

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _quiet(handler: Handler) -> Handler:
    """End quietly when the client goes away (the checks abort once they know enough) or the
    test's loop cancels a connection still open; Python 3.11 logs either as an error."""
    @functools.wraps(handler)
    async def handle(reader, writer):
        try:
            await handler(reader, writer)
        except (asyncio.CancelledError, OSError):
            writer.transport.abort()
    return handle


async def _start(handler: Handler, context: ssl.SSLContext | None = None) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(_quiet(handler), "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def _answering(answer: bytes) -> Handler:
    """Read one request head (if any comes), write `answer`, close."""
    async def handle(reader, writer):
        try:
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
    return handle


async def _silent(reader, writer):
    await asyncio.sleep(30)  # cancelled when the test's loop ends


async def _not_tls(reader, writer):
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


def _connect_proxy(mode: str, seen: list[str], resign: ssl.SSLContext | None = None) -> Handler:
    """An HTTP CONNECT proxy: "tunnel" passes bytes through, "resign" terminates TLS with its own
    certificate and re-encrypts toward the gateway (a TLS-inspecting middlebox), "refuse" says 403."""
    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1].decode()
        seen.append(target)
        if mode == "refuse":
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.transport.abort()
            return
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        if mode == "resign":
            await writer.start_tls(resign)
            toward_gateway = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            toward_gateway.check_hostname, toward_gateway.verify_mode = False, ssl.CERT_NONE
            await upstream_writer.start_tls(toward_gateway, server_hostname=host)
        await asyncio.gather(_relay(reader, upstream_writer), _relay(upstream_reader, writer))
    return handle


def _context(gateway: str, timeout: float, **targets) -> CheckContext:
    all_targets = Targets(gateways=(gateway,), **targets)
    (target,) = all_targets.of_scope(Scope.GATEWAY)
    return CheckContext(targets=all_targets, target=target, deadline=time.monotonic() + timeout, dependencies={},
                        resolver=Resolver(), logger=logging.getLogger("test_tls"), session=ClientContexts._load())


async def _run(module, port: int, gateway: str = LOCALHOST, timeout: float = 3.0, **targets) -> Outcome:
    return await module.probe(_context(gateway, timeout, **targets), port=port)


def _on_port(module, port: int) -> Check:
    """The module's check with its probe pointed at `port`, to run through the runner."""
    return dataclasses.replace(module.CHECK, probe=functools.partial(module.probe, port=port))


def check_against(module, handler: Handler, context: ssl.SSLContext | None = None, **kwargs) -> Outcome:
    async def run():
        server, port = await _start(handler, context)
        async with server:
            return await _run(module, port, **kwargs)
    return asyncio.run(run())


# ---------------------------------------------------------------------------------------
# tls_tcp443

def test_no_gateway_is_skipped():
    (run,) = asyncio.run(run_checks([tls_tcp443.CHECK], Targets(), 3.0))
    assert (run.status, run.reason, run.results) == (Status.SKIPPED, Reason.NO_TARGET, ())
    assert "--gateway" in run.detail


def test_trusted_certificate_is_described_and_verified(pki, trust_test_ca):
    outcome = check_against(tls_tcp443, _silent, pki.context(pki.good), gateway_fingerprint=pki.good.fingerprint())
    gateway, own = outcome.evidence, outcome.evidence.exchange
    assert (outcome.status, outcome.reason) == (Status.OK, Reason.SUCCESS)
    assert gateway.reachable is True and gateway.result == "success"
    assert gateway.address == "127.0.0.1" and gateway.path == "direct" and gateway.proxy is None
    assert gateway.tls_version in ("TLSv1.2", "TLSv1.3") and gateway.cipher
    assert 0 < gateway.connect_seconds < 3 and 0 < gateway.handshake_seconds < 3  # seconds, within the deadline
    assert own.sni == LOCALHOST
    certificate = own.certificate
    assert certificate["subject"] == "O=xcheck tests, CN=gateway"
    assert certificate["issuer"] == "O=xcheck tests, CN=xcheck test CA"
    assert certificate["san_dns"] == [LOCALHOST] and certificate["san_ip"] == ["127.0.0.1"]
    assert certificate["expired"] is False and 28 <= certificate["days_until_expiry"] <= 30
    assert certificate["sha256"] == pki.good.fingerprint()
    assert gateway.chain_verified is True and gateway.name_matches is True and gateway.verified is True
    assert own.fingerprint_matches is True
    assert own.interception_suspected is False and own.interception_evidence == ()


def test_self_signed_responder_is_untrusted_but_not_interception():
    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0))
        try:
            return await _run(tls_tcp443, servers[0].sockets[0].getsockname()[1], gateway="127.0.0.1")
        finally:
            for server in servers:
                server.close()
    outcome = asyncio.run(run())
    gateway = outcome.evidence
    assert outcome.status is Status.OK and gateway.reachable is True
    assert gateway.chain_verified is False and "self-signed" in gateway.verify_error
    assert gateway.exchange.certificate["self_issued"] is True and gateway.name_matches is True  # IP SAN
    assert gateway.exchange.sni is None
    assert gateway.exchange.interception_suspected is False


def test_expired_certificate_is_reported(pki, trust_test_ca):
    gateway = check_against(tls_tcp443, _silent, pki.context(pki.expired)).evidence
    assert gateway.reachable is True
    certificate = gateway.exchange.certificate
    assert certificate["expired"] is True and certificate["days_until_expiry"] < 0
    assert gateway.chain_verified is False and "expired" in gateway.verify_error
    assert gateway.exchange.interception_suspected is False  # a trusted issuer's stale certificate is no middlebox


def test_wrong_name_is_reported(pki, trust_test_ca):
    outcome = check_against(tls_tcp443, _silent, pki.context(pki.wrong_name))
    gateway = outcome.evidence
    assert gateway.chain_verified is True and gateway.name_matches is False and gateway.verified is False
    assert gateway.verify_error == f"the certificate does not name {LOCALHOST}"
    assert gateway.exchange.interception_suspected is False
    assert "does not verify" in outcome.detail


def test_fingerprint_mismatch_is_interception_evidence(pki, trust_test_ca):
    own = check_against(tls_tcp443, _silent, pki.context(pki.good), gateway_fingerprint="ab" * 32).evidence.exchange
    assert own.fingerprint_matches is False and own.interception_suspected is True
    [evidence] = own.interception_evidence
    assert evidence.startswith("fingerprint mismatch") and pki.good.fingerprint() in evidence


def _via_proxy(module, mode: str, gateway_handler: Handler, gateway_context: ssl.SSLContext | None,
               resign: ssl.SSLContext | None = None, **kwargs) -> tuple[Outcome, list[str]]:
    seen: list[str] = []

    async def run():
        gateway, gateway_port = await _start(gateway_handler, gateway_context)
        proxy, proxy_port = await _start(_connect_proxy(mode, seen, resign))
        async with gateway, proxy:
            return await _run(module, gateway_port, proxy=f"http://127.0.0.1:{proxy_port}", **kwargs)
    return asyncio.run(run()), seen


def test_resigning_proxy_is_detected_as_interception(pki, trust_test_ca):
    outcome, seen = _via_proxy(tls_tcp443, "resign", _silent, pki.context(pki.good),
                               resign=pki.context(pki.intercepted, pki.intercept_ca),
                               gateway_fingerprint=pki.good.fingerprint())
    gateway = outcome.evidence
    assert seen and seen[0].startswith(f"{LOCALHOST}:")  # the proxy, not us, resolves the gateway's name
    assert gateway.path == "proxy" and gateway.proxy.startswith("127.0.0.1:") and gateway.address is None
    assert gateway.tunnel_seconds is not None
    assert gateway.exchange.certificate["issuer"] == "O=xcheck tests, CN=Middlebox Inspection CA"
    assert gateway.chain_verified is False and gateway.name_matches is True
    assert gateway.exchange.interception_suspected is True
    assert [e.split(":")[0] for e in gateway.exchange.interception_evidence] == ["fingerprint mismatch",
                                                                                 "unexpected issuer"]
    assert "TLS interception suspected" in outcome.detail


def test_resigning_proxy_is_detected_without_a_fingerprint(pki, trust_test_ca):
    outcome, _ = _via_proxy(tls_tcp443, "resign", _silent, pki.context(pki.good),
                            resign=pki.context(pki.intercepted))  # no CA sent along: verify code 20, not 19
    own = outcome.evidence.exchange
    assert own.interception_suspected is True
    assert own.interception_evidence[0].startswith("unexpected issuer")


def test_passthrough_proxy_is_via_proxy_without_interception(pki, trust_test_ca):
    outcome, seen = _via_proxy(tls_tcp443, "tunnel", _silent, pki.context(pki.good),
                               gateway_fingerprint=pki.good.fingerprint())
    gateway = outcome.evidence
    assert outcome.status is Status.OK and len(seen) == 1  # verified at the first try: one connection
    assert gateway.path == "proxy" and gateway.verified is True and gateway.exchange.fingerprint_matches is True
    assert gateway.exchange.interception_suspected is False


def test_proxy_refusing_connect_is_proxy_refused(pki, trust_test_ca):
    outcome, _ = _via_proxy(tls_tcp443, "refuse", _silent, pki.context(pki.good))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.PROXY_REFUSED)
    assert outcome.evidence.result == "proxy_refused" and "403 Forbidden" in outcome.detail
    assert outcome.evidence.reachable is None  # the proxy's answer proves nothing about the gateway behind it


def test_proxy_that_is_not_listening():
    outcome = asyncio.run(_run(tls_tcp443, 443, proxy=f"http://127.0.0.1:{free_port()}"))
    assert (outcome.reason, outcome.evidence.result) == (Reason.CONNECTION_REFUSED, "connection_refused")
    assert "(proxy)" in outcome.detail


def test_non_tls_peer_is_tls_failed():
    outcome = check_against(tls_tcp443, _not_tls)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TLS_FAILED)
    assert outcome.evidence.result == "tls_failed" and outcome.evidence.reachable is False
    assert "TLS handshake" in outcome.detail


def test_a_peer_silent_after_the_connect_is_stalled_within_the_deadline():
    started = time.monotonic()
    outcome = check_against(tls_tcp443, _silent, timeout=0.5)
    elapsed = time.monotonic() - started
    # It accepted the connection: not the silence of a dropped SYN, and no proof of a filter either.
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.STALLED) and outcome.evidence.reachable is None
    assert "TLS handshake" in outcome.detail
    assert elapsed < 0.5 + 10  # ends at its deadline, not when the peer gives up (30 s); generous for a loaded machine


def test_refused_port_is_connection_refused():
    outcome = asyncio.run(_run(tls_tcp443, free_port()))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.CONNECTION_REFUSED)
    assert outcome.evidence.reachable is False and outcome.evidence.tls_version is None


def test_unresolvable_gateway_is_not_known_either_way():
    outcome = asyncio.run(_run(tls_tcp443, 443, gateway="no-such-host.invalid"))
    assert outcome.reason is Reason.RESOLVE_FAILED and outcome.evidence.reachable is None


def test_every_gateway_reported_and_the_failure_decides(pki, trust_test_ca):
    async def run():
        server, port = await _start(_silent, pki.context(pki.good))
        async with server:
            # 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only: refused.
            return await run_checks([_on_port(tls_tcp443, port)], Targets(gateways=(LOCALHOST, "127.0.0.2")), 3.0)
    (run,) = asyncio.run(run())
    first, second = run.results
    assert (first.target.name, second.target.name) == (LOCALHOST, "127.0.0.2")
    assert first.evidence.reachable is True and second.evidence.result == "connection_refused"
    assert (run.status, run.reason) == (Status.FAIL, Reason.CONNECTION_REFUSED)
    assert run.detail.startswith("127.0.0.2: ")


# ---------------------------------------------------------------------------------------
# sstp and gateway_health

def _against_responder(module, which: int, **kwargs) -> Outcome:
    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0))
        try:
            return await _run(module, servers[which].sockets[0].getsockname()[1], gateway="127.0.0.1", **kwargs)
        finally:
            for server in servers:
                server.close()
    return asyncio.run(run())


def test_sstp_against_the_responder():
    outcome = _against_responder(sstp, 0)
    gateway, own = outcome.evidence, outcome.evidence.exchange
    assert (outcome.status, outcome.reason) == (Status.OK, Reason.SUCCESS)
    assert own.answer["status_line"] == "HTTP/1.1 200" and own.answer["status"] == 200
    assert ["Content-Length", "18446744073709551615"] in own.answer["headers"]
    assert own.sstp_content_length is True
    assert own.correlation_id.startswith("{") and len(own.correlation_id) == 38
    assert gateway.verified is False and gateway.verify_error  # recorded, not judged


@pytest.mark.parametrize("answer", [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                                    b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"])
def test_sstp_against_a_plain_https_server(pki, trust_test_ca, answer):
    outcome = check_against(sstp, _answering(answer), pki.context(pki.good))
    gateway = outcome.evidence
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.UNEXPECTED_STATUS)
    assert gateway.result == "unexpected_status" and gateway.reachable is False
    assert gateway.exchange.answer["status_line"] == answer.split(b"\r\n")[0].decode()
    assert "not an SSTP server" in outcome.detail
    assert gateway.verified is True


@pytest.mark.parametrize("answer, words", [
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200\r\nbroken header\r\n\r\n", "malformed header field"),
    (b"HTTP/1.1 2", "in the middle of an HTTP head"),
    (b"HTTP/1.1 200\r\nX: " + b"a" * MAX_HEAD_BYTES, "longer than"),
])
def test_sstp_garbage_answer_is_an_invalid_response(pki, trust_test_ca, answer, words):
    outcome = check_against(sstp, _answering(answer), pki.context(pki.good))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert words in outcome.detail


def test_sstp_silence_after_the_request_is_stalled(pki, trust_test_ca):
    # Long enough for the TLS handshake and the request on a loaded machine: the silence is after them.
    outcome = check_against(sstp, _silent, pki.context(pki.good), timeout=2.0)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.STALLED)
    assert "exchange with" in outcome.detail


def test_sstp_through_a_passthrough_proxy():
    seen: list[str] = []

    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0))
        proxy, proxy_port = await _start(_connect_proxy("tunnel", seen))
        try:
            async with proxy:
                return await _run(sstp, servers[0].sockets[0].getsockname()[1], gateway="127.0.0.1",
                                  proxy=f"http://127.0.0.1:{proxy_port}")
        finally:
            for server in servers:
                server.close()
    outcome = asyncio.run(run())
    assert outcome.status is Status.OK and outcome.evidence.path == "proxy"


def test_health_probe_against_the_responder():
    outcome = _against_responder(gateway_health, 1)
    gateway, own = outcome.evidence, outcome.evidence.exchange
    assert (outcome.status, outcome.reason) == (Status.OK, Reason.SUCCESS)
    assert own.answer["status"] == 200 and "xcheck responder" in own.body_excerpt
    assert gateway.tls_version and own.certificate_subject.startswith("CN=")


def test_health_probe_404(pki, trust_test_ca):
    outcome = check_against(gateway_health, _answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here!"),
                            pki.context(pki.good))
    gateway = outcome.evidence
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.UNEXPECTED_STATUS)
    assert gateway.exchange.answer["status"] == 404 and gateway.exchange.body_excerpt == "not here!"
    assert gateway.reachable is False


def test_health_probe_is_not_sstp_on_the_responder():
    outcome = _against_responder(sstp, 1)  # the health port answers SSTP_DUPLEX_POST with 404
    assert outcome.reason is Reason.UNEXPECTED_STATUS and outcome.evidence.exchange.answer["status"] == 404


# ---------------------------------------------------------------------------------------
# The responder's guard rails

async def _tls_request(port: int, request: bytes) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(4096), 5)
    finally:
        writer.transport.abort()


def test_responder_survives_garbage_and_answers_bad_requests_with_400():
    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0))
        port = servers[0].sockets[0].getsockname()[1]
        try:
            # Not TLS at all: the handshake fails, the connection closes, the server lives on.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x00\xffgarbage\r\n\r\n" * 10)
            assert await asyncio.wait_for(reader.read(4096), 5) == b""
            writer.close()
            bad = await _tls_request(port, b"\x01\x02 not http\r\n\r\n")
            too_long = await _tls_request(port, b"GET / HTTP/1.1\r\nX: " + b"a" * (2 * MAX_HEAD_BYTES) + b"\r\n\r\n")
            other = await _tls_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            good = await _tls_request(port, duplex_post("x", "{0}"))
            return bad, too_long, other, good
        finally:
            for server in servers:
                server.close()
    bad, too_long, other, good = asyncio.run(run())
    assert bad.startswith(b"HTTP/1.1 400 ") and too_long.startswith(b"HTTP/1.1 400 ")
    assert other.startswith(b"HTTP/1.1 404 ")
    assert good.startswith(b"HTTP/1.1 200\r\n") and len(good) < len(duplex_post("x", "{0}"))


def test_responder_rate_limits_new_connections_per_source():
    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0))
        port = servers[1].sockets[0].getsockname()[1]
        try:
            answers = []
            for _ in range(int(tls_responder.BURST) + 5):
                try:
                    answers.append(await _tls_request(port, b"GET /healthprobe HTTP/1.1\r\nHost: x\r\n\r\n"))
                except (OSError, ssl.SSLError):  # refused before the handshake
                    answers.append(b"")
            return answers
        finally:
            for server in servers:
                server.close()
    answers = asyncio.run(run())
    served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
    assert int(tls_responder.BURST) <= len(served) <= int(tls_responder.BURST) + 1  # one token may refill meanwhile
    assert answers[-1] == b""


def test_responder_uses_a_given_certificate(pki, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pki.good.cert.public_bytes(serialization.Encoding.PEM)
                     + pki.ca.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pki.good.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))

    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0), cert=cert, key=key)
        try:
            return await _run(tls_tcp443, servers[0].sockets[0].getsockname()[1])
        finally:
            for server in servers:
                server.close()
    assert asyncio.run(run()).evidence.exchange.certificate["sha256"] == pki.good.fingerprint()


# ---------------------------------------------------------------------------------------
# Parsers

def test_response_head_parsing():
    head = parse_response_head(b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\nServer:  x \r\n\r\n")
    assert (head.status_line, head.status) == ("HTTP/1.1 200", 200)
    assert head.header("content-length") == "18446744073709551615" and head.header("server") == "x"
    assert parse_response_head(b"HTTP/1.0 404 Not Found\r\n\r\n").status == 404
    for bad in (b"HTTP/1.1 200\r\n\r\nextra", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 20\r\n\r\n",
                b"HTTP/1.1 200\r\n folded\r\n\r\n", b"HTTP/1.1 200\r\nA : b\r\n\r\n", b"HTTP/1.1 200\nA: b\n\n",
                b"HTTP/1.1 200\r\nA: b\x00c\r\n\r\n", b"HTTP/1.1 200\r\n" + b"A: b\r\n" * 65 + b"\r\n"):
        with pytest.raises(HttpParseError):
            parse_response_head(bad)


def test_request_head_parsing():
    request = parse_request_head(duplex_post("gw", "{X}"))
    assert (request.method, request.target) == ("SSTP_DUPLEX_POST", SSTP_PATH)
    assert dict(request.headers)["SSTPCORRELATIONID"] == "{X}"
    with pytest.raises(HttpParseError):
        parse_request_head(b"GET  / HTTP/1.1\r\n\r\n")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2 * MAX_HEAD_BYTES))
def test_fuzz_http_heads_give_a_head_or_our_error(data):
    for parse in (parse_response_head, parse_request_head):
        try:
            parse(data)
        except HttpParseError:
            pass


_HEAD_PIECES = st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.0 ", b"200", b"404", b" OK", b"\r\n", b"\r\n\r\n", b":",
                                b" ", b"\t", b"Content-Length", b"18446744073709551615", b"\x00", b"\xff", b"x"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_HEAD_PIECES, max_size=30).map(b"".join))
def test_fuzz_http_heads_built_from_near_misses(data):
    try:
        head = parse_response_head(data)
    except HttpParseError:
        return
    assert 0 <= head.status <= 999
    assert data.endswith(b"\r\n\r\n") and head.status_line.startswith("HTTP/1.")


def test_certificate_parsing_matches_cryptography(pki):
    for issued in (pki.ca, pki.good, pki.expired, pki.wrong_name, pki.intercepted):
        parsed = parse_certificate(issued.der())
        assert parsed.sha256 == issued.fingerprint()
        assert parsed.common_name == issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert parsed.not_after == issued.cert.not_valid_after_utc.replace(microsecond=0)
        assert parsed.not_before == issued.cert.not_valid_before_utc.replace(microsecond=0)
        assert parsed.self_issued is (issued.cert.issuer == issued.cert.subject)
    assert parse_certificate(pki.good.der()).san_ip == ("127.0.0.1",)
    # UTCTime's two-digit years: 50-99 are 19xx (RFC 5280), not 20xx as strptime's %y has it.
    old = parse_certificate(_issue("old", pki.ca, not_before=dt.datetime(1955, 1, 1, tzinfo=dt.UTC)).der())
    assert old.not_before.year == 1955


def test_certificate_name_matching(pki):
    wildcard = parse_certificate(_issue("w", pki.ca, dns=("*.gw.example", "exact.example.")).der())
    assert wildcard.covers("vpn.gw.example") and wildcard.covers("EXACT.example")
    assert not wildcard.covers("gw.example") and not wildcard.covers("a.b.gw.example")
    assert not wildcard.covers("127.0.0.1")
    cn_only = parse_certificate(_issue("cn.example", pki.ca).der())
    assert cn_only.covers("cn.example") and not cn_only.covers("other.example")


@pytest.mark.parametrize("der", [b"", b"\x30\x00", b"\x30\x02\x30\x00", b"\x30\x80\x00\x00", b"\x30\x85\x00\x00\x00\x00\x00",
                                 b"\x30\x04\x30\x02\xa0\x00", b"\x1f\x00"])
def test_certificate_parsing_of_hollow_structures(der):
    with pytest.raises(CertificateParseError):
        parse_certificate(der)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_certificate_parsing_gives_a_certificate_or_our_error(data):
    try:
        parse_certificate(data)
    except CertificateParseError:
        pass


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 0x80 else bytes([0x80 | 2]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + body


# Well-formed DER trees of the tags a certificate uses, in any arrangement: reaches the field
# checks that random bytes rarely get past the length checks to.
_DER_TREES = st.recursive(
    st.tuples(st.sampled_from([0x02, 0x04, 0x06, 0x0C, 0x13, 0x17, 0x18, 0x01, 0x82, 0x87]),
              st.binary(max_size=16) | st.sampled_from([b"\x55\x1d\x11", b"\x55\x04\x03", b"260101000000Z",
                                                        b"20260101000000Z", b"\x7f\x00\x00\x01"])).map(lambda t: _der(*t)),
    lambda children: st.tuples(st.sampled_from([0x30, 0x31, 0xA0, 0xA3, 0x04]),
                               st.lists(children, max_size=8).map(b"".join)).map(lambda t: _der(*t)),
    max_leaves=30,
).map(lambda tree: _der(0x30, tree))


@settings(max_examples=300, deadline=None)
@given(_DER_TREES)
def test_fuzz_certificate_parsing_of_der_trees(der):
    try:
        parse_certificate(der)
    except CertificateParseError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzz_certificate_parsing_of_damaged_certificates(pki, data):
    der = bytearray(pki.good.der())
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    try:
        parse_certificate(bytes(der[:cut]))
    except CertificateParseError:
        pass


def test_proxy_urls():
    assert Proxy.parse("http://proxy.example:3128/") == Proxy("proxy.example", 3128)
    with_user = Proxy.parse("http://me:s%40cret@10.0.0.1:8080")
    assert with_user.authorization == "Basic bWU6c0BjcmV0" and str(with_user) == "10.0.0.1:8080"
    for bad in ("https://p:1", "http://p", "http://p:1/path", "p:3128", "http://p:99999"):
        with pytest.raises(ValueError):
            Proxy.parse(bad)


def test_the_system_cas_are_read_once_per_check_not_per_gateway(monkeypatch):
    """Reading the CA store takes tens of milliseconds: the check's session reads it once for all gateways."""
    loads = []
    real = ClientContexts._load

    def counted():
        loads.append(1)
        return real()

    monkeypatch.setattr(ClientContexts, "_load", counted)
    targets = Targets(gateways=("127.0.0.1", "127.0.0.2", "127.0.0.3"))
    (run,) = asyncio.run(run_checks([tls_tcp443.CHECK], targets, 5.0))  # nothing listens on 443: refused
    assert len(run.results) == 3 and len(loads) == 1
