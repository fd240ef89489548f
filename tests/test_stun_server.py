"""The responder's STUN answerer: never an amplifier, rate-limited per source, silent to junk."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.responder.stun_server import BURST, StunServer, serve_stun
from checks.contract import Reason
from checks.protocols import stun
from checks.transport.stun_client import Deadline, StunClient

SOURCE = ("198.51.100.7", 40000)


def answer_bytes(server, data, source, local=None):
    """The answer's bytes, or None when the server stays silent."""
    answered = server.reply(data, source, local)
    return answered[0] if answered else None


def request(**kwargs) -> bytes:
    return stun.encode_binding_request(stun.new_transaction_id(), **kwargs)


def test_a_padded_request_gets_a_valid_answer_no_larger_than_itself():
    server = StunServer()
    data = request(padding_bytes=16)
    answer = answer_bytes(server, data, SOURCE)
    assert answer is not None and len(answer) <= len(data)
    message = stun.parse_message(answer)
    assert message.message_class is stun.MessageClass.SUCCESS_RESPONSE
    assert message.transaction_id == data[8:20]
    assert str(message.xor_mapped_address) == "198.51.100.7:40000"


def test_an_unpadded_request_would_be_amplified_so_it_is_dropped():
    server = StunServer()
    assert answer_bytes(server, request(), SOURCE) is None
    assert answer_bytes(server, request(fingerprint=False), SOURCE) is None
    assert server.counts["too_large"] == 2


def test_junk_responses_indications_and_change_requests_get_nothing():
    server = StunServer()
    tid = stun.new_transaction_id()
    for data in (b"", b"\x00" * 19, b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40,
                 stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, tid, [(stun.Attribute.PADDING, bytes(32))]),
                 stun.encode_message(stun.BINDING, stun.MessageClass.INDICATION, tid, [(stun.Attribute.PADDING, bytes(32))]),
                 stun.encode_message(stun.BINDING, stun.MessageClass.REQUEST, tid, [(0x0777, bytes(32))]),
                 request(change_ip=True, change_port=True, padding_bytes=64)):
        assert answer_bytes(server, data, SOURCE) is None
    assert server.counts["answered"] == 0


def test_rate_limit_per_source():
    now = [0.0]
    server = StunServer(clock=lambda: now[0])
    padded = request(padding_bytes=16)
    answered = sum(answer_bytes(server, padded, SOURCE) is not None for _ in range(200))
    assert answered == BURST
    assert answer_bytes(server, padded, ("203.0.113.99", 1)) is not None  # another source is not starved
    now[0] += 1.0
    assert sum(answer_bytes(server, padded, SOURCE) is not None for _ in range(200)) == 50  # refilled at the rate


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_never_more_bytes_out_than_in(data):
    answer = answer_bytes(StunServer(), data, SOURCE)
    assert answer is None or len(answer) <= len(data)


def test_our_client_measures_round_trips_against_it_on_loopback():
    async def main():
        [transport], server = await serve_stun("127.0.0.1", 0)
        port = transport.get_extra_info("sockname")[1]
        try:
            with StunClient.open() as client:
                # An RTO longer than the deadline: the first request is answered (else there is no RTT),
                # however late a busy machine runs the server.
                return await client.binding(("127.0.0.1", port), deadline=Deadline(time.monotonic() + 30), rto=60.0)
        finally:
            transport.close()

    answer = asyncio.run(main())
    assert answer.kind is Reason.SUCCESS and answer.rtt_seconds is not None


def test_rfc5780_answers_name_the_other_address_and_honour_change_request():
    server = StunServer(("203.0.113.10", 3478), ("203.0.113.11", 3479))
    assert len(server.listening_addresses()) == 4
    plain = server.reply(request(padding_bytes=64), SOURCE, ("203.0.113.10", 3478))
    message = stun.parse_message(plain[0])
    assert plain[1] == ("203.0.113.10", 3478)
    assert str(message.other_address) == "203.0.113.11:3479" and str(message.response_origin) == "203.0.113.10:3478"
    for flags, origin in (({"change_ip": True, "change_port": True}, ("203.0.113.11", 3479)),
                          ({"change_port": True}, ("203.0.113.10", 3479)),
                          ({"change_ip": True}, ("203.0.113.11", 3478))):
        answer, sent_from = server.reply(request(padding_bytes=64, **flags), SOURCE, ("203.0.113.10", 3478))
        assert sent_from == origin
        assert str(stun.parse_message(answer).response_origin) == f"{origin[0]}:{origin[1]}"
    # Received on the alternate address: OTHER-ADDRESS is the primary one.
    answer, _ = server.reply(request(padding_bytes=64), SOURCE, ("203.0.113.11", 3479))
    assert str(stun.parse_message(answer).other_address) == "203.0.113.10:3478"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_rfc5780_mode_is_no_amplifier_either(data):
    answer = answer_bytes(StunServer(("203.0.113.10", 3478), ("203.0.113.11", 3479)), data, SOURCE, ("203.0.113.10", 3478))
    assert answer is None or len(answer) <= len(data)
