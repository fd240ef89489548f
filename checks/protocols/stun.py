"""Strict, bounded STUN message codec (no I/O).

Wire format, from RFC 8489 (STUN):
  * §5: 20-byte header, the two leading zero bits, the magic cookie and the
    interleaved method/class bits of the 14-bit message type;
  * §14: attribute TLVs padded to 4 bytes, the comprehension-required range
    0x0000-0x7FFF, and "only the first occurrence needs to be processed";
  * §14.1 / §14.2: MAPPED-ADDRESS and XOR-MAPPED-ADDRESS (also the layout of
    every other address attribute);
  * §14.5 / §14.6 / §14.7: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT, and which attributes may follow them;
  * §14.8: ERROR-CODE; §14.14: SOFTWARE.
From RFC 5780 (NAT behaviour discovery): CHANGE-REQUEST (§7.2),
RESPONSE-ORIGIN (§7.3), OTHER-ADDRESS (§7.4), RESPONSE-PORT (§7.5) and
PADDING (§7.6). SOURCE-ADDRESS and CHANGED-ADDRESS come from RFC 3489 §11.2,
because classic NAT-test servers still send them.

Receiving policy of `parse_message`:
  * anything malformed raises `StunParseError` and nothing else;
  * attributes after MESSAGE-INTEGRITY (other than MESSAGE-INTEGRITY-SHA256)
    or after MESSAGE-INTEGRITY-SHA256 (other than FINGERPRINT) are kept in
    `StunMessage.attributes` as they came, but are not decoded, validated
    or listed as unknown: RFC 8489 §14.5/§14.6 tell receivers to ignore them;
  * only the first occurrence of a decoded attribute is decoded (and so
    validated); later duplicates stay raw;
  * MESSAGE-INTEGRITY values are length-checked but not verified: that needs
    credentials, which this codec does not hold.
"""

from __future__ import annotations

import enum
import ipaddress
import secrets
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
MAX_MESSAGE_BYTES = 1500
BINDING = 0x001

TRANSACTION_ID_LENGTH = 12
CHANGE_IP = 0x04
CHANGE_PORT = 0x02

_FINGERPRINT_XOR = 0x5354554E
_MAX_SOFTWARE_BYTES = 763  # §14.14: fewer than 128 characters, "as long as 763 bytes"
_MAX_SOFTWARE_CHARACTERS = 128
SOFTWARE_NAME = "xcheck"
_ADDRESS_VALUE_BYTES = {4: 8, 6: 20}  # family, port and address (§14.1)
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")


class MessageClass(enum.IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS_RESPONSE = 0b10
    ERROR_RESPONSE = 0b11


class Attribute(enum.IntEnum):
    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    SOURCE_ADDRESS = 0x0004  # RFC 3489
    CHANGED_ADDRESS = 0x0005  # RFC 3489
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    CACHE_TIMEOUT = 0x8027
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


_KNOWN_TYPES = frozenset(int(a) for a in Attribute)
# §14.5: after MESSAGE-INTEGRITY only these still count; §14.6: after
# MESSAGE-INTEGRITY-SHA256 nothing does. FINGERPRINT is handled on its own.
_STILL_PROCESSED_AFTER = {
    Attribute.MESSAGE_INTEGRITY: frozenset({Attribute.MESSAGE_INTEGRITY_SHA256}),
    Attribute.MESSAGE_INTEGRITY_SHA256: frozenset(),
}


class StunParseError(ValueError):
    """The parser's own error: the bytes are not an acceptable STUN message. str() is a short human reason."""


@dataclass(frozen=True)
class TransportAddress:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    def __str__(self) -> str:
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> TransportAddress:
        """The inverse of `str()`; ValueError on anything else."""
        host, _, port = text.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"{text!r} is not IP:PORT")
        return cls(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")), int(port))


@dataclass(frozen=True)
class StunMessage:
    method: int
    message_class: MessageClass
    transaction_id: bytes  # 12 bytes
    # Every TLV in wire order, padding stripped, including duplicates, FINGERPRINT
    # and the attributes ignored after MESSAGE-INTEGRITY.
    attributes: tuple[tuple[int, bytes], ...]
    # Decoded from the first occurrence; None when absent.
    xor_mapped_address: TransportAddress | None
    mapped_address: TransportAddress | None
    other_address: TransportAddress | None
    response_origin: TransportAddress | None
    changed_address: TransportAddress | None  # RFC 3489 servers
    software: str | None
    error_code: tuple[int, str] | None  # (300..699, reason phrase)
    fingerprint_present: bool  # when True it was verified
    unknown_comprehension_required: tuple[int, ...]  # unknown types 0x0000-0x7FFF, first-seen order
    # Additions beyond the agreed API; defaulted so direct construction keeps working.
    source_address: TransportAddress | None = None  # RFC 3489 servers
    alternate_server: TransportAddress | None = None


def new_transaction_id() -> bytes:
    return secrets.token_bytes(TRANSACTION_ID_LENGTH)


def encode_message_type(method: int, message_class: MessageClass) -> int:
    """Interleave method bits M11..M0 with class bits C1 C0 (RFC 8489 §5)."""
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"method {method:#x} does not fit in 12 bits")
    return ((method & 0x000F) | (method & 0x0070) << 1 | (method & 0x0F80) << 2
            | (message_class & 0b01) << 4 | (message_class & 0b10) << 7)


def decode_message_type(message_type: int) -> tuple[int, MessageClass]:
    """Inverse of `encode_message_type` for a 14-bit type."""
    method = (message_type & 0x000F) | (message_type & 0x00E0) >> 1 | (message_type & 0x3E00) >> 2
    message_class = (message_type >> 4) & 0b01 | (message_type >> 7) & 0b10
    return method, MessageClass(message_class)


def encode_address(address: TransportAddress, *, xor_transaction_id: bytes | None = None) -> bytes:
    """Value of an address attribute; XOR-MAPPED style when a transaction id is given."""
    if not 0 <= address.port <= 0xFFFF:
        raise ValueError(f"port {address.port} out of range")
    family = 0x01 if address.ip.version == 4 else 0x02
    port, ip = address.port, address.ip.packed
    if xor_transaction_id is not None:
        _check_transaction_id(xor_transaction_id)
        port ^= MAGIC_COOKIE >> 16
        ip = _xor(ip, _COOKIE_BYTES + xor_transaction_id)
    return struct.pack("!BBH", 0, family, port) + ip


def encode_message(method: int, message_class: MessageClass, transaction_id: bytes,
                   attributes: Iterable[tuple[int, bytes]] = (), *, fingerprint: bool = True) -> bytes:
    """Serialise a message; values are zero-padded, FINGERPRINT appended last when asked."""
    _check_transaction_id(transaction_id)
    body = bytearray()
    for attr_type, value in attributes:
        if not 0 <= attr_type <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError(f"attribute {attr_type:#x} of {len(value)} bytes does not fit a TLV")
        body += _TLV.pack(attr_type, len(value)) + value + bytes(-len(value) % 4)
    # The CRC covers a header whose length already counts the FINGERPRINT TLV (§14.7).
    length = len(body) + (8 if fingerprint else 0)
    if HEADER_LENGTH + length > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {HEADER_LENGTH + length} bytes exceeds {MAX_MESSAGE_BYTES}")
    message = _HEADER.pack(encode_message_type(method, message_class), length, MAGIC_COOKIE,
                           transaction_id) + bytes(body)
    if fingerprint:
        message += _TLV.pack(Attribute.FINGERPRINT, 4) + _fingerprint(message).to_bytes(4, "big")
    return message


def largest_binding_answer_bytes(ip_version: int) -> int:
    """The largest answer `xcheck responder` gives to a Binding request without PADDING:
    XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS (RFC 5780 §6.1), then FINGERPRINT.
    64 bytes over IPv4, 100 over IPv6."""
    address_tlv = 4 + _ADDRESS_VALUE_BYTES[ip_version]
    return HEADER_LENGTH + 3 * address_tlv + 8


def encode_binding_request(transaction_id: bytes, *, change_ip: bool = False, change_port: bool = False,
                           fingerprint: bool = True, padding_bytes: int = 0, min_bytes: int = 0) -> bytes:
    """Binding request; CHANGE-REQUEST (RFC 5780 §7.2) only when a flag is set, PADDING
    (RFC 5780 §7.6) when asked.

    `min_bytes` makes the request at least that long with a SOFTWARE attribute ("xcheck" and
    spaces), so that a server that never answers with more bytes than it received (`xcheck
    responder`) can answer. Not PADDING: it is comprehension-required (RFC 5780 §7), so an
    RFC 8489 server without RFC 5780 must refuse it with a 420, and RFC 5780 §6.1 has the
    server answer it with PADDING as long as its MTU (coturn 4.6.1 answers a 64-byte padded
    request with 1604 bytes). SOFTWARE is comprehension-optional and meant for clients too
    (RFC 8489 §14.14): every server ignores it.
    """
    attributes: list[tuple[int, bytes]] = []
    if change_ip or change_port:
        flags = (CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0)
        attributes.append((Attribute.CHANGE_REQUEST, flags.to_bytes(4, "big")))
    if padding_bytes:
        attributes.append((Attribute.PADDING, bytes(padding_bytes)))
    request = encode_message(BINDING, MessageClass.REQUEST, transaction_id, attributes, fingerprint=fingerprint)
    if not min_bytes:
        return request
    software = SOFTWARE_NAME.ljust(min_bytes - len(request) - 4)  # 4: SOFTWARE's own type and length
    if len(software) >= _MAX_SOFTWARE_CHARACTERS:
        raise ValueError(f"{min_bytes} bytes would take {len(software)} characters of SOFTWARE, "
                         f"which must stay under {_MAX_SOFTWARE_CHARACTERS} (§14.14)")
    attributes.append((Attribute.SOFTWARE, software.encode()))
    return encode_message(BINDING, MessageClass.REQUEST, transaction_id, attributes, fingerprint=fingerprint)


def parse_message(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES) -> StunMessage:
    """Parse one complete STUN message strictly; raises StunParseError only.

    `max_bytes` bounds the work; a server that takes RFC 5780 PADDING (up to a 1500-byte
    attribute, so a fragmented datagram) raises it."""
    buf = _checked_bytes(data, max_bytes)
    size = len(buf)
    message_type, _, _, transaction_id = _HEADER.unpack_from(buf)
    method, message_class = decode_message_type(message_type)

    attributes: list[tuple[int, bytes]] = []
    first: dict[int, bytes] = {}
    unknown: dict[int, None] = {}  # insertion-ordered set
    still_processed: frozenset[int] | None = None  # None until an integrity attribute
    fingerprint_present = False
    offset = HEADER_LENGTH
    # The header length is a multiple of 4 and every TLV advances by a multiple
    # of 4, so a whole 4-byte TLV header is always left when offset < size.
    while offset < size:
        attr_type, length = _TLV.unpack_from(buf, offset)
        value_end = offset + 4 + length
        if value_end > size:
            raise StunParseError(f"{_name(attr_type)} at offset {offset} claims {length} bytes, "
                                 f"only {size - offset - 4} left")
        value = buf[offset + 4:value_end]
        attributes.append((attr_type, value))
        next_offset = value_end + (-length % 4)
        if attr_type == Attribute.FINGERPRINT:
            _check_fingerprint(buf, offset, value, is_last=next_offset == size)
            fingerprint_present = True
        elif still_processed is not None and attr_type not in still_processed:
            pass  # ignored per §14.5/§14.6, kept raw only
        elif attr_type in _STILL_PROCESSED_AFTER:
            _check_integrity_length(attr_type, length)
            still_processed = _STILL_PROCESSED_AFTER[attr_type]
        else:
            first.setdefault(attr_type, value)
            if attr_type < 0x8000 and attr_type not in _KNOWN_TYPES:
                unknown[attr_type] = None
        offset = next_offset

    def address(attr: Attribute) -> TransportAddress | None:
        value = first.get(attr)
        if value is None:
            return None
        xor_id = transaction_id if attr == Attribute.XOR_MAPPED_ADDRESS else None
        return _decode_address(attr, value, xor_id)

    return StunMessage(
        method=method,
        message_class=message_class,
        transaction_id=transaction_id,
        attributes=tuple(attributes),
        xor_mapped_address=address(Attribute.XOR_MAPPED_ADDRESS),
        mapped_address=address(Attribute.MAPPED_ADDRESS),
        other_address=address(Attribute.OTHER_ADDRESS),
        response_origin=address(Attribute.RESPONSE_ORIGIN),
        changed_address=address(Attribute.CHANGED_ADDRESS),
        software=_decode_software(first.get(Attribute.SOFTWARE)),
        error_code=_decode_error_code(first.get(Attribute.ERROR_CODE)),
        fingerprint_present=fingerprint_present,
        unknown_comprehension_required=tuple(unknown),
        source_address=address(Attribute.SOURCE_ADDRESS),
        alternate_server=address(Attribute.ALTERNATE_SERVER),
    )


def _checked_bytes(data: bytes | bytearray | memoryview, max_bytes: int) -> bytes:
    """Copy of a buffer whose 20-byte header passed every check; else StunParseError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StunParseError(f"expected bytes, got {type(data).__name__}")
    # Size first, so an oversized buffer is never copied.
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size < HEADER_LENGTH:
        raise StunParseError(f"{size} bytes is shorter than a STUN header")
    if size > max_bytes:
        raise StunParseError(f"{size} bytes exceeds the {max_bytes}-byte limit")
    buf = bytes(data)
    message_type, length, cookie, _ = _HEADER.unpack_from(buf)
    if message_type & 0xC000:
        raise StunParseError("top two bits of the message type are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunParseError(f"magic cookie {cookie:#010x} is not {MAGIC_COOKIE:#010x}")
    if length % 4:
        raise StunParseError(f"header length {length} is not a multiple of 4")
    if length != size - HEADER_LENGTH:
        raise StunParseError(f"header length {length} does not match the "
                             f"{size - HEADER_LENGTH} bytes after the header")
    return buf


def _fingerprint(message_so_far: bytes) -> int:
    return zlib.crc32(message_so_far) ^ _FINGERPRINT_XOR


def _check_fingerprint(buf: bytes, offset: int, value: bytes, *, is_last: bool) -> None:
    if not is_last:
        raise StunParseError("FINGERPRINT is not the last attribute")
    if len(value) != 4:
        raise StunParseError(f"FINGERPRINT is {len(value)} bytes, not 4")
    expected = _fingerprint(buf[:offset])
    if int.from_bytes(value, "big") != expected:
        raise StunParseError(f"FINGERPRINT {value.hex()} does not match {expected:08x}")


def _check_integrity_length(attr_type: int, length: int) -> None:
    if attr_type == Attribute.MESSAGE_INTEGRITY:
        ok = length == 20  # HMAC-SHA1, §14.5
    else:
        ok = 16 <= length <= 32 and length % 4 == 0  # truncated HMAC-SHA256, §14.6
    if not ok:
        raise StunParseError(f"{_name(attr_type)} has invalid length {length}")


def _decode_address(attr: Attribute, value: bytes, xor_transaction_id: bytes | None) -> TransportAddress:
    expected = {0x01: _ADDRESS_VALUE_BYTES[4], 0x02: _ADDRESS_VALUE_BYTES[6]}
    if len(value) < 2 or value[0] != 0 or expected.get(value[1]) != len(value):
        raise StunParseError(f"{_name(attr)} is malformed ({len(value)} bytes: {value[:4].hex()}...)")
    port = int.from_bytes(value[2:4], "big")
    ip = value[4:]
    if xor_transaction_id is not None:
        port ^= MAGIC_COOKIE >> 16
        ip = _xor(ip, _COOKIE_BYTES + xor_transaction_id)
    if value[1] == 0x01:
        return TransportAddress(ipaddress.IPv4Address(ip), port)
    return TransportAddress(ipaddress.IPv6Address(ip), port)


def _decode_error_code(value: bytes | None) -> tuple[int, str] | None:
    if value is None:
        return None
    if len(value) < 4:
        raise StunParseError(f"ERROR-CODE is {len(value)} bytes, need at least 4")
    # The 21 reserved bits before the class are ignored by receivers (§14.8).
    code_class, number = value[2] & 0x07, value[3]
    if not 3 <= code_class <= 6 or number > 99:
        raise StunParseError(f"ERROR-CODE class {code_class} number {number} is out of range")
    return code_class * 100 + number, _decode_text(value[4:])


def _decode_software(value: bytes | None) -> str | None:
    if value is None:
        return None
    if len(value) > _MAX_SOFTWARE_BYTES:
        raise StunParseError(f"SOFTWARE is {len(value)} bytes, limit {_MAX_SOFTWARE_BYTES}")
    return _decode_text(value)


def _decode_text(value: bytes) -> str:
    # Servers such as coturn count a C string's trailing NULs in the attribute length.
    return value.decode("utf-8", errors="replace").rstrip("\x00")


def _check_transaction_id(transaction_id: bytes) -> None:
    if len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise ValueError(f"transaction id must be {TRANSACTION_ID_LENGTH} bytes, got {len(transaction_id)}")


def _xor(data: bytes, mask: bytes) -> bytes:
    # An IPv4 address only meets the cookie, the leading 4 bytes of the mask.
    return bytes(a ^ b for a, b in zip(data, mask, strict=False))


def _name(attr_type: int) -> str:
    try:
        return Attribute(attr_type).name.replace("_", "-")
    except ValueError:
        return f"attribute {attr_type:#06x}"
