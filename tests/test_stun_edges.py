"""The STUN codec at its exact edges, and the exact message of every refusal (issue 13).

Each table row sits on one side of a boundary the codec draws: the comprehension-required range,
the 12-bit method, the 16-bit TLV fields, the 1500-byte message, 4-byte padding, SOFTWARE's
128 characters and 763 bytes, ERROR-CODE's 300-699, the integrity lengths.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from test_stun_codec import TID, raw_message, tlv, with_fingerprint

from checks.protocols.stun import (
    BINDING,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAX_MESSAGE_BYTES,
    Attribute,
    MessageClass,
    StunParseError,
    TransportAddress,
    encode_address,
    encode_binding_request,
    encode_message,
    encode_message_type,
    largest_binding_answer_bytes,
    parse_message,
)

REQUEST = MessageClass.REQUEST


def refusal(data: object, **kwargs: int) -> str:
    with pytest.raises(StunParseError) as caught:
        parse_message(data, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def address(text: str) -> TransportAddress:
    host, port = text.rsplit(" ", 1)
    return TransportAddress(ipaddress.ip_address(host), int(port))


# --- TransportAddress.parse, the inverse of str() ------------------------------------

@pytest.mark.parametrize("text", ["203.0.113.1:3478", "0.0.0.0:0", "198.51.100.2:65535",
                                  "[2001:db8::1]:3478", "[::]:0", "[2001:db8:1234:5678:11:2233:4455:6677]:1"])
def test_transport_address_parse_inverts_str(text: str) -> None:
    parsed = TransportAddress.parse(text)
    assert str(parsed) == text
    host, _, port = text.rpartition(":")
    assert parsed == TransportAddress(ipaddress.ip_address(host.strip("[]")), int(port))


@pytest.mark.parametrize("text", ["203.0.113.1", "203.0.113.1:", "203.0.113.1:port", "[2001:db8::1]",
                                  "203.0.113.1:-1", ""])
def test_transport_address_parse_needs_a_port(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(repr(text))} is not IP:PORT$"):
        TransportAddress.parse(text)


@pytest.mark.parametrize("text", ["example.net:3478", "203.0.113:3478", ":3478", "[2001:db8::1]]:3478"])
def test_transport_address_parse_needs_an_ip(text: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        TransportAddress.parse(text)


# --- encoders: range checks at their exact edges ---------------------------------------

@pytest.mark.parametrize(("method", "accepted"), [(0, True), (0xFFF, True), (0x1000, False), (-1, False)])
def test_method_fits_twelve_bits(method: int, accepted: bool) -> None:
    if accepted:
        assert parse_message(encode_message(method, REQUEST, TID)).method == method
        return
    with pytest.raises(ValueError, match=f"^method {method:#x} does not fit in 12 bits$"):
        encode_message_type(method, REQUEST)


@pytest.mark.parametrize(("port", "accepted"), [(0, True), (65535, True), (65536, False), (-1, False)])
@pytest.mark.parametrize("xor", [True, False])
def test_address_port_range(port: int, accepted: bool, xor: bool) -> None:
    addr = TransportAddress(ipaddress.IPv4Address("203.0.113.1"), port)
    xor_id = TID if xor else None
    if not accepted:
        with pytest.raises(ValueError, match=f"^port {port} out of range$"):
            encode_address(addr, xor_transaction_id=xor_id)
        return
    attr = Attribute.XOR_MAPPED_ADDRESS if xor else Attribute.MAPPED_ADDRESS
    msg = parse_message(encode_message(BINDING, MessageClass.SUCCESS_RESPONSE, TID,
                                       [(attr, encode_address(addr, xor_transaction_id=xor_id))]))
    assert (msg.xor_mapped_address if xor else msg.mapped_address) == addr


@pytest.mark.parametrize("attr_type", [0x0000, 0x7FFF, 0x8000, 0xFFFF])
def test_encode_message_takes_every_sixteen_bit_type(attr_type: int) -> None:
    msg = parse_message(encode_message(BINDING, REQUEST, TID, [(attr_type, b"abcd")]))
    assert msg.attributes[0] == (attr_type, b"abcd")


@pytest.mark.parametrize(("attr_type", "value_bytes"), [
    (0x10000, 0), (-1, 0), (0x8000, 0x10000), (0x10000, 0x10000),
])
def test_encode_message_refuses_what_does_not_fit_a_tlv(attr_type: int, value_bytes: int) -> None:
    message = f"^attribute {attr_type:#x} of {value_bytes} bytes does not fit a TLV$"
    with pytest.raises(ValueError, match=message):
        encode_message(BINDING, REQUEST, TID, [(attr_type, bytes(value_bytes))])


def test_a_value_of_0xffff_bytes_fits_a_tlv_but_not_a_message() -> None:
    # 4 + 65535 + 1 padding byte + 8 of FINGERPRINT after the header.
    with pytest.raises(ValueError, match=f"^message of 65568 bytes exceeds {MAX_MESSAGE_BYTES}$"):
        encode_message(BINDING, REQUEST, TID, [(0x8000, bytes(0xFFFF))])


# The value that makes the message exactly 1500 bytes, and the first that does not (padding).
@pytest.mark.parametrize(("fingerprint", "largest_value"), [(True, 1468), (False, 1476)])
def test_encode_message_size_limit_is_inclusive(fingerprint: bool, largest_value: int) -> None:
    data = encode_message(BINDING, REQUEST, TID, [(0x8000, bytes(largest_value))], fingerprint=fingerprint)
    assert len(data) == MAX_MESSAGE_BYTES
    assert parse_message(data).fingerprint_present is fingerprint
    with pytest.raises(ValueError, match=f"^message of 1504 bytes exceeds {MAX_MESSAGE_BYTES}$"):
        encode_message(BINDING, REQUEST, TID, [(0x8000, bytes(largest_value + 1))], fingerprint=fingerprint)


@pytest.mark.parametrize("tid", [b"", bytes(11), bytes(13)])
def test_transaction_id_length_message(tid: bytes) -> None:
    message = f"^transaction id must be 12 bytes, got {len(tid)}$"
    with pytest.raises(ValueError, match=message):
        encode_message(BINDING, REQUEST, tid)
    with pytest.raises(ValueError, match=message):
        encode_address(TransportAddress(ipaddress.IPv4Address("203.0.113.1"), 1), xor_transaction_id=tid)


def test_encode_message_appends_fingerprint_unless_told_not_to() -> None:
    default = encode_message(BINDING, REQUEST, TID, [(Attribute.SOFTWARE, b"abc")])
    assert default == with_fingerprint(encode_message(BINDING, REQUEST, TID, [(Attribute.SOFTWARE, b"abc")],
                                                      fingerprint=False))
    assert parse_message(default).attributes[-1][0] == Attribute.FINGERPRINT


# Value length -> bytes on the wire: the TLV length is the value's, the padding reaches 4 bytes.
@pytest.mark.parametrize(("value", "wire"), [
    (b"", "80000000"),
    (b"a", "80000001" "61000000"),
    (b"abc", "80000003" "61626300"),
    (b"abcd", "80000004" "61626364"),
    (b"abcde", "80000005" "6162636465000000"),
])
def test_encode_pads_values_to_four_bytes(value: bytes, wire: str) -> None:
    data = encode_message(BINDING, REQUEST, TID, [(0x8000, value)], fingerprint=False)
    body = bytes.fromhex(wire)
    assert data == bytes.fromhex("0001") + len(body).to_bytes(2, "big") + MAGIC_COOKIE.to_bytes(4, "big") + TID + body
    assert parse_message(data).attributes == ((0x8000, value),)


# --- the Binding request the client sends ---------------------------------------------

@pytest.mark.parametrize(("padding_bytes", "wire_length"), [(1, 36), (4, 36), (16, 48), (64, 96)])
def test_binding_request_padding(padding_bytes: int, wire_length: int) -> None:
    data = encode_binding_request(TID, change_port=True, padding_bytes=padding_bytes)
    assert len(data) == wire_length + 8
    msg = parse_message(data)
    assert msg.attributes[:2] == ((Attribute.CHANGE_REQUEST, b"\x00\x00\x00\x02"),
                                  (Attribute.PADDING, bytes(padding_bytes)))
    assert msg.fingerprint_present


@pytest.mark.parametrize(("min_bytes", "flags", "fingerprint", "wire_length", "spaces"), [
    (64, {}, True, 64, 26),       # 20 header + 4 + 32 SOFTWARE + 8 FINGERPRINT
    (63, {}, True, 64, 25),       # 31 characters, one padding byte
    (64, {}, False, 64, 34),
    (64, {"change_ip": True}, True, 64, 18),
    (100, {"change_port": True}, True, 100, 54),
    (159, {}, True, 160, 121),    # 127 characters: the longest SOFTWARE allowed
    (1, {}, True, 40, 0),         # already longer: just the name
])
def test_binding_request_min_bytes(min_bytes: int, flags: dict[str, bool], fingerprint: bool,
                                   wire_length: int, spaces: int) -> None:
    data = encode_binding_request(TID, fingerprint=fingerprint, min_bytes=min_bytes, **flags)
    assert len(data) == wire_length
    msg = parse_message(data)
    assert (msg.method, msg.message_class, msg.transaction_id) == (BINDING, REQUEST, TID)
    assert msg.software == "xcheck" + " " * spaces
    assert msg.fingerprint_present is fingerprint
    change = [v for t, v in msg.attributes if t == Attribute.CHANGE_REQUEST]
    assert change == ([b"\x00\x00\x00\x04"] if flags.get("change_ip") else
                      [b"\x00\x00\x00\x02"] if flags.get("change_port") else [])


@pytest.mark.parametrize(("min_bytes", "fingerprint", "characters"), [(160, True, 128), (152, False, 128),
                                                                       (400, True, 368)])
def test_binding_request_min_bytes_keeps_software_under_128_characters(min_bytes: int, fingerprint: bool,
                                                                         characters: int) -> None:
    message = (f"^{min_bytes} bytes would take {characters} characters of SOFTWARE, "
               f"which must stay under 128 \\(§14.14\\)$")
    with pytest.raises(ValueError, match=message):
        encode_binding_request(TID, fingerprint=fingerprint, min_bytes=min_bytes)


@pytest.mark.parametrize(("ip_version", "expected"), [(4, 64), (6, 100)])
def test_largest_binding_answer_bytes(ip_version: int, expected: int) -> None:
    """XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS of that family, then FINGERPRINT."""
    ip = ipaddress.ip_address("203.0.113.1" if ip_version == 4 else "2001:db8::1")
    value = encode_address(TransportAddress(ip, 65535), xor_transaction_id=TID)
    answer = encode_message(BINDING, MessageClass.SUCCESS_RESPONSE, TID,
                            [(Attribute.XOR_MAPPED_ADDRESS, value), (Attribute.RESPONSE_ORIGIN, value),
                             (Attribute.OTHER_ADDRESS, value)])
    assert largest_binding_answer_bytes(ip_version) == len(answer) == expected


# --- parsing: the comprehension-required boundary --------------------------------------

@pytest.mark.parametrize(("attr_type", "required"), [
    (0x0000, True), (0x0002, True), (0x0024, True), (0x7FFE, True), (0x7FFF, True),
    (0x8000, False), (0x8001, False), (0x8029, False), (0xFFFF, False),
    (Attribute.USERNAME, False), (Attribute.PADDING, False),  # known, so understood
])
def test_comprehension_required_boundary(attr_type: int, required: bool) -> None:
    msg = parse_message(raw_message(tlv(attr_type, b"abcd")))
    assert msg.unknown_comprehension_required == ((attr_type,) if required else ())
    assert msg.attributes == ((attr_type, b"abcd"),)


# --- parsing: exact refusals --------------------------------------------------------------

def test_exact_header_refusals() -> None:
    assert refusal("0001") == "expected bytes, got str"
    assert refusal(None) == "expected bytes, got NoneType"
    assert refusal(bytes(19)) == "19 bytes is shorter than a STUN header"
    oversized = raw_message(bytes(MAX_MESSAGE_BYTES - HEADER_LENGTH + 4))
    assert refusal(oversized) == "1504 bytes exceeds the 1500-byte limit"
    assert refusal(raw_message(message_type=0x4001)) == "top two bits of the message type are not zero"
    assert refusal(raw_message(cookie=0x2112A443)) == "magic cookie 0x2112a443 is not 0x2112a442"
    assert refusal(raw_message(cookie=0)) == "magic cookie 0x00000000 is not 0x2112a442"
    assert refusal(raw_message(b"\x80\x00", length=2)) == "header length 2 is not a multiple of 4"
    assert refusal(raw_message(length=4)) == "header length 4 does not match the 0 bytes after the header"
    assert refusal(raw_message(bytes(8), length=4)) == "header length 4 does not match the 8 bytes after the header"


@pytest.mark.parametrize("size", [24, 28])
def test_max_bytes_is_inclusive(size: int) -> None:
    data = raw_message(tlv(0x8000, bytes(size - HEADER_LENGTH - 4)))
    assert parse_message(data, max_bytes=size).attributes == ((0x8000, bytes(size - HEADER_LENGTH - 4)),)
    assert refusal(data, max_bytes=size - 1) == f"{size} bytes exceeds the {size - 1}-byte limit"


def test_memoryview_of_wider_items_is_sized_in_bytes() -> None:
    data = raw_message(tlv(0x8000, b"abcd"))
    msg = parse_message(memoryview(data).cast("H"))
    assert msg.attributes == ((0x8000, b"abcd"),)
    oversized = memoryview(raw_message(tlv(0x8000, bytes(MAX_MESSAGE_BYTES - 20)))).cast("I")
    assert refusal(oversized) == "1504 bytes exceeds the 1500-byte limit"


@pytest.mark.parametrize(("body", "message"), [
    (tlv(Attribute.SOFTWARE, b"abcd", length=8), "SOFTWARE at offset 20 claims 8 bytes, only 4 left"),
    (tlv(0x8000, b"") + tlv(0x7FFF, b"", length=4), "attribute 0x7fff at offset 24 claims 4 bytes, only 0 left"),
    (tlv(0x8000, b"abcd") + tlv(Attribute.XOR_MAPPED_ADDRESS, bytes(8), length=0xFFFF),
     "XOR-MAPPED-ADDRESS at offset 28 claims 65535 bytes, only 8 left"),
])
def test_truncated_attribute_message(body: bytes, message: str) -> None:
    assert refusal(raw_message(body)) == message


@pytest.mark.parametrize(("attr", "value", "message"), [
    (Attribute.XOR_MAPPED_ADDRESS, b"", "XOR-MAPPED-ADDRESS is malformed (0 bytes: ...)"),
    (Attribute.MAPPED_ADDRESS, b"\x00\x01\x0d\x96\xcb\x00\x71\x01" + bytes(4),
     "MAPPED-ADDRESS is malformed (12 bytes: 00010d96...)"),
    (Attribute.OTHER_ADDRESS, b"\x00\x03\x0d\x96\xcb\x00\x71\x01", "OTHER-ADDRESS is malformed (8 bytes: 00030d96...)"),
    (Attribute.RESPONSE_ORIGIN, b"\x00\x02\x0d\x96\xcb\x00\x71\x01",
     "RESPONSE-ORIGIN is malformed (8 bytes: 00020d96...)"),
    (Attribute.XOR_MAPPED_ADDRESS, b"\x00\x00\x0d\x96\xcb\x00\x71\x01",
     "XOR-MAPPED-ADDRESS is malformed (8 bytes: 00000d96...)"),
    (Attribute.XOR_MAPPED_ADDRESS, b"\x00\x01\x0d\x96" + bytes(16),
     "XOR-MAPPED-ADDRESS is malformed (20 bytes: 00010d96...)"),
    (Attribute.CHANGED_ADDRESS, b"\x01\x01\x0d\x96\xcb\x00\x71\x01",
     "CHANGED-ADDRESS is malformed (8 bytes: 01010d96...)"),
])
def test_address_refusal_message(attr: Attribute, value: bytes, message: str) -> None:
    assert refusal(raw_message(tlv(attr, value))) == message


@pytest.mark.parametrize(("value", "message"), [
    (b"\x00\x00\x04", "ERROR-CODE is 3 bytes, need at least 4"),
    (b"\x00\x00\x02\x63", "ERROR-CODE class 2 number 99 is out of range"),   # 299
    (b"\x00\x00\x07\x00", "ERROR-CODE class 7 number 0 is out of range"),    # 700
    (b"\x00\x00\x04\x64", "ERROR-CODE class 4 number 100 is out of range"),
])
def test_error_code_refusal_message(value: bytes, message: str) -> None:
    assert refusal(raw_message(tlv(Attribute.ERROR_CODE, value), message_type=0x0111)) == message


@pytest.mark.parametrize(("value", "expected"), [
    (b"\x00\x00\x03\x00", (300, "")),
    (b"\x00\x00\x06\x63", (699, "")),
    (b"\x00\x00\x04\x00Bad RequestX", (400, "Bad RequestX")),   # only NULs are trimmed
    (b"\x00\x00\x04\x00X\x00", (400, "X")),
])
def test_error_code_edges(value: bytes, expected: tuple[int, str]) -> None:
    assert parse_message(raw_message(tlv(Attribute.ERROR_CODE, value), message_type=0x0111)).error_code == expected


@pytest.mark.parametrize(("value", "software"), [
    (b"BOX", "BOX"), (b"XX", "XX"), (b"\x00X\x00", "\x00X"), (b"", ""), (b"a" * 763, "a" * 763),
])
def test_software_text(value: bytes, software: str) -> None:
    assert parse_message(raw_message(tlv(Attribute.SOFTWARE, value))).software == software


def test_software_refusal_message() -> None:
    assert refusal(raw_message(tlv(Attribute.SOFTWARE, b"a" * 764))) == "SOFTWARE is 764 bytes, limit 763"


def test_fingerprint_refusal_messages() -> None:
    good = with_fingerprint(raw_message(tlv(Attribute.SOFTWARE, b"abc")))
    assert refusal(good[:-4] + bytes(4)) == f"FINGERPRINT 00000000 does not match {good[-4:].hex()}"
    late = raw_message(good[HEADER_LENGTH:] + tlv(Attribute.SOFTWARE, b"late"))
    assert refusal(late) == "FINGERPRINT is not the last attribute"
    assert refusal(raw_message(tlv(Attribute.FINGERPRINT, bytes(3)))) == "FINGERPRINT is 3 bytes, not 4"


@pytest.mark.parametrize(("attr", "length", "accepted"), [
    (Attribute.MESSAGE_INTEGRITY, 20, True),
    (Attribute.MESSAGE_INTEGRITY, 19, False),
    (Attribute.MESSAGE_INTEGRITY, 24, False),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 12, False),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 15, False),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 16, True),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 24, True),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 32, True),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 33, False),
    (Attribute.MESSAGE_INTEGRITY_SHA256, 36, False),
])
def test_integrity_lengths(attr: Attribute, length: int, accepted: bool) -> None:
    data = raw_message(tlv(attr, bytes(length)))
    if accepted:
        assert parse_message(data).attributes == ((attr, bytes(length)),)
    else:
        assert refusal(data) == f"{attr.name.replace('_', '-')} has invalid length {length}"
