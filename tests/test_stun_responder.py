"""xcheck's own STUN requests against `xcheck responder`'s STUN: answered, and never with more bytes
than they had (the responder's no-amplification promise). On loopback, any user; in the lab,
tests/test_lab_stun_responder.py."""

from __future__ import annotations

import asyncio
import random
import struct
import time

import pytest

from agent import runner
from agent.responder.stun_server import StunServer, serve_stun
from checks.probes import nat_behavior, stun_binding
from checks.protocols import stun
from checks.contract import Reason, Status
from checks.targets import Endpoint, Targets
from checks.transport.stun_client import REQUEST_BYTES, Deadline, StunClient

SOURCE = {4: ("198.51.100.7", 40000), 6: ("2001:db8:1::7", 40000)}
SERVERS = {4: (("203.0.113.10", 3478), ("203.0.113.11", 3479)), 6: (("2001:db8::10", 3478), ("2001:db8::11", 3479))}
FLAGS = [{}, {"change_ip": True}, {"change_port": True}, {"change_ip": True, "change_port": True}]


@pytest.fixture
def sizes(monkeypatch) -> list[tuple[int, int | None]]:
    """(request, answer or None) sizes of every datagram the responder's STUN judges."""
    judged: list[tuple[int, int | None]] = []
    reply = StunServer.reply

    def recording(self, data, source, local=None):
        answered = reply(self, data, source, local)
        judged.append((len(data), len(answered[0]) if answered else None))
        return answered

    monkeypatch.setattr(StunServer, "reply", recording)
    return judged


async def serve_on_loopback(alternate: bool) -> tuple[list[asyncio.DatagramTransport], StunServer, tuple[str, int]]:
    """The responder's STUN on 127.0.0.1 (and 127.0.0.2 with `alternate`), at free ports."""
    for _ in range(50):
        port, other_port = random.sample(range(20000, 60000), 2)
        try:
            transports, server = await serve_stun("127.0.0.1", port, ("127.0.0.2", other_port) if alternate else None)
        except OSError:  # taken
            continue
        return transports, server, ("127.0.0.1", port)
    raise AssertionError("no free ports on 127.0.0.1 and 127.0.0.2")


def padded_request(padding: int) -> bytes:
    """A Binding request with `padding` bytes of PADDING, built by hand: the encoder stops at 1500 bytes
    and `turnutils_natdiscovery -P` does not."""
    header = struct.pack("!HHI12s", 0x0001, 4 + padding, stun.MAGIC_COOKIE, stun.new_transaction_id())
    return header + struct.pack("!HH", stun.Attribute.PADDING, padding) + bytes(padding)


@pytest.mark.parametrize("alternate", [False, True], ids=["one address", "RFC 5780"])
def test_xcheck_is_answered_by_the_responder_and_never_amplified(alternate, sizes):
    async def main():
        transports, server, address = await serve_on_loopback(alternate)
        try:
            results = await runner.run_checks([stun_binding.CHECK, nat_behavior.CHECK],
                                              Targets(stun=(Endpoint(*address),)), timeout=30)
            with StunClient.open() as client:  # a UDP sample of the latency check, as it sends it
                sample = await client.binding(address, deadline=Deadline(time.monotonic() + 30))
            return {result.name: result for result in results}, sample, server
        finally:
            for transport in transports:
                transport.close()

    results, sample, server = asyncio.run(main())
    binding = results["stun_binding"]
    assert binding.status is Status.OK, binding.detail
    assert binding.results[0].evidence.mapped_address == "127.0.0.1"
    assert sample.kind is Reason.SUCCESS, sample.detail
    behavior = results["nat_behavior"]
    if alternate:
        assert behavior.status is Status.OK, behavior.detail
        # No NAT on loopback.
        discovered = behavior.results[0].evidence
        assert discovered.mapping.behavior == nat_behavior.ENDPOINT_INDEPENDENT
        assert discovered.filtering.behavior == nat_behavior.ENDPOINT_INDEPENDENT
    else:
        assert behavior.reason is Reason.NOT_SUPPORTED
    assert set(server.counts) == {"answered"}, server.counts  # none too large, none rate-limited
    assert sizes and all(answer is not None and answer <= request for request, answer in sizes), sizes


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda flags: "+".join(flags) or "no-flags")
def test_a_request_as_large_as_the_largest_answer_is_answered(version, flags):
    largest = stun.largest_binding_answer_bytes(version)
    request = stun.encode_binding_request(stun.new_transaction_id(), min_bytes=largest, **flags)
    primary, other = SERVERS[version]
    answer, _ = StunServer(primary, other).reply(request, SOURCE[version], primary)
    assert len(answer) <= len(request) == largest


@pytest.mark.parametrize("version", [4, 6])
def test_the_largest_answer_is_what_the_responder_sends(version):
    """Pins `largest_binding_answer_bytes` to the responder's RFC 5780 answer, the largest it gives."""
    primary, other = SERVERS[version]
    request = stun.encode_binding_request(stun.new_transaction_id(), change_ip=True, change_port=True, min_bytes=128)
    answer, _ = StunServer(primary, other).reply(request, SOURCE[version], primary)
    assert len(answer) == stun.largest_binding_answer_bytes(version)
    request = stun.encode_binding_request(stun.new_transaction_id(), min_bytes=128)
    plain, _ = StunServer(primary).reply(request, SOURCE[version])
    assert len(plain) < len(answer)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda flags: "+".join(flags) or "no-flags")
def test_xchecks_requests_are_sized_with_software_not_padding(flags):
    """PADDING is comprehension-required and asks an RFC 5780 server for an MTU of padding back
    (coturn 4.6.1: 1604 bytes for 64): xcheck sizes its requests with SOFTWARE, which servers ignore."""
    request = stun.encode_binding_request(stun.new_transaction_id(), min_bytes=REQUEST_BYTES, **flags)
    message = stun.parse_message(request)
    assert len(request) == REQUEST_BYTES == stun.largest_binding_answer_bytes(4)
    assert message.software.rstrip() == stun.SOFTWARE_NAME and message.unknown_comprehension_required == ()
    assert stun.Attribute.PADDING not in {attribute for attribute, _ in message.attributes}


@pytest.mark.parametrize("padding", [64, 512, 1500])
def test_a_padded_request_gets_padding_back_up_to_its_own_size(padding):
    """RFC 5780 §6.1: PADDING in the request, PADDING in the answer; here never past the request's size."""
    primary, other = SERVERS[4]
    request = padded_request(padding)
    answer, _ = StunServer(primary, other).reply(request, SOURCE[4], primary)
    message = stun.parse_message(answer)
    assert len(answer) == min(len(request), stun.MAX_MESSAGE_BYTES)
    assert stun.Attribute.PADDING in {attribute for attribute, _ in message.attributes}
    assert str(message.xor_mapped_address) == "198.51.100.7:40000"


def test_a_padded_request_smaller_than_the_answer_is_dropped():
    server = StunServer(*SERVERS[4])
    assert server.reply(padded_request(4), SOURCE[4], SERVERS[4][0]) is None
    assert server.counts["too_large"] == 1
