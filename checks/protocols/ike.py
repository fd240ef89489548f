"""IKE first messages and strict reading of their answers, on scapy's IKEv2 and ISAKMP layers.

What is sent (RFC 7296 §1.2, RFC 2409 §5): an IKEv2 IKE_SA_INIT request offering the
proposals of an `IkeOffer` (checks/protocols/ike_suites.py; the rule set's `[ike]` table, the
suites an Azure VPN gateway accepts), a real Diffie-Hellman public value for the first offered
group, a nonce, and the NAT_DETECTION notifies (RFC 7296 §2.23) for the addresses and ports
really used; and an IKEv1 Main Mode first message (policy-based gateways speak only IKEv1) with
the offer's transforms, PSK and lifetime. An answer is checked against the offer it answers.

What counts as an answer: any well-formed message for our SPI (cookie in IKEv1) proves an
IKE daemon heard us: an IKE_SA_INIT response, or a notify instead of one
(NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, COOKIE, ...). Parsing is strict: the framing
(header and every payload's length) is walked here first, so that scapy, which is lenient
and warns on stderr, only ever dissects bytes that are known to be well framed; then the
fields it decodes are checked against what the protocol and our request allow. Anything
else raises `IkeParseError` with the reason, never another exception.

This module imports scapy (about 0.6 s), so it is loaded only when an IKE probe runs. Over 500
lines: IKEv2 and IKEv1 share the framing walk, the strict payload checks and the offer, and a
split by version would spread one protocol family's rules over two files.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from scapy.contrib.ikev2 import (
    IKEv2,
    IKEv2_KE,
    IKEv2_Nonce,
    IKEv2_Notify,
    IKEv2_Proposal,
    IKEv2_SA,
    IKEv2_Transform,
    IKEv2NotifyMessageTypes,
    IKEv2TransformAlgorithms,
)
from scapy.layers.isakmp import (
    ISAKMP,
    ISAKMP_payload_Notify,
    ISAKMP_payload_Proposal,
    ISAKMP_payload_SA,
    ISAKMP_payload_Transform,
    ISAKMPTransformNum,
    NotifyMessageType,
)
from scapy.layers.tls.crypto import groups as tls_groups

from checks.protocols.ike_suites import (
    AES_CBC_KEY_BITS,
    IKEV1_HASH,
    IKEV2_INTEGRITY,
    IKEV2_PRF,
    MODP_GROUP_NAMES,
    IkeOffer,
    Ikev1Suite,
    Ikev2Suite,
)

Address = tuple[str, int]

IKE_PORT = 500
NATT_PORT = 4500
NON_ESP_MARKER = b"\0\0\0\0"  # RFC 3948 §2.2: IKE on port 4500 starts with four zero bytes
HEADER_BYTES = 28
SPI_BYTES = 8
NAT_DETECTION_HASH_BYTES = 20  # SHA-1
MAX_PAYLOADS = 64  # far more than any first answer carries; bounds the walk
MAX_PROPOSALS = 64
MAX_TRANSFORMS = 64

# IKEv2 numbers (RFC 7296 §3, IANA "IKEv2 Parameters").
IKE_SA_INIT = 34
FLAG_INITIATOR, FLAG_RESPONSE = 0x08, 0x20
PAYLOAD_NONE, PAYLOAD_SA, PAYLOAD_KE, PAYLOAD_NONCE, PAYLOAD_NOTIFY = 0, 33, 34, 40, 41
PAYLOAD_CERTREQ, PAYLOAD_VENDOR_ID = 38, 43
PROPOSAL_MORE, TRANSFORM_MORE = 2, 3
PROTOCOL_IKE = 1
ENCR, PRF, INTEG, DH = 1, 2, 3, 4
ENCR_AES_CBC = 12
KEY_LENGTH_ATTRIBUTE = 0x800E  # attribute 14 in TV format
NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD = 14, 17
NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP, COOKIE = 16388, 16389, 16390
ERROR_NOTIFY_LIMIT = 16384  # notify types below it are errors (RFC 7296 §3.10.1)
COOKIE_MAX_BYTES = 64
NONCE_MIN_BYTES, NONCE_MAX_BYTES = 16, 256
NONCE_BYTES = 32  # at least half the PRF's key size (RFC 7296 §2.10): SHA-384 needs 24

# IKEv1 numbers (RFC 2408, RFC 2409).
IKEV1_IDENTITY_PROTECTION, IKEV1_INFORMATIONAL = 2, 5
IKEV1_PAYLOAD_SA, IKEV1_PAYLOAD_NOTIFICATION = 1, 11
IKEV1_FLAG_ENCRYPTION = 0x01
DOI_IPSEC, SITUATION_IDENTITY_ONLY = 1, 1


@dataclass(frozen=True)
class ModpGroup:
    number: int
    prime: int
    generator: int = 2

    @property
    def public_value_bytes(self) -> int:
        return (self.prime.bit_length() + 7) // 8

    def public_value(self) -> bytes:
        """g^x mod p for a random x (thrown away: the exchange never gets that far)."""
        secret = secrets.randbits(256) | 1 << 255
        return pow(self.generator, secret, self.prime).to_bytes(self.public_value_bytes, "big")


# The same primes serve TLS and IKE (RFC 2409 §6.2, RFC 3526 §3); scapy keeps them with TLS.
MODP_GROUPS = {number: ModpGroup(number, getattr(tls_groups, prime).m)
               for number, (prime, _) in MODP_GROUP_NAMES.items()}


@dataclass(frozen=True)
class Proposal:
    """One IKE SA suite: AES-CBC with a key size, a PRF, an integrity algorithm, a DH group."""

    number: int
    aes_key_bits: int
    prf: int
    integrity: int
    dh_group: int

    @classmethod
    def of(cls, number: int, suite: Ikev2Suite) -> Proposal:
        return cls(number, AES_CBC_KEY_BITS[suite.encryption], IKEV2_PRF[suite.prf],
                   IKEV2_INTEGRITY[suite.integrity], suite.dh_group)

    def describe(self) -> str:
        return "/".join((f"AES-CBC-{self.aes_key_bits}", IKEv2TransformAlgorithms[PRF][self.prf],
                         IKEv2TransformAlgorithms[INTEG][self.integrity],
                         IKEv2TransformAlgorithms[DH][self.dh_group]))


def offered_proposals(offer: IkeOffer) -> tuple[Proposal, ...]:
    """The offer's IKEv2 suites as numbered proposals, in its order (RFC 7296 §3.3.1: numbered from 1)."""
    return tuple(Proposal.of(number, suite) for number, suite in enumerate(offer.ikev2, start=1))


class IkeParseError(ValueError):
    """The bytes are not a well-formed IKE message of the kind expected (the message says why)."""


class AnswerKind(enum.StrEnum):
    IKE_SA_INIT_RESPONSE = "ike_sa_init_response"  # IKEv2: the responder took a proposal
    MAIN_MODE_RESPONSE = "main_mode_response"  # IKEv1: the responder took a transform
    NOTIFY = "notify"  # an error notify (or COOKIE) instead of a response


@dataclass(frozen=True)
class IkeAnswer:
    version: int  # 1 or 2
    kind: AnswerKind
    responder_spi: bytes  # IKEv1: the responder cookie; all zero when the responder kept no state
    notify_type: int | None = None
    notify: str | None = None  # the notify type's name, e.g. "NO_PROPOSAL_CHOSEN"
    chosen_proposal: str | None = None
    requested_group: int | None = None  # INVALID_KE_PAYLOAD: the DH group the responder wants
    cookie: bytes | None = None  # COOKIE: to be echoed in the retried request
    nat_detection_source: tuple[bytes, ...] = ()
    nat_detection_destination: bytes | None = None


# ---------------------------------------------------------------------------------------
# NAT detection (RFC 7296 §2.23)


def nat_detection_hash(spi_i: bytes, spi_r: bytes, ip: str, port: int) -> bytes:
    """SHA-1 of the SPIs as they appear in the header, the IPv4 address and the port."""
    return hashlib.sha1(spi_i + spi_r + ipaddress.IPv4Address(ip).packed + struct.pack("!H", port)).digest()


@dataclass(frozen=True)
class NatVerdict:
    """What the responder's NAT_DETECTION hashes say; None where it sent none."""

    nat_before_us: bool | None  # the responder saw our packet come from another address or port
    nat_before_responder: bool | None  # the responder sent from an address or port other than we sent to


def nat_verdict(answer: IkeAnswer, spi_i: bytes, local: Address, remote: Address) -> NatVerdict:
    """Compare the responder's hashes with those of the addresses and ports we really used."""
    if answer.kind is not AnswerKind.IKE_SA_INIT_RESPONSE:
        return NatVerdict(None, None)
    before_us = None
    if answer.nat_detection_destination is not None:
        ours = nat_detection_hash(spi_i, answer.responder_spi, *local)
        before_us = answer.nat_detection_destination != ours
    before_responder = None
    if answer.nat_detection_source:
        theirs = nat_detection_hash(spi_i, answer.responder_spi, *remote)
        before_responder = theirs not in answer.nat_detection_source
    return NatVerdict(before_us, before_responder)


# ---------------------------------------------------------------------------------------
# requests


@dataclass(frozen=True)
class IkeSaInit:
    """An IKEv2 IKE_SA_INIT request as sent from `local` to `remote`."""

    spi: bytes
    local: Address
    remote: Address
    natt: bool
    offer: IkeOffer
    dh_group: int
    public_value: bytes
    nonce: bytes
    cookie: bytes | None  # the responder's COOKIE this request echoes
    datagram: bytes  # what goes into the UDP payload (with the non-ESP marker on NAT-T)

    @classmethod
    def build(cls, local: Address, remote: Address, *, natt: bool, offer: IkeOffer, dh_group: int | None = None,
              cookie: bytes | None = None, spi: bytes | None = None, public_value: bytes | None = None,
              nonce: bytes | None = None) -> IkeSaInit:
        """The request; its KE is for `dh_group`, by default the offer's first."""
        if dh_group is None:
            dh_group = offer.ikev2_groups[0]
        if dh_group not in offer.ikev2_groups:
            raise ValueError(f"DH group {dh_group} is not among the offered {offer.ikev2_groups}")
        spi = spi or _nonzero_random(SPI_BYTES)
        public_value = public_value or MODP_GROUPS[dh_group].public_value()
        nonce = nonce or os.urandom(NONCE_BYTES)
        no_spi = bytes(SPI_BYTES)  # RFC 7296 §2.23: the request's hashes take the responder SPI as zero
        payloads = []
        if cookie is not None:  # RFC 7296 §2.6: the COOKIE notify comes first
            payloads.append(IKEv2_Notify(type=COOKIE, notify=cookie))
        payloads += [
            IKEv2_SA(prop=_ikev2_proposals(offer)),
            IKEv2_KE(group=dh_group, ke=public_value),
            IKEv2_Nonce(nonce=nonce),
            IKEv2_Notify(type=NAT_DETECTION_SOURCE_IP, notify=nat_detection_hash(spi, no_spi, *local)),
            IKEv2_Notify(type=NAT_DETECTION_DESTINATION_IP, notify=nat_detection_hash(spi, no_spi, *remote)),
        ]
        message = IKEv2(init_SPI=spi, resp_SPI=no_spi, exch_type=IKE_SA_INIT, flags=FLAG_INITIATOR, id=0)
        message = _chain(message, payloads)
        return cls(spi, local, remote, natt, offer, dh_group, public_value, nonce, cookie,
                   (NON_ESP_MARKER if natt else b"") + bytes(message))

    def with_cookie(self, cookie: bytes) -> IkeSaInit:
        """The same request with the responder's COOKIE first: RFC 7296 §2.6 wants all else unchanged
        (the cookie may cover our SPI, nonce and address)."""
        return self.build(self.local, self.remote, natt=self.natt, offer=self.offer, dh_group=self.dh_group,
                          cookie=cookie, spi=self.spi, public_value=self.public_value, nonce=self.nonce)

    def with_group(self, dh_group: int) -> IkeSaInit:
        """The same request with a KE for the group an INVALID_KE_PAYLOAD asked for: RFC 7296 §2.6's
        example keeps SPI, nonce and any COOKIE (which may cover them) and changes the KE alone."""
        return self.build(self.local, self.remote, natt=self.natt, offer=self.offer, dh_group=dh_group,
                          cookie=self.cookie, spi=self.spi, nonce=self.nonce)

    def parse_answer(self, datagram: bytes) -> IkeAnswer:
        return parse_ikev2_answer(datagram, self.spi, natt=self.natt, offer=self.offer)


@dataclass(frozen=True)
class MainModeRequest:
    """An IKEv1 Main Mode first message."""

    spi: bytes  # the initiator cookie, IKEv1's SPI
    datagram: bytes
    offer: IkeOffer
    cookie: None = None  # IKEv1 has no COOKIE notify

    @property
    def dh_group(self) -> int:
        """The first (preferred) transform's group; Main Mode's KE comes only in the third message."""
        return self.offer.ikev1[0].dh_group

    @classmethod
    def build(cls, *, offer: IkeOffer, spi: bytes | None = None) -> MainModeRequest:
        spi = spi or _nonzero_random(SPI_BYTES)
        transforms = [
            ISAKMP_payload_Transform(
                next_payload=TRANSFORM_MORE if number < len(offer.ikev1) else PAYLOAD_NONE,
                transform_count=number, transform_id=1,
                transforms=[*zip(_IKEV1_ATTRIBUTES, _ikev1_transform(suite)), ("LifeType", "Seconds"),
                            ("LifeDuration", offer.lifetime_seconds)])
            for number, suite in enumerate(offer.ikev1, start=1)
        ]
        proposal = ISAKMP_payload_Proposal(proposal=1, proto=PROTOCOL_IKE, trans_nb=len(transforms),
                                           trans=_stack(transforms))
        message = ISAKMP(init_cookie=spi, resp_cookie=bytes(SPI_BYTES), next_payload=IKEV1_PAYLOAD_SA,
                         exch_type=IKEV1_IDENTITY_PROTECTION) / ISAKMP_payload_SA(
            next_payload=PAYLOAD_NONE, doi=DOI_IPSEC, situation=SITUATION_IDENTITY_ONLY, prop=proposal)
        return cls(spi, bytes(message), offer)

    def parse_answer(self, datagram: bytes) -> IkeAnswer:
        return parse_ikev1_answer(datagram, self.spi, offer=self.offer)


# The attributes that tell a Main Mode transform apart, as scapy names them; a chosen one is read back by them.
_IKEV1_ATTRIBUTES = ("Encryption", "KeyLength", "Hash", "Authentication", "GroupDesc")


def _ikev1_transform(suite: Ikev1Suite) -> tuple[object, ...]:
    """The values of _IKEV1_ATTRIBUTES for one suite: AES-CBC, pre-shared key."""
    return ("AES-CBC", AES_CBC_KEY_BITS[suite.encryption], IKEV1_HASH[suite.hash], "PSK",
            MODP_GROUP_NAMES[suite.dh_group][1])


def _nonzero_random(size: int) -> bytes:
    while True:
        value = os.urandom(size)
        if any(value):  # an all-zero initiator SPI is invalid (RFC 7296 §3.1)
            return value


def _ikev2_proposals(offer: IkeOffer) -> IKEv2_Proposal:
    proposals = []
    for proposal in offered_proposals(offer):
        transforms = [
            IKEv2_Transform(transform_type=ENCR, transform_id=ENCR_AES_CBC, length=12,
                            key_length=proposal.aes_key_bits),
            IKEv2_Transform(transform_type=PRF, transform_id=proposal.prf),
            IKEv2_Transform(transform_type=INTEG, transform_id=proposal.integrity),
            IKEv2_Transform(transform_type=DH, transform_id=proposal.dh_group),
        ]
        for transform in transforms[:-1]:
            transform.next_payload = TRANSFORM_MORE
        transforms[-1].next_payload = PAYLOAD_NONE
        proposals.append(IKEv2_Proposal(proposal=proposal.number, proto=PROTOCOL_IKE, trans_nb=len(transforms),
                                        trans=_stack(transforms)))
    for proposal in proposals[:-1]:
        proposal.next_payload = PROPOSAL_MORE
    proposals[-1].next_payload = PAYLOAD_NONE
    return _stack(proposals)


def _stack(layers):  # scapy's `/` over a list
    stacked = layers[0]
    for layer in layers[1:]:
        stacked = stacked / layer
    return stacked


def _chain(header, payloads):
    """Stack payloads behind a header; scapy's bindings make each name the next one's type."""
    payloads[-1].next_payload = PAYLOAD_NONE
    return _stack([header, *payloads])


# ---------------------------------------------------------------------------------------
# framing: the generic payload header is the same in IKEv1 and IKEv2


@dataclass(frozen=True)
class RawPayload:
    kind: int
    critical: bool  # IKEv2 only; IKEv1's byte is reserved
    data: bytes  # the whole payload, generic header included


def _walk(message: bytes, first: int, *, version: int) -> Iterator[RawPayload]:
    """Each payload of the chain; IkeParseError unless it ends exactly at the message's end."""
    kind, offset, count = first, HEADER_BYTES, 0
    while kind != PAYLOAD_NONE:
        count += 1
        if count > MAX_PAYLOADS:
            raise IkeParseError(f"more than {MAX_PAYLOADS} payloads")
        if offset + 4 > len(message):
            raise IkeParseError(f"payload {count} (type {kind}) starts past the end of the message")
        following, flags, length = struct.unpack_from("!BBH", message, offset)
        if length < 4 or offset + length > len(message):
            raise IkeParseError(f"payload {count} (type {kind}) claims {length} bytes, "
                                f"{len(message) - offset} remain")
        if version == 2 and flags & 0x7F:
            raise IkeParseError(f"payload {count} (type {kind}) sets reserved flag bits {flags:#04x}")
        yield RawPayload(kind, bool(flags & 0x80) and version == 2, message[offset:offset + length])
        kind, offset = following, offset + length
    if offset != len(message):
        raise IkeParseError(f"{len(message) - offset} bytes after the last payload")


def _header(datagram: bytes, natt: bool) -> bytes:
    """The IKE message in a datagram (the non-ESP marker checked and removed on NAT-T)."""
    if natt:
        if datagram[:4] != NON_ESP_MARKER:
            raise IkeParseError("no non-ESP marker: not IKE on the NAT-T port (ESP or junk)")
        datagram = datagram[4:]
    if len(datagram) < HEADER_BYTES:
        raise IkeParseError(f"{len(datagram)} bytes are shorter than an IKE header ({HEADER_BYTES})")
    declared = struct.unpack_from("!I", datagram, 24)[0]
    if declared != len(datagram):
        raise IkeParseError(f"header says {declared} bytes, the datagram holds {len(datagram)}")
    return datagram


def _dissect(cls, payload: RawPayload):
    """Let scapy decode one well-framed payload, and insist that it read exactly those bytes."""
    try:
        layer = cls(payload.data)
    except Exception as exc:  # scapy raises whatever its fields raise on bytes they dislike
        raise IkeParseError(f"{cls.__name__}: {exc}") from None
    if len(layer) - len(layer.payload) != len(payload.data) or layer.payload:
        raise IkeParseError(f"{cls.__name__} does not fill its {len(payload.data)} bytes")
    return layer


# ---------------------------------------------------------------------------------------
# IKEv2 answers


def parse_ikev2_answer(datagram: bytes, spi: bytes, *, natt: bool, offer: IkeOffer) -> IkeAnswer:
    """An answer to our IKE_SA_INIT with initiator SPI `spi` offering `offer`, checked strictly."""
    message = _header(datagram, natt)
    spi_i, spi_r, first, version, exchange, flags, message_id = struct.unpack_from("!8s8sBBBBI", message)
    if version >> 4 != 2:
        raise IkeParseError(f"IKE version {version >> 4}.{version & 15} answered an IKEv2 request")
    if spi_i != spi:
        raise IkeParseError(f"initiator SPI {spi_i.hex()} is not ours ({spi.hex()})")
    if exchange != IKE_SA_INIT:
        raise IkeParseError(f"exchange type {exchange} is not IKE_SA_INIT ({IKE_SA_INIT})")
    if flags & (FLAG_RESPONSE | FLAG_INITIATOR) != FLAG_RESPONSE:
        raise IkeParseError(f"flags {flags:#04x}: not a response from the responder")
    if message_id != 0:
        raise IkeParseError(f"message ID {message_id}, IKE_SA_INIT's is 0")
    payloads = list(_walk(message, first, version=2))
    notifies = [_notify(p) for p in payloads if p.kind == PAYLOAD_NOTIFY]
    for p in payloads:
        if p.kind not in _IKE_SA_INIT_PAYLOADS and p.critical:
            raise IkeParseError(f"unsupported critical payload type {p.kind}")
    errors = [n for n in notifies if n.type < ERROR_NOTIFY_LIMIT]
    if errors:
        return _error_answer(spi_r, errors[0])
    cookies = [n for n in notifies if n.type == COOKIE]
    if cookies:
        cookie = bytes(cookies[0].notify)
        if not 1 <= len(cookie) <= COOKIE_MAX_BYTES:
            raise IkeParseError(f"COOKIE of {len(cookie)} bytes (1 to {COOKIE_MAX_BYTES} allowed)")
        return IkeAnswer(2, AnswerKind.NOTIFY, spi_r, COOKIE, "COOKIE", cookie=cookie)
    return _ike_sa_init_response(spi_r, payloads, notifies, offer)


# Payload types an IKE_SA_INIT response may carry; others break the exchange (RFC 7296 §1.2).
_IKE_SA_INIT_PAYLOADS = {PAYLOAD_SA, PAYLOAD_KE, PAYLOAD_NONCE, PAYLOAD_NOTIFY, PAYLOAD_CERTREQ, PAYLOAD_VENDOR_ID}
_KNOWN_IKEV2_PAYLOADS = set(range(33, 55))


def _notify(payload: RawPayload) -> IKEv2_Notify:
    if len(payload.data) < 8:
        raise IkeParseError(f"Notify payload of {len(payload.data)} bytes (at least 8)")
    spi_size = payload.data[5]
    if 8 + spi_size > len(payload.data):
        raise IkeParseError(f"Notify SPI of {spi_size} bytes does not fit")
    notify = _dissect(IKEv2_Notify, payload)
    if notify.type in (NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP) \
            and len(notify.notify) != NAT_DETECTION_HASH_BYTES:
        raise IkeParseError(f"{_ikev2_notify_name(notify.type)} of {len(notify.notify)} bytes "
                            f"(SHA-1: {NAT_DETECTION_HASH_BYTES})")
    return notify


def _ikev2_notify_name(notify_type: int) -> str:
    return IKEv2NotifyMessageTypes.get(notify_type, f"notify type {notify_type}")


def _error_answer(spi_r: bytes, notify: IKEv2_Notify) -> IkeAnswer:
    requested = None
    if notify.type == INVALID_KE_PAYLOAD:
        data = bytes(notify.notify)
        if len(data) != 2:
            raise IkeParseError(f"INVALID_KE_PAYLOAD carries {len(data)} bytes, not a 2-byte DH group")
        requested = struct.unpack("!H", data)[0]
    return IkeAnswer(2, AnswerKind.NOTIFY, spi_r, notify.type, _ikev2_notify_name(notify.type),
                     requested_group=requested)


def _ike_sa_init_response(spi_r: bytes, payloads: list[RawPayload], notifies: list[IKEv2_Notify],
                          offer: IkeOffer) -> IkeAnswer:
    if not any(spi_r):
        raise IkeParseError("an IKE_SA_INIT response with a zero responder SPI")
    kinds = [p.kind for p in payloads]
    for required, name in ((PAYLOAD_SA, "SA"), (PAYLOAD_KE, "KE"), (PAYLOAD_NONCE, "Nonce")):
        if kinds.count(required) != 1:
            raise IkeParseError(f"an IKE_SA_INIT response needs one {name} payload, it has {kinds.count(required)}")
    for p in payloads:
        if p.kind not in _IKE_SA_INIT_PAYLOADS and p.kind in _KNOWN_IKEV2_PAYLOADS:
            raise IkeParseError(f"payload type {p.kind} has no place in an IKE_SA_INIT response")
    proposal = _chosen_proposal(next(p for p in payloads if p.kind == PAYLOAD_SA), offer)
    ke = _dissect(IKEv2_KE, next(p for p in payloads if p.kind == PAYLOAD_KE))
    if ke.group != proposal.dh_group:
        raise IkeParseError(f"KE for DH group {ke.group}, the chosen proposal has group {proposal.dh_group}")
    if len(ke.ke) != MODP_GROUPS[proposal.dh_group].public_value_bytes:
        raise IkeParseError(f"KE of {len(ke.ke)} bytes for DH group {ke.group}")
    nonce = _dissect(IKEv2_Nonce, next(p for p in payloads if p.kind == PAYLOAD_NONCE))
    if not NONCE_MIN_BYTES <= len(nonce.nonce) <= NONCE_MAX_BYTES:
        raise IkeParseError(f"nonce of {len(nonce.nonce)} bytes ({NONCE_MIN_BYTES} to {NONCE_MAX_BYTES} allowed)")
    sources = tuple(bytes(n.notify) for n in notifies if n.type == NAT_DETECTION_SOURCE_IP)
    destinations = [bytes(n.notify) for n in notifies if n.type == NAT_DETECTION_DESTINATION_IP]
    if len(destinations) > 1:
        raise IkeParseError(f"{len(destinations)} NAT_DETECTION_DESTINATION_IP notifies (at most one)")
    return IkeAnswer(2, AnswerKind.IKE_SA_INIT_RESPONSE, spi_r, chosen_proposal=proposal.describe(),
                     nat_detection_source=sources,
                     nat_detection_destination=destinations[0] if destinations else None)


def _chosen_proposal(payload: RawPayload, offer: IkeOffer) -> Proposal:
    """The one proposal of a response's SA payload; it must be one we offered, unchanged."""
    sa = _dissect(IKEv2_SA, payload)
    proposals = _chain_of(sa.prop, IKEv2_Proposal, PROPOSAL_MORE, len(payload.data) - 4, MAX_PROPOSALS, "proposal")
    if len(proposals) != 1:
        raise IkeParseError(f"the SA payload holds {len(proposals)} proposals; a response holds one")
    proposal = proposals[0]
    if proposal.proto != PROTOCOL_IKE or proposal.SPIsize != 0:
        raise IkeParseError(f"proposal for protocol {proposal.proto} with a {proposal.SPIsize}-byte SPI, "
                            "not an IKE SA")
    transforms = _chain_of(proposal.trans, IKEv2_Transform, TRANSFORM_MORE, proposal.length - 8, MAX_TRANSFORMS,
                           "transform")
    if len(transforms) != proposal.trans_nb:
        raise IkeParseError(f"proposal says {proposal.trans_nb} transforms, holds {len(transforms)}")
    chosen: dict[int, tuple[int, int | None]] = {}
    for transform in transforms:
        if transform.transform_type in chosen:
            raise IkeParseError(f"two transforms of type {transform.transform_type} in the chosen proposal")
        key_bits = None
        if transform.length == 12:
            if struct.unpack_from("!H", bytes(transform), 8)[0] != KEY_LENGTH_ATTRIBUTE:
                raise IkeParseError("a transform attribute other than Key Length")
            key_bits = transform.key_length
        elif transform.length != 8:
            raise IkeParseError(f"transform of {transform.length} bytes")
        chosen[transform.transform_type] = (transform.transform_id, key_bits)
    offered = {p.number: p for p in offered_proposals(offer)}.get(proposal.proposal)
    if offered is None or chosen != {ENCR: (ENCR_AES_CBC, offered.aes_key_bits), PRF: (offered.prf, None),
                                     INTEG: (offered.integrity, None), DH: (offered.dh_group, None)}:
        raise IkeParseError(f"the chosen proposal {proposal.proposal} ({chosen}) is not one we offered")
    return offered


def _chain_of(first, cls, more: int, expected_bytes: int, limit: int, what: str) -> list:
    """A proposal or transform chain as scapy read it, with every length checked against the bytes."""
    items, total, item = [], 0, first
    while True:
        if not isinstance(item, cls):
            raise IkeParseError(f"{what} {len(items) + 1} is not a well-formed {what}")
        if len(items) >= limit:
            raise IkeParseError(f"more than {limit} {what}s")
        if item.length is None or item.length < 8:
            raise IkeParseError(f"{what} {len(items) + 1} claims {item.length} bytes")
        items.append(item)
        total += item.length
        if item.next_payload == PAYLOAD_NONE:
            break
        if item.next_payload != more:
            raise IkeParseError(f"{what} {len(items)} is followed by type {item.next_payload}")
        item = item.payload
    if total != expected_bytes or item.payload:
        raise IkeParseError(f"{what}s take {total} bytes of {expected_bytes}")
    return items


# ---------------------------------------------------------------------------------------
# IKEv2 requests (the responder's side)


def parse_ike_sa_init_request(datagram: bytes, *, natt: bool) -> bytes:
    """The initiator SPI of a well-formed IKE_SA_INIT request; IkeParseError otherwise."""
    message = _header(datagram, natt)
    spi_i, spi_r, first, version, exchange, flags, message_id = struct.unpack_from("!8s8sBBBBI", message)
    if version >> 4 != 2 or exchange != IKE_SA_INIT or message_id != 0:
        raise IkeParseError("not an IKEv2 IKE_SA_INIT")
    if flags & (FLAG_RESPONSE | FLAG_INITIATOR) != FLAG_INITIATOR or any(spi_r) or not any(spi_i):
        raise IkeParseError("not a first request from an initiator")
    kinds = [p.kind for p in _walk(message, first, version=2)]
    if not {PAYLOAD_SA, PAYLOAD_KE, PAYLOAD_NONCE} <= set(kinds):
        raise IkeParseError("an IKE_SA_INIT request needs SA, KE and Nonce payloads")
    return spi_i


def no_proposal_chosen(spi_i: bytes, *, natt: bool) -> bytes:
    """An IKE_SA_INIT answer that refuses every proposal: 36 bytes (40 on NAT-T), no state kept."""
    message = IKEv2(init_SPI=spi_i, resp_SPI=bytes(SPI_BYTES), exch_type=IKE_SA_INIT, flags=FLAG_RESPONSE,
                    id=0) / IKEv2_Notify(next_payload=PAYLOAD_NONE, type=NO_PROPOSAL_CHOSEN)
    return (NON_ESP_MARKER if natt else b"") + bytes(message)


# ---------------------------------------------------------------------------------------
# IKEv1


def _ikev1_header(datagram: bytes, cookie: bytes | None) -> tuple[bytes, bytes, int, int, int]:
    message = _header(datagram, natt=False)
    cookie_i, cookie_r, first, version, exchange, flags, _message_id = struct.unpack_from("!8s8sBBBBI", message)
    if version >> 4 != 1:
        raise IkeParseError(f"IKE version {version >> 4}.{version & 15} answered an IKEv1 request")
    if cookie is not None and cookie_i != cookie:
        raise IkeParseError(f"initiator cookie {cookie_i.hex()} is not ours ({cookie.hex()})")
    if flags & IKEV1_FLAG_ENCRYPTION:
        raise IkeParseError("an encrypted message cannot answer a first Main Mode message")
    return message, cookie_r, first, exchange, cookie_i


def parse_ikev1_answer(datagram: bytes, cookie: bytes, *, offer: IkeOffer) -> IkeAnswer:
    """An answer to our Main Mode first message offering `offer`: the second one, or a notification."""
    message, cookie_r, first, exchange, _ = _ikev1_header(datagram, cookie)
    payloads = list(_walk(message, first, version=1))
    kinds = [p.kind for p in payloads]
    if exchange == IKEV1_INFORMATIONAL:
        if kinds.count(IKEV1_PAYLOAD_NOTIFICATION) != 1:
            raise IkeParseError(f"an informational message with payloads {kinds}, not one notification")
        notification = next(p for p in payloads if p.kind == IKEV1_PAYLOAD_NOTIFICATION)
        if len(notification.data) < 12 or 12 + notification.data[9] > len(notification.data):
            raise IkeParseError(f"notification payload of {len(notification.data)} bytes")
        notify = _dissect(ISAKMP_payload_Notify, notification)
        name = NotifyMessageType.get(notify.notify_msg_type, f"notify type {notify.notify_msg_type}")
        return IkeAnswer(1, AnswerKind.NOTIFY, cookie_r, notify.notify_msg_type, name)
    if exchange != IKEV1_IDENTITY_PROTECTION:
        raise IkeParseError(f"exchange type {exchange} answers neither Main Mode nor with a notification")
    if not kinds or kinds[0] != IKEV1_PAYLOAD_SA or kinds.count(IKEV1_PAYLOAD_SA) != 1:
        raise IkeParseError(f"a Main Mode answer must start with its one SA payload, it has {kinds}")
    if not any(cookie_r):
        raise IkeParseError("a Main Mode answer with a zero responder cookie")
    return IkeAnswer(1, AnswerKind.MAIN_MODE_RESPONSE, cookie_r,
                     chosen_proposal=_chosen_transform(payloads[0], offer))


def _chosen_transform(payload: RawPayload, offer: IkeOffer) -> str:
    """The one transform of a Main Mode answer's SA; it must be one we offered."""
    data = payload.data
    # Framing first (SA: 12 bytes; proposal: 8 + SPI; transform: 8 + attributes): scapy warns on bad lengths.
    if len(data) < 12 + 8 or data[12] != PAYLOAD_NONE or struct.unpack_from("!H", data, 14)[0] != len(data) - 12 \
            or data[19] != 1:
        raise IkeParseError("the SA payload must hold one proposal with one transform, and nothing else")
    transform = data[20 + data[18]:]
    if len(transform) < 8 or transform[0] != PAYLOAD_NONE \
            or struct.unpack_from("!H", transform, 2)[0] != len(transform):
        raise IkeParseError("the proposal's transform does not fill it")
    attributes = _ikev1_attributes(transform[8:])
    sa = _dissect(ISAKMP_payload_SA, payload)
    if sa.doi != DOI_IPSEC or not isinstance(sa.prop, ISAKMP_payload_Proposal) or sa.prop.proto != PROTOCOL_IKE:
        raise IkeParseError(f"SA for DOI {sa.doi}, not an ISAKMP proposal for IPsec")
    key = tuple(attributes.get(a) for a in _IKEV1_ATTRIBUTES)
    if key not in {_ikev1_transform(suite) for suite in offer.ikev1}:
        raise IkeParseError(f"the chosen transform {attributes} is not one we offered")
    return f"AES-CBC-{key[1]}/{key[2]}/PSK/{key[4]}"


def _ikev1_attributes(data: bytes) -> dict[str, object]:
    """RFC 2408 §3.3 data attributes (TV or TLV), named as scapy names them."""
    attributes: dict[str, object] = {}
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise IkeParseError("a truncated transform attribute")
        kind, value = struct.unpack_from("!HH", data, offset)
        offset += 4
        if not kind & 0x8000:  # TLV: `value` is the length
            if offset + value > len(data):
                raise IkeParseError("a transform attribute runs past its transform")
            value, offset = int.from_bytes(data[offset:offset + value], "big"), offset + value
        name, values, _ = ISAKMPTransformNum.get(kind & 0x7FFF, (f"attribute {kind & 0x7FFF}", {}, 0))
        attributes[name] = values.get(value, value)
    return attributes


def parse_main_mode_request(datagram: bytes) -> bytes:
    """The initiator cookie of a well-formed first Main Mode message; IkeParseError otherwise."""
    message, cookie_r, first, exchange, cookie_i = _ikev1_header(datagram, None)
    if exchange != IKEV1_IDENTITY_PROTECTION or any(cookie_r) or not any(cookie_i):
        raise IkeParseError("not a first Main Mode message")
    kinds = [p.kind for p in _walk(message, first, version=1)]
    if not kinds or kinds[0] != IKEV1_PAYLOAD_SA:
        raise IkeParseError("a first Main Mode message starts with an SA payload")
    return cookie_i


def ikev1_no_proposal_chosen(cookie_i: bytes) -> bytes:
    """An informational notification NO-PROPOSAL-CHOSEN: 40 bytes, no state kept."""
    message = ISAKMP(init_cookie=cookie_i, resp_cookie=bytes(SPI_BYTES), next_payload=IKEV1_PAYLOAD_NOTIFICATION,
                     exch_type=IKEV1_INFORMATIONAL) / ISAKMP_payload_Notify(
        next_payload=PAYLOAD_NONE, doi=DOI_IPSEC, proto=PROTOCOL_IKE, notify_msg_type=NO_PROPOSAL_CHOSEN)
    return bytes(message)
