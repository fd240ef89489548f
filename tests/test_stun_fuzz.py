"""Property tests for checks.protocols.stun: hostile bytes only ever yield a StunMessage or StunParseError."""

from __future__ import annotations

import ipaddress
import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from checks.protocols.stun import (
    BINDING,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    Attribute,
    MessageClass,
    StunMessage,
    StunParseError,
    TransportAddress,
    encode_address,
    encode_binding_request,
    encode_message,
    encode_message_type,
    parse_message,
)

# database=None: failing examples are not saved under .hypothesis/ in the work tree.
# Example counts keep each test within a few seconds.
FUZZ = settings(max_examples=1500, deadline=None, database=None)
STRUCTURED = settings(max_examples=600, deadline=None, database=None)
ROUND_TRIP = settings(max_examples=300, deadline=None, database=None)

KNOWN_TYPES = sorted(int(a) for a in Attribute)
ADDRESS_TYPES = [Attribute.MAPPED_ADDRESS, Attribute.XOR_MAPPED_ADDRESS, Attribute.OTHER_ADDRESS,
                 Attribute.RESPONSE_ORIGIN, Attribute.CHANGED_ADDRESS, Attribute.SOURCE_ADDRESS,
                 Attribute.ALTERNATE_SERVER]
# Types whose value the parser validates; the opaque round trip avoids them.
VALIDATED_TYPES = {*ADDRESS_TYPES, Attribute.ERROR_CODE, Attribute.SOFTWARE, Attribute.MESSAGE_INTEGRITY,
                   Attribute.MESSAGE_INTEGRITY_SHA256, Attribute.FINGERPRINT}


def parse_or_reject(data: bytes | bytearray | memoryview) -> StunMessage | None:
    """The property: a StunMessage or a StunParseError, never another exception."""
    try:
        msg = parse_message(data)
    except StunParseError as exc:
        assert str(exc)
        return None
    assert isinstance(msg, StunMessage)
    assert len(msg.transaction_id) == 12
    assert all(t < 0x8000 for t in msg.unknown_comprehension_required)
    if msg.fingerprint_present:
        assert msg.attributes[-1][0] == Attribute.FINGERPRINT
    return msg


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_reject(data)


@FUZZ
@given(st.integers(0, 0x3FFF), st.binary(min_size=12, max_size=12), st.binary(max_size=1600))
def test_arbitrary_attributes_behind_a_valid_header(message_type: int, tid: bytes, body: bytes) -> None:
    # Random bytes rarely pass the header checks; give them a valid header so attribute parsing is reached.
    body = body[:len(body) // 4 * 4]
    data = struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + tid + body
    parse_or_reject(bytearray(data))


addresses = st.builds(
    TransportAddress,
    st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
              st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)),
    st.integers(0, 0xFFFF),
)

error_code_values = st.builds(lambda code_class, number, reason: bytes([0, 0, code_class, number]) + reason,
                              st.integers(0, 255), st.integers(0, 255), st.binary(max_size=16))


FIXED_SIZES: dict[int, int] = {
    Attribute.MESSAGE_INTEGRITY: 20, Attribute.MESSAGE_INTEGRITY_SHA256: 32, Attribute.FINGERPRINT: 4,
}


def rarely(draw: st.DrawFn) -> bool:
    """True for a minority of draws: most fields stay honest so that later checks are reached."""
    return draw(st.integers(0, 7)) == 0


@st.composite
def attribute_tlvs(draw: st.DrawFn) -> bytes:
    attr_type = draw(st.one_of(st.sampled_from(KNOWN_TYPES), st.integers(0, 0xFFFF)))
    if rarely(draw):
        value = draw(st.binary(max_size=48))
    elif attr_type in ADDRESS_TYPES:
        value = encode_address(draw(addresses))
    elif attr_type == Attribute.ERROR_CODE:
        value = draw(error_code_values)
    elif attr_type in FIXED_SIZES:
        value = draw(st.binary(min_size=FIXED_SIZES[attr_type], max_size=FIXED_SIZES[attr_type]))
    else:
        value = draw(st.binary(max_size=48))
    length = draw(st.integers(0, 0xFFFF)) if rarely(draw) else len(value)
    pad = draw(st.integers(0, 4)) if rarely(draw) else -len(value) % 4
    return struct.pack("!HH", attr_type, length) + value + draw(st.binary(min_size=pad, max_size=pad))


@st.composite
def mangled_messages(draw: st.DrawFn) -> bytes:
    message_type = encode_message_type(draw(st.integers(0, 0xFFF)), draw(st.sampled_from(MessageClass)))
    tid = draw(st.binary(min_size=12, max_size=12))
    body = b"".join(draw(st.lists(attribute_tlvs(), max_size=12)))
    if draw(st.booleans()):
        # A correct FINGERPRINT, so that messages can get past it and the mutations below can break it.
        head = struct.pack("!HHI", message_type, len(body) + 8, MAGIC_COOKIE) + tid + body
        crc = zlib.crc32(head) ^ 0x5354554E
        body += struct.pack("!HHI", Attribute.FINGERPRINT, 4, crc)
    length = draw(st.integers(0, 0xFFFF)) if rarely(draw) else len(body)
    data = bytearray(struct.pack("!HHI", message_type, length, MAGIC_COOKIE) + tid + body)
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "truncate", "byte"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[position:]
        else:
            data[position] = draw(st.integers(0, 255))
    return bytes(data)


@STRUCTURED
@given(mangled_messages())
def test_structured_hostile_messages(data: bytes) -> None:
    parse_or_reject(data)
    parse_or_reject(memoryview(data))


@ROUND_TRIP
@given(st.binary(min_size=12, max_size=12), st.booleans(), st.booleans(), st.booleans())
def test_binding_request_round_trip(tid: bytes, change_ip: bool, change_port: bool, fingerprint: bool) -> None:
    data = encode_binding_request(tid, change_ip=change_ip, change_port=change_port, fingerprint=fingerprint)
    msg = parse_message(data)
    assert (msg.method, msg.message_class, msg.transaction_id) == (BINDING, MessageClass.REQUEST, tid)
    assert msg.fingerprint_present is fingerprint
    flags = (0x04 if change_ip else 0) | (0x02 if change_port else 0)
    expected = [(Attribute.CHANGE_REQUEST, flags.to_bytes(4, "big"))] if flags else []
    if fingerprint:
        expected.append((Attribute.FINGERPRINT, data[-4:]))
    assert list(msg.attributes) == expected
    assert msg.unknown_comprehension_required == ()
    assert len(data) == HEADER_LENGTH + 8 * bool(flags) + 8 * fingerprint


opaque_attributes = st.tuples(
    st.integers(0, 0xFFFF).filter(lambda t: t not in VALIDATED_TYPES),
    st.binary(max_size=64),
)


@ROUND_TRIP
@given(
    method=st.integers(0, 0xFFF),
    message_class=st.sampled_from(MessageClass),
    tid=st.binary(min_size=12, max_size=12),
    opaque=st.lists(opaque_attributes, max_size=10),
    placed=st.lists(st.tuples(st.sampled_from(ADDRESS_TYPES), addresses), max_size=6),
    fingerprint=st.booleans(),
)
def test_encode_message_round_trip(method: int, message_class: MessageClass, tid: bytes,
                                   opaque: list[tuple[int, bytes]],
                                   placed: list[tuple[Attribute, TransportAddress]], fingerprint: bool) -> None:
    address_attrs = [(t, encode_address(a, xor_transaction_id=tid if t == Attribute.XOR_MAPPED_ADDRESS else None))
                     for t, a in placed]
    attributes = opaque + address_attrs
    msg = parse_message(encode_message(method, message_class, tid, attributes, fingerprint=fingerprint))
    assert (msg.method, msg.message_class, msg.transaction_id) == (method, message_class, tid)
    assert list(msg.attributes[:len(attributes)]) == attributes
    assert msg.fingerprint_present is fingerprint
    known = {int(a) for a in Attribute}
    assert msg.unknown_comprehension_required == tuple(
        dict.fromkeys(t for t, _ in opaque if t < 0x8000 and t not in known))
    first: dict[int, TransportAddress] = {}
    for attr_type, address in placed:
        first.setdefault(attr_type, address)
    assert msg.xor_mapped_address == first.get(Attribute.XOR_MAPPED_ADDRESS)
    assert msg.mapped_address == first.get(Attribute.MAPPED_ADDRESS)
    assert msg.other_address == first.get(Attribute.OTHER_ADDRESS)
    assert msg.response_origin == first.get(Attribute.RESPONSE_ORIGIN)
    assert msg.changed_address == first.get(Attribute.CHANGED_ADDRESS)
    assert msg.source_address == first.get(Attribute.SOURCE_ADDRESS)
    assert msg.alternate_server == first.get(Attribute.ALTERNATE_SERVER)
