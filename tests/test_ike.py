"""IKE codec, the UDP exchange under it, and the responder's IKE stub, without a lab.

References no one here wrote: scapy's IKEv2/ISAKMP dissectors read our requests back,
hashlib computes RFC 7296 §2.23's NAT_DETECTION hashes independently, and answers recorded
from strongSwan's charon (tests/fixtures/ike/, see the README there) are parsed strictly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.responder.ike_stub import BURST, RATE_PER_SECOND, IkeStub, answer, serve_ike
from agent.responder.rate_limit import TokenBuckets
from agent.verdicts import load_ruleset
from checks.contract import Reason, evidence_dict
from checks.protocols import ike
from checks.transport.icmp_errors import IcmpError, classify_icmp
from checks.transport.udp_probe import InvalidAnswer, UdpProbe

FIXTURES = Path(__file__).parent / "fixtures" / "ike"
LOCAL, REMOTE = ("10.0.0.2", 40000), ("203.0.113.10", 500)
OFFER = load_ruleset("azure-current").ike_offer  # what the probes propose under the default rule set


def fixture(name: str) -> dict:
    """A recorded exchange: local, remote (host, port), request and answer bytes."""
    fields = dict(line.split(" ", 1) for line in (FIXTURES / f"strongswan-{name}.hex").read_text().splitlines()
                  if line and not line.startswith("#"))
    address = lambda text: (text.rsplit(":", 1)[0], int(text.rsplit(":", 1)[1]))  # noqa: E731
    return {"local": address(fields["local"]), "remote": address(fields["remote"]),
            "request": bytes.fromhex(fields["request"]), "answer": bytes.fromhex(fields["answer"])}


def spi_of(recorded: dict) -> bytes:
    start = 4 if recorded["remote"][1] == 4500 else 0  # behind the non-ESP marker
    return recorded["request"][start:start + 8]


@pytest.fixture
def scapy_log():
    """Records of scapy's own logger, which prints to stderr itself: parsing must never make it speak."""
    from scapy.config import conf

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("scapy")
    logger.addHandler(handler)
    threshold, conf.warning_threshold = conf.warning_threshold, 0  # scapy mutes repeated warnings otherwise
    yield records
    conf.warning_threshold = threshold
    logger.removeHandler(handler)


# ---------------------------------------------------------------------------------------
# NAT_DETECTION (RFC 7296 §2.23)


def test_nat_detection_hash_matches_a_worked_example():
    # SHA-1(SPIi | SPIr | IP | port), worked out by hand with hashlib and pinned.
    spi_i, spi_r = bytes.fromhex("0102030405060708"), bytes(8)
    worked = hashlib.sha1(spi_i + spi_r + bytes([192, 0, 2, 1]) + bytes([0x01, 0xF4])).digest()
    assert worked.hex() == "644b4575455bd6fcc1efe2be8162a9218e448e5f"
    assert ike.nat_detection_hash(spi_i, spi_r, "192.0.2.1", 500) == worked
    responder = bytes.fromhex("1112131415161718")
    assert ike.nat_detection_hash(spi_i, responder, "203.0.113.10", 4500).hex() == \
        "75fe15311cab535daaccbde5cd5edb07d95933ca"


def test_charon_hashed_the_address_the_nat_gave_us():
    """Behind the lab's MASQUERADE charon saw the router's address (203.0.113.1) with our port kept."""
    recorded = fixture("ikev2-sa-init-nat")
    answer_ = ike.parse_ikev2_answer(recorded["answer"], spi_of(recorded), natt=False, offer=OFFER)
    seen = ike.nat_detection_hash(spi_of(recorded), answer_.responder_spi, "203.0.113.1", recorded["local"][1])
    assert answer_.nat_detection_destination == seen
    assert ike.nat_detection_hash(spi_of(recorded), answer_.responder_spi, *recorded["remote"]) \
        in answer_.nat_detection_source


@pytest.mark.parametrize("name, nat", [("ikev2-sa-init-nat", True), ("ikev2-sa-init-public", False),
                                       ("natt-sa-init-nat", True)])
def test_nat_verdict_from_recorded_responses(name, nat):
    recorded = fixture(name)
    natt = recorded["remote"][1] == 4500
    answer_ = ike.parse_ikev2_answer(recorded["answer"], spi_of(recorded), natt=natt, offer=OFFER)
    verdict = ike.nat_verdict(answer_, spi_of(recorded), recorded["local"], recorded["remote"])
    assert verdict == ike.NatVerdict(nat_before_us=nat, nat_before_responder=False)


def test_a_notify_says_nothing_about_nat():
    recorded = fixture("ikev2-invalid-ke")
    answer_ = ike.parse_ikev2_answer(recorded["answer"], spi_of(recorded), natt=False, offer=OFFER)
    assert ike.nat_verdict(answer_, spi_of(recorded), recorded["local"], recorded["remote"]) == \
        ike.NatVerdict(None, None)


# ---------------------------------------------------------------------------------------
# requests, as scapy reads them


def test_ike_sa_init_as_scapy_reads_it():
    from scapy.contrib.ikev2 import IKEv2, IKEv2_KE, IKEv2_Nonce, IKEv2_Notify, IKEv2_SA

    request = ike.IkeSaInit.build(LOCAL, REMOTE, natt=False, offer=OFFER)
    message = IKEv2(request.datagram)
    assert (message.init_SPI, message.resp_SPI) == (request.spi, bytes(8))
    assert (message.version, message.exch_type, int(message.flags), message.id) == (0x20, 34, 0x08, 0)
    assert message.length == len(request.datagram)
    assert [type(layer) for layer in message.iterpayloads()][1:] == \
        [IKEv2_SA, IKEv2_KE, IKEv2_Nonce, IKEv2_Notify, IKEv2_Notify]
    offered = []
    proposal = message[IKEv2_SA].prop
    while proposal:
        transforms, transform = {}, proposal.trans
        while transform:
            transforms[transform.transform_type] = (transform.transform_id, transform.key_length
                                                    if transform.length == 12 else None)
            transform = transform.payload
        offered.append((proposal.proposal, transforms))
        proposal = proposal.payload
    assert offered == [  # Azure's AES256/SHA256, AES256/SHA1, AES128/SHA1 with DH 2, then AES256/SHA256 with DH 14
        (1, {1: (12, 256), 2: (5, None), 3: (12, None), 4: (2, None)}),
        (2, {1: (12, 256), 2: (2, None), 3: (2, None), 4: (2, None)}),
        (3, {1: (12, 128), 2: (2, None), 3: (2, None), 4: (2, None)}),
        (4, {1: (12, 256), 2: (5, None), 3: (12, None), 4: (14, None)}),
    ]
    ke = message[IKEv2_KE]
    assert ke.group == 2 and len(ke.ke) == 128 and 1 < int.from_bytes(ke.ke, "big") < ike.MODP_GROUPS[2].prime - 1
    assert len(message[IKEv2_Nonce].nonce) == 32
    source, destination = [layer for layer in message.iterpayloads() if isinstance(layer, IKEv2_Notify)]
    assert (source.type, destination.type) == (16388, 16389)
    # The request's hashes take the responder SPI as zero.
    by_hand = lambda ip, port: hashlib.sha1(  # noqa: E731
        request.spi + bytes(8) + socket.inet_aton(ip) + struct.pack("!H", port)).digest()
    assert (source.notify, destination.notify) == (by_hand(*LOCAL), by_hand(*REMOTE))


def test_natt_request_sits_behind_the_non_esp_marker_and_hashes_port_4500():
    from scapy.contrib.ikev2 import IKEv2, IKEv2_KE, IKEv2_Notify

    request = ike.IkeSaInit.build(LOCAL, ("203.0.113.10", 4500), natt=True, offer=OFFER, dh_group=14)
    assert request.datagram[:4] == bytes(4)
    message = IKEv2(request.datagram[4:])
    assert message.length == len(request.datagram) - 4
    assert message[IKEv2_KE].group == 14 and len(message[IKEv2_KE].ke) == 256
    notifies = {layer.type: layer.notify for layer in message.iterpayloads() if isinstance(layer, IKEv2_Notify)}
    assert notifies[16389] == ike.nat_detection_hash(request.spi, bytes(8), "203.0.113.10", 4500)


def test_a_cookie_retry_changes_nothing_but_the_cookie_in_front():
    from scapy.contrib.ikev2 import IKEv2

    first = ike.IkeSaInit.build(LOCAL, REMOTE, natt=False, offer=OFFER)
    retry = first.with_cookie(b"\xc0" * 20)
    message = IKEv2(retry.datagram)
    assert message.next_payload == 41 and message.payload.type == 16390 and message.payload.notify == b"\xc0" * 20
    assert retry.datagram[:8] == first.datagram[:8]
    assert retry.datagram[28 + 28:] == first.datagram[28:]  # every payload after the 28-byte notify
    # After an INVALID_KE_PAYLOAD only the KE changes (RFC 7296 §2.6's example): the cookie stays valid.
    regrouped = retry.with_group(14)
    assert (regrouped.spi, regrouped.nonce, regrouped.cookie, regrouped.dh_group) == \
        (first.spi, first.nonce, b"\xc0" * 20, 14)
    assert IKEv2(regrouped.datagram).payload.type == 16390


def test_main_mode_as_scapy_reads_it():
    from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_SA

    request = ike.MainModeRequest.build(offer=OFFER)
    message = ISAKMP(request.datagram)
    assert (message.init_cookie, message.resp_cookie, message.exch_type) == (request.spi, bytes(8), 2)
    assert message.length == len(request.datagram)
    proposal = message[ISAKMP_payload_SA].prop
    assert (proposal.proto, proposal.trans_nb) == (1, 3)
    transforms, transform = [], proposal.trans
    while transform:
        transforms.append(dict(transform.transforms))
        transform = transform.payload
    assert [(t["Encryption"], t["KeyLength"], t["Hash"]) for t in transforms] == \
        [("AES-CBC", 256, "SHA2-256"), ("AES-CBC", 256, "SHA"), ("AES-CBC", 128, "SHA")]
    assert all((t["Authentication"], t["GroupDesc"], t["LifeDuration"]) == ("PSK", "1024MODPgr", 28800)
               for t in transforms)


# ---------------------------------------------------------------------------------------
# answers: recorded from charon, and broken on purpose


@pytest.mark.parametrize("name, kind, notify, detail", [
    ("ikev2-no-proposal-chosen", "notify", "NO_PROPOSAL_CHOSEN", None),
    ("ikev2-invalid-ke", "notify", "INVALID_KE_PAYLOAD", 14),
    ("ikev2-sa-init-nat", "ike_sa_init_response", None, "AES-CBC-256/PRF_HMAC_SHA2_256/SHA2-256-128/2048MODPgr"),
    ("natt-sa-init-nat", "ike_sa_init_response", None, "AES-CBC-256/PRF_HMAC_SHA2_256/SHA2-256-128/2048MODPgr"),
    ("ikev1-no-proposal-chosen", "notify", "NO-PROPOSAL-CHOSEN", None),
    ("ikev1-main-mode", "main_mode_response", None, "AES-CBC-256/SHA2-256/PSK/1024MODPgr"),
])
def test_recorded_answers_parse(name, kind, notify, detail, scapy_log):
    recorded = fixture(name)
    if name.startswith("ikev1"):
        parsed = ike.MainModeRequest(spi_of(recorded), recorded["request"], OFFER).parse_answer(recorded["answer"])
    else:
        parsed = ike.parse_ikev2_answer(recorded["answer"], spi_of(recorded), natt=name.startswith("natt"), offer=OFFER)
    assert (str(parsed.kind), parsed.notify) == (kind, notify)
    if kind == "notify" and name.startswith("ikev2"):
        assert parsed.requested_group == detail
    else:
        assert parsed.chosen_proposal == detail
    assert not scapy_log


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def _relength(message: bytes) -> bytes:
    return _patched(message, 24, struct.pack("!I", len(message)))


RESPONSE = fixture("ikev2-sa-init-nat")
SPI = spi_of(RESPONSE)
BROKEN_IKEV2 = {  # what was done to charon's IKE_SA_INIT response -> the reason given
    "truncated": (RESPONSE["answer"][:20], "shorter than an IKE header"),
    "longer than its header says": (RESPONSE["answer"] + b"\0", "header says"),
    "trailing bytes": (_relength(RESPONSE["answer"] + b"\0" * 4), "after the last payload"),
    "someone else's SPI": (_patched(RESPONSE["answer"], 0, b"\xff" * 8), "is not ours"),
    "IKEv1 version": (_patched(RESPONSE["answer"], 17, b"\x10"), "IKE version 1"),
    "not IKE_SA_INIT": (_patched(RESPONSE["answer"], 18, b"\x25"), "not IKE_SA_INIT"),
    "a request": (_patched(RESPONSE["answer"], 19, b"\x08"), "not a response"),
    "message ID 1": (_patched(RESPONSE["answer"], 20, b"\0\0\0\1"), "message ID"),
    "zero responder SPI": (_patched(RESPONSE["answer"], 8, bytes(8)), "zero responder SPI"),
    "first payload too long": (_patched(RESPONSE["answer"], 30, b"\xff\xff"), "claims 65535 bytes"),
    "first payload too short": (_patched(RESPONSE["answer"], 30, b"\0\3"), "claims 3 bytes"),
    # 28-byte header, SA header (4), proposal header (8), then the ENCR transform: its ID at +6 -> 3DES
    "chosen proposal not offered": (_patched(RESPONSE["answer"], 28 + 4 + 8 + 6, b"\0\x03"), "not one we offered"),
    "on 4500 without the marker": (RESPONSE["answer"], "no non-ESP marker"),
}


@pytest.mark.parametrize("case", list(BROKEN_IKEV2))
def test_broken_ikev2_answers_are_refused_with_the_reason(case, scapy_log):
    data, reason = BROKEN_IKEV2[case]
    with pytest.raises(ike.IkeParseError, match=reason):
        ike.parse_ikev2_answer(data, SPI, natt=case == "on 4500 without the marker", offer=OFFER)
    assert not scapy_log


def test_invalid_ke_must_name_a_group():
    recorded = fixture("ikev2-invalid-ke")
    three_bytes = _relength(_patched(recorded["answer"], 30, b"\0\x0b") + b"\0")
    with pytest.raises(ike.IkeParseError, match="not a 2-byte DH group"):
        ike.parse_ikev2_answer(three_bytes, spi_of(recorded), natt=False, offer=OFFER)


def test_a_cookie_is_an_answer_and_is_kept():
    from scapy.contrib.ikev2 import IKEv2, IKEv2_Notify

    cookie = IKEv2(init_SPI=SPI, resp_SPI=bytes(8), exch_type=34, flags=0x20) / IKEv2_Notify(type=16390,
                                                                                              notify=b"k" * 16)
    parsed = ike.parse_ikev2_answer(bytes(cookie), SPI, natt=False, offer=OFFER)
    assert (parsed.notify, parsed.cookie) == ("COOKIE", b"k" * 16)


# ---------------------------------------------------------------------------------------
# fuzz: any bytes give an answer or the module's own error, and scapy never speaks


def _parse_or_refuse(data: bytes, natt: bool) -> None:
    try:
        ike.parse_ikev2_answer(data, SPI, natt=natt, offer=OFFER)
    except ike.IkeParseError:
        pass
    try:
        ike.parse_ikev1_answer(data, SPI, offer=OFFER)
    except ike.IkeParseError:
        pass


_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_ANSWERS = [fixture(name)["answer"] for name in ("ikev2-sa-init-nat", "ikev2-invalid-ke", "ikev1-main-mode",
                                                 "ikev1-no-proposal-chosen", "ikev2-no-proposal-chosen")]


@_FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_any_bytes(scapy_log, data, natt):
    scapy_log.clear()  # one fixture serves every example
    _parse_or_refuse(data, natt)
    assert not scapy_log


@_FUZZ
@given(st.binary(min_size=2, max_size=500))
def test_fuzz_our_header_then_anything(scapy_log, body):
    scapy_log.clear()
    # Past the header checks, so that the payload walk and scapy's dissection get the junk.
    headers = ((33, 0x20, 34, 0x20), (41, 0x20, 34, 0x20), (1, 0x10, 2, 0), (11, 0x10, 5, 0))
    for first, version, exchange, flags in headers:
        message = SPI + b"\x11" * 8 + struct.pack("!BBBBII", first, version, exchange, flags, 0, 28 + len(body)) + body
        _parse_or_refuse(message, natt=False)
    assert not scapy_log


@_FUZZ
@given(st.sampled_from(_ANSWERS), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1,
                                           max_size=4))
def test_fuzz_recorded_answers_with_bytes_changed(scapy_log, answer_, changes):
    scapy_log.clear()
    data = bytearray(answer_)
    for offset, value in changes:
        data[offset % len(data)] = value
    spi = bytes(data[:8])  # keep the SPI check from ending every case early
    for parse in (lambda: ike.parse_ikev2_answer(bytes(data), spi, natt=False, offer=OFFER),
                  lambda: ike.parse_ikev1_answer(bytes(data), spi, offer=OFFER)):
        try:
            parse()
        except ike.IkeParseError:
            pass
    assert not scapy_log


# ---------------------------------------------------------------------------------------
# the responder's stub: answers, amplification bound, rate limit


SOURCE = ("198.51.100.7", 40000)


def test_stub_answers_ike_sa_init_with_no_proposal_chosen_for_our_spi():
    for natt in (False, True):
        request = ike.IkeSaInit.build(LOCAL, REMOTE, natt=natt, offer=OFFER)
        reply = answer(request.datagram, SOURCE, natt)
        assert len(reply) == (40 if natt else 36)
        parsed = request.parse_answer(reply)
        assert (parsed.notify, parsed.responder_spi) == ("NO_PROPOSAL_CHOSEN", bytes(8))
    main_mode = ike.MainModeRequest.build(offer=OFFER)
    assert main_mode.parse_answer(answer(main_mode.datagram, SOURCE, False)).notify == "NO-PROPOSAL-CHOSEN"


@pytest.mark.parametrize("case", ["junk", "a response", "nat-t without marker", "ikev1 on 4500", "multicast source",
                                  "port 0", "no KE"])
def test_stub_is_silent_to_anything_but_a_first_request(case):
    request = ike.IkeSaInit.build(LOCAL, REMOTE, natt=False, offer=OFFER).datagram
    data, source, natt = {
        "junk": (b"\xff" * 300, SOURCE, False),
        "a response": (RESPONSE["answer"], SOURCE, False),
        "nat-t without marker": (request, SOURCE, True),
        "ikev1 on 4500": (bytes(4) + ike.MainModeRequest.build(offer=OFFER).datagram, SOURCE, True),
        "multicast source": (request, ("224.0.0.1", 500), False),
        "port 0": (request, ("198.51.100.7", 0), False),
        "no KE": (_relength(request[:28 + 180]), SOURCE, False),  # header and SA only
    }[case]
    assert answer(data, source, natt) is None


_REQUESTS = [ike.IkeSaInit.build(LOCAL, REMOTE, natt=False, offer=OFFER).datagram,
             ike.MainModeRequest.build(offer=OFFER).datagram]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.builds(lambda base, cut: base[:cut], st.sampled_from(_REQUESTS),
                                                    st.integers(0, 600))),
       st.booleans())
def test_stub_never_answers_with_more_bytes_than_it_got(data, natt):
    for candidate in (data, _relength(data) if len(data) >= 28 else data, bytes(4) + data):
        reply = answer(candidate, SOURCE, natt)
        assert reply is None or len(reply) <= len(candidate)


def test_stub_rate_limits_each_source_across_both_ports():
    now = [0.0]
    buckets = TokenBuckets(RATE_PER_SECOND, BURST, lambda: now[0])
    log = logging.getLogger("test")
    ike_port, natt_port = IkeStub(False, buckets, log), IkeStub(True, buckets, log)
    plain = ike.IkeSaInit.build(LOCAL, REMOTE, natt=False, offer=OFFER).datagram
    natt = ike.IkeSaInit.build(LOCAL, REMOTE, natt=True, offer=OFFER).datagram
    answered = sum(stub.handle(data, SOURCE) is not None
                   for _ in range(int(BURST)) for stub, data in ((ike_port, plain), (natt_port, natt)))
    assert answered == BURST  # one bucket for both ports
    assert ike_port.handle(plain, SOURCE) is None and ike_port.counts["rate_limited"] >= 1
    assert ike_port.handle(plain, ("198.51.100.8", 40000)) is not None  # another source has its own
    now[0] += 1 / RATE_PER_SECOND
    assert ike_port.handle(plain, SOURCE) is not None
    assert ike_port.handle(plain, SOURCE) is None


# ---------------------------------------------------------------------------------------
# the UDP exchange, on loopback


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _exchange(target, request, judge, seconds, **schedule):
    with UdpProbe.open(target) as udp:
        return await udp.exchange(request, judge, deadline=time.monotonic() + seconds, **schedule)


# Longer than any test waits: no retransmission, however late a busy machine runs the event loop.
NO_RETRANSMISSION = {"rto": 60.0}


def test_exchange_with_the_stub_over_loopback():
    async def main():
        transports = await serve_ike("127.0.0.1", (_free_udp_port(), _free_udp_port()))
        try:
            results = []
            for transport, natt in zip(transports, (False, True)):
                port = transport.get_extra_info("sockname")[1]
                with UdpProbe.open(("127.0.0.1", port)) as udp:
                    request = ike.IkeSaInit.build(udp.local_address, udp.target, natt=natt, offer=OFFER)
                    results.append(await udp.exchange(request.datagram, request.parse_answer,
                                                      deadline=time.monotonic() + 30, **NO_RETRANSMISSION))
            return results, [t.get_protocol().counts for t in transports]
        finally:
            for transport in transports:
                transport.close()

    results, counts = asyncio.run(main())
    assert [(r.result, r.answer.notify, r.attempts) for r in results] == \
        [(Reason.SUCCESS, "NO_PROPOSAL_CHOSEN", 1)] * 2
    assert all(r.rtt_seconds is not None for r in results)
    assert [c["answered"] for c in counts] == [1, 1]


def test_port_unreachable_is_told_from_silence():
    closed = ("127.0.0.1", _free_udp_port())
    started = time.monotonic()
    result = asyncio.run(_exchange(closed, b"x", lambda data: data, 30.0, **NO_RETRANSMISSION))
    assert result.result is Reason.PORT_UNREACHABLE and result.attempts == 1
    assert time.monotonic() - started < 15  # ended by the ICMP error, not by the deadline
    assert evidence_dict(result.icmp) == {"type": 3, "code": 3, "from": "127.0.0.1", "description": "port unreachable",
                                           "from_this_host": False}


def test_silence_is_retransmitted_with_a_doubling_timeout_until_the_deadline():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        result = asyncio.run(_exchange(silent.getsockname(), b"x", lambda data: data, 1.7))
        elapsed = time.monotonic() - started
        arrivals = 0
        silent.setblocking(False)
        while True:
            try:
                silent.recv(100)
            except BlockingIOError:
                break
            arrivals += 1
    assert result.result is Reason.NO_RESPONSE and result.icmp is None
    # Sends fall due at 0, 0.5 and 1.5 s, the next at 3.5: never more than three in 1.7 s (a fixed
    # 0.5 s timeout would fit four), however late a busy machine makes them.
    assert 1 <= result.attempts == arrivals <= 3
    assert elapsed >= 1.7  # silence is waited for until the deadline...
    assert elapsed < 1.7 + 10  # ...and not much longer (generous: a loaded machine wakes late)


def test_a_lost_request_is_resent_unchanged_until_answered():
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            received = []

            def third_is_answered():  # the first two are "lost"
                data, source = peer.recvfrom(100)
                received.append(data)
                if len(received) == 3:
                    peer.sendto(b"answer", source)

            asyncio.get_running_loop().add_reader(peer.fileno(), third_is_answered)
            try:
                return await _exchange(peer.getsockname(), b"request", lambda data: data, 30.0), received
            finally:
                asyncio.get_running_loop().remove_reader(peer.fileno())

    result, received = asyncio.run(main())
    assert (result.result, result.answer) == (Reason.SUCCESS, b"answer")
    assert result.attempts >= 3 and set(received) == {b"request"}
    assert result.rtt_seconds is None  # Karn: which send was answered is ambiguous


def test_an_invalid_answer_is_reported_only_when_nothing_valid_follows():
    def judge(data: bytes):
        if data == b"ignore":
            return None
        if data == b"bad":
            raise InvalidAnswer("bad answer")
        return data

    async def main(answers):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            with UdpProbe.open(peer.getsockname()) as udp:
                peer.sendto(b"", udp.local_address)  # nothing yet: no exchange is open
                exchange = asyncio.ensure_future(udp.exchange(b"q", judge, deadline=time.monotonic() + 2))
                await asyncio.sleep(0.05)
                for data in answers:
                    peer.sendto(data, udp.local_address)
                return await exchange

    assert asyncio.run(main([b"ignore", b"bad", b"good"])).answer == b"good"
    refused = asyncio.run(main([b"ignore", b"bad"]))
    assert (refused.result, refused.detail) == (Reason.INVALID_RESPONSE, "bad answer")


@pytest.mark.parametrize("icmp_type, code, result", [
    (3, 3, Reason.PORT_UNREACHABLE), (3, 13, Reason.PROHIBITED), (3, 10, Reason.PROHIBITED),
    (3, 1, Reason.PROHIBITED), (11, 0, Reason.PROHIBITED), (3, 4, None), (0, 0, None),
])
def test_icmp_errors_are_classified(icmp_type, code, result):
    error = IcmpError(error_number=0, origin=2, icmp_type=icmp_type, icmp_code=code, info=0, offender="192.0.2.1",
                      quoted=b"", destination=("192.0.2.1", 500))
    classified = classify_icmp(error)
    assert (classified[0] if classified else None) is result


@pytest.mark.parametrize("offender, destination, result", [
    ("127.0.0.1", ("192.0.2.9", 500), Reason.NETWORK_ERROR),  # this host's own stack, about a packet to another
    (None, ("192.0.2.9", 500), Reason.NETWORK_ERROR),  # no sender named: nothing proven beyond this host
    ("127.0.0.1", ("127.0.0.1", 500), Reason.PORT_UNREACHABLE),  # the target is this host: its answer
])
def test_an_icmp_error_this_host_sent_about_another_target_proves_nothing(offender, destination, result):
    error = IcmpError(error_number=0, origin=2, icmp_type=3, icmp_code=3, info=0, offender=offender, quoted=b"",
                      destination=destination)
    reason, report = classify_icmp(error)
    assert reason is result and report.from_this_host is (result is Reason.NETWORK_ERROR)
    assert ("this host itself" in report.detail) is report.from_this_host
