"""STUN client transactions against scripted servers on loopback: every way an answer can be wrong."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest

from checks.contract import Reason
from checks.protocols import stun
from checks.transport.stun_client import Deadline, StunClient, cached_rto


def success(request: bytes, mapped: tuple[str, int], extra=()) -> bytes:
    tid = request[8:20]
    address = stun.TransportAddress(ipaddress.ip_address(mapped[0]), mapped[1])
    attrs = [(stun.Attribute.XOR_MAPPED_ADDRESS, stun.encode_address(address, xor_transaction_id=tid)), *extra]
    return stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, tid, attrs)


class ScriptedServer:
    """A UDP socket on loopback that answers request N with script(N, request, source) (None: stay silent)."""

    def __init__(self, script, host="127.0.0.1"):
        self.script = script
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.requests: list[bytes] = []

    def start(self):
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_request)
        return self

    def _on_request(self):
        data, source = self.sock.recvfrom(2048)
        self.requests.append(data)
        reply = self.script(len(self.requests), data, source)
        for payload, sender in reply if isinstance(reply, list) else ([reply] if reply else []):
            (sender or self.sock).sendto(payload, source)

    def close(self):
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


# The default deadline only bounds a hang: answered transactions end at the answer.
def transact(script, *, timeout=30.0, rto=0.05, **kwargs):
    async def main():
        server = ScriptedServer(script).start()
        try:
            with StunClient.open() as client:
                answer = await client.binding(server.address, deadline=Deadline(time.monotonic() + timeout), rto=rto, **kwargs)
                return answer, server.requests, client
        finally:
            server.close()

    return asyncio.run(main())


def test_a_valid_answer_gives_the_mapped_address_and_an_rtt():
    # An RTO longer than any wait: the first request is the one answered, however busy the machine.
    answer, requests, _ = transact(lambda n, req, src: (success(req, src), None), rto=60.0)
    assert answer.kind is Reason.SUCCESS
    assert answer.mapped.port > 0 and str(answer.mapped.ip) == "127.0.0.1"
    assert answer.attempts == 1 and answer.rtt_seconds is not None
    request = stun.parse_message(requests[0])
    assert request.message_class is stun.MessageClass.REQUEST and request.fingerprint_present


def test_a_lost_request_is_retransmitted_and_its_rtt_not_trusted():
    answer, requests, _ = transact(lambda n, req, src: (success(req, src), None) if n == 2 else None)
    # At least the lost one and the answered one (a late event loop may send another meanwhile).
    assert answer.kind is Reason.SUCCESS and answer.attempts >= 2
    assert len(set(requests)) == 1  # same transaction ID on a retransmission
    assert answer.rtt_seconds is None  # Karn: ambiguous sample


def test_silence_is_no_response_with_retransmissions_doubling():
    answer, requests, _ = transact(lambda n, req, src: None, timeout=0.5, rto=0.05)
    assert answer.kind is Reason.NO_RESPONSE
    # Sends fall due at 0, 0.05, 0.15, 0.35 s (then 0.75): doubling fits at most four in 0.5 s, a
    # fixed 0.05 s ten. A busy machine may send fewer, never more.
    assert 1 <= len(requests) <= 4 and answer.attempts == len(requests)


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (lambda req, src: req[:20] + b"\x00", "malformed"),
        (lambda req, src: bytes([0x01, 0x01, 0, 0]) + req[4:8] + req[8:20], "without XOR-MAPPED-ADDRESS"),
        (lambda req, src: stun.encode_message(stun.BINDING, stun.MessageClass.REQUEST, req[8:20]), "not a response"),
        (lambda req, src: stun.encode_message(0x003, stun.MessageClass.SUCCESS_RESPONSE, req[8:20]), "not Binding"),
        (lambda req, src: success(req, src, [(0x0777, b"\x00" * 4)]), "comprehension-required"),
        (lambda req, src: success(req, ("2001:db8::1", 4000)), "not IPv4"),
    ],
)
def test_a_wrong_answer_is_invalid_with_a_reason(reply, detail):
    answer, _, _ = transact(lambda n, req, src: (reply(req, src), None), timeout=1.0)
    assert answer.kind is Reason.INVALID_RESPONSE
    assert detail in answer.detail


def test_an_error_response_is_reported_with_its_code():
    def error(n, req, src):
        value = bytes([0, 0, 4, 20]) + b"Unknown Attribute"
        return stun.encode_message(stun.BINDING, stun.MessageClass.ERROR_RESPONSE, req[8:20],
                                   [(stun.Attribute.ERROR_CODE, value)]), None

    answer, _, _ = transact(error)
    assert answer.kind is Reason.PEER_ERROR and "420 Unknown Attribute" in answer.detail


def test_an_answer_from_another_address_is_refused():
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    try:
        answer, _, _ = transact(lambda n, req, src: (success(req, src), other), timeout=1.0)
    finally:
        other.close()
    assert answer.kind is Reason.INVALID_RESPONSE
    assert "answer came from 127.0.0.2" in answer.detail


def test_junk_and_stale_answers_are_ignored_until_the_real_one():
    def noisy(n, req, src):
        stale = success(stun.encode_binding_request(stun.new_transaction_id()), src)
        return [(b"\xff" * 40, None), (stale, None), (success(req, src), None)]

    answer, _, client = transact(noisy)
    assert answer.kind is Reason.SUCCESS
    assert client.unsolicited == 2


def test_a_send_the_kernel_refuses_is_a_network_error():
    async def main():
        with StunClient.open() as client:
            # Limited broadcast without SO_BROADCAST: the kernel refuses (EACCES), nothing is sent.
            return await client.binding(("255.255.255.255", 3478), deadline=Deadline(time.monotonic() + 1))

    answer = asyncio.run(main())
    assert answer.kind is Reason.NETWORK_ERROR
    assert answer.attempts == 0 and "send failed: Permission denied" in answer.detail


def test_default_schedule_starts_at_500_ms_and_doubles():
    answer, requests, _ = transact(lambda n, req, src: None, timeout=1.6, rto=0.5)
    # RFC 8489 §6.2.1: sends fall due at 0, 0.5 and 1.5 s, the next at 3.5: never more than three
    # in 1.6 s (a fixed 0.5 s RTO would fit four); a busy machine may send fewer.
    assert answer.kind is Reason.NO_RESPONSE and 1 <= len(requests) <= 3


def test_a_bad_copy_does_not_hide_a_good_answer_that_follows():
    def bad_then_good(n, req, src):
        return [(req[:20] + b"\x00\x00\x00\x00", None), (success(req, src), None)]

    answer, _, _ = transact(bad_then_good)
    assert answer.kind is Reason.SUCCESS


def test_transactions_share_one_socket_concurrently():
    async def main():
        servers = [ScriptedServer(lambda n, req, src: (success(req, src), None)).start() for _ in range(3)]
        try:
            with StunClient.open() as client:
                deadline = Deadline(time.monotonic() + 30)  # only a bound on a hang: all three answer
                answers = await asyncio.gather(*(client.binding(s.address, deadline=deadline, rto=0.05) for s in servers))
                return answers, client.local_port
        finally:
            for server in servers:
                server.close()

    answers, port = asyncio.run(main())
    assert [a.kind for a in answers] == [Reason.SUCCESS] * 3
    assert {a.mapped.port for a in answers} == {port}  # one socket, one mapping
    assert len({a.server for a in answers}) == 3


def test_cached_rto_follows_rfc_8489_with_a_floor():
    assert cached_rto(None) == 0.5
    assert cached_rto(0.0001) == 0.1
    assert cached_rto(0.2) == pytest.approx(0.6)


def test_only_junk_from_the_server_is_not_mistaken_for_silence():
    answer, _, _ = transact(lambda n, req, src: (b"\x00\x01" + b"\xee" * 30, None), timeout=1.0)
    assert answer.kind is Reason.INVALID_RESPONSE
    assert "datagrams from there matched no request" in answer.detail
