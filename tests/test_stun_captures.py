"""The codec on real coturn 4.6.1 answers recorded in the lab (provenance: tests/fixtures/stun/README.md)."""

from __future__ import annotations

from pathlib import Path

from checks.protocols import stun

FIXTURES = Path(__file__).parent / "fixtures" / "stun"


def load(name: str) -> stun.StunMessage:
    text = (FIXTURES / name).read_text()
    return stun.parse_message(bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines())))


def test_rfc5780_binding_success():
    msg = load("coturn-4.6.1-binding-success.hex")
    assert msg.message_class is stun.MessageClass.SUCCESS_RESPONSE and msg.method == stun.BINDING
    assert msg.transaction_id == b"xcheck-bind0"
    assert str(msg.xor_mapped_address) == "203.0.113.1:40000"
    assert msg.mapped_address == msg.xor_mapped_address
    assert str(msg.response_origin) == "203.0.113.10:3478"
    assert str(msg.other_address) == "203.0.113.11:3479"
    assert msg.software == "Coturn-4.6.1 'Gorst'"
    assert not msg.fingerprint_present and msg.unknown_comprehension_required == ()


def test_change_requests_are_answered_from_the_other_addresses():
    port = load("coturn-4.6.1-change-port.hex")
    both = load("coturn-4.6.1-change-ip-port.hex")
    assert str(port.response_origin) == "203.0.113.10:3479"
    assert str(both.response_origin) == "203.0.113.11:3479"
    assert str(both.xor_mapped_address).startswith("198.51.100.2:")


def test_plain_server_has_no_other_address():
    msg = load("coturn-4.6.1-plain-binding-success.hex")
    assert msg.other_address is None and str(msg.xor_mapped_address) == "203.0.113.1:40004"


def test_error_responses_with_nul_padded_reasons():
    unknown = load("coturn-4.6.1-error-420.hex")
    assert unknown.message_class is stun.MessageClass.ERROR_RESPONSE
    assert unknown.error_code == (420, "Unknown Attribute")
    plain = load("coturn-4.6.1-plain-change-request-420.hex")
    assert plain.error_code[0] == 420 and "RFC 5780" in plain.error_code[1]
