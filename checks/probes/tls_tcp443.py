"""TLS on TCP 443 to every gateway: connect and handshake times, the certificate, and interception.

SSTP rides on this TLS session, and a middlebox that terminates TLS and re-signs it breaks
SSTP (the client's crypto binding covers the certificate it saw). Interception is judged
conservatively, only from evidence that points at a re-signer (see `interception_evidence`);
an untrusted certificate alone (a self-signed responder, an expired gateway) is reported as
such, not as interception.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.transport.addressing import is_ip_literal
from checks.transport.tls_client import TlsEvidence, contexts_session, UNKNOWN_ISSUER_VERIFY_CODES, TlsSession, probe_target

PORT = 443


@dataclass(frozen=True)
class CertificateEvidence:
    sni: str | None
    certificate: Mapping[str, Any] | None
    fingerprint_expected: str | None
    fingerprint_matches: bool | None
    interception_suspected: bool | None
    interception_evidence: tuple[str, ...]


@dataclass(frozen=True)
class TlsCertificateEvidence(TlsEvidence):
    exchange: CertificateEvidence | None = None


def interception_evidence(gateway: str, session: TlsSession, expected_sha256: str | None) -> list[str]:
    """Why a middlebox is suspected of re-signing TLS toward `gateway`; empty when nothing says so.

    Two signs count: a certificate other than the one the user pinned, and a leaf that names
    the gateway (as a re-signer's does: it copies the name asked for) but is issued by a
    CA this host does not trust while not being self-issued (as a re-signer's is not: it
    chains to the middlebox's own CA). A middlebox whose CA this host trusts is caught
    only by the pinned fingerprint.
    """
    certificate, evidence = session.certificate, []
    if certificate is None:
        return evidence
    if expected_sha256 and certificate.sha256 != expected_sha256:
        evidence.append(f"fingerprint mismatch: SHA-256 {certificate.sha256}, expected {expected_sha256}"
                        f" (issuer {certificate.issuer!r}"
                        + ("" if certificate.covers(gateway) else f", and it does not name {gateway}") + ")")
    if session.verify_code in UNKNOWN_ISSUER_VERIFY_CODES and certificate.covers(gateway) \
            and not certificate.self_issued:
        evidence.append(f"unexpected issuer: the certificate names {gateway} but its issuer {certificate.issuer!r}"
                        f" is not trusted by this host's CAs ({session.verify_error})")
    return evidence


async def _describe(ctx: CheckContext, gateway: str, session: TlsSession) -> tuple[Reason, str, CertificateEvidence]:
    certificate = session.certificate
    expected_sha256 = _normalised(ctx.targets.gateway_fingerprint)
    suspicion = interception_evidence(gateway, session, expected_sha256)
    matches = certificate.sha256 == expected_sha256 if expected_sha256 and certificate else None
    own = CertificateEvidence(
        sni=None if is_ip_literal(gateway) else gateway,  # Python sends no SNI for an IP address
        certificate=certificate.evidence(dt.datetime.now(dt.UTC)) if certificate else None,
        fingerprint_expected=expected_sha256,
        fingerprint_matches=matches,
        interception_suspected=bool(suspicion) if certificate else None,
        interception_evidence=tuple(suspicion),
    )
    parts = [f"{session.tls_version}, {session.cipher}"]
    if session.chain_verified and certificate and certificate.covers(gateway):
        parts.append("certificate verifies")
    else:
        parts.append(f"certificate does not verify: {session.verify_error or f'it does not name {gateway}'}")
    if matches is not None:
        parts.append("fingerprint matches" if matches else "fingerprint differs")
    if suspicion:
        parts.append("TLS interception suspected")
    return Reason.SUCCESS, "; ".join(parts), own


def _normalised(fingerprint: str | None) -> str | None:
    return fingerprint.replace(":", "").strip().lower() if fingerprint else None


async def probe(ctx: CheckContext, port: int = PORT) -> Outcome:
    return await probe_target(ctx, port, _describe, TlsCertificateEvidence)


CHECK = Check(
    name="tls_tcp443",
    summary="TLS on TCP 443 to each gateway: handshake, certificate, chain, fingerprint, interception",
    scope=Scope.GATEWAY,
    session=contexts_session,
    evidence=TlsCertificateEvidence,
    probe=probe,
)
