"""Who a source is, for `xcheck responder`: an IPv4 client of a dual-stack (`--listen ::`) socket is
the IPv4 host it is, one IPv6 /64 is one source for every listener's rate limit, and a few
sources holding all they may of the TLS listeners still leave a slot for a new one.

Loopback only; a second source is another 127.0.0.0/8 address bound as the client's local address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time

import pytest
from test_esp import context as esp_context
from test_tls_responder_limits import HELD, _health, _tls, _with_responder

from agent.responder import ike_stub, stun_server
from agent.responder.esp_echo import serve_esp_echo
from agent.responder.ike_stub import IkeStub
from agent.responder.rate_limit import ConnectionSlots, TokenBuckets
from agent.responder.stun_server import StunServer, serve_stun
from agent.verdicts import load_ruleset
from checks.probes import esp
from checks.protocols import ike, stun
from checks.contract import Reason, Status
from checks.transport.stun_client import REQUEST_BYTES, Deadline, StunClient

OFFER = load_ruleset("azure-current").ike_offer

BOUND_SECONDS = 30.0  # what must happen, happens within this, however busy the machine
IPV4_CLIENT = "198.51.100.7"
MAPPED_IPV4_CLIENT = f"::ffff:{IPV4_CLIENT}"  # how a dual-stack socket names it
ONE_SLASH_64 = [f"2001:db8:0:1::{host:x}" for host in range(1, 201)]
OTHER_SLASH_64 = "2001:db8:0:2::1"


def _no_dual_stack() -> str | None:
    """Why a `::` socket on this host takes no IPv4 clients, or None."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
                return "net.ipv6.bindv6only is 1: a '::' socket takes no IPv4 clients here"
    except OSError as exc:
        return f"IPv6 is disabled on this host: {exc}"
    return None


def xcheck_request(**flags) -> bytes:
    """A Binding request as xcheck's StunClient sends it."""
    return stun.encode_binding_request(stun.new_transaction_id(), min_bytes=REQUEST_BYTES, **flags)


# -- dual stack -------------------------------------------------------------------------------


@pytest.mark.skipif(_no_dual_stack() is not None, reason=_no_dual_stack() or "")
def test_an_ipv4_client_of_a_dual_stack_stun_socket_is_told_its_ipv4_address():
    async def main():
        [transport], server = await serve_stun("::", 0)
        port = transport.get_extra_info("sockname")[1]
        try:
            with StunClient.open() as client:
                # An RTO longer than the deadline: one request, answered however late a busy machine runs.
                answer = await client.binding(("127.0.0.1", port), deadline=Deadline(time.monotonic() + BOUND_SECONDS),
                                              rto=2 * BOUND_SECONDS)
                return answer, client.local_port, server.counts
        finally:
            transport.close()

    answer, local_port, counts = asyncio.run(main())
    assert answer.kind is Reason.SUCCESS, answer.detail
    assert str(answer.mapped) == f"127.0.0.1:{local_port}"
    assert dict(counts) == {"answered": 1}


def test_rfc5780_attributes_go_only_to_clients_of_the_alternate_addresses_family():
    """An IPv6 alternate is of no use to an IPv4 client, and naming it would make the answer too large."""
    server = StunServer(("::", 3478), ("2001:db8::11", 3479))
    request = xcheck_request()
    answer, origin = server.reply(request, (MAPPED_IPV4_CLIENT, 40000, 0, 0), ("::", 3478))
    message = stun.parse_message(answer)
    assert str(message.xor_mapped_address) == f"{IPV4_CLIENT}:40000"
    assert message.other_address is None and message.response_origin is None
    assert origin == ("::", 3478) and len(answer) <= len(request)
    # It cannot be sent from an address of its own family: as a server with one address, nothing.
    assert server.reply(xcheck_request(change_ip=True, change_port=True), (MAPPED_IPV4_CLIENT, 40000, 0, 0),
                        ("::", 3478)) is None
    assert server.counts["change_request"] == 1
    request = stun.encode_binding_request(stun.new_transaction_id(), min_bytes=stun.largest_binding_answer_bytes(6))
    answer, _ = server.reply(request, ("2001:db8:1::7", 40000, 0, 0), ("::", 3478))
    assert stun.parse_message(answer).other_address == stun.TransportAddress(ipaddress.ip_address("2001:db8::11"), 3479)


def test_the_ike_stub_answers_an_ipv4_client_of_a_dual_stack_socket():
    request = ike.IkeSaInit.build(("192.0.2.1", 500), ("203.0.113.10", 500), natt=False, offer=OFFER)
    reply = ike_stub.answer(request.datagram, (MAPPED_IPV4_CLIENT, 500, 0, 0), natt=False)
    assert reply is not None and request.parse_answer(reply).notify == "NO_PROPOSAL_CHOSEN"
    assert ike_stub.answer(request.datagram, ("::ffff:224.0.0.1", 500, 0, 0), natt=False) is None  # no host there either


@pytest.mark.skipif(os.geteuid() != 0, reason="a raw ESP socket needs root (CAP_NET_RAW)")
def test_the_esp_echo_of_a_responder_listening_on_every_ipv6_address_serves_ipv4():
    """ESP echo is IPv4 only: `--listen ::` (every address) must not stop the responder as root."""
    async def run():
        echo = await serve_esp_echo("::")
        try:
            return await esp.probe(esp_context("127.0.0.1"))
        finally:
            echo.close()

    outcome = asyncio.run(run())
    assert outcome.status is Status.OK, outcome.detail


# -- one IPv6 /64 is one source ---------------------------------------------------------------


def test_a_rate_limit_gives_one_allowance_to_a_whole_ipv6_slash_64():
    buckets = TokenBuckets(rate=1.0, burst=5.0, clock=lambda: 0.0)
    assert sum(buckets.allow(address) for address in ONE_SLASH_64) == 5
    assert buckets.allow(OTHER_SLASH_64)
    assert sum(buckets.allow(address) for address in [IPV4_CLIENT] * 5 + [MAPPED_IPV4_CLIENT]) == 5


def test_the_stun_server_answers_a_whole_ipv6_slash_64_as_one_source():
    server = StunServer(clock=lambda: 0.0)
    answered = sum(server.reply(xcheck_request(), (address, 40000, 0, 0)) is not None for address in ONE_SLASH_64)
    assert answered == stun_server.BURST
    assert server.counts["rate_limited"] == len(ONE_SLASH_64) - stun_server.BURST
    assert server.reply(xcheck_request(), (OTHER_SLASH_64, 40000, 0, 0)) is not None


def test_the_ike_stub_counts_an_ipv4_client_as_one_source_however_its_socket_names_it():
    stub = IkeStub(False, TokenBuckets(ike_stub.RATE_PER_SECOND, ike_stub.BURST, lambda: 0.0), logging.getLogger("test"))
    request = ike.IkeSaInit.build(("192.0.2.1", 500), ("203.0.113.10", 500), natt=False, offer=OFFER).datagram
    for source in [(IPV4_CLIENT, 500)] * int(ike_stub.BURST) + [(MAPPED_IPV4_CLIENT, 500, 0, 0)]:
        stub.handle(request, source)
    assert dict(stub.counts) == {"answered": ike_stub.BURST, "rate_limited": 1}


# -- TLS: a reserve for sources with nothing open -----------------------------------------------


def test_connection_slots_keep_the_reserve_for_sources_with_nothing_open():
    slots = ConnectionSlots(per_source=3, total=6, reserve=2)
    assert [slots.take(source) for source in ("a", "a", "b", "b")] == [None] * 4  # 4 open: the reserve starts
    reserved = "4 of 6 connections open: the rest are for sources with none open"
    assert slots.take("b") == reserved  # within its share, but it has some open
    assert slots.take("c") is None
    assert slots.take("c") == reserved.replace("4 of", "5 of")
    assert slots.take("d") is None
    assert slots.take("e") == "busy: 6 connections open"
    for source in ("c", "d", "a"):
        slots.give_back(source)
    assert slots.take("b") is None  # 3 open: below the reserve, a share as before
    assert slots.take("a") == reserved
    with pytest.raises(ValueError, match="reserve"):
        ConnectionSlots(per_source=3, total=6, reserve=6)


async def _held(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection from `source` that the responder gave a slot, or None if it refused one."""
    try:
        return await _tls(port, source)
    except TimeoutError:  # an OSError too, but silence is not a refusal
        raise AssertionError(f"no handshake and no refusal within {BOUND_SECONDS} s") from None
    except OSError:
        return None


def test_a_new_source_is_served_while_as_many_sources_as_the_cap_allows_hold_all_they_may():
    hogs = [f"127.0.0.{host}" for host in range(1, HELD.total // HELD.per_source + 1)]  # 16: 128 without a reserve
    newcomer = f"127.0.0.{len(hogs) + 1}"

    async def scenario(sstp_port, health_port):
        held = {source: [] for source in hogs}
        try:
            for source in hogs:
                while len(held[source]) < HELD.per_source and (connection := await _held(sstp_port, source)):
                    held[source].append(connection)
            return {source: len(connections) for source, connections in held.items()}, await _health(health_port, newcomer)
        finally:
            for connections in held.values():
                for _, writer in connections:
                    writer.transport.abort()

    held, answer = _with_responder(HELD, scenario)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert sum(held.values()) < HELD.total
    assert min(held.values()) >= 1  # a hog, too, got its first slot
