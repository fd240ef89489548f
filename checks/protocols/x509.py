"""X.509 certificates (DER), read as far as a report describes them (no I/O).

Subject, issuer, subjectAltName and validity of the leaf a TLS handshake showed (RFC 5280
§4.1, §4.2.1.6), and whether it names a host (RFC 6125: SANs; the CN only when there are
none). Parsed strictly and within the DER's own bounds: garbage gives `CertificateParseError`,
nothing else. Only the standard library: the `cryptography` package is not a runtime dependency.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any


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
