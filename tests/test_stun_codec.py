"""Unit tests for checks.protocols.stun against RFC 5769 vectors and hand-built messages."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from pathlib import Path

import pytest

from checks.protocols.stun import (
    BINDING,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAX_MESSAGE_BYTES,
    Attribute,
    MessageClass,
    StunMessage,
    StunParseError,
    TransportAddress,
    decode_message_type,
    encode_address,
    encode_binding_request,
    encode_message,
    encode_message_type,
    new_transaction_id,
    parse_message,
)

FIXTURES = Path(__file__).parent / "fixtures" / "stun"
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes(range(12))
SUCCESS = 0x0101


def load(name: str) -> bytes:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


# Raw builders: independent of the encoder under test, and able to lie.

def tlv(attr_type: int, value: bytes, *, padding: bytes | None = None, length: int | None = None) -> bytes:
    if padding is None:
        padding = bytes(-len(value) % 4)
    return struct.pack("!HH", attr_type, len(value) if length is None else length) + value + padding


def raw_message(body: bytes = b"", *, message_type: int = SUCCESS, length: int | None = None,
                cookie: int = MAGIC_COOKIE, tid: bytes = TID) -> bytes:
    return struct.pack("!HHI", message_type, len(body) if length is None else length, cookie) + tid + body


def with_fingerprint(message: bytes) -> bytes:
    """Append a correct FINGERPRINT, fixing up the header length first (RFC 8489 §14.7)."""
    header = bytearray(message[:HEADER_LENGTH])
    header[2:4] = (len(message) - HEADER_LENGTH + 8).to_bytes(2, "big")
    prefix = bytes(header) + message[HEADER_LENGTH:]
    crc = (zlib.crc32(prefix) ^ 0x5354554E).to_bytes(4, "big")
    return prefix + tlv(Attribute.FINGERPRINT, crc)


def xor_v4(ip: str, port: int) -> bytes:
    return encode_address(TransportAddress(ipaddress.ip_address(ip), port), xor_transaction_id=TID)


def plain(ip: str, port: int) -> bytes:
    return encode_address(TransportAddress(ipaddress.ip_address(ip), port))


def rejects(data: object, match: str | None = None) -> None:
    with pytest.raises(StunParseError, match=match):
        parse_message(data)  # type: ignore[arg-type]


# --- RFC 5769 vectors -------------------------------------------------------

def test_rfc5769_sample_request() -> None:
    msg = parse_message(load("rfc5769-2.1-request.hex"))
    assert (msg.method, msg.message_class) == (BINDING, MessageClass.REQUEST)
    assert msg.transaction_id == RFC5769_TID
    assert msg.software == "STUN test client"
    assert [t for t, _ in msg.attributes] == [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]
    assert dict(msg.attributes)[Attribute.USERNAME] == b"evtj:h6vY"  # 0x20 padding dropped
    assert msg.unknown_comprehension_required == (0x0024,)  # PRIORITY; ICE-CONTROLLED is optional
    assert msg.fingerprint_present
    assert msg.xor_mapped_address is None and msg.error_code is None


def test_rfc5769_sample_ipv4_response() -> None:
    msg = parse_message(load("rfc5769-2.2-ipv4-response.hex"))
    assert (msg.method, msg.message_class) == (BINDING, MessageClass.SUCCESS_RESPONSE)
    assert msg.transaction_id == RFC5769_TID
    assert msg.xor_mapped_address == TransportAddress(ipaddress.IPv4Address("192.0.2.1"), 32853)
    assert str(msg.xor_mapped_address) == "192.0.2.1:32853"
    assert msg.software == "test vector"
    assert [t for t, _ in msg.attributes] == [0x8022, 0x0020, 0x0008, 0x8028]
    assert msg.fingerprint_present
    assert msg.unknown_comprehension_required == ()
    assert msg.mapped_address is None and msg.other_address is None


def test_rfc5769_sample_ipv6_response() -> None:
    msg = parse_message(load("rfc5769-2.3-ipv6-response.hex"))
    assert msg.message_class is MessageClass.SUCCESS_RESPONSE
    expected = TransportAddress(ipaddress.IPv6Address("2001:db8:1234:5678:11:2233:4455:6677"), 32853)
    assert msg.xor_mapped_address == expected
    assert str(msg.xor_mapped_address) == "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
    assert msg.software == "test vector"
    assert msg.fingerprint_present


def test_rfc5769_long_term_request() -> None:
    msg = parse_message(load("rfc5769-2.4-long-term-request.hex"))
    assert msg.message_class is MessageClass.REQUEST
    assert not msg.fingerprint_present
    assert dict(msg.attributes)[Attribute.REALM] == b"example.org"
    assert dict(msg.attributes)[Attribute.USERNAME].decode() == "マトリックス"


@pytest.mark.parametrize(("name", "key"), [
    ("rfc5769-2.1-request.hex", RFC5769_PASSWORD),
    ("rfc5769-2.2-ipv4-response.hex", RFC5769_PASSWORD),
    ("rfc5769-2.3-ipv6-response.hex", RFC5769_PASSWORD),
    ("rfc5769-2.4-long-term-request.hex", hashlib.md5("マトリックス:example.org:TheMatrIX".encode()).digest()),
])
def test_fixture_bytes_match_rfc_credentials(name: str, key: bytes) -> None:
    """MESSAGE-INTEGRITY must verify with the RFC's credentials: proves the fixture was typed in right."""
    data = load(name)
    offset = HEADER_LENGTH
    for attr_type, value in parse_message(data).attributes:
        if attr_type == Attribute.MESSAGE_INTEGRITY:
            break
        offset += 4 + len(value) + (-len(value) % 4)
    header = bytearray(data[:HEADER_LENGTH])
    header[2:4] = (offset + 24 - HEADER_LENGTH).to_bytes(2, "big")
    signed = bytes(header) + data[HEADER_LENGTH:offset]
    assert hmac.new(key, signed, hashlib.sha1).digest() == data[offset + 4:offset + 24]


@pytest.mark.parametrize("index", [-1, -4, 25, 40])  # in the CRC itself, and in the covered bytes
def test_corrupted_fingerprint_raises(index: int) -> None:
    data = bytearray(load("rfc5769-2.2-ipv4-response.hex"))
    data[index] ^= 0x01
    rejects(bytes(data), "FINGERPRINT")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_accepts_bytes_like(wrap: type) -> None:
    msg = parse_message(wrap(load("rfc5769-2.2-ipv4-response.hex")))
    assert msg.xor_mapped_address is not None and msg.xor_mapped_address.port == 32853


# --- encoding ------------------------------------------------------------------

def test_binding_request_header_bit_exact() -> None:
    cookie_and_tid = "2112a442" "000102030405060708090a0b"
    assert encode_binding_request(TID, fingerprint=False) == bytes.fromhex("0001" "0000" + cookie_and_tid)
    with_fp = encode_binding_request(TID)
    assert with_fp[:HEADER_LENGTH] == bytes.fromhex("0001" "0008" + cookie_and_tid)
    assert with_fp[HEADER_LENGTH:HEADER_LENGTH + 4] == bytes.fromhex("80280004")
    assert with_fp == with_fingerprint(encode_binding_request(TID, fingerprint=False))


@pytest.mark.parametrize(("change_ip", "change_port", "value"), [
    (True, False, "00000004"),
    (False, True, "00000002"),
    (True, True, "00000006"),
])
def test_change_request_bit_exact(change_ip: bool, change_port: bool, value: str) -> None:
    data = encode_binding_request(TID, change_ip=change_ip, change_port=change_port, fingerprint=False)
    assert data == bytes.fromhex("0001" "0008" "2112a442" "000102030405060708090a0b" "00030004" + value)


@pytest.mark.parametrize("fingerprint", [True, False])
@pytest.mark.parametrize(("change_ip", "change_port"), [(False, False), (True, False), (False, True), (True, True)])
def test_binding_request_round_trip(change_ip: bool, change_port: bool, fingerprint: bool) -> None:
    tid = new_transaction_id()
    msg = parse_message(encode_binding_request(tid, change_ip=change_ip, change_port=change_port,
                                               fingerprint=fingerprint))
    assert (msg.method, msg.message_class, msg.transaction_id) == (BINDING, MessageClass.REQUEST, tid)
    assert msg.fingerprint_present is fingerprint
    expected_flags = (0x04 if change_ip else 0) | (0x02 if change_port else 0)
    change = [v for t, v in msg.attributes if t == Attribute.CHANGE_REQUEST]
    assert change == ([expected_flags.to_bytes(4, "big")] if expected_flags else [])
    assert msg.unknown_comprehension_required == ()


def test_encode_message_reproduces_rfc5769_long_term_request() -> None:
    data = load("rfc5769-2.4-long-term-request.hex")
    msg = parse_message(data)
    assert encode_message(BINDING, MessageClass.REQUEST, msg.transaction_id, msg.attributes,
                          fingerprint=False) == data


@pytest.mark.parametrize("name", ["rfc5769-2.2-ipv4-response.hex", "rfc5769-2.3-ipv6-response.hex"])
def test_encode_address_reproduces_rfc5769_xor_value(name: str) -> None:
    msg = parse_message(load(name))
    assert msg.xor_mapped_address is not None
    wire = dict(msg.attributes)[Attribute.XOR_MAPPED_ADDRESS]
    assert encode_address(msg.xor_mapped_address, xor_transaction_id=msg.transaction_id) == wire


@pytest.mark.parametrize("bad_tid", [b"", bytes(11), bytes(13)])
def test_encoders_reject_bad_transaction_id(bad_tid: bytes) -> None:
    with pytest.raises(ValueError):
        encode_binding_request(bad_tid)


def test_encode_message_rejects_oversize() -> None:
    with pytest.raises(ValueError):
        encode_message(BINDING, MessageClass.REQUEST, TID, [(0x8000, bytes(MAX_MESSAGE_BYTES))])


def test_new_transaction_id() -> None:
    first, second = new_transaction_id(), new_transaction_id()
    assert len(first) == 12 and first != second


# --- message type interleaving (RFC 8489 §5) -----------------------------------

@pytest.mark.parametrize(("message_class", "wire_type"), [
    (MessageClass.REQUEST, 0x0001),
    (MessageClass.INDICATION, 0x0011),
    (MessageClass.SUCCESS_RESPONSE, 0x0101),
    (MessageClass.ERROR_RESPONSE, 0x0111),
])
def test_binding_type_interleaving(message_class: MessageClass, wire_type: int) -> None:
    assert encode_message_type(BINDING, message_class) == wire_type
    assert decode_message_type(wire_type) == (BINDING, message_class)
    msg = parse_message(raw_message(message_type=wire_type))
    assert (msg.method, msg.message_class) == (BINDING, message_class)


@pytest.mark.parametrize(("method", "message_class", "wire_type"), [
    (0xFFF, MessageClass.ERROR_RESPONSE, 0x3FFF),
    (0xFFF, MessageClass.REQUEST, 0x3EEF),  # C1 (bit 8) and C0 (bit 4) clear
    (0x080, MessageClass.REQUEST, 0x0200),  # M7 lands on bit 9
    (0x010, MessageClass.REQUEST, 0x0020),  # M4 lands on bit 5
])
def test_method_bits_skip_class_bits(method: int, message_class: MessageClass, wire_type: int) -> None:
    assert encode_message_type(method, message_class) == wire_type
    assert decode_message_type(wire_type) == (method, message_class)


# --- header strictness ----------------------------------------------------------

@pytest.mark.parametrize("data", ["0001", [0] * 20, 20, None])
def test_rejects_non_bytes(data: object) -> None:
    rejects(data, "expected bytes")


@pytest.mark.parametrize("size", [0, 1, 19])
def test_rejects_short(size: int) -> None:
    rejects(raw_message()[:size], "shorter")


def message_of_size(total: int) -> bytes:
    return raw_message(tlv(0x8000, bytes(total - HEADER_LENGTH - 4)))


def test_size_limit() -> None:
    assert len(parse_message(message_of_size(MAX_MESSAGE_BYTES)).attributes) == 1
    rejects(message_of_size(MAX_MESSAGE_BYTES + 4), "limit")
    rejects(memoryview(message_of_size(MAX_MESSAGE_BYTES + 4)), "limit")


@pytest.mark.parametrize("message_type", [0x4001, 0x8001, 0xC101])
def test_rejects_top_bits(message_type: int) -> None:
    rejects(raw_message(message_type=message_type), "top two bits")


def test_rejects_wrong_cookie() -> None:
    rejects(raw_message(cookie=0x2112A443), "cookie")


def test_rejects_length_not_multiple_of_four() -> None:
    rejects(raw_message(b"\x80\x00", length=2), "multiple of 4")


@pytest.mark.parametrize(("body", "length"), [
    (b"", 4),                       # claims more than present
    (tlv(0x8000, b"abcd"), 4),      # trailing bytes after the claimed end
    (tlv(0x8000, b"abcd"), 0),
])
def test_rejects_header_length_mismatch(body: bytes, length: int) -> None:
    rejects(raw_message(body, length=length), "does not match")



# --- attribute framing -----------------------------------------------------------

def test_rejects_truncated_attribute_header() -> None:
    # A partial TLV header can only come with a length that is not a multiple of 4.
    rejects(raw_message(b"\x80\x22"), "multiple of 4")


@pytest.mark.parametrize("body", [
    tlv(0x8022, b"abcd", length=8),
    tlv(0x8022, b"abcd", length=5),      # one byte past the end
    tlv(0x8022, b"ab", length=0xFFFF),
    tlv(0x8000, b"") + tlv(0x0020, b"", length=4),
])
def test_rejects_truncated_attribute_value(body: bytes) -> None:
    rejects(raw_message(body), "claims")


def test_padding_may_be_any_value() -> None:
    body = tlv(Attribute.SOFTWARE, b"abc", padding=b"\xff") + tlv(0x8000, b"x", padding=b"\x01\x02\x03")
    msg = parse_message(raw_message(body))
    assert msg.software == "abc"
    assert msg.attributes == ((Attribute.SOFTWARE, b"abc"), (0x8000, b"x"))


def test_zero_length_attributes_up_to_the_limit() -> None:
    count = (MAX_MESSAGE_BYTES - HEADER_LENGTH) // 4
    msg = parse_message(raw_message(tlv(0x8000, b"") * count))
    assert len(msg.attributes) == count


# --- address attributes ----------------------------------------------------------

ADDRESS_FIELDS = {
    Attribute.MAPPED_ADDRESS: "mapped_address",
    Attribute.XOR_MAPPED_ADDRESS: "xor_mapped_address",
    Attribute.OTHER_ADDRESS: "other_address",
    Attribute.RESPONSE_ORIGIN: "response_origin",
    Attribute.CHANGED_ADDRESS: "changed_address",
    Attribute.SOURCE_ADDRESS: "source_address",
    Attribute.ALTERNATE_SERVER: "alternate_server",
}


@pytest.mark.parametrize("attr", list(ADDRESS_FIELDS))
@pytest.mark.parametrize("ip", ["203.0.113.1", "2001:db8::1"])
def test_address_attributes_decode(attr: Attribute, ip: str) -> None:
    address = TransportAddress(ipaddress.ip_address(ip), 3478)
    xor_id = TID if attr == Attribute.XOR_MAPPED_ADDRESS else None
    msg = parse_message(raw_message(tlv(attr, encode_address(address, xor_transaction_id=xor_id))))
    assert getattr(msg, ADDRESS_FIELDS[attr]) == address


@pytest.mark.parametrize("attr", list(ADDRESS_FIELDS))
@pytest.mark.parametrize("value", [
    b"",
    b"\x00",
    b"\x00\x01\x0d\x96",                        # IPv4 family, no address
    b"\x01\x01\x0d\x96\xcb\x00\x71\x01",        # reserved first byte not zero
    b"\x00\x03\x0d\x96\xcb\x00\x71\x01",        # unknown family
    b"\x00\x00\x0d\x96\xcb\x00\x71\x01",
    b"\x00\x01\x0d\x96\xcb\x00\x71",            # IPv4 one byte short
    b"\x00\x01\x0d\x96" + bytes(8),             # IPv4 family with 12 bytes
    b"\x00\x01\x0d\x96" + bytes(16),            # IPv4 family with an IPv6 address
    b"\x00\x02\x0d\x96\xcb\x00\x71\x01",        # IPv6 family with an IPv4 address
    b"\x00\x02\x0d\x96" + bytes(15),
    b"\x00\x02\x0d\x96" + bytes(20),
])
def test_address_attributes_reject_malformed(attr: Attribute, value: bytes) -> None:
    rejects(raw_message(tlv(attr, value)), attr.name.replace("_", "-"))


def test_xor_mapped_ipv4_uses_cookie() -> None:
    # 203.0.113.1:3478 XOR 0x2112A442 -> ea12d543, port 0x0d96 XOR 0x2112 -> 0x2c84
    msg = parse_message(raw_message(tlv(Attribute.XOR_MAPPED_ADDRESS, bytes.fromhex("00012c84ea12d543"))))
    assert str(msg.xor_mapped_address) == "203.0.113.1:3478"


def test_xor_mapped_ipv6_uses_cookie_and_transaction_id() -> None:
    ip = ipaddress.IPv6Address("2001:db8::1")
    mask = MAGIC_COOKIE.to_bytes(4, "big") + TID
    value = bytes.fromhex("00022c84") + bytes(a ^ b for a, b in zip(ip.packed, mask, strict=True))
    msg = parse_message(raw_message(tlv(Attribute.XOR_MAPPED_ADDRESS, value)))
    assert str(msg.xor_mapped_address) == "[2001:db8::1]:3478"
    # The same bytes under another transaction id decode elsewhere.
    other = parse_message(raw_message(tlv(Attribute.XOR_MAPPED_ADDRESS, value), tid=bytes(12)))
    assert other.xor_mapped_address != msg.xor_mapped_address


def test_mapped_address_is_not_xored() -> None:
    msg = parse_message(raw_message(tlv(Attribute.MAPPED_ADDRESS, bytes.fromhex("00010d96cb007101"))))
    assert str(msg.mapped_address) == "203.0.113.1:3478"


def test_transport_address_str() -> None:
    assert str(TransportAddress(ipaddress.IPv4Address("203.0.113.1"), 3478)) == "203.0.113.1:3478"
    assert str(TransportAddress(ipaddress.IPv6Address("2001:db8::1"), 3478)) == "[2001:db8::1]:3478"


# --- ERROR-CODE ------------------------------------------------------------------

def error_value(code_class: int, number: int, reason: bytes = b"", reserved: int = 0) -> bytes:
    return struct.pack("!HBB", reserved >> 8, (reserved & 0xF8) | code_class, number) + reason


@pytest.mark.parametrize(("value", "expected"), [
    (error_value(4, 20, b"Unknown Attribute"), (420, "Unknown Attribute")),
    (error_value(3, 0), (300, "")),
    (error_value(6, 99, b"x"), (699, "x")),
    (error_value(4, 1, reserved=0xFFFFF8), (401, "")),   # reserved bits are ignored
    (error_value(5, 0, b"bad \xff utf8"), (500, "bad \ufffd utf8")),
    (error_value(4, 20, b"Unknown Attribute\x00\x00\x00"), (420, "Unknown Attribute")),  # as coturn sends it
])
def test_error_code_decodes(value: bytes, expected: tuple[int, str]) -> None:
    msg = parse_message(raw_message(tlv(Attribute.ERROR_CODE, value), message_type=0x0111))
    assert msg.message_class is MessageClass.ERROR_RESPONSE
    assert msg.error_code == expected


@pytest.mark.parametrize("value", [
    b"", b"\x00\x00\x04",
    error_value(2, 99), error_value(7, 0), error_value(0, 0),
    error_value(4, 100), error_value(4, 255),
])
def test_error_code_rejects_malformed(value: bytes) -> None:
    rejects(raw_message(tlv(Attribute.ERROR_CODE, value), message_type=0x0111), "ERROR-CODE")


# --- SOFTWARE --------------------------------------------------------------------

def test_software_length_limit() -> None:
    assert parse_message(raw_message(tlv(Attribute.SOFTWARE, b"a" * 763))).software == "a" * 763
    rejects(raw_message(tlv(Attribute.SOFTWARE, b"a" * 764)), "SOFTWARE")


def test_software_tolerates_bad_utf8_and_trailing_nuls() -> None:
    msg = parse_message(raw_message(tlv(Attribute.SOFTWARE, b"coturn \xc3(\x00\x00")))
    assert msg.software == "coturn \ufffd("


# --- FINGERPRINT and MESSAGE-INTEGRITY ---------------------------------------------

def test_rejects_fingerprint_not_last() -> None:
    signed = with_fingerprint(raw_message(tlv(0x8000, b"abcd")))
    body = signed[HEADER_LENGTH:] + tlv(Attribute.SOFTWARE, b"late")
    rejects(raw_message(body), "not the last")


@pytest.mark.parametrize("value", [b"", b"\x00\x00\x00", bytes(8)])
def test_rejects_fingerprint_wrong_length(value: bytes) -> None:
    rejects(raw_message(tlv(Attribute.FINGERPRINT, value)), "FINGERPRINT")


def test_rejects_long_fingerprint_even_with_the_right_crc_in_it() -> None:
    head = raw_message(length=12)
    crc = zlib.crc32(head) ^ 0x5354554E
    rejects(head + tlv(Attribute.FINGERPRINT, bytes(4) + crc.to_bytes(4, "big")), "not 4")


def test_fingerprint_mismatch_on_built_message() -> None:
    good = with_fingerprint(raw_message(tlv(Attribute.SOFTWARE, b"abc")))
    assert parse_message(good).fingerprint_present
    rejects(good[:-4] + bytes(4), "does not match")


MI = tlv(Attribute.MESSAGE_INTEGRITY, bytes(20))


def test_attributes_after_message_integrity_are_ignored_but_kept_raw() -> None:
    late = [
        (Attribute.XOR_MAPPED_ADDRESS, b"\x07garbage"),     # would be rejected if decoded
        (Attribute.SOFTWARE, b"late"),
        (0x0024, b"\x00\x00\x00\x00"),                      # unknown, comprehension-required
    ]
    body = tlv(Attribute.SOFTWARE, b"early") + MI + b"".join(tlv(t, v) for t, v in late)
    msg = parse_message(with_fingerprint(raw_message(body)))
    assert msg.software == "early"
    assert msg.xor_mapped_address is None
    assert msg.unknown_comprehension_required == ()
    assert msg.attributes[2:5] == tuple(late)
    assert msg.fingerprint_present


def test_message_integrity_sha256_may_follow_message_integrity() -> None:
    body = MI + tlv(Attribute.MESSAGE_INTEGRITY_SHA256, bytes(32)) + tlv(Attribute.SOFTWARE, b"late")
    msg = parse_message(with_fingerprint(raw_message(body)))
    assert msg.software is None and msg.fingerprint_present
    # ...so it is still length-checked there.
    rejects(raw_message(MI + tlv(Attribute.MESSAGE_INTEGRITY_SHA256, bytes(8))), "MESSAGE-INTEGRITY-SHA256")


def test_nothing_but_fingerprint_counts_after_message_integrity_sha256() -> None:
    body = tlv(Attribute.MESSAGE_INTEGRITY_SHA256, bytes(32)) + tlv(Attribute.MESSAGE_INTEGRITY, b"short")
    msg = parse_message(with_fingerprint(raw_message(body)))
    assert msg.attributes[1] == (Attribute.MESSAGE_INTEGRITY, b"short")


@pytest.mark.parametrize(("attr", "length"), [
    (Attribute.MESSAGE_INTEGRITY, 0),
    (Attribute.MESSAGE_INTEGRITY, 16),
    (Attribute.MESSAGE_INTEGRITY, 32),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 12),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 18),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 36),
])
def test_rejects_integrity_wrong_length(attr: Attribute, length: int) -> None:
    rejects(raw_message(tlv(attr, bytes(length))), attr.name.replace("_", "-"))


@pytest.mark.parametrize("length", [16, 20, 28, 32])
def test_accepts_message_integrity_sha256_lengths(length: int) -> None:
    assert parse_message(raw_message(tlv(Attribute.MESSAGE_INTEGRITY_SHA256, bytes(length))))


# --- duplicates and unknown attributes --------------------------------------------

def test_duplicates_keep_the_first() -> None:
    body = (tlv(Attribute.XOR_MAPPED_ADDRESS, xor_v4("203.0.113.1", 1))
            + tlv(Attribute.XOR_MAPPED_ADDRESS, xor_v4("203.0.113.2", 2))
            + tlv(Attribute.XOR_MAPPED_ADDRESS, b"\x07not an address")   # never decoded
            + tlv(Attribute.SOFTWARE, b"one") + tlv(Attribute.SOFTWARE, b"two")
            + tlv(Attribute.MAPPED_ADDRESS, plain("198.51.100.1", 3))
            + tlv(Attribute.MAPPED_ADDRESS, plain("198.51.100.2", 4)))
    msg = parse_message(raw_message(body))
    assert str(msg.xor_mapped_address) == "203.0.113.1:1"
    assert str(msg.mapped_address) == "198.51.100.1:3"
    assert msg.software == "one"
    assert len(msg.attributes) == 7


def test_unknown_comprehension_required_listed_once_in_order() -> None:
    types = [0x7FFF, Attribute.USERNAME, 0x0024, 0x8029, 0x7FFF, 0x0000, 0xFFFF, Attribute.CHANGE_REQUEST]
    msg = parse_message(raw_message(b"".join(tlv(t, b"abcd") for t in types)))
    assert msg.unknown_comprehension_required == (0x7FFF, 0x0024, 0x0000)


def test_every_known_type_is_understood() -> None:
    opaque = [a for a in Attribute if a < 0x8000 and a not in ADDRESS_FIELDS
              and a not in (Attribute.ERROR_CODE, Attribute.MESSAGE_INTEGRITY,
                            Attribute.MESSAGE_INTEGRITY_SHA256)]
    msg = parse_message(raw_message(b"".join(tlv(a, b"abcd") for a in opaque)))
    assert msg.unknown_comprehension_required == ()


def test_result_type() -> None:
    assert isinstance(parse_message(raw_message()), StunMessage)
